-- ops.lua: efla.ops, the Lua face of the fused operators of libefla.
--
--   o, S = efla.ops.delta_rule(q, k, v, beta, {order = 'exact', scale =, initial_state = S0,
--            output_final_state = true, chunk_size = 64, algorithm = 'auto', cu_seqlens =,
--            reference_eps = false, recompute_states = false, log_decay = g})
--   o, S = efla.ops.delta_rule_step(q, k, v, beta, state, {order =, scale =, log_decay =})
--   alpha = efla.ops.delta_rule_alpha(beta, lambda, order [, reference_eps])
--
-- q, k [B,T,H,dk], v [B,T,H,dv], beta [B,T,H], states [N,H,dk,dv] (flash-linear-attention's
-- layout). order 'exact' is EFLA, 1 is DeltaNet, 2-4 the Runge-Kutta ablations. All of it
-- is differentiable (one fused autograd node).
local binding = require 'efla._binding'
local autograd = require 'efla.autograd'
local tensor = require 'efla.tensor'
local ffi, lib = binding.ffi, binding.lib

local ops = {}

local ALGORITHMS = { auto = lib.EFLA_ALGO_AUTO, chunked = lib.EFLA_ALGO_CHUNKED, recurrent = lib.EFLA_ALGO_RECURRENT }

local function order_code(order, fn)
  if order == nil or order == 'exact' then return lib.EFLA_ORDER_EXACT end
  local n = tonumber(order)
  if n and n >= 1 and n <= 4 and n % 1 == 0 then return n end
  binding.raise(string.format("%s: order must be 'exact' or 1, 2, 3, 4 (got %s)", fn, tostring(order)))
end

local function fill_opts(opts, fn)
  opts = opts or {}
  if type(opts) ~= 'table' then binding.raise(string.format('%s: opts must be a table, got %s', fn, type(opts))) end
  local o = ffi.new('efla_delta_rule_opts')
  lib.efla_delta_rule_default_opts(o)
  o.order = order_code(opts.order, fn)
  local scale = opts.scale
  if scale ~= nil and (type(scale) ~= 'number' or scale ~= scale or scale == math.huge or scale == -math.huge) then
    binding.raise(string.format('%s: opts.scale must be a finite number (default 1/sqrt(dk)), got %s', fn,
      type(scale) == 'string' and string.format('the string %q', scale) or tostring(scale)))
  end
  if scale then o.scale = scale end
  local cs = opts.chunk_size
  if cs ~= nil and (type(cs) ~= 'number' or cs < 1 or cs % 1 ~= 0) then
    binding.raise(string.format('%s: opts.chunk_size must be a whole number >= 1, got %s', fn, tostring(cs)))
  end
  if cs then o.chunk_size = cs end
  if opts.algorithm then
    o.algorithm = ALGORITHMS[opts.algorithm] or
      binding.raise(string.format("%s: algorithm must be 'auto', 'chunked' or 'recurrent' (got %s)", fn, tostring(opts.algorithm)))
  end
  o.reference_eps = opts.reference_eps and 1 or 0
  o.recompute_states = opts.recompute_states and 1 or 0
  o.output_final_state = opts.output_final_state == false and 0 or 1
  return o, opts
end

-- the gate (a tensor or nil); the caller keeps raw.log_decay alive across the C call
local function set_log_decay(o, raw, fn)
  local g = raw.log_decay
  if g == nil then return end
  if not binding.is_tensor(g) then
    binding.raise(string.format('%s: opts.log_decay must be a tensor (the log-decay g <= 0 per token and head), got %s',
      fn, require('efla.tensor').describe_value(g)))
  end
  o.log_decay = g.ptr
end

local function ptr(t, name, fn)
  if t == nil then return nil end
  if not binding.is_tensor(t) then
    binding.raise(string.format('%s: %s must be a tensor, got %s', fn, name, tensor.describe_value(t)))
  end
  return t.ptr
end

-- q, k, v, beta: required tensors, named when missing
local function required(t, name, fn, layout)
  if t == nil then binding.raise(string.format('%s: %s is nil; expected a tensor %s', fn, name, layout)) end
  return ptr(t, name, fn)
end

-- ---- the opt-in finite check ----------------------------------------------------------------------
-- Off by default (it costs a pass over every input). When on, delta_rule names the first
-- batch, token and head where a NaN or Inf enters q, k, v or beta, the sequence and head of
-- a non-finite initial state, and the first token and head where the output stops being
-- finite although the inputs were (the state overflowed: a too-large beta under DeltaNet).
local debug_checks = false

--- ops.set_debug_checks(on): turn the finite check of delta_rule on or off for every call
--- (also efla.set_debug_checks). Per call: opts.check_finite = true. Returns the old setting.
function ops.set_debug_checks(on)
  local old = debug_checks
  debug_checks = on and true or false
  return old
end

-- The first position (1-based, over the leading nlead dims) where x holds a NaN or Inf, or nil.
local function first_nonfinite(x, nlead)
  return autograd.no_grad(function()
    local d = x:detach():double()
    d = d - d                                  -- NaN where x is NaN or +-Inf, else 0
    local bad = d:ne(d):double()
    local nd = #x:size()
    if nd > nlead then
      local dims = {}
      for i = nlead + 1, nd do dims[#dims + 1] = i end
      bad = bad:sum(dims)
    end
    if bad:sum():item() == 0 then return nil end
    local sizes = x:size()
    local flat = bad:reshape({ -1 }):totable()
    for i, v in ipairs(flat) do
      if v ~= 0 then                           -- row-major position -> indices
        local idx, rest = {}, i - 1
        for dim = nlead, 1, -1 do
          idx[dim] = rest % sizes[dim] + 1
          rest = math.floor(rest / sizes[dim])
        end
        return idx
      end
    end
  end)
end

local function check_inputs(fn, q, k, v, beta, state, state_what)
  for _, item in ipairs { { 'q', q, 3 }, { 'k', k, 3 }, { 'v', v, 3 }, { 'beta', beta, 3 } } do
    local at = item[2] and first_nonfinite(item[2], item[3])
    if at then
      binding.raise(string.format('%s: %s has a NaN or Inf at batch %d, token %d, head %d (found by the finite check)',
        fn, item[1], at[1], at[2], at[3]))
    end
  end
  local at = state and first_nonfinite(state, 2)
  if at then
    binding.raise(string.format('%s: %s has a NaN or Inf in sequence %d, head %d (found by the finite check)', fn, state_what, at[1], at[2]))
  end
end

local function check_output(fn, o)
  local at = first_nonfinite(o, 3)
  if at then
    binding.raise(string.format('%s: the inputs are finite but the output is not from batch %d, token %d, head %d on: ' ..
      'the state overflowed there (a smaller beta or learning rate, or order = \'exact\', keeps it bounded)',
      fn, at[1], at[2], at[3]))
  end
end

local QK, V, BETA = '[B,T,H,dk]', '[B,T,H,dv]', '[B,T,H]'

--- ops.delta_rule(q, k, v, beta [, opts]) -> o [B,T,H,dv], final_state [N,H,dk,dv]: the delta rule
--- over whole sequences. q, k [B,T,H,dk], v [B,T,H,dv], beta [B,T,H]. opts: order = 'exact'
--- (EFLA) | 1 (DeltaNet) | 2..4 (Runge-Kutta); scale (default dk^-1/2); initial_state;
--- output_final_state = true; chunk_size = 64; algorithm = 'auto' | 'chunked' | 'recurrent';
--- cu_seqlens (packed variable-length sequences, B = 1); reference_eps (the published
--- reference's epsilon); recompute_states (the backward recomputes the chunk states, and on
--- CUDA the per-chunk solves, instead of keeping them: less memory, more time); log_decay
--- (g <= 0 [B,T,H]: gated EFLA with order 'exact', Gated DeltaNet with order 1; cpu for now).
--- check_finite = true (or efla.set_debug_checks(true)) names the first batch, token and head
--- where a NaN or Inf enters. Differentiable in q, k, v, beta, initial_state and log_decay. On CUDA,
--- bfloat16 and float32 inputs run on tensor cores (chunk 16/32/64, head sizes 32/64/128; float32
--- as three TF32 products, within 1e-5 of float64, at chunk 32 at most, where its kernels run
--- fastest: the chunk size only groups tokens, the result is the same). The maths: docs/MATH.md.
function ops.delta_rule(q, k, v, beta, opts)
  local fn = 'delta_rule'
  local o, raw = fill_opts(opts, fn)
  set_log_decay(o, raw, fn)
  local pq, pk, pv, pb = required(q, 'q', fn, QK), required(k, 'k', fn, QK), required(v, 'v', fn, V), required(beta, 'beta', fn, BETA)
  local cu = raw.cu_seqlens
  if cu ~= nil and not binding.is_tensor(cu) then cu = tensor.tensor(cu, { dtype = 'int64' }) end
  local checking = debug_checks or raw.check_finite
  if checking then check_inputs(fn, q, k, v, beta, raw.initial_state, 'initial_state') end
  local out, final = ffi.new('efla_tensor*[1]'), ffi.new('efla_tensor*[1]')
  local rc = lib.efla_delta_rule(pq, pk, pv, pb, ptr(raw.initial_state, 'initial_state', fn), ptr(cu, 'cu_seqlens', fn),
    o, out, o.output_final_state ~= 0 and final or nil)
  if rc < 0 then binding.raise(binding.last_error()) end
  local o_t = binding.wrap(out[0])
  if checking then check_output(fn, o_t) end
  if o.output_final_state ~= 0 then return o_t, binding.wrap(final[0]) end
  return o_t
end

--- ops.delta_rule_step(q, k, v, beta, state [, {order, scale, log_decay}]) -> o [B,H,dv], new_state:
--- one token of recurrent inference (q, k [B,H,dk], v [B,H,dv], beta [B,H], state [B,H,dk,dv],
--- log_decay [B,H]).
function ops.delta_rule_step(q, k, v, beta, state, opts)
  local fn = 'delta_rule_step'
  local o, raw = fill_opts(opts, fn)
  set_log_decay(o, raw, fn)
  local pq, pk, pv, pb = required(q, 'q', fn, QK), required(k, 'k', fn, QK), required(v, 'v', fn, V), required(beta, 'beta', fn, BETA)
  local ps = required(state, 'state', fn, '[B,H,dk,dv]')
  if debug_checks or raw.check_finite then check_inputs(fn, q, k, v, beta, state, 'state') end
  local out, new_state = ffi.new('efla_tensor*[1]'), ffi.new('efla_tensor*[1]')
  local rc = lib.efla_delta_rule_step(pq, pk, pv, pb, ps, o, out, new_state)
  if rc < 0 then binding.raise(binding.last_error()) end
  return binding.wrap(out[0]), binding.wrap(new_state[0])
end

--- ops.delta_rule_alpha(beta, lambda, order [, reference_eps]) -> alpha: the scalar step
--- alpha = beta * phi(beta * lambda) of the rank-1 update (lambda = |k|^2); for 'exact'
--- phi(x) = (1 - e^-x) / x, computed without an epsilon (docs/MATH.md). Differentiable.
function ops.delta_rule_alpha(beta, lambda, order, reference_eps)
  return binding.wrap(lib.efla_delta_rule_alpha(ptr(beta, 'beta', 'delta_rule_alpha'), ptr(lambda, 'lambda', 'delta_rule_alpha'),
    order_code(order, 'delta_rule_alpha'), reference_eps and 1 or 0))
end

--- ops.attention(q, k, v [, {causal = true, window, scale}]) -> o [B,Tq,H,dv]: softmax attention
--- softmax(scale q k^T + mask) v in the delta rule's layout: q [B,Tq,H,dk], k [B,Tk,H,dk],
--- v [B,Tk,H,dv]; scale defaults to dk^-1/2. causal: query i sits at position Tk - Tq + i
--- (earlier keys are a KV cache: Tq = 1 decodes one token) and sees the keys up to it;
--- window = W keeps only the W newest of those, (t-W, t]. Differentiable in q, k, v (the
--- backward recomputes the probabilities from the saved log-sum-exp; no T x T matrix is kept).
--- float32/float64 on the cpu; float32/bfloat16 (float32 accumulation) on CUDA.
function ops.attention(q, k, v, opts)
  local fn = 'attention'
  opts = opts or {}
  if type(opts) ~= 'table' then binding.raise(string.format('%s: opts must be a table, got %s', fn, type(opts))) end
  local o = ffi.new('efla_attention_opts')
  lib.efla_attention_default_opts(o)
  if opts.causal == false then o.causal = 0 end
  local w = opts.window
  if w ~= nil and w ~= false and (type(w) ~= 'number' or w < 1 or w % 1 ~= 0) then
    binding.raise(string.format('%s: opts.window must be a whole number >= 1 (or nil for none), got %s', fn, tostring(w)))
  end
  if w then o.window = w end
  local scale = opts.scale
  if scale ~= nil and (type(scale) ~= 'number' or scale ~= scale or scale <= 0 or scale == math.huge) then
    binding.raise(string.format('%s: opts.scale must be a finite number > 0 (default 1/sqrt(dk)), got %s', fn, tostring(scale)))
  end
  if scale then o.scale = scale end
  local out = ffi.new('efla_tensor*[1]')
  local QKV = '[B,T,H,d]'
  local rc = lib.efla_attention(required(q, 'q', fn, QKV), required(k, 'k', fn, QKV), required(v, 'v', fn, QKV), o, out)
  if rc < 0 then binding.raise(binding.last_error()) end
  return binding.wrap(out[0])
end

--- ops.delta_rule_rank(q, k, v, beta [, opts]) -> o [B,T,H,dv], final_state [B,H,dk,dv]: the
--- rank-r exact update, r keys and values per token: q [B,T,H,dk], k [B,T,H,r,dk],
--- v [B,T,H,r,dv], beta [B,T,H], r = 1..8. S <- S + K^T f(K K^T) (V - K S) with
--- f(G) = G^-1 (I - e^{-beta G}) (exact for any K, also rank-deficient); r = 1 is
--- ops.delta_rule. opts: order = 'exact' | 1..4, scale (default dk^-1/2), initial_state,
--- output_final_state = true. Differentiable in every input. The maths: docs/RANK_R.md.
function ops.delta_rule_rank(q, k, v, beta, opts)
  local fn = 'delta_rule_rank'
  local o, raw = fill_opts(opts, fn)
  local pq, pk = required(q, 'q', fn, QK), required(k, 'k', fn, '[B,T,H,r,dk]')
  local pv, pb = required(v, 'v', fn, '[B,T,H,r,dv]'), required(beta, 'beta', fn, BETA)
  local out, final = ffi.new('efla_tensor*[1]'), ffi.new('efla_tensor*[1]')
  local rc = lib.efla_delta_rule_rank(pq, pk, pv, pb, ptr(raw.initial_state, 'initial_state', fn), o, out,
    o.output_final_state ~= 0 and final or nil)
  if rc < 0 then binding.raise(binding.last_error()) end
  if o.output_final_state ~= 0 then return binding.wrap(out[0]), binding.wrap(final[0]) end
  return binding.wrap(out[0])
end

return ops

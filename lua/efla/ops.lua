-- ops.lua: efla.ops, the Lua face of the fused operators of libefla.
--
--   o, S = efla.ops.delta_rule(q, k, v, beta, {order = 'exact', scale =, initial_state = S0,
--            output_final_state = true, chunk_size = 64, algorithm = 'auto', cu_seqlens =,
--            reference_eps = false, recompute_states = false})
--   o, S = efla.ops.delta_rule_step(q, k, v, beta, state, {order =, scale =})
--   alpha = efla.ops.delta_rule_alpha(beta, lambda, order [, reference_eps])
--
-- q, k [B,T,H,dk], v [B,T,H,dv], beta [B,T,H], states [N,H,dk,dv] (flash-linear-attention's
-- layout). order 'exact' is EFLA, 1 is DeltaNet, 2-4 the Runge-Kutta ablations. All of it
-- is differentiable (one fused autograd node).
local efla = require 'efla'
local I = efla.internal
local ffi, lib = I.ffi, I.lib

local ops = {}

local ALGORITHMS = { auto = lib.EFLA_ALGO_AUTO, chunked = lib.EFLA_ALGO_CHUNKED, recurrent = lib.EFLA_ALGO_RECURRENT }

local function order_code(order, fn)
  if order == nil or order == 'exact' then return lib.EFLA_ORDER_EXACT end
  local n = tonumber(order)
  if n and n >= 1 and n <= 4 and n % 1 == 0 then return n end
  I.raise(string.format("%s: order must be 'exact' or 1, 2, 3, 4 (got %s)", fn, tostring(order)))
end

local function fill_opts(opts, fn)
  opts = opts or {}
  local o = ffi.new('efla_delta_rule_opts')
  lib.efla_delta_rule_default_opts(o)
  o.order = order_code(opts.order, fn)
  if opts.scale then o.scale = opts.scale end
  if opts.chunk_size then o.chunk_size = opts.chunk_size end
  if opts.algorithm then
    o.algorithm = ALGORITHMS[opts.algorithm] or
      I.raise(string.format("%s: algorithm must be 'auto', 'chunked' or 'recurrent' (got %s)", fn, tostring(opts.algorithm)))
  end
  o.reference_eps = opts.reference_eps and 1 or 0
  o.recompute_states = opts.recompute_states and 1 or 0
  o.output_final_state = opts.output_final_state == false and 0 or 1
  return o, opts
end

local function ptr(t, name, fn)
  if t == nil then return nil end
  if not I.is_tensor(t) then I.raise(string.format('%s: %s must be a tensor, got %s', fn, name, type(t))) end
  return t.ptr
end

--- ops.delta_rule(q, k, v, beta [, opts]) -> o [B,T,H,dv], final_state [N,H,dk,dv]: the delta rule
--- over whole sequences. q, k [B,T,H,dk], v [B,T,H,dv], beta [B,T,H]. opts: order = 'exact'
--- (EFLA) | 1 (DeltaNet) | 2..4 (Runge-Kutta); scale (of q, default 1); initial_state;
--- output_final_state = true; chunk_size = 64; algorithm = 'auto' | 'chunked' | 'recurrent';
--- cu_seqlens (packed variable-length sequences, B = 1); reference_eps (the published
--- reference's epsilon); recompute_states (less memory, more time in backward).
--- Differentiable in q, k, v, beta and initial_state. The maths: docs/MATH.md.
function ops.delta_rule(q, k, v, beta, opts)
  local o, raw = fill_opts(opts, 'delta_rule')
  local cu = raw.cu_seqlens
  if cu ~= nil and not I.is_tensor(cu) then cu = efla.tensor(cu, { dtype = 'int64' }) end
  local out, final = ffi.new('efla_tensor*[1]'), ffi.new('efla_tensor*[1]')
  local rc = lib.efla_delta_rule(ptr(q, 'q', 'delta_rule'), ptr(k, 'k', 'delta_rule'), ptr(v, 'v', 'delta_rule'),
    ptr(beta, 'beta', 'delta_rule'), ptr(raw.initial_state, 'initial_state', 'delta_rule'), ptr(cu, 'cu_seqlens', 'delta_rule'),
    o, out, o.output_final_state ~= 0 and final or nil)
  if rc < 0 then I.raise(I.last_error()) end
  local o_t = I.wrap(out[0])
  if o.output_final_state ~= 0 then return o_t, I.wrap(final[0]) end
  return o_t
end

--- ops.delta_rule_step(q, k, v, beta, state [, {order, scale}]) -> o [B,H,dv], new_state: one
--- token of recurrent inference (q, k [B,H,dk], v [B,H,dv], beta [B,H], state [B,H,dk,dv]).
function ops.delta_rule_step(q, k, v, beta, state, opts)
  local o = fill_opts(opts, 'delta_rule_step')
  local out, new_state = ffi.new('efla_tensor*[1]'), ffi.new('efla_tensor*[1]')
  local rc = lib.efla_delta_rule_step(ptr(q, 'q', 'delta_rule_step'), ptr(k, 'k', 'delta_rule_step'),
    ptr(v, 'v', 'delta_rule_step'), ptr(beta, 'beta', 'delta_rule_step'), ptr(state, 'state', 'delta_rule_step'),
    o, out, new_state)
  if rc < 0 then I.raise(I.last_error()) end
  return I.wrap(out[0]), I.wrap(new_state[0])
end

--- ops.delta_rule_alpha(beta, lambda, order [, reference_eps]) -> alpha: the scalar step
--- alpha = beta * phi(beta * lambda) of the rank-1 update (lambda = |k|^2); for 'exact'
--- phi(x) = (1 - e^-x) / x, computed without an epsilon (docs/MATH.md). Differentiable.
function ops.delta_rule_alpha(beta, lambda, order, reference_eps)
  return I.wrap(lib.efla_delta_rule_alpha(ptr(beta, 'beta', 'delta_rule_alpha'), ptr(lambda, 'lambda', 'delta_rule_alpha'),
    order_code(order, 'delta_rule_alpha'), reference_eps and 1 or 0))
end

return ops

-- test_gated_delta_rule.lua: gated EFLA and Gated DeltaNet (efla.ops.delta_rule's log_decay,
-- docs/MATH.md §6) against references written from first principles, in float64.
-- Run: build/efla tests/lua/test_gated_delta_rule.lua [name-pattern]
local efla = require 'efla'
local t = dofile((arg[0]:match('^(.*[/\\])') or './') .. 'testlib.lua')
local test, near, ok, raises = t.test, t.near, t.ok, t.raises
local exp = math.exp

efla.manual_seed(7)
local F64 = { dtype = 'float64' }

-- ---- the reference: the ODE solved by a dense matrix exponential -----------------------------------
-- Over a step of length beta the state follows dS/dt = -(gamma I + k k^T) S + k v^T, with
-- g = -beta gamma. The affine flow is the exponential of the block matrix
--   Z = [[g I - beta k k^T, beta k v^T], [0, 0]]   ((dk+dv) x (dk+dv)),
-- e^Z = [[transition, forcing], [0, I]]: S_t = transition S_{t-1} + forcing. No formula of
-- the operator (alpha, alpha') is used here.
local dense = dofile((arg[0]:match('^(.*[/\\])') or './') .. 'dense_ref.lua')
local function expm(Z) return dense.expm(Z, 0.25) end   -- scaled to |Z / 2^s| <= 1/4

-- one token: S (dk x dv table) -> new S. order 'exact': the ODE; order 1: Gated DeltaNet,
-- S = e^g (I - beta k k^T) S + beta k v^T, written out.
local function ref_step(S, k, v, beta, g, order)
  local dk, dv = #k, #v
  local N = {}
  if order == 1 then
    for i = 1, dk do
      N[i] = {}
      for j = 1, dv do
        local kS = 0
        for l = 1, dk do kS = kS + k[l] * S[l][j] end
        N[i][j] = exp(g) * (S[i][j] - beta * k[i] * kS) + beta * k[i] * v[j]
      end
    end
    return N
  end
  local Z = {}
  for i = 1, dk + dv do
    Z[i] = {}
    for j = 1, dk + dv do Z[i][j] = 0 end
  end
  for i = 1, dk do
    for j = 1, dk do Z[i][j] = (i == j and g or 0) - beta * k[i] * k[j] end
    for j = 1, dv do Z[i][dk + j] = beta * k[i] * v[j] end
  end
  local E = expm(Z)
  for i = 1, dk do
    N[i] = {}
    for j = 1, dv do
      local s = E[i][dk + j]
      for l = 1, dk do s = s + E[i][l] * S[l][j] end
      N[i][j] = s
    end
  end
  return N
end

-- the whole operator: o [B][T][H][dv], final states [B][H][dk][dv]
local function reference(q, k, v, beta, g, S0, order, scale)
  local B, T, H, dk, dv = #q, #q[1], #q[1][1], #q[1][1][1], #v[1][1][1]
  local o, Sf = {}, {}
  for b = 1, B do
    o[b], Sf[b] = {}, {}
    for ti = 1, T do o[b][ti] = {} end
    for h = 1, H do
      local S = {}
      for i = 1, dk do
        S[i] = {}
        for j = 1, dv do S[i][j] = S0 and S0[b][h][i][j] or 0 end
      end
      for ti = 1, T do
        S = ref_step(S, k[b][ti][h], v[b][ti][h], beta[b][ti][h], g[b][ti][h], order)
        local out = {}
        for j = 1, dv do
          local s = 0
          for i = 1, dk do s = s + S[i][j] * q[b][ti][h][i] end
          out[j] = scale * s
        end
        o[b][ti][h] = out
      end
      Sf[b][h] = S
    end
  end
  return o, Sf
end

local function inputs(B, T, H, dk, dv, kscale)
  local q, k = efla.randn(B, T, H, dk, F64), efla.randn(B, T, H, dk, F64) * (kscale or 0.7)
  local v, beta = efla.randn(B, T, H, dv, F64), efla.rand(B, T, H, F64) * 0.9 + 0.05
  local g = efla.rand(B, T, H, F64) * -0.6   -- log-decay in (-0.6, 0]
  local S0 = efla.randn(B, H, dk, dv, F64) * 0.3
  return q, k, v, beta, g, S0
end

-- ---- the tests --------------------------------------------------------------------------------------
test('gated EFLA and Gated DeltaNet equal the ODE reference (recurrent and chunked, T across chunks)', function()
  local B, T, H, dk, dv = 2, 37, 2, 4, 3
  local q, k, v, beta, g, S0 = inputs(B, T, H, dk, dv)
  -- a zero key (lambda = 0: only the decay acts) and a zero gate (gamma = 0)
  k:narrow(2, 5, 1):fill_(0)
  g:narrow(2, 9, 1):fill_(0)
  for _, order in ipairs({ 'exact', 1 }) do
    local o_ref, s_ref = reference(q:totable(), k:totable(), v:totable(), beta:totable(), g:totable(), S0:totable(),
      order, 0.6)
    for _, algo in ipairs({ 'recurrent', 'chunked' }) do
      local o, S = efla.ops.delta_rule(q, k, v, beta, { order = order, log_decay = g, initial_state = S0, scale = 0.6,
        algorithm = algo, chunk_size = 16 })
      near(o:totable(), o_ref, 1e-11, order .. ' ' .. algo .. ' outputs')
      near(S:totable(), s_ref, 1e-11, order .. ' ' .. algo .. ' final state')
    end
  end
end)

test('gamma = 0 is EFLA / DeltaNet; gamma + lambda -> 0 stays exact without an epsilon', function()
  local B, T, H, dk, dv = 1, 20, 2, 3, 2
  local q, k, v, beta, _, S0 = inputs(B, T, H, dk, dv)
  local zero = efla.zeros(B, T, H, F64)
  for _, order in ipairs({ 'exact', 1 }) do
    for _, algo in ipairs({ 'recurrent', 'chunked' }) do
      local o1, S1 = efla.ops.delta_rule(q, k, v, beta, { order = order, initial_state = S0, algorithm = algo, chunk_size = 16 })
      local o2, S2 = efla.ops.delta_rule(q, k, v, beta, { order = order, initial_state = S0, algorithm = algo, chunk_size = 16,
        log_decay = zero })
      near(o2:totable(), o1:totable(), 1e-13, 'g = 0, ' .. order .. ' ' .. algo)
      near(S2:totable(), S1:totable(), 1e-13)
    end
  end
  -- tiny keys and tiny gates: x' = beta lambda - g ~ 1e-14, where (1 - e^{-x'})/x' cancels
  local kt, gt = k * 1e-7, efla.rand(B, T, H, F64) * -1e-12
  local o_ref, s_ref = reference(q:totable(), kt:totable(), v:totable(), beta:totable(), gt:totable(), S0:totable(),
    'exact', 0.5)
  local o, S = efla.ops.delta_rule(q, kt, v, beta, { log_decay = gt, initial_state = S0, scale = 0.5 })
  near(o:totable(), o_ref, 1e-13, 'gamma + lambda -> 0')
  near(S:totable(), s_ref, 1e-13)
  -- strong gates and large keys: every number finite, the memory bounded
  local ob, Sb = efla.ops.delta_rule(q, k * 30, v, beta, { log_decay = efla.full({ B, T, H }, -40, F64), initial_state = S0 })
  local function finite(x)
    local s = x:abs():sum():item()
    return s == s and s < math.huge
  end
  ok(finite(ob) and finite(Sb), 'finite for g = -40 and |k|^2 ~ 1e3')
end)

test('gradients of q, k, v, beta, log_decay and the initial state match finite differences', function()
  local B, T, H, dk, dv = 1, 7, 2, 3, 2
  for _, order in ipairs({ 'exact', 1 }) do
    for _, algo in ipairs({ 'recurrent', 'chunked' }) do
      local q, k, v, beta, g, S0 = inputs(B, T, H, dk, dv)
      for _, x in ipairs({ q, k, v, beta, g, S0 }) do x:requires_grad_() end
      local function f(q_, k_, v_, b_, g_, s_)
        return efla.ops.delta_rule(q_, k_, v_, b_, { order = order, log_decay = g_, initial_state = s_, algorithm = algo,
          chunk_size = 16, scale = 0.8 })
      end
      local good, report = efla.gradcheck(f, { q, k, v, beta, g, S0 }, { atol = 1e-7, rtol = 1e-6 })
      ok(good, order .. ' ' .. algo .. ': ' .. tostring(report))
    end
  end
  -- recomputed chunk states in the backward give the same gradients
  local q, k, v, beta, g = inputs(B, 40, H, dk, dv)
  g:requires_grad_()
  local grads = {}
  for i, rec in ipairs({ false, true }) do
    local o = efla.ops.delta_rule(q, k, v, beta, { log_decay = g, chunk_size = 16, recompute_states = rec,
      output_final_state = false })
    o:sum():backward()
    grads[i] = g.grad:totable()
    g:zero_grad()
  end
  near(grads[2], grads[1], 1e-12, 'saved vs recomputed states')
end)

test('cu_seqlens, two halves = one pass, and delta_rule_step token by token', function()
  local T1, T2, H, dk, dv = 11, 26, 2, 3, 4
  local q, k, v, beta, g = inputs(1, T1 + T2, H, dk, dv)
  local cu = efla.tensor({ 0, T1, T1 + T2 }, { dtype = 'int64' })
  local o, S = efla.ops.delta_rule(q, k, v, beta, { log_decay = g, cu_seqlens = cu, chunk_size = 16 })
  local o1, S1 = efla.ops.delta_rule(q:narrow(2, 1, T1), k:narrow(2, 1, T1), v:narrow(2, 1, T1), beta:narrow(2, 1, T1),
    { log_decay = g:narrow(2, 1, T1) })
  local o2, S2 = efla.ops.delta_rule(q:narrow(2, T1 + 1, T2), k:narrow(2, T1 + 1, T2), v:narrow(2, T1 + 1, T2),
    beta:narrow(2, T1 + 1, T2), { log_decay = g:narrow(2, T1 + 1, T2), chunk_size = 16 })
  near(o:narrow(2, 1, T1):totable(), o1:totable(), 1e-12, 'packed sequence 1')
  near(o:narrow(2, T1 + 1, T2):totable(), o2:totable(), 1e-12, 'packed sequence 2')
  near(S:narrow(1, 1, 1):totable(), S1:totable(), 1e-12)
  near(S:narrow(1, 2, 1):totable(), S2:totable(), 1e-12)
  -- the second sequence in two halves, the state handed over
  local h = 9
  local oa, Sa = efla.ops.delta_rule(q:narrow(2, T1 + 1, h), k:narrow(2, T1 + 1, h), v:narrow(2, T1 + 1, h),
    beta:narrow(2, T1 + 1, h), { log_decay = g:narrow(2, T1 + 1, h) })
  local ob, Sb = efla.ops.delta_rule(q:narrow(2, T1 + h + 1, T2 - h), k:narrow(2, T1 + h + 1, T2 - h),
    v:narrow(2, T1 + h + 1, T2 - h), beta:narrow(2, T1 + h + 1, T2 - h),
    { log_decay = g:narrow(2, T1 + h + 1, T2 - h), initial_state = Sa })
  near(efla.cat({ oa, ob }, 2):totable(), o2:totable(), 1e-12, 'two halves = one pass')
  near(Sb:totable(), S2:totable(), 1e-12)
  -- one token at a time
  local st = efla.zeros(1, H, dk, dv, F64)
  local outs = {}
  for ti = 1, T1 do
    outs[ti], st = efla.ops.delta_rule_step(q:select(2, ti), k:select(2, ti), v:select(2, ti), beta:select(2, ti), st,
      { log_decay = g:select(2, ti) })
  end
  near(efla.stack(outs, 2):totable(), o1:totable(), 1e-12, 'delta_rule_step')
  near(st:totable(), S1:totable(), 1e-12)
end)

test('log_decay errors name the problem', function()
  local q, k, v, beta, g = inputs(1, 4, 2, 3, 2)
  raises(function() efla.ops.delta_rule(q, k, v, beta, { log_decay = g, order = 2 }) end, 'order 1')
  raises(function() efla.ops.delta_rule(q, k, v, beta, { log_decay = g:narrow(2, 1, 3) }) end, 'must be [B,T,H]')
  raises(function() efla.ops.delta_rule(q, k, v, beta, { log_decay = g:float() }) end, 'log_decay is float32')
  raises(function() efla.ops.delta_rule(q, k, v, beta, { log_decay = g, reference_eps = true }) end, 'reference_eps')
  raises(function() efla.ops.delta_rule(q, k, v, beta, { log_decay = 0.5 }) end, 'must be a tensor')
  local S = efla.zeros(1, 2, 3, 2, F64)
  raises(function() efla.ops.delta_rule_step(q:select(2, 1), k:select(2, 1), v:select(2, 1), beta:select(2, 1), S,
    { log_decay = g }) end, 'log_decay [1,4,2] must be [B,H]')
end)

test('DeltaAttention{gate = true}: Gated DeltaNet init, g <= 0, gradients, state hand-over, LM methods', function()
  local nn = require 'efla.nn'
  for _, order in ipairs({ 'exact', 1 }) do
    local attn = nn.DeltaAttention({ d_model = 6, n_heads = 2, order = order, gate = true, output_gate = true,
      short_conv = true, conv_size = 3, dtype = 'float64', chunk_size = 16 })
    local A = attn.A_log:exp():totable()
    for h = 1, 2 do ok(A[h] >= 1 and A[h] <= 16, 'A = exp(A_log) in [1, 16]') end
    local dt = attn.dt_bias:softplus():totable()
    for h = 1, 2 do ok(dt[h] >= 1e-4 * (1 - 1e-12) and dt[h] <= 0.1 * (1 + 1e-12), 'softplus(dt_bias) in [1e-4, 0.1]') end
    local x = efla.randn(2, 9, 6, F64)
    local g = attn:log_decay(x)
    ok(g:max():item() <= 0, 'log-decay <= 0')
    -- one pass = two pieces with the state handed over
    local y = attn:forward(x)
    local ya, st = attn:forward(x:narrow(2, 1, 4))
    local yb = attn:forward(x:narrow(2, 5, 5), st)
    near(efla.cat({ ya, yb }, 2):totable(), y:totable(), 1e-12, order .. ': pieces = one pass')
    -- the gate's parameters learn: finite-difference gradients through the whole layer
    local xs = efla.randn(1, 5, 6, F64)
    local params = { attn.A_log, attn.dt_bias, attn.a_proj.weight }
    local good, report = efla.gradcheck(function() return (attn:forward(xs)) end, params, { atol = 1e-7, rtol = 1e-6 })
    ok(good, order .. ': ' .. tostring(report))
  end
  raises(function() nn.DeltaAttention({ d_model = 4, order = 2, gate = true }) end, "needs order 'exact'")
  local LM = require 'efla.tasks.lm'
  ok(LM.METHODS['gated-efla'].gate and LM.METHODS['gated-efla'].order == 'exact', 'gated-efla')
  ok(LM.METHODS['gated-deltanet'].gate and LM.METHODS['gated-deltanet'].order == 1, 'gated-deltanet')
  local lm = nn.CausalLM({ vocab_size = 16, d_model = 8, n_layers = 1, n_heads = 2, gate = true, dtype = 'float64' })
  ok(lm.layers[1].attn.A_log ~= nil, 'CausalLM passes gate to its attention')
end)

t.done()

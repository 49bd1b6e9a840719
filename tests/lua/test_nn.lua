-- test_nn.lua: efla.nn. Every module's forward against a plain-Lua reference (loops in
-- double over :totable() values), gradients by finite differences (efla.gradcheck on
-- float64 modules), recurrent inference (token by token with the state passed along ==
-- one full-sequence call), and the Module API: parameters, state dicts (all mismatches in
-- one error), train/evaluate, seeded initialisation, the printed tree.
-- Run: build/efla tests/lua/test_nn.lua [name-pattern]
local efla = require 'efla'
local nn = require 'efla.nn'
local t = dofile((arg[0]:match('^(.*[/\\])') or './') .. 'testlib.lua')
local test, eq, near, ok, raises = t.test, t.eq, t.near, t.ok, t.raises

efla.manual_seed(1234)
local F64 = { dtype = 'float64' }

local function R(...) return efla.randn({ ... }, F64):requires_grad_() end
local function I(values) return efla.tensor(values, { dtype = 'int64' }) end
local function check_grads(f, inputs, opts)
  local okc, report = efla.gradcheck(f, inputs, opts)
  ok(okc, report)
end
-- gradcheck of module m on input x: x (when it is floating) and every parameter
local function gradcheck_module(m, x, opts, call)
  call = call or function(input) return m(input) end
  local inputs = {}
  if x:is_floating_point() then inputs[1] = x:requires_grad_() end
  for _, p in ipairs(m:parameters()) do inputs[#inputs + 1] = p end
  check_grads(function(input) return call(input) end, x:is_floating_point() and inputs or { x, unpack(inputs) }, opts)
end

-- ---- plain-Lua references (matrices are lists of rows) ---------------------------------------------------
local exp, sqrt = math.exp, math.sqrt
local function sigmoid(v) return 1 / (1 + exp(-v)) end
local function silu(v) return v * sigmoid(v) end
-- erf by its Taylor series: accurate to ~1e-13 for |v| <= 3 (inputs are kept there)
local function erf(v)
  local sum, term, n = v, v, 0
  repeat
    n = n + 1
    term = -term * v * v / n
    local add = term / (2 * n + 1)
    sum = sum + add
  until math.abs(add) < 1e-17 * math.max(1, math.abs(sum))
  return 2 / sqrt(math.pi) * sum
end
local function gelu(v) return 0.5 * v * (1 + erf(v / sqrt(2))) end

local function map(rows, f)
  local out = {}
  for i, r in ipairs(rows) do
    out[i] = {}
    for j, v in ipairs(r) do out[i][j] = f(v) end
  end
  return out
end
local function add(a, b)
  local out = {}
  for i = 1, #a do
    out[i] = {}
    for j = 1, #a[i] do out[i][j] = a[i][j] + b[i][j] end
  end
  return out
end
-- rows @ W^T + b, W [out][in]
local function lin(rows, W, b)
  local out = {}
  for i, r in ipairs(rows) do
    out[i] = {}
    for o = 1, #W do
      local s = b and b[o] or 0
      for j = 1, #r do s = s + r[j] * W[o][j] end
      out[i][o] = s
    end
  end
  return out
end
local function lin_of(m) return function(rows) return lin(rows, m.weight:totable(), m.bias and m.bias:totable()) end end
local function layernorm(rows, w, b, eps)
  return (function()
    local out = {}
    for i, r in ipairs(rows) do
      local n, mean, var = #r, 0, 0
      for _, v in ipairs(r) do mean = mean + v end
      mean = mean / n
      for _, v in ipairs(r) do var = var + (v - mean) ^ 2 end
      var = var / n
      out[i] = {}
      for j, v in ipairs(r) do out[i][j] = (v - mean) / sqrt(var + eps) * (w and w[j] or 1) + (b and b[j] or 0) end
    end
    return out
  end)()
end
local function rmsnorm_row(r, w, eps)
  local ms = 0
  for _, v in ipairs(r) do ms = ms + v * v end
  ms = ms / #r
  local out = {}
  for j, v in ipairs(r) do out[j] = v / sqrt(ms + eps) * (w and w[j] or 1) end
  return out
end
local function rmsnorm(rows, w, eps)
  local out = {}
  for i, r in ipairs(rows) do out[i] = rmsnorm_row(r, w, eps) end
  return out
end
-- causal depthwise conv: y[t][c] = sum_j w[c][j] x[t-K+j][c]
local function conv(rows, w, act, cache)
  local K, out = #w[1], {}
  local all = {}
  for _, r in ipairs(cache or {}) do all[#all + 1] = r end
  local off = #all
  for _, r in ipairs(rows) do all[#all + 1] = r end
  for t = 1, #rows do
    out[t] = {}
    for c = 1, #w do
      local s = 0
      for j = 1, K do
        local src = off + t - K + j
        if src >= 1 then s = s + w[c][j] * all[src][c] end
      end
      out[t][c] = act == 'silu' and silu(s) or s
    end
  end
  return out
end
local function swiglu_ref(m, rows)
  local g, u = lin_of(m.gate)(rows), lin_of(m.up)(rows)
  local h = {}
  for i = 1, #g do
    h[i] = {}
    for j = 1, #g[i] do h[i][j] = silu(g[i][j]) * u[i][j] end
  end
  return lin_of(m.down)(h)
end
-- phi_s(x) = sum_{j<s} (-x)^j/(j+1)!; exact: (1 - e^{-x})/x (docs/MATH.md §2)
local function phi(order, x)
  if order == 'exact' then
    if x < 1e-5 then return 1 - x / 2 + x * x / 6 end
    return (1 - exp(-x)) / x
  end
  local s, term = 0, 1
  for j = 0, order - 1 do
    s = s + term
    term = term * (-x) / (j + 2)
  end
  return s
end
local function l2(v)
  local s = 0
  for _, x in ipairs(v) do s = s + x * x end
  local r = 1 / sqrt(s + 1e-6)
  local out = {}
  for i, x in ipairs(v) do out[i] = x * r end
  return out
end
-- DeltaAttention on one sequence X (T rows): the recurrence of docs/MATH.md §1, per head.
-- Returns the output rows and the final states S[h][i][j].
local function attn_ref(m, X)
  local H, dh, T = m.n_heads, m.head_dim, #X
  local q, k, v = lin_of(m.q_proj)(X), lin_of(m.k_proj)(X), lin_of(m.v_proj)(X)
  if m.q_conv then
    q = conv(q, m.q_conv.weight:totable(), 'silu')
    k = conv(k, m.k_conv.weight:totable(), 'silu')
    v = conv(v, m.v_conv.weight:totable(), 'silu')
  end
  local braw = lin_of(m.b_proj)(X)
  local g = m.g_proj and lin_of(m.g_proj)(X)
  local onw = m.o_norm and m.o_norm.weight:totable()
  local scale = m.scale or dh ^ -0.5
  local out, states = {}, {}
  for ti = 1, T do out[ti] = {} end
  for h = 1, H do
    local S = {}
    for i = 1, dh do S[i] = {}; for j = 1, dh do S[i][j] = 0 end end
    for ti = 1, T do
      local qv, kv, vv = {}, {}, {}
      for j = 1, dh do
        qv[j], kv[j], vv[j] = q[ti][(h - 1) * dh + j], k[ti][(h - 1) * dh + j], v[ti][(h - 1) * dh + j]
      end
      if m.query_norm == 'l2' then qv = l2(qv) end
      if m.key_norm == 'l2' then kv = l2(kv) end
      local beta = sigmoid(braw[ti][h])
      local lam = 0
      for i = 1, dh do lam = lam + kv[i] * kv[i] end
      local alpha = beta * phi(m.order, beta * lam)
      local u = {}
      for j = 1, dh do
        local s = 0
        for i = 1, dh do s = s + S[i][j] * kv[i] end
        u[j] = vv[j] - s
      end
      for i = 1, dh do for j = 1, dh do S[i][j] = S[i][j] + alpha * kv[i] * u[j] end end
      local o = {}
      for j = 1, dh do
        local s = 0
        for i = 1, dh do s = s + S[i][j] * qv[i] end
        o[j] = scale * s
      end
      if onw then o = rmsnorm_row(o, onw, m.o_norm.eps) end
      for j = 1, dh do
        out[ti][(h - 1) * dh + j] = o[j] * (g and silu(g[ti][(h - 1) * dh + j]) or 1)
      end
    end
    states[h] = S
  end
  return lin_of(m.o_proj)(out), states
end

-- uniform in [-a, a] (keeps GELU's erf series accurate)
local function U(a, ...) return efla.rand({ ... }, F64) * (2 * a) - a end

-- ---- layers ----------------------------------------------------------------------------------------------
test('Linear: forward against loops, 1-d/3-d inputs, no bias, gradcheck', function()
  local m = nn.Linear(5, 3, F64)
  efla.no_grad(function() m.bias:copy_(efla.randn(3, F64)) end)
  local x = efla.randn(4, 5, F64)
  near(m(x):totable(), lin_of(m)(x:totable()), 1e-12)
  local x3 = efla.randn(2, 4, 5, F64)
  local y3 = m(x3):totable()
  for b = 1, 2 do near(y3[b], lin_of(m)(x3:totable()[b]), 1e-12) end
  near(m(x[1]):totable(), lin_of(m)({ x[1]:totable() })[1], 1e-12)
  local nb = nn.Linear(5, 3, { bias = false, dtype = 'float64' })
  eq(#nb:parameters(), 1)
  near(nb(x):totable(), lin_of(nb)(x:totable()), 1e-12)
  gradcheck_module(m, efla.randn(3, 5, F64))
  raises(function() m(efla.randn(2, 4, F64)) end, 'must have 5 features')
  raises(function() nn.Linear(3, 0) end, 'out_features must be a positive integer')
end)

test('Embedding: rows at 1-based indices of any shape, gradcheck on the table', function()
  local m = nn.Embedding(6, 3, F64)
  local W = m.weight:totable()
  local idx = I({ { 1, 6, 2 }, { 6, 6, 3 } })
  local y = m(idx):totable()
  for i = 1, 2 do for j = 1, 3 do near(y[i][j], W[idx:totable()[i][j]], 0) end end
  eq(m(idx):size():totable(), { 2, 3, 3 })
  gradcheck_module(m, idx)
  raises(function() m(I({ 7 })) end)
end)

test('LayerNorm and RMSNorm: forward against loops, gradcheck in x, weight, bias', function()
  local ln = nn.LayerNorm(6, F64)
  efla.no_grad(function() ln.weight:copy_(efla.randn(6, F64)); ln.bias:copy_(efla.randn(6, F64)) end)
  local x = efla.randn(4, 6, F64) * 3 + 1
  near(ln(x):totable(), layernorm(x:totable(), ln.weight:totable(), ln.bias:totable(), 1e-5), 1e-10)
  gradcheck_module(ln, efla.randn(3, 6, F64))
  local plain = nn.LayerNorm(6, { affine = false, dtype = 'float64' })
  eq(#plain:parameters(), 0)
  near(plain(x):totable(), layernorm(x:totable(), nil, nil, 1e-5), 1e-10)

  local rms = nn.RMSNorm(6, { eps = 1e-4, dtype = 'float64' })
  efla.no_grad(function() rms.weight:copy_(efla.randn(6, F64)) end)
  near(rms(x):totable(), rmsnorm(x:totable(), rms.weight:totable(), 1e-4), 1e-10)
  gradcheck_module(rms, efla.randn(2, 3, 6, F64))
end)

test('activations: GELU (erf), SiLU, ReLU, Tanh, Sigmoid against formulas, gradcheck', function()
  local x = U(3, 5, 7)
  local refs = {
    GELU = gelu, SiLU = silu, ReLU = function(v) return math.max(v, 0) end,
    Tanh = function(v) return (exp(2 * v) - 1) / (exp(2 * v) + 1) end, Sigmoid = sigmoid,
  }
  for name, f in pairs(refs) do
    local m = nn[name]()
    near(m(x):totable(), map(x:totable(), f), 1e-12, name)
    eq(tostring(m), name .. '()')
    -- away from ReLU's kink
    check_grads(function(a) return m(a) end, { (U(3, 4, 3) + 0.05):requires_grad_() })
  end
end)

test('Dropout: train drops ~p and scales by 1/(1-p), evaluate is the identity, toggled through the tree', function()
  local model = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.Dropout(0.25)))
  local drop = model[2][1]
  ok(drop.training and model.training)
  local x = efla.ones(200, 50)
  local y = drop(x)
  local vals = y:totable()
  local zeros, n = 0, 0
  for _, r in ipairs(vals) do
    for _, v in ipairs(r) do
      n = n + 1
      if v == 0 then zeros = zeros + 1 else near(v, 1 / 0.75, 1e-6) end
    end
  end
  ok(math.abs(zeros / n - 0.25) < 0.02, 'dropped fraction ' .. zeros / n)
  ok(not drop(x):eq(y):all(), 'a fresh mask at each call')
  model:evaluate()
  ok(not drop.training and not model[2].training and not model.training)
  ok(drop(x) == x, 'evaluation returns the input itself')
  model:train()
  ok(drop.training)
  -- seeded masks, and the gradient is mask / (1 - p)
  efla.manual_seed(5); local a = drop(x)
  efla.manual_seed(5); local b = drop(x)
  ok(a:eq(b):all(), 'the same seed gives the same mask')
  local xr = efla.randn(6, 5, F64):requires_grad_()
  efla.manual_seed(9); local yr = drop(xr); yr:sum():backward()
  local mask = (yr:detach() / xr:detach()):totable()
  near(xr.grad:totable(), mask, 1e-12)
  check_grads(function(v) return drop(v) end, { efla.randn(4, 5, F64):requires_grad_() })
  eq(nn.Dropout(0)(x), x)
  raises(function() nn.Dropout(1) end, 'p must be a number in [0, 1)')
end)

test('Sequential, Residual, Identity, ModuleList: composition and indexing', function()
  local l1, l2_ = nn.Linear(3, 4, F64), nn.Linear(4, 3, F64)
  local seq = nn.Sequential(l1, nn.Tanh(), l2_)
  local x = efla.randn(5, 3, F64)
  local want = lin_of(l2_)(map(lin_of(l1)(x:totable()), math.tanh))
  near(seq(x):totable(), want, 1e-12)
  ok(seq[1] == l1 and seq[3] == l2_ and seq:size() == 3)
  local res = nn.Residual(seq)
  near(res(x):totable(), add(x:totable(), want), 1e-12)
  eq(nn.Identity()(x), x)
  seq:add(nn.Identity())
  eq(seq:size(), 4)
  local list = nn.ModuleList(nn.Linear(2, 2), nn.Linear(2, 2))
  eq(list:size(), 2)
  eq(#list:parameters(), 4)
  raises(function() list(x) end, 'forward() is not implemented')
  gradcheck_module(res, efla.randn(2, 3, F64))
end)

-- ---- blocks ------------------------------------------------------------------------------------------------
test('SwiGLU: down(silu(gate x) * up x) against loops, default hidden, gradcheck', function()
  local m = nn.SwiGLU(6, nil, F64)
  eq(m.hidden, 16)   -- 8/3 * 6 = 16
  local x = efla.randn(2, 3, 6, F64)
  local y = m(x):totable()
  for b = 1, 2 do near(y[b], swiglu_ref(m, x:totable()[b]), 1e-12) end
  eq(nn.SwiGLU(4, 5).hidden, 5)
  gradcheck_module(nn.SwiGLU(3, 4, F64), efla.randn(2, 3, F64))
end)

test('ShortConv: causal depthwise conv against loops, cache continues a sequence, gradcheck', function()
  local m = nn.ShortConv(3, { kernel = 4, activation = 'silu', dtype = 'float64' })
  eq(m.weight:size():totable(), { 3, 4 })
  local x = efla.randn(2, 7, 3, F64)
  local y, cache = m(x)
  for b = 1, 2 do near(y:totable()[b], conv(x:totable()[b], m.weight:totable(), 'silu'), 1e-12) end
  near(cache:totable(), x:narrow(2, 5, 3):totable(), 0)
  -- causal: changing x at time 5 leaves y before 5 alone
  local x2 = x:clone(); x2[{ 1, 5, 2 }] = 10
  near(m(x2):narrow(2, 1, 4):totable(), y:narrow(2, 1, 4):totable(), 0)
  -- in two pieces with the cache, and token by token
  local ya, ca = m(x:narrow(2, 1, 3))
  local yb = m(x:narrow(2, 4, 4), ca)
  near(efla.cat({ ya, yb }, 2):totable(), y:totable(), 1e-12)
  local c, steps = nil, {}
  for ti = 1, 7 do steps[ti], c = m(x:narrow(2, ti, 1), c) end
  near(efla.cat(steps, 2):totable(), y:totable(), 1e-12)
  local plain = nn.ShortConv(2, { kernel = 2, bias = true, dtype = 'float64' })
  efla.no_grad(function() plain.bias:fill_(0.5) end)
  local xp = efla.randn(1, 4, 2, F64)
  near(plain(xp):totable()[1], map(conv(xp:totable()[1], plain.weight:totable()), function(v) return v + 0.5 end), 1e-12)
  gradcheck_module(m, efla.randn(2, 5, 3, F64))
  raises(function() m(efla.randn(2, 5, 4, F64)) end, 'expected x [B, T, 3]')
  raises(function() m(x, efla.zeros(2, 2, 3, F64)) end, 'the cache must be [B, K-1, C]')
end)

-- ---- efla.ops: the delta-rule operator's Lua face ------------------------------------------------------------
test('efla.ops: delta_rule == delta_rule_step token by token; options; alpha; errors', function()
  local B, T, H, dk, dv = 2, 6, 2, 3, 4
  local q, k, v = efla.randn(B, T, H, dk, F64), efla.randn(B, T, H, dk, F64), efla.randn(B, T, H, dv, F64)
  local beta = efla.rand(B, T, H, F64)
  local S0 = efla.randn(B, H, dk, dv, F64) * 0.1
  for _, order in ipairs({ 'exact', 1, 3 }) do
    local o, S = efla.ops.delta_rule(q, k, v, beta, { order = order, initial_state = S0, scale = 0.7 })
    local st, outs = S0, {}
    for ti = 1, T do
      outs[ti], st = efla.ops.delta_rule_step(q:select(2, ti), k:select(2, ti), v:select(2, ti), beta:select(2, ti), st,
        { order = order, scale = 0.7 })
    end
    near(efla.stack(outs, 2):totable(), o:totable(), 1e-12, 'order ' .. order)
    near(st:totable(), S:totable(), 1e-12)
    local oc = efla.ops.delta_rule(q, k, v, beta, { order = order, initial_state = S0, scale = 0.7, algorithm = 'chunked',
      chunk_size = 16, output_final_state = false })
    near(oc:totable(), o:totable(), 1e-12)
  end
  local o1, none = efla.ops.delta_rule(q, k, v, beta, { output_final_state = false })
  ok(efla.is_tensor(o1) and none == nil)
  -- alpha = beta * phi(beta * lambda): beta at lambda = 0, (1 - e^{-beta lambda}) / lambda else
  local a = efla.ops.delta_rule_alpha(efla.tensor({ 0.5, 0.5, 0.25 }, F64), efla.tensor({ 0, 2, 1e-8 }, F64), 'exact')
  near(a:totable(), { 0.5, (1 - exp(-1)) / 2, 0.25 * (1 - 0.25e-8 / 2) }, 1e-15)
  eq(a:totable()[1], 0.5)
  near(efla.ops.delta_rule_alpha(efla.tensor({ 0.5 }, F64), efla.tensor({ 2 }, F64), 2):totable(), { 0.5 * (1 - 0.5) }, 1e-15)
  local ref = efla.ops.delta_rule_alpha(efla.tensor({ 0.5 }, F64), efla.tensor({ 0 }, F64), 'exact', true):item()
  ok(ref ~= 0.5, 'reference_eps changes alpha for tiny keys')
  raises(function() efla.ops.delta_rule(q, k, v, beta, { order = 'fast' }) end, "order must be 'exact' or 1, 2, 3, 4")
  raises(function() efla.ops.delta_rule(q, k, v, beta, { algorithm = 'fft' }) end, "algorithm must be 'auto', 'chunked' or 'recurrent'")
  raises(function() efla.ops.delta_rule(q, k, v, 'beta') end, 'beta must be a tensor')
  raises(function() efla.ops.delta_rule(q, k, v:narrow(4, 1, 2), beta:narrow(3, 1, 1)) end)
end)

-- ---- attention -----------------------------------------------------------------------------------------------
local function attn_config(extra)
  local c = { d_model = 8, n_heads = 2, dtype = 'float64' }
  for k, v in pairs(extra or {}) do c[k] = v end
  return c
end

test('DeltaAttention: forward and final state against the plain recurrence, every order and option', function()
  local cases = {
    {},                                                      -- EFLA: no key norm
    { order = 1 },                                           -- DeltaNet: L2 keys
    { order = 2, key_norm = 'none', beta_bias = 1 },
    { order = 3, query_norm = 'none' },
    { order = 4, key_norm = 'l2' },
    { short_conv = true, output_norm = true, output_gate = true },
    { order = 1, short_conv = true, output_gate = true, scale = 0.3, n_heads = 1 },
    { algorithm = 'chunked', chunk_size = 16, output_norm = true },
  }
  for ci, extra in ipairs(cases) do
    local m = nn.DeltaAttention(attn_config(extra))
    local x = efla.randn(2, 19, 8, F64)
    local y, state = m(x)
    eq(state.S:size():totable(), { 2, m.n_heads, m.head_dim, m.head_dim })
    for b = 1, 2 do
      local ry, rs = attn_ref(m, x:totable()[b])
      near(y:totable()[b], ry, 1e-9, 'case ' .. ci .. ' output')
      near(state.S:totable()[b], rs, 1e-9, 'case ' .. ci .. ' state')
    end
  end
end)

test('DeltaAttention: key-norm defaults, option checks, printed summary', function()
  eq(nn.DeltaAttention(attn_config()).key_norm, 'none')
  eq(nn.DeltaAttention(attn_config({ order = 1 })).key_norm, 'l2')
  eq(nn.DeltaAttention(attn_config({ order = '2' })).order, 2)
  eq(nn.DeltaAttention(attn_config({ order = 1, key_norm = 'none' })).key_norm, 'none')
  raises(function() nn.DeltaAttention(attn_config({ order = 5 })) end, "order must be 'exact' or 1, 2, 3, 4")
  raises(function() nn.DeltaAttention(attn_config({ key_norm = 'l1' })) end, "key_norm must be 'none' or 'l2'")
  raises(function() nn.DeltaAttention({ d_model = 6, n_heads = 4 }) end, 'not divisible by n_heads')
  raises(function() nn.DeltaAttention({}) end, 'd_model')
  local m = nn.DeltaAttention(attn_config({ short_conv = true, output_gate = true }))
  raises(function() m(efla.randn(2, 3, 5, F64)) end, 'expected x [B, T, 8]')
  ok(tostring(m):find('DeltaAttention(\n  heads=2, head_dim=4, order=exact, key_norm=none, query_norm=l2, short_conv=4, output_gate\n', 1, true),
    tostring(m))
  eq(#m:parameters(), 10)  -- q k v o, b weight + bias, 3 convs, gate
end)

test('DeltaAttention: gradcheck through projections, convs, beta, norms and gate', function()
  for _, extra in ipairs({ { short_conv = true, output_norm = true, output_gate = true }, { order = 1 },
    { order = 2, algorithm = 'chunked', chunk_size = 16 } }) do
    local m = nn.DeltaAttention({ d_model = 4, n_heads = 2, dtype = 'float64', short_conv = extra.short_conv,
      output_norm = extra.output_norm, output_gate = extra.output_gate, order = extra.order,
      algorithm = extra.algorithm, chunk_size = extra.chunk_size })
    gradcheck_module(m, efla.randn(2, 5, 4, F64), nil, function(x) return (m(x)) end)
  end
  -- and through an initial state
  local m = nn.DeltaAttention({ d_model = 4, n_heads = 2, dtype = 'float64', order = 1 })
  local S0 = (efla.randn(2, 2, 2, 2, F64) * 0.3):requires_grad_()
  check_grads(function(x, s) local y, st = m(x, s); return y, st.S end, { efla.randn(2, 3, 4, F64):requires_grad_(), S0 })
end)

test('DeltaAttention: token by token with the state passed along == the full sequence', function()
  for _, extra in ipairs({ {}, { order = 1, short_conv = true, output_norm = true, output_gate = true },
    { algorithm = 'chunked', chunk_size = 16, short_conv = true } }) do
    local m = nn.DeltaAttention(attn_config(extra))
    local x = efla.randn(2, 37, 8, F64)
    local y, final = m(x)
    local state, parts = nil, {}
    for ti = 1, 37 do parts[ti], state = m(x:narrow(2, ti, 1), state) end
    near(efla.cat(parts, 2):totable(), y:totable(), 1e-10)
    near(state.S:totable(), final.S:totable(), 1e-10)
    -- two uneven pieces
    local ya, sa = m(x:narrow(2, 1, 20))
    local yb, sb = m(x:narrow(2, 21, 17), sa)
    near(efla.cat({ ya, yb }, 2):totable(), y:totable(), 1e-10)
    near(sb.S:totable(), final.S:totable(), 1e-10)
  end
  -- a bare tensor is taken as the delta-rule state
  local m = nn.DeltaAttention(attn_config())
  local x = efla.randn(1, 4, 8, F64)
  local _, s1 = m(x:narrow(2, 1, 2))
  local y2 = m(x:narrow(2, 3, 2), s1.S)
  near(y2:totable(), m(x):narrow(2, 3, 2):totable(), 1e-10)
end)

-- ---- models ------------------------------------------------------------------------------------------------
local function classifier_ref(m, X)
  local pos = m.pos_emb.weight:totable()
  local h = lin_of(m.input_proj)(X)
  for ti = 1, #h do for j = 1, #h[ti] do h[ti][j] = gelu(h[ti][j] + pos[ti][j]) end end
  local a = attn_ref(m.attn, h)
  h = layernorm(add(h, a), m.norm.weight:totable(), m.norm.bias:totable(), m.norm.eps)
  return lin_of(m.classifier)({ h[#h] })[1]
end

test('SequenceClassifier: the sMNIST model against its composition, shapes, config, gradcheck', function()
  local m = nn.SequenceClassifier { seq_len = 12, d_model = 8, n_heads = 2, n_classes = 5, dtype = 'float64' }
  eq(m.config.type, 'SequenceClassifier')
  local x = U(1, 3, 12)
  local logits = m(x)
  eq(logits:size():totable(), { 3, 5 })
  for b = 1, 3 do
    local X = {}
    for ti, v in ipairs(x:totable()[b]) do X[ti] = { v } end
    near(logits:totable()[b], classifier_ref(m, X), 1e-9)
  end
  eq(m(x:narrow(2, 1, 7)):size():totable(), { 3, 5 })   -- shorter sequences use the first positions
  near(m(x:unsqueeze(3)):totable(), logits:totable(), 0)
  raises(function() m(U(1, 2, 13)) end, "exceeds the model's seq_len 12")
  local small = nn.SequenceClassifier { seq_len = 5, d_model = 4, n_heads = 2, n_classes = 3, dtype = 'float64' }
  local target = I({ 1, 3 })
  gradcheck_module(small, U(1, 2, 5), nil, function(input) return nn.functional.cross_entropy(small(input), target) end)
  local multi = nn.SequenceClassifier { input_dim = 3, seq_len = 6, d_model = 4, dtype = 'float64' }
  eq(multi(efla.randn(2, 6, 3, F64)):size():totable(), { 2, 10 })
  raises(function() multi(efla.randn(2, 6, F64)) end, 'expected x [B, T, 3]')
end)

local function lm_ref(m, tokens)
  local E = m.embed.weight:totable()
  local h = {}
  for ti, tok in ipairs(tokens) do h[ti] = {}; for j, v in ipairs(E[tok]) do h[ti][j] = v end end
  for i = 1, m.config.n_layers do
    local blk = m.layers[i]
    h = add(h, (attn_ref(blk.attn, rmsnorm(h, blk.attn_norm.weight:totable(), blk.attn_norm.eps))))
    h = add(h, swiglu_ref(blk.mlp, rmsnorm(h, blk.mlp_norm.weight:totable(), blk.mlp_norm.eps)))
  end
  h = rmsnorm(h, m.norm.weight:totable(), m.norm.eps)
  if m.head then return lin_of(m.head)(h) end
  return lin(h, E)
end

test('CausalLM: forward against the composition of its blocks, tied weights, gradcheck', function()
  local cfg = { vocab_size = 7, d_model = 8, n_layers = 2, n_heads = 2, output_gate = true, dtype = 'float64' }
  local m = nn.CausalLM(cfg)
  local tokens = I({ { 1, 7, 3, 3, 2 }, { 4, 4, 5, 6, 1 } })
  local logits, states = m(tokens)
  eq(logits:size():totable(), { 2, 5, 7 })
  eq(#states, 2)
  for b = 1, 2 do near(logits:totable()[b], lm_ref(m, tokens:totable()[b]), 1e-9) end
  cfg.tie_weights = true
  local tied = nn.CausalLM(cfg)
  ok(tied.head == nil)
  eq(tied:num_parameters(), m:num_parameters() - 7 * 8)
  for b = 1, 2 do near(tied(tokens):totable()[b], lm_ref(tied, tokens:totable()[b]), 1e-9) end
  local small = nn.CausalLM { vocab_size = 5, d_model = 4, n_layers = 1, n_heads = 2, mlp_hidden = 4, dtype = 'float64' }
  local inp, target = I({ { 1, 2, 5, 3 } }), I({ { 2, 5, 3, 4 } })
  gradcheck_module(small, inp, nil, function(x) return nn.functional.cross_entropy((small(x)), target) end)
  raises(function() m(efla.randn(2, 3)) end, 'expected tokens int64 [B, T]')
  raises(function() m(tokens, { states[1] }) end, 'the list of 2 layer states')
end)

test('CausalLM: token by token with the states passed along == the full sequence', function()
  for _, extra in ipairs({ {}, { order = 1, tie_weights = true }, { algorithm = 'chunked', chunk_size = 16 } }) do
    local cfg = { vocab_size = 11, d_model = 8, n_layers = 2, n_heads = 2, output_gate = true, dtype = 'float64' }
    for k, v in pairs(extra) do cfg[k] = v end
    local m = nn.CausalLM(cfg)
    local tokens = efla.randint(1, 12, { 2, 21 })
    local full = m(tokens)
    local states, parts = nil, {}
    for ti = 1, 21 do parts[ti], states = m(tokens:narrow(2, ti, 1), states) end
    near(efla.cat(parts, 2):totable(), full:totable(), 1e-10)
  end
end)

test('bfloat16 models run (the CPU delta rule computes in float32) and track the float32 model', function()
  local cfg = { vocab_size = 7, d_model = 8, n_layers = 1, n_heads = 2 }
  efla.manual_seed(21); local m32 = nn.CausalLM(cfg)
  cfg.dtype = 'bfloat16'
  local m16 = nn.CausalLM(cfg)
  local sd = {}
  for k, v in pairs(m32:state_dict()) do sd[k] = v:bfloat16() end
  m16:load_state_dict(sd)
  m32:load_state_dict((function() local o = {} for k, v in pairs(sd) do o[k] = v:float() end return o end)())
  local tokens = I({ { 1, 2, 3, 4, 5 } })
  local l16, st = m16(tokens)
  eq(l16:dtype(), 'bfloat16')
  eq(st[1].S:dtype(), 'float32')
  -- bfloat16 keeps ~3 digits; the first token's tiny keys make its q.k cancel, which the
  -- per-head output norm then magnifies, so only a loose norm-wise agreement is expected
  local l32 = m32(tokens)
  local rel = (l16:float() - l32):norm():item() / l32:norm():item()
  ok(rel < 0.3, 'bfloat16 logits track float32: relative error ' .. rel)
  local rel_rest = (l16:float() - l32):narrow(2, 2, 4):norm():item() / l32:narrow(2, 2, 4):norm():item()
  ok(rel_rest < 0.05, 'after the first token: relative error ' .. rel_rest)
end)

test('nn.build rebuilds a model from its config; unknown types are named', function()
  efla.manual_seed(3)
  local m = nn.CausalLM { vocab_size = 9, d_model = 8, n_layers = 1 }
  efla.manual_seed(3)
  local m2 = nn.build(m.config)
  for i, np in ipairs(m:named_parameters()) do
    eq(m2:named_parameters()[i][1], np[1])
    ok(m2:parameters()[i]:eq(np[2]):all(), np[1])
  end
  ok(getmetatable(nn.build({ type = 'SequenceClassifier', seq_len = 4, d_model = 4 })) == nn.SequenceClassifier)
  raises(function() nn.build({ type = 'Transformer' }) end, "unknown model type 'Transformer'")
end)

test('nn.register: load_model rebuilds a user class; a missing class is named with the fix', function()
  local class = require 'efla.class'
  local Net = class.new('TestRegistryNet', nn.Module)
  function Net:__init(cfg)
    nn.Module.__init(self)
    self.config = { type = 'TestRegistryNet', width = cfg.width }
    self:add_module('fc', nn.Linear(3, cfg.width))
  end
  function Net:forward(x) return self.fc(x):tanh() end
  local path = (os.getenv('EFLA_TEST_TMP') or '/tmp') .. '/test_nn_registry/net.h5'
  efla.manual_seed(5)
  local m = Net { width = 4 }
  efla.checkpoint.save(path, { model = m:state_dict(), meta = { config = m.config } })
  raises(function() efla.load_model(path) end, "efla.nn.register('TestRegistryNet', TestRegistryNet)")
  eq(nn.register('TestRegistryNet', Net), Net)
  local m2 = efla.load_model(path)
  eq(getmetatable(m2), Net)
  local x = efla.randn(2, 3)
  ok(m2:forward(x):allclose(m:forward(x), 0, 0), 'the reloaded user model computes something else')
  raises(function() nn.register('', Net) end, 'name must be a non-empty string')
  raises(function() nn.register('X', 42) end, 'class must be callable')
end)

-- ---- losses ----------------------------------------------------------------------------------------------------
local function ce_ref(logits, target, ignore, eps)
  local total, n = 0, 0
  for i, row in ipairs(logits) do
    if target[i] ~= ignore then
      local mx = -math.huge
      for _, v in ipairs(row) do mx = math.max(mx, v) end
      local s = 0
      for _, v in ipairs(row) do s = s + exp(v - mx) end
      local lse = mx + math.log(s)
      local nll, smooth = lse - row[target[i]], 0
      for _, v in ipairs(row) do smooth = smooth + (lse - v) end
      total = total + (1 - eps) * nll + eps * smooth / #row
      n = n + 1
    end
  end
  return total / n
end

test('cross_entropy: mean NLL against loops, ignore_index, label smoothing, [B,T,C] logits, gradcheck', function()
  local logits = efla.randn(6, 5, F64) * 2
  local target = { 1, 5, 3, 3, 2, 4 }
  local L = nn.functional.cross_entropy(logits, I(target))
  near(L:item(), ce_ref(logits:totable(), target, -100, 0), 1e-12)
  local tgt2 = { 1, 0, 3, 0, 2, 4 }
  near(nn.functional.cross_entropy(logits, I(tgt2), { ignore_index = 0 }):item(), ce_ref(logits:totable(), tgt2, 0, 0), 1e-12)
  near(nn.functional.cross_entropy(logits, I(target), { label_smoothing = 0.1 }):item(),
    ce_ref(logits:totable(), target, -100, 0.1), 1e-12)
  near(nn.functional.cross_entropy(logits, I(tgt2), { ignore_index = 0, label_smoothing = 0.2 }):item(),
    ce_ref(logits:totable(), tgt2, 0, 0.2), 1e-12)
  -- [2, 3, 5] logits with [2, 3] targets: the same as flattening
  local L3 = nn.functional.cross_entropy(logits:view(2, 3, 5), I({ { 1, 5, 3 }, { 3, 2, 4 } }))
  near(L3:item(), L:item(), 1e-12)
  local crit = nn.CrossEntropyLoss { ignore_index = 0, label_smoothing = 0.2 }
  near(crit(logits, I(tgt2)):item(), ce_ref(logits:totable(), tgt2, 0, 0.2), 1e-12)
  check_grads(function(x) return nn.functional.cross_entropy(x, I(tgt2), { ignore_index = 0, label_smoothing = 0.15 }) end,
    { logits:clone():requires_grad_() })
  check_grads(function(x) return nn.functional.cross_entropy(x, I({ { 1, 5, 3 }, { 3, 2, 4 } })) end,
    { efla.randn(2, 3, 5, F64):requires_grad_() })
  raises(function() nn.functional.cross_entropy(logits, I({ 1, 2 })) end)
  raises(function() nn.functional.cross_entropy(logits:view(2, 3, 5), I({ 1, 2 })) end, 'one dim fewer')
end)

test('mse: mean squared error against loops, broadcasting, gradcheck', function()
  local a, b = efla.randn(4, 3, F64), efla.randn(4, 3, F64)
  local s, at, bt = 0, a:totable(), b:totable()
  for i = 1, 4 do for j = 1, 3 do s = s + (at[i][j] - bt[i][j]) ^ 2 end end
  near(nn.functional.mse(a, b):item(), s / 12, 1e-12)
  near(nn.MSELoss()(a, b):item(), s / 12, 1e-12)
  near(nn.functional.mse(a, 0):item(), (a * a):mean():item(), 1e-12)
  check_grads(function(x, y) return nn.functional.mse(x, y) end, { a:requires_grad_(), b:requires_grad_() })
end)

-- ---- the Module API -----------------------------------------------------------------------------------------
test('parameters, named_parameters and num_parameters: deterministic names and counts', function()
  local m = nn.CausalLM { vocab_size = 10, d_model = 8, n_layers = 2, n_heads = 2, mlp_hidden = 12 }
  local names = {}
  for i, np in ipairs(m:named_parameters()) do
    names[i] = np[1]
    ok(np[2] == m:parameters()[i], 'parameters() follows named_parameters()')
    ok(np[2].requires_grad and np[2].is_leaf, np[1])
  end
  eq(names[1], 'embed.weight')
  eq(names[2], 'layers.1.attn_norm.weight')
  eq(names[3], 'layers.1.attn.q_proj.weight')
  eq(names[#names], 'head.weight')
  local count, seen = 0, {}
  for _, n in ipairs(names) do ok(not seen[n], 'unique ' .. n); seen[n] = true end
  ok(seen['layers.2.attn.k_conv.weight'] and seen['layers.2.mlp.down.weight'] and seen['layers.1.attn.b_proj.bias'])
  -- embed + head + per layer (2 norms, q k v o, b proj + bias, 3 convs [8,4], o_norm [4], SwiGLU)
  local per_layer = 8 + 8 + 4 * 64 + (8 * 2 + 2) + 3 * 32 + 4 + 3 * 8 * 12
  eq(m:num_parameters(), 10 * 8 * 2 + 2 * per_layer + 8)
  for _, p in ipairs(m:parameters()) do count = count + p:numel() end
  eq(count, m:num_parameters())
  -- a module reachable twice is listed once
  local shared = nn.Linear(2, 2)
  eq(#nn.Sequential(shared, shared):parameters(), 2)
end)

test('state_dict / load_state_dict: round trip, and every mismatch reported at once', function()
  local cfg = { seq_len = 6, d_model = 4, n_heads = 2 }
  local a, b = nn.SequenceClassifier(cfg), nn.SequenceClassifier(cfg)
  local x = efla.randn(2, 6)
  ok(not a(x):eq(b(x)):all(), 'two fresh models differ')
  local sd = a:state_dict()
  eq(#a:named_parameters(), (function() local n = 0; for _ in pairs(sd) do n = n + 1 end; return n end)())
  ok(sd['attn.q_proj.weight']:is_same_storage(a.attn.q_proj.weight), 'state_dict shares storage')
  b:load_state_dict(sd)
  near(b(x):totable(), a(x):totable(), 0)

  local c = nn.SequenceClassifier(cfg)
  local before = c.classifier.weight:clone()
  local bad = {}
  for k, v in pairs(a:state_dict()) do bad[k] = v end
  bad['norm.bias'] = nil                                    -- missing
  bad['extra.weight'] = efla.zeros(3)                       -- unexpected
  bad['classifier.weight'] = efla.zeros(3, 4)               -- wrong shape
  bad['input_proj.bias'] = bad['input_proj.bias']:double()  -- wrong dtype
  bad['pos_emb.weight'] = 'oops'                            -- not a tensor
  local err = raises(function() c:load_state_dict(bad) end, '5 problems')
  for _, want in ipairs({ 'missing: norm.bias [4]', 'unexpected: extra.weight',
    'wrong shape: classifier.weight is [3,4] in the state dict, [10,4] in the model',
    'wrong dtype: input_proj.bias is float64 in the state dict, float32 in the model',
    'not a tensor: pos_emb.weight is a string' }) do
    ok(err:find(want, 1, true), 'the error lists "' .. want .. '": ' .. err)
  end
  ok(c.classifier.weight:eq(before):all(), 'nothing copied when the state dict does not match')
  -- strict = false ignores missing and unexpected names, not wrong shapes
  local partial = { ['classifier.weight'] = a.classifier.weight:detach(), ['other'] = efla.zeros(1) }
  c:load_state_dict(partial, false)
  ok(c.classifier.weight:eq(a.classifier.weight):all())
  raises(function() c:load_state_dict({ ['classifier.weight'] = efla.zeros(2, 2) }, false) end, 'wrong shape')
end)

test('efla.manual_seed makes initialisation reproducible', function()
  local cfg = { vocab_size = 9, d_model = 8, n_layers = 2, n_heads = 2 }
  efla.manual_seed(77); local a = nn.CausalLM(cfg)
  efla.manual_seed(77); local b = nn.CausalLM(cfg)
  efla.manual_seed(78); local c = nn.CausalLM(cfg)
  local same, differ = true, false
  for i, p in ipairs(a:parameters()) do
    if not p:eq(b:parameters()[i]):all() then same = false end
    if p:numel() > 8 and not p:eq(c:parameters()[i]):all() then differ = true end
  end
  ok(same, 'the same seed gives the same weights')
  ok(differ, 'another seed gives other weights')
end)

test('init functions: documented distributions and bounds', function()
  efla.manual_seed(11)
  local w = nn.init.xavier_uniform(efla.empty(200, 300))
  local a = math.sqrt(6 / 500)
  ok(w:abs():max():item() <= a, 'within the xavier bound')
  near(w:double():var():item(), a * a / 3, 0.05 * a * a / 3)
  local w2 = nn.init.xavier_uniform(efla.empty(20, 30), 2)
  ok(w2:abs():max():item() <= 2 * math.sqrt(6 / 50) and w2:abs():max():item() > math.sqrt(6 / 50))
  local xn = nn.init.xavier_normal(efla.empty(200, 300, F64))
  near(xn:std():item(), math.sqrt(2 / 500), 0.03 * math.sqrt(2 / 500))
  local n = nn.init.normal(efla.empty(100000, F64), 0.5, 2)
  near(n:mean():item(), 2, 0.01)
  near(n:std():item(), 0.5, 0.01)
  local u = nn.init.uniform(efla.empty(1000), -1, 3)
  ok(u:min():item() >= -1 and u:max():item() <= 3 and u:max():item() > 2.9)
  ok(nn.init.zeros(efla.ones(3)):eq(0):all())
  ok(nn.init.constant(efla.ones(3), 2.5):eq(2.5):all())
  -- modules' documented defaults
  local lin = nn.Linear(30, 20)
  ok(lin.bias:eq(0):all() and lin.weight:abs():max():item() <= math.sqrt(6 / 50))
  local ln = nn.LayerNorm(5)
  ok(ln.weight:eq(1):all() and ln.bias:eq(0):all())
  near(nn.Embedding(1000, 50).weight:std():item(), 1, 0.02)
  raises(function() nn.init.xavier_uniform(efla.empty(5)) end, 'at least 2 dims')
end)

test('tostring: a readable, indented module tree', function()
  local seq = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Residual(nn.Linear(8, 8, { bias = false })), nn.LayerNorm(8))
  eq(tostring(seq), table.concat({
    'Sequential(',
    '  (1): Linear(4 -> 8)',
    '  (2): GELU()',
    '  (3): Residual(',
    '    (fn): Linear(8 -> 8, no bias)',
    '  )',
    '  (4): LayerNorm(8, eps=1e-05)',
    ')' }, '\n'))
  local s = tostring(nn.CausalLM { vocab_size = 5, d_model = 8, n_layers = 2, n_heads = 2 })
  ok(s:find('^CausalLM%(\n  %(embed%): Embedding%(5, 8%)\n  %(layers%): ModuleList%(\n    %(1%): Block%(\n'), s)
  ok(s:find('\n      (attn): DeltaAttention(\n        heads=2, head_dim=4, order=exact, key_norm=none, query_norm=l2, short_conv=4, output_norm\n        (q_proj): Linear(8 -> 8, no bias)\n', 1, true), s)
  ok(s:find('\n        (q_conv): ShortConv(8, kernel=4, silu)\n', 1, true), s)
  ok(s:find('\n      (mlp): SwiGLU(\n        8 -> 24 -> 8\n        (gate): Linear(8 -> 24, no bias)\n', 1, true), s)
  ok(s:sub(-36) == '\n  (head): Linear(8 -> 5, no bias)\n)', s)
end)

test('module fields: assignment registers children and replaces parameters; m(x) == m:forward(x)', function()
  local m = nn.Sequential()
  m.proj = nn.Linear(2, 3)
  eq(m:named_parameters()[1][1], 'proj.weight')
  local w = efla.zeros(3, 2)
  m.proj.weight = w
  ok(m.proj.weight == w and w.requires_grad, 'the new tensor is the parameter and requires grad')
  eq(#m:parameters(), 2)
  local x = efla.randn(4, 2)
  near(m(x):totable(), m:forward(x):totable(), 0)
  m.note = 'plain field'
  eq(m.note, 'plain field')
  raises(function() m:register_parameter('bad', efla.randn(2, { requires_grad = true }) * 2) end, 'pass a leaf')
  raises(function() m:register_parameter('idx', efla.zeros(2, { dtype = 'int64' })) end, 'floating point')
  raises(function() m:add_module('x', {}) end, 'expected an nn module')
end)

test('zero_grad, to(dtype) keeps leaves that require grad', function()
  local m = nn.Sequential(nn.Linear(3, 3), nn.RMSNorm(3))
  m(efla.randn(2, 3)):sum():backward()
  ok(m[1].weight.grad ~= nil)
  m:zero_grad()
  ok(m[1].weight.grad == nil and m[2].weight.grad == nil)
  local before = m[1].weight:double()
  m:to('float64')
  for _, p in ipairs(m:parameters()) do ok(p:dtype() == 'float64' and p.is_leaf and p.requires_grad) end
  near(m[1].weight:totable(), before:totable(), 0)
  eq(m(efla.randn(2, 3, F64)):dtype(), 'float64')
  m:float()
  eq(m[1].weight:dtype(), 'float32')
end)

t.done()

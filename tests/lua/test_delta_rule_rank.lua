-- test_delta_rule_rank.lua: efla.ops.delta_rule_rank (the rank-r exact update, docs/RANK_R.md)
-- against an independent dense reference: each token's ODE dS/dt = -K^T K S + K^T V solved
-- with the matrix exponential of the augmented (dk+dv) x (dk+dv) system, by scaling and
-- squaring of its Taylor series, written here. Float64, tiny sizes.
local efla = require 'efla'
local t = dofile('tests/lua/testlib.lua')
local test, near, ok, raises = t.test, t.near, t.ok, t.raises
local F64 = { dtype = 'float64' }

-- ---- the dense reference ----------------------------------------------------------------------
local dense = dofile('tests/lua/dense_ref.lua')
local function expm(M) return dense.expm(M, 0.5) end   -- scaled to |M / 2^s| <= 1/2

-- one token: Y' = [[-A, C], [0, 0]] Y with Y = [S; I], A = K^T K, C = K^T V; S_t = top of e^{beta M} [S; I]
local function ref_step(S, K, V, beta)
  local r, dk, dv = #K, #S, #S[1]
  local n = dk + dv
  local M = {}
  for i = 1, n do M[i] = {}; for j = 1, n do M[i][j] = 0 end end
  for a = 1, dk do
    for b = 1, dk do
      local s = 0
      for i = 1, r do s = s + K[i][a] * K[i][b] end
      M[a][b] = -beta * s
    end
    for j = 1, dv do
      local s = 0
      for i = 1, r do s = s + K[i][a] * V[i][j] end
      M[a][dk + j] = beta * s
    end
  end
  local E = expm(M)
  local Sn = {}
  for a = 1, dk do
    Sn[a] = {}
    for j = 1, dv do
      local s = E[a][dk + j]
      for b = 1, dk do s = s + E[a][b] * S[b][j] end
      Sn[a][j] = s
    end
  end
  return Sn
end

-- the whole operator: o [B][T][H][dv], S [B][H][dk][dv]
local function reference(q, k, v, beta, S0, scale)
  q, k, v, beta = q:totable(), k:totable(), v:totable(), beta:totable()
  local S0t = S0 and S0:totable()
  local B, T, H, dk, dv = #q, #q[1], #q[1][1], #q[1][1][1], #v[1][1][1][1]
  scale = scale or 1 / math.sqrt(dk)
  local o, Sf = {}, {}
  for b = 1, B do
    o[b], Sf[b] = {}, {}
    for tt = 1, T do o[b][tt] = {} end
    for h = 1, H do
      local S = {}
      for a = 1, dk do S[a] = {}; for j = 1, dv do S[a][j] = S0t and S0t[b][h][a][j] or 0 end end
      for tt = 1, T do
        S = ref_step(S, k[b][tt][h], v[b][tt][h], beta[b][tt][h])
        o[b][tt][h] = {}
        for j = 1, dv do
          local s = 0
          for a = 1, dk do s = s + q[b][tt][h][a] * S[a][j] end
          o[b][tt][h][j] = scale * s
        end
      end
      Sf[b][h] = S
    end
  end
  return efla.tensor(o, F64), efla.tensor(Sf, F64)
end

-- inputs with the hard cases planted: token 2 has zero keys, token 3 linearly dependent
-- keys (key 2 = 2 key 1, rank-deficient K), token 4 orthogonal keys of equal norm (a
-- repeated eigenvalue of K K^T); with r > dk every token is rank-deficient anyway.
local function inputs(B, T, H, r, dk, dv, seed)
  efla.manual_seed(seed or 1)
  local q, k, v = efla.randn({ B, T, H, dk }, F64), efla.randn({ B, T, H, r, dk }, F64), efla.randn({ B, T, H, r, dv }, F64)
  local beta = efla.rand({ B, T, H }, F64)
  local S0 = efla.randn({ B, H, dk, dv }, F64)
  local kt = k:totable()
  for b = 1, B do
    for h = 1, H do
      if T >= 2 then for i = 1, r do for a = 1, dk do kt[b][2][h][i][a] = 0 end end end
      if T >= 3 and r >= 2 then for a = 1, dk do kt[b][3][h][2][a] = 2 * kt[b][3][h][1][a] end end
      if T >= 4 then
        for i = 1, r do for a = 1, dk do kt[b][4][h][i][a] = (i == a) and 1.3 or 0 end end
      end
    end
  end
  return q, efla.tensor(kt, F64), v, beta, S0
end

local function maxdiff(a, b) return (a - b):abs():max():item() end
local function finite(x) local d = x - x; return d:ne(d):sum():item() == 0 end

test('delta_rule_rank == the dense matrix exponential, r = 1..4 (zero, dependent, orthogonal keys)', function()
  for r = 1, 4 do
    local q, k, v, beta, S0 = inputs(2, 6, 2, r, 3, 2, r)
    local o, S = efla.ops.delta_rule_rank(q, k, v, beta, { initial_state = S0 })
    local ro, rS = reference(q, k, v, beta, S0)
    ok(maxdiff(o, ro) < 1e-12, string.format('r = %d: output off the dense reference by %g', r, maxdiff(o, ro)))
    ok(maxdiff(S, rS) < 1e-12, string.format('r = %d: state off by %g', r, maxdiff(S, rS)))
  end
  -- large keys (|k|^2 ~ 1e4: e^{-beta G} underflows along them) and a zero initial state
  local q, k, v, beta = inputs(1, 4, 1, 3, 4, 3, 9)
  k = k * 60
  local o, S = efla.ops.delta_rule_rank(q, k, v, beta, { scale = 0.5 })
  local ro, rS = reference(q, k, v, beta, nil, 0.5)
  ok(maxdiff(o, ro) < 1e-9 * (1 + ro:abs():max():item()), 'large keys: off by ' .. maxdiff(o, ro))
  ok(maxdiff(S, rS) < 1e-9 * (1 + rS:abs():max():item()), 'large keys: state off by ' .. maxdiff(S, rS))
end)

test('delta_rule_rank with r = 1 is delta_rule (exact and RK orders) to 1e-12', function()
  local q, k, v, beta, S0 = inputs(2, 7, 3, 1, 4, 3, 5)
  for _, order in ipairs({ 'exact', 1, 2, 4 }) do
    local o, S = efla.ops.delta_rule_rank(q, k, v, beta, { initial_state = S0, order = order })
    local o1, S1 = efla.ops.delta_rule(q, k:select(4, 1), v:select(4, 1), beta,
      { initial_state = S0, order = order, algorithm = 'recurrent' })
    ok(maxdiff(o, o1) < 1e-12 and maxdiff(S, S1) < 1e-12, string.format('order %s: %g, %g', tostring(order), maxdiff(o, o1), maxdiff(S, S1)))
  end
end)

test('delta_rule_rank: huge keys stay finite; beta = 0 leaves the state alone', function()
  local q, k, v, beta, S0 = inputs(1, 3, 1, 3, 3, 2, 4)
  local o, S = efla.ops.delta_rule_rank(q, k * 1e12, v, beta, { initial_state = S0 })
  ok(finite(o) and finite(S), 'keys of norm 1e12 gave a non-finite output')
  local _, S2 = efla.ops.delta_rule_rank(q, k, v, beta * 0, { initial_state = S0 })
  ok(maxdiff(S2, S0) == 0, 'beta = 0 changed the state')
end)

test('delta_rule_rank: a sequence in two pieces (state carry) == one pass', function()
  local q, k, v, beta, S0 = inputs(2, 9, 2, 3, 3, 4, 6)
  local o, S = efla.ops.delta_rule_rank(q, k, v, beta, { initial_state = S0 })
  local function part(x, a, n) return x:narrow(2, a, n) end
  local oa, Sa = efla.ops.delta_rule_rank(part(q, 1, 4), part(k, 1, 4), part(v, 1, 4), part(beta, 1, 4), { initial_state = S0 })
  local ob, Sb = efla.ops.delta_rule_rank(part(q, 5, 5), part(k, 5, 5), part(v, 5, 5), part(beta, 5, 5), { initial_state = Sa })
  ok(maxdiff(efla.cat({ oa, ob }, 2), o) < 1e-14 and maxdiff(Sb, S) < 1e-14, 'two pieces differ from one pass')
  -- float32 follows float64
  local o32 = efla.ops.delta_rule_rank(q:float(), k:float(), v:float(), beta:float(), { initial_state = S0:float(), output_final_state = false })
  ok(maxdiff(o32:double(), o) < 1e-5, 'float32 off float64 by ' .. maxdiff(o32:double(), o))
end)

local function gradcheck(what, B, T, H, r, dk, dv, order, seed)
  local q, k, v, beta, S0 = inputs(B, T, H, r, dk, dv, seed)
  beta = beta * 0.8 + 0.1   -- keep beta +- eps inside (0, 1)
  local leaves = {}
  for i, x in ipairs({ q, k, v, beta, S0 }) do leaves[i] = x:detach():requires_grad_() end
  local good, report = efla.gradcheck(function(q_, k_, v_, b_, s_)
    return efla.ops.delta_rule_rank(q_, k_, v_, b_, { initial_state = s_, order = order })
  end, leaves, { atol = 1e-6, rtol = 1e-5 })
  ok(good, what .. ': ' .. tostring(report))
end

test('delta_rule_rank gradients == finite differences (q, k, v, beta, state; r = 1, 2, 3)', function()
  gradcheck('r = 1', 1, 5, 2, 1, 3, 2, 'exact', 11)
  gradcheck('r = 2', 1, 5, 1, 2, 3, 2, 'exact', 12)
  gradcheck('r = 3 > dk = 2', 1, 5, 1, 3, 2, 2, 'exact', 13)
  gradcheck('r = 2, order 2', 1, 4, 1, 2, 3, 2, 2, 14)
end)

test('delta_rule_rank gradients across the backward checkpoints (T = 37)', function()
  gradcheck('T = 37', 1, 37, 1, 2, 2, 2, 'exact', 15)
end)

test('delta_rule_rank: bad input gets an error naming it', function()
  local q, k, v, beta = inputs(1, 3, 1, 2, 3, 2, 1)
  raises(function() efla.ops.delta_rule_rank(q, k:select(4, 1), v, beta) end, 'k must be [B,T,H,r,dk]')
  raises(function() efla.ops.delta_rule_rank(q, k, v:narrow(4, 1, 1), beta) end, 'v must be [B,T,H,r,dv]')
  raises(function() efla.ops.delta_rule_rank(q, k, v, beta:narrow(2, 1, 2)) end, 'beta must be [B,T,H]')
  raises(function() efla.ops.delta_rule_rank(q, k, v:float(), beta) end, 'v is float32 but must be float64')
  local k9 = efla.randn({ 1, 3, 1, 9, 3 }, F64)
  raises(function() efla.ops.delta_rule_rank(q, k9, efla.randn({ 1, 3, 1, 9, 2 }, F64), beta) end, 'r must be 1..8')
  raises(function() efla.ops.delta_rule_rank(q, k, v, beta, { initial_state = efla.zeros({ 1, 1, 2, 2 }, F64) }) end,
    'initial_state must be [B,H,dk,dv]')
  raises(function() efla.ops.delta_rule_rank(q, k, v, beta, { order = 7 }) end, 'order')
end)

test('RankDeltaAttention: parameters equal to DeltaAttention up to the mixes; pieces == one call; gradients', function()
  efla.manual_seed(3)
  local d, H = 16, 2
  local base = efla.nn.DeltaAttention { d_model = d, n_heads = H, dtype = 'float64' }
  for _, r in ipairs({ 1, 2, 4 }) do
    local m = efla.nn.RankDeltaAttention { d_model = d, n_heads = H, rank = r, short_conv = true, dtype = 'float64' }
    local extra = m:num_parameters() - base:num_parameters() - 3 * d * 4   -- minus the short convs (no bias)
    t.eq(extra, 2 * r * d, 'r = ' .. r .. ': the mixes are the only extra parameters')
    local x = efla.randn({ 2, 6, d }, F64)
    local y = m:forward(x)
    local ya, st = m:forward(x:narrow(2, 1, 2))
    local yb = m:forward(x:narrow(2, 3, 4), st)
    ok(maxdiff(efla.cat({ ya, yb }, 2), y) < 1e-12, 'r = ' .. r .. ': pieces differ from one call')
  end
  local m = efla.nn.RankDeltaAttention { d_model = 8, n_heads = 2, rank = 2, dtype = 'float64' }
  local x = efla.randn({ 1, 4, 8 }, F64):requires_grad_()
  local y = m:forward(x)
  y:square():sum():backward()
  ok(m.key_mix.grad and m.key_mix.grad:abs():sum():item() > 0, 'key_mix gets a gradient')
  ok(x.grad and finite(x.grad), 'x gets a finite gradient')
  raises(function() efla.nn.RankDeltaAttention { d_model = 8, rank = 9 } end, 'rank must be a whole number 1..8')
end)

test("CausalLM with rank (the LM method 'efla-r2') trains a step and generates recurrently", function()
  local LM = require 'efla.tasks.lm'
  local cfg = LM.model_config('efla-r2', { d_model = 16, layers = 1, heads = 2 }, 32)
  t.eq(cfg.rank, 2)
  efla.manual_seed(5)
  local model = efla.nn.CausalLM(cfg)
  local toks = efla.randint(1, 33, { 2, 6 }, { dtype = 'int64' })
  local logits = model:forward(toks)
  local la, st = model:forward(toks:narrow(2, 1, 3))
  local lb = model:forward(toks:narrow(2, 4, 3), st)
  ok(maxdiff(efla.cat({ la, lb }, 2), logits) < 1e-4, 'recurrent pieces differ from one pass')
  logits:sum():backward()
  local p = model.layers[1].attn.key_mix
  ok(p.grad ~= nil, 'the mixer is in the model')
end)

t.done()

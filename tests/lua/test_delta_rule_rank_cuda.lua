-- test_delta_rule_rank_cuda.lua: the CUDA kernels of efla.ops.delta_rule_rank
-- (cuda/delta_rule_rank.cu) against the CPU operator, which test_delta_rule_rank.lua checks
-- against a dense matrix exponential and finite differences. Outputs, final states and every
-- gradient, for r = 1..4, several column tiles (dv > 32, not a multiple of 32), sequences
-- longer than the 32-token checkpoints, zero and dependent keys, float64, float32 and
-- bfloat16. Skipped without a CUDA device. (EFLA_RANK_TEST_DEVICE=cpu runs it cpu against cpu,
-- to check the test itself on a machine without a GPU.)
local efla = require 'efla'
local t = dofile('tests/lua/testlib.lua')
local ok = t.ok
local DEVICE = os.getenv('EFLA_RANK_TEST_DEVICE') or 'cuda'

local function rel(a, b)
  a, b = a:double():cpu(), b:double():cpu()
  return (a - b):abs():max():item() / math.max(1e-30, b:abs():max():item())
end

-- inputs with zero keys at token 2 and dependent keys at token 3
local function inputs(B, T, H, r, dk, dv, seed)
  efla.manual_seed(seed)
  local F64 = { dtype = 'float64' }
  local q, k, v = efla.randn({ B, T, H, dk }, F64), efla.randn({ B, T, H, r, dk }, F64), efla.randn({ B, T, H, r, dv }, F64)
  local mask = efla.ones({ 1, T, 1, r, 1 }, F64)
  if T >= 2 then mask:narrow(2, 2, 1):zero_() end
  k = k * mask
  if r >= 2 and T >= 3 then
    local kt = k:totable()
    for b = 1, B do for h = 1, H do for a = 1, dk do kt[b][3][h][2][a] = 2 * kt[b][3][h][1][a] end end end
    k = efla.tensor(kt, F64)
  end
  return q, k, v, efla.rand({ B, T, H }, F64), efla.randn({ B, H, dk, dv }, F64) * 0.3
end

-- forward and backward of the operator on `device` in `dtype`; returns o, S and the gradients
local function run(device, dtype, q, k, v, beta, S0, order)
  local sdt = dtype == 'bfloat16' and 'float32' or dtype
  local leaves = {}
  for i, x in ipairs({ q, k, v, beta }) do leaves[i] = x:to(dtype):to(device):detach():requires_grad_() end
  leaves[5] = S0:to(sdt):to(device):detach():requires_grad_()
  local o, S = efla.ops.delta_rule_rank(leaves[1], leaves[2], leaves[3], leaves[4], { initial_state = leaves[5], order = order })
  efla.manual_seed(99)
  local wo, ws = efla.randn(o:size(), { dtype = 'float64' }), efla.randn(S:size(), { dtype = 'float64' })
  local L = (o:double():cpu() * wo):sum() + (S:double():cpu() * ws):sum()
  L:backward()
  local g = {}
  for i = 1, 5 do g[i] = leaves[i].grad end
  return o, S, g
end

local names = { 'q', 'k', 'v', 'beta', 'initial_state' }
local function compare(what, dtype, tol, B, T, H, r, dk, dv, order, seed)
  local q, k, v, beta, S0 = inputs(B, T, H, r, dk, dv, seed)
  local cdt = dtype == 'bfloat16' and 'float32' or dtype   -- the CPU reference of bf16 runs in fp32
  if dtype == 'bfloat16' then   -- round the inputs once, so both sides see the same numbers
    q, k, v, beta = q:bfloat16():double(), k:bfloat16():double(), v:bfloat16():double(), beta:bfloat16():double()
  end
  local oc, Sc, gc = run('cpu', cdt, q, k, v, beta, S0, order)
  local og, Sg, gg = run(DEVICE, dtype, q, k, v, beta, S0, order)
  ok(rel(og, oc) < tol, string.format('%s: output off the cpu by %g', what, rel(og, oc)))
  ok(rel(Sg, Sc) < tol, string.format('%s: final state off by %g', what, rel(Sg, Sc)))
  for i = 1, 5 do
    ok(rel(gg[i], gc[i]) < tol * 4, string.format('%s: d%s off the cpu by %g', what, names[i], rel(gg[i], gc[i])))
  end
end

if DEVICE == 'cuda' and not efla.cuda.is_available() then
  t.skip('delta_rule_rank on cuda', 'no CUDA device')
else
  t.test('delta_rule_rank cuda == cpu, float64: r = 1..4, tiles, checkpoints, zero/dependent keys', function()
    for r = 1, 4 do compare('r = ' .. r, 'float64', 1e-11, 2, 45, 2, r, 8, 40, 'exact', r) end
    compare('order 2', 'float64', 1e-11, 1, 9, 1, 2, 4, 3, 2, 7)
    compare('r = 8, dk = 64, dv = 64', 'float64', 1e-11, 1, 35, 2, 8, 64, 64, 'exact', 8)
  end)
  t.test('delta_rule_rank cuda == cpu, float32 and bfloat16', function()
    compare('float32 r = 2', 'float32', 2e-4, 2, 70, 2, 2, 32, 64, 'exact', 21)
    compare('float32 r = 4, dv = 33', 'float32', 2e-4, 1, 33, 3, 4, 16, 33, 'exact', 22)
    if DEVICE == 'cuda' then compare('bfloat16 r = 4', 'bfloat16', 1e-2, 2, 40, 2, 4, 64, 64, 'exact', 23) end
  end)
  t.test('delta_rule_rank cuda: a sequence in two pieces == one pass; T = 0', function()
    local q, k, v, beta, S0 = inputs(1, 50, 2, 3, 16, 24, 31)
    local dev = {}
    for i, x in ipairs({ q, k, v, beta, S0 }) do dev[i] = x:to(DEVICE) end
    local o, S = efla.ops.delta_rule_rank(dev[1], dev[2], dev[3], dev[4], { initial_state = dev[5] })
    local function p(x, a, n) return x:narrow(2, a, n) end
    local _, Sa = efla.ops.delta_rule_rank(p(dev[1], 1, 20), p(dev[2], 1, 20), p(dev[3], 1, 20), p(dev[4], 1, 20), { initial_state = dev[5] })
    local ob, Sb = efla.ops.delta_rule_rank(p(dev[1], 21, 30), p(dev[2], 21, 30), p(dev[3], 21, 30), p(dev[4], 21, 30), { initial_state = Sa })
    ok(rel(Sb, S) < 1e-12 and rel(ob, p(o, 21, 30)) < 1e-12, 'pieces differ from one pass')
    local _, S0out = efla.ops.delta_rule_rank(p(dev[1], 1, 0), p(dev[2], 1, 0), p(dev[3], 1, 0), p(dev[4], 1, 0), { initial_state = dev[5] })
    ok(rel(S0out, dev[5]) == 0, 'no tokens: the state passes through')
  end)
end

t.done()

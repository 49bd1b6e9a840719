-- test_gated_delta_rule_cuda.lua: gated EFLA and Gated DeltaNet on CUDA (cuda/delta_rule_gated.cu,
-- the alpha' rows of cuda/delta_rule_alpha.cu) against the CPU float64 recurrence, which
-- test_gated_delta_rule.lua checks against a dense matrix exponential and finite differences.
-- Outputs, final states and the gradients of q, k, v, beta, log_decay and the initial state, for
-- orders 'exact' and 1, chunk sizes 16 and 64, T not a multiple of C, dk ~= dv, several column
-- tiles, cu_seqlens (with an empty sequence), saved and recomputed chunk states, float64,
-- float32 and bfloat16; g = 0 against ungated EFLA on CUDA; the single-token step; tiny
-- gamma + lambda; DeltaAttention{gate = true} on cuda against the cpu. Skipped without a CUDA
-- device. (EFLA_GATED_TEST_DEVICE=cpu runs it cpu against cpu, to check the test itself.)
--   bundle/bin/efla tests/lua/test_gated_delta_rule_cuda.lua
local efla = require 'efla'
local t = dofile((arg[0]:match('^(.*[/\\])') or './') .. 'testlib.lua')
local ok = t.ok
local DEVICE = os.getenv('EFLA_GATED_TEST_DEVICE') or 'cuda'
local F64 = { dtype = 'float64' }

-- |a - b| / |b| (Euclidean norms), both in float64 on the cpu
local function rel(a, b)
  a, b = a:double():cpu(), b:double():cpu()
  local d = (a - b):pow(2):sum():item() ^ 0.5
  return d / math.max(1e-30, b:pow(2):sum():item() ^ 0.5)
end

-- float64 inputs; N initial states (N = B, or the number of sequences of cu_seqlens)
local function inputs(B, T, H, dk, dv, N, seed, kscale)
  efla.manual_seed(seed)
  local q, k = efla.randn({ B, T, H, dk }, F64), efla.randn({ B, T, H, dk }, F64) * ((kscale or 1) / math.sqrt(dk))
  local v, beta = efla.randn({ B, T, H, dv }, F64), efla.rand({ B, T, H }, F64) * 0.9 + 0.05
  local g = efla.rand({ B, T, H }, F64) * -0.6
  return { q, k, v, beta, g, efla.randn({ N, H, dk, dv }, F64) * 0.3 }
end

-- forward and backward on `device` in `dtype`: o, final state and the six gradients
local function run(device, dtype, x, opts)
  local sdt = dtype == 'bfloat16' and 'float32' or dtype
  local leaves = {}
  for i = 1, 5 do leaves[i] = x[i]:to(dtype):to(device):detach():requires_grad_() end
  leaves[6] = x[6]:to(sdt):to(device):detach():requires_grad_()
  local o_ = { log_decay = leaves[5], initial_state = leaves[6] }
  for key, val in pairs(opts) do o_[key] = val end
  if o_.cu_seqlens then o_.cu_seqlens = o_.cu_seqlens:to(device) end
  local o, S = efla.ops.delta_rule(leaves[1], leaves[2], leaves[3], leaves[4], o_)
  efla.manual_seed(99)
  local wo, ws = efla.randn(o:size(), F64), efla.randn(S:size(), F64)
  local L = (o:double():cpu() * wo):sum() + (S:double():cpu() * ws):sum()
  L:backward()
  local g = {}
  for i = 1, 6 do g[i] = leaves[i].grad end
  return o, S, g
end

local names = { 'q', 'k', 'v', 'beta', 'log_decay', 'initial_state' }
-- `dtype` on DEVICE against the cpu float64 recurrence (bfloat16: on the same rounded inputs)
local function compare(what, dtype, tol, x, opts)
  if dtype == 'bfloat16' then
    for i = 1, 5 do x[i] = x[i]:bfloat16():double() end
  end
  local ref = {}
  for key, val in pairs(opts) do ref[key] = val end
  ref.algorithm, ref.recompute_states = 'recurrent', nil
  local oc, Sc, gc = run('cpu', 'float64', x, ref)
  local og, Sg, gg = run(DEVICE, dtype, x, opts)
  ok(rel(og, oc) < tol, string.format('%s: output off the cpu by %g', what, rel(og, oc)))
  ok(rel(Sg, Sc) < tol, string.format('%s: final state off by %g', what, rel(Sg, Sc)))
  for i = 1, 6 do
    ok(rel(gg[i], gc[i]) < tol * 4, string.format('%s: d%s off the cpu by %g', what, names[i], rel(gg[i], gc[i])))
  end
end

if DEVICE == 'cuda' and not efla.cuda.is_available() then
  t.skip('gated delta_rule on cuda', 'no CUDA device')
else
  t.test('gated cuda == cpu float64: orders exact and 1, C = 16 / 64, dk ~= dv, tiles, saved / recomputed states', function()
    for _, order in ipairs({ 'exact', 1 }) do
      compare(order .. ' C=16 dk=32 dv=48', 'float64', 1e-10, inputs(2, 37, 2, 32, 48, 2, 1), { order = order, chunk_size = 16 })
      compare(order .. ' C=64 recompute', 'float64', 1e-10, inputs(1, 70, 2, 32, 48, 1, 2),
        { order = order, chunk_size = 64, recompute_states = true })
    end
    compare('dk = dv = 128, C = 16', 'float64', 1e-10, inputs(1, 21, 1, 128, 128, 1, 3), { chunk_size = 16, algorithm = 'recurrent' })
    compare('dk = 8, dv = 3', 'float64', 1e-10, inputs(2, 5, 3, 8, 3, 2, 4), { chunk_size = 16 })
  end)

  t.test('gated cuda == cpu float64: cu_seqlens with an empty sequence', function()
    local cu = efla.tensor({ 0, 13, 13, 45 }, { dtype = 'int64' })
    for _, rec in ipairs({ false, true }) do
      compare('cu_seqlens', 'float64', 1e-10, inputs(1, 45, 2, 16, 40, 3, 5), { cu_seqlens = cu, chunk_size = 16, recompute_states = rec })
    end
  end)

  t.test('gated cuda == cpu: float32 and bfloat16', function()
    compare('float32 exact', 'float32', 1e-5, inputs(2, 37, 2, 32, 48, 2, 6), { chunk_size = 16 })
    compare('float32 order 1', 'float32', 1e-5, inputs(1, 70, 2, 64, 64, 1, 7), { order = 1, chunk_size = 64, recompute_states = true })
    if DEVICE == 'cuda' then
      compare('bfloat16 exact', 'bfloat16', 2e-2, inputs(2, 40, 2, 64, 64, 2, 8), { chunk_size = 16 })
      compare('bfloat16 order 1', 'bfloat16', 2e-2, inputs(1, 33, 2, 32, 48, 1, 9), { order = 1, chunk_size = 64 })
    end
  end)

  t.test('gated cuda: g = 0 is ungated EFLA on cuda; tiny gamma + lambda; the step op', function()
    local x = inputs(2, 29, 2, 16, 24, 2, 10)
    x[5] = efla.zeros({ 2, 29, 2 }, F64)
    local og, Sg, gg = run(DEVICE, 'float64', x, { chunk_size = 16 })
    local leaves = {}
    for i, y in ipairs({ x[1], x[2], x[3], x[4], x[6] }) do leaves[i] = y:to(DEVICE):detach():requires_grad_() end
    local o, S = efla.ops.delta_rule(leaves[1], leaves[2], leaves[3], leaves[4], { initial_state = leaves[5], chunk_size = 16 })
    efla.manual_seed(99)
    local wo, ws = efla.randn(o:size(), F64), efla.randn(S:size(), F64)
    local L = (o:cpu() * wo):sum() + (S:cpu() * ws):sum()
    L:backward()
    ok(rel(og, o) < 1e-12 and rel(Sg, S) < 1e-12, 'g = 0: output / state differ from ungated EFLA')
    for i, gi in ipairs({ 1, 2, 3, 4, 6 }) do
      ok(rel(gg[gi], leaves[i].grad) < 1e-11, 'g = 0: d' .. names[gi] .. ' differs from ungated EFLA')
    end
    -- tiny keys and gates: x' = beta lambda - g ~ 1e-14, where (1 - e^{-x'})/x' would cancel
    local y = inputs(1, 20, 2, 8, 8, 1, 11, 1e-7)
    y[5] = efla.rand({ 1, 20, 2 }, F64) * -1e-12
    compare('gamma + lambda -> 0', 'float64', 1e-10, y, { chunk_size = 16 })
    -- one token at a time == the sequence on the device
    local z = inputs(1, 9, 2, 16, 40, 1, 12)
    local d = {}
    for i = 1, 6 do d[i] = z[i]:to(DEVICE) end
    local oseq, Sseq = efla.ops.delta_rule(d[1], d[2], d[3], d[4], { log_decay = d[5], initial_state = d[6], algorithm = 'recurrent' })
    local st, outs = d[6], {}
    for ti = 1, 9 do
      outs[ti], st = efla.ops.delta_rule_step(d[1]:select(2, ti), d[2]:select(2, ti), d[3]:select(2, ti), d[4]:select(2, ti), st,
        { log_decay = d[5]:select(2, ti) })
    end
    ok(rel(efla.stack(outs, 2), oseq) < 1e-12 and rel(st, Sseq) < 1e-12, 'delta_rule_step differs from the sequence')
    t.raises(function() efla.ops.delta_rule(d[1], d[2], d[3], d[4], { log_decay = d[5], order = 2 }) end, 'order 1')
  end)

  t.test('DeltaAttention{gate = true} forward and backward on cuda == cpu', function()
    local nn = require 'efla.nn'
    for _, order in ipairs({ 'exact', 1 }) do
      local layers = {}
      for i, device in ipairs({ 'cpu', DEVICE }) do
        efla.manual_seed(13)
        layers[i] = nn.DeltaAttention({ d_model = 32, n_heads = 2, order = order, gate = true, dtype = 'float32', chunk_size = 16 })
        layers[i]:to(device)
      end
      efla.manual_seed(14)
      local x, w = efla.randn({ 2, 21, 32 }), efla.randn({ 2, 21, 32 })
      local ys = {}
      for i, device in ipairs({ 'cpu', DEVICE }) do
        ys[i] = layers[i]:forward(x:to(device))
        local L = (ys[i]:cpu() * w):sum()
        L:backward()
      end
      ok(rel(ys[2], ys[1]) < 1e-5, order .. ': output off the cpu by ' .. rel(ys[2], ys[1]))
      local pc, pg = layers[1]:named_parameters(), layers[2]:named_parameters()
      for i = 1, #pc do
        local e = rel(pg[i][2].grad, pc[i][2].grad)
        ok(e < 1e-4, string.format('%s: grad of %s off the cpu by %g', order, pc[i][1], e))
      end
    end
  end)
end

t.done()

-- test_gated_chunked.lua: the chunked backward of gated EFLA / Gated DeltaNet (the WY form with
-- a decay, docs/MATH.md §6) against the recurrent gated backward, in float64.
-- Run: build/efla tests/lua/test_gated_chunked.lua [name-pattern]
local efla = require 'efla'
local t = dofile((arg[0]:match('^(.*[/\\])') or './') .. 'testlib.lua')
local test, ok = t.test, t.ok

efla.manual_seed(11)
local F64 = { dtype = 'float64' }
local NAMES = { 'q', 'k', 'v', 'beta', 'g', 'S0' }

local function inputs(B, T, H, dk, dv, dtype)
  local o = { dtype = dtype or 'float64' }
  return {
    q = efla.randn(B, T, H, dk, o), k = efla.randn(B, T, H, dk, o) * 0.6, v = efla.randn(B, T, H, dv, o),
    beta = efla.rand(B, T, H, o) * 0.9 + 0.05, g = efla.rand(B, T, H, o) * -0.5,
    S0 = efla.randn(B, H, dk, dv, o) * 0.3,
  }
end

-- the loss <Wo, o> + <Ws, S_final>: a random output gradient and a final-state gradient
local function grads(x, Wo, Ws, opts)
  local leaf = {}
  for _, n in ipairs(NAMES) do leaf[n] = x[n]:detach():requires_grad_() end
  local o, S = efla.ops.delta_rule(leaf.q, leaf.k, leaf.v, leaf.beta, {
    order = opts.order, log_decay = opts.ungated and nil or leaf.g, initial_state = leaf.S0, scale = 0.7,
    algorithm = opts.algorithm, chunk_size = opts.chunk_size, recompute_states = opts.recompute,
    cu_seqlens = opts.cu_seqlens })
  local loss = (o * Wo):sum() + (S * Ws):sum()
  loss:backward()
  local r = {}
  for _, n in ipairs(NAMES) do r[n] = leaf[n].grad and leaf[n].grad:detach() end
  return r
end

-- max |a - b| / max |b| over every gradient
local function agree(a, b, tol, msg, skip)
  for _, n in ipairs(NAMES) do
    if not (skip and skip[n]) then
      local ref = b[n]:abs():max():item()
      local d = (a[n] - b[n]):abs():max():item() / (ref > 0 and ref or 1)
      ok(d <= tol, string.format('%s: d%s differs by %.3g relative (tolerance %.3g)', msg, n, d, tol))
    end
  end
end

local function weights(x, B, T, H, dk, dv, dtype)
  local o = { dtype = dtype or 'float64' }
  local NS = x.S0:size(1)
  return efla.randn(B, T, H, dv, o), efla.randn(NS, H, dk, dv, o)
end

test('chunked = recurrent gated backward: orders exact and 1, C = 16 and 64, T not a multiple of C', function()
  for _, case in ipairs({ { 16, 37 }, { 64, 150 } }) do
    local C, T = case[1], case[2]
    local B, H, dk, dv = 2, 2, 5, 3
    local x = inputs(B, T, H, dk, dv)
    local Wo, Ws = weights(x, B, T, H, dk, dv)
    for _, order in ipairs({ 'exact', 1 }) do
      local r = grads(x, Wo, Ws, { order = order, algorithm = 'recurrent', chunk_size = C })
      for _, rec in ipairs({ false, true }) do
        local c = grads(x, Wo, Ws, { order = order, algorithm = 'chunked', chunk_size = C, recompute = rec })
        agree(c, r, 1e-12, string.format('order %s C %d T %d recompute %s', order, C, T, tostring(rec)))
      end
    end
  end
end)

test('packed sequences (cu_seqlens) and dk < dv', function()
  local H, dk, dv = 2, 3, 6
  local x = inputs(1, 90, H, dk, dv)
  x.S0 = efla.randn(3, H, dk, dv, F64) * 0.3
  local cu = efla.tensor({ 0, 21, 21 + 5, 90 }, { dtype = 'int64' })
  local Wo, Ws = weights(x, 1, 90, H, dk, dv)
  for _, order in ipairs({ 'exact', 1 }) do
    local r = grads(x, Wo, Ws, { order = order, algorithm = 'recurrent', chunk_size = 16, cu_seqlens = cu })
    local c = grads(x, Wo, Ws, { order = order, algorithm = 'chunked', chunk_size = 16, cu_seqlens = cu })
    agree(c, r, 1e-12, 'cu_seqlens order ' .. order)
  end
end)

test('strong decay (g = -5, and -60 beside 0) stays exact and finite', function()
  local B, T, H, dk, dv = 1, 100, 2, 4, 4
  local x = inputs(B, T, H, dk, dv)
  local Wo, Ws = weights(x, B, T, H, dk, dv)
  for _, g in ipairs({ efla.full({ B, T, H }, -5, F64), efla.where(efla.rand(B, T, H, F64):gt(0.7), efla.full({ B, T, H }, -60, F64), efla.zeros(B, T, H, F64)) }) do
    x.g = g
    for _, C in ipairs({ 16, 64 }) do
      local r = grads(x, Wo, Ws, { algorithm = 'recurrent', chunk_size = C })
      local c = grads(x, Wo, Ws, { algorithm = 'chunked', chunk_size = C })
      for _, n in ipairs(NAMES) do
        local s = c[n]:abs():sum():item()
        ok(s == s and s < math.huge, 'finite d' .. n)
      end
      agree(c, r, 1e-12, 'strong decay C ' .. C)
    end
  end
end)

test('g = 0 gives the ungated chunked gradients', function()
  local B, T, H, dk, dv = 1, 40, 2, 4, 3
  local x = inputs(B, T, H, dk, dv)
  x.g = efla.zeros(B, T, H, F64)
  local Wo, Ws = weights(x, B, T, H, dk, dv)
  for _, order in ipairs({ 'exact', 1 }) do
    local u = grads(x, Wo, Ws, { order = order, algorithm = 'chunked', chunk_size = 16, ungated = true })
    local c = grads(x, Wo, Ws, { order = order, algorithm = 'chunked', chunk_size = 16 })
    agree(c, u, 1e-12, 'g = 0 order ' .. order, { g = true })
    local r = grads(x, Wo, Ws, { order = order, algorithm = 'recurrent', chunk_size = 16 })
    agree(c, r, 1e-12, 'g = 0 recurrent order ' .. order)
  end
end)

test('float32: chunked = recurrent gated backward to float rounding', function()
  local B, T, H, dk, dv = 2, 70, 2, 8, 8
  local x = inputs(B, T, H, dk, dv, 'float32')
  x.g = x.g * 4
  local Wo, Ws = weights(x, B, T, H, dk, dv, 'float32')
  local r = grads(x, Wo, Ws, { algorithm = 'recurrent', chunk_size = 32 })
  local c = grads(x, Wo, Ws, { algorithm = 'chunked', chunk_size = 32 })
  agree(c, r, 2e-4, 'float32')
end)

test('finite differences through chunks (T = 20, C = 16)', function()
  local x = inputs(1, 20, 2, 3, 2)
  local leaf = {}
  for i, n in ipairs(NAMES) do leaf[i] = x[n]:requires_grad_() end
  for _, order in ipairs({ 'exact', 1 }) do
    local function f(q, k, v, b, g, s)
      return efla.ops.delta_rule(q, k, v, b, { order = order, log_decay = g, initial_state = s, algorithm = 'chunked',
        chunk_size = 16, scale = 0.8 })
    end
    local good, report = efla.gradcheck(f, leaf, { atol = 1e-7, rtol = 1e-6 })
    ok(good, order .. ': ' .. tostring(report))
  end
end)

t.done()

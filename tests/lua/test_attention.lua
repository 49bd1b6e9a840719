-- test_attention.lua: efla.ops.attention (causal, sliding-window and full softmax attention)
-- against a naive reference built from an explicit mask matrix, its gradients against finite
-- differences (float64), the KV-cache alignment, and clear errors for bad input.
local efla = require 'efla'
local t = dofile('tests/lua/testlib.lua')

-- softmax(scale q k^T + M) v with M = 0 where allowed and -inf elsewhere, per head, from plain
-- differentiable ops (q [B,Tq,H,d]); query i sits at position Tk - Tq + i
local function reference(q, k, v, opts)
  opts = opts or {}
  local Tq, dk = q:size(2), q:size(4)
  local Tk = k:size(2)
  local scale = opts.scale or 1 / math.sqrt(dk)
  local mask = {}
  for i = 1, Tq do
    local row, p = {}, Tk - Tq + i
    for j = 1, Tk do
      local ok = (opts.causal == false or j <= p) and (not opts.window or j > p - opts.window)
      row[j] = ok and 0 or -math.huge
    end
    mask[i] = row
  end
  local M = efla.tensor(mask, { dtype = q:dtype() })
  local qh, kh, vh = q:permute(1, 3, 2, 4), k:permute(1, 3, 2, 4), v:permute(1, 3, 2, 4)
  local s = qh:matmul(kh:transpose(3, 4)) * scale + M
  return s:softmax(-1):matmul(vh):permute(1, 3, 2, 4)
end

local function randn(shape, dtype) return efla.randn(shape, { dtype = dtype or 'float64' }) end
local function maxdiff(a, b) return (a - b):abs():max():item() end

local cases = {
  { name = 'causal', opts = {} },
  { name = 'window 3', opts = { window = 3 } },
  { name = 'full (not causal)', opts = { causal = false } },
  { name = 'causal, scale 0.7', opts = { scale = 0.7 } },
}

for _, c in ipairs(cases) do
  t.test('forward equals the masked reference: ' .. c.name, function()
    efla.manual_seed(1)
    for _, dt in ipairs({ 'float64', 'float32' }) do
      local q, k, v = randn({ 2, 9, 3, 5 }, dt), randn({ 2, 9, 3, 5 }, dt), randn({ 2, 9, 3, 4 }, dt)
      local got, want = efla.ops.attention(q, k, v, c.opts), reference(q, k, v, c.opts)
      t.eq(got:size(), { 2, 9, 3, 4 })
      local tol = dt == 'float64' and 1e-12 or 1e-5
      t.ok(maxdiff(got, want) < tol, dt .. ': differs from the reference by ' .. maxdiff(got, want))
    end
  end)
  t.test('gradients match finite differences: ' .. c.name, function()
    efla.manual_seed(2)
    local q, k, v = randn({ 1, 6, 2, 3 }), randn({ 1, 6, 2, 3 }), randn({ 1, 6, 2, 4 })
    for _, x in ipairs({ q, k, v }) do x:requires_grad_() end
    local ok, report = efla.gradcheck(function(a, b, d) return efla.ops.attention(a, b, d, c.opts) end, { q, k, v })
    t.ok(ok, report)
  end)
end

t.test('gradients equal the reference gradients (float32, with a window)', function()
  efla.manual_seed(3)
  local function grads(f)
    efla.manual_seed(4)
    local q, k, v = randn({ 2, 11, 2, 8 }, 'float32'), randn({ 2, 11, 2, 8 }, 'float32'), randn({ 2, 11, 2, 8 }, 'float32')
    for _, x in ipairs({ q, k, v }) do x:requires_grad_() end
    local w = randn({ 2, 11, 2, 8 }, 'float32')
    ;(f(q, k, v) * w):sum():backward()
    return { q.grad, k.grad, v.grad }
  end
  local opts = { window = 4 }
  local a = grads(function(q, k, v) return efla.ops.attention(q, k, v, opts) end)
  local b = grads(function(q, k, v) return reference(q, k, v, opts) end)
  for i = 1, 3 do t.ok(maxdiff(a[i], b[i]) < 1e-4, 'gradient ' .. i .. ' differs by ' .. maxdiff(a[i], b[i])) end
end)

t.test('a KV cache: the last queries alone give the last rows of the full call', function()
  efla.manual_seed(5)
  local q, k, v = randn({ 2, 10, 2, 4 }), randn({ 2, 10, 2, 4 }), randn({ 2, 10, 2, 4 })
  for _, opts in ipairs({ {}, { window = 3 } }) do
    local full = efla.ops.attention(q, k, v, opts)
    local last3 = efla.ops.attention(q:narrow(2, 8, 3), k, v, opts)
    t.ok(maxdiff(last3, full:narrow(2, 8, 3)) < 1e-13, 'cached rows differ')
    local one = efla.ops.attention(q:narrow(2, 10, 1), k, v, opts)
    t.ok(maxdiff(one, full:narrow(2, 10, 1)) < 1e-13, 'one-token decode differs')
  end
end)

t.test('a window as long as the sequence is plain causal attention', function()
  efla.manual_seed(6)
  local q, k, v = randn({ 1, 7, 1, 4 }), randn({ 1, 7, 1, 4 }), randn({ 1, 7, 1, 4 })
  t.ok(maxdiff(efla.ops.attention(q, k, v, { window = 7 }), efla.ops.attention(q, k, v)) == 0)
  -- window 1: each token reads only its own value
  t.ok(maxdiff(efla.ops.attention(q, k, v, { window = 1 }), v) < 1e-15)
end)

t.test('bad input: clear errors', function()
  local q = randn({ 1, 4, 2, 3 })
  local function err(f) local ok, e = pcall(f) t.ok(not ok) return tostring(e) end
  t.ok(err(function() efla.ops.attention(q, q, randn({ 1, 5, 2, 3 })) end):find('same number of keys'))
  t.ok(err(function() efla.ops.attention(q, randn({ 1, 4, 2, 5 }), q) end):find('head size'))
  t.ok(err(function() efla.ops.attention(q, q:float(), q) end):find('one dtype'))
  t.ok(err(function() efla.ops.attention(q, q, q, { window = 0 }) end):find('window'))
  t.ok(err(function() efla.ops.attention(q, q, q, { window = 2, causal = false }) end):find('needs causal'))
  t.ok(err(function() efla.ops.attention(q, q:narrow(2, 1, 2), q:narrow(2, 1, 2)) end):find('at least as many keys'))
  t.ok(err(function() efla.ops.attention(q:reshape(4, 2, 3), q, q) end):find('4 dims'))
  t.ok(err(function() efla.ops.attention(q:bfloat16(), q:bfloat16(), q:bfloat16()) end):find('bfloat16'))
  t.ok(err(function() efla.ops.attention(nil, q, q) end):find('q is nil'))
end)

t.done()

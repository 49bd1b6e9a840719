-- test_ops_extra.lua: cumsum, sort, topk, multinomial, einsum, pad, softplus, log_sigmoid,
-- conv1d: each against a plain Lua reference, gradients against finite differences, and
-- the errors bad arguments get. Run: build/efla tests/lua/test_ops_extra.lua [pattern]
local efla = require 'efla'
local t = dofile((arg[0]:match('^(.*[/\\])') or './') .. 'testlib.lua')
local test, eq, ok = t.test, t.eq, t.ok

local function R(...) return efla.randn({ ... }, { dtype = 'float64', requires_grad = true }) end
local function raises(fn, needle)
  local good, err = pcall(fn)
  ok(not good, 'expected an error containing ' .. needle)
  ok(tostring(err):find(needle, 1, true), 'error "' .. tostring(err) .. '" lacks "' .. needle .. '"')
end
local function close(a, b, tol, what)
  local d = (a:double() - b:double()):abs():max():item()
  ok(d <= (tol or 1e-12), string.format('%s: max difference %g', what or 'values', d))
end
local function gradcheck(f, inputs, what)
  local good, report = efla.gradcheck(f, inputs)
  ok(good, (what or 'gradcheck') .. ': ' .. tostring(report))
end

test('cumsum: every dim against a loop; int64, bool; gradient', function()
  efla.manual_seed(1)
  local x = efla.randn(3, 4, 5, { dtype = 'float64' })
  for d = 1, 3 do
    local y = x:cumsum(d)
    local xs, ys = x:totable(), y:totable()
    local worst = 0
    for i = 1, 3 do for j = 1, 4 do for k = 1, 5 do
      local acc = 0
      for m = 1, (d == 1 and i or d == 2 and j or k) do
        acc = acc + xs[d == 1 and m or i][d == 2 and m or j][d == 3 and m or k]
      end
      worst = math.max(worst, math.abs(acc - ys[i][j][k]))
    end end end
    ok(worst < 1e-12, 'cumsum dim ' .. d .. ': ' .. worst)
  end
  eq(efla.cumsum(efla.tensor({ 1, 2, 3 }, { dtype = 'int64' })):totable(), { 1, 3, 6 })
  local b = efla.tensor({ true, false, true })
  eq(b:cumsum():dtype(), 'int64')
  eq(b:cumsum():totable(), { 1, 1, 2 })
  gradcheck(function(a) return a:cumsum(2) end, { R(3, 4) }, 'cumsum dim 2')
  gradcheck(function(a) return a:cumsum(-1):square() end, { R(2, 3, 4) }, 'cumsum last dim')
  close(efla.ones(1000):cumsum(), efla.arange(1, 1001):float(), 0, 'a long float32 row stays exact')
end)

test('sort: stable, both directions, NaN placement, 1-based indices, gradient', function()
  local x = efla.tensor({ { 3, 1, 2, 1 }, { 0, 5, 5, -1 } })
  local v, i = x:sort(2)
  eq(v:totable(), { { 1, 1, 2, 3 }, { -1, 0, 5, 5 } })
  eq(i:totable(), { { 2, 4, 3, 1 }, { 4, 1, 2, 3 } })   -- ties keep their order
  local vd, id = x:sort(2, true)
  eq(vd:totable(), { { 3, 2, 1, 1 }, { 5, 5, 0, -1 } })
  eq(id:totable(), { { 1, 3, 2, 4 }, { 2, 3, 1, 4 } })
  ok(x:gather(2, i):eq(v):all(), 'values == x:gather(dim, indices)')
  local v1 = x:sort(1)
  eq(v1:totable(), { { 0, 1, 2, -1 }, { 3, 5, 5, 1 } })
  local n = efla.tensor({ 2, 0 / 0, 1 })
  local vn = n:sort()
  eq(vn[1]:item(), 1); eq(vn[2]:item(), 2); ok(vn[3]:item() ~= vn[3]:item(), 'NaN sorts last')
  ok(n:sort(1, true)[1]:item() ~= n:sort(1, true)[1]:item(), 'NaN sorts first descending')
  -- a random float64 matrix against table.sort
  efla.manual_seed(2)
  local r = efla.randn(5, 30, { dtype = 'float64' })
  local rs = r:sort(2):totable()
  for row, vals in ipairs(r:totable()) do
    table.sort(vals)
    for j = 1, 30 do ok(vals[j] == rs[row][j], 'sorted row ' .. row) end
  end
  gradcheck(function(a) return (a:sort(2)) * efla.arange(1, 6, { dtype = 'float64' }) end, { R(3, 5) }, 'sort values')
end)

test('topk: values, positions, smallest, gradient, bad k', function()
  local x = efla.tensor({ 4, 9, 1, 7 })
  local v, i = x:topk(2)
  eq(v:totable(), { 9, 7 }); eq(i:totable(), { 2, 4 })
  local vs, is = x:topk(3, 1, false)
  eq(vs:totable(), { 1, 4, 7 }); eq(is:totable(), { 3, 1, 4 })
  gradcheck(function(a) return (a:topk(2, 2)) end, { R(3, 6) }, 'topk values')
  raises(function() x:topk(5) end, 'topk: k must be a whole number in 0..4')
end)

test('multinomial: frequencies, zero weights never drawn, without replacement distinct', function()
  efla.manual_seed(3)
  local p = efla.tensor({ 0.2, 0, 0.5, 0.3 })
  local draws = efla.multinomial(p, 4000, { replacement = true })
  eq(draws:dtype(), 'int64'); eq(draws:size(1), 4000)
  local counts = { 0, 0, 0, 0 }
  for _, c in ipairs(draws:totable()) do counts[c] = counts[c] + 1 end
  eq(counts[2], 0)
  for c, want in ipairs({ 0.2, 0, 0.5, 0.3 }) do
    ok(math.abs(counts[c] / 4000 - want) < 0.03, string.format('category %d: %d of 4000 for p = %g', c, counts[c], want))
  end
  local rows = efla.multinomial(efla.tensor({ { 1, 1, 1, 0 }, { 0, 2, 1, 1 } }), 3)
  eq(rows:size():totable(), { 2, 3 })
  for r, row in ipairs(rows:totable()) do
    local seen = {}
    for _, c in ipairs(row) do
      ok(not seen[c], 'a category drawn twice without replacement'); seen[c] = true
      ok(not (r == 1 and c == 4) and not (r == 2 and c == 1), 'a zero-weight category was drawn')
    end
  end
  efla.manual_seed(9); local a = efla.multinomial(p, 20, { replacement = true })
  efla.manual_seed(9); local b = efla.multinomial(p, 20, { replacement = true })
  ok(a:eq(b):all(), 'the same seed gives the same draws')
  raises(function() efla.multinomial(efla.tensor({ 1, -1 }), 1) end, 'negative')
  raises(function() efla.multinomial(efla.tensor({ 1, 0 }), 2) end, 'only 1 categories of positive weight')
end)

test('einsum: matmul, batched attention scores, outer, trace-free sums, three operands, gradient', function()
  efla.manual_seed(4)
  local a, b = efla.randn(3, 4, { dtype = 'float64' }), efla.randn(4, 5, { dtype = 'float64' })
  close(efla.einsum('ij,jk->ik', a, b), a:matmul(b), 1e-12, 'ij,jk->ik')
  close(efla.einsum('ij,jk', a, b), a:matmul(b), 1e-12, 'implicit output')
  close(efla.einsum('ij->ji', a), a:t(), 0, 'transpose')
  close(efla.einsum('ij->', a), a:sum(), 1e-12, 'sum of all')
  close(efla.einsum('ij->j', a), a:sum(1), 1e-12, 'column sums')
  local u, v = efla.randn(3, { dtype = 'float64' }), efla.randn(4, { dtype = 'float64' })
  close(efla.einsum('i,j->ij', u, v), u:unsqueeze(2) * v:unsqueeze(1), 1e-12, 'outer')
  local q, k = efla.randn(2, 3, 5, 4, { dtype = 'float64' }), efla.randn(2, 3, 6, 4, { dtype = 'float64' })
  close(efla.einsum('bhtd,bhsd->bhts', q, k), q:matmul(k:transpose(3, 4)), 1e-12, 'attention scores')
  close(efla.einsum('bhtd,bhsd->bths', q, k), q:matmul(k:transpose(3, 4)):permute(1, 3, 2, 4), 1e-12, 'output order')
  local c = efla.randn(5, 2, { dtype = 'float64' })
  close(efla.einsum('ij,jk,kl->il', a, b, c), a:matmul(b):matmul(c), 1e-12, 'three operands')
  close(efla.einsum('ij,ij->i', a, a), a:square():sum(2), 1e-12, 'row dot products')
  gradcheck(function(x, y) return efla.einsum('bij,bjk->bik', x, y) end, { R(2, 3, 4), R(2, 4, 2) }, 'einsum')
  raises(function() efla.einsum('ii->i', a) end, 'repeated in one operand')
  raises(function() efla.einsum('ij,jk->ik', a) end, 'names 2 operands, 1 were given')
  raises(function() efla.einsum('ij,jk->ik', a, a) end, "dim 'j' has size 4 in one operand and 3")
  raises(function() efla.einsum('...ij->ij', a) end, 'ellipsis')
end)

test('pad: last dim, last two dims, value, gradient, negative sizes refused', function()
  local x = efla.tensor({ { 1, 2 }, { 3, 4 } })
  eq(x:pad({ 1, 0 }):totable(), { { 0, 1, 2 }, { 0, 3, 4 } })
  eq(x:pad({ 0, 1, 1, 0 }, 7):totable(), { { 7, 7, 7 }, { 1, 2, 7 }, { 3, 4, 7 } })
  gradcheck(function(a) return a:pad({ 2, 1, 0, 3 }) end, { R(2, 3) }, 'pad')
  raises(function() x:pad({ -1, 0 }) end, 'use narrow to crop')
  raises(function() x:pad({ 1 }) end, 'pairs')
end)

test('softplus and log_sigmoid: stable for any x, match double references, gradients', function()
  local xs = { -800, -50, -3, -1e-3, 0, 1e-3, 2, 50, 800 }
  local x = efla.tensor(xs, { dtype = 'float64' })
  local sp, ls = x:softplus():totable(), x:log_sigmoid():totable()
  for i, v in ipairs(xs) do
    local ref = v > 0 and v + math.log(1 + math.exp(-v)) or math.log(1 + math.exp(v))
    ok(math.abs(sp[i] - ref) <= 1e-15 * math.max(1, math.abs(ref)) + 1e-300, string.format('softplus(%g) = %g, want %g', v, sp[i], ref))
    ok(math.abs(ls[i] + (-v > 0 and -v + math.log(1 + math.exp(v)) or math.log(1 + math.exp(-v)))) < 1e-12, 'log_sigmoid(' .. v .. ')')
  end
  close(x:softplus(2), (x * 2):softplus() / 2, 1e-15, 'beta')
  gradcheck(function(a) return a:softplus() end, { R(7) }, 'softplus')
  gradcheck(function(a) return a:log_sigmoid() end, { R(7) }, 'log_sigmoid')
  -- the derivative is sigmoid(x), also at 0 and far out (no NaN from the unused branch)
  local z = efla.tensor({ -800, 0, 800 }, { dtype = 'float64', requires_grad = true })
  z:softplus():sum():backward()
  eq(z.grad:totable(), { 0, 0.5, 1 })
end)

test('conv1d: against a direct loop (stride, padding, dilation, bias), gradient', function()
  efla.manual_seed(5)
  local x, w, b = efla.randn(2, 3, 9, { dtype = 'float64' }), efla.randn(4, 3, 3, { dtype = 'float64' }), efla.randn(4, { dtype = 'float64' })
  for _, o in ipairs({ {}, { stride = 2 }, { padding = 2 }, { dilation = 2, padding = 1, stride = 3 } }) do
    local y = efla.conv1d(x, w, b, o)
    local s, p, dl = o.stride or 1, o.padding or 0, o.dilation or 1
    local L = 9 + 2 * p
    local Lout = math.floor((L - dl * 2 - 1) / s) + 1
    eq(y:size():totable(), { 2, 4, Lout })
    local X, W, Bv, Y = x:totable(), w:totable(), b:totable(), y:totable()
    local worst = 0
    for n = 1, 2 do for co = 1, 4 do for t0 = 1, Lout do
      local acc = Bv[co]
      for ci = 1, 3 do for k = 1, 3 do
        local pos = (t0 - 1) * s + (k - 1) * dl + 1 - p
        if pos >= 1 and pos <= 9 then acc = acc + W[co][ci][k] * X[n][ci][pos] end
      end end
      worst = math.max(worst, math.abs(acc - Y[n][co][t0]))
    end end end
    ok(worst < 1e-12, 'conv1d ' .. tostring(o.stride) .. ' ' .. tostring(o.padding) .. ': ' .. worst)
  end
  gradcheck(function(a, ww, bb) return efla.conv1d(a, ww, bb, { padding = 1, stride = 2 }) end, { R(2, 2, 7), R(3, 2, 3), R(3) }, 'conv1d')
  raises(function() efla.conv1d(efla.randn(1, 2, 5), efla.randn(3, 4, 2)) end, 'the same C_in')
end)

test('cumsum and sort on a device without kernels say how to fix it', function()
  if not efla.cuda.is_available() then print('  (no CUDA device: checked on the GPU run)'); return end
  raises(function() efla.ones(3):cuda():cumsum() end, ':cpu()')
  raises(function() efla.ones(3):cuda():sort() end, ':cpu()')
  local m = efla.multinomial(efla.tensor({ 0, 1, 0 }):cuda(), 2, { replacement = true })
  eq(m:device(), 'cuda:0'); eq(m:cpu():totable(), { 2, 2 })
  local v = efla.einsum('ij,jk->ik', efla.ones(2, 3):cuda(), efla.ones(3, 2):cuda())
  eq(v:cpu():totable(), { { 3, 3 }, { 3, 3 } })
end)

t.done()

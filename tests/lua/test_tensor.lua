-- test_tensor.lua: the Lua tensor API against plain-Lua references.
-- Run: build/efla tests/lua/test_tensor.lua [name-pattern]
local efla = require 'efla'
local t = dofile((arg[0]:match('^(.*[/\\])') or './') .. 'testlib.lua')
local test, eq, near, ok, raises = t.test, t.eq, t.near, t.ok, t.raises

efla.manual_seed(1234)

-- plain-Lua helpers ------------------------------------------------------------------------------------
local function map2(a, f)          -- elementwise over nested tables
  if type(a) ~= 'table' then return f(a) end
  local r = {}
  for i = 1, #a do r[i] = map2(a[i], f) end
  return r
end
local function zip2(a, b, f)
  if type(a) ~= 'table' then return f(a, b) end
  local r = {}
  for i = 1, #a do r[i] = zip2(a[i], b[i], f) end
  return r
end
local function flat(a, out)
  out = out or {}
  if type(a) ~= 'table' then out[#out + 1] = a; return out end
  for i = 1, #a do flat(a[i], out) end
  return out
end
local function lua_matmul(A, B)
  local C = {}
  for i = 1, #A do
    C[i] = {}
    for j = 1, #B[1] do
      local s = 0
      for k = 1, #B do s = s + A[i][k] * B[k][j] end
      C[i][j] = s
    end
  end
  return C
end

-- creation ----------------------------------------------------------------------------------------------
test('tensor from nested tables', function()
  local x = efla.tensor({ { 1, 2, 3 }, { 4, 5, 6 } })
  eq(x:dtype(), 'float32')
  eq(x:size():totable(), { 2, 3 })
  eq(x:size(1), 2); eq(x:size(-1), 3); eq(x:dim(), 2); eq(x:numel(), 6)
  eq(x:totable(), { { 1, 2, 3 }, { 4, 5, 6 } })
  eq(x:device(), 'cpu')
  ok(x:is_contiguous())
  eq(tostring(x:size()), 'efla.Size{2, 3}')
  ok(x:size() == efla.Size and true or x:size() == efla.zeros(2, 3):size(), 'sizes compare by value')
  eq(efla.tensor(3.5):item(), 3.5)
  eq(efla.tensor(3.5):dim(), 0)
  eq(efla.tensor({ true, false }):dtype(), 'bool')
  eq(efla.tensor({ true, false }):totable(), { true, false })
  eq(efla.tensor({ 1.5, 2 }, { dtype = 'float64' }):dtype(), 'float64')
  eq(efla.tensor({ 7, -3 }, { dtype = 'int64' }):totable(), { 7, -3 })
  local y = efla.tensor(x)                        -- a copy
  y:fill_(0)
  eq(x:totable()[1][1], 1, 'efla.tensor(x) copies')
  eq(efla.tensor({ efla.ones(2), efla.zeros(2) }):totable(), { { 1, 1 }, { 0, 0 } })
  raises(function() efla.tensor({ { 1, 2 }, { 3 } }) end, 'not rectangular')
  raises(function() efla.tensor({ 'a' }) end, 'numbers or booleans')
end)

test('zeros ones empty full with sizes as varargs or a table, and options', function()
  eq(efla.zeros(2, 3):totable(), { { 0, 0, 0 }, { 0, 0, 0 } })
  eq(efla.zeros({ 2, 3 }):size():totable(), { 2, 3 })
  eq(efla.ones(2, { dtype = 'float64' }):dtype(), 'float64')
  eq(efla.ones({ 3 }, { dtype = 'int64' }):totable(), { 1, 1, 1 })
  eq(efla.empty(4, 5):numel(), 20)
  eq(efla.full(2, 2, 7):totable(), { { 7, 7 }, { 7, 7 } })
  eq(efla.full({ 2 }, 0.5, { dtype = 'float64' }):totable(), { 0.5, 0.5 })
  eq(efla.zeros():dim(), 0)
  ok(efla.ones(2, { requires_grad = true }).requires_grad)
  eq(efla.zeros_like(efla.ones(2, 3, { dtype = 'float64' })):dtype(), 'float64')
  eq(efla.ones_like(efla.ones(2, 3)):size():totable(), { 2, 3 })
  raises(function() efla.zeros(2, { dtype = 'float16' }) end, "unknown dtype 'float16'")
  raises(function() efla.zeros(-1) end, 'negative size')
  raises(function() efla.zeros(2, { device = 'tpu' }) end, 'unknown device')
end)

test('arange, range, linspace', function()
  eq(efla.arange(5):totable(), { 0, 1, 2, 3, 4 })
  eq(efla.arange(5):dtype(), 'int64')
  eq(efla.arange(2, 8, 2):totable(), { 2, 4, 6 })
  near(efla.arange(0, 1, 0.25):totable(), { 0, 0.25, 0.5, 0.75 })
  eq(efla.arange(0, 1, 0.25):dtype(), 'float32')
  eq(efla.range(1, 4):totable(), { 1, 2, 3, 4 })
  near(efla.linspace(0, 1, 5):totable(), { 0, 0.25, 0.5, 0.75, 1 })
  raises(function() efla.arange(0, 1, 0) end, 'nonzero step')
end)

test('default dtype', function()
  efla.set_default_dtype('float64')
  eq(efla.zeros(2):dtype(), 'float64')
  eq(efla.tensor({ 1 }):dtype(), 'float64')
  eq(efla.get_default_dtype(), 'float64')
  efla.set_default_dtype('float32')
  eq(efla.randn(2):dtype(), 'float32')
end)

test('random numbers: ranges, moments, seeds and state', function()
  local u = efla.rand(20000, { dtype = 'float64' })
  ok(u:min():item() >= 0 and u:max():item() < 1, 'rand in [0, 1)')
  near(u:mean():item(), 0.5, 0.02)
  local n = efla.randn(20000, { dtype = 'float64' })
  near(n:mean():item(), 0, 0.03)
  near(n:std():item(), 1, 0.03)
  efla.manual_seed(7)
  local a = efla.randn(5):totable()
  local st = efla.rng_state()
  local b = efla.randn(5):totable()
  efla.manual_seed(7)
  eq(efla.randn(5):totable(), a, 'same seed, same numbers')
  efla.set_rng_state(st)
  eq(efla.randn(5):totable(), b, 'restored state, same numbers')
  local bern = efla.bernoulli(20000, 0.3, { dtype = 'float64' })
  near(bern:mean():item(), 0.3, 0.02)
  local r = efla.randint(2, 5, 1000)
  eq(r:dtype(), 'int64')
  ok(r:min():item() >= 2 and r:max():item() <= 4)
  local p = efla.randperm(10):totable()
  table.sort(p)
  eq(p, { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 }, 'randperm is a permutation of 1..n')
end)

test('casts and buffers', function()
  local x = efla.tensor({ 1.5, -2.25, 3 })
  eq(x:double():dtype(), 'float64')
  eq(x:long():totable(), { 1, -2, 3 })
  eq(x:bool():totable(), { true, true, true })
  eq(x:bfloat16():totable(), { 1.5, -2.25, 3 })
  eq(x:to('float64'):dtype(), 'float64')
  eq(x:type(), 'float32')
  eq(x:to(efla.zeros(1, { dtype = 'int64' })):dtype(), 'int64')
  eq(x:cpu():device(), 'cpu')
  local s = x:double():to_buffer()
  eq(#s, 24)
  eq(efla.from_buffer(s, { 3 }, 'float64'):totable(), { 1.5, -2.25, 3 })
  local y = efla.tensor({ { 1, 2 }, { 3, 4 } }, { dtype = 'float64' })
  local p = y:data()
  eq(p[3], 4)
end)

-- views and indexing -------------------------------------------------------------------------------------------
test('views share storage; reshape, transpose, permute, contiguous', function()
  local x = efla.arange(6):float()
  local v = x:view(2, 3)
  eq(v:totable(), { { 0, 1, 2 }, { 3, 4, 5 } })
  v:fill_(1)
  eq(x:totable(), { 1, 1, 1, 1, 1, 1 }, 'a view writes through')
  x = efla.arange(6):float():view({ 2, 3 })
  local tt = x:t()
  eq(tt:totable(), { { 0, 3 }, { 1, 4 }, { 2, 5 } })
  ok(not tt:is_contiguous())
  ok(tt:contiguous():is_contiguous())
  eq(tt:reshape(-1):totable(), { 0, 3, 1, 4, 2, 5 })
  raises(function() tt:view(6) end, 'view')
  eq(x:transpose(1, 2):totable(), tt:totable())
  local y = efla.arange(24):view(2, 3, 4)
  eq(y:permute(3, 1, 2):size():totable(), { 4, 2, 3 })
  eq(y:permute({ 3, 1, 2 })[2][2][3]:item(), y[2][3][2]:item())
  eq(y:flatten():size():totable(), { 24 })
  raises(function() x:transpose(0, 1) end, 'dims are 1-based')
end)

test('narrow, select, x[i], negative positions, x[{...}]', function()
  local x = efla.arange(12):view(3, 4)
  eq(x:narrow(2, 2, 2):totable(), { { 1, 2 }, { 5, 6 }, { 9, 10 } })
  eq(x:narrow(1, -1, 1):totable(), { { 8, 9, 10, 11 } })
  eq(x:select(1, 2):totable(), { 4, 5, 6, 7 })
  eq(x:select(2, -1):totable(), { 3, 7, 11 })
  eq(x[1]:totable(), { 0, 1, 2, 3 })
  eq(x[3][4]:item(), 11)
  eq(x[-1][-1]:item(), 11)
  eq(x[{ 2, 3 }]:item(), 6)
  eq(x[{ { 2, 3 }, 1 }]:totable(), { 4, 8 })
  eq(x[{ ':', { 2, 3 } }]:totable(), { { 1, 2 }, { 5, 6 }, { 9, 10 } })
  eq(#x, 3)
  raises(function() return x[0] end, 'indices are 1-based')
  raises(function() return x[4] end, 'index 4 is out of range for dim 1 of size 3')
  raises(function() x:narrow(2, 4, 2) end, 'does not fit')
  raises(function() return efla.tensor(1)[1] end, '0-d')
end)

test('assignment through x[i] and x[{...}]', function()
  local x = efla.zeros(2, 3)
  x[1] = 5
  eq(x:totable(), { { 5, 5, 5 }, { 0, 0, 0 } })
  x[2] = efla.tensor({ 1, 2, 3 })
  eq(x[2]:totable(), { 1, 2, 3 })
  x[{ 1, 2 }] = -1
  eq(x[1]:totable(), { 5, -1, 5 })
  x[2][3] = 9
  eq(x[2][3]:item(), 9)
  x[x:gt(4)] = 0
  eq(x:totable(), { { 0, -1, 0 }, { 1, 2, 0 } })
  raises(function() x.nope = 1 end, "cannot set field 'nope'")
end)

test('expand, squeeze, unsqueeze, split, chunk', function()
  local x = efla.tensor({ { 1 }, { 2 } })
  eq(x:expand(2, 3):totable(), { { 1, 1, 1 }, { 2, 2, 2 } })
  eq(x:expand(-1, 2):totable(), { { 1, 1 }, { 2, 2 } })
  eq(x:squeeze():size():totable(), { 2 })
  eq(x:squeeze(2):size():totable(), { 2 })
  eq(x:unsqueeze(1):size():totable(), { 1, 2, 1 })
  eq(x:unsqueeze(-1):size():totable(), { 2, 1, 1 })
  local parts = efla.arange(7):split(3)
  eq(#parts, 3)
  eq(parts[3]:totable(), { 6 })
  local chunks = efla.arange(6):view(2, 3):chunk(3, 2)
  eq(chunks[2]:totable(), { { 1 }, { 4 } })
  eq(#efla.arange(5):split({ 2, 3 }), 2)
  raises(function() x:expand(3, 3) end, 'expand')
end)

-- elementwise -------------------------------------------------------------------------------------------------------
test('operators with numbers on both sides', function()
  local a = { { 1, 2, 3 }, { 4, 5, 6 } }
  local x = efla.tensor(a, { dtype = 'float64' })
  near((x + 1):totable(), map2(a, function(v) return v + 1 end))
  near((1 + x):totable(), map2(a, function(v) return 1 + v end))
  near((x - 1):totable(), map2(a, function(v) return v - 1 end))
  near((10 - x):totable(), map2(a, function(v) return 10 - v end))
  near((x * 2):totable(), map2(a, function(v) return v * 2 end))
  near((2 * x):totable(), map2(a, function(v) return 2 * v end))
  near((x / 4):totable(), map2(a, function(v) return v / 4 end))
  near((4 / x):totable(), map2(a, function(v) return 4 / v end))
  near((x ^ 2):totable(), map2(a, function(v) return v ^ 2 end))
  near((2 ^ x):totable(), map2(a, function(v) return 2 ^ v end))
  near((-x):totable(), map2(a, function(v) return -v end))
  near((x * x - x / (x + 1)):totable(), map2(a, function(v) return v * v - v / (v + 1) end))
end)

test('== is identity; comparisons are methods giving bool', function()
  local x = efla.tensor({ 1, 2, 3 })
  ok(x == x)
  ok(x ~= x:clone())
  local e = x:eq(efla.tensor({ 1, 0, 3 }))
  eq(e:dtype(), 'bool')
  eq(e:totable(), { true, false, true })
  eq(x:gt(1.5):totable(), { false, true, true })
  eq(x:le(2):totable(), { true, true, false })
  eq(x:ne(2):totable(), { true, false, true })
end)

test('broadcasting', function()
  local a = efla.tensor({ { 1, 2, 3 }, { 4, 5, 6 } })
  local row = efla.tensor({ 10, 20, 30 })
  eq((a + row):totable(), { { 11, 22, 33 }, { 14, 25, 36 } })
  local col = efla.tensor({ { 1 }, { 2 } })
  eq((col * efla.tensor({ { 1, 2, 3 } })):totable(), { { 1, 2, 3 }, { 2, 4, 6 } })
  eq((a:view(2, 1, 3) - efla.zeros(4, 1)):size():totable(), { 2, 4, 3 })
  -- a non-contiguous operand
  eq((a:t() + efla.tensor({ 1, 1 })):totable(), { { 2, 5 }, { 3, 6 }, { 4, 7 } })
end)

test('unary ops against Lua math', function()
  local function sigmoid(v) return 1 / (1 + math.exp(-v)) end
  local function gelu(v) return 0.5 * v * (1 + math.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v ^ 3))) end
  local function erf_gelu(v)  -- exact gelu via a series erf (for either convention)
    local x = v / math.sqrt(2)
    local s, term, n = 0, x, 0
    repeat
      s = s + term / (2 * n + 1)
      n = n + 1
      term = -term * x * x / n
    until math.abs(term) < 1e-17 or n > 200
    return 0.5 * v * (1 + 2 / math.sqrt(math.pi) * s)
  end
  local cases = {
    { 'neg', function(v) return -v end }, { 'exp', math.exp }, { 'expm1', function(v) return math.exp(v) - 1 end },
    { 'log', math.log, true }, { 'log1p', function(v) return math.log(1 + v) end, true },
    { 'sqrt', math.sqrt, true }, { 'rsqrt', function(v) return 1 / math.sqrt(v) end, true },
    { 'abs', math.abs }, { 'tanh', math.tanh }, { 'sigmoid', sigmoid },
    { 'relu', function(v) return v > 0 and v or 0 end },
    { 'silu', function(v) return v * sigmoid(v) end }, { 'sin', math.sin }, { 'cos', math.cos },
    { 'sign', function(v) return v > 0 and 1 or (v < 0 and -1 or 0) end },
    { 'square', function(v) return v * v end }, { 'reciprocal', function(v) return 1 / v end },
  }
  local x = efla.randn(3, 5, { dtype = 'float64' })
  local pos = x:abs() + 0.1
  for _, c in ipairs(cases) do
    local input = c[3] and pos or x
    near(input[c[1]](input):totable(), map2(input:totable(), c[2]), 1e-10, c[1])
  end
  local g = x:gelu():totable()
  local ok_tanh = pcall(near, g, map2(x:totable(), gelu), 1e-9)
  local ok_erf = pcall(near, g, map2(x:totable(), erf_gelu), 1e-9)
  ok(ok_tanh or ok_erf, 'gelu matches the tanh or the erf form')
  -- float32 too
  near(x:float():tanh():totable(), map2(x:totable(), math.tanh), 1e-6, 'float32 tanh')
end)

test('clamp, maximum, minimum, where, masked_fill, tril, triu', function()
  local x = efla.tensor({ -2, -0.5, 0.5, 2 })
  eq(x:clamp(-1, 1):totable(), { -1, -0.5, 0.5, 1 })
  eq(x:clamp(0):totable(), { 0, 0, 0.5, 2 })
  eq(x:clamp(nil, 0):totable(), { -2, -0.5, 0, 0 })
  eq(x:maximum(efla.zeros(4)):totable(), { 0, 0, 0.5, 2 })
  eq(x:minimum(0):totable(), { -2, -0.5, 0, 0 })
  eq(efla.where(x:gt(0), x, efla.zeros(4)):totable(), { 0, 0, 0.5, 2 })
  eq(efla.where(x:gt(0), 1, -1):totable(), { -1, -1, 1, 1 })
  eq(x:where(x:lt(0), 5):totable(), { -2, -0.5, 5, 5 })
  eq(x:masked_fill(x:lt(0), 9):totable(), { 9, 9, 0.5, 2 })
  local m = efla.ones(3, 3)
  eq(m:tril():totable(), { { 1, 0, 0 }, { 1, 1, 0 }, { 1, 1, 1 } })
  eq(m:triu(1):totable(), { { 0, 1, 1 }, { 0, 0, 1 }, { 0, 0, 0 } })
end)

test('in-place arithmetic', function()
  local x = efla.ones(3)
  x:add_(1):mul_(3):sub_(efla.tensor({ 1, 2, 3 })):div_(2)
  eq(x:totable(), { 2.5, 2, 1.5 })
  local v0 = x:version()
  x:zero_()
  ok(x:version() > v0, 'in-place ops bump the version')
  x:copy_(efla.tensor({ 4, 5, 6 }))
  eq(x:totable(), { 4, 5, 6 })
end)

-- reductions -----------------------------------------------------------------------------------------------------------
test('reductions against Lua references, dims and keepdim', function()
  local x = efla.randn(3, 4, { dtype = 'float64' })
  local a = x:totable()
  local all = flat(a)
  local s, p, mx, mn = 0, 1, -math.huge, math.huge
  for _, v in ipairs(all) do s = s + v; p = p * v; mx = math.max(mx, v); mn = math.min(mn, v) end
  near(x:sum():item(), s, 1e-12)
  near(x:mean():item(), s / 12, 1e-12)
  near(x:prod():item(), p, 1e-10)
  near(x:max():item(), mx)
  near(x:min():item(), mn)
  local lse = 0
  for _, v in ipairs(all) do lse = lse + math.exp(v) end
  near(x:logsumexp():item(), math.log(lse), 1e-12)
  local var = 0
  for _, v in ipairs(all) do var = var + (v - s / 12) ^ 2 end
  near(x:var():item(), var / 11, 1e-12)
  near(x:var(nil, false, 0):item(), var / 12, 1e-12)
  local n2 = 0
  for _, v in ipairs(all) do n2 = n2 + v * v end
  near(x:norm():item(), math.sqrt(n2), 1e-12)
  -- along dims
  local rows, cols = {}, {}
  for i = 1, 3 do rows[i] = 0; for j = 1, 4 do rows[i] = rows[i] + a[i][j] end end
  for j = 1, 4 do cols[j] = 0; for i = 1, 3 do cols[j] = cols[j] + a[i][j] end end
  near(x:sum(2):totable(), rows, 1e-12)
  near(x:sum(1):totable(), cols, 1e-12)
  near(x:sum(-1):totable(), rows, 1e-12)
  eq(x:sum(2, true):size():totable(), { 3, 1 })
  eq(x:sum({ 1, 2 }):dim(), 0)
  near(x:mean(1, true):totable(), { map2(cols, function(v) return v / 3 end) }, 1e-12)
  -- max with dim: values and 1-based indices
  local vals, idx = x:max(2)
  for i = 1, 3 do
    local bi, bv = 1, a[i][1]
    for j = 2, 4 do if a[i][j] > bv then bi, bv = j, a[i][j] end end
    near(vals[i]:item(), bv)
    eq(idx[i]:item(), bi, 'argmax is 1-based')
  end
  eq(x:argmax(2):totable(), idx:totable())
  local flat_pos = 1
  for k = 2, #all do if all[k] > all[flat_pos] then flat_pos = k end end
  eq(x:argmax():item(), flat_pos)
  local _, imin = x:min(1)
  eq(imin:dtype(), 'int64')
  ok(efla.tensor({ 1, 2 }):all() and not efla.tensor({ 0, 1 }):all())
  ok(efla.tensor({ 0, 1 }):any() and not efla.zeros(3):any())
end)

-- linear algebra, nn, indexing -------------------------------------------------------------------------------------------
test('matmul: 2-d, 1-d, batched with broadcast', function()
  local A = efla.randn(3, 4, { dtype = 'float64' })
  local B = efla.randn(4, 2, { dtype = 'float64' })
  near(A:matmul(B):totable(), lua_matmul(A:totable(), B:totable()), 1e-12)
  near(A:t():t():matmul(B:t():contiguous():t()):totable(), lua_matmul(A:totable(), B:totable()), 1e-12,
    'non-contiguous operands')
  local v = efla.randn(4, { dtype = 'float64' })
  local Av = A:matmul(v):totable()
  for i = 1, 3 do
    local s = 0
    for k = 1, 4 do s = s + A[i][k]:item() * v[k]:item() end
    near(Av[i], s, 1e-12)
  end
  local Bt = efla.randn(5, 3, 4, { dtype = 'float64' })
  local out = Bt:matmul(B)
  eq(out:size():totable(), { 5, 3, 2 })
  near(out[4]:totable(), lua_matmul(Bt[4]:totable(), B:totable()), 1e-12)
  raises(function() A:matmul(A) end, '[3,4]')
end)

test('softmax, log_softmax, cross_entropy, layer_norm, rms_norm', function()
  local x = efla.randn(4, 5, { dtype = 'float64' })
  local sm = x:softmax(2)
  near(sm:sum(2):totable(), { 1, 1, 1, 1 }, 1e-12)
  near(x:log_softmax():totable(), sm:log():totable(), 1e-12)
  near(x:softmax(1):sum(1):totable(), { 1, 1, 1, 1, 1 }, 1e-12)
  local target = efla.tensor({ 1, 5, 3, 2 }, { dtype = 'int64' })
  local ls = x:log_softmax(2):totable()
  local ref = 0
  for i = 1, 4 do ref = ref - ls[i][target[i]:item()] end
  near(x:cross_entropy(target):item(), ref / 4, 1e-12)
  -- ignore_index (1-based class space)
  local t2 = efla.tensor({ 1, 5, 0, 2 }, { dtype = 'int64' })
  near(x:cross_entropy(t2, { ignore_index = 0 }):item(), (-ls[1][1] - ls[2][5] - ls[4][2]) / 3, 1e-12)
  local ln = x:layer_norm()
  near(ln:mean(2):totable(), { 0, 0, 0, 0 }, 1e-9)
  near(ln:var(2, false, 0):totable(), { 1, 1, 1, 1 }, 1e-4)
  local w = efla.full(5, 2, { dtype = 'float64' })
  near(x:layer_norm(w, efla.ones(5, { dtype = 'float64' })):totable(), (ln * 2 + 1):totable(), 1e-12)
  local rms = x:rms_norm()
  local ms = (x * x):mean(2, true)
  near(rms:totable(), (x / (ms + 1e-6):sqrt()):totable(), 1e-9)
end)

test('index_select, gather, scatter_add, embedding, one_hot, cat, stack (1-based indices)', function()
  local x = efla.arange(12):view(3, 4):double()
  local idx = efla.tensor({ 3, 1 }, { dtype = 'int64' })
  eq(x:index_select(1, idx):totable(), { { 8, 9, 10, 11 }, { 0, 1, 2, 3 } })
  eq(x:index_select(2, { 4, 4 }):totable(), { { 3, 3 }, { 7, 7 }, { 11, 11 } })
  eq(x[efla.tensor({ 2 }, { dtype = 'int64' })]:totable(), { { 4, 5, 6, 7 } })
  local gi = efla.tensor({ { 1, 4 }, { 2, 2 }, { 3, 1 } }, { dtype = 'int64' })
  eq(x:gather(2, gi):totable(), { { 0, 3 }, { 5, 5 }, { 10, 8 } })
  local sa = efla.zeros(3, 4, { dtype = 'float64' }):scatter_add(2, gi, efla.ones(3, 2, { dtype = 'float64' }))
  eq(sa:totable(), { { 1, 0, 0, 1 }, { 0, 2, 0, 0 }, { 1, 0, 1, 0 } })
  local W = efla.randn(5, 3)
  local e = efla.embedding(W, efla.tensor({ { 5, 1 } }, { dtype = 'int64' }))
  eq(e:size():totable(), { 1, 2, 3 })
  eq(e[1][1]:totable(), W[5]:totable())
  eq(W:embedding(efla.tensor({ 2 }, { dtype = 'int64' }))[1]:totable(), W[2]:totable())
  eq(efla.tensor({ 2, 1 }, { dtype = 'int64' }):one_hot(3):totable(), { { 0, 1, 0 }, { 1, 0, 0 } })
  eq(efla.cat({ efla.ones(2), efla.zeros(1) }):totable(), { 1, 1, 0 })
  eq(efla.cat(efla.ones(1, 2), efla.zeros(1, 2), 1):size():totable(), { 2, 2 })
  eq(efla.cat({ efla.ones(2, 1), efla.zeros(2, 2) }, 2):totable(), { { 1, 0, 0 }, { 1, 0, 0 } })
  eq(efla.stack({ efla.ones(2), efla.zeros(2) }, 2):totable(), { { 1, 0 }, { 1, 0 } })
  raises(function() x:index_select(1, efla.tensor({ 1.0 })) end, 'int64')
  raises(function() efla.cat({ efla.ones(2, 2), efla.ones(3, 3) }) end, 'cat')
end)

-- printing --------------------------------------------------------------------------------------------------------------
test('tostring: values, columns, footer', function()
  local s = tostring(efla.tensor({ { 1, 2, 3 }, { 4, 5, 6 } }))
  ok(s:find('[efla float32 tensor of size 2x3 (cpu)]', 1, true), s)
  ok(s:find(' 1  2  3', 1, true), s)
  local lines = {}
  for l in s:gmatch('[^\n]+') do lines[#lines + 1] = l end
  eq(#lines, 3)
  eq(#lines[1], #lines[2], 'aligned rows')
  local f = tostring(efla.tensor({ 0.5, -1.25 }, { dtype = 'float64' }))
  ok(f:find('0.5000', 1, true) and f:find('-1.2500', 1, true), f)
  ok(f:find('float64 tensor of size 2', 1, true), f)
  eq(tostring(efla.tensor(2.5)), '2.5000\n[efla float32 scalar (cpu)]')
  ok(tostring(efla.tensor({ 1e-8, 2e-8 })):find('e-08', 1, true), 'scientific notation for tiny values')
  ok(tostring(efla.tensor({ 123456789.5 }, { dtype = 'float64' })):find('e+08', 1, true), 'and for large ones')
  ok(tostring(efla.tensor({ 3, -4 }, { dtype = 'int64' })):find('int64', 1, true))
  ok(tostring(efla.tensor({ true, false })):find('true', 1, true))
  ok(tostring(efla.ones(2, { requires_grad = true })):find('(cpu) requires_grad]', 1, true))
  ok(tostring(efla.ones(2, { requires_grad = true }) * 2):find('grad_fn=', 1, true))
  ok(tostring(efla.zeros(0, 3)):find('size 0x3', 1, true))
  ok(tostring(efla.zeros(2, 2, 2)):find('(2,.,.) =', 1, true))
  eq('x: ' .. efla.ones(1), 'x: ' .. tostring(efla.ones(1)), '.. concatenates text')
end)

test('tostring: large tensors elide their middle', function()
  local s = tostring(efla.arange(1000))
  ok(s:find('...', 1, true), s)
  ok(s:find('999', 1, true) and s:find(' 0', 1, true) and not s:find('500', 1, true), s)
  local m = tostring(efla.arange(10000):view(100, 100))
  local nlines = select(2, m:gsub('\n', '\n')) + 1
  ok(nlines <= 9, 'rows elided: ' .. nlines .. ' lines')
  ok(m:find('9999', 1, true) and m:find('...', 1, true), m)
  local big = tostring(efla.zeros(50, 60, 70))
  ok(big:find('(50,.,.) =', 1, true) and big:find('size 50x60x70', 1, true))
end)

-- errors ---------------------------------------------------------------------------------------------------------------------
test('errors carry the C message and the caller\'s line', function()
  local line = debug.getinfo(1, 'l').currentline
  local err = raises(function() local y = efla.ones(2, 3) + efla.ones(4) end, '[2,3]')
  ok(err:find('[4]', 1, true), 'both shapes named: ' .. err)
  ok(err:find('test_tensor.lua:' .. (line + 1) .. ':', 1, true), 'the position is the line of the call: ' .. err)
  err = raises(function() local y = efla.ones(2, 3):matmul(efla.ones(2, 3)) end, 'matmul')
  ok(err:find('test_tensor.lua:' .. (line + 4) .. ':', 1, true), err)
  ok(err:find('[2,3] @ [2,3]', 1, true), err)
  raises(function() efla.ones(3):item() end, 'item')
  raises(function() efla.ones(3):backward() end, 'backward')
  raises(function() efla.ones(2, 2):view(3) end, 'view')
end)

-- memory --------------------------------------------------------------------------------------------------------------------
test('making and dropping 1e6 small tensors keeps memory flat', function()
  collectgarbage('collect')
  local t0, b0 = efla.live_tensors(), efla.cpu_live_bytes()
  local peak = 0
  for i = 1, 1000000 do
    local x = efla.zeros(4)
    if i % 100000 == 0 then peak = math.max(peak, efla.live_tensors() - t0) end
  end
  collectgarbage('collect')
  eq(efla.live_tensors(), t0, 'live tensors back to the start')
  eq(efla.cpu_live_bytes(), b0, 'CPU bytes back to the start')
  ok(peak < 500000, 'tensors were freed during the loop (peak ' .. peak .. ' alive)')
  -- ops on temporaries too
  for _ = 1, 20000 do local y = (efla.ones(3) + 1):sum() end
  collectgarbage('collect')
  eq(efla.live_tensors(), t0)
  eq(efla.cpu_live_bytes(), b0)
end)

if efla.has_cuda() and efla.device_count('cuda') > 0 then
  test('cuda tensors: moves, printing, ops, errors', function()
    local x = efla.tensor({ { 1, 2, 3 }, { 4, 5, 6 } }, { device = 'cuda' })
    eq(x:device(), 'cuda:0')
    ok(x:is_cuda())
    ok(tostring(x):find('(cuda:0)', 1, true), tostring(x))
    ok(tostring(x):find(' 4  5  6', 1, true), tostring(x))
    eq((x * 2 + 1):cpu():totable(), { { 3, 5, 7 }, { 9, 11, 13 } })
    eq(x:sum(2):totable(), { 6, 15 })
    eq(x[2][3]:item(), 6)
    local big = efla.randn(300, 300, { device = 'cuda' })
    ok(tostring(big):find('...', 1, true))
    near(big:matmul(big):cpu():totable()[1], big:cpu():matmul(big:cpu()):totable()[1], 1e-3)
    local c = efla.zeros(3):cuda()
    c[2] = 7
    eq(c:cpu():totable(), { 0, 7, 0 })
    raises(function() local y = x + efla.ones(2, 3) end, 'device')
    local w = efla.randn(4, 3, { device = 'cuda', requires_grad = true })
    ;(w:tanh() * w):sum():backward()
    local th = w:detach():tanh()
    near(w.grad:cpu():totable(), (th + w:detach() * (1 - th ^ 2)):cpu():totable(), 1e-5)
  end)
else
  t.skip('cuda tensors', 'no CUDA device')
end

test('help lists tensor methods', function()
  local h = require('efla.help')
  local s = h.text(efla.ones(2))
  ok(s:find('matmul', 1, true) and s:find('narrow', 1, true) and s:find('size 2', 1, true), s)
  ok(h.text(efla.randn):find('normal', 1, true))
  ok(h.text('view'):find('view', 1, true))
  ok(h.text():find('Creation', 1, true))
end)

t.test('out of memory and sizes that overflow are errors, not crashes', function()
  t.raises(function() return efla.empty(2 ^ 40) end, 'out of memory')
  t.raises(function() return efla.zeros(2 ^ 31, 2 ^ 31) end, 'too large to address')
  t.raises(function() return efla.empty(2 ^ 62, 16) end, 'too large to address')
  t.eq(efla.ones(3):sum():item(), 3, 'the process is still usable')
end)

t.test('error messages count dims, rows and indices from 1, as Lua does', function()
  t.raises(function() return efla.randn(3, 4):sum(7) end, 'dim 7 is out of range for a tensor of 2 dims (use 1..2 or -2..-1)')
  t.raises(function() return efla.randn(2, 3, 4):permute(1, 1, 2) end, 'dim 1 appears twice')
  t.raises(function() return efla.randn(5, 3):index_select(1, efla.tensor({ 9 }, { dtype = 'int64' })) end,
    'index 9 is out of range for dim 1 of size 5')
  t.raises(function() return efla.randn(2, 3):cross_entropy(efla.tensor({ 1, 7 }, { dtype = 'int64' })) end,
    'target 7 in row 2 is outside the 3 classes 1..3')
end)

t.done()

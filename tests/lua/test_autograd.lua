-- test_autograd.lua: gradients from Lua, checked against finite differences.
-- Run: build/efla tests/lua/test_autograd.lua [name-pattern]
local efla = require 'efla'
local t = dofile((arg[0]:match('^(.*[/\\])') or './') .. 'testlib.lua')
local test, eq, near, ok, raises = t.test, t.eq, t.near, t.ok, t.raises

efla.manual_seed(42)

local F64 = { dtype = 'float64' }
local function R(...)            -- random float64 leaf that requires grad
  local sizes = { ... }
  return efla.randn(sizes, { dtype = 'float64', requires_grad = true })
end
local function P(...)            -- positive (away from 0), for log/sqrt/pow/div
  local x = efla.rand({ ... }, F64) + 0.5
  return x:requires_grad_()
end
local function I(values)         -- 1-based int64 index tensor
  return efla.tensor(values, { dtype = 'int64' })
end

test("the issue's example: d/dx sum(tanh(x) * x)", function()
  local x = efla.randn(4, 3, { requires_grad = true })
  local y = (x:tanh() * x):sum()
  y:backward()
  local th = x:detach():tanh()
  local want = th + x:detach() * (1 - th ^ 2)
  near(x.grad:totable(), want:totable(), 1e-5)
  eq(x.grad:dtype(), 'float32')
  eq(y.grad_fn, 'sum')
  ok(x.is_leaf and not y.is_leaf)
  eq(x.grad_fn, nil)
end)

test('gradients accumulate across uses and across backward calls', function()
  local x = R(3)
  local y = (x * 2 + x * 3):sum()
  y:backward()
  near(x.grad:totable(), { 5, 5, 5 })
  ;(x * 4):sum():backward()
  near(x.grad:totable(), { 9, 9, 9 }, 1e-12, 'second backward adds')
  local g = x.grad
  x:sum():backward()
  near(g:totable(), { 10, 10, 10 }, 1e-12, 'a held grad sees the accumulation')
  x:zero_grad()
  eq(x.grad, nil)
  local a, b = R(2), R(2)
  ;(a * b):sum():backward()
  efla.zero_grad({ a, b })
  ok(a.grad == nil and b.grad == nil)
  a.grad = efla.ones(2, F64)
  near(a.grad:totable(), { 1, 1 })
  raises(function() a.grad = efla.ones(3, F64) end, 'shape')
end)

test('requires_grad, requires_grad_, detach', function()
  local x = efla.randn(3)
  ok(not x.requires_grad)
  x:requires_grad_()
  ok(x.requires_grad)
  x.requires_grad = false
  ok(not x.requires_grad)
  x.requires_grad = true
  local y = x * 2
  ok(y.requires_grad)
  raises(function() y:requires_grad_(false) end, 'leaf')
  raises(function() efla.ones(2, { dtype = 'int64' }):requires_grad_() end, 'floating')
  local d = y:detach()
  ok(not d.requires_grad and d.grad_fn == nil)
  ok(d:is_same_storage(y))
  raises(function() efla.randn(3):sum():backward() end, 'does not require grad')
end)

test('no_grad and enable_grad, restored even on error', function()
  local x = R(3)
  local y = efla.no_grad(function() return x * 2 end)
  ok(not y.requires_grad and y.grad_fn == nil)
  local a, b = efla.no_grad(function(p, q) return p + q, 7 end, x, 1)
  eq(b, 7)
  ok(not a.requires_grad)
  ok(efla.is_grad_enabled())
  local okc, err = pcall(efla.no_grad, function() error('inside') end)
  ok(not okc and tostring(err):find('inside', 1, true))
  ok(efla.is_grad_enabled(), 'the mode is restored after an error')
  efla.no_grad(function()
    ok(not efla.is_grad_enabled())
    local z = efla.enable_grad(function() return x * 3 end)
    ok(z.requires_grad, 'enable_grad inside no_grad records')
  end)
  local prev = efla.set_grad_enabled(false)
  ok(prev == true and not (x * 2).requires_grad)
  efla.set_grad_enabled(true)
end)

test('retain_graph, and the freed-graph error', function()
  local x = R(3)
  local y = (x:exp() * x):sum()
  y:backward(nil, true)
  local g1 = x.grad:clone()
  y:backward()
  near(x.grad:totable(), (g1 * 2):totable(), 1e-12, 'a retained graph runs again')
  local z = (x:exp() * x):sum()
  z:backward()
  local err = raises(function() z:backward() end, 'retain_graph')
  ok(err:find('second time', 1, true), err)
  ok(err:find('test_autograd.lua:%d+:'), 'raised at the caller: ' .. err)
  -- backward(true) is shorthand for retain_graph
  local w = (x * x):sum()
  w:backward(true)
  w:backward()
end)

test('an in-place change of a saved tensor is caught at backward', function()
  local x = R(3)
  local w = efla.randn(3, F64)
  local y = (x * w):sum()
  w:fill_(1)
  local err = raises(function() y:backward() end, 'modified by an in-place operation')
  ok(err:find('clone', 1, true), err)
end)

test('backward with an explicit gradient', function()
  local x = R(2, 3)
  local y = x * 3
  y:backward(efla.ones(2, 3, F64) * 2)
  near(x.grad:totable(), efla.full({ 2, 3 }, 6, F64):totable())
  raises(function() (x * 3):backward() end, 'one-element')
  raises(function() (x * 3):backward(efla.ones(3, F64)) end, 'shape')
end)

-- custom functions ------------------------------------------------------------------------------------------
local Square = efla.autograd.Function {
  name = 'square',
  forward = function(ctx, a)
    ctx:save_for_backward(a)
    return a * a
  end,
  backward = function(ctx, g)
    local a = ctx.saved_tensors[1]
    return g * 2 * a
  end,
}

-- y = a * k + b, with a number k in the middle, and a second output a - b
local AxpbAndDiff = efla.autograd.Function {
  name = 'axpb',
  forward = function(ctx, a, k, b)
    ctx.k = k
    return a * k + b, a - b
  end,
  backward = function(ctx, g1, g2)
    return g1 * ctx.k + g2, nil, g1 - g2
  end,
}

test('a Lua custom Function', function()
  local x = R(4)
  local y = Square(x)
  eq(y.grad_fn, 'square')
  y:sum():backward()
  near(x.grad:totable(), (x:detach() * 2):totable(), 1e-12)
  local okc, report = efla.gradcheck(function(a) return Square(a) end, { R(3, 2) })
  ok(okc, report)
  local a, b = R(3), R(3)
  local okc2, report2 = efla.gradcheck(function(p, q) return AxpbAndDiff(p, 2.5, q) end, { a, b })
  ok(okc2, report2)
  -- unused second output: its gradient is zeros
  local u = AxpbAndDiff(a, 2, b)
  a:zero_grad(); b:zero_grad()
  u:sum():backward()
  near(a.grad:totable(), { 2, 2, 2 })
  near(b.grad:totable(), { 1, 1, 1 })
  -- without inputs that need grad nothing is recorded
  local n = Square(efla.ones(2))
  eq(n.grad_fn, nil)
  -- under no_grad neither
  eq(efla.no_grad(function() return Square(x) end).grad_fn, nil)
end)

test('a custom Function: errors in backward and in-place changes reach the caller', function()
  local Bad = efla.autograd.Function {
    name = 'bad',
    forward = function(ctx, a) return a * 1 end,
    backward = function(ctx, g) error('oops from Lua backward') end,
  }
  local x = R(2)
  local err = raises(function() Bad(x):sum():backward() end, 'oops from Lua backward')
  ok(err:find('bad', 1, true), err)
  local y = R(2)
  local z = Square(y)
  y:detach():fill_(3)     -- changes the saved input in place
  raises(function() z:sum():backward() end, 'modified by an in-place operation')
  -- the contexts of dropped graphs are released
  for _ = 1, 200 do local q = Square(x):sum() end
  collectgarbage('collect'); collectgarbage('collect')
  local left = 0
  for _ in pairs(require('efla.autograd')._registry) do left = left + 1 end
  ok(left <= 2, 'Lua contexts of freed nodes are dropped (' .. left .. ' left)')
end)

-- gradcheck, one row per differentiable op ------------------------------------------------------------------
-- Each row: name, the function, and a maker of its inputs (fresh random float64 leaves).
local rows = {}
local function row(name, f, inputs) rows[#rows + 1] = { name, f, inputs } end

for _, name in ipairs({ 'neg', 'exp', 'expm1', 'abs', 'tanh', 'sigmoid', 'relu', 'gelu', 'silu', 'sin', 'cos',
  'sign', 'square' }) do
  row(name, function(x) return x[name](x) end, function() return { R(3, 4) } end)
end
for _, name in ipairs({ 'log', 'log1p', 'sqrt', 'rsqrt', 'reciprocal' }) do
  row(name, function(x) return x[name](x) end, function() return { P(3, 4) } end)
end
for _, name in ipairs({ 'add', 'sub', 'mul', 'maximum', 'minimum' }) do
  row(name, function(a, b) return a[name](a, b) end, function() return { R(3, 4), R(3, 4) } end)
  row(name .. ' broadcast [3,4] [4]', function(a, b) return a[name](a, b) end, function() return { R(3, 4), R(4) } end)
  row(name .. ' broadcast [3,1] [1,4]', function(a, b) return a[name](a, b) end, function() return { R(3, 1), R(1, 4) } end)
end
row('div', function(a, b) return a / b end, function() return { R(3, 4), P(3, 4) } end)
row('div broadcast', function(a, b) return a / b end, function() return { R(2, 3, 4), P(3, 1) } end)
row('pow', function(a, b) return a ^ b end, function() return { P(3, 4), R(3, 4) } end)
row('pow broadcast', function(a, b) return a ^ b end, function() return { P(3, 4), R(4) } end)
row('scalar ops x+2 2-x 3*x x/2 2/x', function(x) return (x + 2) * (2 - x) + 3 * x + x / 2 + 2 / x end,
  function() return { P(3, 4) } end)
row('pow scalar x^3 2^x', function(x) return x ^ 3 + 2 ^ x end, function() return { R(3, 4) } end)
row('unary minus', function(x) return -x end, function() return { R(5) } end)
row('clamp', function(x) return x:clamp(-0.5, 0.5) end, function() return { R(4, 4) } end)
row('clamp lower only', function(x) return x:clamp(0) end, function() return { R(4, 4) } end)
row('where', function(a, b) return efla.where(a:gt(b), a, b * 2) end, function() return { R(3, 4), R(3, 4) } end)
row('where broadcast', function(a, b) return efla.where(a:gt(0), a, b) end, function() return { R(3, 4), R(4) } end)
row('masked_fill', function(x) return x:masked_fill(x:lt(0), 0.5) end, function() return { R(3, 4) } end)
row('tril', function(x) return x:tril() end, function() return { R(4, 4) } end)
row('triu k=1', function(x) return x:triu(1) end, function() return { R(4, 5) } end)
-- reductions
for _, name in ipairs({ 'sum', 'mean', 'max', 'min', 'prod', 'logsumexp', 'var' }) do
  row(name, function(x) return x[name](x) end, function() return { R(3, 4) } end)
  row(name .. ' dim 2', function(x) return (x[name](x, 2)) end, function() return { R(3, 4) } end)
  row(name .. ' dim 1 keepdim', function(x) return (x[name](x, 1, true)) end, function() return { R(3, 4) } end)
end
row('sum dims {1,3}', function(x) return x:sum({ 1, 3 }) end, function() return { R(2, 3, 4) } end)
row('mean dims {2,3} keepdim', function(x) return x:mean({ 2, 3 }, true) end, function() return { R(2, 3, 4) } end)
row('var correction 0', function(x) return x:var(2, false, 0) end, function() return { R(3, 5) } end)
row('norm', function(x) return x:norm() end, function() return { R(3, 4) } end)
row('norm p=1 dim 2', function(x) return x:norm(1, 2) end, function() return { R(3, 4) } end)
row('norm p=3 dim 1', function(x) return x:norm(3, 1) end, function() return { R(3, 4) } end)
row('std', function(x) return x:std(2) end, function() return { R(3, 4) } end)
-- linear algebra
row('matmul 2-d', function(a, b) return a:matmul(b) end, function() return { R(3, 4), R(4, 2) } end)
row('matmul 1-d @ 2-d', function(a, b) return a:matmul(b) end, function() return { R(4), R(4, 3) } end)
row('matmul 2-d @ 1-d', function(a, b) return a:matmul(b) end, function() return { R(3, 4), R(4) } end)
row('matmul 1-d @ 1-d', function(a, b) return a:matmul(b) end, function() return { R(4), R(4) } end)
row('matmul batched', function(a, b) return a:matmul(b) end, function() return { R(2, 3, 4), R(2, 4, 5) } end)
row('matmul broadcast batch', function(a, b) return a:matmul(b) end, function() return { R(2, 3, 4), R(4, 5) } end)
row('matmul broadcast [2,1,3,4]@[3,4,2]', function(a, b) return a:matmul(b) end,
  function() return { R(2, 1, 3, 4), R(3, 4, 2) } end)
row('matmul transposed operand', function(a, b) return a:t():matmul(b) end, function() return { R(4, 3), R(4, 2) } end)
-- nn
row('softmax', function(x) return x:softmax(2) end, function() return { R(3, 5) } end)
row('softmax dim 1', function(x) return x:softmax(1) end, function() return { R(3, 5) } end)
row('log_softmax', function(x) return x:log_softmax() end, function() return { R(3, 5) } end)
row('log_softmax 3-d dim 2', function(x) return x:log_softmax(2) end, function() return { R(2, 3, 4) } end)
row('cross_entropy', function(x) return x:cross_entropy(I({ 2, 5, 1, 3 })) end, function() return { R(4, 5) } end)
row('cross_entropy ignore_index, label_smoothing', function(x)
  return x:cross_entropy(I({ 2, 0, 1, 3 }), { ignore_index = 0, label_smoothing = 0.1 })
end, function() return { R(4, 5) } end)
row('layer_norm', function(x) return x:layer_norm() end, function() return { R(3, 6) } end)
row('layer_norm weight bias', function(x, w, b) return x:layer_norm(w, b) end,
  function() return { R(2, 3, 6), R(6), R(6) } end)
row('rms_norm', function(x) return x:rms_norm() end, function() return { R(3, 6) } end)
row('rms_norm weight', function(x, w) return x:rms_norm(w) end, function() return { R(2, 3, 6), R(6) } end)
-- indexing and joining
row('index_select', function(x) return x:index_select(1, I({ 3, 1, 3 })) end, function() return { R(4, 3) } end)
row('index_select dim 2', function(x) return x:index_select(2, I({ 2, 2 })) end, function() return { R(4, 3) } end)
row('gather', function(x) return x:gather(2, I({ { 1, 3 }, { 2, 2 }, { 3, 1 } })) end, function() return { R(3, 3) } end)
row('scatter_add', function(x, s) return x:scatter_add(2, I({ { 1, 3 }, { 2, 2 }, { 3, 1 } }), s) end,
  function() return { R(3, 3), R(3, 2) } end)
row('embedding', function(w) return efla.embedding(w, I({ { 5, 1 }, { 2, 5 } })) end, function() return { R(5, 3) } end)
row('cat', function(a, b) return efla.cat({ a, b }, 1) end, function() return { R(2, 3), R(4, 3) } end)
row('cat dim 2', function(a, b) return efla.cat({ a, b }, 2) end, function() return { R(2, 3), R(2, 1) } end)
row('stack', function(a, b) return efla.stack({ a, b }, 2) end, function() return { R(2, 3), R(2, 3) } end)
row('split', function(x) local p = x:split(2, 2); return p[1] * p[2] end, function() return { R(3, 4) } end)
row('attention (window 2)', function(q, k, v) return efla.ops.attention(q, k, v, { window = 2 }) end, function() return { R(1, 4, 2, 3), R(1, 4, 2, 3), R(1, 4, 2, 3) } end)
-- views
row('view', function(x) return x:view(4, 3) end, function() return { R(3, 4) } end)
row('reshape', function(x) return x:t():reshape(-1) end, function() return { R(3, 4) } end)
row('transpose', function(x) return x:transpose(1, 3) end, function() return { R(2, 3, 4) } end)
row('permute', function(x) return x:permute(3, 1, 2) end, function() return { R(2, 3, 4) } end)
row('narrow', function(x) return x:narrow(2, 2, 2) end, function() return { R(3, 4) } end)
row('select', function(x) return x:select(2, -1) end, function() return { R(3, 4) } end)
row('x[i]', function(x) return x[2] end, function() return { R(3, 4) } end)
row('expand', function(x) return x:expand(3, 4) end, function() return { R(3, 1) } end)
row('expand new leading dim', function(x) return x:expand(2, 3, 4) end, function() return { R(4) } end)
row('squeeze', function(x) return x:squeeze() end, function() return { R(3, 1, 4) } end)
row('unsqueeze', function(x) return x:unsqueeze(2) end, function() return { R(3, 4) } end)
row('contiguous', function(x) return x:t():contiguous() end, function() return { R(3, 4) } end)
row('clone', function(x) return x:clone() end, function() return { R(3, 4) } end)
row('to float32 and back', function(x) return x:float():double() * 1 end, function() return { R(3) } end)

test('gradcheck: one row per differentiable op (' .. #rows .. ' rows)', function()
  local failures = {}
  for _, r in ipairs(rows) do
    local name, f, make = r[1], r[2], r[3]
    local okc, res, report = pcall(function()
      local inputs = make()
      -- the float32 round trip is linear but rounds to float32: a larger step, looser tolerance
      local opts = name:find('float32', 1, true) and { eps = 1e-2, atol = 1e-4, rtol = 1e-3 } or nil
      return efla.gradcheck(f, inputs, opts)
    end)
    if not okc then
      failures[#failures + 1] = name .. ': error: ' .. tostring(res)
    elseif not res then
      failures[#failures + 1] = name .. ': ' .. report
    end
  end
  print('      ' .. (#rows - #failures) .. ' of ' .. #rows .. ' rows pass')
  ok(#failures == 0, #failures .. ' rows failed:\n      ' .. table.concat(failures, '\n      '))
end)

test('gradcheck detects a wrong gradient', function()
  local Wrong = efla.autograd.Function {
    name = 'wrong',
    forward = function(ctx, a) return a * a end,
    backward = function(ctx, g) return g end,   -- should be 2*a*g
  }
  local okc, report, worst = efla.gradcheck(function(a) return Wrong(a) end, { R(3) })
  ok(not okc, 'a wrong backward fails the check')
  ok(report:find('FAILED', 1, true) and report:find('input 1', 1, true), report)
  ok(worst.input == 1 and #worst.position == 1)
  raises(function() efla.gradcheck(function(a) return a * 2 end, { efla.randn(3, { requires_grad = true }) }) end,
    'float64')
end)

-- a small network -----------------------------------------------------------------------------------------------
local function mlp(X, W1, b1, W2, b2) return (X:matmul(W1) + b1):tanh():matmul(W2) + b2 end

test('an MLP with softmax cross-entropy passes gradcheck end to end', function()
  local X = efla.randn(6, 5, F64):requires_grad_()
  local W1, b1, W2, b2 = R(5, 7), R(7), R(7, 4), R(4)
  local target = I({ 1, 4, 2, 3, 4, 1 })
  local okc, report = efla.gradcheck(function(x, w1, c1, w2, c2)
    return mlp(x, w1, c1, w2, c2):cross_entropy(target)
  end, { X, W1, b1, W2, b2 })
  ok(okc, report)
  -- and the same loss written out with log_softmax and gather
  local okc2, report2 = efla.gradcheck(function(w1, c1, w2, c2)
    local logp = mlp(X:detach(), w1, c1, w2, c2):log_softmax(2)
    return -logp:gather(2, target:view(6, 1)):mean()
  end, { W1, b1, W2, b2 })
  ok(okc2, report2)
end)

test('1000 forward/backward steps keep CPU memory flat', function()
  local X = efla.randn(32, 10)
  local target = efla.randint(1, 5, 32)
  local params = {
    efla.randn(10, 16):mul_(0.3):requires_grad_(), efla.zeros(16, { requires_grad = true }),
    efla.randn(16, 4):mul_(0.3):requires_grad_(), efla.zeros(4, { requires_grad = true }),
  }
  local function step()
    local loss = mlp(X, params[1], params[2], params[3], params[4]):cross_entropy(target)
    loss:backward()
    efla.no_grad(function()
      for _, p in ipairs(params) do p:sub_(p.grad * 0.1) end
    end)
    efla.zero_grad(params)
    return loss:item()
  end
  local first = step()
  for _ = 2, 10 do step() end
  collectgarbage('collect')
  local bytes10, live10 = efla.cpu_live_bytes(), efla.live_tensors()
  local last
  for _ = 11, 1000 do last = step() end
  collectgarbage('collect')
  eq(efla.cpu_live_bytes(), bytes10, 'CPU bytes after 10 and after 1000 steps')
  eq(efla.live_tensors(), live10, 'live tensors after 10 and after 1000 steps')
  ok(last < first * 0.5, string.format('the loss went down: %.4f -> %.4f', first, last))
end)

-- last: it turns the JIT off for efla's functions for the rest of the process
test('set_gc_callback: the allocator hook runs a full Lua collection', function()
  local ffi = require 'ffi'
  -- core/backend.h: what the CUDA allocator calls before it gives up on an allocation
  pcall(ffi.cdef, 'void efla_run_gc_callback(void);')
  local lib = efla.internal.lib
  efla.set_gc_callback(true)
  collectgarbage('collect')
  local before = efla.live_tensors()
  local function make_garbage() local g = {}; for i = 1, 100 do g[i] = efla.zeros(2) end end
  make_garbage()
  ok(efla.live_tensors() >= before + 100, 'the garbage is still alive')
  local function allocator_asks() lib.efla_run_gc_callback() end
  jit.off(allocator_asks)   -- as efla's wrappers are once the hook is set
  allocator_asks()
  eq(efla.live_tensors(), before, 'the callback collected the unreachable tensors')
  efla.set_gc_callback(false)
  -- efla still works (now without the JIT in its wrappers)
  near((efla.ones(3) * 2):sum():item(), 6)
end)

t.done()

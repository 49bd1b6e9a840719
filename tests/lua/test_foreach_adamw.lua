-- test_foreach_adamw.lua: efla.foreach.adamw_ (the multi-tensor AdamW step, core/ops_foreach.c,
-- core/cpu/foreach.c) against efla.adamw_step_ per tensor, bit for bit, over several steps of
-- mixed sizes and dtypes; its errors; and optim.AdamW/Adam, which now step through it, against
-- their per-tensor path ({foreach = false}) on a tiny LM. CUDA: tests/lua/test_foreach_cuda.lua.
local efla = require 'efla'
local t = dofile((arg[0]:match('^(.*[/\\])') or './') .. 'testlib.lua')
local test, eq, ok, raises = t.test, t.eq, t.ok, t.raises
local fe, optim = efla.foreach, efla.optim

local function same_bits(a, b, what)
  eq(a:dtype(), b:dtype(), what)
  eq(a:numel(), b:numel(), what)
  ok(a:numel() == 0 or a:double():eq(b:double()):all(), what .. ': values differ')
end

-- parameters with their grads and moments: every dtype pair the kernel computes (float32;
-- float64 with float64 or float32 moments; bfloat16 with bfloat16 or float32 moments),
-- empty ones, one longer than the cpu chunk (65536) and not a multiple of it
local specs = {
  { { 7, 5 }, 'float32', 'float32' }, { { 33 }, 'float64', 'float64' }, { { 0, 4 }, 'float32', 'float32' },
  { { 3, 2, 4 }, 'bfloat16', 'float32' }, { { 70001 }, 'float32', 'float32' }, { { 9 }, 'float64', 'float32' },
  { { 0 }, 'bfloat16', 'bfloat16' }, { { 129, 3 }, 'bfloat16', 'bfloat16' }, { {}, 'float32', 'float32' },
  { { 66000 }, 'bfloat16', 'float32' },
}
local function make_set(seed)
  efla.manual_seed(seed)
  local s = { p = {}, m = {}, v = {} }
  for i, sp in ipairs(specs) do
    s.p[i] = efla.randn(sp[1]):to(sp[2])
    s.m[i] = (efla.randn(sp[1]) * 0.1):to(sp[3])
    s.v[i] = (efla.randn(sp[1]) * 0.01):abs():to(sp[3])
  end
  return s
end
local function clone_set(s)
  local c = { p = {}, m = {}, v = {} }
  for k, l in pairs(s) do for i, x in ipairs(l) do c[k][i] = x:clone() end end
  return c
end
local function grads(seed)
  efla.manual_seed(seed)
  local g = {}
  for i, sp in ipairs(specs) do g[i] = efla.randn(sp[1]):to(sp[2]) end
  return g
end

test('adamw_: several steps of mixed dtypes and sizes equal adamw_step_ per tensor, bit for bit', function()
  local a = make_set(1)
  local b = clone_set(a)
  for step = 1, 4 do
    local g = grads(100 + step)
    local lr, wd = 1e-2 * step, step == 3 and 0 or 0.1
    eq(fe.adamw_(a.p, g, a.m, a.v, lr, 0.9, 0.999, 1e-8, wd, step), a.p, 'returns params')
    for i = 1, #specs do efla.adamw_step_(b.p[i], g[i], b.m[i], b.v[i], lr, 0.9, 0.999, 1e-8, wd, step) end
    for i = 1, #specs do
      local what = string.format('step %d, tensor %d (%s/%s)', step, i, specs[i][2], specs[i][3])
      same_bits(a.p[i], b.p[i], what .. ' p'); same_bits(a.m[i], b.m[i], what .. ' m'); same_bits(a.v[i], b.v[i], what .. ' v')
    end
  end
  ok(a.p[5]:ne(make_set(1).p[5]):any(), 'the parameters moved')
end)

test('adamw_: 300 small tensors (several chunks of work items) and the empty list', function()
  efla.manual_seed(5)
  local p, g, m, v, q = {}, {}, {}, {}, {}
  for i = 1, 300 do
    p[i] = efla.randn({ i % 17 + 1 }); g[i] = efla.randn({ i % 17 + 1 })
    m[i] = efla.zeros({ i % 17 + 1 }); v[i] = efla.zeros({ i % 17 + 1 })
    q[i] = { p[i]:clone(), m[i]:clone(), v[i]:clone() }
  end
  fe.adamw_(p, g, m, v, 1e-3, 0.8, 0.99, 1e-6, 0.05, 1)
  for i = 1, 300 do
    efla.adamw_step_(q[i][1], g[i], q[i][2], q[i][3], 1e-3, 0.8, 0.99, 1e-6, 0.05, 1)
    same_bits(p[i], q[i][1], 'p ' .. i); same_bits(v[i], q[i][3], 'v ' .. i)
  end
  eq(#fe.adamw_({}, {}, {}, {}, 1e-3, 0.9, 0.999, 1e-8, 0, 1), 0)
end)

-- (indices in the errors count from 0, as in the other foreach ops' errors)
test('adamw_: errors name the offending index and what to do', function()
  local P = function(...) return efla.randn(...) end
  local p, g, m, v = { P({ 3 }), P({ 4 }) }, { P({ 3 }), P({ 4 }) }, { P({ 3 }), P({ 4 }) }, { P({ 3 }), P({ 4 }) }
  local function call(pp, gg, mm, vv, step) return function() fe.adamw_(pp, gg, mm, vv, 1e-3, 0.9, 0.999, 1e-8, 0, step or 1) end end
  raises(call(p, { g[1], P({ 5 }) }, m, v), 'grad 1 has shape [5] but param 1 has shape [4]')
  raises(call(p, { g[1] }, m, v), '2 params but 1 grads')
  raises(call(p, g, m, { v[1], P({ 4 }, { dtype = 'float64' }) }), 'm 1 is float32 and v 1 is float64')
  raises(call(p, { g[1], g[2]:double() }, m, v), 'grad 1 is float64 but param 1 is float32')
  raises(call({ p[1], P({ 2, 2 }):t() }, { g[1], P({ 2, 2 }) }, { m[1], P({ 2, 2 }) }, { v[1], P({ 2, 2 }) }),
    'param 1 (shape [2,2]) is not contiguous')
  raises(call({ p[1], efla.zeros({ 4 }, { dtype = 'int64' }) }, g, m, v), 'param 1 must be floating, not int64')
  raises(call({ p[1], p[1] }, { g[1], g[1] }, { m[1], P({ 3 }) }, { v[1], P({ 3 }) }), 'param 0 and param 1 share memory')
  raises(call(p, g, { m[1], p[2] }, v), 'param 1 and m 1 share memory')
  raises(call(p, g, m, v, 0), 'step is 0; it counts from 1')
  raises(function() fe.adamw_(p, g, m, v, 1e-3, 1.5, 0.999, 1e-8, 0, 1) end, 'must lie in [0, 1)')
  raises(function() fe.adamw_(p, g, m, v, -1, 0.9, 0.999, 1e-8, 0, 1) end, 'must be finite and >= 0')
  raises(function() fe.adamw_(p, g, m, v, 1e-3, 0.9, 0.999, 1e-8, 0) end, 'step must be a number')
  raises(function() fe.adamw_(p[1], g, m, v, 1e-3, 0.9, 0.999, 1e-8, 0, 1) end, 'expected a list')
  -- nothing was written by the failed calls
  ok(m[1]:eq(m[1]:clone()):all())
end)

-- a tiny LM trained a few steps with the multi-tensor step and with one kernel per parameter
local function train(cls, opts, dtype, steps)
  efla.manual_seed(3)
  local model = efla.nn.CausalLM { vocab_size = 11, d_model = 16, n_layers = 2, n_heads = 2, dtype = dtype }
  local params = model:parameters()
  -- two groups, the second without weight decay, and one parameter left without a gradient
  local opt = optim[cls]({ { params = { unpack(params, 1, #params - 2) } },
    { params = { params[#params - 1], params[#params] }, weight_decay = 0 } }, opts)
  local tok = efla.randint(1, 12, { 2, 9 })
  for s = 1, steps do
    opt:zero_grad()
    model:loss(tok:narrow(2, 1, 8), tok:narrow(2, 2, 8)):backward()
    if s == 2 then params[1].grad = nil end
    opt:step()
  end
  return params, opt
end

for _, dtype in ipairs({ 'float32', 'bfloat16' }) do
  for _, cls in ipairs({ 'AdamW', 'Adam' }) do
    test(cls .. ' (' .. dtype .. ' LM): the multi-tensor step gives the per-tensor parameters bit for bit', function()
      local real, calls = fe.adamw_, 0
      fe.adamw_ = function(...) calls = calls + 1; return real(...) end
      local ok_a, a, oa = pcall(train, cls, { lr = 1e-2, weight_decay = 0.1 }, dtype, 3)
      fe.adamw_ = real
      assert(ok_a, a)
      -- per step and group one call, and at step 3 a second one in group 1 for parameter 1,
      -- one step behind
      eq(calls, 7, 'multi-tensor calls')
      local b, ob = train(cls, { lr = 1e-2, weight_decay = 0.1, foreach = false }, dtype, 3)
      ok(oa.foreach and not ob.foreach)
      for i = 1, #a do same_bits(a[i], b[i], 'parameter ' .. i) end
      eq(oa.state[1].step, 2, 'the parameter without a gradient at step 2 skipped it')
      eq(oa.state[2].step, 3)
      for i, s in pairs(ob.state) do
        eq(oa.state[i].step, s.step)
        same_bits(oa.state[i].exp_avg_sq, s.exp_avg_sq, 'v of parameter ' .. i)
      end
    end)
  end
end

test('AdamW: a non-contiguous parameter takes the per-tensor path, the others one call', function()
  local function run(fe_on)
    efla.manual_seed(4)
    local a = efla.randn({ 3, 4 }):requires_grad_()
    local b = efla.randn({ 4, 3 }):t():requires_grad_()   -- a transposed leaf: not contiguous
    local c = efla.randn({ 5 }, { dtype = 'float64' }):requires_grad_()
    local opt = optim.AdamW({ a, b, c }, { lr = 0.1, foreach = fe_on })
    for s = 1, 2 do
      for _, p in ipairs({ a, b, c }) do p.grad = efla.randn(p:size(), { dtype = p:dtype() }) end
      opt:step()
    end
    return { a, b, c }
  end
  local real, calls, sizes = fe.adamw_, 0, {}
  fe.adamw_ = function(p, ...) calls = calls + 1; sizes[#sizes + 1] = #p; return real(p, ...) end
  local okr, x = pcall(run, true)
  fe.adamw_ = real
  assert(okr, x)
  eq(calls, 2); eq(sizes[1], 2, 'a and c in one call')
  local y = run(false)
  ok(not x[2]:is_contiguous())
  for i = 1, 3 do same_bits(x[i], y[i], 'parameter ' .. i) end
end)

t.done()

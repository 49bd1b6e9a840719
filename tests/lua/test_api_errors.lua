-- test_api_errors.lua: bad input at the Lua API gets a message in Lua's terms (issue 16,
-- findings 5, 8, 10): nil and strings named as such, 1-based numbers, options named, and
-- the opt-in finite check of the delta rule naming where a NaN/Inf enters.
local t = dofile('tests/lua/testlib.lua')
local efla = require 'efla'

local function long(values) return efla.tensor(values, { dtype = 'int64' }) end
local function no_null(msg) t.ok(not msg:find('NULL', 1, true), 'no NULL in: ' .. msg) return msg end

t.test('from_buffer without data', function()
  no_null(t.raises(function() efla.from_buffer(nil, { 2 }, 'float32') end, 'data must be a cdata pointer or a string of raw bytes, got nil'))
  t.raises(function() efla.from_buffer(5, { 2 }, 'float32') end, 'got a number (5)')
  t.raises(function() efla.from_buffer(require('ffi').cast('float *', nil), { 2 }, 'float32') end, 'data is a NULL pointer')
  t.eq(efla.from_buffer('', { 0 }, 'float32'):numel(), 0, 'nothing to copy is fine')
  -- the C function itself refuses NULL data instead of copying from it
  local lib, ffi = efla.internal.lib, require('ffi')
  local shape = ffi.new('int64_t[1]', 2)
  t.ok(lib.efla_from_buffer(1, shape, lib.EFLA_FLOAT32, nil, 8) == nil, 'C from_buffer(NULL) fails')
  t.ok(ffi.string(lib.efla_last_error()):find('data is missing', 1, true), ffi.string(lib.efla_last_error()))
end)

t.test('a string or nil where a tensor goes', function()
  no_null(t.raises(function() efla.exp('abc') end, 'efla.exp: expected a tensor as the first argument, got a string ("abc")'))
  no_null(t.raises(function() efla.exp(nil) end, 'got nil'))
  no_null(t.raises(function() efla.sum({}) end, 'got a table'))
  no_null(t.raises(function() efla.matmul('x', efla.ones({ 2, 2 })) end, 'got a string'))
  -- numbers and tables of numbers still work where they did
  t.near(efla.add(efla.ones({ 2 }), 1), { 2, 2 })
end)

t.test('delta_rule arguments and options', function()
  local q, v, beta = efla.ones({ 1, 2, 1, 2 }), efla.ones({ 1, 2, 1, 2 }), efla.ones({ 1, 2, 1 })
  no_null(t.raises(function() efla.ops.delta_rule(nil, q, v, beta) end, 'delta_rule: q is nil; expected a tensor [B,T,H,dk]'))
  no_null(t.raises(function() efla.ops.delta_rule(q, q, v, nil) end, 'beta is nil'))
  t.raises(function() efla.ops.delta_rule(q, 'k', v, beta) end, 'k must be a tensor, got a string ("k")')
  t.raises(function() efla.ops.delta_rule(q, q, v, beta, { scale = 'abc' }) end, 'opts.scale must be a finite number')
  t.raises(function() efla.ops.delta_rule(q, q, v, beta, { scale = 0 / 0 }) end, 'opts.scale must be a finite number')
  t.raises(function() efla.ops.delta_rule(q, q, v, beta, { chunk_size = 0 }) end, 'opts.chunk_size must be a whole number >= 1')
  no_null(t.raises(function() efla.ops.delta_rule_step(q, q, v, beta, nil) end, 'state is nil'))
end)

t.test('1-based numbers in index errors', function()
  t.raises(function() efla.one_hot(long({ 7 }), 6) end, 'class 7 is out of range for num_classes 6 (classes are 1..6)')
  t.raises(function() efla.one_hot(long({ 0 }), 6) end, 'class 0 is out of range')
  t.raises(function() efla.nn.Embedding(5, 3):forward(long({ 0 })) end, 'index 0 is out of range for dim 1 of size 5')
  t.raises(function() efla.ones({ 3, 2 }):index_select(1, long({ -100 })) end, 'index -100 is out of range for dim 1 of size 3')
  t.raises(function() efla.ones({ 3, 2 }):index_select(1, long({ 4 })) end, 'index 4 is out of range')
end)

t.test('1-based dims and tensor numbers in shape errors', function()
  t.raises(function() return efla.ones(2, 3) + efla.ones(4, 3) end, 'size 2 vs 4 at dim 1')
  t.raises(function() return efla.cat({ efla.ones(2, 3), efla.ones(2, 4) }, 1) end,
    'tensor 2 has shape [2,4] but tensor 1 has shape [2,3]; all sizes must match except in the concatenated dim 1')
  t.raises(function() return efla.stack({ efla.ones(2, 3), efla.ones(2, 3), efla.ones(3, 3) }) end,
    'tensor 3 has shape [3,3] but tensor 1 has shape [2,3]')
end)

-- the finite check
local B, T, H, dk, dv = 2, 6, 3, 4, 4
local function inputs()
  efla.manual_seed(3)
  return efla.randn({ B, T, H, dk }) * 0.3, efla.randn({ B, T, H, dk }) * 0.3, efla.randn({ B, T, H, dv }), efla.rand({ B, T, H })
end

t.test('finite check: names the first batch, token and head', function()
  local q, k, v, beta = inputs()
  v[{ 2, 4, 3, 1 }] = 0 / 0
  v[{ 2, 5, 1, 2 }] = 1 / 0
  efla.ops.delta_rule(q, k, v, beta)   -- off by default: no error, just NaNs
  t.raises(function() efla.ops.delta_rule(q, k, v, beta, { check_finite = true }) end,
    'v has a NaN or Inf at batch 2, token 4, head 3')
  q, k, v, beta = inputs()
  beta[{ 1, 3, 2 }] = -1 / 0
  local old = efla.set_debug_checks(true)
  t.eq(old and 1 or 0, 0, 'checks were off')
  local ok, err = pcall(efla.ops.delta_rule, q, k, v, beta)
  efla.set_debug_checks(false)
  t.ok(not ok and tostring(err):find('beta has a NaN or Inf at batch 1, token 3, head 2', 1, true), tostring(err))
  q, k, v, beta = inputs()
  local S0 = efla.zeros({ B, H, dk, dv })
  S0[{ 2, 1, 3, 3 }] = 0 / 0
  t.raises(function() efla.ops.delta_rule(q, k, v, beta, { initial_state = S0, check_finite = true }) end,
    'initial_state has a NaN or Inf in sequence 2, head 1')
  t.raises(function() efla.ops.delta_rule_step(q:narrow(2, 1, 1), k:narrow(2, 1, 1), v:narrow(2, 1, 1),
    beta:narrow(2, 1, 1), S0, { check_finite = true }) end, 'state has a NaN or Inf in sequence 2, head 1')
  -- finite inputs pass, and give the same result as without the check
  q, k, v, beta = inputs()
  local a = efla.ops.delta_rule(q, k, v, beta, { check_finite = true })
  local b = efla.ops.delta_rule(q, k, v, beta)
  t.near(a, b, 0)
end)

t.test('finite check: a state that overflows under DeltaNet', function()
  local q, k, v, beta = inputs()
  local ok, err = pcall(efla.ops.delta_rule, q, k * 1e4, v * 1e4, beta * 1e4, { order = 1, check_finite = true })
  t.ok(not ok and tostring(err):find('the inputs are finite but the output is not from batch', 1, true), tostring(err))
end)

t.done()

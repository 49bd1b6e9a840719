-- test_foreach.lua: the multi-tensor ops (efla.foreach, core/ops_foreach.c, core/cpu/foreach.c)
-- on the cpu against per-tensor references, their errors, and optim.clip_grad_norm_, which
-- now runs on them, against the per-tensor formula it used before. CUDA against the cpu:
-- tests/lua/test_foreach_cuda.lua.
local efla = require 'efla'
local t = dofile((arg[0]:match('^(.*[/\\])') or './') .. 'testlib.lua')
local test, eq, ok, near, raises = t.test, t.eq, t.ok, t.near, t.raises
local fe, optim = efla.foreach, efla.optim

-- the sum of squares of each tensor in float64, added in Lua
local function ref_sum_squares(list)
  local s = 0
  for _, x in ipairs(list) do s = s + x:double():square():sum():item() end
  return s
end

-- float32, float64 and bfloat16 tensors of assorted sizes, empty ones included, one of them
-- longer than the cpu kernel's chunk (65536) and not a multiple of it
local function mixed_list(seed)
  efla.manual_seed(seed)
  return {
    efla.randn({ 7, 5 }), efla.randn({ 33 }, { dtype = 'float64' }) * 3, efla.randn({ 0, 4 }),
    efla.randn({ 3, 2, 4 }):bfloat16(), efla.randn({ 70001 }) * 0.01, efla.randn({ 1 }, { dtype = 'float64' }),
    efla.zeros({ 0 }, { dtype = 'bfloat16' }), efla.randn({ 129, 3 }):bfloat16(), efla.randn({}) * 2,
  }
end

-- 1-based bit patterns of a tensor, to compare results exactly
local function same_bits(a, b, what)
  eq(a:dtype(), b:dtype(), what)
  ok(a:double():eq(b:double()):all(), what .. ': values differ')
end

test('sum_squares: mixed dtypes and sizes against per-tensor sums, 0-d float64, deterministic', function()
  local list = mixed_list(1)
  local s = fe.sum_squares(list)
  eq(s:dim(), 0); eq(s:dtype(), 'float64'); eq(s:device(), 'cpu')
  local want = ref_sum_squares(list)
  near(s:item(), want, 1e-12 * want)
  eq(fe.sum_squares(list):item(), s:item(), 'the same result on a second call')
  -- one tensor, and only empty ones
  near(fe.sum_squares({ list[1] }):item(), ref_sum_squares({ list[1] }), 1e-12 * ref_sum_squares({ list[1] }))
  eq(fe.sum_squares({ list[3], list[7] }):item(), 0)
end)

test('sum_squares: the empty list gives a 0-d float64 zero', function()
  local s = fe.sum_squares({})
  eq(s:dim(), 0); eq(s:dtype(), 'float64'); eq(s:item(), 0)
end)

test('sum_squares: float32 squares are summed in float64 (no float32 rounding)', function()
  -- 2^24 + 1 ones and one 2^-12: float32 accumulation would lose both the +1 and the 2^-24
  local x = efla.ones({ 2 ^ 24 + 1 })
  local y = efla.full({ 1 }, 2 ^ -12)
  eq(fe.sum_squares({ x, y }):item(), 2 ^ 24 + 1 + 2 ^ -24)
end)

test('scale_: each dtype against a per-tensor multiply, in place, from a device-side 0-d coef', function()
  local list = mixed_list(2)
  local before = {}
  for i, x in ipairs(list) do before[i] = x:clone() end
  local coef = efla.tensor(0.3711, { dtype = 'float64' }):reshape({})
  eq(fe.scale_(list, coef), list, 'returns the list')
  for i, x in ipairs(list) do
    local b = before[i]
    local want
    if x:dtype() == 'bfloat16' then want = (b:float() * coef:float()):bfloat16()   -- in float, as documented
    else want = b * coef:to(x:dtype()) end
    same_bits(x, want, 'tensor ' .. i .. ' (' .. x:dtype() .. ')')
  end
  -- a number works too; the empty list is a no-op
  local a = efla.full({ 3 }, 2.0)
  fe.scale_({ a }, -0.5)
  near(a:totable(), { -1, -1, -1 }, 0)
  eq(#fe.scale_({}, 2), 0)
end)

test('scale_: a coef that is an element of a listed tensor scales everything by its old value', function()
  local a = efla.tensor({ 2, 3, 4 })
  local b = efla.tensor({ 1, 1 })
  fe.scale_({ a, b }, a:narrow(1, 1, 1))
  near(a:totable(), { 4, 6, 8 }, 0)
  near(b:totable(), { 2, 2 }, 0)
end)

test('scale_ bumps the version: autograd sees the in-place write', function()
  local w = efla.randn({ 3 }, { requires_grad = true })
  local x = efla.randn({ 3 })
  local y = (w * x):sum()   -- saves x
  efla.no_grad(function() fe.scale_({ x }, 2) end)
  raises(function() y:backward() end, 'modified')
end)

test('clear errors: non-contiguous, non-float, not a list, requires grad, shared memory, bad coef', function()
  local a = efla.randn({ 4, 3 })
  raises(function() fe.sum_squares({ a, a:t() }) end, 'tensor 1 (shape [3,4]) is not contiguous')
  raises(function() fe.scale_({ a:t() }, 2) end, 'is not contiguous')
  raises(function() fe.sum_squares({ a, efla.ones({ 2 }, { dtype = 'int64' }) }) end, 'tensor 1 is int64')
  raises(function() fe.scale_({ efla.ones({ 2 }, { dtype = 'bool' }) }, 2) end, 'floating tensors')
  raises(function() fe.sum_squares(a) end, 'expected a list (table) of tensors, got a tensor')
  raises(function() fe.sum_squares({ a, 3 }) end, 'element 2')
  local p = efla.randn({ 3 }, { requires_grad = true })
  raises(function() fe.sum_squares({ p }) end, 'records no gradient')
  efla.no_grad(function() ok(fe.sum_squares({ p }):item() > 0) end)
  raises(function() fe.scale_({ p }, 2) end, 'requires grad')
  raises(function() fe.scale_({ a, a:narrow(1, 2, 2) }, 2) end, 'share memory')
  raises(function() fe.scale_({ a }, efla.ones({ 2 })) end, 'one-element floating tensor')
  raises(function() fe.scale_({ a }, efla.ones({}, { dtype = 'int64' })) end, 'one-element floating tensor')
end)

-- ---- clip_grad_norm_ ------------------------------------------------------------------------
-- The formula clip_grad_norm_ used before the multi-tensor ops: one norm per gradient,
-- stacked in float64; the coef cast to each gradient's dtype, one multiply per gradient.
local function old_clip(grads, max_norm)
  local norms = {}
  for i, g in ipairs(grads) do norms[i] = g:norm():double() end
  local total = efla.stack(norms):square():sum():sqrt()
  local tv = total:item()
  if tv < math.huge then
    local coef = efla.tensor(math.min(1, max_norm / (tv + 1e-6)), { dtype = 'float64' }):reshape({})
    for _, g in ipairs(grads) do g:mul_(coef:to(g:dtype())) end
  end
  return tv
end

local function lm_with_grads(dtype)
  efla.manual_seed(7)
  local m = efla.nn.CausalLM { vocab_size = 11, d_model = 16, n_layers = 2, n_heads = 2, dtype = dtype }
  local tok = efla.randint(1, 12, { 2, 9 })
  m:loss(tok:narrow(2, 1, 8), tok:narrow(2, 2, 8)):backward()
  return m
end

for _, dtype in ipairs({ 'float32', 'float64' }) do
  test('clip_grad_norm_ (' .. dtype .. ' LM): the same norm and gradients as the per-tensor formula (multi-tensor and {foreach = false})', function()
    for _, case in ipairs({ { 1e-3 }, { 1e6 }, { 1e-3, { foreach = false } }, { 1e6, { foreach = false } } }) do
      local max_norm, opts = case[1], case[2]
      local m = lm_with_grads(dtype)
      local ref = {}
      for i, p in ipairs(m:parameters()) do ref[i] = p.grad:clone() end
      local want = old_clip(ref, max_norm)
      local n = optim.clip_grad_norm_(m, max_norm, opts)
      eq(n:dtype(), 'float64'); eq(n:dim(), 0)
      near(n:item(), want, 1e-6 * want, 'norm')
      for i, p in ipairs(m:parameters()) do
        if max_norm > 1 then same_bits(p.grad, ref[i], 'unclipped gradient ' .. i)
        else near((p.grad - ref[i]):abs():max():item(), 0, 1e-6 * ref[i]:abs():max():item() + 1e-30, 'gradient ' .. i) end
      end
    end
  end)
end

-- (The old formula took a bfloat16 gradient's norm in bfloat16, 3 significant digits; the
-- multi-tensor sum is exact in float64, so the reference here is the float64 sum.)
test('clip_grad_norm_: mixed float32/bfloat16/float64 gradients, non-finite norm leaves them alone', function()
  local P = function(x) return efla.zeros(x:size(), { dtype = x:dtype(), requires_grad = true }) end
  local list = mixed_list(3)
  local params = {}
  for i, g in ipairs(list) do params[i] = P(g); params[i].grad = g:clone() end
  local want = math.sqrt(ref_sum_squares(list))
  local n = optim.clip_grad_norm_(params, 0.5)
  near(n:item(), want, 1e-12 * want)
  local coef = 0.5 / (want + 1e-6)
  for i, p in ipairs(params) do if p.grad:numel() > 0 then
    local tol = p.grad:dtype() == 'bfloat16' and 2 ^ -8 or p.grad:dtype() == 'float32' and 1e-7 or 1e-15
    near((p.grad:double() - list[i]:double() * coef):abs():max():item(), 0,
      tol * (list[i]:double():abs():max():item() * coef + 1e-30), 'gradient ' .. i .. ' (' .. p.grad:dtype() .. ')')
  end end
  params[1].grad[1][1] = 0 / 0
  local saved = params[2].grad:clone()
  ok(optim.clip_grad_norm_(params, 1e-3):item() ~= optim.clip_grad_norm_(params, 1e-3):item(), 'NaN norm')
  same_bits(params[2].grad, saved, 'gradient left alone under a NaN norm')
  params[1].grad[1][1] = math.huge
  eq(optim.clip_grad_norm_(params, 1e-3):item(), math.huge)
  same_bits(params[2].grad, saved, 'gradient left alone under an infinite norm')
end)

test('clip_grad_norm_: a strided gradient takes the per-tensor path with the same result', function()
  local a = efla.zeros({ 3, 4 }, { requires_grad = true })
  local b = efla.zeros({ 5 }, { requires_grad = true })
  efla.manual_seed(4)
  a.grad = efla.randn({ 4, 3 }):t()   -- not contiguous
  b.grad = efla.randn({ 5 })
  local want = math.sqrt(a.grad:square():sum():item() + b.grad:square():sum():item())
  local ga, gb = a.grad:clone(), b.grad:clone()
  local n = optim.clip_grad_norm_({ a, b }, 0.25)
  near(n:item(), want, 1e-6 * want)
  local coef = 0.25 / (n:item() + 1e-6)
  near((a.grad - ga * coef):abs():max():item(), 0, 1e-6)
  near((b.grad - gb * coef):abs():max():item(), 0, 1e-6)
end)

t.done()

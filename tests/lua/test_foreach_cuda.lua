-- test_foreach_cuda.lua: the multi-tensor ops on CUDA (cuda/foreach.cu) against the cpu
-- kernels, which test_foreach.lua checks against per-tensor references: lists longer than one
-- launch (128 tensors), float32/float64/bfloat16 mixed, empty tensors, tensors spanning many
-- chunks, unaligned starts (the scalar path); the same bits on repeated calls; scale_ bit for
-- bit like the cpu; clear errors for mixed devices; clip_grad_norm_ of an LM on CUDA against
-- the same LM on the cpu; adamw_ and optim.AdamW bit for bit like adamw_step_ per tensor on
-- the device. Skipped without a CUDA device.
--   build/efla tests/lua/test_foreach_cuda.lua
-- (EFLA_FOREACH_TEST_DEVICE=cpu runs it cpu against cpu, to check the test itself.)
local efla = require 'efla'
local t = dofile((arg[0]:match('^(.*[/\\])') or './') .. 'testlib.lua')
local test, eq, ok, near, raises = t.test, t.eq, t.ok, t.near, t.raises
local fe, optim = efla.foreach, efla.optim
local DEVICE = os.getenv('EFLA_FOREACH_TEST_DEVICE') or 'cuda'
-- what :device() reports for a tensor on DEVICE ('cuda' names the current card, 'cuda:0')
local function same_device(got) return got == DEVICE or got == DEVICE .. ':0' end

if DEVICE ~= 'cpu' and not efla.cuda.is_available() then
  print('skipped: no CUDA device (run this on the GPU machine)')
  return
end

local DTYPES = { 'float32', 'float64', 'bfloat16' }

-- n tensors on the cpu: assorted sizes (some empty, some over several 16384-element chunks,
-- lengths not a multiple of 8), the three dtypes in turn; every fifth one a view that starts
-- one element into its buffer (contiguous but not 16-byte aligned)
local function cpu_list(n, seed)
  efla.manual_seed(seed)
  local list = {}
  for i = 1, n do
    local len = ({ 0, 1, 7, 513, 4096, 16384, 16385, 70001 })[(i * 7) % 8 + 1]
    local x = efla.randn({ len + 1 }, { dtype = 'float64' }) * (0.5 + (i % 3))
    x = x:to(DTYPES[i % 3 + 1])
    if i % 5 == 0 then list[i] = x:narrow(1, 2, len) else list[i] = x:narrow(1, 1, len):clone() end
  end
  return list
end

-- the device copies, keeping every fifth one an unaligned view as on the cpu
local function dev_list(list)
  local out = {}
  for i, x in ipairs(list) do
    if i % 5 == 0 then
      local buf = efla.zeros({ x:numel() + 1 }, { dtype = x:dtype(), device = DEVICE })
      out[i] = buf:narrow(1, 2, x:numel())
      out[i]:copy_(x:to(DEVICE))
    else
      out[i] = x:to(DEVICE)
    end
  end
  return out
end

test('sum_squares: 300 mixed tensors (3 launches) like the cpu, the same bits every call', function()
  local list = cpu_list(300, 1)
  local want = fe.sum_squares(list):item()
  local d = dev_list(list)
  local s = fe.sum_squares(d)
  assert(same_device(s:device()), 'sum on ' .. s:device()); eq(s:dtype(), 'float64'); eq(s:dim(), 0)
  local got = s:item()
  near(got, want, 1e-12 * want)
  for _ = 1, 3 do eq(fe.sum_squares(d):item(), got, 'a repeated call') end
  -- one tensor, all-empty lists, the empty list
  eq(list[1]:numel(), 70001); eq(list[8]:numel(), 0); eq(list[16]:numel(), 0)
  local one = fe.sum_squares({ list[1] }):item()
  near(fe.sum_squares({ d[1] }):item(), one, 1e-12 * one)
  eq(fe.sum_squares({ d[8], d[16] }):item(), 0)
  eq(fe.sum_squares({}):item(), 0)
end)

for _, dt in ipairs(DTYPES) do
  test('sum_squares: one big ' .. dt .. ' tensor (1M + 3 elements)', function()
    efla.manual_seed(2)
    local x = efla.randn({ 2 ^ 20 + 3 }):to(dt)
    local want = fe.sum_squares({ x }):item()
    near(fe.sum_squares({ x:to(DEVICE) }):item(), want, 1e-12 * want)
  end)
end

test('scale_: 300 mixed tensors bit for bit like the cpu, by a device-side coef', function()
  local list = cpu_list(300, 3)
  local d = dev_list(list)
  local coef = -0.6180339887
  fe.scale_(list, coef)
  fe.scale_(d, efla.full({}, coef, { dtype = 'float64', device = DEVICE }))
  for i, x in ipairs(list) do
    if x:numel() > 0 then
      ok(d[i]:cpu():double():eq(x:double()):all(), 'tensor ' .. i .. ' (' .. x:dtype() .. ', ' .. x:numel() .. ')')
    end
  end
end)

if DEVICE ~= 'cpu' then
  test('clear errors: tensors on two devices, coef on another device', function()
    local a = efla.randn({ 3 }):to(DEVICE)
    local b = efla.randn({ 3 })
    raises(function() fe.sum_squares({ a, b }) end, 'tensor 1 is on cpu but tensor 0 is on cuda')
    raises(function() fe.scale_({ a, b }, 2) end, 'on one device')
    raises(function() fe.scale_({ a }, efla.full({}, 2, { dtype = 'float64' })) end, 'coef is on cpu')
  end)
end

test('clip_grad_norm_: an LM on ' .. DEVICE .. ' like the same LM on the cpu (float32, bfloat16)', function()
  for _, dt in ipairs({ 'float32', 'bfloat16' }) do
    efla.manual_seed(5)
    local m = efla.nn.CausalLM { vocab_size = 17, d_model = 32, n_layers = 2, n_heads = 2 }
    m:to(dt)
    local ref = {}
    for i, p in ipairs(m:parameters()) do
      p.grad = (efla.randn(p:size()) * 1e-2):to(dt)
      ref[i] = p.grad:clone()
    end
    local want = optim.clip_grad_norm_(m, 0.05):item()
    m:to(DEVICE)
    for i, p in ipairs(m:parameters()) do p.grad = ref[i]:to(DEVICE):clone() end
    local n = optim.clip_grad_norm_(m, 0.05)
    assert(same_device(n:device()), 'norm on ' .. n:device())
    near(n:item(), want, 1e-12 * want, dt .. ' norm')
    local coef = 0.05 / (want + 1e-6)
    for i, p in ipairs(m:parameters()) do
      local exp = ref[i]:double() * coef
      local tol = (dt == 'bfloat16' and 2 ^ -8 or 1e-7) * exp:abs():max():item() + 1e-30
      near((p.grad:cpu():double() - exp):abs():max():item(), 0, tol, dt .. ' gradient ' .. i)
    end
  end
end)

-- two AdamW steps of 150 mixed parameters (three launches of 64) with foreach.adamw_ and with
-- adamw_step_ per tensor on the device: the same bits (fa_adamw_kernel repeats adamw_kernel's
-- arithmetic); bfloat16 parameters with float32 moments, the others with their own dtype
test('adamw_: 150 mixed parameters bit for bit like adamw_step_ per tensor, on ' .. DEVICE, function()
  local P, G1, G2 = cpu_list(150, 11), cpu_list(150, 12), cpu_list(150, 13)
  local start = {}
  for i, x in ipairs(P) do start[i] = x:double():clone() end   -- (on the cpu, dev_list may hand back P itself)
  local sets = {}
  for k = 1, 2 do
    local s = { p = dev_list(P), m = {}, v = {} }
    for i, y in ipairs(s.p) do if i % 5 ~= 0 then s.p[i] = y:clone() end end   -- two sets, never P itself
    for i, x in ipairs(P) do
      local o = { dtype = x:dtype() == 'bfloat16' and 'float32' or x:dtype(), device = DEVICE }
      s.m[i], s.v[i] = efla.zeros(x:size(), o), efla.zeros(x:size(), o)
    end
    sets[k] = s
  end
  for step, G in ipairs({ dev_list(G1), dev_list(G2) }) do
    local a, b = sets[1], sets[2]
    fe.adamw_(a.p, G, a.m, a.v, 1e-2, 0.9, 0.999, 1e-8, step == 1 and 0.1 or 0, step)
    for i = 1, #P do efla.adamw_step_(b.p[i], G[i], b.m[i], b.v[i], 1e-2, 0.9, 0.999, 1e-8, step == 1 and 0.1 or 0, step) end
  end
  for i, x in ipairs(P) do
    if x:numel() > 0 then
      local what = 'tensor ' .. i .. ' (' .. x:dtype() .. ', ' .. x:numel() .. ')'
      ok(sets[1].p[i]:cpu():double():eq(sets[2].p[i]:cpu():double()):all(), what .. ' p')
      ok(sets[1].v[i]:cpu():double():eq(sets[2].v[i]:cpu():double()):all(), what .. ' v')
      if x:numel() > 100 then ok(sets[1].p[i]:cpu():double():ne(start[i]):any(), what .. ' moved') end
    end
  end
end)

test('AdamW: an LM on ' .. DEVICE .. ', the multi-tensor step like one kernel per parameter (float32, bfloat16)', function()
  for _, dt in ipairs({ 'float32', 'bfloat16' }) do
    local res = {}
    for k, fe_on in ipairs({ true, false }) do
      efla.manual_seed(9)
      local m = efla.nn.CausalLM { vocab_size = 17, d_model = 32, n_layers = 2, n_heads = 2 }
      m:to(dt); m:to(DEVICE)
      local opt = optim.AdamW(m, { lr = 1e-2, weight_decay = 0.1, foreach = fe_on })
      for s = 1, 2 do
        efla.manual_seed(20 + s)
        for _, p in ipairs(m:parameters()) do p.grad = (efla.randn(p:size()) * 1e-2):to(dt):to(DEVICE) end
        opt:step()
      end
      res[k] = m:parameters()
    end
    for i, p in ipairs(res[1]) do
      ok(p:cpu():double():eq(res[2][i]:cpu():double()):all(), dt .. ' parameter ' .. i)
    end
  end
end)

t.done()

-- test_attention_cuda.lua: the CUDA softmax-attention kernels (cuda/attention.cu) against the
-- CPU kernels in float64 (which test_attention.lua checks against an explicit-mask reference):
-- forward and all three gradients, causal / window / full, a KV cache (fewer queries than
-- keys), every head-size class (16, 64, 128, 200), float32 and bfloat16; then a hybrid LM on
-- the GPU streaming token by token against its parallel forward. Skips (passes) without a GPU:
--   bundle/bin/efla tests/lua/test_attention_cuda.lua
local efla = require 'efla'
local t = dofile('tests/lua/testlib.lua')

if not efla.cuda.is_available() then
  print('skipped: no CUDA device (run this on the GPU machine)')
  t.done()
  return
end

local function rel(a, b)
  local d = (a:double():cpu() - b:double():cpu()):abs():max():item()
  return d / math.max(1e-30, b:double():cpu():abs():max():item())
end

-- o and the gradients of sum(o * w) on the device in dtype, and the CPU float64 ones
local function run(shape_q, shape_k, dv, opts, dtype)
  efla.manual_seed(7)
  local q = efla.randn(shape_q, { dtype = 'float64' })
  local k = efla.randn(shape_k, { dtype = 'float64' })
  local vs = { shape_k[1], shape_k[2], shape_k[3], dv }
  local v = efla.randn(vs, { dtype = 'float64' })
  local w = efla.randn({ shape_q[1], shape_q[2], shape_q[3], dv }, { dtype = 'float64' })
  -- the reference reads the inputs the device reads (bfloat16 rounds them)
  local function go(dev, dt, round)
    local x = {}
    for i, a in ipairs({ q, k, v }) do
      local c = a:to(round or dt):to(dt)
      if dev ~= 'cpu' then c = c:to(dev) end
      x[i] = c:detach():requires_grad_()
    end
    local ww = w:to(round or dt):to(dt)
    if dev ~= 'cpu' then ww = ww:to(dev) end
    local o = efla.ops.attention(x[1], x[2], x[3], opts)
    ;(o:float() * ww:float()):sum():backward()
    return { o, x[1].grad, x[2].grad, x[3].grad }
  end
  return go('cuda', dtype), go('cpu', 'float64', dtype)
end

local configs = {
  { 'causal d16', { 2, 37, 3, 16 }, { 2, 37, 3, 16 }, 16, {} },
  { 'window 5 d64', { 2, 70, 2, 64 }, { 2, 70, 2, 64 }, 64, { window = 5 } },
  { 'full d128', { 1, 33, 2, 128 }, { 1, 33, 2, 128 }, 128, { causal = false } },
  { 'KV cache 3 of 40, d64/dv32', { 2, 3, 2, 64 }, { 2, 40, 2, 64 }, 32, {} },
  { 'causal d200, T 300', { 1, 300, 1, 200 }, { 1, 300, 1, 200 }, 200, {} },
}
local names = { 'o', 'dq', 'dk', 'dv' }
for _, c in ipairs(configs) do
  for _, dt in ipairs({ 'float32', 'bfloat16' }) do
    t.test(string.format('cuda attention %s %s: forward and gradients equal the cpu float64', c[1], dt), function()
      local got, want = run(c[2], c[3], c[4], c[5], dt)
      local tol = dt == 'float32' and 2e-5 or 2e-2
      for i = 1, 4 do
        local r = rel(got[i], want[i])
        t.ok(r < tol, string.format('%s: relative error %.3g (tolerance %g)', names[i], r, tol))
      end
    end)
  end
end

t.test('cuda: float64 is refused with a message naming the cpu', function()
  local x = efla.randn({ 1, 2, 1, 4 }, { dtype = 'float64' }):to('cuda')
  local ok, err = pcall(efla.ops.attention, x, x, x)
  t.ok(not ok and tostring(err):find('float32 and bfloat16'), tostring(err))
end)

t.test('cuda: a hybrid LM (EAW) in bfloat16 streams token by token like its parallel forward', function()
  efla.manual_seed(8)
  local m = efla.nn.build { type = 'CausalLM', vocab_size = 64, d_model = 64, n_heads = 2, layers = 'EAW', window = 4 }
  m:to('cuda'):set_compute_dtype('bfloat16')
  m:evaluate()
  local ids = efla.randint(1, 65, { 2, 20 }):to('cuda')
  efla.no_grad(function()
    local full = m:forward(ids):float()
    local states, worst = nil, 0
    for i = 1, 20 do
      local l
      l, states = m:forward(ids:narrow(2, i, 1):contiguous(), states)
      worst = math.max(worst, (l:float():select(2, 1) - full:select(2, i)):abs():max():item())
    end
    t.ok(worst < 0.1, 'bfloat16 streamed logits differ by ' .. worst)
  end)
  -- and it trains: one step lowers the loss on a repeated batch
  m:train()
  local opt = efla.optim.AdamW(m:parameters(), { lr = 3e-3 })
  local x, y = ids:narrow(2, 1, 19):contiguous(), ids:narrow(2, 2, 19):contiguous()
  local first, last
  for _ = 1, 5 do
    opt:zero_grad()
    local loss = m:loss(x, y)
    loss:backward()
    opt:step()
    first = first or loss:item()
    last = loss:item()
  end
  t.ok(last < first, string.format('loss %.4f -> %.4f', first, last))
end)

t.done()

-- bench/delta_rule_sanitize.lua: small calls of every CUDA delta-rule path (tensor-core
-- chunked kernels at each chunk size, dk != dv, packed sequences, recomputed states, bfloat16
-- and float32, the scan fallback, the single-token step), forward and backward, for
-- compute-sanitizer:
--
--   compute-sanitizer --tool memcheck  bundle/bin/efla bench/delta_rule_sanitize.lua
--   compute-sanitizer --tool racecheck bundle/bin/efla bench/delta_rule_sanitize.lua
-- Exits non-zero if a result is not finite (the sanitizer reports the memory errors).
local efla = require 'efla'
local dev = 'cuda'

local function run(B, T, H, dk, dv, opts, cu)
  local o = { order = opts.order or 'exact', chunk_size = opts.chunk, recompute_states = opts.recompute }
  local dt = opts.dtype or 'bfloat16'
  local q = efla.randn(B, T, H, dk, { device = dev, dtype = dt, requires_grad = true })
  local k = (efla.randn(B, T, H, dk, { device = dev, dtype = dt }) * (1 / math.sqrt(dk))):detach():requires_grad_(true)
  local v = efla.randn(B, T, H, dv, { device = dev, dtype = dt, requires_grad = true })
  local beta = efla.rand(B, T, H, { device = dev, dtype = dt, requires_grad = true })
  if cu then o.cu_seqlens = efla.tensor(cu, { dtype = 'int64', device = dev }) end
  local out = efla.ops.delta_rule(q, k, v, beta, o)
  out:float():sum():backward()
  for _, x in ipairs({ out, q.grad, k.grad, v.grad, beta.grad }) do
    local s = x:float():abs():sum():item()
    assert(s == s and s < math.huge, 'non-finite result')
  end
end

run(2, 100, 2, 64, 64, { chunk = 64 })
run(1, 77, 2, 128, 128, { chunk = 64, order = 1 })
run(2, 45, 1, 64, 128, { chunk = 32, order = 2 })
run(1, 40, 2, 128, 64, { chunk = 16 })
run(1, 130, 2, 64, 64, { chunk = 64, recompute = true }, { 0, 13, 41, 130 })
run(1, 90, 1, 64, 64, { chunk = 128 })   -- scan fallback
-- float32 on the tensor cores (three-TF32 products; d = 128 runs at chunk 32)
run(1, 100, 2, 128, 128, { chunk = 64, dtype = 'float32' })
run(1, 130, 2, 64, 64, { chunk = 64, recompute = true, dtype = 'float32' }, { 0, 13, 41, 130 })
run(2, 45, 1, 32, 64, { chunk = 16, order = 2, dtype = 'float32' })
local st = efla.zeros(1, 2, 64, 64, { device = dev })
local o1, s1 = efla.ops.delta_rule_step(efla.randn(1, 2, 64, { device = dev, dtype = 'bfloat16' }),
  efla.randn(1, 2, 64, { device = dev, dtype = 'bfloat16' }) * 0.125, efla.randn(1, 2, 64, { device = dev, dtype = 'bfloat16' }),
  efla.rand(1, 2, { device = dev, dtype = 'bfloat16' }), st)
efla.synchronize(dev)
print('delta_rule_sanitize: every path ran')

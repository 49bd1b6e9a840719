-- bench/gated_bwd_cpu.lua: CPU forward and backward time of the gated delta rule (log_decay,
-- docs/MATH.md §6), recurrent vs chunked, with the ungated operator beside it for scale.
--
--   efla bench/gated_bwd_cpu.lua                         B=2 T=512 H=2 d=64 float32
--   efla bench/gated_bwd_cpu.lua --T 2048 --dtype float64 --threads 1
--
-- Prints the median over --steps calls (after 3 untimed ones) of the forward and of the
-- backward alone, in milliseconds.
local efla = require 'efla'
local wall = require('efla.progress').wall

local opts = efla.args.parse(arg, {
  name = 'bench/gated_bwd_cpu.lua',
  description = 'CPU forward/backward time of the gated delta rule, recurrent vs chunked.',
  { '--B', type = 'number', default = 2, help = 'batch' },
  { '--T', type = 'number', default = 512, help = 'tokens per sequence' },
  { '--H', type = 'number', default = 2, help = 'heads' },
  { '--d', type = 'number', default = 64, help = 'key and value size per head' },
  { '--chunk', type = 'number', default = 64, help = 'chunk size (16, 32, 64, 128)' },
  { '--dtype', default = 'float32', help = 'float32 or float64' },
  { '--steps', type = 'number', default = 15, help = 'timed calls per row' },
  { '--threads', type = 'number', default = 0, help = 'OpenMP threads (0: keep the default)' },
  { '--seed', type = 'number', default = 1, help = 'random seed' },
})
if opts.threads > 0 then efla.set_num_threads(opts.threads) end

local function median(t)
  table.sort(t)
  return t[math.floor((#t + 1) / 2)]
end

efla.manual_seed(opts.seed)
local B, T, H, d, dt = opts.B, opts.T, opts.H, opts.d, { dtype = opts.dtype }
local q, k, v = efla.randn(B, T, H, d, dt), efla.randn(B, T, H, d, dt), efla.randn(B, T, H, d, dt)
k = k / (k * k):sum(4, true):sqrt()                       -- unit keys, as the layers feed them
local beta, g = efla.rand(B, T, H, dt) * 0.9 + 0.05, efla.rand(B, T, H, dt) * -0.5
local W = efla.randn(B, T, H, d, dt)

print(string.format('B %d T %d H %d d %d %s chunk %d, threads %d', B, T, H, d, opts.dtype, opts.chunk,
  efla.num_threads()))
print('| operator | algorithm | forward ms | backward ms |')
print('|---|---|---|---|')
for _, gated in ipairs({ true, false }) do
  for _, algo in ipairs({ 'recurrent', 'chunked' }) do
    local fwd, bwd = {}, {}
    for step = 1, opts.steps + 3 do
      local ql, kl, vl, bl = q:detach():requires_grad_(), k:detach():requires_grad_(), v:detach():requires_grad_(),
        beta:detach():requires_grad_()
      local gl = gated and g:detach():requires_grad_() or nil
      local t0 = wall()
      local o = efla.ops.delta_rule(ql, kl, vl, bl, { log_decay = gl, algorithm = algo, chunk_size = opts.chunk,
        output_final_state = false })
      local loss = (o * W):sum()
      local t1 = wall()
      loss:backward()
      local t2 = wall()
      if step > 3 then fwd[#fwd + 1] = (t1 - t0) * 1e3; bwd[#bwd + 1] = (t2 - t1) * 1e3 end
      collectgarbage()
    end
    print(string.format('| %s | %s | %.2f | %.2f |', gated and 'gated' or 'ungated', algo, median(fwd), median(bwd)))
  end
end

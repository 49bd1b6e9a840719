-- bench/dp_step.lua: data-parallel training-step throughput under efla-run: the byte-level LM
-- of bench/lm_step_gpu.lua (8 layers x 512, 4 heads, vocab 256, 16 x 2048 tokens per GPU,
-- bfloat16 compute, DeltaNet order 1), gradients averaged by efla.distributed.DataParallel
-- (bucketed NCCL all-reduces launched during the backward), then the gradient buckets'
-- all-reduce alone, as NCCL's bus bandwidth (algbw x 2(n-1)/n, the figure nccl-tests prints).
-- Rank 0 prints one line: world, ms/step, global tokens/s, bucket bytes, all-reduce ms, busbw.
--
--   efla-run --nproc-per-node 4 bench/dp_step.lua            (bench/dp_scaling.sh runs 1..N)
--   efla-run --nproc-per-node 2 bench/dp_step.lua --device cpu --model tiny --steps 2   (checks the script)
local efla = require 'efla'
local nn, optim = efla.nn, efla.optim
local dist = require 'efla.distributed'
local wall = require('efla.progress').wall

local opts = efla.args.parse(arg, {
  name = 'bench/dp_step.lua',
  description = 'Data-parallel LM training-step throughput and gradient all-reduce bandwidth (run under efla-run).',
  { '--model', default = 'byte', choices = { 'byte', 'tiny' }, help = 'byte: bench/lm_step_gpu.lua\'s byte model; tiny: a smoke test' },
  { '--device', default = 'cuda', help = 'cuda (each rank its cuda:LOCAL_RANK, NCCL) or cpu (the TCP transport)' },
  { '--compute', default = 'bfloat16', choices = { 'bfloat16', 'float32' }, help = 'activation/matmul dtype' },
  { '--batch', type = 'number', help = 'sequences per step and GPU (default 16; tiny 2)' },
  { '--seq', type = 'number', help = 'tokens per sequence (default 2048; tiny 64)' },
  { '--steps', type = 'number', default = 10, help = 'timed steps' },
  { '--warmup', type = 'number', default = 3, help = 'untimed steps first' },
  { '--bucket-mb', type = 'number', default = 25, help = 'gradient bucket size in MiB' },
  { '--reduces', type = 'number', default = 20, help = 'timed rounds of the bucket all-reduces' },
  { '--header', type = 'boolean', help = 'print the column names first' },
})

local MODELS = {
  byte = { vocab_size = 256, d_model = 512, n_layers = 8, n_heads = 4, batch = 16, seq = 2048 },
  tiny = { vocab_size = 256, d_model = 64, n_layers = 2, n_heads = 2, batch = 2, seq = 64 },
}
local spec = MODELS[opts.model]
local B, T = opts.batch or spec.batch, opts.seq or spec.seq
local cuda = opts.device:match('^cuda') ~= nil
local pg = dist.auto { backend = cuda and 'nccl' or 'tcp' } or dist.init { backend = cuda and 'nccl' or 'tcp', rank = 0, world_size = 1 }
local dev = pg.device
local function sync()
  if cuda then efla.cuda.synchronize() end
end

efla.manual_seed(1)
local model = nn.CausalLM {
  vocab_size = spec.vocab_size, d_model = spec.d_model, n_layers = spec.n_layers, n_heads = spec.n_heads,
  order = 1, key_norm = 'l2', query_norm = 'l2', short_conv = true, output_norm = true, output_gate = false,
  mlp_hidden = 256 * math.ceil(math.floor(spec.d_model * 4 * 2 / 3) / 256),
}
model:to(dev)
if cuda and opts.compute ~= 'float32' then model:set_compute_dtype(opts.compute) end
local dp = dist.DataParallel(model, { bucket_mb = opts.bucket_mb })
local opt = optim.AdamW(optim.param_groups(model, { weight_decay = 0.1 }), { lr = 3e-4 })
efla.manual_seed(100 + pg.rank)   -- each rank its own batch
local tok = efla.randint(1, spec.vocab_size + 1, { B, T }):to(dev)
local tgt = efla.randint(1, spec.vocab_size + 1, { B, T }):to(dev)

local function step()
  opt:zero_grad()
  local loss = model:loss(tok, tgt)
  loss:backward()
  dp:finish()
  optim.clip_grad_norm_(model, 1.0)
  opt:step()
  return loss
end
for _ = 1, opts.warmup do step() end
sync(); pg:barrier()
local t0 = wall()
local loss
for _ = 1, opts.steps do loss = step() end
sync(); pg:barrier()
local dt = (wall() - t0) / opts.steps

-- the buckets' all-reduce alone
local bytes = 0
for _, b in ipairs(dp.buckets) do bytes = bytes + b.bytes end
for _, b in ipairs(dp.buckets) do pg:all_reduce(b.flat, 'avg') end
sync(); pg:barrier()
local r0 = wall()
for _ = 1, opts.reduces do
  for _, b in ipairs(dp.buckets) do pg:all_reduce(b.flat, 'avg', { async = true }) end
end
pg:wait(); sync()
local rt = (wall() - r0) / opts.reduces
local W = pg.world_size
local busbw = W > 1 and bytes / rt * 2 * (W - 1) / W or 0

if pg.rank == 0 then
  if opts.header then
    print(string.format('%-5s %-6s %8s %12s %10s %8s %9s %10s  %s', 'gpus', 'model', 'ms/step', 'tokens/s', 'grad MiB',
      'buckets', 'allred ms', 'busbw GB/s', 'device'))
  end
  print(string.format('%-5d %-6s %8.1f %12.0f %10.1f %8d %9.2f %10.1f  %s', W, opts.model, dt * 1e3, W * B * T / dt,
    bytes / 2 ^ 20, #dp.buckets, rt * 1e3, busbw / 1e9,
    cuda and efla.cuda.properties().name or 'cpu') .. string.format('  (loss %.3f)', loss:item()))
end
pg:barrier()
pg:destroy()

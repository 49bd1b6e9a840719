-- bench/smnist_step_efla.lua: one training step of the sequential-MNIST model on the GPU, as
-- lua/efla/tasks/smnist.lua trains it: the SequenceClassifier of S.model_config (d_model 64,
-- T = 784, one head, chunk 64), cross-entropy, backward, global-norm clip 1.0, AdamW
-- (weight decay 0.01, groups as S.param_groups), loss:item() (the step's synchronisation),
-- in the compute dtype the recipe resolves (--compute, tasks/precision.lua: auto = mixed
-- precision, bfloat16 compute with float32 master weights, on a GPU; float32 on the CPU).
--
--   efla bench/smnist_step_efla.lua                        (H200: batch 128, both methods)
--   efla bench/smnist_step_efla.lua --device cpu --batch 8 --steps 3     (a check here)
--
-- Input: random pixels in [0, 1] [batch, 784] and random labels, fixed for all steps (the
-- speed does not depend on the values). Two numbers per method:
--   step ms   median over --steps steps, each timed alone: the step, a synchronisation and
--             a full Lua garbage collection (which frees the step's tensors, so the caching
--             allocator reuses its blocks; a loop that keeps memory bounded pays for it)
--   loop ms   a plain loop of as many steps without explicit collection, total / steps
--             (what a training loop such as S.train does)
-- RESULT efla_ms / deltanet_ms, the number bench/gpu_bench.sh compares with PyTorch, is the
-- slower of the two.
local efla = require 'efla'
local S = require 'efla.tasks.smnist'
local precision = require 'efla.tasks.precision'
local wall = require('efla.progress').wall

local opts = efla.args.parse(arg, {
  name = 'bench/smnist_step_efla.lua',
  description = 'sMNIST training step time of efla (EFLA and DeltaNet).',
  { '--device', default = 'cuda', help = 'cuda[:N] or cpu (cpu only to check the script)' },
  { '--batch', type = 'number', default = 128, help = 'batch size' },
  { '--methods', default = 'efla,deltanet', help = 'comma-separated: efla (order exact), deltanet (order 1)' },
  { '--warmup', type = 'number', default = 3, help = 'untimed steps first' },
  { '--steps', type = 'number', default = 20, help = 'timed steps' },
  { '--budget', type = 'number', default = 20, help = 'seconds at most per method for the timed steps (after 3)' },
  precision.option(),   -- --compute auto|bfloat16|float32, as the recipe takes it
})
local dev = S.device_of(opts.device)
local compute = precision.resolve(opts.compute, dev)
local T = 784
local t_start = wall()

local function sync() efla.synchronize(dev) end

-- rows are printed as they are measured, so that a run cut short still shows them
local results = {}
local function row(r) print(r); io.stdout:flush() end
local NAMES = { efla = 'EFLA', deltanet = 'DeltaNet' }
local function clean(msg) return (tostring(msg):gsub('[\n|]', ' '):sub(1, 200)) end

local function run(method)
  local cfg = S.model_config(method)
  efla.manual_seed(0)
  local model = efla.nn.build(cfg)
  if dev ~= 'cpu' then model:to(dev) end
  precision.apply(model, compute)   -- as the recipe does, before the optimizer sees the parameters
  model:train()
  local optimizer = efla.optim.AdamW(S.param_groups(model, 0.01), { lr = S.METHODS[method].lr })
  local x = efla.rand(opts.batch, T, { device = dev })
  local y = efla.randint(1, 11, opts.batch, { device = dev })

  local last_loss
  local function step()
    local logits = model:forward(x)
    local loss = efla.nn.functional.cross_entropy(logits, y)
    optimizer:zero_grad()
    loss:backward()
    efla.optim.clip_grad_norm(model:parameters(), 1.0)
    optimizer:step()
    last_loss = loss:item()
  end

  for _ = 1, opts.warmup do step() end
  sync(); collectgarbage('collect')
  local times, start = {}, wall()
  for _ = 1, opts.steps do
    local t0 = wall()
    step(); sync()
    collectgarbage('collect')   -- inside the timing: a loop that keeps memory bounded pays it
    times[#times + 1] = wall() - t0
    if #times >= 3 and wall() - start > opts.budget then break end
  end
  table.sort(times)
  local med, best = times[math.floor((#times + 1) / 2)], times[1]
  -- the plain loop, as a training loop runs it
  local n = #times
  local t0 = wall()
  for _ = 1, n do step() end
  sync()
  local loop = (wall() - t0) / n
  collectgarbage('collect')
  -- the number compared with PyTorch: the slower of the two ways of running the loop
  results[method .. '_ms'] = math.max(med, loop) * 1e3
  results[method .. '_step_ms'] = med * 1e3
  results[method .. '_loop_ms'] = loop * 1e3
  row(string.format('| sMNIST train step, efla, %s (order %s, key norm %s) | batch %d, T %d, d_model %d, %s, compute %s | %.2f (%.2f) | %.3g k tokens/s | loop %.2f ms/step; median of %d; loss %.3f |',
    NAMES[method] or method, tostring(cfg.order), cfg.key_norm, opts.batch, T, cfg.d_model, dev, compute, med * 1e3, best * 1e3,
    opts.batch * T / med / 1e3, loop * 1e3, n, last_loss))
end

print(string.format('\n### sMNIST training step, efla (%s)\n', dev))
print('| measurement | configuration | ms/step (best) | throughput | note |')
print('|---|---|---|---|---|')
for method in opts.methods:gmatch('[^,%s]+') do
  local ok, err = pcall(run, method)
  if not ok then
    row(string.format('| sMNIST train step, efla, %s | batch %d, %s | n/a | - | failed: %s |', NAMES[method] or method, opts.batch, dev, clean(err)))
  end
  collectgarbage('collect')
end
print(string.format('\n(efla sMNIST benchmark took %.1f s)', wall() - t_start))
for _, k in ipairs({ 'efla_ms', 'efla_step_ms', 'efla_loop_ms', 'deltanet_ms', 'deltanet_step_ms', 'deltanet_loop_ms' }) do
  if results[k] then print(string.format('RESULT %s=%.4f', k, results[k])) end
end

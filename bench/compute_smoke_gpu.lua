-- bench/compute_smoke_gpu.lua: the training recipes' --compute on a GPU, float32 against auto
-- (mixed precision): both sMNIST models and methods through efla.tasks.smnist.train, three MAD
-- tasks, and recipes/smnist.lua end to end, each printing the dtype it resolved to and the one
-- its checkpoint or results.json recorded, with the loss and accuracy it reached. The sMNIST
-- data are synthetic (a brightness pattern per class), so the script needs no data files.
--
--   bundle/bin/efla bench/compute_smoke_gpu.lua            (GPU machine, from the repository root)
local efla = require 'efla'
local S = require 'efla.tasks.smnist'
local M = require 'efla.eval.mad'
local checkpoint = require 'efla.checkpoint'
print('cuda available', efla.cuda.is_available(), 'supports bf16 delta_rule', efla.supports('cuda', 'delta_rule_fwd', 'bfloat16'))
-- learnable synthetic data: class c = brightness pattern
efla.manual_seed(7)
local function synth(n)
  local labels = efla.randint(1, 11, { n }):long()
  local base = efla.rand(10, 784)
  local idx = labels
  local images = base:index_select(1, idx) * 0.7 + efla.rand(n, 784) * 0.3
  return efla.data.Dataset { images = images:float():contiguous(), labels = labels, name = 'synth' }
end
S.load = function(_, split, n) return synth((n and n > 0) and n or (split == 'train' and 1024 or 256)) end
local ds = S.load('mnist', 'train', 1024)
local out = os.getenv('OUT') or '/tmp'
for _, arch in ipairs({ 'published', 'efla-variant' }) do
  for _, method in ipairs({ 'efla', 'deltanet' }) do
    local res = {}
    for _, compute in ipairs({ 'float32', 'auto' }) do
      local a = { epochs = 2, batch = 128, seed = 1, dataset = 'mnist', quiet = true, compute = compute, model = arch }
      local t0 = require('efla.progress').wall()
      local m, info = S.train(method, a, ds, { device = 'cuda', out_dir = '/tmp/smoke/' .. arch .. compute })
      efla.synchronize('cuda')
      local f = ds:float()
      local acc = S.accuracy(m, f.images, f.labels, { device = 'cuda' })
      res[compute] = info
      print(string.format('%-12s %-8s compute %-8s -> %-8s meta %-8s steps %d loss %.4f -> %.4f acc %.3f  %.2f s',
        arch, method, compute, info.compute, checkpoint.info(info.checkpoint).meta.compute, info.steps,
        info.history[1], info.history[#info.history], acc, require('efla.progress').wall() - t0))
    end
  end
end
for _, task in ipairs({ 'in-context-recall', 'compression', 'selective-copying' }) do
  for _, compute in ipairs({ 'float32', 'auto' }) do
    local r = M.run(task, 'efla', { scale = 'cpu', seed = 1, device = 'cuda', compute = compute, quiet = true })
    print(string.format('mad %-20s compute %-8s -> %-8s acc %.3f loss %.4f %d steps %.1f s', task, compute, r.compute,
      r.accuracy, r.final_loss, r.steps, r.seconds))
  end
end
-- the smnist recipe end to end on synthetic data, auto and float32
for _, extra in ipairs({ {}, { '--compute', 'float32' } }) do
  arg = { [0] = 'recipes/smnist.lua', '--device', 'cuda', '--train-samples', '512', '--test-samples', '128', '--out', '/tmp/smoke/recipe', '--quiet' }
  for _, x in ipairs(extra) do arg[#arg + 1] = x end
  dofile('recipes/smnist.lua')
  local j = require('efla.json').decode(require('efla.data').read_file('/tmp/smoke/recipe/results.json'))
  print('recipe results.json compute', j.compute, j.runs[1].compute, j.runs[2].compute, 'args', j.args.compute)
end

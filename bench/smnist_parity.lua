-- bench/smnist_parity.lua: efla's half of the sMNIST parity check (bench/smnist_parity.sh
-- runs both halves). Builds the sMNIST model exactly as lua/efla/tasks/smnist.lua trains it
-- (same seed, config, AdamW groups, clip, data order), trains it for --steps steps and
-- writes one HDF5 file that bench/smnist_parity.py replays in PyTorch:
--
--   /model/...             the initial parameters (efla's state-dict names)
--   /parity/x              the batches, float32 [steps, batch, 784] (pixels in [0, 1])
--   /parity/y              their labels, int64 [steps, batch] (efla's 1-based classes)
--   /parity/params         float32 [steps, P]: every parameter after each step, flattened
--                          in state-dict order (meta.names, meta.shapes say how)
--   metrics.loss, metrics.grad_norm    per step (the norm before clipping)
--   meta                   method, model, lr, weight decay, clip, groups
--
--   efla bench/smnist_parity.lua --method efla --steps 20 --batch 32 --out /tmp/p.h5
local efla = require 'efla'
local S = require 'efla.tasks.smnist'
local checkpoint = require 'efla.checkpoint'

local args = efla.args.parse(arg, {
  name = 'bench/smnist_parity.lua',
  description = "Train efla's sMNIST model a few steps and write weights, batches and trajectory for PyTorch.",
  { '--method', default = 'efla', choices = { 'efla', 'deltanet' }, help = 'which method' },
  { '--model', default = S.DEFAULT_MODEL, choices = S.MODELS, help = 'architecture' },
  { '--steps', type = 'number', default = 20, help = 'training steps' },
  { '--batch', type = 'number', default = 32, help = 'batch size' },
  { '--train-samples', type = 'number', default = 0, help = 'training images (0 = all)' },
  { '--seed', type = 'number', default = 1, help = 'seed for the initialisation and the data order' },
  { '--lr', type = 'number', help = 'learning rate (default: the method\'s)' },
  { '--weight-decay', type = 'number', default = 0.01, help = 'AdamW weight decay' },
  { '--clip', type = 'number', default = 1.0, help = 'global gradient-norm clip' },
  { '--out', default = '/tmp/smnist_parity.h5', help = 'the HDF5 file to write' },
})

local lr = args.lr or S.METHODS[args.method].lr
local config = S.model_config(args.method, args)
efla.manual_seed(args.seed)
local model = efla.nn.build(config)
local groups = S.param_groups(model, args.weight_decay)
local optimizer = efla.optim.AdamW(groups, { lr = lr })
local train_ds = S.load('mnist', 'train', args.train_samples)
local loader = efla.data.DataLoader(train_ds, { batch_size = args.batch, shuffle = true, seed = args.seed,
  drop_last = true, flatten = true })
if loader:num_batches() < args.steps then
  error(string.format('%d training images give %d batches of %d, fewer than --steps %d', train_ds:size(),
    loader:num_batches(), args.batch, args.steps), 0)
end

local names, shapes, group_of = {}, {}, {}
for i, np in ipairs(model:named_parameters()) do
  names[i], shapes[i] = np[1], np[2]:size():totable()
end
for gi, g in ipairs(groups) do
  for _, n in ipairs(g.names) do group_of[n] = { group = gi, weight_decay = g.weight_decay } end
end
local init_state = {}
for k, v in pairs(model:state_dict()) do init_state[k] = v:clone() end

local function flat_params()
  local parts = {}
  for i, p in ipairs(model:parameters()) do parts[i] = p:detach():reshape(-1) end
  return efla.cat(parts, 1)
end

local xs, ys, snaps, losses, norms = {}, {}, {}, {}, {}
local step = 0
model:train()
for x, y in loader:iter() do
  if step >= args.steps then break end
  step = step + 1
  xs[step], ys[step] = x:clone():unsqueeze(1), y:clone():unsqueeze(1)
  local loss = efla.nn.functional.cross_entropy(model:forward(x), y)
  optimizer:zero_grad()
  loss:backward()
  norms[step] = efla.optim.clip_grad_norm(model:parameters(), args.clip)
  optimizer:step()
  losses[step] = loss:item()
  snaps[step] = flat_params():unsqueeze(1)
  print(string.format('efla step %3d  loss %.7f  grad norm %.6f', step, losses[step], norms[step]))
end

local wd_of = {}
for i, n in ipairs(names) do wd_of[i] = group_of[n].weight_decay end
checkpoint.save(args.out, {
  model = init_state,
  parity = { x = efla.cat(xs, 1), y = efla.cat(ys, 1), params = efla.cat(snaps, 1) },
  metrics = { loss = losses, grad_norm = norms },
  meta = { recipe = 'smnist_parity', config = config, method = args.method, model = args.model, lr = lr,
    weight_decay = args.weight_decay, clip = args.clip, seed = args.seed, batch = args.batch, steps = step,
    names = names, shapes = shapes, param_weight_decay = wd_of, threads = efla.num_threads() },
})
print('wrote ' .. args.out)

-- tasks/smnist.lua: the sequential-MNIST robustness study of the EFLA paper, as a library
-- that the recipes (smnist, ablations, sweeps, eval) share.
--
-- A one-layer sequence classifier reads a 28x28 image pixel by pixel (T = 784). After
-- training on clean images it is tested on corrupted ones: intensity scaled x1..x10,
-- additive Gaussian noise std 0..1, pixel dropout p 0..1 (the corruptions are seeded, so
-- every model sees the same corrupted images).
local efla = require 'efla'
local data = require 'efla.data'
local transforms = require 'efla.data.transforms'
local checkpoint = require 'efla.checkpoint'
local progress = require 'efla.progress'
local precision = require 'efla.tasks.precision'

local smnist = {}

--- What distinguishes the methods: integration order, key normalisation, default rate.
smnist.METHODS = {
  efla = { order = 'exact', key_norm = 'none', lr = 3e-3 },
  deltanet = { order = 1, key_norm = 'l2', lr = 1e-3 },
}

--- The corruption grids of the paper.
smnist.GRIDS = {
  scale = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 },
  noise = { 0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0 },
  dropout = { 0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0 },
}
smnist.KINDS = { 'scale', 'noise', 'dropout' }

local function device_of(name)
  if name == nil or name == 'cpu' then return 'cpu' end
  if name:match('^cuda') then
    if not efla.has_cuda() or efla.device_count('cuda') == 0 then
      error("--device " .. name .. ": no CUDA device is available (this efla was built without CUDA, or no GPU is visible); use --device cpu", 0)
    end
    return name
  end
  error("--device must be cpu or cuda[:N], got '" .. tostring(name) .. "'", 0)
end
smnist.device_of = device_of

--- load(dataset, split, n) -> Dataset of float32 images [N, 784] in [0, 1] and labels.
--- n (optional) takes the first n (class balanced for MNIST).
function smnist.load(dataset, split, n)
  local ds
  if dataset == 'mnist' then ds = data.mnist { split = split, flatten = true }
  elseif dataset == 'fashion' then ds = data.fashion { split = split, flatten = true }
  else error("dataset must be 'mnist' or 'fashion', got '" .. tostring(dataset) .. "'", 0) end
  if n and n > 0 and n < ds:size() then ds = ds:subset(n) end
  return ds
end

--- The sMNIST architectures (--model): 'published' (the paper's released model, the
--- default) and 'efla-variant' (efla's earlier rendition); nn.models.SEQUENCE_ARCHS says
--- how they differ, docs/RESULTS.md ("sMNIST parity") why it matters.
smnist.MODELS = { 'published', 'efla-variant' }
smnist.DEFAULT_MODEL = 'published'

--- model_config(method, opts) -> the SequenceClassifier config (plain table, stored in
--- checkpoints). opts: model ('published' or 'efla-variant'), order, key_norm, d_model, chunk_size.
function smnist.model_config(method, opts)
  local m = smnist.METHODS[method]
  if not m then error("method must be 'efla' or 'deltanet', got '" .. tostring(method) .. "'", 0) end
  opts = opts or {}
  local arch = opts.model or smnist.DEFAULT_MODEL
  if arch ~= 'published' and arch ~= 'efla-variant' then
    error("--model must be 'published' or 'efla-variant', got '" .. tostring(arch) .. "'", 0)
  end
  return {
    type = 'SequenceClassifier', arch = arch, input_dim = 1, seq_len = 784, d_model = opts.d_model or 64,
    n_classes = 10, n_heads = 1, order = opts.order or m.order, key_norm = opts.key_norm or m.key_norm,
    query_norm = arch == 'published' and 'none' or 'l2', beta_bias = -2, chunk_size = opts.chunk_size or 64,
    algorithm = 'auto',
  }
end

--- param_groups(model, weight_decay) -> AdamW groups. The published model decays every
--- parameter (torch.optim.AdamW(model.parameters())); efla-variant spares biases, norms and
--- other 1-d parameters (efla.optim.param_groups).
function smnist.param_groups(model, weight_decay)
  if model.config.arch == 'published' then
    local names = {}
    for i, np in ipairs(model:named_parameters()) do names[i] = np[1] end
    return { { params = model:parameters(), weight_decay = weight_decay, names = names } }
  end
  return efla.optim.param_groups(model, { weight_decay = weight_decay })
end

local function to_device(t, device)
  if device == 'cpu' then return t end
  return t:to(device)
end

--- accuracy(model, images [N, 784] float32, labels [N], {batch = 256, device}) -> fraction correct
function smnist.accuracy(model, images, labels, opts)
  opts = opts or {}
  local batch, device = opts.batch or 256, opts.device or 'cpu'
  local n, correct = images:size(1), 0
  model:evaluate()
  efla.no_grad(function()
    for start = 1, n, batch do
      local len = math.min(batch, n - start + 1)
      local x = to_device(images:narrow(1, start, len), device)
      local pred = model:forward(x):argmax(2):cpu()
      correct = correct + pred:eq(labels:narrow(1, start, len)):long():sum():item()
    end
  end)
  model:train()
  return correct / n
end

--- robustness(model, test_ds, {seed, batch, device, kinds, on_result, title, tty, out}) ->
--- results table: results[kind] = { {level, accuracy}, ... } for kind in scale, noise,
--- dropout. A progress bar (title, tty and out as in progress.new) counts the levels.
function smnist.robustness(model, ds, opts)
  opts = opts or {}
  local fds = ds:float()
  local images, labels = fds.images, fds.labels
  local results = {}
  local total = 0
  for _, kind in ipairs(opts.kinds or smnist.KINDS) do total = total + #smnist.GRIDS[kind] end
  local bar = progress.new { total = total, title = opts.title or 'robustness', every = 5, tty = opts.tty, out = opts.out }
  local done = 0
  for _, kind in ipairs(opts.kinds or smnist.KINDS) do
    results[kind] = {}
    for li, level in ipairs(smnist.GRIDS[kind]) do
      -- One seed per (kind, level), independent of the model: identical corruptions for all.
      local x = transforms.corrupt(images, kind, level, (opts.seed or 0) * 1000 + li)
      local acc = smnist.accuracy(model, x, labels, opts)
      results[kind][li] = { level, acc }
      if opts.on_result then opts.on_result(kind, level, acc) end
      done = done + 1
      bar:update(done, { { kind, string.format('%g', level) }, { 'acc', string.format('%.4f', acc) } })
    end
  end
  bar:finish()
  return results
end

--- progress_tty(args) -> whether the progress bars redraw one line: on a terminal unless
--- --quiet (which asks for plain log lines).
function smnist.progress_tty(args)
  return not args.quiet and progress.is_terminal()
end

--- train(method, args, train_ds, {out_dir, device, resume}) -> model, info.
--- args: lr, epochs, batch, seed, clip, weight_decay, save_every, order, key_norm, quiet,
--- compute (--compute: auto = mixed precision, bfloat16, on a GPU and float32 on the CPU;
--- bfloat16; float32. tasks/precision.lua). Checkpoints go to <out_dir>/<method>/ (the last 2
--- plus the final; meta.compute = the resolved compute dtype, also info.compute); a resume
--- path restores the model, the optimiser, the RNG, the data order and the step exactly, and
--- with compute auto (or none) keeps the compute dtype the checkpoint records.
function smnist.train(method, args, train_ds, opts)
  opts = opts or {}
  local device = device_of(opts.device)
  local lr = args.lr or smnist.METHODS[method].lr
  local config = smnist.model_config(method, args)
  efla.manual_seed(args.seed or 0)
  local model = efla.nn.build(config)
  if device ~= 'cpu' then model:to(device) end
  -- mixed precision (float32 master weights, bfloat16 compute) where args.compute says so
  local recorded = opts.resume and precision.recorded(opts.resume)
  local compute, compute_source = precision.resolve(args.compute, device, recorded)
  precision.apply(model, compute)
  local optimizer = efla.optim.AdamW(smnist.param_groups(model, args.weight_decay or 0.01), { lr = lr })
  local loader = efla.data.DataLoader(train_ds, { batch_size = args.batch or 128, shuffle = true,
    seed = args.seed or 0, drop_last = true, flatten = true })
  local per_epoch = loader:num_batches()
  if per_epoch == 0 then
    error(string.format('the training set has %d samples, fewer than one batch of %d; use more --train-samples or a smaller --batch',
      train_ds:size(), args.batch or 128), 0)
  end
  local total_steps = per_epoch * (args.epochs or 1)
  local history, step = {}, 0
  local manager = opts.out_dir and checkpoint.Manager { dir = opts.out_dir .. '/' .. method, keep_last = 2 }

  if opts.resume then
    local ck = checkpoint.load(opts.resume)
    checkpoint.check_resume(ck, { method = method, config = config, args = { dataset = args.dataset, batch = args.batch } },
      opts.resume, { chunk_size = true, algorithm = true })
    model:load_state_dict(ck.model)
    optimizer:load_state_dict(ck.optim)
    efla.set_rng_state(ck.rng)
    loader:set_state(ck.extra.loader)
    step, history = ck.step, ck.metrics.loss or {}
    io.stderr:write(string.format('resumed %s from %s at step %d\n', method, opts.resume, step))
    local note = precision.note(method, compute, compute_source, recorded)
    if note then io.stderr:write(note .. '\n') end
  end

  local function save(final)
    if not manager then return end
    return manager:save(step, {
      model = model:state_dict(), optim = optimizer:state_dict(), rng = efla.rng_state(),
      step = step, epoch = loader:state().epoch, metrics = { loss = history },
      extra = { loader = loader:state() },
      meta = { recipe = opts.recipe or 'smnist', config = config, args = args, method = method,
        dataset = args.dataset, compute = compute, final = final or false },
    })
  end

  local bar = progress.new { total = total_steps, title = method, every = args.log_every or 15, tty = smnist.progress_tty(args) }
  local tokens, t0 = 0, progress.wall()
  model:train()
  while step < total_steps do
    for x, y in loader:iter() do
      if step >= total_steps then break end
      x = to_device(x, device)
      local logits = model:forward(x)
      local loss = efla.nn.functional.cross_entropy(logits, to_device(y, device))
      optimizer:zero_grad()
      loss:backward()
      efla.optim.clip_grad_norm_(model:parameters(), args.clip or 1.0)
      optimizer:step()
      step = step + 1
      local l = loss:item()
      history[step] = l
      if l ~= l then error(string.format('%s: the loss became NaN at step %d (try a smaller --lr)', method, step), 0) end
      tokens = tokens + x:size(1) * 784
      local rate = tokens / math.max(1e-9, progress.wall() - t0)
      bar:update(step, { { 'loss', string.format('%.4f', l) }, { 'tok/s', string.format('%.3gk', rate / 1000) } })
      if args.save_every and args.save_every > 0 and step % args.save_every == 0 then save(false) end
    end
  end
  local seconds = bar:finish()
  local path = save(true)
  return model, { history = history, seconds = seconds, steps = step, checkpoint = path, lr = lr, config = config,
    compute = compute }
end

--- common_options: the options every sMNIST recipe takes (for efla.args.parse).
function smnist.common_options(defaults)
  defaults = defaults or {}
  return {
    { '--epochs', type = 'number', integer = true, min = 1, default = 1, help = 'training epochs per run' },
    { '--batch', type = 'number', integer = true, min = 1, default = 128, help = 'batch size' },
    { '--dataset', default = 'mnist', choices = { 'mnist', 'fashion' }, help = 'data set' },
    { '--train-samples', type = 'number', integer = true, min = 0, default = defaults.train_samples or 1024, help = 'training images (0 = all)' },
    { '--test-samples', type = 'number', integer = true, min = 0, default = defaults.test_samples or 256, help = 'test images (0 = all)' },
    { '--seed', type = 'number', integer = true, min = 0, default = 1, help = 'seed for initialisation, shuffling and corruptions' },
    { '--seeds', type = 'number', integer = true, min = 1, default = 1, help = 'run seeds seed .. seed+N-1; report mean and std' },
    { '--model', default = smnist.DEFAULT_MODEL, choices = smnist.MODELS, help = 'architecture: the published model or efla-variant' },
    { '--device', type = 'device', default = 'cpu', help = 'cpu or cuda[:N]' },
    precision.option(),   -- --compute auto|bfloat16|float32
    { '--weight-decay', type = 'number', min = 0, default = 0.01, help = 'AdamW weight decay' },
    { '--clip', type = 'number', above = 0, default = 1.0, help = 'global gradient-norm clip' },
    { '--quiet', type = 'boolean', help = 'plain log lines instead of a progress bar' },
  }
end

--- describe(args, train_ds, test_ds) -> 'mnist, 1024 train / 500 test images, seed 1': what
--- plot titles and summaries say a study ran on (either data set may be nil).
function smnist.describe(args, train_ds, test_ds)
  local parts = {}
  if train_ds then parts[#parts + 1] = train_ds:size() .. ' train' end
  if test_ds then parts[#parts + 1] = test_ds:size() .. ' test' end
  return string.format('%s, %s images, seed %s', args.dataset or '?', table.concat(parts, ' / '), tostring(args.seed))
end

--- run_variants(variants, args, out, opts) -> runs, per_seed. Each variant = {name =, method =,
--- overrides = {order =, key_norm =, lr =}}: trains it (checkpoints under out/<name>),
--- evaluates it (robustness unless opts.clean_only) and returns one run per variant. With
--- args.seeds = N > 1 it does so for seeds args.seed .. args.seed+N-1 (checkpoints under
--- out/seed-<s>/<name>) and returns the runs aggregated over the seeds (results = the mean;
--- std, per_seed, seeds: see tasks/seeds.lua) and the per-seed lists. Every run trains with
--- args.compute (--compute) and records the resolved dtype (run.compute, checkpoint meta.compute).
function smnist.run_variants(variants, args, out, opts)
  opts = opts or {}
  local seeds = require('efla.tasks.seeds').seed_list(args.seed or 1, args.seeds or 1)
  local train_ds = smnist.load(args.dataset, 'train', args.train_samples)
  local test_ds = smnist.load(args.dataset, 'test', args.test_samples)
  print(string.format('%s: %s, %d training and %d test images, %d runs per seed, device %s, compute %s, threads %d',
    opts.recipe or 'smnist', args.dataset, train_ds:size(), test_ds:size(), #variants, args.device or 'cpu',
    precision.compute_dtype(args.compute, args.device or 'cpu'), efla.num_threads()))
  local function one_seed(seed, dir)
    local runs = {}
    for _, v in ipairs(variants) do
      local a = {}
      for k, x in pairs(args) do a[k] = x end
      for k, x in pairs(v.overrides or {}) do a[k] = x end
      a.seed = seed
      local model, info = smnist.train(v.method, a, train_ds, { out_dir = dir .. '/' .. v.name, device = args.device, recipe = opts.recipe })
      local run = { name = v.name, method = v.method, history = info.history, lr = info.lr, config = info.config,
        compute = info.compute, checkpoint = info.checkpoint, seconds = info.seconds, about = smnist.describe(a, train_ds, test_ds) }
      if opts.clean_only then
        local f = test_ds:float()
        run.results = { scale = { { 1, smnist.accuracy(model, f.images, f.labels, { device = smnist.device_of(args.device) }) } } }
      else
        run.results = smnist.robustness(model, test_ds, { seed = seed, device = smnist.device_of(args.device),
          title = v.name .. ' eval', tty = smnist.progress_tty(args) })
      end
      run.final_loss = info.history[#info.history]
      print(string.format('%s (seed %d): clean accuracy %.4f, final loss %.4f, %.1f s', v.name, seed, run.results.scale[1][2],
        run.final_loss or 0 / 0, info.seconds))
      runs[#runs + 1] = run
    end
    return runs
  end
  if #seeds == 1 then return one_seed(seeds[1], out) end
  local per_seed = {}
  for i, seed in ipairs(seeds) do per_seed[i] = one_seed(seed, string.format('%s/seed-%d', out, seed)) end
  return require('efla.tasks.seeds').aggregate(per_seed, seeds), per_seed
end

return smnist

-- eval/mad.lua: train a small model from scratch on one MAD synthetic task and score it
-- (what recipes/mad.lua runs for each task and method).
--
-- Models follow MAD's backbones: the language model is efla's CausalLM with n_layers
-- blocks of (delta-rule mixer, SwiGLU), i.e. MAD's 4-layer [mixer, SwiGLU, mixer, SwiGLU]
-- at n_layers = 2; compression uses MAD's auto-encoder: the same blocks encode the
-- sequence, the last position's state plus a fixed sinusoidal position embedding goes
-- through a 2-layer GELU MLP, and a normed linear read-out predicts every input token.
-- Accuracy is the fraction of scored target positions (targets not -100) whose argmax is
-- right, over the whole test set (micro average).
local efla = require 'efla'
local class = require 'efla.class'
local Module = require 'efla.nn.module'
local layers = require 'efla.nn.layers'
local models = require 'efla.nn.models'
local mad = require 'efla.data.mad'
local progress = require 'efla.progress'
local precision = require 'efla.tasks.precision'

local M = {}

--- The delta-rule variants compared (as in the sMNIST study: EFLA's exact step without key
--- normalisation, DeltaNet's Euler step with L2-normalised keys).
M.METHODS = {
  efla = { order = 'exact', key_norm = 'none' },
  deltanet = { order = 1, key_norm = 'l2' },
}

--- Model sizes: 'paper' is MAD's (width 128, 4 layers = 2 mixer+SwiGLU blocks, 8 heads);
--- 'cpu' is a reduced one for a few-minute run on 2 cores.
M.SIZES = {
  paper = { d_model = 128, n_layers = 2, n_heads = 8 },
  cpu = { d_model = 32, n_layers = 2, n_heads = 2 },
}

--- Training settings: 'paper' is MAD's (AdamW, lr 5e-4, no weight decay, cosine to 1e-6
--- over 200 epochs of 12,800 examples, batch 128); 'cpu' trains far less on shorter
--- sequences (the task overrides below).
M.TRAIN = {
  paper = { batch = 128, epochs = 200, lr = 5e-4, min_lr = 1e-6, weight_decay = 0 },
  cpu = { batch = 32, epochs = 4, lr = 3e-3, min_lr = 1e-5, weight_decay = 0 },
}

--- Task overrides of the reduced CPU scale (the published vocabularies, shorter sequences
--- and fewer examples).
M.CPU_TASKS = {
  ['in-context-recall'] = { seq_len = 64, n_train = 1024, n_test = 256 },
  ['noisy-in-context-recall'] = { seq_len = 64, n_train = 1024, n_test = 256 },
  ['fuzzy-in-context-recall'] = { seq_len = 64, n_train = 1024, n_test = 256 },
  ['selective-copying'] = { seq_len = 64, num_tokens_to_copy = 8, n_train = 1024, n_test = 256 },
  ['compression'] = { seq_len = 16, n_train = 1024, n_test = 256 },
  ['memorization'] = { n_train = 256, n_test = 256, epochs = 32 },
}

--- M.task_config(task, scale, overrides) -> the generator config for a scale ('paper' | 'cpu').
function M.task_config(task, scale, overrides)
  local o = {}
  if scale == 'cpu' then for k, v in pairs(M.CPU_TASKS[task] or {}) do o[k] = v end end
  for k, v in pairs(overrides or {}) do o[k] = v end
  return mad.config(task, o)
end

-- ---- the auto-encoder for compression -----------------------------------------------------

local function sincos(L, d)
  local pe = efla.zeros({ L, d })
  local p = pe:data()
  local half = math.floor(d / 2)
  for pos = 0, L - 1 do
    for i = 0, half - 1 do
      local w = 1 / (10000 ^ (i / math.max(1, half - 1)))
      p[pos * d + i] = math.sin(pos * w)
      p[pos * d + half + i] = math.cos(pos * w)
    end
  end
  return pe
end

--- MadAutoEncoder{vocab_size, seq_len, d_model, n_layers, n_heads, order, key_norm, ...}
M.MadAutoEncoder = class.new('MadAutoEncoder', Module)
function M.MadAutoEncoder:__init(cfg)
  Module.__init(self)
  local c = {}
  for k, v in pairs(cfg) do c[k] = v end
  c.type = 'MadAutoEncoder'
  c.short_conv = c.short_conv ~= false
  c.output_norm = c.output_norm ~= false
  c.query_norm = c.query_norm or 'l2'
  c.beta_bias = c.beta_bias or 0
  self.config = c
  self:add_module('embed', layers.Embedding(c.vocab_size, c.d_model, { std = 0.02 }))
  local list = layers.ModuleList()
  for _ = 1, c.n_layers do list:add(models.Block(c)) end
  self:add_module('encoder', list)
  self:add_module('dec_norm1', layers.RMSNorm(c.d_model))
  self:add_module('dec_fc1', layers.Linear(c.d_model, c.d_model))
  self:add_module('dec_norm2', layers.RMSNorm(c.d_model))
  self:add_module('dec_fc2', layers.Linear(c.d_model, c.d_model))
  self:add_module('out_norm', layers.RMSNorm(c.d_model))
  self:add_module('unembed', layers.Linear(c.d_model, c.vocab_size))
  self._pos = {}
end

--- forward(tokens int64 [B, L]) -> logits [B, L, vocab_size]: every input token, decoded
--- from the encoder's last position.
function M.MadAutoEncoder:forward(tokens)
  local B, L = tokens:size(1), tokens:size(2)
  local h = self.embed:forward(tokens)
  for i = 1, self.config.n_layers do h = self.encoder[i]:forward(h) end
  local last = h:select(2, L):unsqueeze(2)                        -- [B, 1, d]
  local dev = tokens:device()
  local key = tostring(dev) .. ':' .. L
  if not self._pos[key] then self._pos[key] = sincos(L, self.config.d_model):to(dev) end
  local x = last + self._pos[key]:unsqueeze(1)                     -- [B, L, d]
  x = self.dec_fc1:forward(self.dec_norm1:forward(x)):gelu()
  x = self.dec_fc2:forward(self.dec_norm2:forward(x)):gelu()
  return self.unembed:forward(self.out_norm:forward(x))
end

--- M.chance(task, task_cfg) -> the accuracy of guessing uniformly among the tokens a
--- scored target can take (values for recall, data tokens for copying and compression).
function M.chance(task, c)
  if task == 'in-context-recall' or task == 'noisy-in-context-recall' then
    local ns = (c.multi_query and c.vocab_size or c.vocab_size - 1) - c.noise_vocab_size
    return 1 / (ns - math.floor(ns / 2))
  elseif task == 'fuzzy-in-context-recall' then
    local ns = (c.multi_query and c.vocab_size - 1 or c.vocab_size - 2) - c.noise_vocab_size
    return 1 / (ns - math.floor(ns / 2))
  elseif task == 'selective-copying' then return 1 / (c.vocab_size - 2)
  elseif task == 'compression' then return 1 / (c.vocab_size - 1 - c.noise_vocab_size)
  elseif task == 'memorization' then
    local ns = c.vocab_size - 1 - c.noise_vocab_size
    return 1 / (ns - math.floor(ns / 2))
  end
end

--- M.model_config(task, method, size, task_cfg) -> the model config (a plain table).
function M.model_config(task, method, size, task_cfg, overrides)
  local m = M.METHODS[method] or error(string.format("mad: method must be 'efla' or 'deltanet', got '%s'", tostring(method)), 2)
  local s = M.SIZES[size] or error(string.format("mad: size must be 'paper' or 'cpu', got '%s'", tostring(size)), 2)
  local c = { type = task == 'compression' and 'MadAutoEncoder' or 'CausalLM', vocab_size = task_cfg.vocab_size,
    d_model = s.d_model, n_layers = s.n_layers, n_heads = s.n_heads, order = m.order, key_norm = m.key_norm,
    chunk_size = 64, algorithm = 'auto' }
  for k, v in pairs(overrides or {}) do c[k] = v end
  return c
end

local function build(cfg)
  if cfg.type == 'MadAutoEncoder' then return M.MadAutoEncoder(cfg) end
  return efla.nn.build(cfg)
end
M.build = build

--- M.accuracy(model, ds, {batch, device}) -> fraction of scored targets predicted right, count
function M.accuracy(model, ds, opts)
  opts = opts or {}
  local batch, device = opts.batch or 64, opts.device or 'cpu'
  local right, total = 0, 0
  model:evaluate()
  efla.no_grad(function()
    for s = 1, ds.n, batch do
      local len = math.min(batch, ds.n - s + 1)
      local x = ds.inputs:narrow(1, s, len)
      local y = ds.targets:narrow(1, s, len)
      if device ~= 'cpu' then x = x:to(device) end
      local pred = model:forward(x):argmax(3):cpu()
      local scored = y:ne(mad.IGNORE)
      right = right + (pred:eq(y):long() * scored:long()):sum():item()
      total = total + scored:long():sum():item()
    end
  end)
  model:train()
  return total > 0 and right / total or 0 / 0, total
end

--- M.run(task, method, opts) -> result {task, method, accuracy, n_scored, final_loss, steps,
--- seconds, params, config, task_config, compute}. opts: scale ('cpu' | 'paper'), seed, device,
--- lr, epochs, batch, n_train, n_test, task overrides (opts.task_overrides), quiet, compute
--- ('auto' = mixed precision, bfloat16, on a GPU and float32 on the CPU; 'bfloat16';
--- 'float32'; tasks/precision.lua): result.compute is the dtype it resolved to.
function M.run(task, method, opts)
  opts = opts or {}
  local scale = opts.scale or 'cpu'
  local t = M.TRAIN[scale] or error("mad: scale must be 'cpu' or 'paper', got " .. tostring(scale), 2)
  local compute = precision.compute_dtype(opts.compute, opts.device or 'cpu')
  local tcfg = M.task_config(task, scale, opts.task_overrides)
  local seed = opts.seed or 1
  local train = mad.dataset(task, tcfg, { n = opts.n_train or tcfg.n_train, seed = seed, training = true })
  local test = mad.dataset(task, tcfg, { n = opts.n_test or tcfg.n_test, seed = seed + 1000003, training = false })
  local cfg = M.model_config(task, method, opts.size or scale, tcfg, opts.model_overrides)
  efla.manual_seed(seed)
  local model = build(cfg)
  local device = opts.device or 'cpu'
  if device ~= 'cpu' then model:to(device) end
  precision.apply(model, compute)   -- float32 master weights, bfloat16 compute unless float32
  local batch = opts.batch or t.batch
  local epochs = opts.epochs or (scale == 'cpu' and M.CPU_TASKS[task] and M.CPU_TASKS[task].epochs) or t.epochs
  local lr = opts.lr or t.lr
  local sampler = require('efla.data.loader').Sampler.new(train.n, { batch_size = math.min(batch, train.n),
    shuffle = true, seed = seed, drop_last = true })
  local total = sampler:num_batches() * epochs
  local optimizer = efla.optim.AdamW(model:parameters(), { lr = lr, weight_decay = opts.weight_decay or t.weight_decay })
  local sched = efla.optim.schedule.warmup_cosine { lr = lr, total_steps = total, min_lr = math.min(lr, t.min_lr) }
  local bar = progress.new { total = total, title = string.format('%s %s', method, task), tty = opts.quiet and false or nil, every = 30 }
  local step, last = 0, nil
  model:train()
  for _ = 1, epochs do
    for p, count in sampler:iter(function(p, count) return p, count end) do
      local idx = efla.empty({ count }, { dtype = 'int64' })
      local ip = idx:data()
      for i = 0, count - 1 do ip[i] = p[i] + 1 end
      local x = train.inputs:index_select(1, idx)
      local y = train.targets:index_select(1, idx)
      if device ~= 'cpu' then x, y = x:to(device), y:to(device) end
      local logits = model:forward(x)
      local loss = efla.nn.functional.cross_entropy(logits, y)
      optimizer:zero_grad()
      loss:backward()
      efla.optim.clip_grad_norm(model:parameters(), opts.clip or 1.0)
      sched:step(optimizer)
      optimizer:step()
      step = step + 1
      last = loss:item()
      if last ~= last then error(string.format('mad %s %s: the loss became NaN at step %d (try a smaller --lr)', method, task, step), 0) end
      bar:update(step, { { 'loss', string.format('%.4f', last) } })
    end
  end
  local seconds = bar:finish()
  local acc, n_scored = M.accuracy(model, test, { device = device })
  local params = 0
  for _, p in ipairs(model:parameters()) do params = params + p:numel() end
  return { task = task, method = method, accuracy = acc, n_scored = n_scored, final_loss = last, steps = step,
    seconds = seconds, params = params, lr = lr, epochs = epochs, batch = batch, n_train = train.n, n_test = test.n,
    seq_len = train.seq_len, config = cfg, task_config = tcfg, chance = M.chance(task, tcfg), compute = compute }
end

return M

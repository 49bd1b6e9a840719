-- tasks/lm.lua: causal language models (EFLA, DeltaNet and their variants) as a library
-- that recipes/lm.lua, recipes/generate.lua and the evaluation recipes share.
--
--   local LM = require 'efla.tasks.lm'
--   local d = LM.prepare_data{corpus = 'moby-dick', tokenizer = 'byte'}
--   local model, info = LM.train('efla', args, d, {out_dir = 'checkpoints/lm'})
--   local model, tok, meta = LM.load_checkpoint('checkpoints/lm/efla/best.h5')
--   LM.generate(model, tok, 'Call me', {tokens = 200, on_token = io.write})
--
-- Training: AdamW, a warmup-cosine learning rate, global-norm gradient clipping,
-- gradient accumulation (each optimiser step sums `accum` micro-batches of `batch`
-- windows of `context` tokens), periodic validation (mean loss in nats per token, bits
-- per byte and perplexity) and a checkpoint at every validation; a checkpoint holds the
-- model, the optimiser, the generator, the data position and the histories, so a run
-- resumed from it is bit-identical to one never stopped (on the CPU).
--
-- Bits per byte: sum of the targets' losses / ln 2 / the number of bytes the targets
-- stand for (for the byte tokenizer, tokens = bytes; for BPE, each token's byte length).
local efla = require 'efla'
local data = require 'efla.data'
local text = require 'efla.data.text'
local corpus = require 'efla.data.corpus'
local tokenizer = require 'efla.data.tokenizer'
local checkpoint = require 'efla.checkpoint'
local progress = require 'efla.progress'
local S = require 'efla.tasks.smnist'
local precision = require 'efla.tasks.precision'

local LM = {}

--- The named model sizes (docs/LM.md has the table). Every field can be overridden.
LM.SIZES = {
  tiny = { d_model = 64, n_layers = 2, n_heads = 2, context = 128, batch = 16, steps = 600, lr = 3e-3, warmup = 30 },
  small = { d_model = 256, n_layers = 4, n_heads = 4, context = 256, batch = 32, steps = 2000, lr = 2e-3, warmup = 100 },
  medium = { d_model = 512, n_layers = 8, n_heads = 8, context = 512, batch = 32, steps = 5000, lr = 1e-3, warmup = 250 },
}
LM.SIZE_NAMES = { 'tiny', 'small', 'medium' }

--- What distinguishes the methods: the integration order and the key normalisation.
LM.METHODS = {
  efla = { order = 'exact', key_norm = 'none' },
  deltanet = { order = 1, key_norm = 'l2' },
  ['gated-efla'] = { order = 'exact', key_norm = 'none', gate = true },   -- docs/MATH.md §6
  ['gated-deltanet'] = { order = 1, key_norm = 'l2', gate = true },
  ['efla-r1'] = { order = 'exact', key_norm = 'none', rank = 1 },   -- r = 1 through the rank-r kernel (a control)
  ['efla-r2'] = { order = 'exact', key_norm = 'none', rank = 2 },   -- rank-r EFLA (docs/RANK_R.md)
  ['efla-r4'] = { order = 'exact', key_norm = 'none', rank = 4 },
}
-- softmax-attention baselines and hybrids: `layers` is a CausalLM layer pattern (E EFLA,
-- D DeltaNet, A softmax attention, W sliding window, G gated EFLA, g Gated DeltaNet),
-- repeated to the size's layer count; --layers PATTERN overrides it for any method
LM.METHODS.transformer = { order = 'exact', key_norm = 'none', layers = 'A' }
LM.METHODS.hybrid = { order = 'exact', key_norm = 'none', layers = 'EEEA' }

LM.device_of = S.device_of

-- ---- data ---------------------------------------------------------------------------------------

-- A split's text -> its tokens: the uint8 bytes themselves for the byte tokenizer, int64
-- ids for BPE.
local function tokenize_split(tok, bytes)
  if tok.kind == 'byte' then return bytes end
  local ffi = require 'ffi'
  -- ids go straight into a growing C buffer (a Lua table of tens of millions of ids would
  -- strain the Lua heap)
  local cap, n = math.max(1024, math.floor(bytes:numel() / 2)), 0
  local buf = ffi.new('int64_t[?]', cap)
  tok:encode_each(text.decode(bytes), function(id)
    if n == cap then
      local bigger = ffi.new('int64_t[?]', cap * 2)
      ffi.copy(bigger, buf, cap * 8)
      buf, cap = bigger, cap * 2
    end
    buf[n] = id
    n = n + 1
  end)
  if n == 0 then return efla.empty({ 0 }, { dtype = 'int64' }) end
  return efla.from_buffer(buf, { n }, 'int64')
end

--- tokenize(tok, bytes uint8 tensor) -> the tokens a model reads: the bytes themselves for
--- the byte tokenizer (text.Loader adds 1), int64 ids for BPE.
LM.tokenize = tokenize_split

--- held_out(meta, tok [, split = 'test']) -> tokens, corpus: a split of the corpus a
--- checkpoint was trained on (meta from load_checkpoint; a --text run's file, meta.text, is
--- read again), encoded with the checkpoint's own tokenizer.
function LM.held_out(meta, tok, split)
  local file = meta.text or (meta.args and meta.args.text)
  local c = corpus.load { name = not file and meta.corpus or nil, text = file }
  local part = c[split or 'test']
  if not part then error("held_out: split must be 'train', 'valid' or 'test', got " .. tostring(split), 2) end
  return tokenize_split(tok, part), c
end

--- prepare_data{corpus = name | text = FILE, tokenizer = 'byte'|'bpe', vocab = 1024,
---   bpe_sample = bytes of training text to learn merges from (0 = all), quiet} ->
--- {corpus = c (efla.data.corpus), tok, train, valid, test (token tensors), name}.
--- BPE is learned on the training split only.
function LM.prepare_data(opts)
  local c = corpus.load { name = not opts.text and opts.corpus or nil, text = opts.text, root = opts.root }
  local tok
  if (opts.tokenizer or 'byte') == 'byte' then
    tok = tokenizer.byte()
  elseif opts.tokenizer == 'bpe' then
    local train_text = text.decode(c.train)
    local limit = opts.bpe_sample or 4000000
    if limit > 0 and #train_text > limit then train_text = train_text:sub(1, limit) end
    if not opts.quiet then io.stderr:write(string.format('lm: learning %d BPE tokens from %d training bytes\n', opts.vocab or 1024, #train_text)) end
    tok = tokenizer.train_bpe(train_text, opts.vocab or 1024)
  else
    error("--tokenizer must be 'byte' or 'bpe', got '" .. tostring(opts.tokenizer) .. "'", 0)
  end
  local d = { corpus = c, tok = tok, name = c.name, text = opts.text }
  for _, s in ipairs({ 'train', 'valid', 'test' }) do d[s] = tokenize_split(tok, c[s]) end
  d.bytes = { train = c.train:numel(), valid = c.valid:numel(), test = c.test:numel() }
  return d
end

-- ---- models ---------------------------------------------------------------------------------------

--- model_config(method, args, vocab_size) -> the CausalLM config (stored in checkpoints).
--- args: d_model, layers, heads, mlp_hidden, order, key_norm, chunk_size, tie_weights, conv_size,
--- recompute_states.
function LM.model_config(method, args, vocab_size)
  local m = LM.METHODS[method]
  if not m then
    local names = {}
    for k in pairs(LM.METHODS) do names[#names + 1] = k end
    table.sort(names)
    error(string.format("method must be one of %s, got '%s'", table.concat(names, ', '), tostring(method)), 0)
  end
  local pattern = args.pattern or m.layers
  local config = {
    gate = m.gate,
    type = 'CausalLM', vocab_size = vocab_size, d_model = args.d_model, n_layers = args.layers,
    n_heads = args.heads, mlp_hidden = args.mlp_hidden, order = args.order or m.order,
    key_norm = args.key_norm or m.key_norm, query_norm = 'l2', short_conv = true, conv_size = args.conv_size or 4,
    output_norm = true, beta_bias = 0, tie_weights = args.tie_weights or false, chunk_size = args.chunk_size or 64,
    algorithm = 'auto', recompute_states = args.recompute_states or nil,
    rank = m.rank,
  }
  if m.gate then config.gate = true end
  if pattern then
    config.layers = pattern
    require('efla.nn.models').layer_kinds(pattern, config.n_layers)   -- a bad pattern fails here, before any data
    if pattern:find('W') then config.window = args.window or require('efla.nn.models').DEFAULT_WINDOW end
  end
  return config
end

--- parameter_counts(args, vocab_size) -> {{method =, layers =, parameters =}, ...}: every
--- method's parameter count at these flags (sorted by name), for the equal-parameter note of
--- the summary. Built on the CPU in float32 and dropped.
function LM.parameter_counts(args, vocab_size)
  local names, out = {}, {}
  for k in pairs(LM.METHODS) do names[#names + 1] = k end
  table.sort(names)
  for _, name in ipairs(names) do
    local a = {}
    for k, v in pairs(args) do a[k] = v end
    a.pattern, a.order, a.key_norm = nil, nil, nil
    local ok, model = pcall(function() return efla.nn.build(LM.model_config(name, a, vocab_size)) end)
    if ok then
      out[#out + 1] = { method = name, layers = model.config.layers, parameters = model:num_parameters() }
    end
  end
  return out
end

--- resolve_args(args) -> args with the size's values filled in where no flag was given
--- (d_model, layers, heads, context, batch, steps, lr, warmup).
function LM.resolve_args(args)
  local size = LM.SIZES[args.size or 'tiny']
  if not size then error("--size must be tiny, small or medium, got '" .. tostring(args.size) .. "'", 0) end
  -- --layers N (a count) or --layers PATTERN (layer letters, repeated to the size's count)
  if type(args.layers) == 'string' then
    if tonumber(args.layers) then
      args.layers = tonumber(args.layers)
    else
      args.pattern, args.layers = args.layers, nil
    end
  end
  local map = { d_model = 'd_model', layers = 'n_layers', heads = 'n_heads', context = 'context', batch = 'batch',
    steps = 'steps', lr = 'lr', warmup = 'warmup' }
  for k, from in pairs(map) do if args[k] == nil then args[k] = size[from] end end
  if args.order ~= nil and args.order ~= 'exact' then
    local n = tonumber(args.order)
    if not n or n < 1 or n > 4 or n % 1 ~= 0 then error("--order must be exact, 1, 2, 3 or 4, got '" .. tostring(args.order) .. "'", 0) end
    args.order = n
  end
  for _, k in ipairs({ 'd_model', 'layers', 'heads', 'context', 'batch', 'steps', 'accum' }) do
    local v = args[k]
    if v ~= nil and (type(v) ~= 'number' or v < 1 or v % 1 ~= 0) then
      error(string.format('--%s must be a whole number >= 1, got %s', k:gsub('_', '-'), tostring(v)), 0)
    end
  end
  if args.d_model % args.heads ~= 0 then
    error(string.format('--d-model %d is not divisible by --heads %d', args.d_model, args.heads), 0)
  end
  return args
end

-- ---- evaluation --------------------------------------------------------------------------------------

-- byte length of every token id (for bits per byte)
local function byte_lengths(tok)
  local lens = {}
  for id = 1, tok.vocab_size do lens[id] = #tok:token_bytes(id) end
  return lens
end

--- compute_dtype(choice, device) -> 'bfloat16' or 'float32': the --compute option, where auto
--- means mixed precision on a GPU and float32 on the CPU (whose bfloat16 is storage only).
--- The same function as efla.tasks.precision's, which the other training tasks share.
LM.compute_dtype = precision.compute_dtype

--- evaluate(model, tokens, tok, {context, batch, max_tokens, device}) -> {loss (nats per
--- token), bpb (bits per byte), ppl (per token), tokens, bytes}. Scores non-overlapping
--- windows of context + 1 tokens spread evenly over the split (all of them when they hold
--- no more than max_tokens targets; max_tokens 0 = all).
function LM.evaluate(model, tokens, tok, opts)
  local T, batch, device = opts.context, opts.batch or 16, LM.device_of(opts.device)
  if tokens:numel() < T + 1 then
    error(string.format('evaluate: the split has %d tokens, fewer than one window of context %d + 1; use a smaller ' ..
      '--context or a corpus with more (or longer) documents', tokens:numel(), T), 0)
  end
  local L = text.Loader(tokens, { seq_len = T, batch_size = 1, shuffle = false })
  local nw = L.num_windows
  local want = nw
  if opts.max_tokens and opts.max_tokens > 0 then want = math.min(nw, math.max(1, math.floor(opts.max_tokens / T))) end
  local ffi = require 'ffi'
  local index = ffi.new('int64_t[?]', want)
  for i = 0, want - 1 do index[i] = math.floor(i * nw / want) end
  local lens = byte_lengths(tok)
  local sum_nll, n_tok, n_bytes = 0, 0, 0
  local was_training = model.training
  model:evaluate()
  efla.no_grad(function()
    for start = 0, want - 1, batch do
      local count = math.min(batch, want - start)
      local w = L:windows(index + start, count)
      local x = w:narrow(2, 1, T):contiguous()
      local y = w:narrow(2, 2, T):contiguous()
      local yp = y:data()
      for i = 0, count * T - 1 do n_bytes = n_bytes + lens[tonumber(yp[i])] end
      if device ~= 'cpu' then x, y = x:to(device), y:to(device) end
      local loss = model:loss(x, y):item()
      sum_nll = sum_nll + loss * count * T
      n_tok = n_tok + count * T
    end
  end)
  if was_training ~= false then model:train() end
  local mean = sum_nll / n_tok
  return { loss = mean, bpb = sum_nll / math.log(2) / n_bytes, ppl = math.exp(mean), tokens = n_tok, bytes = n_bytes }
end

-- ---- training -----------------------------------------------------------------------------------------

--- train(method, args, d, {out_dir, device, resume, recipe, argv, stop_at}) -> model, info.
--- args (see recipes/lm.lua): steps, batch, accum, context, lr, warmup, min_lr, weight_decay,
--- clip, seed, eval_every, valid_tokens, compute (--compute: auto, bfloat16 or float32; auto
--- on a resume keeps the checkpoint's), plus the model fields. d: LM.prepare_data's table.
--- Checkpoints go to <out_dir>/<method>/ (best.h5 = lowest validation loss; meta.compute = the
--- resolved compute dtype, also info.compute). stop_at: end after that step as if interrupted
--- (the schedule still spans args.steps), checkpointing it.
function LM.train(method, args, d, opts)
  opts = opts or {}
  local device = LM.device_of(opts.device or args.device)
  -- data parallel when started by efla-run (or Slurm): --batch is the global batch, split
  -- over the ranks; rank 0 validates, prints and writes checkpoints
  local dist = require 'efla.distributed'
  local pg = dist.auto { backend = device:match('^cuda') and 'auto' or 'tcp' }
  local W, main = pg and pg.world_size or 1, not pg or pg.rank == 0
  if pg and device:match('^cuda') then   -- each rank its own GPU
    device = pg.backend == 'nccl' and pg.device or ('cuda:' .. pg.local_rank)
  end
  local config = LM.model_config(method, args, d.tok.vocab_size)
  local T, B, accum, total = args.context, args.batch, args.accum or 1, args.steps
  efla.manual_seed(args.seed or 1)
  local model = efla.nn.build(config)
  if device ~= 'cpu' then model:to(device) end
  -- mixed precision (--compute); auto on a resume keeps the dtype the checkpoint was trained in
  local recorded = opts.resume and precision.recorded(opts.resume)
  local compute, compute_source = precision.resolve(args.compute, device, recorded)
  precision.apply(model, compute)
  local optimizer = efla.optim.AdamW(efla.optim.param_groups(model, { weight_decay = args.weight_decay or 0.1 }),
    { lr = args.lr, betas = { 0.9, 0.95 } })
  local dp
  if pg then
    if B % W ~= 0 then
      error(string.format('--batch %d is the global batch and must be a multiple of the %d ranks', B, W), 0)
    end
    dp = dist.DataParallel(model, { group = pg, bucket_mb = args.bucket_mb })
    if args.zero then optimizer = dist.ZeroOptimizer(optimizer, pg) end
  end
  local sched = efla.optim.schedule.WarmupCosine { lr = args.lr, total_steps = total,
    warmup_steps = math.min(args.warmup or 0, total), min_lr = args.min_lr or args.lr * 0.1 }
  local ok, loader = pcall(text.Loader, d.train, { seq_len = T, batch_size = B, shuffle = true,
    seed = args.seed or 1, drop_last = true, device = device ~= 'cpu' and device or nil,
    rank = pg and pg.rank, world_size = W })
  if not ok or loader:num_batches() == 0 then
    error(string.format('the training split of %s has %d tokens, too few for one batch of %d windows of %d tokens; ' ..
      'use a smaller --batch or --context', d.name, d.train:numel(), B, T), 0)
  end
  local it = loader:iter()
  local function next_batch()
    local x, y = it()
    if x == nil then it = loader:iter(); x, y = it() end
    return x, y
  end

  local history, valid, step, tokens_seen = {}, {}, 0, 0
  local manager = main and opts.out_dir and checkpoint.Manager { dir = opts.out_dir .. '/' .. method, keep_last = 2,
    metric = 'valid_loss', mode = 'min' }
  if opts.resume then
    local ck = checkpoint.load(opts.resume)
    if not ck.meta or ck.meta.task ~= 'lm' then
      error(string.format('--resume %s: not a language-model checkpoint (recipe %s)', opts.resume, tostring(ck.meta and ck.meta.recipe)), 0)
    end
    checkpoint.validate_state_dict(model:state_dict(), ck.model, opts.resume .. ' (were the same size flags given?)')
    model:load_state_dict(ck.model)
    optimizer:load_state_dict(ck.optim)
    sched:load_state_dict(ck.schedule)
    efla.set_rng_state(ck.rng)
    loader:set_state(ck.extra.loader)
    it = loader:iter()
    step, history, valid = ck.step, ck.metrics.loss or {}, ck.metrics.valid or {}
    tokens_seen = step * B * T * accum
    if main then io.stderr:write(string.format('resumed %s from %s at step %d%s\n', method, opts.resume, step,
      W > 1 and string.format(' on %d ranks', W) or '')) end
    local note = main and precision.note(method, compute, compute_source, recorded)
    if note then io.stderr:write(note .. '\n') end
  end

  local function valid_losses()
    local out = {}
    for i, v in ipairs(valid) do out[i] = v.loss end
    return out
  end
  local function save(final)
    local optim_state = (manager or (args.zero and pg)) and optimizer:state_dict()   -- ZeRO: a collective
    if not manager then return end
    return manager:save(step, {
      model = model:state_dict(), optim = optim_state, schedule = sched:state_dict(),
      rng = efla.rng_state(), step = step, epoch = loader:state().epoch,
      metrics = { loss = history, valid = valid, valid_loss = valid_losses() },
      extra = { loader = loader:state() },
      meta = { recipe = opts.recipe or 'lm', task = 'lm', config = config, args = args, method = method, compute = compute,
        order = tostring(config.order), key_norm = config.key_norm, layers = config.layers, tokenizer = d.tok:to_meta(), corpus = d.name, text = d.text,
        context = T, tokens_seen = tokens_seen, argv = opts.argv, final = final or false },
    })
  end
  local function validate()
    if not main then return nil end
    local r = LM.evaluate(model, d.valid, d.tok, { context = T, batch = B, max_tokens = args.valid_tokens, device = device })
    r.step, r.tokens_seen = step, tokens_seen
    valid[#valid + 1] = r
    return r
  end

  local bar = main and progress.new { total = total, title = method, every = args.log_every or 15, tty = not args.quiet and nil or false }
    or { update = function() end, finish = function(b) return progress.wall() - b.t0 end, t0 = progress.wall() }
  local eval_every = args.eval_every or math.max(1, math.floor(total / 6))
  local t0, start_tokens = progress.wall(), tokens_seen
  -- the same on every rank (checkpoints are collective under ZeRO): the last step validated
  local last_eval_step = valid[#valid] and valid[#valid].step
  -- the untrained model's score first, so the curve starts where training does
  if step == 0 and #valid == 0 then validate() end
  local last_valid = valid[#valid]
  model:train()
  local stop = math.min(total, opts.stop_at or total)
  while step < stop do
    optimizer:zero_grad()
    local lr = sched:step(optimizer)
    -- the loss stays on the device until the optimiser step is queued: reading it earlier
    -- would make the host wait for every micro-batch before queueing the next
    local loss_sum
    for k = 1, accum do
      if dp then dp.sync = k == accum end   -- one gradient all-reduce per optimiser step
      local x, y = next_batch()
      local loss = model:loss(x, y)   -- fused head + cross-entropy, float32
      if accum > 1 then loss = loss / accum end
      loss:backward()
      loss = loss:detach()
      loss_sum = loss_sum and loss_sum + loss or loss
    end
    if dp then dp:finish() end
    efla.optim.clip_grad_norm_(model:parameters(), args.clip or 1.0)
    optimizer:step()
    local step_loss = loss_sum:item()
    if dp then step_loss = pg:all_numbers({ step_loss }, 'avg')[1] end
    step = step + 1
    tokens_seen = tokens_seen + B * T * accum
    history[step] = step_loss
    if step_loss ~= step_loss then
      error(string.format('%s: the loss became NaN at step %d (try a smaller --lr than %g)', method, step, args.lr), 0)
    end
    if step % eval_every == 0 or step == stop then
      last_valid = validate()
      last_eval_step = step
      save(step == total)
    end
    local rate = (tokens_seen - start_tokens) / math.max(1e-9, progress.wall() - t0)
    bar:update(step, { { 'loss', string.format('%.3f', step_loss) },
      { 'valid', last_valid and string.format('%.3f', last_valid.loss) or '-' },
      { 'lr', string.format('%.2g', lr) }, { 'tok/s', string.format('%.3gk', rate / 1000) } })
  end
  local seconds = bar:finish()
  if last_eval_step ~= step then last_valid = validate() or last_valid; save(true) end
  local path = manager and string.format('%s/%s/step-%06d.h5', opts.out_dir, method, step)
  return model, { history = history, valid = valid, seconds = seconds, steps = step, tokens = tokens_seen,
    checkpoint = path, best = manager and manager:best(), config = config, lr = args.lr, compute = compute,
    tokens_per_second = (tokens_seen - start_tokens) / math.max(1e-9, seconds), final = last_valid }
end

-- ---- checkpoints and generation -------------------------------------------------------------------------

--- load_checkpoint(path [, {device}]) -> model (in evaluation mode), tokenizer, meta.
--- meta holds task = 'lm', corpus, context, method, order, key_norm, tokenizer, config,
--- args, plus step and file (version, git revision, date). A checkpoint of another task
--- (an sMNIST one, say) is refused with a message saying so.
function LM.load_checkpoint(path, opts)
  if type(path) ~= 'string' or path == '' then error('load_checkpoint: give the path of an LM checkpoint (.h5)', 2) end
  if not data.exists(path) then error('load_checkpoint: ' .. path .. ': no such file', 2) end
  local ck = checkpoint.load(path)
  local meta = ck.meta or {}
  if meta.task ~= 'lm' then
    error(string.format("load_checkpoint: %s is not a language-model checkpoint (it was written by recipe '%s'%s); " ..
      'give one written by recipes/lm.lua', path, tostring(meta.recipe or ck.file.recipe or '?'),
      meta.config and meta.config.type and (', model ' .. meta.config.type) or ''), 2)
  end
  local model = efla.nn.build(meta.config)
  checkpoint.validate_state_dict(model:state_dict(), ck.model, path)
  model:load_state_dict(ck.model)
  local device = LM.device_of(opts and opts.device)
  if device ~= 'cpu' then model:to(device) end
  model:evaluate()
  meta.step, meta.file = ck.step, ck.file
  meta.device = device
  return model, tokenizer.from_meta(meta.tokenizer), meta
end

-- Sample one id from logits (a Lua array): temperature 0 = greedy; top_k keeps the k most
-- likely; top_p keeps the smallest set whose probability reaches p. u is uniform in [0, 1).
local function sample(logits, temperature, top_k, top_p, u)
  local V = #logits
  if temperature <= 0 then
    local best = 1
    for i = 2, V do if logits[i] > logits[best] then best = i end end
    return best
  end
  local order = {}
  for i = 1, V do order[i] = i end
  table.sort(order, function(a, b) if logits[a] ~= logits[b] then return logits[a] > logits[b] end return a < b end)
  local keep = V
  if top_k and top_k > 0 then keep = math.min(keep, top_k) end
  local mx = logits[order[1]]
  local probs, total = {}, 0
  for r = 1, keep do
    local p = math.exp((logits[order[r]] - mx) / temperature)
    probs[r] = p
    total = total + p
  end
  if top_p and top_p < 1 then
    local acc = 0
    for r = 1, keep do
      acc = acc + probs[r] / total
      if acc >= top_p then keep = r break end
    end
    total = 0
    for r = 1, keep do total = total + probs[r] end
  end
  local target, acc = u * total, 0
  for r = 1, keep do
    acc = acc + probs[r]
    if target < acc then return order[r] end
  end
  return order[keep]
end
LM.sample = sample

--- encode_prompt(tok, prompt [, max_prompt]) -> the prompt's ids; an empty prompt or one
--- longer than max_prompt tokens is an error that says what to do.
function LM.encode_prompt(tok, prompt, max_prompt)
  if type(prompt) ~= 'string' or prompt == '' then
    error('the prompt is empty; give some text to continue (--prompt "Call me")', 0)
  end
  local ids = tok:encode(prompt)
  if max_prompt and #ids > max_prompt then
    error(string.format('the prompt is %d tokens, longer than the %d this model allows (the context it ' ..
      'was trained on); shorten the prompt or raise --max-prompt', #ids, max_prompt), 0)
  end
  return ids
end

--- generate(model, tok, prompt, {tokens = 200, temperature = 0.8, top_k = 0, top_p = 1, seed = 1,
---   max_prompt (default: the model's context), on_token = fn(text_piece, id),
---   on_logits = fn(logits tensor [V], position)}) -> the generated text (prompt excluded), ids.
--- The prompt goes through the parallel (chunked) forward once; every new token is one
--- recurrent step from the carried states (the delta-rule memory and the short-conv
--- caches): O(1) work and memory per token, whatever the length so far.
function LM.generate(model, tok, prompt, opts)
  opts = opts or {}
  local ids = LM.encode_prompt(tok, prompt, opts.max_prompt)
  local device = opts.device or 'cpu'
  local n = opts.tokens or 200
  local temperature = opts.temperature or 0.8
  local out = {}
  local gen = {}
  efla.no_grad(function()
    local x = efla.tensor({ ids }, { dtype = 'int64' })
    if device ~= 'cpu' then x = x:to(device) end
    local logits, states = model:forward(x)
    local last = logits:select(2, logits:size(2)):select(1, 1)
    local u = data.with_seed(opts.seed or 1, 0, efla.rand, n)
    local up = u:data()
    for i = 1, n do
      local row = last:float():cpu():contiguous()
      if opts.on_logits then opts.on_logits(row, #ids + i - 1) end
      local p = row:data()
      local lg = {}
      for j = 1, row:numel() do lg[j] = p[j - 1] end
      local id = sample(lg, temperature, opts.top_k, opts.top_p, up[i - 1])
      gen[i] = id
      local piece = tok:token_bytes(id)
      out[i] = piece
      if opts.on_token then opts.on_token(piece, id) end
      if i < n then
        local xi = efla.tensor({ { id } }, { dtype = 'int64' })
        if device ~= 'cpu' then xi = xi:to(device) end
        logits, states = model:forward(xi, states)
        last = logits:select(2, 1):select(1, 1)
      end
    end
  end)
  return table.concat(out), gen
end

return LM

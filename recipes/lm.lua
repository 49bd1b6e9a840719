-- recipes/lm.lua: train causal language models (EFLA, DeltaNet or a variant) on a text corpus.
--
--   efla recipes/lm.lua                                  # tiny EFLA byte LM on Moby-Dick (~3 min, CPU)
--   efla recipes/lm.lua --method both --corpus gcide --size small --device cuda
--   efla recipes/lm.lua --text my.txt --tokenizer bpe --vocab 2048
--   efla recipes/lm.lua --method efla --resume checkpoints/lm-moby-dick/efla/step-000100.h5
--   efla-run --nproc-per-node 4 recipes/lm.lua --device cuda --size small   # data parallel (docs/DISTRIBUTED.md)
--   efla recipes/lm.lua --method transformer             # softmax attention (rotary positions)
--   efla recipes/lm.lua --size small --method hybrid --layers EEEA   # 3 EFLA layers, 1 attention layer
--
-- Writes checkpoints (<out>/<method>/), train.csv and valid.csv, loss.png (train and
-- validation loss vs tokens), results.json (with provenance) to --out, prints a summary,
-- the EFLA-vs-DeltaNet comparison with --method both, and a short generated sample.
local efla = require 'efla'
local LM = require 'efla.tasks.lm'
local lm_report = require 'efla.tasks.lm_report'
local precision = require 'efla.tasks.precision'

local sizes = {}
for _, n in ipairs(LM.SIZE_NAMES) do
  local s = LM.SIZES[n]
  sizes[#sizes + 1] = string.format('  %-7s d_model %d, %d layers, %d heads, context %d, batch %d, %d steps, lr %g',
    n, s.d_model, s.n_layers, s.n_heads, s.context, s.batch, s.steps, s.lr)
end

local method_choices = {}
for name in pairs(LM.METHODS) do method_choices[#method_choices + 1] = name end
table.sort(method_choices)
method_choices[#method_choices + 1] = 'both'

local args = efla.args.parse(arg, {
  name = 'recipes/lm.lua',
  description = 'Train causal language models (EFLA / DeltaNet) on a text corpus; validate, checkpoint, sample.',
  { '--method', default = 'efla', choices = method_choices, help = 'which model(s) to train (both: EFLA and DeltaNet, same data order; transformer: softmax attention; hybrid: layers EEEA; gated-*: docs/MATH.md §6; efla-rN: N keys per token, docs/RANK_R.md)' },
  { '--corpus', default = 'moby-dick', choices = { 'moby-dick', 'sotu', 'brown', 'gcide' }, help = 'training corpus' },
  { '--text', metavar = 'FILE', help = 'train on this text file instead (paragraphs = documents)' },
  { '--tokenizer', default = 'byte', choices = { 'byte', 'bpe' }, help = 'bytes, or byte-pair tokens learned on the training split' },
  { '--vocab', type = 'number', default = 1024, help = 'BPE vocabulary size (with --tokenizer bpe)' },
  { '--size', default = 'tiny', choices = LM.SIZE_NAMES, help = 'model size (see below); the flags below override it' },
  { '--d-model', type = 'number', help = 'model width' },
  { '--layers', help = 'number of layers, or a layer pattern repeated to the size\'s layers: E EFLA, D DeltaNet, A softmax attention, W sliding-window attention, G gated EFLA, g Gated DeltaNet (e.g. EEEA)' },
  { '--window', type = 'number', help = 'keys seen by sliding-window (W) layers (default 64)' },
  { '--heads', type = 'number', help = 'attention heads' },
  { '--mlp-hidden', type = 'number', help = 'SwiGLU hidden width (default 8/3 d_model)' },
  { '--context', type = 'number', help = 'training window length in tokens' },
  { '--conv-size', type = 'number', default = 4, help = 'width of the causal short convolutions on q, k, v' },
  { '--chunk-size', type = 'number', default = 64, help = 'delta-rule chunk length' },
  { '--recompute-states', type = 'boolean',
    help = "delta rule: recompute the per-chunk states in the backward instead of keeping them (less memory, a little more time; fla's choice)" },
  { '--tie-weights', type = 'boolean', help = 'share the embedding and output matrices' },
  { '--order', help = 'integration order override: exact, 1, 2, 3, 4 (default: exact for EFLA, 1 for DeltaNet)' },
  { '--key-norm', choices = { 'none', 'l2' }, help = 'key normalisation override (default: none for EFLA, l2 for DeltaNet)' },
  { '--steps', type = 'number', help = 'optimiser steps' },
  { '--batch', type = 'number', help = 'windows per micro-batch (under efla-run: the global batch, split over the ranks)' },
  { '--accum', type = 'number', default = 1, help = 'micro-batches per optimiser step (gradient accumulation)' },
  { '--lr', type = 'number', help = 'peak learning rate' },
  { '--warmup', type = 'number', help = 'linear warm-up steps' },
  { '--min-lr', type = 'number', help = 'final learning rate of the cosine (default lr/10)' },
  { '--weight-decay', type = 'number', default = 0.1, help = 'AdamW weight decay (not on norms and biases)' },
  { '--clip', type = 'number', default = 1.0, help = 'global gradient-norm clip' },
  { '--eval-every', type = 'number', help = 'validate and checkpoint every N steps (default steps/6)' },
  { '--valid-tokens', type = 'number', default = 32768, help = 'validation tokens per evaluation (0 = the whole split)' },
  { '--seed', type = 'number', default = 1, help = 'seed for initialisation and data order' },
  { '--device', default = 'cpu', help = 'cpu or cuda[:N]' },
  precision.option(),   -- --compute auto|bfloat16|float32
  { '--threads', type = 'number', help = 'CPU threads (default: OMP_NUM_THREADS or every core; 1 is faster on a busy machine)' },
  { '--out', help = 'output folder (default checkpoints/lm-<corpus>)' },
  { '--resume', help = 'continue from this checkpoint (with --method efla or deltanet and the same flags)' },
  { '--sample-tokens', type = 'number', default = 200, help = 'length of the sample printed at the end (0 = none)' },
  { '--prompt', default = 'The ', help = 'prompt of the final sample' },
  { '--quiet', type = 'boolean', help = 'plain log lines instead of a progress bar' },
  { '--zero', type = 'boolean', help = 'under efla-run: shard the AdamW state over the ranks (ZeRO-1)' },
  { '--bucket-mb', type = 'number', default = 25, help = 'under efla-run: gradient all-reduce bucket size in MiB' },
  epilog = 'Sizes:\n' .. table.concat(sizes, '\n') .. '\n' ..
    'Validation/test documents are held out by document (every 20th). Bits per byte count the bytes the\n' ..
    'target tokens stand for, so byte and BPE models compare. Generate later with recipes/generate.lua.',
})

local ok, err = pcall(function()
  if args.resume and args.method == 'both' then
    error('--resume continues one run: give --method efla or --method deltanet too', 0)
  end
  LM.resolve_args(args)
  if args.threads then
    if args.threads < 1 or args.threads % 1 ~= 0 then error('--threads must be a whole number >= 1, got ' .. args.threads, 0) end
    efla.set_num_threads(args.threads)
  end
  if args.pattern and args.method == 'both' then
    error('--layers ' .. args.pattern .. ' sets every model\'s layers, so --method both would train one model twice; give --method hybrid (or another single method)', 0)
  end
  -- a bad layer pattern fails now, before the data are read
  for _, m in ipairs(args.method == 'both' and { 'efla', 'deltanet' } or { args.method }) do LM.model_config(m, args, 256) end
  local device = LM.device_of(args.device)
  -- under efla-run every rank trains; rank 0 alone prints and writes (--batch is the global batch)
  local pg = require('efla.distributed').auto { backend = device:match('^cuda') and 'auto' or 'tcp' }
  local main = not pg or pg.rank == 0
  local print = main and print or function() end
  local name = args.text and (args.text:match('([^/]+)$'):gsub('%.[^.]*$', '')) or args.corpus
  local out = args.out or ('checkpoints/lm-' .. name)
  efla.data.mkdir_p(out)
  local d = LM.prepare_data { corpus = args.corpus, text = args.text, tokenizer = args.tokenizer, vocab = args.vocab, quiet = not main }
  print(string.format('lm: corpus %s (%d documents; train/valid/test %d/%d/%d bytes), %s tokenizer (vocab %d, %.2f bytes/token)',
    d.name, d.corpus.n_docs, d.bytes.train, d.bytes.valid, d.bytes.test, args.tokenizer, d.tok.vocab_size,
    d.bytes.train / math.max(1, d.train:numel())))
  print(string.format('lm: size %s: d_model %d, %d layers%s, %d heads, context %d, batch %d x accum %d, %d steps (%.2fM tokens), lr %g, device %s%s, compute %s, threads %d',
    args.size, args.d_model, args.layers, (args.pattern or LM.METHODS[args.method] and LM.METHODS[args.method].layers)
      and (' (' .. (args.pattern or LM.METHODS[args.method].layers) .. ')') or '', args.heads, args.context, args.batch, args.accum, args.steps,
    args.steps * args.batch * args.accum * args.context / 1e6, args.lr, device,
    pg and string.format(' x %d ranks (%s%s)', pg.world_size, pg.backend, args.zero and ', ZeRO-1' or '') or '',
    precision.resolve(args.compute, device, precision.recorded(args.resume)), efla.num_threads()))

  local methods = args.method == 'both' and { 'efla', 'deltanet' } or { args.method }
  local runs, models = {}, {}
  for _, method in ipairs(methods) do
    local model, info = LM.train(method, args, d, { out_dir = out, device = device, resume = args.resume, argv = arg })
    local f = info.final or {}
    if main then print(string.format('%s: %d steps, %.2fM tokens in %.1f s (%.3gk tok/s), %d parameters; valid loss %.4f, %.4f bits/byte, ppl %.2f; checkpoint %s',
      method, info.steps, info.tokens / 1e6, info.seconds, info.tokens_per_second / 1000, model:num_parameters(),
      f.loss, f.bpb, f.ppl, info.checkpoint or '-')) end
    runs[#runs + 1] = { name = method, method = method, config = info.config, parameters = model:num_parameters(),
      steps = info.steps, tokens = info.tokens, seconds = info.seconds, tokens_per_second = info.tokens_per_second,
      history = info.history, valid = info.valid, final = f, checkpoint = info.checkpoint, best = info.best, lr = info.lr,
      compute = info.compute }
    models[method] = model
  end

  if not main then return end
  local files = lm_report.write(out, runs, args)
  print('\n' .. lm_report.summary(runs))
  local counts = {}
  for _, c in ipairs(LM.parameter_counts(args, d.tok.vocab_size)) do
    counts[#counts + 1] = string.format('%s%s %d', c.method, c.layers and ('(' .. c.layers .. ')') or '', c.parameters)
  end
  print('parameters of every method at these flags: ' .. table.concat(counts, ', '))
  if #runs == 2 then print('\n' .. lm_report.comparison(runs[1], runs[2])) end
  if args.sample_tokens > 0 then
    for _, r in ipairs(runs) do
      io.write(string.format('\n%s sample (temperature 0.8, seed %d):\n%s', r.name, args.seed, args.prompt))
      LM.generate(models[r.name], d.tok, args.prompt, { tokens = args.sample_tokens, temperature = 0.8, seed = args.seed,
        device = device, on_token = function(piece) io.write(piece) io.stdout:flush() end })
      io.write('\n')
    end
  end
  print(string.format('\nwrote %s: %s', out, table.concat(files, ', ')))
end)
if not ok then
  -- user errors read best without the Lua position of the check that raised them
  io.stderr:write('lm: ' .. tostring(err):gsub('^[^:\n]+%.lua:%d+: ', '') .. '\n')
  os.exit(1)
end

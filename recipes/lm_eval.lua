-- recipes/lm_eval.lua: downstream evaluation of language-model checkpoints, in the manner
-- of lm-evaluation-harness (log-likelihood scoring, acc and acc_norm, fixed zero-shot
-- prompts, a fixed seed). One table row per checkpoint.
--
--   efla recipes/lm_eval.lua --checkpoint checkpoints/lm-sotu/efla/step-000400.h5
--   efla recipes/lm_eval.lua checkpoints/lm-sotu            # every .h5 under a folder
--   efla recipes/lm_eval.lua --tasks ppl,cloze --corpora sotu,brown,moby-dick run/*.h5
--
-- Tasks (docs/EVAL.md): ppl (held-out perplexity and bits per byte), cloze (LAMBADA-style
-- last word of held-out passages: greedy exact match, rank among 10 candidates), wordnet
-- (which of 4 words a WordNet gloss defines; chance 0.25), extrap (loss by position at 1x,
-- 2x, 4x, 8x the training context). Writes lm_eval.md, lm_eval.csv, lm_eval.json (with
-- provenance) and the extrapolation CSVs and plots to --out.
local efla = require 'efla'
local suite = require 'efla.eval.suite'

local args = efla.args.parse(arg, {
  name = 'recipes/lm_eval.lua', positional = '[CHECKPOINT.h5|FOLDER ...]',
  description = 'Evaluate language-model checkpoints on held-out text and zero-shot tasks.',
  { '--checkpoint', help = 'a checkpoint file or a folder of them (also: positional arguments)' },
  { '--tasks', default = table.concat(suite.TASKS, ','), help = 'comma-separated subset of ' .. table.concat(suite.TASKS, ',') },
  { '--corpus', help = "the text to evaluate on (default: the checkpoint's own corpus; a name or a file)" },
  { '--corpora', help = 'perplexity on each of these corpora too, comma-separated (e.g. sotu,brown,moby-dick)' },
  { '--ppl-bytes', type = 'number', default = suite.DEFAULTS.ppl_bytes, help = 'bytes of each test split for perplexity (0 = all)' },
  { '--cloze-items', type = 'number', default = suite.DEFAULTS.cloze_items, help = 'cloze passages' },
  { '--wordnet-items', type = 'number', default = suite.DEFAULTS.wordnet_items, help = 'WordNet questions' },
  { '--extrap-tokens', type = 'number', default = suite.DEFAULTS.extrap_tokens, help = 'tokens per context multiplier for extrapolation' },
  { '--batch', type = 'number', default = suite.DEFAULTS.batch, help = 'sequences per forward pass' },
  { '--seed', type = 'number', default = suite.DEFAULTS.seed, help = 'seed of the item sampling (distractors, order)' },
  { '--device', default = 'cpu', help = 'cpu or cuda[:N]' },
  { '--out', default = 'checkpoints/lm_eval', help = 'where the table, CSV, JSON and plots go' },
})
local paths = {}
if args.checkpoint then paths[1] = args.checkpoint end
for _, p in ipairs(args._) do paths[#paths + 1] = p end
if #paths == 0 then
  io.stderr:write('lm_eval.lua: give a checkpoint file or folder (--checkpoint F, or as arguments; see --help)\n')
  os.exit(2)
end
if args.device ~= 'cpu' then require('efla.tasks.smnist').device_of(args.device) end

local corpora
if args.corpora then
  corpora = {}
  for c in args.corpora:gmatch('[^,%s]+') do corpora[#corpora + 1] = c end
  if args.corpus then table.insert(corpora, 1, args.corpus) end
end
local ok, rows, written, md = pcall(suite.run, paths, {
  tasks = args.tasks, corpus = args.corpus, corpora = corpora, ppl_bytes = args.ppl_bytes,
  cloze_items = args.cloze_items, wordnet_items = args.wordnet_items, extrap_tokens = args.extrap_tokens,
  batch = args.batch, seed = args.seed, device = args.device, out = args.out,
})
if not ok then
  io.stderr:write(tostring(rows), '\n')
  os.exit(1)
end
print('\n' .. md)
local failed = 0
for _, r in ipairs(rows) do if r.error then failed = failed + 1 end end
print(string.format('\n%d checkpoint(s) evaluated, %d failed; wrote %s', #rows - failed, failed, table.concat(written, ' ')))
if failed > 0 then
  for _, r in ipairs(rows) do if r.error then io.stderr:write(r.error, '\n') end end
  os.exit(1)
end

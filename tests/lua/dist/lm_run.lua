-- lm_run.lua CORPUS OUT [stop_at|-] [resume|-] [zero]: LM.train on a tiny corpus (float32, CPU)
-- with a global batch of 6 (divisible by 1, 2 and 3 ranks); run plainly or under efla-run.
-- test_distributed.lua compares the checkpoints of runs on different numbers of ranks.
local LM = require 'efla.tasks.lm'
local corpus_file, out = arg[1], arg[2]
local stop_at = tonumber(arg[3] or '-')
local resume = arg[4] ~= '-' and arg[4] or nil
local args = LM.resolve_args { size = 'tiny', d_model = 16, layers = 1, heads = 1, context = 16, batch = 6, steps = 8,
  accum = 1, lr = 1e-2, warmup = 2, eval_every = 4, valid_tokens = 256, seed = 5, quiet = true, zero = arg[5] == 'zero' }
local d = LM.prepare_data { text = corpus_file, tokenizer = 'byte', quiet = true }
LM.train('efla', args, d, { out_dir = out, stop_at = stop_at, resume = resume })

-- recipes/generate.lua: continue a prompt with a trained language model, streaming the text.
--
--   efla recipes/generate.lua --checkpoint checkpoints/lm-moby-dick/efla/best.h5 --prompt "Call me"
--   efla recipes/generate.lua --checkpoint F --prompt "The whale" --tokens 500 --temperature 0.7 --top-p 0.9
--
-- The prompt runs through the model once (the parallel, chunked form); then every new
-- token is one recurrent step from the carried state (the delta-rule memory and the
-- short-convolution caches), so each token costs the same however long the text grows.
-- Softmax-attention layers of a transformer or hybrid carry a KV cache instead (a token
-- costs time linear in the text so far; with a sliding window, in the window).
local efla = require 'efla'
local lm = require 'efla.tasks.lm'
local progress = require 'efla.progress'

local args = efla.args.parse(arg, {
  name = 'recipes/generate.lua',
  description = 'Generate text from a language-model checkpoint written by recipes/lm.lua.',
  { '--checkpoint', metavar = 'FILE', required = true, help = 'an LM checkpoint (.h5)' },
  { '--prompt', required = true, help = 'the text to continue' },
  { '--tokens', type = 'number', default = 200, help = 'tokens to generate' },
  { '--temperature', type = 'number', default = 0.8, help = 'sampling temperature (0 = greedy)' },
  { '--top-k', type = 'number', default = 0, help = 'sample among the k most likely tokens (0 = all)' },
  { '--top-p', type = 'number', default = 1.0, help = 'nucleus sampling: the smallest set holding this probability' },
  { '--seed', type = 'number', default = 1, help = 'sampling seed' },
  { '--max-prompt', type = 'number', help = "longest prompt accepted, in tokens (default: the model's training context)" },
  { '--device', default = 'cpu', help = 'cpu or cuda[:N]' },
  { '--quiet', type = 'boolean', help = 'print only the text (no header or timing)' },
})

local ok, err = pcall(function()
  if args.tokens < 1 or args.tokens % 1 ~= 0 then error('--tokens must be a whole number >= 1, got ' .. args.tokens, 0) end
  if args.temperature < 0 then error('--temperature must be >= 0, got ' .. args.temperature, 0) end
  if args.top_p <= 0 or args.top_p > 1 then error('--top-p must be in (0, 1], got ' .. args.top_p, 0) end
  local model, tok, meta = lm.load_checkpoint(args.checkpoint, { device = args.device })
  if not args.quiet then
    local kind = model.config.layers and ('layers ' .. model.config.layers)
      or string.format('order %s, key norm %s', tostring(meta.order), tostring(meta.key_norm))
    io.stderr:write(string.format('generate: %s (%s, %s, %d parameters, %s tokenizer of %d, trained on %s, step %d)\n',
      args.checkpoint, meta.method, kind, model:num_parameters(),
      meta.tokenizer.type, tok.vocab_size, tostring(meta.corpus), meta.step or 0))
  end
  local max_prompt = args.max_prompt or meta.context
  lm.encode_prompt(tok, args.prompt, max_prompt)
  io.write(args.prompt)
  io.stdout:flush()
  local t0 = progress.wall()
  local _, ids = lm.generate(model, tok, args.prompt, { tokens = args.tokens, temperature = args.temperature,
    top_k = args.top_k, top_p = args.top_p, seed = args.seed, device = meta.device,
    max_prompt = max_prompt,
    on_token = function(piece) io.write(piece) io.stdout:flush() end })
  io.write('\n')
  local dt = progress.wall() - t0
  if not args.quiet then
    io.stderr:write(string.format('generate: %d tokens in %.2f s (%.1f tokens/s, prompt included)\n', #ids, dt, #ids / dt))
  end
end)
if not ok then
  -- user errors read best without the Lua position of the check that raised them
  io.stderr:write('generate: ' .. tostring(err):gsub('^[^:\n]+%.lua:%d+: ', '') .. '\n')
  os.exit(1)
end

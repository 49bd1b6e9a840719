-- eval/lm_model.lua: open a language-model checkpoint for evaluation: the model, its
-- tokenizer and what it was trained on, with a clear error for anything that is not one.
local efla = require 'efla'
local checkpoint = require 'efla.checkpoint'
local tokenizer = require 'efla.data.tokenizer'

local M = {}

--- M.is_lm(info_or_contents) -> true when a checkpoint (checkpoint.info or .load result)
--- holds a language model (meta.task = 'lm' or a CausalLM config).
function M.is_lm(ck)
  local meta = ck and ck.meta or {}
  return meta.task == 'lm' or (type(meta.config) == 'table' and meta.config.type == 'CausalLM')
end

local function describe(meta)
  local what = type(meta.config) == 'table' and meta.config.type or 'no model config'
  return string.format('%s%s', what, meta.recipe and (' from recipe ' .. meta.recipe) or '')
end

--- M.context(meta, model) -> the number of tokens the model was trained on at once.
function M.context(meta)
  local a = meta.args or {}
  return meta.context or a.context or a.seq_len or 256
end

--- M.load(path [, {device = 'cpu'}]) -> model (on device, in evaluation mode), tokenizer, meta.
--- Raises an error naming the file and what is wrong: missing, unreadable, or not a
--- language model (an sMNIST checkpoint, say).
function M.load(path, opts)
  opts = opts or {}
  if type(path) ~= 'string' then error('lm_eval: expected a checkpoint path, got ' .. type(path), 2) end
  local ok, info = pcall(checkpoint.info, path)
  if not ok then error(string.format('lm_eval: cannot read %s: %s', path, tostring(info)), 0) end
  local meta = info.meta or {}
  if not M.is_lm(info) then
    error(string.format('lm_eval: %s is not a language-model checkpoint (it holds a %s); lm_eval evaluates '
      .. 'checkpoints written by recipes/lm.lua; evaluate this one with recipes/eval.lua', path, describe(meta)), 0)
  end
  local model, tok
  if meta.task == 'lm' then
    model, tok, meta = require('efla.tasks.lm').load_checkpoint(path, { device = opts.device })
  else -- a CausalLM saved by other code: the stored config, and its tokenizer or bytes
    model = efla.load_model(path, { device = opts.device })
    tok = meta.tokenizer and tokenizer.from_meta(meta.tokenizer) or tokenizer.byte()
  end
  if tok.vocab_size ~= model.config.vocab_size then
    error(string.format('lm_eval: %s: the tokenizer has %d ids but the model %d; the checkpoint is inconsistent',
      path, tok.vocab_size, model.config.vocab_size), 0)
  end
  meta.context = M.context(meta)
  -- hybrids and transformers: the layer pattern tells the rows apart (gated runs too)
  local pattern = model.config and model.config.layers
  if pattern and meta.method and not tostring(meta.method):find('(', 1, true) then
    meta.method = string.format('%s (%s)', meta.method, pattern)
  end
  return model, tok, meta
end

--- M.params(model) -> the number of parameters.
function M.params(model)
  local n = 0
  for _, p in ipairs(model:parameters()) do n = n + p:numel() end
  return n
end

return M

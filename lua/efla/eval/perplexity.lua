-- eval/perplexity.lua: held-out perplexity and bits per byte of a corpus' test split.
--
-- The text is encoded once and cut into windows of context + 1 tokens that start every
-- `context` tokens, so each token after the first is predicted exactly once, from up to
-- `context` tokens before it (the context restarts at each window, as in training).
-- perplexity = exp(mean token NLL); bits per byte = total NLL / (ln 2 * bytes predicted),
-- which compares byte-level and BPE models on the same text.
local ll = require 'efla.eval.loglik'

local P = {}

--- P.load_split(spec, {split = 'test', max_bytes = 0, root}) -> the split as a Lua string
--- (its first max_bytes bytes when max_bytes > 0). spec: a corpus name ('sotu', 'brown',
--- 'moby-dick', 'gcide') or {name =} or {text = FILE}; the splits are efla.data.corpus's
--- (held out by document), the ones recipes/lm.lua trains on.
function P.load_split(spec, opts)
  opts = opts or {}
  if type(spec) == 'string' then spec = { name = spec } end
  local which = opts.split or 'test'
  local c = require('efla.data.corpus').load { name = spec.name, text = spec.text, root = opts.root }
  local split = c[which]
  if not split then error("perplexity: split must be 'train', 'valid' or 'test', got " .. tostring(which), 2) end
  if opts.max_bytes and opts.max_bytes > 0 and opts.max_bytes < split:numel() then
    split = split:narrow(1, 1, opts.max_bytes)
  end
  return require('efla.data.text').decode(split)
end

--- P.windows(ids, length) -> rows: windows of length + 1 ids starting every length ids
--- (the last one shorter), so that ids[2..] are each a target once.
function P.windows(ids, length)
  local rows = {}
  for s = 1, #ids - 1, length do
    local row = {}
    for t = s, math.min(s + length, #ids) do row[#row + 1] = ids[t] end
    if #row >= 2 then rows[#rows + 1] = row end
  end
  return rows
end

--- P.evaluate(model, tok, text, {context = 256, batch, device}) -> {nll = total nats,
--- tokens = targets scored, bytes = bytes predicted, ppl, bpb, loss = mean nats per token}
function P.evaluate(model, tok, text, opts)
  opts = opts or {}
  if type(text) ~= 'string' or #text < 2 then
    error('perplexity: need a text of at least 2 bytes, got ' .. (type(text) == 'string' and #text .. ' bytes' or type(text)), 2)
  end
  local ids = tok:encode(text)
  if #ids < 2 then error('perplexity: the text encodes to fewer than 2 tokens', 2) end
  local context = opts.context or 256
  local lps = ll.token_logprobs(model, P.windows(ids, context), opts)
  local nll, n = 0, 0
  for _, row in ipairs(lps) do
    for _, v in ipairs(row) do nll = nll - v; n = n + 1 end
  end
  local bytes = #text - #tok:decode({ ids[1] })
  return { nll = nll, tokens = n, bytes = bytes, loss = nll / n, ppl = math.exp(nll / n),
    bpb = nll / (math.log(2) * bytes) }
end

return P

-- eval/loglik.lua: log-likelihood scoring of token sequences by a causal language model,
-- in the manner of lm-evaluation-harness: the score of a continuation given a context is
-- the sum of the log-probabilities of its tokens, each given everything before it; a
-- continuation is "greedy" when every one of its tokens is the model's argmax.
--
--   local ll = require 'efla.eval.loglik'
--   ll.token_logprobs(model, {{ids...}, ...}, {batch = 16, device = 'cpu'})
--   ll.score(model, tok, {{context = 'The cat', continuation = ' sat'}, ...}, opts)
--   ll.multiple_choice(model, tok, {{context =, choices = {...}, gold = 2}, ...}, opts)
-- Rows are batched (longest first, padded at the end: a causal model's earlier positions
-- never see the padding) and run without gradients on opts.device.
local efla = require 'efla'

local ll = {}

local function model_device(opts) return (opts and opts.device) or 'cpu' end

--- ll.token_logprobs(model, rows, {batch = 16, device = 'cpu'}) -> lps, greedy: for each
--- row (a Lua array of token ids, at least 2), lps[r][t] = log p(row[t+1] | row[1..t]) and
--- greedy[r][t] = (row[t+1] is the argmax there), for t = 1 .. #row - 1.
function ll.token_logprobs(model, rows, opts)
  opts = opts or {}
  local batch, device = opts.batch or 16, model_device(opts)
  local vocab = model.config and model.config.vocab_size
  local order = {}
  for i, row in ipairs(rows) do
    if type(row) ~= 'table' or #row < 2 then
      error(string.format('loglik: row %d has %s tokens; scoring needs at least 2 (a context token and a target)',
        i, type(row) == 'table' and #row or 'no'), 2)
    end
    order[i] = i
  end
  table.sort(order, function(a, b) if #rows[a] ~= #rows[b] then return #rows[a] > #rows[b] end return a < b end)
  local lps, greedy = {}, {}
  local was_training = model.training
  model:evaluate()
  efla.no_grad(function()
    for s = 1, #order, batch do
      local n = math.min(batch, #order - s + 1)
      local T = #rows[order[s]] - 1
      local x = efla.ones({ n, T }, { dtype = 'int64' })
      local y = efla.ones({ n, T }, { dtype = 'int64' })
      local xp, yp = x:data(), y:data()
      for b = 0, n - 1 do
        local row = rows[order[s + b]]
        for t = 1, #row - 1 do
          local a, c = row[t], row[t + 1]
          if vocab and (a < 1 or a > vocab or c < 1 or c > vocab) then
            error(string.format('loglik: token id %d is outside the model vocabulary 1..%d', (a < 1 or a > vocab) and a or c, vocab), 0)
          end
          xp[b * T + t - 1] = a
          yp[b * T + t - 1] = c
        end
      end
      if device ~= 'cpu' then x, y = x:to(device), y:to(device) end
      local logits = model:forward(x)
      local logp = logits:log_softmax(3)
      local picked = logp:gather(3, y:unsqueeze(3)):squeeze(3):cpu():double():contiguous()
      local best = logp:argmax(3):cpu():contiguous()
      y = y:cpu():contiguous()
      local pp, bp, tp = picked:data(), best:data(), y:data()
      for b = 0, n - 1 do
        local r = order[s + b]
        local len = #rows[r] - 1
        local l, g = {}, {}
        for t = 1, len do
          l[t] = pp[b * T + t - 1]
          g[t] = bp[b * T + t - 1] == tp[b * T + t - 1]
        end
        lps[r], greedy[r] = l, g
      end
    end
  end)
  if was_training then model:train() end
  return lps, greedy
end

--- ll.encode_pair(tok, context, continuation) -> context_ids, continuation_ids. Trailing
--- spaces of the context move to the continuation (so ' word' is scored as one piece), and
--- the continuation's ids are those of the whole string after the context's, when the
--- whole string's encoding starts with the context's (lm-evaluation-harness's rule).
function ll.encode_pair(tok, context, continuation)
  local spaces = context:match('%s*$')
  if #spaces > 0 then
    context = context:sub(1, #context - #spaces)
    continuation = spaces .. continuation
  end
  local cenc = tok:encode(context)
  local whole = tok:encode(context .. continuation)
  local prefix = #whole > #cenc
  for i = 1, #cenc do if whole[i] ~= cenc[i] then prefix = false; break end end
  local cont = {}
  if prefix then
    for i = #cenc + 1, #whole do cont[#cont + 1] = whole[i] end
  else
    cont = tok:encode(continuation)
  end
  return cenc, cont
end

--- ll.score(model, tok, requests, {batch, device, max_len}) -> results: for each request
--- {context = str, continuation = str}, {logprob = sum of the continuation's token
--- log-probs, greedy = all of them argmax, n_tokens, n_bytes = #continuation}. The context
--- is cut from the left so that context + continuation fits max_len + 1 tokens.
function ll.score(model, tok, requests, opts)
  opts = opts or {}
  local max_len = opts.max_len
  local rows, ncont = {}, {}
  for i, req in ipairs(requests) do
    if type(req.context) ~= 'string' or type(req.continuation) ~= 'string' then
      error(string.format('loglik.score: request %d needs a context and a continuation string', i), 2)
    end
    local c, k = ll.encode_pair(tok, req.context, req.continuation)
    if #c == 0 then
      error(string.format('loglik.score: request %d has an empty context; give at least one token of context', i), 2)
    end
    if #k == 0 then error(string.format('loglik.score: request %d has an empty continuation', i), 2) end
    if max_len and #k > max_len then
      error(string.format('loglik.score: request %d: the continuation has %d tokens, more than the %d the model takes',
        i, #k, max_len), 2)
    end
    local row = {}
    local keep = max_len and math.min(#c, max_len + 1 - #k) or #c
    for j = #c - keep + 1, #c do row[#row + 1] = c[j] end
    for j = 1, #k do row[#row + 1] = k[j] end
    rows[i], ncont[i] = row, #k
  end
  local lps, greedy = ll.token_logprobs(model, rows, opts)
  local out = {}
  for i, req in ipairs(requests) do
    local l, g, sum, all = lps[i], greedy[i], 0, true
    for t = #l - ncont[i] + 1, #l do
      sum = sum + l[t]
      all = all and g[t]
    end
    out[i] = { logprob = sum, greedy = all, n_tokens = ncont[i], n_bytes = #req.continuation }
  end
  return out
end

local function argmax(values)
  local best = 1
  for i = 2, #values do if values[i] > values[best] then best = i end end
  return best
end
ll.argmax = argmax

--- ll.multiple_choice(model, tok, items, opts) -> per-item results and the means.
--- items: {context = str, choices = {str, ...}, gold = index}; each choice is a
--- continuation of the context. acc: the highest log-likelihood is gold's; acc_norm: the
--- highest log-likelihood per byte of the choice is gold's (lm-evaluation-harness's
--- length normalisation). Returns {acc =, acc_norm =, n =, items = {{lls, norm, greedy,
--- pred, pred_norm}}} (lls, norm and greedy per choice).
function ll.multiple_choice(model, tok, items, opts)
  local requests, where = {}, {}
  for i, it in ipairs(items) do
    if type(it.choices) ~= 'table' or #it.choices < 2 then
      error(string.format('loglik.multiple_choice: item %d needs at least 2 choices', i), 2)
    end
    if type(it.gold) ~= 'number' or not it.choices[it.gold] then
      error(string.format('loglik.multiple_choice: item %d: gold must index its %d choices, got %s', i, #it.choices, tostring(it.gold)), 2)
    end
    for j, ch in ipairs(it.choices) do
      requests[#requests + 1] = { context = it.context, continuation = ch }
      where[#requests] = { i, j }
    end
  end
  local scores = ll.score(model, tok, requests, opts)
  local per = {}
  for r, w in ipairs(where) do
    per[w[1]] = per[w[1]] or { lls = {}, norm = {}, greedy = {} }
    per[w[1]].lls[w[2]] = scores[r].logprob
    per[w[1]].greedy[w[2]] = scores[r].greedy
    per[w[1]].norm[w[2]] = scores[r].logprob / math.max(1, scores[r].n_bytes)
  end
  local acc, acc_norm = 0, 0
  for i, it in ipairs(items) do
    local p = per[i]
    p.pred, p.pred_norm = argmax(p.lls), argmax(p.norm)
    if p.pred == it.gold then acc = acc + 1 end
    if p.pred_norm == it.gold then acc_norm = acc_norm + 1 end
  end
  local n = #items
  return { acc = n > 0 and acc / n or 0 / 0, acc_norm = n > 0 and acc_norm / n or 0 / 0, n = n, items = per }
end

return ll

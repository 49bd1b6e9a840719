-- eval/cloze.lua: a LAMBADA-style cloze built from held-out text: read a passage and
-- predict its last word.
--
-- Items: walking through the text in order, every word that ends a sentence (letters only,
-- at least min_word letters, followed by . ! or ?) and lies at least passage_bytes after
-- the previous item becomes a target; its context is the passage_bytes before it, started
-- at a sentence boundary when one is near (else at a word boundary), and the continuation
-- is the word (with the whitespace before it, as lm-evaluation-harness splits LAMBADA).
-- Scores:
--   greedy   the word is exactly what greedy decoding produces (every token the argmax)
--   acc      the word has the highest log-likelihood among n_candidates candidates: the
--            word and distractors drawn with the seed from the split's other words
--   acc_norm the same per byte of each candidate
--   rank     the word's log-likelihood rank among the candidates (1 = best)
-- Chance: acc = 1/n_candidates, mean rank = (n_candidates + 1)/2; greedy has no fixed chance.
local random = require 'efla.eval.random'
local ll = require 'efla.eval.loglik'

local C = {}

C.DEFAULTS = { n = 200, passage_bytes = 400, n_candidates = 10, min_word = 3, seed = 1234 }

local function is_word(w, min_word)
  return #w >= min_word and w:match('^%a+$') ~= nil and w:upper() ~= w
end

--- C.build(text, {n, passage_bytes, n_candidates, min_word, seed}) -> items:
--- {context =, choices = {...}, gold = index of the true word, word =}.
function C.build(text, opts)
  local o = {}
  for k, v in pairs(C.DEFAULTS) do o[k] = (opts or {})[k] or v end
  if type(text) ~= 'string' then error('cloze.build: expected the text as a string, got ' .. type(text), 2) end
  -- the split's distinct words, in order of first appearance (the distractor pool)
  local pool, seen = {}, {}
  for w in text:gmatch('%a+') do
    if is_word(w, o.min_word) and not seen[w:lower()] then seen[w:lower()] = true; pool[#pool + 1] = w end
  end
  local rng = random.Stream(o.seed)
  local items, last = {}, o.passage_bytes
  for s, w, e in text:gmatch('()(%a+)()[%.!?]') do
    if #items >= o.n then break end
    local before = text:sub(s - 1, s - 1)
    if s > last and is_word(w, o.min_word) and before:match('%s') then
      local start = s - o.passage_bytes
      -- begin after the first sentence end in the window's first half, else at a word start
      local cut = text:sub(start, start + math.floor(o.passage_bytes / 2)):find('[%.!?]%s+%u')
      if cut then start = start + cut
      else
        local ws = text:find('%s', start)
        start = ws and ws + 1 or start
      end
      local context = text:sub(start, s - 1)
      local word = text:sub(s, e - 1)
      local choices, used, tries = {}, { [word:lower()] = true }, 0
      while #choices < o.n_candidates - 1 and tries < 100 * o.n_candidates do
        tries = tries + 1
        local d = rng:choice(pool)
        if not used[d:lower()] then used[d:lower()] = true; choices[#choices + 1] = d end
      end
      local gold = rng:int(#choices + 1) + 1
      table.insert(choices, gold, word)
      if #choices >= 2 and context:match('%S') then
        items[#items + 1] = { context = context, choices = choices, gold = gold, word = word }
        last = e + o.passage_bytes
      end
    end
  end
  return items
end

--- C.evaluate(model, tok, items, {batch, device, max_len}) -> {greedy, acc, acc_norm,
--- rank (mean), n, chance_acc, chance_rank, items = per-item results}
function C.evaluate(model, tok, items, opts)
  if #items == 0 then error('cloze: no items (the text has no sentence-final words to predict)', 2) end
  local mc = ll.multiple_choice(model, tok, items, opts)
  local greedy, rank_sum, k = 0, 0, 0
  for i, it in ipairs(items) do
    local p = mc.items[i]
    if p.greedy[it.gold] then greedy = greedy + 1 end
    local rank = 1
    for j = 1, #it.choices do if j ~= it.gold and p.lls[j] > p.lls[it.gold] then rank = rank + 1 end end
    p.rank = rank
    rank_sum = rank_sum + rank
    k = math.max(k, #it.choices)
  end
  local n = #items
  return { greedy = greedy / n, acc = mc.acc, acc_norm = mc.acc_norm, rank = rank_sum / n, n = n,
    n_candidates = k, chance_acc = 1 / k, chance_rank = (k + 1) / 2, items = mc.items }
end

return C

-- eval/wordnet.lua: a zero-shot multiple-choice task from WordNet 3.0's glosses (Debian
-- package wordnet-base, /usr/share/wordnet/data.{noun,verb,adj,adv}): given a definition,
-- which of 4 words does it define?
--
-- Items: every synset whose first lemma is one lower-case word of at least 3 letters, whose
-- definition (the gloss up to its first example or semicolon) has at least 3 words and
-- does not contain the lemma itself. The items are shuffled with the seed and the first n
-- kept; each gets 3 distractors drawn with the seed from the lemmas of the same part of
-- speech (none of them a lemma of the item's own synset), and the true word goes to a
-- seeded position among the 4. Prompt (fixed, zero-shot):
--     "Definition: <definition>.\nWord:" + " <word>"
-- Scored by log-likelihood: acc (highest total) and acc_norm (highest per byte). Chance 0.25.
local random = require 'efla.eval.random'
local ll = require 'efla.eval.loglik'
local data = require 'efla.data'

local W = {}

W.POS = { 'noun', 'verb', 'adj', 'adv' }
W.DEFAULTS = { n = 500, n_choices = 4, seed = 1234 }
W.CHANCE = 0.25

--- W.dir() -> $EFLA_WORDNET_DIR or /usr/share/wordnet
function W.dir() return os.getenv('EFLA_WORDNET_DIR') or '/usr/share/wordnet' end

--- W.parse_line(line) -> {offset, pos, words = {...}, gloss = full gloss} or nil for the
--- licence header and malformed lines. Words have '_' turned into spaces.
function W.parse_line(line)
  local bar = line:find(' | ', 1, true)
  if not bar then return nil end
  local offset, pos, count, rest = line:match('^(%d+) %x+ (%a) (%x+) (.*)$')
  local n = tonumber(count or '', 16)
  if not n then return nil end
  local words = {}
  for w in rest:gmatch('(%S+) %x+ ') do
    words[#words + 1] = (w:gsub('_', ' '))
    if #words == n then break end
  end
  if #words < n then return nil end
  return { offset = offset, pos = pos, words = words, gloss = (line:sub(bar + 3):gsub('%s+$', '')) }
end

--- W.definition(gloss) -> the gloss before its first example ('; "...') or semicolon.
function W.definition(gloss)
  local d = gloss:match('^(.-)%s*;') or gloss
  return (d:gsub('%s+$', ''))
end

--- W.load({dir, pos = W.POS}) -> synsets (parts of speech whose file is missing are skipped;
--- none at all is an error) {word =, words = {...}, definition =, pos =} that
--- qualify as items (see the top of this file).
function W.load(opts)
  opts = opts or {}
  local dir = opts.dir or W.dir()
  local out, found = {}, 0
  for _, pos in ipairs(opts.pos or W.POS) do
    local path = dir .. '/data.' .. pos
    local f = io.open(path, 'r')
    if f then found = found + 1 end
    for line in (f and f:lines() or function() end) do
      local s = W.parse_line(line)
      if s then
        local word = s.words[1]
        local def = W.definition(s.gloss)
        local nwords = select(2, def:gsub('%S+', ''))
        if #word >= 3 and word:match('^%l+$') and nwords >= 3 and not def:lower():find(word, 1, true) then
          out[#out + 1] = { word = word, words = s.words, definition = def, pos = pos }
        end
      end
    end
    if f then f:close() end
  end
  if found == 0 then
    data.missing('WordNet', dir .. '/data.noun', 'install the Debian package wordnet-base (scripts/install-deps.sh) or set EFLA_WORDNET_DIR')
  end
  if #out == 0 then error('wordnet: no usable synsets under ' .. dir, 2) end
  return out
end

--- W.build(synsets, {n = 500, n_choices = 4, seed}) -> multiple-choice items
--- {context =, choices =, gold =, word =, pos =}.
function W.build(synsets, opts)
  local o = {}
  for k, v in pairs(W.DEFAULTS) do o[k] = (opts or {})[k] or v end
  local rng = random.Stream(o.seed)
  local by_pos = {}
  for _, s in ipairs(synsets) do
    by_pos[s.pos] = by_pos[s.pos] or {}
    table.insert(by_pos[s.pos], s.word)
  end
  local order = {}
  for i = 1, #synsets do order[i] = i end
  rng:shuffle(order)
  local items = {}
  for _, i in ipairs(order) do
    if #items >= o.n then break end
    local s = synsets[i]
    local own = {}
    for _, w in ipairs(s.words) do own[w] = true end
    local choices = {}
    local tries = 0
    while #choices < o.n_choices - 1 and tries < 100 do
      tries = tries + 1
      local d = rng:choice(by_pos[s.pos])
      local dup = own[d]
      for _, c in ipairs(choices) do if c == d then dup = true end end
      if not dup then choices[#choices + 1] = d end
    end
    if #choices == o.n_choices - 1 then
      local gold = rng:int(o.n_choices) + 1
      table.insert(choices, gold, s.word)
      for j, c in ipairs(choices) do choices[j] = ' ' .. c end
      items[#items + 1] = { context = 'Definition: ' .. s.definition .. '.\nWord:', choices = choices,
        gold = gold, word = s.word, pos = s.pos }
    end
  end
  return items
end

--- W.evaluate(model, tok, items, opts) -> {acc, acc_norm, n, chance = 1/n_choices, items}
function W.evaluate(model, tok, items, opts)
  if #items == 0 then error('wordnet: no items to evaluate', 2) end
  local mc = ll.multiple_choice(model, tok, items, opts)
  mc.chance = 1 / #items[1].choices
  return mc
end

return W

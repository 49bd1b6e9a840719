-- tests/lua/test_lm_eval.lua: the downstream evaluation of language models (efla.eval):
-- every scorer against log-likelihoods computed by hand on a toy bigram model whose
-- log-probabilities are set exactly, batching against one-row-at-a-time forward passes
-- of a real CausalLM, the item builders on fixtures, and clear errors on bad input.
-- Run: build/efla tests/lua/test_lm_eval.lua [name-pattern]
local ffi = require 'ffi'
local efla = require 'efla'
local t = dofile('tests/lua/testlib.lua')
local class = require 'efla.class'
local Module = require 'efla.nn.module'
local layers = require 'efla.nn.layers'
local data = require 'efla.data'
local checkpoint = require 'efla.checkpoint'
local tokenizer = require 'efla.data.tokenizer'
local ll = require 'efla.eval.loglik'
local P = require 'efla.eval.perplexity'
local C = require 'efla.eval.cloze'
local W = require 'efla.eval.wordnet'
local X = require 'efla.eval.extrapolation'
local lm_model = require 'efla.eval.lm_model'
local suite = require 'efla.eval.suite'
local random = require 'efla.eval.random'

pcall(ffi.cdef, 'int getpid(void);')
local dir = string.format('%s/test_lm_eval.%d', os.getenv('EFLA_TEST_TMP') or '/tmp', ffi.C.getpid())
data.mkdir_p(dir)

local tok = tokenizer.byte()
local V = 256
local function id(ch) return ch:byte() + 1 end

-- A bigram model over bytes: the next-token distribution depends on the previous byte
-- only. probs[prev][next] = p for the pairs we set; the rest of each row's mass is spread
-- evenly over the other ids. logp(prev, next) is the exact log-probability, by hand.
local Bigram = class.new('Bigram', Module)
function Bigram:__init(probs)
  Module.__init(self)
  self.config = { vocab_size = V }
  self.logp = {}
  local w = efla.zeros({ V, V }, { dtype = 'float64' })
  local p = w:data()
  for a = 1, V do
    local set, mass = probs[a] or {}, 0
    local n = 0
    for _, q in pairs(set) do mass = mass + q; n = n + 1 end
    local rest = (1 - mass) / (V - n)
    self.logp[a] = {}
    for b = 1, V do
      local q = set[b] or rest
      self.logp[a][b] = math.log(q)
      p[(a - 1) * V + b - 1] = math.log(q)
    end
  end
  self:add_module('table', layers.Embedding(V, V, { dtype = 'float64' }))
  self.table.weight:detach():copy_(w)
end
function Bigram:forward(tokens) return self.table:forward(tokens) end
function Bigram:lp(a, b) return self.logp[a][b] end
-- the hand-computed log-likelihood of string s after the last byte of ctx
function Bigram:ll(ctx, s)
  local prev, sum = id(ctx:sub(-1)), 0
  for i = 1, #s do sum = sum + self:lp(prev, id(s:sub(i, i))); prev = id(s:sub(i, i)) end
  return sum
end

local function exp(x) return math.exp(x) end
local toy = Bigram({
  [id('x')] = { [id('a')] = exp(-2.0), [id('b')] = exp(-1.5), [id('c')] = 0.5 },
  [id('b')] = { [id('b')] = exp(-0.5) },
  [id('c')] = { [id('a')] = 0.9 },
  [id(' ')] = { [id('t')] = 0.3 },
})

t.test('token_logprobs: bigram log-probabilities by hand, greedy flags', function()
  local rows = { { id('x'), id('a') }, { id('x'), id('b'), id('b'), id('b') }, { id('x'), id('c'), id('a') } }
  local lps, greedy = ll.token_logprobs(toy, rows, { batch = 2 })
  t.near(lps[1], { -2.0 }, 1e-12)
  t.near(lps[2], { -1.5, -0.5, -0.5 }, 1e-12)
  t.near(lps[3], { math.log(0.5), math.log(0.9) }, 1e-12)
  t.eq(greedy[3], { true, true })   -- c is x's argmax, a is c's
  t.eq(greedy[1], { false })
end)

t.test('score: sum over the continuation only, context cut from the left at max_len', function()
  local r = ll.score(toy, tok, { { context = 'qqx', continuation = 'bbb' }, { context = 'x', continuation = 'ca' } })
  t.near(r[1].logprob, -2.5, 1e-12)
  t.eq(r[1].n_tokens, 3); t.eq(r[1].n_bytes, 3); t.eq(r[1].greedy, false)
  t.near(r[2].logprob, math.log(0.5) + math.log(0.9), 1e-12)
  t.eq(r[2].greedy, true)
  -- a bigram model ignores everything before the last context byte: cutting changes nothing
  local cut = ll.score(toy, tok, { { context = 'hello there x', continuation = 'bbb' } }, { max_len = 4 })
  t.near(cut[1].logprob, -2.5, 1e-12)
end)

t.test('encode_pair: trailing context spaces move to the continuation', function()
  local c, k = ll.encode_pair(tok, 'said ', 'the')
  t.eq(tok:decode(c), 'said'); t.eq(tok:decode(k), ' the')
  local r = ll.score(toy, tok, { { context = 'a ', continuation = 't' } })
  t.near(r[1].logprob, toy:lp(id('a'), id(' ')) + math.log(0.3), 1e-12)
end)

t.test('multiple_choice: acc takes the highest total, acc_norm the highest per byte', function()
  -- 'a': total -2.0 (-2.0 per byte); 'bbbb': total -1.5 - 3 * 0.5 = -3.0 (-0.75 per byte)
  t.near(toy:ll('x', 'a'), -2.0, 1e-12); t.near(toy:ll('x', 'bbbb'), -3.0, 1e-12)
  local items = { { context = 'x', choices = { 'a', 'bbbb' }, gold = 2 },
                  { context = 'x', choices = { 'a', 'bbbb' }, gold = 1 } }
  local r = ll.multiple_choice(toy, tok, items)
  t.eq(r.items[1].pred, 1); t.eq(r.items[1].pred_norm, 2)
  t.near(r.items[1].lls, { -2.0, -3.0 }, 1e-12)
  t.near(r.items[1].norm, { -2.0, -0.75 }, 1e-12)
  t.near(r.acc, 0.5, 0); t.near(r.acc_norm, 0.5, 0)
  local only_gold2 = ll.multiple_choice(toy, tok, { items[1] })
  t.eq(only_gold2.acc, 0); t.eq(only_gold2.acc_norm, 1)
end)

t.test('batched scoring of a CausalLM equals one-row forward passes with log_softmax + gather', function()
  efla.manual_seed(3)
  local m = efla.nn.build { type = 'CausalLM', vocab_size = V, d_model = 16, n_layers = 1, n_heads = 2 }
  local rows = { tok:encode('The whale'), tok:encode('Ishmael'), tok:encode('sea.') }
  local lps, greedy = ll.token_logprobs(m, rows, { batch = 3 })
  for r, row in ipairs(rows) do
    local x = efla.tensor({ { unpack(row, 1, #row - 1) } }, { dtype = 'int64' })
    local y = efla.tensor({ { unpack(row, 2) } }, { dtype = 'int64' })
    local logp = m:forward(x):log_softmax(3)
    local want = logp:gather(3, y:unsqueeze(3)):reshape(-1):totable()
    local arg = logp:argmax(3):reshape(-1):totable()
    t.near(lps[r], want, 1e-5, 'row ' .. r)
    for i = 1, #arg do t.eq(greedy[r][i], arg[i] == row[i + 1]) end
  end
end)

t.test('perplexity and bits per byte: every token after the first once, across windows', function()
  local text = 'xbbbxcaxa bb'
  local nll = 0
  for i = 2, #text do nll = nll - toy:lp(id(text:sub(i - 1, i - 1)), id(text:sub(i, i))) end
  for _, ctx in ipairs({ 3, 4, 64 }) do
    local r = P.evaluate(toy, tok, text, { context = ctx })
    t.eq(r.tokens, #text - 1)
    t.near(r.nll, nll, 1e-10)
    t.near(r.ppl, math.exp(nll / (#text - 1)), 1e-10)
    t.near(r.bpb, nll / (math.log(2) * (#text - 1)), 1e-10)
  end
  local w = P.windows({ 1, 2, 3, 4, 5, 6 }, 2)
  t.eq(w, { { 1, 2, 3 }, { 3, 4, 5 }, { 5, 6 } })
end)

t.test('cloze: items end at a sentence-final word; greedy, acc and rank by hand', function()
  local text = 'Some words come first here. Then the story goes on and on until the end. Another '
    .. 'sentence follows with many words in it and finishes with zebra. Last line here is short.'
  local items = C.build(text, { n = 10, passage_bytes = 40, n_candidates = 4, seed = 7 })
  t.ok(#items >= 2, 'expected at least 2 items, got ' .. #items)
  for _, it in ipairs(items) do
    t.eq(it.choices[it.gold], it.word)
    t.eq(#it.choices, 4)
    local low = {}
    for _, c in ipairs(it.choices) do t.ok(not low[c:lower()], 'distinct candidates'); low[c:lower()] = true end
    local at = text:find(it.context .. it.word, 1, true)
    t.ok(at, 'the context and word are consecutive text')
    t.ok(text:sub(at + #it.context + #it.word):match('^[%.!?]'), 'the word ends a sentence')
  end
  t.eq(C.build(text, { n = 10, passage_bytes = 40, n_candidates = 4, seed = 7 }), items, 'the seed fixes the items')
  -- scoring on hand-made items with the toy model
  local hand = { { context = 'x', choices = { 'b', 'c', 'a' }, gold = 2 }, { context = 'x', choices = { 'c', 'a', 'b' }, gold = 2 } }
  local r = C.evaluate(toy, tok, hand)
  -- log p: c = log .5 (best, greedy), b = -1.5, a = -2.0
  t.eq(r.items[1].rank, 1); t.eq(r.items[2].rank, 3)
  t.near(r.greedy, 0.5, 0); t.near(r.acc, 0.5, 0); t.near(r.rank, 2, 0)
  t.near(r.chance_acc, 1 / 3, 1e-12); t.near(r.chance_rank, 2, 0)
end)

-- a WordNet fixture in the format of /usr/share/wordnet/data.noun
local function wordnet_fixture()
  local wd = dir .. '/wordnet'
  data.mkdir_p(wd)
  local lines = { '  1 This software and database is being provided ... (licence header)' }
  local entries = {
    { 'apple', 'fruit with red or yellow or green skin and crisp flesh' },
    { 'river', 'a large natural stream of water; "the river was wide"' },
    { 'chair', 'a seat for one person with a support for the back' },
    { 'lamp', 'a piece of furniture holding one or more electric light bulbs' },
    { 'cloud', 'a visible mass of water or ice particles suspended in the air' },
    { 'knife', 'edge tool used as a cutting instrument' },
    { 'book', 'a written work or composition that has been published' },
    { 'Paris', 'the capital and largest city of France' },           -- not lower case: no item
    { 'dog', 'a dog that barks' },                                    -- defines itself: no item
    { 'tea_cup', 'a cup from which tea is drunk' },                   -- two words: no item
  }
  for i, e in ipairs(entries) do
    lines[#lines + 1] = string.format('%08d 05 n 02 %s 0 synonym%d 0 000 | %s  ', 1000 + i, e[1], i, e[2])
  end
  local f = assert(io.open(wd .. '/data.noun', 'w'))
  f:write(table.concat(lines, '\n'), '\n')
  f:close()
  return wd
end

t.test('wordnet: parsing, item filter, 4 choices from the same part of speech, seeded', function()
  local wd = wordnet_fixture()
  local p = W.parse_line('00002137 03 n 02 abstraction 0 abstract_entity 0 010 @ 00001740 n 0000 | a general concept; "x"')
  t.eq(p.words, { 'abstraction', 'abstract entity' })
  t.eq(W.definition(p.gloss), 'a general concept')
  local syn = W.load({ dir = wd, pos = { 'noun' } })
  t.eq(#syn, 7, 'Paris, dog and tea_cup are filtered out')
  t.eq(syn[2].definition, 'a large natural stream of water')
  local items = W.build(syn, { n = 5, seed = 3 })
  t.eq(#items, 5)
  for _, it in ipairs(items) do
    t.eq(#it.choices, 4)
    t.eq(it.choices[it.gold], ' ' .. it.word)
    local seen = {}
    for _, c in ipairs(it.choices) do t.ok(not seen[c], 'distinct choices'); seen[c] = true end
    t.ok(it.context:match('^Definition: .+%.\nWord:$'), 'the fixed prompt')
  end
  t.eq(W.build(syn, { n = 5, seed = 3 }), items, 'the seed fixes the items')
  t.ok(not t.deep_eq(W.build(syn, { n = 5, seed = 4 }), items), 'another seed draws other items')
  local r = W.evaluate(toy, tok, items)
  t.eq(r.chance, 0.25)
  t.ok(r.acc >= 0 and r.acc <= 1)
  t.raises(function() W.load({ dir = dir .. '/nowhere' }) end, 'wordnet-base')
end)

t.test('extrapolation: bucket means by position, multipliers that do not fit are skipped', function()
  local text = string.rep('xbbbxca', 12)        -- 84 bytes
  local r = X.evaluate(toy, tok, text, { context = 8, bucket = 4, multipliers = { 1, 2, 4, 16 } })
  t.eq(r.skipped, { 16 })
  local ids = tok:encode(text)
  -- by hand: 2x context = windows of 17 tokens starting every 16
  local sums = {}
  local nw = math.floor((#ids - 1) / 16)
  for w = 0, nw - 1 do
    for pos = 1, 16 do
      local b = math.floor((pos - 1) / 4) + 1
      sums[b] = (sums[b] or 0) - toy:lp(ids[w * 16 + pos], ids[w * 16 + pos + 1])
    end
  end
  local got = {}
  for _, b in ipairs(r.buckets) do if b.multiplier == 2 then got[#got + 1] = b.loss end end
  t.eq(#got, 4)
  for b = 1, 4 do t.near(got[b], sums[b] / (4 * nw), 1e-10) end
  t.eq(r.summary[2].windows, nw)
  -- default buckets: powers of two
  local lg = X.evaluate(toy, tok, text, { context = 8, multipliers = { 4 } })
  local b = lg.buckets
  t.eq({ b[1].from, b[1].to, b[2].from, b[2].to, b[3].from, b[3].to, b[#b].to }, { 1, 1, 2, 3, 4, 7, 32 })
  t.near(b[2].loss, -(toy:lp(ids[2], ids[3]) + toy:lp(ids[3], ids[4]) + toy:lp(ids[34], ids[35]) + toy:lp(ids[35], ids[36])) / 4, 1e-10)
  X.write(r, dir .. '/x.csv', dir .. '/x.png')
  t.ok(data.exists(dir .. '/x.csv'))
end)

t.test('random stream: reproducible, in range, independent of the global generator', function()
  local a, b = random.Stream(5), random.Stream(5)
  efla.manual_seed(1)
  local g1 = efla.rand(1):item()
  local xs = {}
  for i = 1, 5000 do xs[i] = a:int(7); t.ok(xs[i] >= 0 and xs[i] < 7) end
  for i = 1, 5000 do t.eq(b:int(7), xs[i]) end
  efla.manual_seed(1)
  t.eq(efla.rand(1):item(), g1)
  t.raises(function() random.Stream(-1) end, 'non-negative integer')
end)

-- checkpoints for the loader and the suite
local function save_lm(path, meta_extra)
  efla.manual_seed(1)
  local cfg = { type = 'CausalLM', vocab_size = V, d_model = 16, n_layers = 1, n_heads = 2 }
  local m = efla.nn.build(cfg)
  local meta = { task = 'lm', recipe = 'lm', config = cfg, corpus = 'moby-dick', context = 16, method = 'efla',
    tokenizer = tok:to_meta() }
  for k, v in pairs(meta_extra or {}) do meta[k] = v end
  checkpoint.save(path, { model = m:state_dict(), step = 3, meta = meta })
  return m
end

t.test('bad input: sMNIST checkpoint, missing file, empty context, ids outside the vocabulary', function()
  local cfg = require('efla.tasks.smnist').model_config('efla', { d_model = 8 })
  local sm = efla.nn.build(cfg)
  checkpoint.save(dir .. '/smnist.h5', { model = sm:state_dict(), step = 0, meta = { recipe = 'smnist', config = cfg } })
  t.raises(function() lm_model.load(dir .. '/smnist.h5') end, 'is not a language-model checkpoint (it holds a SequenceClassifier from recipe smnist)')
  t.raises(function() suite.run({ dir .. '/smnist.h5' }, { out = dir .. '/out', log = io.open('/dev/null', 'w') }) end, 'recipes/eval.lua')
  t.raises(function() lm_model.load(dir .. '/missing.h5') end, 'cannot read')
  t.raises(function() suite.find_checkpoints({ dir .. '/nothing-here' }) end, 'no such checkpoint file or folder')
  t.raises(function() ll.score(toy, tok, { { context = '', continuation = 'a' } }) end, 'empty context')
  t.raises(function() ll.token_logprobs(toy, { { 1 } }) end, 'at least 2')
  local small = efla.nn.build { type = 'CausalLM', vocab_size = 16, d_model = 8, n_layers = 1, n_heads = 1 }
  t.raises(function() ll.token_logprobs(small, { { 1, 40 } }) end, 'outside the model vocabulary 1..16')
  t.raises(function() ll.multiple_choice(toy, tok, { { context = 'x', choices = { 'a', 'b' }, gold = 3 } }) end, 'gold must index')
  t.raises(function() suite.parse_tasks('ppl,bogus') end, "unknown task 'bogus'")
  save_lm(dir .. '/badtok.h5', { tokenizer = { type = 'bpe', vocab_size = 257, merges = { { 1, 2 } } } })
  t.raises(function() lm_model.load(dir .. '/badtok.h5') end, 'the tokenizer has 257 ids but the model 256')
end)

t.test('suite end to end on a tiny checkpoint (moby-dick test split, WordNet fixture)', function()
  local ok = pcall(P.load_split, 'moby-dick', { max_bytes = 10 })
  if not ok then return t.skip('suite end to end', 'the moby-dick corpus is not installed') end
  data.mkdir_p(dir .. '/cks/run')
  local m = save_lm(dir .. '/cks/run/a.h5')
  local rows, written, md = suite.run({ dir .. '/cks' }, { out = dir .. '/out', ppl_bytes = 600, cloze_items = 3,
    wordnet_items = 4, wordnet_dir = wordnet_fixture(), extrap_tokens = 256, log = io.open('/dev/null', 'w') })
  t.eq(#rows, 1)
  local r = rows[1]
  t.ok(not r.error, tostring(r.error))
  t.eq(r.corpus, 'moby-dick'); t.eq(r.context, 16); t.eq(r.params, lm_model.params(m))
  -- the row's perplexity is the scorer's on the same text
  local text = P.load_split('moby-dick', { max_bytes = 600 })
  local direct = P.evaluate(m, tok, text, { context = 16 })
  t.near(r.bpb, direct.bpb, 1e-9)
  t.eq(r.counts.wordnet, 4); t.eq(r.counts.cloze, 3)
  t.ok(r.extrap.summary['8'] ~= nil, 'the 8x window fits')
  t.ok(md:find('| run/a.h5 | efla | moby-dick | 16 |', 1, true), md)
  t.ok(md:find('(chance)', 1, true))
  local json = require('efla.json').decode(data.read_file(dir .. '/out/lm_eval.json'))
  t.eq(json.provenance.seed, 1234)
  t.eq(json.provenance.efla_version, efla.version())
  t.ok(data.exists(dir .. '/out/lm_eval.csv'))
end)

t.test('recipes/eval.lua sends LM checkpoints to the LM suite and sMNIST ones to the robustness suite', function()
  local bin = os.getenv('EFLA_BIN') or 'build/efla'
  if not pcall(P.load_split, 'moby-dick', { max_bytes = 10 }) then return t.skip('eval routing', 'moby-dick is not installed') end
  save_lm(dir .. '/route-lm.h5')
  local out = dir .. '/route'
  local cmd = string.format('OMP_NUM_THREADS=1 %s recipes/eval.lua --lm-tasks ppl --suite clean --test-samples 10 --out %s %s %s 2>&1',
    bin, out, dir .. '/route-lm.h5', dir .. '/smnist.h5')
  local p = io.popen(cmd)
  local log = p:read('*a')
  p:close()
  t.ok(log:find('| route-lm.h5 | efla | moby-dick | 16 |', 1, true) or log:find('/route-lm.h5 | efla | moby-dick | 16 |', 1, true), log)
  t.ok(data.exists(out .. '/lm_eval.csv') and data.exists(out .. '/eval.csv'), log)
  local header, rows = require('efla.csv').read(out .. '/lm_eval.csv')
  t.eq(#rows, 1)
  local _, srows = require('efla.csv').read(out .. '/eval.csv')
  t.eq(#srows, 1, 'the sMNIST checkpoint is in the robustness table')
end)

os.execute('rm -rf ' .. dir)
t.done()

-- test_lm.lua: language models end to end on a tiny scale: the tokenizers (byte and BPE:
-- hand-computed merges, exact round trip, vocabulary bounds, meta round trip), corpora
-- split by document, training with exact resume, recurrent generation against the
-- parallel forward, bits per byte, the recipes, and clear errors for bad input.
local t = dofile('tests/lua/testlib.lua')
local efla = require 'efla'
local tokenizer = require 'efla.data.tokenizer'
local corpus = require 'efla.data.corpus'
local text = require 'efla.data.text'
local checkpoint = require 'efla.checkpoint'
local json = require 'efla.json'
local LM = require 'efla.tasks.lm'

local tmp = (os.getenv('EFLA_TEST_TMP') or '/tmp') .. '/test_lm'
os.execute('rm -rf ' .. tmp .. ' && mkdir -p ' .. tmp)
local bin = os.getenv('EFLA_BIN') or 'build/efla'

local function raises(fn, pattern, what)
  local ok, err = pcall(fn)
  t.ok(not ok, (what or 'an error') .. ' was expected')
  t.ok(tostring(err):find(pattern, 1, true), string.format('%s: the message should contain "%s", got: %s', what or 'error', pattern, tostring(err)))
end

-- A small corpus file of 45 paragraphs (documents), each naming its number.
local words = { 'whale', 'sea', 'ship', 'captain', 'harpoon', 'voyage', 'sailor', 'deck', 'storm', 'island' }
local paragraphs = {}
for i = 1, 45 do
  local s = { string.format('Document %d.', i) }
  for j = 1, 40 do s[#s + 1] = words[(i * 7 + j * j) % #words + 1] end
  paragraphs[i] = table.concat(s, ' ') .. '.'
end
local corpus_file = tmp .. '/tiny.txt'
do
  local f = assert(io.open(corpus_file, 'w'))
  f:write(table.concat(paragraphs, '\n\n'), '\n')
  f:close()
end

t.test('byte tokenizer: ids are byte + 1, as text.encode', function()
  local tok = tokenizer.byte()
  t.eq(tok.vocab_size, 256)
  local s = 'Hi\0\255 é'
  local ids = tok:encode(s)
  t.eq(#ids, #s)
  local ref = text.encode(s)
  for i = 1, #s do t.eq(ids[i], ref:data()[i - 1]) end
  t.eq(tok:decode(ids), s)
  t.eq(tokenizer.from_meta(json.decode(json.encode(tok:to_meta()))):encode(s), ids)
end)

t.test('BPE: hand-computed merges on "ab ab ab"', function()
  local tok = tokenizer.train_bpe('ab ab ab', 258)
  -- pairs: (a,b) x3, (space,a) x2 -> merge a+b first (ids 98, 99), then space + that (33, 257)
  t.eq(tok.vocab_size, 258)
  t.eq(tok:to_meta().merges, { { 98, 99 }, { 33, 257 } })
  t.eq(tok:encode('ab ab'), { 257, 258 })
  t.eq(tok:encode('ba'), { 99, 98 })
  t.eq(tok:decode({ 258, 257 }), ' abab')
  -- no pair occurs twice any more: training stops early with a smaller vocabulary
  t.eq(tokenizer.train_bpe('ab ab ab', 300).vocab_size, 258)
end)

t.test('BPE: exact round trip, vocabulary respected, deterministic, meta round trip', function()
  local train = table.concat(paragraphs, '\n\n')
  local tok = tokenizer.train_bpe(train, 300)
  t.eq(tok.vocab_size, 300)
  local samples = { train, 'Call me Ishmael.  Some years ago--never mind how long', 'naïve café — ünïcode ✓',
    '\0\1\2\255\254 binary\n\n\t\r tabs', '   leading and trailing   ', 'x', '' }
  for _, s in ipairs(samples) do
    local ids = tok:encode(s)
    for _, id in ipairs(ids) do t.ok(id >= 1 and id <= tok.vocab_size and id % 1 == 0, 'id ' .. id .. ' within the vocabulary') end
    t.eq(tok:decode(ids), s, 'decode(encode(s)) == s')
  end
  t.ok(#tok:encode(train) < #train / 2, 'BPE compresses its training text')
  local again = tokenizer.train_bpe(train, 300)
  t.eq(again:to_meta(), tok:to_meta(), 'training is deterministic')
  local back = tokenizer.from_meta(json.decode(json.encode(tok:to_meta())))
  t.eq(back:encode(samples[2]), tok:encode(samples[2]))
  raises(function() tok:decode({ 301 }) end, 'not a token id', 'decode of an id beyond the vocabulary')
  raises(function() tokenizer.train_bpe('abc', 100) end, 'vocab_size must be', 'a vocabulary below 256')
  raises(function() tokenizer.from_meta({ type = 'bpe', merges = { { 1, 999 } } }) end, 'may only join', 'bad merges')
end)

t.test('corpus: --text splits are disjoint by document, every 20th held out', function()
  local c = corpus.load { text = corpus_file }
  t.eq(c.n_docs, 45)
  t.eq(c.split_docs.valid, { 10, 30 })
  t.eq(c.split_docs.test, { 20, 40 })
  t.eq(#c.split_docs.train, 41)
  t.eq(c.train:numel() + c.valid:numel() + c.test:numel(), c.n)
  local parts = {}
  for _, s in ipairs({ 'train', 'valid', 'test' }) do parts[s] = text.decode(c[s]) end
  for i = 1, 45 do
    local where = {}
    for _, s in ipairs({ 'train', 'valid', 'test' }) do
      if parts[s]:find('Document ' .. i .. '%.') then where[#where + 1] = s end
    end
    t.eq(where, { corpus.split_of(i) }, 'document ' .. i .. ' is in exactly its own split')
  end
end)

t.test('corpus: an installed corpus splits by document (moby-dick)', function()
  local ok, c = pcall(corpus.load, { name = 'moby-dick' })
  if not ok then print('      (moby-dick not installed: ' .. tostring(c) .. ')') return end
  local seen = {}
  local total = 0
  for _, s in ipairs({ 'train', 'valid', 'test' }) do
    for _, i in ipairs(c.split_docs[s]) do
      t.ok(not seen[i], 'document ' .. i .. ' in one split only')
      seen[i] = true
      total = total + 1
    end
  end
  t.eq(total, c.n_docs)
  t.eq(c.train:numel() + c.valid:numel() + c.test:numel(), c.n)
  -- the validation split starts with document 10, whole
  local st = c.doc_starts:data()
  local doc10 = text.decode(c.bytes:narrow(1, tonumber(st[9]) + 1, tonumber(st[10] - st[9])))
  t.eq(text.decode(c.valid:narrow(1, 1, #doc10)), doc10)
end)

t.test('corpus: gcide entries from a dictd file (index offsets, shared entries, tags dropped)', function()
  local ffi = require 'ffi'
  local dir = tmp .. '/dictd'
  os.execute('mkdir -p ' .. dir .. ' ' .. tmp .. '/gcide-root')
  local entries = {
    '00-database-short\n   A dictionary\n',
    'Whale \\Whale\\, n.\n   A large sea animal.\n   [1913 Webster]\n\n         Quoth the sailor. --Melville.\n   [1913 Webster]\n',
    'Ship \\Ship\\, n.\n   A vessel. [Obs.]\n   [WordNet 1.5]\n',
  }
  local body = table.concat(entries)
  local f = assert(io.open(dir .. '/gcide.dict', 'wb')); f:write(body); f:close()
  os.execute('gzip -f ' .. dir .. '/gcide.dict && mv ' .. dir .. '/gcide.dict.gz ' .. dir .. '/gcide.dict.dz')
  local A = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
  local function b64(n)
    local s = ''
    repeat local d = n % 64; s = A:sub(d + 1, d + 1) .. s; n = math.floor(n / 64) until n == 0
    return s
  end
  local lines, pos = {}, 0
  local heads = { { '00-database-short' }, { 'Whale', 'whales' }, { 'Ship' } }
  for i, e in ipairs(entries) do
    for _, h in ipairs(heads[i]) do lines[#lines + 1] = h .. '\t' .. b64(pos) .. '\t' .. b64(#e) end
    pos = pos + #e
  end
  f = assert(io.open(dir .. '/gcide.index', 'wb')); f:write(table.concat(lines, '\n'), '\n'); f:close()
  pcall(ffi.cdef, 'int setenv(const char *name, const char *value, int overwrite); int unsetenv(const char *name);')
  local saved = os.getenv('EFLA_GCIDE_DIR')
  ffi.C.setenv('EFLA_GCIDE_DIR', dir, 1)
  local ok, c = pcall(corpus.load, { name = 'gcide', root = tmp .. '/gcide-root' })
  if saved then ffi.C.setenv('EFLA_GCIDE_DIR', saved, 1) else ffi.C.unsetenv('EFLA_GCIDE_DIR') end
  t.ok(ok, tostring(c))
  t.eq(c.n_docs, 2, 'the 00-database entry is skipped; two headwords of one entry make one document')
  t.eq(text.decode(c.bytes), 'Whale \\Whale\\, n.\nA large sea animal.\n\nQuoth the sailor. --Melville.\n\n' ..
    'Ship \\Ship\\, n.\nA vessel. [Obs.]\n')
end)

t.test('bad input: unknown or missing corpora, missing or too small --text file', function()
  raises(function() corpus.load { name = 'shakespeare' } end, "unknown corpus 'shakespeare'", 'unknown corpus')
  raises(function() corpus.load { name = 'sotu', root = tmp .. '/empty' } end, 'scripts/install-deps.sh', 'missing npm corpus')
  local ffi = require 'ffi'
  pcall(ffi.cdef, 'int setenv(const char *name, const char *value, int overwrite); int unsetenv(const char *name);')
  local saved = os.getenv('EFLA_GCIDE_DIR')
  ffi.C.setenv('EFLA_GCIDE_DIR', tmp .. '/no-dictd', 1)
  local ok, err = pcall(corpus.load, { name = 'gcide', root = tmp .. '/empty' })
  if saved then ffi.C.setenv('EFLA_GCIDE_DIR', saved, 1) else ffi.C.unsetenv('EFLA_GCIDE_DIR') end
  t.ok(not ok and tostring(err):find('dict-gcide', 1, true), 'missing gcide names its Debian package: ' .. tostring(err))
  raises(function() corpus.load { text = tmp .. '/no-such-file.txt' } end, 'cannot read the file', 'missing --text file')
  local f = assert(io.open(tmp .. '/short.txt', 'w'))
  f:write('one paragraph\n\nand another\n')
  f:close()
  raises(function() corpus.load { text = tmp .. '/short.txt' } end, 'at least 20 are needed', 'too few documents')
end)

local ARGS = { size = 'tiny', d_model = 16, layers = 1, heads = 2, context = 16, batch = 4, steps = 6, lr = 1e-2,
  warmup = 2, accum = 2, eval_every = 1, valid_tokens = 64, seed = 3, quiet = true }
local function args_copy()
  local a = {}
  for k, v in pairs(ARGS) do a[k] = v end
  return LM.resolve_args(a)
end

local data_byte = LM.prepare_data { text = corpus_file, tokenizer = 'byte' }

t.test('training: accumulation, validation, checkpoints; an interrupted run resumes bit-identically', function()
  local _, full = LM.train('efla', args_copy(), data_byte, { out_dir = tmp .. '/full' })
  t.eq(full.steps, 6)
  t.eq(#full.valid, 7, 'validation before training and after each step')
  t.eq(full.valid[1].step, 0)
  t.eq(full.tokens, 6 * 4 * 2 * 16)
  t.ok(full.valid[7].loss < full.valid[1].loss, 'validation loss falls')
  -- the same run stopped after step 3 (as if killed), then resumed from its checkpoint
  local _, part = LM.train('efla', args_copy(), data_byte, { out_dir = tmp .. '/part', stop_at = 3 })
  t.eq(part.steps, 3)
  local _, resumed = LM.train('efla', args_copy(), data_byte, { out_dir = tmp .. '/part',
    resume = string.format('%s/part/efla/step-000003.h5', tmp) })
  t.eq(resumed.steps, 6)
  local a = checkpoint.load(string.format('%s/full/efla/step-000006.h5', tmp))
  local b = checkpoint.load(string.format('%s/part/efla/step-000006.h5', tmp))
  local n = 0
  for name, pa in pairs(a.model) do
    t.eq((pa - b.model[name]):abs():max():item(), 0, 'parameter ' .. name .. ' bit-identical after resume')
    n = n + 1
  end
  t.ok(n > 10, 'compared every parameter')
  for i, st in pairs(a.optim.state) do
    for k, v in pairs(st) do
      if efla.is_tensor(v) then t.eq((v - b.optim.state[i][k]):abs():max():item(), 0, 'optimiser state ' .. i .. '.' .. k) end
    end
  end
  t.eq(a.metrics.loss, b.metrics.loss, 'loss history')
  t.eq(a.metrics.valid_loss, b.metrics.valid_loss, 'validation history')
  t.eq(a.meta.task, 'lm')
  t.eq(a.meta.context, 16)
  t.eq(a.meta.corpus, 'tiny.txt')
  t.eq(a.meta.method, 'efla')
  t.eq(a.meta.order, 'exact')
  t.eq(a.meta.key_norm, 'none')
  t.eq(a.meta.tokenizer, { type = 'byte', vocab_size = 256 })
  t.eq({ a.meta.compute, full.compute, resumed.compute }, { 'float32', 'float32', 'float32' }, 'the compute dtype (auto on the cpu)')
  -- the held-out split an evaluation reads back from the checkpoint alone
  local _, tok, meta = LM.load_checkpoint(string.format('%s/full/efla/step-000006.h5', tmp))
  local test_tokens = LM.held_out(meta, tok, 'test')
  t.eq(text.decode(test_tokens), text.decode(data_byte.test))
end)

t.test('load_checkpoint and generation: the recurrent logits equal the parallel forward', function()
  local model, tok, meta = LM.load_checkpoint(string.format('%s/full/efla/step-000006.h5', tmp))
  t.eq(meta.task, 'lm')
  t.eq(meta.method, 'efla')
  t.eq(tok.vocab_size, 256)
  local prompt = 'Document 3. whale'
  local seen = {}
  local out, ids = LM.generate(model, tok, prompt, { tokens = 12, temperature = 0, max_prompt = 64,
    on_logits = function(row, pos) seen[#seen + 1] = { row:clone(), pos } end })
  t.eq(#ids, 12)
  t.eq(#seen, 12)
  t.eq(out, tok:decode(ids))
  -- the whole sequence at once through the parallel (chunked) form
  local all = tok:encode(prompt)
  for _, id in ipairs(ids) do all[#all + 1] = id end
  local logits = efla.no_grad(function() return (model:forward(efla.tensor({ all }, { dtype = 'int64' }))) end)
  local worst = 0
  for _, s in ipairs(seen) do
    local ref = logits:select(1, 1):select(1, s[2])
    worst = math.max(worst, (ref - s[1]):abs():max():item())
  end
  t.ok(worst < 1e-4, 'recurrent vs parallel logits differ by ' .. worst)
  -- greedy picks the argmax of those logits
  for i, s in ipairs(seen) do t.eq(ids[i], s[1]:argmax(1):item(), 'greedy token ' .. i) end
  -- sampling is reproducible per seed, and top-k 1 is greedy
  local s1 = LM.generate(model, tok, prompt, { tokens = 10, temperature = 1, seed = 7 })
  local s2 = LM.generate(model, tok, prompt, { tokens = 10, temperature = 1, seed = 7 })
  t.eq(s1, s2)
  t.eq(LM.generate(model, tok, prompt, { tokens = 10, temperature = 1, top_k = 1, seed = 9 }), LM.generate(model, tok, prompt, { tokens = 10, temperature = 0 }))
  raises(function() LM.generate(model, tok, '', {}) end, 'the prompt is empty', 'empty prompt')
  raises(function() LM.generate(model, tok, string.rep('x', 17), { max_prompt = meta.context }) end,
    'longer than the 16 this model allows', 'prompt too long')
end)

t.test('sampling rules: temperature, top-k, top-p on hand-made logits', function()
  local lg = { math.log(0.5), math.log(0.3), math.log(0.2) }
  t.eq(LM.sample(lg, 0, nil, nil, 0.99), 1, 'greedy')
  t.eq(LM.sample(lg, 1, nil, nil, 0.49), 1)
  t.eq(LM.sample(lg, 1, nil, nil, 0.51), 2)
  t.eq(LM.sample(lg, 1, nil, nil, 0.81), 3)
  t.eq(LM.sample(lg, 1, 2, nil, 0.99), 2, 'top-k 2 never gives the third')
  t.eq(LM.sample(lg, 1, nil, 0.5, 0.99), 1, 'top-p 0.5 keeps only the first')
  t.eq(LM.sample(lg, 1, nil, 0.7, 0.7), 2, 'top-p 0.7 keeps two: 0.7 * 0.8 falls in the second')
end)

t.test('bits per byte: byte = loss / ln 2; BPE counts the bytes the targets stand for', function()
  local model = LM.load_checkpoint(string.format('%s/full/efla/step-000006.h5', tmp))
  local r = LM.evaluate(model, data_byte.valid, data_byte.tok, { context = 16, batch = 4, max_tokens = 0 })
  t.ok(math.abs(r.bpb - r.loss / math.log(2)) < 1e-9, 'byte model: bits per byte = nats per token / ln 2')
  t.eq(r.tokens, math.floor((data_byte.valid:numel() - 1) / 16) * 16)
  local d = LM.prepare_data { text = corpus_file, tokenizer = 'bpe', vocab = 300, quiet = true }
  t.eq(d.tok.vocab_size, 300)
  local ids, vp = {}, d.valid:data()
  for i = 0, d.valid:numel() - 1 do ids[#ids + 1] = tonumber(vp[i]) end
  t.eq(d.tok:decode(ids), text.decode(data_byte.corpus.valid), 'the BPE validation tokens decode to the validation text')
  efla.manual_seed(1)
  local m = efla.nn.build(LM.model_config('efla', args_copy(), 300))
  local e = LM.evaluate(m, d.valid, d.tok, { context = 8, batch = 4, max_tokens = 0 })
  -- the windows' targets: tokens 2..9, 10..17, ...; their bytes by decoding
  local p, bytes = d.valid:data(), 0
  local nw = math.floor((d.valid:numel() - 1) / 8)
  for w = 0, nw - 1 do
    for j = 1, 8 do bytes = bytes + #d.tok:token_bytes(tonumber(p[w * 8 + j])) end
  end
  t.eq(e.bytes, bytes)
  t.ok(math.abs(e.bpb - e.loss * e.tokens / math.log(2) / bytes) < 1e-9)
end)

t.test('--recompute-states reaches every delta-rule layer and gives the same gradients', function()
  local a = args_copy()
  a.recompute_states = true
  local cfg = LM.model_config('efla', a, 256)
  t.eq(cfg.recompute_states, true)
  t.eq(LM.model_config('efla', args_copy(), 256).recompute_states, nil)
  local grads = {}
  for _, rs in ipairs({ true, false }) do
    efla.manual_seed(2)
    cfg.recompute_states = rs
    local m = efla.nn.build(cfg)
    for _, layer in ipairs(m.layers) do t.eq(layer.attn.recompute_states, rs) end
    local tok = efla.randint(1, 257, { 2, 24 })
    m:loss(tok, tok):backward()
    grads[#grads + 1] = m.layers[1].attn.k_proj.weight.grad:clone()
  end
  t.ok((grads[1] - grads[2]):abs():max():item() <= 1e-6 * grads[2]:abs():max():item(), 'same gradient either way')
end)

t.test('load_checkpoint refuses an sMNIST checkpoint with a clear message', function()
  local S = require 'efla.tasks.smnist'
  local cfg = S.model_config('efla', { d_model = 8 })
  local m = efla.nn.build(cfg)
  local path = tmp .. '/smnist.h5'
  checkpoint.save(path, { model = m:state_dict(), meta = { recipe = 'smnist', config = cfg } })
  raises(function() LM.load_checkpoint(path) end, 'is not a language-model checkpoint', 'sMNIST checkpoint')
  raises(function() LM.load_checkpoint(tmp .. '/none.h5') end, 'no such file', 'missing checkpoint')
end)

local function sh(cmd)
  local ok = os.execute(cmd)
  return ok == 0 or ok == true
end

t.test('recipes: lm.lua --method both on a --text file, then generate.lua; errors exit non-zero', function()
  local out = tmp .. '/recipe'
  local cmd = string.format('EFLA_PROGRESS=plain %s recipes/lm.lua --text %s --method both --d-model 16 --layers 1 --heads 2 ' ..
    '--context 16 --batch 4 --steps 3 --valid-tokens 64 --sample-tokens 5 --out %s > %s/lm.log 2>&1', bin, corpus_file, out, tmp)
  t.ok(sh(cmd), 'recipes/lm.lua failed; see ' .. tmp .. '/lm.log')
  local log = require('efla.data').read_file(tmp .. '/lm.log')
  t.ok(log:find('comparison', 1, true), 'the comparison is printed')
  t.ok(log:find('efla sample', 1, true), 'a sample is printed')
  local results = json.decode(require('efla.data').read_file(out .. '/results.json'))
  t.eq(#results.runs, 2)
  t.eq(results.comparison.runs, { 'efla', 'deltanet' })
  t.ok(math.abs(results.comparison.valid_loss_difference - (results.runs[2].valid_loss - results.runs[1].valid_loss)) < 1e-12)
  t.ok(results.provenance.efla_version and results.provenance.git_revision and results.provenance.date, 'provenance')
  t.eq(results.provenance.seed, 1)
  t.eq({ results.runs[1].compute, results.runs[2].compute }, { 'float32', 'float32' }, 'the compute dtype each run used')
  t.ok(log:find(', compute float32, threads', 1, true), 'the start-up line says the compute dtype:\n' .. log)
  t.ok(require('efla.data').exists(out .. '/valid.csv') and require('efla.data').exists(out .. '/train.csv'), 'CSVs')
  local ck = out .. '/efla/step-000003.h5'
  t.ok(sh(string.format('%s recipes/generate.lua --checkpoint %s --prompt "Document" --tokens 8 --quiet > %s/gen.txt 2>&1', bin, ck, tmp)),
    'generate.lua failed')
  local gen = require('efla.data').read_file(tmp .. '/gen.txt')
  t.ok(gen:sub(1, 8) == 'Document' and #gen >= 8 + 8, 'the prompt and 8 bytes: ' .. gen)
  t.ok(not sh(string.format('%s recipes/generate.lua --checkpoint %s/smnist.h5 --prompt x > %s/bad.txt 2>&1', bin, tmp, tmp)),
    'an sMNIST checkpoint makes generate.lua fail')
  t.ok(require('efla.data').read_file(tmp .. '/bad.txt'):find('not a language-model checkpoint', 1, true))
  for _, r in ipairs({ 'lm', 'generate' }) do
    t.ok(sh(string.format('%s recipes/%s.lua --help > %s/help.txt 2>&1', bin, r, tmp)), r .. ' --help exits 0')
    t.ok(require('efla.data').read_file(tmp .. '/help.txt'):find('usage: efla recipes/' .. r .. '.lua', 1, true), r .. ' usage')
  end
  t.ok(not sh(string.format('%s recipes/lm.lua --text %s/missing.txt > %s/bad2.txt 2>&1', bin, tmp, tmp)), 'missing --text fails')
  t.ok(require('efla.data').read_file(tmp .. '/bad2.txt'):find('cannot read the file', 1, true))
end)

t.done()

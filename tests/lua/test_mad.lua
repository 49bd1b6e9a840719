-- tests/lua/test_mad.lua: the MAD synthetic task generators (efla.data.mad) against their
-- published definitions on fixed seeds (sizes, vocabulary ranges, where the answers are,
-- noise), the data sets they make, the auto-encoder for compression, a two-step training
-- run, --compute (mixed precision: resolved, applied and recorded, on the CPU; the recipe's
-- mad.json and mad.csv), and clear errors on bad settings.
-- Run: build/efla tests/lua/test_mad.lua [name-pattern]
local efla = require 'efla'
local t = dofile('tests/lua/testlib.lua')
local mad = require 'efla.data.mad'
local random = require 'efla.eval.random'
local M = require 'efla.eval.mad'

local IG = mad.IGNORE
local function gen(task, cfg, seed, training, n)
  local rng = random.Stream(seed)
  local out = {}
  for i = 1, n or 1 do
    local x, y = mad.instance(task, cfg, rng, training)
    out[i] = { x = x, y = y }
  end
  return out
end
local function in_range(list, lo, hi)
  for _, v in ipairs(list) do if v < lo or v > hi then return false end end
  return true
end

t.test('published baselines', function()
  local c = mad.config('in-context-recall')
  t.eq({ c.vocab_size, c.seq_len, c.multi_query, c.n_train, c.n_test }, { 16, 128, true, 12800, 1280 })
  local n = mad.config('noisy-in-context-recall')
  t.eq({ n.vocab_size, n.noise_vocab_size, n.frac_noise }, { 32, 16, 0.2 })
  local f = mad.config('fuzzy-in-context-recall')
  t.eq({ f.k_motif_size, f.v_motif_size }, { 3, 3 })
  local s = mad.config('selective-copying')
  t.eq({ s.seq_len, s.num_tokens_to_copy }, { 256, 16 })
  t.eq({ mad.config('compression').seq_len, mad.config('memorization').vocab_size, mad.config('memorization').n_train }, { 32, 256, 256 })
end)

t.test('in-context recall: key/value halves, one value per key, multi-query targets', function()
  local c = mad.config('in-context-recall')
  for _, inst in ipairs(gen('in-context-recall', c, 11, false, 20)) do
    local x, y = inst.x, inst.y
    t.eq(#x, 127); t.eq(#y, 127)
    local map, seen = {}, {}
    for i = 1, 127, 2 do
      t.ok(x[i] >= 0 and x[i] < 8, 'keys are tokens 0..7')
      if i + 1 <= 127 then
        t.ok(x[i + 1] >= 8 and x[i + 1] < 16, 'values are tokens 8..15')
        if map[x[i]] then t.eq(x[i + 1], map[x[i]], 'a key keeps its value') end
        map[x[i]] = x[i + 1]
        -- shifted: the target at a key position is its value when the key was seen before
        t.eq(y[i], seen[x[i]] and x[i + 1] or IG)
        t.eq(y[i + 1], IG)
        seen[x[i]] = true
      end
    end
    -- the probe: the last input is a key seen before; its target is that key's value
    t.ok(y[127] ~= IG and y[127] == map[x[127]])
  end
  -- training targets are the next input token
  local tr = gen('in-context-recall', c, 11, true)[1]
  local te = gen('in-context-recall', c, 11, false)[1]
  t.eq(tr.x, te.x)
  for i = 1, 126 do t.eq(tr.y[i], tr.x[i + 1]) end
end)

t.test('noisy recall: noise tokens from the top 16, in pairs, never scored, ~20% of the slots', function()
  local c = mad.config('noisy-in-context-recall')
  local slots, noisy = 0, 0
  for _, inst in ipairs(gen('noisy-in-context-recall', c, 5, false, 50)) do
    local x, y = inst.x, inst.y
    t.eq(#x, 127)
    t.ok(in_range(x, 0, 31))
    for i = 1, 125, 2 do
      slots = slots + 1
      local a, b = x[i] >= 16, x[i + 1] >= 16
      t.eq(a, b, 'noise comes in pairs')
      if a then noisy = noisy + 1; t.eq(y[i], IG); t.eq(y[i + 1], IG)
      else t.ok(x[i] < 8 and x[i + 1] >= 8 and x[i + 1] < 16) end
    end
  end
  local frac = noisy / slots
  t.ok(frac > 0.17 and frac < 0.23, 'noise fraction ' .. frac)
end)

t.test('fuzzy recall: left padding, motifs of distinct tokens, the probe inside and at the end', function()
  local c = mad.config('fuzzy-in-context-recall')   -- pad 15, keys 0..6, values 7..14
  for _, inst in ipairs(gen('fuzzy-in-context-recall', c, 9, false, 20)) do
    local x, y = inst.x, inst.y
    t.eq(#x, 128)
    local first = 1
    while x[first] == 15 do t.eq(y[first], IG); first = first + 1 end
    for i = first, 128 do t.ok(x[i] ~= 15, 'padding only on the left') end
    -- the scored targets are values; the last scored run is the probe value
    for i = 1, 128 do if y[i] ~= IG then t.ok(y[i] >= 7 and y[i] <= 14) end end
    -- test keys are 3 tokens: the probe key is the 3 inputs before the final value motif
    local last = 128
    while y[last - 1] ~= IG do last = last - 1 end       -- last = first scored position of the final value
    local key = { x[last - 2], x[last - 1], x[last] }
    t.ok(in_range(key, 0, 6), 'the probe key is 3 key tokens')
    t.ok(key[1] ~= key[2] and key[2] ~= key[3] and key[1] ~= key[3], 'motif tokens are distinct')
    local s = table.concat(x, ',', first, last - 3)
    t.ok((',' .. s .. ','):find(',' .. table.concat(key, ',') .. ',', 1, true), 'the probe key appears earlier')
  end
  -- training keys have 1..3 tokens: some instance has a value token right after a single key token
  local tr = gen('fuzzy-in-context-recall', c, 9, true, 5)
  for _, inst in ipairs(tr) do t.eq(#inst.x, 128); for i = 1, 127 do t.eq(inst.y[i], inst.x[i + 1]) end end
end)

t.test('selective copying: data tokens among blanks, copy token, answers in the last n positions', function()
  local c = mad.config('selective-copying', { seq_len = 40, num_tokens_to_copy = 6 })
  for _, inst in ipairs(gen('selective-copying', c, 2, false, 10)) do
    local x, y = inst.x, inst.y
    t.eq(#x, 40); t.eq(#y, 40)
    t.eq(x[34], 15, 'the copy token sits at L - n')
    local data_tokens = {}
    for i = 1, 33 do
      t.ok(x[i] <= 14)
      if x[i] ~= 14 then data_tokens[#data_tokens + 1] = x[i] end
      t.eq(y[i], IG)
    end
    t.eq(#data_tokens, 6)
    t.eq(x[33] ~= 14, true, 'the last data token comes right before the copy token')
    t.eq(y[34], IG)
    for i = 1, 6 do t.eq(x[34 + i], 14); t.eq(y[34 + i], data_tokens[i]) end
  end
end)

t.test('compression: L-1 data tokens and the compression token; targets are the inputs', function()
  local c = mad.config('compression')
  local inst = gen('compression', c, 4)[1]
  t.eq(#inst.x, 32); t.eq(inst.x[32], 15)
  t.ok(in_range({ unpack(inst.x, 1, 31) }, 0, 14))
  t.eq(inst.y, inst.x)
end)

t.test('memorization: a fixed key->value bijection, queried at the insert token', function()
  local c = mad.config('memorization')
  local map = mad.kv_map(255, 12345)
  local count, values = 0, {}
  for k, v in pairs(map) do
    count = count + 1
    t.ok(k >= 0 and k < 127 and v >= 127 and v < 255)
    t.ok(not values[v], 'one key per value'); values[v] = true
  end
  t.eq(count, 127)
  for _, inst in ipairs(gen('memorization', c, 8, true, 10)) do
    t.eq(#inst.x, 32)
    for i = 1, 32, 2 do
      t.eq(inst.x[i + 1], 255); t.eq(inst.y[i], IG)
      t.eq(inst.y[i + 1], map[inst.x[i]])
    end
  end
end)

t.test('datasets: ids are tokens + 1, ignored targets -100, the seed fixes the data', function()
  local c = mad.config('selective-copying', { seq_len = 24, num_tokens_to_copy = 4 })
  local a = mad.dataset('selective-copying', c, { n = 6, seed = 3 })
  local b = mad.dataset('selective-copying', c, { n = 6, seed = 3 })
  local d = mad.dataset('selective-copying', c, { n = 6, seed = 4 })
  t.eq(a.inputs:size():totable(), { 6, 24 })
  t.eq(a.n_scored, 24)
  t.eq(a.inputs:totable(), b.inputs:totable())
  t.ok(not t.deep_eq(a.inputs:totable(), d.inputs:totable()))
  local inst = gen('selective-copying', c, 3)[1]
  local row = a.inputs:totable()[1]
  for i = 1, 24 do t.eq(row[i], inst.x[i] + 1) end
  t.eq(a.targets:totable()[1][1], -100)
  t.eq(a.targets:totable()[1][24], inst.y[24] + 1)
end)

t.test('auto-encoder: logits for every position from the last state; gradients reach the encoder', function()
  efla.manual_seed(1)
  local cfg = M.model_config('compression', 'efla', 'cpu', mad.config('compression', { seq_len = 8 }), { d_model = 8, n_heads = 1 })
  local m = M.build(cfg)
  local x = efla.randint(1, 17, { 3, 8 }):long()
  local logits = m:forward(x)
  t.eq(logits:size():totable(), { 3, 8, 16 })
  efla.nn.functional.cross_entropy(logits, x):backward()
  t.ok(m.embed.weight.grad ~= nil and m.embed.weight.grad:abs():sum():item() > 0)
  -- deterministic, and the first token reaches the decoder through the recurrence
  t.near(m:forward(x):totable(), logits:detach():totable(), 1e-6)
  local x2 = x:clone()
  x2[1][1] = x[1][1]:item() % 16 + 1
  t.ok((m:forward(x2):narrow(1, 1, 1) - logits:detach():narrow(1, 1, 1)):abs():max():item() > 0, 'the first token matters')
end)

t.test('a two-step training run per backbone gives an accuracy in [0, 1] over the scored targets', function()
  for _, task in ipairs({ 'in-context-recall', 'compression' }) do
    local r = M.run(task, 'deltanet', { scale = 'cpu', seed = 2, epochs = 1, n_train = 8, n_test = 4, batch = 4, quiet = true,
      task_overrides = { seq_len = 16 } })
    t.eq(r.steps, 2)
    t.ok(r.accuracy >= 0 and r.accuracy <= 1)
    t.ok(r.n_scored > 0)
    t.eq(r.config.order, 1); t.eq(r.config.key_norm, 'l2')
  end
  t.near(M.chance('in-context-recall', mad.config('in-context-recall')), 1 / 8, 1e-12)
  t.near(M.chance('selective-copying', mad.config('selective-copying')), 1 / 14, 1e-12)
end)

t.test('--compute: each run resolves it (auto = float32 on the cpu), trains in it and records it', function()
  local function run(task, compute)
    return M.run(task, 'efla', { scale = 'cpu', seed = 2, epochs = 1, n_train = 8, n_test = 4, batch = 4, quiet = true,
      task_overrides = { seq_len = 16 }, compute = compute })
  end
  for _, task in ipairs({ 'in-context-recall', 'compression' }) do   -- CausalLM and the auto-encoder
    local auto, f32, bf16 = run(task, nil), run(task, 'float32'), run(task, 'bfloat16')
    t.eq({ auto.compute, f32.compute, bf16.compute }, { 'float32', 'float32', 'bfloat16' }, task)
    t.eq(auto.final_loss, f32.final_loss, task .. ': auto on the cpu is float32')
    t.ok(bf16.final_loss ~= f32.final_loss, string.format('%s: bfloat16 compute was used (%.7f vs %.7f)', task,
      bf16.final_loss, f32.final_loss))
    t.near(bf16.final_loss, f32.final_loss, 0.05 * f32.final_loss, task .. ': bfloat16 loss near float32')
    t.ok(bf16.accuracy >= 0 and bf16.accuracy <= 1)
  end
  t.raises(function() run('compression', 'fp8') end, "--compute must be auto, bfloat16 or float32, got 'fp8'")
end)

t.test('recipes/mad.lua --compute: printed at start-up, recorded in mad.json and mad.csv', function()
  local bin = os.getenv('EFLA_BIN') or 'build/efla'
  local out = (os.getenv('EFLA_TEST_TMP') or '/tmp') .. '/test_mad_recipe'
  os.execute("rm -rf '" .. out .. "'")
  local p = io.popen(string.format('EFLA_PROGRESS=plain %s recipes/mad.lua --tasks compression --methods efla --n-train 8 ' ..
    '--n-test 4 --batch 4 --epochs 1 --compute bfloat16 --quiet --out %s 2>&1; echo "exit=$?"', bin, out))
  local log = p:read('*a')
  p:close()
  t.eq(tonumber(log:match('exit=(%d+)%s*$')), 0, log)
  t.ok(log:find('device cpu, compute bfloat16', 1, true), 'the start-up line says the compute dtype:\n' .. log)
  local j = require('efla.json').decode(require('efla.data').read_file(out .. '/mad.json'))
  t.eq(j.provenance.compute, 'bfloat16')
  t.eq(j.provenance.args.compute, 'bfloat16')
  t.eq(j.results[1].compute, 'bfloat16')
  local header, rows = require('efla.csv').read(out .. '/mad.csv')
  t.eq(header[#header], 'compute')
  t.eq(rows[1][#header], 'bfloat16')
  os.execute("rm -rf '" .. out .. "'")
end)

t.test('bad settings give clear errors', function()
  local rng = random.Stream(1)
  t.raises(function() mad.config('copying-backwards') end, "unknown task 'copying-backwards'")
  t.raises(function() mad.instance('in-context-recall', mad.config('in-context-recall', { seq_len = 31 }), rng, false) end, 'seq_len must be even')
  t.raises(function() mad.instance('selective-copying', mad.config('selective-copying', { seq_len = 20, num_tokens_to_copy = 10 }), rng, false) end,
    'must exceed 2 * num_tokens_to_copy + 1')
  t.raises(function() mad.instance('noisy-in-context-recall', mad.config('noisy-in-context-recall', { frac_noise = 1.5 }), rng, false) end, 'frac_noise must be in [0, 1)')
  t.raises(function() mad.instance('fuzzy-in-context-recall', mad.config('fuzzy-in-context-recall', { vocab_size = 6 }), rng, false) end, 'too small')
  t.raises(function() mad.dataset('compression', mad.config('compression'), { n = 0 }) end, 'n must be >= 1')
  t.raises(function() M.model_config('compression', 'mamba', 'cpu', mad.config('compression')) end, "method must be 'efla' or 'deltanet'")
end)

t.done()

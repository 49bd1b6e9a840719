-- test_hybrid.lua: softmax attention as a layer (SoftmaxAttention: rotary positions, the KV
-- cache) and CausalLM hybrids built from a layer pattern ('EAWD'): streaming equals the
-- parallel forward, a trained hybrid saves, loads (efla.load_model and LM.load_checkpoint)
-- and generates the tokens its parallel forward picks, the LM methods and --layers, errors.
local t = dofile('tests/lua/testlib.lua')
local efla = require 'efla'
local checkpoint = require 'efla.checkpoint'
local LM = require 'efla.tasks.lm'
local models = require 'efla.nn.models'

local tmp = (os.getenv('EFLA_TEST_TMP') or '/tmp') .. '/test_hybrid'
os.execute('rm -rf ' .. tmp .. ' && mkdir -p ' .. tmp)

local function raises(fn, pattern, what)
  local ok, err = pcall(fn)
  t.ok(not ok, (what or 'an error') .. ' was expected')
  t.ok(tostring(err):find(pattern, 1, true), string.format('%s: the message should contain "%s", got: %s', what or 'error', pattern, tostring(err)))
end

local function maxdiff(a, b) return (a - b):abs():max():item() end

t.test('SoftmaxAttention: token by token with the KV cache equals one call (full and window)', function()
  for _, w in ipairs({ false, 3 }) do
    efla.manual_seed(1)
    local m = efla.nn.SoftmaxAttention { d_model = 12, n_heads = 3, window = w or nil, dtype = 'float64' }
    local x = efla.randn({ 2, 9, 12 }, { dtype = 'float64' })
    local y = m:forward(x)
    local state, pieces = nil, {}
    -- pieces of 4, 1, 4 tokens
    for _, span in ipairs({ { 1, 4 }, { 5, 1 }, { 6, 4 } }) do
      local yi
      yi, state = m:forward(x:narrow(2, span[1], span[2]), state)
      pieces[#pieces + 1] = yi
    end
    t.ok(maxdiff(efla.cat(pieces, 2), y) < 1e-12, 'streamed outputs differ')
    t.eq(state.pos, 9)
    if w then t.eq(state.k:size(2), 3, 'a window keeps only its keys') else t.eq(state.k:size(2), 9) end
  end
end)

t.test('rotary positions: scores depend only on relative position', function()
  efla.manual_seed(2)
  local m = efla.nn.SoftmaxAttention { d_model = 8, n_heads = 1, dtype = 'float64' }
  local a, b = efla.randn({ 1, 1, 1, 8 }, { dtype = 'float64' }), efla.randn({ 1, 1, 1, 8 }, { dtype = 'float64' })
  local function score(pa, pb) return (m:apply_rope(a, pa) * m:apply_rope(b, pb)):sum():item() end
  t.ok(math.abs(score(3, 1) - score(10, 8)) < 1e-12, 'shifting both positions changed the score')
  t.ok(math.abs(score(3, 1) - score(3, 2)) > 1e-6, 'the score should see the distance')
  -- position 0 is the identity
  t.ok(maxdiff(m:apply_rope(a, 0), a) == 0)
end)

t.test('SoftmaxAttention: gradients match finite differences', function()
  efla.manual_seed(3)
  local m = efla.nn.SoftmaxAttention { d_model = 4, n_heads = 2, window = 2, dtype = 'float64' }
  local x = efla.randn({ 1, 5, 4 }, { dtype = 'float64' }):requires_grad_()
  local ok, report = efla.gradcheck(function(xx) return (m:forward(xx)) end, { x })
  t.ok(ok, report)
end)

t.test('CausalLM pattern EAWD: layers, streaming equals the parallel forward', function()
  efla.manual_seed(4)
  local m = efla.nn.build { type = 'CausalLM', vocab_size = 40, d_model = 16, n_heads = 2, layers = 'EAWD', window = 3, dtype = 'float64' }
  t.eq(m.config.n_layers, 4, 'n_layers defaults to the pattern length')
  t.eq(m.layers[1].attn.order, 'exact')
  t.eq(m.layers[2].attn.window, nil)
  t.eq(m.layers[3].attn.window, 3)
  t.eq(m.layers[4].attn.order, 1)
  t.eq(m.layers[4].attn.key_norm, 'l2')
  local ids = efla.tensor({ { 3, 7, 1, 9, 12, 4, 4, 20, 31, 2, 5 } }, { dtype = 'int64' })
  local full = m:forward(ids)
  local states, worst = nil, 0
  for i = 1, ids:size(2) do
    local l
    l, states = m:forward(ids:narrow(2, i, 1):contiguous(), states)
    worst = math.max(worst, maxdiff(l:select(2, 1), full:select(2, i)))
  end
  t.ok(worst < 1e-10, 'token-by-token logits differ by ' .. worst)
  -- the pattern repeats to n_layers
  local r = efla.nn.build { type = 'CausalLM', vocab_size = 10, d_model = 8, n_layers = 5, layers = 'EA' }
  local kinds = {}
  for i = 1, 5 do kinds[i] = r.layers[i].attn.window == nil and r.layers[i].attn.rope ~= nil and 'A' or 'E' end
  t.eq(table.concat(kinds), 'EAEAE')
end)

t.test('a hybrid LM trains, saves, loads and generates what its parallel forward picks', function()
  local args = LM.resolve_args { size = 'tiny', layers = 'EA', d_model = 32, heads = 2, context = 32 }
  t.eq(args.layers, 2)
  t.eq(args.pattern, 'EA')
  local config = LM.model_config('hybrid', args, 256)
  t.eq(config.layers, 'EA')
  efla.manual_seed(5)
  local model = efla.nn.build(config)
  local opt = efla.optim.AdamW(model:parameters(), { lr = 1e-2 })
  local x = efla.randint(1, 257, { 4, 33 })
  local first, last
  for step = 1, 8 do
    opt:zero_grad()
    local loss = model:loss(x:narrow(2, 1, 32):contiguous(), x:narrow(2, 2, 32):contiguous())
    loss:backward()
    opt:step()
    first = first or loss:item()
    last = loss:item()
  end
  t.ok(last < first, string.format('the loss should fall: %.4f -> %.4f', first, last))
  local path = tmp .. '/hybrid.h5'
  checkpoint.save(path, { model = model:state_dict(), meta = { task = 'lm', config = config, method = 'hybrid',
    layers = config.layers, context = 32, tokenizer = { type = 'byte' }, corpus = 'moby-dick' } })
  local loaded = efla.load_model(path)
  t.eq(tostring(loaded), tostring(model:evaluate()))
  local m2, tok = LM.load_checkpoint(path)
  local seen = {}
  local out, ids = LM.generate(m2, tok, 'Call me', { tokens = 10, temperature = 0,
    on_logits = function(row, pos) seen[#seen + 1] = { row:clone(), pos } end })
  t.eq(#ids, 10)
  local all = tok:encode('Call me')
  for _, id in ipairs(ids) do all[#all + 1] = id end
  local logits = efla.no_grad(function() return (loaded:forward(efla.tensor({ all }, { dtype = 'int64' }))) end)
  local worst = 0
  for i, s in ipairs(seen) do
    worst = math.max(worst, maxdiff(logits:select(1, 1):select(1, s[2]), s[1]))
    t.eq(ids[i], logits:select(1, 1):select(1, s[2]):argmax(1):item(), 'greedy token ' .. i)
  end
  t.ok(worst < 1e-4, 'generation logits differ from the parallel forward by ' .. worst)
  t.eq(out, tok:decode(ids))
end)

t.test('methods: transformer and hybrid configs, parameter counts, --layers N or PATTERN', function()
  local args = LM.resolve_args { size = 'tiny' }
  t.eq(LM.model_config('transformer', args, 256).layers, 'A')
  t.eq(LM.model_config('efla', args, 256).layers, nil)
  t.eq(LM.resolve_args({ size = 'tiny', layers = '3' }).layers, 3)
  local counts = {}
  for _, c in ipairs(LM.parameter_counts(args, 256)) do counts[c.method] = c.parameters end
  t.ok(counts.efla and counts.transformer, 'efla and transformer are counted')
  -- equal up to the delta layer's beta projection, short convolutions and output norm
  t.ok(math.abs(counts.efla - counts.transformer) / counts.efla < 0.05, 'parameter counts should be close')
  raises(function() LM.model_config('hybrid', args, 256) end, "has 4 letters but the model has 2 layers")
  raises(function() LM.model_config('nope', args, 256) end, 'method must be one of')
end)

t.test('bad patterns and options: clear errors', function()
  raises(function() efla.nn.build { type = 'CausalLM', layers = 'EXA' } end, "has the letter 'X'")
  raises(function() efla.nn.build { type = 'CausalLM', layers = '' } end, 'a pattern of layer letters')
  raises(function() efla.nn.SoftmaxAttention { d_model = 6, n_heads = 2 } end, 'even head_dim')
  raises(function() efla.nn.SoftmaxAttention { d_model = 8, window = 0 } end, 'window must be a whole number')
  local m = efla.nn.SoftmaxAttention { d_model = 8 }
  raises(function() m:forward(efla.randn({ 1, 3, 8 }), 'cache') end, 'state must be nil or the table')
  -- G needs DeltaAttention's gate option: with it the layer has a gate, without it a clear error
  local ok, err = pcall(efla.nn.build, { type = 'CausalLM', d_model = 8, layers = 'G' })
  if ok then
    t.ok(err.layers[1].attn:num_parameters() > efla.nn.build({ type = 'CausalLM', d_model = 8, layers = 'E' }).layers[1].attn:num_parameters())
  else
    t.ok(tostring(err):find("needs DeltaAttention's gate option", 1, true), tostring(err))
  end
end)

local function sh(cmd)
  local ok = os.execute(cmd)
  return ok == 0 or ok == true
end

t.test('recipes: lm.lua --layers EW on a --text file, generate.lua from it; a bad pattern exits non-zero', function()
  local bin = os.getenv('EFLA_BIN') or 'build/efla'
  local words = { 'whale', 'sea', 'ship', 'captain', 'harpoon', 'voyage' }
  local paras = {}
  for i = 1, 40 do
    local w = { 'Document ' .. i .. '.' }
    for j = 1, 30 do w[#w + 1] = words[(i * 5 + j * j) % #words + 1] end
    paras[i] = table.concat(w, ' ')
  end
  local file = tmp .. '/tiny.txt'
  local f = assert(io.open(file, 'w'))
  f:write(table.concat(paras, '\n\n'), '\n')
  f:close()
  local out = tmp .. '/recipe'
  t.ok(sh(string.format('EFLA_PROGRESS=plain %s recipes/lm.lua --text %s --method hybrid --layers EW --window 4 --d-model 16 ' ..
    '--heads 2 --context 16 --batch 4 --steps 2 --valid-tokens 64 --sample-tokens 5 --threads 1 --out %s > %s/lm.log 2>&1',
    bin, file, out, tmp)), 'recipes/lm.lua failed; see ' .. tmp .. '/lm.log')
  local log = require('efla.data').read_file(tmp .. '/lm.log')
  t.ok(log:find('2 layers (EW)', 1, true), 'the pattern is printed')
  t.ok(log:find('parameters of every method at these flags:', 1, true), 'the parameter comparison is printed')
  local ck = out .. '/hybrid/step-000002.h5'
  local info = checkpoint.info(ck)
  t.eq(info.meta.layers, 'EW')
  t.eq(info.meta.config.window, 4)
  t.ok(sh(string.format('%s recipes/generate.lua --checkpoint %s --prompt "Document" --tokens 6 > %s/gen.txt 2>%s/gen.err', bin, ck, tmp, tmp)),
    'generate.lua failed')
  t.ok(require('efla.data').read_file(tmp .. '/gen.err'):find('layers EW', 1, true), 'generate names the pattern')
  t.ok(not sh(string.format('%s recipes/lm.lua --text %s --layers EQ > %s/bad.txt 2>&1', bin, file, tmp)), 'a bad letter fails')
  t.ok(require('efla.data').read_file(tmp .. '/bad.txt'):find("has the letter 'Q'", 1, true), 'and says which letter')
end)

t.done()

-- test_smnist_model.lua: the published sMNIST model (SequenceClassifier arch 'published')
-- against a plain-Lua token-by-token reference, its layers, initialisation rules and AdamW
-- groups, the efla-variant kept for old checkpoints, the --seeds aggregation
-- (tasks/seeds.lua) on constructed numbers, and the --compute option (tasks/precision.lua:
-- how auto resolves, what a checkpoint records, that S.train applies it; CPU only). Tiny
-- sizes: a few seconds.
local t = dofile('tests/lua/testlib.lua')
local efla = require 'efla'
local nn = efla.nn
local S = require 'efla.tasks.smnist'
local seeds = require 'efla.tasks.seeds'
local csv = require 'efla.csv'

local F64 = { dtype = 'float64' }
local exp, sqrt = math.exp, math.sqrt

local function near(a, b, tol, msg)
  t.ok(math.abs(a - b) <= tol, string.format('%s: %.12g vs %.12g (tol %g)', msg or 'near', a, b, tol))
end

local function names_of(m)
  local out = {}
  for i, np in ipairs(m:named_parameters()) do out[i] = np[1] end
  table.sort(out)
  return out
end

local function stats(x)
  local v = x:double():reshape(-1):totable()
  local n, sum, lo, hi = #v, 0, math.huge, -math.huge
  for _, a in ipairs(v) do sum, lo, hi = sum + a, math.min(lo, a), math.max(hi, a) end
  local mean, ss = sum / n, 0
  for _, a in ipairs(v) do ss = ss + (a - mean) ^ 2 end
  return mean, sqrt(ss / n), lo, hi
end

-- ---- plain-Lua reference of the published forward pass ----------------------------------------
local function erf(x) -- Abramowitz-Stegun 7.1.26 is too coarse; use the series/continued form via tanh-free integral
  -- erf by its Maclaurin series (|x| small here) with enough terms for 1e-13
  local sum, term, n = x, x, 0
  repeat
    n = n + 1
    term = -term * x * x / n
    local add = term / (2 * n + 1)
    sum = sum + add
  until math.abs(add) < 1e-17 or n > 200
  return 2 / sqrt(math.pi) * sum
end
local function gelu(v) return 0.5 * v * (1 + erf(v / sqrt(2))) end
local function matvec(W, x) -- W [out][in]
  local y = {}
  for i, row in ipairs(W) do
    local s = 0
    for j, w in ipairs(row) do s = s + w * x[j] end
    y[i] = s
  end
  return y
end

local function published_ref(m, pixels, deltanet)
  local c = m.config
  local d = c.d_model
  local Win, P = m.input_proj.weight:totable(), m.pos_emb.weight:totable()
  local Wq, Wk, Wv = m.attn.q_proj.weight:totable(), m.attn.k_proj.weight:totable(), m.attn.v_proj.weight:totable()
  local wb, bb = m.attn.b_proj.weight:totable()[1], m.attn.b_proj.bias:totable()[1]
  local Sm = {}
  for i = 1, d do Sm[i] = {}; for j = 1, d do Sm[i][j] = 0 end end
  local q
  for ti, x in ipairs(pixels) do
    local h = {}
    for j = 1, d do h[j] = gelu(Win[j][1] * x + P[ti][j]) end
    q = matvec(Wq, h)
    local k, v = matvec(Wk, h), matvec(Wv, h)
    local z = bb
    for j = 1, d do z = z + wb[j] * h[j] end
    local beta = 1 / (1 + exp(-z))
    local lam = 0
    for j = 1, d do lam = lam + k[j] * k[j] end
    local alpha
    if deltanet then
      local n = sqrt(lam)
      for j = 1, d do k[j] = k[j] / n end
      alpha = beta
    else
      local lc = math.max(lam, 1e-6)
      alpha = (1 - exp(-beta * lc)) / (lc + 1e-6)  -- the published reference's epsilons
    end
    local pred = {}
    for j = 1, d do
      local s = 0
      for i = 1, d do s = s + Sm[i][j] * k[i] end
      pred[j] = s
    end
    for i = 1, d do for j = 1, d do Sm[i][j] = Sm[i][j] + alpha * k[i] * (v[j] - pred[j]) end end
  end
  local o = {}
  for j = 1, d do
    local s = 0
    for i = 1, d do s = s + Sm[i][j] * q[i] end -- raw last query, no scale
    o[j] = s
  end
  local mean, var = 0, 0
  for j = 1, d do mean = mean + o[j] / d end
  for j = 1, d do var = var + (o[j] - mean) ^ 2 / d end
  local g, b = m.norm.weight:totable(), m.norm.bias:totable()
  local n = {}
  for j = 1, d do n[j] = (o[j] - mean) / sqrt(var + m.norm.eps) * g[j] + b[j] end
  local logits = matvec(m.classifier.weight:totable(), n)
  local cb = m.classifier.bias:totable()
  for i = 1, #logits do logits[i] = logits[i] + cb[i] end
  return logits
end

t.test('published model: layers and parameter names as published', function()
  local m = nn.SequenceClassifier(S.model_config('efla', { d_model = 64 }))
  t.eq(m.config.arch, 'published')
  t.eq(m.config.query_norm, 'none')
  t.eq(m.config.scale, 1)
  t.eq(names_of(m), { 'attn.b_proj.bias', 'attn.b_proj.weight', 'attn.k_proj.weight', 'attn.q_proj.weight',
    'attn.v_proj.weight', 'classifier.bias', 'classifier.weight', 'input_proj.weight', 'norm.bias', 'norm.weight',
    'pos_emb.weight' })
  t.eq(m:num_parameters(), 64 + 784 * 64 + 3 * 64 * 64 + 64 + 1 + 2 * 64 + 64 * 10 + 10)
  local v = nn.SequenceClassifier(S.model_config('efla', { model = 'efla-variant' }))
  t.ok(v.input_proj.bias ~= nil and v.attn.o_proj ~= nil, 'efla-variant keeps the input bias and the output projection')
  -- a config without arch (a checkpoint from before) rebuilds efla's earlier model
  local old = nn.build({ type = 'SequenceClassifier', seq_len = 4, d_model = 4 })
  t.eq(old.config.arch, 'efla-variant')
  t.ok(old.attn.o_proj ~= nil, 'old configs get the output projection')
  local ok, err = pcall(nn.SequenceClassifier, { arch = 'nope' })
  t.ok(not ok and tostring(err):find("arch must be 'published' or 'efla%-variant'"), tostring(err))
end)

t.test('published model forward = token-by-token reference (EFLA and DeltaNet)', function()
  for _, method in ipairs({ 'efla', 'deltanet' }) do
    efla.manual_seed(11)
    local cfg = S.model_config(method, { d_model = 6 })
    cfg.seq_len, cfg.dtype, cfg.chunk_size = 9, 'float64', 16
    local m = nn.SequenceClassifier(cfg)
    local x = efla.rand({ 2, 9 }, F64)
    local logits = m(x):totable()
    for b = 1, 2 do
      local ref = published_ref(m, x:totable()[b], method == 'deltanet')
      for i = 1, 10 do near(logits[b][i], ref[i], 1e-10, method .. ' logit') end
    end
  end
end)

t.test('published initialisation: PyTorch defaults where published, xavier for q, k, v', function()
  efla.manual_seed(3)
  local m = nn.SequenceClassifier(S.model_config('efla'))
  local _, sd, lo, hi = stats(m.input_proj.weight)        -- U(-1, 1): fan_in 1
  t.ok(lo >= -1 and hi <= 1 and hi > 0.8 and lo < -0.8, 'input_proj in [-1, 1]')
  near(sd, 1 / sqrt(3), 0.12, 'input_proj std')
  local mean, psd = stats(m.pos_emb.weight)
  near(mean, 0, 0.002, 'pos_emb mean'); near(psd, 0.02, 0.001, 'pos_emb std')
  local a = sqrt(6 / 128)
  for _, n in ipairs({ 'q_proj', 'k_proj', 'v_proj' }) do
    local _, s, l, h = stats(m.attn[n].weight)
    t.ok(l >= -a and h <= a, n .. ' within the xavier bound')
    near(s, a / sqrt(3), 0.01, n .. ' std')
  end
  local _, _, bl, bh = stats(m.attn.b_proj.weight)
  t.ok(bl >= -1 / 8 and bh <= 1 / 8, 'b_proj weight within 1/sqrt(64)')
  t.eq(m.attn.b_proj.bias:totable(), { -2 })
  local _, cs, cl, ch = stats(m.classifier.weight)
  t.ok(cl >= -1 / 8 and ch <= 1 / 8, 'classifier weight within 1/sqrt(64)')
  near(cs, 1 / 8 / sqrt(3), 0.01, 'classifier std')
  local _, _, bl2, bh2 = stats(m.classifier.bias)
  t.ok(bl2 >= -1 / 8 and bh2 <= 1 / 8 and bh2 - bl2 > 0, 'classifier bias drawn in [-1/8, 1/8], not zero')
  t.eq(m.norm.weight:totable()[1], 1); t.eq(m.norm.bias:totable()[1], 0)
  -- kaiming_uniform's bound and spread on a big tensor
  local w = nn.init.kaiming_uniform(efla.empty({ 200, 50 }), sqrt(5))
  local _, ks, kl, kh = stats(w)
  t.ok(kl >= -1 / sqrt(50) and kh <= 1 / sqrt(50), 'kaiming_uniform(a = sqrt 5) within 1/sqrt(fan_in)')
  near(ks, 1 / sqrt(50) / sqrt(3), 0.003, 'kaiming_uniform std')
end)

t.test('AdamW groups: published decays every parameter, efla-variant spares biases and norms', function()
  local m = nn.SequenceClassifier(S.model_config('deltanet'))
  local g = S.param_groups(m, 0.01)
  t.eq(#g, 1)
  t.eq(g[1].weight_decay, 0.01)
  t.eq(#g[1].params, #m:parameters())
  local v = nn.SequenceClassifier(S.model_config('deltanet', { model = 'efla-variant' }))
  local gv = S.param_groups(v, 0.01)
  t.eq(#gv, 2)
  local decayed = {}
  for _, n in ipairs(gv[1].names) do decayed[n] = true end
  t.ok(decayed['attn.q_proj.weight'] and decayed['pos_emb.weight'], 'matrices decay')
  t.ok(not decayed['classifier.bias'] and not decayed['norm.weight'] and not decayed['attn.b_proj.bias'], 'biases and norms do not')
  t.eq(gv[2].weight_decay, 0)
end)

t.test('seeds: seed list, mean and sample std', function()
  t.eq(seeds.seed_list(4, 3), { 4, 5, 6 })
  local ok, err = pcall(seeds.seed_list, 1, 0)
  t.ok(not ok and tostring(err):find('%-%-seeds must be a positive integer'), tostring(err))
  local m, s = seeds.mean_std({ 1, 2, 3, 4 })
  near(m, 2.5, 1e-15, 'mean'); near(s, sqrt(5 / 3), 1e-15, 'sample std')
  m, s = seeds.mean_std({ 0.7 })
  near(m, 0.7, 0, 'one value'); t.eq(s, 0)
  m, s = seeds.mean_std({ 1, 0 / 0, 3 })
  near(m, 2, 0, 'NaN skipped'); near(s, sqrt(2), 1e-15, 'NaN skipped std')
end)

t.test('seeds: aggregate and write over a constructed set of runs', function()
  local function run(name, clean, x10, hist)
    return { name = name, method = name, lr = 1e-3, history = hist, final_loss = hist[#hist], seconds = 1,
      compute = 'bfloat16', results = { scale = { { 1, clean }, { 10, x10 } } } }
  end
  local per_seed = {
    { run('efla', 0.8, 0.7, { 2, 1 }), run('deltanet', 0.6, 0.3, { 2, 1.5 }) },
    { run('efla', 0.9, 0.5, { 2, 0.5 }), run('deltanet', 0.7, 0.1, { 2, 1.1 }) },
    { run('efla', 0.7, 0.6, { 2, 0.9 }), run('deltanet', 0.5, 0.2, { 2, 1.3 }) },
  }
  local agg = seeds.aggregate(per_seed, { 1, 2, 3 })
  t.eq(#agg, 2)
  t.eq(agg[1].name, 'efla')
  near(agg[1].results.scale[1][2], 0.8, 1e-12, 'efla clean mean')
  near(agg[1].std.scale[1], 0.1, 1e-12, 'efla clean std')
  near(agg[2].results.scale[2][2], 0.2, 1e-12, 'deltanet x10 mean')
  near(agg[2].std.scale[2], 0.1, 1e-12, 'deltanet x10 std')
  t.eq(agg[1].per_seed.scale[2], { 0.7, 0.5, 0.6 })
  near(agg[1].history[2], 0.8, 1e-12, 'mean loss curve')
  near(agg[2].final_loss, 1.3, 1e-12, 'mean final loss')
  t.eq(agg[1].seconds, 3)
  t.eq(agg[1].compute, 'bfloat16', 'the compute dtype is kept')
  local dir = (os.getenv('EFLA_TEST_TMP') or '/tmp') .. '/test_smnist_seeds'
  os.execute('rm -rf ' .. dir .. ' && mkdir -p ' .. dir)
  seeds.write(dir, agg)
  local header, rows = csv.read(dir .. '/robustness_scale.csv')
  t.eq(header, { 'scale', 'efla_mean', 'efla_std', 'efla_seed1', 'efla_seed2', 'efla_seed3',
    'deltanet_mean', 'deltanet_std', 'deltanet_seed1', 'deltanet_seed2', 'deltanet_seed3' })
  t.eq(#rows, 2)
  near(rows[2][2], 0.6, 1e-9, 'csv mean'); near(rows[2][3], 0.1, 1e-6, 'csv std'); t.eq(rows[2][6], 0.6)
  t.ok(seeds.summary_table(agg):find('0%.800 ± 0%.100'), seeds.summary_table(agg))
  local bad = { { run('efla', 1, 1, { 1 }) }, { run('deltanet', 1, 1, { 1 }) } }
  local ok, err = pcall(seeds.aggregate, bad, { 1, 2 })
  t.ok(not ok and tostring(err):find("seed 2 has no run 'efla'"), tostring(err))
end)

-- ---- --compute (mixed precision) ----------------------------------------------------------------
local P = require 'efla.tasks.precision'
local tmp = (os.getenv('EFLA_TEST_TMP') or '/tmp') .. '/test_smnist_compute'
os.execute("rm -rf '" .. tmp .. "' && mkdir -p '" .. tmp .. "'")

t.test('--compute: auto is float32 on the cpu, bfloat16 on a GPU; explicit choices pass through', function()
  t.eq(P.compute_dtype('auto', 'cpu'), 'float32')
  t.eq(P.compute_dtype(nil, 'cpu'), 'float32')
  t.eq(P.compute_dtype('auto', nil), 'float32', 'no device is the cpu')
  t.eq(P.compute_dtype('auto', 'cuda'), 'bfloat16')
  t.eq(P.compute_dtype('auto', 'cuda:1'), 'bfloat16')
  t.eq(P.compute_dtype(nil, 'cuda:1'), 'bfloat16')
  for _, dev in ipairs({ 'cpu', 'cuda', 'cuda:1' }) do
    t.eq(P.compute_dtype('float32', dev), 'float32', 'float32 on ' .. dev)
    t.eq(P.compute_dtype('bfloat16', dev), 'bfloat16', 'bfloat16 on ' .. dev)
  end
  t.raises(function() P.compute_dtype('bf16', 'cuda') end, "--compute must be auto, bfloat16 or float32, got 'bf16'")
  -- a resume: auto (or none) keeps the checkpoint's dtype, an explicit choice wins, none recorded = auto
  t.eq({ P.resolve('auto', 'cuda', 'float32') }, { 'float32', 'checkpoint' })
  t.eq({ P.resolve(nil, 'cpu', 'bfloat16') }, { 'bfloat16', 'checkpoint' })
  t.eq({ P.resolve('float32', 'cuda', 'bfloat16') }, { 'float32', 'given' })
  t.eq({ P.resolve('auto', 'cuda:1', nil) }, { 'bfloat16', 'auto' })
  t.eq({ P.resolve('auto', 'cpu', nil) }, { 'float32', 'auto' })
  -- one function: the LM task's name for it is an alias
  t.ok(require('efla.tasks.lm').compute_dtype == P.compute_dtype, 'LM.compute_dtype is precision.compute_dtype')
  -- the option every training recipe takes (the sweeps through S.common_options)
  local o = P.option()
  t.eq({ o[1], o.default, o.choices }, { '--compute', 'auto', { 'auto', 'bfloat16', 'float32' } })
  local found
  for _, opt in ipairs(S.common_options()) do if opt[1] == '--compute' then found = opt end end
  t.ok(found and found.default == 'auto', 'S.common_options has --compute (default auto)')
end)

t.test('--compute: what a checkpoint records; unreadable or older files give nil, no error', function()
  local checkpoint = require 'efla.checkpoint'
  checkpoint.save(tmp .. '/bf16.h5', { model = {}, step = 1, meta = { method = 'efla', compute = 'bfloat16' } })
  checkpoint.save(tmp .. '/old.h5', { model = {}, step = 1, meta = { method = 'efla' } })
  local f = io.open(tmp .. '/text.h5', 'w') f:write('not a checkpoint\n') f:close()
  t.eq(P.recorded(tmp .. '/bf16.h5'), 'bfloat16')
  t.eq(P.recorded(tmp .. '/old.h5'), nil, 'a checkpoint from before --compute')
  t.eq(P.recorded(tmp .. '/text.h5'), nil, 'not HDF5')
  t.eq(P.recorded(tmp .. '/missing.h5'), nil, 'no such file')
  t.eq(P.recorded(nil), nil)
  t.eq(P.resolve('auto', 'cuda', P.recorded(tmp .. '/old.h5')), 'bfloat16', 'an older checkpoint: auto by device')
end)

t.test('S.train applies --compute after the move to the device and records it (cpu)', function()
  local checkpoint = require 'efla.checkpoint'
  local ds = S.load('mnist', 'train', 32)
  local function run(compute, dir)
    local a = { epochs = 1, batch = 16, seed = 1, dataset = 'mnist', quiet = true, compute = compute }
    return S.train('efla', a, ds, { device = 'cpu', out_dir = tmp .. '/' .. dir })
  end
  local m32, i32 = run(nil, 'auto')
  local m16, i16 = run('bfloat16', 'bf16')
  t.eq(i32.compute, 'float32', 'auto on the cpu')
  t.eq(i16.compute, 'bfloat16')
  t.eq(rawget(m32, 'compute_dtype'), nil, 'float32: no compute dtype set')
  t.eq(rawget(m16, 'compute_dtype'), 'bfloat16')
  t.eq(rawget(m16.attn.q_proj, 'compute_dtype'), 'bfloat16', 'on every submodule')
  for _, np in ipairs(m16:named_parameters()) do t.eq(np[2]:dtype(), 'float32', np[1] .. ' stays a float32 master weight') end
  -- bfloat16 compute changes the losses a little, not much
  t.ok(i16.history[1] ~= i32.history[1], string.format('bfloat16 compute was used: %.7f vs %.7f', i16.history[1], i32.history[1]))
  near(i16.history[1], i32.history[1], 0.05 * i32.history[1], 'bfloat16 loss near the float32 loss')
  t.eq(checkpoint.info(i32.checkpoint).meta.compute, 'float32')
  t.eq(checkpoint.info(i16.checkpoint).meta.compute, 'bfloat16')
  -- resuming the bfloat16 run with auto keeps bfloat16; float32 given wins
  local a = { epochs = 2, batch = 16, seed = 1, dataset = 'mnist', quiet = true, compute = 'auto' }
  local m, info = S.train('efla', a, ds, { device = 'cpu', out_dir = tmp .. '/bf16', resume = i16.checkpoint })
  t.eq({ info.steps, info.compute, rawget(m, 'compute_dtype') }, { 4, 'bfloat16', 'bfloat16' })
  a.epochs, a.compute = 3, 'float32'
  m, info = S.train('efla', a, ds, { device = 'cpu', out_dir = tmp .. '/bf16', resume = info.checkpoint })
  t.eq({ info.steps, info.compute, rawget(m, 'compute_dtype') }, { 6, 'float32', nil })
  t.eq(checkpoint.info(info.checkpoint).meta.compute, 'float32')
  t.raises(function() run('float16', 'bad') end, "--compute must be auto, bfloat16 or float32, got 'float16'")
end)

os.execute("rm -rf '" .. tmp .. "'")
t.done()

-- test_checkpoint.lua: efla.json and efla.checkpoint: round trips of nested state, the
-- all-mismatches report, Manager retention, damaged files raising the intended errors,
-- and the files opening in h5py (/usr/bin/python3) and h5dump.
-- Run: efla tests/lua/test_checkpoint.lua   (prints "N passed, N failed")
local ffi = require 'ffi'
local efla = require 'efla'
local json = require 'efla.json'
local checkpoint = require 'efla.checkpoint'
local lib = efla.internal.lib

local passed, failed = 0, 0
local function check(cond, what)
  if cond then passed = passed + 1
  else failed = failed + 1; io.stderr:write('FAIL ' .. debug.getinfo(2, 'l').currentline .. ': ' .. tostring(what) .. '\n') end
end
-- fn must raise an error whose message contains every needle
local function check_error(fn, needles, what)
  local ok, err = pcall(fn)
  err = tostring(err)
  local good = not ok
  for _, n in ipairs(type(needles) == 'table' and needles or { needles }) do
    if not err:find(n, 1, true) then good = false end
  end
  if good then passed = passed + 1
  else
    failed = failed + 1
    io.stderr:write(string.format('FAIL %d: %s: expected an error containing %s, got %s\n', debug.getinfo(2, 'l').currentline,
      what, table.concat(type(needles) == 'table' and needles or { needles }, ' / '), ok and 'no error' or err))
  end
  return err
end

pcall(ffi.cdef, 'int getpid(void);')
local dir = string.format('%s/test_checkpoint.%d', os.getenv('EFLA_TEST_TMP') or '/tmp', ffi.C.getpid())
os.execute("mkdir -p '" .. dir .. "'")
local function P(name) return dir .. '/' .. name end

local function read_file(p) local f = assert(io.open(p, 'rb')); local s = f:read('*a'); f:close(); return s end
local function write_file(p, s) local f = assert(io.open(p, 'wb')); f:write(s); f:close() end
local function exists(p) local f = io.open(p, 'rb'); if f then f:close() end; return f ~= nil end
local function files_matching(pattern)
  local out = {}
  local p = io.popen("ls -1A '" .. dir .. "'")
  for line in p:lines() do if line:match(pattern) then out[#out + 1] = line end end
  p:close()
  return out
end
local function succeeded(rc) return rc == 0 or rc == true end  -- os.execute in 5.1 or 5.2 style

local function dtype(t) return ffi.string(lib.efla_dtype_name(lib.efla_tensor_dtype(t.ptr))) end

-- exact comparison: dtype, shape and bytes
local function same_tensor(a, b)
  if a == nil or b == nil then return false end
  if dtype(a) ~= dtype(b) or tostring(a:size()) ~= tostring(b:size()) then return false end
  local n = tonumber(lib.efla_tensor_numel(a.ptr)) * tonumber(lib.efla_dtype_size(lib.efla_tensor_dtype(a.ptr)))
  if n == 0 then return true end
  local ba, bb = ffi.new('uint8_t[?]', n), ffi.new('uint8_t[?]', n)
  assert(lib.efla_to_buffer(a.ptr, ba, n) == 0 and lib.efla_to_buffer(b.ptr, bb, n) == 0)
  return ffi.string(ba, n) == ffi.string(bb, n)
end

-- ---- json ---------------------------------------------------------------------------------------
do
  local v = { b = { 1, 2.5, 1 / 3, -1e-300, 1e300 }, a = 'quote " slash \\ nl \n tab \t é 😀', c = {}, d = json.array(),
    e = { t = true, f = false, n = json.null }, big = 18446744073709551615ULL, neg = -9223372036854775807LL }
  local s = json.encode(v)
  check(s:find('^{"a":') and s:find('"big":18446744073709551615') ~= nil, 'sorted keys, exact uint64: ' .. s)
  check(json.encode(json.decode(s)) == s, 'decode(encode(x)) encodes the same')
  local u = json.decode(s)
  check(u.b[3] == 1 / 3 and u.b[4] == -1e-300 and u.a == v.a and u.e.n == json.null and u.e.f == false, 'values round trip')
  check(u.big == 18446744073709551615ULL and u.neg == -9223372036854775807LL, 'big integers come back exactly')
  check(json.encode({ z = 1, a = 2, m = 3 }) == '{"a":2,"m":3,"z":1}', 'deterministic key order')
  local nan = json.decode(json.encode({ 0 / 0, math.huge, -math.huge }))
  check(nan[1] ~= nan[1] and nan[2] == math.huge and nan[3] == -math.huge, 'NaN and infinities (as Python writes them)')
  check(json.decode(' {"k" : [ 1 , -2.5e3, "\\u00e9\\ud83d\\ude00" ] } ').k[3] == 'é😀', 'ordinary JSON with \\u escapes')
  check_error(function() json.decode('{"a": 1,\n  "b": [1, 2,\n  }') end, { 'line 3, column 3', "expected a value" }, 'error position')
  check_error(function() json.decode('{"a" 1}') end, { 'line 1, column 6', "expected ':'" }, 'missing colon')
  check_error(function() json.decode('[1] x') end, 'unexpected text after the value', 'trailing text')
  check_error(function() json.encode({ cfg = { act = print } }) end, 'cfg.act: cannot encode a function', 'encode error names the path')
  local cyc = {}; cyc.me = cyc
  check_error(function() json.encode(cyc) end, 'a cycle', 'cycle')
end

-- ---- a full checkpoint round trip -------------------------------------------------------------------
local function sample_state()
  local curve = {}  -- a long metrics history (its JSON is over 32 KiB: stored as a dataset)
  for i = 1, 3000 do curve[i] = 1 / i end
  local model = {
    ['layers.1.attn.q_proj.weight'] = efla.arange(0, 6):view(2, 3):to('float32'),
    ['layers.1.attn.q_proj.bias'] = efla.randn(3),
    ['layers.10.norm.weight'] = efla.randn(4, { dtype = 'float64' }),
    ['embed.weight'] = efla.randn(5, 2):t(),                        -- a transposed view
    step_count = efla.tensor(7, { dtype = 'int64' }),                -- 0-d
    mask = efla.tensor({ true, false, true }, { dtype = 'bool' }),
    bytes = efla.tensor({ 0, 7, 255 }, { dtype = 'uint8' }),
    bf = efla.tensor({ 1.5, -2.25 }, { dtype = 'bfloat16' }),
    empty = efla.zeros(0, 3),
  }
  local optim = {
    param_groups = { { lr = 3e-4, betas = { 0.9, 0.999 }, weight_decay = 0.01, name = 'decay' } },
    state = { [1] = { m = efla.randn(2, 3), v = efla.rand(2, 3), step = 12 }, [3] = { m = efla.zeros(3), step = 12 } },
    ['$odd'] = 'a key that starts with $',
    ['a/b'] = efla.ones(2),       -- a key with a slash, holding a tensor
    flags = { [1] = true, [2] = false },
    empty_list = json.array(),
  }
  return {
    model = model, optim = optim,
    schedule = { last_step = 12, kind = 'WarmupCosine' },
    rng = { seed = 18446744073709551557ULL, offset = 4096 },
    step = 12, epoch = 3,
    metrics = { acc = 0.875, loss = { 2.3, 1.2, 0.7 }, nan_seen = 0 / 0, curve = curve },
    meta = { recipe = 'test_recipe', config = { d_model = 64, layers = { 'efla', 'efla' }, act = 'gelu' },
      args = { lr = 3e-4, seed = 1 }, note = 'unicode ✓' },
  }
end

do
  local s = sample_state()
  local path = P('round.h5')
  check(checkpoint.save(path, s) == path, 'save returns the path')
  check(#files_matching('%.tmp%-') == 0, 'no temporary file after save')
  local c = checkpoint.load(path)
  local n_ok, n = 0, 0
  for name, t in pairs(s.model) do
    n = n + 1
    if same_tensor(c.model[name], t) then n_ok = n_ok + 1 else io.stderr:write('  model mismatch: ' .. name .. '\n') end
  end
  check(n_ok == n and n == 9, 'every model tensor round trips exactly (dtype, shape, bytes)')
  local count = 0
  for _ in pairs(c.model) do count = count + 1 end
  check(count == 9, 'no extra model entries')
  check(c.model.step_count:dim() == 0 and c.model.empty:numel() == 0, '0-d and empty tensors')
  check(dtype(c.model.bf) == 'bfloat16' and dtype(c.model.mask) == 'bool' and dtype(c.model.step_count) == 'int64',
    'bfloat16, bool and int64 dtypes')
  -- optimiser tree: numbers keep number keys, tensors come back, odd keys survive
  check(same_tensor(c.optim.state[1].m, s.optim.state[1].m) and same_tensor(c.optim.state[1].v, s.optim.state[1].v) and
    same_tensor(c.optim.state[3].m, s.optim.state[3].m), 'optimiser tensors (sparse number keys)')
  check(c.optim.state[3].step == 12 and c.optim.state['3'] == nil, 'number keys stay numbers')
  check(c.optim.param_groups[1].lr == 3e-4 and c.optim.param_groups[1].betas[2] == 0.999 and
    c.optim.param_groups[1].name == 'decay', 'hyperparameters')
  check(c.optim['$odd'] == 'a key that starts with $', "'$' keys")
  check(same_tensor(c.optim['a/b'], s.optim['a/b']), 'a key with a slash')
  check(c.optim.flags[1] == true and c.optim.flags[2] == false, 'booleans')
  check(json.encode(c.optim.empty_list) == '[]', 'empty arrays stay arrays')
  check(c.schedule.last_step == 12 and c.schedule.kind == 'WarmupCosine', 'other sections (schedule)')
  check(c.rng.seed == 18446744073709551557ULL and c.rng.offset == 4096, 'rng state, 64-bit exact')
  check(c.step == 12 and c.epoch == 3, 'step and epoch')
  check(c.metrics.acc == 0.875 and c.metrics.loss[3] == 0.7 and c.metrics.nan_seen ~= c.metrics.nan_seen and
    #c.metrics.curve == 3000 and c.metrics.curve[3] == 1 / 3, 'metrics')
  check(c.meta.recipe == 'test_recipe' and c.meta.note == 'unicode ✓' and c.meta.config.layers[2] == 'efla' and
    c.meta.config.d_model == 64 and c.meta.args.lr == 3e-4, 'meta, config and args')
  check(c.file.format_version == 1 and c.file.efla_version == efla.version() and
    c.file.created:match('^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ$') ~= nil and #c.file.git_revision > 0, 'file metadata')
  -- info: shapes and dtypes without data
  local info = checkpoint.info(path)
  check(info.model['layers.1.attn.q_proj.weight'].dtype == 'float32' and
    table.concat(info.model['layers.1.attn.q_proj.weight'].shape, 'x') == '2x3', 'info gives shapes and dtypes')
  check(#info.datasets == 13, 'info lists every dataset (' .. #info.datasets .. ')')
  -- the same state saved twice gives the same metadata (deterministic JSON)
  local f1 = lib.efla_h5_open(path)
  local cfg1 = ffi.string(lib.efla_h5_read_attr_string(f1, '/', 'optim_json'))
  lib.efla_h5_close(f1)
  checkpoint.save(P('round2.h5'), s)
  local f2 = lib.efla_h5_open(P('round2.h5'))
  check(ffi.string(lib.efla_h5_read_attr_string(f2, '/', 'optim_json')) == cfg1, 'deterministic JSON')
  lib.efla_h5_close(f2)
  -- a saved checkpoint loads back into a model-like state dict
  check(checkpoint.validate_state_dict(s.model, c.model) == true, 'validate passes on a match')
  check(checkpoint.load(path, { expect = s.model }).step == 12, 'load with expect')
end

-- ---- the random generator's state survives a checkpoint ---------------------------------------------------
do
  efla.manual_seed(1234)
  efla.randn(10)
  local path = P('rng.h5')
  checkpoint.save(path, { rng = checkpoint.rng_state() })
  local expected = efla.randn(5)
  efla.manual_seed(99)
  checkpoint.restore_rng(checkpoint.load(path).rng)
  check(same_tensor(efla.randn(5), expected), 'restore_rng continues the same random stream')
end

-- ---- save errors leave the target alone -------------------------------------------------------------
do
  local path = P('keep.h5')
  checkpoint.save(path, { model = { w = efla.ones(2) }, step = 1 })
  local before = read_file(path)
  check_error(function() checkpoint.save(path, { model = { w = efla.ones(2) }, optim = { fn = print } }) end,
    { 'keep.h5', 'optim.fn is a function' }, 'a function in the state')
  check_error(function() checkpoint.save(path, { model = { ['a/b'] = efla.ones(1) } }) end, 'is not valid', 'bad model name')
  check_error(function() checkpoint.save(path, { model = { w = 3 } }) end, 'model.w is a number, not a tensor', 'non-tensor in model')
  check_error(function() checkpoint.save(path, { model = { a = efla.ones(1), ['a.b'] = efla.ones(1) } }) end,
    '/model/a is already a dataset', 'name clash between a tensor and a group')
  check_error(function() checkpoint.save(path, { metrics = { loss = efla.ones(1) } }) end, 'metrics cannot be stored', 'tensor in metrics')
  check_error(function() checkpoint.save(path, { config = {} }) end, 'put configuration in meta', 'reserved top-level key')
  check(read_file(path) == before, 'the target is unchanged after failed saves')
  check(#files_matching('%.tmp%-') == 0, 'failed saves leave no temporary file')
end

-- ---- all mismatches at once ---------------------------------------------------------------------------
do
  local expected = { a = efla.zeros(2, 3), b = efla.zeros(4), c = efla.zeros(2), d = efla.zeros(1), same = efla.zeros(5) }
  local loaded = { b = efla.zeros(5), c = efla.zeros(2, { dtype = 'float64' }), d = efla.zeros(1), e = efla.zeros(3),
    same = efla.zeros(5) }
  local err = check_error(function() checkpoint.validate_state_dict(expected, loaded) end, {
    '1 missing, 1 unexpected, 1 wrong shape, 1 wrong dtype',
    'missing: a', 'unexpected: e', 'wrong shape: b is [5] in the checkpoint, [4] in the model',
    'wrong dtype: c is float64 in the checkpoint, float32 in the model' }, 'every mismatch in one message')
  check(not err:find('same', 1, true) and not err:find(': d', 1, true), 'matching entries are not reported')
  local problems = checkpoint.compare_state_dicts(expected, loaded)
  check(#problems == 4 and problems[1].kind == 'missing' and problems[2].kind == 'unexpected', 'compare_state_dicts')
  -- through load(path, {expect =})
  checkpoint.save(P('mismatch.h5'), { model = loaded })
  check_error(function() checkpoint.load(P('mismatch.h5'), { expect = expected }) end,
    { 'mismatch.h5', 'missing: a', 'unexpected: e' }, 'load with expect reports every mismatch')
end

-- ---- Manager --------------------------------------------------------------------------------------------
do
  local mdir = P('run')
  local mgr = checkpoint.Manager { dir = mdir, keep_last = 2, metric = 'acc', mode = 'max' }
  check(mgr:latest() == nil and mgr:best() == nil, 'empty folder: nothing to resume')
  local accs = { 0.1, 0.9, 0.3, 0.4, 0.5, 0.2 }
  local best_flags = {}
  for step, acc in ipairs(accs) do
    local _, is_best = mgr:save(step * 100, { model = { w = efla.full({ 2 }, step) }, metrics = { acc = acc } })
    best_flags[#best_flags + 1] = is_best and 'B' or '.'
  end
  check(table.concat(best_flags) == 'BB....', 'best flags ' .. table.concat(best_flags))
  check(table.concat(mgr:steps(), ',') == '200,500,600', 'keeps the last 2 plus the best: ' .. table.concat(mgr:steps(), ','))
  check(mgr:latest() == mdir .. '/step-000600.h5', 'latest')
  check(mgr:best() == mdir .. '/best.h5' and checkpoint.load(mgr:best()).step == 200, 'best.h5 is step 200')
  check(checkpoint.load(mgr:latest()).model.w:sum():item() == 12, 'latest holds the latest weights')
  -- resume: a new manager on the same folder knows the best so far
  write_file(mdir .. '/step-000700.h5.tmp-999999999-0123456789abcdef', 'left by a killed run')
  write_file(mdir .. '/best.h5.tmp-999999998', 'left by a killed run')
  local mgr2 = checkpoint.Manager { dir = mdir, keep_last = 2, metric = 'acc', mode = 'max' }
  check(not exists(mdir .. '/step-000700.h5.tmp-999999999-0123456789abcdef') and not exists(mdir .. '/best.h5.tmp-999999998'),
    'stale temporary files of dead processes are removed')
  check(mgr2.best_value == 0.9 and mgr2.best_step == 200, 'resumed manager knows the best')
  local _, is_best = mgr2:save(700, { model = { w = efla.full({ 2 }, 7) }, metrics = { acc = 0.85 } })
  check(not is_best and table.concat(mgr2:steps(), ',') == '200,600,700', 'not better: best kept, oldest pruned')
  _, is_best = mgr2:save(800, { model = { w = efla.full({ 2 }, 8) }, metrics = { acc = { 0.5, 0.95 } } })
  check(is_best and table.concat(mgr2:steps(), ',') == '700,800', 'a new best (last of a list); old best pruned')
  check(checkpoint.load(mgr2:best()).step == 800, 'best.h5 now step 800')
  check_error(function() mgr2:save(900, { metrics = { loss = 1 } }) end, { 'metrics.acc is missing', 'loss' }, 'missing metric')
  -- best.h5 is its own file: it survives its step file being deleted
  local mgr3 = checkpoint.Manager { dir = P('run_min'), keep_last = 0, metric = 'loss', mode = 'min' }
  mgr3:save(1, { model = { w = efla.ones(1) }, metrics = { loss = 1.0 } })
  mgr3:save(2, { model = { w = efla.ones(1) }, metrics = { loss = 2.0 } })
  check(table.concat(mgr3:steps(), ',') == '1', 'keep_last = 0 keeps only the best (mode min)')
  os.remove(P('run_min') .. '/step-000001.h5')
  check(checkpoint.load(mgr3:best()).metrics.loss == 1.0, 'best.h5 survives deleting its step file')
  check_error(function() checkpoint.Manager { dir = P('x'), mode = 'up' } end, "mode must be 'max' or 'min'", 'bad mode')
  check_error(function() checkpoint.Manager { keep_last = 2 } end, 'dir is required', 'no dir')
end

-- ---- damaged and foreign files ---------------------------------------------------------------------------
do
  local good = P('good.h5')
  local marker = {}
  for i = 1, 1024 do marker[i] = (i * 37) % 251 end  -- a recognisable run of bytes
  checkpoint.save(good, { model = { ['layers.1.weight'] = efla.tensor(marker, { dtype = 'uint8' }) }, step = 5 })
  local bytes = read_file(good)
  -- truncated
  write_file(P('trunc.h5'), bytes:sub(1, math.floor(#bytes / 2)))
  check_error(function() checkpoint.load(P('trunc.h5')) end, { 'checkpoint ' .. P('trunc.h5'), 'truncated or corrupt' }, 'truncated')
  -- a bit flip in the tensor's data
  local packed = {}
  for i = 1, 1024 do packed[i] = string.char(marker[i]) end
  local at = bytes:find(table.concat(packed), 1, true)
  check(at ~= nil, 'found the tensor bytes in the file')
  if at then
    local pos = at + 500
    local flipped = bytes:sub(1, pos - 1) .. string.char(require('bit').bxor(bytes:byte(pos), 4)) .. bytes:sub(pos + 1)
    write_file(P('flip.h5'), flipped)
    check_error(function() checkpoint.load(P('flip.h5')) end,
      { 'checkpoint ' .. P('flip.h5'), 'dataset /model/layers/1/weight is corrupt (checksum mismatch' }, 'data bit flip')
  end
  -- a flip in the superblock
  write_file(P('super.h5'), bytes:sub(1, 19) .. string.char(require('bit').bxor(bytes:byte(20), 255)) .. bytes:sub(21))
  check_error(function() checkpoint.load(P('super.h5')) end, 'truncated or corrupt', 'superblock flip')
  -- not HDF5, missing, empty
  write_file(P('text.h5'), 'model weights, honest\n')
  check_error(function() checkpoint.load(P('text.h5')) end, { 'text.h5 is not an HDF5 file', 'model we' }, 'text file')
  check_error(function() checkpoint.load(P('missing.h5')) end, { 'missing.h5', 'No such file' }, 'missing file')
  write_file(P('empty.h5'), '')
  check_error(function() checkpoint.load(P('empty.h5')) end, 'is not an HDF5 file (it is empty)', 'empty file')
  -- HDF5 but not a checkpoint; a newer format; damaged JSON
  local f = lib.efla_h5_create(P('plain.h5'))
  lib.efla_h5_write_tensor(f, '/x', efla.ones(2).ptr)
  lib.efla_h5_commit(f)
  check_error(function() checkpoint.load(P('plain.h5')) end, 'not an efla checkpoint', 'HDF5 without format_version')
  f = lib.efla_h5_create(P('future.h5'))
  lib.efla_h5_write_attr_double(f, '/', 'format_version', 2)
  lib.efla_h5_commit(f)
  check_error(function() checkpoint.load(P('future.h5')) end, { 'has format_version 2', 'upgrade efla' }, 'newer format')
  -- hand-made files: every attribute a checkpoint has, with some replaced or left out
  local function hand_made(name, changes)
    local attrs = { efla_version = '0.1.0', git_revision = 'unknown', created = '2025-01-01T00:00:00Z', recipe = '',
      config_json = '{}', args_json = '{}', meta_json = '{}', metrics_json = '{}', rng_json = '{}', sections_json = '[]' }
    for k, v in pairs(changes) do attrs[k] = v end
    local h = lib.efla_h5_create(P(name))
    lib.efla_h5_write_attr_double(h, '/', 'format_version', 1)
    for k, v in pairs(attrs) do if v ~= false then lib.efla_h5_write_attr_string(h, '/', k, v) end end
    assert(lib.efla_h5_commit(h) == 0)
    return P(name)
  end
  check(checkpoint.load(hand_made('minimal.h5', {})).file.format_version == 1, 'a minimal hand-made checkpoint loads')
  check_error(function() checkpoint.load(hand_made('badjson.h5', { config_json = '{"d": 64,, }' })) end,
    { 'config_json is not valid JSON', 'line 1, column 10' }, 'bad JSON')
  check_error(function() checkpoint.load(hand_made('nometrics.h5', { metrics_json = false })) end,
    'attribute metrics_json is missing', 'a missing attribute is damage, not an empty table')
  -- a section whose tensor reference points elsewhere is refused (no reading outside it)
  check_error(function() checkpoint.load(hand_made('badref.h5', { sections_json = '["optim"]',
    optim_json = '{"m": {"$tensor": "/model/w"}}' })) end, 'outside /optim', 'tensor reference outside its section')
end

-- ---- interoperability: h5py and h5dump ----------------------------------------------------------------
do
  local path = P('interop.h5')
  checkpoint.save(path, sample_state())
  if not succeeded(os.execute("/usr/bin/python3 -c 'import h5py' >/dev/null 2>&1")) then
    print('skip: h5py check (/usr/bin/python3 cannot import h5py; apt-get install python3-h5py)')
  else
    local script = P('read.py')
    write_file(script, [[
import json, sys, zlib
import h5py, numpy as np
f = h5py.File(sys.argv[1], 'r')
assert f.attrs['format_version'] == 1
assert json.loads(f.attrs['config_json'])['layers'] == ['efla', 'efla']
assert f.attrs['recipe'] == b'test_recipe'
w = f['model/layers/1/attn/q_proj/weight']
assert w.dtype == np.float32 and w.shape == (2, 3), (w.dtype, w.shape)
assert np.array_equal(w[()], np.arange(6, dtype=np.float32).reshape(2, 3))
for name in ['model/layers/1/attn/q_proj/weight', 'model/embed/weight', 'model/bf', 'optim/state/1/m']:
    d = f[name]
    assert zlib.crc32(d[()].tobytes()) == d.attrs['efla_crc32'], name
bf = f['model/bf']
assert bf.attrs['efla_dtype'] == b'bfloat16'
assert list((bf[()].astype(np.uint32) << 16).view(np.float32)) == [1.5, -2.25]
assert f['model/mask'].attrs['efla_dtype'] == b'bool' and list(f['model/mask'][()]) == [1, 0, 1]
assert f['model/step_count'].shape == () and f['model/step_count'][()] == 7
assert f['model/empty'].shape == (0, 3)
optim = json.loads(f.attrs['optim_json'])
assert optim['param_groups'][0]['lr'] == 3e-4
assert 'metrics_json' not in f.attrs   # 32 KiB or more: a string dataset under /efla_strings
metrics = f['efla_strings/metrics_json']
assert len(json.loads(metrics[()])['curve']) == 3000
assert zlib.crc32(metrics[()]) == metrics.attrs['efla_crc32']
rng = json.loads(f.attrs['rng_json'])
assert rng['seed'] == 18446744073709551557
print('h5py ok')
]])
    local p = io.popen('/usr/bin/python3 ' .. script .. " '" .. path .. "' 2>&1")
    local out = p:read('*a')
    p:close()
    check(out:find('h5py ok', 1, true) ~= nil, 'h5py reads the checkpoint: ' .. out)
  end
  if not succeeded(os.execute('command -v h5dump >/dev/null 2>&1')) then
    print('skip: h5dump check (h5dump not installed; apt-get install hdf5-tools)')
  else
    local p = io.popen("h5dump -H '" .. path .. "' 2>&1; echo rc=$?")
    local out = p:read('*a')
    p:close()
    check(out:find('rc=0', 1, true) and out:find('DATASET "weight"', 1, true) and out:find('ATTRIBUTE "config_json"', 1, true),
      'h5dump -H reads the checkpoint')
  end
end

-- save creates missing parent folders
do
  local nested = P('made/by/save/c.h5')
  checkpoint.save(nested, { model = { w = efla.ones(2) } })
  check(exists(nested), 'checkpoint.save did not create the missing folders')
  check(checkpoint.load(nested).model.w:sum():item() == 2, 'the checkpoint in a new folder does not read back')
  write_file(P('a_file'), 'x')
  check_error(function() checkpoint.save(P('a_file/c.h5'), { model = {} }) end, 'checkpoint.save', 'a file where a folder should be')
end

os.execute("rm -rf '" .. dir .. "'")
print(string.format('%d passed, %d failed', passed, failed))
if failed > 0 then os.exit(1, true) end

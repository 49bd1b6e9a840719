-- efla/checkpoint.lua: save and load training state as one HDF5 file (core/h5.c). The
-- Manager that keeps the last N checkpoints plus the best one is efla/checkpoint_manager.lua
-- (checkpoint.Manager{...} still makes one).
--
--   local checkpoint = require 'efla.checkpoint'
--   checkpoint.save('checkpoints/run/step-000100.h5', {
--     model = model:state_dict(),                  -- name -> tensor
--     optim = optimizer:state_dict(),              -- nested tables of tensors, numbers, strings
--     schedule = schedule:state_dict(),            -- any other key is stored the same way
--     rng = {seed = s, offset = o}, step = 100, epoch = 2,
--     metrics = {acc = 0.93, loss = {2.3, 1.1, 0.4}},
--     meta = {recipe = 'mnist_mlp', config = cfg, args = args},
--   })
--   local c = checkpoint.load(path)                -- the same structure, tensors on the cpu
--   checkpoint.validate_state_dict(model:state_dict(), c.model)   -- every mismatch at once
--
-- The file layout is documented for Python users in checkpoints/README.md: tensors are
-- datasets (/model/<name with '.' -> '/'>, /optim/..., /<section>/...), everything else is
-- JSON in string attributes of the root group. Loading reads JSON and numbers only; it
-- never runs code from the file. Writes are atomic (a temporary file renamed over the
-- target), so a crash leaves the old checkpoint or the new one.
local ffi = require 'ffi'
local efla = require 'efla'
local json = require 'efla.json'

local I = require 'efla._binding'
local lib = I.lib

local M = {}

--- The layout version this code writes; files with a newer one are refused.
M.FORMAT_VERSION = 1

-- Top-level keys of the contents table that have a fixed place in the file. Every other
-- key is a "section": a tree of tables stored as /<key>/... datasets plus <key>_json.
local fixed_keys = { model = true, rng = true, step = true, epoch = true, metrics = true, meta = true }
local reserved_sections = { config = true, args = true, sections = true, file = true, format = true }

-- ---- small helpers ------------------------------------------------------------------------------
local function fail(msg) I.raise(msg) end

local function is_tensor(v)
  if I.is_tensor then return I.is_tensor(v) end
  return ffi.istype(I.Tensor, v)
end
local raw_tensor_t = ffi.typeof('efla_tensor *')
local function tensor_ptr(v)
  if is_tensor(v) then return v.ptr end
  if ffi.istype(raw_tensor_t, v) then return v end
  return nil
end

-- The library's message for the call that just failed, as "checkpoint <path>...": the C
-- messages start with "h5_<op>: <path>".
local function c_error(path)
  local msg = ffi.string(lib.efla_last_error()):gsub('^h5_[%w_]+: ', '')
  if msg == '' then msg = 'unknown error in libefla' end
  if msg:sub(1, #path) == path then return 'checkpoint ' .. msg end
  return 'checkpoint ' .. path .. ': ' .. msg
end

local function shape_of(p)
  local s = {}
  for d = 0, lib.efla_tensor_ndim(p) - 1 do s[d + 1] = tonumber(lib.efla_tensor_size(p, d)) end
  return s
end
local function shape_str(s) return '[' .. table.concat(s, ',') .. ']' end
local function dtype_of(p) return ffi.string(lib.efla_dtype_name(lib.efla_tensor_dtype(p))) end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b)
    local ta, tb = type(a), type(b)
    if ta ~= tb then return ta < tb end  -- numbers before strings
    return a < b
  end)
  return keys
end

local function git_revision() return require('efla.sys').git_revision() or 'unknown' end

-- ---- writing ---------------------------------------------------------------------------------------
local function write_tensor(f, path, name, t)
  local p = tensor_ptr(t)
  if lib.efla_h5_write_tensor(f, name, p) < 0 then error(c_error(path), 0) end
end

local function write_string(f, path, key, value)
  if lib.efla_h5_write_attr_string(f, '/', key, value) < 0 then error(c_error(path), 0) end
end

local function write_number(f, path, key, value)
  if lib.efla_h5_write_attr_double(f, '/', key, value) < 0 then error(c_error(path), 0) end
end

local function encode_json(path, what, value)
  local ok, s = pcall(json.encode, value)
  if not ok then error('checkpoint.save: ' .. path .. ': ' .. what .. ' cannot be stored: ' .. s, 0) end
  return s
end

-- A dataset name part for a table key: '/' and '%' are percent-encoded so that any key
-- gives one valid, unique HDF5 name ("" and "." and ".." too).
local function name_part(k)
  local s = type(k) == 'number' and string.format('%.17g', k) or k
  s = s:gsub('[/%%]', function(c) return string.format('%%%02X', c:byte()) end)
  if s == '' or s == '.' or s == '..' then s = '%' .. s:gsub('%.', '2E') end
  return s
end

-- A Lua value in a section -> a JSON-ready value. Tensors are written as datasets and
-- replaced by {"$tensor": "/optim/state/1/m"}; tables whose keys are not 1..n or all
-- strings become {"$map": [[key, value], ...]} so number keys stay numbers; string keys
-- starting with '$' get one more '$' so they never look like those markers.
local function to_plain(v, ctx, parts, active)
  local where = table.concat(parts, '.')
  if tensor_ptr(v) then
    local dataset = {}
    for i, p in ipairs(parts) do dataset[i] = name_part(p) end
    local name = '/' .. table.concat(dataset, '/')
    write_tensor(ctx.f, ctx.path, name, v)
    return { ['$tensor'] = name }
  end
  local tv = type(v)
  if tv == 'number' or tv == 'string' or tv == 'boolean' or v == json.null then return v end
  if tv == 'cdata' and (ffi.istype('int64_t', v) or ffi.istype('uint64_t', v)) then return v end
  if tv ~= 'table' then
    error(string.format('checkpoint.save: %s: %s is a %s; checkpoints hold tensors, numbers, strings, ' ..
      'booleans and tables of them (never functions or other objects)', ctx.path, where, tostring(tv == 'cdata' and ffi.typeof(v) or tv)), 0)
  end
  if active[v] then error(string.format('checkpoint.save: %s: %s contains itself (a cycle)', ctx.path, where), 0) end
  active[v] = true
  local n, count, all_strings = 0, 0, true
  for k in pairs(v) do
    count = count + 1
    if type(k) == 'number' and k >= 1 and k % 1 == 0 and k > n then n = k end
    if type(k) ~= 'string' then all_strings = false end
    if type(k) ~= 'string' and type(k) ~= 'number' then
      error(string.format('checkpoint.save: %s: %s has a key of type %s; keys must be strings or numbers',
        ctx.path, where, type(k)), 0)
    end
  end
  local out
  if count > 0 and n == count then        -- a sequence 1..n
    out = {}
    for i = 1, n do
      parts[#parts + 1] = i
      out[i] = to_plain(v[i], ctx, parts, active)
      parts[#parts] = nil
    end
  elseif all_strings then                  -- an object (also the empty table)
    out = {}
    for _, k in ipairs(sorted_keys(v)) do
      parts[#parts + 1] = k
      out[k:sub(1, 1) == '$' and '$' .. k or k] = to_plain(v[k], ctx, parts, active)
      parts[#parts] = nil
    end
    if count == 0 and getmetatable(v) == json.array_mt then out = json.array() end
  else                                     -- number keys that are not 1..n, or mixed keys
    local pairs_list = {}
    for _, k in ipairs(sorted_keys(v)) do
      parts[#parts + 1] = k
      pairs_list[#pairs_list + 1] = { k, to_plain(v[k], ctx, parts, active) }
      parts[#parts] = nil
    end
    out = { ['$map'] = pairs_list }
  end
  active[v] = nil
  return out
end

local function write_model(f, path, model)
  if type(model) ~= 'table' then
    error('checkpoint.save: ' .. path .. ': contents.model must be a state dict (name -> tensor), got a ' .. type(model), 0)
  end
  for _, name in ipairs(sorted_keys(model)) do
    local t = model[name]
    if type(name) ~= 'string' or not name:match('^[^./][^/]*$') or name:match('%.%.') or name:match('%.$') then
      error(string.format('checkpoint.save: %s: model parameter name %s is not valid: use dotted names such as ' ..
        '"layers.1.attn.q_proj.weight" (no "/", no empty parts)', path, tostring(name)), 0)
    end
    if not tensor_ptr(t) then
      error(string.format('checkpoint.save: %s: model.%s is a %s, not a tensor; the model state dict maps names ' ..
        'to tensors', path, name, type(t)), 0)
    end
    write_tensor(f, path, '/model/' .. name:gsub('%.', '/'), t)
  end
end

local function write_all(f, path, c)
  local meta = c.meta or {}
  if type(meta) ~= 'table' then error('checkpoint.save: ' .. path .. ': contents.meta must be a table', 0) end
  -- fixed attributes first: what a person looking with h5dump wants to see
  write_number(f, path, 'format_version', M.FORMAT_VERSION)
  write_string(f, path, 'efla_version', ffi.string(lib.efla_version()))
  write_string(f, path, 'git_revision', type(meta.git_revision) == 'string' and meta.git_revision or git_revision())
  write_string(f, path, 'created', os.date('!%Y-%m-%dT%H:%M:%SZ'))
  write_string(f, path, 'recipe', type(meta.recipe) == 'string' and meta.recipe or '')
  for _, k in ipairs { 'step', 'epoch' } do
    local v = c[k]
    if v ~= nil then
      if type(v) == 'cdata' then v = tonumber(v) end
      if type(v) ~= 'number' then error(string.format('checkpoint.save: %s: contents.%s must be a number, got %s', path, k, type(c[k])), 0) end
      write_number(f, path, k, v)
    end
  end
  write_string(f, path, 'config_json', encode_json(path, 'meta.config', meta.config or {}))
  write_string(f, path, 'args_json', encode_json(path, 'meta.args', meta.args or {}))
  local rest = {}
  for k, v in pairs(meta) do if k ~= 'config' and k ~= 'args' then rest[k] = v end end
  write_string(f, path, 'meta_json', encode_json(path, 'meta', rest))
  write_string(f, path, 'metrics_json', encode_json(path, 'metrics', c.metrics or {}))
  write_string(f, path, 'rng_json', encode_json(path, 'rng', c.rng or {}))
  if c.model ~= nil then write_model(f, path, c.model) end
  -- sections: optim, schedule, ...
  local sections = {}
  for _, k in ipairs(sorted_keys(c)) do
    if not fixed_keys[k] then
      if type(k) ~= 'string' or not k:match('^[%a_][%w_]*$') or reserved_sections[k] then
        error(string.format('checkpoint.save: %s: contents key %s cannot be stored: top-level keys are names such as ' ..
          '"optim" or "schedule" (not config, args, sections, file, format); put configuration in meta',
          path, tostring(k)), 0)
      end
      local plain = to_plain(c[k], { f = f, path = path }, { k }, {})
      write_string(f, path, k .. '_json', encode_json(path, k, plain))
      sections[#sections + 1] = k
    end
  end
  write_string(f, path, 'sections_json', json.encode(json.array(sections)))
end

--- checkpoint.save(path, contents): write atomically (see the top of this file); missing
--- parent folders are created.
function M.save(path, contents)
  if type(path) ~= 'string' or path == '' then fail('checkpoint.save: path must be a non-empty string') end
  if type(contents) ~= 'table' then fail('checkpoint.save: contents must be a table, got ' .. type(contents)) end
  local dir = path:match('^(.*)/[^/]*$')
  if dir and dir ~= '' and not pcall(require('efla.sys').mkdir_p, dir) then
    fail('checkpoint.save: cannot create the folder ' .. dir .. ' for ' .. path)
  end
  local f = lib.efla_h5_create(path)
  if f == nil then fail(c_error(path)) end
  local ok, err = pcall(write_all, f, path, contents)
  if not ok then
    lib.efla_h5_abort(f)   -- the target stays as it was; the temporary file goes
    fail(err)
  end
  if lib.efla_h5_commit(f) < 0 then fail(c_error(path)) end
  return path
end

-- ---- reading ----------------------------------------------------------------------------------------
local function read_string(f, path, key)
  local s = lib.efla_h5_read_attr_string(f, '/', key)
  if s == nil then
    if ffi.string(lib.efla_last_error()) ~= '' then error(c_error(path), 0) end
    return nil
  end
  return ffi.string(s)
end

local function read_number(f, path, key)
  local out = ffi.new('double[1]')
  if lib.efla_h5_read_attr_double(f, '/', key, out) < 0 then
    local msg = ffi.string(lib.efla_last_error())
    if msg:find('has no attribute', 1, true) then return nil end
    error(c_error(path), 0)
  end
  return out[0]
end

-- Every format_version 1 file has these; one missing means the file was damaged.
local function read_required(f, path, key)
  local s = read_string(f, path, key)
  if s == nil then
    error(string.format('checkpoint %s: attribute %s is missing (every efla checkpoint has it); the file is damaged', path, key), 0)
  end
  return s
end

local function read_json(f, path, key)
  local s = read_required(f, path, key)
  local ok, v = pcall(json.decode, s)
  if not ok then error(string.format('checkpoint %s: attribute %s is not valid JSON (%s); the file is damaged', path, key, v), 0) end
  return v
end

local function read_tensor(f, path, name)
  local p = lib.efla_h5_read_tensor(f, name)
  if p == nil then error(c_error(path), 0) end
  return I.wrap(p)
end

-- Checks format_version: absent -> not an efla checkpoint; newer -> refuse.
local function check_format(f, path)
  local v = read_number(f, path, 'format_version')
  if v == nil then
    error(string.format('checkpoint %s is an HDF5 file but not an efla checkpoint (it has no format_version attribute)', path), 0)
  end
  if v > M.FORMAT_VERSION then
    error(string.format('checkpoint %s has format_version %s, but this efla (%s) reads format_version %d or older; ' ..
      'upgrade efla to load it', path, tostring(v), ffi.string(lib.efla_version()), M.FORMAT_VERSION), 0)
  end
  if v < 1 or v % 1 ~= 0 then
    error(string.format('checkpoint %s has an invalid format_version %s; the file is damaged', path, tostring(v)), 0)
  end
  return v
end

-- The inverse of to_plain: markers back to tensors and number-keyed tables.
local function from_plain(v, ctx, where)
  if type(v) ~= 'table' or v == json.null then return v end
  local tensor_name = v['$tensor']
  if tensor_name ~= nil and next(v, next(v)) == nil then
    local prefix = ctx.prefix
    if type(tensor_name) ~= 'string' or
       (tensor_name ~= prefix and tensor_name:sub(1, #prefix + 1) ~= prefix .. '/') then
      error(string.format('checkpoint %s: %s refers to dataset %s outside %s; the file is damaged', ctx.path,
        where, tostring(tensor_name), ctx.prefix), 0)
    end
    return ctx.read(tensor_name)
  end
  local map = v['$map']
  if map ~= nil and next(v, next(v)) == nil then
    local out = {}
    for _, kv in ipairs(map) do
      if type(kv) ~= 'table' or (type(kv[1]) ~= 'number' and type(kv[1]) ~= 'string') then
        error(string.format('checkpoint %s: %s has a malformed key/value list; the file is damaged', ctx.path, where), 0)
      end
      out[kv[1]] = from_plain(kv[2], ctx, where .. '.' .. tostring(kv[1]))
    end
    return out
  end
  local out = {}
  for k, x in pairs(v) do
    local key = k
    if type(k) == 'string' and k:sub(1, 2) == '$$' then key = k:sub(2) end
    out[key] = from_plain(x, ctx, where .. '.' .. tostring(key))
  end
  if next(v) == nil then setmetatable(out, getmetatable(v)) end
  return out
end

local function read_all(f, path, opts)
  local c = { file = { path = path } }
  c.file.format_version = check_format(f, path)
  c.file.efla_version = read_required(f, path, 'efla_version')
  c.file.git_revision = read_required(f, path, 'git_revision')
  c.file.created = read_required(f, path, 'created')
  read_required(f, path, 'recipe')
  c.step = read_number(f, path, 'step')
  c.epoch = read_number(f, path, 'epoch')
  c.meta = read_json(f, path, 'meta_json')
  if type(c.meta) ~= 'table' then error(string.format('checkpoint %s: meta_json is not an object; the file is damaged', path), 0) end
  c.meta.config = read_json(f, path, 'config_json')
  c.meta.args = read_json(f, path, 'args_json')
  c.metrics = read_json(f, path, 'metrics_json')
  c.rng = read_json(f, path, 'rng_json')

  local n = lib.efla_h5_count(f)
  if n < 0 then error(c_error(path), 0) end
  local names = {}
  for i = 0, n - 1 do
    local s = lib.efla_h5_name(f, i)
    if s == nil then error(c_error(path), 0) end
    names[#names + 1] = ffi.string(s)
  end
  local want_tensors = not (opts and opts.tensors == false)
  local datasets = {}
  local function read(name)
    if want_tensors then return read_tensor(f, path, name) end
    local ndim, shape, dtype = ffi.new('int[1]'), ffi.new('int64_t[8]'), ffi.new('efla_dtype[1]')
    if lib.efla_h5_info(f, name, ndim, shape, dtype) < 0 then error(c_error(path), 0) end
    local s = {}
    for d = 0, ndim[0] - 1 do s[d + 1] = tonumber(shape[d]) end
    return { shape = s, dtype = ffi.string(lib.efla_dtype_name(dtype[0])) }
  end
  c.model = {}
  for _, name in ipairs(names) do
    if name:sub(1, 7) == '/model/' then
      local key = name:sub(8):gsub('/', '.')
      c.model[key] = read(name)
    end
    datasets[#datasets + 1] = name
  end
  local sections = read_json(f, path, 'sections_json')
  for _, k in ipairs(sections) do
    if type(k) ~= 'string' or not k:match('^[%a_][%w_]*$') or fixed_keys[k] or reserved_sections[k] then
      error(string.format('checkpoint %s: sections_json names an invalid section %s; the file is damaged', path, tostring(k)), 0)
    end
    local plain = read_json(f, path, k .. '_json')
    c[k] = from_plain(plain, { path = path, prefix = '/' .. k, read = read }, k)
  end
  return c, datasets
end

local function with_file(path, fn)
  if type(path) ~= 'string' or path == '' then fail('checkpoint.load: path must be a non-empty string') end
  local f = lib.efla_h5_open(path)
  if f == nil then fail(c_error(path)) end
  local ok, a, b = pcall(fn, f)
  lib.efla_h5_close(f)
  if not ok then fail(a) end
  return a, b
end

--- checkpoint.load(path [, opts]) -> contents: {model = {name -> tensor}, optim = ...,
--- rng, step, epoch, metrics, meta = {recipe, config, args, ...}, file = {path,
--- format_version, efla_version, git_revision, created}}. Tensors come back on the cpu.
--- opts.expect = a state dict: validate the model against it (validate_state_dict).
function M.load(path, opts)
  local c = with_file(path, function(f) return read_all(f, path, opts) end)
  if opts and opts.expect then M.validate_state_dict(opts.expect, c.model, path) end
  return c
end

--- checkpoint.info(path) -> the contents with {shape =, dtype =} in place of every tensor
--- (no tensor data is read), plus .datasets: every dataset name in the file.
function M.info(path)
  local c, datasets = with_file(path, function(f) return read_all(f, path, { tensors = false }) end)
  c.datasets = datasets
  return c
end

-- ---- the random generator ------------------------------------------------------------------------------
--- checkpoint.rng_state() -> {seed =, offset =}: the global generator's state, for
--- contents.rng. The same as efla.rng_state(): exact, with values above 2^53 as decimal strings.
function M.rng_state() return efla.rng_state() end

--- checkpoint.restore_rng(rng): set the global generator from a loaded contents.rng (numbers,
--- decimal strings, or the 64-bit integers that files written before efla.rng_state hold).
function M.restore_rng(rng)
  if type(rng) ~= 'table' or rng.seed == nil or rng.offset == nil then
    fail('checkpoint.restore_rng: expected {seed =, offset =} (contents.rng of a checkpoint saved with checkpoint.rng_state())')
  end
  efla.set_rng_state(rng)
end

-- ---- resuming -------------------------------------------------------------------------------------------
-- "a.b = 1" lines of a nested table, sorted (for naming differences)
local function flatten(v, prefix, out)
  if type(v) ~= 'table' then out[prefix] = tostring(v) return out end
  for k, x in pairs(v) do flatten(x, prefix == '' and tostring(k) or (prefix .. '.' .. tostring(k)), out) end
  return out
end

--- checkpoint.check_resume(contents, expected, path [, ignore]): refuses to resume from a
--- checkpoint saved by a different run: expected = {method =, config =, args = {...}}; each
--- given field is compared with contents.meta (config key by key, args only for the keys
--- expected.args names); ignore = {key = true} skips config keys that may change (chunk_size).
--- The error names every difference.
function M.check_resume(c, expected, path, ignore)
  local meta = type(c) == 'table' and type(c.meta) == 'table' and c.meta or {}
  local diffs = {}
  if expected.method ~= nil and meta.method ~= expected.method then
    diffs[#diffs + 1] = string.format('method: %s in the checkpoint, %s now', tostring(meta.method), tostring(expected.method))
  end
  if expected.config ~= nil then
    local a, b = flatten(meta.config or {}, '', {}), flatten(expected.config, '', {})
    local keys, seen = {}, {}
    for k in pairs(a) do if not seen[k] then keys[#keys + 1], seen[k] = k, true end end
    for k in pairs(b) do if not seen[k] then keys[#keys + 1], seen[k] = k, true end end
    table.sort(keys)
    for _, k in ipairs(keys) do
      if not (ignore and ignore[k:match('^[^.]+')]) and a[k] ~= b[k] then
        diffs[#diffs + 1] = string.format('config.%s: %s in the checkpoint, %s now', k, a[k] or 'absent', b[k] or 'absent')
      end
    end
  end
  for k, want in pairs(expected.args or {}) do
    local had = type(meta.args) == 'table' and meta.args[k] or nil
    if had ~= nil and tostring(had) ~= tostring(want) then
      diffs[#diffs + 1] = string.format('--%s: %s in the checkpoint, %s now', k:gsub('_', '-'), tostring(had), tostring(want))
    end
  end
  if #diffs > 0 then
    table.sort(diffs)
    fail(string.format('cannot resume from %s: it was saved by a different run (%s); give the same options, or start a new run',
      path, table.concat(diffs, '; ')))
  end
end

-- ---- validation ---------------------------------------------------------------------------------------
local function describe(v)
  local p = tensor_ptr(v)
  if p then return shape_of(p), dtype_of(p) end
  if type(v) == 'table' and type(v.shape) == 'table' then return v.shape, v.dtype end
  return nil
end

--- checkpoint.compare_state_dicts(expected, loaded) -> list of problems, sorted; each is
--- {kind = 'missing'|'unexpected'|'shape'|'dtype'|'not a tensor', name =, text =}.
--- Values may be tensors or {shape = {...}, dtype = 'float32'} (as checkpoint.info gives).
function M.compare_state_dicts(expected, loaded)
  local problems = {}
  local function add(kind, name, text) problems[#problems + 1] = { kind = kind, name = name, text = text } end
  for _, name in ipairs(sorted_keys(expected)) do
    local want_shape, want_dtype = describe(expected[name])
    local got = loaded[name]
    if got == nil then
      add('missing', name, 'missing: ' .. name .. ' (in the model, not in the checkpoint)')
    else
      local got_shape, got_dtype = describe(got)
      if not got_shape or not want_shape then
        add('not a tensor', name, 'not a tensor: ' .. name)
      else
        if shape_str(got_shape) ~= shape_str(want_shape) then
          add('shape', name, string.format('wrong shape: %s is %s in the checkpoint, %s in the model', name,
            shape_str(got_shape), shape_str(want_shape)))
        end
        if want_dtype and got_dtype and want_dtype ~= got_dtype then
          add('dtype', name, string.format('wrong dtype: %s is %s in the checkpoint, %s in the model', name, got_dtype, want_dtype))
        end
      end
    end
  end
  for _, name in ipairs(sorted_keys(loaded)) do
    if expected[name] == nil then add('unexpected', name, 'unexpected: ' .. name .. ' (in the checkpoint, not in the model)') end
  end
  local order = { missing = 1, unexpected = 2, shape = 3, dtype = 4, ['not a tensor'] = 5 }
  table.sort(problems, function(a, b)
    if a.kind ~= b.kind then return order[a.kind] < order[b.kind] end
    return a.name < b.name
  end)
  return problems
end

--- checkpoint.validate_state_dict(expected, loaded [, where]): true when every name, shape
--- and dtype matches; otherwise one error listing every mismatch.
function M.validate_state_dict(expected, loaded, where)
  if type(expected) ~= 'table' or type(loaded) ~= 'table' then
    fail('checkpoint.validate_state_dict: expected two state dicts (name -> tensor)')
  end
  local problems = M.compare_state_dicts(expected, loaded)
  if #problems == 0 then return true end
  local counts = {}
  for _, p in ipairs(problems) do counts[p.kind] = (counts[p.kind] or 0) + 1 end
  local summary = {}
  for _, k in ipairs { 'missing', 'unexpected', 'shape', 'dtype', 'not a tensor' } do
    if counts[k] then summary[#summary + 1] = counts[k] .. ' ' .. (k == 'shape' and 'wrong shape' or k == 'dtype' and 'wrong dtype' or k) end
  end
  local lines = {}
  for i, p in ipairs(problems) do lines[i] = '  ' .. p.text end
  fail(string.format('checkpoint%s: the state dict does not match the model (%s):\n%s',
    where and (' ' .. where) or '', table.concat(summary, ', '), table.concat(lines, '\n')))
end

-- ---- Manager ------------------------------------------------------------------------------------------
--- checkpoint.Manager{dir =, keep_last = N, metric = 'acc', mode = 'max'|'min'}: keeps the last N
--- checkpoints plus the best one (efla.checkpoint_manager, loaded on first use).
function M.Manager(opts) return require('efla.checkpoint_manager').new(opts) end

return M

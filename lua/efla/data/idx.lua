-- efla.data.idx: read and write IDX files (the MNIST / Fashion-MNIST container), plain or
-- gzip-compressed. zlib's gzread reads both transparently, so one code path serves both.
--
-- IDX layout: 2 zero bytes, a type byte, the number of dims, then each dim as a big-endian
-- uint32, then the elements big-endian in row-major order.
--
--   local a = idx.read(path)  -- {shape = {60000, 28, 28}, dtype = 'uint8', data = uint8_t[?], nbytes = n}
--   idx.write(path, a, {gzip = true})
local ffi = require 'ffi'
local bit = require 'bit'
local sys = require 'efla.sys'

local idx = {}

-- ---- zlib through the FFI -------------------------------------------------------------------

--- idx.zlib() -> the zlib namespace (efla.sys.zlib: libz.so.1 from the zlib1g package).
idx.zlib = sys.zlib

-- IDX type byte -> {efla dtype, element size in the file, C type to read a swapped element}
local types = {
  [0x08] = { dtype = "uint8", size = 1 },
  [0x09] = { dtype = "int64", size = 1, ctype = "int8_t" },
  [0x0B] = { dtype = "int64", size = 2, ctype = "int16_t" },
  [0x0C] = { dtype = "int64", size = 4, ctype = "int32_t" },
  [0x0D] = { dtype = "float32", size = 4, ctype = "float" },
  [0x0E] = { dtype = "float64", size = 8, ctype = "double" },
}
local out_sizes = { uint8 = 1, int64 = 8, float32 = 4, float64 = 8 }
local out_ctypes = { uint8 = "uint8_t", int64 = "int64_t", float32 = "float", float64 = "double" }

-- Read exactly n bytes into buf; returns the count read.
local function gz_read_n(z, f, buf, n)
  local got = 0
  while got < n do
    local want = math.min(n - got, 0x40000000)
    local r = z.gzread(f, buf + got, want)
    if r < 0 then
      local errnum = ffi.new("int[1]")
      return nil, ffi.string(z.gzerror(f, errnum))
    end
    if r == 0 then break end
    got = got + r
  end
  return got
end

-- Reverse the bytes of each size-byte element of src (big-endian file) into native order.
local function swap_convert(src, n, t, dtype)
  local out = ffi.new(out_ctypes[dtype] .. "[?]", math.max(n, 1))
  local tmp = ffi.new("uint8_t[8]")
  local view = ffi.cast(t.ctype .. " *", tmp)
  local size = t.size
  for i = 0, n - 1 do
    local base = i * size
    for b = 0, size - 1 do tmp[b] = src[base + size - 1 - b] end
    out[i] = view[0]
  end
  return out
end

--- idx.read(path) -> {shape=, dtype=, data=, nbytes=}. Errors name the file and what is wrong.
function idx.read(path)
  local z = idx.zlib()
  local f = z.gzopen(path, "rb")
  if f == nil then error("idx: cannot open " .. path, 0) end
  z.gzbuffer(f, 1048576)
  local ok, res = pcall(function()
    local head = ffi.new("uint8_t[4]")
    local got = gz_read_n(z, f, head, 4)
    if got ~= 4 then error(string.format("idx: %s: too short for an IDX header (%d bytes)", path, got or 0), 0) end
    if head[0] ~= 0 or head[1] ~= 0 then
      error(string.format("idx: %s: bad magic %02x %02x (an IDX file starts with two zero bytes)",
                          path, head[0], head[1]), 0)
    end
    local t = types[head[2]]
    if not t then error(string.format("idx: %s: unknown element type 0x%02x", path, head[2]), 0) end
    local ndim = head[3]
    if ndim < 1 or ndim > 8 then error(string.format("idx: %s: %d dims (expected 1..8)", path, ndim), 0) end
    local dims = ffi.new("uint8_t[?]", 4 * ndim)
    if gz_read_n(z, f, dims, 4 * ndim) ~= 4 * ndim then error("idx: " .. path .. ": truncated header", 0) end
    local shape, numel = {}, 1
    for d = 0, ndim - 1 do
      local s = ((dims[4 * d] * 256 + dims[4 * d + 1]) * 256 + dims[4 * d + 2]) * 256 + dims[4 * d + 3]
      shape[d + 1] = s
      numel = numel * s
    end
    local nbytes = numel * t.size
    local raw = ffi.new("uint8_t[?]", math.max(nbytes, 1))
    local n, err = gz_read_n(z, f, raw, nbytes)
    if not n then error("idx: " .. path .. ": " .. err, 0) end
    if n ~= nbytes then
      error(string.format("idx: %s: truncated: header says %s = %d bytes of data, found %d",
                          path, table.concat(shape, "x"), nbytes, n), 0)
    end
    local extra = ffi.new("uint8_t[1]")
    if z.gzread(f, extra, 1) > 0 then
      error(string.format("idx: %s: data continues past the %d bytes the header announces", path, nbytes), 0)
    end
    local out = raw
    if t.ctype then out = swap_convert(raw, numel, t, t.dtype) end
    return { shape = shape, dtype = t.dtype, data = out, nbytes = numel * out_sizes[t.dtype] }
  end)
  z.gzclose(f)
  if not ok then error(res, 0) end
  return res
end

local write_types = { uint8 = 0x08, int8 = 0x09, int16 = 0x0B, int32 = 0x0C, float32 = 0x0D, float64 = 0x0E }
local write_ctypes = { int8 = "int8_t", int16 = "int16_t", int32 = "int32_t", float32 = "float", float64 = "double" }
--- idx.write(path, {shape=, dtype='uint8'|'int32'|'float32'|..., data=}, {gzip=bool})
-- Used for test fixtures; the file is big-endian like the originals.
function idx.write(path, a, opts)
  opts = opts or {}
  local code = assert(write_types[a.dtype], "idx.write: unsupported dtype " .. tostring(a.dtype))
  local size = code == 0x08 and 1 or ffi.sizeof(write_ctypes[a.dtype])
  local numel = 1
  for _, s in ipairs(a.shape) do numel = numel * s end
  local n = 4 + 4 * #a.shape + numel * size
  local buf = ffi.new("uint8_t[?]", n)
  buf[2], buf[3] = code, #a.shape
  for d, s in ipairs(a.shape) do
    local o = 4 * d
    buf[o], buf[o + 1] = bit.band(bit.rshift(s, 24), 255), bit.band(bit.rshift(s, 16), 255)
    buf[o + 2], buf[o + 3] = bit.band(bit.rshift(s, 8), 255), bit.band(s, 255)
  end
  local body = 4 + 4 * #a.shape
  if size == 1 then
    local src = ffi.cast("uint8_t *", a.data)
    for i = 0, numel - 1 do buf[body + i] = src[i] end
  else
    local src = ffi.cast("uint8_t *", a.data)
    for i = 0, numel - 1 do
      for b = 0, size - 1 do buf[body + i * size + b] = src[i * size + size - 1 - b] end
    end
  end
  if opts.gzip then
    -- gzip writes to a file of its own: a temporary beside path, renamed over it when whole
    local z = idx.zlib()
    local tmp = sys.temp_name(path)
    local f = z.gzopen(tmp, "wb")
    if f == nil then error("idx.write: cannot create " .. tmp .. " (does the folder exist?)", 0) end
    local w = z.gzwrite(f, buf, n)
    local rc = z.gzclose(f)
    if w ~= n or rc ~= 0 then os.remove(tmp) error("idx.write: write failed for " .. path, 0) end
    sys.commit_temp(tmp, path)
  else
    sys.write_atomic_parts(path, function(put) put(buf, n) end)
  end
end

return idx

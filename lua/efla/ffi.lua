-- efla/ffi.lua: the one place that loads libefla through the LuaJIT FFI.
--
-- The declarations come from efla/cdef.lua, which the build generates from core/efla.h
-- (scripts/gen_cdef.lua), so they never drift from the header. Inside the `efla` command
-- libefla is linked into the executable and its symbols are in ffi.C; under a plain
-- `luajit` the library is loaded by name ($EFLA_LIB, else "efla" on the library path).
--
-- Also here: how a failed C call becomes a Lua error. Every binding checks each result
-- (pointer == nil, int < 0: in Lua every number is true) and calls raise(), which puts the
-- position of the user's line (the first caller outside efla's own Lua files) in front of
-- the library's message.
local ffi = require 'ffi'

ffi.cdef(require 'efla.cdef')

local function find_library()
  local ok = pcall(function() return ffi.C.efla_version end)
  if ok then return ffi.C end
  local name = os.getenv('EFLA_LIB') or 'efla'
  local lib_ok, lib = pcall(ffi.load, name)
  if not lib_ok then
    error(string.format("efla: cannot load libefla (%s): %s\n" ..
      "Run efla through the `efla` command, or set EFLA_LIB to the path of libefla.so", name, lib), 0)
  end
  return lib
end

local lib = find_library()

-- The folder holding efla's own Lua files: frames from there are skipped when the
-- position of an error is chosen. ("@/path/lua/efla/ffi.lua" -> "@/path/lua/efla/")
local own_prefix = debug.getinfo(1, 'S').source:match('^(@.*[/\\]efla[/\\])[^/\\]*$')

local function is_own(source)
  return own_prefix ~= nil and source:sub(1, #own_prefix) == own_prefix
end

-- "file:line: " of the first Lua frame outside efla's files (the user's code), or "".
local function user_position()
  local level = 3
  while true do
    local info = debug.getinfo(level, 'Sl')
    if not info then return '' end
    if info.what ~= 'C' and info.currentline and info.currentline > 0 and not is_own(info.source) then
      return info.short_src .. ':' .. info.currentline .. ': '
    end
    level = level + 1
  end
end

local M = { ffi = ffi, lib = lib }

--- raise(msg): error(msg) reported at the user's line (not inside efla's own files).
function M.raise(msg)
  error(user_position() .. tostring(msg), 0)
end

-- libefla counts dims, rows and indices from 0; the Lua side counts them from 1. The
-- library's messages of those shapes are restated in Lua's terms here, at the one place
-- they cross over, so that a user reads the numbers they typed. Negative dims stay as they are.
local function one_based(d) d = tonumber(d) return d >= 0 and d + 1 or d end
local rewrites = {
  { 'dim (%-?%d+) is out of range for a tensor of (%d+) dims %(use 0%.%.%d+ or %-%d+%.%.%-1%)', function(d, n)
      return string.format('dim %d is out of range for a tensor of %s dims (use 1..%s or -%s..-1)', one_based(d), n, n, n) end },
  -- an index in the library's message is the user's index minus 1, negative ones too (the
  -- library wraps negative positions before it checks, so a negative one here came from Lua)
  { 'index (%-?%d+) is out of range for dim (%d+) of size (%d+)', function(i, d, n)
      return string.format('index %d is out of range for dim %d of size %s (valid: 1..%s)', tonumber(i) + 1, one_based(d), n, n) end },
  { 'class index (%-?%d+) is negative; classes are 0%.%.num_classes%-1', function(c)
      return string.format('class %d is out of range: classes are 1..num_classes', tonumber(c) + 1) end },
  { 'class index (%-?%d+) is out of range for num_classes (%d+)', function(c, n)
      return string.format('class %d is out of range for num_classes %s (classes are 1..%s)', tonumber(c) + 1, n, n) end },
  { 'dim (%d+) appears twice', function(d) return string.format('dim %d appears twice', one_based(d)) end },
  -- shapes: the broadcast, size and expand messages name a dim; cat and stack number tensors
  { 'at dim (%d+)', function(d) return string.format('at dim %d', one_based(d)) end },
  { 'in the concatenated dim (%d+)', function(d) return string.format('in the concatenated dim %d', one_based(d)) end },
  { '(%a+): tensor (%d+) has shape (%S+) but tensor 0 has shape', function(op, i, sh)
      return string.format('%s: tensor %d has shape %s but tensor 1 has shape', op, tonumber(i) + 1, sh) end },
  { 'target (%-?%d+) in row (%d+) is outside the (%d+) classes %[0, %d+%) and is not ignore_index %((%-?%d+)%)',
    function(t, r, c, ig)
      return string.format('target %d in row %d is outside the %s classes 1..%s and is not ignore_index (%d)',
        tonumber(t) + 1, tonumber(r) + 1, c, c, tonumber(ig) + 1) end },
}
local function lua_terms(msg)
  for _, r in ipairs(rewrites) do msg = msg:gsub(r[1], r[2]) end
  return msg
end
M.lua_terms = lua_terms

--- last_error(): the library's message for the failure that just happened, in Lua's
--- 1-based terms.
function M.last_error()
  local s = ffi.string(lib.efla_last_error())
  if s == '' then s = 'unknown error in libefla (no message was set)' end
  return lua_terms(s)
end

--- check(rc): rc when it is >= 0, else raises the library's message.
function M.check(rc)
  if rc < 0 then M.raise(M.last_error()) end
  return rc
end

--- checkp(ptr): ptr when it is not NULL, else raises the library's message.
function M.checkp(p)
  if p == nil then M.raise(M.last_error()) end
  return p
end

M.is_own_source = is_own

return M

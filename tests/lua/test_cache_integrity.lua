-- test_cache_integrity.lua: the data cache's header and entry table are covered by a
-- checksum (issue 16, finding 6): every bit flip there is refused, random damage anywhere
-- either is refused or leaves the contents exactly as written, and cache.load rebuilds.
local t = dofile('tests/lua/testlib.lua')
local ffi = require 'ffi'
local data = require 'efla.data'
local cache = require 'efla.data.cache'

local base = os.getenv('EFLA_TEST_TMP')
if not base or base == '' then base = os.tmpname() os.remove(base) end
local dir = base .. '/test_cache_integrity'
os.execute("rm -rf '" .. dir .. "'")
data.mkdir_p(dir)

local payload = ffi.new('uint8_t[40]')
for i = 0, 39 do payload[i] = (i * 37 + 11) % 256 end
local labels = ffi.new('int64_t[5]')
for i = 0, 4 do labels[i] = i + 1 end
local function arrays()
  return { { name = 'x', dtype = 'uint8', shape = { 4, 10 }, data = payload },
           { name = 'y', dtype = 'int64', shape = { 5 }, data = labels } }
end
local path = dir .. '/c.bin'
local SIG = cache.signature('k', {})
cache.write(path, arrays(), SIG)
local good = data.read_file(path)
local meta_bytes = 32 + 128 * 2

local function write(bytes) local f = assert(io.open(path, 'wb')) f:write(bytes) f:close() end
local function flip(s, byte, bitno)
  return s:sub(1, byte - 1) .. string.char(bit.bxor(s:byte(byte), bit.lshift(1, bitno))) .. s:sub(byte + 1)
end
-- the contents as a comparable string: names, dtypes, shapes and bytes
local function summary(out)
  local parts = {}
  for _, name in ipairs { 'x', 'y' } do
    local a = out[name]
    if not a then return 'missing ' .. name end
    parts[#parts + 1] = name .. ':' .. a:dtype() .. ':' .. table.concat(a:size(), 'x') .. ':' ..
      ffi.string(data.ptr(a), a:numel() * (a:dtype() == 'int64' and 8 or 1))
  end
  local n = 0
  for _ in pairs(out) do n = n + 1 end
  return table.concat(parts, '|') .. '|' .. n
end
local want = summary(assert(cache.read(path, SIG)))

t.test('every bit flip in the header and entry table is refused', function()
  local loaded, header_reason = 0, 0
  for byte = 1, meta_bytes do
    for b = 0, 7 do
      write(flip(good, byte, b))
      local out, why = cache.read(path, SIG)
      if out then loaded = loaded + 1 end
      if why and why:find('header checksum mismatch', 1, true) then header_reason = header_reason + 1 end
    end
  end
  t.eq(loaded, 0, 'caches loaded after a flip in the header or table')
  t.ok(header_reason > meta_bytes * 8 * 0.9, 'most flips are named as a header checksum mismatch (' .. header_reason .. ')')
end)

t.test('random damage anywhere: refused or the exact contents', function()
  local state, different, refused = 99, 0, 0
  local function rnd(n) state = (state * 1103515245 + 12345) % 2147483648 return state % n end
  for _ = 1, 1000 do
    local s = good
    for _ = 1, 1 + rnd(3) do
      local at = 1 + rnd(#s)
      s = s:sub(1, at - 1) .. string.char(rnd(256)) .. s:sub(at + 1)
    end
    if rnd(10) == 0 then s = s:sub(1, rnd(#s)) end  -- sometimes truncated too
    write(s)
    local ok, out, why = pcall(cache.read, path, SIG)
    t.ok(ok, 'cache.read never raises: ' .. tostring(out))
    if out then
      if summary(out) ~= want then different = different + 1 end
    else
      refused = refused + 1
      t.ok(type(why) == 'string' and why ~= '', 'a refusal says why')
    end
  end
  t.eq(different, 0, 'damaged caches that loaded with different contents')
  t.ok(refused > 0, 'some damage was refused')
end)

t.test('a damaged header is rebuilt with a message', function()
  write(flip(good, 13, 0))  -- the array count
  local builds, msgs = 0, {}
  local old_log = data.log
  data.log = function(m) msgs[#msgs + 1] = m end
  local out = cache.load { name = 'c', key = 'k', sources = {}, dir = dir,
                           build = function() builds = builds + 1 return arrays() end }
  data.log = old_log
  t.eq(builds, 1, 'rebuilt once')
  t.ok(table.concat(msgs, '\n'):find('header checksum mismatch', 1, true), 'the message names the damage: ' .. table.concat(msgs, '\n'))
  t.eq(summary(out), want, 'the rebuilt contents')
end)

os.execute("rm -rf '" .. dir .. "'")
t.done()

-- test_sys.lua: efla.sys, the OS layer: listing, stat, mkdir -p, atomic writes (nothing
-- partial is left when the writer fails mid-way), CRC-32 against a bitwise reference and
-- zlib's gzip trailer, processes, and that lua/ no longer declares libc structs or lists
-- folders through a shell. Run: build/efla tests/lua/test_sys.lua
local ffi = require 'ffi'
local t = dofile((arg[0]:match('^(.*[/\\])') or './') .. 'testlib.lua')
local test, eq, ok, raises = t.test, t.eq, t.ok, t.raises
local sys = require 'efla.sys'

local tmp = (os.getenv('EFLA_TEST_TMP') or '/tmp') .. '/lua_test_sys_' .. sys.getpid()
sys.remove_tree(tmp)
sys.mkdir_p(tmp)

local function write_plain(path, text)
  local f = assert(io.open(path, 'wb'))
  f:write(text)
  f:close()
end
local function read(path)
  local f = io.open(path, 'rb')
  if not f then return nil end
  local s = f:read('*a')
  f:close()
  return s
end
-- names in dir that look like an atomic writer's temporaries
local function temporaries(dir)
  local out = {}
  for _, n in ipairs(sys.list_dir(dir)) do if n:find('%.tmp%-') then out[#out + 1] = n end end
  return out
end

test('list_dir: every name (spaces, quotes, a newline, a leading dash), sorted, no . or ..', function()
  local d = tmp .. '/list'
  sys.mkdir_p(d .. '/sub folder')
  local names = { "it's", 'a b', '-n', 'line\nbreak', 'z', '.hidden' }
  for _, n in ipairs(names) do write_plain(d .. '/' .. n, n) end
  local want = { 'sub folder' }
  for _, n in ipairs(names) do want[#want + 1] = n end
  table.sort(want)
  eq(sys.list_dir(d), want)
  eq(sys.list_dir(d .. '/sub folder'), {})
  local none, why = sys.list_dir(d .. '/missing')
  eq(none, nil)
  ok(why:find(d .. '/missing', 1, true) and why:find('No such file'), 'the message names the path and why: ' .. tostring(why))
  eq(require('efla.data').list_dir(d), want, 'efla.data.list_dir is the same listing')
end)

test('stat: size, mtime, is_dir / is_file; lstat sees links; missing -> nil and why', function()
  local p = tmp .. '/stat.bin'
  local before = os.time()
  write_plain(p, string.rep('x', 1234))
  local st = sys.stat(p)
  eq(st.size, 1234)
  ok(st.is_file and not st.is_dir and not st.is_link)
  ok(st.mtime >= before - 2 and st.mtime <= os.time() + 2, 'mtime is now: ' .. st.mtime .. ' vs ' .. before)
  local dst = sys.stat(tmp)
  ok(dst.is_dir and not dst.is_file)
  ok(sys.is_dir(tmp) and not sys.is_dir(p) and sys.is_file(p) and not sys.is_file(tmp))
  ok(sys.exists(p) and sys.exists(tmp) and not sys.exists(tmp .. '/nope'))
  local link = tmp .. '/stat.link'
  eq(os.execute("ln -s stat.bin '" .. link .. "'"), 0, 'made a symlink')
  ok(sys.stat(link).is_file and not sys.stat(link).is_link, 'stat follows the link')
  ok(sys.lstat(link).is_link, 'lstat describes the link')
  eq(sys.readlink(link), 'stat.bin')
  local size, sec = require('efla.data').stat(p)
  eq({ size, sec }, { 1234, st.mtime }, 'efla.data.stat keeps its (size, mtime) form')
  local none, why = sys.stat(tmp .. '/nope')
  eq(none, nil)
  ok(why and why ~= '', 'a reason comes back')
  raises(function() sys.stat('') end, 'expected a path')
end)

test('mkdir_p: parents made, existing is fine, a file in the way is named', function()
  local d = tmp .. '/m/a/b/c'
  eq(sys.mkdir_p(d), d)
  ok(sys.is_dir(d))
  sys.mkdir_p(d)   -- again: no error
  sys.mkdir_p(tmp .. '/m/a//b/')
  write_plain(tmp .. '/m/file', '')
  local msg = raises(function() sys.mkdir_p(tmp .. '/m/file/x/y') end, 'is not a folder')
  ok(msg:find(tmp .. '/m/file', 1, true), 'the file in the way is named: ' .. msg)
end)

test('remove, rename, link, remove_tree', function()
  local a, b, c = tmp .. '/r_a', tmp .. '/r_b', tmp .. '/r_c'
  write_plain(a, 'A')
  sys.rename(a, b)
  ok(not sys.exists(a) and read(b) == 'A')
  ok(sys.link(b, c))
  eq(read(c), 'A')
  local st = sys.stat(c)
  ok(st.is_file)
  eq(sys.remove(b), true)
  eq(read(c), 'A', 'the hard link keeps the data')
  local none, why = sys.remove(b)
  ok(none == nil and why:find(b, 1, true), 'removing a missing file says so')
  raises(function() sys.rename(b, c) end, b)
  sys.mkdir_p(tmp .. '/tree/x/y')
  write_plain(tmp .. '/tree/x/y/f', 'f')
  write_plain(tmp .. '/keep', 'k')
  os.execute("ln -s ../keep '" .. tmp .. "/tree/x/link'")
  eq(sys.remove_tree(tmp .. '/tree'), true)
  ok(not sys.exists(tmp .. '/tree'), 'the tree is gone')
  eq(read(tmp .. '/keep'), 'k', 'a link inside is removed, not followed')
  eq(sys.remove_tree(tmp .. '/tree'), true, 'a missing tree is not an error')
end)

test('write_atomic: replaces the file whole; a writer that fails mid-way leaves the old file and no temporary', function()
  local d = tmp .. '/atomic'
  sys.mkdir_p(d)
  local p = d .. '/out.csv'
  eq(sys.write_atomic(p, 'old\n'), p)
  eq(read(p), 'old\n')
  local msg = raises(function()
    sys.write_atomic_parts(p, function(put)
      put('new first half\n')
      put(ffi.new('uint8_t[3]', { 65, 66, 67 }), 3)
      error('the writer broke half-way', 0)
    end)
  end, 'the writer broke half-way')
  ok(msg, 'the writer\'s error comes through')
  eq(read(p), 'old\n', 'the old contents are untouched')
  eq(temporaries(d), {}, 'no temporary file is left behind')
  sys.write_atomic_parts(p, function(put)
    put('new\n')
    put(ffi.new('uint8_t[3]', { 65, 66, 67 }), 3)
  end)
  eq(read(p), 'new\nABC', 'string and pointer parts, in order')
  eq(temporaries(d), {})
  raises(function() sys.write_atomic(d, 'x') end, 'folder')
  raises(function() sys.write_atomic(d .. '/no/such/f', 'x') end, 'does not exist')
  raises(function() sys.write_atomic(p, 42) end, 'expected the text as a string')
  -- through a symlink: the file it names is replaced and the link stays a link
  os.execute("ln -s out.csv '" .. d .. "/via.link'")
  sys.write_atomic(d .. '/via.link', 'linked')
  eq(read(p), 'linked')
  ok(sys.lstat(d .. '/via.link').is_link, 'the link is still a link')
  -- efla.data and the CSV writer use the same writer
  eq(require('efla.data').write_atomic, sys.write_atomic)
  require('efla.csv').write(d .. '/t.csv', { 'a', 'b' }, { { 1, 2 } })
  ok(read(d .. '/t.csv'):find('a,b'), 'csv written')
  eq(temporaries(d), {})
end)

test('temp_name + commit_temp: the writer\'s naming; committed over the target; a failure removes the temporary', function()
  local d = tmp .. '/commit'
  sys.mkdir_p(d)
  local p = d .. '/plot.png'
  local a, b = sys.temp_name(p), sys.temp_name(p)
  ok(a ~= b, 'fresh names')
  math.randomseed(7)
  local want = math.random()
  math.randomseed(7)
  sys.temp_name(p)
  eq(math.random(), want, 'a seeded math.random stream is not disturbed')
  ok(sys.basename(a):match('^plot%.png%.tmp%-' .. sys.getpid() .. '%-%x%x%x%x%x%x%x%x$'), a)
  eq(sys.dirname(a), d)
  write_plain(a, 'png bytes')
  eq(sys.commit_temp(a, p), p)
  eq(read(p), 'png bytes')
  ok(not sys.exists(a))
  write_plain(b, 'x')
  sys.mkdir_p(d .. '/dir_target')
  write_plain(d .. '/dir_target/inside', '')
  raises(function() sys.commit_temp(b, d .. '/dir_target') end, 'unchanged')
  ok(not sys.exists(b), 'the temporary is removed on failure')
end)

test('paths: dirname and basename', function()
  eq({ sys.dirname('a'), sys.dirname('/a'), sys.dirname('a/b'), sys.dirname('a/b/'), sys.dirname('/x/y//z') },
     { '.', '/', 'a', 'a', '/x/y' })
  eq({ sys.basename('a'), sys.basename('/a/b'), sys.basename('a/b/') }, { 'a', 'b', 'b' })
end)

-- CRC-32 one bit at a time (IEEE 802.3 polynomial, reflected): slow and obvious.
local bit = require 'bit'
local function crc32_bitwise(s)
  local c = 0xFFFFFFFF
  for i = 1, #s do
    c = bit.bxor(c, s:byte(i))
    for _ = 1, 8 do
      if bit.band(c, 1) ~= 0 then c = bit.bxor(bit.rshift(c, 1), 0xEDB88320) else c = bit.rshift(c, 1) end
    end
  end
  c = bit.bnot(c)
  return c < 0 and c + 2 ^ 32 or c
end

local function random_bytes(n, seed)
  local x, out = seed, {}
  for i = 1, n do
    x = (x * 1103515245 + 12345) % 2147483648
    out[i] = string.char(math.floor(x / 65536) % 256)
  end
  return table.concat(out)
end

test('crc32: zlib\'s value equals a bitwise reference (strings, pointers, running values)', function()
  for _, n in ipairs({ 0, 1, 3, 7, 8, 9, 63, 64, 65, 1000, 4099 }) do
    local s = random_bytes(n, n + 17)
    local want = crc32_bitwise(s)
    eq(sys.crc32(s), want, 'string of ' .. n .. ' bytes')
    local buf = ffi.new('uint8_t[?]', n + 1)
    ffi.copy(buf, s, n)
    eq(sys.crc32(buf, n), want, 'pointer to ' .. n .. ' bytes')
    local cut = math.floor(n / 3)
    eq(sys.crc32(s:sub(cut + 1), nil, sys.crc32(s:sub(1, cut))), want, 'running value over two parts')
  end
  eq(sys.crc32('abc', 2), crc32_bitwise('ab'), 'a prefix by nbytes')
  eq(require('efla.data.cache').crc32('hello', 5), crc32_bitwise('hello'), 'the data cache uses the same CRC')
  raises(function() sys.crc32('abc', 4) end, 'past the end')
  raises(function() sys.crc32(ffi.new('uint8_t[4]')) end, 'give nbytes')
end)

test('crc32: equals the CRC zlib\'s gzip writer stores in the trailer (a second path through zlib)', function()
  local z = sys.zlib()
  local s = random_bytes(5000, 3)
  local p = tmp .. '/crc.gz'
  local f = z.gzopen(p, 'wb')
  ok(f ~= nil)
  eq(z.gzwrite(f, s, #s), #s)
  eq(z.gzclose(f), 0)
  local gz = read(p)
  local b1, b2, b3, b4 = gz:byte(#gz - 7, #gz - 4)   -- CRC-32, little-endian, then ISIZE
  eq(b1 + b2 * 256 + b3 * 65536 + b4 * 16777216, sys.crc32(s))
end)

test('processes: getpid, pid_alive, getenv / setenv, sleep, clock, which', function()
  local pid = sys.getpid()
  ok(type(pid) == 'number' and pid > 0)
  eq(require('efla.data').getpid(), pid)
  ok(sys.pid_alive(pid), 'this process is alive')
  local dead = 4194000
  while sys.pid_alive(dead) do dead = dead + 1 end
  ok(not sys.pid_alive(dead), 'a free pid is not alive')
  sys.setenv('EFLA_TEST_SYS_VAR', 'v1')
  eq(sys.getenv('EFLA_TEST_SYS_VAR'), 'v1')
  eq(os.getenv('EFLA_TEST_SYS_VAR'), 'v1', 'the process environment changed')
  sys.setenv('EFLA_TEST_SYS_VAR', nil)
  eq(sys.getenv('EFLA_TEST_SYS_VAR', 'default'), 'default')
  local t0 = sys.clock()
  sys.sleep(0.02)
  local dt = sys.clock() - t0
  ok(dt >= 0.019 and dt < 1, 'slept 0.02 s: ' .. dt)
  raises(function() sys.sleep(-1) end, 'seconds >= 0')
  local sh = sys.which('sh')
  ok(sh and sys.is_file(sh), 'sh is on PATH: ' .. tostring(sh))
  eq(sys.which('efla-no-such-program-xyz'), nil)
end)

test('checkpoint Manager: its own module; stale temporaries of dead writers removed, live ones kept', function()
  local checkpoint = require 'efla.checkpoint'
  local cm = require 'efla.checkpoint_manager'
  local d = tmp .. '/ckpt'
  sys.mkdir_p(d)
  local dead = 4194000
  while sys.pid_alive(dead) do dead = dead + 1 end
  local stale = d .. '/step-000001.h5.tmp-' .. dead .. '-0123abcd'
  local old_best = d .. '/best.h5.tmp-' .. dead
  local mine = d .. '/step-000002.h5.tmp-' .. sys.getpid() .. '-0123abcd'
  for _, p in ipairs({ stale, old_best, mine }) do write_plain(p, 'partial') end
  local mgr = checkpoint.Manager { dir = d, keep_last = 1 }
  ok(getmetatable(mgr) == cm.Manager, 'checkpoint.Manager makes a checkpoint_manager Manager')
  ok(not sys.exists(stale) and not sys.exists(old_best), 'temporaries of dead writers are gone')
  ok(sys.exists(mine), 'this process\'s temporary is kept')
  eq(mgr:steps(), {})
  eq(mgr:latest(), nil)
end)

test('lua/ declares no libc structs and lists no folders through a shell', function()
  local root = (arg[0]:match('^(.*)/tests/lua/[^/]*$') or '.') .. '/lua'
  if not sys.is_dir(root) then t.skip('source scan', 'no lua/ beside the tests (a bundle)') return end
  local bad = {}
  local function scan(dir)
    for _, n in ipairs(sys.list_dir(dir)) do
      local p = dir .. '/' .. n
      if sys.is_dir(p) then scan(p)
      elseif n:match('%.lua$') then
        local src = read(p)
        for _, pat in ipairs({ 'popen%(%s*["\']ls', 'struct%s+[%w_]*dirent', 'int%s+stat%s*%(',
                               'struct%s+stat%W', 'opendir', 'readdir' }) do
          if src:find(pat) then bad[#bad + 1] = p .. ': ' .. pat end
        end
      end
    end
  end
  scan(root)
  eq(bad, {}, 'hand-made OS code found (use efla.sys)')
end)

test('git_revision: the commit of a checkout, its dirty flag, nil outside one', function()
  if not sys.which('git') then print('  (skipped: no git)') return end
  local function sh(cmd) local p = io.popen(cmd); local out = p:read('*a'); p:close(); return out end
  local repo = tmp .. '/repo'
  sys.mkdir_p(repo)
  write_plain(repo .. '/a.txt', 'one\n')
  sh("cd '" .. repo .. "' && git init -q && git add a.txt && git -c user.name=t -c user.email=t@t commit -qm one")
  local want = sh("git -C '" .. repo .. "' rev-parse HEAD"):match('%x+')
  local rev, dirty = sys.git_revision(repo)
  eq(rev, want)
  eq(dirty, false)
  local copy = tmp .. '/repo2'   -- a second checkout, changed after its commit (the cache is per folder)
  sh("git clone -q '" .. repo .. "' '" .. copy .. "'")
  write_plain(copy .. '/a.txt', 'two\n')
  local rev2, dirty2 = sys.git_revision(copy)
  eq(rev2, want)
  eq(dirty2, true)
  local plain = tmp .. '/not-a-repo'   -- tmp may lie inside efla's own checkout (ctest's build dir)
  sys.mkdir_p(plain)
  sys.setenv('GIT_CEILING_DIRECTORIES', tmp)
  eq(sys.git_revision(plain), nil)
end)

sys.remove_tree(tmp)
t.done()

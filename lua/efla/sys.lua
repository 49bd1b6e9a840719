-- efla.sys: the operating-system layer of efla's Lua code, in one place.
--
--   local sys = require 'efla.sys'
--   for _, name in ipairs(sys.list_dir('checkpoints/run')) do ... end   -- sorted, no . or ..
--   local st = sys.stat(path)          -- {size =, mtime =, is_dir =, is_file =, is_link =} or nil
--   sys.mkdir_p('runs/a/b')            -- with parents; no error if it exists
--   sys.write_atomic(path, text)       -- temp file beside it, fsync, rename, fsync of the folder
--   sys.crc32('abc')                   -- zlib's CRC-32 (also of a pointer and a byte count)
--
-- File system and processes come from lua-posix (Debian `lua-posix`; the GPU bundle ships
-- its posix.so next to efla's Lua files), never from `ls` pipes or hand-declared libc
-- structs. Atomic writes go through libefla's efla_atomic_* (core/atomic_file.c), the
-- writer HDF5 checkpoints use too, so every file efla writes (CSV, JSON, plots, caches,
-- checkpoints) is replaced the same way. CRC-32 is zlib's (libz, which HDF5 needs anyway).
--
-- Functions that query (stat, exists, list_dir) return nil and a message when the path is
-- not there; functions that change the file system raise an error that names the path.
local ffi = require 'ffi'
local bit = require 'bit'

local sys = {}

-- ---- lua-posix ------------------------------------------------------------------------------------
-- The bundle puts posix.so (all of lua-posix's C modules in one library) beside efla/: look
-- there before the system folders, so the bundle's copy is used on a machine without it.
local lua_dir = debug.getinfo(1, 'S').source:match('^@(.*)/efla/[^/]*$')
if lua_dir then
  local f = io.open(lua_dir .. '/posix.so', 'rb')
  if f then
    f:close()
    package.cpath = lua_dir .. '/?.so;' .. package.cpath
  end
end

local function need(name)
  local ok, m = pcall(require, name)
  if not ok then
    error('efla.sys: cannot load ' .. name .. ' (lua-posix): apt-get install lua-posix, ' ..
      'or use the bundle, which ships it\n' .. tostring(m), 0)
  end
  return m
end
local stat_m = need 'posix.sys.stat'
local dirent = need 'posix.dirent'
local unistd = need 'posix.unistd'
local stdlib = need 'posix.stdlib'
local fcntl = need 'posix.fcntl'
local ptime = need 'posix.time'
local signal = need 'posix.signal'
local errno = need 'posix.errno'

-- Raise "efla.sys.<op>: <path>: <why>" for a failed call (posix returns nil, message, errno).
local function check(op, path, ok, msg, ...)
  if ok == nil then error(string.format('efla.sys.%s: %s: %s', op, path, tostring(msg)), 0) end
  return ok, msg, ...
end

local function check_path(op, path)
  if type(path) ~= 'string' or path == '' then
    error(string.format('efla.sys.%s: expected a path (a non-empty string), got %s', op,
      path == '' and 'an empty string' or type(path)), 3)
  end
end

-- ---- paths ---------------------------------------------------------------------------------------

--- sys.dirname(path) -> the folder part of path ('.' when there is none, '/' for '/x').
function sys.dirname(path)
  local d = path:gsub('/+$', ''):match('^(.*[^/])/+[^/]*$')
  if d then return d end
  return path:sub(1, 1) == '/' and '/' or '.'
end

--- sys.basename(path) -> the last part of path (trailing slashes ignored).
function sys.basename(path)
  return path:match('([^/]*)/*$')
end

-- ---- queries ----------------------------------------------------------------------------------------

-- The fields efla uses of lua-posix's stat record (whole seconds: lua-posix 33 has no ns).
local function describe(st)
  return {
    size = st.st_size, mtime = st.st_mtime, ctime = st.st_ctime, mode = st.st_mode, ino = st.st_ino,
    is_dir = stat_m.S_ISDIR(st.st_mode) ~= 0, is_file = stat_m.S_ISREG(st.st_mode) ~= 0,
    is_link = stat_m.S_ISLNK(st.st_mode) ~= 0,
  }
end

--- sys.stat(path) -> {size, mtime, ctime (seconds), mode, ino, is_dir, is_file, is_link = false}, or nil
--- and a message. Symbolic links are followed; sys.lstat describes the link itself.
function sys.stat(path)
  check_path('stat', path)
  local st, err = stat_m.stat(path)
  if not st then return nil, err end
  return describe(st)
end

--- sys.lstat(path) -> like sys.stat, but a symbolic link is described itself (is_link = true).
function sys.lstat(path)
  check_path('lstat', path)
  local st, err = stat_m.lstat(path)
  if not st then return nil, err end
  return describe(st)
end

--- sys.exists(path) -> true when something (file, folder, ...) is at path.
function sys.exists(path) return sys.stat(path) ~= nil end

--- sys.is_dir(path) -> true when path is a folder (or a link to one).
function sys.is_dir(path)
  local st = sys.stat(path)
  return st ~= nil and st.is_dir
end

--- sys.is_file(path) -> true when path is a regular file (or a link to one).
function sys.is_file(path)
  local st = sys.stat(path)
  return st ~= nil and st.is_file
end

--- sys.list_dir(path) -> sorted array of the entry names (no . or ..), or nil and a message.
function sys.list_dir(path)
  check_path('list_dir', path)
  local ok, names = pcall(dirent.dir, path)
  if not ok or type(names) ~= 'table' then
    -- lua-posix raises "bad argument #1 to 'dir' (<path>: <why>)": keep "<path>: <why>"
    local why = ok and (path .. ': cannot be read') or tostring(names)
    return nil, why:match('%((.*)%)$') or why
  end
  local out = {}
  for _, n in ipairs(names) do
    if n ~= '.' and n ~= '..' then out[#out + 1] = n end
  end
  table.sort(out)
  return out
end

-- ---- changes ----------------------------------------------------------------------------------------

--- sys.mkdir_p(path [, mode]): create path and its parents (mode 0755 by default); no error
--- when it exists as a folder; an error naming the part that could not be made otherwise.
function sys.mkdir_p(path, mode)
  check_path('mkdir_p', path)
  mode = mode or tonumber('755', 8)
  local acc = path:sub(1, 1) == '/' and '' or '.'
  for part in path:gmatch('[^/]+') do
    acc = acc .. '/' .. part
    local st = sys.stat(acc)
    if not st then
      local ok, msg, code = stat_m.mkdir(acc, mode)
      -- another process may have made it between the stat and the mkdir
      if not ok and code ~= errno.EEXIST then
        error(string.format('efla.sys.mkdir_p: cannot create the folder %s: %s', acc, tostring(msg)), 0)
      end
    elseif not st.is_dir then
      error(string.format('efla.sys.mkdir_p: %s: %s exists and is not a folder', path, acc), 0)
    end
  end
  if not sys.is_dir(path) then error('efla.sys.mkdir_p: cannot create the folder ' .. path, 0) end
  return path
end

--- sys.remove(path) -> true, or nil and a message: removes a file, a link or an empty folder.
function sys.remove(path)
  check_path('remove', path)
  local st = sys.lstat(path)
  if not st then return nil, path .. ': no such file or folder' end
  local ok, err
  if st.is_dir and not st.is_link then ok, err = unistd.rmdir(path) else ok, err = unistd.unlink(path) end
  if not ok then return nil, err end
  return true
end

--- sys.remove_tree(path) -> true: removes path and, for a folder, everything under it (links
--- are removed, never followed). A missing path is not an error.
function sys.remove_tree(path)
  check_path('remove_tree', path)
  local st = sys.lstat(path)
  if not st then return true end
  if st.is_dir and not st.is_link then
    for _, name in ipairs(sys.list_dir(path) or {}) do sys.remove_tree(path .. '/' .. name) end
  end
  check('remove_tree', path, sys.remove(path))
  return true
end

--- sys.rename(from, to) -> true: renames (atomically replaces to on one file system).
function sys.rename(from, to)
  check_path('rename', from)
  check_path('rename', to)
  local ok, err = os.rename(from, to)
  if not ok then error(string.format('efla.sys.rename: %s -> %s: %s', from, to, tostring(err)), 0) end
  return true
end

--- sys.link(from, to) -> true, or nil and a message: a hard link (fails across file systems).
function sys.link(from, to)
  check_path('link', from)
  check_path('link', to)
  local ok, err = unistd.link(from, to)
  if not ok then return nil, err end
  return true
end

--- sys.readlink(path) -> the target of a symbolic link, or nil and a message.
function sys.readlink(path)
  check_path('readlink', path)
  return unistd.readlink(path)
end

-- fsync of an open-able path (file or folder); folders may refuse it on some file systems,
-- so those failures are ignored there.
local function fsync_path(path, is_dir)
  local fd, err = fcntl.open(path, fcntl.O_RDONLY)
  if not fd then
    if is_dir then return true end
    return nil, err
  end
  local ok, ferr = unistd.fsync(fd)
  unistd.close(fd)
  if not ok and not is_dir then return nil, ferr end
  return true
end

--- sys.fsync_dir(path): puts a folder's entries (a rename, a new file) on disk; best effort.
function sys.fsync_dir(path)
  check_path('fsync_dir', path)
  fsync_path(path, true)
end

-- ---- atomic writes ----------------------------------------------------------------------------------
local binding
local function lib()
  binding = binding or require 'efla.ffi'
  return binding.lib
end

local function atomic_check(ok)
  if not ok then
    local msg = ffi.string(lib().efla_last_error()):gsub('^atomic_%w+: ', '')
    error('efla.sys.write_atomic: ' .. msg, 0)
  end
end

--- sys.write_atomic_parts(path, fill) -> path: fill(put) calls put(string) or put(pointer,
--- nbytes) for each part; the parts go to a temporary file beside path that is fsynced and
--- renamed over path (then the folder is fsynced) only when fill returned without error.
--- A reader, or a run killed mid-write, sees the old file or the new one, never half of one.
--- Symlinks are followed (the file they name is replaced); folders and devices are refused.
function sys.write_atomic_parts(path, fill)
  check_path('write_atomic', path)
  local L = lib()
  local f = L.efla_atomic_create(path)
  atomic_check(f ~= nil)
  local ok, err = pcall(fill, function(p, n)
    if type(p) == 'string' then n = #p end
    atomic_check(L.efla_atomic_write(f, p, n) == 0)
  end)
  if not ok then L.efla_atomic_abort(f) error(err, 0) end
  atomic_check(L.efla_atomic_commit(f) == 0)
  return path
end

--- sys.write_atomic(path, text) -> path: writes text to path atomically (see write_atomic_parts).
function sys.write_atomic(path, text)
  if type(text) ~= 'string' then
    error('efla.sys.write_atomic: ' .. tostring(path) .. ': expected the text as a string, got ' .. type(text), 2)
  end
  return sys.write_atomic_parts(path, function(put) put(text) end)
end

local temp_counter = 0
--- sys.temp_name(path) -> a fresh name beside path, "<name>.tmp-<pid>-<8 hex digits>": the
--- form the atomic writer uses, so one left by a killed run is removed by the next write.
function sys.temp_name(path)
  check_path('temp_name', path)
  local dir, base = sys.dirname(path), sys.basename(path):sub(1, 200)
  -- not math.random: a recipe's seeded stream must not shift because a file was written
  temp_counter = temp_counter + 1
  local now = ptime.clock_gettime(ptime.CLOCK_REALTIME)
  local rnd = bit.bxor(now.tv_nsec, bit.rol(now.tv_sec, 7), bit.lshift(temp_counter, 22))
  return string.format('%s/%s.tmp-%d-%s', dir, base, unistd.getpid(), bit.tohex(rnd))
end

--- sys.commit_temp(tmp, path) -> path: the last steps of an atomic write for a file that
--- something else wrote under a sys.temp_name (gnuplot's PNG, a hard link): fsync it,
--- rename it over path, fsync the folder. On failure tmp is removed and the error raised.
function sys.commit_temp(tmp, path)
  local ok, err = fsync_path(tmp, false)
  if ok then ok, err = os.rename(tmp, path) end
  if not ok then
    os.remove(tmp)
    error(string.format('efla.sys.commit_temp: %s: %s; the file is unchanged', path, tostring(err)), 0)
  end
  sys.fsync_dir(sys.dirname(path))
  return path
end

-- ---- processes -----------------------------------------------------------------------------------------

--- sys.getpid() -> this process's id.
function sys.getpid() return unistd.getpid() end

--- sys.pid_alive(pid) -> true unless no process has that id (a process of another user counts).
function sys.pid_alive(pid)
  local ok, _, code = signal.kill(pid, 0)
  return ok ~= nil or code ~= errno.ESRCH
end

--- sys.getenv(name [, default]) -> the environment variable, or default when unset or empty.
function sys.getenv(name, default)
  local v = stdlib.getenv(name)
  if v == nil or v == '' then return default end
  return v
end

--- sys.setenv(name, value): sets (value = nil: unsets) an environment variable of this process.
function sys.setenv(name, value)
  check('setenv', name, stdlib.setenv(name, value))
end

--- sys.sleep(seconds): sleeps (fractions allowed); returns early only on a signal.
function sys.sleep(seconds)
  if type(seconds) ~= 'number' or seconds < 0 then
    error('efla.sys.sleep: expected a number of seconds >= 0, got ' .. tostring(seconds), 2)
  end
  local s = math.floor(seconds)
  ptime.nanosleep({ tv_sec = s, tv_nsec = math.floor((seconds - s) * 1e9) })
end

--- sys.clock() -> monotonic seconds (sub-microsecond resolution), for timing.
function sys.clock()
  local t = ptime.clock_gettime(ptime.CLOCK_MONOTONIC)
  return t.tv_sec + t.tv_nsec * 1e-9
end

--- sys.isatty(fd) -> true when the file descriptor (1: stdout) is a terminal.
function sys.isatty(fd) return unistd.isatty(fd or 1) == 1 end

--- sys.which(program) -> the full path of an executable found on $PATH, or nil.
function sys.which(program)
  if program:find('/') then return unistd.access(program, 'x') and program or nil end
  for dir in (sys.getenv('PATH', '/usr/bin:/bin')):gmatch('[^:]+') do
    local p = dir .. '/' .. program
    if unistd.access(p, 'x') and sys.is_file(p) then return p end
  end
  return nil
end

-- ---- provenance: the git revision ------------------------------------------------------------------
local revisions = {}
--- sys.git_revision([dir]) -> the full commit hash of the git checkout at dir (default: the
--- current folder) and whether it has uncommitted changes to tracked files, or nil outside a
--- checkout (an installed bundle) or without git. Asked once per folder (results are cached).
function sys.git_revision(dir)
  local key = dir or '.'
  local r = revisions[key]
  if r == nil then
    r = false
    if sys.which('git') then
      local q = "'" .. key:gsub("'", "'\\''") .. "'"
      local p = io.popen('git -C ' .. q .. ' rev-parse HEAD 2>/dev/null')
      local rev = p and p:read('*l')
      if p then p:close() end
      if rev and rev:match('^%x+$') then
        local d = io.popen('git -C ' .. q .. ' status --porcelain --untracked-files=no 2>/dev/null')
        local dirty = d and d:read('*l')
        if d then d:close() end
        r = { rev, dirty ~= nil and dirty ~= '' }
      end
    end
    revisions[key] = r
  end
  if not r then return nil end
  return r[1], r[2]
end

-- ---- zlib: CRC-32 ----------------------------------------------------------------------------------
local zlib
--- sys.zlib() -> the zlib library through the FFI (libz.so.1, Debian zlib1g), for gz* and crc32.
function sys.zlib()
  if zlib then return zlib end
  for _, name in ipairs({ 'z', 'libz.so.1' }) do
    local ok, l = pcall(ffi.load, name)
    if ok then zlib = l break end
  end
  if not zlib then error('efla.sys: cannot load zlib (libz.so.1): apt-get install zlib1g', 0) end
  if not pcall(function() return zlib.gzopen end) then
    ffi.cdef [[
      void *gzopen(const char *path, const char *mode);
      int gzbuffer(void *file, unsigned size);
      int gzread(void *file, void *buf, unsigned len);
      int gzwrite(void *file, const void *buf, unsigned len);
      int gzclose(void *file);
      const char *gzerror(void *file, int *errnum);
      unsigned long crc32(unsigned long crc, const uint8_t *buf, unsigned len);
    ]]
  end
  return zlib
end

--- sys.crc32(bytes [, nbytes [, crc]]) -> CRC-32 (zlib's, the one core/h5.c stores) as a Lua
--- number. bytes is a string or a pointer (then nbytes is required); crc continues a
--- running value (the CRC of the bytes before).
function sys.crc32(bytes, nbytes, crc)
  if type(bytes) == 'string' then
    nbytes = nbytes or #bytes
    if nbytes > #bytes then error('efla.sys.crc32: nbytes ' .. nbytes .. ' is past the end of the string', 2) end
  elseif type(nbytes) ~= 'number' then
    error('efla.sys.crc32: give nbytes with a pointer', 2)
  end
  local z = sys.zlib()
  local p = ffi.cast('const uint8_t *', bytes)
  local c, done = crc or 0, 0
  while done < nbytes do
    local n = math.min(nbytes - done, 0x40000000)
    c = z.crc32(c, p + done, n)
    done = done + n
  end
  return tonumber(c)
end

return sys

-- efla/repl.lua: the interactive prompt of the `efla` command.
--
-- Each entry is tried first as an expression ("return <entry>", whose values are
-- printed: tensors Torch-style, tables briefly), then as a statement. An entry that ends
-- early (Lua's "... near '<eof>'") continues on the next line with the ">> " prompt. An
-- error prints its message and the session goes on. `exit`, exit() or Ctrl-D quits.
--
-- Ctrl-C while an entry runs stops it with "interrupted!" and keeps the session (the
-- launcher's SIGINT handler sets a count hook; entries run with the JIT off, because
-- compiled loops never look at hooks); Ctrl-C at the prompt clears the line. A second
-- Ctrl-C while the first is still waiting for Lua code (stuck in one C call) ends efla.
--
-- Line editing and a persistent history come from libreadline through the FFI (history
-- in $EFLA_HISTORY, else ~/.efla_history; each line is appended as soon as it is
-- entered, so a killed session keeps it). Debian's lua-readline module was tried and not
-- used: it cannot let a Ctrl-C end the line being read, it reads ~/.rl_lua_history when it
-- is loaded, and its save_history appends every new line again on each call. Without
-- readline, or when stdin is not a terminal (a pipe, a test), lines come from io.read, no
-- prompts are printed and Ctrl-C keeps its default action.
local ffi = require 'ffi'

local R = {}

local function try_cdef(decl) pcall(ffi.cdef, decl) end
try_cdef 'int isatty(int fd);'
try_cdef 'void free(void *ptr);'
try_cdef 'void *malloc(size_t size);'
try_cdef 'char *strdup(const char *s);'
try_cdef 'long read(int fd, void *buf, size_t count);'

local function stdin_is_tty()
  local ok, r = pcall(function() return ffi.C.isatty(0) == 1 end)
  return ok and r
end

-- ---- readers -----------------------------------------------------------------------------------
local function load_readline()
  for _, name in ipairs({ 'readline', 'libreadline.so.8', 'libreadline.so' }) do
    local ok, lib = pcall(ffi.load, name)
    if ok then
      try_cdef [[
        char *readline(const char *prompt);
        void add_history(const char *line);
        int read_history(const char *filename);
        int write_history(const char *filename);
        int history_truncate_file(const char *filename, int nlines);
        int append_history(int nelements, const char *filename);
        void rl_replace_line(const char *text, int clear_undo);
        typedef int rl_getc_func_t(void *);
        extern rl_getc_func_t *rl_getc_function;
        extern int rl_catch_signals;
      ]]
      try_cdef [[
        typedef char **rl_completion_func_t(const char *, int, int);
        extern rl_completion_func_t *rl_attempted_completion_function;
        extern const char *rl_basic_word_break_characters;
        extern int rl_completion_append_character;
      ]]
      local fine = pcall(function() return lib.readline, lib.add_history, lib.write_history end)
      if fine then
        -- LuaJIT unloads ffi.load'ed libraries when the Lua state closes; readline's
        -- never-freed buffers would then be reported by LeakSanitizer from an unnamed
        -- module, beyond the reach of tests/lsan.supp. RTLD_NODELETE keeps it mapped.
        pcall(function()
          try_cdef 'void *dlopen(const char *file, int mode);'
          ffi.C.dlopen(name:find('%.so') and name or 'libreadline.so.8', 0x00001 + 0x01000)  -- RTLD_LAZY | RTLD_NODELETE
        end)
        return lib
      end
    end
  end
  return nil
end

local function history_path()
  local p = os.getenv('EFLA_HISTORY')
  if p and p ~= '' then return p end
  local home = os.getenv('HOME')
  if home and home ~= '' then return home .. '/.efla_history' end
  return nil
end

-- ---- tab completion --------------------------------------------------------------------------------
local lua_keywords = { 'and', 'break', 'do', 'else', 'elseif', 'end', 'false', 'for', 'function', 'goto',
  'if', 'in', 'local', 'nil', 'not', 'or', 'repeat', 'return', 'then', 'true', 'until', 'while' }

-- The names a table (or a tensor) offers after "." or ":".
local function fields_of(obj, sep)
  local names, seen = {}, {}
  local function add(k) if type(k) == 'string' and not seen[k] then seen[k] = true; names[#names + 1] = k end end
  local efla = package.loaded.efla
  if efla and efla.is_tensor(obj) then
    for k in pairs(efla.Tensor) do add(k) end
    if sep == '.' then for k in pairs(efla.internal.getters) do add(k) end end
    return names
  end
  local depth = 0
  while type(obj) == 'table' and depth < 4 do
    for k in pairs(obj) do add(k) end
    local mt = getmetatable(obj)
    obj = mt and type(mt.__index) == 'table' and mt.__index or nil
    depth = depth + 1
  end
  if sep == '.' and efla and depth > 0 then
    -- efla's lazily loaded submodules
    for _, m in ipairs({ 'nn', 'optim', 'data', 'checkpoint' }) do add(m) end
  end
  return names
end

-- Completions of the word under the cursor ("efla.ran", "x:si", "pri").
function R.complete(text, env)
  local base, sep, partial = text:match('^(.-)([%.:])([%w_]*)$')
  local out = {}
  local function offer(names, prefix)
    table.sort(names)
    for _, n in ipairs(names) do
      if n:sub(1, #partial) == partial and n:match('^[%a_][%w_]*$') then out[#out + 1] = prefix .. n end
    end
  end
  if base and base ~= '' and base:match('^[%a_][%w_%.]*$') then
    local obj = env
    for part in base:gmatch('[^%.]+') do
      local ok, v = pcall(function() return obj[part] end)
      if not ok or v == nil then return out end
      obj = v
    end
    offer(fields_of(obj, sep), base .. sep)
  elseif not base then
    partial = text
    local names = fields_of(env, '.')
    for _, k in ipairs(lua_keywords) do names[#names + 1] = k end
    offer(names, '')
  end
  return out
end

local completion_state  -- anchors the callbacks and the word-break string
local function install_completion(rl, env)
  local ok = pcall(function()
    local attempt = ffi.cast('rl_completion_func_t *', function(text, _, _)
      rl.rl_completion_append_character = 0
      local ok2, list = pcall(R.complete, ffi.string(text), env)
      local matches = {}
      if ok2 then
        for i = 1, math.min(#list, 500) do matches[i] = list[i] end
      end
      -- readline wants {replacement, match1, match2, ..., NULL} (just {match, NULL} for one),
      -- malloc'd: it frees them
      if #matches == 0 then return nil end
      local common = matches[1]
      for i = 2, #matches do
        local m = matches[i]
        local n = 0
        while n < #common and common:sub(n + 1, n + 1) == m:sub(n + 1, n + 1) do n = n + 1 end
        common = common:sub(1, n)
      end
      if #matches > 1 then table.insert(matches, 1, common) end
      local arr = ffi.C.malloc((#matches + 1) * ffi.sizeof('char *'))
      arr = ffi.cast('char **', arr)
      for i = 1, #matches do arr[i - 1] = ffi.C.strdup(matches[i]) end
      arr[#matches] = nil
      return arr
    end)
    local breaks = ffi.new('char[?]', 32, ' \t\n"\'><=;|&{(,+-*/^~[]')
    rl.rl_basic_word_break_characters = breaks
    rl.rl_attempted_completion_function = attempt
    completion_state = { attempt, breaks }
  end)
  return ok
end

local EINTR = 4
local launcher = rawget(_G, '_EFLA_LAUNCHER')  -- the efla command's Ctrl-C controls; nil under plain luajit

-- readline's getc: one byte from stdin; a Ctrl-C (a read interrupted while the launcher
-- has seen SIGINT) clears the line and reports end of input, which the reader turns into
-- "interrupted" rather than "quit".
local getc_state
local function install_getc(rl, reader)
  local ok = pcall(function()
    local byte = ffi.new('unsigned char[1]')
    local getc = ffi.cast('rl_getc_func_t *', function(_)
      while true do
        local n = ffi.C.read(0, byte, 1)
        if n == 1 then return byte[0] end
        if n == 0 then return -1 end
        if ffi.errno() ~= EINTR then return -1 end
        if launcher and launcher.take_interrupt() then
          rl.rl_replace_line('', 0)
          reader.interrupted = true
          return -1
        end
      end
    end)
    rl.rl_catch_signals = 0   -- SIGINT goes to the launcher's handler, not readline's
    rl.rl_getc_function = getc
    getc_state = { getc, byte }
  end)
  return ok
end

local function readline_reader(rl, env)
  local path = history_path()
  if path then
    local f = io.open(path, 'a')   -- append_history needs the file to exist
    if f then f:close() end
    rl.read_history(path)
    rl.history_truncate_file(path, 2000)
  end
  install_completion(rl, env)
  local reader = { can_interrupt = launcher ~= nil }
  if launcher and not install_getc(rl, reader) then reader.can_interrupt = false end
  -- jit.off: readline is a C call that can take a while and must not sit inside a trace
  local function read(prompt)
    reader.interrupted = false
    local p = rl.readline(prompt)
    if p == nil then return nil end
    local s = ffi.string(p)
    ffi.C.free(p)
    return s
  end
  jit.off(read)
  reader.read = read
  function reader.add_history(line)
    if line:match('%S') then
      rl.add_history(line)
      if path then rl.append_history(1, path) end
    end
  end
  function reader.close()
    if path then rl.history_truncate_file(path, 2000) end
  end
  return reader
end

local function plain_reader(show_prompt)
  return {
    read = function(prompt)
      if show_prompt then io.write(prompt); io.flush() end
      return io.read('*l')
    end,
    add_history = function() end,
    close = function() end,
  }
end

-- ---- showing values ------------------------------------------------------------------------------
local efla_mod

local function show(v, depth, seen)
  depth = depth or 0
  if efla_mod and efla_mod.is_tensor(v) then return tostring(v) end
  local tv = type(v)
  if tv == 'string' then return depth == 0 and v or string.format('%q', v) end
  if tv ~= 'table' then return tostring(v) end
  local mt = getmetatable(v)
  if mt and mt.__tostring then return tostring(v) end
  seen = seen or {}
  if seen[v] or depth >= 2 then return tostring(v) end
  seen[v] = true
  local parts, n = {}, 0
  local len = #v
  for i = 1, len do
    n = n + 1
    if n > 20 then parts[#parts + 1] = '...'; break end
    parts[#parts + 1] = show(v[i], depth + 1, seen)
  end
  if n <= 20 then
    local keys = {}
    for k in pairs(v) do
      if not (type(k) == 'number' and k >= 1 and k <= len and k % 1 == 0) then keys[#keys + 1] = k end
    end
    table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    for _, k in ipairs(keys) do
      n = n + 1
      if n > 20 then parts[#parts + 1] = '...'; break end
      local ks = (type(k) == 'string' and k:match('^[%a_][%w_]*$')) and k or ('[' .. show(k, depth + 1, seen) .. ']')
      parts[#parts + 1] = ks .. ' = ' .. show(v[k], depth + 1, seen)
    end
  end
  local s = '{' .. table.concat(parts, ', ') .. '}'
  if #s > 200 then s = s:sub(1, 197) .. '...' end
  return s
end
R.show = show

-- Values on one line, tab-separated (as lua does), unless one of them spans lines.
local function print_results(res, n)
  local parts, multiline = {}, false
  for i = 1, n do
    local ok, s = pcall(show, res[i])
    parts[i] = ok and s or ('(cannot print: ' .. tostring(s) .. ')')
    if parts[i]:find('\n') then multiline = true end
  end
  if n > 0 then print(table.concat(parts, multiline and '\n' or '\t')) end
end

local function pack(...) return { n = select('#', ...), ... } end

-- Incomplete input: more lines can complete it (not an unfinished one-line string).
local function incomplete(err)
  return err:sub(-7) == "'<eof>'" and not err:find('unfinished string', 1, true)
end

--- repl.run([opts]): reads and runs entries until exit/EOF. opts.env: the globals table
--- (default _G). Returns 0.
function R.run(opts)
  opts = opts or {}
  local env = opts.env or _G
  efla_mod = require 'efla'
  local tty = stdin_is_tty()
  local rl = tty and load_readline() or nil
  local reader = rl and readline_reader(rl, env) or plain_reader(tty)
  -- Ctrl-C handling only where readline reads the terminal (see the top of this file)
  local interrupt_mode = function() end
  if reader.can_interrupt then interrupt_mode = launcher.interrupt_mode end
  local quit = false
  -- REPL conveniences in the global table: help, exit
  if env.help == nil then env.help = efla_mod.help end
  env.exit = function() quit = true end
  env.quit = env.exit
  if tty then
    print(string.format('efla %s (%s). help() for help, Ctrl-C stops a running entry, exit or Ctrl-D quits.',
      efla_mod.version(), jit.version))
  end
  local buffer
  while not quit do
    interrupt_mode('prompt')
    local line = reader.read(buffer and '>> ' or 'efla> ')
    if line == nil and reader.interrupted then
      io.write('\n')   -- Ctrl-C at the prompt: drop the line (and any unfinished entry)
      buffer = nil
      goto continue
    end
    if line == nil then
      if tty then io.write('\n') end
      break
    end
    reader.add_history(line)
    local trimmed = line:match('^%s*(.-)%s*$')
    if not buffer and (trimmed == 'exit' or trimmed == 'quit') then break end
    if not buffer and trimmed == '' then goto continue end
    do
      local chunk = buffer and (buffer .. '\n' .. line) or line
      local code = chunk:gsub('^%s*=', 'return ')  -- Lua 5.1's "=expr"
      local f, err = load('return ' .. code, '=stdin', 't', env)
      if not f then f, err = load(code, '=stdin', 't', env) end
      if not f then
        if incomplete(err) then
          buffer = chunk
        else
          buffer = nil
          io.stderr:write(err, '\n')
        end
      else
        buffer = nil
        if reader.can_interrupt then jit.off(f, true) end  -- hooks never fire inside compiled loops
        interrupt_mode('run')
        local res = pack(xpcall(f, function(e) return e end))
        interrupt_mode('prompt')
        if launcher then launcher.take_interrupt() end   -- a Ctrl-C that came as it ended
        if res[1] then
          print_results({ unpack(res, 2, res.n) }, res.n - 1)
        else
          io.stderr:write('error: ', tostring(res[2]), '\n')
        end
      end
      io.stdout:flush()
      io.stderr:flush()
    end
    ::continue::
  end
  interrupt_mode('default')
  reader.close()
  return 0
end

return R

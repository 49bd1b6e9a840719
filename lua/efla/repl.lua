-- efla/repl.lua: the interactive prompt of the `efla` command.
--
-- Each entry is tried first as an expression ("return <entry>", whose values are
-- printed: tensors Torch-style, tables briefly), then as a statement. An entry that ends
-- early (Lua's "... near '<eof>'") continues on the next line with the ">> " prompt. An
-- error prints its message and the session goes on. `exit`, exit() or Ctrl-D quits.
--
-- Ctrl-C while an entry runs stops it with "interrupted!" and keeps the session (the
-- launcher's SIGINT handler sets a count hook; entries run with the JIT off, because
-- compiled loops never look at hooks); Ctrl-C at the prompt clears the line and any
-- unfinished entry. A second Ctrl-C while the first is still waiting for Lua code (stuck
-- in one C call) ends efla.
--
-- Line editing, tab completion (globals, fields after "." and methods after ":") and
-- the history come from Debian's lua-readline module ('readline'), driven through its
-- callback interface: the prompt waits in poll() (luaposix) and feeds readline one key at
-- a time, so a Ctrl-C, which interrupts poll(), can end the line being read. readline
-- calls back into Lua through the Lua C API (no FFI callbacks, so nothing for the JIT to
-- trip on). The history file ($EFLA_HISTORY, else ~/.efla_history) is kept here, not by
-- the module: each line is appended as soon as it is entered (a killed session keeps it)
-- and the file is cut to its last 2000 lines at start. Without the module (or luaposix),
-- a one-line notice says so and lines come from io.read. When stdin is not a terminal (a
-- pipe, a test), lines come from io.read, no prompts are printed and Ctrl-C keeps its
-- default action.
local repl = {}

local HISTORY_LINES = 2000

local launcher = rawget(_G, '_EFLA_LAUNCHER')  -- the efla command's Ctrl-C controls; nil under plain luajit

local function stdin_is_tty()
  local ok, unistd = pcall(require, 'posix.unistd')
  if ok then return unistd.isatty(0) == 1 end
  -- without luaposix: ask the shell's test (no FFI declarations needed)
  local r = os.execute('test -t 0')
  return r == 0 or r == true
end

local function history_path()
  local p = os.getenv('EFLA_HISTORY')
  if p and p ~= '' then return p end
  local home = os.getenv('HOME')
  if home and home ~= '' then return home .. '/.efla_history' end
  return nil
end

--- repl.load_history(path, keep) -> the last `keep` lines of the history file; a longer
--- file is cut to them (through a temporary file and a rename, so a crash never leaves it
--- half written). A missing file gives {}.
local function load_history(path, keep)
  local f = io.open(path, 'r')
  if not f then return {} end
  local lines = {}
  for l in f:lines() do lines[#lines + 1] = l end
  f:close()
  if #lines <= keep then return lines end
  local kept = {}
  for i = #lines - keep + 1, #lines do kept[#kept + 1] = lines[i] end
  local tmp = path .. '.tmp'
  local out = io.open(tmp, 'w')
  if out and out:write(table.concat(kept, '\n'), '\n') and out:close() then
    os.rename(tmp, path)
  else
    os.remove(tmp)
  end
  return kept
end

repl.load_history = load_history

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
    if sep == '.' then for _, k in ipairs(require('efla.tensor').property_names()) do add(k) end end
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

--- repl.complete(text, env) -> sorted completions of the word text ("efla.ran", "x:si",
--- "pri"): fields of env's tables and tensors, globals and Lua keywords.
function repl.complete(text, env)
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

--- repl.complete_line(line, from, to, env) -> the completions of line:sub(from, to), the
--- word readline wants completed: the Lua name path that ends at `to` is completed, and
--- whatever of readline's word comes before it ("(", "+"...) is kept in front.
function repl.complete_line(line, from, to, env)
  local upto = line:sub(1, to)
  local start = upto:find('[%a_][%w_%.:]*$')
  if not start or start < from then start = to + 1 end
  local keep = line:sub(from, start - 1)
  local out = {}
  for i, c in ipairs(repl.complete(line:sub(start, to), env)) do
    if i > 500 then break end
    out[#out + 1] = keep .. c
  end
  return out
end

-- ---- readers ----------------------------------------------------------------------------------
-- Each reader: read(prompt) -> line, or nil and 'eof' / 'interrupted'; add_history(line); close().

local function plain_reader(show_prompt)
  return {
    read = function(prompt)
      if show_prompt then io.write(prompt); io.flush() end
      local line = io.read('*l')
      if line == nil then return nil, 'eof' end
      return line
    end,
    add_history = function() end,
    close = function() end,
  }
end

-- LuaJIT unloads C modules when the Lua state closes; readline's never-freed buffers would
-- then be reported by LeakSanitizer from an unnamed module, beyond the reach of
-- tests/lsan.supp. Opening the module once more with RTLD_NODELETE keeps it mapped.
local function keep_mapped(modname)
  local path = package.searchpath(modname, package.cpath)
  if not path then return end
  pcall(function()
    local ffi = require 'ffi'
    pcall(ffi.cdef, 'void *dlopen(const char *file, int mode);')
    ffi.C.dlopen(path, 0x00001 + 0x01000)   -- RTLD_LAZY | RTLD_NODELETE
  end)
end

-- lua-readline and luaposix's poll, or nil and why not.
local function load_modules()
  local ok, rl = pcall(require, 'readline')
  if not ok or type(rl) ~= 'table' or not rl.handler_install then
    return nil, 'the lua-readline module is not installed (apt-get install lua-readline)'
  end
  keep_mapped('C-readline')
  local ok_poll, poll = pcall(require, 'posix.poll')
  local ok_errno, errno = pcall(require, 'posix.errno')
  if not ok_poll or not ok_errno then
    return nil, 'luaposix is not installed (apt-get install lua-posix)'
  end
  return { rl = rl, poll = poll, EINTR = errno.EINTR }
end

local function readline_reader(m, env)
  local rl = m.rl
  -- history: ours (see the top of this file), so the module reads and writes no file
  rl.set_options({ histfile = '', auto_add = false, completion = true })
  local path = history_path()
  if path then
    for _, l in ipairs(load_history(path, HISTORY_LINES)) do rl.add_history(l) end
  end
  pcall(rl.set_readline_name, 'efla')   -- for $if efla in ~/.inputrc
  rl.set_complete_function(function(line, from, to)
    pcall(rl.set_completion_append_character, '')   -- "efla.tensor" then "(" or ":", not a space
    local ok, list = pcall(repl.complete_line, line, from, to, env)
    return ok and list or {}
  end)

  local reader = { can_interrupt = launcher ~= nil }
  function reader.read(prompt)
    local line, done = nil, false
    rl.handler_install(prompt, function(s)
      line, done = s, true
      rl.handler_remove()
    end)
    while not done do
      local ready, _, err = m.poll.rpoll(0, -1)
      if ready == nil and err ~= m.EINTR then
        rl.handler_remove()
        return nil, 'eof'
      end
      if ready == nil then
        if launcher and launcher.take_interrupt() then
          -- Ctrl-C: drop the line; the next handler_install starts an empty one
          if rl.sigcleanup then rl.sigcleanup() end
          rl.handler_remove()
          return nil, 'interrupted'
        end
      elseif ready > 0 then
        rl.read_char()
        -- a Ctrl-C that came while readline itself was reading (readline passes it on)
        if not done and launcher and launcher.take_interrupt() then
          if rl.sigcleanup then rl.sigcleanup() end
          rl.handler_remove()
          return nil, 'interrupted'
        end
      end
    end
    if line == nil then return nil, 'eof' end
    return line
  end
  function reader.add_history(line)
    if not line:match('%S') then return end
    rl.add_history(line)
    if path then
      local f = io.open(path, 'a')
      if f then f:write(line, '\n'); f:close() end
    end
  end
  function reader.close() end
  return reader
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
repl.show = show

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
function repl.run(opts)
  opts = opts or {}
  local env = opts.env or _G
  efla_mod = require 'efla'
  local tty = stdin_is_tty()
  local reader
  if tty then
    local modules, why = load_modules()
    if modules then
      reader = readline_reader(modules, env)
    else
      io.stderr:write('efla: no line editing: ', why, '\n')
      reader = plain_reader(true)
    end
  else
    reader = plain_reader(false)
  end
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
    local line, why = reader.read(buffer and '>> ' or 'efla> ')
    if line == nil and why == 'interrupted' then
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

return repl

-- test_repl.lua: the interactive prompt at a real (pseudo-)terminal: Ctrl-C during a
-- running entry and at the prompt, history written line by line, tab completion,
-- multi-line entries, Ctrl-D; and the plain fallback without lua-readline. The keyboard
-- is played by tests/lua/repl_pty.py (python3's pty module).
-- Run: build/efla tests/lua/test_repl.lua
local t = dofile((arg[0]:match('^(.*[/\\])') or './') .. 'testlib.lua')
local test, ok = t.test, t.ok

local here = arg[0]:match('^(.*[/\\])') or './'
local exe = require('efla.cli').executable()
local tmp = (os.getenv('EFLA_TEST_TMP') or '/tmp') .. '/lua_test_repl'
os.execute("mkdir -p '" .. tmp .. "'")

local python = t.python

-- the line-editing session needs what the REPL needs for it (a bundle may lack them)
local has_readline = pcall(require, 'readline') and pcall(require, 'posix.poll')

test('Ctrl-C, history and Ctrl-D through a pty', function()
  if not has_readline then
    t.skip('readline session', 'lua-readline or luaposix is not installed (the plain fallback is tested below)')
    return
  end
  local py = python()
  ok(py, 'python3 is needed to drive the REPL through a pty (scripts/install-deps.sh installs it)')
  local hist = tmp .. '/history'
  os.remove(hist)
  local out = tmp .. '/pty.txt'
  local cmd = string.format("timeout 60 %s %srepl_pty.py '%s' '%s' > '%s' 2>&1", py, here, exe, hist, out)
  local r1, _, r3 = os.execute(cmd)
  local f = io.open(out)
  local text = f and f:read('*a') or ''
  if f then f:close() end
  io.write(text)
  ok(r1 == 0 or r1 == true and (r3 == nil or r3 == 0), 'the pty session failed:\n' .. text)
  ok(text:find('ok Ctrl%-D quits with status 0'), 'the session did not reach its end:\n' .. text)
end)

test('without lua-readline: a one-line notice, then plain lines', function()
  local py = python()
  ok(py, 'python3 is needed to drive the REPL through a pty (scripts/install-deps.sh installs it)')
  local out = tmp .. '/pty_plain.txt'
  local cmd = string.format("timeout 60 %s %srepl_pty.py '%s' '%s' plain > '%s' 2>&1", py, here, exe,
    tmp .. '/history_plain', out)
  local r1, _, r3 = os.execute(cmd)
  local f = io.open(out)
  local text = f and f:read('*a') or ''
  if f then f:close() end
  io.write(text)
  ok(r1 == 0 or r1 == true and (r3 == nil or r3 == 0), 'the pty session failed:\n' .. text)
  ok(text:find('ok Ctrl%-D quits with status 0'), 'the session did not reach its end:\n' .. text)
end)

test('the history file is cut to its last lines at start', function()
  local repl = require 'efla.repl'
  local path = tmp .. '/long_history'
  local f = assert(io.open(path, 'w'))
  for i = 1, 30 do f:write('line ', i, '\n') end
  f:close()
  local kept = repl.load_history(path, 20)
  t.eq(#kept, 20)
  t.eq(kept[1], 'line 11')
  t.eq(kept[20], 'line 30')
  local again = repl.load_history(path, 20)   -- the file itself now holds those 20
  t.eq(again, kept)
  local g = io.open(path)
  local n = 0
  for _ in g:lines() do n = n + 1 end
  g:close()
  t.eq(n, 20)
  t.eq(repl.load_history(tmp .. '/no_such_history', 20), {})
end)

t.done()

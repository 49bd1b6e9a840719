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

local function python()
  for _, p in ipairs({ '/usr/bin/python3', '/usr/local/bin/python3' }) do
    local f = io.open(p, 'r')
    if f then f:close(); return p end
  end
end

test('Ctrl-C, history and Ctrl-D through a pty', function()
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

t.done()

-- test_cli.lua: the `efla` command, run as a separate process.
-- Run: build/efla tests/lua/test_cli.lua [name-pattern]
local efla = require 'efla'
local t = dofile((arg[0]:match('^(.*[/\\])') or './') .. 'testlib.lua')
local test, eq, ok = t.test, t.eq, t.ok

local exe = require('efla.cli').executable()
local tmp = os.getenv('EFLA_TEST_TMP') or '/tmp'
tmp = tmp .. '/lua_test_cli'
os.execute("mkdir -p '" .. tmp .. "'")

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function write(path, text)
  local f = assert(io.open(path, 'w'))
  f:write(text)
  f:close()
  return path
end
local function read(path)
  local f = io.open(path, 'r')
  if not f then return '' end
  local s = f:read('*a')
  f:close()
  return s
end

-- run(args_string [, stdin_text]) -> stdout, stderr, exit status
local function run(args, input)
  local errf = tmp .. '/stderr.txt'
  local cmd = 'EFLA_HISTORY=' .. q(tmp .. '/history') .. ' ' .. q(exe) .. ' ' .. args
  if input then cmd = cmd .. ' < ' .. q(write(tmp .. '/stdin.txt', input)) else cmd = cmd .. ' < /dev/null' end
  local p = io.popen(cmd .. ' 2> ' .. q(errf) .. '; echo "__rc=$?"')
  local out = p:read('*a')
  p:close()
  local rc = tonumber(out:match('__rc=(%d+)%s*$'))
  out = out:gsub('__rc=%d+%s*$', '')
  return out, read(errf), rc
end

test('--version', function()
  local out, err, rc = run('--version')
  eq(rc, 0)
  ok(out:match('^efla %d+%.%d+%.%d+'), out)
  ok(out:find(efla.version(), 1, true), out)
  ok(out:find('LuaJIT', 1, true), out)
  local out2 = run('-v')
  eq(out2, out)
end)

test('--help: usage, options, examples, environment', function()
  local out, err, rc = run('--help')
  eq(rc, 0)
  for _, want in ipairs({ 'usage: efla', '-e CODE', '-i', '--version', 'Examples:', 'Environment:', 'EFLA_HISTORY' }) do
    ok(out:find(want, 1, true), 'help mentions ' .. want)
  end
  eq(run('-h'), out)
end)

test('-e runs code with efla preloaded', function()
  local out, err, rc = run("-e 'print(efla.ones(2, 2):sum():item())'")
  eq(rc, 0, err)
  eq(out, '4\n')
  out = run("-e 'x = 1' -e 'print(x + 1, require(\"efla\") == efla)'")
  eq(out, '2\ttrue\n')
end)

test('a script with arguments sees arg and ...', function()
  local script = write(tmp .. '/args.lua', [[
print(arg[0], arg[1], arg[2], #arg, select('#', ...), ...)
print(type(efla), efla == require('efla'), efla.tensor({1, 2}):sum():item())
]])
  local out, err, rc = run(q(script) .. ' first "second arg"')
  eq(rc, 0, err)
  local lines = {}
  for l in out:gmatch('[^\n]+') do lines[#lines + 1] = l end
  eq(lines[1], script .. '\tfirst\tsecond arg\t2\t2\tfirst\tsecond arg')
  eq(lines[2], 'table\ttrue\t3')
  -- options before the script are at negative indices, as in lua
  out = run("-e 'y = 5' " .. q(write(tmp .. '/neg.lua', 'print(arg[-1], arg[-2], y)')))
  eq(out, "y = 5\t-e\t5\n")
  -- "--" ends the options; "-" reads the script from stdin
  out = run('-- ' .. q(script) .. ' -x')
  ok(out:find('\t-x\t', 1, true), out)
  out = run('- a b', 'print("from stdin", ...)')
  eq(out, 'from stdin\ta\tb\n')
end)

test('error exit codes and messages', function()
  local bad = write(tmp .. '/bad.lua', 'local function f()\n  error("kaput")\nend\nf()\n')
  local out, err, rc = run(q(bad))
  eq(rc, 1)
  ok(err:find('efla: ', 1, true) and err:find('bad.lua:2: kaput', 1, true), err)
  ok(err:find('stack traceback', 1, true), 'a traceback: ' .. err)
  -- a library error shows the user's line and the C message
  local lib_err = write(tmp .. '/liberr.lua', 'local a = efla.ones(2, 3)\nlocal b = a + efla.ones(4)\n')
  out, err, rc = run(q(lib_err))
  eq(rc, 1)
  ok(err:find('liberr.lua:2:', 1, true) and err:find('[2,3]', 1, true) and err:find('[4]', 1, true), err)
  -- syntax error, missing file
  out, err, rc = run(q(write(tmp .. '/syntax.lua', 'x = = 1')))
  eq(rc, 1)
  ok(err:find('syntax.lua:1:', 1, true), err)
  out, err, rc = run(q(tmp .. '/does_not_exist.lua'))
  eq(rc, 1)
  ok(err:find('does_not_exist.lua', 1, true), err)
  -- -e errors, os.exit
  out, err, rc = run("-e 'error(\"in -e\")'")
  eq(rc, 1)
  ok(err:find('in -e', 1, true), err)
  out, err, rc = run("-e 'os.exit(3)'")
  eq(rc, 3)
  -- bad command lines: message, usage, status 2
  out, err, rc = run('--frobnicate')
  eq(rc, 2)
  ok(err:find("unknown option '--frobnicate'", 1, true) and err:find('usage: efla', 1, true), err)
  out, err, rc = run('-e')
  eq(rc, 2)
  ok(err:find("'-e' needs an argument", 1, true), err)
end)

test('the REPL through a pipe: values printed, errors survived, multi-line input', function()
  local input = table.concat({
    'x = efla.ones(2, 3)',
    'x + 1',
    '1 + 1, "two"',
    'error("boom")',
    'x:matmul(efla.ones(4))',
    'for i = 1, 2 do',
    '  print("loop", i)',
    'end',
    'local s = 0 for i = 1, 4 do s = s + i end return s',
    'x:sum()',
    'efla.nope.field',
    'help()',
    'print("still here")',
    'exit',
    'print("after exit")',
  }, '\n') .. '\n'
  local out, err, rc = run('', input)
  eq(rc, 0, err)
  ok(out:find(' 2  2  2\n 2  2  2\n[efla float32 tensor of size 2x3 (cpu)]', 1, true), out)
  ok(out:find('2\ttwo\n', 1, true), out)
  ok(out:find('loop\t1\nloop\t2\n', 1, true), 'multi-line for loop: ' .. out)
  ok(out:find('\n10\n', 1, true), out)
  ok(out:find('6\n[efla float32 scalar (cpu)]', 1, true), out)
  ok(out:find('Creation', 1, true), 'help() overview printed')
  ok(out:find('still here', 1, true), 'the session survived the errors')
  ok(not out:find('after exit', 1, true), 'exit quits')
  ok(err:find('boom', 1, true), err)
  ok(err:find('matmul: [2,3] @ [4]', 1, true), err)
  ok(err:find("attempt to index field 'nope'", 1, true), err)
  -- Ctrl-D (end of input) quits with status 0 too
  out, err, rc = run('', '1 + 2\n')
  eq(rc, 0)
  eq(out, '3\n')
end)

test('-i runs the script, then the REPL sees its globals', function()
  local s = write(tmp .. '/model.lua', 'w = efla.full({2}, 3)\n')
  local out, err, rc = run('-i ' .. q(s), 'w:sum():item()\n')
  eq(rc, 0, err)
  eq(out, '6\n')
end)

test('the REPL on a terminal: readline and the history file', function()
  if not (pcall(require, 'readline') and pcall(require, 'posix.poll')) then
    t.skip('readline', 'lua-readline or luaposix is not installed')
    return
  end
  local has_script = os.execute('command -v script > /dev/null 2>&1')
  if has_script ~= 0 and has_script ~= true then
    t.skip('readline', 'no `script` command to make a terminal')
    return
  end
  local hist = tmp .. '/history'
  os.remove(hist)
  local input = write(tmp .. '/tty_in.txt', '21 * 2\nefla.linsp\t(0, 1, 3)\nexit\n')
  local cmd = 'EFLA_HISTORY=' .. q(hist) .. ' script -qec ' .. q(q(exe)) .. ' /dev/null < ' .. q(input)
  local p = io.popen(cmd .. ' 2>&1')
  local out = p:read('*a')
  p:close()
  ok(out:find('42', 1, true), out)
  ok(out:find('efla>', 1, true), 'the prompt is shown on a terminal: ' .. out)
  ok(out:find('0.5000', 1, true), 'tab completed efla.linsp to efla.linspace: ' .. out)
  local h = read(hist)
  ok(h:find('21 * 2', 1, true), 'the history file holds the line: ' .. h)
end)

test('plain luajit loads efla through EFLA_LIB', function()
  local has = os.execute('command -v luajit > /dev/null 2>&1')
  if has ~= 0 and has ~= true then t.skip('plain luajit', 'no luajit on PATH'); return end
  if os.getenv('ASAN_OPTIONS') then
    -- an ASan-built libefla cannot be loaded into an uninstrumented luajit
    t.skip('plain luajit', 'AddressSanitizer build'); return
  end
  local build = exe:match('^(.*)/[^/]*$')
  local src = package.searchpath('efla.tensor', package.path):match('^(.*)/efla/tensor%.lua$')
  local lib = build .. '/libefla.so'
  if not io.open(lib) then t.skip('plain luajit', 'no ' .. lib); return end
  local path = build .. '/lua/?.lua;' .. src .. '/?.lua;' .. src .. '/?/init.lua;;'
  local cmd = 'EFLA_LIB=' .. q(lib) .. ' LUA_PATH=' .. q(path) ..
    [[ luajit -e "local efla = require 'efla'; print(efla.ones(2):sum():item(), efla.version(), rawget(_G, 'efla'))" 2>&1]]
  local p = io.popen(cmd)
  local out = p:read('*a')
  p:close()
  eq(out, '2\t' .. efla.version() .. '\tnil\n', 'require works and sets no global')
end)

test('REPL completion candidates', function()
  local repl = require 'efla.repl'
  eq(repl.complete('efla.linsp', _G), { 'efla.linspace' })
  eq(repl.complete('x:nu', { x = efla.ones(2) }), { 'x:numel' })
  local g = repl.complete('x.gr', { x = efla.ones(2) })
  ok(#g >= 2 and g[1] == 'x.grad', t.show(g))
  eq(repl.complete('pri', { print = print }), { 'print' })
  eq(repl.complete('nothing.he', {}), {})
  eq(repl.complete('retu', {}), { 'return' })
end)

t.done()

-- test_args.lua: efla.args, the recipes' option parser: errors per call (an exit = false
-- parse leaves later parses exiting as the default says) and "did you mean" ordered by
-- closeness. Run: build/efla tests/lua/test_args.lua [name-pattern]
local args = require 'efla.args'
local t = dofile((arg[0]:match('^(.*[/\\])') or './') .. 'testlib.lua')
local test, eq, ok = t.test, t.eq, t.ok

local exe = require('efla.cli').executable()
local tmp = (os.getenv('EFLA_TEST_TMP') or '/tmp') .. '/lua_test_args'
os.execute("mkdir -p '" .. tmp .. "'")

local function spec(extra)
  local s = { name = 'demo.lua',
    { '--method', default = 'efla', choices = { 'efla', 'deltanet' } },
    { '--lr', type = 'number', above = 0 },
    { '--lr-min', type = 'number' },
    { '--layers', type = 'number', integer = true, default = 2 },
    { '--quiet', type = 'boolean' },
  }
  for k, v in pairs(extra or {}) do s[k] = v end
  return s
end

local function raised(f)
  local good, err = pcall(f)
  return not good and tostring(err) or nil
end

test('exit = false raises the message instead of exiting', function()
  local err = raised(function() args.parse({ '--lr', 'abc' }, spec({ exit = false })) end)
  ok(err and err:find("--lr: expected a number, got 'abc'", 1, true), tostring(err))
  err = raised(function() args.parse({ '--help' }, spec({ exit = false })) end)
  ok(err and err:find('usage: efla demo.lua', 1, true), tostring(err))
end)

test('a default parse after an exit = false parse still exits with status 2 and the usage', function()
  -- in a child process: the default is to print and exit, which would end this test
  local script = tmp .. '/after_exit_false.lua'
  local f = assert(io.open(script, 'w'))
  f:write([[
local args = require 'efla.args'
local s = { name = 'demo.lua', { '--lr', type = 'number' } }
local raised = not pcall(args.parse, { '--lr', 'x' }, { name = 'quiet.lua', exit = false, { '--lr', type = 'number' } })
io.stdout:write('first raised: ', tostring(raised), '\n')
io.stdout:flush()
args.parse({ '--lr', 'x' }, s)
io.stdout:write('still running\n')
]])
  f:close()
  local p = io.popen(string.format("'%s' '%s' 2>'%s/err.txt'; echo rc=$?", exe, script, tmp))
  local out = p:read('*a')
  p:close()
  local ef = io.open(tmp .. '/err.txt')
  local err = ef:read('*a')
  ef:close()
  ok(out:find('first raised: true', 1, true), out)
  ok(not out:find('still running', 1, true), 'the second parse returned instead of exiting: ' .. out)
  ok(out:find('rc=2', 1, true), 'exit status 2 expected: ' .. out)
  ok(err:find("demo.lua: --lr: expected a number, got 'x'", 1, true) and err:find('usage: efla demo.lua', 1, true), err)
  -- and an exit = false parse after that default one raises again
  ok(raised(function() args.parse({ '--nope' }, spec({ exit = false })) end))
end)

test('did you mean: closest first, ties alphabetical, the same every time', function()
  eq(args.suggest('--metod', spec()), { '--method' })
  eq(args.suggest('--lr-mn', spec()), { '--lr-min', '--lr' })
  -- a prefix is offered even when many edits away, after the closer ones
  eq(args.suggest('--la', spec()), { '--lr', '--layers' })
  -- equally close: alphabetical, whatever the order of the spec
  eq(args.suggest('--ac', { { '--ab' }, { '--aa' } }), { '--aa', '--ab' })
  eq(args.suggest('--ac', { { '--aa' }, { '--ab' } }), { '--aa', '--ab' })
  eq(args.suggest('--zzzzzzzz', spec()), {})
  for _ = 1, 5 do eq(args.suggest('--lr-mn', spec()), { '--lr-min', '--lr' }) end
  local err = raised(function() args.parse({ '--metod', 'efla' }, spec({ exit = false })) end)
  eq(err, "unknown option '--metod' (did you mean --method?)")
  err = raised(function() args.parse({ '--lr-mn=1' }, spec({ exit = false })) end)
  eq(err, "unknown option '--lr-mn=1' (did you mean --lr-min, --lr?)")
  err = raised(function() args.parse({ '--xyzzy-plugh' }, spec({ exit = false })) end)
  eq(err, "unknown option '--xyzzy-plugh'")
end)

test('values, defaults, booleans and positionals', function()
  local o = args.parse({ '--lr=0.5', 'pos1', '--quiet', '--layers', '3', 'pos2' }, spec({ exit = false }))
  eq(o.lr, 0.5)
  eq(o.layers, 3)
  eq(o.quiet, true)
  eq(o.method, 'efla')
  eq(o._, { 'pos1', 'pos2' })
  ok(raised(function() args.parse({ '--layers', '2.5' }, spec({ exit = false })) end):find('a whole number', 1, true))
end)

t.done()

-- test_help.lua: help() is generated from the `---` doc comments; every public name of
-- efla has text. Run: build/efla tests/lua/test_help.lua [name-pattern]
local efla = require 'efla'
local t = dofile((arg[0]:match('^(.*[/\\])') or './') .. 'testlib.lua')
local test, eq, ok = t.test, t.eq, t.ok
local H = require 'efla.help'
local docstrings = require 'efla.docstrings'

local tmp = (os.getenv('EFLA_TEST_TMP') or '/tmp') .. '/lua_test_help'
os.execute("mkdir -p '" .. tmp .. "'")

test('every public name has help text', function()
  local missing, n = {}, 0
  for _, e in ipairs(H.public_values()) do
    n = n + 1
    local doc = H.entry_doc(e)
    if not doc or not doc:match('%S') then missing[#missing + 1] = e[1] end
  end
  ok(n > 300, 'the walk found only ' .. n .. ' public names')
  ok(#missing == 0, #missing .. ' public names have no `---` doc comment: ' .. table.concat(missing, ', '))
end)

test('the walk covers the submodules and class methods', function()
  local names = {}
  for _, e in ipairs(H.public_values()) do names[e[1]] = true end
  for _, want in ipairs({ 'efla.ops.delta_rule', 'efla.checkpoint.save', 'efla.nn.DeltaAttention',
    'efla.nn.DeltaAttention:forward', 'efla.optim.AdamW', 'efla.data.DataLoader', 'efla.load_model',
    'efla.nn.build', 'efla.Tensor.matmul', 'efla.randn' }) do
    ok(names[want], want .. ' is missing from help.public_values()')
  end
end)

test('research API help is not empty', function()
  for _, v in ipairs({ efla.ops.delta_rule, efla.checkpoint.save, efla.load_model, efla.nn.build }) do
    local s = H.text(v)
    ok(not s:find('no description', 1, true), 'no description: ' .. s)
    ok(#s > 30, 'too short: ' .. s)
  end
end)

test('a class shows its doc and methods, not internals', function()
  local s = H.text(efla.nn.DeltaAttention)
  ok(s:find('DeltaAttention{d_model', 1, true), s)
  ok(s:find('forward', 1, true), s)
  ok(not s:find('_param_names', 1, true) and not s:find('__index', 1, true), s)
end)

test('the overview names the modules', function()
  local s = H.text()
  for _, m in ipairs({ 'efla.ops', 'efla.nn', 'efla.optim', 'efla.data', 'efla.checkpoint', 'efla.load_model' }) do
    ok(s:find(m, 1, true), m .. ' not in the overview')
  end
end)

test('help by name', function()
  ok(H.text('ops.delta_rule'):find('delta rule', 1, true))
  ok(H.text('efla.nn.Linear'):find('class Linear', 1, true))
  ok(H.text('view'):find('same storage', 1, true))
  ok(H.text('no_such_thing'):find('No help', 1, true))
end)

test('docstrings: --- blocks above a definition, -- continuation lines', function()
  local path = tmp .. '/m.lua'
  local f = assert(io.open(path, 'w'))
  f:write([[
-- m.lua: a test module.
-- Second line.
local M = {}

--- M.a(x) -> x + 1
--- and more.
function M.a(x) return x + 1 end

-- not a doc
function M.b() end

--- M.c(): first line
-- goes on here
M.c = function() end
return M
]])
  f:close()
  local m = dofile(path)
  eq(docstrings.of_function(m.a), 'M.a(x) -> x + 1\nand more.')
  eq(docstrings.of_function(m.b), nil)
  eq(docstrings.of_function(m.c), 'M.c(): first line\ngoes on here')
  eq(docstrings.of_file(path), 'm.lua: a test module.\nSecond line.')
  eq(docstrings.of_function(print), nil)
end)

t.done()

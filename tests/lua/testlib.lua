-- testlib.lua: a tiny test runner for efla's Lua tests.
--
--   local t = dofile('tests/lua/testlib.lua')   -- or require 'testlib' with tests/lua on the path
--   t.test('name', function() t.eq(1 + 1, 2) end)
--   t.done()     -- prints "N passed, N failed"; exits 1 if any failed
--
-- Each test prints "ok   name" or "FAIL name" with the message and the test's line. A test
-- name filter (a Lua pattern) can be given as the first script argument or in
-- $EFLA_TEST_FILTER, so tests are runnable by name: efla tests/lua/test_tensor.lua views
local M = { passed = 0, failed = 0, failures = {} }

local filter = (arg and arg[1]) or os.getenv('EFLA_TEST_FILTER')

local function fail(msg, level)
  error({ testlib_msg = msg }, (level or 1) + 1)
end

local function describe(v)
  if type(v) == 'string' then return string.format('%q', v) end
  return tostring(v)
end

--- t.test(name, fn): runs fn, records the result
function M.test(name, fn)
  if filter and filter ~= '' and not name:find(filter) then return end
  local t0 = os.clock()
  local ok, err = xpcall(fn, function(e)
    local msg = type(e) == 'table' and e.testlib_msg or tostring(e)
    -- the line inside the test file where it went wrong
    local tb = debug.traceback('', 2)
    local where = tb:match('\n%s*([^\n]*tests/lua/test_[^\n]-:%d+):') or tb:match('\n%s*([^\n]-:%d+):')
    return msg .. (where and ('\n      at ' .. where) or '') ..
      (type(e) ~= 'table' and ('\n' .. debug.traceback('', 2):gsub('\n', '\n      ')) or '')
  end)
  local dt = os.clock() - t0
  if ok then
    M.passed = M.passed + 1
    print(string.format('ok   %s (%.2fs)', name, dt))
  else
    M.failed = M.failed + 1
    M.failures[#M.failures + 1] = name
    print(string.format('FAIL %s\n      %s', name, err))
  end
  io.stdout:flush()
end

--- t.ok(cond, msg)
function M.ok(cond, msg)
  if not cond then fail(msg or 'expected a true value', 2) end
end

--- t.eq(a, b, msg): a == b (tables compared deeply)
local function deep_eq(a, b)
  if a == b then return true end
  if type(a) ~= 'table' or type(b) ~= 'table' then return false end
  for k, v in pairs(a) do if not deep_eq(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end
M.deep_eq = deep_eq

local function show(v, depth)
  depth = depth or 0
  if type(v) ~= 'table' or depth > 2 then return describe(v) end
  local parts = {}
  for i = 1, math.min(#v, 12) do parts[i] = show(v[i], depth + 1) end
  if #v > 12 then parts[#parts + 1] = '...' end
  for k, x in pairs(v) do
    if type(k) ~= 'number' then parts[#parts + 1] = tostring(k) .. '=' .. show(x, depth + 1) end
  end
  return '{' .. table.concat(parts, ', ') .. '}'
end
M.show = show

function M.eq(a, b, msg)
  if not deep_eq(a, b) then
    fail(string.format('%sexpected %s, got %s', msg and (msg .. ': ') or '', show(b), show(a)), 2)
  end
end

--- t.near(a, b, tol, msg): numbers or nested tables of numbers within tol (absolute + relative)
local function max_diff(a, b, path)
  if type(a) == 'number' and type(b) == 'number' then
    if a ~= a or b ~= b then return (a ~= a and b ~= b) and 0 or math.huge, path end
    if a == b then return 0, path end
    return math.abs(a - b) / math.max(1, math.abs(b)), path
  end
  if type(a) == 'boolean' and type(b) == 'boolean' then return a == b and 0 or math.huge, path end
  if type(a) ~= 'table' or type(b) ~= 'table' then return math.huge, path end
  if #a ~= #b then return math.huge, path .. ' (lengths ' .. #a .. ' and ' .. #b .. ')' end
  local worst, wpath = 0, path
  for i = 1, #a do
    local d, p = max_diff(a[i], b[i], path .. '[' .. i .. ']')
    if d > worst then worst, wpath = d, p end
  end
  return worst, wpath
end

function M.near(a, b, tol, msg)
  tol = tol or 1e-6
  if type(a) == 'cdata' and a.totable then a = a:totable() end
  if type(b) == 'cdata' and b.totable then b = b:totable() end
  local d, path = max_diff(a, b, '')
  if not (d <= tol) then
    fail(string.format('%svalues differ by %.3g (tolerance %.3g) at %s\n      got      %s\n      expected %s',
      msg and (msg .. ': ') or '', d, tol, path == '' and 'top' or path, show(a), show(b)), 2)
  end
end

--- t.raises(fn, pattern, msg) -> the error message; pattern is plain text to find in it
function M.raises(fn, pattern, msg)
  local ok, err = pcall(fn)
  if ok then fail((msg and (msg .. ': ') or '') .. 'expected an error' ..
      (pattern and (' mentioning "' .. pattern .. '"') or ''), 2) end
  err = tostring(err)
  if pattern and not err:find(pattern, 1, true) then
    fail(string.format('%sthe error does not mention "%s": %s', msg and (msg .. ': ') or '', pattern, err), 2)
  end
  return err
end

--- t.python(): the path of python3 (the Debian one first), or nil where there is none; for the
--- tests that drive a helper script
function M.python()
  for _, p in ipairs({ '/usr/bin/python3', '/usr/local/bin/python3' }) do
    local f = io.open(p, 'r')
    if f then f:close(); return p end
  end
end

--- t.run(cmd): a shell command's output (stdout and stderr together) and its exit status
function M.run(cmd)
  local p = io.popen(cmd .. ' 2>&1; echo "exit=$?"')
  local out = p:read('*a')
  p:close()
  local code = tonumber(out:match('exit=(%d+)%s*$'))
  return (out:gsub('exit=%d+%s*$', '')), code
end

--- t.write_file(path, text): writes text to path (replacing it); returns path
function M.write_file(path, text)
  local f = assert(io.open(path, 'w'))
  f:write(text)
  f:close()
  return path
end

--- t.skip(name, why): records nothing, prints why
function M.skip(name, why) print(string.format('skip %s (%s)', name, why)) end

--- t.done(): the summary line; exit status 1 when something failed
function M.done()
  print(string.format('%d passed, %d failed', M.passed, M.failed))
  if M.failed > 0 then
    print('failed: ' .. table.concat(M.failures, ', '))
    io.stdout:flush()
    os.exit(1, true)
  end
end

return M

-- test_csv.lua: efla.csv reads back what it writes (RFC 4180): commas, doubled quotes,
-- newlines and CRLF inside quoted fields, CRLF line ends, empty fields; clear errors for
-- broken quoting. Run: build/efla tests/lua/test_csv.lua [name-pattern]
local csv = require 'efla.csv'
local t = dofile((arg[0]:match('^(.*[/\\])') or './') .. 'testlib.lua')
local test, eq, ok = t.test, t.eq, t.ok

local tmp = (os.getenv('EFLA_TEST_TMP') or '/tmp') .. '/lua_test_csv'
os.execute("mkdir -p '" .. tmp .. "'")

local header = { 'name', 'note, with comma', 'value' }
local nasty = {
  { 'plain', 'x', 1 },
  { 'a,b', 'say "hi"', 2.5 },
  { '"quoted"', '', -3 },
  { 'two\nlines', 'crlf\r\ninside', 0.125 },
  { ',', '"', 1e-7 },
  { '', '""', 42 },
  { ' spaces ', 'trailing,', 7 },
  { 'lone\rcr', 'end"', 8 },
}

test('nasty rows round-trip through a file', function()
  local path = tmp .. '/nasty.csv'
  csv.write(path, header, nasty)
  local h, rows = csv.read(path)
  eq(h, header)
  eq(#rows, #nasty)
  for i, r in ipairs(nasty) do eq(rows[i], r, 'row ' .. i) end
end)

test('format then parse is the identity on strings and numbers', function()
  local rows = csv.parse(csv.format(header, nasty))
  eq(table.remove(rows, 1), header)
  eq(rows, nasty)
  -- the writer quotes exactly the fields that need it
  eq(csv.format({ 'a', 'b' }, { { 'x,y', 'q"q' }, { 'p', 3 } }), 'a,b\n"x,y","q""q"\np,3\n')
end)

test('CRLF line ends, a byte-order mark, no final newline', function()
  local rows = csv.parse('\239\187\191a,b\r\n1,"x\r\ny"\r\n2,z')
  eq(rows, { { 'a', 'b' }, { 1, 'x\r\ny' }, { 2, 'z' } })
  eq(csv.parse(''), {})
  eq(csv.parse('a,,\n'), { { 'a', '', '' } })
  -- a quoted number stays a string, an unquoted one is a number
  eq(csv.parse('"7",7\n'), { { '7', 7 } })
end)

test('broken quoting is an error that says where and what to do', function()
  local function err_of(text)
    local good, e = pcall(csv.parse, text, 'bad.csv')
    ok(not good, 'expected an error for ' .. string.format('%q', text))
    return e
  end
  local e = err_of('a,b\n1,"open\n2,3\n')
  ok(e:find('bad.csv line 2', 1, true) and e:find('never closed', 1, true), e)
  e = err_of('a,b\nx"y,1\n')
  ok(e:find('bad.csv line 2', 1, true) and e:find('double the quote', 1, true), e)
  e = err_of('"a"b,1\n')
  ok(e:find('bad.csv line 1', 1, true) and e:find('text after a closing quote', 1, true), e)
  local good, e2 = pcall(csv.read, tmp .. '/no_such.csv')
  ok(not good and e2:find('cannot open', 1, true) and e2:find('no_such.csv', 1, true), tostring(e2))
end)

t.done()

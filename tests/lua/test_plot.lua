-- test_plot.lua: plot series handling (one colour per method, no duplicate legend
-- entries, literal underscores), the study's progress bars and report titles.
-- Run: build/efla tests/lua/test_plot.lua
local efla = require 'efla'
local t = dofile((arg[0]:match('^(.*[/\\])') or './') .. 'testlib.lua')
local test, eq, ok = t.test, t.eq, t.ok
local plot = require 'efla.plot'
local progress = require 'efla.progress'

local tmp = (os.getenv('EFLA_TEST_TMP') or '/tmp') .. '/lua_test_plot'
os.execute("mkdir -p '" .. tmp .. "'")

test('series: raw and smoothed share a colour, repeats are dropped, clashes numbered', function()
  local s = plot.prepare_series {
    { name = 'EFLA (raw)', x = { 1, 2 }, y = { 1, 2 } }, { name = 'EFLA (smoothed)', x = { 1, 2 }, y = { 1, 1.5 } },
    { name = 'DeltaNet', x = { 1, 2 }, y = { 3, 4 } }, { name = 'DeltaNet', x = { 1, 2 }, y = { 3, 4 } },
    { name = 'DeltaNet', x = { 1, 2 }, y = { 5, 4 } }, { name = 'x', x = { 1 }, y = { 1 }, color = 2 } }
  eq(#s, 5, 'the exact repeat is drawn once')
  eq(s[1].color, s[2].color)
  ok(s[3].color ~= s[1].color, 'two methods, two colours')
  eq(s[4].name, 'DeltaNet (2)')
  eq(s[5].color, plot.color(2))
end)

test('gnuplot script: legends literal (noenhanced), colours set', function()
  local f = io.popen('command -v gnuplot')
  local has = f:read('*l'); f:close()
  if not has then print('  (gnuplot not installed: only the series logic was tested)'); return end
  local path = tmp .. '/p.png'
  -- keep the script: make gnuplot fail after writing it by giving a bad yrange? No: read it
  -- back by wrapping io.open.
  local script
  local real_open = io.open
  io.open = function(p, m)
    local h = real_open(p, m)
    if p:match('%.gp$') and m == 'w' then
      return setmetatable({}, { __index = { write = function(_, ...) script = (script or '') .. table.concat({ ... }); return h:write(...) end,
        close = function() return h:close() end } })
    end
    return h
  end
  local res, err = plot.lines { path = path, title = 'ablate_keynorm', series = { { name = 'key_norm l2', x = { 1, 2 }, y = { 1, 2 } } } }
  io.open = real_open
  ok(res == path, tostring(err))
  ok(script:find('noenhanced', 1, true), script)
  ok(script:find("lc rgb '#", 1, true), script)
  local g = real_open(path, 'rb'); ok(g:read(4) == '\137PNG'); g:close()
end)

test('progress: plain lines when not a terminal, a bar when asked', function()
  local lines = {}
  local out = { write = function(_, ...) lines[#lines + 1] = table.concat({ ... }) end, flush = function() end }
  local bar = progress.new { total = 3, title = 'eval', every = 0, tty = false, out = out }
  for i = 1, 3 do bar:update(i, { { 'acc', '0.5' } }) end
  bar:finish()
  local text = table.concat(lines)
  ok(text:find('eval step 3/3', 1, true), text)
  lines = {}
  bar = progress.new { total = 2, title = 'train', tty = true, out = out }
  bar:update(2)
  bar:finish()
  ok(table.concat(lines):find('\r', 1, true), 'a terminal bar redraws its line')
end)

test('sMNIST robustness evaluation reports progress', function()
  local S = require 'efla.tasks.smnist'
  efla.manual_seed(1)
  local model = efla.nn.SequenceClassifier { seq_len = 16, d_model = 8 }
  local ds = efla.data.Dataset { images = efla.rand(6, 16), labels = efla.randint(1, 11, { 6 }), name = 'tiny' }
  local lines = {}
  local out = { write = function(_, ...) lines[#lines + 1] = table.concat({ ... }) end, flush = function() end }
  local res = S.robustness(model, ds, { kinds = { 'scale' }, tty = true, out = out, title = 'efla eval' })
  eq(#res.scale, #S.GRIDS.scale)
  local text = table.concat(lines)
  ok(text:find(string.format('efla eval [%s] %d/%d', string.rep('#', 24), #S.GRIDS.scale, #S.GRIDS.scale), 1, true), text)
end)

test('the training progress bar shows on a terminal unless --quiet', function()
  -- the bug was `tty = not args.quiet and nil or false`, false whatever args.quiet said
  local S = require 'efla.tasks.smnist'
  local real = progress.is_terminal
  progress.is_terminal = function() return true end
  local on, off = S.progress_tty({ quiet = false }), S.progress_tty({ quiet = true })
  progress.is_terminal = function() return false end
  local piped = S.progress_tty({})
  progress.is_terminal = real
  eq(on, true); eq(off, false); eq(piped, false)
end)

t.done()

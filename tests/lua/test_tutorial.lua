-- test_tutorial.lua: every ```lua block of docs/TUTORIAL.md runs, in order, in one
-- environment (as a reader pasting them into the REPL would), and what the text promises
-- holds. Blocks marked ```lua gpu run only where a CUDA device is present.
-- Run: build/efla tests/lua/test_tutorial.lua
local efla = require 'efla'
local t = dofile((arg[0]:match('^(.*[/\\])') or './') .. 'testlib.lua')
local test, ok = t.test, t.ok

local here = arg[0]:match('^(.*[/\\])') or './'
local path = here .. '../../docs/TUTORIAL.md'
local f = assert(io.open(path), 'cannot open ' .. path)
local text = f:read('*a')
f:close()

-- The blocks: { info = 'lua' | 'lua gpu', code = '...', line = first line number }
local blocks = {}
do
  local n, cur = 0, nil
  for line in (text .. '\n'):gmatch('([^\n]*)\n') do
    n = n + 1
    if cur then
      if line:match('^```%s*$') then blocks[#blocks + 1] = cur; cur = nil
      else cur.code = cur.code .. line .. '\n' end
    else
      local info = line:match('^```(lua.*)$')
      if info then cur = { info = info, code = '', line = n + 1 } end
    end
  end
  assert(not cur, 'an unclosed ``` block in TUTORIAL.md')
end

local env = setmetatable({ efla = efla }, { __index = _G })
local gpu = efla.cuda.is_available()

test('the tutorial has its sections as code', function()
  ok(#blocks >= 12, 'only ' .. #blocks .. ' lua blocks')
end)

test('no top-level local (the REPL forgets them after each line)', function()
  for _, b in ipairs(blocks) do
    for line in b.code:gmatch('[^\n]+') do
      ok(not line:match('^local%s'), 'TUTORIAL.md block at line ' .. b.line .. ': ' .. line)
    end
  end
end)

for i, b in ipairs(blocks) do
  local is_gpu = b.info:find('gpu', 1, true) ~= nil
  test(string.format('block %d (line %d)%s', i, b.line, is_gpu and ' [gpu]' or ''), function()
    if is_gpu and not gpu then print('  skipped: no CUDA device'); return end
    local fn, err = load(b.code, '=TUTORIAL.md:' .. b.line, 't', env)
    ok(fn, err)
    local good, msg = xpcall(fn, debug.traceback)
    ok(good, msg)
  end)
end

test('the same blocks pasted into the REPL run without an error', function()
  local tmp = (os.getenv('EFLA_TEST_TMP') or '/tmp') .. '/lua_test_tutorial'
  os.execute("mkdir -p '" .. tmp .. "'")
  local parts = {}
  for _, b in ipairs(blocks) do
    if not b.info:find('gpu', 1, true) then parts[#parts + 1] = b.code end
  end
  local input = tmp .. '/blocks.lua'
  local f = assert(io.open(input, 'w'))
  f:write(table.concat(parts))
  f:close()
  local exe = require('efla.cli').executable()
  os.execute(string.format("'%s' < '%s' > '%s/out.txt' 2> '%s/err.txt'", exe, input, tmp, tmp))
  local function slurp(p) local h = io.open(p); local s = h and h:read('*a') or ''; if h then h:close() end; return s end
  local err, out = slurp(tmp .. '/err.txt'), slurp(tmp .. '/out.txt')
  ok(err == '', 'the REPL reported:\n' .. err)
  ok(out:find('next-token loss of an untrained model', 1, true), 'the REPL did not reach the last block:\n' .. out)
end)

test('what the text promises', function()
  ok(env.final_loss < 0.05, 'the training loop did not fit sin(3x): loss ' .. tostring(env.final_loss))
  ok(env.test_err < 0.3, 'evaluation error ' .. tostring(env.test_err))
  ok((env.restored(env.xs) - env.model(env.xs)):abs():max():item() == 0, 'the checkpoint did not restore the weights')
  ok(env.ok_grad == true, 'gradcheck in the tutorial failed')
  local exact = env.o_exact:abs():max():item()
  local euler = env.o_euler:abs():max():item()
  ok(exact < 1e3 and not (euler < 10 * exact), string.format('exact %g vs euler %g', exact, euler))
  ok(math.abs(env.lm_loss:item() - math.log(32)) < 0.5, 'untrained LM loss ' .. env.lm_loss:item())
  os.execute("rm -rf '" .. env.ckpt_dir .. "'")
  os.remove(env.ckpt_dir:sub(1, -3))   -- the file os.tmpname made
end)

t.done()

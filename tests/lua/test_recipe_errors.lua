-- test_recipe_errors.lua: recipes given bad arguments or files say so in one line and exit
-- with status 2, without a Lua traceback (issue 16, finding 7); --debug / EFLA_DEBUG=1
-- bring the traceback back; a resume checkpoint of another run is refused by name.
local t = dofile('tests/lua/testlib.lua')
local efla = require 'efla'
local checkpoint = require 'efla.checkpoint'
local S = require 'efla.tasks.smnist'

local bin = os.getenv('EFLA_BIN') or 'build/efla'
local tmp = (os.getenv('EFLA_TEST_TMP') or '/tmp') .. '/test_recipe_errors'
os.execute("rm -rf '" .. tmp .. "' && mkdir -p '" .. tmp .. "'")

local function run(cmd)   -- exit status, output
  local out, code = t.run(cmd)
  return code, out
end

-- a user error: status 2, the phrase, no traceback
local function refused(args, phrase, recipe)
  local code, out = run(string.format('%s recipes/%s %s', bin, recipe or 'smnist.lua', args))
  t.eq(code, 2, args .. ': exit status\n' .. out)
  t.ok(out:find(phrase, 1, true), args .. ': says "' .. phrase .. '":\n' .. out)
  t.ok(not out:find('stack traceback', 1, true), args .. ': no traceback:\n' .. out)
  return out
end

t.test('ranges checked up front', function()
  refused('--batch 0', '--batch: expected a whole number >= 1')
  refused('--lr -1', '--lr: expected a number > 0')
  refused('--lr inf', '--lr: expected a number > 0')
  refused('--epochs -1', '--epochs: expected a whole number >= 1')
  refused('--train-samples -3', '--train-samples: expected a whole number >= 0')
  refused('--order 7', "--order: '7' is not one of")
  refused('--device tpu', "--device: 'tpu' is not a device")
  refused('--epochs 0', '--epochs: expected a whole number >= 1', 'lr_sweep.lua')
  refused('--rates 1e-3,-1', "--rates: '-1' is not a learning rate", 'lr_sweep.lua')
  refused('--orders 1,9', "--orders: '9' is not exact, 1, 2, 3 or 4", 'order_sweep.lua')
  refused('--device cuda:x', "is not a device", 'eval.lua')
  refused('--compute bf16', "--compute: 'bf16' is not one of auto, bfloat16, float32")
  refused('--compute float16', "--compute: 'float16' is not one of auto, bfloat16, float32", 'order_sweep.lua')
  refused('--compute half', "--compute: 'half' is not one of auto, bfloat16, float32", 'mad.lua')
end)

t.test('--device cuda without a GPU', function()
  if efla.cuda.is_available() then return t.skip('--device cuda', 'a GPU is present') end
  refused('--device cuda', '--device cuda: no CUDA GPU is available')
end)

t.test('files: a missing resume, an unusable one, an --out that cannot be made', function()
  refused('--method efla --resume ' .. tmp .. '/nope.h5', '--resume: no such file')
  local f = io.open(tmp .. '/text.h5', 'w') f:write('not a checkpoint\n') f:close()
  refused('--method efla --train-samples 64 --batch 64 --resume ' .. tmp .. '/text.h5', 'is not an HDF5 file')
  refused('--method efla --train-samples 64 --batch 64 --out /proc/efla-cannot-be-here', 'cannot create the folder /proc/efla-cannot-be-here')
end)

t.test('--debug and EFLA_DEBUG=1 show the traceback', function()
  for _, how in ipairs { { '', '--debug ' }, { 'EFLA_DEBUG=1 ', '' } } do
    local code, out = run(string.format('%s%s recipes/smnist.lua %s--method efla --train-samples 64 --batch 64 --resume %s/text.h5',
      how[1], bin, how[2], tmp))
    t.eq(code, 1, 'status with a traceback')
    t.ok(out:find('stack traceback', 1, true) and out:find('is not an HDF5 file', 1, true), out)
  end
end)

t.test('resuming a checkpoint of another method or config is refused by name', function()
  local path = tmp .. '/deltanet.h5'
  checkpoint.save(path, { model = {}, step = 1, meta = { method = 'deltanet', config = S.model_config('deltanet', {}),
    args = { dataset = 'mnist', batch = 64 } } })
  local out = refused('--method efla --train-samples 64 --batch 64 --resume ' .. path, 'cannot resume from')
  t.ok(out:find('method: deltanet in the checkpoint, efla now', 1, true), out)
  t.ok(out:find('config.order', 1, true), 'names the order too: ' .. out)
  out = refused('--method deltanet --train-samples 64 --batch 32 --resume ' .. path, '--batch: 64 in the checkpoint, 32 now')
  t.ok(not out:find('method:', 1, true), 'the method matches: ' .. out)
end)

os.execute("rm -rf '" .. tmp .. "'")
t.done()

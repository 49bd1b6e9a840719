-- test_resume.lua: exact resume. A training run killed with SIGKILL at a random step and
-- resumed from its latest checkpoint ends with parameters and optimiser state bit-identical
-- to an uninterrupted run with the same seed (CPU). Uses the real sMNIST recipe on a small
-- subset, checkpointing every step.
local t = dofile('tests/lua/testlib.lua')
local efla = require 'efla'
local checkpoint = require 'efla.checkpoint'

local bin = os.getenv('EFLA_BIN') or 'build/efla'
local tmp = (os.getenv('EFLA_TEST_TMP') or '/tmp') .. '/test_resume'
os.execute('rm -rf ' .. tmp .. ' && mkdir -p ' .. tmp)

local STEPS = 12
local common = string.format('recipes/smnist.lua --method efla --train-samples %d --batch 16 --test-samples 8 '
  .. '--seed 5 --save-every 1 --quiet', STEPS * 16)

local function sh(cmd)
  local ok = os.execute(cmd)
  return ok == 0 or ok == true
end

local function exists(p) local f = io.open(p) if f then f:close() return true end return false end

local function sleep(s) os.execute('sleep ' .. s) end

local function final_path(out) return string.format('%s/efla/step-%06d.h5', out, STEPS) end

t.test('uninterrupted reference run', function()
  t.ok(sh(string.format('EFLA_PROGRESS=plain %s %s --out %s/full > %s/full.log 2>&1', bin, common, tmp, tmp)),
    'the reference run failed; see ' .. tmp .. '/full.log')
  t.ok(exists(final_path(tmp .. '/full')), 'final checkpoint of the reference run')
end)

t.test('killed with SIGKILL at a random step, then resumed: bit-identical', function()
  math.randomseed(os.time())
  local kill_at = math.random(2, STEPS - 3)
  local out = tmp .. '/killed'
  -- start the child in the background and learn its pid
  local p = io.popen(string.format('EFLA_PROGRESS=plain %s %s --out %s > %s/killed.log 2>&1 & echo $!', bin, common, out, tmp))
  local pid = tonumber(p:read('*l'))
  p:close()
  t.ok(pid, 'child pid')
  local waited = 0
  while not exists(string.format('%s/efla/step-%06d.h5', out, kill_at)) and waited < 600 do
    sleep(0.05)
    waited = waited + 1
  end
  sh('kill -9 ' .. pid .. ' 2>/dev/null')
  sleep(0.2)
  t.ok(not exists(final_path(out)), 'the child was killed before it finished (kill_at ' .. kill_at .. ')')
  local mgr = checkpoint.Manager { dir = out .. '/efla', keep_last = 2 }
  local latest = mgr:latest()
  t.ok(latest, 'a checkpoint survived the kill')
  t.ok(sh(string.format('EFLA_PROGRESS=plain %s %s --out %s --resume %s > %s/resumed.log 2>&1', bin, common, out, latest, tmp)),
    'the resumed run failed; see ' .. tmp .. '/resumed.log')
  local a, b = checkpoint.load(final_path(tmp .. '/full')), checkpoint.load(final_path(out))
  t.eq(a.step, STEPS)
  t.eq(b.step, STEPS)
  local n = 0
  for name, pa in pairs(a.model) do
    local pb = b.model[name]
    t.ok(pb, 'resumed model has ' .. name)
    t.eq((pa - pb):abs():max():item(), 0, 'parameter ' .. name .. ' (killed at step ' .. kill_at .. ')')
    n = n + 1
  end
  t.ok(n > 5, 'compared the parameters')
  for i, s in pairs(a.optim.state) do
    for k, v in pairs(s) do
      if type(v) ~= 'number' and v.abs then
        t.eq((v - b.optim.state[i][k]):abs():max():item(), 0, 'optimiser state ' .. i .. '.' .. k)
      else
        t.eq(v, b.optim.state[i][k], 'optimiser state ' .. i .. '.' .. k)
      end
    end
  end
  -- the loss history continues where it stopped
  t.eq(#b.metrics.loss, STEPS)
  t.eq(b.metrics.loss, a.metrics.loss, 'loss history')
end)

t.done()

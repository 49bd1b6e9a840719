-- gpu_oom_midstep.lua: a GPU out-of-memory in the middle of a training step must leave the
-- process usable, the parameters as they were before the step, and the last checkpoint
-- intact (issue 16). Run on a GPU machine by scripts/gpu_reliability.sh:
--   efla scripts/gpu_oom_midstep.lua [OUTDIR]
-- Prints "oom_midstep: PASS" or raises with what went wrong.
local efla = require 'efla'
local checkpoint = require 'efla.checkpoint'
assert(efla.cuda.is_available(), 'gpu_oom_midstep: no CUDA GPU')
local out = arg[1] or '/tmp/efla-oom-midstep'
os.execute("rm -rf '" .. out .. "' && mkdir -p '" .. out .. "'")

efla.manual_seed(1)
local model = efla.nn.Sequential(efla.nn.Linear(256, 1024), efla.nn.ReLU(), efla.nn.Linear(1024, 10)):to('cuda')
local opt = efla.optim.AdamW(model:parameters(), { lr = 1e-3 })
local manager = checkpoint.Manager { dir = out, keep_last = 2 }
local function step(batch)
  local x = efla.randn(batch, 256):cuda()
  local y = efla.randint(1, 11, { batch }):cuda()
  local loss = efla.nn.functional.cross_entropy(model:forward(x), y)
  opt:zero_grad()
  loss:backward()
  opt:step()
  return loss:item()
end
for i = 1, 3 do step(64) end
local saved = manager:save(3, { model = model:state_dict(), optim = opt:state_dict(), step = 3 })
local before = {}
for name, p in pairs(model:state_dict()) do before[name] = p:cpu():clone() end

-- fill the GPU, keeping a little room, so the next step runs out part-way
local hogs, chunk = {}, 2 ^ 30
while chunk >= 2 ^ 20 do
  local ok, t = pcall(efla.empty, { chunk / 4 }, { device = 'cuda' })
  if ok then hogs[#hogs + 1] = t else chunk = chunk / 2 end
end
print(string.format('oom_midstep: filled the GPU with %d blocks', #hogs))
local ok, err = pcall(step, 65536)
print('oom_midstep: the big step ->', ok, err)
assert(not ok and tostring(err):find('out of memory', 1, true), 'expected an out-of-memory error, got ' .. tostring(err))

-- release and go on: the parameters are those of before the failed step (no optimiser
-- update happened), the process can train and save again, the checkpoint reads back
hogs = nil
collectgarbage()
collectgarbage()
efla.cuda.empty_cache()
for name, p in pairs(model:state_dict()) do
  local d = (p:cpu() - before[name]):abs():max():item()
  assert(d == 0, 'parameter ' .. name .. ' changed by the failed step (max diff ' .. d .. ')')
end
local c = checkpoint.load(saved)
for name, p in pairs(c.model) do
  assert((p - before[name]):abs():max():item() == 0, 'checkpoint ' .. saved .. ': ' .. name .. ' differs')
end
local l = step(64)
assert(l == l, 'the loss after recovery is NaN')
manager:save(4, { model = model:state_dict(), optim = opt:state_dict(), step = 4 })
assert(checkpoint.load(out .. '/step-000004.h5').step == 4)
print(string.format('oom_midstep: PASS (loss after recovery %.4f; memory %s)', l, tostring(efla.cuda.memory_stats().live_bytes)))

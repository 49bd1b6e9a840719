-- dp_tiny.lua MODE OUT [bucket_mb] [accum]: trains a tiny float64 classifier for 6 AdamW steps
-- at a global batch of 12 and writes each step's loss and the final weights to OUT (rank 0).
-- MODE: plain (one process, no efla.distributed), dp (DataParallel), zero (DataParallel +
-- ZeroOptimizer). The second layer is applied twice, so one leaf gets two gradient edges.
-- test_distributed.lua compares the files of 1-, 2- and 3-rank runs. EFLA_TEST_DEVICE=cuda
-- runs on the GPU (each rank on cuda:LOCAL_RANK, through NCCL): test_distributed_nccl.lua.
local efla = require 'efla'
local loader = require 'efla.data.loader'
local mode, out = arg[1], arg[2]
local bucket_mb, accum = tonumber(arg[3] or '25'), tonumber(arg[4] or '1')
local nn = efla.nn

efla.manual_seed(7)
local X = efla.randn(48, 6, { dtype = 'float64' })
local Y = (efla.rand(48, { dtype = 'float64' }) * 3):to('int64') + 1
local l1, l2, l3 = nn.Linear(6, 16), nn.Linear(16, 16), nn.Linear(16, 3)
local model = nn.Sequential(l1, nn.Tanh(), l2, nn.Tanh(), l2, nn.Tanh(), l3):double()
local cuda = (os.getenv('EFLA_TEST_DEVICE') or 'cpu'):match('^cuda') ~= nil

local pg, dp, W, R = nil, nil, 1, 0
if mode ~= 'plain' then
  local dist = require 'efla.distributed'
  pg = dist.init { backend = cuda and 'nccl' or 'tcp' }
  W, R = pg.world_size, pg.rank
  model:to(pg.device)
  dp = dist.DataParallel(model, { bucket_mb = bucket_mb })
elseif cuda then
  model:to('cuda:0')
end
local device = model:parameters()[1]:device()
X, Y = X:to(device), Y:to(device)
local opt = efla.optim.AdamW(model:parameters(), { lr = 0.05, weight_decay = 0.1 })
if mode == 'zero' then opt = require('efla.distributed').ZeroOptimizer(opt, pg) end
local sampler = loader.Sampler(48, { batch_size = 12 / accum, seed = 3, rank = R, world_size = W })

local lines = {}
for step = 1, 6 do
  opt:zero_grad()
  local total = 0
  for k = 1, accum do
    if dp then dp.sync = k == accum end
    local g = (step - 1) * accum + k - 1           -- the global batch number, over epochs
    local nb = sampler:num_batches()
    local p, count = sampler:batch_indices(math.floor(g / nb), g % nb)
    local idx = (efla.from_buffer(p, { count }, 'int64') + 1):to(device)
    local loss = model:forward(X:index_select(1, idx)):cross_entropy(Y:index_select(1, idx)) / accum
    loss:backward()
    total = total + loss:item()
  end
  if dp then
    dp:finish()
    total = pg:all_numbers({ total }, 'avg')[1]
  end
  opt:step()
  lines[#lines + 1] = string.format('loss %d %.17g', step, total)
end
-- the optimiser's full state must survive a sharded state_dict
local sd = opt:state_dict()
local n = 0
for _ in pairs(sd.state) do n = n + 1 end
lines[#lines + 1] = 'state_entries ' .. n
if dp then lines[#lines + 1] = 'early_launches ' .. dp.early_launches end
for i, p in ipairs(model:parameters()) do
  local v = p:cpu():view(-1):totable()
  for j = 1, #v do v[j] = string.format('%.17g', v[j]) end
  lines[#lines + 1] = 'param ' .. i .. ' ' .. table.concat(v, ' ')
end
for i, e in ipairs(opt:each()) do
  local s = sd.state[tostring(e[1])]
  if s then lines[#lines + 1] = string.format('exp_avg_sq %d %.17g', i, s.exp_avg_sq:sum():item()) end
end
if R == 0 then
  local f = assert(io.open(out, 'w'))
  f:write(table.concat(lines, '\n'), '\n')
  f:close()
end

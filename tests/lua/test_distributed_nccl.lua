-- test_distributed_nccl.lua: efla.distributed through NCCL on CUDA tensors. On one GPU: a
-- world of size 1 (the unique id, the communicator, every collective in sum/avg and several
-- dtypes, the file rendezvous, DataParallel's buckets launched during the backward on NCCL's
-- stream, ZeRO-1). With two GPUs or more, also every collective across them and a
-- data-parallel run equal to one GPU's. Skips (passing) without CUDA or libnccl.so.2.
local t = dofile('tests/lua/testlib.lua')
local efla = require 'efla'
local lib = efla.internal.lib

local bin = os.getenv('EFLA_BIN') or 'build/efla'
local tmp = (os.getenv('EFLA_TEST_TMP') or '/tmp') .. '/test_distributed_nccl'
os.execute('rm -rf ' .. tmp .. ' && mkdir -p ' .. tmp)

local run_script = (function()
  local beside = bin:gsub('efla$', 'efla-run')
  local f = io.open(beside, 'r')
  if f then f:close(); return beside end
  return 'scripts/efla-run'
end)()

local function sh(cmd)
  local f = io.popen('( ' .. cmd .. ' ) 2>&1; echo "__rc=$?"')
  local s = f:read('*a')
  f:close()
  local rc = tonumber(s:match('__rc=(%d+)%s*$'))
  return rc == 0, s:gsub('__rc=%d+%s*$', ''), rc
end

if not efla.has_cuda() or efla.device_count('cuda') == 0 then
  t.skip('NCCL tests', 'no CUDA device (this efla was built without CUDA, or no GPU is visible)')
  t.done()
  return
end
if lib.efla_nccl_available() ~= 1 then
  t.skip('NCCL tests', efla.internal.last_error())
  t.done()
  return
end
local gpus = efla.device_count('cuda')
local dist = require 'efla.distributed'

t.test('a world of one through NCCL: every collective, on the GPU', function()
  local pg = dist.init { backend = 'nccl', rank = 0, world_size = 1 }
  t.eq(pg.device, 'cuda:0')
  for _, dt in ipairs({ 'float32', 'float64', 'bfloat16', 'int64' }) do
    local x = efla.arange(1, 13):to(dt):view(4, 3)
    local g = x:cuda()
    pg:all_reduce(g, 'sum')
    t.eq(g:cpu():double():totable(), x:double():totable(), dt .. ' all_reduce sum')
    if dt ~= 'int64' then
      pg:all_reduce(g, 'avg')
      t.eq(g:cpu():double():totable(), x:double():totable(), dt .. ' all_reduce avg')
    end
    pg:broadcast(g, 0)
    t.eq(g:cpu():double():totable(), x:double():totable(), dt .. ' broadcast')
    t.eq(pg:all_gather(g):cpu():double():totable(), { x:double():totable() }, dt .. ' all_gather')
    t.eq(pg:reduce_scatter(g, 'sum'):cpu():double():totable(), x:double():totable(), dt .. ' reduce_scatter')
  end
  t.eq(pg:all_numbers({ 2, 3 }, 'sum'), { 2, 3 })
  pg:barrier()
  t.raises(function() pg:all_reduce(efla.ones(3)) end, 'the tensor is on cpu but the communicator on cuda:0')
  t.raises(function() pg:all_reduce(efla.ones(3, 4):cuda():t()) end, 'not contiguous')
  pg:destroy()
end)

t.test('NCCL through a shared-file rendezvous (world of one)', function()
  local pg = dist.init { backend = 'nccl', rank = 0, world_size = 1, init_method = 'file://' .. tmp .. '/rdv' }
  local g = efla.ones(5):cuda()
  pg:all_reduce(g, 'sum')
  t.eq(g:cpu():totable(), { 1, 1, 1, 1, 1 })
  pg:destroy()
end)

t.test('DataParallel and ZeRO-1 on NCCL (world of one): gradients and steps unchanged', function()
  local pg = dist.init { backend = 'nccl', rank = 0, world_size = 1 }
  local function make()
    efla.manual_seed(3)
    return efla.nn.Sequential(efla.nn.Linear(8, 32), efla.nn.Tanh(), efla.nn.Linear(32, 4)):cuda()
  end
  local a, b = make(), make()
  efla.manual_seed(4)
  local x, y = efla.randn(16, 8):cuda(), (efla.rand(16) * 4):to('int64'):cuda() + 1
  a:forward(x):cross_entropy(y):backward()
  local dp = dist.DataParallel(b, { bucket_mb = 0.0001 })
  b:forward(x):cross_entropy(y):backward()
  t.eq(dp.early_launches, 4, 'each parameter its own bucket, launched during the backward')
  dp:finish()
  for i, p in ipairs(a:parameters()) do
    t.eq(b:parameters()[i].grad:cpu():totable(), p.grad:cpu():totable(), 'gradient ' .. i)
  end
  local oa = efla.optim.AdamW(a:parameters(), { lr = 0.1 })
  local ob = dist.ZeroOptimizer(efla.optim.AdamW(b:parameters(), { lr = 0.1 }), pg)
  oa:step(); ob:step()
  for i, p in ipairs(a:parameters()) do t.eq(b:parameters()[i]:cpu():totable(), p:cpu():totable(), 'weight ' .. i) end
  local sd = ob:state_dict()
  t.eq(sd.state['1'].step, 1)
  dp:close()
  pg:destroy()
end)

if gpus >= 2 then
  local n = math.min(gpus, 8)
  t.test(string.format('%d GPUs: collectives and data-parallel training through NCCL', n), function()
    local ok, out = sh(string.format('EFLA_DIST_BACKEND=nccl %s --efla %s --nproc-per-node %d tests/lua/dist/collectives.lua', run_script, bin, n))
    t.ok(ok, out)
    for r = 0, n - 1 do t.ok(out:find('collectives ok ' .. r, 1, true), out) end
    local dev = 'EFLA_TEST_DEVICE=cuda '
    t.ok(sh(dev .. bin .. ' tests/lua/dist/dp_tiny.lua plain ' .. tmp .. '/plain.txt'))
    local b = 12 % n == 0 and n or 2
    ok, out = sh(string.format('%s %s --efla %s --nproc-per-node %d tests/lua/dist/dp_tiny.lua dp %s/dp.txt 0.0001', dev, run_script, bin, b, tmp))
    t.ok(ok, out)
    local function losses(path)
      local l = {}
      for v in io.open(path):read('*a'):gmatch('loss %d+ (%S+)') do l[#l + 1] = tonumber(v) end
      return l
    end
    t.near(losses(tmp .. '/dp.txt'), losses(tmp .. '/plain.txt'), 1e-10, 'loss curve on ' .. b .. ' GPUs = 1 GPU')
  end)
else
  t.skip('multi-GPU NCCL', 'one GPU visible')
end

t.done()

-- test_distributed.lua: efla.distributed on the CPU (the TCP transport), with 1-3 processes
-- started by scripts/efla-run: the launcher (environment, prefixes, a failing rank stops the
-- others), the rendezvous (a peer that never comes -> a clear error within the timeout),
-- every collective against a local reference, the sharded sampler, data-parallel training
-- equal to one process at the same global batch (float64), ZeRO-1 equal to AdamW, and a
-- 2-rank LM checkpoint resumed on 1 and 3 ranks. Workers live in tests/lua/dist/.
local t = dofile('tests/lua/testlib.lua')
local efla = require 'efla'
local loader = require 'efla.data.loader'
local checkpoint = require 'efla.checkpoint'
local wall = require('efla.progress').wall

local bin = os.getenv('EFLA_BIN') or 'build/efla'
local tmp = (os.getenv('EFLA_TEST_TMP') or '/tmp') .. '/test_distributed'
os.execute('rm -rf ' .. tmp .. ' && mkdir -p ' .. tmp)
-- the launcher beside the efla command (build/, a bundle's bin/), else the source tree's
local function launcher()
  local beside = bin:gsub('efla$', 'efla-run')
  local f = io.open(beside, 'r')
  if f then f:close(); return beside end
  return 'scripts/efla-run'
end
local run = launcher() .. ' --efla ' .. bin

-- Runs a shell command; returns ok, its output (stdout and stderr) and the exit code.
local function sh(cmd)
  local f = io.popen('( ' .. cmd .. ' ) 2>&1; echo "__rc=$?"')
  local s = f:read('*a')
  f:close()
  local rc = tonumber(s:match('__rc=(%d+)%s*$'))
  return rc == 0, s:gsub('__rc=%d+%s*$', ''), rc
end

local function read(path)
  local f = assert(io.open(path, 'r'), 'missing ' .. path)
  local s = f:read('*a')
  f:close()
  return s
end

-- "key i v1 v2 ..." lines -> {key = {i -> {numbers}}}
local function parse(path)
  local out = {}
  for line in read(path):gmatch('[^\n]+') do
    local words = {}
    for w in line:gmatch('%S+') do words[#words + 1] = w end
    local k = table.remove(words, 1)
    out[k] = out[k] or {}
    local nums = {}
    for i, w in ipairs(words) do nums[i] = tonumber(w) end
    out[k][#out[k] + 1] = nums
  end
  return out
end

local function free_port() return 20000 + math.floor((wall() * 1000) % 30000) end

t.test('launcher: one process per rank, environment set, output prefixed by rank', function()
  local ok, out = sh(run .. ' --nproc-per-node 2 tests/lua/dist/launcher_env.lua a b')
  t.ok(ok, 'efla-run succeeds: ' .. out)
  for r = 0, 1 do
    local line = out:match('%[rank' .. r .. '%]: env ([^\n]*)')
    t.ok(line, 'rank ' .. r .. ' printed a prefixed line: ' .. out)
    t.ok(line:find('rank=' .. r .. ' world=2 local=' .. r .. ' master=127.0.0.1:%d+ args=a,b'), line)
  end
  local ok2, help = sh(run .. ' --help')
  t.ok(ok2 and help:find('--nproc-per-node', 1, true), 'help text')
  local ok3, bad = sh(run .. ' --nproc-per-node 0 x.lua')
  t.ok(not ok3 and bad:find('whole number >= 1', 1, true), bad)
  local ok4, bad2 = sh(run .. ' --nnodes 2 --node-rank 0 tests/lua/dist/launcher_env.lua')
  t.ok(not ok4 and bad2:find('--master', 1, true), 'several nodes need --master: ' .. bad2)
end)

t.test('launcher: a failing rank stops the others and gives its exit code', function()
  local t0 = wall()
  local ok, out, rc = sh(run .. ' --nproc-per-node 3 tests/lua/dist/launcher_env.lua fail 1 3')
  local dt = wall() - t0
  t.ok(not ok and rc == 3, 'exit code 3 expected, got ' .. tostring(rc) .. ': ' .. out)
  t.ok(out:find('rank 1 exited with code 3', 1, true), out)
  t.ok(not out:find('still running', 1, true), 'the sleeping ranks were stopped')
  t.ok(dt < 20, string.format('stopped in %.1f s (the others sleep 60 s)', dt))
end)

t.test('rendezvous: a rank that never arrives gives a clear error within the timeout', function()
  local port = free_port()
  local t0 = wall()
  local ok, out = sh(string.format('RANK=0 WORLD_SIZE=3 MASTER_PORT=%d EFLA_DIST_TIMEOUT=1 %s -e "require(\'efla.distributed\').init()"', port, bin))
  local dt = wall() - t0
  t.ok(not ok, 'init must fail')
  t.ok(out:find('ranks 1, 2 of 3 never connected', 1, true), out)
  t.ok(dt < 10, string.format('failed after %.1f s with a 1 s timeout', dt))
  -- and the other side: rank 0 is not there
  local ok2, out2 = sh(string.format('RANK=1 WORLD_SIZE=2 MASTER_PORT=%d EFLA_DIST_TIMEOUT=1 %s -e "require(\'efla.distributed\').init()"', port + 1, bin))
  t.ok(not ok2 and out2:find('rank 1 could not reach rank 0 at 127.0.0.1:' .. (port + 1), 1, true), out2)
  -- bad environment
  local ok3, out3 = sh(string.format('RANK=2 WORLD_SIZE=2 %s -e "require(\'efla.distributed\').init()"', bin))
  t.ok(not ok3 and out3:find('outside a world of size 2', 1, true), out3)
end)

t.test('collectives on the TCP transport equal a local reference (2 and 3 ranks)', function()
  for _, n in ipairs({ 2, 3 }) do
    local ok, out = sh(run .. ' --nproc-per-node ' .. n .. ' tests/lua/dist/collectives.lua')
    t.ok(ok, out)
    for r = 0, n - 1 do t.ok(out:find('collectives ok ' .. r, 1, true), 'rank ' .. r .. ' checked: ' .. out) end
  end
end)

t.test('a world of one: collectives are the identity, no sockets', function()
  local dist = require 'efla.distributed'
  local pg = dist.init { backend = 'tcp', rank = 0, world_size = 1 }
  local x = efla.tensor({ 1, 2, 3 }, { dtype = 'float64' })
  t.eq(pg:all_reduce(x:clone(), 'avg'):totable(), { 1, 2, 3 })
  t.eq(pg:all_gather(x):totable(), { { 1, 2, 3 } })
  t.eq(pg:reduce_scatter(x:view(3, 1), 'sum'):view(-1):totable(), { 1, 2, 3 })
  t.raises(function() pg:all_reduce(x, 'max') end, "op must be 'sum' or 'avg'")
  t.raises(function() dist.init() end, 'already initialised')
  pg:destroy()
  t.ok(not dist.is_initialized())
  t.raises(function() dist.DataParallel(efla.nn.Linear(2, 2)) end, 'call efla.distributed.init() first')
end)

t.test('sampler: shards are disjoint, cover the epoch, and join into the 1-rank batches', function()
  for _, drop in ipairs({ true, false }) do
    local n, B = 40, 6
    local one = loader.Sampler(n, { batch_size = B, seed = 9, drop_last = drop })
    for _, W in ipairs({ 2, 3 }) do
      local seen = {}
      for b = 0, one:num_batches() - 1 do
        local p1, c1 = one:batch_indices(1, b)
        local joined = {}
        for r = 0, W - 1 do
          local s = loader.Sampler(n, { batch_size = B, seed = 9, drop_last = drop, rank = r, world_size = W })
          t.eq(s:num_batches(), one:num_batches())
          local p, c = s:batch_indices(1, b)
          for i = 0, c - 1 do
            local v = tonumber(p[i])
            t.ok(not seen[v], 'sample ' .. v .. ' appears twice')
            seen[v] = true
            joined[#joined + 1] = v
          end
        end
        t.eq(#joined, c1)
        for i = 0, c1 - 1 do t.eq(joined[i + 1], tonumber(p1[i])) end
      end
      local count = 0
      for _ in pairs(seen) do count = count + 1 end
      t.eq(count, drop and 36 or 40, 'the epoch is covered')
    end
  end
  t.raises(function() loader.Sampler(10, { batch_size = 5, world_size = 2 }) end, 'not a multiple of the 2 ranks')
  t.raises(function() loader.Sampler(10, { batch_size = 4, world_size = 2, rank = 2 }) end, 'must lie in 0..world_size-1')
end)

t.test('data parallel = one process at the same global batch (float64); ZeRO-1 = AdamW', function()
  t.ok(sh(bin .. ' tests/lua/dist/dp_tiny.lua plain ' .. tmp .. '/plain.txt'))
  t.ok(sh(bin .. ' tests/lua/dist/dp_tiny.lua plain ' .. tmp .. '/plain_acc.txt 25 2'))
  local runs = {
    { 'dp2_buckets', '--nproc-per-node 2 tests/lua/dist/dp_tiny.lua dp %s 0.0001', 'plain' },
    { 'dp3_one_bucket', '--nproc-per-node 3 tests/lua/dist/dp_tiny.lua dp %s 25', 'plain' },
    { 'zero2', '--nproc-per-node 2 tests/lua/dist/dp_tiny.lua zero %s 0.0001', 'plain' },
    { 'zero3', '--nproc-per-node 3 tests/lua/dist/dp_tiny.lua zero %s 25', 'plain' },
    { 'dp2_accum', '--nproc-per-node 2 tests/lua/dist/dp_tiny.lua dp %s 0.0001 2', 'plain_acc' },
  }
  for _, r in ipairs(runs) do
    local path = tmp .. '/' .. r[1] .. '.txt'
    local ok, out = sh(run .. ' ' .. string.format(r[2], path))
    t.ok(ok, r[1] .. ': ' .. out)
    local got, want = parse(path), parse(tmp .. '/' .. r[3] .. '.txt')
    t.near(got.loss, want.loss, 1e-12, r[1] .. ' losses')
    t.near(got.param, want.param, 1e-12, r[1] .. ' weights')
    t.near(got.exp_avg_sq, want.exp_avg_sq, 1e-12, r[1] .. ' optimiser state (gathered)')
    t.eq(got.state_entries[1][1], 6, r[1] .. ': the gathered state has every parameter')
    t.ok(got.early_launches[1][1] > 0, r[1] .. ': buckets were launched during the backward')
  end
  -- several buckets: every one of the 6 parameters' buckets (6 steps) went during the backward
  t.eq(parse(tmp .. '/dp2_buckets.txt').early_launches[1][1], 36)
end)

t.test('LM: a 2-rank checkpoint resumes on 1 rank and on 3 (ZeRO-1) as the 1-rank run goes on', function()
  local corpus = tmp .. '/tiny.txt'
  local words = { 'whale', 'sea', 'ship', 'captain', 'harpoon', 'voyage', 'sailor', 'deck', 'storm', 'island' }
  local paras = {}
  for i = 1, 45 do
    local s = { string.format('Document %d.', i) }
    for j = 1, 40 do s[#s + 1] = words[(i * 7 + j * j) % #words + 1] end
    paras[i] = table.concat(s, ' ') .. '.'
  end
  local f = assert(io.open(corpus, 'w'))
  f:write(table.concat(paras, '\n\n'), '\n')
  f:close()
  local w = 'tests/lua/dist/lm_run.lua ' .. corpus .. ' ' .. tmp
  local ok, out = sh(bin .. ' ' .. w .. '/one')
  t.ok(ok, out)
  ok, out = sh(run .. ' --nproc-per-node 2 ' .. w .. '/two 4')
  t.ok(ok, out)
  local mid = tmp .. '/two/efla/step-000004.h5'
  ok, out = sh(bin .. ' ' .. w .. '/on1 - ' .. mid)
  t.ok(ok, out)
  ok, out = sh(run .. ' --nproc-per-node 3 ' .. w .. '/on3 - ' .. mid .. ' zero')
  t.ok(ok, out)
  t.ok(out:find('on 3 ranks', 1, true), out)
  local ref = checkpoint.load(tmp .. '/one/efla/step-000008.h5')
  for _, name in ipairs({ 'on1', 'on3' }) do
    local ck = checkpoint.load(tmp .. '/' .. name .. '/efla/step-000008.h5')
    t.eq(ck.step, 8)
    t.near(ck.metrics.loss, ref.metrics.loss, 2e-5, name .. ': training losses (float32, summation order differs)')
    for k, v in pairs(ref.model) do t.near(ck.model[k], v, 2e-4, name .. ': weight ' .. k) end
    t.eq(ck.extra.loader.batch, ref.extra.loader.batch, name .. ': the same data position')
  end
  -- the 2-rank run's first half equals the 1-rank run's
  t.near(checkpoint.load(mid).metrics.loss, { unpack(ref.metrics.loss, 1, 4) }, 2e-5, 'first four steps on 2 ranks')
  -- a global batch the ranks cannot share
  ok, out = sh(run .. ' --nproc-per-node 4 ' .. w .. '/bad')
  t.ok(not ok and out:find('multiple of the 4 ranks', 1, true), out)
end)

t.done()

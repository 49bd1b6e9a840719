-- test_lm_merge_seeds.lua: recipes/lm_merge_seeds.lua on hand-made single-seed runs: models are
-- grouped by folder name without -s<seed>, every metric is the mean and sample std over the
-- seeds that have it, lm_eval rows join by checkpoint name, and bad folders are skipped with a
-- message rather than stopping the merge. (summary.csv keeps 6 significant digits: hence 1e-5.)
local t = dofile('tests/lua/testlib.lua')
local csv = require 'efla.csv'
local json = require 'efla.json'

local bin = os.getenv('EFLA_BIN') or 'build/efla'
local tmp = (os.getenv('EFLA_TEST_TMP') or '/tmp') .. '/test_lm_merge_seeds'
os.execute('rm -rf ' .. tmp .. ' && mkdir -p ' .. tmp)

local write = t.write_file

-- one lm.lua-shaped results.json: final bpb, a two-point validation curve, throughput
local function fake_run(name, seed, bpb, tps)
  local dir = string.format('%s/%s-s%d', tmp, name, seed)
  os.execute('mkdir -p ' .. dir)
  write(dir .. '/results.json', json.encode {
    args = { seed = seed },
    runs = { { name = name, method = name, parameters = 1000, bits_per_byte = bpb, tokens_per_second = tps,
      valid = { { step = 0, tokens_seen = 0, bpb = 8 }, { step = 10, tokens_seen = 2e6, bpb = bpb + 0.5 },
        { step = 20, tokens_seen = 4e6, bpb = bpb } } } } })
  return dir
end

local dirs = { fake_run('efla', 1, 1.50, 100), fake_run('efla', 2, 1.52, 110), fake_run('efla', 3, 1.55, 120),
  fake_run('efla-r2', 1, 1.40, 50), fake_run('efla-r2', 2, 1.44, 70) }
os.execute('mkdir -p ' .. tmp .. '/broken-s1')
dirs[#dirs + 1] = tmp .. '/broken-s1'
csv.write(tmp .. '/lm_eval.csv', { 'checkpoint', 'method', 'ppl', 'cloze acc@10', 'loss 1x', 'loss 8x' }, {
  { 'ckpt/efla-s1.h5', 'efla', 3.0, 0.5, 1.0, 1.1 }, { 'ckpt/efla-s2.h5', 'efla', 3.2, 0.6, 1.0, 1.2 },
  { 'ckpt/efla-r2-s1.h5', 'efla-r2', 2.5, 0.7, 0.9, 0.95 } })

local p = io.popen(string.format('%s recipes/lm_merge_seeds.lua --out %s/merged --eval %s/lm_eval.csv %s 2>&1; echo "exit=$?"',
  bin, tmp, tmp, table.concat(dirs, ' ')))
local log = p:read('*a')
p:close()

t.test('the merge runs, and says which folder it skipped', function()
  t.eq(tonumber(log:match('exit=(%d+)%s*$')), 0, log)
  t.ok(log:find('broken%-s1 has no readable results.json'), log)
end)

t.test('mean and sample std per model, per-seed columns, eval joined by checkpoint', function()
  local header, rows = csv.read(tmp .. '/merged/summary.csv')
  local col = {}
  for i, h in ipairs(header) do col[h] = i end
  t.eq(#rows, 2)
  local efla, r2 = rows[1], rows[2]
  t.eq(efla[col.model], 'efla')
  t.eq(r2[col.model], 'efla-r2')
  t.near(efla[col['valid bits/byte mean']], (1.50 + 1.52 + 1.55) / 3, 1e-5)
  local m = (1.50 + 1.52 + 1.55) / 3
  local sd = math.sqrt(((1.50 - m) ^ 2 + (1.52 - m) ^ 2 + (1.55 - m) ^ 2) / 2)
  t.near(efla[col['valid bits/byte std']], sd, 1e-5)
  t.near(efla[col['valid bits/byte seed2']], 1.52, 1e-5)
  t.near(r2[col['tokens/s mean']], 60, 1e-5)
  t.near(efla[col['test ppl mean']], 3.1, 1e-5)   -- seeds 1 and 2 have eval rows, seed 3 none
  t.eq(efla[col['test ppl seed3']], '')
  t.near(r2[col['loss 8x mean']], 0.95, 1e-5)
  t.near(efla[col['best valid bits/byte mean']], m, 1e-5)
end)

t.test('the markdown table marks a metric that some seeds lack', function()
  local f = assert(io.open(tmp .. '/merged/summary.md'))
  local md = f:read('*a')
  f:close()
  t.ok(md:find('| efla | 1000 | 1, 2, 3 | 1.5233 ± 0.0252', 1, true), md)
  t.ok(md:find('3.100 ± 0.141 (2 of 3 seeds)', 1, true), md)
end)

t.test('no run folders is an error that says so', function()
  local q = io.popen(string.format('%s recipes/lm_merge_seeds.lua --out %s/none %s/broken-s1 2>&1; echo "exit=$?"', bin, tmp, tmp))
  local out = q:read('*a')
  q:close()
  t.eq(tonumber(out:match('exit=(%d+)%s*$')), 1, out)
  t.ok(out:find('no runs found'), out)
end)

t.done()

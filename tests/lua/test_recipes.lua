-- test_recipes.lua: a tiny end-to-end run of the sMNIST recipe and of the batch
-- evaluation: every output file is written and well formed, the robustness tables hold
-- every setting, eval.lua reproduces the recipe's own accuracy from the checkpoints, a
-- corrupt checkpoint in the batch is reported and skipped, and --compute (auto: float32 on
-- the CPU; bfloat16 when given) is printed and recorded in the checkpoints and results.json.
local t = dofile('tests/lua/testlib.lua')
local csv = require 'efla.csv'
local json = require 'efla.json'

local bin = os.getenv('EFLA_BIN') or 'build/efla'
local tmp = (os.getenv('EFLA_TEST_TMP') or '/tmp') .. '/test_recipes'
os.execute('rm -rf ' .. tmp .. ' && mkdir -p ' .. tmp)

local function run(cmd)   -- exit status, output
  local out, code = t.run(cmd)
  return code, out
end

local function file_starts_with(path, magic)
  local f = io.open(path, 'rb')
  if not f then return false end
  local head = f:read(#magic)
  f:close()
  return head == magic
end

local out = tmp .. '/smnist'
local code, log = run(string.format('EFLA_PROGRESS=plain %s recipes/smnist.lua --train-samples 128 --batch 64 '
  .. '--test-samples 40 --seed 3 --out %s', bin, out))

t.test('smnist recipe runs to the end', function()
  t.eq(code, 0, log)
  t.ok(log:find('| efla'), 'summary table has an efla row:\n' .. log)
  t.ok(log:find('| deltanet'), 'summary table has a deltanet row')
end)

t.test('robustness tables hold every setting for both methods', function()
  local expect = { scale = 10, noise = 11, dropout = 11 }
  for kind, n in pairs(expect) do
    local header, rows = csv.read(out .. '/robustness_' .. kind .. '.csv')
    t.eq(header, { kind, 'efla', 'deltanet' })
    t.eq(#rows, n, kind)
    for _, r in ipairs(rows) do
      t.ok(type(r[2]) == 'number' and r[2] >= 0 and r[2] <= 1, kind .. ' efla accuracy in [0,1]')
      t.ok(type(r[3]) == 'number' and r[3] >= 0 and r[3] <= 1, kind .. ' deltanet accuracy in [0,1]')
    end
  end
  local _, rows = csv.read(out .. '/robustness_scale.csv')
  t.eq(rows[1][1], 1)
  t.eq(rows[10][1], 10)
end)

t.test('loss curve, plots, results and checkpoints are written', function()
  local header, rows = csv.read(out .. '/loss.csv')
  t.eq(header[1], 'step')
  t.eq(#rows, 2, 'two steps of batch 64 from 128 samples')
  for _, name in ipairs({ 'loss', 'acc_vs_scale', 'acc_vs_noise', 'acc_vs_dropout' }) do
    t.ok(file_starts_with(out .. '/' .. name .. '.png', '\137PNG'), name .. '.png is a PNG')
  end
  local f = assert(io.open(out .. '/results.json'))
  local res = json.decode(f:read('*a'))
  f:close()
  t.eq(#res.runs, 2)
  local pv = res.provenance
  t.ok(type(pv) == 'table', 'results.json has a provenance')
  t.ok(pv.efla_version and pv.git_revision and pv.date:match('^%d%d%d%d%-%d%d%-%d%dT'), 'provenance: version, revision, date')
  t.eq(pv.seed, 3)
  t.eq(pv.test_samples, 40)
  t.ok(res.runs[1].about:find('40 test images, seed 3', 1, true), 'runs say what they ran on: ' .. tostring(res.runs[1].about))
  t.ok(log:find('robustness step 32/32', 1, true), 'the robustness evaluation shows progress:\n' .. log)
  for _, m in ipairs({ 'efla', 'deltanet' }) do
    t.ok(file_starts_with(out .. '/' .. m .. '/step-000002.h5', '\137HDF'), m .. ' checkpoint is HDF5')
  end
end)

t.test('eval.lua reproduces the recipe accuracy and skips a corrupt file', function()
  local bad = tmp .. '/corrupt.h5'
  local g = assert(io.open(bad, 'wb'))
  g:write('\137HDF\r\n\26\n this is not really a checkpoint')
  g:close()
  local eout = tmp .. '/eval'
  local c, elog = run(string.format('%s recipes/eval.lua --test-samples 40 --seed 3 --out %s %s/efla/step-000002.h5 %s %s/deltanet/step-000002.h5',
    bin, eout, out, bad, out))
  t.eq(c, 0, elog)
  local header, rows = csv.read(eout .. '/eval.csv')
  t.eq(#rows, 3)
  local col = {}
  for i, h in ipairs(header) do col[h] = i end
  t.ok(rows[2][col.error] ~= '' and rows[2][col.method] == '', 'the corrupt file has an error and no result: ' .. tostring(rows[2][col.error]))
  local _, scale_rows = csv.read(out .. '/robustness_scale.csv')
  t.near(rows[1][col.clean], scale_rows[1][2], 1e-9, 'efla accuracy from the checkpoint')
  t.near(rows[3][col.clean], scale_rows[1][3], 1e-9, 'deltanet accuracy from the checkpoint')
  t.ok(elog:find('skipped'), 'the log says the corrupt file was skipped')
  -- the console table is Markdown: a header row, then a |---|---| rule, then one row per file
  local header_line, rule = elog:match('\n(| file [^\n]*)\n(|[-|]+|)\n')
  t.ok(header_line and rule, 'a Markdown header and rule in:\n' .. elog)
  local _, ncols = header_line:gsub('|', '')
  local _, nrule = rule:gsub('|', '')
  t.eq(nrule, ncols, 'the rule has as many columns as the header')
  local f = assert(io.open(eout .. '/eval.json'))
  local ev = json.decode(f:read('*a'))
  f:close()
  t.ok(ev.provenance and ev.provenance.seed == 3 and ev.provenance.git_revision, 'eval.json has provenance')
  t.eq(ev.rows[1].test_samples, 40)
end)

t.test('--compute: auto is float32 on the cpu; bfloat16 given is printed and recorded', function()
  local checkpoint = require 'efla.checkpoint'
  -- the run above: the default (auto) on the CPU
  t.ok(log:find('device cpu, compute float32', 1, true), 'the start-up line says the compute dtype:\n' .. log)
  local res = json.decode(require('efla.data').read_file(out .. '/results.json'))
  t.eq({ res.args.compute, res.compute, res.runs[1].compute, res.runs[2].compute }, { 'auto', 'float32', 'float32', 'float32' })
  t.eq(checkpoint.info(out .. '/efla/step-000002.h5').meta.compute, 'float32')
  -- a tiny run with the option given
  local out16 = tmp .. '/smnist-bf16'
  local c, log16 = run(string.format('EFLA_PROGRESS=plain %s recipes/smnist.lua --method efla --train-samples 32 --batch 32 '
    .. '--test-samples 8 --compute bfloat16 --out %s', bin, out16))
  t.eq(c, 0, log16)
  t.ok(log16:find('device cpu, compute bfloat16', 1, true), log16)
  local meta = checkpoint.info(out16 .. '/efla/step-000001.h5').meta
  t.eq({ meta.compute, meta.args.compute }, { 'bfloat16', 'bfloat16' })
  local res16 = json.decode(require('efla.data').read_file(out16 .. '/results.json'))
  t.eq({ res16.compute, res16.runs[1].compute }, { 'bfloat16', 'bfloat16' })
end)

t.test('recipes answer --help and reject unknown options', function()
  for _, r in ipairs({ 'smnist', 'eval', 'ablate_keynorm', 'lr_sweep', 'order_sweep', 'mad' }) do
    local c, h = run(bin .. ' recipes/' .. r .. '.lua --help')
    t.eq(c, 0, r .. ' --help')
    t.ok(h:find('usage: efla recipes/' .. r .. '.lua'), r .. ' usage line:\n' .. h)
    if r ~= 'eval' then   -- the training recipes
      t.ok(h:find('--compute VALUE', 1, true) and h:find('(auto|bfloat16|float32) [default: auto]', 1, true),
        r .. ' --help shows --compute:\n' .. h)
    end
  end
  local c, h = run(bin .. ' recipes/smnist.lua --no-such-option')
  t.eq(c, 2)
  t.ok(h:find("unknown option '%-%-no%-such%-option'"), h)
end)

t.done()

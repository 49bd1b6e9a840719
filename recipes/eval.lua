-- recipes/eval.lua: evaluate a batch of checkpoints, however each was trained.
--
--   efla recipes/eval.lua checkpoints/smnist-mnist/*/*.h5
--   efla recipes/eval.lua --suite clean --test-samples 1000 run1/*.h5 run2/*.h5
--
-- Each model is rebuilt from its checkpoint alone (efla.load_model) and tested on the test
-- split of the data set it was trained on. A file that cannot be read or rebuilt gets a
-- row saying why, and the batch goes on. Writes eval.csv, eval.json and, for the
-- robustness suite, one combined plot per corruption to --out.
local efla = require 'efla'
local S = require 'efla.tasks.smnist'
local report = require 'efla.tasks.report'
local csv = require 'efla.csv'

local args = efla.args.parse(arg, {
  name = 'recipes/eval.lua', positional = 'CHECKPOINT.h5...',
  description = 'Evaluate checkpoints on a named suite and tabulate the results.',
  { '--suite', default = 'robustness', choices = { 'robustness', 'clean' }, help = 'what to measure' },
  { '--test-samples', type = 'number', integer = true, min = 0, default = 0, help = 'subsample the test set (0 = all)' },
  { '--dataset', choices = { 'mnist', 'fashion' }, help = 'override the data set recorded in each checkpoint' },
  { '--seed', type = 'number', integer = true, min = 0, default = 1, help = 'seed of the corruptions' },
  { '--device', type = 'device', default = 'cpu', help = 'cpu or cuda[:N]' },
  { '--out', default = 'checkpoints/eval', help = 'where eval.csv, eval.json and the plots go' },
})
if #args._ == 0 then
  io.stderr:write('eval.lua: give at least one checkpoint file (see --help)\n')
  os.exit(2)
end
efla.data.mkdir_p(args.out)

local test_sets = {}
local function test_set(name)
  test_sets[name] = test_sets[name] or S.load(name, 'test', args.test_samples)
  return test_sets[name]
end

local rows, runs = {}, {}
for i, path in ipairs(args._) do
  io.stdout:write(string.format('[%d/%d] %s ... ', i, #args._, path))
  io.stdout:flush()
  local row = { file = path }
  local ok, err = pcall(function()
    local model, ck = efla.load_model(path, { device = S.device_of(args.device) })
    local meta = ck.meta or {}
    row.method = meta.method or '?'
    row.order = tostring(meta.config.order)
    row.key_norm = meta.config.key_norm or '?'
    row.dataset = args.dataset or meta.dataset or (meta.args and meta.args.dataset) or 'mnist'
    row.step = ck.step or 0
    local ds = test_set(row.dataset)
    if args.suite == 'clean' then
      local f = ds:float()
      row.clean = S.accuracy(model, f.images, f.labels, { device = S.device_of(args.device) })
    else
      local results = S.robustness(model, ds, { seed = args.seed, device = S.device_of(args.device) })
      row.results = results
      row.clean = results.scale[1][2]
      runs[#runs + 1] = { name = string.format('%s (%s)', row.method, path:match('[^/]+/[^/]+$') or path), results = results }
    end
  end)
  if ok then
    print(string.format('accuracy %.4f', row.clean))
  else
    row.error = tostring(err):gsub('\n', ' ')
    print('skipped: ' .. row.error)
  end
  rows[#rows + 1] = row
end

-- The table: one row per checkpoint.
local header = { 'file', 'method', 'order', 'key_norm', 'dataset', 'step', 'clean' }
if args.suite == 'robustness' then
  for _, c in ipairs({ 'scale x10', 'noise 0.5', 'noise 1.0', 'drop 0.5', 'drop 0.9' }) do header[#header + 1] = c end
end
header[#header + 1] = 'error'
local function at(r, kind, level)
  for _, e in ipairs(r.results and r.results[kind] or {}) do
    if math.abs(e[1] - level) < 1e-9 then return e[2] end
  end
  return ''
end
local table_rows = {}
for _, r in ipairs(rows) do
  local t = { r.file, r.method or '', r.order or '', r.key_norm or '', r.dataset or '', r.step or '', r.clean or '' }
  if args.suite == 'robustness' then
    for _, kl in ipairs({ { 'scale', 10 }, { 'noise', 0.5 }, { 'noise', 1.0 }, { 'dropout', 0.5 }, { 'dropout', 0.9 } }) do
      t[#t + 1] = at(r, kl[1], kl[2])
    end
  end
  t[#t + 1] = r.error or ''
  table_rows[#table_rows + 1] = t
end
csv.write(args.out .. '/eval.csv', header, table_rows)
report.write_json(args.out .. '/eval.json', { suite = args.suite, rows = rows })

print('')
local widths = {}
for c, h in ipairs(header) do
  widths[c] = #h
  for _, t in ipairs(table_rows) do
    local s = type(t[c]) == 'number' and string.format('%.4g', t[c]) or tostring(t[c])
    widths[c] = math.max(widths[c], math.min(#s, 60))
  end
end
local function line(cells)
  local parts = {}
  for c, v in ipairs(cells) do
    local s = type(v) == 'number' and string.format('%.4g', v) or tostring(v)
    parts[c] = string.format('%-' .. widths[c] .. 's', s:sub(1, 60))
  end
  print('| ' .. table.concat(parts, ' | ') .. ' |')
end
line(header)
for _, t in ipairs(table_rows) do line(t) end

local plots = {}
if #runs > 0 then plots = report.robustness(args.out, runs, 'eval_') end
local failed = 0
for _, r in ipairs(rows) do if r.error then failed = failed + 1 end end
print(string.format('\n%d checkpoint(s) evaluated, %d skipped; wrote %s/eval.csv, %s/eval.json %s', #rows - failed,
  failed, args.out, args.out, table.concat(plots, ' ')))

-- recipes/eval.lua: evaluate a batch of checkpoints, however each was trained.
--
--   efla recipes/eval.lua checkpoints/smnist-mnist/*/*.h5
--   efla recipes/eval.lua --suite clean --test-samples 1000 run1/*.h5 run2/*.h5
--
-- Each model is rebuilt from its checkpoint alone (efla.load_model) and tested on the test
-- split of the data set it was trained on. A file that cannot be read or rebuilt gets a
-- row saying why, and the batch goes on. Writes eval.csv, eval.json and, for the
-- robustness suite, one combined plot per corruption to --out. Language-model checkpoints
-- (from recipes/lm.lua) go to the downstream evaluation of recipes/lm_eval.lua instead (one
-- row per checkpoint in its own table; lm_eval.csv/json/md in --out).
local efla = require 'efla'
local smnist = require 'efla.tasks.smnist'
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
  { '--out', default = efla.data.user_cache_dir() .. '/eval', help = 'where eval.csv, eval.json and the plots go (default: <user cache>/eval, see EFLA_CACHE)' },
  { '--lm-tasks', default = 'ppl,cloze,wordnet,extrap', help = 'for language-model checkpoints: the recipes/lm_eval.lua tasks to run' },
})
if #args._ == 0 then
  io.stderr:write('eval.lua: give at least one checkpoint file (see --help)\n')
  os.exit(2)
end
efla.data.mkdir_p(args.out)

-- Language models: their own suite (efla.eval.suite); the rest stay in this loop.
local lm_model = require 'efla.eval.lm_model'
local lm_files, others = {}, {}
for _, path in ipairs(args._) do
  local ok, info = pcall(require('efla.checkpoint').info, path)
  if ok and lm_model.is_lm(info) then lm_files[#lm_files + 1] = path else others[#others + 1] = path end
end
if #lm_files > 0 then
  local rows, written, md = require('efla.eval.suite').run(lm_files, { device = args.device, out = args.out, tasks = args.lm_tasks })
  print('\n' .. md .. '\n\nwrote ' .. table.concat(written, ' '))
  if #others == 0 then os.exit(0) end
  print('')
end
args._ = others

local test_sets = {}
local function test_set(name)
  test_sets[name] = test_sets[name] or smnist.load(name, 'test', args.test_samples)
  return test_sets[name]
end

local rows, runs = {}, {}
for i, path in ipairs(args._) do
  print(string.format('[%d/%d] %s', i, #args._, path))
  local row = { file = path }
  local ok, err = pcall(function()
    local model, ck = efla.load_model(path, { device = smnist.device_of(args.device) })
    local meta = ck.meta or {}
    row.method = meta.method or '?'
    row.order = tostring(meta.config.order)
    row.key_norm = meta.config.key_norm or '?'
    row.dataset = args.dataset or meta.dataset or (meta.args and meta.args.dataset) or 'mnist'
    row.step = ck.step or 0
    local ds = test_set(row.dataset)
    if args.suite == 'clean' then
      local f = ds:float()
      row.clean = smnist.accuracy(model, f.images, f.labels, { device = smnist.device_of(args.device) })
    else
      local results = smnist.robustness(model, ds, { seed = args.seed, device = smnist.device_of(args.device),
        title = row.method .. ' eval' })
      row.results = results
      row.clean = results.scale[1][2]
      row.test_samples = ds:size()
      runs[#runs + 1] = { path = path, method = row.method, results = results,
        about = string.format('%s, %d test images, seed %d', row.dataset, ds:size(), args.seed) }
    end
  end)
  if ok then
    print(string.format('  accuracy %.4f', row.clean))
  else
    row.error = tostring(err):gsub('\n', ' ')
    print('  skipped: ' .. row.error)
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
report.write_json(args.out .. '/eval.json', { suite = args.suite, rows = rows,
  provenance = report.provenance { seed = args.seed, test_samples = args.test_samples,
    samples_note = '0 samples = the whole split; each row has its own test_samples', dataset = args.dataset } })

print('')
local widths = {}
for c, h in ipairs(header) do
  widths[c] = #h
  for _, t in ipairs(table_rows) do
    local s = type(t[c]) == 'number' and string.format('%.4g', t[c]) or tostring(t[c])
    widths[c] = math.max(widths[c], math.min(#s, 60))
  end
end
-- A Markdown table (pastes into docs as is): | inside a cell is escaped.
local function line(cells)
  local parts = {}
  for c, v in ipairs(cells) do
    local s = type(v) == 'number' and string.format('%.4g', v) or tostring(v)
    s = s:sub(1, 60):gsub('|', '\\|')
    parts[c] = string.format('%-' .. widths[c] .. 's', s)
  end
  print('| ' .. table.concat(parts, ' | ') .. ' |')
end
line(header)
local rule = {}
for c = 1, #header do rule[c] = string.rep('-', math.max(3, widths[c])) end
print('|-' .. table.concat(rule, '-|-') .. '-|')
for _, t in ipairs(table_rows) do line(t) end

-- Legend names: the method and the shortest end of the path that tells the files apart.
local function unique_names(list)
  for depth = 1, 8 do
    local seen, clash = {}, false
    for _, r in ipairs(list) do
      local parts = {}
      for part in r.path:gmatch('[^/]+') do parts[#parts + 1] = part end
      r.name = string.format('%s (%s)', r.method, table.concat(parts, '/', math.max(1, #parts - depth + 1)))
      if seen[r.name] then clash = true end
      seen[r.name] = true
    end
    if not clash then return end
  end
end
local plots = {}
if #runs > 0 then
  unique_names(runs)
  plots = report.robustness(args.out, runs, 'eval_')
end
local failed = 0
for _, r in ipairs(rows) do if r.error then failed = failed + 1 end end
print(string.format('\n%d checkpoint(s) evaluated, %d skipped; wrote %s/eval.csv, %s/eval.json %s', #rows - failed,
  failed, args.out, args.out, table.concat(plots, ' ')))

-- recipes/mad.lua: the MAD synthetic suite (Poli et al. 2024): train a small model from
-- scratch on each task, for EFLA and DeltaNet, and report test accuracy per task.
--
--   efla recipes/mad.lua                                  # reduced CPU scale, all 6 tasks
--   efla recipes/mad.lua --tasks in-context-recall,selective-copying --epochs 8
--   efla recipes/mad.lua --scale paper --device cuda      # MAD's published setting (GPU, mixed precision)
--   efla recipes/mad.lua --device cuda --compute float32  # float32 on the GPU too
--
-- Tasks, their generation rules and the two scales are in docs/EVAL.md. Writes mad.csv,
-- mad.json (with provenance) and mad.md to --out.
local efla = require 'efla'
local mad_suite = require 'efla.eval.mad'
local mad = require 'efla.data.mad'
local data = require 'efla.data'
local csv = require 'efla.csv'
local json = require 'efla.json'
local precision = require 'efla.tasks.precision'

local args = efla.args.parse(arg, {
  name = 'recipes/mad.lua',
  description = 'Train EFLA and DeltaNet from scratch on the MAD synthetic tasks and compare their accuracy.',
  { '--tasks', default = table.concat(mad.TASKS, ','), help = 'comma-separated MAD tasks' },
  { '--methods', default = 'efla,deltanet', help = 'comma-separated: efla, deltanet' },
  { '--scale', default = 'cpu', choices = { 'cpu', 'paper' }, help = "task, model and training sizes: 'cpu' (reduced) or 'paper' (MAD's)" },
  { '--epochs', type = 'number', help = 'training epochs (default: per scale and task)' },
  { '--lr', type = 'number', help = 'peak learning rate (default: per scale)' },
  { '--batch', type = 'number', help = 'batch size (default: per scale)' },
  { '--n-train', type = 'number', help = 'training examples (default: per scale and task)' },
  { '--n-test', type = 'number', help = 'test examples (default: per scale and task)' },
  { '--seed', type = 'number', default = 1, help = 'seed of the data, the initialisation and the batch order' },
  { '--device', default = 'cpu', help = 'cpu or cuda[:N]' },
  precision.option(),   -- --compute auto|bfloat16|float32
  { '--out', default = 'checkpoints/mad', help = 'where mad.csv, mad.json and mad.md go' },
  { '--quiet', type = 'boolean', help = 'plain log lines instead of progress bars' },
})
if args.device ~= 'cpu' then require('efla.tasks.smnist').device_of(args.device) end
local function list(s, known, what)
  local out = {}
  for x in s:gmatch('[^,%s]+') do
    local ok = false
    for _, k in ipairs(known) do if k == x then ok = true end end
    if not ok then
      io.stderr:write(string.format("mad.lua: unknown %s '%s' (known: %s)\n", what, x, table.concat(known, ', ')))
      os.exit(2)
    end
    out[#out + 1] = x
  end
  return out
end
local tasks = list(args.tasks, mad.TASKS, 'task')
local methods = list(args.methods, { 'efla', 'deltanet' }, 'method')
data.mkdir_p(args.out)
local compute = precision.compute_dtype(args.compute, args.device)
print(string.format('mad: %d task(s) x %d method(s), scale %s, seed %d, device %s, compute %s, threads %d',
  #tasks, #methods, args.scale, args.seed, args.device, compute, efla.num_threads()))

local results, t0 = {}, require('efla.progress').wall()
for _, task in ipairs(tasks) do
  for _, method in ipairs(methods) do
    local ok, r = pcall(mad_suite.run, task, method, { scale = args.scale, seed = args.seed, device = args.device,
      epochs = args.epochs, lr = args.lr, batch = args.batch, n_train = args.n_train, n_test = args.n_test, quiet = args.quiet,
      compute = args.compute })
    if not ok then
      io.stderr:write(tostring(r), '\n')
      os.exit(1)
    end
    print(string.format('%-24s %-8s accuracy %.4f (chance %.3f) over %d targets, final loss %.4f, %d steps, %.1f s',
      task, method, r.accuracy, r.chance, r.n_scored, r.final_loss, r.steps, r.seconds))
    results[#results + 1] = r
  end
end

-- the table: one row per task, one accuracy column per method
local header = { 'task', 'seq_len', 'vocab', 'train', 'test', 'epochs' }
for _, m in ipairs(methods) do header[#header + 1] = m end
header[#header + 1] = 'chance'
local by = {}
for _, r in ipairs(results) do by[r.task] = by[r.task] or {}; by[r.task][r.method] = r end
local rows, md = {}, {}
md[1] = '| ' .. table.concat(header, ' | ') .. ' |'
md[2] = '|' .. string.rep('---|', #header)
local sums = {}
for _, task in ipairs(tasks) do
  local any = by[task][methods[1]]
  local row = { task, any.seq_len, any.task_config.vocab_size, any.n_train, any.n_test, any.epochs }
  for _, m in ipairs(methods) do
    row[#row + 1] = by[task][m].accuracy
    sums[m] = (sums[m] or 0) + by[task][m].accuracy
  end
  row[#row + 1] = any.chance
  rows[#rows + 1] = row
  local cells = {}
  for i, v in ipairs(row) do cells[i] = type(v) == 'number' and (v % 1 == 0 and tostring(v) or string.format('%.3f', v)) or v end
  md[#md + 1] = '| ' .. table.concat(cells, ' | ') .. ' |'
end
local mean = { '**mean**', '', '', '', '', '' }
for _, m in ipairs(methods) do mean[#mean + 1] = string.format('%.3f', sums[m] / #tasks) end
mean[#mean + 1] = ''
md[#md + 1] = '| ' .. table.concat(mean, ' | ') .. ' |'

local long = {}
for _, r in ipairs(results) do
  long[#long + 1] = { r.task, r.method, r.accuracy, r.chance, r.n_scored, r.final_loss, r.steps, r.seconds, r.params,
    r.lr, r.epochs, r.batch, r.n_train, r.n_test, r.seq_len, r.task_config.vocab_size, r.compute }
end
csv.write(args.out .. '/mad.csv', { 'task', 'method', 'accuracy', 'chance', 'n_scored', 'final_loss', 'steps', 'seconds',
  'params', 'lr', 'epochs', 'batch', 'n_train', 'n_test', 'seq_len', 'vocab_size', 'compute' }, long)
local text = table.concat(md, '\n')
data.write_atomic(args.out .. '/mad.md', text .. '\n')
local slim = {}
for i, r in ipairs(results) do
  local c = {}
  for k, v in pairs(r.task_config) do if k:sub(1, 1) ~= '_' then c[k] = v end end
  slim[i] = { task = r.task, method = r.method, accuracy = r.accuracy, chance = r.chance, n_scored = r.n_scored,
    final_loss = r.final_loss, steps = r.steps, seconds = r.seconds, params = r.params, lr = r.lr, epochs = r.epochs,
    batch = r.batch, n_train = r.n_train, n_test = r.n_test, model = r.config, task_config = c, compute = r.compute }
end
data.write_atomic(args.out .. '/mad.json', json.encode({
  provenance = { efla_version = efla.version(), date = os.date('!%Y-%m-%dT%H:%M:%SZ'), seed = args.seed,
    scale = args.scale, device = args.device, compute = compute, args = args }, results = slim }) .. '\n')
print('\n' .. text)
print(string.format('\n%d runs in %.0f s; wrote %s/mad.csv, %s/mad.json, %s/mad.md', #results,
  require('efla.progress').wall() - t0, args.out, args.out, args.out))

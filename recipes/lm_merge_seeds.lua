-- recipes/lm_merge_seeds.lua: combine single-seed language-model runs (recipes/lm.lua, one
-- output folder per model and seed, run in parallel or on several machines) and the rows that
-- recipes/lm_eval.lua wrote for their checkpoints into one mean ± std table, a CSV with every
-- seed's value, and the mean validation curve with ±1 std error bars.
--
--   efla recipes/lm.lua --method efla --seed 1 --out runs/efla-s1 ...   (and -s2, -s3, other models)
--   efla recipes/lm_eval.lua --out runs/eval runs/ckpt/*.h5             (checkpoints named <model>-s<seed>.h5)
--   efla recipes/lm_merge_seeds.lua --out runs/merged --eval runs/eval/lm_eval.csv runs/*-s*
--
-- A folder's model label is its name without the trailing -s<seed> (efla-s2 -> efla); its seed
-- is the one results.json recorded. An lm_eval row joins the label and seed of its checkpoint's
-- file name, read the same way.
local efla = require 'efla'
local json = require 'efla.json'
local csv = require 'efla.csv'
local plot = require 'efla.plot'
local seeds = require 'efla.tasks.seeds'

local args = efla.args.parse(arg, {
  name = 'recipes/lm_merge_seeds.lua', positional = 'RUN_FOLDER...',
  description = 'Merge single-seed LM runs (<model>-s<seed> folders of recipes/lm.lua) and their lm_eval rows into mean ± std tables and plots.',
  { '--out', help = 'output folder (required)' },
  { '--eval', help = 'lm_eval.csv files (comma-separated) whose checkpoints are named <model>-s<seed>.h5' },
})
if not args.out or #args._ == 0 then
  io.stderr:write('lm_merge_seeds.lua: give --out and at least one run folder (see --help)\n')
  os.exit(2)
end

-- "runs/efla-r2-s3/" -> "efla-r2", 3 (nil when the name has no -s<seed> suffix)
local function label_of(path)
  local base = path:gsub('/+$', ''):match('([^/]+)$') or path
  base = base:gsub('%.h5$', '')
  local label, seed = base:match('^(.-)%-s(%d+)$')
  return label or base, tonumber(seed)
end

local models, order = {}, {}   -- label -> {seed -> entry}; labels in the order first seen
local function entry(label, seed)
  if not models[label] then models[label], order[#order + 1] = {}, label end
  local e = models[label][seed]
  if not e then e = { seed = seed }; models[label][seed] = e end
  return e
end

for _, dir in ipairs(args._) do
  local text, err = efla.data.read_file(dir .. '/results.json')
  local res = text and json.decode(text)
  local run = res and res.runs and res.runs[1]
  if not run then
    io.stderr:write(string.format('lm_merge_seeds.lua: %s has no readable results.json with a run (%s); skipped\n', dir,
      tostring(err or 'no runs')))
  elseif res.runs[2] then
    io.stderr:write(string.format('lm_merge_seeds.lua: %s holds %d models (--method both?); give one model per folder; skipped\n',
      dir, #res.runs))
  else
    local label = label_of(dir)
    local seed = res.args and res.args.seed
    local e = entry(label, seed)
    if e.run then error(string.format("lm_merge_seeds.lua: model '%s' seed %s appears twice (%s)", label, tostring(seed), dir), 0) end
    e.run = run
  end
end

-- lm_eval columns carried into the table (name in the CSV -> short name here)
local EVAL_COLUMNS = { { 'ppl', 'test ppl' }, { 'cloze acc@10', 'cloze acc@10' }, { 'loss 1x', 'loss 1x' },
  { 'loss 8x', 'loss 8x' } }
local eval_seen = false
for path in tostring(args.eval or ''):gmatch('[^,]+') do
  local header, rows = csv.read(path)
  local col = {}
  for i, name in ipairs(header) do col[name] = i end
  if not col.checkpoint then error('lm_merge_seeds.lua: ' .. path .. ' has no checkpoint column (is it lm_eval.csv?)', 0) end
  for r = 1, #rows do
    local label, seed = label_of(tostring(rows[r][col.checkpoint]))
    if seed and models[label] then
      local e = entry(label, seed)
      e.eval = {}
      for _, c in ipairs(EVAL_COLUMNS) do e.eval[c[2]] = tonumber(rows[r][col[c[1]] or 0] or '') end
      eval_seen = true
    end
  end
end

if #order == 0 then
  io.stderr:write('lm_merge_seeds.lua: no runs found\n')
  os.exit(1)
end

-- one row per model: every metric over its seeds
local function best_bpb(run)
  local best = 0 / 0
  for _, v in ipairs(run.valid or {}) do if not (v.bpb >= best) then best = v.bpb end end
  return best
end
local METRICS = { 'valid bits/byte', 'best valid bits/byte', 'tokens/s' }
if eval_seen then for _, c in ipairs(EVAL_COLUMNS) do METRICS[#METRICS + 1] = c[2] end end

local summary = {}
for _, label in ipairs(order) do
  local list = {}
  for _, e in pairs(models[label]) do if e.run then list[#list + 1] = e end end
  table.sort(list, function(a, b) return a.seed < b.seed end)
  local row = { label = label, seeds = {}, values = {}, parameters = list[1] and list[1].run.parameters }
  for _, m in ipairs(METRICS) do row.values[m] = {} end
  for i, e in ipairs(list) do
    row.seeds[i] = e.seed
    row.values['valid bits/byte'][i] = e.run.bits_per_byte
    row.values['best valid bits/byte'][i] = best_bpb(e.run)
    row.values['tokens/s'][i] = e.run.tokens_per_second
    for _, c in ipairs(EVAL_COLUMNS) do
      if row.values[c[2]] then row.values[c[2]][i] = e.eval and e.eval[c[2]] or 0 / 0 end
    end
  end
  row.runs = list
  summary[#summary + 1] = row
end

efla.data.mkdir_p(args.out)

-- summary.csv: model, parameters, seeds, then per metric: mean, std, one column per seed
local all_seeds = {}
for _, row in ipairs(summary) do for _, s in ipairs(row.seeds) do all_seeds[s] = true end end
local seed_cols = {}
for s in pairs(all_seeds) do seed_cols[#seed_cols + 1] = s end
table.sort(seed_cols)
local header = { 'model', 'parameters', 'seeds' }
for _, m in ipairs(METRICS) do
  header[#header + 1] = m .. ' mean'
  header[#header + 1] = m .. ' std'
  for _, s in ipairs(seed_cols) do header[#header + 1] = m .. ' seed' .. s end
end
local function blank_nan(x) return x == x and x or '' end   -- a metric a seed lacks: an empty field
local rows = {}
for _, row in ipairs(summary) do
  local r = { row.label, row.parameters or '', table.concat(row.seeds, ' ') }
  for _, m in ipairs(METRICS) do
    local mean, std = seeds.mean_std(row.values[m])
    r[#r + 1], r[#r + 2] = blank_nan(mean), blank_nan(std)
    for _, s in ipairs(seed_cols) do
      local v = ''
      for i, rs in ipairs(row.seeds) do if rs == s then v = row.values[m][i] end end
      r[#r + 1] = blank_nan(v)
    end
  end
  rows[#rows + 1] = r
end
csv.write(args.out .. '/summary.csv', header, rows)

-- the markdown table printed and saved
local function cell(values, digits)
  local mean, std = seeds.mean_std(values)
  if mean ~= mean then return '' end
  local n = 0
  for _, v in ipairs(values) do if v == v then n = n + 1 end end
  local text = n < 2 and string.format('%.' .. digits .. 'f', mean)
    or string.format('%.' .. digits .. 'f ± %.' .. digits .. 'f', mean, std)
  return n < #values and string.format('%s (%d of %d seeds)', text, n, #values) or text
end
local DIGITS = { ['tokens/s'] = 0, ['cloze acc@10'] = 3, ['test ppl'] = 3 }
local lines = { '| model | parameters | seeds | ' .. table.concat(METRICS, ' | ') .. ' |',
  '|---|---|---|' .. string.rep('---|', #METRICS) }
for _, row in ipairs(summary) do
  local cells = {}
  for i, m in ipairs(METRICS) do cells[i] = cell(row.values[m], DIGITS[m] or 4) end
  lines[#lines + 1] = string.format('| %s | %s | %s | %s |', row.label, tostring(row.parameters or ''),
    table.concat(row.seeds, ', '), table.concat(cells, ' | '))
end
local md = table.concat(lines, '\n') .. '\n'
efla.sys.write_atomic(args.out .. '/summary.md', md)

-- valid_bpb.png: the mean validation curve of each model over its seeds (error bars: ±1 std);
-- points where not every seed validated are left out
local series = {}
for i, row in ipairs(summary) do
  local x, y, yerr = {}, {}, {}
  local first = row.runs[1].run.valid or {}
  for p, point in ipairs(first) do
    if point.step > 0 then
      local vals = {}
      for s, e in ipairs(row.runs) do
        local v = e.run.valid and e.run.valid[p]
        if v and v.step == point.step then vals[s] = v.bpb end
      end
      if #vals == #row.runs then
        local mean, std = seeds.mean_std(vals)
        x[#x + 1], y[#y + 1], yerr[#yerr + 1] = point.tokens_seen / 1e6, mean, std
      end
    end
  end
  series[#series + 1] = { name = string.format('%s (%d seeds)', row.label, #row.runs), x = x, y = y,
    yerr = #row.runs > 1 and yerr or nil, color = plot.color(i) }
end
local png, why = plot.lines { path = args.out .. '/valid_bpb.png', title = 'validation bits per byte (mean ± std over seeds)',
  xlabel = 'training tokens (millions)', ylabel = 'bits per byte', series = series }

local out = { merged = args._, eval = args.eval, metrics = METRICS, models = {} }
for _, row in ipairs(summary) do
  local m = { label = row.label, parameters = row.parameters, seeds = row.seeds, values = row.values }
  out.models[#out.models + 1] = m
end
efla.sys.write_atomic(args.out .. '/results.json', json.encode(out))

print(md)
print(string.format('wrote %s: summary.md, summary.csv (mean, std, per seed), results.json, %s', args.out,
  png or why))

-- recipes/merge_seeds.lua: combine single-seed sMNIST studies that ran separately (in
-- parallel processes, or on several GPUs) into the mean ± std report that --seeds N writes.
--
--   efla recipes/smnist.lua --method efla --seed 1 --out runs/seed-1 &
--   efla recipes/smnist.lua --method efla --seed 2 --out runs/seed-2 &  ...; wait
--   efla recipes/merge_seeds.lua --out runs runs/seed-*
--
-- Reads each folder's results.json (its seed from the recorded arguments) and groups the runs
-- by name: a run name present for seeds s1, s2, ... becomes one row with those seeds. Writes
-- loss.csv (mean curve), robustness_<kind>.csv (mean, std, per-seed columns), acc_vs_<kind>.png
-- (error bars) and results.json to --out and prints the mean ± std table.
local efla = require 'efla'
local json = require 'efla.json'
local report = require 'efla.tasks.report'
local seeds = require 'efla.tasks.seeds'

local args = efla.args.parse(arg, {
  name = 'recipes/merge_seeds.lua', positional = 'FOLDER...',
  description = 'Merge single-seed sMNIST study folders into mean ± std tables and plots.',
  { '--out', help = 'output folder (required)' },
})
if not args.out or #args._ == 0 then
  io.stderr:write('merge_seeds.lua: give --out and at least one study folder (see --help)\n')
  os.exit(2)
end

local by_name, order = {}, {}
for _, dir in ipairs(args._) do
  local text, err = efla.data.read_file(dir .. '/results.json')
  if not text then
    io.stderr:write(string.format('merge_seeds.lua: %s has no readable results.json (%s); skipped\n', dir, tostring(err)))
  else
    local res = json.decode(text)
    local seed = res.args and res.args.seed
    if type(seed) ~= 'number' or res.seeds then
      io.stderr:write(string.format('merge_seeds.lua: %s is not a single-seed study (no args.seed); skipped\n', dir))
    else
      for _, r in ipairs(res.runs or {}) do
        if not by_name[r.name] then by_name[r.name], order[#order + 1] = {}, r.name end
        local list = by_name[r.name]
        for _, prev in ipairs(list) do
          if prev.seed == seed then error(string.format("merge_seeds.lua: run '%s' seed %d appears twice (%s)", r.name, seed, dir), 0) end
        end
        list[#list + 1] = { seed = seed, run = r }
      end
    end
  end
end
if #order == 0 then
  io.stderr:write('merge_seeds.lua: no runs found\n')
  os.exit(1)
end

local runs = {}
for _, name in ipairs(order) do
  local list = by_name[name]
  table.sort(list, function(a, b) return a.seed < b.seed end)
  local per_seed, seed_list = {}, {}
  for i, e in ipairs(list) do per_seed[i], seed_list[i] = { e.run }, e.seed end
  runs[#runs + 1] = seeds.aggregate(per_seed, seed_list)[1]
end

efla.data.mkdir_p(args.out)
local loss_png, loss_err = report.loss(args.out, runs)
local plots = seeds.write(args.out, runs)
table.insert(plots, 1, loss_png or loss_err)
report.write_json(args.out .. '/results.json', { args = args, merged = args._, runs = runs })
for _, r in ipairs(runs) do print(string.format('%s: seeds %s', r.name, table.concat(r.seeds, ', '))) end
print(seeds.summary_table(runs))
print(string.format('\nwrote %s: loss.csv, robustness_*.csv (mean, std, per seed), results.json, %s', args.out,
  table.concat(plots, ', ')))

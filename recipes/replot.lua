-- recipes/replot.lua: draw the plots of finished runs again from their CSV/JSON files, for
-- runs made where gnuplot was missing (a GPU node, say) or to restyle them.
--
--   efla recipes/replot.lua checkpoints/smnist-mnist checkpoints/lr_sweep
--
-- In each folder: results.json gives loss.png and acc_vs_{scale,noise,dropout}.png;
-- accuracy_vs_lr.csv and accuracy_vs_order.csv give their own plots.
local efla = require 'efla'
local report = require 'efla.tasks.report'
local seeds = require 'efla.tasks.seeds'
local csv = require 'efla.csv'
local json = require 'efla.json'

local args = efla.args.parse(arg, {
  name = 'recipes/replot.lua', positional = 'FOLDER...',
  description = 'Redraw the PNG plots of finished recipe runs from their CSV and JSON files.',
})
if #args._ == 0 then
  io.stderr:write('replot.lua: give at least one output folder (see --help)\n')
  os.exit(2)
end

local exists = efla.data.exists
local function say(what, err) print(what and ('  wrote ' .. what) or ('  ' .. tostring(err))) end

for _, dir in ipairs(args._) do
  print(dir)
  if exists(dir .. '/results.json') then
    local res = json.decode(assert(efla.data.read_file(dir .. '/results.json')))
    local with_history = {}
    for _, r in ipairs(res.runs) do if r.history and #r.history > 0 then with_history[#with_history + 1] = r end end
    if #with_history > 0 then say(report.loss(dir, with_history)) end
    if res.runs[1] and res.runs[1].results and res.runs[1].results.noise then
      -- runs aggregated over --seeds carry std: mean ± std tables and error bars
      local write = res.runs[1].std and seeds.write or report.robustness
      for _, p in ipairs(write(dir, res.runs)) do print('  ' .. p) end
    end
  end
  if exists(dir .. '/accuracy_vs_lr.csv') then
    local _, rows = csv.read(dir .. '/accuracy_vs_lr.csv')
    local by = {}
    for _, r in ipairs(rows) do
      by[r[1]] = by[r[1]] or { name = r[1], x = {}, y = {} }
      table.insert(by[r[1]].x, r[2]); table.insert(by[r[1]].y, r[3])
    end
    local series = {}
    for _, m in ipairs({ 'efla', 'deltanet' }) do if by[m] then series[#series + 1] = by[m] end end
    say(report.lr_plot(dir, series))
  end
  if exists(dir .. '/accuracy_vs_order.csv') then
    local _, rows = csv.read(dir .. '/accuracy_vs_order.csv')
    local xs, clean, s10 = {}, {}, {}
    for i, r in ipairs(rows) do xs[i] = r[1] == 'exact' and 8 or r[1]; clean[i] = r[2]; s10[i] = r[3] end
    say(report.order_plot(dir, xs, clean, s10))
  end
end

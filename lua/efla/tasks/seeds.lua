-- tasks/seeds.lua: the same sMNIST study over several seeds, reported as mean ± standard
-- deviation. The recipes run every seed into <out>/seed-<s>/ (each a complete single-seed
-- study) and then call aggregate() and write() for <out>/ itself:
--
--   robustness_<kind>.csv   level, then per run: <name>_mean, <name>_std, <name>_seed<s>...
--   acc_vs_<kind>.png       mean accuracy with ±1 std error bars
--   loss.csv / loss.png     the mean loss curve (report.loss)
local csv = require 'efla.csv'
local plot = require 'efla.plot'

local seed_study = {}

--- seed_list(first, n) -> {first, first + 1, ..., first + n - 1}; n must be a positive integer.
function seed_study.seed_list(first, n)
  n = n or 1
  if type(n) ~= 'number' or n < 1 or n % 1 ~= 0 then
    error('--seeds must be a positive integer, got ' .. tostring(n), 0)
  end
  local out = {}
  for i = 1, n do out[i] = first + i - 1 end
  return out
end

--- mean_std(values) -> mean, sample standard deviation (n - 1 in the denominator; 0 for a
--- single value). NaN values are skipped; an empty list gives NaN, NaN.
function seed_study.mean_std(values)
  local n, sum = 0, 0
  for _, v in ipairs(values) do if v == v then n, sum = n + 1, sum + v end end
  if n == 0 then return 0 / 0, 0 / 0 end
  local mean, ss = sum / n, 0
  for _, v in ipairs(values) do if v == v then ss = ss + (v - mean) ^ 2 end end
  return mean, n > 1 and math.sqrt(ss / (n - 1)) or 0
end

--- aggregate(per_seed, seeds) -> runs. per_seed[i] is the list of runs of seed seeds[i] (as
--- the single-seed recipes make them: {name, history, results = {kind -> {{level, acc}}}, ...}),
--- the same run names in the same order for every seed. Each returned run keeps the first
--- seed's name, method, lr, config and compute (dtype), and has results = the mean accuracies,
--- std = {kind -> {std per level}}, per_seed = {kind -> {{acc of each seed} per level}},
--- history = the mean loss per step, final_loss = the mean final loss, seconds = the total, seeds.
function seed_study.aggregate(per_seed, seeds)
  if #per_seed == 0 then error('seeds.aggregate: no runs', 2) end
  local out = {}
  for ri, first in ipairs(per_seed[1]) do
    local runs = {}
    for si, list in ipairs(per_seed) do
      local r = list[ri]
      if not r or r.name ~= first.name then
        error(string.format("seeds.aggregate: seed %s has no run '%s' at position %d", tostring(seeds[si]), first.name, ri), 2)
      end
      runs[si] = r
    end
    local agg = { name = first.name, method = first.method, lr = first.lr, config = first.config, compute = first.compute, seeds = seeds,
      results = {}, std = {}, per_seed = {}, history = {}, seconds = 0 }
    for kind, entries in pairs(first.results) do
      agg.results[kind], agg.std[kind], agg.per_seed[kind] = {}, {}, {}
      for li, entry in ipairs(entries) do
        local accs = {}
        for si, r in ipairs(runs) do accs[si] = r.results[kind][li][2] end
        local m, s = seed_study.mean_std(accs)
        agg.results[kind][li], agg.std[kind][li], agg.per_seed[kind][li] = { entry[1], m }, s, accs
      end
    end
    local finals = {}
    for si, r in ipairs(runs) do
      agg.seconds = agg.seconds + (r.seconds or 0)
      finals[si] = r.final_loss or (r.history and r.history[#r.history]) or 0 / 0
      for step, l in ipairs(r.history or {}) do
        agg.history[step] = (agg.history[step] or 0) + l / #runs
      end
    end
    agg.final_loss = seed_study.mean_std(finals)
    out[ri] = agg
  end
  return out
end

local LABELS = { scale = 'intensity scale', noise = 'Gaussian noise std', dropout = 'pixel dropout p' }

--- write(out_dir, runs, prefix) -> list of PNG paths (or gnuplot's messages): for every
--- kind, <prefix>robustness_<kind>.csv with mean, std and per-seed columns and
--- <prefix>acc_vs_<kind>.png with error bars. runs: from aggregate().
function seed_study.write(out_dir, runs, prefix)
  prefix = prefix or ''
  local written = {}
  for _, kind in ipairs({ 'scale', 'noise', 'dropout' }) do
    if runs[1].results[kind] then
      local header, rows, series = { kind }, {}, {}
      for _, r in ipairs(runs) do
        header[#header + 1] = r.name .. '_mean'
        header[#header + 1] = r.name .. '_std'
        for _, s in ipairs(r.seeds) do header[#header + 1] = r.name .. '_seed' .. s end
      end
      for li, entry in ipairs(runs[1].results[kind]) do
        local row = { entry[1] }
        for _, r in ipairs(runs) do
          row[#row + 1] = r.results[kind][li][2]
          row[#row + 1] = r.std[kind][li]
          for si = 1, #r.seeds do row[#row + 1] = r.per_seed[kind][li][si] end
        end
        rows[li] = row
      end
      csv.write(string.format('%s/%srobustness_%s.csv', out_dir, prefix, kind), header, rows)
      for _, r in ipairs(runs) do
        local xs, ys = {}, {}
        for li, entry in ipairs(r.results[kind]) do xs[li], ys[li] = entry[1], entry[2] end
        series[#series + 1] = { name = string.format('%s (mean ± std, %d seeds)', r.name, #r.seeds), x = xs, y = ys,
          yerr = r.std[kind] }
      end
      local png, err = plot.lines { path = string.format('%s/%sacc_vs_%s.png', out_dir, prefix, kind),
        title = 'test accuracy vs ' .. LABELS[kind], xlabel = LABELS[kind], ylabel = 'accuracy',
        series = series, yrange = { 0, 1 } }
      written[#written + 1] = png or err
    end
  end
  return written
end

--- summary_table(runs) -> text: one row per run, mean ± std at clean and the harshest settings.
function seed_study.summary_table(runs) return require('efla.tasks.report').summary_table(runs) end

return seed_study

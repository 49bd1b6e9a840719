-- tasks/report.lua: the files a study writes: loss curves and robustness tables as CSV,
-- PNG plots (gnuplot), a JSON summary, and the summary table printed at the end.
local csv = require 'efla.csv'
local plot = require 'efla.plot'
local json = require 'efla.json'
local data = require 'efla.data'

local report = {}

local LABELS = { scale = 'intensity scale', noise = 'Gaussian noise std', dropout = 'pixel dropout p' }
report.LABELS = LABELS

-- "title (about)" when the runs say what they were run on (run.about: data set, sample
-- counts, seed; see S.describe).
local function titled(title, runs)
  local about = runs[1] and runs[1].about
  return about and (title .. ' (' .. about .. ')') or title
end

--- loss(out_dir, runs): runs = { {name =, history = {...}, about = 'mnist, ...'}, ... } ->
--- loss.csv, loss.png. Each run keeps one colour (plot.color(i)) in every plot.
function report.loss(out_dir, runs)
  local header, rows, series = { 'step' }, {}, {}
  local longest = 0
  for _, r in ipairs(runs) do longest = math.max(longest, #r.history) end
  local smoothed = {}
  for i, r in ipairs(runs) do
    header[#header + 1] = r.name
    header[#header + 1] = r.name .. '_smoothed'
    smoothed[i] = plot.smooth(r.history, math.max(5, math.floor(#r.history / 20)))
  end
  for s = 1, longest do
    local row = { s }
    for i, r in ipairs(runs) do
      row[#row + 1] = r.history[s] or ''
      row[#row + 1] = smoothed[i][s] or ''
    end
    rows[s] = row
  end
  csv.write(out_dir .. '/loss.csv', header, rows)
  for i, r in ipairs(runs) do
    local steps = {}
    for s = 1, #r.history do steps[s] = s end
    series[#series + 1] = { name = r.name .. ' (raw)', x = steps, y = r.history, style = 'lines lw 1', color = plot.color(i) }
    series[#series + 1] = { name = r.name .. ' (smoothed)', x = steps, y = smoothed[i], style = 'lines', color = plot.color(i) }
  end
  return plot.lines { path = out_dir .. '/loss.png', title = titled('training loss', runs), xlabel = 'step',
    ylabel = 'cross-entropy', series = series, points = false }
end

--- robustness(out_dir, runs, prefix): runs = { {name =, results = S.robustness(...)}, ... }
--- -> robustness_<kind>.csv and acc_vs_<kind>.png for each kind.
function report.robustness(out_dir, runs, prefix)
  prefix = prefix or ''
  local written = {}
  for _, kind in ipairs({ 'scale', 'noise', 'dropout' }) do
    if runs[1].results[kind] then
      local header, rows, series = { kind }, {}, {}
      for _, r in ipairs(runs) do header[#header + 1] = r.name end
      for li, entry in ipairs(runs[1].results[kind]) do
        local row = { entry[1] }
        for _, r in ipairs(runs) do row[#row + 1] = r.results[kind][li][2] end
        rows[li] = row
      end
      csv.write(string.format('%s/%srobustness_%s.csv', out_dir, prefix, kind), header, rows)
      for i, r in ipairs(runs) do
        local xs, ys = {}, {}
        for li, entry in ipairs(r.results[kind]) do xs[li], ys[li] = entry[1], entry[2] end
        series[#series + 1] = { name = r.name, x = xs, y = ys, color = plot.color(i) }
      end
      local png, err = plot.lines { path = string.format('%s/%sacc_vs_%s.png', out_dir, prefix, kind),
        title = titled('test accuracy vs ' .. LABELS[kind], runs), xlabel = LABELS[kind], ylabel = 'accuracy',
        series = series, yrange = { 0, 1 } }
      written[#written + 1] = png or err
    end
  end
  return written
end

-- The sweep plots, drawn by the sweep recipes and again by recipes/replot.lua from their CSVs.
--- lr_plot(out_dir, series) -> accuracy_vs_lr.png; series = { {name = method, x = rates, y = accuracies}, ... }
function report.lr_plot(out_dir, series)
  return plot.lines { path = out_dir .. '/accuracy_vs_lr.png', title = 'final accuracy vs learning rate',
    xlabel = 'learning rate', ylabel = 'clean test accuracy', logx = true, yrange = { 0, 1 }, series = series }
end

--- order_plot(out_dir, xs, clean, scale10) -> accuracy_vs_order.png (exact drawn at x = 8)
function report.order_plot(out_dir, xs, clean, scale10)
  return plot.lines { path = out_dir .. '/accuracy_vs_order.png', title = 'accuracy vs integration order (exact drawn at 8)',
    xlabel = 'order', ylabel = 'accuracy', logx = true, yrange = { 0, 1 },
    series = { { name = 'clean', x = xs, y = clean }, { name = 'scale x10', x = xs, y = scale10 } } }
end

--- summary_table(runs) -> text: one row per run: clean accuracy and accuracy at the
--- harshest setting of each corruption; mean ± std when the runs are aggregated over seeds.
function report.summary_table(runs)
  local spread = runs[1] ~= nil and runs[1].std ~= nil   -- aggregated over seeds (tasks/seeds.lua)
  local w = spread and 13 or 9
  local lines = {}
  local function row(cells)
    lines[#lines + 1] = string.format('| %-22s |' .. (' %' .. w .. 's |'):rep(5), unpack(cells))
  end
  row({ spread and 'run (mean ± std)' or 'run', 'clean', 'scale x5', 'scale x10', 'noise 0.5', 'drop 0.5' })
  lines[#lines + 1] = '|' .. string.rep('-', 24) .. ('|' .. string.rep('-', w + 2)):rep(5) .. '|'
  local function at(r, kind, level)
    for li, e in ipairs(r.results[kind] or {}) do
      if math.abs(e[1] - level) < 1e-9 then
        return spread and string.format('%.3f ± %.3f', e[2], r.std[kind][li]) or string.format('%.4f', e[2])
      end
    end
    return '-'
  end
  for _, r in ipairs(runs) do
    row({ r.name, at(r, 'scale', 1), at(r, 'scale', 5), at(r, 'scale', 10), at(r, 'noise', 0.5), at(r, 'dropout', 0.5) })
  end
  return table.concat(lines, '\n')
end

-- The git revision of the checkout efla runs from ('abc1234', '+dirty' when it has
-- uncommitted changes), or nil outside a git checkout (an installed bundle).
local function git_revision()
  local init = package.searchpath('efla', package.path)
  local dir = init and init:match('^(.*)/lua/efla/init%.lua$')
  local rev, dirty = dir and require('efla.sys').git_revision(dir)
  return rev and (rev:sub(1, 12) .. (dirty and '+dirty' or '')) or nil
end

--- provenance([extra]) -> {efla_version, git_revision, date (UTC, ISO 8601), luajit, threads,
--- ...extra}: what a results file needs to say how it was made.
function report.provenance(extra)
  local efla = require 'efla'
  local p = { efla_version = efla.version(), git_revision = git_revision() or 'unknown',
    date = os.date('!%Y-%m-%dT%H:%M:%SZ'), luajit = jit and jit.version or _VERSION, threads = efla.num_threads() }
  for k, v in pairs(extra or {}) do p[k] = v end
  return p
end

--- write_json(path, value): atomic. A table value without a provenance field gets one
--- (report.provenance, plus seed, data set and sample counts from value.args when it has them).
function report.write_json(path, value)
  if type(value) == 'table' and value.provenance == nil then
    local a = type(value.args) == 'table' and value.args or {}
    value.provenance = report.provenance { seed = a.seed, dataset = a.dataset, train_samples = a.train_samples,
      test_samples = a.test_samples, samples_note = a.test_samples ~= nil and '0 samples = the whole split' or nil }
  end
  data.write_atomic(path, json.encode(value) .. '\n')
end

return report

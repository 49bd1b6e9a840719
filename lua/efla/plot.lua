-- plot.lua: line plots to PNG through gnuplot (Debian's gnuplot-nox has pngcairo; no X).
--   plot.lines{path = 'acc_vs_scale.png', title = ..., xlabel = ..., ylabel = ...,
--              series = { {name = 'EFLA', x = {...}, y = {...}}, ... }, logx = false}
-- Legends are taken literally (noenhanced: "ablate_keynorm" keeps its underscore). A
-- series may name its colour (color = '#rrggbb' or an index into plot.PALETTE); series
-- without one get a colour per distinct name in the plot, so "EFLA (raw)" and "EFLA
-- (smoothed)" share EFLA's. A series that repeats an earlier one (same name, same points)
-- is drawn once; a different series under a taken name gets " (2)", " (3)".
--   A series with yerr = {...} (one value per point) is drawn with error bars (y ± yerr).
-- Data goes through a temporary file; gnuplot writes the PNG under a temporary name that
-- efla.sys.commit_temp fsyncs and renames (then fsyncs the folder), so an interrupted plot
-- never leaves a broken image. Returns the path, or nil and a
-- message when gnuplot is missing (plots are optional; the CSVs hold the numbers).
local sys = require 'efla.sys'

local plot = {}

local function has_gnuplot() return sys.which('gnuplot') ~= nil end

local function quote(s) return "'" .. tostring(s):gsub("'", "''") .. "'" end

--- plot.PALETTE: the colours series get in turn (colour-blind-safe, Okabe-Ito order).
plot.PALETTE = { '#0072B2', '#D55E00', '#009E73', '#CC79A7', '#E69F00', '#56B4E9', '#000000', '#F0E442' }

--- plot.color(i) -> the i-th colour of plot.PALETTE (cycling), for callers that want one
--- colour per method across several plots.
function plot.color(i)
  return plot.PALETTE[(i - 1) % #plot.PALETTE + 1]
end

-- The name a colour is keyed on: "EFLA (smoothed)" -> "EFLA".
local function base_name(name)
  return (tostring(name):gsub('%s*%(raw%)$', ''):gsub('%s*%(smoothed%)$', ''))
end

local function same_points(a, b)
  if #a.x ~= #b.x then return false end
  for i = 1, #a.x do
    if a.x[i] ~= b.x[i] or (a.y[i] ~= b.y[i] and a.y[i] == a.y[i]) then return false end
  end
  return true
end

-- The series to draw: exact repeats dropped, clashing names numbered, colours assigned.
--- plot.prepare_series(list) -> the series plot.lines draws: exact repeats dropped,
--- clashing names numbered, a colour on each.
function plot.prepare_series(list)
  local out, by_name, colours, ncolours = {}, {}, {}, 0
  for _, s in ipairs(list) do
    local name = tostring(s.name or '')
    local prev = by_name[name]
    local repeat_of = false
    for _, p in ipairs(prev or {}) do if same_points(p, s) then repeat_of = true end end
    if not repeat_of then
      local shown = name
      if prev then shown = string.format('%s (%d)', name, #prev + 1) end
      by_name[name] = prev or {}
      table.insert(by_name[name], s)
      local key = base_name(shown)
      local colour = s.color
      if type(colour) == 'number' then colour = plot.color(colour) end
      if not colour then
        if not colours[key] then ncolours = ncolours + 1; colours[key] = plot.color(ncolours) end
        colour = colours[key]
      end
      out[#out + 1] = { name = shown, x = s.x, y = s.y, yerr = s.yerr, style = s.style, color = colour }
    end
  end
  return out
end

--- plot.lines{path, title, xlabel, ylabel, series = {{name, x, y [, color, style]}, ...}, logx} -> path, or nil and
--- why (gnuplot missing): a line plot written atomically as PNG (see the top of plot.lua).
function plot.lines(opts)
  if not has_gnuplot() then return nil, 'gnuplot not found (apt-get install gnuplot-nox); skipped ' .. opts.path end
  local series = plot.prepare_series(opts.series)
  local data = opts.path .. '.dat'
  local f = assert(io.open(data, 'w'))
  for si, s in ipairs(series) do
    if si > 1 then f:write('\n\n') end
    for i = 1, #s.x do
      if s.y[i] == s.y[i] then
        if s.yerr then f:write(string.format('%.10g %.10g %.10g\n', s.x[i], s.y[i], s.yerr[i] or 0))
        else f:write(string.format('%.10g %.10g\n', s.x[i], s.y[i])) end
      end
    end
  end
  f:close()
  local png_tmp = sys.temp_name(opts.path)   -- committed over opts.path like every atomic write
  local script = {
    "set terminal pngcairo size " .. (opts.width or 800) .. "," .. (opts.height or 500) .. " noenhanced font 'sans,10'",
    'set output ' .. quote(png_tmp),
    'set title ' .. quote(opts.title or ''),
    'set xlabel ' .. quote(opts.xlabel or ''),
    'set ylabel ' .. quote(opts.ylabel or ''),
    'set grid', 'set key ' .. (opts.key or 'top right'),
  }
  if opts.logx then script[#script + 1] = 'set logscale x' end
  if opts.logy then script[#script + 1] = 'set logscale y' end
  if opts.yrange then script[#script + 1] = string.format('set yrange [%g:%g]', opts.yrange[1], opts.yrange[2]) end
  local parts = {}
  for si, s in ipairs(series) do
    local style = s.style or (s.yerr and 'yerrorlines') or (opts.points == false and 'lines' or 'linespoints')
    if not style:find('lw') then style = style .. ' lw 2' end
    parts[#parts + 1] = string.format("%s index %d with %s lc rgb '%s' title %s", quote(data), si - 1, style, s.color, quote(s.name))
  end
  script[#script + 1] = 'plot ' .. table.concat(parts, ', ')
  local gp = opts.path .. '.gp'
  local g = assert(io.open(gp, 'w'))
  g:write(table.concat(script, '\n'), '\n')
  g:close()
  local ok = os.execute('gnuplot ' .. gp .. ' 2>' .. gp .. '.err')
  if not (ok == 0 or ok == true) then
    os.remove(png_tmp)
    local f = io.open(gp .. '.err')
    local why = f and f:read('*a') or ''
    if f then f:close() end
    os.remove(gp .. '.err')
    return nil, 'gnuplot failed for ' .. opts.path .. ': ' .. why:gsub('%s+$', '')
  end
  os.remove(gp .. '.err')
  os.remove(gp)
  os.remove(data)
  return sys.commit_temp(png_tmp, opts.path)
end

--- smooth(values, window) -> moving average (for noisy loss curves).
function plot.smooth(values, window)
  local out, sum, q = {}, 0, {}
  for i, v in ipairs(values) do
    sum = sum + v
    q[#q + 1] = v
    if #q > window then sum = sum - table.remove(q, 1) end
    out[i] = sum / #q
  end
  return out
end

return plot

-- plot.lua: line plots to PNG through gnuplot (Debian's gnuplot-nox has pngcairo; no X).
--   plot.lines{path = 'acc_vs_scale.png', title = ..., xlabel = ..., ylabel = ...,
--              series = { {name = 'EFLA', x = {...}, y = {...}}, ... }, logx = false}
--   A series with yerr = {...} (one value per point) is drawn with error bars (y ± yerr).
-- Data goes through a temporary file; the PNG is written to a temporary name and renamed,
-- so an interrupted plot never leaves a broken image. Returns the path, or nil and a
-- message when gnuplot is missing (plots are optional; the CSVs hold the numbers).
local plot = {}

local function has_gnuplot()
  local ok = os.execute('command -v gnuplot >/dev/null 2>&1')
  return ok == 0 or ok == true
end

local function quote(s) return "'" .. tostring(s):gsub("'", "''") .. "'" end

function plot.lines(opts)
  if not has_gnuplot() then return nil, 'gnuplot not found (apt-get install gnuplot-nox); skipped ' .. opts.path end
  local data = opts.path .. '.dat'
  local f = assert(io.open(data, 'w'))
  for si, s in ipairs(opts.series) do
    if si > 1 then f:write('\n\n') end
    for i = 1, #s.x do
      if s.y[i] == s.y[i] then
        if s.yerr then f:write(string.format('%.10g %.10g %.10g\n', s.x[i], s.y[i], s.yerr[i] or 0))
        else f:write(string.format('%.10g %.10g\n', s.x[i], s.y[i])) end
      end
    end
  end
  f:close()
  local png_tmp = opts.path .. '.tmp.png'
  local script = {
    "set terminal pngcairo size " .. (opts.width or 800) .. "," .. (opts.height or 500) .. " enhanced font 'sans,10'",
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
  for si, s in ipairs(opts.series) do
    local style = s.style or (s.yerr and 'yerrorlines') or (opts.points == false and 'lines' or 'linespoints')
    if not style:find('lw') then style = style .. ' lw 2' end
    parts[#parts + 1] = string.format('%s index %d with %s title %s', quote(data), si - 1, style, quote(s.name))
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
  assert(os.rename(png_tmp, opts.path))
  return opts.path
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

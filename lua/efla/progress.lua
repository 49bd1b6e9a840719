-- progress.lua: a progress bar for training loops. On a terminal it redraws one line
-- (step/total, a bar, the fields you pass such as loss and tokens/s, elapsed and ETA); when
-- output is not a terminal (a log file, CI) it prints a plain line every `every` seconds.
local sys = require 'efla.sys'

local progress = {}
progress.__index = progress

--- progress.wall() -> monotonic wall-clock seconds, sub-millisecond resolution (for timing).
local wall = sys.clock
progress.wall = wall

--- progress.is_terminal() -> true when stdout is a terminal (EFLA_PROGRESS=plain|bar forces it).
function progress.is_terminal()
  if os.getenv('EFLA_PROGRESS') == 'plain' then return false end
  if os.getenv('EFLA_PROGRESS') == 'bar' then return true end
  return sys.isatty(1)
end

--- progress.fmt_time(seconds) -> 'mm:ss' or 'h:mm:ss' ('--:--' when unknown).
local function fmt_time(s)
  if s ~= s or s == math.huge then return '--:--' end
  s = math.floor(s + 0.5)
  if s >= 3600 then return string.format('%d:%02d:%02d', s / 3600, (s % 3600) / 60, s % 60) end
  return string.format('%02d:%02d', s / 60, s % 60)
end
progress.fmt_time = fmt_time

--- progress.new{total = N, title = 'train', every = 10 (seconds, plain mode), width = 30}
function progress.new(opts)
  local self = setmetatable({}, progress)
  self.total, self.title = opts.total, opts.title or ''
  self.every, self.width = opts.every or 10, opts.width or 24
  self.tty = opts.tty
  if self.tty == nil then self.tty = progress.is_terminal() end
  self.start, self.last_print, self.step = wall(), -math.huge, 0
  self.out = opts.out or io.stdout
  return self
end

local function fields_str(fields)
  if not fields then return '' end
  local parts = {}
  for _, f in ipairs(fields) do parts[#parts + 1] = f[1] .. ' ' .. f[2] end
  return table.concat(parts, '  ')
end

--- update(step, {{'loss', '0.123'}, {'tok/s', '12.3k'}})
function progress:update(step, fields)
  self.step = step
  local t = wall()
  local elapsed = t - self.start
  local eta = step > 0 and elapsed / step * (self.total - step) or math.huge
  if self.tty then
    if t - self.last_print < 0.1 and step < self.total then return end
    local filled = math.floor(self.width * step / math.max(1, self.total))
    local bar = string.rep('#', filled) .. string.rep('.', self.width - filled)
    self.out:write(string.format('\r%s [%s] %d/%d  %s  %s<%s ', self.title, bar, step, self.total,
      fields_str(fields), fmt_time(elapsed), fmt_time(eta)))
    self.out:flush()
  else
    if t - self.last_print < self.every and step < self.total then return end
    self.out:write(string.format('%s step %d/%d  %s  elapsed %s  eta %s\n', self.title, step, self.total,
      fields_str(fields), fmt_time(elapsed), fmt_time(eta)))
    self.out:flush()
  end
  self.last_print = t
end

--- finish() ends the bar's line; returns the elapsed seconds.
function progress:finish()
  if self.tty then self.out:write('\n') end
  self.out:flush()
  return wall() - self.start
end

return progress

-- efla/checkpoint_manager.lua: a folder of checkpoints with retention: the last N saves plus
-- the best one by a metric, listing and the latest (to resume from). The files themselves
-- are efla.checkpoint's (save, info); the file system is efla.sys's.
--
--   local mgr = require('efla.checkpoint').Manager { dir = 'checkpoints/run', keep_last = 3,
--                                                    metric = 'acc', mode = 'max' }
--   local path, is_best = mgr:save(step, contents)      -- dir/step-NNNNNN.h5 (+ best.h5)
--   local resume = mgr:latest()                          -- nil when there is none
local checkpoint = require 'efla.checkpoint'
local sys = require 'efla.sys'
local raise = require('efla.ffi').raise

local function fail(msg) raise(msg) end

local Manager = {}
Manager.__index = Manager

-- The metric's value in a metrics table: a number, or the last number of a list.
local function metric_value(metrics, metric)
  local v = type(metrics) == 'table' and metrics[metric] or nil
  if type(v) == 'table' then v = v[#v] end
  if type(v) == 'cdata' then v = tonumber(v) end
  if type(v) ~= 'number' then return nil end
  return v
end

--- checkpoint_manager.new{dir =, keep_last = N, metric = 'acc', mode = 'max'|'min'}
--- (also checkpoint.Manager{...}): keeps dir/step-NNNNNN.h5 for the last N saves (nil: all)
--- plus the best by metrics[metric], which is also dir/best.h5 (a hard link, or a copy where
--- links fail). Temporary files left by killed runs are removed when a Manager opens the folder.
local function new(opts)
  if type(opts) ~= 'table' or type(opts.dir) ~= 'string' or opts.dir == '' then
    fail("checkpoint.Manager{dir = 'checkpoints/run', keep_last = 3, metric = 'acc', mode = 'max'}: dir is required")
  end
  local keep = opts.keep_last
  if keep ~= nil and (type(keep) ~= 'number' or keep < 0 or keep % 1 ~= 0) then
    fail('checkpoint.Manager: keep_last must be a whole number >= 0 (or nil to keep every checkpoint), got ' .. tostring(keep))
  end
  local mode = opts.mode or 'max'
  if mode ~= 'max' and mode ~= 'min' then fail("checkpoint.Manager: mode must be 'max' or 'min', got " .. tostring(mode)) end
  local self = setmetatable({ dir = opts.dir:gsub('/+$', ''), keep_last = keep, metric = opts.metric, mode = mode }, Manager)
  if self.dir == '' then self.dir = '/' end
  local ok, err = pcall(sys.mkdir_p, self.dir)
  if not ok then fail('checkpoint.Manager: cannot create the folder ' .. self.dir .. ' (' .. tostring(err) .. ')') end
  self:_remove_stale_temporaries()
  -- the best so far, from best.h5 (so a resumed run keeps comparing against it)
  local best = self:best()
  if best and self.metric then
    local info_ok, info = pcall(checkpoint.info, best)
    if info_ok then
      self.best_value = metric_value(info.metrics, self.metric)
      self.best_step = info.step
    end
  end
  return self
end

function Manager:_path(step) return string.format('%s/step-%06d.h5', self.dir, step) end

-- Temporaries ("<name>.tmp-<pid>-<hex>", or best.h5.tmp-<pid> from older versions) whose
-- writer no longer runs.
function Manager:_remove_stale_temporaries()
  for _, name in ipairs(sys.list_dir(self.dir) or {}) do
    local pid = name:match('%.tmp%-(%d+)%-%x+$') or name:match('^best%.h5%.tmp%-(%d+)$')
    pid = tonumber(pid)
    if pid and pid ~= sys.getpid() and not sys.pid_alive(pid) then
      sys.remove(self.dir .. '/' .. name)
    end
  end
end

--- mgr:steps() -> the steps with a checkpoint on disk, ascending.
function Manager:steps()
  local steps = {}
  for _, name in ipairs(sys.list_dir(self.dir) or {}) do
    local s = name:match('^step%-(%d+)%.h5$')
    if s then steps[#steps + 1] = tonumber(s) end
  end
  table.sort(steps)
  return steps
end

--- mgr:latest() -> the path of the newest checkpoint (to resume from), or nil.
function Manager:latest()
  local steps = self:steps()
  if #steps == 0 then return nil end
  return self:_path(steps[#steps])
end

--- mgr:best() -> dir/best.h5 when there is one, else nil.
function Manager:best()
  local p = self.dir .. '/best.h5'
  return sys.exists(p) and p or nil
end

function Manager:_is_better(v)
  if v == nil or v ~= v then return false end
  if self.best_value == nil then return true end
  if self.mode == 'max' then return v > self.best_value end
  return v < self.best_value
end

-- best.h5 -> path: a hard link made under a temporary name and committed over best.h5 like
-- every atomic write (fsync, rename, fsync of the folder); where links fail (another file
-- system), a copy through the atomic writer. best.h5 is always a whole checkpoint.
function Manager:_set_best(path)
  local best = self.dir .. '/best.h5'
  local tmp = sys.temp_name(best)
  if sys.link(path, tmp) then
    local ok, err = pcall(sys.commit_temp, tmp, best)
    if not ok then fail('checkpoint.Manager: ' .. tostring(err)) end
    return
  end
  local ok, err = pcall(sys.write_atomic_parts, best, function(put)
    local f = assert(io.open(path, 'rb'))
    while true do
      local block = f:read(1048576)
      if not block then break end
      put(block)
    end
    f:close()
  end)
  if not ok then fail('checkpoint.Manager: cannot link or copy ' .. path .. ' to ' .. best .. ': ' .. tostring(err)) end
end

--- mgr:save(step, contents) -> path, is_best. Writes dir/step-NNNNNN.h5 atomically, updates
--- best.h5 when metrics[metric] improved, then deletes checkpoints beyond the last
--- keep_last (never the best one).
function Manager:save(step, contents)
  if type(step) ~= 'number' or step < 0 or step % 1 ~= 0 then
    fail('checkpoint.Manager:save: step must be a whole number >= 0, got ' .. tostring(step))
  end
  if type(contents) ~= 'table' then fail('checkpoint.Manager:save: contents must be a table') end
  local value
  if self.metric then
    value = metric_value(contents.metrics, self.metric)
    if value == nil then
      local have = {}
      for k in pairs(type(contents.metrics) == 'table' and contents.metrics or {}) do have[#have + 1] = tostring(k) end
      table.sort(have)
      fail(string.format("checkpoint.Manager:save: metrics.%s is missing or not a number (metrics has: %s); the " ..
        "manager picks the best checkpoint by it", self.metric, #have > 0 and table.concat(have, ', ') or 'nothing'))
    end
  end
  if contents.step == nil then
    local c = {}
    for k, v in pairs(contents) do c[k] = v end
    c.step = step
    contents = c
  end
  local path = self:_path(step)
  checkpoint.save(path, contents)
  local is_best = self.metric ~= nil and self:_is_better(value)
  if is_best then
    self:_set_best(path)
    self.best_value, self.best_step = value, step
  end
  self:_prune()
  return path, is_best
end

function Manager:_prune()
  if self.keep_last == nil then return end
  local steps = self:steps()
  for i = 1, #steps - self.keep_last do
    if steps[i] ~= self.best_step then sys.remove(self:_path(steps[i])) end
  end
end

return { new = new, Manager = Manager }

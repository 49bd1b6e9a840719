-- schedule.lua: learning-rate schedules. A schedule is a pure function of the step,
-- lr(step), plus a counter: sched:step(optimizer) advances the counter and sets the
-- optimiser's rate (call it before each optimizer:step(), so the first update uses
-- lr(1)). Its whole state is plain numbers and strings: state_dict() = {kind =,
-- last_step =, settings = {...}}, which a checkpoint stores.
--
--   Constant{lr}
--   WarmupCosine{lr, total_steps, warmup_steps = 0, min_lr = 0}
--       step <= warmup_steps: lr * step / warmup_steps (linear from 0)
--       then: min_lr + (lr - min_lr) * (1 + cos(pi * p)) / 2, p = (step - warmup_steps) /
--       (total_steps - warmup_steps), clamped to [0, 1] (min_lr from total_steps on)
--   Step{lr, step_size, gamma = 0.1}: lr * gamma^floor((step - 1) / step_size)
-- Lower-case constructors do the same: schedule.constant{...}, warmup_cosine, step.
local class = require 'efla.class'

local schedule = {}

local function need_number(s, key, kind, opt_min)
  local v = s[key]
  if type(v) ~= 'number' or v ~= v or (opt_min and v < opt_min) then
    error(string.format('%s: %s must be a number%s, got %s', kind, key, opt_min and (' >= ' .. opt_min) or '', tostring(v)), 5)
  end
end

--- Schedule: the base of the learning-rate schedules (see the top of schedule.lua).
local Schedule = class.new('Schedule')
schedule.Schedule = Schedule
function Schedule:__init(opts)
  if type(opts) ~= 'table' then error(getmetatable(self).__name .. '{lr = ..., ...}: give a table of settings', 3) end
  self.settings = {}
  for k, v in pairs(opts) do self.settings[k] = v end
  self.last_step = 0
  self:check()
end
--- sched:check(): raises an error naming a bad setting (subclasses check theirs).
function Schedule:check() need_number(self.settings, 'lr', getmetatable(self).__name, 0) end

--- sched:step([optimizer]) -> the new rate: advances one step and sets the optimiser's lr.
function Schedule:step(optimizer)
  self.last_step = self.last_step + 1
  local lr = self:lr(self.last_step)
  if optimizer then optimizer:set_lr(lr) end
  return lr
end
--- sched:get_lr() -> the rate at the current step
function Schedule:get_lr() return self:lr(self.last_step) end

--- sched:state_dict() -> {kind =, last_step =, settings = {...}}: plain values for a checkpoint.
function Schedule:state_dict()
  local settings = {}
  for k, v in pairs(self.settings) do settings[k] = v end
  return { kind = getmetatable(self).__name, last_step = self.last_step, settings = settings }
end
--- sched:load_state_dict(s): restores the step counter and settings from state_dict().
function Schedule:load_state_dict(s)
  local kind = getmetatable(self).__name
  if type(s) ~= 'table' or type(s.last_step) ~= 'number' then
    error(kind .. ':load_state_dict: expected the table state_dict() returned ({kind =, last_step =, settings =})', 2)
  end
  if s.kind and s.kind ~= kind then
    error(string.format('%s:load_state_dict: the state is of a %s schedule', kind, tostring(s.kind)), 2)
  end
  self.last_step = s.last_step
  if s.settings then
    self.settings = {}
    for k, v in pairs(s.settings) do self.settings[k] = v end
  end
end
function Schedule:__tostring()
  local keys, parts = {}, {}
  for k in pairs(self.settings) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do parts[#parts + 1] = k .. '=' .. tostring(self.settings[k]) end
  return string.format('%s{%s} at step %d', getmetatable(self).__name, table.concat(parts, ', '), self.last_step)
end

--- Constant{lr}: the same rate at every step.
schedule.Constant = class.new('Constant', Schedule)
--- sched:lr(step) -> the rate at that step.
function schedule.Constant:lr() return self.settings.lr end

--- WarmupCosine{lr, total_steps, warmup_steps = 0, min_lr = 0}: linear warm-up from 0, then a
--- cosine decay to min_lr at total_steps.
schedule.WarmupCosine = class.new('WarmupCosine', Schedule)
--- sched:check(): checks lr, total_steps, warmup_steps, min_lr.
function schedule.WarmupCosine:check()
  local s = self.settings
  s.warmup_steps, s.min_lr = s.warmup_steps or 0, s.min_lr or 0
  need_number(s, 'lr', 'WarmupCosine', 0)
  need_number(s, 'total_steps', 'WarmupCosine', 1)
  need_number(s, 'warmup_steps', 'WarmupCosine', 0)
  need_number(s, 'min_lr', 'WarmupCosine', 0)
  if s.warmup_steps > s.total_steps then
    error(string.format('WarmupCosine: warmup_steps %d exceeds total_steps %d', s.warmup_steps, s.total_steps), 4)
  end
end
--- sched:lr(step) -> the rate at that step.
function schedule.WarmupCosine:lr(step)
  local s = self.settings
  local warm, total = s.warmup_steps, s.total_steps
  if warm > 0 and step <= warm then return s.lr * step / warm end
  local progress = total > warm and math.min(1, math.max(0, (step - warm) / (total - warm))) or 1
  return s.min_lr + 0.5 * (s.lr - s.min_lr) * (1 + math.cos(math.pi * progress))
end

--- Step{lr, step_size, gamma = 0.1}: lr * gamma^floor((step - 1) / step_size).
schedule.Step = class.new('Step', Schedule)
--- sched:check(): checks lr, step_size, gamma.
function schedule.Step:check()
  local s = self.settings
  s.gamma = s.gamma or 0.1
  need_number(s, 'lr', 'Step', 0)
  need_number(s, 'step_size', 'Step', 1)
  need_number(s, 'gamma', 'Step', 0)
end
--- sched:lr(step) -> the rate at that step.
function schedule.Step:lr(step)
  local s = self.settings
  return s.lr * s.gamma ^ math.floor((math.max(step, 1) - 1) / s.step_size)
end

--- schedule.constant{lr} -> a Constant schedule.
function schedule.constant(opts) return schedule.Constant(opts) end
--- schedule.warmup_cosine{lr, total_steps, warmup_steps, min_lr} -> a WarmupCosine schedule.
function schedule.warmup_cosine(opts) return schedule.WarmupCosine(opts) end
--- schedule.step{lr, step_size, gamma} -> a Step schedule.
function schedule.step(opts) return schedule.Step(opts) end

--- schedule.from_state(sd) -> a schedule rebuilt from a state_dict (e.g. a checkpoint's)
function schedule.from_state(sd)
  local cls = type(sd) == 'table' and schedule[sd.kind]
  if type(cls) ~= 'table' or not class.is_instance(setmetatable({}, cls), Schedule) then
    error("schedule.from_state: unknown schedule kind '" .. tostring(type(sd) == 'table' and sd.kind) ..
      "' (known: Constant, WarmupCosine, Step)", 2)
  end
  local s = cls(sd.settings or {})
  s:load_state_dict(sd)
  return s
end

return schedule

-- schedule.lua: learning-rate schedules. Each is a plain table with a state_dict (its step
-- and settings) and :lr(step) / :step(optimizer) that sets the optimiser's rate.
local class = require 'efla.class'

local schedule = {}

local Schedule = class.new('Schedule')
function Schedule:__init(opts)
  self.settings = opts or {}
  self.last_step = 0
end
--- Advance one step and apply the rate to the optimiser; returns the rate.
function Schedule:step(optimizer)
  self.last_step = self.last_step + 1
  local lr = self:lr(self.last_step)
  if optimizer then optimizer:set_lr(lr) end
  return lr
end
function Schedule:state_dict() return { last_step = self.last_step, kind = getmetatable(self).__name } end
function Schedule:load_state_dict(s) self.last_step = s.last_step end

--- constant{lr}
schedule.Constant = class.new('Constant', Schedule)
function schedule.Constant:lr() return self.settings.lr end

--- warmup_cosine{lr, warmup_steps, total_steps, min_lr = 0}: linear warm-up from 0 to lr,
--- then cosine decay to min_lr at total_steps (held there after).
schedule.WarmupCosine = class.new('WarmupCosine', Schedule)
function schedule.WarmupCosine:lr(step)
  local s = self.settings
  local warm, total, min_lr = s.warmup_steps or 0, assert(s.total_steps, 'WarmupCosine: total_steps is required'), s.min_lr or 0
  if step <= warm and warm > 0 then return s.lr * step / warm end
  local progress = math.min(1, (step - warm) / math.max(1, total - warm))
  return min_lr + 0.5 * (s.lr - min_lr) * (1 + math.cos(math.pi * progress))
end

--- step{lr, step_size, gamma = 0.1}: lr * gamma^floor((step - 1) / step_size)
schedule.Step = class.new('Step', Schedule)
function schedule.Step:lr(step)
  local s = self.settings
  return s.lr * (s.gamma or 0.1) ^ math.floor((step - 1) / assert(s.step_size, 'Step: step_size is required'))
end

return schedule

-- optimizer.lua: the base of efla's optimisers. Parameters come as a module, a list of
-- tensors, or parameter groups ({ {params = {...}, weight_decay = 0}, ... }); frozen
-- parameters (requires_grad = false when the optimiser is made) are left out; every
-- hyperparameter and every buffer lives in plain tables (self.param_groups, self.state)
-- of numbers, booleans and tensors, so that a checkpoint can store them and
-- load_state_dict can restore them exactly.
--
--   opt:zero_grad(); loss:backward(); opt:step()
--   opt:set_lr(lr)                      every group (times its lr_scale, if it has one)
--   opt:state_dict() / opt:load_state_dict(sd)
--
-- A subclass implements update(p, grad, state, group): one parameter's step, run with
-- gradient recording off; `state` is that parameter's table in self.state.
local efla = require 'efla'
local class = require 'efla.class'

--- Optimizer(params, defaults): the base class of SGD, Adam and AdamW (see the top of
--- optimizer.lua for what a subclass implements).
local Optimizer = class.new('Optimizer')

local function fail(msg, level) error(msg, (level or 1) + 1) end
local function shape_str(t) return '[' .. table.concat(t:size(), ',') .. ']' end

function Optimizer:__init(params, defaults)
  local name = getmetatable(self).__name
  if type(params) == 'table' and type(params.parameters) == 'function' then params = params:parameters() end
  if type(params) ~= 'table' or #params == 0 then
    fail(name .. ': give a module, a non-empty list of parameters or a list of parameter groups', 4)
  end
  local groups = efla.is_tensor(params[1]) and { { params = params } } or params
  self.param_groups, self.state, self.defaults = {}, {}, defaults
  local seen, count, frozen = {}, 0, 0
  for gi, g in ipairs(groups) do
    if type(g) ~= 'table' or type(g.params) ~= 'table' then
      fail(string.format('%s: group %d must be a table {params = {...}, ...}', name, gi), 4)
    end
    local group = { params = {} }
    for k, v in pairs(defaults) do group[k] = v end
    for k, v in pairs(g) do if k ~= 'params' then group[k] = v end end
    for pi, p in ipairs(g.params) do
      if not efla.is_tensor(p) then fail(string.format('%s: group %d, parameter %d is a %s, not a tensor', name, gi, pi, type(p)), 4) end
      if not p.is_leaf then
        fail(string.format('%s: group %d, parameter %d %s is not a leaf (it was computed from other tensors; give the parameters themselves)', name, gi, pi, shape_str(p)), 4)
      end
      if seen[p] then fail(string.format('%s: group %d, parameter %d %s appears twice', name, gi, pi, shape_str(p)), 4) end
      seen[p] = true
      -- frozen parameters (requires_grad = false) are skipped: they never get a gradient
      if p.requires_grad then
        group.params[#group.params + 1] = p
        count = count + 1
      else
        frozen = frozen + 1
      end
    end
    self.param_groups[gi] = group
  end
  if count == 0 then
    fail(name .. (frozen > 0 and (': every parameter is frozen (requires_grad = false); unfreeze some with p:requires_grad_() before making the optimiser')
      or ': the parameter groups hold no parameters'), 4)
  end
  for _, g in ipairs(self.param_groups) do self:check_group(g) end
end

--- Subclasses check their hyperparameters here (raise with a clear message).
--- opt:check_group(group): raises an error naming a bad hyperparameter of one group
--- (subclasses check theirs; called when the optimiser is made).
function Optimizer:check_group(group) end

--- Iterate (index, param, group) over every parameter in group order.
function Optimizer:each()
  local out, i = {}, 0
  for _, g in ipairs(self.param_groups) do
    for _, p in ipairs(g.params) do i = i + 1; out[i] = { i, p, g } end
  end
  return out
end

--- opt:zero_grad(): drops the gradient of every parameter.
function Optimizer:zero_grad()
  for _, g in ipairs(self.param_groups) do
    for _, p in ipairs(g.params) do p:zero_grad() end
  end
end

--- opt:set_lr(lr): the learning rate of every group (times group.lr_scale when set).
function Optimizer:set_lr(lr)
  for _, g in ipairs(self.param_groups) do g.lr = lr * (g.lr_scale or 1) end
end

--- opt:get_lr() -> the first group's learning rate
function Optimizer:get_lr() return self.param_groups[1].lr end

local function copy_value(v)
  if efla.is_tensor(v) then return v:detach():clone() end
  return v
end

--- opt:state_dict() -> {param_groups = { {lr =, ..., num_params =}, ... },
---   state = { ["i"] = {step =, exp_avg =, ...} }}: a snapshot (tensors are copies), keyed
--- by the parameter's position in group order. checkpoint.save stores it as is.
function Optimizer:state_dict()
  local groups = {}
  for gi, g in ipairs(self.param_groups) do
    local h = {}
    for k, v in pairs(g) do if k ~= 'params' then h[k] = v end end
    h.num_params = #g.params
    groups[gi] = h
  end
  local state = {}
  for i, s in pairs(self.state) do
    local copy = {}
    for k, v in pairs(s) do copy[k] = copy_value(v) end
    state[tostring(i)] = copy
  end
  return { param_groups = groups, state = state }
end

--- opt:load_state_dict(sd): restores hyperparameters and buffers saved by state_dict
--- (possibly through a checkpoint). Every mismatch is reported at once: group count,
--- parameters per group, buffers whose shape differs from their parameter's.
function Optimizer:load_state_dict(sd)
  local name = getmetatable(self).__name
  if type(sd) ~= 'table' or type(sd.param_groups) ~= 'table' or type(sd.state) ~= 'table' then
    fail(name .. ':load_state_dict: expected the table state_dict() returned ({param_groups =, state =})', 2)
  end
  local problems = {}
  if #sd.param_groups ~= #self.param_groups then
    problems[#problems + 1] = string.format('the state has %d parameter groups, this optimiser %d',
      #sd.param_groups, #self.param_groups)
  end
  for gi, h in ipairs(sd.param_groups) do
    local g = self.param_groups[gi]
    if g and h.num_params and h.num_params ~= #g.params then
      problems[#problems + 1] = string.format('group %d has %d parameters in the state, %d here', gi, h.num_params, #g.params)
    end
  end
  local params = {}
  for _, e in ipairs(self:each()) do params[e[1]] = e[2] end
  local keys = {}
  for k, s in pairs(sd.state) do
    local i = tonumber(k)
    local p = i and params[i]
    if not p then
      problems[#problems + 1] = string.format('state entry %s names no parameter (this optimiser has %d)', tostring(k), #params)
    elseif type(s) ~= 'table' then
      problems[#problems + 1] = string.format('state entry %s is a %s, not a table', tostring(k), type(s))
    else
      keys[#keys + 1] = i
      for bk, v in pairs(s) do
        if efla.is_tensor(v) and shape_str(v) ~= shape_str(p) then
          problems[#problems + 1] = string.format('state %s.%s is %s but parameter %s is %s', tostring(k), tostring(bk),
            shape_str(v), tostring(k), shape_str(p))
        end
      end
    end
  end
  if #problems > 0 then
    table.sort(problems)
    fail(string.format('%s:load_state_dict: the state does not match this optimiser:\n  %s', name, table.concat(problems, '\n  ')), 2)
  end
  for gi, h in ipairs(sd.param_groups) do
    local g = self.param_groups[gi]
    for k, v in pairs(h) do if k ~= 'num_params' and k ~= 'params' then g[k] = v end end
  end
  self.state = {}
  for _, i in ipairs(keys) do
    local p, copy = params[i], {}
    for k, v in pairs(sd.state[tostring(i)] or sd.state[i]) do
      -- buffers come back on the parameter's device (checkpoints load on the cpu)
      copy[k] = efla.is_tensor(v) and v:detach():to(p:device()):contiguous():clone() or v
    end
    self.state[i] = copy
  end
end

--- opt:step([closure]) -> closure's result: updates every parameter that has a gradient.
--- closure (optional) re-evaluates the loss with gradients before the step.
function Optimizer:step(closure)
  local ret
  if closure then ret = efla.enable_grad(closure) end
  efla.no_grad(function()
    for _, e in ipairs(self:each()) do
      local i, p, g = e[1], e[2], e[3]
      local grad = p.grad
      if grad then
        self.state[i] = self.state[i] or {}
        self:update(p, grad, self.state[i], g)
      end
    end
  end)
  return ret
end

--- opt:update(p, grad, state, group): one parameter's step; every optimiser class defines it
--- (the base raises an error).
function Optimizer:update()
  error(getmetatable(self).__name .. ': update() is not implemented', 2)
end

function Optimizer:__tostring()
  local lines = { getmetatable(self).__name .. ' (' }
  for gi, g in ipairs(self.param_groups) do
    local keys = {}
    for k in pairs(g) do if k ~= 'params' then keys[#keys + 1] = k end end
    table.sort(keys)
    local parts = {}
    for _, k in ipairs(keys) do
      local v = g[k]
      if type(v) == 'table' then  -- e.g. names: the first few
        local items = {}
        for i = 1, math.min(#v, 3) do items[i] = tostring(v[i]) end
        if #v > 3 then items[4] = '... (' .. #v .. ')' end
        v = '{' .. table.concat(items, ', ') .. '}'
      end
      parts[#parts + 1] = k .. '=' .. tostring(v)
    end
    lines[#lines + 1] = string.format('  group %d: %d params, %s', gi, #g.params, table.concat(parts, ', '))
  end
  lines[#lines + 1] = ')'
  return table.concat(lines, '\n')
end

return Optimizer

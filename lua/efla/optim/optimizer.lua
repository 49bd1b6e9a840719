-- optimizer.lua: the base of efla's optimisers. Parameters come as a list of tensors or as
-- parameter groups ({ {params = {...}, weight_decay = 0}, ... }); every hyperparameter and
-- every buffer lives in plain tables (self.param_groups, self.state) so that a checkpoint
-- can store them and load_state_dict can restore them exactly.
local efla = require 'efla'
local class = require 'efla.class'

local Optimizer = class.new('Optimizer')

function Optimizer:__init(params, defaults)
  assert(type(params) == 'table' and #params > 0, 'optimizer: give a non-empty list of parameters or of parameter groups')
  local groups = params[1].params and params or { { params = params } }
  self.param_groups, self.state, self.defaults = {}, {}, defaults
  for gi, g in ipairs(groups) do
    local group = { params = g.params }
    for k, v in pairs(defaults) do group[k] = v end
    for k, v in pairs(g) do if k ~= 'params' then group[k] = v end end
    for _, p in ipairs(group.params) do
      if not p.requires_grad then error(string.format('optimizer: group %d holds a tensor that does not require grad', gi), 2) end
    end
    self.param_groups[gi] = group
  end
end

--- Iterate (index, param, group) over every parameter in group order.
function Optimizer:each()
  local out, i = {}, 0
  for _, g in ipairs(self.param_groups) do
    for _, p in ipairs(g.params) do i = i + 1; out[i] = { i, p, g } end
  end
  return out
end

function Optimizer:zero_grad()
  for _, g in ipairs(self.param_groups) do
    for _, p in ipairs(g.params) do p:zero_grad() end
  end
end

--- Set the learning rate of every group (schedules call this).
function Optimizer:set_lr(lr)
  for _, g in ipairs(self.param_groups) do g.lr = lr * (g.lr_scale or 1) end
end

--- Plain tables: hyperparameters per group and per-parameter buffers (tensors, numbers).
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
    for k, v in pairs(s) do copy[k] = type(v) == 'cdata' and v:detach() or v end
    state[tostring(i)] = copy
  end
  return { param_groups = groups, state = state }
end

function Optimizer:load_state_dict(sd)
  if #sd.param_groups ~= #self.param_groups then
    error(string.format('optimizer: the state has %d parameter groups, this optimiser %d', #sd.param_groups, #self.param_groups), 2)
  end
  for gi, h in ipairs(sd.param_groups) do
    local g = self.param_groups[gi]
    if h.num_params and h.num_params ~= #g.params then
      error(string.format('optimizer: group %d has %d parameters in the state, %d here', gi, h.num_params, #g.params), 2)
    end
    for k, v in pairs(h) do if k ~= 'num_params' then g[k] = v end end
  end
  self.state = {}
  for i, s in pairs(sd.state) do
    local copy = {}
    for k, v in pairs(s) do copy[k] = type(v) == 'cdata' and v:clone() or v end
    self.state[tonumber(i)] = copy
  end
end

--- The step every subclass implements: update each parameter that has a gradient.
function Optimizer:step()
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
end

return Optimizer

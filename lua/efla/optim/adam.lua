-- adam.lua: Adam (L2 penalty added to the gradient) and AdamW (decoupled weight decay,
-- Loshchilov & Hutter), both through the fused AdamW kernel (efla/optim/adamw_step.lua). Per parameter,
-- at step t (counting from 1):
--   Adam:  g = grad + wd * p                      AdamW: p = p - lr * wd * p, g = grad
--   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
--   p = p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
-- State per parameter: step (a number), exp_avg = m, exp_avg_sq = v (tensors; float32
-- for bfloat16 parameters, else the parameter's dtype).
-- opt:step() updates, per parameter group, all parameters with a gradient that share a
-- device and a step count and are contiguous in one efla.foreach.adamw_ call (a few kernel
-- launches, the same bits as one call per parameter); the others one by one. Pass
-- {foreach = false} to update every parameter on its own (opt.foreach).
local efla = require 'efla'
local class = require 'efla.class'
local Optimizer = require 'efla.optim.optimizer'
local adamw_step_ = require 'efla.optim.adamw_step'
local foreach = require 'efla.foreach'

local function defaults(opts, wd)
  opts = opts or {}
  local betas = opts.betas or { 0.9, 0.999 }
  return { lr = opts.lr or 1e-3, beta1 = opts.beta1 or betas[1], beta2 = opts.beta2 or betas[2],
    eps = opts.eps or 1e-8, weight_decay = opts.weight_decay or wd }
end

local function check_group(self, g)
  local name = getmetatable(self).__name
  local function bad(what) error(string.format('%s: %s (group settings: lr=%s, betas=(%s, %s), eps=%s, weight_decay=%s)', name,
    what, tostring(g.lr), tostring(g.beta1), tostring(g.beta2), tostring(g.eps), tostring(g.weight_decay)), 6) end
  if type(g.lr) ~= 'number' or not (g.lr >= 0) then bad('lr must be a number >= 0') end
  if type(g.beta1) ~= 'number' or not (g.beta1 >= 0 and g.beta1 < 1) then bad('beta1 must lie in [0, 1)') end
  if type(g.beta2) ~= 'number' or not (g.beta2 >= 0 and g.beta2 < 1) then bad('beta2 must lie in [0, 1)') end
  if type(g.eps) ~= 'number' or not (g.eps >= 0) then bad('eps must be >= 0') end
  if type(g.weight_decay) ~= 'number' or not (g.weight_decay >= 0) then bad('weight_decay must be >= 0') end
end

local function init_state(p, state)
  if not state.exp_avg then
    local o = { dtype = p:dtype() == 'bfloat16' and 'float32' or p:dtype(), device = p:device() }
    state.step = 0
    state.exp_avg = efla.zeros(p:size(), o)
    state.exp_avg_sq = efla.zeros(p:size(), o)
  end
end

local function adam_update(p, grad, state, g, decoupled_wd, coupled_wd)
  init_state(p, state)
  state.step = state.step + 1
  if coupled_wd ~= 0 then grad = grad + p * coupled_wd end
  adamw_step_(p, grad, state.exp_avg, state.exp_avg_sq, g.lr, g.beta1, g.beta2, g.eps, decoupled_wd, state.step)
end

-- true when the multi-tensor op takes (p, grad, m, v) as they are (its dtype rule, contiguity)
local function fits_foreach(p, grad, m, v)
  local dp, dm = p:dtype(), m:dtype()
  local floating = dp == 'float32' or dp == 'float64' or dp == 'bfloat16'
  return floating and grad:dtype() == dp and v:dtype() == dm and (dm == dp or dm == 'float32')
    and p:is_contiguous() and grad:is_contiguous() and m:is_contiguous() and v:is_contiguous()
end

-- opt:step for Adam and AdamW: per group, the parameters that fit go by (device, step) in one
-- foreach.adamw_ call each, the rest through adam_update; self.state is indexed as in
-- Optimizer:each (group order).
local function adam_step(self, closure, decoupled)
  local ret
  if closure then ret = efla.enable_grad(closure) end
  efla.no_grad(function()
    local i = 0
    for _, g in ipairs(self.param_groups) do
      local dwd, cwd = decoupled and g.weight_decay or 0, decoupled and 0 or g.weight_decay
      local buckets, order = {}, {}
      for _, p in ipairs(g.params) do
        i = i + 1
        local grad = p.grad
        if grad then
          local state = self.state[i] or {}
          self.state[i] = state
          init_state(p, state)
          if self.foreach and fits_foreach(p, grad, state.exp_avg, state.exp_avg_sq) then
            local key = p:device() .. '@' .. (state.step + 1)
            local b = buckets[key]
            if not b then
              b = { step = state.step + 1, p = {}, g = {}, m = {}, v = {}, s = {} }
              buckets[key] = b
              order[#order + 1] = key
            end
            local n = #b.p + 1
            b.p[n], b.m[n], b.v[n], b.s[n] = p, state.exp_avg, state.exp_avg_sq, state
            b.g[n] = cwd ~= 0 and grad + p * cwd or grad
          else
            self:update(p, grad, state, g)
          end
        end
      end
      for _, key in ipairs(order) do
        local b = buckets[key]
        foreach.adamw_(b.p, b.g, b.m, b.v, g.lr, g.beta1, g.beta2, g.eps, dwd, b.step)
        for _, st in ipairs(b.s) do st.step = b.step end
      end
    end
  end)
  return ret
end

local function init(self, params, opts, wd)
  Optimizer.__init(self, params, defaults(opts, wd))
  self.foreach = not (opts and opts.foreach == false)
end

--- Adam(params, {lr = 1e-3, betas = {0.9, 0.999}, eps = 1e-8, weight_decay = 0})
--- Adam(params, {lr = 1e-3, betas = {0.9, 0.999}, eps = 1e-8, weight_decay = 0}): Adam with
--- L2 weight decay added to the gradient. params: a module, a list of tensors or parameter
--- groups. Parameters with requires_grad = false are skipped.
local Adam = class.new('Adam', Optimizer)
function Adam:__init(params, opts) init(self, params, opts, 0) end
Adam.check_group = check_group
--- opt:update(p, grad, state, group): one parameter's Adam step (called by opt:step()).
function Adam:update(p, grad, state, g) adam_update(p, grad, state, g, 0, g.weight_decay) end
--- opt:step(closure): one Adam step of every parameter with a gradient (see the top of adam.lua).
function Adam:step(closure) return adam_step(self, closure, false) end

--- AdamW(params, {lr = 1e-3, betas = {0.9, 0.999}, eps = 1e-8, weight_decay = 0.01})
--- AdamW(params, {lr = 1e-3, betas = {0.9, 0.999}, eps = 1e-8, weight_decay = 0.01}): Adam with
--- decoupled weight decay (Loshchilov & Hutter); {foreach = false}: one fused kernel per parameter.
local AdamW = class.new('AdamW', Optimizer)
function AdamW:__init(params, opts) init(self, params, opts, 0.01) end
AdamW.check_group = check_group
--- opt:update(p, grad, state, group): one parameter's AdamW step (called by opt:step()).
function AdamW:update(p, grad, state, g) adam_update(p, grad, state, g, g.weight_decay, 0) end
--- opt:step(closure): one AdamW step of every parameter with a gradient: one multi-tensor
--- call per group and device (efla.foreach.adamw_) for contiguous parameters.
function AdamW:step(closure) return adam_step(self, closure, true) end

return { Adam = Adam, AdamW = AdamW }

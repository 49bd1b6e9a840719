-- adam.lua: Adam (L2 penalty added to the gradient) and AdamW (decoupled weight decay,
-- Loshchilov & Hutter), both through the fused AdamW kernel (efla/optim/adamw_step.lua). Per parameter,
-- at step t (counting from 1):
--   Adam:  g = grad + wd * p                      AdamW: p = p - lr * wd * p, g = grad
--   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
--   p = p - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
-- State per parameter: step (a number), exp_avg = m, exp_avg_sq = v (tensors; float32
-- for bfloat16 parameters, else the parameter's dtype).
local efla = require 'efla'
local class = require 'efla.class'
local Optimizer = require 'efla.optim.optimizer'
local adamw_step_ = require 'efla.optim.adamw_step'

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

local function adam_update(p, grad, state, g, decoupled_wd, coupled_wd)
  if not state.exp_avg then
    local o = { dtype = p:dtype() == 'bfloat16' and 'float32' or p:dtype(), device = p:device() }
    state.step = 0
    state.exp_avg = efla.zeros(p:size(), o)
    state.exp_avg_sq = efla.zeros(p:size(), o)
  end
  state.step = state.step + 1
  if coupled_wd ~= 0 then grad = grad + p * coupled_wd end
  adamw_step_(p, grad, state.exp_avg, state.exp_avg_sq, g.lr, g.beta1, g.beta2, g.eps, decoupled_wd, state.step)
end

--- Adam(params, {lr = 1e-3, betas = {0.9, 0.999}, eps = 1e-8, weight_decay = 0})
--- Adam(params, {lr = 1e-3, betas = {0.9, 0.999}, eps = 1e-8, weight_decay = 0}): Adam with
--- L2 weight decay added to the gradient. params: a module, a list of tensors or parameter
--- groups. Parameters with requires_grad = false are skipped.
local Adam = class.new('Adam', Optimizer)
function Adam:__init(params, opts) Optimizer.__init(self, params, defaults(opts, 0)) end
Adam.check_group = check_group
--- opt:update(p, grad, state, group): one parameter's Adam step (called by opt:step()).
function Adam:update(p, grad, state, g) adam_update(p, grad, state, g, 0, g.weight_decay) end

--- AdamW(params, {lr = 1e-3, betas = {0.9, 0.999}, eps = 1e-8, weight_decay = 0.01})
--- AdamW(params, {lr = 1e-3, betas = {0.9, 0.999}, eps = 1e-8, weight_decay = 0.01}): Adam with
--- decoupled weight decay (Loshchilov & Hutter), one fused kernel per parameter.
local AdamW = class.new('AdamW', Optimizer)
function AdamW:__init(params, opts) Optimizer.__init(self, params, defaults(opts, 0.01)) end
AdamW.check_group = check_group
--- opt:update(p, grad, state, group): one parameter's AdamW step (called by opt:step()).
function AdamW:update(p, grad, state, g) adam_update(p, grad, state, g, g.weight_decay, 0) end

return { Adam = Adam, AdamW = AdamW }

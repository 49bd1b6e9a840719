-- adam.lua: Adam (L2 penalty added to the gradient) and AdamW (decoupled weight decay,
-- Loshchilov & Hutter), both through the fused efla_adamw_step_ kernel:
--   p -= lr*wd*p (AdamW only); m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
--   p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
local efla = require 'efla'
local class = require 'efla.class'
local Optimizer = require 'efla.optim.optimizer'

local function defaults(opts)
  opts = opts or {}
  local betas = opts.betas or { 0.9, 0.999 }
  return { lr = opts.lr or 1e-3, beta1 = betas[1], beta2 = betas[2], eps = opts.eps or 1e-8,
    weight_decay = opts.weight_decay }
end

local function adam_update(p, grad, state, g, decoupled_wd, coupled_wd)
  if not state.exp_avg then
    state.step = 0
    state.exp_avg = efla.zeros(p:size(), { dtype = p:dtype(), device = p:device() })
    state.exp_avg_sq = efla.zeros(p:size(), { dtype = p:dtype(), device = p:device() })
  end
  state.step = state.step + 1
  if coupled_wd ~= 0 then grad = grad + p * coupled_wd end
  efla.adamw_step_(p, grad, state.exp_avg, state.exp_avg_sq, g.lr, g.beta1, g.beta2, g.eps, decoupled_wd, state.step)
end

local Adam = class.new('Adam', Optimizer)
function Adam:__init(params, opts)
  local d = defaults(opts)
  d.weight_decay = d.weight_decay or 0
  Optimizer.__init(self, params, d)
end
function Adam:update(p, grad, state, g) adam_update(p, grad, state, g, 0, g.weight_decay) end

local AdamW = class.new('AdamW', Optimizer)
function AdamW:__init(params, opts)
  local d = defaults(opts)
  d.weight_decay = d.weight_decay or 0.01
  Optimizer.__init(self, params, d)
end
function AdamW:update(p, grad, state, g) adam_update(p, grad, state, g, g.weight_decay, 0) end

return { Adam = Adam, AdamW = AdamW }

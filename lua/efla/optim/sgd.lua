-- sgd.lua: SGD with momentum, Nesterov momentum and (coupled) weight decay, Torch's rules:
--   g = grad + wd * p;  buf = momentum * buf + (1 - dampening) * g;
--   step = nesterov and (g + momentum * buf) or buf;  p = p - lr * step
local class = require 'efla.class'
local Optimizer = require 'efla.optim.optimizer'

local SGD = class.new('SGD', Optimizer)

function SGD:__init(params, opts)
  opts = opts or {}
  assert(opts.lr, 'SGD: lr is required')
  if opts.nesterov and (not opts.momentum or opts.momentum <= 0) then
    error('SGD: nesterov needs momentum > 0', 2)
  end
  Optimizer.__init(self, params, { lr = opts.lr, momentum = opts.momentum or 0, dampening = opts.dampening or 0,
    weight_decay = opts.weight_decay or 0, nesterov = opts.nesterov or false })
end

function SGD:update(p, grad, state, g)
  local d = grad
  if g.weight_decay ~= 0 then d = d + p * g.weight_decay end
  if g.momentum ~= 0 then
    if state.momentum_buffer then
      state.momentum_buffer = state.momentum_buffer * g.momentum + d * (1 - g.dampening)
    else
      state.momentum_buffer = d:clone()
    end
    d = g.nesterov and (d + state.momentum_buffer * g.momentum) or state.momentum_buffer
  end
  p:copy_(p - d * g.lr)
end

return SGD

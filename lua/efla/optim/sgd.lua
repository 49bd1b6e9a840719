-- sgd.lua: SGD with momentum, Nesterov momentum and (coupled) weight decay, Torch's rules:
--   g = grad + wd * p
--   buf = g (first step), then buf = momentum * buf + (1 - dampening) * g
--   d = nesterov and (g + momentum * buf) or buf   (d = g without momentum)
--   p = p - lr * d
-- State per parameter: momentum_buffer (a tensor, only with momentum).
local class = require 'efla.class'
local Optimizer = require 'efla.optim.optimizer'

local SGD = class.new('SGD', Optimizer)

--- SGD(params, {lr, momentum = 0, dampening = 0, weight_decay = 0, nesterov = false})
function SGD:__init(params, opts)
  opts = opts or {}
  if opts.lr == nil then error('SGD: lr is required (SGD(params, {lr = 0.1}))', 3) end
  Optimizer.__init(self, params, { lr = opts.lr, momentum = opts.momentum or 0, dampening = opts.dampening or 0,
    weight_decay = opts.weight_decay or 0, nesterov = opts.nesterov or false })
end

--- opt:check_group(group): checks lr, momentum, dampening, weight_decay of one group.
function SGD:check_group(g)
  local function bad(what) error(string.format('SGD: %s (group settings: lr=%s, momentum=%s, dampening=%s, weight_decay=%s)',
    what, tostring(g.lr), tostring(g.momentum), tostring(g.dampening), tostring(g.weight_decay)), 6) end
  if type(g.lr) ~= 'number' or not (g.lr >= 0) then bad('lr must be a number >= 0') end
  if type(g.momentum) ~= 'number' or not (g.momentum >= 0) then bad('momentum must be >= 0') end
  if type(g.weight_decay) ~= 'number' or not (g.weight_decay >= 0) then bad('weight_decay must be >= 0') end
  if g.nesterov and (g.momentum <= 0 or g.dampening ~= 0) then bad('nesterov needs momentum > 0 and dampening = 0') end
end

--- opt:update(p, grad, state, group): one parameter's SGD step (called by opt:step()).
function SGD:update(p, grad, state, g)
  local d = grad
  if g.weight_decay ~= 0 then d = d + p * g.weight_decay end
  if g.momentum ~= 0 then
    local buf = state.momentum_buffer
    if buf then
      buf:mul_(g.momentum):add_(d * (1 - g.dampening))
    else
      buf = d:detach():clone()
      state.momentum_buffer = buf
    end
    d = g.nesterov and (d + buf * g.momentum) or buf
  end
  p:sub_(d * g.lr)
end

return SGD

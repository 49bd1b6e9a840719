-- efla.optim: optimisers, gradient clipping, learning-rate schedules, parameter groups.
local efla = require 'efla'
local optim = {}
optim.Optimizer = require 'efla.optim.optimizer'
optim.SGD = require 'efla.optim.sgd'
local adam = require 'efla.optim.adam'
optim.Adam, optim.AdamW = adam.Adam, adam.AdamW
optim.schedule = require 'efla.optim.schedule'

--- clip_grad_norm(params, max_norm) -> the total norm before clipping. Scales every
--- gradient by max_norm / total when total exceeds max_norm.
function optim.clip_grad_norm(params, max_norm)
  local total = 0
  for _, p in ipairs(params) do
    local g = p.grad
    if g then total = total + g:double():square():sum():item() end
  end
  total = math.sqrt(total)
  if max_norm and total > max_norm then
    local coef = max_norm / (total + 1e-6)
    efla.no_grad(function()
      for _, p in ipairs(params) do
        local g = p.grad
        if g then g:copy_(g * coef) end
      end
    end)
  end
  return total
end

--- param_groups(model, {weight_decay = wd}) -> two groups: weights that decay, and biases,
--- norm weights and other 1-d parameters that don't (the usual AdamW practice).
function optim.param_groups(model, opts)
  local decay, no_decay = {}, {}
  for _, np in ipairs(model:named_parameters()) do
    local name, p = np[1], np[2]
    if p:dim() < 2 or name:find('norm') or name:match('bias$') then
      no_decay[#no_decay + 1] = p
    else
      decay[#decay + 1] = p
    end
  end
  local groups = {}
  if #decay > 0 then groups[#groups + 1] = { params = decay, weight_decay = (opts and opts.weight_decay) or 0.01 } end
  if #no_decay > 0 then groups[#groups + 1] = { params = no_decay, weight_decay = 0 } end
  return groups
end

return optim

-- init_fns.lua: parameter initialisations, drawn from efla's seeded global generator
-- (efla.manual_seed(s) makes them reproducible). Each fills `t` in place and returns it.
local efla = require 'efla'
local init = {}

--- Xavier/Glorot uniform: U(-a, a), a = gain * sqrt(6 / (fan_in + fan_out)), for a
--- [fan_out, fan_in] weight.
function init.xavier_uniform(t, gain)
  gain = gain or 1
  local fan_out, fan_in = t:size(1), t:dim() > 1 and t:size(2) or 1
  local a = gain * math.sqrt(6 / (fan_in + fan_out))
  efla.no_grad(function()
    t:copy_(efla.rand(t:size(), { dtype = t:dtype() }) * (2 * a) - a)
  end)
  return t
end

--- N(0, std^2).
function init.normal(t, std)
  std = std or 0.02
  efla.no_grad(function() t:copy_(efla.randn(t:size(), { dtype = t:dtype() }) * std) end)
  return t
end

--- U(-bound, bound).
function init.uniform(t, bound)
  efla.no_grad(function() t:copy_(efla.rand(t:size(), { dtype = t:dtype() }) * (2 * bound) - bound) end)
  return t
end

function init.zeros(t) efla.no_grad(function() t:zero_() end) return t end
function init.constant(t, value) efla.no_grad(function() t:fill_(value) end) return t end

return init

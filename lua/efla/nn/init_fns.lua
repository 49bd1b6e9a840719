-- init_fns.lua (efla.nn.init): parameter initialisations. Each fills `t` in place (with
-- gradient recording off) and returns it. The values come from efla's global Philox
-- generator, so efla.manual_seed(s) before building a model makes its initial weights
-- reproducible, on any device.
--
--   xavier_uniform(t [, gain=1])   U(-a, a), a = gain * sqrt(6 / (fan_in + fan_out))
--   xavier_normal(t [, gain=1])    N(0, s^2), s = gain * sqrt(2 / (fan_in + fan_out))
--   normal(t [, std=0.02 [, mean=0]])
--   uniform(t, bound) or uniform(t, low, high)
--   kaiming_uniform(t [, a=0])    U(-b, b), b = sqrt(6 / ((1 + a^2) fan_in)); a = sqrt(5)
--                                 gives PyTorch's nn.Linear default U(-1/sqrt(fan_in), 1/sqrt(fan_in))
--   torch_linear(weight [, bias])  PyTorch's nn.Linear default: both U(-1/sqrt(fan_in), +)
--   zeros(t), ones(t), constant(t, value)
--
-- Fans follow PyTorch: for a weight [out, in, k...], fan_in = in * k..., fan_out = out * k...
local efla = require 'efla'
local init = {}

local function check_tensor(t, fn)
  if not efla.is_tensor(t) then error(string.format('nn.init.%s: expected a tensor, got %s', fn, type(t)), 3) end
  if not t:is_floating_point() then error(string.format('nn.init.%s: expected a floating-point tensor, got %s', fn, t:dtype()), 3) end
end

-- A fresh draw of t's shape on t's device (bfloat16 is drawn in float32 and rounded by copy_).
local function draw(kind, t)
  local dt = t:dtype() == 'bfloat16' and 'float32' or t:dtype()
  return efla[kind](t:size(), { dtype = dt, device = t:device() })
end

local function fill(t, values)
  efla.no_grad(function() t:copy_(values) end)
  return t
end

--- init.fans(t) -> fan_in, fan_out
function init.fans(t)
  if t:dim() < 2 then
    error(string.format('nn.init: fan_in and fan_out need a tensor of at least 2 dims, got shape [%s]',
      table.concat(t:size(), ',')), 3)
  end
  local receptive = 1
  for d = 3, t:dim() do receptive = receptive * t:size(d) end
  return t:size(2) * receptive, t:size(1) * receptive
end

--- init.xavier_uniform(t [, gain=1]) -> t: U(-a, a) in place, a = gain * sqrt(6 / (fan_in + fan_out)).
function init.xavier_uniform(t, gain)
  check_tensor(t, 'xavier_uniform')
  local fan_in, fan_out = init.fans(t)
  local a = (gain or 1) * math.sqrt(6 / (fan_in + fan_out))
  return fill(t, draw('rand', t) * (2 * a) - a)
end

--- init.xavier_normal(t [, gain=1]) -> t: N(0, s^2) in place, s = gain * sqrt(2 / (fan_in + fan_out)).
function init.xavier_normal(t, gain)
  check_tensor(t, 'xavier_normal')
  local fan_in, fan_out = init.fans(t)
  return fill(t, draw('randn', t) * ((gain or 1) * math.sqrt(2 / (fan_in + fan_out))))
end

--- init.normal(t [, std=0.02 [, mean=0]]) -> t: N(mean, std^2) in place.
function init.normal(t, std, mean)
  check_tensor(t, 'normal')
  return fill(t, draw('randn', t) * (std or 0.02) + (mean or 0))
end

--- init.uniform(t, bound) or init.uniform(t, low, high) -> t: uniform values in place.
function init.uniform(t, a, b)
  check_tensor(t, 'uniform')
  if a == nil then error('nn.init.uniform(t, bound) or (t, low, high): give a bound', 2) end
  local low, high = b and a or -a, b or a
  return fill(t, draw('rand', t) * (high - low) + low)
end

--- init.kaiming_uniform(t [, a]) -> t: PyTorch's kaiming_uniform_ in place, U(-b, b) with
--- b = sqrt(6 / ((1 + a^2) fan_in)) (a: the negative slope, 0 by default).
function init.kaiming_uniform(t, a)
  check_tensor(t, 'kaiming_uniform')
  local fan_in = init.fans(t)
  local bound = math.sqrt(6 / ((1 + (a or 0) ^ 2) * fan_in))
  return fill(t, draw('rand', t) * (2 * bound) - bound)
end

--- init.torch_linear(weight [, bias]) -> weight: nn.Linear's default initialisation in PyTorch:
--- kaiming_uniform(weight, sqrt(5)), and the bias from the weight's fan-in, U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
function init.torch_linear(weight, bias)
  init.kaiming_uniform(weight, math.sqrt(5))
  if bias then init.uniform(bias, 1 / math.sqrt((init.fans(weight)))) end
  return weight
end

--- init.zeros(t) -> t: zeros in place.
function init.zeros(t) check_tensor(t, 'zeros'); efla.no_grad(function() t:zero_() end) return t end
--- init.ones(t) -> t: ones in place.
function init.ones(t) check_tensor(t, 'ones'); efla.no_grad(function() t:fill_(1) end) return t end
--- init.constant(t, value) -> t: every element = value, in place.
function init.constant(t, value)
  check_tensor(t, 'constant')
  efla.no_grad(function() t:fill_(value) end)
  return t
end

return init

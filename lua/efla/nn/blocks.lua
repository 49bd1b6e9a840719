-- blocks.lua: SwiGLU MLP and the causal depthwise short convolution of DeltaNet layers.
local efla = require 'efla'
local class = require 'efla.class'
local Module = require 'efla.nn.module'
local layers = require 'efla.nn.layers'
local init = require 'efla.nn.init_fns'

local blocks = {}

--- SwiGLU(dim, hidden): down(silu(gate(x)) * up(x)); hidden defaults to 8/3 * dim
--- rounded up to a multiple of 8.
blocks.SwiGLU = class.new('SwiGLU', Module)
function blocks.SwiGLU:__init(dim, hidden, opts)
  Module.__init(self)
  hidden = hidden or math.ceil(dim * 8 / 3 / 8) * 8
  self.dim, self.hidden = dim, hidden
  self:add_module('gate', layers.Linear(dim, hidden, { bias = false, dtype = opts and opts.dtype }))
  self:add_module('up', layers.Linear(dim, hidden, { bias = false, dtype = opts and opts.dtype }))
  self:add_module('down', layers.Linear(hidden, dim, { bias = false, dtype = opts and opts.dtype }))
end
function blocks.SwiGLU:forward(x)
  return self.down:forward(self.gate:forward(x):silu() * self.up:forward(x))
end
function blocks.SwiGLU:extra_repr() return string.format('%d -> %d -> %d', self.dim, self.hidden, self.dim) end

--- ShortConv(channels, {kernel = 4, activation = 'silu'|nil, bias = false}): a causal
--- depthwise convolution along time of x [B, T, C]: y[t] = sum_j w[:, j] * x[t - K + 1 + j].
--- Built from pad + narrow + multiply-add, so autograd differentiates it as is.
blocks.ShortConv = class.new('ShortConv', Module)
function blocks.ShortConv:__init(channels, opts)
  Module.__init(self)
  opts = opts or {}
  self.channels, self.kernel = channels, opts.kernel or 4
  self.activation = opts.activation
  local w = efla.empty({ channels, self.kernel }, { dtype = opts.dtype or efla.get_default_dtype() })
  self:register_parameter('weight', init.uniform(w, 1 / math.sqrt(self.kernel)))
  if opts.bias then self:register_parameter('bias', efla.zeros({ channels }, { dtype = w:dtype() })) end
end
function blocks.ShortConv:forward(x)
  local B, T, C, K = x:size(1), x:size(2), x:size(3), self.kernel
  local pad = efla.zeros({ B, K - 1, C }, { dtype = x:dtype(), device = x:device() })
  local xp = efla.cat({ pad, x }, 2)
  local y
  for j = 1, K do
    local term = xp:narrow(2, j, T) * self.weight:select(2, j)
    y = y and (y + term) or term
  end
  if self.bias then y = y + self.bias end
  if self.activation == 'silu' then y = y:silu() end
  return y
end
function blocks.ShortConv:extra_repr()
  return string.format('%d, kernel=%d%s', self.channels, self.kernel, self.activation and (', ' .. self.activation) or '')
end

return blocks

-- blocks.lua: the SwiGLU MLP and the causal depthwise short convolution of DeltaNet layers.
local efla = require 'efla'
local class = require 'efla.class'
local Module = require 'efla.nn.module'
local layers = require 'efla.nn.layers'
local init = require 'efla.nn.init_fns'
local fused = require 'efla.nn.fused'
local drop = require('efla.nn.temporaries').drop

local blocks = {}

--- SwiGLU(dim [, hidden [, {dtype}]]): down(silu(gate(x)) * up(x)), no biases; hidden
--- defaults to 8/3 * dim rounded up to a multiple of 8 (the same parameter count as a
--- 4x GELU MLP).
blocks.SwiGLU = class.new('SwiGLU', Module)
function blocks.SwiGLU:__init(dim, hidden, opts)
  Module.__init(self)
  if type(dim) ~= 'number' or dim < 1 or dim % 1 ~= 0 then
    error('SwiGLU(dim [, hidden]): dim must be a positive integer, got ' .. tostring(dim), 3)
  end
  hidden = hidden or math.ceil(dim * 8 / 3 / 8) * 8
  self.dim, self.hidden = dim, hidden
  local o = { bias = false, dtype = opts and opts.dtype }
  self:add_module('gate', layers.Linear(dim, hidden, o))
  self:add_module('up', layers.Linear(dim, hidden, o))
  self:add_module('down', layers.Linear(hidden, dim, o))
end
function blocks.SwiGLU:forward(x)
  local g, u = self.gate:forward(x), self.up:forward(x)
  -- fused: one node for silu(gate) * up and the down projection that keeps gate and up only
  -- (the composed ops also keep silu(gate) and the product)
  local y
  if fused.on(g) and not self.down.bias then
    local w = self.down:cast(self.down.weight)
    y = fused.swiglu_linear(g, u, w)
    drop({ x, y, self.down.weight }, w)
  else
    local a = g:silu()
    local h = a * u
    y = self.down:forward(h)
    drop({ x, y }, a, h)
  end
  -- gate and up are saved by the node; their boxes go now (efla.nn.temporaries)
  drop({ x, y }, g, u)
  return y
end
function blocks.SwiGLU:extra_repr() return string.format('%d -> %d -> %d', self.dim, self.hidden, self.dim) end

--- ShortConv(channels, {kernel = 4, activation = 'silu'|nil, bias = false, dtype}): a
--- causal depthwise convolution along time of x [B, T, C]:
---   y[t, c] = act(sum_{j=1..K} w[c, j] * x[t - K + j, c] + b[c])     (x[s] = 0 for s < 1)
--- The weight [C, K] starts U(-1/sqrt(K), 1/sqrt(K)).
---
--- forward(x [, cache]) -> y, new_cache. cache [B, K-1, C] holds the K-1 inputs before x
--- (zeros when nil), so a sequence fed piece by piece, each call given the previous
--- call's new_cache, gives the same y as one call on the whole sequence (recurrent
--- inference). Built from cat + narrow + multiply-add, so autograd differentiates it as is.
blocks.ShortConv = class.new('ShortConv', Module)
function blocks.ShortConv:__init(channels, opts)
  Module.__init(self)
  opts = opts or {}
  if type(channels) ~= 'number' or channels < 1 or channels % 1 ~= 0 then
    error('ShortConv(channels): channels must be a positive integer, got ' .. tostring(channels), 3)
  end
  self.channels, self.kernel = channels, opts.kernel or 4
  if type(self.kernel) ~= 'number' or self.kernel < 1 or self.kernel % 1 ~= 0 then
    error('ShortConv: kernel must be a positive integer, got ' .. tostring(self.kernel), 3)
  end
  if opts.activation ~= nil and opts.activation ~= 'silu' then
    error("ShortConv: activation must be 'silu' or nil, got " .. tostring(opts.activation), 3)
  end
  self.activation = opts.activation
  local dt = opts.dtype or efla.get_default_dtype()
  self:register_parameter('weight', init.uniform(efla.empty({ channels, self.kernel }, { dtype = dt }), 1 / math.sqrt(self.kernel)))
  if opts.bias then self:register_parameter('bias', efla.zeros({ channels }, { dtype = dt })) end
end

function blocks.ShortConv:forward(x, cache)
  if not efla.is_tensor(x) or x:dim() ~= 3 or x:size(3) ~= self.channels then
    error(string.format('ShortConv(%d): expected x [B, T, %d], got %s', self.channels, self.channels,
      efla.is_tensor(x) and ('[' .. table.concat(x:size(), ',') .. ']') or type(x)), 2)
  end
  local B, T, C, K = x:size(1), x:size(2), x:size(3), self.kernel
  x = self:cast(x)
  if fused.on(x) then return self:forward_fused(x, cache) end
  local xp = x
  if K > 1 then
    if cache == nil then
      cache = efla.zeros({ B, K - 1, C }, { dtype = x:dtype(), device = x:device() })
    elseif not efla.is_tensor(cache) or cache:dim() ~= 3 or cache:size(1) ~= B or cache:size(2) ~= K - 1 or cache:size(3) ~= C then
      error(string.format('ShortConv(%d): the cache must be [B, K-1, C] = [%d,%d,%d], got %s', C, B, K - 1, C,
        efla.is_tensor(cache) and ('[' .. table.concat(cache:size(), ',') .. ']') or type(cache)), 2)
    end
    xp = efla.cat({ cache, x }, 2)
  end
  local y
  for j = 1, K do
    local term = xp:narrow(2, j, T) * self:cast(self.weight):select(2, j)
    y = y and (y + term) or term
  end
  if self.bias then y = y + self:cast(self.bias) end
  if self.activation == 'silu' then y = y:silu() end
  -- a copy, not a view: a view would keep the whole [B, T, C] input alive as long as the cache
  local new_cache
  if K > 1 then
    local tail = xp:narrow(2, T + 1, K - 1)
    new_cache = tail:contiguous()
    drop({ x, new_cache }, tail)   -- the view's box pins xp too
  end
  return y, new_cache
end
--- conv:forward_fused(x [, cache]) -> y, new_cache: the forward as one fused node
--- (core/ops_fused.c) that saves x and the weights and recomputes the pre-activation in its
--- backward; no padded copy of x is made. forward() takes it whenever fused layers are on.
function blocks.ShortConv:forward_fused(x, cache)
  local B, T, C, K = x:size(1), x:size(2), x:size(3), self.kernel
  if cache ~= nil and (not efla.is_tensor(cache) or cache:dim() ~= 3 or cache:size(1) ~= B or cache:size(2) ~= K - 1 or cache:size(3) ~= C) then
    error(string.format('ShortConv(%d): the cache must be [B, K-1, C] = [%d,%d,%d], got %s', C, B, K - 1, C,
      efla.is_tensor(cache) and ('[' .. table.concat(cache:size(), ',') .. ']') or type(cache)), 3)
  end
  cache = self:cast(cache)
  local y = fused.short_conv(x, self:cast(self.weight), self:cast(self.bias), cache, self.activation == 'silu')
  local new_cache
  if K > 1 then
    if T >= K - 1 then
      -- a copy, not a view: a view would keep the whole [B, T, C] input (the projection) alive as
      -- long as the cache, e.g. until the collector finds the states a training loss ignores
      local tail = x:narrow(2, T - K + 2, K - 1)
      new_cache = tail:contiguous()
      drop({ x, new_cache }, tail)   -- the view's box pins x too
    else
      cache = cache or efla.zeros({ B, K - 1, C }, { dtype = x:dtype(), device = x:device() })
      new_cache = efla.cat({ cache, x }, 2):narrow(2, T + 1, K - 1)
    end
  end
  return y, new_cache
end

function blocks.ShortConv:extra_repr()
  return string.format('%d, kernel=%d%s%s', self.channels, self.kernel, self.activation and (', ' .. self.activation) or '',
    self.bias and ', bias' or '')
end

return blocks

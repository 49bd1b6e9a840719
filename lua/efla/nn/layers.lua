-- layers.lua: the basic modules: Linear, Embedding, LayerNorm, RMSNorm, Dropout, the
-- activations, Sequential and Residual.
local efla = require 'efla'
local class = require 'efla.class'
local Module = require 'efla.nn.module'
local init = require 'efla.nn.init_fns'

local nn = {}

local function dtype_of(opts) return (opts and opts.dtype) or efla.get_default_dtype() end

--- Linear(in, out, {bias = true, dtype}): y = x W^T + b, W [out, in] (xavier uniform), b zeros.
nn.Linear = class.new('Linear', Module)
function nn.Linear:__init(in_features, out_features, opts)
  Module.__init(self)
  opts = opts or {}
  assert(type(in_features) == 'number' and type(out_features) == 'number',
    'Linear(in_features, out_features): sizes must be numbers')
  self.in_features, self.out_features = in_features, out_features
  self:register_parameter('weight', init.xavier_uniform(efla.empty({ out_features, in_features }, { dtype = dtype_of(opts) })))
  if opts.bias ~= false then
    self:register_parameter('bias', efla.zeros({ out_features }, { dtype = dtype_of(opts) }))
  end
end
function nn.Linear:forward(x)
  if x:size(x:dim()) ~= self.in_features then
    error(string.format('Linear(%d -> %d): input has %d features in its last dim (shape %s)',
      self.in_features, self.out_features, x:size(x:dim()), table.concat(x:size():totable(), 'x')), 2)
  end
  local y = x:matmul(self.weight:t())
  if self.bias then y = y + self.bias end
  return y
end
function nn.Linear:extra_repr()
  return string.format('%d -> %d%s', self.in_features, self.out_features, self.bias and '' or ', no bias')
end

--- Embedding(num, dim): a lookup table initialised N(0, 1).
nn.Embedding = class.new('Embedding', Module)
function nn.Embedding:__init(num_embeddings, dim, opts)
  Module.__init(self)
  self.num_embeddings, self.dim = num_embeddings, dim
  self:register_parameter('weight', init.normal(efla.empty({ num_embeddings, dim }, { dtype = dtype_of(opts) }), (opts and opts.std) or 1))
end
function nn.Embedding:forward(index) return efla.embedding(self.weight, index) end
function nn.Embedding:extra_repr() return string.format('%d, %d', self.num_embeddings, self.dim) end

--- LayerNorm(dim, {eps = 1e-5, affine = true}) over the last dim.
nn.LayerNorm = class.new('LayerNorm', Module)
function nn.LayerNorm:__init(dim, opts)
  Module.__init(self)
  opts = opts or {}
  self.dim, self.eps = dim, opts.eps or 1e-5
  if opts.affine ~= false then
    self:register_parameter('weight', efla.ones({ dim }, { dtype = dtype_of(opts) }))
    self:register_parameter('bias', efla.zeros({ dim }, { dtype = dtype_of(opts) }))
  end
end
function nn.LayerNorm:forward(x) return x:layer_norm(self.weight, self.bias, self.eps) end
function nn.LayerNorm:extra_repr() return string.format('%d, eps=%g', self.dim, self.eps) end

--- RMSNorm(dim, {eps = 1e-6}) over the last dim.
nn.RMSNorm = class.new('RMSNorm', Module)
function nn.RMSNorm:__init(dim, opts)
  Module.__init(self)
  opts = opts or {}
  self.dim, self.eps = dim, opts.eps or 1e-6
  self:register_parameter('weight', efla.ones({ dim }, { dtype = dtype_of(opts) }))
end
function nn.RMSNorm:forward(x) return x:rms_norm(self.weight, self.eps) end
function nn.RMSNorm:extra_repr() return string.format('%d, eps=%g', self.dim, self.eps) end

--- Dropout(p): zeroes each element with probability p in training, scaling the rest by
--- 1/(1-p); the identity in evaluation.
nn.Dropout = class.new('Dropout', Module)
function nn.Dropout:__init(p)
  Module.__init(self)
  self.p = p or 0.5
  assert(self.p >= 0 and self.p < 1, 'Dropout(p): p must be in [0, 1)')
end
function nn.Dropout:forward(x)
  if not self.training or self.p == 0 then return x end
  local keep = efla.bernoulli(x:size(), 1 - self.p, { dtype = x:dtype(), device = x:device() })
  return x * keep * (1 / (1 - self.p))
end
function nn.Dropout:extra_repr() return string.format('p=%g', self.p) end

-- Activations: modules without parameters around the tensor methods.
for _, name in ipairs({ 'GELU', 'SiLU', 'ReLU', 'Tanh', 'Sigmoid' }) do
  local method = name:lower()
  local cls = class.new(name, Module)
  function cls:forward(x) return x[method](x) end
  nn[name] = cls
end

--- Sequential(m1, m2, ...): applies its children in order.
nn.Sequential = class.new('Sequential', Module)
function nn.Sequential:__init(...)
  Module.__init(self)
  for i, m in ipairs({ ... }) do self:add_module(i, m) end
end
function nn.Sequential:add(m) return self:add_module(#self._child_names + 1, m) end
function nn.Sequential:forward(x)
  for _, name in ipairs(self._child_names) do x = self._children[name]:forward(x) end
  return x
end

--- Residual(m): x + m(x).
nn.Residual = class.new('Residual', Module)
function nn.Residual:__init(m)
  Module.__init(self)
  self:add_module('fn', m)
end
function nn.Residual:forward(x) return x + self.fn:forward(x) end

return nn

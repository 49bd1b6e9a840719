-- layers.lua: the basic modules: Linear, Embedding, LayerNorm, RMSNorm, Dropout, the
-- activations (GELU, SiLU, ReLU, Tanh, Sigmoid), Identity, Sequential, ModuleList, Residual.
-- opts.dtype picks the parameters' dtype (default: efla.get_default_dtype()).
local efla = require 'efla'
local class = require 'efla.class'
local Module = require 'efla.nn.module'
local drop = require('efla.nn.temporaries').drop
local init = require 'efla.nn.init_fns'
local fused = require 'efla.nn.fused'

local nn = {}

local function dtype_of(opts) return (opts and opts.dtype) or efla.get_default_dtype() end

local function positive_int(v, what, where)
  if type(v) ~= 'number' or v < 1 or v % 1 ~= 0 then
    error(string.format('%s: %s must be a positive integer, got %s', where, what, tostring(v)), 4)
  end
  return v
end

local function need_tensor(x, where)
  if not efla.is_tensor(x) then error(string.format('%s: expected a tensor input, got %s', where, type(x)), 3) end
  return x
end

local function shape_str(x) return '[' .. table.concat(x:size(), ',') .. ']' end

--- Linear(in, out, {bias = true, dtype}): y = x W^T + b over the last dim of x.
--- W [out, in] starts xavier-uniform, b zeros.
nn.Linear = class.new('Linear', Module)
function nn.Linear:__init(in_features, out_features, opts)
  Module.__init(self)
  opts = opts or {}
  self.in_features = positive_int(in_features, 'in_features', 'Linear(in_features, out_features)')
  self.out_features = positive_int(out_features, 'out_features', 'Linear(in_features, out_features)')
  self:register_parameter('weight', init.xavier_uniform(efla.empty({ out_features, in_features }, { dtype = dtype_of(opts) })))
  if opts.bias ~= false then
    self:register_parameter('bias', efla.zeros({ out_features }, { dtype = dtype_of(opts) }))
  end
end
function nn.Linear:forward(x)
  need_tensor(x, 'Linear')
  if x:dim() == 0 or x:size(-1) ~= self.in_features then
    error(string.format('Linear(%d -> %d): the input %s must have %d features in its last dim',
      self.in_features, self.out_features, shape_str(x), self.in_features), 2)
  end
  local xc = self:cast(x)
  local w, y = self:cast(self.weight)
  local wt = w:t()
  if xc:dim() == 1 then y = xc:unsqueeze(1):matmul(wt):squeeze(1)
  else y = xc:matmul(wt) end
  -- the compute-dtype copies and the transposed view: autograd keeps what it needs, the boxes
  -- go now (efla.nn.temporaries) instead of holding a weight copy until the next collection
  drop({ x, self.weight, y }, wt, w, xc)
  if self.bias then
    local b = self:cast(self.bias)
    local yb = y + b
    drop({ self.bias, x, yb }, y, b)
    y = yb
  end
  return y
end
function nn.Linear:extra_repr()
  return string.format('%d -> %d%s', self.in_features, self.out_features, self.bias and '' or ', no bias')
end

--- Embedding(num, dim, {std = 1, dtype}): a lookup table, rows initialised N(0, std^2);
--- forward(index) takes 1-based int64 indices of any shape -> [..., dim].
nn.Embedding = class.new('Embedding', Module)
function nn.Embedding:__init(num_embeddings, dim, opts)
  Module.__init(self)
  self.num_embeddings = positive_int(num_embeddings, 'num_embeddings', 'Embedding(num_embeddings, dim)')
  self.dim = positive_int(dim, 'dim', 'Embedding(num_embeddings, dim)')
  self:register_parameter('weight', init.normal(efla.empty({ num_embeddings, dim }, { dtype = dtype_of(opts) }), (opts and opts.std) or 1))
end
function nn.Embedding:forward(index)
  need_tensor(index, 'Embedding')
  if fused.on(self.weight) and index:dtype() == 'int64' then
    return self:cast(fused.embedding(self.weight, index))   -- no wait for the device (its index check would)
  end
  return self:cast(self.weight:embedding(index))
end
function nn.Embedding:extra_repr() return string.format('%d, %d', self.num_embeddings, self.dim) end

--- LayerNorm(dim, {eps = 1e-5, affine = true, dtype}) over the last dim:
--- (x - mean) / sqrt(var + eps) * weight + bias (biased variance).
nn.LayerNorm = class.new('LayerNorm', Module)
function nn.LayerNorm:__init(dim, opts)
  Module.__init(self)
  opts = opts or {}
  self.dim, self.eps = positive_int(dim, 'dim', 'LayerNorm(dim)'), opts.eps or 1e-5
  if opts.affine ~= false then
    self:register_parameter('weight', efla.ones({ dim }, { dtype = dtype_of(opts) }))
    self:register_parameter('bias', efla.zeros({ dim }, { dtype = dtype_of(opts) }))
  end
end
function nn.LayerNorm:forward(x)
  return self:cast(need_tensor(x, 'LayerNorm')):layer_norm(self:cast(self.weight), self:cast(self.bias), self.eps)
end
function nn.LayerNorm:extra_repr()
  return string.format('%d, eps=%g%s', self.dim, self.eps, self.weight and '' or ', no affine')
end

--- RMSNorm(dim, {eps = 1e-6, dtype}) over the last dim: x / sqrt(mean(x^2) + eps) * weight.
nn.RMSNorm = class.new('RMSNorm', Module)
function nn.RMSNorm:__init(dim, opts)
  Module.__init(self)
  opts = opts or {}
  self.dim, self.eps = positive_int(dim, 'dim', 'RMSNorm(dim)'), opts.eps or 1e-6
  self:register_parameter('weight', efla.ones({ dim }, { dtype = dtype_of(opts) }))
end
function nn.RMSNorm:forward(x) return self:cast(need_tensor(x, 'RMSNorm')):rms_norm(self:cast(self.weight), self.eps) end
function nn.RMSNorm:extra_repr() return string.format('%d, eps=%g', self.dim, self.eps) end

--- Dropout(p = 0.5): in training, zeroes each element with probability p and scales the
--- rest by 1/(1-p) (a fresh mask from efla's generator at each call); the identity after
--- m:evaluate().
nn.Dropout = class.new('Dropout', Module)
function nn.Dropout:__init(p)
  Module.__init(self)
  self.p = p or 0.5
  if type(self.p) ~= 'number' or not (self.p >= 0 and self.p < 1) then
    error('Dropout(p): p must be a number in [0, 1), got ' .. tostring(p), 3)
  end
end
function nn.Dropout:forward(x)
  need_tensor(x, 'Dropout')
  if not self.training or self.p == 0 then return x end
  local keep = efla.bernoulli(x:size(), 1 - self.p, { dtype = x:dtype(), device = x:device() })
  return x * keep * (1 / (1 - self.p))
end
function nn.Dropout:extra_repr() return string.format('p=%g', self.p) end

-- Activations: modules without parameters around the tensor methods. GELU is the exact
-- (erf) form: x * Phi(x).
for _, name in ipairs({ 'GELU', 'SiLU', 'ReLU', 'Tanh', 'Sigmoid' }) do
  local method = name:lower()
  local cls = class.new(name, Module)
  cls.__doc = name .. '(): the ' .. method .. ' activation as a module, elementwise, no parameters' ..
    (name == 'GELU' and ' (the exact erf form x * Phi(x))' or '') .. '.'
  function cls:forward(x) return need_tensor(x, name)[method](x) end
  nn[name] = cls
end

--- Identity(): returns its input.
nn.Identity = class.new('Identity', Module)
function nn.Identity:forward(x) return x end

--- Sequential(m1, m2, ...): applies its children in order (children named 1, 2, ...).
nn.Sequential = class.new('Sequential', Module)
function nn.Sequential:__init(...)
  Module.__init(self)
  for i = 1, select('#', ...) do self:add_module(i, (select(i, ...))) end
end
--- seq:add(m) -> seq (chainable)
function nn.Sequential:add(m) self:add_module(#self._child_names + 1, m); return self end
--- seq:size() -> the number of children
function nn.Sequential:size() return #self._child_names end
function nn.Sequential:forward(x)
  for _, name in ipairs(self._child_names) do x = self._children[name]:forward(x) end
  return x
end

--- ModuleList(m1, m2, ...): holds modules (list[i]) without a forward of its own.
nn.ModuleList = class.new('ModuleList', Module)
nn.ModuleList.__init = nn.Sequential.__init
nn.ModuleList.add = nn.Sequential.add
nn.ModuleList.size = nn.Sequential.size

--- Residual(m): x + m(x).
nn.Residual = class.new('Residual', Module)
function nn.Residual:__init(m)
  Module.__init(self)
  self:add_module('fn', m)
end
function nn.Residual:forward(x) return x + self.fn:forward(x) end

return nn

-- module.lua: the base of every nn module. A module owns its parameters (leaf tensors
-- that require grad) and its children, both in registration order, so that
-- parameters(), named_parameters() and state_dict() are deterministic.
--
--   m:forward(x) / m(x)              the computation (subclasses define forward)
--   m:parameters(), m:named_parameters(), m:num_parameters()
--   m:train() / m:evaluate()         sets .training on m and every descendant
--   m:state_dict() / m:load_state_dict(sd [, strict])
--   m:zero_grad(), m:to(dtype|device), tostring(m) (an indented tree)
--
-- Assigning a module to a field registers it as a child (self.proj = nn.Linear(...)), and
-- assigning a tensor to a registered parameter's name replaces that parameter.
local efla = require 'efla'
local class = require 'efla.class'

--- Module: the base of every layer and model. A subclass calls Module.__init(self) in its
--- __init, registers parameters (register_parameter) and children (add_module, or plain
--- assignment m.name = module), and defines forward(...); m(x) is m:forward(x).
local Module = class.new('Module')

local function fail(msg, level) error(msg, (level or 1) + 1) end

function Module:__init()
  rawset(self, '_param_names', {})
  rawset(self, '_child_names', {})
  rawset(self, '_params', {})
  rawset(self, '_children', {})
  rawset(self, 'training', true)
end

--- nn.Module.is_module(v) -> true when v is a module (an instance of Module or a subclass).
local function is_module(v) return class.is_instance(v, Module) end
Module.is_module = is_module

--- m:register_parameter(name, tensor) -> tensor: registers (or replaces) a parameter and
--- turns on its gradient. The tensor must be a floating-point leaf.
function Module:register_parameter(name, tensor)
  if type(name) ~= 'string' or name == '' or name:find('.', 1, true) then
    fail(string.format('register_parameter: the name must be a non-empty string without dots, got %s', tostring(name)), 2)
  end
  if not efla.is_tensor(tensor) then
    fail(string.format('register_parameter(%s): expected a tensor, got %s', name, type(tensor)), 2)
  end
  if not tensor:is_floating_point() then
    fail(string.format('register_parameter(%s): parameters must be floating point, got %s', name, tensor:dtype()), 2)
  end
  if not tensor.is_leaf then
    fail(string.format('register_parameter(%s): the tensor is the result of an operation; pass a leaf (x:detach())', name), 2)
  end
  if rawget(self, '_children')[name] then
    fail(string.format('register_parameter(%s): a child module already has that name', name), 2)
  end
  if not self._params[name] then table.insert(self._param_names, name) end
  tensor:requires_grad_(true)
  self._params[name] = tensor
  return tensor
end

--- m:add_module(name, module) -> module: registers a child under `name` (a string, or a
--- number for lists; it is stored as a string).
function Module:add_module(name, module)
  if type(name) ~= 'string' and type(name) ~= 'number' then
    fail('add_module: the name must be a string or a number, got ' .. type(name), 2)
  end
  name = tostring(name)
  if name == '' or name:find('.', 1, true) then fail("add_module: the name '" .. name .. "' must be non-empty and have no dots", 2) end
  if not is_module(module) then
    fail(string.format("add_module(%s): expected an nn module, got %s", name, type(module)), 2)
  end
  if rawget(self, '_params')[name] then
    fail(string.format('add_module(%s): a parameter already has that name', name), 2)
  end
  if not self._children[name] then table.insert(self._child_names, name) end
  self._children[name] = module
  return module
end

-- Parameters and children read like fields: self.weight, self.q_proj, list[1].
function Module:__index(key)
  local params = rawget(self, '_params')
  if params then
    local p = params[key]
    if p ~= nil then return p end
    local c = rawget(self, '_children')[type(key) == 'number' and tostring(key) or key]
    if c ~= nil then return c end
  end
  return getmetatable(self)[key]
end

function Module:__newindex(key, value)
  local params = rawget(self, '_params')
  if params and type(key) == 'string' then
    if params[key] ~= nil and efla.is_tensor(value) then self:register_parameter(key, value); return end
    if is_module(value) or rawget(self, '_children')[key] ~= nil then
      if value == nil then fail('cannot remove child module ' .. key .. ' by assigning nil', 2) end
      self:add_module(key, value); return
    end
  end
  rawset(self, key, value)
end

--- m:forward(...) -> outputs: the module's computation; m(...) calls it.
function Module:forward(...)
  error(string.format('%s: forward() is not implemented', getmetatable(self).__name), 2)
end

function Module:__call(...) return self:forward(...) end

--- m:children() -> { {name, module}, ... } (direct children, in order)
function Module:children()
  local out = {}
  for i, name in ipairs(self._child_names) do out[i] = { name, self._children[name] } end
  return out
end

--- m:modules() -> { {prefix, module}, ... }: m itself (prefix '') and every descendant,
--- depth first in registration order; prefixes are dotted paths ("layers.1.attn").
function Module:modules(prefix, out)
  out = out or {}
  prefix = prefix or ''
  out[#out + 1] = { prefix, self }
  for _, name in ipairs(self._child_names) do
    self._children[name]:modules(prefix == '' and name or (prefix .. '.' .. name), out)
  end
  return out
end

--- m:named_parameters() -> { {name, tensor}, ... } with dotted names such as
--- "layers.1.attn.q_proj.weight". A tensor reachable twice is listed once.
function Module:named_parameters()
  local out, seen = {}, {}
  for _, entry in ipairs(self:modules()) do
    local prefix, m = entry[1], entry[2]
    for _, pname in ipairs(m._param_names) do
      local p = m._params[pname]
      if not seen[p] then
        seen[p] = true
        out[#out + 1] = { prefix == '' and pname or (prefix .. '.' .. pname), p }
      end
    end
  end
  return out
end

--- m:parameters() -> { tensor, ... } in the order of named_parameters()
function Module:parameters()
  local out = {}
  for i, np in ipairs(self:named_parameters()) do out[i] = np[2] end
  return out
end

--- m:num_parameters() -> the number of scalars in all parameters
function Module:num_parameters()
  local n = 0
  for _, p in ipairs(self:parameters()) do n = n + p:numel() end
  return n
end

--- m:state_dict() -> { name = tensor }: the parameters themselves (detached, sharing
--- storage: copy them with :clone() to keep a snapshot while training goes on).
function Module:state_dict()
  local sd = {}
  for _, np in ipairs(self:named_parameters()) do sd[np[1]] = np[2]:detach() end
  return sd
end

local function shape_str(t) return '[' .. table.concat(t:size(), ',') .. ']' end

--- m:load_state_dict(sd [, strict = true]) -> m: copies values from a state dict (a table
--- name -> tensor, e.g. a checkpoint's model section). Every problem is reported in one
--- error: missing and unexpected names (only when strict), wrong shapes, wrong dtypes,
--- values that are not tensors. Nothing is copied unless everything matches.
function Module:load_state_dict(sd, strict)
  if type(sd) ~= 'table' then fail('load_state_dict: expected a table name -> tensor, got ' .. type(sd), 2) end
  if strict == nil then strict = true end
  local problems, seen = {}, {}
  local named = self:named_parameters()
  for _, np in ipairs(named) do
    local name, p = np[1], np[2]
    local src = sd[name]
    seen[name] = true
    if src == nil then
      if strict then problems[#problems + 1] = 'missing: ' .. name .. ' ' .. shape_str(p) end
    elseif not efla.is_tensor(src) then
      problems[#problems + 1] = string.format('not a tensor: %s is a %s', name, type(src))
    else
      if shape_str(src) ~= shape_str(p) then
        problems[#problems + 1] = string.format('wrong shape: %s is %s in the state dict, %s in the model',
          name, shape_str(src), shape_str(p))
      end
      if src:dtype() ~= p:dtype() then
        problems[#problems + 1] = string.format('wrong dtype: %s is %s in the state dict, %s in the model (convert the model with :to(\'%s\') or the tensor)',
          name, src:dtype(), p:dtype(), src:dtype())
      end
    end
  end
  if strict then
    for name in pairs(sd) do
      if not seen[name] then problems[#problems + 1] = 'unexpected: ' .. tostring(name) end
    end
  end
  if #problems > 0 then
    table.sort(problems)
    fail(string.format('load_state_dict: the state dict does not match the %s (%d problem%s):\n  %s',
      getmetatable(self).__name, #problems, #problems == 1 and '' or 's', table.concat(problems, '\n  ')), 2)
  end
  efla.no_grad(function()
    for _, np in ipairs(named) do
      local src = sd[np[1]]
      if src ~= nil then np[2]:copy_(src) end
    end
  end)
  return self
end

--- m:train([mode = true]) -> m: training mode for m and every descendant (Dropout drops).
function Module:train(mode)
  if mode == nil then mode = true end
  for _, entry in ipairs(self:modules()) do rawset(entry[2], 'training', mode and true or false) end
  return self
end

--- m:evaluate() -> m: evaluation mode (Dropout is the identity).
function Module:evaluate() return self:train(false) end

--- m:zero_grad(): drops the gradient of every parameter.
function Module:zero_grad()
  for _, p in ipairs(self:parameters()) do p:zero_grad() end
end

--- m:to(dtype | device | {dtype=, device=}) -> m: moves and/or casts every parameter in
--- place of the old one (make the optimiser after this: it holds the tensors it was given).
function Module:to(...)
  local args = { ... }
  local n = select('#', ...)
  for _, entry in ipairs(self:modules()) do
    local m = entry[2]
    for _, pname in ipairs(m._param_names) do
      local moved = m._params[pname]:detach():to(unpack(args, 1, n)):contiguous():detach()
      m:register_parameter(pname, moved)
    end
  end
  return self
end
--- m:set_compute_dtype(dtype | nil) -> m: mixed precision. Parameters stay as they are
--- (float32 master weights, which the optimiser updates) while m and every descendant
--- compute in `dtype` ('bfloat16' on a GPU): each module casts its floating inputs and its
--- parameters to it in forward (the casts are differentiable, so the gradients arrive in
--- the parameters' own dtype). nil turns it off. CausalLM:loss keeps the loss in float32.
function Module:set_compute_dtype(dtype)
  if dtype ~= nil and dtype ~= false and type(dtype) ~= 'string' then
    fail("set_compute_dtype: expected a dtype name ('bfloat16', 'float32', ...) or nil, got " .. type(dtype), 2)
  end
  for _, entry in ipairs(self:modules()) do rawset(entry[2], 'compute_dtype', dtype or nil) end
  return self
end

--- m:cast(t) -> t in m's compute dtype (t itself when none is set, t is nil, not floating,
--- or already there); modules call it on their inputs and parameters in forward.
function Module:cast(t)
  local cd = rawget(self, 'compute_dtype')
  if cd and t ~= nil and t:dtype() ~= cd and t:is_floating_point() then return t:to(cd) end
  return t
end

--- m:cuda() / m:cpu() / m:double() / m:float() -> m: shorthands of m:to('cuda'), m:to('cpu'),
--- m:to('float64'), m:to('float32').
function Module:cuda() return self:to('cuda') end
--- m:cpu() -> m: m:to('cpu').
function Module:cpu() return self:to('cpu') end
--- m:double() -> m: m:to('float64').
function Module:double() return self:to('float64') end
--- m:float() -> m: m:to('float32').
function Module:float() return self:to('float32') end

--- One-line description used by the tree printer; modules override it.
function Module:extra_repr() return '' end

--- tostring(m): the module tree, one child per line, indented (PyTorch's layout: a
--- module with children shows its own settings on the first line inside):
---   Sequential(
---     (1): Linear(4 -> 8)
---     (2): SwiGLU(
---       8 -> 24 -> 8
---       (gate): Linear(8 -> 24, no bias)
---       ...
---     )
---   )
function Module:__tostring()
  local function render(m, indent)
    local name, extra = getmetatable(m).__name, m:extra_repr()
    if #m._child_names == 0 then return name .. '(' .. extra .. ')' end
    local lines = { name .. '(' }
    if extra ~= '' then lines[2] = indent .. '  ' .. extra end
    for _, cname in ipairs(m._child_names) do
      lines[#lines + 1] = indent .. '  (' .. cname .. '): ' .. render(m._children[cname], indent .. '  ')
    end
    lines[#lines + 1] = indent .. ')'
    return table.concat(lines, '\n')
  end
  return render(self, '')
end

return Module

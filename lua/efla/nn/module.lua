-- module.lua: the base of every nn module. A module owns its parameters (leaf tensors
-- that require grad) and its children, both in registration order, so that
-- parameters(), named_parameters() and state_dict() are deterministic.
local class = require 'efla.class'

local Module = class.new('Module')

function Module:__init()
  rawset(self, '_param_names', {})
  rawset(self, '_child_names', {})
  rawset(self, '_params', {})
  rawset(self, '_children', {})
  self.training = true
end

--- Register (or replace) a parameter; returns the tensor. Gradients are enabled on it.
function Module:register_parameter(name, tensor)
  if not self._params[name] then table.insert(self._param_names, name) end
  tensor:requires_grad_(true)
  self._params[name] = tensor
  return tensor
end

--- Register a child module under `name` (a string or a number for lists).
function Module:add_module(name, module)
  name = tostring(name)
  if not self._children[name] then table.insert(self._child_names, name) end
  self._children[name] = module
  return module
end

-- Parameters and children read like fields: self.weight, self.q_proj.
function Module:__index(key)
  local params = rawget(self, '_params')
  if params and params[key] ~= nil then return params[key] end
  local children = rawget(self, '_children')
  if children and children[key] ~= nil then return children[key] end
  return getmetatable(self)[key]
end

function Module:forward(...)
  error(string.format('%s: forward() is not implemented', getmetatable(self).__name), 2)
end

function Module:__call(...) return self:forward(...) end

--- Visit (prefix, module) depth-first in registration order.
function Module:modules(prefix, out)
  out = out or {}
  prefix = prefix or ''
  out[#out + 1] = { prefix, self }
  for _, name in ipairs(self._child_names) do
    self._children[name]:modules(prefix == '' and name or (prefix .. '.' .. name), out)
  end
  return out
end

--- { {name, tensor}, ... } with dotted names such as "layers.1.attn.q_proj.weight".
function Module:named_parameters()
  local out = {}
  for _, entry in ipairs(self:modules()) do
    local prefix, m = entry[1], entry[2]
    for _, pname in ipairs(m._param_names) do
      out[#out + 1] = { prefix == '' and pname or (prefix .. '.' .. pname), m._params[pname] }
    end
  end
  return out
end

function Module:parameters()
  local out = {}
  for i, np in ipairs(self:named_parameters()) do out[i] = np[2] end
  return out
end

function Module:num_parameters()
  local n = 0
  for _, p in ipairs(self:parameters()) do n = n + p:numel() end
  return n
end

--- name -> tensor (the parameters themselves, detached views sharing storage).
function Module:state_dict()
  local sd = {}
  for _, np in ipairs(self:named_parameters()) do sd[np[1]] = np[2]:detach() end
  return sd
end

--- Copy values from a state dict. Reports every mismatch at once (missing, unexpected,
--- wrong shape or dtype); strict = false ignores missing/unexpected names.
function Module:load_state_dict(sd, strict)
  if strict == nil then strict = true end
  local problems, seen = {}, {}
  local efla = require 'efla'
  for _, np in ipairs(self:named_parameters()) do
    local name, p = np[1], np[2]
    local src = sd[name]
    seen[name] = true
    if src == nil then
      if strict then problems[#problems + 1] = 'missing: ' .. name end
    else
      local want, got = table.concat(p:size():totable(), 'x'), table.concat(src:size():totable(), 'x')
      if want ~= got then
        problems[#problems + 1] = string.format('wrong shape: %s is %s in the file, %s in the model', name, got, want)
      end
    end
  end
  for name in pairs(sd) do
    if not seen[name] and strict then problems[#problems + 1] = 'unexpected: ' .. name end
  end
  if #problems > 0 then
    table.sort(problems)
    error('load_state_dict: the state dict does not match the model:\n  ' .. table.concat(problems, '\n  '), 2)
  end
  efla.no_grad(function()
    for _, np in ipairs(self:named_parameters()) do
      local src = sd[np[1]]
      if src ~= nil then np[2]:copy_(src) end
    end
  end)
  return self
end

function Module:train(mode)
  if mode == nil then mode = true end
  for _, entry in ipairs(self:modules()) do entry[2].training = mode end
  return self
end

function Module:evaluate() return self:train(false) end

function Module:zero_grad()
  for _, p in ipairs(self:parameters()) do p:zero_grad() end
end

--- Move (and/or cast) every parameter: module:to('cuda'), module:to('float64').
function Module:to(...)
  local args = { ... }
  for _, entry in ipairs(self:modules()) do
    local m = entry[2]
    for _, pname in ipairs(m._param_names) do
      local moved = m._params[pname]:detach():to(unpack(args)):contiguous()
      if moved == m._params[pname] then moved = moved:clone() end
      m:register_parameter(pname, moved:detach())
    end
  end
  return self
end

function Module:cuda() return self:to('cuda') end
function Module:cpu() return self:to('cpu') end

--- One-line description used by the tree printer; modules override it.
function Module:extra_repr() return '' end

function Module:__tostring()
  local function render(m, indent)
    local name = getmetatable(m).__name
    local head = name .. '(' .. m:extra_repr()
    if #m._child_names == 0 then return head .. ')' end
    local lines = { head }
    for _, cname in ipairs(m._child_names) do
      lines[#lines + 1] = indent .. '  (' .. cname .. '): ' .. render(m._children[cname], indent .. '  ')
    end
    lines[#lines + 1] = indent .. ')'
    return table.concat(lines, '\n')
  end
  return render(self, '')
end

return Module

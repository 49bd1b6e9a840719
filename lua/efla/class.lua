-- class.lua: the one tiny class helper of efla (single inheritance, Torch's torch.class
-- without the global registry). A class is callable: Class(...) makes an instance and
-- runs Class.__init(self, ...).
local class = {}

local function new_class(name, parent)
  local cls = {}
  cls.__index = cls
  cls.__name = name
  cls.__parent = parent
  if parent then
    -- Metamethods are looked up raw in the instance's metatable, so copy them down.
    for _, mm in ipairs({ "__tostring", "__call", "__len", "__eq", "__concat" }) do
      if parent[mm] then cls[mm] = parent[mm] end
    end
    if type(parent.__index) == "function" then cls.__index = parent.__index end
  end
  return setmetatable(cls, {
    __index = parent,
    __call = function(c, ...)
      local obj = setmetatable({}, c)
      if c.__init then c.__init(obj, ...) end
      return obj
    end,
    __tostring = function() return "class " .. name end,
  })
end

--- class.new(name [, parent]) -> a new class table.
function class.new(name, parent) return new_class(name, parent) end

--- class.is_instance(obj, cls) -> true if obj is an instance of cls or of a subclass.
function class.is_instance(obj, cls)
  if type(obj) ~= "table" then return false end
  local c = getmetatable(obj)
  while c do
    if c == cls then return true end
    c = rawget(c, "__parent")
  end
  return false
end

return class

-- class.lua: the one tiny class helper of efla (single inheritance, Torch's torch.class
-- without the global registry). A class is callable: Class(...) makes an instance and
-- runs Class.__init(self, ...).
local class = {}

-- Metamethods are looked up raw in the instance's metatable (the class), never through
-- its __index chain, so a subclass copies its parent's down when it is made.
local METAMETHODS = { "__tostring", "__call", "__len", "__eq", "__concat", "__newindex" }

local function new_class(name, parent)
  local cls = {}
  cls.__index = cls
  cls.__name = name
  cls.__parent = parent
  if parent then
    for _, mm in ipairs(METAMETHODS) do
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

--- class.name(obj) -> the class name of an instance (or nil).
function class.name(obj)
  local c = type(obj) == "table" and getmetatable(obj)
  return c and rawget(c, "__name") or nil
end

return class

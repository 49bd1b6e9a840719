-- eval/random.lua: a seeded stream of random draws for building evaluation items and
-- synthetic tasks in Lua, independent of (and never disturbing) efla's global generator.
--
--   local r = random.Stream(1234)
--   r:uniform()         -- in [0, 1)
--   r:int(n)            -- 0 .. n-1
--   r:choice(list)      -- one element of a Lua array
--   r:shuffle(list)     -- in place, Fisher-Yates
-- Uniforms come in blocks of float64 values from efla's Philox generator at (seed, offset),
-- so a seed gives the same items on every machine and device.
local efla = require 'efla'
local data = require 'efla.data'

local random = {}

local BLOCK = 4096

local Stream = {}
Stream.__index = Stream

--- random.Stream(seed) -> a stream of uniforms determined by seed alone.
function random.Stream(seed)
  if type(seed) ~= 'number' or seed ~= seed or seed % 1 ~= 0 or seed < 0 then
    error('random.Stream: seed must be a non-negative integer, got ' .. tostring(seed), 2)
  end
  return setmetatable({ seed = seed, offset = 0, buf = nil, pos = BLOCK }, Stream)
end

function Stream:_refill()
  local block, state = data.with_seed(self.seed, self.offset, function()
    local u = efla.rand({ BLOCK }, { dtype = 'float64' })
    return u, efla.rng_state()
  end)
  self.block = block -- keeps the storage alive while buf points into it
  self.buf = block:data()
  self.offset = state.offset
  self.pos = 0
end

--- stream:uniform() -> a number in [0, 1)
function Stream:uniform()
  if self.pos >= BLOCK then self:_refill() end
  local u = self.buf[self.pos]
  self.pos = self.pos + 1
  return u
end

--- stream:int(n) -> an integer in 0 .. n-1 (n >= 1)
function Stream:int(n)
  if n < 1 then error('random: int(n) needs n >= 1, got ' .. tostring(n), 2) end
  local k = math.floor(self:uniform() * n)
  return k < n and k or n - 1
end

--- stream:choice(list) -> a uniformly drawn element of a non-empty Lua array
function Stream:choice(list)
  if #list == 0 then error('random: choice from an empty list', 2) end
  return list[self:int(#list) + 1]
end

--- stream:shuffle(list) -> list, permuted in place (Fisher-Yates)
function Stream:shuffle(list)
  for i = #list, 2, -1 do
    local j = self:int(i) + 1
    list[i], list[j] = list[j], list[i]
  end
  return list
end

return random

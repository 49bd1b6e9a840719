-- efla.data.loader: Dataset (images + labels in CPU tensors), Sampler (the seeded batch
-- order, shared with the text loader) and DataLoader (batches as tensors).
--
--   local ds = data.mnist{split = 'train'}            -- a Dataset
--   local train, valid = ds:split(0.9)                 -- contiguous, or ds:split(0.9, seed)
--   local loader = data.DataLoader(train, {batch_size = 64, seed = 1, drop_last = true})
--   for x, y in loader:iter() do ... end               -- one epoch from the saved position
--   local s = loader:state()  ...  loader:set_state(s) -- exact resume: (epoch, batch)
--
-- Lua-facing positions and labels are 1-based (ds:get(i); labels are class indices 1..C,
-- as efla's cross_entropy wants them); index buffers inside are 0-based int64, as C wants.
--
-- Shuffling: epoch e's order is randperm(N) from efla's Philox generator at (seed,
-- offset e*N), run with the global generator saved and restored, so it depends on
-- (seed, epoch) only and never disturbs (or is disturbed by) other random draws.
local ffi = require 'ffi'
local efla = require 'efla'
local binding = require 'efla._binding'
local data = require 'efla.data'

local loader = {}

--- loader.permutation(n, seed [, offset]) -> 0-based int64 buffer holding a permutation of
-- 0..n-1: efla.randperm (1-based) drawn at generator state (seed, offset), with the global
-- stream left untouched (data.with_seed).
function loader.permutation(n, seed, offset)
  local t = data.with_seed(seed, offset or 0, efla.randperm, n)
  local p, out = data.ptr(t), ffi.new("int64_t[?]", math.max(n, 1))
  for i = 0, n - 1 do out[i] = p[i] - 1 end
  return out
end
local permutation = loader.permutation

--- loader.device_name(d) -> d as a device name: 'cpu', 'cuda', 'cuda:N' pass through; a
-- device number (0 = CPU, 1 = the first GPU, as in efla.h) is converted.
function loader.device_name(d)
  if type(d) == "number" then return binding.device_name(d) end
  return d
end

-- ---- Dataset ---------------------------------------------------------------------------------

local Dataset = {}
Dataset.__index = Dataset
loader.Dataset = setmetatable(Dataset, {
  __call = function(_, t) return Dataset.new(t) end,
})

--- Dataset.new{images = tensor [N, ...], labels = int64 tensor [N], name = string}
function Dataset.new(t)
  local ishape = t.images:size():totable()
  local n = ishape[1]
  assert(n, "Dataset: images must have a leading sample dimension")
  local lshape = t.labels:size():totable()
  if #lshape ~= 1 or lshape[1] ~= n then
    error(string.format("Dataset: labels must be [%d] to match images [%s], got [%s]", n,
                        table.concat(ishape, ","), table.concat(lshape, ",")), 2)
  end
  if t.labels:dtype() ~= "int64" then error("Dataset: labels must be int64, got " .. t.labels:dtype(), 2) end
  local self = setmetatable({ images = t.images, labels = t.labels, name = t.name or "dataset", n = n }, Dataset)
  self.sample_shape = { unpack(ishape, 2) }
  self.sample_numel = 1
  for _, s in ipairs(self.sample_shape) do self.sample_numel = self.sample_numel * s end
  return self
end

--- ds:size() -> the number of examples.
function Dataset:size() return self.n end
function Dataset:__tostring()
  return string.format("Dataset(%s: %d x [%s] %s)", self.name, self.n, table.concat(self.sample_shape, ","),
                       self.images:dtype())
end

--- ds:gather(index, count [, dtype]) -> images [count, ...], labels [count]
-- index: 0-based int64 buffer. dtype 'float32' turns uint8 pixels into x/255.
function Dataset:gather(index, count, dtype)
  local src, sdt = data.ptr(self.images)
  dtype = dtype or sdt
  local shape = { count, unpack(self.sample_shape) }
  local x = efla.empty(shape, { dtype = dtype })
  local y = efla.empty({ count }, { dtype = "int64" })
  local xp, yp = x:data(), y:data()
  local lab = data.ptr(self.labels)
  local d, n = self.sample_numel, self.n
  local scale = (sdt == "uint8" and dtype ~= "uint8") and 1 / 255 or 1
  for i = 0, count - 1 do
    local r = index[i]
    if r < 0 or r >= n then error(string.format("Dataset: index %d out of range [0, %d)", tonumber(r), n), 2) end
    yp[i] = lab[r]
    local so, dst = r * d, i * d
    if dtype == sdt then
      ffi.copy(xp + dst, src + so, d * x:element_size())
    else
      for j = 0, d - 1 do xp[dst + j] = src[so + j] * scale end
    end
  end
  return x, y
end

--- ds:select(index, count) -> a new Dataset holding those rows (0-based int64 buffer or a
-- 1-based Lua array, then count may be omitted).
function Dataset:select(index, count)
  if type(index) == "table" then
    count = #index
    local b = ffi.new("int64_t[?]", math.max(count, 1))
    for i = 1, count do b[i - 1] = index[i] - 1 end
    index = b
  end
  local x, y = self:gather(index, count)
  return Dataset.new { images = x, labels = y, name = self.name }
end

local function range(first, count)
  local b = ffi.new("int64_t[?]", math.max(count, 1))
  for i = 0, count - 1 do b[i] = first + i end
  return b
end

--- ds:subset(n [, seed]) -> the first n samples, or n drawn without replacement under seed
-- (in the drawn order).
function Dataset:subset(n, seed)
  if n > self.n or n < 0 then error(string.format("subset: asked for %d of %d samples", n, self.n), 2) end
  if seed == nil then return self:select(range(0, n), n) end
  return self:select(permutation(self.n, seed), n)
end

--- ds:split(first [, seed]) -> a, b. first: a count, or a fraction in (0, 1). Without a seed
-- the split is contiguous (a = the first rows); with one, rows are permuted first.
function Dataset:split(first, seed)
  local na = first
  if first > 0 and first < 1 then na = math.floor(first * self.n + 0.5) end
  if na < 0 or na > self.n or na ~= math.floor(na) then
    error(string.format("split: cannot take %s of %d samples", tostring(first), self.n), 2)
  end
  local order = seed and permutation(self.n, seed) or range(0, self.n)
  local a = self:select(order, na)
  local b = self:select(order + na, self.n - na)
  return a, b
end

--- ds:get(i) -> image tensor (sample shape), label number. i is 1-based.
function Dataset:get(i)
  if i < 1 or i > self.n or i % 1 ~= 0 then
    error(string.format("Dataset:get: index %s is not in 1..%d", tostring(i), self.n), 2)
  end
  local b = ffi.new("int64_t[1]", i - 1)
  local x, y = self:gather(b, 1)
  return x:view(self.sample_shape), tonumber(y:data()[0])
end

--- ds:float() -> a Dataset with float32 images in [0, 1] (x/255 for uint8).
function Dataset:float()
  local x = self:gather(range(0, self.n), self.n, "float32")
  return Dataset.new { images = x, labels = self.labels, name = self.name }
end

--- ds:flatten() -> a Dataset whose images are [N, prod(sample shape)] (a view, no copy).
function Dataset:flatten()
  local x = self.images:view(self.n, self.sample_numel)
  return Dataset.new { images = x, labels = self.labels, name = self.name }
end

--- ds:class_counts() -> Lua table label -> count.
function Dataset:class_counts()
  local lab, out = data.ptr(self.labels), {}
  for i = 0, self.n - 1 do
    local c = tonumber(lab[i])
    out[c] = (out[c] or 0) + 1
  end
  return out
end

-- ---- Sampler ------------------------------------------------------------------------------------

local Sampler = {}
Sampler.__index = Sampler
loader.Sampler = setmetatable(Sampler, { __call = function(_, n, opts) return Sampler.new(n, opts) end })

--- Sampler.new(n, {batch_size=, shuffle=true, seed=0, drop_last=false, rank=0, world_size=1})
--- With world_size > 1 (data-parallel training) batch_size is the global batch: every rank
--- walks the same seeded order, and batch b's samples are cut into world_size consecutive
--- equal parts, rank r taking part r+1; so the ranks' shards are disjoint, together cover
--- the epoch, and the position (epoch, batch) means the same on any number of ranks (a
--- checkpoint resumes on another world size). batch_size must be a multiple of world_size.
function Sampler.new(n, opts)
  opts = opts or {}
  local self = setmetatable({}, Sampler)
  self.n = n
  self.batch_size = opts.batch_size or 1
  if self.batch_size < 1 then error("Sampler: batch_size must be >= 1", 3) end
  self.shuffle = opts.shuffle ~= false
  self.seed = opts.seed or 0
  self.drop_last = opts.drop_last or false
  self.rank, self.world_size = opts.rank or 0, opts.world_size or 1
  if self.world_size < 1 or self.rank < 0 or self.rank >= self.world_size then
    error(string.format("Sampler: rank %s must lie in 0..world_size-1 (world_size %s)", tostring(self.rank), tostring(self.world_size)), 3)
  end
  if self.batch_size % self.world_size ~= 0 then
    error(string.format("Sampler: the global batch_size %d is not a multiple of the %d ranks; give a batch size divisible by the world size",
      self.batch_size, self.world_size), 3)
  end
  self.epoch, self.batch = 0, 0
  return self
end

--- sampler:num_batches() -> batches per epoch (drop_last drops a short last one).
function Sampler:num_batches()
  if self.drop_last then return math.floor(self.n / self.batch_size) end
  return math.ceil(self.n / self.batch_size)
end

--- sampler:order(epoch) -> 0-based int64 buffer of the epoch's sample order.
function Sampler:order(epoch)
  if self._order_epoch ~= epoch then
    if self.shuffle then
      self._order = permutation(self.n, self.seed, epoch * self.n)
    else
      self._order = range(0, self.n)
    end
    self._order_epoch = epoch
  end
  return self._order
end

--- sampler:batch_indices(epoch, b) -> pointer into the order, count (b 0-based).
function Sampler:batch_indices(epoch, b)
  local first = b * self.batch_size
  local count = math.min(self.batch_size, self.n - first)
  if self.world_size > 1 then   -- this rank's part of the global batch
    local lo = math.floor(self.rank * count / self.world_size)
    local hi = math.floor((self.rank + 1) * count / self.world_size)
    return self:order(epoch) + first + lo, hi - lo
  end
  return self:order(epoch) + first, count
end

--- sampler:state() -> {epoch=, batch=, seed=}: the next batch to produce.
--- sampler:state() -> {epoch, batch, seed}: the position, for a checkpoint.
function Sampler:state() return { epoch = self.epoch, batch = self.batch, seed = self.seed } end
--- sampler:set_state(s): resumes at a position from state().
function Sampler:set_state(s)
  self.epoch, self.batch = s.epoch or 0, s.batch or 0
  if s.seed then self.seed = s.seed; self._order_epoch = nil end
end

--- sampler:iter(fn) -> iterator over the rest of the current epoch: calls fn(ptr, count,
-- epoch, b) for each batch and returns its results. Advances (epoch, batch) as it goes; at
-- the end of the epoch the position moves to (epoch + 1, 0).
function Sampler:iter(fn)
  local nb = self:num_batches()
  return function()
    if self.batch >= nb then
      self.epoch, self.batch = self.epoch + 1, 0
      return nil
    end
    local e, b = self.epoch, self.batch
    local p, count = self:batch_indices(e, b)
    self.batch = b + 1
    return fn(p, count, e, b)
  end
end

-- ---- DataLoader -----------------------------------------------------------------------------------

local DataLoader = {}
DataLoader.__index = DataLoader
loader.DataLoader = setmetatable(DataLoader, { __call = function(_, ds, opts) return DataLoader.new(ds, opts) end })

--- DataLoader.new(dataset, {batch_size=64, shuffle=true, seed=0, drop_last=false,
--   dtype='float32' (uint8 pixels become x/255; 'uint8' keeps bytes; int64 inputs such as
--   token ids stay int64 by default), flatten=false,
--   device=nil (a device name such as 'cuda:0', or a device number, moves each batch there),
--   transform=function(x) -> x, rank=0, world_size=1 (data-parallel shards: see Sampler.new)})
function DataLoader.new(ds, opts)
  opts = opts or {}
  local self = setmetatable({}, DataLoader)
  self.dataset = ds
  self.sampler = Sampler.new(ds.n, { batch_size = opts.batch_size or 64, shuffle = opts.shuffle,
                                     seed = opts.seed, drop_last = opts.drop_last,
                                     rank = opts.rank, world_size = opts.world_size })
  self.batch_size = self.sampler.batch_size
  -- int64 inputs are token ids: they stay int64 unless a dtype is asked for
  self.dtype = opts.dtype or (ds.images:dtype() == "int64" and "int64" or "float32")
  self.flatten = opts.flatten or false
  self.device = opts.device
  self._device = loader.device_name(opts.device)
  self.transform = opts.transform
  return self
end

--- loader:num_batches() -> batches per epoch.
function DataLoader:num_batches() return self.sampler:num_batches() end
--- loader:state() -> {epoch, batch, seed}: the position, for a checkpoint (resume exactly).
function DataLoader:state() return self.sampler:state() end
--- loader:set_state(s): resumes at a position from state().
function DataLoader:set_state(s) self.sampler:set_state(s) end

--- loader:batch(epoch, b) -> x, y for batch b (0-based) of that epoch, without moving the position.
function DataLoader:batch(epoch, b)
  local p, count = self.sampler:batch_indices(epoch, b)
  return self:_make(p, count)
end

function DataLoader:_make(p, count)
  local x, y = self.dataset:gather(p, count, self.dtype)
  if self.flatten then
    x = x:view(count, self.dataset.sample_numel)
  end
  if self._device and self._device ~= "cpu" then
    x, y = x:to(self._device), y:to(self._device)
  end
  if self.transform then x = self.transform(x) end
  return x, y
end

--- loader:iter() -> for x, y, epoch, b in loader:iter() do ... end: the rest of this epoch.
function DataLoader:iter()
  return self.sampler:iter(function(p, count, e, b)
    local x, y = self:_make(p, count)
    return x, y, e, b
  end)
end

return loader

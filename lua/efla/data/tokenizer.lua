-- efla.data.tokenizer: byte-level and byte-pair (BPE) tokenizers for the language models.
--
--   local tokenizer = require 'efla.data.tokenizer'
--   local tok = tokenizer.byte()                       -- 256 ids: byte b is id b + 1
--   local tok = tokenizer.train_bpe(train_text, 1024)  -- 256 bytes + 768 learned merges
--   local ids = tok:encode("Call me Ishmael.")         -- Lua array of 1-based ids
--   tok:decode(ids) == "Call me Ishmael."              -- exact for any byte string
--   local meta = tok:to_meta()                          -- plain table (JSON, checkpoints)
--   local same = tokenizer.from_meta(meta)
--
-- Ids are 1-based as everywhere on efla's Lua side: ids 1..256 are the bytes (byte + 1,
-- as efla.data.text.encode), ids 257.. are merges in the order they were learned. BPE
-- works on bytes, so every string (any UTF-8, any binary) round-trips exactly.
--
-- Training: the text is cut into pieces (an optional space followed by a run of letters,
-- a run of digits or a run of other symbols; or a run of whitespace), merges never cross
-- a piece boundary, and each round merges the most frequent adjacent pair (ties: the
-- smallest pair of ids, so training is deterministic). Pair counts are updated
-- incrementally, touching only the distinct pieces that hold the merged pair.
local ffi = require 'ffi'

local tokenizer = {}

local BYTES = 256

-- ---- pieces ---------------------------------------------------------------------------------
-- The class of a byte: 1 letter (ASCII letters and every byte >= 128, so UTF-8 letters stay
-- together), 2 digit, 3 whitespace, 4 other.
local class = ffi.new('uint8_t[256]')
for b = 0, 255 do
  local c = string.char(b)
  if c:match('%a') or b >= 128 then class[b] = 1
  elseif c:match('%d') then class[b] = 2
  elseif c:match('%s') then class[b] = 3
  else class[b] = 4 end
end

-- Calls fn(piece) for the pieces of s in order; their concatenation is s. A piece is a
-- space followed by a run of one class (" word", " 42", " ..."), a run of one class, or a
-- run of whitespace (less its last space when that space starts the next piece).
local function each_piece(s, fn)
  local n = #s
  local p = ffi.cast('const uint8_t *', s)
  local i = 0
  while i < n do
    local start, j = i, i + 1
    local c = class[p[i]]
    if p[i] == 32 and j < n and class[p[j]] ~= 3 then
      c = class[p[j]]
      j = j + 1
      while j < n and class[p[j]] == c do j = j + 1 end
    elseif c == 3 then
      while j < n and class[p[j]] == 3 do j = j + 1 end
      if j < n and j - i > 1 and p[j - 1] == 32 then j = j - 1 end
    else
      while j < n and class[p[j]] == c do j = j + 1 end
    end
    i = j
    fn(s:sub(start + 1, i))
  end
end
--- tokenizer.each_piece(s, fn): calls fn(piece) for the pieces BPE works within, in order.
tokenizer.each_piece = each_piece

-- ---- the tokenizer object ------------------------------------------------------------------------
local Tokenizer = {}
Tokenizer.__index = Tokenizer

local function new(kind, merges)
  local self = setmetatable({ kind = kind, merges = merges or {} }, Tokenizer)
  self.vocab_size = BYTES + #self.merges
  -- rank[a][b] = the merge number (1-based) that joins ids a and b
  self.rank = {}
  -- piece bytes of every id, for decode
  self.bytes = {}
  for b = 0, BYTES - 1 do self.bytes[b + 1] = string.char(b) end
  for r, m in ipairs(self.merges) do
    local a, b = m[1], m[2]
    local id = BYTES + r
    if type(a) ~= 'number' or type(b) ~= 'number' or a < 1 or b < 1 or a >= id or b >= id or a % 1 ~= 0 or b % 1 ~= 0 then
      error(string.format('tokenizer: merge %d joins %s and %s; a merge may only join ids 1..%d learned before it',
        r, tostring(a), tostring(b), id - 1), 3)
    end
    self.rank[a] = self.rank[a] or {}
    self.rank[a][b] = r
    self.bytes[id] = self.bytes[a] .. self.bytes[b]
  end
  self.cache = {}
  self.cache_size = 0
  return self
end

--- tokenizer.byte() -> the byte-level tokenizer (vocab_size 256, id = byte + 1).
function tokenizer.byte() return new('byte') end

-- The ids of one piece: start from its bytes and apply the lowest-ranked merge present
-- until none applies (the order training learned them in).
local function byte_ids(piece)
  -- a loop, not {piece:byte(1, -1)}: that form aborts LuaJIT traces and runs ~20x slower
  local ids = {}
  for i = 1, #piece do ids[i] = piece:byte(i) + 1 end
  return ids
end

local function encode_piece(self, piece)
  local ids = byte_ids(piece)
  local rank = self.rank
  while #ids > 1 do
    local best, at = nil, nil
    for i = 1, #ids - 1 do
      local row = rank[ids[i]]
      local r = row and row[ids[i + 1]]
      if r and (best == nil or r < best) then best, at = r, i end
    end
    if not best then break end
    local merged = BYTES + best
    local a, b = ids[at], ids[at + 1]
    -- merge every occurrence of this pair, left to right
    local out, i = {}, 1
    while i <= #ids do
      if i < #ids and ids[i] == a and ids[i + 1] == b then
        out[#out + 1] = merged
        i = i + 2
      else
        out[#out + 1] = ids[i]
        i = i + 1
      end
    end
    ids = out
  end
  return ids
end

--- tok:encode_each(str, fn): calls fn(id) for the ids of str in order (no table of the
--- whole text: for corpora of many megabytes).
function Tokenizer:encode_each(s, fn)
  if type(s) ~= 'string' then error('tokenizer:encode: expected a string, got ' .. type(s), 2) end
  if self.kind == 'byte' then
    local p = ffi.cast('const uint8_t *', s)
    for i = 0, #s - 1 do fn(p[i] + 1) end
    return
  end
  local cache = self.cache
  each_piece(s, function(piece)
    local ids = cache[piece]
    if not ids then
      ids = encode_piece(self, piece)
      if self.cache_size > 200000 then cache = {}; self.cache = cache; self.cache_size = 0 end
      cache[piece] = ids
      self.cache_size = self.cache_size + 1
    end
    for i = 1, #ids do fn(ids[i]) end
  end)
end

--- tok:encode(str) -> Lua array of 1-based token ids.
function Tokenizer:encode(s)
  if type(s) ~= 'string' then error('tokenizer:encode: expected a string, got ' .. type(s), 2) end
  local out, n = {}, 0
  self:encode_each(s, function(id) n = n + 1; out[n] = id end)
  return out
end

--- tok:decode(ids) -> string. ids: a Lua array of ids in 1..vocab_size.
function Tokenizer:decode(ids)
  if type(ids) ~= 'table' then error('tokenizer:decode: expected a Lua array of token ids, got ' .. type(ids), 2) end
  local parts, bytes, V = {}, self.bytes, self.vocab_size
  for i = 1, #ids do
    local id = ids[i]
    local s = bytes[id]
    if s == nil then
      error(string.format('tokenizer:decode: %s (position %d) is not a token id of this tokenizer (1..%d)', tostring(id), i, V), 2)
    end
    parts[i] = s
  end
  return table.concat(parts)
end

--- tok:token_bytes(id) -> the bytes that id stands for (for printing tokens one by one).
function Tokenizer:token_bytes(id)
  return self.bytes[id] or error(string.format('tokenizer: %s is not a token id (1..%d)', tostring(id), self.vocab_size), 2)
end

--- tok:to_meta() -> a plain table ({type = 'byte'|'bpe', vocab_size, merges = {{a, b}, ...}})
--- that tokenizer.from_meta turns back into the same tokenizer.
function Tokenizer:to_meta()
  if self.kind == 'byte' then return { type = 'byte', vocab_size = BYTES } end
  local merges = {}
  for i, m in ipairs(self.merges) do merges[i] = { m[1], m[2] } end
  return { type = 'bpe', vocab_size = self.vocab_size, merges = merges }
end

function Tokenizer:__tostring()
  return string.format('Tokenizer(%s, vocab_size %d)', self.kind, self.vocab_size)
end

--- tokenizer.from_meta(meta) -> the tokenizer tok:to_meta() described.
function tokenizer.from_meta(meta)
  if type(meta) ~= 'table' then
    error('tokenizer.from_meta: expected the table tok:to_meta() returns, got ' .. type(meta), 2)
  end
  if meta.type == 'byte' then return tokenizer.byte() end
  if meta.type ~= 'bpe' then
    error("tokenizer.from_meta: type must be 'byte' or 'bpe', got " .. tostring(meta.type), 2)
  end
  if type(meta.merges) ~= 'table' then error('tokenizer.from_meta: a bpe tokenizer needs its merges list', 2) end
  local tok = new('bpe', meta.merges)
  if meta.vocab_size and meta.vocab_size ~= tok.vocab_size then
    error(string.format('tokenizer.from_meta: vocab_size %s does not match 256 + %d merges', tostring(meta.vocab_size), #meta.merges), 2)
  end
  return tok
end

-- ---- training ------------------------------------------------------------------------------------

--- tokenizer.train_bpe(text, vocab_size [, {on_progress = fn(merges_done, total)}]) -> a BPE
--- tokenizer with vocab_size ids (256 bytes + vocab_size - 256 merges), learned from text.
--- Stops early (a smaller vocabulary) when no pair occurs twice.
function tokenizer.train_bpe(text, vocab_size, opts)
  if type(text) ~= 'string' then error('tokenizer.train_bpe(text, vocab_size): text must be a string, got ' .. type(text), 2) end
  if type(vocab_size) ~= 'number' or vocab_size % 1 ~= 0 or vocab_size < BYTES then
    error(string.format('tokenizer.train_bpe: vocab_size must be a whole number >= 256 (the bytes), got %s', tostring(vocab_size)), 2)
  end
  opts = opts or {}
  -- distinct pieces with their counts; each piece as an array of ids
  local index, words, freq = {}, {}, {}
  each_piece(text, function(piece)
    local w = index[piece]
    if not w then
      w = #words + 1
      index[piece] = w
      words[w], freq[w] = byte_ids(piece), 0
    end
    freq[w] = freq[w] + 1
  end)
  index = nil
  -- pair key a * 65536 + b (vocabularies stay below 65536)
  local K = 65536
  if vocab_size >= K then error('tokenizer.train_bpe: vocab_size must be below 65536', 2) end
  local counts, where = {}, {}   -- pair -> count; pair -> set of words holding it
  local function add_word(w, sign)
    local ids, f = words[w], freq[w] * sign
    for i = 1, #ids - 1 do
      local key = ids[i] * K + ids[i + 1]
      counts[key] = (counts[key] or 0) + f
      if sign > 0 then
        local set = where[key]
        if not set then set = {}; where[key] = set end
        set[w] = true
      end
    end
  end
  for w = 1, #words do add_word(w, 1) end
  local merges = {}
  local want = vocab_size - BYTES
  while #merges < want do
    local best, best_count = nil, 1
    for key, c in pairs(counts) do
      if c > best_count or (c == best_count and best and key < best) then best, best_count = key, c end
    end
    if not best then break end
    local a, b = math.floor(best / K), best % K
    local id = BYTES + #merges + 1
    merges[#merges + 1] = { a, b }
    local holders = where[best]
    where[best] = nil
    for w in pairs(holders) do
      add_word(w, -1)
      local ids, out, i = words[w], {}, 1
      while i <= #ids do
        if i < #ids and ids[i] == a and ids[i + 1] == b then out[#out + 1] = id; i = i + 2
        else out[#out + 1] = ids[i]; i = i + 1 end
      end
      words[w] = out
      add_word(w, 1)
    end
    counts[best] = nil
    -- drop pairs whose count fell to zero so the scan stays short
    if #merges % 64 == 0 then
      for key, c in pairs(counts) do if c <= 0 then counts[key] = nil; where[key] = nil end end
    end
    if opts.on_progress then opts.on_progress(#merges, want) end
  end
  return new('bpe', merges)
end

return tokenizer

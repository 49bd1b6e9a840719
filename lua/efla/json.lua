-- efla/json.lua: a small JSON encoder and decoder (checkpoint metadata, configs, logs).
--
--   json.encode(value [, {indent = 2}]) -> string
--   json.decode(text) -> value
--
-- Encoding is deterministic: object keys are sorted, so equal tables give equal text (and
-- checkpoints written twice are byte-identical in their metadata). Numbers are written with
-- the fewest digits that read back to the same double. Decoding never runs code.
--
-- Lua <-> JSON:
--   tables with keys 1..n          <-> arrays (an empty table encodes as {}, unless it is
--                                      json.array{} or came from decoding [])
--   tables with string keys        <-> objects (number keys are written as strings)
--   json.null                      <-> null
--   NaN, Infinity, -Infinity       <-> the bare words NaN, Infinity, -Infinity (as Python's
--                                      json module writes and reads them; not strict JSON)
--   int64_t / uint64_t cdata       <-> integers, exactly; decoding gives such cdata back for
--                                      integer literals too large for a double to hold exactly
-- Errors name where the problem is: "json.decode: line 3, column 7: expected ',' or '}'",
-- "json.encode: config.layers[2].act: cannot encode a function".
local ffi = require 'ffi'

local json = {}

local byte, char, sub, find, format, concat = string.byte, string.char, string.sub, string.find, string.format, table.concat
local floor, huge, type_ = math.floor, math.huge, type

--- json.null: stands for JSON null inside Lua tables (where nil can't be stored).
json.null = setmetatable({}, { __tostring = function() return 'json.null' end, __name = 'json.null' })

--- json.array_mt: tables with this metatable encode as arrays even when empty.
json.array_mt = { __name = 'json.array' }
--- json.array(t): mark t (or a new table) as an array.
function json.array(t) return setmetatable(t or {}, json.array_mt) end

local int64_t, uint64_t = ffi.typeof('int64_t'), ffi.typeof('uint64_t')

-- ---- encoding -------------------------------------------------------------------------------
local escapes = { ['"'] = '\\"', ['\\'] = '\\\\', ['\b'] = '\\b', ['\f'] = '\\f', ['\n'] = '\\n',
  ['\r'] = '\\r', ['\t'] = '\\t' }
local function escape_char(c) return escapes[c] or format('\\u%04x', byte(c)) end

local function encode_string(s)
  return '"' .. s:gsub('[%c"\\]', escape_char) .. '"'
end

local function encode_number(x)
  if x ~= x then return 'NaN' end
  if x == huge then return 'Infinity' end
  if x == -huge then return '-Infinity' end
  if x == floor(x) and x > -1e15 and x < 1e15 then return format('%d', x) end
  for digits = 15, 17 do
    local s = format('%.' .. digits .. 'g', x)
    if tonumber(s) == x then return s end
  end
  return format('%.17g', x)
end

-- How a path to the value is shown in errors: config.layers[2].act
local function show_path(path)
  if #path == 0 then return '(top level)' end
  local out = {}
  for i, k in ipairs(path) do
    if type_(k) == 'number' then out[#out + 1] = '[' .. encode_number(k) .. ']'
    elseif k:match('^[%a_][%w_]*$') then out[#out + 1] = (i > 1 and '.' or '') .. k
    else out[#out + 1] = '[' .. encode_string(k) .. ']' end
  end
  return concat(out)
end

local function encode_error(path, msg)
  error('json.encode: ' .. show_path(path) .. ': ' .. msg, 0)
end

-- 'array' with n, or 'object' with the sorted list of {json key, lua key}.
local function classify(t, path)
  local n, count, max = 0, 0, 0
  local all_int = true
  for k in pairs(t) do
    count = count + 1
    if type_(k) == 'number' and k >= 1 and k == floor(k) then
      if k > max then max = k end
    else
      all_int = false
    end
  end
  if count == 0 then
    if getmetatable(t) == json.array_mt then return 'array', 0 end
    return 'object', {}
  end
  if all_int and max == count then return 'array', count end
  local keys, seen = {}, {}
  for k in pairs(t) do
    local tk = type_(k)
    local s
    if tk == 'string' then s = k
    elseif tk == 'number' then s = encode_number(k)
    else encode_error(path, 'a table key of type ' .. tk .. ' has no JSON form (keys must be strings or numbers)') end
    if seen[s] then encode_error(path, format('keys %q and %s both encode as the JSON key %q', tostring(seen[s]), tostring(k), s)) end
    seen[s] = k
    keys[#keys + 1] = s
  end
  table.sort(keys)
  for i, s in ipairs(keys) do keys[i] = { s, seen[s] } end
  return 'object', keys
end

local function encode_value(v, out, path, active, indent, depth)
  local tv = type_(v)
  if v == nil or v == json.null then out[#out + 1] = 'null'
  elseif tv == 'boolean' then out[#out + 1] = v and 'true' or 'false'
  elseif tv == 'number' then out[#out + 1] = encode_number(v)
  elseif tv == 'string' then out[#out + 1] = encode_string(v)
  elseif tv == 'cdata' then
    if ffi.istype(int64_t, v) or ffi.istype(uint64_t, v) then
      out[#out + 1] = (tostring(v):gsub('U?LL$', ''))
    else
      encode_error(path, 'cannot encode cdata of type ' .. tostring(ffi.typeof(v)) ..
        ' (a tensor? store tensors as datasets, not in JSON)')
    end
  elseif tv == 'table' then
    if active[v] then encode_error(path, 'the table contains itself (a cycle)') end
    active[v] = true
    local kind, info = classify(v, path)
    local nl, pad, pad_in = '', '', ''
    if indent then
      nl = '\n'
      pad = indent:rep(depth)
      pad_in = pad .. indent
    end
    if kind == 'array' then
      if info == 0 then out[#out + 1] = '[]'
      else
        out[#out + 1] = '[' .. nl
        for i = 1, info do
          if i > 1 then out[#out + 1] = ',' .. nl end
          out[#out + 1] = pad_in
          path[#path + 1] = i
          encode_value(v[i], out, path, active, indent, depth + 1)
          path[#path] = nil
        end
        out[#out + 1] = nl .. pad .. ']'
      end
    else
      if #info == 0 then out[#out + 1] = '{}'
      else
        out[#out + 1] = '{' .. nl
        for i, kk in ipairs(info) do
          if i > 1 then out[#out + 1] = ',' .. nl end
          out[#out + 1] = pad_in .. encode_string(kk[1]) .. (indent and ': ' or ':')
          path[#path + 1] = kk[2]
          encode_value(v[kk[2]], out, path, active, indent, depth + 1)
          path[#path] = nil
        end
        out[#out + 1] = nl .. pad .. '}'
      end
    end
    active[v] = nil
  else
    encode_error(path, 'cannot encode a ' .. tv .. ' (JSON holds tables, strings, numbers, booleans and json.null)')
  end
end

--- json.encode(value [, opts]): opts.indent = number of spaces (or a string) for pretty output.
function json.encode(value, opts)
  local indent = opts and opts.indent
  if type_(indent) == 'number' then indent = (' '):rep(indent) end
  local out = {}
  encode_value(value, out, {}, {}, indent, 0)
  return concat(out)
end

-- ---- decoding ----------------------------------------------------------------------------------
local MAX_DEPTH = 512

local function decode_error(text, pos, msg)
  local line, col = 1, 1
  local last_nl = 0
  for i = 1, math.min(pos - 1, #text) do
    if byte(text, i) == 10 then line = line + 1; last_nl = i end
  end
  col = pos - last_nl
  local near = sub(text, pos, pos + 15):gsub('%c', ' ')
  local where = pos > #text and 'at the end of the text' or format("near '%s'", near)
  error(format('json.decode: line %d, column %d (byte %d): %s %s', line, col, pos, msg, where), 0)
end

local function skip_ws(text, pos)
  return (find(text, '[^ \t\r\n]', pos)) or #text + 1
end

local function utf8_char(cp)
  if cp < 0x80 then return char(cp) end
  if cp < 0x800 then return char(0xC0 + floor(cp / 64), 0x80 + cp % 64) end
  if cp < 0x10000 then return char(0xE0 + floor(cp / 4096), 0x80 + floor(cp / 64) % 64, 0x80 + cp % 64) end
  return char(0xF0 + floor(cp / 262144), 0x80 + floor(cp / 4096) % 64, 0x80 + floor(cp / 64) % 64, 0x80 + cp % 64)
end

local simple_escapes = { [34] = '"', [92] = '\\', [47] = '/', [98] = '\b', [102] = '\f', [110] = '\n',
  [114] = '\r', [116] = '\t' }

local function decode_string(text, pos)
  -- pos is at the opening quote
  local parts = {}
  local i = pos + 1
  while true do
    local j = find(text, '["\\%c]', i)
    if not j then decode_error(text, pos, 'unterminated string starting') end
    if j > i then parts[#parts + 1] = sub(text, i, j - 1) end
    local c = byte(text, j)
    if c == 34 then return concat(parts), j + 1 end
    if c ~= 92 then decode_error(text, j, 'control character in a string (escape it as \\u00XX)') end
    local e = byte(text, j + 1)
    if simple_escapes[e] then
      parts[#parts + 1] = simple_escapes[e]
      i = j + 2
    elseif e == 117 then  -- \uXXXX, maybe a surrogate pair
      local hex = sub(text, j + 2, j + 5)
      if not hex:match('^%x%x%x%x$') then decode_error(text, j, 'bad \\u escape (need four hex digits)') end
      local cp = tonumber(hex, 16)
      i = j + 6
      if cp >= 0xD800 and cp <= 0xDBFF then
        local lo = sub(text, i, i + 5)
        if lo:match('^\\u[dD][c-fC-F]%x%x$') then
          cp = 0x10000 + (cp - 0xD800) * 1024 + (tonumber(sub(lo, 3), 16) - 0xDC00)
          i = i + 6
        else
          cp = 0xFFFD  -- a lone surrogate: the replacement character
        end
      elseif cp >= 0xDC00 and cp <= 0xDFFF then
        cp = 0xFFFD
      end
      parts[#parts + 1] = utf8_char(cp)
    else
      decode_error(text, j, 'bad escape in a string')
    end
  end
end

local TWO53 = 2 ^ 53

-- An integer literal too big for a double to hold exactly: int64_t/uint64_t cdata when it fits.
local function big_integer(s)
  local neg = sub(s, 1, 1) == '-'
  local digits = neg and sub(s, 2) or s
  if #digits > 20 then return nil end
  local v = ffi.new(uint64_t, 0)
  for k = 1, #digits do
    local d = byte(digits, k) - 48
    local nv = v * 10 + d
    if (nv - d) / 10 ~= v then return nil end  -- overflowed 64 bits
    v = nv
  end
  if neg then
    if v > 9223372036854775808ULL then return nil end
    return ffi.new(int64_t, -ffi.cast(int64_t, v))
  end
  if v <= 9223372036854775807ULL then return ffi.new(int64_t, v) end
  return v
end

local decode_value

local function decode_number(text, pos)
  local s = text:match('^-?%d+%.?%d*[eE]?[-+]?%d*', pos)
  if not s or s == '-' then decode_error(text, pos, 'expected a value') end
  -- the strict grammar: -?(0|[1-9]d*)(.d+)?([eE][+-]?d+)?
  local int, frac, exp = s:match('^(-?%d+)(%.?%d*)([eE]?[-+]?%d*)$')
  if not int or int:match('^-?0%d') or frac == '.' or (exp ~= '' and not exp:match('^[eE][-+]?%d+$')) then
    decode_error(text, pos, 'malformed number')
  end
  local x = tonumber(s)
  if frac == '' and exp == '' and (x >= TWO53 or x <= -TWO53) then
    local big = big_integer(s)
    if big ~= nil then return big, pos + #s end
  end
  return x, pos + #s
end

local function decode_array(text, pos, depth)
  local arr = {}
  local n = 0
  pos = skip_ws(text, pos + 1)
  if byte(text, pos) == 93 then return setmetatable(arr, json.array_mt), pos + 1 end
  while true do
    local v
    v, pos = decode_value(text, pos, depth)
    n = n + 1
    arr[n] = v
    pos = skip_ws(text, pos)
    local c = byte(text, pos)
    if c == 93 then return arr, pos + 1 end
    if c ~= 44 then decode_error(text, pos, "expected ',' or ']'") end
    pos = skip_ws(text, pos + 1)
  end
end

local function decode_object(text, pos, depth)
  local obj = {}
  pos = skip_ws(text, pos + 1)
  if byte(text, pos) == 125 then return obj, pos + 1 end
  while true do
    if byte(text, pos) ~= 34 then decode_error(text, pos, 'expected a string key') end
    local key
    key, pos = decode_string(text, pos)
    pos = skip_ws(text, pos)
    if byte(text, pos) ~= 58 then decode_error(text, pos, "expected ':'") end
    local v
    v, pos = decode_value(text, skip_ws(text, pos + 1), depth)
    obj[key] = v
    pos = skip_ws(text, pos)
    local c = byte(text, pos)
    if c == 125 then return obj, pos + 1 end
    if c ~= 44 then decode_error(text, pos, "expected ',' or '}'") end
    pos = skip_ws(text, pos + 1)
  end
end

local words = { ['true'] = true, ['false'] = false, ['null'] = json.null, ['NaN'] = 0 / 0,
  ['Infinity'] = huge, ['-Infinity'] = -huge }

decode_value = function(text, pos, depth)
  local c = byte(text, pos)
  if c == nil then decode_error(text, pos, 'expected a value') end
  if c == 34 then return decode_string(text, pos) end
  if c == 123 or c == 91 then
    if depth >= MAX_DEPTH then decode_error(text, pos, 'nested deeper than ' .. MAX_DEPTH .. ' levels') end
    if c == 123 then return decode_object(text, pos, depth + 1) end
    return decode_array(text, pos, depth + 1)
  end
  local word = text:match('^-?%a+', pos)
  if word then
    local v = words[word]
    if v == nil and word ~= 'false' then decode_error(text, pos, 'unexpected word') end
    return v, pos + #word
  end
  return decode_number(text, pos)
end

--- json.decode(text): the value; errors give the line, column and byte of the problem.
function json.decode(text)
  if type_(text) ~= 'string' then error('json.decode: expected a string, got ' .. type_(text), 2) end
  local pos = skip_ws(text, 1)
  local v
  v, pos = decode_value(text, pos, 0)
  pos = skip_ws(text, pos)
  if pos <= #text then decode_error(text, pos, 'unexpected text after the value') end
  return v
end

return json

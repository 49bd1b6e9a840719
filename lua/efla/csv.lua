-- csv.lua: CSV tables as RFC 4180 has them: a header row and rows of numbers or strings.
-- A field holding a comma, a double quote, a CR or a LF is written inside double quotes
-- (a quote inside it doubled), and reads back exactly; the reader takes LF or CRLF line
-- ends, quoted fields spanning lines and a leading UTF-8 byte-order mark. Unquoted fields
-- that parse as numbers come back as numbers; quoted fields always stay strings. Writes
-- are atomic (temporary file, then rename).
local data = require 'efla.data'   -- write_atomic

local csv = {}

local function cell(v)
  if type(v) == 'number' then
    if v == math.floor(v) and math.abs(v) < 1e15 then return string.format('%d', v) end
    return string.format('%.6g', v)
  end
  v = tostring(v == nil and '' or v)
  if v:find('[,"\r\n]') then v = '"' .. v:gsub('"', '""') .. '"' end
  return v
end

--- csv.format(header, rows) -> the CSV text (LF line ends): header = {'scale', 'efla'},
--- rows = {{1, 0.98}, ...}; each row is cut or padded (empty fields) to the header's width.
function csv.format(header, rows)
  local lines = {}
  local function line(r)
    local parts = {}
    for i = 1, #header do parts[i] = cell(r[i]) end
    lines[#lines + 1] = table.concat(parts, ',') .. '\n'
  end
  line(header)
  for _, r in ipairs(rows) do line(r) end
  return table.concat(lines)
end

--- csv.write(path, header, rows) -> path: csv.format's text, written atomically.
function csv.write(path, header, rows)
  return data.write_atomic(path, csv.format(header, rows))
end

--- csv.parse(text [, where]) -> list of rows (lists of fields). Raises "<where> line N: ..."
--- for a quote left open or a stray quote inside an unquoted field.
function csv.parse(text, where)
  where = where or 'csv'
  local rows, row = {}, {}
  local pos, n, line = 1, #text, 1
  if text:sub(1, 3) == '\239\187\191' then pos = 4 end   -- UTF-8 byte-order mark
  if pos > n then return rows end
  while true do
    local value, quoted
    if text:byte(pos) == 34 then   -- '"': a quoted field, up to the quote not doubled
      local parts, start_line = {}, line
      local i = pos + 1
      while true do
        local q = text:find('"', i, true)
        if not q then
          error(string.format('%s line %d: a quoted field is never closed (a missing \'"\'?)', where, start_line), 0)
        end
        local piece = text:sub(i, q - 1)
        local _, newlines = piece:gsub('\n', '')
        line = line + newlines
        parts[#parts + 1] = piece
        if text:byte(q + 1) == 34 then
          parts[#parts + 1] = '"'
          i = q + 2
        else
          pos = q + 1
          break
        end
      end
      value, quoted = table.concat(parts), true
      local after = text:sub(pos, pos)
      if after ~= '' and after ~= ',' and after ~= '\n' and not text:find('^\r\n', pos) then
        error(string.format('%s line %d: text after a closing quote (a quote inside a field must be doubled: "")',
          where, line), 0)
      end
    else
      local stop = text:find('[,\r\n"]', pos) or (n + 1)
      while text:byte(stop) == 13 and text:byte(stop + 1) ~= 10 do   -- a lone CR is data
        stop = text:find('[,\r\n"]', stop + 1) or (n + 1)
      end
      if text:byte(stop) == 34 then
        error(string.format('%s line %d: a quote inside an unquoted field (quote the whole field and double the quote)',
          where, line), 0)
      end
      value = text:sub(pos, stop - 1)
      pos = stop
    end
    row[#row + 1] = quoted and value or (tonumber(value) or value)
    local c = text:byte(pos)
    if c == 44 then               -- ','
      pos = pos + 1
    else                          -- end of the row: LF, CRLF or the end of the text
      rows[#rows + 1] = row
      row = {}
      if c == 13 then pos = pos + 2 elseif c == 10 then pos = pos + 1 end
      line = line + 1
      if pos > n then break end
    end
  end
  return rows
end

--- csv.read(path) -> header, rows (numbers converted where an unquoted field parses).
function csv.read(path)
  local f, err = io.open(path, 'rb')
  if not f then error(string.format('csv.read: cannot open %s (%s)', tostring(path), tostring(err)), 2) end
  local text = f:read('*a')
  f:close()
  local rows = csv.parse(text, path)
  local header = table.remove(rows, 1)
  return header, rows
end

return csv

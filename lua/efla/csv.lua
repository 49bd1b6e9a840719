-- csv.lua: write (and read back) simple CSV tables: a header row and rows of numbers or
-- strings. Writes are atomic (temporary file, then rename).
local data = require 'efla.data'   -- write_atomic

local csv = {}

local function cell(v)
  if type(v) == 'number' then
    if v == math.floor(v) and math.abs(v) < 1e15 then return string.format('%d', v) end
    return string.format('%.6g', v)
  end
  v = tostring(v == nil and '' or v)
  if v:find('[,"\n]') then v = '"' .. v:gsub('"', '""') .. '"' end
  return v
end

--- write(path, header, rows): header = {'scale', 'efla', 'deltanet'}, rows = {{1, 0.98, 0.97}, ...}
function csv.write(path, header, rows)
  local lines = {}
  local function line(r)
    local parts = {}
    for i = 1, #header do parts[i] = cell(r[i]) end
    lines[#lines + 1] = table.concat(parts, ',') .. '\n'
  end
  line(header)
  for _, r in ipairs(rows) do line(r) end
  return data.write_atomic(path, table.concat(lines))
end

--- read(path) -> header, rows (numbers converted where they parse).
function csv.read(path)
  local f = assert(io.open(path, 'r'))
  local header, rows = nil, {}
  for l in f:lines() do
    local r = {}
    for c in (l .. ','):gmatch('([^,]*),') do r[#r + 1] = tonumber(c) or c end
    if not header then header = r else rows[#rows + 1] = r end
  end
  f:close()
  return header, rows
end

return csv

-- efla/docstrings.lua: the `---` doc comments of efla's Lua sources, read lazily for help().
--
-- A function's doc is the block of `---` lines right above the line that defines it
-- (found with debug.getinfo, so a method, a local function exported under another name
-- or a function stored in a table all work). A module's doc is the `--` comment block at
-- the top of its file. Files are read once, on the first question about them.
local docstrings = {}

local file_lines = {}   -- path -> { lines } (false when unreadable)

local function lines_of(path)
  local cached = file_lines[path]
  if cached ~= nil then return cached or nil end
  local f = io.open(path, 'r')
  if not f then file_lines[path] = false; return nil end
  local lines = {}
  for line in f:lines() do lines[#lines + 1] = line end
  f:close()
  file_lines[path] = lines
  return lines
end

local function strip(line, marker)
  return (line:gsub('^%s*' .. marker .. ' ?', ''))
end

-- The doc block above line n of a file's lines (nil when none): the comment lines right
-- above it, from the first one that starts with `---` (a doc may go on with `--` lines).
local function block_above(lines, n)
  local top = n
  while top > 1 and lines[top - 1]:match('^%s*%-%-') do top = top - 1 end
  while top < n and not lines[top]:match('^%s*%-%-%-') do top = top + 1 end
  if top >= n then return nil end
  local out = {}
  for i = top, n - 1 do out[#out + 1] = strip(lines[i], '%-%-%-?') end
  return table.concat(out, '\n')
end

--- docstrings.of_function(fn) -> the `---` block above fn's definition, or nil.
function docstrings.of_function(fn)
  if type(fn) ~= 'function' then return nil end
  local info = debug.getinfo(fn, 'S')
  if not info or info.what ~= 'Lua' or info.source:sub(1, 1) ~= '@' then return nil end
  local lines = lines_of(info.source:sub(2))
  if not lines then return nil end
  local first = info.linedefined
  local out = {}
  local doc = block_above(lines, first)
  if doc then out[1] = doc end
  -- a one-line definition may carry its doc at the end: `f = function() end --- doc`
  if #out == 0 and lines[first] then
    local tail = lines[first]:match('%s%-%-%-%s*(.+)$')
    if tail then out[1] = tail end
  end
  if #out == 0 then return nil end
  return table.concat(out, '\n')
end

--- docstrings.of_class(cls) -> the `---` block above `class.new('Name'` in the file that
--- defines cls's methods, or nil.
function docstrings.of_class(cls)
  local name = rawget(cls, '__name')
  local files = {}
  for _, v in pairs(cls) do
    if type(v) == 'function' then
      local info = debug.getinfo(v, 'S')
      if info and info.source:sub(1, 1) == '@' then files[info.source:sub(2)] = true end
    end
  end
  local pattern = "class%.new%(%s*['\"]" .. name:gsub('%p', '%%%0') .. "['\"]"
  for path in pairs(files) do
    local lines = lines_of(path)
    for i, line in ipairs(lines or {}) do
      if line:find(pattern) then
        local doc = block_above(lines, i)
        if doc then return doc end
      end
    end
  end
  return nil
end

--- docstrings.of_file(path) -> the comment block at the top of a Lua file, or nil.
function docstrings.of_file(path)
  local lines = path and lines_of(path)
  if not lines then return nil end
  local out = {}
  for _, line in ipairs(lines) do
    if not line:match('^%-%-') then break end
    out[#out + 1] = strip(line, '%-%-%-?')
  end
  while #out > 0 and out[#out]:match('^%s*$') do out[#out] = nil end
  if #out == 0 then return nil end
  return table.concat(out, '\n')
end

--- docstrings.of_module(name) -> the top comment of module `name` ('efla.nn'), or nil.
function docstrings.of_module(name)
  local path = package.searchpath(name, package.path)
  return docstrings.of_file(path)
end

--- docstrings.summary(text) -> the first sentence or line of a doc, for one-line lists.
function docstrings.summary(text)
  if not text then return nil end
  local first = text:match('^[^\n]*')
  return first
end

return docstrings

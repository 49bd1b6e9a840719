-- args.lua: command-line options for recipes, with --help, defaults, types, choices and
-- clear errors ("--lr: expected a number, got 'abc'").
--
--   local opts = efla.args.parse(arg, {
--     name = 'smnist.lua', description = 'Train ...',
--     { '--method', default = 'efla', choices = { 'efla', 'deltanet', 'both' }, help = '...' },
--     { '--lr', type = 'number', help = 'learning rate (default: per method)' },
--     { '--quiet', type = 'boolean', help = 'no progress bar' },
--   })
-- Options become fields with dashes turned into underscores (opts.train_samples).
-- Positional arguments land in opts._ (a list).
--
-- Checks every value up front, from fields of the option's spec:
--   type = 'number'    a finite number; integer = true: a whole one; min = / max = (inclusive),
--                      above = (exclusive lower bound: above = 0 for a learning rate)
--   choices = {...}    one of these
--   type = 'device'    cpu, cuda or cuda:N, and the GPU must exist
--   must_exist = true  a path that must name an existing file
-- Every recipe also takes --debug. After parse, an error anywhere in the recipe prints one
-- line "<recipe>: <message>" and exits with status 2 (efla's cli asks args.report_error);
-- --debug or EFLA_DEBUG=1 shows the Lua traceback instead. Errors of Lua itself ("attempt
-- to index a nil value": a bug, not a user error) keep their traceback and status 1.
local args = {}

-- The recipe whose errors args.report_error formats: set by parse.
local active

local function key_of(flag) return (flag:gsub('^%-%-', ''):gsub('%-', '_')) end

--- args.usage(spec) -> the --help text of an option spec (what args.parse prints for --help).
local function usage(spec)
  local lines = { string.format('usage: efla %s [options]%s', spec.name or 'script.lua', spec.positional and (' ' .. spec.positional) or '') }
  if spec.description then lines[#lines + 1] = '\n' .. spec.description end
  lines[#lines + 1] = '\noptions:'
  for _, o in ipairs(spec) do
    local left = o[1] .. (o.type == 'boolean' and '' or (' ' .. (o.metavar or (o.type == 'number' and 'N' or 'VALUE'))))
    local right = o.help or ''
    if o.choices then right = right .. ' (' .. table.concat(o.choices, '|') .. ')' end
    if o.default ~= nil and o.type ~= 'boolean' then right = right .. ' [default: ' .. tostring(o.default) .. ']' end
    lines[#lines + 1] = string.format('  %-24s %s', left, right)
  end
  lines[#lines + 1] = string.format('  %-24s %s', '-h, --help', 'show this help and exit')
  if spec.epilog then lines[#lines + 1] = '\n' .. spec.epilog end
  return table.concat(lines, '\n')
end
args.usage = usage

-- Levenshtein distance between two strings (insertions, deletions, substitutions).
local function edit_distance(a, b)
  local prev = {}
  for j = 0, #b do prev[j] = j end
  for i = 1, #a do
    local cur = { [0] = i }
    local ai = a:byte(i)
    for j = 1, #b do
      local cost = ai == b:byte(j) and 0 or 1
      cur[j] = math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
    end
    prev = cur
  end
  return prev[#b]
end

--- args.suggest(flag, spec) -> the spec's options closest to a mistyped flag, closest first
--- (ties in alphabetical order), at most 3: those within a few edits of it or that start
--- with it (or it with them). {} when nothing is close.
function args.suggest(flag, spec)
  local typed = flag:gsub('^%-+', ''):lower()
  local scored = {}
  for _, o in ipairs(spec) do
    local name = o[1]:gsub('^%-+', ''):lower()
    local d = edit_distance(typed, name)
    local prefix = #typed >= 2 and (name:sub(1, #typed) == typed or typed:sub(1, #name) == name)
    if d <= math.max(2, math.floor(#typed / 3)) or prefix then
      scored[#scored + 1] = { flag = o[1], d = d }
    end
  end
  table.sort(scored, function(x, y) if x.d ~= y.d then return x.d < y.d end return x.flag < y.flag end)
  local out = {}
  for i = 1, math.min(3, #scored) do out[i] = scored[i].flag end
  return out
end

-- How a parse reports a bad option is a property of that call's spec only: exit = false
-- raises the message, anything else prints it with the usage and exits with status 2.
local function fail(spec, msg)
  if spec.exit == false then error(msg, 0) end
  io.stderr:write(string.format('%s: %s\n\n%s\n', spec.name or 'efla', msg, usage(spec)))
  os.exit(2)
end

local function check_device(spec, o, value)
  local kind, index = value:match('^(%a+):?(%d*)$')
  if kind ~= 'cpu' and kind ~= 'cuda' or (kind == 'cpu' and index ~= '') then
    fail(spec, string.format("%s: '%s' is not a device; use cpu, cuda or cuda:N", o[1], value))
  end
  if kind == 'cuda' then
    local efla = require 'efla'
    local n = efla.has_cuda() and efla.device_count('cuda') or 0
    if n == 0 then
      fail(spec, string.format('%s %s: no CUDA GPU is available (%s); use --device cpu', o[1], value,
        efla.has_cuda() and 'this efla has CUDA support, but found no GPU' or 'this efla was built without CUDA'))
    end
    if index ~= '' and tonumber(index) >= n then
      fail(spec, string.format('%s %s: there %s only %d GPU%s (cuda:0%s)', o[1], value, n == 1 and 'is' or 'are', n,
        n == 1 and '' or 's', n > 1 and ('..cuda:' .. (n - 1)) or ''))
    end
  end
  return value
end

-- The range an option's spec allows, in words: "a whole number >= 1".
local function range_words(o)
  local parts = {}
  if o.above ~= nil then parts[#parts + 1] = '> ' .. o.above end
  if o.min ~= nil then parts[#parts + 1] = '>= ' .. o.min end
  if o.max ~= nil then parts[#parts + 1] = '<= ' .. o.max end
  return (o.integer and 'a whole number' or 'a number') .. (#parts > 0 and (' ' .. table.concat(parts, ' and ')) or '')
end

local function convert(spec, o, value)
  if o.type == 'number' then
    local n = tonumber(value)
    if not n then fail(spec, string.format("%s: expected a number, got '%s'", o[1], value)) end
    if n ~= n or n == math.huge or n == -math.huge or (o.integer and n % 1 ~= 0) or (o.min ~= nil and n < o.min) or
       (o.max ~= nil and n > o.max) or (o.above ~= nil and n <= o.above) then
      fail(spec, string.format("%s: expected %s, got '%s'", o[1], range_words(o), value))
    end
    return n
  end
  if o.type == 'device' then return check_device(spec, o, value) end
  if o.must_exist then
    local f = io.open(value, 'rb')
    if not f then fail(spec, string.format("%s: no such file: %s", o[1], value)) end
    f:close()
  end
  if o.choices then
    for _, c in ipairs(o.choices) do if tostring(c) == value then return c end end
    fail(spec, string.format("%s: '%s' is not one of %s", o[1], value, table.concat(o.choices, ', ')))
  end
  return value
end

--- parse(argv, spec) -> options table. Exits with the usage on --help (status 0) or on a
--- bad option (status 2). Pass {exit = false} in spec to get errors raised instead.
function args.parse(argv, spec)
  local has_debug = false
  for _, o in ipairs(spec) do has_debug = has_debug or o[1] == '--debug' end
  if not has_debug then
    local copy = {}
    for k, v in pairs(spec) do copy[k] = v end
    copy[#spec + 1] = { '--debug', type = 'boolean', help = 'show Lua tracebacks for errors (also EFLA_DEBUG=1)' }
    spec = copy
  end
  local by_flag, out = {}, { _ = {} }
  for _, o in ipairs(spec) do
    by_flag[o[1]] = o
    out[key_of(o[1])] = o.default
    if o.type == 'boolean' and o.default == nil then out[key_of(o[1])] = false end
  end
  local i = 1
  while argv and argv[i] do
    local a = argv[i]
    if a == '-h' or a == '--help' then
      if spec.exit == false then error(usage(spec), 0) end
      print(usage(spec))
      os.exit(0)
    end
    local flag, inline = a:match('^(%-%-[%w%-]+)=(.*)$')
    flag = flag or a
    local o = by_flag[flag]
    if o then
      if o.type == 'boolean' then
        out[key_of(flag)] = inline == nil or inline == 'true' or inline == '1'
      else
        local value = inline
        if value == nil then
          i = i + 1
          value = argv[i]
          if value == nil then fail(spec, flag .. ': needs a value') end
        end
        out[key_of(flag)] = convert(spec, o, value)
      end
    elseif a:sub(1, 2) == '--' or (a:sub(1, 1) == '-' and not tonumber(a)) then
      local near = args.suggest(flag, spec)
      fail(spec, string.format("unknown option '%s'%s", a,
        #near > 0 and (' (did you mean ' .. table.concat(near, ', ') .. '?)') or ''))
    else
      table.insert(out._, a)
    end
    i = i + 1
  end
  for _, o in ipairs(spec) do
    if o.required and out[key_of(o[1])] == nil then fail(spec, o[1] .. ' is required') end
    -- defaults go through the same checks (a device default of 'cuda' on a CPU machine)
    local v = out[key_of(o[1])]
    if v ~= nil and v == o.default and o.type ~= 'boolean' then convert(spec, o, tostring(v)) end
  end
  if spec.exit ~= false then
    local env = os.getenv('EFLA_DEBUG')
    active = { name = spec.name or 'efla', debug = out.debug or (env ~= nil and env ~= '' and env ~= '0') }
  end
  return out
end

-- Lua's own runtime errors: a bug in efla or the recipe, not a user mistake.
local function is_lua_bug(msg)
  return msg:find('attempt to ', 1, true) or msg:find('bad argument #', 1, true) or
    msg:find('stack overflow', 1, true) or msg:find('table index is nil', 1, true)
end

--- args.report_error(err) -> message, status or nil: for efla's cli. After parse (and
--- without --debug or EFLA_DEBUG=1), an error of the recipe becomes the one line
--- "<recipe>: <message>" and exit status 2; nil means "report it with a traceback".
function args.report_error(err)
  if not active or active.debug or type(err) == 'table' then return nil end
  local msg = tostring(err)
  if is_lua_bug(msg) then return nil end
  -- a position inside the recipe or efla says nothing to someone at a shell
  msg = msg:gsub('^[^%s:]+%.lua:%d+: ', '')
  return string.format('%s: %s\n(for a Lua traceback: --debug or EFLA_DEBUG=1)', active.name, msg), 2
end

--- args.user_error(msg): raise msg as a user error (reported as one line, status 2).
function args.user_error(msg) error(msg, 0) end

return args

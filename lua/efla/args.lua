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
local args = {}

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

local function fail(spec, msg)
  io.stderr:write(string.format('%s: %s\n\n%s\n', spec.name or 'efla', msg, usage(spec)))
  os.exit(2)
end

local function convert(spec, o, value)
  if o.type == 'number' then
    local n = tonumber(value)
    if not n then fail(spec, string.format("%s: expected a number, got '%s'", o[1], value)) end
    return n
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
  if spec.exit == false then
    fail = function(_, msg) error(msg, 0) end
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
      local best
      for f in pairs(by_flag) do
        if f:find(a:sub(3, 5), 1, true) then best = f break end
      end
      fail(spec, string.format("unknown option '%s'%s", a, best and (" (did you mean " .. best .. "?)") or ''))
    else
      table.insert(out._, a)
    end
    i = i + 1
  end
  for _, o in ipairs(spec) do
    if o.required and out[key_of(o[1])] == nil then fail(spec, o[1] .. ' is required') end
  end
  return out
end

return args

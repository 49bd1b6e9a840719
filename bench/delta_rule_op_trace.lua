-- bench/delta_rule_op_trace.lua: calls of efla.ops.delta_rule forward+backward, one at a time
-- between synchronisations, for a profiler to list the kernels the operator runs and their
-- durations (the chunk kernels, the alpha chain, anything else the front end or autograd adds):
--
--   ncu --csv --metrics gpu__time_duration.sum bundle/bin/efla bench/delta_rule_op_trace.lua > trace.csv
--   bash bench/delta_rule_op_trace.sh                  (the same, summed per kernel: a table)
--
-- --step: decoding steps (efla.ops.delta_rule_step, one token, no gradient) instead.
-- The inputs are random bf16 (k scaled by d^-1/2, beta in (0, 1)); the first --warmup calls
-- are listed too (the table of delta_rule_op_trace.sh keeps the last call only).
local efla = require 'efla'

local opts = efla.args.parse(arg, {
  name = 'bench/delta_rule_op_trace.lua',
  description = 'efla.ops.delta_rule forward+backward calls, for a kernel profiler.',
  { '--shape', default = '8,2048,16,128', help = 'B,T,H,d (dk = dv = d)' },
  { '--dtype', default = 'bfloat16', choices = { 'bfloat16', 'float32' }, help = 'input dtype' },
  { '--order', default = 'exact', help = "'exact' (EFLA) or 1 (DeltaNet), 2, 3, 4" },
  { '--chunk', type = 'number', default = 64, help = 'chunk size' },
  { '--warmup', type = 'number', integer = true, min = 0, default = 2, help = 'calls before the last one' },
  { '--device', default = 'cuda', help = 'cuda[:N] (cpu only to check the script)' },
  { '--step', type = 'boolean', help = 'decoding steps instead: efla.ops.delta_rule_step of one token of B x H, no gradient' },
})
local B, T, H, d = opts.shape:match('^(%d+),(%d+),(%d+),(%d+)$')
if not B then
  io.stderr:write("delta_rule_op_trace: --shape must be B,T,H,d (four integers), got '" .. opts.shape .. "'\n")
  os.exit(2)
end
B, T, H, d = tonumber(B), tonumber(T), tonumber(H), tonumber(d)
local dev = opts.device
efla.manual_seed(1)
local function on_device(t) return t:to(opts.dtype):to(dev) end
local q, v, dO = on_device(efla.randn(B, T, H, d)), on_device(efla.randn(B, T, H, d)), on_device(efla.randn(B, T, H, d))
local k = on_device(efla.randn(B, T, H, d) * (d ^ -0.5))
local beta = on_device(efla.rand(B, T, H))
for _, x in ipairs({ q, k, v, beta }) do x:requires_grad_(true) end
local dr = { order = opts.order == 'exact' and 'exact' or tonumber(opts.order), chunk_size = opts.chunk }
local function sync() if dev ~= 'cpu' then efla.synchronize(dev) end end
if opts.step then   -- one token's q, k, v, beta (contiguous, as a model's projections give them) and a state
  local state = on_device(efla.randn(B, H, d, d) * 0.1):to(opts.dtype == 'bfloat16' and 'float32' or opts.dtype)
  local one = function(x) return x:narrow(2, 1, 1):squeeze(2):contiguous():detach() end
  local q1, k1, v1, b1 = one(q), one(k), one(v), one(beta)
  for _ = 1, opts.warmup + 1 do
    sync()
    local _, s = efla.ops.delta_rule_step(q1, k1, v1, b1, state, { order = dr.order })
    sync()
    state = s
  end
  print(string.format('delta_rule_op_trace: %d decoding step calls at B=%d H=%d d=%d %s, order %s',
    opts.warmup + 1, B, H, d, opts.dtype, tostring(dr.order)))
  os.exit(0)
end
for i = 1, opts.warmup + 1 do
  for _, x in ipairs({ q, k, v, beta }) do x.grad = nil end
  sync()
  efla.ops.delta_rule(q, k, v, beta, dr):backward(dO)
  sync()
end
print(string.format('delta_rule_op_trace: %d forward+backward calls at B=%d T=%d H=%d d=%d %s, order %s, chunk %d',
  opts.warmup + 1, B, T, H, d, opts.dtype, tostring(dr.order), opts.chunk))

-- bench/delta_rule_gpu.lua: the delta-rule operator (efla.ops.delta_rule) forward and
-- forward+backward on the GPU, in milliseconds and achieved TFLOP/s against the bf16 GEMM
-- ceiling of the same machine.
--
--   efla bench/delta_rule_gpu.lua [--ceiling TFLOPS]     (H200; without --ceiling a quick
--                                                          8192^3 bf16 matmul measures it)
--   efla bench/delta_rule_gpu.lua --device cpu --shapes 1,256,2,32 --dtypes float32   (check)
--
-- FLOP count (docs/MATH.md §4, the chunked WY form with chunk C): per token and head
--   F = 2 * (3*dk*dv + 2*C*(dk + dv) + C^2/3)
-- forward = B*T*H*F; forward+backward = 3 * forward (the backward counted as twice the
-- forward, the usual convention for matrix products). These are the FLOPs of the chunked
-- algorithm whatever algorithm the backend actually runs, so the TFLOP/s compare the
-- implementation against what the tensor-core form would need.
--
-- q, k, v: randn (k scaled by dk^-0.5 so that lambda = |k|^2 is about 1), beta: rand in
-- (0, 1); order 'exact' (EFLA) unless --order. Each row is measured under pcall: a shape
-- that runs out of memory or fails prints as such. Rows past --deadline seconds are skipped.
local efla = require 'efla'
local wall = require('efla.progress').wall

local opts = efla.args.parse(arg, {
  name = 'bench/delta_rule_gpu.lua',
  description = 'efla.ops.delta_rule forward and forward+backward timings.',
  { '--device', default = 'cuda', help = 'cuda[:N] or cpu (cpu only to check the script)' },
  { '--shapes', default = '8,2048,16,128;4,8192,16,128', help = 'B,T,H,d[;B,T,H,d...] (dk = dv = d)' },
  { '--dtypes', default = 'bfloat16,float32', help = 'comma-separated dtypes' },
  { '--order', default = 'exact', help = "'exact' (EFLA) or 1 (DeltaNet), 2, 3, 4" },
  { '--chunk', type = 'number', default = 64, help = 'chunk size C (also used in the FLOP count)' },
  { '--algorithm', default = 'auto', choices = { 'auto', 'chunked', 'recurrent' }, help = 'delta_rule algorithm' },
  { '--ceiling', type = 'number', help = 'bf16 GEMM TFLOP/s measured earlier in this run (else measured here)' },
  { '--ceiling-n', type = 'number', default = 8192, help = 'matmul size for measuring the ceiling here' },
  { '--reps', type = 'number', default = 10, help = 'timed calls per measurement at most' },
  { '--budget', type = 'number', default = 6, help = 'seconds at most per measurement (after 3 calls)' },
  { '--deadline', type = 'number', default = 100, help = 'skip the remaining rows after this many seconds' },
})
local dev = opts.device
local order = opts.order == 'exact' and 'exact' or tonumber(opts.order)
local t_start = wall()

local function sync() efla.synchronize(dev) end

-- bench(fn, cleanup): seconds per call (median, best, samples). Each call is timed alone
-- between synchronisations; cleanup (outside the timing) drops results and collects.
local function bench(fn, cleanup)
  local t0 = wall()
  fn(); sync()
  local first = wall() - t0
  cleanup()
  fn(); sync(); cleanup()                              -- second warm-up (allocator cache)
  local times, start = {}, wall()
  local reps = first > opts.budget / 3 and 3 or opts.reps
  for _ = 1, reps do
    t0 = wall()
    fn(); sync()
    times[#times + 1] = wall() - t0
    cleanup()
    if #times >= 3 and wall() - start > opts.budget then break end
  end
  table.sort(times)
  return times[math.floor((#times + 1) / 2)], times[1], #times
end

local function num(x) return x >= 100 and string.format('%.0f', x) or string.format('%.3g', x) end
local function clean(msg) return (tostring(msg):gsub('[\n|]', ' '):sub(1, 200)) end

-- The ceiling: given, or a quick bf16 matmul here.
local ceiling, ceiling_src = opts.ceiling, 'given'
if not ceiling or ceiling <= 0 then
  ceiling_src = 'measured here'
  local ok, err = pcall(function()
    local n = opts.ceiling_n
    local dt = dev == 'cpu' and 'float32' or 'bfloat16'
    local a = efla.randn(n, n, { dtype = dt, device = dev })
    local med = bench(function() return a:matmul(a) end, function() end)
    ceiling = 2 * n ^ 3 / med / 1e12
    if dev == 'cpu' then ceiling_src = 'measured here (float32 on cpu)' end
  end)
  if not ok then ceiling, ceiling_src = nil, 'unavailable: ' .. clean(err) end
  collectgarbage('collect')
end

local function parse_shapes(s)
  local list = {}
  for part in s:gmatch('[^;]+') do
    local B, T, H, d = part:match('^%s*(%d+),(%d+),(%d+),(%d+)%s*$')
    if not B then error("--shapes: expected B,T,H,d[;B,T,H,d...], got '" .. part .. "'", 0) end
    list[#list + 1] = { tonumber(B), tonumber(T), tonumber(H), tonumber(d) }
  end
  return list
end

-- rows are printed as they are measured, so that a run cut short still shows them
local results = {}
local function row(...) print(string.format('| %s | %s | %s | %s | %s |', ...)); io.stdout:flush() end

local function flops_fwd(B, T, H, dk, dv, C)
  return B * T * H * 2 * (3 * dk * dv + 2 * C * (dk + dv) + C * C / 3)
end

local function measure(shape, dtype)
  local B, T, H, d = shape[1], shape[2], shape[3], shape[4]
  local cfg = string.format('B=%d T=%d H=%d dk=dv=%d %s', B, T, H, d, dtype)
  local key = string.format('%s_B%dT%d', dtype, B, T)
  local fwd_flop = flops_fwd(B, T, H, d, d, opts.chunk)
  local dr_opts = { order = order, chunk_size = opts.chunk, algorithm = opts.algorithm, output_final_state = false }
  for _, mode in ipairs({ 'forward', 'forward+backward' }) do
    local what = 'delta_rule ' .. mode
    if wall() - t_start > opts.deadline then
      row(what, cfg, 'skipped', '-', string.format('past the %g s deadline', opts.deadline))
    else
      local ok, err = pcall(function()
        local q = efla.randn(B, T, H, d, { device = dev, dtype = dtype })
        local k = efla.randn(B, T, H, d, { device = dev, dtype = dtype }) * (1 / math.sqrt(d))
        local v = efla.randn(B, T, H, d, { device = dev, dtype = dtype })
        local beta = efla.rand(B, T, H, { device = dev, dtype = dtype })
        local fn, cleanup, flop
        local hold
        if mode == 'forward' then
          flop = fwd_flop
          fn = function() hold = efla.ops.delta_rule(q, k, v, beta, dr_opts) end
          cleanup = function() hold = nil; collectgarbage('collect') end
        else
          flop = 3 * fwd_flop
          for _, x in ipairs({ q, k, v, beta }) do x:requires_grad_(true) end
          local grad = efla.randn(B, T, H, d, { device = dev, dtype = dtype })
          fn = function()
            hold = efla.ops.delta_rule(q, k, v, beta, dr_opts)
            hold:backward(grad)
          end
          cleanup = function()
            hold = nil
            for _, x in ipairs({ q, k, v, beta }) do x.grad = nil end
            collectgarbage('collect')
          end
        end
        local med, best, n = bench(fn, cleanup)
        local tflops = flop / med / 1e12
        results[key .. (mode == 'forward' and '_fwd' or '_fwdbwd') .. '_ms'] = med * 1e3
        row(what, cfg, string.format('%.3f (%.3f)', med * 1e3, best * 1e3),
          string.format('%s TFLOP/s', num(tflops)),
          ceiling and string.format('%.2f%% of bf16 GEMM; median of %d', 100 * tflops / ceiling, n) or string.format('median of %d', n))
      end)
      if not ok then
        local msg = clean(err)
        local oom = msg:lower():find('memory') and 'out of memory: ' or 'failed: '
        row(what, cfg, 'n/a', '-', oom .. msg)
      end
      collectgarbage('collect')
    end
  end
end

local shapes = parse_shapes(opts.shapes)
print(string.format('\n### Delta rule (%s, order %s, chunk %d, algorithm %s)\n', dev, tostring(order), opts.chunk, opts.algorithm))
print(string.format('bf16 GEMM ceiling: %s (%s). FLOPs per token and head 2(3 dk dv + 2C(dk+dv) + C^2/3); '
  .. 'forward+backward counted as 3x forward.\n', ceiling and (num(ceiling) .. ' TFLOP/s') or 'n/a', ceiling_src))
print('| measurement | configuration | ms (best) | achieved | vs ceiling |')
print('|---|---|---|---|---|')
for dtype in opts.dtypes:gmatch('[^,%s]+') do
  for _, s in ipairs(shapes) do measure(s, dtype) end
end
print(string.format('\n(delta rule benchmark took %.1f s)', wall() - t_start))
local keys = {}
for k in pairs(results) do keys[#keys + 1] = k end
table.sort(keys)
for _, k in ipairs(keys) do print(string.format('RESULT %s=%.4f', k, results[k])) end

-- bench/gpu_ceilings.lua: the ceilings the other GPU benchmarks are measured against, in the
-- same run: cuBLAS GEMM TFLOP/s in bfloat16 and in float32 with TF32 tensor cores (through
-- efla's matmul, so any overhead of the binding is included), and device-to-device copy GB/s.
--
--   efla bench/gpu_ceilings.lua                          (H200: n = 8192, copy 1 GiB)
--   efla bench/gpu_ceilings.lua --device cpu --n 256 --copy-mb 16      (a quick check here)
--
-- Prints a markdown table, then RESULT key=value lines that bench/gpu_bench.sh reads.
-- Timing: warm-up, then samples of --inner back-to-back calls between two synchronisations;
-- the median sample is reported (the best in parentheses). Results are dropped and garbage
-- collected between samples, outside the timed region, so the caching allocator reuses blocks.
local efla = require 'efla'
local wall = require('efla.progress').wall

local opts = efla.args.parse(arg, {
  name = 'bench/gpu_ceilings.lua',
  description = 'GEMM (bf16, TF32) and device-to-device copy ceilings.',
  { '--device', default = 'cuda', help = 'cuda[:N] or cpu (cpu only to check the script)' },
  { '--n', type = 'number', default = 8192, help = 'GEMM size n (n x n times n x n)' },
  { '--copy-mb', type = 'number', default = 1024, help = 'size of the copied tensor in MiB' },
  { '--reps', type = 'number', default = 7, help = 'timed samples per measurement' },
  { '--inner', type = 'number', default = 5, help = 'calls per timed sample' },
  { '--budget', type = 'number', default = 10, help = 'seconds at most per measurement (after 3 samples)' },
})
local dev = opts.device

local function sync() efla.synchronize(dev) end

-- bench(fn): seconds per call, median and best over the samples.
local function bench(fn)
  -- warm-up (cuBLAS heuristics; the allocator caches as many outputs as a sample holds)
  local keep = {}
  for j = 1, opts.inner do keep[j] = fn() end
  sync()
  keep = nil; collectgarbage('collect')
  local times, start = {}, wall()
  for _ = 1, opts.reps do
    keep = {}
    local t0 = wall()
    for j = 1, opts.inner do keep[j] = fn() end
    sync()
    times[#times + 1] = (wall() - t0) / opts.inner
    keep = nil; collectgarbage('collect')
    if #times >= 3 and wall() - start > opts.budget then break end
  end
  table.sort(times)
  return times[math.floor((#times + 1) / 2)], times[1], #times
end

-- 3 significant digits below 100, none above (TFLOP/s and GB/s)
local function num(x) return x >= 100 and string.format('%.0f', x) or string.format('%.3g', x) end

-- rows are printed as they are measured, so that a run cut short still shows them
local results = {}
local function row(what, config, ms, rate, note)
  print(string.format('| %s | %s | %s | %s | %s |', what, config, ms, rate, note or ''))
  io.stdout:flush()
end

local function gemm(dtype, tf32, label, key)
  local n = opts.n
  local note
  local ok, err = pcall(function()
    local prev
    if tf32 ~= nil then
      local okt, p = pcall(efla.cuda_set_tf32, tf32)
      if okt then prev = p else note = 'TF32 switch unavailable: ' .. tostring(p):gsub('\n', ' ') end
    end
    local a = efla.randn(n, n, { dtype = dtype, device = dev })
    local b = efla.randn(n, n, { dtype = dtype, device = dev })
    local med, best, k = bench(function() return a:matmul(b) end)
    if prev ~= nil then efla.cuda_set_tf32(prev) end
    local flop = 2 * n ^ 3
    results[key] = flop / med / 1e12
    row(label, string.format('%d^3 %s', n, dtype), string.format('%.3f (%.3f)', med * 1e3, best * 1e3),
      string.format('%s TFLOP/s (best %s)', num(flop / med / 1e12), num(flop / best / 1e12)),
      string.format('median of %d%s', k, note and ('; ' .. note) or ''))
  end)
  if not ok then row(label, string.format('%d^3 %s', n, dtype), 'failed', '-', tostring(err):gsub('[\n|]', ' ')) end
  collectgarbage('collect')
end

local function copy()
  local numel = math.floor(opts.copy_mb * 1024 * 1024 / 4)
  local ok, err = pcall(function()
    local x = efla.empty(numel, { dtype = 'float32', device = dev }):fill_(1)
    local y = efla.empty(numel, { dtype = 'float32', device = dev }):fill_(2)
    local med, best, k = bench(function() y:copy_(x) end)
    local bytes = 2 * numel * 4   -- each copy reads and writes every byte
    results.copy_gbs = bytes / med / 1e9
    row('device-to-device copy (y:copy_(x))', string.format('%d MiB float32, read + write counted', opts.copy_mb),
      string.format('%.3f (%.3f)', med * 1e3, best * 1e3),
      string.format('%s GB/s (best %s)', num(bytes / med / 1e9), num(bytes / best / 1e9)), string.format('median of %d', k))
  end)
  if not ok then row('device-to-device copy', string.format('%d MiB', opts.copy_mb), 'failed', '-', tostring(err):gsub('[\n|]', ' ')) end
  collectgarbage('collect')
end

local t_start = wall()
print(string.format('\n### Ceilings (%s, %s)\n', dev, efla.version()))
print('| measurement | configuration | ms (best) | rate | note |')
print('|---|---|---|---|---|')
gemm('bfloat16', nil, 'cuBLAS GEMM bf16 (fp32 accumulate)', 'bf16_tflops')
gemm('float32', true, 'cuBLAS GEMM TF32 (efla.cuda_set_tf32(true))', 'tf32_tflops')
copy()
print(string.format('\n(ceilings took %.1f s)', wall() - t_start))
for _, k in ipairs({ 'bf16_tflops', 'tf32_tflops', 'copy_gbs' }) do
  if results[k] then print(string.format('RESULT %s=%.4f', k, results[k])) end
end

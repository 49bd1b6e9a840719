-- test_bench_tools.lua: the benchmark helpers that run here as well as on the GPU machine:
-- bench/ncu_summary.py (Nsight Compute's details page -> one row per kernel) and
-- bench/ncu_wavefronts.py (its source page -> shared wavefronts by opcode) on fixtures in ncu's
-- format, and bench/smnist_step_efla.lua's --compute (resolved as the sMNIST recipe does).
-- Run: build/efla tests/lua/test_bench_tools.lua
local t = dofile((arg[0]:match('^(.*[/\\])') or './') .. 'testlib.lua')
local test, ok, eq = t.test, t.ok, t.eq

local bin = os.getenv('EFLA_BIN') or require('efla.cli').executable()   -- this efla (a build or a bundle)
local tmp = (os.getenv('EFLA_TEST_TMP') or '/tmp') .. '/lua_test_bench_tools'
local root = (arg[0]:match('^(.*[/\\])') or './') .. '../../'   -- the repository, from any directory
local summary, smnist = "'" .. root .. "bench/ncu_summary.py'", "'" .. root .. "bench/smnist_step_efla.lua'"
local wavefronts = "'" .. root .. "bench/ncu_wavefronts.py'"
os.execute("mkdir -p '" .. tmp .. "'")

local python = t.python

local function run(cmd)   -- output and whether the command exited 0
  local out, code = t.run(cmd)
  return out, code == 0
end

-- a python tool on a fixture written to tmp/file: its output lines, or nil (skipped) without python3
local function tool_lines(script, name, file, fixture)
  local py = python()
  if not py then t.skip(name, 'python3 is not installed (scripts/install-deps.sh installs it)'); return nil end
  local path = tmp .. '/' .. file
  t.write_file(path, fixture)
  local out, success = run(py .. ' ' .. script .. " '" .. path .. "'")
  ok(success, name .. ' failed: ' .. out)
  local lines = {}
  for line in out:gmatch('[^\n]+') do lines[#lines + 1] = line end
  return lines, out
end

-- two kernels as ncu prints them: the first with every figure the summary reads, the second
-- without bank-conflict or barrier advice (ncu prints none where it sees nothing to say)
local DETAILS = [[
==PROF== Connected to process 1
  void <unnamed>::bwd_chunk_kernel<__nv_bfloat16, 64, 128, 128>(<unnamed>::ArgsT<T1>) (256, 16, 1)x(512, 1, 1), Context 1, Stream 7, Device 0, CC 9.0
    Section: GPU Speed Of Light Throughput
    ----------------------- ----------- ------------
    Metric Name             Metric Unit Metric Value
    ----------------------- ----------- ------------
    Duration                         ms         1.04
    L1/TEX Cache Throughput           %        71.03
    Compute (SM) Throughput           %        29.24
    ----------------------- ----------- ------------
    OPT   Est. Speedup: 39.81%
          The memory access pattern for shared loads might not be optimal and causes on average a 2.7 - way bank
          conflict across all 43458560 shared load requests.This results in 65106209 bank conflicts,  which represent
          56.05% of the overall 116166945 wavefronts for shared loads. Check the Source Counters section for
    OPT   Est. Speedup: 38.73%
          The memory access pattern for shared stores might not be optimal and causes on average a 3.9 - way bank
          conflict across all 7749632 shared store requests.This results in 16523289 bank conflicts,  which represent
          54.53% of the overall 30302233 wavefronts for shared stores. Check the Source Counters section for
    Section: Warp State Statistics
    OPT   Est. Speedup: 30.9%
          On average, each warp of this workload spends 4.5 cycles being stalled waiting for sibling warps at a CTA
          barrier. A high number of warps waiting at a barrier is commonly caused by diverging code paths before a
          first. This stall type represents about 31.8% of the total average of 14.3 cycles between issuing two
    Section: Occupancy
    Achieved Occupancy                        %        23.73
  void <unnamed>::out_kernel<float, 64, 64, 64>(<unnamed>::ArgsT<T1>) (13, 1, 1)x(512, 1, 1), Context 1, Stream 7, Device 0, CC 9.0
    Section: GPU Speed Of Light Throughput
    Duration                         us       217.89
    L1/TEX Cache Throughput           %        76.71
    Compute (SM) Throughput           %        58.81
]]

test('ncu_summary.py: one row per kernel, every figure where ncu gave it, - where not', function()
  local lines, out = tool_lines(summary, 'ncu_summary.py', 'details.txt', DETAILS)
  if not lines then return end
  eq(#lines, 4, 'a header, its rule and two kernels: ' .. out)
  eq(lines[3], '| `bwd_chunk_kernel<bf16, 64, 128, 128>` | 1.04 ms | 71.03 | 29.24 | 23.73 | 56.05 % (2.7-way) | 54.53 % (3.9-way) | 31.8 % |')
  eq(lines[4], '| `out_kernel<float, 64, 64, 64>` | 217.89 us | 76.71 | 58.81 | - | - | - | - |')
end)

test('ncu_summary.py: a file that is not ncu output, or none, is a clear error', function()
  local py = python()
  if not py then t.skip('ncu_summary.py errors', 'python3 is not installed'); return end
  local out, success = run(py .. ' ' .. summary .. " '" .. root .. "README.md'")
  ok(not success and out:find('no kernel in', 1, true) and out:find('README.md', 1, true), out)
  out, success = run(py .. ' ' .. summary .. " '" .. tmp .. "/missing.txt'")
  ok(not success and out:find('cannot read', 1, true), out)
end)

-- ncu's source page (--csv --print-source sass), cut to the columns the summary reads: one
-- kernel with two STS.64 (one 2-way), a cp.async, a predicated load and an instruction with no
-- shared traffic
local SOURCE = [[
"Kernel Name","void v2::<unnamed>::state_scan_kernel<__nv_bfloat16, (int)64, (int)128, (int)64, (bool)0>(v2::<unnamed>::ArgsT<T1>)",
"Address","Source","# Samples","L1 Wavefronts Shared Excessive","L1 Wavefronts Shared","L1 Wavefronts Shared Ideal"
"0x10","      LDC R1, c[0x0][0x28]","45","0","0","0"
"0x20","      STS.64 [R3], R4","3","100","200","100"
"0x30","      STS.64 [R3+0x8], R6","3","0","100","100"
"0x40","      LDGSTS.E.BYPASS.128 [R11+0x11400], desc[UR24][R8.64]","7","1,620","2,620","1,000"
"0x50","  @P0 LDS.64 R8, [R2]","1","0","50","50"
]]

test('ncu_wavefronts.py: shared wavefronts by opcode, largest first, predicates skipped', function()
  local lines, out = tool_lines(wavefronts, 'ncu_wavefronts.py', 'source.csv', SOURCE)
  if not lines then return end
  eq(#lines, 6, 'a title, a header, its rule and three opcodes: ' .. out)
  eq(lines[1], 'state_scan_kernel<bf16, 64, 128, 64, 0>: 2.97e+03 shared wavefronts, ideal 1.25e+03, excess 1.72e+03')
  eq(lines[4], '| LDGSTS.E.BYPASS.128 | 2.62e+03 | 1e+03 | 1.62e+03 | 1.62 |')
  eq(lines[5], '| STS.64 | 300 | 200 | 100 | 0.50 |')
  eq(lines[6], '| LDS.64 | 50 | 50 | 0 | 0.00 |')
  local success
  out, success = run(python() .. ' ' .. wavefronts .. " '" .. root .. "README.md'")
  ok(not success and out:find('no kernel with shared-memory wavefront counters', 1, true), out)
end)

test('smnist_step_efla.lua: --compute as the recipe takes it, named in the row', function()
  local out, success = run(bin .. ' ' .. smnist .. ' --device cpu --batch 2 --warmup 0 --steps 1 --methods efla --compute bfloat16')
  ok(success, out)
  ok(out:find('compute bfloat16', 1, true), 'the row names the compute dtype: ' .. out)
  ok(out:find('RESULT efla_ms=', 1, true), out)
  out, success = run(bin .. ' ' .. smnist .. ' --device cpu --steps 1 --compute float16')
  ok(not success and out:find('--compute', 1, true) and not out:find('stack traceback', 1, true), 'a bad --compute names the option: ' .. out)
  out, success = run(bin .. ' ' .. smnist .. ' --device cpu --batch 2 --warmup 0 --steps 1 --methods efla')
  ok(success and out:find('compute float32', 1, true), 'auto on the CPU is float32: ' .. out)
end)

t.done()

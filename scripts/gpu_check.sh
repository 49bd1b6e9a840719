#!/usr/bin/env bash
# gpu_check.sh: checks efla's CUDA backend on a machine with a GPU, from the repository root,
# using the relocatable bundle built elsewhere by scripts/make_bundle.sh (./bundle; no
# compiler needed here). Logs go to $OUT (or /tmp/efla-gpu-check); the summary is printed last.
#
#   bash scripts/gpu_check.sh            test_cuda + test_backend_ops + efla -e smoke checks + a small timing
#   EFLA_SANITIZE=1 bash scripts/...     also run test_cuda under compute-sanitizer (slow: run it
#                                        alone, e.g. EFLA_SANITIZE=1 with a 600 s limit)
#   EFLA_ALL=1 bash scripts/...          also the bundle's other C and Lua tests
set -u
cd "$(dirname "$0")/.."
LOG=${OUT:-/tmp/efla-gpu-check}
mkdir -p "$LOG"
B=${EFLA_BUNDLE:-bundle}
summary=()
note() { summary+=("$1"); }

if [[ ! -x $B/bin/efla ]]; then
  echo "gpu_check: no bundle at ./$B (build it with: bash scripts/make_bundle.sh, then carry it)" >&2
  exit 2
fi
{
  echo "== machine"; uname -a; nvidia-smi -L 2>&1; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
  ls -d /usr/local/cuda* 2>&1; (. /etc/os-release && echo "$PRETTY_NAME"); ldd --version 2>&1 | head -1
} > "$LOG/env.log" 2>&1
cat "$LOG/env.log"

. "$B/bin/efla-env.sh"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH" >> "$LOG/env.log"
ldd "$B/lib/libefla.so" "$B/bin/efla" 2>&1 | grep -E "not found" >> "$LOG/env.log" && note "MISSING LIBRARIES: see env.log"

echo "== test_cuda"
start=$(date +%s)
timeout 300 "$B/tests/bin/test_cuda" > "$LOG/test_cuda.log" 2>&1
rc=$?
grep -E "^FAIL|FATAL|skipped|passed, .* failed" "$LOG/test_cuda.log" | head -n 120
note "test_cuda: rc=$rc, $(grep -E 'passed, .* failed' "$LOG/test_cuda.log" | tail -1) ($(( $(date +%s) - start ))s)"

echo "== test_backend_ops (every op x backend x dtype against the float64 cpu)"
start=$(date +%s)
timeout 300 "$B/tests/bin/test_backend_ops" > "$LOG/test_backend_ops.log" 2>&1
rc=$?
grep -E "^FAIL|FATAL|backends:|cases,|passed, .* failed" "$LOG/test_backend_ops.log" | head -n 120
note "test_backend_ops: rc=$rc, $(grep -E 'passed, .* failed' "$LOG/test_backend_ops.log" | tail -1) ($(( $(date +%s) - start ))s)"

if [[ ${EFLA_SANITIZE:-0} == 1 ]] && command -v compute-sanitizer >/dev/null 2>&1; then
  echo "== compute-sanitizer memcheck test_cuda"
  timeout 540 compute-sanitizer --tool memcheck --print-limit 20 "$B/tests/bin/test_cuda" > "$LOG/sanitizer.log" 2>&1
  note "compute-sanitizer: rc=$? $(grep -E 'ERROR SUMMARY' "$LOG/sanitizer.log" | tail -1)"
fi

echo "== efla -e smoke checks"
smoke() {   # name, lua code
  local out
  out=$(timeout 120 "$B/bin/efla" -e "$2" 2>&1)
  local rc=$?
  printf '%s (rc=%d)\n%s\n\n' "$1" "$rc" "$out" >> "$LOG/smoke.log"
  echo "$1: rc=$rc"; echo "$out" | tail -n 6
  note "smoke $1: rc=$rc"
}
: > "$LOG/smoke.log"
smoke version "print(efla.version(), 'cuda devices:', efla.cuda.device_count(), 'available:', efla.cuda.is_available()); local p = efla.cuda.properties(); print(p.name, p.total_memory, p.multiprocessors, p.compute_capability)"
smoke matmul "
local x = efla.randn(256, 128)
local g = x:cuda()
local y = g:matmul(g:t())
local ref = x:matmul(x:t())
local d = (y:cpu() - ref):abs():max():item()
print('matmul on', y:device(), 'max |gpu - cpu|', d)
assert(d < 1e-3, 'gpu and cpu matmul differ')"
smoke ops "
local x = efla.randn(1000, 64):cuda()
local s = x:softmax(-1):sum():item()
print('softmax rows sum to', s / 1000)
local l = x:layer_norm():mean():item()
print('layer_norm mean', l)
print('memory', efla.cuda_memory_stats())
assert(math.abs(s / 1000 - 1) < 1e-5)"
smoke autograd "
local w = efla.randn(32, 16):cuda()
w:requires_grad_(true)
local loss = w:matmul(w:t()):sum()
loss:backward()
print('grad on', w.grad:device(), 'norm', w.grad:norm():item())"
smoke oom "
local ok, err = pcall(function() return efla.empty(2^48, {device = 'cuda'}) end)
print('1 PiB allocation ->', ok, err)
local z = efla.ones(4, 4):cuda():sum():item()
print('device still usable:', z)
assert(not ok and z == 16)"

echo "== timing (delta rule and matmul on the GPU; informative)"
timing=$(timeout 120 "$B/bin/efla" -e "
local ffi = require 'ffi'
pcall(ffi.cdef, 'typedef struct { long s, ns; } efla_gc_ts; int clock_gettime(int, efla_gc_ts *);')
local ts = ffi.new('efla_gc_ts')
local function now() efla.synchronize('cuda'); ffi.C.clock_gettime(1, ts); return tonumber(ts.s) + tonumber(ts.ns) * 1e-9 end
local ok, err = pcall(function()
  local a = efla.randn(4096, 4096):cuda()
  a:matmul(a)
  local t0 = now(); for i = 1, 10 do a:matmul(a) end; local t = (now() - t0) / 10
  print(string.format('matmul 4096^3 float32: %.2f ms, %.1f TFLOP/s', t * 1e3, 2 * 4096^3 / t / 1e12))
end)
if not ok then print('matmul timing failed: ' .. tostring(err)) end
if efla.ops and efla.ops.delta_rule then
  local ok2, err2 = pcall(function()
    local B, T, H, d = 4, 2048, 8, 128
    local q = efla.randn(B, T, H, d):cuda(); local k = (efla.randn(B, T, H, d) * 0.1):cuda()
    local v = efla.randn(B, T, H, d):cuda(); local beta = efla.rand(B, T, H):cuda()
    efla.ops.delta_rule(q, k, v, beta)
    local t0 = now(); local o = efla.ops.delta_rule(q, k, v, beta); local t = now() - t0
    print(string.format('delta_rule fwd B=%d T=%d H=%d d=%d: %.2f ms', B, T, H, d, t * 1e3))
  end)
  if not ok2 then print('delta_rule timing failed: ' .. tostring(err2)) end
end" 2>&1)
echo "$timing" | tee "$LOG/timing.log"

if [[ ${EFLA_ALL:-0} == 1 ]]; then
  echo "== the bundle's other tests"
  timeout 300 "$B/tests/run.sh" > "$LOG/all_tests.log" 2>&1
  note "tests/run.sh: rc=$? ($(grep -c FAILED "$LOG/all_tests.log") failed files)"
  grep -E "^==|passed, .* failed|FAILED" "$LOG/all_tests.log" | tail -n 40
fi

echo
echo "== summary"
for s in "${summary[@]}"; do echo "  $s"; done
echo "logs in $LOG"

#!/usr/bin/env bash
# gpu_bench.sh: the GPU benchmarks of the CUDA backend, in one call on the GPU machine, from
# the repository root with the relocatable bundle (bash scripts/make_bundle.sh, carried as
# ./bundle) and a python3 that has PyTorch with CUDA:
#
#   bash bench/gpu_bench.sh
#
# Parts, the most important first (each under its own time limit, so the whole stays under
# about 8 minutes even if one hangs; normally it takes 2-3):
#   1. bench/gpu_ceilings.lua     cuBLAS bf16 and TF32 GEMM TFLOP/s, device-to-device copy GB/s
#   2. bench/smnist_step_efla.lua the sMNIST training step (batch 128, T 784, d 64) in efla
#   3. bench/torch_smnist_ref.py  the same step in PyTorch with the published token-by-token loop
#   4. bench/delta_rule_gpu.lua   efla.ops.delta_rule fwd and fwd+bwd, bf16 and float32, at
#                                 B=8 T=2048 and B=4 T=8192, H=16, dk=dv=128, vs the ceiling of 1
# Everything goes to $OUT/gpu_bench.log (default /tmp/efla-gpu-bench), each part also to its
# own log there; a combined markdown table (with the sMNIST speed-up and the 20x target) is
# printed last.
#
# Checking the script on a machine without a GPU (tiny sizes on the cpu):
#   EFLA_BENCH_QUICK=1 EFLA_BIN=build-x/efla PYTHON=/usr/bin/python3 bash bench/gpu_bench.sh
set -u
cd "$(dirname "$0")/.."
DIR=${OUT:-/tmp/efla-gpu-bench}
mkdir -p "$DIR"
LOG=$DIR/gpu_bench.log
: > "$LOG"
B=${EFLA_BUNDLE:-bundle}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1

if [[ -n ${EFLA_BIN:-} ]]; then
  EFLA=$EFLA_BIN
elif [[ -x $B/bin/efla ]]; then
  . "$B/bin/efla-env.sh"
  EFLA=$B/bin/efla
else
  echo "gpu_bench: no bundle at ./$B (build it with: bash scripts/make_bundle.sh, then carry it), and no EFLA_BIN" >&2
  exit 2
fi

if [[ ${EFLA_BENCH_QUICK:-0} == 1 ]]; then   # a check of the plumbing on the cpu, tiny sizes
  A_CEIL=(--device cpu --n 256 --copy-mb 16)
  A_SMNIST=(--device cpu --batch 4 --warmup 1 --steps 2)
  A_TORCH=(--device cpu --batch 2 --warmup 1 --steps 1)
  A_DELTA=(--device cpu --shapes "1,256,2,32;1,512,2,64" --dtypes float32 --ceiling-n 256)
else
  A_CEIL=(); A_SMNIST=(); A_TORCH=(); A_DELTA=()
fi

say() { echo "$*" | tee -a "$LOG"; }
# part NAME LIMIT_S command...: runs it under a time limit, output to the screen, the combined
# log and $DIR/NAME.log; a part that fails or times out is noted and the rest go on.
part() {
  local name=$1 limit=$2; shift 2
  say ""
  say "== $name (limit ${limit}s): $*"
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$DIR/$name.log" | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  [[ $rc == 124 || $rc == 137 ]] && say "!! $name: stopped after ${limit}s (time limit); the rows above are what it finished"
  [[ $rc != 0 && $rc != 124 && $rc != 137 ]] && say "!! $name: exit status $rc"
  say "($name: $(( SECONDS - t0 ))s)"
}
# result NAME KEY: the value of 'RESULT KEY=value' in $DIR/NAME.log, or empty
result() { sed -n "s/^RESULT $2=//p" "$DIR/$1.log" 2>/dev/null | tail -1; }
# rows NAME: the data rows of the markdown tables in $DIR/NAME.log
rows() { grep -E '^\| ' "$DIR/$1.log" 2>/dev/null | grep -v -E '^\| measurement \|' || true; }

start=$SECONDS
{
  echo "== machine"
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 | head -3
  "$EFLA" -e "print('efla ' .. efla.version() .. ', cuda devices: ' .. efla.device_count('cuda'))" 2>&1
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())" 2>&1 | tail -1
} | tee -a "$LOG"

part ceilings 60 "$EFLA" bench/gpu_ceilings.lua "${A_CEIL[@]}"
part smnist_efla 110 "$EFLA" bench/smnist_step_efla.lua "${A_SMNIST[@]}"
part smnist_torch 150 "$PY" bench/torch_smnist_ref.py --methods efla,deltanet "${A_TORCH[@]}"
ceiling=$(result ceilings bf16_tflops)
part delta_rule 150 "$EFLA" bench/delta_rule_gpu.lua ${ceiling:+--ceiling "$ceiling"} "${A_DELTA[@]}"

# ---- the combined table ----------------------------------------------------------------------
speedup_row() {   # label efla_key torch_key target_note
  local e t
  e=$(result smnist_efla "$2"); t=$(result smnist_torch "$3")
  if [[ -n $e && -n $t ]]; then
    awk -v e="$e" -v t="$t" -v l="$1" -v target="$4" 'BEGIN {
      r = t / e
      note = target ? ("target >= 20x: " (r >= 20 ? "met" : "NOT met")) : "for comparison (the target is for EFLA)"
      printf "| sMNIST step speed-up, %s: PyTorch loop / efla | same step as above (efla: the slower of step and loop, as the recipe computes: bfloat16 mixed on a GPU; PyTorch: float32, as published) | %.1f / %.2f | **%.1fx** | %s |\n",
        l, t, e, r, note }'
  else
    echo "| sMNIST step speed-up, $1 | same step as above | n/a | n/a | efla: ${e:-missing} ms, torch: ${t:-missing} ms |"
  fi
}
{
  echo
  echo "== combined table ($(( SECONDS - start ))s in all)"
  echo
  echo "| measurement | configuration | ms (best) | rate | note |"
  echo "|---|---|---|---|---|"
  rows ceilings
  rows delta_rule
  rows smnist_efla
  rows smnist_torch
  speedup_row EFLA efla_ms torch_efla_ms 1
  speedup_row DeltaNet deltanet_ms torch_deltanet_ms 0
  echo
  echo "logs in $DIR"
} | tee -a "$LOG"

#!/usr/bin/env bash
# gpu_reliability.sh: the GPU half of docs/RELIABILITY.md, on a machine with a GPU, from the
# repository root, with the bundle built by scripts/make_bundle.sh (as scripts/gpu_check.sh).
#   bash scripts/gpu_reliability.sh oom         out-of-memory in the middle of a training step
#   bash scripts/gpu_reliability.sh racecheck   compute-sanitizer racecheck over test_cuda (slow)
#   bash scripts/gpu_reliability.sh synccheck   compute-sanitizer synccheck over test_cuda (slow)
#   bash scripts/gpu_reliability.sh all         the three in turn (may need more than 600 s)
# Logs go to $OUT (default /tmp/efla-gpu-reliability); the summary is printed last.
set -u
cd "$(dirname "$0")/.."
LOG=${OUT:-/tmp/efla-gpu-reliability}
mkdir -p "$LOG"
B=${EFLA_BUNDLE:-bundle}
mode=${1:-all}
summary=()
if [[ ! -x $B/bin/efla ]]; then
  echo "gpu_reliability: no bundle at ./$B (build it with: bash scripts/make_bundle.sh, then carry it)" >&2
  exit 2
fi
. "$B/bin/efla-env.sh"
nvidia-smi -L > "$LOG/env.log" 2>&1

if [[ $mode == oom || $mode == all ]]; then
  echo "== out of memory mid-step"
  timeout 300 "$B/bin/efla" scripts/gpu_oom_midstep.lua "$LOG/oom-checkpoints" > "$LOG/oom.log" 2>&1
  rc=$?
  tail -n 8 "$LOG/oom.log"
  summary+=("oom mid-step: rc=$rc $(grep -o 'oom_midstep: PASS.*' "$LOG/oom.log" || echo FAILED)")
fi

sanitize() {   # tool
  if ! command -v compute-sanitizer >/dev/null 2>&1; then summary+=("$1: compute-sanitizer not found"); return; fi
  echo "== compute-sanitizer --tool $1 test_cuda"
  # the test's deliberate 1 PiB allocation is reported by memcheck only; racecheck and
  # synccheck look at shared-memory hazards and barrier use inside the kernels
  timeout 560 compute-sanitizer --tool "$1" --print-limit 50 "$B/tests/bin/test_cuda" > "$LOG/$1.log" 2>&1
  local rc=$?
  grep -E "ERROR SUMMARY|RACECHECK SUMMARY|hazard|Barrier|passed, .* failed" "$LOG/$1.log" | tail -n 20
  summary+=("$1: rc=$rc $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$LOG/$1.log" | tail -1)")
}
[[ $mode == racecheck || $mode == all ]] && sanitize racecheck
[[ $mode == synccheck || $mode == all ]] && sanitize synccheck

echo
echo "== summary"
for s in "${summary[@]}"; do echo "  $s"; done
echo "logs in $LOG"

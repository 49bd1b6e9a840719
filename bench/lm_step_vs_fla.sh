#!/usr/bin/env bash
# lm_step_vs_fla.sh: efla (bench/lm_step_gpu.lua, from the bundle) and flash-linear-attention
# (bench/lm_step_fla.py) training steps on the same GPU in one run, byte-level and 125M-class
# models, with and without the delta rule (--delta-rule-noop), efla's real rows with the per-op
# memory report and once more with --recompute-states, plus efla with its generic kernels
# (EFLA_CUDA_GENERIC=1: no fast norm/conv/SwiGLU/elementwise paths) for a before/after ratio in
# the same run; logs in $OUT.
#
#   bash scripts/make_bundle.sh          (on the build machine), then on the GPU machine:
#   bash bench/lm_step_vs_fla.sh         [STEPS=10] [MODELS="byte 125m"] [EFLA_BUNDLE=bundle]
#                                        [CHECK=1: the CUDA tests of the fast paths first]
#                                        [GENERIC=0: leave out the EFLA_CUDA_GENERIC=1 rows]
#                                        [REPEAT=3: the table three times, interleaved]
#                                        [NOOP=0: leave out the --delta-rule-noop rows]
#                                        [FLA_PER_STEP=1: fla's steps also timed one by one]
#
# fla's first step on a shape autotunes its Triton kernels (over 200 s for the byte model on an
# H100 with a cold cache). bench/triton_autotune_cache.sh keeps the choices: restored from
# .peers/triton-autotune.tgz when it was carried along, saved to $OUT/triton-autotune.tgz at the
# end (copy it to .peers/ for the next call). Each fla process gets FLA_LIMIT seconds (400).
set -u
cd "$(dirname "$0")/.."
LOG=${OUT:-/tmp/efla-lm-step}
mkdir -p "$LOG"
B=${EFLA_BUNDLE:-bundle}
STEPS=${STEPS:-10}
MODELS=${MODELS:-"byte 125m"}
export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-/tmp/efla-triton-cache}
. bench/triton_autotune_cache.sh
triton_autotune_restore
if [[ ! -x $B/bin/efla ]]; then echo "lm_step_vs_fla: no bundle at ./$B (bash scripts/make_bundle.sh)" >&2; exit 2; fi
. "$B/bin/efla-env.sh"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee "$LOG/gpu.txt"
if [[ ${CHECK:-0} == 1 ]]; then
  echo "== the fast paths' CUDA tests"
  timeout 300 "$B/tests/bin/test_backend_ops" -b cuda > "$LOG/backend_ops.log" 2>&1; echo "test_backend_ops rc=$?"
  for t in test_fused test_foreach_cuda test_mixed_precision; do
    timeout 120 "$B/bin/efla" tests/lua/$t.lua > "$LOG/$t.log" 2>&1; echo "$t rc=$?"
  done
fi
# REPEAT=N runs the whole table N times, efla and fla interleaved, for the spread between runs
# (fla's step time has moved by up to 1.6x between device calls)
for rep in $(seq "${REPEAT:-1}"); do
[[ ${REPEAT:-1} -gt 1 ]] && echo "== round $rep of $REPEAT"
for m in $MODELS; do
  noops=("" "--delta-rule-noop"); [[ ${NOOP:-1} == 0 ]] && noops=("")
  for noop in "${noops[@]}"; do
    echo "== $m ${noop:-(real delta rule)}"
    report=--memory-report; [[ -n $noop ]] && report=
    timeout 280 "$B/bin/efla" bench/lm_step_gpu.lua --model "$m" --steps "$STEPS" $noop $report 2>&1 |
      tee -a "$LOG/efla.txt" | tail -n +2
    if [[ -z $noop ]]; then
      timeout 280 "$B/bin/efla" bench/lm_step_gpu.lua --model "$m" --steps "$STEPS" --recompute-states 2>&1 |
        tee -a "$LOG/efla_recompute.txt" | tail -n 2 | sed 's/^/  (--recompute-states) /'
      if [[ ${GENERIC:-1} == 1 ]]; then
        EFLA_CUDA_GENERIC=1 timeout 280 "$B/bin/efla" bench/lm_step_gpu.lua --model "$m" --steps "$STEPS" 2>&1 |
          tee -a "$LOG/efla_generic.txt" | tail -n 2 | sed 's/^/  (EFLA_CUDA_GENERIC=1) /'
      fi
    fi
    per_step=(); [[ ${FLA_PER_STEP:-0} == 1 ]] && per_step=(--per-step)
    timeout "${FLA_LIMIT:-400}" python3 bench/lm_step_fla.py --model "$m" --steps "$STEPS" $noop "${per_step[@]}" 2>&1 |
      tee -a "$LOG/fla.txt" | tail -n +3
    if [[ $m == 125m && -z $noop ]]; then
      timeout "${FLA_LIMIT:-400}" python3 bench/lm_step_fla.py --model "$m" --steps "$STEPS" --flce "${per_step[@]}" 2>&1 |
        tee -a "$LOG/fla.txt" | tail -n $(( 1 + ${#per_step[@]} ))
    fi
  done
done
done
triton_autotune_save "$LOG"
echo "logs in $LOG"

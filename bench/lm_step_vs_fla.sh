#!/usr/bin/env bash
# lm_step_vs_fla.sh: efla (bench/lm_step_gpu.lua, from the bundle) and flash-linear-attention
# (bench/lm_step_fla.py) training steps on the same GPU in one run, byte-level and 125M-class
# models, with and without the delta rule (--delta-rule-noop), one table each; logs in $OUT.
#
#   bash scripts/make_bundle.sh          (on the build machine), then on the GPU machine:
#   bash bench/lm_step_vs_fla.sh         [STEPS=10] [MODELS="byte 125m"] [EFLA_BUNDLE=bundle]
set -u
cd "$(dirname "$0")/.."
LOG=${OUT:-/tmp/efla-lm-step}
mkdir -p "$LOG"
B=${EFLA_BUNDLE:-bundle}
STEPS=${STEPS:-10}
MODELS=${MODELS:-"byte 125m"}
if [[ ! -x $B/bin/efla ]]; then echo "lm_step_vs_fla: no bundle at ./$B (bash scripts/make_bundle.sh)" >&2; exit 2; fi
. "$B/bin/efla-env.sh"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee "$LOG/gpu.txt"
for m in $MODELS; do
  for noop in "" "--delta-rule-noop"; do
    echo "== $m ${noop:-(real delta rule)}"
    timeout 280 "$B/bin/efla" bench/lm_step_gpu.lua --model "$m" --steps "$STEPS" $noop 2>&1 | tee -a "$LOG/efla.txt" | tail -n +2
    timeout 280 python3 bench/lm_step_fla.py --model "$m" --steps "$STEPS" $noop 2>&1 | tee -a "$LOG/fla.txt" | tail -n +3
    if [[ $m == 125m && -z $noop ]]; then
      timeout 280 python3 bench/lm_step_fla.py --model "$m" --steps "$STEPS" --flce 2>&1 | tee -a "$LOG/fla.txt" | tail -n 1
    fi
  done
done
echo "logs in $LOG"

#!/usr/bin/env bash
# bench/dp_scaling.sh: data-parallel scaling of bench/lm_step_gpu.lua's byte-level LM on 1..N
# GPUs of one machine (bench/dp_step.lua under efla-run, the same per-GPU batch), with the
# gradient buckets' all-reduce bus bandwidth, and NCCL's own all-reduce figure for the same
# bytes when nccl-tests' all_reduce_perf is installed. Prints a table for docs/BENCHMARKS.md.
#
#   bash bench/dp_scaling.sh [max_gpus] [extra bench/dp_step.lua flags...]
#   EFLA=bundle/bin/efla bash bench/dp_scaling.sh 8
# Needs: a CUDA build of efla, NCCL on the machine (libnccl.so.2), two GPUs or more.
set -euo pipefail
cd "$(dirname "$0")/.."
EFLA=${EFLA:-build/efla}
RUN=$(dirname "$EFLA")/efla-run
[ -x "$RUN" ] || RUN=scripts/efla-run
gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
[ "${gpus:-0}" -ge 1 ] || { echo "dp_scaling: no GPU visible (nvidia-smi -L lists none)" >&2; exit 1; }
max=${1:-$gpus}
shift || true
[ "$max" -le "$gpus" ] || { echo "dp_scaling: asked for $max GPUs, $gpus visible" >&2; exit 1; }
export NCCL_NVLS_ENABLE=0      # NVLink multicast stays off on the lent machines
echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(nvidia-smi --query-gpu=name --format=csv,noheader | head -n1) x $gpus, efla $($EFLA -e 'io.write(efla.version())')"
out=$(mktemp)
header=--header
for n in 1 2 4 8; do
  [ "$n" -le "$max" ] || break
  "$RUN" --efla "$EFLA" --no-prefix --nproc-per-node "$n" bench/dp_step.lua $header "$@" | tee -a "$out"
  header=
done
# speed-up against one GPU (tokens/s is column 4)
awk 'NR == 1 { next } $1 == 1 { base = $4 } base { printf "# %d GPUs: %.2fx one GPU'"'"'s tokens/s (%.0f%% efficiency), bucket all-reduce %s GB/s bus bandwidth\n", $1, $4 / base, 100 * $4 / base / $1, $8 }' "$out"
if command -v all_reduce_perf >/dev/null 2>&1; then
  bytes=$(awk 'NR > 1 && $1 > 1 { printf "%d", $5 * 1048576; exit }' "$out")
  echo "# NCCL's own all-reduce (nccl-tests) on $max GPUs at ${bytes:-?} bytes:"
  all_reduce_perf -b "${bytes:-64M}" -e "${bytes:-64M}" -g "$max" -w 5 -n 20 | grep -E '^ +[0-9]|busbw' || true
else
  echo "# nccl-tests' all_reduce_perf is not installed: compare busbw with NCCL's figure for this machine by hand"
fi
rm -f "$out"

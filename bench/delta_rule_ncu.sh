#!/usr/bin/env bash
# delta_rule_ncu.sh: where each tensor-core chunk kernel's time goes, by Nsight Compute: its
# shared-memory and SM throughput, occupancy, the share of shared loads and stores that are bank
# conflicts, and the warps' time at block barriers (bench/ncu_summary.py's table; docs/BENCHMARKS.md
# run 11 has the first one). Profiles the first forward+backward of the kernel workbench.
#
#   bash bench/delta_rule_ncu.sh [WORKBENCH] [B T H d C]     (GPU machine; default ./delta_rule_dev,
#                                                            8 2048 16 128 64; bundle/ carried)
# Env: KERNELS (ncu's -k regex, default every chunk kernel), COUNT (launches to profile, default
# 6: one of each kernel of a forward+backward), OUT (default /tmp/efla-ncu).
# Out: the table on stdout; $OUT/chunk.ncu-rep (ncu --import it for more pages, e.g. the source
# page with --page source --csv --print-source sass, which bench/ncu_wavefronts.py sums by
# opcode), $OUT/details.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
WB=${1:-./delta_rule_dev}
shift || true
SHAPE=("$@")
(( ${#SHAPE[@]} )) || SHAPE=(8 2048 16 128 64)
(( ${#SHAPE[@]} == 5 )) || { echo "delta_rule_ncu: the shape is five numbers, B T H d C (got: ${SHAPE[*]})" >&2; exit 2; }
DIR=${OUT:-/tmp/efla-ncu}
mkdir -p "$DIR"
[[ -f bundle/bin/efla-env.sh ]] && . bundle/bin/efla-env.sh
command -v ncu >/dev/null || { echo "delta_rule_ncu: ncu (Nsight Compute) is not on PATH" >&2; exit 2; }
[[ -x $WB ]] || { echo "delta_rule_ncu: no workbench at $WB (bash bench/cuda/build_dev.sh builds ./delta_rule_dev)" >&2; exit 2; }
# the clocks are left alone (the device notes ask for --clock-control none)
ncu --clock-control none -k "regex:${KERNELS:-prep_kernel|state_scan|out_kernel|bwd_scan|bwd_chunk}" -c "${COUNT:-6}" \
  --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
  --section SchedulerStats --section MemoryWorkloadAnalysis_Tables --section SourceCounters \
  -f -o "$DIR/chunk" "$WB" 2 "${SHAPE[@]}" time > "$DIR/ncu.log" 2>&1 ||
  { tail -5 "$DIR/ncu.log" >&2; exit 1; }
ncu --import "$DIR/chunk.ncu-rep" --page details > "$DIR/details.txt"
echo "workbench $WB, shape B T H d C = ${SHAPE[*]}"
python3 bench/ncu_summary.py "$DIR/details.txt"

#!/usr/bin/env bash
# delta_rule_vs_fla.sh: efla's delta rule and flash-linear-attention's chunk_delta_rule on
# identical bf16 inputs, in one run on the GPU machine: timings (forward, forward+backward)
# at the four shapes of docs/BENCHMARKS.md and accuracy against an fp64 recurrence.
#
#   bash bench/delta_rule_vs_fla.sh        (repository root; bundle/ and .peers/fla carried)
#   EFLA_SKIP_FLA=1 bash bench/...         efla's timings and accuracy alone
#
# Needs: the efla bundle (scripts/make_bundle.sh) at ./bundle, PyTorch + Triton, and fla's
# Python package at .peers/fla (a copy of fla/ from github fla-org/flash-linear-attention,
# git-ignored, never committed). Output: the tables on stdout, everything under $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${OUT:-/tmp/efla-vs-fla}/exchange
mkdir -p "$DIR"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/.peers${PYTHONPATH:+:$PYTHONPATH}
# fla's autotuning results: restored from .peers/triton-autotune.tgz when carried along, saved
# to $OUT/triton-autotune.tgz at the end (bench/triton_autotune_cache.sh), so it is paid once
export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-/tmp/efla-triton-cache}
. bench/triton_autotune_cache.sh
triton_autotune_restore
[[ -d .peers/fla ]] || { echo "delta_rule_vs_fla: no .peers/fla (copy fla/ of flash-linear-attention there)" >&2; exit 2; }
. bundle/bin/efla-env.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 bench/delta_rule_vs_fla.py inputs --dir "$DIR"
bundle/bin/efla bench/delta_rule_vs_fla.lua --dir "$DIR"
if [[ ${EFLA_SKIP_FLA:-0} == 1 ]]; then   # efla's side alone (a quick look while tuning)
  echo "delta_rule_vs_fla: fla skipped (EFLA_SKIP_FLA=1)"
else
  python3 bench/delta_rule_vs_fla.py fla --dir "$DIR" || echo "delta_rule_vs_fla: fla's part failed"
fi
python3 bench/delta_rule_vs_fla.py report --dir "$DIR"
triton_autotune_save "${OUT:-/tmp/efla-vs-fla}"
rm -f "$DIR"/*.q "$DIR"/*.k "$DIR"/*.v "$DIR"/*.beta "$DIR"/*.do "$DIR"/*.fla.* "$DIR"/*.efla.*

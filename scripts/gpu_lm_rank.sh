#!/usr/bin/env bash
# gpu_lm_rank.sh: the rank-r ablation of docs/RANK_R.md on a GPU machine: EFLA with r = 1, 2, 4
# keys per token at equal parameters (RankDeltaAttention's mixes add 2 r H head_dim numbers per
# layer, under 1 %) and equal tokens, from the relocatable bundle (scripts/make_bundle.sh) and
# a carried corpus cache, like scripts/gpu_lm_study.sh:
#
#   EFLA_DATA=$PWD/data bash scripts/gpu_lm_rank.sh
#
# Runs (recipes/lm.lua, same seed, so the same data order): efla (r = 1, DeltaAttention's chunked
# kernel), efla-r1 (r = 1 through the rank-r kernel: a control that must track efla), efla-r2,
# efla-r4. Then the CUDA test of the operator. Results (logs, CSV, JSON, plots; no checkpoints)
# go to $OUT/lm-rank.tgz. Knobs: CORPUS (sotu), SIZE (small), STEPS (600), SEED (1), LM_ARGS
# (extra flags), DEADLINE (seconds, default 270: runs not started by then are skipped).
set -uo pipefail
cd "$(dirname "$0")/.."
B=${EFLA_BUNDLE:-bundle}
. "$B/bin/efla-env.sh"
EFLA=$B/bin/efla
OUTDIR=${OUT:-/tmp/efla-lm-rank}
WORK=$OUTDIR/lm-rank
mkdir -p "$WORK"
CORPUS=${CORPUS:-sotu}
SIZE=${SIZE:-small}
STEPS=${STEPS:-600}
SEED=${SEED:-1}
DEADLINE=${DEADLINE:-270}
read -r -a EXTRA <<< "${LM_ARGS:-}"
common=(--device cuda --corpus "$CORPUS" --size "$SIZE" --steps "$STEPS" --seed "$SEED" --quiet --sample-tokens 0 "${EXTRA[@]}")

echo "== test_delta_rule_rank_cuda"
"$EFLA" tests/lua/test_delta_rule_rank_cuda.lua > "$WORK/test_cuda.log" 2>&1
echo "   rc=$?; $(tail -1 "$WORK/test_cuda.log")"

for method in efla efla-r1 efla-r2 efla-r4; do
  if ((DEADLINE > 0 && SECONDS > DEADLINE)); then echo "== $method: skipped (past DEADLINE=${DEADLINE}s)"; continue; fi
  echo "== $method: $EFLA recipes/lm.lua ${common[*]} --method $method --out $WORK/$method"
  t0=$SECONDS
  "$EFLA" recipes/lm.lua "${common[@]}" --method "$method" --out "$WORK/$method" > "$WORK/$method.log" 2>&1
  echo "   rc=$? in $((SECONDS - t0))s; $(grep -E "^$method: [0-9]+ steps" "$WORK/$method.log" | tail -1)"
done

echo "== summary (valid loss and bits/byte at the last step; parameters; throughput)"
for method in efla efla-r1 efla-r2 efla-r4; do
  grep -hE "^\| $method +\|" "$WORK/$method.log" 2>/dev/null | tail -1
done
tar -czf "$OUTDIR/lm-rank.tgz" --exclude='*.h5' -C "$OUTDIR" lm-rank
echo "results: $OUTDIR/lm-rank.tgz ($(du -h "$OUTDIR/lm-rank.tgz" | cut -f1))"

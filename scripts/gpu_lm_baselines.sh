#!/usr/bin/env bash
# gpu_lm_baselines.sh: the extended language-model comparison of issue 17 on a GPU machine, from
# the relocatable bundle (scripts/make_bundle.sh) and the carried corpus data, as gpu_lm_study.sh:
#
#   EFLA_DATA=$PWD/data bash scripts/gpu_lm_baselines.sh
#
# Six models at equal tokens (same size, steps, batch, context, seed, so the same data order and
# the same initial weights where shapes agree): EFLA, DeltaNet, a softmax-attention Transformer
# (rotary positions), the hybrid EEEA (three EFLA layers, then softmax attention), gated EFLA (G)
# and Gated DeltaNet (g). The gated runs need DeltaAttention's gate option: without it they stop
# at once with a message saying so, and the rest goes on. Then recipes/lm_eval.lua (held-out
# perplexity, cloze, length extrapolation to 8x the context) on every run's best checkpoint, one
# table row each. Results (logs, CSV, JSON, plots; checkpoints left out) go to
# $OUT/lm-baselines.tgz. Knobs: CORPUS (sotu), SIZE (small), STEPS (1000), LM_ARGS (extra flags
# for every run), ONLY (space-separated run names), DEADLINE (seconds, 330: runs not started by
# then are skipped so that the evaluation and the archive still happen), EVAL_LIMIT (120 s),
# DEVICE (cuda; cpu for a dry run here with a tiny LM_ARGS).
set -uo pipefail
cd "$(dirname "$0")/.."
B=${EFLA_BUNDLE:-bundle}
. "$B/bin/efla-env.sh"
EFLA=$B/bin/efla
OUTDIR=${OUT:-/tmp/efla-lm-baselines}
WORK=$OUTDIR/lm-baselines
mkdir -p "$WORK/ckpt"
CORPUS=${CORPUS:-sotu}
SIZE=${SIZE:-small}
STEPS=${STEPS:-1000}
DEADLINE=${DEADLINE:-330}
read -r -a EXTRA <<< "${LM_ARGS:-}"
DEVICE=${DEVICE:-cuda}
common=(--device "$DEVICE" --corpus "$CORPUS" --size "$SIZE" --steps "$STEPS" --seed 1 --quiet --sample-tokens 100 "${EXTRA[@]}")

# name | lm.lua flags
runs=(
  "efla|--method efla"
  "deltanet|--method deltanet"
  "transformer|--method transformer"
  "hybrid-EEEA|--method hybrid --layers EEEA"
  "gated-efla|--method hybrid --layers G"
  "gated-deltanet|--method hybrid --layers g"
)

for entry in "${runs[@]}"; do
  name=${entry%%|*}
  read -r -a flags <<< "${entry#*|}"
  if [[ -n ${ONLY:-} && " $ONLY " != *" $name "* ]]; then continue; fi
  if ((DEADLINE > 0 && SECONDS > DEADLINE)); then echo "== $name: skipped (past DEADLINE=${DEADLINE}s)"; continue; fi
  echo "== $name: $EFLA recipes/lm.lua ${common[*]} ${flags[*]} --out $WORK/$name"
  t0=$SECONDS
  "$EFLA" recipes/lm.lua "${common[@]}" "${flags[@]}" --out "$WORK/$name" > "$WORK/$name.log" 2>&1
  rc=$?
  if ((rc == 0)); then
    echo "   rc=0 in $((SECONDS - t0))s; $(grep -aE '^[a-z-]+: [0-9]+ steps' "$WORK/$name.log" | tail -1)"
  else
    echo "   rc=$rc in $((SECONDS - t0))s; $(grep -aE '^lm: ' "$WORK/$name.log" | head -1)"
  fi
  best=$(find "$WORK/$name" -name best.h5 2>/dev/null | head -1)
  # one file per run, named after it, so that lm_eval's rows and plots tell them apart
  [[ -n $best ]] && ln -sf "$best" "$WORK/ckpt/$name.h5"
done
grep -ah '^parameters of every method' "$WORK"/*.log | tail -1

mapfile -t cks < <(find "$WORK/ckpt" -name '*.h5' | sort)
if ((${#cks[@]})); then
  echo "== lm_eval on ${#cks[@]} checkpoints"
  timeout "${EVAL_LIMIT:-120}" "$EFLA" recipes/lm_eval.lua --device "$DEVICE" --tasks ppl,cloze,extrap --ppl-bytes 0 \
    --cloze-items 500 --out "$WORK/lm_eval" "${cks[@]}" > "$WORK/lm_eval.log" 2>&1
  echo "   rc=$?"
  cat "$WORK/lm_eval/lm_eval.md" 2>/dev/null || tail -5 "$WORK/lm_eval.log"
fi
tar -czf "$OUTDIR/lm-baselines.tgz" --exclude='*.h5' -C "$OUTDIR" lm-baselines
echo "results: $OUTDIR/lm-baselines.tgz ($(du -h "$OUTDIR/lm-baselines.tgz" | cut -f1)) in ${SECONDS}s"

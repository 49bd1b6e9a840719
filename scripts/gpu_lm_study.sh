#!/usr/bin/env bash
# gpu_lm_study.sh: the language-model study of docs/RESULTS.md on a GPU machine, from the
# relocatable bundle (scripts/make_bundle.sh) and a carried corpus cache:
#
#   EFLA_DATA=$PWD/data bash scripts/gpu_lm_study.sh [headline|lr|ablations|all]
#
# headline   EFLA vs DeltaNet (recipes/lm.lua --method both: same data order), seeds 1 and 2
# ablations  EFLA with L2-normalised keys, DeltaNet without, orders 2 and 4 (EFLA's RK ablation)
# lr         learning-rate sweep for both methods, seed 1
# Then lm_eval (perplexity, cloze, extrapolation; WordNet needs Debian's wordnet-base, which GPU
# machines lack: run that task later on the CPU) on every final checkpoint. Results (CSV,
# JSON, plots, logs; checkpoints left out) go to $OUT/lm-study.tgz, one archive, so that they
# fit the way back. Knobs: CORPUS (sotu), SIZE (small), STEPS (1000), LM_ARGS (extra flags),
# DEADLINE (seconds: runs not started by then are skipped, so the evaluation and the archive
# still happen inside a time limit; 0 = none).
set -uo pipefail
cd "$(dirname "$0")/.."
B=${EFLA_BUNDLE:-bundle}
. "$B/bin/efla-env.sh"
EFLA=$B/bin/efla
OUTDIR=${OUT:-/tmp/efla-lm-study}
WORK=$OUTDIR/lm-study
mkdir -p "$WORK"
CORPUS=${CORPUS:-sotu}
SIZE=${SIZE:-small}
STEPS=${STEPS:-1000}
read -r -a EXTRA <<< "${LM_ARGS:-}"
what=${1:-all}
common=(--device cuda --corpus "$CORPUS" --size "$SIZE" --steps "$STEPS" --quiet --sample-tokens 100 "${EXTRA[@]}")

DEADLINE=${DEADLINE:-0}
run() {   # name, lm.lua flags...
  local name=$1; shift
  if ((DEADLINE > 0 && SECONDS > DEADLINE)); then echo "== $name: skipped (past DEADLINE=${DEADLINE}s)"; return; fi
  echo "== $name: $EFLA recipes/lm.lua ${common[*]} $* --out $WORK/$name"
  local t0=$SECONDS
  "$EFLA" recipes/lm.lua "${common[@]}" "$@" --out "$WORK/$name" > "$WORK/$name.log" 2>&1
  echo "   rc=$? in $((SECONDS - t0))s; $(grep -E 'valid|bits' "$WORK/$name.log" | tail -2 | tr '\n' ' ')"
}

if [[ $what == headline || $what == all ]]; then
  for seed in 1 2; do run "both-seed$seed" --method both --seed "$seed"; done
fi
if [[ $what == ablations || $what == all ]]; then
  run "efla-l2keys" --method efla --key-norm l2 --steps $((STEPS / 2))
  run "deltanet-rawkeys" --method deltanet --key-norm none --steps $((STEPS / 2))
  run "efla-order2" --method efla --order 2 --steps $((STEPS / 2))
  run "efla-order4" --method efla --order 4 --steps $((STEPS / 2))
fi

if [[ $what == lr || $what == all ]]; then
  for lr in 0.0005 0.002 0.008 0.02; do run "lr$lr" --method both --lr "$lr" --steps $((STEPS / 2)); done
fi
# downstream evaluation of every run's best checkpoint (lowest validation loss; one row each)
mapfile -t cks < <(find "$WORK" -name 'best.h5' | sort)
if ((${#cks[@]})); then
  echo "== lm_eval on ${#cks[@]} checkpoints"
  timeout "${EVAL_LIMIT:-150}" "$EFLA" recipes/lm_eval.lua --device cuda --tasks ppl,cloze,extrap --ppl-bytes 0 --cloze-items 500 \
    --out "$WORK/lm_eval" "${cks[@]}" > "$WORK/lm_eval.log" 2>&1
  echo "   rc=$?"
  cat "$WORK/lm_eval/lm_eval.md" 2>/dev/null
fi
tar -czf "$OUTDIR/lm-study.tgz" --exclude='*.h5' -C "$OUTDIR" lm-study
echo "results: $OUTDIR/lm-study.tgz ($(du -h "$OUTDIR/lm-study.tgz" | cut -f1))"

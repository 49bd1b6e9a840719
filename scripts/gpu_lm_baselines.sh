#!/usr/bin/env bash
# gpu_lm_baselines.sh: the extended language-model comparison of issue 17 on a GPU machine, from
# the relocatable bundle (scripts/make_bundle.sh) and the carried corpus data, as gpu_lm_study.sh:
#
#   EFLA_DATA=$PWD/data bash scripts/gpu_lm_baselines.sh
#
# Every model at equal tokens and (within 0.5 %) equal parameters, over SEEDS: EFLA, DeltaNet,
# gated EFLA, Gated DeltaNet (docs/MATH.md §6), a softmax-attention Transformer (rotary
# positions), the hybrid EEEA (three EFLA layers, then softmax attention) and rank-r EFLA with
# r = 2 and 4 (docs/RANK_R.md; EFLA itself is r = 1). One recipes/lm.lua process per (model,
# seed), JOBS of them at a time on the one GPU (these small models leave most of it idle), each
# into $WORK/<model>-s<seed>. Then recipes/lm_eval.lua (held-out perplexity, cloze, length
# extrapolation to 8x the context) on every run's best checkpoint, one process per seed, and
# recipes/lm_merge_seeds.lua for the mean ± std table. Results (logs, CSV, JSON; checkpoints
# left out; plots are redrawn where gnuplot is) go to $OUT/lm-baselines.tgz.
# Knobs: CORPUS (sotu), SIZE (small), STEPS (1000), SEEDS ("1 2 3"), JOBS (8), LM_ARGS (extra
# flags for every run), ONLY (space-separated model names), HYBRID (EEEA), RUN_LIMIT (seconds per training
# run, 420), EVAL_LIMIT (seconds per lm_eval process, 150), DEVICE (cuda; cpu for a dry run
# here with EFLA=build/efla and a tiny LM_ARGS).
set -uo pipefail
cd "$(dirname "$0")/.."
B=${EFLA_BUNDLE:-bundle}
if [[ -z ${EFLA:-} ]]; then . "$B/bin/efla-env.sh"; EFLA=$B/bin/efla; fi   # EFLA=build/efla for a dry run here
OUTDIR=${OUT:-/tmp/efla-lm-baselines}
WORK=$OUTDIR/lm-baselines
mkdir -p "$WORK/ckpt"
CORPUS=${CORPUS:-sotu}
SIZE=${SIZE:-small}
STEPS=${STEPS:-1000}
SEEDS=${SEEDS:-1 2 3}
JOBS=${JOBS:-8}
DEVICE=${DEVICE:-cuda}
HYBRID=${HYBRID:-EEEA}   # the hybrid's layer pattern (as many letters as the size has layers)
export EFLA EFLA_DATA WORK DEVICE CORPUS SIZE STEPS LM_ARGS=${LM_ARGS:-} RUN_LIMIT=${RUN_LIMIT:-420}

# model | lm.lua flags
models=(
  "efla|--method efla"
  "deltanet|--method deltanet"
  "gated-efla|--method gated-efla"
  "gated-deltanet|--method gated-deltanet"
  "transformer|--method transformer"
  "hybrid-$HYBRID|--method hybrid --layers $HYBRID"
  "efla-r2|--method efla-r2"
  "efla-r4|--method efla-r4"
)

# one training run: $1 = model, $2 = seed, $3.. = lm.lua flags; its log in $WORK/<model>-s<seed>.log
train_one() {
  local name=$1 seed=$2; shift 2
  local run=$name-s$seed extra
  read -r -a extra <<< "$LM_ARGS"
  local t0=$SECONDS
  timeout "$RUN_LIMIT" "$EFLA" recipes/lm.lua --device "$DEVICE" --corpus "$CORPUS" --size "$SIZE" --steps "$STEPS" \
    --seed "$seed" --quiet --sample-tokens 0 "$@" "${extra[@]}" --out "$WORK/$run" > "$WORK/$run.log" 2>&1
  local rc=$?
  local best
  best=$(find "$WORK/$run" -name best.h5 2>/dev/null | head -1)
  # one file per run, named <model>-s<seed>.h5, so that lm_eval's rows and lm_merge_seeds tell them apart
  [[ -n $best ]] && ln -sf "$best" "$WORK/ckpt/$run.h5"
  if ((rc == 0)); then
    echo "$run: rc=0 in $((SECONDS - t0))s; $(grep -aE '^[a-z0-9-]+: [0-9]+ steps' "$WORK/$run.log" | tail -1)"
  else
    echo "$run: rc=$rc in $((SECONDS - t0))s; $(grep -aE '^lm: |rror' "$WORK/$run.log" | head -1)"
  fi
}
export -f train_one

# the per-token scan models (rank-r, gated) take several times longer: start them first
SLOW=" efla-r4 efla-r2 gated-efla gated-deltanet "
jobs_list=()
for pass in slow fast; do
  for seed in $SEEDS; do
    for entry in "${models[@]}"; do
      name=${entry%%|*}
      if [[ -n ${ONLY:-} && " $ONLY " != *" $name "* ]]; then continue; fi
      slow=fast; [[ $SLOW == *" $name "* ]] && slow=slow
      [[ $pass == "$slow" ]] || continue
      jobs_list+=("$name $seed ${entry#*|}")
    done
  done
done
echo "== ${#jobs_list[@]} training runs, $JOBS at a time (seeds: $SEEDS; $STEPS steps, --size $SIZE, $CORPUS)"
printf '%s\n' "${jobs_list[@]}" | xargs -P "$JOBS" -I{} bash -c 'train_one {}'
grep -ah '^parameters of every method' "$WORK"/*.log | tail -1

echo "== lm_eval, one process per seed"
for seed in $SEEDS; do
  mapfile -t cks < <(find "$WORK/ckpt" -name "*-s$seed.h5" | sort)
  ((${#cks[@]})) || continue
  timeout "${EVAL_LIMIT:-150}" "$EFLA" recipes/lm_eval.lua --device "$DEVICE" --tasks ppl,cloze,extrap --ppl-bytes 0 \
    --cloze-items 500 --out "$WORK/eval-s$seed" "${cks[@]}" > "$WORK/eval-s$seed.log" 2>&1 &
done
wait
evals=$(ls "$WORK"/eval-s*/lm_eval.csv 2>/dev/null | paste -sd, -)
echo "== lm_merge_seeds"
runs=()   # in the order of the models list, so the table's rows are too
for entry in "${models[@]}"; do
  for seed in $SEEDS; do
    d=$WORK/${entry%%|*}-s$seed
    [[ -f $d/results.json ]] && runs+=("$d")
  done
done
"$EFLA" recipes/lm_merge_seeds.lua --out "$WORK/merged" ${evals:+--eval "$evals"} "${runs[@]}" 2>&1 | grep -v '^$'
tar -czf "$OUTDIR/lm-baselines.tgz" --exclude='*.h5' -C "$OUTDIR" lm-baselines
echo "results: $OUTDIR/lm-baselines.tgz ($(du -h "$OUTDIR/lm-baselines.tgz" | cut -f1)) in ${SECONDS}s"

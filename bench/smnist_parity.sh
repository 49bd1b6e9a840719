#!/usr/bin/env bash
# bench/smnist_parity.sh: does efla train the sMNIST model exactly as PyTorch does? For each
# method, efla (bench/smnist_parity.lua) trains from its own initial weights on its own
# batches and writes weights, batches and its trajectory to HDF5; PyTorch
# (bench/smnist_parity.py) loads them, replays the same steps and prints both loss curves and
# the largest parameter difference after each step. CPU, float32, one thread on each side.
#
#   bash bench/smnist_parity.sh                       # both methods, published model, 20 steps
#   bash bench/smnist_parity.sh --model efla-variant --steps 10 --batch 16
#
# Needs Debian's python3-torch and python3-h5py (apt-get install -y python3-torch python3-h5py),
# used through /usr/bin/python3. Options other than --methods go to both halves' common flags:
# --model, --steps, --batch, --seed, --tol. Exit status 0 when every method agrees.
set -euo pipefail
cd "$(dirname "$0")/.."
EFLA=${EFLA_BIN:-build/efla}
PY=${PYTHON:-/usr/bin/python3}
methods="efla deltanet"; model=published; steps=20; batch=32; seed=1; tol=1e-4
while [ $# -gt 0 ]; do
  case "$1" in
    --methods) methods=${2//,/ }; shift 2 ;;
    --model) model=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --tol) tol=$2; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "smnist_parity.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
  esac
done
if ! "$PY" -c 'import torch, h5py' 2>/dev/null; then
  echo "smnist_parity.sh: $PY cannot import torch and h5py; apt-get install -y python3-torch python3-h5py" >&2
  exit 2
fi
[ -x "$EFLA" ] || { echo "smnist_parity.sh: $EFLA not found; build efla first (README)" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0
for m in $methods; do
  echo "== $m, model $model: efla =="
  OMP_NUM_THREADS=1 "$EFLA" bench/smnist_parity.lua --method "$m" --model "$model" --steps "$steps" \
    --batch "$batch" --seed "$seed" --out "$tmp/$m.h5" | tail -n 1
  echo "== $m, model $model: PyTorch replay =="
  "$PY" bench/smnist_parity.py "$tmp/$m.h5" --tol "$tol" --threads 1 || status=1
done
exit $status

#!/bin/sh
# Build and run the cpu delta-rule benchmark against a built libefla.
#   bench/run_delta_rule_cpu.sh [build dir (default build)] [reps (5)] [B divisor (1)] [dk=dv (64)]
# Prints a markdown table on stdout; a chunk-size sweep and an agreement check on stderr.
set -e
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build}
case $build in /*) ;; *) build="$root/$build" ;; esac
reps=${2:-5}
div=${3:-1}
hd=${4:-64}
blas_inc=$(for d in /usr/include/x86_64-linux-gnu/openblas-pthread /usr/include/openblas /usr/include; do
  [ -f "$d/cblas.h" ] && echo "$d" && break; done)
out="$build/bench_delta_rule_cpu"
# Debian's OpenBLAS 0.3.21 takes some AVX-512 virtual machines for a "Prescott" (SSE3) and
# runs sgemm 5x slower; the delta-rule kernels don't use BLAS, but the sgemm reference
# should be the real one. Set OPENBLAS_CORETYPE yourself to override this choice.
if [ -z "$OPENBLAS_CORETYPE" ] && grep -qw avx512f /proc/cpuinfo 2>/dev/null; then
  export OPENBLAS_CORETYPE=SkylakeX
fi
cc -O3 -march=native -fopenmp -I"$root/core" -I"$blas_inc" "$root/bench/delta_rule_cpu.c" \
   -o "$out" -L"$build" -lefla -lopenblas -lm -Wl,-rpath,"$build"
exec "$out" "$reps" "$div" "$hd"

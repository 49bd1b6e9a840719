#!/bin/sh
# Builds bench/cpu_ops.c against an already built libefla and runs it; prints a markdown
# table for docs/BENCHMARKS.md.
# Usage: bench/build_and_run_cpu_ops.sh [build-dir]      (default: build)
set -e
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(cd "${1:-$ROOT/build}" && pwd)
if [ ! -e "$BUILD/libefla.so" ]; then
    echo "no $BUILD/libefla.so: build first (cmake -S $ROOT -B $BUILD && cmake --build $BUILD)" >&2
    exit 1
fi
cc -O2 -std=gnu11 -I"$ROOT/core" -I/usr/include/x86_64-linux-gnu/openblas-pthread \
   "$ROOT/bench/cpu_ops.c" -o "$BUILD/bench_cpu_ops" \
   -L"$BUILD" -Wl,-rpath,"$BUILD" -lefla -lopenblas -lm
exec "$BUILD/bench_cpu_ops"

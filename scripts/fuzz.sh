#!/usr/bin/env bash
# fuzz.sh: fuzz the checkpoint reader with libFuzzer + AddressSanitizer/UBSan (clang).
#   bash scripts/fuzz.sh ci [SECONDS]     build, replay every saved input, fuzz SECONDS (60)
#   bash scripts/fuzz.sh long [SECONDS]   a long campaign (1200 s) on one core, under nice
#   bash scripts/fuzz.sh replay FILE...   run given inputs once (to reproduce a finding)
#   bash scripts/fuzz.sh coverage         line coverage of the reader by the saved corpus
#                                         (build-fuzz-cov, llvm-cov; no sanitizers)
# Builds build-fuzz/ (tests/fuzz/CMakeLists.txt); the seed corpus is made by
# tests/fuzz/make_seeds.lua with the efla command ($EFLA_BIN, default build/efla). A crash
# input is left in build-fuzz/crashes/; copy it to tests/fuzz/regressions/ once fixed, so
# that test_h5_regressions and every later CI run replay it.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-ci}
root=$PWD
out=$root/build-fuzz
efla_bin=${EFLA_BIN:-$root/build/efla}
command -v clang >/dev/null || { echo "fuzz.sh: clang is not installed (apt-get install clang)" >&2; exit 2; }

if [[ $mode == coverage ]]; then
  cov=$root/build-fuzz-cov
  CC=clang cmake -S tests/fuzz -B "$cov" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEFLA_FUZZ_COVERAGE=ON >/dev/null
  nice cmake --build "$cov" -j"$(nproc)" >/dev/null
  rm -f "$cov"/*.profraw
  LLVM_PROFILE_FILE="$cov/run-%p.profraw" "$cov/fuzz_checkpoint" -runs=0 "$out/corpus" "$out/seeds" tests/fuzz/regressions \
    > "$cov/run.log" 2>&1 || { tail -n 20 "$cov/run.log"; exit 1; }
  llvm-profdata merge -o "$cov/all.profdata" "$cov"/*.profraw
  llvm-cov report "$cov/fuzz_checkpoint" -instr-profile="$cov/all.profdata" core/h5_check.c core/h5.c
  exit 0
fi

CC=clang cmake -S tests/fuzz -B "$out" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
nice cmake --build "$out" -j"$(nproc)" >/dev/null
[[ -x $efla_bin ]] || { echo "fuzz.sh: $efla_bin not found; build efla first or set EFLA_BIN" >&2; exit 2; }
mkdir -p "$out/seeds" "$out/corpus" "$out/crashes"
[[ -f $out/seeds/empty.h5 ]] || "$efla_bin" tests/fuzz/make_seeds.lua "$out/seeds" >/dev/null

export ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1
fuzz=("$out/fuzz_checkpoint" -max_len=65536 -timeout=10 -rss_limit_mb=2048 -artifact_prefix="$out/crashes/")

case $mode in
  replay)
    shift
    "${fuzz[@]}" -runs=1 "$@" ;;
  ci)
    seconds=${2:-60}
    echo "fuzz.sh: replaying tests/fuzz/regressions and the seeds"
    "${fuzz[@]}" -runs=1 tests/fuzz/regressions/* "$out"/seeds/* 2>&1 | tail -n 3
    echo "fuzz.sh: fuzzing for $seconds s"
    nice "${fuzz[@]}" -max_total_time="$seconds" -print_final_stats=1 "$out/corpus" "$out/seeds" tests/fuzz/regressions \
      > "$out/ci.log" 2>&1 || { tail -n 60 "$out/ci.log"; echo "fuzz.sh: FINDING; input in $out/crashes/" >&2; exit 1; }
    grep -E '^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::average_exec_per_sec)' "$out/ci.log" || true
    ;;
  long)
    seconds=${2:-1200}
    log=$out/long-$(date -u +%Y%m%dT%H%M%S).log
    echo "fuzz.sh: long campaign, $seconds s on one core, log $log"
    nice "${fuzz[@]}" -max_total_time="$seconds" -print_final_stats=1 "$out/corpus" "$out/seeds" tests/fuzz/regressions \
      > "$log" 2>&1 || { tail -n 60 "$log"; echo "fuzz.sh: FINDING; input in $out/crashes/" >&2; exit 1; }
    grep -E 'DONE|stat::' "$log"
    ;;
  *) echo "usage: fuzz.sh ci|long|replay [...]" >&2; exit 2 ;;
esac

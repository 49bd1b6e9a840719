#!/usr/bin/env bash
# test.sh: the whole test suite, from a fresh clone: installs what the tests need
# (idempotent), builds, runs every C and Lua test under ctest, then does it again under
# AddressSanitizer. Exits non-zero if anything failed. Usage: bash scripts/test.sh [--no-asan]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh

jobs=$(nproc)
echo "== build (release) =="
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$jobs"
echo "== tests (release) =="
ctest --test-dir build --output-on-failure -j"$jobs"

if [[ "${1:-}" != "--no-asan" ]]; then
  echo "== build (AddressSanitizer) =="
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEFLA_ASAN=ON -DEFLA_CUDA=OFF >/dev/null
  cmake --build build-asan -j"$jobs"
  echo "== tests (AddressSanitizer) =="
  # allocator_may_return_null: the out-of-memory tests need malloc to fail, not ASan to abort
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:allocator_may_return_null=1
  export LSAN_OPTIONS=suppressions=$PWD/tests/lsan.supp:print_suppressions=0
  export UBSAN_OPTIONS=print_stacktrace=1
  ctest --test-dir build-asan --output-on-failure -j"$jobs"
fi

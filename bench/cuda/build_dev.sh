#!/usr/bin/env bash
# build_dev.sh: builds the delta-rule kernel workbench (bench/cuda/delta_rule_dev.cu) against
# a libefla (for the caching allocator and error strings): ./delta_rule_dev
#   bash bench/cuda/build_dev.sh [LIBDIR]     (default: bundle/lib if present, else build; in a
#                                             bundle, source bundle/bin/efla-env.sh first: it unpacks libefla)
set -euo pipefail
cd "$(dirname "$0")/../.."
LIB=${1:-$([[ -f bundle/lib/libefla.so ]] && echo bundle/lib || echo build)}
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
"$NVCC" -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr ${DEV_FLAGS:-} -I core -I cuda \
  bench/cuda/delta_rule_dev.cu -o delta_rule_dev -L"$LIB" -lefla -lcudart -Xlinker -rpath,"$PWD/$LIB"
echo "built ./delta_rule_dev (libefla from $LIB)"

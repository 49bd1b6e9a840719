#!/usr/bin/env bash
# make_bundle.sh: build efla with the CUDA backend and assemble a relocatable tree that runs
# on another Linux machine with CUDA 13 (e.g. Ubuntu 24.04, glibc >= this machine's) and
# none of efla's build dependencies.
#
#   bash scripts/make_bundle.sh [OUT_DIR]      (default ./bundle; build dir ./build-bundle,
#                                               or $EFLA_BUNDLE_BUILD)
# Layout:
#   bin/efla              the command (RUNPATH $ORIGIN/../lib)
#   bin/efla-env.sh       source it first: unpacks the compressed libraries (once) and adds
#                         bundle/lib and the machine's CUDA libraries to LD_LIBRARY_PATH
#   lib/libefla.so        RUNPATH $ORIGIN plus /usr/local/cuda's library dirs
#   lib/*.so*             every non-glibc, non-CUDA shared library efla needs, copied from
#                         this machine (RUNPATH $ORIGIN); the large ones stored as .gz
#                         (efla-env.sh unpacks them) so the tree stays small to carry
#   share/efla/lua/       the Lua sources and the generated FFI cdef, lua-posix (posix.so,
#                         posix/*.lua) and bit32.so for efla.sys
#   recipes/              the recipes (their data is not bundled)
#   tests/bin/test_*      the C tests (RUNPATH $ORIGIN/../../lib), tests/lua/ the Lua tests,
#                         tests/run.sh runs them all
# glibc's own libraries and the CUDA libraries (cudart, cublas, cublasLt, the driver) are
# not copied: they must come from the target (glibc's are ABI-compatible upwards; CUDA's
# must match its driver). libstdc++/libgcc_s are not copied either: the target's are newer.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${1:-bundle}
BUILD=${EFLA_BUNDLE_BUILD:-build-bundle}
JOBS=${JOBS:-$(nproc)}

if ! command -v patchelf >/dev/null 2>&1; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "make_bundle: installing patchelf"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq patchelf >/dev/null ||
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq patchelf >/dev/null; }
  fi
  command -v patchelf >/dev/null 2>&1 || { echo "make_bundle: patchelf is needed (apt-get install patchelf)" >&2; exit 1; }
fi

echo "== build ($BUILD: CUDA on, no -march=native) =="
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DEFLA_CUDA=ON -DEFLA_NATIVE=OFF -DEFLA_TESTS=ON >/dev/null
cmake --build "$BUILD" -j"$JOBS"

echo "== assemble $OUT =="
rm -rf "$OUT"
mkdir -p "$OUT"/bin "$OUT"/lib "$OUT"/share/efla/lua "$OUT"/tests/bin
cp "$BUILD"/efla "$OUT"/bin/
cp scripts/efla-run "$OUT"/bin/   # the data-parallel launcher; NCCL is dlopened, left to the target
cp "$BUILD"/libefla.so "$OUT"/lib/
for t in "$BUILD"/test_*; do
  [[ -x $t && -f $t ]] && cp "$t" "$OUT"/tests/bin/
done
cp -r lua/efla "$OUT"/share/efla/lua/
cp "$BUILD"/lua/efla/cdef.lua "$OUT"/share/efla/lua/efla/
# lua-posix (efla.sys): its C modules are one library, posix.so, loaded by LuaJIT's
# all-in-one searcher for require 'posix.sys.stat' etc.; efla/sys.lua puts share/efla/lua/?.so
# on package.cpath when it finds posix.so there. Its Lua files (require 'posix') need bit32.
posix_dir=
for d in /usr/lib/"$(gcc -dumpmachine 2>/dev/null)"/lua/5.1 /usr/lib/x86_64-linux-gnu/lua/5.1 /usr/local/lib/lua/5.1; do
  if [[ -e $d/posix.so ]]; then posix_dir=$d; break; fi
done
[[ -n $posix_dir ]] || { echo "make_bundle: lua-posix is needed (apt-get install lua-posix)" >&2; exit 1; }
cp -L "$posix_dir"/posix.so "$OUT"/share/efla/lua/
if [[ -e $posix_dir/bit32.so ]]; then cp -L "$posix_dir"/bit32.so "$OUT"/share/efla/lua/; fi
[[ -d /usr/share/lua/5.1/posix ]] && cp -rL /usr/share/lua/5.1/posix "$OUT"/share/efla/lua/
mkdir -p "$OUT"/tests/lua
cp tests/lua/*.lua "$OUT"/tests/lua/ 2>/dev/null || true
cp -r tests/lua/dist "$OUT"/tests/lua/   # workers of the distributed tests
[[ -f tests/lsan.supp ]] && cp tests/lsan.supp "$OUT"/tests/
[[ -d recipes ]] && cp -r recipes "$OUT"/recipes   # so recipes run on the GPU machine too

# Shared libraries: the closure of what ldd reports, minus glibc, CUDA and the C++ runtime.
skip='^(linux-vdso|ld-linux|libc\.so|libm\.so|libdl\.so|libpthread\.so|librt\.so|libresolv\.so|libutil\.so|libanl\.so|libnsl\.so|libmvec\.so|libBrokenLocale|libcuda\.so|libcudart|libcublas|libcublasLt|libnvidia|libstdc\+\+|libgcc_s|libefla)'
objs=("$BUILD"/efla "$BUILD"/libefla.so "$OUT"/tests/bin/* "$OUT"/share/efla/lua/*.so)
ldd "${objs[@]}" 2>/dev/null | awk '/=>/ && $3 ~ /^\// {print $1, $3}' | sort -u |
while read -r name path; do
  [[ $name =~ $skip ]] && continue
  cp -L "$path" "$OUT/lib/$name"
done
strip --strip-unneeded "$OUT"/bin/efla "$OUT"/lib/libefla.so "$OUT"/tests/bin/* 2>/dev/null || true
for m in "$OUT"/share/efla/lua/*.so; do chmod u+w "$m"; patchelf --set-rpath '$ORIGIN/../../../lib' "$m"; done
for lib in "$OUT"/lib/*.so*; do
  chmod u+w "$lib"
  patchelf --set-rpath '$ORIGIN' "$lib"
done
patchelf --set-rpath '$ORIGIN:/usr/local/cuda/lib64:/usr/local/cuda/targets/x86_64-linux/lib' "$OUT"/lib/libefla.so
patchelf --set-rpath '$ORIGIN/../lib' "$OUT"/bin/efla
for t in "$OUT"/tests/bin/*; do patchelf --set-rpath '$ORIGIN/../../lib' "$t"; done

# Large libraries travel compressed; efla-env.sh unpacks them where they are.
for lib in "$OUT"/lib/*.so*; do
  if [[ $(stat -c %s "$lib") -gt 1048576 ]]; then gzip -9 "$lib"; fi
done

cat > "$OUT"/bin/efla-env.sh <<'EOF'
# efla-env.sh: source this before running efla from the bundle:  . bundle/bin/efla-env.sh
# Unpacks the compressed libraries once, puts bin/ on PATH, adds bundle/lib and the
# machine's CUDA library directory to LD_LIBRARY_PATH and share/efla/lua to LUA_CPATH.
_efla_root=$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)
for _f in "$_efla_root"/lib/*.gz; do
  [ -e "$_f" ] || continue
  if [ ! -e "${_f%.gz}" ]; then
    gzip -dc "$_f" > "${_f%.gz}.tmp$$" && chmod +x "${_f%.gz}.tmp$$" && mv -f "${_f%.gz}.tmp$$" "${_f%.gz}"
  fi
done
_efla_cuda=""
for _d in "${CUDA_HOME:-/usr/local/cuda}/lib64" /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-13*/lib64; do
  if [ -e "$_d/libcublas.so.13" ]; then _efla_cuda=$_d; break; fi
done
if [ -z "$_efla_cuda" ]; then
  _efla_cuda=$(ls -d /usr/lib/x86_64-linux-gnu 2>/dev/null | while read -r d; do [ -e "$d/libcublas.so.13" ] && echo "$d"; done | head -n1)
fi
[ -n "$_efla_cuda" ] || echo "efla-env.sh: no libcublas.so.13 found (set CUDA_HOME); efla will run without its CUDA backend" >&2
export LD_LIBRARY_PATH="$_efla_root/lib${_efla_cuda:+:$_efla_cuda}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PATH="$_efla_root/bin:$PATH"
# lua-posix's posix.so and bit32.so (efla.sys, require 'posix'); ";;" is Lua's default path
export LUA_CPATH="$_efla_root/share/efla/lua/?.so;${LUA_CPATH:-;}"
unset _efla_root _efla_cuda _d _f
EOF
chmod +x "$OUT"/bin/efla-env.sh

cat > "$OUT"/tests/run.sh <<'EOF'
#!/usr/bin/env bash
# run.sh: every C and Lua test of the bundle; prints each summary, exits non-zero on failure.
cd "$(dirname "$0")/.."
. bin/efla-env.sh
export EFLA_TEST_TMP=${EFLA_TEST_TMP:-$(mktemp -d)}
fail=0
for t in tests/bin/test_*; do
  echo "== $t"; "$t" 2>&1 | tail -n 25; rc=${PIPESTATUS[0]}; [[ $rc == 0 ]] || { echo "FAILED ($rc): $t"; fail=1; }
done
for t in tests/lua/test_*.lua; do
  echo "== $t"; bin/efla "$t" 2>&1 | tail -n 25; rc=${PIPESTATUS[0]}; [[ $rc == 0 ]] || { echo "FAILED ($rc): $t"; fail=1; }
done
exit $fail
EOF
chmod +x "$OUT"/tests/run.sh

echo "== bundle $OUT =="
du -sh --apparent-size "$OUT"
du -s --apparent-size --block-size=1 "$OUT" | awk '{printf "bundle size: %.1f MiB (must stay well under 64 MiB to travel)\n", $1 / 1048576}'
echo "note: sourcing $OUT/bin/efla-env.sh unpacks the .gz libraries in place (about +40 MiB); carry"
echo "      the bundle to the GPU machine before using it here, or rebuild it afterwards."

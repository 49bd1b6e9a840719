# triton_autotune_cache.sh: sourced by the bench scripts that run flash-linear-attention (fla).
# fla's Triton kernels autotune on the first use of each shape: over 200 s for the byte LM of
# bench/lm_step_gpu.lua on an H100, most of a device call. With TRITON_CACHE_AUTOTUNING=1 Triton
# keeps each choice as a small *.autotune.json in TRITON_CACHE_DIR; these two functions carry
# just those files (and Triton's compiled launcher modules) from one device call to the next,
# so that fla compiles only the kernels it chose and benchmarks none (call 4 of 2026-12-06: the
# whole LM table, fla included, in 97 s).
#
#   triton_autotune_restore        unpacks .peers/triton-autotune.tgz, when there is one, into
#                                  $TRITON_CACHE_DIR (set it first)
#   triton_autotune_save OUTDIR    packs them into OUTDIR/triton-autotune.tgz: copy that file to
#                                  .peers/ here (git-ignored, never committed) and carry it along
export TRITON_CACHE_AUTOTUNING=1
triton_autotune_restore() {
  mkdir -p "$TRITON_CACHE_DIR"
  if [[ -f .peers/triton-autotune.tgz ]]; then
    tar xzf .peers/triton-autotune.tgz -C "$TRITON_CACHE_DIR" --strip-components=1 &&
      echo "triton: autotuning results restored from .peers/triton-autotune.tgz"
  fi
}
triton_autotune_save() {
  local dest=$1
  (cd "$TRITON_CACHE_DIR/.." && find "$(basename "$TRITON_CACHE_DIR")" \( -name '*.autotune.json' -o -name '*.so' \) |
    tar czf "$dest/triton-autotune.tgz" -T -) && echo "triton: autotuning results saved in $dest/triton-autotune.tgz"
}

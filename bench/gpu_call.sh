#!/usr/bin/env bash
# gpu_call.sh: one device call that does what every session needs from the GPU, most important
# first, inside a budget of BUDGET seconds (default 540, under the device's 600 s per call).
# Device time is scarce (30 minutes a session, a failed start costs one or two), so each part
# runs only while the time it usually takes is still left, and the logs come back as one file.
#
#   bash scripts/make_bundle.sh                    here; carry bundle/, .peers/fla and, when you
#   bash bench/gpu_call.sh [PARTS]                 have it, .peers/triton-autotune.tgz; there:
#
# PARTS (default "tests register f32_register trace lm workbench kernels ncu sanitize op smnist vs_fla"), in this order:
#   tests      test_backend_ops -b cuda (every op against the CPU), test_cuda, the CUDA Lua tests
#   register   the register-style prep, out and bwd_chunk (EFLA_DELTA_RULE_PREP_MMA, _OUT_MMA,
#              _BWD_CHUNK_MMA; out and bwd_chunk on by default since run 13) in the workbench: validated
#              at d = 128 and 64, racecheck, then each of the issue's shapes timed with none, each
#              alone, and all three (the A/B that decides their defaults in cuda/delta_rule_chunk.cu);
#              and the bf16 register scans with two warps a slice (_SCAN_KS=2, _BWD_KS=2): validated,
#              racecheck, timed beside the defaults (SCAN_MMA_KS_DEFAULT, BWD_SCAN_MMA_KS_DEFAULT)
#   f32_register  float32's four register-style kernels (EFLA_DELTA_RULE_SCAN_MMA_F32, _OUT_MMA_F32,
#              _BWD_MMA_F32, _BWD_CHUNK_MMA_F32) all on, the scans with two warps a slice
#              (_SCAN_F32_KS=2, _BWD_F32_KS=2), in the workbench: validated at d = 128 and 64,
#              memcheck and racecheck, then each kernel's mean time at the three large shapes (chunk
#              32): the defaults, + bwd_chunk's register form, + the split scans (the A/B for
#              BWD_CHUNK_MMA_F32_DEFAULT, SCAN_MMA_F32_KS_DEFAULT and BWD_SCAN_MMA_F32_KS_DEFAULT)
#   trace      bench/delta_rule_op_trace.sh: every kernel of one operator forward+backward under ncu
#              (bfloat16, float32) and of a decoding step
#   lm         bench/lm_step_vs_fla.sh: efla and fla, byte and 125m, real and no-op delta rule,
#              efla with --recompute-states and the per-op memory report, REPEAT=${LM_REPEAT:-2}
#              rounds interleaved (fla's step time moves between calls: see docs/BENCHMARKS.md)
#   workbench  ./delta_rule_dev (built here and carried as WORKBENCH=path, else built there with
#              bench/cuda/build_dev.sh): validate every kernel version against the float64
#              recurrence (bfloat16, and float32 inputs within 1e-5), then time them at the
#              issue's shapes (float32 at chunk 32, where d = 128 runs it)
#   kernels    the workbench's library row at the three large shapes with EFLA_DELTA_RULE_PROFILE=1:
#              each kernel's mean time (prep, state_scan, out; the backward's prep, bwd_scan, bwd_chunk)
#   ncu        bench/delta_rule_ncu.sh on the workbench at B=8 T=2048 H=16 d=128: each kernel's
#              shared-memory and SM throughput, occupancy, bank conflicts and barrier share
#   sanitize   compute-sanitizer memcheck and racecheck of the workbench's kernels, then of the
#              operator and a decoding step (the commands docs/RELIABILITY.md records)
#   op         bench/delta_rule_gpu.lua at the issue's four shapes: the operator in bfloat16 and
#              float32 (the issue's float32 target: at most 2x the bfloat16 time; fla has no
#              float32) and its achieved TFLOP/s against the bf16 GEMM ceiling measured there;
#              then float32 again with its four register-style kernels forced on and the split
#              scans (F32_ON below; by default out's is off at d = 128, where run 14 timed it
#              slower, and bwd_chunk's and the split scans are off until timed), then the defaults
#              plus bwd_chunk's register form and the split scans (F32_NEW)
#   smnist     the sMNIST training step in efla (in the recipe's compute, bfloat16 mixed, and in
#              float32) and in the published model's PyTorch token loop (float32)
#   vs_fla     bench/delta_rule_vs_fla.sh (the operator against fla's chunk_delta_rule)
#   vs_fla_register  the same with the three register-style kernels switched on (not in the default)
# Out: $OUT/gpu_call.tgz (every log; the device returns at most 8 files) and
# $OUT/triton-autotune.tgz (copy it to .peers/ here: the next call's fla skips its autotuning).
set -u
cd "$(dirname "$0")/.."
OUTDIR=${OUT:-/tmp/efla-gpu-call}
LOGS=$OUTDIR/logs
mkdir -p "$LOGS"
PARTS=${1:-"tests register f32_register trace lm workbench kernels ncu sanitize op smnist vs_fla"}
BUDGET=${BUDGET:-540}
[[ -x bundle/bin/efla ]] || { echo "gpu_call: no bundle at ./bundle (bash scripts/make_bundle.sh, then carry it)" >&2; exit 2; }
. bundle/bin/efla-env.sh
export EFLA_PROGRESS=plain PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/.peers${PYTHONPATH:+:$PYTHONPATH}
export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-/tmp/efla-triton-cache}
. bench/triton_autotune_cache.sh
triton_autotune_restore

t0=$(date +%s)
elapsed() { echo $(( $(date +%s) - t0 )); }
left() { echo $(( BUDGET - $(elapsed) )); }
# run NAME SECONDS CMD...: CMD under a timeout of SECONDS (at most what is left), its output in
# logs/NAME.log, its last lines here; skipped when less than half of SECONDS is left
run() {
  local name=$1 want=$2; shift 2
  local l; l=$(left)
  if (( l < want / 2 )); then echo "-- $name: skipped, ${l}s left"; return; fi
  (( want > l )) && want=$l
  echo "== T+$(elapsed)s $name"
  timeout "$want" "$@" > "$LOGS/$name.log" 2>&1
  echo "   rc=$?"
  tail -n "${TAIL:-3}" "$LOGS/$name.log" | sed 's/^/   /'
}
has() { [[ " $PARTS " == *" $1 "* ]]; }

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$LOGS/gpu.txt"
if has tests; then
  run backend_ops 120 bundle/tests/bin/test_backend_ops -b cuda
  run test_cuda 120 bundle/tests/bin/test_cuda
  for t in test_fused test_mixed_precision test_foreach_cuda test_temporaries test_attention_cuda \
           test_gated_delta_rule_cuda test_delta_rule_rank_cuda; do
    TAIL=1 run "$t" 60 bundle/bin/efla "tests/lua/$t.lua"
  done
fi
WB=${WORKBENCH:-./delta_rule_dev}
REGISTER_ON="EFLA_DELTA_RULE_PREP_MMA=1 EFLA_DELTA_RULE_OUT_MMA=1 EFLA_DELTA_RULE_BWD_CHUNK_MMA=1"
if has register; then
  [[ -x $WB ]] || run workbench_build 120 bash bench/cuda/build_dev.sh
  if [[ -x $WB ]]; then
    TAIL=10 run register_validate 60 env $REGISTER_ON "$WB" 2 2 512 4 128 64
    TAIL=10 run register_validate_d64 60 env $REGISTER_ON "$WB" 2 1 300 2 64 32
    TAIL=4 run register_racecheck 120 env $REGISTER_ON compute-sanitizer --tool racecheck "$WB" 2 1 130 1 128 64
    TAIL=10 run register_validate_ks2 60 env EFLA_DELTA_RULE_SCAN_KS=2 EFLA_DELTA_RULE_BWD_KS=2 "$WB" 2 2 512 4 128 64
    TAIL=4 run register_racecheck_ks2 120 env EFLA_DELTA_RULE_SCAN_KS=2 EFLA_DELTA_RULE_BWD_KS=2 \
      compute-sanitizer --tool racecheck "$WB" 2 1 130 1 128 64
    for sh in "8 2048 16 128" "4 8192 16 128" "16 4096 32 64" "128 784 1 64"; do
      # PREP_MMA, OUT_MMA, BWD_CHUNK_MMA, then both scans' KS (1: as timed, 2: two warps a slice)
      for mode in "0 0 0 1" "1 0 0 1" "0 1 0 1" "0 0 1 1" "1 1 1 1" "0 1 1 2"; do
        set -- $mode
        TAIL=1 run "register_${sh// /_}_prep$1_out$2_chunk$3_ks$4" 40 \
          env EFLA_DELTA_RULE_PREP_MMA=$1 EFLA_DELTA_RULE_OUT_MMA=$2 EFLA_DELTA_RULE_BWD_CHUNK_MMA=$3 \
          EFLA_DELTA_RULE_SCAN_KS=$4 EFLA_DELTA_RULE_BWD_KS=$4 "$WB" 2 $sh 64 time
      done
    done
  fi
fi
F32_NEW="EFLA_DELTA_RULE_BWD_CHUNK_MMA_F32=1 EFLA_DELTA_RULE_SCAN_F32_KS=2 EFLA_DELTA_RULE_BWD_F32_KS=2"
F32_ON="EFLA_DELTA_RULE_SCAN_MMA_F32=1 EFLA_DELTA_RULE_OUT_MMA_F32=1 EFLA_DELTA_RULE_BWD_MMA_F32=1 $F32_NEW"
if has f32_register; then
  [[ -x $WB ]] || run workbench_build 120 bash bench/cuda/build_dev.sh
  if [[ -x $WB ]]; then
    TAIL=12 run f32_register_validate 60 env $F32_ON "$WB" -1 2 300 2 128 32 f32
    TAIL=12 run f32_register_validate_d64 60 env $F32_ON "$WB" -1 1 300 2 64 32 f32
    TAIL=4 run f32_register_memcheck 60 env $F32_ON compute-sanitizer --tool memcheck "$WB" 2 1 100 2 128 32 f32
    TAIL=4 run f32_register_racecheck 90 env $F32_ON compute-sanitizer --tool racecheck "$WB" 2 1 70 1 128 32 f32
    for sh in "8 2048 16 128" "4 8192 16 128" "16 4096 32 64"; do
      for mode in "0 1" "1 1" "1 2"; do   # BWD_CHUNK_MMA_F32, both scans' KS
        set -- $mode
        k=f32_kernels_${sh// /_}_chunk$1_ks$2
        TAIL=1 run "$k" 60 env EFLA_DELTA_RULE_BWD_CHUNK_MMA_F32=$1 EFLA_DELTA_RULE_SCAN_F32_KS=$2 EFLA_DELTA_RULE_BWD_F32_KS=$2 \
          EFLA_DELTA_RULE_PROFILE=1 "$WB" 2 $sh 32 time f32
        awk '/^delta_rule_chunk/ {s[$2] += $3; n[$2]++} END {for (x in s) printf "   %s %.3f ms", x, s[x] / n[x]; print ""}' "$LOGS/$k.log"
      done
    done
  fi
fi
if has trace; then
  TAIL=14 OUT=$LOGS/trace run op_trace 90 bash bench/delta_rule_op_trace.sh
  TAIL=14 OUT=$LOGS/trace_f32 run op_trace_f32 90 bash bench/delta_rule_op_trace.sh --dtype float32
  # a decoding step: one kernel (the scan makes alpha itself)
  TAIL=6 OUT=$LOGS/trace_step run op_trace_step 40 bash bench/delta_rule_op_trace.sh --step --shape 8,1,16,128
fi
if has lm; then
  TAIL=40 OUT=$LOGS/lm REPEAT=${LM_REPEAT:-2} GENERIC=0 run lm 360 bash bench/lm_step_vs_fla.sh
fi
if has workbench; then
  [[ -x $WB ]] || run workbench_build 120 bash bench/cuda/build_dev.sh
  if [[ -x $WB ]]; then
    TAIL=12 run workbench_validate 90 "$WB" -1 2 512 4 128 64
    TAIL=12 run workbench_validate_f32 60 "$WB" -1 2 300 2 128 32 f32
    TAIL=12 run workbench_validate_f32_d64 60 "$WB" -1 1 300 2 64 64 f32
    TAIL=10 run workbench_b8 90 "$WB" -1 8 2048 16 128 64 time
    TAIL=4 run workbench_b8_f32 60 "$WB" 2 8 2048 16 128 32 time f32
    TAIL=10 run workbench_b16_d64 120 "$WB" -1 16 4096 32 64 64 time
  fi
fi
if has kernels && [[ -x $WB ]]; then   # each kernel's mean time over a row's calls (events around
  # each launch: EFLA_DELTA_RULE_PROFILE, so the row's totals carry that synchronisation)
  for sh in "8 2048 16 128" "4 8192 16 128" "16 4096 32 64"; do
    k=kernels_${sh// /_}
    TAIL=1 run "$k" 60 env EFLA_DELTA_RULE_PROFILE=1 "$WB" 2 $sh 64 time
    awk '/^delta_rule_chunk/ {s[$2] += $3; n[$2]++} END {for (x in s) printf "   %s %.3f ms", x, s[x] / n[x]; print ""}' "$LOGS/$k.log"
  done
fi
if has ncu && [[ -x $WB ]]; then
  TAIL=9 OUT=$LOGS/ncu run ncu 120 bash bench/delta_rule_ncu.sh "$WB"
fi
if has sanitize && [[ -x $WB ]]; then
  TAIL=4 run memcheck 90 compute-sanitizer --tool memcheck "$WB" 2 1 200 2 64 64
  TAIL=4 run racecheck 120 compute-sanitizer --tool racecheck "$WB" 2 1 130 1 64 32
  TAIL=4 run memcheck_f32 60 compute-sanitizer --tool memcheck "$WB" 2 1 100 2 128 32 f32
  TAIL=4 run racecheck_f32 90 compute-sanitizer --tool racecheck "$WB" 2 1 70 1 64 32 f32
  # C = 64 at d = 64 and 128: more than 30 s and 45 s under racecheck on an H100 (session 7)
  TAIL=4 run racecheck_c64_d64 100 compute-sanitizer --tool racecheck "$WB" 2 1 130 1 64 64
  TAIL=4 run racecheck_c64 150 compute-sanitizer --tool racecheck "$WB" 2 1 130 1 128 64
fi
if has sanitize; then   # through the operator: what the workbench does not run (alpha made in prep
  # and in the scan, the chain in bwd_chunk, the kept solves, a decoding step)
  OP=bench/delta_rule_op_trace.lua
  TAIL=3 run memcheck_op 60 compute-sanitizer --tool memcheck bundle/bin/efla $OP --shape 1,130,2,128 --warmup 0
  TAIL=3 run racecheck_op 90 compute-sanitizer --tool racecheck bundle/bin/efla $OP --shape 1,130,1,128 --warmup 0
  TAIL=3 run racecheck_op_f32 90 compute-sanitizer --tool racecheck bundle/bin/efla $OP --shape 1,100,1,128 --dtype float32 --warmup 0
  TAIL=3 run racecheck_step 60 compute-sanitizer --tool racecheck bundle/bin/efla $OP --step --shape 2,1,3,64 --warmup 0
fi
if has op; then
  TAIL=24 run delta_rule_op 150 bundle/bin/efla bench/delta_rule_gpu.lua \
    --shapes '8,2048,16,128;4,8192,16,128;16,4096,32,64;128,784,1,64' --deadline 120
  # float32's register-style kernels all forced on (out's is off by default at d = 128, bwd_chunk's
  # and the split scans until timed), then the defaults with bwd_chunk's register form and the split scans
  TAIL=10 run delta_rule_op_f32_register 90 env $F32_ON bundle/bin/efla bench/delta_rule_gpu.lua \
    --shapes '8,2048,16,128;4,8192,16,128;16,4096,32,64;128,784,1,64' --dtypes float32 --deadline 70
  TAIL=10 run delta_rule_op_f32_new 90 env $F32_NEW bundle/bin/efla bench/delta_rule_gpu.lua \
    --shapes '8,2048,16,128;4,8192,16,128;16,4096,32,64;128,784,1,64' --dtypes float32 --deadline 70
fi
if has smnist; then   # the sMNIST training step against the published model's PyTorch token loop
  TAIL=6 run smnist_efla 60 bundle/bin/efla bench/smnist_step_efla.lua   # the recipe's compute: bfloat16 mixed
  TAIL=6 run smnist_efla_f32 60 bundle/bin/efla bench/smnist_step_efla.lua --compute float32
  TAIL=4 run smnist_torch 90 python3 bench/torch_smnist_ref.py --methods efla
fi
if has vs_fla; then
  TAIL=30 OUT=$OUTDIR/vs_fla run delta_rule_vs_fla 400 bash bench/delta_rule_vs_fla.sh
fi
if has vs_fla_register; then
  TAIL=30 OUT=$OUTDIR/vs_fla_register run delta_rule_vs_fla_register 400 env $REGISTER_ON bash bench/delta_rule_vs_fla.sh
fi
echo "== T+$(elapsed)s end"
triton_autotune_save "$OUTDIR"
tar czf "$OUTDIR/gpu_call.tgz" -C "$OUTDIR" logs && echo "logs: $OUTDIR/gpu_call.tgz"

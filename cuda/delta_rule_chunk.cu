/* delta_rule_chunk.cu: the chunked WY/UT form of the delta rule (docs/MATH.md §4) on tensor
 * cores, for bfloat16 inputs (float32 state and accumulation); version 2 of the kernel
 * workbench (bench/cuda/delta_rule_dev.cu; version 1 is delta_rule_chunk_v1.cu). Per chunk of C tokens with
 * K, Q (C x dk), V (C x dv), a = alpha and the entering state S (dk x dv):
 *
 *   G = K K^T,  L = strict_lower(diag(a) G),  X = (I + L)^-1,  T = X diag(a)
 *   W = T K,    U = T V,    V' = U - W S = T (V - K S)
 *   O = scale (Q S + tril(Q K^T) V'),    S <- S + K^T V'
 *
 * Five kernels, each a short script of shared-memory matrix products (mm() below, WMMA
 * 16x16x16 bf16 with float accumulators):
 *   prep_kernel       one block per (chunk, head): G, the triangular solve, W and U -> global
 *                     (in the backward: W, T and X, and U only to recompute the states)
 *   state_scan_kernel one block per (sequence, head, 32- or 64-column dv tile): walks the
 *                     chunks in order with the state tile in shared memory (the next chunk's
 *                     tiles prefetched with cp.async where two blocks per SM still fit);
 *                     writes V' = U - W S, the chunk states, S_final
 *   out_kernel        one block per (chunk, head, dv tile): O = scale (Q S + tril(Q K^T) V')
 *                     from the state entering the chunk, all chunks in parallel
 *   bwd_scan_kernel   one block per (sequence, head, dv tile): walks the chunks backwards
 *                     with dS; writes dV' and the state gradient leaving every chunk (bf16),
 *                     dS0
 *   bwd_chunk_kernel  one block per (chunk, head): dq, dk, dv and dalpha of the chunk from
 *                     its entering state, the gradient of its leaving state, dV' and prep's T, X
 * The backward of the last line (derivation in docs/MATH.md §4):
 *   D = V - K S,  dP = tril(dO V'^T),  dQ = scale (dO S^T + dP K)
 *   dV' = scale tril(QK^T)^T dO + K dS_out,   dS_in = dS_out + scale Q^T dO - W^T dV'
 *   dD = T^T dV' (= dv),  dT = dV' D^T,  da_j += sum_i X_ij dT_ij,  dX = dT diag(a)
 *   dL = -X^T dX X^T (strictly lower),  dG_ij = a_i dL_ij,  da_i += sum_j dL_ij G_ij
 *   dK = scale dP^T Q + V' dS_out^T - dD S^T + (dG + dG^T) K
 * The chain from alpha into beta and k runs afterwards (delta_rule_alpha.cu).
 * bfloat16 has register-style forms (mma.sync, accumulators in registers), on by default where
 * they fit: of the state scans and out (delta_rule_chunk_scan_mma.cuh) and of bwd_chunk
 * (delta_rule_chunk_bwd_mma.cuh); and, opt-in because run 13 timed it slower than prep_kernel,
 * of prep's products (delta_rule_chunk_prep_mma.cuh). Float32 has them (three TF32 products each) of
 * both scans (delta_rule_chunk_scan_mma_f32.cuh, delta_rule_chunk_bwd_scan_mma_f32.cuh) and, up to
 * dk = 64, of out (delta_rule_chunk_out_mma_f32.cuh); of bwd_chunk up to chunk 32 opt-in, untimed
 * (delta_rule_chunk_bwd_mma_f32.cuh); its prep is WMMA only.
 *
 * Coverage: bfloat16, C in {16, 32, 64}, dk and dv multiples of 16 up to 128 whose shared
 * memory fits; efla_cuda_delta_rule_chunk_* return 1 for anything else and the caller
 * falls back to the scan kernels of delta_rule.cu. Rows past a sequence's end are zero
 * (alpha = 0 there), which makes them no-ops in every product. */
#include "delta_rule_chunk_kernels.cuh"
#include <string.h>

namespace {

/* ---- launching ------------------------------------------------------------------------------------ */

/* dv tile of out_kernel: 64 when dv allows it (fewer redundant Q K^T products), else dv; of the
 * state-only forward scan: 32 or 64 (scan_plan picks); of the backward scan: 64 when two of its
 * blocks fit a multiprocessor at 64, and for bf16 also where one does (d = 128: half the blocks,
 * each loading Q, K and W for twice the columns, measured 2-2.5 % faster forward+backward at
 * B=8 T=2048 and B=4 T=8192 in docs/BENCHMARKS.md run 9), else 32 (more blocks) */
template <int DV> struct Tile { static const int BV = DV >= 64 ? 64 : DV; };
template <int DV> struct ScanTile { static const int BV = DV >= 32 ? 32 : DV; };
template <class E, int C, int DK, int DV> struct BwdTile {
    static const int BV = DV >= 64 && (fit_blocks(bwd_scan_smem<E, C, DK, 64>()) == 2 ||
                                       (std::is_same<E, bf16>::value && bwd_scan_smem<E, C, DK, 64>() <= SMEM_PER_BLOCK_MAX))
                              ? 64 : ScanTile<DV>::BV;
};

/* A measuring aid's switch: the environment variable `name` set to 0 or 1 (its first
 * character), else dflt */
bool env_switch(const char *name, bool dflt) {
    const char *v = getenv(name);
    return v && (v[0] == '0' || v[0] == '1') ? v[0] == '1' : dflt;
}
/* ... and a measuring aid's number: `name` set to a positive integer, else dflt */
int env_int(const char *name, int dflt) {
    const char *v = getenv(name);
    const int n = v ? atoi(v) : 0;
    return n > 0 ? n : dflt;
}

/* Which version of a scan kernel runs: *mode = 1 the one with the cross-chunk cp.async
 * prefetch (two buffer sets, `with`) unless only the one without it fits two blocks on a
 * multiprocessor (then 0); -1 when neither fits the device. The variable named by env, set to
 * 0 or 1, forces the choice (a measuring aid for the workbench). */
template <typename K>
int prefetch_mode(K with, size_t with_bytes, K without, size_t without_bytes, const char *env, int *mode) {
    bool fp, fn;
    TRY(set_smem(with, with_bytes, &fp));
    TRY(set_smem(without, without_bytes, &fn));
    bool want = fit_blocks(with_bytes) == 2 || fit_blocks(without_bytes) == 1;
    want = env_switch(env, want);
    *mode = fp && (want || !fn) ? 1 : fn ? 0 : -1;
    return 0;
}

/* the forward's state scan: EFLA_DELTA_RULE_PREFETCH forces its choice */
template <class E, int C, int DK, int BV> int scan_mode(int *mode) {
    return prefetch_mode(state_scan_kernel<E, C, DK, BV, true>, state_scan_smem<E, C, DK, BV, true>(),
                         state_scan_kernel<E, C, DK, BV, false>, state_scan_smem<E, C, DK, BV, false>(), "EFLA_DELTA_RULE_PREFETCH", mode);
}

/* The state scan's tile and mode. The scan is latency-bound (a chunk step costs about the same
 * at 32 or 64 columns, a little more at 64), so the tile is the one that needs fewer waves of
 * blocks over the multiprocessors: 64 unless 32 needs fewer than 1.3x its waves.
 * EFLA_DELTA_RULE_SCAN_BV=32/64 forces the tile (a measuring aid for the workbench). */
struct ScanPlan { int bv, mode; bool mma; int ks = 1; };
/* float32: the scan with the state in registers and 3xTF32 products (state_scan_mma_f32_kernel)
 * where it fits, unless EFLA_DELTA_RULE_SCAN_MMA_F32=0 (a measuring aid). On by default since run 14
 * (H100, chunk 32): 0.64 against 1.24 ms at B=8 T=2048 H=16 d=128, 2.03 against 2.48 at B=4 T=8192.
 * EFLA_DELTA_RULE_SCAN_F32_KS=2: its products' k split over two warps a 16-column slice (KS = 2,
 * where it fits), opt-in until a GPU has timed it (checked on the host emulator only, session 19). */
const bool SCAN_MMA_F32_DEFAULT = true;
const int SCAN_MMA_F32_KS_DEFAULT = 1;
/* bfloat16: the scan with the state in registers (state_scan_mma_kernel, 64 columns a block or dv:
 * Tile's) wherever it fits, unless EFLA_DELTA_RULE_SCAN_MMA=0 (a measuring aid: the shared-memory
 * scan). EFLA_DELTA_RULE_SCAN_KS=2: its k split over two warps a slice (KS = 2), opt-in until a GPU
 * has timed it (checked on the host emulator only, session 19) */
const int SCAN_MMA_KS_DEFAULT = 1;
template <class E, int C, int DK, int DV> int scan_mma_plan(ScanPlan *sp) {
    sp->mma = false;
    constexpr int BV = Tile<DV>::BV;
    bool fits = false;
    if constexpr (std::is_same<E, bf16>::value) {
        if (!env_switch("EFLA_DELTA_RULE_SCAN_MMA", true)) return 0;
        if (env_int("EFLA_DELTA_RULE_SCAN_KS", SCAN_MMA_KS_DEFAULT) == 2) {
            TRY(set_smem(state_scan_mma_kernel<C, DK, BV, 2>, state_scan_mma_smem_ks2<C, DK, BV>(), &fits));
            if (fits) { *sp = ScanPlan{BV, 0, true, 2}; return 0; }
        }
        TRY(set_smem(state_scan_mma_kernel<C, DK, BV>, state_scan_mma_smem<C, DK, BV>(), &fits));
    } else if constexpr (std::is_same<E, float>::value) {
        if (!env_switch("EFLA_DELTA_RULE_SCAN_MMA_F32", SCAN_MMA_F32_DEFAULT)) return 0;
        if (env_int("EFLA_DELTA_RULE_SCAN_F32_KS", SCAN_MMA_F32_KS_DEFAULT) == 2) {
            TRY(set_smem(state_scan_mma_f32_kernel<C, DK, BV, 2>, state_scan_mma_f32_smem<C, DK, BV, 2>(), &fits));
            if (fits) { *sp = ScanPlan{BV, 0, true, 2}; return 0; }
        }
        TRY(set_smem(state_scan_mma_f32_kernel<C, DK, BV>, state_scan_mma_f32_smem<C, DK, BV>(), &fits));
    }
    if (fits) *sp = ScanPlan{BV, 0, true};
    return 0;
}
template <class E, int C, int DK, int DV> int scan_plan(int64_t nseq, int64_t H, ScanPlan *sp) {
    TRY((scan_mma_plan<E, C, DK, DV>(sp)));
    if (sp->mma) return 0;
    const int N = ScanTile<DV>::BV, W = Tile<DV>::BV;
    int mn = -1, mw = -1;
    TRY((scan_mode<E, C, DK, N>(&mn)));
    if (W != N) TRY((scan_mode<E, C, DK, W>(&mw)));
    *sp = ScanPlan{N, mn, false};
    if (mw < 0) return 0;
    if (mn < 0) { *sp = ScanPlan{W, mw, false}; return 0; }
    const int sms = cu_sm_count();
    const int64_t slots_n = (int64_t)sms * fit_blocks(mn == 1 ? state_scan_smem<E, C, DK, N, true>() : state_scan_smem<E, C, DK, N, false>());
    const int64_t slots_w = (int64_t)sms * fit_blocks(mw == 1 ? state_scan_smem<E, C, DK, W, true>() : state_scan_smem<E, C, DK, W, false>());
    const int64_t waves_n = (nseq * H * (DV / N) + slots_n - 1) / slots_n, waves_w = (nseq * H * (DV / W) + slots_w - 1) / slots_w;
    bool wide = 13 * waves_w < 10 * waves_n;
    const char *force = getenv("EFLA_DELTA_RULE_SCAN_BV");
    if (force && *force) wide = atoi(force) == W;
    if (wide) *sp = ScanPlan{W, mw, false};
    return 0;
}

template <class E, int C, int DK, int BV> void launch_state_scan_bv(const ArgsT<E> &p, int64_t nseq, int mode) {
    const dim3 grid((unsigned)(nseq * p.H), (unsigned)(p.dv / BV));
    if (mode == 1) state_scan_kernel<E, C, DK, BV, true><<<grid, THREADS, state_scan_smem<E, C, DK, BV, true>()>>>(p);
    else state_scan_kernel<E, C, DK, BV, false><<<grid, THREADS, state_scan_smem<E, C, DK, BV, false>()>>>(p);
}
template <class E, int C, int DK, int DV> int launch_state_scan(const ArgsT<E> &p, int64_t nseq, ScanPlan sp) {
    if (sp.mma) {
        constexpr int BV = Tile<DV>::BV;
        const dim3 grid((unsigned)(nseq * p.H), (unsigned)(p.dv / BV));
        if constexpr (std::is_same<E, bf16>::value) {
            if (sp.ks == 2) state_scan_mma_kernel<C, DK, BV, 2><<<grid, scan_mma_threads<BV, 2>(), state_scan_mma_smem_ks2<C, DK, BV>()>>>(p);
            else state_scan_mma_kernel<C, DK, BV><<<grid, scan_mma_threads<BV>(), state_scan_mma_smem<C, DK, BV>()>>>(p);
        } else if (sp.ks == 2)
            state_scan_mma_f32_kernel<C, DK, BV, 2><<<grid, scan_mma_threads<BV, 2>(), state_scan_mma_f32_smem<C, DK, BV, 2>()>>>(p);
        else
            state_scan_mma_f32_kernel<C, DK, BV><<<grid, scan_mma_threads<BV>(), state_scan_mma_f32_smem<C, DK, BV>()>>>(p);
        CU_CHECK_LAUNCH("delta_rule_chunk_state_scan_mma");
        return 0;
    }
    if (sp.bv == Tile<DV>::BV) launch_state_scan_bv<E, C, DK, Tile<DV>::BV>(p, nseq, sp.mode);
    else launch_state_scan_bv<E, C, DK, ScanTile<DV>::BV>(p, nseq, sp.mode);
    CU_CHECK_LAUNCH("delta_rule_chunk_state_scan");
    return 0;
}

/* bfloat16: the outputs in the register style (out_mma_kernel: a warp per 16 rows, all dv
 * columns) where it fits, else out_kernel; EFLA_DELTA_RULE_OUT_MMA=0 forces out_kernel (a
 * measuring aid). On by default since run 13 (H100): 0.284 against 0.430 ms at B=4 T=8192. */
const bool OUT_MMA_DEFAULT = true;
/* A register-style kernel launched (grid, threads, `bytes` of shared memory) where its switch `name`
 * (default dflt) is on and it fits; *ran says whether it was */
template <typename K, class A>
int launch_register_style(const char *name, bool dflt, K kernel, size_t bytes, dim3 grid, int threads, const A &p, bool *ran) {
    *ran = false;
    if (env_switch(name, dflt)) TRY(set_smem(kernel, bytes, ran));
    if (*ran) kernel<<<grid, threads, bytes>>>(p);
    return 0;
}
/* float32: the outputs in the register style (out_mma_f32_kernel, 3xTF32) where they are faster,
 * up to dk = 64; EFLA_DELTA_RULE_OUT_MMA_F32=0/1 forces the choice (a measuring aid). Run 14 (H100,
 * chunk 32, out alone): 1.27 against 2.24 ms at B=16 T=4096 H=32 d=64, but 1.87 against 1.69 ms at
 * B=4 T=8192 H=16 d=128, where a block's Q and K take 35 KB of float and Q's held fragments 64
 * registers. BV columns a block: 64, or 32 where EFLA_DELTA_RULE_OUT_F32_BV=32 (a measuring aid;
 * 64 was 9-23 % faster at all three shapes). *runs: whether it ran. */
template <int DK> constexpr bool out_mma_f32_default() { return DK <= 64; }
template <int C, int DK, int DV, int BV> int launch_out_f32_bv(const ArgsT<float> &p, bool *runs) {
    return launch_register_style("EFLA_DELTA_RULE_OUT_MMA_F32", out_mma_f32_default<DK>(), out_mma_f32_kernel<C, DK, BV>,
                                 out_mma_f32_smem<C, DK, BV>(), dim3((unsigned)p.nch, (unsigned)p.H, DV / BV), out_mma_threads<C>(), p, runs);
}
template <int C, int DK, int DV> int launch_out_f32(const ArgsT<float> &p, bool *runs) {
    constexpr int N = DV % 32 == 0 ? 32 : 16;
    if constexpr (DV % 64 == 0) {
        if (env_int("EFLA_DELTA_RULE_OUT_F32_BV", 64) != 32) return launch_out_f32_bv<C, DK, DV, 64>(p, runs);
    }
    return launch_out_f32_bv<C, DK, DV, N>(p, runs);
}
template <class E, int C, int DK, int DV> int launch_out(const ArgsT<E> &p) {
    if constexpr (std::is_same<E, bf16>::value) {
        bool runs = false;
        TRY(launch_register_style("EFLA_DELTA_RULE_OUT_MMA", OUT_MMA_DEFAULT, out_mma_kernel<C, DK, DV>, out_mma_smem<C, DK, DV>(),
                                  dim3((unsigned)p.nch, (unsigned)p.H), out_mma_threads<C>(), p, &runs));
        if (runs) return 0;
    }
    if constexpr (std::is_same<E, float>::value) {
        bool runs = false;
        TRY((launch_out_f32<C, DK, DV>(p, &runs)));
        if (runs) return 0;
    }
    constexpr int BVO = Tile<DV>::BV;
    out_kernel<E, C, DK, BVO><<<dim3((unsigned)p.nch, (unsigned)p.H, DV / BVO), THREADS, out_smem<E, C, DK, BVO>()>>>(p);
    return 0;
}

/* bfloat16 up to d = 128: prep's products in the register style (prep_mma_kernel) where
 * EFLA_DELTA_RULE_PREP_MMA=1 and it fits, else prep_kernel. Off by default: run 13 (H100) timed
 * it 2-4 % slower than prep_kernel (0.485 against 0.466 ms at B=4 T=8192), though it validates. */
const bool PREP_MMA_DEFAULT = false;
template <class E, int C, int DK, int DV> int launch_prep(const ArgsT<E> &p) {
    if constexpr (std::is_same<E, bf16>::value && DK <= 128 && DV <= 128) {
        bool runs = false;
        TRY(launch_register_style("EFLA_DELTA_RULE_PREP_MMA", PREP_MMA_DEFAULT, prep_mma_kernel<C, DK, DV>, prep_mma_smem<C, DK, DV>(),
                                  dim3((unsigned)p.nch, (unsigned)p.H), THREADS, p, &runs));
        if (runs) return 0;
    }
    prep_kernel<E, C, DK, DV><<<dim3((unsigned)p.nch, (unsigned)p.H), THREADS, prep_smem<E, C, DK, DV>()>>>(p);
    return 0;
}

/* version 2 keeps the chunk states in its element type: bfloat16 on the fast path (out_kernel
 * and bwd_chunk_kernel, their only readers, multiply them on the tensor cores in bfloat16, so
 * rounding them once when the scan stores them changes no result and halves what a training
 * step saves for them), float32 on the float32 path */
template <class E> constexpr efla_dtype chunk_state_dtype_for() {
    return std::is_same<E, bf16>::value ? EFLA_BFLOAT16 : EFLA_FLOAT32;
}
const bool CHUNK_FLOAT32 = true;   /* float32 inputs take these kernels too (mm()'s three-TF32 products) */
/* prep makes the forward's alpha from beta (make_alpha), writing alpha and lambda for a backward */
template <class E> bool make_alpha_from_beta(ArgsT<E> &p, const efla_delta_rule_args *a, const efla_delta_rule_buffers *buf) {
    p.beta = (const E *)buf->beta; p.alpha_out = (E *)buf->alpha_out; p.lambda_out = buf->lambda_out;
    p.order = a->alpha_order; p.ref = a->alpha_reference_eps;
    return p.beta != nullptr;
}

/* the forward's prep writes T and X to the kept solves; the backward's prep reads T there */
template <class E> void keep_solves(ArgsT<E> &p, const efla_delta_rule_buffers *buf) { p.tx = (E *)buf->chunk_solves; }
template <class E> void use_solves(ArgsT<E> &p, const efla_delta_rule_buffers *buf) {
    p.tx = (E *)buf->chunk_solves;
    p.solved = 1;
}

/* bwd_chunk takes the chain through alpha (dbeta, dk += 2 k dlambda) from beta and lambda */
template <class E> bool take_alpha_chain(ArgsT<E> &p, const efla_delta_rule_args *a, const efla_delta_rule_buffers *buf) {
    p.beta = (const E *)buf->beta; p.lambda = buf->lambda; p.dbeta = (E *)buf->dbeta;
    p.order = a->alpha_order; p.ref = a->alpha_reference_eps;
    return true;
}

/* plan: only say whether the kernels fit (*done), launch nothing */
template <class E, int C, int DK, int DV>
int run_fwd(ArgsT<E> &p, int64_t nseq, int device, bool *done, bool plan) {
    const int BVO = Tile<DV>::BV;
    bool f1, f3;
    TRY(set_smem(prep_kernel<E, C, DK, DV>, prep_smem<E, C, DK, DV>(), &f1));
    ScanPlan sp;
    TRY((scan_plan<E, C, DK, DV>(nseq, p.H, &sp)));
    const int mode = sp.mode;
    TRY(set_smem(out_kernel<E, C, DK, BVO>, out_smem<E, C, DK, BVO>(), &f3));
    if (!f1 || mode < 0 || !f3 || plan) { *done = f1 && mode >= 0 && f3; return 0; }
    const size_t tile_elems = (size_t)(p.nch * p.H * C);
    CuBuffer wbuf, csbuf;
    TRY(wbuf.alloc(sizeof(E) * tile_elems * (DK + DV + (p.o ? DV : 0)), device));
    p.w = wbuf.as<E>();
    p.u = p.w + tile_elems * DK;
    if (p.o) {   /* out_kernel reads V' and the entering states */
        p.vp = p.u + tile_elems * DV;
        if (!p.cs) {
            TRY(csbuf.alloc(sizeof(E) * (size_t)(p.nch * p.H * DK * DV), device));
            p.cs = csbuf.as<E>();
        }
    }
    Profile prof;
    prof.mark("start");
    TRY((launch_prep<E, C, DK, DV>(p)));
    CU_CHECK_LAUNCH("delta_rule_chunk_prep");
    prof.mark("prep");
    TRY((launch_state_scan<E, C, DK, DV>(p, nseq, sp)));
    prof.mark("state_scan");
    if (p.o && p.nch > 0) {
        TRY((launch_out<E, C, DK, DV>(p)));
        CU_CHECK_LAUNCH("delta_rule_chunk_out");
    }
    prof.mark("out");
    *done = true;
    return 0;
}

/* the backward scan (*mode as prefetch_mode's): EFLA_DELTA_RULE_BWD_PREFETCH forces its choice. By
 * that rule the prefetch is off wherever the scan without it fits two blocks per multiprocessor */
template <class E, int C, int DK, int BV> int bwd_scan_mode(int *mode) {
    return prefetch_mode(bwd_scan_kernel<E, C, DK, BV, true>, bwd_scan_smem<E, C, DK, BV, true>(),
                         bwd_scan_kernel<E, C, DK, BV, false>, bwd_scan_smem<E, C, DK, BV, false>(), "EFLA_DELTA_RULE_BWD_PREFETCH", mode);
}

template <class E, int C, int DK, int BV> void launch_bwd_scan(const ArgsT<E> &p, int64_t nseq, bool pf) {
    const dim3 grid((unsigned)(nseq * p.H), (unsigned)(p.dv / BV));
    if (pf) bwd_scan_kernel<E, C, DK, BV, true><<<grid, THREADS, bwd_scan_smem<E, C, DK, BV, true>()>>>(p);
    else bwd_scan_kernel<E, C, DK, BV, false><<<grid, THREADS, bwd_scan_smem<E, C, DK, BV, false>()>>>(p);
}

/* float32: the backward scan with dS in registers and 3xTF32 products (bwd_scan_mma_f32_kernel, 64
 * columns a block or dv) where prep made tril(Q K^T) and it fits, unless EFLA_DELTA_RULE_BWD_MMA_F32=0
 * (a measuring aid). On by default since run 14 (H100, chunk 32): 1.52 against 1.95 ms at B=8
 * T=2048 H=16 d=128, 3.02 against 3.85 at B=4 T=8192, 2.10 against 3.70 at B=16 T=4096 H=32 d=64. */
const bool BWD_SCAN_MMA_F32_DEFAULT = true;
/* EFLA_DELTA_RULE_BWD_F32_KS=2: that scan with dS's rows split over two warps a 16-column slice
 * (KS = 2, as the forward's EFLA_DELTA_RULE_SCAN_F32_KS), opt-in until a GPU has timed it */
const int BWD_SCAN_MMA_F32_KS_DEFAULT = 1;
/* bfloat16 with prep's tril(Q K^T) (the states saved): the backward scan with dS in registers
 * (bwd_scan_mma_kernel) where it fits, unless EFLA_DELTA_RULE_BWD_MMA=0 (a measuring aid); 64
 * columns a block, or 128 where 64 would take more than one wave of blocks; with
 * EFLA_DELTA_RULE_BWD_KS=2, 64 columns and dS's rows split over two warps a slice (opt-in, untimed).
 * *launched says whether it ran (else the caller launches bwd_scan_kernel). */
const int BWD_SCAN_MMA_KS_DEFAULT = 1;
template <class E, int C, int DK, int DV> int launch_bwd_scan_mma(const ArgsT<E> &p, int64_t nseq, bool *launched) {
    *launched = false;
    if constexpr (std::is_same<E, bf16>::value) {
        if (!p.pq || !env_switch("EFLA_DELTA_RULE_BWD_MMA", true)) return 0;
        constexpr int N = Tile<DV>::BV, W = DV >= 128 ? 128 : N;
        if (env_int("EFLA_DELTA_RULE_BWD_KS", BWD_SCAN_MMA_KS_DEFAULT) == 2) {   /* N columns a block, KS = 2 */
            bool fk = false;
            TRY(set_smem(bwd_scan_mma_kernel<C, DK, N, 2>, bwd_scan_mma_smem_ks2<C, DK, N>(), &fk));
            if (fk) {
                bwd_scan_mma_kernel<C, DK, N, 2><<<dim3((unsigned)(nseq * p.H), DV / N), scan_mma_threads<N, 2>(),
                                                   bwd_scan_mma_smem_ks2<C, DK, N>()>>>(p);
                *launched = true;
                return 0;
            }
        }
        bool fn = false, fw = false;
        TRY(set_smem(bwd_scan_mma_kernel<C, DK, N>, bwd_scan_mma_smem<C, DK, N>(), &fn));
        if (W != N) TRY(set_smem(bwd_scan_mma_kernel<C, DK, W>, bwd_scan_mma_smem<C, DK, W>(), &fw));
        const bool wide = fw && (!fn || nseq * p.H * (DV / N) > (int64_t)cu_sm_count() * fit_blocks(bwd_scan_mma_smem<C, DK, N>()));
        if (wide)
            bwd_scan_mma_kernel<C, DK, W><<<dim3((unsigned)(nseq * p.H), DV / W), scan_mma_threads<W>(), bwd_scan_mma_smem<C, DK, W>()>>>(p);
        else if (fn)
            bwd_scan_mma_kernel<C, DK, N><<<dim3((unsigned)(nseq * p.H), DV / N), scan_mma_threads<N>(), bwd_scan_mma_smem<C, DK, N>()>>>(p);
        else
            return 0;
        *launched = true;
    } else if constexpr (std::is_same<E, float>::value) {
        constexpr int BV = Tile<DV>::BV;
        const dim3 grid((unsigned)(nseq * p.H), DV / BV);
        if (!p.pq) return 0;
        if (env_int("EFLA_DELTA_RULE_BWD_F32_KS", BWD_SCAN_MMA_F32_KS_DEFAULT) == 2) {
            TRY(launch_register_style("EFLA_DELTA_RULE_BWD_MMA_F32", BWD_SCAN_MMA_F32_DEFAULT, bwd_scan_mma_f32_kernel<C, DK, BV, 2>,
                                      bwd_scan_mma_f32_smem<C, DK, BV, 2>(), grid, scan_mma_threads<BV, 2>(), p, launched));
            if (*launched) return 0;
        }
        TRY(launch_register_style("EFLA_DELTA_RULE_BWD_MMA_F32", BWD_SCAN_MMA_F32_DEFAULT, bwd_scan_mma_f32_kernel<C, DK, BV>,
                                  bwd_scan_mma_f32_smem<C, DK, BV>(), grid, scan_mma_threads<BV>(), p, launched));
    }
    return 0;
}

/* bfloat16 up to d = 128: bwd_chunk in the register style (bwd_chunk_mma_kernel) where it fits,
 * else bwd_chunk_kernel; EFLA_DELTA_RULE_BWD_CHUNK_MMA=0 forces bwd_chunk_kernel (a measuring
 * aid). On by default since run 13 (H100): 1.019 against 1.545 ms at B=4 T=8192.
 * float32 up to chunk 32: bwd_chunk_mma_f32_kernel (two warps a strip) where it fits, when
 * EFLA_DELTA_RULE_BWD_CHUNK_MMA_F32=1: off by default until a GPU has timed it (checked on the
 * host emulator only, session 19). */
const bool BWD_CHUNK_MMA_DEFAULT = true;
const bool BWD_CHUNK_MMA_F32_DEFAULT = false;
template <class E, int C, int DK, int DV> int launch_bwd_chunk(const ArgsT<E> &p) {
    if constexpr (std::is_same<E, bf16>::value && DK <= 128 && DV <= 128) {
        bool runs = false;
        TRY(launch_register_style("EFLA_DELTA_RULE_BWD_CHUNK_MMA", BWD_CHUNK_MMA_DEFAULT, bwd_chunk_mma_kernel<C, DK, DV>,
                                  bwd_chunk_mma_smem<C, DK, DV>(), dim3((unsigned)p.nch, (unsigned)p.H), bwd_chunk_mma_threads<C>(), p,
                                  &runs));
        if (runs) return 0;
    } else if constexpr (std::is_same<E, float>::value && C <= 32 && DK <= 128 && DV <= 128) {
        bool runs = false;
        TRY(launch_register_style("EFLA_DELTA_RULE_BWD_CHUNK_MMA_F32", BWD_CHUNK_MMA_F32_DEFAULT, bwd_chunk_mma_f32_kernel<C, DK, DV>,
                                  bwd_chunk_mma_f32_smem<C, DK, DV>(), dim3((unsigned)p.nch, (unsigned)p.H),
                                  bwd_chunk_mma_f32_threads<C>(), p, &runs));
        if (runs) return 0;
    }
    bwd_chunk_kernel<E, C, DK, DV><<<dim3((unsigned)p.nch, (unsigned)p.H), THREADS, bwd_chunk_smem<E, C, DK, DV>()>>>(p);
    return 0;
}

/* plan: only say whether the kernels fit (*done), launch nothing */
template <class E, int C, int DK, int DV>
int run_bwd(ArgsT<E> &p, int64_t nseq, int device, bool *done, bool plan) {
    const int BV = BwdTile<E, C, DK, DV>::BV, BV64 = Tile<DV>::BV;
    bool f1, f4;
    int bmode = -1, bmode64 = -1;
    TRY(set_smem(prep_kernel<E, C, DK, DV>, prep_smem<E, C, DK, DV>(), &f1));
    ScanPlan sp;
    TRY((scan_plan<E, C, DK, DV>(nseq, p.H, &sp)));
    const int mode = sp.mode;
    TRY((bwd_scan_mode<E, C, DK, BV>(&bmode)));
    /* EFLA_DELTA_RULE_BWD_BV=64: the backward scan with 64-column tiles even where two blocks of
     * it don't fit a multiprocessor (a measuring aid for the workbench) */
    const char *force = getenv("EFLA_DELTA_RULE_BWD_BV");
    if (BV64 != BV && force && atoi(force) == BV64) TRY((bwd_scan_mode<E, C, DK, BV64>(&bmode64)));
    TRY(set_smem(bwd_chunk_kernel<E, C, DK, DV>, bwd_chunk_smem<E, C, DK, DV>(), &f4));
    if (!f1 || mode < 0 || bmode < 0 || !f4 || plan) { *done = f1 && mode >= 0 && bmode >= 0 && f4; return 0; }
    const size_t state_elems = (size_t)(p.nch * p.H * DK * DV);
    CuBuffer wbuf, txbuf, pqbuf, dvpbuf, dcsbuf, csbuf;
    /* U only for a state recompute: with saved states the backward reads W alone */
    TRY(wbuf.alloc(sizeof(E) * (size_t)(p.nch * p.H * C * (DK + (p.states ? 0 : DV))), device));
    p.w = wbuf.as<E>();
    p.u = p.states ? nullptr : p.w + p.nch * p.H * C * DK;
    if (!p.solved) {   /* the backward's prep solves and keeps T and X for bwd_chunk */
        TRY(txbuf.alloc(sizeof(E) * (size_t)(p.nch * p.H * 2 * C * C), device));
        p.tx = txbuf.as<E>();
    }
    /* tril(Q K^T) made once per chunk by prep instead of once per dv tile and chunk by the
     * backward scan; prep has room for Q only where it makes no U (saved states).
     * EFLA_DELTA_RULE_SCAN_QK=1: the scan makes it (a measuring aid for the workbench). */
    if (p.states && DV >= DK && !env_switch("EFLA_DELTA_RULE_SCAN_QK", false)) {
        TRY(pqbuf.alloc(sizeof(E) * (size_t)(p.nch * p.H * C * C), device));
        p.pq = pqbuf.as<E>();
    }
    TRY(dvpbuf.alloc(sizeof(E) * (size_t)(p.nch * p.H * C * DV), device));
    p.dvp = dvpbuf.as<E>();
    TRY(dcsbuf.alloc(sizeof(E) * state_elems, device));
    p.dcs = dcsbuf.as<E>();
    Profile prof;
    prof.mark("start");
    TRY((launch_prep<E, C, DK, DV>(p)));
    CU_CHECK_LAUNCH("delta_rule_chunk_prep");
    if (!p.states) {   /* recompute the chunk states with a state-only forward */
        TRY(csbuf.alloc(sizeof(E) * state_elems, device));
        ArgsT<E> f = p;
        f.o = nullptr; f.vp = nullptr; f.sf = nullptr; f.cs = csbuf.as<E>();
        TRY((launch_state_scan<E, C, DK, DV>(f, nseq, sp)));
        p.states = csbuf.as<E>();
    }
    prof.mark("prep+fwd");
    bool mma = false;
    TRY((launch_bwd_scan_mma<E, C, DK, DV>(p, nseq, &mma)));
    if (!mma) {
        if (bmode64 >= 0) launch_bwd_scan<E, C, DK, BV64>(p, nseq, bmode64 == 1);
        else launch_bwd_scan<E, C, DK, BV>(p, nseq, bmode == 1);
    }
    CU_CHECK_LAUNCH("delta_rule_chunk_bwd_scan");
    prof.mark("bwd_scan");
    TRY((launch_bwd_chunk<E, C, DK, DV>(p)));
    CU_CHECK_LAUNCH("delta_rule_chunk_bwd_chunk");
    prof.mark("bwd_chunk");
    *done = true;
    return 0;
}

} // namespace

/* the entry points (dispatch on the sizes, coverage, the shared arguments): the same for
 * every version */
#define EFLA_CHUNK_FWD efla_cuda_delta_rule_chunk_fwd
#define EFLA_CHUNK_BWD efla_cuda_delta_rule_chunk_bwd
#define EFLA_CHUNK_PLAN efla_cuda_delta_rule_chunk_plan
#include "delta_rule_chunk_entry.inc"

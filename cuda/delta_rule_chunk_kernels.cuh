/* delta_rule_chunk_kernels.cuh: the device code of the tensor-core chunk kernels (version 2,
 * the library's): their arguments, shared-memory sizes and the five kernels. cuda/delta_rule_chunk.cu
 * launches them (the maths and the plan of each kernel are at its top); the host emulator
 * bench/cuda/delta_rule_chunk_emu.cpp runs the same code on a machine without a GPU. */
#ifndef EFLA_CUDA_DELTA_RULE_CHUNK_KERNELS_CUH
#define EFLA_CUDA_DELTA_RULE_CHUNK_KERNELS_CUH
#include "delta_rule_chunk_tiles.cuh"
#include "delta_rule_alpha_kernels.cuh"   /* alpha's formulas, its row sum and rounding, the chain */

namespace {

/* E: the element of the inputs, the outputs and every intermediate the kernels pass on
 * (bf16: the fast path; float: the float32 path, whose products are mm()'s three-TF32 ones) */
template <class E> struct ArgsT {
    int64_t H, dk, dv, nseq, nch;
    const int64_t *seq;   /* per sequence: (b*T+start)*H, length, first chunk */
    float scale;
    const E *q, *k, *v, *alpha, *d_o;
    const float *s0, *dsf;
    const E *states;   /* backward: the state entering every chunk (cs of the forward) */
    E *o, *w, *u, *vp, *dvp, *dq, *dk_out, *dv_out, *dalpha;
    E *tx;    /* T then X (C x C each) of every chunk: written by prep (the forward's, where the
               * solves are kept; else the backward's) for bwd_chunk */
    int solved;   /* backward: tx holds the forward's solves, so prep reads T there instead of solving */
    E *pq;    /* backward: tril(Q K^T) of every chunk (C x C), from prep for bwd_scan, when set */
    E *dcs;   /* backward: the state gradient leaving every chunk (in E: on the bf16 path its one reader rounds to bf16 anyway) */
    E *cs;    /* forward: the state entering every chunk (in E: on the bf16 path its readers round to bf16 anyway) */
    float *sf, *ds0;
    /* forward, when alpha is NULL: prep makes alpha from beta and lambda = |k|^2 (order, ref),
     * writing them to alpha_out and lambda_out where set.
     * backward, when dbeta is set: bwd_chunk takes the chain through alpha itself (dbeta, and
     * 2 k dlambda added into dk before dk is stored) instead of writing dalpha */
    const E *beta;
    E *alpha_out;
    double *lambda_out;
    const double *lambda;
    E *dbeta;
    int order, ref;
};

/* alpha of (beta, lambda) rounded to E as alpha_as rounds it; out of line, so that the
 * double-precision formulas' registers stay out of the kernels' products (one lane per row
 * calls it) */
template <class E> __device__ __noinline__ E alpha_of(double beta, double lambda, int order, int ref) {
    return alpha_as<E>(beta, lambda, order, ref);
}

/* The forward's alpha of a chunk's rows, made from K in shared memory, summed and rounded as
 * alpha_fwd_kernel does it (lane_sum_squares, warp_sum_d, alpha_as: delta_rule_alpha_kernels.cuh),
 * so the same alpha bit for bit as the separate kernel; a[r] for the solve, alpha and lambda to
 * global where p asks. Warp w sums rows w, w + 16, ... together, then its lane i evaluates alpha
 * of the i-th of them: the warp's rows' double-precision formulas run side by side, not one
 * after another. */
template <int C, int DK, class E>
__device__ void make_alpha(const ArgsT<E> &p, Tm<E> K, const ChunkRows &cr, float *a) {
    constexpr int ROWS = C / NWARP;   /* rows per warp (C >= 16) */
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    double s[ROWS];
#pragma unroll
    for (int i = 0; i < ROWS; i++) {
        const int r = warp + i * NWARP;
        s[i] = r < cr.len ? lane_sum_squares([&](int64_t d) { return (double)to_f(K.p[r * K.ld + d]); }, DK) : 0.0;
    }
#pragma unroll
    for (int i = 0; i < ROWS; i++) s[i] = warp_sum_d(s[i]);   /* r < cr.len is warp-uniform */
    if (lane < ROWS) {
        const int r = warp + lane * NWARP;
        double mine = 0;
#pragma unroll
        for (int i = 0; i < ROWS; i++)
            if (i == lane) mine = s[i];
        if (r >= cr.len) {
            a[r] = 0.0f;
        } else {
            const int64_t row = cr.first + (int64_t)r * p.H;
            const E at = alpha_of<E>(ld(p.beta + row), mine, p.order, p.ref);
            a[r] = to_f(at);
            if (p.alpha_out) p.alpha_out[row] = at;
            if (p.lambda_out) p.lambda_out[row] = mine;
        }
    }
}

/* EFLA_PHASE_CLOCK (the workbench's measuring aid, never in the library): thread 0 of each block
 * adds the cycles since its previous mark to phase_cycles[kernel][phase], so a run shows where
 * each kernel's time goes between its barriers (phase_clock_report() prints and clears them). */
#ifdef EFLA_PHASE_CLOCK
__device__ unsigned long long phase_cycles[5][24];
#define PHASE_START long long phase_t0_ = clock64()
#define PHASE(K, I) do { if (threadIdx.x == 0) { const long long t_ = clock64(); \
    atomicAdd(&phase_cycles[K][I], (unsigned long long)(t_ - phase_t0_)); phase_t0_ = t_; } } while (0)
void phase_clock_report() {
    static const char *names[5] = {"prep", "state_scan", "out", "bwd_scan", "bwd_chunk"};
    unsigned long long h[5][24], zero[5][24] = {};
    cudaMemcpyFromSymbol(h, phase_cycles, sizeof h);
    cudaMemcpyToSymbol(phase_cycles, zero, sizeof zero);
    for (int k = 0; k < 5; k++) {
        double tot = 0;
        for (int i = 0; i < 24; i++) tot += (double)h[k][i];
        if (tot == 0) continue;
        printf("phase clock %-10s", names[k]);
        for (int i = 0; i < 24; i++) if (h[k][i]) printf(" %d:%.1f%%", i, 100.0 * (double)h[k][i] / tot);
        printf("  (%.3g Gcycles summed over blocks)\n", tot / 1e9);
    }
}
#else
#define PHASE_START
#define PHASE(K, I)
#endif

/* ---- asynchronous copies (cp.async): global -> shared without a register round trip -------- */
#ifdef EFLA_EMULATE_CUDA
/* The host emulator holds each copy back until the wait that covers its commit group and fills
 * its destination with NaN meanwhile, so a read that comes before its wait (a missing or wrong
 * cp_async_wait) reads NaN and fails the emulator's checks, where a GPU would read stale data
 * only now and then. The copied bytes are taken at issue (global inputs do not change). */
struct EmuCopy { void *dst; unsigned char bytes[16]; };
struct EmuAsync { std::vector<EmuCopy> open; std::vector<std::vector<EmuCopy>> groups; };
static thread_local EmuAsync emu_async;   /* per emulated thread, as cp.async groups are */
__device__ __forceinline__ void cp_async16(void *dst, const void *src, bool valid) {
    EmuCopy c;
    c.dst = dst;
    if (valid) memcpy(c.bytes, src, 16); else memset(c.bytes, 0, 16);
    memset(dst, 0xff, 16);   /* NaN in bfloat16 and in float */
    emu_async.open.push_back(c);
}
__device__ __forceinline__ void cp_async_commit() {
    emu_async.groups.push_back(emu_async.open);
    emu_async.open.clear();
}
template <int N> __device__ __forceinline__ void cp_async_wait() {
    std::vector<std::vector<EmuCopy>> &g = emu_async.groups;
    while ((int)g.size() > N) {
        for (const EmuCopy &c : g.front()) memcpy(c.dst, c.bytes, 16);
        g.erase(g.begin());
    }
}
__device__ __forceinline__ void cp_async_wait_one() { cp_async_wait<1>(); }
__device__ __forceinline__ void cp_async_wait_all() { cp_async_wait<0>(); }
#else
__device__ __forceinline__ void cp_async16(void *dst, const void *src, bool valid) {
    const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    const int n = valid ? 16 : 0;   /* 0: zero-fill the 16 bytes, read nothing */
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(n) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_one() { asm volatile("cp.async.wait_group 1;\n" ::: "memory"); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }
/* this thread's copies done but for the last N commit groups */
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }
#endif

/* the asynchronous counterpart of load_rows (no scaling): rows >= len are zero-filled */
template <int R, int N, class E>
__device__ void load_rows_async(Tm<E> dst, const E *src, int64_t stride, int len) {
    constexpr int V = pad_of<E>();   /* elements per 16-byte copy */
    each<R, N / V>([&](int r, int v) {
        const bool ok = r < len;
        cp_async16(dst.p + r * dst.ld + v * V, ok ? src + r * stride + v * V : src, ok);
    });
}

/* ---- prep: W = T K and U = T V of every chunk (W alone when p.u is NULL; T and X to p.tx when set,
 * or T read from p.tx when p.solved, the forward's solves kept for the backward;
 * tril(Q K^T) to p.pq when set, which the run sets only where U is not made: Q then takes V's
 * space, so DV >= DK; alpha itself when p.alpha is NULL: make_alpha) ---- */
template <class E, int C, int DK, int DV>
constexpr size_t prep_smem() {
    return 2 * tm_bytes<E>(C, DK > DV ? DK : DV) + tm_bytes<E>(C, C) + 2 * fm_bytes(C, C) + fm_bytes(C, DK > DV ? DK : DV) +
           C * 4 + 128;
}

template <class E, int C, int DK, int DV>
__global__ void __launch_bounds__(THREADS, fit_blocks(prep_smem<E, C, DK, DV>())) prep_kernel(ArgsT<E> p) {
    EFLA_DYNAMIC_SMEM(smem);
    constexpr int WT = warp_tiles<E>(prep_smem<E, C, DK, DV>());   /* mm's tiles per warp */
    PHASE_START;
    const int64_t g = blockIdx.x, h = blockIdx.y;
    const ChunkRows cr = chunk_rows(p, g, h, C);
    Carver cv(smem);
    Tm<E> K = cv.tm<E>(C, DK), V = cv.tm<E>(C, DV), Tb = cv.tm<E>(C, C);
    Fm G = cv.fm(C, C), X = cv.fm(C, C), F = cv.fm(C, DK > DV ? DK : DV);
    float *a = (float *)(smem + cv.off);
    EFLA_SMEM_FITS(cv.off + C * 4, (prep_smem<E, C, DK, DV>()));
    const int64_t rs = p.H;   /* rows between consecutive tokens */
    /* two commit groups: what the first products need (K; T where it is read, not solved),
     * then V and Q, which arrive during the solve */
    load_rows_async<C, DK>(K, p.k + cr.first * DK, rs * DK, cr.len);
    E *const tx = p.tx ? p.tx + (g * p.H + h) * 2 * C * C : nullptr;
    if (p.solved) load_rows_async<C, C>(Tb, tx, C, C);   /* the forward's T: no solve here */
    cp_async_commit();
    if (p.u) load_rows_async<C, DV>(V, p.v + cr.first * DV, rs * DV, cr.len);
    const Tm<E> Q = V;   /* p.pq: Q in V's space (no U then) */
    const bool make_pq = DV >= DK && p.pq;   /* DV >= DK: Q fits V's space */
    if (make_pq) load_rows_async<C, DK>(Q, p.q + cr.first * DK, rs * DK, cr.len);
    cp_async_commit();
    if (p.alpha && !p.solved)
        for (int i = threadIdx.x; i < C; i += THREADS)
            a[i] = i < cr.len ? to_f(p.alpha[cr.first + i * rs]) : 0.0f;
    if (p.solved) cp_async_wait_all();   /* W's and tril(Q K^T)'s products come first */
    else cp_async_wait_one();
    __syncthreads(); PHASE(0, 1);
    if (!p.solved) {
        mm<false, true, WT>(K, K, G, C, C, DK, false);
        if (!p.alpha) make_alpha<C, DK>(p, K, cr, a);   /* the forward makes alpha (reads K only) */
        __syncthreads(); PHASE(0, 2);
        unit_lower_inverse<C>(X, G, a, F.p);   /* F is free until W */
        /* T = X diag(a), four columns at a time (vector stores: T and X also to tx, which
         * bwd_chunk and a backward's prep, when the forward's, read) */
        each<C, C / 4>([&](int r, int v) {
            const int c = 4 * v;
            const float4 x = *(const float4 *)(X.p + r * X.ld + c);
            const float4 t = make_float4(x.x * a[c], x.y * a[c + 1], x.z * a[c + 2], x.w * a[c + 3]);
            put4(Tb.p + r * Tb.ld + c, t);
            if (tx) {
                put4(tx + r * C + c, t);
                put4(tx + C * C + r * C + c, x);
            }
        });
        cp_async_wait_all();   /* V and Q */
        __syncthreads(); PHASE(0, 3);
    }
    mm<false, false, WT>(Tb, K, F, C, DK, C, false);
    if (make_pq) mm<false, true, WT>(Q, K, G, C, C, DK, false, blocks_of<WT>(C, DK));   /* G is free after the solve; on the warps W's product leaves */
    __syncthreads(); PHASE(0, 4);
    store_rows<C, DK>(p.w + (g * p.H + h) * C * DK, DK, F, C);
    if (make_pq) {
        const auto tril = tril_to(Tm<E>{p.pq + (g * p.H + h) * C * C, C}, G);
        each<C, C / 4>([&](int r, int v) { tril(r, 4 * v); });
    }
    if (!p.u) { PHASE(0, 0); return; }   /* a backward with saved chunk states needs W alone */
    __syncthreads(); PHASE(0, 5);
    mm<false, false, WT>(Tb, V, F, C, DV, C, false);
    __syncthreads(); PHASE(0, 6);
    store_rows<C, DV>(p.u + (g * p.H + h) * C * DV, DV, F, C);
    PHASE(0, 0);
}


/* ---- forward, step 1: the state recurrence alone ---------------------------------------------- */
/* One block per (sequence, head, dv tile of BV columns) walks the chunks in order with the state
 * tile in shared memory: V' = U - W S (to vp when vp is set), the entering state to cs
 * (when set), S += K^T V'. The output product is not here (out_kernel runs it in parallel over
 * chunks), so the critical path per chunk is two products (BV: 32 or 64, scan_plan picks).
 * PF: the next chunk's W, K and U are fetched with cp.async while the current chunk computes. */
template <class E, int C, int DK, int BV, bool PF>
constexpr size_t state_scan_smem() {
    return fm_bytes(DK, BV) + fm_bytes(C, BV) + tm_bytes<E>(DK, BV) + (PF ? 2 : 1) * (2 * tm_bytes<E>(C, DK) + tm_bytes<E>(C, BV)) + 128;
}

template <class E, int C, int DK, int BV, bool PF>
__global__ void __launch_bounds__(THREADS, fit_blocks(state_scan_smem<E, C, DK, BV, PF>())) state_scan_kernel(ArgsT<E> p) {
    EFLA_DYNAMIC_SMEM(smem);
    constexpr int WT = warp_tiles<E>(state_scan_smem<E, C, DK, BV, PF>());   /* mm's tiles per warp */
    PHASE_START;
    const int64_t n = blockIdx.x / p.H, h = blockIdx.x % p.H, j0 = (int64_t)blockIdx.y * BV;
    const int64_t dv = p.dv;
    Carver cv(smem);
    Fm S = cv.fm(DK, BV), F = cv.fm(C, BV);
    Tm<E> Sb = cv.tm<E>(DK, BV);
    constexpr int NB = PF ? 2 : 1;   /* buffer sets: two when prefetching */
    /* set b is set 0 moved by b * SET bytes (pointer arithmetic rather than arrays of tiles,
     * which the compiler would keep in local memory) */
    constexpr size_t SET = 2 * tm_bytes<E>(C, DK) + tm_bytes<E>(C, BV);
    char *const set0 = smem + cv.off;
    cv.off += NB * SET;
    EFLA_SMEM_FITS(cv.off, (state_scan_smem<E, C, DK, BV, PF>()));
    auto Wt = [&](int b) { return Tm<E>{(E *)(set0 + b * SET), DK + pad_of<E>()}; };
    auto Kt = [&](int b) { return Tm<E>{(E *)(set0 + b * SET + tm_bytes<E>(C, DK)), DK + pad_of<E>()}; };
    auto Ut = [&](int b) { return Tm<E>{(E *)(set0 + b * SET + 2 * tm_bytes<E>(C, DK)), BV + pad_of<E>()}; };
    load_state<DK, BV>(S, p.s0 ? p.s0 + (n * p.H + h) * DK * dv + j0 : nullptr, dv);   /* the entering state */
    const int64_t first = p.seq[3 * n + 2], len = p.seq[3 * n + 1];
    const int64_t nchunks = (len + C - 1) / C;
    const int64_t rs = p.H;
    /* chunk c's tiles into buffer set c % NB: one commit group per chunk when prefetching; else
     * three (W, U, K in the order the chunk uses them), so that the products start on W and U
     * while K is still on its way */
    auto fetch = [&](int64_t c) {
        const int64_t g = first + c, row = p.seq[3 * n] + c * C * p.H + h;
        const int clen = (int)(len - c * C < C ? len - c * C : C);
        const int b = (int)(c % NB);
        if (PF) {
            load_rows_async<C, DK>(Wt(b), p.w + (g * p.H + h) * C * DK, DK, C);
            load_rows_async<C, DK>(Kt(b), p.k + row * DK, rs * DK, clen);
            load_rows_async<C, BV>(Ut(b), p.u + (g * p.H + h) * C * dv + j0, dv, C);
            cp_async_commit();
        } else {
            load_rows_async<C, DK>(Wt(b), p.w + (g * p.H + h) * C * DK, DK, C);
            cp_async_commit();
            load_rows_async<C, BV>(Ut(b), p.u + (g * p.H + h) * C * dv + j0, dv, C);
            cp_async_commit();
            load_rows_async<C, DK>(Kt(b), p.k + row * DK, rs * DK, clen);
            cp_async_commit();
        }
    };
    if (PF && nchunks > 0) fetch(0);
    for (int64_t c = 0; c < nchunks; c++) {
        const int64_t g = first + c;
        const int b = (int)(c % NB);
        __syncthreads(); PHASE(1, 1);   /* S final from the previous chunk; F, Sb and the other buffer set free */
        if (!PF) fetch(c);
        else if (c + 1 < nchunks) { fetch(c + 1); cp_async_wait_one(); }
        else cp_async_wait_all();
        to_tile_and_store<DK, BV>(Sb, p.cs ? p.cs + (g * p.H + h) * DK * dv + j0 : nullptr, dv, S);   /* and the entering state to cs */
        if (!PF) cp_async_wait<1>();   /* W and U */
        __syncthreads(); PHASE(1, 2);   /* every thread's part of chunk c's tiles (W, U) and Sb are in */
        /* V' = U - W S, by the warp that owns each tile of the product right after it (no other
         * warp reads U meanwhile), into U's space and to vp */
        {
            E *dst = p.vp ? p.vp + (g * p.H + h) * C * dv + j0 : nullptr;
            const Tm<E> U = Ut(b);
            mm_then<false, false, WT>(Wt(b), Sb, F, C, BV, DK, false, [&](int r, int c) {
                const float4 x = sub4(get4(U.p + r * U.ld + c), get4(F.p + r * F.ld + c));
                put4(U.p + r * U.ld + c, x);
                if (dst) put4(dst + r * dv + c, x);   /* rounded to E as U is */
            });
        }
        if (!PF) cp_async_wait<0>();   /* K */
        __syncthreads(); PHASE(1, 4);
        /* S += K^T V' */
        mm<true, false, WT>(Kt(b), Ut(b), S, DK, BV, C, true);
    }
    __syncthreads(); PHASE(1, 5);
    if (p.sf) store_state<DK, BV>(p.sf + (n * p.H + h) * DK * dv + j0, dv, S);
    PHASE(1, 0);
}


/* ---- forward, step 2: the outputs, in parallel over chunks ------------------------------------ */
/* One block per (chunk, head, dv tile of BV columns): O = scale (Q S + tril(Q K^T) V') with S the
 * state entering the chunk (cs) and V' from the scan (vp). */
template <class E, int C, int DK, int BV>
constexpr size_t out_smem() {
    return fm_bytes(C, C) + fm_bytes(C, BV) + 2 * tm_bytes<E>(C, DK) + tm_bytes<E>(DK, BV) + tm_bytes<E>(C, BV) + tm_bytes<E>(C, C) + 128;
}

template <class E, int C, int DK, int BV>
__global__ void __launch_bounds__(THREADS, fit_blocks(out_smem<E, C, DK, BV>())) out_kernel(ArgsT<E> p) {
    EFLA_DYNAMIC_SMEM(smem);
    constexpr int WT = warp_tiles<E>(out_smem<E, C, DK, BV>());   /* mm's tiles per warp */
    PHASE_START;
    const int64_t g = blockIdx.x, h = blockIdx.y, j0 = (int64_t)blockIdx.z * BV;
    const int64_t dv = p.dv, rs = p.H;
    const ChunkRows cr = chunk_rows(p, g, h, C);
    Carver cv(smem);
    Fm P = cv.fm(C, C), F = cv.fm(C, BV);
    Tm<E> Q = cv.tm<E>(C, DK), K = cv.tm<E>(C, DK), Sb = cv.tm<E>(DK, BV), Vp = cv.tm<E>(C, BV), Pb = cv.tm<E>(C, C);
    EFLA_SMEM_FITS(cv.off, (out_smem<E, C, DK, BV>()));
    /* Q and K first: tril(Q K^T) is made while S and V' arrive (the kernel waited on its loads
     * for half its time when they came in one group) */
    load_rows_async<C, DK>(Q, p.q + cr.first * DK, rs * DK, cr.len);
    load_rows_async<C, DK>(K, p.k + cr.first * DK, rs * DK, cr.len);
    cp_async_commit();
    load_rows_async<C, BV>(Vp, p.vp + (g * p.H + h) * C * dv + j0, dv, C);
    load_rows_async<DK, BV>(Sb, p.cs + (g * p.H + h) * DK * dv + j0, dv, DK);
    cp_async_commit();
    cp_async_wait_one();
    __syncthreads(); PHASE(2, 1);
    mm_then<false, true, WT>(Q, K, P, C, C, DK, false, tril_to(Pb, P));   /* by the warp that owns the tile */
    cp_async_wait_all();
    __syncthreads(); PHASE(2, 3);
    /* O = scale (Q S + tril(Q K^T) V'), the two products summed in registers, each tile stored
     * to o by the warp that made it */
    mm2<false, false, false, false, WT>(Q, Sb, DK, Pb, Vp, C, F, C, BV, false);
    E *const o = p.o + cr.first * dv + j0;
    then_each<WT>(C, BV, [&](int r, int c) {
        if (r < cr.len) put4(o + r * rs * dv + c, scale4(get4(F.p + r * F.ld + c), p.scale));
    });
    PHASE(2, 0);
}


/* ---- backward scan over chunks: dV' and the state gradients ----------------------------------- */
/* P = Q K^T (float) is dead once Pb holds it, before F is written, so the two share one space,
 * and -dV' (bf16) takes that space's room past F (P's rows, dead by then): its own room, so that
 * each warp writes it from its own tiles of F right after the products (then_each), while other
 * warps may still read dS_out in bf16 (which fits d = 64, and d = 128 with 32-column tiles, two
 * blocks per multiprocessor).
 * PF: the next chunk's Q, K, dO and W are fetched with cp.async while the current chunk
 * computes (two buffer sets), as in state_scan_kernel; without it the loads of a chunk are
 * waited for at its start, but the block is small enough for a second one per multiprocessor. */
template <class E, int C, int DK, int BV, bool PF = false>
constexpr size_t bwd_scan_smem() {
    return fm_bytes(DK, BV) + max_bytes(fm_bytes(C, C), fm_bytes(C, BV) + tm_bytes<E>(C, BV)) + tm_bytes<E>(DK, BV) +
           (PF ? 2 : 1) * (3 * tm_bytes<E>(C, DK) + tm_bytes<E>(C, BV) + tm_bytes<E>(C, C)) + 128;
}

template <class E, int C, int DK, int BV, bool PF>
__global__ void __launch_bounds__(THREADS, fit_blocks(bwd_scan_smem<E, C, DK, BV, PF>())) bwd_scan_kernel(ArgsT<E> p) {
    EFLA_DYNAMIC_SMEM(smem);
    constexpr int WT = warp_tiles<E>(bwd_scan_smem<E, C, DK, BV, PF>());   /* mm's tiles per warp */
    PHASE_START;
    const int64_t n = blockIdx.x / p.H, h = blockIdx.x % p.H, j0 = (int64_t)blockIdx.y * BV;
    const int64_t dv = p.dv;
    Carver cv(smem);
    Fm dS = cv.fm(DK, BV);
    Fm P{(float *)(smem + cv.off), C + 4}, F{(float *)(smem + cv.off), BV + 4};
    Tm<E> dVn{(E *)(smem + cv.off + fm_bytes(C, BV)), BV + pad_of<E>()};
    cv.off += max_bytes(fm_bytes(C, C), fm_bytes(C, BV) + tm_bytes<E>(C, BV));
    Tm<E> dSb = cv.tm<E>(DK, BV);
    /* buffer set b: Q, K, W (C x DK), dO (C x BV) and tril(Q K^T) (C x C: prep's when
     * p.pq is set, else made here), set 0 moved by b * SET bytes (as in state_scan_kernel:
     * pointer arithmetic, not arrays of tiles) */
    constexpr size_t SET = 3 * tm_bytes<E>(C, DK) + tm_bytes<E>(C, BV) + tm_bytes<E>(C, C);
    char *const set0 = smem + cv.off;
    EFLA_SMEM_FITS(cv.off + (PF ? 2 : 1) * SET, (bwd_scan_smem<E, C, DK, BV, PF>()));
    auto Qt = [&](int b) { return Tm<E>{(E *)(set0 + b * SET), DK + pad_of<E>()}; };
    auto Kt = [&](int b) { return Tm<E>{(E *)(set0 + b * SET + tm_bytes<E>(C, DK)), DK + pad_of<E>()}; };
    auto Wt = [&](int b) { return Tm<E>{(E *)(set0 + b * SET + 2 * tm_bytes<E>(C, DK)), DK + pad_of<E>()}; };
    auto dOt = [&](int b) { return Tm<E>{(E *)(set0 + b * SET + 3 * tm_bytes<E>(C, DK)), BV + pad_of<E>()}; };
    auto Pbt = [&](int b) { return Tm<E>{(E *)(set0 + b * SET + 3 * tm_bytes<E>(C, DK) + tm_bytes<E>(C, BV)), C + pad_of<E>()}; };
    load_state<DK, BV>(dS, p.dsf ? p.dsf + (n * p.H + h) * DK * dv + j0 : nullptr, dv);
    const int64_t first = p.seq[3 * n + 2], len = p.seq[3 * n + 1];
    const int64_t nchunks = (len + C - 1) / C;
    const int64_t rs = p.H;
    /* chunk c's tiles into set c % 2 (PF) or set 0: one commit group (PF) or three in the order
     * the chunk uses them (Q and K, dO, W) */
    auto fetch = [&](int64_t c) {
        const int64_t g = first + c, row = p.seq[3 * n] + c * C * p.H + h;
        const int clen = (int)(len - c * C < C ? len - c * C : C);
        const int b = PF ? (int)(c % 2) : 0;
        load_rows_async<C, DK>(Qt(b), p.q + row * DK, rs * DK, clen);
        load_rows_async<C, DK>(Kt(b), p.k + row * DK, rs * DK, clen);
        if (p.pq) load_rows_async<C, C>(Pbt(b), p.pq + (g * p.H + h) * C * C, C, C);
        if (!PF) cp_async_commit();
        load_rows_async<C, BV>(dOt(b), p.d_o + row * dv + j0, rs * dv, clen);
        if (!PF) cp_async_commit();
        load_rows_async<C, DK>(Wt(b), p.w + (g * p.H + h) * C * DK, DK, C);
        cp_async_commit();
    };
    if (PF && nchunks > 0) fetch(nchunks - 1);
    for (int64_t c = nchunks - 1; c >= 0; c--) {
        const int64_t g = first + c;
        const int b = PF ? (int)(c % 2) : 0;
        const Tm<E> Q = Qt(b), K = Kt(b), W = Wt(b), dO = dOt(b), Pb = Pbt(b);
        __syncthreads(); PHASE(3, 1);   /* dS final from the previous chunk; the other buffer set free */
        to_tile_and_store<DK, BV>(dSb, p.dcs + (g * p.H + h) * DK * dv + j0, dv, dS);   /* and the gradient leaving chunk g to dcs */
        if (!PF) { fetch(c); cp_async_wait<2>(); }
        else if (c > 0) { fetch(c - 1); cp_async_wait_one(); }
        else cp_async_wait_all();
        if (!p.pq) {   /* P = tril(Q K^T) here (to E by the warp that owns the tile), unless prep made it */
            __syncthreads(); PHASE(3, 2);
            mm_then<false, true, WT>(Q, K, P, C, C, DK, false, tril_to(Pb, P));
        }
        if (!PF) cp_async_wait<1>();
        __syncthreads(); PHASE(3, 4);
        /* dV' = scale P^T dO + K dS_out, summed in registers (the scale in float: dO is not
         * rounded again) */
        mm2<true, false, false, false, WT>(Pb, dO, C, K, dSb, DK, F, C, BV, false, 0, p.scale);
        {   /* dV' to dvp and -dV' to dVn, by the warp that owns each tile */
            E *dst = p.dvp + (g * p.H + h) * C * dv + j0;
            then_each<WT>(C, BV, [&](int r, int c) {
                const float4 x = get4(F.p + r * F.ld + c);
                put4(dst + r * dv + c, x);
                put4(dVn.p + r * dVn.ld + c, scale4(x, -1.0f));
            });
        }
        if (!PF) cp_async_wait<0>();
        __syncthreads(); PHASE(3, 6);
        /* dS_in = dS_out + scale Q^T dO - W^T dV' */
        mm2<true, false, true, false, WT>(Q, dO, C, W, dVn, C, dS, DK, BV, true, 0, p.scale);
    }
    __syncthreads(); PHASE(3, 7);
    if (p.ds0) store_state<DK, BV>(p.ds0 + (n * p.H + h) * DK * dv + j0, dv, dS);
    PHASE(3, 0);
}


/* da[o] += sum_t term(o, t) over t in [0, C), for every o in [0, C): eight threads per o, each
 * an eighth of the sum, then a shuffle sum inside the eight (one thread per o walking all C
 * terms kept the other warps waiting at the next barrier) */
template <int C, class F> __device__ void add_sums(float *da, F term) {
    add_sums<C>(da, term, [](int, float) {});
}

/* the output o whose done(o, ...) this thread runs in add_sums, or -1 (so a kernel can prepare
 * what that call will need in the same thread's registers) */
__device__ __forceinline__ int add_sums_output() { return threadIdx.x % 8 == 0 ? (int)threadIdx.x / 8 : -1; }

/* add_sums, then done(o, da[o]) by the one thread that wrote da[o] (no barrier needed for it) */
template <int C, class F, class Done> __device__ void add_sums(float *da, F term, Done done) {
    static_assert(8 * C <= THREADS, "eight threads per output");
    const int o = threadIdx.x / 8, part = threadIdx.x % 8;   /* part 0: add_sums_output() */
    float s = 0;
    if (o < C)
        for (int t = part; t < C; t += 8) s += term(o, t);
    s += __shfl_xor_sync(0xffffffffu, s, 4);
    s += __shfl_xor_sync(0xffffffffu, s, 2);
    s += __shfl_xor_sync(0xffffffffu, s, 1);
    if (o < C && part == 0) {
        da[o] += s;
        done(o, da[o]);
    }
}

/* alpha_slopes_row (delta_rule_alpha_kernels.cuh) out of line, so that the double-precision
 * formulas' registers stay out of the kernel's products */
template <class E>
__device__ __noinline__ AlphaSlopes alpha_slopes(const E *beta, const double *lambda, int order, int ref, int64_t row) {
    return alpha_slopes_row(beta, lambda, row, order, ref);
}

/* ---- backward within each chunk ----------------------------------------------------------------- */
/* T and X come from the backward's prep (p.tx) rather than a second triangular solve here.
 * Shared memory, phase by phase (v1 kept X and G in two more float C x C tiles and dX in a
 * fifth bf16 C x C tile; here G is recomputed where phase 5 needs it, into the bf16 tiles T and
 * dP that are done by then, and dX takes dO's / dV''s space), which brings d = 64, C = 64 to two
 * blocks per multiprocessor. */
template <class E, int C, int DK, int DV, bool PAD>
constexpr size_t bwd_chunk_smem_as() {   /* PAD: the four C x C tiles of E padded, else packed */
    const size_t cc = PAD ? tm_bytes<E>(C, C) : (size_t)C * C * sizeof(E);
    return 2 * tm_bytes<E>(C, DK) + 2 * tm_bytes<E>(C, DV) + max_bytes(tm_bytes<E>(C, DV), cc) + tm_bytes<E>(DK, DV) +
           fm_bytes(C, DK > DV ? DK : DV) + fm_bytes(C, C) + 3 * cc + 3 * C * 4;
}
/* The C x C tiles (T, dP, X, dX) padded wherever that keeps as many blocks on a multiprocessor
 * as packed ones (d = 128; at d = 64 the second block needs them packed): a fragment load of
 * packed 64-element bf16 rows reads 16-byte pieces 128 bytes apart, eight of them in the same
 * banks (ncu, docs/BENCHMARKS.md run 11: 56 % of bwd_chunk's shared-load wavefronts were bank
 * conflicts); G, in their room as floats, then gets padded rows too */
template <class E, int C, int DK, int DV>
constexpr bool bwd_chunk_padded() {
    return bwd_chunk_smem_as<E, C, DK, DV, true>() <= SMEM_PER_BLOCK_MAX &&
           fit_blocks(bwd_chunk_smem_as<E, C, DK, DV, true>()) == fit_blocks(bwd_chunk_smem_as<E, C, DK, DV, false>());
}
template <class E, int C, int DK, int DV>
constexpr size_t bwd_chunk_smem() { return bwd_chunk_smem_as<E, C, DK, DV, bwd_chunk_padded<E, C, DK, DV>()>(); }

template <class E, int C, int DK, int DV>
__global__ void __launch_bounds__(THREADS, fit_blocks(bwd_chunk_smem<E, C, DK, DV>())) bwd_chunk_kernel(ArgsT<E> p) {
    EFLA_DYNAMIC_SMEM(smem);
    constexpr int WT = warp_tiles<E>(bwd_chunk_smem<E, C, DK, DV>());   /* mm's tiles per warp */
    PHASE_START;
    const int64_t g = blockIdx.x, h = blockIdx.y;
    const ChunkRows cr = chunk_rows(p, g, h, C);
    const int64_t rs = p.H;
    const int D = DK > DV ? DK : DV;
    constexpr bool PAD = bwd_chunk_padded<E, C, DK, DV>();
    constexpr int CCLD = PAD ? C + pad_of<E>() : C;   /* row length of the C x C tiles of E */
    Carver cv(smem);
    /* C-row buffers of E, reused phase by phase (see the comments at each phase); the C x C
     * tiles go unpadded where shared memory is short (bwd_chunk_padded) */
    Tm<E> K = cv.tm<E>(C, DK), Qb = cv.tm<E>(C, DK), bufD = cv.tm<E>(C, DV), Vp = cv.tm<E>(C, DV);
    char *const o_space = smem + cv.off;            /* dO, then dV', then dX */
    cv.off += max_bytes(tm_bytes<E>(C, DV), (size_t)C * CCLD * sizeof(E));
    Tm<E> bufO{(E *)o_space, DV + pad_of<E>()}, dXb{(E *)o_space, CCLD};
    Tm<E> Mat = cv.tm<E>(DK, DV);                         /* S_in, later dS_out */
    Fm F = cv.fm(C, D);                             /* the staging of C x d products */
    Fm CC = cv.fm(C, C);                            /* float C x C scratch */
    Tm<E> Tb = PAD ? cv.tm<E>(C, C) : cv.packed<E>(C, C), dPb = PAD ? cv.tm<E>(C, C) : cv.packed<E>(C, C);
    Fm Gf{(float *)Tb.p, PAD ? C + 4 : C};          /* G in phase 5, over Tb and dPb (adjacent; room for padded float rows where they are padded) */
    Tm<E> Xb = PAD ? cv.tm<E>(C, C) : cv.packed<E>(C, C);
    float *a = (float *)(smem + cv.off);
    float *da = a + C;
    float *chain = da + C;   /* p.dbeta set: each row's factor s of dk += s k */
    EFLA_SMEM_FITS(cv.off + 3 * C * 4, (bwd_chunk_smem<E, C, DK, DV>()));

    /* phase 1: every load up to phase 3 in flight at once, in two commit groups: what phase 2
     * needs (T, K, V and the entering state), then X, Q and dO, which arrive while phase 2
     * computes; meanwhile, a */
    const E *tx = p.tx + (g * p.H + h) * 2 * C * C;
    load_rows_async<C, C>(Tb, tx, C, C);
    load_rows_async<C, DK>(K, p.k + cr.first * DK, rs * DK, cr.len);
    load_rows_async<C, DV>(bufD, p.v + cr.first * DV, rs * DV, cr.len);
    load_rows_async<DK, DV>(Mat, p.states + (g * p.H + h) * DK * DV, DV, DK);
    cp_async_commit();
    load_rows_async<C, C>(Xb, tx + C * C, C, C);
    load_rows_async<C, DK>(Qb, p.q + cr.first * DK, rs * DK, cr.len);
    load_rows_async<C, DV>(bufO, p.d_o + cr.first * DV, rs * DV, cr.len);
    cp_async_commit();
    for (int i = threadIdx.x; i < C; i += THREADS) {
        a[i] = i < cr.len ? to_f(p.alpha[cr.first + i * rs]) : 0.0f;
        da[i] = 0.0f;
    }
    /* the chain's derivatives of the row whose da this thread finishes (add_sums_output), while
     * the loads are in flight: at the end they were a double-precision stretch on the path */
    const int my_row = add_sums_output();
    AlphaSlopes slope{0.0, 0.0};
    if (p.dbeta && my_row >= 0 && my_row < cr.len) slope = alpha_slopes(p.beta, p.lambda, p.order, p.ref, cr.first + my_row * rs);
    /* phase 2: D = V - K S_in (bufD), V' = T D (Vp) */
    cp_async_wait_one();                            /* this thread's part of the first group */
    __syncthreads(); PHASE(4, 3);    /* everyone's */
    /* each elementwise pass below right after its product, by the warp that owns the tile
     * (mm_then): none of them writes what another warp reads during the product */
    mm_then<false, false, WT>(K, Mat, F, C, DV, DK, false, [&](int r, int c) {
        put4(bufD.p + r * bufD.ld + c, sub4(get4(bufD.p + r * bufD.ld + c), get4(F.p + r * F.ld + c)));
    });
    __syncthreads(); PHASE(4, 5);
    mm_then<false, false, WT>(Tb, bufD, F, C, DV, C, false,
                          [&](int r, int c) { put4(Vp.p + r * Vp.ld + c, get4(F.p + r * F.ld + c)); });
    cp_async_wait_all();                            /* the second group: X, Q, dO */
    /* phase 3: dP = scale tril(dO V'^T), dQ = scale dO S^T + dP K (the scale in float, before
     * dP's one rounding: dO itself is not rounded again) */
    __syncthreads(); PHASE(4, 7);
    mm_then<false, true, WT>(bufO, Vp, CC, C, C, DV, false, tril_to(dPb, CC, p.scale));
    __syncthreads(); PHASE(4, 9);
    mm2<false, true, false, false, WT>(bufO, Mat, DV, dPb, K, C, F, C, DK, false, 0, p.scale);
    __syncthreads(); PHASE(4, 10);
    /* phase 4: dV' (bufO: dO is done), fetched while dq is stored; dD = T^T dV' = dv,
     * dT = dV' D^T, da from T */
    load_rows_async<C, DV>(bufO, p.dvp + (g * p.H + h) * C * DV, DV, C);
    cp_async_commit();
    store_rows<C, DK>(p.dq + cr.first * DK, rs * DK, F, cr.len);
    cp_async_wait_all();
    __syncthreads(); PHASE(4, 12);
    mm<true, false, WT>(Tb, bufO, F, C, DV, C, false);
    mm<false, true, WT>(bufO, bufD, CC, C, C, DV, false, blocks_of<WT>(C, DV));   /* CC = dT, on the warps dv's product leaves */
    __syncthreads(); PHASE(4, 13);   /* dV' is done: dX may take its space */
    store_rows<C, DV>(p.dv_out + cr.first * DV, rs * DV, F, cr.len);
    to_tile<C, DV>(bufD, F, -1.0f);                    /* bufD = -dD (D is done) */
    add_sums<C>(da, [&](int j, int i) {               /* da_j += sum_{i >= j} X_ij dT_ij */
        return i >= j ? to_f(Xb.p[i * Xb.ld + j]) * CC.p[i * CC.ld + j] : 0.0f;
    });
    each<C, C / 4>([&](int r, int v) {              /* dX = dT diag(a), four columns at a time */
        const int c = 4 * v;
        const float4 x = get4(CC.p + r * CC.ld + c);
        put4(dXb.p + r * dXb.ld + c, make_float4(x.x * a[c], x.y * a[c + 1], x.z * a[c + 2], x.w * a[c + 3]));
    });
    __syncthreads(); PHASE(4, 14);
    /* phase 5: dK = dP^T Q - dD S^T + V' dS_out^T + (dG + dG^T) K */
    mm2<true, false, false, true, WT>(dPb, Qb, C, bufD, Mat, DV, F, C, DK, false);
    __syncthreads(); PHASE(4, 15);   /* T and dP are done: G may take their space; S is done: dS_out takes Mat */
    load_rows_async<DK, DV>(Mat, p.dcs + (g * p.H + h) * DK * DV, DV, DK);   /* arrives during the two products */
    cp_async_commit();
    mm<false, true, WT>(dXb, Xb, CC, C, C, C, false);      /* CC = Y = dX X^T */
    mm<false, true, WT>(K, K, Gf, C, C, DK, false, blocks_of<WT>(C, C));   /* Gf = G again (as phase 1 had it) */
    __syncthreads(); PHASE(4, 16);
    each<C, C / 4>([&](int r, int v) { put4(dXb.p + r * dXb.ld + 4 * v, get4(CC.p + r * CC.ld + 4 * v)); });   /* Y, in E */
    cp_async_wait_all();
    __syncthreads(); PHASE(4, 18);
    mm<true, false, WT>(Xb, dXb, CC, C, C, C, false);      /* CC = X^T Y = -dL */
    mm<false, true, WT>(Vp, Mat, F, C, DK, DV, true, blocks_of<WT>(C, C));   /* + V' dS_out^T, on the warps the first leaves */
    __syncthreads(); PHASE(4, 19);
    add_sums<C>(da, [&](int i, int j) {               /* da_i += sum_{j < i} dL_ij G_ij */
        return j < i ? -CC.p[i * CC.ld + j] * Gf.p[i * Gf.ld + j] : 0.0f;
    }, [&](int i, float dai) {                        /* da_i is final: the chain through alpha (i = my_row) */
        if (p.dbeta) chain[i] = i < cr.len ? (float)chain_with(slope, dai, p.dbeta + cr.first + i * rs) : 0.0f;
    });
    each<C, C / 4>([&](int r, int v) {                /* dGs = dG + dG^T into dXb, four columns at a time */
        float x[4];
        for (int i = 0; i < 4; i++) {
            const int c = 4 * v + i;
            x[i] = r > c ? -a[r] * CC.p[r * CC.ld + c] : c > r ? -a[c] * CC.p[c * CC.ld + r] : 0.0f;
        }
        put4(dXb.p + r * dXb.ld + 4 * v, make_float4(x[0], x[1], x[2], x[3]));
    });
    __syncthreads(); PHASE(4, 20);
    mm_then<false, false, WT>(dXb, K, F, C, DK, C, true, [&](int r, int c) {   /* dk stored by the tile's warp */
        float4 x = get4(F.p + r * F.ld + c);
        if (p.dbeta) {   /* + 2 dlambda k */
            const float4 k4 = get4(K.p + r * K.ld + c);
            const float s = chain[r];
            x = make_float4(x.x + s * k4.x, x.y + s * k4.y, x.z + s * k4.z, x.w + s * k4.w);
        }
        if (r < cr.len) put4(p.dk_out + (cr.first + r * rs) * DK + c, x);
    });
    PHASE(4, 21);
    if (!p.dbeta)
        for (int i = threadIdx.x; i < cr.len; i += THREADS) p.dalpha[cr.first + i * rs] = from_f<E>(da[i]);
    PHASE(4, 0);
}

} // namespace

#include "delta_rule_chunk_scan_mma.cuh"   /* the forward's state scan with the state in registers (bf16) */
#include "delta_rule_chunk_scan_mma_f32.cuh"   /* the same for float32 inputs (3xTF32) */
#include "delta_rule_chunk_bwd_scan_mma_f32.cuh"   /* the backward scan for float32 inputs (3xTF32) */
#include "delta_rule_chunk_out_mma_f32.cuh"   /* the outputs for float32 inputs (3xTF32; up to dk = 64 by default) */
#include "delta_rule_chunk_bwd_mma.cuh"    /* bwd_chunk in the register style (bf16) */
#include "delta_rule_chunk_bwd_mma_f32.cuh"   /* the same for float32 inputs (3xTF32; two warps a strip) */
#include "delta_rule_chunk_prep_mma.cuh"   /* prep's products in the register style (bf16) */
#endif

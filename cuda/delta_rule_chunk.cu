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
 *   state_scan_kernel one block per (sequence, head, 32- or 64-column dv tile): walks the
 *                     chunks in order with the state tile in shared memory (the next chunk's
 *                     tiles prefetched with cp.async where two blocks per SM still fit);
 *                     writes V' = U - W S, the chunk states, S_final
 *   out_kernel        one block per (chunk, head, dv tile): O = scale (Q S + tril(Q K^T) V')
 *                     from the state entering the chunk, all chunks in parallel
 *   bwd_scan_kernel   one block per (sequence, head, dv tile): walks the chunks backwards
 *                     with dS; writes dV' and the state gradient leaving every chunk, dS0
 *   bwd_chunk_kernel  one block per (chunk, head): dq, dk, dv and dalpha of the chunk from
 *                     its entering state, the gradient of its leaving state and dV'
 * The backward of the last line (derivation in docs/MATH.md §4):
 *   D = V - K S,  dP = tril(dO V'^T),  dQ = scale (dO S^T + dP K)
 *   dV' = scale tril(QK^T)^T dO + K dS_out,   dS_in = dS_out + scale Q^T dO - W^T dV'
 *   dD = T^T dV' (= dv),  dT = dV' D^T,  da_j += sum_i X_ij dT_ij,  dX = dT diag(a)
 *   dL = -X^T dX X^T (strictly lower),  dG_ij = a_i dL_ij,  da_i += sum_j dL_ij G_ij
 *   dK = scale dP^T Q + V' dS_out^T - dD S^T + (dG + dG^T) K
 * The chain from alpha into beta and k runs afterwards (delta_rule_alpha.cu).
 *
 * Coverage: bfloat16, C in {16, 32, 64}, dk and dv multiples of 16 up to 128 whose shared
 * memory fits; efla_cuda_delta_rule_chunk_* return 1 for anything else and the caller
 * falls back to the scan kernels of delta_rule.cu. Rows past a sequence's end are zero
 * (alpha = 0 there), which makes them no-ops in every product. */
#include "delta_rule_chunk_tiles.cuh"
#include <string.h>

namespace {

struct Args {
    int64_t H, dk, dv, nseq, nch;
    const int64_t *seq;   /* per sequence: (b*T+start)*H, length, first chunk */
    float scale;
    const bf16 *q, *k, *v, *alpha, *d_o;
    const float *s0, *dsf, *states;
    bf16 *o, *w, *u, *vp, *dvp, *dq, *dk_out, *dv_out, *dalpha;
    float *sf, *cs, *dcs, *ds0;
};

/* token row (in units of H-strided rows) of token r of chunk g for head h */
struct ChunkRows {
    int64_t first;   /* row index of token 0 of the chunk for head h: ((b*T + t0)*H + h) */
    int len;
};

__device__ ChunkRows chunk_rows(const Args &p, int64_t g, int64_t h, int C) {
    int64_t lo = 0, hi = p.nseq - 1;
    while (lo < hi) {
        int64_t mid = (lo + hi + 1) / 2;
        if (p.seq[3 * mid + 2] <= g) lo = mid; else hi = mid - 1;
    }
    const int64_t c = g - p.seq[3 * lo + 2], start = c * C, rem = p.seq[3 * lo + 1] - start;
    ChunkRows r;
    r.first = p.seq[3 * lo] + start * p.H + h;
    r.len = (int)(rem < C ? rem : C);
    return r;
}

/* ---- prep: W = T K and U = T V of every chunk -------------------------------------------------- */
template <int C, int DK, int DV>
constexpr size_t prep_smem() {
    return 2 * bm_bytes(C, DK > DV ? DK : DV) + bm_bytes(C, C) + 2 * fm_bytes(C, C) + fm_bytes(C, DK > DV ? DK : DV) +
           C * 4 + 128;
}

template <int C, int DK, int DV>
__global__ void __launch_bounds__(THREADS, fit_blocks(prep_smem<C, DK, DV>())) prep_kernel(Args p) {
    extern __shared__ __align__(128) char smem[];
    const int64_t g = blockIdx.x, h = blockIdx.y;
    const ChunkRows cr = chunk_rows(p, g, h, C);
    Carver cv(smem);
    Bm K = cv.bm(C, DK), V = cv.bm(C, DV), Tb = cv.bm(C, C);
    Fm G = cv.fm(C, C), X = cv.fm(C, C), F = cv.fm(C, DK > DV ? DK : DV);
    float *a = (float *)(smem + cv.off);
    const int64_t rs = p.H;   /* rows between consecutive tokens */
    load_rows<C, DK>(K, p.k + cr.first * DK, rs * DK, cr.len);
    load_rows<C, DV>(V, p.v + cr.first * DV, rs * DV, cr.len);
    for (int i = threadIdx.x; i < C; i += THREADS)
        a[i] = i < cr.len ? __bfloat162float(p.alpha[cr.first + i * rs]) : 0.0f;
    __syncthreads();
    mm<false, true>(K, K, G, C, C, DK, false);
    __syncthreads();
    unit_lower_inverse<C>(X, G, a, F.p);   /* F is free until W */
    each<C, C>([&](int r, int c) { Tb.p[r * Tb.ld + c] = __float2bfloat16(X.p[r * X.ld + c] * a[c]); });
    __syncthreads();
    bf16 *w = p.w + (g * p.H + h) * C * DK, *u = p.u + (g * p.H + h) * C * DV;
    mm<false, false>(Tb, K, F, C, DK, C, false);
    __syncthreads();
    store_rows<C, DK>(w, DK, F, C);
    __syncthreads();
    mm<false, false>(Tb, V, F, C, DV, C, false);
    __syncthreads();
    store_rows<C, DV>(u, DV, F, C);
}


/* ---- forward, step 1: the state recurrence alone ---------------------------------------------- */
/* One block per (sequence, head, dv tile of BV columns) walks the chunks in order with the state
 * tile in shared memory: V' = U - W S (bf16 to vp when vp is set), the entering state to cs
 * (when set), S += K^T V'. The output product is not here (out_kernel runs it in parallel over
 * chunks), so the critical path per chunk is two products (BV: 32 or 64, scan_plan picks).
 * PF: the next chunk's W, K and U are fetched with cp.async while the current chunk computes. */
__device__ __forceinline__ void cp_async16(void *dst, const void *src, bool valid) {
    const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    const int n = valid ? 16 : 0;   /* 0: zero-fill the 16 bytes, read nothing */
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src), "r"(n) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_one() { asm volatile("cp.async.wait_group 1;\n" ::: "memory"); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

/* the asynchronous counterpart of load_rows (no scaling): rows >= len are zero-filled */
template <int R, int N>
__device__ void load_rows_async(Bm dst, const bf16 *src, int64_t stride, int len) {
    each<R, N / 8>([&](int r, int v) {
        const bool ok = r < len;
        cp_async16(dst.p + r * dst.ld + v * 8, ok ? src + r * stride + v * 8 : src, ok);
    });
}

template <int C, int DK, int BV, bool PF>
constexpr size_t state_scan_smem() {
    return fm_bytes(DK, BV) + fm_bytes(C, BV) + bm_bytes(DK, BV) + (PF ? 2 : 1) * (2 * bm_bytes(C, DK) + bm_bytes(C, BV)) + 128;
}

template <int C, int DK, int BV, bool PF>
__global__ void __launch_bounds__(THREADS, fit_blocks(state_scan_smem<C, DK, BV, PF>())) state_scan_kernel(Args p) {
    extern __shared__ __align__(128) char smem[];
    const int64_t n = blockIdx.x / p.H, h = blockIdx.x % p.H, j0 = (int64_t)blockIdx.y * BV;
    const int64_t dv = p.dv;
    Carver cv(smem);
    Fm S = cv.fm(DK, BV), F = cv.fm(C, BV);
    Bm Sb = cv.bm(DK, BV);
    constexpr int NB = PF ? 2 : 1;   /* buffer sets: two when prefetching */
    /* set b is set 0 moved by b * SET bytes (pointer arithmetic rather than arrays of tiles,
     * which the compiler would keep in local memory) */
    constexpr size_t SET = 2 * bm_bytes(C, DK) + bm_bytes(C, BV);
    char *const set0 = smem + cv.off;
    cv.off += NB * SET;
    auto Wt = [&](int b) { return Bm{(bf16 *)(set0 + b * SET), DK + 8}; };
    auto Kt = [&](int b) { return Bm{(bf16 *)(set0 + b * SET + bm_bytes(C, DK)), DK + 8}; };
    auto Ut = [&](int b) { return Bm{(bf16 *)(set0 + b * SET + 2 * bm_bytes(C, DK)), BV + 8}; };
    load_state<DK, BV>(S, p.s0 ? p.s0 + (n * p.H + h) * DK * dv + j0 : nullptr, dv);   /* the entering state */
    const int64_t first = p.seq[3 * n + 2], len = p.seq[3 * n + 1];
    const int64_t nchunks = (len + C - 1) / C;
    const int64_t rs = p.H;
    /* chunk c's tiles into buffer set c % NB: asynchronously (one commit group per chunk) when
     * prefetching, else synchronously */
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
            load_rows<C, DK>(Wt(b), p.w + (g * p.H + h) * C * DK, DK, C);
            load_rows<C, DK>(Kt(b), p.k + row * DK, rs * DK, clen);
            load_rows<C, BV>(Ut(b), p.u + (g * p.H + h) * C * dv + j0, dv, C);
        }
    };
    if (PF && nchunks > 0) fetch(0);
    for (int64_t c = 0; c < nchunks; c++) {
        const int64_t g = first + c;
        const int b = (int)(c % NB);
        __syncthreads();   /* S final from the previous chunk; F, Sb and the other buffer set free */
        if (!PF) fetch(c);
        else if (c + 1 < nchunks) { fetch(c + 1); cp_async_wait_one(); }
        else cp_async_wait_all();
        if (p.cs) store_state<DK, BV>(p.cs + (g * p.H + h) * DK * dv + j0, dv, S);
        to_bf16<DK, BV>(Sb, S);
        __syncthreads();   /* every thread's part of chunk c's tiles and Sb are in */
        /* V' = U - W S */
        mm<false, false>(Wt(b), Sb, F, C, BV, DK, false);
        __syncthreads();
        {
            bf16 *dst = p.vp ? p.vp + (g * p.H + h) * C * dv + j0 : nullptr;
            each<C, BV / 4>([&](int r, int v) {
                bf16 *u = Ut(b).p + r * Ut(b).ld + v * 4;
                const float4 f = *(float4 *)(F.p + r * F.ld + v * 4);
                const float4 x = make_float4(__bfloat162float(u[0]) - f.x, __bfloat162float(u[1]) - f.y,
                                             __bfloat162float(u[2]) - f.z, __bfloat162float(u[3]) - f.w);
                put4(u, x);
                if (dst) put4(dst + r * dv + v * 4, x);
            });
        }
        __syncthreads();
        /* S += K^T V' */
        mm<true, false>(Kt(b), Ut(b), S, DK, BV, C, true);
    }
    __syncthreads();
    if (p.sf) store_state<DK, BV>(p.sf + (n * p.H + h) * DK * dv + j0, dv, S);
}


/* ---- forward, step 2: the outputs, in parallel over chunks ------------------------------------ */
/* One block per (chunk, head, dv tile of BV columns): O = scale (Q S + tril(Q K^T) V') with S the
 * state entering the chunk (cs) and V' from the scan (vp). */
template <int C, int DK, int BV>
constexpr size_t out_smem() {
    return fm_bytes(C, C) + fm_bytes(C, BV) + 2 * bm_bytes(C, DK) + bm_bytes(DK, BV) + bm_bytes(C, BV) + bm_bytes(C, C) + 128;
}

template <int C, int DK, int BV>
__global__ void __launch_bounds__(THREADS, fit_blocks(out_smem<C, DK, BV>())) out_kernel(Args p) {
    extern __shared__ __align__(128) char smem[];
    const int64_t g = blockIdx.x, h = blockIdx.y, j0 = (int64_t)blockIdx.z * BV;
    const int64_t dv = p.dv, rs = p.H;
    const ChunkRows cr = chunk_rows(p, g, h, C);
    Carver cv(smem);
    Fm P = cv.fm(C, C), F = cv.fm(C, BV);
    Bm Q = cv.bm(C, DK), K = cv.bm(C, DK), Sb = cv.bm(DK, BV), Vp = cv.bm(C, BV), Pb = cv.bm(C, C);
    load_rows<C, DK>(Q, p.q + cr.first * DK, rs * DK, cr.len);
    load_rows<C, DK>(K, p.k + cr.first * DK, rs * DK, cr.len);
    load_state_bf16<DK, BV>(Sb, p.cs + (g * p.H + h) * DK * dv + j0, dv);
    load_rows<C, BV>(Vp, p.vp + (g * p.H + h) * C * dv + j0, dv, C);
    __syncthreads();
    mm<false, true>(Q, K, P, C, C, DK, false);
    mm<false, false>(Q, Sb, F, C, BV, DK, false);
    __syncthreads();
    each<C, C>([&](int r, int cc) { Pb.p[r * Pb.ld + cc] = __float2bfloat16(cc <= r ? P.p[r * P.ld + cc] : 0.0f); });
    __syncthreads();
    mm<false, false>(Pb, Vp, F, C, BV, C, true);
    __syncthreads();
    store_rows<C, BV>(p.o + cr.first * dv + j0, rs * dv, F, cr.len, p.scale);
}


/* ---- backward scan over chunks: dV' and the state gradients ----------------------------------- */
/* P = Q K^T (float) is dead once Pb holds it, before F is written, and dS_out in bf16 once
 * K dS_out is in F, before -dV' is written: each pair shares one space (which brings d = 64,
 * and d = 128 with 32-column tiles, to two blocks per multiprocessor) */
template <int C, int DK, int BV>
constexpr size_t bwd_scan_smem() {
    return fm_bytes(DK, BV) + max_bytes(fm_bytes(C, C), fm_bytes(C, BV)) + max_bytes(bm_bytes(DK, BV), bm_bytes(C, BV)) +
           3 * bm_bytes(C, DK) + bm_bytes(C, BV) + bm_bytes(C, C) + 128;
}

template <int C, int DK, int BV>
__global__ void __launch_bounds__(THREADS, fit_blocks(bwd_scan_smem<C, DK, BV>())) bwd_scan_kernel(Args p) {
    extern __shared__ __align__(128) char smem[];
    const int64_t n = blockIdx.x / p.H, h = blockIdx.x % p.H, j0 = (int64_t)blockIdx.y * BV;
    const int64_t dv = p.dv;
    Carver cv(smem);
    Fm dS = cv.fm(DK, BV);
    Fm P{(float *)(smem + cv.off), C + 4}, F{(float *)(smem + cv.off), BV + 4};
    cv.off += max_bytes(fm_bytes(C, C), fm_bytes(C, BV));
    Bm dSb{(bf16 *)(smem + cv.off), BV + 8}, dVn{(bf16 *)(smem + cv.off), BV + 8};
    cv.off += max_bytes(bm_bytes(DK, BV), bm_bytes(C, BV));
    Bm Q = cv.bm(C, DK), K = cv.bm(C, DK), W = cv.bm(C, DK), dO = cv.bm(C, BV), Pb = cv.bm(C, C);
    load_state<DK, BV>(dS, p.dsf ? p.dsf + (n * p.H + h) * DK * dv + j0 : nullptr, dv);
    const int64_t first = p.seq[3 * n + 2], len = p.seq[3 * n + 1];
    const int64_t nchunks = (len + C - 1) / C;
    const int64_t rs = p.H;
    for (int64_t c = nchunks - 1; c >= 0; c--) {
        const int64_t g = first + c;
        const int64_t row = p.seq[3 * n] + c * C * p.H + h;
        const int clen = (int)(len - c * C < C ? len - c * C : C);
        __syncthreads();
        store_state<DK, BV>(p.dcs + (g * p.H + h) * DK * dv + j0, dv, dS);   /* the gradient leaving chunk g */
        to_bf16<DK, BV>(dSb, dS);
        load_rows<C, DK>(Q, p.q + row * DK, rs * DK, clen);
        load_rows<C, DK>(K, p.k + row * DK, rs * DK, clen);
        load_rows<C, DK>(W, p.w + (g * p.H + h) * C * DK, DK, C);
        load_rows<C, BV>(dO, p.d_o + row * dv + j0, rs * dv, clen, p.scale);
        __syncthreads();
        mm<false, true>(Q, K, P, C, C, DK, false);
        __syncthreads();
        each<C, C>([&](int r, int cc) { Pb.p[r * Pb.ld + cc] = __float2bfloat16(cc <= r ? P.p[r * P.ld + cc] : 0.0f); });
        __syncthreads();
        /* dV' = P^T (scale dO) + K dS_out (the same warp owns a tile in both products) */
        mm<true, false>(Pb, dO, F, C, BV, C, false);
        mm<false, false>(K, dSb, F, C, BV, DK, true);
        __syncthreads();
        {
            bf16 *dst = p.dvp + (g * p.H + h) * C * dv + j0;
            each<C, BV / 4>([&](int r, int v) {
                const float4 x = *(float4 *)(F.p + r * F.ld + v * 4);
                put4(dst + r * dv + v * 4, x);
                put4(dVn.p + r * dVn.ld + v * 4, scale4(x, -1.0f));
            });
        }
        __syncthreads();
        /* dS_in = dS_out + Q^T (scale dO) - W^T dV' */
        mm<true, false>(Q, dO, dS, DK, BV, C, true);
        mm<true, false>(W, dVn, dS, DK, BV, C, true);
    }
    __syncthreads();
    if (p.ds0) store_state<DK, BV>(p.ds0 + (n * p.H + h) * DK * dv + j0, dv, dS);
}


/* ---- backward within each chunk ----------------------------------------------------------------- */
/* Shared memory, phase by phase (v1 kept X and G in two more float C x C tiles and dX in a
 * fifth bf16 C x C tile; here X lives in F's space until T and X are in bf16, G is
 * recomputed where phase 5 needs it, into the bf16 tiles T and dP that are done by then, and
 * dX takes dO's / dV''s space), which brings d = 64, C = 64 to two blocks per multiprocessor. */
template <int C, int DK, int DV>
constexpr size_t bwd_chunk_smem() {
    return 2 * bm_bytes(C, DK) + 2 * bm_bytes(C, DV) + max_bytes(bm_bytes(C, DV), (size_t)C * C * 2) + bm_bytes(DK, DV) +
           max_bytes(fm_bytes(C, DK > DV ? DK : DV), fm_bytes(C, C)) + fm_bytes(C, C) + 3 * (size_t)C * C * 2 + 2 * C * 4;
}

template <int C, int DK, int DV>
__global__ void __launch_bounds__(THREADS, fit_blocks(bwd_chunk_smem<C, DK, DV>())) bwd_chunk_kernel(Args p) {
    extern __shared__ __align__(128) char smem[];
    const int64_t g = blockIdx.x, h = blockIdx.y;
    const ChunkRows cr = chunk_rows(p, g, h, C);
    const int64_t rs = p.H;
    const int D = DK > DV ? DK : DV;
    Carver cv(smem);
    /* C-row bf16 buffers, reused phase by phase (see the comments at each phase); the C x C
     * bf16 tiles go unpadded to save shared memory */
    Bm K = cv.bm(C, DK), Qb = cv.bm(C, DK), bufD = cv.bm(C, DV), Vp = cv.bm(C, DV);
    char *const o_space = smem + cv.off;            /* dO, then dV', then dX (and the solve's scratch) */
    cv.off += max_bytes(bm_bytes(C, DV), (size_t)C * C * 2);
    Bm bufO{(bf16 *)o_space, DV + 8}, dXb{(bf16 *)o_space, C};
    Bm Mat = cv.bm(DK, DV);                         /* S_in, later dS_out */
    char *const f_space = smem + cv.off;            /* X (phase 1), then the staging of C x d products */
    cv.off += max_bytes(fm_bytes(C, D), fm_bytes(C, C));
    Fm F{(float *)f_space, D + 4}, Xf{(float *)f_space, C + 4};
    Fm CC = cv.fm(C, C);                            /* float C x C scratch */
    Bm Tb{(bf16 *)(smem + cv.off), C}; cv.off += (size_t)C * C * 2;
    Bm dPb{(bf16 *)(smem + cv.off), C}; cv.off += (size_t)C * C * 2;
    Fm Gf{(float *)Tb.p, C};                        /* G in phase 5, over Tb and dPb (adjacent) */
    Bm Xb{(bf16 *)(smem + cv.off), C}; cv.off += (size_t)C * C * 2;
    float *a = (float *)(smem + cv.off);
    float *da = a + C;

    /* phase 1: G, X, T; V (phase 2) and Q (phase 5) arrive meanwhile */
    load_rows_async<C, DV>(bufD, p.v + cr.first * DV, rs * DV, cr.len);
    load_rows_async<C, DK>(Qb, p.q + cr.first * DK, rs * DK, cr.len);
    cp_async_commit();
    load_rows<C, DK>(K, p.k + cr.first * DK, rs * DK, cr.len);
    for (int i = threadIdx.x; i < C; i += THREADS) {
        a[i] = i < cr.len ? __bfloat162float(p.alpha[cr.first + i * rs]) : 0.0f;
        da[i] = 0.0f;
    }
    __syncthreads();
    mm<false, true>(K, K, CC, C, C, DK, false);     /* CC = G */
    __syncthreads();
    unit_lower_inverse<C>(Xf, CC, a, (float *)o_space);   /* Xf = X; dO's space is free until phase 3 */
    each<C, C>([&](int r, int c) {
        const float x = Xf.p[r * Xf.ld + c];
        Tb.p[r * C + c] = __float2bfloat16(x * a[c]);
        Xb.p[r * C + c] = __float2bfloat16(x);
    });
    /* phase 2: D = V - K S_in (bufD), V' = T D (Vp) */
    load_state_bf16<DK, DV>(Mat, p.states + (g * p.H + h) * DK * DV, DV);
    cp_async_wait_all();                            /* this thread's part of V and Q */
    __syncthreads();                                /* everyone's; also: Xf is read, F may be written */
    mm<false, false>(K, Mat, F, C, DV, DK, false);
    __syncthreads();
    each<C, DV>([&](int r, int c) {
        bufD.p[r * bufD.ld + c] = __float2bfloat16(__bfloat162float(bufD.p[r * bufD.ld + c]) - F.p[r * F.ld + c]);
    });
    __syncthreads();
    mm<false, false>(Tb, bufD, F, C, DV, C, false);
    __syncthreads();
    to_bf16<C, DV>(Vp, F);
    /* phase 3: dP = tril(dO V'^T) with dO scaled (bufO), dQ = dO S^T + dP K */
    load_rows<C, DV>(bufO, p.d_o + cr.first * DV, rs * DV, cr.len, p.scale);
    __syncthreads();
    mm<false, true>(bufO, Vp, CC, C, C, DV, false);
    __syncthreads();
    each<C, C>([&](int r, int c) { dPb.p[r * C + c] = __float2bfloat16(c <= r ? CC.p[r * CC.ld + c] : 0.0f); });
    __syncthreads();
    mm<false, true>(bufO, Mat, F, C, DK, DV, false);
    mm<false, false>(dPb, K, F, C, DK, C, true);     /* same tiles, same warp: no barrier needed */
    __syncthreads();
    store_rows<C, DK>(p.dq + cr.first * DK, rs * DK, F, cr.len);
    __syncthreads();
    /* phase 4: dV' (bufO, dO is done), dD = T^T dV' = dv, dT = dV' D^T, da from T */
    load_rows<C, DV>(bufO, p.dvp + (g * p.H + h) * C * DV, DV, C);
    __syncthreads();
    mm<true, false>(Tb, bufO, F, C, DV, C, false);
    mm<false, true>(bufO, bufD, CC, C, C, DV, false);   /* CC = dT */
    __syncthreads();                                   /* dV' is done: dX may take its space */
    store_rows<C, DV>(p.dv_out + cr.first * DV, rs * DV, F, cr.len);
    to_bf16<C, DV>(bufD, F, -1.0f);                    /* bufD = -dD (D is done) */
    for (int j = threadIdx.x; j < C; j += THREADS) {   /* da_j += sum_i X_ij dT_ij */
        float s = 0;
        for (int i = j; i < C; i++) s += __bfloat162float(Xb.p[i * C + j]) * CC.p[i * CC.ld + j];
        da[j] += s;
    }
    each<C, C>([&](int r, int c) { dXb.p[r * C + c] = __float2bfloat16(CC.p[r * CC.ld + c] * a[c]); });
    __syncthreads();
    /* phase 5: dK = dP^T Q - dD S^T + V' dS_out^T + (dG + dG^T) K */
    mm<true, false>(dPb, Qb, F, C, DK, C, false);
    mm<false, true>(bufD, Mat, F, C, DK, DV, true);
    __syncthreads();                                   /* T and dP are done: G may take their space */
    load_state_bf16<DK, DV>(Mat, p.dcs + (g * p.H + h) * DK * DV, DV);   /* Mat = dS_out */
    __syncthreads();
    mm<false, true>(Vp, Mat, F, C, DK, DV, true);
    mm<false, true>(dXb, Xb, CC, C, C, C, false);      /* CC = Y = dX X^T */
    mm<false, true>(K, K, Gf, C, C, DK, false);        /* Gf = G again (as phase 1 had it) */
    __syncthreads();
    each<C, C>([&](int r, int c) { dXb.p[r * C + c] = __float2bfloat16(CC.p[r * CC.ld + c]); });   /* Y, bf16 */
    __syncthreads();
    mm<true, false>(Xb, dXb, CC, C, C, C, false);      /* CC = X^T Y = -dL */
    __syncthreads();
    for (int i = threadIdx.x; i < C; i += THREADS) {   /* da_i += sum_{j<i} dL_ij G_ij */
        float s = 0;
        for (int j = 0; j < i; j++) s -= CC.p[i * CC.ld + j] * Gf.p[i * Gf.ld + j];
        da[i] += s;
    }
    each<C, C>([&](int r, int c) {                    /* dGs = dG + dG^T into dXb */
        float x = 0;
        if (r > c) x = -a[r] * CC.p[r * CC.ld + c];
        else if (c > r) x = -a[c] * CC.p[c * CC.ld + r];
        dXb.p[r * C + c] = __float2bfloat16(x);
    });
    __syncthreads();
    mm<false, false>(dXb, K, F, C, DK, C, true);
    __syncthreads();
    store_rows<C, DK>(p.dk_out + cr.first * DK, rs * DK, F, cr.len);
    for (int i = threadIdx.x; i < cr.len; i += THREADS) p.dalpha[cr.first + i * rs] = __float2bfloat16(da[i]);
}

/* ---- launching ------------------------------------------------------------------------------------ */
template <typename K> int set_smem(K kernel, size_t bytes, bool *fits) {
    int dev = 0, maxs = 0;
    CU_CHECK(cudaGetDevice(&dev));
    CU_CHECK(cudaDeviceGetAttribute(&maxs, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    *fits = bytes <= (size_t)maxs;
    if (*fits && bytes > 48 * 1024) CU_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
    /* the whole L1/shared split to shared memory, so that fit_blocks' second block fits */
    if (*fits) CU_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout, (int)cudaSharedmemCarveoutMaxShared));
    return 0;
}

/* dv tile of out_kernel: 64 when dv allows it (fewer redundant Q K^T products), else dv; of the
 * state-only forward scan: 32 or 64 (scan_plan picks); of the backward scan: 64 when two of its
 * blocks fit a multiprocessor at 64, else 32 (more blocks) */
template <int DV> struct Tile { static const int BV = DV >= 64 ? 64 : DV; };
template <int DV> struct ScanTile { static const int BV = DV >= 32 ? 32 : DV; };
template <int C, int DK, int DV> struct BwdTile {
    static const int BV = DV >= 64 && fit_blocks(bwd_scan_smem<C, DK, 64>()) == 2 ? 64 : ScanTile<DV>::BV;
};

/* Which state_scan_kernel runs: *mode = 1 with the cp.async prefetch (two buffer sets) unless
 * only the version without it fits two blocks on a multiprocessor (then 0); -1 when neither
 * fits the device.
 * EFLA_DELTA_RULE_PREFETCH=0/1 forces the choice (a measuring aid for the workbench). */
template <int C, int DK, int BV> int scan_mode(int *mode) {
    bool fp, fn;
    TRY(set_smem(state_scan_kernel<C, DK, BV, true>, state_scan_smem<C, DK, BV, true>(), &fp));
    TRY(set_smem(state_scan_kernel<C, DK, BV, false>, state_scan_smem<C, DK, BV, false>(), &fn));
    bool want = fit_blocks(state_scan_smem<C, DK, BV, true>()) == 2 || fit_blocks(state_scan_smem<C, DK, BV, false>()) == 1;
    const char *force = getenv("EFLA_DELTA_RULE_PREFETCH");
    if (force && *force) want = force[0] != '0';
    *mode = fp && (want || !fn) ? 1 : fn ? 0 : -1;
    return 0;
}

/* The state scan's tile and mode. The scan is latency-bound (a chunk step costs about the same
 * at 32 or 64 columns, a little more at 64), so the tile is the one that needs fewer waves of
 * blocks over the multiprocessors: 64 unless 32 needs fewer than 1.3x its waves.
 * EFLA_DELTA_RULE_SCAN_BV=32/64 forces the tile (a measuring aid for the workbench). */
struct ScanPlan { int bv, mode; };
template <int C, int DK, int DV> int scan_plan(int64_t nseq, int64_t H, ScanPlan *sp) {
    const int N = ScanTile<DV>::BV, W = Tile<DV>::BV;
    int mn = -1, mw = -1;
    TRY((scan_mode<C, DK, N>(&mn)));
    if (W != N) TRY((scan_mode<C, DK, W>(&mw)));
    *sp = ScanPlan{N, mn};
    if (mw < 0) return 0;
    if (mn < 0) { *sp = ScanPlan{W, mw}; return 0; }
    int dev = 0, sms = 0;
    CU_CHECK(cudaGetDevice(&dev));
    CU_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    const int64_t slots_n = (int64_t)sms * fit_blocks(mn == 1 ? state_scan_smem<C, DK, N, true>() : state_scan_smem<C, DK, N, false>());
    const int64_t slots_w = (int64_t)sms * fit_blocks(mw == 1 ? state_scan_smem<C, DK, W, true>() : state_scan_smem<C, DK, W, false>());
    const int64_t waves_n = (nseq * H * (DV / N) + slots_n - 1) / slots_n, waves_w = (nseq * H * (DV / W) + slots_w - 1) / slots_w;
    bool wide = 13 * waves_w < 10 * waves_n;
    const char *force = getenv("EFLA_DELTA_RULE_SCAN_BV");
    if (force && *force) wide = atoi(force) == W;
    if (wide) *sp = ScanPlan{W, mw};
    return 0;
}

template <int C, int DK, int BV> void launch_state_scan_bv(const Args &p, int64_t nseq, int mode) {
    const dim3 grid((unsigned)(nseq * p.H), (unsigned)(p.dv / BV));
    if (mode == 1) state_scan_kernel<C, DK, BV, true><<<grid, THREADS, state_scan_smem<C, DK, BV, true>()>>>(p);
    else state_scan_kernel<C, DK, BV, false><<<grid, THREADS, state_scan_smem<C, DK, BV, false>()>>>(p);
}
template <int C, int DK, int DV> int launch_state_scan(const Args &p, int64_t nseq, ScanPlan sp) {
    if (sp.bv == Tile<DV>::BV) launch_state_scan_bv<C, DK, Tile<DV>::BV>(p, nseq, sp.mode);
    else launch_state_scan_bv<C, DK, ScanTile<DV>::BV>(p, nseq, sp.mode);
    CU_CHECK_LAUNCH("delta_rule_chunk_state_scan");
    return 0;
}

template <int C, int DK, int DV>
int run_fwd(Args &p, int64_t nseq, int device, bool *done) {
    const int BVO = Tile<DV>::BV;
    bool f1, f3;
    TRY(set_smem(prep_kernel<C, DK, DV>, prep_smem<C, DK, DV>(), &f1));
    ScanPlan sp;
    TRY((scan_plan<C, DK, DV>(nseq, p.H, &sp)));
    const int mode = sp.mode;
    TRY(set_smem(out_kernel<C, DK, BVO>, out_smem<C, DK, BVO>(), &f3));
    if (!f1 || mode < 0 || !f3) { *done = false; return 0; }
    const size_t tile_elems = (size_t)(p.nch * p.H * C);
    CuBuffer wbuf, csbuf;
    TRY(wbuf.alloc(sizeof(bf16) * tile_elems * (DK + DV + (p.o ? DV : 0)), device));
    p.w = wbuf.as<bf16>();
    p.u = p.w + tile_elems * DK;
    if (p.o) {   /* out_kernel reads V' and the entering states */
        p.vp = p.u + tile_elems * DV;
        if (!p.cs) {
            TRY(csbuf.alloc(sizeof(float) * (size_t)(p.nch * p.H * DK * DV), device));
            p.cs = csbuf.as<float>();
        }
    }
    Profile prof;
    prof.mark("start");
    prep_kernel<C, DK, DV><<<dim3((unsigned)p.nch, (unsigned)p.H), THREADS, prep_smem<C, DK, DV>()>>>(p);
    CU_CHECK_LAUNCH("delta_rule_chunk_prep");
    prof.mark("prep");
    TRY((launch_state_scan<C, DK, DV>(p, nseq, sp)));
    prof.mark("state_scan");
    if (p.o && p.nch > 0) {
        out_kernel<C, DK, BVO><<<dim3((unsigned)p.nch, (unsigned)p.H, DV / BVO), THREADS, out_smem<C, DK, BVO>()>>>(p);
        CU_CHECK_LAUNCH("delta_rule_chunk_out");
    }
    prof.mark("out");
    *done = true;
    return 0;
}

template <int C, int DK, int BV> void launch_bwd_scan(const Args &p, int64_t nseq) {
    bwd_scan_kernel<C, DK, BV><<<dim3((unsigned)(nseq * p.H), (unsigned)(p.dv / BV)), THREADS, bwd_scan_smem<C, DK, BV>()>>>(p);
}

template <int C, int DK, int DV>
int run_bwd(Args &p, int64_t nseq, int device, bool *done) {
    const int BV = BwdTile<C, DK, DV>::BV, BV64 = Tile<DV>::BV;
    bool f1, f3, f4, f64 = false;
    TRY(set_smem(prep_kernel<C, DK, DV>, prep_smem<C, DK, DV>(), &f1));
    ScanPlan sp;
    TRY((scan_plan<C, DK, DV>(nseq, p.H, &sp)));
    const int mode = sp.mode;
    TRY(set_smem(bwd_scan_kernel<C, DK, BV>, bwd_scan_smem<C, DK, BV>(), &f3));
    /* EFLA_DELTA_RULE_BWD_BV=64: the backward scan with 64-column tiles even where two blocks of
     * it don't fit a multiprocessor (a measuring aid for the workbench) */
    const char *force = getenv("EFLA_DELTA_RULE_BWD_BV");
    if (BV64 != BV && force && atoi(force) == BV64) TRY(set_smem(bwd_scan_kernel<C, DK, BV64>, bwd_scan_smem<C, DK, BV64>(), &f64));
    TRY(set_smem(bwd_chunk_kernel<C, DK, DV>, bwd_chunk_smem<C, DK, DV>(), &f4));
    if (!f1 || mode < 0 || !f3 || !f4) { *done = false; return 0; }
    const size_t state_elems = (size_t)(p.nch * p.H * DK * DV);
    CuBuffer wbuf, dvpbuf, dcsbuf, csbuf;
    TRY(wbuf.alloc(sizeof(bf16) * (size_t)(p.nch * p.H * C * (DK + DV)), device));
    p.w = wbuf.as<bf16>();
    p.u = p.w + p.nch * p.H * C * DK;
    TRY(dvpbuf.alloc(sizeof(bf16) * (size_t)(p.nch * p.H * C * DV), device));
    p.dvp = dvpbuf.as<bf16>();
    TRY(dcsbuf.alloc(sizeof(float) * state_elems, device));
    p.dcs = dcsbuf.as<float>();
    Profile prof;
    prof.mark("start");
    prep_kernel<C, DK, DV><<<dim3((unsigned)p.nch, (unsigned)p.H), THREADS, prep_smem<C, DK, DV>()>>>(p);
    CU_CHECK_LAUNCH("delta_rule_chunk_prep");
    if (!p.states) {   /* recompute the chunk states with a state-only forward */
        TRY(csbuf.alloc(sizeof(float) * state_elems, device));
        Args f = p;
        f.o = nullptr; f.vp = nullptr; f.sf = nullptr; f.cs = csbuf.as<float>();
        TRY((launch_state_scan<C, DK, DV>(f, nseq, sp)));
        p.states = csbuf.as<float>();
    }
    prof.mark("prep+fwd");
    if (f64) launch_bwd_scan<C, DK, BV64>(p, nseq);
    else launch_bwd_scan<C, DK, BV>(p, nseq);
    CU_CHECK_LAUNCH("delta_rule_chunk_bwd_scan");
    prof.mark("bwd_scan");
    bwd_chunk_kernel<C, DK, DV><<<dim3((unsigned)p.nch, (unsigned)p.H), THREADS, bwd_chunk_smem<C, DK, DV>()>>>(p);
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
#include "delta_rule_chunk_entry.inc"

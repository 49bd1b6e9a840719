/* delta_rule_chunk_scan_mma.cuh: the forward's state recurrence with the state in registers
 * (bfloat16 inputs), the fast form of state_scan_kernel (delta_rule_chunk_kernels.cuh): the same
 * outputs (V' to vp, the entering state of every chunk to cs, S_final to sf) from prep's W and U.
 *
 * state_scan_kernel keeps S in shared memory and multiplies with WMMA over 16 warps: each chunk
 * step converts S, stores and reloads the accumulators and meets at three block barriers, so
 * the step is bound by shared memory and barriers (docs/BENCHMARKS.md run 12: about 5 us a step,
 * fla's scan 2.2 us). Here each warp owns 16 columns of the state and holds them, transposed,
 * as mma.sync accumulators (mma_fragments.cuh): S^T (16 x dk) is A's layout already, so
 *   V'^T = U^T - S^T W^T     (A: S^T from registers; B: W by ldmatrix; U^T by ldmatrix.trans)
 *   S^T  = S^T + V'^T K      (A: V'^T, the accumulators of the first product; B: K by ldmatrix.trans)
 * and only W, K and the U columns pass through shared memory (cp.async, the next chunk's while
 * this one computes). Warps share nothing but those tiles: one block barrier a chunk. V' and the
 * chunk states go to global memory from registers (movmatrix turns a lane's row pair into a
 * column pair, so each store is 4 bytes of one row).
 *
 * Block: BV / 16 warps for BV state columns (BV = 64, or dv when smaller); grid (sequence x
 * head, dv / BV). C, DK multiples of 16. */
#ifndef EFLA_CUDA_DELTA_RULE_CHUNK_SCAN_MMA_CUH
#define EFLA_CUDA_DELTA_RULE_CHUNK_SCAN_MMA_CUH
#include "mma_fragments.cuh"

namespace {

/* W, K (C x DK) and the U columns (C x BV), bfloat16 with padded rows (ldmatrix's eight rows of
 * 16 bytes then fall on distinct banks), two buffer sets */
template <int C, int DK, int BV> constexpr size_t scan_mma_set_bytes() { return 2 * bm_bytes(C, DK) + bm_bytes(C, BV); }
template <int C, int DK, int BV> constexpr size_t state_scan_mma_smem() { return 2 * scan_mma_set_bytes<C, DK, BV>(); }
/* a scan block's threads: a warp per 16 state columns, KS warps a slice where the products' k
 * is split (KS = 2) */
template <int BV, int KS = 1> constexpr int scan_mma_threads() { return 32 * KS * (BV / 16); }

/* A fragments a[kk] of a 16-row matrix M (16 x 16 KK) stored transposed: dst[c * ld + r] = M[r][c]
 * (bfloat16; dst: M's row 0 and column 0). a[kk][i] holds rows g (+8 for odd i) of the 8 columns
 * 8 (2 kk + i / 2) ..; movmatrix gives the lane column 8 (2 kk + i / 2) + g, rows 2t, 2t + 1 */
template <int KK> __device__ __forceinline__ void store_transposed(bf16 *dst, int64_t ld, const uint32_t (&a)[KK][4]) {
    const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
#pragma unroll
    for (int kk = 0; kk < KK; kk++)
#pragma unroll
        for (int i = 0; i < 4; i++)
            *(uint32_t *)(dst + (int64_t)(8 * (2 * kk + i / 2) + g) * ld + 2 * t + (i % 2) * 8) = movmatrix_trans(a[kk][i]);
}

/* rows x cols of T (bfloat16 or float) from global memory (row r at src + r stride) into shared
 * memory (row length ld) by the block's NT threads, 16 bytes a copy (cp.async), rows from `valid`
 * on zero. copy_rows_rolled: the same with its loop kept rolled, for the float32 scans: unrolled,
 * its per-copy addresses were hoisted out of the chunk loop and held beside the state, and the
 * float32 scans spilled */
template <class T> __device__ __forceinline__ void copy_row_vec(T *dst, int ld, const T *src, int64_t stride, int vecs, int valid, int e) {
    constexpr int V = 16 / (int)sizeof(T);   /* elements a copy */
    const int r = e / vecs, v = e % vecs;
    const bool ok = r < valid;
    cp_async16(dst + r * ld + V * v, ok ? src + r * stride + V * v : src, ok);
}
template <int NT, class T>
__device__ __forceinline__ void copy_rows_async(T *dst, int ld, const T *src, int64_t stride, int rows, int cols, int valid) {
    const int vecs = cols / (16 / (int)sizeof(T));
    for (int e = threadIdx.x; e < rows * vecs; e += NT) copy_row_vec(dst, ld, src, stride, vecs, valid, e);
}
template <int NT, class T>
__device__ __forceinline__ void copy_rows_rolled(T *dst, int ld, const T *src, int64_t stride, int rows, int cols, int valid) {
    const int vecs = cols / (16 / (int)sizeof(T));
#pragma unroll 1
    for (int e = threadIdx.x; e < rows * vecs; e += NT) copy_row_vec(dst, ld, src, stride, vecs, valid, e);
}

/* A state (float, row length ld, from its warp's first column) to and from the transposed
 * accumulators st[j] of a warp: rows g and g + 8 of S^T are columns g, g + 8 of S, and tile j's
 * columns 2t, 2t + 1 are rows 8 j + 2t, 8 j + 2t + 1. load_transposed: zero where src is NULL. */
template <int KT> __device__ __forceinline__ void load_transposed(float (&st)[KT][4], const float *src, int64_t ld) {
    const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
#pragma unroll
    for (int j = 0; j < KT; j++)
#pragma unroll
        for (int i = 0; i < 4; i++) st[j][i] = src ? src[(8 * j + 2 * t + i % 2) * ld + g + (i >= 2 ? 8 : 0)] : 0.0f;
}
template <int KT> __device__ __forceinline__ void store_transposed(float *dst, int64_t ld, const float (&st)[KT][4]) {
    const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
#pragma unroll
    for (int j = 0; j < KT; j++)
#pragma unroll
        for (int i = 0; i < 4; i++) dst[(8 * j + 2 * t + i % 2) * ld + g + (i >= 2 ? 8 : 0)] = st[j][i];
}

/* the scans' copies: float32's loops kept rolled (copy_rows_rolled), bfloat16's as they were timed */
template <int NT, class T>
__device__ __forceinline__ void copy_rows_for_scan(T *dst, int ld, const T *src, int64_t stride, int rows, int cols, int valid) {
    if constexpr (std::is_same<T, float>::value) copy_rows_rolled<NT>(dst, ld, src, stride, rows, cols, valid);
    else copy_rows_async<NT>(dst, ld, src, stride, rows, cols, valid);
}

/* The forward scans' chunk c of sequence n (its first chunk `first`, length len) into one buffer
 * set: W and K (C x DK) and the block's U columns (C x BV from column j0), K's rows past the
 * sequence zero; one cp.async commit group */
template <int NT, int C, int DK, int BV, class E>
__device__ __forceinline__ void fetch_scan_chunk(const ArgsT<E> &p, int64_t n, int64_t h, int64_t first, int64_t len, int64_t j0,
                                                 int64_t c, E *W, int ldw, E *K, int ldk, E *U, int ldu) {
    const int64_t gc = first + c, row = p.seq[3 * n] + c * C * p.H + h;
    const int clen = (int)(len - c * C < C ? len - c * C : C);
    copy_rows_for_scan<NT>(W, ldw, p.w + (gc * p.H + h) * C * DK, DK, C, DK, C);
    copy_rows_for_scan<NT>(K, ldk, p.k + row * DK, p.H * DK, C, DK, clen);
    copy_rows_for_scan<NT>(U, ldu, p.u + (gc * p.H + h) * C * p.dv + j0, p.dv, C, BV, C);
    cp_async_commit();
}

/* The backward scans' chunk c into one buffer set: Q, K, W (C x DK), the block's dO columns (C x
 * BV from column j0) and prep's tril(Q K^T) (C x C), rows past the sequence zero; one commit group */
template <int NT, int C, int DK, int BV, class E>
__device__ __forceinline__ void fetch_bwd_scan_chunk(const ArgsT<E> &p, int64_t n, int64_t h, int64_t first, int64_t len, int64_t j0,
                                                     int64_t c, E *Q, int ldq, E *K, int ldk, E *W, int ldw, E *dO, int ldo, E *P,
                                                     int ldp) {
    const int64_t gc = first + c, row = p.seq[3 * n] + c * C * p.H + h;
    const int clen = (int)(len - c * C < C ? len - c * C : C);
    copy_rows_for_scan<NT>(Q, ldq, p.q + row * DK, p.H * DK, C, DK, clen);
    copy_rows_for_scan<NT>(K, ldk, p.k + row * DK, p.H * DK, C, DK, clen);
    copy_rows_for_scan<NT>(W, ldw, p.w + (gc * p.H + h) * C * DK, DK, C, DK, C);
    copy_rows_for_scan<NT>(dO, ldo, p.d_o + row * p.dv + j0, p.H * p.dv, C, BV, clen);
    copy_rows_for_scan<NT>(P, ldp, p.pq + (gc * p.H + h) * C * C, C, C, C, C);
    cp_async_commit();
}

/* A sequence's nchunks chunks in order, chunk c + 1's tiles in flight (fetch(c + 1), buffer set
 * (c + 1) & 1) while step(c, c & 1) computes on chunk c's: one block barrier a chunk */
template <class Fetch, class Step> __device__ __forceinline__ void scan_chunks(int64_t nchunks, Fetch fetch, Step step) {
    if (nchunks > 0) fetch(0);
    for (int64_t c = 0; c < nchunks; c++) {
        cp_async_wait_all();
        __syncthreads();   /* chunk c's tiles are in; every warp is done with chunk c - 1's set */
        if (c + 1 < nchunks) fetch(c + 1);
        step(c, (int)(c & 1));
    }
}

/* With KS = 2 (two warps a slice, each with half of a product's k sum): this warp's partial sums
 * acc posted to post (a lane's floats 32 apart), one block barrier, then its partner's added (the
 * partner is the warp SLICES away): a + b and b + a are the same float, so both hold one sum */
template <int SLICES, int N> __device__ __forceinline__ void add_partner_partial(float (&acc)[N][4], float *post, int warp, int part) {
    const int lane = threadIdx.x % 32, other = part ? warp - SLICES : warp + SLICES;
#pragma unroll
    for (int j = 0; j < N; j++)
#pragma unroll
        for (int i = 0; i < 4; i++) post[((warp * N + j) * 4 + i) * 32 + lane] = acc[j][i];
    __syncthreads();
#pragma unroll
    for (int j = 0; j < N; j++)
#pragma unroll
        for (int i = 0; i < 4; i++) acc[j][i] += post[((other * N + j) * 4 + i) * 32 + lane];
}

/* KS = 2: each 16-column slice's k split over two warps, as state_scan_mma_f32_kernel's KS
 * (opt-in, untimed): each holds half of the slice's state rows, makes V'^T's partial sum over them
 * (U^T in the first warp's), and both round the same exchanged sum to bfloat16 */
template <int C, int DK, int BV> constexpr size_t state_scan_mma_smem_ks2() {
    return state_scan_mma_smem<C, DK, BV>() + sizeof(float) * 2 * BV * C;
}

template <int C, int DK, int BV, int KS = 1>
__global__ void __launch_bounds__(scan_mma_threads<BV, KS>()) state_scan_mma_kernel(ArgsT<bf16> p) {
    static_assert(C % 16 == 0 && DK % (16 * KS) == 0 && BV % 16 == 0 && (KS == 1 || KS == 2),
                  "state_scan_mma_kernel: C, BV multiples of 16, DK of 16 KS; KS 1 or 2");
    constexpr int NT = scan_mma_threads<BV, KS>(), LDK = DK + 8, LDU = BV + 8;
    constexpr int KT = DK / 8 / KS, CT = C / 8, KK = DK / 16 / KS;   /* n8 tiles of this warp's state rows, of V''s rows; its k16 steps */
    constexpr int SLICES = BV / 16;
    constexpr size_t SET = scan_mma_set_bytes<C, DK, BV>();
    EFLA_DYNAMIC_SMEM(smem);
    EFLA_SMEM_FITS(2 * SET + (KS > 1 ? sizeof(float) * NT * CT * 4 : 0),
                   (KS > 1 ? state_scan_mma_smem_ks2<C, DK, BV>() : state_scan_mma_smem<C, DK, BV>()));
    const int64_t n = blockIdx.x / p.H, h = blockIdx.x % p.H, dv = p.dv;
    const int warp = threadIdx.x / 32;
    const int slice = KS > 1 ? warp % SLICES : warp, part = KS > 1 ? warp / SLICES : 0;   /* 16 state columns; which row part */
    const int kr = part * KK;   /* this warp's first k16 step of the state's rows */
    const int64_t j0 = (int64_t)blockIdx.y * BV, col0 = j0 + 16 * slice;   /* the block's, this warp's first state column */
    const int64_t row0 = 16 * kr;   /* this warp's first state row */
    auto Wb = [&](int b) { return (bf16 *)(smem + b * SET); };
    auto Kb = [&](int b) { return (bf16 *)(smem + b * SET + bm_bytes(C, DK)); };
    auto Ub = [&](int b) { return (bf16 *)(smem + b * SET + 2 * bm_bytes(C, DK)); };
    const int64_t first = p.seq[3 * n + 2], len = p.seq[3 * n + 1];
    const int64_t nchunks = (len + C - 1) / C;

    auto fetch = [&](int64_t c) {
        const int b = (int)(c & 1);
        fetch_scan_chunk<NT, C, DK, BV>(p, n, h, first, len, j0, c, Wb(b), LDK, Kb(b), LDK, Ub(b), LDU);
    };

    /* S^T: rows = this warp's 16 state columns, n8 tile j = state rows row0 + 8 j .. + 7 */
    float s[KT][4];
    load_transposed(s, p.s0 ? p.s0 + (n * p.H + h) * DK * dv + row0 * dv + col0 : nullptr, dv);

    scan_chunks(nchunks, fetch, [&](int64_t c, int b) {
        const int64_t gc = first + c;

        /* S^T as A fragments (bfloat16), and the entering state (S, the transpose) to cs */
        uint32_t sa[KK][4];
#pragma unroll
        for (int kk = 0; kk < KK; kk++) acc_to_a(sa[kk], s, kk);
        if (p.cs) store_transposed(p.cs + (gc * p.H + h) * DK * dv + row0 * dv + col0, dv, sa);

        /* V'^T = U^T - S^T W^T: U^T by ldmatrix.trans of U (matrices: tile j's rows, columns +0 / +8;
         * then tile j + 1's), the product with -S^T (the sign bits flipped) */
        float vt[CT][4];
        const bf16 *U = Ub(b);
        if (part == 0) {
#pragma unroll
            for (int j = 0; j < CT; j += 2) {
                uint32_t r[4];
                ldsm_a_cols(r, U, LDU, 16 * slice, j / 2);
                vt[j][0] = bf16_lo(r[0]); vt[j][1] = bf16_hi(r[0]); vt[j][2] = bf16_lo(r[1]); vt[j][3] = bf16_hi(r[1]);
                vt[j + 1][0] = bf16_lo(r[2]); vt[j + 1][1] = bf16_hi(r[2]); vt[j + 1][2] = bf16_lo(r[3]); vt[j + 1][3] = bf16_hi(r[3]);
            }
        } else {
            zero_acc(vt);
        }
        const bf16 *W = Wb(b);   /* B = W^T */
        mma_steps<KK>(vt, negated_frags(sa), [&](uint32_t (&r)[4], int kk, int j) { ldsm_b_cols(r, W, LDK, kr + kk, j); });
        if constexpr (KS == 2) add_partner_partial<SLICES>(vt, (float *)(smem + 2 * SET), warp, part);

        /* V' in bfloat16: the A fragments of the next product, and to vp */
        uint32_t va[C / 16][4];
#pragma unroll
        for (int kk = 0; kk < C / 16; kk++) acc_to_a(va[kk], vt, kk);
        if (p.vp && part == 0) store_transposed(p.vp + (gc * p.H + h) * C * dv + col0, dv, va);

        /* S^T += V'^T K (this warp's state rows: K's columns from row0) */
        const bf16 *K = Kb(b);
        mma_steps<C / 16>(s, held_frags(va), [&](uint32_t (&r)[4], int kk, int j) { ldsm_b_rows(r, K + row0, LDK, kk, j); });
    });
    if (p.sf) store_transposed(p.sf + (n * p.H + h) * DK * dv + row0 * dv + col0, dv, s);
}

/* ---- the backward scan: dV' and the state gradients, with dS^T in registers ---------------------- */
/* bwd_scan_kernel's outputs (dV' to dvp, the gradient leaving every chunk to dcs, dS0) from Q, K,
 * W, dO and prep's tril(Q K^T) (p.pq: where the states were saved), walking the chunks backwards
 * with each warp's 16 columns of dS, transposed, in registers:
 *   dV'^T = scale dO^T P + dS^T K^T        (A: dO^T by ldmatrix.trans of dO, then dS^T)
 *   dS^T += scale dO^T Q - dV'^T W         (A: the same dO fragments, then -dV'^T from registers)
 * with P = tril(Q K^T), the scale applied in float to the dO products (dO is used as given,
 * not rounded again after scaling) and dV' rounded before the second product, as
 * bwd_scan_kernel does. */
template <int C, int DK, int BV> constexpr size_t bwd_scan_mma_set_bytes() {
    return 3 * bm_bytes(C, DK) + bm_bytes(C, BV) + bm_bytes(C, C);
}
template <int C, int DK, int BV> constexpr size_t bwd_scan_mma_smem() { return 2 * bwd_scan_mma_set_bytes<C, DK, BV>(); }
/* KS = 2: dS's rows split over two warps a slice, as the forward's KS (opt-in, untimed); the first
 * warp of a slice adds the dO^T P term before the exchange */
template <int C, int DK, int BV> constexpr size_t bwd_scan_mma_smem_ks2() {
    return bwd_scan_mma_smem<C, DK, BV>() + sizeof(float) * 2 * BV * C;
}

template <int C, int DK, int BV, int KS = 1>
__global__ void __launch_bounds__(scan_mma_threads<BV, KS>()) bwd_scan_mma_kernel(ArgsT<bf16> p) {
    static_assert(C % 16 == 0 && DK % (16 * KS) == 0 && BV % 16 == 0 && (KS == 1 || KS == 2),
                  "bwd_scan_mma_kernel: C, BV multiples of 16, DK of 16 KS; KS 1 or 2");
    constexpr int NT = scan_mma_threads<BV, KS>(), LDK = DK + 8, LDV = BV + 8, LDC = C + 8;
    constexpr int KT = DK / 8 / KS, CT = C / 8, KK = DK / 16 / KS;   /* this warp's n8 tiles and k16 steps of dS's rows */
    constexpr int SLICES = BV / 16;
    constexpr size_t SET = bwd_scan_mma_set_bytes<C, DK, BV>();
    EFLA_DYNAMIC_SMEM(smem);
    EFLA_SMEM_FITS(2 * SET + (KS > 1 ? sizeof(float) * NT * CT * 4 : 0),
                   (KS > 1 ? bwd_scan_mma_smem_ks2<C, DK, BV>() : bwd_scan_mma_smem<C, DK, BV>()));
    const int64_t n = blockIdx.x / p.H, h = blockIdx.x % p.H, dv = p.dv;
    const int warp = threadIdx.x / 32;
    const int slice = KS > 1 ? warp % SLICES : warp, part = KS > 1 ? warp / SLICES : 0;   /* 16 columns; which row part */
    const int kr = part * KK;   /* this warp's first k16 step of dS's rows */
    const int64_t j0 = (int64_t)blockIdx.y * BV, col0 = j0 + 16 * slice;
    const int64_t row0 = 16 * kr;   /* this warp's first row of dS */
    auto Qb = [&](int b) { return (bf16 *)(smem + b * SET); };
    auto Kb = [&](int b) { return (bf16 *)(smem + b * SET + bm_bytes(C, DK)); };
    auto Wb = [&](int b) { return (bf16 *)(smem + b * SET + 2 * bm_bytes(C, DK)); };
    auto dOb = [&](int b) { return (bf16 *)(smem + b * SET + 3 * bm_bytes(C, DK)); };
    auto Pb = [&](int b) { return (bf16 *)(smem + b * SET + 3 * bm_bytes(C, DK) + bm_bytes(C, BV)); };
    const int64_t first = p.seq[3 * n + 2], len = p.seq[3 * n + 1];
    const int64_t nchunks = (len + C - 1) / C;

    auto fetch = [&](int64_t c) {
        const int b = (int)(c & 1);
        fetch_bwd_scan_chunk<NT, C, DK, BV>(p, n, h, first, len, j0, c, Qb(b), LDK, Kb(b), LDK, Wb(b), LDK, dOb(b), LDV, Pb(b), LDC);
    };
    if (nchunks > 0) fetch(nchunks - 1);

    float ds[KT][4];   /* dS^T: rows = this warp's 16 columns, n8 tile j = rows row0 + 8 j .. of dS */
    load_transposed(ds, p.dsf ? p.dsf + (n * p.H + h) * DK * dv + row0 * dv + col0 : nullptr, dv);

    for (int64_t c = nchunks - 1; c >= 0; c--) {
        const int b = (int)(c & 1);
        const int64_t gc = first + c;
        cp_async_wait_all();
        __syncthreads();   /* chunk c's tiles are in; every warp is done with chunk c + 1's set */
        if (c > 0) fetch(c - 1);

        /* dS_out^T as A fragments, and dS_out (the gradient leaving chunk c) to dcs */
        uint32_t sa[KK][4];
#pragma unroll
        for (int kk = 0; kk < KK; kk++) acc_to_a(sa[kk], ds, kk);
        store_transposed(p.dcs + (gc * p.H + h) * DK * dv + row0 * dv + col0, dv, sa);

        /* dO^T as A fragments (dO's columns are this slice's rows) */
        uint32_t oa[C / 16][4];
        const bf16 *dO = dOb(b);
#pragma unroll
        for (int kk = 0; kk < C / 16; kk++) ldsm_a_cols(oa[kk], dO, LDV, 16 * slice, kk);

        /* dV'^T = scale dO^T P + dS_out^T K^T (the scale in float, on the first product; with KS = 2
         * the first warp of the slice makes it, and each its rows' part of the second) */
        float dvt[CT][4];
        zero_acc(dvt);
        const bf16 *P = Pb(b), *K = Kb(b);
        if (part == 0) {
            mma_steps<C / 16>(dvt, held_frags(oa), [&](uint32_t (&r)[4], int kk, int j) { ldsm_b_rows(r, P, LDC, kk, j); });
            scale_acc(dvt, p.scale);
        }
        mma_steps<KK>(dvt, held_frags(sa), [&](uint32_t (&r)[4], int kk, int j) { ldsm_b_cols(r, K, LDK, kr + kk, j); });
        if constexpr (KS == 2) add_partner_partial<SLICES>(dvt, (float *)(smem + 2 * SET), warp, part);

        /* dV' in bfloat16: to dvp, and negated as the A operand of dS's update */
        uint32_t va[C / 16][4];
#pragma unroll
        for (int kk = 0; kk < C / 16; kk++) acc_to_a(va[kk], dvt, kk);
        if (part == 0) store_transposed(p.dvp + (gc * p.H + h) * C * dv + col0, dv, va);

        /* dS^T += scale dO^T Q - dV'^T W: B = Q, then W, two n8 tiles at a time (dO^T Q in its own
         * accumulators for the scale: a whole row of them would not fit beside dS^T) */
        const bf16 *Q = Qb(b), *W = Wb(b);
#pragma unroll
        for (int j = 0; j < KT; j += 2) {
            float qo[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
#pragma unroll
            for (int kk = 0; kk < C / 16; kk++) {
                uint32_t r[4];
                ldsm_b_rows(r, Q + row0, LDK, kk, j);
                mma_bf16(qo[0], oa[kk], r[0], r[1]);
                mma_bf16(qo[1], oa[kk], r[2], r[3]);
            }
#pragma unroll
            for (int i = 0; i < 4; i++) {
                ds[j][i] += p.scale * qo[0][i];
                ds[j + 1][i] += p.scale * qo[1][i];
            }
#pragma unroll
            for (int kk = 0; kk < C / 16; kk++) {
                uint32_t r[4], vn[4];
                negated_frags(va)(vn, kk);   /* -dV'^T */
                ldsm_b_rows(r, W + row0, LDK, kk, j);
                mma_bf16(ds[j], vn, r[0], r[1]);
                mma_bf16(ds[j + 1], vn, r[2], r[3]);
            }
        }
    }
    if (p.ds0) store_transposed(p.ds0 + (n * p.H + h) * DK * dv + row0 * dv + col0, dv, ds);
}

/* ---- the outputs, one warp per 16 rows of a chunk ------------------------------------------------ */
/* out_kernel's output O = scale (Q S + tril(Q K^T) V') (S the state entering the chunk, cs; V' from
 * the scan, vp), in the register style: warp w owns the chunk's rows 16 w .. 16 w + 15, makes its
 * rows of P = tril(Q K^T) as accumulators (only the n8 tiles at or left of its diagonal), rounds
 * them to the A operand of P V' and sums Q S + P V' in the same accumulators, then stores O from
 * them (a lane's pair is two neighbouring columns of one row). Q's A fragments serve both Q K^T
 * and Q S. Blocks: (chunk, head), C / 16 warps, all dv columns. */
template <int C, int DK, int DV> constexpr size_t out_mma_smem() {
    return 2 * bm_bytes(C, DK) + bm_bytes(DK, DV) + bm_bytes(C, DV);
}
template <int C> constexpr int out_mma_threads() { return 32 * (C / 16); }

template <int C, int DK, int DV>
__global__ void __launch_bounds__(out_mma_threads<C>()) out_mma_kernel(ArgsT<bf16> p) {
    static_assert(C % 16 == 0 && DK % 16 == 0 && DV % 16 == 0, "out_mma_kernel: C, DK, DV multiples of 16");
    constexpr int NT = out_mma_threads<C>(), LDK = DK + 8, LDV = DV + 8, CT = C / 8, VT = DV / 8;
    EFLA_DYNAMIC_SMEM(smem);
    EFLA_SMEM_FITS((size_t)(2 * C * LDK + DK * LDV + C * LDV) * sizeof(bf16), (out_mma_smem<C, DK, DV>()));
    const int64_t g0 = blockIdx.x, h = blockIdx.y, dv = p.dv;
    const int warp = threadIdx.x / 32;
    const ChunkRows cr = chunk_rows(p, g0, h, C);
    bf16 *const Q = (bf16 *)smem, *const K = Q + C * LDK, *const S = K + C * LDK, *const Vp = S + DK * LDV;
    copy_rows_async<NT>(Q, LDK, p.q + cr.first * DK, p.H * DK, C, DK, cr.len);
    copy_rows_async<NT>(K, LDK, p.k + cr.first * DK, p.H * DK, C, DK, cr.len);
    cp_async_commit();
    copy_rows_async<NT>(S, LDV, p.cs + (g0 * p.H + h) * DK * dv, dv, DK, DV, DK);
    copy_rows_async<NT>(Vp, LDV, p.vp + (g0 * p.H + h) * C * dv, dv, C, DV, C);
    cp_async_commit();
    cp_async_wait_one();
    __syncthreads();   /* Q and K are in (S and V' may still be on their way) */

    /* Q's A fragments (they serve both Q K^T and Q S) */
    const int row0 = 16 * warp;
    uint32_t qa[DK / 16][4];
#pragma unroll
    for (int kk = 0; kk < DK / 16; kk++) ldsm_a_rows(qa[kk], Q, LDK, row0, kk);
    auto q_frag = held_frags(qa);

    /* P = Q K^T on this warp's rows, the tile pairs at or left of its diagonal, then tril */
    float pt[CT][4];
    zero_acc(pt);
    mma_steps<DK / 16>(pt, q_frag, [&](uint32_t (&r)[4], int kk, int j) { ldsm_b_cols(r, K, LDK, kk, j); }, 0, DK / 16,
                       [=](int, int j) { return j <= 2 * warp; });
#pragma unroll
    for (int j = 0; j < CT; j++)
#pragma unroll
        for (int i = 0; i < 4; i++)
            if (acc_col(j, i) > acc_row(row0, i)) pt[j][i] = 0.0f;
    uint32_t pa[C / 16][4];
#pragma unroll
    for (int kk = 0; kk < C / 16; kk++) acc_to_a(pa[kk], pt, kk);

    cp_async_wait_all();
    __syncthreads();   /* S and V' are in */
    /* O = Q S + P V' (P's columns past this warp's rows are zero), stored scaled */
    float ot[VT][4];
    zero_acc(ot);
    mma_steps<DK / 16>(ot, q_frag, [&](uint32_t (&r)[4], int kk, int j) { ldsm_b_rows(r, S, LDV, kk, j); });
    mma_steps<C / 16>(ot, held_frags(pa), [&](uint32_t (&r)[4], int kk, int j) { ldsm_b_rows(r, Vp, LDV, kk, j); }, 0, warp + 1);
    store_acc(p.o + cr.first * dv, p.H * dv, row0, ot, cr.len, p.scale);
}

} // namespace
#endif

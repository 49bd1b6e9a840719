/* delta_rule_chunk_bwd_mma.cuh: bwd_chunk_kernel's outputs (dq, dk, dv, and dalpha or the chain
 * through alpha) in the register style, bfloat16 inputs: warp w owns the chunk's rows
 * 16 w .. 16 w + 15 of every C-row product and keeps its accumulators in registers, where the
 * elementwise work happens (the mask of dP, the scale, the diag(a) of dX, the sums for da, the
 * dbeta chain) and from where dq, dv and dk go to global memory. Shared memory holds only the
 * inputs and the few products other warps read (D, V', dP, Y, and M for dG + dG^T), so a chunk
 * needs five block barriers where bwd_chunk_kernel's WMMA script, with every accumulator passing
 * through shared memory, needs thirteen. The products and their order (docs/MATH.md §4):
 *   D = V - K S                    (stored: V' = T D reads all of it; dT reads it as D^T)
 *   V' = T D                       (stored: dO V'^T, and V' dS_out^T later)
 *   dP = scale tril(dO V'^T)       (A fragments for dQ from registers; stored for dP^T Q)
 *   dQ = scale dO S^T + dP K       (the scale on the first product in float, as mm2's s1)
 *   dD = T^T dV' = dv,  dK = -dD S^T + ...   (-dD's A fragments from registers)
 *   dT = dV' D^T,  da_j += sum_i X_ij dT_ij (per-warp column sums, added up by row owners),
 *   dX = dT diag(a),  Y = dX X^T   (dX's A fragments from registers; Y stored)
 *   dK += dP^T Q,  dK += V' dS_out^T (V' made again from T D, in float: hi + lo products)
 *   -dL = X^T Y,  G = K K^T,  da_i += sum_{j<i} dL_ij G_ij
 *   M = strict_lower(diag(a) dL) (stored),  dK += (M + M^T) K   (+ 2 dlambda k with the chain)
 * The roundings to bfloat16 are bwd_chunk_kernel's (D, V', dP, dX, Y, -dD and dG + dG^T once
 * each; M + M^T is exact since one of the two is zero), so both kernels agree to float sums,
 * but for V' in dK += V' dS_out^T: there V' is split, hi = bf16(V') and lo = bf16(V' - hi),
 * two products (672 more mma a chunk at d = 128: V' again, then lo), since bfloat16 V' there
 * was, with dS_out's rounding, most of dK's error past its own rounding for tiny keys
 * (the emulator's tiny-keys case: 2.88e-3 -> 2.43e-3).
 * T and X are block lower triangular (prep's inverse zeroes the 16 x 16 blocks above the
 * diagonal), so the products with them skip those blocks' k16 steps (mma_steps' range and keep).
 *
 * Block: C / 16 warps, grid (chunk, head). C, DK, DV multiples of 16, up to 128 (accumulators
 * of 16 x 128 floats, 64 registers). */
#ifndef EFLA_CUDA_DELTA_RULE_CHUNK_BWD_MMA_CUH
#define EFLA_CUDA_DELTA_RULE_CHUNK_BWD_MMA_CUH
#include "mma_fragments.cuh"

namespace {

/* K, Q (C x DK); D (V first), dO, dV', V' (C x DV); S and dS_out (DK x DV); T (M later), X, dP,
 * Y (C x C): bfloat16 with padded rows; then a, the per-warp column sums of da and alpha's
 * slopes per row */
template <int C, int DK, int DV> constexpr size_t bwd_chunk_mma_smem() {
    return 2 * bm_bytes(C, DK) + 4 * bm_bytes(C, DV) + 2 * bm_bytes(DK, DV) + 4 * bm_bytes(C, C) + (size_t)C * 4 +
           (size_t)(C / 16) * C * 4 + (size_t)C * 16;
}
template <int C> constexpr int bwd_chunk_mma_threads() { return 32 * (C / 16); }

/* The elementwise steps of the register-style bwd_chunk kernels (this one and
 * delta_rule_chunk_bwd_mma_f32.cuh's) on a warp's 16 rows row0 .. of C x C accumulators */

/* da_j += sum_{i >= j} X_ij dT_ij over this warp's rows: column j's sum to cols[j] (x(r, c) reads X) */
template <int CT, class XAt> __device__ __forceinline__ void da_column_sums(float *cols, const float (&dt)[CT][4], int row0, XAt x) {
    const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
#pragma unroll
    for (int j = 0; j < CT; j++)
#pragma unroll
        for (int e = 0; e < 2; e++) {   /* column 8 j + 2t + e: this lane's rows, then the warp's */
            const int c = 8 * j + 2 * t + e;
            float s = 0.0f;
#pragma unroll
            for (int half = 0; half < 2; half++) {
                const int r = row0 + g + 8 * half;
                if (r >= c) s += x(r, c) * dt[j][2 * half + e];
            }
            s += __shfl_xor_sync(0xffffffffu, s, 4);
            s += __shfl_xor_sync(0xffffffffu, s, 8);
            s += __shfl_xor_sync(0xffffffffu, s, 16);
            if (g == 0) cols[c] = s;
        }
}

/* From -dL (ndl) and G: da_i += sum_{j < i} dL_ij G_ij for rows row0 + g and + 8 (rsum, each summed
 * over its row's four lanes), and ndl turned into M = strict_lower(diag(a) dL) in place */
template <int CT>
__device__ __forceinline__ void da_rows_and_m(float (&rsum)[2], float (&ndl)[CT][4], const float (&gk)[CT][4], const float *a, int row0) {
    rsum[0] = rsum[1] = 0.0f;
#pragma unroll
    for (int j = 0; j < CT; j++)
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const int r = acc_row(row0, i), c = acc_col(j, i);
            if (c < r) rsum[i / 2] -= ndl[j][i] * gk[j][i];
            ndl[j][i] = c < r ? -a[r] * ndl[j][i] : 0.0f;
        }
#pragma unroll
    for (int half = 0; half < 2; half++) {
        rsum[half] += __shfl_xor_sync(0xffffffffu, rsum[half], 1);
        rsum[half] += __shfl_xor_sync(0xffffffffu, rsum[half], 2);
    }
}

/* da of rows row0 + g (+ 8) made whole: the column sums of the nw warps that made them
 * (da_cols[w][j]), then the row sums; stored as dalpha, or with the chain (p.dbeta) taken into dbeta
 * and each row's factor s of dk += s k returned (chain[half], in every lane of the row) */
template <class E, int C>
__device__ __forceinline__ void finish_da(const ArgsT<E> &p, const ChunkRows &cr, const float *da_cols, int nw, const double *slopes,
                                          int row0, const float (&rsum)[2], float (&chain)[2]) {
    const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
#pragma unroll
    for (int half = 0; half < 2; half++) {
        const int r = row0 + g + 8 * half;
        float s = 0.0f;
        if (t == 0 && r < cr.len) {
            float dar = 0.0f;
            for (int w = 0; w < nw; w++) dar += da_cols[w * C + r];
            dar += rsum[half];
            const int64_t row = cr.first + r * (int64_t)p.H;
            if (p.dbeta) s = (float)chain_with(AlphaSlopes{slopes[2 * r], slopes[2 * r + 1]}, dar, p.dbeta + row);
            else p.dalpha[row] = from_f<E>(dar);
        }
        chain[half] = __shfl_sync(0xffffffffu, s, lane & ~3);
    }
}

template <int C, int DK, int DV>
__global__ void __launch_bounds__(bwd_chunk_mma_threads<C>()) bwd_chunk_mma_kernel(ArgsT<bf16> p) {
    static_assert(C % 16 == 0 && DK % 16 == 0 && DV % 16 == 0 && DK <= 128 && DV <= 128,
                  "bwd_chunk_mma_kernel: C, DK, DV multiples of 16, DK and DV up to 128");
    constexpr int NT = bwd_chunk_mma_threads<C>(), NW = C / 16, LDK = DK + 8, LDV = DV + 8, LDC = C + 8;
    constexpr int KT = DK / 8, VT = DV / 8, CT = C / 8;   /* n8 tiles of a row of each width */
    EFLA_DYNAMIC_SMEM(smem);
    bf16 *const K = (bf16 *)smem, *const Q = K + C * LDK, *const D = Q + C * LDK, *const dO = D + C * LDV,
                *const dVp = dO + C * LDV, *const Vp = dVp + C * LDV, *const S = Vp + C * LDV, *const dS = S + DK * LDV,
                *const T = dS + DK * LDV, *const X = T + C * LDC, *const dP = X + C * LDC, *const Y = dP + C * LDC;
    bf16 *const M = T;   /* M takes T's room: T's last reader (dD) is done at the barrier before M */
    float *const a = (float *)(Y + C * LDC), *const da_cols = a + C;   /* da_cols[w][j]: warp w's column sums */
    double *const slopes = (double *)(da_cols + NW * C);                 /* per row: dalpha/dbeta, dalpha/dlambda */
    EFLA_SMEM_FITS((size_t)((char *)(slopes + 2 * C) - smem), (bwd_chunk_mma_smem<C, DK, DV>()));
    const int64_t g0 = blockIdx.x, h = blockIdx.y, rs = p.H;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const int row0 = 16 * warp;   /* this warp's rows */
    const ChunkRows cr = chunk_rows(p, g0, h, C);
    const int64_t state = (g0 * p.H + h) * DK * DV;

    /* loads in three groups: what D and V' need; then what dP, dQ, dD, dT and Y need; then dS_out */
    const bf16 *tx = p.tx + (g0 * p.H + h) * 2 * C * C;
    copy_rows_async<NT>(K, LDK, p.k + cr.first * DK, rs * DK, C, DK, cr.len);
    copy_rows_async<NT>(D, LDV, p.v + cr.first * DV, rs * DV, C, DV, cr.len);
    copy_rows_async<NT>(S, LDV, p.states + state, DV, DK, DV, DK);
    copy_rows_async<NT>(T, LDC, tx, C, C, C, C);
    cp_async_commit();
    copy_rows_async<NT>(Q, LDK, p.q + cr.first * DK, rs * DK, C, DK, cr.len);
    copy_rows_async<NT>(dO, LDV, p.d_o + cr.first * DV, rs * DV, C, DV, cr.len);
    copy_rows_async<NT>(dVp, LDV, p.dvp + (g0 * p.H + h) * C * DV, DV, C, DV, C);
    copy_rows_async<NT>(X, LDC, tx + C * C, C, C, C, C);
    cp_async_commit();
    copy_rows_async<NT>(dS, LDV, p.dcs + state, DV, DK, DV, DK);
    cp_async_commit();
    for (int i = threadIdx.x; i < C; i += NT) {
        a[i] = i < cr.len ? to_f(p.alpha[cr.first + i * rs]) : 0.0f;
        if (p.dbeta && i < cr.len) {   /* alpha's slopes while the loads are in flight */
            const AlphaSlopes s = alpha_slopes(p.beta, p.lambda, p.order, p.ref, cr.first + i * rs);
            slopes[2 * i] = s.db;
            slopes[2 * i + 1] = s.dl;
        }
    }
    cp_async_wait<2>();
    __syncthreads();   /* K, V, S, T and a are in */

    /* D = V - K S, this warp's rows, in place of V */
    {
        float acc[VT][4];
        strip_product<DV, DK / 16, false>(acc, K, LDK, S, LDV, warp, 0, DK / 16, false);
#pragma unroll
        for (int j = 0; j < VT; j++)
#pragma unroll
            for (int half = 0; half < 2; half++) {
                uint32_t *const v = (uint32_t *)(D + (row0 + g + 8 * half) * LDV + 8 * j + 2 * t);
                *v = pack_bf16(bf16_lo(*v) - acc[j][2 * half], bf16_hi(*v) - acc[j][2 * half + 1]);
            }
    }
    __syncthreads();   /* D is whole */

    /* V' = T D */
    {
        float acc[VT][4];
        strip_product<DV, C / 16, false>(acc, T, LDC, D, LDV, warp, 0, warp + 1, false);
        store_acc(Vp, LDV, row0, acc);
    }
    cp_async_wait<1>();
    __syncthreads();   /* V' is whole; Q, dO, dV' and X are in */

    /* dP = scale tril(dO V'^T): the tiles at or left of this warp's diagonal; its A fragments
     * (kk <= warp) stay in registers for dQ, and dP goes to shared memory for dP^T Q */
    uint32_t pa[C / 16][4];
    {
        float acc[CT][4];
        strip_product<C, DV / 16, true>(acc, dO, LDV, Vp, LDV, warp, 0, DV / 16, true);
        scale_acc(acc, p.scale);
#pragma unroll
        for (int kk = 0; kk < C / 16; kk++) acc_to_a(pa[kk], acc, kk);
        store_acc(dP, LDC, row0, acc);
    }

    /* dQ = scale dO S^T + dP K, stored from the accumulators */
    {
        float acc[KT][4];
        strip_product<DK, DV / 16, true>(acc, dO, LDV, S, LDV, warp, 0, DV / 16, false);
        scale_acc(acc, p.scale);
        mma_steps<C / 16>(acc, held_frags(pa), [&](uint32_t (&r)[4], int kk, int j) { ldsm_b_rows(r, K, LDK, kk, j); }, 0, warp + 1);
        store_acc(p.dq + cr.first * DK, rs * DK, row0, acc, cr.len);
    }

    /* dD = T^T dV' (stored as dv); dK starts as -dD S^T, -dD's A fragments from registers */
    float dk[KT][4];
    zero_acc(dk);
    {
        float acc[VT][4];
        zero_acc(acc);
        mma_steps<C / 16>(acc, [&](uint32_t (&f)[4], int kk) { ldsm_a_cols(f, T, LDC, row0, kk); },
                          [&](uint32_t (&r)[4], int kk, int j) { ldsm_b_rows(r, dVp, LDV, kk, j); }, warp);
        store_acc(p.dv_out + cr.first * DV, rs * DV, row0, acc, cr.len);
#pragma unroll
        for (int j = 0; j < VT; j++)
#pragma unroll
            for (int i = 0; i < 4; i++) acc[j][i] = -acc[j][i];
        mma_steps<DV / 16>(dk, [&](uint32_t (&f)[4], int kk) { acc_to_a(f, acc, kk); },
                           [&](uint32_t (&r)[4], int kk, int j) { ldsm_b_cols(r, S, LDV, kk, j); });
    }

    /* dT = dV' D^T; its column sums with X (rows i >= j) for da; dX = dT diag(a) as A fragments;
     * Y = dX X^T to shared memory */
    {
        float acc[CT][4];
        strip_product<C, DV / 16, true>(acc, dVp, LDV, D, LDV, warp, 0, DV / 16, false);
        da_column_sums(da_cols + warp * C, acc, row0, [&](int r, int c) { return __bfloat162float(X[r * LDC + c]); });
#pragma unroll
        for (int j = 0; j < CT; j++)
#pragma unroll
            for (int i = 0; i < 4; i++) acc[j][i] *= a[acc_col(j, i)];
        uint32_t xa[C / 16][4];
#pragma unroll
        for (int kk = 0; kk < C / 16; kk++) acc_to_a(xa[kk], acc, kk);
        float y[CT][4];
        zero_acc(y);
        mma_steps<C / 16>(y, held_frags(xa), [&](uint32_t (&r)[4], int kk, int j) { ldsm_b_cols(r, X, LDC, kk, j); }, 0, C / 16,
           [](int kk, int j) { return j >= 2 * kk; });
        store_acc(Y, LDC, row0, y);
    }
    cp_async_wait<0>();
    __syncthreads();   /* Y, dP and the column sums are whole; dS_out is in; T is free for M */

    /* dK += dP^T Q (dP^T's rows here are dP's columns, zero above its diagonal: kk >= warp) */
    mma_steps<C / 16>(dk, [&](uint32_t (&f)[4], int kk) { ldsm_a_cols(f, dP, LDC, row0, kk); },
                      [&](uint32_t (&r)[4], int kk, int j) { ldsm_b_rows(r, Q, LDK, kk, j); }, warp, C / 16);
    /* dK += V' dS_out^T with V' in float, as two bfloat16 products (hi = bf16(V'), lo = bf16(V' - hi)):
     * bfloat16 V' was, with dS_out, most of dK's error past its own rounding for tiny keys. This
     * warp's rows of V' again from T D, bit for bit as before (T is still whole here: each warp
     * overwrites only its own rows of it with M, below) */
    {
        float acc[VT][4];
        strip_product<DV, C / 16, false>(acc, T, LDC, D, LDV, warp, 0, warp + 1, false);
#pragma unroll
        for (int kk = 0; kk < DV / 16; kk++) {
            uint32_t hi[4], lo[4];
            acc_to_a(hi, acc, kk);
#pragma unroll
            for (int i = 0; i < 4; i++) {   /* hi[i] holds acc[2 kk + i / 2][2 (i % 2)], [2 (i % 2) + 1] */
                const float *x = acc[2 * kk + i / 2] + 2 * (i % 2);
                lo[i] = pack_bf16(x[0] - bf16_lo(hi[i]), x[1] - bf16_hi(hi[i]));
            }
#pragma unroll
            for (int j = 0; j < KT; j += 2) {
                uint32_t r[4];
                ldsm_b_cols(r, dS, LDV, kk, j);
                mma_bf16(dk[j], lo, r[0], r[1]);
                mma_bf16(dk[j + 1], lo, r[2], r[3]);
                mma_bf16(dk[j], hi, r[0], r[1]);
                mma_bf16(dk[j + 1], hi, r[2], r[3]);
            }
        }
    }

    /* -dL = X^T Y and G = K K^T (the tiles left of this warp's diagonal); da's row sums; M */
    float chain[2] = {0.0f, 0.0f};   /* with the chain: rows row0 + g, + 8's factor of dk += s k */
    {
        float ndl[CT][4], gk[CT][4];
        zero_acc(ndl);
        mma_steps<C / 16>(ndl, [&](uint32_t (&f)[4], int kk) { ldsm_a_cols(f, X, LDC, row0, kk); },
                          [&](uint32_t (&r)[4], int kk, int j) { ldsm_b_rows(r, Y, LDC, kk, j); }, warp);
        zero_acc(gk);   /* not strip_product: its tril mask, needless here, took this kernel to 255 registers at d = 128 */
        mma_steps<DK / 16>(gk, [&](uint32_t (&f)[4], int kk) { ldsm_a_rows(f, K, LDK, row0, kk); },
                           [&](uint32_t (&r)[4], int kk, int j) { ldsm_b_cols(r, K, LDK, kk, j); }, 0, DK / 16,
                           [=](int, int j) { return j <= 2 * warp; });   /* the tile pairs at or left of this warp's diagonal */
        float rsum[2];
        da_rows_and_m(rsum, ndl, gk, a, row0);
        store_acc(M, LDC, row0, ndl);
        finish_da<bf16, C>(p, cr, da_cols, NW, slopes, row0, rsum, chain);
    }
    __syncthreads();   /* M is whole */

    /* dK += (M + M^T) K: M's rows (kk <= warp) and M^T's (kk >= warp), one of each pair zero */
    mma_steps<C / 16>(dk, [&](uint32_t (&f)[4], int kk) {
        uint32_t lo[4] = {0u, 0u, 0u, 0u}, up[4] = {0u, 0u, 0u, 0u};
        if (kk <= warp) ldsm_a_rows(lo, M, LDC, row0, kk);
        if (kk >= warp) ldsm_a_cols(up, M, LDC, row0, kk);
#pragma unroll
        for (int i = 0; i < 4; i++) f[i] = lo[i] | up[i];
    }, [&](uint32_t (&r)[4], int kk, int j) { ldsm_b_rows(r, K, LDK, kk, j); });
    if (p.dbeta) {   /* + 2 dlambda k */
#pragma unroll
        for (int j = 0; j < KT; j++)
#pragma unroll
            for (int half = 0; half < 2; half++) {
                const uint32_t kv = *(const uint32_t *)(K + (row0 + g + 8 * half) * LDK + 8 * j + 2 * t);
                dk[j][2 * half] += chain[half] * bf16_lo(kv);
                dk[j][2 * half + 1] += chain[half] * bf16_hi(kv);
            }
    }
    store_acc(p.dk_out + cr.first * DK, rs * DK, row0, dk, cr.len);
}

} // namespace
#endif

/* delta_rule_chunk_bwd_mma_f32.cuh: bwd_chunk's outputs (dq, dk, dv, and dalpha or the chain
 * through alpha) for float32 inputs in the register style, the float32 form of
 * bwd_chunk_mma_kernel (delta_rule_chunk_bwd_mma.cuh, which lists the products and their maths):
 * every product three TF32 mma.sync products (mma_fragments_tf32.cuh), every intermediate float,
 * where bwd_chunk_kernel<float> makes the same products with WMMA through shared memory.
 *
 * Float tiles take twice bfloat16's room: at C = 32 and d = 128 one block's inputs fill a
 * multiprocessor, and bwd_chunk_mma_kernel's layout (a warp per 16-row strip) would give it two
 * warps, leaving two of its four schedulers and their tensor cores idle. So each strip has two
 * warps, and they share its products by role, each product still made over the strip's 16 rows
 * by one warp (its accumulators in registers, passed on as A fragments):
 *   both, half of the columns each:    D = V - K S,  V' = T D                       (stored)
 *   the dq warp (role 0):              dP = scale tril(dO V'^T) (stored, and held for dQ),
 *                                      dQ = scale dO S^T + dP K
 *   the dk warp (role 1):              dD = T^T dV' (= dv),  dK = -dD S^T,
 *                                      dT = dV' D^T, its column sums for da, dX = dT diag(a),
 *                                      Y = dX X^T (stored)
 *   then dS_out takes S's room; the dk warp: -dL = X^T Y, G = K K^T, da's row sums, dalpha or
 *                                      the chain, M = strict_lower(diag(a) dL) (stored over T)
 *   both, half of dK's columns each:   dK += dP^T Q + V' dS_out^T + (M + M^T) K
 * The dq warp hands its half of dK over through shared memory; the dk warp adds it and the
 * chain's 2 dlambda k and stores dK. Six block barriers. Per warp at C = 32, d = 128 the two
 * roles' products are within 10 % of each other (k16 x n8 steps: 64 + 8-16 shared, then
 * 160-192 against 182-198, then 88-96 against 120-124).
 * T and X are block lower triangular (16 x 16 blocks), so the products with them skip those
 * k16 steps, as in bwd_chunk_mma_kernel.
 *
 * Block: 2 C / 16 warps (warp w: role w / (C / 16), strip w % (C / 16)), grid (chunk, head).
 * C, DK, DV multiples of 16, DK and DV up to 128. */
#ifndef EFLA_CUDA_DELTA_RULE_CHUNK_BWD_MMA_F32_CUH
#define EFLA_CUDA_DELTA_RULE_CHUNK_BWD_MMA_F32_CUH
#include "delta_rule_chunk_bwd_mma.cuh"    /* da_column_sums, da_rows_and_m, finish_da */
#include "delta_rule_chunk_scan_mma.cuh"   /* copy_rows_async */
#include "mma_fragments_tf32.cuh"

namespace {

/* Row lengths (floats): tiles read mostly along their rows get 8 (mod 32) more, those read mostly
 * down their columns 4 (mma_fragments_tf32.cuh) */
template <int C, int DK, int DV> struct BwdChunkF32Layout {
    static constexpr int LK = DK + 4,   /* K: B's rows in dQ and (M + M^T) K */
        LQ = DK + 4,                    /* Q: B's rows in dP^T Q */
        LD = DV + 8,                    /* D: B^T in dT, B's rows in V' (a third as many loads) */
        LO = DV + 8,                    /* dO: A's rows */
        LDV = DV + 4,                   /* dV': B's rows in dD */
        LV = DV + 8,                    /* V': B^T in dP, A's rows in V' dS_out^T */
        LS = DV + 8,                    /* S, dS_out: B^T in dQ, -dD S^T and V' dS_out^T */
        LC = C + 4,                     /* T (M later), X, dP, Y */
        LX = DK / 2 + 8;                /* the dq warps' half of dK */
    /* K, Q; D (V first), dO, dV', V'; S (dS_out later); T, X, dP, Y; dK's half; a; the dk warps'
     * column sums of da */
    static constexpr size_t floats = (size_t)C * (LK + LQ + LD + LO + LDV + LV) + (size_t)DK * LS + (size_t)4 * C * LC +
                                     (size_t)C * LX + C + (size_t)(C / 16) * C;
};
/* ... and alpha's two slopes a row (doubles) */
template <int C, int DK, int DV> constexpr size_t bwd_chunk_mma_f32_smem() {
    return sizeof(float) * BwdChunkF32Layout<C, DK, DV>::floats + (size_t)C * 16;
}
template <int C> constexpr int bwd_chunk_mma_f32_threads() { return 64 * (C / 16); }

/* tiles J0 .. J0 + N - 1 of accumulators acc, as an array of their own (a product into some of
 * another's columns) */
template <int J0, int N, int TILES> __device__ __forceinline__ auto acc_tiles(float (&acc)[TILES][4]) -> float (&)[N][4] {
    static_assert(J0 + N <= TILES, "acc_tiles: past the last tile");
    return *reinterpret_cast<float(*)[N][4]>(acc + J0);
}

template <int C, int DK, int DV>
__global__ void __launch_bounds__(bwd_chunk_mma_f32_threads<C>()) bwd_chunk_mma_f32_kernel(ArgsT<float> p) {
    static_assert(C % 16 == 0 && DK % 16 == 0 && DV % 16 == 0 && DK <= 128 && DV <= 128,
                  "bwd_chunk_mma_f32_kernel: C, DK, DV multiples of 16, DK and DV up to 128");
    using L = BwdChunkF32Layout<C, DK, DV>;
    constexpr int NT = bwd_chunk_mma_f32_threads<C>(), NS = C / 16;   /* threads, strips */
    constexpr int KT = DK / 8, VT = DV / 8, CT = C / 8, KH = KT / 2, VH = VT / 2;   /* n8 tiles of a row, of half a row */
    EFLA_DYNAMIC_SMEM(smem);
    float *const K = (float *)smem, *const Q = K + C * L::LK, *const D = Q + C * L::LQ, *const dO = D + C * L::LD,
                 *const dVp = dO + C * L::LO, *const Vp = dVp + C * L::LDV, *const S = Vp + C * L::LV, *const T = S + DK * L::LS,
                 *const X = T + C * L::LC, *const dP = X + C * L::LC, *const Y = dP + C * L::LC, *const dKh = Y + C * L::LC,
                 *const a = dKh + C * L::LX, *const da_cols = a + C;   /* da_cols[s][j]: strip s's column sums */
    float *const M = T;   /* T's last readers (V', dD) are done at the barrier before M */
    double *const slopes = (double *)(da_cols + NS * C);   /* per row: dalpha/dbeta, dalpha/dlambda */
    EFLA_SMEM_FITS((size_t)((char *)(slopes + 2 * C) - smem), (bwd_chunk_mma_f32_smem<C, DK, DV>()));
    const int64_t g0 = blockIdx.x, h = blockIdx.y, rs = p.H;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const int role = warp / NS, strip = warp % NS, row0 = 16 * strip;
    const ChunkRows cr = chunk_rows(p, g0, h, C);
    const int64_t state = (g0 * p.H + h) * DK * DV;

    /* loads in two groups: what D and V' need, then what phase 2 needs; dS_out after phase 2 */
    const float *tx = p.tx + (g0 * p.H + h) * 2 * C * C;
    copy_rows_async<NT>(K, L::LK, p.k + cr.first * DK, rs * DK, C, DK, cr.len);
    copy_rows_async<NT>(D, L::LD, p.v + cr.first * DV, rs * DV, C, DV, cr.len);
    copy_rows_async<NT>(S, L::LS, p.states + state, DV, DK, DV, DK);
    copy_rows_async<NT>(T, L::LC, tx, C, C, C, C);
    cp_async_commit();
    copy_rows_async<NT>(Q, L::LQ, p.q + cr.first * DK, rs * DK, C, DK, cr.len);
    copy_rows_async<NT>(dO, L::LO, p.d_o + cr.first * DV, rs * DV, C, DV, cr.len);
    copy_rows_async<NT>(dVp, L::LDV, p.dvp + (g0 * p.H + h) * C * DV, DV, C, DV, C);
    copy_rows_async<NT>(X, L::LC, tx + C * C, C, C, C, C);
    cp_async_commit();
    for (int i = threadIdx.x; i < C; i += NT) {
        a[i] = i < cr.len ? p.alpha[cr.first + i * rs] : 0.0f;
        if (p.dbeta && i < cr.len) {   /* alpha's slopes while the loads are in flight */
            const AlphaSlopes s = alpha_slopes(p.beta, p.lambda, p.order, p.ref, cr.first + i * rs);
            slopes[2 * i] = s.db;
            slopes[2 * i + 1] = s.dl;
        }
    }
    cp_async_wait<1>();
    __syncthreads();   /* K, V, S, T and a are in */

    /* D = V - K S in place of V: this warp's strip, half of the columns by role */
    const int vh0 = role * VH;   /* this warp's first n8 tile of D's and V''s columns */
    {
        float acc[VH][4];
        zero_acc(acc);
        mma_steps_f32<DK / 16>(acc, [&](float (&f)[8], int kk) { lds_a_rows(f, K, L::LK, row0, kk); },
                               [&](float (&r)[4], int kk, int j) { lds_b_rows(r, S, L::LS, kk, vh0 + j); });
#pragma unroll
        for (int j = 0; j < VH; j++)
#pragma unroll
            for (int half = 0; half < 2; half++) {
                float2 *const v = (float2 *)(D + (row0 + g + 8 * half) * L::LD + 8 * (vh0 + j) + 2 * t);
                *v = make_float2(v->x - acc[j][2 * half], v->y - acc[j][2 * half + 1]);
            }
    }
    cp_async_wait<0>();
    __syncthreads();   /* D is whole; Q, dO, dV' and X are in */

    /* V' = T D, the same half */
    {
        float acc[VH][4];
        zero_acc(acc);
        mma_steps_f32<C / 16>(acc, [&](float (&f)[8], int kk) { lds_a_rows(f, T, L::LC, row0, kk); },
                              [&](float (&r)[4], int kk, int j) { lds_b_rows(r, D, L::LD, kk, vh0 + j); }, 0, strip + 1);
        store_acc(Vp + 8 * vh0, L::LV, row0, acc);
    }
    __syncthreads();   /* V' is whole */

    float dk[KT][4];    /* the dk warp's: dK of its strip, every column */
    float dkh[KH][4];   /* the dq warp's: its half of dK (columns 0 .. DK / 2 - 1) */
    if (role == 0) {
        /* dP = scale tril(dO V'^T) (the n8 tiles that start at or before the strip's last row):
         * its A fragments stay in registers for dQ; dP goes to shared memory for dP^T Q */
        auto dO_rows = [&](float (&f)[8], int kk) { lds_a_rows(f, dO, L::LO, row0, kk); };
        float pa[C / 16][8];
        {
            float acc[CT][4];
            zero_acc(acc);
            mma_steps_f32<DV / 16>(acc, dO_rows, [&](float (&r)[4], int kk, int j) { lds_b_cols(r, Vp, L::LV, kk, j); }, 0, DV / 16,
                                   [=](int, int j) { return 8 * j < row0 + 16; });
#pragma unroll
            for (int j = 0; j < CT; j++)
#pragma unroll
                for (int i = 0; i < 4; i++) acc[j][i] = acc_col(j, i) > acc_row(row0, i) ? 0.0f : p.scale * acc[j][i];
#pragma unroll
            for (int kk = 0; kk < C / 16; kk++) acc_to_f32_a(pa[kk], acc, kk);
            store_acc(dP, L::LC, row0, acc);
        }
        /* dQ = scale dO S^T + dP K (the scale on the first product's sums, in float) */
        float acc[KT][4];
        zero_acc(acc);
        mma_steps_f32<DV / 16>(acc, dO_rows, [&](float (&r)[4], int kk, int j) { lds_b_cols(r, S, L::LS, kk, j); });
        scale_acc(acc, p.scale);
        mma_steps_f32<C / 16>(acc, held_frags_f32(pa), [&](float (&r)[4], int kk, int j) { lds_b_rows(r, K, L::LK, kk, j); }, 0,
                              strip + 1);
        store_acc(p.dq + cr.first * DK, rs * DK, row0, acc, cr.len);
    } else {
        /* dD = T^T dV' (stored as dv; T^T's rows here are T's columns: k16 steps from the strip's),
         * then dK = -dD S^T with -dD's A fragments from the accumulators */
        {
            float acc[VT][4];
            zero_acc(acc);
            mma_steps_f32<C / 16>(acc, [&](float (&f)[8], int kk) { lds_a_cols(f, T, L::LC, row0, kk); },
                                  [&](float (&r)[4], int kk, int j) { lds_b_rows(r, dVp, L::LDV, kk, j); }, strip);
            store_acc(p.dv_out + cr.first * DV, rs * DV, row0, acc, cr.len);
            zero_acc(dk);
            mma_steps_f32<DV / 16>(dk,
                                   [&](float (&f)[8], int kk) {
                                       acc_to_f32_a(f, acc, kk);
#pragma unroll
                                       for (int i = 0; i < 8; i++) f[i] = -f[i];
                                   },
                                   [&](float (&r)[4], int kk, int j) { lds_b_cols(r, S, L::LS, kk, j); });
        }
        /* dT = dV' D^T; its column sums with X (rows i >= j) for da; dX = dT diag(a) as A
         * fragments; Y = dX X^T to shared memory (X^T's n8 tiles j < 2 kk are zero) */
        float acc[CT][4];
        zero_acc(acc);
        mma_steps_f32<DV / 16>(acc, [&](float (&f)[8], int kk) { lds_a_rows(f, dVp, L::LDV, row0, kk); },
                               [&](float (&r)[4], int kk, int j) { lds_b_cols(r, D, L::LD, kk, j); });
        da_column_sums(da_cols + strip * C, acc, row0, [&](int r, int c) { return X[r * L::LC + c]; });
#pragma unroll
        for (int j = 0; j < CT; j++)
#pragma unroll
            for (int i = 0; i < 4; i++) acc[j][i] *= a[acc_col(j, i)];
        float xa[C / 16][8];
#pragma unroll
        for (int kk = 0; kk < C / 16; kk++) acc_to_f32_a(xa[kk], acc, kk);
        float y[CT][4];
        zero_acc(y);
        mma_steps_f32<C / 16>(y, held_frags_f32(xa), [&](float (&r)[4], int kk, int j) { lds_b_cols(r, X, L::LC, kk, j); }, 0, C / 16,
                              [](int kk, int j) { return j >= 2 * kk; });
        store_acc(Y, L::LC, row0, y);
    }
    __syncthreads();   /* dP, Y and the column sums are whole; S's readers are done */
    copy_rows_async<NT>(S, L::LS, p.dcs + state, DV, DK, DV, DK);   /* dS_out, in S's room */
    cp_async_commit();

    /* dK's products, each role its half of the columns (n8 tiles from j0): dP^T Q (dP^T's rows
     * here are dP's columns, zero above its diagonal: k16 steps from the strip's), then, with
     * dS_out and M in, V' dS_out^T and (M + M^T) K (M's rows for k16 steps up to the strip's,
     * M^T's from it: one of each pair is zero, so their sum is exact) */
    auto dk_dp_q = [&](float (&acc)[KH][4], int j0) {
        mma_steps_f32<C / 16>(acc, [&](float (&f)[8], int kk) { lds_a_cols(f, dP, L::LC, row0, kk); },
                              [&](float (&r)[4], int kk, int j) { lds_b_rows(r, Q, L::LQ, kk, j0 + j); }, strip);
    };
    auto dk_ds_m = [&](float (&acc)[KH][4], int j0) {
        mma_steps_f32<DV / 16>(acc, [&](float (&f)[8], int kk) { lds_a_rows(f, Vp, L::LV, row0, kk); },
                               [&](float (&r)[4], int kk, int j) { lds_b_cols(r, S, L::LS, kk, j0 + j); });
        mma_steps_f32<C / 16>(acc,
                              [&](float (&f)[8], int kk) {
                                  float lo[8] = {}, up[8] = {};
                                  if (kk <= strip) lds_a_rows(lo, M, L::LC, row0, kk);
                                  if (kk >= strip) lds_a_cols(up, M, L::LC, row0, kk);
#pragma unroll
                                  for (int i = 0; i < 8; i++) f[i] = lo[i] + up[i];
                              },
                              [&](float (&r)[4], int kk, int j) { lds_b_rows(r, K, L::LK, kk, j0 + j); });
    };

    float chain[2] = {0.0f, 0.0f};   /* with the chain: rows row0 + g, + 8's factor of dk += s k */
    if (role == 0) {
        zero_acc(dkh);
        dk_dp_q(dkh, 0);
    } else {
        /* -dL = X^T Y and G = K K^T (the n8 tiles that start at or before the strip's last row);
         * da's row sums; M */
        float ndl[CT][4], gk[CT][4];
        zero_acc(ndl);
        mma_steps_f32<C / 16>(ndl, [&](float (&f)[8], int kk) { lds_a_cols(f, X, L::LC, row0, kk); },
                              [&](float (&r)[4], int kk, int j) { lds_b_rows(r, Y, L::LC, kk, j); }, strip);
        zero_acc(gk);
        mma_steps_f32<DK / 16>(gk, [&](float (&f)[8], int kk) { lds_a_rows(f, K, L::LK, row0, kk); },
                               [&](float (&r)[4], int kk, int j) { lds_b_cols(r, K, L::LK, kk, j); }, 0, DK / 16,
                               [=](int, int j) { return 8 * j < row0 + 16; });
        float rsum[2];
        da_rows_and_m(rsum, ndl, gk, a, row0);
        store_acc(M, L::LC, row0, ndl);
        finish_da<float, C>(p, cr, da_cols, NS, slopes, row0, rsum, chain);
        dk_dp_q(acc_tiles<KH, KH>(dk), KH);
    }
    cp_async_wait<0>();
    __syncthreads();   /* dS_out and M are whole */
    if (role == 0) {
        dk_ds_m(dkh, 0);
        store_acc(dKh, L::LX, row0, dkh);
    } else {
        dk_ds_m(acc_tiles<KH, KH>(dk), KH);
    }
    __syncthreads();   /* the dq warps' halves of dK are in */
    if (role == 1) {   /* dK = the two halves (+ 2 dlambda k with the chain), stored */
#pragma unroll
        for (int j = 0; j < KT; j++)
#pragma unroll
            for (int half = 0; half < 2; half++) {
                const int r = row0 + g + 8 * half, c = 8 * j + 2 * t;
                if (j < KH) {
                    const float2 o = *(const float2 *)(dKh + r * L::LX + c);
                    dk[j][2 * half] += o.x;
                    dk[j][2 * half + 1] += o.y;
                }
                if (p.dbeta) {
                    const float2 k2 = *(const float2 *)(K + r * L::LK + c);
                    dk[j][2 * half] += chain[half] * k2.x;
                    dk[j][2 * half + 1] += chain[half] * k2.y;
                }
            }
        store_acc(p.dk_out + cr.first * DK, rs * DK, row0, dk, cr.len);
    }
}

} // namespace
#endif

/* delta_rule_chunk_bwd_scan_mma_f32.cuh: the backward scan for float32 inputs with the state
 * gradient in registers, the float32 form of bwd_scan_mma_kernel (delta_rule_chunk_scan_mma.cuh):
 * the same outputs (dV' to dvp, the gradient leaving every chunk to dcs, dS0 to ds0) from Q, K,
 * prep's W, dO and prep's tril(Q K^T) (p.pq, required: the states were saved), walking the chunks
 * backwards; each product three TF32 mma.sync products (tf32_split, mma_3xtf32 in
 * mma_fragments.cuh), where bwd_scan_kernel<float> makes them with WMMA through shared memory.
 *
 * Each warp owns 16 columns of dS and holds them, transposed, as m16n8 accumulators:
 *   dV'^T = scale dO^T P + dS_out^T K^T     (A: dO^T from dO's columns, then dS^T; B: P's rows, K's rows)
 *   dS^T += scale dO^T Q - dV'^T W          (A: the same dO^T fragments, then dV'^T; B: Q's and W's rows)
 * with P = tril(Q K^T). The k index of every product runs in state_scan_mma_f32_kernel's permuted
 * order (slot t = column 2t, slot t + 4 = column 2t + 1 of each 8-block), so the accumulator tiles
 * of dS^T and dV'^T are A fragments as they stand (acc_to_tf32_a), dO^T's fragment is
 * dO[8 kk + 2t (+1)][16 w + g (+8)], and B's is rows 2t and 2t + 1 of the 8-row block.
 * Everything stays in float: the scale is applied to the dO products' sums (dO is not rounded
 * again) and dV' is not rounded before the second product; every k8 step's three products are
 * summed in fresh accumulators and added in float (mma_3xtf32), as the WMMA float32 path's are,
 * and each n8 tile of each of dS's two updates (dO^T Q, dV'^T W) is summed apart and added to dS
 * once. P's tiles above the diagonal are zero and skipped.
 * Only Q, K, W, the dO columns and P pass through shared memory (cp.async, the next chunk's while
 * this one computes; one block barrier a chunk): 126 KB at C = 32, d = 128, BV = 64, 172 KB at
 * C = 64, d = 64.
 *
 * KS = 2 splits dS's rows over two warps a 16-column slice, as state_scan_mma_f32_kernel's KS does
 * (opt-in, untimed): each makes dS^T K^T's partial sum over its rows and, for alternate n8 tiles,
 * the dO^T P term; after one more block barrier a chunk both add the partner's (add_partner_partial)
 * and hold the same dV', and each updates its half of dS.
 *
 * On by default where prep made tril(Q K^T) (run 14, H100: 22-43 % faster than bwd_scan_kernel<float>).
 * Block: KS x BV / 16 warps for BV columns of dS; grid (sequence x head, dv / BV). C, DK multiples
 * of 8 (DK of 16 with KS = 2). */
#ifndef EFLA_CUDA_DELTA_RULE_CHUNK_BWD_SCAN_MMA_F32_CUH
#define EFLA_CUDA_DELTA_RULE_CHUNK_BWD_SCAN_MMA_F32_CUH
#include "delta_rule_chunk_scan_mma_f32.cuh"   /* add_state_product; load/store_transposed, add_partner_partial */

namespace {

/* One buffer set, float: K (row length DK + 8: a half-warp's 8-byte loads of 4 rows fall on
 * distinct banks), Q and W (DK + 4: the scalar loads of rows 2t, 2t + 1 down a column do), the
 * dO columns (BV + 4) and P (C + 4), read down columns alike; two sets */
template <int C, int DK, int BV> constexpr size_t bwd_scan_f32_set_bytes() {
    return sizeof(float) * ((size_t)C * (DK + 8) + 2 * (size_t)C * (DK + 4) + (size_t)C * (BV + 4) + (size_t)C * (C + 4));
}
/* ... and with KS = 2 each warp's posted partial dV'^T (16 x C floats) */
template <int C, int DK, int BV, int KS = 1> constexpr size_t bwd_scan_mma_f32_smem() {
    return 2 * bwd_scan_f32_set_bytes<C, DK, BV>() + (KS > 1 ? sizeof(float) * KS * BV * C : 0);
}

/* KS = 2 asks for one block a multiprocessor at least (its 142 KB at d = 128 allow no more): without
 * it ptxas held the 256-thread block to 128 registers and spilled; KS = 1 (0: no minimum) is as timed */
template <int C, int DK, int BV, int KS = 1>
__global__ void __launch_bounds__(scan_mma_threads<BV, KS>(), KS > 1 ? 1 : 0) bwd_scan_mma_f32_kernel(ArgsT<float> p) {
    static_assert(C % 8 == 0 && DK % (8 * KS) == 0 && BV % 16 == 0 && (KS == 1 || KS == 2),
                  "bwd_scan_mma_f32_kernel: C multiple of 8, DK of 8 KS, BV of 16; KS 1 or 2");
    constexpr int NT = scan_mma_threads<BV, KS>(), LDK = DK + 8, LDQ = DK + 4, LDO = BV + 4, LDP = C + 4;
    constexpr int KT = DK / 8 / KS, CT = C / 8;   /* n8 tiles of this warp's rows of dS, of dV''s rows */
    constexpr int SLICES = BV / 16;
    constexpr size_t SET = bwd_scan_f32_set_bytes<C, DK, BV>();
    EFLA_DYNAMIC_SMEM(smem);
    EFLA_SMEM_FITS(2 * SET + (KS > 1 ? sizeof(float) * NT * CT * 4 : 0), (bwd_scan_mma_f32_smem<C, DK, BV, KS>()));
    const int64_t n = blockIdx.x / p.H, h = blockIdx.x % p.H, dv = p.dv;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const int slice = KS > 1 ? warp % SLICES : warp, part = KS > 1 ? warp / SLICES : 0;   /* 16 columns; which of their KS row parts */
    const int jr = part * KT;   /* this warp's first n8 tile of dS's rows */
    const int64_t j0 = (int64_t)blockIdx.y * BV, col0 = j0 + 16 * slice;   /* the block's, this warp's first column */
    const int64_t row0 = 8 * jr;   /* this warp's first row of dS */
    auto Kb = [&](int b) { return (float *)(smem + b * SET); };
    auto Qb = [&](int b) { return (float *)(smem + b * SET + sizeof(float) * C * LDK); };
    auto Wb = [&](int b) { return (float *)(smem + b * SET + sizeof(float) * C * (LDK + LDQ)); };
    auto dOb = [&](int b) { return (float *)(smem + b * SET + sizeof(float) * C * (LDK + 2 * LDQ)); };
    auto Pb = [&](int b) { return (float *)(smem + b * SET + sizeof(float) * C * (LDK + 2 * LDQ + LDO)); };
    const int64_t first = p.seq[3 * n + 2], len = p.seq[3 * n + 1];
    const int64_t nchunks = (len + C - 1) / C;

    auto fetch = [&](int64_t c) {
        const int b = (int)(c & 1);
        fetch_bwd_scan_chunk<NT, C, DK, BV>(p, n, h, first, len, j0, c, Qb(b), LDQ, Kb(b), LDK, Wb(b), LDQ, dOb(b), LDO, Pb(b), LDP);
    };

    /* dO^T's A fragments, split: k-step kk is chunk rows 8 kk .., slot t row 8 kk + 2t, slot t + 4
     * row 8 kk + 2t + 1, so a lane reads dO[8 kk + 2t (+1)][16 w + g (+8)] */
    auto dO_frags = [&](uint32_t (&oh)[CT][4], uint32_t (&ol)[CT][4], int b) {
        const float *dO = dOb(b) + 16 * slice + g;
#pragma unroll
        for (int kk = 0; kk < CT; kk++) {
            const float *r0 = dO + (8 * kk + 2 * t) * LDO, *r1 = r0 + LDO;
            tf32_split(r0[0], oh[kk][0], ol[kk][0]);
            tf32_split(r0[8], oh[kk][1], ol[kk][1]);
            tf32_split(r1[0], oh[kk][2], ol[kk][2]);
            tf32_split(r1[8], oh[kk][3], ol[kk][3]);
        }
    };

    if (nchunks > 0) fetch(nchunks - 1);

    float ds[KT][4];   /* dS^T: rows = this warp's 16 columns, n8 tile j = rows 8 (jr + j) .. of dS */
    load_transposed(ds, p.dsf ? p.dsf + (n * p.H + h) * DK * dv + row0 * dv + col0 : nullptr, dv);

    /* The products run in four phases with a __syncwarp between them: without it ptxas moved the
     * next phase's shared-memory loads up into the current one, and C = 64 spilled. */
    for (int64_t c = nchunks - 1; c >= 0; c--) {
        const int b = (int)(c & 1);
        const int64_t gc = first + c;
        cp_async_wait_all();
        __syncthreads();   /* chunk c's tiles are in; every warp is done with chunk c + 1's set */
        if (c > 0) fetch(c - 1);
        store_transposed(p.dcs + (gc * p.H + h) * DK * dv + row0 * dv + col0, dv, ds);   /* dS_out, leaving chunk c */

        /* dV'^T = dS_out^T K^T + scale dO^T P. First dS^T K^T: k-step j is dS's tile j; B = K^T,
         * rows 2t, 2t + 1 of the block are K[8 jn + g][8 j + 2t, + 1] (one 8-byte load) */
        const float *K = Kb(b);
        float dvt[CT][4];
        zero_acc(dvt);
        add_state_product(dvt, ds, K, LDK, jr);
        /* then + scale dO^T P, each n8 tile in fresh accumulators, scaled in float and added once:
         * B is P[8 kk + 2t, + 1][8 jn + g] (P's tile kk, jn is zero for kk < jn); with KS = 2 each
         * warp of a slice adds alternate tiles */
        __syncwarp();
        uint32_t oh[CT][4], ol[CT][4];
        dO_frags(oh, ol, b);
        const float *P = Pb(b);
#pragma unroll
        for (int jn = 0; jn < CT; jn++) {
            if (KS > 1 && jn % KS != part) continue;
            float po[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
            for (int kk = jn; kk < CT; kk++) {
                mma_3xtf32(po, oh[kk], ol[kk], P[(8 * kk + 2 * t) * LDP + 8 * jn + g], P[(8 * kk + 2 * t + 1) * LDP + 8 * jn + g]);
            }
#pragma unroll
            for (int i = 0; i < 4; i++) dvt[jn][i] += p.scale * po[i];
        }
        if constexpr (KS == 2) add_partner_partial<SLICES>(dvt, (float *)(smem + 2 * SET), warp, part);
        if (part == 0) store_transposed(p.dvp + (gc * p.H + h) * C * dv + col0, dv, dvt);

        /* dS^T += scale dO^T Q - dV'^T W: k-step kk is chunk rows 8 kk .., B's rows Q[8 kk + 2t, + 1]
         * and W's alike at columns 8 j + g; each n8 tile of each product in fresh accumulators, added
         * to dS once. dV'^T W first and dO^T's fragments made again after it, so that dV' and dO^T's
         * fragments are never held together (at C = 64 that spilled) */
        __syncwarp();
        uint32_t vh[CT][4], vl[CT][4];
#pragma unroll
        for (int kk = 0; kk < CT; kk++) acc_to_tf32_a(vh[kk], vl[kk], dvt[kk]);
        /* dS^T += mult A B, B = rows 8 kk + 2t, + 1 of a chunk tile (Q or W, row length LDQ) at
         * columns 8 j + g, one n8 tile j at a time in fresh accumulators */
        auto add_to_ds = [&](const uint32_t (&ah)[CT][4], const uint32_t (&al)[CT][4], const float *B, float mult) {
            B += 2 * t * LDQ + g + 8 * jr;
#pragma unroll
            for (int j = 0; j < KT; j++) {
                float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
                for (int kk = 0; kk < CT; kk++) mma_3xtf32(acc, ah[kk], al[kk], B[8 * kk * LDQ + 8 * j], B[(8 * kk + 1) * LDQ + 8 * j]);
#pragma unroll
                for (int i = 0; i < 4; i++) ds[j][i] += mult * acc[i];
            }
        };
        add_to_ds(vh, vl, Wb(b), -1.0f);
        __syncwarp();
        dO_frags(oh, ol, b);
        add_to_ds(oh, ol, Qb(b), p.scale);
    }
    if (p.ds0) store_transposed(p.ds0 + (n * p.H + h) * DK * dv + row0 * dv + col0, dv, ds);
}

} // namespace
#endif

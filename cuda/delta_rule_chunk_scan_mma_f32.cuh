/* delta_rule_chunk_scan_mma_f32.cuh: the forward's state recurrence for float32 inputs with the
 * state in registers, the float32 form of state_scan_mma_kernel (delta_rule_chunk_scan_mma.cuh):
 * the same outputs (V' to vp, the entering state of every chunk to cs, S_final to sf) from
 * prep's W and U, each product three TF32 mma.sync products (tf32_split, mma_3xtf32 in
 * mma_fragments.cuh), where state_scan_kernel<float> makes them with WMMA through shared memory.
 *
 * Each warp owns 16 columns of the state and holds them, transposed, as m16n8 accumulators:
 *   V'^T = U^T - S^T W^T     (A: S^T from registers; B: W's rows)
 *   S^T  = S^T + V'^T K      (A: V'^T, the accumulators of the first product; B: K's rows)
 * m16n8k8's A fragment holds columns t and t + 4 of its 8, the accumulators columns 2t and
 * 2t + 1. A product's k index may be permuted if A's and B's are permuted alike: reading k slot t
 * as column 2t and slot t + 4 as column 2t + 1 of each 8-column block, an accumulator tile
 * (c0, c1 = C[g][2t, 2t+1], c2, c3 = C[g+8][2t, 2t+1]) is A's fragment {c0, c2, c1, c3} as it
 * stands, and B's fragment is rows 2t and 2t + 1 of the block: b0 = B[2t][g], b1 = B[2t+1][g].
 * The state and V' stay in float; each product is summed in fresh accumulators and then added
 * (subtracted) once, as the WMMA float32 path does, so the state takes one rounding a chunk.
 *
 * KS = 2 splits each product's k over two warps a 16-column slice (opt-in, untimed): each holds
 * half of the slice's state rows (S^T's n8 tiles), makes V'^T's partial sum over its half of W,
 * posts it to shared memory, and after one more block barrier a chunk adds its partner's (a + b
 * and b + a are the same float, so both have the same V'), then updates its half of the state. A
 * chunk's sequential work per warp halves, and a block has twice the warps: at d = 128 the scan
 * runs one block a multiprocessor (B x H x dv / 64 = 128 blocks at the issue's d = 128 shapes) and
 * was measured at about 8 us a chunk (run 14: 2.03 ms for 256 chunks at B=4 T=8192) where its
 * 384 m16n8k8 products a warp would issue in about 1.6 us (an estimate), so latency, not
 * throughput, is what it waits on.
 *
 * On by default (run 14, H100: 18-48 % faster than state_scan_kernel<float>); EFLA_DELTA_RULE_SCAN_MMA_F32=0 forces the WMMA scan.
 * Block: KS x BV / 16 warps for BV state columns; grid (sequence x head, dv / BV). C, DK multiples of 8
 * (of 16 with KS = 2). */
#ifndef EFLA_CUDA_DELTA_RULE_CHUNK_SCAN_MMA_F32_CUH
#define EFLA_CUDA_DELTA_RULE_CHUNK_SCAN_MMA_F32_CUH
#include "delta_rule_chunk_scan_mma.cuh"   /* fetch_scan_chunk, scan_chunks, load/store_transposed, scan_mma_threads */

namespace {

/* W (row length DK + 8: a half-warp's 8-byte loads of 4 rows fall on distinct banks), K (DK + 4:
 * the loads of rows 2t, 2t + 1 do) and the U columns (BV + 4), float, two buffer sets */
template <int C, int DK, int BV> constexpr size_t scan_f32_set_bytes() {
    return sizeof(float) * ((size_t)C * (DK + 8) + (size_t)C * (DK + 4) + (size_t)C * (BV + 4));
}
/* ... and with KS = 2 each warp's posted partial V'^T (16 x C floats) */
template <int C, int DK, int BV, int KS = 1> constexpr size_t state_scan_mma_f32_smem() {
    return 2 * scan_f32_set_bytes<C, DK, BV>() + (KS > 1 ? sizeof(float) * KS * BV * C : 0);
}

/* acc (16 x C, n8 tile jn = chunk rows 8 jn ..) += X^T's product with the warp's transposed state
 * tiles st (k16-free: k-step j is st's tile j, the state rows 8 (jr + j) ..): B's rows 2t, 2t + 1 of
 * each block are X[8 jn + g][8 (jr + j) + 2t, + 1] of a C x DK float tile X (row length ld), one
 * 8-byte load. V'^T's S^T W^T in the forward scan, dV'^T's dS^T K^T in the backward one */
template <int KT, int CT>
__device__ __forceinline__ void add_state_product(float (&acc)[CT][4], const float (&st)[KT][4], const float *X, int ld, int jr) {
    const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
#pragma unroll
    for (int j = 0; j < KT; j++) {
        uint32_t ah[4], al[4];
        acc_to_tf32_a(ah, al, st[j]);
#pragma unroll
        for (int jn = 0; jn < CT; jn++) {
            const float2 x = *(const float2 *)(X + (8 * jn + g) * ld + 8 * (jr + j) + 2 * t);
            mma_3xtf32(acc[jn], ah, al, x.x, x.y);
        }
    }
}

template <int C, int DK, int BV, int KS = 1>
__global__ void __launch_bounds__(scan_mma_threads<BV, KS>()) state_scan_mma_f32_kernel(ArgsT<float> p) {
    static_assert(C % 8 == 0 && DK % (8 * KS) == 0 && BV % 16 == 0 && (KS == 1 || KS == 2),
                  "state_scan_mma_f32_kernel: C multiple of 8, DK of 8 KS, BV of 16; KS 1 or 2");
    constexpr int NT = scan_mma_threads<BV, KS>(), LDW = DK + 8, LDK = DK + 4, LDU = BV + 4;
    constexpr int KT = DK / 8 / KS, CT = C / 8;   /* n8 tiles of this warp's state rows, of V''s rows */
    constexpr int SLICES = BV / 16;
    constexpr size_t SET = scan_f32_set_bytes<C, DK, BV>();
    EFLA_DYNAMIC_SMEM(smem);
    EFLA_SMEM_FITS(2 * SET + (KS > 1 ? sizeof(float) * NT * CT * 4 : 0), (state_scan_mma_f32_smem<C, DK, BV, KS>()));
    const int64_t n = blockIdx.x / p.H, h = blockIdx.x % p.H, dv = p.dv;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const int slice = KS > 1 ? warp % SLICES : warp, part = KS > 1 ? warp / SLICES : 0;   /* 16 state columns; which of their KS row parts */
    const int jr = part * KT;   /* this warp's first n8 tile of the state's rows */
    const int64_t j0 = (int64_t)blockIdx.y * BV, col0 = j0 + 16 * slice;   /* the block's, this warp's first state column */
    const int64_t row0 = 8 * jr;   /* this warp's first state row */
    auto Wb = [&](int b) { return (float *)(smem + b * SET); };
    auto Kb = [&](int b) { return (float *)(smem + b * SET + sizeof(float) * C * LDW); };
    auto Ub = [&](int b) { return (float *)(smem + b * SET + sizeof(float) * C * (LDW + LDK)); };
    const int64_t first = p.seq[3 * n + 2], len = p.seq[3 * n + 1];
    const int64_t nchunks = (len + C - 1) / C;

    auto fetch = [&](int64_t c) {
        const int b = (int)(c & 1);
        fetch_scan_chunk<NT, C, DK, BV>(p, n, h, first, len, j0, c, Wb(b), LDW, Kb(b), LDK, Ub(b), LDU);
    };

    /* S^T: rows = this warp's 16 state columns, n8 tile j = state rows 8 (jr + j) .. 8 (jr + j) + 7 */
    float s[KT][4];
    load_transposed(s, p.s0 ? p.s0 + (n * p.H + h) * DK * dv + row0 * dv + col0 : nullptr, dv);

    scan_chunks(nchunks, fetch, [&](int64_t c, int b) {
        const int64_t gc = first + c;
        if (p.cs) store_transposed(p.cs + (gc * p.H + h) * DK * dv + row0 * dv + col0, dv, s);   /* the entering state */

        /* V'^T = U^T - S^T W^T: U^T from U's columns; k-step j is the state's tile j, and B's rows
         * 2t, 2t + 1 of the block are W[c][8 j + 2t, + 1] for chunk row c = 8 jn + g (one 8-byte load) */
        const float *U = Ub(b), *W = Wb(b);
        float vt[CT][4];   /* S^T W^T in fresh accumulators, then U^T minus it (one rounding into V') */
        zero_acc(vt);
        add_state_product(vt, s, W, LDW, jr);
        if constexpr (KS == 2) add_partner_partial<SLICES>(vt, (float *)(smem + 2 * SET), warp, part);
#pragma unroll
        for (int jn = 0; jn < CT; jn++)
#pragma unroll
            for (int i = 0; i < 4; i++) vt[jn][i] = U[acc_col(jn, i) * LDU + acc_row(16 * slice, i)] - vt[jn][i];
        if (p.vp && part == 0) store_transposed(p.vp + (gc * p.H + h) * C * dv + col0, dv, vt);

        /* S^T += V'^T K: k-step jc is V''s tile jc, and B's rows are K[8 jc + 2t, + 1][8 jn + g]; each
         * n8 tile of the update in a fresh accumulator, added to the state once (one rounding) */
        const float *K = Kb(b);
        uint32_t vh[CT][4], vl[CT][4];
#pragma unroll
        for (int jc = 0; jc < CT; jc++) acc_to_tf32_a(vh[jc], vl[jc], vt[jc]);
#pragma unroll
        for (int jn = 0; jn < KT; jn++) {
            float upd[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
            for (int jc = 0; jc < CT; jc++) {
                mma_3xtf32(upd, vh[jc], vl[jc], K[(8 * jc + 2 * t) * LDK + 8 * (jr + jn) + g],
                           K[(8 * jc + 2 * t + 1) * LDK + 8 * (jr + jn) + g]);
            }
#pragma unroll
            for (int i = 0; i < 4; i++) s[jn][i] += upd[i];
        }
    });
    if (p.sf) store_transposed(p.sf + (n * p.H + h) * DK * dv + row0 * dv + col0, dv, s);
}

} // namespace
#endif

/* delta_rule_chunk_out_mma_f32.cuh: the outputs O = scale (Q S + tril(Q K^T) V') for float32
 * inputs in the register style, the float32 form of out_mma_kernel (delta_rule_chunk_scan_mma.cuh):
 * warp w owns the chunk's rows 16 w .. 16 w + 15, makes its rows of P = tril(Q K^T) as
 * accumulators (the n8 tiles at or left of its diagonal), passes them as the A operand of P V'
 * (mma_fragments_tf32.cuh's k order makes that free) and sums Q S + P V' in the same
 * accumulators; every product three TF32 mma.sync products (3xTF32), where out_kernel<float>
 * makes them with WMMA through shared memory.
 *
 * Float tiles take twice bfloat16's room, so a block takes BV of the dv columns (grid z: dv / BV)
 * rather than all of them: at C = 32 and d = 128 a block is two warps, and 32 columns leave room
 * for four blocks a multiprocessor where all 128 would leave one. Q K^T is then made once per
 * column block (each block's P costs as much as its Q S).
 * Block: C / 16 warps; grid (chunk, head, dv / BV). C, DK, BV multiples of 16. */
#ifndef EFLA_CUDA_DELTA_RULE_CHUNK_OUT_MMA_F32_CUH
#define EFLA_CUDA_DELTA_RULE_CHUNK_OUT_MMA_F32_CUH
#include "delta_rule_chunk_scan_mma.cuh"   /* copy_rows_async, out_mma_threads */
#include "mma_fragments_tf32.cuh"

namespace {

/* Q and K (C x DK, read along rows: DK + 8), the state's and V''s BV columns (read down
 * columns: BV + 4), float */
template <int C, int DK, int BV> constexpr size_t out_mma_f32_smem() {
    return sizeof(float) * ((size_t)2 * C * (DK + 8) + (size_t)(DK + C) * (BV + 4));
}

template <int C, int DK, int BV>
__global__ void __launch_bounds__(out_mma_threads<C>()) out_mma_f32_kernel(ArgsT<float> p) {
    static_assert(C % 16 == 0 && DK % 16 == 0 && BV % 16 == 0, "out_mma_f32_kernel: C, DK, BV multiples of 16");
    constexpr int NT = out_mma_threads<C>(), LDK = DK + 8, LDV = BV + 4, CT = C / 8, VT = BV / 8;
    EFLA_DYNAMIC_SMEM(smem);
    float *const Q = (float *)smem, *const K = Q + C * LDK, *const S = K + C * LDK, *const Vp = S + DK * LDV;
    EFLA_SMEM_FITS((size_t)((char *)(Vp + C * LDV) - smem), (out_mma_f32_smem<C, DK, BV>()));
    const int64_t g0 = blockIdx.x, h = blockIdx.y, dv = p.dv, j0 = (int64_t)blockIdx.z * BV;
    const int warp = threadIdx.x / 32, row0 = 16 * warp;
    const ChunkRows cr = chunk_rows(p, g0, h, C);
    copy_rows_async<NT>(Q, LDK, p.q + cr.first * DK, p.H * DK, C, DK, cr.len);
    copy_rows_async<NT>(K, LDK, p.k + cr.first * DK, p.H * DK, C, DK, cr.len);
    cp_async_commit();
    copy_rows_async<NT>(S, LDV, p.cs + (g0 * p.H + h) * DK * dv + j0, dv, DK, BV, DK);
    copy_rows_async<NT>(Vp, LDV, p.vp + (g0 * p.H + h) * C * dv + j0, dv, C, BV, C);
    cp_async_commit();
    cp_async_wait_one();
    __syncthreads();   /* Q and K are in (S and V' may still be on their way) */

    /* Q's fragments serve both Q K^T and Q S */
    float qa[DK / 16][8];
#pragma unroll
    for (int kk = 0; kk < DK / 16; kk++) lds_a_rows(qa[kk], Q, LDK, row0, kk);

    /* P = tril(Q K^T) on this warp's rows: the n8 tiles that start at or before its last row */
    float pt[CT][4];
    zero_acc(pt);
    mma_steps_f32<DK / 16>(pt, held_frags_f32(qa), [&](float (&r)[4], int kk, int j) { lds_b_cols(r, K, LDK, kk, j); }, 0, DK / 16,
                           [=](int, int j) { return 8 * j < row0 + 16; });
#pragma unroll
    for (int j = 0; j < CT; j++)
#pragma unroll
        for (int i = 0; i < 4; i++)
            if (acc_col(j, i) > acc_row(row0, i)) pt[j][i] = 0.0f;
    float pa[C / 16][8];
#pragma unroll
    for (int kk = 0; kk < C / 16; kk++) acc_to_f32_a(pa[kk], pt, kk);

    cp_async_wait_all();
    __syncthreads();   /* S and V' are in */
    /* O = Q S + P V' (P's columns past this warp's rows are zero), stored scaled */
    float ot[VT][4];
    zero_acc(ot);
    mma_steps_f32<DK / 16>(ot, held_frags_f32(qa), [&](float (&r)[4], int kk, int j) { lds_b_rows(r, S, LDV, kk, j); });
    mma_steps_f32<C / 16>(ot, held_frags_f32(pa), [&](float (&r)[4], int kk, int j) { lds_b_rows(r, Vp, LDV, kk, j); }, 0, warp + 1);
    store_acc(p.o + cr.first * dv + j0, p.H * dv, row0, ot, cr.len, p.scale);
}

} // namespace
#endif

/* mma_fragments.cuh: warp-level tensor-core building blocks in PTX with their documented register
 * layouts (PTX ISA: mma.m16n8k16, ldmatrix, movmatrix), for kernels that keep a product's
 * accumulators in registers and pass them to the next product as an operand, which WMMA's
 * opaque fragments cannot do. With g = lane / 4 and t = lane % 4:
 *   A (16 x 16 bf16, four registers of two): a[0] = A[g][2t, 2t+1], a[1] = A[g+8][2t, 2t+1],
 *     a[2] = A[g][2t+8, 2t+9], a[3] = A[g+8][2t+8, 2t+9]
 *   B (16 x 8 bf16, two registers): b0 = B[2t, 2t+1][g], b1 = B[2t+8, 2t+9][g]
 *   C, D (16 x 8 float): c[0], c[1] = C[g][2t, 2t+1], c[2], c[3] = C[g+8][2t, 2t+1]
 * So two 16 x 8 accumulators side by side, rounded to bfloat16 pairs (pack_bf16), are the A
 * fragment of the next product (acc_to_a).
 *   ldsm_x4: lane l gives the address of row l % 8 of 8 x 8 matrix l / 8 (16 bytes a row, in
 *     shared memory); register j receives M_j[g][2t, 2t+1]; ldsm_x4_trans: M_j[2t][g], M_j[2t+1][g]
 *   movmatrix_trans: a lane holding M[g][2t, 2t+1] of an 8 x 8 bfloat16 matrix gets
 *     M[2t][g], M[2t+1][g] (the transpose, for stores)
 * On the host emulator bench/cuda/emu_mma.h defines the same functions (lanes exchange their
 * registers through a per-warp buffer), so the kernels that use them run there too. */
#ifndef EFLA_CUDA_MMA_FRAGMENTS_CUH
#define EFLA_CUDA_MMA_FRAGMENTS_CUH
#ifndef EFLA_EMULATE_CUDA
#include <cuda_bf16.h>
#include <stdint.h>
#endif

/* lo and hi rounded to bfloat16 (to nearest even), lo in the low half; and back (the host emulator
 * supplies the conversions) */
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *(const uint32_t *)&v;
}
__device__ __forceinline__ float bf16_lo(uint32_t x) { return __uint_as_float(x << 16); }
__device__ __forceinline__ float bf16_hi(uint32_t x) { return __uint_as_float(x & 0xffff0000u); }

#ifndef EFLA_EMULATE_CUDA

/* the "memory" clobbers keep the loads after the barriers and cp.async waits that make their data */
__device__ __forceinline__ void ldsm_x4(uint32_t r[4], const void *p) {
    const uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a) : "memory");
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t r[4], const void *p) {
    const uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a) : "memory");
}
/* d += A B, bfloat16 operands, float accumulators */
__device__ __forceinline__ void mma_bf16(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ uint32_t movmatrix_trans(uint32_t x) {
    uint32_t y;
    asm("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;" : "=r"(y) : "r"(x));
    return y;
}
#endif

/* The A fragment (16 rows x 16 columns, k16 step kk) of accumulators acc[n8 tile][4] that hold
 * rows 0..15 and columns 8 j .. 8 j + 7 in tile j: tiles 2 kk and 2 kk + 1, rounded to bfloat16 */
template <int TILES>
__device__ __forceinline__ void acc_to_a(uint32_t a[4], const float (&acc)[TILES][4], int kk) {
    a[0] = pack_bf16(acc[2 * kk][0], acc[2 * kk][1]);
    a[1] = pack_bf16(acc[2 * kk][2], acc[2 * kk][3]);
    a[2] = pack_bf16(acc[2 * kk + 1][0], acc[2 * kk + 1][1]);
    a[3] = pack_bf16(acc[2 * kk + 1][2], acc[2 * kk + 1][3]);
}
#endif

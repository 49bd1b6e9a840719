/* mma_fragments_tf32.cuh: float32 tiles in shared memory as 3xTF32 mma.sync operands, the float32
 * counterpart of mma_fragments.cuh's bfloat16 loaders and k16 steps, for register-style kernels
 * whose products take float32 inputs.
 *
 * One k order for every float32 product: within each 8 columns of k, slot t is column 2t and slot
 * t + 4 is column 2t + 1 (A's and B's k permuted alike leave a product unchanged). In that order
 * a 16 x 8 accumulator tile is m16n8k8's A fragment as it stands ({c0, c2, c1, c3}), so a product's
 * accumulators feed the next product with no shuffle, and a lane's two k slots are neighbouring
 * columns, one 8-byte load where a tile is read along its rows.
 * A k16 step's fragments as raw floats (split to TF32 head and remainder at the product):
 *   A (16 x 16): f[4h + 0..3] = A[g][c], A[g+8][c], A[g][c+1], A[g+8][c+1],  c = 16 kk + 8 h + 2t
 *   B (16 x 8, one n8 tile): b[2h], b[2h + 1] = B[c][8 j + g], B[c+1][8 j + g]
 * Row paddings: a tile read along its rows (lds_a_rows, lds_b_cols: 8-byte loads) wants a row
 * length of 8 (mod 32) floats, one read down its columns (lds_a_cols, lds_b_rows) 4 (mod 32):
 * then a warp's loads fall on distinct banks. */
#ifndef EFLA_CUDA_MMA_FRAGMENTS_TF32_CUH
#define EFLA_CUDA_MMA_FRAGMENTS_TF32_CUH
#include "mma_fragments.cuh"

/* A's fragment of k16 step kk over rows row0 .. row0 + 15 of a row-major tile (lds_a_rows), or of
 * the transpose of one whose columns are the product's rows (lds_a_cols) */
__device__ __forceinline__ void lds_a_rows(float (&f)[8], const float *A, int ld, int row0, int kk) {
    const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const int c = 16 * kk + 8 * h + 2 * t;
        const float2 u = *(const float2 *)(A + (row0 + g) * ld + c), v = *(const float2 *)(A + (row0 + g + 8) * ld + c);
        f[4 * h] = u.x; f[4 * h + 1] = v.x; f[4 * h + 2] = u.y; f[4 * h + 3] = v.y;
    }
}
__device__ __forceinline__ void lds_a_cols(float (&f)[8], const float *A, int ld, int row0, int kk) {
    const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const float *r = A + (16 * kk + 8 * h + 2 * t) * ld + row0 + g;
        f[4 * h] = r[0]; f[4 * h + 1] = r[8]; f[4 * h + 2] = r[ld]; f[4 * h + 3] = r[ld + 8];
    }
}
/* B's fragment of k16 step kk, n8 tile j: from a row-major k x n tile (lds_b_rows) or an n x k
 * one (lds_b_cols: B is its transpose) */
__device__ __forceinline__ void lds_b_rows(float (&b)[4], const float *B, int ld, int kk, int j) {
    const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const float *r = B + (16 * kk + 8 * h + 2 * t) * ld + 8 * j + g;
        b[2 * h] = r[0]; b[2 * h + 1] = r[ld];
    }
}
__device__ __forceinline__ void lds_b_cols(float (&b)[4], const float *B, int ld, int kk, int j) {
    const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const float2 u = *(const float2 *)(B + (8 * j + g) * ld + 16 * kk + 8 * h + 2 * t);
        b[2 * h] = u.x; b[2 * h + 1] = u.y;
    }
}

/* the A fragment of k16 step kk from accumulators acc[n8 tile][4] over the same 16 rows (tiles
 * 2 kk and 2 kk + 1), in the permuted k order: no data moves */
template <int TILES> __device__ __forceinline__ void acc_to_f32_a(float (&f)[8], const float (&acc)[TILES][4], int kk) {
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const float(&c)[4] = acc[2 * kk + h];
        f[4 * h] = c[0]; f[4 * h + 1] = c[2]; f[4 * h + 2] = c[1]; f[4 * h + 3] = c[3];
    }
}

/* a k16 step's A fragment split once for all of its n8 tiles */
struct SplitA {
    uint32_t hi[2][4], lo[2][4];
};
__device__ __forceinline__ SplitA split_a(const float (&f)[8]) {
    SplitA s;
#pragma unroll
    for (int h = 0; h < 2; h++)
#pragma unroll
        for (int i = 0; i < 4; i++) tf32_split(f[4 * h + i], s.hi[h][i], s.lo[h][i]);
    return s;
}
/* d += A B over a k16 step (two m16n8k8 steps of three TF32 products each) */
__device__ __forceinline__ void mma_k16_3xtf32(float (&d)[4], const SplitA &a, const float (&b)[4]) {
#pragma unroll
    for (int h = 0; h < 2; h++) mma_3xtf32(d, a.hi[h], a.lo[h], b[2 * h], b[2 * h + 1]);
}

/* acc (16 rows x 8 N columns) += A B over the k16 steps kk0 <= kk < kk1, float32 operands:
 * a(f, kk) loads A's fragment of step kk, b(r, kk, j) B's n8 tile j; keep(kk, j) false skips a
 * tile known to be zero (mma_steps' float32 form, one n8 tile at a time) */
template <int KK, int N, class LoadA, class LoadB, class Keep = AllTiles>
__device__ __forceinline__ void mma_steps_f32(float (&acc)[N][4], LoadA a, LoadB b, int kk0 = 0, int kk1 = KK, Keep keep = Keep()) {
#pragma unroll
    for (int kk = 0; kk < KK; kk++) {
        if (kk < kk0 || kk >= kk1) continue;
        float f[8];
        a(f, kk);
        const SplitA s = split_a(f);
#pragma unroll
        for (int j = 0; j < N; j++) {
            if (!keep(kk, j)) continue;
            float r[4];
            b(r, kk, j);
            mma_k16_3xtf32(acc[j], s, r);
        }
    }
}

/* mma_steps_f32's A loader for fragments already in registers (a[kk] for step kk) */
template <int KK> __device__ __forceinline__ auto held_frags_f32(const float (&a)[KK][8]) {
    return [&a](float (&f)[8], int kk) {
#pragma unroll
        for (int i = 0; i < 8; i++) f[i] = a[kk][i];
    };
}

#endif

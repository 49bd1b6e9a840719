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
 * Above those, a warp's product over its 16 rows: ldsm_a_rows/a_cols and ldsm_b_rows/b_cols load
 * A and B by role (from a tile or its transpose), mma_steps runs the k16 steps and n8 tile pairs
 * (skipping pairs known to be zero), held_frags feeds it A fragments kept in registers,
 * strip_product runs a whole product of two shared-memory tiles into fresh accumulators (tril
 * optional), and store_acc writes the accumulators to a bfloat16 tile.
 * For float32 inputs: mma_tf32 (m16n8k8, TF32 operands), tf32_split and mma_3xtf32 (three TF32
 * products of a head/remainder split, about 21 bits), and acc_to_tf32_a (an accumulator tile as
 * the next product's split A fragment, under a permuted k order).
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
/* x rounded to TF32 (nearest, ties away from zero: 10 mantissa bits, the low 13 bits zero) */
__device__ __forceinline__ uint32_t tf32_round(float x) {
    uint32_t r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
    return r;
}
/* d += A B, mma.m16n8k8 with TF32 operands and float accumulators. With g = lane / 4, t = lane % 4:
 * a[0] = A[g][t], a[1] = A[g+8][t], a[2] = A[g][t+4], a[3] = A[g+8][t+4]; b0 = B[t][g],
 * b1 = B[t+4][g]; d as m16n8k16's. */
__device__ __forceinline__ void mma_tf32(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
#endif

/* 3xTF32, for float32 inputs: x = hi + lo with hi = tf32(x) and lo = tf32(x - hi), and a product
 * A B ~ lo_A hi_B + hi_A lo_B + hi_A hi_B (the small terms first; about 21 bits, the same split
 * as the WMMA float32 path's) */
__device__ __forceinline__ void tf32_split(float x, uint32_t &hi, uint32_t &lo) {
    hi = tf32_round(x);
    lo = tf32_round(x - __uint_as_float(hi));
}
/* an accumulator tile (c0, c1 = C[g][2t, 2t+1], c2, c3 = C[g+8][2t, 2t+1]) as m16n8k8's A
 * fragment, split to TF32, with the tile's 8 columns as the k index in a permuted order (slot t
 * = column 2t, slot t + 4 = column 2t + 1): B's fragment must then be its rows 2t and 2t + 1 */
__device__ __forceinline__ void acc_to_tf32_a(uint32_t (&hi)[4], uint32_t (&lo)[4], const float (&c)[4]) {
    tf32_split(c[0], hi[0], lo[0]);
    tf32_split(c[2], hi[1], lo[1]);
    tf32_split(c[1], hi[2], lo[2]);
    tf32_split(c[3], hi[3], lo[3]);
}
/* The three products go to a fresh accumulator, added to d in float on the CUDA cores: the tensor
 * cores truncate where they add into their accumulator, and that bias, piled up over a long chain
 * of products into one accumulator, reached 1e-5 of float32's results (TileMma<float> in
 * delta_rule_chunk_tiles.cuh; the host emulator rounds its products toward zero likewise) */
__device__ __forceinline__ void mma_3xtf32(float d[4], const uint32_t (&ah)[4], const uint32_t (&al)[4], const uint32_t (&bh)[2],
                                           const uint32_t (&bl)[2]) {
    float t[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    mma_tf32(t, al, bh[0], bh[1]);
    mma_tf32(t, ah, bl[0], bl[1]);
    mma_tf32(t, ah, bh[0], bh[1]);
#pragma unroll
    for (int i = 0; i < 4; i++) d[i] += t[i];
}

/* the same with B's two elements given as floats (B[2t][g], B[2t + 1][g] in the permuted k order),
 * split here */
__device__ __forceinline__ void mma_3xtf32(float d[4], const uint32_t (&ah)[4], const uint32_t (&al)[4], float b0, float b1) {
    uint32_t bh[2], bl[2];
    tf32_split(b0, bh[0], bl[0]);
    tf32_split(b1, bh[1], bl[1]);
    mma_3xtf32(d, ah, al, bh, bl);
}

/* ldmatrix by role, for a warp's product over 16 rows row0 .. row0 + 15 (bfloat16 tiles in shared
 * memory, row length ld, 16-byte aligned rows): A's fragment of k16 step kk from a row-major tile
 * whose rows are the product's (ldsm_a_rows) or from one whose columns are (ldsm_a_cols: A is its
 * transpose); B's two n8 tiles j, j + 1 of step kk from a row-major k x n tile (ldsm_b_rows) or
 * from an n x k one (ldsm_b_cols: B is its transpose) */
__device__ __forceinline__ void ldsm_a_rows(uint32_t (&f)[4], const __nv_bfloat16 *A, int ld, int row0, int kk) {
    const int lane = threadIdx.x % 32, m = lane / 8;
    ldsm_x4(f, A + (row0 + 8 * (m % 2) + lane % 8) * ld + 16 * kk + 8 * (m / 2));
}
__device__ __forceinline__ void ldsm_a_cols(uint32_t (&f)[4], const __nv_bfloat16 *A, int ld, int row0, int kk) {
    const int lane = threadIdx.x % 32, m = lane / 8;
    ldsm_x4_trans(f, A + (16 * kk + 8 * (m / 2) + lane % 8) * ld + row0 + 8 * (m % 2));
}
__device__ __forceinline__ void ldsm_b_rows(uint32_t (&r)[4], const __nv_bfloat16 *B, int ld, int kk, int j) {
    const int lane = threadIdx.x % 32, m = lane / 8;
    ldsm_x4_trans(r, B + (16 * kk + 8 * (m % 2) + lane % 8) * ld + 8 * j + 8 * (m / 2));
}
__device__ __forceinline__ void ldsm_b_cols(uint32_t (&r)[4], const __nv_bfloat16 *B, int ld, int kk, int j) {
    const int lane = threadIdx.x % 32, m = lane / 8;
    ldsm_x4(r, B + (8 * j + 8 * (m / 2) + lane % 8) * ld + 16 * kk + 8 * (m % 2));
}

/* The A fragment (16 rows x 16 columns, k16 step kk) of accumulators acc[n8 tile][4] that hold
 * rows 0..15 and columns 8 j .. 8 j + 7 in tile j: tiles 2 kk and 2 kk + 1, rounded to bfloat16 */
template <int TILES>
__device__ __forceinline__ void acc_to_a(uint32_t a[4], const float (&acc)[TILES][4], int kk) {
    a[0] = pack_bf16(acc[2 * kk][0], acc[2 * kk][1]);
    a[1] = pack_bf16(acc[2 * kk][2], acc[2 * kk][3]);
    a[2] = pack_bf16(acc[2 * kk + 1][0], acc[2 * kk + 1][1]);
    a[3] = pack_bf16(acc[2 * kk + 1][2], acc[2 * kk + 1][3]);
}

/* zero n8 accumulator tiles */
template <int N> __device__ __forceinline__ void zero_acc(float (&acc)[N][4]) {
#pragma unroll
    for (int j = 0; j < N; j++)
#pragma unroll
        for (int i = 0; i < 4; i++) acc[j][i] = 0.0f;
}

/* every accumulator times s (in float) */
template <int N> __device__ __forceinline__ void scale_acc(float (&acc)[N][4], float s) {
#pragma unroll
    for (int j = 0; j < N; j++)
#pragma unroll
        for (int i = 0; i < 4; i++) acc[j][i] *= s;
}

/* mma_steps' A loader for fragments already in registers (a[kk] for step kk) */
template <int KK> __device__ __forceinline__ auto held_frags(const uint32_t (&a)[KK][4]) {
    return [&a](uint32_t (&f)[4], int kk) {
#pragma unroll
        for (int i = 0; i < 4; i++) f[i] = a[kk][i];
    };
}

/* mma_steps' A loader for fragments in registers with every element negated (the bfloat16 sign
 * bits flipped: -A exactly) */
template <int KK> __device__ __forceinline__ auto negated_frags(const uint32_t (&a)[KK][4]) {
    return [&a](uint32_t (&f)[4], int kk) {
#pragma unroll
        for (int i = 0; i < 4; i++) f[i] = a[kk][i] ^ 0x80008000u;
    };
}

/* Where accumulator element acc[j][i] of a warp's 16 rows from row0 sits: row row0 + g (+8 for
 * i >= 2), column 8 j + 2t (+1 for odd i) */
__device__ __forceinline__ int acc_row(int row0, int i) { return row0 + (int)(threadIdx.x % 32) / 4 + (i >= 2 ? 8 : 0); }
__device__ __forceinline__ int acc_col(int j, int i) { return 8 * j + 2 * (int)(threadIdx.x % 4) + i % 2; }

/* every k16 step and n8 tile pair of a product: mma_steps' default */
struct AllTiles {
    __device__ __forceinline__ bool operator()(int, int) const { return true; }
};

/* acc (16 rows x 8 N columns) += A B over the k16 steps kk0 <= kk < kk1: a(frag, kk) loads A's
 * fragment of step kk, b(r, kk, j) B's two n8 tiles j, j + 1; keep(kk, j) false skips a step's
 * tile pair where A's or B's part is known to be zero (a triangular factor) */
template <int KK, int N, class LoadA, class LoadB, class Keep = AllTiles>
__device__ __forceinline__ void mma_steps(float (&acc)[N][4], LoadA a, LoadB b, int kk0 = 0, int kk1 = KK, Keep keep = Keep()) {
#pragma unroll
    for (int kk = 0; kk < KK; kk++) {
        if (kk < kk0 || kk >= kk1) continue;
        uint32_t af[4];
        a(af, kk);
#pragma unroll
        for (int j = 0; j < N; j += 2) {
            if (!keep(kk, j)) continue;
            uint32_t r[4];
            b(r, kk, j);
            mma_bf16(acc[j], af, r[0], r[1]);
            mma_bf16(acc[j + 1], af, r[2], r[3]);
        }
    }
}

/* Fresh accumulators acc = rows 16 rw .. 16 rw + 15, columns c0 .. c0 + SW - 1 of A B over the
 * k16 steps kk < kk1, both operands bfloat16 tiles in shared memory: A row-major over the
 * product's rows (lda), B row-major k x n (ldb), or n x k when BT (B is its transpose). With
 * tril, columns past the row are zero (and the tile pairs wholly past the strip's last row are
 * skipped). */
template <int SW, int KK, bool BT>
__device__ __forceinline__ void strip_product(float (&acc)[SW / 8][4], const __nv_bfloat16 *A, int lda, const __nv_bfloat16 *B,
                                              int ldb, int rw, int c0, int kk1, bool tril) {
    const int row0 = 16 * rw;
    zero_acc(acc);
    mma_steps<KK>(acc, [&](uint32_t (&f)[4], int kk) { ldsm_a_rows(f, A, lda, row0, kk); },
                  [&](uint32_t (&r)[4], int kk, int j) {
                      if constexpr (BT) ldsm_b_cols(r, B + c0 * ldb, ldb, kk, j);
                      else ldsm_b_rows(r, B + c0, ldb, kk, j);
                  },
                  0, kk1, [=](int, int j) { return !tril || c0 + 8 * j <= row0; });
    if (tril)
#pragma unroll
        for (int j = 0; j < SW / 8; j++)
#pragma unroll
            for (int i = 0; i < 4; i++)
                if (c0 + acc_col(j, i) > acc_row(row0, i)) acc[j][i] = 0.0f;
}

/* two neighbouring elements of a row: a bfloat16 pair (four bytes) or a float pair (eight) */
__device__ __forceinline__ void put_pair(__nv_bfloat16 *p, float a, float b) { *(uint32_t *)p = pack_bf16(a, b); }
__device__ __forceinline__ void put_pair(float *p, float a, float b) { *(float2 *)p = make_float2(a, b); }

/* 16 rows of accumulators (row0 + g (+8), columns 8 j + 2t (+1)) times mult to a bfloat16 or float
 * tile: row-major in shared memory or global memory (rows from `valid` on skipped), a pair a lane
 * and row */
template <int N, class T>
__device__ __forceinline__ void store_acc(T *dst, int64_t ld, int row0, const float (&acc)[N][4], int valid = 1 << 30,
                                          float mult = 1.0f) {
    const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
#pragma unroll
    for (int half = 0; half < 2; half++) {
        const int r = row0 + g + 8 * half;
        if (r >= valid) continue;
#pragma unroll
        for (int j = 0; j < N; j++)
            put_pair(dst + (int64_t)r * ld + 8 * j + 2 * t, mult * acc[j][2 * half], mult * acc[j][2 * half + 1]);
    }
}

#endif

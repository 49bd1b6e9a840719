// emu_mma.h: host stand-ins for cuda/mma_fragments.cuh's PTX building blocks (ldmatrix, mma
// m16n8k16 with bfloat16 operands, mma m16n8k8 with TF32 ones and cvt to TF32, movmatrix), with
// the register layouts that file documents.
// Each is collective over a warp: every lane posts its registers (or its row address) to a
// per-warp buffer, the warp meets at a barrier, each lane reads what its result needs, and the
// warp meets again before the buffer is reused. The products and the accumulator are summed
// exactly (in double) and the sum rounded toward zero: the tensor cores truncate where they add
// into their accumulator, a bias that a long chain of products into one accumulator piles up (the
// float32 path sums each step's three TF32 products in a fresh accumulator for that reason).
#ifndef EFLA_EMU_MMA_H
#define EFLA_EMU_MMA_H
#include "emu_cuda.h"   // emu_warp, emu_lane; pack_bf16 and bf16_lo/hi come from mma_fragments.cuh

static uint32_t emu_mma_regs[32][32][6];      // per warp and lane: a[4], b0, b1 (or one value)
static const void *emu_mma_rows[32][32];      // per warp and lane: ldmatrix's row address

static inline uint16_t emu_half(uint32_t x, int hi) { return (uint16_t)(hi ? x >> 16 : x & 0xffffu); }

static inline void emu_ldsm(uint32_t r[4], const void *p, bool trans) {
    const int w = emu_warp(), l = emu_lane(), g = l / 4, t = l % 4;
    emu_mma_rows[w][l] = p;
    pthread_barrier_wait(&emu_warp_bar[w]);
    for (int j = 0; j < 4; j++) {
        uint16_t lo, hi;
        if (!trans) {   // M_j[g][2t], M_j[g][2t + 1]
            const uint16_t *row = (const uint16_t *)emu_mma_rows[w][8 * j + g];
            lo = row[2 * t];
            hi = row[2 * t + 1];
        } else {        // M_j[2t][g], M_j[2t + 1][g]
            lo = ((const uint16_t *)emu_mma_rows[w][8 * j + 2 * t])[g];
            hi = ((const uint16_t *)emu_mma_rows[w][8 * j + 2 * t + 1])[g];
        }
        r[j] = (uint32_t)lo | ((uint32_t)hi << 16);
    }
    pthread_barrier_wait(&emu_warp_bar[w]);
}
static inline void ldsm_x4(uint32_t r[4], const void *p) { emu_ldsm(r, p, false); }
static inline void ldsm_x4_trans(uint32_t r[4], const void *p) { emu_ldsm(r, p, true); }

// d += A B over a warp (m16n8kK): every lane posts a[4], b0, b1, and computes its four outputs
// from the posted registers; A(regs, r, k) and B(regs, k, n) read an operand's element
template <int K, class FA, class FB>
static inline void emu_mma(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1, FA A, FB B) {
    const int w = emu_warp(), l = emu_lane(), g = l / 4, t = l % 4;
    uint32_t *mine = emu_mma_regs[w][l];
    for (int i = 0; i < 4; i++) mine[i] = a[i];
    mine[4] = b0;
    mine[5] = b1;
    pthread_barrier_wait(&emu_warp_bar[w]);
    float out[4];
    for (int i = 0; i < 4; i++) {
        const int r = g + (i >= 2 ? 8 : 0), c = 2 * t + (i % 2);
        double s = d[i];
        for (int k = 0; k < K; k++) s += (double)A(emu_mma_regs[w], r, k) * B(emu_mma_regs[w], k, c);
        float f = (float)s;   // then rounded toward zero, as the tensor cores add into their accumulator
        if (fabs((double)f) > fabs(s)) f = nextafterf(f, 0.0f);
        out[i] = f;
    }
    pthread_barrier_wait(&emu_warp_bar[w]);
    for (int i = 0; i < 4; i++) d[i] = out[i];
}

typedef uint32_t emu_warp_regs[32][6];
// m16n8k16, bfloat16: A[r][k] held by lane (r % 8) * 4 + (k % 8) / 2, register (r >= 8) + 2 (k >= 8),
// half k % 2; B[k][n] by lane n * 4 + (k % 8) / 2, register b0 (k < 8) or b1, half k % 2
static inline void mma_bf16(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    emu_mma<16>(d, a, b0, b1,
        [](const emu_warp_regs &x, int r, int k) {
            return __bfloat162float(bf16{ emu_half(x[(r % 8) * 4 + (k % 8) / 2][(r >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0)], k % 2) });
        },
        [](const emu_warp_regs &x, int k, int n) { return __bfloat162float(bf16{ emu_half(x[n * 4 + (k % 8) / 2][k >= 8 ? 5 : 4], k % 2) }); });
}

// cvt.rna.tf32.f32: to nearest, ties away from zero (adding half of the dropped field to the
// magnitude bits, then clearing it)
static inline uint32_t tf32_round(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    return (u + 0x1000u) & 0xffffe000u;
}
// m16n8k8, TF32: A[r][k] held by lane (r % 8) * 4 + k % 4, register (r >= 8) + 2 (k >= 4); B[k][n]
// by lane n * 4 + k % 4, register b0 (k < 4) or b1
static inline void mma_tf32(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    emu_mma<8>(d, a, b0, b1,
        [](const emu_warp_regs &x, int r, int k) { return __uint_as_float(x[(r % 8) * 4 + k % 4][(r >= 8 ? 1 : 0) + (k >= 4 ? 2 : 0)]); },
        [](const emu_warp_regs &x, int k, int n) { return __uint_as_float(x[n * 4 + k % 4][k >= 4 ? 5 : 4]); });
}

static inline uint32_t movmatrix_trans(uint32_t x) {
    const int w = emu_warp(), l = emu_lane(), g = l / 4, t = l % 4;
    emu_mma_regs[w][l][0] = x;
    pthread_barrier_wait(&emu_warp_bar[w]);
    // M[r][c] is held by lane r * 4 + c / 2, half c % 2; this lane gets M[2t][g], M[2t + 1][g]
    const uint16_t lo = emu_half(emu_mma_regs[w][(2 * t) * 4 + g / 2][0], g % 2);
    const uint16_t hi = emu_half(emu_mma_regs[w][(2 * t + 1) * 4 + g / 2][0], g % 2);
    pthread_barrier_wait(&emu_warp_bar[w]);
    return (uint32_t)lo | ((uint32_t)hi << 16);
}
#endif

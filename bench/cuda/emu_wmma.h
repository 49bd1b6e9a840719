// emu_wmma.h: a host stand-in for the parts of CUDA's WMMA API (nvcuda::wmma) that the tensor-core
// chunk kernels use (cuda/delta_rule_chunk_tiles.cuh: mm()), and the other built-ins they need
// beyond emu_cuda.h: 16-bit pairs, __syncwarp, the block's dynamic shared memory.
//
// TF32 (the float32 path's three-product mm()): precision::tf32 fragments hold floats;
// __float_to_tf32 rounds to TF32's 10 mantissa bits (to nearest, ties away, as cvt.rna does) and
// a TF32 product reads only those bits of its operands, as the tensor cores do.
//
// A WMMA call is collective over a warp. Here lane 0 of each warp does the whole 16 x 16 x 16
// product in float (k in order) and the other lanes do nothing: their fragments are never
// stored, so a lane that runs ahead or behind cannot write a stale tile. Products differ from
// the tensor cores' in the last bits (accumulation order); the emulator checks against a
// float64 reference with the workbench's tolerance, never bit for bit.
#ifndef EFLA_EMU_WMMA_H
#define EFLA_EMU_WMMA_H
#include "emu_cuda.h"
#include <type_traits>

struct uint2 { unsigned x, y; };
struct __nv_bfloat162 { bf16 x, y; };
static inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) { return __nv_bfloat162{ __float2bfloat16(a), __float2bfloat16(b) }; }

static inline void __syncwarp() { pthread_barrier_wait(&emu_warp_bar[emu_warp()]); }

// the dynamic shared memory of the block that runs (blocks run one at a time); an H100's 227 KB
alignas(128) static char emu_dynamic_smem[232448];

namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };
namespace precision { struct tf32 {}; }

// the whole tile in (row, column) order, in float (bfloat16 values are exact in float); on a GPU
// each lane holds num_elements of them, here lane 0 holds all
template <class Use, int M, int N, int K, class T, class Layout = void> struct fragment {
    static const int ROWS = std::is_same<Use, matrix_b>::value ? K : M;
    static const int COLS = std::is_same<Use, matrix_a>::value ? K : N;
    static const int num_elements = ROWS * COLS;
    float x[ROWS * COLS];
};

static inline float emu_tf32_bits(float v, bool round) {   // keep the top 19 bits (sign, 8 + 10)
    uint32_t u;
    memcpy(&u, &v, 4);
    if ((u & 0x7f800000u) != 0x7f800000u) {   // finite: round (to nearest, ties away) or truncate
        if (round) u += 0x1000u;
        u &= 0xffffe000u;
    }
    memcpy(&v, &u, 4);
    return v;
}
static inline float __float_to_tf32(float v) { return emu_tf32_bits(v, true); }
template <class T> static inline float emu_operand(float v) { return std::is_same<T, precision::tf32>::value ? emu_tf32_bits(v, false) : v; }

static inline float emu_value(float v) { return v; }
static inline float emu_value(bf16 v) { return __bfloat162float(v); }

// matrix_a / matrix_b: the layout is the fragment's
template <class Use, int M, int N, int K, class T, class Layout, class P>
static inline void load_matrix_sync(fragment<Use, M, N, K, T, Layout> &f, const P *p, unsigned ld) {
    if (emu_lane() != 0) return;
    typedef fragment<Use, M, N, K, T, Layout> F;
    for (int r = 0; r < F::ROWS; r++)
        for (int c = 0; c < F::COLS; c++)
            f.x[r * F::COLS + c] = emu_value(std::is_same<Layout, col_major>::value ? p[c * ld + r] : p[r * ld + c]);
}
// the accumulator: the layout is the call's
template <int M, int N, int K>
static inline void load_matrix_sync(fragment<accumulator, M, N, K, float> &f, const float *p, unsigned ld, layout_t l) {
    if (emu_lane() != 0) return;
    for (int r = 0; r < M; r++)
        for (int c = 0; c < N; c++) f.x[r * N + c] = l == mem_col_major ? p[c * ld + r] : p[r * ld + c];
}
template <int M, int N, int K>
static inline void store_matrix_sync(float *p, const fragment<accumulator, M, N, K, float> &f, unsigned ld, layout_t l) {
    if (emu_lane() != 0) return;
    for (int r = 0; r < M; r++)
        for (int c = 0; c < N; c++) (l == mem_col_major ? p[c * ld + r] : p[r * ld + c]) = f.x[r * N + c];
}
template <int M, int N, int K>
static inline void fill_fragment(fragment<accumulator, M, N, K, float> &f, float v) {
    if (emu_lane() != 0) return;
    for (int i = 0; i < M * N; i++) f.x[i] = v;
}
// d = a b + c
template <int M, int N, int K, class T, class LA, class LB>
static inline void mma_sync(fragment<accumulator, M, N, K, float> &d, const fragment<matrix_a, M, N, K, T, LA> &a,
                            const fragment<matrix_b, M, N, K, T, LB> &b, const fragment<accumulator, M, N, K, float> &c) {
    if (emu_lane() != 0) return;
    float out[M * N];
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            float s = c.x[i * N + j];
            for (int k = 0; k < K; k++) s += emu_operand<T>(a.x[i * K + k]) * emu_operand<T>(b.x[k * N + j]);
            out[i * N + j] = s;
        }
    for (int i = 0; i < M * N; i++) d.x[i] = out[i];
}
}  // namespace wmma
}  // namespace nvcuda
#include "emu_mma.h"   // mma.sync, ldmatrix, movmatrix (cuda/mma_fragments.cuh)
#endif

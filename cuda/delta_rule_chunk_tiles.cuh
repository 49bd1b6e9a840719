/* delta_rule_chunk_tiles.cuh: what both versions of the tensor-core chunk kernels
 * (delta_rule_chunk.cu, delta_rule_chunk_v1.cu) build on: padded shared-memory tiles, the WMMA
 * product mm(), per-thread loops over a tile, the blockwise unit-lower-triangular inverse, the
 * launch set-up (set_smem) and the EFLA_DELTA_RULE_PROFILE timer. One copy, so a fix to a
 * building block reaches both. */
#ifndef EFLA_CUDA_DELTA_RULE_CHUNK_TILES_CUH
#define EFLA_CUDA_DELTA_RULE_CHUNK_TILES_CUH
#ifndef EFLA_EMULATE_CUDA   /* bench/cuda/emu_cuda.h supplies the built-ins and WMMA on the host */
#include "kernels.cuh"
#include <mma.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <type_traits>
#ifndef EFLA_EMULATE_CUDA
#include <mutex>
#include <vector>
#endif

/* the block's dynamic shared memory (on the host emulator: one buffer, blocks run one at a time).
 * EFLA_SMEM_FITS(used, declared): on the emulator, a kernel's carving (used bytes) must fit the
 * size its launch asks for (declared; its *_smem() function), or the case fails; a GPU would
 * write past the block's allocation unseen until compute-sanitizer's memcheck. Empty on the GPU. */
#ifdef EFLA_EMULATE_CUDA
#define EFLA_DYNAMIC_SMEM(name) char *const name = emu_dynamic_smem
#define EFLA_SMEM_FITS(used, declared) emu_check_smem(__func__, (size_t)(used), (size_t)(declared))
#else
#define EFLA_DYNAMIC_SMEM(name) extern __shared__ __align__(128) char name[]
#define EFLA_SMEM_FITS(used, declared) ((void)0)
#endif

namespace {

using namespace nvcuda;

const int THREADS = 512;   /* 16 warps: these kernels run one or two blocks per SM, so the
                              * block itself must hide the latency of its short phases */
const int NWARP = THREADS / 32;

/* ---- which tokens a block's chunk holds ------------------------------------------------------- */
/* token row (in units of H-strided rows) of token r of chunk g for head h */
struct ChunkRows {
    int64_t first;   /* row index of token 0 of the chunk for head h: ((b*T + t0)*H + h) */
    int len;
};

/* chunk g's rows from a version's arguments P (p.seq: per sequence (b*T+start)*H, length,
 * first chunk; p.nseq sequences; p.H heads): a binary search for its sequence */
template <class P> __device__ ChunkRows chunk_rows(const P &p, int64_t g, int64_t h, int C) {
    int64_t lo = 0, hi = p.nseq - 1;
    while (lo < hi) {
        int64_t mid = (lo + hi + 1) / 2;
        if (p.seq[3 * mid + 2] <= g) lo = mid; else hi = mid - 1;
    }
    const int64_t c = g - p.seq[3 * lo + 2], start = c * C, rem = p.seq[3 * lo + 1] - start;
    ChunkRows r;
    r.first = p.seq[3 * lo] + start * p.H + h;
    r.len = (int)(rem < C ? rem : C);
    return r;
}

/* ---- shared-memory matrices ------------------------------------------------------------------ */
/* Row-major tiles of element E (bf16: the fast path's operands; float: accumulators, and the
 * operands of the float32 path) with rows padded by 16 bytes (8 bf16 / 4 float), which keeps
 * WMMA's 32-byte alignment and spreads a column over the shared-memory banks. */
template <class E> struct Tm { E *p; int ld; };
typedef Tm<bf16> Bm;
typedef Tm<float> Fm;
template <class E> constexpr int pad_of() { return 16 / (int)sizeof(E); }
template <class E> constexpr size_t tm_bytes(int rows, int cols) { return (size_t)rows * (cols + pad_of<E>()) * sizeof(E); }
constexpr size_t bm_bytes(int rows, int cols) { return tm_bytes<bf16>(rows, cols); }
constexpr size_t fm_bytes(int rows, int cols) { return tm_bytes<float>(rows, cols); }

struct Carver {
    char *base; size_t off;
    __device__ Carver(char *b) : base(b), off(0) {}
    template <class E> __device__ Tm<E> tm(int rows, int cols) {
        Tm<E> m{(E *)(base + off), cols + pad_of<E>()};
        off += tm_bytes<E>(rows, cols);
        return m;
    }
    template <class E> __device__ Tm<E> packed(int rows, int cols) {   /* unpadded: where shared memory is short */
        Tm<E> m{(E *)(base + off), cols};
        off += (size_t)rows * cols * sizeof(E);
        return m;
    }
    __device__ Bm bm(int rows, int cols) { return tm<bf16>(rows, cols); }
    __device__ Fm fm(int rows, int cols) { return tm<float>(rows, cols); }
};

/* one element to and from float (the tiles' arithmetic is in float) */
__device__ __forceinline__ float to_f(bf16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_f(float x) { return x; }
template <class E> __device__ __forceinline__ E from_f(float x);
template <> __device__ __forceinline__ bf16 from_f<bf16>(float x) { return __float2bfloat16(x); }
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
constexpr size_t max_bytes(size_t x, size_t y) { return x > y ? x : y; }

/* An H100's shared memory: 228 KB a multiprocessor (1 KB of it reserved per block), at most
 * 227 KB for one block (the opt-in limit) */
constexpr size_t SMEM_PER_SM = 233472, SMEM_PER_BLOCK_MAX = 232448;

/* Blocks of THREADS threads with this much dynamic shared memory that fit on a multiprocessor,
 * at most 2 (the register file's limit at 64 registers a thread). A kernel whose two blocks fit
 * is compiled for 2 (__launch_bounds__), so that registers don't keep the second block out. */
constexpr int fit_blocks(size_t bytes) { return 2 * (bytes + 1024) <= SMEM_PER_SM ? 2 : 1; }

/* The tensor-core product of one k step, by operand element: the fragments of a 16-row slice
 * of A and a 16-column slice of B (A<L>, B<L>, loaded from shared memory by load()) and
 * mma(c, a, b): c += a b on a 16 x 16 accumulator. bf16: one 16x16x16 product. float (the
 * float32 path): three 16x16x8 TF32 products of a split of each operand into a TF32 head and the
 * TF32 rounding of what the head misses (x = hi + lo to about 21 bits), taken as
 * lo_A hi_B + hi_A lo_B + hi_A hi_B (the lo_A lo_B term is below float32's precision; the small
 * terms go first): float32 accuracy (about 1e-6 relative) where a plain TF32 product keeps 11
 * bits. LA, LB: the operands' layouts in shared memory. */
template <class E> struct TileMma;
template <> struct TileMma<bf16> {
    static const int K = 16;
    typedef wmma::fragment<wmma::accumulator, 16, 16, 16, float> Acc;
    template <class L> using A = wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, L>;
    template <class L> using B = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, L>;
    template <class Frag> __device__ static void load(Frag &f, const bf16 *p, int ld) { wmma::load_matrix_sync(f, p, ld); }
    template <class FA, class FB> __device__ static void mma(Acc &c, const FA &a, const FB &b) { wmma::mma_sync(c, a, b, c); }
};
template <class Frag> __device__ __forceinline__ void split_tf32(Frag &hi, Frag &lo) {
    for (int i = 0; i < hi.num_elements; i++) {
        const float x = hi.x[i], h = wmma::__float_to_tf32(x);
        hi.x[i] = h;
        lo.x[i] = wmma::__float_to_tf32(x - h);
    }
}
template <class Frag> struct SplitTf32 { Frag hi, lo; };
template <> struct TileMma<float> {
    static const int K = 8;
    typedef wmma::fragment<wmma::accumulator, 16, 16, 8, float> Acc;
    template <class L> using A = SplitTf32<wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, L>>;
    template <class L> using B = SplitTf32<wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, L>>;
    template <class S> __device__ static void load(S &s, const float *p, int ld) {
        wmma::load_matrix_sync(s.hi, p, ld);
        split_tf32(s.hi, s.lo);
    }
    /* the step's three products into a fresh accumulator, then added to c in float on the
     * CUDA cores: the tensor cores' own addition of their accumulator input truncates, and
     * over a long k loop (three products per 8 of k) that bias reached 1e-5 of float32's
     * results (the float32 dbeta of test_cuda's large keys); so each truncation is now
     * relative to one step's partial sum only */
    template <class SA, class SB> __device__ static void mma(Acc &c, const SA &a, const SB &b) {
        Acc t;
        wmma::fill_fragment(t, 0.0f);
        wmma::mma_sync(t, a.lo, b.hi, t);
        wmma::mma_sync(t, a.hi, b.lo, t);
        wmma::mma_sync(t, a.hi, b.hi, t);
        for (int i = 0; i < c.num_elements; i++) c.x[i] += t.x[i];
    }
};

/* How mm() spreads an M x N output (in 16 x 16 tiles) over the warps: blocks of bm x bn tiles,
 * one warp's accumulators in registers for the whole k loop, the blocks round-robin over the
 * warps. A block loads bm + bn fragments per k step for bm bn products, so 2 x 2 blocks read
 * half the shared memory of single tiles (the products are bound by shared-memory reads, not by
 * the tensor cores); but a block shape is taken only while it leaves at least 4 blocks, one per
 * warp scheduler, so that every scheduler's tensor cores have work, and only up to TILES tiles
 * (warp_tiles: what the kernel's registers hold). Block b goes to warp (warp0 + b) % NWARP: a
 * product that follows an independent one without a barrier starts its blocks on the warps the
 * first left idle (warp0 = the first's count). */
struct WarpBlocks {
    int bm, bn, per_row, count;   /* block shape in tiles; blocks per block row; blocks in all */
    int first;                    /* this warp's first block */
};
template <int TILES> __device__ __forceinline__ WarpBlocks warp_blocks(int M, int N, int warp0) {
    const int tm = M / 16, tn = N / 16;
    int bm = 1, bn = 1;
    if (TILES >= 4 && tm % 2 == 0 && tn % 2 == 0 && (tm / 2) * (tn / 2) >= 4) bm = bn = 2;
    else if (TILES >= 2 && tn % 2 == 0 && tm * (tn / 2) >= 4) bn = 2;
    else if (TILES >= 2 && tm % 2 == 0 && (tm / 2) * tn >= 4) bm = 2;
    return WarpBlocks{bm, bn, tn / bn, (tm / bm) * (tn / bn), (int)(threadIdx.x / 32 + NWARP - warp0 % NWARP) % NWARP};
}

/* the number of warp blocks of an M x N product: the warp0 of an independent product after it */
template <int TILES> __device__ __forceinline__ int blocks_of(int M, int N) { return warp_blocks<TILES>(M, N, 0).count; }

/* c[][] += op(A) op(B) over k in [0, K) for the block at tile (i0, j0), k in order */
template <int BM, int BN, bool TA, bool TB, class E>
__device__ __forceinline__ void mm_accumulate(typename TileMma<E>::Acc (&c)[BM][BN], Tm<E> A, Tm<E> B, int K, int i0, int j0) {
    typedef typename std::conditional<TA, wmma::col_major, wmma::row_major>::type LA;
    typedef typename std::conditional<TB, wmma::col_major, wmma::row_major>::type LB;
    typedef TileMma<E> Op;
    for (int k = 0; k < K; k += Op::K) {
        typename Op::template A<LA> fa[BM];
        typename Op::template B<LB> fb[BN];
#pragma unroll
        for (int x = 0; x < BM; x++) {
            const int i = (i0 + x) * 16;
            Op::load(fa[x], TA ? A.p + k * A.ld + i : A.p + i * A.ld + k, A.ld);
        }
#pragma unroll
        for (int y = 0; y < BN; y++) {
            const int j = (j0 + y) * 16;
            Op::load(fb[y], TB ? B.p + j * B.ld + k : B.p + k * B.ld + j, B.ld);
        }
#pragma unroll
        for (int x = 0; x < BM; x++)
#pragma unroll
            for (int y = 0; y < BN; y++) Op::mma(c[x][y], fa[x], fb[y]);
    }
}

/* mm2()'s work for one block shape BM x BN (tiles): each of this warp's blocks, its
 * accumulators loaded (acc) or zeroed, both products, one store. s1 != 1: the first product
 * times s1 in float (it then starts from zero, and what C held is added after the scaling) */
template <int BM, int BN, bool TA1, bool TB1, bool TA2, bool TB2, class E>
__device__ void mm_blocks(Tm<E> A1, Tm<E> B1, int K1, Tm<E> A2, Tm<E> B2, int K2, Fm Cm, bool acc, const WarpBlocks wb,
                          float s1) {
    for (int t = wb.first; t < wb.count; t += NWARP) {
        const int i0 = t / wb.per_row * BM, j0 = t % wb.per_row * BN;   /* the block's first tile */
        typename TileMma<E>::Acc c[BM][BN];
#pragma unroll
        for (int x = 0; x < BM; x++)
#pragma unroll
            for (int y = 0; y < BN; y++) {
                if (acc && s1 == 1.0f) wmma::load_matrix_sync(c[x][y], Cm.p + (i0 + x) * 16 * Cm.ld + (j0 + y) * 16, Cm.ld, wmma::mem_row_major);
                else wmma::fill_fragment(c[x][y], 0.0f);
            }
        mm_accumulate<BM, BN, TA1, TB1>(c, A1, B1, K1, i0, j0);
        if (s1 != 1.0f) {
#pragma unroll
            for (int x = 0; x < BM; x++)
#pragma unroll
                for (int y = 0; y < BN; y++) {
                    for (int i = 0; i < c[x][y].num_elements; i++) c[x][y].x[i] *= s1;
                    if (acc) {
                        typename TileMma<E>::Acc held;
                        wmma::load_matrix_sync(held, Cm.p + (i0 + x) * 16 * Cm.ld + (j0 + y) * 16, Cm.ld, wmma::mem_row_major);
                        for (int i = 0; i < c[x][y].num_elements; i++) c[x][y].x[i] += held.x[i];
                    }
                }
        }
        if (K2 > 0) mm_accumulate<BM, BN, TA2, TB2>(c, A2, B2, K2, i0, j0);
#pragma unroll
        for (int x = 0; x < BM; x++)
#pragma unroll
            for (int y = 0; y < BN; y++)
                wmma::store_matrix_sync(Cm.p + (i0 + x) * 16 * Cm.ld + (j0 + y) * 16, c[x][y], Cm.ld, wmma::mem_row_major);
    }
}

/* Output tiles a warp may keep in registers in mm() (its blocks' accumulators and their
 * fragments), for a kernel of this much shared memory: two blocks per multiprocessor leave 64
 * registers a thread, one block 128; float's fragments are split in two (TileMma<float>). */
template <class E> constexpr int warp_tiles(size_t smem_bytes) {
    return (fit_blocks(smem_bytes) == 2 ? 2 : 4) / (sizeof(E) == 4 ? 2 : 1);
}

/* C (M x N, float) (+)= op(A1) op(B1) + op(A2) op(B2), op(A1) M x K1, op(B1) K1 x N (and the
 * same with K2; K2 = 0: the first product alone), every size a multiple of 16, the sum kept in
 * registers between the two. TA: A is stored K x M (so op(A) = A^T); TB: B is stored N x K.
 * Each warp owns the output tiles of its blocks (warp_blocks: the same for every product of the
 * same M, N, TILES and warp0, which lets two products into the same C follow each other without
 * a barrier). Callers synchronise before reading C. The operands' element E picks the product
 * (TileMma<E>: bf16, or the float32 path's three TF32 products). TILES: warp_tiles of the
 * calling kernel (1: one tile at a time, as version 1 runs). s1: a factor on the first product,
 * applied in float (a scale there costs no rounding of an operand). */
template <bool TA1, bool TB1, bool TA2, bool TB2, int TILES = 1, class E>
__device__ void mm2(Tm<E> A1, Tm<E> B1, int K1, Tm<E> A2, Tm<E> B2, int K2, Fm Cm, int M, int N, bool acc, int warp0 = 0,
                    float s1 = 1.0f) {
    const WarpBlocks wb = warp_blocks<TILES>(M, N, warp0);
    if (wb.bm == 2 && wb.bn == 2) mm_blocks<2, 2, TA1, TB1, TA2, TB2>(A1, B1, K1, A2, B2, K2, Cm, acc, wb, s1);
    else if (wb.bn == 2) mm_blocks<1, 2, TA1, TB1, TA2, TB2>(A1, B1, K1, A2, B2, K2, Cm, acc, wb, s1);
    else if (wb.bm == 2) mm_blocks<2, 1, TA1, TB1, TA2, TB2>(A1, B1, K1, A2, B2, K2, Cm, acc, wb, s1);
    else mm_blocks<1, 1, TA1, TB1, TA2, TB2>(A1, B1, K1, A2, B2, K2, Cm, acc, wb, s1);
}

/* C (M x N, float) (+)= op(A) op(B): mm2's first product alone */
template <bool TA, bool TB, int TILES = 1, class E>
__device__ void mm(Tm<E> A, Tm<E> B, Fm Cm, int M, int N, int K, bool acc, int warp0 = 0) {
    mm2<TA, TB, TA, TB, TILES>(A, B, K, A, B, 0, Cm, M, N, acc, warp0);
}

/* f(r, c) for every four adjacent elements (r, c .. c + 3; c a multiple of 4) of every output
 * tile this warp wrote in the last mm() or mm2() of this M, N, TILES and warp0 (after a
 * __syncwarp: the tile's stores are then visible to all its lanes), so that f loads and stores
 * vectors (get4, put4). An elementwise pass that reads only the product's own tiles, and writes
 * only where no other warp reads during the product, needs no block barrier between the two: a
 * barrier fewer on a latency-bound path. */
template <int TILES, class F> __device__ void then_each(int M, int N, F f, int warp0 = 0) {
    __syncwarp();
    const int lane = threadIdx.x % 32;
    const WarpBlocks wb = warp_blocks<TILES>(M, N, warp0);
    for (int t = wb.first; t < wb.count; t += NWARP) {   /* mm's blocks of this warp */
        const int r0 = t / wb.per_row * wb.bm * 16, c0 = t % wb.per_row * wb.bn * 16;
        for (int e = lane; e < 64 * wb.bm * wb.bn; e += 32)   /* the block's rows, four columns a call */
            f(r0 + e / (4 * wb.bn), c0 + e % (4 * wb.bn) * 4);
    }
}

/* mm(), then f over this warp's tiles of it (then_each) */
template <bool TA, bool TB, int TILES = 1, class E, class F>
__device__ void mm_then(Tm<E> A, Tm<E> B, Fm Cm, int M, int N, int K, bool acc, F f) {
    mm<TA, TB, TILES>(A, B, Cm, M, N, K, acc);
    then_each<TILES>(M, N, f);
}

/* f(r, c) over a ROWS x COLS index space, spread over the block (compile-time sizes: the
 * divisions are shifts) */
template <int ROWS, int COLS, class F> __device__ __forceinline__ void each(F f) {
    for (int e = threadIdx.x; e < ROWS * COLS; e += THREADS) f(e / COLS, e % COLS);
}

/* each<> for a copy from global memory: every load of this thread first, into registers, then
 * every store (st(r, c, value)). A plain loop would wait out one load's latency per element,
 * since the compiler cannot move a global load past a store through another pointer. */
template <int ROWS, int COLS, class Load, class Store> __device__ __forceinline__ void each_copy(Load ld, Store st) {
    constexpr int TOTAL = ROWS * COLS, PER = (TOTAL + THREADS - 1) / THREADS;
    decltype(ld(0, 0)) val[PER];
#pragma unroll
    for (int i = 0; i < PER; i++) {
        const int e = threadIdx.x + i * THREADS;
        if (TOTAL % THREADS == 0 || e < TOTAL) val[i] = ld(e / COLS, e % COLS);
    }
#pragma unroll
    for (int i = 0; i < PER; i++) {
        const int e = threadIdx.x + i * THREADS;
        if (TOTAL % THREADS == 0 || e < TOTAL) st(e / COLS, e % COLS, val[i]);
    }
}

/* the elements of one 16-byte vector (8 bf16 / 4 float) times mult, rounded back to E (how
 * load_rows scales) */
template <class E> __device__ __forceinline__ void scale_vec(E *h, float mult) {
    for (int x = 0; x < pad_of<E>(); x++) h[x] = from_f<E>(to_f(h[x]) * mult);
}

/* rows [0, R) x cols [0, N) of a token-major global matrix (row r at src + r*stride) into
 * shared memory in 16-byte vectors; rows >= len are zero. mult scales the values. */
template <int R, int N, class E>
__device__ void load_rows(Tm<E> dst, const E *src, int64_t stride, int len, float mult = 1.0f) {
    constexpr int V = pad_of<E>();   /* elements per vector */
    each_copy<R, N / V>(
        [&](int r, int v) { return r < len ? *(const uint4 *)(src + r * stride + v * V) : make_uint4(0, 0, 0, 0); },
        [&](int r, int v, uint4 val) {
            if (mult != 1.0f) scale_vec((E *)&val, mult);
            *(uint4 *)(dst.p + r * dst.ld + v * V) = val;
        });
}

/* four floats to dst in its element type */
__device__ __forceinline__ void put4(float *dst, float4 x) { *(float4 *)dst = x; }
__device__ __forceinline__ void put4(bf16 *dst, float4 x) {
    __nv_bfloat162 a = __floats2bfloat162_rn(x.x, x.y), b = __floats2bfloat162_rn(x.z, x.w);
    uint2 u;
    u.x = *(unsigned *)&a;
    u.y = *(unsigned *)&b;
    *(uint2 *)dst = u;
}
__device__ __forceinline__ float4 scale4(float4 x, float m) { return make_float4(x.x * m, x.y * m, x.z * m, x.w * m); }

/* four elements of E as floats (a vector load: 8-byte aligned bf16, 16-byte aligned float) */
__device__ __forceinline__ float4 get4(const float *src) { return *(const float4 *)src; }
__device__ __forceinline__ float4 get4(const bf16 *src) {
    union { uint2 u; bf16 h[4]; } v;
    v.u = *(const uint2 *)src;
    return make_float4(to_f(v.h[0]), to_f(v.h[1]), to_f(v.h[2]), to_f(v.h[3]));
}
__device__ __forceinline__ float4 sub4(float4 x, float4 y) { return make_float4(x.x - y.x, x.y - y.y, x.z - y.z, x.w - y.w); }

/* f(r, c) for mm_then: dst = tril(src) in dst's element type at (r, c .. c + 3), zero above
 * the diagonal, one vector store (dst may be global memory: a tile is a pointer and a row
 * stride; its rows keep 8 bytes' alignment). For each<R, N / 4>: call it with (r, 4 v). */
template <class E> __device__ __forceinline__ auto tril_to(Tm<E> dst, Fm src, float s = 1.0f) {
    return [=](int r, int c) {
        const float4 x = scale4(get4(src.p + r * src.ld + c), s);
        put4(dst.p + r * dst.ld + c, make_float4(c <= r ? x.x : 0.0f, c + 1 <= r ? x.y : 0.0f, c + 2 <= r ? x.z : 0.0f,
                                                 c + 3 <= r ? x.w : 0.0f));
    };
}

/* a row-major R x N float32 global matrix (leading dimension ldg) into shared bf16 */
template <int R, int N>
__device__ void load_state_bf16(Bm dst, const float *src, int64_t ldg) {
    each_copy<R, N / 4>([&](int r, int v) { return *(const float4 *)(src + r * ldg + v * 4); },
                        [&](int r, int v, float4 x) { put4(dst.p + r * dst.ld + v * 4, x); });
}

/* shared float -> a shared tile of element E (bf16: rounded), with an optional factor */
template <int R, int N, class E>
__device__ void to_tile(Tm<E> dst, Fm src, float mult = 1.0f) {
    each<R, N / 4>([&](int r, int v) { put4(dst.p + r * dst.ld + v * 4, scale4(*(float4 *)(src.p + r * src.ld + v * 4), mult)); });
}

/* to_tile and store_state in one pass (the scans' chunk-step top: each float of the state read
 * once, rounded once, to the shared tile and, where g is set, to global rows of leading
 * dimension ldg) */
template <int R, int N, class E>
__device__ void to_tile_and_store(Tm<E> dst, E *g, int64_t ldg, Fm src) {
    each<R, N / 4>([&](int r, int v) {
        const float4 x = get4(src.p + r * src.ld + v * 4);
        put4(dst.p + r * dst.ld + v * 4, x);
        if (g) put4(g + r * ldg + v * 4, x);
    });
}

/* shared float rows [0, len) -> global token-major rows of element E */
template <int R, int N, class E>
__device__ void store_rows(E *dst, int64_t stride, Fm src, int len, float mult = 1.0f) {
    each<R, N / 4>([&](int r, int v) {
        if (r < len) put4(dst + r * stride + v * 4, scale4(*(float4 *)(src.p + r * src.ld + v * 4), mult));
    });
}

/* shared float R x N -> global rows of element E (leading dimension ldg); bf16 rounded as
 * load_state_bf16 rounds */
template <int R, int N, class E>
__device__ void store_state(E *dst, int64_t ldg, Fm src) {
    each<R, N / 4>([&](int r, int v) { put4(dst + r * ldg + v * 4, *(float4 *)(src.p + r * src.ld + v * 4)); });
}

/* global float R x N (leading dimension ldg) -> shared float; zero when src is NULL */
template <int R, int N>
__device__ void load_state(Fm dst, const float *src, int64_t ldg) {
    each_copy<R, N / 4>(
        [&](int r, int v) { return src ? *(const float4 *)(src + r * ldg + v * 4) : make_float4(0, 0, 0, 0); },
        [&](int r, int v, float4 x) { *(float4 *)(dst.p + r * dst.ld + v * 4) = x; });
}

/* X = (I + L)^-1 for L_ij = a_i G_ij (i > j), unit lower triangular, blockwise with 16 x 16
 * blocks. Each diagonal block is inverted by forward substitution inside one warp, in
 * registers (lane: one column, eight rows; row m of the block reaches the other lanes by a
 * shuffle at step m). Then blocks of twice the size are assembled from pairs of finished ones,
 * 16 -> 32 -> 64, on the tensor cores:
 *   [X11 0; X21 X22] with X21 = -X22 L21 X11 = X22 Y,  Y = -diag(a) G21 X11
 * (each level's pairs side by side on different warps; mm() on float operands: the three-TF32
 * products, float32's accuracy). Two block barriers a level. The earlier scalar merge, one
 * sub-diagonal at a time, read two shared-memory floats per multiply-add and took a third of
 * prep's time. scratch: (C / 2) x (C / 2 + 4) floats. */
template <int C> __device__ void unit_lower_inverse(Fm X, Fm G, const float *a, float *scratch) {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    each<C, C / 4>([&](int r, int v) {   /* zero above the diagonal blocks (four columns never straddle a block) */
        if (r / 16 < v / 4) *(float4 *)(X.p + r * X.ld + 4 * v) = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    });
    if (warp < C / 16) {
        const int b0 = warp * 16, j = lane % 16, h8 = (lane / 16) * 8;   /* this lane: X[b0 + h8 + r][b0 + j] */
        float x[8], al[8];
#pragma unroll
        for (int r = 0; r < 8; r++) {
            x[r] = h8 + r == j ? 1.0f : 0.0f;
            al[r] = a[b0 + h8 + r];
        }
#pragma unroll
        for (int m = 0; m < 15; m++) {   /* rows below m lose L_im times row m (final by now) */
            const float xm = __shfl_sync(0xffffffffu, x[m % 8], (m / 8) * 16 + j);
#pragma unroll
            for (int r = 0; r < 8; r++)
                if (h8 + r > m) x[r] -= al[r] * G.p[(b0 + h8 + r) * G.ld + b0 + m] * xm;
        }
#pragma unroll
        for (int r = 0; r < 8; r++) X.p[(b0 + h8 + r) * X.ld + b0 + j] = x[r];
    }
    __syncthreads();
#pragma unroll
    for (int b = 16; b < C; b *= 2) {   /* pairs of b x b blocks into 2b x 2b ones */
        const int pairs = C / (2 * b), tiles = (b / 16) * (b / 16);
        auto Y = [&](int pr) { return Fm{scratch + pr * b * (b + 4), b + 4}; };
        auto at = [&](Fm m, int r, int c) { return Fm{m.p + r * m.ld + c, m.ld}; };
        for (int pr = 0; pr < pairs; pr++) {   /* Y = -diag(a) G21 X11, pair pr on warps pr * tiles ... */
            const int r0 = 2 * b * pr;
            const Fm y = Y(pr);
            mm<false, false>(at(G, r0 + b, r0), at(X, r0, r0), y, b, b, b, false, pr * tiles);
            then_each<1>(b, b, [&](int r, int c) {
                const float s = -a[r0 + b + r];
                put4(y.p + r * y.ld + c, scale4(get4(y.p + r * y.ld + c), s));
            }, pr * tiles);
        }
        __syncthreads();
        for (int pr = 0; pr < pairs; pr++) {   /* X21 = X22 Y */
            const int r0 = 2 * b * pr;
            mm<false, false>(at(X, r0 + b, r0 + b), Y(pr), at(X, r0 + b, r0), b, b, b, false, pr * tiles);
        }
        __syncthreads();
    }
}

#ifndef EFLA_EMULATE_CUDA
/* Sets kernel up for `bytes` of dynamic shared memory (and the whole L1/shared split to shared
 * memory, so that fit_blocks' second block fits) and says in *fits whether that fits the
 * device. Each launch path asks for every kernel it may run, on every call, so what a device
 * answered is kept: done once per kernel, size and device, not in every training step. */
template <typename K> int set_smem(K kernel, size_t bytes, bool *fits) {
    struct Seen { const void *fn; int dev; size_t bytes; bool fits; };
    static std::mutex mu;
    static std::vector<Seen> seen;
    int dev = 0;
    CU_CHECK(cudaGetDevice(&dev));
    {
        std::lock_guard<std::mutex> lock(mu);
        for (const Seen &e : seen)
            if (e.fn == (const void *)kernel && e.dev == dev && e.bytes == bytes) { *fits = e.fits; return 0; }
    }
    int maxs = 0;
    CU_CHECK(cudaDeviceGetAttribute(&maxs, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    *fits = bytes <= (size_t)maxs;
    if (*fits && bytes > 48 * 1024) CU_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
    if (*fits) CU_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout, (int)cudaSharedmemCarveoutMaxShared));
    std::lock_guard<std::mutex> lock(mu);
    seen.push_back(Seen{(const void *)kernel, dev, bytes, *fits});
    return 0;
}

/* EFLA_DELTA_RULE_PROFILE=1: each kernel's time on stderr (events around each launch; the
 * synchronisation this adds makes it a measuring aid only) */
struct Profile {
    bool on = getenv("EFLA_DELTA_RULE_PROFILE") != nullptr;
    cudaEvent_t ev[8];
    const char *names[8];
    int n = 0;
    Profile() { if (on) for (int i = 0; i < 8; i++) cudaEventCreate(&ev[i]); }
    void mark(const char *name) { if (on && n < 8) { names[n] = name; cudaEventRecord(ev[n++]); } }
    ~Profile() {
        if (!on || n < 2) return;
        cudaEventSynchronize(ev[n - 1]);
        for (int i = 1; i < n; i++) {
            float ms = 0;
            cudaEventElapsedTime(&ms, ev[i - 1], ev[i]);
            fprintf(stderr, "delta_rule_chunk %-10s %8.3f ms\n", names[i], ms);
        }
        for (int i = 0; i < 8; i++) cudaEventDestroy(ev[i]);
    }
};
#endif

} // namespace
#endif

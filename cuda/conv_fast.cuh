/* conv_fast.cuh: the fast paths of fused.cu for contiguous float32/bfloat16 data (vec_io.cuh):
 * SwiGLU eight elements a thread, and the causal short convolution (+ SiLU) a channel pair per
 * thread walking a tile of time steps with its last K inputs in registers, so each input is
 * read once; its backward writes dx (and the cache's gradient) and per-tile dw/dbias sums in
 * one pass, which col_sum_kernel adds. The generic kernels of fused.cu re-read K inputs per
 * output and K^2 per input gradient, with 64-bit divisions per element: 50 us forward and
 * 330 us backward per call for 8192 x 512 bf16 (ncu on an H100, kernels serialised and clocks
 * locked, in the byte LM's step), where moving the data once would take some 6 and 12 us (an
 * estimate from the bandwidth). Compiled on the host too by bench/cuda/fast_paths_emu.cpp. */
#ifndef EFLA_CUDA_CONV_FAST_CUH
#define EFLA_CUDA_CONV_FAST_CUH
#include "vec_io.cuh"

template <class T> __global__ void swiglu_fwd8(T *o, const T *g, const T *u, int64_t n8) {
    CU_GRID_STRIDE(i, n8) {
        float gv[8], uv[8];
        load8(g + i * 8, gv);
        load8(u + i * 8, uv);
#pragma unroll
        for (int k = 0; k < 8; k++) gv[k] = gv[k] * sigmoid_fast(gv[k]) * uv[k];
        store8(o + i * 8, gv);
    }
}
template <class T> __global__ void swiglu_bwd8(T *dg, T *du, const T *d, const T *g, const T *u, int64_t n8) {
    CU_GRID_STRIDE(i, n8) {
        float gv[8], uv[8], dv[8], a[8];
        load8(g + i * 8, gv);
        load8(u + i * 8, uv);
        load8(d + i * 8, dv);
#pragma unroll
        for (int k = 0; k < 8; k++) {
            float x = gv[k], sg = sigmoid_fast(x);
            a[k] = dv[k] * x * sg;
            gv[k] = dv[k] * uv[k] * sg * (1.f + x * (1.f - sg));
        }
        store8(du + i * 8, a);
        store8(dg + i * 8, gv);
    }
}

const int SC_PAIRS = 128;             /* threads (channel pairs) per block */
const int SC_TT_FWD = 32, SC_TT_BWD = 64;   /* time steps per block */

struct ScFast { int64_t T, C; int silu; };

/* input at time s of channel pair c (s < 0: the cache row K-1+s, or zero) */
template <class T, int K> __device__ __forceinline__ float2 sc_in2(const T *x, const T *cache, const ScFast &d,
                                                                   int64_t b, int64_t s, int64_t c) {
    if (s >= 0) return load2(x + (b * d.T + s) * d.C + c);
    if (!cache) return make_float2(0.f, 0.f);
    return load2(cache + (b * (K - 1) + (K - 1) + s) * d.C + c);
}
__device__ __forceinline__ float2 fma2(float2 w, float2 x, float2 a) { return make_float2(fmaf(w.x, x.x, a.x), fmaf(w.y, x.y, a.y)); }
__device__ __forceinline__ float silu_grad(float g, float p) { float s = sigmoid_fast(p); return g * s * (1.f + p * (1.f - s)); }

template <class T, int K>
__global__ void sc_fast_fwd(T *o, const T *x, const T *cache, const T *w, const T *bias, ScFast d) {
    int64_t c = ((int64_t)blockIdx.x * SC_PAIRS + threadIdx.x) * 2;
    if (c >= d.C) return;
    int64_t b = blockIdx.z, t0 = (int64_t)blockIdx.y * SC_TT_FWD, t1 = min(t0 + SC_TT_FWD, d.T);
    float2 wv[K], win[K], bv = bias ? make_float2(load1(bias + c), load1(bias + c + 1)) : make_float2(0.f, 0.f);
#pragma unroll
    for (int j = 0; j < K; j++) wv[j] = make_float2(load1(w + c * K + j), load1(w + (c + 1) * K + j));
#pragma unroll
    for (int j = 0; j < K - 1; j++) win[j] = sc_in2<T, K>(x, cache, d, b, t0 - (K - 1) + j, c);
    for (int64_t t = t0; t < t1; t++) {
        win[K - 1] = load2(x + (b * d.T + t) * d.C + c);
        float2 p = bv;
#pragma unroll
        for (int j = 0; j < K; j++) p = fma2(wv[j], win[j], p);
        if (d.silu) { p.x *= sigmoid_fast(p.x); p.y *= sigmoid_fast(p.y); }
        store2(o + (b * d.T + t) * d.C + c, p);
#pragma unroll
        for (int j = 0; j < K - 1; j++) win[j] = win[j + 1];
    }
}

/* dx (and dcache) of the tile's own inputs, and part[(b, tile)][c][0..K] = the tile's sums of
 * dpre * input (dw) and dpre (dbias). The input gradient at s needs dpre(s .. s+K-1), so the
 * walk runs K-1 steps past the tile (dpre = 0 past T). */
template <class T, int K>
__global__ void sc_fast_bwd(T *dx, T *dcache, float *part, const T *dy, const T *x, const T *cache, const T *w,
                            const T *bias, ScFast d) {
    int64_t c = ((int64_t)blockIdx.x * SC_PAIRS + threadIdx.x) * 2;
    if (c >= d.C) return;
    int64_t b = blockIdx.z, t0 = (int64_t)blockIdx.y * SC_TT_BWD, t1 = min(t0 + SC_TT_BWD, d.T);
    int64_t emit0 = (t0 == 0 && dcache) ? -(K - 1) : t0;
    float2 wv[K], win[K], dwin[K], acc[K + 1];
    float2 bv = bias ? make_float2(load1(bias + c), load1(bias + c + 1)) : make_float2(0.f, 0.f);
#pragma unroll
    for (int j = 0; j < K; j++) {
        wv[j] = make_float2(load1(w + c * K + j), load1(w + (c + 1) * K + j));
        dwin[j] = make_float2(0.f, 0.f);
    }
#pragma unroll
    for (int j = 0; j <= K; j++) acc[j] = make_float2(0.f, 0.f);
#pragma unroll
    for (int j = 0; j < K - 1; j++) win[j] = sc_in2<T, K>(x, cache, d, b, t0 - (K - 1) + j, c);
    for (int64_t t = t0; t < t1 + K - 1; t++) {
        float2 g = make_float2(0.f, 0.f);
        if (t < d.T) {
            win[K - 1] = load2(x + (b * d.T + t) * d.C + c);
            g = load2(dy + (b * d.T + t) * d.C + c);
            if (d.silu) {
                float2 p = bv;
#pragma unroll
                for (int j = 0; j < K; j++) p = fma2(wv[j], win[j], p);
                g = make_float2(silu_grad(g.x, p.x), silu_grad(g.y, p.y));
            }
            if (t < t1) {
#pragma unroll
                for (int j = 0; j < K; j++) acc[j] = fma2(g, win[j], acc[j]);
                acc[K].x += g.x; acc[K].y += g.y;
            }
#pragma unroll
            for (int j = 0; j < K - 1; j++) win[j] = win[j + 1];
        }
#pragma unroll
        for (int j = 0; j < K - 1; j++) dwin[j] = dwin[j + 1];
        dwin[K - 1] = g;
        int64_t s = t - (K - 1);
        if (s >= emit0 && s < t1) {
            float2 a = make_float2(0.f, 0.f);
#pragma unroll
            for (int j = 0; j < K; j++) a = fma2(wv[j], dwin[K - 1 - j], a);
            if (s >= 0) store2(dx + (b * d.T + s) * d.C + c, a);
            else store2(dcache + (b * (K - 1) + (K - 1) + s) * d.C + c, a);
        }
    }
    float *pr = part + ((int64_t)blockIdx.z * gridDim.y + blockIdx.y) * d.C * (K + 1);
#pragma unroll
    for (int j = 0; j <= K; j++) { pr[c * (K + 1) + j] = acc[j].x; pr[(c + 1) * (K + 1) + j] = acc[j].y; }
}

/* column j = c (K + 1) + k of the partial sums: dw[c][k] for k < K, dbias[c] for k = K */
template <class T> struct ScDwStore {
    T *dw, *db;
    int K;
    __device__ void operator()(int64_t j, double s) const {
        int64_t c = j / (K + 1), k = j % (K + 1);
        if (k < K) store1(dw + c * K + k, s);
        else if (db) store1(db + c, s);
    }
};

#endif

/* norm_fast.cuh: nn.cu's fast path for RMSNorm/LayerNorm on float32/bfloat16 rows of a multiple
 * of 8 elements: what a language model calls. x, out, dy and dx of one dtype T, weight/bias of
 * one dtype W (float32 or bfloat16), the row statistics float32, 16-byte aligned rows. One warp
 * per row, eight elements per lane per access (vec_io.cuh), float sums; the weight gradient as
 * per-segment column sums (a block: 64 columns x a segment of rows, 8 row lanes meeting in
 * shared memory) that col_sum_kernel adds. nn.cu's double kernels serve everything else.
 * Before this path (ncu on an H100, kernels serialised and clocks locked; the byte LM's bf16
 * step, 8192 rows of 512): forward 38 us, backward 60 us + 70 us (dw partials) + 135-510 us
 * (their sum, one thread per column).
 * Compiled on the host too by bench/cuda/fast_paths_emu.cpp. */
#ifndef EFLA_CUDA_NORM_FAST_CUH
#define EFLA_CUDA_NORM_FAST_CUH
#include "vec_io.cuh"

template <class T, class W> struct NormFast {
    int64_t rows, D;
    const T *x, *dy;
    const W *w, *b;
    T *out, *dx;
    float *mean, *rstd;   /* [rows]; mean unused (may be null) for RMSNorm's backward */
    float eps;
    int rms;
};

#define NORM_FAST_ROWS(r, a)                                                                  \
    const int lane = threadIdx.x % 32;                                                        \
    for (int64_t r = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) / 32; r < (a).rows;     \
         r += (int64_t)gridDim.x * blockDim.x / 32)

template <class T, class W> __global__ void norm_fast_fwd(NormFast<T, W> a) {
    NORM_FAST_ROWS(r, a) {
        const T *xr = a.x + r * a.D;
        float f[8], mu = 0, ss = 0;
        if (!a.rms) {
            for (int64_t i = lane * 8; i < a.D; i += 256) {
                load8(xr + i, f);
#pragma unroll
                for (int k = 0; k < 8; k++) mu += f[k];
            }
            mu = warp_sum(mu) / (float)a.D;
        }
        for (int64_t i = lane * 8; i < a.D; i += 256) {
            load8(xr + i, f);
#pragma unroll
            for (int k = 0; k < 8; k++) ss += (f[k] - mu) * (f[k] - mu);
        }
        float rs = rsqrtf(warp_sum(ss) / (float)a.D + a.eps);
        for (int64_t i = lane * 8; i < a.D; i += 256) {
            float wv[8], bv[8];
            load8(xr + i, f);
            if (a.w) load8(a.w + i, wv);
            if (a.b) load8(a.b + i, bv);
#pragma unroll
            for (int k = 0; k < 8; k++) {
                f[k] = (f[k] - mu) * rs;
                if (a.w) f[k] *= wv[k];
                if (a.b) f[k] += bv[k];
            }
            store8(a.out + r * a.D + i, f);
        }
        if (lane == 0) {
            if (a.mean) a.mean[r] = mu;
            if (a.rstd) a.rstd[r] = rs;
        }
    }
}

/* dx = rs (dxh - mean(dxh) - xh mean(dxh xh)), dxh = dy w (the mean(dxh) term only for LayerNorm) */
template <class T, class W> __global__ void norm_fast_bwd(NormFast<T, W> a) {
    NORM_FAST_ROWS(r, a) {
        const T *xr = a.x + r * a.D, *dr = a.dy + r * a.D;
        float mu = a.rms ? 0.f : a.mean[r], rs = a.rstd[r];
        float xv[8], dxh[8], sa = 0, sb = 0;
        /* x and dxh = dy w of the 8 columns at i; both passes reload them (the row is not kept
         * in registers) */
        auto load = [&](int64_t i) {
            float wv[8];
            load8(xr + i, xv);
            load8(dr + i, dxh);
            if (a.w) {
                load8(a.w + i, wv);
#pragma unroll
                for (int k = 0; k < 8; k++) dxh[k] *= wv[k];
            }
        };
        for (int64_t i = lane * 8; i < a.D; i += 256) {
            load(i);
#pragma unroll
            for (int k = 0; k < 8; k++) {
                sa += dxh[k];
                sb += dxh[k] * (xv[k] - mu) * rs;
            }
        }
        sa = a.rms ? 0.f : warp_sum(sa) / (float)a.D;
        sb = warp_sum(sb) / (float)a.D;
        for (int64_t i = lane * 8; i < a.D; i += 256) {
            load(i);
#pragma unroll
            for (int k = 0; k < 8; k++) xv[k] = rs * (dxh[k] - sa - (xv[k] - mu) * rs * sb);
            store8(a.dx + r * a.D + i, xv);
        }
    }
}

/* part[seg][0][j] = sum of dy xhat, part[seg][1][j] = sum of dy, over the rows of segment
 * blockIdx.y, for the column pair of thread x (blockDim 32 x 8; the 8 row lanes meet in shared
 * memory); grid.x = ceil(D / 64). */
template <class T, class W> __global__ void norm_fast_wb_partial(NormFast<T, W> a, int segs, float *part) {
    __shared__ float sh[4][8][33];
    int64_t c = ((int64_t)blockIdx.x * 32 + threadIdx.x) * 2;
    int64_t seg = blockIdx.y, r0 = a.rows * seg / segs, r1 = a.rows * (seg + 1) / segs;
    float dw0 = 0, dw1 = 0, db0 = 0, db1 = 0;
    if (c < a.D)
        for (int64_t r = r0 + threadIdx.y; r < r1; r += 8) {
            float mu = a.rms ? 0.f : a.mean[r], rs = a.rstd[r];
            float2 x = load2(a.x + r * a.D + c), d = load2(a.dy + r * a.D + c);
            dw0 += d.x * (x.x - mu) * rs;
            dw1 += d.y * (x.y - mu) * rs;
            db0 += d.x;
            db1 += d.y;
        }
    sh[0][threadIdx.y][threadIdx.x] = dw0;
    sh[1][threadIdx.y][threadIdx.x] = dw1;
    sh[2][threadIdx.y][threadIdx.x] = db0;
    sh[3][threadIdx.y][threadIdx.x] = db1;
    __syncthreads();
    if (threadIdx.y < 4 && c < a.D) {
        float s = 0;
        for (int k = 0; k < 8; k++) s += sh[threadIdx.y][k][threadIdx.x];
        int which = threadIdx.y / 2, odd = threadIdx.y % 2;   /* which 0: dw, 1: db */
        part[(seg * 2 + which) * a.D + c + odd] = s;
    }
}

/* col_sum_kernel's store for the [segs][2][D] partials: dw (j < D), then db, in W */
template <class W> struct NormWbStore {
    int64_t D;
    W *gw, *gb;
    __device__ void operator()(int64_t j, double s) const {
        if (j < D) { if (gw) store1(gw + j, (float)s); }
        else if (gb) store1(gb + (j - D), (float)s);
    }
};

#endif

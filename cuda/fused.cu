/* fused.cu: CUDA kernels of the fused layers (efla_fused_kernels, core/backend.h; front ends in
 * core/ops_fused.c; CPU reference in core/cpu/fused.c). float32, bfloat16 and float64 data, sums
 * in float32 (double for float64). Every tensor is contiguous. Nothing here synchronises with
 * the host: a target out of range in ce_rows gives a NaN loss instead of an error.
 *
 *   swiglu            elementwise, grid-stride
 *   short_conv        one thread per output (K taps); backward: one thread per input for
 *                     dx/dcache (recomputing the K pre-activations it feeds), and per-channel
 *                     column sums for dw/dbias over row segments, added by col_sum_kernel
 *   l2norm, rms_norm_gated   one warp per row; dw of the gated norm: per-block column sums in
 *                     shared memory, added over blocks by col_sum_kernel
 * Contiguous float32/bfloat16 swiglu and short_conv take conv_fast.cuh's kernels instead; the
 * loads, stores, warp sum and column sum come from vec_io.cuh.
 *   ce_rows           one warp (C <= 1024) or one 256-thread block per row */
#include "kernels.cuh"
#include "vec_io.cuh"
#include "conv_fast.cuh"
#include <initializer_list>

namespace {

const int THREADS = 256;

template <class T> struct Acc { typedef float type; };
template <> struct Acc<double> { typedef double type; };


__device__ __forceinline__ float sigm(float x) { return 1.0f / (1.0f + __expf(-x)); }
__device__ __forceinline__ double sigm(double x) { return 1.0 / (1.0 + exp(-x)); }

template <class A> __device__ __forceinline__ A warp_max(A v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmax(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
/* Sum (mx = false) or max over a group of G threads (32: a warp; 256: the block, via sh[8]). */
template <int G, class A> __device__ __forceinline__ A group_reduce(A v, bool mx, A *sh) {
    v = mx ? warp_max(v) : warp_sum(v);
    if (G == 32) return v;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    A r = sh[0];
    for (int k = 1; k < G / 32; k++) r = mx ? fmax(r, sh[k]) : r + sh[k];
    return r;
}

/* ---- SwiGLU ------------------------------------------------------------------------------ */
template <class T> __global__ void swiglu_fwd(T *o, const T *g, const T *u, int64_t n) {
    typedef typename Acc<T>::type A;
    CU_GRID_STRIDE(i, n) { A x = load1(g + i); store1(o + i, x * sigm(x) * load1(u + i)); }
}
template <class T> __global__ void swiglu_bwd(T *dg, T *du, const T *d, const T *g, const T *u, int64_t n) {
    typedef typename Acc<T>::type A;
    CU_GRID_STRIDE(i, n) {
        A x = load1(g + i), s = sigm(x), dy = load1(d + i);
        store1(du + i, dy * x * s);
        store1(dg + i, dy * load1(u + i) * s * (A(1) + x * (A(1) - s)));
    }
}

/* ---- short convolution --------------------------------------------------------------------- */
struct ScDims { int64_t B, T, C, K; int silu; };

/* input at time s (< 0: from the cache, or zero) */
template <class T> __device__ __forceinline__ typename Acc<T>::type
sc_in(const T *x, const T *cache, const ScDims &d, int64_t b, int64_t s, int64_t c) {
    if (s >= 0) return load1(x + (b * d.T + s) * d.C + c);
    if (!cache) return 0;
    return load1(cache + (b * (d.K - 1) + (d.K - 1) + s) * d.C + c);
}
template <class T> __device__ __forceinline__ typename Acc<T>::type
sc_pre(const T *x, const T *cache, const T *w, const T *bias, const ScDims &d, int64_t b, int64_t t, int64_t c) {
    typedef typename Acc<T>::type A;
    A a = bias ? load1(bias + c) : A(0);
    for (int64_t j = 0; j < d.K; j++) a += load1(w + c * d.K + j) * sc_in(x, cache, d, b, t - d.K + 1 + j, c);
    return a;
}
template <class T> __device__ __forceinline__ typename Acc<T>::type
sc_dpre(const T *dy, const T *x, const T *cache, const T *w, const T *bias, const ScDims &d, int64_t b, int64_t t,
        int64_t c) {
    typedef typename Acc<T>::type A;
    A g = load1(dy + (b * d.T + t) * d.C + c);
    if (!d.silu) return g;
    A p = sc_pre(x, cache, w, bias, d, b, t, c), s = sigm(p);
    return g * s * (A(1) + p * (A(1) - s));
}

template <class T> __global__ void sc_fwd(T *o, const T *x, const T *cache, const T *w, const T *bias, ScDims d) {
    typedef typename Acc<T>::type A;
    int64_t n = d.B * d.T * d.C;
    CU_GRID_STRIDE(i, n) {
        int64_t c = i % d.C, bt = i / d.C, t = bt % d.T, b = bt / d.T;
        A p = sc_pre(x, cache, w, bias, d, b, t, c);
        store1(o + i, d.silu ? p * sigm(p) : p);
    }
}
/* one thread per input position s in [-(K-1), T) (the first K-1 only with a cache) */
template <class T>
__global__ void sc_bwd_dx(T *dx, T *dcache, const T *dy, const T *x, const T *cache, const T *w, const T *bias, ScDims d) {
    typedef typename Acc<T>::type A;
    int64_t S = d.T + (dcache ? d.K - 1 : 0), s0 = dcache ? -(d.K - 1) : 0;
    int64_t n = d.B * S * d.C;
    CU_GRID_STRIDE(i, n) {
        int64_t c = i % d.C, bs = i / d.C, s = bs % S + s0, b = bs / S;
        A a = 0;
        for (int64_t j = 0; j < d.K; j++) {
            int64_t t = s + d.K - 1 - j;
            if (t >= 0 && t < d.T) a += load1(w + c * d.K + j) * sc_dpre(dy, x, cache, w, bias, d, b, t, c);
        }
        if (s >= 0) store1(dx + (b * d.T + s) * d.C + c, a);
        else store1(dcache + (b * (d.K - 1) + (d.K - 1) + s) * d.C + c, a);
    }
}
/* partial[seg, c, 0..K] = sums over rows of segment seg of dpre * input (and dpre for the bias) */
const int SC_MAXK = 16;
template <class T>
__global__ void sc_bwd_dw_part(typename Acc<T>::type *partial, const T *dy, const T *x, const T *cache, const T *w,
                               const T *bias, ScDims d, int64_t seg_rows) {
    typedef typename Acc<T>::type A;
    int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    int64_t seg = blockIdx.y, rows = d.B * d.T;
    if (c >= d.C) return;
    A acc[SC_MAXK + 1];
    for (int j = 0; j <= d.K; j++) acc[j] = 0;
    int64_t r1 = (seg + 1) * seg_rows < rows ? (seg + 1) * seg_rows : rows;
    for (int64_t r = seg * seg_rows; r < r1; r++) {
        int64_t b = r / d.T, t = r % d.T;
        A g = sc_dpre(dy, x, cache, w, bias, d, b, t, c);
        for (int64_t j = 0; j < d.K; j++) acc[j] += g * sc_in(x, cache, d, b, t - d.K + 1 + j, c);
        acc[d.K] += g;
    }
    A *p = partial + (seg * d.C + c) * (d.K + 1);
    for (int j = 0; j <= d.K; j++) p[j] = acc[j];
}

/* ---- L2 norm and gated RMS norm: one warp per row ------------------------------------------- */
#define WARP_ROWS(r, R) \
    const int lane = threadIdx.x % 32; \
    for (int64_t r = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) / 32; r < (R); \
         r += (int64_t)gridDim.x * blockDim.x / 32)

/* rstd is float32 (double for double data): R = Acc<T>::type */
template <class T> __global__ void l2_fwd(T *o, typename Acc<T>::type *rstd, const T *x, int64_t R, int64_t D, double eps) {
    typedef typename Acc<T>::type A;
    WARP_ROWS(r, R) {
        const T *xr = x + r * D;
        A s = 0;
        for (int64_t i = lane; i < D; i += 32) { A v = load1(xr + i); s += v * v; }
        A q = A(1) / sqrt(warp_sum(s) + (A)eps);
        if (lane == 0) rstd[r] = q;
        for (int64_t i = lane; i < D; i += 32) store1(o + r * D + i, load1(xr + i) * q);
    }
}
/* dx = rstd (dy - y (y . dy)) from the output y */
template <class T>
__global__ void l2_bwd(T *dx, const T *dy, const T *y, const typename Acc<T>::type *rstd, int64_t R, int64_t D) {
    typedef typename Acc<T>::type A;
    WARP_ROWS(r, R) {
        const T *yr = y + r * D, *dr = dy + r * D;
        A yd = 0;
        for (int64_t i = lane; i < D; i += 32) yd += load1(yr + i) * load1(dr + i);
        yd = warp_sum(yd);
        A q = rstd[r];
        for (int64_t i = lane; i < D; i += 32) store1(dx + r * D + i, q * (load1(dr + i) - yd * load1(yr + i)));
    }
}
template <class T>
__global__ void rg_fwd(T *o, const T *x, const T *g, const T *w, int64_t R, int64_t D, double eps) {
    typedef typename Acc<T>::type A;
    WARP_ROWS(r, R) {
        const T *xr = x + r * D, *gr = g + r * D;
        A s = 0;
        for (int64_t i = lane; i < D; i += 32) { A v = load1(xr + i); s += v * v; }
        A q = A(1) / sqrt(warp_sum(s) / (A)D + (A)eps);
        for (int64_t i = lane; i < D; i += 32) {
            A gv = load1(gr + i);
            store1(o + r * D + i, load1(xr + i) * q * load1(w + i) * gv * sigm(gv));
        }
    }
}
/* dx, dg per row; partial[block, D] = this block's column sums of dy n silu(g) (for dw) */
template <class T>
__global__ void rg_bwd(T *dx, T *dg, typename Acc<T>::type *partial, const T *dy, const T *x, const T *g, const T *w,
                       int64_t R, int64_t D, double eps) {
    typedef typename Acc<T>::type A;
    extern __shared__ unsigned char smem_[];
    A *col = (A *)smem_;
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x) col[i] = 0;
    __syncthreads();
    WARP_ROWS(r, R) {
        const T *xr = x + r * D, *gr = g + r * D, *dr = dy + r * D;
        A s = 0;
        for (int64_t i = lane; i < D; i += 32) { A v = load1(xr + i); s += v * v; }
        A q = A(1) / sqrt(warp_sum(s) / (A)D + (A)eps), m = 0;
        for (int64_t i = lane; i < D; i += 32) {
            A gv = load1(gr + i);
            m += load1(dr + i) * load1(w + i) * gv * sigm(gv) * load1(xr + i) * q;
        }
        m = warp_sum(m) / (A)D;
        for (int64_t i = lane; i < D; i += 32) {
            A gv = load1(gr + i), sg1 = sigm(gv), sg = gv * sg1, n = load1(xr + i) * q, d = load1(dr + i), wv = load1(w + i);
            store1(dx + r * D + i, q * (d * wv * sg - n * m));
            store1(dg + r * D + i, d * n * wv * sg1 * (A(1) + gv * (A(1) - sg1)));
            atomicAdd(col + i, d * n * sg);
        }
    }
    __syncthreads();
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x) partial[(int64_t)blockIdx.x * D + i] = col[i];
}

/* ---- cross-entropy rows ------------------------------------------------------------------------ */
template <int G, class T, class L>
__global__ void ce_rows_kernel(L *loss, T *grad, const T *logits, const int64_t *target, int64_t N, int64_t C,
                               int64_t ignore) {
    typedef typename Acc<T>::type A;
    __shared__ A sh[8];
    const int lane = threadIdx.x % G;
    for (int64_t r0 = (int64_t)blockIdx.x * (THREADS / G); r0 < N; r0 += (int64_t)gridDim.x * (THREADS / G)) {
        int64_t r = r0 + threadIdx.x / G;
        bool live = r < N;   /* G = 256: one row per block, always live; G = 32: whole warps idle */
        const T *xr = logits + (live ? r : 0) * C;
        int64_t t = live ? target[r] : ignore;
        bool skip = t == ignore || t < 0 || t >= C;
        if (G == 32 && skip) {   /* warp-uniform: no group reduction below for this warp */
            if (live && lane == 0) loss[r] = t == ignore ? L(0) : L(NAN);
            if (live && grad) for (int64_t i = lane; i < C; i += G) store1(grad + r * C + i, A(0));
            continue;
        }
        A m = -INFINITY;
        for (int64_t i = lane; i < C; i += G) m = fmax(m, load1(xr + i));
        m = group_reduce<G>(m, true, sh);
        if (m == -INFINITY || isnan(m)) m = 0;
        A s = 0;
        for (int64_t i = lane; i < C; i += G) s += exp(load1(xr + i) - m);
        s = group_reduce<G>(s, false, sh);
        A lse = m + log(s);
        if (skip) {
            if (lane == 0) loss[r] = t == ignore ? L(0) : L(NAN);
            if (grad) for (int64_t i = lane; i < C; i += G) store1(grad + r * C + i, A(0));
            continue;
        }
        A xt = load1(xr + t);
        if (lane == 0) loss[r] = (L)(lse - xt);
        if (grad) {
            /* grad may alias logits: every thread must have read x[t] before any writes */
            if (G == 32) __syncwarp(); else __syncthreads();
            for (int64_t i = lane; i < C; i += G) {
                A p = exp(load1(xr + i) - lse);
                store1(grad + r * C + i, i == t ? p - A(1) : p);
            }
        }
    }
}

/* ---- embedding --------------------------------------------------------------------------------- */
template <class T> __global__ void emb_fwd(T *o, const T *w, const int64_t *ix, int64_t N, int64_t V, int64_t D) {
    CU_GRID_STRIDE(i, N * D) {
        int64_t r = i / D, c = i % D, v = ix[r];
        store1(o + i, (v >= 0 && v < V) ? load1(w + v * D + c) : (typename Acc<T>::type)NAN);
    }
}
template <class T, class A>
__global__ void emb_bwd(A *gw, const T *g, const int64_t *ix, int64_t N, int64_t V, int64_t D) {
    CU_GRID_STRIDE(i, N * D) {
        int64_t r = i / D, c = i % D, v = ix[r];
        if (v >= 0 && v < V) atomicAdd(gw + v * D + c, (A)load1(g + i));
    }
}


/* the fast paths' precondition: float32/bfloat16 data at addresses that are multiples of `n` */
bool fast_ptrs(int dt, std::initializer_list<const efla_tensor *> ts, uintptr_t n) {
    if (!fast_paths_enabled() || (dt != EFLA_FLOAT32 && dt != EFLA_BFLOAT16)) return false;
    for (const efla_tensor *t : ts)
        if (t && !aligned_to(cu_ptr(t), n)) return false;
    return true;
}

template <class T> T *dp(const efla_tensor *t) { return t ? (T *)cu_ptr(t) : nullptr; }

#define FUSED_DISPATCH(op, dt, CALL)                                                                   \
    switch (dt) {                                                                                      \
    case EFLA_FLOAT32: { typedef float T; CALL; break; }                                               \
    case EFLA_BFLOAT16: { typedef bf16 T; CALL; break; }                                               \
    case EFLA_FLOAT64: { typedef double T; CALL; break; }                                              \
    default: return efla_fail("%s: CUDA computes float32, bfloat16 or float64, got %s", op, efla_dtype_name(dt)); \
    }
/* the fast paths' dispatch: fast_ptrs() has checked that dt is float32 or bfloat16 */
#define FAST_DISPATCH(dt, CALL)                                                                         \
    if ((dt) == EFLA_BFLOAT16) { typedef bf16 T; CALL; } else { typedef float T; CALL; }

/* ---- entry points ----------------------------------------------------------------------------- */
int cu_swiglu(efla_tensor *out, const efla_tensor *gate, const efla_tensor *up) {
    TRY(cu_set_device(out->device));
    int64_t n = efla_tensor_numel(out);
    if (n % 8 == 0 && fast_ptrs(gate->dtype, { out, gate, up }, 16)) {
        FAST_DISPATCH(gate->dtype,
            (swiglu_fwd8<T><<<cu_blocks(n / 8, THREADS), THREADS>>>(dp<T>(out), dp<T>(gate), dp<T>(up), n / 8)));
        CU_CHECK_LAUNCH("swiglu");
        return 0;
    }
    FUSED_DISPATCH("swiglu", gate->dtype,
        (swiglu_fwd<T><<<cu_blocks(n, THREADS), THREADS>>>(dp<T>(out), dp<T>(gate), dp<T>(up), n)));
    CU_CHECK_LAUNCH("swiglu");
    return 0;
}
int cu_swiglu_backward(efla_tensor *dgate, efla_tensor *dup, const efla_tensor *dout, const efla_tensor *gate,
                       const efla_tensor *up) {
    TRY(cu_set_device(gate->device));
    int64_t n = efla_tensor_numel(gate);
    if (n % 8 == 0 && fast_ptrs(gate->dtype, { dgate, dup, dout, gate, up }, 16)) {
        FAST_DISPATCH(gate->dtype,
            (swiglu_bwd8<T><<<cu_blocks(n / 8, THREADS), THREADS>>>(dp<T>(dgate), dp<T>(dup), dp<T>(dout),
                                                                     dp<T>(gate), dp<T>(up), n / 8)));
        CU_CHECK_LAUNCH("swiglu_backward");
        return 0;
    }
    FUSED_DISPATCH("swiglu_backward", gate->dtype,
        (swiglu_bwd<T><<<cu_blocks(n, THREADS), THREADS>>>(dp<T>(dgate), dp<T>(dup), dp<T>(dout), dp<T>(gate),
                                                            dp<T>(up), n)));
    CU_CHECK_LAUNCH("swiglu_backward");
    return 0;
}

int cu_short_conv(efla_tensor *out, const efla_tensor *x, const efla_tensor *cache, const efla_tensor *w,
                  const efla_tensor *bias, int silu) {
    TRY(cu_set_device(x->device));
    ScDims d = { x->shape[0], x->shape[1], x->shape[2], w->shape[1], silu };
    int64_t n = d.B * d.T * d.C;
    if (n > 0 && d.K >= 2 && d.K <= 4 && d.C % 2 == 0 && d.B <= 65535 &&
        fast_ptrs(x->dtype, { out, x, cache }, 2 * efla_dtype_size(x->dtype))) {
        ScFast f = { d.T, d.C, silu };
        dim3 grid((unsigned)((d.C / 2 + SC_PAIRS - 1) / SC_PAIRS), (unsigned)((d.T + SC_TT_FWD - 1) / SC_TT_FWD),
                  (unsigned)d.B);
#define SC_FWD(KK) sc_fast_fwd<T, KK><<<grid, SC_PAIRS>>>(dp<T>(out), dp<T>(x), dp<T>(cache), dp<T>(w), dp<T>(bias), f)
        FAST_DISPATCH(x->dtype, (d.K == 2 ? SC_FWD(2) : d.K == 3 ? SC_FWD(3) : SC_FWD(4)));
#undef SC_FWD
        CU_CHECK_LAUNCH("short_conv");
        return 0;
    }
    FUSED_DISPATCH("short_conv", x->dtype,
        (sc_fwd<T><<<cu_blocks(n, THREADS), THREADS>>>(dp<T>(out), dp<T>(x), dp<T>(cache), dp<T>(w), dp<T>(bias), d)));
    CU_CHECK_LAUNCH("short_conv");
    return 0;
}
/* the fast short-convolution backward: one pass for dx/dcache and the per-tile dw/dbias sums,
 * then their column sums */
static int short_conv_backward_fast(efla_tensor *dx, efla_tensor *dcache, efla_tensor *dw, efla_tensor *dbias,
                                    const efla_tensor *dout, const efla_tensor *x, const efla_tensor *cache,
                                    const efla_tensor *w, const efla_tensor *bias, const ScDims &d) {
    ScFast f = { d.T, d.C, d.silu };
    dim3 grid((unsigned)((d.C / 2 + SC_PAIRS - 1) / SC_PAIRS), (unsigned)((d.T + SC_TT_BWD - 1) / SC_TT_BWD),
              (unsigned)d.B);
    int64_t prow = (int64_t)grid.y * d.B, cols = d.C * (d.K + 1);
    CuBuffer part;
    TRY(part.alloc((size_t)(prow * cols) * sizeof(float), x->device));
#define SC_BWD(KK) sc_fast_bwd<T, KK><<<grid, SC_PAIRS>>>(dp<T>(dx), dp<T>(dcache), part.as<float>(), dp<T>(dout), \
                                                          dp<T>(x), dp<T>(cache), dp<T>(w), dp<T>(bias), f)
    FAST_DISPATCH(x->dtype, (
        d.K == 2 ? SC_BWD(2) : d.K == 3 ? SC_BWD(3) : SC_BWD(4),
        col_sum_kernel<<<col_sum_grid(cols), col_sum_block()>>>(part.as<float>(), prow, cols,
                                                                ScDwStore<T>{ dp<T>(dw), dp<T>(dbias), (int)d.K })));
#undef SC_BWD
    CU_CHECK_LAUNCH("short_conv_backward");
    return 0;
}

int cu_short_conv_backward(efla_tensor *dx, efla_tensor *dcache, efla_tensor *dw, efla_tensor *dbias,
                           const efla_tensor *dout, const efla_tensor *x, const efla_tensor *cache,
                           const efla_tensor *w, const efla_tensor *bias, int silu) {
    TRY(cu_set_device(x->device));
    ScDims d = { x->shape[0], x->shape[1], x->shape[2], w->shape[1], silu };
    if (d.K > SC_MAXK)
        return efla_fail("short_conv_backward: CUDA handles kernels of up to %d taps, got %lld", SC_MAXK, (long long)d.K);
    int64_t rows = d.B * d.T, n = (d.B * (d.T + (dcache ? d.K - 1 : 0))) * d.C;
    if (rows > 0 && d.K >= 2 && d.K <= 4 && d.C % 2 == 0 && d.B <= 65535 &&
        fast_ptrs(x->dtype, { dx, dcache, dout, x, cache }, 2 * efla_dtype_size(x->dtype)))
        return short_conv_backward_fast(dx, dcache, dw, dbias, dout, x, cache, w, bias, d);
    /* segments: enough blocks to fill the GPU, at least 64 rows each */
    int64_t cblocks = (d.C + THREADS - 1) / THREADS;
    int64_t nseg = ((int64_t)cu_sm_count() * 8 + cblocks - 1) / cblocks;
    if (nseg > (rows + 63) / 64) nseg = (rows + 63) / 64;
    if (nseg < 1) nseg = 1;
    if (nseg > 65535) nseg = 65535;
    int64_t seg_rows = (rows + nseg - 1) / nseg;
    CuBuffer part;
    TRY(part.alloc((size_t)(nseg * d.C * (d.K + 1)) * sizeof(double), x->device));   /* float or double sums */
    dim3 grid((unsigned)cblocks, (unsigned)nseg);
    FUSED_DISPATCH("short_conv_backward", x->dtype, (
        sc_bwd_dx<T><<<cu_blocks(n, THREADS), THREADS>>>(dp<T>(dx), dp<T>(dcache), dp<T>(dout), dp<T>(x), dp<T>(cache),
                                                          dp<T>(w), dp<T>(bias), d),
        sc_bwd_dw_part<T><<<grid, THREADS>>>(part.as<typename Acc<T>::type>(), dp<T>(dout), dp<T>(x), dp<T>(cache),
                                             dp<T>(w), dp<T>(bias), d, seg_rows),
        col_sum_kernel<<<col_sum_grid(d.C * (d.K + 1)), col_sum_block()>>>(
            part.as<typename Acc<T>::type>(), nseg, d.C * (d.K + 1), ScDwStore<T>{ dp<T>(dw), dp<T>(dbias), (int)d.K })));
    CU_CHECK_LAUNCH("short_conv_backward");
    return 0;
}

static int64_t rows_of(const efla_tensor *t) {
    int64_t D = t->shape[t->ndim - 1];
    return D ? efla_tensor_numel(t) / D : 0;
}
static unsigned warp_blocks(int64_t rows) { return cu_blocks(rows * 32, THREADS); }

int cu_l2norm(efla_tensor *out, efla_tensor *rstd, const efla_tensor *x, double eps) {
    TRY(cu_set_device(x->device));
    int64_t R = rows_of(x), D = x->shape[x->ndim - 1];
    FUSED_DISPATCH("l2_norm", x->dtype,
        (l2_fwd<T><<<warp_blocks(R), THREADS>>>(dp<T>(out), dp<typename Acc<T>::type>(rstd), dp<T>(x), R, D, eps)));
    CU_CHECK_LAUNCH("l2_norm");
    return 0;
}
int cu_l2norm_backward(efla_tensor *dx, const efla_tensor *dy, const efla_tensor *y, const efla_tensor *rstd) {
    TRY(cu_set_device(y->device));
    int64_t R = rows_of(y), D = y->shape[y->ndim - 1];
    FUSED_DISPATCH("l2_norm_backward", y->dtype,
        (l2_bwd<T><<<warp_blocks(R), THREADS>>>(dp<T>(dx), dp<T>(dy), dp<T>(y), dp<typename Acc<T>::type>(rstd), R, D)));
    CU_CHECK_LAUNCH("l2_norm_backward");
    return 0;
}
int cu_rms_norm_gated(efla_tensor *out, const efla_tensor *x, const efla_tensor *g, const efla_tensor *w, double eps) {
    TRY(cu_set_device(x->device));
    int64_t R = rows_of(x), D = x->shape[x->ndim - 1];
    FUSED_DISPATCH("rms_norm_gated", x->dtype,
        (rg_fwd<T><<<warp_blocks(R), THREADS>>>(dp<T>(out), dp<T>(x), dp<T>(g), dp<T>(w), R, D, eps)));
    CU_CHECK_LAUNCH("rms_norm_gated");
    return 0;
}
int cu_rms_norm_gated_backward(efla_tensor *dx, efla_tensor *dg, efla_tensor *dw, const efla_tensor *dy,
                               const efla_tensor *x, const efla_tensor *g, const efla_tensor *w, double eps) {
    TRY(cu_set_device(x->device));
    int64_t R = rows_of(x), D = x->shape[x->ndim - 1];
    size_t esz = x->dtype == EFLA_FLOAT64 ? sizeof(double) : sizeof(float);
    if ((size_t)D * esz > 48 * 1024)
        return efla_fail("rms_norm_gated_backward: CUDA handles rows of up to %d elements, got %lld",
                         (int)(48 * 1024 / esz), (long long)D);
    unsigned nb = warp_blocks(R);
    if (nb > (unsigned)cu_sm_count() * 4) nb = (unsigned)cu_sm_count() * 4;   /* fewer partial rows to add */
    CuBuffer part;
    TRY(part.alloc((size_t)nb * (size_t)D * esz, x->device));
    FUSED_DISPATCH("rms_norm_gated_backward", x->dtype, (
        rg_bwd<T><<<nb, THREADS, (size_t)D * esz>>>(dp<T>(dx), dp<T>(dg), part.as<typename Acc<T>::type>(), dp<T>(dy),
                                                    dp<T>(x), dp<T>(g), dp<T>(w), R, D, eps),
        col_sum_kernel<<<col_sum_grid(D), col_sum_block()>>>(part.as<typename Acc<T>::type>(), (int64_t)nb, D,
                                                             ColStore<T>{ dp<T>(dw) })));
    CU_CHECK_LAUNCH("rms_norm_gated_backward");
    return 0;
}

int cu_ce_rows(efla_tensor *loss, efla_tensor *grad, const efla_tensor *logits, const efla_tensor *target,
               int64_t ignore_index) {
    TRY(cu_set_device(logits->device));
    int64_t N = logits->shape[0], C = logits->shape[1];
    const int64_t *tg = (const int64_t *)cu_ptr(target);
    bool big = C > 1024;
    unsigned blocks = big ? cu_blocks(N * THREADS, THREADS) : cu_blocks(N * 32, THREADS);
    if (logits->dtype == EFLA_FLOAT64) {
        if (loss->dtype != EFLA_FLOAT64) return efla_fail("cross_entropy rows: float64 logits need a float64 loss");
        if (big) ce_rows_kernel<THREADS, double, double><<<blocks, THREADS>>>(dp<double>(loss), dp<double>(grad), dp<double>(logits), tg, N, C, ignore_index);
        else ce_rows_kernel<32, double, double><<<blocks, THREADS>>>(dp<double>(loss), dp<double>(grad), dp<double>(logits), tg, N, C, ignore_index);
    } else {
        if (loss->dtype != EFLA_FLOAT32) return efla_fail("cross_entropy rows: the loss must be float32, got %s", efla_dtype_name(loss->dtype));
        FUSED_DISPATCH("cross_entropy rows", logits->dtype, (
            big ? ce_rows_kernel<THREADS, T, float><<<blocks, THREADS>>>(dp<float>(loss), dp<T>(grad), dp<T>(logits), tg, N, C, ignore_index)
                : ce_rows_kernel<32, T, float><<<blocks, THREADS>>>(dp<float>(loss), dp<T>(grad), dp<T>(logits), tg, N, C, ignore_index)));
    }
    CU_CHECK_LAUNCH("cross_entropy rows");
    return 0;
}

int cu_embedding(efla_tensor *out, const efla_tensor *weight, const efla_tensor *index) {
    TRY(cu_set_device(weight->device));
    int64_t N = out->shape[0], V = weight->shape[0], D = weight->shape[1];
    const int64_t *ix = (const int64_t *)cu_ptr(index);
    FUSED_DISPATCH("embedding_lookup", weight->dtype,
        (emb_fwd<T><<<cu_blocks(N * D, THREADS), THREADS>>>(dp<T>(out), dp<T>(weight), ix, N, V, D)));
    CU_CHECK_LAUNCH("embedding_lookup");
    return 0;
}
int cu_embedding_backward(efla_tensor *gw, const efla_tensor *g, const efla_tensor *index) {
    TRY(cu_set_device(g->device));
    int64_t N = g->shape[0], V = gw->shape[0], D = gw->shape[1];
    const int64_t *ix = (const int64_t *)cu_ptr(index);
    if (gw->dtype == EFLA_FLOAT64) {
        if (g->dtype != EFLA_FLOAT64) return efla_fail("embedding_backward: a float64 table needs a float64 gradient");
        emb_bwd<double, double><<<cu_blocks(N * D, THREADS), THREADS>>>(dp<double>(gw), dp<double>(g), ix, N, V, D);
    } else if (g->dtype == EFLA_FLOAT32) {
        emb_bwd<float, float><<<cu_blocks(N * D, THREADS), THREADS>>>(dp<float>(gw), dp<float>(g), ix, N, V, D);
    } else if (g->dtype == EFLA_BFLOAT16) {
        emb_bwd<bf16, float><<<cu_blocks(N * D, THREADS), THREADS>>>(dp<float>(gw), dp<bf16>(g), ix, N, V, D);
    } else {
        return efla_fail("embedding_backward: gradient dtype %s", efla_dtype_name(g->dtype));
    }
    CU_CHECK_LAUNCH("embedding_backward");
    return 0;
}

/* cu_<name> for every row of EFLA_FUSED_OPS, by name (core/backend_ops.h) */
const efla_fused_kernels cuda_fused = {
    EFLA_FUSED_OPS(EFLA_FUSED_ENTRY_CUDA)
};

}  // namespace

/* Registration when libefla is loaded, beside the backend's (no CUDA call here). */
__attribute__((constructor)) static void efla_cuda_fused_register(void) { efla_register_fused(1, &cuda_fused); }

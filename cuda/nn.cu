/* nn.cu: CUDA kernels for softmax / log_softmax (+backward), layer and RMS norm
 * (+backward) and cross entropy; semantics of core/cpu/nn.c. Everything works row by row
 * over the last dim and computes in double (like the CPU), which serves float32, float64
 * and bfloat16 with one code path.
 *
 * A row is handled by a group of G threads: one warp (G = 32, eight rows per block) for
 * rows up to 1024 elements, the whole block (G = 256) above. The weight/bias gradients of
 * the norms are column sums over rows: one thread per column reads coalesced rows, with
 * the rows split into segments whose partial sums a second kernel adds in order
 * (col_sum_kernel, vec_io.cuh). Float32/bfloat16 norms take the fast path further down. */
#include "kernels.cuh"
#include "vec_io.cuh"
#include "norm_fast.cuh"
#include <initializer_list>

namespace {

const int THREADS = 256;

__device__ __forceinline__ double load_any(const char *p, int dt, int64_t i) {
    switch (dt) {
    case EFLA_FLOAT32: return ((const float *)p)[i];
    case EFLA_FLOAT64: return ((const double *)p)[i];
    case EFLA_BFLOAT16: return __bfloat162float(((const bf16 *)p)[i]);
    case EFLA_INT64: return (double)((const int64_t *)p)[i];
    default: return (double)((const uint8_t *)p)[i];
    }
}
__device__ __forceinline__ void store_any(char *p, int dt, int64_t i, double v) {
    switch (dt) {
    case EFLA_FLOAT32: ((float *)p)[i] = (float)v; break;
    case EFLA_FLOAT64: ((double *)p)[i] = v; break;
    case EFLA_BFLOAT16: ((bf16 *)p)[i] = __float2bfloat16((float)v); break;
    case EFLA_INT64: ((int64_t *)p)[i] = isnan(v) ? 0 : (int64_t)v; break;
    case EFLA_UINT8: ((uint8_t *)p)[i] = (uint8_t)(int64_t)v; break;
    default: ((uint8_t *)p)[i] = v != 0; break;
    }
}

/* Sum or max over the G threads of a group; every thread gets the result. G = 256 uses
 * `sh` (8 doubles) and synchronises the block. */
template <int G> __device__ __forceinline__ double group_reduce(double v, bool mx, double *sh) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        double w = __shfl_xor_sync(0xffffffffu, v, o);
        v = mx ? fmax(v, w) : v + w;
    }
    if (G == 32) return v;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    __syncthreads();   /* sh may still be read from the previous call */
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    double r = sh[0];
    for (int k = 1; k < G / 32; k++) r = mx ? fmax(r, sh[k]) : r + sh[k];
    return r;
}

/* Rows handled by this group: row = first, first + step, ... (uniform per group). */
#define GROUP_ROWS(G, row, rows) \
    const int lane_ = threadIdx.x % (G); \
    for (int64_t row = (int64_t)blockIdx.x * (THREADS / (G)) + threadIdx.x / (G); \
         row - (int64_t)(threadIdx.x / (G)) < (rows); row += (int64_t)gridDim.x * (THREADS / (G)))

struct RowArgs {
    int64_t rows, D;
    const char *in, *in2;   /* softmax: x; backward: grad_out, out */
    char *out;
    int dt_in, dt_in2, dt_out;
    int log;
};

template <int G> __global__ void softmax_kernel(RowArgs a) {
    __shared__ double sh[8];
    GROUP_ROWS(G, r, a.rows) {
        bool live = r < a.rows;
        int64_t base = live ? r * a.D : 0, n = live ? a.D : 0;
        double m = -INFINITY;
        for (int64_t i = lane_; i < n; i += G) m = fmax(m, load_any(a.in, a.dt_in, base + i));
        m = group_reduce<G>(m, true, sh);
        if (m == -INFINITY || isnan(m)) m = 0;
        double s = 0;
        for (int64_t i = lane_; i < n; i += G) s += exp(load_any(a.in, a.dt_in, base + i) - m);
        s = group_reduce<G>(s, false, sh);
        if (a.log) {
            double lse = m + log(s);
            for (int64_t i = lane_; i < n; i += G)
                store_any(a.out, a.dt_out, base + i, load_any(a.in, a.dt_in, base + i) - lse);
        } else {
            double inv = 1.0 / s;
            for (int64_t i = lane_; i < n; i += G)
                store_any(a.out, a.dt_out, base + i, exp(load_any(a.in, a.dt_in, base + i) - m) * inv);
        }
    }
}

template <int G> __global__ void softmax_backward_kernel(RowArgs a) {
    __shared__ double sh[8];
    GROUP_ROWS(G, r, a.rows) {
        bool live = r < a.rows;
        int64_t base = live ? r * a.D : 0, n = live ? a.D : 0;
        double s = 0;
        for (int64_t i = lane_; i < n; i += G) {
            double g = load_any(a.in, a.dt_in, base + i);
            s += a.log ? g : g * load_any(a.in2, a.dt_in2, base + i);
        }
        s = group_reduce<G>(s, false, sh);
        for (int64_t i = lane_; i < n; i += G) {
            double g = load_any(a.in, a.dt_in, base + i), y = load_any(a.in2, a.dt_in2, base + i);
            store_any(a.out, a.dt_out, base + i, a.log ? g - exp(y) * s : y * (g - s));
        }
    }
}

struct NormArgs {
    int64_t rows, D;
    const char *x, *w, *b, *dy;
    char *out, *mean, *rstd, *dx;
    int dt_x, dt_w, dt_b, dt_out, dt_mean, dt_rstd, dt_dy, dt_dx;
    int64_t s_mean, s_rstd;
    double eps;
    int rms;
};

template <int G> __global__ void norm_kernel(NormArgs a) {
    __shared__ double sh[8];
    GROUP_ROWS(G, r, a.rows) {
        bool live = r < a.rows;
        int64_t base = live ? r * a.D : 0, n = live ? a.D : 0;
        double mu = 0;
        if (!a.rms) {
            for (int64_t i = lane_; i < n; i += G) mu += load_any(a.x, a.dt_x, base + i);
            mu = group_reduce<G>(mu, false, sh) / (double)a.D;
        }
        double ss = 0;
        for (int64_t i = lane_; i < n; i += G) {
            double d = load_any(a.x, a.dt_x, base + i) - mu;
            ss += d * d;
        }
        ss = group_reduce<G>(ss, false, sh);
        double rs = 1.0 / sqrt(ss / (double)a.D + a.eps);
        for (int64_t i = lane_; i < n; i += G) {
            double v = (load_any(a.x, a.dt_x, base + i) - mu) * rs;
            if (a.w || a.b) {
                double w = a.w ? load_any(a.w, a.dt_w, i) : 1.0, b = a.b ? load_any(a.b, a.dt_b, i) : 0.0;
                v = v * w + b;
            }
            store_any(a.out, a.dt_out, base + i, v);
        }
        if (live && lane_ == 0) {
            if (a.mean) store_any(a.mean, a.dt_mean, r * a.s_mean, mu);
            if (a.rstd) store_any(a.rstd, a.dt_rstd, r * a.s_rstd, rs);
        }
    }
}

template <int G> __global__ void norm_backward_kernel(NormArgs a) {
    __shared__ double sh[8];
    GROUP_ROWS(G, r, a.rows) {
        bool live = r < a.rows;
        int64_t base = live ? r * a.D : 0, n = live ? a.D : 0;
        double mu = 0, rs = 0;
        if (live) {
            mu = a.rms ? 0 : load_any(a.mean, a.dt_mean, r * a.s_mean);
            rs = load_any(a.rstd, a.dt_rstd, r * a.s_rstd);
        }
        double sa = 0, sb = 0;
        for (int64_t i = lane_; i < n; i += G) {
            double xh = (load_any(a.x, a.dt_x, base + i) - mu) * rs;
            double dxh = load_any(a.dy, a.dt_dy, base + i) * (a.w ? load_any(a.w, a.dt_w, i) : 1.0);
            sa += dxh;
            sb += dxh * xh;
        }
        sa = group_reduce<G>(sa, false, sh);
        sb = group_reduce<G>(sb, false, sh);
        sa = a.rms ? 0 : sa / (double)a.D;
        sb /= (double)a.D;
        for (int64_t i = lane_; i < n; i += G) {
            double xh = (load_any(a.x, a.dt_x, base + i) - mu) * rs;
            double dxh = load_any(a.dy, a.dt_dy, base + i) * (a.w ? load_any(a.w, a.dt_w, i) : 1.0);
            store_any(a.dx, a.dt_dx, base + i, rs * (dxh - sa - xh * sb));
        }
    }
}

/* Partial column sums of dy*xhat (dw) and dy (db) over the rows of segment blockIdx.y. */
__global__ void norm_wb_partial_kernel(NormArgs a, int segs, double *part) {
    int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= a.D) return;
    int64_t seg = blockIdx.y, r0 = a.rows * seg / segs, r1 = a.rows * (seg + 1) / segs;
    double dw = 0, db = 0;
    for (int64_t r = r0; r < r1; r++) {
        double mu = a.rms ? 0 : load_any(a.mean, a.dt_mean, r * a.s_mean);
        double rs = load_any(a.rstd, a.dt_rstd, r * a.s_rstd);
        double dy = load_any(a.dy, a.dt_dy, r * a.D + j);
        dw += dy * (load_any(a.x, a.dt_x, r * a.D + j) - mu) * rs;
        db += dy;
    }
    part[(seg * 2) * a.D + j] = dw;
    part[(seg * 2 + 1) * a.D + j] = db;
}

struct CEArgs {
    int64_t N, C, s0, s1, st, sl, sg0, sg1;
    const char *logits;
    const int64_t *target;
    char *loss, *grad;
    int dt_logits, dt_loss, dt_grad;
    int64_t ignore;
    double smoothing;
    unsigned long long *bad_row;
};

template <int G> __global__ void cross_entropy_kernel(CEArgs a) {
    __shared__ double sh[8];
    GROUP_ROWS(G, r, a.N) {
        bool live = r < a.N;
        int64_t t = live ? a.target[r * a.st] : a.ignore;
        bool skip = t == a.ignore || t < 0 || t >= a.C;
        if (live && skip) {
            if (t != a.ignore && lane_ == 0) atomicMin(a.bad_row, (unsigned long long)r);
            if (lane_ == 0) store_any(a.loss, a.dt_loss, r * a.sl, 0);
            if (a.grad)
                for (int64_t i = lane_; i < a.C; i += G) store_any(a.grad, a.dt_grad, r * a.sg0 + i * a.sg1, 0);
        }
        /* every thread of the group takes part in the reductions */
        int64_t n = live && !skip ? a.C : 0, base = r * a.s0;
        double m = -INFINITY, sum = 0;
        for (int64_t i = lane_; i < n; i += G) {
            double x = load_any(a.logits, a.dt_logits, base + i * a.s1);
            m = fmax(m, x);
            sum += x;
        }
        m = group_reduce<G>(m, true, sh);
        sum = group_reduce<G>(sum, false, sh);
        if (m == -INFINITY || isnan(m)) m = 0;
        double s = 0;
        for (int64_t i = lane_; i < n; i += G) s += exp(load_any(a.logits, a.dt_logits, base + i * a.s1) - m);
        s = group_reduce<G>(s, false, sh);
        if (!n) continue;
        double lse = m + log(s), e = a.smoothing;
        if (lane_ == 0) {
            double xt = load_any(a.logits, a.dt_logits, base + t * a.s1);
            store_any(a.loss, a.dt_loss, r * a.sl, (1 - e) * (lse - xt) + e * (lse - sum / (double)a.C));
        }
        if (a.grad)
            for (int64_t i = lane_; i < n; i += G) {
                double g = exp(load_any(a.logits, a.dt_logits, base + i * a.s1) - lse) - e / (double)a.C;
                if (i == t) g -= 1 - e;
                store_any(a.grad, a.dt_grad, r * a.sg0 + i * a.sg1, g);
            }
    }
}

/* Launch a row kernel with the group size that suits rows of D elements. */
template <typename A>
int launch_rows(void (*k32)(A), void (*k256)(A), const A &a, int64_t rows, int64_t D, const char *name) {
    if (rows == 0) return 0;
    if (D <= 1024) k32<<<cu_blocks(rows * 32, THREADS), THREADS>>>(a);
    else {
        int64_t cap = (int64_t)cu_sm_count() * 16;
        k256<<<(unsigned)(rows < cap ? rows : cap), THREADS>>>(a);
    }
    CU_CHECK_LAUNCH(name);
    return 0;
}

int check_float(const char *op, const efla_tensor *t) {
    if (!efla_dtype_is_floating(t->dtype))
        return efla_fail("%s: needs a floating-point tensor, got %s", op, efla_dtype_name(t->dtype));
    if (!efla_tensor_is_contiguous(t))
        return efla_fail("%s: the cuda kernel expects contiguous tensors (shape %s is strided); call contiguous() first",
                         op, efla_tshape(t));
    return 0;
}

int64_t last_dim(const efla_tensor *t) { return t->ndim ? t->shape[t->ndim - 1] : 1; }
int64_t stride0(const efla_tensor *t) { return t && t->ndim ? t->strides[0] : 0; }

/* col_sum_kernel's store for the double kernels' [segs][2][D] partials, in any dtype */
struct NormWbStoreAny {
    int64_t D, sw, sb;
    char *gw, *gb;
    int dt_w, dt_b;
    __device__ void operator()(int64_t j, double s) const {
        if (j < D) { if (gw) store_any(gw, dt_w, j * sw, s); }
        else if (gb) store_any(gb, dt_b, (j - D) * sb, s);
    }
};

/* ---- the fast path (norm_fast.cuh) ------------------------------------------------------------ */
bool norm_fast_dtype(int dt) { return dt == EFLA_FLOAT32 || dt == EFLA_BFLOAT16; }
/* the weight/bias gradients to write in the fast path (what = 2) */
struct NormGrads { efla_tensor *gw, *gb; };

/* Can the fast path take it? T: dt_x (= out/dy/dx), W: the weight's (and bias's and their
 * gradients') dtype; statistics float32, one per row. */
bool norm_fast_ok(const NormArgs &a, int what, const NormGrads *g) {
    if (!norm_fast_dtype(a.dt_x) || a.D % 8 != 0 || a.D == 0) return false;
    if (what ? (a.dt_dy != a.dt_x || (a.dx && a.dt_dx != a.dt_x)) : a.dt_out != a.dt_x) return false;
    if (a.w && !norm_fast_dtype(a.dt_w)) return false;
    if (a.b && (!a.w || a.dt_b != a.dt_w)) return false;
    if ((a.mean && (a.dt_mean != EFLA_FLOAT32 || a.s_mean != 1)) || !a.rstd || a.dt_rstd != EFLA_FLOAT32 ||
        a.s_rstd != 1 || (!a.rms && !a.mean))
        return false;
    if (what == 2) {
        int wdt = a.w ? a.dt_w : a.dt_x;
        for (const efla_tensor *t : { g->gw, g->gb })
            if (t && (t->dtype != wdt || stride0(t) != 1)) return false;
    }
    const void *ps[] = { a.x, a.w, a.b, what ? a.dy : a.out, a.dx };
    for (const void *p : ps)
        if (p && !aligned_to(p, 16)) return false;
    return true;
}

/* forward (what = 0), dx (1) or the weight/bias gradients (2) on the fast path */
template <class T, class W> int norm_fast_run(const NormArgs &a, int what, const NormGrads *g, int device) {
    NormFast<T, W> f = { a.rows, a.D, (const T *)a.x, (const T *)a.dy, (const W *)a.w, (const W *)a.b,
                         (T *)a.out, (T *)a.dx, (float *)a.mean, (float *)a.rstd, (float)a.eps, a.rms };
    if (a.rows == 0) return 0;
    if (what == 0) norm_fast_fwd<T, W><<<cu_blocks(a.rows * 32, THREADS), THREADS>>>(f);
    else if (what == 1) norm_fast_bwd<T, W><<<cu_blocks(a.rows * 32, THREADS), THREADS>>>(f);
    else {
        /* each block: 64 columns x a segment of rows; about 8 blocks per SM in all */
        int64_t cblocks = (a.D + 63) / 64, segs = ((int64_t)cu_sm_count() * 8 + cblocks - 1) / cblocks;
        if (segs > a.rows / 32) segs = a.rows / 32;
        if (segs > 65535) segs = 65535;
        if (segs < 1) segs = 1;
        CuBuffer part;
        TRY(part.alloc(sizeof(float) * 2 * (size_t)(a.D * segs), device));
        norm_fast_wb_partial<T, W><<<dim3((unsigned)cblocks, (unsigned)segs), dim3(32, 8)>>>(f, (int)segs,
                                                                                            part.as<float>());
        CU_CHECK_LAUNCH("norm_backward_wb");
        NormWbStore<W> st = { a.D, g->gw ? (W *)cu_ptr(g->gw) : nullptr, g->gb ? (W *)cu_ptr(g->gb) : nullptr };
        col_sum_kernel<<<col_sum_grid(2 * a.D), col_sum_block()>>>(part.as<float>(), segs, 2 * a.D, st);
    }
    CU_CHECK_LAUNCH(what == 0 ? "norm" : what == 1 ? "norm_backward" : "norm_backward_wb_sum");
    return 0;
}

/* 1: not taken (use the double kernels), 0: done, -1: error */
int norm_fast(const NormArgs &a, int what, const NormGrads *g, int device) {
    if (!fast_paths_enabled() || !norm_fast_ok(a, what, g)) return 1;
    bool tb = a.dt_x == EFLA_BFLOAT16, wbf = a.w ? a.dt_w == EFLA_BFLOAT16 : tb;
    if (tb) return wbf ? norm_fast_run<bf16, bf16>(a, what, g, device) : norm_fast_run<bf16, float>(a, what, g, device);
    return wbf ? norm_fast_run<float, bf16>(a, what, g, device) : norm_fast_run<float, float>(a, what, g, device);
}

} // namespace

int efla_cuda_softmax(efla_tensor *out, const efla_tensor *in, int log_) {
    if (check_float("softmax", in) || check_float("softmax", out)) return -1;
    TRY(cu_set_device(in->device));
    RowArgs a = {};
    a.D = last_dim(in);
    a.rows = a.D ? efla_tensor_numel(in) / a.D : 0;
    a.in = cu_ptr(in); a.dt_in = in->dtype;
    a.out = cu_ptr(out); a.dt_out = out->dtype;
    a.log = log_;
    return launch_rows(softmax_kernel<32>, softmax_kernel<256>, a, a.rows, a.D, "softmax");
}

int efla_cuda_softmax_backward(efla_tensor *grad_in, const efla_tensor *grad_out, const efla_tensor *out, int log_) {
    if (check_float("softmax_backward", grad_in) || check_float("softmax_backward", grad_out) ||
        check_float("softmax_backward", out))
        return -1;
    TRY(cu_set_device(out->device));
    RowArgs a = {};
    a.D = last_dim(out);
    a.rows = a.D ? efla_tensor_numel(out) / a.D : 0;
    a.in = cu_ptr(grad_out); a.dt_in = grad_out->dtype;
    a.in2 = cu_ptr(out); a.dt_in2 = out->dtype;
    a.out = cu_ptr(grad_in); a.dt_out = grad_in->dtype;
    a.log = log_;
    return launch_rows(softmax_backward_kernel<32>, softmax_backward_kernel<256>, a, a.rows, a.D, "softmax_backward");
}

int efla_cuda_norm(efla_tensor *out, efla_tensor *mean, efla_tensor *rstd, const efla_tensor *x,
                   const efla_tensor *weight, const efla_tensor *bias, double eps, int rms) {
    if (check_float("norm", x) || check_float("norm", out) || (weight && check_float("norm", weight)) ||
        (bias && check_float("norm", bias)))
        return -1;
    TRY(cu_set_device(x->device));
    NormArgs a = {};
    a.D = last_dim(x);
    a.rows = a.D ? efla_tensor_numel(x) / a.D : 0;
    a.x = cu_ptr(x); a.dt_x = x->dtype;
    a.out = cu_ptr(out); a.dt_out = out->dtype;
    if (weight) { a.w = cu_ptr(weight); a.dt_w = weight->dtype; }
    if (bias && !rms) { a.b = cu_ptr(bias); a.dt_b = bias->dtype; }
    if (mean) { a.mean = cu_ptr(mean); a.dt_mean = mean->dtype; a.s_mean = stride0(mean); }
    if (rstd) { a.rstd = cu_ptr(rstd); a.dt_rstd = rstd->dtype; a.s_rstd = stride0(rstd); }
    a.eps = eps;
    a.rms = rms;
    int fast = norm_fast(a, 0, NULL, x->device);
    if (fast <= 0) return fast;
    return launch_rows(norm_kernel<32>, norm_kernel<256>, a, a.rows, a.D, "norm");
}

int efla_cuda_norm_backward(efla_tensor *grad_x, efla_tensor *grad_w, efla_tensor *grad_b,
                            const efla_tensor *grad_out, const efla_tensor *x, const efla_tensor *weight,
                            const efla_tensor *mean, const efla_tensor *rstd, int rms) {
    if (check_float("norm_backward", x) || check_float("norm_backward", grad_out) ||
        (grad_x && check_float("norm_backward", grad_x)))
        return -1;
    if (!rstd || (!rms && !mean)) return efla_fail("norm_backward: the saved mean/rstd are missing");
    TRY(cu_set_device(x->device));
    NormArgs a = {};
    a.D = last_dim(x);
    a.rows = a.D ? efla_tensor_numel(x) / a.D : 0;
    a.x = cu_ptr(x); a.dt_x = x->dtype;
    a.dy = cu_ptr(grad_out); a.dt_dy = grad_out->dtype;
    if (weight) { a.w = cu_ptr(weight); a.dt_w = weight->dtype; }
    if (mean) { a.mean = cu_ptr(mean); a.dt_mean = mean->dtype; a.s_mean = stride0(mean); }
    a.rstd = cu_ptr(rstd); a.dt_rstd = rstd->dtype; a.s_rstd = stride0(rstd);
    a.rms = rms;
    if (grad_x) {
        a.dx = cu_ptr(grad_x); a.dt_dx = grad_x->dtype;
        int fast = norm_fast(a, 1, NULL, x->device);
        if (fast < 0) return -1;
        if (fast) TRY(launch_rows(norm_backward_kernel<32>, norm_backward_kernel<256>, a, a.rows, a.D, "norm_backward"));
    }
    if ((grad_w || grad_b) && a.D > 0) {
        NormGrads g = { grad_w, grad_b };
        int fast = norm_fast(a, 2, &g, x->device);
        NormWbStoreAny wb = { a.D, stride0(grad_w), stride0(grad_b), grad_w ? cu_ptr(grad_w) : NULL,
                              grad_b ? cu_ptr(grad_b) : NULL, grad_w ? grad_w->dtype : 0, grad_b ? grad_b->dtype : 0 };
        if (fast <= 0) return fast;
        /* enough segments of rows to fill the chip with D columns each */
        int64_t target = (int64_t)cu_sm_count() * 2048;
        int64_t segs = target / a.D;
        if (segs > a.rows / 16) segs = a.rows / 16;
        if (segs > 65535) segs = 65535;
        if (segs < 1) segs = 1;
        CuBuffer part;
        TRY(part.alloc(sizeof(double) * 2 * (size_t)(a.D * segs), x->device));
        dim3 grid((unsigned)((a.D + THREADS - 1) / THREADS), (unsigned)segs);
        norm_wb_partial_kernel<<<grid, THREADS>>>(a, (int)segs, part.as<double>());
        CU_CHECK_LAUNCH("norm_backward_wb");
        col_sum_kernel<<<col_sum_grid(2 * a.D), col_sum_block()>>>(part.as<double>(), segs, 2 * a.D, wb);
        CU_CHECK_LAUNCH("norm_backward_wb_sum");
    }
    return 0;
}

int efla_cuda_cross_entropy(efla_tensor *loss, efla_tensor *grad, const efla_tensor *logits,
                            const efla_tensor *target, int64_t ignore_index, double smoothing) {
    if (!efla_dtype_is_floating(logits->dtype) || logits->ndim != 2 || target->dtype != EFLA_INT64 || target->ndim != 1)
        return efla_fail("cross_entropy: expects float logits [N,C] and int64 targets [N], got %s %s and %s %s",
                         efla_tshape(logits), efla_dtype_name(logits->dtype), efla_tshape(target),
                         efla_dtype_name(target->dtype));
    TRY(cu_set_device(logits->device));
    CEArgs a = {};
    a.N = logits->shape[0];
    a.C = logits->shape[1];
    a.s0 = logits->strides[0];
    a.s1 = logits->strides[1];
    a.logits = cu_ptr(logits);
    a.dt_logits = logits->dtype;
    a.target = (const int64_t *)cu_ptr(target);
    a.st = target->strides[0];
    a.loss = cu_ptr(loss);
    a.dt_loss = loss->dtype;
    a.sl = stride0(loss);
    if (grad) { a.grad = cu_ptr(grad); a.dt_grad = grad->dtype; a.sg0 = grad->strides[0]; a.sg1 = grad->strides[1]; }
    a.ignore = ignore_index;
    a.smoothing = smoothing;
    if (a.N == 0) return 0;
    CuBuffer flag;
    TRY(flag.alloc(sizeof(unsigned long long), logits->device));
    CU_CHECK(cudaMemsetAsync(flag.ptr, 0xff, sizeof(unsigned long long), 0));
    a.bad_row = flag.as<unsigned long long>();
    TRY(launch_rows(cross_entropy_kernel<32>, cross_entropy_kernel<256>, a, a.N, a.C, "cross_entropy"));
    unsigned long long bad;
    CU_CHECK(cudaMemcpy(&bad, flag.ptr, sizeof bad, cudaMemcpyDeviceToHost));
    if (bad != ~0ull) {
        int64_t t = 0;
        CU_CHECK(cudaMemcpy(&t, a.target + (int64_t)bad * a.st, sizeof t, cudaMemcpyDeviceToHost));
        return efla_fail("cross_entropy: target %lld in row %lld is outside the %lld classes [0, %lld) and is not "
                         "ignore_index (%lld)", (long long)t, (long long)bad, (long long)a.C, (long long)a.C,
                         (long long)ignore_index);
    }
    return 0;
}

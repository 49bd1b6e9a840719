/* foreach.cu: the multi-tensor ops on CUDA (front end core/ops_foreach.c): a whole list of
 * gradients in a couple of launches, with nothing copied to or read from the host.
 *
 * The list goes to the kernel by value, as a kernel parameter (FeList, up to FE_MAX tensors
 * per launch: longer lists take several launches). Every tensor is cut into chunks of
 * FE_CHUNK elements, one block per chunk; block b finds its tensor by a binary search of the
 * chunk starts. Loads and stores are 16 bytes wide where the tensor is 16-byte aligned
 * (FE_CHUNK is a multiple of 8, so every chunk starts aligned then).
 *
 * foreach_sum_squares: each block writes the double sum of its chunk's squares to a scratch
 * partial (one per chunk, in list order); one single-block kernel then adds all partials
 * in a fixed order into the 0-d output. The layout depends only on the sizes, and every sum
 * runs in a fixed order, so the result is the same on every run.
 * foreach_scale: each block scales its chunk by the float64 coef read on the device.
 * foreach_adamw: each block runs adamw_kernel's update (elementwise.cu) on its chunk of one
 * parameter and its grad, m and v (FaList: 64 tensors a launch, four pointers each).
 * bench/cuda/foreach_emu.cpp runs these kernels on the host (EFLA_FOREACH_EMULATE) against the
 * cpu backend. */
#ifndef EFLA_FOREACH_EMULATE
#include "kernels.cuh"
#endif
#include "vec_io.cuh"

namespace {

constexpr int FE_MAX = 128;
constexpr int FE_THREADS = 256;
constexpr int64_t FE_CHUNK = 16384;   /* 64 elements per thread */
constexpr int FE_FINISH_THREADS = 1024;

struct FeList {
    void *ptr[FE_MAX];
    int64_t numel[FE_MAX];
    int64_t first[FE_MAX + 1];   /* first block of tensor k in this launch; first[n] = the blocks */
    int8_t dtype[FE_MAX];
    int8_t vec[FE_MAX];          /* 1: 16-byte aligned, vector loads */
    int n;
};

/* Block b of a launch over a list (FeList or FaList: first, numel, n): its tensor k and the
 * elements [lo, hi) of that tensor it covers (a binary search over the first blocks). */
struct BlockRange { int k; int64_t lo, hi; };
template <class List> __device__ __forceinline__ BlockRange block_range(const List &L, int64_t b) {
    int lo = 0, hi = L.n - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) >> 1;
        if (L.first[mid] <= b) lo = mid; else hi = mid - 1;
    }
    BlockRange r{lo, (b - L.first[lo]) * FE_CHUNK, 0};
    r.hi = r.lo + FE_CHUNK < L.numel[lo] ? r.lo + FE_CHUNK : L.numel[lo];
    return r;
}

__device__ __forceinline__ double bf2d(unsigned short h) {
    return (double)__uint_as_float((unsigned)h << 16);
}

/* the sum of squares of elements [lo, hi) of one tensor, this thread's share */
__device__ double fe_thread_sumsq(const void *p, int dt, bool vec, int64_t lo, int64_t hi) {
    double acc = 0;
    if (dt == EFLA_FLOAT32) {
        const float *x = (const float *)p;
        int64_t j = lo;
        if (vec) {
            int64_t nv = (hi - lo) / 4;
            const float4 *v = (const float4 *)(x + lo);
            for (int64_t k = threadIdx.x; k < nv; k += blockDim.x) {
                float4 a = v[k];
                acc += (double)a.x * a.x + (double)a.y * a.y + (double)a.z * a.z + (double)a.w * a.w;
            }
            j = lo + nv * 4;
        }
        for (j += threadIdx.x; j < hi; j += blockDim.x) acc += (double)x[j] * x[j];
    } else if (dt == EFLA_FLOAT64) {
        const double *x = (const double *)p;
        int64_t j = lo;
        if (vec) {
            int64_t nv = (hi - lo) / 2;
            const double2 *v = (const double2 *)(x + lo);
            for (int64_t k = threadIdx.x; k < nv; k += blockDim.x) {
                double2 a = v[k];
                acc += a.x * a.x + a.y * a.y;
            }
            j = lo + nv * 2;
        }
        for (j += threadIdx.x; j < hi; j += blockDim.x) acc += x[j] * x[j];
    } else {   /* bfloat16 */
        const unsigned short *x = (const unsigned short *)p;
        int64_t j = lo;
        if (vec) {
            int64_t nv = (hi - lo) / 8;
            const uint4 *v = (const uint4 *)(x + lo);
            for (int64_t k = threadIdx.x; k < nv; k += blockDim.x) {
                uint4 a = v[k];
                unsigned w[4] = { a.x, a.y, a.z, a.w };
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    double u = bf2d((unsigned short)(w[e] & 0xffffu)), h = bf2d((unsigned short)(w[e] >> 16));
                    acc += u * u + h * h;
                }
            }
            j = lo + nv * 8;
        }
        for (j += threadIdx.x; j < hi; j += blockDim.x) {
            double u = bf2d(x[j]);
            acc += u * u;
        }
    }
    return acc;
}

/* The block's sum, in a fixed order, valid in thread 0. blockDim.x is a multiple of 32. */
__device__ double fe_block_sum(double v) {
    __shared__ double warp_part[32];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    if (lane == 0) warp_part[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < nw ? warp_part[lane] : 0.0;
        for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    }
    return v;
}

__global__ void __launch_bounds__(FE_THREADS) fe_sumsq_kernel(const FeList L, double *part) {
    const int64_t b = blockIdx.x;
    const BlockRange r = block_range(L, b);
    const int k = r.k;
    const int64_t lo = r.lo, hi = r.hi;
    double s = fe_block_sum(fe_thread_sumsq(L.ptr[k], L.dtype[k], L.vec[k], lo, hi));
    if (threadIdx.x == 0) part[b] = s;
}

/* out = part[0] + ... + part[n-1]: a strided sum per thread, then the block's fixed tree */
__global__ void __launch_bounds__(FE_FINISH_THREADS) fe_finish_kernel(const double *part, int64_t n, double *out) {
    double s = 0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += part[i];
    s = fe_block_sum(s);
    if (threadIdx.x == 0) *out = s;
}

__global__ void __launch_bounds__(FE_THREADS) fe_scale_kernel(const FeList L, const double *coef) {
    const int64_t b = blockIdx.x;
    const BlockRange r = block_range(L, b);
    const int k = r.k;
    const int64_t lo = r.lo, hi = r.hi;
    const double c = *coef;
    const float cf = (float)c;
    int dt = L.dtype[k];
    bool vec = L.vec[k];
    if (dt == EFLA_FLOAT32) {
        float *x = (float *)L.ptr[k];
        int64_t j = lo;
        if (vec) {
            int64_t nv = (hi - lo) / 4;
            float4 *v = (float4 *)(x + lo);
            for (int64_t i = threadIdx.x; i < nv; i += blockDim.x) {
                float4 a = v[i];
                a.x *= cf; a.y *= cf; a.z *= cf; a.w *= cf;
                v[i] = a;
            }
            j = lo + nv * 4;
        }
        for (j += threadIdx.x; j < hi; j += blockDim.x) x[j] *= cf;
    } else if (dt == EFLA_FLOAT64) {
        double *x = (double *)L.ptr[k];
        int64_t j = lo;
        if (vec) {
            int64_t nv = (hi - lo) / 2;
            double2 *v = (double2 *)(x + lo);
            for (int64_t i = threadIdx.x; i < nv; i += blockDim.x) {
                double2 a = v[i];
                a.x *= c; a.y *= c;
                v[i] = a;
            }
            j = lo + nv * 2;
        }
        for (j += threadIdx.x; j < hi; j += blockDim.x) x[j] *= c;
    } else {   /* bfloat16, in float as on the cpu */
        bf16 *x = (bf16 *)L.ptr[k];
        int64_t j = lo;
        if (vec) {
            int64_t nv = (hi - lo) / 8;
            for (int64_t i = threadIdx.x; i < nv; i += blockDim.x) {
                float f[8];
                load8(x + lo + 8 * i, f);
#pragma unroll
                for (int e = 0; e < 8; e++) f[e] *= cf;
                store8(x + lo + 8 * i, f);
            }
            j = lo + nv * 8;
        }
        for (j += threadIdx.x; j < hi; j += blockDim.x) x[j] = __float2bfloat16(__bfloat162float(x[j]) * cf);
    }
}

/* Fills L with tensors [from, from + FE_MAX) of ts that have elements (skipping empty ones);
 * returns the index after the last tensor taken. */
int fe_pack(int n, const efla_tensor *const *ts, int from, FeList &L) {
    L.n = 0;
    L.first[0] = 0;
    int i = from;
    for (; i < n && L.n < FE_MAX; i++) {
        int64_t numel = efla_tensor_numel(ts[i]);
        if (numel == 0) continue;
        char *p = cu_ptr(ts[i]);
        L.ptr[L.n] = p;
        L.numel[L.n] = numel;
        L.dtype[L.n] = (int8_t)ts[i]->dtype;
        L.vec[L.n] = ((uintptr_t)p & 15u) == 0;
        L.first[L.n + 1] = L.first[L.n] + (numel + FE_CHUNK - 1) / FE_CHUNK;
        L.n++;
    }
    return i;
}

/* ---- foreach_adamw: four pointers per tensor, so fewer tensors a launch (the parameters
 * stay under the 4 KiB of a classic kernel argument list) ---- */
constexpr int FA_MAX = 64;

struct FaList {
    void *p[FA_MAX], *g[FA_MAX], *m[FA_MAX], *v[FA_MAX];
    int64_t first[FA_MAX + 1];   /* first block of tensor k in this launch; first[n] = the blocks */
    int64_t numel[FA_MAX];
    int8_t dp[FA_MAX], dm[FA_MAX];   /* the dtypes of p (and g), of m (and v) */
    int n;
};
struct FaArgs { double lr, b1, b2, eps, wd, ibc1, ibc2; };


template <typename S> struct FaIo;
template <> struct FaIo<float> {
    static __device__ __forceinline__ float ld(const float *x) { return *x; }
    static __device__ __forceinline__ void st(float *x, float v) { *x = v; }
};
template <> struct FaIo<double> {
    static __device__ __forceinline__ double ld(const double *x) { return *x; }
    static __device__ __forceinline__ void st(double *x, double v) { *x = v; }
};
template <> struct FaIo<bf16> {
    static __device__ __forceinline__ float ld(const bf16 *x) { return __bfloat162float(*x); }
    static __device__ __forceinline__ void st(bf16 *x, float v) { *x = __float2bfloat16(v); }
};
__device__ __forceinline__ float fa_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double fa_sqrt(double x) { return sqrt(x); }

/* elements [lo, hi) of one tensor: adamw_kernel's arithmetic (cuda/elementwise.cu) and the
 * cpu's, operation for operation, in the compute type CT */
template <typename SP, typename SM, typename CT>
__device__ void fa_chunk(const FaList &L, int k, int64_t lo, int64_t hi, const FaArgs &a) {
    const CT lr = (CT)a.lr, lrwd = (CT)(a.lr * a.wd), b1 = (CT)a.b1, b2 = (CT)a.b2, eps = (CT)a.eps,
             ibc1 = (CT)a.ibc1, ibc2 = (CT)a.ibc2;
    SP *pp = (SP *)L.p[k];
    const SP *pg = (const SP *)L.g[k];
    SM *pm = (SM *)L.m[k], *pv = (SM *)L.v[k];
    for (int64_t j = lo + threadIdx.x; j < hi; j += blockDim.x) {
        CT p = (CT)FaIo<SP>::ld(pp + j), g = (CT)FaIo<SP>::ld(pg + j), m = (CT)FaIo<SM>::ld(pm + j),
           v = (CT)FaIo<SM>::ld(pv + j);
        p -= lrwd * p;
        m = b1 * m + (1 - b1) * g;
        v = b2 * v + (1 - b2) * g * g;
        p -= lr * (m * ibc1) / (fa_sqrt(v * ibc2) + eps);
        FaIo<SP>::st(pp + j, p);
        FaIo<SM>::st(pm + j, m);
        FaIo<SM>::st(pv + j, v);
    }
}

__global__ void __launch_bounds__(FE_THREADS) fa_adamw_kernel(const FaList L, const FaArgs a) {
    const int64_t b = blockIdx.x;
    const BlockRange r = block_range(L, b);
    const int k = r.k;
    const int64_t lo = r.lo, hi = r.hi;
    int dp = L.dp[k], dm = L.dm[k];
    if (dp == EFLA_FLOAT32) fa_chunk<float, float, float>(L, k, lo, hi, a);
    else if (dp == EFLA_FLOAT64 && dm == EFLA_FLOAT64) fa_chunk<double, double, double>(L, k, lo, hi, a);
    else if (dp == EFLA_FLOAT64) fa_chunk<double, float, double>(L, k, lo, hi, a);
    else if (dm == EFLA_BFLOAT16) fa_chunk<bf16, bf16, float>(L, k, lo, hi, a);
    else fa_chunk<bf16, float, float>(L, k, lo, hi, a);
}

/* Fills L with the tensors [from, ...) that have elements, up to FA_MAX; returns the index
 * after the last tensor taken. */
int fa_pack(int n, efla_tensor *const *ps, const efla_tensor *const *gs, efla_tensor *const *ms,
            efla_tensor *const *vs, int from, FaList &L) {
    L.n = 0;
    L.first[0] = 0;
    int i = from;
    for (; i < n && L.n < FA_MAX; i++) {
        int64_t numel = efla_tensor_numel(ps[i]);
        if (numel == 0) continue;
        L.p[L.n] = cu_ptr(ps[i]);
        L.g[L.n] = cu_ptr(gs[i]);
        L.m[L.n] = cu_ptr(ms[i]);
        L.v[L.n] = cu_ptr(vs[i]);
        L.numel[L.n] = numel;
        L.dp[L.n] = (int8_t)ps[i]->dtype;
        L.dm[L.n] = (int8_t)ms[i]->dtype;
        L.first[L.n + 1] = L.first[L.n] + (numel + FE_CHUNK - 1) / FE_CHUNK;
        L.n++;
    }
    return i;
}

FaArgs fa_args(double lr, double beta1, double beta2, double eps, double wd, int64_t step) {
    FaArgs a = { lr, beta1, beta2, eps, wd, 1.0 / (1.0 - pow(beta1, (double)step)), 1.0 / (1.0 - pow(beta2, (double)step)) };
    return a;
}

} // namespace

#ifndef EFLA_FOREACH_EMULATE
int efla_cuda_foreach_sum_squares(efla_tensor *out, int n, const efla_tensor *const *ts) {
    TRY(cu_set_device(out->device));
    int64_t blocks = 0;
    for (int i = 0; i < n; i++) blocks += (efla_tensor_numel(ts[i]) + FE_CHUNK - 1) / FE_CHUNK;
    CuBuffer part;
    if (blocks > 0) TRY(part.alloc(sizeof(double) * (size_t)blocks, out->device));
    FeList L;
    int64_t done = 0;
    for (int from = 0; from < n;) {
        from = fe_pack(n, ts, from, L);
        if (L.n == 0) continue;
        fe_sumsq_kernel<<<(unsigned)L.first[L.n], FE_THREADS>>>(L, part.as<double>() + done);
        CU_CHECK_LAUNCH("foreach_sum_squares");
        done += L.first[L.n];
    }
    fe_finish_kernel<<<1, FE_FINISH_THREADS>>>(part.as<double>(), blocks, (double *)cu_ptr(out));
    CU_CHECK_LAUNCH("foreach_sum_squares_finish");
    return 0;
}

int efla_cuda_foreach_scale(int n, efla_tensor *const *ts, const efla_tensor *coef) {
    TRY(cu_set_device(coef->device));
    FeList L;
    for (int from = 0; from < n;) {
        from = fe_pack(n, (const efla_tensor *const *)ts, from, L);
        if (L.n == 0) continue;
        fe_scale_kernel<<<(unsigned)L.first[L.n], FE_THREADS>>>(L, (const double *)cu_ptr(coef));
        CU_CHECK_LAUNCH("foreach_scale");
    }
    return 0;
}
#endif

#ifndef EFLA_FOREACH_EMULATE
static_assert(sizeof(FaList) + sizeof(FaArgs) <= 4000, "foreach_adamw's kernel arguments must fit 4 KiB");

/* the dtype pairs fa_adamw_kernel computes (the front end's rule: g as p; m, v as p or float32) */
static bool fa_supported(const efla_tensor *p, const efla_tensor *g, const efla_tensor *m, const efla_tensor *v) {
    if (g->dtype != p->dtype || m->dtype != v->dtype) return false;
    if (p->dtype == EFLA_FLOAT32) return m->dtype == EFLA_FLOAT32;
    return (p->dtype == EFLA_FLOAT64 || p->dtype == EFLA_BFLOAT16) && (m->dtype == p->dtype || m->dtype == EFLA_FLOAT32);
}


int efla_cuda_foreach_adamw(int n, efla_tensor *const *ps, const efla_tensor *const *gs, efla_tensor *const *ms,
                            efla_tensor *const *vs, double lr, double beta1, double beta2, double eps, double wd,
                            int64_t step) {
    for (int i = 0; i < n; i++)
        if (!fa_supported(ps[i], gs[i], ms[i], vs[i]))
            return efla_fail("foreach_adamw (cuda kernel): unsupported dtypes for tensor %d: p %s, grad %s, m %s, v %s", i,
                             efla_dtype_name(ps[i]->dtype), efla_dtype_name(gs[i]->dtype),
                             efla_dtype_name(ms[i]->dtype), efla_dtype_name(vs[i]->dtype));
    if (n == 0) return 0;
    TRY(cu_set_device(ps[0]->device));
    FaArgs a = fa_args(lr, beta1, beta2, eps, wd, step);
    FaList L;
    for (int from = 0; from < n;) {
        from = fa_pack(n, ps, gs, ms, vs, from, L);
        if (L.n == 0) continue;
        fa_adamw_kernel<<<(unsigned)L.first[L.n], FE_THREADS>>>(L, a);
        CU_CHECK_LAUNCH("foreach_adamw");
    }
    return 0;
}
#endif

/* common.cuh: what every file of the CUDA backend shares: core's C headers seen from C++,
 * error checking (every CUDA and cuBLAS call is checked; a failure becomes
 * efla_fail("cuda: <call> failed: <reason>"), never an abort), device selection, dtype
 * traits and dispatch, and a strided-iteration descriptor for elementwise kernels. */
#ifndef EFLA_CUDA_COMMON_CUH
#define EFLA_CUDA_COMMON_CUH

#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cublas_v2.h>
#include <atomic>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <math.h>

/* core/internal.h uses C11 atomics in its structs. g++ before C++23 has no <stdatomic.h>
 * types, so give it std::atomic (same size and layout) and skip libstdc++'s wrapper. */
#ifndef _GLIBCXX_STDATOMIC_H
#define _GLIBCXX_STDATOMIC_H 1
#endif
using std::atomic_int;
using std::atomic_llong;

extern "C" {
#include "../core/backend.h"
/* cuda/allocator.cu */
void *efla_cuda_alloc(size_t nbytes, int device);
void efla_cuda_free(void *ptr, size_t nbytes, int device);
int efla_cuda_backend_memory_stats(int device, efla_memory_stats *stats);
int efla_cuda_backend_empty_cache(int device);
}

/* ---- errors --------------------------------------------------------------------------- */
/* A failed call: clear the (non-sticky) error state and report. */
#define CU_CHECK(call) do { \
    cudaError_t e_ = (call); \
    if (e_ != cudaSuccess) { (void)cudaGetLastError(); \
        return efla_fail("cuda: %s failed: %s", #call, cudaGetErrorString(e_)); } \
} while (0)
/* After a kernel launch: configuration errors show up here (faults show up later, at the
 * next synchronising call, which is checked too). */
#define CU_CHECK_LAUNCH(name) do { \
    cudaError_t e_ = cudaGetLastError(); \
    if (e_ != cudaSuccess) return efla_fail("cuda: kernel %s failed: %s", name, cudaGetErrorString(e_)); \
} while (0)
#define CUBLAS_CHECK(call) do { \
    cublasStatus_t s_ = (call); \
    if (s_ != CUBLAS_STATUS_SUCCESS) \
        return efla_fail("cuda: %s failed: %s", #call, cublasGetStatusString(s_)); \
} while (0)
/* Propagate a failed int-returning helper. */
#define TRY(expr) do { if ((expr) < 0) return -1; } while (0)

/* Makes `device` (EFLA_DEVICE_CUDA0 + index) current for this thread. */
int cu_set_device(int device);
/* The cuBLAS handle of a device (created on first use, bound to the default stream). */
int cu_cublas(int device, cublasHandle_t *out);
/* Number of multiprocessors of the current device (for grid sizing). */
int cu_sm_count(void);
/* Device scratch memory through the caching allocator, freed by the destructor. */
struct CuBuffer {
    void *ptr = nullptr;
    size_t nbytes = 0;
    int device = 0;
    int alloc(size_t n, int dev) {
        ptr = efla_cuda_alloc(n, dev);
        nbytes = n; device = dev;
        return ptr ? 0 : -1;
    }
    ~CuBuffer() { if (ptr) efla_cuda_free(ptr, nbytes, device); }
    template <class T> T *as() const { return (T *)ptr; }
};

/* ---- launch geometry --------------------------------------------------------------------- */
static inline unsigned cu_blocks(int64_t n, int threads) {
    int64_t b = (n + threads - 1) / threads;
    int64_t cap = (int64_t)cu_sm_count() * 32;
    if (b > cap) b = cap;   /* grid-stride loops do the rest */
    return (unsigned)(b < 1 ? 1 : b);
}
#define CU_GRID_STRIDE(i, n) \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
         i += (int64_t)gridDim.x * blockDim.x)

/* ---- tensors on the device ---------------------------------------------------------------- */
static inline char *cu_ptr(const efla_tensor *t) {
    return (char *)t->storage->data + t->offset * (int64_t)efla_dtype_size(t->dtype);
}

/* Up to 4 same-shaped operands walked together, with dims of size 1 dropped and dims that
 * are contiguous for every operand merged (a contiguous tensor becomes 1-d, so the index
 * arithmetic vanishes). Strides in elements. */
template <int N> struct Iter {
    int ndim;
    int64_t n;
    int64_t shape[EFLA_MAX_DIMS];
    int64_t strides[N][EFLA_MAX_DIMS];
    char *data[N];
};

/* From raw arrays: one shape, N stride sets, N base addresses. */
template <int N>
static Iter<N> make_iter_raw(int ndim, const int64_t *shape, const int64_t *const *strides, char *const *data) {
    Iter<N> it;
    it.n = efla_numel_of(ndim, shape);
    int nd = 0;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] == 1) continue;
        it.shape[nd] = shape[d];
        for (int k = 0; k < N; k++) it.strides[k][nd] = strides[k][d];
        nd++;
    }
    /* merge dim d into d-1 when every operand steps through both as one */
    int m = 0;
    for (int d = 0; d < nd; d++) {
        if (m > 0) {
            bool ok = true;
            for (int k = 0; k < N; k++)
                if (it.strides[k][m - 1] != it.strides[k][d] * it.shape[d]) ok = false;
            if (ok) {
                it.shape[m - 1] *= it.shape[d];
                for (int k = 0; k < N; k++) it.strides[k][m - 1] = it.strides[k][d];
                continue;
            }
        }
        it.shape[m] = it.shape[d];
        for (int k = 0; k < N; k++) it.strides[k][m] = it.strides[k][d];
        m++;
    }
    it.ndim = m;
    for (int k = 0; k < N; k++) it.data[k] = data[k];
    return it;
}

/* Same-shaped tensors (ts[0] gives the shape). */
template <int N>
static Iter<N> make_iter(const efla_tensor *const *ts) {
    const int64_t *strides[N];
    char *data[N];
    for (int k = 0; k < N; k++) { strides[k] = ts[k]->strides; data[k] = cu_ptr(ts[k]); }
    return make_iter_raw<N>(ts[0]->ndim, ts[0]->shape, strides, data);
}

/* Element offsets (in elements) of linear index i for every operand. */
template <int N>
__device__ __forceinline__ void iter_offsets(const Iter<N> &it, int64_t i, int64_t *off) {
#pragma unroll
    for (int k = 0; k < N; k++) off[k] = 0;
    if (it.ndim == 1) {
#pragma unroll
        for (int k = 0; k < N; k++) off[k] = i * it.strides[k][0];
        return;
    }
    for (int d = it.ndim - 1; d >= 0; d--) {
        int64_t s = it.shape[d];
        int64_t q = i / s, r = i - q * s;
        i = q;
#pragma unroll
        for (int k = 0; k < N; k++) off[k] += r * it.strides[k][d];
    }
}

/* ---- dtypes ----------------------------------------------------------------------------------- */
typedef __nv_bfloat16 bf16;

/* Storage type, compute type and conversions of each dtype. Floats compute in float
 * (bfloat16 too) or double; integers and bool in int64. Conversions follow core's
 * efla_store_from_double: NaN -> 0 for int64, bool is v != 0. */
template <int DT> struct DT_;
template <> struct DT_<EFLA_FLOAT32> { typedef float S; typedef float C; static const bool fp = true; };
template <> struct DT_<EFLA_FLOAT64> { typedef double S; typedef double C; static const bool fp = true; };
template <> struct DT_<EFLA_BFLOAT16> { typedef bf16 S; typedef float C; static const bool fp = true; };
template <> struct DT_<EFLA_INT64> { typedef int64_t S; typedef int64_t C; static const bool fp = false; };
template <> struct DT_<EFLA_UINT8> { typedef uint8_t S; typedef int64_t C; static const bool fp = false; };
template <> struct DT_<EFLA_BOOL> { typedef uint8_t S; typedef int64_t C; static const bool fp = false; };

__device__ __forceinline__ float ld_c(const float *p) { return *p; }
__device__ __forceinline__ double ld_c(const double *p) { return *p; }
__device__ __forceinline__ float ld_c(const bf16 *p) { return __bfloat162float(*p); }
__device__ __forceinline__ int64_t ld_c(const int64_t *p) { return *p; }
__device__ __forceinline__ int64_t ld_c(const uint8_t *p) { return *p; }

/* Load any dtype as double / store a double into any dtype (casts, reductions). */
template <int DT> __device__ __forceinline__ double ld_d(const void *p) {
    if (DT == EFLA_BOOL) return *(const uint8_t *)p ? 1.0 : 0.0;
    return (double)ld_c((const typename DT_<DT>::S *)p);
}
template <int DT> __device__ __forceinline__ int64_t ld_i(const void *p) {
    if (DT == EFLA_BOOL) return *(const uint8_t *)p ? 1 : 0;
    if (DT_<DT>::fp) { double v = ld_d<DT>(p); return isnan(v) ? 0 : (int64_t)v; }
    return (int64_t)ld_c((const typename DT_<DT>::S *)p);
}
template <int DT> __device__ __forceinline__ void st_d(void *p, double v) {
    switch (DT) {
    case EFLA_FLOAT32: *(float *)p = (float)v; break;
    case EFLA_FLOAT64: *(double *)p = v; break;
    case EFLA_BFLOAT16: *(bf16 *)p = __float2bfloat16((float)v); break;
    case EFLA_INT64: *(int64_t *)p = isnan(v) ? 0 : (int64_t)v; break;
    case EFLA_UINT8: *(uint8_t *)p = (uint8_t)(int64_t)v; break;
    case EFLA_BOOL: *(uint8_t *)p = v != 0; break;
    }
}
template <int DT> __device__ __forceinline__ void st_i(void *p, int64_t v) {
    switch (DT) {
    case EFLA_FLOAT32: *(float *)p = (float)v; break;
    case EFLA_FLOAT64: *(double *)p = (double)v; break;
    case EFLA_BFLOAT16: *(bf16 *)p = __float2bfloat16((float)v); break;
    case EFLA_INT64: *(int64_t *)p = v; break;
    case EFLA_UINT8: *(uint8_t *)p = (uint8_t)v; break;
    case EFLA_BOOL: *(uint8_t *)p = v != 0; break;
    }
}
/* Compute-typed load/store (C of DT_). */
template <int DT> __device__ __forceinline__ typename DT_<DT>::C ld(const void *p) {
    if (DT == EFLA_BOOL) return *(const uint8_t *)p ? 1 : 0;
    return ld_c((const typename DT_<DT>::S *)p);
}
template <int DT> __device__ __forceinline__ void st(void *p, typename DT_<DT>::C v) {
    if (DT_<DT>::fp) st_d<DT>(p, (double)v);
    else st_i<DT>(p, (int64_t)v);
}
template <> __device__ __forceinline__ void st<EFLA_FLOAT32>(void *p, float v) { *(float *)p = v; }
template <> __device__ __forceinline__ void st<EFLA_BFLOAT16>(void *p, float v) { *(bf16 *)p = __float2bfloat16(v); }

/* Calls F::template run<DT>(args...) for a runtime dtype. */
#define CU_DISPATCH_CASE(DTV, F, ...) case DTV: return F::template run<DTV>(__VA_ARGS__);
#define CU_DISPATCH_ALL(dtype, F, ...) do { switch (dtype) { \
    CU_DISPATCH_CASE(EFLA_FLOAT32, F, __VA_ARGS__) CU_DISPATCH_CASE(EFLA_FLOAT64, F, __VA_ARGS__) \
    CU_DISPATCH_CASE(EFLA_BFLOAT16, F, __VA_ARGS__) CU_DISPATCH_CASE(EFLA_INT64, F, __VA_ARGS__) \
    CU_DISPATCH_CASE(EFLA_UINT8, F, __VA_ARGS__) CU_DISPATCH_CASE(EFLA_BOOL, F, __VA_ARGS__) \
    default: return efla_fail("cuda: invalid dtype %d", (int)(dtype)); } } while (0)
#define CU_DISPATCH_FLOAT(op, dtype, F, ...) do { switch (dtype) { \
    CU_DISPATCH_CASE(EFLA_FLOAT32, F, __VA_ARGS__) CU_DISPATCH_CASE(EFLA_FLOAT64, F, __VA_ARGS__) \
    CU_DISPATCH_CASE(EFLA_BFLOAT16, F, __VA_ARGS__) \
    default: return efla_fail("%s: dtype %s is not supported on cuda (use float32, float64 or bfloat16)", \
                              op, efla_dtype_name(dtype)); } } while (0)

#endif

/* vec_io.cuh: the memory-bound kernels' shared pieces (nn.cu's fast norm path, fused.cu):
 *   - load8/store8: eight consecutive float32 or bfloat16 elements as float registers, in one
 *     16-byte (bf16) or two 16-byte (float) accesses, so that a warp moves whole cache lines
 *     (the scalar 2-byte loads of a bf16 row left most of each transaction unused);
 *   - load2/store2: two consecutive elements (a channel pair), 4 or 8 bytes;
 *   - col_sum_kernel: out[j] = sum over rows r of part[r * cols + j], the second stage of the
 *     column sums (weight gradients) that kernels write per block or per row segment. One
 *     block of 32 x 8 threads per 32 columns, the 8 row lanes combined in shared memory in a
 *     fixed order: deterministic, and parallel over the rows (a thread per column walking all
 *     partial rows alone took 0.1-0.5 ms for a 512-wide RMSNorm weight).
 * The callers check alignment (16 bytes for load8, 4/8 for load2) and n % 8 == 0. */
#ifndef EFLA_CUDA_VEC_IO_CUH
#define EFLA_CUDA_VEC_IO_CUH
#include <cuda_bf16.h>
#include <stdint.h>
#include <stdlib.h>

__device__ __forceinline__ void load8(const float *p, float *f) {
    float4 a = ((const float4 *)p)[0], b = ((const float4 *)p)[1];
    f[0] = a.x; f[1] = a.y; f[2] = a.z; f[3] = a.w; f[4] = b.x; f[5] = b.y; f[6] = b.z; f[7] = b.w;
}
__device__ __forceinline__ void load8(const __nv_bfloat16 *p, float *f) {
    uint4 u = *(const uint4 *)p;
    const __nv_bfloat162 *h = (const __nv_bfloat162 *)&u;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        float2 v = __bfloat1622float2(h[i]);
        f[2 * i] = v.x; f[2 * i + 1] = v.y;
    }
}
__device__ __forceinline__ void store8(float *p, const float *f) {
    ((float4 *)p)[0] = make_float4(f[0], f[1], f[2], f[3]);
    ((float4 *)p)[1] = make_float4(f[4], f[5], f[6], f[7]);
}
__device__ __forceinline__ void store8(__nv_bfloat16 *p, const float *f) {
    uint4 u;
    __nv_bfloat162 *h = (__nv_bfloat162 *)&u;
#pragma unroll
    for (int i = 0; i < 4; i++) h[i] = __floats2bfloat162_rn(f[2 * i], f[2 * i + 1]);
    *(uint4 *)p = u;
}

__device__ __forceinline__ float2 load2(const float *p) { return *(const float2 *)p; }
__device__ __forceinline__ float2 load2(const __nv_bfloat16 *p) { return __bfloat1622float2(*(const __nv_bfloat162 *)p); }
__device__ __forceinline__ void store2(float *p, float2 v) { *(float2 *)p = v; }
__device__ __forceinline__ void store2(__nv_bfloat16 *p, float2 v) { *(__nv_bfloat162 *)p = __floats2bfloat162_rn(v.x, v.y); }

static inline bool aligned_to(const void *p, uintptr_t n) { return ((uintptr_t)p % n) == 0; }

/* EFLA_CUDA_GENERIC=1 turns the fast paths off (the generic kernels are their reference when
 * comparing speed or hunting a bug) */
static inline bool fast_paths_enabled() {
    static const bool off = getenv("EFLA_CUDA_GENERIC") != nullptr;
    return !off;
}

/* out[j * out_stride] = sum_r part[r * cols + j] (double accumulation); OUT stores a double. */
template <class P, class Store>
__global__ void col_sum_kernel(const P *part, int64_t rows, int64_t cols, Store store) {
    __shared__ double sh[8][33];
    int64_t j = (int64_t)blockIdx.x * 32 + threadIdx.x;
    double s = 0;
    if (j < cols)
        for (int64_t r = threadIdx.y; r < rows; r += 8) s += (double)part[r * cols + j];
    sh[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && j < cols) {
        for (int k = 1; k < 8; k++) s += sh[k][threadIdx.x];
        store(j, s);
    }
}
/* launch geometry of col_sum_kernel */
static inline dim3 col_sum_grid(int64_t cols) { return dim3((unsigned)((cols + 31) / 32)); }
static inline dim3 col_sum_block() { return dim3(32, 8); }

#endif

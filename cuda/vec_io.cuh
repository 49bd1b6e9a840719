/* vec_io.cuh: the memory-bound kernels' shared pieces (nn.cu's fast norm path, fused.cu):
 *   - load8/store8: eight consecutive float32 or bfloat16 elements as float registers, in one
 *     16-byte (bf16) or two 16-byte (float) accesses, so that a warp moves whole cache lines
 *     (the scalar 2-byte loads of a bf16 row left most of each transaction unused);
 *   - load2/store2: two consecutive elements (a channel pair), 4 or 8 bytes; load1/store1 one;
 *   - warp_sum: a warp's sum in every lane;
 *   - col_sum_kernel: out[j] = sum over rows r of part[r * cols + j], the second stage of the
 *     column sums (weight gradients) that kernels write per block or per row segment. One
 *     block of 32 x 8 threads per 32 columns, the 8 row lanes combined in shared memory in a
 *     fixed order: deterministic, and parallel over the rows (a thread per column walking all
 *     partial rows alone took 135-510 us a call for the byte LM's RMSNorm weights under ncu).
 * The callers check alignment (16 bytes for load8, 4/8 for load2) and n % 8 == 0. The kernels
 * built on these (norm_fast.cuh, conv_fast.cuh) also compile on the host, under
 * bench/cuda/fast_paths_emu.cpp, which checks them against float64 references. */
#ifndef EFLA_CUDA_VEC_IO_CUH
#define EFLA_CUDA_VEC_IO_CUH
#ifndef EFLA_EMULATE_CUDA   /* bench/cuda/fast_paths_emu.cpp supplies these types on the host */
#include <cuda_bf16.h>
#endif
#include <stdint.h>
#include <stdlib.h>

__device__ __forceinline__ void load8(const float *p, float *f) {
    float4 a = ((const float4 *)p)[0], b = ((const float4 *)p)[1];
    f[0] = a.x; f[1] = a.y; f[2] = a.z; f[3] = a.w; f[4] = b.x; f[5] = b.y; f[6] = b.z; f[7] = b.w;
}
/* bfloat16 <-> float by bits (the upper half of a float32), so no local is read through a
 * pointer of another type (the host emulator compiles these with strict aliasing too) */
__device__ __forceinline__ float bf16_lo(unsigned w) { return __uint_as_float(w << 16); }
__device__ __forceinline__ float bf16_hi(unsigned w) { return __uint_as_float(w & 0xffff0000u); }
__device__ __forceinline__ unsigned bf16_pack(float lo, float hi) {
    return (unsigned)__bfloat16_as_ushort(__float2bfloat16_rn(lo)) |
           ((unsigned)__bfloat16_as_ushort(__float2bfloat16_rn(hi)) << 16);
}
__device__ __forceinline__ void load8(const __nv_bfloat16 *p, float *f) {
    uint4 u = *(const uint4 *)p;
    f[0] = bf16_lo(u.x); f[1] = bf16_hi(u.x); f[2] = bf16_lo(u.y); f[3] = bf16_hi(u.y);
    f[4] = bf16_lo(u.z); f[5] = bf16_hi(u.z); f[6] = bf16_lo(u.w); f[7] = bf16_hi(u.w);
}
__device__ __forceinline__ void store8(float *p, const float *f) {
    ((float4 *)p)[0] = make_float4(f[0], f[1], f[2], f[3]);
    ((float4 *)p)[1] = make_float4(f[4], f[5], f[6], f[7]);
}
__device__ __forceinline__ void store8(__nv_bfloat16 *p, const float *f) {
    *(uint4 *)p = make_uint4(bf16_pack(f[0], f[1]), bf16_pack(f[2], f[3]), bf16_pack(f[4], f[5]), bf16_pack(f[6], f[7]));
}

__device__ __forceinline__ float load1(const float *p) { return *p; }
__device__ __forceinline__ float load1(const __nv_bfloat16 *p) { return __bfloat162float(*p); }
__device__ __forceinline__ double load1(const double *p) { return *p; }
__device__ __forceinline__ void store1(float *p, float v) { *p = v; }
__device__ __forceinline__ void store1(__nv_bfloat16 *p, float v) { *p = __float2bfloat16(v); }
__device__ __forceinline__ void store1(double *p, double v) { *p = v; }
__device__ __forceinline__ float sigmoid_fast(float x) { return 1.0f / (1.0f + __expf(-x)); }

__device__ __forceinline__ float2 load2(const float *p) { return *(const float2 *)p; }
__device__ __forceinline__ float2 load2(const __nv_bfloat16 *p) {
    unsigned w = *(const unsigned *)p;
    return make_float2(bf16_lo(w), bf16_hi(w));
}
__device__ __forceinline__ void store2(float *p, float2 v) { *(float2 *)p = v; }
__device__ __forceinline__ void store2(__nv_bfloat16 *p, float2 v) { *(unsigned *)p = bf16_pack(v.x, v.y); }

/* the sum over a warp, in every lane */
template <class A> __device__ __forceinline__ A warp_sum(A v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

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
/* col_sum_kernel's store for a plain row of sums: out[j] in out's dtype */
template <class T> struct ColStore {
    T *out;
    __device__ void operator()(int64_t j, double s) const { store1(out + j, s); }
};
/* launch geometry of col_sum_kernel */
static inline dim3 col_sum_grid(int64_t cols) { return dim3((unsigned)((cols + 31) / 32)); }
static inline dim3 col_sum_block() { return dim3(32, 8); }

#endif

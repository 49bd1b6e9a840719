// emu_cuda.h: a host stand-in for the CUDA built-ins that efla's kernels use, so that a kernel
// header or .cu file (with its host launch code left out) compiles with g++ and runs on a machine
// without a GPU (bench/cuda/*_emu.cpp). Each block runs as blockDim.x * blockDim.y OS threads,
// one block at a time: __syncthreads is a pthread barrier, warp shuffles exchange through a
// per-warp buffer between two barriers, __shared__ arrays are function statics (one block at a
// time shares them). bfloat16 conversions round to nearest even, as the device does.
#ifndef EFLA_EMU_CUDA_H
#define EFLA_EMU_CUDA_H
#include <pthread.h>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <atomic>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
#define __shared__ static
#define EFLA_EMULATE_CUDA

struct dim3 {
    unsigned x, y, z;
    dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
static thread_local dim3 threadIdx;
static dim3 blockIdx, blockDim, gridDim;
static pthread_barrier_t emu_block_bar, emu_warp_bar[32];
static double emu_lanes[32][32];

static inline void __syncthreads() { pthread_barrier_wait(&emu_block_bar); }
// this thread's warp in its block, and its lane in the warp
static inline int emu_warp() { return (int)((threadIdx.y * blockDim.x + threadIdx.x) / 32); }
static inline int emu_lane() { return (int)((threadIdx.y * blockDim.x + threadIdx.x) % 32); }
// v from lane `src(lane)` of this warp (its own v where src gives -1)
template <class A, class Src> static inline A emu_shuffle(A v, Src src) {
    const int w = emu_warp(), l = emu_lane(), s = src(l);
    emu_lanes[w][l] = (double)v;
    pthread_barrier_wait(&emu_warp_bar[w]);
    A r = s >= 0 ? (A)emu_lanes[w][s] : v;
    pthread_barrier_wait(&emu_warp_bar[w]);
    return r;
}
template <class A> static inline A __shfl_sync(unsigned, A v, int src) { return emu_shuffle(v, [src](int) { return src; }); }
template <class A> static inline A __shfl_xor_sync(unsigned, A v, int o) { return emu_shuffle(v, [o](int l) { return l ^ o; }); }
template <class A> static inline A __shfl_down_sync(unsigned, A v, int o) {
    return emu_shuffle(v, [o](int l) { return l + o < 32 ? l + o : -1; });
}

struct float2 { float x, y; };
struct float4 { float x, y, z, w; };
struct double2 { double x, y; };
struct uint4 { unsigned x, y, z, w; };
struct __nv_bfloat16 { uint16_t h; };
typedef __nv_bfloat16 bf16;
static inline float2 make_float2(float a, float b) { return float2{ a, b }; }
static inline float4 make_float4(float a, float b, float c, float d) { return float4{ a, b, c, d }; }
static inline uint4 make_uint4(unsigned a, unsigned b, unsigned c, unsigned d) { return uint4{ a, b, c, d }; }
static inline float __uint_as_float(unsigned u) { float f; memcpy(&f, &u, 4); return f; }
static inline float __bfloat162float(bf16 b) { return __uint_as_float((unsigned)b.h << 16); }
static inline bf16 __float2bfloat16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return bf16{ (uint16_t)((u >> 16) | 0x40) };   // quiet NaN
    u += 0x7fffu + ((u >> 16) & 1);
    return bf16{ (uint16_t)(u >> 16) };
}
static inline bf16 __float2bfloat16_rn(float f) { return __float2bfloat16(f); }
static inline unsigned short __bfloat16_as_ushort(bf16 b) { return b.h; }
static inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
#define __expf(x) std::exp((float)(x))
using std::min;
#define CU_GRID_STRIDE(i, n) \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)

// EFLA_SMEM_FITS's check: a kernel's carving against the shared memory its launch asks for;
// each thread of each block checks, the first overflow of a kernel is printed, and a harness
// reads emu_smem_overflows to fail its run
static std::atomic<int> emu_smem_overflows{0};
static inline void emu_check_smem(const char *kernel, size_t used, size_t declared) {
    if (used <= declared) return;
    if (emu_smem_overflows.fetch_add(1) == 0)
        printf("shared memory: %s carves %zu bytes but its launch asks for %zu\n", kernel, used, declared);
}

// runs f() as the kernel body of every thread of every block of the grid
template <class F> static inline void launch(dim3 grid, dim3 block, F f) {
    unsigned n = block.x * block.y;
    blockDim = block;
    gridDim = grid;
    pthread_barrier_init(&emu_block_bar, NULL, n);
    for (unsigned w = 0; w < (n + 31) / 32; w++) pthread_barrier_init(&emu_warp_bar[w], NULL, n - 32 * w < 32 ? n - 32 * w : 32);
    for (unsigned z = 0; z < grid.z; z++)
        for (unsigned y = 0; y < grid.y; y++)
            for (unsigned x = 0; x < grid.x; x++) {
                blockIdx = dim3(x, y, z);
                std::vector<std::thread> ts;
                for (unsigned t = 0; t < n; t++)
                    ts.emplace_back([&, t] { threadIdx = dim3(t % block.x, t / block.x, 0); f(); });
                for (auto &t : ts) t.join();
            }
    pthread_barrier_destroy(&emu_block_bar);
    for (unsigned w = 0; w < (n + 31) / 32; w++) pthread_barrier_destroy(&emu_warp_bar[w]);
}
#endif

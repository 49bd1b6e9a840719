/* delta_rule_scan.cuh: what the column-parallel delta-rule scan (delta_rule.cu) shares with
 * its gated variant (delta_rule_gated.cu): the loads/stores between the input dtype T and the
 * accumulation type A, a warp sum, the block layout (delta_rule_scan_tile.cuh), the launch's
 * shared-memory check, the accumulators' conversion, and the gated entry points. */
#ifndef EFLA_CUDA_DELTA_RULE_SCAN_CUH
#define EFLA_CUDA_DELTA_RULE_SCAN_CUH
#include "kernels.cuh"

namespace {
__device__ __forceinline__ float load_as_acc(const float *p) { return *p; }
__device__ __forceinline__ double load_as_acc(const double *p) { return *p; }
__device__ __forceinline__ float load_as_acc(const bf16 *p) { return __bfloat162float(*p); }
__device__ __forceinline__ void store_to(float *p, float v) { *p = v; }
__device__ __forceinline__ void store_to(double *p, double v) { *p = v; }
__device__ __forceinline__ void store_to(bf16 *p, float v) { *p = __float2bfloat16(v); }

template <typename A> __device__ __forceinline__ A warp_sum(A v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
} // namespace
#include "delta_rule_scan_tile.cuh"

namespace {
/* A-typed accumulator -> T-typed output (the gradients that sum over column tiles). */
template <typename T, typename A> __global__ void convert_kernel(T *dst, const A *src, int64_t n) {
    CU_GRID_STRIDE(i, n) store_to(dst + i, src[i]);
}

/* A scan kernel's dynamic shared memory, checked against the device (a clear error naming the
 * head size) and allowed beyond 48 KB; op names the call in the error. */
template <typename K> int prepare_launch(K kernel, size_t smem, const char *op, int64_t dk) {
    int dev = 0, maxs = 0;
    CU_CHECK(cudaGetDevice(&dev));
    CU_CHECK(cudaDeviceGetAttribute(&maxs, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    if (smem > (size_t)maxs)
        return efla_fail("%s: dk = %lld needs %zu bytes of shared memory per block, the device has %d; use a "
                         "smaller head size, a smaller chunk_size, or float32", op, (long long)dk, smem, maxs);
    if (smem > 48 * 1024) CU_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    return 0;
}
} // namespace

/* Gated EFLA / Gated DeltaNet (buf->log_decay set; docs/MATH.md §6), forward and backward, on
 * the sequence table `seq` of upload_seqs (nch chunks in all). Called by delta_rule.cu's
 * entries whatever algorithm was asked: the gated path has no tensor-core chunked form yet. */
int efla_cuda_delta_rule_gated_fwd(const efla_delta_rule_args *a, const efla_delta_rule_buffers *buf,
                                   const int64_t *seq, int64_t nch, int device);
int efla_cuda_delta_rule_gated_bwd(const efla_delta_rule_args *a, const efla_delta_rule_buffers *buf,
                                   const int64_t *seq, int64_t nch, int device);
#endif

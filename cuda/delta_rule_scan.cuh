/* delta_rule_scan.cuh: what the column-parallel delta-rule scan (delta_rule.cu) shares with
 * its gated variant (delta_rule_gated.cu): the loads/stores between the input dtype T and the
 * accumulation type A, a warp sum, and the gated entry points. */
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

/* Gated EFLA / Gated DeltaNet (buf->log_decay set; docs/MATH.md §6), forward and backward, on
 * the sequence table `seq` of upload_seqs (nch chunks in all). Called by delta_rule.cu's
 * entries whatever algorithm was asked: the gated path has no tensor-core chunked form yet. */
int efla_cuda_delta_rule_gated_fwd(const efla_delta_rule_args *a, const efla_delta_rule_buffers *buf,
                                   const int64_t *seq, int64_t nch, int device);
int efla_cuda_delta_rule_gated_bwd(const efla_delta_rule_args *a, const efla_delta_rule_buffers *buf,
                                   const int64_t *seq, int64_t nch, int device);
#endif

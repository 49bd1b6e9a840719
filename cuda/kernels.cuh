/* kernels.cuh: the CUDA backend's kernel entry points, one file per family (mirroring
 * core/cpu/):
 *   allocator.cu    alloc/free, memory statistics (common.cuh declares those)
 *   elementwise.cu  fill copy unary binary clamp where tri arange rand softplus adamw
 *   reduce.cu       reduce
 *   linalg.cu       bmm (cuBLAS)
 *   nn.cu           softmax(+backward) norm(+backward) cross_entropy
 *   index.cu        index_select index_add gather scatter_add
 *   delta_rule.cu   delta_rule_fwd delta_rule_bwd (delta_rule_alpha.cu: delta_rule_alpha_fwd/bwd)
 *   fused.cu        the fused layers (their own table)
 *   foreach.cu      foreach_sum_squares foreach_scale foreach_adamw (lists of tensors, by value)
 * The declarations are generated from the op list (core/backend_ops.h), which says which
 * kernels CUDA has; backend_cuda.cu fills the table from the same list, by name. */
#ifndef EFLA_CUDA_KERNELS_CUH
#define EFLA_CUDA_KERNELS_CUH
#include "common.cuh"

/* efla_cuda_<name> for every row of EFLA_BACKEND_OPS whose cuda column is 1 (core/backend_ops.h) */
EFLA_BACKEND_OPS(EFLA_OP_DECL_CUDA)
int efla_cuda_tf32_enabled(void);

/* delta_rule_chunk.cu: the tensor-core chunked path. 1: not covered (use the scan), 0: done, -1: error.
 * seq is the device table of upload_seqs (per sequence: first token row, length, first chunk). */
int efla_cuda_delta_rule_chunk_fwd(const efla_delta_rule_args *a, const efla_delta_rule_buffers *buf,
                                   const int64_t *seq, int64_t nch, int device);
int efla_cuda_delta_rule_chunk_bwd(const efla_delta_rule_args *a, const efla_delta_rule_buffers *buf,
                                   const int64_t *seq, int64_t nch, int device);
/* Whether efla_cuda_delta_rule_chunk_fwd takes these arguments (covered, and the kernels fit the
 * current device): 0 no, 1 the forward alone, 2 the forward and the backward; where it takes the
 * forward, *states is set to the dtype it keeps the chunk states in (bfloat16 for bfloat16 inputs) */
int efla_cuda_delta_rule_chunk_plan(const efla_delta_rule_args *a, efla_dtype *states);
/* version 1 of the same (delta_rule_chunk_v1.cu), chosen with EFLA_DELTA_RULE_CHUNK_V1=1 */
int efla_cuda_delta_rule_chunk_v1_fwd(const efla_delta_rule_args *a, const efla_delta_rule_buffers *buf,
                                      const int64_t *seq, int64_t nch, int device);
int efla_cuda_delta_rule_chunk_v1_bwd(const efla_delta_rule_args *a, const efla_delta_rule_buffers *buf,
                                      const int64_t *seq, int64_t nch, int device);
int efla_cuda_delta_rule_chunk_v1_plan(const efla_delta_rule_args *a, efla_dtype *states);
/* delta_rule.cu: the backend service delta_rule_plan (core/backend.h) */
void efla_cuda_delta_rule_plan(const efla_delta_rule_args *a, int gated, efla_delta_rule_plan *plan);
/* A scratch tensor on `device` (contiguous copy of t when t is not contiguous): a new ref
 * of t itself when it already is. Used by kernels that need contiguous operands. */
efla_tensor *cu_contiguous(const efla_tensor *t);
#endif

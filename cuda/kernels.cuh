/* kernels.cuh: the CUDA backend's kernel entry points, one file per family (mirroring
 * core/cpu/):
 *   allocator.cu    alloc/free, memory statistics (common.cuh declares those)
 *   elementwise.cu  fill copy unary binary clamp where tri arange rand adamw
 *   reduce.cu       reduce
 *   linalg.cu       bmm (cuBLAS)
 *   nn.cu           softmax(+backward) norm(+backward) cross_entropy
 *   index.cu        index_select index_add gather scatter_add
 *   delta_rule.cu   delta_rule_fwd delta_rule_bwd
 *   attention.cu    attention_fwd attention_bwd (softmax attention, SIMT flash-style)
 * Signatures are those of efla_backend (core/backend.h); backend_cuda.cu fills the table. */
#ifndef EFLA_CUDA_KERNELS_CUH
#define EFLA_CUDA_KERNELS_CUH
#include "common.cuh"

int efla_cuda_fill(efla_tensor *out, double value);
int efla_cuda_copy(efla_tensor *out, const efla_tensor *in);
int efla_cuda_unary(efla_unary_op op, efla_tensor *out, const efla_tensor *in);
int efla_cuda_binary(efla_binary_op op, efla_tensor *out, const efla_tensor *a, const efla_tensor *b);
int efla_cuda_clamp(efla_tensor *out, const efla_tensor *in, double lo, double hi);
int efla_cuda_where(efla_tensor *out, const efla_tensor *cond, const efla_tensor *a, const efla_tensor *b);
int efla_cuda_tri(efla_tensor *out, const efla_tensor *in, int64_t k, int upper);
int efla_cuda_arange(efla_tensor *out, double start, double step);
int efla_cuda_rand(efla_tensor *out, int dist, uint64_t seed, uint64_t offset, double p0, double p1);
int efla_cuda_adamw(efla_tensor *p, const efla_tensor *g, efla_tensor *m, efla_tensor *v, double lr,
                    double beta1, double beta2, double eps, double wd, int64_t step);

int efla_cuda_reduce(efla_reduce_op op, efla_tensor *out, const efla_tensor *in, uint32_t reduce_mask,
                     double param);

int efla_cuda_bmm(efla_tensor *out, const efla_tensor *a, const efla_tensor *b);
int efla_cuda_tf32_enabled(void);

int efla_cuda_softmax(efla_tensor *out, const efla_tensor *in, int log);
int efla_cuda_softmax_backward(efla_tensor *grad_in, const efla_tensor *grad_out, const efla_tensor *out,
                               int log);
int efla_cuda_norm(efla_tensor *out, efla_tensor *mean, efla_tensor *rstd, const efla_tensor *x,
                   const efla_tensor *weight, const efla_tensor *bias, double eps, int rms);
int efla_cuda_norm_backward(efla_tensor *grad_x, efla_tensor *grad_w, efla_tensor *grad_b,
                            const efla_tensor *grad_out, const efla_tensor *x, const efla_tensor *weight,
                            const efla_tensor *mean, const efla_tensor *rstd, int rms);
int efla_cuda_cross_entropy(efla_tensor *loss, efla_tensor *grad, const efla_tensor *logits,
                            const efla_tensor *target, int64_t ignore_index, double smoothing);

int efla_cuda_index_select(efla_tensor *out, const efla_tensor *in, int dim, const efla_tensor *index);
int efla_cuda_index_add(efla_tensor *out, int dim, const efla_tensor *index, const efla_tensor *src);
int efla_cuda_gather(efla_tensor *out, const efla_tensor *in, int dim, const efla_tensor *index);
int efla_cuda_scatter_add(efla_tensor *out, int dim, const efla_tensor *index, const efla_tensor *src);

int efla_cuda_delta_rule_fwd(const efla_delta_rule_args *a, const void *q, const void *k, const void *v,
                             const void *alpha, const void *s0, void *o, void *s_final,
                             void *chunk_states);
int efla_cuda_delta_rule_bwd(const efla_delta_rule_args *a, const void *q, const void *k, const void *v,
                             const void *alpha, const void *s0, const void *chunk_states,
                             const void *d_o, const void *d_s_final, void *dq, void *dk, void *dv,
                             void *dalpha, void *ds0);

/* delta_rule_chunk.cu: the tensor-core chunked path. 1: not covered (use the scan), 0: done, -1: error.
 * seq is the device table of upload_seqs (per sequence: first token row, length, first chunk). */
int efla_cuda_delta_rule_chunk_fwd(const efla_delta_rule_args *a, const int64_t *seq, int64_t nch, int device,
                                   const void *q, const void *k, const void *v, const void *alpha, const void *s0,
                                   void *o, void *s_final, void *chunk_states);
int efla_cuda_delta_rule_chunk_bwd(const efla_delta_rule_args *a, const int64_t *seq, int64_t nch, int device,
                                   const void *q, const void *k, const void *v, const void *alpha, const void *s0,
                                   const void *chunk_states, const void *d_o, const void *d_s_final, void *dq,
                                   void *dk, void *dv, void *dalpha, void *ds0);
/* delta_rule_alpha.cu: lambda, alpha and the chain through alpha on the device */
int efla_cuda_delta_rule_alpha_fwd(int64_t n, int64_t dk, efla_dtype dt, const void *k, const void *beta,
                                   int order, int reference_eps, void *alpha, void *lambda);
int efla_cuda_delta_rule_alpha_bwd(int64_t n, int64_t dk, efla_dtype dt, const void *k, const void *beta,
                                   const void *lambda, const void *dalpha, int order, int reference_eps,
                                   void *dk_inout, void *dbeta);

/* attention.cu: causal / sliding-window softmax attention (efla_attention_args, core/backend.h) */
int efla_cuda_attention_fwd(const efla_attention_args *a, const void *q, const void *k, const void *v, void *o,
                            void *lse);
int efla_cuda_attention_bwd(const efla_attention_args *a, const void *q, const void *k, const void *v,
                            const void *o, const void *lse, const void *d_o, void *dq, void *dk, void *dv);

/* A scratch tensor on `device` (contiguous copy of t when t is not contiguous): a new ref
 * of t itself when it already is. Used by kernels that need contiguous operands. */
efla_tensor *cu_contiguous(const efla_tensor *t);
#endif

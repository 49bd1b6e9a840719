/* cpu_kernels.h: the CPU backend's kernels, one file per family (mirrored in cuda/):
 *   memory.c       alloc/free (64-byte aligned, counted)
 *   elementwise.c  fill copy unary binary clamp where tri arange rand adamw (strided.h: the shared strided walk)
 *   reduce.c       reduce
 *   linalg.c       bmm (OpenBLAS for float32/float64)
 *   nn.c           softmax(+backward) norm(+backward) cross_entropy
 *   index.c        index_select index_add gather scatter_add
 *   delta_rule.c   delta_rule_fwd delta_rule_bwd
 *   scan.c         cumsum sort
 *   attention.c    attention_fwd attention_bwd
 * Signatures are those of efla_backend (backend.h). */
#ifndef EFLA_CPU_KERNELS_H
#define EFLA_CPU_KERNELS_H
#include "../backend.h"

#define EFLA_CPU_KERNEL /* every CPU kernel is defined; the marker keeps the list greppable */

void *efla_cpu_alloc(size_t nbytes, int device);
void efla_cpu_free(void *ptr, size_t nbytes, int device);

EFLA_CPU_KERNEL int efla_cpu_fill(efla_tensor *out, double value);
EFLA_CPU_KERNEL int efla_cpu_copy(efla_tensor *out, const efla_tensor *in);
EFLA_CPU_KERNEL int efla_cpu_unary(efla_unary_op op, efla_tensor *out, const efla_tensor *in);
EFLA_CPU_KERNEL int efla_cpu_binary(efla_binary_op op, efla_tensor *out, const efla_tensor *a, const efla_tensor *b);
EFLA_CPU_KERNEL int efla_cpu_clamp(efla_tensor *out, const efla_tensor *in, double lo, double hi);
EFLA_CPU_KERNEL int efla_cpu_where(efla_tensor *out, const efla_tensor *cond, const efla_tensor *a, const efla_tensor *b);
EFLA_CPU_KERNEL int efla_cpu_tri(efla_tensor *out, const efla_tensor *in, int64_t k, int upper);
EFLA_CPU_KERNEL int efla_cpu_arange(efla_tensor *out, double start, double step);
EFLA_CPU_KERNEL int efla_cpu_rand(efla_tensor *out, int dist, uint64_t seed, uint64_t offset, double p0, double p1);
EFLA_CPU_KERNEL int efla_cpu_adamw(efla_tensor *p, const efla_tensor *g, efla_tensor *m, efla_tensor *v,
                                   double lr, double beta1, double beta2, double eps, double wd, int64_t step);

EFLA_CPU_KERNEL int efla_cpu_reduce(efla_reduce_op op, efla_tensor *out, const efla_tensor *in,
                                    uint32_t reduce_mask, double param);

EFLA_CPU_KERNEL int efla_cpu_bmm(efla_tensor *out, const efla_tensor *a, const efla_tensor *b);

EFLA_CPU_KERNEL int efla_cpu_softmax(efla_tensor *out, const efla_tensor *in, int log);
EFLA_CPU_KERNEL int efla_cpu_softmax_backward(efla_tensor *grad_in, const efla_tensor *grad_out,
                                              const efla_tensor *out, int log);
EFLA_CPU_KERNEL int efla_cpu_norm(efla_tensor *out, efla_tensor *mean, efla_tensor *rstd, const efla_tensor *x,
                                  const efla_tensor *weight, const efla_tensor *bias, double eps, int rms);
EFLA_CPU_KERNEL int efla_cpu_norm_backward(efla_tensor *grad_x, efla_tensor *grad_w, efla_tensor *grad_b,
                                           const efla_tensor *grad_out, const efla_tensor *x,
                                           const efla_tensor *weight, const efla_tensor *mean,
                                           const efla_tensor *rstd, int rms);
EFLA_CPU_KERNEL int efla_cpu_cross_entropy(efla_tensor *loss, efla_tensor *grad, const efla_tensor *logits,
                                           const efla_tensor *target, int64_t ignore_index, double smoothing);

EFLA_CPU_KERNEL int efla_cpu_cumsum(efla_tensor *out, const efla_tensor *in);
EFLA_CPU_KERNEL int efla_cpu_sort(efla_tensor *values, efla_tensor *indices, const efla_tensor *in, int descending);
EFLA_CPU_KERNEL int efla_cpu_index_select(efla_tensor *out, const efla_tensor *in, int dim, const efla_tensor *index);
EFLA_CPU_KERNEL int efla_cpu_index_add(efla_tensor *out, int dim, const efla_tensor *index, const efla_tensor *src);
EFLA_CPU_KERNEL int efla_cpu_gather(efla_tensor *out, const efla_tensor *in, int dim, const efla_tensor *index);
EFLA_CPU_KERNEL int efla_cpu_scatter_add(efla_tensor *out, int dim, const efla_tensor *index, const efla_tensor *src);

EFLA_CPU_KERNEL int efla_cpu_delta_rule_fwd(const efla_delta_rule_args *a, const void *q, const void *k,
                                            const void *v, const void *alpha, const void *s0, void *o,
                                            void *s_final, void *chunk_states);
EFLA_CPU_KERNEL int efla_cpu_delta_rule_bwd(const efla_delta_rule_args *a, const void *q, const void *k,
                                            const void *v, const void *alpha, const void *s0,
                                            const void *chunk_states, const void *d_o,
                                            const void *d_s_final, void *dq, void *dk,
                                            void *dv, void *dalpha, void *ds0);

EFLA_CPU_KERNEL int efla_cpu_attention_fwd(const efla_attention_args *a, const void *q, const void *k,
                                           const void *v, void *o, void *lse);
EFLA_CPU_KERNEL int efla_cpu_attention_bwd(const efla_attention_args *a, const void *q, const void *k,
                                           const void *v, const void *o, const void *lse, const void *d_o,
                                           void *dq, void *dk, void *dv);

#endif

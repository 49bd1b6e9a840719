/* cpu_kernels.h: the CPU backend's kernels, one file per family (mirrored in cuda/):
 *   memory.c       alloc/free (64-byte aligned, counted)
 *   elementwise.c  fill copy unary binary clamp where tri arange rand softplus adamw (strided.h: the shared strided walk)
 *   reduce.c       reduce
 *   linalg.c       bmm (OpenBLAS for float32/float64)
 *   nn.c           softmax(+backward) norm(+backward) cross_entropy
 *   index.c        index_select index_add gather scatter_add
 *   delta_rule.c   delta_rule_fwd delta_rule_bwd
 *   scan.c         cumsum sort
 *   fused.c        the fused layers (their own table, efla_cpu_fused)
 *   foreach.c      foreach_sum_squares foreach_scale foreach_adamw (lists of tensors)
 * Declarations are generated from the op list (core/backend_ops.h), which also says which
 * kernels the CPU has; backend_cpu.c fills the table from the same list. */
#ifndef EFLA_CPU_KERNELS_H
#define EFLA_CPU_KERNELS_H
#include "../backend.h"

void *efla_cpu_alloc(size_t nbytes, int device);
void efla_cpu_free(void *ptr, size_t nbytes, int device);

/* efla_cpu_<name> for every row of EFLA_BACKEND_OPS whose cpu column is 1 */
EFLA_BACKEND_OPS(EFLA_OP_DECL_CPU)

#endif

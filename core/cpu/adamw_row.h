/* adamw_row.h: the AdamW row functions of elementwise.c, shared with the multi-tensor step
 * (foreach.c) so that both run the very same code and give the same bits. */
#ifndef EFLA_CPU_ADAMW_ROW_H
#define EFLA_CPU_ADAMW_ROW_H
#include "strided.h"

typedef struct { double lr, b1, b2, eps, wd, inv_bc1, inv_bc2; } efla_adamw_ctx;

/* the hyperparameters of one step (the bias corrections of `step` computed here, once) */
efla_adamw_ctx efla_cpu_adamw_ctx(double lr, double beta1, double beta2, double eps, double wd, int64_t step);
/* the row function for operands p, g, m, v of these dtypes, or NULL when unsupported;
 * operands (p, g, m, v), ctx an efla_adamw_ctx */
efla_row_fn efla_cpu_adamw_row(efla_dtype p, efla_dtype g, efla_dtype m, efla_dtype v);
#endif

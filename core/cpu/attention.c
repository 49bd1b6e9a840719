/* attention.c: CPU kernels of causal (optionally sliding-window) softmax attention.
 *
 * Plain two-pass softmax per query row, accumulated in double for float32 and float64
 * data: scores s_j = scale q.k_j over the row's key range, m = max s, o = sum_j e^{s_j-m} v_j
 * / sum_j e^{s_j-m}, and lse = m + log sum e^{s_j-m} saved for the backward. The backward
 * recomputes P = exp(s - lse) (flash-attention-2's rule; no T x T matrix is kept):
 *   D_i = dO_i . O_i,  dP_ij = dO_i . v_j,  dS_ij = P_ij (dP_ij - D_i),
 *   dq_i = scale sum_j dS_ij k_j,  dk_j = scale sum_i dS_ij q_i,  dv_j = sum_i P_ij dO_i.
 * Threads: the forward over query rows, the backward over (batch, head) pairs (each owns
 * its slices of dk and dv, so no two threads write one element). */
#include "cpu_kernels.h"
#include <math.h>
#include <stdlib.h>

/* The key range [lo, hi] of query row i (see efla_attention_args). */
static inline void key_range(const efla_attention_args *a, int64_t i, int64_t *lo, int64_t *hi) {
    int64_t p = a->Tk - a->Tq + i;
    *hi = a->causal ? p : a->Tk - 1;
    *lo = a->window > 0 ? p - a->window + 1 : 0;
    if (*lo < 0) *lo = 0;
}

#define ATT_REAL float
#define ATT_SUFFIX f32
#include "attention_impl.h"
#undef ATT_REAL
#undef ATT_SUFFIX
#define ATT_REAL double
#define ATT_SUFFIX f64
#include "attention_impl.h"
#undef ATT_REAL
#undef ATT_SUFFIX

int efla_cpu_attention_fwd(const efla_attention_args *a, const void *q, const void *k, const void *v,
                           void *o, void *lse) {
    if (a->dtype == EFLA_FLOAT32) return att_fwd_f32(a, q, k, v, o, lse);
    if (a->dtype == EFLA_FLOAT64) return att_fwd_f64(a, q, k, v, o, lse);
    return efla_fail("attention: the cpu computes float32 and float64, got %s; cast with :float()",
                     efla_dtype_name(a->dtype));
}

int efla_cpu_attention_bwd(const efla_attention_args *a, const void *q, const void *k, const void *v,
                           const void *o, const void *lse, const void *d_o, void *dq, void *dk, void *dv) {
    if (a->dtype == EFLA_FLOAT32) return att_bwd_f32(a, q, k, v, o, lse, d_o, dq, dk, dv);
    if (a->dtype == EFLA_FLOAT64) return att_bwd_f64(a, q, k, v, o, lse, d_o, dq, dk, dv);
    return efla_fail("attention backward: the cpu computes float32 and float64, got %s",
                     efla_dtype_name(a->dtype));
}

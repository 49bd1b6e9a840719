/* delta_rule_rank.h: what the rank-r delta-rule front end (core/ops_delta_rule_rank.c) hands
 * to the kernels of a backend (core/cpu/delta_rule_rank.c, cuda/delta_rule_rank.cu). The
 * maths is docs/RANK_R.md. Not public: users see efla_delta_rule_rank in efla.h. */
#ifndef EFLA_DELTA_RULE_RANK_H
#define EFLA_DELTA_RULE_RANK_H
#include "internal.h"
#include "rank_fn.h"

/* Raw, contiguous buffers: q [B,T,H,dk], k [B,T,H,r,dk], v [B,T,H,r,dv], beta [B,T,H] in
 * `dtype`; states s0 / s_final [B,H,dk,dv] in `state_dtype`; the checkpoints `ckpt`
 * [B,H,ceil(T/ckpt_len),dk,dv] (the state entering every ckpt_len-token block, saved by the
 * forward for the backward) in `ckpt_dtype`. */
typedef struct efla_rank_args {
    int64_t B, T, H, r, dk, dv;
    double scale;
    int order;                 /* EFLA_ORDER_EXACT or 1..4 */
    int ckpt_len;
    efla_dtype dtype, state_dtype, ckpt_dtype;
} efla_rank_args;

/* s0, s_final, ckpt may be NULL (zero state / not wanted / no backward to come) */
typedef int (*efla_rank_fwd_fn)(const efla_rank_args *a, const void *q, const void *k, const void *v,
                                const void *beta, const void *s0, void *o, void *s_final, void *ckpt);
/* ckpt must be what the forward saved; d_s_final and ds0 may be NULL */
typedef int (*efla_rank_bwd_fn)(const efla_rank_args *a, const void *q, const void *k, const void *v,
                                const void *beta, const void *ckpt, const void *d_o,
                                const void *d_s_final, void *dq, void *dk, void *dv, void *dbeta,
                                void *ds0);

int efla_cpu_delta_rule_rank_fwd(const efla_rank_args *a, const void *q, const void *k, const void *v,
                                 const void *beta, const void *s0, void *o, void *s_final, void *ckpt);
int efla_cpu_delta_rule_rank_bwd(const efla_rank_args *a, const void *q, const void *k, const void *v,
                                 const void *beta, const void *ckpt, const void *d_o,
                                 const void *d_s_final, void *dq, void *dk, void *dv, void *dbeta,
                                 void *ds0);
/* cuda/delta_rule_rank.cu (declared for the CUDA backend's table) */
int efla_cuda_delta_rule_rank_fwd(const efla_rank_args *a, const void *q, const void *k, const void *v,
                                  const void *beta, const void *s0, void *o, void *s_final, void *ckpt);
int efla_cuda_delta_rule_rank_bwd(const efla_rank_args *a, const void *q, const void *k, const void *v,
                                  const void *beta, const void *ckpt, const void *d_o,
                                  const void *d_s_final, void *dq, void *dk, void *dv, void *dbeta,
                                  void *ds0);
#endif

/* backend.h: the seam between the op front ends (argument checks, broadcasting, output
 * allocation, autograd) and the kernels of one device kind.
 *
 * The CPU backend (core/cpu/) and the CUDA backend (cuda/) each fill one table. Front
 * ends call efla_backend_of(device)->kernel(...). core/ never includes a CUDA header: the
 * CUDA backend registers its table from a constructor when it is linked in.
 *
 * Contract for every kernel:
 *  - outputs are allocated by the front end, on the right device, with the right shape
 *    and dtype, usually contiguous (but kernels must honour their strides);
 *  - elementwise inputs are already broadcast to the output's shape (stride-0 views) and
 *    share the output's dtype unless the kernel says otherwise;
 *  - return 0 on success, or efla_fail("...") on failure (never abort).
 */
#ifndef EFLA_BACKEND_H
#define EFLA_BACKEND_H

#include "internal.h"

struct efla_rank_args;   /* core/delta_rule_rank.h */

enum { EFLA_RAND_UNIFORM = 0, EFLA_RAND_NORMAL = 1, EFLA_RAND_BERNOULLI = 2, EFLA_RAND_INT = 3 };

/* Raw-pointer arguments of the delta-rule kernels. All tensors contiguous, in the
 * [B,T,H,d] layout; `alpha` already computed (the front end chains gradients through it).
 * seq_start/seq_len describe the N sequences: sequence n occupies tokens
 * [seq_start[n], seq_start[n]+seq_len[n]) of batch row seq_batch[n]. */
typedef struct efla_delta_rule_args {
    int64_t B, T, H, dk, dv, N;
    const int64_t *seq_batch, *seq_start, *seq_len;   /* host arrays of length N */
    double scale;
    int chunk_size;
    int algorithm;          /* EFLA_ALGO_CHUNKED or EFLA_ALGO_RECURRENT (never auto here) */
    efla_dtype dtype;       /* of q, k, v, alpha, o; states are float32 for bf16 inputs */
    efla_dtype state_dtype;
} efla_delta_rule_args;

typedef struct efla_backend {
    const char *name;
    int (*device_count)(void);
    int (*synchronize)(int device);
    /* memory: alloc returns NULL + error (out of memory is an error, not a crash) */
    void *(*alloc)(size_t nbytes, int device);
    void (*free)(void *ptr, size_t nbytes, int device);
    /* copies between this device and the host (dst_host / src_host say which side) */
    int (*memcpy_h2d)(void *dst, const void *src, size_t nbytes, int device);
    int (*memcpy_d2h)(void *dst, const void *src, size_t nbytes, int device);

    /* elementwise */
    int (*fill)(efla_tensor *out, double value);
    int (*copy)(efla_tensor *out, const efla_tensor *in);   /* same shape, dtypes may differ (cast) */
    int (*unary)(efla_unary_op op, efla_tensor *out, const efla_tensor *in);
    int (*binary)(efla_binary_op op, efla_tensor *out, const efla_tensor *a, const efla_tensor *b);
    /* out dtype is bool for comparisons; a and b then share a compute dtype */
    int (*clamp)(efla_tensor *out, const efla_tensor *in, double lo, double hi);
    int (*where)(efla_tensor *out, const efla_tensor *cond, const efla_tensor *a, const efla_tensor *b);
    int (*tri)(efla_tensor *out, const efla_tensor *in, int64_t k, int upper); /* last two dims */
    int (*arange)(efla_tensor *out, double start, double step);
    int (*rand)(efla_tensor *out, int dist, uint64_t seed, uint64_t offset, double p0, double p1);

    /* reductions: `reduce_mask` bit d set = reduce dim d of `in`; out has in's ndim with
     * those dims of size 1 (the front end squeezes afterwards). */
    int (*reduce)(efla_reduce_op op, efla_tensor *out, const efla_tensor *in,
                  uint32_t reduce_mask, double param);

    /* linear algebra: a [Bt,M,K], b [Bt,K,N], out [Bt,M,N]; any strides (batch strides
     * may be 0 for broadcast). float32/float64 (CUDA: also bfloat16). */
    int (*bmm)(efla_tensor *out, const efla_tensor *a, const efla_tensor *b);

    /* nn: over the last dim of contiguous inputs */
    int (*softmax)(efla_tensor *out, const efla_tensor *in, int log);
    int (*softmax_backward)(efla_tensor *grad_in, const efla_tensor *grad_out,
                            const efla_tensor *out, int log);
    /* layer norm (weight/bias may be NULL); mean and rstd are [rows] float outputs saved
     * for backward. rms = 1: RMS norm (no mean, no bias). */
    int (*norm)(efla_tensor *out, efla_tensor *mean, efla_tensor *rstd, const efla_tensor *x,
                const efla_tensor *weight, const efla_tensor *bias, double eps, int rms);
    int (*norm_backward)(efla_tensor *grad_x, efla_tensor *grad_w, efla_tensor *grad_b,
                         const efla_tensor *grad_out, const efla_tensor *x,
                         const efla_tensor *weight, const efla_tensor *mean,
                         const efla_tensor *rstd, int rms);
    /* loss per row [N] (0 for ignored rows) and grad [N,C] of the summed loss */
    int (*cross_entropy)(efla_tensor *loss, efla_tensor *grad, const efla_tensor *logits,
                         const efla_tensor *target, int64_t ignore_index, double smoothing);

    /* indexing: index is int64 and contiguous */
    int (*index_select)(efla_tensor *out, const efla_tensor *in, int dim, const efla_tensor *index);
    int (*index_add)(efla_tensor *out, int dim, const efla_tensor *index, const efla_tensor *src);
    int (*gather)(efla_tensor *out, const efla_tensor *in, int dim, const efla_tensor *index);
    int (*scatter_add)(efla_tensor *out, int dim, const efla_tensor *index, const efla_tensor *src);

    /* the delta rule (contiguous raw buffers; see efla_delta_rule_args). chunk_states holds
     * the state entering every chunk_size-token block, [sum_n ceil(seq_len[n]/C), H, dk, dv],
     * sequence by sequence (what the forward saves is what the backward reads). s0, s_final,
     * d_s_final, ds0 may be NULL (zero state / not wanted). */
    int (*delta_rule_fwd)(const efla_delta_rule_args *a, const void *q, const void *k,
                          const void *v, const void *alpha, const void *s0, void *o,
                          void *s_final, void *chunk_states /* may be NULL */);
    int (*delta_rule_bwd)(const efla_delta_rule_args *a, const void *q, const void *k,
                          const void *v, const void *alpha, const void *s0,
                          const void *chunk_states /* NULL: recompute */, const void *d_o,
                          const void *d_s_final /* may be NULL */, void *dq, void *dk,
                          void *dv, void *dalpha, void *ds0);

    int (*adamw)(efla_tensor *p, const efla_tensor *g, efla_tensor *m, efla_tensor *v,
                 double lr, double beta1, double beta2, double eps, double wd, int64_t step);

    /* memory statistics (CUDA) */
    int (*memory_stats)(int device, efla_memory_stats *stats);
    int (*empty_cache)(int device);

    /* lambda = |k|^2 and alpha of n token rows of dk on the device, and the chain rule through
     * alpha (dbeta, dk += 2 k dlambda), so no per-token scalar visits the host. k, beta, alpha,
     * dalpha, dk, dbeta in dtype dt; lambda float64. NULL (the CPU): the front end's host loops. */
    int (*delta_rule_alpha_fwd)(int64_t n, int64_t dk, efla_dtype dt, const void *k, const void *beta,
                                int order, int reference_eps, void *alpha, void *lambda);
    int (*delta_rule_alpha_bwd)(int64_t n, int64_t dk, efla_dtype dt, const void *k, const void *beta,
                                const void *lambda, const void *dalpha, int order, int reference_eps,
                                void *dk_inout, void *dbeta);

    /* scans and sorting over the last dim of a contiguous [rows, n] input (ops_scan.c);
     * NULL where a backend has none yet (the front end then names the op and says :cpu()) */
    int (*cumsum)(efla_tensor *out, const efla_tensor *in);
    /* values like in; indices int64, 0-based positions in the row; stable; NaN sorts last
     * ascending and first descending */
    int (*sort)(efla_tensor *values, efla_tensor *indices, const efla_tensor *in, int descending);
    /* the rank-r delta rule (buffers and contract: core/delta_rule_rank.h); NULL: none here */
    int (*delta_rule_rank_fwd)(const struct efla_rank_args *a, const void *q, const void *k, const void *v,
                               const void *beta, const void *s0, void *o, void *s_final, void *ckpt);
    int (*delta_rule_rank_bwd)(const struct efla_rank_args *a, const void *q, const void *k, const void *v,
                               const void *beta, const void *ckpt, const void *d_o, const void *d_s_final,
                               void *dq, void *dk, void *dv, void *dbeta, void *ds0);
} efla_backend;

/* core/backend.c */
void efla_register_backend(int kind, const efla_backend *backend);   /* kind: 0 CPU, 1 CUDA */
/* The backend serving `device`, or NULL with an error naming `op` and the device. */
const efla_backend *efla_backend_for(const char *op, int device);
/* Kernel entry that a backend left NULL: error naming op and device. */
int efla_no_kernel(const char *op, int device);
/* The GC callback Lua registered (may be NULL). */
void efla_run_gc_callback(void);
extern const efla_backend efla_cpu_backend;

/* ---- fused layers (core/ops_fused.c; kernels in core/cpu/fused.c and cuda/fused.cu) -----
 * A table of its own, registered beside the backend (efla_register_fused), so that the
 * efla_backend struct and its positional CUDA table stay as they are. Every tensor is
 * contiguous; data tensors share one floating dtype (float32/float64 on the CPU,
 * float32/bfloat16 on CUDA, computed in float32 or better); `loss` is float32 (float64
 * for float64 data). */
typedef struct efla_fused_kernels {
    /* out = silu(gate) * up; backward: dgate, dup from dout (recomputes silu) */
    int (*swiglu)(efla_tensor *out, const efla_tensor *gate, const efla_tensor *up);
    int (*swiglu_backward)(efla_tensor *dgate, efla_tensor *dup, const efla_tensor *dout,
                           const efla_tensor *gate, const efla_tensor *up);
    /* causal depthwise convolution along time: x [B,T,C], cache [B,K-1,C] (the inputs
     * before x) or NULL (zeros), w [C,K], bias [C] or NULL, silu 0/1:
     *   out[b,t,c] = act(bias[c] + sum_j w[c,j] * x[b, t-K+1+j, c]).
     * The backward recomputes the pre-activation; dcache, dbias may be NULL. */
    int (*short_conv)(efla_tensor *out, const efla_tensor *x, const efla_tensor *cache,
                      const efla_tensor *w, const efla_tensor *bias, int silu);
    int (*short_conv_backward)(efla_tensor *dx, efla_tensor *dcache, efla_tensor *dw,
                               efla_tensor *dbias, const efla_tensor *dout, const efla_tensor *x,
                               const efla_tensor *cache, const efla_tensor *w,
                               const efla_tensor *bias, int silu);
    /* out = x * rstd, rstd = 1 / sqrt(sum(x^2) + eps) over the last dim (rstd [rows], float32;
     * float64 for float64 data). The backward reads the output and rstd, not x:
     * dx = rstd * (dy - out * sum(out * dy)), so the node shares its saved tensor with
     * the next op (the delta rule keeps the normalised q and k anyway). */
    int (*l2norm)(efla_tensor *out, efla_tensor *rstd, const efla_tensor *x, double eps);
    int (*l2norm_backward)(efla_tensor *dx, const efla_tensor *dy, const efla_tensor *out,
                           const efla_tensor *rstd);
    /* out = x / sqrt(mean(x^2) + eps) * w * silu(g) over the last dim; w [D] */
    int (*rms_norm_gated)(efla_tensor *out, const efla_tensor *x, const efla_tensor *g,
                          const efla_tensor *w, double eps);
    int (*rms_norm_gated_backward)(efla_tensor *dx, efla_tensor *dg, efla_tensor *dw,
                                   const efla_tensor *dy, const efla_tensor *x,
                                   const efla_tensor *g, const efla_tensor *w, double eps);
    /* cross-entropy rows: loss[r] = logsumexp(logits[r]) - logits[r, target[r]] (0 when
     * target[r] == ignore_index); grad (may alias logits, or NULL) = softmax - onehot (0
     * rows for ignored targets). A target outside [0, C) that is not ignore_index: the
     * CPU fails naming it; CUDA (which must not wait for the device) writes NaN as that
     * row's loss. */
    int (*ce_rows)(efla_tensor *loss, efla_tensor *grad, const efla_tensor *logits,
                   const efla_tensor *target, int64_t ignore_index);
    /* out [N,D] = weight[index[n], :] (index int64 [N], 0-based). An index out of range: the
     * CPU fails naming it; CUDA writes a NaN row (no waiting for the device). */
    int (*embedding)(efla_tensor *out, const efla_tensor *weight, const efla_tensor *index);
    /* grad_weight [V,D] (float32, float64 for float64 data; zeroed by the front end) +=
     * grad_out [N,D] rows at index (out-of-range indices skipped) */
    int (*embedding_backward)(efla_tensor *grad_weight, const efla_tensor *grad_out,
                              const efla_tensor *index);
} efla_fused_kernels;

/* kind: 0 CPU, 1 CUDA (cuda/fused.cu registers from a constructor) */
void efla_register_fused(int kind, const efla_fused_kernels *kernels);
/* The fused kernels serving `device` (the backend must exist), or NULL with an error. */
const efla_fused_kernels *efla_fused_for(const char *op, int device);
extern const efla_fused_kernels efla_cpu_fused;

#endif

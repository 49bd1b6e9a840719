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
#include "backend_ops.h"

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
    efla_dtype state_dtype; /* of s0, s_final, ds0, d_s_final */
    efla_dtype chunk_state_dtype;   /* of chunk_states: what the backend's plan answered
                                     * (state_dtype where it keeps none) */
    int alpha_order, alpha_reference_eps;   /* how alpha was made (order, reference option): for a
                                             * backward that takes the chain through alpha itself */
} efla_delta_rule_args;

/* The buffers of one delta-rule call, by name (all contiguous, [B,T,H,d] / [B,T,H] / [N,H,dk,dv]).
 * Gated calls (docs/MATH.md §6) set both alpha_v and log_decay; ungated calls leave them NULL
 * (the value term then uses alpha). s0, s_final, d_s_final, ds0 may be NULL (zero state / not
 * wanted); chunk_states is written by the forward (may be NULL) and read by the backward
 * (NULL: recompute). dalpha_v and dlog_decay are written only by gated backwards. */
typedef struct efla_delta_rule_buffers {
    const void *q, *k, *v, *alpha, *alpha_v, *log_decay, *s0;   /* inputs */
    void *o, *s_final, *chunk_states;                            /* forward outputs */
    void *chunk_solves;   /* written by a forward, read by its backward, where the plan's keeps_solves
                           * said so (NULL: not kept; the backward solves again) */
    const void *d_o, *d_s_final;                                 /* backward inputs */
    void *dq, *dk, *dv, *dalpha, *dalpha_v, *dlog_decay, *ds0;   /* backward outputs */
    /* beta: in a forward whose alpha is NULL (the plan's makes_alpha said so), what the
     * backend makes alpha from, writing it to alpha_out and lambda = |k|^2 (float64) to
     * lambda_out where those are set (a backward will need them).
     * In a backward, optional (ungated calls): the chain through alpha (docs/MATH.md §3) inside
     * the backward, when the backend can: from beta and lambda, dbeta written and 2 k dlambda
     * added into dk; the backend then sets *alpha_chained = 1 (dalpha may be left unwritten).
     * Otherwise the front end runs delta_rule_alpha_bwd on dalpha. */
    const void *beta;
    void *alpha_out;
    double *lambda_out;
    const double *lambda;
    void *dbeta;
    int *alpha_chained;
} efla_delta_rule_buffers;

/* A backend's plan for one delta-rule call (its delta_rule_plan service). */
typedef struct efla_delta_rule_plan {
    /* the chunk size it runs with. The chunk size only groups tokens (the same maths at any
     * size), so a backend may pick a smaller one than asked where its fast kernels do not fit
     * (CUDA: float32 at head size 128, whose backward's per-chunk kernel needs 32) */
    int chunk_size;
    /* the dtype its forward writes chunk_states in (CUDA's tensor-core kernels: bfloat16 for
     * bfloat16 inputs, since they round the states to bfloat16 wherever they read them) */
    efla_dtype chunk_state_dtype;
    /* 1: its forward makes alpha itself from beta and |k|^2 (inside its kernel: one launch for
     * a decoding step), so the front end passes buffers->alpha = NULL with beta, alpha_out and
     * lambda_out set; 0: the front end makes alpha first (delta_rule_alpha_fwd) */
    int makes_alpha;
    /* 1: its forward can keep the per-chunk triangular solves for the backward
     * (buffers->chunk_solves, [nch, H, 2, C, C] in the inputs' dtype: T and X of docs/MATH.md
     * §4), so that the backward need not solve again */
    int keeps_solves;
} efla_delta_rule_plan;

/* the plan of a backend without the delta_rule_plan service (the front end's starting point) */
static inline efla_delta_rule_plan efla_delta_rule_plan_defaults(const efla_delta_rule_args *a) {
    efla_delta_rule_plan pl = {a->chunk_size, a->state_dtype, 0, 0};
    return pl;
}

/* Raw-pointer arguments of the softmax-attention kernels (core/ops_attention.c): q [B,Tq,H,dk],
 * k [B,Tk,H,dk], v [B,Tk,H,dv], o [B,Tq,H,dv], all contiguous in dtype; lse [B,H,Tq] is float32
 * (float64 for float64 data). Query i sits at position Tk - Tq + i (a KV cache holds the
 * earlier keys); causal: it sees keys j <= that position; window W > 0: only the W newest. */
typedef struct efla_attention_args {
    int64_t B, Tq, Tk, H, dk, dv, window;
    int causal;
    double scale;
    efla_dtype dtype;
} efla_attention_args;

struct efla_rank_args;   /* the rank-r delta rule's arguments: core/delta_rule_rank.h */

/* One device kind's table: the services (allocation, copies, synchronisation, statistics),
 * written out here, then one function pointer per kernel of core/backend_ops.h, generated.
 * A NULL slot means "no kernel": the front end reports it with efla_no_kernel(). Fill a
 * table by name (`.fill = ...`), services first, then EFLA_BACKEND_OPS(EFLA_OP_ENTRY_CPU)
 * or _CUDA, which writes every kernel slot in the struct's order (C++ needs that order). */
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
    /* memory statistics (CUDA) */
    int (*memory_stats)(int device, efla_memory_stats *stats);
    int (*empty_cache)(int device);
    /* What the delta rule will do with these arguments (gated: a call with log_decay), asked
     * once per forward before anything is sized: the front end fills *plan with
     * efla_delta_rule_plan_defaults (a->chunk_size, a->state_dtype, 0, 0) and the backend
     * changes what differs. NULL: those answers. */
    void (*delta_rule_plan)(const efla_delta_rule_args *a, int gated, efla_delta_rule_plan *plan);

    /* The kernels, one per row of EFLA_BACKEND_OPS. What each one does:
     *
     * elementwise: fill; copy (same shape, dtypes may differ: a cast); unary; binary (out
     *   dtype is bool for comparisons, a and b then share a compute dtype); clamp; where;
     *   tri (last two dims); arange; rand; softplus (log(1 + e^(beta x)) / beta, no overflow).
     * reduce: `reduce_mask` bit d set = reduce dim d of `in`; out has in's ndim with those
     *   dims of size 1 (the front end squeezes afterwards).
     * bmm: a [Bt,M,K], b [Bt,K,N], out [Bt,M,N]; any strides (batch strides may be 0 for
     *   broadcast).
     * nn, over the last dim of contiguous inputs: softmax(+backward); norm = layer norm
     *   (weight/bias may be NULL; mean and rstd are [rows] float outputs saved for backward;
     *   rms = 1: RMS norm, no mean, no bias) and its backward; cross_entropy: loss per row
     *   [N] (0 for ignored rows) and grad [N,C] of the summed loss.
     * indexing: index is int64 and contiguous (index_select, index_add, gather, scatter_add).
     * the delta rule (contiguous raw buffers; see efla_delta_rule_args). chunk_states holds
     *   the state entering every chunk_size-token block, [sum_n ceil(seq_len[n]/C), H, dk, dv],
     *   sequence by sequence (what the forward saves is what the backward reads). s0,
     *   s_final, d_s_final, ds0 may be NULL (zero state / not wanted).
     * delta_rule_alpha_fwd/bwd: lambda = |k|^2 and alpha of n token rows of dk on the device,
     *   and the chain rule through alpha (dbeta, dk += 2 k dlambda), so no per-token scalar
     *   visits the host. k, beta, alpha, dalpha, dk, dbeta in dtype dt; lambda float64.
     *   NULL (the CPU): the front end's host loops.
     * delta_rule_alpha_v_fwd/bwd: gated calls' value step alpha' of n rows from beta, lambda and
     *   log_decay, and its chain, ADDED into dbeta, dlog_decay and dk (+= 2 k dlambda); dtypes as above.
     * adamw: one parameter in place.
     * foreach_sum_squares: out (0-d float64) = the sum of x^2 over n contiguous tensors (n >= 1,
     *   any floating dtypes, some may be empty), in double, in an order fixed by the sizes alone.
     * foreach_scale: each of n contiguous tensors *= coef (0-d float64 on the device, never
     *   inside one of them) in the tensor's compute type (float for float32 and bfloat16).
     * cumsum and sort over the last dim of a contiguous [rows, n] input; sort: values like
     *   in, indices int64 0-based positions in the row; stable; NaN sorts last ascending and
     *   first descending. */
    EFLA_BACKEND_OPS(EFLA_OP_MEMBER)
} efla_backend;

/* core/backend.c */
void efla_register_backend(int kind, const efla_backend *backend);   /* kind: 0 CPU, 1 CUDA */
/* The backend serving `device`, or NULL with an error naming `op` and the device. */
const efla_backend *efla_backend_for(const char *op, int device);
/* Kernel entry that a backend left NULL: error naming op and device. */
int efla_no_kernel(const char *op, int device);
/* 1 when the backend of `kind` (0 CPU, 1 CUDA) is registered and has kernel `op` for data
 * dtype `dtype` (backend_ops.h), else 0. The public face is efla_backend_supports(). */
int efla_backend_supports_op(int kind, efla_backend_op op, efla_dtype dtype);
/* 0 when `device`'s backend has kernel `op` for `dtype`; else -1 and an error naming
 * `what` (the user-level op), the device, the dtype, the dtypes it does compute, and `fix`. */
int efla_check_kernel(const char *what, efla_backend_op op, int device, efla_dtype dtype, const char *fix);
/* The GC callback Lua registered (may be NULL). */
void efla_run_gc_callback(void);
extern const efla_backend efla_cpu_backend;

/* ---- fused layers (core/ops_fused.c; kernels in core/cpu/fused.c and cuda/fused.cu) -----
 * A table of its own, registered beside the backend (efla_register_fused), generated from
 * the same list as efla_backend (EFLA_FUSED_OPS in backend_ops.h). Every tensor is
 * contiguous; data tensors share one floating dtype (float32/float64 on the CPU,
 * float32/bfloat16 on CUDA, computed in float32 or better); `loss` is float32 (float64
 * for float64 data). */
typedef struct efla_fused_kernels {
    /* One slot per row of EFLA_FUSED_OPS (backend_ops.h). What each one does:
     * swiglu: out = silu(gate) * up; backward: dgate, dup from dout (recomputes silu).
     * short_conv: causal depthwise convolution along time: x [B,T,C], cache [B,K-1,C] (the
     *   inputs before x) or NULL (zeros), w [C,K], bias [C] or NULL, silu 0/1:
     *   out[b,t,c] = act(bias[c] + sum_j w[c,j] * x[b, t-K+1+j, c]).
     *   The backward recomputes the pre-activation; dcache, dbias may be NULL.
     * l2norm: out = x * rstd, rstd = 1 / sqrt(sum(x^2) + eps) over the last dim (rstd [rows],
     *   float32; float64 for float64 data). The backward reads the output and rstd, not x:
     *   dx = rstd * (dy - out * sum(out * dy)), so the node shares its saved tensor with
     *   the next op (the delta rule keeps the normalised q and k anyway).
     * rms_norm_gated: out = x / sqrt(mean(x^2) + eps) * w * silu(g) over the last dim; w [D].
     * ce_rows: loss[r] = logsumexp(logits[r]) - logits[r, target[r]] (0 when target[r] ==
     *   ignore_index); grad (may alias logits, or NULL) = softmax - onehot (0 rows for ignored
     *   targets). A target outside [0, C) that is not ignore_index: the CPU fails naming it;
     *   CUDA (which must not wait for the device) writes NaN as that row's loss.
     * embedding: out [N,D] = weight[index[n], :] (index int64 [N], 0-based). An index out of
     *   range: the CPU fails naming it; CUDA writes a NaN row (no waiting for the device).
     * embedding_backward: grad_weight [V,D] (float32, float64 for float64 data; zeroed by
     *   the front end) += grad_out [N,D] rows at index (out-of-range indices skipped). */
    EFLA_FUSED_OPS(EFLA_OP_MEMBER)
} efla_fused_kernels;

/* kind: 0 CPU, 1 CUDA (cuda/fused.cu registers from a constructor) */
void efla_register_fused(int kind, const efla_fused_kernels *kernels);
/* The fused table of `kind` (0 CPU, 1 CUDA), or NULL when none is registered. */
const efla_fused_kernels *efla_fused_table(int kind);
/* The fused kernels serving `device` (the backend must exist), or NULL with an error. */
const efla_fused_kernels *efla_fused_for(const char *op, int device);
extern const efla_fused_kernels efla_cpu_fused;

#endif

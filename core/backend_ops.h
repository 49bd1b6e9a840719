/* backend_ops.h: THE list of kernels a device backend can provide. Everything else about a
 * kernel slot is generated from its one row here (see backend.h):
 *   - its member of struct efla_backend (or efla_fused_kernels), a function pointer
 *     `int (*name) params`;
 *   - its declaration in core/cpu/cpu_kernels.h (`efla_cpu_<name>`) and cuda/kernels.cuh
 *     (`efla_cuda_<name>`) when that backend has it;
 *   - its entry in the CPU and CUDA tables, by name (`.name = efla_cpu_<name>`), or NULL, the
 *     "no kernel" default that front ends report with efla_no_kernel();
 *   - the answer of efla_backend_supports(kind, "name", dtype) and the op's name and enum
 *     (EFLA_OP_<name>) that the test table (tests/c/test_backend_ops.c) iterates.
 *
 * Columns: X(name, cpu, cuda, cpu_dtypes, cuda_dtypes, params)
 *   cpu, cuda      1 when that backend has a kernel, 0 when not (the slot is then NULL)
 *   *_dtypes       the data dtypes the kernel computes (EFLA_DT_* masks below); what the
 *                  "data" is for each kernel is said in backend.h's contract comments
 *   params         the kernel's parameter list, in parentheses
 * Adding an op: docs/ARCHITECTURE.md, "How to add an op". The order of rows is the order of
 * the struct members; it does not matter otherwise (tables are filled by name). */
#ifndef EFLA_BACKEND_OPS_H
#define EFLA_BACKEND_OPS_H

#define EFLA_DT_F32 (1u << EFLA_FLOAT32)
#define EFLA_DT_F64 (1u << EFLA_FLOAT64)
#define EFLA_DT_BF16 (1u << EFLA_BFLOAT16)
#define EFLA_DT_I64 (1u << EFLA_INT64)
#define EFLA_DT_U8 (1u << EFLA_UINT8)
#define EFLA_DT_BOOL (1u << EFLA_BOOL)
#define EFLA_DT_FLOAT (EFLA_DT_F32 | EFLA_DT_F64 | EFLA_DT_BF16)
#define EFLA_DT_F32_F64 (EFLA_DT_F32 | EFLA_DT_F64)
#define EFLA_DT_NUM (EFLA_DT_FLOAT | EFLA_DT_I64)
#define EFLA_DT_ALL (EFLA_DT_NUM | EFLA_DT_U8 | EFLA_DT_BOOL)
#define EFLA_DT_NONE 0u

/* clang-format off */
#define EFLA_BACKEND_OPS(X) \
    /* elementwise (ops_elementwise.c; cpu/elementwise.c, cuda/elementwise.cu) */ \
    X(fill,             1, 1, EFLA_DT_ALL,  EFLA_DT_ALL,  (efla_tensor *out, double value)) \
    X(copy,             1, 1, EFLA_DT_ALL,  EFLA_DT_ALL,  (efla_tensor *out, const efla_tensor *in)) \
    X(unary,            1, 1, EFLA_DT_NUM,  EFLA_DT_NUM,  (efla_unary_op op, efla_tensor *out, const efla_tensor *in)) \
    X(binary,           1, 1, EFLA_DT_ALL,  EFLA_DT_ALL,  (efla_binary_op op, efla_tensor *out, const efla_tensor *a, const efla_tensor *b)) \
    X(clamp,            1, 1, EFLA_DT_NUM,  EFLA_DT_NUM,  (efla_tensor *out, const efla_tensor *in, double lo, double hi)) \
    X(where,            1, 1, EFLA_DT_ALL,  EFLA_DT_ALL,  (efla_tensor *out, const efla_tensor *cond, const efla_tensor *a, const efla_tensor *b)) \
    X(tri,              1, 1, EFLA_DT_ALL,  EFLA_DT_ALL,  (efla_tensor *out, const efla_tensor *in, int64_t k, int upper)) \
    X(arange,           1, 1, EFLA_DT_NUM,  EFLA_DT_NUM,  (efla_tensor *out, double start, double step)) \
    X(rand,             1, 1, EFLA_DT_NUM,  EFLA_DT_NUM,  (efla_tensor *out, int dist, uint64_t seed, uint64_t offset, double p0, double p1)) \
    X(softplus,         1, 1, EFLA_DT_FLOAT, EFLA_DT_FLOAT, (efla_tensor *out, const efla_tensor *in, double beta)) \
    /* reductions (ops_reduce.c) */ \
    X(reduce,           1, 1, EFLA_DT_NUM,  EFLA_DT_NUM,  (efla_reduce_op op, efla_tensor *out, const efla_tensor *in, uint32_t reduce_mask, double param)) \
    /* linear algebra (ops_linalg.c) */ \
    X(bmm,              1, 1, EFLA_DT_NUM,  EFLA_DT_NUM,  (efla_tensor *out, const efla_tensor *a, const efla_tensor *b)) \
    /* nn (ops_nn.c) */ \
    X(softmax,          1, 1, EFLA_DT_FLOAT, EFLA_DT_FLOAT, (efla_tensor *out, const efla_tensor *in, int log)) \
    X(softmax_backward, 1, 1, EFLA_DT_FLOAT, EFLA_DT_FLOAT, (efla_tensor *grad_in, const efla_tensor *grad_out, const efla_tensor *out, int log)) \
    X(norm,             1, 1, EFLA_DT_FLOAT, EFLA_DT_FLOAT, (efla_tensor *out, efla_tensor *mean, efla_tensor *rstd, const efla_tensor *x, const efla_tensor *weight, const efla_tensor *bias, double eps, int rms)) \
    X(norm_backward,    1, 1, EFLA_DT_FLOAT, EFLA_DT_FLOAT, (efla_tensor *grad_x, efla_tensor *grad_w, efla_tensor *grad_b, const efla_tensor *grad_out, const efla_tensor *x, const efla_tensor *weight, const efla_tensor *mean, const efla_tensor *rstd, int rms)) \
    X(cross_entropy,    1, 1, EFLA_DT_FLOAT, EFLA_DT_FLOAT, (efla_tensor *loss, efla_tensor *grad, const efla_tensor *logits, const efla_tensor *target, int64_t ignore_index, double smoothing)) \
    /* indexing (ops_index.c) */ \
    X(index_select,     1, 1, EFLA_DT_NUM,  EFLA_DT_NUM,  (efla_tensor *out, const efla_tensor *in, int dim, const efla_tensor *index)) \
    X(index_add,        1, 1, EFLA_DT_NUM,  EFLA_DT_NUM,  (efla_tensor *out, int dim, const efla_tensor *index, const efla_tensor *src)) \
    X(gather,           1, 1, EFLA_DT_NUM,  EFLA_DT_NUM,  (efla_tensor *out, const efla_tensor *in, int dim, const efla_tensor *index)) \
    X(scatter_add,      1, 1, EFLA_DT_NUM,  EFLA_DT_NUM,  (efla_tensor *out, int dim, const efla_tensor *index, const efla_tensor *src)) \
    /* the delta rule (ops_delta_rule.c; the buffers by name in efla_delta_rule_buffers) */ \
    X(delta_rule_fwd,   1, 1, EFLA_DT_F32_F64, EFLA_DT_FLOAT, (const efla_delta_rule_args *a, const efla_delta_rule_buffers *buf)) \
    X(delta_rule_bwd,   1, 1, EFLA_DT_F32_F64, EFLA_DT_FLOAT, (const efla_delta_rule_args *a, const efla_delta_rule_buffers *buf)) \
    /* lambda and alpha on the device; the CPU has none (the front end's host loops) */ \
    X(delta_rule_alpha_fwd, 0, 1, EFLA_DT_NONE, EFLA_DT_FLOAT, (int64_t n, int64_t dk, efla_dtype dt, const void *k, const void *beta, int order, int reference_eps, void *alpha, void *lambda)) \
    X(delta_rule_alpha_bwd, 0, 1, EFLA_DT_NONE, EFLA_DT_FLOAT, (int64_t n, int64_t dk, efla_dtype dt, const void *k, const void *beta, const void *lambda, const void *dalpha, int order, int reference_eps, void *dk_inout, void *dbeta)) \
    /* gated calls (docs/MATH.md §6): alpha' = beta phi(beta lambda - g) and its chain into beta, k, g, on the device */ \
    X(delta_rule_alpha_v_fwd, 0, 1, EFLA_DT_NONE, EFLA_DT_FLOAT, (int64_t n, efla_dtype dt, const void *beta, const void *lambda, const void *log_decay, int order, void *alpha_v)) \
    X(delta_rule_alpha_v_bwd, 0, 1, EFLA_DT_NONE, EFLA_DT_FLOAT, (int64_t n, int64_t dk, efla_dtype dt, const void *k, const void *beta, const void *lambda, const void *log_decay, const void *dalpha_v, int order, void *dk_inout, void *dbeta_inout, void *dlog_decay_inout)) \
    /* the rank-r exact delta rule (ops_delta_rule_rank.c; cpu/delta_rule_rank.c, cuda/delta_rule_rank.cu; docs/RANK_R.md) */ \
    X(delta_rule_rank_fwd, 1, 1, EFLA_DT_F32_F64, EFLA_DT_FLOAT, (const struct efla_rank_args *a, const void *q, const void *k, const void *v, const void *beta, const void *s0, void *o, void *s_final, void *ckpt)) \
    X(delta_rule_rank_bwd, 1, 1, EFLA_DT_F32_F64, EFLA_DT_FLOAT, (const struct efla_rank_args *a, const void *q, const void *k, const void *v, const void *beta, const void *ckpt, const void *d_o, const void *d_s_final, void *dq, void *dk, void *dv, void *dbeta, void *ds0)) \
    /* softmax attention (ops_attention.c; cpu/attention.c, cuda/attention.cu): the backward recomputes P from lse */ \
    X(attention_fwd,    1, 1, EFLA_DT_F32_F64, EFLA_DT_F32 | EFLA_DT_BF16, (const efla_attention_args *a, const void *q, const void *k, const void *v, void *o, void *lse)) \
    X(attention_bwd,    1, 1, EFLA_DT_F32_F64, EFLA_DT_F32 | EFLA_DT_BF16, (const efla_attention_args *a, const void *q, const void *k, const void *v, const void *o, const void *lse, const void *d_o, void *dq, void *dk, void *dv)) \
    /* optimiser (optim.c) */ \
    X(adamw,            1, 1, EFLA_DT_FLOAT, EFLA_DT_FLOAT, (efla_tensor *p, const efla_tensor *g, efla_tensor *m, efla_tensor *v, double lr, double beta1, double beta2, double eps, double wd, int64_t step)) \
    /* multi-tensor ops over a list of contiguous tensors, dtypes may differ (ops_foreach.c; cpu/foreach.c, cuda/foreach.cu) */ \
    X(foreach_sum_squares, 1, 1, EFLA_DT_FLOAT, EFLA_DT_FLOAT, (efla_tensor *out, int n, const efla_tensor *const *ts)) \
    X(foreach_scale,    1, 1, EFLA_DT_FLOAT, EFLA_DT_FLOAT, (int n, efla_tensor *const *ts, const efla_tensor *coef)) \
    X(foreach_adamw,    1, 1, EFLA_DT_FLOAT, EFLA_DT_FLOAT, (int n, efla_tensor *const *ps, const efla_tensor *const *gs, efla_tensor *const *ms, efla_tensor *const *vs, double lr, double beta1, double beta2, double eps, double wd, int64_t step)) \
    /* scans and sorting (ops_scan.c); CUDA has none yet */ \
    X(cumsum,           1, 0, EFLA_DT_NUM,  EFLA_DT_NONE, (efla_tensor *out, const efla_tensor *in)) \
    X(sort,             1, 0, EFLA_DT_ALL,  EFLA_DT_NONE, (efla_tensor *values, efla_tensor *indices, const efla_tensor *in, int descending))

/* The fused layers (ops_fused.c; cpu/fused.c, cuda/fused.cu): the same columns, generated
 * into struct efla_fused_kernels. Their kernels are static to their files, so each file
 * names its own prefix (cpu_<name>, cu_<name>) when it fills its table. */
#define EFLA_FUSED_OPS(X) \
    X(swiglu,                  1, 1, EFLA_DT_F32_F64, EFLA_DT_FLOAT, (efla_tensor *out, const efla_tensor *gate, const efla_tensor *up)) \
    X(swiglu_backward,         1, 1, EFLA_DT_F32_F64, EFLA_DT_FLOAT, (efla_tensor *dgate, efla_tensor *dup, const efla_tensor *dout, const efla_tensor *gate, const efla_tensor *up)) \
    X(short_conv,              1, 1, EFLA_DT_F32_F64, EFLA_DT_FLOAT, (efla_tensor *out, const efla_tensor *x, const efla_tensor *cache, const efla_tensor *w, const efla_tensor *bias, int silu)) \
    X(short_conv_backward,     1, 1, EFLA_DT_F32_F64, EFLA_DT_FLOAT, (efla_tensor *dx, efla_tensor *dcache, efla_tensor *dw, efla_tensor *dbias, const efla_tensor *dout, const efla_tensor *x, const efla_tensor *cache, const efla_tensor *w, const efla_tensor *bias, int silu)) \
    X(l2norm,                  1, 1, EFLA_DT_F32_F64, EFLA_DT_FLOAT, (efla_tensor *out, efla_tensor *rstd, const efla_tensor *x, double eps)) \
    X(l2norm_backward,         1, 1, EFLA_DT_F32_F64, EFLA_DT_FLOAT, (efla_tensor *dx, const efla_tensor *dy, const efla_tensor *out, const efla_tensor *rstd)) \
    X(rms_norm_gated,          1, 1, EFLA_DT_F32_F64, EFLA_DT_FLOAT, (efla_tensor *out, const efla_tensor *x, const efla_tensor *g, const efla_tensor *w, double eps)) \
    X(rms_norm_gated_backward, 1, 1, EFLA_DT_F32_F64, EFLA_DT_FLOAT, (efla_tensor *dx, efla_tensor *dg, efla_tensor *dw, const efla_tensor *dy, const efla_tensor *x, const efla_tensor *g, const efla_tensor *w, double eps)) \
    X(ce_rows,                 1, 1, EFLA_DT_F32_F64, EFLA_DT_FLOAT, (efla_tensor *loss, efla_tensor *grad, const efla_tensor *logits, const efla_tensor *target, int64_t ignore_index)) \
    X(embedding,               1, 1, EFLA_DT_F32_F64, EFLA_DT_FLOAT, (efla_tensor *out, const efla_tensor *weight, const efla_tensor *index)) \
    X(embedding_backward,      1, 1, EFLA_DT_F32_F64, EFLA_DT_FLOAT, (efla_tensor *grad_weight, const efla_tensor *grad_out, const efla_tensor *index))
/* clang-format on */

/* ---- generators ------------------------------------------------------------------------- */
/* EFLA_PICK_<0|1>(x): x when the backend has the kernel, NULL (the "no kernel" default) when not */
#define EFLA_PICK_1(x) x
#define EFLA_PICK_0(x) NULL
/* EFLA_IF_<0|1>(...): the text, or nothing */
#define EFLA_IF_1(...) __VA_ARGS__
#define EFLA_IF_0(...)

/* struct members */
#define EFLA_OP_MEMBER(name, cpu, cuda, cdt, gdt, params) int (*name) params;
/* declarations of one backend's kernels: prefix efla_cpu_ or efla_cuda_ */
#define EFLA_OP_DECL_CPU(name, cpu, cuda, cdt, gdt, params) EFLA_IF_##cpu(int efla_cpu_##name params;)
#define EFLA_OP_DECL_CUDA(name, cpu, cuda, cdt, gdt, params) EFLA_IF_##cuda(int efla_cuda_##name params;)
/* designated initialisers, by name */
#define EFLA_OP_ENTRY_CPU(name, cpu, cuda, cdt, gdt, params) .name = EFLA_PICK_##cpu(efla_cpu_##name),
#define EFLA_OP_ENTRY_CUDA(name, cpu, cuda, cdt, gdt, params) .name = EFLA_PICK_##cuda(efla_cuda_##name),
#define EFLA_FUSED_ENTRY_CPU(name, cpu, cuda, cdt, gdt, params) .name = EFLA_PICK_##cpu(cpu_##name),
#define EFLA_FUSED_ENTRY_CUDA(name, cpu, cuda, cdt, gdt, params) .name = EFLA_PICK_##cuda(cu_##name),

/* The kernel slots as an enum: EFLA_OP_fill, ..., then the fused ones, EFLA_OP_COUNT. */
#define EFLA_OP_ENUM(name, cpu, cuda, cdt, gdt, params) EFLA_OP_##name,
typedef enum efla_backend_op {
    EFLA_BACKEND_OPS(EFLA_OP_ENUM)
    EFLA_FUSED_OPS(EFLA_OP_ENUM)
    EFLA_OP_COUNT
} efla_backend_op;

#endif

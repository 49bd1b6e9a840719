/* efla.h: the one public header of libefla.
 *
 * Conventions (see docs/ARCHITECTURE.md):
 *  - Flat prefixed API: efla_<object>_<verb>, or efla_<op> for tensor ops.
 *  - Every call that can fail reports it: functions returning a pointer return NULL,
 *    functions returning int return a negative value. The message is kept per thread:
 *    efla_last_error(). Nothing here ever calls exit() or abort() on user error.
 *  - A returned efla_tensor* is a new reference owned by the caller; drop it with
 *    efla_tensor_release(). Arguments are borrowed.
 *  - Dimensions are 0-based; negative dims count from the end (-1 is the last).
 *  - Devices are ints: EFLA_DEVICE_CPU (0) or EFLA_DEVICE_CUDA0 + index.
 *
 * The text between the CDEF markers is what the LuaJIT binding's ffi.cdef sees; it is
 * extracted at build time (scripts/gen_cdef.lua), so keep it free of preprocessor lines.
 */
#ifndef EFLA_H
#define EFLA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* EFLA_CDEF_BEGIN */

typedef enum efla_dtype {
    EFLA_FLOAT32 = 0,
    EFLA_FLOAT64 = 1,
    EFLA_BFLOAT16 = 2,
    EFLA_INT64 = 3,
    EFLA_UINT8 = 4,
    EFLA_BOOL = 5
} efla_dtype;

enum {
    EFLA_MAX_DIMS = 8,
    EFLA_DEVICE_CPU = 0,
    EFLA_DEVICE_CUDA0 = 1
};

typedef struct efla_tensor efla_tensor;
typedef struct efla_node efla_node;

/* ---- library, errors ---------------------------------------------------------- */
const char *efla_version(void);
const char *efla_last_error(void);           /* "" when none */
void efla_clear_error(void);
int efla_num_threads(void);
void efla_set_num_threads(int n);            /* OpenMP threads for CPU kernels */
int efla_has_backend(int device);            /* 1 if a backend serves that device */
int efla_device_count(int kind);             /* kind: 1 = CUDA; number of devices */
int efla_synchronize(int device);

/* ---- backends: which kernels each device kind has (core/backend_ops.h) ---------- */
int efla_backend_op_count(void);
const char *efla_backend_op_name(int op);      /* 0 .. count-1; NULL past the end */
/* 1 when the backend of device_kind (0 = cpu, 1 = cuda) is built in and has kernel `op` for
 * data dtype `dtype`, 0 when not (efla_device_count says whether a GPU is visible); -1 +
 * error for an unknown kind or kernel name. */
int efla_backend_supports(int device_kind, const char *op, efla_dtype dtype);

/* ---- dtypes ------------------------------------------------------------------- */
const char *efla_dtype_name(efla_dtype dtype);   /* "float32", ... ; "?" if invalid */
int efla_dtype_from_name(const char *name);      /* -1 + error if unknown */
size_t efla_dtype_size(efla_dtype dtype);
int efla_dtype_is_floating(efla_dtype dtype);

/* ---- lifetime and metadata ------------------------------------------------------ */
void efla_tensor_retain(efla_tensor *t);
void efla_tensor_release(efla_tensor *t);        /* NULL is fine */
int efla_tensor_ndim(const efla_tensor *t);
int64_t efla_tensor_size(const efla_tensor *t, int dim);
int64_t efla_tensor_stride(const efla_tensor *t, int dim);   /* in elements */
int64_t efla_tensor_offset(const efla_tensor *t);            /* in elements */
int64_t efla_tensor_numel(const efla_tensor *t);
efla_dtype efla_tensor_dtype(const efla_tensor *t);
int efla_tensor_device(const efla_tensor *t);
int efla_tensor_is_contiguous(const efla_tensor *t);
void *efla_tensor_data(const efla_tensor *t);    /* CPU: address of the first element; NULL on a device */
int64_t efla_tensor_version(const efla_tensor *t);   /* bumped by every in-place change of the storage */
int efla_tensor_same_storage(const efla_tensor *a, const efla_tensor *b);
int64_t efla_live_tensors(void);                 /* tensor structs alive (leak checks) */
int64_t efla_cpu_live_bytes(void);               /* bytes held by CPU storages */
int64_t efla_device_live_bytes(void);            /* bytes held by storages on every GPU together */

/* ---- creation ------------------------------------------------------------------- */
efla_tensor *efla_empty(int ndim, const int64_t *shape, efla_dtype dtype, int device);
efla_tensor *efla_zeros(int ndim, const int64_t *shape, efla_dtype dtype, int device);
efla_tensor *efla_ones(int ndim, const int64_t *shape, efla_dtype dtype, int device);
efla_tensor *efla_full(int ndim, const int64_t *shape, double value, efla_dtype dtype, int device);
efla_tensor *efla_scalar(double value, efla_dtype dtype, int device);     /* 0-d tensor */
efla_tensor *efla_arange(double start, double end, double step, efla_dtype dtype, int device);
efla_tensor *efla_linspace(double start, double end, int64_t steps, efla_dtype dtype, int device);
/* Copies nbytes of contiguous row-major data of the given dtype into a new CPU tensor. */
efla_tensor *efla_from_buffer(int ndim, const int64_t *shape, efla_dtype dtype,
                              const void *data, size_t nbytes);
/* Copies the tensor (any device, any strides) out as contiguous data of its own dtype. */
int efla_to_buffer(const efla_tensor *t, void *data, size_t nbytes);
int efla_item(const efla_tensor *t, double *out);                 /* one-element tensors */
int efla_get(const efla_tensor *t, const int64_t *index, double *out);
int efla_set(efla_tensor *t, const int64_t *index, double value); /* in place */

/* ---- random numbers: Philox4x32-10, counter-based --------------------------------
 * Element i of a draw uses counter (offset + i) under key seed, so the numbers depend
 * only on (seed, offset), never on the device or the thread count. Each draw advances
 * the offset by its element count. */
void efla_manual_seed(uint64_t seed);
void efla_rng_get_state(uint64_t *seed, uint64_t *offset);
void efla_rng_set_state(uint64_t seed, uint64_t offset);
efla_tensor *efla_rand(int ndim, const int64_t *shape, efla_dtype dtype, int device);   /* U[0,1) */
efla_tensor *efla_randn(int ndim, const int64_t *shape, efla_dtype dtype, int device);  /* N(0,1) */
efla_tensor *efla_bernoulli(int ndim, const int64_t *shape, double p, efla_dtype dtype, int device);
efla_tensor *efla_randint(int64_t low, int64_t high, int ndim, const int64_t *shape, int device);
efla_tensor *efla_randperm(int64_t n, int device);   /* int64 */

/* ---- views (no copy; they share storage) ---------------------------------------- */
efla_tensor *efla_view(const efla_tensor *t, int ndim, const int64_t *shape);  /* -1 infers one size */
efla_tensor *efla_reshape(const efla_tensor *t, int ndim, const int64_t *shape); /* view, else copy */
efla_tensor *efla_transpose(const efla_tensor *t, int dim0, int dim1);
efla_tensor *efla_permute(const efla_tensor *t, int ndim, const int *dims);
efla_tensor *efla_narrow(const efla_tensor *t, int dim, int64_t start, int64_t length);
efla_tensor *efla_select(const efla_tensor *t, int dim, int64_t index);
efla_tensor *efla_expand(const efla_tensor *t, int ndim, const int64_t *shape);
efla_tensor *efla_squeeze(const efla_tensor *t, int dim);     /* one dim of size 1 */
efla_tensor *efla_squeeze_all(const efla_tensor *t);
efla_tensor *efla_unsqueeze(const efla_tensor *t, int dim);
efla_tensor *efla_contiguous(const efla_tensor *t);           /* same tensor (new ref) if already */
efla_tensor *efla_clone(const efla_tensor *t);
efla_tensor *efla_to(const efla_tensor *t, efla_dtype dtype, int device); /* cast and/or move */

/* ---- in-place --------------------------------------------------------------------- */
int efla_copy_(efla_tensor *dst, const efla_tensor *src);     /* broadcasts src, casts */
int efla_fill_(efla_tensor *t, double value);
int efla_zero_(efla_tensor *t);

/* ---- elementwise -------------------------------------------------------------------- */
typedef enum efla_unary_op {
    EFLA_NEG = 0, EFLA_EXP, EFLA_EXPM1, EFLA_LOG, EFLA_LOG1P, EFLA_SQRT, EFLA_RSQRT,
    EFLA_ABS, EFLA_TANH, EFLA_SIGMOID, EFLA_RELU, EFLA_GELU, EFLA_SILU,
    EFLA_SIN, EFLA_COS, EFLA_SIGN, EFLA_SQUARE, EFLA_RECIPROCAL,
    EFLA_UNARY_COUNT
} efla_unary_op;
typedef enum efla_binary_op {
    EFLA_ADD = 0, EFLA_SUB, EFLA_MUL, EFLA_DIV, EFLA_POW, EFLA_MAXIMUM, EFLA_MINIMUM,
    EFLA_EQ, EFLA_NE, EFLA_LT, EFLA_LE, EFLA_GT, EFLA_GE,
    EFLA_BINARY_COUNT
} efla_binary_op;
const char *efla_unary_name(efla_unary_op op);
const char *efla_binary_name(efla_binary_op op);
efla_tensor *efla_unary(efla_unary_op op, const efla_tensor *t);
/* Broadcasting; the result dtype is the wider of the two (float beats int); comparisons
 * give bool. */
efla_tensor *efla_binary(efla_binary_op op, const efla_tensor *a, const efla_tensor *b);
efla_tensor *efla_binary_scalar(efla_binary_op op, const efla_tensor *a, double s, int scalar_first);
int efla_binary_(efla_binary_op op, efla_tensor *a, const efla_tensor *b);   /* a = a op b */
efla_tensor *efla_clamp(const efla_tensor *t, double lo, double hi);         /* +-inf: no bound */
efla_tensor *efla_where(const efla_tensor *cond, const efla_tensor *a, const efla_tensor *b);
efla_tensor *efla_masked_fill(const efla_tensor *t, const efla_tensor *mask, double value);
/* log(1 + e^(beta x)) / beta without overflow, beta > 0; differentiable (sigmoid(beta x)) */
efla_tensor *efla_softplus(const efla_tensor *t, double beta);
efla_tensor *efla_tril(const efla_tensor *t, int64_t k);
efla_tensor *efla_triu(const efla_tensor *t, int64_t k);

/* ---- reductions -------------------------------------------------------------------- */
typedef enum efla_reduce_op {
    EFLA_SUM = 0, EFLA_MEAN, EFLA_MAX, EFLA_MIN, EFLA_PROD, EFLA_LOGSUMEXP,
    EFLA_VAR,      /* param: correction (1 = unbiased) */
    EFLA_NORM,     /* param: p (2 = Euclidean) */
    EFLA_ARGMAX, EFLA_ARGMIN,   /* exactly one dim; int64 result */
    EFLA_REDUCE_COUNT
} efla_reduce_op;
const char *efla_reduce_name(efla_reduce_op op);
/* ndims = 0 reduces over every dim. */
efla_tensor *efla_reduce(efla_reduce_op op, const efla_tensor *t, int ndims, const int *dims,
                         int keepdim, double param);

/* ---- linear algebra and nn --------------------------------------------------------- */
/* numpy semantics: 1-d @ 1-d, 2-d @ 2-d, and batched with broadcast batch dims. */
efla_tensor *efla_matmul(const efla_tensor *a, const efla_tensor *b);
efla_tensor *efla_softmax(const efla_tensor *t, int dim);
efla_tensor *efla_log_softmax(const efla_tensor *t, int dim);
/* logits [N,C], target int64 [N]; mean over targets != ignore_index. */
efla_tensor *efla_cross_entropy(const efla_tensor *logits, const efla_tensor *target,
                                int64_t ignore_index, double label_smoothing);
/* normalise over the last dim; weight/bias [D] or NULL */
efla_tensor *efla_layer_norm(const efla_tensor *x, const efla_tensor *weight,
                             const efla_tensor *bias, double eps);
efla_tensor *efla_rms_norm(const efla_tensor *x, const efla_tensor *weight, double eps);

/* ---- scans and sorting (ops_scan.c) ------------------------------------------------- */
/* running sum along dim (0-based here); bool/uint8 give int64; differentiable */
efla_tensor *efla_cumsum(const efla_tensor *t, int dim);
/* stable sort along dim: *values like t, *indices int64 0-based positions along dim;
 * NaN sorts last (first when descending). Records no gradient. Returns 0 or -1. */
int efla_sort(const efla_tensor *t, int dim, int descending, efla_tensor **values, efla_tensor **indices);

/* ---- indexing, joining ---------------------------------------------------------------- */
efla_tensor *efla_index_select(const efla_tensor *t, int dim, const efla_tensor *index);
efla_tensor *efla_gather(const efla_tensor *t, int dim, const efla_tensor *index);
efla_tensor *efla_scatter_add(const efla_tensor *t, int dim, const efla_tensor *index,
                              const efla_tensor *src);     /* out-of-place: t + scattered src */
efla_tensor *efla_embedding(const efla_tensor *weight, const efla_tensor *index);  /* [..., D] */
efla_tensor *efla_one_hot(const efla_tensor *index, int64_t num_classes);           /* int64 */
efla_tensor *efla_cat(int n, efla_tensor *const *tensors, int dim);
efla_tensor *efla_stack(int n, efla_tensor *const *tensors, int dim);

/* ---- autograd ------------------------------------------------------------------------ */
int efla_grad_enabled(void);
int efla_set_grad_enabled(int enabled);          /* returns the previous setting */
int efla_requires_grad(const efla_tensor *t);
int efla_set_requires_grad(efla_tensor *t, int requires_grad);   /* leaves only */
int efla_is_leaf(const efla_tensor *t);
efla_tensor *efla_grad(const efla_tensor *t);    /* new ref, or NULL when there is none (not an error) */
int efla_set_grad(efla_tensor *t, efla_tensor *grad);   /* NULL clears */
efla_tensor *efla_detach(const efla_tensor *t);
const char *efla_grad_fn_name(const efla_tensor *t);    /* NULL for leaves */
/* grad may be NULL for a one-element root (then it is 1). */
int efla_backward(efla_tensor *root, const efla_tensor *grad, int retain_graph);
/* Grad-ready hook (data-parallel training): during a backward, fn(leaf, ud) runs once per
 * leaf as soon as that leaf's gradient for this backward is complete (its last incoming
 * edge has been accumulated), so gradient all-reduces can start while the rest of the
 * backward runs. One hook per process; NULL removes it. fn must not raise or longjmp. */
typedef void (*efla_grad_ready_fn)(efla_tensor *leaf, void *ud);
void efla_set_grad_ready_hook(efla_grad_ready_fn fn, void *ud);

/* Custom differentiable functions (the delta-rule operator uses this; so does Lua's
 * efla.autograd.Function). Compute the outputs with grad mode off, then record: */
typedef int (*efla_backward_fn)(efla_node *node, efla_tensor *const *grad_outputs,
                                efla_tensor **grad_inputs);
/* Returns the node, NULL without error when no input needs a gradient or grad mode is
 * off, NULL with an error on failure. The node attaches itself to the outputs (it owns
 * no reference to them) and holds references to its inputs' graph edges. grad_outputs
 * passed to backward are never NULL (zeros for unused outputs); set grad_inputs[i] to a
 * new reference or leave it NULL for "no gradient". */
efla_node *efla_node_record(const char *name, efla_backward_fn backward,
                            int n_inputs, efla_tensor *const *inputs,
                            int n_outputs, efla_tensor *const *outputs);
int efla_node_save(efla_node *node, const efla_tensor *t);      /* returns slot >= 0 */
efla_tensor *efla_node_saved(efla_node *node, int slot);        /* new ref; error if changed in place or freed */
int efla_node_needs_grad(const efla_node *node, int input);
void efla_node_set_ctx(efla_node *node, void *ctx, void (*free_ctx)(void *));
void *efla_node_ctx(const efla_node *node);
void efla_node_set_params(efla_node *node, int n, const double *params);  /* up to 8 numbers */
double efla_node_param(const efla_node *node, int i);
int64_t efla_node_input_size(const efla_node *node, int input, int dim);
int efla_node_input_ndim(const efla_node *node, int input);
const char *efla_node_name(const efla_node *node);

/* Where activation memory goes: per node name behind root, the nodes, the tensors they saved
 * for backward and those tensors' storage bytes (each storage once; leaves' storages, such as
 * parameters, left out). Fills up to cap entries sorted by bytes, largest first, and returns
 * the number of distinct names (may exceed cap), or -1; *total_bytes gets the sum. */
typedef struct efla_saved_entry {
    char name[40];
    int64_t nodes, tensors, bytes;
} efla_saved_entry;
int efla_graph_saved(const efla_tensor *root, efla_saved_entry *out, int cap, int64_t *total_bytes);

/* ---- NCCL collectives (efla.distributed; docs/DISTRIBUTED.md) ------------------------------
 * libnccl.so.2 is opened at run time (nothing links it); without it, or in a libefla built
 * without CUDA, every call fails with a message saying so. Tensors must be contiguous CUDA
 * tensors on the communicator's device. Collectives run on the communicator's own stream
 * after the work already queued on the default stream; efla_nccl_wait makes the default
 * stream wait for them (call it before reading the results). */
typedef struct efla_nccl_comm efla_nccl_comm;
int efla_nccl_available(void);                     /* 1, or 0 with the reason in efla_last_error() */
int efla_nccl_unique_id(char *out128);              /* fills 128 bytes */
efla_nccl_comm *efla_nccl_init(const char *id128, int world_size, int rank, int device);
int efla_nccl_all_reduce(efla_nccl_comm *c, efla_tensor *t, int average);   /* in place: sum or mean */
int efla_nccl_broadcast(efla_nccl_comm *c, efla_tensor *t, int root);       /* in place, root 0-based */
int efla_nccl_all_gather(efla_nccl_comm *c, const efla_tensor *in, efla_tensor *out);  /* out: world_size x in */
int efla_nccl_reduce_scatter(efla_nccl_comm *c, const efla_tensor *in, efla_tensor *out, int average);
int efla_nccl_wait(efla_nccl_comm *c);
void efla_nccl_destroy(efla_nccl_comm *c);

/* ---- the delta rule (EFLA, DeltaNet, Runge-Kutta orders): ../docs/ARCHITECTURE.md ----- */
enum {
    EFLA_ORDER_EXACT = 0,           /* EFLA: alpha = (1 - exp(-beta*lambda)) / lambda */
    EFLA_ALGO_AUTO = 0, EFLA_ALGO_CHUNKED = 1, EFLA_ALGO_RECURRENT = 2
};
typedef struct efla_delta_rule_opts {
    int order;              /* EFLA_ORDER_EXACT or 1..4 (1 = DeltaNet's Euler step) */
    double scale;           /* output scale; <= 0 means dk^-0.5 */
    int chunk_size;         /* 16, 32, 64 or 128 (0 = 64) */
    int algorithm;          /* EFLA_ALGO_* */
    int reference_eps;      /* 1: the published reference's lambda clamp and +1e-6 */
    int output_final_state; /* 1: fill *final_state */
    int recompute_states;   /* 1: backward recomputes per-chunk states (and CUDA solves) instead of saving them */
    const efla_tensor *log_decay; /* NULL, or the gate g <= 0 [B,T,H] ([B,H] for _step): the state
                                     decays by e^g per token (gated EFLA; order 1 = Gated DeltaNet;
                                     docs/MATH.md §6). Differentiable. */
} efla_delta_rule_opts;
void efla_delta_rule_default_opts(efla_delta_rule_opts *opts);
/* q, k [B,T,H,dk]; v [B,T,H,dv]; beta [B,T,H]; initial_state [N,H,dk,dv] or NULL;
 * cu_seqlens int64 [N+1] or NULL (then N = B; with it B must be 1 and sequences are
 * packed along T). Outputs o [B,T,H,dv] and, if asked, the final state [N,H,dk,dv].
 * Differentiable in q, k, v, beta and initial_state. */
int efla_delta_rule(const efla_tensor *q, const efla_tensor *k, const efla_tensor *v,
                    const efla_tensor *beta, const efla_tensor *initial_state,
                    const efla_tensor *cu_seqlens, const efla_delta_rule_opts *opts,
                    efla_tensor **out, efla_tensor **final_state);
/* One token: q, k [B,H,dk], v [B,H,dv], beta [B,H], state [B,H,dk,dv] -> o [B,H,dv], new state. */
int efla_delta_rule_step(const efla_tensor *q, const efla_tensor *k, const efla_tensor *v,
                         const efla_tensor *beta, const efla_tensor *state,
                         const efla_delta_rule_opts *opts, efla_tensor **out,
                         efla_tensor **new_state);
/* alpha = beta * phi_order(beta * lambda), elementwise, differentiable (docs/MATH.md §3). */
efla_tensor *efla_delta_rule_alpha(const efla_tensor *beta, const efla_tensor *lambda,
                                   int order, int reference_eps);

/* ---- softmax attention (core/ops_attention.c) ----------------------------------------- */
typedef struct efla_attention_opts {
    int causal;             /* 1 (default): query i sees keys up to its own position */
    int64_t window;         /* 0: none; W > 0: only the W newest keys, (t-W, t] (needs causal) */
    double scale;           /* <= 0 means dk^-0.5 */
} efla_attention_opts;
void efla_attention_default_opts(efla_attention_opts *opts);
/* q [B,Tq,H,dk], k [B,Tk,H,dk], v [B,Tk,H,dv] -> out [B,Tq,H,dv] = softmax(scale q k^T + mask) v.
 * Tq <= Tk when causal: query i sits at position Tk - Tq + i (the keys before are a KV cache).
 * Differentiable in q, k and v; float32/float64 on the cpu, float32/bfloat16 on CUDA. */
int efla_attention(const efla_tensor *q, const efla_tensor *k, const efla_tensor *v,
                   const efla_attention_opts *opts, efla_tensor **out);
/* ---- the rank-r exact update (docs/RANK_R.md) -------------------------------------- */
/* r keys and values per token: q [B,T,H,dk], k [B,T,H,r,dk], v [B,T,H,r,dv], beta [B,T,H],
 * initial_state [B,H,dk,dv] or NULL; r = 1..8. S <- S + K^T f(K K^T) (V - K S), o = scale S^T q.
 * opts: order, scale, output_final_state (the other fields are ignored). r = 1 is
 * efla_delta_rule. Differentiable in q, k, v, beta and initial_state. */
int efla_delta_rule_rank(const efla_tensor *q, const efla_tensor *k, const efla_tensor *v,
                         const efla_tensor *beta, const efla_tensor *initial_state,
                         const efla_delta_rule_opts *opts, efla_tensor **out,
                         efla_tensor **final_state);

/* ---- fused optimiser update -------------------------------------------------------- */
/* AdamW on one parameter, in place: m, v same shape and device as p; step counts from 1. */
int efla_adamw_step_(efla_tensor *p, const efla_tensor *grad, efla_tensor *m, efla_tensor *v,
                     double lr, double beta1, double beta2, double eps, double weight_decay,
                     int64_t step);

/* ---- multi-tensor ops (core/ops_foreach.c) ------------------------------------------- */
/* Lists of n contiguous floating tensors on one device (dtypes and sizes may differ); they
 * record no gradient. sum_squares: the sum of x^2 over every element, accumulated in double
 * in a fixed order (the same result on every run), as a new 0-d float64 tensor on the
 * list's device (n = 0: 0 on the cpu). scale_: every tensor *= coef in place, coef a
 * one-element floating tensor on the same device (read there: no host round trip). */
efla_tensor *efla_foreach_sum_squares(int n, efla_tensor *const *tensors);
int efla_foreach_scale_(int n, efla_tensor *const *tensors, const efla_tensor *coef);
/* foreach_adamw_: efla_adamw_step_ on every (params[i], grads[i], ms[i], vs[i]) in a few kernel
 * launches, with the same checks per tensor and the same result bit for bit; one step count
 * and one set of hyperparameters for the list. */
int efla_foreach_adamw_(int n, efla_tensor *const *params, const efla_tensor *const *grads, efla_tensor *const *ms,
                        efla_tensor *const *vs, double lr, double beta1, double beta2, double eps,
                        double weight_decay, int64_t step);

/* ---- HDF5 files (checkpoints) ---------------------------------------------------------
 * Writing goes to a temporary file beside the target; efla_h5_commit flushes, fsyncs and
 * renames it over the target, so a reader sees the old file or the new one, never half.
 * Names are paths such as "/model/layers/1/attn/q_proj/weight"; groups are created. */
typedef struct efla_h5 efla_h5;
efla_h5 *efla_h5_create(const char *path);
int efla_h5_write_tensor(efla_h5 *f, const char *name, const efla_tensor *t);
int efla_h5_write_attr_string(efla_h5 *f, const char *object, const char *key, const char *value);
int efla_h5_write_attr_double(efla_h5 *f, const char *object, const char *key, double value);
int efla_h5_commit(efla_h5 *f);           /* closes f in every case */
void efla_h5_abort(efla_h5 *f);           /* closes f and removes the temporary file */
efla_h5 *efla_h5_open(const char *path);  /* read-only; a clear error for non-HDF5 files */
int efla_h5_count(efla_h5 *f);            /* number of datasets (tensors) in the file */
const char *efla_h5_name(efla_h5 *f, int i);   /* valid until close */
int efla_h5_info(efla_h5 *f, const char *name, int *ndim, int64_t *shape, efla_dtype *dtype);
efla_tensor *efla_h5_read_tensor(efla_h5 *f, const char *name);   /* checks the stored checksum */
const char *efla_h5_read_attr_string(efla_h5 *f, const char *object, const char *key); /* NULL if absent; valid until close */
int efla_h5_read_attr_double(efla_h5 *f, const char *object, const char *key, double *out);
int efla_h5_close(efla_h5 *f);

/* ---- atomic file writes (data caches, text reports): temporary file, fsync, rename --------
 * Symlinks are followed; a target that is not a regular file is refused (atomic_file.c). */
typedef struct efla_atomic_file efla_atomic_file;
efla_atomic_file *efla_atomic_create(const char *path);
int efla_atomic_write(efla_atomic_file *f, const void *data, size_t n);
int efla_atomic_commit(efla_atomic_file *f);   /* closes f in every case */
void efla_atomic_abort(efla_atomic_file *f);   /* closes f and removes the temporary file */

/* ---- CUDA memory ------------------------------------------------------------------------ */
typedef struct efla_memory_stats {
    int64_t live_bytes, peak_bytes, cached_bytes, num_allocs, num_cache_hits, num_ooms;
} efla_memory_stats;
int efla_cuda_memory_stats(int device, efla_memory_stats *stats);
int efla_cuda_empty_cache(int device);
int efla_cuda_reset_peak(int device);
/* Called by the allocator before it gives up on an allocation (Lua runs a full GC). */
void efla_set_gc_callback(void (*callback)(void));
int efla_cuda_set_tf32(int enabled);
typedef struct efla_device_props {
    char name[256];
    int64_t total_memory;           /* bytes */
    int multiprocessors, cc_major, cc_minor;
} efla_device_props;
int efla_cuda_device_props(int device, efla_device_props *props);

/* ---- fused layers (core/ops_fused.c): one autograd node each, saving only what the
 * backward needs (cheap intermediates are recomputed). Same dtype and device for every
 * floating input (cast parameters to the activations' dtype first). */
efla_tensor *efla_swiglu(const efla_tensor *gate, const efla_tensor *up);     /* silu(gate) * up */
/* (silu(gate) * up) @ weight^T, weight [N, M]: SwiGLU with its down projection, the product
 * recomputed in backward instead of kept */
efla_tensor *efla_swiglu_linear(const efla_tensor *gate, const efla_tensor *up, const efla_tensor *weight);
/* causal depthwise conv along time of x [B,T,C] with weight [C,K], bias [C] or NULL,
 * cache [B,K-1,C] (the inputs before x) or NULL (zeros); silu 1 applies SiLU. */
efla_tensor *efla_short_conv(const efla_tensor *x, const efla_tensor *weight, const efla_tensor *bias,
                             const efla_tensor *cache, int silu);
efla_tensor *efla_l2_norm(const efla_tensor *x, double eps);     /* x / sqrt(sum(x^2) + eps), last dim */
/* rms_norm(x, weight, eps) * silu(gate), over the last dim; gate has x's shape */
efla_tensor *efla_rms_norm_gated(const efla_tensor *x, const efla_tensor *gate, const efla_tensor *weight,
                                 double eps);
/* weight [V,D] rows at index (int64, 0-based, any shape) -> [..., D], like efla_embedding but
 * without waiting for the device (CUDA: an out-of-range index gives a NaN row) */
efla_tensor *efla_embedding_lookup(const efla_tensor *weight, const efla_tensor *index);
/* mean over targets != ignore_index of cross_entropy(h [N,D] @ weight[V,D]^T, target [N]),
 * computed chunk_rows rows at a time (<= 0: automatic) so that the [N,V] logits never exist
 * whole; the gradients are formed in the forward. A 0-d float32 result (float64 for
 * float64 inputs), on the device, with no host synchronisation. */
efla_tensor *efla_linear_cross_entropy(const efla_tensor *h, const efla_tensor *weight,
                                       const efla_tensor *target, int64_t ignore_index,
                                       int64_t chunk_rows);

/* EFLA_CDEF_END */

#ifdef __cplusplus
}
#endif
#endif

/* test_backend_ops.c: every op x every registered backend x every dtype it supports, against
 * the CPU in float64 (in the manner of ggml's test-backend-ops).
 *
 * One table row per case: a name, the kernels it exercises (rows of core/backend_ops.h),
 * its inputs (shape, what values, strided or not) and a function that builds its outputs
 * from inputs through the public API. For each case:
 *   1. the inputs are drawn in float64 on the CPU;
 *   2. for each backend (cpu; cuda when a device is visible) and each dtype that the case
 *      exercises and efla_backend_supports() grants for all its kernels, the inputs are
 *      rounded to that dtype, moved to the device (transposed views where the row says
 *      strided), and the outputs (and, for rows with gradients, the gradients of
 *      sum(out * w)) are compared with those of the float64 CPU run on the same rounded
 *      values: float32 2e-5 (gradients 1e-4), bfloat16 2e-2 (5e-2), float64 1e-10,
 *      relative to max(1, |reference|);
 *   3. the float64 CPU gradients themselves are checked against central finite
 *      differences once per case (small cases; the big shape variants rely on it).
 * Every kernel of the op list must be exercised by some row or named in `exempt` (the
 * test fails otherwise), so a new op gets its row.
 *
 *   test_backend_ops                 all cases, every backend
 *   test_backend_ops -o softmax      the cases named softmax or softmax.*, or exercising
 *                                    the kernel softmax (repeatable)
 *   test_backend_ops -b cuda         one backend only; -v prints every comparison
 */
#include "test_util.h"
#include "backend.h"
#include <string.h>

enum { MAX_IN = 4, MAX_OUT = 2, MAX_K = 3 };
#define EXACT 1e-30

/* what an input holds */
typedef enum {
    IN_NORMAL = 0,   /* N(0,1) * scale, in the case's dtype */
    IN_POSITIVE,     /* |N(0,1)| * scale + 0.1 */
    IN_INDEX,        /* int64 in [0, param) */
    IN_TARGET,       /* int64 in [0, param), two entries -100 (ignored) */
    IN_MASK,         /* bool */
    IN_INT_SMALL,    /* in [-6, 7), in the case's dtype (integer cases) */
} input_kind;

enum {
    LAYOUT_CONTIGUOUS = 0,
    LAYOUT_TRANSPOSED,   /* the transpose of a contiguous tensor (last two dims swapped) */
    LAYOUT_NARROWED,     /* a narrow of the last dim of a wider buffer */
    LAYOUT_EXPANDED,     /* dim 0 expanded from size 1 (stride 0; the values repeat) */
};

typedef struct {
    input_kind kind;
    int nd;
    int64_t shape[4];
    double scale;    /* IN_NORMAL/IN_POSITIVE; IN_INDEX/IN_TARGET: the bound */
    int layout;      /* LAYOUT_*: how the tensor under test is laid out */
    int grad;        /* 1: gradients are compared for it */
} input_spec;

typedef struct run_args {
    efla_tensor *in[MAX_IN];
    efla_dtype dtype;
    int device;
    double p;        /* the case's parameter */
    int i;           /* the case's integer parameter (an op enum, a dim) */
} run_args;

/* Fills out[0..n); returns n (1 or 2) or -1. */
typedef int (*run_fn)(const run_args *a, efla_tensor **out);

typedef struct case_spec {
    char name[48];
    efla_backend_op kernels[MAX_K];
    int n_kernels;
    int n_in;
    input_spec in[MAX_IN];
    run_fn run;
    double p;
    int i;
    unsigned dtypes;        /* dtypes the case exercises (EFLA_DT_*), asked of supports() */
    int ref_same_dtype;     /* 1: the reference is the CPU at the same dtype (random draws) */
    double tol_scale;       /* multiplies the tolerances (0: 1; EXACT: bit-equal) */
} case_spec;

static const struct { efla_backend_op op; const char *why; } exempt[] = {
    { EFLA_OP_delta_rule_fwd, "test_delta_rule.c (CPU) and test_cuda.c (CUDA vs CPU)" },
    { EFLA_OP_delta_rule_bwd, "test_delta_rule.c (CPU) and test_cuda.c (CUDA vs CPU)" },
    { EFLA_OP_delta_rule_alpha_fwd, "test_cuda.c: the delta rule on CUDA runs it" },
    { EFLA_OP_delta_rule_alpha_bwd, "test_cuda.c: the delta rule on CUDA runs it" },
    { EFLA_OP_delta_rule_alpha_v_fwd, "tests/lua/test_gated_delta_rule_cuda.lua: gated calls on CUDA vs the CPU" },
    { EFLA_OP_delta_rule_alpha_v_bwd, "tests/lua/test_gated_delta_rule_cuda.lua: gated calls on CUDA vs the CPU" },
    { EFLA_OP_delta_rule_rank_fwd, "tests/lua/test_delta_rule_rank.lua (CPU vs a dense matrix exponential) and _cuda.lua (CUDA vs CPU)" },
    { EFLA_OP_delta_rule_rank_bwd, "tests/lua/test_delta_rule_rank.lua (finite differences) and _cuda.lua (CUDA vs CPU)" },
    { EFLA_OP_attention_fwd, "tests/lua/test_attention.lua (CPU vs a naive reference) and test_attention_cuda.lua (CUDA vs CPU)" },
    { EFLA_OP_attention_bwd, "tests/lua/test_attention.lua (CPU vs a naive reference) and test_attention_cuda.lua (CUDA vs CPU)" },
};

static int verbose;
static const char *filters[16];
static int n_filters;
static int only_backend = -1;

/* ---- the ops under test (each builds outputs from a->in through the public API) ----------- */
static int one(efla_tensor *t, efla_tensor **out) { out[0] = t; return t ? 1 : -1; }

static int r_full(const run_args *a, efla_tensor **o) {
    int64_t s[2] = { 5, 7 };
    return one(efla_full(2, s, -2.75, a->dtype, a->device), o);
}
static int r_cast(const run_args *a, efla_tensor **o) { return one(efla_to(a->in[0], (efla_dtype)a->i, a->device), o); }
static int r_contiguous(const run_args *a, efla_tensor **o) { return one(efla_contiguous(a->in[0]), o); }
static int r_copy_bcast(const run_args *a, efla_tensor **o) {
    /* copy_ of a [C] row into the transposed view of a zero [R,C]^T buffer */
    int64_t s[2] = { efla_tensor_size(a->in[0], 0), 4 };
    efla_tensor *buf = efla_zeros(2, s, a->dtype, a->device), *tv = buf ? efla_transpose(buf, 0, 1) : NULL;
    int rc = tv ? efla_copy_(tv, a->in[0]) : -1;
    efla_tensor_release(tv);
    if (rc) { efla_tensor_release(buf); return -1; }
    return one(buf, o);
}
static int r_unary(const run_args *a, efla_tensor **o) { return one(efla_unary((efla_unary_op)a->i, a->in[0]), o); }
static int r_binary(const run_args *a, efla_tensor **o) { return one(efla_binary((efla_binary_op)a->i, a->in[0], a->in[1]), o); }
static int r_binary_scalar(const run_args *a, efla_tensor **o) {
    return one(efla_binary_scalar((efla_binary_op)a->i, a->in[0], a->p, 1), o);
}
static int r_binary_inplace(const run_args *a, efla_tensor **o) {
    efla_tensor *c = efla_clone(a->in[0]);
    if (!c || efla_binary_(EFLA_MUL, c, a->in[1])) { efla_tensor_release(c); return -1; }
    return one(c, o);
}
static int r_clamp(const run_args *a, efla_tensor **o) { return one(efla_clamp(a->in[0], -1.5, a->p), o); }
static int r_where(const run_args *a, efla_tensor **o) { return one(efla_where(a->in[2], a->in[0], a->in[1]), o); }
static int r_masked_fill(const run_args *a, efla_tensor **o) { return one(efla_masked_fill(a->in[0], a->in[1], 7), o); }
static int r_tri(const run_args *a, efla_tensor **o) {
    return one(a->i ? efla_triu(a->in[0], (int64_t)a->p) : efla_tril(a->in[0], (int64_t)a->p), o);
}
static int r_arange(const run_args *a, efla_tensor **o) { return one(efla_arange(-3, 40, 0.75, a->dtype, a->device), o); }
static int r_linspace(const run_args *a, efla_tensor **o) { return one(efla_linspace(-1, 2, 101, a->dtype, a->device), o); }
static int r_rand(const run_args *a, efla_tensor **o) {
    int64_t s[2] = { 123, 77 };
    efla_manual_seed(1234);
    efla_tensor *skip = efla_rand(1, s, EFLA_FLOAT32, a->device);   /* a nonzero offset */
    if (!skip) return -1;
    efla_tensor_release(skip);
    switch (a->i) {
    case 0: return one(efla_rand(2, s, a->dtype, a->device), o);
    case 1: return one(efla_randn(2, s, a->dtype, a->device), o);
    case 2: return one(efla_bernoulli(2, s, 0.3, a->dtype, a->device), o);
    default: return one(efla_randint(-1000, 1000000, 2, s, a->device), o);
    }
}
static int r_softplus(const run_args *a, efla_tensor **o) { return one(efla_softplus(a->in[0], a->p), o); }
static int r_reduce(const run_args *a, efla_tensor **o) {
    /* i: the op | keepdim << 8 | (bit mask of the reduced dims) << 9, mask 0 = every dim; p: param */
    int dims[EFLA_MAX_DIMS], nd = 0, mask = a->i >> 9;
    for (int d = 0; d < EFLA_MAX_DIMS; d++)
        if (mask & (1 << d)) dims[nd++] = d;
    return one(efla_reduce((efla_reduce_op)(a->i & 0xff), a->in[0], nd, dims, (a->i >> 8) & 1, a->p), o);
}
static int r_matmul(const run_args *a, efla_tensor **o) { return one(efla_matmul(a->in[0], a->in[1]), o); }
static int r_softmax(const run_args *a, efla_tensor **o) {   /* i: log; p: the dim */
    return one(a->i ? efla_log_softmax(a->in[0], (int)a->p) : efla_softmax(a->in[0], (int)a->p), o);
}
static int r_layer_norm(const run_args *a, efla_tensor **o) { return one(efla_layer_norm(a->in[0], a->in[1], a->in[2], 1e-5), o); }
static int r_layer_norm_plain(const run_args *a, efla_tensor **o) { return one(efla_layer_norm(a->in[0], NULL, NULL, 1e-5), o); }
static int r_rms_norm_plain(const run_args *a, efla_tensor **o) { return one(efla_rms_norm(a->in[0], NULL, 1e-5), o); }
static int r_cat(const run_args *a, efla_tensor **o) { return one(efla_cat(2, a->in, a->i), o); }
static int r_stack(const run_args *a, efla_tensor **o) { return one(efla_stack(2, a->in, a->i), o); }
static int r_rms_norm(const run_args *a, efla_tensor **o) { return one(efla_rms_norm(a->in[0], a->in[1], 1e-5), o); }
static int r_cross_entropy(const run_args *a, efla_tensor **o) { return one(efla_cross_entropy(a->in[0], a->in[1], -100, a->p), o); }
static int r_index_select(const run_args *a, efla_tensor **o) { return one(efla_index_select(a->in[0], a->i, a->in[1]), o); }
static int r_gather(const run_args *a, efla_tensor **o) { return one(efla_gather(a->in[0], a->i, a->in[1]), o); }
static int r_scatter_add(const run_args *a, efla_tensor **o) { return one(efla_scatter_add(a->in[0], 0, a->in[2], a->in[1]), o); }
static int r_embedding(const run_args *a, efla_tensor **o) { return one(efla_embedding(a->in[0], a->in[1]), o); }
static int r_adamw(const run_args *a, efla_tensor **o) {
    /* bfloat16 parameters keep float32 moments (mixed precision) */
    efla_dtype md = a->dtype == EFLA_BFLOAT16 ? EFLA_FLOAT32 : a->dtype;
    efla_tensor *p = efla_clone(a->in[0]), *m0 = efla_to(a->in[2], md, a->device), *av = efla_unary(EFLA_ABS, a->in[3]);
    efla_tensor *m = m0 ? efla_clone(m0) : NULL, *v = av ? efla_to(av, md, a->device) : NULL;   /* fresh m, v */
    efla_tensor_release(m0);
    efla_tensor_release(av);
    int rc = p && m && v ? efla_adamw_step_(p, a->in[1], m, v, 1e-2, 0.9, 0.999, 1e-8, 0.1, 3) : -1;
    efla_tensor_release(m);
    if (rc) { efla_tensor_release(p); efla_tensor_release(v); return -1; }
    o[0] = p;
    o[1] = v;
    return 2;
}
/* two parameters (in[0] with grad in[1], in[1] with grad in[0]) and fresh moments from in[2]
 * and |in[3]| (float32 for bfloat16 parameters), one multi-tensor step; out: both parameters */
static int r_foreach_adamw(const run_args *a, efla_tensor **o) {
    efla_dtype md = a->dtype == EFLA_BFLOAT16 ? EFLA_FLOAT32 : a->dtype;
    efla_tensor *av = efla_unary(EFLA_ABS, a->in[3]);
    efla_tensor *p[2] = { efla_clone(a->in[0]), efla_clone(a->in[1]) };
    efla_tensor *m[2] = { efla_to(a->in[2], md, a->device), NULL }, *v[2] = { av ? efla_to(av, md, a->device) : NULL, NULL };
    m[1] = m[0] ? efla_clone(m[0]) : NULL;
    if (m[0] && m[0]->storage == a->in[2]->storage) { efla_tensor *c = efla_clone(m[0]); efla_tensor_release(m[0]); m[0] = c; }
    v[1] = v[0] ? efla_clone(v[0]) : NULL;
    const efla_tensor *g[2] = { a->in[1], a->in[0] };
    int rc = p[0] && p[1] && m[0] && m[1] && v[0] && v[1]
                 ? efla_foreach_adamw_(2, p, g, m, v, 1e-2, 0.9, 0.999, 1e-8, 0.1, 3) : -1;
    efla_tensor_release(av);
    for (int k = 0; k < 2; k++) { efla_tensor_release(m[k]); efla_tensor_release(v[k]); }
    if (rc) { efla_tensor_release(p[0]); efla_tensor_release(p[1]); return -1; }
    o[0] = p[0];
    o[1] = p[1];
    return 2;
}
/* A list of five tensors in four dtypes: in[0] in the case's dtype, in[1] (1-d) whole and
 * as a view from element 1 (an unaligned start: the scalar path), in[2] as bfloat16, in[3] as
 * float64. The float64 reference makes the same casts, so both sum the same values. */
static int r_foreach_sum_squares(const run_args *a, efla_tensor **o) {
    efla_tensor *off = efla_narrow(a->in[1], 0, 1, efla_tensor_size(a->in[1], 0) - 1);
    efla_tensor *b16 = efla_to(a->in[2], EFLA_BFLOAT16, a->device), *f64 = efla_to(a->in[3], EFLA_FLOAT64, a->device);
    efla_tensor *list[5] = { a->in[0], off, b16, f64, a->in[1] };
    efla_tensor *r = off && b16 && f64 ? efla_foreach_sum_squares(5, list) : NULL;
    efla_tensor_release(off);
    efla_tensor_release(b16);
    efla_tensor_release(f64);
    return one(r, o);
}
/* copies of in[0] and of in[1] from element 1 (unaligned), scaled in place by a device 0-d p */
static int r_foreach_scale(const run_args *a, efla_tensor **o) {
    efla_tensor *c0 = efla_clone(a->in[0]), *c1 = efla_clone(a->in[1]);
    efla_tensor *v1 = c1 ? efla_narrow(c1, 0, 1, efla_tensor_size(c1, 0) - 1) : NULL;
    efla_tensor *coef = efla_full(0, NULL, a->p, EFLA_FLOAT64, a->device);
    efla_tensor *list[2] = { c0, v1 };
    int rc = c0 && v1 && coef ? efla_foreach_scale_(2, list, coef) : -1;
    efla_tensor_release(c1);
    efla_tensor_release(coef);
    if (rc) { efla_tensor_release(c0); efla_tensor_release(v1); return -1; }
    o[0] = c0;
    o[1] = v1;
    return 2;
}
static int r_cumsum(const run_args *a, efla_tensor **o) { return one(efla_cumsum(a->in[0], a->i), o); }
static int r_sort(const run_args *a, efla_tensor **o) { return efla_sort(a->in[0], -1, a->i, &o[0], &o[1]) ? -1 : 2; }
static int r_swiglu(const run_args *a, efla_tensor **o) { return one(efla_swiglu(a->in[0], a->in[1]), o); }
static int r_swiglu_linear(const run_args *a, efla_tensor **o) { return one(efla_swiglu_linear(a->in[0], a->in[1], a->in[2]), o); }
static int r_short_conv(const run_args *a, efla_tensor **o) {
    return one(efla_short_conv(a->in[0], a->in[1], a->in[2], a->in[3], 1), o);
}
static int r_l2_norm(const run_args *a, efla_tensor **o) { return one(efla_l2_norm(a->in[0], 1e-6), o); }
static int r_rms_norm_gated(const run_args *a, efla_tensor **o) {
    return one(efla_rms_norm_gated(a->in[0], a->in[1], a->in[2], 1e-5), o);
}
static int r_embedding_lookup(const run_args *a, efla_tensor **o) { return one(efla_embedding_lookup(a->in[0], a->in[1]), o); }
static int r_linear_ce(const run_args *a, efla_tensor **o) {
    return one(efla_linear_cross_entropy(a->in[0], a->in[1], a->in[2], -100, 16), o);
}

/* ---- the table ------------------------------------------------------------------------------ */
static case_spec cases[256];
static int n_cases;

#define K1(a) { EFLA_OP_##a }, 1
#define K2(a, b) { EFLA_OP_##a, EFLA_OP_##b }, 2
#define K3(a, b, c) { EFLA_OP_##a, EFLA_OP_##b, EFLA_OP_##c }, 3
/* input shorthands */
#define NORM(s, ...) { IN_NORMAL, sizeof((int64_t[]){ __VA_ARGS__ }) / 8, { __VA_ARGS__ }, s, 0, 1 }
#define NORM_N(s, ...) { IN_NORMAL, sizeof((int64_t[]){ __VA_ARGS__ }) / 8, { __VA_ARGS__ }, s, LAYOUT_NARROWED, 1 }
#define NORM_E(s, ...) { IN_NORMAL, sizeof((int64_t[]){ __VA_ARGS__ }) / 8, { __VA_ARGS__ }, s, LAYOUT_EXPANDED, 0 }
#define NORM_T(s, ...) { IN_NORMAL, sizeof((int64_t[]){ __VA_ARGS__ }) / 8, { __VA_ARGS__ }, s, LAYOUT_TRANSPOSED, 1 }
#define NORM_NG(s, ...) { IN_NORMAL, sizeof((int64_t[]){ __VA_ARGS__ }) / 8, { __VA_ARGS__ }, s, 0, 0 }
#define POS(s, ...) { IN_POSITIVE, sizeof((int64_t[]){ __VA_ARGS__ }) / 8, { __VA_ARGS__ }, s, 0, 1 }
#define POS_T(s, ...) { IN_POSITIVE, sizeof((int64_t[]){ __VA_ARGS__ }) / 8, { __VA_ARGS__ }, s, LAYOUT_TRANSPOSED, 1 }
#define INDEX(bound, ...) { IN_INDEX, sizeof((int64_t[]){ __VA_ARGS__ }) / 8, { __VA_ARGS__ }, bound, 0, 0 }
#define TARGET(bound, ...) { IN_TARGET, sizeof((int64_t[]){ __VA_ARGS__ }) / 8, { __VA_ARGS__ }, bound, 0, 0 }
#define MASK(...) { IN_MASK, sizeof((int64_t[]){ __VA_ARGS__ }) / 8, { __VA_ARGS__ }, 0, 0, 0 }
#define INTS(...) { IN_INT_SMALL, sizeof((int64_t[]){ __VA_ARGS__ }) / 8, { __VA_ARGS__ }, 0, 0, 0 }

static const case_spec fixed_cases[] = {
    /* name, kernels, n_in, inputs, run, p, i, dtypes, ref_same_dtype, tol_scale */
    { "fill", K1(fill), 0, {{0}}, r_full, 0, 0, EFLA_DT_ALL, 0, 0 },
    { "copy.cast_to_f64", K1(copy), 1, { NORM_T(3, 5, 4) }, r_cast, 0, EFLA_FLOAT64, EFLA_DT_FLOAT, 0, 0 },
    { "copy.cast_to_i64", K1(copy), 1, { NORM_NG(3, 5, 4) }, r_cast, 0, EFLA_INT64, EFLA_DT_FLOAT, 0, 0 },
    { "copy.cast_to_bf16", K1(copy), 1, { NORM_NG(3, 6, 8) }, r_cast, 0, EFLA_BFLOAT16, EFLA_DT_F32, 0, 0 },
    { "copy.cast_to_f32", K1(copy), 1, { NORM_NG(3, 6, 8) }, r_cast, 0, EFLA_FLOAT32, EFLA_DT_BF16, 0, 0 },
    { "copy.contiguous", K1(copy), 1, { NORM_T(1, 6, 5) }, r_contiguous, 0, 0, EFLA_DT_NUM, 0, 0 },
    { "copy.broadcast", K1(copy), 1, { NORM_NG(1, 6) }, r_copy_bcast, 0, 0, EFLA_DT_NUM, 0, 0 },
    { "binary_scalar.sub", K1(binary), 1, { NORM(2, 4, 5) }, r_binary_scalar, 1.5, EFLA_SUB, EFLA_DT_FLOAT, 0, 0 },
    { "binary_inplace.mul", K1(binary), 2, { NORM_NG(1, 4, 5), NORM_NG(1, 5) }, r_binary_inplace, 0, 0, EFLA_DT_NUM, 0, 0 },
    { "clamp", K1(clamp), 1, { NORM_T(3, 4, 6) }, r_clamp, 2.25, 0, EFLA_DT_FLOAT, 0, 0 },
    { "clamp.lower_only", K1(clamp), 1, { NORM(3, 4, 6) }, r_clamp, INFINITY, 0, EFLA_DT_FLOAT, 0, 0 },
    { "where", K1(where), 3, { NORM_T(1, 6, 7), NORM(1, 6, 7), MASK(6, 1) }, r_where, 0, 0, EFLA_DT_FLOAT, 0, 0 },
    { "where.masked_fill", K1(where), 2, { NORM(1, 4, 6, 7), MASK(6, 1) }, r_masked_fill, 0, 0, EFLA_DT_FLOAT, 0, 0 },
    { "tri.tril", K1(tri), 1, { NORM_T(1, 4, 6, 7) }, r_tri, -1, 0, EFLA_DT_NUM, 0, 0 },
    { "tri.triu", K1(tri), 1, { NORM(1, 4, 6, 7) }, r_tri, 2, 1, EFLA_DT_NUM, 0, 0 },
    { "arange", K1(arange), 0, {{0}}, r_arange, 0, 0, EFLA_DT_NUM, 0, 0 },
    { "arange.linspace", K1(arange), 0, {{0}}, r_linspace, 0, 0, EFLA_DT_FLOAT, 0, 0 },
    { "rand.uniform", K1(rand), 0, {{0}}, r_rand, 0, 0, EFLA_DT_FLOAT, 1, EXACT },
    { "rand.normal", K1(rand), 0, {{0}}, r_rand, 0, 1, EFLA_DT_FLOAT, 1, 0 },
    { "rand.bernoulli", K1(rand), 0, {{0}}, r_rand, 0, 2, EFLA_DT_FLOAT, 1, EXACT },
    { "rand.int", K1(rand), 0, {{0}}, r_rand, 0, 3, EFLA_DT_I64, 1, EXACT },
    { "softplus", K1(softplus), 1, { NORM_T(3, 5, 6) }, r_softplus, 1, 0, EFLA_DT_FLOAT, 0, 0 },
    { "softplus.beta", K1(softplus), 1, { NORM(40, 7, 3) }, r_softplus, 0.5, 0, EFLA_DT_FLOAT, 0, 0 },
    { "matmul.2d", K1(bmm), 2, { NORM(1, 33, 70), NORM(1, 70, 17) }, r_matmul, 0, 0, EFLA_DT_NUM, 0, 0 },
    { "matmul.transposed", K1(bmm), 2, { NORM_T(1, 17, 70), NORM_T(1, 70, 33) }, r_matmul, 0, 0, EFLA_DT_NUM, 0, 0 },
    { "matmul.narrowed", K1(bmm), 2, { NORM_N(1, 33, 40), NORM_N(1, 40, 17) }, r_matmul, 0, 0, EFLA_DT_NUM, 0, 0 },
    { "matmul.expanded", K1(bmm), 2, { NORM_E(1, 33, 70), NORM(1, 70, 17) }, r_matmul, 0, 0, EFLA_DT_NUM, 0, 0 },
    { "matmul.batched_broadcast_4d", K1(bmm), 2, { NORM(1, 2, 1, 9, 12), NORM(1, 3, 12, 7) }, r_matmul, 0, 0, EFLA_DT_NUM, 0, 0 },
    { "matmul.batched_2d_weight", K1(bmm), 2, { NORM(1, 4, 6, 8), NORM(1, 8, 5) }, r_matmul, 0, 0, EFLA_DT_NUM, 0, 0 },
    { "matmul.dot", K1(bmm), 2, { NORM(1, 50), NORM(1, 50) }, r_matmul, 0, 0, EFLA_DT_NUM, 0, 0 },
    { "matmul", K1(bmm), 2, { NORM_T(1, 5, 4), NORM(1, 4, 3) }, r_matmul, 0, 0, EFLA_DT_FLOAT, 0, 0 },
    { "matmul.batched_broadcast", K1(bmm), 2, { NORM(1, 2, 1, 3, 4), NORM_T(1, 3, 4, 5) }, r_matmul, 0, 0, EFLA_DT_FLOAT, 0, 0 },
    { "matmul.vector", K1(bmm), 2, { NORM(1, 6), NORM(1, 6, 3) }, r_matmul, 0, 0, EFLA_DT_FLOAT, 0, 0 },
    { "matmul.int64", K1(bmm), 2, { INTS(5, 4), INTS(4, 3) }, r_matmul, 0, 0, EFLA_DT_I64, 0, 0 },
    { "matmul.big", K1(bmm), 2, { NORM(0.2, 3, 70, 66), NORM_T(0.2, 66, 65) }, r_matmul, 0, 0, EFLA_DT_FLOAT, 0, 0 },
    { "softmax", K2(softmax, softmax_backward), 1, { NORM(2, 3, 7) }, r_softmax, -1, 0, EFLA_DT_FLOAT, 0, 0 },
    { "softmax.log", K2(softmax, softmax_backward), 1, { NORM(2, 3, 7) }, r_softmax, -1, 1, EFLA_DT_FLOAT, 0, 0 },
    { "softmax.rows33", K2(softmax, softmax_backward), 1, { NORM(2, 3, 7, 33) }, r_softmax, -1, 0, EFLA_DT_FLOAT, 0, 0 },
    { "softmax.dim1", K2(softmax, softmax_backward), 1, { NORM(2, 3, 7, 33) }, r_softmax, 1, 0, EFLA_DT_FLOAT, 0, 0 },
    { "softmax.wide_strided", K2(softmax, softmax_backward), 1, { NORM_T(2, 1500, 5) }, r_softmax, -1, 0, EFLA_DT_FLOAT, 0, 0 },
    { "softmax.log_long_rows", K2(softmax, softmax_backward), 1, { NORM(2, 3, 2500) }, r_softmax, -1, 1, EFLA_DT_FLOAT, 0, 0 },
    { "norm.layer", K2(norm, norm_backward), 3, { NORM(1, 3, 8), NORM(1, 8), NORM(1, 8) }, r_layer_norm, 0, 0, EFLA_DT_FLOAT, 0, 0 },
    { "norm.rms", K2(norm, norm_backward), 2, { NORM(1, 3, 8), NORM(1, 8) }, r_rms_norm, 0, 0, EFLA_DT_FLOAT, 0, 0 },
    { "norm.layer_d33", K2(norm, norm_backward), 3, { NORM(2, 6, 33), NORM(1, 33), NORM(1, 33) }, r_layer_norm, 0, 0, EFLA_DT_FLOAT, 0, 0 },
    { "norm.rms_d33", K2(norm, norm_backward), 2, { NORM(2, 6, 33), NORM(1, 33) }, r_rms_norm, 0, 0, EFLA_DT_FLOAT, 0, 0 },
    { "norm.layer_plain_long_rows", K2(norm, norm_backward), 1, { NORM(2, 6, 2500) }, r_layer_norm_plain, 0, 0, EFLA_DT_FLOAT, 0, 0 },
    { "norm.rms_plain_long_rows", K2(norm, norm_backward), 1, { NORM(2, 6, 2500) }, r_rms_norm_plain, 0, 0, EFLA_DT_FLOAT, 0, 0 },
    { "norm.layer_many_rows", K2(norm, norm_backward), 3, { NORM(1, 3000, 48), NORM(1, 48), NORM(1, 48) }, r_layer_norm, 0, 0, EFLA_DT_FLOAT, 0, 10 },
    { "norm.layer_wide", K2(norm, norm_backward), 3, { NORM(1, 5, 1100), NORM(1, 1100), NORM(1, 1100) }, r_layer_norm, 0, 0, EFLA_DT_FLOAT, 0, 0 },
    /* the float32/bfloat16 fast path (rows of a multiple of 8): a partial last stride of the
     * warp (520), a row over 1024 (2056), many rows over several weight-gradient segments */
    { "norm.rms_fast_520", K2(norm, norm_backward), 2, { NORM(1, 70, 520), NORM(1, 520) }, r_rms_norm, 0, 0, EFLA_DT_FLOAT, 0, 0 },
    { "norm.layer_fast_2056", K2(norm, norm_backward), 3, { NORM(1, 3, 2056), NORM(1, 2056), NORM(1, 2056) }, r_layer_norm, 0, 0, EFLA_DT_FLOAT, 0, 0 },
    { "norm.rms_fast_many_rows", K2(norm, norm_backward), 2, { NORM(1, 4000, 16), NORM(1, 16) }, r_rms_norm, 0, 0, EFLA_DT_FLOAT, 0, 10 },
    { "cross_entropy", K1(cross_entropy), 2, { NORM(2, 6, 5), TARGET(5, 6) }, r_cross_entropy, 0, 0, EFLA_DT_FLOAT, 0, 0 },
    { "cross_entropy.smoothing", K1(cross_entropy), 2, { NORM(2, 6, 5), TARGET(5, 6) }, r_cross_entropy, 0.1, 0, EFLA_DT_FLOAT, 0, 0 },
    { "cross_entropy.12x9", K1(cross_entropy), 2, { NORM(3, 12, 9), TARGET(9, 12) }, r_cross_entropy, 0, 0, EFLA_DT_FLOAT, 0, 0 },
    { "cross_entropy.12x9_smoothing", K1(cross_entropy), 2, { NORM(3, 12, 9), TARGET(9, 12) }, r_cross_entropy, 0.1, 0, EFLA_DT_FLOAT, 0, 0 },
    { "cross_entropy.wide", K1(cross_entropy), 2, { NORM(2, 9, 1500), TARGET(1500, 9) }, r_cross_entropy, 0.05, 0, EFLA_DT_FLOAT, 0, 0 },
    { "copy.cat", K1(copy), 2, { NORM(1, 3, 4), NORM_T(1, 3, 2) }, r_cat, 0, 1, EFLA_DT_FLOAT, 0, 0 },
    { "copy.stack", K1(copy), 2, { NORM(1, 3, 4), NORM(1, 3, 4) }, r_stack, 0, 1, EFLA_DT_FLOAT, 0, 0 },
    { "gather.int64", K1(gather), 2, { INTS(4, 6), INDEX(6, 4, 3) }, r_gather, 0, 1, EFLA_DT_I64, 0, 0 },
    { "scatter_add.int64", K1(scatter_add), 3, { INTS(4, 3), INTS(6, 3), INDEX(4, 6, 3) }, r_scatter_add, 0, 0, EFLA_DT_I64, 0, 0 },
    { "index_select", K2(index_select, index_add), 2, { NORM(1, 5, 4), INDEX(5, 7) }, r_index_select, 0, 0, EFLA_DT_FLOAT, 0, 0 },
    { "index_select.dim1", K2(index_select, index_add), 2, { NORM_T(1, 3, 6), INDEX(3, 5) }, r_index_select, 0, 1, EFLA_DT_FLOAT, 0, 0 },
    { "index_select.int64", K1(index_select), 2, { INTS(5, 4), INDEX(5, 7) }, r_index_select, 0, 0, EFLA_DT_I64, 0, 0 },
    { "index_select.embedding", K2(index_select, index_add), 2, { NORM(1, 9, 4), INDEX(9, 2, 5) }, r_embedding, 0, 0, EFLA_DT_FLOAT, 0, 0 },
    { "gather", K2(gather, scatter_add), 2, { NORM(1, 4, 6), INDEX(6, 4, 3) }, r_gather, 0, 1, EFLA_DT_FLOAT, 0, 0 },
    { "scatter_add", K2(scatter_add, gather), 3, { NORM(1, 4, 3), NORM(1, 6, 3), INDEX(4, 6, 3) }, r_scatter_add, 0, 0, EFLA_DT_FLOAT, 0, 0 },
    { "adamw", K1(adamw), 4, { NORM_NG(1, 7, 5), NORM_NG(1, 7, 5), NORM_NG(0.1, 7, 5), NORM_NG(0.01, 7, 5) }, r_adamw, 0, 0, EFLA_DT_FLOAT, 0, 0 },
    { "foreach_sum_squares", K1(foreach_sum_squares), 4, { NORM_NG(1, 7, 5), NORM_NG(2, 33), NORM_NG(1, 3, 2, 4), NORM_NG(0.5, 6) }, r_foreach_sum_squares, 0, 0, EFLA_DT_FLOAT, 0, 0 },
    { "foreach_sum_squares.many_chunks", K1(foreach_sum_squares), 4, { NORM_NG(1, 201, 199), NORM_NG(1, 70001), NORM_NG(1, 5, 9), NORM_NG(1, 20000) }, r_foreach_sum_squares, 0, 0, EFLA_DT_FLOAT, 0, 0 },
    { "foreach_adamw", K1(foreach_adamw), 4, { NORM_NG(1, 7, 5), NORM_NG(1, 7, 5), NORM_NG(0.1, 7, 5), NORM_NG(0.01, 7, 5) }, r_foreach_adamw, 0, 0, EFLA_DT_FLOAT, 0, 0 },
    { "foreach_adamw.many_chunks", K1(foreach_adamw), 4, { NORM_NG(1, 201, 199), NORM_NG(1, 201, 199), NORM_NG(0.1, 201, 199), NORM_NG(0.01, 201, 199) }, r_foreach_adamw, 0, 0, EFLA_DT_FLOAT, 0, 0 },
    { "foreach_scale", K1(foreach_scale), 2, { NORM_NG(1, 7, 5), NORM_NG(1, 33) }, r_foreach_scale, 0.37, 0, EFLA_DT_FLOAT, 0, 0 },
    { "foreach_scale.many_chunks", K1(foreach_scale), 2, { NORM_NG(1, 201, 199), NORM_NG(1, 70001) }, r_foreach_scale, -1.7, 0, EFLA_DT_FLOAT, 0, 0 },
    { "cumsum", K1(cumsum), 1, { NORM_T(1, 4, 6) }, r_cumsum, 0, 1, EFLA_DT_FLOAT, 0, 0 },
    { "cumsum.dim0_int64", K1(cumsum), 1, { INTS(5, 3) }, r_cumsum, 0, 0, EFLA_DT_I64, 0, 0 },
    { "sort", K1(sort), 1, { NORM_NG(1, 3, 9) }, r_sort, 0, 0, EFLA_DT_F32_F64, 0, 0 },
    { "sort.descending", K1(sort), 1, { NORM_NG(1, 3, 9) }, r_sort, 0, 1, EFLA_DT_F32_F64, 0, 0 },
    /* fused layers */
    { "swiglu", K2(swiglu, swiglu_backward), 2, { NORM(1, 3, 5, 4), NORM(1, 3, 5, 4) }, r_swiglu, 0, 0, EFLA_DT_FLOAT, 0, 0 },
    { "swiglu.linear", K2(swiglu, swiglu_backward), 3, { NORM(1, 3, 8), NORM(1, 3, 8), NORM(0.3, 5, 8) }, r_swiglu_linear, 0, 0, EFLA_DT_FLOAT, 0, 0 },
    { "swiglu.wide", K2(swiglu, swiglu_backward), 2, { NORM(1, 3, 1000), NORM(1, 3, 1000) }, r_swiglu, 0, 0, EFLA_DT_FLOAT, 0, 10 },
    { "short_conv", K2(short_conv, short_conv_backward), 4, { NORM(1, 2, 5, 3), NORM(0.5, 3, 4), NORM(0.5, 3), NORM(1, 2, 3, 3) }, r_short_conv, 0, 0, EFLA_DT_FLOAT, 0, 0 },
    { "short_conv.big", K2(short_conv, short_conv_backward), 4, { NORM(1, 3, 37, 48), NORM(0.5, 48, 4), NORM(0.5, 48), NORM(1, 3, 3, 48) }, r_short_conv, 0, 0, EFLA_DT_FLOAT, 0, 0 },
    /* the fast path over several time tiles (32 forward, 64 backward), K = 3 and 2 */
    { "short_conv.long_k3", K2(short_conv, short_conv_backward), 4, { NORM(1, 2, 150, 10), NORM(0.5, 10, 3), NORM(0.5, 10), NORM(1, 2, 2, 10) }, r_short_conv, 0, 0, EFLA_DT_FLOAT, 0, 10 },
    { "short_conv.long_k2", K2(short_conv, short_conv_backward), 4, { NORM(1, 1, 130, 260), NORM(0.5, 260, 2), NORM(0.5, 260), NORM(1, 1, 1, 260) }, r_short_conv, 0, 0, EFLA_DT_FLOAT, 0, 10 },
    { "l2norm", K2(l2norm, l2norm_backward), 1, { NORM(1, 3, 2, 6) }, r_l2_norm, 0, 0, EFLA_DT_FLOAT, 0, 0 },
    { "rms_norm_gated", K2(rms_norm_gated, rms_norm_gated_backward), 3, { NORM(1, 2, 3, 6), NORM(1, 2, 3, 6), NORM(1, 6) }, r_rms_norm_gated, 0, 0, EFLA_DT_FLOAT, 0, 0 },
    { "rms_norm_gated.big", K2(rms_norm_gated, rms_norm_gated_backward), 3, { NORM(1, 3, 37, 48), NORM(1, 3, 37, 48), NORM(1, 48) }, r_rms_norm_gated, 0, 0, EFLA_DT_FLOAT, 0, 0 },
    { "embedding", K2(embedding, embedding_backward), 2, { NORM(1, 6, 4), INDEX(6, 3, 5) }, r_embedding_lookup, 0, 0, EFLA_DT_FLOAT, 0, 0 },
    { "ce_rows", K2(ce_rows, bmm), 3, { NORM(1, 5, 4), NORM(0.5, 7, 4), TARGET(7, 5) }, r_linear_ce, 0, 0, EFLA_DT_FLOAT, 0, 0 },
    { "ce_rows.warp", K2(ce_rows, bmm), 3, { NORM(1, 45, 48), NORM(0.1, 300, 48), TARGET(300, 45) }, r_linear_ce, 0, 0, EFLA_DT_FLOAT, 0, 0 },
    { "ce_rows.wide", K2(ce_rows, bmm), 3, { NORM(1, 45, 48), NORM(0.1, 1500, 48), TARGET(1500, 45) }, r_linear_ce, 0, 0, EFLA_DT_FLOAT, 0, 0 },
};

static case_spec *add_case(const case_spec *c) {
    if (n_cases == (int)(sizeof cases / sizeof cases[0])) { fprintf(stderr, "FATAL: the case table is full\n"); exit(1); }
    cases[n_cases] = *c;
    return &cases[n_cases++];
}

/* The fixed rows, plus one row per unary, binary and reduce op (their enums are the list). */
static void build_table(void) {
    for (size_t i = 0; i < sizeof fixed_cases / sizeof fixed_cases[0]; i++) add_case(&fixed_cases[i]);
    for (int op = 0; op < EFLA_UNARY_COUNT; op++) {
        int pos = op == EFLA_LOG || op == EFLA_LOG1P || op == EFLA_SQRT || op == EFLA_RSQRT || op == EFLA_RECIPROCAL;
        case_spec c = { .kernels = { EFLA_OP_unary }, .n_kernels = 1, .n_in = 1, .run = r_unary, .i = op,
                        .dtypes = EFLA_DT_FLOAT };
        c.in[0] = pos ? (input_spec)POS_T(2, 7, 6) : (input_spec)NORM_T(2, 7, 6);
        snprintf(c.name, sizeof c.name, "unary.%s", efla_unary_name((efla_unary_op)op));
        add_case(&c);
        if (op == EFLA_NEG || op == EFLA_ABS || op == EFLA_SIGN || op == EFLA_SQUARE || op == EFLA_RELU) {
            c.in[0] = (input_spec)INTS(7, 6);
            c.dtypes = EFLA_DT_I64;
            snprintf(c.name, sizeof c.name, "unary.%s_int64", efla_unary_name((efla_unary_op)op));
            add_case(&c);
        }
    }
    for (int op = 0; op < EFLA_BINARY_COUNT; op++) {
        int cmp = op >= EFLA_EQ;
        /* a [3,1,5] strided, b [4,5]: broadcast both ways */
        case_spec c = { .kernels = { EFLA_OP_binary }, .n_kernels = 1, .n_in = 2, .run = r_binary, .i = op,
                        .dtypes = EFLA_DT_NUM };
        c.in[0] = op == EFLA_POW ? (input_spec)POS(1.5, 3, 1, 5) : (input_spec)NORM(2, 3, 1, 5);
        c.in[1] = op == EFLA_POW ? (input_spec)NORM_T(1, 4, 5) : (input_spec)NORM_T(2, 4, 5);
        if (cmp) c.in[0].grad = c.in[1].grad = 0;
        snprintf(c.name, sizeof c.name, "binary.%s", efla_binary_name((efla_binary_op)op));
        add_case(&c);
        if (!cmp) {   /* contiguous, same shape, 8 | n: the eight-a-thread path of float32/bfloat16 */
            case_spec v = c;
            v.in[0] = op == EFLA_POW ? (input_spec)POS(1.5, 6, 8) : (input_spec)NORM(2, 6, 8);
            v.in[1] = op == EFLA_POW ? (input_spec)NORM(1, 6, 8) : (input_spec)NORM(2, 6, 8);
            v.dtypes = EFLA_DT_FLOAT;
            snprintf(v.name, sizeof v.name, "binary.%s_contiguous", efla_binary_name((efla_binary_op)op));
            add_case(&v);
        }
        if (op == EFLA_POW) continue;   /* integer powers of negative bases: covered by the float row */
        c.in[0] = (input_spec)INTS(3, 1, 5);
        c.in[1] = (input_spec)INTS(4, 5);
        c.dtypes = EFLA_DT_I64;
        if (op == EFLA_DIV) c.in[1] = (input_spec){ IN_POSITIVE, 2, { 4, 5 }, 3, 0, 0 };   /* no zero divisors */
        snprintf(c.name, sizeof c.name, "binary.%s_int64", efla_binary_name((efla_binary_op)op));
        add_case(&c);
    }
    /* reductions: over every dim, dim 1 kept, dims {0,2}, the last dim; contiguous and strided */
    static const struct { int mask; int keep; const char *tag; } dimsets[] = {
        { 0, 0, "all" }, { 2, 1, "dim1_keep" }, { 5, 0, "dims02" }, { 4, 0, "dim2" } };
    for (int op = 0; op < EFLA_REDUCE_COUNT; op++) {
        int arg = op == EFLA_ARGMAX || op == EFLA_ARGMIN;
        double param = op == EFLA_VAR ? 1 : op == EFLA_NORM ? 2 : 0;
        for (int l = 0; l < 4; l++)
            for (int strided = 0; strided < 2; strided++) {
                if (arg && (dimsets[l].mask == 0 || dimsets[l].mask == 5)) continue;   /* exactly one dim */
                case_spec c = { .kernels = { EFLA_OP_reduce }, .n_kernels = 1, .n_in = 1, .run = r_reduce,
                                .p = param, .i = op | dimsets[l].keep << 8 | dimsets[l].mask << 9, .dtypes = EFLA_DT_FLOAT };
                c.in[0] = op == EFLA_PROD ? (input_spec)POS(0.5, 4, 6, 5) : (input_spec)NORM(1.5, 4, 6, 5);
                if (strided) c.in[0].layout = LAYOUT_TRANSPOSED;
                if (arg) c.in[0].grad = 0;
                snprintf(c.name, sizeof c.name, "reduce.%s.%s%s", efla_reduce_name((efla_reduce_op)op), dimsets[l].tag,
                         strided ? "_strided" : "");
                add_case(&c);
            }
    }
    /* the other parameters: unbiased/biased variance, p-norms */
    const struct { efla_reduce_op op; double p; const char *tag; } params[] = {
        { EFLA_VAR, 0, "var.biased" }, { EFLA_NORM, 1, "norm.p1" }, { EFLA_NORM, 3, "norm.p3" }, { EFLA_NORM, INFINITY, "norm.inf" } };
    for (int k = 0; k < 4; k++) {
        case_spec c = { .kernels = { EFLA_OP_reduce }, .n_kernels = 1, .n_in = 1, .run = r_reduce, .p = params[k].p,
                        .i = params[k].op | 2 << 9, .dtypes = EFLA_DT_FLOAT };
        c.in[0] = (input_spec)NORM_T(1.5, 4, 6, 5);
        snprintf(c.name, sizeof c.name, "reduce.%s", params[k].tag);
        add_case(&c);
    }
    /* integers (exact) */
    const efla_reduce_op iops[6] = { EFLA_SUM, EFLA_PROD, EFLA_MAX, EFLA_MIN, EFLA_ARGMAX, EFLA_ARGMIN };
    for (int k = 0; k < 6; k++)
        for (int all = 0; all < 2; all++) {
            if (all && k >= 4) continue;
            case_spec c = { .kernels = { EFLA_OP_reduce }, .n_kernels = 1, .n_in = 1, .run = r_reduce,
                            .i = iops[k] | (all ? 0 : 2 << 9), .dtypes = EFLA_DT_I64 };
            c.in[0] = (input_spec)INTS(4, 6, 5);
            snprintf(c.name, sizeof c.name, "reduce.%s.int64%s", efla_reduce_name(iops[k]), all ? "_all" : "");
            add_case(&c);
        }
    /* the long-reduction paths: one huge sum split over blocks, long rows, columns (no gradients) */
    const struct { efla_reduce_op op; int nd; int64_t s0, s1; int mask, keep; double p; const char *tag; } longs[] = {
        { EFLA_SUM, 1, (1 << 20) + 17, 0, 0, 0, 0, "sum.1M" }, { EFLA_MEAN, 1, (1 << 20) + 17, 0, 0, 0, 0, "mean.1M" },
        { EFLA_MAX, 1, (1 << 20) + 17, 0, 0, 0, 0, "max.1M" }, { EFLA_VAR, 1, (1 << 20) + 17, 0, 0, 0, 1, "var.1M" },
        { EFLA_LOGSUMEXP, 1, (1 << 20) + 17, 0, 0, 0, 0, "logsumexp.1M" }, { EFLA_ARGMIN, 1, (1 << 20) + 17, 0, 1, 0, 0, "argmin.1M" },
        { EFLA_SUM, 2, 8, 30000, 2, 0, 0, "sum.long_rows" }, { EFLA_NORM, 2, 8, 30000, 2, 0, 2, "norm.long_rows" },
        { EFLA_SUM, 2, 5000, 96, 1, 0, 0, "sum.columns" }, { EFLA_MAX, 2, 5000, 96, 1, 1, 0, "max.columns" },
        { EFLA_VAR, 2, 5000, 96, 1, 0, 1, "var.columns" } };
    for (size_t k = 0; k < sizeof longs / sizeof longs[0]; k++) {
        case_spec c = { .kernels = { EFLA_OP_reduce }, .n_kernels = 1, .n_in = 1, .run = r_reduce, .p = longs[k].p,
                        .i = longs[k].op | longs[k].keep << 8 | longs[k].mask << 9, .dtypes = EFLA_DT_F32 | EFLA_DT_F64 };
        c.in[0] = (input_spec){ IN_NORMAL, longs[k].nd, { longs[k].s0, longs[k].s1 }, 1, 0, 0 };
        snprintf(c.name, sizeof c.name, "reduce.%s", longs[k].tag);
        add_case(&c);
    }
}

/* ---- running a case -------------------------------------------------------------------------- */
static double tol_out(efla_dtype dt) {
    return dt == EFLA_FLOAT32 ? 2e-5 : dt == EFLA_BFLOAT16 ? 2e-2 : dt == EFLA_FLOAT64 ? 1e-10 : 1e-5;
}
static double tol_grad(efla_dtype dt) {
    return dt == EFLA_FLOAT32 ? 1e-4 : dt == EFLA_BFLOAT16 ? 5e-2 : 1e-10;
}

static int selected(const case_spec *c) {
    if (!n_filters) return 1;
    for (int f = 0; f < n_filters; f++) {
        size_t n = strlen(filters[f]);
        if (!strcmp(c->name, filters[f]) || (!strncmp(c->name, filters[f], n) && c->name[n] == '.')) return 1;
        for (int k = 0; k < c->n_kernels; k++)
            if (!strcmp(efla_backend_op_name(c->kernels[k]), filters[f])) return 1;
    }
    return 0;
}

/* the float64 CPU values of input i (drawn once per case) */
static efla_tensor *draw_input(const input_spec *s) {
    const int64_t *shape = s->shape;
    efla_tensor *t = NULL;
    switch (s->kind) {
    case IN_NORMAL:
    case IN_POSITIVE: {
        efla_tensor *r = MUST(efla_randn(s->nd, shape, EFLA_FLOAT64, EFLA_DEVICE_CPU));
        efla_tensor *a = s->kind == IN_POSITIVE ? MUST(efla_unary(EFLA_ABS, r)) : (efla_tensor_retain(r), r);
        efla_tensor *m = MUST(efla_binary_scalar(EFLA_MUL, a, s->scale, 0));
        t = s->kind == IN_POSITIVE ? MUST(efla_binary_scalar(EFLA_ADD, m, 0.1, 0)) : (efla_tensor_retain(m), m);
        efla_tensor_release(r); efla_tensor_release(a); efla_tensor_release(m);
        break;
    }
    case IN_INDEX:
    case IN_TARGET:
        t = MUST(efla_randint(0, (int64_t)s->scale, s->nd, shape, EFLA_DEVICE_CPU));
        if (s->kind == IN_TARGET && shape[0] > 3) {
            int64_t i0 = 1, i1 = shape[0] - 2;
            MUST_OK(efla_set(t, &i0, -100));
            MUST_OK(efla_set(t, &i1, -100));
        }
        break;
    case IN_MASK: {
        efla_tensor *r = MUST(efla_randint(0, 2, s->nd, shape, EFLA_DEVICE_CPU));
        t = MUST(efla_to(r, EFLA_BOOL, EFLA_DEVICE_CPU));
        efla_tensor_release(r);
        break;
    }
    case IN_INT_SMALL: {
        efla_tensor *r = MUST(efla_randint(-6, 7, s->nd, shape, EFLA_DEVICE_CPU));
        t = MUST(efla_to(r, EFLA_FLOAT64, EFLA_DEVICE_CPU));
        efla_tensor_release(r);
        break;
    }
    }
    return t;
}

/* an expanded input's values repeat along dim 0 */
static efla_tensor *draw_values(const input_spec *s) {
    if (s->layout != LAYOUT_EXPANDED) return draw_input(s);
    input_spec one_row = *s;
    one_row.shape[0] = 1;
    efla_tensor *r = draw_input(&one_row), *e = MUST(efla_expand(r, s->nd, s->shape)), *c = MUST(efla_contiguous(e));
    efla_tensor_release(r); efla_tensor_release(e);
    return c;
}

static int is_data(const input_spec *s) { return s->kind == IN_NORMAL || s->kind == IN_POSITIVE || s->kind == IN_INT_SMALL; }

/* value (float64 CPU) as the tensor a case gets: data inputs in dtype dt, the others in their
 * own dtype; on `device`; strided when the row says so; requires_grad when asked */
static efla_tensor *make_input(const input_spec *s, const efla_tensor *value, efla_dtype dt, int device, int want_grad) {
    efla_dtype d = is_data(s) ? dt : efla_tensor_dtype(value);
    efla_tensor *t;
    int nd = s->nd;
    if (s->layout == LAYOUT_TRANSPOSED && nd >= 2) {
        efla_tensor *tr = MUST(efla_transpose(value, nd - 2, nd - 1));
        efla_tensor *c = MUST(efla_contiguous(tr));
        efla_tensor *moved = MUST(efla_to(c, d, device));
        t = MUST(efla_transpose(moved, nd - 2, nd - 1));
        efla_tensor_release(tr); efla_tensor_release(c); efla_tensor_release(moved);
    } else if (s->layout == LAYOUT_NARROWED) {
        int64_t wide[EFLA_MAX_DIMS];
        memcpy(wide, s->shape, sizeof(int64_t) * (size_t)nd);
        wide[nd - 1] += 5;
        efla_tensor *buf = MUST(efla_zeros(nd, wide, d, device));
        t = MUST(efla_narrow(buf, nd - 1, 2, s->shape[nd - 1]));
        MUST_OK(efla_copy_(t, value));
        efla_tensor_release(buf);
    } else if (s->layout == LAYOUT_EXPANDED) {
        efla_tensor *row = MUST(efla_narrow(value, 0, 0, 1)), *moved = MUST(efla_to(row, d, device));
        efla_tensor *c = MUST(efla_contiguous(moved));
        t = MUST(efla_expand(c, nd, s->shape));
        efla_tensor_release(row); efla_tensor_release(moved); efla_tensor_release(c);
    } else {
        t = MUST(efla_to(value, d, device));
        if (t == value) { efla_tensor_release(t); t = MUST(efla_clone(value)); }
    }
    if (want_grad) MUST_OK(efla_set_requires_grad(t, 1));
    return t;
}

/* data inputs rounded through dt (what the device sees), in float64 on the CPU */
static efla_tensor *rounded(const input_spec *s, const efla_tensor *v, efla_dtype dt) {
    if (!is_data(s)) { efla_tensor_retain((efla_tensor *)v); return (efla_tensor *)v; }
    efla_tensor *r = MUST(efla_to(v, dt, EFLA_DEVICE_CPU)), *b = MUST(efla_to(r, EFLA_FLOAT64, EFLA_DEVICE_CPU));
    efla_tensor_release(r);
    return b;
}

typedef struct {
    efla_tensor *out[MAX_OUT];
    int n_out;
    efla_tensor *grad[MAX_IN];
} result;

static void result_free(result *r) {
    for (int k = 0; k < MAX_OUT; k++) efla_tensor_release(r->out[k]);
    for (int k = 0; k < MAX_IN; k++) efla_tensor_release(r->grad[k]);
    memset(r, 0, sizeof *r);
}

static int wants_grad(const case_spec *c, int i, efla_dtype dt) {
    return c->in[i].grad && is_data(&c->in[i]) && efla_dtype_is_floating(dt);
}

/* Runs the case on (device, dt) with the given float64 values; gradients of sum(out[0] * w). */
static int run_case(const case_spec *c, efla_tensor *const *values, efla_dtype dt, int device,
                    const efla_tensor *w, result *r) {
    run_args a = { .dtype = dt, .device = device, .p = c->p, .i = c->i };
    memset(r, 0, sizeof *r);
    int any_grad = 0;
    for (int i = 0; i < c->n_in; i++) {
        a.in[i] = make_input(&c->in[i], values[i], dt, device, wants_grad(c, i, dt));
        any_grad |= wants_grad(c, i, dt);
    }
    int rc = 0;
    r->n_out = c->run(&a, r->out);
    if (r->n_out < 0) { rc = -1; goto out; }
    if (any_grad && w) {
        efla_tensor *wd = MUST(efla_to(w, efla_tensor_dtype(r->out[0]), device));
        rc = efla_backward(r->out[0], wd, 0);
        efla_tensor_release(wd);
        for (int i = 0; i < c->n_in && !rc; i++)
            if (wants_grad(c, i, dt)) {
                r->grad[i] = efla_grad(a.in[i]);
                if (!r->grad[i]) { rc = -1; efla_clear_error(); fprintf(stderr, "  %s: input %d got no gradient\n", c->name, i); }
            }
    }
out:
    for (int i = 0; i < c->n_in; i++) efla_tensor_release(a.in[i]);
    return rc;
}

/* finite differences on the float64 CPU reference */
typedef struct { const case_spec *c; } fd_ctx;
static efla_tensor *fd_forward(efla_tensor *const *in, const void *ctx) {
    const case_spec *c = ((const fd_ctx *)ctx)->c;
    run_args a = { .dtype = EFLA_FLOAT64, .device = EFLA_DEVICE_CPU, .p = c->p, .i = c->i };
    for (int i = 0; i < c->n_in; i++) a.in[i] = in[i];
    efla_tensor *out[MAX_OUT] = { 0 };
    int n = c->run(&a, out);
    if (n < 0) return NULL;
    for (int k = 1; k < n; k++) efla_tensor_release(out[k]);
    return out[0];
}
static efla_tensor *fd_weights(int nd, const int64_t *shape) { return MUST(efla_randn(nd, shape, EFLA_FLOAT64, EFLA_DEVICE_CPU)); }

static void check_reference_gradients(const case_spec *c, efla_tensor *const *values) {
    int64_t total = 0, any = 0;
    efla_tensor *in[MAX_IN] = { 0 };
    for (int i = 0; i < c->n_in; i++) {
        in[i] = make_input(&c->in[i], values[i], EFLA_FLOAT64, EFLA_DEVICE_CPU, wants_grad(c, i, EFLA_FLOAT64));
        if (wants_grad(c, i, EFLA_FLOAT64)) { total += efla_tensor_numel(in[i]); any = 1; }
    }
    if (any && total <= 400) {
        fd_ctx ctx = { c };
        double e = fd_gradcheck(fd_forward, c->n_in, in, &ctx, fd_weights);
        CHECK(e <= 1e-6, "%s: float64 cpu gradients vs finite differences: %.3g", c->name, e);
        if (verbose) printf("  %-32s cpu float64 gradients vs finite differences %.2g\n", c->name, e);
    }
    for (int i = 0; i < c->n_in; i++) efla_tensor_release(in[i]);
}

static int supported(const case_spec *c, int kind, efla_dtype dt) {
    if (!(c->dtypes & (1u << dt))) return 0;
    for (int k = 0; k < c->n_kernels; k++)
        if (!efla_backend_supports_op(kind, c->kernels[k], dt)) return 0;
    return 1;
}

static int n_compared;

/* ||a - b|| / ||b|| (bfloat16: a one-ulp flip in an intermediate can move single elements
 * by more than the tolerance, the whole tensor not) */
static double norm_rel_diff(const efla_tensor *a, const efla_tensor *b) {
    double *pa = to_doubles(a), *pb = to_doubles(b), num = 0, den = 0;
    for (int64_t i = 0; i < efla_tensor_numel(b); i++) {
        num += (pa[i] - pb[i]) * (pa[i] - pb[i]);
        den += pb[i] * pb[i];
    }
    free(pa); free(pb);
    return isnan(num) ? INFINITY : sqrt(num) / fmax(sqrt(den), 1e-30);
}

/* got against the reference: elementwise |a-b| / max(1, |b|) <= tol; bfloat16: by norm, with
 * single elements allowed 10 tol */
static void compare(const char *what, const char *label, const efla_tensor *got, const efla_tensor *ref, double tol,
                    efla_dtype dt) {
    int shaped = efla_tensor_ndim(got) == efla_tensor_ndim(ref) && efla_tensor_numel(got) == efla_tensor_numel(ref);
    double e = shaped ? max_rel_diff(got, ref) : INFINITY;
    if (dt == EFLA_BFLOAT16 && tol > EXACT) {
        double en = shaped ? norm_rel_diff(got, ref) : INFINITY;
        CHECK(en <= tol && e <= 10 * tol, "%s: %s differs from the float64 cpu by %.3g by norm, %.3g at worst "
              "(tolerances %.1g, %.1g)", what, label, en, e, tol, 10 * tol);
    } else {
        CHECK(e <= tol, "%s: %s differs from the float64 cpu by %.3g (tolerance %.1g)", what, label, e, tol);
    }
    if (verbose) printf("  %-40s %-20s %.2g\n", what, label, e);
    n_compared++;
}

static void test_case(const case_spec *c, int n_kinds) {
    efla_manual_seed(0x5eed + (uint64_t)(c - cases));
    efla_tensor *values[MAX_IN] = { 0 };
    for (int i = 0; i < c->n_in; i++) values[i] = draw_values(&c->in[i]);
    check_reference_gradients(c, values);
    efla_tensor *w = NULL;
    for (int kind = 0; kind < n_kinds; kind++) {
        if (only_backend >= 0 && kind != only_backend) continue;
        int device = kind ? EFLA_DEVICE_CUDA0 : EFLA_DEVICE_CPU;
        for (int d = 0; d <= EFLA_BOOL; d++) {
            efla_dtype dt = (efla_dtype)d;
            if (!supported(c, kind, dt)) continue;
            /* the reference: float64 on the CPU, from the values as rounded to dt */
            efla_tensor *rv[MAX_IN] = { 0 };
            for (int i = 0; i < c->n_in; i++) rv[i] = rounded(&c->in[i], values[i], dt);
            result ref, got;
            efla_dtype ref_dt = c->ref_same_dtype || !efla_dtype_is_floating(dt) ? dt : EFLA_FLOAT64;
            if (run_case(c, rv, ref_dt, EFLA_DEVICE_CPU, NULL, &ref)) {
                CHECK(0, "%s: the cpu %s reference failed", c->name, efla_dtype_name(ref_dt));
                result_free(&ref);
                for (int i = 0; i < c->n_in; i++) efla_tensor_release(rv[i]);
                continue;
            }
            if (!w) {
                int64_t s[EFLA_MAX_DIMS];
                int nd = shape_of(ref.out[0], s);
                w = MUST(efla_randn(nd, s, EFLA_FLOAT64, EFLA_DEVICE_CPU));
            }
            result_free(&ref);
            MUST_OK(run_case(c, rv, ref_dt, EFLA_DEVICE_CPU, w, &ref));
            int rc = run_case(c, rv, dt, device, w, &got);
            char what[128];
            snprintf(what, sizeof what, "%s %s %s", c->name, kind ? "cuda" : "cpu", efla_dtype_name(dt));
            CHECK(rc == 0 && got.n_out == ref.n_out, "%s runs", what);
            double scale = c->tol_scale > 0 ? c->tol_scale : 1;
            for (int k = 0; rc == 0 && k < got.n_out; k++) {
                char label[16];
                snprintf(label, sizeof label, "output %d", k);
                compare(what, label, got.out[k], ref.out[k], tol_out(dt) * scale, dt);
            }
            for (int i = 0; rc == 0 && i < c->n_in; i++) {
                if (!wants_grad(c, i, dt)) continue;
                char label[32];
                snprintf(label, sizeof label, "gradient of input %d", i);
                compare(what, label, got.grad[i], ref.grad[i], tol_grad(dt) * scale, dt);
            }
            result_free(&ref);
            result_free(&got);
            for (int i = 0; i < c->n_in; i++) efla_tensor_release(rv[i]);
        }
    }
    efla_tensor_release(w);
    for (int i = 0; i < c->n_in; i++) efla_tensor_release(values[i]);
}

/* Every kernel of the op list is exercised by a row or exempt with a reason. */
static void test_coverage(void) {
    for (int op = 0; op < EFLA_OP_COUNT; op++) {
        int covered = 0;
        for (size_t e = 0; e < sizeof exempt / sizeof exempt[0]; e++) covered |= (int)exempt[e].op == op;
        for (int i = 0; i < n_cases && !covered; i++)
            for (int k = 0; k < cases[i].n_kernels; k++) covered |= (int)cases[i].kernels[k] == op;
        CHECK(covered, "kernel %s has a row in test_backend_ops.c (or an entry in `exempt`)", efla_backend_op_name(op));
    }
}

/* supports() answers: the query agrees with what the backends do */
static void test_supports(void) {
    CHECK(efla_backend_supports(0, "softmax", EFLA_FLOAT32) == 1, "cpu softmax float32");
    CHECK(efla_backend_supports(0, "delta_rule_fwd", EFLA_BFLOAT16) == 0, "cpu delta rule has no bfloat16");
    CHECK(efla_backend_supports(0, "delta_rule_alpha_fwd", EFLA_FLOAT32) == 0, "cpu has no alpha kernel");
    CHECK(efla_backend_supports(0, "delta_rule_alpha_v_fwd", EFLA_FLOAT64) == 0, "cpu has no alpha' kernel");
    if (efla_device_count(1) >= 1)
        CHECK(efla_backend_supports(1, "delta_rule_alpha_v_bwd", EFLA_BFLOAT16) == 1, "cuda alpha' chain bfloat16");
    CHECK(efla_backend_supports(1, "cumsum", EFLA_FLOAT32) == 0, "cuda has no cumsum kernel");
    if (efla_device_count(1) >= 1)
        CHECK(efla_backend_supports(1, "softmax", EFLA_BFLOAT16) == 1, "cuda softmax bfloat16 with a device");
    CHECK_ERROR(efla_backend_supports(0, "softmaxx", EFLA_FLOAT32) < 0, "no kernel is called 'softmaxx'");
    CHECK_ERROR(efla_backend_supports(2, "softmax", EFLA_FLOAT32) < 0, "device kind 2");
    CHECK(efla_backend_op_count() == EFLA_OP_COUNT && efla_backend_op_name(EFLA_OP_COUNT) == NULL &&
          !strcmp(efla_backend_op_name(EFLA_OP_softplus), "softplus"), "op names");
    /* a kernel the list denies fails in the front end with the query's message */
    int64_t s[4] = { 1, 4, 1, 8 }, sb[3] = { 1, 4, 1 };
    efla_tensor *q = MUST(efla_zeros(4, s, EFLA_BFLOAT16, EFLA_DEVICE_CPU)), *b = MUST(efla_zeros(3, sb, EFLA_BFLOAT16, EFLA_DEVICE_CPU));
    efla_delta_rule_opts o;
    efla_delta_rule_default_opts(&o);
    efla_tensor *out = NULL, *fs = NULL;
    CHECK_ERROR(efla_delta_rule(q, q, q, b, NULL, NULL, &o, &out, &fs) < 0, "bfloat16 is not supported on the cpu");
    efla_tensor_release(q); efla_tensor_release(b);
    /* softplus refuses a bad beta by name */
    efla_tensor *x = MUST(efla_zeros(1, s + 1, EFLA_FLOAT32, EFLA_DEVICE_CPU));
    CHECK_ERROR(efla_softplus(x, 0) == NULL, "beta must be a finite number > 0");
    CHECK_ERROR(efla_softplus(NULL, 1) == NULL, "the tensor is NULL");
    efla_tensor_release(x);
}

/* softplus against its definition, computed here in long double, where that does not
 * overflow, and against its limits (x and e^x) where it would */
static void test_softplus_reference(void) {
    const double xs[8] = { -1000, -40, -3.5, -1e-3, 0, 0.7, 25, 1000 }, betas[2] = { 1, 0.25 };
    int64_t n = 8;
    efla_tensor *x = MUST(efla_from_buffer(1, &n, EFLA_FLOAT64, xs, sizeof xs));
    for (int b = 0; b < 2; b++) {
        efla_tensor *y = MUST(efla_softplus(x, betas[b]));
        for (int64_t i = 0; i < n; i++) {
            long double z = (long double)betas[b] * xs[i];
            long double want = z > 60 ? z : z < -60 ? expl(z) : log1pl(expl(z));
            want /= betas[b];
            double got = get(y, &i);
            CHECK(fabsl(got - want) <= 1e-15L * fmaxl(fabsl(want), 1e-300L) + 1e-300L,
                  "softplus(%g, beta %g) = %.17g, want %.17Lg", xs[i], betas[b], got, want);
        }
        efla_tensor_release(y);
    }
    efla_tensor_release(x);
}

static void usage(const char *prog) {
    printf("usage: %s [-o NAME]... [-b cpu|cuda] [-v] [-l]\n"
           "  -o NAME  only the cases called NAME or NAME.*, or exercising kernel NAME\n"
           "  -b KIND  only that backend      -v  print every comparison      -l  list the cases\n", prog);
}

int main(int argc, char **argv) {
    int list = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-o") && i + 1 < argc && n_filters < 16) filters[n_filters++] = argv[++i];
        else if (!strcmp(argv[i], "-b") && i + 1 < argc) {
            const char *b = argv[++i];
            only_backend = !strcmp(b, "cpu") ? 0 : !strcmp(b, "cuda") ? 1 : -2;
            if (only_backend == -2) { usage(argv[0]); return 2; }
        } else if (!strcmp(argv[i], "-v")) verbose = 1;
        else if (!strcmp(argv[i], "-l")) list = 1;
        else { usage(argv[0]); return !strcmp(argv[i], "-h") || !strcmp(argv[i], "--help") ? 0 : 2; }
    }
    build_table();
    if (list) {
        for (int i = 0; i < n_cases; i++) printf("%s\n", cases[i].name);
        return 0;
    }
    int64_t live0 = efla_live_tensors();
    int n_kinds = efla_device_count(1) >= 1 ? 2 : 1;
    printf("backends: cpu%s\n", n_kinds == 2 ? ", cuda" : " (cuda: no device or not built; its rows are skipped)");
    if (!n_filters) { test_coverage(); test_supports(); test_softplus_reference(); }
    int run = 0;
    for (int i = 0; i < n_cases; i++)
        if (selected(&cases[i])) { test_case(&cases[i], n_kinds); run++; }
    CHECK(run > 0, "some case matches the filter");
    printf("%d cases, %d comparisons\n", run, n_compared);
    CHECK_NO_LEAK(live0);
    TEST_SUMMARY();
}

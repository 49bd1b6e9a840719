/* ops_elementwise.c: front ends of the elementwise family (unary, binary, scalar and
 * in-place binary, clamp, where, masked_fill, tril/triu) and their backward rules.
 *
 * Each front end checks its arguments, picks the result dtype, casts and broadcasts the
 * inputs into history-free views (stride 0 on broadcast dims), allocates the output and
 * calls the device's kernel with grad mode off; then it records an autograd node on the
 * original inputs. Backward rules use only public ops, so they run on any backend.
 *
 * Dtype rules:
 *  - binary: efla_promote_types(a, b); integer '/' gives float32; comparisons give bool.
 *  - binary_scalar: a's dtype; an integer tensor with a non-integral scalar (or '/') goes
 *    to float32, bool with an integral scalar to int64; comparisons of integer tensors
 *    with a scalar compute in int64 (float64 for a non-integral scalar). The scalar is
 *    rounded to the compute dtype first (so bfloat16 ops see a bfloat16 scalar).
 *  - unary: neg abs sign square relu keep integer dtypes (bool goes to int64); the rest
 *    promote integer inputs to float32. gelu is the exact erf form, 0.5·x·erfc(-x/√2).
 * Gradient conventions:
 *  - maximum/minimum: ties split the gradient evenly between a and b.
 *  - pow: d/da = b·a^(b-1), taken as 0 where b == 0; d/db = a^b·log(a), taken as 0 where
 *    a <= 0 (log undefined there).
 *  - clamp: gradient 1 where lo <= x <= hi (bounds included), else 0.
 *  - sign: zero gradient. relu at 0: zero. abs at 0: zero.
 */
#include "autograd.h"
#include "backend.h"
#include <math.h>
#include <string.h>

static const char *const unary_names[EFLA_UNARY_COUNT] = {
    "neg", "exp", "expm1", "log", "log1p", "sqrt", "rsqrt", "abs", "tanh", "sigmoid", "relu",
    "gelu", "silu", "sin", "cos", "sign", "square", "reciprocal" };
static const char *const binary_names[EFLA_BINARY_COUNT] = {
    "add", "sub", "mul", "div", "pow", "maximum", "minimum", "eq", "ne", "lt", "le", "gt", "ge" };
static const char *const scalar_names[EFLA_BINARY_COUNT] = {
    "add_scalar", "sub_scalar", "mul_scalar", "div_scalar", "pow_scalar", "maximum_scalar",
    "minimum_scalar", "eq_scalar", "ne_scalar", "lt_scalar", "le_scalar", "gt_scalar", "ge_scalar" };
static const char *const inplace_names[EFLA_BINARY_COUNT] = {
    "add_", "sub_", "mul_", "div_", "pow_", "maximum_", "minimum_", "eq_", "ne_", "lt_", "le_",
    "gt_", "ge_" };

const char *efla_unary_name(efla_unary_op op) {
    return (unsigned)op < EFLA_UNARY_COUNT ? unary_names[op] : "?";
}
const char *efla_binary_name(efla_binary_op op) {
    return (unsigned)op < EFLA_BINARY_COUNT ? binary_names[op] : "?";
}

static int is_comparison(efla_binary_op op) { return op >= EFLA_EQ && op <= EFLA_GE; }
static int is_integral_unary(efla_unary_op op) {
    return op == EFLA_NEG || op == EFLA_ABS || op == EFLA_SIGN || op == EFLA_SQUARE || op == EFLA_RELU;
}

/* ---- helpers --------------------------------------------------------------------------- */
/* A view of t broadcast to `shape`, with no autograd history (stride 0 where it repeats). */
static efla_tensor *bcast_view(const efla_tensor *t, int nd, const int64_t *shape) {
    int64_t st[EFLA_MAX_DIMS];
    int lead = nd - t->ndim;
    for (int i = 0; i < nd; i++) {
        int j = i - lead;
        st[i] = (j < 0 || (t->shape[j] == 1 && shape[i] != 1)) ? 0 : t->strides[j];
    }
    return efla_tensor_make_view(t->storage, t->offset, nd, shape, st, t->dtype, t->device);
}

/* t cast to `dt` and broadcast to `shape`; call with grad mode off. */
static efla_tensor *operand(const efla_tensor *t, efla_dtype dt, int nd, const int64_t *shape) {
    efla_tensor *c = efla_to(t, dt, t->device);
    if (!c) return NULL;
    efla_tensor *v = bcast_view(c, nd, shape);
    efla_tensor_release(c);
    return v;
}

/* Declares `be`: the backend of `device`, or NULL (with an error) when it lacks kernel `field`. */
#define BACKEND_WITH(be, name, device, field) \
    const efla_backend *be = efla_backend_for(name, device); \
    if (be && !be->field) { efla_no_kernel(name, device); be = NULL; }

static int is_integral_value(double s) {
    return isfinite(s) && s == floor(s) && fabs(s) < 9.2e18;
}

/* A scratch list for backward rules: every temporary is kept here and released at the
 * end, and a NULL argument (an earlier failure) short-circuits the calls below. */
typedef struct { efla_tensor *t[32]; int n; int failed; } scratch;

static efla_tensor *keep(scratch *s, efla_tensor *t) {
    if (!t || s->n == 32) {
        if (t) { efla_tensor_release(t); efla_fail("backward: internal scratch list full"); }
        s->failed = 1;
        return NULL;
    }
    s->t[s->n++] = t;
    return t;
}
static void scratch_free(scratch *s) {
    for (int i = 0; i < s->n; i++) efla_tensor_release(s->t[i]);
    s->n = 0;
}
static efla_tensor *U(scratch *s, efla_unary_op op, const efla_tensor *x) {
    return x ? keep(s, efla_unary(op, x)) : NULL;
}
static efla_tensor *B(scratch *s, efla_binary_op op, const efla_tensor *x, const efla_tensor *y) {
    return x && y ? keep(s, efla_binary(op, x, y)) : NULL;
}
static efla_tensor *BS(scratch *s, efla_binary_op op, const efla_tensor *x, double v) {
    return x ? keep(s, efla_binary_scalar(op, x, v, 0)) : NULL;
}
static efla_tensor *SB(scratch *s, efla_binary_op op, double v, const efla_tensor *x) {
    return x ? keep(s, efla_binary_scalar(op, x, v, 1)) : NULL;
}
static efla_tensor *WHERE(scratch *s, const efla_tensor *c, const efla_tensor *x, const efla_tensor *y) {
    return c && x && y ? keep(s, efla_where(c, x, y)) : NULL;
}
static efla_tensor *MASKED(scratch *s, const efla_tensor *x, const efla_tensor *mask, double v) {
    return x && mask ? keep(s, efla_masked_fill(x, mask, v)) : NULL;
}
static efla_tensor *SAVED(scratch *s, efla_node *n, double slot) {
    return slot >= 0 ? keep(s, efla_node_saved(n, (int)slot)) : NULL;
}
static efla_tensor *ZEROS_LIKE(scratch *s, const efla_tensor *g) {
    return keep(s, efla_zeros(g->ndim, g->shape, g->dtype, g->device));
}
/* Hand gradient g (NULL: failure) to input i, summed back over broadcast dims. */
static int give(scratch *s, efla_node *n, int i, const efla_tensor *g, efla_tensor **gi) {
    if (!g) { s->failed = 1; return -1; }
    gi[i] = efla_sum_to_shape(g, n->in_meta[i].ndim, n->in_meta[i].shape);
    if (!gi[i]) { s->failed = 1; return -1; }
    return 0;
}
static int finish_backward(scratch *s) {
    int rc = s->failed ? -1 : 0;
    scratch_free(s);
    return rc;
}

/* Record a one-output node; on failure release out and return NULL. */
static efla_tensor *record(const char *name, efla_backward_fn fn, int n_in, efla_tensor *const *inputs,
                           efla_tensor *out, efla_node **node) {
    *node = NULL;
    if (efla_record1(name, fn, n_in, inputs, out, node)) { efla_tensor_release(out); return NULL; }
    return out;
}
/* Save t into node; params[pi] gets its slot. */
static int save_slot(efla_node *n, int pi, const efla_tensor *t) {
    int slot = efla_node_save(n, t);
    if (slot < 0) return -1;
    n->params[pi] = slot;
    return 0;
}

/* ---- unary ------------------------------------------------------------------------------- */
/* Which tensor the backward needs: 0 none, 1 the input x, 2 the output y. */
static int unary_saves(efla_unary_op op) {
    switch (op) {
    case EFLA_NEG: case EFLA_SIGN: return 0;
    case EFLA_EXP: case EFLA_EXPM1: case EFLA_SQRT: case EFLA_RSQRT: case EFLA_TANH:
    case EFLA_SIGMOID: case EFLA_RECIPROCAL: return 2;
    default: return 1;
    }
}

static int unary_backward(efla_node *n, efla_tensor *const *go, efla_tensor **gi) {
    efla_unary_op op = (efla_unary_op)n->params[0];
    const efla_tensor *g = go[0];
    scratch s = { .n = 0 };
    efla_tensor *x = unary_saves(op) ? SAVED(&s, n, n->params[1]) : NULL;   /* x or y */
    efla_tensor *r = NULL;
    switch (op) {
    case EFLA_NEG: r = U(&s, EFLA_NEG, g); break;
    case EFLA_EXP: r = B(&s, EFLA_MUL, g, x); break;                                   /* g y */
    case EFLA_EXPM1: r = B(&s, EFLA_MUL, g, BS(&s, EFLA_ADD, x, 1)); break;          /* g (y+1) */
    case EFLA_LOG: r = B(&s, EFLA_DIV, g, x); break;
    case EFLA_LOG1P: r = B(&s, EFLA_DIV, g, BS(&s, EFLA_ADD, x, 1)); break;
    case EFLA_SQRT: r = B(&s, EFLA_DIV, BS(&s, EFLA_MUL, g, 0.5), x); break;          /* g / 2y */
    case EFLA_RSQRT:                                                                  /* -g y^3 / 2 */
        r = B(&s, EFLA_MUL, BS(&s, EFLA_MUL, g, -0.5), B(&s, EFLA_MUL, x, U(&s, EFLA_SQUARE, x)));
        break;
    case EFLA_ABS: r = B(&s, EFLA_MUL, g, U(&s, EFLA_SIGN, x)); break;
    case EFLA_TANH: r = B(&s, EFLA_MUL, g, SB(&s, EFLA_SUB, 1, U(&s, EFLA_SQUARE, x))); break;
    case EFLA_SIGMOID: r = B(&s, EFLA_MUL, g, B(&s, EFLA_MUL, x, SB(&s, EFLA_SUB, 1, x))); break;
    case EFLA_RELU: r = B(&s, EFLA_MUL, g, BS(&s, EFLA_GT, x, 0)); break;
    case EFLA_GELU: {
        /* d/dx x·Φ(x) = Φ(x) + x·φ(x). Φ(x) = gelu(x)/x (accurate: gelu uses erfc), 1/2 at 0. */
        efla_tensor *cdf = MASKED(&s, B(&s, EFLA_DIV, U(&s, EFLA_GELU, x), x), BS(&s, EFLA_EQ, x, 0), 0.5);
        efla_tensor *pdf = BS(&s, EFLA_MUL, U(&s, EFLA_EXP, BS(&s, EFLA_MUL, U(&s, EFLA_SQUARE, x), -0.5)),
                              0.39894228040143267794);
        r = B(&s, EFLA_MUL, g, B(&s, EFLA_ADD, cdf, B(&s, EFLA_MUL, x, pdf)));
        break;
    }
    case EFLA_SILU: {   /* σ (1 + x (1 - σ)) */
        efla_tensor *sg = U(&s, EFLA_SIGMOID, x);
        r = B(&s, EFLA_MUL, g, B(&s, EFLA_MUL, sg, BS(&s, EFLA_ADD, B(&s, EFLA_MUL, x, SB(&s, EFLA_SUB, 1, sg)), 1)));
        break;
    }
    case EFLA_SIN: r = B(&s, EFLA_MUL, g, U(&s, EFLA_COS, x)); break;
    case EFLA_COS: r = B(&s, EFLA_MUL, g, U(&s, EFLA_NEG, U(&s, EFLA_SIN, x))); break;
    case EFLA_SIGN: r = ZEROS_LIKE(&s, g); break;
    case EFLA_SQUARE: r = B(&s, EFLA_MUL, g, BS(&s, EFLA_MUL, x, 2)); break;
    case EFLA_RECIPROCAL: r = B(&s, EFLA_MUL, U(&s, EFLA_NEG, g), U(&s, EFLA_SQUARE, x)); break;  /* -g y^2 */
    default: s.failed = 1; efla_fail("backward of unary: unknown op %d", (int)op);
    }
    give(&s, n, 0, r, gi);
    return finish_backward(&s);
}

efla_tensor *efla_unary(efla_unary_op op, const efla_tensor *t) {
    if ((unsigned)op >= EFLA_UNARY_COUNT)
        return efla_fail_null("unary: unknown op %d (0..%d)", (int)op, EFLA_UNARY_COUNT - 1);
    const char *name = unary_names[op];
    if (!t) return efla_fail_null("%s: the tensor is NULL", name);
    efla_dtype dt = t->dtype;
    if (!efla_dtype_is_floating(dt))
        dt = !is_integral_unary(op) ? EFLA_FLOAT32 : dt == EFLA_BOOL ? EFLA_INT64 : dt;
    BACKEND_WITH(be, name, t->device, unary);
    if (!be) return NULL;
    int prev = efla_set_grad_enabled(0);
    efla_tensor *in = efla_to(t, dt, t->device);
    efla_tensor *out = in ? efla_empty(t->ndim, t->shape, dt, t->device) : NULL;
    int rc = !out ? -1 : efla_tensor_numel(t) ? be->unary(op, out, in) : 0;
    efla_set_grad_enabled(prev);
    efla_tensor_release(in);
    if (rc) { efla_tensor_release(out); return NULL; }
    if (!efla_dtype_is_floating(dt)) return out;
    efla_node *n;
    if (!(out = record(name, unary_backward, 1, (efla_tensor *const *)&t, out, &n))) return NULL;
    if (n) {
        n->params[0] = op;
        int what = unary_saves(op);
        if (what && save_slot(n, 1, what == 1 ? t : out)) { efla_tensor_release(out); return NULL; }
    }
    return out;
}

/* ---- softplus ----------------------------------------------------------------------------------
 * y = log(1 + e^(beta x)) / beta (kernel: the backend's `softplus`); dy/dx = sigmoid(beta x).
 * params: [0] beta, [1] slot of x. */
static int softplus_backward(efla_node *n, efla_tensor *const *go, efla_tensor **gi) {
    scratch s = { .n = 0 };
    efla_tensor *x = SAVED(&s, n, n->params[1]);
    give(&s, n, 0, B(&s, EFLA_MUL, go[0], U(&s, EFLA_SIGMOID, BS(&s, EFLA_MUL, x, n->params[0]))), gi);
    return finish_backward(&s);
}

efla_tensor *efla_softplus(const efla_tensor *t, double beta) {
    if (!t) return efla_fail_null("softplus: the tensor is NULL");
    if (!(beta > 0) || isinf(beta)) return efla_fail_null("softplus: beta must be a finite number > 0, got %g", beta);
    efla_dtype dt = efla_dtype_is_floating(t->dtype) ? t->dtype : EFLA_FLOAT32;
    if (efla_check_kernel("softplus", EFLA_OP_softplus, t->device, dt, "cast the input to float32 first")) return NULL;
    const efla_backend *be = efla_backend_for("softplus", t->device);
    int prev = efla_set_grad_enabled(0);
    efla_tensor *in = efla_to(t, dt, t->device);
    efla_tensor *out = in ? efla_empty(t->ndim, t->shape, dt, t->device) : NULL;
    int rc = !out ? -1 : efla_tensor_numel(t) ? be->softplus(out, in, beta) : 0;
    efla_set_grad_enabled(prev);
    efla_tensor_release(in);
    if (rc) { efla_tensor_release(out); return NULL; }
    efla_node *n;
    if (!(out = record("softplus", softplus_backward, 1, (efla_tensor *const *)&t, out, &n))) return NULL;
    if (n) {
        n->params[0] = beta;
        if (save_slot(n, 1, t)) { efla_tensor_release(out); return NULL; }
    }
    return out;
}

/* ---- binary ------------------------------------------------------------------------------- */
/* out = a op b, both cast to `cd` and broadcast; no autograd. */
static efla_tensor *binary_forward(const char *name, efla_binary_op op, const efla_tensor *a,
                                   const efla_tensor *b, efla_dtype cd) {
    if (efla_check_same_device(name, a, b)) return NULL;
    int nd;
    int64_t shape[EFLA_MAX_DIMS];
    if (efla_broadcast_shapes(name, a->ndim, a->shape, b->ndim, b->shape, &nd, shape)) return NULL;
    BACKEND_WITH(be, name, a->device, binary);
    if (!be) return NULL;
    int prev = efla_set_grad_enabled(0);
    efla_tensor *av = operand(a, cd, nd, shape);
    efla_tensor *bv = av ? operand(b, cd, nd, shape) : NULL;
    efla_tensor *out = bv ? efla_empty(nd, shape, is_comparison(op) ? EFLA_BOOL : cd, a->device) : NULL;
    int rc = !out ? -1 : efla_numel_of(nd, shape) ? be->binary(op, out, av, bv) : 0;
    efla_set_grad_enabled(prev);
    efla_tensor_release(av);
    efla_tensor_release(bv);
    if (rc) { efla_tensor_release(out); return NULL; }
    return out;
}

/* params: [0] op, [1] slot of a, [2] slot of b, [3] slot of out (-1: not saved) */
static int binary_backward(efla_node *n, efla_tensor *const *go, efla_tensor **gi) {
    efla_binary_op op = (efla_binary_op)n->params[0];
    const efla_tensor *g = go[0];
    int need_a = efla_node_needs_grad(n, 0), need_b = efla_node_needs_grad(n, 1);
    scratch s = { .n = 0 };
    efla_tensor *a = SAVED(&s, n, n->params[1]), *b = SAVED(&s, n, n->params[2]);
    efla_tensor *out = SAVED(&s, n, n->params[3]);
    efla_tensor *ga = NULL, *gb = NULL;
    switch (op) {
    case EFLA_ADD: ga = (efla_tensor *)g; gb = ga; break;
    case EFLA_SUB: ga = (efla_tensor *)g; if (need_b) gb = U(&s, EFLA_NEG, g); break;
    case EFLA_MUL:
        if (need_a) ga = B(&s, EFLA_MUL, g, b);
        if (need_b) gb = B(&s, EFLA_MUL, g, a);
        break;
    case EFLA_DIV:   /* d/da = 1/b, d/db = -a/b^2 = -out/b */
        if (need_a) ga = B(&s, EFLA_DIV, g, b);
        if (need_b) gb = U(&s, EFLA_NEG, B(&s, EFLA_DIV, B(&s, EFLA_MUL, g, out), b));
        break;
    case EFLA_POW:
        if (need_a) {
            efla_tensor *d = B(&s, EFLA_MUL, b, B(&s, EFLA_POW, a, BS(&s, EFLA_SUB, b, 1)));
            ga = B(&s, EFLA_MUL, g, MASKED(&s, d, BS(&s, EFLA_EQ, b, 0), 0));
        }
        if (need_b) {
            efla_tensor *d = B(&s, EFLA_MUL, out, U(&s, EFLA_LOG, a));
            gb = B(&s, EFLA_MUL, g, MASKED(&s, d, BS(&s, EFLA_LE, a, 0), 0));
        }
        break;
    case EFLA_MAXIMUM:
    case EFLA_MINIMUM: {   /* weight for a: 1 where a wins, 1/2 on ties */
        efla_tensor *win = B(&s, op == EFLA_MAXIMUM ? EFLA_GT : EFLA_LT, a, b);
        efla_tensor *wa = B(&s, EFLA_ADD, win, BS(&s, EFLA_MUL, B(&s, EFLA_EQ, a, b), 0.5));
        efla_tensor *gwa = B(&s, EFLA_MUL, g, wa);
        ga = gwa;
        if (need_b) gb = B(&s, EFLA_SUB, g, gwa);
        break;
    }
    default: s.failed = 1; efla_fail("backward of binary: op %d has no gradient", (int)op);
    }
    if (need_a) give(&s, n, 0, ga, gi);
    if (need_b) give(&s, n, 1, gb, gi);
    return finish_backward(&s);
}

static efla_dtype binary_dtype(efla_binary_op op, efla_dtype a, efla_dtype b) {
    efla_dtype cd = efla_promote_types(a, b);
    if (op == EFLA_DIV && !efla_dtype_is_floating(cd)) cd = EFLA_FLOAT32;
    return cd;
}

efla_tensor *efla_binary(efla_binary_op op, const efla_tensor *a, const efla_tensor *b) {
    if ((unsigned)op >= EFLA_BINARY_COUNT)
        return efla_fail_null("binary: unknown op %d (0..%d)", (int)op, EFLA_BINARY_COUNT - 1);
    const char *name = binary_names[op];
    if (!a || !b) return efla_fail_null("%s: tensor %s is NULL", name, !a ? "a" : "b");
    efla_tensor *out = binary_forward(name, op, a, b, binary_dtype(op, a->dtype, b->dtype));
    if (!out || is_comparison(op)) return out;
    efla_tensor *inputs[2] = { (efla_tensor *)a, (efla_tensor *)b };
    efla_node *n;
    if (!(out = record(name, binary_backward, 2, inputs, out, &n))) return NULL;
    if (!n) return out;
    int need_a = efla_node_needs_grad(n, 0), need_b = efla_node_needs_grad(n, 1);
    int sa = 0, sb = 0, so = 0;   /* which tensors the backward will read */
    switch (op) {
    case EFLA_MUL: sa = need_b; sb = need_a; break;
    case EFLA_DIV: sb = 1; so = need_b; break;
    case EFLA_POW: sa = 1; sb = need_a; so = need_b; break;
    case EFLA_MAXIMUM: case EFLA_MINIMUM: sa = sb = 1; break;
    default: break;
    }
    n->params[0] = op;
    n->params[1] = n->params[2] = n->params[3] = -1;
    if ((sa && save_slot(n, 1, a)) || (sb && save_slot(n, 2, b)) || (so && save_slot(n, 3, out))) {
        efla_tensor_release(out);
        return NULL;
    }
    return out;
}

/* ---- binary with a scalar --------------------------------------------------------------------- */
static efla_dtype scalar_dtype(efla_binary_op op, efla_dtype a, double s) {
    if (efla_dtype_is_floating(a)) return a;
    int integral = is_integral_value(s);
    if (is_comparison(op)) return integral ? EFLA_INT64 : EFLA_FLOAT64;
    if (!integral || op == EFLA_DIV) return EFLA_FLOAT32;
    return a == EFLA_BOOL ? EFLA_INT64 : a;
}

/* params: [0] op, [1] s, [2] scalar_first, [3] slot of a, [4] slot of out */
static int scalar_backward(efla_node *n, efla_tensor *const *go, efla_tensor **gi) {
    efla_binary_op op = (efla_binary_op)n->params[0];
    double v = n->params[1];
    int sf = n->params[2] != 0;
    const efla_tensor *g = go[0];
    scratch s = { .n = 0 };
    efla_tensor *a = SAVED(&s, n, n->params[3]), *out = SAVED(&s, n, n->params[4]);
    efla_tensor *r = NULL;
    switch (op) {
    case EFLA_ADD: r = (efla_tensor *)g; break;
    case EFLA_SUB: r = sf ? U(&s, EFLA_NEG, g) : (efla_tensor *)g; break;
    case EFLA_MUL: r = BS(&s, EFLA_MUL, g, v); break;
    case EFLA_DIV:   /* a/v: g/v;  v/a: -g out / a */
        r = !sf ? BS(&s, EFLA_DIV, g, v) : U(&s, EFLA_NEG, B(&s, EFLA_DIV, B(&s, EFLA_MUL, g, out), a));
        break;
    case EFLA_POW:
        if (!sf)   /* a^v: g v a^(v-1); v == 0: 0 */
            r = v == 0 ? ZEROS_LIKE(&s, g) : B(&s, EFLA_MUL, g, BS(&s, EFLA_MUL, BS(&s, EFLA_POW, a, v - 1), v));
        else       /* v^a: g out log v; v <= 0: 0 */
            r = !(v > 0) ? ZEROS_LIKE(&s, g) : B(&s, EFLA_MUL, g, BS(&s, EFLA_MUL, out, log(v)));
        break;
    case EFLA_MAXIMUM:
    case EFLA_MINIMUM: {
        efla_tensor *win = BS(&s, op == EFLA_MAXIMUM ? EFLA_GT : EFLA_LT, a, v);
        efla_tensor *wa = B(&s, EFLA_ADD, win, BS(&s, EFLA_MUL, BS(&s, EFLA_EQ, a, v), 0.5));
        r = B(&s, EFLA_MUL, g, wa);
        break;
    }
    default: s.failed = 1; efla_fail("backward of binary_scalar: op %d has no gradient", (int)op);
    }
    give(&s, n, 0, r, gi);
    return finish_backward(&s);
}

efla_tensor *efla_binary_scalar(efla_binary_op op, const efla_tensor *a, double v, int scalar_first) {
    if ((unsigned)op >= EFLA_BINARY_COUNT)
        return efla_fail_null("binary_scalar: unknown op %d (0..%d)", (int)op, EFLA_BINARY_COUNT - 1);
    const char *name = scalar_names[op];
    if (!a) return efla_fail_null("%s: the tensor is NULL", name);
    efla_dtype cd = scalar_dtype(op, a->dtype, v);
    int prev = efla_set_grad_enabled(0);
    efla_tensor *st = efla_scalar(v, cd, a->device);
    efla_set_grad_enabled(prev);
    if (!st) return NULL;
    efla_tensor *out = scalar_first ? binary_forward(name, op, st, a, cd) : binary_forward(name, op, a, st, cd);
    efla_tensor_release(st);
    if (!out || is_comparison(op)) return out;
    efla_node *n;
    if (!(out = record(name, scalar_backward, 1, (efla_tensor *const *)&a, out, &n))) return NULL;
    if (!n) return out;
    int sa = 0, so = 0;
    switch (op) {
    case EFLA_DIV: sa = so = scalar_first; break;
    case EFLA_POW: sa = !scalar_first; so = scalar_first; break;
    case EFLA_MAXIMUM: case EFLA_MINIMUM: sa = 1; break;
    default: break;
    }
    double p[5] = { op, v, scalar_first != 0, -1, -1 };
    efla_node_set_params(n, 5, p);
    if ((sa && save_slot(n, 3, a)) || (so && save_slot(n, 4, out))) { efla_tensor_release(out); return NULL; }
    return out;
}

/* ---- in place ----------------------------------------------------------------------------------- */
int efla_binary_(efla_binary_op op, efla_tensor *a, const efla_tensor *b) {
    if ((unsigned)op >= EFLA_BINARY_COUNT)
        return efla_fail("binary_: unknown op %d (0..%d)", (int)op, EFLA_BINARY_COUNT - 1);
    const char *name = inplace_names[op];
    if (!a || !b) return efla_fail("%s: tensor %s is NULL", name, !a ? "a" : "b");
    if (efla_check_same_device(name, a, b)) return -1;
    int nd;
    int64_t shape[EFLA_MAX_DIMS];
    if (efla_broadcast_shapes(name, a->ndim, a->shape, b->ndim, b->shape, &nd, shape)) return -1;
    if (nd != a->ndim || memcmp(shape, a->shape, sizeof(int64_t) * (size_t)nd))
        return efla_fail("%s: the operand's shape %s does not broadcast to the destination's shape %s "
                         "(an in-place result keeps the destination's shape); use the out-of-place op",
                         name, efla_tshape(b), efla_tshape(a));
    if (efla_grad_enabled() && (a->requires_grad || b->requires_grad)) {
        if (a->requires_grad && !a->grad_fn)
            return efla_fail("%s: in-place write into a leaf tensor (shape %s) that requires grad; do it "
                             "with grad mode off (no_grad) or use the out-of-place op", name, efla_tshape(a));
        return efla_fail("%s: in-place op on a tensor that requires grad is not supported; use the "
                         "out-of-place op", name);
    }
    for (int d = 0; d < a->ndim; d++)
        if (a->strides[d] == 0 && a->shape[d] > 1)
            return efla_fail("%s: the destination (shape %s) is an expanded view in which several "
                             "elements share memory; clone() it first", name, efla_tshape(a));
    BACKEND_WITH(be, name, a->device, binary);
    if (!be) return -1;
    if (!be->copy) return efla_no_kernel(name, a->device);
    if (efla_tensor_numel(a) == 0) return 0;

    efla_dtype cd = binary_dtype(op, a->dtype, b->dtype);
    int prev = efla_set_grad_enabled(0);
    int rc = -1;
    efla_tensor *bv = operand(b, cd, a->ndim, a->shape), *tmp = NULL, *av = NULL;
    if (!bv) goto out;
    /* b overlapping a in another layout (a += a.T) would read values already written */
    if (bv->storage == a->storage &&
        (bv->offset != a->offset || memcmp(bv->strides, a->strides, sizeof(int64_t) * (size_t)a->ndim))) {
        efla_tensor *c = efla_clone(bv);
        efla_tensor_release(bv);
        if (!(bv = c)) goto out;
    }
    if (cd == a->dtype && !is_comparison(op)) {
        rc = be->binary(op, a, a, bv);
    } else {   /* compute in cd, then cast into a */
        av = efla_to(a, cd, a->device);
        tmp = av ? efla_empty(a->ndim, a->shape, is_comparison(op) ? EFLA_BOOL : cd, a->device) : NULL;
        rc = !tmp ? -1 : be->binary(op, tmp, av, bv);
        if (!rc) rc = be->copy(a, tmp);
    }
out:
    efla_set_grad_enabled(prev);
    efla_tensor_release(bv);
    efla_tensor_release(av);
    efla_tensor_release(tmp);
    efla_bump_version(a);
    return rc;
}

/* ---- clamp -------------------------------------------------------------------------------------- */
static int clamp_backward(efla_node *n, efla_tensor *const *go, efla_tensor **gi) {
    scratch s = { .n = 0 };
    efla_tensor *x = SAVED(&s, n, 0);
    efla_tensor *inside = B(&s, EFLA_MUL, BS(&s, EFLA_GE, x, n->params[0]), BS(&s, EFLA_LE, x, n->params[1]));
    give(&s, n, 0, B(&s, EFLA_MUL, go[0], inside), gi);
    return finish_backward(&s);
}

efla_tensor *efla_clamp(const efla_tensor *t, double lo, double hi) {
    if (!t) return efla_fail_null("clamp: the tensor is NULL");
    if (isnan(lo) || isnan(hi))
        return efla_fail_null("clamp: bounds %g, %g: a bound is NaN (use -inf/inf for no bound)", lo, hi);
    efla_dtype dt = t->dtype;
    if (!efla_dtype_is_floating(dt) && ((isfinite(lo) && lo != floor(lo)) || (isfinite(hi) && hi != floor(hi))))
        dt = EFLA_FLOAT32;
    BACKEND_WITH(be, "clamp", t->device, clamp);
    if (!be) return NULL;
    int prev = efla_set_grad_enabled(0);
    efla_tensor *in = efla_to(t, dt, t->device);
    efla_tensor *out = in ? efla_empty(t->ndim, t->shape, dt, t->device) : NULL;
    int rc = !out ? -1 : efla_tensor_numel(t) ? be->clamp(out, in, lo, hi) : 0;
    efla_set_grad_enabled(prev);
    efla_tensor_release(in);
    if (rc) { efla_tensor_release(out); return NULL; }
    efla_node *n;
    if (!(out = record("clamp", clamp_backward, 1, (efla_tensor *const *)&t, out, &n))) return NULL;
    if (n) {
        double p[2] = { lo, hi };
        efla_node_set_params(n, 2, p);
        if (efla_node_save(n, t) < 0) { efla_tensor_release(out); return NULL; }
    }
    return out;
}

/* ---- where / masked_fill ------------------------------------------------------------------------- */
/* inputs a, b; slot 0: the bool condition (original shape) */
static int where_backward(efla_node *n, efla_tensor *const *go, efla_tensor **gi) {
    scratch s = { .n = 0 };
    const efla_tensor *g = go[0];
    efla_tensor *c = SAVED(&s, n, 0);
    efla_tensor *zero = keep(&s, efla_scalar(0, g->dtype, g->device));
    if (efla_node_needs_grad(n, 0)) give(&s, n, 0, WHERE(&s, c, g, zero), gi);
    if (efla_node_needs_grad(n, 1)) give(&s, n, 1, WHERE(&s, c, zero, g), gi);
    return finish_backward(&s);
}

efla_tensor *efla_where(const efla_tensor *cond, const efla_tensor *a, const efla_tensor *b) {
    if (!cond || !a || !b)
        return efla_fail_null("where: tensor %s is NULL", !cond ? "cond" : !a ? "a" : "b");
    if (efla_check_same_device("where", cond, a) || efla_check_same_device("where", a, b)) return NULL;
    int n1, nd;
    int64_t s1[EFLA_MAX_DIMS], shape[EFLA_MAX_DIMS];
    if (efla_broadcast_shapes("where", cond->ndim, cond->shape, a->ndim, a->shape, &n1, s1) ||
        efla_broadcast_shapes("where", n1, s1, b->ndim, b->shape, &nd, shape))
        return NULL;
    BACKEND_WITH(be, "where", a->device, where);
    if (!be) return NULL;
    efla_dtype dt = efla_promote_types(a->dtype, b->dtype);
    int prev = efla_set_grad_enabled(0);
    /* any other dtype of condition means "nonzero" */
    efla_tensor *c = (cond->dtype == EFLA_BOOL || cond->dtype == EFLA_UINT8)
        ? efla_tensor_alias(cond) : efla_binary_scalar(EFLA_NE, cond, 0, 0);
    efla_tensor *cv = c ? bcast_view(c, nd, shape) : NULL;
    efla_tensor *av = cv ? operand(a, dt, nd, shape) : NULL;
    efla_tensor *bv = av ? operand(b, dt, nd, shape) : NULL;
    efla_tensor *out = bv ? efla_empty(nd, shape, dt, a->device) : NULL;
    int rc = !out ? -1 : efla_numel_of(nd, shape) ? be->where(out, cv, av, bv) : 0;
    efla_set_grad_enabled(prev);
    efla_tensor_release(cv);
    efla_tensor_release(av);
    efla_tensor_release(bv);
    if (rc) { efla_tensor_release(c); efla_tensor_release(out); return NULL; }
    efla_tensor *inputs[2] = { (efla_tensor *)a, (efla_tensor *)b };
    efla_node *n;
    if ((out = record("where", where_backward, 2, inputs, out, &n)) && n && efla_node_save(n, c) < 0) {
        efla_tensor_release(out);
        out = NULL;
    }
    efla_tensor_release(c);
    return out;
}

efla_tensor *efla_masked_fill(const efla_tensor *t, const efla_tensor *mask, double value) {
    if (!t || !mask) return efla_fail_null("masked_fill: tensor %s is NULL", !t ? "t" : "mask");
    int nd;
    int64_t shape[EFLA_MAX_DIMS];
    if (efla_broadcast_shapes("masked_fill", t->ndim, t->shape, mask->ndim, mask->shape, &nd, shape)) return NULL;
    if (nd != t->ndim || memcmp(shape, t->shape, sizeof(int64_t) * (size_t)nd))
        return efla_fail_null("masked_fill: the mask's shape %s does not broadcast to the tensor's shape %s",
                              efla_tshape(mask), efla_tshape(t));
    efla_tensor *v = efla_scalar(value, t->dtype, t->device);
    if (!v) return NULL;
    efla_tensor *out = efla_where(mask, v, t);
    efla_tensor_release(v);
    return out;
}

/* ---- tril / triu ---------------------------------------------------------------------------------- */
static efla_tensor *tri(const efla_tensor *t, int64_t k, int upper);

static int tri_backward(efla_node *n, efla_tensor *const *go, efla_tensor **gi) {
    gi[0] = tri(go[0], (int64_t)n->params[0], n->params[1] != 0);
    return gi[0] ? 0 : -1;
}

static efla_tensor *tri(const efla_tensor *t, int64_t k, int upper) {
    const char *name = upper ? "triu" : "tril";
    if (!t) return efla_fail_null("%s: the tensor is NULL", name);
    if (t->ndim < 2)
        return efla_fail_null("%s: needs a tensor of at least 2 dims (matrices in the last two), got shape %s",
                              name, efla_tshape(t));
    BACKEND_WITH(be, name, t->device, tri);
    if (!be) return NULL;
    efla_tensor *out = efla_empty(t->ndim, t->shape, t->dtype, t->device);
    if (!out) return NULL;
    if (efla_tensor_numel(t) && be->tri(out, t, k, upper)) { efla_tensor_release(out); return NULL; }
    efla_node *n;
    if (!(out = record(name, tri_backward, 1, (efla_tensor *const *)&t, out, &n))) return NULL;
    if (n) { double p[2] = { (double)k, upper }; efla_node_set_params(n, 2, p); }
    return out;
}

efla_tensor *efla_tril(const efla_tensor *t, int64_t k) { return tri(t, k, 0); }
efla_tensor *efla_triu(const efla_tensor *t, int64_t k) { return tri(t, k, 1); }

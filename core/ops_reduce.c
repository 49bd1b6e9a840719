/* ops_reduce.c: the reduction front end (efla_reduce) and the backward rule of every
 * differentiable reduction.
 *
 * The kernel reduces the dims set in a bit mask into an output of the same ndim with those
 * dims of size 1 ("keepdim" shape); without keepdim the front end returns a view with them
 * dropped. Backward rules first view the incoming gradient in the keepdim shape, so that
 * it broadcasts against the input. */
#include "autograd.h"
#include "backend.h"
#include <math.h>
#include <stdio.h>
#include <string.h>

static const char *const reduce_names[EFLA_REDUCE_COUNT] = {
    "sum", "mean", "max", "min", "prod", "logsumexp", "var", "norm", "argmax", "argmin"
};

const char *efla_reduce_name(efla_reduce_op op) {
    return (unsigned)op < EFLA_REDUCE_COUNT ? reduce_names[op] : "?";
}

/* ---- temporaries for backward rules ------------------------------------------------------- */
/* Backward rules chain many ops; each result goes into a pool released at the end. */
typedef struct { efla_tensor *t[32]; int n; } tpool;
static efla_tensor *pool_add(tpool *p, efla_tensor *t) {
    if (t && p->n < 32) p->t[p->n++] = t;
    return t;
}
static void pool_drain(tpool *p) {
    for (int i = 0; i < p->n; i++) efla_tensor_release(p->t[i]);
    p->n = 0;
}
/* Assign expr to var, keep it in the pool, and leave through `fail` if it is NULL. */
#define TRY(var, expr) do { if (!((var) = pool_add(&P, (expr)))) goto fail; } while (0)

/* The keepdim shape of input meta m under mask. */
static void keep_shape(const efla_meta *m, uint32_t mask, int64_t *shape) {
    for (int d = 0; d < m->ndim; d++) shape[d] = (mask & (1u << d)) ? 1 : m->shape[d];
}

static int64_t reduced_count(const efla_meta *m, uint32_t mask) {
    int64_t n = 1;
    for (int d = 0; d < m->ndim; d++)
        if (mask & (1u << d)) n *= m->shape[d];
    return n;
}

static int mask_dims(uint32_t mask, int ndim, int *dims) {
    int n = 0;
    for (int d = 0; d < ndim; d++)
        if (mask & (1u << d)) dims[n++] = d;
    return n;
}

/* The gradient that max/min (ties: the first position in row-major order over the reduced
 * dims) sends back: gk [keepdim shape] placed where x attains its extreme. Moves the
 * reduced dims last and flattens them, takes argmax/argmin there, and builds a one-hot
 * mask from arange == index. */
static efla_tensor *route_to_extreme(const efla_tensor *x, const efla_tensor *gk, uint32_t mask, int is_max) {
    tpool P = {0};
    efla_tensor *xp, *xr, *idx, *ar, *hit, *hitf, *gkr, *gr, *gp, *gi, *res = NULL;
    int perm[EFLA_MAX_DIMS], inv[EFLA_MAX_DIMS], nk = 0, np = 0;
    int64_t kshape[EFLA_MAX_DIMS + 1], pshape[EFLA_MAX_DIMS], R = 1;
    for (int d = 0; d < x->ndim; d++)
        if (!(mask & (1u << d))) { kshape[nk++] = x->shape[d]; perm[np++] = d; }
    for (int d = 0; d < x->ndim; d++)
        if (mask & (1u << d)) { R *= x->shape[d]; perm[np++] = d; }
    for (int i = 0; i < np; i++) { inv[perm[i]] = i; pshape[i] = x->shape[perm[i]]; }
    kshape[nk] = R;
    int last = nk;
    TRY(xp, efla_permute(x, x->ndim, perm));
    TRY(xr, efla_reshape(xp, nk + 1, kshape));
    TRY(idx, efla_reduce(is_max ? EFLA_ARGMAX : EFLA_ARGMIN, xr, 1, &last, 1, 0));
    TRY(ar, efla_arange(0, (double)R, 1, EFLA_INT64, x->device));
    TRY(hit, efla_binary(EFLA_EQ, idx, ar));
    TRY(hitf, efla_to(hit, gk->dtype, gk->device));
    kshape[nk] = 1;
    TRY(gkr, efla_reshape(gk, nk + 1, kshape));
    TRY(gr, efla_binary(EFLA_MUL, hitf, gkr));
    TRY(gp, efla_reshape(gr, x->ndim, pshape));
    TRY(gi, efla_permute(gp, x->ndim, inv));
    res = efla_contiguous(gi);
fail:
    pool_drain(&P);
    return res;
}

/* ---- backward ------------------------------------------------------------------------------------ */
enum { P_OP = 0, P_PARAM, P_MASK };
enum { S_IN = 0, S_OUT };

static int reduce_backward(efla_node *n, efla_tensor *const *go, efla_tensor **gi) {
    tpool P = {0};
    const efla_meta *m = &n->in_meta[0];
    efla_reduce_op op = (efla_reduce_op)n->params[P_OP];
    double param = n->params[P_PARAM];
    uint32_t mask = (uint32_t)n->params[P_MASK];
    int64_t ks[EFLA_MAX_DIMS];
    keep_shape(m, mask, ks);
    double count = (double)reduced_count(m, mask);
    efla_tensor *gk, *x = NULL, *y = NULL, *r = NULL, *t1, *t2, *t3, *t4, *t5, *t6;
    TRY(gk, efla_reshape(go[0], m->ndim, ks));
    if (op != EFLA_SUM && op != EFLA_MEAN) TRY(x, efla_node_saved(n, S_IN));
    if (op == EFLA_PROD || op == EFLA_LOGSUMEXP || op == EFLA_NORM) TRY(y, efla_node_saved(n, S_OUT));

    switch (op) {
    case EFLA_SUM:
        r = gk;
        break;
    case EFLA_MEAN:
        TRY(r, efla_binary_scalar(EFLA_MUL, gk, 1.0 / count, 0));
        break;
    case EFLA_MAX: case EFLA_MIN:
        TRY(r, route_to_extreme(x, gk, mask, op == EFLA_MAX));
        break;
    case EFLA_LOGSUMEXP:   /* g * exp(x - lse) */
        TRY(t1, efla_binary(EFLA_SUB, x, y));
        TRY(t2, efla_unary(EFLA_EXP, t1));
        TRY(r, efla_binary(EFLA_MUL, t2, gk));
        break;
    case EFLA_VAR: {       /* g * 2 (x - mean) / (N - correction) */
        int dims[EFLA_MAX_DIMS], nd = mask_dims(mask, m->ndim, dims);
        TRY(t1, efla_reduce(EFLA_MEAN, x, nd, dims, 1, 0));
        TRY(t2, efla_binary(EFLA_SUB, x, t1));
        double dof = count - param;
        TRY(t3, efla_binary_scalar(EFLA_MUL, gk, 2.0 / (dof > 0 ? dof : 0.0), 0));
        TRY(r, efla_binary(EFLA_MUL, t2, t3));
        break;
    }
    case EFLA_PROD: {
        /* With z zeros in a slice: none -> g * prod / x; one -> the zero gets g * (product
         * of the others), the rest 0; more -> all 0. prod_nz is the product of the
         * nonzeros, so nothing divides by zero. */
        int dims[EFLA_MAX_DIMS], nd = mask_dims(mask, m->ndim, dims);
        efla_tensor *z, *xnz, *pnz, *zc, *c0, *c1, *gp, *a, *b;
        TRY(z, efla_binary_scalar(EFLA_EQ, x, 0, 0));
        TRY(xnz, efla_masked_fill(x, z, 1));
        TRY(pnz, efla_reduce(EFLA_PROD, xnz, nd, dims, 1, 0));
        TRY(t1, efla_to(z, x->dtype, x->device));
        TRY(zc, efla_reduce(EFLA_SUM, t1, nd, dims, 1, 0));
        TRY(t2, efla_binary_scalar(EFLA_EQ, zc, 0, 0));
        TRY(c0, efla_to(t2, x->dtype, x->device));
        TRY(t3, efla_binary_scalar(EFLA_EQ, zc, 1, 0));
        TRY(c1, efla_to(t3, x->dtype, x->device));
        TRY(gp, efla_binary(EFLA_MUL, gk, pnz));
        TRY(t4, efla_binary(EFLA_MUL, gp, c0));
        TRY(a, efla_binary(EFLA_DIV, t4, xnz));        /* no zeros in the slice */
        TRY(t5, efla_binary(EFLA_MUL, gp, c1));         /* the one zero */
        TRY(b, efla_expand(t5, x->ndim, x->shape));
        TRY(r, efla_where(z, b, a));
        break;
    }
    case EFLA_NORM: {
        double p = param;
        if (p == 0) {
            TRY(r, efla_zeros(m->ndim, m->shape, m->dtype, m->device));
        } else if (p == 1) {
            TRY(t1, efla_unary(EFLA_SIGN, x));
            TRY(r, efla_binary(EFLA_MUL, t1, gk));
        } else if (isinf(p)) {
            TRY(t1, efla_unary(EFLA_ABS, x));
            TRY(t2, route_to_extreme(t1, gk, mask, p > 0));
            TRY(t3, efla_unary(EFLA_SIGN, x));
            TRY(r, efla_binary(EFLA_MUL, t2, t3));
        } else {
            /* g * sign(x) |x|^(p-1) / y^(p-1); a zero norm (all x = 0) gives 0, not nan */
            TRY(t1, efla_binary_scalar(EFLA_EQ, y, 0, 0));
            TRY(t2, efla_masked_fill(y, t1, 1));       /* y, with 0 -> 1 */
            if (p == 2) {
                TRY(t3, efla_binary(EFLA_DIV, gk, t2));
                TRY(r, efla_binary(EFLA_MUL, x, t3));
            } else {
                TRY(t3, efla_binary(EFLA_DIV, x, t2));
                TRY(t4, efla_unary(EFLA_ABS, t3));
                TRY(t5, efla_binary_scalar(EFLA_POW, t4, p - 1, 0));
                TRY(t6, efla_unary(EFLA_SIGN, x));
                TRY(t1, efla_binary(EFLA_MUL, t5, t6));
                TRY(r, efla_binary(EFLA_MUL, t1, gk));
            }
        }
        break;
    }
    default:
        pool_drain(&P);
        return efla_fail("backward of %s: not differentiable", efla_reduce_name(op));
    }
    /* Broadcast to the input's shape and hand back an owned, contiguous gradient. */
    efla_tensor *e;
    TRY(e, efla_expand(r, m->ndim, m->shape));
    gi[0] = efla_contiguous(e);
    pool_drain(&P);
    return gi[0] ? 0 : -1;
fail:
    pool_drain(&P);
    return -1;
}

/* ---- the front end ---------------------------------------------------------------------------------- */
static int describe_dims(char *buf, size_t cap, int ndims, const int *dims) {
    size_t n = (size_t)snprintf(buf, cap, "{");
    for (int i = 0; i < ndims && n < cap; i++) n += (size_t)snprintf(buf + n, cap - n, i ? ",%d" : "%d", dims[i]);
    if (n < cap) snprintf(buf + n, cap - n, "}");
    return 0;
}

efla_tensor *efla_reduce(efla_reduce_op op, const efla_tensor *t, int ndims, const int *dims, int keepdim, double param) {
    if ((unsigned)op >= EFLA_REDUCE_COUNT) return efla_fail_null("reduce: unknown reduction %d", (int)op);
    const char *name = efla_reduce_name(op);
    if (!t) return efla_fail_null("%s: the tensor is NULL", name);
    if (ndims < 0 || ndims > EFLA_MAX_DIMS || (ndims > 0 && !dims))
        return efla_fail_null("%s: %d dims given; pass 0 (reduce everything) to %d dims", name, ndims, EFLA_MAX_DIMS);
    bool arg = op == EFLA_ARGMAX || op == EFLA_ARGMIN;
    if (arg && ndims > 1) {
        char b[64];
        describe_dims(b, sizeof b, ndims, dims);
        return efla_fail_null("%s: takes exactly one dim, got %d dims %s (shape %s); reduce one dim at a time, or "
                              "reshape to merge the dims first", name, ndims, b, efla_tshape(t));
    }
    if (arg && ndims == 0 && t->ndim > 1) {
        /* argmax over everything: the index into the flattened tensor */
        int64_t n = efla_tensor_numel(t), ones[EFLA_MAX_DIMS];
        int zero = 0;
        efla_tensor *flat = efla_reshape(t, 1, &n);
        efla_tensor *r = flat ? efla_reduce(op, flat, 1, &zero, 0, param) : NULL;
        efla_tensor_release(flat);
        if (!r || !keepdim) return r;
        for (int d = 0; d < t->ndim; d++) ones[d] = 1;
        efla_tensor *k = efla_reshape(r, t->ndim, ones);
        efla_tensor_release(r);
        return k;
    }
    uint32_t mask = 0;
    if (ndims == 0) mask = t->ndim ? (1u << t->ndim) - 1 : 0;
    for (int i = 0; i < ndims; i++) {
        int d;
        if (efla_wrap_dim(name, dims[i], t->ndim, &d)) return NULL;
        if (t->ndim == 0) continue;   /* dim 0 / -1 of a 0-d tensor: nothing to reduce */
        if (mask & (1u << d)) {
            char b[64];
            describe_dims(b, sizeof b, ndims, dims);
            return efla_fail_null("%s: dim %d appears twice in dims %s (shape %s)", name, d, b, efla_tshape(t));
        }
        mask |= 1u << d;
    }

    /* dtypes */
    efla_dtype in = t->dtype, odt = in;
    bool floating = efla_dtype_is_floating(in);
    if (op == EFLA_MEAN || op == EFLA_LOGSUMEXP || op == EFLA_VAR || op == EFLA_NORM) {
        if (!floating)
            return efla_fail_null("%s: needs a floating-point tensor, got %s (cast with :float() or :double() first)",
                                  name, efla_dtype_name(in));
    } else if (op == EFLA_SUM || op == EFLA_PROD) {
        if (!floating) odt = EFLA_INT64;
    } else if (arg) {
        odt = EFLA_INT64;
    }

    int64_t ks[EFLA_MAX_DIMS], fs[EFLA_MAX_DIMS], nred = 1;
    int fn = 0;
    for (int d = 0; d < t->ndim; d++) {
        if (mask & (1u << d)) { ks[d] = 1; nred *= t->shape[d]; if (keepdim) fs[fn++] = 1; }
        else { ks[d] = t->shape[d]; fs[fn++] = t->shape[d]; }
    }
    if (nred == 0 && (arg || op == EFLA_MAX || op == EFLA_MIN))
        return efla_fail_null("%s: cannot reduce over zero elements (shape %s); the result would be undefined", name,
                              efla_tshape(t));

    const efla_backend *b = efla_backend_for(name, t->device);
    if (!b) return NULL;
    if (!b->reduce) { efla_no_kernel(name, t->device); return NULL; }
    efla_tensor *out = efla_empty(t->ndim, ks, odt, t->device);
    if (!out) return NULL;
    if (efla_tensor_numel(out) > 0 && b->reduce(op, out, t, mask, param)) {
        efla_tensor_release(out);
        return NULL;
    }
    efla_tensor *res = out;
    if (!keepdim) {
        int64_t st[EFLA_MAX_DIMS];
        efla_contiguous_strides(fn, fs, st);
        res = efla_tensor_make_view(out->storage, out->offset, fn, fs, st, odt, out->device);
        if (!res) { efla_tensor_release(out); return NULL; }
    }
    if (!arg && floating && efla_any_requires_grad(1, (efla_tensor *const *)&t)) {
        efla_node *n = NULL;
        /* sum and mean need only the input's shape (in the node's metadata): save nothing */
        const int save = op != EFLA_SUM && op != EFLA_MEAN;
        if (efla_record1(name, reduce_backward, 1, (efla_tensor *const *)&t, res, &n) ||
            (n && save && (efla_node_save(n, t) < 0 || efla_node_save(n, out) < 0))) {
            if (res != out) efla_tensor_release(out);
            efla_tensor_release(res);
            return NULL;
        }
        double params[3] = { op, param, mask };
        if (n) efla_node_set_params(n, 3, params);
    }
    if (res != out) efla_tensor_release(out);
    return res;
}

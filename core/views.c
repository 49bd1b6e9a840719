/* views.c: ops that return a new view of the same storage (no copy), and their
 * backward rules. A view of a tensor that requires grad records a node like any op. */
#include "autograd.h"
#include "backend.h"
#include <stdlib.h>
#include <string.h>

static efla_tensor *make(const efla_tensor *t, int64_t offset, int ndim, const int64_t *shape,
                         const int64_t *strides) {
    return efla_tensor_make_view(t->storage, offset, ndim, shape, strides, t->dtype, t->device);
}

/* Record `out` as a view of t for autograd; releases out on failure. */
static efla_tensor *finish(const char *op, efla_backward_fn fn, const efla_tensor *t, efla_tensor *out,
                           int np, const double *params) {
    if (!out) return NULL;
    efla_node *n = NULL;
    if (efla_record1(op, fn, 1, (efla_tensor *const *)&t, out, &n)) { efla_tensor_release(out); return NULL; }
    if (n && np) efla_node_set_params(n, np, params);
    return out;
}

/* ---- view / reshape --------------------------------------------------------------------- */
static int reshape_backward(efla_node *n, efla_tensor *const *go, efla_tensor **gi) {
    gi[0] = efla_reshape(go[0], n->in_meta[0].ndim, n->in_meta[0].shape);
    return gi[0] ? 0 : -1;
}

/* Resolve one -1 and check the element count. */
static int infer_shape(const char *op, const efla_tensor *t, int ndim, const int64_t *shape, int64_t *out) {
    if (ndim < 0 || ndim > EFLA_MAX_DIMS) return efla_fail("%s: %d dims asked; at most %d", op, ndim, EFLA_MAX_DIMS);
    int infer = -1;
    int64_t known = 1, numel = efla_tensor_numel(t);
    for (int i = 0; i < ndim; i++) {
        out[i] = shape[i];
        if (shape[i] == -1) {
            if (infer >= 0) return efla_fail("%s: only one size may be -1", op);
            infer = i;
        } else if (shape[i] < 0) return efla_fail("%s: negative size %lld", op, (long long)shape[i]);
        else known *= shape[i];
    }
    if (infer >= 0) {
        if (known == 0 || numel % known)
            goto mismatch;
        out[infer] = numel / known;
    }
    if (efla_numel_of(ndim, out) != numel) goto mismatch;
    return 0;
mismatch: {
        char s[EFLA_SHAPE_BUF];
        return efla_fail("%s: cannot view a tensor of shape %s (%lld elements) as %s", op, efla_tshape(t),
                         (long long)numel, efla_shape_str(s, sizeof s, ndim, shape));
    }
}

/* Strides for viewing t as `shape` without a copy, or -1 when impossible (the classic
 * chunk-matching algorithm: each run of t's dims that is contiguous in memory may be
 * split or merged freely). */
static int view_strides(const efla_tensor *t, int ndim, const int64_t *shape, int64_t *strides) {
    if (efla_tensor_numel(t) == 0 || efla_tensor_is_contiguous(t)) {
        efla_contiguous_strides(ndim, shape, strides);
        return 0;
    }
    int view_d = ndim - 1;
    int64_t chunk_base_stride = t->ndim ? t->strides[t->ndim - 1] : 1;
    int64_t tensor_numel = 1, view_numel = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        tensor_numel *= t->shape[d];
        if (d == 0 || (t->shape[d - 1] != 1 && t->strides[d - 1] != tensor_numel * chunk_base_stride)) {
            while (view_d >= 0 && (view_numel < tensor_numel || shape[view_d] == 1)) {
                strides[view_d] = view_numel * chunk_base_stride;
                view_numel *= shape[view_d];
                view_d--;
            }
            if (view_numel != tensor_numel) return -1;
            if (d > 0) {
                chunk_base_stride = t->strides[d - 1];
                tensor_numel = 1;
                view_numel = 1;
            }
        }
    }
    return view_d == -1 ? 0 : -1;
}

efla_tensor *efla_view(const efla_tensor *t, int ndim, const int64_t *shape) {
    int64_t s[EFLA_MAX_DIMS], st[EFLA_MAX_DIMS];
    if (infer_shape("view", t, ndim, shape, s)) return NULL;
    if (view_strides(t, ndim, s, st))
        return efla_fail_null("view: the tensor of shape %s is not laid out so that it can be viewed as "
                              "the new shape without a copy; use reshape() (which copies) or "
                              "contiguous() first", efla_tshape(t));
    return finish("view", reshape_backward, t, make(t, t->offset, ndim, s, st), 0, NULL);
}

efla_tensor *efla_reshape(const efla_tensor *t, int ndim, const int64_t *shape) {
    int64_t s[EFLA_MAX_DIMS], st[EFLA_MAX_DIMS];
    if (infer_shape("reshape", t, ndim, shape, s)) return NULL;
    if (!view_strides(t, ndim, s, st))
        return finish("reshape", reshape_backward, t, make(t, t->offset, ndim, s, st), 0, NULL);
    efla_tensor *c = efla_contiguous(t);
    if (!c) return NULL;
    efla_tensor *r = efla_view(c, ndim, s);
    efla_tensor_release(c);
    return r;
}

/* ---- permute / transpose ------------------------------------------------------------------ */
static int permute_backward(efla_node *n, efla_tensor *const *go, efla_tensor **gi) {
    int nd = n->in_meta[0].ndim, inv[EFLA_MAX_DIMS];
    for (int i = 0; i < nd; i++) inv[(int)n->params[i]] = i;
    gi[0] = efla_permute(go[0], nd, inv);
    return gi[0] ? 0 : -1;
}

efla_tensor *efla_permute(const efla_tensor *t, int ndim, const int *dims) {
    if (ndim != t->ndim)
        return efla_fail_null("permute: %d dims given for a tensor of %d dims (shape %s)", ndim, t->ndim, efla_tshape(t));
    int64_t s[EFLA_MAX_DIMS], st[EFLA_MAX_DIMS];
    double p[EFLA_MAX_DIMS];
    int seen[EFLA_MAX_DIMS] = {0};
    for (int i = 0; i < ndim; i++) {
        int d;
        if (efla_wrap_dim("permute", dims[i], ndim, &d)) return NULL;
        if (seen[d]++) return efla_fail_null("permute: dim %d appears twice", d);
        s[i] = t->shape[d];
        st[i] = t->strides[d];
        p[i] = d;
    }
    return finish("permute", permute_backward, t, make(t, t->offset, ndim, s, st), ndim, p);
}

efla_tensor *efla_transpose(const efla_tensor *t, int d0, int d1) {
    int a, b, perm[EFLA_MAX_DIMS];
    if (t->ndim < 1) { efla_tensor_retain((efla_tensor *)t); return (efla_tensor *)t; }
    if (efla_wrap_dim("transpose", d0, t->ndim, &a) || efla_wrap_dim("transpose", d1, t->ndim, &b)) return NULL;
    for (int i = 0; i < t->ndim; i++) perm[i] = i;
    perm[a] = b;
    perm[b] = a;
    return efla_permute(t, t->ndim, perm);
}

/* ---- narrow / select ------------------------------------------------------------------------ */
/* Gradient of a view that picks part of the input: zeros with the slice filled in. */
static int narrow_backward(efla_node *n, efla_tensor *const *go, efla_tensor **gi) {
    const efla_meta *m = &n->in_meta[0];
    efla_tensor *g = efla_zeros(m->ndim, m->shape, go[0]->dtype, m->device);
    if (!g) return -1;
    efla_tensor *part = efla_narrow(g, (int)n->params[0], (int64_t)n->params[1], (int64_t)n->params[2]);
    int rc = part ? efla_copy_(part, go[0]) : -1;
    efla_tensor_release(part);
    if (rc) { efla_tensor_release(g); return -1; }
    gi[0] = g;
    return 0;
}

efla_tensor *efla_narrow(const efla_tensor *t, int dim, int64_t start, int64_t length) {
    int d;
    if (t->ndim == 0) return efla_fail_null("narrow: cannot narrow a 0-d tensor");
    if (efla_wrap_dim("narrow", dim, t->ndim, &d)) return NULL;
    if (start < 0 || length < 0 || start + length > t->shape[d])
        return efla_fail_null("narrow: start %lld, length %lld is outside dim %d of size %lld (shape %s)",
                              (long long)start, (long long)length, d, (long long)t->shape[d], efla_tshape(t));
    int64_t s[EFLA_MAX_DIMS];
    memcpy(s, t->shape, sizeof s);
    s[d] = length;
    double p[3] = { d, (double)start, (double)length };
    return finish("narrow", narrow_backward, t, make(t, t->offset + start * t->strides[d], t->ndim, s, t->strides), 3, p);
}

static int select_backward(efla_node *n, efla_tensor *const *go, efla_tensor **gi) {
    const efla_meta *m = &n->in_meta[0];
    efla_tensor *g = efla_zeros(m->ndim, m->shape, go[0]->dtype, m->device);
    if (!g) return -1;
    efla_tensor *part = efla_select(g, (int)n->params[0], (int64_t)n->params[1]);
    int rc = part ? efla_copy_(part, go[0]) : -1;
    efla_tensor_release(part);
    if (rc) { efla_tensor_release(g); return -1; }
    gi[0] = g;
    return 0;
}

efla_tensor *efla_select(const efla_tensor *t, int dim, int64_t index) {
    int d;
    if (t->ndim == 0) return efla_fail_null("select: cannot index a 0-d tensor");
    if (efla_wrap_dim("select", dim, t->ndim, &d)) return NULL;
    if (index < 0) index += t->shape[d];
    if (index < 0 || index >= t->shape[d])
        return efla_fail_null("select: index %lld is out of range for dim %d of size %lld (shape %s)",
                              (long long)index, d, (long long)t->shape[d], efla_tshape(t));
    int64_t s[EFLA_MAX_DIMS], st[EFLA_MAX_DIMS];
    int k = 0;
    for (int i = 0; i < t->ndim; i++)
        if (i != d) { s[k] = t->shape[i]; st[k] = t->strides[i]; k++; }
    double p[2] = { d, (double)index };
    return finish("select", select_backward, t, make(t, t->offset + index * t->strides[d], k, s, st), 2, p);
}

/* ---- expand / squeeze / unsqueeze ---------------------------------------------------------------- */
static int expand_backward(efla_node *n, efla_tensor *const *go, efla_tensor **gi) {
    gi[0] = efla_sum_to_shape(go[0], n->in_meta[0].ndim, n->in_meta[0].shape);
    return gi[0] ? 0 : -1;
}

efla_tensor *efla_expand(const efla_tensor *t, int ndim, const int64_t *shape) {
    if (ndim < t->ndim || ndim > EFLA_MAX_DIMS)
        return efla_fail_null("expand: cannot expand shape %s to %d dims", efla_tshape(t), ndim);
    int64_t s[EFLA_MAX_DIMS], st[EFLA_MAX_DIMS];
    int lead = ndim - t->ndim;
    for (int i = 0; i < ndim; i++) {
        int j = i - lead;
        int64_t want = shape[i];
        if (j < 0) {
            if (want < 0) return efla_fail_null("expand: size -1 is not allowed for a new leading dim");
            s[i] = want; st[i] = 0;
        } else {
            if (want == -1) want = t->shape[j];
            if (want < 0) return efla_fail_null("expand: negative size %lld at dim %d", (long long)want, i);
            if (t->shape[j] == want) { s[i] = want; st[i] = t->strides[j]; }
            else if (t->shape[j] == 1) { s[i] = want; st[i] = 0; }
            else {
                char b[EFLA_SHAPE_BUF];
                return efla_fail_null("expand: shape %s cannot expand to %s (dim %d has size %lld, not 1)",
                                      efla_tshape(t), efla_shape_str(b, sizeof b, ndim, shape), j,
                                      (long long)t->shape[j]);
            }
        }
    }
    return finish("expand", expand_backward, t, make(t, t->offset, ndim, s, st), 0, NULL);
}

efla_tensor *efla_squeeze(const efla_tensor *t, int dim) {
    int d;
    if (t->ndim == 0) { efla_tensor_retain((efla_tensor *)t); return (efla_tensor *)t; }
    if (efla_wrap_dim("squeeze", dim, t->ndim, &d)) return NULL;
    if (t->shape[d] != 1) { efla_tensor_retain((efla_tensor *)t); return (efla_tensor *)t; }
    int64_t s[EFLA_MAX_DIMS], st[EFLA_MAX_DIMS];
    int k = 0;
    for (int i = 0; i < t->ndim; i++)
        if (i != d) { s[k] = t->shape[i]; st[k] = t->strides[i]; k++; }
    return finish("squeeze", reshape_backward, t, make(t, t->offset, k, s, st), 0, NULL);
}

efla_tensor *efla_squeeze_all(const efla_tensor *t) {
    int64_t s[EFLA_MAX_DIMS], st[EFLA_MAX_DIMS];
    int k = 0;
    for (int i = 0; i < t->ndim; i++)
        if (t->shape[i] != 1) { s[k] = t->shape[i]; st[k] = t->strides[i]; k++; }
    return finish("squeeze", reshape_backward, t, make(t, t->offset, k, s, st), 0, NULL);
}

efla_tensor *efla_unsqueeze(const efla_tensor *t, int dim) {
    int d;
    if (t->ndim >= EFLA_MAX_DIMS) return efla_fail_null("unsqueeze: the tensor already has %d dims", t->ndim);
    if (efla_wrap_dim("unsqueeze", dim, t->ndim + 1, &d)) return NULL;
    int64_t s[EFLA_MAX_DIMS], st[EFLA_MAX_DIMS];
    for (int i = 0, k = 0; i <= t->ndim; i++) {
        if (i == d) {
            s[i] = 1;
            st[i] = d < t->ndim ? t->shape[d] * t->strides[d] : 1;
        } else { s[i] = t->shape[k]; st[i] = t->strides[k]; k++; }
    }
    return finish("unsqueeze", reshape_backward, t, make(t, t->offset, t->ndim + 1, s, st), 0, NULL);
}

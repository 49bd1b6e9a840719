/* ops_index.c: front ends of the indexing and joining ops (index_select, gather,
 * scatter_add, embedding, one_hot, cat, stack) and their backward rules.
 *
 * Kernels (backend.h) get an int64 index that is contiguous; they report a bad index as
 * "index V is out of range for dim D of size S" and the front end prefixes its own name.
 * Backward rules: index_select/embedding -> index_add into zeros; gather -> scatter_add
 * into zeros; scatter_add -> identity (t) and gather (src); cat -> narrow; stack -> select. */
#include "autograd.h"
#include "backend.h"
#include <stdlib.h>
#include <string.h>

/* ---- shared checks and dispatch ----------------------------------------------------------- */
static int check_index_dtype(const char *op, const efla_tensor *index) {
    if (!index) return efla_fail("%s: the index is NULL", op);
    if (index->dtype != EFLA_INT64)
        return efla_fail("%s: the index must be int64, not %s (shape %s); cast it with :long()", op,
                         efla_dtype_name(index->dtype), efla_tshape(index));
    return 0;
}

/* Record a node for `out`; releases out and returns NULL on failure. */
static efla_tensor *record(const char *op, efla_backward_fn fn, int n, efla_tensor *const *inputs,
                           efla_tensor *out, const efla_tensor *save, int np, const double *params) {
    efla_node *node = NULL;
    if (efla_record1(op, fn, n, inputs, out, &node)) { efla_tensor_release(out); return NULL; }
    if (node) {
        if (np) efla_node_set_params(node, np, params);
        if (save && efla_node_save(node, save) < 0) { efla_tensor_release(out); return NULL; }
    }
    return out;
}

/* out[..., index[i], ...] += src[..., i, ...] along dim, through the backend (any device). */
static int index_add_into(const char *op, efla_tensor *out, int dim, const efla_tensor *index,
                          const efla_tensor *src) {
    const efla_backend *b = efla_backend_for(op, out->device);
    if (!b) return -1;
    if (!b->index_add) return efla_no_kernel("index_add", out->device);
    if (efla_tensor_numel(src) == 0) return 0;
    if (b->index_add(out, dim, index, src)) { efla_error_prefix(op); return -1; }
    efla_bump_version(out);
    return 0;
}

static int scatter_add_into(const char *op, efla_tensor *out, int dim, const efla_tensor *index,
                            const efla_tensor *src) {
    const efla_backend *b = efla_backend_for(op, out->device);
    if (!b) return -1;
    if (!b->scatter_add) return efla_no_kernel("scatter_add", out->device);
    if (efla_tensor_numel(index) == 0) return 0;
    if (b->scatter_add(out, dim, index, src)) { efla_error_prefix(op); return -1; }
    efla_bump_version(out);
    return 0;
}

/* ---- index_select ------------------------------------------------------------------------- */
static int index_select_backward(efla_node *n, efla_tensor *const *go, efla_tensor **gi) {
    const efla_meta *m = &n->in_meta[0];
    efla_tensor *idx = efla_node_saved(n, 0);
    if (!idx) return -1;
    efla_tensor *g = efla_zeros(m->ndim, m->shape, go[0]->dtype, m->device);
    int rc = g ? index_add_into("index_select backward", g, (int)n->params[0], idx, go[0]) : -1;
    efla_tensor_release(idx);
    if (rc) { efla_tensor_release(g); return -1; }
    gi[0] = g;
    return 0;
}

efla_tensor *efla_index_select(const efla_tensor *t, int dim, const efla_tensor *index) {
    const char *op = "index_select";
    int d;
    if (t->ndim == 0) return efla_fail_null("index_select: cannot index a 0-d tensor; unsqueeze it first");
    if (efla_wrap_dim(op, dim, t->ndim, &d) || check_index_dtype(op, index)) return NULL;
    if (index->ndim != 1)
        return efla_fail_null("index_select: the index must be 1-d, got shape %s; flatten it with "
                              "view(-1), or use embedding() for an index of any shape", efla_tshape(index));
    if (efla_check_same_device(op, t, index)) return NULL;
    const efla_backend *b = efla_backend_for(op, t->device);
    if (!b) return NULL;
    if (!b->index_select) { efla_no_kernel(op, t->device); return NULL; }
    int64_t shape[EFLA_MAX_DIMS];
    memcpy(shape, t->shape, sizeof shape);
    shape[d] = index->shape[0];
    efla_tensor *out = efla_empty(t->ndim, shape, t->dtype, t->device);
    efla_tensor *idx = out ? efla_contiguous(index) : NULL;
    if (!idx) { efla_tensor_release(out); return NULL; }
    if (efla_tensor_numel(out) && b->index_select(out, t, d, idx)) {
        efla_error_prefix(op);
        efla_tensor_release(out);
        efla_tensor_release(idx);
        return NULL;
    }
    double p = d;
    out = record(op, index_select_backward, 1, (efla_tensor *const *)&t, out, idx, 1, &p);
    efla_tensor_release(idx);
    return out;
}

/* ---- embedding ------------------------------------------------------------------------------ */
static int embedding_backward(efla_node *n, efla_tensor *const *go, efla_tensor **gi) {
    const efla_meta *m = &n->in_meta[0];
    efla_tensor *idx = efla_node_saved(n, 0);
    if (!idx) return -1;
    int64_t rows[2] = { idx->shape[0], m->shape[1] };
    efla_tensor *g2 = efla_reshape(go[0], 2, rows);
    efla_tensor *g = g2 ? efla_zeros(2, m->shape, go[0]->dtype, m->device) : NULL;
    int rc = g ? index_add_into("embedding backward", g, 0, idx, g2) : -1;
    efla_tensor_release(idx);
    efla_tensor_release(g2);
    if (rc) { efla_tensor_release(g); return -1; }
    gi[0] = g;
    return 0;
}

efla_tensor *efla_embedding(const efla_tensor *weight, const efla_tensor *index) {
    const char *op = "embedding";
    if (weight->ndim != 2)
        return efla_fail_null("embedding: the weight must be 2-d [num_embeddings, embedding_dim], got shape %s",
                              efla_tshape(weight));
    if (check_index_dtype(op, index)) return NULL;
    if (index->ndim + 1 > EFLA_MAX_DIMS)
        return efla_fail_null("embedding: the index has %d dims (shape %s); the output would need %d, more than %d",
                              index->ndim, efla_tshape(index), index->ndim + 1, EFLA_MAX_DIMS);
    if (efla_check_same_device(op, weight, index)) return NULL;
    const efla_backend *b = efla_backend_for(op, weight->device);
    if (!b) return NULL;
    if (!b->index_select) { efla_no_kernel(op, weight->device); return NULL; }
    int64_t n = efla_tensor_numel(index), D = weight->shape[1];
    int64_t shape[EFLA_MAX_DIMS];
    memcpy(shape, index->shape, sizeof(int64_t) * (size_t)index->ndim);
    shape[index->ndim] = D;
    efla_tensor *out = efla_empty(index->ndim + 1, shape, weight->dtype, weight->device);
    efla_tensor *flat = out ? efla_reshape(index, 1, &n) : NULL;
    efla_tensor *flat_c = flat ? efla_contiguous(flat) : NULL;
    efla_tensor_release(flat);
    if (!flat_c) { efla_tensor_release(out); return NULL; }
    if (n * D > 0) {
        /* The kernel sees the output as [n, D]. */
        int64_t s2[2] = { n, D }, st2[2] = { D, 1 };
        efla_tensor *out2 = efla_tensor_make_view(out->storage, 0, 2, s2, st2, out->dtype, out->device);
        int rc = out2 ? b->index_select(out2, weight, 0, flat_c) : -1;
        efla_tensor_release(out2);
        if (rc) {
            efla_error_prefix(op);
            efla_tensor_release(out);
            efla_tensor_release(flat_c);
            return NULL;
        }
    }
    out = record(op, embedding_backward, 1, (efla_tensor *const *)&weight, out, flat_c, 0, NULL);
    efla_tensor_release(flat_c);
    return out;
}

/* ---- gather ---------------------------------------------------------------------------------- */
static int gather_backward(efla_node *n, efla_tensor *const *go, efla_tensor **gi) {
    const efla_meta *m = &n->in_meta[0];
    efla_tensor *idx = efla_node_saved(n, 0);
    if (!idx) return -1;
    efla_tensor *g = efla_zeros(m->ndim, m->shape, go[0]->dtype, m->device);
    int rc = g ? scatter_add_into("gather backward", g, (int)n->params[0], idx, go[0]) : -1;
    efla_tensor_release(idx);
    if (rc) { efla_tensor_release(g); return -1; }
    gi[0] = g;
    return 0;
}

/* index has t's ndim; index.size(d) <= limit.size(d) for every d (except dim when skip_dim). */
static int check_index_fits(const char *op, const efla_tensor *index, const efla_tensor *t,
                            const char *what, int dim, int skip_dim) {
    if (index->ndim != t->ndim)
        return efla_fail("%s: the index has %d dims (shape %s) but %s has %d (shape %s); they must match",
                         op, index->ndim, efla_tshape(index), what, t->ndim, efla_tshape(t));
    for (int d = 0; d < t->ndim; d++)
        if ((!skip_dim || d != dim) && index->shape[d] > t->shape[d])
            return efla_fail("%s: index shape %s is larger than %s's shape %s at dim %d (%lld > %lld)%s",
                             op, efla_tshape(index), what, efla_tshape(t), d, (long long)index->shape[d],
                             (long long)t->shape[d], skip_dim ? "; only the indexed dim may be larger" : "");
    return 0;
}

efla_tensor *efla_gather(const efla_tensor *t, int dim, const efla_tensor *index) {
    const char *op = "gather";
    int d;
    if (t->ndim == 0) return efla_fail_null("gather: cannot index a 0-d tensor; unsqueeze it first");
    if (efla_wrap_dim(op, dim, t->ndim, &d) || check_index_dtype(op, index)) return NULL;
    if (check_index_fits(op, index, t, "the tensor", d, 1)) return NULL;
    if (efla_check_same_device(op, t, index)) return NULL;
    const efla_backend *b = efla_backend_for(op, t->device);
    if (!b) return NULL;
    if (!b->gather) { efla_no_kernel(op, t->device); return NULL; }
    efla_tensor *out = efla_empty(index->ndim, index->shape, t->dtype, t->device);
    efla_tensor *idx = out ? efla_contiguous(index) : NULL;
    if (!idx) { efla_tensor_release(out); return NULL; }
    if (efla_tensor_numel(out) && b->gather(out, t, d, idx)) {
        efla_error_prefix(op);
        efla_tensor_release(out);
        efla_tensor_release(idx);
        return NULL;
    }
    double p = d;
    out = record(op, gather_backward, 1, (efla_tensor *const *)&t, out, idx, 1, &p);
    efla_tensor_release(idx);
    return out;
}

/* ---- scatter_add -------------------------------------------------------------------------------- */
static int scatter_add_backward(efla_node *n, efla_tensor *const *go, efla_tensor **gi) {
    if (efla_node_needs_grad(n, 0)) { efla_tensor_retain(go[0]); gi[0] = go[0]; }
    if (!efla_node_needs_grad(n, 1)) return 0;
    const efla_meta *ms = &n->in_meta[1];
    efla_tensor *idx = efla_node_saved(n, 0);
    if (!idx) return -1;
    efla_tensor *g = efla_gather(go[0], (int)n->params[0], idx);
    int same = g && idx->ndim == ms->ndim && !memcmp(idx->shape, ms->shape, sizeof(int64_t) * (size_t)ms->ndim);
    if (g && !same) {
        /* The index covers only the leading part of src: the rest gets zero gradient. */
        efla_tensor *full = efla_zeros(ms->ndim, ms->shape, g->dtype, ms->device);
        efla_tensor *part = full;
        if (part) efla_tensor_retain(part);
        for (int d = 0; part && d < ms->ndim; d++) {
            efla_tensor *p2 = efla_narrow(part, d, 0, idx->shape[d]);
            efla_tensor_release(part);
            part = p2;
        }
        int rc = part ? efla_copy_(part, g) : -1;
        efla_tensor_release(part);
        efla_tensor_release(g);
        g = rc ? NULL : full;
        if (rc) efla_tensor_release(full);
    }
    efla_tensor_release(idx);
    if (!g) return -1;
    gi[1] = g;
    return 0;
}

efla_tensor *efla_scatter_add(const efla_tensor *t, int dim, const efla_tensor *index, const efla_tensor *src) {
    const char *op = "scatter_add";
    int d;
    if (!src) return efla_fail_null("scatter_add: src is NULL");
    if (t->ndim == 0) return efla_fail_null("scatter_add: cannot index a 0-d tensor; unsqueeze it first");
    if (efla_wrap_dim(op, dim, t->ndim, &d) || check_index_dtype(op, index)) return NULL;
    if (src->dtype != t->dtype)
        return efla_fail_null("scatter_add: src is %s but the tensor is %s; cast src with :to() first",
                              efla_dtype_name(src->dtype), efla_dtype_name(t->dtype));
    if (check_index_fits(op, index, t, "the tensor", d, 1) || check_index_fits(op, index, src, "src", d, 0))
        return NULL;
    if (efla_check_same_device(op, t, index) || efla_check_same_device(op, t, src)) return NULL;
    const efla_backend *b = efla_backend_for(op, t->device);
    if (!b) return NULL;
    if (!b->scatter_add || !b->copy) { efla_no_kernel(b->copy ? op : "copy_", t->device); return NULL; }
    efla_tensor *out = efla_empty(t->ndim, t->shape, t->dtype, t->device);
    efla_tensor *idx = out ? efla_contiguous(index) : NULL;
    if (!idx) { efla_tensor_release(out); return NULL; }
    int rc = efla_tensor_numel(out) ? b->copy(out, t) : 0;
    if (!rc && efla_tensor_numel(index) && b->scatter_add(out, d, idx, src)) { efla_error_prefix(op); rc = -1; }
    if (rc) { efla_tensor_release(out); efla_tensor_release(idx); return NULL; }
    efla_tensor *inputs[2] = { (efla_tensor *)t, (efla_tensor *)src };
    double p = d;
    out = record(op, scatter_add_backward, 2, inputs, out, idx, 1, &p);
    efla_tensor_release(idx);
    return out;
}

/* ---- one_hot (not differentiable: computed on the host, then moved) ------------------------------ */
efla_tensor *efla_one_hot(const efla_tensor *index, int64_t num_classes) {
    const char *op = "one_hot";
    if (check_index_dtype(op, index)) return NULL;
    if (num_classes < -1)
        return efla_fail_null("one_hot: num_classes must be -1 (infer) or >= 0, got %lld", (long long)num_classes);
    if (index->ndim + 1 > EFLA_MAX_DIMS)
        return efla_fail_null("one_hot: the index has %d dims; the output would need %d, more than %d",
                              index->ndim, index->ndim + 1, EFLA_MAX_DIMS);
    int64_t n = efla_tensor_numel(index);
    if (num_classes == -1 && n == 0)
        return efla_fail_null("one_hot: cannot infer num_classes from an empty index; pass it explicitly");
    int64_t *ids = malloc((size_t)(n ? n : 1) * sizeof *ids);
    if (!ids) return efla_fail_null("one_hot: out of memory reading %lld indices", (long long)n);
    if (efla_to_buffer(index, ids, (size_t)n * sizeof *ids)) { free(ids); efla_error_prefix(op); return NULL; }
    int64_t lo = 0, hi = -1;
    for (int64_t i = 0; i < n; i++) {
        if (i == 0 || ids[i] < lo) lo = ids[i];
        if (i == 0 || ids[i] > hi) hi = ids[i];
    }
    if (num_classes == -1) num_classes = hi + 1;
    if (n && lo < 0) {
        free(ids);
        return efla_fail_null("one_hot: class index %lld is negative; classes are 0..num_classes-1", (long long)lo);
    }
    if (n && hi >= num_classes) {
        free(ids);
        return efla_fail_null("one_hot: class index %lld is out of range for num_classes %lld", (long long)hi,
                              (long long)num_classes);
    }
    int64_t shape[EFLA_MAX_DIMS];
    memcpy(shape, index->shape, sizeof(int64_t) * (size_t)index->ndim);
    shape[index->ndim] = num_classes;
    efla_tensor *out = efla_empty(index->ndim + 1, shape, EFLA_INT64, EFLA_DEVICE_CPU);
    if (out) {
        int64_t *o = (int64_t *)efla_cpu_ptr(out);
        memset(o, 0, (size_t)(n * num_classes) * sizeof *o);
        for (int64_t i = 0; i < n; i++) o[i * num_classes + ids[i]] = 1;
    }
    free(ids);
    if (out && index->device != EFLA_DEVICE_CPU) {
        efla_tensor *moved = efla_to(out, EFLA_INT64, index->device);
        efla_tensor_release(out);
        out = moved;
    }
    return out;
}

/* ---- cat / stack ------------------------------------------------------------------------------------ */
static int cat_backward(efla_node *n, efla_tensor *const *go, efla_tensor **gi) {
    int d = (int)n->params[0];
    int64_t off = 0;
    for (int i = 0; i < n->n_inputs; i++) {
        int64_t len = efla_node_input_size(n, i, d);
        if (efla_node_needs_grad(n, i) && !(gi[i] = efla_narrow(go[0], d, off, len))) return -1;
        off += len;
    }
    return 0;
}

static int stack_backward(efla_node *n, efla_tensor *const *go, efla_tensor **gi) {
    int d = (int)n->params[0];
    for (int i = 0; i < n->n_inputs; i++)
        if (efla_node_needs_grad(n, i) && !(gi[i] = efla_select(go[0], d, i))) return -1;
    return 0;
}

/* Common checks of cat and stack: tensors present, one device; returns the promoted dtype. */
static int check_join(const char *op, int n, efla_tensor *const *ts, efla_dtype *dtype) {
    if (n < 1 || !ts) return efla_fail("%s: needs at least one tensor, got %d", op, n);
    for (int i = 0; i < n; i++) {
        if (!ts[i]) return efla_fail("%s: tensor %d is NULL", op, i);
        if (ts[i]->device != ts[0]->device)
            return efla_fail("%s: tensor %d is on %s but tensor 0 is on %s; move them to one device first", op, i,
                             efla_device_name(ts[i]->device), efla_device_name(ts[0]->device));
    }
    *dtype = ts[0]->dtype;
    for (int i = 1; i < n; i++) *dtype = efla_promote_types(*dtype, ts[i]->dtype);
    return 0;
}

/* Copy ts[i] into view(out, i) for every i (with grad mode off: these are plain writes),
 * then record the node. */
static efla_tensor *join(const char *op, int n, efla_tensor *const *ts, efla_tensor *out, int d, int is_stack) {
    int prev = efla_set_grad_enabled(0);
    int64_t off = 0;
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        int64_t len = is_stack ? 1 : ts[i]->shape[d];
        if (len == 0 || efla_tensor_numel(ts[i]) == 0) continue;
        efla_tensor *v = is_stack ? efla_select(out, d, i) : efla_narrow(out, d, off, len);
        rc = v ? efla_copy_(v, ts[i]) : -1;
        efla_tensor_release(v);
        off += len;
    }
    efla_set_grad_enabled(prev);
    if (rc) { efla_error_prefix(op); efla_tensor_release(out); return NULL; }
    double p = d;
    return record(op, is_stack ? stack_backward : cat_backward, n, ts, out, NULL, 1, &p);
}

efla_tensor *efla_cat(int n, efla_tensor *const *ts, int dim) {
    const char *op = "cat";
    efla_dtype dtype;
    int d;
    if (check_join(op, n, ts, &dtype)) return NULL;
    int nd = ts[0]->ndim;
    if (nd == 0) return efla_fail_null("cat: tensor 0 is 0-d; 0-d tensors cannot be concatenated (use stack)");
    if (efla_wrap_dim(op, dim, nd, &d)) return NULL;
    int64_t shape[EFLA_MAX_DIMS];
    memcpy(shape, ts[0]->shape, sizeof shape);
    shape[d] = 0;
    for (int i = 0; i < n; i++) {
        const efla_tensor *t = ts[i];
        bool ok = t->ndim == nd;
        for (int k = 0; ok && k < nd; k++) ok = k == d || t->shape[k] == ts[0]->shape[k];
        if (!ok)
            return efla_fail_null("cat: tensor %d has shape %s but tensor 0 has shape %s; all sizes must match "
                                  "except in the concatenated dim %d", i, efla_tshape(t), efla_tshape(ts[0]), d);
        shape[d] += t->shape[d];
    }
    efla_tensor *out = efla_empty(nd, shape, dtype, ts[0]->device);
    return out ? join(op, n, ts, out, d, 0) : NULL;
}

efla_tensor *efla_stack(int n, efla_tensor *const *ts, int dim) {
    const char *op = "stack";
    efla_dtype dtype;
    int d;
    if (check_join(op, n, ts, &dtype)) return NULL;
    int nd = ts[0]->ndim;
    if (nd + 1 > EFLA_MAX_DIMS)
        return efla_fail_null("stack: the inputs have %d dims; the result would need %d, more than %d", nd, nd + 1,
                              EFLA_MAX_DIMS);
    if (efla_wrap_dim(op, dim, nd + 1, &d)) return NULL;
    for (int i = 1; i < n; i++)
        if (ts[i]->ndim != nd || memcmp(ts[i]->shape, ts[0]->shape, sizeof(int64_t) * (size_t)nd))
            return efla_fail_null("stack: tensor %d has shape %s but tensor 0 has shape %s; stack needs equal shapes",
                                  i, efla_tshape(ts[i]), efla_tshape(ts[0]));
    int64_t shape[EFLA_MAX_DIMS];
    for (int i = 0, k = 0; i <= nd; i++) shape[i] = i == d ? n : ts[0]->shape[k++];
    efla_tensor *out = efla_empty(nd + 1, shape, dtype, ts[0]->device);
    return out ? join(op, n, ts, out, d, 1) : NULL;
}

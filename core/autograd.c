/* autograd.c: the tape (nodes recorded by ops) and the reverse-mode engine.
 *
 * Each differentiable op that sees an input requiring grad (with grad mode on) records a
 * node: its backward function, the tensors it saved, and one edge per input (to the node
 * that produced it, or to the leaf that accumulates). efla_backward walks the nodes in
 * reverse topological order (Kahn's algorithm on dependency counts), so a node runs once,
 * after every consumer of its outputs has contributed. */
#include "autograd.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local int grad_disabled;   /* 0 = enabled (the default) */

int efla_grad_enabled(void) { return !grad_disabled; }
int efla_set_grad_enabled(int enabled) {
    int prev = !grad_disabled;
    grad_disabled = !enabled;
    return prev;
}

bool efla_any_requires_grad(int n, efla_tensor *const *inputs) {
    if (grad_disabled) return false;
    for (int i = 0; i < n; i++)
        if (inputs[i] && inputs[i]->requires_grad) return true;
    return false;
}

/* ---- nodes ---------------------------------------------------------------------------- */
void efla_node_retain(efla_node *n) { if (n) atomic_fetch_add(&n->refcount, 1); }

static void free_saved(efla_node *n) {
    for (int i = 0; i < n->n_saved; i++) efla_tensor_release(n->saved[i].t);
    n->n_saved = 0;
    if (n->free_ctx && n->ctx) n->free_ctx(n->ctx);
    n->ctx = NULL;
    n->free_ctx = NULL;
}

void efla_node_release(efla_node *n) {
    if (!n || atomic_fetch_sub(&n->refcount, 1) != 1) return;
    /* Release iteratively along single chains to avoid deep recursion on long graphs. */
    while (n) {
        efla_node *next = NULL;
        free_saved(n);
        for (int i = 0; i < n->n_inputs; i++) {
            efla_tensor_release(n->edges[i].leaf);
            efla_node *fn = n->edges[i].fn;
            if (fn && atomic_fetch_sub(&fn->refcount, 1) == 1) {
                if (!next) next = fn;
                else { atomic_fetch_add(&fn->refcount, 1); efla_node_release(fn); }
            }
        }
        free(n->edges);
        free(n->in_meta);
        free(n->out_meta);
        free(n->saved);
        free(n->grads);
        free(n);
        n = next;
    }
}

static void meta_of(efla_meta *m, const efla_tensor *t) {
    m->ndim = t->ndim;
    memcpy(m->shape, t->shape, sizeof m->shape);
    m->dtype = t->dtype;
    m->device = t->device;
}

efla_node *efla_node_record(const char *name, efla_backward_fn backward, int n_inputs,
                            efla_tensor *const *inputs, int n_outputs, efla_tensor *const *outputs) {
    if (!efla_any_requires_grad(n_inputs, inputs)) return NULL;
    if (!backward || n_outputs < 1)
        return efla_fail_null("%s: a recorded node needs a backward function and at least one output",
                              name ? name : "node_record");
    for (int i = 0; i < n_outputs; i++) {
        if (!outputs[i]) return efla_fail_null("%s: output %d is NULL", name, i);
        if (outputs[i]->grad_fn)
            return efla_fail_null("%s: output %d already belongs to node %s", name, i,
                                  outputs[i]->grad_fn->name);
    }
    efla_node *n = calloc(1, sizeof *n);
    if (!n) return efla_fail_null("%s: out of memory recording the autograd node", name);
    atomic_init(&n->refcount, 0);
    snprintf(n->name, sizeof n->name, "%s", name ? name : "custom");
    n->backward = backward;
    n->n_inputs = n_inputs;
    n->n_outputs = n_outputs;
    n->edges = calloc((size_t)(n_inputs ? n_inputs : 1), sizeof *n->edges);
    n->in_meta = calloc((size_t)(n_inputs ? n_inputs : 1), sizeof *n->in_meta);
    n->out_meta = calloc((size_t)n_outputs, sizeof *n->out_meta);
    if (!n->edges || !n->in_meta || !n->out_meta) {
        free(n->edges); free(n->in_meta); free(n->out_meta); free(n);
        return efla_fail_null("%s: out of memory recording the autograd node", name);
    }
    for (int i = 0; i < n_inputs; i++) {
        efla_tensor *in = inputs[i];
        if (!in) continue;
        meta_of(&n->in_meta[i], in);
        if (!in->requires_grad) continue;
        if (in->grad_fn) {
            n->edges[i].fn = in->grad_fn;
            n->edges[i].output_nr = in->output_nr;
            efla_node_retain(in->grad_fn);
        } else {
            n->edges[i].leaf = in;
            efla_tensor_retain(in);
        }
    }
    for (int i = 0; i < n_outputs; i++) {
        meta_of(&n->out_meta[i], outputs[i]);
        outputs[i]->requires_grad = true;
        outputs[i]->grad_fn = n;
        outputs[i]->output_nr = i;
        efla_node_retain(n);
    }
    return n;
}

int efla_record1(const char *name, efla_backward_fn fn, int n_inputs, efla_tensor *const *inputs,
                 efla_tensor *out, efla_node **node) {
    efla_clear_error();
    efla_node *n = efla_node_record(name, fn, n_inputs, inputs, 1, &out);
    if (node) *node = n;
    if (!n && efla_last_error()[0]) return -1;
    return 0;
}

int efla_node_save(efla_node *n, const efla_tensor *t) {
    if (!t) return efla_fail("%s: cannot save a NULL tensor for backward", n->name);
    if (n->n_saved == n->cap_saved) {
        int cap = n->cap_saved ? n->cap_saved * 2 : 4;
        efla_saved *s = realloc(n->saved, (size_t)cap * sizeof *s);
        if (!s) return efla_fail("%s: out of memory saving a tensor for backward", n->name);
        n->saved = s;
        n->cap_saved = cap;
    }
    efla_tensor *alias = efla_tensor_alias(t);
    if (!alias) return -1;
    n->saved[n->n_saved].t = alias;
    n->saved[n->n_saved].version = t->storage->version;
    return n->n_saved++;
}

efla_tensor *efla_node_saved(efla_node *n, int slot) {
    if (n->freed)
        return efla_fail_null("backward of %s: its saved tensors were already freed by an earlier "
                              "backward; pass retain_graph=true to the first backward to go through "
                              "the graph twice", n->name);
    if (slot < 0 || slot >= n->n_saved)
        return efla_fail_null("backward of %s: no saved tensor in slot %d", n->name, slot);
    efla_saved *s = &n->saved[slot];
    if (s->t->storage->version != s->version)
        return efla_fail_null("backward of %s: saved tensor %d (shape %s, %s) was modified by an in-place "
                              "operation after it was saved (version %lld, now %lld); clone() it "
                              "before changing it in place", n->name, slot, efla_tshape(s->t),
                              efla_dtype_name(s->t->dtype), (long long)s->version,
                              (long long)s->t->storage->version);
    efla_tensor_retain(s->t);
    return s->t;
}

int efla_node_needs_grad(const efla_node *n, int i) {
    return i >= 0 && i < n->n_inputs && (n->edges[i].fn || n->edges[i].leaf);
}
void efla_node_set_ctx(efla_node *n, void *ctx, void (*free_ctx)(void *)) { n->ctx = ctx; n->free_ctx = free_ctx; }
void *efla_node_ctx(const efla_node *n) { return n->ctx; }
void efla_node_set_params(efla_node *n, int k, const double *p) {
    for (int i = 0; i < k && i < 8; i++) n->params[i] = p[i];
}
double efla_node_param(const efla_node *n, int i) { return (i >= 0 && i < 8) ? n->params[i] : NAN; }
int64_t efla_node_input_size(const efla_node *n, int i, int dim) {
    if (i < 0 || i >= n->n_inputs || dim < 0 || dim >= n->in_meta[i].ndim) return -1;
    return n->in_meta[i].shape[dim];
}
int efla_node_input_ndim(const efla_node *n, int i) {
    return (i >= 0 && i < n->n_inputs) ? n->in_meta[i].ndim : -1;
}
const char *efla_node_name(const efla_node *n) { return n->name; }

/* ---- tensor-side autograd API --------------------------------------------------------- */
int efla_requires_grad(const efla_tensor *t) { return t->requires_grad; }
int efla_is_leaf(const efla_tensor *t) { return t->grad_fn == NULL; }
const char *efla_grad_fn_name(const efla_tensor *t) { return t->grad_fn ? t->grad_fn->name : NULL; }

int efla_set_requires_grad(efla_tensor *t, int flag) {
    if (t->grad_fn)
        return efla_fail("requires_grad_: only leaf tensors can change requires_grad; this one is the "
                         "output of %s (use detach() to make a leaf)", t->grad_fn->name);
    if (flag && !efla_dtype_is_floating(t->dtype))
        return efla_fail("requires_grad_: only floating-point tensors can require gradients, not %s "
                         "(cast with :float() or :double() first)", efla_dtype_name(t->dtype));
    t->requires_grad = flag != 0;
    return 0;
}

efla_tensor *efla_grad(const efla_tensor *t) {
    if (t->grad) efla_tensor_retain(t->grad);
    return t->grad;
}

int efla_set_grad(efla_tensor *t, efla_tensor *g) {
    if (g && (g->ndim != t->ndim || memcmp(g->shape, t->shape, sizeof(int64_t) * (size_t)t->ndim)))
        return efla_fail("set_grad: gradient shape %s does not match the tensor's %s",
                         efla_tshape(g), efla_tshape(t));
    if (g) efla_tensor_retain(g);
    efla_tensor_release(t->grad);
    t->grad = g;
    return 0;
}

efla_tensor *efla_detach(const efla_tensor *t) { return efla_tensor_alias(t); }

efla_tensor *efla_plain(const efla_tensor *t) {
    efla_tensor *d = efla_detach(t);
    if (!d) return NULL;
    efla_tensor *c = efla_contiguous(d);
    efla_tensor_release(d);
    return c;
}

/* ---- the engine --------------------------------------------------------------------------- */
efla_tensor *efla_sum_to_shape(const efla_tensor *g, int ndim, const int64_t *shape) {
    if (g->ndim == ndim && !memcmp(g->shape, shape, sizeof(int64_t) * (size_t)ndim)) {
        efla_tensor_retain((efla_tensor *)g);
        return (efla_tensor *)g;
    }
    int dims[EFLA_MAX_DIMS], nd = 0, lead = g->ndim - ndim;
    for (int d = 0; d < g->ndim; d++) {
        int sd = d - lead;
        if (sd < 0 || (shape[sd] == 1 && g->shape[d] != 1)) dims[nd++] = d;
    }
    efla_tensor *s;
    if (nd) s = efla_reduce(EFLA_SUM, g, nd, dims, 1, 0);
    else { s = (efla_tensor *)g; efla_tensor_retain(s); }
    if (!s) return NULL;
    efla_tensor *r = efla_reshape(s, ndim, shape);
    efla_tensor_release(s);
    return r;
}

/* Add g into *slot (taking ownership of g). Converts to the expected dtype/device. */
static int accumulate(efla_tensor **slot, efla_tensor *g, const efla_meta *m, const char *who) {
    if (g->ndim != m->ndim || memcmp(g->shape, m->shape, sizeof(int64_t) * (size_t)m->ndim)) {
        char want[EFLA_SHAPE_BUF];
        efla_shape_str(want, sizeof want, m->ndim, m->shape);
        int rc = efla_fail("backward: %s produced a gradient of shape %s for an input of shape %s",
                           who, efla_tshape(g), want);
        efla_tensor_release(g);
        return rc;
    }
    if (g->dtype != m->dtype || g->device != m->device) {
        efla_tensor *c = efla_to(g, m->dtype, m->device);
        efla_tensor_release(g);
        if (!c) return -1;
        g = c;
    }
    if (!*slot) { *slot = g; return 0; }
    efla_tensor *sum = efla_binary(EFLA_ADD, *slot, g);
    efla_tensor_release(g);
    if (!sum) return -1;
    efla_tensor_release(*slot);
    *slot = sum;
    return 0;
}

static int accumulate_leaf(efla_tensor *leaf, efla_tensor *g, const char *who) {
    if (g->ndim != leaf->ndim || memcmp(g->shape, leaf->shape, sizeof(int64_t) * (size_t)leaf->ndim)) {
        int rc = efla_fail("backward: %s produced a gradient of shape %s for a leaf of shape %s", who,
                           efla_tshape(g), efla_tshape(leaf));
        efla_tensor_release(g);
        return rc;
    }
    if (!leaf->grad) {
        /* A gradient that nothing else can reach (this reference is the only one to the tensor
         * and to its storage) becomes .grad as it is: no copy of every weight's gradient in
         * every step. Otherwise own a fresh buffer: g may alias storage that its producer
         * still uses (a view, a tensor a node passed through, one Lua still holds), and a view
         * of a larger buffer would keep all of it alive. */
        if (g->dtype == leaf->dtype && g->device == leaf->device && !g->grad_fn && !g->requires_grad &&
            atomic_load(&g->refcount) == 1 && atomic_load(&g->storage->refcount) == 1 && g->offset == 0 &&
            efla_tensor_is_contiguous(g) &&
            g->storage->nbytes == (size_t)efla_tensor_numel(g) * efla_dtype_size(g->dtype)) {
            leaf->grad = g;
            return 0;
        }
        efla_tensor *c = efla_to(g, leaf->dtype, leaf->device);
        if (c == g) { efla_tensor_release(c); c = efla_clone(g); }
        efla_tensor_release(g);
        if (!c) return -1;
        leaf->grad = c;
        return 0;
    }
    /* In place, so that a grad the user (or an optimiser) holds sees the sum. */
    int rc = efla_binary_(EFLA_ADD, leaf->grad, g);
    efla_tensor_release(g);
    return rc;
}

static efla_grad_ready_fn grad_ready_fn;
static void *grad_ready_ud;

void efla_set_grad_ready_hook(efla_grad_ready_fn fn, void *ud) {
    grad_ready_fn = fn;
    grad_ready_ud = fn ? ud : NULL;
}

typedef struct { efla_node **items; int n, cap; } node_list;
typedef struct { efla_tensor **items; int n, cap; } leaf_list;
static int leaf_push(leaf_list *l, efla_tensor *t) {
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 64;
        efla_tensor **p = realloc(l->items, (size_t)cap * sizeof *p);
        if (!p) return efla_fail("backward: out of memory");
        l->items = p;
        l->cap = cap;
    }
    l->items[l->n++] = t;
    return 0;
}
static int list_push(node_list *l, efla_node *n) {
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 64;
        efla_node **p = realloc(l->items, (size_t)cap * sizeof *p);
        if (!p) return efla_fail("backward: out of memory");
        l->items = p;
        l->cap = cap;
    }
    l->items[l->n++] = n;
    return 0;
}

static void release_grads(node_list *all) {
    for (int i = 0; i < all->n; i++) {
        efla_node *n = all->items[i];
        if (!n->grads) continue;
        for (int j = 0; j < n->n_outputs; j++) efla_tensor_release(n->grads[j]);
        free(n->grads);
        n->grads = NULL;
    }
}

static int run_engine(efla_node *root_fn, int root_output, efla_tensor *root_grad, int retain) {
    node_list all = {0}, stack = {0}, ready = {0};
    leaf_list leaves = {0};   /* counted only while a grad-ready hook is set */
    int rc = 0;
    /* 1. discover reachable nodes and count dependencies */
    if ((rc = list_push(&stack, root_fn))) goto out;
    root_fn->deps = 0;
    if ((rc = list_push(&all, root_fn))) goto out;
    root_fn->grads = calloc((size_t)root_fn->n_outputs, sizeof(efla_tensor *));
    while (stack.n) {
        efla_node *n = stack.items[--stack.n];
        for (int i = 0; i < n->n_inputs; i++) {
            efla_tensor *leaf = n->edges[i].leaf;
            if (leaf && grad_ready_fn) {
                if (leaf->grad_pending++ == 0 && (rc = leaf_push(&leaves, leaf))) goto out;
            }
            efla_node *next = n->edges[i].fn;
            if (!next) continue;
            if (!next->grads) {
                next->grads = calloc((size_t)next->n_outputs, sizeof(efla_tensor *));
                next->deps = 0;
                if ((rc = list_push(&all, next)) || (rc = list_push(&stack, next))) goto out;
            }
            next->deps++;
        }
    }
    for (int i = 0; i < all.n; i++)
        if (!all.items[i]->grads) { rc = efla_fail("backward: out of memory"); goto out; }
    /* 2. process in topological order */
    root_fn->grads[root_output] = root_grad;
    root_grad = NULL;
    if ((rc = list_push(&ready, root_fn))) goto out;
    while (ready.n) {
        efla_node *n = ready.items[--ready.n];
        if (n->freed) {
            rc = efla_fail("backward: trying to go through the graph a second time: the saved tensors "
                           "of %s were freed by the first backward; pass retain_graph=true to the first "
                           "backward (t:backward(nil, true)) if you need to go through it twice", n->name);
            goto out;
        }
        efla_tensor *gin_stack[8];
        efla_tensor **gin = n->n_inputs <= 8 ? gin_stack : calloc((size_t)n->n_inputs, sizeof *gin);
        if (!gin) { rc = efla_fail("backward: out of memory"); goto out; }
        memset(gin, 0, sizeof(efla_tensor *) * (size_t)(n->n_inputs < 1 ? 1 : n->n_inputs));
        /* outputs that got no gradient receive zeros */
        for (int j = 0; j < n->n_outputs && !rc; j++)
            if (!n->grads[j]) {
                efla_meta *m = &n->out_meta[j];
                n->grads[j] = efla_zeros(m->ndim, m->shape, m->dtype, m->device);
                if (!n->grads[j]) rc = -1;
            }
        if (!rc) {
            efla_clear_error();
            rc = n->backward(n, n->grads, gin) < 0 ? -1 : 0;
            if (rc && !efla_last_error()[0]) efla_fail("backward of %s failed", n->name);
        }
        for (int i = 0; i < n->n_inputs; i++) {
            efla_tensor *g = gin[i];
            efla_edge *e = &n->edges[i];
            if (rc || !g || !(e->fn || e->leaf)) { efla_tensor_release(g); }
            else if (e->leaf) rc = accumulate_leaf(e->leaf, g, n->name);
            else rc = accumulate(&e->fn->grads[e->output_nr], g, &e->fn->out_meta[e->output_nr], n->name);
            if (e->fn && --e->fn->deps == 0 && !rc) rc = list_push(&ready, e->fn);
            if (e->leaf && grad_ready_fn && e->leaf->grad_pending > 0 && --e->leaf->grad_pending == 0 && !rc)
                grad_ready_fn(e->leaf, grad_ready_ud);
        }
        if (gin != gin_stack) free(gin);
        for (int j = 0; j < n->n_outputs; j++) { efla_tensor_release(n->grads[j]); n->grads[j] = NULL; }
        if (!retain) { free_saved(n); n->freed = true; }
        if (rc) goto out;
    }
out:
    for (int i = 0; i < leaves.n; i++) leaves.items[i]->grad_pending = 0;
    free(leaves.items);
    efla_tensor_release(root_grad);
    release_grads(&all);
    free(all.items);
    free(stack.items);
    free(ready.items);
    return rc;
}

int efla_backward(efla_tensor *root, const efla_tensor *grad, int retain_graph) {
    if (!root->requires_grad)
        return efla_fail("backward: this tensor (shape %s) does not require grad: none of the inputs it "
                         "was computed from had requires_grad set (or it was computed under no_grad)",
                         efla_tshape(root));
    efla_tensor *g;
    if (grad) {
        if (grad->ndim != root->ndim || memcmp(grad->shape, root->shape, sizeof(int64_t) * (size_t)root->ndim))
            return efla_fail("backward: the gradient's shape %s differs from the tensor's %s",
                             efla_tshape(grad), efla_tshape(root));
        g = efla_to(grad, root->dtype, root->device);
    } else {
        if (efla_tensor_numel(root) != 1)
            return efla_fail("backward: the tensor has shape %s; backward without a gradient needs a "
                             "one-element tensor (reduce it with :sum() or :mean(), or pass a gradient "
                             "of the same shape)", efla_tshape(root));
        g = efla_ones(root->ndim, root->shape, root->dtype, root->device);
    }
    if (!g) return -1;
    int prev = efla_set_grad_enabled(0);
    int rc;
    if (!root->grad_fn) {
        rc = accumulate_leaf(root, g, "backward");
        if (!rc && grad_ready_fn) grad_ready_fn(root, grad_ready_ud);
    }
    else rc = run_engine(root->grad_fn, root->output_nr, g, retain_graph);
    efla_set_grad_enabled(prev);
    return rc;
}

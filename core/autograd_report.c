/* autograd_report.c: where the activation memory of a graph goes. efla_graph_saved walks the
 * nodes behind a root tensor and adds up, per node name, the bytes of the tensors those nodes
 * saved for backward. A storage is counted once (for the first node met that saves it; a
 * tensor saved by two nodes is one allocation), and storages of leaves (parameters, inputs)
 * are left out: they live whether or not a backward follows. */
#include "autograd.h"
#include "addr_set.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int add_entry(efla_saved_entry *out, int cap, int *n_names, const char *name, int64_t bytes,
                     int64_t tensors) {
    for (int i = 0; i < *n_names && i < cap; i++)
        if (strcmp(out[i].name, name) == 0) {
            out[i].nodes++;
            out[i].tensors += tensors;
            out[i].bytes += bytes;
            return 0;
        }
    if (*n_names < cap) {
        efla_saved_entry *e = &out[*n_names];
        memset(e, 0, sizeof *e);
        snprintf(e->name, sizeof e->name, "%s", name);
        e->nodes = 1;
        e->tensors = tensors;
        e->bytes = bytes;
    }
    (*n_names)++;
    return 0;
}

static int by_bytes_desc(const void *a, const void *b) {
    const efla_saved_entry *x = a, *y = b;
    return x->bytes < y->bytes ? 1 : x->bytes > y->bytes ? -1 : strcmp(x->name, y->name);
}

int efla_graph_saved(const efla_tensor *root, efla_saved_entry *out, int cap, int64_t *total_bytes) {
    if (!root) return efla_fail("graph_saved: the root tensor is NULL");
    if (cap < 0 || (cap > 0 && !out)) return efla_fail("graph_saved: out must hold cap = %d entries", cap);
    if (total_bytes) *total_bytes = 0;
    if (!root->grad_fn) return 0;
    efla_addr_set nodes = {0}, storages = {0}, leaves = {0};
    size_t cap_stack = 64, top = 0;
    efla_node **stack = malloc(cap_stack * sizeof *stack), **order = NULL;   /* order: nodes as met */
    size_t n_order = 0;
    int n_names = 0, rc = -1;
    int64_t total = 0;
    if (!stack) goto oom;
    /* pass 1: every node, and the storages of the leaves their edges reach */
    stack[top++] = root->grad_fn;
    if (efla_addr_set_add(&nodes, (uintptr_t)root->grad_fn) < 0) goto oom;
    while (top) {
        efla_node *n = stack[--top];
        efla_node **o2 = realloc(order, (n_order + 1) * sizeof *order);
        if (!o2) goto oom;
        order = o2;
        order[n_order++] = n;
        for (int i = 0; i < n->n_inputs; i++) {
            if (n->edges[i].leaf && efla_addr_set_add(&leaves, (uintptr_t)n->edges[i].leaf->storage) < 0) goto oom;
            efla_node *fn = n->edges[i].fn;
            if (!fn) continue;
            int added = efla_addr_set_add(&nodes, (uintptr_t)fn);
            if (added < 0) goto oom;
            if (!added) continue;
            if (top == cap_stack) {
                efla_node **s2 = realloc(stack, 2 * cap_stack * sizeof *stack);
                if (!s2) goto oom;
                stack = s2;
                cap_stack *= 2;
            }
            stack[top++] = fn;
        }
    }
    /* pass 2: the saved storages, each once, leaves' left out */
    for (size_t i = 0; i < n_order; i++) {
        efla_node *n = order[i];
        int64_t bytes = 0, tensors = 0;
        for (int s = 0; s < n->n_saved; s++) {
            const efla_storage *st = n->saved[s].t->storage;
            if (efla_addr_set_has(&leaves, (uintptr_t)st)) continue;
            int added = efla_addr_set_add(&storages, (uintptr_t)st);
            if (added < 0) goto oom;
            if (!added) continue;
            bytes += (int64_t)st->nbytes;
            tensors++;
        }
        total += bytes;
        add_entry(out, cap, &n_names, n->name, bytes, tensors);
    }
    if (out && cap > 0) qsort(out, (size_t)(n_names < cap ? n_names : cap), sizeof *out, by_bytes_desc);
    if (total_bytes) *total_bytes = total;
    rc = n_names;
    goto done;
oom:
    efla_fail("graph_saved: out of memory walking the graph");
done:
    free(stack);
    free(order);
    efla_addr_set_free(&nodes);
    efla_addr_set_free(&storages);
    efla_addr_set_free(&leaves);
    return rc;
}

/* autograd.h: the graph node shared by the engine (autograd.c) and the front ends that
 * record their own backward rules. Users see efla_node only through efla.h. */
#ifndef EFLA_AUTOGRAD_H
#define EFLA_AUTOGRAD_H
#include "internal.h"

/* Where a gradient goes: into another node's output, or into a leaf's .grad. */
typedef struct efla_edge {
    efla_node *fn;          /* owned ref, or NULL */
    int output_nr;
    efla_tensor *leaf;      /* owned ref to the leaf tensor, or NULL */
} efla_edge;

typedef struct efla_meta {
    int ndim;
    int64_t shape[EFLA_MAX_DIMS];
    efla_dtype dtype;
    int device;
} efla_meta;

typedef struct efla_saved {
    efla_tensor *t;         /* detached alias, owned */
    int64_t version;        /* storage version when saved */
} efla_saved;

struct efla_node {
    atomic_int refcount;
    char name[40];
    efla_backward_fn backward;
    int n_inputs, n_outputs, n_saved, cap_saved;
    efla_edge *edges;        /* [n_inputs]; both fields NULL: no gradient needed */
    efla_meta *in_meta;      /* [n_inputs] */
    efla_meta *out_meta;     /* [n_outputs] */
    efla_saved *saved;
    void *ctx;
    void (*free_ctx)(void *);
    double params[8];
    bool freed;              /* saved state released by a backward without retain_graph */
    /* engine scratch */
    int deps;
    efla_tensor **grads;     /* [n_outputs] while a backward runs */
};

void efla_node_retain(efla_node *n);
void efla_node_release(efla_node *n);
/* Sum a gradient back to a (broadcast) input shape; new ref. */
efla_tensor *efla_sum_to_shape(const efla_tensor *g, int ndim, const int64_t *shape);
/* Record a node for a builtin op with one output: shorthand over efla_node_record that
 * returns 0/-1 (a NULL node with no error is success). *node receives it (may be NULL). */
int efla_record1(const char *name, efla_backward_fn fn, int n_inputs, efla_tensor *const *inputs,
                 efla_tensor *out, efla_node **node);
#endif

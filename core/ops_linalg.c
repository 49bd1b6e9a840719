/* ops_linalg.c: efla_matmul with numpy semantics and its backward rule.
 *
 *   [K] @ [K] -> 0-d          [M,K] @ [K] -> [M]          [K] @ [K,N] -> [N]
 *   [...,M,K] @ [...,K,N] -> [broadcast(...),M,N]
 *
 * Each operand becomes a [Bt, rows, cols] view (a 1-d operand a row or column vector;
 * batch dims broadcast with stride 0) and the backend's bmm does the work. The batch dims
 * of such a view merge into one whenever their strides allow (always for a contiguous
 * operand or one broadcast whole); otherwise the expanded operand is copied first. */
#include "autograd.h"
#include "backend.h"
#include <string.h>

/* View t as [Bt, rows, cols] for the broadcast batch shape bshape[nb]. vec: 0 = matrix,
 * 1 = t is 1-d and becomes a row [1,K], 2 = t is 1-d and becomes a column [K,1]. New ref. */
static efla_tensor *batched_view(const efla_tensor *t, int vec, int nb, const int64_t *bshape, int64_t rows,
                                 int64_t cols) {
    int64_t s0, s1;
    if (vec == 1) { s0 = 0; s1 = t->strides[0]; }
    else if (vec == 2) { s0 = t->strides[0]; s1 = 0; }
    else { s0 = t->strides[t->ndim - 2]; s1 = t->strides[t->ndim - 1]; }
    /* strides of the broadcast batch dims */
    int tb = vec ? 0 : t->ndim - 2;
    int64_t bst[EFLA_MAX_DIMS];
    for (int i = 0; i < nb; i++) {
        int j = i - (nb - tb);
        bst[i] = (j < 0 || (t->shape[j] == 1 && bshape[i] != 1)) ? 0 : t->strides[j];
    }
    /* merge the batch dims (size-1 dims do not matter) */
    int64_t Bt = 1, bstride = 0, prev_stride = 0;
    bool first = true, mergeable = true;
    for (int i = 0; i < nb; i++) {
        if (bshape[i] == 1) continue;
        if (!first && prev_stride != bst[i] * bshape[i]) mergeable = false;
        first = false;
        prev_stride = bst[i];
        bstride = bst[i];
        Bt *= bshape[i];
    }
    if (mergeable) {
        int64_t shape[3] = { Bt, rows, cols }, strides[3] = { bstride, s0, s1 };
        return efla_tensor_make_view(t->storage, t->offset, 3, shape, strides, t->dtype, t->device);
    }
    /* A batch layout no single stride describes: materialise the broadcast operand. */
    int64_t shape[EFLA_MAX_DIMS + 2], strides[EFLA_MAX_DIMS + 2];
    for (int i = 0; i < nb; i++) { shape[i] = bshape[i]; strides[i] = bst[i]; }
    shape[nb] = rows; shape[nb + 1] = cols;
    strides[nb] = s0; strides[nb + 1] = s1;
    efla_tensor *full = efla_tensor_make_view(t->storage, t->offset, nb + 2, shape, strides, t->dtype, t->device);
    efla_tensor *c = full ? efla_contiguous(full) : NULL;
    efla_tensor_release(full);
    if (!c) return NULL;
    int64_t shape3[3] = { Bt, rows, cols }, strides3[3] = { rows * cols, cols, 1 };
    efla_tensor *v = efla_tensor_make_view(c->storage, c->offset, 3, shape3, strides3, c->dtype, c->device);
    efla_tensor_release(c);
    return v;
}

/* ---- backward ------------------------------------------------------------------------------- */
/* Gradients (grad mode is off here): with a2/b2 the operands as matrices (1-d promoted)
 * and g2 the gradient with the promoted dims put back,
 *   ga = sum_to_shape(g2 @ b2^T),  gb = sum_to_shape(a2^T @ g2),
 * except that a shared 2-d b against a batched a uses one [K, rows] @ [rows, N] product. */
static int matmul_backward(efla_node *n, efla_tensor *const *go, efla_tensor **gi) {
    efla_tensor *a = efla_node_saved(n, 0), *b = efla_node_saved(n, 1);
    efla_tensor *a2 = NULL, *b2 = NULL, *g2 = NULL, *bt = NULL, *at = NULL, *p = NULL, *s = NULL, *af = NULL, *gf = NULL;
    int rc = -1;
    if (!a || !b) goto out;
    bool a1 = a->ndim == 1, b1 = b->ndim == 1;
    a2 = a1 ? efla_unsqueeze(a, 0) : (efla_tensor_retain(a), a);
    b2 = b1 ? efla_unsqueeze(b, 1) : (efla_tensor_retain(b), b);
    if (!a2 || !b2) goto out;
    int64_t M = a2->shape[a2->ndim - 2], K = a2->shape[a2->ndim - 1], N = b2->shape[b2->ndim - 1];
    const efla_tensor *g = go[0];
    int nbatch = g->ndim - (a1 ? 0 : 1) - (b1 ? 0 : 1);
    int64_t gs[EFLA_MAX_DIMS + 2];
    for (int i = 0; i < nbatch; i++) gs[i] = g->shape[i];
    gs[nbatch] = M;
    gs[nbatch + 1] = N;
    if (!(g2 = efla_reshape(g, nbatch + 2, gs))) goto out;

    if (efla_node_needs_grad(n, 0)) {
        if (!(bt = efla_transpose(b2, -1, -2)) || !(p = efla_matmul(g2, bt))) goto out;
        if (!(s = efla_sum_to_shape(p, a2->ndim, a2->shape))) goto out;
        if (!(gi[0] = efla_reshape(s, n->in_meta[0].ndim, n->in_meta[0].shape))) goto out;
        efla_tensor_release(p); efla_tensor_release(s);
        p = s = NULL;
    }
    if (efla_node_needs_grad(n, 1)) {
        if (b2->ndim == 2 && a2->ndim > 2) {
            int64_t ash[2] = { -1, K }, gsh[2] = { -1, N };
            if (!(af = efla_reshape(a2, 2, ash)) || !(gf = efla_reshape(g2, 2, gsh))) goto out;
            if (!(at = efla_transpose(af, 0, 1)) || !(s = efla_matmul(at, gf))) goto out;
        } else {
            if (!(at = efla_transpose(a2, -1, -2)) || !(p = efla_matmul(at, g2))) goto out;
            if (!(s = efla_sum_to_shape(p, b2->ndim, b2->shape))) goto out;
        }
        if (!(gi[1] = efla_reshape(s, n->in_meta[1].ndim, n->in_meta[1].shape))) goto out;
    }
    rc = 0;
out:
    efla_tensor_release(a); efla_tensor_release(b); efla_tensor_release(a2); efla_tensor_release(b2);
    efla_tensor_release(g2); efla_tensor_release(bt); efla_tensor_release(at); efla_tensor_release(p);
    efla_tensor_release(s); efla_tensor_release(af); efla_tensor_release(gf);
    return rc;
}

/* ---- forward ---------------------------------------------------------------------------------- */
efla_tensor *efla_matmul(const efla_tensor *a0, const efla_tensor *b0) {
    if (!a0 || !b0) return efla_fail_null("matmul: an operand is NULL");
    if (efla_check_same_device("matmul", a0, b0)) return NULL;
    if (a0->ndim == 0 || b0->ndim == 0)
        return efla_fail_null("matmul: %s @ %s: both operands need at least 1 dim (use mul for scalars)",
                              efla_tshape(a0), efla_tshape(b0));
    efla_dtype dt = efla_promote_types(a0->dtype, b0->dtype);
    if (dt == EFLA_BOOL || dt == EFLA_UINT8)
        return efla_fail_null("matmul: %s @ %s of %s: use float32, float64, bfloat16 or int64", efla_tshape(a0),
                              efla_tshape(b0), efla_dtype_name(dt));
    bool a1 = a0->ndim == 1, b1 = b0->ndim == 1;
    int64_t K = a0->shape[a0->ndim - 1], M = a1 ? 1 : a0->shape[a0->ndim - 2];
    int64_t K2 = b1 ? b0->shape[0] : b0->shape[b0->ndim - 2], N = b1 ? 1 : b0->shape[b0->ndim - 1];
    if (K != K2)
        return efla_fail_null("matmul: %s @ %s: inner sizes %lld and %lld differ", efla_tshape(a0), efla_tshape(b0),
                              (long long)K, (long long)K2);
    int nba = a0->ndim > 2 ? a0->ndim - 2 : 0, nbb = b0->ndim > 2 ? b0->ndim - 2 : 0, nb;
    int64_t bshape[EFLA_MAX_DIMS];
    if (efla_broadcast_shapes("matmul", nba, a0->shape, nbb, b0->shape, &nb, bshape))
        return efla_fail_null("matmul: %s @ %s: the batch dims (all but the last two) do not broadcast",
                              efla_tshape(a0), efla_tshape(b0));
    int nd = nb + (a1 ? 0 : 1) + (b1 ? 0 : 1);
    if (nd > EFLA_MAX_DIMS) return efla_fail_null("matmul: the result would have %d dims (at most %d)", nd, EFLA_MAX_DIMS);
    const efla_backend *be = efla_backend_for("matmul", a0->device);
    if (!be) return NULL;
    if (!be->bmm) { efla_no_kernel("matmul", a0->device); return NULL; }

    /* Casting is differentiable; the rest of the forward is recorded as one node. */
    efla_tensor *a = efla_to(a0, dt, a0->device), *b = a ? efla_to(b0, dt, b0->device) : NULL;
    efla_tensor *a3 = NULL, *b3 = NULL, *o3 = NULL, *res = NULL;
    if (!a || !b) goto out;
    int prev = efla_set_grad_enabled(0);
    a3 = batched_view(a, a1 ? 1 : 0, nb, bshape, M, K);
    b3 = a3 ? batched_view(b, b1 ? 2 : 0, nb, bshape, K, N) : NULL;
    int64_t Bt = efla_numel_of(nb, bshape);
    int64_t os[3] = { Bt, M, N };
    o3 = b3 ? efla_empty(3, os, dt, a->device) : NULL;
    int rc = o3 ? 0 : -1;
    if (!rc && Bt * M * N > 0) rc = be->bmm(o3, a3, b3);
    efla_set_grad_enabled(prev);
    if (rc) goto out;
    int64_t shape[EFLA_MAX_DIMS], strides[EFLA_MAX_DIMS];
    int k = 0;
    for (int i = 0; i < nb; i++) shape[k++] = bshape[i];
    if (!a1) shape[k++] = M;
    if (!b1) shape[k++] = N;
    efla_contiguous_strides(k, shape, strides);
    res = efla_tensor_make_view(o3->storage, o3->offset, k, shape, strides, dt, o3->device);
    if (!res) goto out;
    efla_tensor *ins[2] = { a, b };
    efla_node *n = NULL;
    if (efla_record1("matmul", matmul_backward, 2, ins, res, &n) ||
        (n && (efla_node_save(n, a) < 0 || efla_node_save(n, b) < 0))) {
        efla_tensor_release(res);
        res = NULL;
    }
out:
    efla_tensor_release(a); efla_tensor_release(b); efla_tensor_release(a3);
    efla_tensor_release(b3); efla_tensor_release(o3);
    return res;
}

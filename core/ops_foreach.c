/* ops_foreach.c: multi-tensor ops, one kernel call over a whole list of tensors (the
 * gradients of a model) instead of one small launch per tensor. Kernels in
 * core/cpu/foreach.c and cuda/foreach.cu; efla.optim.clip_grad_norm_ uses both.
 *
 *   efla_foreach_sum_squares: sum over every tensor and element of x^2, accumulated in double
 *     in a fixed order (the same bits on every run), as a new 0-d float64 tensor on the
 *     tensors' device; nothing is read back to the host.
 *   efla_foreach_scale_: t *= coef for every tensor, in place, coef a one-element tensor on
 *     that device (the clipping factor stays on the device).
 *   efla_foreach_adamw_: efla_adamw_step_ (optim.c) over lists of params, grads, m and v, the
 *     same update bit for bit (the cpu runs optim's own row functions; cuda/foreach.cu writes
 *     adamw_kernel's arithmetic again), one step count for the list.
 *
 * Tensors are contiguous (gradients are), floating, on one device; their dtypes and sizes
 * may differ. These are optimiser steps, not differentiable ops: they record nothing. */
#include "backend.h"
#include <math.h>
#include <string.h>

static int same_shape(const efla_tensor *a, const efla_tensor *b) {
    return a->ndim == b->ndim && !memcmp(a->shape, b->shape, sizeof(int64_t) * (size_t)a->ndim);
}

/* The common checks; *device gets the list's device (the cpu for an empty list). */
static int check_list(const char *op, int n, efla_tensor *const *ts, efla_backend_op kernel, int *device) {
    *device = EFLA_DEVICE_CPU;
    if (n < 0) return efla_fail("%s: the list length is %d; it must be >= 0", op, n);
    if (n > 0 && !ts) return efla_fail("%s: the list of %d tensors is NULL", op, n);
    for (int i = 0; i < n; i++) {
        const efla_tensor *t = ts[i];
        if (!t) return efla_fail("%s: tensor %d of the list is NULL", op, i);
        if (t->device != ts[0]->device)
            return efla_fail("%s: tensor %d is on %s but tensor 0 is on %s; all tensors of the list must be "
                             "on one device (move them first, or call the op once per device)", op, i,
                             efla_device_name(t->device), efla_device_name(ts[0]->device));
        if (!efla_dtype_is_floating(t->dtype))
            return efla_fail("%s: tensor %d is %s; the list must hold floating tensors (float32, float64, "
                             "bfloat16)", op, i, efla_dtype_name(t->dtype));
        if (!efla_tensor_is_contiguous(t))
            return efla_fail("%s: tensor %d (shape %s) is not contiguous; pass t:contiguous() instead", op, i,
                             efla_tshape(t));
        if (efla_check_kernel(op, kernel, t->device, t->dtype, "cast the tensor to float32 first")) return -1;
    }
    if (n > 0) *device = ts[0]->device;
    return 0;
}

efla_tensor *efla_foreach_sum_squares(int n, efla_tensor *const *ts) {
    const char *op = "foreach_sum_squares";
    int device;
    if (check_list(op, n, ts, EFLA_OP_foreach_sum_squares, &device)) return NULL;
    for (int i = 0; i < n; i++)
        if (efla_grad_enabled() && ts[i]->requires_grad)
            return efla_fail_null("%s: tensor %d requires grad, but this op records no gradient; call it with "
                                  "grad mode off (no_grad) or on detached tensors", op, i);
    if (n == 0) return efla_zeros(0, NULL, EFLA_FLOAT64, EFLA_DEVICE_CPU);
    const efla_backend *be = efla_backend_for(op, device);
    if (!be) return NULL;
    efla_tensor *out = efla_empty(0, NULL, EFLA_FLOAT64, device);
    if (!out) return NULL;
    if (be->foreach_sum_squares(out, n, (const efla_tensor *const *)ts)) {
        efla_tensor_release(out);
        return NULL;
    }
    return out;
}

/* 1 when the element ranges of a and b share bytes */
static int overlap(const efla_tensor *a, const efla_tensor *b) {
    if (a->storage != b->storage) return 0;
    int64_t na = efla_tensor_numel(a) * (int64_t)efla_dtype_size(a->dtype);
    int64_t nb = efla_tensor_numel(b) * (int64_t)efla_dtype_size(b->dtype);
    int64_t a0 = a->offset * (int64_t)efla_dtype_size(a->dtype), b0 = b->offset * (int64_t)efla_dtype_size(b->dtype);
    return na > 0 && nb > 0 && a0 < b0 + nb && b0 < a0 + na;
}

int efla_foreach_scale_(int n, efla_tensor *const *ts, const efla_tensor *coef) {
    const char *op = "foreach_scale_";
    int device;
    if (check_list(op, n, ts, EFLA_OP_foreach_scale, &device)) return -1;
    if (!coef) return efla_fail("%s: coef is NULL", op);
    if (efla_tensor_numel(coef) != 1 || !efla_dtype_is_floating(coef->dtype))
        return efla_fail("%s: coef must be a one-element floating tensor, got %s of shape %s", op,
                         efla_dtype_name(coef->dtype), efla_tshape(coef));
    if (n == 0) return 0;
    if (coef->device != device)
        return efla_fail("%s: coef is on %s but the tensors are on %s; move coef to %s", op,
                         efla_device_name(coef->device), efla_device_name(device), efla_device_name(device));
    for (int i = 0; i < n; i++) {
        const efla_tensor *t = ts[i];
        if (efla_grad_enabled() && t->requires_grad)
            return efla_fail("%s: tensor %d requires grad; scale it with grad mode off (no_grad)", op, i);
        for (int j = 0; j < i; j++)
            if (overlap(ts[j], t))
                return efla_fail("%s: tensors %d and %d share memory, so it would be scaled twice; list each "
                                 "tensor once", op, j, i);
    }
    const efla_backend *be = efla_backend_for(op, device);
    if (!be) return -1;
    /* The kernels read a float64 coef that no write of theirs can touch: cast or copy it when
     * it is something else or lies inside one of the tensors. */
    int aliased = 0;
    for (int i = 0; i < n; i++) aliased |= overlap(coef, ts[i]);
    int prev = efla_set_grad_enabled(0);
    efla_tensor *c = coef->dtype == EFLA_FLOAT64 && !aliased ? efla_tensor_alias(coef) : efla_to(coef, EFLA_FLOAT64, device);
    if (c && aliased && c->storage == coef->storage) {   /* efla_to of a float64 tensor may return itself */
        efla_tensor *copy = efla_clone(c);
        efla_tensor_release(c);
        c = copy;
    }
    efla_set_grad_enabled(prev);
    if (!c) return -1;
    int rc = be->foreach_scale(n, ts, c);
    efla_tensor_release(c);
    for (int i = 0; i < n; i++) efla_bump_version(ts[i]);
    return rc;
}

/* efla_foreach_adamw_: the checks of efla_adamw_step_ (optim.c) for every index, naming it,
 * plus contiguity, one device for the list, and no memory written twice. */
int efla_foreach_adamw_(int n, efla_tensor *const *ps, const efla_tensor *const *gs, efla_tensor *const *ms,
                        efla_tensor *const *vs, double lr, double beta1, double beta2, double eps,
                        double weight_decay, int64_t step) {
    const char *op = "foreach_adamw_";
    if (n < 0) return efla_fail("%s: the list length is %d; it must be >= 0", op, n);
    if (n > 0 && (!ps || !gs || !ms || !vs))
        return efla_fail("%s: the list of %s is NULL", op, !ps ? "params" : !gs ? "grads" : !ms ? "m" : "v");
    if (step < 1) return efla_fail("%s: step is %lld; it counts from 1", op, (long long)step);
    if (!(beta1 >= 0 && beta1 < 1) || !(beta2 >= 0 && beta2 < 1))
        return efla_fail("%s: betas (%g, %g) must lie in [0, 1)", op, beta1, beta2);
    if (!(lr >= 0) || !(eps >= 0) || !(weight_decay >= 0) || !isfinite(lr))
        return efla_fail("%s: lr %g, eps %g, weight_decay %g must be finite and >= 0", op, lr, eps, weight_decay);
    const char *names[4] = { "param", "grad", "m", "v" };
    for (int i = 0; i < n; i++) {
        const efla_tensor *q[4] = { ps[i], gs[i], ms[i], vs[i] };
        for (int k = 0; k < 4; k++)
            if (!q[k]) return efla_fail("%s: %s %d of the list is NULL", op, names[k], i);
        const efla_tensor *p = q[0];
        if (p->device != ps[0]->device)
            return efla_fail("%s: param %d is on %s but param 0 is on %s; all tensors of the list must be on one "
                             "device (call the op once per device)", op, i, efla_device_name(p->device),
                             efla_device_name(ps[0]->device));
        for (int k = 1; k < 4; k++) {
            if (!same_shape(p, q[k]))
                return efla_fail("%s: %s %d has shape %s but param %d has shape %s; they must match", op, names[k], i,
                                 efla_tshape(q[k]), i, efla_tshape(p));
            if (q[k]->device != p->device)
                return efla_fail("%s: %s %d is on %s but param %d is on %s; move it to %s", op, names[k], i,
                                 efla_device_name(q[k]->device), i, efla_device_name(p->device),
                                 efla_device_name(p->device));
        }
        if (!efla_dtype_is_floating(p->dtype))
            return efla_fail("%s: param %d must be floating, not %s", op, i, efla_dtype_name(p->dtype));
        if (q[1]->dtype != p->dtype)
            return efla_fail("%s: grad %d is %s but param %d is %s; they must match", op, i,
                             efla_dtype_name(q[1]->dtype), i, efla_dtype_name(p->dtype));
        if (q[2]->dtype != q[3]->dtype || (q[2]->dtype != p->dtype && q[2]->dtype != EFLA_FLOAT32))
            return efla_fail("%s: m %d is %s and v %d is %s for a %s param %d; both must be the param's dtype or "
                             "float32", op, i, efla_dtype_name(q[2]->dtype), i, efla_dtype_name(q[3]->dtype),
                             efla_dtype_name(p->dtype), i);
        for (int k = 0; k < 4; k++)
            if (!efla_tensor_is_contiguous(q[k]))
                return efla_fail("%s: %s %d (shape %s) is not contiguous; pass it through :contiguous() or use "
                                 "efla.adamw_step_ for it", op, names[k], i, efla_tshape(q[k]));
        if (efla_check_kernel(op, EFLA_OP_foreach_adamw, p->device, p->dtype, "cast the parameter to float32 first"))
            return -1;
    }
    /* p, m and v are written: none may share memory with another written tensor of the list
     * (the per-tensor rule, p, m, v apart, extended to the list) */
    for (int i = 0; i < n; i++) {
        efla_tensor *w[3] = { ps[i], ms[i], vs[i] };
        for (int a = 0; a < 3; a++)
            for (int j = 0; j <= i; j++) {
                efla_tensor *o[3] = { ps[j], ms[j], vs[j] };
                for (int b = 0; b < (j == i ? a : 3); b++)
                    if (w[a]->storage == o[b]->storage && (j == i || overlap(w[a], o[b])))
                        return efla_fail("%s: %s %d and %s %d share memory; p, m and v must not share storage, and "
                                         "each tensor is listed once", op, names[b == 0 ? 0 : b + 1], j,
                                         names[a == 0 ? 0 : a + 1], i);
            }
    }
    if (n == 0) return 0;
    const efla_backend *be = efla_backend_for(op, ps[0]->device);
    if (!be) return -1;
    int rc = be->foreach_adamw(n, ps, gs, ms, vs, lr, beta1, beta2, eps, weight_decay, step);
    for (int i = 0; i < n; i++) {
        efla_bump_version(ps[i]);
        efla_bump_version(ms[i]);
        efla_bump_version(vs[i]);
    }
    return rc;
}

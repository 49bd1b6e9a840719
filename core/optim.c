/* optim.c: fused optimiser updates (the front end; kernels in core/cpu/elementwise.c).
 *
 * efla_adamw_step_ is AdamW with decoupled weight decay, in place on p, m and v:
 *   p -= lr·wd·p;  m = β1 m + (1-β1) g;  v = β2 v + (1-β2) g²;
 *   p -= lr · (m / (1-β1^step)) / (sqrt(v / (1-β2^step)) + eps)
 * It is an optimiser step, not a differentiable op: it records nothing and works on leaves
 * that require grad (that is what parameters are). */
#include "backend.h"
#include <math.h>
#include <string.h>

static int same_shape(const efla_tensor *a, const efla_tensor *b) {
    return a->ndim == b->ndim && !memcmp(a->shape, b->shape, sizeof(int64_t) * (size_t)a->ndim);
}

int efla_adamw_step_(efla_tensor *p, const efla_tensor *grad, efla_tensor *m, efla_tensor *v,
                     double lr, double beta1, double beta2, double eps, double weight_decay,
                     int64_t step) {
    const char *op = "adamw_step_";
    if (!p || !grad || !m || !v)
        return efla_fail("%s: tensor %s is NULL", op, !p ? "p" : !grad ? "grad" : !m ? "m" : "v");
    const efla_tensor *others[3] = { grad, m, v };
    const char *names[3] = { "grad", "m", "v" };
    for (int i = 0; i < 3; i++) {
        if (!same_shape(p, others[i]))
            return efla_fail("%s: %s has shape %s but the parameter has shape %s; they must match", op,
                             names[i], efla_tshape(others[i]), efla_tshape(p));
        if (efla_check_same_device(op, p, others[i])) return -1;
    }
    if (!efla_dtype_is_floating(p->dtype))
        return efla_fail("%s: the parameter must be floating, not %s", op, efla_dtype_name(p->dtype));
    if (grad->dtype != p->dtype)
        return efla_fail("%s: grad is %s but the parameter is %s; they must match", op,
                         efla_dtype_name(grad->dtype), efla_dtype_name(p->dtype));
    if (m->dtype != v->dtype || (m->dtype != p->dtype && m->dtype != EFLA_FLOAT32))
        return efla_fail("%s: m is %s and v is %s for a %s parameter; both must be the parameter's "
                         "dtype or float32", op, efla_dtype_name(m->dtype), efla_dtype_name(v->dtype),
                         efla_dtype_name(p->dtype));
    if (step < 1) return efla_fail("%s: step is %lld; it counts from 1", op, (long long)step);
    if (!(beta1 >= 0 && beta1 < 1) || !(beta2 >= 0 && beta2 < 1))
        return efla_fail("%s: betas (%g, %g) must lie in [0, 1)", op, beta1, beta2);
    if (!(lr >= 0) || !(eps >= 0) || !(weight_decay >= 0) || !isfinite(lr))
        return efla_fail("%s: lr %g, eps %g, weight_decay %g must be finite and >= 0", op, lr, eps, weight_decay);
    if (p->storage == m->storage || p->storage == v->storage || m->storage == v->storage)
        return efla_fail("%s: p, m and v must not share storage", op);
    const efla_backend *be = efla_backend_for(op, p->device);
    if (!be) return -1;
    if (!be->adamw) return efla_no_kernel(op, p->device);
    int rc = efla_tensor_numel(p) ? be->adamw(p, grad, m, v, lr, beta1, beta2, eps, weight_decay, step) : 0;
    efla_bump_version(p);
    efla_bump_version(m);
    efla_bump_version(v);
    return rc;
}

/* delta_rule_alpha.c: the step size alpha of the delta rule over arrays, the chain rule
 * through it, and the public, differentiable efla_delta_rule_alpha. The scalar formulas
 * (docs/MATH.md §2-3) live in alpha_formulas.h, shared with the CUDA kernels.
 *
 * Everything is evaluated in double, whatever the tensors' dtype: alpha is one scalar per
 * token and head, so this costs nothing next to the kernels, and float32 gains digits. */
#include "autograd.h"
#include "backend.h"
#include "alpha_formulas.h"
#include "delta_rule.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

int efla_check_order(const char *op, int order) {
    if (order == EFLA_ORDER_EXACT || (order >= 1 && order <= 4)) return 0;
    return efla_fail("%s: order %d is not supported; use 0 (EFLA_ORDER_EXACT, the exact step) or "
                     "1, 2, 3, 4 (Runge-Kutta; 1 = DeltaNet's Euler step)", op, order);
}

/* ---- scalar formulas (alpha_formulas.h, shared with the CUDA kernels) ------------------------ */
double efla_phi(int order, double x) { return efla_phi_of(order, x); }
double efla_phi_prime(int order, double x) { return efla_phi_prime_of(order, x); }

void efla_alpha_eval(double beta, double lambda, int order, int reference_eps, double *alpha,
                     double *d_beta, double *d_lambda) {
    efla_alpha_eval_of(beta, lambda, order, reference_eps, alpha, d_beta, d_lambda);
}

/* ---- array versions (the front end's contiguous buffers) ------------------------------------- */
void efla_alpha_fill(efla_dtype dt, int64_t n, const void *beta, const double *lambda, int order,
                     int reference_eps, void *alpha) {
    size_t es = efla_dtype_size(dt);
#pragma omp parallel for if (n > 16384) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        double a;
        efla_alpha_eval(efla_load_as_double((const char *)beta + i * es, dt), lambda[i], order,
                        reference_eps, &a, NULL, NULL);
        efla_store_from_double((char *)alpha + i * es, dt, a);
    }
}

void efla_alpha_backward(efla_dtype dt, int64_t n, const void *beta, const double *lambda,
                         int order, int reference_eps, const void *g, void *d_beta,
                         double *d_lambda) {
    size_t es = efla_dtype_size(dt);
#pragma omp parallel for if (n > 16384) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        double a, db, dl, gi = efla_load_as_double((const char *)g + i * es, dt);
        efla_alpha_eval(efla_load_as_double((const char *)beta + i * es, dt), lambda[i], order,
                        reference_eps, &a, &db, &dl);
        if (d_beta) efla_store_from_double((char *)d_beta + i * es, dt, gi * db);
        if (d_lambda) d_lambda[i] = gi * dl;
    }
}

void efla_alpha_v_fill(efla_dtype dt, int64_t n, const void *beta, const double *lambda, const void *g,
                       int order, void *alpha_v) {
    size_t es = efla_dtype_size(dt);
#pragma omp parallel for if (n > 16384) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        double av;
        efla_alpha_v_eval_of(efla_load_as_double((const char *)beta + i * es, dt), lambda[i],
                             efla_load_as_double((const char *)g + i * es, dt), order, &av, NULL, NULL, NULL);
        efla_store_from_double((char *)alpha_v + i * es, dt, av);
    }
}

void efla_alpha_v_backward(efla_dtype dt, int64_t n, const void *beta, const double *lambda,
                           const void *g, int order, const void *gv, void *d_beta, double *d_lambda,
                           void *d_g) {
    size_t es = efla_dtype_size(dt);
#pragma omp parallel for if (n > 16384) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        double av, db, dl, dg, gi = efla_load_as_double((const char *)gv + i * es, dt);
        efla_alpha_v_eval_of(efla_load_as_double((const char *)beta + i * es, dt), lambda[i],
                             efla_load_as_double((const char *)g + i * es, dt), order, &av, &db, &dl, &dg);
        char *pb = (char *)d_beta + i * es, *pg = (char *)d_g + i * es;
        efla_store_from_double(pb, dt, efla_load_as_double(pb, dt) + gi * db);
        efla_store_from_double(pg, dt, efla_load_as_double(pg, dt) + gi * dg);
        d_lambda[i] += gi * dl;
    }
}

/* ---- the public op ---------------------------------------------------------------------------- */
/* t (CPU, any strides) broadcast to `shape`, as a new contiguous double array. */
static double *read_broadcast(const efla_tensor *t, int ndim, const int64_t *shape) {
    int64_t n = efla_numel_of(ndim, shape), st[EFLA_MAX_DIMS], idx[EFLA_MAX_DIMS] = {0};
    double *out = malloc(sizeof(double) * (size_t)(n ? n : 1));
    if (!out) return efla_fail_null("delta_rule_alpha: out of memory");
    for (int d = 0; d < ndim; d++) {
        int td = d - (ndim - t->ndim);
        st[d] = (td < 0 || t->shape[td] == 1) ? 0 : t->strides[td];
    }
    const char *base = efla_cpu_ptr(t);
    size_t es = efla_dtype_size(t->dtype);
    for (int64_t i = 0; i < n; i++) {
        int64_t off = 0;
        for (int d = 0; d < ndim; d++) off += idx[d] * st[d];
        out[i] = efla_load_as_double(base + off * (int64_t)es, t->dtype);
        for (int d = ndim - 1; d >= 0; d--) {
            if (++idx[d] < shape[d]) break;
            idx[d] = 0;
        }
    }
    return out;
}

/* A CPU tensor with t's values and no history (t itself when already on the cpu). */
static efla_tensor *on_cpu(const efla_tensor *t) {
    efla_tensor *d = efla_detach(t);
    if (!d || d->device == EFLA_DEVICE_CPU) return d;
    efla_tensor *c = efla_to(d, d->dtype, EFLA_DEVICE_CPU);
    efla_tensor_release(d);
    return c;
}

/* A contiguous double buffer -> new tensor of `shape`, `dtype`, on `device`. */
static efla_tensor *from_doubles(const double *x, int ndim, const int64_t *shape, efla_dtype dtype,
                                 int device) {
    efla_tensor *t = efla_empty(ndim, shape, dtype, EFLA_DEVICE_CPU);
    if (!t) return NULL;
    int64_t n = efla_numel_of(ndim, shape);
    char *p = efla_cpu_ptr(t);
    size_t es = efla_dtype_size(dtype);
    for (int64_t i = 0; i < n; i++) efla_store_from_double(p + (size_t)i * es, dtype, x[i]);
    if (device == EFLA_DEVICE_CPU) return t;
    efla_tensor *m = efla_to(t, dtype, device);
    efla_tensor_release(t);
    return m;
}

enum { AL_ORDER = 0, AL_REF = 1 };

static int alpha_backward(efla_node *node, efla_tensor *const *go, efla_tensor **gi) {
    int rc = -1;
    int order = (int)efla_node_param(node, AL_ORDER), ref = (int)efla_node_param(node, AL_REF);
    efla_tensor *beta = efla_node_saved(node, 0), *lam = efla_node_saved(node, 1);
    efla_tensor *bc = NULL, *lc = NULL, *gc = NULL;
    double *b = NULL, *l = NULL, *g = NULL;
    if (!beta || !lam) goto out;
    const efla_tensor *o = go[0];
    bc = on_cpu(beta); lc = on_cpu(lam); gc = on_cpu(o);
    if (!bc || !lc || !gc) goto out;
    b = read_broadcast(bc, o->ndim, o->shape);
    l = read_broadcast(lc, o->ndim, o->shape);
    g = read_broadcast(gc, o->ndim, o->shape);
    if (!b || !l || !g) goto out;
    int64_t n = efla_tensor_numel(o);
    for (int64_t i = 0; i < n; i++) {
        double a, db, dl;
        efla_alpha_eval(b[i], l[i], order, ref, &a, &db, &dl);
        b[i] = g[i] * db;   /* in place: b becomes dL/dbeta, l dL/dlambda */
        l[i] = g[i] * dl;
    }
    const efla_tensor *ins[2] = {beta, lam};
    double *gs[2] = {b, l};
    for (int k = 0; k < 2; k++) {
        if (!efla_node_needs_grad(node, k)) continue;
        efla_tensor *full = from_doubles(gs[k], o->ndim, o->shape, ins[k]->dtype, ins[k]->device);
        if (!full) goto out;
        gi[k] = efla_sum_to_shape(full, ins[k]->ndim, ins[k]->shape);
        efla_tensor_release(full);
        if (!gi[k]) goto out;
    }
    rc = 0;
out:
    free(b); free(l); free(g);
    efla_tensor_release(bc); efla_tensor_release(lc); efla_tensor_release(gc);
    efla_tensor_release(beta); efla_tensor_release(lam);
    return rc;
}

efla_tensor *efla_delta_rule_alpha(const efla_tensor *beta, const efla_tensor *lambda, int order,
                                   int reference_eps) {
    const char *op = "delta_rule_alpha";
    if (!beta || !lambda) return efla_fail_null("%s: beta and lambda must not be NULL", op);
    if (!efla_dtype_is_floating(beta->dtype) || !efla_dtype_is_floating(lambda->dtype))
        return efla_fail_null("%s: beta (%s) and lambda (%s) must be floating point; cast with "
                              ":float() or :double()", op, efla_dtype_name(beta->dtype),
                              efla_dtype_name(lambda->dtype));
    if (efla_check_same_device(op, beta, lambda) || efla_check_order(op, order)) return NULL;
    int nd;
    int64_t shape[EFLA_MAX_DIMS];
    if (efla_broadcast_shapes(op, beta->ndim, beta->shape, lambda->ndim, lambda->shape, &nd, shape))
        return NULL;
    efla_dtype dt = efla_promote_types(beta->dtype, lambda->dtype);
    efla_tensor *bc = on_cpu(beta), *lc = on_cpu(lambda), *out = NULL;
    double *b = NULL, *l = NULL;
    if (!bc || !lc) goto out;
    b = read_broadcast(bc, nd, shape);
    l = read_broadcast(lc, nd, shape);
    if (!b || !l) goto out;
    int64_t n = efla_numel_of(nd, shape);
    for (int64_t i = 0; i < n; i++) efla_alpha_eval(b[i], l[i], order, reference_eps, &b[i], NULL, NULL);
    out = from_doubles(b, nd, shape, dt, beta->device);
    if (!out) goto out;
    efla_tensor *ins[2] = {(efla_tensor *)beta, (efla_tensor *)lambda};
    efla_clear_error();
    efla_node *node = efla_node_record(op, alpha_backward, 2, ins, 1, &out);
    if (!node && efla_last_error()[0]) { efla_tensor_release(out); out = NULL; goto out; }
    if (node) {
        double p[2] = {order, reference_eps ? 1 : 0};
        efla_node_set_params(node, 2, p);
        if (efla_node_save(node, beta) < 0 || efla_node_save(node, lambda) < 0) {
            efla_tensor_release(out);
            out = NULL;
        }
    }
out:
    free(b); free(l);
    efla_tensor_release(bc); efla_tensor_release(lc);
    return out;
}

/* ops_nn.c: front ends and backward rules for softmax / log_softmax, cross entropy, layer
 * norm and RMS norm. The backend kernels work on the last dim of contiguous tensors, so
 * the front ends move the dim last and make the input contiguous (a copy only when needed). */
#include "autograd.h"
#include "backend.h"
#include <math.h>
#include <string.h>

/* ---- softmax / log_softmax -------------------------------------------------------------------- */
/* t with dim d swapped to the end, contiguous (new ref); shared with ops_scan.c (internal.h). */
efla_tensor *efla_dim_last(const efla_tensor *t, int d) {
    if (t->ndim == 0 || d == t->ndim - 1) return efla_contiguous(t);
    efla_tensor *tr = efla_transpose(t, d, t->ndim - 1);
    efla_tensor *c = tr ? efla_contiguous(tr) : NULL;
    efla_tensor_release(tr);
    return c;
}

/* Inverse of efla_dim_last: swap back and make contiguous (consumes t). */
efla_tensor *efla_dim_back(efla_tensor *t, int d) {
    if (!t || t->ndim == 0 || d == t->ndim - 1) return t;
    efla_tensor *tr = efla_transpose(t, d, t->ndim - 1);
    efla_tensor_release(t);
    efla_tensor *c = tr ? efla_contiguous(tr) : NULL;
    efla_tensor_release(tr);
    return c;
}

static int softmax_backward(efla_node *n, efla_tensor *const *go, efla_tensor **gi) {
    int d = (int)n->params[0], log_ = (int)n->params[1];
    efla_tensor *y = efla_node_saved(n, 0);
    if (!y) return -1;
    const efla_backend *b = efla_backend_for("softmax_backward", y->device);
    if (b && !b->softmax_backward) { efla_no_kernel("softmax_backward", y->device); b = NULL; }
    efla_tensor *yl = b ? efla_dim_last(y, d) : NULL, *gl = yl ? efla_dim_last(go[0], d) : NULL;
    efla_tensor *r = gl ? efla_empty(yl->ndim, yl->shape, yl->dtype, yl->device) : NULL;
    int rc = r ? 0 : -1;
    if (!rc && efla_tensor_numel(r) > 0) rc = b->softmax_backward(r, gl, yl, log_);
    efla_tensor_release(y); efla_tensor_release(yl); efla_tensor_release(gl);
    if (rc) { efla_tensor_release(r); return -1; }
    gi[0] = efla_dim_back(r, d);
    return gi[0] ? 0 : -1;
}

static efla_tensor *softmax_impl(const char *name, const efla_tensor *t, int dim, int log_) {
    if (!t) return efla_fail_null("%s: the tensor is NULL", name);
    if (!efla_dtype_is_floating(t->dtype))
        return efla_fail_null("%s: needs a floating-point tensor, got %s (cast with :float() first)", name,
                              efla_dtype_name(t->dtype));
    int d;
    if (efla_wrap_dim(name, dim, t->ndim, &d)) return NULL;
    const efla_backend *b = efla_backend_for(name, t->device);
    if (!b) return NULL;
    if (!b->softmax) { efla_no_kernel(name, t->device); return NULL; }
    int prev = efla_set_grad_enabled(0);
    efla_tensor *x = efla_dim_last(t, d);
    efla_tensor *o = x ? efla_empty(x->ndim, x->shape, x->dtype, x->device) : NULL;
    int rc = o ? 0 : -1;
    if (!rc && efla_tensor_numel(o) > 0) rc = b->softmax(o, x, log_);
    efla_tensor_release(x);
    efla_tensor *res = rc ? NULL : efla_dim_back(o, d);
    if (rc) efla_tensor_release(o);
    efla_set_grad_enabled(prev);
    if (!res) return NULL;
    efla_node *n = NULL;
    if (efla_record1(name, softmax_backward, 1, (efla_tensor *const *)&t, res, &n) || (n && efla_node_save(n, res) < 0)) {
        efla_tensor_release(res);
        return NULL;
    }
    double p[2] = { d, log_ };
    if (n) efla_node_set_params(n, 2, p);
    return res;
}

efla_tensor *efla_softmax(const efla_tensor *t, int dim) { return softmax_impl("softmax", t, dim, 0); }
efla_tensor *efla_log_softmax(const efla_tensor *t, int dim) { return softmax_impl("log_softmax", t, dim, 1); }

/* ---- cross entropy ------------------------------------------------------------------------------- */
/* The kernel saved d(sum of row losses)/d logits; the mean divides by the row count. */
static int cross_entropy_backward(efla_node *n, efla_tensor *const *go, efla_tensor **gi) {
    double count = n->params[0];
    if (count == 0) {
        const efla_meta *m = &n->in_meta[0];
        gi[0] = efla_zeros(m->ndim, m->shape, m->dtype, m->device);
        return gi[0] ? 0 : -1;
    }
    efla_tensor *g = efla_node_saved(n, 0);
    efla_tensor *s = g ? efla_binary_scalar(EFLA_MUL, go[0], 1.0 / count, 0) : NULL;
    gi[0] = s ? efla_binary(EFLA_MUL, g, s) : NULL;
    efla_tensor_release(g);
    efla_tensor_release(s);
    return gi[0] ? 0 : -1;
}

/* Rows whose target is not ignore_index. */
static int count_rows(const efla_tensor *target, int64_t ignore_index, int64_t *count) {
    if (target->device == EFLA_DEVICE_CPU) {
        const int64_t *p = (const int64_t *)efla_cpu_ptr(target);
        int64_t c = 0;
        for (int64_t i = 0; i < target->shape[0]; i++) c += p[i * target->strides[0]] != ignore_index;
        *count = c;
        return 0;
    }
    efla_tensor *ne = efla_binary_scalar(EFLA_NE, target, (double)ignore_index, 0);
    efla_tensor *s = ne ? efla_reduce(EFLA_SUM, ne, 0, NULL, 0, 0) : NULL;
    double v = 0;
    int rc = s ? efla_item(s, &v) : -1;
    efla_tensor_release(ne);
    efla_tensor_release(s);
    *count = (int64_t)v;
    return rc;
}

efla_tensor *efla_cross_entropy(const efla_tensor *logits, const efla_tensor *target, int64_t ignore_index,
                                double label_smoothing) {
    if (!logits || !target) return efla_fail_null("cross_entropy: logits or target is NULL");
    if (!efla_dtype_is_floating(logits->dtype) || logits->ndim != 2)
        return efla_fail_null("cross_entropy: logits must be a float [N,C] tensor, got %s %s (reshape to [-1, C] "
                              "first)", efla_tshape(logits), efla_dtype_name(logits->dtype));
    if (target->dtype != EFLA_INT64)
        return efla_fail_null("cross_entropy: target must hold int64 class indices, got %s %s (cast with :long())",
                              efla_tshape(target), efla_dtype_name(target->dtype));
    if (target->ndim != 1 || target->shape[0] != logits->shape[0])
        return efla_fail_null("cross_entropy: target shape %s does not match logits %s: need [N] = [%lld]",
                              efla_tshape(target), efla_tshape(logits), (long long)logits->shape[0]);
    if (efla_check_same_device("cross_entropy", logits, target)) return NULL;
    if (!(label_smoothing >= 0 && label_smoothing <= 1))
        return efla_fail_null("cross_entropy: label_smoothing %g is outside [0, 1]", label_smoothing);
    const efla_backend *b = efla_backend_for("cross_entropy", logits->device);
    if (!b) return NULL;
    if (!b->cross_entropy) { efla_no_kernel("cross_entropy", logits->device); return NULL; }

    int prev = efla_set_grad_enabled(0);
    int64_t N = logits->shape[0];
    efla_tensor *lc = efla_contiguous(logits), *tc = lc ? efla_contiguous(target) : NULL;
    efla_tensor *loss = tc ? efla_empty(1, &N, logits->dtype, logits->device) : NULL;
    efla_tensor *grad = loss ? efla_empty(2, logits->shape, logits->dtype, logits->device) : NULL;
    efla_tensor *sum = NULL, *res = NULL;
    int64_t count = 0;
    int rc = grad ? 0 : -1;
    if (!rc && efla_tensor_numel(grad) > 0) rc = b->cross_entropy(loss, grad, lc, tc, ignore_index, label_smoothing);
    if (!rc) rc = count_rows(tc, ignore_index, &count);
    double total = 0;
    if (!rc) rc = (sum = efla_reduce(EFLA_SUM, loss, 0, NULL, 0, 0)) ? efla_item(sum, &total) : -1;
    if (!rc) res = efla_scalar(count ? total / (double)count : NAN, logits->dtype, logits->device);
    efla_set_grad_enabled(prev);
    if (res) {
        efla_tensor *ins[2] = { (efla_tensor *)logits, (efla_tensor *)target };
        efla_node *n = NULL;
        if (efla_record1("cross_entropy", cross_entropy_backward, 2, ins, res, &n) || (n && efla_node_save(n, grad) < 0)) {
            efla_tensor_release(res);
            res = NULL;
        }
        double p = (double)count;
        if (n) efla_node_set_params(n, 1, &p);
    }
    efla_tensor_release(lc); efla_tensor_release(tc); efla_tensor_release(loss);
    efla_tensor_release(grad); efla_tensor_release(sum);
    return res;
}

/* ---- layer norm / RMS norm --------------------------------------------------------------------- */
enum { N_X = 0, N_MEAN, N_RSTD, N_W };

static int norm_backward(efla_node *n, efla_tensor *const *go, efla_tensor **gi) {
    int rms = (int)n->params[0], has_w = (int)n->params[1], has_b = (int)n->params[2];
    efla_tensor *x = efla_node_saved(n, N_X), *mean = efla_node_saved(n, N_MEAN), *rstd = efla_node_saved(n, N_RSTD);
    efla_tensor *w = has_w ? efla_node_saved(n, N_W) : NULL;
    efla_tensor *g = NULL, *gx = NULL, *gw = NULL, *gb = NULL;
    int rc = -1;
    if (!x || !mean || !rstd || (has_w && !w)) goto out;
    const efla_backend *b = efla_backend_for("norm_backward", x->device);
    if (!b) goto out;
    if (!b->norm_backward) { efla_no_kernel("norm_backward", x->device); goto out; }
    int64_t D = x->shape[x->ndim - 1];
    if (!(g = efla_contiguous(go[0])) || !(gx = efla_empty(x->ndim, x->shape, x->dtype, x->device))) goto out;
    if (has_w && !(gw = efla_empty(1, &D, x->dtype, x->device))) goto out;
    if (has_b && !(gb = efla_empty(1, &D, x->dtype, x->device))) goto out;
    if (efla_tensor_numel(x) > 0) {
        if (b->norm_backward(gx, gw, gb, g, x, w, mean, rstd, rms)) goto out;
    } else {
        if ((gw && efla_zero_(gw)) || (gb && efla_zero_(gb))) goto out;
    }
    gi[0] = gx; gi[1] = gw; gi[2] = gb;
    gx = gw = gb = NULL;
    rc = 0;
out:
    efla_tensor_release(x); efla_tensor_release(mean); efla_tensor_release(rstd); efla_tensor_release(w);
    efla_tensor_release(g); efla_tensor_release(gx); efla_tensor_release(gw); efla_tensor_release(gb);
    return rc;
}

static int check_param(const char *op, const char *what, const efla_tensor *p, const efla_tensor *x) {
    int64_t D = x->shape[x->ndim - 1];
    if (p->ndim != 1 || p->shape[0] != D)
        return efla_fail("%s: %s has shape %s but x %s needs [%lld] (the size of its last dim)", op, what,
                         efla_tshape(p), efla_tshape(x), (long long)D);
    if (p->dtype != x->dtype)
        return efla_fail("%s: %s is %s but x is %s; cast one of them", op, what, efla_dtype_name(p->dtype),
                         efla_dtype_name(x->dtype));
    return efla_check_same_device(op, p, x);
}

static efla_tensor *norm_impl(const char *name, const efla_tensor *x, const efla_tensor *w, const efla_tensor *bias,
                              double eps, int rms) {
    if (!x) return efla_fail_null("%s: x is NULL", name);
    if (!efla_dtype_is_floating(x->dtype) || x->ndim < 1)
        return efla_fail_null("%s: x must be a floating-point tensor with at least 1 dim, got %s %s", name,
                              efla_tshape(x), efla_dtype_name(x->dtype));
    if ((w && check_param(name, "weight", w, x)) || (bias && check_param(name, "bias", bias, x))) return NULL;
    if (!(eps >= 0)) return efla_fail_null("%s: eps must be >= 0, got %g", name, eps);
    const efla_backend *b = efla_backend_for(name, x->device);
    if (!b) return NULL;
    if (!b->norm) { efla_no_kernel(name, x->device); return NULL; }

    int prev = efla_set_grad_enabled(0);
    int64_t D = x->shape[x->ndim - 1], rows = D ? efla_tensor_numel(x) / D : 0;
    efla_dtype sdt = x->dtype == EFLA_FLOAT64 ? EFLA_FLOAT64 : EFLA_FLOAT32;
    efla_tensor *xc = efla_contiguous(x);
    efla_tensor *wc = xc && w ? efla_contiguous(w) : NULL, *bc = xc && bias ? efla_contiguous(bias) : NULL;
    efla_tensor *out = xc ? efla_empty(x->ndim, x->shape, x->dtype, x->device) : NULL;
    efla_tensor *mean = out ? efla_empty(1, &rows, sdt, x->device) : NULL;
    efla_tensor *rstd = mean ? efla_empty(1, &rows, sdt, x->device) : NULL;
    int rc = (!rstd || (w && !wc) || (bias && !bc)) ? -1 : 0;
    if (!rc && rows * D > 0) rc = b->norm(out, mean, rstd, xc, wc, bc, eps, rms);
    efla_set_grad_enabled(prev);
    efla_tensor *res = NULL;
    if (!rc) {
        res = out;
        out = NULL;
        efla_tensor *ins[3] = { (efla_tensor *)x, (efla_tensor *)w, (efla_tensor *)bias };
        efla_node *n = NULL;
        if (efla_record1(name, norm_backward, 3, ins, res, &n) ||
            (n && (efla_node_save(n, xc) < 0 || efla_node_save(n, mean) < 0 || efla_node_save(n, rstd) < 0 ||
                   (wc && efla_node_save(n, wc) < 0)))) {
            efla_tensor_release(res);
            res = NULL;
        }
        double p[3] = { rms, w != NULL, bias != NULL };
        if (n) efla_node_set_params(n, 3, p);
    }
    efla_tensor_release(xc); efla_tensor_release(wc); efla_tensor_release(bc);
    efla_tensor_release(out); efla_tensor_release(mean); efla_tensor_release(rstd);
    return res;
}

efla_tensor *efla_layer_norm(const efla_tensor *x, const efla_tensor *weight, const efla_tensor *bias, double eps) {
    return norm_impl("layer_norm", x, weight, bias, eps, 0);
}

efla_tensor *efla_rms_norm(const efla_tensor *x, const efla_tensor *weight, double eps) {
    return norm_impl("rms_norm", x, weight, NULL, eps, 1);
}

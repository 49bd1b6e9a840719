/* ops_scan.c: front ends of cumsum and sort along one dim (kernels: core/cpu/scan.c).
 * The dim is moved last and made contiguous, the kernel works on [rows, n], and the
 * result is moved back. cumsum is differentiable: the gradient of a running sum is the
 * reversed running sum of the incoming gradient, sum(g) - cumsum(g) + g. sort returns
 * values and 0-based int64 positions; it records no gradient (the Lua binding makes the
 * values differentiable by gathering them from the input with the positions). */
#include "autograd.h"
#include "backend.h"

static int cumsum_backward(efla_node *n, efla_tensor *const *go, efla_tensor **gi) {
    int d = (int)n->params[0];
    efla_tensor *total = efla_reduce(EFLA_SUM, go[0], 1, &d, 1, 0);
    efla_tensor *run = total ? efla_cumsum(go[0], d) : NULL;
    efla_tensor *a = run ? efla_binary(EFLA_SUB, total, run) : NULL;
    gi[0] = a ? efla_binary(EFLA_ADD, a, go[0]) : NULL;
    efla_tensor_release(total); efla_tensor_release(run); efla_tensor_release(a);
    return gi[0] ? 0 : -1;
}

efla_tensor *efla_cumsum(const efla_tensor *t, int dim) {
    if (!t) return efla_fail_null("cumsum: the tensor is NULL");
    int d = 0;
    if (t->ndim > 0 && efla_wrap_dim("cumsum", dim, t->ndim, &d)) return NULL;
    const efla_backend *b = efla_backend_for("cumsum", t->device);
    if (!b) return NULL;
    if (!b->cumsum) { efla_no_kernel("cumsum", t->device); return NULL; }
    int prev = efla_set_grad_enabled(0);
    /* bool and uint8 count: their running sums are int64, as in PyTorch */
    efla_tensor *src = (t->dtype == EFLA_BOOL || t->dtype == EFLA_UINT8) ? efla_to(t, EFLA_INT64, t->device)
                                                                       : efla_contiguous(t);
    efla_tensor *x = src ? efla_dim_last(src, d) : NULL;
    efla_tensor_release(src);
    efla_tensor *o = x ? efla_empty(x->ndim, x->shape, x->dtype, x->device) : NULL;
    int rc = o ? 0 : -1;
    if (!rc && efla_tensor_numel(o) > 0) rc = b->cumsum(o, x);
    efla_tensor_release(x);
    efla_tensor *res = rc ? NULL : efla_dim_back(o, d);
    if (rc) efla_tensor_release(o);
    efla_set_grad_enabled(prev);
    if (!res) return NULL;
    if (efla_dtype_is_floating(res->dtype)) {
        efla_node *n = NULL;
        if (efla_record1("cumsum", cumsum_backward, 1, (efla_tensor *const *)&t, res, &n)) {
            efla_tensor_release(res);
            return NULL;
        }
        double p[1] = { d };
        if (n) efla_node_set_params(n, 1, p);
    }
    return res;
}

int efla_sort(const efla_tensor *t, int dim, int descending, efla_tensor **values, efla_tensor **indices) {
    if (!t || !values || !indices) return efla_fail("sort: a NULL argument");
    *values = *indices = NULL;
    int d = 0;
    if (t->ndim > 0 && efla_wrap_dim("sort", dim, t->ndim, &d)) return -1;
    const efla_backend *b = efla_backend_for("sort", t->device);
    if (!b) return -1;
    if (!b->sort) return efla_no_kernel("sort", t->device);
    int prev = efla_set_grad_enabled(0);
    efla_tensor *x = efla_dim_last(t, d);
    efla_tensor *v = x ? efla_empty(x->ndim, x->shape, x->dtype, x->device) : NULL;
    efla_tensor *i = v ? efla_empty(x->ndim, x->shape, EFLA_INT64, x->device) : NULL;
    int rc = i ? 0 : -1;
    if (!rc && efla_tensor_numel(v) > 0) rc = b->sort(v, i, x, descending);
    efla_tensor_release(x);
    if (rc) { efla_tensor_release(v); efla_tensor_release(i); efla_set_grad_enabled(prev); return -1; }
    *values = efla_dim_back(v, d);
    *indices = efla_dim_back(i, d);
    efla_set_grad_enabled(prev);
    if (!*values || !*indices) {
        efla_tensor_release(*values); efla_tensor_release(*indices);
        *values = *indices = NULL;
        return -1;
    }
    return 0;
}

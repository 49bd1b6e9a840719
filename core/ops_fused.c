/* ops_fused.c: front ends of the fused layers of a DeltaNet/EFLA language model (SwiGLU's
 * silu(gate)*up, the causal short convolution with its SiLU, the q/k L2 norm, the output
 * RMSNorm·SiLU(gate), and the output head fused with cross-entropy). Each is one autograd
 * node that saves only what its backward needs (inputs as contiguous aliases, so no copy when
 * they already are; the L2 norm its output and rstd, which the delta rule keeps anyway) and
 * recomputes the cheap intermediates; the composed ops would save every intermediate. The kernels live in a table of their own (efla_fused_kernels in
 * backend.h, registered in backend.c): core/cpu/fused.c and cuda/fused.cu. */
#include "autograd.h"
#include "backend.h"
#include <math.h>
#include <string.h>

/* ---- shared checks ------------------------------------------------------------------------ */
static int same_shape(const efla_tensor *a, const efla_tensor *b) {
    return a->ndim == b->ndim && !memcmp(a->shape, b->shape, sizeof(int64_t) * (size_t)a->ndim);
}

/* t must be a floating tensor with ref's dtype and device (ref: the main input). */
static int check_like(const char *op, const char *what, const efla_tensor *t, const efla_tensor *ref) {
    if (!t) return efla_fail("%s: %s is NULL", op, what);
    if (!efla_dtype_is_floating(t->dtype))
        return efla_fail("%s: %s must be floating point, got %s", op, what, efla_dtype_name(t->dtype));
    if (t->dtype != ref->dtype)
        return efla_fail("%s: %s is %s but the input is %s; cast one of them (a model in mixed precision "
                         "casts its parameters to the activations' dtype)", op, what, efla_dtype_name(t->dtype),
                         efla_dtype_name(ref->dtype));
    return efla_check_same_device(op, t, ref);
}

static efla_tensor *empty_as(const efla_tensor *t) { return efla_empty(t->ndim, t->shape, t->dtype, t->device); }

/* Saved slot i as a new ref (NULL + error when it was modified in place or freed). */
#define SAVED(n, i) efla_node_saved((n), (i))

/* ---- SwiGLU: silu(gate) * up --------------------------------------------------------------- */
static int swiglu_backward(efla_node *n, efla_tensor *const *go, efla_tensor **gi) {
    efla_tensor *g = SAVED(n, 0), *u = g ? SAVED(n, 1) : NULL;
    efla_tensor *d = u ? efla_contiguous(go[0]) : NULL, *dg = NULL, *du = NULL;
    const efla_fused_kernels *k = d ? efla_fused_for("swiglu_backward", g->device) : NULL;
    int rc = -1;
    if (k && (dg = empty_as(g)) && (du = empty_as(u)))
        rc = efla_tensor_numel(g) ? k->swiglu_backward(dg, du, d, g, u) : 0;
    efla_tensor_release(g); efla_tensor_release(u); efla_tensor_release(d);
    if (rc) { efla_tensor_release(dg); efla_tensor_release(du); return -1; }
    gi[0] = dg; gi[1] = du;
    return 0;
}

efla_tensor *efla_swiglu(const efla_tensor *gate, const efla_tensor *up) {
    const char *op = "swiglu";
    if (!gate || !up) return efla_fail_null("%s: %s is NULL", op, !gate ? "gate" : "up");
    if (check_like(op, "gate", gate, gate) || check_like(op, "up", up, gate)) return NULL;
    if (!same_shape(gate, up))
        return efla_fail_null("%s: gate %s and up %s must have the same shape", op, efla_tshape(gate), efla_tshape(up));
    const efla_fused_kernels *k = efla_fused_for(op, gate->device);
    if (!k) return NULL;
    int prev = efla_set_grad_enabled(0);
    efla_tensor *g = efla_contiguous(gate), *u = g ? efla_contiguous(up) : NULL;
    efla_tensor *out = u ? empty_as(g) : NULL;
    int rc = out ? (efla_tensor_numel(out) ? k->swiglu(out, g, u) : 0) : -1;
    efla_set_grad_enabled(prev);
    efla_node *n = NULL;
    efla_tensor *ins[2] = { (efla_tensor *)gate, (efla_tensor *)up };
    if (!rc && (efla_record1(op, swiglu_backward, 2, ins, out, &n) ||
                (n && (efla_node_save(n, g) < 0 || efla_node_save(n, u) < 0))))
        rc = -1;
    efla_tensor_release(g); efla_tensor_release(u);
    if (rc) { efla_tensor_release(out); return NULL; }
    return out;
}

/* ---- SwiGLU and the down projection: (silu(gate) * up) @ weight^T ---------------------------
 * The product silu(gate)*up is a temporary in the forward and is recomputed in the backward,
 * so the node keeps gate, up and the weight only (a Linear after swiglu would keep the
 * product as its input as well: hidden-size bytes per token). */
static efla_tensor *rows2d(const efla_tensor *t, int64_t rows) {
    int64_t s[2] = { rows, t->shape[t->ndim - 1] };
    return efla_view(t, 2, s);
}

static int swiglu_linear_backward(efla_node *n, efla_tensor *const *go, efla_tensor **gi) {
    efla_tensor *g = SAVED(n, 0), *u = g ? SAVED(n, 1) : NULL, *w = u ? SAVED(n, 2) : NULL;
    efla_tensor *d = NULL, *d2 = NULL, *p = NULL, *p2 = NULL, *dt = NULL, *dp = NULL, *dg = NULL, *du = NULL;
    int rc = -1;
    if (!w) goto out;
    const efla_fused_kernels *k = efla_fused_for("swiglu_linear_backward", g->device);
    int64_t M = g->shape[g->ndim - 1], rows = M ? efla_tensor_numel(g) / M : 0;
    if (!k || !(d = efla_contiguous(go[0])) || !(d2 = rows2d(d, rows)) || !(p = empty_as(g))) goto out;
    if (efla_tensor_numel(p) && k->swiglu(p, g, u)) goto out;
    if (!(p2 = rows2d(p, rows))) goto out;
    if (efla_node_needs_grad(n, 2)) {
        if (!(dt = efla_transpose(d2, 0, 1)) || !(gi[2] = efla_matmul(dt, p2))) goto out;
    }
    if (efla_node_needs_grad(n, 0) || efla_node_needs_grad(n, 1)) {
        efla_tensor *dp2 = efla_matmul(d2, w);
        dp = dp2 ? efla_reshape(dp2, g->ndim, g->shape) : NULL;
        efla_tensor_release(dp2);
        if (!dp || !(dg = empty_as(g)) || !(du = empty_as(u))) goto out;
        if (efla_tensor_numel(g) && k->swiglu_backward(dg, du, dp, g, u)) goto out;
        gi[0] = dg; gi[1] = du;
        dg = du = NULL;
    }
    rc = 0;
out:
    efla_tensor_release(g); efla_tensor_release(u); efla_tensor_release(w); efla_tensor_release(d);
    efla_tensor_release(d2); efla_tensor_release(p); efla_tensor_release(p2); efla_tensor_release(dt);
    efla_tensor_release(dp); efla_tensor_release(dg); efla_tensor_release(du);
    return rc;
}

efla_tensor *efla_swiglu_linear(const efla_tensor *gate, const efla_tensor *up, const efla_tensor *weight) {
    const char *op = "swiglu_linear";
    if (!gate || !up) return efla_fail_null("%s: %s is NULL", op, !gate ? "gate" : "up");
    if (check_like(op, "gate", gate, gate) || check_like(op, "up", up, gate) || check_like(op, "weight", weight, gate))
        return NULL;
    if (!same_shape(gate, up) || gate->ndim < 1)
        return efla_fail_null("%s: gate %s and up %s must have the same shape", op, efla_tshape(gate), efla_tshape(up));
    int64_t M = gate->shape[gate->ndim - 1], rows = M ? efla_tensor_numel(gate) / M : 0;
    if (weight->ndim != 2 || weight->shape[1] != M)
        return efla_fail_null("%s: weight %s must be [N, %lld] (gate's last dim)", op, efla_tshape(weight), (long long)M);
    const efla_fused_kernels *k = efla_fused_for(op, gate->device);
    if (!k) return NULL;
    int prev = efla_set_grad_enabled(0);
    efla_tensor *g = efla_contiguous(gate), *u = g ? efla_contiguous(up) : NULL;
    efla_tensor *p = u ? empty_as(g) : NULL, *p2 = NULL, *wt = NULL, *y2 = NULL, *y = NULL;
    int rc = p ? 0 : -1;
    if (!rc && efla_tensor_numel(p)) rc = k->swiglu(p, g, u);
    if (!rc) rc = (p2 = rows2d(p, rows)) && (wt = efla_transpose(weight, 0, 1)) && (y2 = efla_matmul(p2, wt)) ? 0 : -1;
    if (!rc) {
        int64_t shape[EFLA_MAX_DIMS];
        memcpy(shape, gate->shape, sizeof(int64_t) * (size_t)gate->ndim);
        shape[gate->ndim - 1] = weight->shape[0];
        rc = (y = efla_reshape(y2, gate->ndim, shape)) ? 0 : -1;
    }
    efla_set_grad_enabled(prev);
    efla_node *n = NULL;
    efla_tensor *ins[3] = { (efla_tensor *)gate, (efla_tensor *)up, (efla_tensor *)weight };
    if (!rc && (efla_record1(op, swiglu_linear_backward, 3, ins, y, &n) ||
                (n && (efla_node_save(n, g) < 0 || efla_node_save(n, u) < 0 || efla_node_save(n, weight) < 0))))
        rc = -1;
    efla_tensor_release(g); efla_tensor_release(u); efla_tensor_release(p); efla_tensor_release(p2);
    efla_tensor_release(wt); efla_tensor_release(y2);
    if (rc) { efla_tensor_release(y); return NULL; }
    return y;
}

/* ---- causal depthwise short convolution (+ SiLU) ------------------------------------------- */
enum { SC_X = 0, SC_W, SC_B, SC_CACHE };

static int short_conv_backward(efla_node *n, efla_tensor *const *go, efla_tensor **gi) {
    int silu = (int)n->params[0], has_b = (int)n->params[1], has_c = (int)n->params[2];
    efla_tensor *x = SAVED(n, 0), *w = x ? SAVED(n, 1) : NULL;
    efla_tensor *b = (w && has_b) ? SAVED(n, 2) : NULL;
    efla_tensor *c = (w && has_c) ? SAVED(n, 2 + has_b) : NULL;
    efla_tensor *d = NULL, *dx = NULL, *dw = NULL, *db = NULL, *dc = NULL;
    int rc = -1;
    if (!w || (has_b && !b) || (has_c && !c)) goto out;
    const efla_fused_kernels *k = efla_fused_for("short_conv_backward", x->device);
    if (!k || !(d = efla_contiguous(go[0])) || !(dx = empty_as(x)) || !(dw = empty_as(w))) goto out;
    if ((b && !(db = empty_as(b))) || (c && !(dc = empty_as(c)))) goto out;
    if (efla_tensor_numel(x)) rc = k->short_conv_backward(dx, dc, dw, db, d, x, c, w, b, silu);
    else rc = efla_zero_(dw) || (db && efla_zero_(db)) || (dc && efla_zero_(dc)) ? -1 : 0;
out:
    efla_tensor_release(x); efla_tensor_release(w); efla_tensor_release(b); efla_tensor_release(c);
    efla_tensor_release(d);
    if (rc) { efla_tensor_release(dx); efla_tensor_release(dw); efla_tensor_release(db); efla_tensor_release(dc); return -1; }
    gi[SC_X] = dx; gi[SC_W] = dw; gi[SC_B] = db; gi[SC_CACHE] = dc;
    return 0;
}

efla_tensor *efla_short_conv(const efla_tensor *x, const efla_tensor *weight, const efla_tensor *bias,
                             const efla_tensor *cache, int silu) {
    const char *op = "short_conv";
    if (!x) return efla_fail_null("%s: x is NULL", op);
    if (check_like(op, "x", x, x) || check_like(op, "weight", weight, x)) return NULL;
    if (x->ndim != 3 || weight->ndim != 2 || weight->shape[0] != x->shape[2] || weight->shape[1] < 1)
        return efla_fail_null("%s: needs x [B,T,C] and weight [C,K], got x %s and weight %s", op, efla_tshape(x),
                              efla_tshape(weight));
    int64_t B = x->shape[0], C = x->shape[2], K = weight->shape[1];
    if (bias && check_like(op, "bias", bias, x)) return NULL;
    if (bias && (bias->ndim != 1 || bias->shape[0] != C))
        return efla_fail_null("%s: bias %s must be [C] = [%lld]", op, efla_tshape(bias), (long long)C);
    if (cache && K == 1) cache = NULL;   /* a 1-tap convolution has no history */
    if (cache) {
        if (check_like(op, "cache", cache, x)) return NULL;
        if (cache->ndim != 3 || cache->shape[0] != B || cache->shape[1] != K - 1 || cache->shape[2] != C)
            return efla_fail_null("%s: cache %s must be [B,K-1,C] = [%lld,%lld,%lld]", op, efla_tshape(cache),
                                  (long long)B, (long long)(K - 1), (long long)C);
    }
    const efla_fused_kernels *k = efla_fused_for(op, x->device);
    if (!k) return NULL;
    int prev = efla_set_grad_enabled(0);
    efla_tensor *xc = efla_contiguous(x), *wc = xc ? efla_contiguous(weight) : NULL;
    efla_tensor *bc = (wc && bias) ? efla_contiguous(bias) : NULL, *cc = (wc && cache) ? efla_contiguous(cache) : NULL;
    efla_tensor *out = (wc && (!bias || bc) && (!cache || cc)) ? empty_as(xc) : NULL;
    int rc = out ? (efla_tensor_numel(out) ? k->short_conv(out, xc, cc, wc, bc, silu != 0) : 0) : -1;
    efla_set_grad_enabled(prev);
    efla_node *n = NULL;
    efla_tensor *ins[4] = { (efla_tensor *)x, (efla_tensor *)weight, (efla_tensor *)bias, (efla_tensor *)cache };
    if (!rc && (efla_record1(op, short_conv_backward, 4, ins, out, &n) ||
                (n && (efla_node_save(n, xc) < 0 || efla_node_save(n, wc) < 0 || (bc && efla_node_save(n, bc) < 0) ||
                       (cc && efla_node_save(n, cc) < 0)))))
        rc = -1;
    if (n) {
        double p[3] = { silu != 0, bc != NULL, cc != NULL };
        efla_node_set_params(n, 3, p);
    }
    efla_tensor_release(xc); efla_tensor_release(wc); efla_tensor_release(bc); efla_tensor_release(cc);
    if (rc) { efla_tensor_release(out); return NULL; }
    return out;
}

/* ---- L2 norm over the last dim ------------------------------------------------------------- */
/* saves the output (which the next op usually keeps too: one storage) and rstd, not x */
static int l2norm_backward(efla_node *n, efla_tensor *const *go, efla_tensor **gi) {
    efla_tensor *y = SAVED(n, 0), *r = y ? SAVED(n, 1) : NULL, *d = r ? efla_contiguous(go[0]) : NULL, *dx = NULL;
    const efla_fused_kernels *k = d ? efla_fused_for("l2_norm_backward", y->device) : NULL;
    int rc = -1;
    if (k && (dx = empty_as(y))) rc = efla_tensor_numel(y) ? k->l2norm_backward(dx, d, y, r) : 0;
    efla_tensor_release(y); efla_tensor_release(r); efla_tensor_release(d);
    if (rc) { efla_tensor_release(dx); return -1; }
    gi[0] = dx;
    return 0;
}

efla_tensor *efla_l2_norm(const efla_tensor *x, double eps) {
    const char *op = "l2_norm";
    if (!x) return efla_fail_null("%s: x is NULL", op);
    if (check_like(op, "x", x, x)) return NULL;
    if (x->ndim < 1) return efla_fail_null("%s: x must have at least 1 dim, got a 0-d tensor", op);
    if (!(eps >= 0)) return efla_fail_null("%s: eps must be >= 0, got %g", op, eps);
    const efla_fused_kernels *k = efla_fused_for(op, x->device);
    if (!k) return NULL;
    int prev = efla_set_grad_enabled(0);
    int64_t D = x->shape[x->ndim - 1], rows = D ? efla_tensor_numel(x) / D : 0;
    efla_tensor *xc = efla_contiguous(x), *out = xc ? empty_as(xc) : NULL;
    efla_tensor *rstd = out ? efla_empty(1, &rows, x->dtype == EFLA_FLOAT64 ? EFLA_FLOAT64 : EFLA_FLOAT32, x->device) : NULL;
    int rc = rstd ? (efla_tensor_numel(out) ? k->l2norm(out, rstd, xc, eps) : 0) : -1;
    efla_set_grad_enabled(prev);
    efla_node *n = NULL;
    if (!rc && (efla_record1(op, l2norm_backward, 1, (efla_tensor *const *)&x, out, &n) ||
                (n && (efla_node_save(n, out) < 0 || efla_node_save(n, rstd) < 0))))
        rc = -1;
    efla_tensor_release(xc); efla_tensor_release(rstd);
    if (rc) { efla_tensor_release(out); return NULL; }
    return out;
}

/* ---- RMSNorm(x) * weight * SiLU(gate) ------------------------------------------------------ */
static int rms_norm_gated_backward(efla_node *n, efla_tensor *const *go, efla_tensor **gi) {
    efla_tensor *x = SAVED(n, 0), *g = x ? SAVED(n, 1) : NULL, *w = g ? SAVED(n, 2) : NULL;
    efla_tensor *d = w ? efla_contiguous(go[0]) : NULL, *dx = NULL, *dg = NULL, *dw = NULL;
    const efla_fused_kernels *k = d ? efla_fused_for("rms_norm_gated_backward", x->device) : NULL;
    int rc = -1;
    if (k && (dx = empty_as(x)) && (dg = empty_as(g)) && (dw = empty_as(w)))
        rc = efla_tensor_numel(x) ? k->rms_norm_gated_backward(dx, dg, dw, d, x, g, w, n->params[0]) : efla_zero_(dw);
    efla_tensor_release(x); efla_tensor_release(g); efla_tensor_release(w); efla_tensor_release(d);
    if (rc) { efla_tensor_release(dx); efla_tensor_release(dg); efla_tensor_release(dw); return -1; }
    gi[0] = dx; gi[1] = dg; gi[2] = dw;
    return 0;
}

efla_tensor *efla_rms_norm_gated(const efla_tensor *x, const efla_tensor *gate, const efla_tensor *weight,
                                 double eps) {
    const char *op = "rms_norm_gated";
    if (!x) return efla_fail_null("%s: x is NULL", op);
    if (check_like(op, "x", x, x) || check_like(op, "gate", gate, x) || check_like(op, "weight", weight, x)) return NULL;
    if (x->ndim < 1 || !same_shape(x, gate))
        return efla_fail_null("%s: gate %s must have the shape of x %s (at least 1 dim)", op, efla_tshape(gate),
                              efla_tshape(x));
    if (weight->ndim != 1 || weight->shape[0] != x->shape[x->ndim - 1])
        return efla_fail_null("%s: weight %s must be [D] = [%lld] (x's last dim)", op, efla_tshape(weight),
                              (long long)x->shape[x->ndim - 1]);
    if (!(eps >= 0)) return efla_fail_null("%s: eps must be >= 0, got %g", op, eps);
    const efla_fused_kernels *k = efla_fused_for(op, x->device);
    if (!k) return NULL;
    int prev = efla_set_grad_enabled(0);
    efla_tensor *xc = efla_contiguous(x), *gc = xc ? efla_contiguous(gate) : NULL;
    efla_tensor *wc = gc ? efla_contiguous(weight) : NULL, *out = wc ? empty_as(xc) : NULL;
    int rc = out ? (efla_tensor_numel(out) ? k->rms_norm_gated(out, xc, gc, wc, eps) : 0) : -1;
    efla_set_grad_enabled(prev);
    efla_node *n = NULL;
    efla_tensor *ins[3] = { (efla_tensor *)x, (efla_tensor *)gate, (efla_tensor *)weight };
    if (!rc && (efla_record1(op, rms_norm_gated_backward, 3, ins, out, &n) ||
                (n && (efla_node_save(n, xc) < 0 || efla_node_save(n, gc) < 0 || efla_node_save(n, wc) < 0))))
        rc = -1;
    if (n) efla_node_set_params(n, 1, &eps);
    efla_tensor_release(xc); efla_tensor_release(gc); efla_tensor_release(wc);
    if (rc) { efla_tensor_release(out); return NULL; }
    return out;
}

/* ---- embedding lookup without a host round trip ----------------------------------------------
 * Backward: the rows of the gradient are added at their index into a zeroed float32 (float64)
 * table, cast to the weight's dtype. */
static int embedding_backward(efla_node *n, efla_tensor *const *go, efla_tensor **gi) {
    efla_tensor *idx = SAVED(n, 0), *d = idx ? efla_contiguous(go[0]) : NULL, *d2 = NULL, *acc = NULL;
    int rc = -1;
    const efla_fused_kernels *k = d ? efla_fused_for("embedding_backward", d->device) : NULL;
    if (!k) goto out;
    const efla_meta *w = &n->in_meta[0];
    efla_dtype adt = w->dtype == EFLA_FLOAT64 ? EFLA_FLOAT64 : EFLA_FLOAT32;
    int64_t N = efla_tensor_numel(idx), s2[2] = { N, w->shape[1] };
    if (!(acc = efla_zeros(2, w->shape, adt, w->device)) || !(d2 = efla_view(d, 2, s2))) goto out;
    if (N * w->shape[1] > 0 && k->embedding_backward(acc, d2, idx)) goto out;
    gi[0] = acc->dtype == w->dtype ? (efla_tensor_retain(acc), acc) : efla_to(acc, w->dtype, w->device);
    rc = gi[0] ? 0 : -1;
out:
    efla_tensor_release(idx); efla_tensor_release(d); efla_tensor_release(d2); efla_tensor_release(acc);
    return rc;
}

efla_tensor *efla_embedding_lookup(const efla_tensor *weight, const efla_tensor *index) {
    const char *op = "embedding_lookup";
    if (!weight || !index) return efla_fail_null("%s: %s is NULL", op, !weight ? "weight" : "index");
    if (check_like(op, "weight", weight, weight)) return NULL;
    if (weight->ndim != 2)
        return efla_fail_null("%s: the weight must be [num_embeddings, dim], got %s", op, efla_tshape(weight));
    if (index->dtype != EFLA_INT64)
        return efla_fail_null("%s: the index must be int64, got %s (convert with :long())", op, efla_dtype_name(index->dtype));
    if (index->ndim + 1 > EFLA_MAX_DIMS)
        return efla_fail_null("%s: the index has %d dims; the output would need more than %d", op, index->ndim, EFLA_MAX_DIMS);
    if (efla_check_same_device(op, weight, index)) return NULL;
    const efla_fused_kernels *k = efla_fused_for(op, weight->device);
    if (!k) return NULL;
    int64_t N = efla_tensor_numel(index), D = weight->shape[1], s2[2] = { N, D }, shape[EFLA_MAX_DIMS];
    memcpy(shape, index->shape, sizeof(int64_t) * (size_t)index->ndim);
    shape[index->ndim] = D;
    int prev = efla_set_grad_enabled(0);
    efla_tensor *flat = efla_reshape(index, 1, &N), *ic = flat ? efla_contiguous(flat) : NULL;
    efla_tensor *wc = ic ? efla_contiguous(weight) : NULL;
    efla_tensor *out = wc ? efla_empty(index->ndim + 1, shape, weight->dtype, weight->device) : NULL;
    efla_tensor *o2 = out ? efla_view(out, 2, s2) : NULL;
    int rc = o2 ? (N * D > 0 ? k->embedding(o2, wc, ic) : 0) : -1;
    efla_set_grad_enabled(prev);
    efla_node *n = NULL;
    if (!rc && (efla_record1(op, embedding_backward, 1, (efla_tensor *const *)&weight, out, &n) ||
                (n && efla_node_save(n, ic) < 0)))
        rc = -1;
    efla_tensor_release(flat); efla_tensor_release(ic); efla_tensor_release(wc); efla_tensor_release(o2);
    if (rc) { efla_tensor_release(out); return NULL; }
    return out;
}

/* ---- output head + cross-entropy ----------------------------------------------------------
 * Rows go chunk_rows at a time through logits = h_chunk W^T; the row kernel turns the
 * logits into their gradient in place (softmax - onehot), which the two matmuls turn into
 * dh and dW right away, so the node saves dh [N,D], dW [V,D] (float32 for bfloat16 data)
 * and the target count, never the logits. The mean divides by the count on the device:
 * nothing here waits for the GPU. */
enum { LCE_DH = 0, LCE_DW, LCE_COUNT };

/* g * scale (a 0-d tensor), cast to dtype (new ref) */
static efla_tensor *scaled_as(const efla_tensor *g, const efla_tensor *scale, efla_dtype dtype) {
    efla_tensor *s = efla_binary(EFLA_MUL, g, scale);
    if (!s || s->dtype == dtype) return s;
    efla_tensor *c = efla_to(s, dtype, s->device);
    efla_tensor_release(s);
    return c;
}

static int linear_ce_backward(efla_node *n, efla_tensor *const *go, efla_tensor **gi) {
    int has_dh = (int)n->params[0], has_dw = (int)n->params[1];
    efla_dtype hdt = (efla_dtype)(int)n->params[2], wdt = (efla_dtype)(int)n->params[3];
    int slot = 0;
    efla_tensor *dh = has_dh ? SAVED(n, slot++) : NULL, *dw = has_dw ? SAVED(n, slot++) : NULL;
    efla_tensor *count = SAVED(n, slot), *scale = NULL;
    int rc = -1;
    if ((has_dh && !dh) || (has_dw && !dw) || !count) goto out;
    efla_tensor *gcast = efla_to(go[0], count->dtype, count->device);
    scale = gcast ? efla_binary(EFLA_DIV, gcast, count) : NULL;
    efla_tensor_release(gcast);
    if (!scale) goto out;
    if (dh && !(gi[0] = scaled_as(dh, scale, hdt))) goto out;
    if (dw && !(gi[1] = scaled_as(dw, scale, wdt))) goto out;
    rc = 0;
out:
    efla_tensor_release(dh); efla_tensor_release(dw); efla_tensor_release(count); efla_tensor_release(scale);
    return rc;
}

/* One chunk: rows [r0, r0+rows) of h. Writes the row losses into loss, and when asked the
 * rows of dh and the chunk's share of dW (added into *dw_acc, created at the first chunk). */
static int linear_ce_chunk(const efla_fused_kernels *k, const efla_tensor *h, const efla_tensor *wt,
                           const efla_tensor *w, const efla_tensor *target, efla_tensor *loss, int64_t ignore,
                           int64_t r0, int64_t rows, efla_tensor *dh, efla_tensor **dw_acc, efla_dtype acc_dt) {
    efla_tensor *hc = efla_narrow(h, 0, r0, rows), *tc = hc ? efla_narrow(target, 0, r0, rows) : NULL;
    efla_tensor *lc = tc ? efla_narrow(loss, 0, r0, rows) : NULL;
    efla_tensor *logits = lc ? efla_matmul(hc, wt) : NULL, *part = NULL, *lt = NULL;
    int want_grad = dh || dw_acc;
    int rc = logits ? k->ce_rows(lc, want_grad ? logits : NULL, logits, tc, ignore) : -1;
    if (!rc && dh) {
        efla_tensor *dhc = efla_narrow(dh, 0, r0, rows);
        part = dhc ? efla_matmul(logits, w) : NULL;
        rc = part ? efla_copy_(dhc, part) : -1;
        efla_tensor_release(dhc);
        efla_tensor_release(part);
        part = NULL;
    }
    if (!rc && dw_acc) {
        lt = efla_transpose(logits, 0, 1);
        part = lt ? efla_matmul(lt, hc) : NULL;
        if (!part) rc = -1;
        else if (!*dw_acc) {
            *dw_acc = part->dtype == acc_dt ? part : efla_to(part, acc_dt, part->device);
            if (*dw_acc == part) part = NULL;
            rc = *dw_acc ? 0 : -1;
        } else {
            rc = efla_binary_(EFLA_ADD, *dw_acc, part);
        }
    }
    efla_tensor_release(hc); efla_tensor_release(tc); efla_tensor_release(lc); efla_tensor_release(logits);
    efla_tensor_release(part); efla_tensor_release(lt);
    return rc;
}

efla_tensor *efla_linear_cross_entropy(const efla_tensor *h, const efla_tensor *weight, const efla_tensor *target,
                                       int64_t ignore_index, int64_t chunk_rows) {
    const char *op = "linear_cross_entropy";
    if (!h || !target) return efla_fail_null("%s: %s is NULL", op, !h ? "h" : "target");
    if (check_like(op, "h", h, h) || check_like(op, "weight", weight, h)) return NULL;
    if (h->ndim != 2 || weight->ndim != 2 || weight->shape[1] != h->shape[1])
        return efla_fail_null("%s: needs h [N,D] and weight [V,D], got h %s and weight %s (reshape h to [-1, D])",
                              op, efla_tshape(h), efla_tshape(weight));
    if (target->dtype != EFLA_INT64 || target->ndim != 1 || target->shape[0] != h->shape[0])
        return efla_fail_null("%s: target must be int64 [N] = [%lld] class indices, got %s %s", op,
                              (long long)h->shape[0], efla_tshape(target), efla_dtype_name(target->dtype));
    if (efla_check_same_device(op, h, target)) return NULL;
    const efla_fused_kernels *k = efla_fused_for(op, h->device);
    if (!k) return NULL;
    int64_t N = h->shape[0], V = weight->shape[0], D = h->shape[1];
    if (chunk_rows <= 0) {
        chunk_rows = ((int64_t)1 << 26) / (V > 0 ? V : 1);
        if (chunk_rows < 64) chunk_rows = 64;
    }
    efla_tensor *ins[3] = { (efla_tensor *)h, (efla_tensor *)weight, (efla_tensor *)target };
    int grad = efla_any_requires_grad(2, ins);
    int need_dh = grad && h->requires_grad, need_dw = grad && weight->requires_grad;
    efla_dtype ldt = h->dtype == EFLA_FLOAT64 ? EFLA_FLOAT64 : EFLA_FLOAT32;

    int prev = efla_set_grad_enabled(0);
    efla_tensor *hc = efla_contiguous(h), *tc = hc ? efla_contiguous(target) : NULL;
    efla_tensor *wt = tc ? efla_transpose(weight, 0, 1) : NULL;
    efla_tensor *loss = wt ? efla_empty(1, &N, ldt, h->device) : NULL;
    efla_tensor *dh = (loss && need_dh) ? efla_empty(2, h->shape, h->dtype, h->device) : NULL;
    efla_tensor *dw = NULL, *ne = NULL, *cnt = NULL, *count = NULL, *total = NULL, *res = NULL;
    int rc = (!loss || (need_dh && !dh)) ? -1 : 0;
    for (int64_t r0 = 0; !rc && r0 < N; r0 += chunk_rows) {
        int64_t rows = N - r0 < chunk_rows ? N - r0 : chunk_rows;
        rc = linear_ce_chunk(k, hc, wt, weight, tc, loss, ignore_index, r0, rows, dh, need_dw ? &dw : NULL, ldt);
    }
    if (!rc && need_dw && !dw) {   /* no rows: a zero gradient */
        int64_t s[2] = { V, D };
        rc = (dw = efla_zeros(2, s, ldt, h->device)) ? 0 : -1;
    }
    if (!rc) rc = (ne = efla_binary_scalar(EFLA_NE, tc, (double)ignore_index, 0)) ? 0 : -1;
    if (!rc) rc = (cnt = efla_reduce(EFLA_SUM, ne, 0, NULL, 0, 0)) ? 0 : -1;
    if (!rc) rc = (count = efla_to(cnt, ldt, h->device)) ? 0 : -1;
    if (!rc) rc = (total = efla_reduce(EFLA_SUM, loss, 0, NULL, 0, 0)) ? 0 : -1;
    if (!rc) rc = (res = efla_binary(EFLA_DIV, total, count)) ? 0 : -1;
    efla_set_grad_enabled(prev);
    efla_node *n = NULL;
    if (!rc && grad) {
        rc = efla_record1(op, linear_ce_backward, 3, ins, res, &n);
        if (!rc && n) {
            if ((dh && efla_node_save(n, dh) < 0) || (dw && efla_node_save(n, dw) < 0) || efla_node_save(n, count) < 0)
                rc = -1;
            double p[4] = { dh != NULL, dw != NULL, (double)h->dtype, (double)weight->dtype };
            efla_node_set_params(n, 4, p);
        }
    }
    efla_tensor_release(hc); efla_tensor_release(tc); efla_tensor_release(wt); efla_tensor_release(loss);
    efla_tensor_release(dh); efla_tensor_release(dw); efla_tensor_release(ne); efla_tensor_release(cnt);
    efla_tensor_release(count); efla_tensor_release(total);
    if (rc) { efla_tensor_release(res); return NULL; }
    return res;
}

/* ops_attention.c: the front end of softmax attention (causal, optionally a sliding window).
 *
 *   efla_attention  q [B,Tq,H,dk], k [B,Tk,H,dk], v [B,Tk,H,dv] -> o [B,Tq,H,dv]
 *
 * The layout is the delta rule's, so a layer can swap one mixer for the other. Queries are
 * aligned to the end of the keys (query i is at position Tk - Tq + i), so decoding one token
 * against a KV cache is the same call with Tq = 1. One autograd node saves q, k, v, o and
 * the row log-sum-exp; the backward kernel recomputes the probabilities from them
 * (flash-attention-2), so no [Tq, Tk] matrix is ever stored. Kernels: core/cpu/attention.c,
 * cuda/attention.cu. */
#include "autograd.h"
#include "backend.h"
#include <math.h>
#include <stdlib.h>

void efla_attention_default_opts(efla_attention_opts *o) {
    if (!o) return;
    o->causal = 1;
    o->window = 0;
    o->scale = 0;
}

static int check(const char *op, const efla_tensor *q, const efla_tensor *k, const efla_tensor *v,
                 const efla_attention_opts *o) {
    if (!q || !k || !v) return efla_fail("%s: q, k and v must not be NULL", op);
    if (q->ndim != 4 || k->ndim != 4 || v->ndim != 4)
        return efla_fail("%s: q, k, v must be [B,T,H,d] (4 dims), got q %s, k %s, v %s", op, efla_tshape(q),
                         efla_tshape(k), efla_tshape(v));
    if (k->shape[0] != q->shape[0] || v->shape[0] != q->shape[0] || k->shape[2] != q->shape[2] ||
        v->shape[2] != q->shape[2])
        return efla_fail("%s: q %s, k %s and v %s must share B (dim 1) and H (dim 3)", op, efla_tshape(q),
                         efla_tshape(k), efla_tshape(v));
    if (k->shape[3] != q->shape[3])
        return efla_fail("%s: q %s and k %s must share the head size dk (dim 4)", op, efla_tshape(q), efla_tshape(k));
    if (v->shape[1] != k->shape[1])
        return efla_fail("%s: k %s and v %s must have the same number of keys (dim 2)", op, efla_tshape(k),
                         efla_tshape(v));
    if (k->shape[1] < 1) return efla_fail("%s: k %s has no keys", op, efla_tshape(k));
    if (k->dtype != q->dtype || v->dtype != q->dtype)
        return efla_fail("%s: q, k, v must share one dtype, got %s, %s, %s (cast with :float())", op,
                         efla_dtype_name(q->dtype), efla_dtype_name(k->dtype), efla_dtype_name(v->dtype));
    if (!efla_dtype_is_floating(q->dtype))
        return efla_fail("%s: q is %s; attention needs floating-point inputs", op, efla_dtype_name(q->dtype));
    if (k->device != q->device || v->device != q->device)
        return efla_fail("%s: q is on %s, k on %s, v on %s; move them to one device with :to()", op,
                         efla_device_name(q->device), efla_device_name(k->device), efla_device_name(v->device));
    if (q->dtype == EFLA_BFLOAT16 && q->device == EFLA_DEVICE_CPU)
        return efla_fail("%s: bfloat16 inputs are not supported on the cpu; cast q, k and v to float32 (:float())", op);
    if (o->window < 0) return efla_fail("%s: window %lld must be >= 0 (0 = no window)", op, (long long)o->window);
    if (o->window > 0 && !o->causal)
        return efla_fail("%s: a sliding window (window = %lld) needs causal = true", op, (long long)o->window);
    if (o->causal && q->shape[1] > k->shape[1])
        return efla_fail("%s: causal attention needs at least as many keys as queries (q %s, k %s): query i sits at "
                         "position Tk - Tq + i", op, efla_tshape(q), efla_tshape(k));
    if (!(o->scale == o->scale) || isinf(o->scale))
        return efla_fail("%s: scale %g is not a finite number (<= 0 means dk^-0.5)", op, o->scale);
    return 0;
}

enum { SV_Q, SV_K, SV_V, SV_O, SV_LSE, SV_COUNT };

static int attention_backward(efla_node *node, efla_tensor *const *go, efla_tensor **gi) {
    const efla_attention_args *a = efla_node_ctx(node);
    efla_tensor *sv[SV_COUNT] = {0}, *dO = NULL, *g[3] = {0};
    int rc = -1;
    for (int i = 0; i < SV_COUNT; i++)
        if (!(sv[i] = efla_node_saved(node, i))) goto out;
    const efla_backend *b = efla_backend_for("attention backward", sv[SV_Q]->device);
    if (!b) goto out;
    if (!b->attention_bwd) { efla_no_kernel("attention backward", sv[SV_Q]->device); goto out; }
    if (!(dO = efla_plain(go[0]))) goto out;
    for (int i = 0; i < 3; i++)
        if (!(g[i] = efla_empty(4, sv[i]->shape, sv[i]->dtype, sv[i]->device))) goto out;
    if (b->attention_bwd(a, efla_cpu_ptr(sv[SV_Q]), efla_cpu_ptr(sv[SV_K]), efla_cpu_ptr(sv[SV_V]),
                         efla_cpu_ptr(sv[SV_O]), efla_cpu_ptr(sv[SV_LSE]), efla_cpu_ptr(dO), efla_cpu_ptr(g[0]),
                         efla_cpu_ptr(g[1]), efla_cpu_ptr(g[2])))
        goto out;
    for (int i = 0; i < 3; i++)
        if (efla_node_needs_grad(node, i)) { gi[i] = g[i]; g[i] = NULL; }
    rc = 0;
out:
    for (int i = 0; i < SV_COUNT; i++) efla_tensor_release(sv[i]);
    for (int i = 0; i < 3; i++) efla_tensor_release(g[i]);
    efla_tensor_release(dO);
    return rc;
}

int efla_attention(const efla_tensor *q, const efla_tensor *k, const efla_tensor *v,
                   const efla_attention_opts *opts, efla_tensor **out) {
    const char *op = "attention";
    efla_attention_opts o;
    if (opts) o = *opts; else efla_attention_default_opts(&o);
    if (!out) return efla_fail("%s: the out pointer is NULL", op);
    *out = NULL;
    if (check(op, q, k, v, &o)) return -1;
    const efla_backend *b = efla_backend_for(op, q->device);
    if (!b) return -1;
    if (!b->attention_fwd) return efla_no_kernel(op, q->device);
    efla_attention_args a = {0};
    a.B = q->shape[0]; a.Tq = q->shape[1]; a.Tk = k->shape[1]; a.H = q->shape[2];
    a.dk = q->shape[3]; a.dv = v->shape[3];
    a.window = o.window; a.causal = o.causal != 0; a.dtype = q->dtype;
    a.scale = o.scale > 0 ? o.scale : (a.dk > 0 ? 1.0 / sqrt((double)a.dk) : 1.0);

    efla_tensor *in[3] = {(efla_tensor *)q, (efla_tensor *)k, (efla_tensor *)v};
    efla_tensor *qc = efla_plain(q), *kc = efla_plain(k), *vc = efla_plain(v), *o_t = NULL, *lse = NULL;
    int rc = -1;
    if (!qc || !kc || !vc) goto out;
    int64_t oshape[4] = {a.B, a.Tq, a.H, a.dv}, lshape[3] = {a.B, a.H, a.Tq};
    if (!(o_t = efla_empty(4, oshape, q->dtype, q->device))) goto out;
    if (!(lse = efla_empty(3, lshape, q->dtype == EFLA_FLOAT64 ? EFLA_FLOAT64 : EFLA_FLOAT32, q->device))) goto out;
    if (efla_tensor_numel(o_t) > 0 &&
        b->attention_fwd(&a, efla_cpu_ptr(qc), efla_cpu_ptr(kc), efla_cpu_ptr(vc), efla_cpu_ptr(o_t), efla_cpu_ptr(lse)))
        goto out;
    if (efla_any_requires_grad(3, in)) {
        efla_node *node = NULL;
        if (efla_record1(op, attention_backward, 3, in, o_t, &node)) goto out;
        if (node) {
            efla_attention_args *c = malloc(sizeof *c);
            if (!c) { efla_fail("%s: out of memory", op); goto out; }
            *c = a;
            efla_node_set_ctx(node, c, free);
            efla_tensor *save[SV_COUNT] = {qc, kc, vc, o_t, lse};
            for (int i = 0; i < SV_COUNT; i++)
                if (efla_node_save(node, save[i]) < 0) goto out;
        }
    }
    *out = o_t;
    o_t = NULL;
    rc = 0;
out:
    efla_tensor_release(qc); efla_tensor_release(kc); efla_tensor_release(vc);
    efla_tensor_release(o_t); efla_tensor_release(lse);
    return rc;
}

/* ops_delta_rule_rank.c: the front end of the rank-r exact update (docs/RANK_R.md),
 *
 *   efla_delta_rule_rank   q [B,T,H,dk], k [B,T,H,r,dk], v [B,T,H,r,dv], beta [B,T,H]
 *                          -> o [B,T,H,dv] (and the final state [B,H,dk,dv])
 *
 * r keys and r values per token and head; the state follows dS/dt = -K^T K S + K^T V for a
 * time beta, solved exactly: S <- S + K^T f(K K^T) (V - K S), f(G) = G^-1 (I - e^{-beta G}).
 * With r = 1 this is efla_delta_rule's exact step. This file checks arguments, makes
 * contiguous copies and records one autograd node; the backend's kernels do the rest
 * (core/cpu/delta_rule_rank.c, cuda/delta_rule_rank.cu). */
#include "autograd.h"
#include "backend.h"
#include "delta_rule.h"
#include "delta_rule_rank.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* tokens between two saved states: the backward replays at most this many (memory of the
 * checkpoints T/CKPT dk dv per pair, of the replay CKPT dk dv per thread) */
enum { CKPT_LEN = 32 };

static int check_shape(const char *op, const char *name, const efla_tensor *t, int ndim,
                       const int64_t *want, const char *layout) {
    if (!t) return efla_fail("%s: %s is NULL; expected a tensor %s", op, name, layout);
    int ok = t->ndim == ndim;
    for (int d = 0; ok && d < ndim; d++) ok = want[d] < 0 || t->shape[d] == want[d];
    if (!ok) {
        char buf[96];
        int n = 0;
        for (int d = 0; d < ndim && n < 80; d++)
            n += want[d] < 0 ? snprintf(buf + n, sizeof buf - (size_t)n, d ? ",*" : "*")
                             : snprintf(buf + n, sizeof buf - (size_t)n, d ? ",%lld" : "%lld", (long long)want[d]);
        return efla_fail("%s: %s must be %s = [%s], got shape %s", op, name, layout, buf, efla_tshape(t));
    }
    return 0;
}

static int check_inputs(const char *op, const efla_tensor *q, const efla_tensor *k, const efla_tensor *v,
                        const efla_tensor *beta, const efla_tensor *s0, const efla_delta_rule_opts *o) {
    if (!q) return efla_fail("%s: q is NULL; expected a tensor [B,T,H,dk]", op);
    if (q->ndim != 4) return efla_fail("%s: q must be [B,T,H,dk] (4 dims), got shape %s", op, efla_tshape(q));
    const int64_t B = q->shape[0], T = q->shape[1], H = q->shape[2], dk = q->shape[3];
    int64_t wk[5] = {B, T, H, -1, dk};
    if (check_shape(op, "k", k, 5, wk, "[B,T,H,r,dk]")) return -1;
    const int64_t r = k->shape[3];
    int64_t wv[5] = {B, T, H, r, -1}, wb[3] = {B, T, H};
    if (check_shape(op, "v", v, 5, wv, "[B,T,H,r,dv]") || check_shape(op, "beta", beta, 3, wb, "[B,T,H]"))
        return -1;
    if (r < 1 || r > EFLA_RANK_MAX)
        return efla_fail("%s: k has r = %lld keys per token (dim 4 of [B,T,H,r,dk]); r must be 1..%d", op,
                         (long long)r, EFLA_RANK_MAX);
    if (s0) {
        int64_t ws[4] = {B, H, dk, v->shape[4]};
        if (check_shape(op, "initial_state", s0, 4, ws, "[B,H,dk,dv]")) return -1;
    }
    const efla_tensor *all[4] = {k, v, beta, s0};
    const char *names[4] = {"k", "v", "beta", "initial_state"};
    if (!efla_dtype_is_floating(q->dtype) || (q->device == EFLA_DEVICE_CPU && q->dtype == EFLA_BFLOAT16))
        return efla_fail("%s: q is %s; use float32 or float64 (bfloat16 only on cuda)", op,
                         efla_dtype_name(q->dtype));
    for (int i = 0; i < 4; i++) {
        if (!all[i]) continue;
        efla_dtype want = i == 3 && q->dtype == EFLA_BFLOAT16 ? EFLA_FLOAT32 : q->dtype;
        if (all[i]->dtype != want)
            return efla_fail("%s: %s is %s but must be %s like q (cast with :float() or :double())", op,
                             names[i], efla_dtype_name(all[i]->dtype), efla_dtype_name(want));
        if (all[i]->device != q->device)
            return efla_fail("%s: %s is on %s but q is on %s; move every input to one device with :to()", op,
                             names[i], efla_device_name(all[i]->device), efla_device_name(q->device));
    }
    if (efla_check_order(op, o->order)) return -1;
    if (!(o->scale == o->scale) || isinf(o->scale))
        return efla_fail("%s: scale %g is not a finite number (<= 0 means dk^-0.5)", op, o->scale);
    return 0;
}

/* ---- autograd ----------------------------------------------------------------------------- */
enum { SL_Q, SL_K, SL_V, SL_BETA, SL_CKPT, SL_COUNT };

static void ctx_free(void *p) { free(p); }

static int rank_backward(efla_node *node, efla_tensor *const *go, efla_tensor **gi) {
    const efla_rank_args *a = efla_node_ctx(node);
    efla_tensor *sv[SL_COUNT] = {0}, *dO = NULL, *dSf = NULL, *g[5] = {0};
    int rc = -1;
    for (int i = 0; i < SL_COUNT; i++)
        if (!(sv[i] = efla_node_saved(node, i))) goto out;
    const efla_tensor *q = sv[SL_Q], *k = sv[SL_K], *v = sv[SL_V], *beta = sv[SL_BETA];
    const efla_backend *b = efla_backend_for("delta_rule_rank backward", q->device);
    if (!b) goto out;
    if (!b->delta_rule_rank_bwd) { efla_no_kernel("delta_rule_rank backward", q->device); goto out; }
    if (!(dO = efla_plain(go[0]))) goto out;
    if (node->n_outputs > 1 && !(dSf = efla_plain(go[1]))) goto out;
    int64_t sshape[4] = {a->B, a->H, a->dk, a->dv};
    g[0] = efla_empty(4, q->shape, q->dtype, q->device);
    g[1] = efla_empty(5, k->shape, k->dtype, k->device);
    g[2] = efla_empty(5, v->shape, v->dtype, v->device);
    g[3] = efla_empty(3, beta->shape, beta->dtype, beta->device);
    if (efla_node_needs_grad(node, 4)) g[4] = efla_empty(4, sshape, a->state_dtype, q->device);
    if (!g[0] || !g[1] || !g[2] || !g[3] || (efla_node_needs_grad(node, 4) && !g[4])) goto out;
    if (b->delta_rule_rank_bwd(a, efla_cpu_ptr(q), efla_cpu_ptr(k), efla_cpu_ptr(v), efla_cpu_ptr(beta),
                               efla_cpu_ptr(sv[SL_CKPT]), efla_cpu_ptr(dO), dSf ? efla_cpu_ptr(dSf) : NULL,
                               efla_cpu_ptr(g[0]), efla_cpu_ptr(g[1]), efla_cpu_ptr(g[2]), efla_cpu_ptr(g[3]),
                               g[4] ? efla_cpu_ptr(g[4]) : NULL))
        goto out;
    for (int i = 0; i < 5; i++)
        if (efla_node_needs_grad(node, i)) { gi[i] = g[i]; g[i] = NULL; }
    rc = 0;
out:
    for (int i = 0; i < SL_COUNT; i++) efla_tensor_release(sv[i]);
    for (int i = 0; i < 5; i++) efla_tensor_release(g[i]);
    efla_tensor_release(dO);
    efla_tensor_release(dSf);
    return rc;
}

/* ---- the operator ------------------------------------------------------------------------- */
int efla_delta_rule_rank(const efla_tensor *q, const efla_tensor *k, const efla_tensor *v,
                         const efla_tensor *beta, const efla_tensor *initial_state,
                         const efla_delta_rule_opts *opts, efla_tensor **out, efla_tensor **final_state) {
    const char *op = "delta_rule_rank";
    efla_delta_rule_opts o;
    if (efla_delta_rule_begin(op, opts, &o, out, final_state)) return -1;
    if (check_inputs(op, q, k, v, beta, initial_state, &o)) return -1;
    const efla_backend *b = efla_backend_for(op, q->device);
    if (!b) return -1;
    if (!b->delta_rule_rank_fwd) return efla_no_kernel(op, q->device);

    efla_rank_args a = {0};
    a.B = q->shape[0]; a.T = q->shape[1]; a.H = q->shape[2]; a.dk = q->shape[3];
    a.r = k->shape[3]; a.dv = v->shape[4];
    a.scale = o.scale > 0 ? o.scale : (a.dk > 0 ? 1.0 / sqrt((double)a.dk) : 1.0);
    a.order = o.order;
    a.ckpt_len = CKPT_LEN;
    a.dtype = q->dtype;
    a.state_dtype = q->dtype == EFLA_BFLOAT16 ? EFLA_FLOAT32 : q->dtype;
    /* the CPU replays in double, so it keeps its checkpoints in double too */
    a.ckpt_dtype = q->device == EFLA_DEVICE_CPU ? EFLA_FLOAT64 : a.state_dtype;
    efla_tensor *in[5] = {(efla_tensor *)q, (efla_tensor *)k, (efla_tensor *)v, (efla_tensor *)beta,
                          (efla_tensor *)initial_state};
    const int want_grad = efla_any_requires_grad(5, in);

    efla_tensor *qc = efla_plain(q), *kc = efla_plain(k), *vc = efla_plain(v), *bc = efla_plain(beta);
    efla_tensor *sc = initial_state ? efla_plain(initial_state) : NULL;
    efla_tensor *o_t = NULL, *sf = NULL, *ck = NULL;
    int rc = -1;
    if (!qc || !kc || !vc || !bc || (initial_state && !sc)) goto out;
    int64_t oshape[4] = {a.B, a.T, a.H, a.dv}, sshape[4] = {a.B, a.H, a.dk, a.dv};
    int64_t cshape[5] = {a.B, a.H, (a.T + a.ckpt_len - 1) / a.ckpt_len, a.dk, a.dv};
    if (!(o_t = efla_empty(4, oshape, q->dtype, q->device))) goto out;
    if (o.output_final_state && !(sf = efla_empty(4, sshape, a.state_dtype, q->device))) goto out;
    if (want_grad && !(ck = efla_empty(5, cshape, a.ckpt_dtype, q->device))) goto out;
    if (b->delta_rule_rank_fwd(&a, efla_cpu_ptr(qc), efla_cpu_ptr(kc), efla_cpu_ptr(vc), efla_cpu_ptr(bc),
                               sc ? efla_cpu_ptr(sc) : NULL, efla_cpu_ptr(o_t), sf ? efla_cpu_ptr(sf) : NULL,
                               ck ? efla_cpu_ptr(ck) : NULL))
        goto out;
    if (want_grad) {
        efla_tensor *outs[2] = {o_t, sf};
        efla_clear_error();
        efla_node *node = efla_node_record(op, rank_backward, 5, in, sf ? 2 : 1, outs);
        if (!node) goto out;
        efla_rank_args *c = malloc(sizeof *c);
        if (!c) { efla_fail("%s: out of memory", op); goto out; }
        *c = a;
        efla_node_set_ctx(node, c, ctx_free);
        efla_tensor *save[SL_COUNT] = {qc, kc, vc, bc, ck};
        for (int i = 0; i < SL_COUNT; i++)
            if (efla_node_save(node, save[i]) < 0) goto out;
    }
    *out = o_t;
    o_t = NULL;
    if (final_state) { *final_state = sf; sf = NULL; }
    rc = 0;
out:
    efla_tensor_release(qc); efla_tensor_release(kc); efla_tensor_release(vc); efla_tensor_release(bc);
    efla_tensor_release(sc); efla_tensor_release(o_t); efla_tensor_release(sf); efla_tensor_release(ck);
    return rc;
}

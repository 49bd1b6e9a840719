/* ops_delta_rule.c: the delta-rule operator's front ends (EFLA, DeltaNet and the
 * Runge-Kutta orders in between; the maths is docs/MATH.md).
 *
 *   efla_delta_rule       q, k [B,T,H,dk], v [B,T,H,dv], beta [B,T,H] -> o [B,T,H,dv]
 *   efla_delta_rule_step  one token, for decoding: the sequence form with T = 1
 *
 * Work split: this file checks arguments, makes contiguous copies, computes
 * lambda = |k|^2 and alpha = beta * phi(beta * lambda) (delta_rule_alpha.c), and hands
 * raw buffers to backend->delta_rule_fwd / delta_rule_bwd. Autograd records ONE fused
 * node whose backward calls the backend's backward kernel and then chains the
 * gradient of alpha into beta and into k (through lambda: dk += 2 k dlambda).
 *
 * lambda and the alpha chain run on the host for cpu tensors (plain loops); a backend with
 * delta_rule_alpha_fwd/bwd (CUDA) computes them on its device, so a training step never
 * synchronises with the host here.
 *
 * Gated calls (opts->log_decay, docs/MATH.md §6) add a second step alpha' for the value term
 * and the decay e^g; their chain through alpha' adds into dbeta, dk (through lambda) and dg.
 * On a device alpha' and its chain run in the backend's delta_rule_alpha_v_fwd/bwd; CUDA's
 * gated kernel is the scan of cuda/delta_rule_gated.cu whatever algorithm was asked. */
#include "autograd.h"
#include "backend.h"
#include "delta_rule.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

void efla_delta_rule_default_opts(efla_delta_rule_opts *o) {
    if (!o) return;
    o->order = EFLA_ORDER_EXACT;
    o->scale = 0;                 /* dk^-0.5 */
    o->chunk_size = 64;
    o->algorithm = EFLA_ALGO_AUTO;
    o->reference_eps = 0;
    o->output_final_state = 0;
    o->recompute_states = 0;
    o->log_decay = NULL;           /* ungated */
}

/* ---- the auto rule ----------------------------------------------------------------------------
 * Measured with bench/delta_rule_cpu.c (float32, 2 threads, T = 784 and 2048) on the 2-core
 * dev machine and on a quiet 16-core Sapphire Rapids. Forward only: the recurrent pass
 * (6 dk dv FLOPs per token, one sweep over the state) ties with the chunked form up to
 * dk = dv = 32 (16: 5.2 vs 8.3 ms and 6.7 vs 6.5 ms; 32: 11.0 vs 13.5, 13.9 vs 11.9) and
 * wins on sequences too short to fill a chunk; from 64 up chunked is clearly faster (64:
 * 35 vs 46 ms, 27 vs 40; 128: 88 vs 143, 57 vs 110). Forward + backward: chunked (its
 * backward is matrix products, the recurrent one matrix-vector passes; 64: 126 vs 280 ms,
 * 95 vs 230). Other devices: chunked. */
static int choose_algorithm(int64_t max_len, int64_t dk, int64_t dv, int device, int want_grad) {
    if (device != EFLA_DEVICE_CPU) return EFLA_ALGO_CHUNKED;
    if (max_len <= 1) return EFLA_ALGO_RECURRENT;
    if (want_grad) return EFLA_ALGO_CHUNKED;
    if (dk * dv <= 32 * 32 || max_len < 16) return EFLA_ALGO_RECURRENT;
    return EFLA_ALGO_CHUNKED;
}

/* ---- argument checks ---------------------------------------------------------------------------- */
static int check_4d(const char *op, const char *name, const efla_tensor *t, const char *layout) {
    if (!t) return efla_fail("%s: %s is NULL", op, name);
    if (t->ndim != 4)
        return efla_fail("%s: %s must be %s (4 dims), got shape %s", op, name, layout, efla_tshape(t));
    return 0;
}

static int check_dtype(const char *op, const char *name, const efla_tensor *t, efla_dtype want,
                       const efla_tensor *q) {
    if (t->dtype != want)
        return efla_fail("%s: %s is %s but q is %s; q, k, v, beta and the state must share one dtype "
                         "(cast with :float() or :double())", op, name, efla_dtype_name(t->dtype),
                         efla_dtype_name(q->dtype));
    return 0;
}

static int check_device(const char *op, const char *name, const efla_tensor *t, const efla_tensor *q) {
    if (t->device != q->device)
        return efla_fail("%s: %s is on %s but q is on %s; move every input to one device with :to()",
                         op, name, efla_device_name(t->device), efla_device_name(q->device));
    return 0;
}

/* The N sequences: from cu_seqlens (B = 1, packed along T) or one per batch row. */
typedef struct seqs {
    int64_t N, max_len, *batch, *start, *len;   /* batch/start/len share one allocation */
} seqs;

static int read_seqs(const char *op, const efla_tensor *cu, int64_t B, int64_t T, seqs *s) {
    int64_t *cs = NULL;
    if (cu) {
        if (cu->dtype != EFLA_INT64 || cu->ndim != 1 || cu->shape[0] < 1)
            return efla_fail("%s: cu_seqlens must be a 1-d int64 tensor [N+1] of sequence offsets, "
                             "got %s of shape %s", op, efla_dtype_name(cu->dtype), efla_tshape(cu));
        if (B != 1)
            return efla_fail("%s: with cu_seqlens the batch size must be 1 (sequences are packed "
                             "along T), got B = %lld", op, (long long)B);
        s->N = cu->shape[0] - 1;
        cs = malloc(sizeof(int64_t) * (size_t)(s->N + 1));
        if (!cs) return efla_fail("%s: out of memory", op);
        if (efla_to_buffer(cu, cs, sizeof(int64_t) * (size_t)(s->N + 1))) { free(cs); return -1; }
        if (cs[0] != 0 || cs[s->N] != T) {
            int rc = efla_fail("%s: cu_seqlens must start at 0 and end at T = %lld, got %lld .. %lld",
                               op, (long long)T, (long long)cs[0], (long long)cs[s->N]);
            free(cs);
            return rc;
        }
        for (int64_t n = 0; n < s->N; n++)
            if (cs[n + 1] < cs[n]) {
                int rc = efla_fail("%s: cu_seqlens must be non-decreasing, but entry %lld (%lld) > "
                                   "entry %lld (%lld)", op, (long long)n, (long long)cs[n],
                                   (long long)(n + 1), (long long)cs[n + 1]);
                free(cs);
                return rc;
            }
    } else {
        s->N = B;
    }
    s->batch = malloc(sizeof(int64_t) * (size_t)(3 * s->N + 1));
    if (!s->batch) { free(cs); return efla_fail("%s: out of memory", op); }
    s->start = s->batch + s->N;
    s->len = s->start + s->N;
    s->max_len = 0;
    for (int64_t n = 0; n < s->N; n++) {
        s->batch[n] = cu ? 0 : n;
        s->start[n] = cu ? cs[n] : 0;
        s->len[n] = cu ? cs[n + 1] - cs[n] : T;
        if (s->len[n] > s->max_len) s->max_len = s->len[n];
    }
    free(cs);
    return 0;
}

/* The gate: [B,T,H] like beta, q's dtype and device, the exact step or order 1 (docs/MATH.md §6). */
static int check_log_decay(const char *op, const efla_tensor *q, const efla_delta_rule_opts *o) {
    const efla_tensor *g = o->log_decay;
    if (!g) return 0;
    if (g->ndim != 3 || g->shape[0] != q->shape[0] || g->shape[1] != q->shape[1] || g->shape[2] != q->shape[2])
        return efla_fail("%s: log_decay %s must be [B,T,H] = [%lld,%lld,%lld] (one log-decay g <= 0 per "
                         "token and head; q is %s)", op, efla_tshape(g), (long long)q->shape[0],
                         (long long)q->shape[1], (long long)q->shape[2], efla_tshape(q));
    if (check_device(op, "log_decay", g, q) || check_dtype(op, "log_decay", g, q->dtype, q)) return -1;
    if (o->order != EFLA_ORDER_EXACT && o->order != 1)
        return efla_fail("%s: log_decay works with the exact step (order 'exact': gated EFLA) or order 1 "
                         "(Gated DeltaNet), not order %d: a Runge-Kutta step of the gated ODE would replace "
                         "the decay e^g by a polynomial of g (docs/MATH.md §6)", op, o->order);
    if (o->reference_eps)
        return efla_fail("%s: reference_eps reproduces the published ungated EFLA; it has no gated form, "
                         "drop it or drop log_decay", op);
    /* a device needs alpha' and its chain on the device (the cpu runs them on the host) */
    if (q->device != EFLA_DEVICE_CPU &&
        efla_check_kernel(op, EFLA_OP_delta_rule_alpha_v_fwd, q->device, q->dtype,
                          "run the gated layer on the cpu (:cpu()) or drop log_decay"))
        return -1;
    return 0;
}

static int check_inputs(const char *op, const efla_tensor *q, const efla_tensor *k,
                        const efla_tensor *v, const efla_tensor *beta, const efla_tensor *s0,
                        const efla_delta_rule_opts *o) {
    if (check_4d(op, "q", q, "[B,T,H,dk]") || check_4d(op, "k", k, "[B,T,H,dk]") ||
        check_4d(op, "v", v, "[B,T,H,dv]"))
        return -1;
    if (!beta) return efla_fail("%s: beta is NULL", op);
    for (int d = 0; d < 3; d++)
        if (k->shape[d] != q->shape[d])
            return efla_fail("%s: q %s and k %s differ in B, T or H (dim %d: %lld vs %lld); both are "
                             "[B,T,H,dk]", op, efla_tshape(q), efla_tshape(k), d,
                             (long long)q->shape[d], (long long)k->shape[d]);
    if (k->shape[3] != q->shape[3])
        return efla_fail("%s: dk of q (%lld) and k (%lld) differ: q %s, k %s", op,
                         (long long)q->shape[3], (long long)k->shape[3], efla_tshape(q), efla_tshape(k));
    for (int d = 0; d < 3; d++)
        if (v->shape[d] != q->shape[d])
            return efla_fail("%s: v %s must be [B,T,H,dv] with the B, T, H of q %s (dim %d: %lld vs "
                             "%lld)", op, efla_tshape(v), efla_tshape(q), d, (long long)v->shape[d],
                             (long long)q->shape[d]);
    if (beta->ndim != 3 || beta->shape[0] != q->shape[0] || beta->shape[1] != q->shape[1] ||
        beta->shape[2] != q->shape[2])
        return efla_fail("%s: beta %s must be [B,T,H] = [%lld,%lld,%lld] (one step size per token and "
                         "head; q is %s)", op, efla_tshape(beta), (long long)q->shape[0],
                         (long long)q->shape[1], (long long)q->shape[2], efla_tshape(q));
    if (check_device(op, "k", k, q) || check_device(op, "v", v, q) || check_device(op, "beta", beta, q) ||
        (s0 && check_device(op, "initial_state", s0, q)))
        return -1;
    if (!efla_dtype_is_floating(q->dtype))
        return efla_fail("%s: q is %s; the delta rule needs float32 or float64 inputs", op,
                         efla_dtype_name(q->dtype));
    if (check_dtype(op, "k", k, q->dtype, q) || check_dtype(op, "v", v, q->dtype, q) ||
        check_dtype(op, "beta", beta, q->dtype, q))
        return -1;
    if (efla_check_kernel(op, EFLA_OP_delta_rule_fwd, q->device, q->dtype,
                          "cast q, k, v and beta to float32 first (:float())"))
        return -1;
    if (s0) {
        efla_dtype sdt = q->dtype == EFLA_BFLOAT16 ? EFLA_FLOAT32 : q->dtype;
        if (check_dtype(op, "initial_state", s0, sdt, q)) return -1;
    }
    if (efla_check_order(op, o->order)) return -1;
    if (o->chunk_size != 0 && o->chunk_size != 16 && o->chunk_size != 32 && o->chunk_size != 64 &&
        o->chunk_size != 128)
        return efla_fail("%s: chunk_size %d is not allowed; use 16, 32, 64 or 128", op, o->chunk_size);
    if (o->algorithm != EFLA_ALGO_AUTO && o->algorithm != EFLA_ALGO_CHUNKED &&
        o->algorithm != EFLA_ALGO_RECURRENT)
        return efla_fail("%s: algorithm %d is unknown; use 0 (auto), 1 (chunked) or 2 (recurrent)", op,
                         o->algorithm);
    if (!(o->scale == o->scale) || isinf(o->scale))
        return efla_fail("%s: scale %g is not a finite number (<= 0 means dk^-0.5)", op, o->scale);
    return check_log_decay(op, q, o);
}

/* ---- lambda and alpha ----------------------------------------------------------------------------- */
/* |k|^2 of one key, in double. Kept out of line so that every token gets the very same
 * instructions (a vectorised main loop and a scalar tail could round differently, and the
 * single-token step must match the sequence form bit for bit). */
static __attribute__((noinline)) double sumsq_f32(const float *k, int64_t n) {
    double s = 0;
    for (int64_t d = 0; d < n; d++) s += (double)k[d] * k[d];
    return s;
}
static __attribute__((noinline)) double sumsq_f64(const double *k, int64_t n) {
    double s = 0;
    for (int64_t d = 0; d < n; d++) s += k[d] * k[d];
    return s;
}

/* lambda = |k|^2 per token and head as a float64 tensor [B,T,H]; kc is a contiguous CPU
 * tensor (devices compute lambda with their backend's delta_rule_alpha_fwd). */
static efla_tensor *compute_lambda(const efla_tensor *kc) {
    int64_t shape[3] = {kc->shape[0], kc->shape[1], kc->shape[2]}, dk = kc->shape[3];
    efla_tensor *lam = efla_empty(3, shape, EFLA_FLOAT64, EFLA_DEVICE_CPU);
    if (!lam) return NULL;
    int64_t n = efla_numel_of(3, shape);
    double *l = efla_tensor_data(lam);
    if (kc->dtype == EFLA_FLOAT32) {
        const float *k = efla_tensor_data(kc);
#pragma omp parallel for if (n * dk > 65536) schedule(static)
        for (int64_t i = 0; i < n; i++) l[i] = sumsq_f32(k + i * dk, dk);
    } else {
        const double *k = efla_tensor_data(kc);
#pragma omp parallel for if (n * dk > 65536) schedule(static)
        for (int64_t i = 0; i < n; i++) l[i] = sumsq_f64(k + i * dk, dk);
    }
    return lam;
}

/* alpha [B,T,H] in dtype dt from beta (contiguous, CPU) and lambda */
static efla_tensor *compute_alpha(const efla_tensor *bc, const efla_tensor *lam, int order, int ref,
                                  efla_dtype dt) {
    efla_tensor *a = efla_empty(3, lam->shape, dt, EFLA_DEVICE_CPU);
    if (a)
        efla_alpha_fill(dt, efla_tensor_numel(lam), efla_tensor_data(bc), efla_tensor_data(lam), order, ref,
                        efla_tensor_data(a));
    return a;
}

/* ---- autograd ----------------------------------------------------------------------------------------- */
/* saved tensors; alpha_v and g only for gated calls, s0 and the chunk states when present */
enum { SL_Q, SL_K, SL_V, SL_ALPHA, SL_BETA, SL_LAMBDA, SL_S0, SL_CS, SL_ALPHA_V, SL_LOG_DECAY, SL_SOLVES, SL_COUNT };
/* the node's inputs (gradient slots) */
enum { IN_Q, IN_K, IN_V, IN_BETA, IN_S0, IN_LOG_DECAY, IN_COUNT };

typedef struct dr_ctx {
    efla_delta_rule_args args;    /* seq_* point into seq */
    int64_t *seq;
    int order, reference_eps;
    int slot[SL_COUNT];           /* node_saved index of each saved tensor, -1 when absent */
} dr_ctx;

static void dr_ctx_free(void *p) {
    dr_ctx *c = p;
    if (!c) return;
    free(c->seq);
    free(c);
}

/* The chain through alpha (and alpha' for gated calls; docs/MATH.md §3, §6) on the CPU:
 * dbeta, dg += dalpha' dalpha'/dg, and dk += 2 k dlambda; every buffer contiguous. Devices run
 * it in their backend's delta_rule_alpha_bwd (and delta_rule_alpha_v_bwd). */
static int chain_alpha(const dr_ctx *c, const efla_tensor *kc, const efla_tensor *betac,
                       const efla_tensor *lam, const efla_tensor *dalpha, const efla_tensor *log_decay,
                       const efla_tensor *dalpha_v, efla_tensor *grad_k, efla_tensor *dlog_decay,
                       efla_tensor **dbeta_out) {
    efla_dtype dt = kc->dtype;
    int64_t n = efla_tensor_numel(lam), head_dim_k = kc->shape[3];
    double *dl = malloc(sizeof(double) * (size_t)(n ? n : 1));
    efla_tensor *dbeta = efla_empty(3, lam->shape, dt, EFLA_DEVICE_CPU);
    if (!dl || !dbeta) {
        free(dl);
        efla_tensor_release(dbeta);
        return efla_fail("delta_rule backward: out of memory");
    }
    efla_alpha_backward(dt, n, efla_tensor_data(betac), efla_tensor_data(lam), c->order, c->reference_eps,
                        efla_tensor_data(dalpha), efla_tensor_data(dbeta), dl);
    if (log_decay)
        efla_alpha_v_backward(dt, n, efla_tensor_data(betac), efla_tensor_data(lam), efla_tensor_data(log_decay),
                              c->order, efla_tensor_data(dalpha_v), efla_tensor_data(dbeta), dl,
                              efla_tensor_data(dlog_decay));
    if (dt == EFLA_FLOAT32) {
        const float *k = efla_tensor_data(kc);
        float *g = efla_tensor_data(grad_k);
#pragma omp parallel for if (n * head_dim_k > 65536) schedule(static)
        for (int64_t i = 0; i < n; i++) {
            float s = (float)(2 * dl[i]);
            for (int64_t d = 0; d < head_dim_k; d++) g[i * head_dim_k + d] += s * k[i * head_dim_k + d];
        }
    } else {
        const double *k = efla_tensor_data(kc);
        double *g = efla_tensor_data(grad_k);
#pragma omp parallel for if (n * head_dim_k > 65536) schedule(static)
        for (int64_t i = 0; i < n; i++) {
            double s = 2 * dl[i];
            for (int64_t d = 0; d < head_dim_k; d++) g[i * head_dim_k + d] += s * k[i * head_dim_k + d];
        }
    }
    free(dl);
    *dbeta_out = dbeta;
    return 0;
}

static void *ptr_or_null(const efla_tensor *t) { return t ? efla_cpu_ptr(t) : NULL; }

static int dr_backward(efla_node *node, efla_tensor *const *go, efla_tensor **gi) {
    dr_ctx *c = efla_node_ctx(node);
    const efla_delta_rule_args *a = &c->args;
    efla_tensor *sv[SL_COUNT] = {0};
    efla_tensor *grad_o = NULL, *grad_sf = NULL, *grad[IN_COUNT] = {0}, *grad_alpha = NULL,
                *grad_alpha_v = NULL;
    int rc = -1;
    for (int i = 0; i < SL_COUNT; i++)
        if (c->slot[i] >= 0 && !(sv[i] = efla_node_saved(node, c->slot[i]))) goto out;
    const efla_tensor *q = sv[SL_Q], *k = sv[SL_K], *v = sv[SL_V], *log_decay = sv[SL_LOG_DECAY];
    const efla_backend *b = efla_backend_for("delta_rule backward", q->device);
    if (!b) goto out;
    if (!b->delta_rule_bwd) { efla_no_kernel("delta_rule backward", q->device); goto out; }
    if (!(grad_o = efla_plain(go[0]))) goto out;
    if (node->n_outputs > 1 && !(grad_sf = efla_plain(go[1]))) goto out;
    grad[IN_Q] = efla_empty(4, q->shape, q->dtype, q->device);
    grad[IN_K] = efla_empty(4, k->shape, k->dtype, k->device);
    grad[IN_V] = efla_empty(4, v->shape, v->dtype, v->device);
    grad_alpha = efla_empty(3, sv[SL_ALPHA]->shape, q->dtype, q->device);
    if (!grad[IN_Q] || !grad[IN_K] || !grad[IN_V] || !grad_alpha) goto out;
    if (sv[SL_S0] && !(grad[IN_S0] = efla_empty(4, sv[SL_S0]->shape, sv[SL_S0]->dtype, q->device))) goto out;
    if (log_decay && (!(grad_alpha_v = efla_empty(3, log_decay->shape, q->dtype, q->device)) ||
                      !(grad[IN_LOG_DECAY] = efla_empty(3, log_decay->shape, q->dtype, q->device))))
        goto out;
    efla_delta_rule_buffers buf = {
        .q = efla_cpu_ptr(q), .k = efla_cpu_ptr(k), .v = efla_cpu_ptr(v), .alpha = efla_cpu_ptr(sv[SL_ALPHA]),
        .alpha_v = ptr_or_null(sv[SL_ALPHA_V]), .log_decay = ptr_or_null(log_decay),
        .s0 = ptr_or_null(sv[SL_S0]), .chunk_states = ptr_or_null(sv[SL_CS]), .chunk_solves = ptr_or_null(sv[SL_SOLVES]),
        .d_o = efla_cpu_ptr(grad_o), .d_s_final = ptr_or_null(grad_sf),
        .dq = efla_cpu_ptr(grad[IN_Q]), .dk = efla_cpu_ptr(grad[IN_K]), .dv = efla_cpu_ptr(grad[IN_V]),
        .dalpha = efla_cpu_ptr(grad_alpha), .dalpha_v = ptr_or_null(grad_alpha_v),
        .dlog_decay = ptr_or_null(grad[IN_LOG_DECAY]), .ds0 = ptr_or_null(grad[IN_S0])};
    const efla_tensor *beta = sv[SL_BETA];
    const int device_chain = b->delta_rule_alpha_bwd && (!log_decay || b->delta_rule_alpha_v_bwd);
    if (device_chain && !(grad[IN_BETA] = efla_empty(3, beta->shape, beta->dtype, beta->device))) goto out;
    int alpha_chained = 0;   /* set by a backward that takes the chain through alpha itself */
    if (device_chain && !log_decay) {   /* offered to ungated calls */
        buf.beta = efla_cpu_ptr(beta);
        buf.lambda = (const double *)efla_cpu_ptr(sv[SL_LAMBDA]);
        buf.dbeta = efla_cpu_ptr(grad[IN_BETA]);
        buf.alpha_chained = &alpha_chained;
    }
    if (b->delta_rule_bwd(a, &buf)) goto out;
    /* the chain through alpha into dbeta and dk, unless the backward took it (alpha_chained:
     * dbeta and dk are final) */
    if (!alpha_chained) {
        if (device_chain) {
            if (b->delta_rule_alpha_bwd(efla_tensor_numel(beta), a->dk, q->dtype, efla_cpu_ptr(k), efla_cpu_ptr(beta),
                                        efla_cpu_ptr(sv[SL_LAMBDA]), efla_cpu_ptr(grad_alpha), c->order,
                                        c->reference_eps, efla_cpu_ptr(grad[IN_K]), efla_cpu_ptr(grad[IN_BETA])))
                goto out;
            /* gated: alpha' adds into dbeta, dk and the kernel's dlog_decay */
            if (log_decay &&
                b->delta_rule_alpha_v_bwd(efla_tensor_numel(beta), a->dk, q->dtype, efla_cpu_ptr(k), efla_cpu_ptr(beta),
                                          efla_cpu_ptr(sv[SL_LAMBDA]), efla_cpu_ptr(log_decay), efla_cpu_ptr(grad_alpha_v),
                                          c->order, efla_cpu_ptr(grad[IN_K]), efla_cpu_ptr(grad[IN_BETA]),
                                          efla_cpu_ptr(grad[IN_LOG_DECAY])))
                goto out;
        } else if (q->device != EFLA_DEVICE_CPU) {
            efla_no_kernel("delta_rule backward (alpha chain)", q->device);
            goto out;
        } else if (chain_alpha(c, k, beta, sv[SL_LAMBDA], grad_alpha, log_decay, grad_alpha_v, grad[IN_K],
                               grad[IN_LOG_DECAY], &grad[IN_BETA])) {
            goto out;
        }
    }
    for (int i = 0; i < IN_COUNT; i++)
        if (grad[i] && efla_node_needs_grad(node, i)) {
            gi[i] = grad[i];
            grad[i] = NULL;
        }
    rc = 0;
out:
    for (int i = 0; i < SL_COUNT; i++) efla_tensor_release(sv[i]);
    for (int i = 0; i < IN_COUNT; i++) efla_tensor_release(grad[i]);
    efla_tensor_release(grad_o); efla_tensor_release(grad_sf); efla_tensor_release(grad_alpha);
    efla_tensor_release(grad_alpha_v);
    return rc;
}

/* ---- the operator ------------------------------------------------------------------------------------- */
int efla_delta_rule_begin(const char *op, const efla_delta_rule_opts *opts, efla_delta_rule_opts *o,
                          efla_tensor **out, efla_tensor **final_state) {
    if (opts) *o = *opts; else efla_delta_rule_default_opts(o);
    if (!out) return efla_fail("%s: the out pointer is NULL", op);
    *out = NULL;
    if (final_state) *final_state = NULL;
    if (o->output_final_state && !final_state)
        return efla_fail("%s: output_final_state is set but the final_state pointer is NULL", op);
    return 0;
}

int efla_delta_rule(const efla_tensor *q, const efla_tensor *k, const efla_tensor *v,
                    const efla_tensor *beta, const efla_tensor *initial_state,
                    const efla_tensor *cu_seqlens, const efla_delta_rule_opts *opts,
                    efla_tensor **out, efla_tensor **final_state) {
    const char *op = "delta_rule";
    efla_delta_rule_opts o;
    if (efla_delta_rule_begin(op, opts, &o, out, final_state)) return -1;
    if (check_inputs(op, q, k, v, beta, initial_state, &o)) return -1;
    const int64_t B = q->shape[0], T = q->shape[1], H = q->shape[2], head_dim_k = q->shape[3],
                  head_dim_v = v->shape[3];
    seqs s = {0};
    if (read_seqs(op, cu_seqlens, B, T, &s)) return -1;
    if (initial_state && (initial_state->ndim != 4 || initial_state->shape[0] != s.N ||
                          initial_state->shape[1] != H || initial_state->shape[2] != head_dim_k ||
                          initial_state->shape[3] != head_dim_v)) {
        free(s.batch);
        return efla_fail("%s: initial_state %s must be [N,H,dk,dv] = [%lld,%lld,%lld,%lld] (N = %s)", op,
                         efla_tshape(initial_state), (long long)s.N, (long long)H, (long long)head_dim_k,
                         (long long)head_dim_v, cu_seqlens ? "number of sequences in cu_seqlens" : "B");
    }
    const efla_backend *b = efla_backend_for(op, q->device);
    if (!b) { free(s.batch); return -1; }
    if (!b->delta_rule_fwd) { free(s.batch); return efla_no_kernel(op, q->device); }

    efla_delta_rule_args a = {0};
    a.B = B; a.T = T; a.H = H; a.dk = head_dim_k; a.dv = head_dim_v; a.N = s.N;
    a.seq_batch = s.batch; a.seq_start = s.start; a.seq_len = s.len;
    a.scale = o.scale > 0 ? o.scale : (head_dim_k > 0 ? 1.0 / sqrt((double)head_dim_k) : 1.0);
    a.chunk_size = o.chunk_size ? o.chunk_size : 64;
    efla_tensor *in[IN_COUNT] = {(efla_tensor *)q, (efla_tensor *)k, (efla_tensor *)v, (efla_tensor *)beta,
                                 (efla_tensor *)initial_state, (efla_tensor *)o.log_decay};
    const int want_grad = efla_any_requires_grad(IN_COUNT, in);
    a.algorithm = o.algorithm != EFLA_ALGO_AUTO
                      ? o.algorithm
                      : choose_algorithm(s.max_len, head_dim_k, head_dim_v, q->device, want_grad);
    a.dtype = q->dtype;
    a.state_dtype = q->dtype == EFLA_BFLOAT16 ? EFLA_FLOAT32 : q->dtype;
    a.alpha_order = o.order;
    a.alpha_reference_eps = o.reference_eps != 0;
    /* the backend's plan, before anything is sized: its chunk size, the dtype its forward keeps
     * the chunk states in (CUDA's tensor cores: bfloat16), whether it makes alpha and keeps its
     * solves */
    efla_delta_rule_plan plan = efla_delta_rule_plan_defaults(&a);
    if (b->delta_rule_plan) b->delta_rule_plan(&a, o.log_decay != NULL, &plan);
    a.chunk_size = plan.chunk_size;
    const int save_cs = want_grad && !o.recompute_states;
    a.chunk_state_dtype = save_cs ? plan.chunk_state_dtype : a.state_dtype;
    efla_tensor *qc = efla_plain(q), *kc = efla_plain(k), *vc = efla_plain(v), *bc = efla_plain(beta);
    efla_tensor *sc = initial_state ? efla_plain(initial_state) : NULL;
    efla_tensor *gc = o.log_decay ? efla_plain(o.log_decay) : NULL;
    efla_tensor *lam = NULL, *alpha = NULL, *alpha_v = NULL, *o_t = NULL, *sf = NULL, *cs = NULL, *solves = NULL;
    int rc = -1;
    if (!qc || !kc || !vc || !bc || (initial_state && !sc) || (o.log_decay && !gc)) goto out;
    /* the forward may make alpha inside its kernel (CUDA's scan: a decoding step is one launch);
     * lambda and alpha then exist only where a backward needs them */
    const int kernel_alpha = !gc && head_dim_k > 0 && head_dim_v > 0 && plan.makes_alpha;
    if (kernel_alpha) {
        if (want_grad && (!(lam = efla_empty(3, q->shape, EFLA_FLOAT64, q->device)) ||
                          !(alpha = efla_empty(3, q->shape, q->dtype, q->device))))
            goto out;
    } else if (b->delta_rule_alpha_fwd) {
        if (!(lam = efla_empty(3, q->shape, EFLA_FLOAT64, q->device))) goto out;
        if (!(alpha = efla_empty(3, q->shape, q->dtype, q->device))) goto out;
        if (b->delta_rule_alpha_fwd(B * T * H, head_dim_k, q->dtype, efla_cpu_ptr(kc), efla_cpu_ptr(bc), o.order,
                                    o.reference_eps != 0, efla_cpu_ptr(alpha), efla_cpu_ptr(lam)))
            goto out;
    } else if (q->device != EFLA_DEVICE_CPU) {
        efla_no_kernel("delta_rule (alpha)", q->device);
        goto out;
    } else {
        if (!(lam = compute_lambda(kc))) goto out;
        if (!(alpha = compute_alpha(bc, lam, o.order, o.reference_eps, q->dtype))) goto out;
    }
    if (gc) {   /* the value step alpha' (a device: its delta_rule_alpha_v_fwd, check_log_decay made sure) */
        if (!(alpha_v = efla_empty(3, q->shape, q->dtype, q->device))) goto out;
        if (b->delta_rule_alpha_v_fwd) {
            if (b->delta_rule_alpha_v_fwd(B * T * H, q->dtype, efla_cpu_ptr(bc), efla_cpu_ptr(lam), efla_cpu_ptr(gc),
                                          o.order, efla_cpu_ptr(alpha_v)))
                goto out;
        } else if (q->device != EFLA_DEVICE_CPU) {
            efla_no_kernel("delta_rule (alpha')", q->device);
            goto out;
        } else {
            efla_alpha_v_fill(q->dtype, B * T * H, efla_tensor_data(bc), efla_tensor_data(lam), efla_tensor_data(gc),
                              o.order, efla_tensor_data(alpha_v));
        }
    }
    int64_t oshape[4] = {B, T, H, head_dim_v}, sshape[4] = {s.N, H, head_dim_k, head_dim_v};
    if (!(o_t = efla_empty(4, oshape, q->dtype, q->device))) goto out;
    if (o.output_final_state && !(sf = efla_empty(4, sshape, a.state_dtype, q->device))) goto out;
    if (save_cs) {
        int64_t nch = 0;
        for (int64_t n = 0; n < s.N; n++) nch += (s.len[n] + a.chunk_size - 1) / a.chunk_size;
        int64_t cshape[4] = {nch, H, head_dim_k, head_dim_v};
        if (!(cs = efla_empty(4, cshape, a.chunk_state_dtype, q->device))) goto out;
        /* the per-chunk solves too, where the backend keeps them (the backward then skips its
         * triangular solves; they are as large as k at C = 64) */
        if (plan.keeps_solves) {
            int64_t tshape[5] = {nch, H, 2, a.chunk_size, a.chunk_size};
            if (!(solves = efla_empty(5, tshape, q->dtype, q->device))) goto out;
        }
    }
    efla_delta_rule_buffers buf = {
        .q = efla_cpu_ptr(qc), .k = efla_cpu_ptr(kc), .v = efla_cpu_ptr(vc), .alpha = ptr_or_null(alpha),
        .alpha_v = ptr_or_null(alpha_v), .log_decay = ptr_or_null(gc), .s0 = ptr_or_null(sc),
        .o = efla_cpu_ptr(o_t), .s_final = ptr_or_null(sf), .chunk_states = ptr_or_null(cs),
        .chunk_solves = ptr_or_null(solves)};
    if (kernel_alpha) {
        buf.alpha = NULL;
        buf.beta = efla_cpu_ptr(bc);
        buf.alpha_out = ptr_or_null(alpha);
        buf.lambda_out = lam ? (double *)efla_cpu_ptr(lam) : NULL;
    }
    if (b->delta_rule_fwd(&a, &buf)) goto out;

    if (want_grad) {
        efla_tensor *outs[2] = {o_t, sf};
        efla_clear_error();
        efla_node *node = efla_node_record(op, dr_backward, IN_COUNT, in, sf ? 2 : 1, outs);
        if (!node) goto out;   /* want_grad guarantees a node unless recording failed */
        dr_ctx *c = calloc(1, sizeof *c);
        if (!c) { efla_fail("%s: out of memory", op); goto out; }
        c->args = a;
        c->seq = s.batch;
        s.batch = NULL;        /* the node owns the sequence table now */
        c->order = o.order;
        c->reference_eps = o.reference_eps != 0;
        efla_node_set_ctx(node, c, dr_ctx_free);
        efla_tensor *save[SL_COUNT] = {qc, kc, vc, alpha, bc, lam, sc, cs, alpha_v, gc, solves};
        for (int i = 0, n = 0; i < SL_COUNT; i++) {
            c->slot[i] = save[i] ? n++ : -1;
            if (save[i] && efla_node_save(node, save[i]) < 0) goto out;
        }
    }
    *out = o_t;
    o_t = NULL;
    if (final_state) { *final_state = sf; sf = NULL; }
    rc = 0;
out:
    free(s.batch);
    efla_tensor_release(qc); efla_tensor_release(kc); efla_tensor_release(vc); efla_tensor_release(bc);
    efla_tensor_release(sc); efla_tensor_release(lam); efla_tensor_release(alpha);
    efla_tensor_release(gc); efla_tensor_release(alpha_v);
    efla_tensor_release(o_t); efla_tensor_release(sf); efla_tensor_release(cs); efla_tensor_release(solves);
    return rc;
}

/* ---- one token ---------------------------------------------------------------------------------------- */
/* The sequence form with T = 1 and the recurrent kernel, so it matches a recurrent pass
 * over a sequence bit for bit; views carry the gradients. */
int efla_delta_rule_step(const efla_tensor *q, const efla_tensor *k, const efla_tensor *v,
                         const efla_tensor *beta, const efla_tensor *state,
                         const efla_delta_rule_opts *opts, efla_tensor **out, efla_tensor **new_state) {
    const char *op = "delta_rule_step";
    if (!out || !new_state) return efla_fail("%s: out and new_state must not be NULL", op);
    *out = NULL;
    *new_state = NULL;
    if (!q || !k || !v || !beta) return efla_fail("%s: q, k, v and beta must not be NULL", op);
    if (q->ndim != 3 || k->ndim != 3 || v->ndim != 3 || beta->ndim != 2)
        return efla_fail("%s: one token needs q, k [B,H,dk], v [B,H,dv], beta [B,H]; got q %s, k %s, "
                         "v %s, beta %s", op, efla_tshape(q), efla_tshape(k), efla_tshape(v),
                         efla_tshape(beta));
    if (state && state->ndim != 4)
        return efla_fail("%s: state %s must be [B,H,dk,dv]", op, efla_tshape(state));
    efla_delta_rule_opts o;
    if (opts) o = *opts; else efla_delta_rule_default_opts(&o);
    if (o.algorithm == EFLA_ALGO_AUTO) o.algorithm = EFLA_ALGO_RECURRENT;
    o.output_final_state = 1;
    efla_tensor *q4 = efla_unsqueeze(q, 1), *k4 = efla_unsqueeze(k, 1), *v4 = efla_unsqueeze(v, 1);
    efla_tensor *b3 = efla_unsqueeze(beta, 1), *o4 = NULL, *g3 = NULL;
    int rc = -1;
    if (o.log_decay) {   /* [B,H] -> [B,1,H] */
        if (o.log_decay->ndim != 2) {
            rc = efla_fail("%s: log_decay %s must be [B,H] (one log-decay per head for the token)", op,
                           efla_tshape(o.log_decay));
            goto done;
        }
        if (!(g3 = efla_unsqueeze(o.log_decay, 1))) goto done;
        o.log_decay = g3;
    }
    if (q4 && k4 && v4 && b3) {
        rc = efla_delta_rule(q4, k4, v4, b3, state, NULL, &o, &o4, new_state);
        if (rc) efla_error_prefix(op);
    }
    if (!rc) {
        *out = efla_squeeze(o4, 1);
        if (!*out) { rc = -1; efla_tensor_release(*new_state); *new_state = NULL; }
    }
done:
    efla_tensor_release(q4); efla_tensor_release(k4); efla_tensor_release(v4); efla_tensor_release(b3);
    efla_tensor_release(o4); efla_tensor_release(g3);
    return rc;
}

/* test_cuda.c: the CUDA-only checks. Op-by-op comparisons with the CPU are the rows of
 * test_backend_ops.c (every op x backend x dtype); what stays here: device properties,
 * semantics that are not comparisons (argmax ties, TF32 on/off, errors for bad targets and
 * indices, randperm), finite-difference gradient checks of the delta rule in float64 on the
 * device, the delta rule (forward, backward, chunk-state layout, the tensor-core chunk
 * kernels) against the CPU, the caching allocator's statistics, and an out-of-memory
 * allocation that fails cleanly and leaves the process usable. *
 * On a machine without a CUDA device (or a build without the backend) it prints
 * "skipped: no CUDA device" and "0 passed, 0 failed". */
#include "test_util.h"
#include "backend.h"
#include <stdint.h>
#include <string.h>

#define CPU EFLA_DEVICE_CPU
#define GPU EFLA_DEVICE_CUDA0

/* ---- helpers ---------------------------------------------------------------------------------- */
/* Random CPU tensor: floats N(0,1) * scale; integers in a small range. */
static efla_tensor *rnd(int nd, const int64_t *shape, efla_dtype dt, double scale) {
    if (efla_dtype_is_floating(dt)) {
        efla_tensor *t = MUST(efla_randn(nd, shape, EFLA_FLOAT64, CPU));
        if (scale != 1) {
            efla_tensor *s = MUST(efla_binary_scalar(EFLA_MUL, t, scale, 0));
            efla_tensor_release(t);
            t = s;
        }
        efla_tensor *c = MUST(efla_to(t, dt, CPU));
        efla_tensor_release(t);
        return c;
    }
    int64_t lo = dt == EFLA_INT64 ? -6 : 0, hi = dt == EFLA_BOOL ? 2 : 7;
    efla_tensor *t = MUST(efla_randint(lo, hi, nd, shape, CPU));
    efla_tensor *c = MUST(efla_to(t, dt, CPU));
    efla_tensor_release(t);
    return c;
}

static efla_tensor *gpu(const efla_tensor *t) { return MUST(efla_to(t, efla_tensor_dtype(t), GPU)); }

/* A random tensor made on the CPU and moved to the GPU. */
static efla_tensor *grnd(int nd, const int64_t *shape, efla_dtype dt, double scale) {
    efla_tensor *c = rnd(nd, shape, dt, scale), *g = gpu(c);
    efla_tensor_release(c);
    return g;
}

/* Raw device address of a tensor's first element (for calling the backend table). */
static void *dptr(const efla_tensor *t) {
    return (char *)t->storage->data + t->offset * (int64_t)efla_dtype_size(t->dtype);
}

static int same_shape(const efla_tensor *a, const efla_tensor *b) {
    if (efla_tensor_ndim(a) != efla_tensor_ndim(b)) return 0;
    for (int d = 0; d < efla_tensor_ndim(a); d++)
        if (efla_tensor_size(a, d) != efla_tensor_size(b, d)) return 0;
    return 1;
}

/* ||a - b|| / ||b|| over all elements (bfloat16 results: a one-ulp flip in an intermediate
 * can move single elements by more than the tolerance, the whole tensor not). */
static double norm_rel_diff(const efla_tensor *a, const efla_tensor *b) {
    efla_tensor *da = MUST(efla_to(a, EFLA_FLOAT64, CPU)), *db = MUST(efla_to(b, EFLA_FLOAT64, CPU));
    efla_tensor *ca = MUST(efla_contiguous(da)), *cb = MUST(efla_contiguous(db));
    const double *pa = efla_tensor_data(ca), *pb = efla_tensor_data(cb);
    double num = 0, den = 0;
    for (int64_t i = 0; i < efla_tensor_numel(a); i++) {
        num += (pa[i] - pb[i]) * (pa[i] - pb[i]);
        den += pb[i] * pb[i];
    }
    efla_tensor_release(da); efla_tensor_release(db); efla_tensor_release(ca); efla_tensor_release(cb);
    return isnan(num) ? INFINITY : sqrt(num) / fmax(sqrt(den), 1e-30);
}

/* got (on the GPU) against ref (on the CPU); consumes both. Tolerances of 1e-2 and above
 * (bfloat16) compare norms, and allow single elements 10x the tolerance. */
static void expect_close(const char *what, efla_tensor *got, efla_tensor *ref, double tol) {
    if (!got || !ref) {
        CHECK(0, "%s: an op failed (gpu %p, cpu %p)", what, (void *)got, (void *)ref);
    } else {
        CHECK(efla_tensor_device(got) == GPU, "%s: result on device %d", what, efla_tensor_device(got));
        CHECK(efla_tensor_dtype(got) == efla_tensor_dtype(ref), "%s: dtype %s vs %s", what,
              efla_dtype_name(efla_tensor_dtype(got)), efla_dtype_name(efla_tensor_dtype(ref)));
        if (!same_shape(got, ref)) {
            CHECK(0, "%s: shapes differ", what);
        } else if (tol >= 1e-2) {
            double n = norm_rel_diff(got, ref), d = max_rel_diff(got, ref);
            CHECK(n <= tol && d <= 10 * tol, "%s: norm rel diff %.3g (tol %.3g), max rel diff %.3g", what, n, tol, d);
        } else {
            double d = max_rel_diff(got, ref);
            CHECK(d <= tol, "%s: max rel diff %.3g > %.3g", what, d, tol);
        }
    }
    efla_tensor_release(got);
    efla_tensor_release(ref);
}

/* got against ref by the norm of the difference alone, ||got - ref|| / ||ref|| <= tol: for
 * long float32 reductions and recurrences (the delta rule over hundreds of tokens, TF32
 * products), where summation order moves single small elements by more than 1e-5 of the
 * tensor's scale but not the tensor as a whole. Consumes both. */
static void expect_close_norm(const char *what, efla_tensor *got, efla_tensor *ref, double tol) {
    if (!got || !ref || !same_shape(got, ref)) {
        CHECK(0, "%s: an op failed or shapes differ", what);
    } else {
        double n = norm_rel_diff(got, ref);
        CHECK(n <= tol, "%s: norm rel diff %.3g > %.3g", what, n, tol);
    }
    efla_tensor_release(got);
    efla_tensor_release(ref);
}

static efla_tensor *sum_all(const efla_tensor *t) { return efla_reduce(EFLA_SUM, t, 0, NULL, 0, 0); }

/* loss = sum(t * w): a scalar whose gradient w.r.t. t is w */
static efla_tensor *weighted_sum(const efla_tensor *t, const efla_tensor *w) {
    efla_tensor *p = efla_binary(EFLA_MUL, t, w);
    if (!p) return NULL;
    efla_tensor *s = sum_all(p);
    efla_tensor_release(p);
    return s;
}

static efla_tensor *leaf(const efla_tensor *t) {
    efla_tensor *c = MUST(efla_clone(t));
    MUST_OK(efla_set_requires_grad(c, 1));
    return c;
}

/* ---- gradient checks in float64 on the device ------------------------------------------------------------- */
typedef efla_tensor *(*loss_fn)(const efla_tensor *x, void *ctx);

/* Analytic gradient (autograd on the device) against central differences of `fn` at up to
 * `nprobe` elements of x (a float64 device tensor). */
static void gradcheck(const char *what, loss_fn fn, void *ctx, const efla_tensor *x, int nprobe) {
    efla_tensor *xl = leaf(x);
    efla_tensor *loss = fn(xl, ctx);
    if (!loss || efla_backward(loss, NULL, 0)) {
        CHECK(0, "%s: forward/backward failed", what);
        efla_tensor_release(loss); efla_tensor_release(xl);
        return;
    }
    efla_tensor *g = efla_grad(xl);
    efla_tensor *gc = g ? MUST(efla_to(g, EFLA_FLOAT64, CPU)) : NULL;
    int nd = efla_tensor_ndim(x);
    int64_t n = efla_tensor_numel(x), step = n / nprobe > 0 ? n / nprobe : 1;
    double worst = 0;
    const double h = 1e-6;
    for (int64_t e = 0; gc && e < n; e += step) {
        int64_t idx[EFLA_MAX_DIMS], r = e;
        for (int d = nd - 1; d >= 0; d--) { idx[d] = r % efla_tensor_size(x, d); r /= efla_tensor_size(x, d); }
        double x0, fp, fm, ana;
        efla_tensor *xp = MUST(efla_clone(x));
        MUST_OK(efla_get(xp, idx, &x0));
        MUST_OK(efla_set(xp, idx, x0 + h));
        efla_tensor *lp = MUST(fn(xp, ctx));
        MUST_OK(efla_item(lp, &fp));
        MUST_OK(efla_set(xp, idx, x0 - h));
        efla_tensor *lm = MUST(fn(xp, ctx));
        MUST_OK(efla_item(lm, &fm));
        MUST_OK(efla_get(gc, idx, &ana));
        double num = (fp - fm) / (2 * h), err = fabs(num - ana) / fmax(1.0, fabs(num));
        if (!(err <= worst)) worst = err;
        efla_tensor_release(xp); efla_tensor_release(lp); efla_tensor_release(lm);
    }
    CHECK(gc && worst < 1e-6, "%s: gradient vs central differences, worst %.3g", what, worst);
    efla_tensor_release(g); efla_tensor_release(gc); efla_tensor_release(loss); efla_tensor_release(xl);
}

/* delta rule: x is one of q, k, v, beta (slot), the others fixed */
typedef struct { efla_tensor *in[5], *w; int slot; int order; } dr_gc_ctx;
static efla_tensor *l_delta(const efla_tensor *x, void *cv) {
    dr_gc_ctx *c = cv;
    const efla_tensor *in[5];
    for (int i = 0; i < 5; i++) in[i] = i == c->slot ? x : c->in[i];
    efla_delta_rule_opts o;
    efla_delta_rule_default_opts(&o);
    o.order = c->order;
    o.chunk_size = 16;
    efla_tensor *out = NULL;
    if (efla_delta_rule(in[0], in[1], in[2], in[3], in[4], NULL, &o, &out, NULL)) return NULL;
    efla_tensor *l = weighted_sum(out, c->w);
    efla_tensor_release(out);
    return l;
}

static void test_delta_rule_gradcheck(void) {
    /* the delta rule in float64 on the device: q, k, v, beta; EFLA and Euler orders */
    int64_t sq[4] = { 2, 19, 2, 5 }, sv[4] = { 2, 19, 2, 7 }, sb[3] = { 2, 19, 2 };
    for (int order = 0; order <= 1; order++) {
        dr_gc_ctx d = { { 0 }, NULL, 0, order == 0 ? EFLA_ORDER_EXACT : 1 };
        d.in[0] = grnd(4, sq, EFLA_FLOAT64, 1);
        d.in[1] = grnd(4, sq, EFLA_FLOAT64, 0.4);
        d.in[2] = grnd(4, sv, EFLA_FLOAT64, 1);
        d.in[3] = MUST(efla_rand(3, sb, EFLA_FLOAT64, GPU));
        d.w = grnd(4, sv, EFLA_FLOAT64, 1);
        const char *names[4] = { "q", "k", "v", "beta" };
        for (int slot = 0; slot < 4; slot++) {
            char what[96];
            snprintf(what, sizeof what, "gradcheck delta_rule d/d%s order %d (cuda, float64)", names[slot], d.order);
            d.slot = slot;
            gradcheck(what, l_delta, &d, d.in[slot], 30);
        }
        for (int i = 0; i < 4; i++) efla_tensor_release(d.in[i]);
        efla_tensor_release(d.w);
    }
}

/* ---- the delta rule against the CPU --------------------------------------------------------------------------- */
/* Runs the operator on one device with autograd and returns o, the final state and the
 * gradients of sum(o*wo) + sum(S*ws) w.r.t. q, k, v, beta and the initial state. */
typedef struct { efla_tensor *o, *sf, *g[5]; } dr_result;

static dr_result dr_run(efla_tensor *const *in_cpu, const efla_tensor *cu_cpu, efla_tensor *wo_cpu, efla_tensor *ws_cpu,
                        int device, efla_dtype dt, const efla_delta_rule_opts *opts) {
    dr_result r = { 0 };
    efla_tensor *in[5] = { 0 }, *cu = NULL;
    for (int i = 0; i < 5; i++)
        if (in_cpu[i]) {
            efla_tensor *t = MUST(efla_to(in_cpu[i], i == 4 && dt == EFLA_BFLOAT16 ? EFLA_FLOAT32 : dt, device));
            in[i] = leaf(t);
            efla_tensor_release(t);
        }
    if (cu_cpu) cu = MUST(efla_to(cu_cpu, EFLA_INT64, device));
    efla_tensor *wo = MUST(efla_to(wo_cpu, dt, device));
    efla_tensor *ws = MUST(efla_to(ws_cpu, dt == EFLA_BFLOAT16 ? EFLA_FLOAT32 : dt, device));
    efla_delta_rule_opts o = *opts;
    o.output_final_state = 1;
    if (efla_delta_rule(in[0], in[1], in[2], in[3], in[4], cu, &o, &r.o, &r.sf)) {
        CHECK(0, "delta_rule on %s failed", efla_device_name(device));
    } else {
        efla_tensor *l1 = weighted_sum(r.o, wo), *l2 = weighted_sum(r.sf, ws);
        efla_tensor *l2c = l2 ? efla_to(l2, efla_tensor_dtype(l1), device) : NULL;
        efla_tensor *l = l1 && l2c ? efla_binary(EFLA_ADD, l1, l2c) : NULL;
        if (!l || efla_backward(l, NULL, 0)) CHECK(0, "delta_rule backward on device %d failed", device);
        else for (int i = 0; i < 5; i++) r.g[i] = in[i] ? efla_grad(in[i]) : NULL;
        efla_tensor_release(l1); efla_tensor_release(l2); efla_tensor_release(l2c); efla_tensor_release(l);
    }
    for (int i = 0; i < 5; i++) efla_tensor_release(in[i]);
    efla_tensor_release(cu); efla_tensor_release(wo); efla_tensor_release(ws);
    return r;
}

/* t rounded to dt's precision, kept in t's dtype (t released) */
static efla_tensor *rounded(efla_tensor *t, efla_dtype dt) {
    efla_tensor *r = MUST(efla_to(t, dt, CPU)), *back = MUST(efla_to(r, efla_tensor_dtype(t), CPU));
    efla_tensor_release(r);
    efla_tensor_release(t);
    return back;
}

/* the delta rule on the GPU (gpu_algorithm: the tensor-core chunks or their scan fallback for
 * EFLA_ALGO_CHUNKED; the scan, which makes alpha in its kernel, for EFLA_ALGO_RECURRENT) against
 * the CPU's plain recurrence: output, final state and every gradient */
static void dr_compare_on(const char *label, int B, int T, int H, int dk, int dv, int packed, efla_dtype dt, int order,
                          int chunk, int recompute, int gpu_algorithm) {
    int64_t sq[4] = { B, T, H, dk }, sv[4] = { B, T, H, dv }, sb[3] = { B, T, H };
    int64_t cuv[4] = { 0, 13, 41, T };
    int64_t ncu = 4, N = packed ? 3 : B;
    int64_t ss[4] = { N, H, dk, dv };
    efla_tensor *in[5];
    /* inputs on the CPU in the test dtype's precision (so both devices see the same values); the
     * CPU reference computes in cdt: float32 for bfloat16 inputs, and float64 for float32 ones
     * (the float32 target is 1e-5 of the float64 recurrence: a float32 CPU recurrence has errors
     * of that size of its own at large keys) */
    efla_dtype cdt = dt == EFLA_BFLOAT16 ? EFLA_FLOAT32 : dt == EFLA_FLOAT32 ? EFLA_FLOAT64 : dt;
    efla_dtype sdt = dt == EFLA_BFLOAT16 ? EFLA_FLOAT32 : dt;   /* the state's dtype on the device */
    /* bfloat16 and the truncated orders: |k|^2 about 1, where every order is stable (orders 1, 2
     * and 4 diverge once beta |k|^2 > 2, and the two sides then compare exploding values summed
     * in different orders); EFLA (exact) is stable at any |k|, so it gets large keys */
    const double kscale = dt == EFLA_BFLOAT16 || order != EFLA_ORDER_EXACT ? 1.0 / sqrt((double)dk) : 0.5;
    efla_tensor *raw[5] = { rnd(4, sq, EFLA_FLOAT64, 1), rnd(4, sq, EFLA_FLOAT64, kscale), rnd(4, sv, EFLA_FLOAT64, 1),
                            MUST(efla_rand(3, sb, EFLA_FLOAT64, CPU)), rnd(4, ss, EFLA_FLOAT64, 0.3) };
    for (int i = 0; i < 5; i++) {
        efla_tensor *r = MUST(efla_to(raw[i], i == 4 ? sdt : dt, CPU));
        in[i] = MUST(efla_to(r, cdt, CPU));
        efla_tensor_release(r);
        efla_tensor_release(raw[i]);
    }
    efla_tensor *cu = packed ? MUST(efla_from_buffer(1, &ncu, EFLA_INT64, cuv, sizeof cuv)) : NULL;
    efla_tensor *wo = rounded(rnd(4, sv, cdt, 1), dt), *ws = rounded(rnd(4, ss, cdt, 1), sdt);
    efla_delta_rule_opts o;
    efla_delta_rule_default_opts(&o);
    o.order = order;
    o.chunk_size = chunk;
    o.algorithm = EFLA_ALGO_RECURRENT;   /* the CPU reference: the plain recurrence */
    dr_result rc = dr_run(in, cu, wo, ws, CPU, cdt, &o);
    o.algorithm = gpu_algorithm;
    o.recompute_states = recompute;
    dr_result rg = dr_run(in, cu, wo, ws, GPU, dt, &o);
    double tol = dt == EFLA_FLOAT64 ? 1e-10 : dt == EFLA_FLOAT32 ? 1e-5 : 1e-2;
    /* float32 and bfloat16: relative error by norm (docs/MATH.md §5), see expect_close_norm */
    void (*cmp)(const char *, efla_tensor *, efla_tensor *, double) =
        dt == EFLA_FLOAT64 ? expect_close : expect_close_norm;
    char what[160];
    const char *gn[5] = { "dq", "dk", "dv", "dbeta", "ds0" };
    snprintf(what, sizeof what, "delta_rule %s %s o", label, efla_dtype_name(dt));
    cmp(what, rg.o ? MUST(efla_to(rg.o, cdt, GPU)) : NULL, rc.o, tol);
    snprintf(what, sizeof what, "delta_rule %s %s final state", label, efla_dtype_name(dt));
    cmp(what, rg.sf, rc.sf, tol);
    for (int i = 0; i < 5; i++) {
        snprintf(what, sizeof what, "delta_rule %s %s %s", label, efla_dtype_name(dt), gn[i]);
        cmp(what, rg.g[i] ? MUST(efla_to(rg.g[i], cdt, GPU)) : NULL, rc.g[i], tol);
        efla_tensor_release(rg.g[i]);
    }
    efla_tensor_release(rg.o);
    for (int i = 0; i < 5; i++) efla_tensor_release(in[i]);
    efla_tensor_release(cu); efla_tensor_release(wo); efla_tensor_release(ws);
}

static void dr_compare(const char *label, int B, int T, int H, int dk, int dv, int packed, efla_dtype dt, int order,
                       int chunk, int recompute) {
    dr_compare_on(label, B, T, H, dk, dv, packed, dt, order, chunk, recompute, EFLA_ALGO_CHUNKED);
}

/* Decoding on the GPU: delta_rule_step token by token (one launch each: the scan makes alpha)
 * gives the recurrent sequence form's outputs and final state bit for bit. */
static void dr_step_gpu(efla_dtype dt) {
    const int64_t B = 2, T = 6, H = 3, dk = 32, dv = 40;
    int64_t sq[4] = { B, T, H, dk }, sv[4] = { B, T, H, dv }, sb[3] = { B, T, H }, ss[4] = { B, H, dk, dv };
    efla_dtype sdt = dt == EFLA_BFLOAT16 ? EFLA_FLOAT32 : dt;
    efla_tensor *q = grnd(4, sq, dt, 1), *k = grnd(4, sq, dt, 0.3), *v = grnd(4, sv, dt, 1), *s0 = grnd(4, ss, sdt, 0.3);
    efla_tensor *bc = MUST(efla_rand(3, sb, dt == EFLA_BFLOAT16 ? EFLA_FLOAT32 : dt, CPU));
    efla_tensor *beta = MUST(efla_to(bc, dt, GPU));
    efla_tensor_release(bc);
    efla_delta_rule_opts o;
    efla_delta_rule_default_opts(&o);
    o.algorithm = EFLA_ALGO_RECURRENT;
    o.output_final_state = 1;
    efla_tensor *o_seq = NULL, *sf_seq = NULL;
    MUST_OK(efla_delta_rule(q, k, v, beta, s0, NULL, &o, &o_seq, &sf_seq));
    efla_tensor *state = MUST(efla_clone(s0));
    for (int64_t t = 0; t < T; t++) {
        efla_tensor *qt = MUST(efla_select(q, 1, t)), *kt = MUST(efla_select(k, 1, t)), *vt = MUST(efla_select(v, 1, t));
        efla_tensor *bt = MUST(efla_select(beta, 1, t)), *out = NULL, *next = NULL;
        MUST_OK(efla_delta_rule_step(qt, kt, vt, bt, state, NULL, &out, &next));
        char what[96];
        snprintf(what, sizeof what, "delta_rule_step %s on the GPU, token %lld = the sequence form", efla_dtype_name(dt),
                 (long long)t);
        expect_close(what, out, MUST(efla_select(o_seq, 1, t)), 0);
        efla_tensor_release(state);
        state = next;
        efla_tensor_release(qt); efla_tensor_release(kt); efla_tensor_release(vt); efla_tensor_release(bt);
    }
    expect_close("delta_rule_step on the GPU: the state after the last token = the sequence's final state", state,
                 sf_seq, 0);
    efla_tensor_release(o_seq);
    efla_tensor_release(q); efla_tensor_release(k); efla_tensor_release(v); efla_tensor_release(beta);
    efla_tensor_release(s0);
}

/* The chunk states written by the CUDA forward equal the CPU's (same layout), through the
 * backend tables directly. */
static void dr_chunk_states(void) {
    const int64_t B = 2, T = 45, H = 3, dk = 20, dv = 36, C = 16;
    int64_t sq[4] = { B, T, H, dk }, sv[4] = { B, T, H, dv }, sb[3] = { B, T, H };
    int64_t nch = B * ((T + C - 1) / C), scs[4] = { nch, H, dk, dv }, ss[4] = { B, H, dk, dv }, so[4] = { B, T, H, dv };
    efla_tensor *q = rnd(4, sq, EFLA_FLOAT32, 1), *k = rnd(4, sq, EFLA_FLOAT32, 0.5), *v = rnd(4, sv, EFLA_FLOAT32, 1);
    efla_tensor *al = MUST(efla_rand(3, sb, EFLA_FLOAT32, CPU)), *s0 = rnd(4, ss, EFLA_FLOAT32, 0.3);
    efla_tensor *gq = gpu(q), *gk = gpu(k), *gv = gpu(v), *gal = gpu(al), *gs0 = gpu(s0);
    efla_tensor *oc = MUST(efla_empty(4, so, EFLA_FLOAT32, CPU)), *og = MUST(efla_empty(4, so, EFLA_FLOAT32, GPU));
    efla_tensor *csc = MUST(efla_zeros(4, scs, EFLA_FLOAT32, CPU)), *csg = MUST(efla_zeros(4, scs, EFLA_FLOAT32, GPU));
    int64_t batch[2] = { 0, 1 }, start[2] = { 0, 0 }, len[2] = { T, T };
    efla_delta_rule_args a = { B, T, H, dk, dv, B, batch, start, len, 0.5, (int)C, EFLA_ALGO_CHUNKED, EFLA_FLOAT32, EFLA_FLOAT32 };
    const efla_backend *bc = efla_backend_for("test", CPU), *bg = efla_backend_for("test", GPU);
    efla_delta_rule_buffers cpu_buf = {.q = efla_tensor_data(q), .k = efla_tensor_data(k), .v = efla_tensor_data(v),
                                       .alpha = efla_tensor_data(al), .s0 = efla_tensor_data(s0),
                                       .o = efla_tensor_data(oc), .chunk_states = efla_tensor_data(csc)};
    efla_delta_rule_buffers gpu_buf = {.q = dptr(gq), .k = dptr(gk), .v = dptr(gv), .alpha = dptr(gal), .s0 = dptr(gs0),
                                       .o = dptr(og), .chunk_states = dptr(csg)};
    MUST_OK(bc->delta_rule_fwd(&a, &cpu_buf));
    MUST_OK(bg->delta_rule_fwd(&a, &gpu_buf));
    expect_close_norm("delta_rule chunk states: same layout and values as the cpu", csg, csc, 1e-5);
    expect_close_norm("delta_rule forward through the table", og, oc, 1e-5);
    efla_tensor_release(q); efla_tensor_release(k); efla_tensor_release(v); efla_tensor_release(al); efla_tensor_release(s0);
    efla_tensor_release(gq); efla_tensor_release(gk); efla_tensor_release(gv); efla_tensor_release(gal); efla_tensor_release(gs0);
}

/* a backend's delta-rule plan of a (gated or not), from the front end's defaults */
static efla_delta_rule_plan plan_of(const efla_backend *b, const efla_delta_rule_args *a, int gated) {
    efla_delta_rule_plan pl = efla_delta_rule_plan_defaults(a);
    b->delta_rule_plan(a, gated, &pl);
    return pl;
}

/* The delta rule's plan, and the chunk states' dtype. The backend says bfloat16 where the
 * tensor-core path takes the forward (it rounds the states to bfloat16 wherever it reads them)
 * and the state dtype elsewhere; the bfloat16 states it writes are the cpu's float32 ones rounded; the scan kernels
 * refuse bfloat16 states in a forward and recompute them in a backward (a call whose backward
 * does not fit the tensor-core kernels), so NaN there never reaches a gradient. */
static void dr_chunk_state_dtype(void) {
    const int64_t B = 1, T = 100, H = 2, d = 64, C = 64, nch = (T + C - 1) / C;
    int64_t sq[4] = { B, T, H, d }, sb[3] = { B, T, H }, scs[4] = { nch, H, d, d };
    int64_t batch[1] = { 0 }, start[1] = { 0 }, len[1] = { T };
    efla_delta_rule_args a = { B, T, H, d, d, B, batch, start, len, 0.125, (int)C, EFLA_ALGO_CHUNKED, EFLA_BFLOAT16,
                               EFLA_FLOAT32 };
    const efla_backend *bc = efla_backend_for("test", CPU), *bg = efla_backend_for("test", GPU);
    CHECK(bc->delta_rule_plan == NULL, "the cpu has no plan: the chunk size asked, state-dtype chunk states");
    CHECK(bg->delta_rule_plan != NULL, "the gpu has a delta-rule plan");
    efla_delta_rule_plan pl = plan_of(bg, &a, 0);
    CHECK(pl.chunk_state_dtype == EFLA_BFLOAT16 && pl.chunk_size == 64 && pl.makes_alpha && pl.keeps_solves,
          "bfloat16, C = 64, d = 64: the tensor-core path (bfloat16 chunk states, chunk 64 as asked, alpha made "
          "in the forward, solves kept), got %s, %d, %d, %d",
          efla_dtype_name(pl.chunk_state_dtype), pl.chunk_size, pl.makes_alpha, pl.keeps_solves);
    pl = plan_of(bg, &a, 1);
    CHECK(pl.chunk_state_dtype == EFLA_FLOAT32 && !pl.makes_alpha && !pl.keeps_solves && pl.chunk_size == 64,
          "gated (the scan): float32 chunk states, a given alpha, no solves");
    efla_delta_rule_args a128 = a, af = a;
    a128.chunk_size = 128;
    af.dtype = EFLA_FLOAT32;
    pl = plan_of(bg, &a128, 0);
    CHECK(pl.chunk_state_dtype == EFLA_FLOAT32 && !pl.keeps_solves && pl.makes_alpha,
          "chunk 128 (the scan): float32 chunk states, no solves, alpha made in the scan");
    /* the chunk size a call runs with: the one asked for, but float32 tensor-core calls at most 32
     * (float tiles: the backward's per-chunk kernel runs one block per multiprocessor at C = 64
     * and d = 64, none at d = 128) */
    pl = plan_of(bg, &af, 0);
    CHECK(pl.chunk_state_dtype == EFLA_FLOAT32 && pl.chunk_size == 32 && pl.keeps_solves,
          "float32 d = 64 asked for chunk 64: float32 chunk states, runs with 32, solves kept, got %d", pl.chunk_size);
    efla_delta_rule_args af16 = af;
    af16.chunk_size = 16;
    CHECK(plan_of(bg, &af16, 0).chunk_size == 16, "float32 d = 64 asked for chunk 16: 16 as asked");
    efla_delta_rule_args af128 = af;
    af128.dk = af128.dv = 128;
    pl = plan_of(bg, &af128, 0);
    CHECK(pl.chunk_size == 32 && pl.keeps_solves, "float32 d = 128 asked for chunk 64: runs with 32 (solves kept), got %d",
          pl.chunk_size);
    CHECK(plan_of(bg, &af128, 1).chunk_size == 64, "float32 d = 128 gated (the scan): chunk 64 as asked");

    /* the same values on both sides: float32 on the cpu, bfloat16 on the gpu */
    efla_tensor *x[5], *g[5];
    for (int i = 0; i < 5; i++) {
        efla_tensor *r = i == 3 ? MUST(efla_rand(3, sb, EFLA_FLOAT32, CPU)) : rnd(4, sq, EFLA_FLOAT32, i == 1 ? 0.125 : 1);
        efla_tensor *h = MUST(efla_to(r, EFLA_BFLOAT16, CPU));
        x[i] = MUST(efla_to(h, EFLA_FLOAT32, CPU));
        g[i] = MUST(efla_to(h, EFLA_BFLOAT16, GPU));
        efla_tensor_release(r); efla_tensor_release(h);
    }   /* q, k, v, alpha, dO */
    efla_tensor *oc = MUST(efla_empty(4, sq, EFLA_FLOAT32, CPU)), *og = MUST(efla_empty(4, sq, EFLA_BFLOAT16, GPU));
    efla_tensor *csc = MUST(efla_empty(4, scs, EFLA_FLOAT32, CPU)), *csg = MUST(efla_empty(4, scs, EFLA_BFLOAT16, GPU));
    efla_delta_rule_args acpu = af;
    acpu.chunk_state_dtype = EFLA_FLOAT32;
    a.chunk_state_dtype = EFLA_BFLOAT16;
    efla_delta_rule_buffers cb = {.q = efla_tensor_data(x[0]), .k = efla_tensor_data(x[1]), .v = efla_tensor_data(x[2]),
                                  .alpha = efla_tensor_data(x[3]), .o = efla_tensor_data(oc),
                                  .chunk_states = efla_tensor_data(csc)};
    efla_delta_rule_buffers gb = {.q = dptr(g[0]), .k = dptr(g[1]), .v = dptr(g[2]), .alpha = dptr(g[3]), .o = dptr(og),
                                  .chunk_states = dptr(csg)};
    MUST_OK(bc->delta_rule_fwd(&acpu, &cb));
    MUST_OK(bg->delta_rule_fwd(&a, &gb));
    efla_tensor_retain(csg);
    expect_close_norm("bfloat16 chunk states of the tensor-core path = the cpu's float32 states (rounded)", csg, csc,
                      1e-2);

    /* chunk 128 takes the scan kernels: bfloat16 states are refused in the forward ... */
    a128.chunk_state_dtype = EFLA_BFLOAT16;
    efla_clear_error();
    CHECK_ERROR(bg->delta_rule_fwd(&a128, &gb) < 0, "allocated as bfloat16");
    /* ... and recomputed in the backward: NaN states change nothing */
    efla_tensor *nan_states = MUST(efla_full(4, scs, NAN, EFLA_BFLOAT16, GPU)), *grads[2][4];
    for (int run = 0; run < 2; run++) {
        for (int i = 0; i < 4; i++) grads[run][i] = MUST(efla_empty(i == 3 ? 3 : 4, i == 3 ? sb : sq, EFLA_BFLOAT16, GPU));
        efla_delta_rule_buffers bb = {.q = dptr(g[0]), .k = dptr(g[1]), .v = dptr(g[2]), .alpha = dptr(g[3]),
                                      .d_o = dptr(g[4]), .chunk_states = run ? dptr(nan_states) : NULL,
                                      .dq = dptr(grads[run][0]), .dk = dptr(grads[run][1]), .dv = dptr(grads[run][2]),
                                      .dalpha = dptr(grads[run][3])};
        MUST_OK(bg->delta_rule_bwd(&a128, &bb));
    }
    const char *gn[4] = { "dq", "dk", "dv", "dalpha" };
    for (int i = 0; i < 4; i++) {
        char what[120];
        snprintf(what, sizeof what, "scan backward given bfloat16 states recomputes them: %s as without states", gn[i]);
        expect_close_norm(what, grads[1][i], grads[0][i], 1e-3);
    }
    efla_tensor_release(nan_states); efla_tensor_release(csg); efla_tensor_release(og); efla_tensor_release(oc);
    for (int i = 0; i < 5; i++) { efla_tensor_release(x[i]); efla_tensor_release(g[i]); }
}

/* Gated calls (log_decay, docs/MATH.md §6) run on CUDA (cuda/delta_rule_gated.cu) and equal the cpu;
 * tests/lua/test_gated_delta_rule_cuda.lua checks them in depth (gradients, dtypes, shapes). An order
 * with no gated form is still a clear error that leaves no output. */
static void dr_gated_cuda(void) {
    int64_t sq[4] = { 1, 5, 2, 4 }, sb[3] = { 1, 5, 2 };
    efla_tensor *q = rnd(4, sq, EFLA_FLOAT32, 1), *k = rnd(4, sq, EFLA_FLOAT32, 0.5), *v = rnd(4, sq, EFLA_FLOAT32, 1);
    efla_tensor *beta = MUST(efla_rand(3, sb, EFLA_FLOAT32, CPU)), *g = MUST(efla_rand(3, sb, EFLA_FLOAT32, CPU));
    efla_tensor *gneg = MUST(efla_binary_scalar(EFLA_MUL, g, -0.5, 0));   /* log-decay in (-0.5, 0] */
    efla_tensor *gq = gpu(q), *gk = gpu(k), *gv = gpu(v), *gb = gpu(beta), *gg = gpu(gneg), *out = NULL, *gout = NULL;
    efla_delta_rule_opts o;
    efla_delta_rule_default_opts(&o);
    o.log_decay = gg;
    MUST_OK(efla_delta_rule(gq, gk, gv, gb, NULL, NULL, &o, &gout, NULL));
    o.log_decay = gneg;
    MUST_OK(efla_delta_rule(q, k, v, beta, NULL, NULL, &o, &out, NULL));
    expect_close_norm("gated delta_rule on cuda equals the cpu", gout, out, 1e-5);   /* consumes both */
    gout = out = NULL;
    o.log_decay = gg;
    o.order = 2;
    CHECK_ERROR(efla_delta_rule(gq, gk, gv, gb, NULL, NULL, &o, &gout, NULL) < 0, "not order 2");
    CHECK(gout == NULL, "a refused gated call leaves no output");
    efla_tensor_release(g); efla_tensor_release(gneg);
    efla_tensor_release(q); efla_tensor_release(k); efla_tensor_release(v); efla_tensor_release(beta);
    efla_tensor_release(gq); efla_tensor_release(gk); efla_tensor_release(gv); efla_tensor_release(gb); efla_tensor_release(gg);
}

static void test_delta_rule(void) {
    /* dv = 40 spans two column tiles (one partial), T not a multiple of the chunk */
    dr_compare("B=2 T=70 H=2 dk=24 dv=40", 2, 70, 2, 24, 40, 0, EFLA_FLOAT32, EFLA_ORDER_EXACT, 32, 0);
    dr_compare("B=2 T=70 H=2 dk=24 dv=40", 2, 70, 2, 24, 40, 0, EFLA_FLOAT64, EFLA_ORDER_EXACT, 32, 0);
    dr_compare("packed cu_seqlens order 2, recomputed states", 1, 64, 3, 16, 16, 1, EFLA_FLOAT32, 2, 16, 1);
    dr_compare("packed cu_seqlens order 1 (DeltaNet)", 1, 64, 3, 16, 16, 1, EFLA_FLOAT64, 1, 64, 0);
    dr_compare("dk=dv=64 chunk 64 (runs at 32)", 1, 150, 2, 64, 64, 0, EFLA_FLOAT32, EFLA_ORDER_EXACT, 64, 0);
    dr_compare("dk=dv=128 chunk 128", 1, 200, 1, 128, 128, 0, EFLA_FLOAT32, EFLA_ORDER_EXACT, 128, 0);
    dr_compare("bfloat16 inputs", 2, 50, 2, 32, 32, 0, EFLA_BFLOAT16, EFLA_ORDER_EXACT, 16, 0);
    /* bfloat16 through the tensor-core chunked kernels (delta_rule_chunk.cu): every chunk
     * size they cover, T not a multiple of C, dk != dv, orders, packed sequences, recomputed
     * states; chunk 128 and dk = 24 take the scan kernels (the fallback) */
    dr_compare("tensor cores dk=dv=64 chunk 64", 2, 150, 2, 64, 64, 0, EFLA_BFLOAT16, EFLA_ORDER_EXACT, 64, 0);
    dr_compare("tensor cores dk=dv=128 chunk 64 DeltaNet", 1, 200, 2, 128, 128, 0, EFLA_BFLOAT16, 1, 64, 0);
    dr_compare("tensor cores dk=64 dv=128 chunk 32 order 2", 2, 77, 3, 64, 128, 0, EFLA_BFLOAT16, 2, 32, 0);
    dr_compare("tensor cores dk=128 dv=64 chunk 16 order 4", 1, 45, 2, 128, 64, 0, EFLA_BFLOAT16, 4, 16, 0);
    dr_compare("tensor cores packed cu_seqlens, recomputed states", 1, 64, 3, 32, 32, 1, EFLA_BFLOAT16,
               EFLA_ORDER_EXACT, 16, 1);
    dr_compare("tensor cores packed cu_seqlens chunk 64", 1, 130, 2, 64, 64, 1, EFLA_BFLOAT16, EFLA_ORDER_EXACT, 64, 0);
    /* the backward's other ways, forced (the defaults above take the usual ones): the backward
     * scan with its cross-chunk prefetch, and the scan making tril(Q K^T) itself rather than
     * reading prep's */
    static const char *const other_way[2] = { "EFLA_DELTA_RULE_BWD_PREFETCH", "EFLA_DELTA_RULE_SCAN_QK" };
    for (int i = 0; i < 2; i++) {
        char label[112];
        setenv(other_way[i], "1", 1);
        snprintf(label, sizeof label, "tensor cores dk=dv=128 chunk 64, %s=1", other_way[i]);
        dr_compare(label, 1, 200, 2, 128, 128, 0, EFLA_BFLOAT16, EFLA_ORDER_EXACT, 64, 0);
        snprintf(label, sizeof label, "tensor cores packed dk=dv=64 chunk 64, %s=1", other_way[i]);
        dr_compare(label, 1, 130, 2, 64, 64, 1, EFLA_BFLOAT16, EFLA_ORDER_EXACT, 64, 0);
        unsetenv(other_way[i]);
    }
    /* the register scans with two warps a 16-column slice (KS = 2, opt-in): both scans split where
     * the states are saved, dk != dv, packed sequences with recomputed states (the forward scan twice) */
    static const char *const split_bf16[2] = { "EFLA_DELTA_RULE_SCAN_KS", "EFLA_DELTA_RULE_BWD_KS" };
    for (int i = 0; i < 2; i++) setenv(split_bf16[i], "2", 1);
    dr_compare("register scans KS=2: dk=dv=128 chunk 64", 1, 200, 2, 128, 128, 0, EFLA_BFLOAT16, EFLA_ORDER_EXACT, 64, 0);
    dr_compare("register scans KS=2: dk=64 dv=128 chunk 32 order 2", 2, 77, 3, 64, 128, 0, EFLA_BFLOAT16, 2, 32, 0);
    dr_compare("register scans KS=2: packed, recomputed states", 1, 64, 3, 32, 32, 1, EFLA_BFLOAT16, EFLA_ORDER_EXACT, 16, 1);
    for (int i = 0; i < 2; i++) unsetenv(split_bf16[i]);
    /* the register-style prep, outputs and backward within each chunk (prep_mma_kernel,
     * out_mma_kernel, bwd_chunk_mma_kernel) forced on and off, whatever the defaults: every chunk
     * size, dk != dv, orders, packed sequences, recomputed states */
    static const char *const register_style[3] = { "EFLA_DELTA_RULE_PREP_MMA", "EFLA_DELTA_RULE_OUT_MMA",
                                                    "EFLA_DELTA_RULE_BWD_CHUNK_MMA" };
    for (int on = 0; on < 2; on++) {
        char label[112];
        for (int i = 0; i < 3; i++) setenv(register_style[i], on ? "1" : "0", 1);
        snprintf(label, sizeof label, "register-style kernels %s: dk=dv=128 chunk 64 DeltaNet", on ? "on" : "off");
        dr_compare(label, 1, 200, 2, 128, 128, 0, EFLA_BFLOAT16, 1, 64, 0);
        snprintf(label, sizeof label, "register-style kernels %s: dk=64 dv=128 chunk 32 order 2", on ? "on" : "off");
        dr_compare(label, 2, 77, 3, 64, 128, 0, EFLA_BFLOAT16, 2, 32, 0);
        snprintf(label, sizeof label, "register-style kernels %s: dk=128 dv=64 chunk 16 order 4", on ? "on" : "off");
        dr_compare(label, 1, 45, 2, 128, 64, 0, EFLA_BFLOAT16, 4, 16, 0);
        snprintf(label, sizeof label, "register-style kernels %s: packed, recomputed states", on ? "on" : "off");
        dr_compare(label, 1, 64, 3, 32, 32, 1, EFLA_BFLOAT16, EFLA_ORDER_EXACT, 16, 1);
        for (int i = 0; i < 3; i++) unsetenv(register_style[i]);
    }
    /* float32 through the same kernels (float tiles, three-TF32 products: within 1e-5 of the
     * float64 recurrence), dk = dv = 64 above included: d = 128 (float32 runs at chunk 32 at most,
     * efla_cuda_delta_rule_plan), dk != dv, chunk 16, packed sequences, recomputed states */
    dr_compare("float32 tensor cores dk=dv=128 chunk 64 (runs at 32)", 1, 150, 2, 128, 128, 0, EFLA_FLOAT32,
               EFLA_ORDER_EXACT, 64, 0);
    dr_compare("float32 tensor cores dk=64 dv=128 chunk 32 order 2", 2, 77, 2, 64, 128, 0, EFLA_FLOAT32, 2, 32, 0);
    dr_compare("float32 tensor cores packed dk=dv=32 chunk 16 order 4, recomputed states", 1, 64, 3, 32, 32, 1,
               EFLA_FLOAT32, 4, 16, 1);
    dr_compare("float32 tensor cores packed dk=dv=64 chunk 64 (runs at 32) DeltaNet", 1, 130, 2, 64, 64, 1, EFLA_FLOAT32, 1, 64,
               0);
    /* float32's register-style kernels (3xTF32 mma.sync: the forward scan with the state in
     * registers, the outputs, the backward scan where the states are saved, bwd_chunk up to chunk 32;
     * by default on where they are faster) forced on, the scans with two warps a 16-column slice
     * (KS = 2, opt-in), then all off (the WMMA kernels): the same rows, the same tolerance, and
     * packed saved states */
    static const char *const register_f32[4] = { "EFLA_DELTA_RULE_SCAN_MMA_F32", "EFLA_DELTA_RULE_OUT_MMA_F32",
                                                 "EFLA_DELTA_RULE_BWD_MMA_F32", "EFLA_DELTA_RULE_BWD_CHUNK_MMA_F32" };
    static const char *const split_f32[2] = { "EFLA_DELTA_RULE_SCAN_F32_KS", "EFLA_DELTA_RULE_BWD_F32_KS" };
    for (int on = 1; on >= 0; on--) {
        char label[112];
        for (int i = 0; i < 4; i++) setenv(register_f32[i], on ? "1" : "0", 1);
        for (int i = 0; i < 2; i++) setenv(split_f32[i], on ? "2" : "1", 1);
        const char *state = on ? "on" : "off";
        snprintf(label, sizeof label, "float32 register-style kernels %s: dk=dv=128 chunk 64 (runs at 32)", state);
        dr_compare(label, 1, 150, 2, 128, 128, 0, EFLA_FLOAT32, EFLA_ORDER_EXACT, 64, 0);
        snprintf(label, sizeof label, "float32 register-style kernels %s: dk=64 dv=128 chunk 32 order 2", state);
        dr_compare(label, 2, 77, 2, 64, 128, 0, EFLA_FLOAT32, 2, 32, 0);
        snprintf(label, sizeof label, "float32 register-style kernels %s: dk=128 dv=64 chunk 16 order 4", state);
        dr_compare(label, 1, 45, 2, 128, 64, 0, EFLA_FLOAT32, 4, 16, 0);
        snprintf(label, sizeof label, "float32 register-style kernels %s: packed dk=dv=32 chunk 16, recomputed states", state);
        dr_compare(label, 1, 64, 3, 32, 32, 1, EFLA_FLOAT32, 4, 16, 1);
        snprintf(label, sizeof label, "float32 register-style kernels %s: packed dk=dv=64 chunk 32 DeltaNet", state);
        dr_compare(label, 1, 130, 2, 64, 64, 1, EFLA_FLOAT32, 1, 32, 0);
        for (int i = 0; i < 4; i++) unsetenv(register_f32[i]);
        for (int i = 0; i < 2; i++) unsetenv(split_f32[i]);
    }
    dr_compare("bfloat16 chunk 128 (scan fallback)", 1, 150, 2, 64, 64, 0, EFLA_BFLOAT16, EFLA_ORDER_EXACT, 128, 0);
    dr_compare("bfloat16 dk=24 (scan fallback)", 1, 70, 2, 24, 40, 0, EFLA_BFLOAT16, EFLA_ORDER_EXACT, 64, 0);
    /* the recurrent algorithm: the scan makes alpha (and lambda, for the backward) in its kernel */
    dr_compare_on("recurrent, alpha in the scan kernel", 2, 70, 2, 24, 40, 0, EFLA_FLOAT32, EFLA_ORDER_EXACT, 32, 0,
                  EFLA_ALGO_RECURRENT);
    dr_compare_on("recurrent packed order 2, alpha in the scan kernel", 1, 64, 3, 16, 16, 1, EFLA_FLOAT64, 2, 16, 0,
                  EFLA_ALGO_RECURRENT);
    dr_compare_on("recurrent, alpha in the scan kernel", 2, 50, 2, 32, 32, 0, EFLA_BFLOAT16, 3, 16, 0,
                  EFLA_ALGO_RECURRENT);
    dr_step_gpu(EFLA_FLOAT32);
    dr_step_gpu(EFLA_BFLOAT16);
    dr_chunk_states();
    dr_chunk_state_dtype();
    dr_gated_cuda();
}

/* ---- memory ------------------------------------------------------------------------------------------------------ */
static int gc_calls;
static void count_gc(void) { gc_calls++; }

static void test_memory(void) {
    efla_memory_stats s0, s1, s2;
    MUST_OK(efla_cuda_memory_stats(GPU, &s0));
    int64_t sh[2] = { 256, 1000 };
    for (int i = 0; i < 50; i++) {
        efla_tensor *a = MUST(efla_ones(2, sh, EFLA_FLOAT32, GPU));
        efla_tensor *b = MUST(efla_unary(EFLA_EXP, a));
        efla_tensor *c = MUST(efla_binary(EFLA_ADD, a, b));
        efla_tensor_release(a); efla_tensor_release(b); efla_tensor_release(c);
    }
    MUST_OK(efla_cuda_memory_stats(GPU, &s1));
    CHECK(s1.live_bytes == s0.live_bytes, "live bytes back to baseline after a loop (%lld vs %lld)",
          (long long)s1.live_bytes, (long long)s0.live_bytes);
    CHECK(s1.num_cache_hits >= s0.num_cache_hits + 100, "the loop reused cached blocks (%lld hits)",
          (long long)(s1.num_cache_hits - s0.num_cache_hits));
    CHECK(s1.peak_bytes >= s0.live_bytes + 3 * 256 * 1000 * 4, "peak counts the loop's tensors");
    CHECK(s1.cached_bytes > 0, "freed blocks are cached");
    MUST_OK(efla_cuda_empty_cache(GPU));
    MUST_OK(efla_cuda_reset_peak(GPU));
    MUST_OK(efla_cuda_memory_stats(GPU, &s2));
    CHECK(s2.cached_bytes == 0, "empty_cache drops the cache (%lld left)", (long long)s2.cached_bytes);
    CHECK(s2.peak_bytes == s2.live_bytes, "reset_peak");
    /* out of memory: 1 PiB, an error naming the device, the GC callback tried, process fine */
    efla_set_gc_callback(count_gc);
    int64_t huge[1] = { (int64_t)1 << 48 };
    efla_tensor *t = efla_empty(1, huge, EFLA_FLOAT32, GPU);
    CHECK_ERROR(t == NULL, "out of memory on cuda:0: asked for 1125899906842624 bytes");
    CHECK(gc_calls >= 1, "the allocator asked for a garbage collection before failing");
    efla_set_gc_callback(NULL);
    MUST_OK(efla_cuda_memory_stats(GPU, &s1));
    CHECK(s1.num_ooms == s2.num_ooms + 1, "num_ooms counts it");
    efla_tensor *ok = efla_ones(2, sh, EFLA_FLOAT32, GPU);
    double v = 0;
    efla_tensor *sm = ok ? sum_all(ok) : NULL;
    CHECK(sm && efla_item(sm, &v) == 0 && v == 256000, "the device still works after the failed allocation (%g)", v);
    efla_tensor_release(sm); efla_tensor_release(ok);
    /* bad devices and mixed devices are errors */
    efla_tensor *x = efla_zeros(1, huge, EFLA_FLOAT32, EFLA_DEVICE_CUDA0 + 63);
    CHECK_ERROR(x == NULL, "does not exist");
    int64_t s3[1] = { 3 };
    efla_tensor *a = MUST(efla_ones(1, s3, EFLA_FLOAT32, CPU)), *b = MUST(efla_ones(1, s3, EFLA_FLOAT32, GPU));
    efla_tensor *c = efla_binary(EFLA_ADD, a, b);
    CHECK_ERROR(c == NULL, "different devices");
    efla_tensor_release(a); efla_tensor_release(b); efla_tensor_release(c);
    CHECK(efla_synchronize(GPU) == 0, "synchronize: %s", efla_last_error());
}

/* Device properties are read and plausible; a missing device is an error, not a crash. */
static void test_props(void) {
    efla_device_props p;
    CHECK(efla_cuda_device_props(GPU, &p) == 0, "device props");
    CHECK(strlen(p.name) > 0 && p.total_memory > (1LL << 30) && p.multiprocessors > 0 && p.cc_major >= 5,
          "props: %s, %lld bytes, %d SMs, cc %d.%d", p.name, (long long)p.total_memory, p.multiprocessors,
          p.cc_major, p.cc_minor);
    CHECK_ERROR(efla_cuda_device_props(EFLA_DEVICE_CUDA0 + 63, &p) < 0, "does not exist");
}

/* ---- CUDA-side semantics that are not comparisons with the CPU (those are rows of
 * test_backend_ops.c) ------------------------------------------------------------------------ */
static void test_semantics(void) {
    /* ties: argmax takes the first */
    int64_t ts[1] = { 7 };
    const int d0[1] = { 0 };
    efla_tensor *tc = MUST(efla_zeros(1, ts, EFLA_FLOAT32, GPU));
    int64_t i3[1] = { 3 }, i5[1] = { 5 };
    MUST_OK(efla_set(tc, i3, 2));
    MUST_OK(efla_set(tc, i5, 2));
    efla_tensor *am = MUST(efla_reduce(EFLA_ARGMAX, tc, 1, d0, 0, 0));
    double idx = -1;
    MUST_OK(efla_item(am, &idx));
    CHECK(idx == 3, "argmax with ties gives the first index, got %g", idx);
    efla_tensor_release(am); efla_tensor_release(tc);
    /* TF32 on/off: on changes float32 products at ~1e-3, off restores exact float32 */
    int64_t s[2] = { 64, 256 };
    efla_tensor *a = rnd(2, s, EFLA_FLOAT32, 1), *bt = MUST(efla_transpose(a, 0, 1));
    int prev = efla_cuda_set_tf32(1);
    CHECK(prev == 0, "tf32 starts off");
    efla_tensor *ga = gpu(a), *gbt = MUST(efla_transpose(ga, 0, 1));
    efla_tensor *r = efla_matmul(ga, gbt), *ref = efla_matmul(a, bt);
    double d = r && ref ? norm_rel_diff(r, ref) : INFINITY;
    CHECK(d < 5e-3, "tf32 matmul within 5e-3 by norm (%.3g)", d);
    efla_tensor_release(r);
    CHECK(efla_cuda_set_tf32(0) == 1, "set_tf32 returns the previous setting");
    expect_close("matmul float32 after tf32 off", efla_matmul(ga, gbt), ref, 2e-5);
    efla_tensor_release(ga); efla_tensor_release(gbt); efla_tensor_release(a); efla_tensor_release(bt);
    /* a target outside the classes is an error naming it */
    int64_t ls[2] = { 3, 4 }, n = 3, tv[3] = { 0, 9, 1 };
    efla_tensor *x = rnd(2, ls, EFLA_FLOAT32, 1), *xg = gpu(x);
    efla_tensor *t = MUST(efla_from_buffer(1, &n, EFLA_INT64, tv, sizeof tv)), *tg = gpu(t);
    r = efla_cross_entropy(xg, tg, -100, 0);
    CHECK_ERROR(r == NULL, "target 9 in row 1 is outside the 4 classes");
    efla_tensor_release(r); efla_tensor_release(x); efla_tensor_release(xg); efla_tensor_release(t); efla_tensor_release(tg);
    /* one_hot, and a bad index is an error, not a crash */
    int64_t n4 = 4, iv[4] = { 5, 0, 2, 5 }, s6[2] = { 6, 5 };
    efla_tensor *ix = MUST(efla_from_buffer(1, &n4, EFLA_INT64, iv, sizeof iv)), *gix = gpu(ix);
    expect_close("one_hot", efla_one_hot(gix, 7), efla_one_hot(ix, 7), 0);
    efla_tensor_release(ix); efla_tensor_release(gix);
    int64_t bv[2] = { 1, 17 }, n2 = 2;
    efla_tensor *bad = MUST(efla_from_buffer(1, &n2, EFLA_INT64, bv, sizeof bv)), *gbad = gpu(bad);
    x = MUST(efla_zeros(2, s6, EFLA_FLOAT32, GPU));
    r = efla_index_select(x, 0, gbad);
    CHECK_ERROR(r == NULL, "index 17 is out of range for dim 0 of size 6");
    efla_tensor_release(r); efla_tensor_release(x); efla_tensor_release(bad); efla_tensor_release(gbad);
    /* randperm: the same permutation as the cpu */
    efla_manual_seed(99);
    efla_tensor *pc = MUST(efla_randperm(1000, CPU));
    efla_manual_seed(99);
    efla_tensor *pg = MUST(efla_randperm(1000, GPU));
    expect_close("randperm", pg, pc, 0);
}

int main(int argc, char **argv) {
    TEST_ARGS(argc, argv);
    if (efla_device_count(1) < 1) {
        printf("skipped: no CUDA device\n");
        printf("0 passed, 0 failed\n");
        return 0;
    }
    int64_t live0 = efla_live_tensors();
    RUN(test_props);
    RUN(test_semantics);
    RUN(test_delta_rule_gradcheck);
    RUN(test_delta_rule);
    RUN(test_memory);
    CHECK(efla_synchronize(GPU) == 0, "no asynchronous CUDA error at the end: %s", efla_last_error());
    fprintf(stderr, "live tensors: %lld at start, %lld at end\n", (long long)live0, (long long)efla_live_tensors());
    TEST_SUMMARY();
}

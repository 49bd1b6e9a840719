/* test_nn.c: softmax / log_softmax (every dim, views, dtypes), cross entropy (ignore_index,
 * label smoothing), layer norm and RMS norm (with and without weight/bias) against plain
 * double loops; error messages; finite-difference gradients in float64. */
#include "test_util.h"
#include <stdint.h>

/* ---- helpers ------------------------------------------------------------------------------ */
static uint64_t rng_state = 0x2545F4914F6CDD1Dull;
static double urand(void) { return xorshift_u01(&rng_state); }

static efla_tensor *rand_tensor(int nd, const int64_t *shape, efla_dtype dt, double scale) {
    efla_tensor *t = MUST(efla_empty(nd, shape, EFLA_FLOAT64, EFLA_DEVICE_CPU));
    for (int64_t i = 0; i < efla_tensor_numel(t); i++) ((double *)efla_tensor_data(t))[i] = scale * (urand() * 2 - 1);
    if (dt == EFLA_FLOAT64) return t;
    efla_tensor *c = MUST(efla_to(t, dt, EFLA_DEVICE_CPU));
    efla_tensor_release(t);
    return c;
}

static double max_err(const double *got, const double *ref, int64_t n) {
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs(got[i] - ref[i]) / fmax(1.0, fabs(ref[i]));
        if (!(e <= worst)) worst = e;
    }
    return worst;
}

/* ---- softmax --------------------------------------------------------------------------------- */
/* Reference softmax of row-major x (shape s) along dim d. */
static void ref_softmax(const double *x, int nd, const int64_t *s, int d, int log_, double *y) {
    int64_t inner = 1, outer = 1, D = s[d];
    for (int i = d + 1; i < nd; i++) inner *= s[i];
    for (int i = 0; i < d; i++) outer *= s[i];
    for (int64_t o = 0; o < outer; o++)
        for (int64_t in = 0; in < inner; in++) {
            const double *p = x + o * D * inner + in;
            double m = -INFINITY, sum = 0;
            for (int64_t k = 0; k < D; k++) m = fmax(m, p[k * inner]);
            for (int64_t k = 0; k < D; k++) sum += exp(p[k * inner] - m);
            for (int64_t k = 0; k < D; k++) {
                double v = p[k * inner] - m - log(sum);
                y[o * D * inner + in + k * inner] = log_ ? v : exp(v);
            }
        }
}

static void check_softmax(const char *what, const efla_tensor *t, double tol) {
    int64_t s[EFLA_MAX_DIMS];
    int nd = shape_of(t, s);
    double *x = to_doubles(t);
    int64_t n = efla_tensor_numel(t);
    double *ref = malloc(sizeof(double) * (size_t)n);
    for (int d = 0; d < nd; d++)
        for (int log_ = 0; log_ < 2; log_++) {
            efla_tensor *y = log_ ? efla_log_softmax(t, d - (d % 2 ? nd : 0)) : efla_softmax(t, d);
            CHECK(y != NULL, "%s: softmax dim %d", what, d);
            if (!y) continue;
            int64_t ys[EFLA_MAX_DIMS];
            int ok = shape_of(y, ys) == nd && !memcmp(ys, s, sizeof(int64_t) * (size_t)nd);
            CHECK(ok && efla_tensor_dtype(y) == efla_tensor_dtype(t), "%s: same shape and dtype", what);
            double *got = to_doubles(y);
            ref_softmax(x, nd, s, d, log_, ref);
            double e = max_err(got, ref, n);
            CHECK(e <= tol, "%s: %s dim %d: error %g", what, log_ ? "log_softmax" : "softmax", d, e);
            if (!log_) {   /* each slice along d sums to 1 */
                int64_t inner = 1, D = s[d];
                for (int i = d + 1; i < nd; i++) inner *= s[i];
                double worst = 0;
                for (int64_t o = 0; o < n / (D * inner); o++)
                    for (int64_t in = 0; in < inner; in++) {
                        double sum = 0;
                        for (int64_t k = 0; k < D; k++) sum += got[o * D * inner + in + k * inner];
                        worst = fmax(worst, fabs(sum - 1));
                    }
                CHECK(worst <= tol * 10, "%s: softmax dim %d sums to 1 (off by %g)", what, d, worst);
            }
            free(got);
            efla_tensor_release(y);
        }
    free(x);
    free(ref);
}

static void test_softmax(void) {
    int64_t s3[3] = { 3, 5, 7 }, big[2] = { 200, 300 };
    for (int di = 0; di < 2; di++) {
        efla_dtype dt = di ? EFLA_FLOAT64 : EFLA_FLOAT32;
        double tol = di ? 1e-13 : 2e-6;
        efla_tensor *a = rand_tensor(3, s3, dt, 4);
        check_softmax("[3,5,7]", a, tol);
        efla_tensor *at = MUST(efla_transpose(a, 0, 2)), *an = MUST(efla_narrow(at, 1, 1, 3));
        check_softmax("transposed+narrowed", an, tol);
        efla_tensor *b = rand_tensor(2, big, dt, 10);
        check_softmax("[200,300]", b, tol);
        efla_tensor_release(a); efla_tensor_release(at); efla_tensor_release(an); efla_tensor_release(b);
    }
    efla_tensor *h = rand_tensor(3, s3, EFLA_BFLOAT16, 3);
    check_softmax("bfloat16", h, 1e-2);
    efla_tensor_release(h);
    /* large logits do not overflow; -inf entries get probability 0 */
    double v[4] = { 1000, 999, -INFINITY, 998 };
    int64_t four = 4;
    efla_tensor *t = MUST(efla_from_buffer(1, &four, EFLA_FLOAT64, v, sizeof v));
    efla_tensor *y = MUST(efla_softmax(t, 0));
    double *p = to_doubles(y), z = 1 + exp(-1) + exp(-2);
    CHECK(fabs(p[0] - 1 / z) < 1e-15 && p[2] == 0 && fabs(p[3] - exp(-2) / z) < 1e-15, "softmax of huge logits");
    free(p);
    efla_tensor_release(y); efla_tensor_release(t);
    /* errors */
    int64_t s2[2] = { 2, 3 };
    efla_tensor *i = MUST(efla_zeros(2, s2, EFLA_INT64, EFLA_DEVICE_CPU)), *f = rand_tensor(2, s2, EFLA_FLOAT32, 1);
    CHECK_ERROR(efla_softmax(i, 0) == NULL, "softmax: needs a floating-point tensor, got int64");
    CHECK_ERROR(efla_log_softmax(f, 2) == NULL, "log_softmax: dim 2 is out of range");
    CHECK_ERROR(efla_softmax(f, -3) == NULL, "dim -3 is out of range");
    efla_tensor_release(i); efla_tensor_release(f);
}

/* ---- cross entropy ------------------------------------------------------------------------------ */
static double ref_cross_entropy(const double *x, const int64_t *t, int64_t N, int64_t C, int64_t ignore, double eps) {
    double total = 0;
    int64_t count = 0;
    for (int64_t r = 0; r < N; r++) {
        if (t[r] == ignore) continue;
        const double *row = x + r * C;
        double m = -INFINITY, s = 0, mean_logp = 0;
        for (int64_t c = 0; c < C; c++) m = fmax(m, row[c]);
        for (int64_t c = 0; c < C; c++) s += exp(row[c] - m);
        double lse = m + log(s);
        for (int64_t c = 0; c < C; c++) mean_logp += (row[c] - lse) / (double)C;
        total += -(1 - eps) * (row[t[r]] - lse) - eps * mean_logp;
        count++;
    }
    return total / (double)count;
}

static void test_cross_entropy(void) {
    const int64_t N = 9, C = 6;
    int64_t sh[2] = { N, C }, tn = N;
    int64_t tv[9] = { 0, 5, -100, 2, 3, -100, 1, 4, 5 };
    efla_tensor *tgt = MUST(efla_from_buffer(1, &tn, EFLA_INT64, tv, sizeof tv));
    for (int di = 0; di < 2; di++) {
        efla_dtype dt = di ? EFLA_FLOAT64 : EFLA_FLOAT32;
        efla_tensor *x = rand_tensor(2, sh, dt, 3);
        double *xv = to_doubles(x);
        const double eps[3] = { 0, 0.1, 0.5 };
        for (int e = 0; e < 3; e++) {
            efla_tensor *l = MUST(efla_cross_entropy(x, tgt, -100, eps[e]));
            double got;
            MUST_OK(efla_item(l, &got));
            double ref = ref_cross_entropy(xv, tv, N, C, -100, eps[e]);
            CHECK(efla_tensor_ndim(l) == 0 && fabs(got - ref) <= (di ? 1e-13 : 1e-6) * fmax(1, fabs(ref)),
                  "cross_entropy %s smoothing %g: %g vs %g", efla_dtype_name(dt), eps[e], got, ref);
            efla_tensor_release(l);
        }
        /* a transposed (non-contiguous) logits view */
        int64_t shT[2] = { C, N };
        efla_tensor *xt0 = rand_tensor(2, shT, dt, 2), *xt = MUST(efla_transpose(xt0, 0, 1));
        double *xtv = to_doubles(xt), got;
        efla_tensor *l = MUST(efla_cross_entropy(xt, tgt, -100, 0.2));
        MUST_OK(efla_item(l, &got));
        CHECK(fabs(got - ref_cross_entropy(xtv, tv, N, C, -100, 0.2)) <= (di ? 1e-13 : 1e-6) * fmax(1, fabs(got)),
              "cross_entropy of a transposed view");
        free(xtv);
        efla_tensor_release(l); efla_tensor_release(xt); efla_tensor_release(xt0);
        free(xv);
        efla_tensor_release(x);
    }
    /* every row ignored: nan, like torch */
    int64_t all_ign[9];
    for (int i = 0; i < 9; i++) all_ign[i] = 7;
    efla_tensor *ig = MUST(efla_from_buffer(1, &tn, EFLA_INT64, all_ign, sizeof all_ign));
    efla_tensor *x = rand_tensor(2, sh, EFLA_FLOAT32, 1);
    efla_tensor *l = MUST(efla_cross_entropy(x, ig, 7, 0));
    double v;
    MUST_OK(efla_item(l, &v));
    CHECK(isnan(v), "all rows ignored -> nan");
    efla_tensor_release(l); efla_tensor_release(ig);
    /* errors */
    efla_tensor *tf = MUST(efla_to(tgt, EFLA_FLOAT32, EFLA_DEVICE_CPU));
    CHECK_ERROR(efla_cross_entropy(x, tf, -100, 0) == NULL, "target must hold int64 class indices, got [9] float32");
    int64_t eight = 8;
    efla_tensor *t8 = MUST(efla_zeros(1, &eight, EFLA_INT64, EFLA_DEVICE_CPU));
    CHECK_ERROR(efla_cross_entropy(x, t8, -100, 0) == NULL, "target shape [8] does not match logits [9,6]");
    efla_tensor *x3 = MUST(efla_unsqueeze(x, 0));
    CHECK_ERROR(efla_cross_entropy(x3, tgt, -100, 0) == NULL, "logits must be a float [N,C] tensor, got [1,9,6]");
    int64_t bad[9] = { 0, 1, 2, 6, 0, 0, 0, 0, 0 };
    efla_tensor *tb = MUST(efla_from_buffer(1, &tn, EFLA_INT64, bad, sizeof bad));
    CHECK_ERROR(efla_cross_entropy(x, tb, -100, 0) == NULL, "target 6 in row 3 is outside the 6 classes");
    CHECK_ERROR(efla_cross_entropy(x, tgt, -100, 1.5) == NULL, "label_smoothing 1.5 is outside [0, 1]");
    efla_tensor_release(tf); efla_tensor_release(t8); efla_tensor_release(x3); efla_tensor_release(tb);
    efla_tensor_release(x); efla_tensor_release(tgt);
}

/* ---- layer norm / RMS norm ---------------------------------------------------------------------- */
static void ref_norm(const double *x, const double *w, const double *b, int64_t rows, int64_t D, double eps, int rms,
                     double *y) {
    for (int64_t r = 0; r < rows; r++) {
        const double *p = x + r * D;
        double mu = 0, var = 0;
        if (!rms) { for (int64_t i = 0; i < D; i++) mu += p[i]; mu /= (double)D; }
        for (int64_t i = 0; i < D; i++) var += (p[i] - mu) * (p[i] - mu);
        var /= (double)D;
        for (int64_t i = 0; i < D; i++)
            y[r * D + i] = (p[i] - mu) / sqrt(var + eps) * (w ? w[i] : 1) + (b ? b[i] : 0);
    }
}

static void check_norm(const char *what, const efla_tensor *x, const efla_tensor *w, const efla_tensor *b, int rms,
                       double tol) {
    int64_t s[EFLA_MAX_DIMS];
    int nd = shape_of(x, s);
    int64_t D = s[nd - 1], n = efla_tensor_numel(x);
    efla_tensor *y = rms ? efla_rms_norm(x, w, 1e-5) : efla_layer_norm(x, w, b, 1e-5);
    CHECK(y != NULL, "%s", what);
    if (!y) return;
    double *xv = to_doubles(x), *wv = w ? to_doubles(w) : NULL, *bv = b ? to_doubles(b) : NULL, *got = to_doubles(y);
    double *ref = malloc(sizeof(double) * (size_t)n);
    ref_norm(xv, wv, rms ? NULL : bv, n / D, D, 1e-5, rms, ref);
    double e = max_err(got, ref, n);
    CHECK(e <= tol, "%s %s: error %g", rms ? "rms_norm" : "layer_norm", what, e);
    free(xv); free(wv); free(bv); free(got); free(ref);
    efla_tensor_release(y);
}

static void test_norms(void) {
    int64_t s3[3] = { 2, 5, 16 }, d16 = 16, big[2] = { 300, 200 }, d200 = 200;
    for (int di = 0; di < 2; di++) {
        efla_dtype dt = di ? EFLA_FLOAT64 : EFLA_FLOAT32;
        double tol = di ? 1e-12 : 1e-5;
        efla_tensor *x = rand_tensor(3, s3, dt, 2), *w = rand_tensor(1, &d16, dt, 1.5), *b = rand_tensor(1, &d16, dt, 1);
        for (int rms = 0; rms < 2; rms++) {
            check_norm("plain", x, NULL, NULL, rms, tol);
            check_norm("weight", x, w, NULL, rms, tol);
            check_norm("weight+bias", x, w, b, rms, tol);
            check_norm("bias only", x, NULL, b, rms, tol);
        }
        efla_tensor *xt0 = rand_tensor(3, s3, dt, 1), *xt1 = MUST(efla_transpose(xt0, 0, 1));
        check_norm("non-contiguous x", xt1, w, b, 0, tol);
        efla_tensor *xb = rand_tensor(2, big, dt, 3), *wb = rand_tensor(1, &d200, dt, 1), *bb = rand_tensor(1, &d200, dt, 1);
        check_norm("[300,200]", xb, wb, bb, 0, tol);
        check_norm("[300,200]", xb, wb, NULL, 1, tol);
        efla_tensor *ts[] = { x, w, b, xt0, xt1, xb, wb, bb };
        for (int i = 0; i < 8; i++) efla_tensor_release(ts[i]);
    }
    /* errors */
    int64_t d5 = 5;
    efla_tensor *x = rand_tensor(3, s3, EFLA_FLOAT32, 1), *w5 = rand_tensor(1, &d5, EFLA_FLOAT32, 1);
    efla_tensor *w64 = rand_tensor(1, &d16, EFLA_FLOAT64, 1);
    CHECK_ERROR(efla_layer_norm(x, w5, NULL, 1e-5) == NULL, "layer_norm: weight has shape [5] but x [2,5,16] needs [16]");
    CHECK_ERROR(efla_rms_norm(x, w64, 1e-5) == NULL, "rms_norm: weight is float64 but x is float32");
    CHECK_ERROR(efla_layer_norm(x, NULL, w5, 1e-5) == NULL, "bias has shape [5]");
    efla_tensor_release(x); efla_tensor_release(w5); efla_tensor_release(w64);
}

/* ---- gradients ---------------------------------------------------------------------------------- */
typedef efla_tensor *(*fwd_fn)(efla_tensor *const *in, const void *ctx);

/* Gradient weights: uniform in [-1, 1). */
static efla_tensor *rand_weights(int nd, const int64_t *shape) { return rand_tensor(nd, shape, EFLA_FLOAT64, 1); }

/* L = sum(f(in) * w) by autograd vs central differences for every input that requires grad. */
static double gradcheck(fwd_fn f, int n_in, efla_tensor *const *in, const void *ctx) {
    return fd_gradcheck(f, n_in, in, ctx, rand_weights);
}

static efla_tensor *f_softmax(efla_tensor *const *in, const void *ctx) { return efla_softmax(in[0], *(const int *)ctx); }
static efla_tensor *f_log_softmax(efla_tensor *const *in, const void *ctx) { return efla_log_softmax(in[0], *(const int *)ctx); }
static efla_tensor *f_softmax_view(efla_tensor *const *in, const void *ctx) {
    efla_tensor *t = efla_transpose(in[0], 0, 2);
    efla_tensor *y = efla_softmax(t, *(const int *)ctx);
    efla_tensor_release(t);
    return y;
}
typedef struct { efla_tensor *target; double eps; } ce_ctx;
static efla_tensor *f_ce(efla_tensor *const *in, const void *ctx) {
    const ce_ctx *c = ctx;
    return efla_cross_entropy(in[0], c->target, -100, c->eps);
}
static efla_tensor *f_layer_norm(efla_tensor *const *in, const void *ctx) { return efla_layer_norm(in[0], in[1], in[2], 1e-5); }
static efla_tensor *f_rms_norm(efla_tensor *const *in, const void *ctx) { return efla_rms_norm(in[0], in[1], 1e-5); }

static void test_gradients(void) {
    int64_t s3[3] = { 2, 3, 4 };
    efla_tensor *x = rand_tensor(3, s3, EFLA_FLOAT64, 2);
    MUST_OK(efla_set_requires_grad(x, 1));
    for (int d = -3; d < 3; d++) {
        CHECK(gradcheck(f_softmax, 1, &x, &d) < 1e-7, "softmax gradient dim %d", d);
        CHECK(gradcheck(f_log_softmax, 1, &x, &d) < 1e-7, "log_softmax gradient dim %d", d);
        CHECK(gradcheck(f_softmax_view, 1, &x, &d) < 1e-7, "softmax gradient through a view dim %d", d);
    }
    efla_tensor_release(x);

    int64_t sh[2] = { 5, 4 }, tn = 5, tv[5] = { 3, -100, 0, 2, 3 };
    efla_tensor *logits = rand_tensor(2, sh, EFLA_FLOAT64, 2);
    MUST_OK(efla_set_requires_grad(logits, 1));
    ce_ctx c = { MUST(efla_from_buffer(1, &tn, EFLA_INT64, tv, sizeof tv)), 0 };
    CHECK(gradcheck(f_ce, 1, &logits, &c) < 1e-7, "cross_entropy gradient");
    c.eps = 0.3;
    CHECK(gradcheck(f_ce, 1, &logits, &c) < 1e-7, "cross_entropy gradient with smoothing");
    efla_tensor_release(c.target);
    efla_tensor_release(logits);

    int64_t xs[3] = { 2, 3, 5 }, d5 = 5;
    efla_tensor *in[3] = { rand_tensor(3, xs, EFLA_FLOAT64, 2), rand_tensor(1, &d5, EFLA_FLOAT64, 1.5),
                           rand_tensor(1, &d5, EFLA_FLOAT64, 1) };
    for (int i = 0; i < 3; i++) MUST_OK(efla_set_requires_grad(in[i], 1));
    CHECK(gradcheck(f_layer_norm, 3, in, NULL) < 1e-6, "layer_norm gradient (x, weight, bias)");
    CHECK(gradcheck(f_rms_norm, 2, in, NULL) < 1e-6, "rms_norm gradient (x, weight)");
    efla_tensor *nw[3] = { in[0], NULL, NULL };
    CHECK(gradcheck(f_layer_norm, 3, nw, NULL) < 1e-6, "layer_norm gradient without weight/bias");
    CHECK(gradcheck(f_rms_norm, 1, nw, NULL) < 1e-6, "rms_norm gradient without weight");
    /* only the weight requires grad */
    MUST_OK(efla_set_requires_grad(in[0], 0));
    CHECK(gradcheck(f_layer_norm, 3, in, NULL) < 1e-6, "layer_norm gradient for weight and bias only");
    for (int i = 0; i < 3; i++) efla_tensor_release(in[i]);
}


/* The threaded backward (per-thread dw/db partial sums) on a large input, against the
 * closed-form gradients: dx = rstd (dxh - mean(dxh) - xh mean(dxh xh)), dw = sum dy xh,
 * db = sum dy, with dxh = dy w (no mean term for RMS). */
static void test_norm_backward_large(void) {
    int64_t sh[2] = { 400, 96 }, D = 96, rows = 400;
    for (int rms = 0; rms < 2; rms++) {
        efla_tensor *x = rand_tensor(2, sh, EFLA_FLOAT64, 2), *w = rand_tensor(1, &D, EFLA_FLOAT64, 1.5);
        efla_tensor *b = rand_tensor(1, &D, EFLA_FLOAT64, 1), *dy = rand_tensor(2, sh, EFLA_FLOAT64, 1);
        MUST_OK(efla_set_requires_grad(x, 1));
        MUST_OK(efla_set_requires_grad(w, 1));
        MUST_OK(efla_set_requires_grad(b, 1));
        efla_tensor *y = MUST(rms ? efla_rms_norm(x, w, 1e-5) : efla_layer_norm(x, w, b, 1e-5));
        MUST_OK(efla_backward(y, dy, 0));
        efla_tensor *gx = MUST(efla_grad(x)), *gw = MUST(efla_grad(w)), *gb = rms ? NULL : MUST(efla_grad(b));
        double *xv = to_doubles(x), *wv = to_doubles(w), *dv = to_doubles(dy);
        double *gxv = to_doubles(gx), *gwv = to_doubles(gw), *gbv = gb ? to_doubles(gb) : NULL;
        double *rdx = calloc((size_t)(rows * D), sizeof(double)), *rdw = calloc((size_t)D, sizeof(double));
        double *rdb = calloc((size_t)D, sizeof(double)), *xh = malloc(sizeof(double) * (size_t)D);
        for (int64_t r = 0; r < rows; r++) {
            const double *p = xv + r * D, *g = dv + r * D;
            double mu = 0, var = 0, a = 0, c = 0;
            if (!rms) { for (int64_t i = 0; i < D; i++) mu += p[i]; mu /= (double)D; }
            for (int64_t i = 0; i < D; i++) var += (p[i] - mu) * (p[i] - mu);
            double rs = 1 / sqrt(var / (double)D + 1e-5);
            for (int64_t i = 0; i < D; i++) {
                xh[i] = (p[i] - mu) * rs;
                a += g[i] * wv[i] / (double)D;
                c += g[i] * wv[i] * xh[i] / (double)D;
                rdw[i] += g[i] * xh[i];
                rdb[i] += g[i];
            }
            for (int64_t i = 0; i < D; i++) rdx[r * D + i] = rs * (g[i] * wv[i] - (rms ? 0 : a) - xh[i] * c);
        }
        CHECK(max_err(gxv, rdx, rows * D) < 1e-11, "%s large dx", rms ? "rms_norm" : "layer_norm");
        CHECK(max_err(gwv, rdw, D) < 1e-11, "%s large dw", rms ? "rms_norm" : "layer_norm");
        if (gbv) CHECK(max_err(gbv, rdb, D) < 1e-11, "layer_norm large db");
        free(xv); free(wv); free(dv); free(gxv); free(gwv); free(gbv); free(rdx); free(rdw); free(rdb); free(xh);
        efla_tensor *ts[] = { x, w, b, dy, y, gx, gw, gb };
        for (int i = 0; i < 8; i++) efla_tensor_release(ts[i]);
    }
}

int main(int argc, char **argv) {
    TEST_ARGS(argc, argv);
    int64_t live0 = efla_live_tensors();
    RUN(test_softmax);
    RUN(test_cross_entropy);
    RUN(test_norms);
    RUN(test_gradients);
    RUN(test_norm_backward_large);
    CHECK(efla_live_tensors() == live0, "no tensor leaks (%lld live)", (long long)(efla_live_tensors() - live0));
    TEST_SUMMARY();
}

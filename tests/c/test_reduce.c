/* test_reduce.c: efla_reduce against plain double loops on random data: every op over
 * every subset of dims, keepdim on/off, non-contiguous inputs, float32/float64/int64,
 * large inputs (the threaded paths), error messages, and finite-difference gradients. */
#include "test_util.h"
#include <stdint.h>

/* ---- helpers ------------------------------------------------------------------------------ */
static uint64_t rng_state = 88172645463325252ull;
static double urand(void) { return xorshift_u01(&rng_state); }   /* uniform [0,1) */

/* A tensor of dtype dt with values lo + (hi-lo) u (rounded for int64). */
static efla_tensor *rand_tensor(int nd, const int64_t *shape, efla_dtype dt, double lo, double hi) {
    efla_tensor *t = MUST(efla_empty(nd, shape, dt, EFLA_DEVICE_CPU));
    int64_t n = efla_tensor_numel(t);
    for (int64_t i = 0; i < n; i++) {
        double v = lo + (hi - lo) * urand();
        if (dt == EFLA_FLOAT32) ((float *)efla_tensor_data(t))[i] = (float)v;
        else if (dt == EFLA_FLOAT64) ((double *)efla_tensor_data(t))[i] = v;
        else if (dt == EFLA_INT64) ((int64_t *)efla_tensor_data(t))[i] = (int64_t)floor(v);
    }
    return t;
}

/* ---- the reference ------------------------------------------------------------------------------ */
/* Reduce the row-major values x of `shape` over `mask` (keepdim layout), in double. */
static void reference(efla_reduce_op op, double param, const double *x, int nd, const int64_t *shape, uint32_t mask,
                      double *out, int64_t *nout_p) {
    int64_t nout = 1, nred = 1;
    for (int d = 0; d < nd; d++) {
        if (mask & (1u << d)) nred *= shape[d];
        else nout *= shape[d];
    }
    *nout_p = nout;
    int64_t numel = nout * nred;
    double *vals = malloc(sizeof(double) * (size_t)(nout * nred + 1));
    int64_t *fill = calloc((size_t)nout, sizeof(int64_t));
    int64_t idx[EFLA_MAX_DIMS] = {0};
    for (int64_t i = 0; i < numel; i++) {
        int64_t o = 0;
        for (int d = 0; d < nd; d++)
            if (!(mask & (1u << d))) o = o * shape[d] + idx[d];
        vals[o * nred + fill[o]++] = x[i];
        for (int d = nd - 1; d >= 0; d--) {
            if (++idx[d] < shape[d]) break;
            idx[d] = 0;
        }
    }
    for (int64_t o = 0; o < nout; o++) {
        const double *v = vals + o * nred;
        double r = 0, m;
        int64_t at = 0;
        switch (op) {
        case EFLA_SUM: for (int64_t i = 0; i < nred; i++) r += v[i]; break;
        case EFLA_MEAN: for (int64_t i = 0; i < nred; i++) r += v[i]; r /= (double)nred; break;
        case EFLA_PROD: r = 1; for (int64_t i = 0; i < nred; i++) r *= v[i]; break;
        case EFLA_MAX: case EFLA_ARGMAX:
            for (int64_t i = 1; i < nred; i++) if (v[i] > v[at]) at = i;
            r = op == EFLA_MAX ? v[at] : (double)at; break;
        case EFLA_MIN: case EFLA_ARGMIN:
            for (int64_t i = 1; i < nred; i++) if (v[i] < v[at]) at = i;
            r = op == EFLA_MIN ? v[at] : (double)at; break;
        case EFLA_LOGSUMEXP:
            m = v[0];
            for (int64_t i = 1; i < nred; i++) if (v[i] > m) m = v[i];
            for (int64_t i = 0; i < nred; i++) r += exp(v[i] - m);
            r = m + log(r); break;
        case EFLA_VAR: {
            double mean = 0;
            for (int64_t i = 0; i < nred; i++) mean += v[i];
            mean /= (double)nred;
            for (int64_t i = 0; i < nred; i++) r += (v[i] - mean) * (v[i] - mean);
            r /= (double)nred - param; break;
        }
        case EFLA_NORM:
            if (param == INFINITY) { for (int64_t i = 0; i < nred; i++) r = fmax(r, fabs(v[i])); }
            else if (param == -INFINITY) { r = INFINITY; for (int64_t i = 0; i < nred; i++) r = fmin(r, fabs(v[i])); }
            else if (param == 0) { for (int64_t i = 0; i < nred; i++) r += v[i] != 0; }
            else { for (int64_t i = 0; i < nred; i++) r += pow(fabs(v[i]), param); r = pow(r, 1 / param); }
            break;
        default: r = NAN;
        }
        out[o] = r;
    }
    free(vals);
    free(fill);
}

/* Compare efla_reduce(op, t, mask) with the reference; returns max relative error
 * (INFINITY on a shape mismatch or failure). */
static double check_reduce(efla_reduce_op op, double param, const efla_tensor *t, uint32_t mask, int keepdim) {
    int nd = efla_tensor_ndim(t), dims[EFLA_MAX_DIMS], k = 0;
    int64_t shape[EFLA_MAX_DIMS];
    for (int d = 0; d < nd; d++) {
        shape[d] = efla_tensor_size(t, d);
        if (mask & (1u << d)) dims[k++] = d - ((d & 1) ? nd : 0);   /* mix negative dims in */
    }
    efla_tensor *r = efla_reduce(op, t, k, dims, keepdim, param);
    if (!r) { fprintf(stderr, "reduce %s failed: %s\n", efla_reduce_name(op), efla_last_error()); return INFINITY; }
    uint32_t full = k ? mask : (nd ? (1u << nd) - 1 : 0);
    /* expected shape */
    int en = 0;
    int64_t es[EFLA_MAX_DIMS];
    for (int d = 0; d < nd; d++) {
        if (!(full & (1u << d))) es[en++] = shape[d];
        else if (keepdim) es[en++] = 1;
    }
    double worst = 0;
    if (efla_tensor_ndim(r) != en) worst = INFINITY;
    for (int d = 0; d < en && worst == 0; d++)
        if (efla_tensor_size(r, d) != es[d]) worst = INFINITY;
    efla_dtype want = (op == EFLA_ARGMAX || op == EFLA_ARGMIN) ? EFLA_INT64 : efla_tensor_dtype(t);
    if (efla_tensor_dtype(r) != want) worst = INFINITY;
    if (worst == 0) {
        double *x = to_doubles(t), *got = to_doubles(r);
        int64_t nout;
        double *ref = malloc(sizeof(double) * (size_t)(efla_tensor_numel(t) + 1));
        reference(op, param, x, nd, shape, full, ref, &nout);
        for (int64_t i = 0; i < nout; i++) {
            double e = fabs(got[i] - ref[i]) / fmax(1.0, fabs(ref[i]));
            if (isnan(e) && !(isnan(got[i]) && isnan(ref[i]))) e = INFINITY;
            if (isnan(e)) e = 0;
            if (e > worst) worst = e;
        }
        free(x); free(got); free(ref);
    }
    efla_tensor_release(r);
    return worst;
}

static const efla_reduce_op float_ops[] = { EFLA_SUM, EFLA_MEAN, EFLA_MAX, EFLA_MIN, EFLA_PROD, EFLA_LOGSUMEXP,
                                            EFLA_VAR, EFLA_VAR, EFLA_NORM, EFLA_NORM, EFLA_NORM, EFLA_NORM,
                                            EFLA_NORM, EFLA_NORM };
static const double float_params[] = { 0, 0, 0, 0, 0, 0, 1, 0, 2, 1, INFINITY, 3, 0, -INFINITY };
#define N_FLOAT_OPS ((int)(sizeof float_ops / sizeof float_ops[0]))

/* Every op over every subset of dims of t, keepdim on and off. */
static void sweep(const char *what, const efla_tensor *t, double tol) {
    int nd = efla_tensor_ndim(t);
    for (int oi = 0; oi < N_FLOAT_OPS; oi++)
        for (uint32_t mask = 0; mask < (1u << nd); mask++)
            for (int keep = 0; keep < 2; keep++) {
                double e = check_reduce(float_ops[oi], float_params[oi], t, mask, keep);
                CHECK(e <= tol, "%s: %s(p=%g) mask %u keepdim %d: error %g", what, efla_reduce_name(float_ops[oi]),
                      float_params[oi], mask, keep, e);
            }
    /* argmax/argmin: each single dim */
    for (int d = 0; d < nd; d++)
        for (int keep = 0; keep < 2; keep++) {
            CHECK(check_reduce(EFLA_ARGMAX, 0, t, 1u << d, keep) == 0, "%s: argmax dim %d keep %d", what, d, keep);
            CHECK(check_reduce(EFLA_ARGMIN, 0, t, 1u << d, keep) == 0, "%s: argmin dim %d keep %d", what, d, keep);
        }
}

static void test_forward(void) {
    int64_t s3[3] = { 3, 4, 5 }, s4[4] = { 2, 3, 2, 4 }, s1[1] = { 7 };
    for (int di = 0; di < 2; di++) {
        efla_dtype dt = di ? EFLA_FLOAT64 : EFLA_FLOAT32;
        double tol = di ? 1e-12 : 1e-5;
        efla_tensor *a = rand_tensor(3, s3, dt, 0.2, 1.5);   /* positive keeps prod/log well scaled */
        efla_tensor *b = rand_tensor(4, s4, dt, -1.5, 1.5);
        efla_tensor *c = rand_tensor(1, s1, dt, -2, 2);
        sweep(di ? "f64 [3,4,5]" : "f32 [3,4,5]", a, tol);
        sweep(di ? "f64 [2,3,2,4]" : "f32 [2,3,2,4]", b, tol);
        sweep(di ? "f64 [7]" : "f32 [7]", c, tol);
        /* non-contiguous: a transpose and a narrowed transpose */
        efla_tensor *at = MUST(efla_transpose(a, 0, 2));
        sweep("transposed", at, tol);
        efla_tensor *bn = MUST(efla_narrow(b, 3, 1, 2));
        efla_tensor *bnt = MUST(efla_transpose(bn, 1, 3));
        sweep("narrowed+transposed", bnt, tol);
        efla_tensor_release(a); efla_tensor_release(b); efla_tensor_release(c);
        efla_tensor_release(at); efla_tensor_release(bn); efla_tensor_release(bnt);
    }
    /* a 0-d tensor reduces to itself */
    efla_tensor *s = MUST(efla_scalar(2.5, EFLA_FLOAT32, EFLA_DEVICE_CPU));
    efla_tensor *r = MUST(efla_reduce(EFLA_SUM, s, 0, NULL, 0, 0));
    double v = 0;
    MUST_OK(efla_item(r, &v));
    CHECK(efla_tensor_ndim(r) == 0 && v == 2.5, "0-d sum: %g", v);
    efla_tensor_release(s); efla_tensor_release(r);
}

static void test_int64(void) {
    int64_t sh[3] = { 4, 3, 5 };
    efla_tensor *t = rand_tensor(3, sh, EFLA_INT64, -4, 4);   /* small range: ties for argmax */
    const efla_reduce_op ops[] = { EFLA_SUM, EFLA_MAX, EFLA_MIN, EFLA_PROD };
    for (int oi = 0; oi < 4; oi++)
        for (uint32_t mask = 0; mask < 8; mask++)
            for (int keep = 0; keep < 2; keep++) {
                efla_tensor *r = efla_reduce(ops[oi], t, 0, NULL, keep, 0);
                CHECK(r && efla_tensor_dtype(r) == EFLA_INT64, "int64 %s keeps int64", efla_reduce_name(ops[oi]));
                efla_tensor_release(r);
                CHECK(check_reduce(ops[oi], 0, t, mask, keep) == 0, "int64 %s mask %u keep %d", efla_reduce_name(ops[oi]),
                      mask, keep);
            }
    for (int d = 0; d < 3; d++) {
        CHECK(check_reduce(EFLA_ARGMAX, 0, t, 1u << d, 0) == 0, "int64 argmax dim %d (ties: first)", d);
        CHECK(check_reduce(EFLA_ARGMIN, 0, t, 1u << d, 1) == 0, "int64 argmin dim %d (ties: first)", d);
    }
    /* exact beyond 2^53 */
    int64_t big[2] = { (1ll << 60) + 1, 3 }, two = 2;
    efla_tensor *b = MUST(efla_from_buffer(1, &two, EFLA_INT64, big, sizeof big));
    efla_tensor *s = MUST(efla_reduce(EFLA_SUM, b, 0, NULL, 0, 0));
    CHECK(*(int64_t *)efla_tensor_data(s) == (1ll << 60) + 4, "int64 sum is exact");
    efla_tensor_release(b); efla_tensor_release(s);
    /* float ties: argmax picks the first */
    double tv[6] = { 1, 3, 3, 0, 3, 2 };
    int64_t six = 6;
    efla_tensor *f = MUST(efla_from_buffer(1, &six, EFLA_FLOAT64, tv, sizeof tv));
    efla_tensor *am = MUST(efla_reduce(EFLA_ARGMAX, f, 0, NULL, 0, 0));
    CHECK(*(int64_t *)efla_tensor_data(am) == 1, "argmax ties -> first");
    efla_tensor_release(f); efla_tensor_release(am);
    efla_tensor_release(t);
}

/* Large inputs: the threaded paths (per-output, split single output, column sums). */
static void test_large(void) {
    int64_t sh[2] = { 300, 257 }, big = 1 << 20;
    for (int di = 0; di < 2; di++) {
        efla_dtype dt = di ? EFLA_FLOAT64 : EFLA_FLOAT32;
        double tol = di ? 1e-11 : 1e-5;
        efla_tensor *t = rand_tensor(2, sh, dt, -1, 1);
        const efla_reduce_op ops[] = { EFLA_SUM, EFLA_MEAN, EFLA_MAX, EFLA_MIN, EFLA_LOGSUMEXP, EFLA_VAR, EFLA_NORM };
        const double ps[] = { 0, 0, 0, 0, 0, 1, 2 };
        for (int oi = 0; oi < 7; oi++)
            for (uint32_t mask = 1; mask < 4; mask++) {
                double e = check_reduce(ops[oi], ps[oi], t, mask, 0);
                CHECK(e <= tol, "large %s %s mask %u: error %g", efla_dtype_name(dt), efla_reduce_name(ops[oi]), mask, e);
            }
        CHECK(check_reduce(EFLA_ARGMAX, 0, t, 1, 0) == 0, "large argmax dim 0");
        CHECK(check_reduce(EFLA_ARGMIN, 0, t, 2, 1) == 0, "large argmin dim 1");
        efla_tensor *tt = MUST(efla_transpose(t, 0, 1));
        CHECK(check_reduce(EFLA_SUM, 0, tt, 2, 0) <= tol, "large transposed sum dim 1");
        CHECK(check_reduce(EFLA_VAR, 1, tt, 1, 1) <= tol, "large transposed var dim 0");
        efla_tensor_release(tt);
        efla_tensor_release(t);
        /* a long 1-d sum: accurate even for float32 (double accumulation) */
        efla_tensor *v = rand_tensor(1, &big, dt, 0, 1);
        CHECK(check_reduce(EFLA_SUM, 0, v, 1, 0) <= tol, "sum of 2^20 %s", efla_dtype_name(dt));
        CHECK(check_reduce(EFLA_MAX, 0, v, 1, 0) == 0, "max of 2^20 %s", efla_dtype_name(dt));
        CHECK(check_reduce(EFLA_ARGMAX, 0, v, 1, 0) == 0, "argmax of 2^20 %s", efla_dtype_name(dt));
        CHECK(check_reduce(EFLA_VAR, 1, v, 1, 0) <= tol, "var of 2^20 %s", efla_dtype_name(dt));
        CHECK(check_reduce(EFLA_LOGSUMEXP, 0, v, 1, 0) <= tol, "logsumexp of 2^20 %s", efla_dtype_name(dt));
        efla_tensor_release(v);
    }
    /* thread count does not change a result beyond rounding */
    int64_t n = 1 << 18;
    efla_tensor *v = rand_tensor(1, &n, EFLA_FLOAT32, -1, 1);
    int saved = efla_num_threads();
    efla_set_num_threads(1);
    double e1 = check_reduce(EFLA_SUM, 0, v, 1, 0);
    efla_set_num_threads(saved);
    CHECK(e1 <= 1e-5, "single-thread sum: %g", e1);
    efla_tensor_release(v);
}

static void test_special_values(void) {
    /* logsumexp with -inf entries, NaN propagation in max, empty reductions */
    double x[4] = { -INFINITY, 0, -INFINITY, 1 }, y[3] = { 1, NAN, 2 };
    int64_t four = 4, three = 3, zero = 0, z2[2] = { 0, 3 };
    efla_tensor *a = MUST(efla_from_buffer(1, &four, EFLA_FLOAT64, x, sizeof x));
    efla_tensor *r = MUST(efla_reduce(EFLA_LOGSUMEXP, a, 0, NULL, 0, 0));
    double v;
    MUST_OK(efla_item(r, &v));
    CHECK(fabs(v - log(1 + exp(1))) < 1e-14, "logsumexp with -inf: %g", v);
    efla_tensor_release(r);
    efla_tensor *b = MUST(efla_from_buffer(1, &three, EFLA_FLOAT64, y, sizeof y));
    r = MUST(efla_reduce(EFLA_MAX, b, 0, NULL, 0, 0));
    MUST_OK(efla_item(r, &v));
    CHECK(isnan(v), "max propagates NaN");
    efla_tensor_release(r);
    r = MUST(efla_reduce(EFLA_ARGMAX, b, 0, NULL, 0, 0));
    CHECK(*(int64_t *)efla_tensor_data(r) == 1, "argmax points at the NaN");
    efla_tensor_release(r);
    efla_tensor *e = MUST(efla_empty(1, &zero, EFLA_FLOAT32, EFLA_DEVICE_CPU));
    r = MUST(efla_reduce(EFLA_SUM, e, 0, NULL, 0, 0));
    MUST_OK(efla_item(r, &v));
    CHECK(v == 0, "sum of nothing is 0");
    efla_tensor_release(r);
    r = MUST(efla_reduce(EFLA_PROD, e, 0, NULL, 0, 0));
    MUST_OK(efla_item(r, &v));
    CHECK(v == 1, "prod of nothing is 1");
    efla_tensor_release(r);
    CHECK_ERROR(efla_reduce(EFLA_MAX, e, 0, NULL, 0, 0) == NULL, "zero elements");
    efla_tensor *e2 = MUST(efla_empty(2, z2, EFLA_FLOAT32, EFLA_DEVICE_CPU));
    int d1 = 0;
    r = MUST(efla_reduce(EFLA_SUM, e2, 1, &d1, 0, 0));
    CHECK(efla_tensor_ndim(r) == 1 && efla_tensor_size(r, 0) == 3, "sum over an empty dim has shape [3]");
    double s0;
    int64_t i0 = 0;
    MUST_OK(efla_get(r, &i0, &s0));
    CHECK(s0 == 0, "...filled with zeros");
    efla_tensor_release(r); efla_tensor_release(e2);
    efla_tensor_release(a); efla_tensor_release(b); efla_tensor_release(e);
}

/* bfloat16 in, bfloat16 out (accumulated in double, rounded once); bool sums count. */
static void test_bf16_bool(void) {
    int64_t sh[3] = { 3, 4, 5 };
    efla_tensor *f = rand_tensor(3, sh, EFLA_FLOAT32, 0.2, 1.5);
    efla_tensor *h = MUST(efla_to(f, EFLA_BFLOAT16, EFLA_DEVICE_CPU));
    const efla_reduce_op ops[] = { EFLA_SUM, EFLA_MEAN, EFLA_MAX, EFLA_MIN, EFLA_PROD, EFLA_LOGSUMEXP, EFLA_VAR, EFLA_NORM };
    const double ps[] = { 0, 0, 0, 0, 0, 0, 1, 2 };
    for (int oi = 0; oi < 8; oi++)
        for (uint32_t mask = 0; mask < 8; mask++) {
            double e = check_reduce(ops[oi], ps[oi], h, mask, mask & 1);
            CHECK(e <= 8e-3, "bfloat16 %s mask %u: error %g", efla_reduce_name(ops[oi]), mask, e);
        }
    CHECK(check_reduce(EFLA_ARGMAX, 0, h, 2, 0) == 0, "bfloat16 argmax");
    efla_tensor *bo = MUST(efla_zeros(2, sh, EFLA_BOOL, EFLA_DEVICE_CPU));
    int64_t i1[2] = { 0, 1 }, i2[2] = { 2, 3 }, i3[2] = { 2, 0 };
    MUST_OK(efla_set(bo, i1, 1)); MUST_OK(efla_set(bo, i2, 1)); MUST_OK(efla_set(bo, i3, 1));
    efla_tensor *c = MUST(efla_reduce(EFLA_SUM, bo, 0, NULL, 0, 0));
    CHECK(efla_tensor_dtype(c) == EFLA_INT64 && *(int64_t *)efla_tensor_data(c) == 3, "sum of bool counts trues");
    efla_tensor *m = MUST(efla_reduce(EFLA_MAX, bo, 1, (int[]){ 1 }, 0, 0));
    double v[3];
    for (int64_t i = 0; i < 3; i++) MUST_OK(efla_get(m, &i, &v[i]));
    CHECK(efla_tensor_dtype(m) == EFLA_BOOL && v[0] == 1 && v[1] == 0 && v[2] == 1, "max of bool is any()");
    efla_tensor_release(c); efla_tensor_release(m); efla_tensor_release(bo);
    efla_tensor_release(f); efla_tensor_release(h);
}

static void test_errors(void) {
    int64_t sh[3] = { 2, 3, 4 };
    efla_tensor *t = rand_tensor(3, sh, EFLA_FLOAT32, 0, 1);
    efla_tensor *it = rand_tensor(3, sh, EFLA_INT64, 0, 5);
    int bad[1] = { 3 }, two[2] = { 0, 1 }, dup[2] = { 1, -2 };
    CHECK_ERROR(efla_reduce(EFLA_SUM, t, 1, bad, 0, 0) == NULL, "dim 3 is out of range");
    CHECK_ERROR(efla_reduce(EFLA_SUM, t, 2, dup, 0, 0) == NULL, "appears twice");
    CHECK_ERROR(efla_reduce(EFLA_ARGMAX, t, 2, two, 0, 0) == NULL, "argmax: takes exactly one dim");
    CHECK_ERROR(efla_reduce(EFLA_MEAN, it, 0, NULL, 0, 0) == NULL, "mean: needs a floating-point tensor, got int64");
    CHECK_ERROR(efla_reduce((efla_reduce_op)99, t, 0, NULL, 0, 0) == NULL, "unknown reduction");
    /* argmax without dims: index into the flattened tensor */
    efla_tensor *am = MUST(efla_reduce(EFLA_ARGMAX, t, 0, NULL, 0, 0));
    double *x = to_doubles(t);
    int64_t best = 0;
    for (int i = 1; i < 24; i++) if (x[i] > x[best]) best = i;
    CHECK(efla_tensor_ndim(am) == 0 && *(int64_t *)efla_tensor_data(am) == best, "flattened argmax");
    free(x);
    efla_tensor_release(am);
    CHECK(!strcmp(efla_reduce_name(EFLA_LOGSUMEXP), "logsumexp") && !strcmp(efla_reduce_name(EFLA_ARGMIN), "argmin"),
          "reduce names");
    efla_tensor_release(t); efla_tensor_release(it);
}

/* ---- gradients ---------------------------------------------------------------------------------- */
typedef struct { efla_reduce_op op; double param; int k, dims[EFLA_MAX_DIMS], keepdim; } reduce_ctx;
static efla_tensor *f_reduce(efla_tensor *const *in, const void *ctx) {
    const reduce_ctx *c = ctx;
    return efla_reduce(c->op, in[0], c->k, c->dims, c->keepdim, c->param);
}
static efla_tensor *rand_weights(int nd, const int64_t *shape) { return rand_tensor(nd, shape, EFLA_FLOAT64, -1, 1); }

/* d/dx of L = sum(reduce(x) * w) by autograd vs central differences, float64 (x requires grad). */
static double gradcheck(efla_reduce_op op, double param, efla_tensor *x, uint32_t mask, int keepdim) {
    reduce_ctx c = { .op = op, .param = param, .keepdim = keepdim };
    for (int d = 0; d < efla_tensor_ndim(x); d++) if (mask & (1u << d)) c.dims[c.k++] = d;
    return fd_gradcheck(f_reduce, 1, &x, &c, rand_weights);
}

static void test_gradients(void) {
    int64_t sh[3] = { 3, 4, 2 };
    efla_tensor *x = rand_tensor(3, sh, EFLA_FLOAT64, 0.3, 1.7);
    MUST_OK(efla_set_requires_grad(x, 1));
    for (int oi = 0; oi < N_FLOAT_OPS; oi++) {
        if (float_ops[oi] == EFLA_NORM && float_params[oi] == 0) continue;   /* piecewise constant */
        for (uint32_t mask = 0; mask < 8; mask++) {
            double e = gradcheck(float_ops[oi], float_params[oi], x, mask, mask & 1);
            CHECK(e < 1e-6, "gradient of %s(p=%g) mask %u: error %g", efla_reduce_name(float_ops[oi]), float_params[oi],
                  mask, e);
        }
    }
    /* signed values through a transposed view */
    efla_tensor *s = rand_tensor(3, sh, EFLA_FLOAT64, -1.5, 1.5);
    MUST_OK(efla_set_requires_grad(s, 1));
    const efla_reduce_op ops[] = { EFLA_SUM, EFLA_MAX, EFLA_MIN, EFLA_PROD, EFLA_VAR, EFLA_NORM, EFLA_NORM };
    const double ps[] = { 0, 0, 0, 0, 1, 1, INFINITY };
    for (int oi = 0; oi < 7; oi++) {
        double e = gradcheck(ops[oi], ps[oi], s, 5, 0);
        CHECK(e < 1e-6, "signed gradient of %s(p=%g): error %g", efla_reduce_name(ops[oi]), ps[oi], e);
    }
    efla_tensor_release(s);
    efla_tensor_release(x);

    /* prod with zeros: one zero -> the product of the others there; two -> 0; no NaN */
    double v[6] = { 2, 0, 3, 0, 0, 5 };
    int64_t s23[2] = { 2, 3 };
    efla_tensor *z = MUST(efla_from_buffer(2, s23, EFLA_FLOAT64, v, sizeof v));
    MUST_OK(efla_set_requires_grad(z, 1));
    int d1 = 1;
    efla_tensor *p = MUST(efla_reduce(EFLA_PROD, z, 1, &d1, 0, 0));
    efla_tensor *ones = MUST(efla_ones(1, s23, EFLA_FLOAT64, EFLA_DEVICE_CPU));
    MUST_OK(efla_backward(p, ones, 0));
    efla_tensor *g = MUST(efla_grad(z));
    double *gv = to_doubles(g), want[6] = { 0, 6, 0, 0, 0, 0 };
    int ok = 1;
    for (int i = 0; i < 6; i++) ok &= gv[i] == want[i];
    CHECK(ok, "prod grad with zeros: %g %g %g / %g %g %g", gv[0], gv[1], gv[2], gv[3], gv[4], gv[5]);
    free(gv);
    efla_tensor_release(g); efla_tensor_release(p); efla_tensor_release(ones); efla_tensor_release(z);

    /* 2-norm of zeros: gradient 0, not NaN */
    efla_tensor *zz = MUST(efla_zeros(2, s23, EFLA_FLOAT64, EFLA_DEVICE_CPU));
    MUST_OK(efla_set_requires_grad(zz, 1));
    efla_tensor *nrm = MUST(efla_reduce(EFLA_NORM, zz, 0, NULL, 0, 2));
    MUST_OK(efla_backward(nrm, NULL, 0));
    g = MUST(efla_grad(zz));
    gv = to_doubles(g);
    ok = 1;
    for (int i = 0; i < 6; i++) ok &= gv[i] == 0;
    CHECK(ok, "norm(0) gradient is 0");
    free(gv);
    efla_tensor_release(g); efla_tensor_release(nrm); efla_tensor_release(zz);

    /* max ties: the whole gradient goes to the first maximum */
    double tv[4] = { 1, 4, 4, 2 };
    int64_t four = 4;
    efla_tensor *t = MUST(efla_from_buffer(1, &four, EFLA_FLOAT64, tv, sizeof tv));
    MUST_OK(efla_set_requires_grad(t, 1));
    efla_tensor *m = MUST(efla_reduce(EFLA_MAX, t, 0, NULL, 0, 0));
    MUST_OK(efla_backward(m, NULL, 0));
    g = MUST(efla_grad(t));
    gv = to_doubles(g);
    CHECK(gv[0] == 0 && gv[1] == 1 && gv[2] == 0 && gv[3] == 0, "max grad goes to the first tie");
    free(gv);
    efla_tensor_release(g); efla_tensor_release(m); efla_tensor_release(t);
}

int main(int argc, char **argv) {
    TEST_ARGS(argc, argv);
    int64_t live0 = efla_live_tensors();
    RUN(test_forward);
    RUN(test_int64);
    RUN(test_large);
    RUN(test_special_values);
    RUN(test_bf16_bool);
    RUN(test_errors);
    RUN(test_gradients);
    CHECK(efla_live_tensors() == live0, "no tensor leaks (%lld live)", (long long)(efla_live_tensors() - live0));
    TEST_SUMMARY();
}

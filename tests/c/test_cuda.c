/* test_cuda.c: the CUDA backend against the CPU backend, op by op, through the public API:
 * the same random inputs go to both devices (including broadcast and non-contiguous views
 * and every supported dtype) and the results must agree (float32 1e-5, float64 1e-12,
 * bfloat16 1e-2, integers exactly). Also: finite-difference gradient checks in float64 on
 * the device, the delta rule (forward, backward, chunk-state layout) against the CPU,
 * random numbers identical to the CPU's, the caching allocator's statistics, and an
 * out-of-memory allocation that fails cleanly and leaves the process usable.
 *
 * On a machine without a CUDA device (or a build without the backend) it prints
 * "skipped: no CUDA device" and "0 passed, 0 failed". */
#include "test_util.h"
#include "backend.h"
#include <stdint.h>
#include <string.h>

#define CPU EFLA_DEVICE_CPU
#define GPU EFLA_DEVICE_CUDA0

/* ---- helpers ---------------------------------------------------------------------------------- */
static double tol_of(efla_dtype dt) {
    switch (dt) {
    case EFLA_FLOAT32: return 1e-5;
    case EFLA_FLOAT64: return 1e-12;
    case EFLA_BFLOAT16: return 1e-2;
    default: return 0;
    }
}

static const efla_dtype FLOATS[3] = { EFLA_FLOAT32, EFLA_FLOAT64, EFLA_BFLOAT16 };

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

/* A non-contiguous view: transpose of a [n1, n0] tensor, so it reads as [n0, n1]. */
static efla_tensor *transposed(efla_tensor *t_n1_n0) {
    efla_tensor *v = MUST(efla_transpose(t_n1_n0, 0, 1));
    return v;
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

/* ---- copies and casts ------------------------------------------------------------------------ */
static void test_copy_cast(void) {
    const efla_dtype all[6] = { EFLA_FLOAT32, EFLA_FLOAT64, EFLA_BFLOAT16, EFLA_INT64, EFLA_UINT8, EFLA_BOOL };
    int64_t s[3] = { 5, 4, 3 };
    for (int i = 0; i < 6; i++) {
        efla_tensor *c = rnd(3, s, all[i], 3.0);
        efla_tensor *g = gpu(c);
        /* round trip */
        efla_tensor *back = MUST(efla_to(g, all[i], CPU));
        CHECK(max_rel_diff(back, c) == 0, "round trip %s", efla_dtype_name(all[i]));
        efla_tensor_release(back);
        /* casts of a permuted (strided) view */
        int perm[3] = { 2, 0, 1 };
        efla_tensor *cv = MUST(efla_permute(c, 3, perm)), *gv = MUST(efla_permute(g, 3, perm));
        for (int j = 0; j < 6; j++) {
            char what[96];
            snprintf(what, sizeof what, "cast %s -> %s (permuted)", efla_dtype_name(all[i]), efla_dtype_name(all[j]));
            expect_close(what, efla_to(gv, all[j], GPU), efla_to(cv, all[j], CPU), 0);
        }
        /* contiguous() of a narrowed transposed view */
        efla_tensor *cn = MUST(efla_narrow(cv, 2, 1, 3)), *gn = MUST(efla_narrow(gv, 2, 1, 3));
        expect_close("contiguous(narrow(permute))", efla_contiguous(gn), efla_contiguous(cn), 0);
        /* copy_ with broadcast into a strided destination */
        efla_tensor *dst_c = MUST(efla_zeros(3, s, all[i], CPU)), *dst_g = MUST(efla_zeros(3, s, all[i], GPU));
        int64_t rs[1] = { 3 };
        efla_tensor *row = rnd(1, rs, all[i], 2.0), *row_g = gpu(row);
        efla_tensor *tc = MUST(efla_transpose(dst_c, 0, 1)), *tg = MUST(efla_transpose(dst_g, 0, 1));
        MUST_OK(efla_copy_(tc, row));
        MUST_OK(efla_copy_(tg, row_g));
        expect_close("copy_ broadcast into a transposed view", dst_g, dst_c, 0);
        efla_tensor_release(tc); efla_tensor_release(tg); efla_tensor_release(row); efla_tensor_release(row_g);
        efla_tensor_release(cn); efla_tensor_release(gn);
        efla_tensor_release(cv); efla_tensor_release(gv);
        efla_tensor_release(c); efla_tensor_release(g);
        /* fill */
        expect_close("full", efla_full(3, s, -2.75, all[i], GPU), efla_full(3, s, -2.75, all[i], CPU), 0);
    }
    /* a large contiguous copy (the memcpy path) and the 8-dim strided path */
    int64_t big[1] = { 1 << 20 };
    efla_tensor *c = rnd(1, big, EFLA_FLOAT32, 1), *g = gpu(c);
    expect_close("clone 1M float32", efla_clone(g), efla_clone(c), 0);
    efla_tensor_release(c); efla_tensor_release(g);
    int64_t s8[8] = { 2, 3, 2, 2, 3, 2, 2, 3 };
    c = rnd(8, s8, EFLA_FLOAT64, 1);
    g = gpu(c);
    int perm8[8] = { 7, 6, 5, 4, 3, 2, 1, 0 };
    efla_tensor *cv = MUST(efla_permute(c, 8, perm8)), *gv = MUST(efla_permute(g, 8, perm8));
    expect_close("8-dim permuted cast to float32", efla_to(gv, EFLA_FLOAT32, GPU), efla_to(cv, EFLA_FLOAT32, CPU), 0);
    efla_tensor_release(cv); efla_tensor_release(gv); efla_tensor_release(c); efla_tensor_release(g);
}

/* ---- elementwise --------------------------------------------------------------------------------- */
static void test_unary(void) {
    int64_t s[2] = { 37, 29 };
    for (int di = 0; di < 3; di++) {
        efla_dtype dt = FLOATS[di];
        efla_tensor *c = rnd(2, s, dt, 2.0), *g = gpu(c);
        efla_tensor *cp = MUST(efla_unary(EFLA_ABS, c)), *gp = MUST(efla_unary(EFLA_ABS, g));
        efla_tensor *cpos = MUST(efla_binary_scalar(EFLA_ADD, cp, 0.1, 0)), *gpos = MUST(efla_binary_scalar(EFLA_ADD, gp, 0.1, 0));
        efla_tensor *ct = transposed(cpos), *gt = transposed(gpos);   /* strided inputs */
        for (int op = 0; op < EFLA_UNARY_COUNT; op++) {
            bool pos = op == EFLA_LOG || op == EFLA_LOG1P || op == EFLA_SQRT || op == EFLA_RSQRT || op == EFLA_RECIPROCAL;
            char what[96];
            snprintf(what, sizeof what, "unary %s %s", efla_unary_name(op), efla_dtype_name(dt));
            expect_close(what, efla_unary(op, pos ? gt : g), efla_unary(op, pos ? ct : c), tol_of(dt));
        }
        efla_tensor_release(ct); efla_tensor_release(gt);
        efla_tensor_release(cp); efla_tensor_release(gp); efla_tensor_release(cpos); efla_tensor_release(gpos);
        efla_tensor_release(c); efla_tensor_release(g);
    }
    efla_tensor *c = rnd(2, s, EFLA_INT64, 1), *g = gpu(c);
    const efla_unary_op iops[5] = { EFLA_NEG, EFLA_ABS, EFLA_SIGN, EFLA_SQUARE, EFLA_RELU };
    for (int i = 0; i < 5; i++) {
        char what[64];
        snprintf(what, sizeof what, "unary %s int64", efla_unary_name(iops[i]));
        expect_close(what, efla_unary(iops[i], g), efla_unary(iops[i], c), 0);
    }
    efla_tensor_release(c); efla_tensor_release(g);
}

static void test_binary(void) {
    const efla_dtype dts[4] = { EFLA_FLOAT32, EFLA_FLOAT64, EFLA_BFLOAT16, EFLA_INT64 };
    for (int di = 0; di < 4; di++) {
        efla_dtype dt = dts[di];
        /* a: [3,1,5] from a transposed [5,3]; b: [4,5] narrowed from [4,8] */
        int64_t sa[2] = { 5, 3 }, sb[2] = { 4, 8 };
        efla_tensor *ca0 = rnd(2, sa, dt, 2), *cb0 = rnd(2, sb, dt, 2);
        efla_tensor *ga0 = gpu(ca0), *gb0 = gpu(cb0);
        efla_tensor *cat_ = transposed(ca0), *gat = transposed(ga0);
        efla_tensor *ca = MUST(efla_unsqueeze(cat_, 1)), *ga = MUST(efla_unsqueeze(gat, 1));
        efla_tensor *cb = MUST(efla_narrow(cb0, 1, 2, 5)), *gb = MUST(efla_narrow(gb0, 1, 2, 5));
        for (int op = 0; op < EFLA_BINARY_COUNT; op++) {
            char what[96];
            snprintf(what, sizeof what, "binary %s %s (broadcast, strided)", efla_binary_name(op), efla_dtype_name(dt));
            efla_tensor *x = ca, *y = cb, *gx = ga, *gy = gb, *tmp[2] = { NULL, NULL };
            if (op == EFLA_POW && dt != EFLA_INT64) {   /* positive bases */
                tmp[0] = MUST(efla_unary(EFLA_ABS, ca));
                tmp[1] = MUST(efla_unary(EFLA_ABS, ga));
                x = tmp[0]; gx = tmp[1];
            }
            double tol = op == EFLA_DIV && dt == EFLA_INT64 ? 1e-5 : tol_of(dt);
            expect_close(what, efla_binary(op, gx, gy), efla_binary(op, x, y), tol);
            efla_tensor_release(tmp[0]); efla_tensor_release(tmp[1]);
        }
        /* scalar operand and in-place */
        expect_close("binary_scalar sub (scalar first)", efla_binary_scalar(EFLA_SUB, ga, 1.5, 1),
                     efla_binary_scalar(EFLA_SUB, ca, 1.5, 1), tol_of(dt) ? tol_of(dt) : 1e-5);
        efla_tensor *cc = MUST(efla_clone(cb)), *gc = MUST(efla_clone(gb));
        MUST_OK(efla_binary_(EFLA_MUL, cc, cb));
        MUST_OK(efla_binary_(EFLA_MUL, gc, gb));
        expect_close("binary_ mul in place", gc, cc, tol_of(dt));
        efla_tensor_release(ca0); efla_tensor_release(cb0); efla_tensor_release(ga0); efla_tensor_release(gb0);
        efla_tensor_release(cat_); efla_tensor_release(gat); efla_tensor_release(ca); efla_tensor_release(ga);
        efla_tensor_release(cb); efla_tensor_release(gb);
    }
}

static void test_misc_elementwise(void) {
    int64_t s[3] = { 4, 6, 7 };
    for (int di = 0; di < 4; di++) {
        efla_dtype dt = di < 3 ? FLOATS[di] : EFLA_INT64;
        efla_tensor *c = rnd(3, s, dt, 3), *g = gpu(c);
        char what[96];
        snprintf(what, sizeof what, "clamp %s", efla_dtype_name(dt));
        expect_close(what, efla_clamp(g, -1.5, 2.25), efla_clamp(c, -1.5, 2.25), tol_of(dt));
        expect_close("clamp lower only", efla_clamp(g, -0.5, INFINITY), efla_clamp(c, -0.5, INFINITY), tol_of(dt));
        for (int64_t k = -2; k <= 2; k += 2) {
            snprintf(what, sizeof what, "tril k=%lld %s", (long long)k, efla_dtype_name(dt));
            expect_close(what, efla_tril(g, k), efla_tril(c, k), 0);
            snprintf(what, sizeof what, "triu k=%lld %s", (long long)k, efla_dtype_name(dt));
            expect_close(what, efla_triu(g, k), efla_triu(c, k), 0);
        }
        /* where with a broadcast condition [6,1] and a strided operand */
        int64_t cs[2] = { 6, 1 };
        efla_tensor *cond = rnd(2, cs, EFLA_BOOL, 1), *gcond = gpu(cond);
        efla_tensor *cn = MUST(efla_narrow(c, 2, 1, 1)), *gn = MUST(efla_narrow(g, 2, 1, 1));
        efla_tensor *cneg = MUST(efla_unary(EFLA_NEG, c)), *gneg = MUST(efla_unary(EFLA_NEG, g));
        expect_close("where", efla_where(gcond, gn, gneg), efla_where(cond, cn, cneg), 0);
        expect_close("masked_fill", efla_masked_fill(g, gcond, 7), efla_masked_fill(c, cond, 7), 0);
        efla_tensor_release(cond); efla_tensor_release(gcond); efla_tensor_release(cn); efla_tensor_release(gn);
        efla_tensor_release(cneg); efla_tensor_release(gneg);
        efla_tensor_release(c); efla_tensor_release(g);
        snprintf(what, sizeof what, "arange %s", efla_dtype_name(dt));
        expect_close(what, efla_arange(-3, 40, 0.75, dt, GPU), efla_arange(-3, 40, 0.75, dt, CPU), tol_of(dt));
        if (dt != EFLA_INT64)
            expect_close("linspace", efla_linspace(-1, 2, 101, dt, GPU), efla_linspace(-1, 2, 101, dt, CPU), tol_of(dt));
    }
}

/* ---- reductions ---------------------------------------------------------------------------------- */
static void reduce_case(efla_reduce_op op, efla_tensor *c, efla_tensor *g, int nd, const int *dims, int keep,
                        double param, const char *label) {
    char what[128];
    snprintf(what, sizeof what, "reduce %s %s %s dims=%d keep=%d p=%g", efla_reduce_name(op),
             efla_dtype_name(efla_tensor_dtype(c)), label, nd ? dims[0] : -99, keep, param);
    efla_dtype dt = efla_tensor_dtype(c);
    double tol = tol_of(dt);
    if (!efla_dtype_is_floating(dt) && (op == EFLA_MEAN)) return;
    expect_close(what, efla_reduce(op, g, nd, dims, keep, param), efla_reduce(op, c, nd, dims, keep, param), tol);
}

static void test_reduce(void) {
    int64_t s[3] = { 4, 6, 5 };
    const int d1[1] = { 1 }, d02[2] = { 0, 2 }, dm1[1] = { -1 }, d0[1] = { 0 };
    for (int di = 0; di < 3; di++) {
        efla_tensor *c0 = rnd(3, s, FLOATS[di], 1.5), *g0 = gpu(c0);
        int perm[3] = { 1, 2, 0 };
        efla_tensor *cp = MUST(efla_permute(c0, 3, perm)), *gp = MUST(efla_permute(g0, 3, perm));
        for (int v = 0; v < 2; v++) {
            efla_tensor *c = v ? cp : c0, *g = v ? gp : g0;
            const char *label = v ? "permuted" : "contiguous";
            for (int op = EFLA_SUM; op <= EFLA_NORM; op++) {
                double params[4] = { 0, 0, 0, 0 };
                int np = 1;
                if (op == EFLA_VAR) { params[0] = 1; params[1] = 0; np = 2; }
                if (op == EFLA_NORM) { params[0] = 2; params[1] = 1; params[2] = 3; params[3] = INFINITY; np = 4; }
                for (int k = 0; k < np; k++) {
                    reduce_case(op, c, g, 0, NULL, 0, params[k], label);
                    reduce_case(op, c, g, 1, d1, 1, params[k], label);
                    reduce_case(op, c, g, 2, d02, 0, params[k], label);
                    reduce_case(op, c, g, 1, dm1, 0, params[k], label);
                }
            }
            for (int op = EFLA_ARGMAX; op <= EFLA_ARGMIN; op++) {
                reduce_case(op, c, g, 1, d1, 0, 0, label);
                reduce_case(op, c, g, 1, dm1, 1, 0, label);
            }
        }
        efla_tensor_release(cp); efla_tensor_release(gp); efla_tensor_release(c0); efla_tensor_release(g0);
    }
    /* integers */
    efla_tensor *c = rnd(3, s, EFLA_INT64, 1), *g = gpu(c);
    const efla_reduce_op iops[6] = { EFLA_SUM, EFLA_PROD, EFLA_MAX, EFLA_MIN, EFLA_ARGMAX, EFLA_ARGMIN };
    for (int i = 0; i < 6; i++) {
        reduce_case(iops[i], c, g, 1, d1, 0, 0, "int");
        if (i < 4) reduce_case(iops[i], c, g, 0, NULL, 0, 0, "int");
    }
    efla_tensor_release(c); efla_tensor_release(g);
    /* ties: argmax takes the first */
    int64_t ts[1] = { 7 };
    efla_tensor *tc = MUST(efla_zeros(1, ts, EFLA_FLOAT32, GPU));
    int64_t i3[1] = { 3 }, i5[1] = { 5 };
    MUST_OK(efla_set(tc, i3, 2));
    MUST_OK(efla_set(tc, i5, 2));
    efla_tensor *am = MUST(efla_reduce(EFLA_ARGMAX, tc, 1, d0, 0, 0));
    double idx = -1;
    MUST_OK(efla_item(am, &idx));
    CHECK(idx == 3, "argmax with ties gives the first index, got %g", idx);
    efla_tensor_release(am); efla_tensor_release(tc);
    /* the long-reduction paths: one huge sum (split over blocks), long rows, columns */
    int64_t big[1] = { (1 << 20) + 17 };
    c = rnd(1, big, EFLA_FLOAT32, 1); g = gpu(c);
    const efla_reduce_op bops[5] = { EFLA_SUM, EFLA_MEAN, EFLA_MAX, EFLA_VAR, EFLA_LOGSUMEXP };
    for (int i = 0; i < 5; i++) reduce_case(bops[i], c, g, 0, NULL, 0, 1, "1M elements");
    reduce_case(EFLA_ARGMIN, c, g, 1, d0, 0, 0, "1M elements");
    efla_tensor_release(c); efla_tensor_release(g);
    int64_t rows[2] = { 8, 30000 }, cols[2] = { 5000, 96 };
    c = rnd(2, rows, EFLA_FLOAT32, 1); g = gpu(c);
    reduce_case(EFLA_SUM, c, g, 1, dm1, 0, 0, "long rows");
    reduce_case(EFLA_NORM, c, g, 1, dm1, 0, 2, "long rows");
    efla_tensor_release(c); efla_tensor_release(g);
    c = rnd(2, cols, EFLA_FLOAT32, 1); g = gpu(c);
    reduce_case(EFLA_SUM, c, g, 1, d0, 0, 0, "columns");
    reduce_case(EFLA_MAX, c, g, 1, d0, 1, 0, "columns");
    reduce_case(EFLA_VAR, c, g, 1, d0, 0, 1, "columns");
    efla_tensor_release(c); efla_tensor_release(g);
}

/* ---- linear algebra ----------------------------------------------------------------------------- */
static void mm_case(const char *what, efla_tensor *ca, efla_tensor *cb, efla_dtype dt) {
    efla_tensor *ga = gpu(ca), *gb = gpu(cb);
    expect_close(what, efla_matmul(ga, gb), efla_matmul(ca, cb), dt == EFLA_BFLOAT16 ? 2e-2 : dt == EFLA_FLOAT64 ? 1e-12 : dt == EFLA_INT64 ? 0 : 2e-5);
    efla_tensor_release(ga); efla_tensor_release(gb);
}

static void test_matmul(void) {
    const efla_dtype dts[4] = { EFLA_FLOAT32, EFLA_FLOAT64, EFLA_BFLOAT16, EFLA_INT64 };
    for (int di = 0; di < 4; di++) {
        efla_dtype dt = dts[di];
        char what[96];
        int64_t a2[2] = { 33, 70 }, b2[2] = { 70, 17 };
        efla_tensor *a = rnd(2, a2, dt, 1), *b = rnd(2, b2, dt, 1);
        snprintf(what, sizeof what, "matmul 2-d %s", efla_dtype_name(dt));
        mm_case(what, a, b, dt);
        /* transposed operands (the cuBLAS transpose flags) */
        efla_tensor *at = MUST(efla_transpose(b, 0, 1)), *bt = MUST(efla_transpose(a, 0, 1));
        snprintf(what, sizeof what, "matmul transposed operands %s", efla_dtype_name(dt));
        mm_case(what, at, bt, dt);
        /* a column-sliced operand (neither stride 1 in a useful way after narrow of a transposed) */
        efla_tensor *an = MUST(efla_narrow(a, 1, 3, 40)), *bn = MUST(efla_narrow(b, 0, 5, 40));
        snprintf(what, sizeof what, "matmul narrowed operands %s", efla_dtype_name(dt));
        mm_case(what, an, bn, dt);
        /* a broadcast (stride-0) operand: cuBLAS cannot read it in place, so it is copied */
        int64_t r1[2] = { 1, 70 }, ex[2] = { 33, 70 };
        efla_tensor *row = rnd(2, r1, dt, 1), *ae = MUST(efla_expand(row, 2, ex));
        snprintf(what, sizeof what, "matmul expanded operand %s", efla_dtype_name(dt));
        mm_case(what, ae, b, dt);
        efla_tensor_release(row); efla_tensor_release(ae);
        efla_tensor_release(at); efla_tensor_release(bt); efla_tensor_release(an); efla_tensor_release(bn);
        efla_tensor_release(a); efla_tensor_release(b);
        /* batched with broadcast batch dims */
        int64_t a4[4] = { 2, 1, 9, 12 }, b3[3] = { 3, 12, 7 };
        a = rnd(4, a4, dt, 1); b = rnd(3, b3, dt, 1);
        snprintf(what, sizeof what, "matmul batched broadcast %s", efla_dtype_name(dt));
        mm_case(what, a, b, dt);
        efla_tensor_release(a); efla_tensor_release(b);
        int64_t a3[3] = { 4, 6, 8 }, bw[2] = { 8, 5 };
        a = rnd(3, a3, dt, 1); b = rnd(2, bw, dt, 1);
        snprintf(what, sizeof what, "matmul [B,M,K] @ [K,N] %s", efla_dtype_name(dt));
        mm_case(what, a, b, dt);
        efla_tensor_release(a); efla_tensor_release(b);
        int64_t v1[1] = { 50 };
        a = rnd(1, v1, dt, 1); b = rnd(1, v1, dt, 1);
        snprintf(what, sizeof what, "matmul 1-d . 1-d %s", efla_dtype_name(dt));
        mm_case(what, a, b, dt);
        efla_tensor_release(a); efla_tensor_release(b);
    }
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
}

/* ---- nn ------------------------------------------------------------------------------------------------- */
/* forward, then backward of sum(out * w), on both devices; compares out and d/dx. */
typedef efla_tensor *(*unary_fn)(const efla_tensor *x, const void *ctx, int device);

static void fwd_bwd_case(const char *what, unary_fn fn, const void *ctx, efla_tensor *cx, double tol) {
    efla_tensor *gx = gpu(cx);
    efla_tensor *lc = leaf(cx), *lg = leaf(gx);
    efla_tensor *oc = fn(lc, ctx, CPU), *og = fn(lg, ctx, GPU);
    if (!oc || !og) {
        CHECK(0, "%s: forward failed", what);
    } else {
        int64_t s[EFLA_MAX_DIMS];
        for (int d = 0; d < efla_tensor_ndim(oc); d++) s[d] = efla_tensor_size(oc, d);
        efla_tensor *w = rnd(efla_tensor_ndim(oc), s, efla_tensor_dtype(oc), 1), *wg = gpu(w);
        efla_tensor *loss_c = weighted_sum(oc, w), *loss_g = weighted_sum(og, wg);
        char buf[128];
        snprintf(buf, sizeof buf, "%s forward", what);
        efla_tensor_retain(og); efla_tensor_retain(oc);
        expect_close(buf, og, oc, tol);
        if (loss_c && loss_g && !efla_backward(loss_c, NULL, 0) && !efla_backward(loss_g, NULL, 0)) {
            snprintf(buf, sizeof buf, "%s backward", what);
            expect_close(buf, efla_grad(lg), efla_grad(lc), tol);
        } else {
            CHECK(0, "%s: backward failed", what);
        }
        efla_tensor_release(w); efla_tensor_release(wg); efla_tensor_release(loss_c); efla_tensor_release(loss_g);
    }
    efla_tensor_release(oc); efla_tensor_release(og);
    efla_tensor_release(lc); efla_tensor_release(lg); efla_tensor_release(gx); efla_tensor_release(cx);
}

static efla_tensor *f_softmax(const efla_tensor *x, const void *ctx, int device) { return efla_softmax(x, *(const int *)ctx); }
static efla_tensor *f_log_softmax(const efla_tensor *x, const void *ctx, int device) { return efla_log_softmax(x, *(const int *)ctx); }

typedef struct { efla_tensor *w[2], *b[2]; int rms; } norm_ctx;
static efla_tensor *f_norm(const efla_tensor *x, const void *ctx, int device) {
    const norm_ctx *c = ctx;
    int k = device == GPU;
    return c->rms ? efla_rms_norm(x, c->w[k], 1e-5) : efla_layer_norm(x, c->w[k], c->b[k], 1e-5);
}

typedef struct { efla_tensor *target[2]; double smoothing; } ce_ctx;
static efla_tensor *f_ce(const efla_tensor *x, const void *ctx, int device) {
    const ce_ctx *c = ctx;
    return efla_cross_entropy(x, c->target[device == GPU], -100, c->smoothing);
}

static void test_nn(void) {
    for (int di = 0; di < 3; di++) {
        efla_dtype dt = FLOATS[di];
        double tol = tol_of(dt) < 1e-10 ? 1e-10 : tol_of(dt);
        int64_t s[3] = { 3, 7, 33 }, sl[2] = { 3, 2500 };
        int dlast = -1, d1 = 1;
        char what[96];
        snprintf(what, sizeof what, "softmax %s", efla_dtype_name(dt));
        fwd_bwd_case(what, f_softmax, &dlast, rnd(3, s, dt, 2), tol);
        snprintf(what, sizeof what, "softmax dim 1 %s", efla_dtype_name(dt));
        fwd_bwd_case(what, f_softmax, &d1, rnd(3, s, dt, 2), tol);
        snprintf(what, sizeof what, "log_softmax long rows %s", efla_dtype_name(dt));
        fwd_bwd_case(what, f_log_softmax, &dlast, rnd(2, sl, dt, 2), tol);
        for (int rms = 0; rms < 2; rms++) {
            for (int withw = 0; withw < 2; withw++) {
                int64_t D = withw ? 33 : 2500, xs[2] = { 6, D };
                norm_ctx c = { { NULL, NULL }, { NULL, NULL }, rms };
                if (withw) {
                    c.w[0] = rnd(1, &D, dt, 1); c.b[0] = rnd(1, &D, dt, 1);
                    c.w[1] = gpu(c.w[0]); c.b[1] = gpu(c.b[0]);
                }
                snprintf(what, sizeof what, "%s %s%s", rms ? "rms_norm" : "layer_norm", efla_dtype_name(dt),
                         withw ? " with weight" : " long rows");
                fwd_bwd_case(what, f_norm, &c, rnd(2, xs, dt, 2), tol);
                for (int k = 0; k < 2; k++) { efla_tensor_release(c.w[k]); efla_tensor_release(c.b[k]); }
            }
        }
        /* the weight/bias gradients of a layer norm over many rows (the column-sum kernel) */
        {
            int64_t D = 48, xs[2] = { 3000, 48 };
            efla_tensor *w = rnd(1, &D, dt, 1), *b = rnd(1, &D, dt, 1), *x = rnd(2, xs, dt, 1);
            efla_tensor *wl[2] = { leaf(w), NULL }, *bl[2] = { leaf(b), NULL };
            efla_tensor *wg = gpu(w), *bg = gpu(b);
            wl[1] = leaf(wg); bl[1] = leaf(bg);
            efla_tensor *xg = gpu(x);
            efla_tensor *oc = efla_layer_norm(x, wl[0], bl[0], 1e-5), *og = efla_layer_norm(xg, wl[1], bl[1], 1e-5);
            efla_tensor *lc = oc ? sum_all(oc) : NULL, *lg = og ? sum_all(og) : NULL;
            if (lc && lg && !efla_backward(lc, NULL, 0) && !efla_backward(lg, NULL, 0)) {
                expect_close("layer_norm weight grad over 3000 rows", efla_grad(wl[1]), efla_grad(wl[0]), tol * 10);
                expect_close("layer_norm bias grad over 3000 rows", efla_grad(bl[1]), efla_grad(bl[0]), tol * 10);
            } else CHECK(0, "layer_norm weight grads: backward failed");
            efla_tensor_release(oc); efla_tensor_release(og); efla_tensor_release(lc); efla_tensor_release(lg);
            efla_tensor_release(w); efla_tensor_release(b); efla_tensor_release(x); efla_tensor_release(xg);
            efla_tensor_release(wg); efla_tensor_release(bg);
            for (int k = 0; k < 2; k++) { efla_tensor_release(wl[k]); efla_tensor_release(bl[k]); }
        }
        /* cross entropy with ignored rows and label smoothing */
        for (int sm = 0; sm < 2; sm++) {
            int64_t ls[2] = { 12, 9 }, n = 12;
            int64_t tv[12] = { 0, 3, 8, -100, 5, 5, 1, -100, 2, 7, 4, 6 };
            efla_tensor *t = MUST(efla_from_buffer(1, &n, EFLA_INT64, tv, sizeof tv));
            ce_ctx c = { { t, gpu(t) }, sm ? 0.1 : 0 };
            snprintf(what, sizeof what, "cross_entropy %s smoothing %g", efla_dtype_name(dt), c.smoothing);
            fwd_bwd_case(what, f_ce, &c, rnd(2, ls, dt, 3), tol);
            efla_tensor_release(c.target[0]); efla_tensor_release(c.target[1]);
        }
    }
    /* a target outside the classes is an error naming it */
    int64_t ls[2] = { 3, 4 }, n = 3, tv[3] = { 0, 9, 1 };
    efla_tensor *x = rnd(2, ls, EFLA_FLOAT32, 1), *xg = gpu(x);
    efla_tensor *t = MUST(efla_from_buffer(1, &n, EFLA_INT64, tv, sizeof tv)), *tg = gpu(t);
    efla_tensor *r = efla_cross_entropy(xg, tg, -100, 0);
    CHECK_ERROR(r == NULL, "target 9 in row 1 is outside the 4 classes");
    efla_tensor_release(r); efla_tensor_release(x); efla_tensor_release(xg); efla_tensor_release(t); efla_tensor_release(tg);
}

/* ---- indexing ------------------------------------------------------------------------------------------- */
static void test_index(void) {
    const efla_dtype dts[4] = { EFLA_FLOAT32, EFLA_FLOAT64, EFLA_BFLOAT16, EFLA_INT64 };
    int64_t s[2] = { 6, 5 }, n4 = 4, iv[4] = { 5, 0, 2, 5 };
    efla_tensor *idx = MUST(efla_from_buffer(1, &n4, EFLA_INT64, iv, sizeof iv)), *gidx = gpu(idx);
    int64_t gs[2] = { 6, 3 };
    int64_t gv[18] = { 0, 4, 4, 1, 1, 2, 3, 0, 0, 2, 2, 2, 4, 3, 1, 0, 1, 4 };
    efla_tensor *gi = MUST(efla_from_buffer(2, gs, EFLA_INT64, gv, sizeof gv)), *ggi = gpu(gi);
    for (int di = 0; di < 4; di++) {
        efla_dtype dt = dts[di];
        double tol = tol_of(dt);
        char what[96];
        efla_tensor *c = rnd(2, s, dt, 2), *g = gpu(c);
        snprintf(what, sizeof what, "index_select dim 0 %s", efla_dtype_name(dt));
        expect_close(what, efla_index_select(g, 0, gidx), efla_index_select(c, 0, idx), 0);
        efla_tensor *ct = transposed(c), *gt = transposed(g);   /* [5,6] strided */
        snprintf(what, sizeof what, "index_select dim 1 strided %s", efla_dtype_name(dt));
        expect_close(what, efla_index_select(gt, 1, gidx), efla_index_select(ct, 1, idx), 0);
        snprintf(what, sizeof what, "gather dim 1 %s", efla_dtype_name(dt));
        expect_close(what, efla_gather(g, 1, ggi), efla_gather(c, 1, gi), 0);
        efla_tensor *src = rnd(2, gs, dt, 1), *gsrc = gpu(src);
        snprintf(what, sizeof what, "scatter_add dim 1 (duplicates) %s", efla_dtype_name(dt));
        expect_close(what, efla_scatter_add(g, 1, ggi, gsrc), efla_scatter_add(c, 1, gi, src), tol ? tol : 0);
        efla_tensor_release(src); efla_tensor_release(gsrc);
        efla_tensor_release(ct); efla_tensor_release(gt); efla_tensor_release(c); efla_tensor_release(g);
        /* embedding forward and backward (index_add with duplicate indices) */
        if (efla_dtype_is_floating(dt)) {
            int64_t ws[2] = { 10, 8 }, is[2] = { 3, 4 };
            int64_t ev[12] = { 1, 9, 1, 0, 3, 3, 3, 7, 2, 9, 0, 1 };
            efla_tensor *w = rnd(2, ws, dt, 1), *wg = gpu(w);
            efla_tensor *ei = MUST(efla_from_buffer(2, is, EFLA_INT64, ev, sizeof ev)), *eig = gpu(ei);
            efla_tensor *wl = leaf(w), *wgl = leaf(wg);
            efla_tensor *oc = efla_embedding(wl, ei), *og = efla_embedding(wgl, eig);
            efla_tensor_retain(oc); efla_tensor_retain(og);
            snprintf(what, sizeof what, "embedding %s", efla_dtype_name(dt));
            expect_close(what, og, oc, 0);
            int64_t os[3] = { 3, 4, 8 };
            efla_tensor *ww = rnd(3, os, dt, 1), *wwg = gpu(ww);
            efla_tensor *lc = oc ? weighted_sum(oc, ww) : NULL, *lg = og ? weighted_sum(og, wwg) : NULL;
            if (lc && lg && !efla_backward(lc, NULL, 0) && !efla_backward(lg, NULL, 0)) {
                snprintf(what, sizeof what, "embedding backward (index_add) %s", efla_dtype_name(dt));
                expect_close(what, efla_grad(wgl), efla_grad(wl), tol);
            } else CHECK(0, "embedding backward failed");
            efla_tensor_release(lc); efla_tensor_release(lg); efla_tensor_release(ww); efla_tensor_release(wwg);
            efla_tensor_release(oc); efla_tensor_release(og); efla_tensor_release(wl); efla_tensor_release(wgl);
            efla_tensor_release(w); efla_tensor_release(wg); efla_tensor_release(ei); efla_tensor_release(eig);
        }
    }
    expect_close("one_hot", efla_one_hot(gidx, 7), efla_one_hot(idx, 7), 0);
    /* cat / stack (copies into strided destinations) */
    int64_t s1[2] = { 3, 4 }, s2[2] = { 3, 2 };
    efla_tensor *a = rnd(2, s1, EFLA_FLOAT32, 1), *b = rnd(2, s2, EFLA_FLOAT32, 1), *ga = gpu(a), *gb = gpu(b);
    efla_tensor *cl[2] = { a, b }, *gl[2] = { ga, gb };
    expect_close("cat dim 1", efla_cat(2, gl, 1), efla_cat(2, cl, 1), 0);
    efla_tensor *cl2[2] = { a, a }, *gl2[2] = { ga, ga };
    expect_close("stack dim 1", efla_stack(2, gl2, 1), efla_stack(2, cl2, 1), 0);
    efla_tensor_release(a); efla_tensor_release(b); efla_tensor_release(ga); efla_tensor_release(gb);
    /* a bad index is an error, not a crash */
    int64_t bv[2] = { 1, 17 }, n2 = 2;
    efla_tensor *bad = MUST(efla_from_buffer(1, &n2, EFLA_INT64, bv, sizeof bv)), *gbad = gpu(bad);
    efla_tensor *x = MUST(efla_zeros(2, s, EFLA_FLOAT32, GPU));
    efla_tensor *r = efla_index_select(x, 0, gbad);
    CHECK_ERROR(r == NULL, "index 17 is out of range for dim 0 of size 6");
    efla_tensor_release(r); efla_tensor_release(x); efla_tensor_release(bad); efla_tensor_release(gbad);
    efla_tensor_release(idx); efla_tensor_release(gidx); efla_tensor_release(gi); efla_tensor_release(ggi);
}

/* ---- optimiser ------------------------------------------------------------------------------------------ */
static void test_adamw(void) {
    const efla_dtype pd[3] = { EFLA_FLOAT32, EFLA_FLOAT64, EFLA_BFLOAT16 };
    const efla_dtype md[3] = { EFLA_FLOAT32, EFLA_FLOAT64, EFLA_FLOAT32 };
    int64_t s[2] = { 17, 9 };
    for (int i = 0; i < 3; i++) {
        efla_tensor *p = rnd(2, s, pd[i], 1), *m = MUST(efla_zeros(2, s, md[i], CPU)), *v = MUST(efla_zeros(2, s, md[i], CPU));
        efla_tensor *gp = gpu(p), *gm = gpu(m), *gv = gpu(v);
        for (int step = 1; step <= 3; step++) {
            efla_tensor *g = rnd(2, s, pd[i], 1), *gg = gpu(g);
            MUST_OK(efla_adamw_step_(p, g, m, v, 1e-2, 0.9, 0.999, 1e-8, 0.1, step));
            MUST_OK(efla_adamw_step_(gp, gg, gm, gv, 1e-2, 0.9, 0.999, 1e-8, 0.1, step));
            efla_tensor_release(g); efla_tensor_release(gg);
        }
        char what[64];
        snprintf(what, sizeof what, "adamw %s params", efla_dtype_name(pd[i]));
        expect_close(what, gp, p, pd[i] == EFLA_FLOAT64 ? 1e-12 : pd[i] == EFLA_BFLOAT16 ? 1e-2 : 1e-5);
        expect_close("adamw m", gm, m, 1e-5);
        expect_close("adamw v", gv, v, 1e-5);
    }
}

/* ---- random numbers --------------------------------------------------------------------------------------- */
static void rng_case(const char *what, efla_tensor *(*draw)(int, const int64_t *, efla_dtype, int), efla_dtype dt,
                     double tol) {
    int64_t s[2] = { 123, 77 };
    efla_manual_seed(1234);
    efla_tensor *skip = MUST(draw(1, s, dt, CPU));   /* a nonzero offset */
    efla_tensor *c = MUST(draw(2, s, dt, CPU));
    efla_manual_seed(1234);
    efla_tensor *skip2 = MUST(draw(1, s, dt, GPU));
    efla_tensor *g = MUST(draw(2, s, dt, GPU));
    expect_close(what, g, c, tol);
    efla_tensor_release(skip); efla_tensor_release(skip2);
}
static efla_tensor *draw_bern(int nd, const int64_t *s, efla_dtype dt, int dev) { return efla_bernoulli(nd, s, 0.3, dt, dev); }
static efla_tensor *draw_int(int nd, const int64_t *s, efla_dtype dt, int dev) { return efla_randint(-1000, 1000000, nd, s, dev); }

static void test_rng(void) {
    for (int di = 0; di < 3; di++) {
        char what[64];
        snprintf(what, sizeof what, "rand %s: same numbers as the cpu", efla_dtype_name(FLOATS[di]));
        rng_case(what, efla_rand, FLOATS[di], 0);
        snprintf(what, sizeof what, "randn %s: same numbers as the cpu", efla_dtype_name(FLOATS[di]));
        /* log/cos may differ in the last bit of a double between libm and CUDA */
        rng_case(what, efla_randn, FLOATS[di], FLOATS[di] == EFLA_FLOAT64 ? 1e-14 : FLOATS[di] == EFLA_FLOAT32 ? 1e-6 : 1e-2);
        snprintf(what, sizeof what, "bernoulli %s: same numbers as the cpu", efla_dtype_name(FLOATS[di]));
        rng_case(what, draw_bern, FLOATS[di], 0);
    }
    rng_case("randint: same numbers as the cpu", draw_int, EFLA_INT64, 0);
    efla_manual_seed(99);
    efla_tensor *pc = MUST(efla_randperm(1000, CPU));
    efla_manual_seed(99);
    efla_tensor *pg = MUST(efla_randperm(1000, GPU));
    expect_close("randperm", pg, pc, 0);
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

typedef struct { efla_tensor *w, *other, *target; } gc_ctx;
static efla_tensor *l_softmax(const efla_tensor *x, void *c) {
    efla_tensor *s = efla_log_softmax(x, -1);
    efla_tensor *l = s ? weighted_sum(s, ((gc_ctx *)c)->w) : NULL;
    efla_tensor_release(s);
    return l;
}
static efla_tensor *l_norm(const efla_tensor *x, void *c) {
    efla_tensor *s = efla_layer_norm(x, ((gc_ctx *)c)->other, NULL, 1e-5);
    efla_tensor *l = s ? weighted_sum(s, ((gc_ctx *)c)->w) : NULL;
    efla_tensor_release(s);
    return l;
}
static efla_tensor *l_matmul(const efla_tensor *x, void *c) {
    efla_tensor *s = efla_matmul(x, ((gc_ctx *)c)->other);
    efla_tensor *l = s ? weighted_sum(s, ((gc_ctx *)c)->w) : NULL;
    efla_tensor_release(s);
    return l;
}
static efla_tensor *l_ce(const efla_tensor *x, void *c) { return efla_cross_entropy(x, ((gc_ctx *)c)->target, -100, 0.05); }

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

static void test_gradcheck(void) {
    int64_t s[2] = { 4, 6 }, sw[2] = { 6, 3 }, so[2] = { 4, 3 }, D = 6;
    gc_ctx c = { 0 };
    efla_tensor *x = grnd(2, s, EFLA_FLOAT64, 1);
    c.w = grnd(2, s, EFLA_FLOAT64, 1);
    gradcheck("gradcheck log_softmax (cuda, float64)", l_softmax, &c, x, 24);
    c.other = grnd(1, &D, EFLA_FLOAT64, 1);
    gradcheck("gradcheck layer_norm (cuda, float64)", l_norm, &c, x, 24);
    efla_tensor_release(c.other); efla_tensor_release(c.w);
    c.other = grnd(2, sw, EFLA_FLOAT64, 1);
    c.w = grnd(2, so, EFLA_FLOAT64, 1);
    gradcheck("gradcheck matmul (cuda, float64)", l_matmul, &c, x, 24);
    efla_tensor_release(c.other); efla_tensor_release(c.w);
    int64_t n = 4, tv[4] = { 2, -100, 5, 0 };
    efla_tensor *tmp = MUST(efla_from_buffer(1, &n, EFLA_INT64, tv, sizeof tv));
    c.target = gpu(tmp);
    efla_tensor_release(tmp);
    gradcheck("gradcheck cross_entropy (cuda, float64)", l_ce, &c, x, 24);
    efla_tensor_release(c.target); efla_tensor_release(x);
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

static void dr_compare(const char *label, int B, int T, int H, int dk, int dv, int packed, efla_dtype dt, int order,
                       int chunk, int recompute) {
    int64_t sq[4] = { B, T, H, dk }, sv[4] = { B, T, H, dv }, sb[3] = { B, T, H };
    int64_t cuv[4] = { 0, 13, 41, T };
    int64_t ncu = 4, N = packed ? 3 : B;
    int64_t ss[4] = { N, H, dk, dv };
    efla_tensor *in[5];
    /* inputs on the CPU in the test dtype's precision (so both devices see the same values) */
    efla_dtype cdt = dt == EFLA_BFLOAT16 ? EFLA_FLOAT32 : dt;
    /* bfloat16: |k|^2 about 1, where every order is stable (orders 2 and 4 diverge once
     * beta |k|^2 > 2, and bfloat16 then compares exploding values) */
    const double kscale = dt == EFLA_BFLOAT16 ? 1.0 / sqrt((double)dk) : 0.5;
    efla_tensor *raw[5] = { rnd(4, sq, EFLA_FLOAT64, 1), rnd(4, sq, EFLA_FLOAT64, kscale), rnd(4, sv, EFLA_FLOAT64, 1),
                            MUST(efla_rand(3, sb, EFLA_FLOAT64, CPU)), rnd(4, ss, EFLA_FLOAT64, 0.3) };
    for (int i = 0; i < 5; i++) {
        efla_tensor *r = MUST(efla_to(raw[i], i == 4 ? cdt : dt, CPU));
        in[i] = MUST(efla_to(r, cdt, CPU));
        efla_tensor_release(r);
        efla_tensor_release(raw[i]);
    }
    efla_tensor *cu = packed ? MUST(efla_from_buffer(1, &ncu, EFLA_INT64, cuv, sizeof cuv)) : NULL;
    efla_tensor *wo = rnd(4, sv, cdt, 1), *ws = rnd(4, ss, cdt, 1);
    efla_delta_rule_opts o;
    efla_delta_rule_default_opts(&o);
    o.order = order;
    o.chunk_size = chunk;
    o.algorithm = EFLA_ALGO_RECURRENT;   /* the CPU reference: the plain recurrence */
    dr_result rc = dr_run(in, cu, wo, ws, CPU, cdt, &o);
    o.algorithm = EFLA_ALGO_CHUNKED;
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

/* Gated calls (log_decay, docs/MATH.md §6) have no CUDA kernel yet: a clear error, no crash,
 * no output, and the same inputs on the cpu still work. When the scan kernels gain the decay,
 * replace this with dr_compare cases against the cpu. */
static void dr_gated_refused(void) {
    int64_t sq[4] = { 1, 5, 2, 4 }, sb[3] = { 1, 5, 2 };
    efla_tensor *q = rnd(4, sq, EFLA_FLOAT32, 1), *k = rnd(4, sq, EFLA_FLOAT32, 0.5), *v = rnd(4, sq, EFLA_FLOAT32, 1);
    efla_tensor *beta = MUST(efla_rand(3, sb, EFLA_FLOAT32, CPU)), *g = MUST(efla_zeros(3, sb, EFLA_FLOAT32, CPU));
    efla_tensor *gq = gpu(q), *gk = gpu(k), *gv = gpu(v), *gb = gpu(beta), *gg = gpu(g), *out = NULL;
    efla_delta_rule_opts o;
    efla_delta_rule_default_opts(&o);
    o.log_decay = gg;
    CHECK_ERROR(efla_delta_rule(gq, gk, gv, gb, NULL, NULL, &o, &out, NULL) < 0, "log_decay");
    CHECK(out == NULL, "a refused gated call leaves no output");
    o.log_decay = g;
    MUST_OK(efla_delta_rule(q, k, v, beta, NULL, NULL, &o, &out, NULL));
    efla_tensor_release(out);
    efla_tensor_release(q); efla_tensor_release(k); efla_tensor_release(v); efla_tensor_release(beta); efla_tensor_release(g);
    efla_tensor_release(gq); efla_tensor_release(gk); efla_tensor_release(gv); efla_tensor_release(gb); efla_tensor_release(gg);
}

static void test_delta_rule(void) {
    /* dv = 40 spans two column tiles (one partial), T not a multiple of the chunk */
    dr_compare("B=2 T=70 H=2 dk=24 dv=40", 2, 70, 2, 24, 40, 0, EFLA_FLOAT32, EFLA_ORDER_EXACT, 32, 0);
    dr_compare("B=2 T=70 H=2 dk=24 dv=40", 2, 70, 2, 24, 40, 0, EFLA_FLOAT64, EFLA_ORDER_EXACT, 32, 0);
    dr_compare("packed cu_seqlens order 2, recomputed states", 1, 64, 3, 16, 16, 1, EFLA_FLOAT32, 2, 16, 1);
    dr_compare("packed cu_seqlens order 1 (DeltaNet)", 1, 64, 3, 16, 16, 1, EFLA_FLOAT64, 1, 64, 0);
    dr_compare("dk=dv=64 chunk 64", 1, 150, 2, 64, 64, 0, EFLA_FLOAT32, EFLA_ORDER_EXACT, 64, 0);
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
    dr_compare("bfloat16 chunk 128 (scan fallback)", 1, 150, 2, 64, 64, 0, EFLA_BFLOAT16, EFLA_ORDER_EXACT, 128, 0);
    dr_compare("bfloat16 dk=24 (scan fallback)", 1, 70, 2, 24, 40, 0, EFLA_BFLOAT16, EFLA_ORDER_EXACT, 64, 0);
    dr_chunk_states();
    dr_gated_refused();
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

/* ---- fused layers (core/ops_fused.c): GPU against the CPU kernels, float32 and float64 (the
 * bfloat16 rows are in tests/lua/test_fused.lua, which rounds the CPU's inputs the same way) */
typedef struct { efla_tensor *a[2], *b[2], *c[2]; int64_t chunk; } fused_ctx;
static efla_tensor *f_swiglu(const efla_tensor *x, const void *ctx, int device) {
    return efla_swiglu(x, ((const fused_ctx *)ctx)->a[device == GPU]);
}
static efla_tensor *f_swiglu_linear(const efla_tensor *x, const void *ctx, int device) {
    const fused_ctx *c = ctx;
    return efla_swiglu_linear(x, c->a[device == GPU], c->b[device == GPU]);
}
static efla_tensor *f_short_conv(const efla_tensor *x, const void *ctx, int device) {
    const fused_ctx *c = ctx;
    return efla_short_conv(x, c->a[device == GPU], c->b[device == GPU], c->c[device == GPU], 1);
}
static efla_tensor *f_l2(const efla_tensor *x, const void *ctx, int device) { return efla_l2_norm(x, 1e-6); }
static efla_tensor *f_rms_gated(const efla_tensor *x, const void *ctx, int device) {
    const fused_ctx *c = ctx;
    return efla_rms_norm_gated(x, c->a[device == GPU], c->b[device == GPU], 1e-6);
}
static efla_tensor *f_lce(const efla_tensor *x, const void *ctx, int device) {
    const fused_ctx *c = ctx;
    return efla_linear_cross_entropy(x, c->a[device == GPU], c->b[device == GPU], -100, c->chunk);
}
static efla_tensor *f_emb(const efla_tensor *x, const void *ctx, int device) {
    return efla_embedding_lookup(x, ((const fused_ctx *)ctx)->a[device == GPU]);
}
static void fused_pair(efla_tensor **pair, int nd, const int64_t *s, efla_dtype dt, double scale) {
    pair[0] = rnd(nd, s, dt, scale);
    pair[1] = gpu(pair[0]);
}
static void fused_release(fused_ctx *c) {
    for (int k = 0; k < 2; k++) { efla_tensor_release(c->a[k]); efla_tensor_release(c->b[k]); efla_tensor_release(c->c[k]); }
    memset(c, 0, sizeof *c);
}

static void test_fused(void) {
    for (int di = 0; di < 2; di++) {
        efla_dtype dt = FLOATS[di];
        double tol = dt == EFLA_FLOAT32 ? 1e-4 : 1e-10;
        fused_ctx c = { 0 };
        int64_t s[3] = { 3, 37, 48 }, w2[2] = { 20, 48 }, wc[2] = { 48, 4 }, b1[1] = { 48 }, cache[3] = { 3, 3, 48 };
        fused_pair(c.a, 3, s, dt, 1);
        fwd_bwd_case(dt == EFLA_FLOAT32 ? "swiglu f32" : "swiglu f64", f_swiglu, &c, rnd(3, s, dt, 1), tol);
        fused_pair(c.b, 2, w2, dt, 0.2);
        fwd_bwd_case(dt == EFLA_FLOAT32 ? "swiglu_linear f32" : "swiglu_linear f64", f_swiglu_linear, &c, rnd(3, s, dt, 1), tol);
        fused_release(&c);
        fused_pair(c.a, 2, wc, dt, 0.5);
        fused_pair(c.b, 1, b1, dt, 0.5);
        fused_pair(c.c, 3, cache, dt, 1);
        fwd_bwd_case(dt == EFLA_FLOAT32 ? "short_conv f32" : "short_conv f64", f_short_conv, &c, rnd(3, s, dt, 1), tol);
        fused_release(&c);
        fwd_bwd_case(dt == EFLA_FLOAT32 ? "l2_norm f32" : "l2_norm f64", f_l2, &c, rnd(3, s, dt, 1), tol);
        fused_pair(c.a, 3, s, dt, 1);
        fused_pair(c.b, 1, b1, dt, 1);
        fwd_bwd_case(dt == EFLA_FLOAT32 ? "rms_norm_gated f32" : "rms_norm_gated f64", f_rms_gated, &c, rnd(3, s, dt, 1), tol);
        fused_release(&c);
        int64_t ws[2] = { 50, 48 }, is[2] = { 7, 30 };
        c.a[0] = MUST(efla_randint(0, 50, 2, is, CPU));   /* repeated rows: the backward's atomics add */
        c.a[1] = gpu(c.a[0]);
        fwd_bwd_case(dt == EFLA_FLOAT32 ? "embedding_lookup f32" : "embedding_lookup f64", f_emb, &c, rnd(2, ws, dt, 1), tol);
        fused_release(&c);
        /* vocabularies on both sides of the warp/block row kernels, with ignored rows and chunks */
        int64_t vocab[2] = { 300, 1500 };
        for (int vi = 0; vi < 2; vi++) {
            int64_t h2[2] = { 45, 48 }, w[2] = { vocab[vi], 48 }, n[1] = { 45 };
            fused_pair(c.a, 2, w, dt, 0.1);
            efla_tensor *t = MUST(efla_randint(0, vocab[vi], 1, n, CPU));
            int64_t i0 = 3, i1 = 17;
            efla_set(t, &i0, -100);
            efla_set(t, &i1, -100);
            c.b[0] = t;
            c.b[1] = gpu(t);
            c.chunk = 16;
            char what[64];
            snprintf(what, sizeof what, "linear_cross_entropy V=%lld %s", (long long)vocab[vi], dt == EFLA_FLOAT32 ? "f32" : "f64");
            fwd_bwd_case(what, f_lce, &c, rnd(2, h2, dt, 1), tol);
            fused_release(&c);
        }
    }
}

int main(void) {
    if (efla_device_count(1) < 1) {
        printf("skipped: no CUDA device\n");
        printf("0 passed, 0 failed\n");
        return 0;
    }
    int64_t live0 = efla_live_tensors();
    test_props();
    test_copy_cast();
    test_unary();
    test_binary();
    test_misc_elementwise();
    test_reduce();
    test_matmul();
    test_nn();
    test_index();
    test_adamw();
    test_rng();
    test_gradcheck();
    test_delta_rule();
    test_memory();
    test_fused();
    CHECK(efla_synchronize(GPU) == 0, "no asynchronous CUDA error at the end: %s", efla_last_error());
    fprintf(stderr, "live tensors: %lld at start, %lld at end\n", (long long)live0, (long long)efla_live_tensors());
    TEST_SUMMARY();
}

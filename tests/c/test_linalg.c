/* test_linalg.c: efla_matmul against a naive triple loop with numpy broadcasting: 1-d,
 * 2-d, batched, broadcast batch dims, transposed and strided views, float32/float64/
 * bfloat16/int64, mixed dtypes, error messages, and finite-difference gradients. */
#include "test_util.h"
#include <stdint.h>

/* ---- helpers ------------------------------------------------------------------------------ */
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static double urand(void) { return xorshift_u01(&rng_state); }

static efla_tensor *rand_tensor(int nd, const int64_t *shape, efla_dtype dt) {
    efla_tensor *t = MUST(efla_empty(nd, shape, EFLA_FLOAT64, EFLA_DEVICE_CPU));
    int64_t n = efla_tensor_numel(t);
    for (int64_t i = 0; i < n; i++)
        ((double *)efla_tensor_data(t))[i] = dt == EFLA_INT64 ? floor(urand() * 9 - 4) : urand() * 2 - 1;
    if (dt == EFLA_FLOAT64) return t;
    efla_tensor *c = MUST(efla_to(t, dt, EFLA_DEVICE_CPU));
    efla_tensor_release(t);
    return c;
}

/* ---- the reference: numpy matmul with plain loops --------------------------------------------- */
/* Fills out (row-major, shape os[*on]) and bound[i] = sum_k |a_ik b_kj| for error scaling. */
static void ref_matmul(const double *a, int na, const int64_t *sa, const double *b, int nb, const int64_t *sb,
                       double *out, double *bound, int *on, int64_t *os) {
    int a1 = na == 1, b1 = nb == 1;
    int64_t M = a1 ? 1 : sa[na - 2], K = sa[na - 1], N = b1 ? 1 : sb[nb - 1];
    int ba = a1 ? 0 : na - 2, bb = b1 ? 0 : nb - 2, nbat = ba > bb ? ba : bb;
    int64_t bs[EFLA_MAX_DIMS], Bt = 1;
    for (int i = 0; i < nbat; i++) {
        int ia = i - (nbat - ba), ib = i - (nbat - bb);
        int64_t x = ia >= 0 ? sa[ia] : 1, y = ib >= 0 ? sb[ib] : 1;
        bs[i] = x == 1 ? y : x;
        Bt *= bs[i];
    }
    int k = 0;
    for (int i = 0; i < nbat; i++) os[k++] = bs[i];
    if (!a1) os[k++] = M;
    if (!b1) os[k++] = N;
    *on = k;
    for (int64_t bt = 0; bt < Bt; bt++) {
        /* batch multi-index -> offsets into a and b (broadcast dims stay at 0) */
        int64_t rem = bt, ao = 0, bo = 0, amul = M * K, bmul = K * N;
        for (int i = nbat - 1; i >= 0; i--) {
            int64_t c = rem % bs[i];
            rem /= bs[i];
            int ia = i - (nbat - ba), ib = i - (nbat - bb);
            if (ia >= 0) { if (sa[ia] != 1) ao += c * amul; amul *= sa[ia]; }
            if (ib >= 0) { if (sb[ib] != 1) bo += c * bmul; bmul *= sb[ib]; }
        }
        for (int64_t m = 0; m < M; m++)
            for (int64_t n = 0; n < N; n++) {
                double s = 0, bd = 0;
                for (int64_t kk = 0; kk < K; kk++) {
                    double p = a[ao + m * K + kk] * b[bo + kk * N + n];
                    s += p;
                    bd += fabs(p);
                }
                out[(bt * M + m) * N + n] = s;
                bound[(bt * M + m) * N + n] = bd;
            }
    }
}

/* matmul(a, b) vs the reference; error relative to sum |a||b| (plus 1e-30). */
static double check_matmul(const efla_tensor *a, const efla_tensor *b) {
    efla_tensor *r = efla_matmul(a, b);
    if (!r) { fprintf(stderr, "matmul %s: %s\n", "failed", efla_last_error()); return INFINITY; }
    int64_t sa[EFLA_MAX_DIMS], sb[EFLA_MAX_DIMS], os[EFLA_MAX_DIMS];
    int na = shape_of(a, sa), nb = shape_of(b, sb), on;
    double *av = to_doubles(a), *bv = to_doubles(b), *got = to_doubles(r);
    int64_t cap = efla_tensor_numel(r) + 1;
    double *ref = malloc(sizeof(double) * (size_t)cap), *bound = malloc(sizeof(double) * (size_t)cap);
    ref_matmul(av, na, sa, bv, nb, sb, ref, bound, &on, os);
    double worst = 0;
    if (efla_tensor_ndim(r) != on) worst = INFINITY;
    for (int d = 0; d < on && worst == 0; d++)
        if (efla_tensor_size(r, d) != os[d]) worst = INFINITY;
    if (efla_tensor_dtype(r) != efla_tensor_dtype(a) && efla_tensor_dtype(r) != efla_tensor_dtype(b)) worst = INFINITY;
    for (int64_t i = 0; i < efla_tensor_numel(r) && worst == 0; i++) {
        double e = fabs(got[i] - ref[i]) / (bound[i] + 1e-30);
        if (fabs(got[i] - ref[i]) == 0) e = 0;
        if (!(e <= worst)) worst = e;
    }
    free(av); free(bv); free(got); free(ref); free(bound);
    efla_tensor_release(r);
    return worst;
}

static void check_case(const char *what, int na, const int64_t *sa, int nb, const int64_t *sb) {
    for (int di = 0; di < 2; di++) {
        efla_dtype dt = di ? EFLA_FLOAT64 : EFLA_FLOAT32;
        efla_tensor *a = rand_tensor(na, sa, dt), *b = rand_tensor(nb, sb, dt);
        double e = check_matmul(a, b), tol = di ? 1e-12 : 1e-5;
        CHECK(e <= tol, "%s (%s): error %g", what, efla_dtype_name(dt), e);
        efla_tensor_release(a);
        efla_tensor_release(b);
    }
}

static void test_shapes(void) {
    int64_t k7[1] = { 7 }, m5k7[2] = { 5, 7 }, k7n3[2] = { 7, 3 };
    check_case("dot", 1, k7, 1, k7);
    check_case("matrix-vector", 2, m5k7, 1, k7);
    check_case("vector-matrix", 1, k7, 2, k7n3);
    check_case("matrix-matrix", 2, m5k7, 2, k7n3);
    int64_t one[2] = { 1, 1 };
    check_case("1x1", 2, one, 2, one);
    int64_t s1[2] = { 64, 33 }, s2[2] = { 33, 65 };
    check_case("64x33x65", 2, s1, 2, s2);
    int64_t l1[2] = { 130, 70 }, l2[2] = { 70, 90 };
    check_case("130x70x90", 2, l1, 2, l2);
    int64_t b1[3] = { 4, 5, 7 }, b2[3] = { 4, 7, 3 };
    check_case("batched", 3, b1, 3, b2);
    check_case("batch @ shared matrix", 3, b1, 2, k7n3);
    check_case("shared matrix @ batch", 2, m5k7, 3, b2);
    check_case("vector @ batch", 1, k7, 3, b2);
    check_case("batch @ vector", 3, b1, 1, k7);
    int64_t c1[4] = { 2, 1, 5, 7 }, c2[3] = { 3, 7, 3 };
    check_case("[2,1] x [3] batch broadcast", 4, c1, 3, c2);
    int64_t d1[4] = { 1, 3, 5, 7 }, d2[4] = { 2, 1, 7, 3 };
    check_case("[1,3] x [2,1] batch broadcast", 4, d1, 4, d2);
    int64_t e1[3] = { 64, 8, 8 };
    check_case("many small batches", 3, e1, 3, e1);
    int64_t f1[3] = { 3, 40, 70 }, f2[3] = { 3, 70, 100 };
    check_case("large batches", 3, f1, 3, f2);
    int64_t z1[2] = { 3, 0 }, z2[2] = { 0, 4 };
    check_case("K = 0", 2, z1, 2, z2);
    int64_t y1[2] = { 0, 3 }, y2[2] = { 3, 4 };
    check_case("M = 0", 2, y1, 2, y2);
}

static void test_views(void) {
    for (int di = 0; di < 2; di++) {
        efla_dtype dt = di ? EFLA_FLOAT64 : EFLA_FLOAT32;
        double tol = di ? 1e-12 : 1e-5;
        int64_t km[2] = { 9, 6 }, nk[2] = { 5, 9 }, mk[2] = { 6, 9 }, kn[2] = { 9, 5 };
        efla_tensor *akm = rand_tensor(2, km, dt), *bnk = rand_tensor(2, nk, dt);
        efla_tensor *amk = rand_tensor(2, mk, dt), *bkn = rand_tensor(2, kn, dt);
        efla_tensor *at = MUST(efla_transpose(akm, 0, 1)), *bt = MUST(efla_transpose(bnk, 0, 1));
        CHECK(check_matmul(at, bkn) <= tol, "a^T @ b %s", efla_dtype_name(dt));
        CHECK(check_matmul(amk, bt) <= tol, "a @ b^T %s", efla_dtype_name(dt));
        CHECK(check_matmul(at, bt) <= tol, "a^T @ b^T %s", efla_dtype_name(dt));
        /* neither dim of unit stride: packed */
        int64_t m2[3] = { 6, 9, 2 };
        efla_tensor *w = rand_tensor(3, m2, dt), *ws = MUST(efla_select(w, 2, 1));
        CHECK(check_matmul(ws, bkn) <= tol, "strided a %s", efla_dtype_name(dt));
        efla_tensor *wt = MUST(efla_transpose(ws, 0, 1));
        CHECK(check_matmul(amk, wt) <= tol, "strided b %s", efla_dtype_name(dt));
        /* batched transposes, and a narrowed batch */
        int64_t bkm[3] = { 3, 9, 6 }, bnk3[3] = { 3, 5, 9 };
        efla_tensor *x = rand_tensor(3, bkm, dt), *y = rand_tensor(3, bnk3, dt);
        efla_tensor *xt = MUST(efla_transpose(x, 1, 2)), *yt = MUST(efla_transpose(y, 1, 2));
        CHECK(check_matmul(xt, yt) <= tol, "batched transposes %s", efla_dtype_name(dt));
        efla_tensor *xn = MUST(efla_narrow(xt, 0, 1, 2)), *yn = MUST(efla_narrow(yt, 0, 0, 2));
        CHECK(check_matmul(xn, yn) <= tol, "narrowed batches %s", efla_dtype_name(dt));
        /* output of a transposed batch against an expanded operand */
        int64_t ex[3] = { 3, 9, 5 };
        efla_tensor *be = MUST(efla_expand(bkn, 3, ex));
        CHECK(check_matmul(xt, be) <= tol, "expanded b %s", efla_dtype_name(dt));
        efla_tensor *ts[] = { akm, bnk, amk, bkn, at, bt, w, ws, wt, x, y, xt, yt, xn, yn, be };
        for (int i = 0; i < 16; i++) efla_tensor_release(ts[i]);
    }
}

static void test_dtypes(void) {
    int64_t sa[2] = { 4, 6 }, sb[2] = { 6, 5 };
    efla_tensor *a = rand_tensor(2, sa, EFLA_INT64), *b = rand_tensor(2, sb, EFLA_INT64);
    efla_tensor *r = MUST(efla_matmul(a, b));
    CHECK(efla_tensor_dtype(r) == EFLA_INT64, "int64 @ int64 is int64");
    CHECK(check_matmul(a, b) == 0, "int64 exact");
    efla_tensor_release(r);
    efla_tensor_release(a); efla_tensor_release(b);

    /* bfloat16: compared with the loop over the same (rounded) inputs; the result rounds once */
    int64_t sc[3] = { 2, 8, 16 }, sd[2] = { 16, 8 };
    efla_tensor *c = rand_tensor(3, sc, EFLA_BFLOAT16), *d = rand_tensor(2, sd, EFLA_BFLOAT16);
    r = MUST(efla_matmul(c, d));
    CHECK(efla_tensor_dtype(r) == EFLA_BFLOAT16, "bf16 @ bf16 is bf16");
    CHECK(check_matmul(c, d) <= 1e-2, "bfloat16 within its precision");
    efla_tensor *dt = MUST(efla_transpose(d, 0, 1)), *dtt = MUST(efla_transpose(dt, 0, 1));
    CHECK(check_matmul(c, dtt) <= 1e-2, "bfloat16 views");
    efla_tensor_release(dt); efla_tensor_release(dtt);
    efla_tensor_release(r); efla_tensor_release(c); efla_tensor_release(d);

    /* mixed float32 @ float64 promotes */
    efla_tensor *e = rand_tensor(2, sa, EFLA_FLOAT32), *f = rand_tensor(2, sb, EFLA_FLOAT64);
    r = MUST(efla_matmul(e, f));
    CHECK(efla_tensor_dtype(r) == EFLA_FLOAT64, "float32 @ float64 is float64");
    CHECK(check_matmul(e, f) <= 1e-12, "mixed dtypes");
    efla_tensor_release(r); efla_tensor_release(e); efla_tensor_release(f);
}

static void test_errors(void) {
    int64_t s34[2] = { 3, 4 }, s56[2] = { 5, 6 }, s234[3] = { 2, 3, 4 }, s345[3] = { 3, 4, 5 };
    efla_tensor *a = rand_tensor(2, s34, EFLA_FLOAT32), *b = rand_tensor(2, s56, EFLA_FLOAT32);
    CHECK_ERROR(efla_matmul(a, b) == NULL, "matmul: [3,4] @ [5,6]: inner sizes 4 and 5 differ");
    efla_tensor *c = rand_tensor(3, s234, EFLA_FLOAT32), *d = rand_tensor(3, s345, EFLA_FLOAT32);
    CHECK_ERROR(efla_matmul(c, d) == NULL, "matmul: [2,3,4] @ [3,4,5]: the batch dims");
    efla_tensor *s = MUST(efla_scalar(2, EFLA_FLOAT32, EFLA_DEVICE_CPU));
    CHECK_ERROR(efla_matmul(s, a) == NULL, "at least 1 dim");
    efla_tensor *bo = MUST(efla_zeros(2, s34, EFLA_BOOL, EFLA_DEVICE_CPU));
    int64_t s43[2] = { 4, 3 };
    efla_tensor *bo2 = MUST(efla_zeros(2, s43, EFLA_BOOL, EFLA_DEVICE_CPU));
    CHECK_ERROR(efla_matmul(bo, bo2) == NULL, "use float32, float64, bfloat16 or int64");
    int64_t k3 = 3;
    efla_tensor *v = rand_tensor(1, &k3, EFLA_FLOAT32);
    CHECK_ERROR(efla_matmul(a, v) == NULL, "inner sizes 4 and 3 differ");
    efla_tensor *ts[] = { a, b, c, d, s, bo, bo2, v };
    for (int i = 0; i < 8; i++) efla_tensor_release(ts[i]);
}

/* ---- gradients ------------------------------------------------------------------------------- */
static efla_tensor *rand_weights(int nd, const int64_t *shape) { return rand_tensor(nd, shape, EFLA_FLOAT64); }
static efla_tensor *f_matmul(efla_tensor *const *in, const void *ctx) { (void)ctx; return efla_matmul(in[0], in[1]); }

/* L = sum(matmul(a, b) * w): autograd vs central differences for both inputs (float64). */
static double gradcheck(efla_tensor *a, efla_tensor *b) {
    efla_tensor *in[2] = { a, b };
    for (int i = 0; i < 2; i++) { MUST_OK(efla_set_grad(in[i], NULL)); MUST_OK(efla_set_requires_grad(in[i], 1)); }
    return fd_gradcheck(f_matmul, 2, in, NULL, rand_weights);
}

static void grad_case(const char *what, int na, const int64_t *sa, int nb, const int64_t *sb) {
    efla_tensor *a = rand_tensor(na, sa, EFLA_FLOAT64), *b = rand_tensor(nb, sb, EFLA_FLOAT64);
    double e = gradcheck(a, b);
    CHECK(e < 1e-7, "gradient %s: error %g", what, e);
    efla_tensor_release(a);
    efla_tensor_release(b);
}

static void test_gradients(void) {
    int64_t k4[1] = { 4 }, m3k4[2] = { 3, 4 }, k4n2[2] = { 4, 2 }, b2m3k4[3] = { 2, 3, 4 }, b2k4n2[3] = { 2, 4, 2 };
    int64_t c1[4] = { 2, 1, 3, 4 }, c2[3] = { 3, 4, 2 };
    grad_case("dot", 1, k4, 1, k4);
    grad_case("matrix-vector", 2, m3k4, 1, k4);
    grad_case("vector-matrix", 1, k4, 2, k4n2);
    grad_case("matrix-matrix", 2, m3k4, 2, k4n2);
    grad_case("batched", 3, b2m3k4, 3, b2k4n2);
    grad_case("batch @ shared", 3, b2m3k4, 2, k4n2);
    grad_case("shared @ batch", 2, m3k4, 3, b2k4n2);
    grad_case("vector @ batch", 1, k4, 3, b2k4n2);
    grad_case("batch @ vector", 3, b2m3k4, 1, k4);
    grad_case("broadcast batch dims", 4, c1, 3, c2);
    /* a transposed leaf view: the gradient lands on the leaf in its own layout */
    int64_t k4m3[2] = { 4, 3 };
    efla_tensor *leaf = rand_tensor(2, k4m3, EFLA_FLOAT64), *b = rand_tensor(2, k4n2, EFLA_FLOAT64);
    MUST_OK(efla_set_requires_grad(leaf, 1));
    MUST_OK(efla_set_requires_grad(b, 1));
    efla_tensor *at = MUST(efla_transpose(leaf, 0, 1));
    efla_tensor *y = MUST(efla_matmul(at, b));
    int64_t ys[2] = { 3, 2 };
    efla_tensor *ones = MUST(efla_ones(2, ys, EFLA_FLOAT64, EFLA_DEVICE_CPU));
    MUST_OK(efla_backward(y, ones, 0));
    efla_tensor *g = MUST(efla_grad(leaf));
    /* d/dleaf[k,m] sum_{n} (leaf^T b)[m,n] = sum_n b[k,n] */
    double *gv = to_doubles(g), *bv = to_doubles(b), worst = 0;
    for (int kk = 0; kk < 4; kk++)
        for (int m = 0; m < 3; m++) worst = fmax(worst, fabs(gv[kk * 3 + m] - (bv[kk * 2] + bv[kk * 2 + 1])));
    CHECK(worst < 1e-14 && efla_tensor_size(g, 0) == 4, "gradient through a transposed leaf: %g", worst);
    free(gv); free(bv);
    efla_tensor_release(g); efla_tensor_release(ones); efla_tensor_release(y); efla_tensor_release(at);
    efla_tensor_release(leaf); efla_tensor_release(b);
}

int main(int argc, char **argv) {
    TEST_ARGS(argc, argv);
    int64_t live0 = efla_live_tensors();
    RUN(test_shapes);
    RUN(test_views);
    RUN(test_dtypes);
    RUN(test_errors);
    RUN(test_gradients);
    CHECK(efla_live_tensors() == live0, "no tensor leaks (%lld live)", (long long)(efla_live_tensors() - live0));
    TEST_SUMMARY();
}

/* test_scan.c: efla_cumsum and efla_sort (core/ops_scan.c) against plain loops: every dim
 * of a 3-d tensor, strided inputs, ties, NaN, int64, the cumsum gradient, bad arguments,
 * and no leaked tensors. */
#include "test_util.h"

static efla_tensor *from(int ndim, const int64_t *shape, efla_dtype dt, const void *data, size_t nbytes) {
    return MUST(efla_from_buffer(ndim, shape, dt, data, nbytes));
}

static void test_cumsum_dims(void) {
    int64_t shape[3] = { 3, 4, 5 };
    double x[60];
    for (int i = 0; i < 60; i++) x[i] = sin(1.7 * i) * (i % 7);
    efla_tensor *t = from(3, shape, EFLA_FLOAT64, x, sizeof x);
    for (int d = 0; d < 3; d++) {
        efla_tensor *y = MUST(efla_cumsum(t, d));
        const double *py = efla_tensor_data(y);
        double worst = 0;
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 4; j++)
                for (int k = 0; k < 5; k++) {
                    int idx[3] = { i, j, k };
                    double acc = 0;
                    for (int m = 0; m <= idx[d]; m++) {
                        int p[3] = { i, j, k };
                        p[d] = m;
                        acc += x[(p[0] * 4 + p[1]) * 5 + p[2]];
                    }
                    worst = fmax(worst, fabs(acc - py[(i * 4 + j) * 5 + k]));
                }
        CHECK(worst < 1e-12, "cumsum along dim %d: max error %g", d, worst);
        efla_tensor_release(y);
    }
    /* a transposed (strided) input */
    efla_tensor *tr = MUST(efla_transpose(t, 0, 2));
    efla_tensor *a = MUST(efla_cumsum(tr, 0)), *c = MUST(efla_contiguous(tr));
    efla_tensor *b = MUST(efla_cumsum(c, 0));
    CHECK(max_rel_diff(a, b) == 0, "cumsum of a strided view");
    efla_tensor_release(tr); efla_tensor_release(a); efla_tensor_release(b); efla_tensor_release(c);
    efla_tensor_release(t);
}

static void test_cumsum_int_and_grad(void) {
    int64_t n = 4;
    int64_t xi[4] = { 1, -2, 3, 4 };
    efla_tensor *t = from(1, &n, EFLA_INT64, xi, sizeof xi);
    efla_tensor *y = MUST(efla_cumsum(t, 0));
    const int64_t *py = efla_tensor_data(y);
    CHECK(py[0] == 1 && py[1] == -1 && py[2] == 2 && py[3] == 6, "int64 cumsum");
    efla_tensor_release(y); efla_tensor_release(t);

    /* d/dx sum(w * cumsum(x)) = reversed running sum of w */
    double xv[4] = { 0.5, 1, -2, 3 }, wv[4] = { 1, 2, 3, 4 };
    efla_tensor *x = from(1, &n, EFLA_FLOAT64, xv, sizeof xv), *w = from(1, &n, EFLA_FLOAT64, wv, sizeof wv);
    MUST_OK(efla_set_requires_grad(x, 1));
    efla_tensor *cs = MUST(efla_cumsum(x, 0));
    efla_tensor *prod = MUST(efla_binary(EFLA_MUL, cs, w));
    efla_tensor *s = MUST(efla_reduce(EFLA_SUM, prod, 0, NULL, 0, 0));
    MUST_OK(efla_backward(s, NULL, 0));
    efla_tensor *g = MUST(efla_grad(x));
    const double *pg = efla_tensor_data(g);
    CHECK(pg[0] == 10 && pg[1] == 9 && pg[2] == 7 && pg[3] == 4, "cumsum gradient %g %g %g %g", pg[0], pg[1], pg[2], pg[3]);
    efla_tensor_release(g); efla_tensor_release(s); efla_tensor_release(prod); efla_tensor_release(cs);
    efla_tensor_release(x); efla_tensor_release(w);
}

static void test_sort(void) {
    int64_t shape[2] = { 2, 5 };
    float x[10] = { 3, 1, 2, 1, NAN, 0, -1, 5, 5, 2 };
    efla_tensor *t = from(2, shape, EFLA_FLOAT32, x, sizeof x);
    efla_tensor *v, *i;
    MUST_OK(efla_sort(t, 1, 0, &v, &i));
    const float *pv = efla_tensor_data(v);
    const int64_t *pi = efla_tensor_data(i);
    CHECK(pv[0] == 1 && pv[1] == 1 && pv[2] == 2 && pv[3] == 3 && isnan(pv[4]), "ascending row 1, NaN last");
    CHECK(pi[0] == 1 && pi[1] == 3 && pi[2] == 2 && pi[3] == 0 && pi[4] == 4, "stable positions row 1");
    CHECK(pv[5] == -1 && pv[6] == 0 && pv[7] == 2 && pv[8] == 5 && pv[9] == 5, "ascending row 2");
    CHECK(pi[8] == 2 && pi[9] == 3, "ties keep their order");
    efla_tensor_release(v); efla_tensor_release(i);
    MUST_OK(efla_sort(t, 0, 1, &v, &i));   /* along dim 0, descending */
    pv = efla_tensor_data(v);
    pi = efla_tensor_data(i);
    CHECK(pv[0] == 3 && pv[5] == 0 && pi[0] == 0 && pi[5] == 1, "column 1 descending");
    CHECK(isnan(pv[4]) && pi[4] == 0, "NaN first when descending");
    efla_tensor_release(v); efla_tensor_release(i);
    CHECK_ERROR(efla_sort(t, 2, 0, &v, &i) < 0, "out of range");
    CHECK_ERROR(efla_cumsum(t, -3) == NULL, "out of range");
    efla_tensor_release(t);
}

int main(int argc, char **argv) {
    TEST_ARGS(argc, argv);
    int64_t live0 = efla_live_tensors();
    RUN(test_cumsum_dims);
    RUN(test_cumsum_int_and_grad);
    RUN(test_sort);
    CHECK_NO_LEAK(live0);
    TEST_SUMMARY();
}

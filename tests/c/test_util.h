/* test_util.h: a minimal harness for the C tests. Each CHECK counts; main() ends with
 * TEST_SUMMARY(), which prints "N passed, N failed" and returns non-zero on failure. */
#ifndef EFLA_TEST_UTIL_H
#define EFLA_TEST_UTIL_H
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "efla.h"

static int test_passed, test_failed;

#define CHECK(cond, ...) do { \
    if (cond) test_passed++; \
    else { test_failed++; fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
           fprintf(stderr, __VA_ARGS__); fprintf(stderr, " [last error: %s]\n", efla_last_error()); } \
} while (0)

/* A call that must succeed: a NULL/negative result fails the test and aborts the file. */
#define MUST(expr) ({ __typeof__(expr) _v = (expr); \
    if ((intptr_t)_v == 0 && sizeof(_v) == sizeof(void *)) { \
        fprintf(stderr, "FATAL %s:%d: %s returned NULL: %s\n", __FILE__, __LINE__, #expr, efla_last_error()); exit(1); } \
    _v; })
#define MUST_OK(expr) do { if ((expr) < 0) { \
    fprintf(stderr, "FATAL %s:%d: %s failed: %s\n", __FILE__, __LINE__, #expr, efla_last_error()); exit(1); } } while (0)

/* Expect a failure whose message contains `needle`. */
#define CHECK_ERROR(failed, needle) do { \
    int _f = (failed); const char *_m = efla_last_error(); \
    CHECK(_f && strstr(_m, needle) != NULL, "expected an error containing '%s'", needle); \
} while (0)

#define TEST_SUMMARY() do { printf("%d passed, %d failed\n", test_passed, test_failed); \
    return test_failed ? 1 : 0; } while (0)

/* Max |a-b| / max(1, |b|) between two tensors, via double copies. */
static inline double max_rel_diff(const efla_tensor *a, const efla_tensor *b) {
    int64_t n = efla_tensor_numel(a);
    if (n != efla_tensor_numel(b)) return INFINITY;
    efla_tensor *da = efla_to(a, EFLA_FLOAT64, EFLA_DEVICE_CPU), *db = efla_to(b, EFLA_FLOAT64, EFLA_DEVICE_CPU);
    efla_tensor *ca = efla_contiguous(da), *cb = efla_contiguous(db);
    const double *pa = efla_tensor_data(ca), *pb = efla_tensor_data(cb);
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs(pa[i] - pb[i]) / fmax(1.0, fabs(pb[i]));
        if (isnan(pa[i]) != isnan(pb[i])) d = INFINITY;
        if (d > worst) worst = d;
    }
    efla_tensor_release(da); efla_tensor_release(db); efla_tensor_release(ca); efla_tensor_release(cb);
    return worst;
}
#endif

/* test_util.h: a minimal harness for the C tests. Each CHECK counts; main() ends with
 * TEST_SUMMARY(), which prints "N passed, N failed" and returns non-zero on failure. */
#ifndef EFLA_TEST_UTIL_H
#define EFLA_TEST_UTIL_H
#include <math.h>
#include <stdint.h>
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

/* Selection by name: `test_x NAME...` runs only the test functions whose names contain one
 * of the NAMEs. main(argc, argv) starts with TEST_ARGS(argc, argv) and calls RUN(test_fn). */
static int test_argc;
static char **test_argv;
#define TEST_ARGS(argc, argv) (test_argc = (argc), test_argv = (argv))
static inline int test_selected(const char *name) {
    if (test_argc < 2) return 1;
    for (int i = 1; i < test_argc; i++)
        if (strstr(name, test_argv[i])) return 1;
    return 0;
}
#define RUN(fn) do { if (test_selected(#fn)) fn(); } while (0)

#define TEST_SUMMARY() do { printf("%d passed, %d failed\n", test_passed, test_failed); \
    return test_failed ? 1 : 0; } while (0)

/* The end-of-main check that every tensor made since `live0 = efla_live_tensors()` was released. */
#define CHECK_NO_LEAK(live0) CHECK(efla_live_tensors() == (live0), "no tensor leaked: %lld live, %lld at start", \
                                   (long long)efla_live_tensors(), (long long)(live0))

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

/* ---- shared helpers (static inline, so a file that uses only some of them gets no warning) ---- */

/* xorshift64* step: uniform double in [0,1). Each file keeps its own state and seed, so its
 * random data is unchanged. */
static inline double xorshift_u01(uint64_t *state) {
    *state ^= *state >> 12; *state ^= *state << 25; *state ^= *state >> 27;
    return (double)((*state * 2685821657736338717ull) >> 11) * 0x1.0p-53;
}

/* 64-bit LCG (Knuth's MMIX constants); returns the top 31 bits. */
static inline uint64_t lcg_next(uint64_t *state) {
    *state = *state * 6364136223846793005ULL + 1442695040888963407ULL;
    return *state >> 33;
}

/* One element of t as a double; a failed read ends the test file. */
static inline double get(const efla_tensor *t, const int64_t *idx) {
    double v = NAN;
    if (efla_get(t, idx, &v)) { fprintf(stderr, "get failed: %s\n", efla_last_error()); exit(1); }
    return v;
}

/* Row-major multi-index counter; returns 0 after the last element. */
static inline int next_idx(int nd, const int64_t *shape, int64_t *idx) {
    for (int d = nd - 1; d >= 0; d--) {
        if (++idx[d] < shape[d]) return 1;
        idx[d] = 0;
    }
    return 0;
}

/* Fills s with t's sizes; returns its ndim. */
static inline int shape_of(const efla_tensor *t, int64_t *s) {
    for (int d = 0; d < efla_tensor_ndim(t); d++) s[d] = efla_tensor_size(t, d);
    return efla_tensor_ndim(t);
}

/* 1 when t is non-NULL and has exactly this shape. */
static inline int has_shape(const efla_tensor *t, int nd, const int64_t *shape) {
    if (!t || efla_tensor_ndim(t) != nd) return 0;
    for (int i = 0; i < nd; i++)
        if (efla_tensor_size(t, i) != shape[i]) return 0;
    return 1;
}

/* All elements of t (any strides and dtype) in row-major order, read one by one with
 * efla_get, as a malloc'd double array; caller frees. */
static inline double *to_doubles(const efla_tensor *t) {
    int nd = efla_tensor_ndim(t);
    int64_t n = efla_tensor_numel(t), idx[EFLA_MAX_DIMS] = {0};
    double *v = malloc(sizeof(double) * (size_t)(n ? n : 1));
    for (int64_t i = 0; i < n; i++) {
        MUST_OK(efla_get(t, idx, &v[i]));
        for (int d = nd - 1; d >= 0; d--) {
            if (++idx[d] < efla_tensor_size(t, d)) break;
            idx[d] = 0;
        }
    }
    return v;
}

/* sum over out's elements (row-major) of out * w, read with get(). */
static inline double weighted_total(const efla_tensor *out, const double *w) {
    int nd = efla_tensor_ndim(out);
    int64_t shape[EFLA_MAX_DIMS], p[EFLA_MAX_DIMS] = {0}, k = 0;
    for (int i = 0; i < nd; i++) shape[i] = efla_tensor_size(out, i);
    if (efla_tensor_numel(out) == 0) return 0;
    double s = 0;
    do s += get(out, p) * w[k++]; while (next_idx(nd, shape, p));
    return s;
}

/* ---- finite-difference gradient check, relative error, via efla_get/efla_set ---- */
typedef efla_tensor *(*fd_fwd_fn)(efla_tensor *const *in, const void *ctx);
typedef efla_tensor *(*fd_weight_fn)(int nd, const int64_t *shape);

/* L = sum(f(in) * w), w = make_w(shape of f(in)) in float64 (drawn after the first forward,
 * so each file's random stream is as before): autograd vs central differences (h = 1e-6)
 * for every input that requires grad. Returns the worst |num - grad| / max(1, |num|); a NaN
 * error, a failed forward/backward, a missing gradient or no input to check give INFINITY. */
static inline double fd_gradcheck(fd_fwd_fn f, int n_in, efla_tensor *const *in, const void *ctx, fd_weight_fn make_w) {
    for (int i = 0; i < n_in; i++)
        if (in[i]) MUST_OK(efla_set_grad(in[i], NULL));
    efla_tensor *y = f(in, ctx);
    if (!y) { fprintf(stderr, "forward: %s\n", efla_last_error()); return INFINITY; }
    int64_t ys[EFLA_MAX_DIMS];
    int yn = shape_of(y, ys), checked = 0;
    efla_tensor *w = make_w(yn, ys);
    double *wv = to_doubles(w), worst = 0, h = 1e-6;
    if (efla_backward(y, w, 0)) { fprintf(stderr, "backward: %s\n", efla_last_error()); return INFINITY; }
    int prev = efla_set_grad_enabled(0);
    for (int t = 0; t < n_in; t++) {
        if (!in[t] || !efla_requires_grad(in[t])) continue;
        checked++;
        efla_tensor *g = efla_grad(in[t]);
        if (!g) { worst = INFINITY; break; }
        double *gv = to_doubles(g);
        int nd = efla_tensor_ndim(in[t]);
        int64_t idx[EFLA_MAX_DIMS] = {0};
        for (int64_t i = 0; i < efla_tensor_numel(in[t]); i++) {
            double orig, l[2];
            MUST_OK(efla_get(in[t], idx, &orig));
            for (int s = 0; s < 2; s++) {
                MUST_OK(efla_set(in[t], idx, orig + (s ? -h : h)));
                efla_tensor *yy = MUST(f(in, ctx));
                double *yv = to_doubles(yy);
                l[s] = 0;
                for (int64_t j = 0; j < efla_tensor_numel(yy); j++) l[s] += yv[j] * wv[j];
                free(yv);
                efla_tensor_release(yy);
            }
            MUST_OK(efla_set(in[t], idx, orig));
            double num = (l[0] - l[1]) / (2 * h), e = fabs(num - gv[i]) / fmax(1.0, fabs(num));
            if (!(e <= worst)) worst = e;
            for (int d = nd - 1; d >= 0; d--) {
                if (++idx[d] < efla_tensor_size(in[t], d)) break;
                idx[d] = 0;
            }
        }
        free(gv);
        efla_tensor_release(g);
    }
    efla_set_grad_enabled(prev);
    free(wv);
    efla_tensor_release(w);
    efla_tensor_release(y);
    return checked ? worst : INFINITY;
}
#endif

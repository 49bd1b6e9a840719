/* test_index.c: index_select, gather, scatter_add, embedding, one_hot, cat, stack and the
 * CPU index kernels, against plain-loop references (read element by element with
 * efla_get), on every dtype, with non-contiguous inputs, plus error messages, thread-count
 * independence and finite-difference gradients in float64. */
#include "test_util.h"
#include "cpu/cpu_kernels.h"
#include <stdint.h>

/* ---- helpers ------------------------------------------------------------------------- */
static uint64_t lcg_state = 12345;
static uint64_t lcg(void) { return lcg_next(&lcg_state); }
static double urand(void) { return (double)lcg() / 2147483648.0; }   /* [0,1) */

static const efla_dtype all_dtypes[] = { EFLA_FLOAT32, EFLA_FLOAT64, EFLA_BFLOAT16, EFLA_INT64, EFLA_UINT8, EFLA_BOOL };
enum { N_DTYPES = 6 };

static void store(void *buf, int64_t i, efla_dtype dt, double v) {
    switch (dt) {
    case EFLA_FLOAT32: ((float *)buf)[i] = (float)v; break;
    case EFLA_FLOAT64: ((double *)buf)[i] = v; break;
    case EFLA_BFLOAT16: { union { float f; uint32_t u; } x; x.f = (float)v; ((uint16_t *)buf)[i] = (uint16_t)(x.u >> 16); break; }
    case EFLA_INT64: ((int64_t *)buf)[i] = (int64_t)v; break;
    case EFLA_UINT8: ((uint8_t *)buf)[i] = (uint8_t)v; break;
    case EFLA_BOOL: ((uint8_t *)buf)[i] = v != 0; break;
    }
}

/* A tensor of random values suited to its dtype. */
static efla_tensor *rnd(int ndim, const int64_t *shape, efla_dtype dt) {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    size_t bytes = (size_t)n * efla_dtype_size(dt);
    void *buf = malloc(bytes ? bytes : 1);
    for (int64_t i = 0; i < n; i++) {
        double v;
        if (dt == EFLA_INT64) v = (double)((int64_t)(lcg() % 2001) - 1000);
        else if (dt == EFLA_UINT8) v = (double)(lcg() % 256);
        else if (dt == EFLA_BOOL) v = (double)(lcg() % 2);
        else v = urand() * 4 - 2;
        store(buf, i, dt, v);
    }
    efla_tensor *t = MUST(efla_from_buffer(ndim, shape, dt, buf, bytes));
    free(buf);
    return t;
}

static efla_tensor *index_tensor(int ndim, const int64_t *shape, int64_t hi) {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    int64_t *buf = malloc((size_t)(n ? n : 1) * sizeof *buf);
    for (int64_t i = 0; i < n; i++) buf[i] = (int64_t)(lcg() % (uint64_t)hi);
    efla_tensor *t = MUST(efla_from_buffer(ndim, shape, EFLA_INT64, buf, (size_t)n * sizeof *buf));
    free(buf);
    return t;
}

static efla_tensor *index_of(int64_t n, const int64_t *vals) {
    return MUST(efla_from_buffer(1, &n, EFLA_INT64, vals, (size_t)n * sizeof(int64_t)));
}

/* ---- index_select ------------------------------------------------------------------------ */
/* Max |out - reference| of index_select(t, d, idx), element by element. */
static double check_index_select(const efla_tensor *t, int d, const efla_tensor *idx, const efla_tensor *out) {
    int nd = efla_tensor_ndim(t);
    int64_t shape[EFLA_MAX_DIMS], p[EFLA_MAX_DIMS] = {0}, q[EFLA_MAX_DIMS];
    for (int i = 0; i < nd; i++) shape[i] = efla_tensor_size(t, i);
    shape[d] = efla_tensor_size(idx, 0);
    if (!has_shape(out, nd, shape)) return INFINITY;
    for (int i = 0; i < nd; i++) if (shape[i] == 0) return 0;
    double worst = 0;
    do {
        memcpy(q, p, sizeof q);
        int64_t j = p[d];
        q[d] = (int64_t)get(idx, &j);
        double e = fabs(get(out, p) - get(t, q));
        if (!(e <= worst)) worst = e;
    } while (next_idx(nd, shape, p));
    return worst;
}

static void test_index_select(void) {
    int64_t shape[3] = { 4, 5, 6 }, n7 = 7;
    for (int k = 0; k < N_DTYPES; k++) {
        efla_dtype dt = all_dtypes[k];
        efla_tensor *t = rnd(3, shape, dt);
        efla_tensor *tt = MUST(efla_transpose(t, 0, 2));        /* [6,5,4], non-contiguous */
        efla_tensor *tn = MUST(efla_narrow(t, 1, 1, 3));        /* [4,3,6], offset view */
        const efla_tensor *srcs[3] = { t, tt, tn };
        for (int s = 0; s < 3; s++)
            for (int d = 0; d < 3; d++) {
                efla_tensor *idx = index_tensor(1, &n7, efla_tensor_size(srcs[s], d));
                efla_tensor *out = efla_index_select(srcs[s], d, idx);
                CHECK(out && check_index_select(srcs[s], d, idx, out) == 0, "index_select %s src %d dim %d",
                      efla_dtype_name(dt), s, d);
                CHECK(out && efla_tensor_dtype(out) == dt, "dtype kept");
                efla_tensor *neg = efla_index_select(srcs[s], d - 3, idx);   /* negative dim */
                CHECK(neg && check_index_select(srcs[s], d, idx, neg) == 0, "negative dim %d", d - 3);
                efla_tensor_release(out);
                efla_tensor_release(neg);
                efla_tensor_release(idx);
            }
        efla_tensor_release(t);
        efla_tensor_release(tt);
        efla_tensor_release(tn);
    }
    /* Large enough for OpenMP, along each dim. */
    int64_t big[2] = { 300, 200 }, ni = 500;
    efla_tensor *t = rnd(2, big, EFLA_FLOAT32);
    for (int d = 0; d < 2; d++) {
        efla_tensor *idx = index_tensor(1, &ni, big[d]);
        efla_tensor *out = efla_index_select(t, d, idx);
        CHECK(out && check_index_select(t, d, idx, out) == 0, "big index_select dim %d", d);
        efla_tensor_release(out);
        efla_tensor_release(idx);
    }
    /* Empty index gives an empty dim. */
    int64_t zero = 0;
    efla_tensor *e = index_tensor(1, &zero, 1);
    efla_tensor *out = efla_index_select(t, 1, e);
    CHECK(out && efla_tensor_size(out, 0) == 300 && efla_tensor_size(out, 1) == 0, "empty index");
    efla_tensor_release(out);
    efla_tensor_release(e);
    /* A non-contiguous index (a column of a [7,2] index). */
    int64_t is[2] = { 7, 2 };
    efla_tensor *i2 = index_tensor(2, is, 200);
    efla_tensor *col = MUST(efla_select(i2, 1, 1));
    out = efla_index_select(t, 1, col);
    CHECK(out && check_index_select(t, 1, col, out) == 0, "strided index");
    efla_tensor_release(out);
    efla_tensor_release(col);
    efla_tensor_release(i2);
    efla_tensor_release(t);
}

/* ---- gather ----------------------------------------------------------------------------------- */
static double check_gather(const efla_tensor *t, int d, const efla_tensor *idx, const efla_tensor *out) {
    int nd = efla_tensor_ndim(idx);
    int64_t shape[EFLA_MAX_DIMS], p[EFLA_MAX_DIMS] = {0}, q[EFLA_MAX_DIMS];
    for (int i = 0; i < nd; i++) shape[i] = efla_tensor_size(idx, i);
    if (!has_shape(out, nd, shape)) return INFINITY;
    for (int i = 0; i < nd; i++) if (shape[i] == 0) return 0;
    double worst = 0;
    do {
        memcpy(q, p, sizeof q);
        q[d] = (int64_t)get(idx, p);
        double e = fabs(get(out, p) - get(t, q));
        if (!(e <= worst)) worst = e;
    } while (next_idx(nd, shape, p));
    return worst;
}

static void test_gather(void) {
    int64_t shape[3] = { 4, 5, 6 };
    for (int k = 0; k < N_DTYPES; k++) {
        efla_dtype dt = all_dtypes[k];
        efla_tensor *t = rnd(3, shape, dt);
        efla_tensor *tt = MUST(efla_transpose(t, 0, 1));   /* [5,4,6] */
        const efla_tensor *srcs[2] = { t, tt };
        for (int s = 0; s < 2; s++)
            for (int d = 0; d < 3; d++) {
                int64_t ish[3] = { 3, 4, 5 };
                ish[d] = 7;
                efla_tensor *idx = index_tensor(3, ish, efla_tensor_size(srcs[s], d));
                efla_tensor *out = efla_gather(srcs[s], d, idx);
                CHECK(out && check_gather(srcs[s], d, idx, out) == 0, "gather %s src %d dim %d",
                      efla_dtype_name(dt), s, d);
                /* The kernel honours a strided index and a strided output too. */
                efla_tensor *idx_t = MUST(efla_transpose(idx, 0, 2));
                efla_tensor *idx_tc = index_tensor(3, (int64_t[]){ ish[2], ish[1], ish[0] }, 1);
                /* rebuild: idx_tc holds idx's values transposed, so transposing it back gives
                 * a non-contiguous view equal to idx */
                efla_tensor_release(idx_tc);
                int64_t tsh[3] = { ish[2], ish[1], ish[0] };
                idx_tc = MUST(efla_empty(3, tsh, EFLA_INT64, EFLA_DEVICE_CPU));
                int64_t p[3] = {0};
                do {
                    int64_t pt[3] = { p[2], p[1], p[0] };
                    MUST_OK(efla_set(idx_tc, pt, get(idx, p)));
                } while (next_idx(3, ish, p));
                efla_tensor *idx_nc = MUST(efla_transpose(idx_tc, 0, 2));
                efla_tensor *o2 = MUST(efla_empty(3, tsh, dt, EFLA_DEVICE_CPU));
                efla_tensor *o2v = MUST(efla_transpose(o2, 0, 2));
                CHECK(efla_cpu_gather(o2v, srcs[s], d, idx_nc) == 0, "kernel gather on strided index");
                CHECK(check_gather(srcs[s], d, idx_nc, o2v) == 0, "kernel gather strided %s dim %d",
                      efla_dtype_name(dt), d);
                efla_tensor_release(o2v); efla_tensor_release(o2); efla_tensor_release(idx_nc);
                efla_tensor_release(idx_tc); efla_tensor_release(idx_t);
                efla_tensor_release(out);
                efla_tensor_release(idx);
            }
        efla_tensor_release(t);
        efla_tensor_release(tt);
    }
    /* Large (OpenMP) gather along the last dim and along dim 0. */
    int64_t big[2] = { 256, 300 }, ish[2] = { 256, 200 }, ish0[2] = { 400, 300 };
    efla_tensor *t = rnd(2, big, EFLA_FLOAT64);
    efla_tensor *idx = index_tensor(2, ish, 300), *idx0 = index_tensor(2, ish0, 256);
    efla_tensor *out = efla_gather(t, 1, idx), *out0 = efla_gather(t, 0, idx0);
    CHECK(out && check_gather(t, 1, idx, out) == 0, "big gather dim 1");
    CHECK(out0 && check_gather(t, 0, idx0, out0) == 0, "big gather dim 0");
    efla_tensor_release(out); efla_tensor_release(out0);
    efla_tensor_release(idx); efla_tensor_release(idx0);
    efla_tensor_release(t);
}

/* ---- scatter_add / index_add ------------------------------------------------------------------- */
/* Reference of out = t + scatter(src) (index any shape within src), as a double array in t's
 * row-major order; returns max |out - ref| / max(1,|ref|). */
static double check_scatter_add(const efla_tensor *t, int d, const efla_tensor *idx, const efla_tensor *src,
                                const efla_tensor *out) {
    int nd = efla_tensor_ndim(t);
    int64_t tsh[EFLA_MAX_DIMS], ish[EFLA_MAX_DIMS], p[EFLA_MAX_DIMS] = {0};
    for (int i = 0; i < nd; i++) { tsh[i] = efla_tensor_size(t, i); ish[i] = efla_tensor_size(idx, i); }
    if (!has_shape(out, nd, tsh)) return INFINITY;
    int64_t n = efla_tensor_numel(t);
    double *ref = calloc((size_t)n, sizeof *ref);
    int64_t k = 0;
    do ref[k++] = get(t, p); while (next_idx(nd, tsh, p));
    memset(p, 0, sizeof p);
    int empty = 0;
    for (int i = 0; i < nd; i++) empty |= ish[i] == 0;
    if (!empty) do {
        int64_t q[EFLA_MAX_DIMS];
        memcpy(q, p, sizeof q);
        q[d] = (int64_t)get(idx, p);
        int64_t lin = 0;
        for (int i = 0; i < nd; i++) lin = lin * tsh[i] + q[i];
        ref[lin] += get(src, p);
    } while (next_idx(nd, ish, p));
    double worst = 0;
    memset(p, 0, sizeof p);
    k = 0;
    do {
        double e = fabs(get(out, p) - ref[k]) / fmax(1, fabs(ref[k]));
        if (!(e <= worst)) worst = e;
        k++;
    } while (next_idx(nd, tsh, p));
    free(ref);
    return worst;
}

static void test_scatter_add(void) {
    const efla_dtype dts[4] = { EFLA_FLOAT32, EFLA_FLOAT64, EFLA_BFLOAT16, EFLA_INT64 };
    const double tol[4] = { 1e-6, 1e-14, 2e-2, 0 };
    int64_t tsh[3] = { 4, 5, 6 };
    for (int k = 0; k < 4; k++) {
        efla_tensor *t = rnd(3, tsh, dts[k]);
        for (int d = 0; d < 3; d++) {
            int64_t ish[3] = { 3, 4, 5 }, ssh[3] = { 4, 5, 6 };
            ish[d] = 9;
            ssh[d] = 10;                                    /* src larger than index */
            efla_tensor *idx = index_tensor(3, ish, tsh[d]);
            efla_tensor *src = rnd(3, ssh, dts[k]);
            efla_tensor *out = efla_scatter_add(t, d, idx, src);
            double err = out ? check_scatter_add(t, d, idx, src, out) : INFINITY;
            CHECK(err <= tol[k], "scatter_add %s dim %d: err %g", efla_dtype_name(dts[k]), d, err);
            /* strided src */
            efla_tensor *srct = MUST(efla_transpose(src, 0, 2));
            int64_t s2[3] = { ssh[2], ssh[1], ssh[0] };
            efla_tensor *srcc = rnd(3, s2, dts[k]);
            efla_tensor *srcv = MUST(efla_transpose(srcc, 0, 2));   /* non-contiguous, src's shape */
            efla_tensor *out2 = efla_scatter_add(t, d, idx, srcv);
            err = out2 ? check_scatter_add(t, d, idx, srcv, out2) : INFINITY;
            CHECK(err <= tol[k], "scatter_add strided src %s dim %d: err %g", efla_dtype_name(dts[k]), d, err);
            efla_tensor_release(out2); efla_tensor_release(srcv); efla_tensor_release(srcc);
            efla_tensor_release(srct);
            efla_tensor_release(out); efla_tensor_release(src); efla_tensor_release(idx);
        }
        /* a strided t (transpose of a [6,5,4]) */
        efla_tensor *tb = rnd(3, (int64_t[]){ 6, 5, 4 }, dts[k]);
        efla_tensor *tv = MUST(efla_transpose(tb, 0, 2));
        efla_tensor *idx = index_tensor(3, (int64_t[]){ 4, 5, 3 }, 6);
        efla_tensor *src = rnd(3, (int64_t[]){ 4, 5, 3 }, dts[k]);
        efla_tensor *out = efla_scatter_add(tv, 2, idx, src);
        double err = out ? check_scatter_add(tv, 2, idx, src, out) : INFINITY;
        CHECK(err <= tol[k] && efla_tensor_is_contiguous(out), "scatter_add into a strided t %s: err %g",
              efla_dtype_name(dts[k]), err);
        efla_tensor_release(out); efla_tensor_release(src); efla_tensor_release(idx);
        efla_tensor_release(tv); efla_tensor_release(tb);
        efla_tensor_release(t);
    }
    /* uint8 adds are not supported: a clear error */
    int64_t s[1] = { 4 };
    efla_tensor *u = rnd(1, s, EFLA_UINT8), *i = index_tensor(1, s, 4);
    CHECK_ERROR(efla_scatter_add(u, 0, i, u) == NULL, "uint8 is not supported");
    efla_tensor_release(u); efla_tensor_release(i);
}

/* index_add kernel directly, into a non-contiguous destination. */
static void test_index_add_kernel(void) {
    int64_t osh[3] = { 6, 5, 4 }, n9 = 9;
    for (int d = 0; d < 3; d++) {
        efla_tensor *base = rnd(3, osh, EFLA_FLOAT64);
        efla_tensor *out = MUST(efla_transpose(base, 0, 2));   /* [4,5,6] strided */
        int64_t ssh[3] = { 4, 5, 6 };
        ssh[d] = n9;
        efla_tensor *src = rnd(3, ssh, EFLA_FLOAT64);
        efla_tensor *idx = index_tensor(1, &n9, efla_tensor_size(out, d));
        /* reference: expand the 1-d index to src's shape and use the scatter reference */
        efla_tensor *before = MUST(efla_empty(3, (int64_t[]){ 4, 5, 6 }, EFLA_FLOAT64, EFLA_DEVICE_CPU));
        efla_tensor *idx_full = MUST(efla_empty(3, ssh, EFLA_INT64, EFLA_DEVICE_CPU));
        int64_t p[3] = {0};
        do MUST_OK(efla_set(before, p, get(out, p))); while (next_idx(3, (int64_t[]){ 4, 5, 6 }, p));
        memset(p, 0, sizeof p);
        do { int64_t j = p[d]; MUST_OK(efla_set(idx_full, p, get(idx, &j))); } while (next_idx(3, ssh, p));
        CHECK(efla_cpu_index_add(out, d, idx, src) == 0, "index_add kernel dim %d", d);
        double err = check_scatter_add(before, d, idx_full, src, out);
        CHECK(err < 1e-14, "index_add dim %d: err %g", d, err);
        efla_tensor_release(before); efla_tensor_release(idx_full);
        efla_tensor_release(idx); efla_tensor_release(src); efla_tensor_release(out); efla_tensor_release(base);
    }
}

/* The adds give bit-identical results for 1 and 2 threads (race-free, fixed order). */
static void test_threads(void) {
    int64_t osh[2] = { 50, 512 }, ssh[2] = { 4000, 512 }, n = 4000;
    efla_tensor *base = rnd(2, osh, EFLA_FLOAT32);
    efla_tensor *src = rnd(2, ssh, EFLA_FLOAT32);
    efla_tensor *idx = index_tensor(1, &n, 50);
    efla_tensor *sidx = index_tensor(2, ssh, 50);
    int saved = efla_num_threads();
    float *r[2][2];
    for (int th = 0; th < 2; th++) {
        efla_set_num_threads(th + 1);
        efla_tensor *o = MUST(efla_from_buffer(2, osh, EFLA_FLOAT32, efla_tensor_data(base), 50 * 512 * 4));
        CHECK(efla_cpu_index_add(o, 0, idx, src) == 0, "index_add big");
        r[th][0] = malloc(50 * 512 * 4);
        MUST_OK(efla_to_buffer(o, r[th][0], 50 * 512 * 4));
        efla_tensor_release(o);
        o = MUST(efla_from_buffer(2, osh, EFLA_FLOAT32, efla_tensor_data(base), 50 * 512 * 4));
        CHECK(efla_cpu_scatter_add(o, 0, sidx, src) == 0, "scatter_add big");
        r[th][1] = malloc(50 * 512 * 4);
        MUST_OK(efla_to_buffer(o, r[th][1], 50 * 512 * 4));
        efla_tensor_release(o);
    }
    efla_set_num_threads(saved);
    CHECK(!memcmp(r[0][0], r[1][0], 50 * 512 * 4), "index_add: 1 and 2 threads agree bit for bit");
    CHECK(!memcmp(r[0][1], r[1][1], 50 * 512 * 4), "scatter_add: 1 and 2 threads agree bit for bit");
    /* and against the double reference */
    efla_tensor *o = MUST(efla_from_buffer(2, osh, EFLA_FLOAT32, r[0][1], 50 * 512 * 4));
    double err = check_scatter_add(base, 0, sidx, src, o);
    CHECK(err < 1e-5, "big scatter_add err %g", err);
    efla_tensor_release(o);
    for (int a = 0; a < 2; a++) for (int b = 0; b < 2; b++) free(r[a][b]);
    efla_tensor_release(base); efla_tensor_release(src); efla_tensor_release(idx); efla_tensor_release(sidx);
}

/* ---- embedding, one_hot ------------------------------------------------------------------------------ */
static void test_embedding(void) {
    int64_t wsh[2] = { 10, 4 }, ish[2] = { 2, 3 };
    efla_tensor *w = rnd(2, wsh, EFLA_FLOAT32);
    efla_tensor *idx = index_tensor(2, ish, 10);
    efla_tensor *out = efla_embedding(w, idx);
    int64_t osh[3] = { 2, 3, 4 };
    CHECK(out && has_shape(out, 3, osh), "embedding shape [2,3,4]");
    double worst = 0;
    if (out) {
        int64_t p[3] = {0};
        do {
            int64_t q[2] = { (int64_t)get(idx, p), p[2] };
            worst = fmax(worst, fabs(get(out, p) - get(w, q)));
        } while (next_idx(3, osh, p));
    }
    CHECK(worst == 0, "embedding values");
    efla_tensor_release(out);
    /* 0-d index -> one row */
    int64_t seven = 7;
    efla_tensor *i0 = MUST(efla_from_buffer(0, NULL, EFLA_INT64, &seven, 8));
    out = efla_embedding(w, i0);
    CHECK(out && efla_tensor_ndim(out) == 1 && efla_tensor_size(out, 0) == 4, "0-d index");
    if (out) {
        int64_t j = 2, q[2] = { 7, 2 };
        CHECK(get(out, &j) == get(w, q), "0-d index value");
    }
    efla_tensor_release(out);
    efla_tensor_release(i0);
    /* a transposed (non-contiguous) weight */
    efla_tensor *wt_base = rnd(2, (int64_t[]){ 4, 10 }, EFLA_FLOAT64);
    efla_tensor *wt = MUST(efla_transpose(wt_base, 0, 1));
    out = efla_embedding(wt, idx);
    worst = 0;
    if (out) {
        int64_t p[3] = {0};
        do {
            int64_t q[2] = { (int64_t)get(idx, p), p[2] };
            worst = fmax(worst, fabs(get(out, p) - get(wt, q)));
        } while (next_idx(3, osh, p));
    }
    CHECK(out && worst == 0, "embedding of a strided weight");
    efla_tensor_release(out); efla_tensor_release(wt); efla_tensor_release(wt_base);
    /* errors */
    int64_t bad[2] = { 3, 10 };
    efla_tensor *bi = MUST(efla_from_buffer(1, (int64_t[]){ 2 }, EFLA_INT64, bad, 16));
    CHECK_ERROR(efla_embedding(w, bi) == NULL, "embedding: index 10 is out of range for dim 0 of size 10");
    efla_tensor *fi = rnd(1, (int64_t[]){ 2 }, EFLA_FLOAT32);
    CHECK_ERROR(efla_embedding(w, fi) == NULL, "embedding: the index must be int64, not float32");
    CHECK_ERROR(efla_embedding(fi, idx) == NULL, "the weight must be 2-d");
    efla_tensor_release(bi); efla_tensor_release(fi);
    efla_tensor_release(idx);
    efla_tensor_release(w);
}

static void test_one_hot(void) {
    int64_t vals[6] = { 0, 3, 1, 3, 2, 0 }, ish[2] = { 2, 3 };
    efla_tensor *idx = MUST(efla_from_buffer(2, ish, EFLA_INT64, vals, sizeof vals));
    efla_tensor *oh = efla_one_hot(idx, 5);
    int64_t osh[3] = { 2, 3, 5 };
    CHECK(oh && has_shape(oh, 3, osh) && efla_tensor_dtype(oh) == EFLA_INT64, "one_hot shape/dtype");
    int ok = oh != NULL;
    if (oh) {
        int64_t p[3] = {0};
        do ok &= get(oh, p) == (vals[p[0] * 3 + p[1]] == p[2] ? 1.0 : 0.0); while (next_idx(3, osh, p));
    }
    CHECK(ok, "one_hot values");
    efla_tensor_release(oh);
    oh = efla_one_hot(idx, -1);
    CHECK(oh && efla_tensor_size(oh, 2) == 4, "one_hot infers max+1 = 4");
    efla_tensor_release(oh);
    efla_tensor *ei = index_tensor(1, (int64_t[]){ 0 }, 1);
    oh = efla_one_hot(ei, 3);
    CHECK(oh && efla_tensor_size(oh, 0) == 0 && efla_tensor_size(oh, 1) == 3, "one_hot of an empty index");
    efla_tensor_release(oh);
    CHECK_ERROR(efla_one_hot(ei, -1) == NULL, "cannot infer num_classes from an empty index");
    efla_tensor_release(ei);
    CHECK_ERROR(efla_one_hot(idx, 3) == NULL, "one_hot: class index 3 is out of range for num_classes 3");
    int64_t neg[2] = { 1, -2 };
    efla_tensor *ni = MUST(efla_from_buffer(1, (int64_t[]){ 2 }, EFLA_INT64, neg, 16));
    CHECK_ERROR(efla_one_hot(ni, 4) == NULL, "class index -2 is negative");
    efla_tensor *fi = rnd(1, (int64_t[]){ 2 }, EFLA_FLOAT64);
    CHECK_ERROR(efla_one_hot(fi, 4) == NULL, "must be int64");
    efla_tensor_release(fi); efla_tensor_release(ni); efla_tensor_release(idx);
}

/* ---- cat, stack ------------------------------------------------------------------------------------- */
static void test_cat(void) {
    efla_tensor *a = rnd(2, (int64_t[]){ 2, 3 }, EFLA_FLOAT32);
    efla_tensor *b_base = rnd(2, (int64_t[]){ 5, 2 }, EFLA_FLOAT32);
    efla_tensor *b = MUST(efla_transpose(b_base, 0, 1));          /* [2,5] strided */
    efla_tensor *c = rnd(2, (int64_t[]){ 2, 1 }, EFLA_INT64);
    efla_tensor *ts[3] = { a, b, c };
    for (int dd = 0; dd < 2; dd++) {
        int dim = dd ? -1 : 1;
        efla_tensor *out = efla_cat(3, ts, dim);
        int64_t osh[2] = { 2, 9 };
        CHECK(out && has_shape(out, 2, osh) && efla_tensor_dtype(out) == EFLA_FLOAT32, "cat shape and promoted dtype");
        int ok = out != NULL;
        if (out) {
            int64_t p[2] = {0};
            do {
                int64_t col = p[1], q[2] = { p[0], 0 };
                const efla_tensor *src = col < 3 ? a : col < 8 ? b : c;
                q[1] = col < 3 ? col : col < 8 ? col - 3 : col - 8;
                ok &= (float)get(src, q) == (float)get(out, p);
            } while (next_idx(2, osh, p));
        }
        CHECK(ok, "cat values (dim %d)", dim);
        efla_tensor_release(out);
    }
    /* dim 0 */
    efla_tensor *d0[2] = { a, MUST(efla_transpose(b, 0, 1)) };   /* [2,3] and [5,2]: mismatch */
    CHECK_ERROR(efla_cat(2, d0, 0) == NULL, "cat: tensor 1 has shape [5,2] but tensor 0 has shape [2,3]");
    efla_tensor_release(d0[1]);
    efla_tensor *e = rnd(2, (int64_t[]){ 4, 3 }, EFLA_FLOAT64);
    d0[1] = e;
    efla_tensor *out = efla_cat(2, d0, 0);
    CHECK(out && efla_tensor_size(out, 0) == 6 && efla_tensor_dtype(out) == EFLA_FLOAT64, "cat dim 0 -> [6,3] float64");
    if (out) {
        int64_t p[2] = { 5, 2 }, q[2] = { 3, 2 };
        CHECK(get(out, p) == get(e, q), "cat dim 0 value");
    }
    efla_tensor_release(out);
    efla_tensor_release(e);
    CHECK_ERROR(efla_cat(0, ts, 0) == NULL, "needs at least one tensor");
    CHECK_ERROR(efla_cat(3, ts, 2) == NULL, "dim 2 is out of range");
    /* ndim mismatch names the tensor */
    efla_tensor *v = rnd(1, (int64_t[]){ 2 }, EFLA_FLOAT32);
    efla_tensor *m[2] = { a, v };
    CHECK_ERROR(efla_cat(2, m, 0) == NULL, "tensor 1 has shape [2] but tensor 0 has shape [2,3]");
    efla_tensor_release(v);
    efla_tensor_release(a); efla_tensor_release(b); efla_tensor_release(b_base); efla_tensor_release(c);
}

static void test_stack(void) {
    efla_tensor *t[3];
    for (int i = 0; i < 3; i++) t[i] = rnd(2, (int64_t[]){ 2, 3 }, i == 2 ? EFLA_FLOAT64 : EFLA_FLOAT32);
    for (int dim = -3; dim < 3; dim++) {
        int d = dim < 0 ? dim + 3 : dim;
        efla_tensor *out = efla_stack(3, t, dim);
        int64_t osh[3];
        for (int i = 0, k = 0; i < 3; i++) osh[i] = i == d ? 3 : (k++ ? 3 : 2);
        CHECK(out && has_shape(out, 3, osh) && efla_tensor_dtype(out) == EFLA_FLOAT64, "stack dim %d shape", dim);
        int ok = out != NULL;
        if (out) {
            int64_t p[3] = {0};
            do {
                int64_t q[2], k = 0;
                for (int i = 0; i < 3; i++) if (i != d) q[k++] = p[i];
                ok &= get(out, p) == get(t[p[d]], q);
            } while (next_idx(3, osh, p));
        }
        CHECK(ok, "stack dim %d values", dim);
        efla_tensor_release(out);
    }
    efla_tensor *w = rnd(2, (int64_t[]){ 3, 2 }, EFLA_FLOAT32);
    efla_tensor *m[2] = { t[0], w };
    CHECK_ERROR(efla_stack(2, m, 0) == NULL, "stack: tensor 1 has shape [3,2] but tensor 0 has shape [2,3]");
    CHECK_ERROR(efla_stack(3, t, 3) == NULL, "dim 3 is out of range");
    efla_tensor_release(w);
    for (int i = 0; i < 3; i++) efla_tensor_release(t[i]);
}

/* ---- errors -------------------------------------------------------------------------------------------- */
static void test_errors(void) {
    efla_tensor *t = rnd(2, (int64_t[]){ 5, 3 }, EFLA_FLOAT32);
    efla_tensor *i7 = index_of(2, (int64_t[]){ 0, 7 });
    CHECK_ERROR(efla_index_select(t, 0, i7) == NULL, "index_select: index 7 is out of range for dim 0 of size 5");
    efla_tensor *im = index_of(2, (int64_t[]){ -1, 0 });
    CHECK_ERROR(efla_index_select(t, 1, im) == NULL, "index_select: index -1 is out of range for dim 1 of size 3");
    efla_tensor *fi = rnd(1, (int64_t[]){ 2 }, EFLA_FLOAT32);
    CHECK_ERROR(efla_index_select(t, 0, fi) == NULL, "index_select: the index must be int64, not float32");
    efla_tensor *i2 = index_tensor(2, (int64_t[]){ 2, 2 }, 3);
    CHECK_ERROR(efla_index_select(t, 0, i2) == NULL, "index must be 1-d, got shape [2,2]");
    CHECK_ERROR(efla_index_select(t, 2, i7) == NULL, "index_select: dim 2 is out of range");
    /* gather */
    efla_tensor *g9 = MUST(efla_from_buffer(2, (int64_t[]){ 1, 2 }, EFLA_INT64, (int64_t[]){ 1, 9 }, 16));
    CHECK_ERROR(efla_gather(t, 1, g9) == NULL, "gather: index 9 is out of range for dim 1 of size 3");
    efla_tensor *g1 = index_of(2, (int64_t[]){ 0, 1 });
    CHECK_ERROR(efla_gather(t, 1, g1) == NULL, "gather: the index has 1 dims (shape [2]) but the tensor has 2");
    efla_tensor *gbig = index_tensor(2, (int64_t[]){ 6, 2 }, 3);
    CHECK_ERROR(efla_gather(t, 1, gbig) == NULL, "larger than the tensor's shape [5,3] at dim 0");
    CHECK_ERROR(efla_gather(t, 0, fi) == NULL, "must be int64");
    /* scatter_add */
    efla_tensor *src64 = rnd(2, (int64_t[]){ 1, 2 }, EFLA_FLOAT64);
    efla_tensor *gi = index_tensor(2, (int64_t[]){ 1, 2 }, 3);
    CHECK_ERROR(efla_scatter_add(t, 1, gi, src64) == NULL, "scatter_add: src is float64 but the tensor is float32");
    efla_tensor *src1 = rnd(2, (int64_t[]){ 1, 1 }, EFLA_FLOAT32);
    CHECK_ERROR(efla_scatter_add(t, 1, gi, src1) == NULL, "larger than src's shape [1,1] at dim 1");
    efla_tensor *src32 = rnd(2, (int64_t[]){ 1, 2 }, EFLA_FLOAT32);
    CHECK_ERROR(efla_scatter_add(t, 1, g9, src32) == NULL, "scatter_add: index 9 is out of range for dim 1 of size 3");
    efla_tensor *s0 = MUST(efla_scalar(1, EFLA_FLOAT32, EFLA_DEVICE_CPU));
    efla_clear_error();
    efla_tensor *z = efla_index_select(s0, 0, g1);
    CHECK_ERROR(z == NULL, "cannot index a 0-d tensor");
    efla_tensor_release(s0); efla_tensor_release(src1); efla_tensor_release(src32); efla_tensor_release(src64);
    efla_tensor_release(gi); efla_tensor_release(gbig); efla_tensor_release(g1); efla_tensor_release(g9);
    efla_tensor_release(i2); efla_tensor_release(fi); efla_tensor_release(im); efla_tensor_release(i7);
    efla_tensor_release(t);
}

/* ---- gradients against central finite differences (float64) ----------------------------------------------- */
typedef efla_tensor *(*fwd_fn)(efla_tensor *const *in, void *ctx);

/* Max |analytic - numeric| over the inputs flagged in `check` (float64 contiguous leaves). */
static double grad_check(int n, efla_tensor *const *in, const int *check, fwd_fn f, void *ctx) {
    for (int i = 0; i < n; i++) if (check[i]) MUST_OK(efla_set_requires_grad(in[i], 1));
    efla_tensor *out = f(in, ctx);
    if (!out) { fprintf(stderr, "grad_check forward: %s\n", efla_last_error()); return INFINITY; }
    int64_t no = efla_tensor_numel(out), shape[EFLA_MAX_DIMS];
    int nd = efla_tensor_ndim(out);
    for (int i = 0; i < nd; i++) shape[i] = efla_tensor_size(out, i);
    double *w = malloc((size_t)(no ? no : 1) * sizeof *w);
    for (int64_t i = 0; i < no; i++) w[i] = urand() * 2 - 1;
    efla_tensor *W = MUST(efla_from_buffer(nd, shape, EFLA_FLOAT64, w, (size_t)no * sizeof *w));
    double worst = 0;
    if (efla_backward(out, W, 0)) { fprintf(stderr, "backward: %s\n", efla_last_error()); worst = INFINITY; }
    efla_tensor_release(out);
    efla_tensor_release(W);
    const double h = 1e-6;
    for (int i = 0; i < n && isfinite(worst); i++) {
        if (!check[i]) continue;
        efla_tensor *g = efla_grad(in[i]);
        if (!g) { fprintf(stderr, "no grad for input %d\n", i); worst = INFINITY; break; }
        int64_t m = efla_tensor_numel(in[i]);
        double *ga = malloc((size_t)m * sizeof *ga), *x = efla_tensor_data(in[i]);
        MUST_OK(efla_to_buffer(g, ga, (size_t)m * sizeof *ga));
        int prev = efla_set_grad_enabled(0);
        for (int64_t e = 0; e < m; e++) {
            double x0 = x[e];
            x[e] = x0 + h;
            efla_tensor *op = MUST(f(in, ctx));
            double sp = weighted_total(op, w);   /* before x changes again (views would see it) */
            x[e] = x0 - h;
            efla_tensor *om = MUST(f(in, ctx));
            double sm = weighted_total(om, w);
            x[e] = x0;
            double num = (sp - sm) / (2 * h);
            worst = fmax(worst, fabs(num - ga[e]));
            efla_tensor_release(op);
            efla_tensor_release(om);
        }
        efla_set_grad_enabled(prev);
        free(ga);
        efla_tensor_release(g);
    }
    for (int i = 0; i < n; i++) if (check[i]) { efla_set_grad(in[i], NULL); efla_set_requires_grad(in[i], 0); }
    free(w);
    return worst;
}

static efla_tensor *idx_ctx;   /* the index the forward functions use */
static efla_tensor *f_index_select(efla_tensor *const *in, void *ctx) { return efla_index_select(in[0], *(int *)ctx, idx_ctx); }
static efla_tensor *f_index_select_t(efla_tensor *const *in, void *ctx) {
    efla_tensor *tt = efla_transpose(in[0], 0, 2);
    efla_tensor *o = tt ? efla_index_select(tt, 1, idx_ctx) : NULL;
    efla_tensor_release(tt);
    return o;
}
static efla_tensor *f_embedding(efla_tensor *const *in, void *ctx) { return efla_embedding(in[0], idx_ctx); }
/* Transposing the output hands backward a non-contiguous incoming gradient. */
static efla_tensor *transposed(efla_tensor *o) {
    efla_tensor *t = o ? efla_transpose(o, 0, -1) : NULL;
    efla_tensor_release(o);
    return t;
}
static efla_tensor *f_index_select_out_t(efla_tensor *const *in, void *ctx) { return transposed(efla_index_select(in[0], 1, idx_ctx)); }
static efla_tensor *f_embedding_out_t(efla_tensor *const *in, void *ctx) { return transposed(efla_embedding(in[0], idx_ctx)); }
static efla_tensor *f_gather_out_t(efla_tensor *const *in, void *ctx) { return transposed(efla_gather(in[0], 2, idx_ctx)); }
static efla_tensor *f_scatter_t(efla_tensor *const *in, void *ctx) {   /* strided t */
    efla_tensor *tt = efla_transpose(in[0], 0, 1);
    efla_tensor *o = tt ? efla_scatter_add(tt, 0, idx_ctx, in[1]) : NULL;
    efla_tensor_release(tt);
    return transposed(o);
}
static efla_tensor *f_gather(efla_tensor *const *in, void *ctx) { return efla_gather(in[0], *(int *)ctx, idx_ctx); }
static efla_tensor *f_scatter(efla_tensor *const *in, void *ctx) { return efla_scatter_add(in[0], *(int *)ctx, idx_ctx, in[1]); }
static efla_tensor *f_cat(efla_tensor *const *in, void *ctx) { return efla_cat(3, in, *(int *)ctx); }
static efla_tensor *f_stack(efla_tensor *const *in, void *ctx) { return efla_stack(2, in, *(int *)ctx); }

static void test_gradients(void) {
    const double tol = 1e-7;
    int64_t sh[3] = { 3, 4, 5 };
    efla_tensor *x = rnd(3, sh, EFLA_FLOAT64);
    int one[3] = { 1, 1, 1 };
    for (int d = 0; d < 3; d++) {
        idx_ctx = index_of(5, (int64_t[]){ 2, 0, 2, 1, 2 });
        double err = grad_check(1, &x, one, f_index_select, &d);
        CHECK(err < tol, "index_select grad dim %d: %g", d, err);
        efla_tensor_release(idx_ctx);
    }
    idx_ctx = index_of(6, (int64_t[]){ 3, 3, 0, 1, 3, 2 });
    double err = grad_check(1, &x, one, f_index_select_t, NULL);
    CHECK(err < tol, "index_select of a transposed view grad: %g", err);
    efla_tensor_release(idx_ctx);
    idx_ctx = index_of(6, (int64_t[]){ 3, 3, 0, 1, 3, 2 });
    err = grad_check(1, &x, one, f_index_select_out_t, NULL);
    CHECK(err < tol, "index_select with a strided incoming grad: %g", err);
    efla_tensor_release(idx_ctx);
    /* embedding */
    efla_tensor *w = rnd(2, (int64_t[]){ 6, 3 }, EFLA_FLOAT64);
    idx_ctx = index_tensor(2, (int64_t[]){ 2, 4 }, 6);
    err = grad_check(1, &w, one, f_embedding, NULL);
    CHECK(err < tol, "embedding grad: %g", err);
    err = grad_check(1, &w, one, f_embedding_out_t, NULL);
    CHECK(err < tol, "embedding grad, strided incoming grad: %g", err);
    efla_tensor_release(idx_ctx);
    idx_ctx = index_tensor(3, (int64_t[]){ 3, 4, 7 }, 5);
    err = grad_check(1, &x, one, f_gather_out_t, NULL);
    CHECK(err < tol, "gather grad, strided incoming grad: %g", err);
    efla_tensor_release(idx_ctx);
    /* gather */
    for (int d = 0; d < 3; d++) {
        int64_t ish[3] = { 2, 3, 4 };
        ish[d] = 6;
        idx_ctx = index_tensor(3, ish, sh[d]);
        err = grad_check(1, &x, one, f_gather, &d);
        CHECK(err < tol, "gather grad dim %d: %g", d, err);
        efla_tensor_release(idx_ctx);
    }
    /* scatter_add, to t and to a src larger than the index */
    efla_tensor *t = rnd(2, (int64_t[]){ 3, 4 }, EFLA_FLOAT64);
    efla_tensor *src = rnd(2, (int64_t[]){ 3, 5 }, EFLA_FLOAT64);
    efla_tensor *in2[2] = { t, src };
    int dim1 = 1;
    idx_ctx = index_tensor(2, (int64_t[]){ 2, 5 }, 4);
    err = grad_check(2, in2, (int[]){ 1, 1 }, f_scatter, &dim1);
    CHECK(err < tol, "scatter_add grad: %g", err);
    err = grad_check(2, in2, (int[]){ 0, 1 }, f_scatter, &dim1);
    CHECK(err < tol, "scatter_add grad (src only): %g", err);
    efla_tensor_release(idx_ctx);
    /* strided t ([4,3] view of [3,4]) scattered along dim 0, output transposed */
    idx_ctx = index_tensor(2, (int64_t[]){ 5, 3 }, 4);
    efla_tensor *src2 = rnd(2, (int64_t[]){ 5, 3 }, EFLA_FLOAT64);
    efla_tensor *in3[2] = { t, src2 };
    err = grad_check(2, in3, (int[]){ 1, 1 }, f_scatter_t, NULL);
    CHECK(err < tol, "scatter_add grad with strided t and grad: %g", err);
    efla_tensor_release(src2);
    efla_tensor_release(idx_ctx);
    /* cat: the middle input does not require grad */
    efla_tensor *c[3] = { rnd(2, (int64_t[]){ 2, 3 }, EFLA_FLOAT64), rnd(2, (int64_t[]){ 2, 1 }, EFLA_FLOAT64),
                          rnd(2, (int64_t[]){ 2, 4 }, EFLA_FLOAT64) };
    err = grad_check(3, c, (int[]){ 1, 0, 1 }, f_cat, &dim1);
    CHECK(err < tol, "cat grad: %g", err);
    efla_tensor *cat_out;
    MUST_OK(efla_set_requires_grad(c[0], 1));
    cat_out = MUST(efla_cat(3, c, 1));
    CHECK(efla_grad_fn_name(cat_out) && !strcmp(efla_grad_fn_name(cat_out), "cat"), "cat records a node");
    efla_tensor_release(cat_out);
    MUST_OK(efla_set_requires_grad(c[0], 0));
    /* stack */
    efla_tensor *s[2] = { rnd(2, (int64_t[]){ 3, 2 }, EFLA_FLOAT64), rnd(2, (int64_t[]){ 3, 2 }, EFLA_FLOAT64) };
    for (int d = 0; d < 3; d++) {
        err = grad_check(2, s, (int[]){ 1, 1 }, f_stack, &d);
        CHECK(err < tol, "stack grad dim %d: %g", d, err);
    }
    for (int i = 0; i < 3; i++) efla_tensor_release(c[i]);
    for (int i = 0; i < 2; i++) efla_tensor_release(s[i]);
    efla_tensor_release(t); efla_tensor_release(src); efla_tensor_release(w); efla_tensor_release(x);
}

int main(int argc, char **argv) {
    TEST_ARGS(argc, argv);
    int64_t live0 = efla_live_tensors();
    RUN(test_index_select);
    RUN(test_gather);
    RUN(test_scatter_add);
    RUN(test_index_add_kernel);
    RUN(test_threads);
    RUN(test_embedding);
    RUN(test_one_hot);
    RUN(test_cat);
    RUN(test_stack);
    RUN(test_errors);
    RUN(test_gradients);
    CHECK_NO_LEAK(live0);
    TEST_SUMMARY();
}

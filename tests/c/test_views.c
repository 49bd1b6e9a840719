/* test_views.c: the view ops and tensor basics of core/views.c and core/tensor.c: view /
 * reshape, transpose, permute, narrow, select, expand, squeeze / unsqueeze, contiguous,
 * clone, to (every dtype pair, bfloat16 rounding), copy_ with broadcasting, buffers,
 * get/set/item, arange/linspace, zeros/ones/full, the RNG (seeds, thread counts, state
 * replay), and the backward of views against central finite differences in float64. */
#include "test_util.h"
#include "internal.h"

/* ---- helpers ------------------------------------------------------------------------- */
static uint64_t lcg_state = 777;
static uint64_t lcg(void) { return lcg_next(&lcg_state); }
static double urand(void) { return (double)lcg() / 2147483648.0; }

static const efla_dtype all_dtypes[] = { EFLA_FLOAT32, EFLA_FLOAT64, EFLA_BFLOAT16, EFLA_INT64, EFLA_UINT8, EFLA_BOOL };
enum { N_DTYPES = 6 };

/* float64 tensor of the given shape holding 0, 1, 2, ... in row-major order. */
static efla_tensor *iota(int nd, const int64_t *shape) {
    int64_t n = 1;
    for (int i = 0; i < nd; i++) n *= shape[i];
    double *b = malloc((size_t)(n ? n : 1) * sizeof *b);
    for (int64_t i = 0; i < n; i++) b[i] = (double)i;
    efla_tensor *t = MUST(efla_from_buffer(nd, shape, EFLA_FLOAT64, b, (size_t)n * sizeof *b));
    free(b);
    return t;
}

static efla_tensor *rnd64(int nd, const int64_t *shape) {
    int64_t n = 1;
    for (int i = 0; i < nd; i++) n *= shape[i];
    double *b = malloc((size_t)(n ? n : 1) * sizeof *b);
    for (int64_t i = 0; i < n; i++) b[i] = urand() * 4 - 2;
    efla_tensor *t = MUST(efla_from_buffer(nd, shape, EFLA_FLOAT64, b, (size_t)n * sizeof *b));
    free(b);
    return t;
}

/* ---- view / reshape ----------------------------------------------------------------------- */
static void test_view_reshape(void) {
    efla_tensor *t = iota(1, (int64_t[]){ 24 });
    efla_tensor *v = efla_view(t, 3, (int64_t[]){ 2, 3, 4 });
    CHECK(has_shape(v, 3, (int64_t[]){ 2, 3, 4 }) && efla_tensor_same_storage(v, t), "view [2,3,4] shares storage");
    int ok = v != NULL;
    if (v) { int64_t p[3] = {0}; do ok &= get(v, p) == 12 * p[0] + 4 * p[1] + p[2]; while (next_idx(3, (int64_t[]){ 2, 3, 4 }, p)); }
    CHECK(ok, "view values");
    efla_tensor *v2 = efla_view(t, 2, (int64_t[]){ -1, 4 });
    CHECK(has_shape(v2, 2, (int64_t[]){ 6, 4 }), "view -1 infers 6");
    efla_tensor *v3 = efla_view(t, 3, (int64_t[]){ 4, -1, 2 });
    CHECK(has_shape(v3, 3, (int64_t[]){ 4, 3, 2 }), "view -1 in the middle infers 3");
    CHECK_ERROR(efla_view(t, 2, (int64_t[]){ -1, -1 }) == NULL, "only one size may be -1");
    CHECK_ERROR(efla_view(t, 2, (int64_t[]){ 5, 5 }) == NULL, "cannot view a tensor of shape [24] (24 elements) as [5,5]");
    CHECK_ERROR(efla_view(t, 2, (int64_t[]){ -1, 5 }) == NULL, "as [-1,5]");
    CHECK_ERROR(efla_view(t, 2, (int64_t[]){ -2, 5 }) == NULL, "negative size -2");

    /* A transpose cannot be flattened without a copy; reshape copies. */
    efla_tensor *m = MUST(efla_view(t, 2, (int64_t[]){ 4, 6 }));
    efla_tensor *mt = MUST(efla_transpose(m, 0, 1));
    CHECK_ERROR(efla_view(mt, 1, (int64_t[]){ 24 }) == NULL, "view: the tensor of shape [6,4] is not laid out");
    efla_tensor *r = efla_reshape(mt, 1, (int64_t[]){ -1 });
    CHECK(has_shape(r, 1, (int64_t[]){ 24 }) && !efla_tensor_same_storage(r, t), "reshape of a transpose copies");
    ok = r != NULL;
    for (int64_t i = 0; r && i < 24; i++) ok &= get(r, &i) == (double)((i % 4) * 6 + i / 4);
    CHECK(ok, "reshape of a transpose: values in the transposed order");
    efla_tensor *r2 = efla_reshape(t, 2, (int64_t[]){ 3, 8 });
    CHECK(r2 && efla_tensor_same_storage(r2, t), "reshape of a contiguous tensor is a view");
    /* Non-contiguous but viewable: merge the outer dims of a narrowed tensor. */
    efla_tensor *n = MUST(efla_narrow(v, 2, 1, 2));    /* [2,3,2], strides [12,4,1] */
    efla_tensor *nv = efla_view(n, 2, (int64_t[]){ 6, 2 });
    CHECK(nv && efla_tensor_same_storage(nv, t) && efla_tensor_stride(nv, 0) == 4, "view of a narrowed tensor merges dims 0,1");
    if (nv) CHECK(get(nv, (int64_t[]){ 5, 1 }) == 12 + 8 + 2, "merged view value");
    CHECK_ERROR(efla_view(n, 1, (int64_t[]){ 12 }) == NULL, "not laid out");
    /* size-1 dims and 0-d */
    efla_tensor *one = MUST(efla_view(t, 4, (int64_t[]){ 1, 24, 1, 1 }));
    efla_tensor *s = iota(1, (int64_t[]){ 1 });
    efla_tensor *s0 = efla_view(s, 0, NULL);
    CHECK(s0 && efla_tensor_ndim(s0) == 0 && efla_tensor_numel(s0) == 1, "view [1] as 0-d");
    efla_tensor *mt1 = MUST(efla_unsqueeze(mt, 1));
    efla_tensor *mtu = efla_view(mt1, 3, (int64_t[]){ 6, 1, 4 });
    CHECK(mtu != NULL, "view of a transpose keeping its layout [6,1,4]");
    efla_tensor_release(mtu);
    efla_tensor_release(mt1);
    efla_tensor_release(s0); efla_tensor_release(s); efla_tensor_release(one);
    efla_tensor_release(nv); efla_tensor_release(n); efla_tensor_release(r2); efla_tensor_release(r);
    efla_tensor_release(mt); efla_tensor_release(m);
    efla_tensor_release(v3); efla_tensor_release(v2); efla_tensor_release(v); efla_tensor_release(t);
}

/* ---- transpose, permute, narrow, select --------------------------------------------------------- */
static void test_permute_narrow_select(void) {
    int64_t sh[3] = { 2, 3, 4 };
    efla_tensor *t = iota(3, sh);
    efla_tensor *tt = efla_transpose(t, 0, -1);
    CHECK(has_shape(tt, 3, (int64_t[]){ 4, 3, 2 }) && efla_tensor_same_storage(tt, t) && !efla_tensor_is_contiguous(tt),
          "transpose(0,-1) is a strided view");
    int ok = tt != NULL;
    int64_t p[3] = {0};
    if (tt) do ok &= get(tt, (int64_t[]){ p[2], p[1], p[0] }) == get(t, p); while (next_idx(3, sh, p));
    CHECK(ok, "transpose values");
    efla_tensor *pm = efla_permute(t, 3, (int[]){ 2, 0, 1 });
    CHECK(has_shape(pm, 3, (int64_t[]){ 4, 2, 3 }), "permute [2,0,1] shape");
    ok = pm != NULL;
    memset(p, 0, sizeof p);
    if (pm) do ok &= get(pm, (int64_t[]){ p[2], p[0], p[1] }) == get(t, p); while (next_idx(3, sh, p));
    CHECK(ok, "permute values");
    CHECK_ERROR(efla_permute(t, 3, (int[]){ 0, 0, 1 }) == NULL, "permute: dim 0 appears twice");
    CHECK_ERROR(efla_permute(t, 2, (int[]){ 0, 1 }) == NULL, "permute: 2 dims given for a tensor of 3 dims");
    CHECK_ERROR(efla_transpose(t, 0, 3) == NULL, "transpose: dim 3 is out of range for a tensor of 3 dims");

    efla_tensor *n = efla_narrow(t, 2, 1, 2);
    CHECK(has_shape(n, 3, (int64_t[]){ 2, 3, 2 }) && efla_tensor_offset(n) == 1, "narrow shape and offset");
    if (n) CHECK(get(n, (int64_t[]){ 1, 2, 1 }) == 12 + 8 + 2, "narrow value");
    efla_tensor *n2 = efla_narrow(t, -3, 1, 1);
    CHECK(n2 && efla_tensor_offset(n2) == 12 && efla_tensor_size(n2, 0) == 1, "narrow with a negative dim");
    efla_tensor *n0 = efla_narrow(t, 1, 3, 0);
    CHECK(n0 && efla_tensor_numel(n0) == 0, "narrow to length 0 at the end");
    CHECK_ERROR(efla_narrow(t, 1, 2, 2) == NULL, "narrow: start 2, length 2 is outside dim 1 of size 3 (shape [2,3,4])");
    CHECK_ERROR(efla_narrow(t, 1, -1, 1) == NULL, "is outside dim 1");

    efla_tensor *s = efla_select(t, 1, -1);
    efla_tensor *s2 = efla_select(t, 1, 2);
    CHECK(has_shape(s, 2, (int64_t[]){ 2, 4 }) && s2 && efla_tensor_offset(s) == efla_tensor_offset(s2),
          "select(-1) == select(size-1)");
    if (s) CHECK(get(s, (int64_t[]){ 1, 3 }) == 12 + 8 + 3, "select value");
    efla_tensor *sl = efla_select(t, -1, -4);
    CHECK(has_shape(sl, 2, (int64_t[]){ 2, 3 }) && efla_tensor_stride(sl, 1) == 4, "select on the last dim");
    CHECK_ERROR(efla_select(t, 1, 3) == NULL, "select: index 3 is out of range for dim 1 of size 3");
    CHECK_ERROR(efla_select(t, 1, -4) == NULL, "index -1 is out of range for dim 1");
    /* a view of a view writes through to the base */
    efla_tensor *sv = MUST(efla_select(tt, 0, 2));   /* t[:, :, 2] as [3,2] */
    int64_t v0 = efla_tensor_version(t);
    MUST_OK(efla_set(sv, (int64_t[]){ 1, 1 }, -5));
    CHECK(get(t, (int64_t[]){ 1, 1, 2 }) == -5, "set through a view of a view");
    CHECK(efla_tensor_version(t) > v0, "set bumps the storage version");
    efla_tensor_release(sv);
    efla_tensor_release(sl); efla_tensor_release(s2); efla_tensor_release(s);
    efla_tensor_release(n0); efla_tensor_release(n2); efla_tensor_release(n);
    efla_tensor_release(pm); efla_tensor_release(tt); efla_tensor_release(t);
}

/* ---- expand, squeeze, unsqueeze, contiguous, clone ------------------------------------------------ */
static void test_expand_squeeze(void) {
    efla_tensor *c = iota(2, (int64_t[]){ 3, 1 });
    efla_tensor *e = efla_expand(c, 3, (int64_t[]){ 2, 3, 4 });
    CHECK(has_shape(e, 3, (int64_t[]){ 2, 3, 4 }) && efla_tensor_stride(e, 0) == 0 && efla_tensor_stride(e, 2) == 0,
          "expand: stride 0 on new and size-1 dims");
    int ok = e != NULL;
    int64_t p[3] = {0};
    if (e) do ok &= get(e, p) == (double)p[1]; while (next_idx(3, (int64_t[]){ 2, 3, 4 }, p));
    CHECK(ok, "expand values");
    efla_tensor *e2 = efla_expand(c, 2, (int64_t[]){ -1, 5 });
    CHECK(has_shape(e2, 2, (int64_t[]){ 3, 5 }), "expand with -1 keeps a size");
    CHECK_ERROR(efla_expand(c, 2, (int64_t[]){ 4, 4 }) == NULL, "expand: shape [3,1] cannot expand to [4,4]");
    CHECK_ERROR(efla_expand(c, 1, (int64_t[]){ 3 }) == NULL, "cannot expand shape [3,1] to 1 dims");
    CHECK_ERROR(efla_expand(c, 2, (int64_t[]){ 3, -5 }) == NULL, "expand: negative size -5 at dim 1");
    /* contiguous of an expanded tensor materialises it */
    efla_tensor *ec = efla_contiguous(e);
    CHECK(ec && efla_tensor_is_contiguous(ec) && !efla_tensor_same_storage(ec, c) && efla_tensor_numel(ec) == 24,
          "contiguous of an expand copies");
    if (ec) CHECK(get(ec, (int64_t[]){ 1, 2, 3 }) == 2, "contiguous(expand) value");

    efla_tensor *t = iota(3, (int64_t[]){ 2, 3, 4 });
    efla_tensor *u1 = efla_unsqueeze(t, 1), *ul = efla_unsqueeze(t, -1), *u0 = efla_unsqueeze(t, 0);
    CHECK(has_shape(u1, 4, (int64_t[]){ 2, 1, 3, 4 }), "unsqueeze(1)");
    CHECK(has_shape(ul, 4, (int64_t[]){ 2, 3, 4, 1 }), "unsqueeze(-1) appends");
    CHECK(has_shape(u0, 4, (int64_t[]){ 1, 2, 3, 4 }), "unsqueeze(0)");
    CHECK(u1 && efla_tensor_is_contiguous(u1) && ul && efla_tensor_is_contiguous(ul), "unsqueeze keeps contiguity");
    if (ul) CHECK(get(ul, (int64_t[]){ 1, 2, 3, 0 }) == 23, "unsqueeze value");
    CHECK_ERROR(efla_unsqueeze(t, 4) == NULL, "unsqueeze: dim 4 is out of range for a tensor of 4 dims");
    efla_tensor *q1 = efla_squeeze(u1, 1), *qn = efla_squeeze(t, 1), *qa = efla_squeeze_all(u0);
    CHECK(has_shape(q1, 3, (int64_t[]){ 2, 3, 4 }), "squeeze(1) undoes unsqueeze(1)");
    CHECK(has_shape(qn, 3, (int64_t[]){ 2, 3, 4 }), "squeeze of a dim of size 3 changes nothing");
    CHECK(has_shape(qa, 3, (int64_t[]){ 2, 3, 4 }), "squeeze_all");
    efla_tensor *ones = iota(3, (int64_t[]){ 1, 1, 1 });
    efla_tensor *q0 = efla_squeeze_all(ones);
    CHECK(q0 && efla_tensor_ndim(q0) == 0, "squeeze_all of [1,1,1] is 0-d");
    /* unsqueeze of a transposed view keeps element addresses right */
    efla_tensor *tt = MUST(efla_transpose(t, 0, 2));
    efla_tensor *ut = efla_unsqueeze(tt, 1);
    if (ut) CHECK(get(ut, (int64_t[]){ 3, 0, 2, 1 }) == get(t, (int64_t[]){ 1, 2, 3 }), "unsqueeze of a transpose");

    /* contiguous: same tensor when already contiguous, a copy otherwise */
    efla_tensor *same = efla_contiguous(t);
    CHECK(same == t, "contiguous of a contiguous tensor returns it (new ref)");
    efla_tensor *tc = efla_contiguous(tt);
    ok = tc && efla_tensor_is_contiguous(tc) && !efla_tensor_same_storage(tc, t);
    memset(p, 0, sizeof p);
    if (tc) do ok &= get(tc, p) == get(tt, p); while (next_idx(3, (int64_t[]){ 4, 3, 2 }, p));
    CHECK(ok, "contiguous of a transpose");
    /* clone owns its storage */
    efla_tensor *cl = efla_clone(tt);
    CHECK(cl && !efla_tensor_same_storage(cl, t) && has_shape(cl, 3, (int64_t[]){ 4, 3, 2 }), "clone");
    if (cl) {
        MUST_OK(efla_set(cl, (int64_t[]){ 0, 0, 0 }, 99));
        CHECK(get(t, (int64_t[]){ 0, 0, 0 }) == 0 && get(cl, (int64_t[]){ 0, 0, 0 }) == 99, "clone is independent");
        CHECK(get(cl, (int64_t[]){ 3, 2, 1 }) == 23, "clone value");
    }
    efla_tensor_release(cl); efla_tensor_release(tc); efla_tensor_release(same);
    efla_tensor_release(ut); efla_tensor_release(tt);
    efla_tensor_release(q0); efla_tensor_release(ones);
    efla_tensor_release(qa); efla_tensor_release(qn); efla_tensor_release(q1);
    efla_tensor_release(u0); efla_tensor_release(ul); efla_tensor_release(u1); efla_tensor_release(t);
    efla_tensor_release(ec); efla_tensor_release(e2); efla_tensor_release(e); efla_tensor_release(c);
}

/* ---- to: casts ------------------------------------------------------------------------------------------- */
static double cast_ref(double v, efla_dtype to) {
    switch (to) {
    case EFLA_BOOL: return v != 0;
    case EFLA_INT64: return trunc(v);
    case EFLA_UINT8: return (double)(uint8_t)(int64_t)v;
    case EFLA_BFLOAT16: return efla_bf16_to_f32(efla_f32_to_bf16((float)v));
    case EFLA_FLOAT32: return (float)v;
    default: return v;
    }
}

static void test_casts(void) {
    /* values every dtype holds (non-negative, small integers plus a fraction for floats) */
    const double vals[8] = { 0, 1, 2, 3, 100, 5.5, 0, 255 };
    for (int a = 0; a < N_DTYPES; a++) {
        efla_dtype from = all_dtypes[a];
        efla_tensor *src64 = MUST(efla_from_buffer(1, (int64_t[]){ 8 }, EFLA_FLOAT64, vals, sizeof vals));
        efla_tensor *src = efla_to(src64, from, EFLA_DEVICE_CPU);
        CHECK(src && efla_tensor_dtype(src) == from, "to %s", efla_dtype_name(from));
        for (int b = 0; src && b < N_DTYPES; b++) {
            efla_dtype to = all_dtypes[b];
            efla_tensor *dst = efla_to(src, to, EFLA_DEVICE_CPU);
            int ok = dst && efla_tensor_dtype(dst) == to && efla_tensor_numel(dst) == 8;
            for (int64_t i = 0; ok && i < 8; i++) {
                double want = cast_ref(cast_ref(vals[i], from), to);
                ok &= get(dst, &i) == want;
            }
            CHECK(ok, "cast %s -> %s", efla_dtype_name(from), efla_dtype_name(to));
            CHECK(a != b || dst == src, "to the same dtype returns the tensor itself");
            efla_tensor_release(dst);
        }
        efla_tensor_release(src);
        efla_tensor_release(src64);
    }
    /* float -> int truncates toward zero, float -> bool is "nonzero" */
    const double fr[4] = { 2.7, -2.7, 0.5, -0.0 };
    efla_tensor *f = MUST(efla_from_buffer(1, (int64_t[]){ 4 }, EFLA_FLOAT64, fr, sizeof fr));
    efla_tensor *fi = MUST(efla_to(f, EFLA_INT64, EFLA_DEVICE_CPU)), *fb = MUST(efla_to(f, EFLA_BOOL, EFLA_DEVICE_CPU));
    int64_t iv[4];
    uint8_t bv[4];
    MUST_OK(efla_to_buffer(fi, iv, sizeof iv));
    MUST_OK(efla_to_buffer(fb, bv, sizeof bv));
    CHECK(iv[0] == 2 && iv[1] == -2 && iv[2] == 0 && iv[3] == 0, "float -> int64 truncates: %lld %lld %lld",
          (long long)iv[0], (long long)iv[1], (long long)iv[2]);
    CHECK(bv[0] == 1 && bv[1] == 1 && bv[2] == 1 && bv[3] == 0, "float -> bool is nonzero");
    efla_tensor_release(fi); efla_tensor_release(fb); efla_tensor_release(f);
    /* bfloat16 rounds to nearest, ties to even; NaN stays NaN; overflow gives inf */
    const float bf[7] = { 1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f, 1.0f + 0x1p-8f + 0x1p-20f, -(1.0f + 0x1p-8f + 0x1p-20f),
                          NAN, 3.4028235e38f, 1e-40f };
    const double bw[7] = { 1.0, 1.0 + 0x1p-6, 1.0 + 0x1p-7, -(1.0 + 0x1p-7), NAN, INFINITY, 0 };
    efla_tensor *b32 = MUST(efla_from_buffer(1, (int64_t[]){ 7 }, EFLA_FLOAT32, bf, sizeof bf));
    efla_tensor *b16 = efla_to(b32, EFLA_BFLOAT16, EFLA_DEVICE_CPU);
    efla_tensor *b64 = MUST(efla_to(b32, EFLA_FLOAT64, EFLA_DEVICE_CPU));
    efla_tensor *b16d = efla_to(b64, EFLA_BFLOAT16, EFLA_DEVICE_CPU);     /* float64 source */
    for (int64_t i = 0; b16 && b16d && i < 7; i++) {
        double g = get(b16, &i), gd = get(b16d, &i);
        if (i == 4) CHECK(isnan(g) && isnan(gd), "bf16 NaN");
        else if (i == 6) CHECK(fabs(g) < 1e-39 && fabs(gd) < 1e-39, "bf16 of a subnormal: %g", g);
        else CHECK(g == bw[i] && gd == bw[i], "bf16 rounding of element %lld: %.10g (from f64 %.10g), want %.10g",
                   (long long)i, g, gd, bw[i]);
    }
    CHECK(b16 && b16d, "casts to bf16");
    efla_tensor_release(b16d); efla_tensor_release(b64); efla_tensor_release(b16); efla_tensor_release(b32);
    /* a strided source casts element by element */
    efla_tensor *m = iota(2, (int64_t[]){ 3, 4 });
    efla_tensor *mt = MUST(efla_transpose(m, 0, 1));
    efla_tensor *mi = efla_to(mt, EFLA_INT64, EFLA_DEVICE_CPU);
    CHECK(mi && efla_tensor_is_contiguous(mi) && get(mi, (int64_t[]){ 3, 2 }) == 11, "cast of a transpose");
    efla_tensor_release(mi); efla_tensor_release(mt); efla_tensor_release(m);
    CHECK_ERROR(efla_to(b32 = iota(1, (int64_t[]){ 1 }), (efla_dtype)9, EFLA_DEVICE_CPU) == NULL, "to: invalid dtype 9");
    efla_tensor_release(b32);
    CHECK(efla_dtype_from_name("double") == EFLA_FLOAT64 && efla_dtype_from_name("bfloat16") == EFLA_BFLOAT16, "dtype names");
    CHECK_ERROR(efla_dtype_from_name("half") < 0, "unknown dtype 'half'");
}

/* ---- copy_, buffers, get/set/item ---------------------------------------------------------------------- */
static void test_copy_buffers(void) {
    efla_tensor *dst = MUST(efla_zeros(2, (int64_t[]){ 2, 3 }, EFLA_FLOAT32, EFLA_DEVICE_CPU));
    efla_tensor *row = iota(1, (int64_t[]){ 3 });
    int64_t v0 = efla_tensor_version(dst);
    CHECK(efla_copy_(dst, row) == 0, "copy_ broadcasts a row");
    CHECK(efla_tensor_version(dst) > v0, "copy_ bumps the version");
    CHECK(get(dst, (int64_t[]){ 1, 2 }) == 2 && get(dst, (int64_t[]){ 0, 1 }) == 1, "row broadcast values");
    int64_t colv[2] = { 7, -3 };
    efla_tensor *col = MUST(efla_from_buffer(2, (int64_t[]){ 2, 1 }, EFLA_INT64, colv, sizeof colv));
    CHECK(efla_copy_(dst, col) == 0, "copy_ broadcasts an int64 column (with a cast)");
    CHECK(get(dst, (int64_t[]){ 0, 2 }) == 7 && get(dst, (int64_t[]){ 1, 0 }) == -3, "column broadcast values");
    efla_tensor *sc = MUST(efla_scalar(2.5, EFLA_FLOAT64, EFLA_DEVICE_CPU));
    CHECK(efla_copy_(dst, sc) == 0 && get(dst, (int64_t[]){ 1, 1 }) == 2.5, "copy_ of a 0-d tensor fills");
    efla_tensor *bad = iota(1, (int64_t[]){ 4 });
    CHECK_ERROR(efla_copy_(dst, bad) != 0, "copy_: shapes [2,3] and [4] do not broadcast");
    efla_tensor *big = iota(3, (int64_t[]){ 2, 2, 3 });
    CHECK_ERROR(efla_copy_(dst, big) != 0, "does not broadcast to the destination's [2,3]");
    /* into a strided destination */
    efla_tensor *base = MUST(efla_zeros(2, (int64_t[]){ 3, 2 }, EFLA_FLOAT64, EFLA_DEVICE_CPU));
    efla_tensor *bt = MUST(efla_transpose(base, 0, 1));      /* [2,3] view */
    efla_tensor *src = iota(2, (int64_t[]){ 2, 3 });
    CHECK(efla_copy_(bt, src) == 0 && get(base, (int64_t[]){ 2, 1 }) == 5 && get(base, (int64_t[]){ 1, 0 }) == 1,
          "copy_ into a transposed view");
    /* a leaf that requires grad refuses in-place writes */
    efla_tensor *leaf = iota(1, (int64_t[]){ 3 });
    MUST_OK(efla_set_requires_grad(leaf, 1));
    CHECK_ERROR(efla_copy_(leaf, row) != 0, "in-place write into a leaf that requires grad");
    efla_tensor *lv = MUST(efla_narrow(leaf, 0, 1, 2));
    CHECK_ERROR(efla_copy_(lv, sc) != 0, "copy_: in-place write into a tensor (shape [2]) that requires grad (output of narrow)");
    CHECK(get(leaf, (int64_t[]){ 1 }) == 1, "the refused copy_ left the leaf alone");
    int prev = efla_set_grad_enabled(0);
    CHECK(efla_copy_(leaf, row) == 0, "allowed under no_grad");
    CHECK(efla_copy_(lv, sc) == 0 && get(leaf, (int64_t[]){ 2 }) == 2.5, "into a view of it too");
    efla_set_grad_enabled(prev);
    efla_tensor_release(lv);

    /* buffers */
    double buf[6];
    CHECK(efla_to_buffer(bt, buf, sizeof buf) == 0 && buf[0] == 0 && buf[1] == 1 && buf[5] == 5,
          "to_buffer of a strided tensor gives row-major logical order");
    CHECK_ERROR(efla_to_buffer(bt, buf, 8) != 0, "to_buffer: buffer of 8 bytes given, tensor [2,3] of float64 needs 48");
    CHECK_ERROR(efla_from_buffer(2, (int64_t[]){ 2, 3 }, EFLA_FLOAT32, buf, 8) == NULL,
                "from_buffer: 8 bytes given, but shape [2,3] of float32 needs 24");
    CHECK_ERROR(efla_from_buffer(1, (int64_t[]){ -1 }, EFLA_FLOAT32, buf, 8) == NULL, "negative size -1");
    uint16_t hb[2] = { 0x3f80, 0xc000 };   /* bf16 1.0, -2.0 */
    efla_tensor *h = MUST(efla_from_buffer(1, (int64_t[]){ 2 }, EFLA_BFLOAT16, hb, sizeof hb));
    CHECK(get(h, (int64_t[]){ 0 }) == 1 && get(h, (int64_t[]){ 1 }) == -2, "from_buffer keeps raw bf16 bits");
    efla_tensor *e = efla_from_buffer(2, (int64_t[]){ 0, 3 }, EFLA_FLOAT32, NULL, 0);
    CHECK(e && efla_tensor_numel(e) == 0 && efla_to_buffer(e, NULL, 0) == 0, "empty tensors and buffers");

    /* get / set / item */
    CHECK_ERROR(efla_get(dst, (int64_t[]){ 0, 3 }, buf) != 0, "get: index 3 is out of range for dim 1 of size 3 (shape [2,3])");
    CHECK_ERROR(efla_set(dst, (int64_t[]){ -1, 0 }, 1) != 0, "set: index -1 is out of range for dim 0");
    efla_tensor *iv = MUST(efla_zeros(1, (int64_t[]){ 2 }, EFLA_INT64, EFLA_DEVICE_CPU));
    MUST_OK(efla_set(iv, (int64_t[]){ 1 }, 3.9));
    CHECK(get(iv, (int64_t[]){ 1 }) == 3, "set into int64 truncates");
    efla_tensor *bv = MUST(efla_zeros(1, (int64_t[]){ 1 }, EFLA_BOOL, EFLA_DEVICE_CPU));
    MUST_OK(efla_set(bv, (int64_t[]){ 0 }, -0.5));
    double x = 0;
    CHECK(efla_item(bv, &x) == 0 && x == 1, "bool set/item");
    CHECK_ERROR(efla_item(dst, &x) != 0, "item: the tensor has shape [2,3] (6 elements)");
    CHECK(efla_item(sc, &x) == 0 && x == 2.5, "item of 0-d");
    efla_tensor_release(bv); efla_tensor_release(iv);
    efla_tensor_release(e); efla_tensor_release(h); efla_tensor_release(leaf);
    efla_tensor_release(src); efla_tensor_release(bt); efla_tensor_release(base);
    efla_tensor_release(big); efla_tensor_release(bad); efla_tensor_release(sc); efla_tensor_release(col);
    efla_tensor_release(row); efla_tensor_release(dst);
}

/* ---- creation ---------------------------------------------------------------------------------------------- */
static int values_are(const efla_tensor *t, int n, const double *want) {
    if (!t || efla_tensor_ndim(t) != 1 || efla_tensor_size(t, 0) != n) return 0;
    for (int64_t i = 0; i < n; i++)
        if (fabs(get(t, &i) - want[i]) > 1e-12) return 0;
    return 1;
}

static void test_creation(void) {
    efla_tensor *a = efla_arange(0, 5, 1, EFLA_FLOAT32, EFLA_DEVICE_CPU);
    CHECK(values_are(a, 5, (double[]){ 0, 1, 2, 3, 4 }), "arange(0,5)");
    efla_tensor *b = efla_arange(1, 2, 0.25, EFLA_FLOAT64, EFLA_DEVICE_CPU);
    CHECK(values_are(b, 4, (double[]){ 1, 1.25, 1.5, 1.75 }), "arange(1,2,0.25) excludes the end");
    efla_tensor *c = efla_arange(5, 0, -2, EFLA_INT64, EFLA_DEVICE_CPU);
    CHECK(values_are(c, 3, (double[]){ 5, 3, 1 }) && efla_tensor_dtype(c) == EFLA_INT64, "arange(5,0,-2) int64");
    efla_tensor *d = efla_arange(3, 3, 1, EFLA_FLOAT32, EFLA_DEVICE_CPU);
    CHECK(d && efla_tensor_numel(d) == 0, "empty arange");
    efla_tensor *d2 = efla_arange(0, -3, 1, EFLA_FLOAT32, EFLA_DEVICE_CPU);
    CHECK(d2 && efla_tensor_numel(d2) == 0, "arange with the wrong sign is empty");
    CHECK_ERROR(efla_arange(0, 1, 0, EFLA_FLOAT32, EFLA_DEVICE_CPU) == NULL, "need finite bounds and a nonzero step");
    efla_tensor *big = efla_arange(0, 100000, 1, EFLA_FLOAT64, EFLA_DEVICE_CPU);
    CHECK(big && get(big, (int64_t[]){ 99999 }) == 99999 && get(big, (int64_t[]){ 50000 }) == 50000, "big arange");
    efla_tensor *l = efla_linspace(0, 1, 5, EFLA_FLOAT64, EFLA_DEVICE_CPU);
    CHECK(values_are(l, 5, (double[]){ 0, 0.25, 0.5, 0.75, 1 }), "linspace(0,1,5)");
    efla_tensor *l1 = efla_linspace(3, 9, 1, EFLA_FLOAT32, EFLA_DEVICE_CPU);
    CHECK(values_are(l1, 1, (double[]){ 3 }), "linspace with one step is the start");
    efla_tensor *l0 = efla_linspace(3, 9, 0, EFLA_FLOAT32, EFLA_DEVICE_CPU);
    CHECK(l0 && efla_tensor_numel(l0) == 0, "linspace with 0 steps");
    efla_tensor *ld = efla_linspace(1, -1, 3, EFLA_FLOAT32, EFLA_DEVICE_CPU);
    CHECK(values_are(ld, 3, (double[]){ 1, 0, -1 }), "decreasing linspace");
    CHECK_ERROR(efla_linspace(0, 1, -1, EFLA_FLOAT32, EFLA_DEVICE_CPU) == NULL, "linspace: steps must be >= 0");
    efla_tensor_release(ld); efla_tensor_release(l0); efla_tensor_release(l1); efla_tensor_release(l);
    efla_tensor_release(big); efla_tensor_release(d2); efla_tensor_release(d);
    efla_tensor_release(c); efla_tensor_release(b); efla_tensor_release(a);

    for (int k = 0; k < N_DTYPES; k++) {
        efla_dtype dt = all_dtypes[k];
        int64_t sh[2] = { 3, 4 };
        efla_tensor *z = efla_zeros(2, sh, dt, EFLA_DEVICE_CPU), *o = efla_ones(2, sh, dt, EFLA_DEVICE_CPU);
        efla_tensor *f = efla_full(2, sh, 0.1, dt, EFLA_DEVICE_CPU);
        double want_f = dt == EFLA_BOOL ? 1 : (dt == EFLA_INT64 || dt == EFLA_UINT8) ? 0
                      : dt == EFLA_BFLOAT16 ? efla_bf16_to_f32(efla_f32_to_bf16(0.1f)) : dt == EFLA_FLOAT32 ? (double)0.1f : 0.1;
        int ok = z && o && f && efla_tensor_dtype(z) == dt && efla_tensor_is_contiguous(o);
        int64_t p[2] = {0};
        if (ok) do ok &= get(z, p) == 0 && get(o, p) == 1 && get(f, p) == want_f; while (next_idx(2, sh, p));
        CHECK(ok, "zeros/ones/full(0.1) %s", efla_dtype_name(dt));
        efla_tensor_release(z); efla_tensor_release(o); efla_tensor_release(f);
    }
    efla_tensor *s = efla_scalar(-4, EFLA_INT64, EFLA_DEVICE_CPU);
    double x = 0;
    CHECK(s && efla_tensor_ndim(s) == 0 && efla_item(s, &x) == 0 && x == -4, "scalar");
    efla_tensor_release(s);
    CHECK_ERROR(efla_zeros(2, (int64_t[]){ 2, -3 }, EFLA_FLOAT32, EFLA_DEVICE_CPU) == NULL, "negative size -3 at dim 1 of [2,-3]");
    CHECK_ERROR(efla_zeros(9, (int64_t[]){ 1, 1, 1, 1, 1, 1, 1, 1, 1 }, EFLA_FLOAT32, EFLA_DEVICE_CPU) == NULL, "9 dims asked");
    CHECK_ERROR(efla_empty(1, (int64_t[]){ 2 }, (efla_dtype)17, EFLA_DEVICE_CPU) == NULL, "invalid dtype 17");
}

/* ---- random numbers -------------------------------------------------------------------------------------- */
typedef efla_tensor *(*draw_fn)(int64_t n);
static efla_tensor *d_rand(int64_t n) { return efla_rand(1, &n, EFLA_FLOAT32, EFLA_DEVICE_CPU); }
static efla_tensor *d_randn(int64_t n) { return efla_randn(1, &n, EFLA_FLOAT64, EFLA_DEVICE_CPU); }
static efla_tensor *d_bern(int64_t n) { return efla_bernoulli(1, &n, 0.3, EFLA_FLOAT32, EFLA_DEVICE_CPU); }
static efla_tensor *d_randint(int64_t n) { return efla_randint(-3, 7, 1, &n, EFLA_DEVICE_CPU); }
static efla_tensor *d_randperm(int64_t n) { return efla_randperm(n, EFLA_DEVICE_CPU); }
static efla_tensor *d_rand_bf16(int64_t n) { return efla_rand(1, &n, EFLA_BFLOAT16, EFLA_DEVICE_CPU); }

/* Raw bytes of a fresh draw of n elements after manual_seed(seed) with `threads` threads. */
static void *draw_bytes(draw_fn f, int64_t n, uint64_t seed, int threads, size_t *nbytes) {
    int saved = efla_num_threads();
    efla_set_num_threads(threads);
    efla_manual_seed(seed);
    efla_tensor *t = f(n);
    efla_set_num_threads(saved);
    if (!t) { fprintf(stderr, "draw failed: %s\n", efla_last_error()); exit(1); }
    *nbytes = (size_t)efla_tensor_numel(t) * efla_dtype_size(efla_tensor_dtype(t));
    void *b = malloc(*nbytes ? *nbytes : 1);
    MUST_OK(efla_to_buffer(t, b, *nbytes));
    efla_tensor_release(t);
    return b;
}

static void test_rng(void) {
    const draw_fn fns[6] = { d_rand, d_randn, d_bern, d_randint, d_randperm, d_rand_bf16 };
    const char *names[6] = { "rand", "randn", "bernoulli", "randint", "randperm", "rand bf16" };
    const int64_t n = 100000;   /* above the OpenMP threshold */
    for (int k = 0; k < 6; k++) {
        size_t n1, n2, n3, n4;
        void *a = draw_bytes(fns[k], n, 42, 1, &n1);
        void *b = draw_bytes(fns[k], n, 42, 2, &n2);
        void *c = draw_bytes(fns[k], n, 42, 2, &n3);
        void *d = draw_bytes(fns[k], n, 43, 1, &n4);
        CHECK(n1 == n2 && !memcmp(a, b, n1), "%s: 1 and 2 threads give the same numbers", names[k]);
        CHECK(!memcmp(b, c, n1), "%s: same seed, same numbers", names[k]);
        CHECK(memcmp(a, d, n1), "%s: another seed, other numbers", names[k]);
        free(a); free(b); free(c); free(d);
    }
    /* distributions */
    efla_manual_seed(7);
    efla_tensor *u = MUST(d_rand(n)), *g = MUST(d_randn(n)), *be = MUST(d_bern(n)), *ri = MUST(d_randint(n));
    efla_tensor *rp = MUST(d_randperm(1000));
    double su = 0, lo = 1, hi = 0, sg = 0, sg2 = 0, sb = 0;
    int bern01 = 1, seen[10] = {0}, int_ok = 1;
    for (int64_t i = 0; i < n; i++) {
        double x = get(u, &i);
        su += x; lo = fmin(lo, x); hi = fmax(hi, x);
        double y = get(g, &i);
        sg += y; sg2 += y * y;
        double z = get(be, &i);
        bern01 &= z == 0 || z == 1;
        sb += z;
        double r = get(ri, &i);
        int_ok &= r >= -3 && r < 7 && r == floor(r);
        if (r >= -3 && r < 7) seen[(int)r + 3] = 1;
    }
    CHECK(lo >= 0 && hi < 1 && fabs(su / n - 0.5) < 0.01, "rand in [0,1), mean %g", su / n);
    CHECK(fabs(sg / n) < 0.02 && fabs(sg2 / n - 1) < 0.03, "randn mean %g var %g", sg / n, sg2 / n);
    CHECK(bern01 && fabs(sb / n - 0.3) < 0.01, "bernoulli(0.3) is 0/1 with mean %g", sb / n);
    int all_seen = 1;
    for (int i = 0; i < 10; i++) all_seen &= seen[i];
    CHECK(int_ok && all_seen && efla_tensor_dtype(ri) == EFLA_INT64, "randint(-3,7) covers [-3,7)");
    int perm[1000] = {0}, perm_ok = efla_tensor_dtype(rp) == EFLA_INT64, moved = 0;
    for (int64_t i = 0; i < 1000; i++) {
        int64_t v = (int64_t)get(rp, &i);
        if (v < 0 || v >= 1000 || perm[v]++) perm_ok = 0;
        moved += v != i;
    }
    CHECK(perm_ok && moved > 900, "randperm(1000) is a shuffled permutation (%d moved)", moved);
    efla_tensor_release(u); efla_tensor_release(g); efla_tensor_release(be); efla_tensor_release(ri); efla_tensor_release(rp);

    /* state: each draw advances the offset by its element count; set_state replays */
    efla_manual_seed(99);
    uint64_t seed, off0, off1, off2;
    efla_rng_get_state(&seed, &off0);
    CHECK(seed == 99 && off0 == 0, "manual_seed resets the offset");
    efla_tensor *x1 = MUST(efla_rand(2, (int64_t[]){ 3, 4 }, EFLA_FLOAT64, EFLA_DEVICE_CPU));
    efla_rng_get_state(&seed, &off1);
    CHECK(off1 == off0 + 12, "a draw of 12 advances the offset by 12 (now %llu)", (unsigned long long)off1);
    efla_tensor *x2 = MUST(efla_randn(1, (int64_t[]){ 5 }, EFLA_FLOAT64, EFLA_DEVICE_CPU));
    efla_rng_get_state(&seed, &off2);
    efla_rng_set_state(99, off1);
    efla_tensor *x2r = MUST(efla_randn(1, (int64_t[]){ 5 }, EFLA_FLOAT64, EFLA_DEVICE_CPU));
    uint64_t off3;
    efla_rng_get_state(&seed, &off3);
    double b1[5], b2[5];
    MUST_OK(efla_to_buffer(x2, b1, sizeof b1));
    MUST_OK(efla_to_buffer(x2r, b2, sizeof b2));
    CHECK(!memcmp(b1, b2, sizeof b1) && off3 == off2, "set_state replays the draw and the offset");
    /* counter-based: two draws of 6 equal one draw of 12 */
    efla_rng_set_state(99, 0);
    efla_tensor *h1 = MUST(efla_rand(1, (int64_t[]){ 6 }, EFLA_FLOAT64, EFLA_DEVICE_CPU));
    efla_tensor *h2 = MUST(efla_rand(1, (int64_t[]){ 6 }, EFLA_FLOAT64, EFLA_DEVICE_CPU));
    double w[12], p1[6], p2[6];
    MUST_OK(efla_to_buffer(x1, w, sizeof w));
    MUST_OK(efla_to_buffer(h1, p1, sizeof p1));
    MUST_OK(efla_to_buffer(h2, p2, sizeof p2));
    CHECK(!memcmp(w, p1, sizeof p1) && !memcmp(w + 6, p2, sizeof p2), "element i uses counter offset+i");
    efla_tensor_release(h1); efla_tensor_release(h2);
    efla_tensor_release(x1); efla_tensor_release(x2); efla_tensor_release(x2r);
    /* errors */
    CHECK_ERROR(efla_rand(1, (int64_t[]){ 2 }, EFLA_INT64, EFLA_DEVICE_CPU) == NULL, "rand: dtype must be floating, not int64");
    CHECK_ERROR(efla_bernoulli(1, (int64_t[]){ 2 }, 1.5, EFLA_FLOAT32, EFLA_DEVICE_CPU) == NULL, "p = 1.5 is not a probability");
    CHECK_ERROR(efla_randint(3, 3, 1, (int64_t[]){ 2 }, EFLA_DEVICE_CPU) == NULL, "randint: empty range [3, 3)");
    CHECK_ERROR(efla_randperm(-1, EFLA_DEVICE_CPU) == NULL, "randperm: n must be >= 0");
}

/* ---- backward of views vs central finite differences (float64) ------------------------------------------------- */
typedef efla_tensor *(*fwd_fn)(efla_tensor *x);

/* max |analytic - numeric| of d/dx sum(w * f(x)) for a float64 leaf x */
static double grad_check(efla_tensor *x, fwd_fn f, double h) {
    MUST_OK(efla_set_requires_grad(x, 1));
    efla_tensor *out = f(x);
    if (!out) { fprintf(stderr, "forward: %s\n", efla_last_error()); return INFINITY; }
    int nd = efla_tensor_ndim(out);
    int64_t no = efla_tensor_numel(out), shape[EFLA_MAX_DIMS];
    for (int i = 0; i < nd; i++) shape[i] = efla_tensor_size(out, i);
    double *w = malloc((size_t)no * sizeof *w);
    for (int64_t i = 0; i < no; i++) w[i] = urand() * 2 - 1;
    efla_tensor *W = MUST(efla_from_buffer(nd, shape, EFLA_FLOAT64, w, (size_t)no * sizeof *w));
    double worst = 0;
    if (efla_backward(out, W, 0)) { fprintf(stderr, "backward: %s\n", efla_last_error()); worst = INFINITY; }
    efla_tensor_release(out);
    efla_tensor_release(W);
    efla_tensor *g = efla_grad(x);
    int64_t m = efla_tensor_numel(x);
    double *ga = malloc((size_t)m * sizeof *ga), *xd = efla_tensor_data(x);
    if (!g || efla_to_buffer(g, ga, (size_t)m * sizeof *ga)) worst = INFINITY;
    int prev = efla_set_grad_enabled(0);
    for (int64_t e = 0; isfinite(worst) && e < m; e++) {
        double x0 = xd[e];
        /* read each output before the next change of x: a view would see it */
        xd[e] = x0 + h;
        efla_tensor *op = MUST(f(x));
        double sp = weighted_total(op, w);
        xd[e] = x0 - h;
        efla_tensor *om = MUST(f(x));
        double sm = weighted_total(om, w);
        xd[e] = x0;
        worst = fmax(worst, fabs((sp - sm) / (2 * h) - ga[e]));
        efla_tensor_release(op);
        efla_tensor_release(om);
    }
    efla_set_grad_enabled(prev);
    efla_tensor_release(g);
    efla_set_grad(x, NULL);
    efla_set_requires_grad(x, 0);
    free(ga);
    free(w);
    return worst;
}

/* Each forward chains a few views; the leaf x is [2,3,4]. Intermediates are released
 * (the graph keeps what backward needs). */
#define CHAIN(var, expr) efla_tensor *var = (expr); if (!var) return NULL
static efla_tensor *f_view(efla_tensor *x) {
    CHAIN(a, efla_view(x, 2, (int64_t[]){ -1, 4 }));
    efla_tensor *b = efla_reshape(a, 3, (int64_t[]){ 3, 2, 4 });
    efla_tensor_release(a);
    return b;
}
static efla_tensor *f_transpose_reshape(efla_tensor *x) {   /* reshape of a transpose copies */
    CHAIN(a, efla_transpose(x, 0, 2));
    efla_tensor *b = efla_reshape(a, 1, (int64_t[]){ -1 });
    efla_tensor_release(a);
    return b;
}
static efla_tensor *f_permute_narrow(efla_tensor *x) {
    CHAIN(a, efla_permute(x, 3, (int[]){ 1, 2, 0 }));
    efla_tensor *b = efla_narrow(a, 1, 1, 2);
    efla_tensor_release(a);
    return b;
}
static efla_tensor *f_select(efla_tensor *x) {
    CHAIN(a, efla_select(x, 1, -1));
    efla_tensor *b = efla_select(a, 0, 1);
    efla_tensor_release(a);
    return b;
}
static efla_tensor *f_expand(efla_tensor *x) {      /* [2,3,4] -> [2,1,3,4] -> [2,5,3,4]: grads sum */
    CHAIN(n, efla_narrow(x, 2, 0, 1));               /* [2,3,1] */
    CHAIN(a, efla_unsqueeze(n, 1));
    efla_tensor *b = efla_expand(a, 5, (int64_t[]){ 2, 2, 5, 3, 4 });
    efla_tensor_release(n);
    efla_tensor_release(a);
    return b;
}
static efla_tensor *f_squeeze(efla_tensor *x) {
    CHAIN(a, efla_narrow(x, 0, 1, 1));               /* [1,3,4] */
    CHAIN(b, efla_squeeze(a, 0));
    efla_tensor *c = efla_unsqueeze(b, -1);
    efla_tensor *d = c ? efla_squeeze_all(c) : NULL;
    efla_tensor_release(a); efla_tensor_release(b); efla_tensor_release(c);
    return d;
}
static efla_tensor *f_contiguous_clone(efla_tensor *x) {
    CHAIN(a, efla_transpose(x, 1, 2));
    CHAIN(b, efla_contiguous(a));
    efla_tensor *c = efla_clone(b);
    efla_tensor_release(a); efla_tensor_release(b);
    return c;
}
static efla_tensor *f_to(efla_tensor *x) {          /* float64 -> float32 -> float64 */
    CHAIN(a, efla_to(x, EFLA_FLOAT32, EFLA_DEVICE_CPU));
    efla_tensor *b = efla_to(a, EFLA_FLOAT64, EFLA_DEVICE_CPU);
    efla_tensor_release(a);
    return b;
}

static void test_view_gradients(void) {
    efla_tensor *x = rnd64(3, (int64_t[]){ 2, 3, 4 });
    const fwd_fn fs[7] = { f_view, f_transpose_reshape, f_permute_narrow, f_select, f_expand, f_squeeze, f_contiguous_clone };
    const char *names[7] = { "view/reshape", "transpose+reshape", "permute+narrow", "select", "unsqueeze+expand",
                             "squeeze/unsqueeze", "contiguous+clone" };
    for (int k = 0; k < 7; k++) {
        double err = grad_check(x, fs[k], 1e-6);
        CHECK(err < 1e-7, "%s gradient: max error %g", names[k], err);
    }
    /* through float32 the forward rounds, so take a wide step (the map is linear) */
    double err = grad_check(x, f_to, 1e-2);
    CHECK(err < 1e-4, "to() gradient: max error %g", err);
    /* grad_fn names and leafness */
    MUST_OK(efla_set_requires_grad(x, 1));
    efla_tensor *t = MUST(efla_transpose(x, 0, 1));
    CHECK(!efla_is_leaf(t) && efla_grad_fn_name(t) && !strcmp(efla_grad_fn_name(t), "permute"), "transpose records permute");
    efla_tensor *d = MUST(efla_detach(t));
    CHECK(efla_is_leaf(d) && !efla_requires_grad(d) && efla_tensor_same_storage(d, x), "detach shares storage, no history");
    efla_tensor *xi = MUST(efla_to(x, EFLA_INT64, EFLA_DEVICE_CPU));
    CHECK(!efla_requires_grad(xi), "an int64 copy does not require grad");
    efla_tensor_release(xi); efla_tensor_release(d); efla_tensor_release(t);
    efla_set_requires_grad(x, 0);
    efla_tensor_release(x);
}

int main(int argc, char **argv) {
    TEST_ARGS(argc, argv);
    int64_t live0 = efla_live_tensors();
    RUN(test_view_reshape);
    RUN(test_permute_narrow_select);
    RUN(test_expand_squeeze);
    RUN(test_casts);
    RUN(test_copy_buffers);
    RUN(test_creation);
    RUN(test_rng);
    RUN(test_view_gradients);
    CHECK_NO_LEAK(live0);
    TEST_SUMMARY();
}

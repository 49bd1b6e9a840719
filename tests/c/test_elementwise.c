/* test_elementwise.c: the elementwise family (unary, binary, scalar, in-place, clamp,
 * where, masked_fill, tril/triu, fill/copy/arange, rand, adamw) against plain double loops,
 * plus finite-difference gradient checks in float64. */
#include "test_util.h"
#include "internal.h"   /* bf16 helpers; a fake device for the device-mismatch error */

#define F32 EFLA_FLOAT32
#define F64 EFLA_FLOAT64
#define BF16 EFLA_BFLOAT16
#define I64 EFLA_INT64
#define U8 EFLA_UINT8
#define BOOLT EFLA_BOOL

/* ---- helpers ------------------------------------------------------------------------------ */
/* Contiguous double copy of t's values in logical (row-major) order; caller frees. */
static double *vals(const efla_tensor *t) {
    int64_t n = efla_tensor_numel(t);
    double *d = malloc(sizeof(double) * (size_t)(n ? n : 1));
    int prev = efla_set_grad_enabled(0);
    efla_tensor *c = MUST(efla_to(t, F64, EFLA_DEVICE_CPU));
    efla_set_grad_enabled(prev);
    MUST_OK(efla_to_buffer(c, d, sizeof(double) * (size_t)n));
    efla_tensor_release(c);
    return d;
}

static efla_tensor *from_doubles(int nd, const int64_t *shape, const double *d, efla_dtype dt) {
    efla_tensor *t = MUST(efla_from_buffer(nd, shape, F64, d, sizeof(double) * (size_t)efla_numel_of(nd, shape)));
    if (dt == F64) return t;
    efla_tensor *c = MUST(efla_to(t, dt, EFLA_DEVICE_CPU));
    efla_tensor_release(t);
    return c;
}

/* Uniform in [lo, hi), as dtype. */
static efla_tensor *rnd(int nd, const int64_t *shape, efla_dtype dt, double lo, double hi) {
    efla_tensor *u = MUST(efla_rand(nd, shape, F64, EFLA_DEVICE_CPU));
    double *d = vals(u);
    for (int64_t i = 0; i < efla_tensor_numel(u); i++) d[i] = lo + (hi - lo) * d[i];
    efla_tensor *t = from_doubles(nd, shape, d, dt);
    free(d);
    efla_tensor_release(u);
    return t;
}

/* Small integers in [lo, hi] as dtype (ties for comparisons, exact int arithmetic). */
static efla_tensor *rnd_int(int nd, const int64_t *shape, efla_dtype dt, int64_t lo, int64_t hi) {
    efla_tensor *r = MUST(efla_randint(lo, hi + 1, nd, shape, EFLA_DEVICE_CPU));
    efla_tensor *t = MUST(efla_to(r, dt, EFLA_DEVICE_CPU));
    efla_tensor_release(r);
    return t;
}

/* Max |got - want| / max(1, |want|) over n values; NaN on one side only counts as infinite. */
static double max_err(const double *got, const double *want, int64_t n) {
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        if (isnan(got[i]) || isnan(want[i])) { if (isnan(got[i]) != isnan(want[i])) return INFINITY; continue; }
        if (isinf(want[i]) || isinf(got[i])) { if (got[i] != want[i]) return INFINITY; continue; }
        double e = fabs(got[i] - want[i]) / fmax(1.0, fabs(want[i]));
        if (e > worst) worst = e;
    }
    return worst;
}

/* Index into a (possibly broadcast) operand of shape s (ns dims) for output position i of
 * shape o (no dims). */
static int64_t bindex(int64_t i, int no, const int64_t *o, int ns, const int64_t *s) {
    int64_t idx = 0, mul = 1;
    for (int d = no - 1; d >= 0; d--) {
        int64_t c = i % o[d];
        i /= o[d];
        int sd = d - (no - ns);
        if (sd >= 0) { if (s[sd] != 1) idx += c * mul; mul *= s[sd]; }
    }
    return idx;
}

static double tol_for(efla_dtype dt) { return dt == F64 ? 1e-12 : dt == BF16 ? 1e-2 : 2e-6; }

/* ---- references ------------------------------------------------------------------------------ */
static double ref_unary(int op, double x) {
    switch (op) {
    case EFLA_NEG: return -x;
    case EFLA_EXP: return exp(x);
    case EFLA_EXPM1: return expm1(x);
    case EFLA_LOG: return log(x);
    case EFLA_LOG1P: return log1p(x);
    case EFLA_SQRT: return sqrt(x);
    case EFLA_RSQRT: return 1 / sqrt(x);
    case EFLA_ABS: return fabs(x);
    case EFLA_TANH: return tanh(x);
    case EFLA_SIGMOID: return 1 / (1 + exp(-x));
    case EFLA_RELU: return x > 0 ? x : 0;
    case EFLA_GELU: return 0.5 * x * (1 + erf(x / sqrt(2.0)));
    case EFLA_SILU: return x / (1 + exp(-x));
    case EFLA_SIN: return sin(x);
    case EFLA_COS: return cos(x);
    case EFLA_SIGN: return x > 0 ? 1 : x < 0 ? -1 : 0;
    case EFLA_SQUARE: return x * x;
    case EFLA_RECIPROCAL: return 1 / x;
    }
    return NAN;
}
/* Domain of each unary op for random tests. */
static void unary_domain(int op, double *lo, double *hi) {
    *lo = -2; *hi = 2;
    if (op == EFLA_LOG || op == EFLA_SQRT || op == EFLA_RSQRT || op == EFLA_RECIPROCAL) { *lo = 0.5; *hi = 2; }
    if (op == EFLA_LOG1P) { *lo = -0.5; *hi = 2; }
}

static double ref_binary(int op, double x, double y) {
    switch (op) {
    case EFLA_ADD: return x + y;
    case EFLA_SUB: return x - y;
    case EFLA_MUL: return x * y;
    case EFLA_DIV: return x / y;
    case EFLA_POW: return pow(x, y);
    case EFLA_MAXIMUM: return x > y ? x : y;
    case EFLA_MINIMUM: return x < y ? x : y;
    case EFLA_EQ: return x == y;
    case EFLA_NE: return x != y;
    case EFLA_LT: return x < y;
    case EFLA_LE: return x <= y;
    case EFLA_GT: return x > y;
    case EFLA_GE: return x >= y;
    }
    return NAN;
}

/* ---- unary --------------------------------------------------------------------------------- */
static void test_unary(void) {
    efla_dtype dts[2] = { F32, F64 };
    for (int op = 0; op < EFLA_UNARY_COUNT; op++)
        for (int k = 0; k < 2; k++) {
            double lo, hi;
            unary_domain(op, &lo, &hi);
            int64_t shape[2] = { 7, 9 };
            efla_tensor *x = rnd(2, shape, dts[k], lo, hi);
            /* contiguous, then a transposed view, then a narrowed one */
            efla_tensor *xt = MUST(efla_transpose(x, 0, 1));
            efla_tensor *xn = MUST(efla_narrow(x, 1, 2, 5));
            efla_tensor *ins[3] = { x, xt, xn };
            for (int v = 0; v < 3; v++) {
                efla_tensor *y = MUST(efla_unary(op, ins[v]));
                double *xi = vals(ins[v]), *yo = vals(y);
                int64_t n = efla_tensor_numel(ins[v]);
                double *want = malloc(sizeof(double) * (size_t)n);
                for (int64_t i = 0; i < n; i++) want[i] = ref_unary(op, xi[i]);
                double e = max_err(yo, want, n);
                CHECK(efla_tensor_dtype(y) == dts[k] && efla_tensor_numel(y) == n, "%s dtype", efla_unary_name(op));
                CHECK(e < tol_for(dts[k]) * 4, "%s %s view %d: error %g", efla_unary_name(op),
                      efla_dtype_name(dts[k]), v, e);
                free(xi); free(yo); free(want);
                efla_tensor_release(y);
            }
            efla_tensor_release(x); efla_tensor_release(xt); efla_tensor_release(xn);
        }
    /* integer inputs: neg/abs/sign/square/relu stay int64; exp promotes to float32 */
    double iv[5] = { -3, -1, 0, 2, 5 };
    int64_t n5 = 5;
    efla_tensor *xi = from_doubles(1, &n5, iv, I64);
    int int_ops[5] = { EFLA_NEG, EFLA_ABS, EFLA_SIGN, EFLA_SQUARE, EFLA_RELU };
    for (int j = 0; j < 5; j++) {
        efla_tensor *y = MUST(efla_unary(int_ops[j], xi));
        double *yo = vals(y);
        int ok = efla_tensor_dtype(y) == I64;
        for (int i = 0; i < 5; i++) ok &= yo[i] == ref_unary(int_ops[j], iv[i]);
        CHECK(ok, "int64 %s", efla_unary_name(int_ops[j]));
        free(yo);
        efla_tensor_release(y);
    }
    efla_tensor *ye = MUST(efla_unary(EFLA_EXP, xi));
    double *yo = vals(ye);
    CHECK(efla_tensor_dtype(ye) == F32 && fabs(yo[3] - exp(2.0)) < 1e-5, "exp(int64) -> float32");
    free(yo);
    efla_tensor_release(ye);
    efla_tensor_release(xi);
    /* bfloat16: computed in float and rounded */
    int64_t s4 = 4;
    double bv[4] = { 0.5, 1.0, -2.0, 3.0 };
    efla_tensor *xb = from_doubles(1, &s4, bv, BF16);
    efla_tensor *yb = MUST(efla_unary(EFLA_EXP, xb));
    double *ybo = vals(yb);
    int ok = efla_tensor_dtype(yb) == BF16;
    for (int i = 0; i < 4; i++) ok &= ybo[i] == efla_bf16_to_f32(efla_f32_to_bf16(expf((float)bv[i])));
    CHECK(ok, "bfloat16 exp rounds the float result");
    free(ybo);
    efla_tensor_release(xb); efla_tensor_release(yb);
    CHECK(!strcmp(efla_unary_name(EFLA_GELU), "gelu") && !strcmp(efla_binary_name(EFLA_GE), "ge") &&
          !strcmp(efla_unary_name((efla_unary_op)99), "?"), "op names");
    CHECK_ERROR(efla_unary((efla_unary_op)99, NULL) == NULL, "unknown op");
    /* large input: the parallel path */
    int64_t big = 100003;
    efla_tensor *xl = rnd(1, &big, F32, -3, 3);
    efla_tensor *yl = MUST(efla_unary(EFLA_TANH, xl));
    double *a = vals(xl), *b = vals(yl), worst = 0;
    for (int64_t i = 0; i < big; i++) worst = fmax(worst, fabs(b[i] - tanh(a[i])));
    CHECK(worst < 1e-6, "tanh on 100003 elements: %g", worst);
    free(a); free(b);
    efla_tensor_release(xl); efla_tensor_release(yl);
}

/* ---- binary -------------------------------------------------------------------------------- */
/* Compare efla_binary(op, a, b) with the reference over broadcast shapes. */
static void check_binary(int op, const efla_tensor *a, const efla_tensor *b, const char *what) {
    efla_tensor *o = efla_binary(op, a, b);
    CHECK(o != NULL, "%s %s", efla_binary_name(op), what);
    if (!o) return;
    int na, nb, no;
    int64_t sa[8], sb[8], so[8];
    na = shape_of(a, sa); nb = shape_of(b, sb); no = shape_of(o, so);
    double *av = vals(a), *bv = vals(b), *ov = vals(o);
    int64_t n = efla_tensor_numel(o);
    double *want = malloc(sizeof(double) * (size_t)(n ? n : 1));
    for (int64_t i = 0; i < n; i++)
        want[i] = ref_binary(op, av[bindex(i, no, so, na, sa)], bv[bindex(i, no, so, nb, sb)]);
    efla_dtype odt = efla_tensor_dtype(o);
    efla_dtype expect = op >= EFLA_EQ ? BOOLT : efla_tensor_dtype(a) == efla_tensor_dtype(b) ? efla_tensor_dtype(a)
                      : (efla_tensor_dtype(a) == F64 || efla_tensor_dtype(b) == F64) ? F64 : F32;
    if (op == EFLA_DIV && expect == I64) expect = F32;
    CHECK(odt == expect, "%s %s: dtype %s, want %s", efla_binary_name(op), what, efla_dtype_name(odt),
          efla_dtype_name(expect));
    double tol = odt == I64 || odt == BOOLT ? 0 : tol_for(odt) * 4;
    /* integer results must be exact */
    double e = max_err(ov, want, n);
    CHECK(e <= tol, "%s %s (%s): error %g", efla_binary_name(op), what, efla_dtype_name(odt), e);
    free(av); free(bv); free(ov); free(want);
    efla_tensor_release(o);
}

static void test_binary(void) {
    efla_dtype dts[3] = { F32, F64, I64 };
    for (int k = 0; k < 3; k++)
        for (int op = 0; op < EFLA_BINARY_COUNT; op++) {
            efla_dtype dt = dts[k];
            int cmp = op >= EFLA_EQ;
            int64_t s34[2] = { 3, 4 }, s43[2] = { 4, 3 }, s314[3] = { 3, 1, 4 }, s21[2] = { 2, 1 }, s4 = 4;
            efla_tensor *a, *b, *a3, *b2, *bt, *bT, *z, *v4;
            if (dt == I64 || cmp) {
                int64_t lo = op == EFLA_POW ? 0 : -3, hi = 3;
                a = rnd_int(2, s34, dt, op == EFLA_DIV ? 1 : lo, hi);
                b = rnd_int(2, s34, dt, op == EFLA_DIV ? 1 : lo, op == EFLA_POW ? 3 : hi);
                a3 = rnd_int(3, s314, dt, 1, 3); b2 = rnd_int(2, s21, dt, 1, 3);
                bt = rnd_int(2, s43, dt, 1, 3);
                z = MUST(efla_scalar(2, dt, EFLA_DEVICE_CPU));
                v4 = rnd_int(1, &s4, dt, 1, 3);
            } else {
                double lo = op == EFLA_POW || op == EFLA_DIV ? 0.5 : -2, hi = 2;
                a = rnd(2, s34, dt, lo, hi); b = rnd(2, s34, dt, lo, hi);
                a3 = rnd(3, s314, dt, lo, hi); b2 = rnd(2, s21, dt, lo, hi);
                bt = rnd(2, s43, dt, lo, hi);
                z = MUST(efla_scalar(1.5, dt, EFLA_DEVICE_CPU));
                v4 = rnd(1, &s4, dt, lo, hi);
            }
            bT = MUST(efla_transpose(bt, 0, 1));   /* [3,4], non-contiguous */
            efla_tensor *an = MUST(efla_narrow(a3, 2, 1, 3));   /* [3,1,3] narrowed */
            check_binary(op, a, b, "same shape");
            check_binary(op, a3, b2, "[3,1,4] with [2,1]");
            check_binary(op, b2, a3, "[2,1] with [3,1,4]");
            check_binary(op, a, bT, "with a transposed view");
            check_binary(op, bT, a, "transposed view first");
            check_binary(op, an, b2, "narrowed view with [2,1]");
            check_binary(op, z, v4, "0-d with [4]");
            check_binary(op, v4, z, "[4] with 0-d");
            check_binary(op, z, z, "0-d with 0-d");
            efla_tensor *zz = MUST(efla_binary(op, z, z));
            CHECK(efla_tensor_ndim(zz) == 0, "0-d op 0-d is 0-d");
            efla_tensor_release(zz);
            efla_tensor *ts[10] = { a, b, a3, b2, bt, bT, z, v4, an, NULL };
            for (int i = 0; ts[i]; i++) efla_tensor_release(ts[i]);
        }
    /* empty and 0-d operands */
    {
        int64_t s03[2] = { 0, 3 }, s3 = 3;
        efla_tensor *e = MUST(efla_zeros(2, s03, F32, EFLA_DEVICE_CPU)), *r = MUST(efla_ones(1, &s3, F32, EFLA_DEVICE_CPU));
        efla_tensor *o = MUST(efla_binary(EFLA_ADD, e, r)), *u = MUST(efla_unary(EFLA_EXP, e));
        efla_tensor *z = MUST(efla_scalar(2, F64, EFLA_DEVICE_CPU)), *ez = MUST(efla_unary(EFLA_SQUARE, z));
        efla_tensor *w = MUST(efla_where(e, e, r));
        double zv;
        MUST_OK(efla_item(ez, &zv));
        CHECK(has_shape(o, 2, s03) && has_shape(u, 2, s03) && has_shape(w, 2, s03) &&
              efla_tensor_ndim(ez) == 0 && zv == 4, "empty and 0-d operands");
        efla_tensor *ts[] = { e, r, o, u, z, ez, w, NULL };
        for (int k = 0; ts[k]; k++) efla_tensor_release(ts[k]);
    }
    /* mixed dtypes promote: float32 + float64 -> float64; int64 / int64 -> float32 */
    int64_t s3 = 3;
    efla_tensor *f = rnd(1, &s3, F32, -1, 1), *d = rnd(1, &s3, F64, -1, 1), *i = rnd_int(1, &s3, I64, 1, 5);
    check_binary(EFLA_ADD, f, d, "float32 + float64");
    check_binary(EFLA_MUL, i, f, "int64 * float32");
    check_binary(EFLA_DIV, i, i, "int64 / int64");
    efla_tensor_release(f); efla_tensor_release(d); efla_tensor_release(i);
    /* exact int64 arithmetic beyond 2^53 */
    int64_t big[2] = { (1LL << 60) + 3, -(1LL << 55) - 1 }, two[2] = { 7, 3 };
    int64_t s2 = 2;
    efla_tensor *x = MUST(efla_from_buffer(1, &s2, I64, big, sizeof big));
    efla_tensor *y = MUST(efla_from_buffer(1, &s2, I64, two, sizeof two));
    efla_tensor *sum = MUST(efla_binary(EFLA_ADD, x, y)), *prod = MUST(efla_binary(EFLA_MUL, y, y));
    efla_tensor *pw = MUST(efla_binary(EFLA_POW, y, y));
    int64_t r1[2], r2[2], r3[2];
    MUST_OK(efla_to_buffer(sum, r1, sizeof r1)); MUST_OK(efla_to_buffer(prod, r2, sizeof r2));
    MUST_OK(efla_to_buffer(pw, r3, sizeof r3));
    CHECK(r1[0] == (1LL << 60) + 10 && r1[1] == -(1LL << 55) + 2, "int64 add exact: %lld %lld",
          (long long)r1[0], (long long)r1[1]);
    CHECK(r2[0] == 49 && r2[1] == 9 && r3[0] == 823543 && r3[1] == 27, "int64 mul/pow");
    efla_tensor *ge = MUST(efla_binary(EFLA_GT, x, y));
    uint8_t gb[2];
    MUST_OK(efla_to_buffer(ge, gb, 2));
    CHECK(efla_tensor_dtype(ge) == BOOLT && gb[0] == 1 && gb[1] == 0, "int64 comparison gives bool");
    efla_tensor *ts[7] = { x, y, sum, prod, pw, ge, NULL };
    for (int k = 0; ts[k]; k++) efla_tensor_release(ts[k]);
    /* NaN propagates through maximum/minimum */
    double nv[2] = { NAN, 1 }, ov[2] = { 0, NAN };
    efla_tensor *na = from_doubles(1, &s2, nv, F32), *nb = from_doubles(1, &s2, ov, F32);
    efla_tensor *mx = MUST(efla_binary(EFLA_MAXIMUM, na, nb)), *mn = MUST(efla_binary(EFLA_MINIMUM, na, nb));
    double *m1 = vals(mx), *m2 = vals(mn);
    CHECK(isnan(m1[0]) && isnan(m1[1]) && isnan(m2[0]) && isnan(m2[1]), "maximum/minimum propagate NaN");
    free(m1); free(m2);
    efla_tensor_release(na); efla_tensor_release(nb); efla_tensor_release(mx); efla_tensor_release(mn);
    /* big same-shape float32: the parallel path */
    int64_t n = 70001;
    efla_tensor *p = rnd(1, &n, F32, -1, 1), *q = rnd(1, &n, F32, -1, 1);
    check_binary(EFLA_MUL, p, q, "70001 elements");
    efla_tensor_release(p); efla_tensor_release(q);
    /* bfloat16 + bfloat16 rounds the float sum */
    double b1[2] = { 1.0, 256.0 }, b2[2] = { 0.00390625, 1.0 };
    efla_tensor *ba = from_doubles(1, &s2, b1, BF16), *bb = from_doubles(1, &s2, b2, BF16);
    efla_tensor *bs = MUST(efla_binary(EFLA_ADD, ba, bb));
    double *bsv = vals(bs);
    CHECK(efla_tensor_dtype(bs) == BF16 && bsv[0] == 1.0 && bsv[1] == 256.0, "bf16 add rounds: %g %g", bsv[0], bsv[1]);
    free(bsv);
    efla_tensor_release(ba); efla_tensor_release(bb); efla_tensor_release(bs);
}

/* ---- binary with a scalar ------------------------------------------------------------------------ */
static void test_binary_scalar(void) {
    int64_t s[2] = { 3, 5 };
    efla_dtype dts[2] = { F32, F64 };
    for (int k = 0; k < 2; k++)
        for (int op = 0; op < EFLA_BINARY_COUNT; op++)
            for (int first = 0; first < 2; first++) {
                efla_tensor *a = op >= EFLA_EQ ? rnd_int(2, s, dts[k], -2, 2) : rnd(2, s, dts[k], 0.5, 2);
                double v = op >= EFLA_EQ ? 1 : 1.25;
                efla_tensor *o = MUST(efla_binary_scalar(op, a, v, first));
                double *av = vals(a), *ov = vals(o), want[15];
                for (int i = 0; i < 15; i++) want[i] = first ? ref_binary(op, v, av[i]) : ref_binary(op, av[i], v);
                double e = max_err(ov, want, 15);
                CHECK(efla_tensor_dtype(o) == (op >= EFLA_EQ ? BOOLT : dts[k]) && e < tol_for(dts[k]) * 4,
                      "%s scalar (first=%d, %s): error %g", efla_binary_name(op), first, efla_dtype_name(dts[k]), e);
                free(av); free(ov);
                efla_tensor_release(a); efla_tensor_release(o);
            }
    /* integer tensors: integral scalar keeps int64; non-integral goes to float32; uint8 < 300 */
    int64_t s3 = 3;
    efla_tensor *i = rnd_int(1, &s3, I64, -5, 5);
    efla_tensor *o1 = MUST(efla_binary_scalar(EFLA_MUL, i, 3, 0)), *o2 = MUST(efla_binary_scalar(EFLA_MUL, i, 0.5, 0));
    efla_tensor *o3 = MUST(efla_binary_scalar(EFLA_DIV, i, 2, 0));
    CHECK(efla_tensor_dtype(o1) == I64 && efla_tensor_dtype(o2) == F32 && efla_tensor_dtype(o3) == F32,
          "int scalar dtypes %s %s %s", efla_dtype_name(efla_tensor_dtype(o1)),
          efla_dtype_name(efla_tensor_dtype(o2)), efla_dtype_name(efla_tensor_dtype(o3)));
    double *iv = vals(i), *v2 = vals(o2), *v3 = vals(o3);
    CHECK(v2[0] == iv[0] * 0.5 && v3[1] == iv[1] / 2, "int scalar values");
    free(iv); free(v2); free(v3);
    efla_tensor_release(i); efla_tensor_release(o1); efla_tensor_release(o2); efla_tensor_release(o3);
    double uv[3] = { 10, 200, 255 };
    efla_tensor *u = from_doubles(1, &s3, uv, U8);
    efla_tensor *lt = MUST(efla_binary_scalar(EFLA_LT, u, 300, 0)), *gt = MUST(efla_binary_scalar(EFLA_GT, u, 199.5, 0));
    uint8_t l[3], g[3];
    MUST_OK(efla_to_buffer(lt, l, 3)); MUST_OK(efla_to_buffer(gt, g, 3));
    CHECK(l[0] && l[1] && l[2] && !g[0] && g[1] && g[2], "uint8 comparisons with out-of-range scalars");
    efla_tensor_release(u); efla_tensor_release(lt); efla_tensor_release(gt);
}

/* ---- in place ------------------------------------------------------------------------------------ */
static void test_inplace(void) {
    int64_t s[3] = { 2, 3, 4 }, sb[2] = { 3, 1 };
    efla_tensor *a = rnd(3, s, F32, -1, 1), *b = rnd(2, sb, F64, -1, 1);
    double *av = vals(a), *bv = vals(b);
    int64_t v0 = efla_tensor_version(a);
    MUST_OK(efla_binary_(EFLA_MUL, a, b));
    CHECK(efla_tensor_version(a) > v0, "in-place op bumps the version");
    double *rv = vals(a), want[24];
    for (int i = 0; i < 24; i++) want[i] = (float)(av[i] * bv[bindex(i, 3, s, 2, sb)]);
    CHECK(max_err(rv, want, 24) < 1e-6 && efla_tensor_dtype(a) == F32, "a *= b (broadcast, float64 b, float32 a)");
    free(av); free(bv); free(rv);
    /* b must broadcast to a's shape */
    int64_t s5 = 5;
    efla_tensor *c = rnd(1, &s5, F32, 0, 1);
    CHECK_ERROR(efla_binary_(EFLA_ADD, b, a) < 0, "[2,3,4]");
    CHECK_ERROR(efla_binary_(EFLA_ADD, a, c) < 0, "[5]");
    /* in-place into a transposed view, and a += a.T (overlap) */
    int64_t sq[2] = { 4, 4 };
    efla_tensor *m = rnd(2, sq, F64, -1, 1);
    double *mv = vals(m);
    efla_tensor *mt = MUST(efla_transpose(m, 0, 1));
    MUST_OK(efla_binary_(EFLA_ADD, m, mt));
    double *mr = vals(m), w[16];
    for (int i = 0; i < 4; i++) for (int j = 0; j < 4; j++) w[i * 4 + j] = mv[i * 4 + j] + mv[j * 4 + i];
    CHECK(max_err(mr, w, 16) < 1e-15, "a += a.T reads the old values");
    free(mv); free(mr);
    /* a comparison in place casts bool into a's dtype; int a with float b truncates */
    int64_t s3 = 3;
    double iv[3] = { 1, 2, 3 };
    efla_tensor *ia = from_doubles(1, &s3, iv, I64), *h = MUST(efla_scalar(0.75, F64, EFLA_DEVICE_CPU));
    MUST_OK(efla_binary_(EFLA_ADD, ia, h));
    double *ir = vals(ia);
    CHECK(efla_tensor_dtype(ia) == I64 && ir[0] == 1 && ir[2] == 3, "int64 += 0.75 stays int64 (truncates)");
    free(ir);
    MUST_OK(efla_binary_(EFLA_GE, ia, h));
    ir = vals(ia);
    CHECK(ir[0] == 1 && ir[1] == 1, "int64 >= in place gives 1/0");
    free(ir);
    /* autograd: leaves that require grad refuse; fine with grad mode off */
    efla_tensor *p = rnd(1, &s3, F64, 0, 1);
    MUST_OK(efla_set_requires_grad(p, 1));
    CHECK_ERROR(efla_binary_(EFLA_ADD, p, h) < 0, "requires grad");
    int prev = efla_set_grad_enabled(0);
    CHECK(efla_binary_(EFLA_ADD, p, h) == 0, "in-place on a leaf with grad mode off");
    efla_set_grad_enabled(prev);
    efla_tensor *q = MUST(efla_binary_scalar(EFLA_MUL, p, 2, 0));
    CHECK_ERROR(efla_binary_(EFLA_ADD, q, h) < 0, "out-of-place");
    /* a saved tensor changed in place makes backward fail with a clear message */
    efla_tensor *e = MUST(efla_unary(EFLA_EXP, q)), *ones = MUST(efla_ones(1, &s3, F64, EFLA_DEVICE_CPU));
    prev = efla_set_grad_enabled(0);
    MUST_OK(efla_binary_(EFLA_ADD, e, h));
    efla_set_grad_enabled(prev);
    CHECK_ERROR(efla_backward(e, ones, 0) < 0, "modified by an in-place");
    /* an expanded destination is refused */
    efla_tensor *one = MUST(efla_scalar(1, F32, EFLA_DEVICE_CPU)), *ex = MUST(efla_expand(one, 1, &s3));
    CHECK_ERROR(efla_binary_(EFLA_ADD, ex, one) < 0, "expanded");
    efla_tensor *ts[] = { a, b, c, m, mt, ia, h, p, q, e, ones, one, ex, NULL };
    for (int i = 0; ts[i]; i++) efla_tensor_release(ts[i]);
}

/* ---- clamp, where, masked_fill, tril/triu ---------------------------------------------------- */
static void test_clamp_where_tri(void) {
    int64_t s[2] = { 5, 6 };
    efla_dtype dts[2] = { F32, F64 };
    for (int k = 0; k < 2; k++) {
        efla_tensor *x = rnd(2, s, dts[k], -2, 2), *xt = MUST(efla_transpose(x, 0, 1));
        double bounds[3][2] = { { -0.5, 0.7 }, { -INFINITY, 0.3 }, { 0.1, INFINITY } };
        for (int j = 0; j < 3; j++) {
            efla_tensor *y = MUST(efla_clamp(xt, bounds[j][0], bounds[j][1]));
            double *xv = vals(xt), *yv = vals(y), w[30];
            for (int i = 0; i < 30; i++) w[i] = fmin(fmax(xv[i], bounds[j][0]), bounds[j][1]);
            CHECK(max_err(yv, w, 30) < tol_for(dts[k]) * 4, "clamp %g %g", bounds[j][0], bounds[j][1]);
            free(xv); free(yv);
            efla_tensor_release(y);
        }
        efla_tensor_release(x); efla_tensor_release(xt);
    }
    int64_t s4 = 4;
    double iv[4] = { -5, 0, 3, 9 };
    efla_tensor *xi = from_doubles(1, &s4, iv, I64);
    efla_tensor *ci = MUST(efla_clamp(xi, -1, 4)), *cf = MUST(efla_clamp(xi, -1.5, 4));
    double *cv = vals(ci), *fv = vals(cf);
    CHECK(efla_tensor_dtype(ci) == I64 && cv[0] == -1 && cv[3] == 4 && efla_tensor_dtype(cf) == F32 && fv[0] == -1.5,
          "clamp int64 (integral bounds keep int64, others float32)");
    free(cv); free(fv);
    CHECK_ERROR(efla_clamp(xi, NAN, 1) == NULL, "NaN");
    efla_tensor_release(xi); efla_tensor_release(ci); efla_tensor_release(cf);

    /* where: cond [3,1] bool, a [1,4] float32, b 0-d float64 -> [3,4] float64 */
    int64_t sc[2] = { 3, 1 }, sa[2] = { 1, 4 }, so[2] = { 3, 4 };
    efla_tensor *cond = rnd_int(2, sc, BOOLT, 0, 1), *a = rnd(2, sa, F32, -1, 1);
    efla_tensor *b = MUST(efla_scalar(7.5, F64, EFLA_DEVICE_CPU));
    efla_tensor *w = MUST(efla_where(cond, a, b));
    double *cv2 = vals(cond), *av = vals(a), *wv = vals(w), want[12];
    for (int i = 0; i < 12; i++) want[i] = cv2[bindex(i, 2, so, 2, sc)] ? av[bindex(i, 2, so, 2, sa)] : 7.5;
    CHECK(has_shape(w, 2, so) && efla_tensor_dtype(w) == F64 && max_err(wv, want, 12) == 0, "where broadcast");
    free(cv2); free(av); free(wv);
    /* a float condition means nonzero; uint8 too */
    double fc[4] = { 0, 2, -1, 0 };
    efla_tensor *fcond = from_doubles(1, &s4, fc, F32), *ucond = from_doubles(1, &s4, fc, U8);
    efla_tensor *o1 = MUST(efla_ones(1, &s4, F32, EFLA_DEVICE_CPU)), *z1 = MUST(efla_zeros(1, &s4, F32, EFLA_DEVICE_CPU));
    efla_tensor *w1 = MUST(efla_where(fcond, o1, z1)), *w2 = MUST(efla_where(ucond, o1, z1));
    double *w1v = vals(w1), *w2v = vals(w2);
    CHECK(w1v[0] == 0 && w1v[1] == 1 && w1v[2] == 1 && w1v[3] == 0 && w2v[0] == 0 && w2v[1] == 1, "where with float/uint8 cond");
    free(w1v); free(w2v);
    int64_t s5 = 5;
    efla_tensor *bad = MUST(efla_zeros(1, &s5, BOOLT, EFLA_DEVICE_CPU));
    CHECK_ERROR(efla_where(bad, o1, z1) == NULL, "[5]");
    efla_tensor *ts1[] = { cond, a, b, w, fcond, ucond, w1, w2, bad, NULL };
    for (int i = 0; ts1[i]; i++) efla_tensor_release(ts1[i]);

    /* masked_fill: mask [4] over t [3,4] */
    efla_tensor *t = rnd(2, so, F32, -1, 1), *mask = from_doubles(1, &s4, fc, BOOLT);
    efla_tensor *mf = MUST(efla_masked_fill(t, mask, -INFINITY));
    double *tv = vals(t), *mv = vals(mf);
    int ok = 1;
    for (int i = 0; i < 12; i++) ok &= (fc[i % 4] != 0) ? (isinf(mv[i]) && mv[i] < 0) : mv[i] == tv[i];
    CHECK(ok && efla_tensor_dtype(mf) == F32, "masked_fill -inf");
    free(tv); free(mv);
    int64_t s234[3] = { 2, 3, 4 };
    efla_tensor *m3 = MUST(efla_zeros(3, s234, BOOLT, EFLA_DEVICE_CPU));
    CHECK_ERROR(efla_masked_fill(t, m3, 0) == NULL, "[2,3,4]");
    efla_tensor_release(t); efla_tensor_release(mask); efla_tensor_release(mf); efla_tensor_release(m3);
    efla_tensor_release(o1); efla_tensor_release(z1);

    /* tril / triu over the last two dims, several k, contiguous and transposed input */
    int64_t st[3] = { 2, 4, 5 };
    efla_tensor *m = rnd(3, st, F64, -1, 1), *mt = MUST(efla_transpose(m, 1, 2));   /* [2,5,4] */
    int64_t ks[4] = { -1, 0, 2, -7 };
    for (int v = 0; v < 2; v++)
        for (int j = 0; j < 4; j++)
            for (int up = 0; up < 2; up++) {
                efla_tensor *in = v ? mt : m;
                efla_tensor *r = MUST(up ? efla_triu(in, ks[j]) : efla_tril(in, ks[j]));
                int64_t R = efla_tensor_size(in, 1), C = efla_tensor_size(in, 2);
                double *iv2 = vals(in), *rv = vals(r);
                int good = 1;
                for (int64_t i = 0; i < 2 * R * C; i++) {
                    int64_t row = (i / C) % R, col = i % C;
                    int keep = up ? col - row >= ks[j] : col - row <= ks[j];
                    good &= rv[i] == (keep ? iv2[i] : 0);
                }
                CHECK(good, "%s k=%lld view %d", up ? "triu" : "tril", (long long)ks[j], v);
                free(iv2); free(rv);
                efla_tensor_release(r);
            }
    efla_tensor *v1 = MUST(efla_zeros(1, &s4, F32, EFLA_DEVICE_CPU));
    CHECK_ERROR(efla_tril(v1, 0) == NULL, "at least 2 dims");
    efla_tensor *mi = MUST(efla_to(m, I64, EFLA_DEVICE_CPU)), *ti = MUST(efla_triu(mi, 1));
    CHECK(efla_tensor_dtype(ti) == I64, "triu keeps int64");
    efla_tensor_release(m); efla_tensor_release(mt); efla_tensor_release(v1); efla_tensor_release(mi);
    efla_tensor_release(ti);
}

/* ---- fill, copy/casts, arange ------------------------------------------------------------------- */
static double ref_cast(double v, efla_dtype dt) {
    switch (dt) {
    case F32: return (float)v;
    case F64: return v;
    case BF16: return efla_bf16_to_f32(efla_f32_to_bf16((float)v));
    case I64: return isnan(v) ? 0 : trunc(v);
    case U8: return (double)(uint8_t)(int64_t)trunc(v);
    case BOOLT: return v != 0;
    }
    return NAN;
}

static void test_fill_copy(void) {
    /* every dtype pair, from a transposed (strided) source */
    double src[6] = { 0, 1, -1, 2.5, 255, 300.75 };
    int64_t s23[2] = { 2, 3 };
    for (int from = 0; from < 6; from++)
        for (int to = 0; to < 6; to++) {
            efla_tensor *a = from_doubles(2, s23, src, (efla_dtype)from);
            double *av = vals(a);   /* the source values as its dtype holds them */
            efla_tensor *at = MUST(efla_transpose(a, 0, 1));
            efla_tensor *c = MUST(efla_to(at, (efla_dtype)to, EFLA_DEVICE_CPU));
            double *cv = vals(c), want[6];
            for (int i = 0; i < 3; i++) for (int j = 0; j < 2; j++) want[i * 2 + j] = ref_cast(av[j * 3 + i], (efla_dtype)to);
            CHECK(efla_tensor_dtype(c) == (efla_dtype)to && max_err(cv, want, 6) == 0, "cast %s -> %s",
                  efla_dtype_name((efla_dtype)from), efla_dtype_name((efla_dtype)to));
            free(av); free(cv);
            efla_tensor_release(a); efla_tensor_release(at); efla_tensor_release(c);
        }
    /* contiguous() of transposed batches (the tiled path), each element size */
    {
        int64_t sb[3] = { 3, 37, 45 };
        efla_dtype tds[4] = { F64, F32, BF16, U8 };
        for (int k = 0; k < 4; k++) {
            efla_tensor *x = rnd_int(3, sb, tds[k], 0, 200), *xt = MUST(efla_transpose(x, 1, 2));
            efla_tensor *xn = MUST(efla_narrow(xt, 2, 3, 30));   /* [3,45,30], offset view */
            efla_tensor *views[2] = { xt, xn };
            for (int v = 0; v < 2; v++) {
                efla_tensor *c = MUST(efla_contiguous(views[v]));
                double *xv = vals(x), *cv = vals(c);
                int64_t C = efla_tensor_size(views[v], 2), c0 = v ? 3 : 0;
                int good = efla_tensor_is_contiguous(c);
                for (int64_t b = 0; b < 3; b++)
                    for (int64_t i = 0; i < 45; i++)
                        for (int64_t j = 0; j < C; j++)
                            good &= cv[(b * 45 + i) * C + j] == xv[(b * 37 + j + c0) * 45 + i];
                CHECK(good, "contiguous() of a transposed %s batch (view %d)", efla_dtype_name(tds[k]), v);
                free(xv); free(cv);
                efla_tensor_release(c);
            }
            efla_tensor_release(x); efla_tensor_release(xt); efla_tensor_release(xn);
        }
    }
    /* float -> int64: NaN gives 0, out of range saturates, fractions truncate toward zero */
    {
        double sp[4] = { NAN, 1e30, -1e30, -2.9 };
        int64_t s4 = 4, iv[4];
        efla_tensor *x = from_doubles(1, &s4, sp, F64), *xi = MUST(efla_to(x, I64, EFLA_DEVICE_CPU));
        MUST_OK(efla_to_buffer(xi, iv, sizeof iv));
        CHECK(iv[0] == 0 && iv[1] == INT64_MAX && iv[2] == INT64_MIN && iv[3] == -2, "float64 -> int64 edge cases");
        efla_tensor_release(x); efla_tensor_release(xi);
    }
    /* bfloat16 round trip: exact values survive, ties round to even, NaN/inf survive */
    float fv[7] = { 1.0f, 1.00390625f, 1.01171875f, -3.5f, INFINITY, NAN, 1e-3f };
    float expect[7] = { 1.0f, 1.0f, 1.015625f, -3.5f, INFINITY, NAN, 0 };
    expect[6] = efla_bf16_to_f32(efla_f32_to_bf16(1e-3f));
    int64_t s7 = 7;
    efla_tensor *f = MUST(efla_from_buffer(1, &s7, F32, fv, sizeof fv));
    efla_tensor *b = MUST(efla_to(f, BF16, EFLA_DEVICE_CPU)), *back = MUST(efla_to(b, F32, EFLA_DEVICE_CPU));
    float got[7];
    MUST_OK(efla_to_buffer(back, got, sizeof got));
    int ok = 1;
    for (int i = 0; i < 7; i++) ok &= isnan(expect[i]) ? isnan(got[i]) : got[i] == expect[i];
    CHECK(ok && fabsf(got[6] - 1e-3f) < 1e-5f, "bfloat16 round trip (%g %g %g)", got[1], got[2], got[6]);
    efla_tensor_release(f); efla_tensor_release(b); efla_tensor_release(back);
    /* fill a strided view of each dtype */
    for (int dt = 0; dt < 6; dt++) {
        int64_t s[2] = { 3, 4 };
        efla_tensor *z = MUST(efla_zeros(2, s, (efla_dtype)dt, EFLA_DEVICE_CPU));
        efla_tensor *col = MUST(efla_narrow(z, 1, 1, 2));
        MUST_OK(efla_fill_(col, 3));
        double *zv = vals(z);
        int good = 1;
        for (int i = 0; i < 12; i++) good &= zv[i] == ((i % 4 == 1 || i % 4 == 2) ? (dt == BOOLT ? 1 : 3) : 0);
        CHECK(good, "fill_ on a narrowed %s view", efla_dtype_name((efla_dtype)dt));
        free(zv);
        efla_tensor_release(z); efla_tensor_release(col);
    }
    /* copy_ broadcasts and casts */
    int64_t s34[2] = { 3, 4 }, s4 = 4;
    efla_tensor *dst = MUST(efla_zeros(2, s34, F64, EFLA_DEVICE_CPU)), *row = rnd(1, &s4, F32, -1, 1);
    MUST_OK(efla_copy_(dst, row));
    double *dv = vals(dst), *rv = vals(row);
    ok = 1;
    for (int i = 0; i < 12; i++) ok &= dv[i] == rv[i % 4];
    CHECK(ok, "copy_ broadcasts a row");
    free(dv); free(rv);
    efla_tensor_release(dst); efla_tensor_release(row);
    /* arange / linspace */
    efla_tensor *ar = MUST(efla_arange(0, 10, 1.5, F32, EFLA_DEVICE_CPU)), *ai = MUST(efla_arange(5, -1, -2, I64, EFLA_DEVICE_CPU));
    efla_tensor *ls = MUST(efla_linspace(0, 1, 5, F64, EFLA_DEVICE_CPU));
    double *arv = vals(ar), *aiv = vals(ai), *lsv = vals(ls);
    CHECK(efla_tensor_numel(ar) == 7 && arv[6] == 9 && efla_tensor_numel(ai) == 3 && aiv[2] == 1 &&
          lsv[4] == 1 && lsv[1] == 0.25, "arange/linspace");
    free(arv); free(aiv); free(lsv);
    efla_tensor_release(ar); efla_tensor_release(ai); efla_tensor_release(ls);
}

/* ---- random numbers -------------------------------------------------------------------------- */
static void test_rand(void) {
    int64_t n = 100000;
    efla_dtype dts[3] = { F32, F64, BF16 };
    for (int k = 0; k < 3; k++) {
        efla_manual_seed(1234);
        efla_set_num_threads(1);
        efla_tensor *u1 = MUST(efla_rand(1, &n, dts[k], EFLA_DEVICE_CPU)), *g1 = MUST(efla_randn(1, &n, dts[k], EFLA_DEVICE_CPU));
        efla_manual_seed(1234);
        efla_set_num_threads(2);
        efla_tensor *u2 = MUST(efla_rand(1, &n, dts[k], EFLA_DEVICE_CPU)), *g2 = MUST(efla_randn(1, &n, dts[k], EFLA_DEVICE_CPU));
        double *a = vals(u1), *b = vals(u2), *c = vals(g1), *d = vals(g2);
        CHECK(!memcmp(a, b, sizeof(double) * (size_t)n) && !memcmp(c, d, sizeof(double) * (size_t)n),
              "%s rand/randn identical for the same seed with 1 and 2 threads", efla_dtype_name(dts[k]));
        double mu = 0, mn = 1, mx = 0, gm = 0, gv = 0;
        for (int64_t i = 0; i < n; i++) { mu += a[i]; mn = fmin(mn, a[i]); mx = fmax(mx, a[i]); gm += c[i]; gv += c[i] * c[i]; }
        mu /= (double)n; gm /= (double)n; gv = gv / (double)n - gm * gm;
        CHECK(mn >= 0 && mx < 1 && fabs(mu - 0.5) < 0.01, "%s uniform in [0,1): min %g max %g mean %g",
              efla_dtype_name(dts[k]), mn, mx, mu);
        CHECK(fabs(gm) < 0.02 && fabs(gv - 1) < 0.03, "%s normal: mean %g var %g", efla_dtype_name(dts[k]), gm, gv);
        CHECK(memcmp(a, c, sizeof(double) * 16) != 0, "consecutive draws differ");
        free(a); free(b); free(c); free(d);
        efla_tensor_release(u1); efla_tensor_release(u2); efla_tensor_release(g1); efla_tensor_release(g2);
    }
    /* the first element of a draw depends only on (seed, offset) */
    efla_rng_set_state(99, 5);
    int64_t n3 = 3, n1 = 1;
    efla_tensor *r3 = MUST(efla_rand(1, &n3, F64, EFLA_DEVICE_CPU));
    efla_rng_set_state(99, 7);
    efla_tensor *r1 = MUST(efla_rand(1, &n1, F64, EFLA_DEVICE_CPU));
    double *v3 = vals(r3), *v1 = vals(r1);
    CHECK(v3[2] == v1[0], "element i uses counter offset + i");
    uint64_t seed, off;
    efla_rng_get_state(&seed, &off);
    CHECK(seed == 99 && off == 8, "offset advances by the element count");
    free(v3); free(v1);
    efla_tensor_release(r3); efla_tensor_release(r1);
    /* the documented formulas, element by element, from efla_philox4x32 (a CUDA kernel
     * that follows them gives the same numbers) */
    {
        int64_t m = 257;
        efla_rng_set_state(0xfeedULL, 1000);
        efla_tensor *uf = MUST(efla_rand(1, &m, F32, EFLA_DEVICE_CPU)), *ud = MUST(efla_rand(1, &m, F64, EFLA_DEVICE_CPU));
        efla_tensor *ub = MUST(efla_rand(1, &m, BF16, EFLA_DEVICE_CPU));
        efla_tensor *nf = MUST(efla_randn(1, &m, F32, EFLA_DEVICE_CPU)), *nd = MUST(efla_randn(1, &m, F64, EFLA_DEVICE_CPU));
        efla_tensor *bn = MUST(efla_bernoulli(1, &m, 0.25, U8, EFLA_DEVICE_CPU));
        efla_tensor *ri = MUST(efla_randint(-5, 1000003, 1, &m, EFLA_DEVICE_CPU));
        double *v[7] = { vals(uf), vals(ud), vals(ub), vals(nf), vals(nd), vals(bn), vals(ri) };
        int ok[7] = { 1, 1, 1, 1, 1, 1, 1 };
        for (int64_t i = 0; i < m; i++) {
            uint32_t r[7][4];
            for (int k = 0; k < 7; k++) efla_philox4x32(1000 + (uint64_t)(k * m + i), 0xfeedULL, r[k]);
            double u53a = (double)((((uint64_t)r[1][0] << 32) | r[1][1]) >> 11) * 0x1p-53;
            ok[0] &= v[0][i] == (float)((double)(r[0][0] >> 8) * 0x1p-24);
            ok[1] &= v[1][i] == u53a;
            ok[2] &= v[2][i] == (double)(r[2][0] >> 24) * 0x1p-8;
            double z32 = sqrt(-2 * log(((double)r[3][0] + 1) * 0x1p-32)) * cos(2 * M_PI * (double)r[3][1] * 0x1p-32);
            ok[3] &= fabs(v[3][i] - (float)z32) <= 1e-6 * fmax(1, fabs(z32));
            double a1 = (double)((((uint64_t)r[4][0] << 32) | r[4][1]) >> 11) * 0x1p-53 + 0x1p-53;
            double a2 = (double)((((uint64_t)r[4][2] << 32) | r[4][3]) >> 11) * 0x1p-53;
            double z53 = sqrt(-2 * log(a1)) * cos(2 * M_PI * a2);
            ok[4] &= fabs(v[4][i] - z53) <= 1e-14 * fmax(1, fabs(z53));
            ok[5] &= v[5][i] == ((double)((((uint64_t)r[5][0] << 32) | r[5][1]) >> 11) * 0x1p-53 < 0.25);
            ok[6] &= v[6][i] == (double)(-5 + (int64_t)(((((uint64_t)r[6][0] << 32) | r[6][1])) % 1000008u));
        }
        const char *what[7] = { "rand f32", "rand f64", "rand bf16", "randn f32", "randn f64", "bernoulli", "randint" };
        for (int k = 0; k < 7; k++) { CHECK(ok[k], "%s follows the documented Philox formula", what[k]); free(v[k]); }
        efla_tensor *ts[] = { uf, ud, ub, nf, nd, bn, ri, NULL };
        for (int k = 0; ts[k]; k++) efla_tensor_release(ts[k]);
    }
    /* bernoulli and randint */
    efla_tensor *be = MUST(efla_bernoulli(1, &n, 0.3, F32, EFLA_DEVICE_CPU));
    efla_tensor *ri = MUST(efla_randint(-3, 4, 1, &n, EFLA_DEVICE_CPU));
    double *bv = vals(be), *iv = vals(ri), bm = 0;
    int ok = efla_tensor_dtype(ri) == I64, seen[7] = { 0 };
    for (int64_t i = 0; i < n; i++) {
        bm += bv[i];
        ok &= (bv[i] == 0 || bv[i] == 1) && iv[i] >= -3 && iv[i] < 4 && iv[i] == floor(iv[i]);
        if (iv[i] >= -3 && iv[i] < 4) seen[(int)iv[i] + 3] = 1;
    }
    for (int i = 0; i < 7; i++) ok &= seen[i];
    CHECK(ok && fabs(bm / (double)n - 0.3) < 0.01, "bernoulli mean %g, randint range", bm / (double)n);
    free(bv); free(iv);
    efla_tensor_release(be); efla_tensor_release(ri);
    /* rand into a bool tensor via bernoulli, and errors */
    CHECK_ERROR(efla_rand(1, &n3, I64, EFLA_DEVICE_CPU) == NULL, "floating");
    efla_set_num_threads(2);
}

/* ---- adamw ---------------------------------------------------------------------------------------- */
static void test_adamw(void) {
    int64_t s[2] = { 33, 40 };   /* 1320 elements */
    efla_dtype combos[3][2] = { { F32, F32 }, { F64, F64 }, { BF16, F32 } };
    for (int k = 0; k < 3; k++) {
        efla_dtype pd = combos[k][0], md = combos[k][1];
        efla_tensor *p = rnd(2, s, pd, -1, 1), *m = MUST(efla_zeros(2, s, md, EFLA_DEVICE_CPU));
        efla_tensor *v = MUST(efla_zeros(2, s, md, EFLA_DEVICE_CPU));
        int64_t n = 33 * 40;
        double *rp = vals(p), *rm = calloc((size_t)n, sizeof(double)), *rv = calloc((size_t)n, sizeof(double));
        double lr = 1e-2, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.1;
        int64_t ver = efla_tensor_version(p);
        for (int step = 1; step <= 3; step++) {
            efla_tensor *g = rnd(2, s, pd, -1, 1);
            double *gv = vals(g);
            MUST_OK(efla_adamw_step_(p, g, m, v, lr, b1, b2, eps, wd, step));
            for (int64_t i = 0; i < n; i++) {
                rp[i] -= lr * wd * rp[i];
                rm[i] = b1 * rm[i] + (1 - b1) * gv[i];
                rv[i] = b2 * rv[i] + (1 - b2) * gv[i] * gv[i];
                rp[i] -= lr * (rm[i] / (1 - pow(b1, step))) / (sqrt(rv[i] / (1 - pow(b2, step))) + eps);
            }
            if (pd == BF16) { double *pv = vals(p); memcpy(rp, pv, sizeof(double) * (size_t)n); free(pv); }
            free(gv);
            efla_tensor_release(g);
        }
        double *pv = vals(p), *mv = vals(m);
        double tol = pd == F64 ? 1e-12 : pd == BF16 ? 1e-2 : 1e-5;
        CHECK(max_err(pv, rp, n) < tol && max_err(mv, rm, n) < (pd == F64 ? 1e-12 : 1e-5),
              "adamw p %s / m %s: p error %g, m error %g", efla_dtype_name(pd), efla_dtype_name(md),
              max_err(pv, rp, n), max_err(mv, rm, n));
        CHECK(efla_tensor_version(p) > ver && efla_tensor_version(m) > 0, "adamw bumps versions");
        free(pv); free(mv); free(rp); free(rm); free(rv);
        efla_tensor_release(p); efla_tensor_release(m); efla_tensor_release(v);
    }
    int64_t s3 = 3, s4 = 4;
    efla_tensor *p = MUST(efla_zeros(1, &s3, F32, EFLA_DEVICE_CPU)), *g = MUST(efla_zeros(1, &s4, F32, EFLA_DEVICE_CPU));
    efla_tensor *m = MUST(efla_zeros(1, &s3, F32, EFLA_DEVICE_CPU)), *v = MUST(efla_zeros(1, &s3, F32, EFLA_DEVICE_CPU));
    efla_tensor *gd = MUST(efla_zeros(1, &s3, F64, EFLA_DEVICE_CPU));
    CHECK_ERROR(efla_adamw_step_(p, g, m, v, 1e-3, 0.9, 0.999, 1e-8, 0, 1) < 0, "[4]");
    CHECK_ERROR(efla_adamw_step_(p, gd, m, v, 1e-3, 0.9, 0.999, 1e-8, 0, 1) < 0, "float64");
    CHECK_ERROR(efla_adamw_step_(p, m, m, v, 1e-3, 0.9, 0.999, 1e-8, 0, 0) < 0, "step");
    /* parameters that require grad are updated (it's what an optimiser does) */
    MUST_OK(efla_set_requires_grad(p, 1));
    efla_tensor *m2 = MUST(efla_zeros(1, &s3, F32, EFLA_DEVICE_CPU));
    CHECK_ERROR(efla_adamw_step_(p, m2, m, m, 1e-3, 0.9, 0.999, 1e-8, 0, 1) < 0, "share storage");
    CHECK(efla_adamw_step_(p, m2, m, v, 1e-3, 0.9, 0.999, 1e-8, 0, 1) == 0, "adamw on a leaf that requires grad");
    efla_tensor *ts[] = { p, g, m, v, gd, m2, NULL };
    for (int i = 0; ts[i]; i++) efla_tensor_release(ts[i]);
}

/* ---- errors ---------------------------------------------------------------------------------------- */
static void test_errors(void) {
    int64_t s34[2] = { 3, 4 }, s5 = 5;
    efla_tensor *a = MUST(efla_zeros(2, s34, F32, EFLA_DEVICE_CPU)), *b = MUST(efla_zeros(1, &s5, F32, EFLA_DEVICE_CPU));
    efla_tensor *o = efla_binary(EFLA_ADD, a, b);
    const char *msg = efla_last_error();
    CHECK(!o && strstr(msg, "[3,4]") && strstr(msg, "[5]") && strstr(msg, "add"),
          "shape mismatch names both shapes and the op: %s", msg);
    /* a tensor that claims to live on cuda:0 (no CUDA here): the device check comes first */
    efla_tensor *fake = efla_tensor_alias(b);
    fake->device = EFLA_DEVICE_CUDA0;
    CHECK_ERROR(efla_binary(EFLA_MUL, b, fake) == NULL, "different devices");
    CHECK_ERROR(efla_where(b, b, fake) == NULL, "cuda:0");
    CHECK_ERROR(efla_binary_(EFLA_ADD, b, fake) < 0, "different devices");
    CHECK_ERROR(efla_binary(EFLA_ADD, NULL, b) == NULL, "NULL");
    CHECK_ERROR(efla_binary((efla_binary_op)42, a, b) == NULL, "unknown op");
    efla_tensor_release(fake); efla_tensor_release(a); efla_tensor_release(b);
}

/* ---- gradients ------------------------------------------------------------------------------------- */
typedef efla_tensor *(*fn_t)(efla_tensor *const *in, const void *ctx);

/* sum(w * f(in)) computed by hand from the output's values. */
static double loss_of(fn_t f, efla_tensor *const *in, const void *ctx, const double *w) {
    efla_tensor *o = MUST(f(in, ctx));
    double *ov = vals(o), l = 0;
    for (int64_t i = 0; i < efla_tensor_numel(o); i++) l += w[i] * ov[i];
    free(ov);
    efla_tensor_release(o);
    return l;
}

/* Analytic gradients (backward with an explicit weight tensor) vs central differences. */
static void gradcheck(const char *name, fn_t f, const void *ctx, int n_in, efla_tensor *const *in) {
    efla_tensor *o = f(in, ctx);
    CHECK(o != NULL, "%s: forward", name);
    if (!o) return;
    int nd;
    int64_t s[8];
    nd = shape_of(o, s);
    efla_tensor *wt = rnd(nd, s, F64, -1, 1);
    double *w = vals(wt);
    int rc = efla_backward(o, wt, 0);
    CHECK(rc == 0, "%s: backward", name);
    efla_tensor_release(o);
    efla_tensor_release(wt);
    double worst = 0;
    int prev = efla_set_grad_enabled(0);
    for (int i = 0; i < n_in && rc == 0; i++) {
        if (!efla_requires_grad(in[i])) continue;
        efla_tensor *g = efla_grad(in[i]);
        CHECK(g != NULL, "%s: input %d got no gradient", name, i);
        if (!g) continue;
        double *gv = vals(g);
        int64_t n = efla_tensor_numel(in[i]);
        int ndi;
        int64_t si[8], idx[8];
        ndi = shape_of(in[i], si);
        for (int64_t j = 0; j < n; j++) {
            int64_t r = j;
            for (int d = ndi - 1; d >= 0; d--) { idx[d] = r % si[d]; r /= si[d]; }
            double x0, h = 1e-6;
            MUST_OK(efla_get(in[i], idx, &x0));
            MUST_OK(efla_set(in[i], idx, x0 + h));
            double lp = loss_of(f, in, ctx, w);
            MUST_OK(efla_set(in[i], idx, x0 - h));
            double lm = loss_of(f, in, ctx, w);
            MUST_OK(efla_set(in[i], idx, x0));
            double num = (lp - lm) / (2 * h);
            double e = fabs(num - gv[j]) / fmax(1.0, fabs(num));
            if (e > worst) worst = e;
        }
        free(gv);
        efla_tensor_release(g);
        efla_set_grad(in[i], NULL);
    }
    efla_set_grad_enabled(prev);
    CHECK(worst < 1e-6, "%s: gradient error %g", name, worst);
    free(w);
}

typedef struct { int op; double v; int first; double lo, hi; int64_t k; } gctx;
static efla_tensor *g_unary(efla_tensor *const *in, const void *c) { return efla_unary(((const gctx *)c)->op, in[0]); }
static efla_tensor *g_binary(efla_tensor *const *in, const void *c) { return efla_binary(((const gctx *)c)->op, in[0], in[1]); }
static efla_tensor *g_scalar(efla_tensor *const *in, const void *c) {
    const gctx *g = c;
    return efla_binary_scalar(g->op, in[0], g->v, g->first);
}
static efla_tensor *g_clamp(efla_tensor *const *in, const void *c) { return efla_clamp(in[0], ((const gctx *)c)->lo, ((const gctx *)c)->hi); }
static efla_tensor *g_where(efla_tensor *const *in, const void *c) { return efla_where(in[2], in[0], in[1]); }
static efla_tensor *g_masked(efla_tensor *const *in, const void *c) { return efla_masked_fill(in[0], in[2], 3.5); }
static efla_tensor *g_tril(efla_tensor *const *in, const void *c) { return efla_tril(in[0], ((const gctx *)c)->k); }
static efla_tensor *g_triu(efla_tensor *const *in, const void *c) { return efla_triu(in[0], ((const gctx *)c)->k); }
/* a chain through a non-contiguous view: exp(a.T) * b */
static efla_tensor *g_chain(efla_tensor *const *in, const void *c) {
    efla_tensor *t = efla_transpose(in[0], 0, 1), *e = efla_unary(EFLA_EXP, t);
    efla_tensor *r = efla_binary(EFLA_MUL, e, in[1]);
    efla_tensor_release(t); efla_tensor_release(e);
    return r;
}

static efla_tensor *leaf(int nd, const int64_t *s, double lo, double hi) {
    efla_tensor *t = rnd(nd, s, F64, lo, hi);
    MUST_OK(efla_set_requires_grad(t, 1));
    return t;
}

static void test_gradients(void) {
    int64_t s[2] = { 3, 4 };
    for (int op = 0; op < EFLA_UNARY_COUNT; op++) {
        double lo, hi;
        unary_domain(op, &lo, &hi);
        efla_tensor *x = leaf(2, s, lo, hi);
        gctx c = { .op = op };
        char name[64];
        snprintf(name, sizeof name, "grad %s", efla_unary_name(op));
        gradcheck(name, g_unary, &c, 1, &x);
        efla_tensor_release(x);
    }
    /* binary: same shape, and broadcasting [3,1,4] with [2,1] (needs reduce for the sum back) */
    int64_t s314[3] = { 3, 1, 4 }, s21[2] = { 2, 1 };
    for (int op = EFLA_ADD; op <= EFLA_MINIMUM; op++)
        for (int bc = 0; bc < 2; bc++) {
            double lo = (op == EFLA_POW || op == EFLA_DIV) ? 0.5 : -2;
            efla_tensor *in[2] = { bc ? leaf(3, s314, lo, 2) : leaf(2, s, lo, 2), bc ? leaf(2, s21, lo, 2) : leaf(2, s, lo, 2) };
            gctx c = { .op = op };
            char name[64];
            snprintf(name, sizeof name, "grad %s%s", efla_binary_name(op), bc ? " broadcast" : "");
            gradcheck(name, g_binary, &c, 2, in);
            /* only one side requiring grad */
            MUST_OK(efla_set_requires_grad(in[0], 0));
            snprintf(name, sizeof name, "grad %s%s (b only)", efla_binary_name(op), bc ? " broadcast" : "");
            gradcheck(name, g_binary, &c, 2, in);
            efla_tensor_release(in[0]); efla_tensor_release(in[1]);
        }
    /* binary with a scalar, both orders */
    for (int op = EFLA_ADD; op <= EFLA_MINIMUM; op++)
        for (int first = 0; first < 2; first++) {
            efla_tensor *x = leaf(2, s, 0.5, 2);
            gctx c = { .op = op, .v = 1.3, .first = first };
            char name[64];
            snprintf(name, sizeof name, "grad %s scalar first=%d", efla_binary_name(op), first);
            gradcheck(name, g_scalar, &c, 1, &x);
            efla_tensor_release(x);
        }
    /* pow edge cases: d/db at a <= 0 is 0; d/da at b = 0 is 0 */
    {
        double av[2] = { 0, 2 }, bv[2] = { 0, 3 };
        int64_t s2 = 2;
        efla_tensor *a = from_doubles(1, &s2, av, F64), *b = from_doubles(1, &s2, bv, F64);
        MUST_OK(efla_set_requires_grad(a, 1)); MUST_OK(efla_set_requires_grad(b, 1));
        efla_tensor *p = MUST(efla_binary(EFLA_POW, a, b)), *ones = MUST(efla_ones(1, &s2, F64, EFLA_DEVICE_CPU));
        MUST_OK(efla_backward(p, ones, 0));
        efla_tensor *ga = MUST(efla_grad(a)), *gb = MUST(efla_grad(b));
        double *gav = vals(ga), *gbv = vals(gb);
        CHECK(gav[0] == 0 && gbv[0] == 0 && fabs(gav[1] - 12) < 1e-12 && fabs(gbv[1] - 8 * log(2.0)) < 1e-12,
              "pow gradients at 0: %g %g %g %g", gav[0], gbv[0], gav[1], gbv[1]);
        free(gav); free(gbv);
        efla_tensor *ts[] = { a, b, p, ones, ga, gb, NULL };
        for (int i = 0; ts[i]; i++) efla_tensor_release(ts[i]);
    }
    /* maximum tie: the gradient splits evenly */
    {
        int64_t s2 = 2;
        double av[2] = { 1, 2 }, bv[2] = { 1, 0 };
        efla_tensor *a = from_doubles(1, &s2, av, F64), *b = from_doubles(1, &s2, bv, F64);
        MUST_OK(efla_set_requires_grad(a, 1)); MUST_OK(efla_set_requires_grad(b, 1));
        efla_tensor *m = MUST(efla_binary(EFLA_MAXIMUM, a, b)), *ones = MUST(efla_ones(1, &s2, F64, EFLA_DEVICE_CPU));
        MUST_OK(efla_backward(m, ones, 0));
        efla_tensor *ga = MUST(efla_grad(a)), *gb = MUST(efla_grad(b));
        double *gav = vals(ga), *gbv = vals(gb);
        CHECK(gav[0] == 0.5 && gbv[0] == 0.5 && gav[1] == 1 && gbv[1] == 0, "maximum tie splits the gradient");
        free(gav); free(gbv);
        efla_tensor *ts[] = { a, b, m, ones, ga, gb, NULL };
        for (int i = 0; ts[i]; i++) efla_tensor_release(ts[i]);
    }
    /* clamp (with and without bounds) */
    double bounds[3][2] = { { -0.5, 0.7 }, { -INFINITY, 0.2 }, { -0.3, INFINITY } };
    for (int j = 0; j < 3; j++) {
        efla_tensor *x = leaf(2, s, -2, 2);
        gctx c = { .lo = bounds[j][0], .hi = bounds[j][1] };
        gradcheck("grad clamp", g_clamp, &c, 1, &x);
        efla_tensor_release(x);
    }
    /* where with broadcasting: a [3,4], b [4], cond [3,1] */
    {
        int64_t s4 = 4, s31[2] = { 3, 1 };
        efla_tensor *in[3] = { leaf(2, s, -1, 1), leaf(1, &s4, -1, 1), rnd_int(2, s31, BOOLT, 0, 1) };
        gradcheck("grad where broadcast", g_where, NULL, 3, in);
        efla_tensor *m = rnd_int(1, &s4, BOOLT, 0, 1);
        efla_tensor *in2[3] = { in[0], m, m };
        gradcheck("grad masked_fill", g_masked, NULL, 3, in2);
        efla_tensor_release(m);
        for (int i = 0; i < 3; i++) efla_tensor_release(in[i]);
    }
    /* tril / triu */
    for (int64_t k = -1; k <= 1; k++) {
        int64_t s3[3] = { 2, 3, 4 };
        efla_tensor *x = leaf(3, s3, -1, 1);
        gctx c = { .k = k };
        gradcheck("grad tril", g_tril, &c, 1, &x);
        gradcheck("grad triu", g_triu, &c, 1, &x);
        efla_tensor_release(x);
    }
    /* a short chain through a transposed view */
    {
        int64_t s43[2] = { 4, 3 };
        efla_tensor *in[2] = { leaf(2, s43, -1, 1), leaf(2, s, -1, 1) };
        gradcheck("grad exp(a.T) * b", g_chain, NULL, 2, in);
        efla_tensor_release(in[0]); efla_tensor_release(in[1]);
    }
    /* grad_fn names and comparisons without history */
    {
        efla_tensor *x = leaf(2, s, -1, 1);
        efla_tensor *y = MUST(efla_binary_scalar(EFLA_MUL, x, 2, 0)), *c = MUST(efla_binary_scalar(EFLA_GT, x, 0, 0));
        efla_tensor *u = MUST(efla_unary(EFLA_TANH, x));
        CHECK(!strcmp(efla_grad_fn_name(y), "mul_scalar") && !strcmp(efla_grad_fn_name(u), "tanh") &&
              !efla_requires_grad(c), "grad_fn names; comparisons have no gradient");
        efla_tensor_release(x); efla_tensor_release(y); efla_tensor_release(c); efla_tensor_release(u);
    }
}

int main(int argc, char **argv) {
    TEST_ARGS(argc, argv);
    efla_manual_seed(42);
    int64_t live0 = efla_live_tensors();
    RUN(test_unary);
    RUN(test_binary);
    RUN(test_binary_scalar);
    RUN(test_inplace);
    RUN(test_clamp_where_tri);
    RUN(test_fill_copy);
    RUN(test_rand);
    RUN(test_adamw);
    RUN(test_errors);
    RUN(test_gradients);
    CHECK_NO_LEAK(live0);
    TEST_SUMMARY();
}

/* elementwise.c: the CPU elementwise kernels: fill copy unary binary clamp where tri
 * arange rand softplus adamw (semantics in backend.h; front ends in ops_elementwise.c, optim.c).
 *
 * Every kernel walks its tensors with efla_strided_run (strided.h): contiguous operands
 * collapse into one long row, and each row function has a stride-1 branch that the
 * compiler vectorises, plus a general strided branch. Arithmetic happens in a "compute
 * type" per dtype: float32 and bfloat16 in float, float64 in double, int64/uint8/bool in
 * int64 (wrapping, never undefined). Conversions to integers from floats truncate toward
 * zero, send NaN to 0 and saturate at the int64 range; to bool they test != 0.
 *
 * Random numbers (efla_cpu_rand): element i (row-major) uses r = philox4x32(offset+i, seed):
 *   uniform  float32: (r0>>8)·2^-24; bfloat16: (r0>>24)·2^-8 (exact, so never rounds to 1);
 *            float64 and integer dtypes: ((r0<<32|r1)>>11)·2^-53; then p0 + (p1-p0)·u.
 *   normal   Box-Muller, one value per counter, no caching: z = sqrt(-2 ln u1) cos(2π u2),
 *            float32/bfloat16: u1 = (r0+1)·2^-32, u2 = r1·2^-32; float64 (53-bit uniforms):
 *            u1 = (((r0<<32|r1)>>11)+1)·2^-53, u2 = ((r2<<32|r3)>>11)·2^-53; then p0 + p1·z.
 *   bernoulli  1 if ((r0<<32|r1)>>11)·2^-53 < p0, else 0.
 *   int      p0 + (r0<<32|r1) mod (p1 - p0)   (p0 = low, p1 = high).
 * All of it in double, so a CUDA kernel doing the same gets the same numbers. */
#include "cpu_kernels.h"
#include "strided.h"
#include "adamw_row.h"
#include <math.h>
#include <string.h>

/* ---- per-dtype load/store ---------------------------------------------------------------
 * K##_S: storage type; K##_C: compute type; ld_K: storage -> compute; st_K_c: compute ->
 * storage; st_K_d / st_K_i: double / int64 -> storage (casts). */
#define F32_S float
#define F32_C float
#define F64_S double
#define F64_C double
#define BF16_S uint16_t
#define BF16_C float
#define I64_S int64_t
#define I64_C int64_t
#define U8_S uint8_t
#define U8_C int64_t
#define BOOL_S uint8_t
#define BOOL_C int64_t

static inline int64_t d2i64(double v) {
    if (v != v) return 0;
    if (v >= 9223372036854775807.0) return INT64_MAX;
    if (v <= -9223372036854775808.0) return INT64_MIN;
    return (int64_t)v;
}

static inline float ld_F32(float x) { return x; }
static inline double ld_F64(double x) { return x; }
static inline float ld_BF16(uint16_t x) { return efla_bf16_to_f32(x); }
static inline int64_t ld_I64(int64_t x) { return x; }
static inline int64_t ld_U8(uint8_t x) { return x; }
static inline int64_t ld_BOOL(uint8_t x) { return x != 0; }

static inline float st_F32_c(float v) { return v; }
static inline double st_F64_c(double v) { return v; }
static inline uint16_t st_BF16_c(float v) { return efla_f32_to_bf16(v); }
static inline int64_t st_I64_c(int64_t v) { return v; }
static inline uint8_t st_U8_c(int64_t v) { return (uint8_t)v; }
static inline uint8_t st_BOOL_c(int64_t v) { return v != 0; }

static inline float st_F32_d(double v) { return (float)v; }
static inline double st_F64_d(double v) { return v; }
static inline uint16_t st_BF16_d(double v) { return efla_f32_to_bf16((float)v); }
static inline int64_t st_I64_d(double v) { return d2i64(v); }
static inline uint8_t st_U8_d(double v) { return (uint8_t)d2i64(v); }
static inline uint8_t st_BOOL_d(double v) { return v != 0; }

static inline float st_F32_i(int64_t v) { return (float)v; }
static inline double st_F64_i(int64_t v) { return (double)v; }
static inline uint16_t st_BF16_i(int64_t v) { return efla_f32_to_bf16((float)v); }
static inline int64_t st_I64_i(int64_t v) { return v; }
static inline uint8_t st_U8_i(int64_t v) { return (uint8_t)v; }
static inline uint8_t st_BOOL_i(int64_t v) { return v != 0; }

/* Run `body` with K bound to the dtype's kind token; `fail` for an unknown dtype. */
#define DISPATCH_ALL(dt, M, ...) switch (dt) { \
    case EFLA_FLOAT32: M(F32, __VA_ARGS__); break; \
    case EFLA_FLOAT64: M(F64, __VA_ARGS__); break; \
    case EFLA_BFLOAT16: M(BF16, __VA_ARGS__); break; \
    case EFLA_INT64: M(I64, __VA_ARGS__); break; \
    case EFLA_UINT8: M(U8, __VA_ARGS__); break; \
    case EFLA_BOOL: M(BOOL, __VA_ARGS__); break; }

static const char *const unary_names[EFLA_UNARY_COUNT] = {
    "neg", "exp", "expm1", "log", "log1p", "sqrt", "rsqrt", "abs", "tanh", "sigmoid", "relu",
    "gelu", "silu", "sin", "cos", "sign", "square", "reciprocal" };
static const char *const binary_names[EFLA_BINARY_COUNT] = {
    "add", "sub", "mul", "div", "pow", "maximum", "minimum", "eq", "ne", "lt", "le", "gt", "ge" };

static int same_shape(const efla_tensor *a, const efla_tensor *b) {
    return a->ndim == b->ndim && !memcmp(a->shape, b->shape, sizeof(int64_t) * (size_t)a->ndim);
}
static int check_cpu_shapes(const char *op, int n, const efla_tensor *const *ts) {
    for (int k = 0; k < n; k++) {
        if (ts[k]->device != EFLA_DEVICE_CPU)
            return efla_fail("%s (cpu kernel): operand %d is on %s", op, k, efla_device_name(ts[k]->device));
        if (k && !same_shape(ts[0], ts[k]))
            return efla_fail("%s (cpu kernel): operand %d has shape %s, the output %s; the front end "
                             "must broadcast first", op, k, efla_tshape(ts[k]), efla_tshape(ts[0]));
    }
    return 0;
}

/* ---- fill ------------------------------------------------------------------------------------ */
typedef struct { uint64_t bits; } fill_ctx;

#define FILL_ROW(T) do { T v; memcpy(&v, &c->bits, sizeof v); T *o = (T *)p[0]; \
    if (st[0] == 1) for (int64_t j = 0; j < len; j++) o[j] = v; \
    else for (int64_t j = 0; j < len; j++) o[j * st[0]] = v; } while (0)

static void fill_row1(void *x, char *const *p, const int64_t *st, int64_t len, int64_t lin) { fill_ctx *c = x; FILL_ROW(uint8_t); }
static void fill_row2(void *x, char *const *p, const int64_t *st, int64_t len, int64_t lin) { fill_ctx *c = x; FILL_ROW(uint16_t); }
static void fill_row4(void *x, char *const *p, const int64_t *st, int64_t len, int64_t lin) { fill_ctx *c = x; FILL_ROW(uint32_t); }
static void fill_row8(void *x, char *const *p, const int64_t *st, int64_t len, int64_t lin) { fill_ctx *c = x; FILL_ROW(uint64_t); }

static efla_row_fn bytes_row(size_t esize, efla_row_fn r1, efla_row_fn r2, efla_row_fn r4, efla_row_fn r8) {
    return esize == 1 ? r1 : esize == 2 ? r2 : esize == 4 ? r4 : r8;
}

int efla_cpu_fill(efla_tensor *out, double value) {
    if (check_cpu_shapes("fill", 1, (const efla_tensor *const *)&out)) return -1;
    fill_ctx c = { 0 };
#define FILL_BITS(K, ...) { K##_S v = st_##K##_d(value); memcpy(&c.bits, &v, sizeof v); }
    DISPATCH_ALL(out->dtype, FILL_BITS, 0)
    efla_strided_run(1, (const efla_tensor *const *)&out,
                     bytes_row(efla_dtype_size(out->dtype), fill_row1, fill_row2, fill_row4, fill_row8), &c);
    return 0;
}

/* ---- copy (with casts) ------------------------------------------------------------------------- */
#define COPY_BYTES(T) do { T *o = (T *)p[0]; const T *in = (const T *)p[1]; \
    if (st[0] == 1 && st[1] == 1) memcpy(o, in, (size_t)len * sizeof(T)); \
    else for (int64_t j = 0; j < len; j++) o[j * st[0]] = in[j * st[1]]; } while (0)
static void copy_row1(void *x, char *const *p, const int64_t *st, int64_t len, int64_t lin) { COPY_BYTES(uint8_t); }
static void copy_row2(void *x, char *const *p, const int64_t *st, int64_t len, int64_t lin) { COPY_BYTES(uint16_t); }
static void copy_row4(void *x, char *const *p, const int64_t *st, int64_t len, int64_t lin) { COPY_BYTES(uint32_t); }
static void copy_row8(void *x, char *const *p, const int64_t *st, int64_t len, int64_t lin) { COPY_BYTES(uint64_t); }

/* One conversion per (input kind, output kind): floats go through double, integers
 * through int64 (exact). */
#define CONV_F32(KO, x) st_##KO##_d((double)(x))
#define CONV_F64(KO, x) st_##KO##_d(x)
#define CONV_BF16(KO, x) st_##KO##_d((double)efla_bf16_to_f32(x))
#define CONV_I64(KO, x) st_##KO##_i(x)
#define CONV_U8(KO, x) st_##KO##_i((int64_t)(x))
#define CONV_BOOL(KO, x) st_##KO##_i((int64_t)((x) != 0))

#define DEF_CAST_ROW(KI, KO) \
static void cast_row_##KI##_##KO(void *x, char *const *p, const int64_t *st, int64_t len, int64_t lin) { \
    KO##_S *o = (KO##_S *)p[0]; const KI##_S *in = (const KI##_S *)p[1]; \
    if (st[0] == 1 && st[1] == 1) for (int64_t j = 0; j < len; j++) o[j] = CONV_##KI(KO, in[j]); \
    else for (int64_t j = 0; j < len; j++) o[j * st[0]] = CONV_##KI(KO, in[j * st[1]]); }
#define DEF_CAST_ROWS(KI) DEF_CAST_ROW(KI, F32) DEF_CAST_ROW(KI, F64) DEF_CAST_ROW(KI, BF16) \
    DEF_CAST_ROW(KI, I64) DEF_CAST_ROW(KI, U8) DEF_CAST_ROW(KI, BOOL)
DEF_CAST_ROWS(F32)
DEF_CAST_ROWS(F64)
DEF_CAST_ROWS(BF16)
DEF_CAST_ROWS(I64)
DEF_CAST_ROWS(U8)
DEF_CAST_ROWS(BOOL)
#define CAST_ROWS_OF(KI) { cast_row_##KI##_F32, cast_row_##KI##_F64, cast_row_##KI##_BF16, \
    cast_row_##KI##_I64, cast_row_##KI##_U8, cast_row_##KI##_BOOL }
/* indexed [input dtype][output dtype] in efla_dtype order */
static const efla_row_fn cast_rows[6][6] = { CAST_ROWS_OF(F32), CAST_ROWS_OF(F64), CAST_ROWS_OF(BF16),
                                             CAST_ROWS_OF(I64), CAST_ROWS_OF(U8), CAST_ROWS_OF(BOOL) };

/* A transposing copy (out contiguous along the last dim, in along the one before, as in
 * contiguous() of a matrix transpose) walks 32x32 tiles: a plain row walk would read the
 * input with a large stride and touch a new page per element. Returns 0 when not such a case. */
#define TILE 32
#define TRANSPOSE_TILE(T) do { T *o = (T *)(it->base[0] + off0 * es); \
    const T *in = (const T *)(it->base[1] + off1 * es); \
    for (int64_t i = i0; i < i1; i++) for (int64_t j = j0; j < j1; j++) o[i * so + j] = in[i + j * si]; } while (0)

static int copy_transposed(const efla_strided *it) {
    int L = it->ndim - 1;
    if (L < 1 || it->strides[0][L] != 1 || it->strides[1][L - 1] != 1) return 0;
    int64_t A = it->shape[L - 1], B = it->shape[L];
    if (A < 8 || B < 8) return 0;
    int64_t ta = (A + TILE - 1) / TILE, tb = (B + TILE - 1) / TILE, tiles = it->numel / (A * B) * ta * tb;
    int64_t es = it->esize[0], so = it->strides[0][L - 1], si = it->strides[1][L];
#pragma omp parallel for if (it->numel >= EFLA_OMP_THRESHOLD)
    for (int64_t t = 0; t < tiles; t++) {
        int64_t rest = t / (ta * tb), within = t % (ta * tb), off0 = 0, off1 = 0;
        for (int d = L - 2; d >= 0; d--) {   /* offsets of the outer dims */
            int64_t c = rest % it->shape[d];
            rest /= it->shape[d];
            off0 += c * it->strides[0][d];
            off1 += c * it->strides[1][d];
        }
        int64_t i0 = within / tb * TILE, j0 = within % tb * TILE;
        int64_t i1 = i0 + TILE < A ? i0 + TILE : A, j1 = j0 + TILE < B ? j0 + TILE : B;
        switch (es) {
        case 1: TRANSPOSE_TILE(uint8_t); break;
        case 2: TRANSPOSE_TILE(uint16_t); break;
        case 4: TRANSPOSE_TILE(uint32_t); break;
        default: TRANSPOSE_TILE(uint64_t); break;
        }
    }
    return 1;
}

int efla_cpu_copy(efla_tensor *out, const efla_tensor *in) {
    const efla_tensor *ts[2] = { out, in };
    if (check_cpu_shapes("copy", 2, ts)) return -1;
    if ((unsigned)out->dtype > EFLA_BOOL || (unsigned)in->dtype > EFLA_BOOL)
        return efla_fail("copy (cpu kernel): invalid dtype");
    if (out->dtype == in->dtype) {
        efla_strided it;
        efla_strided_init(&it, 2, ts);
        if (copy_transposed(&it)) return 0;
    }
    efla_row_fn fn = out->dtype == in->dtype
        ? bytes_row(efla_dtype_size(out->dtype), copy_row1, copy_row2, copy_row4, copy_row8)
        : cast_rows[in->dtype][out->dtype];
    efla_strided_run(2, ts, fn, NULL);
    return 0;
}

/* ---- unary ---------------------------------------------------------------------------------- */
/* o = EXPR(x) over a row; x has the compute type C. */
#define UN_ROW(K, EXPR) do { K##_S *o = (K##_S *)p[0]; const K##_S *in = (const K##_S *)p[1]; \
    if (st[0] == 1 && st[1] == 1) \
        for (int64_t j = 0; j < len; j++) { K##_C x = ld_##K(in[j]); o[j] = st_##K##_c(EXPR); } \
    else for (int64_t j = 0; j < len; j++) { K##_C x = ld_##K(in[j * st[1]]); o[j * st[0]] = st_##K##_c(EXPR); } \
} while (0)

/* Floating kinds; SFX is "f" for float math functions and empty for double. GELU is the
 * exact erf form 0.5 x (1 + erf(x/√2)), written with erfc so that it keeps its relative
 * accuracy for x << 0 (the backward divides by x to recover Φ(x)). */
#define DEF_UNARY_FLOAT(K, SFX) \
static void unary_row_##K(void *ctx, char *const *p, const int64_t *st, int64_t len, int64_t lin) { \
    typedef K##_C C; \
    switch (*(const int *)ctx) { \
    case EFLA_NEG: UN_ROW(K, -x); break; \
    case EFLA_EXP: UN_ROW(K, exp##SFX(x)); break; \
    case EFLA_EXPM1: UN_ROW(K, expm1##SFX(x)); break; \
    case EFLA_LOG: UN_ROW(K, log##SFX(x)); break; \
    case EFLA_LOG1P: UN_ROW(K, log1p##SFX(x)); break; \
    case EFLA_SQRT: UN_ROW(K, sqrt##SFX(x)); break; \
    case EFLA_RSQRT: UN_ROW(K, (C)1 / sqrt##SFX(x)); break; \
    case EFLA_ABS: UN_ROW(K, fabs##SFX(x)); break; \
    case EFLA_TANH: UN_ROW(K, tanh##SFX(x)); break; \
    case EFLA_SIGMOID: UN_ROW(K, (C)1 / ((C)1 + exp##SFX(-x))); break; \
    case EFLA_RELU: UN_ROW(K, x < 0 ? (C)0 : x); break; \
    case EFLA_GELU: UN_ROW(K, (C)0.5 * x * erfc##SFX(-x * (C)0.70710678118654752440)); break; \
    case EFLA_SILU: UN_ROW(K, x / ((C)1 + exp##SFX(-x))); break; \
    case EFLA_SIN: UN_ROW(K, sin##SFX(x)); break; \
    case EFLA_COS: UN_ROW(K, cos##SFX(x)); break; \
    case EFLA_SIGN: UN_ROW(K, x > 0 ? (C)1 : x < 0 ? (C)-1 : x); break; \
    case EFLA_SQUARE: UN_ROW(K, x * x); break; \
    case EFLA_RECIPROCAL: UN_ROW(K, (C)1 / x); break; \
    } }
DEF_UNARY_FLOAT(F32, f)
DEF_UNARY_FLOAT(F64, )
DEF_UNARY_FLOAT(BF16, f)

/* Integer kinds: only the ops that map integers to integers (the front end casts to a
 * float dtype first for the others). Wrapping arithmetic through uint64. */
#define DEF_UNARY_INT(K) \
static void unary_row_##K(void *ctx, char *const *p, const int64_t *st, int64_t len, int64_t lin) { \
    switch (*(const int *)ctx) { \
    case EFLA_NEG: UN_ROW(K, (int64_t)(0 - (uint64_t)x)); break; \
    case EFLA_ABS: UN_ROW(K, x < 0 ? (int64_t)(0 - (uint64_t)x) : x); break; \
    case EFLA_SIGN: UN_ROW(K, (int64_t)((x > 0) - (x < 0))); break; \
    case EFLA_SQUARE: UN_ROW(K, (int64_t)((uint64_t)x * (uint64_t)x)); break; \
    case EFLA_RELU: UN_ROW(K, x < 0 ? 0 : x); break; \
    } }
DEF_UNARY_INT(I64)
DEF_UNARY_INT(U8)
DEF_UNARY_INT(BOOL)

static int unary_is_integral(int op) {
    return op == EFLA_NEG || op == EFLA_ABS || op == EFLA_SIGN || op == EFLA_SQUARE || op == EFLA_RELU;
}

int efla_cpu_unary(efla_unary_op op, efla_tensor *out, const efla_tensor *in) {
    const efla_tensor *ts[2] = { out, in };
    if (check_cpu_shapes("unary", 2, ts)) return -1;
    if ((unsigned)op >= EFLA_UNARY_COUNT) return efla_fail("unary (cpu kernel): unknown op %d", (int)op);
    if (out->dtype != in->dtype)
        return efla_fail("unary %s (cpu kernel): output %s, input %s; they must match", unary_names[op],
                         efla_dtype_name(out->dtype), efla_dtype_name(in->dtype));
    if (!efla_dtype_is_floating(in->dtype) && !unary_is_integral(op))
        return efla_fail("unary %s (cpu kernel): needs a floating dtype, not %s", unary_names[op],
                         efla_dtype_name(in->dtype));
    int o = op;
    efla_row_fn fn = NULL;
#define PICK_UNARY(K, ...) fn = unary_row_##K
    DISPATCH_ALL(in->dtype, PICK_UNARY, 0)
    if (!fn) return efla_fail("unary (cpu kernel): invalid dtype");
    efla_strided_run(2, ts, fn, &o);
    return 0;
}

/* ---- softplus -------------------------------------------------------------------------------
 * log(1 + e^(beta x)) / beta as max(z, 0) + log1p(e^-|z|), z = beta x: no overflow for any x,
 * and exact for large |z| (z itself, or e^z). Computed in double for every dtype. */
static inline double softplus_d(double x, double beta) {
    double z = beta * x;
    return (fmax(z, 0.0) + log1p(exp(-fabs(z)))) / beta;
}
#define DEF_SOFTPLUS(K) \
static void softplus_row_##K(void *ctx, char *const *p, const int64_t *st, int64_t len, int64_t lin) { \
    double beta = *(const double *)ctx; \
    K##_S *o = (K##_S *)p[0]; const K##_S *in = (const K##_S *)p[1]; \
    for (int64_t j = 0; j < len; j++) o[j * st[0]] = st_##K##_d(softplus_d((double)ld_##K(in[j * st[1]]), beta)); }
DEF_SOFTPLUS(F32)
DEF_SOFTPLUS(F64)
DEF_SOFTPLUS(BF16)

int efla_cpu_softplus(efla_tensor *out, const efla_tensor *in, double beta) {
    const efla_tensor *ts[2] = { out, in };
    if (check_cpu_shapes("softplus", 2, ts)) return -1;
    if (out->dtype != in->dtype)
        return efla_fail("softplus (cpu kernel): output %s, input %s; they must match", efla_dtype_name(out->dtype),
                         efla_dtype_name(in->dtype));
    efla_row_fn fn = in->dtype == EFLA_FLOAT32 ? softplus_row_F32 : in->dtype == EFLA_FLOAT64 ? softplus_row_F64
                   : in->dtype == EFLA_BFLOAT16 ? softplus_row_BF16 : NULL;
    if (!fn) return efla_fail("softplus (cpu kernel): needs a floating dtype, not %s", efla_dtype_name(in->dtype));
    efla_strided_run(2, ts, fn, &beta);
    return 0;
}

/* ---- binary ---------------------------------------------------------------------------------- */
/* o = EXPR(x, y); OT is the output storage type, OST its store from the compute type. The
 * scalar-operand branches cover tensor-op-scalar, which comes in as a stride-0 view. */
#define BIN_ROW(K, OT, OST, EXPR) do { OT *o = (OT *)p[0]; \
    const K##_S *pa = (const K##_S *)p[1], *pb = (const K##_S *)p[2]; \
    int64_t so = st[0], sa = st[1], sb = st[2]; \
    if (so == 1 && sa == 1 && sb == 1) \
        for (int64_t j = 0; j < len; j++) { K##_C x = ld_##K(pa[j]), y = ld_##K(pb[j]); o[j] = OST(EXPR); } \
    else if (so == 1 && sa == 1 && sb == 0) { K##_C y = ld_##K(pb[0]); \
        for (int64_t j = 0; j < len; j++) { K##_C x = ld_##K(pa[j]); o[j] = OST(EXPR); } } \
    else if (so == 1 && sa == 0 && sb == 1) { K##_C x = ld_##K(pa[0]); \
        for (int64_t j = 0; j < len; j++) { K##_C y = ld_##K(pb[j]); o[j] = OST(EXPR); } } \
    else for (int64_t j = 0; j < len; j++) { \
        K##_C x = ld_##K(pa[j * sa]), y = ld_##K(pb[j * sb]); o[j * so] = OST(EXPR); } \
} while (0)
#define CMP_ST(v) ((uint8_t)(v))
#define BIN_CMP_CASES(K) \
    case EFLA_EQ: BIN_ROW(K, uint8_t, CMP_ST, x == y); break; \
    case EFLA_NE: BIN_ROW(K, uint8_t, CMP_ST, x != y); break; \
    case EFLA_LT: BIN_ROW(K, uint8_t, CMP_ST, x < y); break; \
    case EFLA_LE: BIN_ROW(K, uint8_t, CMP_ST, x <= y); break; \
    case EFLA_GT: BIN_ROW(K, uint8_t, CMP_ST, x > y); break; \
    case EFLA_GE: BIN_ROW(K, uint8_t, CMP_ST, x >= y); break;

/* maximum/minimum propagate NaN from either side. */
#define DEF_BINARY_FLOAT(K, SFX) \
static void binary_row_##K(void *ctx, char *const *p, const int64_t *st, int64_t len, int64_t lin) { \
    switch (*(const int *)ctx) { \
    case EFLA_ADD: BIN_ROW(K, K##_S, st_##K##_c, x + y); break; \
    case EFLA_SUB: BIN_ROW(K, K##_S, st_##K##_c, x - y); break; \
    case EFLA_MUL: BIN_ROW(K, K##_S, st_##K##_c, x * y); break; \
    case EFLA_DIV: BIN_ROW(K, K##_S, st_##K##_c, x / y); break; \
    case EFLA_POW: BIN_ROW(K, K##_S, st_##K##_c, pow##SFX(x, y)); break; \
    case EFLA_MAXIMUM: BIN_ROW(K, K##_S, st_##K##_c, (x > y || x != x) ? x : y); break; \
    case EFLA_MINIMUM: BIN_ROW(K, K##_S, st_##K##_c, (x < y || x != x) ? x : y); break; \
    BIN_CMP_CASES(K) \
    } }
DEF_BINARY_FLOAT(F32, f)
DEF_BINARY_FLOAT(F64, )
DEF_BINARY_FLOAT(BF16, f)

/* Integer division truncates toward zero; x/0 gives 0 (the front end sends integer '/' to
 * float32, so this only serves direct kernel calls). */
static inline int64_t idiv(int64_t x, int64_t y) {
    if (y == 0) return 0;
    if (y == -1) return (int64_t)(0 - (uint64_t)x);
    return x / y;
}
/* Integer power by squaring; a negative exponent gives 1/x^|y| truncated: 0 unless |x| = 1. */
static inline int64_t ipow(int64_t x, int64_t y) {
    if (y < 0) return x == 1 ? 1 : x == -1 ? ((y & 1) ? -1 : 1) : 0;
    uint64_t r = 1, b = (uint64_t)x;
    while (y) { if (y & 1) r *= b; b *= b; y >>= 1; }
    return (int64_t)r;
}
#define DEF_BINARY_INT(K) \
static void binary_row_##K(void *ctx, char *const *p, const int64_t *st, int64_t len, int64_t lin) { \
    switch (*(const int *)ctx) { \
    case EFLA_ADD: BIN_ROW(K, K##_S, st_##K##_c, (int64_t)((uint64_t)x + (uint64_t)y)); break; \
    case EFLA_SUB: BIN_ROW(K, K##_S, st_##K##_c, (int64_t)((uint64_t)x - (uint64_t)y)); break; \
    case EFLA_MUL: BIN_ROW(K, K##_S, st_##K##_c, (int64_t)((uint64_t)x * (uint64_t)y)); break; \
    case EFLA_DIV: BIN_ROW(K, K##_S, st_##K##_c, idiv(x, y)); break; \
    case EFLA_POW: BIN_ROW(K, K##_S, st_##K##_c, ipow(x, y)); break; \
    case EFLA_MAXIMUM: BIN_ROW(K, K##_S, st_##K##_c, x > y ? x : y); break; \
    case EFLA_MINIMUM: BIN_ROW(K, K##_S, st_##K##_c, x < y ? x : y); break; \
    BIN_CMP_CASES(K) \
    } }
DEF_BINARY_INT(I64)
DEF_BINARY_INT(U8)
DEF_BINARY_INT(BOOL)

static int is_comparison(int op) { return op >= EFLA_EQ && op <= EFLA_GE; }

int efla_cpu_binary(efla_binary_op op, efla_tensor *out, const efla_tensor *a, const efla_tensor *b) {
    const efla_tensor *ts[3] = { out, a, b };
    if (check_cpu_shapes("binary", 3, ts)) return -1;
    if ((unsigned)op >= EFLA_BINARY_COUNT) return efla_fail("binary (cpu kernel): unknown op %d", (int)op);
    efla_dtype want = is_comparison(op) ? EFLA_BOOL : a->dtype;
    if (a->dtype != b->dtype || out->dtype != want)
        return efla_fail("binary %s (cpu kernel): dtypes %s %s -> %s; inputs must share a dtype and the "
                         "output be that dtype (bool for comparisons)", binary_names[op],
                         efla_dtype_name(a->dtype), efla_dtype_name(b->dtype), efla_dtype_name(out->dtype));
    int o = op;
    efla_row_fn fn = NULL;
#define PICK_BINARY(K, ...) fn = binary_row_##K
    DISPATCH_ALL(a->dtype, PICK_BINARY, 0)
    if (!fn) return efla_fail("binary (cpu kernel): invalid dtype");
    efla_strided_run(3, ts, fn, &o);
    return 0;
}

/* ---- clamp ----------------------------------------------------------------------------------- */
/* min(max(x, lo), hi) like torch: lo > hi gives hi everywhere; NaN stays NaN. */
typedef struct { double lo, hi; int64_t ilo, ihi; } clamp_ctx;
#define DEF_CLAMP_FLOAT(K) \
static void clamp_row_##K(void *ctx, char *const *p, const int64_t *st, int64_t len, int64_t lin) { \
    const clamp_ctx *c = ctx; K##_C lo = (K##_C)c->lo, hi = (K##_C)c->hi; \
    UN_ROW(K, (x < lo ? lo : x) > hi ? hi : (x < lo ? lo : x)); }
#define DEF_CLAMP_INT(K) \
static void clamp_row_##K(void *ctx, char *const *p, const int64_t *st, int64_t len, int64_t lin) { \
    const clamp_ctx *c = ctx; int64_t lo = c->ilo, hi = c->ihi; \
    UN_ROW(K, (x < lo ? lo : x) > hi ? hi : (x < lo ? lo : x)); }
DEF_CLAMP_FLOAT(F32)
DEF_CLAMP_FLOAT(F64)
DEF_CLAMP_FLOAT(BF16)
DEF_CLAMP_INT(I64)
DEF_CLAMP_INT(U8)
DEF_CLAMP_INT(BOOL)

int efla_cpu_clamp(efla_tensor *out, const efla_tensor *in, double lo, double hi) {
    const efla_tensor *ts[2] = { out, in };
    if (check_cpu_shapes("clamp", 2, ts)) return -1;
    if (out->dtype != in->dtype)
        return efla_fail("clamp (cpu kernel): output %s, input %s; they must match",
                         efla_dtype_name(out->dtype), efla_dtype_name(in->dtype));
    /* integer bounds: the integers inside [lo, hi] */
    clamp_ctx c = { lo, hi, d2i64(ceil(lo)), d2i64(floor(hi)) };
    if (isinf(lo) && lo < 0) c.ilo = INT64_MIN;
    if (isinf(hi) && hi > 0) c.ihi = INT64_MAX;
    efla_row_fn fn = NULL;
#define PICK_CLAMP(K, ...) fn = clamp_row_##K
    DISPATCH_ALL(in->dtype, PICK_CLAMP, 0)
    if (!fn) return efla_fail("clamp (cpu kernel): invalid dtype");
    efla_strided_run(2, ts, fn, &c);
    return 0;
}

/* ---- where ------------------------------------------------------------------------------------- */
/* A byte-level select: any dtype of the same element size works the same way. */
#define WHERE_ROW(T) do { T *o = (T *)p[0]; const uint8_t *c = (const uint8_t *)p[1]; \
    const T *pa = (const T *)p[2], *pb = (const T *)p[3]; \
    if (st[0] == 1 && st[1] == 1 && st[2] == 1 && st[3] == 1) \
        for (int64_t j = 0; j < len; j++) o[j] = c[j] ? pa[j] : pb[j]; \
    else for (int64_t j = 0; j < len; j++) o[j * st[0]] = c[j * st[1]] ? pa[j * st[2]] : pb[j * st[3]]; \
} while (0)
static void where_row1(void *x, char *const *p, const int64_t *st, int64_t len, int64_t lin) { WHERE_ROW(uint8_t); }
static void where_row2(void *x, char *const *p, const int64_t *st, int64_t len, int64_t lin) { WHERE_ROW(uint16_t); }
static void where_row4(void *x, char *const *p, const int64_t *st, int64_t len, int64_t lin) { WHERE_ROW(uint32_t); }
static void where_row8(void *x, char *const *p, const int64_t *st, int64_t len, int64_t lin) { WHERE_ROW(uint64_t); }

int efla_cpu_where(efla_tensor *out, const efla_tensor *cond, const efla_tensor *a, const efla_tensor *b) {
    const efla_tensor *ts[4] = { out, cond, a, b };
    if (check_cpu_shapes("where", 4, ts)) return -1;
    if (cond->dtype != EFLA_BOOL && cond->dtype != EFLA_UINT8)
        return efla_fail("where (cpu kernel): condition must be bool or uint8, not %s", efla_dtype_name(cond->dtype));
    if (a->dtype != out->dtype || b->dtype != out->dtype)
        return efla_fail("where (cpu kernel): dtypes %s, %s -> %s must match", efla_dtype_name(a->dtype),
                         efla_dtype_name(b->dtype), efla_dtype_name(out->dtype));
    efla_strided_run(4, ts, bytes_row(efla_dtype_size(out->dtype), where_row1, where_row2, where_row4, where_row8), NULL);
    return 0;
}

/* ---- tril / triu ------------------------------------------------------------------------------- */
/* Row r of the flattened [batch*R, C] view: keep column j when j - i <= k (lower) or
 * j - i >= k (upper), else write zero bits (0 in every dtype). */
#define TRI_ROW(T) do { T *o = (T *)po; const T *in = (const T *)pi; \
    for (int64_t j = 0; j < C; j++) { int keep = upper ? (j - i >= k) : (j - i <= k); \
        o[j * so] = keep ? in[j * si] : (T)0; } } while (0)

int efla_cpu_tri(efla_tensor *out, const efla_tensor *in, int64_t k, int upper) {
    const efla_tensor *ts[2] = { out, in };
    if (check_cpu_shapes("tri", 2, ts)) return -1;
    if (out->dtype != in->dtype || in->ndim < 2)
        return efla_fail("tri (cpu kernel): needs same dtypes and >= 2 dims (got %s)", efla_tshape(in));
    int nd = in->ndim;
    int64_t R = in->shape[nd - 2], C = in->shape[nd - 1];
    int64_t rows = efla_numel_of(nd - 1, in->shape);
    if (rows == 0 || C == 0) return 0;
    size_t es = efla_dtype_size(in->dtype);
    int64_t so = out->strides[nd - 1], si = in->strides[nd - 1];
    char *ob = efla_cpu_ptr(out), *ib = efla_cpu_ptr(in);
#pragma omp parallel for if (rows * C >= EFLA_OMP_THRESHOLD)
    for (int64_t r = 0; r < rows; r++) {
        /* element offsets of row r: batch dims then the row dim */
        int64_t rem = r, oo = 0, oi = 0;
        for (int d = nd - 2; d >= 0; d--) {
            int64_t idx = rem % in->shape[d];
            rem /= in->shape[d];
            oo += idx * out->strides[d];
            oi += idx * in->strides[d];
        }
        int64_t i = r % R;
        char *po = ob + oo * (int64_t)es;
        const char *pi = ib + oi * (int64_t)es;
        switch (es) {
        case 1: TRI_ROW(uint8_t); break;
        case 2: TRI_ROW(uint16_t); break;
        case 4: TRI_ROW(uint32_t); break;
        default: TRI_ROW(uint64_t); break;
        }
    }
    return 0;
}

/* ---- arange ---------------------------------------------------------------------------------- */
typedef struct { double start, step; } arange_ctx;
#define DEF_ARANGE(K) \
static void arange_row_##K(void *ctx, char *const *p, const int64_t *st, int64_t len, int64_t lin) { \
    const arange_ctx *c = ctx; K##_S *o = (K##_S *)p[0]; \
    for (int64_t j = 0; j < len; j++) o[j * st[0]] = st_##K##_d(c->start + (double)(lin + j) * c->step); }
DEF_ARANGE(F32)
DEF_ARANGE(F64)
DEF_ARANGE(BF16)
DEF_ARANGE(I64)
DEF_ARANGE(U8)
DEF_ARANGE(BOOL)

int efla_cpu_arange(efla_tensor *out, double start, double step) {
    if (check_cpu_shapes("arange", 1, (const efla_tensor *const *)&out)) return -1;
    arange_ctx c = { start, step };
    efla_row_fn fn = NULL;
#define PICK_ARANGE(K, ...) fn = arange_row_##K
    DISPATCH_ALL(out->dtype, PICK_ARANGE, 0)
    if (!fn) return efla_fail("arange (cpu kernel): invalid dtype");
    efla_strided_run(1, (const efla_tensor *const *)&out, fn, &c);
    return 0;
}

/* ---- rand ---------------------------------------------------------------------------------------- */
typedef struct { int dist; uint64_t seed, offset; double p0, p1; } rand_ctx;

static inline double u53(uint32_t hi, uint32_t lo) {
    return (double)((((uint64_t)hi << 32) | lo) >> 11) * 0x1p-53;
}
/* uniform [0,1) per dtype (see the top of the file) */
#define UNI_F32(r) ((double)((r)[0] >> 8) * 0x1p-24)
#define UNI_BF16(r) ((double)((r)[0] >> 24) * 0x1p-8)
#define UNI_F64(r) u53((r)[0], (r)[1])
#define UNI_I64(r) u53((r)[0], (r)[1])
#define UNI_U8(r) u53((r)[0], (r)[1])
#define UNI_BOOL(r) u53((r)[0], (r)[1])
/* standard normal by Box-Muller: 53-bit uniforms for float64, 32-bit ones otherwise */
static inline double box_muller(double u1, double u2) {
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586476925 * u2);
}
static inline double normal32(const uint32_t r[4]) {
    return box_muller(((double)r[0] + 1.0) * 0x1p-32, (double)r[1] * 0x1p-32);
}
static inline double normal53(const uint32_t r[4]) {
    return box_muller(u53(r[0], r[1]) + 0x1p-53, u53(r[2], r[3]));
}
#define NORM_F32(r) normal32(r)
#define NORM_BF16(r) normal32(r)
#define NORM_F64(r) normal53(r)
#define NORM_I64(r) normal53(r)
#define NORM_U8(r) normal53(r)
#define NORM_BOOL(r) normal53(r)

#define RAND_LOOP(EXPR) for (int64_t j = 0; j < len; j++) { uint32_t r[4]; \
    efla_philox4x32(c->offset + (uint64_t)(lin + j), c->seed, r); o[j * s] = (EXPR); }
#define DEF_RAND(K) \
static void rand_row_##K(void *ctx, char *const *p, const int64_t *st, int64_t len, int64_t lin) { \
    const rand_ctx *c = ctx; K##_S *o = (K##_S *)p[0]; int64_t s = st[0]; \
    double p0 = c->p0, p1 = c->p1, span = c->p1 - c->p0; \
    int64_t low = (int64_t)p0; uint64_t range = (uint64_t)((int64_t)p1 - low); \
    switch (c->dist) { \
    case EFLA_RAND_UNIFORM: RAND_LOOP(st_##K##_d(p0 + span * UNI_##K(r))); break; \
    case EFLA_RAND_NORMAL: RAND_LOOP(st_##K##_d(p0 + p1 * NORM_##K(r))); break; \
    case EFLA_RAND_BERNOULLI: RAND_LOOP(st_##K##_d(u53(r[0], r[1]) < p0 ? 1.0 : 0.0)); break; \
    case EFLA_RAND_INT: \
        RAND_LOOP(st_##K##_i((int64_t)((uint64_t)low + ((((uint64_t)r[0] << 32) | r[1]) % range)))); break; \
    } }
DEF_RAND(F32)
DEF_RAND(F64)
DEF_RAND(BF16)
DEF_RAND(I64)
DEF_RAND(U8)
DEF_RAND(BOOL)

int efla_cpu_rand(efla_tensor *out, int dist, uint64_t seed, uint64_t offset, double p0, double p1) {
    if (check_cpu_shapes("rand", 1, (const efla_tensor *const *)&out)) return -1;
    if (dist < EFLA_RAND_UNIFORM || dist > EFLA_RAND_INT) return efla_fail("rand (cpu kernel): unknown distribution %d", dist);
    if (dist == EFLA_RAND_INT && !(p1 > p0)) return efla_fail("rand (cpu kernel): empty integer range [%g, %g)", p0, p1);
    rand_ctx c = { dist, seed, offset, p0, p1 };
    efla_row_fn fn = NULL;
#define PICK_RAND(K, ...) fn = rand_row_##K
    DISPATCH_ALL(out->dtype, PICK_RAND, 0)
    if (!fn) return efla_fail("rand (cpu kernel): invalid dtype");
    efla_strided_run(1, (const efla_tensor *const *)&out, fn, &c);
    return 0;
}

/* ---- adamw --------------------------------------------------------------------------------------- */
/* Operands p, g, m, v. g has p's dtype; m and v share a dtype (p's, or float32). Computed
 * in double for float64 parameters, float otherwise. */
typedef efla_adamw_ctx adamw_ctx;
#define SQRT_float sqrtf
#define SQRT_double sqrt

#define ADAMW_BODY(KP, KM, CT, J0, J1, J2, J3) { \
    CT pv = (CT)ld_##KP(pp[J0]), gv = (CT)ld_##KP(pg[J1]), mv = (CT)ld_##KM(pm[J2]), vv = (CT)ld_##KM(pvv[J3]); \
    pv -= lrwd * pv; \
    mv = b1 * mv + (1 - b1) * gv; \
    vv = b2 * vv + (1 - b2) * gv * gv; \
    pv -= lr * (mv * ibc1) / (SQRT_##CT(vv * ibc2) + eps); \
    pp[J0] = st_##KP##_c(pv); pm[J2] = st_##KM##_c(mv); pvv[J3] = st_##KM##_c(vv); }

#define DEF_ADAMW(KP, KM, CT) \
static void adamw_row_##KP##_##KM(void *ctx, char *const *p, const int64_t *st, int64_t len, int64_t lin) { \
    const adamw_ctx *c = ctx; \
    const CT lr = (CT)c->lr, lrwd = (CT)(c->lr * c->wd), b1 = (CT)c->b1, b2 = (CT)c->b2, eps = (CT)c->eps, \
             ibc1 = (CT)c->inv_bc1, ibc2 = (CT)c->inv_bc2; \
    KP##_S *pp = (KP##_S *)p[0]; const KP##_S *pg = (const KP##_S *)p[1]; \
    KM##_S *pm = (KM##_S *)p[2], *pvv = (KM##_S *)p[3]; \
    if (st[0] == 1 && st[1] == 1 && st[2] == 1 && st[3] == 1) \
        for (int64_t j = 0; j < len; j++) ADAMW_BODY(KP, KM, CT, j, j, j, j) \
    else for (int64_t j = 0; j < len; j++) ADAMW_BODY(KP, KM, CT, j * st[0], j * st[1], j * st[2], j * st[3]) }
DEF_ADAMW(F32, F32, float)
DEF_ADAMW(F64, F64, double)
DEF_ADAMW(F64, F32, double)
DEF_ADAMW(BF16, BF16, float)
DEF_ADAMW(BF16, F32, float)

efla_adamw_ctx efla_cpu_adamw_ctx(double lr, double beta1, double beta2, double eps, double wd, int64_t step) {
    efla_adamw_ctx c = { lr, beta1, beta2, eps, wd, 1.0 / (1.0 - pow(beta1, (double)step)),
                         1.0 / (1.0 - pow(beta2, (double)step)) };
    return c;
}

efla_row_fn efla_cpu_adamw_row(efla_dtype p, efla_dtype g, efla_dtype m, efla_dtype v) {
    if (g != p || m != v) return NULL;
    if (p == EFLA_FLOAT32 && m == EFLA_FLOAT32) return adamw_row_F32_F32;
    if (p == EFLA_FLOAT64 && m == EFLA_FLOAT64) return adamw_row_F64_F64;
    if (p == EFLA_FLOAT64 && m == EFLA_FLOAT32) return adamw_row_F64_F32;
    if (p == EFLA_BFLOAT16 && m == EFLA_BFLOAT16) return adamw_row_BF16_BF16;
    if (p == EFLA_BFLOAT16 && m == EFLA_FLOAT32) return adamw_row_BF16_F32;
    return NULL;
}

int efla_cpu_adamw(efla_tensor *p, const efla_tensor *g, efla_tensor *m, efla_tensor *v, double lr,
                   double beta1, double beta2, double eps, double wd, int64_t step) {
    const efla_tensor *ts[4] = { p, g, m, v };
    if (check_cpu_shapes("adamw", 4, ts)) return -1;
    efla_row_fn fn = efla_cpu_adamw_row(p->dtype, g->dtype, m->dtype, v->dtype);
    if (!fn)
        return efla_fail("adamw (cpu kernel): unsupported dtypes p %s, grad %s, m %s, v %s",
                         efla_dtype_name(p->dtype), efla_dtype_name(g->dtype), efla_dtype_name(m->dtype),
                         efla_dtype_name(v->dtype));
    adamw_ctx c = efla_cpu_adamw_ctx(lr, beta1, beta2, eps, wd, step);
    efla_strided_run(4, ts, fn, &c);
    return 0;
}

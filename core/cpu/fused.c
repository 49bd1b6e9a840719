/* fused.c: CPU kernels of the fused layers (efla_fused_kernels, backend.h; front ends in
 * core/ops_fused.c). float32 and float64, every tensor contiguous; sums in double. Each
 * kernel body is written once as a macro over the element type T and instantiated for
 * float and double, so the inner loops have no dtype switch. */
#include "cpu_kernels.h"
#include <math.h>
#include <stdlib.h>
#include <omp.h>
#include <string.h>

#define PAR_MIN 32768

static inline double sigm(double x) { return 1.0 / (1.0 + exp(-x)); }

static int check_dtype(const char *op, const efla_tensor *t) {
    if (t->dtype != EFLA_FLOAT32 && t->dtype != EFLA_FLOAT64)
        return efla_fail("%s: the CPU computes in float32 or float64, got %s (cast with :float())", op,
                         efla_dtype_name(t->dtype));
    return 0;
}

#define P(t, T) ((T *)efla_cpu_ptr(t))
#define PC(t, T) ((const T *)efla_cpu_ptr(t))

/* ---- SwiGLU --------------------------------------------------------------------------------- */
#define SWIGLU_IMPL(T, S)                                                                                \
    static void swiglu_##S(efla_tensor *o_, const efla_tensor *g_, const efla_tensor *u_) {             \
        T *o = P(o_, T); const T *g = PC(g_, T), *u = PC(u_, T);                                          \
        int64_t n = efla_tensor_numel(o_);                                                                \
        _Pragma("omp parallel for if (n >= PAR_MIN) schedule(static)")                                  \
        for (int64_t i = 0; i < n; i++) { double x = g[i]; o[i] = (T)(x * sigm(x) * u[i]); }              \
    }                                                                                                     \
    static void swiglu_bwd_##S(efla_tensor *dg_, efla_tensor *du_, const efla_tensor *d_,               \
                               const efla_tensor *g_, const efla_tensor *u_) {                          \
        T *dg = P(dg_, T), *du = P(du_, T); const T *d = PC(d_, T), *g = PC(g_, T), *u = PC(u_, T);       \
        int64_t n = efla_tensor_numel(g_);                                                                \
        _Pragma("omp parallel for if (n >= PAR_MIN) schedule(static)")                                  \
        for (int64_t i = 0; i < n; i++) {                                                                 \
            double x = g[i], s = sigm(x), dy = d[i];                                                      \
            du[i] = (T)(dy * x * s);                                                                      \
            dg[i] = (T)(dy * u[i] * s * (1 + x * (1 - s)));                                               \
        }                                                                                                 \
    }
SWIGLU_IMPL(float, f32)
SWIGLU_IMPL(double, f64)

static int cpu_swiglu(efla_tensor *out, const efla_tensor *gate, const efla_tensor *up) {
    if (check_dtype("swiglu", gate)) return -1;
    if (gate->dtype == EFLA_FLOAT32) swiglu_f32(out, gate, up); else swiglu_f64(out, gate, up);
    return 0;
}
static int cpu_swiglu_backward(efla_tensor *dgate, efla_tensor *dup, const efla_tensor *dout,
                               const efla_tensor *gate, const efla_tensor *up) {
    if (check_dtype("swiglu_backward", gate)) return -1;
    if (gate->dtype == EFLA_FLOAT32) swiglu_bwd_f32(dgate, dup, dout, gate, up);
    else swiglu_bwd_f64(dgate, dup, dout, gate, up);
    return 0;
}

/* ---- causal short convolution ----------------------------------------------------------------
 * Input at time s of row b, channel c: x[b,s,c] for s >= 0, cache[b, K-1+s, c] for s < 0
 * (zero without a cache). pre(b,t,c) = bias[c] + sum_j w[c,j] in(b, t-K+1+j, c). */
#define SC_IN(x, cache, b, s, c) \
    ((s) >= 0 ? (double)x[((b) * T + (s)) * C + (c)] : (cache) ? (double)cache[((b) * (K - 1) + (K - 1) + (s)) * C + (c)] : 0.0)

#define SHORT_CONV_IMPL(T_, S)                                                                           \
    static double sc_pre_##S(const T_ *x, const T_ *cache, const T_ *w, const T_ *bias, int64_t T,      \
                             int64_t C, int64_t K, int64_t b, int64_t t, int64_t c) {                    \
        double a = bias ? (double)bias[c] : 0.0;                                                          \
        for (int64_t j = 0; j < K; j++) a += (double)w[c * K + j] * SC_IN(x, cache, b, t - K + 1 + j, c); \
        return a;                                                                                         \
    }                                                                                                     \
    /* d(loss)/d(pre) at (b,t,c) */                                                                       \
    static double sc_dpre_##S(const T_ *d, const T_ *x, const T_ *cache, const T_ *w, const T_ *bias,    \
                              int64_t T, int64_t C, int64_t K, int64_t b, int64_t t, int64_t c, int silu) { \
        double dy = d[(b * T + t) * C + c];                                                               \
        if (!silu) return dy;                                                                             \
        double p = sc_pre_##S(x, cache, w, bias, T, C, K, b, t, c), s = sigm(p);                          \
        return dy * s * (1 + p * (1 - s));                                                                \
    }                                                                                                     \
    static void sc_fwd_##S(efla_tensor *o_, const efla_tensor *x_, const efla_tensor *c_,               \
                           const efla_tensor *w_, const efla_tensor *b_, int silu) {                    \
        int64_t B = x_->shape[0], T = x_->shape[1], C = x_->shape[2], K = w_->shape[1];                   \
        T_ *o = P(o_, T_); const T_ *x = PC(x_, T_), *w = PC(w_, T_);                                     \
        const T_ *cache = c_ ? PC(c_, T_) : NULL, *bias = b_ ? PC(b_, T_) : NULL;                         \
        _Pragma("omp parallel for collapse(2) if (B * T * C >= PAR_MIN) schedule(static)")             \
        for (int64_t b = 0; b < B; b++)                                                                   \
            for (int64_t t = 0; t < T; t++)                                                               \
                for (int64_t c = 0; c < C; c++) {                                                         \
                    double p = sc_pre_##S(x, cache, w, bias, T, C, K, b, t, c);                           \
                    o[(b * T + t) * C + c] = (T_)(silu ? p * sigm(p) : p);                                \
                }                                                                                         \
    }                                                                                                     \
    static int sc_bwd_##S(efla_tensor *dx_, efla_tensor *dc_, efla_tensor *dw_, efla_tensor *db_,       \
                          const efla_tensor *d_, const efla_tensor *x_, const efla_tensor *c_,          \
                          const efla_tensor *w_, const efla_tensor *b_, int silu) {                     \
        int64_t B = x_->shape[0], T = x_->shape[1], C = x_->shape[2], K = w_->shape[1];                   \
        const T_ *x = PC(x_, T_), *w = PC(w_, T_), *d = PC(d_, T_);                                       \
        const T_ *cache = c_ ? PC(c_, T_) : NULL, *bias = b_ ? PC(b_, T_) : NULL;                         \
        T_ *dx = P(dx_, T_), *dw = P(dw_, T_);                                                            \
        T_ *dc = dc_ ? P(dc_, T_) : NULL, *db = db_ ? P(db_, T_) : NULL;                                  \
        /* the input at s feeds pre(t) for t = s + K-1-j, j = 0..K-1, with weight w[c,j] */               \
        _Pragma("omp parallel for collapse(2) if (B * T * C >= PAR_MIN) schedule(static)")             \
        for (int64_t b = 0; b < B; b++)                                                                   \
            for (int64_t s = -(K - 1); s < T; s++) {                                                      \
                if (s < 0 && !dc) continue;                                                               \
                for (int64_t c = 0; c < C; c++) {                                                         \
                    double a = 0;                                                                         \
                    for (int64_t j = 0; j < K; j++) {                                                     \
                        int64_t t = s + K - 1 - j;                                                        \
                        if (t >= 0 && t < T)                                                              \
                            a += (double)w[c * K + j] * sc_dpre_##S(d, x, cache, w, bias, T, C, K, b, t, c, silu); \
                    }                                                                                     \
                    if (s >= 0) dx[(b * T + s) * C + c] = (T_)a;                                          \
                    else dc[(b * (K - 1) + (K - 1) + s) * C + c] = (T_)a;                                 \
                }                                                                                         \
            }                                                                                             \
        double *acc = calloc((size_t)(C * (K + 1)), sizeof(double));                                      \
        if (!acc) return efla_fail("short_conv_backward: out of memory (%lld doubles)", (long long)(C * (K + 1))); \
        _Pragma("omp parallel for if (B * T * C >= PAR_MIN) schedule(static)")                          \
        for (int64_t c = 0; c < C; c++)                                                                   \
            for (int64_t b = 0; b < B; b++)                                                               \
                for (int64_t t = 0; t < T; t++) {                                                         \
                    double g = sc_dpre_##S(d, x, cache, w, bias, T, C, K, b, t, c, silu);                 \
                    for (int64_t j = 0; j < K; j++) acc[c * (K + 1) + j] += g * SC_IN(x, cache, b, t - K + 1 + j, c); \
                    acc[c * (K + 1) + K] += g;                                                            \
                }                                                                                         \
        for (int64_t c = 0; c < C; c++) {                                                                 \
            for (int64_t j = 0; j < K; j++) dw[c * K + j] = (T_)acc[c * (K + 1) + j];                     \
            if (db) db[c] = (T_)acc[c * (K + 1) + K];                                                     \
        }                                                                                                 \
        free(acc);                                                                                        \
        return 0;                                                                                         \
    }
SHORT_CONV_IMPL(float, f32)
SHORT_CONV_IMPL(double, f64)

static int cpu_short_conv(efla_tensor *out, const efla_tensor *x, const efla_tensor *cache, const efla_tensor *w,
                          const efla_tensor *bias, int silu) {
    if (check_dtype("short_conv", x)) return -1;
    if (x->dtype == EFLA_FLOAT32) sc_fwd_f32(out, x, cache, w, bias, silu);
    else sc_fwd_f64(out, x, cache, w, bias, silu);
    return 0;
}
static int cpu_short_conv_backward(efla_tensor *dx, efla_tensor *dcache, efla_tensor *dw, efla_tensor *dbias,
                                   const efla_tensor *dout, const efla_tensor *x, const efla_tensor *cache,
                                   const efla_tensor *w, const efla_tensor *bias, int silu) {
    if (check_dtype("short_conv_backward", x)) return -1;
    return x->dtype == EFLA_FLOAT32 ? sc_bwd_f32(dx, dcache, dw, dbias, dout, x, cache, w, bias, silu)
                                    : sc_bwd_f64(dx, dcache, dw, dbias, dout, x, cache, w, bias, silu);
}

/* ---- L2 norm and gated RMS norm (row by row over the last dim) ------------------------------ */
#define ROWS(t) ((t)->shape[(t)->ndim - 1] ? efla_tensor_numel(t) / (t)->shape[(t)->ndim - 1] : 0)

#define NORM_IMPL(T_, S)                                                                                 \
    static void l2_fwd_##S(efla_tensor *o_, efla_tensor *r_, const efla_tensor *x_, double eps) {       \
        int64_t D = x_->shape[x_->ndim - 1], R = ROWS(x_);                                                \
        T_ *o = P(o_, T_), *rs = P(r_, T_); const T_ *x = PC(x_, T_);                                     \
        _Pragma("omp parallel for if (R * D >= PAR_MIN) schedule(static)")                              \
        for (int64_t r = 0; r < R; r++) {                                                                 \
            const T_ *xr = x + r * D; double s = 0;                                                       \
            for (int64_t i = 0; i < D; i++) s += (double)xr[i] * xr[i];                                   \
            double q = 1.0 / sqrt(s + eps);                                                               \
            rs[r] = (T_)q;                                                                                \
            for (int64_t i = 0; i < D; i++) o[r * D + i] = (T_)(xr[i] * q);                               \
        }                                                                                                 \
    }                                                                                                     \
    /* y = x q, q = (|x|^2 + eps)^-1/2: dx = q dy - x q^3 (x . dy) = q (dy - y (y . dy)) */               \
    static void l2_bwd_##S(efla_tensor *dx_, const efla_tensor *d_, const efla_tensor *y_,              \
                           const efla_tensor *r_) {                                                     \
        int64_t D = y_->shape[y_->ndim - 1], R = ROWS(y_);                                                \
        T_ *dx = P(dx_, T_); const T_ *y = PC(y_, T_), *d = PC(d_, T_), *rs = PC(r_, T_);                 \
        _Pragma("omp parallel for if (R * D >= PAR_MIN) schedule(static)")                              \
        for (int64_t r = 0; r < R; r++) {                                                                 \
            const T_ *yr = y + r * D, *dr = d + r * D; double yd = 0, q = rs[r];                          \
            for (int64_t i = 0; i < D; i++) yd += (double)yr[i] * dr[i];                                  \
            for (int64_t i = 0; i < D; i++) dx[r * D + i] = (T_)(q * (dr[i] - yd * yr[i]));               \
        }                                                                                                 \
    }                                                                                                     \
    static void rg_fwd_##S(efla_tensor *o_, const efla_tensor *x_, const efla_tensor *g_,               \
                           const efla_tensor *w_, double eps) {                                         \
        int64_t D = x_->shape[x_->ndim - 1], R = ROWS(x_);                                                \
        T_ *o = P(o_, T_); const T_ *x = PC(x_, T_), *g = PC(g_, T_), *w = PC(w_, T_);                    \
        _Pragma("omp parallel for if (R * D >= PAR_MIN) schedule(static)")                              \
        for (int64_t r = 0; r < R; r++) {                                                                 \
            const T_ *xr = x + r * D, *gr = g + r * D; double s = 0;                                      \
            for (int64_t i = 0; i < D; i++) s += (double)xr[i] * xr[i];                                   \
            double q = 1.0 / sqrt(s / (double)D + eps);                                                   \
            for (int64_t i = 0; i < D; i++) {                                                             \
                double gv = gr[i];                                                                        \
                o[r * D + i] = (T_)(xr[i] * q * w[i] * gv * sigm(gv));                                    \
            }                                                                                             \
        }                                                                                                 \
    }                                                                                                     \
    /* n = x q; y = n w sg(g). dn = dy w sg; dx = q (dn - n mean(dn n)); dg = dy n w sg'(g);            \
     * dw = sum_rows dy n sg */                                                                           \
    static int rg_bwd_##S(efla_tensor *dx_, efla_tensor *dg_, efla_tensor *dw_, const efla_tensor *d_, \
                          const efla_tensor *x_, const efla_tensor *g_, const efla_tensor *w_, double eps) { \
        int64_t D = x_->shape[x_->ndim - 1], R = ROWS(x_);                                                \
        T_ *dx = P(dx_, T_), *dg = P(dg_, T_), *dw = P(dw_, T_);                                          \
        const T_ *x = PC(x_, T_), *g = PC(g_, T_), *w = PC(w_, T_), *d = PC(d_, T_);                      \
        int nt = 1;                                                                                       \
        _Pragma("omp parallel if (R * D >= PAR_MIN)")                                                   \
        {                                                                                                 \
            _Pragma("omp single") nt = omp_get_num_threads();                                             \
        }                                                                                                 \
        double *acc = calloc((size_t)(nt * D), sizeof(double));                                           \
        if (!acc) return efla_fail("rms_norm_gated_backward: out of memory (%lld doubles)", (long long)(nt * D)); \
        _Pragma("omp parallel num_threads(nt) if (R * D >= PAR_MIN)")                                   \
        {                                                                                                 \
            double *mine = acc + (int64_t)omp_get_thread_num() * D;                                       \
            _Pragma("omp for schedule(static)")                                                           \
            for (int64_t r = 0; r < R; r++) {                                                             \
                const T_ *xr = x + r * D, *gr = g + r * D, *dr = d + r * D; double s = 0, m = 0;          \
                for (int64_t i = 0; i < D; i++) s += (double)xr[i] * xr[i];                               \
                double q = 1.0 / sqrt(s / (double)D + eps);                                               \
                for (int64_t i = 0; i < D; i++) {                                                         \
                    double gv = gr[i], sg = gv * sigm(gv), n = xr[i] * q;                                 \
                    m += dr[i] * w[i] * sg * n;                                                           \
                }                                                                                         \
                m /= (double)D;                                                                           \
                for (int64_t i = 0; i < D; i++) {                                                         \
                    double gv = gr[i], sgm = sigm(gv), sg = gv * sgm, n = xr[i] * q, dy = dr[i];          \
                    dx[r * D + i] = (T_)(q * (dy * w[i] * sg - n * m));                                   \
                    dg[r * D + i] = (T_)(dy * n * w[i] * sgm * (1 + gv * (1 - sgm)));                     \
                    mine[i] += dy * n * sg;                                                               \
                }                                                                                         \
            }                                                                                             \
        }                                                                                                 \
        for (int64_t i = 0; i < D; i++) {                                                                 \
            double t = 0;                                                                                 \
            for (int k = 0; k < nt; k++) t += acc[(int64_t)k * D + i];                                    \
            dw[i] = (T_)t;                                                                                \
        }                                                                                                 \
        free(acc);                                                                                        \
        return 0;                                                                                         \
    }
NORM_IMPL(float, f32)
NORM_IMPL(double, f64)

static int cpu_l2norm(efla_tensor *out, efla_tensor *rstd, const efla_tensor *x, double eps) {
    if (check_dtype("l2_norm", x)) return -1;
    if (x->dtype == EFLA_FLOAT32) l2_fwd_f32(out, rstd, x, eps); else l2_fwd_f64(out, rstd, x, eps);
    return 0;
}
static int cpu_l2norm_backward(efla_tensor *dx, const efla_tensor *dy, const efla_tensor *y, const efla_tensor *rstd) {
    if (check_dtype("l2_norm_backward", y)) return -1;
    if (y->dtype == EFLA_FLOAT32) l2_bwd_f32(dx, dy, y, rstd); else l2_bwd_f64(dx, dy, y, rstd);
    return 0;
}
static int cpu_rms_norm_gated(efla_tensor *out, const efla_tensor *x, const efla_tensor *g, const efla_tensor *w,
                              double eps) {
    if (check_dtype("rms_norm_gated", x)) return -1;
    if (x->dtype == EFLA_FLOAT32) rg_fwd_f32(out, x, g, w, eps); else rg_fwd_f64(out, x, g, w, eps);
    return 0;
}
static int cpu_rms_norm_gated_backward(efla_tensor *dx, efla_tensor *dg, efla_tensor *dw, const efla_tensor *dy,
                                       const efla_tensor *x, const efla_tensor *g, const efla_tensor *w, double eps) {
    if (check_dtype("rms_norm_gated_backward", x)) return -1;
    return x->dtype == EFLA_FLOAT32 ? rg_bwd_f32(dx, dg, dw, dy, x, g, w, eps) : rg_bwd_f64(dx, dg, dw, dy, x, g, w, eps);
}

/* ---- cross-entropy rows ----------------------------------------------------------------------- */
#define CE_IMPL(T_, S)                                                                                   \
    static int64_t ce_##S(efla_tensor *l_, efla_tensor *g_, const efla_tensor *x_, const efla_tensor *t_, \
                          int64_t ignore) {                                                             \
        int64_t N = x_->shape[0], C = x_->shape[1], bad = -1;                                             \
        const T_ *x = PC(x_, T_); const int64_t *tg = PC(t_, int64_t);                                    \
        T_ *loss = P(l_, T_); T_ *g = g_ ? P(g_, T_) : NULL;                                              \
        _Pragma("omp parallel for if (N * C >= PAR_MIN) schedule(static)")                              \
        for (int64_t r = 0; r < N; r++) {                                                                 \
            const T_ *xr = x + r * C; int64_t t = tg[r];                                                  \
            if (t == ignore || t < 0 || t >= C) {                                                         \
                if (t != ignore) {                                                                        \
                    _Pragma("omp critical(efla_fused_ce_bad)")                                            \
                    if (bad < 0 || r < bad) bad = r;                                                      \
                }                                                                                         \
                loss[r] = 0;                                                                              \
                if (g) for (int64_t i = 0; i < C; i++) g[r * C + i] = 0;                                  \
                continue;                                                                                 \
            }                                                                                             \
            double m = -INFINITY, s = 0;                                                                  \
            for (int64_t i = 0; i < C; i++) m = xr[i] > m ? xr[i] : m;                                    \
            if (m == -INFINITY || isnan(m)) m = 0;                                                        \
            for (int64_t i = 0; i < C; i++) s += exp((double)xr[i] - m);                                  \
            double lse = m + log(s), xt = xr[t];                                                          \
            loss[r] = (T_)(lse - xt);                                                                     \
            if (g) {                                                                                      \
                for (int64_t i = 0; i < C; i++) g[r * C + i] = (T_)exp((double)xr[i] - lse);              \
                g[r * C + t] = (T_)((double)g[r * C + t] - 1.0);                                          \
            }                                                                                             \
        }                                                                                                 \
        return bad;                                                                                       \
    }
CE_IMPL(float, f32)
CE_IMPL(double, f64)

static int cpu_ce_rows(efla_tensor *loss, efla_tensor *grad, const efla_tensor *logits, const efla_tensor *target,
                       int64_t ignore_index) {
    if (check_dtype("cross_entropy", logits)) return -1;
    if (loss->dtype != logits->dtype)
        return efla_fail("cross_entropy rows: the CPU wants the loss in the logits' dtype (%s), got %s",
                         efla_dtype_name(logits->dtype), efla_dtype_name(loss->dtype));
    int64_t bad = logits->dtype == EFLA_FLOAT32 ? ce_f32(loss, grad, logits, target, ignore_index)
                                                : ce_f64(loss, grad, logits, target, ignore_index);
    if (bad >= 0)
        return efla_fail("cross_entropy: target %lld in row %lld is outside the %lld classes and is not "
                         "ignore_index (%lld)", (long long)PC(target, int64_t)[bad], (long long)bad,
                         (long long)logits->shape[1], (long long)ignore_index);
    return 0;
}

/* ---- embedding ------------------------------------------------------------------------------------ */
static int cpu_embedding(efla_tensor *out, const efla_tensor *weight, const efla_tensor *index) {
    if (check_dtype("embedding_lookup", weight)) return -1;
    int64_t N = out->shape[0], V = weight->shape[0], D = weight->shape[1];
    const int64_t *ix = PC(index, int64_t);
    size_t es = efla_dtype_size(weight->dtype);
    for (int64_t r = 0; r < N; r++)
        if (ix[r] < 0 || ix[r] >= V)
            /* the index_select wording, which the Lua binding restates 1-based */
            return efla_fail("embedding_lookup: index %lld is out of range for dim 0 of size %lld (at position %lld)",
                             (long long)ix[r], (long long)V, (long long)r);
    char *o = efla_cpu_ptr(out);
    const char *w = efla_cpu_ptr(weight);
#pragma omp parallel for if (N * D >= PAR_MIN) schedule(static)
    for (int64_t r = 0; r < N; r++) memcpy(o + r * D * (int64_t)es, w + ix[r] * D * (int64_t)es, (size_t)D * es);
    return 0;
}
static int cpu_embedding_backward(efla_tensor *gw, const efla_tensor *g, const efla_tensor *index) {
    int64_t N = g->shape[0], V = gw->shape[0], D = gw->shape[1];
    const int64_t *ix = PC(index, int64_t);
    if (g->dtype != gw->dtype && !(g->dtype == EFLA_FLOAT32 && gw->dtype == EFLA_FLOAT32))
        return efla_fail("embedding_backward: the CPU wants the gradient in the table's dtype");
    for (int64_t r = 0; r < N; r++) {
        if (ix[r] < 0 || ix[r] >= V) continue;
        if (gw->dtype == EFLA_FLOAT32) {
            float *a = P(gw, float) + ix[r] * D; const float *b = PC(g, float) + r * D;
            for (int64_t i = 0; i < D; i++) a[i] += b[i];
        } else {
            double *a = P(gw, double) + ix[r] * D; const double *b = PC(g, double) + r * D;
            for (int64_t i = 0; i < D; i++) a[i] += b[i];
        }
    }
    return 0;
}

/* cpu_<name> for every row of EFLA_FUSED_OPS, by name (backend_ops.h) */
const efla_fused_kernels efla_cpu_fused = {
    EFLA_FUSED_OPS(EFLA_FUSED_ENTRY_CPU)
};

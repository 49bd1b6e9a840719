/* nn.c: CPU kernels for softmax / log_softmax (+backward), layer and RMS norm (+backward)
 * and cross entropy. All work row by row over the last dim of contiguous inputs (the
 * front ends arrange that). Each row is loaded into a double buffer, computed in double
 * and stored back, which serves float32, float64 and bfloat16 with one code path and
 * keeps float32 sums accurate. Rows are spread over OpenMP threads. */
#include "cpu_kernels.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define PAR_MIN 32768

static void load_row(double *dst, const char *src, int64_t n, efla_dtype dt) {
    switch (dt) {
    case EFLA_FLOAT32: { const float *p = (const float *)src; for (int64_t i = 0; i < n; i++) dst[i] = p[i]; break; }
    case EFLA_FLOAT64: memcpy(dst, src, (size_t)n * sizeof(double)); break;
    case EFLA_BFLOAT16: { const uint16_t *p = (const uint16_t *)src; for (int64_t i = 0; i < n; i++) dst[i] = efla_bf16_to_f32(p[i]); break; }
    default: for (int64_t i = 0; i < n; i++) dst[i] = efla_load_as_double(src + i * (int64_t)efla_dtype_size(dt), dt);
    }
}

static void store_row(char *dst, const double *src, int64_t n, efla_dtype dt) {
    switch (dt) {
    case EFLA_FLOAT32: { float *p = (float *)dst; for (int64_t i = 0; i < n; i++) p[i] = (float)src[i]; break; }
    case EFLA_FLOAT64: memcpy(dst, src, (size_t)n * sizeof(double)); break;
    case EFLA_BFLOAT16: { uint16_t *p = (uint16_t *)dst; for (int64_t i = 0; i < n; i++) p[i] = efla_f32_to_bf16((float)src[i]); break; }
    default: for (int64_t i = 0; i < n; i++) efla_store_from_double(dst + i * (int64_t)efla_dtype_size(dt), dt, src[i]);
    }
}

static int check_float(const char *op, const efla_tensor *t) {
    if (!efla_dtype_is_floating(t->dtype))
        return efla_fail("%s: needs a floating-point tensor, got %s", op, efla_dtype_name(t->dtype));
    if (!efla_tensor_is_contiguous(t))
        return efla_fail("%s: the cpu kernel expects contiguous tensors (shape %s is strided); call contiguous() first",
                         op, efla_tshape(t));
    return 0;
}

static int64_t last_dim(const efla_tensor *t) { return t->ndim ? t->shape[t->ndim - 1] : 1; }

/* Per-thread row buffers: k rows of D doubles. NULL on out of memory. */
#define ROW_BUFFERS(k, D) (double *)malloc(sizeof(double) * (size_t)(k) * (size_t)((D) > 0 ? (D) : 1))

/* ---- softmax ------------------------------------------------------------------------------ */
static void softmax_row(double *x, int64_t D, int log_) {
    double m = -INFINITY;
    for (int64_t i = 0; i < D; i++) m = x[i] > m ? x[i] : m;
    if (m == -INFINITY || isnan(m)) m = 0;   /* all -inf: the output is nan, as in torch */
    double s = 0;
    if (log_) {
        for (int64_t i = 0; i < D; i++) s += exp(x[i] - m);
        double lse = m + log(s);
        for (int64_t i = 0; i < D; i++) x[i] -= lse;
    } else {
        for (int64_t i = 0; i < D; i++) { x[i] = exp(x[i] - m); s += x[i]; }
        double inv = 1.0 / s;
        for (int64_t i = 0; i < D; i++) x[i] *= inv;
    }
}

int efla_cpu_softmax(efla_tensor *out, const efla_tensor *in, int log_) {
    if (check_float("softmax", in) || check_float("softmax", out)) return -1;
    int64_t D = last_dim(in), rows = D ? efla_tensor_numel(in) / D : 0;
    size_t es = efla_dtype_size(in->dtype), oes = efla_dtype_size(out->dtype);
    const char *ip = efla_cpu_ptr(in);
    char *op = efla_cpu_ptr(out);
    int fail = 0;
#pragma omp parallel if (rows * D >= PAR_MIN)
    {
        double *x = ROW_BUFFERS(1, D);
        if (!x) {
#pragma omp atomic write
            fail = 1;
        }
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; r++) {
            if (!x) continue;
            load_row(x, ip + r * D * (int64_t)es, D, in->dtype);
            softmax_row(x, D, log_);
            store_row(op + r * D * (int64_t)oes, x, D, out->dtype);
        }
        free(x);
    }
    return fail ? efla_fail("softmax: out of memory for row buffers") : 0;
}

int efla_cpu_softmax_backward(efla_tensor *grad_in, const efla_tensor *grad_out, const efla_tensor *out, int log_) {
    if (check_float("softmax_backward", grad_in) || check_float("softmax_backward", grad_out) ||
        check_float("softmax_backward", out))
        return -1;
    int64_t D = last_dim(out), rows = D ? efla_tensor_numel(out) / D : 0;
    int fail = 0;
#pragma omp parallel if (rows * D >= PAR_MIN)
    {
        double *g = ROW_BUFFERS(2, D), *y = g ? g + (D > 0 ? D : 1) : NULL;
        if (!g) {
#pragma omp atomic write
            fail = 1;
        }
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; r++) {
            if (!g) continue;
            load_row(g, efla_cpu_ptr(grad_out) + r * D * (int64_t)efla_dtype_size(grad_out->dtype), D, grad_out->dtype);
            load_row(y, efla_cpu_ptr(out) + r * D * (int64_t)efla_dtype_size(out->dtype), D, out->dtype);
            double s = 0;
            if (log_) {   /* d/dx of log_softmax: g - softmax * sum(g) */
                for (int64_t i = 0; i < D; i++) s += g[i];
                for (int64_t i = 0; i < D; i++) g[i] -= exp(y[i]) * s;
            } else {      /* y * (g - <g, y>) */
                for (int64_t i = 0; i < D; i++) s += g[i] * y[i];
                for (int64_t i = 0; i < D; i++) g[i] = y[i] * (g[i] - s);
            }
            store_row(efla_cpu_ptr(grad_in) + r * D * (int64_t)efla_dtype_size(grad_in->dtype), g, D, grad_in->dtype);
        }
        free(g);
    }
    return fail ? efla_fail("softmax_backward: out of memory for row buffers") : 0;
}

/* ---- layer norm / RMS norm ------------------------------------------------------------------- */
static void store1(efla_tensor *t, int64_t i, double v) {
    if (!t) return;
    char *p = efla_cpu_ptr(t) + i * t->strides[0] * (int64_t)efla_dtype_size(t->dtype);
    efla_store_from_double(p, t->dtype, v);
}
static double load1(const efla_tensor *t, int64_t i) {
    return efla_load_as_double(efla_cpu_ptr(t) + i * (t->ndim ? t->strides[0] : 0) * (int64_t)efla_dtype_size(t->dtype),
                               t->dtype);
}

int efla_cpu_norm(efla_tensor *out, efla_tensor *mean, efla_tensor *rstd, const efla_tensor *x,
                  const efla_tensor *weight, const efla_tensor *bias, double eps, int rms) {
    if (check_float("norm", x) || check_float("norm", out) || (weight && check_float("norm", weight)) ||
        (bias && check_float("norm", bias)))
        return -1;
    int64_t D = last_dim(x), rows = D ? efla_tensor_numel(x) / D : 0;
    size_t es = efla_dtype_size(x->dtype), oes = efla_dtype_size(out->dtype);
    double *w = NULL, *b = NULL;
    if (weight || bias) {
        w = ROW_BUFFERS(2, D);
        if (!w) return efla_fail("norm: out of memory");
        b = w + D;
        for (int64_t i = 0; i < D; i++) { w[i] = 1; b[i] = 0; }
        if (weight) load_row(w, efla_cpu_ptr(weight), D, weight->dtype);
        if (bias && !rms) load_row(b, efla_cpu_ptr(bias), D, bias->dtype);
    }
    int fail = 0;
#pragma omp parallel if (rows * D >= PAR_MIN)
    {
        double *v = ROW_BUFFERS(1, D);
        if (!v) {
#pragma omp atomic write
            fail = 1;
        }
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; r++) {
            if (!v) continue;
            load_row(v, efla_cpu_ptr(x) + r * D * (int64_t)es, D, x->dtype);
            double mu = 0, ss = 0;
            if (!rms) {
                for (int64_t i = 0; i < D; i++) mu += v[i];
                mu /= (double)D;
            }
            for (int64_t i = 0; i < D; i++) ss += (v[i] - mu) * (v[i] - mu);
            double rs = 1.0 / sqrt(ss / (double)D + eps);
            if (w) for (int64_t i = 0; i < D; i++) v[i] = (v[i] - mu) * rs * w[i] + b[i];
            else for (int64_t i = 0; i < D; i++) v[i] = (v[i] - mu) * rs;
            store_row(efla_cpu_ptr(out) + r * D * (int64_t)oes, v, D, out->dtype);
            store1(mean, r, mu);
            store1(rstd, r, rs);
        }
        free(v);
    }
    free(w);
    return fail ? efla_fail("norm: out of memory for row buffers") : 0;
}

/* dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), dxhat = dy * w (the mean
 * term drops for RMS norm); dw = sum over rows of dy * xhat; db = sum of dy. Each thread
 * keeps its own dw/db partial sums, added up in thread order at the end. */
int efla_cpu_norm_backward(efla_tensor *grad_x, efla_tensor *grad_w, efla_tensor *grad_b,
                           const efla_tensor *grad_out, const efla_tensor *x, const efla_tensor *weight,
                           const efla_tensor *mean, const efla_tensor *rstd, int rms) {
    if (check_float("norm_backward", x) || check_float("norm_backward", grad_out) ||
        (grad_x && check_float("norm_backward", grad_x)))
        return -1;
    int64_t D = last_dim(x), rows = D ? efla_tensor_numel(x) / D : 0;
    int T = 1;
#ifdef _OPENMP
    T = omp_get_max_threads();
#endif
    bool par = rows * D >= PAR_MIN;
    if (!par) T = 1;
    double *w = ROW_BUFFERS(1, D);
    double *acc = (grad_w || grad_b) ? calloc((size_t)T * 2 * (size_t)(D > 0 ? D : 1), sizeof(double)) : NULL;
    if (!w || ((grad_w || grad_b) && !acc)) { free(w); free(acc); return efla_fail("norm_backward: out of memory"); }
    for (int64_t i = 0; i < D; i++) w[i] = 1;
    if (weight) load_row(w, efla_cpu_ptr(weight), D, weight->dtype);
    int fail = 0;
#pragma omp parallel num_threads(T) if (par)
    {
        int t = 0;
#ifdef _OPENMP
        t = omp_get_thread_num();
#endif
        double *dy = ROW_BUFFERS(2, D), *xh = dy ? dy + (D > 0 ? D : 1) : NULL;
        double *dw = acc ? acc + (size_t)t * 2 * (size_t)D : NULL, *db = dw ? dw + D : NULL;
        if (!dy) {
#pragma omp atomic write
            fail = 1;
        }
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; r++) {
            if (!dy) continue;
            load_row(dy, efla_cpu_ptr(grad_out) + r * D * (int64_t)efla_dtype_size(grad_out->dtype), D, grad_out->dtype);
            load_row(xh, efla_cpu_ptr(x) + r * D * (int64_t)efla_dtype_size(x->dtype), D, x->dtype);
            double mu = rms ? 0 : load1(mean, r), rs = load1(rstd, r), a = 0, b = 0;
            for (int64_t i = 0; i < D; i++) {
                xh[i] = (xh[i] - mu) * rs;
                if (dw) { dw[i] += dy[i] * xh[i]; db[i] += dy[i]; }
                double dxh = dy[i] * w[i];
                a += dxh;
                b += dxh * xh[i];
            }
            a = rms ? 0 : a / (double)D;
            b /= (double)D;
            if (grad_x) {
                for (int64_t i = 0; i < D; i++) dy[i] = rs * (dy[i] * w[i] - a - xh[i] * b);
                store_row(efla_cpu_ptr(grad_x) + r * D * (int64_t)efla_dtype_size(grad_x->dtype), dy, D, grad_x->dtype);
            }
        }
        free(dy);
    }
    if (!fail && acc) {
        for (int t = 1; t < T; t++)
            for (int64_t i = 0; i < 2 * D; i++) acc[i] += acc[(size_t)t * 2 * (size_t)D + (size_t)i];
        for (int64_t i = 0; i < D; i++) {
            if (grad_w) store1(grad_w, i, acc[i]);
            if (grad_b) store1(grad_b, i, acc[D + i]);
        }
    }
    free(w);
    free(acc);
    return fail ? efla_fail("norm_backward: out of memory for row buffers") : 0;
}

/* ---- cross entropy ------------------------------------------------------------------------------ */
/* Per row: loss = (1-e) * (lse - x[t]) + e * (lse - mean(x)), grad = softmax(x) - (1-e) *
 * onehot(t) - e/C; ignored rows get 0 and a zero gradient row. */
int efla_cpu_cross_entropy(efla_tensor *loss, efla_tensor *grad, const efla_tensor *logits,
                           const efla_tensor *target, int64_t ignore_index, double smoothing) {
    if (!efla_dtype_is_floating(logits->dtype) || logits->ndim != 2 || target->dtype != EFLA_INT64 || target->ndim != 1)
        return efla_fail("cross_entropy: expects float logits [N,C] and int64 targets [N], got %s %s and %s %s",
                         efla_tshape(logits), efla_dtype_name(logits->dtype), efla_tshape(target),
                         efla_dtype_name(target->dtype));
    int64_t N = logits->shape[0], C = logits->shape[1];
    const char *lp = efla_cpu_ptr(logits);
    const char *tp = efla_cpu_ptr(target);
    size_t es = efla_dtype_size(logits->dtype);
    int64_t bad_row = -1;
    int fail = 0;
#pragma omp parallel if (N * C >= PAR_MIN)
    {
        double *x = ROW_BUFFERS(1, C);
        if (!x) {
#pragma omp atomic write
            fail = 1;
        }
#pragma omp for schedule(static)
        for (int64_t r = 0; r < N; r++) {
            if (!x) continue;
            int64_t t = *(const int64_t *)(tp + r * target->strides[0] * 8);
            char *grow = grad ? efla_cpu_ptr(grad) + r * grad->strides[0] * (int64_t)efla_dtype_size(grad->dtype) : NULL;
            if (t == ignore_index || t < 0 || t >= C) {
                if (t != ignore_index) {
#pragma omp critical(efla_ce_bad)
                    if (bad_row < 0 || r < bad_row) bad_row = r;
                }
                store1(loss, r, 0);
                for (int64_t i = 0; i < C; i++) x[i] = 0;
                if (grow) store_row(grow, x, C, grad->dtype);
                continue;
            }
            for (int64_t i = 0; i < C; i++)
                x[i] = efla_load_as_double(lp + (r * logits->strides[0] + i * logits->strides[1]) * (int64_t)es,
                                           logits->dtype);
            double m = -INFINITY, s = 0, sum = 0;
            for (int64_t i = 0; i < C; i++) { m = x[i] > m ? x[i] : m; sum += x[i]; }
            if (m == -INFINITY || isnan(m)) m = 0;
            for (int64_t i = 0; i < C; i++) s += exp(x[i] - m);
            double lse = m + log(s);
            store1(loss, r, (1 - smoothing) * (lse - x[t]) + smoothing * (lse - sum / (double)C));
            if (grow) {
                for (int64_t i = 0; i < C; i++) x[i] = exp(x[i] - lse) - smoothing / (double)C;
                x[t] -= 1 - smoothing;
                if (grad->strides[1] == 1) store_row(grow, x, C, grad->dtype);
                else for (int64_t i = 0; i < C; i++)
                    efla_store_from_double(grow + i * grad->strides[1] * (int64_t)efla_dtype_size(grad->dtype), grad->dtype, x[i]);
            }
        }
        free(x);
    }
    if (fail) return efla_fail("cross_entropy: out of memory for row buffers");
    if (bad_row >= 0)
        return efla_fail("cross_entropy: target %lld in row %lld is outside the %lld classes [0, %lld) and is not "
                         "ignore_index (%lld)", (long long)*(const int64_t *)(tp + bad_row * target->strides[0] * 8),
                         (long long)bad_row, (long long)C, (long long)C, (long long)ignore_index);
    return 0;
}

/* foreach.c: the CPU kernels of the multi-tensor ops (front end core/ops_foreach.c).
 *
 * Every tensor is cut into chunks of FE_CHUNK elements; the chunks of all tensors are the
 * work items of one parallel loop. foreach_sum_squares writes one double partial per chunk
 * and adds the partials in list order afterwards, so the result depends only on the sizes,
 * never on the thread count or schedule. Squares are exact in double for float32 and
 * bfloat16 inputs. foreach_adamw runs elementwise.c's AdamW row function on each chunk, so it
 * gives the bits of the per-tensor kernel. */
#include "cpu_kernels.h"
#include "adamw_row.h"
#include <stdlib.h>

enum { FE_CHUNK = 1 << 16 };

static int64_t chunks_of(const efla_tensor *t) { return (efla_tensor_numel(t) + FE_CHUNK - 1) / FE_CHUNK; }

/* The chunk starts of every tensor: first[i] = the first work item of tensor i, first[n] = the
 * number of items. NULL on allocation failure (error set). */
static int64_t *chunk_table(const char *op, int n, const efla_tensor *const *ts) {
    int64_t *first = malloc(sizeof(int64_t) * ((size_t)n + 1));
    if (!first) return efla_fail_null("%s: out of host memory for %d tensors", op, n);
    first[0] = 0;
    for (int i = 0; i < n; i++) first[i + 1] = first[i] + chunks_of(ts[i]);
    return first;
}

/* The tensor holding work item w (first[] ascending). */
static int tensor_of(const int64_t *first, int n, int64_t w) {
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (first[mid] <= w) lo = mid; else hi = mid - 1;
    }
    return lo;
}

static double sumsq_f32(const float *x, int64_t n) {
    double acc = 0;
#pragma omp simd reduction(+:acc)
    for (int64_t j = 0; j < n; j++) acc += (double)x[j] * (double)x[j];
    return acc;
}
static double sumsq_f64(const double *x, int64_t n) {
    double acc = 0;
#pragma omp simd reduction(+:acc)
    for (int64_t j = 0; j < n; j++) acc += x[j] * x[j];
    return acc;
}
static double sumsq_bf16(const uint16_t *x, int64_t n) {
    double acc = 0;
#pragma omp simd reduction(+:acc)
    for (int64_t j = 0; j < n; j++) {
        double v = (double)efla_bf16_to_f32(x[j]);
        acc += v * v;
    }
    return acc;
}

/* Elements [lo, hi) of tensor t. */
static double chunk_sumsq(const efla_tensor *t, int64_t lo, int64_t hi) {
    const char *p = efla_cpu_ptr(t);
    switch (t->dtype) {
    case EFLA_FLOAT32: return sumsq_f32((const float *)p + lo, hi - lo);
    case EFLA_FLOAT64: return sumsq_f64((const double *)p + lo, hi - lo);
    default: return sumsq_bf16((const uint16_t *)p + lo, hi - lo);   /* the front end admits floats only */
    }
}

int efla_cpu_foreach_sum_squares(efla_tensor *out, int n, const efla_tensor *const *ts) {
    int64_t *first = chunk_table("foreach_sum_squares", n, ts);
    if (!first) return -1;
    int64_t items = first[n];
    double *part = malloc(sizeof(double) * (size_t)(items > 0 ? items : 1));
    if (!part) {
        free(first);
        return efla_fail("foreach_sum_squares: out of host memory for %lld partial sums", (long long)items);
    }
#pragma omp parallel for schedule(static) if (items > 1)
    for (int64_t w = 0; w < items; w++) {
        int i = tensor_of(first, n, w);
        int64_t lo = (w - first[i]) * FE_CHUNK, hi = lo + FE_CHUNK, numel = efla_tensor_numel(ts[i]);
        part[w] = chunk_sumsq(ts[i], lo, hi < numel ? hi : numel);
    }
    double total = 0;
    for (int64_t w = 0; w < items; w++) total += part[w];
    *(double *)efla_cpu_ptr(out) = total;
    free(part);
    free(first);
    return 0;
}

int efla_cpu_foreach_scale(int n, efla_tensor *const *ts, const efla_tensor *coef) {
    int64_t *first = chunk_table("foreach_scale_", n, (const efla_tensor *const *)ts);
    if (!first) return -1;
    const double c = *(const double *)efla_cpu_ptr(coef);
    const float cf = (float)c;
    int64_t items = first[n];
#pragma omp parallel for schedule(static) if (items > 1)
    for (int64_t w = 0; w < items; w++) {
        int i = tensor_of(first, n, w);
        int64_t lo = (w - first[i]) * FE_CHUNK, hi = lo + FE_CHUNK, numel = efla_tensor_numel(ts[i]);
        if (hi > numel) hi = numel;
        char *p = efla_cpu_ptr(ts[i]);
        switch (ts[i]->dtype) {
        case EFLA_FLOAT32: {
            float *x = (float *)p;
#pragma omp simd
            for (int64_t j = lo; j < hi; j++) x[j] *= cf;
            break;
        }
        case EFLA_FLOAT64: {
            double *x = (double *)p;
#pragma omp simd
            for (int64_t j = lo; j < hi; j++) x[j] *= c;
            break;
        }
        default: {
            uint16_t *x = (uint16_t *)p;
#pragma omp simd
            for (int64_t j = lo; j < hi; j++) x[j] = efla_f32_to_bf16(efla_bf16_to_f32(x[j]) * cf);
            break;
        }
        }
    }
    free(first);
    return 0;
}

int efla_cpu_foreach_adamw(int n, efla_tensor *const *ps, const efla_tensor *const *gs, efla_tensor *const *ms,
                           efla_tensor *const *vs, double lr, double beta1, double beta2, double eps, double wd,
                           int64_t step) {
    for (int i = 0; i < n; i++)
        if (!efla_cpu_adamw_row(ps[i]->dtype, gs[i]->dtype, ms[i]->dtype, vs[i]->dtype))
            return efla_fail("foreach_adamw (cpu kernel): unsupported dtypes for tensor %d: p %s, grad %s, m %s, v %s", i,
                             efla_dtype_name(ps[i]->dtype), efla_dtype_name(gs[i]->dtype),
                             efla_dtype_name(ms[i]->dtype), efla_dtype_name(vs[i]->dtype));
    int64_t *first = chunk_table("foreach_adamw_", n, (const efla_tensor *const *)ps);
    if (!first) return -1;
    efla_adamw_ctx c = efla_cpu_adamw_ctx(lr, beta1, beta2, eps, wd, step);
    int64_t items = first[n];
    static const int64_t unit[4] = { 1, 1, 1, 1 };
#pragma omp parallel for schedule(static) if (items > 1)
    for (int64_t w = 0; w < items; w++) {
        int i = tensor_of(first, n, w);
        int64_t lo = (w - first[i]) * FE_CHUNK, hi = lo + FE_CHUNK, numel = efla_tensor_numel(ps[i]);
        if (hi > numel) hi = numel;
        const efla_tensor *t[4] = { ps[i], gs[i], ms[i], vs[i] };
        char *ptr[4];
        for (int k = 0; k < 4; k++) ptr[k] = (char *)efla_cpu_ptr(t[k]) + lo * (int64_t)efla_dtype_size(t[k]->dtype);
        efla_cpu_adamw_row(t[0]->dtype, t[1]->dtype, t[2]->dtype, t[3]->dtype)(&c, ptr, unit, hi - lo, lo);
    }
    free(first);
    return 0;
}

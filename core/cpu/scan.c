/* scan.c: CPU kernels for scans and sorting along the last dim of a contiguous
 * [rows, n] input: cumsum (running sum) and a stable sort that also returns where each
 * value came from. Rows are independent; above SCAN_PAR_MIN elements they are spread
 * over OpenMP threads, below it one thread does everything (a fork costs more than it
 * saves on small tensors).
 *
 * float32 cumsum accumulates in double (a long row keeps its digits); bfloat16 goes
 * through float32 values with a double accumulator; int64 sums exactly. */
#include "cpu_kernels.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SCAN_PAR_MIN 65536

static void rows_of(const efla_tensor *t, int64_t *rows, int64_t *n) {
    *n = t->ndim == 0 ? 1 : t->shape[t->ndim - 1];
    int64_t total = efla_tensor_numel(t);
    *rows = *n > 0 ? total / *n : 0;
}

int efla_cpu_cumsum(efla_tensor *out, const efla_tensor *in) {
    int64_t rows, n;
    rows_of(in, &rows, &n);
    const char *src = efla_cpu_ptr(in);
    char *dst = efla_cpu_ptr(out);
    int par = rows > 1 && rows * n >= SCAN_PAR_MIN;
    switch (in->dtype) {
    case EFLA_FLOAT32: {
#pragma omp parallel for schedule(static) if (par)
        for (int64_t r = 0; r < rows; r++) {
            const float *x = (const float *)src + r * n;
            float *y = (float *)dst + r * n;
            double acc = 0;
            for (int64_t i = 0; i < n; i++) { acc += x[i]; y[i] = (float)acc; }
        }
        return 0;
    }
    case EFLA_FLOAT64: {
#pragma omp parallel for schedule(static) if (par)
        for (int64_t r = 0; r < rows; r++) {
            const double *x = (const double *)src + r * n;
            double *y = (double *)dst + r * n;
            double acc = 0;
            for (int64_t i = 0; i < n; i++) { acc += x[i]; y[i] = acc; }
        }
        return 0;
    }
    case EFLA_BFLOAT16: {
#pragma omp parallel for schedule(static) if (par)
        for (int64_t r = 0; r < rows; r++) {
            const uint16_t *x = (const uint16_t *)src + r * n;
            uint16_t *y = (uint16_t *)dst + r * n;
            double acc = 0;
            for (int64_t i = 0; i < n; i++) { acc += efla_bf16_to_f32(x[i]); y[i] = efla_f32_to_bf16((float)acc); }
        }
        return 0;
    }
    case EFLA_INT64: {
#pragma omp parallel for schedule(static) if (par)
        for (int64_t r = 0; r < rows; r++) {
            const int64_t *x = (const int64_t *)src + r * n;
            int64_t *y = (int64_t *)dst + r * n;
            int64_t acc = 0;
            for (int64_t i = 0; i < n; i++) { acc += x[i]; y[i] = acc; }
        }
        return 0;
    }
    default:
        return efla_fail("cumsum: dtype %s is not supported (use float32, float64, bfloat16 or int64)",
                         efla_dtype_name(in->dtype));
    }
}

/* ---- sort ---------------------------------------------------------------------------------- */
typedef struct { double v; int64_t i; } keyed;

/* Ascending, NaN last, ties by position: a stable order whatever qsort does. */
static int cmp_asc(const void *pa, const void *pb) {
    const keyed *a = pa, *b = pb;
    int an = isnan(a->v), bn = isnan(b->v);
    if (an != bn) return an - bn;
    if (!an && a->v != b->v) return a->v < b->v ? -1 : 1;
    return (a->i > b->i) - (a->i < b->i);
}

/* Descending, NaN first, ties by position. */
static int cmp_desc(const void *pa, const void *pb) {
    const keyed *a = pa, *b = pb;
    int an = isnan(a->v), bn = isnan(b->v);
    if (an != bn) return bn - an;
    if (!an && a->v != b->v) return a->v > b->v ? -1 : 1;
    return (a->i > b->i) - (a->i < b->i);
}

static double load(const char *row, efla_dtype dt, int64_t i) {
    switch (dt) {
    case EFLA_FLOAT32: return ((const float *)row)[i];
    case EFLA_FLOAT64: return ((const double *)row)[i];
    case EFLA_BFLOAT16: return efla_bf16_to_f32(((const uint16_t *)row)[i]);
    case EFLA_INT64: return (double)((const int64_t *)row)[i];
    case EFLA_UINT8: return ((const uint8_t *)row)[i];
    default: return ((const uint8_t *)row)[i];   /* bool */
    }
}

int efla_cpu_sort(efla_tensor *values, efla_tensor *indices, const efla_tensor *in, int descending) {
    int64_t rows, n;
    rows_of(in, &rows, &n);
    if (in->dtype == EFLA_INT64) {
        /* doubles hold int64 exactly only up to 2^53: check instead of sorting wrongly */
        const int64_t *x = (const int64_t *)efla_cpu_ptr(in);
        for (int64_t i = 0; i < rows * n; i++)
            if (x[i] > (INT64_C(1) << 53) || x[i] < -(INT64_C(1) << 53))
                return efla_fail("sort: int64 value %lld is beyond 2^53, which sort does not handle yet",
                                 (long long)x[i]);
    }
    size_t es = efla_dtype_size(in->dtype);
    const char *src = efla_cpu_ptr(in);
    char *dst = efla_cpu_ptr(values);
    int64_t *idx = (int64_t *)efla_cpu_ptr(indices);
    keyed *all = malloc(sizeof(keyed) * (size_t)(n > 0 ? n : 1) * (size_t)(rows > 0 ? rows : 1));
    if (!all) return efla_fail("sort: out of memory for %lld x %lld keys", (long long)rows, (long long)n);
    int par = rows > 1 && rows * n >= SCAN_PAR_MIN;
#pragma omp parallel for schedule(static) if (par)
    for (int64_t r = 0; r < rows; r++) {
        const char *row = src + (size_t)(r * n) * es;
        keyed *k = all + r * n;
        for (int64_t i = 0; i < n; i++) { k[i].v = load(row, in->dtype, i); k[i].i = i; }
        qsort(k, (size_t)n, sizeof(keyed), descending ? cmp_desc : cmp_asc);
        char *out = dst + (size_t)(r * n) * es;
        for (int64_t i = 0; i < n; i++) {
            idx[r * n + i] = k[i].i;
            memcpy(out + (size_t)i * es, row + (size_t)k[i].i * es, es);   /* the exact value */
        }
    }
    free(all);
    return 0;
}

/* strided.h: the one strided walk every CPU elementwise kernel shares.
 *
 * efla_strided_run(n, ts, fn, ctx) visits the elements of n same-shaped tensors (ts[0]
 * gives the shape) in row-major order and calls fn once per "row segment": a run of
 * elements along the innermost dim, with one byte pointer and one element stride per
 * tensor. Before walking it drops dims of size 1 and merges dims that are contiguous
 * with each other in every tensor, so contiguous tensors become one long row with
 * stride 1 and the row function's stride-1 branch (which the compiler vectorises) does
 * all the work. Above EFLA_OMP_THRESHOLD elements the linear range is split evenly over
 * OpenMP threads; `linear` tells the row function where its segment starts, so results
 * that depend on the element index (random numbers) are independent of the thread count.
 */
#ifndef EFLA_CPU_STRIDED_H
#define EFLA_CPU_STRIDED_H
#include "../internal.h"
#ifdef _OPENMP
#include <omp.h>
#endif

#define EFLA_OMP_THRESHOLD 32768
#define EFLA_STRIDED_MAX 4

typedef struct efla_strided {
    int ndim;                                        /* >= 1 after collapsing */
    int n;                                           /* operands */
    int64_t numel;
    int64_t shape[EFLA_MAX_DIMS];
    int64_t strides[EFLA_STRIDED_MAX][EFLA_MAX_DIMS]; /* in elements */
    char *base[EFLA_STRIDED_MAX];                    /* address of element 0 */
    int64_t esize[EFLA_STRIDED_MAX];                 /* bytes per element */
} efla_strided;

/* ptrs[k]: address of the segment's first element of operand k; strides[k]: its element
 * stride along the segment; len: elements; linear: row-major index of the first one. */
typedef void (*efla_row_fn)(void *ctx, char *const *ptrs, const int64_t *strides, int64_t len,
                            int64_t linear);

static inline void efla_strided_init(efla_strided *it, int n, const efla_tensor *const *ts) {
    const efla_tensor *t0 = ts[0];
    int nd = 0;
    it->n = n;
    it->numel = efla_numel_of(t0->ndim, t0->shape);
    for (int k = 0; k < n; k++) {
        it->base[k] = efla_cpu_ptr(ts[k]);
        it->esize[k] = (int64_t)efla_dtype_size(ts[k]->dtype);
    }
    for (int d = 0; d < t0->ndim; d++) {
        int64_t size = t0->shape[d];
        if (size == 1) continue;
        if (nd > 0) {
            int merge = 1;
            for (int k = 0; k < n; k++)
                if (it->strides[k][nd - 1] != ts[k]->strides[d] * size) { merge = 0; break; }
            if (merge) {
                it->shape[nd - 1] *= size;
                for (int k = 0; k < n; k++) it->strides[k][nd - 1] = ts[k]->strides[d];
                continue;
            }
        }
        it->shape[nd] = size;
        for (int k = 0; k < n; k++) it->strides[k][nd] = ts[k]->strides[d];
        nd++;
    }
    if (nd == 0 || it->numel == 0) {   /* 0-d, all ones, or empty: one row */
        nd = 1;
        it->shape[0] = it->numel;
        for (int k = 0; k < n; k++) it->strides[k][0] = 1;
    }
    it->ndim = nd;
}

/* Walk linear indices [begin, end). */
static inline void efla_strided_range(const efla_strided *it, int64_t begin, int64_t end,
                                      efla_row_fn fn, void *ctx) {
    int nd = it->ndim, n = it->n, last = nd - 1;
    int64_t idx[EFLA_MAX_DIMS], off[EFLA_STRIDED_MAX] = {0}, inner[EFLA_STRIDED_MAX];
    char *ptrs[EFLA_STRIDED_MAX];
    int64_t rem = begin;
    for (int d = nd - 1; d >= 0; d--) {
        idx[d] = rem % it->shape[d];
        rem /= it->shape[d];
        for (int k = 0; k < n; k++) off[k] += idx[d] * it->strides[k][d];
    }
    for (int k = 0; k < n; k++) inner[k] = it->strides[k][last];
    int64_t i = begin;
    while (i < end) {
        int64_t len = it->shape[last] - idx[last];
        if (len > end - i) len = end - i;
        for (int k = 0; k < n; k++) ptrs[k] = it->base[k] + off[k] * it->esize[k];
        fn(ctx, ptrs, inner, len, i);
        i += len;
        if (i >= end) break;
        /* advance by len along the last dim, carrying into the outer dims */
        idx[last] += len;
        for (int k = 0; k < n; k++) off[k] += len * inner[k];
        for (int d = last; d > 0 && idx[d] == it->shape[d]; d--) {
            idx[d] = 0;
            idx[d - 1]++;
            for (int k = 0; k < n; k++)
                off[k] += it->strides[k][d - 1] - it->shape[d] * it->strides[k][d];
        }
    }
}

/* Split [0, n) into nt near-equal parts; part t is [*b, *e). */
static inline void efla_split_range(int64_t n, int t, int nt, int64_t *b, int64_t *e) {
    int64_t q = n / nt, r = n % nt;
    *b = t * q + (t < r ? t : r);
    *e = *b + q + (t < r ? 1 : 0);
}

/* Run fn over every element of the n tensors ts (same shape), in parallel when large. */
static inline void efla_strided_run(int n, const efla_tensor *const *ts, efla_row_fn fn, void *ctx) {
    efla_strided it;
    efla_strided_init(&it, n, ts);
    int64_t total = it.numel;
    if (total <= 0) return;
#ifdef _OPENMP
    if (total >= EFLA_OMP_THRESHOLD) {
#pragma omp parallel
        {
            int64_t b, e;
            efla_split_range(total, omp_get_thread_num(), omp_get_num_threads(), &b, &e);
            if (b < e) efla_strided_range(&it, b, e, fn, ctx);
        }
        return;
    }
#endif
    efla_strided_range(&it, 0, total, fn, ctx);
}

#endif

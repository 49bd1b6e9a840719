/* index.c: CPU kernels of the indexing family: index_select, index_add, gather, scatter_add.
 *
 * All four are one loop nest over an "iteration shape" L with one indexed dim:
 *   copy ops (gather, index_select):   B[p]                  = A[p with p[dim] = I[p]]
 *   add ops  (scatter_add, index_add): A[p with p[dim] = I[p]] += B[p]
 * index_select/index_add are gather/scatter_add with the 1-d index broadcast (stride 0)
 * over every other dim; the loop notices that stride and reads the index once per
 * block, which turns them into row copies/adds (the embedding case).
 *
 * Parallel work items are (outer position, chunk of the vector dim v); the indexed dim j
 * always runs inside one item. Two items never touch the same destination (their
 * non-indexed coordinates differ), so the adds are race-free without atomics, and each
 * destination sums its contributions in j order: results do not depend on the thread count.
 *
 * A bad index is skipped and reported afterwards as "index V is out of range for dim D of
 * size S"; the front end prefixes the op's name. */
#include "cpu_kernels.h"
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

enum { OP_COPY = 0, OP_ADD = 1 };
#define PAR_THRESHOLD 32768

typedef struct plan {
    int n_outer;
    int64_t oshape[EFLA_MAX_DIMS], oA[EFLA_MAX_DIMS], oB[EFLA_MAX_DIMS], oI[EFLA_MAX_DIMS];
    int64_t J, jB, jI;          /* the indexed dim (A moves by idx * adim along it) */
    int64_t K, kA, kB, kI;      /* the vector dim v (K = 1 when there is none) */
    int k_outer;                /* 1: loop k outside j (v comes before dim in memory order) */
    int64_t adim, asize;        /* A's stride and size along the indexed dim */
    int dim;                    /* for messages */
} plan;

/* Build the loop nest: drop size-1 dims, merge adjacent non-indexed dims that are
 * contiguous in all three tensors, then take the last non-indexed dim as v. */
static void make_plan(plan *p, int ndim, const int64_t *L, int dim, const int64_t *sA,
                      const int64_t *sB, const int64_t *sI, int64_t adim, int64_t asize) {
    int64_t shp[EFLA_MAX_DIMS], a[EFLA_MAX_DIMS], b[EFLA_MAX_DIMS], ix[EFLA_MAX_DIMS];
    int n = 0, pd = -1;   /* pd: position of dim in the compacted arrays */
    for (int d = 0; d < ndim; d++) {
        if (d != dim && L[d] == 1) continue;
        if (d != dim && n > 0 && n - 1 != pd &&
            a[n - 1] == sA[d] * L[d] && b[n - 1] == sB[d] * L[d] && ix[n - 1] == sI[d] * L[d]) {
            /* merge into the previous dim: it is the outer part of one longer run */
            shp[n - 1] *= L[d];
            a[n - 1] = sA[d]; b[n - 1] = sB[d]; ix[n - 1] = sI[d];
            continue;
        }
        if (d == dim) pd = n;
        shp[n] = L[d]; a[n] = sA[d]; b[n] = sB[d]; ix[n] = sI[d];
        n++;
    }
    int v = -1;
    for (int d = n - 1; d >= 0; d--)
        if (d != pd) { v = d; break; }
    memset(p, 0, sizeof *p);
    p->J = shp[pd]; p->jB = b[pd]; p->jI = ix[pd];
    if (v >= 0) { p->K = shp[v]; p->kA = a[v]; p->kB = b[v]; p->kI = ix[v]; p->k_outer = v < pd; }
    else p->K = 1;
    for (int d = 0; d < n; d++) {
        if (d == pd || d == v) continue;
        p->oshape[p->n_outer] = shp[d];
        p->oA[p->n_outer] = a[d]; p->oB[p->n_outer] = b[d]; p->oI[p->n_outer] = ix[d];
        p->n_outer++;
    }
    p->adim = adim;
    p->asize = asize;
    p->dim = dim;
}

/* Remember one bad index (the rare error path, so a critical section is fine). */
typedef struct { int has; int64_t value; } bad_index;
static void note_bad(bad_index *bad, int64_t v) {
#ifdef _OPENMP
#pragma omp critical(efla_index_bad)
#endif
    if (!bad->has) { bad->has = 1; bad->value = v; }
}

#define IN_RANGE(idx, size) ((uint64_t)(idx) < (uint64_t)(size))

/* One work item over elements of type T: outer base pointers, k in [k0,k1), j in [j0,j1).
 * OP(a, b) is the per-element operation on pointers into A and B. */
#define DEFINE_ITEM(NAME, T, OP)                                                                     \
static void NAME(const plan *p, char *A_, char *B_, const int64_t *I, int64_t k0, int64_t k1,      \
                 int64_t j0, int64_t j1, bad_index *bad) {                                         \
    T *A = (T *)A_, *B = (T *)B_;                                                                  \
    if (!p->k_outer) {                                                                             \
        for (int64_t j = j0; j < j1; j++) {                                                        \
            const int64_t *ip = I + j * p->jI;                                                     \
            T *bj = B + j * p->jB;                                                                 \
            if (p->kI == 0) {   /* one index for the whole block: a row copy / add */              \
                int64_t idx = ip[0];                                                               \
                if (!IN_RANGE(idx, p->asize)) { note_bad(bad, idx); continue; }                    \
                T *aj = A + idx * p->adim;                                                         \
                if (p->kA == 1 && p->kB == 1) {                                                    \
                    for (int64_t k = k0; k < k1; k++) { T *a = aj + k, *b = bj + k; OP(a, b); }    \
                } else {                                                                           \
                    for (int64_t k = k0; k < k1; k++) {                                            \
                        T *a = aj + k * p->kA, *b = bj + k * p->kB; OP(a, b);                      \
                    }                                                                              \
                }                                                                                  \
            } else {                                                                               \
                for (int64_t k = k0; k < k1; k++) {                                                \
                    int64_t idx = ip[k * p->kI];                                                   \
                    if (!IN_RANGE(idx, p->asize)) { note_bad(bad, idx); continue; }                \
                    T *a = A + idx * p->adim + k * p->kA, *b = bj + k * p->kB; OP(a, b);           \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
    } else {                                                                                       \
        for (int64_t k = k0; k < k1; k++) {                                                        \
            const int64_t *ip = I + k * p->kI;                                                     \
            T *ak = A + k * p->kA, *bk = B + k * p->kB;                                            \
            for (int64_t j = j0; j < j1; j++) {                                                    \
                int64_t idx = ip[j * p->jI];                                                       \
                if (!IN_RANGE(idx, p->asize)) { note_bad(bad, idx); continue; }                    \
                T *a = ak + idx * p->adim, *b = bk + j * p->jB; OP(a, b);                          \
            }                                                                                      \
        }                                                                                          \
    }                                                                                              \
}

#define COPY_OP(a, b) (*(b) = *(a))
#define ADD_OP(a, b) (*(a) += *(b))
#define ADD_BF16_OP(a, b) (*(a) = efla_f32_to_bf16(efla_bf16_to_f32(*(a)) + efla_bf16_to_f32(*(b))))

DEFINE_ITEM(copy1, uint8_t, COPY_OP)
DEFINE_ITEM(copy2, uint16_t, COPY_OP)
DEFINE_ITEM(copy4, uint32_t, COPY_OP)
DEFINE_ITEM(copy8, uint64_t, COPY_OP)
DEFINE_ITEM(add_f32, float, ADD_OP)
DEFINE_ITEM(add_f64, double, ADD_OP)
DEFINE_ITEM(add_i64, int64_t, ADD_OP)
DEFINE_ITEM(add_bf16, uint16_t, ADD_BF16_OP)

typedef void (*item_fn)(const plan *, char *, char *, const int64_t *, int64_t, int64_t, int64_t,
                        int64_t, bad_index *);

static int nthreads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

static int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* Run the loop nest. A, B, I point at each tensor's first element. */
static int run(const char *op, int kind, efla_dtype dtype, const plan *p, char *A, char *B,
               const int64_t *I) {
    item_fn fn = NULL;
    size_t es = efla_dtype_size(dtype);
    if (kind == OP_COPY) {
        fn = es == 1 ? copy1 : es == 2 ? copy2 : es == 4 ? copy4 : es == 8 ? copy8 : NULL;
    } else {
        switch (dtype) {
        case EFLA_FLOAT32: fn = add_f32; break;
        case EFLA_FLOAT64: fn = add_f64; break;
        case EFLA_INT64: fn = add_i64; break;
        case EFLA_BFLOAT16: fn = add_bf16; break;
        default: break;
        }
    }
    if (!fn)
        return efla_fail("%s: dtype %s is not supported (use float32, float64, bfloat16 or int64)", op,
                         efla_dtype_name(dtype));
    int64_t outer = efla_numel_of(p->n_outer, p->oshape);
    int64_t work = outer * p->J * p->K;
    if (work == 0) return 0;
    /* Split into items: over outer positions first, then chunks of k, then (copies only,
     * where j is race-free) chunks of j. */
    int64_t kc = 1, jc = 1;
    int nt = nthreads();
    bool par = work >= PAR_THRESHOLD && nt > 1;
    if (par && outer < 4 * nt) {
        kc = cdiv(4 * nt, outer);
        if (kc > cdiv(p->K, 64)) kc = cdiv(p->K, 64);
        if (kc < 1) kc = 1;
        if (kind == OP_COPY && outer * kc < 4 * nt) {
            jc = cdiv(4 * nt, outer * kc);
            if (jc > p->J) jc = p->J;
        }
    }
    int64_t kstep = cdiv(p->K, kc), jstep = cdiv(p->J, jc), items = outer * kc * jc;
    bad_index bad = {0, 0};
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (par)
#endif
    for (int64_t it = 0; it < items; it++) {
        int64_t r = it, jt = r % jc; r /= jc;
        int64_t kt = r % kc; r /= kc;
        int64_t offA = 0, offB = 0, offI = 0;
        for (int d = p->n_outer - 1; d >= 0; d--) {
            int64_t c = r % p->oshape[d];
            r /= p->oshape[d];
            offA += c * p->oA[d]; offB += c * p->oB[d]; offI += c * p->oI[d];
        }
        int64_t k0 = kt * kstep, k1 = k0 + kstep < p->K ? k0 + kstep : p->K;
        int64_t j0 = jt * jstep, j1 = j0 + jstep < p->J ? j0 + jstep : p->J;
        if (k0 < k1 && j0 < j1)
            fn(p, A + offA * (int64_t)es, B + offB * (int64_t)es, I + offI, k0, k1, j0, j1, &bad);
    }
    if (bad.has)
        return efla_fail("index %lld is out of range for dim %d of size %lld", (long long)bad.value,
                         p->dim, (long long)p->asize);
    return 0;
}

/* Strides of a 1-d index broadcast over `ndim` dims: nonzero only along dim. */
static void broadcast_index(int ndim, int dim, const efla_tensor *index, int64_t *sI) {
    for (int d = 0; d < ndim; d++) sI[d] = 0;
    sI[dim] = index->ndim ? index->strides[0] : 0;
}

static int check_index(const char *op, const efla_tensor *index) {
    if (index->dtype != EFLA_INT64)
        return efla_fail("%s: index must be int64, not %s", op, efla_dtype_name(index->dtype));
    return 0;
}

int efla_cpu_index_select(efla_tensor *out, const efla_tensor *in, int dim, const efla_tensor *index) {
    if (check_index("index_select", index)) return -1;
    int64_t sI[EFLA_MAX_DIMS];
    broadcast_index(out->ndim, dim, index, sI);
    plan p;
    make_plan(&p, out->ndim, out->shape, dim, in->strides, out->strides, sI, in->strides[dim], in->shape[dim]);
    return run("index_select", OP_COPY, out->dtype, &p, efla_cpu_ptr(in), efla_cpu_ptr(out),
               (const int64_t *)efla_cpu_ptr(index));
}

int efla_cpu_index_add(efla_tensor *out, int dim, const efla_tensor *index, const efla_tensor *src) {
    if (check_index("index_add", index)) return -1;
    int64_t sI[EFLA_MAX_DIMS];
    broadcast_index(src->ndim, dim, index, sI);
    plan p;
    make_plan(&p, src->ndim, src->shape, dim, out->strides, src->strides, sI, out->strides[dim], out->shape[dim]);
    return run("index_add", OP_ADD, out->dtype, &p, efla_cpu_ptr(out), efla_cpu_ptr(src),
               (const int64_t *)efla_cpu_ptr(index));
}

int efla_cpu_gather(efla_tensor *out, const efla_tensor *in, int dim, const efla_tensor *index) {
    if (check_index("gather", index)) return -1;
    plan p;
    make_plan(&p, index->ndim, index->shape, dim, in->strides, out->strides, index->strides,
              in->strides[dim], in->shape[dim]);
    return run("gather", OP_COPY, out->dtype, &p, efla_cpu_ptr(in), efla_cpu_ptr(out),
               (const int64_t *)efla_cpu_ptr(index));
}

int efla_cpu_scatter_add(efla_tensor *out, int dim, const efla_tensor *index, const efla_tensor *src) {
    if (check_index("scatter_add", index)) return -1;
    plan p;
    make_plan(&p, index->ndim, index->shape, dim, out->strides, src->strides, index->strides,
              out->strides[dim], out->shape[dim]);
    return run("scatter_add", OP_ADD, out->dtype, &p, efla_cpu_ptr(out), efla_cpu_ptr(src),
               (const int64_t *)efla_cpu_ptr(index));
}

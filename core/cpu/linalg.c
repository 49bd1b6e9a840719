/* linalg.c: batched matrix multiply on the CPU: out[i] = a[i] @ b[i] for a [Bt,M,K],
 * b [Bt,K,N], out [Bt,M,N] with any strides (batch strides may be 0 for broadcast).
 *
 * float32/float64 go to OpenBLAS. A matrix with unit stride on its last dim is passed as is,
 * one with unit stride on its first dim as CblasTrans (a transposed view costs nothing);
 * anything else is packed into a contiguous buffer. A broadcast right operand with a
 * row-stacked left operand (x @ W over a batch) becomes one tall GEMM. Small matrices
 * (where OpenBLAS runs single-threaded anyway) are spread over batches with OpenMP; large
 * ones run one after another and let OpenBLAS thread. bfloat16 converts through float32;
 * int64 uses a plain loop. */
#include "cpu_kernels.h"
#include <cblas.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* Below this M*N*K OpenBLAS 0.3 computes on the calling thread (SMP threshold). */
#define SMALL_GEMM 262144

/* Keep OpenBLAS's pool the size efla_set_num_threads chose for OpenMP. */
static void sync_blas_threads(void) {
#ifdef _OPENMP
    static int last;
    if (omp_in_parallel()) return;
    int t = omp_get_max_threads();
    if (t != last) { openblas_set_num_threads(t); last = t; }
#endif
}

/* How BLAS can read a rows x cols matrix with strides (s0, s1) in place: NoTrans with
 * leading dim s0, Trans with leading dim s1, or not at all (then it is packed). */
static bool blas_view(int64_t rows, int64_t cols, int64_t s0, int64_t s1, bool *trans, int64_t *ld) {
    int64_t c1 = cols > 1 ? cols : 1, r1 = rows > 1 ? rows : 1;
    if ((cols == 1 || s1 == 1) && (rows == 1 || s0 >= c1)) {
        *trans = false;
        *ld = rows == 1 ? c1 : s0;
        return *ld <= INT_MAX;
    }
    if ((rows == 1 || s0 == 1) && (cols == 1 || s1 >= r1)) {
        *trans = true;
        *ld = cols == 1 ? r1 : s1;
        return *ld <= INT_MAX;
    }
    return false;
}

static void gemm(efla_dtype dt, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const void *A, int64_t lda,
                 const void *B, int64_t ldb, void *C, int64_t ldc) {
    enum CBLAS_TRANSPOSE TA = ta ? CblasTrans : CblasNoTrans, TB = tb ? CblasTrans : CblasNoTrans;
    if (dt == EFLA_FLOAT64)
        cblas_dgemm(CblasRowMajor, TA, TB, (int)M, (int)N, (int)K, 1.0, A, (int)lda, B, (int)ldb, 0.0, C, (int)ldc);
    else
        cblas_sgemm(CblasRowMajor, TA, TB, (int)M, (int)N, (int)K, 1.0f, A, (int)lda, B, (int)ldb, 0.0f, C, (int)ldc);
}

/* Copy a strided rows x cols matrix into a contiguous buffer of float32 (for float32 and
 * bfloat16 sources) or float64, or back (unpack). */
static void pack(void *dst, efla_dtype cdt, const char *src, efla_dtype sdt, int64_t rows, int64_t cols,
                 int64_t s0, int64_t s1) {
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++) {
            int64_t o = i * s0 + j * s1;
            double v = sdt == EFLA_FLOAT32 ? ((const float *)src)[o]
                     : sdt == EFLA_FLOAT64 ? ((const double *)src)[o]
                     : efla_bf16_to_f32(((const uint16_t *)src)[o]);
            if (cdt == EFLA_FLOAT64) ((double *)dst)[i * cols + j] = v;
            else ((float *)dst)[i * cols + j] = (float)v;
        }
}

static void unpack(char *dst, efla_dtype ddt, const void *src, efla_dtype cdt, int64_t rows, int64_t cols,
                   int64_t s0, int64_t s1) {
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++) {
            double v = cdt == EFLA_FLOAT64 ? ((const double *)src)[i * cols + j] : ((const float *)src)[i * cols + j];
            int64_t o = i * s0 + j * s1;
            if (ddt == EFLA_FLOAT32) ((float *)dst)[o] = (float)v;
            else if (ddt == EFLA_FLOAT64) ((double *)dst)[o] = v;
            else ((uint16_t *)dst)[o] = efla_f32_to_bf16((float)v);
        }
}

typedef struct {
    efla_dtype dt, cdt;        /* storage dtype, compute dtype (float32 for bfloat16) */
    size_t es, ces;
    int64_t Bt, M, N, K;
    const char *a, *b;
    char *o;
    const int64_t *as, *bs, *os;
    bool a_ok, b_ok, o_ok, ta, tb;
    int64_t lda, ldb, ldo;
} bmm_plan;

/* One batch; scratch holds packed copies when a matrix cannot be read in place
 * (room for M*K + K*N + M*N compute-dtype elements). */
static void one_batch(const bmm_plan *p, int64_t i, char *scratch) {
    const char *A = p->a + i * p->as[0] * (int64_t)p->es;
    const char *B = p->b + i * p->bs[0] * (int64_t)p->es;
    char *O = p->o + i * p->os[0] * (int64_t)p->es;
    const void *Ap = A, *Bp = B;
    void *Op = O;
    bool ta = p->ta, tb = p->tb;
    int64_t lda = p->lda, ldb = p->ldb, ldo = p->ldo;
    char *sa = scratch, *sb = sa + p->M * p->K * (int64_t)p->ces, *so = sb + p->K * p->N * (int64_t)p->ces;
    if (!p->a_ok) { pack(sa, p->cdt, A, p->dt, p->M, p->K, p->as[1], p->as[2]); Ap = sa; ta = false; lda = p->K; }
    if (!p->b_ok) { pack(sb, p->cdt, B, p->dt, p->K, p->N, p->bs[1], p->bs[2]); Bp = sb; tb = false; ldb = p->N; }
    if (!p->o_ok) { Op = so; ldo = p->N; }
    if (lda < 1) lda = 1;
    if (ldb < 1) ldb = 1;
    if (ldo < 1) ldo = 1;
    gemm(p->cdt, ta, tb, p->M, p->N, p->K, Ap, lda, Bp, ldb, Op, ldo);
    if (!p->o_ok) unpack(O, p->dt, so, p->cdt, p->M, p->N, p->os[1], p->os[2]);
}

static int bmm_int64(efla_tensor *out, const efla_tensor *a, const efla_tensor *b) {
    int64_t Bt = out->shape[0], M = out->shape[1], N = out->shape[2], K = a->shape[2];
    const int64_t *A = (const int64_t *)efla_cpu_ptr(a), *B = (const int64_t *)efla_cpu_ptr(b);
    int64_t *O = (int64_t *)efla_cpu_ptr(out);
#pragma omp parallel for collapse(2) schedule(static) if (Bt * M * N * K >= 32768)
    for (int64_t i = 0; i < Bt; i++)
        for (int64_t m = 0; m < M; m++)
            for (int64_t n = 0; n < N; n++) {
                uint64_t acc = 0;   /* wraps on overflow instead of undefined behaviour */
                for (int64_t k = 0; k < K; k++)
                    acc += (uint64_t)A[i * a->strides[0] + m * a->strides[1] + k * a->strides[2]] *
                           (uint64_t)B[i * b->strides[0] + k * b->strides[1] + n * b->strides[2]];
                O[i * out->strides[0] + m * out->strides[1] + n * out->strides[2]] = (int64_t)acc;
            }
    return 0;
}

int efla_cpu_bmm(efla_tensor *out, const efla_tensor *a, const efla_tensor *b) {
    if (a->ndim != 3 || b->ndim != 3 || out->ndim != 3)
        return efla_fail("bmm: expects 3-d tensors, got %s @ %s -> %s", efla_tshape(a), efla_tshape(b), efla_tshape(out));
    bmm_plan p;
    memset(&p, 0, sizeof p);
    p.Bt = out->shape[0]; p.M = out->shape[1]; p.N = out->shape[2]; p.K = a->shape[2];
    if (a->shape[0] != p.Bt || b->shape[0] != p.Bt || a->shape[1] != p.M || b->shape[1] != p.K || b->shape[2] != p.N)
        return efla_fail("bmm: shapes %s @ %s -> %s do not agree", efla_tshape(a), efla_tshape(b), efla_tshape(out));
    if (a->dtype != b->dtype || a->dtype != out->dtype)
        return efla_fail("bmm: dtypes %s, %s -> %s must agree", efla_dtype_name(a->dtype), efla_dtype_name(b->dtype),
                         efla_dtype_name(out->dtype));
    if (p.Bt == 0 || p.M == 0 || p.N == 0) return 0;
    if (p.M > INT_MAX || p.N > INT_MAX || p.K > INT_MAX)
        return efla_fail("bmm: %s @ %s: a matrix side exceeds the 2^31 that BLAS accepts", efla_tshape(a), efla_tshape(b));
    p.dt = a->dtype;
    if (p.dt == EFLA_INT64) return bmm_int64(out, a, b);
    if (p.dt != EFLA_FLOAT32 && p.dt != EFLA_FLOAT64 && p.dt != EFLA_BFLOAT16)
        return efla_fail("bmm: %s is not supported on the cpu (use float32, float64, bfloat16 or int64)",
                         efla_dtype_name(p.dt));
    if (p.K == 0) {   /* an empty sum: zeros */
        for (int64_t i = 0; i < p.Bt; i++)
            for (int64_t m = 0; m < p.M; m++)
                for (int64_t n = 0; n < p.N; n++)
                    efla_store_from_double(efla_cpu_ptr(out) + (i * out->strides[0] + m * out->strides[1] +
                                           n * out->strides[2]) * (int64_t)efla_dtype_size(out->dtype), out->dtype, 0);
        return 0;
    }

    p.cdt = p.dt == EFLA_FLOAT64 ? EFLA_FLOAT64 : EFLA_FLOAT32;
    p.es = efla_dtype_size(p.dt);
    p.ces = efla_dtype_size(p.cdt);
    p.a = efla_cpu_ptr(a); p.b = efla_cpu_ptr(b); p.o = efla_cpu_ptr(out);
    p.as = a->strides; p.bs = b->strides; p.os = out->strides;
    bool native = p.dt != EFLA_BFLOAT16;
    p.a_ok = native && blas_view(p.M, p.K, p.as[1], p.as[2], &p.ta, &p.lda);
    p.b_ok = native && blas_view(p.K, p.N, p.bs[1], p.bs[2], &p.tb, &p.ldb);
    bool to;
    p.o_ok = native && blas_view(p.M, p.N, p.os[1], p.os[2], &to, &p.ldo) && !to;
    sync_blas_threads();

    /* x @ W over a batch: rows of all batches of a are evenly spaced, W is shared. */
    if (p.Bt > 1 && p.a_ok && p.b_ok && p.o_ok && !p.ta && p.bs[0] == 0 && p.as[0] == p.M * p.lda &&
        p.os[0] == p.M * p.ldo && p.Bt * p.M <= INT_MAX) {
        gemm(p.cdt, false, p.tb, p.Bt * p.M, p.N, p.K, p.a, p.lda, p.b, p.ldb, p.o, p.ldo);
        return 0;
    }

    bool need = !p.a_ok || !p.b_ok || !p.o_ok;
    size_t scratch = need ? (size_t)(p.M * p.K + p.K * p.N + p.M * p.N) * p.ces : 0;
    bool small = p.M * p.N * p.K < SMALL_GEMM && p.Bt > 1;
    int fail = 0;
#pragma omp parallel if (small)
    {
        char *buf = scratch ? malloc(scratch) : NULL;
        if (scratch && !buf) {
#pragma omp atomic write
            fail = 1;
        }
        /* every thread reaches the worksharing loop, even one without a buffer */
#pragma omp for schedule(static)
        for (int64_t i = 0; i < p.Bt; i++)
            if (!scratch || buf) one_batch(&p, i, buf);
        free(buf);
    }
    if (fail) return efla_fail("bmm: out of memory for a %s @ %s packing buffer", efla_tshape(a), efla_tshape(b));
    return 0;
}

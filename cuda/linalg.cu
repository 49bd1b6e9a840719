/* linalg.cu: batched matrix products through cuBLAS (cublasGemmStridedBatchedEx).
 *
 * out [Bt,M,N] = a [Bt,M,K] @ b [Bt,K,N], row-major in efla's terms. cuBLAS is
 * column-major, so we ask it for out^T = b^T a^T: a row-major matrix with unit column
 * stride is a column-major matrix of its transpose. Each operand is used in place when
 * one of its two matrix strides is 1 (otherwise it is copied to contiguous first), the
 * batch stride may be anything (0 for broadcast). out must have unit column stride, or
 * the product goes to a contiguous scratch that is then copied into out's strides.
 *
 * float32 (TF32 tensor cores only after efla_cuda_set_tf32(1)), float64, bfloat16 with
 * float32 accumulation; int64 (as on the CPU) through a plain kernel. */
#include "kernels.cuh"
#include <atomic>

namespace {

std::atomic<int> tf32_on{0};

/* How one row-major R x C matrix with strides (sr, sc) is handed to cuBLAS. */
struct MatView {
    bool ok;
    bool trans;     /* false: unit column stride (row-major), ld = sr; true: unit row stride */
    int64_t ld;
};

MatView view_of(int64_t R, int64_t C, int64_t sr, int64_t sc) {
    MatView v = { false, false, 0 };
    int64_t maxld = (int64_t)INT32_MAX;
    if (sc == 1 || C == 1) {
        int64_t ld = R == 1 ? (C > 0 ? C : 1) : sr;
        if (ld >= (C > 0 ? C : 1) && ld <= maxld) { v.ok = true; v.trans = false; v.ld = ld; return v; }
    }
    if (sr == 1 || R == 1) {
        int64_t ld = C == 1 ? (R > 0 ? R : 1) : sc;
        if (ld >= (R > 0 ? R : 1) && ld <= maxld) { v.ok = true; v.trans = true; v.ld = ld; return v; }
    }
    return v;
}

int gemm(efla_tensor *out, const efla_tensor *a, const efla_tensor *b) {
    int64_t Bt = out->shape[0], M = out->shape[1], N = out->shape[2], K = a->shape[2];
    MatView va = view_of(M, K, a->strides[1], a->strides[2]);
    MatView vb = view_of(K, N, b->strides[1], b->strides[2]);
    MatView vo = view_of(M, N, out->strides[1], out->strides[2]);
    /* the caller made sure these hold */
    if (!va.ok || !vb.ok || !vo.ok || vo.trans) return efla_fail("bmm: internal error: bad operand layout");
    cublasHandle_t h;
    TRY(cu_cublas(out->device, &h));
    cudaDataType_t dt;
    cublasComputeType_t ct;
    float alpha_f = 1, beta_f = 0;
    double alpha_d = 1, beta_d = 0;
    const void *alpha = &alpha_f, *beta = &beta_f;
    switch (out->dtype) {
    case EFLA_FLOAT32:
        dt = CUDA_R_32F;
        ct = tf32_on.load() ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
        break;
    case EFLA_FLOAT64: dt = CUDA_R_64F; ct = CUBLAS_COMPUTE_64F; alpha = &alpha_d; beta = &beta_d; break;
    case EFLA_BFLOAT16: dt = CUDA_R_16BF; ct = CUBLAS_COMPUTE_32F; break;
    default:
        return efla_fail("matmul: dtype %s is not supported on cuda (use float32, float64 or bfloat16)",
                         efla_dtype_name(out->dtype));
    }
    /* out^T (N x M, column-major, ld vo.ld) = op(b-memory) (N x K) * op(a-memory) (K x M).
     * b-memory seen column-major is b^T (N x K) when b is row-major: no transpose then. */
    cublasOperation_t opb = vb.trans ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasOperation_t opa = va.trans ? CUBLAS_OP_T : CUBLAS_OP_N;
    int64_t sb = b->shape[0] == 1 ? 0 : b->strides[0];
    int64_t sa = a->shape[0] == 1 ? 0 : a->strides[0];
    int64_t so = out->strides[0];
    if (Bt == 1) so = (int64_t)M * N;
    /* cuBLAS takes int sizes and batch counts */
    if (M > INT32_MAX || N > INT32_MAX || K > INT32_MAX || Bt > INT32_MAX)
        return efla_fail("matmul: sizes [%lld,%lld,%lld] x %lld batches exceed cuBLAS's int range", (long long)M,
                         (long long)K, (long long)N, (long long)Bt);
    CUBLAS_CHECK(cublasGemmStridedBatchedEx(h, opb, opa, (int)N, (int)M, (int)K, alpha, cu_ptr(b), dt,
                                            (int)vb.ld, sb, cu_ptr(a), dt, (int)va.ld, sa, beta, cu_ptr(out), dt,
                                            (int)vo.ld, so, (int)Bt, ct, CUBLAS_GEMM_DEFAULT));
    return 0;
}

/* int64 products (no cuBLAS type): one thread per output element, wrapping arithmetic. */
struct IntMM {
    int64_t Bt, M, N, K;
    int64_t sa[3], sb[3], so[3];
    const int64_t *a, *b;
    int64_t *out;
};

__global__ void bmm_int64_kernel(IntMM p) {
    CU_GRID_STRIDE(e, p.Bt * p.M * p.N) {
        int64_t n = e % p.N, m = (e / p.N) % p.M, bt = e / (p.N * p.M);
        const int64_t *ar = p.a + bt * p.sa[0] + m * p.sa[1], *bc = p.b + bt * p.sb[0] + n * p.sb[2];
        uint64_t acc = 0;
        for (int64_t k = 0; k < p.K; k++) acc += (uint64_t)ar[k * p.sa[2]] * (uint64_t)bc[k * p.sb[1]];
        p.out[bt * p.so[0] + m * p.so[1] + n * p.so[2]] = (int64_t)acc;
    }
}

int bmm_int64(efla_tensor *out, const efla_tensor *a, const efla_tensor *b) {
    IntMM p;
    p.Bt = out->shape[0]; p.M = out->shape[1]; p.N = out->shape[2]; p.K = a->shape[2];
    for (int d = 0; d < 3; d++) {
        p.sa[d] = a->shape[d] == 1 ? 0 : a->strides[d];
        p.sb[d] = b->shape[d] == 1 ? 0 : b->strides[d];
        p.so[d] = out->strides[d];
    }
    p.a = (const int64_t *)cu_ptr(a);
    p.b = (const int64_t *)cu_ptr(b);
    p.out = (int64_t *)cu_ptr(out);
    bmm_int64_kernel<<<cu_blocks(p.Bt * p.M * p.N, 256), 256>>>(p);
    CU_CHECK_LAUNCH("bmm_int64");
    return 0;
}

} // namespace

int efla_cuda_tf32_enabled(void) { return tf32_on.load(); }

/* Returns the previous setting (0 or 1). */
extern "C" int efla_cuda_set_tf32(int enabled) { return tf32_on.exchange(enabled ? 1 : 0); }

int efla_cuda_bmm(efla_tensor *out, const efla_tensor *a, const efla_tensor *b) {
    TRY(cu_set_device(out->device));
    if (out->ndim != 3 || a->ndim != 3 || b->ndim != 3)
        return efla_fail("bmm: expected 3-d operands, got %s @ %s -> %s", efla_tshape(a), efla_tshape(b),
                         efla_tshape(out));
    if (a->dtype != out->dtype || b->dtype != out->dtype)
        return efla_fail("bmm: dtypes differ (%s @ %s -> %s)", efla_dtype_name(a->dtype),
                         efla_dtype_name(b->dtype), efla_dtype_name(out->dtype));
    if (out->dtype != EFLA_FLOAT32 && out->dtype != EFLA_FLOAT64 && out->dtype != EFLA_BFLOAT16 &&
        out->dtype != EFLA_INT64)
        return efla_fail("bmm: %s is not supported on cuda (use float32, float64, bfloat16 or int64)",
                         efla_dtype_name(out->dtype));
    int64_t M = out->shape[1], N = out->shape[2], K = a->shape[2];
    if (a->shape[1] != M || b->shape[2] != N || b->shape[1] != K ||
        (a->shape[0] != out->shape[0] && a->shape[0] != 1) || (b->shape[0] != out->shape[0] && b->shape[0] != 1))
        return efla_fail("bmm: shapes %s @ %s -> %s do not agree", efla_tshape(a), efla_tshape(b), efla_tshape(out));
    if (efla_tensor_numel(out) == 0) return 0;
    if (K == 0) return efla_cuda_fill(out, 0);
    if (out->dtype == EFLA_INT64) return bmm_int64(out, a, b);

    /* operands that cuBLAS cannot read in place become contiguous copies */
    efla_tensor *ca = NULL, *cb = NULL, *co = NULL;
    int rc = 0;
    if (!view_of(M, K, a->strides[1], a->strides[2]).ok) { ca = cu_contiguous(a); if (!ca) return -1; }
    if (!view_of(K, N, b->strides[1], b->strides[2]).ok) {
        cb = cu_contiguous(b);
        if (!cb) { efla_tensor_release(ca); return -1; }
    }
    MatView vo = view_of(M, N, out->strides[1], out->strides[2]);
    bool out_direct = vo.ok && !vo.trans && (out->shape[0] == 1 || out->strides[0] != 0);
    if (!out_direct) {
        co = efla_empty(3, out->shape, out->dtype, out->device);
        if (!co) rc = -1;
    }
    if (!rc) rc = gemm(co ? co : out, ca ? ca : a, cb ? cb : b);
    if (!rc && co) rc = efla_cuda_copy(out, co);
    efla_tensor_release(ca);
    efla_tensor_release(cb);
    efla_tensor_release(co);
    return rc;
}

/* index.cu: CUDA kernels of the indexing family: index_select, index_add, gather,
 * scatter_add. Semantics are those of core/cpu/index.c: one walk over an "iteration shape"
 * L with one indexed dim,
 *   copy ops (gather, index_select):   B[p]                  = A[p with p[dim] = I[p]]
 *   add ops  (scatter_add, index_add): A[p with p[dim] = I[p]] += B[p]
 * where index_select/index_add use the 1-d index broadcast (stride 0) over the other dims.
 * One thread per element of L; the adds use atomicAdd (so duplicate indices are summed,
 * in an unspecified order). A bad index is skipped and reported afterwards with the CPU's
 * message; reading that flag back synchronises. */
#include "kernels.cuh"

namespace {

enum { OP_COPY = 0, OP_ADD = 1 };

/* Operand 0: A with its stride along dim zeroed (the index supplies that part);
 * operand 1: B; operand 2: the index. */
struct IndexPlan {
    Iter<3> it;
    int64_t adim, asize;
};

__device__ __forceinline__ void atomic_add_elem(float *a, float b) { atomicAdd(a, b); }
__device__ __forceinline__ void atomic_add_elem(double *a, double b) { atomicAdd(a, b); }
__device__ __forceinline__ void atomic_add_elem(int64_t *a, int64_t b) {
    atomicAdd((unsigned long long *)a, (unsigned long long)b);
}
__device__ __forceinline__ void atomic_add_elem(bf16 *a, bf16 b) { atomicAdd(a, b); }

template <typename T, int KIND>
__global__ void index_kernel(IndexPlan p, int64_t *bad) {
    CU_GRID_STRIDE(i, p.it.n) {
        int64_t off[3];
        iter_offsets<3>(p.it, i, off);
        int64_t idx = ((const int64_t *)p.it.data[2])[off[2]];
        if ((uint64_t)idx >= (uint64_t)p.asize) {
            if (atomicExch((unsigned long long *)&bad[0], 1ull) == 0) bad[1] = idx;
            continue;
        }
        T *a = (T *)p.it.data[0] + off[0] + idx * p.adim;
        T *b = (T *)p.it.data[1] + off[1];
        if constexpr (KIND == OP_COPY) *b = *a;
        else atomic_add_elem(a, *b);
    }
}

template <typename T, int KIND>
int launch(const IndexPlan &p, int64_t *bad) {
    index_kernel<T, KIND><<<cu_blocks(p.it.n, 256), 256>>>(p, bad);
    CU_CHECK_LAUNCH("index");
    return 0;
}

/* L: the iteration shape; A, B, I: the three tensors; sI: the index strides over L. */
int run(const char *op, int kind, efla_tensor *A, efla_tensor *B, const efla_tensor *I, int ndim,
        const int64_t *L, int dim, const int64_t *sI) {
    int device = A->device;
    TRY(cu_set_device(device));
    if (I->dtype != EFLA_INT64) return efla_fail("%s: index must be int64, not %s", op, efla_dtype_name(I->dtype));
    efla_dtype dt = A->dtype;
    if (kind == OP_ADD && !(dt == EFLA_FLOAT32 || dt == EFLA_FLOAT64 || dt == EFLA_INT64 || dt == EFLA_BFLOAT16))
        return efla_fail("%s: dtype %s is not supported (use float32, float64, bfloat16 or int64)", op,
                         efla_dtype_name(dt));
    if (efla_numel_of(ndim, L) == 0) return 0;
    /* A's stride along dim is zeroed: the index supplies that part of its offset. */
    int64_t sA[EFLA_MAX_DIMS];
    for (int d = 0; d < ndim; d++) sA[d] = d == dim ? 0 : A->strides[d];
    const int64_t *strides[3] = { sA, B->strides, sI };
    char *data[3] = { cu_ptr(A), cu_ptr(B), cu_ptr(I) };
    IndexPlan p;
    p.it = make_iter_raw<3>(ndim, L, strides, data);
    p.adim = A->strides[dim];
    p.asize = A->shape[dim];
    CuBuffer flag;
    TRY(flag.alloc(2 * sizeof(int64_t), device));
    CU_CHECK(cudaMemsetAsync(flag.ptr, 0, 2 * sizeof(int64_t), 0));
    int rc;
    if (kind == OP_COPY) {
        switch (efla_dtype_size(dt)) {
        case 1: rc = launch<uint8_t, OP_COPY>(p, flag.as<int64_t>()); break;
        case 2: rc = launch<uint16_t, OP_COPY>(p, flag.as<int64_t>()); break;
        case 4: rc = launch<uint32_t, OP_COPY>(p, flag.as<int64_t>()); break;
        default: rc = launch<uint64_t, OP_COPY>(p, flag.as<int64_t>()); break;
        }
    } else {
        switch (dt) {
        case EFLA_FLOAT32: rc = launch<float, OP_ADD>(p, flag.as<int64_t>()); break;
        case EFLA_FLOAT64: rc = launch<double, OP_ADD>(p, flag.as<int64_t>()); break;
        case EFLA_INT64: rc = launch<int64_t, OP_ADD>(p, flag.as<int64_t>()); break;
        default: rc = launch<bf16, OP_ADD>(p, flag.as<int64_t>()); break;
        }
    }
    TRY(rc);
    int64_t bad[2];
    CU_CHECK(cudaMemcpy(bad, flag.ptr, sizeof bad, cudaMemcpyDeviceToHost));
    if (bad[0])
        return efla_fail("index %lld is out of range for dim %d of size %lld", (long long)bad[1], dim,
                         (long long)p.asize);
    return 0;
}

void broadcast_index(int ndim, int dim, const efla_tensor *index, int64_t *sI) {
    for (int d = 0; d < ndim; d++) sI[d] = 0;
    sI[dim] = index->ndim ? index->strides[0] : 0;
}

} // namespace

int efla_cuda_index_select(efla_tensor *out, const efla_tensor *in, int dim, const efla_tensor *index) {
    int64_t sI[EFLA_MAX_DIMS];
    broadcast_index(out->ndim, dim, index, sI);
    return run("index_select", OP_COPY, (efla_tensor *)in, out, index, out->ndim, out->shape, dim, sI);
}

int efla_cuda_index_add(efla_tensor *out, int dim, const efla_tensor *index, const efla_tensor *src) {
    int64_t sI[EFLA_MAX_DIMS];
    broadcast_index(src->ndim, dim, index, sI);
    return run("index_add", OP_ADD, out, (efla_tensor *)src, index, src->ndim, src->shape, dim, sI);
}

int efla_cuda_gather(efla_tensor *out, const efla_tensor *in, int dim, const efla_tensor *index) {
    return run("gather", OP_COPY, (efla_tensor *)in, out, index, index->ndim, index->shape, dim, index->strides);
}

int efla_cuda_scatter_add(efla_tensor *out, int dim, const efla_tensor *index, const efla_tensor *src) {
    return run("scatter_add", OP_ADD, out, (efla_tensor *)src, index, index->ndim, index->shape, dim,
               index->strides);
}

/* backend_cuda.cu: the CUDA backend's table, registered with core when libefla loads, and
 * the small shared services: device selection, device count, cuBLAS handles, copies
 * between host and device, synchronisation.
 *
 * Every kernel runs on the legacy default stream, so kernels, cuBLAS calls and copies are
 * ordered with each other; host<->device copies are synchronous (cudaMemcpy). Nothing here
 * touches the driver before first use: a machine without a GPU (or without a driver) just
 * reports 0 devices. */
#include "kernels.cuh"
#include <mutex>

namespace {

const int MAX_DEVICES = 64;
int n_devices = -1;
std::once_flag count_once;
thread_local int current_device = -1;   /* index, not efla device number */
cublasHandle_t handles[MAX_DEVICES];
int sm_counts[MAX_DEVICES];
std::mutex handles_mu;

int cuda_device_count(void) {
    std::call_once(count_once, [] {
        int n = 0;
        cudaError_t e = cudaGetDeviceCount(&n);
        if (e != cudaSuccess) { (void)cudaGetLastError(); n = 0; }   /* no driver / no device */
        n_devices = n > MAX_DEVICES ? MAX_DEVICES : n;
    });
    return n_devices;
}

int cuda_synchronize(int device) {
    TRY(cu_set_device(device));
    CU_CHECK(cudaDeviceSynchronize());
    return 0;
}

int cuda_memcpy_h2d(void *dst, const void *src, size_t nbytes, int device) {
    TRY(cu_set_device(device));
    CU_CHECK(cudaMemcpy(dst, src, nbytes, cudaMemcpyHostToDevice));
    return 0;
}

int cuda_memcpy_d2h(void *dst, const void *src, size_t nbytes, int device) {
    TRY(cu_set_device(device));
    CU_CHECK(cudaMemcpy(dst, src, nbytes, cudaMemcpyDeviceToHost));
    return 0;
}

} // namespace

int cu_set_device(int device) {
    int idx = device - EFLA_DEVICE_CUDA0;
    if (idx < 0 || idx >= cuda_device_count())
        return efla_fail("cuda: device %s does not exist (%d CUDA device(s) visible)", efla_device_name(device),
                         cuda_device_count());
    if (current_device != idx) {
        CU_CHECK(cudaSetDevice(idx));
        current_device = idx;
    }
    return 0;
}

extern "C" int efla_cuda_device_props(int device, efla_device_props *props) {
    TRY(cu_set_device(device));
    cudaDeviceProp p;
    CU_CHECK(cudaGetDeviceProperties(&p, device - EFLA_DEVICE_CUDA0));
    snprintf(props->name, sizeof props->name, "%s", p.name);
    props->total_memory = (int64_t)p.totalGlobalMem;
    props->multiprocessors = p.multiProcessorCount;
    props->cc_major = p.major;
    props->cc_minor = p.minor;
    return 0;
}

int cu_cublas(int device, cublasHandle_t *out) {
    TRY(cu_set_device(device));
    int idx = device - EFLA_DEVICE_CUDA0;
    std::lock_guard<std::mutex> g(handles_mu);
    if (!handles[idx]) {
        cublasHandle_t h;
        CUBLAS_CHECK(cublasCreate(&h));
        CUBLAS_CHECK(cublasSetStream(h, 0));
        handles[idx] = h;
    }
    *out = handles[idx];
    return 0;
}

int cu_sm_count(void) {
    int idx = current_device < 0 ? 0 : current_device;
    if (!sm_counts[idx]) {
        int n = 0;
        if (cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, idx) != cudaSuccess || n <= 0) {
            (void)cudaGetLastError();
            n = 16;
        }
        sm_counts[idx] = n;
    }
    return sm_counts[idx];
}

efla_tensor *cu_contiguous(const efla_tensor *t) {
    if (efla_tensor_is_contiguous(t)) {
        efla_tensor_retain((efla_tensor *)t);
        return (efla_tensor *)t;
    }
    efla_tensor *c = efla_empty(t->ndim, t->shape, t->dtype, t->device);
    if (!c) return NULL;
    if (efla_tensor_numel(t) && efla_cuda_copy(c, t)) { efla_tensor_release(c); return NULL; }
    return c;
}

/* The services by hand, then every kernel slot by name from the op list (core/backend_ops.h);
 * C++ wants designated initialisers in the struct's order, which the list gives. */
extern "C" const efla_backend efla_cuda_backend = {
    .name = "cuda",
    .device_count = cuda_device_count,
    .synchronize = cuda_synchronize,
    .alloc = efla_cuda_alloc,
    .free = efla_cuda_free,
    .memcpy_h2d = cuda_memcpy_h2d,
    .memcpy_d2h = cuda_memcpy_d2h,
    .memory_stats = efla_cuda_backend_memory_stats,
    .empty_cache = efla_cuda_backend_empty_cache,
    .delta_rule_plan = efla_cuda_delta_rule_plan,
    EFLA_BACKEND_OPS(EFLA_OP_ENTRY_CUDA)
};

/* Registration when libefla is loaded (no CUDA call here: that waits for first use). */
__attribute__((constructor)) static void efla_cuda_register(void) { efla_register_backend(1, &efla_cuda_backend); }

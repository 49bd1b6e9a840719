/* nccl.cu: efla's NCCL collectives. libnccl.so.2 is opened with dlopen on first use, so
 * libefla never links NCCL (the bundle leaves it to the target machine, like the driver)
 * and a CUDA build on a machine without NCCL still builds. Only the handful of NCCL
 * declarations used here are repeated below (their ABI is stable since NCCL 2.0; ncclAvg
 * needs 2.10). Collectives run on a per-communicator non-blocking stream that first waits
 * for the default stream (where efla's kernels run), so gradient buckets reduce while
 * the backward keeps computing; efla_nccl_wait joins them back. */
#include "common.cuh"
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern "C" {
typedef struct ncclComm *ncclComm_t;
typedef struct { char internal[128]; } ncclUniqueId;
typedef int ncclResult_t;   /* 0 = ncclSuccess */
enum { ncclInt8 = 0, ncclUint8 = 1, ncclInt64 = 4, ncclFloat32 = 7, ncclFloat64 = 8, ncclBfloat16 = 9 };
enum { ncclSum = 0, ncclAvg = 4 };
}

/* Where the toolkit's nccl.h is present, check the repeated values against it. */
#if defined(__has_include)
#if __has_include(<nccl.h>)
namespace nccl_header {
#include <nccl.h>
static_assert(ncclInt8 == 0 && ncclUint8 == 1 && ncclInt64 == 4 && ncclFloat32 == 7 && ncclFloat64 == 8 &&
              ncclBfloat16 == 9 && ncclSum == 0 && ncclAvg == 4 && NCCL_UNIQUE_ID_BYTES == 128,
              "nccl.h disagrees with the values repeated in cuda/nccl.cu");
}
#endif
#endif

static struct {
    int tried, ok;
    char why[512];
    ncclResult_t (*GetUniqueId)(ncclUniqueId *);
    ncclResult_t (*CommInitRank)(ncclComm_t *, int, ncclUniqueId, int);
    ncclResult_t (*CommDestroy)(ncclComm_t);
    ncclResult_t (*AllReduce)(const void *, void *, size_t, int, int, ncclComm_t, cudaStream_t);
    ncclResult_t (*Broadcast)(const void *, void *, size_t, int, int, ncclComm_t, cudaStream_t);
    ncclResult_t (*AllGather)(const void *, void *, size_t, int, ncclComm_t, cudaStream_t);
    ncclResult_t (*ReduceScatter)(const void *, void *, size_t, int, int, ncclComm_t, cudaStream_t);
    const char *(*GetErrorString)(ncclResult_t);
} N;

static int load_nccl(void) {
    if (N.tried) return N.ok;
    N.tried = 1;
    void *h = dlopen("libnccl.so.2", RTLD_NOW | RTLD_GLOBAL);
    if (!h) h = dlopen("/usr/local/cuda/lib64/libnccl.so.2", RTLD_NOW | RTLD_GLOBAL);   /* the toolkit's copy */
    if (!h) {
        snprintf(N.why, sizeof N.why, "nccl: libnccl.so.2 could not be loaded (%s); install NCCL on this machine "
                 "(it comes with the CUDA toolkit's libnccl2 package) or put its folder on LD_LIBRARY_PATH", dlerror());
        return 0;
    }
#define SYM(field, name) if (!(*(void **)&N.field = dlsym(h, name))) { \
        snprintf(N.why, sizeof N.why, "nccl: libnccl.so.2 has no %s (NCCL 2.10 or newer is needed)", name); return 0; }
    SYM(GetUniqueId, "ncclGetUniqueId") SYM(CommInitRank, "ncclCommInitRank") SYM(CommDestroy, "ncclCommDestroy")
    SYM(AllReduce, "ncclAllReduce") SYM(Broadcast, "ncclBroadcast") SYM(AllGather, "ncclAllGather")
    SYM(ReduceScatter, "ncclReduceScatter") SYM(GetErrorString, "ncclGetErrorString")
#undef SYM
    N.ok = 1;
    return 1;
}

#define NC_CHECK(call) do { ncclResult_t r_ = (call); \
    if (r_ != 0) return efla_fail("nccl: %s failed: %s", #call, N.GetErrorString(r_)); } while (0)

struct efla_nccl_comm {
    ncclComm_t comm;
    cudaStream_t stream;
    cudaEvent_t ready, done;
    int device, world, rank;
};

extern "C" int efla_nccl_available(void) {
    if (!load_nccl()) { efla_fail("%s", N.why); return 0; }
    return 1;
}

extern "C" int efla_nccl_unique_id(char *out) {
    if (!load_nccl()) return efla_fail("%s", N.why);
    ncclUniqueId id;
    NC_CHECK(N.GetUniqueId(&id));
    memcpy(out, id.internal, sizeof id.internal);
    return 0;
}

static int init_comm(efla_nccl_comm *c, const char *id128) {
    TRY(cu_set_device(c->device));
    CU_CHECK(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
    CU_CHECK(cudaEventCreateWithFlags(&c->ready, cudaEventDisableTiming));
    CU_CHECK(cudaEventCreateWithFlags(&c->done, cudaEventDisableTiming));
    ncclUniqueId id;
    memcpy(id.internal, id128, sizeof id.internal);
    NC_CHECK(N.CommInitRank(&c->comm, c->world, id, c->rank));
    return 0;
}

extern "C" efla_nccl_comm *efla_nccl_init(const char *id128, int world, int rank, int device) {
    if (!load_nccl()) return (efla_nccl_comm *)efla_fail_null("%s", N.why);
    if (world < 1 || rank < 0 || rank >= world)
        return (efla_nccl_comm *)efla_fail_null("nccl_init: rank %d is outside a world of size %d", rank, world);
    if (device < EFLA_DEVICE_CUDA0)
        return (efla_nccl_comm *)efla_fail_null("nccl_init: NCCL needs a CUDA device, got %s", efla_device_name(device));
    efla_nccl_comm *c = (efla_nccl_comm *)calloc(1, sizeof *c);
    if (!c) return (efla_nccl_comm *)efla_fail_null("nccl_init: out of memory");
    c->device = device; c->world = world; c->rank = rank;
    if (init_comm(c, id128) < 0) { efla_nccl_destroy(c); return NULL; }
    return c;
}

extern "C" void efla_nccl_destroy(efla_nccl_comm *c) {
    if (!c) return;
    if (c->comm) N.CommDestroy(c->comm);
    if (c->ready) cudaEventDestroy(c->ready);
    if (c->done) cudaEventDestroy(c->done);
    if (c->stream) cudaStreamDestroy(c->stream);
    free(c);
}

static int nccl_type(const char *op, const efla_tensor *t, int *out) {
    switch (t->dtype) {
    case EFLA_FLOAT32: *out = ncclFloat32; return 0;
    case EFLA_FLOAT64: *out = ncclFloat64; return 0;
    case EFLA_BFLOAT16: *out = ncclBfloat16; return 0;
    case EFLA_INT64: *out = ncclInt64; return 0;
    case EFLA_UINT8: case EFLA_BOOL: *out = ncclUint8; return 0;
    }
    return efla_fail("%s: unsupported dtype", op);
}

/* Checks a tensor and makes the comm stream wait for the default stream's queued work. */
static int prepare(const char *op, efla_nccl_comm *c, const efla_tensor *t, int *type) {
    if (!c) return efla_fail("%s: the communicator is closed", op);
    if (t->device != c->device)
        return efla_fail("%s: the tensor is on %s but the communicator on %s; move it with :to('%s')", op,
                         efla_device_name(t->device), efla_device_name(c->device), efla_device_name(c->device));
    if (!efla_tensor_is_contiguous(t))
        return efla_fail("%s: the tensor (shape %s) is not contiguous; pass t:contiguous()", op, efla_tshape(t));
    TRY(nccl_type(op, t, type));
    TRY(cu_set_device(c->device));
    CU_CHECK(cudaEventRecord(c->ready, 0));
    CU_CHECK(cudaStreamWaitEvent(c->stream, c->ready, 0));
    return 0;
}

static void *dptr(const efla_tensor *t) { return efla_cpu_ptr(t); }   /* same arithmetic on a device */

extern "C" int efla_nccl_all_reduce(efla_nccl_comm *c, efla_tensor *t, int average) {
    int type;
    TRY(prepare("nccl_all_reduce", c, t, &type));
    NC_CHECK(N.AllReduce(dptr(t), dptr(t), (size_t)efla_tensor_numel(t), type, average ? ncclAvg : ncclSum,
                         c->comm, c->stream));
    t->storage->version++;
    return 0;
}

extern "C" int efla_nccl_broadcast(efla_nccl_comm *c, efla_tensor *t, int root) {
    int type;
    if (root < 0 || (c && root >= c->world)) return efla_fail("nccl_broadcast: root %d is not a rank", root);
    TRY(prepare("nccl_broadcast", c, t, &type));
    NC_CHECK(N.Broadcast(dptr(t), dptr(t), (size_t)efla_tensor_numel(t), type, root, c->comm, c->stream));
    t->storage->version++;
    return 0;
}

extern "C" int efla_nccl_all_gather(efla_nccl_comm *c, const efla_tensor *in, efla_tensor *out) {
    int type, type2;
    TRY(prepare("nccl_all_gather", c, in, &type));
    TRY(prepare("nccl_all_gather", c, out, &type2));
    int64_t n = efla_tensor_numel(in);
    if (type != type2 || efla_tensor_numel(out) != n * c->world)
        return efla_fail("nccl_all_gather: the output (%s) must hold world_size (%d) x the input (%s) of the same dtype",
                         efla_tshape(out), c->world, efla_tshape(in));
    NC_CHECK(N.AllGather(dptr(in), dptr(out), (size_t)n, type, c->comm, c->stream));
    out->storage->version++;
    return 0;
}

extern "C" int efla_nccl_reduce_scatter(efla_nccl_comm *c, const efla_tensor *in, efla_tensor *out, int average) {
    int type, type2;
    TRY(prepare("nccl_reduce_scatter", c, in, &type));
    TRY(prepare("nccl_reduce_scatter", c, out, &type2));
    int64_t n = efla_tensor_numel(out);
    if (type != type2 || efla_tensor_numel(in) != n * c->world)
        return efla_fail("nccl_reduce_scatter: the input (%s) must hold world_size (%d) x the output (%s) of the same dtype",
                         efla_tshape(in), c->world, efla_tshape(out));
    NC_CHECK(N.ReduceScatter(dptr(in), dptr(out), (size_t)n, type, average ? ncclAvg : ncclSum, c->comm, c->stream));
    out->storage->version++;
    return 0;
}

extern "C" int efla_nccl_wait(efla_nccl_comm *c) {
    if (!c) return efla_fail("nccl_wait: the communicator is closed");
    TRY(cu_set_device(c->device));
    CU_CHECK(cudaEventRecord(c->done, c->stream));
    CU_CHECK(cudaStreamWaitEvent(0, c->done, 0));
    return 0;
}

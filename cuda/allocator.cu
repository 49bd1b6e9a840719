/* allocator.cu: the caching allocator for device memory.
 *
 * cudaMalloc/cudaFree are slow and cudaFree synchronises the device, so freed blocks go
 * to per-device free lists keyed by size class and are handed out again. All work runs
 * on the legacy default stream, so a block freed by the host can be reused by the next
 * kernel without further synchronisation.
 *
 * Size classes: requests are rounded up to 512 bytes below 1 MiB and to 2 MiB above it; a
 * cached block is reused for a request of its own class or one up to 1/8 smaller (so a
 * slightly smaller tensor can reuse a slightly larger block).
 *
 * On cudaMalloc failure: free every cached block, ask Lua for a full GC (the registered
 * callback, which may free tensors and so re-enter this allocator: the lock is not held
 * then), free the cache again and retry once; then fail with a message that says how much
 * is in use and cached. */
#include "common.cuh"
#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace {

const int MAX_DEVICES = 64;

struct Pool {
    std::mutex mu;
    std::multimap<size_t, void *> cached;        /* block size -> block */
    std::unordered_map<void *, size_t> live;     /* block -> block size */
    efla_memory_stats stats = {};
};

Pool *pools[MAX_DEVICES];
std::mutex pools_mu;

Pool *pool_of(int idx) {
    std::lock_guard<std::mutex> g(pools_mu);
    if (!pools[idx]) pools[idx] = new Pool();
    return pools[idx];
}

size_t round_size(size_t n) {
    const size_t small = 512, big = (size_t)2 << 20;
    if (n == 0) n = 1;   /* a valid pointer even for empty tensors */
    if (n <= ((size_t)1 << 20)) return (n + small - 1) / small * small;
    return (n + big - 1) / big * big;
}

/* Takes a cached block of at least `size` and at most size + size/8 bytes (lock held). */
void *take_cached(Pool *p, size_t size, size_t *got) {
    auto it = p->cached.lower_bound(size);
    if (it == p->cached.end() || it->first > size + size / 8) return nullptr;
    void *ptr = it->second;
    *got = it->first;
    p->stats.cached_bytes -= (int64_t)it->first;
    p->cached.erase(it);
    return ptr;
}

/* cudaFree every cached block of the pool (lock held; device current). */
void release_cache(Pool *p) {
    for (auto &kv : p->cached) cudaFree(kv.second);
    (void)cudaGetLastError();
    p->cached.clear();
    p->stats.cached_bytes = 0;
}

void record_live(Pool *p, void *ptr, size_t size) {
    p->live[ptr] = size;
    p->stats.live_bytes += (int64_t)size;
    if (p->stats.live_bytes > p->stats.peak_bytes) p->stats.peak_bytes = p->stats.live_bytes;
    p->stats.num_allocs++;
}

/* "1.50 GiB" */
const char *human(char *buf, size_t cap, double b) {
    const char *u[] = { "bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
    int i = 0;
    while (b >= 1024 && i < 6) { b /= 1024; i++; }
    snprintf(buf, cap, i ? "%.2f %s" : "%.0f %s", b, u[i]);
    return buf;
}

int check_device(const char *op, int device) {
    int idx = device - EFLA_DEVICE_CUDA0;
    if (idx < 0 || idx >= MAX_DEVICES)
        return efla_fail("%s: %s is not a CUDA device (pass EFLA_DEVICE_CUDA0 + index, e.g. 1 for cuda:0)",
                         op, efla_device_name(device));
    return 0;
}

} // namespace

extern "C" void *efla_cuda_alloc(size_t nbytes, int device) {
    if (check_device("alloc", device)) return NULL;
    Pool *p = pool_of(device - EFLA_DEVICE_CUDA0);
    if (nbytes > ((size_t)1 << 60)) {
        std::lock_guard<std::mutex> g(p->mu);
        p->stats.num_ooms++;
        char h[32];
        return efla_fail_null("out of memory on %s: asked for %zu bytes (%s), %lld in use, %lld cached; "
                              "that is more than any device has", efla_device_name(device), nbytes,
                              human(h, sizeof h, (double)nbytes), (long long)p->stats.live_bytes,
                              (long long)p->stats.cached_bytes);
    }
    size_t size = round_size(nbytes);
    {
        std::lock_guard<std::mutex> g(p->mu);
        size_t got = 0;
        void *ptr = take_cached(p, size, &got);
        if (ptr) {
            p->stats.num_cache_hits++;
            record_live(p, ptr, got);
            return ptr;
        }
    }
    if (cu_set_device(device)) return NULL;
    void *ptr = nullptr;
    cudaError_t e = cudaMalloc(&ptr, size);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        if (e != cudaErrorMemoryAllocation)
            return efla_fail_null("cuda: cudaMalloc(%zu bytes) on %s failed: %s", size,
                                  efla_device_name(device), cudaGetErrorString(e));
        { std::lock_guard<std::mutex> g(p->mu); release_cache(p); }
        efla_run_gc_callback();   /* may free tensors: re-enters efla_cuda_free */
        { std::lock_guard<std::mutex> g(p->mu); release_cache(p); }
        e = cudaMalloc(&ptr, size);
        if (e != cudaSuccess) {
            (void)cudaGetLastError();
            size_t free_b = 0, total_b = 0;
            cudaMemGetInfo(&free_b, &total_b);
            (void)cudaGetLastError();
            std::lock_guard<std::mutex> g(p->mu);
            p->stats.num_ooms++;
            char h1[32], h2[32], h3[32], h4[32];
            return efla_fail_null(
                "out of memory on %s: asked for %zu bytes (%s), %lld in use (%s), %lld cached; the device "
                "has %s free of %s. Release tensors you no longer need, or use a smaller batch",
                efla_device_name(device), nbytes, human(h1, sizeof h1, (double)nbytes),
                (long long)p->stats.live_bytes, human(h2, sizeof h2, (double)p->stats.live_bytes),
                (long long)p->stats.cached_bytes, human(h3, sizeof h3, (double)free_b),
                human(h4, sizeof h4, (double)total_b));
        }
    }
    std::lock_guard<std::mutex> g(p->mu);
    record_live(p, ptr, size);
    return ptr;
}

extern "C" void efla_cuda_free(void *ptr, size_t nbytes, int device) {
    (void)nbytes;
    if (!ptr || check_device("free", device)) return;
    Pool *p = pool_of(device - EFLA_DEVICE_CUDA0);
    std::lock_guard<std::mutex> g(p->mu);
    auto it = p->live.find(ptr);
    if (it == p->live.end()) return;   /* not ours: never free what we did not hand out */
    size_t size = it->second;
    p->live.erase(it);
    p->stats.live_bytes -= (int64_t)size;
    p->cached.emplace(size, ptr);
    p->stats.cached_bytes += (int64_t)size;
}

extern "C" int efla_cuda_backend_memory_stats(int device, efla_memory_stats *stats) {
    if (check_device("cuda_memory_stats", device)) return -1;
    if (!stats) return efla_fail("cuda_memory_stats: stats is NULL");
    Pool *p = pool_of(device - EFLA_DEVICE_CUDA0);
    std::lock_guard<std::mutex> g(p->mu);
    *stats = p->stats;
    return 0;
}

extern "C" int efla_cuda_backend_empty_cache(int device) {
    if (check_device("cuda_empty_cache", device)) return -1;
    Pool *p = pool_of(device - EFLA_DEVICE_CUDA0);
    std::lock_guard<std::mutex> g(p->mu);
    if (p->cached.empty()) return 0;
    TRY(cu_set_device(device));
    release_cache(p);
    return 0;
}

/* ---- the public functions (efla.h); device is EFLA_DEVICE_CUDA0 + index ---------------------- */
extern "C" int efla_cuda_memory_stats(int device, efla_memory_stats *stats) {
    if (!efla_backend_for("cuda_memory_stats", device)) return -1;
    return efla_cuda_backend_memory_stats(device, stats);
}

extern "C" int efla_cuda_empty_cache(int device) {
    if (!efla_backend_for("cuda_empty_cache", device)) return -1;
    return efla_cuda_backend_empty_cache(device);
}

extern "C" int efla_cuda_reset_peak(int device) {
    if (!efla_backend_for("cuda_reset_peak", device)) return -1;
    if (check_device("cuda_reset_peak", device)) return -1;
    Pool *p = pool_of(device - EFLA_DEVICE_CUDA0);
    std::lock_guard<std::mutex> g(p->mu);
    p->stats.peak_bytes = p->stats.live_bytes;
    return 0;
}

/* memory.c: CPU storage allocation, 64-byte aligned (AVX-512 friendly) and counted. */
#include "cpu_kernels.h"
#include <malloc.h>
#include <stdlib.h>
#include <stdatomic.h>

static atomic_llong live_bytes;

/* glibc serves large blocks with fresh mmaps and returns them on free, so every large
 * temporary pays its page faults again (out-of-place ops ran 4x slower than in place).
 * Keep blocks up to 256 MiB in the heap and let freed memory stay for reuse. */
__attribute__((constructor)) static void keep_large_blocks(void) {
    mallopt(M_MMAP_THRESHOLD, 256 << 20);
    mallopt(M_TRIM_THRESHOLD, 512 << 20);
}

void *efla_cpu_alloc(size_t nbytes, int device) {
    (void)device;
    size_t rounded = (nbytes + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, rounded ? rounded : 64);
    if (!p)
        return efla_fail_null("out of memory: could not allocate %zu bytes on the cpu "
                              "(%lld bytes already held by tensors)", nbytes,
                              (long long)atomic_load(&live_bytes));
    atomic_fetch_add(&live_bytes, (long long)nbytes);
    return p;
}

void efla_cpu_free(void *ptr, size_t nbytes, int device) {
    (void)device;
    if (!ptr) return;
    atomic_fetch_sub(&live_bytes, (long long)nbytes);
    free(ptr);
}

int64_t efla_cpu_live_bytes(void) { return atomic_load(&live_bytes); }

/* rng.c: the global counter-based generator (Philox4x32-10). A draw of n elements takes
 * counters [offset, offset+n); element i depends only on (seed, offset+i), so the same seed
 * gives the same numbers on every device and for any thread count. */
#include "backend.h"
#include <stdatomic.h>

static uint64_t rng_seed = 0x853c49e6748fea9bULL;
static uint64_t rng_offset;

void efla_manual_seed(uint64_t seed) { rng_seed = seed; rng_offset = 0; }
void efla_rng_get_state(uint64_t *seed, uint64_t *offset) { *seed = rng_seed; *offset = rng_offset; }
void efla_rng_set_state(uint64_t seed, uint64_t offset) { rng_seed = seed; rng_offset = offset; }

uint64_t efla_rng_reserve(uint64_t n, uint64_t *seed) {
    uint64_t start = rng_offset;
    rng_offset += n;
    *seed = rng_seed;
    return start;
}

static efla_tensor *draw(const char *op, int ndim, const int64_t *shape, efla_dtype dtype, int device,
                         int dist, double p0, double p1) {
    efla_tensor *t = efla_empty(ndim, shape, dtype, device);
    if (!t) return NULL;
    const efla_backend *b = efla_backend_for(op, device);
    if (!b->rand) { efla_no_kernel(op, device); efla_tensor_release(t); return NULL; }
    uint64_t seed, offset = efla_rng_reserve((uint64_t)efla_tensor_numel(t), &seed);
    if (efla_tensor_numel(t) && b->rand(t, dist, seed, offset, p0, p1)) { efla_tensor_release(t); return NULL; }
    return t;
}

efla_tensor *efla_rand(int ndim, const int64_t *shape, efla_dtype dtype, int device) {
    if (!efla_dtype_is_floating(dtype)) return efla_fail_null("rand: dtype must be floating, not %s", efla_dtype_name(dtype));
    return draw("rand", ndim, shape, dtype, device, EFLA_RAND_UNIFORM, 0, 1);
}
efla_tensor *efla_randn(int ndim, const int64_t *shape, efla_dtype dtype, int device) {
    if (!efla_dtype_is_floating(dtype)) return efla_fail_null("randn: dtype must be floating, not %s", efla_dtype_name(dtype));
    return draw("randn", ndim, shape, dtype, device, EFLA_RAND_NORMAL, 0, 1);
}
efla_tensor *efla_bernoulli(int ndim, const int64_t *shape, double p, efla_dtype dtype, int device) {
    if (!(p >= 0 && p <= 1)) return efla_fail_null("bernoulli: p = %g is not a probability in [0, 1]", p);
    return draw("bernoulli", ndim, shape, dtype, device, EFLA_RAND_BERNOULLI, p, 0);
}
efla_tensor *efla_randint(int64_t low, int64_t high, int ndim, const int64_t *shape, int device) {
    if (high <= low) return efla_fail_null("randint: empty range [%lld, %lld)", (long long)low, (long long)high);
    return draw("randint", ndim, shape, EFLA_INT64, device, EFLA_RAND_INT, (double)low, (double)high);
}

/* Fisher-Yates on the host driven by Philox, so the permutation is device independent. */
efla_tensor *efla_randperm(int64_t n, int device) {
    if (n < 0) return efla_fail_null("randperm: n must be >= 0, got %lld", (long long)n);
    efla_tensor *t = efla_empty(1, &n, EFLA_INT64, EFLA_DEVICE_CPU);
    if (!t) return NULL;
    int64_t *p = (int64_t *)efla_cpu_ptr(t);
    for (int64_t i = 0; i < n; i++) p[i] = i;
    uint64_t seed, offset = efla_rng_reserve((uint64_t)n, &seed);
    for (int64_t i = n - 1; i > 0; i--) {
        uint32_t r[4];
        efla_philox4x32(offset + (uint64_t)i, seed, r);
        uint64_t x = ((uint64_t)r[0] << 32) | r[1];
        int64_t j = (int64_t)(x % (uint64_t)(i + 1));
        int64_t tmp = p[i]; p[i] = p[j]; p[j] = tmp;
    }
    if (device == EFLA_DEVICE_CPU) return t;
    efla_tensor *d = efla_to(t, EFLA_INT64, device);
    efla_tensor_release(t);
    return d;
}

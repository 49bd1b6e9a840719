/* internal.h: what every file of core/ (and the CUDA backend) shares but users never see:
 * the tensor and storage structs, the error helpers, and small shape utilities. */
#ifndef EFLA_INTERNAL_H
#define EFLA_INTERNAL_H

#include "efla.h"
#include <stdarg.h>
#include <stdbool.h>
#include <stdatomic.h>

/* A storage is a refcounted block of memory on one device. `version` counts in-place
 * changes; autograd compares it with the value seen when a tensor was saved. */
typedef struct efla_storage {
    atomic_int refcount;
    void *data;
    size_t nbytes;
    int device;
    int64_t version;
} efla_storage;

/* A tensor is a strided view over a storage. Autograd fields: a tensor either is a leaf
 * (grad_fn == NULL) or the output `output_nr` of node grad_fn. */
struct efla_tensor {
    atomic_int refcount;
    efla_storage *storage;
    int64_t offset;                    /* in elements */
    int ndim;
    int64_t shape[EFLA_MAX_DIMS];
    int64_t strides[EFLA_MAX_DIMS];    /* in elements */
    efla_dtype dtype;
    int device;
    bool requires_grad;
    efla_tensor *grad;                 /* leaves: accumulated gradient (owned ref) */
    efla_node *grad_fn;                /* owned ref */
    int output_nr;
    int grad_pending;                  /* leaves, during a backward: edges not yet accumulated */
};

/* ---- errors (core/error.c) ---------------------------------------------------------- */
/* Sets the thread's message and returns -1, so `return efla_fail(...)` reads well.
 * Convention for messages: "<op>: <what is wrong, with shapes/dtypes>; <how to fix>". */
int efla_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Same, returning NULL, for functions that return pointers. */
void *efla_fail_null(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prefix the current message with "<op>: " (used when a nested call failed). */
void efla_error_prefix(const char *op);

/* ---- shapes (core/shape.c) ------------------------------------------------------------ */
/* Writes "[2,3,4]" into buf (returns buf). */
char *efla_shape_str(char *buf, size_t cap, int ndim, const int64_t *shape);
#define EFLA_SHAPE_BUF 96
/* Formats a tensor's shape, e.g. SHAPE(t) inside a printf argument list; uses a rotating
 * set of thread-local buffers so that several can appear in one message. */
const char *efla_tshape(const efla_tensor *t);
const char *efla_device_name(int device);   /* "cpu", "cuda:0" ... (rotating buffer) */
int64_t efla_numel_of(int ndim, const int64_t *shape);
void efla_contiguous_strides(int ndim, const int64_t *shape, int64_t *strides);
/* Normalise a possibly negative dim; error naming `op` when out of range. */
int efla_wrap_dim(const char *op, int dim, int ndim, int *out);
/* Broadcast two shapes; error naming op and both shapes when they don't broadcast. */
int efla_broadcast_shapes(const char *op, int na, const int64_t *sa, int nb, const int64_t *sb,
                          int *nout, int64_t *out);
efla_dtype efla_promote_types(efla_dtype a, efla_dtype b);

/* ---- tensor internals (core/tensor.c) ---------------------------------------------------- */
efla_storage *efla_storage_new(size_t nbytes, int device);
void efla_storage_release(efla_storage *s);
/* A new tensor struct viewing `storage` (takes a new storage reference). */
efla_tensor *efla_tensor_make_view(efla_storage *storage, int64_t offset, int ndim,
                                   const int64_t *shape, const int64_t *strides,
                                   efla_dtype dtype, int device);
/* Same storage, shape and strides as t; no autograd history. */
efla_tensor *efla_tensor_alias(const efla_tensor *t);
/* A contiguous tensor with t's values and no autograd history (a new ref of t's storage when
 * it already is contiguous): what kernels taking raw buffers are handed. core/autograd.c */
efla_tensor *efla_plain(const efla_tensor *t);
/* Mark an in-place write on t's storage. */
static inline void efla_bump_version(efla_tensor *t) { t->storage->version++; }
/* Check that two tensors live on one device; error names op. */
int efla_check_same_device(const char *op, const efla_tensor *a, const efla_tensor *b);
/* Element address on the CPU. */
static inline char *efla_cpu_ptr(const efla_tensor *t) {
    return (char *)t->storage->data + t->offset * (int64_t)efla_dtype_size(t->dtype);
}
/* An empty tensor with t's dtype and device and the given shape. */
efla_tensor *efla_empty_like_shape(const efla_tensor *t, int ndim, const int64_t *shape, efla_dtype dtype);

/* bfloat16 <-> float32 (round to nearest even; NaN stays NaN). */
static inline float efla_bf16_to_f32(uint16_t h) {
    union { uint32_t u; float f; } x; x.u = (uint32_t)h << 16; return x.f;
}
static inline uint16_t efla_f32_to_bf16(float f) {
    union { uint32_t u; float f; } x; x.f = f;
    if ((x.u & 0x7f800000u) == 0x7f800000u && (x.u & 0x007fffffu)) return (uint16_t)((x.u >> 16) | 0x40);
    uint32_t rounding = 0x7fffu + ((x.u >> 16) & 1u);
    return (uint16_t)((x.u + rounding) >> 16);
}
/* Read / write one element of any dtype as double (slow paths, tests, item()). */
double efla_load_as_double(const void *p, efla_dtype dtype);
void efla_store_from_double(void *p, efla_dtype dtype, double v);

/* ---- autograd internals (core/autograd.c) ------------------------------------------------ */
/* True when grad mode is on and any of the inputs requires grad. */
bool efla_any_requires_grad(int n, efla_tensor *const *inputs);

/* ---- random (core/rng.c) ---------------------------------------------------------------- */
/* Reserve n counters from the global generator: returns the starting offset. */
uint64_t efla_rng_reserve(uint64_t n, uint64_t *seed);
/* Philox4x32-10: four 32-bit outputs for counter ctr under key seed. Inline so that the
 * CPU rand loops vectorise; cuda/elementwise.cu repeats it as device code. */
static inline void efla_philox4x32(uint64_t ctr, uint64_t seed, uint32_t out[4]) {
    uint32_t c0 = (uint32_t)ctr, c1 = (uint32_t)(ctr >> 32), c2 = 0, c3 = 0;
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)0xD2511F53u * c0, p1 = (uint64_t)0xCD9E8D57u * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c1 = (uint32_t)p1; c3 = (uint32_t)p0; c0 = n0; c2 = n2;
        k0 += 0x9E3779B9u; k1 += 0xBB67AE85u;
    }
    out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

/* core/ops_nn.c: t with dim d swapped to the end, contiguous (new ref), and the inverse
 * (consumes t); for kernels that work along the last dim. */
efla_tensor *efla_dim_last(const efla_tensor *t, int d);
efla_tensor *efla_dim_back(efla_tensor *t, int d);

#endif

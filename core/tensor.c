/* tensor.c: storages, the tensor struct, metadata, creation, buffers, casts and moves. */
#include "autograd.h"
#include "backend.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

static atomic_llong live_tensors;
/* bytes of device (non-CPU) storages alive: Lua's collector sees only the small tensor boxes,
 * so lua/efla/tensor.lua collects when this grows (a training loop's dropped graphs would
 * otherwise hold their activations until the collector happens to run) */
static atomic_llong device_live_bytes;

/* ---- dtypes ----------------------------------------------------------------------------- */
static const char *const dtype_names[] = { "float32", "float64", "bfloat16", "int64", "uint8", "bool" };
static const size_t dtype_sizes[] = { 4, 8, 2, 8, 1, 1 };

static bool valid_dtype(efla_dtype d) { return (unsigned)d <= EFLA_BOOL; }
const char *efla_dtype_name(efla_dtype d) { return valid_dtype(d) ? dtype_names[d] : "?"; }
size_t efla_dtype_size(efla_dtype d) { return valid_dtype(d) ? dtype_sizes[d] : 0; }
int efla_dtype_is_floating(efla_dtype d) { return d == EFLA_FLOAT32 || d == EFLA_FLOAT64 || d == EFLA_BFLOAT16; }
int efla_dtype_from_name(const char *name) {
    for (int i = 0; i <= EFLA_BOOL; i++)
        if (!strcmp(name, dtype_names[i])) return i;
    if (!strcmp(name, "float")) return EFLA_FLOAT32;
    if (!strcmp(name, "double")) return EFLA_FLOAT64;
    if (!strcmp(name, "long")) return EFLA_INT64;
    return efla_fail("unknown dtype '%s' (use float32, float64, bfloat16, int64, uint8 or bool)", name);
}

double efla_load_as_double(const void *p, efla_dtype d) {
    switch (d) {
    case EFLA_FLOAT32: return *(const float *)p;
    case EFLA_FLOAT64: return *(const double *)p;
    case EFLA_BFLOAT16: return efla_bf16_to_f32(*(const uint16_t *)p);
    case EFLA_INT64: return (double)*(const int64_t *)p;
    case EFLA_UINT8: return *(const uint8_t *)p;
    case EFLA_BOOL: return *(const uint8_t *)p ? 1.0 : 0.0;
    }
    return NAN;
}

void efla_store_from_double(void *p, efla_dtype d, double v) {
    switch (d) {
    case EFLA_FLOAT32: *(float *)p = (float)v; break;
    case EFLA_FLOAT64: *(double *)p = v; break;
    case EFLA_BFLOAT16: *(uint16_t *)p = efla_f32_to_bf16((float)v); break;
    case EFLA_INT64: *(int64_t *)p = isnan(v) ? 0 : (int64_t)v; break;
    case EFLA_UINT8: *(uint8_t *)p = (uint8_t)(int64_t)v; break;
    case EFLA_BOOL: *(uint8_t *)p = v != 0; break;
    }
}

/* ---- storage ------------------------------------------------------------------------------- */
efla_storage *efla_storage_new(size_t nbytes, int device) {
    const efla_backend *b = efla_backend_for("alloc", device);
    if (!b) return NULL;
    efla_storage *s = calloc(1, sizeof *s);
    if (!s) return efla_fail_null("out of memory allocating a storage header");
    s->data = b->alloc(nbytes, device);
    if (!s->data) { free(s); return NULL; }
    atomic_init(&s->refcount, 1);
    s->nbytes = nbytes;
    s->device = device;
    if (device != EFLA_DEVICE_CPU) atomic_fetch_add(&device_live_bytes, (long long)nbytes);
    return s;
}

void efla_storage_release(efla_storage *s) {
    if (!s || atomic_fetch_sub(&s->refcount, 1) != 1) return;
    const efla_backend *b = efla_backend_for("free", s->device);
    if (b) b->free(s->data, s->nbytes, s->device);
    if (s->device != EFLA_DEVICE_CPU) atomic_fetch_sub(&device_live_bytes, (long long)s->nbytes);
    free(s);
}

int64_t efla_device_live_bytes(void) { return atomic_load(&device_live_bytes); }

/* ---- tensor structs ------------------------------------------------------------------------- */
efla_tensor *efla_tensor_make_view(efla_storage *storage, int64_t offset, int ndim, const int64_t *shape,
                                   const int64_t *strides, efla_dtype dtype, int device) {
    efla_tensor *t = calloc(1, sizeof *t);
    if (!t) return efla_fail_null("out of memory allocating a tensor header");
    atomic_init(&t->refcount, 1);
    atomic_fetch_add(&storage->refcount, 1);
    t->storage = storage;
    t->offset = offset;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) { t->shape[i] = shape[i]; t->strides[i] = strides[i]; }
    t->dtype = dtype;
    t->device = device;
    atomic_fetch_add(&live_tensors, 1);
    return t;
}

efla_tensor *efla_tensor_alias(const efla_tensor *t) {
    return efla_tensor_make_view(t->storage, t->offset, t->ndim, t->shape, t->strides, t->dtype, t->device);
}

void efla_tensor_retain(efla_tensor *t) { if (t) atomic_fetch_add(&t->refcount, 1); }

void efla_tensor_release(efla_tensor *t) {
    if (!t || atomic_fetch_sub(&t->refcount, 1) != 1) return;
    efla_storage_release(t->storage);
    efla_tensor_release(t->grad);
    efla_node_release(t->grad_fn);
    atomic_fetch_sub(&live_tensors, 1);
    free(t);
}

int64_t efla_live_tensors(void) { return atomic_load(&live_tensors); }

int efla_tensor_ndim(const efla_tensor *t) { return t->ndim; }
int64_t efla_tensor_size(const efla_tensor *t, int dim) {
    int d;
    if (efla_wrap_dim("size", dim, t->ndim, &d)) return -1;
    return t->ndim ? t->shape[d] : 1;
}
int64_t efla_tensor_stride(const efla_tensor *t, int dim) {
    int d;
    if (efla_wrap_dim("stride", dim, t->ndim, &d)) return -1;
    return t->ndim ? t->strides[d] : 1;
}
int64_t efla_tensor_offset(const efla_tensor *t) { return t->offset; }
int64_t efla_tensor_numel(const efla_tensor *t) { return efla_numel_of(t->ndim, t->shape); }
efla_dtype efla_tensor_dtype(const efla_tensor *t) { return t->dtype; }
int efla_tensor_device(const efla_tensor *t) { return t->device; }
int64_t efla_tensor_version(const efla_tensor *t) { return t->storage->version; }
int efla_tensor_same_storage(const efla_tensor *a, const efla_tensor *b) { return a->storage == b->storage; }
void *efla_tensor_data(const efla_tensor *t) {
    return t->device == EFLA_DEVICE_CPU ? efla_cpu_ptr(t) : NULL;
}

int efla_tensor_is_contiguous(const efla_tensor *t) {
    if (efla_tensor_numel(t) == 0) return 1;   /* nothing to lay out */
    int64_t expect = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] == 1) continue;
        if (t->strides[i] != expect) return 0;
        expect *= t->shape[i];
    }
    return 1;
}

int efla_check_same_device(const char *op, const efla_tensor *a, const efla_tensor *b) {
    if (a->device != b->device)
        return efla_fail("%s: tensors are on different devices (%s and %s); move one with :to() first",
                         op, efla_device_name(a->device), efla_device_name(b->device));
    return 0;
}

/* ---- creation --------------------------------------------------------------------------------- */
static int check_shape(const char *op, int ndim, const int64_t *shape) {
    if (ndim < 0 || ndim > EFLA_MAX_DIMS)
        return efla_fail("%s: %d dims asked; tensors have 0 to %d dims", op, ndim, EFLA_MAX_DIMS);
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 0) {
            char s[EFLA_SHAPE_BUF];
            return efla_fail("%s: negative size %lld at dim %d of %s", op, (long long)shape[i], i,
                             efla_shape_str(s, sizeof s, ndim, shape));
        }
    return 0;
}

efla_tensor *efla_empty(int ndim, const int64_t *shape, efla_dtype dtype, int device) {
    if (check_shape("empty", ndim, shape)) return NULL;
    if (!valid_dtype(dtype)) return efla_fail_null("empty: invalid dtype %d", (int)dtype);
    /* The element and byte counts must not wrap around (a wrapped size would allocate a
     * small block and let kernels write far past it). */
    int64_t n = 1, nbytes;
    bool overflow = false;
    for (int i = 0; i < ndim && !overflow; i++) overflow = __builtin_mul_overflow(n, shape[i], &n);
    if (overflow || __builtin_mul_overflow(n, (int64_t)efla_dtype_size(dtype), &nbytes)) {
        char b[EFLA_SHAPE_BUF];
        return efla_fail_null("empty: shape %s of %s is too large to address (more than 2^63 bytes); "
                              "out of memory", efla_shape_str(b, sizeof b, ndim, shape), efla_dtype_name(dtype));
    }
    efla_storage *s = efla_storage_new((size_t)nbytes, device);
    if (!s) return NULL;
    int64_t strides[EFLA_MAX_DIMS];
    efla_contiguous_strides(ndim, shape, strides);
    efla_tensor *t = efla_tensor_make_view(s, 0, ndim, shape, strides, dtype, device);
    efla_storage_release(s);
    return t;
}

efla_tensor *efla_empty_like_shape(const efla_tensor *t, int ndim, const int64_t *shape, efla_dtype dtype) {
    return efla_empty(ndim, shape, dtype, t->device);
}

int efla_fill_(efla_tensor *t, double value) {
    const efla_backend *b = efla_backend_for("fill_", t->device);
    if (!b) return -1;
    if (!b->fill) return efla_no_kernel("fill_", t->device);
    if (efla_tensor_numel(t) == 0) return 0;
    int rc = b->fill(t, value);
    efla_bump_version(t);
    return rc;
}
int efla_zero_(efla_tensor *t) { return efla_fill_(t, 0); }

efla_tensor *efla_full(int ndim, const int64_t *shape, double value, efla_dtype dtype, int device) {
    efla_tensor *t = efla_empty(ndim, shape, dtype, device);
    if (t && efla_fill_(t, value)) { efla_tensor_release(t); return NULL; }
    return t;
}
efla_tensor *efla_zeros(int ndim, const int64_t *shape, efla_dtype dtype, int device) {
    return efla_full(ndim, shape, 0, dtype, device);
}
efla_tensor *efla_ones(int ndim, const int64_t *shape, efla_dtype dtype, int device) {
    return efla_full(ndim, shape, 1, dtype, device);
}
efla_tensor *efla_scalar(double value, efla_dtype dtype, int device) {
    return efla_full(0, NULL, value, dtype, device);
}

efla_tensor *efla_arange(double start, double end, double step, efla_dtype dtype, int device) {
    if (step == 0 || !isfinite(start) || !isfinite(end) || !isfinite(step))
        return efla_fail_null("arange: start %g, end %g, step %g: need finite bounds and a nonzero step",
                              start, end, step);
    double count = ceil((end - start) / step);
    if (count < 0) count = 0;
    int64_t n = (int64_t)count;
    efla_tensor *t = efla_empty(1, &n, dtype, device);
    if (!t) return NULL;
    const efla_backend *b = efla_backend_for("arange", device);
    if (!b->arange) { efla_no_kernel("arange", device); efla_tensor_release(t); return NULL; }
    if (n && b->arange(t, start, step)) { efla_tensor_release(t); return NULL; }
    return t;
}

efla_tensor *efla_linspace(double start, double end, int64_t steps, efla_dtype dtype, int device) {
    if (steps < 0) return efla_fail_null("linspace: steps must be >= 0, got %lld", (long long)steps);
    efla_tensor *t = efla_empty(1, &steps, dtype, device);
    if (!t) return NULL;
    const efla_backend *b = efla_backend_for("linspace", device);
    if (!b->arange) { efla_no_kernel("linspace", device); efla_tensor_release(t); return NULL; }
    double step = steps > 1 ? (end - start) / (double)(steps - 1) : 0;
    if (steps && b->arange(t, start, step)) { efla_tensor_release(t); return NULL; }
    return t;
}

/* ---- buffers and elements ------------------------------------------------------------------------ */
efla_tensor *efla_from_buffer(int ndim, const int64_t *shape, efla_dtype dtype, const void *data, size_t nbytes) {
    if (check_shape("from_buffer", ndim, shape)) return NULL;
    size_t need = (size_t)efla_numel_of(ndim, shape) * efla_dtype_size(dtype);
    if (nbytes != need) {
        char s[EFLA_SHAPE_BUF];
        return efla_fail_null("from_buffer: %zu bytes given, but shape %s of %s needs %zu", nbytes,
                              efla_shape_str(s, sizeof s, ndim, shape), efla_dtype_name(dtype), need);
    }
    if (need && !data) return efla_fail_null("from_buffer: data is missing (NULL) but shape %s needs %zu bytes",
                                             efla_shape_str((char[EFLA_SHAPE_BUF]){0}, EFLA_SHAPE_BUF, ndim, shape), need);
    efla_tensor *t = efla_empty(ndim, shape, dtype, EFLA_DEVICE_CPU);
    if (t && need) memcpy(t->storage->data, data, need);
    return t;
}

int efla_to_buffer(const efla_tensor *t, void *data, size_t nbytes) {
    size_t need = (size_t)efla_tensor_numel(t) * efla_dtype_size(t->dtype);
    if (nbytes != need)
        return efla_fail("to_buffer: buffer of %zu bytes given, tensor %s of %s needs %zu", nbytes,
                         efla_tshape(t), efla_dtype_name(t->dtype), need);
    efla_tensor *c = efla_contiguous(t);
    if (!c) return -1;
    int rc = 0;
    if (need) {
        if (c->device == EFLA_DEVICE_CPU) memcpy(data, efla_cpu_ptr(c), need);
        else {
            const efla_backend *b = efla_backend_for("to_buffer", c->device);
            rc = b ? b->memcpy_d2h(data, (char *)c->storage->data + c->offset * (int64_t)efla_dtype_size(c->dtype),
                                   need, c->device) : -1;
        }
    }
    efla_tensor_release(c);
    return rc;
}

static int element_offset(const char *op, const efla_tensor *t, const int64_t *index, int64_t *off) {
    int64_t o = t->offset;
    for (int d = 0; d < t->ndim; d++) {
        if (index[d] < 0 || index[d] >= t->shape[d])
            return efla_fail("%s: index %lld is out of range for dim %d of size %lld (shape %s)", op,
                             (long long)index[d], d, (long long)t->shape[d], efla_tshape(t));
        o += index[d] * t->strides[d];
    }
    *off = o;
    return 0;
}

int efla_get(const efla_tensor *t, const int64_t *index, double *out) {
    int64_t off = 0;
    if (element_offset("get", t, index, &off)) return -1;
    size_t es = efla_dtype_size(t->dtype);
    if (t->device == EFLA_DEVICE_CPU) {
        *out = efla_load_as_double((char *)t->storage->data + off * (int64_t)es, t->dtype);
        return 0;
    }
    char buf[8];
    const efla_backend *b = efla_backend_for("get", t->device);
    if (!b || b->memcpy_d2h(buf, (char *)t->storage->data + off * (int64_t)es, es, t->device)) return -1;
    *out = efla_load_as_double(buf, t->dtype);
    return 0;
}

int efla_set(efla_tensor *t, const int64_t *index, double value) {
    int64_t off = 0;
    if (element_offset("set", t, index, &off)) return -1;
    size_t es = efla_dtype_size(t->dtype);
    char buf[8];
    efla_store_from_double(buf, t->dtype, value);
    int rc = 0;
    if (t->device == EFLA_DEVICE_CPU) memcpy((char *)t->storage->data + off * (int64_t)es, buf, es);
    else {
        const efla_backend *b = efla_backend_for("set", t->device);
        rc = b ? b->memcpy_h2d((char *)t->storage->data + off * (int64_t)es, buf, es, t->device) : -1;
    }
    efla_bump_version(t);
    return rc;
}

int efla_item(const efla_tensor *t, double *out) {
    if (efla_tensor_numel(t) != 1)
        return efla_fail("item: the tensor has shape %s (%lld elements); item() needs exactly one",
                         efla_tshape(t), (long long)efla_tensor_numel(t));
    int64_t zeros[EFLA_MAX_DIMS] = {0};
    return efla_get(t, zeros, out);
}

/* ---- copies, casts, moves ------------------------------------------------------------------------- */
/* dst and src have the same shape here; devices may differ. */
static int copy_same_shape(efla_tensor *dst, const efla_tensor *src) {
    if (dst->device == src->device) {
        const efla_backend *b = efla_backend_for("copy_", dst->device);
        if (!b) return -1;
        if (!b->copy) return efla_no_kernel("copy_", dst->device);
        return b->copy(dst, src);
    }
    /* Across devices: make a contiguous image of src in dst's dtype on src's device, move the
     * bytes, then copy into dst's strides on its own device. */
    efla_tensor *img = efla_empty(src->ndim, src->shape, dst->dtype, src->device);
    efla_tensor *landed = efla_empty(src->ndim, src->shape, dst->dtype, dst->device);
    int rc = (!img || !landed) ? -1 : copy_same_shape(img, src);
    size_t n = (size_t)efla_tensor_numel(src) * efla_dtype_size(dst->dtype);
    if (!rc && n) {
        if (src->device == EFLA_DEVICE_CPU) {
            const efla_backend *b = efla_backend_for("copy_", dst->device);
            rc = b ? b->memcpy_h2d(landed->storage->data, img->storage->data, n, dst->device) : -1;
        } else if (dst->device == EFLA_DEVICE_CPU) {
            const efla_backend *b = efla_backend_for("copy_", src->device);
            rc = b ? b->memcpy_d2h(landed->storage->data, img->storage->data, n, src->device) : -1;
        } else {
            rc = efla_fail("copy_: direct copies between two CUDA devices are not supported; go through the cpu");
        }
    }
    if (!rc) rc = copy_same_shape(dst, landed);
    efla_tensor_release(img);
    efla_tensor_release(landed);
    return rc;
}

int efla_copy_(efla_tensor *dst, const efla_tensor *src) {
    int n;
    int64_t shape[EFLA_MAX_DIMS];
    if (efla_broadcast_shapes("copy_", dst->ndim, dst->shape, src->ndim, src->shape, &n, shape)) return -1;
    if (n != dst->ndim || memcmp(shape, dst->shape, sizeof(int64_t) * (size_t)n))
        return efla_fail("copy_: source of shape %s does not broadcast to the destination's %s",
                         efla_tshape(src), efla_tshape(dst));
    if (efla_grad_enabled() && dst->requires_grad && !dst->grad_fn)
        return efla_fail("copy_: in-place write into a leaf that requires grad; do it inside no_grad");
    /* copy_ records no history: writing into a tensor that requires grad (e.g. a view of such
     * a leaf) would silently change its values under autograd's feet. */
    if (efla_grad_enabled() && dst->requires_grad)
        return efla_fail("copy_: in-place write into a tensor (shape %s) that requires grad (output of %s); "
                         "copy_ is not recorded by autograd: do it inside no_grad, or build a new tensor",
                         efla_tshape(dst), dst->grad_fn->name);
    efla_tensor *s = efla_expand(src, dst->ndim, dst->shape);
    if (!s) return -1;
    efla_tensor *plain = efla_tensor_alias(s);  /* the kernel needs no history */
    efla_tensor_release(s);
    if (!plain) return -1;
    int rc = efla_tensor_numel(dst) ? copy_same_shape(dst, plain) : 0;
    efla_tensor_release(plain);
    efla_bump_version(dst);
    return rc;
}

static int copy_backward(efla_node *n, efla_tensor *const *go, efla_tensor **gi) {
    const efla_meta *m = &n->in_meta[0];
    gi[0] = efla_to(go[0], m->dtype, m->device);
    return gi[0] ? 0 : -1;
}

/* A new tensor (contiguous) holding t's values as `dtype` on `device`; differentiable. */
static efla_tensor *copy_as(const char *op, const efla_tensor *t, efla_dtype dtype, int device) {
    efla_tensor *out = efla_empty(t->ndim, t->shape, dtype, device);
    if (!out) return NULL;
    if (efla_tensor_numel(t) && copy_same_shape(out, t)) { efla_error_prefix(op); efla_tensor_release(out); return NULL; }
    if (efla_dtype_is_floating(dtype) && efla_record1(op, copy_backward, 1, (efla_tensor *const *)&t, out, NULL)) {
        efla_tensor_release(out);
        return NULL;
    }
    return out;
}

efla_tensor *efla_contiguous(const efla_tensor *t) {
    if (efla_tensor_is_contiguous(t)) { efla_tensor_retain((efla_tensor *)t); return (efla_tensor *)t; }
    return copy_as("contiguous", t, t->dtype, t->device);
}

efla_tensor *efla_clone(const efla_tensor *t) { return copy_as("clone", t, t->dtype, t->device); }

efla_tensor *efla_to(const efla_tensor *t, efla_dtype dtype, int device) {
    if (!valid_dtype(dtype)) return efla_fail_null("to: invalid dtype %d", (int)dtype);
    if (device != EFLA_DEVICE_CPU && !efla_backend_for("to", device)) return NULL;
    if (t->dtype == dtype && t->device == device) { efla_tensor_retain((efla_tensor *)t); return (efla_tensor *)t; }
    return copy_as("to", t, dtype, device);
}

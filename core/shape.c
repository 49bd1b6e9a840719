/* shape.c: shape arithmetic shared by every front end: formatting for messages, dim
 * wrapping, broadcasting and dtype promotion. */
#include "internal.h"
#include <stdio.h>
#include <string.h>

char *efla_shape_str(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t n = 0;
    n += (size_t)snprintf(buf + n, cap - n, "[");
    for (int i = 0; i < ndim && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, i ? ",%lld" : "%lld", (long long)shape[i]);
    if (n < cap) snprintf(buf + n, cap - n, "]");
    return buf;
}

/* Rotating thread-local buffers so that one message can format several shapes. */
static char *rotating_buffer(void) {
    static _Thread_local char bufs[8][EFLA_SHAPE_BUF];
    static _Thread_local int next;
    char *b = bufs[next];
    next = (next + 1) % 8;
    return b;
}

const char *efla_tshape(const efla_tensor *t) {
    char *b = rotating_buffer();
    if (!t) return strcpy(b, "(null)");
    return efla_shape_str(b, EFLA_SHAPE_BUF, t->ndim, t->shape);
}

const char *efla_device_name(int device) {
    char *b = rotating_buffer();
    if (device == EFLA_DEVICE_CPU) return strcpy(b, "cpu");
    snprintf(b, EFLA_SHAPE_BUF, "cuda:%d", device - EFLA_DEVICE_CUDA0);
    return b;
}

int64_t efla_numel_of(int ndim, const int64_t *shape) {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    return n;
}

void efla_contiguous_strides(int ndim, const int64_t *shape, int64_t *strides) {
    int64_t s = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        strides[i] = s;
        s *= shape[i] > 0 ? shape[i] : 1;
    }
}

int efla_wrap_dim(const char *op, int dim, int ndim, int *out) {
    int n = ndim > 0 ? ndim : 1;
    int d = dim < 0 ? dim + n : dim;
    if (d < 0 || d >= n)
        return efla_fail("%s: dim %d is out of range for a tensor of %d dims (use 0..%d or -%d..-1)",
                         op, dim, ndim, n - 1, n);
    *out = d;
    return 0;
}

int efla_broadcast_shapes(const char *op, int na, const int64_t *sa, int nb, const int64_t *sb,
                          int *nout, int64_t *out) {
    int n = na > nb ? na : nb;
    for (int i = 0; i < n; i++) {
        int ia = na - n + i, ib = nb - n + i;
        int64_t a = ia >= 0 ? sa[ia] : 1, b = ib >= 0 ? sb[ib] : 1;
        if (a != b && a != 1 && b != 1) {
            char s1[EFLA_SHAPE_BUF], s2[EFLA_SHAPE_BUF];
            return efla_fail("%s: shapes %s and %s do not broadcast: size %lld vs %lld at dim %d "
                             "(sizes must match or be 1)", op,
                             efla_shape_str(s1, sizeof s1, na, sa), efla_shape_str(s2, sizeof s2, nb, sb),
                             (long long)a, (long long)b, i);
        }
        out[i] = a == 1 ? b : a;
    }
    *nout = n;
    return 0;
}

/* Wider wins; any float beats any integer; bool < uint8 < int64 < bfloat16 < float32 < float64. */
static int type_rank(efla_dtype t) {
    switch (t) {
    case EFLA_BOOL: return 0;
    case EFLA_UINT8: return 1;
    case EFLA_INT64: return 2;
    case EFLA_BFLOAT16: return 3;
    case EFLA_FLOAT32: return 4;
    case EFLA_FLOAT64: return 5;
    }
    return 0;
}

efla_dtype efla_promote_types(efla_dtype a, efla_dtype b) {
    return type_rank(a) >= type_rank(b) ? a : b;
}

/* backend.c: the registry of device backends (see backend.h). */
#include "backend.h"
#include <stddef.h>
#include <stdio.h>
#include <string.h>

static const efla_backend *backends[2] = { &efla_cpu_backend, NULL };
static const efla_fused_kernels *fused_tables[2] = { &efla_cpu_fused, NULL };
static void (*gc_callback)(void);

void efla_register_backend(int kind, const efla_backend *backend) {
    if (kind >= 0 && kind < 2) backends[kind] = backend;
}

const efla_backend *efla_backend_for(const char *op, int device) {
    int kind = device == EFLA_DEVICE_CPU ? 0 : 1;
    const efla_backend *b = backends[kind];
    if (!b)
        return efla_fail_null("%s: no backend for device %s: this libefla was built without CUDA "
                              "(rebuild with nvcc available and -DEFLA_CUDA=ON), or use the cpu",
                              op, efla_device_name(device));
    if (kind == 1 && (device - EFLA_DEVICE_CUDA0) >= b->device_count())
        return efla_fail_null("%s: device %s does not exist (%d CUDA device(s) visible)", op,
                              efla_device_name(device), b->device_count());
    return b;
}

void efla_register_fused(int kind, const efla_fused_kernels *kernels) {
    if (kind >= 0 && kind < 2) fused_tables[kind] = kernels;
}

const efla_fused_kernels *efla_fused_table(int kind) { return kind >= 0 && kind < 2 ? fused_tables[kind] : NULL; }

const efla_fused_kernels *efla_fused_for(const char *op, int device) {
    if (!efla_backend_for(op, device)) return NULL;
    const efla_fused_kernels *k = fused_tables[device == EFLA_DEVICE_CPU ? 0 : 1];
    if (!k) efla_no_kernel(op, device);
    return k;
}

int efla_no_kernel(const char *op, int device) {
    return efla_fail("%s: not implemented on %s yet; move the tensors to the cpu with :cpu()", op,
                     efla_device_name(device));
}

int efla_has_backend(int device) {
    int kind = device == EFLA_DEVICE_CPU ? 0 : 1;
    if (!backends[kind]) return 0;
    return kind == 0 || (device - EFLA_DEVICE_CUDA0) < backends[kind]->device_count();
}

int efla_device_count(int kind) {
    if (kind < 0 || kind > 1 || !backends[kind]) return 0;
    return backends[kind]->device_count();
}

int efla_synchronize(int device) {
    const efla_backend *b = efla_backend_for("synchronize", device);
    if (!b) return -1;
    return b->synchronize ? b->synchronize(device) : 0;
}

/* ---- what each backend supports: one row per kernel of backend_ops.h ------------------------ */
typedef struct {
    const char *name;
    unsigned dtypes[2];   /* by kind: 0 CPU, 1 CUDA; 0 = no kernel */
    size_t offset;        /* of the slot in its table */
    int fused;            /* 1: the slot is in efla_fused_kernels */
} op_row;

#define OP_ROW(name, cpu, cuda, cdt, gdt, params) \
    { #name, { (cpu) ? (cdt) : 0u, (cuda) ? (gdt) : 0u }, offsetof(efla_backend, name), 0 },
#define FUSED_ROW(name, cpu, cuda, cdt, gdt, params) \
    { #name, { (cpu) ? (cdt) : 0u, (cuda) ? (gdt) : 0u }, offsetof(efla_fused_kernels, name), 1 },
static const op_row op_rows[EFLA_OP_COUNT] = { EFLA_BACKEND_OPS(OP_ROW) EFLA_FUSED_OPS(FUSED_ROW) };

int efla_backend_op_count(void) { return EFLA_OP_COUNT; }

const char *efla_backend_op_name(int op) { return op >= 0 && op < EFLA_OP_COUNT ? op_rows[op].name : NULL; }

int efla_backend_supports_op(int kind, efla_backend_op op, efla_dtype dtype) {
    if (kind < 0 || kind > 1 || (unsigned)op >= EFLA_OP_COUNT || (unsigned)dtype > EFLA_BOOL) return 0;
    const op_row *r = &op_rows[op];
    if (!(r->dtypes[kind] & (1u << dtype))) return 0;
    /* the list says so; the registered table must agree (a backend that is not linked in,
     * or a slot left NULL, supports nothing) */
    const void *table = r->fused ? (const void *)efla_fused_table(kind) : (const void *)backends[kind];
    if (!table) return 0;
    void (*slot)(void);
    memcpy(&slot, (const char *)table + r->offset, sizeof slot);
    return slot != NULL;
}

int efla_backend_supports(int device_kind, const char *op, efla_dtype dtype) {
    if (device_kind != 0 && device_kind != 1)
        return efla_fail("supports: device kind %d is unknown (0 = cpu, 1 = cuda)", device_kind);
    if ((unsigned)dtype > EFLA_BOOL) return efla_fail("supports: dtype %d is unknown", (int)dtype);
    for (int i = 0; op && i < EFLA_OP_COUNT; i++)
        if (!strcmp(op_rows[i].name, op)) return efla_backend_supports_op(device_kind, (efla_backend_op)i, dtype);
    char names[1024];
    size_t n = 0;
    names[0] = 0;
    for (int i = 0; i < EFLA_OP_COUNT && n + 32 < sizeof names; i++)
        n += (size_t)snprintf(names + n, sizeof names - n, "%s%s", i ? ", " : "", op_rows[i].name);
    return efla_fail("supports: no kernel is called '%s'; the kernels are %s", op ? op : "(null)", names);
}

/* "float32, float64" */
static void dtype_list(unsigned mask, char *buf, size_t size) {
    size_t n = 0;
    buf[0] = 0;
    for (int d = 0; d <= EFLA_BOOL; d++)
        if (mask & (1u << d))
            n += (size_t)snprintf(buf + n, size - n, "%s%s", n ? ", " : "", efla_dtype_name((efla_dtype)d));
}

int efla_check_kernel(const char *what, efla_backend_op op, int device, efla_dtype dtype, const char *fix) {
    int kind = device == EFLA_DEVICE_CPU ? 0 : 1;
    if (!efla_backend_for(what, device)) return -1;
    if (efla_backend_supports_op(kind, op, dtype)) return 0;
    const op_row *r = &op_rows[(unsigned)op < EFLA_OP_COUNT ? op : 0];
    if (!r->dtypes[kind]) return efla_no_kernel(what, device);
    char ok[128];
    dtype_list(r->dtypes[kind], ok, sizeof ok);
    return efla_fail("%s: %s is not supported on %s (its %s kernel computes %s); %s", what,
                     efla_dtype_name(dtype), kind ? "cuda" : "the cpu", r->name, ok,
                     fix ? fix : "cast the inputs first");
}

void efla_set_gc_callback(void (*callback)(void)) { gc_callback = callback; }
void efla_run_gc_callback(void) { if (gc_callback) gc_callback(); }

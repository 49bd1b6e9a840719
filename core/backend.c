/* backend.c: the registry of device backends (see backend.h). */
#include "backend.h"
#include <stddef.h>

static const efla_backend *backends[2] = { &efla_cpu_backend, NULL };
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

void efla_set_gc_callback(void (*callback)(void)) { gc_callback = callback; }
void efla_run_gc_callback(void) { if (gc_callback) gc_callback(); }

/* nccl_absent.c: the NCCL entry points of efla.h for a libefla built without the CUDA
 * backend. They are weak: cuda/nccl.cu replaces them when CUDA is compiled in. */
#include "internal.h"

#define NO_NCCL(op) efla_fail("%s: this libefla was built without CUDA, so NCCL cannot be used; " \
                              "use the CPU transport (efla.distributed.init{backend='tcp'}) or rebuild with nvcc", op)

__attribute__((weak)) int efla_nccl_available(void) { NO_NCCL("nccl"); return 0; }
__attribute__((weak)) int efla_nccl_unique_id(char *out) { (void)out; return NO_NCCL("nccl_unique_id"); }
__attribute__((weak)) efla_nccl_comm *efla_nccl_init(const char *id, int w, int r, int d) {
    (void)id; (void)w; (void)r; (void)d; NO_NCCL("nccl_init"); return NULL;
}
__attribute__((weak)) int efla_nccl_all_reduce(efla_nccl_comm *c, efla_tensor *t, int a) {
    (void)c; (void)t; (void)a; return NO_NCCL("nccl_all_reduce");
}
__attribute__((weak)) int efla_nccl_broadcast(efla_nccl_comm *c, efla_tensor *t, int r) {
    (void)c; (void)t; (void)r; return NO_NCCL("nccl_broadcast");
}
__attribute__((weak)) int efla_nccl_all_gather(efla_nccl_comm *c, const efla_tensor *i, efla_tensor *o) {
    (void)c; (void)i; (void)o; return NO_NCCL("nccl_all_gather");
}
__attribute__((weak)) int efla_nccl_reduce_scatter(efla_nccl_comm *c, const efla_tensor *i, efla_tensor *o, int a) {
    (void)c; (void)i; (void)o; (void)a; return NO_NCCL("nccl_reduce_scatter");
}
__attribute__((weak)) int efla_nccl_wait(efla_nccl_comm *c) { (void)c; return NO_NCCL("nccl_wait"); }
__attribute__((weak)) void efla_nccl_destroy(efla_nccl_comm *c) { (void)c; }

/* cuda_absent.c: the CUDA entry points of efla.h for a libefla built without the CUDA
 * backend. They are weak: when cuda/ is compiled in, its definitions replace these. */
#include "internal.h"

#define NO_CUDA(op) efla_fail("%s: this libefla was built without CUDA (rebuild with nvcc available)", op)

__attribute__((weak)) int efla_cuda_memory_stats(int device, efla_memory_stats *stats) { return NO_CUDA("cuda_memory_stats"); }
__attribute__((weak)) int efla_cuda_empty_cache(int device) { return NO_CUDA("cuda_empty_cache"); }
__attribute__((weak)) int efla_cuda_reset_peak(int device) { return NO_CUDA("cuda_reset_peak"); }
__attribute__((weak)) int efla_cuda_set_tf32(int enabled) { return NO_CUDA("cuda_set_tf32"); }
__attribute__((weak)) int efla_cuda_device_props(int device, efla_device_props *props) { return NO_CUDA("cuda_device_props"); }

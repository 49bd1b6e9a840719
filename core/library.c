/* library.c: library-wide settings: version string and CPU thread count. */
#include "internal.h"
#ifdef _OPENMP
#include <omp.h>
#endif

#ifndef EFLA_VERSION_STRING
#define EFLA_VERSION_STRING "0.1.0"
#endif

const char *efla_version(void) { return EFLA_VERSION_STRING; }

int efla_num_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

void efla_set_num_threads(int n) {
#ifdef _OPENMP
    if (n > 0) omp_set_num_threads(n);
#else
    (void)n;
#endif
}

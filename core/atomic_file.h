/* atomic_file.h: the parts of atomic_file.c that h5.c shares (HDF5 writes its temporary file
 * itself, so it uses the naming and the final rename but not the fd writer). */
#ifndef EFLA_ATOMIC_FILE_H
#define EFLA_ATOMIC_FILE_H
#include "efla.h"

/* Checks path (symlinks followed; must be a regular file or absent, in an existing folder),
 * removes stale temporaries of it, and gives the file to replace and a fresh temporary name
 * (both malloc'ed). 0, or -1 with an error starting with op. */
int efla_atomic_prepare(const char *op, const char *path, char **target, char **tmp);
/* fsync tmp, rename it over target, fsync the folder; on failure removes tmp. */
int efla_atomic_finish(const char *op, const char *target, const char *tmp);
#endif

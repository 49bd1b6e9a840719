/* addr_set.h: an open-addressing hash set of nonzero 64-bit values (addresses: file offsets,
 * pointers), linear in the number added. h5_check.c remembers the objects it has checked with
 * it; autograd_report.c the nodes and storages it has counted. Zero-initialise, then free. */
#ifndef EFLA_ADDR_SET_H
#define EFLA_ADDR_SET_H
#include <stddef.h>
#include <stdint.h>

typedef struct { uint64_t *slot; size_t n, cap; } efla_addr_set;

int efla_addr_set_add(efla_addr_set *s, uint64_t v);        /* 1 added, 0 already there, -1 out of memory */
int efla_addr_set_has(const efla_addr_set *s, uint64_t v);  /* 1 or 0 */
void efla_addr_set_free(efla_addr_set *s);
#endif

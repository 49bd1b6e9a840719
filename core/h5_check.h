/* h5_check.h: the metadata checker that runs on every file before HDF5 reads it (h5_check.c),
 * and the checksum HDF5 puts on its metadata (used also by the fuzzer's mutator). */
#ifndef EFLA_H5_CHECK_H
#define EFLA_H5_CHECK_H
#include <stddef.h>
#include <stdint.h>

/* Bob Jenkins' lookup3 "hashlittle" over bytes, as HDF5's H5_checksum_metadata computes it
 * (initval 0) for superblocks v2/v3, object header chunks, B-trees and heaps. */
uint32_t efla_h5_metadata_checksum(const void *data, size_t n, uint32_t initval);

/* Walks every object reachable from the superblock of the file open on fd and checks each
 * against the layouts efla writes. 0 when it passes; else -1 with a sentence in why
 * ("object header at 48: attributes in dense storage (efla never writes them)"). */
int efla_h5_check_layout(int fd, char *why, size_t cap);

#endif

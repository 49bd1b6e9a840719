/* fuzz_checkpoint.c: libFuzzer target for the checkpoint reader (core/h5.c + h5_check.c).
 *
 * Each input is written to a file in /dev/shm and read the way checkpoint.load reads one
 * (read_everything.h). A crash, an AddressSanitizer report, or one allocation larger than
 * ALLOC_FACTOR x the input size + ALLOC_BASE bytes (HDF5's fixed caches) is a finding.
 *
 * The custom mutator: HDF5 checksums its metadata (superblock, object header chunks), so a
 * random byte change in metadata is almost always refused at the checksum. After libFuzzer's
 * own mutation (or, half of the time, a change inside one object header message) the
 * mutator recomputes every checksum it can find, so the inputs reach the code behind them.
 *
 * Build and run: scripts/fuzz.sh (clang, -fsanitize=fuzzer,address). */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "efla.h"
#include "h5_check.h"
#include "read_everything.h"

size_t LLVMFuzzerMutate(uint8_t *data, size_t size, size_t max_size);
void __sanitizer_install_malloc_and_free_hooks(void (*m)(const volatile void *, size_t), void (*f)(const volatile void *));

enum { ALLOC_FACTOR = 16 };
static const size_t ALLOC_BASE = 8u << 20;
static size_t largest;  /* the largest single allocation while reading the current input */
static int tracking;

static void on_malloc(const volatile void *p, size_t n) {
    (void)p;
    if (tracking && n > largest) largest = n;
}
static void on_free(const volatile void *p) { (void)p; }

static char path[64];

static void remove_scratch(void) { unlink(path); }

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    snprintf(path, sizeof path, "/dev/shm/efla-fuzz-%d.h5", (int)getpid());
    atexit(remove_scratch);
    __sanitizer_install_malloc_and_free_hooks(on_malloc, on_free);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) abort();
    if (size && write(fd, data, size) != (ssize_t)size) abort();
    close(fd);
    largest = 0;
    tracking = 1;
    int rc = read_everything(path);
    tracking = 0;
    if (rc == 2) {
        fprintf(stderr, "fuzz_checkpoint: an error without a message\n");
        abort();
    }
    if (largest > ALLOC_FACTOR * size + ALLOC_BASE) {
        fprintf(stderr, "fuzz_checkpoint: one allocation of %zu bytes for a %zu-byte file\n", largest, size);
        abort();
    }
    return 0;
}

/* ---- the checksum-fixing mutator ---------------------------------------------------------------- */
static uint64_t le(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}
static void put32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }

typedef struct { size_t start, first, end; } chunk;  /* checksummed [start, end); messages from first */

/* The chunks of the file, by signature: OHDR prefixes give their own size; an OCHK's length
 * is in the continuation message (type 0x10) that points at it. */
static size_t find_chunks(const uint8_t *d, size_t n, chunk *out, size_t cap) {
    size_t k = 0;
    for (size_t i = 0; i + 8 <= n && k < cap; i++) {
        if (memcmp(d + i, "OHDR", 4)) continue;
        int flags = d[i + 5];
        size_t at = i + 6 + ((flags & 0x20) ? 16 : 0) + ((flags & 0x10) ? 4 : 0);
        int w = 1 << (flags & 3);
        if (at + (size_t)w > n) continue;
        uint64_t sz = le(d + at, w);
        if (sz > n || at + (size_t)w + sz + 4 > n) continue;
        out[k++] = (chunk){i, at + (size_t)w, at + (size_t)w + (size_t)sz};
    }
    size_t heads = k;
    for (size_t c = 0; c < heads; c++) {   /* continuation messages in the first chunks */
        for (size_t at = out[c].first; at + 4 <= out[c].end && k < cap;) {
            size_t msize = (size_t)le(d + at + 1, 2);
            if (at + 4 + msize > out[c].end) break;
            if (d[at] == 0x10 && msize >= 16) {
                uint64_t a = le(d + at + 4, 8), len = le(d + at + 12, 8);
                if (len >= 8 && a < n && len <= n - a && !memcmp(d + a, "OCHK", 4))
                    out[k++] = (chunk){(size_t)a, (size_t)a + 4, (size_t)(a + len - 4)};
            }
            at += 4 + msize;
        }
    }
    return k;
}

static void fix_checksums(uint8_t *d, size_t n) {
    if (n >= 48 && !memcmp(d, "\x89HDF\r\n\x1a\n", 8) && (d[8] == 2 || d[8] == 3))
        put32(d + 44, efla_h5_metadata_checksum(d, 44, 0));
    chunk cs[256];
    size_t k = find_chunks(d, n, cs, 256);
    for (size_t i = 0; i < k; i++) put32(d + cs[i].end, efla_h5_metadata_checksum(d + cs[i].start, cs[i].end - cs[i].start, 0));
}

size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size, unsigned int seed) {
    chunk cs[256];
    size_t k = (seed & 1) ? find_chunks(data, size, cs, 256) : 0;
    if (k) {
        /* inside one message of one chunk: keeps the header's framing, changes its content */
        chunk c = cs[(seed >> 1) % k];
        size_t msgs[512], m = 0;
        for (size_t at = c.first; at + 4 <= c.end && m < 512;) {
            size_t msize = (size_t)le(data + at + 1, 2);
            if (at + 4 + msize > c.end) break;
            msgs[m++] = at;
            at += 4 + msize;
        }
        if (m) {
            size_t at = msgs[(seed >> 9) % m], len = 4 + (size_t)le(data + at + 1, 2);
            size_t changed = LLVMFuzzerMutate(data + at, len, len);  /* same length: framing intact */
            if (changed < len) memset(data + at + changed, 0, len - changed);
            fix_checksums(data, size);
            return size;
        }
    }
    size = LLVMFuzzerMutate(data, size, max_size);
    fix_checksums(data, size);
    return size;
}

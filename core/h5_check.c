/* h5_check.c: checks a file's HDF5 metadata against the layouts efla writes, before any HDF5
 * call reads it.
 *
 * Why: HDF5 1.10 trusts a lot of what a file says. A checksummed but crafted object header
 * that claims "dense" attribute storage makes H5Aexists read through a NULL pointer; a damaged
 * link message makes H5Literate free a wild pointer; a dataset of 2^28 elements with no
 * stored bytes makes a reader allocate 1 GiB. efla writes a small subset of the format
 * (h5.c's top comment), so every object is checked against that subset here, by our own
 * bounded parser, and anything else is refused with a sentence saying what was found:
 *   - superblock version 2 or 3, 8-byte offsets and lengths, no user block, no extension,
 *     closed cleanly, checksum right;
 *   - object headers version 2 (checksummed), continuation chunks inside the file, no
 *     shared messages, no attribute creation order, only the message types efla writes;
 *   - groups: compact links only (no fractal heap or B-tree), hard links only, names
 *     without '/', no two links with one name; compact attributes only;
 *   - datasets: scalar or simple dataspaces of at most 8 dims with fixed sizes, little-
 *     endian IEEE floats of 4/8 bytes, unsigned/signed integers of 1/2/4/8 bytes or fixed-
 *     length strings, contiguous or compact storage whose size is exactly elements x element
 *     size and lies inside the file, no filters, no external or virtual storage;
 *   - attributes: names, types, dataspaces and values inside their message.
 * Every read is a bounded pread; nothing allocated is larger than one object header chunk,
 * which lies inside the file. The format is HDF5's File Format Specification version 3. */
#define _GNU_SOURCE
#include "h5_check.h"
#include "addr_set.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- lookup3 --------------------------------------------------------------------------------- */
#define ROT(x, k) (((x) << (k)) | ((x) >> (32 - (k))))

uint32_t efla_h5_metadata_checksum(const void *data, size_t n, uint32_t initval) {
    const uint8_t *k = data;
    uint32_t a, b, c;
    a = b = c = 0xdeadbeefu + (uint32_t)n + initval;
    while (n > 12) {
        a += k[0] + ((uint32_t)k[1] << 8) + ((uint32_t)k[2] << 16) + ((uint32_t)k[3] << 24);
        b += k[4] + ((uint32_t)k[5] << 8) + ((uint32_t)k[6] << 16) + ((uint32_t)k[7] << 24);
        c += k[8] + ((uint32_t)k[9] << 8) + ((uint32_t)k[10] << 16) + ((uint32_t)k[11] << 24);
        a -= c; a ^= ROT(c, 4);  c += b;
        b -= a; b ^= ROT(a, 6);  a += c;
        c -= b; c ^= ROT(b, 8);  b += a;
        a -= c; a ^= ROT(c, 16); c += b;
        b -= a; b ^= ROT(a, 19); a += c;
        c -= b; c ^= ROT(b, 4);  b += a;
        n -= 12;
        k += 12;
    }
    switch (n) {  /* the last 1..12 bytes; falls through on purpose */
    case 12: c += (uint32_t)k[11] << 24; /* fall through */
    case 11: c += (uint32_t)k[10] << 16; /* fall through */
    case 10: c += (uint32_t)k[9] << 8;   /* fall through */
    case 9:  c += k[8];                  /* fall through */
    case 8:  b += (uint32_t)k[7] << 24;  /* fall through */
    case 7:  b += (uint32_t)k[6] << 16;  /* fall through */
    case 6:  b += (uint32_t)k[5] << 8;   /* fall through */
    case 5:  b += k[4];                  /* fall through */
    case 4:  a += (uint32_t)k[3] << 24;  /* fall through */
    case 3:  a += (uint32_t)k[2] << 16;  /* fall through */
    case 2:  a += (uint32_t)k[1] << 8;   /* fall through */
    case 1:  a += k[0]; break;
    case 0:  return c;
    }
    c ^= b; c -= ROT(b, 14);
    a ^= c; a -= ROT(c, 11);
    b ^= a; b -= ROT(a, 25);
    c ^= b; c -= ROT(b, 16);
    a ^= c; a -= ROT(c, 4);
    b ^= a; b -= ROT(a, 14);
    c ^= b; c -= ROT(b, 24);
    return c;
}

/* ---- the walk's state -------------------------------------------------------------------------- */
#define UNDEF UINT64_MAX            /* HDF5's "undefined address": all bits set */
enum { MAX_DEPTH = 64, MAX_CHUNKS = 4096, MAX_DIMS = 8 };

typedef struct {
    int fd;
    uint64_t eof;                   /* the end of the file's data: min(file size, superblock EOF) */
    char *why;
    size_t cap;
    efla_addr_set seen;             /* object headers and chunks already checked, by address
                                     * (address 0 is the superblock, never an object) */
    size_t chunks;                  /* continuation chunks read so far (all objects) */
} walk;

static int bad(walk *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bad(walk *w, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->why, w->cap, fmt, ap);
    va_end(ap);
    return -1;
}

static uint64_t le(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* 1 if addr was seen before, else records it; -1 when out of memory. A hash set, so that a
 * file of a million tiny objects costs linear time, not quadratic. */
static int seen_before(walk *w, uint64_t addr) {
    if (addr == 0) return 1;        /* the superblock: never an object or chunk */
    int added = efla_addr_set_add(&w->seen, addr);
    return added < 0 ? -1 : !added;
}

/* Reads n bytes at addr into a fresh buffer; the range must lie inside the file. */
static uint8_t *read_at(walk *w, uint64_t addr, uint64_t n, const char *what) {
    if (addr == UNDEF || addr > w->eof || n > w->eof - addr || n == 0) {
        bad(w, "%s at %llu (%llu bytes) lies outside the file (%llu bytes)", what, (unsigned long long)addr,
            (unsigned long long)n, (unsigned long long)w->eof);
        return NULL;
    }
    uint8_t *buf = malloc((size_t)n);
    if (!buf) { bad(w, "out of memory reading %s", what); return NULL; }
    size_t done = 0;
    while (done < n) {
        ssize_t got = pread(w->fd, buf + done, (size_t)n - done, (off_t)(addr + done));
        if (got <= 0) { free(buf); bad(w, "cannot read %s at %llu", what, (unsigned long long)addr); return NULL; }
        done += (size_t)got;
    }
    return buf;
}

/* ---- datatypes and dataspaces ---------------------------------------------------------------- */
/* Checks an encoded datatype of the kinds efla writes; *size = the element size. */
static int check_datatype(walk *w, const uint8_t *p, size_t n, uint64_t *size, const char *where) {
    if (n < 8) return bad(w, "%s: datatype message too short", where);
    int version = p[0] >> 4, cls = p[0] & 15;
    uint32_t bits = (uint32_t)le(p + 1, 3);
    uint64_t sz = le(p + 4, 4);
    if (version < 1 || version > 3) return bad(w, "%s: datatype version %d", where, version);
    if (cls == 0) {                 /* fixed point: little-endian, no padding, full precision */
        if (n < 12) return bad(w, "%s: integer datatype message too short", where);
        if ((bits & ~8u) != 0 || (sz != 1 && sz != 2 && sz != 4 && sz != 8) || le(p + 8, 2) != 0 || le(p + 10, 2) != 8 * sz)
            return bad(w, "%s: an integer type efla never writes (%llu bytes, flags %x)", where, (unsigned long long)sz, bits);
    } else if (cls == 1) {          /* IEEE float, little-endian */
        if (n < 20) return bad(w, "%s: float datatype message too short", where);
        static const uint8_t f32[12] = {0, 0, 32, 0, 23, 8, 0, 23, 127, 0, 0, 0};
        static const uint8_t f64[12] = {0, 0, 64, 0, 52, 11, 0, 52, 0xff, 3, 0, 0};
        int ok = (sz == 4 && bits == 0x1f20 && !memcmp(p + 8, f32, 12)) ||
                 (sz == 8 && bits == 0x3f20 && !memcmp(p + 8, f64, 12));
        if (!ok) return bad(w, "%s: a float type efla never writes (%llu bytes)", where, (unsigned long long)sz);
    } else if (cls == 3) {          /* fixed-length string: null-terminated/padded, ASCII/UTF-8 */
        if ((bits & 15) > 1 || ((bits >> 4) & 15) > 1 || (bits >> 8) != 0 || sz == 0)
            return bad(w, "%s: a string type efla never writes", where);
    } else {
        return bad(w, "%s: datatype class %d (efla writes integers, floats and fixed-length strings)", where, cls);
    }
    *size = sz;
    return 0;
}

/* Checks an encoded dataspace (version 2: scalar or simple); *numel = its element count. */
static int check_dataspace(walk *w, const uint8_t *p, size_t n, uint64_t *numel, const char *where) {
    if (n < 4) return bad(w, "%s: dataspace message too short", where);
    int version = p[0], rank = p[1], flags = p[2], type = p[3];
    if (version != 2) return bad(w, "%s: dataspace version %d (efla writes 2)", where, version);
    if (type != 0 && type != 1) return bad(w, "%s: dataspace type %d (efla writes scalar or simple ones)", where, type);
    if (flags & ~1) return bad(w, "%s: dataspace flags %x", where, flags);
    if (rank > MAX_DIMS || (type == 0 && rank != 0)) return bad(w, "%s: dataspace of rank %d", where, rank);
    size_t need = 4 + (size_t)rank * 8 * ((flags & 1) ? 2 : 1);
    if (n < need) return bad(w, "%s: dataspace message too short for rank %d", where, rank);
    uint64_t count = 1;
    for (int i = 0; i < rank; i++) {
        uint64_t d = le(p + 4 + 8 * i, 8);
        if ((flags & 1) && le(p + 4 + 8 * rank + 8 * i, 8) != d)
            return bad(w, "%s: dataspace with a maximum size unlike its size (efla never writes resizable data)", where);
        if (d > (1ull << 56) || __builtin_mul_overflow(count, d, &count) || count > (1ull << 56))
            return bad(w, "%s: dataspace of an impossible size", where);
    }
    *numel = count;
    return 0;
}

/* ---- messages ---------------------------------------------------------------------------------- */
enum {
    MSG_NIL = 0x00, MSG_DATASPACE = 0x01, MSG_LINFO = 0x02, MSG_DATATYPE = 0x03, MSG_FILL = 0x05,
    MSG_LINK = 0x06, MSG_LAYOUT = 0x08, MSG_GINFO = 0x0a, MSG_ATTR = 0x0c, MSG_CONT = 0x10,
    MSG_AINFO = 0x15, MSG_REFCOUNT = 0x16,
};

typedef struct { uint64_t addr; char name[256]; } link_t;

/* What one object header holds, gathered over all its chunks. */
typedef struct {
    uint64_t addr;
    int linfo, ginfo, dataspace, datatype, layout, fill;
    uint64_t numel, elsize;         /* from the dataspace and datatype messages */
    int layout_class;               /* 0 compact, 1 contiguous */
    uint64_t data_addr, data_size;
    link_t *links;
    size_t n_links, cap_links;
    uint64_t conts[64][2];          /* continuation chunks to read: address, length */
    size_t n_conts;
} object;

static int check_attribute(walk *w, const uint8_t *p, size_t n, const char *where) {
    if (n < 9) return bad(w, "%s: attribute message too short", where);
    int version = p[0], flags = p[1];
    if (version != 3) return bad(w, "%s: attribute message version %d (efla writes 3)", where, version);
    if (flags != 0) return bad(w, "%s: attribute with shared type or space (efla never writes one)", where);
    size_t nlen = (size_t)le(p + 2, 2), tlen = (size_t)le(p + 4, 2), slen = (size_t)le(p + 6, 2);
    int cset = p[8];
    if (cset > 1 || nlen < 2) return bad(w, "%s: attribute with a bad name", where);
    size_t at = 9;
    if (nlen > n - at || tlen > n - at - nlen || slen > n - at - nlen - tlen)
        return bad(w, "%s: attribute parts run past the message", where);
    const uint8_t *name = p + at;
    if (name[nlen - 1] != 0 || memchr(name, 0, nlen - 1))
        return bad(w, "%s: attribute name is not one null-terminated string", where);
    at += nlen;
    uint64_t elsize, numel;
    if (check_datatype(w, p + at, tlen, &elsize, where) || check_dataspace(w, p + at + tlen, slen, &numel, where)) return -1;
    at += tlen + slen;
    uint64_t bytes;
    if (__builtin_mul_overflow(numel, elsize, &bytes) || bytes > n - at)
        return bad(w, "%s: attribute %.64s holds %llu bytes but its message has %zu", where, (const char *)name,
                   (unsigned long long)(numel * elsize), n - at);
    return 0;
}

static int check_link(walk *w, object *o, const uint8_t *p, size_t n, const char *where) {
    if (n < 2) return bad(w, "%s: link message too short", where);
    int version = p[0], flags = p[1];
    if (version != 1 || (flags & ~0x1f)) return bad(w, "%s: link message version %d flags %x", where, version, flags);
    size_t at = 2;
    int type = 0;
    if (flags & 0x08) { if (at >= n) return bad(w, "%s: link message too short", where); type = p[at++]; }
    if (flags & 0x04) at += 8;      /* creation order */
    if (flags & 0x10) { if (at >= n) return bad(w, "%s: link message too short", where); if (p[at++] > 1) return bad(w, "%s: link name character set", where); }
    int lsize = 1 << (flags & 3);
    if (at > n || (size_t)lsize > n - at) return bad(w, "%s: link message too short", where);
    uint64_t nlen = le(p + at, lsize);
    at += (size_t)lsize;
    if (type != 0) return bad(w, "%s: a%s link (efla writes hard links only)", where, type == 1 ? " soft" : type == 64 ? "n external" : " user-defined");
    if (nlen == 0 || nlen > 255 || nlen > n - at || n - at - nlen < 8)
        return bad(w, "%s: link name of %llu bytes does not fit its message", where, (unsigned long long)nlen);
    const uint8_t *name = p + at;
    if (memchr(name, '/', nlen) || memchr(name, 0, nlen) || (nlen == 1 && name[0] == '.'))
        return bad(w, "%s: link name with '/', a null byte or \".\"", where);
    uint64_t target = le(p + at + nlen, 8);
    if (o->n_links == o->cap_links) {
        size_t cap = o->cap_links ? 2 * o->cap_links : 8;
        link_t *l = realloc(o->links, cap * sizeof *l);
        if (!l) return bad(w, "out of memory");
        o->links = l;
        o->cap_links = cap;
    }
    link_t *l = &o->links[o->n_links++];
    memcpy(l->name, name, nlen);
    l->name[nlen] = 0;
    l->addr = target;
    return 0;
}

static int check_message(walk *w, object *o, int type, const uint8_t *p, size_t n, const char *where) {
    switch (type) {
    case MSG_NIL: return 0;
    case MSG_REFCOUNT: return (n >= 5 && p[0] == 0) ? 0 : bad(w, "%s: bad reference count message", where);
    case MSG_LINFO: case MSG_AINFO: {
        /* version 0, no creation order; the fractal heap and B-tree addresses say where
         * "dense" storage would be: efla keeps links and attributes compact, so both must be
         * undefined (HDF5 1.10 crashes on some damaged dense storage) */
        const char *what = type == MSG_LINFO ? "links" : "attributes";
        if (n < 18 || p[0] != 0) return bad(w, "%s: bad %s info message", where, what);
        if (p[1] != 0) return bad(w, "%s: %s tracked by creation order (efla never writes that)", where, what);
        if (le(p + 2, 8) != UNDEF || le(p + 10, 8) != UNDEF)
            return bad(w, "%s: %s in dense storage (efla never writes them)", where, what);
        if (type == MSG_LINFO) o->linfo++;
        return 0;
    }
    case MSG_GINFO:
        if (n < 2 || p[0] != 0 || (p[1] & ~3)) return bad(w, "%s: bad group info message", where);
        if (n < 2 + (size_t)((p[1] & 1) ? 4 : 0) + (size_t)((p[1] & 2) ? 4 : 0)) return bad(w, "%s: group info message too short", where);
        o->ginfo++;
        return 0;
    case MSG_LINK: return check_link(w, o, p, n, where);
    case MSG_ATTR: return check_attribute(w, p, n, where);
    case MSG_DATASPACE: o->dataspace++; return check_dataspace(w, p, n, &o->numel, where);
    case MSG_DATATYPE: o->datatype++; return check_datatype(w, p, n, &o->elsize, where);
    case MSG_FILL:
        /* version 3; flags bit 5: a fill value follows (4-byte size, then the value) */
        if (n < 2 || p[0] != 3 || (p[1] & 0xc0)) return bad(w, "%s: bad fill value message", where);
        if ((p[1] & 0x20) && (n < 6 || le(p + 2, 4) > n - 6)) return bad(w, "%s: fill value runs past its message", where);
        o->fill++;
        return 0;
    case MSG_LAYOUT:
        if (n < 2 || (p[0] != 3 && p[0] != 4)) return bad(w, "%s: data layout version %d (efla writes 3 or 4)", where, n ? p[0] : -1);
        o->layout++;
        o->layout_class = p[1];
        if (p[1] == 0) {            /* compact: 2-byte size, then the bytes */
            if (n < 4 || le(p + 2, 2) > n - 4) return bad(w, "%s: compact data runs past its message", where);
            o->data_size = le(p + 2, 2);
            return 0;
        }
        if (p[1] == 1) {            /* contiguous: address, size */
            if (n < 18) return bad(w, "%s: data layout message too short", where);
            o->data_addr = le(p + 2, 8);
            o->data_size = le(p + 10, 8);
            return 0;
        }
        return bad(w, "%s: %s storage (efla writes contiguous or compact data)", where,
                   p[1] == 2 ? "chunked" : p[1] == 3 ? "virtual" : "unknown");
    case MSG_CONT:
        if (n < 16) return bad(w, "%s: continuation message too short", where);
        if (o->n_conts == sizeof o->conts / sizeof o->conts[0]) return bad(w, "%s: too many header chunks", where);
        o->conts[o->n_conts][0] = le(p, 8);
        o->conts[o->n_conts][1] = le(p + 8, 8);
        o->n_conts++;
        return 0;
    case 0x07: return bad(w, "%s: data in external files (efla never writes that)", where);
    case 0x0b: return bad(w, "%s: a filter pipeline (efla writes no compressed or filtered data)", where);
    case 0x11: return bad(w, "%s: an old-style (symbol table) group; efla writes the 1.10 format", where);
    default: return bad(w, "%s: object header message type %d, which efla never writes", where, type);
    }
}

/* Checks the messages in [p, p + n) of one chunk (gaps under 4 bytes allowed at the end). */
static int check_messages(walk *w, object *o, const uint8_t *p, size_t n, const char *where) {
    size_t at = 0;
    while (n - at >= 4) {
        int type = p[at], mflags = p[at + 3];
        size_t size = (size_t)le(p + at + 1, 2);
        at += 4;
        if (size > n - at) return bad(w, "%s: message of type %d runs past its chunk", where, type);
        if (mflags & 0x02) return bad(w, "%s: a shared message (efla never writes one)", where);
        if (mflags & ~0x0d) return bad(w, "%s: message flags %x", where, mflags);
        if (check_message(w, o, type, p + at, size, where)) return -1;
        at += size;
    }
    return 0;
}

/* Reads and checks one chunk: the first ("OHDR" prefix) or a continuation ("OCHK"). */
static int check_chunk(walk *w, object *o, uint64_t addr, uint64_t len, int first) {
    char where[96];
    snprintf(where, sizeof where, "object header at %llu", (unsigned long long)o->addr);
    if (!first) {
        if (++w->chunks > MAX_CHUNKS) return bad(w, "%s: too many header chunks in the file", where);
        int s = seen_before(w, addr);
        if (s) return s < 0 ? bad(w, "out of memory") : bad(w, "%s: a header chunk used twice", where);
        if (len < 8) return bad(w, "%s: continuation chunk of %llu bytes", where, (unsigned long long)len);
        uint8_t *c = read_at(w, addr, len, "a header continuation chunk");
        if (!c) return -1;
        int rc = 0;
        if (memcmp(c, "OCHK", 4)) rc = bad(w, "%s: continuation chunk at %llu has no OCHK signature", where, (unsigned long long)addr);
        else if (efla_h5_metadata_checksum(c, (size_t)len - 4, 0) != (uint32_t)le(c + len - 4, 4))
            rc = bad(w, "%s: continuation chunk at %llu fails its checksum", where, (unsigned long long)addr);
        else rc = check_messages(w, o, c + 4, (size_t)len - 8, where);
        free(c);
        return rc;
    }
    uint8_t pre[32];
    uint64_t plen = w->eof - addr < sizeof pre ? w->eof - addr : sizeof pre;
    uint8_t *h = addr < w->eof ? read_at(w, addr, plen, "an object header") : NULL;
    if (!h) return addr < w->eof ? -1 : bad(w, "%s lies outside the file", where);
    memcpy(pre, h, (size_t)plen);
    free(h);
    if (plen < 8 || memcmp(pre, "OHDR", 4))
        return bad(w, "%s: no OHDR signature (efla writes version 2 object headers)", where);
    int version = pre[4], flags = pre[5];
    if (version != 2) return bad(w, "%s: object header version %d", where, version);
    if (flags & 0xcc) return bad(w, "%s: object header flags %x (efla never tracks attribute creation order)", where, flags);
    size_t at = 6 + ((flags & 0x20) ? 16 : 0) + ((flags & 0x10) ? 4 : 0);
    int wsize = 1 << (flags & 3);
    if (at + (size_t)wsize > plen) return bad(w, "%s is truncated", where);
    uint64_t size = le(pre + at, wsize);
    at += (size_t)wsize;
    if (size > w->eof) return bad(w, "%s: first chunk of %llu bytes is larger than the file", where, (unsigned long long)size);
    uint8_t *c = read_at(w, addr, at + size + 4, "an object header");
    if (!c) return -1;
    int rc;
    if (efla_h5_metadata_checksum(c, (size_t)(at + size), 0) != (uint32_t)le(c + at + size, 4))
        rc = bad(w, "%s fails its checksum", where);
    else rc = check_messages(w, o, c + at, (size_t)size, where);
    free(c);
    return rc;
}

static int check_object(walk *w, uint64_t addr, int depth, int must_be_group);

static int cmp_link(const void *a, const void *b) { return strcmp(((const link_t *)a)->name, ((const link_t *)b)->name); }

/* A group's links: unique names (sorted, so many links cost n log n), each target checked. */
static int check_children(walk *w, object *o, int depth) {
    if (o->n_links > 1) qsort(o->links, o->n_links, sizeof *o->links, cmp_link);
    for (size_t i = 1; i < o->n_links; i++)
        if (!strcmp(o->links[i].name, o->links[i - 1].name))
            return bad(w, "group at %llu: two links named \"%s\"", (unsigned long long)o->addr, o->links[i].name);
    for (size_t i = 0; i < o->n_links; i++)
        if (check_object(w, o->links[i].addr, depth + 1, 0)) return -1;
    return 0;
}

static int check_object(walk *w, uint64_t addr, int depth, int must_be_group) {
    if (depth > MAX_DEPTH) return bad(w, "groups nested deeper than %d levels", MAX_DEPTH);
    if (addr == 0 || addr >= w->eof) return bad(w, "a link to address %llu, where no object can be", (unsigned long long)addr);
    int s = seen_before(w, addr);
    if (s < 0) return bad(w, "out of memory");
    if (s) return 0;                /* hard links may share an object; each is checked once */
    object o = {.addr = addr};
    int rc = check_chunk(w, &o, addr, 0, 1);
    for (size_t i = 0; !rc && i < o.n_conts; i++) rc = check_chunk(w, &o, o.conts[i][0], o.conts[i][1], 0);
    char where[96];
    snprintf(where, sizeof where, "object header at %llu", (unsigned long long)addr);
    int group = o.linfo || o.ginfo || o.n_links;
    int dataset = o.dataspace || o.datatype || o.layout || o.fill;
    if (rc) {
    } else if (group && dataset) {
        rc = bad(w, "%s: both a group and a dataset", where);
    } else if (group) {
        if (o.linfo != 1 || o.ginfo != 1) rc = bad(w, "%s: a group without exactly one link info and group info message", where);
        else rc = check_children(w, &o, depth);
    } else if (must_be_group) {
        rc = bad(w, "%s: the root object is not a group", where);
    } else if (o.dataspace != 1 || o.datatype != 1 || o.layout != 1 || o.fill > 1) {
        rc = bad(w, "%s: neither a group nor a dataset of the kind efla writes", where);
    } else {
        uint64_t want;
        if (__builtin_mul_overflow(o.numel, o.elsize, &want))
            rc = bad(w, "%s: dataset of an impossible size", where);
        else if (o.data_size != want)
            rc = bad(w, "%s: dataset of %llu elements x %llu bytes stores %llu bytes", where,
                     (unsigned long long)o.numel, (unsigned long long)o.elsize, (unsigned long long)o.data_size);
        else if (o.layout_class == 1 && want > 0 &&
                 (o.data_addr == UNDEF || o.data_addr > w->eof || want > w->eof - o.data_addr))
            rc = bad(w, "%s: the dataset's %llu bytes lie outside the file", where, (unsigned long long)want);
    }
    free(o.links);
    return rc;
}

int efla_h5_check_layout(int fd, char *why, size_t cap) {
    walk w = {.fd = fd, .why = why, .cap = cap};
    why[0] = 0;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return bad(&w, "not a regular file");
    w.eof = (uint64_t)st.st_size;
    uint8_t *sb = read_at(&w, 0, w.eof < 48 ? w.eof : 48, "the superblock");
    if (!sb) return -1;
    int rc = 0;
    if (w.eof < 48 || memcmp(sb, "\x89HDF\r\n\x1a\n", 8)) rc = bad(&w, "no HDF5 signature at the start (efla writes no user block)");
    else if (sb[8] != 2 && sb[8] != 3) rc = bad(&w, "superblock version %d (efla writes version 3)", sb[8]);
    else if (sb[9] != 8 || sb[10] != 8) rc = bad(&w, "offsets of %d and lengths of %d bytes (efla writes 8 and 8)", sb[9], sb[10]);
    else if (efla_h5_metadata_checksum(sb, 44, 0) != (uint32_t)le(sb + 44, 4)) rc = bad(&w, "the superblock fails its checksum");
    else if (sb[11] != 0) rc = bad(&w, "the file was not closed cleanly (superblock flags %x)", sb[11]);
    else if (le(sb + 12, 8) != 0) rc = bad(&w, "base address %llu (efla writes 0)", (unsigned long long)le(sb + 12, 8));
    else if (le(sb + 20, 8) != UNDEF) rc = bad(&w, "a superblock extension (efla never writes one)");
    else if (le(sb + 28, 8) > w.eof) rc = bad(&w, "truncated: the superblock says %llu bytes, the file has %llu",
                                             (unsigned long long)le(sb + 28, 8), (unsigned long long)w.eof);
    else {
        w.eof = le(sb + 28, 8);
        rc = check_object(&w, le(sb + 36, 8), 0, 1);
    }
    free(sb);
    efla_addr_set_free(&w.seen);
    return rc;
}

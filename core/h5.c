/* h5.c: HDF5 files for checkpoints (and data caches): tensors as datasets named by path,
 * string and number attributes, atomic writes.
 *
 * Layout choices (checkpoints/README.md documents them for Python users):
 *  - Every dataset has attribute efla_dtype (a string) and efla_crc32 (uint32: CRC-32 as
 *    zlib.crc32 of the little-endian C-order bytes), verified on every read, so that bit
 *    flips in raw data give an error instead of silently wrong weights. Metadata is
 *    covered by HDF5's own checksums: the file is written with the 1.10 format (libver
 *    bounds V110..LATEST), whose superblock, object headers and B-trees carry them.
 *  - bool is stored as uint8 and bfloat16 as uint16 (the raw bits); efla_dtype says which.
 *  - String attributes are fixed-length, null-terminated UTF-8: the bytes live inside the
 *    (checksummed) object header instead of HDF5's unchecksummed global heap. h5py returns
 *    them as bytes (numpy.bytes_). Strings of 32 KiB or more are stored as datasets under
 *    /efla_strings instead (see LONG_STRING).
 *  - Groups keep links and attributes "compact" (in their object headers) rather than in
 *    HDF5's dense storage: simpler, and it avoids a crash in HDF5 1.10's error path for
 *    damaged dense groups (see make_cpl).
 *  - Datasets are listed by our own walk over hard links (see walk_group), sorted by name.
 *  - Writing goes to a temporary file in the target's folder; commit flushes, closes,
 *    fsyncs, renames over the target and fsyncs the folder (atomic_file.c: symlinks are
 *    followed, devices/FIFOs/sockets/folders refused, stale temporaries removed). A crash
 *    at any moment leaves the old target or the new one.
 *  - Reading never follows external links and never loads HDF5 filter plugins, so a file
 *    can't make the process open other files or load code.
 * HDF5 from Debian is not thread-safe: use one efla_h5 from one thread at a time, and don't
 * use two concurrently. */
#include "internal.h"
#include "atomic_file.h"
#include "h5_check.h"

#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

struct efla_h5 {
    hid_t file;
    hid_t lapl;          /* link access: refuses external links */
    int writing;
    int broken;          /* a write failed part-way: commit refuses */
    char *path;          /* the target (writing) or the file (reading) */
    char *tmp;           /* the temporary file (writing) */
    char **names;        /* sorted dataset paths, built on demand */
    int n_names;
    int names_valid;
    char **strs;         /* strings handed out by read_attr_string, freed at close */
    int n_strs, cap_strs;
};

/* ---- helpers ------------------------------------------------------------------------------ */

/* HDF5 prints its error stack to stderr by default; we turn each failure into one message. */
static void h5_quiet(void) {
    static int done;
    if (done) return;
    /* No HDF5 clean-up at exit: after a write failed (disk full), H5Fclose fails and leaves
     * the file half-closed, and HDF5's atexit handler then crashes on it (exit status 139
     * with the data on disk fine). efla closes every file it opens, so there is nothing
     * for that handler to do. Must come before any other HDF5 call. */
    H5dont_atexit();
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    /* A file names filters by number; with plugins on, an unknown number makes HDF5 dlopen
     * a library from HDF5_PLUGIN_PATH. Checkpoints use no filters, so loading is off. */
    H5PLset_loading_state(0);
    done = 1;
}

typedef struct { char text[384]; int found; } h5_err;

static herr_t h5_err_walk(unsigned n, const H5E_error2_t *e, void *data) {
    h5_err *d = data;
    if (!d->found && e->desc && e->desc[0]) {
        snprintf(d->text, sizeof d->text, "%s", e->desc);
        d->found = 1;
    }
    return 0;
}

/* The most specific message on HDF5's error stack, e.g. "truncated file: eof = ...". */
static const char *h5_detail(void) {
    static _Thread_local h5_err d;
    d.found = 0;
    snprintf(d.text, sizeof d.text, "no details from HDF5");
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, h5_err_walk, &d);
    return d.text;
}

static char *dup_str(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

/* External links would make a read open another file; refuse to traverse them. */
static herr_t deny_elink(const char *parent_file, const char *parent_group, const char *child_file,
                         const char *child_object, unsigned *flags, hid_t fapl, void *data) {
    return -1;
}

static hid_t make_fapl(void) {
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0) return -1;
    /* 1.10 format: checksummed superblock v3, object headers v2. h5py and h5dump from
     * HDF5 >= 1.10 read it. */
    if (H5Pset_libver_bounds(fapl, H5F_LIBVER_V110, H5F_LIBVER_LATEST) < 0 ||
        H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG) < 0 ||
        /* Writes go to private temporary files and renames are atomic, so HDF5's flock
         * adds nothing and fails on some network file systems. */
        H5Pset_file_locking(fapl, 0, 1) < 0) {
        H5Pclose(fapl);
        return -1;
    }
    return fapl;
}

static efla_h5 *new_handle(const char *path, int writing) {
    efla_h5 *f = calloc(1, sizeof *f);
    if (!f) return NULL;
    f->file = -1;
    f->writing = writing;
    f->path = dup_str(path);
    f->lapl = H5Pcreate(H5P_LINK_ACCESS);
    if (!f->path || f->lapl < 0 || H5Pset_elink_cb(f->lapl, deny_elink, NULL) < 0) {
        if (f->lapl >= 0) H5Pclose(f->lapl);
        free(f->path);
        free(f);
        return NULL;
    }
    return f;
}

static void free_names(efla_h5 *f) {
    for (int i = 0; i < f->n_names; i++) free(f->names[i]);
    free(f->names);
    f->names = NULL;
    f->n_names = 0;
    f->names_valid = 0;
}

static void free_handle(efla_h5 *f) {
    if (f->file >= 0) H5Fclose(f->file);
    if (f->lapl >= 0) H5Pclose(f->lapl);
    free_names(f);
    for (int i = 0; i < f->n_strs; i++) free(f->strs[i]);
    free(f->strs);
    free(f->path);
    free(f->tmp);
    free(f);
}

/* ---- CRC-32: zlib's (the value zlib.crc32 and efla.sys.crc32 give) ------------------------------ */
static uint32_t crc32_bytes(const void *data, size_t n) {
    const Bytef *p = data;
    uLong c = crc32(0L, Z_NULL, 0);
    while (n) {  /* zlib takes uInt lengths: feed at most 1 GiB at a time */
        uInt k = n > (1u << 30) ? (1u << 30) : (uInt)n;
        c = crc32(c, p, k);
        p += k;
        n -= k;
    }
    return (uint32_t)c;
}

/* ---- dtypes ---------------------------------------------------------------------------------- */
/* File type (little-endian, what h5py sees) and memory type for each efla dtype. */
static hid_t file_type(efla_dtype d) {
    switch (d) {
    case EFLA_FLOAT32: return H5T_IEEE_F32LE;
    case EFLA_FLOAT64: return H5T_IEEE_F64LE;
    case EFLA_INT64: return H5T_STD_I64LE;
    case EFLA_UINT8: case EFLA_BOOL: return H5T_STD_U8LE;
    case EFLA_BFLOAT16: return H5T_STD_U16LE;
    }
    return -1;
}
static hid_t mem_type(efla_dtype d) {
    switch (d) {
    case EFLA_FLOAT32: return H5T_NATIVE_FLOAT;
    case EFLA_FLOAT64: return H5T_NATIVE_DOUBLE;
    case EFLA_INT64: return H5T_NATIVE_INT64;
    case EFLA_UINT8: case EFLA_BOOL: return H5T_NATIVE_UINT8;
    case EFLA_BFLOAT16: return H5T_NATIVE_UINT16;
    }
    return -1;
}

/* ---- names ----------------------------------------------------------------------------------- */
/* Normalise "a/b" or "/a/b" into "/a/b" (in buf); reject empty parts, ".", "..". */
static int norm_path(const char *op, const efla_h5 *f, const char *name, char *buf, size_t cap, int allow_root) {
    if (!name || !name[0]) {
        if (allow_root) { snprintf(buf, cap, "/"); return 0; }
        return efla_fail("%s: %s: empty dataset name; give a path such as \"/model/layer/weight\"", op, f->path);
    }
    int n = snprintf(buf, cap, "%s%s", name[0] == '/' ? "" : "/", name);
    if (n < 0 || (size_t)n >= cap) return efla_fail("%s: %s: name \"%.60s...\" is too long", op, f->path, name);
    if (strcmp(buf, "/") == 0) {
        if (allow_root) return 0;
        return efla_fail("%s: %s: \"/\" is the root group, not a dataset name", op, f->path);
    }
    /* check each component between slashes */
    const char *p = buf + 1;
    while (1) {
        const char *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);
        if (len == 0 || (len == 1 && p[0] == '.') || (len == 2 && p[0] == '.' && p[1] == '.'))
            return efla_fail("%s: %s: name \"%s\" has an empty, \".\" or \"..\" part; use names like "
                             "\"/model/layers/1/weight\"", op, f->path, name);
        if (!slash) break;
        p = slash + 1;
    }
    return 0;
}

/* 1 if `path` exists as a link in the file, 0 if not, -1 on error; checks parents first
 * (H5Lexists fails, rather than answering 0, when a parent is missing). */
static int path_exists(efla_h5 *f, const char *path) {
    if (strcmp(path, "/") == 0) return 1;
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *s = strchr(buf + 1, '/');; s = strchr(s + 1, '/')) {
        if (s) *s = 0;
        htri_t e = H5Lexists(f->file, buf, f->lapl);
        if (e <= 0) return e < 0 ? -1 : 0;
        if (!s) return 1;
        *s = '/';
    }
}

/* Object type at path: H5O_TYPE_GROUP / DATASET / ..., or H5O_TYPE_UNKNOWN when absent. */
static int object_type(efla_h5 *f, const char *path, H5O_type_t *type) {
    int e = path_exists(f, path);
    if (e < 0) return -1;
    if (!e) { *type = H5O_TYPE_UNKNOWN; return 0; }
    H5O_info_t info;
    if (H5Oget_info_by_name2(f->file, path, &info, H5O_INFO_BASIC, f->lapl) < 0) return -1;
    *type = info.type;
    return 0;
}

/* Creation property lists for groups (also the file's root group) and datasets: links
 * and attributes stay "compact", i.e. messages inside the checksummed object header,
 * instead of moving to the fractal heap + B-tree ("dense") storage after 8 entries. That
 * keeps the layout simple, and HDF5 1.10's error path for a damaged dense group frees
 * uninitialised memory (found by the bit-flip test under AddressSanitizer). Attributes
 * over 64 KiB still go to dense storage; HDF5 has no other place for them. */
static hid_t make_cpl(hid_t cls) {
    hid_t p = H5Pcreate(cls);
    if (p < 0) return -1;
    int links = cls == H5P_GROUP_CREATE || cls == H5P_FILE_CREATE;
    if (H5Pset_attr_phase_change(p, 65535, 0) < 0 || (links && H5Pset_link_phase_change(p, 65535, 0) < 0)) {
        H5Pclose(p);
        return -1;
    }
    return p;
}

/* Creates the missing groups on the way to path (and path itself when include_self), each
 * with make_cpl's settings; no proper prefix may be a dataset (HDF5 would only say
 * "unable to create"). */
static int make_groups(const char *op, efla_h5 *f, const char *path, int include_self) {
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", path);
    char *s = strchr(buf + 1, '/');
    while (1) {
        if (s) *s = 0;
        else if (!include_self) break;
        H5O_type_t type;
        if (object_type(f, buf, &type))
            return efla_fail("%s: %s: cannot look up %s (HDF5: %s)", op, f->path, buf, h5_detail());
        if (type == H5O_TYPE_DATASET)
            return efla_fail("%s: %s: cannot write %s because %s is already a dataset (a tensor and "
                             "a group can't share a name)", op, f->path, path, buf);
        if (type == H5O_TYPE_UNKNOWN) {
            hid_t gcpl = make_cpl(H5P_GROUP_CREATE);
            hid_t g = gcpl >= 0 ? H5Gcreate2(f->file, buf, H5P_DEFAULT, gcpl, H5P_DEFAULT) : -1;
            if (g < 0) {
                efla_fail("%s: %s: cannot create group %s (HDF5: %s)", op, f->path, buf, h5_detail());
                if (gcpl >= 0) H5Pclose(gcpl);
                f->broken = 1;
                return -1;
            }
            H5Gclose(g);
            H5Pclose(gcpl);
        }
        if (!s) break;
        *s = '/';
        s = strchr(s + 1, '/');
    }
    return 0;
}

/* ---- writing --------------------------------------------------------------------------------- */
efla_h5 *efla_h5_create(const char *path) {
    h5_quiet();
    if (!path || !path[0]) return efla_fail_null("h5_create: empty path");
    char *target, *tmp;
    if (efla_atomic_prepare("h5_create", path, &target, &tmp)) return NULL;
    efla_h5 *f = new_handle(target, 1);
    free(target);
    if (!f) { free(tmp); return efla_fail_null("h5_create: %s: out of memory", path); }
    f->tmp = tmp;

    hid_t fapl = make_fapl();
    if (fapl < 0) { efla_fail_null("h5_create: %s: HDF5 setup failed (%s)", path, h5_detail()); free_handle(f); return NULL; }
    hid_t fcpl = make_cpl(H5P_FILE_CREATE);
    f->file = fcpl >= 0 ? H5Fcreate(f->tmp, H5F_ACC_EXCL, fcpl, fapl) : -1;
    if (f->file < 0) {
        int err = errno;
        efla_fail_null("h5_create: cannot create the temporary file %s (%s; HDF5: %s)", f->tmp,
                       strerror(err), h5_detail());
        H5Pclose(fapl);  /* after h5_detail: any HDF5 call clears the error stack */
        if (fcpl >= 0) H5Pclose(fcpl);
        if (err != EEXIST) unlink(f->tmp);  /* an existing one is another writer's */
        free_handle(f);
        return NULL;
    }
    H5Pclose(fapl);
    H5Pclose(fcpl);
    return f;
}

static int write_crc_attr(const char *op, efla_h5 *f, const char *path, uint32_t crc);
static hid_t open_object(const char *op, efla_h5 *f, const char *object, char *path, size_t cap, int create);

static int check_writer(const char *op, efla_h5 *f) {
    if (!f) return efla_fail("%s: the file handle is NULL", op);
    if (!f->writing) return efla_fail("%s: %s was opened for reading; use efla_h5_create to write", op, f->path);
    return 0;
}

int efla_h5_write_tensor(efla_h5 *f, const char *name, const efla_tensor *t) {
    const char *op = "h5_write_tensor";
    h5_quiet();
    if (check_writer(op, f)) return -1;
    char path[1024];
    if (norm_path(op, f, name, path, sizeof path, 0)) return -1;
    if (!t) return efla_fail("%s: %s: tensor for %s is NULL", op, f->path, path);
    if (!strncmp(path, "/efla_strings/", 14))
        return efla_fail("%s: %s: %s: the group /efla_strings is reserved for long string attributes", op, f->path, path);
    hid_t ftype = file_type(t->dtype), mtype = mem_type(t->dtype);
    if (ftype < 0) return efla_fail("%s: %s: %s has an invalid dtype %d", op, f->path, path, (int)t->dtype);
    if (make_groups(op, f, path, 0)) return -1;
    int e = path_exists(f, path);
    if (e < 0) return efla_fail("%s: %s: cannot look up %s (HDF5: %s)", op, f->path, path, h5_detail());
    if (e) return efla_fail("%s: %s: %s was already written; every name must be unique", op, f->path, path);

    /* Host bytes, contiguous, in the tensor's own dtype: CPU contiguous tensors are
     * written in place, everything else (views, device tensors) goes through a copy. */
    int64_t numel = efla_tensor_numel(t);
    size_t nbytes = (size_t)numel * efla_dtype_size(t->dtype);
    void *copy = NULL;
    const void *bytes = NULL;
    if (numel > 0) {
        if (t->device == EFLA_DEVICE_CPU && efla_tensor_is_contiguous(t)) {
            bytes = efla_tensor_data(t);
        } else {
            copy = malloc(nbytes);
            if (!copy) return efla_fail("%s: %s: out of memory copying %s (%zu bytes)", op, f->path, path, nbytes);
            if (efla_to_buffer(t, copy, nbytes)) {
                free(copy);
                efla_error_prefix(op);
                return -1;
            }
            bytes = copy;
        }
    }
    uint32_t crc = crc32_bytes(bytes ? bytes : "", nbytes);

    hsize_t dims[EFLA_MAX_DIMS];
    for (int i = 0; i < t->ndim; i++) dims[i] = (hsize_t)t->shape[i];
    hid_t space = t->ndim == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(t->ndim, dims, NULL);
    hid_t dcpl = make_cpl(H5P_DATASET_CREATE);
    hid_t dset = -1;
    int rc = -1;
    f->names_valid = 0;
    if (space < 0 || dcpl < 0 || H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER) < 0) {
        efla_fail("%s: %s: HDF5 setup failed for %s (%s)", op, f->path, path, h5_detail());
        goto done;
    }
    f->broken = 1;  /* from here on a failure may leave a partial object behind */
    dset = H5Dcreate2(f->file, path, ftype, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    if (dset < 0) {
        efla_fail("%s: %s: cannot create dataset %s (HDF5: %s)", op, f->path, path, h5_detail());
        goto done;
    }
    if (numel > 0 && H5Dwrite(dset, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, bytes) < 0) {
        efla_fail("%s: %s: writing dataset %s failed (HDF5: %s; is the disk full?)", op, f->path, path, h5_detail());
        goto done;
    }
    H5Dclose(dset);
    dset = -1;
    if (efla_h5_write_attr_string(f, path, "efla_dtype", efla_dtype_name(t->dtype))) goto done;
    if (write_crc_attr(op, f, path, crc)) goto done;
    f->broken = 0;
    rc = 0;
done:
    if (dset >= 0) H5Dclose(dset);
    if (space >= 0) H5Sclose(space);
    if (dcpl >= 0) H5Pclose(dcpl);
    free(copy);
    return rc;
}

/* Opens the object at `object` (creating it as a group, with parents, when writing and it
 * is absent). Returns an object id or -1 with an error. */
static hid_t open_object(const char *op, efla_h5 *f, const char *object, char *path, size_t cap, int create) {
    if (norm_path(op, f, object, path, cap, 1)) return -1;
    H5O_type_t type;
    if (object_type(f, path, &type))
        return efla_fail("%s: %s: cannot look up %s (HDF5: %s)", op, f->path, path, h5_detail());
    if (type == H5O_TYPE_UNKNOWN) {
        if (!create) return efla_fail("%s: %s: no object %s in the file", op, f->path, path);
        if (make_groups(op, f, path, 1)) return -1;
    }
    hid_t obj = H5Oopen(f->file, path, f->lapl);
    if (obj < 0) return efla_fail("%s: %s: cannot open %s (HDF5: %s)", op, f->path, path, h5_detail());
    return obj;
}

/* Shared by the two attribute writers: replace any attribute `key` on object. */
static int write_attr(const char *op, efla_h5 *f, const char *object, const char *key,
                      hid_t ftype, hid_t mtype, const void *value) {
    h5_quiet();
    if (check_writer(op, f)) return -1;
    if (!key || !key[0]) return efla_fail("%s: %s: empty attribute name", op, f->path);
    char path[1024];
    hid_t obj = open_object(op, f, object, path, sizeof path, 1);
    if (obj < 0) return -1;
    int rc = -1;
    hid_t space = H5Screate(H5S_SCALAR), attr = -1;
    htri_t exists = H5Aexists(obj, key);
    if (space < 0 || exists < 0 || (exists > 0 && H5Adelete(obj, key) < 0)) {
        efla_fail("%s: %s: cannot replace attribute %s of %s (HDF5: %s)", op, f->path, key, path, h5_detail());
        goto done;
    }
    attr = H5Acreate2(obj, key, ftype, space, H5P_DEFAULT, H5P_DEFAULT);
    if (attr < 0 || H5Awrite(attr, mtype, value) < 0) {
        efla_fail("%s: %s: cannot write attribute %s of %s (HDF5: %s)", op, f->path, key, path, h5_detail());
        goto done;
    }
    rc = 0;
done:
    if (attr >= 0) H5Aclose(attr);
    if (space >= 0) H5Sclose(space);
    H5Oclose(obj);
    if (rc) f->broken = 1;
    return rc;
}

/* Long strings (a long metrics history, the optimiser state of a big model) don't fit an
 * object header message (64 KiB), and HDF5 then keeps the attribute in a heap outside the
 * checksummed metadata, where damage goes unnoticed and, worse, HDF5 1.10 decoding a
 * damaged one reads past its buffer (found by the bit-flip test under AddressSanitizer).
 * So strings from LONG_STRING bytes up are stored as a scalar string dataset at
 * /efla_strings/<object path>/<key>, with an efla_crc32 like a tensor's, and no attribute;
 * efla_h5_read_attr_string looks there when the attribute is absent. Listings skip
 * /efla_strings. */
enum { LONG_STRING = 32768 };

static int long_string_path(const char *op, efla_h5 *f, const char *object_path, const char *key, char *buf, size_t cap) {
    if (strchr(key, '/') || !strcmp(key, ".") || !strcmp(key, ".."))
        return efla_fail("%s: %s: attribute name \"%s\" can't hold a long string (over %d bytes): use a name "
                         "without '/'", op, f->path, key, (int)LONG_STRING);
    int n = snprintf(buf, cap, "/efla_strings%s/%s", strcmp(object_path, "/") ? object_path : "", key);
    if (n < 0 || (size_t)n >= cap) return efla_fail("%s: %s: attribute name \"%.40s...\" is too long", op, f->path, key);
    return 0;
}

/* Removes the link `path` if it exists (a replaced long string, or the attribute a long
 * string replaces). */
static int remove_link(const char *op, efla_h5 *f, const char *path) {
    int e = path_exists(f, path);
    if (e > 0 && H5Ldelete(f->file, path, H5P_DEFAULT) < 0) e = -1;
    if (e < 0) {
        f->broken = 1;
        return efla_fail("%s: %s: cannot remove %s (HDF5: %s)", op, f->path, path, h5_detail());
    }
    return 0;
}

static int write_crc_attr(const char *op, efla_h5 *f, const char *path, uint32_t crc) {
    hid_t aspace = H5Screate(H5S_SCALAR);
    hid_t obj = H5Oopen(f->file, path, f->lapl);
    hid_t attr = (aspace >= 0 && obj >= 0) ? H5Acreate2(obj, "efla_crc32", H5T_STD_U32LE, aspace, H5P_DEFAULT, H5P_DEFAULT) : -1;
    int ok = attr >= 0 && H5Awrite(attr, H5T_NATIVE_UINT32, &crc) >= 0;
    if (!ok) efla_fail("%s: %s: writing the checksum of %s failed (HDF5: %s)", op, f->path, path, h5_detail());
    if (attr >= 0) H5Aclose(attr);
    if (obj >= 0) H5Oclose(obj);
    if (aspace >= 0) H5Sclose(aspace);
    if (!ok) f->broken = 1;
    return ok ? 0 : -1;
}

/* Fixed-length UTF-8 string type of n bytes (n >= 1). */
static hid_t string_type(size_t n, H5T_str_t pad) {
    hid_t type = H5Tcopy(H5T_C_S1);
    if (type < 0) return -1;
    if (H5Tset_size(type, n) < 0 || H5Tset_strpad(type, pad) < 0 || H5Tset_cset(type, H5T_CSET_UTF8) < 0) {
        H5Tclose(type);
        return -1;
    }
    return type;
}

static int write_long_string(const char *op, efla_h5 *f, const char *lpath, const char *value, size_t len) {
    if (remove_link(op, f, lpath) || make_groups(op, f, lpath, 0)) return -1;
    hid_t type = string_type(len, H5T_STR_NULLPAD);
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t dcpl = make_cpl(H5P_DATASET_CREATE);
    f->broken = 1;
    hid_t dset = (type >= 0 && space >= 0 && dcpl >= 0) ? H5Dcreate2(f->file, lpath, type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT) : -1;
    int ok = dset >= 0 && H5Dwrite(dset, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, value) >= 0;
    if (!ok) efla_fail("%s: %s: writing the long string %s failed (HDF5: %s; is the disk full?)", op, f->path, lpath, h5_detail());
    if (dset >= 0) H5Dclose(dset);
    if (dcpl >= 0) H5Pclose(dcpl);
    if (space >= 0) H5Sclose(space);
    if (type >= 0) H5Tclose(type);
    if (!ok || write_crc_attr(op, f, lpath, crc32_bytes(value, len))) return -1;
    f->broken = 0;
    return 0;
}

int efla_h5_write_attr_string(efla_h5 *f, const char *object, const char *key, const char *value) {
    const char *op = "h5_write_attr_string";
    h5_quiet();
    if (check_writer(op, f)) return -1;
    if (!key || !key[0]) return efla_fail("%s: %s: empty attribute name", op, f->path);
    if (!value) value = "";
    size_t len = strlen(value);
    char path[1024], lpath[1200];
    if (norm_path(op, f, object, path, sizeof path, 1)) return -1;
    int is_long = len >= LONG_STRING;
    /* where a long value would live; only long values need a valid dataset name */
    if (long_string_path(op, f, path, key, lpath, sizeof lpath)) {
        if (is_long) return -1;
        lpath[0] = 0;
    }
    if (is_long) {
        /* the object must exist; a short value stored before under this key goes */
        char opath[1024];
        hid_t obj = open_object(op, f, path, opath, sizeof opath, 1);
        if (obj < 0) return -1;
        htri_t e = H5Aexists(obj, key);
        int rc = (e < 0 || (e > 0 && H5Adelete(obj, key) < 0)) ? -1 : 0;
        if (rc) {
            efla_fail("%s: %s: cannot replace attribute %s of %s (HDF5: %s)", op, f->path, key, path, h5_detail());
            f->broken = 1;
        }
        H5Oclose(obj);
        return rc ? -1 : write_long_string(op, f, lpath, value, len);
    }
    /* fixed-length, null-terminated UTF-8 (size >= 1 even for ""): see the top comment */
    hid_t type = string_type(len + 1, H5T_STR_NULLTERM);
    if (type < 0) return efla_fail("%s: HDF5 string type setup failed (%s)", op, h5_detail());
    int rc = write_attr(op, f, path, key, type, type, value);
    H5Tclose(type);
    if (!rc && lpath[0]) rc = remove_link(op, f, lpath);  /* a long value stored before under this key */
    return rc;
}

int efla_h5_write_attr_double(efla_h5 *f, const char *object, const char *key, double value) {
    return write_attr("h5_write_attr_double", f, object, key, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &value);
}

int efla_h5_commit(efla_h5 *f) {
    h5_quiet();
    if (check_writer("h5_commit", f)) return -1;
    if (f->broken) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", efla_last_error());
        efla_h5_abort(f);
        return efla_fail("h5_commit: an earlier write to this file failed, so nothing was committed and "
                         "the target is unchanged (last error: %s)", msg);
    }
    /* Flush and close: HDF5 writes its final metadata (superblock EOF) at close. */
    herr_t e = H5Fflush(f->file, H5F_SCOPE_GLOBAL);
    if (e < 0) efla_fail("h5_commit: %s: flushing %s failed (HDF5: %s; is the disk full?); the target is unchanged",
                         f->path, f->tmp, h5_detail());
    if (H5Fclose(f->file) < 0 && e >= 0) {
        e = -1;
        efla_fail("h5_commit: %s: closing %s failed (HDF5: %s; is the disk full?); the target is unchanged",
                  f->path, f->tmp, h5_detail());
    }
    f->file = -1;
    if (e < 0) {
        unlink(f->tmp);
        free_handle(f);
        return -1;
    }
    int rc = efla_atomic_finish("h5_commit", f->path, f->tmp);
    free_handle(f);
    return rc;
}

void efla_h5_abort(efla_h5 *f) {
    if (!f) return;
    h5_quiet();
    if (f->file >= 0) H5Fclose(f->file);
    f->file = -1;
    if (f->writing && f->tmp) unlink(f->tmp);
    free_handle(f);
}

/* ---- reading --------------------------------------------------------------------------------- */
static const unsigned char hdf5_magic[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};

efla_h5 *efla_h5_open(const char *path) {
    h5_quiet();
    if (!path || !path[0]) return efla_fail_null("h5_open: empty path");
    struct stat st;
    if (stat(path, &st) != 0) return efla_fail_null("h5_open: %s: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) return efla_fail_null("h5_open: %s is a folder, not an HDF5 file", path);
    if (!S_ISREG(st.st_mode)) return efla_fail_null("h5_open: %s is not a regular file (a device, FIFO or socket)", path);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return efla_fail_null("h5_open: %s: %s", path, strerror(errno));
    unsigned char head[8] = {0};
    ssize_t got = pread(fd, head, sizeof head, 0);
    if (got < 0) { int err = errno; close(fd); return efla_fail_null("h5_open: %s: read failed (%s)", path, strerror(err)); }
    if (got < 8 || memcmp(head, hdf5_magic, 8) != 0) {
        close(fd);
        if (got == 0) return efla_fail_null("h5_open: %s is not an HDF5 file (it is empty)", path);
        char shown[40];
        int k = 0;
        for (ssize_t i = 0; i < got && k < 30; i++)
            k += snprintf(shown + k, sizeof shown - (size_t)k, (head[i] >= 32 && head[i] < 127) ? "%c" : "\\x%02x", head[i]);
        return efla_fail_null("h5_open: %s is not an HDF5 file (it starts with \"%s\", not the HDF5 "
                              "signature \\x89HDF\\r\\n\\x1a\\n)", path, shown);
    }
    /* Before HDF5 sees the file: its metadata must be of the kinds efla writes (h5_check.c). */
    char why[256];
    int layout = efla_h5_check_layout(fd, why, sizeof why);
    struct stat checked;
    if (fstat(fd, &checked) != 0) memset(&checked, 0, sizeof checked);
    close(fd);
    if (layout) return efla_fail_null("h5_open: %s is truncated or corrupt, or not an efla checkpoint: %s", path, why);
    efla_h5 *f = new_handle(path, 0);
    if (!f) return efla_fail_null("h5_open: %s: out of memory", path);
    hid_t fapl = make_fapl();
    if (fapl < 0) { efla_fail_null("h5_open: %s: HDF5 setup failed (%s)", path, h5_detail()); free_handle(f); return NULL; }
    f->file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    if (f->file < 0)
        efla_fail_null("h5_open: %s: cannot open the HDF5 file: it is truncated or corrupt (HDF5: %s)", path, h5_detail());
    H5Pclose(fapl);  /* after h5_detail: any HDF5 call clears the error stack */
    if (f->file < 0) { free_handle(f); return NULL; }
    /* HDF5 opened the path again: it must still be the file that was checked */
    struct stat now;
    if (stat(path, &now) != 0 || now.st_dev != checked.st_dev || now.st_ino != checked.st_ino ||
        now.st_size != checked.st_size || now.st_mtim.tv_sec != checked.st_mtim.tv_sec ||
        now.st_mtim.tv_nsec != checked.st_mtim.tv_nsec) {
        free_handle(f);
        return efla_fail_null("h5_open: %s changed while it was being opened (another process is writing it?); try again", path);
    }
    return f;
}

/* ---- listing datasets ---------------------------------------------------------------------------
 * Our own walk instead of H5Lvisit: HDF5 1.10's H5Lvisit, when it fails inside a damaged
 * child group, frees uninitialised memory while unwinding (found by the bit-flip test
 * under AddressSanitizer). Here each group's links are first collected by an iteration
 * that cannot fail in its callback, and children are examined outside it. */
typedef struct { char **items; int n, cap; } str_list;

static int str_list_add(str_list *l, const char *s) {
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 32;
        char **p = realloc(l->items, sizeof(char *) * (size_t)cap);
        if (!p) return -1;
        l->items = p;
        l->cap = cap;
    }
    if (!(l->items[l->n] = dup_str(s))) return -1;
    l->n++;
    return 0;
}
static void str_list_free(str_list *l) {
    for (int i = 0; i < l->n; i++) free(l->items[i]);
    free(l->items);
    l->items = NULL;
    l->n = l->cap = 0;
}

/* Hard links only: soft and external links are not followed (they could loop or point
 * into other files). */
static herr_t collect_link(hid_t group, const char *name, const H5L_info_t *info, void *data) {
    if (info->type != H5L_TYPE_HARD) return 0;
    return str_list_add(data, name) ? -1 : 0;
}

/* Groups already walked, by address: hard links can make a group its own descendant. */
typedef struct { haddr_t *addrs; int n, cap; } addr_set;
static int addr_seen(addr_set *s, haddr_t a) {
    for (int i = 0; i < s->n; i++) if (s->addrs[i] == a) return 1;
    if (s->n == s->cap) {
        int cap = s->cap ? 2 * s->cap : 64;
        haddr_t *p = realloc(s->addrs, sizeof(haddr_t) * (size_t)cap);
        if (!p) return -1;
        s->addrs = p;
        s->cap = cap;
    }
    s->addrs[s->n++] = a;
    return 0;
}

static int walk_group(const char *op, efla_h5 *f, const char *path, str_list *out, addr_set *seen, int depth) {
    if (depth > 64) return efla_fail("%s: %s: groups nested deeper than 64 levels at %s; the file is corrupt", op, f->path, path);
    hid_t g = H5Gopen2(f->file, path, H5P_DEFAULT);
    if (g < 0) return efla_fail("%s: %s: cannot open group %s: the file is corrupt (HDF5: %s)", op, f->path, path, h5_detail());
    str_list links = {0};
    herr_t e = H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, NULL, collect_link, &links);
    if (e < 0) efla_fail("%s: %s: listing group %s failed: the file is corrupt (HDF5: %s)", op, f->path, path, h5_detail());
    H5Gclose(g);
    int rc = e < 0 ? -1 : 0;
    for (int i = 0; i < links.n && !rc; i++) {
        if (depth == 0 && !strcmp(links.items[i], "efla_strings")) continue;  /* long attribute values */
        size_t len = strlen(path) + strlen(links.items[i]) + 2;
        char *child = malloc(len);
        if (!child) { rc = efla_fail("%s: out of memory", op); break; }
        snprintf(child, len, "%s%s%s", path, strcmp(path, "/") ? "/" : "", links.items[i]);
        H5O_info_t oi;
        if (H5Oget_info_by_name2(f->file, child, &oi, H5O_INFO_BASIC, f->lapl) < 0) {
            rc = efla_fail("%s: %s: cannot read object %s: the file is corrupt (HDF5: %s)", op, f->path, child, h5_detail());
        } else if (oi.type == H5O_TYPE_DATASET) {
            if (str_list_add(out, child)) rc = efla_fail("%s: out of memory", op);
        } else if (oi.type == H5O_TYPE_GROUP) {
            int s = addr_seen(seen, oi.addr);
            if (s < 0) rc = efla_fail("%s: out of memory", op);
            else if (s == 0) rc = walk_group(op, f, child, out, seen, depth + 1);
        }
        free(child);
    }
    str_list_free(&links);
    return rc;
}

static int cmp_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int load_names(const char *op, efla_h5 *f) {
    if (!f) return efla_fail("%s: the file handle is NULL", op);
    if (f->file < 0) return efla_fail("%s: %s is closed", op, f->path);
    if (f->names_valid) return 0;
    free_names(f);
    str_list l = {0};
    addr_set seen = {0};
    int rc = walk_group(op, f, "/", &l, &seen, 0);
    free(seen.addrs);
    if (rc) { str_list_free(&l); return -1; }
    if (l.n) qsort(l.items, (size_t)l.n, sizeof(char *), cmp_names);   /* qsort(NULL, 0) is UB */
    f->names = l.items;
    f->n_names = l.n;
    f->names_valid = 1;
    return 0;
}

int efla_h5_count(efla_h5 *f) {
    h5_quiet();
    if (load_names("h5_count", f)) return -1;
    return f->n_names;
}

const char *efla_h5_name(efla_h5 *f, int i) {
    h5_quiet();
    if (load_names("h5_name", f)) return NULL;
    if (i < 0 || i >= f->n_names)
        return efla_fail_null("h5_name: %s: index %d is out of range (the file has %d datasets)", f->path, i, f->n_names);
    return f->names[i];
}

/* Reads a string attribute into a malloc'ed buffer: 1 found, 0 absent, -1 error. */
static int read_string_attr(const char *op, efla_h5 *f, hid_t obj, const char *path, const char *key, char **out) {
    *out = NULL;
    htri_t exists = H5Aexists(obj, key);
    if (exists < 0) return efla_fail("%s: %s: reading attributes of %s failed: the file is corrupt (HDF5: %s)", op, f->path, path, h5_detail());
    if (!exists) return 0;
    hid_t attr = H5Aopen(obj, key, H5P_DEFAULT);
    hid_t type = attr >= 0 ? H5Aget_type(attr) : -1;
    hid_t space = attr >= 0 ? H5Aget_space(attr) : -1;
    int rc = -1;
    if (type < 0 || space < 0) {
        efla_fail("%s: %s: cannot open attribute %s of %s (HDF5: %s)", op, f->path, key, path, h5_detail());
        goto done;
    }
    if (H5Tget_class(type) != H5T_STRING) {
        efla_fail("%s: %s: attribute %s of %s is not a string", op, f->path, key, path);
        goto done;
    }
    if (H5Sget_simple_extent_npoints(space) != 1) {
        efla_fail("%s: %s: attribute %s of %s holds %lld strings; expected one", op, f->path, key, path,
                  (long long)H5Sget_simple_extent_npoints(space));
        goto done;
    }
    hid_t mt = H5Tcopy(H5T_C_S1);
    if (H5Tis_variable_str(type) > 0) {
        /* written by other tools (h5py's default for str) */
        char *vs = NULL;
        H5Tset_size(mt, H5T_VARIABLE);
        H5Tset_cset(mt, H5Tget_cset(type));
        if (H5Aread(attr, mt, &vs) < 0 || !vs) {
            efla_fail("%s: %s: reading attribute %s of %s failed: the file is corrupt (HDF5: %s)", op, f->path, key, path, h5_detail());
        } else {
            *out = dup_str(vs);
            rc = *out ? 1 : efla_fail("%s: out of memory", op);
        }
        if (vs) H5Dvlen_reclaim(mt, space, H5P_DEFAULT, &vs);
    } else {
        size_t n = H5Tget_size(type);
        char *buf = calloc(1, n + 1);
        H5Tset_size(mt, n + 1);  /* room for a terminator even when stored space-padded */
        H5Tset_strpad(mt, H5T_STR_NULLTERM);
        H5Tset_cset(mt, H5Tget_cset(type));
        if (!buf) efla_fail("%s: out of memory", op);
        else if (H5Aread(attr, mt, buf) < 0) {
            efla_fail("%s: %s: reading attribute %s of %s failed: the file is corrupt (HDF5: %s)", op, f->path, key, path, h5_detail());
            free(buf);
        } else {
            *out = buf;
            rc = 1;
        }
    }
    H5Tclose(mt);
done:
    if (space >= 0) H5Sclose(space);
    if (type >= 0) H5Tclose(type);
    if (attr >= 0) H5Aclose(attr);
    return rc;
}

/* Opens dataset `path` (normalised into buf) and finds its efla dtype. */
static hid_t open_dataset(const char *op, efla_h5 *f, const char *name, char *path, size_t cap, efla_dtype *dtype) {
    if (!f) return efla_fail("%s: the file handle is NULL", op);
    if (f->file < 0) return efla_fail("%s: %s is closed", op, f->path);
    if (norm_path(op, f, name, path, cap, 0)) return -1;
    H5O_type_t type;
    if (object_type(f, path, &type))
        return efla_fail("%s: %s: cannot look up %s: the file is corrupt (HDF5: %s)", op, f->path, path, h5_detail());
    if (type == H5O_TYPE_UNKNOWN) return efla_fail("%s: %s: no dataset %s in the file", op, f->path, path);
    if (type != H5O_TYPE_DATASET) return efla_fail("%s: %s: %s is a group, not a dataset", op, f->path, path);
    hid_t dset = H5Dopen2(f->file, path, H5P_DEFAULT);
    if (dset < 0) return efla_fail("%s: %s: cannot open dataset %s: the file is corrupt (HDF5: %s)", op, f->path, path, h5_detail());
    hid_t ft = H5Dget_type(dset);
    if (ft < 0) {
        efla_fail("%s: %s: cannot read the type of %s: the file is corrupt (HDF5: %s)", op, f->path, path, h5_detail());
        H5Dclose(dset);
        return -1;
    }
    H5T_class_t cls = H5Tget_class(ft);
    size_t size = H5Tget_size(ft);
    H5T_sign_t sign = cls == H5T_INTEGER ? H5Tget_sign(ft) : H5T_SGN_NONE;
    H5Tclose(ft);
    char *tag = NULL;
    if (read_string_attr(op, f, dset, path, "efla_dtype", &tag) < 0) { H5Dclose(dset); return -1; }
    int d = -1;
    if (tag) {
        d = efla_dtype_from_name(tag);
        /* the stored type must be the one this dtype is written as */
        int fits = d >= 0 && ((d == EFLA_FLOAT32 && cls == H5T_FLOAT && size == 4) ||
                              (d == EFLA_FLOAT64 && cls == H5T_FLOAT && size == 8) ||
                              (d == EFLA_INT64 && cls == H5T_INTEGER && size == 8 && sign == H5T_SGN_2) ||
                              ((d == EFLA_UINT8 || d == EFLA_BOOL) && cls == H5T_INTEGER && size == 1 && sign == H5T_SGN_NONE) ||
                              (d == EFLA_BFLOAT16 && cls == H5T_INTEGER && size == 2 && sign == H5T_SGN_NONE));
        if (!fits) {
            efla_fail("%s: %s: dataset %s says efla_dtype \"%.40s\" but is stored as a %zu-byte %s; the file is corrupt",
                      op, f->path, path, tag, size, cls == H5T_FLOAT ? "float" : cls == H5T_INTEGER ? "integer" : "non-numeric type");
            free(tag);
            H5Dclose(dset);
            return -1;
        }
        free(tag);
    } else if (cls == H5T_FLOAT) {
        /* files from other writers (h5py): map onto the nearest efla dtype; HDF5 converts */
        d = size <= 4 ? EFLA_FLOAT32 : EFLA_FLOAT64;
    } else if (cls == H5T_INTEGER) {
        d = (size == 1 && sign == H5T_SGN_NONE) ? EFLA_UINT8 : EFLA_INT64;
    } else {
        H5Dclose(dset);
        return efla_fail("%s: %s: dataset %s has an HDF5 type (class %d) that efla cannot read; efla reads "
                         "floats and integers", op, f->path, path, (int)cls);
    }
    *dtype = (efla_dtype)d;
    return dset;
}

static int dataset_shape(const char *op, efla_h5 *f, hid_t dset, const char *path, int *ndim, int64_t *shape) {
    hid_t space = H5Dget_space(dset);
    if (space < 0) return efla_fail("%s: %s: cannot read the shape of %s: the file is corrupt (HDF5: %s)", op, f->path, path, h5_detail());
    int nd = H5Sget_simple_extent_ndims(space);
    H5S_class_t cls = H5Sget_simple_extent_type(space);
    if (nd < 0 || cls == H5S_NULL || cls == H5S_NO_CLASS) {
        H5Sclose(space);
        return efla_fail("%s: %s: dataset %s has no dataspace efla understands", op, f->path, path);
    }
    if (nd > EFLA_MAX_DIMS) {
        H5Sclose(space);
        return efla_fail("%s: %s: dataset %s has %d dims; efla tensors have at most %d", op, f->path, path, nd, (int)EFLA_MAX_DIMS);
    }
    hsize_t dims[EFLA_MAX_DIMS];
    H5Sget_simple_extent_dims(space, dims, NULL);
    H5Sclose(space);
    for (int i = 0; i < nd; i++) {
        if (dims[i] > (hsize_t)INT64_MAX / 2)
            return efla_fail("%s: %s: dataset %s has an impossible size at dim %d; the file is corrupt", op, f->path, path, i);
        shape[i] = (int64_t)dims[i];
    }
    *ndim = nd;
    return 0;
}

int efla_h5_info(efla_h5 *f, const char *name, int *ndim, int64_t *shape, efla_dtype *dtype) {
    const char *op = "h5_info";
    h5_quiet();
    char path[1024];
    efla_dtype d;
    hid_t dset = open_dataset(op, f, name, path, sizeof path, &d);
    if (dset < 0) return -1;
    int nd = 0;
    int64_t sh[EFLA_MAX_DIMS];
    int rc = dataset_shape(op, f, dset, path, &nd, sh);
    H5Dclose(dset);
    if (rc) return -1;
    if (ndim) *ndim = nd;
    if (shape) memcpy(shape, sh, sizeof(int64_t) * (size_t)nd);
    if (dtype) *dtype = d;
    return 0;
}

efla_tensor *efla_h5_read_tensor(efla_h5 *f, const char *name) {
    const char *op = "h5_read_tensor";
    h5_quiet();
    char path[1024];
    efla_dtype d;
    hid_t dset = open_dataset(op, f, name, path, sizeof path, &d);
    if (dset < 0) return NULL;
    int nd = 0;
    int64_t sh[EFLA_MAX_DIMS];
    efla_tensor *t = NULL;
    if (dataset_shape(op, f, dset, path, &nd, sh)) goto fail;
    int64_t numel = 1;
    for (int i = 0; i < nd; i++)
        if (__builtin_mul_overflow(numel, sh[i], &numel) || numel > ((int64_t)1 << 56)) {
            efla_fail("%s: %s: dataset %s has an impossible number of elements; the file is corrupt", op, f->path, path);
            goto fail;
        }
    t = efla_empty(nd, sh, d, EFLA_DEVICE_CPU);
    if (!t) { efla_error_prefix(op); goto fail; }
    size_t nbytes = (size_t)numel * efla_dtype_size(d);
    if (numel > 0 && H5Dread(dset, mem_type(d), H5S_ALL, H5S_ALL, H5P_DEFAULT, efla_tensor_data(t)) < 0) {
        efla_fail("%s: %s: reading dataset %s failed: the file is truncated or corrupt (HDF5: %s)", op, f->path, path, h5_detail());
        goto fail;
    }
    /* the stored checksum, when the file has one (files from other writers may not) */
    htri_t has = H5Aexists(dset, "efla_crc32");
    if (has < 0) {
        efla_fail("%s: %s: reading attributes of %s failed: the file is corrupt (HDF5: %s)", op, f->path, path, h5_detail());
        goto fail;
    }
    if (has) {
        uint32_t stored = 0;
        hid_t attr = H5Aopen(dset, "efla_crc32", H5P_DEFAULT);
        herr_t e = attr >= 0 ? H5Aread(attr, H5T_NATIVE_UINT32, &stored) : -1;
        if (e < 0) efla_fail("%s: %s: reading the checksum of %s failed: the file is corrupt (HDF5: %s)", op, f->path, path, h5_detail());
        if (attr >= 0) H5Aclose(attr);
        if (e < 0) goto fail;
        uint32_t got = crc32_bytes(numel ? efla_tensor_data(t) : "", nbytes);
        if (got != stored) {
            efla_fail("%s: %s: dataset %s is corrupt (checksum mismatch: stored %08x, computed %08x); "
                      "the file was damaged after it was written, use another copy", op, f->path, path, stored, got);
            goto fail;
        }
    }
    H5Dclose(dset);
    return t;
fail:
    efla_tensor_release(t);
    H5Dclose(dset);
    return NULL;
}

static int keep_string(efla_h5 *f, char *s) {
    if (f->n_strs == f->cap_strs) {
        int cap = f->cap_strs ? 2 * f->cap_strs : 16;
        char **p = realloc(f->strs, sizeof(char *) * (size_t)cap);
        if (!p) return -1;
        f->strs = p;
        f->cap_strs = cap;
    }
    f->strs[f->n_strs++] = s;
    return 0;
}

/* Reads the long string stored at lpath (see LONG_STRING): 1 found, 0 absent, -1 error. */
static int read_long_string(const char *op, efla_h5 *f, const char *object, const char *key, const char *lpath, char **out) {
    *out = NULL;
    H5O_type_t otype;
    if (object_type(f, lpath, &otype))
        return efla_fail("%s: %s: cannot look up %s: the file is corrupt (HDF5: %s)", op, f->path, lpath, h5_detail());
    if (otype == H5O_TYPE_UNKNOWN) return 0;
    hid_t dset = otype == H5O_TYPE_DATASET ? H5Dopen2(f->file, lpath, H5P_DEFAULT) : -1;
    hid_t ft = dset >= 0 ? H5Dget_type(dset) : -1;
    hid_t space = dset >= 0 ? H5Dget_space(dset) : -1;
    int rc = -1;
    if (ft < 0 || space < 0 || H5Tget_class(ft) != H5T_STRING || H5Tis_variable_str(ft) != 0 ||
        H5Sget_simple_extent_npoints(space) != 1) {
        efla_fail("%s: %s: %s (the value of attribute %s of %s) is not a scalar string dataset: the file is corrupt",
                  op, f->path, lpath, key, object);
        goto done;
    }
    size_t n = H5Tget_size(ft);
    char *buf = malloc(n + 1);
    hid_t mt = string_type(n + 1, H5T_STR_NULLTERM);
    if (!buf || mt < 0) {
        efla_fail("%s: out of memory", op);
        free(buf);
    } else if (H5Dread(dset, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
        efla_fail("%s: %s: reading %s failed: the file is truncated or corrupt (HDF5: %s)", op, f->path, lpath, h5_detail());
        free(buf);
    } else {
        buf[n] = 0;
        *out = buf;
        rc = 1;
    }
    if (mt >= 0) H5Tclose(mt);
    if (rc == 1) {  /* the checksum over the string's bytes */
        uint32_t stored = 0;
        hid_t attr = H5Aexists(dset, "efla_crc32") > 0 ? H5Aopen(dset, "efla_crc32", H5P_DEFAULT) : -1;
        herr_t e = attr >= 0 ? H5Aread(attr, H5T_NATIVE_UINT32, &stored) : -1;
        if (e < 0) rc = efla_fail("%s: %s: the checksum of %s is missing or unreadable: the file is corrupt", op, f->path, lpath);
        if (attr >= 0) H5Aclose(attr);
        uint32_t got = crc32_bytes(*out, strlen(*out));
        if (rc == 1 && got != stored)
            rc = efla_fail("%s: %s: attribute %s of %s is corrupt (checksum mismatch: stored %08x, computed %08x); the "
                           "file was damaged after it was written, use another copy", op, f->path, key, object, stored, got);
        if (rc < 0) { free(*out); *out = NULL; }
    }
done:
    if (space >= 0) H5Sclose(space);
    if (ft >= 0) H5Tclose(ft);
    if (dset >= 0) H5Dclose(dset);
    return rc;
}

/* NULL with an empty efla_last_error() when the attribute (or the object) is absent;
 * NULL with a message on failure. */
const char *efla_h5_read_attr_string(efla_h5 *f, const char *object, const char *key) {
    const char *op = "h5_read_attr_string";
    h5_quiet();
    if (!f) return efla_fail_null("%s: the file handle is NULL", op);
    if (f->file < 0) return efla_fail_null("%s: %s is closed", op, f->path);
    if (!key || !key[0]) return efla_fail_null("%s: %s: empty attribute name", op, f->path);
    char path[1024], lpath[1200];
    if (norm_path(op, f, object, path, sizeof path, 1)) return NULL;
    H5O_type_t type;
    if (object_type(f, path, &type))
        return efla_fail_null("%s: %s: cannot look up %s: the file is corrupt (HDF5: %s)", op, f->path, path, h5_detail());
    if (type == H5O_TYPE_UNKNOWN) { efla_clear_error(); return NULL; }
    hid_t obj = H5Oopen(f->file, path, f->lapl);
    if (obj < 0) return efla_fail_null("%s: %s: cannot open %s: the file is corrupt (HDF5: %s)", op, f->path, path, h5_detail());
    char *s = NULL;
    int rc = read_string_attr(op, f, obj, path, key, &s);
    H5Oclose(obj);
    /* absent as an attribute: maybe a long string (names with '/' can't be one) */
    if (rc == 0 && long_string_path(op, f, path, key, lpath, sizeof lpath) == 0)
        rc = read_long_string(op, f, path, key, lpath, &s);
    if (rc < 0) { free(s); return NULL; }
    if (rc == 0) { efla_clear_error(); return NULL; }
    if (keep_string(f, s)) { free(s); return efla_fail_null("%s: out of memory", op); }
    return s;
}

int efla_h5_read_attr_double(efla_h5 *f, const char *object, const char *key, double *out) {
    const char *op = "h5_read_attr_double";
    h5_quiet();
    if (!f) return efla_fail("%s: the file handle is NULL", op);
    if (f->file < 0) return efla_fail("%s: %s is closed", op, f->path);
    if (!key || !key[0]) return efla_fail("%s: %s: empty attribute name", op, f->path);
    char path[1024];
    hid_t obj = open_object(op, f, object, path, sizeof path, 0);
    if (obj < 0) return -1;
    int rc = -1;
    hid_t attr = -1, type = -1, space = -1;
    htri_t exists = H5Aexists(obj, key);
    if (exists < 0) { efla_fail("%s: %s: reading attributes of %s failed: the file is corrupt (HDF5: %s)", op, f->path, path, h5_detail()); goto done; }
    if (!exists) { efla_fail("%s: %s: %s has no attribute %s", op, f->path, path, key); goto done; }
    attr = H5Aopen(obj, key, H5P_DEFAULT);
    type = attr >= 0 ? H5Aget_type(attr) : -1;
    space = attr >= 0 ? H5Aget_space(attr) : -1;
    if (type < 0 || space < 0) { efla_fail("%s: %s: cannot open attribute %s of %s (HDF5: %s)", op, f->path, key, path, h5_detail()); goto done; }
    H5T_class_t cls = H5Tget_class(type);
    if (cls != H5T_FLOAT && cls != H5T_INTEGER) { efla_fail("%s: %s: attribute %s of %s is not a number", op, f->path, key, path); goto done; }
    if (H5Sget_simple_extent_npoints(space) != 1) { efla_fail("%s: %s: attribute %s of %s is not a single number", op, f->path, key, path); goto done; }
    if (H5Aread(attr, H5T_NATIVE_DOUBLE, out) < 0) { efla_fail("%s: %s: reading attribute %s of %s failed (HDF5: %s)", op, f->path, key, path, h5_detail()); goto done; }
    rc = 0;
done:
    if (space >= 0) H5Sclose(space);
    if (type >= 0) H5Tclose(type);
    if (attr >= 0) H5Aclose(attr);
    H5Oclose(obj);
    return rc;
}

int efla_h5_close(efla_h5 *f) {
    if (!f) return 0;
    h5_quiet();
    if (f->writing) {
        char path[1024];
        snprintf(path, sizeof path, "%s", f->path);
        efla_h5_abort(f);
        return efla_fail("h5_close: %s was being written and was closed without efla_h5_commit; the write was "
                         "abandoned and the target is unchanged (call efla_h5_abort to abandon on purpose)", path);
    }
    herr_t e = H5Fclose(f->file);
    f->file = -1;
    char path[1024];
    snprintf(path, sizeof path, "%s", f->path);
    free_handle(f);
    if (e < 0) return efla_fail("h5_close: %s: closing failed (HDF5: %s)", path, h5_detail());
    return 0;
}

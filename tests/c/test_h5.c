#define _GNU_SOURCE  /* memmem */
/* test_h5.c: HDF5 checkpoint I/O: round trips of every dtype and shape, attributes,
 * atomic commit/abort, and damaged files (truncated, bit flips in data and in metadata,
 * text, empty, missing) giving clear errors, never crashes (checked in forked children). */
#include "test_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char dir[512];

static void path_in(char *buf, size_t cap, const char *name) { snprintf(buf, cap, "%s/%s", dir, name); }

static uint64_t rng_state = 0x243F6A8885A308D3ull;
static uint64_t next_u64(void) {
    rng_state ^= rng_state << 13; rng_state ^= rng_state >> 7; rng_state ^= rng_state << 17;
    return rng_state;
}

/* A tensor of dtype d and shape with random contents (valid values for bool). */
static efla_tensor *random_tensor(int ndim, const int64_t *shape, efla_dtype d) {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    size_t es = efla_dtype_size(d), nb = (size_t)n * es;
    unsigned char *buf = malloc(nb ? nb : 1);
    for (size_t i = 0; i < nb; i++) buf[i] = (unsigned char)next_u64();
    for (int64_t i = 0; i < n; i++) {  /* keep floats finite so that bytes compare cleanly */
        if (d == EFLA_FLOAT32) ((float *)buf)[i] = (float)((double)(next_u64() >> 11) / 9007199254740992.0 - 0.5);
        if (d == EFLA_FLOAT64) ((double *)buf)[i] = (double)(next_u64() >> 11) / 9007199254740992.0 * 1e3 - 500;
        if (d == EFLA_BOOL) buf[i] &= 1;
    }
    efla_tensor *t = MUST(efla_from_buffer(ndim, shape, d, buf, nb));
    free(buf);
    return t;
}

static int same_bytes(const efla_tensor *a, const efla_tensor *b) {
    if (efla_tensor_dtype(a) != efla_tensor_dtype(b) || efla_tensor_ndim(a) != efla_tensor_ndim(b)) return 0;
    for (int i = 0; i < efla_tensor_ndim(a); i++)
        if (efla_tensor_size(a, i) != efla_tensor_size(b, i)) return 0;
    size_t nb = (size_t)efla_tensor_numel(a) * efla_dtype_size(efla_tensor_dtype(a));
    if (!nb) return 1;
    unsigned char *pa = malloc(nb), *pb = malloc(nb);
    int ok = efla_to_buffer(a, pa, nb) == 0 && efla_to_buffer(b, pb, nb) == 0 && memcmp(pa, pb, nb) == 0;
    free(pa); free(pb);
    return ok;
}

static int count_temp_files(void) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) if (strstr(e->d_name, ".tmp-")) n++;
    closedir(d);
    return n;
}

static unsigned char *read_file(const char *p, size_t *n) {
    FILE *fp = fopen(p, "rb");
    if (!fp) return NULL;
    fseek(fp, 0, SEEK_END);
    long sz = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)sz + 1);
    *n = fread(b, 1, (size_t)sz, fp);
    fclose(fp);
    return b;
}
static void write_file(const char *p, const void *data, size_t n) {
    FILE *fp = fopen(p, "wb");
    fwrite(data, 1, n, fp);
    fclose(fp);
}

/* ---- round trips -------------------------------------------------------------------------- */
static const efla_dtype all_dtypes[] = {EFLA_FLOAT32, EFLA_FLOAT64, EFLA_BFLOAT16, EFLA_INT64, EFLA_UINT8, EFLA_BOOL};
static const int n_shapes = 6;
static const int shape_ndim[] = {0, 1, 1, 2, 3, 4};
static const int64_t shapes[][4] = {{0}, {0}, {7}, {33, 65}, {3, 0, 2}, {2, 3, 1, 5}};

static void test_round_trip(void) {
    char p[600];
    path_in(p, sizeof p, "round.h5");
    efla_tensor *ts[6][6];
    efla_h5 *f = MUST(efla_h5_create(p));
    for (int d = 0; d < 6; d++)
        for (int s = 0; s < n_shapes; s++) {
            ts[d][s] = random_tensor(shape_ndim[s], shapes[s], all_dtypes[d]);
            char name[128];
            snprintf(name, sizeof name, "/model/%s/shape%d/w", efla_dtype_name(all_dtypes[d]), s);
            CHECK(efla_h5_write_tensor(f, name, ts[d][s]) == 0, "write %s", name);
        }
    /* a name without the leading slash is the same path */
    efla_tensor *x = random_tensor(1, (int64_t[]){4}, EFLA_FLOAT32);
    CHECK(efla_h5_write_tensor(f, "other/x", x) == 0, "relative name");
    CHECK(efla_h5_count(f) == 37, "count while writing: %d", efla_h5_count(f));
    MUST_OK(efla_h5_commit(f));

    f = MUST(efla_h5_open(p));
    CHECK(efla_h5_count(f) == 37, "count %d", efla_h5_count(f));
    /* names come sorted */
    int sorted = 1;
    for (int i = 1; i < efla_h5_count(f); i++)
        if (strcmp(efla_h5_name(f, i - 1), efla_h5_name(f, i)) >= 0) sorted = 0;
    CHECK(sorted, "names sorted");
    CHECK(strcmp(efla_h5_name(f, 0), "/model/bfloat16/shape0/w") == 0, "first name %s", efla_h5_name(f, 0));
    CHECK(strcmp(efla_h5_name(f, 36), "/other/x") == 0, "last name %s", efla_h5_name(f, 36));
    CHECK_ERROR(efla_h5_name(f, 37) == NULL, "out of range");
    for (int d = 0; d < 6; d++)
        for (int s = 0; s < n_shapes; s++) {
            char name[128];
            snprintf(name, sizeof name, "/model/%s/shape%d/w", efla_dtype_name(all_dtypes[d]), s);
            int nd = -1;
            int64_t shape[EFLA_MAX_DIMS];
            efla_dtype dt;
            CHECK(efla_h5_info(f, name, &nd, shape, &dt) == 0 && nd == shape_ndim[s] && dt == all_dtypes[d] &&
                  (nd == 0 || memcmp(shape, shapes[s], sizeof(int64_t) * (size_t)nd) == 0), "info %s", name);
            efla_tensor *r = efla_h5_read_tensor(f, name);
            CHECK(r && same_bytes(r, ts[d][s]), "round trip %s", name);
            /* (is_contiguous says 0 for some empty shapes: only check tensors with elements) */
            CHECK(r && efla_tensor_device(r) == EFLA_DEVICE_CPU && (efla_tensor_numel(r) == 0 || efla_tensor_is_contiguous(r)),
                  "cpu, contiguous");
            efla_tensor_release(r);
            efla_tensor_release(ts[d][s]);
        }
    efla_tensor *r = efla_h5_read_tensor(f, "/other/x");
    CHECK(r && same_bytes(r, x), "relative name read back");
    efla_tensor_release(r);
    efla_tensor_release(x);
    /* the efla_dtype attribute names bool and bfloat16 */
    const char *tag = efla_h5_read_attr_string(f, "/model/bool/shape2/w", "efla_dtype");
    CHECK(tag && strcmp(tag, "bool") == 0, "bool tag %s", tag ? tag : "(null)");
    tag = efla_h5_read_attr_string(f, "/model/bfloat16/shape2/w", "efla_dtype");
    CHECK(tag && strcmp(tag, "bfloat16") == 0, "bf16 tag");
    /* reading errors name the dataset */
    CHECK_ERROR(efla_h5_read_tensor(f, "/model/nope") == NULL, "no dataset /model/nope");
    CHECK_ERROR(efla_h5_read_tensor(f, "/model") == NULL, "/model is a group");
    CHECK_ERROR(efla_h5_info(f, "", NULL, NULL, NULL) < 0, "empty dataset name");
    MUST_OK(efla_h5_close(f));
}

/* Views and non-contiguous tensors are written as what they show. */
static void test_views(void) {
    char p[600];
    path_in(p, sizeof p, "views.h5");
    efla_tensor *a = random_tensor(2, (int64_t[]){5, 6}, EFLA_FLOAT64);
    efla_tensor *row = MUST(efla_narrow(a, 0, 2, 2));      /* contiguous, nonzero offset */
    efla_tensor *tr = MUST(efla_transpose(a, 0, 1));       /* strided */
    efla_h5 *f = MUST(efla_h5_create(p));
    CHECK(efla_h5_write_tensor(f, "row", row) == 0, "write narrow view");
    int rc = efla_h5_write_tensor(f, "tr", tr);
    int skip_tr = rc < 0 && strstr(efla_last_error(), "not implemented");
    if (skip_tr) printf("skip: transposed write (CPU copy kernel not there yet: %s)\n", efla_last_error());
    else CHECK(rc == 0, "write transposed view");
    MUST_OK(efla_h5_commit(f));
    f = MUST(efla_h5_open(p));
    efla_tensor *r = efla_h5_read_tensor(f, "row");
    CHECK(r && same_bytes(r, row), "narrow view round trip");
    efla_tensor_release(r);
    if (!skip_tr) {
        r = efla_h5_read_tensor(f, "tr");
        int ok = r && efla_tensor_size(r, 0) == 6 && efla_tensor_size(r, 1) == 5;
        for (int64_t i = 0; ok && i < 6; i++)
            for (int64_t j = 0; j < 5; j++) {
                double u, v;
                efla_get(r, (int64_t[]){i, j}, &u);
                efla_get(a, (int64_t[]){j, i}, &v);
                if (u != v) ok = 0;
            }
        CHECK(ok, "transposed view round trip");
        efla_tensor_release(r);
    }
    MUST_OK(efla_h5_close(f));
    efla_tensor_release(row); efla_tensor_release(tr); efla_tensor_release(a);
}

/* ---- attributes ----------------------------------------------------------------------------- */
static void test_attributes(void) {
    char p[600];
    path_in(p, sizeof p, "attrs.h5");
    size_t big_n = 200000;  /* beyond the 64 KiB of an object header: dense storage */
    char *big = malloc(big_n + 1);
    for (size_t i = 0; i < big_n; i++) big[i] = (char)('a' + i % 26);
    big[big_n] = 0;
    const char *utf8 = "d\xc3\xa9j\xc3\xa0 vu \xe2\x88\x80x \xf0\x9f\x98\x80";
    efla_tensor *w = random_tensor(1, (int64_t[]){3}, EFLA_FLOAT32);

    efla_h5 *f = MUST(efla_h5_create(p));
    CHECK(efla_h5_write_attr_string(f, "/", "recipe", "mnist_mlp") == 0, "root string attr");
    CHECK(efla_h5_write_attr_string(f, NULL, "empty", "") == 0, "empty string (NULL object = root)");
    CHECK(efla_h5_write_attr_string(f, "/", "utf8", utf8) == 0, "utf8 attr");
    CHECK(efla_h5_write_attr_string(f, "/", "big", big) == 0, "200 KB attr");
    CHECK(efla_h5_write_attr_string(f, "/", "was_big", big) == 0, "200 KB attr");
    CHECK(efla_h5_write_attr_string(f, "/", "was_big", "short now") == 0, "long attr replaced by a short one");
    CHECK(efla_h5_write_attr_string(f, "/", "was_short", "short") == 0, "short attr");
    CHECK(efla_h5_write_attr_string(f, "/", "was_short", big) == 0, "short attr replaced by a long one");
    CHECK(efla_h5_write_attr_string(f, "/", "a/b", "slash") == 0, "short attr with a slash in its name");
    CHECK_ERROR(efla_h5_write_attr_string(f, "/", "a/b", big) < 0, "can't hold a long string");
    CHECK(efla_h5_write_attr_double(f, "/", "format_version", 1) == 0, "double attr");
    CHECK(efla_h5_write_attr_double(f, "/", "lr", 3e-4) == 0, "double attr");
    CHECK(efla_h5_write_attr_double(f, "/", "lr", 1e-3) == 0, "overwrite attr");
    CHECK(efla_h5_write_attr_string(f, "/meta/run", "who", "me") == 0, "attr on a new group");
    CHECK(efla_h5_write_attr_string(f, "/meta/long", "text", big) == 0, "long attr on a new group");
    CHECK(efla_h5_write_tensor(f, "/model/w", w) == 0, "dataset");
    CHECK_ERROR(efla_h5_write_tensor(f, "/efla_strings/x", w) < 0, "reserved for long string attributes");
    CHECK(efla_h5_write_attr_string(f, "/model/w", "note", "hello") == 0, "attr on a dataset");
    CHECK_ERROR(efla_h5_write_attr_string(f, "/", "", "x") < 0, "empty attribute name");
    MUST_OK(efla_h5_commit(f));

    f = MUST(efla_h5_open(p));
    const char *s = efla_h5_read_attr_string(f, "/", "recipe");
    CHECK(s && strcmp(s, "mnist_mlp") == 0, "recipe");
    const char *s2 = efla_h5_read_attr_string(f, "", "utf8");
    CHECK(s2 && strcmp(s2, utf8) == 0, "utf8");
    s = efla_h5_read_attr_string(f, "/", "empty");
    CHECK(s && s[0] == 0, "empty string");
    s = efla_h5_read_attr_string(f, "/", "big");
    CHECK(s && strlen(s) == big_n && memcmp(s, big, big_n) == 0, "big attr");
    CHECK(strcmp(s2, utf8) == 0, "earlier strings stay valid until close");
    s = efla_h5_read_attr_string(f, "/", "was_big");
    CHECK(s && strcmp(s, "short now") == 0, "long attr replaced by a short one");
    s = efla_h5_read_attr_string(f, "/", "was_short");
    CHECK(s && strcmp(s, big) == 0, "short attr replaced by a long one");
    s = efla_h5_read_attr_string(f, "/", "a/b");
    CHECK(s && strcmp(s, "slash") == 0, "attr with a slash");
    CHECK(efla_h5_count(f) == 1, "long strings are not listed as datasets (%d)", efla_h5_count(f));
    s = efla_h5_read_attr_string(f, "/meta/long", "text");
    CHECK(s && strcmp(s, big) == 0, "long attr on a group");
    s = efla_h5_read_attr_string(f, "/meta/run", "who");
    CHECK(s && strcmp(s, "me") == 0, "group attr");
    s = efla_h5_read_attr_string(f, "/model/w", "note");
    CHECK(s && strcmp(s, "hello") == 0, "dataset attr");
    double v = 0;
    CHECK(efla_h5_read_attr_double(f, "/", "format_version", &v) == 0 && v == 1, "format_version");
    CHECK(efla_h5_read_attr_double(f, "/", "lr", &v) == 0 && v == 1e-3, "overwritten lr %g", v);
    /* absent: NULL without an error; present but wrong type: an error */
    efla_clear_error();
    CHECK(efla_h5_read_attr_string(f, "/", "nope") == NULL && efla_last_error()[0] == 0, "absent attr");
    CHECK(efla_h5_read_attr_string(f, "/nowhere", "x") == NULL && efla_last_error()[0] == 0, "absent object");
    CHECK_ERROR(efla_h5_read_attr_string(f, "/", "lr") == NULL, "is not a string");
    CHECK_ERROR(efla_h5_read_attr_double(f, "/", "recipe", &v) < 0, "is not a number");
    CHECK_ERROR(efla_h5_read_attr_double(f, "/", "nope", &v) < 0, "has no attribute nope");
    /* writing into a reader is refused */
    CHECK_ERROR(efla_h5_write_attr_double(f, "/", "x", 1) < 0, "opened for reading");
    CHECK_ERROR(efla_h5_write_tensor(f, "/x", w) < 0, "opened for reading");
    CHECK_ERROR(efla_h5_commit(f) < 0, "opened for reading");
    MUST_OK(efla_h5_close(f));
    efla_tensor_release(w);
    free(big);
}

/* ---- bad names ------------------------------------------------------------------------------- */
static void test_bad_writes(void) {
    char p[600];
    path_in(p, sizeof p, "bad.h5");
    efla_tensor *w = random_tensor(1, (int64_t[]){2}, EFLA_FLOAT32);
    efla_h5 *f = MUST(efla_h5_create(p));
    CHECK_ERROR(efla_h5_write_tensor(f, "", w) < 0, "empty dataset name");
    CHECK_ERROR(efla_h5_write_tensor(f, "/", w) < 0, "root group");
    CHECK_ERROR(efla_h5_write_tensor(f, "/a//b", w) < 0, "empty, \".\" or \"..\" part");
    CHECK_ERROR(efla_h5_write_tensor(f, "/a/../b", w) < 0, "\"..\"");
    CHECK_ERROR(efla_h5_write_tensor(f, "/a/b", NULL) < 0, "is NULL");
    MUST_OK(efla_h5_write_tensor(f, "/a/b", w));
    CHECK_ERROR(efla_h5_write_tensor(f, "/a/b", w) < 0, "already written");
    CHECK_ERROR(efla_h5_write_tensor(f, "/a/b/c", w) < 0, "/a/b is already a dataset");
    /* argument errors above did not touch the file: it still commits */
    CHECK(efla_h5_commit(f) == 0, "commit after rejected writes");
    f = MUST(efla_h5_open(p));
    CHECK(efla_h5_count(f) == 1, "one dataset");
    MUST_OK(efla_h5_close(f));

    char q[600];
    path_in(q, sizeof q, "no/such/folder/x.h5");
    CHECK_ERROR(efla_h5_create(q) == NULL, "does not exist; create it first");
    CHECK_ERROR(efla_h5_create(dir) == NULL, "is a folder");
    CHECK_ERROR(efla_h5_create("") == NULL, "empty path");
    efla_tensor_release(w);
}

/* ---- atomicity --------------------------------------------------------------------------------- */
static void test_atomic(void) {
    char p[600];
    path_in(p, sizeof p, "atomic.h5");
    write_file(p, "old contents\n", 13);
    efla_tensor *w = random_tensor(2, (int64_t[]){16, 16}, EFLA_FLOAT32);
    int before = count_temp_files();

    /* target untouched until commit; the temporary file sits beside it */
    efla_h5 *f = MUST(efla_h5_create(p));
    MUST_OK(efla_h5_write_tensor(f, "/w", w));
    size_t n;
    unsigned char *b = read_file(p, &n);
    CHECK(b && n == 13 && memcmp(b, "old contents\n", 13) == 0, "target untouched before commit");
    free(b);
    CHECK(count_temp_files() == before + 1, "one temporary file while writing");
    MUST_OK(efla_h5_commit(f));
    CHECK(count_temp_files() == before, "no temporary file after commit");
    f = MUST(efla_h5_open(p));
    efla_tensor *r = efla_h5_read_tensor(f, "/w");
    CHECK(r && same_bytes(r, w), "new contents after commit");
    efla_tensor_release(r);
    MUST_OK(efla_h5_close(f));
    unsigned char *committed = read_file(p, &n);
    size_t committed_n = n;

    /* abort: target unchanged, no temporary file */
    f = MUST(efla_h5_create(p));
    MUST_OK(efla_h5_write_tensor(f, "/other", w));
    efla_h5_abort(f);
    CHECK(count_temp_files() == before, "abort leaves no temporary file");
    b = read_file(p, &n);
    CHECK(b && n == committed_n && memcmp(b, committed, n) == 0, "abort leaves the target");
    free(b);

    /* close on a writer abandons the write, with an error saying so */
    f = MUST(efla_h5_create(p));
    MUST_OK(efla_h5_write_tensor(f, "/other", w));
    CHECK_ERROR(efla_h5_close(f) < 0, "closed without efla_h5_commit");
    CHECK(count_temp_files() == before, "close of a writer leaves no temporary file");
    b = read_file(p, &n);
    CHECK(b && n == committed_n && memcmp(b, committed, n) == 0, "close of a writer leaves the target");
    free(b);

    /* writing into a fresh file in a folder that only holds the target name */
    char q[600];
    path_in(q, sizeof q, "fresh.h5");
    unlink(q);
    f = MUST(efla_h5_create(q));
    struct stat st;
    CHECK(stat(q, &st) != 0, "fresh target absent until commit");
    MUST_OK(efla_h5_commit(f));
    CHECK(stat(q, &st) == 0, "fresh target present after commit");
    free(committed);
    efla_tensor_release(w);
}

/* ---- damaged files ----------------------------------------------------------------------------- */
/* A checkpoint with a distinctive 4 KiB data blob we can find in the file's bytes. */
static unsigned char blob[4096];
static char big_attr[70001];
static void make_sample(const char *p) {
    for (size_t i = 0; i < sizeof blob; i++) blob[i] = (unsigned char)(i * 7 + 3 + (i >> 8));
    efla_tensor *t = MUST(efla_from_buffer(1, (int64_t[]){4096}, EFLA_UINT8, blob, sizeof blob));
    efla_tensor *w = random_tensor(2, (int64_t[]){4, 5}, EFLA_FLOAT32);
    efla_h5 *f = MUST(efla_h5_create(p));
    for (int i = 0; i < 12; i++) {  /* enough links for dense group storage too */
        char name[64];
        snprintf(name, sizeof name, "/model/layers/%d/weight", i);
        MUST_OK(efla_h5_write_tensor(f, name, w));
    }
    MUST_OK(efla_h5_write_tensor(f, "/model/blob", t));
    MUST_OK(efla_h5_write_attr_string(f, "/", "config_json", "{\"d\": 64, \"layers\": 12}"));
    MUST_OK(efla_h5_write_attr_double(f, "/", "format_version", 1));
    for (int i = 0; i < 12; i++) {  /* more attributes than HDF5's default compact limit (8) */
        char key[32];
        snprintf(key, sizeof key, "attr_%d", i);
        MUST_OK(efla_h5_write_attr_string(f, "/", key, key));
    }
    /* one attribute over 64 KiB (too long for an object header: stored as a dataset) */
    for (size_t i = 0; i < sizeof big_attr - 1; i++) big_attr[i] = (char)('A' + (i * 31 + i / 97) % 26);
    MUST_OK(efla_h5_write_attr_string(f, "/", "metrics_json", big_attr));
    MUST_OK(efla_h5_commit(f));
    efla_tensor_release(t);
    efla_tensor_release(w);
}

/* Opens and reads everything: READ_OK when all read and the blob is intact, READ_ERROR for
 * a clean error (message non-empty), READ_SILENT when data came back wrong without an error
 * (or an error said nothing). Distinct codes, so that a sanitizer's exit code (1) in a child
 * counts as a crash. */
enum { READ_OK = 0, READ_ERROR = 10, READ_SILENT = 11 };
static int read_all(const char *p) {
    efla_h5 *f = efla_h5_open(p);
    if (!f) return efla_last_error()[0] ? READ_ERROR : READ_SILENT;
    int n = efla_h5_count(f), rc = READ_OK;
    if (n < 0) rc = READ_ERROR;
    for (int i = 0; i < n && !rc; i++) {
        const char *name = efla_h5_name(f, i);
        efla_tensor *t = name ? efla_h5_read_tensor(f, name) : NULL;
        if (!t) { rc = READ_ERROR; break; }
        if (strcmp(name, "/model/blob") == 0 &&
            (efla_tensor_numel(t) != 4096 || memcmp(efla_tensor_data(t), blob, 4096) != 0)) rc = READ_SILENT;
        efla_tensor_release(t);
    }
    const char *s = rc ? NULL : efla_h5_read_attr_string(f, "/", "config_json");
    if (!rc && (!s || strcmp(s, "{\"d\": 64, \"layers\": 12}") != 0)) rc = efla_last_error()[0] ? READ_ERROR : READ_SILENT;
    s = rc ? NULL : efla_h5_read_attr_string(f, "/", "metrics_json");
    if (!rc && (!s || strcmp(s, big_attr) != 0)) rc = efla_last_error()[0] ? READ_ERROR : READ_SILENT;
    s = rc ? NULL : efla_h5_read_attr_string(f, "/", "attr_7");
    if (!rc && (!s || strcmp(s, "attr_7") != 0)) rc = efla_last_error()[0] ? READ_ERROR : READ_SILENT;
    if (rc == READ_ERROR && !efla_last_error()[0]) rc = READ_SILENT;  /* an error must say something */
    efla_h5_close(f);
    return rc;
}

/* read_all in a child process: a crash shows up as a signal (or a sanitizer's exit code)
 * instead of killing the test. Returns read_all's code, or 100 + signal, or 200 + status. */
static int read_all_forked(const char *p) {
    fflush(stdout); fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) _exit(read_all(p));
    int status = 0;
    waitpid(pid, &status, 0);
    if (WIFSIGNALED(status)) return 100 + WTERMSIG(status);
    int code = WEXITSTATUS(status);
    return (code == READ_OK || code == READ_ERROR || code == READ_SILENT) ? code : 200 + code;
}

static void test_damaged(void) {
    char good[600], bad[600];
    path_in(good, sizeof good, "sample.h5");
    path_in(bad, sizeof bad, "damaged.h5");
    make_sample(good);
    CHECK(read_all(good) == READ_OK, "the sample reads cleanly");
    size_t n;
    unsigned char *bytes = read_file(good, &n);
    unsigned char *copy = malloc(n);

    /* truncated to half */
    write_file(bad, bytes, n / 2);
    int rc = read_all(bad);
    CHECK(rc == READ_ERROR, "truncated file: clean error (rc %d)", rc);
    CHECK_ERROR(efla_h5_open(bad) == NULL, "truncated or corrupt");

    /* bit flips in the middle of the data: checksum error naming the dataset */
    unsigned char *at = memmem(bytes, n, blob, sizeof blob);
    CHECK(at != NULL, "found the blob in the file");
    if (at) {
        memcpy(copy, bytes, n);
        copy[(at - bytes) + 2000] ^= 0x10;
        write_file(bad, copy, n);
        efla_h5 *f = efla_h5_open(bad);
        CHECK(f != NULL, "data flip: the file still opens");
        if (f) {
            CHECK_ERROR(efla_h5_read_tensor(f, "/model/blob") == NULL, "dataset /model/blob is corrupt (checksum mismatch");
            efla_tensor *ok = efla_h5_read_tensor(f, "/model/layers/3/weight");
            CHECK(ok != NULL, "the other datasets still read");
            efla_tensor_release(ok);
            efla_h5_close(f);
        }
    }

    /* a bit flip inside the long string attribute (stored as a dataset): its checksum
     * catches it */
    unsigned char *sat = memmem(bytes, n, big_attr, 1000);
    CHECK(sat != NULL, "found the long attribute in the file");
    if (sat) {
        memcpy(copy, bytes, n);
        copy[(sat - bytes) + 30000] ^= 0x02;
        write_file(bad, copy, n);
        efla_h5 *f = efla_h5_open(bad);
        CHECK(f != NULL, "attribute flip: the file still opens");
        if (f) {
            CHECK_ERROR(efla_h5_read_attr_string(f, "/", "metrics_json") == NULL,
                        "attribute metrics_json of / is corrupt (checksum mismatch");
            const char *s = efla_h5_read_attr_string(f, "/", "config_json");
            CHECK(s && strcmp(s, "{\"d\": 64, \"layers\": 12}") == 0, "the other attributes still read");
            efla_h5_close(f);
        }
    }

    /* the 64 bytes before the long attribute's text: damage there must not make the
     * attribute silently vanish or crash the reader */
    int vanished = 0, crashed = 0;
    for (size_t k = 1; sat && k <= 64 && (size_t)(sat - bytes) >= k; k++) {
        memcpy(copy, bytes, n);
        copy[(sat - bytes) - k] ^= (unsigned char)(1u << (k % 8));
        write_file(bad, copy, n);
        int r = read_all_forked(bad);
        if (r == READ_SILENT) vanished++;
        if (r >= 100) crashed++;
    }
    CHECK(vanished == 0 && crashed == 0, "flips before the long attribute: %d vanished, %d crashed", vanished, crashed);

    /* flips in the superblock */
    memcpy(copy, bytes, n);
    copy[20] ^= 0xff;  /* inside the superblock (version 3: checksummed) */
    write_file(bad, copy, n);
    CHECK_ERROR(efla_h5_open(bad) == NULL, "truncated or corrupt");
    memcpy(copy, bytes, n);
    copy[3] ^= 0x01;   /* the signature itself */
    write_file(bad, copy, n);
    CHECK_ERROR(efla_h5_open(bad) == NULL, "not an HDF5 file");

    /* every byte outside the data blob flipped in turn (all metadata): each read is clean
     * or a clean error, never a crash, never silently wrong data. Forked, so a crash inside
     * HDF5 is reported rather than fatal. */
    size_t blob_at = at ? (size_t)(at - bytes) : n, crashes = 0, silent = 0, errors = 0, tried = 0;
    size_t step = n / 150 + 1;
    for (size_t i = 0; i < n; i += (i < 512 ? 3 : step)) {
        if (i >= blob_at && i < blob_at + sizeof blob) continue;
        memcpy(copy, bytes, n);
        copy[i] ^= (unsigned char)(1u << (i % 8));
        write_file(bad, copy, n);
        int r = read_all_forked(bad);
        tried++;
        if (r >= 100) {
            crashes++;
            if (crashes < 5) fprintf(stderr, "byte %zu: child %s %d\n", i, r < 200 ? "died of signal" : "exited with", r % 100);
        } else if (r == READ_SILENT) { silent++; if (silent < 5) fprintf(stderr, "byte %zu: wrong data or an empty error\n", i); }
        else if (r == READ_ERROR) errors++;
    }
    printf("metadata flips: %zu tried, %zu clean errors, %zu harmless, %zu crashes, %zu silent\n", tried,
           errors, tried - errors - crashes - silent, crashes, silent);
    CHECK(crashes == 0, "no crash on metadata flips (%zu)", crashes);
    CHECK(silent == 0, "no silently wrong data (%zu)", silent);

    /* not HDF5 at all */
    write_file(bad, "{\"this\": \"is json\"}\n", 20);
    CHECK_ERROR(efla_h5_open(bad) == NULL, "is not an HDF5 file (it starts with \"{\"this\"");
    write_file(bad, "", 0);
    CHECK_ERROR(efla_h5_open(bad) == NULL, "is not an HDF5 file (it is empty)");
    /* the signature followed by garbage */
    memcpy(copy, bytes, 8);
    for (size_t i = 8; i < 4096 && i < n; i++) copy[i] = (unsigned char)next_u64();
    write_file(bad, copy, n < 4096 ? n : 4096);
    rc = read_all_forked(bad);
    CHECK(rc == READ_ERROR, "signature + garbage: clean error (rc %d)", rc);
    path_in(bad, sizeof bad, "missing.h5");
    CHECK_ERROR(efla_h5_open(bad) == NULL, "No such file or directory");
    CHECK_ERROR(efla_h5_open(dir) == NULL, "is a folder");
    CHECK_ERROR(efla_h5_open(NULL) == NULL, "empty path");
    free(bytes);
    free(copy);
}

/* A failed write (here: the disk is "full", via RLIMIT_FSIZE in a child process) makes
 * commit refuse, leaving the target as it was and no temporary file. */
static void test_broken_commit(void) {
    char p[600];
    path_in(p, sizeof p, "broken.h5");
    write_file(p, "old", 3);
    int before = count_temp_files();
    fflush(stdout); fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);  /* writes past the limit fail with EFBIG instead */
        struct rlimit lim = {64 * 1024, 64 * 1024};
        setrlimit(RLIMIT_FSIZE, &lim);
        efla_tensor *w = random_tensor(1, (int64_t[]){1 << 18}, EFLA_FLOAT32);  /* 1 MiB */
        efla_h5 *f = efla_h5_create(p);
        if (!f) _exit(10);
        if (efla_h5_write_tensor(f, "/w", w) == 0) _exit(11);           /* must fail: too big */
        if (!strstr(efla_last_error(), "is the disk full?")) _exit(12);
        if (efla_h5_commit(f) == 0) _exit(13);                          /* must refuse */
        if (!strstr(efla_last_error(), "nothing was committed")) _exit(14);
        efla_tensor_release(w);
        _exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "failed write then refused commit (child status %d)", status);
    size_t n;
    unsigned char *b = read_file(p, &n);
    CHECK(b && n == 3 && memcmp(b, "old", 3) == 0, "target unchanged after a refused commit");
    free(b);
    CHECK(count_temp_files() == before, "refused commit removes the temporary file");
}

/* kill -9 at random moments while a child rewrites a checkpoint in a loop: the target is
 * always a whole checkpoint, old or new (every element equals the file's "version"). */
static void test_kill(void) {
    char p[600];
    path_in(p, sizeof p, "killed.h5");
    int64_t shape[1] = {1 << 16};  /* 256 KiB of float32 */
    efla_tensor *t = MUST(efla_full(1, shape, -1, EFLA_FLOAT32, EFLA_DEVICE_CPU));
    efla_h5 *f = MUST(efla_h5_create(p));
    MUST_OK(efla_h5_write_tensor(f, "/w", t));
    MUST_OK(efla_h5_write_attr_double(f, "/", "version", -1));
    MUST_OK(efla_h5_commit(f));
    efla_tensor_release(t);
    int whole = 0, rounds = 8;
    for (int r = 0; r < rounds; r++) {
        fflush(stdout); fflush(stderr);
        pid_t pid = fork();
        if (pid == 0) {
            /* no OpenMP kernels in a forked child (libgomp is not fork-safe): fill by hand */
            float *buf = malloc(sizeof(float) * (size_t)shape[0]);
            for (int k = 0;; k++) {
                for (int64_t i = 0; i < shape[0]; i++) buf[i] = (float)k;
                efla_tensor *x = efla_from_buffer(1, shape, EFLA_FLOAT32, buf, sizeof(float) * (size_t)shape[0]);
                efla_h5 *g = efla_h5_create(p);
                if (!x || !g || efla_h5_write_tensor(g, "/w", x) || efla_h5_write_attr_double(g, "/", "version", k) ||
                    efla_h5_commit(g)) _exit(3);
                efla_tensor_release(x);
            }
        }
        usleep((useconds_t)(5000 + next_u64() % 60000));
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        efla_h5 *h = efla_h5_open(p);
        double version = -2;
        efla_tensor *w = h ? efla_h5_read_tensor(h, "/w") : NULL;
        int ok = w && efla_h5_read_attr_double(h, "/", "version", &version) == 0 && efla_tensor_numel(w) == shape[0];
        for (int64_t i = 0; ok && i < shape[0]; i++)
            if (((float *)efla_tensor_data(w))[i] != (float)version) ok = 0;
        if (ok) { whole++; printf("%s%g", r ? " " : "kill -9 rounds, version found: ", version); }
        else fprintf(stderr, "round %d: the target is not a whole checkpoint: %s\n", r, efla_last_error());
        efla_tensor_release(w);
        efla_h5_close(h);
    }
    printf("\n");
    CHECK(whole == rounds, "after kill -9 the target is whole (%d of %d)", whole, rounds);
    /* the killed writers' temporary files are the only leftovers; remove them */
    DIR *d = opendir(dir);
    struct dirent *e;
    char q[1200];
    while ((e = readdir(d)))
        if (strstr(e->d_name, "killed.h5.tmp-")) { snprintf(q, sizeof q, "%s/%s", dir, e->d_name); unlink(q); }
    closedir(d);
}

int main(int argc, char **argv) {
    TEST_ARGS(argc, argv);
    const char *base = getenv("EFLA_TEST_TMP");
    if (base) mkdir(base, 0777);
    snprintf(dir, sizeof dir, "%s/test_h5.XXXXXX", base ? base : "/tmp");
    if (!mkdtemp(dir)) { perror("mkdtemp"); return 1; }
    int64_t live = efla_live_tensors();
    RUN(test_round_trip);
    RUN(test_views);
    RUN(test_attributes);
    RUN(test_bad_writes);
    RUN(test_atomic);
    RUN(test_damaged);
    RUN(test_broken_commit);
    RUN(test_kill);
    CHECK(efla_live_tensors() == live, "no tensor leaked (%lld live)", (long long)(efla_live_tensors() - live));
    /* clean up the scratch folder */
    DIR *d = opendir(dir);
    struct dirent *e;
    char p[1200];
    while ((e = readdir(d)))
        if (e->d_name[0] != '.') { snprintf(p, sizeof p, "%s/%s", dir, e->d_name); unlink(p); }
    closedir(d);
    rmdir(dir);
    TEST_SUMMARY();
}

/* atomic_file.c: the one way efla replaces a file (checkpoints, data caches, text reports):
 * write a temporary file beside the target, fsync it, rename it over the target, fsync the
 * folder. A crash at any moment leaves the old file or the new one, never half of one.
 *
 * Rules (docs/RELIABILITY.md):
 *  - the target must be a regular file or absent: a device, FIFO, socket or folder is
 *    refused, since the rename would replace it (saving to /dev/null as root once turned
 *    it into a regular file);
 *  - a symlink is followed (up to 40 levels) and the file it points to is replaced, so the
 *    link stays a link; a dangling link creates the file it names;
 *  - the temporary name is "<first 200 bytes of the name>.tmp-<pid>-<8 hex digits>": it
 *    fits NAME_MAX (255) for any target name, and is unique per writer;
 *  - temporaries of this target left by writers that no longer run (killed mid-write) are
 *    removed when the next write of the same target starts. A writer in another PID
 *    namespace writing the same file at the same moment could look dead: don't share one
 *    checkpoint path between containers. */
#define _GNU_SOURCE
#include "atomic_file.h"
#include "internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum { TMP_PREFIX = 200 };

static char *dup_str(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

/* dir and base of path (dir "." when there is no slash, "/" for "/x"). */
static void split(const char *path, char *dir, size_t dcap, const char **base) {
    const char *slash = strrchr(path, '/');
    if (!slash) { snprintf(dir, dcap, "."); *base = path; return; }
    int n = slash == path ? 1 : (int)(slash - path);
    snprintf(dir, dcap, "%.*s", n, path);
    *base = slash + 1;
}

static const char *kind_of(mode_t m) {
    if (S_ISDIR(m)) return "a folder";
    if (S_ISCHR(m)) return "a character device";
    if (S_ISBLK(m)) return "a block device";
    if (S_ISFIFO(m)) return "a FIFO";
    if (S_ISSOCK(m)) return "a socket";
    return "not a regular file";
}

/* The file a write of path replaces: path itself, or where its symlinks lead. */
static char *resolve(const char *op, const char *path) {
    char *cur = dup_str(path);
    for (int depth = 0; cur; depth++) {
        struct stat st;
        if (lstat(cur, &st) != 0 || !S_ISLNK(st.st_mode)) return cur;
        if (depth == 40) { free(cur); return efla_fail_null("%s: %s: too many levels of symbolic links", op, path); }
        char target[PATH_MAX];
        ssize_t n = readlink(cur, target, sizeof target - 1);
        if (n < 0) { free(cur); return efla_fail_null("%s: %s: cannot read the symbolic link (%s)", op, path, strerror(errno)); }
        target[n] = 0;
        char *next;
        if (target[0] == '/') {
            next = dup_str(target);
        } else {
            char dir[PATH_MAX];
            const char *base;
            split(cur, dir, sizeof dir, &base);
            size_t len = strlen(dir) + strlen(target) + 2;
            next = malloc(len);
            if (next) snprintf(next, len, "%s/%s", dir, target);
        }
        free(cur);
        cur = next;
    }
    return efla_fail_null("%s: %s: out of memory", op, path);
}

/* pid, or -1, from "<prefix>.tmp-<pid>-<hex>" when name is a temporary of that prefix. */
static long temp_owner(const char *name, const char *prefix, size_t plen) {
    if (strncmp(name, prefix, plen) || strncmp(name + plen, ".tmp-", 5)) return -1;
    char *end;
    long pid = strtol(name + plen + 5, &end, 10);
    if (end == name + plen + 5 || *end != '-' || pid <= 0) return -1;
    const char *h = end + 1;
    size_t n = strspn(h, "0123456789abcdef");
    return (n >= 8 && h[n] == 0) ? pid : -1;
}

static void remove_stale(const char *dir, const char *prefix) {
    DIR *d = opendir(dir);
    if (!d) return;
    size_t plen = strlen(prefix);
    for (struct dirent *e; (e = readdir(d));) {
        long pid = temp_owner(e->d_name, prefix, plen);
        if (pid <= 0 || pid == (long)getpid()) continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;  /* alive, or not ours to judge */
        char p[PATH_MAX];
        if (snprintf(p, sizeof p, "%s/%s", dir, e->d_name) < (int)sizeof p) unlink(p);
    }
    closedir(d);
}

int efla_atomic_prepare(const char *op, const char *path, char **target, char **tmp) {
    *target = *tmp = NULL;
    if (!path || !path[0]) return efla_fail("%s: empty path", op);
    char *t = resolve(op, path);
    if (!t) return -1;
    char dir[PATH_MAX];
    const char *base;
    split(t, dir, sizeof dir, &base);
    struct stat st;
    if (!base[0]) { efla_fail("%s: %s names a folder; give a file name", op, path); free(t); return -1; }
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        efla_fail("%s: %s: the folder %s does not exist; create it first", op, path, dir);
        free(t);
        return -1;
    }
    if (stat(t, &st) == 0 && !S_ISREG(st.st_mode)) {
        efla_fail("%s: %s is %s; efla writes only regular files (the save would replace it)", op, path, kind_of(st.st_mode));
        free(t);
        return -1;
    }
    char prefix[TMP_PREFIX + 1];
    snprintf(prefix, sizeof prefix, "%s", base);
    remove_stale(dir, prefix);
    uint32_t rnd = 0;
    if (getrandom(&rnd, sizeof rnd, GRND_NONBLOCK) != (ssize_t)sizeof rnd) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        static _Atomic uint32_t counter;
        rnd = (uint32_t)ts.tv_nsec * 2654435761u ^ (uint32_t)ts.tv_sec ^ ++counter;
    }
    size_t n = strlen(dir) + strlen(prefix) + 40;
    char *tp = malloc(n);
    if (!tp) { free(t); return efla_fail("%s: %s: out of memory", op, path); }
    snprintf(tp, n, "%s/%s.tmp-%ld-%08x", dir, prefix, (long)getpid(), rnd);
    *target = t;
    *tmp = tp;
    return 0;
}

int efla_atomic_finish(const char *op, const char *target, const char *tmp) {
    /* data on disk before the name points at it */
    int fd = open(tmp, O_RDONLY);
    if (fd < 0 || fsync(fd) != 0) {
        int err = errno;
        if (fd >= 0) close(fd);
        unlink(tmp);
        return efla_fail("%s: %s: fsync of %s failed (%s); the target is unchanged", op, target, tmp, strerror(err));
    }
    close(fd);
    if (rename(tmp, target) != 0) {
        int err = errno;
        unlink(tmp);
        return efla_fail("%s: renaming %s over %s failed (%s); the target is unchanged", op, tmp, target, strerror(err));
    }
    /* the rename itself on disk (best effort: some file systems refuse fsync on folders) */
    char dir[PATH_MAX];
    const char *base;
    split(target, dir, sizeof dir, &base);
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) { fsync(dfd); close(dfd); }
    return 0;
}

/* ---- the public writer ---------------------------------------------------------------------- */
struct efla_atomic_file {
    int fd;
    int failed;
    char *target, *tmp;
};

static void free_writer(efla_atomic_file *f) {
    if (f->fd >= 0) close(f->fd);
    free(f->target);
    free(f->tmp);
    free(f);
}

efla_atomic_file *efla_atomic_create(const char *path) {
    const char *op = "atomic_create";
    efla_atomic_file *f = calloc(1, sizeof *f);
    if (!f) return efla_fail_null("%s: out of memory", op);
    f->fd = -1;
    if (efla_atomic_prepare(op, path, &f->target, &f->tmp)) { free_writer(f); return NULL; }
    f->fd = open(f->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (f->fd < 0) {
        efla_fail("%s: cannot create the temporary file %s (%s)", op, f->tmp, strerror(errno));
        free_writer(f);
        return NULL;
    }
    return f;
}

int efla_atomic_write(efla_atomic_file *f, const void *data, size_t n) {
    if (!f) return efla_fail("atomic_write: the writer is NULL");
    if (f->failed) return efla_fail("atomic_write: %s: an earlier write failed", f->target);
    if (n && !data) return efla_fail("atomic_write: %s: NULL data of %zu bytes", f->target, n);
    const char *p = data;
    while (n) {
        ssize_t k = write(f->fd, p, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            f->failed = 1;
            return efla_fail("atomic_write: %s: writing %s failed (%s); the target is unchanged", f->target, f->tmp,
                             k < 0 ? strerror(errno) : "no progress");
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

int efla_atomic_commit(efla_atomic_file *f) {
    if (!f) return efla_fail("atomic_commit: the writer is NULL");
    if (f->failed) {
        char msg[512];
        snprintf(msg, sizeof msg, "atomic_commit: %s: an earlier write failed, nothing was committed and the target is unchanged", f->target);
        efla_atomic_abort(f);
        return efla_fail("%s", msg);
    }
    int e = close(f->fd);
    f->fd = -1;
    int rc;
    if (e != 0) {
        rc = efla_fail("atomic_commit: %s: closing %s failed (%s); the target is unchanged", f->target, f->tmp, strerror(errno));
        unlink(f->tmp);
    } else {
        rc = efla_atomic_finish("atomic_commit", f->target, f->tmp);
    }
    free_writer(f);
    return rc;
}

void efla_atomic_abort(efla_atomic_file *f) {
    if (!f) return;
    if (f->fd >= 0) close(f->fd);
    f->fd = -1;
    unlink(f->tmp);
    free_writer(f);
}

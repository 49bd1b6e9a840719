/* test_h5_saves.c: saves that never clobber what they shouldn't (issue 16, findings 2, 4, 9):
 * special files refused, symlinks written through, long names, stale temporaries of dead
 * writers removed, no crash at exit after a save that failed for lack of space, and the
 * same rules for the plain atomic writer (efla_atomic_*). */
#include <dirent.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_util.h"

static char dir[512];

static void path_in(char *buf, size_t cap, const char *name) { snprintf(buf, cap, "%s/%s", dir, name); }

static int save_small(const char *p, double version) {
    efla_h5 *f = efla_h5_create(p);
    if (!f) return -1;
    if (efla_h5_write_attr_double(f, "/", "version", version)) { efla_h5_abort(f); return -1; }
    return efla_h5_commit(f);
}

static double version_of(const char *p) {
    efla_h5 *f = efla_h5_open(p);
    double v = -1;
    if (f && efla_h5_read_attr_double(f, "/", "version", &v)) v = -2;
    efla_h5_close(f);
    return v;
}

static int count_with(const char *needle) {
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));) n += strstr(e->d_name, needle) != NULL;
    if (d) closedir(d);
    return n;
}

static void test_special_files(void) {
    char p[600];
    path_in(p, sizeof p, "fifo");
    CHECK(mkfifo(p, 0600) == 0, "made a FIFO");
    CHECK_ERROR(efla_h5_create(p) == NULL, "is a FIFO; efla writes only regular files");
    struct stat st;
    CHECK(stat(p, &st) == 0 && S_ISFIFO(st.st_mode), "the FIFO is still a FIFO");
    CHECK_ERROR(efla_atomic_create(p) == NULL, "is a FIFO");

    path_in(p, sizeof p, "sock");
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    int bound = strlen(p) < sizeof a.sun_path;
    if (bound) memcpy(a.sun_path, p, strlen(p) + 1);
    bound = bound && bind(s, (struct sockaddr *)&a, sizeof a) == 0;
    if (bound) {
        CHECK_ERROR(efla_h5_create(p) == NULL, "is a socket");
        CHECK(stat(p, &st) == 0 && S_ISSOCK(st.st_mode), "the socket is still a socket");
    }
    close(s);

    path_in(p, sizeof p, "folder");
    mkdir(p, 0700);
    CHECK_ERROR(efla_h5_create(p) == NULL, "is a folder");
    char q[700];
    snprintf(q, sizeof q, "%s/", p);
    CHECK_ERROR(efla_h5_create(q) == NULL, "names a folder");
    efla_h5 *h = efla_h5_create("/dev/null");
    CHECK(h == NULL && strstr(efla_last_error(), "is a character device"), "/dev/null refused: %s", efla_last_error());
    if (h) efla_h5_abort(h);   /* never commit over /dev/null, even when the check fails */
    CHECK(stat("/dev/null", &st) == 0 && S_ISCHR(st.st_mode), "/dev/null is still a device");
    /* a symlink to a FIFO: the FIFO is refused too */
    path_in(q, sizeof q, "link-to-fifo");
    CHECK(symlink("fifo", q) == 0, "made a link to the FIFO");
    CHECK_ERROR(efla_h5_create(q) == NULL, "is a FIFO");
    CHECK(count_with(".tmp-") == 0, "no temporary files left");
}

static void test_symlinks(void) {
    char real[600], link[600], sub[600], dangling[600];
    mkdir((path_in(sub, sizeof sub, "sub"), sub), 0700);
    path_in(real, sizeof real, "sub/real.h5");
    path_in(link, sizeof link, "link.h5");
    CHECK(save_small(real, 1) == 0, "saved the real file");
    CHECK(symlink("sub/real.h5", link) == 0, "made a relative symlink");
    CHECK(save_small(link, 2) == 0, "saved through the symlink: %s", efla_last_error());
    struct stat st;
    CHECK(lstat(link, &st) == 0 && S_ISLNK(st.st_mode), "the link is still a link");
    CHECK(version_of(real) == 2, "the file it points to has the new contents (%g)", version_of(real));
    CHECK(version_of(link) == 2, "and reads through the link");
    /* a dangling link creates the file it names */
    path_in(dangling, sizeof dangling, "dangling.h5");
    CHECK(symlink("sub/new.h5", dangling) == 0, "made a dangling link");
    CHECK(save_small(dangling, 3) == 0, "saved through a dangling link: %s", efla_last_error());
    path_in(real, sizeof real, "sub/new.h5");
    CHECK(version_of(real) == 3 && lstat(dangling, &st) == 0 && S_ISLNK(st.st_mode), "created the link's target");
    /* a loop */
    char l1[600], l2[600];
    path_in(l1, sizeof l1, "loop1");
    path_in(l2, sizeof l2, "loop2");
    CHECK(symlink("loop2", l1) == 0 && symlink("loop1", l2) == 0, "made a link loop");
    CHECK_ERROR(efla_h5_create(l1) == NULL, "too many levels of symbolic links");
}

static void test_long_name(void) {
    char name[254], p[900];
    memset(name, 'n', 250);
    memcpy(name + 250, ".h5", 4);   /* 253 characters */
    path_in(p, sizeof p, name);
    CHECK(save_small(p, 7) == 0, "a 253-character file name saves: %s", efla_last_error());
    CHECK(version_of(p) == 7, "and reads back");
    CHECK(count_with(".tmp-") == 0, "no temporary file left");
}

static void test_stale_temporaries(void) {
    char p[600], stale[700], live[700], other[700];
    path_in(p, sizeof p, "run.h5");
    pid_t dead = fork();
    if (dead == 0) _exit(0);
    waitpid(dead, NULL, 0);   /* a pid that no longer runs */
    snprintf(stale, sizeof stale, "%s.tmp-%d-0123abcd", p, (int)dead);
    snprintf(live, sizeof live, "%s.tmp-%d-0123abcd", p, (int)getppid());
    path_in(other, sizeof other, "other.h5.tmp-1-0123abcd");
    FILE *f;
    if ((f = fopen(stale, "w"))) fclose(f);
    if ((f = fopen(live, "w"))) fclose(f);
    if ((f = fopen(other, "w"))) fclose(f);
    CHECK(save_small(p, 1) == 0, "saved");
    CHECK(access(stale, F_OK) != 0, "the dead writer's temporary was removed");
    CHECK(access(live, F_OK) == 0, "a running writer's temporary stays");
    CHECK(access(other, F_OK) == 0, "another target's temporary stays");
    unlink(live);
    unlink(other);
}

/* Finding 4: with the disk full (here RLIMIT_FSIZE) while the file holds an 8-24 KB string
 * attribute, the failed close left HDF5 a half-closed file and its atexit handler crashed. */
static void test_failed_save_exit(void) {
    char p[600];
    path_in(p, sizeof p, "full.h5");
    int crashed = 0, refused = 0, runs = 0;
    for (int lim = 4096; lim <= 24576; lim += 4096)
        for (int len = 8000; len <= 24000; len += 8000) {
            fflush(stdout); fflush(stderr);
            pid_t pid = fork();
            if (pid == 0) {
                signal(SIGXFSZ, SIG_IGN);
                struct rlimit r = {(rlim_t)lim, (rlim_t)lim};
                setrlimit(RLIMIT_FSIZE, &r);
                char *s = malloc((size_t)len + 1);
                memset(s, 'x', (size_t)len);
                s[len] = 0;
                efla_h5 *f = efla_h5_create(p);
                if (!f) exit(3);
                int rc = efla_h5_write_attr_string(f, "/", "metrics_json", s);
                rc = rc ? (efla_h5_abort(f), -1) : efla_h5_commit(f);
                exit(rc ? 1 : 0);   /* exit, not _exit: the atexit handlers run */
            }
            int status = 0;
            waitpid(pid, &status, 0);
            runs++;
            if (WIFSIGNALED(status)) crashed++;
            else if (WEXITSTATUS(status) == 1) refused++;
        }
    CHECK(crashed == 0, "no crash at exit after a failed save (%d of %d runs crashed)", crashed, runs);
    CHECK(refused > 0, "some of those saves did fail (%d)", refused);
    CHECK(count_with("full.h5.tmp-") == 0, "no temporary file left");
}

static void test_atomic_writer(void) {
    char p[600];
    path_in(p, sizeof p, "text.txt");
    efla_atomic_file *f = MUST(efla_atomic_create(p));
    MUST_OK(efla_atomic_write(f, "hello ", 6));
    MUST_OK(efla_atomic_write(f, "world\n", 6));
    CHECK(access(p, F_OK) != 0, "nothing at the target before commit");
    MUST_OK(efla_atomic_commit(f));
    char buf[32] = {0};
    FILE *r = fopen(p, "r");
    CHECK(r && fread(buf, 1, sizeof buf - 1, r) == 12 && !strcmp(buf, "hello world\n"), "committed contents");
    if (r) fclose(r);
    /* a write past the file size limit: commit refuses, the target keeps its contents */
    fflush(stdout); fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit lim = {4096, 4096};
        setrlimit(RLIMIT_FSIZE, &lim);
        static char big[8192];
        efla_atomic_file *g = efla_atomic_create(p);
        if (!g) _exit(10);
        if (efla_atomic_write(g, big, sizeof big) == 0) _exit(11);
        if (efla_atomic_commit(g) == 0) _exit(12);
        if (!strstr(efla_last_error(), "nothing was committed")) _exit(13);
        exit(0);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "a failed write makes commit refuse (status %d)", status);
    r = fopen(p, "r");
    memset(buf, 0, sizeof buf);
    CHECK(r && fread(buf, 1, sizeof buf - 1, r) == 12 && !strcmp(buf, "hello world\n"), "target unchanged");
    if (r) fclose(r);
    CHECK(count_with("text.txt.tmp-") == 0, "no temporary file left");
    f = MUST(efla_atomic_create(p));
    efla_atomic_abort(f);
    CHECK(count_with("text.txt.tmp-") == 0, "abort removes the temporary file");
}

int main(int argc, char **argv) {
    TEST_ARGS(argc, argv);
    const char *base = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/efla_saves_XXXXXX", base && base[0] ? base : "/tmp");
    if (!mkdtemp(dir)) { perror("mkdtemp"); return 1; }
    RUN(test_special_files);
    RUN(test_symlinks);
    RUN(test_long_name);
    RUN(test_stale_temporaries);
    RUN(test_failed_save_exit);
    RUN(test_atomic_writer);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", dir);
    TEST_SUMMARY();
}

/* test_h5_regressions.c: replays every file in tests/fuzz/regressions (crafted by
 * tests/fuzz/make_regressions.py, or saved by the fuzzer: scripts/fuzz.sh) through the
 * checkpoint reader, each in a child process, so a crash is a failure rather than the end of
 * the test. Every file must give a clean error or read cleanly; the crafted ones must be
 * refused for the reason their name gives. */
#include <dirent.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_util.h"
#include "../fuzz/read_everything.h"

/* file name -> a phrase its refusal must contain */
static const struct { const char *file, *phrase; } expected[] = {
    {"dense_attributes.h5", "attributes in dense storage"},
    {"dense_attributes_4bytes.h5", "attributes in dense storage"},
    {"dense_attributes_h5py.h5", "attributes in dense storage"},
    {"dense_links.h5", "links in dense storage"},
    {"huge_dataset_no_data.h5", "268435456 elements x 4 bytes stores 16 bytes"},
    {"huge_dataset_past_eof.h5", "lie outside the file"},
    {"huge_long_string.h5", "x 734003200 bytes stores"},
    {"soft_link.h5", "a soft link"},
    {"external_link.h5", "an external link"},
    {"chunked_gzip.h5", "a filter pipeline"},
    {"vlen_string_attr.h5", "datatype class 9"},
    {"old_format.h5", "superblock version 0"},
};

int main(void) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", __FILE__);
    char *slash = strrchr(dir, '/');
    snprintf(slash ? slash + 1 : dir, sizeof dir - (size_t)(slash ? slash + 1 - dir : 0), "../fuzz/regressions");
    DIR *d = opendir(dir);
    CHECK(d != NULL, "the regression folder %s exists", dir);
    if (!d) TEST_SUMMARY();
    int files = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.') continue;
        char path[2048];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        files++;
        int pipefd[2];
        if (pipe(pipefd)) return 1;
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) {
            close(pipefd[0]);
            int rc = read_everything(path);
            const char *msg = efla_h5_open(path) ? "" : efla_last_error();
            if (write(pipefd[1], msg, strlen(msg)) < 0) rc = 3;
            _exit(rc);
        }
        close(pipefd[1]);
        char msg[1024] = {0};
        size_t got = 0;
        for (ssize_t k; got < sizeof msg - 1 && (k = read(pipefd[0], msg + got, sizeof msg - 1 - got)) > 0;) got += (size_t)k;
        close(pipefd[0]);
        int status = 0;
        waitpid(pid, &status, 0);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) <= 1, "%s: read cleanly or a clean error (status %d, signal %d)",
              e->d_name, WIFEXITED(status) ? WEXITSTATUS(status) : -1, WIFSIGNALED(status) ? WTERMSIG(status) : 0);
        for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++)
            if (!strcmp(expected[i].file, e->d_name))
                CHECK(strstr(msg, expected[i].phrase) != NULL, "%s refused with \"%s\": got \"%s\"", e->d_name, expected[i].phrase, msg);
    }
    closedir(d);
    CHECK(files >= 6, "found the crafted files (%d)", files);
    TEST_SUMMARY();
}

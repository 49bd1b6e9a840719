/* cpu_ops.c: CPU op benchmark; prints a markdown table (docs/BENCHMARKS.md keeps it).
 *   1. sgemm 1024^3: cblas_sgemm directly vs efla_matmul (GFLOP/s; target: efla >= 90%)
 *   2. elementwise add/mul of 16M float32, out of place and in place, 1 thread vs all
 *   3. a full sum of 16M float32, 1 thread vs all
 * Every number is the median of several repeats after a warm-up (cblas and efla_matmul
 * alternate, so that load from other processes hits both alike). Ops that are not
 * implemented yet print "n/a".
 * Build and run: bench/build_and_run_cpu_ops.sh [build-dir] */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "efla.h"

#define REPEATS 7

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Median seconds of fn(ctx) over REPEATS runs after one warm-up; < 0 if fn fails. */
typedef int (*bench_fn)(void *ctx);
static double median_time(bench_fn fn, void *ctx) {
    double t[REPEATS];
    if (fn(ctx)) return -1;
    for (int i = 0; i < REPEATS; i++) {
        double t0 = now();
        if (fn(ctx)) return -1;
        t[i] = now() - t0;
    }
    qsort(t, REPEATS, sizeof t[0], cmp_double);
    return t[REPEATS / 2];
}

/* Same for two functions run alternately, so that load from other processes hits both
 * alike (the sgemm comparison). */
static void median_pair(bench_fn f1, bench_fn f2, void *ctx, double *m1, double *m2) {
    double t1[REPEATS], t2[REPEATS];
    *m1 = *m2 = -1;
    int ok1 = !f1(ctx), ok2 = !f2(ctx);
    for (int i = 0; i < REPEATS; i++) {
        double t0 = now();
        if (ok1) ok1 = !f1(ctx);
        double t = now();
        if (ok2) ok2 = !f2(ctx);
        t1[i] = t - t0;
        t2[i] = now() - t;
    }
    qsort(t1, REPEATS, sizeof t1[0], cmp_double);
    qsort(t2, REPEATS, sizeof t2[0], cmp_double);
    if (ok1) *m1 = t1[REPEATS / 2];
    if (ok2) *m2 = t2[REPEATS / 2];
}

/* ---- the cases ------------------------------------------------------------------------------ */
typedef struct { int n; float *a, *b, *c; efla_tensor *ta, *tb; } gemm_ctx;

static int run_cblas(void *p) {
    gemm_ctx *g = p;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g->n, g->n, g->n, 1.0f, g->a, g->n, g->b, g->n, 0.0f, g->c,
                g->n);
    return 0;
}

static int run_matmul(void *p) {
    gemm_ctx *g = p;
    efla_tensor *r = efla_matmul(g->ta, g->tb);
    if (!r) return -1;
    efla_tensor_release(r);
    return 0;
}

typedef struct { efla_binary_op op; efla_tensor *a, *b; int in_place; } ew_ctx;

static int run_binary(void *p) {
    ew_ctx *e = p;
    if (e->in_place) return efla_binary_(e->op, e->a, e->b) < 0 ? -1 : 0;
    efla_tensor *r = efla_binary(e->op, e->a, e->b);
    if (!r) return -1;
    efla_tensor_release(r);
    return 0;
}

static int run_sum(void *p) {
    efla_tensor *r = efla_reduce(EFLA_SUM, (efla_tensor *)p, 0, NULL, 0, 0);
    if (!r) return -1;
    efla_tensor_release(r);
    return 0;
}

static void row(const char *op, const char *size, int threads, double sec, double amount, const char *unit,
                const char *note) {
    if (sec < 0) {
        printf("| %s | %s | %d | n/a | n/a | %s |\n", op, size, threads, note ? note : "not implemented yet");
        return;
    }
    printf("| %s | %s | %d | %.2f | %.1f %s | %s |\n", op, size, threads, sec * 1e3, amount / sec / 1e9, unit,
           note ? note : "");
}

static void cpu_name(char *buf, size_t cap) {
    snprintf(buf, cap, "unknown cpu");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[256];
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "model name", 10)) {
            char *c = strchr(line, ':');
            if (c) { snprintf(buf, cap, "%s", c + 2); buf[strcspn(buf, "\n")] = 0; }
            break;
        }
    fclose(f);
}

int main(void) {
    int all = efla_num_threads();
    char cpu[128];
    cpu_name(cpu, sizeof cpu);
    printf("CPU op benchmark: %s, %d threads, efla %s; median of %d runs\n\n", cpu, all, efla_version(), REPEATS);
    printf("| op | size | threads | ms | rate | note |\n|---|---|---|---|---|---|\n");

    /* 1. sgemm */
    gemm_ctx g = { .n = 1024 };
    int64_t sh[2] = { g.n, g.n };
    efla_manual_seed(1);
    g.ta = efla_rand(2, sh, EFLA_FLOAT32, EFLA_DEVICE_CPU);
    g.tb = efla_rand(2, sh, EFLA_FLOAT32, EFLA_DEVICE_CPU);
    if (!g.ta || !g.tb) { fprintf(stderr, "rand: %s\n", efla_last_error()); return 1; }
    g.a = efla_tensor_data(g.ta);
    g.b = efla_tensor_data(g.tb);
    g.c = malloc(sizeof(float) * (size_t)g.n * (size_t)g.n);
    double flops = 2.0 * g.n * g.n * g.n;
    for (int pass = 0; pass < 2; pass++) {
        int th = pass ? all : 1;
        if (pass && all == 1) break;
        efla_set_num_threads(th);
        openblas_set_num_threads(th);
        double tb, te;
        median_pair(run_cblas, run_matmul, &g, &tb, &te);
        /* same numbers as OpenBLAS? */
        char note[96] = "";
        efla_tensor *r = efla_matmul(g.ta, g.tb);
        if (r) {
            const float *p = efla_tensor_data(r);
            double worst = 0;
            for (int64_t i = 0; i < (int64_t)g.n * g.n; i++) worst = fmax(worst, fabs(p[i] - g.c[i]));
            snprintf(note, sizeof note, "%.1f%% of OpenBLAS; max diff %.1g", te > 0 ? 100.0 * tb / te : 0.0, worst);
            efla_tensor_release(r);
        }
        row("cblas_sgemm (OpenBLAS)", "1024^3", th, tb, flops, "GFLOP/s", "reference");
        row("efla_matmul float32", "1024^3", th, te, flops, "GFLOP/s", te > 0 ? note : NULL);
    }
    efla_tensor_release(g.ta);
    efla_tensor_release(g.tb);
    free(g.c);

    /* 2. elementwise and 3. sum on 16M float32 */
    int64_t n = 16 << 20;
    efla_tensor *a = efla_rand(1, &n, EFLA_FLOAT32, EFLA_DEVICE_CPU), *b = efla_rand(1, &n, EFLA_FLOAT32, EFLA_DEVICE_CPU);
    if (!a || !b) { fprintf(stderr, "rand: %s\n", efla_last_error()); return 1; }
    double bytes3 = 3.0 * 4.0 * (double)n, bytes1 = 4.0 * (double)n;
    const struct { efla_binary_op op; const char *name; } ops[2] = { { EFLA_ADD, "add" }, { EFLA_MUL, "mul" } };
    for (int oi = 0; oi < 2; oi++)
        for (int in_place = 0; in_place < 2; in_place++)
            for (int pass = 0; pass < 2; pass++) {
                int th = pass ? all : 1;
                if (pass && all == 1) break;
                efla_set_num_threads(th);
                /* in place multiplies a by b over and over: keep b = 1 so a stays finite */
                efla_tensor *bb = b;
                if (in_place && ops[oi].op == EFLA_MUL) bb = efla_ones(1, &n, EFLA_FLOAT32, EFLA_DEVICE_CPU);
                ew_ctx e = { ops[oi].op, a, bb, in_place };
                char name[64];
                snprintf(name, sizeof name, "%s float32 %s", ops[oi].name, in_place ? "in place (a op= b)" : "out of place");
                row(name, "16M", th, bb ? median_time(run_binary, &e) : -1, bytes3, "GB/s",
                    in_place ? "read a, b; write a" : "read a, b; write a new tensor");
                if (bb != b) efla_tensor_release(bb);
            }
    for (int pass = 0; pass < 2; pass++) {
        int th = pass ? all : 1;
        if (pass && all == 1) break;
        efla_set_num_threads(th);
        row("sum float32 (all dims)", "16M", th, median_time(run_sum, a), bytes1, "GB/s", "accumulates in double");
    }
    efla_set_num_threads(all);
    efla_tensor_release(a);
    efla_tensor_release(b);
    return 0;
}

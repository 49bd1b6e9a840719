/* delta_rule_cpu.c: throughput of the delta-rule operator on the cpu (float32).
 *
 * For each problem size it times, through the public API (efla_delta_rule + autograd):
 *   recurrent / chunked  x  forward / forward+backward
 * and prints tokens/s (token-heads are B*T*H; tokens are B*T), the FLOPs each form really
 * does (counted from the kernels' own products, see flops_*), the GFLOP/s that gives, and
 * the same run's OpenBLAS sgemm rate on 1024^3 for scale. A chunk-size sweep of the
 * chunked forward and a check that both forms agree come with it.
 *
 * Build and run: bench/run_delta_rule_cpu.sh (cc -O3 -march=native -fopenmp against
 * build/libefla.so). Arguments: [reps (default 5)] [B divisor (default 1)] [dk = dv (default 64)]. */
#include "efla.h"
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

char *openblas_get_corename(void);

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static uint64_t rs = 0x243F6A8885A308D3ull;
static double urand(void) {
    rs ^= rs << 13; rs ^= rs >> 7; rs ^= rs << 17;
    return (double)(rs >> 11) * (1.0 / 9007199254740992.0);
}
static float nrandf(void) { return (float)(sqrt(-2 * log(urand() + 1e-300)) * cos(6.283185307179586 * urand())); }

#define CHECKED(x) do { if ((x) < 0) { fprintf(stderr, "%s failed: %s\n", #x, efla_last_error()); exit(1); } } while (0)

/* ---- FLOPs each form does (multiply and add count 2), per (sequence, head) ---------------- */
static double flops_chunked(int64_t T, int64_t dk, int64_t dv, int64_t C, int backward) {
    double f = 0, a = (double)dk, b = (double)dv;
    for (int64_t c0 = 0; c0 < T; c0 += C) {
        double n = (double)(T - c0 < C ? T - c0 : C), up = n * (n + 1), dn = n * (n - 1);
        /* forward: V-KS, QS, K^TV' (2n dk dv each); lower K K^T and Q K^T; solve; M V' */
        double fwd = 6 * n * a * b + 2 * up * a + dn * b + up * b;
        /* backward (delta_rule_impl.h bwd_chunked): seven n x dk x dv products; K K^T, Q K^T,
         * dM K, dM^T Q (triangular), (P+P^T) K (full); solve, dOs V'^T, M^T dOs, solve^T, Y V'^T */
        double bwd = 14 * n * a * b + a * (4 * up + 2 * n * n) + b * (3 * up + 2 * dn);
        f += backward ? fwd + bwd : fwd;
    }
    return f;
}
static double flops_recurrent(int64_t T, int64_t dk, int64_t dv, int backward) {
    double per = 6.0 * (double)dk * (double)dv;                 /* update, S^T q, next S^T k */
    if (backward) per += 16.0 * (double)dk * (double)dv;        /* recompute 4 + backward 12 */
    return per * (double)T;
}

static efla_tensor *randt(int nd, const int64_t *shape, int kind) {
    int64_t n = 1;
    for (int i = 0; i < nd; i++) n *= shape[i];
    float *x = malloc(sizeof(float) * (size_t)n);
    int64_t d = shape[nd - 1];
    for (int64_t i = 0; i < n; i++) x[i] = kind == 2 ? (float)(0.05 + 0.9 * urand()) : nrandf();
    if (kind == 1)   /* keys: unit norm per head (DeltaNet's convention; EFLA doesn't need it) */
        for (int64_t r = 0; r < n / d; r++) {
            double s = 0;
            for (int64_t j = 0; j < d; j++) s += (double)x[r * d + j] * x[r * d + j];
            for (int64_t j = 0; j < d; j++) x[r * d + j] = (float)(x[r * d + j] / sqrt(s));
        }
    efla_tensor *t = efla_from_buffer(nd, shape, EFLA_FLOAT32, x, sizeof(float) * (size_t)n);
    free(x);
    return t;
}

typedef struct inputs { efla_tensor *q, *k, *v, *b; int64_t B, T, H, d; } inputs;

/* median seconds of `reps` runs of one configuration */
static double time_one(inputs *in, int algo, int C, int backward, int reps, efla_tensor **keep_out) {
    efla_delta_rule_opts o;
    efla_delta_rule_default_opts(&o);
    o.algorithm = algo;
    o.chunk_size = C;
    double ts[32];
    if (reps > 32) reps = 32;
    efla_tensor *leaves[4] = {in->q, in->k, in->v, in->b};
    for (int i = 0; i < 4; i++) CHECKED(efla_set_requires_grad(leaves[i], backward));
    int64_t so[4] = {in->B, in->T, in->H, in->d};
    efla_tensor *g = backward ? efla_ones(4, so, EFLA_FLOAT32, EFLA_DEVICE_CPU) : NULL;
    for (int r = -1; r < reps; r++) {   /* r = -1: warm-up */
        efla_tensor *out = NULL;
        double t0 = now();
        CHECKED(efla_delta_rule(in->q, in->k, in->v, in->b, NULL, NULL, &o, &out, NULL));
        if (backward) CHECKED(efla_backward(out, g, 0));
        double t1 = now();
        if (r >= 0) ts[r] = t1 - t0;
        for (int i = 0; i < 4; i++) efla_set_grad(leaves[i], NULL);
        if (keep_out && r == reps - 1) *keep_out = out;
        else efla_tensor_release(out);
    }
    efla_tensor_release(g);
    for (int i = 0; i < 4; i++) CHECKED(efla_set_requires_grad(leaves[i], 0));
    for (int i = 0; i < reps; i++)   /* insertion sort, then the median */
        for (int j = i; j > 0 && ts[j] < ts[j - 1]; j--) { double t = ts[j]; ts[j] = ts[j - 1]; ts[j - 1] = t; }
    return ts[reps / 2];
}

static double sgemm_gflops(int n, int reps) {
    float *a = malloc(sizeof(float) * (size_t)n * n), *b = malloc(sizeof(float) * (size_t)n * n);
    float *c = malloc(sizeof(float) * (size_t)n * n);
    for (int64_t i = 0; i < (int64_t)n * n; i++) { a[i] = nrandf(); b[i] = nrandf(); }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, b, n, 0, c, n);
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1, a, n, b, n, 0, c, n);
        double t = now() - t0;
        if (t < best) best = t;
    }
    free(a); free(b); free(c);
    return 2.0 * n * n * n / best / 1e9;
}

int main(int argc, char **argv) {
    int reps = argc > 1 ? atoi(argv[1]) : 5;
    int div = argc > 2 ? atoi(argv[2]) : 1;
    int64_t hd = argc > 3 ? atoll(argv[3]) : 64;
    if (reps < 1) reps = 1;
    if (div < 1) div = 1;
    double gemm = sgemm_gflops(1024, 5);
    printf("# delta rule on the cpu, float32, %d OpenMP threads; median of %d runs\n\n", efla_num_threads(), reps);
    printf("OpenBLAS sgemm 1024^3: %.1f GFLOP/s (same run, %d threads, core type %s)\n\n", gemm,
           openblas_get_num_threads(), openblas_get_corename());
    struct { int64_t B, T, H, d; } sizes[2] = {{8, 2048, 4, 64}, {128, 784, 1, 64}};
    printf("| B | T | H | dk=dv | form | pass | ms | Mtoken-heads/s | Mtokens/s | GFLOP | GFLOP/s | %% of sgemm |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for (int si = 0; si < 2; si++) {
        inputs in = {0};
        in.B = sizes[si].B / div; in.T = sizes[si].T; in.H = sizes[si].H; in.d = hd > 0 ? hd : sizes[si].d;
        if (in.B < 1) in.B = 1;
        int64_t s4[4] = {in.B, in.T, in.H, in.d}, s3[3] = {in.B, in.T, in.H};
        in.q = randt(4, s4, 0); in.k = randt(4, s4, 1); in.v = randt(4, s4, 0); in.b = randt(3, s3, 2);
        double pairs = (double)(in.B * in.H), tokheads = pairs * (double)in.T;
        efla_tensor *o_rec = NULL, *o_chk = NULL;
        for (int algo = EFLA_ALGO_RECURRENT; algo >= EFLA_ALGO_CHUNKED; algo--)
            for (int bw = 0; bw < 2; bw++) {
                double t = time_one(&in, algo, 64, bw, reps, bw ? NULL : (algo == EFLA_ALGO_RECURRENT ? &o_rec : &o_chk));
                double f = pairs * (algo == EFLA_ALGO_CHUNKED ? flops_chunked(in.T, in.d, in.d, 64, bw)
                                                               : flops_recurrent(in.T, in.d, in.d, bw));
                printf("| %lld | %lld | %lld | %lld | %s | %s | %.1f | %.2f | %.2f | %.2f | %.1f | %.0f%% |\n",
                       (long long)in.B, (long long)in.T, (long long)in.H, (long long)in.d,
                       algo == EFLA_ALGO_CHUNKED ? "chunked C=64" : "recurrent", bw ? "fwd+bwd" : "fwd", t * 1e3,
                       tokheads / t / 1e6, tokheads / (double)in.H / t / 1e6, f / 1e9, f / t / 1e9,
                       100 * f / t / 1e9 / gemm);
                fflush(stdout);
            }
        /* the two forms agree */
        int64_t n = efla_tensor_numel(o_rec);
        const float *a = efla_tensor_data(o_rec), *b = efla_tensor_data(o_chk);
        double num = 0, den = 1e-30;
        for (int64_t i = 0; i < n; i++) { num = fmax(num, fabs(a[i] - b[i])); den = fmax(den, fabs(a[i])); }
        fprintf(stderr, "size %d: max |recurrent - chunked| / max |o| = %.2e\n", si, num / den);
        efla_tensor_release(o_rec); efla_tensor_release(o_chk);
        /* chunk-size sweep, forward and forward+backward */
        for (int C = 16; C <= 128; C *= 2)
            for (int bw = 0; bw < 2; bw++) {
                double t = time_one(&in, EFLA_ALGO_CHUNKED, C, bw, reps, NULL);
                double f = pairs * flops_chunked(in.T, in.d, in.d, C, bw);
                fprintf(stderr, "size %d chunked C=%3d %-7s: %7.1f ms  %6.2f Mtoken-heads/s  %5.1f GFLOP/s\n", si, C,
                        bw ? "fwd+bwd" : "fwd", t * 1e3, tokheads / t / 1e6, f / t / 1e9);
            }
        efla_tensor_release(in.q); efla_tensor_release(in.k); efla_tensor_release(in.v); efla_tensor_release(in.b);
    }
    return 0;
}

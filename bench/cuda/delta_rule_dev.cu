/* delta_rule_dev.cu: a workbench for the delta-rule CUDA kernels, in the manner of llm.c's
 * dev/cuda: numbered kernel versions, each checked against a float64 CPU recurrence on fresh
 * random inputs (output and the gradients of q, k, v, alpha), then timed with CUDA events.
 * Try a new version without touching the library: copy cuda/delta_rule_chunk.cu and its
 * kernels (cuda/delta_rule_chunk_kernels.cuh, under a new include guard) to bench/cuda/ as
 * version N, rename its two entry points with the macros below, include it inside a namespace
 * of its own (as v2 is), add a row to VERSIONS, and run
 *
 *   bash bench/cuda/build_dev.sh                         (nvcc, links libefla for allocation)
 *   ./delta_rule_dev [version] [B T H d C] [time] [f32]  (default: every version, 2 512 4 128 64;
 *                                                         -1 = every version; 'time' skips the
 *                                                         float64 reference, for large shapes;
 *                                                         'f32': float32 inputs, checked within
 *                                                         1e-5, where bfloat16's are within 1e-2)
 *
 * With validation, a second case cuts every batch row into three packed sequences (cu_seqlens)
 * with a random initial state and final-state gradient, and the backward recomputes the chunk
 * states (the forward keeps none); it checks s_final and ds0 too, and is not timed.
 *
 * Before any GPU time, the kernels can be checked on the host: bench/cuda/delta_rule_chunk_emu.cpp
 * runs them against the same float64 reference (delta_rule_ref.h) with WMMA emulated.
 *
 * The inputs are bfloat16 (or float32) with alpha given (the chain through alpha is delta_rule_alpha.cu's
 * and not part of these kernels). Version 0 is the scan of cuda/delta_rule.cu (forced with
 * EFLA_DELTA_RULE_SCAN), the baseline every tensor-core version must beat. */
#define efla_cuda_delta_rule_chunk_v1_fwd v1_chunk_fwd
#define efla_cuda_delta_rule_chunk_v1_bwd v1_chunk_bwd
#include "../../cuda/delta_rule_chunk_v1.cu"
#undef efla_cuda_delta_rule_chunk_v1_fwd
#undef efla_cuda_delta_rule_chunk_v1_bwd
/* a version's own namespace keeps its file-local helpers apart from v1's (the headers it
 * includes are already in, so their guards keep them out of the namespace) */
#define efla_cuda_delta_rule_chunk_fwd v2_chunk_fwd
#define efla_cuda_delta_rule_chunk_bwd v2_chunk_bwd
namespace v2 {
#include "../../cuda/delta_rule_chunk.cu"
}
using v2::v2_chunk_fwd;
using v2::v2_chunk_bwd;
#undef efla_cuda_delta_rule_chunk_fwd
#undef efla_cuda_delta_rule_chunk_bwd
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vector>

/* libefla keeps its cached multiprocessor count (backend_cuda.cu) internal: the versions' launch
 * plans get it from here */
int cu_sm_count(void) {
    static int n = 0;
    if (!n) {
        int dev = 0;
        if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
            n = 16;
    }
    return n;
}

typedef int (*fwd_fn)(const efla_delta_rule_args *, const efla_delta_rule_buffers *, const int64_t *, int64_t, int);
typedef fwd_fn bwd_fn;

/* the library's whole CUDA entry (version 0 forces its scan kernels) */
static int lib_fwd(const efla_delta_rule_args *a, const efla_delta_rule_buffers *buf, const int64_t *, int64_t, int) {
    return efla_cuda_delta_rule_fwd(a, buf);
}
static int lib_bwd(const efla_delta_rule_args *a, const efla_delta_rule_buffers *buf, const int64_t *, int64_t, int) {
    return efla_cuda_delta_rule_bwd(a, buf);
}

/* entry F with the environment variable VAR set to VAL for the call: how a row forces one of a
 * version's choices (its measuring-aid variables) */
template <const char *VAR, const char *VAL, fwd_fn F>
int with_env(const efla_delta_rule_args *a, const efla_delta_rule_buffers *buf, const int64_t *seq, int64_t nch, int dev) {
    setenv(VAR, VAL, 1);
    int rc = F(a, buf, seq, nch, dev);
    unsetenv(VAR);
    return rc;
}
static const char SCAN[] = "EFLA_DELTA_RULE_SCAN", PREFETCH[] = "EFLA_DELTA_RULE_PREFETCH",
                  BWD_PREFETCH[] = "EFLA_DELTA_RULE_BWD_PREFETCH", SCAN_QK[] = "EFLA_DELTA_RULE_SCAN_QK", BWD_BV[] = "EFLA_DELTA_RULE_BWD_BV",
                  SCAN_BV[] = "EFLA_DELTA_RULE_SCAN_BV", ZERO[] = "0", ONE[] = "1", THIRTY_TWO[] = "32", SIXTY_FOUR[] = "64";

/* states: the dtype each version keeps the chunk states in (the buffer is sized for float32) */
static const struct { const char *name; fwd_fn fwd; bwd_fn bwd; efla_dtype states; } VERSIONS[] = {
    { "scan (cuda/delta_rule.cu)", with_env<SCAN, ONE, lib_fwd>, with_env<SCAN, ONE, lib_bwd>, EFLA_FLOAT32 },
    { "v1: tensor-core WY chunks (cuda/delta_rule_chunk_v1.cu)", v1_chunk_fwd, v1_chunk_bwd, EFLA_FLOAT32 },
    { "v2: state-only scan + parallel outputs (cuda/delta_rule_chunk.cu, the library's)", v2_chunk_fwd, v2_chunk_bwd, EFLA_BFLOAT16 },
    { "v2, forward scan prefetch forced off", with_env<PREFETCH, ZERO, v2_chunk_fwd>, with_env<PREFETCH, ZERO, v2_chunk_bwd>, EFLA_BFLOAT16 },
    { "v2, forward scan prefetch forced on", with_env<PREFETCH, ONE, v2_chunk_fwd>, with_env<PREFETCH, ONE, v2_chunk_bwd>, EFLA_BFLOAT16 },
    { "v2, backward scan prefetch forced off", v2_chunk_fwd, with_env<BWD_PREFETCH, ZERO, v2_chunk_bwd>, EFLA_BFLOAT16 },
    { "v2, backward scan prefetch forced on", v2_chunk_fwd, with_env<BWD_PREFETCH, ONE, v2_chunk_bwd>, EFLA_BFLOAT16 },
    { "v2, backward scan makes tril(Q K^T) itself", v2_chunk_fwd, with_env<SCAN_QK, ONE, v2_chunk_bwd>, EFLA_BFLOAT16 },
    { "v2, 64-column backward scan", with_env<BWD_BV, SIXTY_FOUR, v2_chunk_fwd>, with_env<BWD_BV, SIXTY_FOUR, v2_chunk_bwd>, EFLA_BFLOAT16 },
    { "v2, 32-column state scan", with_env<SCAN_BV, THIRTY_TWO, v2_chunk_fwd>, with_env<SCAN_BV, THIRTY_TWO, v2_chunk_bwd>, EFLA_BFLOAT16 },
    { "v2, 64-column state scan", with_env<SCAN_BV, SIXTY_FOUR, v2_chunk_fwd>, with_env<SCAN_BV, SIXTY_FOUR, v2_chunk_bwd>, EFLA_BFLOAT16 },
};
static const int NVERSIONS = sizeof VERSIONS / sizeof VERSIONS[0];

#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { \
    fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); exit(1); } } while (0)

#include "delta_rule_ref.h"

static double rel_err_f32(const std::vector<double> &ref, const float *dev_buf, size_t n) {
    std::vector<float> h(n);
    CK(cudaMemcpy(h.data(), dev_buf, n * sizeof(float), cudaMemcpyDeviceToHost));
    return rel_err_host(ref, std::vector<double>(h.begin(), h.end()));
}
/* a device buffer of the inputs' element type (float32 when f32, else bfloat16) */
static double rel_err(const std::vector<double> &ref, const void *dev_buf, size_t n, bool f32) {
    if (f32) return rel_err_f32(ref, (const float *)dev_buf, n);
    std::vector<bf16> h(n);
    CK(cudaMemcpy(h.data(), dev_buf, n * sizeof(bf16), cudaMemcpyDeviceToHost));
    std::vector<double> x(n);
    for (size_t i = 0; i < n; i++) x[i] = __bfloat162float(h[i]);
    return rel_err_host(ref, x);
}

static float *upload_f32(const std::vector<float> &x) {
    float *d;
    CK(cudaMalloc(&d, x.size() * sizeof(float)));
    CK(cudaMemcpy(d, x.data(), x.size() * sizeof(float), cudaMemcpyHostToDevice));
    return d;
}
static void *upload(const std::vector<float> &x, bool f32) {
    if (f32) return upload_f32(x);
    std::vector<bf16> h(x.size());
    for (size_t i = 0; i < x.size(); i++) h[i] = __float2bfloat16(x[i]);
    bf16 *d;
    CK(cudaMalloc(&d, h.size() * sizeof(bf16)));
    CK(cudaMemcpy(d, h.data(), h.size() * sizeof(bf16), cudaMemcpyHostToDevice));
    return d;
}

int main(int argc, char **argv) {
    int only = argc > 1 ? atoi(argv[1]) : -1;
    int B = argc > 2 ? atoi(argv[2]) : 2, T = argc > 3 ? atoi(argv[3]) : 512, H = argc > 4 ? atoi(argv[4]) : 4;
    int d = argc > 5 ? atoi(argv[5]) : 128, C = argc > 6 ? atoi(argv[6]) : 64;
    bool validate = true, f32 = false;
    for (int i = 7; i < argc; i++) {
        if (!strcmp(argv[i], "time")) validate = false;
        else if (!strcmp(argv[i], "f32")) f32 = true;
        else { fprintf(stderr, "delta_rule_dev: unknown argument '%s' (after the sizes: time, f32)\n", argv[i]); return 2; }
    }
    const double tol = f32 ? 1e-5 : 1e-2;
    const size_t es = f32 ? 4 : 2;   /* bytes per element of the inputs, outputs and gradients */
    const double scale = 1 / sqrt((double)d);
    size_t n = (size_t)B * T * H * d, nb = (size_t)B * T * H;
    uint64_t seed = 12345;
    std::vector<float> q(n), k(n), v(n), al(nb), dO(n);
    for (size_t i = 0; i < n; i++) {
        q[i] = nrand(&seed); k[i] = nrand(&seed) * scale; v[i] = nrand(&seed); dO[i] = nrand(&seed);
    }
    for (size_t i = 0; i < nb; i++) al[i] = urand(&seed);
    if (!f32)   /* values as bfloat16 holds them, so both sides see the same inputs */
        for (auto *x : { &q, &k, &v, &dO, &al }) for (float &e : *x) e = bf16_round(e);
    printf("delta_rule_dev: B=%d T=%d H=%d dk=dv=%d C=%d, %s%s\n", B, T, H, d, C, f32 ? "float32" : "bfloat16",
           validate ? "; float64 reference..." : " (timing only)");
    void *dq_ = upload(q, f32), *dk_ = upload(k, f32), *dv_ = upload(v, f32), *dal = upload(al, f32), *ddo = upload(dO, f32);
    void *o, *gq, *gk, *gv, *ga;
    CK(cudaMalloc(&o, n * es)); CK(cudaMalloc(&gq, n * es)); CK(cudaMalloc(&gk, n * es)); CK(cudaMalloc(&gv, n * es));
    CK(cudaMalloc(&ga, nb * es));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0)); CK(cudaEventCreate(&e1));

    /* One case: the sequences sq; with_states adds an initial state, the gradient of the final
     * state, and a backward that recomputes the chunk states (none kept by the forward); the
     * plain case is timed. */
    auto run_case = [&](const Seqs &sq, bool with_states, bool timed) {
        const int64_t N = (int64_t)sq.len.size();
        const size_t ns = (size_t)N * H * d * d;
        std::vector<float> s0, dsf;
        if (with_states) {
            s0.resize(ns); dsf.resize(ns);
            for (size_t i = 0; i < ns; i++) { s0[i] = (float)(0.5 * nrand(&seed)); dsf[i] = (float)(0.5 * nrand(&seed)); }
        }
        Ref ref;
        if (validate) ref = reference(B, T, H, d, d, sq, q, k, v, al, dO, s0, dsf, scale);
        /* the sequence table (as upload_seqs builds it) */
        std::vector<int64_t> tab(3 * N);
        int64_t nch = 0;
        for (int64_t i = 0; i < N; i++) {
            tab[3 * i] = (sq.batch[i] * T + sq.start[i]) * H; tab[3 * i + 1] = sq.len[i]; tab[3 * i + 2] = nch;
            nch += (sq.len[i] + C - 1) / C;
        }
        efla_delta_rule_args a = { B, T, H, d, d, N, sq.batch.data(), sq.start.data(), sq.len.data(), scale, C,
                                   EFLA_ALGO_CHUNKED, f32 ? EFLA_FLOAT32 : EFLA_BFLOAT16, EFLA_FLOAT32 };
        int64_t *seq;
        float *cs, *ds0 = nullptr, *sf = nullptr, *s0d = nullptr, *dsfd = nullptr;
        CK(cudaMalloc(&seq, tab.size() * sizeof(int64_t)));
        CK(cudaMemcpy(seq, tab.data(), tab.size() * sizeof(int64_t), cudaMemcpyHostToDevice));
        CK(cudaMalloc(&cs, (size_t)nch * H * d * d * 4));
        if (with_states) {
            s0d = upload_f32(s0); dsfd = upload_f32(dsf);
            CK(cudaMalloc(&sf, ns * 4)); CK(cudaMalloc(&ds0, ns * 4));
        }
        if (with_states) printf("\nvariable-length (%lld packed sequences), initial state, d_s_final, states recomputed:\n"
                                "| version | o | dq | dk | dv | dalpha | s_final | ds0 |\n|---|---|---|---|---|---|---|---|\n",
                                (long long)N);
        else printf("| version | o | dq | dk | dv | dalpha | fwd ms | fwd+bwd ms |\n|---|---|---|---|---|---|---|---|\n");
        for (int ver = 0; ver < NVERSIONS; ver++) {
            if (only >= 0 && ver != only) continue;
            CK(cudaMemset(o, 0xff, n * es));   /* poison: every element must be written */
            CK(cudaMemset(gq, 0xff, n * es)); CK(cudaMemset(gk, 0xff, n * es)); CK(cudaMemset(gv, 0xff, n * es));
            CK(cudaMemset(ga, 0xff, nb * es));
            if (with_states) { CK(cudaMemset(sf, 0xff, ns * 4)); CK(cudaMemset(ds0, 0xff, ns * 4)); }
            a.chunk_state_dtype = f32 ? EFLA_FLOAT32 : VERSIONS[ver].states;   /* float32 calls keep float32 states */
            efla_delta_rule_buffers fbuf = {}, bbuf = {};
            fbuf.q = dq_; fbuf.k = dk_; fbuf.v = dv_; fbuf.alpha = dal; fbuf.o = o;
            fbuf.chunk_states = with_states ? nullptr : cs; fbuf.s0 = s0d; fbuf.s_final = sf;
            bbuf.q = dq_; bbuf.k = dk_; bbuf.v = dv_; bbuf.alpha = dal; bbuf.d_o = ddo;
            bbuf.chunk_states = with_states ? nullptr : cs; bbuf.s0 = s0d; bbuf.d_s_final = dsfd; bbuf.ds0 = ds0;
            bbuf.dq = gq; bbuf.dk = gk; bbuf.dv = gv; bbuf.dalpha = ga;
            auto fwd = [&]() { return VERSIONS[ver].fwd(&a, &fbuf, seq, nch, EFLA_DEVICE_CUDA0); };
            auto bwd = [&]() { return VERSIONS[ver].bwd(&a, &bbuf, seq, nch, EFLA_DEVICE_CUDA0); };
            const int rf = fwd(), rb = rf < 0 ? rf : bwd();
            if (rf > 0 || rb > 0) { printf("| %d %s | not covered (these sizes/dtype: the library would take the scan) |\n", ver, VERSIONS[ver].name); continue; }
            if (rf != 0 || rb != 0) { printf("| %d %s | failed: %s |\n", ver, VERSIONS[ver].name, efla_last_error()); continue; }
            CK(cudaDeviceSynchronize());
            double eo = 0, eq = 0, ek = 0, ev = 0, ea = 0, esf = 0, eds0 = 0;
            if (validate) {
                eo = rel_err(ref.o, o, n, f32); eq = rel_err(ref.dq, gq, n, f32); ek = rel_err(ref.dk, gk, n, f32);
                ev = rel_err(ref.dv, gv, n, f32); ea = rel_err(ref.da, ga, nb, f32);
                if (with_states) { esf = rel_err_f32(ref.sf, sf, ns); eds0 = rel_err_f32(ref.ds0, ds0, ns); }
            }
            const bool ok = eo < tol && eq < tol && ek < tol && ev < tol && ea < tol && esf < tol && eds0 < tol;
            if (!timed) {
                printf("| %d %s%s | %.2e | %.2e | %.2e | %.2e | %.2e | %.2e | %.2e |\n", ver, VERSIONS[ver].name,
                       ok ? "" : f32 ? " (FAILS 1e-5)" : " (FAILS 1e-2)", eo, eq, ek, ev, ea, esf, eds0);
                continue;
            }
            float tf = 0, tb = 0;
            const int reps = 20;
            CK(cudaEventRecord(e0));
            for (int r = 0; r < reps; r++) fwd();
            CK(cudaEventRecord(e1)); CK(cudaEventSynchronize(e1)); CK(cudaEventElapsedTime(&tf, e0, e1));
            CK(cudaEventRecord(e0));
            for (int r = 0; r < reps; r++) { fwd(); bwd(); }
            CK(cudaEventRecord(e1)); CK(cudaEventSynchronize(e1)); CK(cudaEventElapsedTime(&tb, e0, e1));
            printf("| %d %s%s | %.2e | %.2e | %.2e | %.2e | %.2e | %.3f | %.3f |\n", ver, VERSIONS[ver].name,
                   ok ? "" : f32 ? " (FAILS 1e-5)" : " (FAILS 1e-2)", eo, eq, ek, ev, ea, tf / reps, tb / reps);
#ifdef EFLA_PHASE_CLOCK
            v2::phase_clock_report();   /* version 2's kernels, summed over this row's calls */
#endif
        }
        CK(cudaFree(seq)); CK(cudaFree(cs));
        if (with_states) { CK(cudaFree(s0d)); CK(cudaFree(dsfd)); CK(cudaFree(sf)); CK(cudaFree(ds0)); }
    };
    run_case(whole_rows(B, T), false, true);
    if (validate && T >= 16) run_case(split_rows(B, T), true, false);
    return 0;
}

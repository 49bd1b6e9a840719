/* delta_rule_dev.cu: a workbench for the delta-rule CUDA kernels, in the manner of llm.c's
 * dev/cuda: numbered kernel versions, each checked against a float64 CPU recurrence on fresh
 * random inputs (output and the gradients of q, k, v, alpha), then timed with CUDA events.
 * Try a new version without touching the library: copy cuda/delta_rule_chunk.cu to
 * bench/cuda/delta_rule_chunk_v2.cu, rename its two entry points with the macros below,
 * add a row to VERSIONS, and run
 *
 *   bash bench/cuda/build_dev.sh                         (nvcc, links libefla for allocation)
 *   ./delta_rule_dev [version] [B T H d C] [time]        (default: every version, 2 512 4 128 64;
 *                                                         -1 = every version; 'time' skips the
 *                                                         float64 reference, for large shapes)
 *
 * The inputs are bfloat16 with alpha given (the chain through alpha is delta_rule_alpha.cu's
 * and not part of these kernels). Version 0 is the scan of cuda/delta_rule.cu (forced with
 * EFLA_DELTA_RULE_SCAN), the baseline every tensor-core version must beat. */
#define efla_cuda_delta_rule_chunk_fwd v1_chunk_fwd
#define efla_cuda_delta_rule_chunk_bwd v1_chunk_bwd
#include "../../cuda/delta_rule_chunk.cu"
#undef efla_cuda_delta_rule_chunk_fwd
#undef efla_cuda_delta_rule_chunk_bwd
/* a version's own namespace keeps its file-local helpers apart from v1's (the headers it
 * includes are already in, so their guards keep them out of the namespace) */
#define efla_cuda_delta_rule_chunk_fwd v2_chunk_fwd
#define efla_cuda_delta_rule_chunk_bwd v2_chunk_bwd
namespace v2 {
#include "delta_rule_chunk_v2.cu"
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

typedef int (*fwd_fn)(const efla_delta_rule_args *, const efla_delta_rule_buffers *, const int64_t *, int64_t, int);
typedef int (*bwd_fn)(const efla_delta_rule_args *, const efla_delta_rule_buffers *, const int64_t *, int64_t, int);

/* version 0: the library's whole CUDA entry with the scan kernels forced */
static int v0_fwd(const efla_delta_rule_args *a, const efla_delta_rule_buffers *buf, const int64_t *, int64_t, int) {
    setenv("EFLA_DELTA_RULE_SCAN", "1", 1);
    int rc = efla_cuda_delta_rule_fwd(a, buf);
    unsetenv("EFLA_DELTA_RULE_SCAN");
    return rc;
}
static int v0_bwd(const efla_delta_rule_args *a, const efla_delta_rule_buffers *buf, const int64_t *, int64_t, int) {
    setenv("EFLA_DELTA_RULE_SCAN", "1", 1);
    int rc = efla_cuda_delta_rule_bwd(a, buf);
    unsetenv("EFLA_DELTA_RULE_SCAN");
    return rc;
}

static const struct { const char *name; fwd_fn fwd; bwd_fn bwd; } VERSIONS[] = {
    { "scan (cuda/delta_rule.cu)", v0_fwd, v0_bwd },
    { "tensor-core WY chunks (cuda/delta_rule_chunk.cu)", v1_chunk_fwd, v1_chunk_bwd },
    { "v2: state-only scan + parallel outputs (bench/cuda/delta_rule_chunk_v2.cu)", v2_chunk_fwd, v2_chunk_bwd },
};
static const int NVERSIONS = sizeof VERSIONS / sizeof VERSIONS[0];

#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { \
    fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); exit(1); } } while (0)

static double urand(uint64_t *s) { *s = *s * 6364136223846793005ULL + 1442695040888963407ULL; return (double)(*s >> 11) / 9007199254740992.0; }
static double nrand(uint64_t *s) { double u = urand(s) + 1e-300, w = urand(s); return sqrt(-2 * log(u)) * cos(6.283185307179586 * w); }
static float bf16_round(double x) { return __bfloat162float(__float2bfloat16((float)x)); }

/* float64 recurrence over B*H independent heads (tokens of head h at row (b*T + t)*H + h):
 * S_t = S + a k (v - S^T k)^T, o_t = scale S_t^T q_t; the backward keeps every state. */
struct Ref { std::vector<double> o, dq, dk, dv, da; };
static Ref reference(int B, int T, int H, int d, const std::vector<float> &q, const std::vector<float> &k,
                     const std::vector<float> &v, const std::vector<float> &al, const std::vector<float> &dO, double scale) {
    Ref r;
    size_t n = (size_t)B * T * H * d;
    r.o.assign(n, 0); r.dq.assign(n, 0); r.dk.assign(n, 0); r.dv.assign(n, 0); r.da.assign((size_t)B * T * H, 0);
    std::vector<double> S((size_t)(T + 1) * d * d), dS((size_t)d * d), u(d), du(d);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            std::fill(S.begin(), S.begin() + (size_t)d * d, 0.0);
            for (int t = 0; t < T; t++) {
                size_t row = ((size_t)b * T + t) * H + h;
                const double *Sp = &S[(size_t)t * d * d];
                double *Sn = &S[(size_t)(t + 1) * d * d];
                for (int j = 0; j < d; j++) {
                    double s = 0;
                    for (int i = 0; i < d; i++) s += Sp[i * d + j] * k[row * d + i];
                    u[j] = v[row * d + j] - s;
                }
                for (int i = 0; i < d; i++)
                    for (int j = 0; j < d; j++) Sn[i * d + j] = Sp[i * d + j] + al[row] * k[row * d + i] * u[j];
                for (int j = 0; j < d; j++) {
                    double s = 0;
                    for (int i = 0; i < d; i++) s += Sn[i * d + j] * q[row * d + i];
                    r.o[row * d + j] = scale * s;
                }
            }
            std::fill(dS.begin(), dS.end(), 0.0);
            for (int t = T - 1; t >= 0; t--) {
                size_t row = ((size_t)b * T + t) * H + h;
                const double *Sp = &S[(size_t)t * d * d], *Sn = &S[(size_t)(t + 1) * d * d];
                for (int i = 0; i < d; i++) {
                    double s = 0;
                    for (int j = 0; j < d; j++) {
                        dS[i * d + j] += scale * q[row * d + i] * dO[row * d + j];
                        s += Sn[i * d + j] * dO[row * d + j];
                    }
                    r.dq[row * d + i] = scale * s;
                }
                for (int j = 0; j < d; j++) {
                    double s = 0;
                    for (int i = 0; i < d; i++) s += Sp[i * d + j] * k[row * d + i];
                    u[j] = v[row * d + j] - s;
                }
                double da = 0;
                for (int j = 0; j < d; j++) {
                    double s = 0;
                    for (int i = 0; i < d; i++) s += dS[i * d + j] * k[row * d + i];
                    du[j] = al[row] * s;
                    da += s * u[j];
                }
                r.da[row] = da;
                for (int i = 0; i < d; i++) {
                    double gu = 0, sd = 0;
                    for (int j = 0; j < d; j++) { gu += dS[i * d + j] * u[j]; sd += Sp[i * d + j] * du[j]; }
                    r.dk[row * d + i] = al[row] * gu - sd;
                }
                for (int j = 0; j < d; j++) r.dv[row * d + j] = du[j];
                for (int i = 0; i < d; i++)
                    for (int j = 0; j < d; j++) dS[i * d + j] -= k[row * d + i] * du[j];
            }
        }
    return r;
}

static double rel_err(const std::vector<double> &ref, const bf16 *dev_buf, size_t n) {
    std::vector<bf16> h(n);
    CK(cudaMemcpy(h.data(), dev_buf, n * sizeof(bf16), cudaMemcpyDeviceToHost));
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double x = __bfloat162float(h[i]);
        if (x != x) return INFINITY;
        num += (x - ref[i]) * (x - ref[i]);
        den += ref[i] * ref[i];
    }
    return sqrt(num / (den > 0 ? den : 1));
}

static bf16 *upload(const std::vector<float> &x) {
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
    const bool validate = !(argc > 7 && strcmp(argv[7], "time") == 0);
    const double scale = 1 / sqrt((double)d);
    size_t n = (size_t)B * T * H * d, nb = (size_t)B * T * H;
    uint64_t seed = 12345;
    std::vector<float> q(n), k(n), v(n), al(nb), dO(n);
    for (size_t i = 0; i < n; i++) {   /* values as bfloat16 holds them, so both sides see the same inputs */
        q[i] = bf16_round(nrand(&seed)); k[i] = bf16_round(nrand(&seed) * scale);
        v[i] = bf16_round(nrand(&seed)); dO[i] = bf16_round(nrand(&seed));
    }
    for (size_t i = 0; i < nb; i++) al[i] = bf16_round(urand(&seed));
    printf("delta_rule_dev: B=%d T=%d H=%d dk=dv=%d C=%d, bfloat16%s\n", B, T, H, d, C,
           validate ? "; float64 reference..." : " (timing only)");
    Ref ref;
    if (validate) ref = reference(B, T, H, d, q, k, v, al, dO, scale);

    /* the sequence table (as upload_seqs builds it) and the device buffers */
    std::vector<int64_t> batch(B), start(B, 0), len(B, T), tab(3 * B);
    int64_t nch = 0;
    for (int b = 0; b < B; b++) {
        batch[b] = b;
        tab[3 * b] = (int64_t)b * T * H; tab[3 * b + 1] = T; tab[3 * b + 2] = nch;
        nch += (T + C - 1) / C;
    }
    efla_delta_rule_args a = { B, T, H, d, d, B, batch.data(), start.data(), len.data(), scale, C,
                               EFLA_ALGO_CHUNKED, EFLA_BFLOAT16, EFLA_FLOAT32 };
    int64_t *seq;
    CK(cudaMalloc(&seq, tab.size() * sizeof(int64_t)));
    CK(cudaMemcpy(seq, tab.data(), tab.size() * sizeof(int64_t), cudaMemcpyHostToDevice));
    bf16 *dq_ = upload(q), *dk_ = upload(k), *dv_ = upload(v), *dal = upload(al), *ddo = upload(dO);
    bf16 *o, *gq, *gk, *gv, *ga;
    float *cs;
    CK(cudaMalloc(&o, n * 2)); CK(cudaMalloc(&gq, n * 2)); CK(cudaMalloc(&gk, n * 2)); CK(cudaMalloc(&gv, n * 2));
    CK(cudaMalloc(&ga, nb * 2)); CK(cudaMalloc(&cs, (size_t)nch * H * d * d * 4));
    cudaEvent_t e0, e1;
    CK(cudaEventCreate(&e0)); CK(cudaEventCreate(&e1));

    printf("| version | o | dq | dk | dv | dalpha | fwd ms | fwd+bwd ms |\n|---|---|---|---|---|---|---|---|\n");
    for (int ver = 0; ver < NVERSIONS; ver++) {
        if (only >= 0 && ver != only) continue;
        CK(cudaMemset(o, 0xff, n * 2));   /* poison: every element must be written */
        CK(cudaMemset(gq, 0xff, n * 2)); CK(cudaMemset(gk, 0xff, n * 2)); CK(cudaMemset(gv, 0xff, n * 2));
        CK(cudaMemset(ga, 0xff, nb * 2));
        efla_delta_rule_buffers fbuf = {}, bbuf = {};
        fbuf.q = dq_; fbuf.k = dk_; fbuf.v = dv_; fbuf.alpha = dal; fbuf.o = o; fbuf.chunk_states = cs;
        bbuf.q = dq_; bbuf.k = dk_; bbuf.v = dv_; bbuf.alpha = dal; bbuf.chunk_states = cs; bbuf.d_o = ddo;
        bbuf.dq = gq; bbuf.dk = gk; bbuf.dv = gv; bbuf.dalpha = ga;
        auto fwd = [&]() { return VERSIONS[ver].fwd(&a, &fbuf, seq, nch, EFLA_DEVICE_CUDA0); };
        auto bwd = [&]() { return VERSIONS[ver].bwd(&a, &bbuf, seq, nch, EFLA_DEVICE_CUDA0); };
        if (fwd() != 0 || bwd() != 0) { printf("| %d %s | failed: %s |\n", ver, VERSIONS[ver].name, efla_last_error()); continue; }
        CK(cudaDeviceSynchronize());
        double eo = 0, eq = 0, ek = 0, ev = 0, ea = 0;
        if (validate) {
            eo = rel_err(ref.o, o, n); eq = rel_err(ref.dq, gq, n); ek = rel_err(ref.dk, gk, n);
            ev = rel_err(ref.dv, gv, n); ea = rel_err(ref.da, ga, nb);
        }
        float tf = 0, tb = 0;
        const int reps = 20;
        CK(cudaEventRecord(e0));
        for (int r = 0; r < reps; r++) fwd();
        CK(cudaEventRecord(e1)); CK(cudaEventSynchronize(e1)); CK(cudaEventElapsedTime(&tf, e0, e1));
        CK(cudaEventRecord(e0));
        for (int r = 0; r < reps; r++) { fwd(); bwd(); }
        CK(cudaEventRecord(e1)); CK(cudaEventSynchronize(e1)); CK(cudaEventElapsedTime(&tb, e0, e1));
        const bool ok = eo < 1e-2 && eq < 1e-2 && ek < 1e-2 && ev < 1e-2 && ea < 1e-2;
        printf("| %d %s%s | %.2e | %.2e | %.2e | %.2e | %.2e | %.3f | %.3f |\n", ver, VERSIONS[ver].name,
               ok ? "" : " (FAILS 1e-2)", eo, eq, ek, ev, ea, tf / reps, tb / reps);
    }
    return 0;
}

// gated_scan_emu.cpp: runs the gated delta-rule kernels of cuda/delta_rule_gated.cu on the host
// (no GPU, no nvcc) and compares them with the CPU backend, so the kernels' index arithmetic and
// barriers can be checked on a machine without a GPU. Each block is 128 OS threads;
// __syncthreads is a pthread barrier, warp shuffles go through a per-warp barrier, atomics
// take a mutex. float64 only; the shapes: three packed sequences (13, 0 and 32 tokens), H = 2,
// C = 16, dk and dv from the command line or three built-in pairs (several column tiles,
// partial tiles, dk > 128 rows).
// Build against the CPU build's library and run (ThreadSanitizer finds a missing barrier;
// OMP_NUM_THREADS=1 keeps the uninstrumented OpenMP of the reference out of its reports):
//   g++ -std=c++17 -O1 -g -fsanitize=thread -pthread -Icore bench/cuda/gated_scan_emu.cpp -o /tmp/emu
//       -Lbuild -lefla -Wl,-rpath,$PWD/build  (one line), then OMP_NUM_THREADS=1 /tmp/emu 160 33
// Prints the largest relative difference of every output and gradient (float64: ~1e-16) and
// fails (exit 1) above 1e-12. ctest runs it as cuda_gated_scan_emu.
#include <pthread.h>
#include <thread>
#include <mutex>
#include <vector>
#include <random>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <cstdint>
#include <cstdlib>
#include <atomic>
#define _GLIBCXX_STDATOMIC_H 1
using std::atomic_int;
using std::atomic_llong;
extern "C" {
#include "backend.h"
}
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
struct d3 { unsigned x, y, z; };
static thread_local d3 threadIdx;
static d3 blockIdx, blockDim = {128, 1, 1};
static pthread_barrier_t bar, wbar[4];
static std::mutex amu;
static void __syncthreads() { pthread_barrier_wait(&bar); }
static double xbuf[4][32];
template <typename A> static A __shfl_xor_sync(unsigned, A v, int o) {
    int w = threadIdx.x / 32, l = threadIdx.x % 32;
    xbuf[w][l] = (double)v;
    pthread_barrier_wait(&wbar[w]);
    A r = (A)xbuf[w][l ^ o];
    pthread_barrier_wait(&wbar[w]);
    return r;
}
template <typename A> static void atomicAdd(A *p, A v) { std::lock_guard<std::mutex> g(amu); *p += v; }
namespace {
inline float load_as_acc(const float *p) { return *p; }
inline double load_as_acc(const double *p) { return *p; }
inline void store_to(float *p, float v) { *p = v; }
inline void store_to(double *p, double v) { *p = v; }
template <typename A> inline A warp_sum(A v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
unsigned char smem_raw[1 << 21];   // the block's dynamic shared memory (blocks run one at a time)
}
#define EFLA_GATED_EMULATE
#define __shared__
#define __align__(n)
#include "../../cuda/delta_rule_gated.cu"

template <typename F> static void launch(unsigned grid, size_t smem, F kernel) {
    for (unsigned b = 0; b < grid; b++) {
        blockIdx.x = b;
        if (smem > sizeof smem_raw) { printf("shared memory %zu > %zu\n", smem, sizeof smem_raw); exit(1); }
        memset(smem_raw, 0xff, smem);   // garbage, as on a device
        pthread_barrier_init(&bar, nullptr, 128);
        for (int w = 0; w < 4; w++) pthread_barrier_init(&wbar[w], nullptr, 32);
        std::vector<std::thread> th;
        for (unsigned t = 0; t < 128; t++) th.emplace_back([&, t] { threadIdx.x = t; kernel(); });
        for (auto &x : th) x.join();
    }
}

typedef double R;
static double maxrel(const std::vector<R> &a, const std::vector<R> &b) {
    double d = 0, m = 0;
    for (size_t i = 0; i < a.size(); i++) { d = fmax(d, fabs(a[i] - b[i])); m = fmax(m, fabs(b[i])); }
    return d / (m > 0 ? m : 1);
}

// One shape: the kernels' outputs and gradients against the CPU's; returns the largest difference.
static double run_case(int64_t dk, int64_t dv) {
    const int64_t H = 2, C = 16;
    // packed: B = 1, sequences of 13, 0 and 32 tokens
    std::vector<int64_t> lens = {13, 0, 32}, starts = {0, 13, 13}, batch = {0, 0, 0};
    const int64_t N = 3, T = 45, B = 1, rows = B * T * H;
    std::mt19937_64 rng(5);
    std::normal_distribution<double> nd;
    std::uniform_real_distribution<double> ud;
    auto randv = [&](int64_t n, double s) { std::vector<R> x(n); for (auto &e : x) e = s * nd(rng); return x; };
    auto q = randv(rows * dk, 1), k = randv(rows * dk, 1 / sqrt((double)dk)), v = randv(rows * dv, 1);
    std::vector<R> al(rows), bv(rows), lg(rows);
    for (int64_t i = 0; i < rows; i++) { al[i] = 0.2 + 0.6 * ud(rng); bv[i] = 0.2 + 0.6 * ud(rng); lg[i] = -0.6 * ud(rng); }
    auto s0 = randv(N * H * dk * dv, 0.3), d_o = randv(rows * dv, 1), dsf = randv(N * H * dk * dv, 1);
    int64_t nch = 0;
    std::vector<int64_t> tab(3 * N);
    for (int64_t n = 0; n < N; n++) {
        tab[3 * n] = (batch[n] * T + starts[n]) * H; tab[3 * n + 1] = lens[n]; tab[3 * n + 2] = nch;
        nch += (lens[n] + C - 1) / C;
    }
    efla_delta_rule_args a = {};
    a.B = B; a.T = T; a.H = H; a.dk = dk; a.dv = dv; a.N = N;
    a.seq_batch = batch.data(); a.seq_start = starts.data(); a.seq_len = lens.data();
    a.scale = 0.7; a.chunk_size = (int)C; a.algorithm = EFLA_ALGO_RECURRENT; a.dtype = EFLA_FLOAT64; a.state_dtype = EFLA_FLOAT64;
    const int64_t S = N * H * dk * dv, CS = nch * H * dk * dv;
    // the cpu reference
    std::vector<R> o_c(rows * dv), sf_c(S), cs_c(CS), dq_c(rows * dk), dk_c(rows * dk), dv_c(rows * dv), da_c(rows), db_c(rows), dg_c(rows), ds0_c(S);
    efla_delta_rule_buffers bc = {};
    bc.q = q.data(); bc.k = k.data(); bc.v = v.data(); bc.alpha = al.data(); bc.alpha_v = bv.data(); bc.log_decay = lg.data();
    bc.s0 = s0.data(); bc.o = o_c.data(); bc.s_final = sf_c.data(); bc.chunk_states = cs_c.data();
    bc.d_o = d_o.data(); bc.d_s_final = dsf.data(); bc.dq = dq_c.data(); bc.dk = dk_c.data(); bc.dv = dv_c.data();
    bc.dalpha = da_c.data(); bc.dalpha_v = db_c.data(); bc.dlog_decay = dg_c.data(); bc.ds0 = ds0_c.data();
    const efla_backend *cpu = efla_backend_for("emu", EFLA_DEVICE_CPU);
    if (cpu->delta_rule_fwd(&a, &bc) || cpu->delta_rule_bwd(&a, &bc)) { printf("cpu failed\n"); return HUGE_VAL; }
    printf("dk %lld dv %lld\n", (long long)dk, (long long)dv);
    // the emulated kernels
    std::vector<R> o_g(rows * dv), sf_g(S), cs_g(CS), dq_g(rows * dk), dk_g(rows * dk), dv_g(rows * dv), da_g(rows), db_g(rows), dg_g(rows), ds0_g(S);
    GParams p;
    memset(&p, 0, sizeof p);
    p.H = H; p.dk = dk; p.dv = dv; p.C = C; p.ntiles = (dv + TJ - 1) / TJ; p.seq = tab.data(); p.scale = a.scale;
    p.q = q.data(); p.k = k.data(); p.v = v.data(); p.al = al.data(); p.bv = bv.data(); p.lg = lg.data(); p.s0 = s0.data();
    p.o = o_g.data(); p.sf = sf_g.data(); p.cs = cs_g.data();
    const unsigned grid = (unsigned)(N * H * p.ntiles);
    launch(grid, ScanSmem<R>::bytes(dk, C, false), [&] { gated_fwd_kernel<R, R>(p); });
    double worst = fmax(maxrel(o_g, o_c), fmax(maxrel(sf_g, sf_c), maxrel(cs_g, cs_c)));
    printf("fwd: o %.3g  s_final %.3g  chunk states %.3g\n", maxrel(o_g, o_c), maxrel(sf_g, sf_c), maxrel(cs_g, cs_c));
    int64_t longest = 32;
    p.slots = (longest < C ? longest : C) + 1;
    std::vector<R> scratch(grid * p.slots * dk * TJ);
    GParams pb = p;
    pb.o = nullptr; pb.sf = nullptr; pb.cs = nullptr;
    pb.states = cs_g.data(); pb.scratch = scratch.data();
    pb.d_o = d_o.data(); pb.dsf = dsf.data(); pb.dvo = dv_g.data(); pb.ds0 = ds0_g.data();
    pb.dq_acc = dq_g.data(); pb.dk_acc = dk_g.data(); pb.da_acc = da_g.data(); pb.db_acc = db_g.data(); pb.dg_acc = dg_g.data();
    launch(grid, ScanSmem<R>::bytes(dk, C, true), [&] { gated_bwd_kernel<R, R>(pb); });
    printf("bwd: dq %.3g dk %.3g dv %.3g dalpha %.3g dalpha_v %.3g dg %.3g ds0 %.3g\n", maxrel(dq_g, dq_c), maxrel(dk_g, dk_c),
           maxrel(dv_g, dv_c), maxrel(da_g, da_c), maxrel(db_g, db_c), maxrel(dg_g, dg_c), maxrel(ds0_g, ds0_c));
    const std::vector<R> *got[] = {&dq_g, &dk_g, &dv_g, &da_g, &db_g, &dg_g, &ds0_g}, *want[] = {&dq_c, &dk_c, &dv_c, &da_c, &db_c, &dg_c, &ds0_c};
    for (int i = 0; i < 7; i++) worst = fmax(worst, maxrel(*got[i], *want[i]));
    return worst;
}

// dk dv from the command line, or three shapes: one column tile and few rows; several column
// tiles with a partial one and rows beyond 128 (a warp's rows span several passes); dk = 64.
int main(int argc, char **argv) {
    std::vector<std::pair<int64_t, int64_t>> shapes = {{16, 40}, {160, 33}, {64, 48}};
    if (argc > 2) shapes = {{atoi(argv[1]), atoi(argv[2])}};
    double worst = 0;
    for (auto &sh : shapes) worst = fmax(worst, run_case(sh.first, sh.second));
    // float64 throughout: the kernels and the CPU differ only in summation order (about 1e-15)
    const bool ok = worst < 1e-12;
    printf("%s: largest relative difference %.3g (tolerance 1e-12)\n", ok ? "PASS" : "FAIL", worst);
    return ok ? 0 : 1;
}

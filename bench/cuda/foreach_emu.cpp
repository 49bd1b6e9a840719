// foreach_emu.cpp: runs the multi-tensor kernels of cuda/foreach.cu on the host (no GPU, no
// nvcc) against the CPU backend, so their block-to-tensor mapping, vector and tail paths,
// partial layout and block sums can be checked on a machine without a GPU. Each block is
// blockDim.x OS threads; __syncthreads is a pthread barrier, warp shuffles go through a
// per-warp barrier; blocks run one at a time. The list: n tensors (default 150, two launches
// of 128) of float32, float64 and bfloat16, empty ones, several chunks long, every fifth an
// unaligned view. The host side mirrors efla_cuda_foreach_* (launches replaced); the CUDA
// built-ins come from emu_cuda.h. Build it with the library's -march (CMake does): GCC
// contracts a*b+c into fma in the cpu kernels, and the emulated AdamW must make the same choices.
//   g++ -std=c++17 -O1 -g -march=native -pthread -Icore -Icuda -Ibench/cuda bench/cuda/foreach_emu.cpp -o /tmp/foreach_emu -Lbuild -lefla -Wl,-rpath,$PWD/build
//   OMP_NUM_THREADS=1 /tmp/foreach_emu [n]        (add -fsanitize=thread to find a missing barrier)
// Prints the sum of squares against the cpu's (relative ~1e-16), whether a repeat gives the
// same bits, how many scaled tensors differ from the cpu's bit for bit (0), and how many
// parameters/moments of two AdamW steps (fa_adamw_kernel, 64 tensors a launch, every dtype
// pair: float32, float64 with float64/float32 moments, bfloat16 with bfloat16/float32 moments)
// differ from efla_foreach_adamw_ on the cpu bit for bit (0); exit status 1 on a mismatch.
#include <cstdio>
#include <cstdlib>
#include <random>
#include <atomic>
#define _GLIBCXX_STDATOMIC_H 1
using std::atomic_int;
using std::atomic_llong;
extern "C" {
#include "backend.h"
}
#include "emu_cuda.h"
static char *cu_ptr(const efla_tensor *t) { return (char *)t->storage->data + t->offset * (int64_t)efla_dtype_size(t->dtype); }

#define EFLA_FOREACH_EMULATE
#include "../../cuda/foreach.cu"

// the host functions of foreach.cu, launches replaced
static double emu_sum_squares(int n, const efla_tensor *const *ts) {
    int64_t blocks = 0;
    for (int i = 0; i < n; i++) blocks += (efla_tensor_numel(ts[i]) + FE_CHUNK - 1) / FE_CHUNK;
    std::vector<double> part(blocks > 0 ? blocks : 1, NAN);
    FeList L;
    int64_t done = 0, launches = 0;
    for (int from = 0; from < n;) {
        from = fe_pack(n, ts, from, L);
        if (L.n == 0) continue;
        double *pp = part.data() + done;
        launch((unsigned)L.first[L.n], FE_THREADS, [&] { fe_sumsq_kernel(L, pp); });
        done += L.first[L.n];
        launches++;
    }
    double out = -1;
    launch(1, FE_FINISH_THREADS, [&] { fe_finish_kernel(part.data(), blocks, &out); });
    printf("  %d tensors: %lld blocks in %lld launches\n", n, (long long)blocks, (long long)launches);
    return out;
}
static void emu_scale(int n, efla_tensor *const *ts, double coef) {
    FeList L;
    for (int from = 0; from < n;) {
        from = fe_pack(n, (const efla_tensor *const *)ts, from, L);
        if (L.n == 0) continue;
        launch((unsigned)L.first[L.n], FE_THREADS, [&] { fe_scale_kernel(L, &coef); });
    }
}

static int emu_adamw(int n, efla_tensor *const *ps, const efla_tensor *const *gs, efla_tensor *const *ms,
                     efla_tensor *const *vs, double lr, double b1, double b2, double eps, double wd, int64_t step) {
    FaArgs a = fa_args(lr, b1, b2, eps, wd, step);
    FaList L;
    int launches = 0;
    for (int from = 0; from < n;) {
        from = fa_pack(n, ps, gs, ms, vs, from, L);
        if (L.n == 0) continue;
        launch((unsigned)L.first[L.n], FE_THREADS, [&] { fa_adamw_kernel(L, a); });
        launches++;
    }
    return launches;
}

static bool same_bytes(const efla_tensor *a, const efla_tensor *b) {
    return !memcmp(cu_ptr(a), cu_ptr(b), (size_t)efla_tensor_numel(a) * efla_dtype_size(a->dtype));
}

// two AdamW steps (the second without weight decay) of n parameters on the cpu op and in the emulated kernel; the mismatches
static int64_t check_adamw(int n, std::mt19937_64 &rng) {
    std::normal_distribution<double> nd;
    const int64_t lens[] = { 0, 1, 7, 513, 4096, 16384, 16385, 33000 };
    // (p, m) dtypes: every pair the kernel computes
    const efla_dtype dp[] = { EFLA_FLOAT32, EFLA_FLOAT64, EFLA_FLOAT64, EFLA_BFLOAT16, EFLA_BFLOAT16 };
    const efla_dtype dm[] = { EFLA_FLOAT32, EFLA_FLOAT64, EFLA_FLOAT32, EFLA_BFLOAT16, EFLA_FLOAT32 };
    auto filled = [&](int64_t len, efla_dtype dt, double scale, bool positive) {
        efla_tensor *f = efla_empty(1, &len, EFLA_FLOAT64, 0);
        for (int64_t j = 0; j < len; j++) {
            double x = nd(rng) * scale;
            ((double *)cu_ptr(f))[j] = positive ? fabs(x) : x;
        }
        efla_tensor *x = efla_to(f, dt, 0);
        if (x == f) x = efla_clone(f);
        efla_tensor_release(f);
        return x;
    };
    std::vector<efla_tensor *> p(n), m(n), v(n), g(n), p2(n), m2(n), v2(n);
    for (int i = 0; i < n; i++) {
        int64_t len = lens[(i * 5) % 8];
        int k = i % 5;
        p[i] = filled(len, dp[k], 1, false);
        m[i] = filled(len, dm[k], 0.1, false);
        v[i] = filled(len, dm[k], 0.01, true);
        p2[i] = efla_clone(p[i]); m2[i] = efla_clone(m[i]); v2[i] = efla_clone(v[i]);
    }
    std::vector<char> differs(n, 0);
    for (int step = 1; step <= 2; step++) {
        for (int i = 0; i < n; i++) g[i] = filled(efla_tensor_numel(p[i]), dp[i % 5], 1, false);
        double lr = 1e-2 * step, wd = step == 2 ? 0 : 0.1;
        if (efla_foreach_adamw_(n, p.data(), (const efla_tensor *const *)g.data(), m.data(), v.data(), lr, 0.9, 0.999,
                                1e-8, wd, step)) {
            printf("cpu foreach_adamw_ failed: %s\n", efla_last_error());
            return -1;
        }
        int launches = emu_adamw(n, p2.data(), (const efla_tensor *const *)g.data(), m2.data(), v2.data(), lr, 0.9,
                                 0.999, 1e-8, wd, step);
        if (step == 1) printf("  adamw: %d tensors in %d launches\n", n, launches);
        for (int i = 0; i < n; i++) {
            if (!same_bytes(p[i], p2[i]) || !same_bytes(m[i], m2[i]) || !same_bytes(v[i], v2[i])) {
                differs[i] = 1;
                printf("  adamw step %d: tensor %d (%s/%s) differs\n", step, i, efla_dtype_name(p[i]->dtype),
                       efla_dtype_name(m[i]->dtype));
            }
            efla_tensor_release(g[i]);
        }
    }
    for (int i = 0; i < n; i++) {
        efla_tensor *all[6] = { p[i], m[i], v[i], p2[i], m2[i], v2[i] };
        for (efla_tensor *t : all) efla_tensor_release(t);
    }
    int64_t bad = 0;
    for (char d : differs) bad += d;
    return bad;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 150;
    std::mt19937_64 rng(1);
    std::normal_distribution<double> nd;
    const int64_t lens[] = { 0, 1, 7, 513, 4096, 16384, 16385, 40001 };
    const efla_dtype dts[] = { EFLA_FLOAT32, EFLA_FLOAT64, EFLA_BFLOAT16 };
    std::vector<efla_tensor *> a(n), b(n), keep;
    for (int i = 0; i < n; i++) {
        int64_t len = lens[(i * 7) % 8] + 1;
        efla_tensor *f = efla_empty(1, &len, EFLA_FLOAT64, 0);
        for (int64_t j = 0; j < len; j++) ((double *)cu_ptr(f))[j] = nd(rng) * (0.5 + i % 3);
        efla_tensor *x = efla_to(f, dts[i % 3], 0);
        efla_tensor_release(f);
        keep.push_back(x);
        // every fifth: a view from element 1 (unaligned), else from 0
        a[i] = efla_narrow(x, 0, i % 5 == 0 ? 1 : 0, len - 1);
        efla_tensor *c = efla_clone(x);
        keep.push_back(c);
        b[i] = efla_narrow(c, 0, i % 5 == 0 ? 1 : 0, len - 1);
    }
    efla_tensor *ref = efla_foreach_sum_squares(n, a.data());
    double want = *(double *)cu_ptr(ref);
    double got = emu_sum_squares(n, a.data());
    printf("sum_squares: emulated %.17g, cpu %.17g, relative difference %.3g\n", got, want, fabs(got - want) / want);
    double again = emu_sum_squares(n, a.data());
    printf("repeat identical: %s\n", again == got ? "yes" : "NO");
    double coef = -0.6180339887;
    efla_tensor *c = efla_full(0, NULL, coef, EFLA_FLOAT64, 0);
    if (efla_foreach_scale_(n, a.data(), c)) { printf("cpu scale failed: %s\n", efla_last_error()); return 1; }
    emu_scale(n, b.data(), coef);
    int64_t bad = 0, total = 0;
    for (int i = 0; i < n; i++) {
        size_t nb = (size_t)efla_tensor_numel(a[i]) * efla_dtype_size(a[i]->dtype);
        total += efla_tensor_numel(a[i]);
        if (memcmp(cu_ptr(a[i]), cu_ptr(b[i]), nb)) { bad++; printf("  tensor %d differs\n", i); }
    }
    // and the element before each unaligned view is untouched
    for (int i = 0; i < n; i += 5) {
        size_t es = efla_dtype_size(b[i]->dtype);
        if (memcmp(cu_ptr(b[i]) - es, cu_ptr(a[i]) - es, es)) { bad++; printf("  element before view %d changed\n", i); }
    }
    printf("scale: %lld of %d tensors differ (%lld elements)\n", (long long)bad, n, (long long)total);
    int na = n < 75 ? n : 75;   // 65 with elements: two launches (64 + 1), and the ctest run stays short
    int64_t abad = check_adamw(na, rng);
    printf("adamw: %lld of %d tensors differ from the cpu op over 2 steps\n", (long long)abad, na);
    return bad != 0 || abad != 0 || fabs(got - want) > 1e-12 * want || again != got;
}

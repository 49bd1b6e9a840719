// foreach_emu.cpp: runs the multi-tensor kernels of cuda/foreach.cu on the host (no GPU, no
// nvcc) against the CPU backend, so their block-to-tensor mapping, vector and tail paths,
// partial layout and block sums can be checked on a machine without a GPU. Each block is
// blockDim.x OS threads; __syncthreads is a pthread barrier, warp shuffles go through a
// per-warp barrier; blocks run one at a time. The list: n tensors (default 150, two launches
// of 128) of float32, float64 and bfloat16, empty ones, several chunks long, every fifth an
// unaligned view. The host side mirrors efla_cuda_foreach_* (launches replaced); the CUDA
// built-ins come from emu_cuda.h.
//   g++ -std=c++17 -O1 -g -pthread -Icore -Icuda -Ibench/cuda bench/cuda/foreach_emu.cpp -o /tmp/foreach_emu -Lbuild -lefla -Wl,-rpath,$PWD/build
//   OMP_NUM_THREADS=1 /tmp/foreach_emu [n]        (add -fsanitize=thread to find a missing barrier)
// Prints the sum of squares against the cpu's (relative ~1e-16), whether a repeat gives the
// same bits, and how many scaled tensors differ from the cpu's bit for bit (0); exit status 1
// on a mismatch.
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
    return bad != 0 || fabs(got - want) > 1e-12 * want || again != got;
}

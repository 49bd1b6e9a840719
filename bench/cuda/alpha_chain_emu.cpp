// alpha_chain_emu.cpp: runs the kernels of cuda/delta_rule_alpha_kernels.cuh (lambda = |k|^2 and
// alpha forward; the chain rule through alpha, and gated EFLA's alpha', backward) on the host, no
// GPU and no nvcc, against core/alpha_formulas.h evaluated here in double on the same (rounded)
// inputs, for float64, float32 and bfloat16, every order (exact, 1-4, the reference option), the
// gated step, and row counts that leave a partial group of 32 rows and a partial warp of lanes
// (dk = 40) over several grid-stride rounds.
//   g++ -std=c++17 -O2 -fno-strict-aliasing -pthread -Icuda -Ibench/cuda -Icore bench/cuda/alpha_chain_emu.cpp -o /tmp/alpha_emu
//   (ctest runs it as cuda_alpha_chain_emu)
// Prints one line per case with the norm-relative error of every output; exit status 1 when one
// exceeds its dtype's tolerance (float64 1e-12, float32 1e-6, bfloat16 1e-2).
#include <cstdio>
#include <random>

#include "emu_cuda.h"
#include "emu_check.h"
#include "delta_rule_alpha_kernels.cuh"

template <class T> static double tol() { return sizeof(T) == 8 ? 1e-12 : sizeof(T) == 4 ? 1e-6 : 1e-2; }

static std::mt19937_64 rng(11);
template <class T> static std::vector<T> draw(size_t n, double lo, double hi) {
    std::uniform_real_distribution<double> d(lo, hi);
    std::vector<T> v(n);
    for (auto &x : v) x = from_double<T>(d(rng));
    return v;
}
static int failures;
static void report(const char *what, double e, double t) {
    bool bad = !(e <= t);
    failures += bad;
    printf(" %s %.1e%s", what, e, bad ? " FAIL" : "");
}

// n rows of dk; gated: log-decays g in (-1, 0] and the alpha' chain after the ungated one
template <class T> static void run_case(int64_t n, int64_t dk, int order, int ref, bool gated) {
    // keys of norm around 1 (some large enough to saturate, a few zero rows: the series branch)
    std::vector<T> k = draw<T>((size_t)(n * dk), -0.4, 0.4), beta = draw<T>((size_t)n, 0.0, 1.0);
    for (int64_t r = 0; r < n; r += 17) for (int64_t d = 0; d < dk; d++) k[(size_t)(r * dk + d)] = from_double<T>(0);
    std::vector<T> g = draw<T>((size_t)n, -1.0, 0.0), ga = draw<T>((size_t)n, -1, 1), gv = draw<T>((size_t)n, -1, 1);
    std::vector<T> dk_in = draw<T>((size_t)(n * dk), -1, 1);
    std::vector<T> alpha((size_t)n), dbeta((size_t)n), dg = draw<T>((size_t)n, -1, 1), alpha_v((size_t)n);
    std::vector<double> lambda((size_t)n);
    std::vector<T> dkk = dk_in;
    const std::vector<T> dg_in = dg;
    // 3 blocks of 64 threads: 6 warps, so every kernel's grid-stride loop takes several rounds
    const dim3 grid(3), block(64);
    launch(grid, block, [&] { alpha_fwd_kernel<T>(n, dk, k.data(), beta.data(), order, ref, alpha.data(), lambda.data()); });
    launch(grid, block, [&] {
        alpha_bwd_kernel<T>(n, dk, k.data(), beta.data(), lambda.data(), ga.data(), order, ref, dkk.data(), dbeta.data());
    });
    if (gated) {
        launch(grid, block, [&] { alpha_v_fwd_kernel<T>(n, beta.data(), lambda.data(), g.data(), order, alpha_v.data()); });
        launch(grid, block, [&] {
            alpha_v_bwd_kernel<T>(n, dk, k.data(), beta.data(), lambda.data(), g.data(), gv.data(), order, dkk.data(),
                                  dbeta.data(), dg.data());
        });
    }
    // the reference: the same formulas in double, from the same rounded inputs, rounded where
    // the kernels store (alpha and dbeta between the two chains, dk after each)
    std::vector<double> lam_r((size_t)n), alpha_r((size_t)n), dbeta_r((size_t)n), dk_r((size_t)(n * dk)), av_r((size_t)n),
        dg_r((size_t)n);
    for (int64_t r = 0; r < n; r++) {
        double s = 0;
        for (int64_t d = 0; d < dk; d++) { double x = to_double(k[(size_t)(r * dk + d)]); s += x * x; }
        lam_r[(size_t)r] = s;
        double a, db, dl;
        efla_alpha_eval_of(to_double(beta[(size_t)r]), s, order, ref, &a, &db, &dl);
        alpha_r[(size_t)r] = a;
        const double gi = to_double(ga[(size_t)r]);
        double dbr = to_double(from_double<T>(gi * db));
        const double sk = 2 * gi * dl;
        for (int64_t d = 0; d < dk; d++) {
            const size_t i = (size_t)(r * dk + d);
            double v = to_double(dk_in[i]);
            if (sk != 0) v = to_double(from_double<T>(v + sk * to_double(k[i])));
            dk_r[i] = v;
        }
        if (gated) {
            double av, dbv, dlv, dgv, gvi = to_double(gv[(size_t)r]);
            efla_alpha_v_eval_of(to_double(beta[(size_t)r]), s, to_double(g[(size_t)r]), order, &av, &dbv, &dlv, &dgv);
            av_r[(size_t)r] = av;
            dbr = dbr + gvi * dbv;
            dg_r[(size_t)r] = to_double(dg_in[(size_t)r]) + gvi * dgv;
            const double sv = 2 * gvi * dlv;
            if (sv != 0)
                for (int64_t d = 0; d < dk; d++) {
                    const size_t i = (size_t)(r * dk + d);
                    dk_r[i] = to_double(from_double<T>(dk_r[i] + sv * to_double(k[i])));
                }
        }
        dbeta_r[(size_t)r] = dbr;
    }
    printf("%-8s n=%-4lld dk=%-3lld order %-5s%s |", tname<T>(), (long long)n, (long long)dk,
           order < 1 || order > 4 ? (ref ? "ref" : "exact") : order == 1 ? "1" : order == 2 ? "2" : order == 3 ? "3" : "4",
           gated ? " gated" : "      ");
    const double t = tol<T>();
    report("lambda", rel_err(lambda, lam_r), sizeof(T) == 8 ? 1e-12 : 1e-6);   // sums in double from T inputs
    report("alpha", rel_err(alpha, alpha_r), t);
    report("dbeta", rel_err(dbeta, dbeta_r), t);
    report("dk", rel_err(dkk, dk_r), t);
    if (gated) {
        report("alpha'", rel_err(alpha_v, av_r), t);
        report("dg", rel_err(dg, dg_r), t);
    }
    printf("\n");
}

template <class T> static void run_dtype() {
    run_case<T>(300, 40, 0, 0, false);    // exact: 9 groups of 32 rows and a partial one; dk = 40 (a partial warp)
    run_case<T>(300, 40, 0, 1, false);    // the reference option
    for (int order = 1; order <= 4; order++) run_case<T>(97, 64, order, 0, false);
    run_case<T>(300, 40, 0, 0, true);     // gated EFLA
    run_case<T>(97, 64, 1, 0, true);      // Gated DeltaNet
}

int main() {
    printf("alpha_chain_emu: cuda/delta_rule_alpha_kernels.cuh on the host against core/alpha_formulas.h\n");
    run_dtype<double>();
    run_dtype<float>();
    run_dtype<bf16>();
    printf(failures ? "%d FAILED\n" : "every case within its tolerance\n", failures);
    return failures ? 1 : 0;
}

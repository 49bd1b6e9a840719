// fast_paths_emu.cpp: runs the CUDA fast-path kernels of cuda/norm_fast.cuh (RMSNorm/LayerNorm
// forward, input gradient, weight/bias gradients through col_sum_kernel) and cuda/conv_fast.cuh
// (short convolution forward/backward with its dw/dbias column sums, SwiGLU) on the host, no
// GPU and no nvcc, against float64 references written out here, for float32 and bfloat16 data.
// The CUDA built-ins come from emu_cuda.h (OS threads as CUDA threads). Shapes cover partial warps
// (D = 520), several grid-stride rounds, several time tiles and row segments, K = 2, 3, 4, with
// and without a cache, bias and SiLU.
//   g++ -std=c++17 -O2 -fno-strict-aliasing -pthread -Wno-unknown-pragmas -Icuda -Ibench/cuda bench/cuda/fast_paths_emu.cpp -o /tmp/fast_emu
//   (-fno-strict-aliasing: the vector loads read bfloat16 arrays as uint4, as CUDA code does;
//   ctest runs it as cuda_fast_paths_emu)
//   /tmp/fast_emu            (add -fsanitize=thread to find a missing barrier)
// Prints one line per case with the norm-relative error of every output; exit status 1 when one
// exceeds its dtype's tolerance (float32 1e-5, bfloat16 1e-2).
#include <cstdio>
#include <random>

#include "emu_cuda.h"
#include "emu_check.h"
#include "vec_io.cuh"
#include "norm_fast.cuh"
#include "conv_fast.cuh"

// ---- data in T, references in double from the same (rounded) values ---------------------------
static std::mt19937_64 rng(7);
template <class T> static std::vector<T> randn(size_t n, double scale = 1) {
    std::normal_distribution<double> d(0, scale);
    std::vector<T> v(n);
    for (auto &x : v) x = from_double<T>(d(rng));
    return v;
}
template <class T> static std::vector<double> dbl(const std::vector<T> &v) {
    std::vector<double> r(v.size());
    for (size_t i = 0; i < v.size(); i++) r[i] = to_double(v[i]);
    return r;
}
static int failures;
static void report(const char *name, const char *what, double e, double tol) {
    bool bad = !(e <= tol);
    failures += bad;
    printf("  %-44s %-14s %.2e%s\n", name, what, e, bad ? "  FAIL" : "");
}
template <class T> static double tol() { return sizeof(T) == 2 ? 1e-2 : 1e-5; }

// ---- RMSNorm / LayerNorm -------------------------------------------------------------------------
template <class T, class W> static void norm_case(int64_t rows, int64_t D, int rms, bool affine) {
    char name[96];
    snprintf(name, sizeof name, "%s rows=%lld D=%lld %s/%s%s", rms ? "rms_norm" : "layer_norm", (long long)rows,
             (long long)D, tname<T>(), tname<W>(), affine ? "" : " plain");
    auto x = randn<T>(rows * D), dy = randn<T>(rows * D);
    auto w = randn<W>(D, 0.5), b = randn<W>(D, 0.5);
    for (auto &v : w) v = from_double<W>(1 + to_double(v));
    std::vector<T> out(rows * D), dx(rows * D);
    std::vector<float> mean(rows), rstd(rows);
    NormFast<T, W> a = { rows, D, x.data(), dy.data(), affine ? w.data() : nullptr, (affine && !rms) ? b.data() : nullptr,
                         out.data(), dx.data(), mean.data(), rstd.data(), 1e-5f, rms };
    launch(dim3(3), dim3(256), [&] { norm_fast_fwd<T, W>(a); });
    launch(dim3(2), dim3(256), [&] { norm_fast_bwd<T, W>(a); });
    int segs = 3;
    std::vector<float> part(2 * D * segs);
    std::vector<W> gw(D), gb(D);
    launch(dim3((unsigned)((D + 63) / 64), segs), dim3(32, 8), [&] { norm_fast_wb_partial<T, W>(a, segs, part.data()); });
    NormWbStore<W> st = { D, gw.data(), rms ? nullptr : gb.data() };
    launch(col_sum_grid(2 * D), col_sum_block(), [&] { col_sum_kernel(part.data(), (int64_t)segs, 2 * D, st); });

    auto X = dbl(x), DY = dbl(dy), Wd = dbl(w), Bd = dbl(b);
    std::vector<double> ro(rows * D), rdx(rows * D), rgw(D, 0), rgb(D, 0), rrs(rows);
    for (int64_t r = 0; r < rows; r++) {
        double mu = 0, ss = 0;
        if (!rms) { for (int64_t i = 0; i < D; i++) mu += X[r * D + i]; mu /= D; }
        for (int64_t i = 0; i < D; i++) ss += (X[r * D + i] - mu) * (X[r * D + i] - mu);
        double rs = 1 / std::sqrt(ss / D + 1e-5), sa = 0, sb = 0;
        rrs[r] = rs;
        for (int64_t i = 0; i < D; i++) {
            double xh = (X[r * D + i] - mu) * rs, wv = affine ? Wd[i] : 1;
            ro[r * D + i] = xh * wv + (affine && !rms ? Bd[i] : 0);
            double dxh = DY[r * D + i] * wv;
            sa += dxh;
            sb += dxh * xh;
            rgw[i] += DY[r * D + i] * xh;
            rgb[i] += DY[r * D + i];
        }
        sa = rms ? 0 : sa / D;
        sb /= D;
        for (int64_t i = 0; i < D; i++) {
            double xh = (X[r * D + i] - mu) * rs;
            rdx[r * D + i] = rs * (DY[r * D + i] * (affine ? Wd[i] : 1) - sa - xh * sb);
        }
    }
    printf("%s\n", name);
    report("", "output", rel_err(out, ro), tol<T>());
    report("", "rstd", rel_err(rstd, rrs), 1e-5);
    report("", "grad x", rel_err(dx, rdx), tol<T>());
    report("", "grad weight", rel_err(gw, rgw), tol<W>());
    if (!rms) report("", "grad bias", rel_err(gb, rgb), tol<W>());
}

// ---- short convolution ------------------------------------------------------------------------
template <class T, int K> static void conv_case(int64_t B, int64_t Tn, int64_t C, bool cache_on, bool bias_on, int silu) {
    char name[96];
    snprintf(name, sizeof name, "short_conv B=%lld T=%lld C=%lld K=%d %s%s%s%s", (long long)B, (long long)Tn,
             (long long)C, K, tname<T>(), cache_on ? " cache" : "", bias_on ? " bias" : "", silu ? " silu" : "");
    auto x = randn<T>(B * Tn * C), dy = randn<T>(B * Tn * C), w = randn<T>(C * K, 0.5), bias = randn<T>(C, 0.5);
    auto cache = randn<T>(B * (K - 1) * C);
    std::vector<T> out(B * Tn * C), dx(B * Tn * C), dcache(B * (K - 1) * C), dw(C * K), db(C);
    const T *cp = cache_on ? cache.data() : nullptr, *bp = bias_on ? bias.data() : nullptr;
    ScFast f = { Tn, C, silu };
    launch(dim3((unsigned)((C / 2 + SC_PAIRS - 1) / SC_PAIRS), (unsigned)((Tn + SC_TT_FWD - 1) / SC_TT_FWD), (unsigned)B),
           dim3(SC_PAIRS), [&] { sc_fast_fwd<T, K>(out.data(), x.data(), cp, w.data(), bp, f); });
    dim3 g((unsigned)((C / 2 + SC_PAIRS - 1) / SC_PAIRS), (unsigned)((Tn + SC_TT_BWD - 1) / SC_TT_BWD), (unsigned)B);
    int64_t prow = (int64_t)g.y * B, cols = C * (K + 1);
    std::vector<float> part(prow * cols);
    launch(g, dim3(SC_PAIRS), [&] {
        sc_fast_bwd<T, K>(dx.data(), cache_on ? dcache.data() : nullptr, part.data(), dy.data(), x.data(), cp, w.data(), bp, f);
    });
    ScDwStore<T> st = { dw.data(), bias_on ? db.data() : nullptr, K };
    launch(col_sum_grid(cols), col_sum_block(), [&] { col_sum_kernel(part.data(), prow, cols, st); });

    auto X = dbl(x), DY = dbl(dy), Wd = dbl(w), Bd = dbl(bias), CA = dbl(cache);
    auto in = [&](int64_t b, int64_t s, int64_t c) {
        return s >= 0 ? X[(b * Tn + s) * C + c] : cache_on ? CA[(b * (K - 1) + K - 1 + s) * C + c] : 0.0;
    };
    std::vector<double> ro(out.size()), rdx(dx.size(), 0), rdc(dcache.size(), 0), rdw(dw.size(), 0), rdb(C, 0);
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < Tn; t++)
            for (int64_t c = 0; c < C; c++) {
                double p = bias_on ? Bd[c] : 0;
                for (int j = 0; j < K; j++) p += Wd[c * K + j] * in(b, t - K + 1 + j, c);
                double s = 1 / (1 + std::exp(-p)), g = DY[(b * Tn + t) * C + c];
                ro[(b * Tn + t) * C + c] = silu ? p * s : p;
                if (silu) g *= s * (1 + p * (1 - s));
                rdb[c] += g;
                for (int j = 0; j < K; j++) {
                    int64_t sj = t - K + 1 + j;
                    rdw[c * K + j] += g * in(b, sj, c);
                    if (sj >= 0) rdx[(b * Tn + sj) * C + c] += Wd[c * K + j] * g;
                    else rdc[(b * (K - 1) + K - 1 + sj) * C + c] += Wd[c * K + j] * g;
                }
            }
    printf("%s\n", name);
    report("", "output", rel_err(out, ro), tol<T>());
    report("", "grad x", rel_err(dx, rdx), tol<T>());
    if (cache_on) report("", "grad cache", rel_err(dcache, rdc), tol<T>());
    report("", "grad weight", rel_err(dw, rdw), tol<T>());
    if (bias_on) report("", "grad bias", rel_err(db, rdb), tol<T>());
}

// ---- SwiGLU -------------------------------------------------------------------------------------
template <class T> static void swiglu_case(int64_t n) {
    auto g = randn<T>(n), u = randn<T>(n), d = randn<T>(n);
    std::vector<T> o(n), dg(n), du(n);
    launch(dim3(2), dim3(128), [&] { swiglu_fwd8<T>(o.data(), g.data(), u.data(), n / 8); });
    launch(dim3(2), dim3(128), [&] { swiglu_bwd8<T>(dg.data(), du.data(), d.data(), g.data(), u.data(), n / 8); });
    auto G = dbl(g), U = dbl(u), Dd = dbl(d);
    std::vector<double> ro(n), rdg(n), rdu(n);
    for (int64_t i = 0; i < n; i++) {
        double s = 1 / (1 + std::exp(-G[i]));
        ro[i] = G[i] * s * U[i];
        rdu[i] = Dd[i] * G[i] * s;
        rdg[i] = Dd[i] * U[i] * s * (1 + G[i] * (1 - s));
    }
    printf("swiglu n=%lld %s\n", (long long)n, tname<T>());
    report("", "output", rel_err(o, ro), tol<T>());
    report("", "grad gate", rel_err(dg, rdg), tol<T>());
    report("", "grad up", rel_err(du, rdu), tol<T>());
}

int main() {
    for (int rms = 0; rms <= 1; rms++) {
        norm_case<float, float>(37, 520, rms, true);
        norm_case<bf16, bf16>(37, 520, rms, true);
        norm_case<bf16, float>(70, 16, rms, true);
        norm_case<float, bf16>(5, 2056, rms, true);
    }
    norm_case<bf16, bf16>(20, 64, 1, false);
    conv_case<float, 4>(2, 150, 6, true, true, 1);
    conv_case<bf16, 4>(2, 150, 6, true, true, 1);
    conv_case<float, 3>(1, 70, 4, false, false, 1);
    conv_case<bf16, 2>(3, 33, 260, true, true, 0);
    conv_case<float, 4>(1, 5, 2, true, false, 1);
    swiglu_case<float>(48);
    swiglu_case<bf16>(4096);
    printf("%s: %d failure(s)\n", failures ? "FAIL" : "ok", failures);
    return failures ? 1 : 0;
}

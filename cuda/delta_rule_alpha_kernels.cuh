/* delta_rule_alpha_kernels.cuh: the device code of delta_rule_alpha.cu (lambda = |k|^2, the step
 * size alpha, and the chain rule through alpha and gated EFLA's alpha'), kept apart from the
 * launching so that bench/cuda/alpha_chain_emu.cpp runs the same kernels on the host against
 * core/alpha_formulas.h in double.
 *
 *   forward:  lambda_i = |k_i|^2,  alpha_i = beta_i * phi_order(beta_i * lambda_i)
 *   backward: dbeta_i = g_i * dalpha/dbeta,  dk_i += 2 k_i g_i dalpha/dlambda
 * Forward: one warp per token row (dk elements), lanes split the row and reduce with shuffles.
 * Backward: one warp per 32 rows, a lane per row for alpha's derivatives, then the warp over
 * the group's rows of dk as one flat run.
 * Include after common.cuh (CU_GRID_STRIDE and the CUDA built-ins), or emu_cuda.h on the host. */
#ifndef EFLA_CUDA_DELTA_RULE_ALPHA_KERNELS_CUH
#define EFLA_CUDA_DELTA_RULE_ALPHA_KERNELS_CUH
#ifndef EFLA_EMULATE_CUDA   /* bench/cuda/alpha_chain_emu.cpp supplies these on the host */
#include <cuda_bf16.h>
typedef __nv_bfloat16 bf16;
#endif
#include <stdint.h>
#include "../core/alpha_formulas.h"

namespace {

__device__ void alpha_eval(double beta, double lambda, int order, int ref, double *alpha, double *d_beta,
                           double *d_lambda) {
    efla_alpha_eval_of(beta, lambda, order, ref, alpha, d_beta, d_lambda);
}

__device__ __forceinline__ double ld(const float *p) { return *p; }
__device__ __forceinline__ double ld(const double *p) { return *p; }
__device__ __forceinline__ double ld(const bf16 *p) { return __bfloat162float(*p); }
__device__ __forceinline__ void st(float *p, double v) { *p = (float)v; }
__device__ __forceinline__ void st(double *p, double v) { *p = v; }
__device__ __forceinline__ void st(bf16 *p, double v) { *p = __float2bfloat16((float)v); }

__device__ __forceinline__ double warp_sum_d(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* What every kernel that makes alpha shares (alpha_fwd_kernel here; the scan's token_alpha in
 * delta_rule.cu; make_alpha of the tensor-core prep), so that all of them give the same alpha
 * bit for bit: lambda = |k|^2 of one row summed by a warp as lane_sum_squares, then warp_sum_d
 * (x(d) loads element d of the row as a double), and alpha rounded to T as alpha_as rounds it. */
template <class Load> __device__ __forceinline__ double lane_sum_squares(Load x, int64_t dk) {
    double s = 0;
    for (int64_t d = threadIdx.x % 32; d < dk; d += 32) {
        const double v = x(d);
        s += v * v;
    }
    return s;
}
template <typename T> __device__ __forceinline__ T alpha_as(double beta, double lambda, int order, int ref) {
    double a;
    alpha_eval(beta, lambda, order, ref, &a, nullptr, nullptr);
    T t;
    st(&t, a);
    return t;
}

/* The chain through alpha for one row with dalpha = g, in two halves: alpha's two derivatives,
 * which depend on beta and lambda alone (alpha_slopes_row: the tensor-core bwd_chunk evaluates
 * them early, while its loads are in flight), then chain_with: dbeta = g dalpha/dbeta written
 * where dbeta_row is set, and the factor 2 g dalpha/dlambda of dk += factor k returned.
 * chain_row is both at once (alpha_bwd_kernel). */
struct AlphaSlopes { double db, dl; };
template <typename T>
__device__ __forceinline__ AlphaSlopes alpha_slopes_row(const T *beta, const double *lambda, int64_t row, int order, int ref) {
    double a, db, dl;
    alpha_eval(ld(beta + row), lambda[row], order, ref, &a, &db, &dl);
    return AlphaSlopes{db, dl};
}
template <typename T> __device__ __forceinline__ double chain_with(AlphaSlopes s, double g, T *dbeta_row) {
    if (dbeta_row) st(dbeta_row, g * s.db);
    return 2 * g * s.dl;
}
template <typename T>
__device__ __forceinline__ double chain_row(const T *beta, const double *lambda, int64_t row, double g, int order, int ref,
                                            T *dbeta) {
    return chain_with(alpha_slopes_row(beta, lambda, row, order, ref), g, dbeta ? dbeta + row : nullptr);
}

template <typename T>
__global__ void alpha_fwd_kernel(int64_t n, int64_t dk, const T *k, const T *beta, int order, int ref, T *alpha,
                                 double *lambda) {
    const int lane = threadIdx.x % 32;
    const int64_t warps = (int64_t)gridDim.x * (blockDim.x / 32);
    for (int64_t row = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32; row < n; row += warps) {
        const double s = warp_sum_d(lane_sum_squares([&](int64_t d) { return ld(k + row * dk + d); }, dk));
        if (lane == 0) {
            lambda[row] = s;
            alpha[row] = alpha_as<T>(ld(beta + row), s, order, ref);
        }
    }
}

/* The backward's row loop: one warp per 32 consecutive rows. Lane i calls row_factor(row) once
 * for row base + i, which writes that row's scalar gradients and returns s, the factor of its
 * dk update (alpha's derivatives are double-precision exponentials and divisions: evaluated by
 * all 32 lanes of a warp per row, they were most of the chain's time). Then the warp adds
 * s_j k_j to the group's rows of dk as one flat run of 32 dk elements (the rows are adjacent):
 * element e = 32 it + lane, its s shuffled from lane e / dk. Every lane takes part in every
 * shuffle (the trip count is the warp's), and UNROLL elements' loads go out before their stores:
 * a walk row by row waited out a load's latency per row and element step, which made this kernel
 * slower than the one it replaced. */
template <typename T, class RowFactor>
__device__ void chain_rows(int64_t n, int64_t dk, const T *k, T *dkk, RowFactor row_factor) {
    const int lane = threadIdx.x % 32;
    const int64_t groups = (n + 31) / 32, warps = (int64_t)gridDim.x * (blockDim.x / 32);
    constexpr int UNROLL = 4;
    for (int64_t grp = (int64_t)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32; grp < groups; grp += warps) {
        const int64_t base = grp * 32;
        const double s = base + lane < n ? row_factor(base + lane) : 0.0;
        /* offsets inside the group fit an int (32 rows of dk): 32-bit divisions on this hot loop */
        const int width = (int)dk, total = (n - base < 32 ? (int)(n - base) : 32) * width;   /* the group's elements */
        T *dst = dkk + base * dk;
        const T *src = k + base * dk;
        for (int it = 0; it < width; it += UNROLL) {   /* 32 dk elements: dk steps of 32 */
            double sj[UNROLL], kv[UNROLL], dv[UNROLL];
#pragma unroll
            for (int u = 0; u < UNROLL; u++) {
                const int e = (it + u) * 32 + lane;
                sj[u] = __shfl_sync(0xffffffffu, s, (e / width) & 31);
                const bool in = it + u < width && e < total;
                kv[u] = in ? ld(src + e) : 0.0;
                dv[u] = in ? ld(dst + e) : 0.0;
            }
#pragma unroll
            for (int u = 0; u < UNROLL; u++) {
                const int e = (it + u) * 32 + lane;
                if (it + u < width && e < total && sj[u] != 0) st(dst + e, dv[u] + sj[u] * kv[u]);
            }
        }
    }
}

template <typename T>
__global__ void alpha_bwd_kernel(int64_t n, int64_t dk, const T *k, const T *beta, const double *lambda,
                                 const T *g, int order, int ref, T *dkk, T *dbeta) {
    chain_rows(n, dk, k, dkk, [&](int64_t row) { return chain_row(beta, lambda, row, ld(g + row), order, ref, dbeta); });
}

/* ---- gated calls: alpha' (docs/MATH.md §6) ------------------------------------------------------
 *   forward:  alpha'_i = efla_alpha_v_eval_of(beta_i, lambda_i, g_i)
 *   backward: dbeta_i += gv_i dalpha'/dbeta, dg_i += gv_i dalpha'/dg, dk_i += 2 k_i gv_i dalpha'/dlambda
 * (added: the ungated chain has written dbeta, the kernel dg). Warps as above. */

template <typename T>
__global__ void alpha_v_fwd_kernel(int64_t n, const T *beta, const double *lambda, const T *g, int order,
                                   T *alpha_v) {
    CU_GRID_STRIDE(i, n) {
        double av;
        efla_alpha_v_eval_of(ld(beta + i), lambda[i], ld(g + i), order, &av, nullptr, nullptr, nullptr);
        st(alpha_v + i, av);
    }
}

template <typename T>
__global__ void alpha_v_bwd_kernel(int64_t n, int64_t dk, const T *k, const T *beta, const double *lambda,
                                   const T *g, const T *gv, int order, T *dkk, T *dbeta, T *dg) {
    chain_rows(n, dk, k, dkk, [&](int64_t row) {
        double av, db, dl, dgg, gi = ld(gv + row);
        efla_alpha_v_eval_of(ld(beta + row), lambda[row], ld(g + row), order, &av, &db, &dl, &dgg);
        st(dbeta + row, ld(dbeta + row) + gi * db);
        st(dg + row, ld(dg + row) + gi * dgg);
        return 2 * gi * dl;
    });
}

} // namespace
#endif

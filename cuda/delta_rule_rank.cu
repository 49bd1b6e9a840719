/* delta_rule_rank.cu: the rank-r exact update on CUDA (docs/RANK_R.md); same contract and
 * results (up to rounding) as core/cpu/delta_rule_rank.c, checkpoints included.
 *
 *   1. f kernel, one thread per token and head: G = K K^T in double, F = f(G) by Jacobi
 *      (core/rank_fn.h), stored [B,T,H,r,r] in the accumulation type A. F depends on the
 *      token only, so the scan below never waits for an eigendecomposition.
 *   2. scan kernel, column-parallel like cuda/delta_rule.cu: every column j of the dk x dv
 *      state evolves on its own given K and F,
 *          d = V[:,j] - K S[:,j],  u = F d,  S[:,j] += K^T u,  o_j = scale q . S[:,j],
 *      so one warp owns a tile of 32 columns of one (batch, head) pair, keeps it in shared
 *      memory (fp32 for float32/bf16 inputs, fp64 for float64) and walks the tokens.
 *   3. backward scan: blocks of ckpt_len tokens in reverse; a block starts from its saved
 *      checkpoint, replays its forward keeping u per token in shared memory, then walks back
 *      rebuilding S_{t-1} = S_t - K^T u_t while the column of dS moves back. Column-local
 *      gradients (dV) are written directly; the sums over columns (dq, dK, dF) go through
 *      warp reductions and atomics into zeroed A-typed accumulators.
 *   4. f backward kernel, per token: dF -> dG, dbeta (Daleckii-Krein, rank_fn.h),
 *      dK += (dG + dG^T) K, and the casts of dq, dK, dbeta to the input dtype.
 * float32, float64, and bfloat16 inputs with float32 state and accumulation. */
#include "kernels.cuh"
#include "../core/delta_rule_rank.h"
#include <string.h>

namespace {

const int TJ = 32;   /* state columns per block: one warp, one column per lane */

__device__ __forceinline__ float ldx(const float *p) { return *p; }
__device__ __forceinline__ double ldx(const double *p) { return *p; }
__device__ __forceinline__ float ldx(const bf16 *p) { return __bfloat162float(*p); }
__device__ __forceinline__ void stx(float *p, double v) { *p = (float)v; }
__device__ __forceinline__ void stx(double *p, double v) { *p = v; }
__device__ __forceinline__ void stx(bf16 *p, double v) { *p = __float2bfloat16((float)v); }

template <typename A> __device__ __forceinline__ A warp_sum(A x) {
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}

struct RankParams {
    int64_t B, T, H, r, dk, dv, L, nblk, ntiles;
    int order;
    double scale;
    const void *q, *k, *v, *beta, *s0, *d_o, *dsf, *ckpt_in;
    void *o, *sf, *ckpt, *dv_out, *ds0, *dq, *dk_out, *dbeta;
    void *F, *dq_acc, *dk_acc, *dF_acc;   /* A-typed */
};

/* ---- per-token r x r function ------------------------------------------------------------- */
template <typename T, typename A> __global__ void f_kernel(RankParams p) {
    const int r = (int)p.r;
    CU_GRID_STRIDE(n, p.B * p.T * p.H) {
        const T *k = (const T *)p.k + n * r * p.dk;
        double G[EFLA_RANK_MAX * EFLA_RANK_MAX], mu[EFLA_RANK_MAX], E[EFLA_RANK_MAX * EFLA_RANK_MAX],
            F[EFLA_RANK_MAX * EFLA_RANK_MAX];
        for (int i = 0; i < r; i++)
            for (int j = 0; j <= i; j++) {
                double s = 0;
                for (int64_t d = 0; d < p.dk; d++) s += (double)ldx(k + i * p.dk + d) * (double)ldx(k + j * p.dk + d);
                G[i * r + j] = G[j * r + i] = s;
            }
        efla_rank_f_of_gram(r, p.order, (double)ldx((const T *)p.beta + n), G, mu, E, F);
        A *out = (A *)p.F + n * r * r;
        for (int i = 0; i < r * r; i++) out[i] = (A)F[i];
    }
}

template <typename T, typename A> __global__ void f_bwd_kernel(RankParams p) {
    const int r = (int)p.r;
    CU_GRID_STRIDE(n, p.B * p.T * p.H) {
        const T *k = (const T *)p.k + n * r * p.dk;
        double G[EFLA_RANK_MAX * EFLA_RANK_MAX], mu[EFLA_RANK_MAX], E[EFLA_RANK_MAX * EFLA_RANK_MAX],
            dF[EFLA_RANK_MAX * EFLA_RANK_MAX], dG[EFLA_RANK_MAX * EFLA_RANK_MAX];
        for (int i = 0; i < r; i++)
            for (int j = 0; j <= i; j++) {
                double s = 0;
                for (int64_t d = 0; d < p.dk; d++) s += (double)ldx(k + i * p.dk + d) * (double)ldx(k + j * p.dk + d);
                G[i * r + j] = G[j * r + i] = s;
            }
        const double beta = ldx((const T *)p.beta + n);
        double a[EFLA_RANK_MAX * EFLA_RANK_MAX];
        for (int i = 0; i < r * r; i++) { a[i] = G[i]; dF[i] = ((const A *)p.dF_acc)[n * r * r + i]; }
        efla_rank_eig(r, a, mu, E);
        double db = efla_rank_f_backward(r, p.order, beta, mu, E, dF, dG);
        stx((T *)p.dbeta + n, db);
        const A *gk = (const A *)p.dk_acc + n * r * p.dk;
        T *dk = (T *)p.dk_out + n * r * p.dk;
        for (int i = 0; i < r; i++)
            for (int64_t d = 0; d < p.dk; d++) {
                double s = gk[i * p.dk + d];
                for (int j = 0; j < r; j++) s += (dG[i * r + j] + dG[j * r + i]) * (double)ldx(k + j * p.dk + d);
                stx(dk + i * p.dk + d, s);
            }
        const A *gq = (const A *)p.dq_acc + n * p.dk;
        for (int64_t d = 0; d < p.dk; d++) stx((T *)p.dq + n * p.dk + d, (double)gq[d]);
    }
}

/* ---- the scans ---------------------------------------------------------------------------- */
/* shared: S [dk][TJ], K [r][dk], q [dk], F [r][r], then (backward) dS [dk][TJ], U [L][r][TJ] */
template <typename A> size_t smem_bytes(const RankParams &p, bool bwd) {
    int64_t n = p.dk * TJ + p.r * p.dk + p.dk + p.r * p.r;
    if (bwd) n += p.dk * TJ + p.L * p.r * TJ;
    return sizeof(A) * (size_t)n;
}

/* stage token `row`'s keys, query and F into shared memory (the whole warp) */
template <typename T, typename A>
__device__ __forceinline__ void stage(const RankParams &p, int64_t row, A *Ks, A *qs, A *Fs) {
    const T *k = (const T *)p.k + row * p.r * p.dk, *q = (const T *)p.q + row * p.dk;
    const A *F = (const A *)p.F + row * p.r * p.r;
    __syncwarp();
    for (int64_t e = threadIdx.x; e < p.r * p.dk; e += TJ) Ks[e] = (A)ldx(k + e);
    for (int64_t e = threadIdx.x; e < p.dk; e += TJ) qs[e] = (A)ldx(q + e);
    for (int64_t e = threadIdx.x; e < p.r * p.r; e += TJ) Fs[e] = F[e];
    __syncwarp();
}

/* one token's update of this lane's column: S += K^T F (V - K S), in two passes over the
 * column (d = V - K S; then S += K^T u fused with the readout q . S); returns u (r) and q . S */
template <typename T, typename A>
__device__ __forceinline__ A step(const RankParams &p, int64_t row, int64_t j, bool col, A *S, const A *Ks,
                                  const A *qs, const A *Fs, A *u) {
    const int r = (int)p.r;
    const int lane = threadIdx.x;
    A d[EFLA_RANK_MAX];
    const T *v = (const T *)p.v + row * r * p.dv;
    for (int i = 0; i < r; i++) d[i] = col ? (A)ldx(v + i * p.dv + j) : (A)0;
    for (int64_t a = 0; a < p.dk; a++) {
        const A s = S[a * TJ + lane];
        for (int i = 0; i < r; i++) d[i] -= Ks[i * p.dk + a] * s;
    }
    for (int i = 0; i < r; i++) {
        A s = 0;
        for (int m = 0; m < r; m++) s += Fs[i * r + m] * d[m];
        u[i] = s;
    }
    A o = 0;
    for (int64_t a = 0; a < p.dk; a++) {
        A s = S[a * TJ + lane];
        for (int i = 0; i < r; i++) s += Ks[i * p.dk + a] * u[i];
        S[a * TJ + lane] = s;
        o += qs[a] * s;
    }
    return o;
}

template <typename T, typename A> __global__ void fwd_kernel(RankParams p) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    A *S = (A *)smem_raw, *Ks = S + p.dk * TJ, *qs = Ks + p.r * p.dk, *Fs = qs + p.dk;
    const int64_t pair = blockIdx.x / p.ntiles, tile = blockIdx.x % p.ntiles;
    const int64_t b = pair / p.H, h = pair % p.H, lane = threadIdx.x, j = tile * TJ + lane;
    const bool col = j < p.dv;
    const int64_t sz = p.dk * p.dv;
    for (int64_t a = 0; a < p.dk; a++)
        S[a * TJ + lane] = col && p.s0 ? ((const A *)p.s0)[pair * sz + a * p.dv + j] : (A)0;
    A u[EFLA_RANK_MAX];
    for (int64_t t = 0; t < p.T; t++) {
        if (p.ckpt && t % p.L == 0 && col)
            for (int64_t a = 0; a < p.dk; a++)
                ((A *)p.ckpt)[(pair * p.nblk + t / p.L) * sz + a * p.dv + j] = S[a * TJ + lane];
        const int64_t row = (b * p.T + t) * p.H + h;
        stage<T, A>(p, row, Ks, qs, Fs);
        const A o = step<T, A>(p, row, j, col, S, Ks, qs, Fs, u);
        if (col) stx((T *)p.o + row * p.dv + j, p.scale * (double)o);
    }
    if (p.sf && col)
        for (int64_t a = 0; a < p.dk; a++) ((A *)p.sf)[pair * sz + a * p.dv + j] = S[a * TJ + lane];
}

template <typename T, typename A> __global__ void bwd_kernel(RankParams p) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    A *S = (A *)smem_raw, *Ks = S + p.dk * TJ, *qs = Ks + p.r * p.dk, *Fs = qs + p.dk;
    A *dS = Fs + p.r * p.r, *U = dS + p.dk * TJ;
    const int r = (int)p.r;
    const int64_t pair = blockIdx.x / p.ntiles, tile = blockIdx.x % p.ntiles;
    const int64_t b = pair / p.H, h = pair % p.H, lane = threadIdx.x, j = tile * TJ + lane;
    const bool col = j < p.dv;
    const int64_t sz = p.dk * p.dv;
    A *dq = (A *)p.dq_acc, *gk = (A *)p.dk_acc, *gF = (A *)p.dF_acc;
    for (int64_t a = 0; a < p.dk; a++)
        dS[a * TJ + lane] = col && p.dsf ? ((const A *)p.dsf)[pair * sz + a * p.dv + j] : (A)0;
    A u[EFLA_RANK_MAX], du[EFLA_RANK_MAX], dd[EFLA_RANK_MAX], d[EFLA_RANK_MAX];
    for (int64_t blk = p.nblk - 1; blk >= 0; blk--) {
        const int64_t t0 = blk * p.L, nt = p.T - t0 < p.L ? p.T - t0 : p.L;
        for (int64_t a = 0; a < p.dk; a++)
            S[a * TJ + lane] = col ? ((const A *)p.ckpt_in)[(pair * p.nblk + blk) * sz + a * p.dv + j] : (A)0;
        for (int64_t i = 0; i < nt; i++) {   /* replay, keeping u */
            const int64_t row = (b * p.T + t0 + i) * p.H + h;
            stage<T, A>(p, row, Ks, qs, Fs);
            step<T, A>(p, row, j, col, S, Ks, qs, Fs, u);
            for (int m = 0; m < r; m++) U[(i * r + m) * TJ + lane] = u[m];
        }
        for (int64_t i = nt - 1; i >= 0; i--) {
            const int64_t row = (b * p.T + t0 + i) * p.H + h;
            stage<T, A>(p, row, Ks, qs, Fs);
            const A dos = col ? (A)(p.scale * (double)ldx((const T *)p.d_o + row * p.dv + j)) : (A)0;
            /* o = scale S_t^T q: dq = S_t dos (summed over columns), dS += q dos */
            for (int64_t a = 0; a < p.dk; a++) {
                A s = warp_sum(S[a * TJ + lane] * dos);
                if (lane == 0) atomicAdd(dq + row * p.dk + a, s);
                dS[a * TJ + lane] += qs[a] * dos;
            }
            /* back to S_{t-1}; D = V - K S_{t-1}; dU = K dS; dD = F^T dU */
            const T *v = (const T *)p.v + row * r * p.dv;
            for (int m = 0; m < r; m++) u[m] = U[(i * r + m) * TJ + lane];
            for (int64_t a = 0; a < p.dk; a++) {
                A s = S[a * TJ + lane];
                for (int m = 0; m < r; m++) s -= Ks[m * p.dk + a] * u[m];
                S[a * TJ + lane] = s;
            }
            for (int m = 0; m < r; m++) { d[m] = col ? (A)ldx(v + m * p.dv + j) : (A)0; du[m] = 0; }
            for (int64_t a = 0; a < p.dk; a++) {
                const A sa = S[a * TJ + lane], ga = dS[a * TJ + lane];
                for (int m = 0; m < r; m++) {
                    d[m] -= Ks[m * p.dk + a] * sa;
                    du[m] += Ks[m * p.dk + a] * ga;
                }
            }
            for (int m = 0; m < r; m++) {
                A s = 0;
                for (int n = 0; n < r; n++) s += Fs[n * r + m] * du[n];
                dd[m] = s;
                if (col) stx((T *)p.dv_out + row * r * p.dv + m * p.dv + j, (double)s);
            }
            /* dF = dU D^T (summed over columns) */
            for (int m = 0; m < r; m++)
                for (int n = 0; n < r; n++) {
                    A s = warp_sum(du[m] * d[n]);
                    if (lane == 0) atomicAdd(gF + row * r * r + m * r + n, s);
                }
            /* dK = U dS^T - dD S_{t-1}^T (summed over columns), then dS -= K^T dD */
            for (int64_t a = 0; a < p.dk; a++) {
                const A sa = S[a * TJ + lane], ga = dS[a * TJ + lane];
                A corr = 0;
                for (int m = 0; m < r; m++) {
                    A s = warp_sum(u[m] * ga - dd[m] * sa);
                    if (lane == 0) atomicAdd(gk + row * r * p.dk + m * p.dk + a, s);
                    corr += Ks[m * p.dk + a] * dd[m];
                }
                dS[a * TJ + lane] = ga - corr;
            }
        }
    }
    if (p.ds0 && col)
        for (int64_t a = 0; a < p.dk; a++) ((A *)p.ds0)[pair * sz + a * p.dv + j] = dS[a * TJ + lane];
}

template <typename K> int prepare(K kernel, size_t smem, const char *op, const RankParams &p) {
    int dev = 0, maxs = 0;
    CU_CHECK(cudaGetDevice(&dev));
    CU_CHECK(cudaDeviceGetAttribute(&maxs, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    if (smem > (size_t)maxs)
        return efla_fail("%s: dk = %lld with r = %lld needs %zu bytes of shared memory per block, the device "
                         "has %d; use a smaller head size or rank", op, (long long)p.dk, (long long)p.r, smem, maxs);
    if (smem > 48 * 1024) CU_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    return 0;
}

RankParams params_of(const efla_rank_args *a) {
    RankParams p;
    memset(&p, 0, sizeof p);
    p.B = a->B; p.T = a->T; p.H = a->H; p.r = a->r; p.dk = a->dk; p.dv = a->dv;
    p.L = a->ckpt_len; p.nblk = (a->T + a->ckpt_len - 1) / a->ckpt_len;
    p.ntiles = (a->dv + TJ - 1) / TJ;
    p.order = a->order;
    p.scale = a->scale;
    return p;
}

int check_args(const char *op, const efla_rank_args *a) {
    if (a->dtype != EFLA_FLOAT32 && a->dtype != EFLA_FLOAT64 && a->dtype != EFLA_BFLOAT16)
        return efla_fail("%s: dtype %s is not supported (use float32, float64 or bfloat16)", op,
                         efla_dtype_name(a->dtype));
    efla_dtype acc = a->dtype == EFLA_FLOAT64 ? EFLA_FLOAT64 : EFLA_FLOAT32;
    if (a->state_dtype != acc || a->ckpt_dtype != acc)
        return efla_fail("%s: the cuda kernels keep states in %s for %s inputs", op, efla_dtype_name(acc),
                         efla_dtype_name(a->dtype));
    if (a->r < 1 || a->r > EFLA_RANK_MAX) return efla_fail("%s: r = %lld is not in 1..%d", op, (long long)a->r, EFLA_RANK_MAX);
    return 0;
}

template <typename T, typename A>
int fwd_run(const efla_rank_args *a, RankParams &p, int device) {
    const int64_t bth = a->B * a->T * a->H;
    CuBuffer F;
    TRY(F.alloc(sizeof(A) * (size_t)(bth * a->r * a->r + 1), device));
    p.F = F.ptr;
    f_kernel<T, A><<<cu_blocks(bth, 128), 128>>>(p);
    CU_CHECK_LAUNCH("delta_rule_rank f");
    size_t smem = smem_bytes<A>(p, false);
    TRY(prepare(fwd_kernel<T, A>, smem, "delta_rule_rank", p));
    fwd_kernel<T, A><<<(unsigned)(a->B * a->H * p.ntiles), TJ, smem>>>(p);
    CU_CHECK_LAUNCH("delta_rule_rank fwd");
    return 0;
}

template <typename T, typename A>
int bwd_run(const efla_rank_args *a, RankParams &p, int device) {
    const int64_t bth = a->B * a->T * a->H, nacc = bth * (a->dk + a->r * a->dk + a->r * a->r);
    CuBuffer F, acc;
    TRY(F.alloc(sizeof(A) * (size_t)(bth * a->r * a->r + 1), device));
    TRY(acc.alloc(sizeof(A) * (size_t)(nacc + 1), device));
    p.F = F.ptr;
    p.dq_acc = acc.as<A>();
    p.dk_acc = acc.as<A>() + bth * a->dk;
    p.dF_acc = acc.as<A>() + bth * (a->dk + a->r * a->dk);
    CU_CHECK(cudaMemsetAsync(acc.ptr, 0, sizeof(A) * (size_t)nacc, 0));
    f_kernel<T, A><<<cu_blocks(bth, 128), 128>>>(p);
    CU_CHECK_LAUNCH("delta_rule_rank f");
    size_t smem = smem_bytes<A>(p, true);
    TRY(prepare(bwd_kernel<T, A>, smem, "delta_rule_rank backward", p));
    bwd_kernel<T, A><<<(unsigned)(a->B * a->H * p.ntiles), TJ, smem>>>(p);
    CU_CHECK_LAUNCH("delta_rule_rank bwd");
    f_bwd_kernel<T, A><<<cu_blocks(bth, 128), 128>>>(p);
    CU_CHECK_LAUNCH("delta_rule_rank f backward");
    return 0;
}

int device_of_current(void) {
    int d = 0;
    cudaGetDevice(&d);
    return EFLA_DEVICE_CUDA0 + d;
}

} // namespace

int efla_cuda_delta_rule_rank_fwd(const efla_rank_args *a, const void *q, const void *k, const void *v,
                                  const void *beta, const void *s0, void *o, void *s_final, void *ckpt) {
    TRY(check_args("delta_rule_rank", a));
    int device = device_of_current();
    TRY(cu_set_device(device));
    const size_t es = efla_dtype_size(a->dtype), ses = a->dtype == EFLA_FLOAT64 ? 8 : 4;
    if (a->B * a->H == 0) return 0;
    if (a->dk == 0 || a->dv == 0 || a->T == 0) {   /* empty state or no tokens */
        if (o && a->dv) CU_CHECK(cudaMemsetAsync(o, 0, es * (size_t)(a->B * a->T * a->H * a->dv), 0));
        if (s_final && a->dk > 0 && a->dv > 0) {
            if (s0) CU_CHECK(cudaMemcpyAsync(s_final, s0, ses * (size_t)(a->B * a->H * a->dk * a->dv),
                                             cudaMemcpyDeviceToDevice, 0));
            else CU_CHECK(cudaMemsetAsync(s_final, 0, ses * (size_t)(a->B * a->H * a->dk * a->dv), 0));
        }
        return 0;
    }
    RankParams p = params_of(a);
    p.q = q; p.k = k; p.v = v; p.beta = beta; p.s0 = s0; p.o = o; p.sf = s_final; p.ckpt = ckpt;
    switch (a->dtype) {
    case EFLA_FLOAT32: return fwd_run<float, float>(a, p, device);
    case EFLA_FLOAT64: return fwd_run<double, double>(a, p, device);
    default: return fwd_run<bf16, float>(a, p, device);
    }
}

int efla_cuda_delta_rule_rank_bwd(const efla_rank_args *a, const void *q, const void *k, const void *v,
                                  const void *beta, const void *ckpt, const void *d_o, const void *d_s_final,
                                  void *dq, void *dk, void *dv, void *dbeta, void *ds0) {
    TRY(check_args("delta_rule_rank backward", a));
    int device = device_of_current();
    TRY(cu_set_device(device));
    const size_t es = efla_dtype_size(a->dtype), ses = a->dtype == EFLA_FLOAT64 ? 8 : 4;
    const size_t bth = (size_t)(a->B * a->T * a->H);
    if (a->B * a->H == 0) return 0;
    if (a->dk == 0 || a->dv == 0 || a->T == 0) {
        CU_CHECK(cudaMemsetAsync(dq, 0, es * bth * (size_t)a->dk, 0));
        CU_CHECK(cudaMemsetAsync(dk, 0, es * bth * (size_t)(a->r * a->dk), 0));
        CU_CHECK(cudaMemsetAsync(dv, 0, es * bth * (size_t)(a->r * a->dv), 0));
        CU_CHECK(cudaMemsetAsync(dbeta, 0, es * bth, 0));
        if (ds0 && a->dk > 0 && a->dv > 0) {
            if (d_s_final) CU_CHECK(cudaMemcpyAsync(ds0, d_s_final, ses * (size_t)(a->B * a->H * a->dk * a->dv),
                                                    cudaMemcpyDeviceToDevice, 0));
            else CU_CHECK(cudaMemsetAsync(ds0, 0, ses * (size_t)(a->B * a->H * a->dk * a->dv), 0));
        }
        return 0;
    }
    if (!ckpt) return efla_fail("delta_rule_rank backward: the forward saved no checkpoints");
    RankParams p = params_of(a);
    p.q = q; p.k = k; p.v = v; p.beta = beta; p.ckpt_in = ckpt; p.d_o = d_o; p.dsf = d_s_final;
    p.dq = dq; p.dk_out = dk; p.dv_out = dv; p.dbeta = dbeta; p.ds0 = ds0;
    switch (a->dtype) {
    case EFLA_FLOAT32: return bwd_run<float, float>(a, p, device);
    case EFLA_FLOAT64: return bwd_run<double, double>(a, p, device);
    default: return bwd_run<bf16, float>(a, p, device);
    }
}

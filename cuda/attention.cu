/* attention.cu: CUDA kernels of causal / sliding-window softmax attention (front end in
 * core/ops_attention.c, CPU reference in core/cpu/attention.c).
 *
 * A SIMT flash-style design (no tensor cores yet): one warp per query row (forward, dq) or
 * per key (dk, dv); lane l holds the head dimensions l, l+32, ... of its row in registers,
 * so a dot product is a 5-step shuffle reduction and no [Tq, Tk] matrix ever exists. The
 * forward keeps an online softmax (running max m, running sum l, rescaled accumulator) and
 * writes lse = m + log l; the backward recomputes P = exp(s - lse) (flash-attention-2):
 *   kernel 1 (per query row): D = dO . O, then dq = scale sum_j P (dO.v_j - D) k_j;
 *   kernel 2 (per key):       dv_j = sum_i P_ij dO_i, dk_j = scale sum_i P_ij (dO_i.v_j - D_i) q_i.
 * Inputs float32 or bfloat16, everything accumulated in float32; head sizes up to 256. */
#include "common.cuh"
#include "kernels.cuh"

namespace {

constexpr int WARPS = 8;   /* rows (or keys) per block */

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(bf16 x) { return __bfloat162float(x); }
__device__ __forceinline__ void put(float *p, float x) { *p = x; }
__device__ __forceinline__ void put(bf16 *p, float x) { *p = __float2bfloat16(x); }

__device__ __forceinline__ float warp_sum(float x) {
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}

/* this lane's dims of one row (zeros past n) */
template <int ND, class S> __device__ __forceinline__ void load_row(float *r, const S *p, int64_t n, int lane) {
#pragma unroll
    for (int t = 0; t < ND; t++) {
        int64_t d = lane + 32 * t;
        r[t] = d < n ? to_f(p[d]) : 0.f;
    }
}
template <int ND> __device__ __forceinline__ float dot_lanes(const float *a, const float *b) {
    float s = 0;
#pragma unroll
    for (int t = 0; t < ND; t++) s += a[t] * b[t];
    return warp_sum(s);
}

struct Geo {
    int64_t B, Tq, Tk, H, dk, dv, window;
    int causal;
    float scale;
};

/* keys [lo, hi] of query row i */
__device__ __forceinline__ void key_range(const Geo &g, int64_t i, int64_t *lo, int64_t *hi) {
    int64_t p = g.Tk - g.Tq + i;
    *hi = g.causal ? p : g.Tk - 1;
    int64_t l = g.window > 0 ? p - g.window + 1 : 0;
    *lo = l < 0 ? 0 : l;
}

template <int ND, class S>
__global__ void att_fwd_kernel(Geo g, const S *q, const S *k, const S *v, S *o, float *lse) {
    const int lane = threadIdx.x & 31;
    const int64_t r = (int64_t)blockIdx.x * WARPS + (threadIdx.x >> 5);
    if (r >= g.B * g.H * g.Tq) return;
    const int64_t i = r % g.Tq, h = (r / g.Tq) % g.H, b = r / (g.Tq * g.H);
    int64_t lo, hi;
    key_range(g, i, &lo, &hi);
    float qr[ND], acc[ND], kr[ND], vr[ND];
    load_row<ND>(qr, q + ((b * g.Tq + i) * g.H + h) * g.dk, g.dk, lane);
#pragma unroll
    for (int t = 0; t < ND; t++) acc[t] = 0.f;
    float m = -INFINITY, l = 0.f;
    for (int64_t j = lo; j <= hi; j++) {
        const int64_t kv = (b * g.Tk + j) * g.H + h;
        load_row<ND>(kr, k + kv * g.dk, g.dk, lane);
        load_row<ND>(vr, v + kv * g.dv, g.dv, lane);
        float s = dot_lanes<ND>(qr, kr) * g.scale;
        float mn = fmaxf(m, s);
        float corr = __expf(m - mn), p = __expf(s - mn);   /* m = -inf at the first key: corr = 0 */
        l = l * corr + p;
#pragma unroll
        for (int t = 0; t < ND; t++) acc[t] = acc[t] * corr + p * vr[t];
        m = mn;
    }
    S *orow = o + ((b * g.Tq + i) * g.H + h) * g.dv;
    const float inv = 1.f / l;
#pragma unroll
    for (int t = 0; t < ND; t++) {
        int64_t e = lane + 32 * t;
        if (e < g.dv) put(orow + e, acc[t] * inv);
    }
    if (lane == 0) lse[(b * g.H + h) * g.Tq + i] = m + logf(l);
}

/* per query row: D = dO . O (kept for kernel 2) and dq */
template <int ND, class S>
__global__ void att_bwd_dq_kernel(Geo g, const S *q, const S *k, const S *v, const S *o, const float *lse,
                                  const S *d_o, S *dq, float *Dbuf) {
    const int lane = threadIdx.x & 31;
    const int64_t r = (int64_t)blockIdx.x * WARPS + (threadIdx.x >> 5);
    if (r >= g.B * g.H * g.Tq) return;
    const int64_t i = r % g.Tq, h = (r / g.Tq) % g.H, b = r / (g.Tq * g.H);
    int64_t lo, hi;
    key_range(g, i, &lo, &hi);
    const int64_t row = (b * g.Tq + i) * g.H + h;
    float qr[ND], dor[ND], orr[ND], kr[ND], vr[ND], gq[ND];
    load_row<ND>(qr, q + row * g.dk, g.dk, lane);
    load_row<ND>(dor, d_o + row * g.dv, g.dv, lane);
    load_row<ND>(orr, o + row * g.dv, g.dv, lane);
    const float D = dot_lanes<ND>(dor, orr);
    const float L = lse[(b * g.H + h) * g.Tq + i];
#pragma unroll
    for (int t = 0; t < ND; t++) gq[t] = 0.f;
    for (int64_t j = lo; j <= hi; j++) {
        const int64_t kv = (b * g.Tk + j) * g.H + h;
        load_row<ND>(kr, k + kv * g.dk, g.dk, lane);
        load_row<ND>(vr, v + kv * g.dv, g.dv, lane);
        float p = __expf(dot_lanes<ND>(qr, kr) * g.scale - L);
        float ds = p * (dot_lanes<ND>(dor, vr) - D) * g.scale;
#pragma unroll
        for (int t = 0; t < ND; t++) gq[t] += ds * kr[t];
    }
#pragma unroll
    for (int t = 0; t < ND; t++) {
        int64_t d = lane + 32 * t;
        if (d < g.dk) put(dq + row * g.dk + d, gq[t]);
    }
    if (lane == 0) Dbuf[(b * g.H + h) * g.Tq + i] = D;
}

/* per key: dk and dv over the query rows that see it */
template <int ND, class S>
__global__ void att_bwd_dkdv_kernel(Geo g, const S *q, const S *k, const S *v, const float *lse, const S *d_o,
                                    const float *Dbuf, S *dk, S *dv) {
    const int lane = threadIdx.x & 31;
    const int64_t r = (int64_t)blockIdx.x * WARPS + (threadIdx.x >> 5);
    if (r >= g.B * g.H * g.Tk) return;
    const int64_t j = r % g.Tk, h = (r / g.Tk) % g.H, b = r / (g.Tk * g.H);
    /* query i (position Tk - Tq + i) sees key j when j <= position and j > position - window */
    const int64_t shift = g.Tk - g.Tq;
    int64_t ilo = g.causal ? j - shift : 0, ihi = g.Tq - 1;
    if (g.window > 0 && j - shift + g.window - 1 < ihi) ihi = j - shift + g.window - 1;
    if (ilo < 0) ilo = 0;
    const int64_t kv = (b * g.Tk + j) * g.H + h;
    float kr[ND], vr[ND], qr[ND], dor[ND], gk[ND], gv[ND];
    load_row<ND>(kr, k + kv * g.dk, g.dk, lane);
    load_row<ND>(vr, v + kv * g.dv, g.dv, lane);
#pragma unroll
    for (int t = 0; t < ND; t++) gk[t] = gv[t] = 0.f;
    for (int64_t i = ilo; i <= ihi; i++) {
        const int64_t row = (b * g.Tq + i) * g.H + h, stat = (b * g.H + h) * g.Tq + i;
        load_row<ND>(qr, q + row * g.dk, g.dk, lane);
        load_row<ND>(dor, d_o + row * g.dv, g.dv, lane);
        float p = __expf(dot_lanes<ND>(qr, kr) * g.scale - lse[stat]);
        float ds = p * (dot_lanes<ND>(dor, vr) - Dbuf[stat]) * g.scale;
#pragma unroll
        for (int t = 0; t < ND; t++) {
            gk[t] += ds * qr[t];
            gv[t] += p * dor[t];
        }
    }
#pragma unroll
    for (int t = 0; t < ND; t++) {
        int64_t d = lane + 32 * t;
        if (d < g.dk) put(dk + kv * g.dk + d, gk[t]);
        if (d < g.dv) put(dv + kv * g.dv + d, gv[t]);
    }
}

Geo geo_of(const efla_attention_args *a) {
    Geo g;
    g.B = a->B; g.Tq = a->Tq; g.Tk = a->Tk; g.H = a->H; g.dk = a->dk; g.dv = a->dv;
    g.window = a->window; g.causal = a->causal; g.scale = (float)a->scale;
    return g;
}

int check(const char *op, const efla_attention_args *a, int *nd) {
    if (a->dtype != EFLA_FLOAT32 && a->dtype != EFLA_BFLOAT16)
        return efla_fail("%s: CUDA computes float32 and bfloat16 inputs, got %s; cast with :float() (float64 runs on "
                         "the cpu)", op, efla_dtype_name(a->dtype));
    int64_t d = a->dk > a->dv ? a->dk : a->dv;
    if (d > 256) return efla_fail("%s: head sizes up to 256 on CUDA, got dk %lld, dv %lld", op, (long long)a->dk,
                                  (long long)a->dv);
    *nd = d <= 32 ? 1 : d <= 64 ? 2 : d <= 128 ? 4 : 8;
    return 0;
}

unsigned blocks_for(int64_t rows) { return (unsigned)((rows + WARPS - 1) / WARPS); }

template <int ND, class S>
int fwd_launch(const efla_attention_args *a, const void *q, const void *k, const void *v, void *o, void *lse) {
    att_fwd_kernel<ND, S><<<blocks_for(a->B * a->H * a->Tq), 32 * WARPS>>>(geo_of(a), (const S *)q, (const S *)k,
                                                                          (const S *)v, (S *)o, (float *)lse);
    CU_CHECK_LAUNCH("attention forward");
    return 0;
}

template <int ND, class S>
int bwd_launch(const efla_attention_args *a, const void *q, const void *k, const void *v, const void *o,
               const void *lse, const void *d_o, void *dq, void *dk, void *dv, float *Dbuf) {
    Geo g = geo_of(a);
    att_bwd_dq_kernel<ND, S><<<blocks_for(a->B * a->H * a->Tq), 32 * WARPS>>>(
        g, (const S *)q, (const S *)k, (const S *)v, (const S *)o, (const float *)lse, (const S *)d_o, (S *)dq, Dbuf);
    CU_CHECK_LAUNCH("attention backward (dq)");
    att_bwd_dkdv_kernel<ND, S><<<blocks_for(a->B * a->H * a->Tk), 32 * WARPS>>>(
        g, (const S *)q, (const S *)k, (const S *)v, (const float *)lse, (const S *)d_o, Dbuf, (S *)dk, (S *)dv);
    CU_CHECK_LAUNCH("attention backward (dk, dv)");
    return 0;
}

template <class S>
int fwd_nd(int nd, const efla_attention_args *a, const void *q, const void *k, const void *v, void *o, void *lse) {
    switch (nd) {
    case 1: return fwd_launch<1, S>(a, q, k, v, o, lse);
    case 2: return fwd_launch<2, S>(a, q, k, v, o, lse);
    case 4: return fwd_launch<4, S>(a, q, k, v, o, lse);
    default: return fwd_launch<8, S>(a, q, k, v, o, lse);
    }
}

template <class S>
int bwd_nd(int nd, const efla_attention_args *a, const void *q, const void *k, const void *v, const void *o,
           const void *lse, const void *d_o, void *dq, void *dk, void *dv, float *Dbuf) {
    switch (nd) {
    case 1: return bwd_launch<1, S>(a, q, k, v, o, lse, d_o, dq, dk, dv, Dbuf);
    case 2: return bwd_launch<2, S>(a, q, k, v, o, lse, d_o, dq, dk, dv, Dbuf);
    case 4: return bwd_launch<4, S>(a, q, k, v, o, lse, d_o, dq, dk, dv, Dbuf);
    default: return bwd_launch<8, S>(a, q, k, v, o, lse, d_o, dq, dk, dv, Dbuf);
    }
}

int current_device(void) {
    int d = 0;
    cudaGetDevice(&d);
    return EFLA_DEVICE_CUDA0 + d;
}

} // namespace

/* The tensors live on the current device (made current by the ops that allocated them). */
int efla_cuda_attention_fwd(const efla_attention_args *a, const void *q, const void *k, const void *v, void *o,
                            void *lse) {
    int nd = 1;
    TRY(check("attention", a, &nd));
    TRY(cu_set_device(current_device()));
    if (a->B * a->H * a->Tq == 0) return 0;
    if (a->dtype == EFLA_BFLOAT16) return fwd_nd<bf16>(nd, a, q, k, v, o, lse);
    return fwd_nd<float>(nd, a, q, k, v, o, lse);
}

int efla_cuda_attention_bwd(const efla_attention_args *a, const void *q, const void *k, const void *v,
                            const void *o, const void *lse, const void *d_o, void *dq, void *dk, void *dv) {
    int nd = 1;
    TRY(check("attention backward", a, &nd));
    int device = current_device();
    TRY(cu_set_device(device));
    size_t es = efla_dtype_size(a->dtype);
    if (a->B * a->H * a->Tq == 0) {   /* no queries: no gradient reaches k and v */
        if (a->Tk) {
            CU_CHECK(cudaMemsetAsync(dk, 0, es * (size_t)(a->B * a->Tk * a->H * a->dk), 0));
            CU_CHECK(cudaMemsetAsync(dv, 0, es * (size_t)(a->B * a->Tk * a->H * a->dv), 0));
        }
        return 0;
    }
    CuBuffer D;
    TRY(D.alloc(sizeof(float) * (size_t)(a->B * a->H * a->Tq), device));
    if (a->dtype == EFLA_BFLOAT16) return bwd_nd<bf16>(nd, a, q, k, v, o, lse, d_o, dq, dk, dv, D.as<float>());
    return bwd_nd<float>(nd, a, q, k, v, o, lse, d_o, dq, dk, dv, D.as<float>());
}

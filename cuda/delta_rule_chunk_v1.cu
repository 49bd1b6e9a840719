/* delta_rule_chunk_v1.cu: version 1 of the tensor-core chunk kernels, kept as the baseline of
 * the kernel workbench and reachable in the library with EFLA_DELTA_RULE_CHUNK_V1=1 (the
 * library uses version 2, delta_rule_chunk.cu). The chunked WY/UT form of the delta rule (docs/MATH.md §4) on tensor
 * cores, for bfloat16 inputs (float32 state and accumulation). Per chunk of C tokens with
 * K, Q (C x dk), V (C x dv), a = alpha and the entering state S (dk x dv):
 *
 *   G = K K^T,  L = strict_lower(diag(a) G),  X = (I + L)^-1,  T = X diag(a)
 *   W = T K,    U = T V,    V' = U - W S = T (V - K S)
 *   O = scale (Q S + tril(Q K^T) V'),    S <- S + K^T V'
 *
 * Four kernels, each a short script of shared-memory matrix products (mm() below, WMMA
 * 16x16x16 bf16 with float accumulators):
 *   prep_kernel      one block per (chunk, head): G, the triangular solve, W and U -> global
 *   fwd_scan_kernel  one block per (sequence, head, dv tile): walks the chunks in order with
 *                    the state tile in shared memory; writes O, the chunk states, S_final
 *   bwd_scan_kernel  one block per (sequence, head, dv tile): walks the chunks backwards
 *                    with dS; writes dV' and the state gradient leaving every chunk, dS0
 *   bwd_chunk_kernel one block per (chunk, head): dq, dk, dv and dalpha of the chunk from
 *                    its entering state, the gradient of its leaving state and dV'
 * The backward of the last line (derivation in docs/MATH.md §4):
 *   D = V - K S,  dP = tril(dO V'^T),  dQ = scale (dO S^T + dP K)
 *   dV' = scale tril(QK^T)^T dO + K dS_out,   dS_in = dS_out + scale Q^T dO - W^T dV'
 *   dD = T^T dV' (= dv),  dT = dV' D^T,  da_j += sum_i X_ij dT_ij,  dX = dT diag(a)
 *   dL = -X^T dX X^T (strictly lower),  dG_ij = a_i dL_ij,  da_i += sum_j dL_ij G_ij
 *   dK = scale dP^T Q + V' dS_out^T - dD S^T + (dG + dG^T) K
 * The chain from alpha into beta and k runs afterwards (delta_rule_alpha.cu).
 *
 * Coverage: bfloat16, C in {16, 32, 64}, dk and dv multiples of 16 up to 128 whose shared
 * memory fits; efla_cuda_delta_rule_chunk_* return 1 for anything else and the caller
 * falls back to the scan kernels of delta_rule.cu. Rows past a sequence's end are zero
 * (alpha = 0 there), which makes them no-ops in every product. */
#include "delta_rule_chunk_tiles.cuh"
#include <string.h>

namespace {

struct Args {
    int64_t H, dk, dv, nseq, nch;
    const int64_t *seq;   /* per sequence: (b*T+start)*H, length, first chunk */
    float scale;
    const bf16 *q, *k, *v, *alpha, *d_o;
    const float *s0, *dsf, *states;
    bf16 *o, *w, *u, *dvp, *dq, *dk_out, *dv_out, *dalpha;
    float *sf, *cs, *dcs, *ds0;
};

/* ---- prep: W = T K and U = T V of every chunk -------------------------------------------------- */
template <int C, int DK, int DV>
__global__ void __launch_bounds__(THREADS) prep_kernel(Args p) {
    extern __shared__ __align__(128) char smem[];
    const int64_t g = blockIdx.x, h = blockIdx.y;
    const ChunkRows cr = chunk_rows(p, g, h, C);
    Carver cv(smem);
    Bm K = cv.bm(C, DK), V = cv.bm(C, DV), Tb = cv.bm(C, C);
    Fm G = cv.fm(C, C), X = cv.fm(C, C), F = cv.fm(C, DK > DV ? DK : DV);
    float *a = (float *)(smem + cv.off);
    const int64_t rs = p.H;   /* rows between consecutive tokens */
    load_rows<C, DK>(K, p.k + cr.first * DK, rs * DK, cr.len);
    load_rows<C, DV>(V, p.v + cr.first * DV, rs * DV, cr.len);
    for (int i = threadIdx.x; i < C; i += THREADS)
        a[i] = i < cr.len ? __bfloat162float(p.alpha[cr.first + i * rs]) : 0.0f;
    __syncthreads();
    mm<false, true>(K, K, G, C, C, DK, false);
    __syncthreads();
    unit_lower_inverse<C>(X, G, a, F.p);   /* F is free until W */
    each<C, C>([&](int r, int c) { Tb.p[r * Tb.ld + c] = __float2bfloat16(X.p[r * X.ld + c] * a[c]); });
    __syncthreads();
    bf16 *w = p.w + (g * p.H + h) * C * DK, *u = p.u + (g * p.H + h) * C * DV;
    mm<false, false>(Tb, K, F, C, DK, C, false);
    __syncthreads();
    store_rows<C, DK>(w, DK, F, C);
    __syncthreads();
    mm<false, false>(Tb, V, F, C, DV, C, false);
    __syncthreads();
    store_rows<C, DV>(u, DV, F, C);
}

template <int C, int DK, int DV>
size_t prep_smem() {
    return 2 * bm_bytes(C, DK > DV ? DK : DV) + bm_bytes(C, C) + 2 * fm_bytes(C, C) + fm_bytes(C, DK > DV ? DK : DV) +
           C * 4 + 128;
}

/* ---- forward scan over chunks ------------------------------------------------------------------- */
template <int C, int DK, int BV>
__global__ void __launch_bounds__(THREADS) fwd_scan_kernel(Args p) {
    extern __shared__ __align__(128) char smem[];
    const int64_t n = blockIdx.x / p.H, h = blockIdx.x % p.H, j0 = (int64_t)blockIdx.y * BV;
    const int64_t dv = p.dv;
    Carver cv(smem);
    Fm S = cv.fm(DK, BV), P = cv.fm(C, C), F = cv.fm(C, BV);
    Bm Sb = cv.bm(DK, BV), Q = cv.bm(C, DK), K = cv.bm(C, DK), W = cv.bm(C, DK), U = cv.bm(C, BV), Pb = cv.bm(C, C);
    load_state<DK, BV>(S, p.s0 ? p.s0 + (n * p.H + h) * DK * dv + j0 : nullptr, dv);   /* the entering state */
    const int64_t first = p.seq[3 * n + 2], len = p.seq[3 * n + 1];
    const int64_t nchunks = (len + C - 1) / C;
    const int64_t rs = p.H;
    for (int64_t c = 0; c < nchunks; c++) {
        const int64_t g = first + c;
        const int64_t row = p.seq[3 * n] + c * C * p.H + h;
        const int clen = (int)(len - c * C < C ? len - c * C : C);
        __syncthreads();   /* S final from the previous chunk; buffers free */
        if (p.cs) store_state<DK, BV>(p.cs + (g * p.H + h) * DK * dv + j0, dv, S);
        to_tile<DK, BV>(Sb, S);
        load_rows<C, DK>(Q, p.q + row * DK, rs * DK, clen);
        load_rows<C, DK>(K, p.k + row * DK, rs * DK, clen);
        load_rows<C, DK>(W, p.w + (g * p.H + h) * C * DK, DK, C);
        load_rows<C, BV>(U, p.u + (g * p.H + h) * C * dv + j0, dv, C);
        __syncthreads();
        /* V' = U - W S */
        mm<false, false>(W, Sb, F, C, BV, DK, false);
        mm<false, true>(Q, K, P, C, C, DK, false);
        __syncthreads();
        each<C, BV>([&](int r, int cc) {
            U.p[r * U.ld + cc] = __float2bfloat16(__bfloat162float(U.p[r * U.ld + cc]) - F.p[r * F.ld + cc]);
        });
        each<C, C>([&](int r, int cc) { Pb.p[r * Pb.ld + cc] = __float2bfloat16(cc <= r ? P.p[r * P.ld + cc] : 0.0f); });
        __syncthreads();
        /* O = scale (Q S + P V'),  S += K^T V' */
        mm<false, false>(Q, Sb, F, C, BV, DK, false);
        mm<true, false>(K, U, S, DK, BV, C, true);
        __syncthreads();
        mm<false, false>(Pb, U, F, C, BV, C, true);
        __syncthreads();
        if (p.o) store_rows<C, BV>(p.o + row * dv + j0, rs * dv, F, clen, p.scale);
    }
    __syncthreads();
    if (p.sf) store_state<DK, BV>(p.sf + (n * p.H + h) * DK * dv + j0, dv, S);
}

template <int C, int DK, int BV>
size_t fwd_scan_smem() {
    return fm_bytes(DK, BV) + fm_bytes(C, C) + fm_bytes(C, BV) + bm_bytes(DK, BV) + 3 * bm_bytes(C, DK) +
           bm_bytes(C, BV) + bm_bytes(C, C) + 128;
}

/* ---- backward scan over chunks: dV' and the state gradients ----------------------------------- */
template <int C, int DK, int BV>
__global__ void __launch_bounds__(THREADS) bwd_scan_kernel(Args p) {
    extern __shared__ __align__(128) char smem[];
    const int64_t n = blockIdx.x / p.H, h = blockIdx.x % p.H, j0 = (int64_t)blockIdx.y * BV;
    const int64_t dv = p.dv;
    Carver cv(smem);
    Fm dS = cv.fm(DK, BV), P = cv.fm(C, C), F = cv.fm(C, BV);
    Bm dSb = cv.bm(DK, BV), Q = cv.bm(C, DK), K = cv.bm(C, DK), W = cv.bm(C, DK), dO = cv.bm(C, BV),
       dVn = cv.bm(C, BV), Pb = cv.bm(C, C);
    load_state<DK, BV>(dS, p.dsf ? p.dsf + (n * p.H + h) * DK * dv + j0 : nullptr, dv);
    const int64_t first = p.seq[3 * n + 2], len = p.seq[3 * n + 1];
    const int64_t nchunks = (len + C - 1) / C;
    const int64_t rs = p.H;
    for (int64_t c = nchunks - 1; c >= 0; c--) {
        const int64_t g = first + c;
        const int64_t row = p.seq[3 * n] + c * C * p.H + h;
        const int clen = (int)(len - c * C < C ? len - c * C : C);
        __syncthreads();
        store_state<DK, BV>(p.dcs + (g * p.H + h) * DK * dv + j0, dv, dS);   /* the gradient leaving chunk g */
        to_tile<DK, BV>(dSb, dS);
        load_rows<C, DK>(Q, p.q + row * DK, rs * DK, clen);
        load_rows<C, DK>(K, p.k + row * DK, rs * DK, clen);
        load_rows<C, DK>(W, p.w + (g * p.H + h) * C * DK, DK, C);
        load_rows<C, BV>(dO, p.d_o + row * dv + j0, rs * dv, clen, p.scale);
        __syncthreads();
        mm<false, true>(Q, K, P, C, C, DK, false);
        __syncthreads();
        each<C, C>([&](int r, int cc) { Pb.p[r * Pb.ld + cc] = __float2bfloat16(cc <= r ? P.p[r * P.ld + cc] : 0.0f); });
        __syncthreads();
        /* dV' = P^T (scale dO) + K dS_out (the same warp owns a tile in both products) */
        mm<true, false>(Pb, dO, F, C, BV, C, false);
        mm<false, false>(K, dSb, F, C, BV, DK, true);
        __syncthreads();
        {
            bf16 *dst = p.dvp + (g * p.H + h) * C * dv + j0;
            each<C, BV / 4>([&](int r, int v) {
                const float4 x = *(float4 *)(F.p + r * F.ld + v * 4);
                put4(dst + r * dv + v * 4, x);
                put4(dVn.p + r * dVn.ld + v * 4, scale4(x, -1.0f));
            });
        }
        __syncthreads();
        /* dS_in = dS_out + Q^T (scale dO) - W^T dV' */
        mm<true, false>(Q, dO, dS, DK, BV, C, true);
        mm<true, false>(W, dVn, dS, DK, BV, C, true);
    }
    __syncthreads();
    if (p.ds0) store_state<DK, BV>(p.ds0 + (n * p.H + h) * DK * dv + j0, dv, dS);
}

template <int C, int DK, int BV>
size_t bwd_scan_smem() {
    return fm_bytes(DK, BV) + fm_bytes(C, C) + fm_bytes(C, BV) + bm_bytes(DK, BV) + 3 * bm_bytes(C, DK) +
           2 * bm_bytes(C, BV) + bm_bytes(C, C) + 128;
}

/* ---- backward within each chunk ----------------------------------------------------------------- */
template <int C, int DK, int DV>
__global__ void __launch_bounds__(THREADS) bwd_chunk_kernel(Args p) {
    extern __shared__ __align__(128) char smem[];
    const int64_t g = blockIdx.x, h = blockIdx.y;
    const ChunkRows cr = chunk_rows(p, g, h, C);
    const int64_t rs = p.H;
    const int D = DK > DV ? DK : DV;
    Carver cv(smem);
    /* five C-row bf16 buffers, reused phase by phase (see the comments at each phase); the
     * C x C bf16 tiles go unpadded: at dk = dv = 128 the shared-memory budget needs it */
    Bm K = cv.bm(C, DK), Qb = cv.bm(C, DK), bufD = cv.bm(C, DV), Vp = cv.bm(C, DV), bufO = cv.bm(C, DV);
    Bm Mat = cv.bm(DK, DV);                         /* S_in, later dS_out */
    Fm F = cv.fm(C, D);                             /* staging of C x d products */
    Fm CC = cv.fm(C, C), XG = cv.fm(C, C);          /* float C x C: scratch; X, later G */
    Bm Tb{(bf16 *)(smem + cv.off), C}; cv.off += (size_t)C * C * 2;
    Bm Xb{(bf16 *)(smem + cv.off), C}; cv.off += (size_t)C * C * 2;
    Bm dPb{(bf16 *)(smem + cv.off), C}; cv.off += (size_t)C * C * 2;
    Bm dXb{(bf16 *)(smem + cv.off), C}; cv.off += (size_t)C * C * 2;
    float *a = (float *)(smem + cv.off);
    float *da = a + C;

    /* phase 1: G, X, T */
    load_rows<C, DK>(K, p.k + cr.first * DK, rs * DK, cr.len);
    for (int i = threadIdx.x; i < C; i += THREADS) {
        a[i] = i < cr.len ? __bfloat162float(p.alpha[cr.first + i * rs]) : 0.0f;
        da[i] = 0.0f;
    }
    __syncthreads();
    mm<false, true>(K, K, CC, C, C, DK, false);     /* CC = G */
    __syncthreads();
    unit_lower_inverse<C>(XG, CC, a, F.p);          /* XG = X; F is free until phase 2 */
    each<C, C>([&](int r, int c) {
        const float x = XG.p[r * XG.ld + c];
        Tb.p[r * C + c] = __float2bfloat16(x * a[c]);
        Xb.p[r * C + c] = __float2bfloat16(x);
    });
    __syncthreads();
    each<C, C>([&](int r, int c) { XG.p[r * XG.ld + c] = CC.p[r * CC.ld + c]; });   /* X is in Xb now: G in XG */
    /* phase 2: D = V - K S_in (bufD), V' = T D (Vp) */
    load_state_bf16<DK, DV>(Mat, p.states + (g * p.H + h) * DK * DV, DV);
    load_rows<C, DV>(bufD, p.v + cr.first * DV, rs * DV, cr.len);
    __syncthreads();
    mm<false, false>(K, Mat, F, C, DV, DK, false);
    __syncthreads();
    each<C, DV>([&](int r, int c) {
        bufD.p[r * bufD.ld + c] = __float2bfloat16(__bfloat162float(bufD.p[r * bufD.ld + c]) - F.p[r * F.ld + c]);
    });
    __syncthreads();
    mm<false, false>(Tb, bufD, F, C, DV, C, false);
    __syncthreads();
    to_tile<C, DV>(Vp, F);
    /* phase 3: dP = tril(dO V'^T) with dO scaled (bufO), dQ = dO S^T + dP K */
    load_rows<C, DV>(bufO, p.d_o + cr.first * DV, rs * DV, cr.len, p.scale);
    load_rows<C, DK>(Qb, p.q + cr.first * DK, rs * DK, cr.len);
    __syncthreads();
    mm<false, true>(bufO, Vp, CC, C, C, DV, false);
    __syncthreads();
    each<C, C>([&](int r, int c) { dPb.p[r * C + c] = __float2bfloat16(c <= r ? CC.p[r * CC.ld + c] : 0.0f); });
    __syncthreads();
    mm<false, true>(bufO, Mat, F, C, DK, DV, false);
    mm<false, false>(dPb, K, F, C, DK, C, true);     /* same tiles, same warp: no barrier needed */
    __syncthreads();
    store_rows<C, DK>(p.dq + cr.first * DK, rs * DK, F, cr.len);
    __syncthreads();
    /* phase 4: dV' (bufO, dO is done), dD = T^T dV' = dv, dT = dV' D^T, da from T */
    load_rows<C, DV>(bufO, p.dvp + (g * p.H + h) * C * DV, DV, C);
    __syncthreads();
    mm<true, false>(Tb, bufO, F, C, DV, C, false);
    mm<false, true>(bufO, bufD, CC, C, C, DV, false);   /* CC = dT */
    __syncthreads();
    store_rows<C, DV>(p.dv_out + cr.first * DV, rs * DV, F, cr.len);
    to_tile<C, DV>(bufD, F, -1.0f);                    /* bufD = -dD (D is done) */
    for (int j = threadIdx.x; j < C; j += THREADS) {   /* da_j += sum_i X_ij dT_ij */
        float s = 0;
        for (int i = j; i < C; i++) s += __bfloat162float(Xb.p[i * C + j]) * CC.p[i * CC.ld + j];
        da[j] += s;
    }
    each<C, C>([&](int r, int c) { dXb.p[r * C + c] = __float2bfloat16(CC.p[r * CC.ld + c] * a[c]); });
    __syncthreads();
    /* phase 5: dK = dP^T Q - dD S^T + V' dS_out^T + (dG + dG^T) K */
    mm<true, false>(dPb, Qb, F, C, DK, C, false);
    mm<false, true>(bufD, Mat, F, C, DK, DV, true);
    __syncthreads();
    load_state_bf16<DK, DV>(Mat, p.dcs + (g * p.H + h) * DK * DV, DV);   /* Mat = dS_out */
    __syncthreads();
    mm<false, true>(Vp, Mat, F, C, DK, DV, true);
    mm<false, true>(dXb, Xb, CC, C, C, C, false);      /* CC = Y = dX X^T */
    __syncthreads();
    each<C, C>([&](int r, int c) { dXb.p[r * C + c] = __float2bfloat16(CC.p[r * CC.ld + c]); });   /* Y, bf16 */
    __syncthreads();
    mm<true, false>(Xb, dXb, CC, C, C, C, false);      /* CC = X^T Y = -dL */
    __syncthreads();
    for (int i = threadIdx.x; i < C; i += THREADS) {   /* da_i += sum_{j<i} dL_ij G_ij */
        float s = 0;
        for (int j = 0; j < i; j++) s -= CC.p[i * CC.ld + j] * XG.p[i * XG.ld + j];
        da[i] += s;
    }
    each<C, C>([&](int r, int c) {                    /* dGs = dG + dG^T into dXb */
        float x = 0;
        if (r > c) x = -a[r] * CC.p[r * CC.ld + c];
        else if (c > r) x = -a[c] * CC.p[c * CC.ld + r];
        dXb.p[r * C + c] = __float2bfloat16(x);
    });
    __syncthreads();
    mm<false, false>(dXb, K, F, C, DK, C, true);
    __syncthreads();
    store_rows<C, DK>(p.dk_out + cr.first * DK, rs * DK, F, cr.len);
    for (int i = threadIdx.x; i < cr.len; i += THREADS) p.dalpha[cr.first + i * rs] = __float2bfloat16(da[i]);
}

template <int C, int DK, int DV>
size_t bwd_chunk_smem() {
    const int D = DK > DV ? DK : DV;
    return 2 * bm_bytes(C, DK) + 3 * bm_bytes(C, DV) + bm_bytes(DK, DV) + fm_bytes(C, D) + 2 * fm_bytes(C, C) +
           4 * (size_t)C * C * 2 + 2 * C * 4 + 128;
}

/* ---- launching ------------------------------------------------------------------------------------ */

/* dv tile of the scans: 64 when dv allows it (fewer redundant Q K^T products), else dv */
template <int DV> struct Tile { static const int BV = DV >= 64 ? 64 : DV; };

/* version 1 keeps the chunk states in float32 (delta_rule_chunk_entry.inc) and takes bfloat16
 * inputs only */
template <class E> constexpr efla_dtype chunk_state_dtype_for() { return EFLA_FLOAT32; }
const bool CHUNK_FLOAT32 = false;
/* version 1 reads a given alpha and writes dalpha: the front end makes alpha and takes the chain
 * (the plan's makes_alpha is 0 while version 1 takes the calls) */
bool take_alpha_chain(Args &, const efla_delta_rule_args *, const efla_delta_rule_buffers *) { return false; }
bool make_alpha_from_beta(Args &, const efla_delta_rule_args *, const efla_delta_rule_buffers *) { return false; }
/* nor does it keep its solves (the plan's keeps_solves is 0 while version 1 takes the calls) */
void keep_solves(Args &, const efla_delta_rule_buffers *) {}
void use_solves(Args &, const efla_delta_rule_buffers *) {}
template <class E> using ArgsT = Args;

/* plan: only say whether the kernels fit (*done), launch nothing */
template <class E, int C, int DK, int DV>
int run_fwd(Args &p, int64_t nseq, int device, bool *done, bool plan) {
    const int BV = Tile<DV>::BV;
    bool f1, f2;
    TRY(set_smem(prep_kernel<C, DK, DV>, prep_smem<C, DK, DV>(), &f1));
    TRY(set_smem(fwd_scan_kernel<C, DK, BV>, fwd_scan_smem<C, DK, BV>(), &f2));
    if (!f1 || !f2 || plan) { *done = f1 && f2; return 0; }
    CuBuffer wbuf, ubuf;
    TRY(wbuf.alloc(sizeof(bf16) * (size_t)(p.nch * p.H * C * (DK + DV)), device));
    p.w = wbuf.as<bf16>();
    p.u = p.w + p.nch * p.H * C * DK;
    Profile prof;
    prof.mark("start");
    prep_kernel<C, DK, DV><<<dim3((unsigned)p.nch, (unsigned)p.H), THREADS, prep_smem<C, DK, DV>()>>>(p);
    CU_CHECK_LAUNCH("delta_rule_chunk_prep");
    prof.mark("prep");
    fwd_scan_kernel<C, DK, BV><<<dim3((unsigned)(nseq * p.H), DV / BV), THREADS, fwd_scan_smem<C, DK, BV>()>>>(p);
    CU_CHECK_LAUNCH("delta_rule_chunk_fwd_scan");
    prof.mark("fwd_scan");
    *done = true;
    return 0;
}

template <class E, int C, int DK, int DV>
int run_bwd(Args &p, int64_t nseq, int device, bool *done, bool plan) {
    const int BV = Tile<DV>::BV;
    bool f1, f2, f3, f4;
    TRY(set_smem(prep_kernel<C, DK, DV>, prep_smem<C, DK, DV>(), &f1));
    TRY(set_smem(fwd_scan_kernel<C, DK, BV>, fwd_scan_smem<C, DK, BV>(), &f2));
    TRY(set_smem(bwd_scan_kernel<C, DK, BV>, bwd_scan_smem<C, DK, BV>(), &f3));
    TRY(set_smem(bwd_chunk_kernel<C, DK, DV>, bwd_chunk_smem<C, DK, DV>(), &f4));
    if (!f1 || !f2 || !f3 || !f4 || plan) { *done = f1 && f2 && f3 && f4; return 0; }
    const size_t state_elems = (size_t)(p.nch * p.H * DK * DV);
    CuBuffer wbuf, dvpbuf, dcsbuf, csbuf;
    TRY(wbuf.alloc(sizeof(bf16) * (size_t)(p.nch * p.H * C * (DK + DV)), device));
    p.w = wbuf.as<bf16>();
    p.u = p.w + p.nch * p.H * C * DK;
    TRY(dvpbuf.alloc(sizeof(bf16) * (size_t)(p.nch * p.H * C * DV), device));
    p.dvp = dvpbuf.as<bf16>();
    TRY(dcsbuf.alloc(sizeof(float) * state_elems, device));
    p.dcs = dcsbuf.as<float>();
    Profile prof;
    prof.mark("start");
    prep_kernel<C, DK, DV><<<dim3((unsigned)p.nch, (unsigned)p.H), THREADS, prep_smem<C, DK, DV>()>>>(p);
    CU_CHECK_LAUNCH("delta_rule_chunk_prep");
    if (!p.states) {   /* recompute the chunk states with a state-only forward */
        TRY(csbuf.alloc(sizeof(float) * state_elems, device));
        Args f = p;
        f.o = nullptr; f.sf = nullptr; f.cs = csbuf.as<float>();
        fwd_scan_kernel<C, DK, BV><<<dim3((unsigned)(nseq * p.H), DV / BV), THREADS, fwd_scan_smem<C, DK, BV>()>>>(f);
        CU_CHECK_LAUNCH("delta_rule_chunk_fwd_scan");
        p.states = csbuf.as<float>();
    }
    prof.mark("prep+fwd");
    bwd_scan_kernel<C, DK, BV><<<dim3((unsigned)(nseq * p.H), DV / BV), THREADS, bwd_scan_smem<C, DK, BV>()>>>(p);
    CU_CHECK_LAUNCH("delta_rule_chunk_bwd_scan");
    prof.mark("bwd_scan");
    bwd_chunk_kernel<C, DK, DV><<<dim3((unsigned)p.nch, (unsigned)p.H), THREADS, bwd_chunk_smem<C, DK, DV>()>>>(p);
    CU_CHECK_LAUNCH("delta_rule_chunk_bwd_chunk");
    prof.mark("bwd_chunk");
    *done = true;
    return 0;
}

} // namespace

/* the entry points (dispatch on the sizes, coverage, the shared arguments): the same for
 * every version */
#define EFLA_CHUNK_FWD efla_cuda_delta_rule_chunk_v1_fwd
#define EFLA_CHUNK_BWD efla_cuda_delta_rule_chunk_v1_bwd
#define EFLA_CHUNK_PLAN efla_cuda_delta_rule_chunk_v1_plan
#include "delta_rule_chunk_entry.inc"

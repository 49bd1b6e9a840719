/* delta_rule_chunk.cu: the chunked WY/UT form of the delta rule (docs/MATH.md §4) on tensor
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
#include "kernels.cuh"
#include <mma.h>
#include <stdlib.h>
#include <string.h>

namespace {

using namespace nvcuda;

const int THREADS = 256;
const int NWARP = THREADS / 32;

/* ---- shared-memory matrices ------------------------------------------------------------------ */
/* Row-major tiles with padded rows (the pad keeps WMMA's 32-byte alignment: 8 bf16 / 4 float). */
struct Bm { bf16 *p; int ld; };
struct Fm { float *p; int ld; };

struct Carver {
    char *base; size_t off;
    __device__ Carver(char *b) : base(b), off(0) {}
    __device__ Bm bm(int rows, int cols) { Bm m{(bf16 *)(base + off), cols + 8}; off += (size_t)rows * (cols + 8) * 2; return m; }
    __device__ Fm fm(int rows, int cols) { Fm m{(float *)(base + off), cols + 4}; off += (size_t)rows * (cols + 4) * 4; return m; }
};
static size_t bm_bytes(int rows, int cols) { return (size_t)rows * (cols + 8) * 2; }
static size_t fm_bytes(int rows, int cols) { return (size_t)rows * (cols + 4) * 4; }

/* C (M x N, float) (+)= op(A) op(B), op(A) M x K, op(B) K x N, every size a multiple of 16.
 * TA: A is stored K x M (so op(A) = A^T); TB: B is stored N x K. Each warp owns output
 * tiles round-robin. Callers synchronise before reading C. */
template <bool TA, bool TB>
__device__ void mm(Bm A, Bm B, Fm Cm, int M, int N, int K, bool acc) {
    typedef typename std::conditional<TA, wmma::col_major, wmma::row_major>::type LA;
    typedef typename std::conditional<TB, wmma::col_major, wmma::row_major>::type LB;
    const int warp = threadIdx.x / 32, tn = N / 16, tiles = (M / 16) * tn;
    for (int t = warp; t < tiles; t += NWARP) {
        const int i = t / tn, j = t % tn;
        wmma::fragment<wmma::accumulator, 16, 16, 16, float> c;
        float *cp = Cm.p + i * 16 * Cm.ld + j * 16;
        if (acc) wmma::load_matrix_sync(c, cp, Cm.ld, wmma::mem_row_major);
        else wmma::fill_fragment(c, 0.0f);
        for (int k = 0; k < K; k += 16) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, LA> a;
            wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, LB> b;
            wmma::load_matrix_sync(a, TA ? A.p + k * A.ld + i * 16 : A.p + i * 16 * A.ld + k, A.ld);
            wmma::load_matrix_sync(b, TB ? B.p + j * 16 * B.ld + k : B.p + k * B.ld + j * 16, B.ld);
            wmma::mma_sync(c, a, b, c);
        }
        wmma::store_matrix_sync(cp, c, Cm.ld, wmma::mem_row_major);
    }
}

/* rows [0, C) x cols [0, n) of a token-major global matrix (row r at src + r*stride) into
 * shared bf16; rows >= len are zero. mult scales the values. */
__device__ void load_rows(Bm dst, const bf16 *src, int64_t stride, int C, int n, int len, float mult = 1.0f) {
    const int vec = n / 8;   /* 16-byte vectors per row */
    for (int e = threadIdx.x; e < C * vec; e += THREADS) {
        const int r = e / vec, c8 = (e % vec) * 8;
        uint4 val = make_uint4(0, 0, 0, 0);
        if (r < len) val = *(const uint4 *)(src + r * stride + c8);
        if (mult != 1.0f && r < len) {
            bf16 *h = (bf16 *)&val;
            for (int x = 0; x < 8; x++) h[x] = __float2bfloat16(__bfloat162float(h[x]) * mult);
        }
        *(uint4 *)(dst.p + r * dst.ld + c8) = val;
    }
}

/* a contiguous rows x cols float32 global matrix (leading dimension ldg) into shared bf16 */
__device__ void load_state_bf16(Bm dst, const float *src, int64_t ldg, int rows, int cols) {
    for (int e = threadIdx.x; e < rows * cols; e += THREADS) {
        const int r = e / cols, c = e % cols;
        dst.p[r * dst.ld + c] = __float2bfloat16(src[r * ldg + c]);
    }
}

/* shared float -> bf16, with an optional factor */
__device__ void to_bf16(Bm dst, Fm src, int rows, int cols, float mult = 1.0f) {
    for (int e = threadIdx.x; e < rows * cols; e += THREADS) {
        const int r = e / cols, c = e % cols;
        dst.p[r * dst.ld + c] = __float2bfloat16(src.p[r * src.ld + c] * mult);
    }
}

/* shared float rows [0, len) -> global bf16 token-major rows */
__device__ void store_rows(bf16 *dst, int64_t stride, Fm src, int len, int n, float mult = 1.0f) {
    for (int e = threadIdx.x; e < len * n; e += THREADS) {
        const int r = e / n, c = e % n;
        dst[r * stride + c] = __float2bfloat16(src.p[r * src.ld + c] * mult);
    }
}

/* X = (I + L)^-1 for L_ij = a_i G_ij (i > j), by forward substitution over rows: after
 * step m row m is final and is subtracted from every later row. X is unit lower. */
__device__ void unit_lower_inverse(Fm X, Fm G, const float *a, int C) {
    for (int e = threadIdx.x; e < C * C; e += THREADS) {
        const int r = e / C, c = e % C;
        X.p[r * X.ld + c] = r == c ? 1.0f : 0.0f;
    }
    __syncthreads();
    for (int m = 0; m < C - 1; m++) {
        const int rows = C - 1 - m, cols = m + 1;
        for (int e = threadIdx.x; e < rows * cols; e += THREADS) {
            const int i = m + 1 + e / cols, j = e % cols;
            X.p[i * X.ld + j] -= a[i] * G.p[i * G.ld + m] * X.p[m * X.ld + j];
        }
        __syncthreads();
    }
}

struct Args {
    int64_t H, dk, dv, nseq, nch;
    const int64_t *seq;   /* per sequence: (b*T+start)*H, length, first chunk */
    float scale;
    const bf16 *q, *k, *v, *alpha, *d_o;
    const float *s0, *dsf, *states;
    bf16 *o, *w, *u, *dvp, *dq, *dk_out, *dv_out, *dalpha;
    float *sf, *cs, *dcs, *ds0;
};

/* token row (in units of H-strided rows) of token r of chunk g for head h */
struct ChunkRows {
    int64_t first;   /* row index of token 0 of the chunk for head h: ((b*T + t0)*H + h) */
    int len;
};

__device__ ChunkRows chunk_rows(const Args &p, int64_t g, int64_t h, int C) {
    int64_t lo = 0, hi = p.nseq - 1;
    while (lo < hi) {
        int64_t mid = (lo + hi + 1) / 2;
        if (p.seq[3 * mid + 2] <= g) lo = mid; else hi = mid - 1;
    }
    const int64_t c = g - p.seq[3 * lo + 2], start = c * C, rem = p.seq[3 * lo + 1] - start;
    ChunkRows r;
    r.first = p.seq[3 * lo] + start * p.H + h;
    r.len = (int)(rem < C ? rem : C);
    return r;
}

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
    load_rows(K, p.k + cr.first * DK, rs * DK, C, DK, cr.len);
    load_rows(V, p.v + cr.first * DV, rs * DV, C, DV, cr.len);
    for (int i = threadIdx.x; i < C; i += THREADS)
        a[i] = i < cr.len ? __bfloat162float(p.alpha[cr.first + i * rs]) : 0.0f;
    __syncthreads();
    mm<false, true>(K, K, G, C, C, DK, false);
    __syncthreads();
    unit_lower_inverse(X, G, a, C);
    for (int e = threadIdx.x; e < C * C; e += THREADS) {
        const int r = e / C, c = e % C;
        Tb.p[r * Tb.ld + c] = __float2bfloat16(X.p[r * X.ld + c] * a[c]);
    }
    __syncthreads();
    bf16 *w = p.w + (g * p.H + h) * C * DK, *u = p.u + (g * p.H + h) * C * DV;
    mm<false, false>(Tb, K, F, C, DK, C, false);
    __syncthreads();
    store_rows(w, DK, F, C, DK);
    __syncthreads();
    mm<false, false>(Tb, V, F, C, DV, C, false);
    __syncthreads();
    store_rows(u, DV, F, C, DV);
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
    /* the entering state */
    for (int e = threadIdx.x; e < DK * BV; e += THREADS) {
        const int r = e / BV, c = e % BV;
        S.p[r * S.ld + c] = p.s0 ? p.s0[((n * p.H + h) * DK + r) * dv + j0 + c] : 0.0f;
    }
    const int64_t first = p.seq[3 * n + 2], len = p.seq[3 * n + 1];
    const int64_t nchunks = (len + C - 1) / C;
    const int64_t rs = p.H;
    for (int64_t c = 0; c < nchunks; c++) {
        const int64_t g = first + c;
        const int64_t row = p.seq[3 * n] + c * C * p.H + h;
        const int clen = (int)(len - c * C < C ? len - c * C : C);
        __syncthreads();   /* S final from the previous chunk; buffers free */
        if (p.cs) {
            float *dst = p.cs + (g * p.H + h) * DK * dv + j0;
            for (int e = threadIdx.x; e < DK * BV; e += THREADS) {
                const int r = e / BV, cc = e % BV;
                dst[r * dv + cc] = S.p[r * S.ld + cc];
            }
        }
        to_bf16(Sb, S, DK, BV);
        load_rows(Q, p.q + row * DK, rs * DK, C, DK, clen);
        load_rows(K, p.k + row * DK, rs * DK, C, DK, clen);
        load_rows(W, p.w + (g * p.H + h) * C * DK, DK, C, DK, C);
        load_rows(U, p.u + (g * p.H + h) * C * dv + j0, dv, C, BV, C);
        __syncthreads();
        /* V' = U - W S */
        mm<false, false>(W, Sb, F, C, BV, DK, false);
        mm<false, true>(Q, K, P, C, C, DK, false);
        __syncthreads();
        for (int e = threadIdx.x; e < C * BV; e += THREADS) {
            const int r = e / BV, cc = e % BV;
            U.p[r * U.ld + cc] = __float2bfloat16(__bfloat162float(U.p[r * U.ld + cc]) - F.p[r * F.ld + cc]);
        }
        for (int e = threadIdx.x; e < C * C; e += THREADS) {
            const int r = e / C, cc = e % C;
            Pb.p[r * Pb.ld + cc] = __float2bfloat16(cc <= r ? P.p[r * P.ld + cc] : 0.0f);
        }
        __syncthreads();
        /* O = scale (Q S + P V'),  S += K^T V' */
        mm<false, false>(Q, Sb, F, C, BV, DK, false);
        mm<true, false>(K, U, S, DK, BV, C, true);
        __syncthreads();
        mm<false, false>(Pb, U, F, C, BV, C, true);
        __syncthreads();
        if (p.o) store_rows(p.o + row * dv + j0, rs * dv, F, clen, BV, p.scale);
    }
    __syncthreads();
    if (p.sf)
        for (int e = threadIdx.x; e < DK * BV; e += THREADS) {
            const int r = e / BV, cc = e % BV;
            p.sf[((n * p.H + h) * DK + r) * dv + j0 + cc] = S.p[r * S.ld + cc];
        }
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
    for (int e = threadIdx.x; e < DK * BV; e += THREADS) {
        const int r = e / BV, c = e % BV;
        dS.p[r * dS.ld + c] = p.dsf ? p.dsf[((n * p.H + h) * DK + r) * dv + j0 + c] : 0.0f;
    }
    const int64_t first = p.seq[3 * n + 2], len = p.seq[3 * n + 1];
    const int64_t nchunks = (len + C - 1) / C;
    const int64_t rs = p.H;
    for (int64_t c = nchunks - 1; c >= 0; c--) {
        const int64_t g = first + c;
        const int64_t row = p.seq[3 * n] + c * C * p.H + h;
        const int clen = (int)(len - c * C < C ? len - c * C : C);
        __syncthreads();
        {   /* the gradient of the state leaving chunk g */
            float *dst = p.dcs + (g * p.H + h) * DK * dv + j0;
            for (int e = threadIdx.x; e < DK * BV; e += THREADS) {
                const int r = e / BV, cc = e % BV;
                dst[r * dv + cc] = dS.p[r * dS.ld + cc];
            }
        }
        to_bf16(dSb, dS, DK, BV);
        load_rows(Q, p.q + row * DK, rs * DK, C, DK, clen);
        load_rows(K, p.k + row * DK, rs * DK, C, DK, clen);
        load_rows(W, p.w + (g * p.H + h) * C * DK, DK, C, DK, C);
        load_rows(dO, p.d_o + row * dv + j0, rs * dv, C, BV, clen, p.scale);
        __syncthreads();
        mm<false, true>(Q, K, P, C, C, DK, false);
        __syncthreads();
        for (int e = threadIdx.x; e < C * C; e += THREADS) {
            const int r = e / C, cc = e % C;
            Pb.p[r * Pb.ld + cc] = __float2bfloat16(cc <= r ? P.p[r * P.ld + cc] : 0.0f);
        }
        __syncthreads();
        /* dV' = P^T (scale dO) + K dS_out */
        mm<true, false>(Pb, dO, F, C, BV, C, false);
        __syncthreads();
        mm<false, false>(K, dSb, F, C, BV, DK, true);
        __syncthreads();
        {
            bf16 *dst = p.dvp + (g * p.H + h) * C * dv + j0;
            for (int e = threadIdx.x; e < C * BV; e += THREADS) {
                const int r = e / BV, cc = e % BV;
                const float x = F.p[r * F.ld + cc];
                dst[r * dv + cc] = __float2bfloat16(x);
                dVn.p[r * dVn.ld + cc] = __float2bfloat16(-x);
            }
        }
        __syncthreads();
        /* dS_in = dS_out + Q^T (scale dO) - W^T dV' */
        mm<true, false>(Q, dO, dS, DK, BV, C, true);
        __syncthreads();
        mm<true, false>(W, dVn, dS, DK, BV, C, true);
    }
    __syncthreads();
    if (p.ds0)
        for (int e = threadIdx.x; e < DK * BV; e += THREADS) {
            const int r = e / BV, cc = e % BV;
            p.ds0[((n * p.H + h) * DK + r) * dv + j0 + cc] = dS.p[r * dS.ld + cc];
        }
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
    load_rows(K, p.k + cr.first * DK, rs * DK, C, DK, cr.len);
    for (int i = threadIdx.x; i < C; i += THREADS) {
        a[i] = i < cr.len ? __bfloat162float(p.alpha[cr.first + i * rs]) : 0.0f;
        da[i] = 0.0f;
    }
    __syncthreads();
    mm<false, true>(K, K, CC, C, C, DK, false);     /* CC = G */
    __syncthreads();
    unit_lower_inverse(XG, CC, a, C);               /* XG = X */
    for (int e = threadIdx.x; e < C * C; e += THREADS) {
        const int r = e / C, c = e % C;
        const float x = XG.p[r * XG.ld + c];
        Tb.p[r * C + c] = __float2bfloat16(x * a[c]);
        Xb.p[r * C + c] = __float2bfloat16(x);
    }
    __syncthreads();
    for (int e = threadIdx.x; e < C * C; e += THREADS) {   /* X is in Xb now: keep G in XG */
        const int r = e / C, c = e % C;
        XG.p[r * XG.ld + c] = CC.p[r * CC.ld + c];
    }
    /* phase 2: D = V - K S_in (bufD), V' = T D (Vp) */
    load_state_bf16(Mat, p.states + (g * p.H + h) * DK * DV, DV, DK, DV);
    load_rows(bufD, p.v + cr.first * DV, rs * DV, C, DV, cr.len);
    __syncthreads();
    mm<false, false>(K, Mat, F, C, DV, DK, false);
    __syncthreads();
    for (int e = threadIdx.x; e < C * DV; e += THREADS) {
        const int r = e / DV, c = e % DV;
        bufD.p[r * bufD.ld + c] = __float2bfloat16(__bfloat162float(bufD.p[r * bufD.ld + c]) - F.p[r * F.ld + c]);
    }
    __syncthreads();
    mm<false, false>(Tb, bufD, F, C, DV, C, false);
    __syncthreads();
    to_bf16(Vp, F, C, DV);
    /* phase 3: dP = tril(dO V'^T) with dO scaled (bufO), dQ = dO S^T + dP K */
    load_rows(bufO, p.d_o + cr.first * DV, rs * DV, C, DV, cr.len, p.scale);
    load_rows(Qb, p.q + cr.first * DK, rs * DK, C, DK, cr.len);
    __syncthreads();
    mm<false, true>(bufO, Vp, CC, C, C, DV, false);
    __syncthreads();
    for (int e = threadIdx.x; e < C * C; e += THREADS) {
        const int r = e / C, c = e % C;
        dPb.p[r * C + c] = __float2bfloat16(c <= r ? CC.p[r * CC.ld + c] : 0.0f);
    }
    __syncthreads();
    mm<false, true>(bufO, Mat, F, C, DK, DV, false);
    __syncthreads();
    mm<false, false>(dPb, K, F, C, DK, C, true);
    __syncthreads();
    store_rows(p.dq + cr.first * DK, rs * DK, F, cr.len, DK);
    __syncthreads();
    /* phase 4: dV' (bufO, dO is done), dD = T^T dV' = dv, dT = dV' D^T, da from T */
    load_rows(bufO, p.dvp + (g * p.H + h) * C * DV, DV, C, DV, C);
    __syncthreads();
    mm<true, false>(Tb, bufO, F, C, DV, C, false);
    mm<false, true>(bufO, bufD, CC, C, C, DV, false);   /* CC = dT */
    __syncthreads();
    store_rows(p.dv_out + cr.first * DV, rs * DV, F, cr.len, DV);
    to_bf16(bufD, F, C, DV, -1.0f);                    /* bufD = -dD (D is done) */
    for (int j = threadIdx.x; j < C; j += THREADS) {   /* da_j += sum_i X_ij dT_ij */
        float s = 0;
        for (int i = j; i < C; i++) s += __bfloat162float(Xb.p[i * C + j]) * CC.p[i * CC.ld + j];
        da[j] += s;
    }
    for (int e = threadIdx.x; e < C * C; e += THREADS) {
        const int r = e / C, c = e % C;
        dXb.p[r * C + c] = __float2bfloat16(CC.p[r * CC.ld + c] * a[c]);
    }
    __syncthreads();
    /* phase 5: dK = dP^T Q - dD S^T + V' dS_out^T + (dG + dG^T) K */
    mm<true, false>(dPb, Qb, F, C, DK, C, false);
    __syncthreads();
    mm<false, true>(bufD, Mat, F, C, DK, DV, true);
    __syncthreads();
    load_state_bf16(Mat, p.dcs + (g * p.H + h) * DK * DV, DV, DK, DV);   /* Mat = dS_out */
    __syncthreads();
    mm<false, true>(Vp, Mat, F, C, DK, DV, true);
    mm<false, true>(dXb, Xb, CC, C, C, C, false);      /* CC = Y = dX X^T */
    __syncthreads();
    {   /* Y -> bf16 in dXb (dX is done) */
        for (int e = threadIdx.x; e < C * C; e += THREADS) {
            const int r = e / C, c = e % C;
            dXb.p[r * C + c] = __float2bfloat16(CC.p[r * CC.ld + c]);
        }
    }
    __syncthreads();
    mm<true, false>(Xb, dXb, CC, C, C, C, false);      /* CC = X^T Y = -dL */
    __syncthreads();
    for (int i = threadIdx.x; i < C; i += THREADS) {   /* da_i += sum_{j<i} dL_ij G_ij */
        float s = 0;
        for (int j = 0; j < i; j++) s -= CC.p[i * CC.ld + j] * XG.p[i * XG.ld + j];
        da[i] += s;
    }
    __syncthreads();
    for (int e = threadIdx.x; e < C * C; e += THREADS) {   /* dGs = dG + dG^T into dXb */
        const int r = e / C, c = e % C;
        float x = 0;
        if (r > c) x = -a[r] * CC.p[r * CC.ld + c];
        else if (c > r) x = -a[c] * CC.p[c * CC.ld + r];
        dXb.p[r * C + c] = __float2bfloat16(x);
    }
    __syncthreads();
    mm<false, false>(dXb, K, F, C, DK, C, true);
    __syncthreads();
    store_rows(p.dk_out + cr.first * DK, rs * DK, F, cr.len, DK);
    for (int i = threadIdx.x; i < cr.len; i += THREADS) p.dalpha[cr.first + i * rs] = __float2bfloat16(da[i]);
}

template <int C, int DK, int DV>
size_t bwd_chunk_smem() {
    const int D = DK > DV ? DK : DV;
    return 2 * bm_bytes(C, DK) + 3 * bm_bytes(C, DV) + bm_bytes(DK, DV) + fm_bytes(C, D) + 2 * fm_bytes(C, C) +
           4 * (size_t)C * C * 2 + 2 * C * 4 + 128;
}

/* ---- launching ------------------------------------------------------------------------------------ */
template <typename K> int set_smem(K kernel, size_t bytes, bool *fits) {
    int dev = 0, maxs = 0;
    CU_CHECK(cudaGetDevice(&dev));
    CU_CHECK(cudaDeviceGetAttribute(&maxs, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    *fits = bytes <= (size_t)maxs;
    if (*fits && bytes > 48 * 1024) CU_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
    return 0;
}

/* dv tile of the scans: 64 when dv allows it (fewer redundant Q K^T products), else dv */
template <int DV> struct Tile { static const int BV = DV >= 64 ? 64 : DV; };

template <int C, int DK, int DV>
int run_fwd(Args &p, int64_t nseq, int device, bool *done) {
    const int BV = Tile<DV>::BV;
    bool f1, f2;
    TRY(set_smem(prep_kernel<C, DK, DV>, prep_smem<C, DK, DV>(), &f1));
    TRY(set_smem(fwd_scan_kernel<C, DK, BV>, fwd_scan_smem<C, DK, BV>(), &f2));
    if (!f1 || !f2) { *done = false; return 0; }
    CuBuffer wbuf, ubuf;
    TRY(wbuf.alloc(sizeof(bf16) * (size_t)(p.nch * p.H * C * (DK + DV)), device));
    p.w = wbuf.as<bf16>();
    p.u = p.w + p.nch * p.H * C * DK;
    prep_kernel<C, DK, DV><<<dim3((unsigned)p.nch, (unsigned)p.H), THREADS, prep_smem<C, DK, DV>()>>>(p);
    CU_CHECK_LAUNCH("delta_rule_chunk_prep");
    fwd_scan_kernel<C, DK, BV><<<dim3((unsigned)(nseq * p.H), DV / BV), THREADS, fwd_scan_smem<C, DK, BV>()>>>(p);
    CU_CHECK_LAUNCH("delta_rule_chunk_fwd_scan");
    *done = true;
    return 0;
}

template <int C, int DK, int DV>
int run_bwd(Args &p, int64_t nseq, int device, bool *done) {
    const int BV = Tile<DV>::BV;
    bool f1, f2, f3, f4;
    TRY(set_smem(prep_kernel<C, DK, DV>, prep_smem<C, DK, DV>(), &f1));
    TRY(set_smem(fwd_scan_kernel<C, DK, BV>, fwd_scan_smem<C, DK, BV>(), &f2));
    TRY(set_smem(bwd_scan_kernel<C, DK, BV>, bwd_scan_smem<C, DK, BV>(), &f3));
    TRY(set_smem(bwd_chunk_kernel<C, DK, DV>, bwd_chunk_smem<C, DK, DV>(), &f4));
    if (!f1 || !f2 || !f3 || !f4) { *done = false; return 0; }
    const size_t state_elems = (size_t)(p.nch * p.H * DK * DV);
    CuBuffer wbuf, dvpbuf, dcsbuf, csbuf;
    TRY(wbuf.alloc(sizeof(bf16) * (size_t)(p.nch * p.H * C * (DK + DV)), device));
    p.w = wbuf.as<bf16>();
    p.u = p.w + p.nch * p.H * C * DK;
    TRY(dvpbuf.alloc(sizeof(bf16) * (size_t)(p.nch * p.H * C * DV), device));
    p.dvp = dvpbuf.as<bf16>();
    TRY(dcsbuf.alloc(sizeof(float) * state_elems, device));
    p.dcs = dcsbuf.as<float>();
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
    bwd_scan_kernel<C, DK, BV><<<dim3((unsigned)(nseq * p.H), DV / BV), THREADS, bwd_scan_smem<C, DK, BV>()>>>(p);
    CU_CHECK_LAUNCH("delta_rule_chunk_bwd_scan");
    bwd_chunk_kernel<C, DK, DV><<<dim3((unsigned)p.nch, (unsigned)p.H), THREADS, bwd_chunk_smem<C, DK, DV>()>>>(p);
    CU_CHECK_LAUNCH("delta_rule_chunk_bwd_chunk");
    *done = true;
    return 0;
}

/* Dispatch on (C, dk, dv) to a compiled instance; *done = false when none covers them. */
template <bool BWD>
int dispatch(const efla_delta_rule_args *a, Args &p, int device, bool *done) {
    *done = false;
#define EFLA_CHUNK_CASE(CC, DKK, DVV) \
    if (a->chunk_size == CC && a->dk == DKK && a->dv == DVV) \
        return BWD ? run_bwd<CC, DKK, DVV>(p, a->N, device, done) : run_fwd<CC, DKK, DVV>(p, a->N, device, done);
#define EFLA_CHUNK_DIMS(CC) \
    EFLA_CHUNK_CASE(CC, 32, 32) EFLA_CHUNK_CASE(CC, 64, 64) EFLA_CHUNK_CASE(CC, 128, 128) \
    EFLA_CHUNK_CASE(CC, 64, 128) EFLA_CHUNK_CASE(CC, 128, 64)
    EFLA_CHUNK_DIMS(64)
    EFLA_CHUNK_DIMS(32)
    EFLA_CHUNK_DIMS(16)
#undef EFLA_CHUNK_DIMS
#undef EFLA_CHUNK_CASE
    return 0;
}

bool covered(const efla_delta_rule_args *a) {
    if (a->dtype != EFLA_BFLOAT16 || a->algorithm != EFLA_ALGO_CHUNKED) return false;
    if (getenv("EFLA_DELTA_RULE_SCAN")) return false;   /* benchmarks and tests: force the scan kernels */
    return true;
}

} // namespace

/* 1: not covered (use the scan kernels), 0: done, -1: error */
int efla_cuda_delta_rule_chunk_fwd(const efla_delta_rule_args *a, const int64_t *seq, int64_t nch, int device,
                                   const void *q, const void *k, const void *v, const void *alpha, const void *s0,
                                   void *o, void *s_final, void *chunk_states) {
    if (!covered(a)) return 1;
    Args p;
    memset(&p, 0, sizeof p);
    p.H = a->H; p.dk = a->dk; p.dv = a->dv; p.nseq = a->N; p.nch = nch; p.seq = seq;
    p.scale = (float)a->scale;
    p.q = (const bf16 *)q; p.k = (const bf16 *)k; p.v = (const bf16 *)v; p.alpha = (const bf16 *)alpha;
    p.s0 = (const float *)s0; p.o = (bf16 *)o; p.sf = (float *)s_final; p.cs = (float *)chunk_states;
    bool done = false;
    TRY(dispatch<false>(a, p, device, &done));
    return done ? 0 : 1;
}

int efla_cuda_delta_rule_chunk_bwd(const efla_delta_rule_args *a, const int64_t *seq, int64_t nch, int device,
                                   const void *q, const void *k, const void *v, const void *alpha, const void *s0,
                                   const void *chunk_states, const void *d_o, const void *d_s_final, void *dq,
                                   void *dk, void *dv, void *dalpha, void *ds0) {
    if (!covered(a)) return 1;
    Args p;
    memset(&p, 0, sizeof p);
    p.H = a->H; p.dk = a->dk; p.dv = a->dv; p.nseq = a->N; p.nch = nch; p.seq = seq;
    p.scale = (float)a->scale;
    p.q = (const bf16 *)q; p.k = (const bf16 *)k; p.v = (const bf16 *)v; p.alpha = (const bf16 *)alpha;
    p.s0 = (const float *)s0; p.states = (const float *)chunk_states; p.d_o = (const bf16 *)d_o;
    p.dsf = (const float *)d_s_final;
    p.dq = (bf16 *)dq; p.dk_out = (bf16 *)dk; p.dv_out = (bf16 *)dv; p.dalpha = (bf16 *)dalpha;
    p.ds0 = (float *)ds0;
    bool done = false;
    TRY(dispatch<true>(a, p, device, &done));
    return done ? 0 : 1;
}

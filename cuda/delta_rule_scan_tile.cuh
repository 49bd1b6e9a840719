/* delta_rule_scan_tile.cuh: the column-parallel scan's block layout, which delta_rule.cu and its
 * gated variant delta_rule_gated.cu share: a block owns TJ state columns of one (sequence, head)
 * pair in shared memory and its NW warps split the dk rows. The shared-memory carve-up, the
 * vector staging, and the copies of the state tile to and from global memory.
 *
 * Plain device templates over load_as_acc (declared before this header: delta_rule_scan.cuh on
 * the device, bench/cuda/gated_scan_emu.cpp on the host emulator), so both can include it. */
#ifndef EFLA_CUDA_DELTA_RULE_SCAN_TILE_CUH
#define EFLA_CUDA_DELTA_RULE_SCAN_TILE_CUH

namespace {

const int TJ = 32;        /* state columns per block */
const int NW = 4;         /* warps per block */
const int LDS = TJ + 1;   /* padded row of the shared state tiles (no bank conflicts across rows) */

/* Shared memory: the state tile S (dk x TJ) and, for the backward, the gradient tile G and the
 * update rows U of a chunk (C x TJ), then the vectors: staged k, q and next k (dk each), the
 * warps' partial sums po, pu (NW x TJ each) and the per-column wv, dos, du (TJ each). */
template <typename A> struct ScanSmem {
    A *S, *G, *U, *kt, *qt, *kn, *po, *pu, *wv, *dos, *du;
    __device__ ScanSmem(A *base, int64_t dk, int64_t C, bool bwd) {
        S = base;
        G = S + dk * LDS;
        U = G + (bwd ? dk * LDS : 0);
        kt = U + (bwd ? C * TJ : 0);
        qt = kt + dk;
        kn = qt + dk;
        po = kn + dk;
        pu = po + NW * TJ;
        wv = pu + NW * TJ;
        dos = wv + TJ;
        du = dos + TJ;
    }
    static size_t bytes(int64_t dk, int64_t C, bool bwd) {
        int64_t n = dk * LDS + (bwd ? dk * LDS + C * TJ : 0) + 3 * dk + 2 * NW * TJ + 3 * TJ;
        return sizeof(A) * (size_t)n;
    }
};

/* Where a block works: blockIdx.x = pair * ntiles + tile with pair = sequence * H + head; the
 * sequence's first token row (plus the head), length and first chunk from the sequence table;
 * the tile's first state column j0 and width tj. P: the kernel's parameters (H, dv, ntiles, seq). */
struct ScanBlock { int64_t pair, n, h, row0, len, coff; int j0, tj; };
template <typename P> __device__ __forceinline__ ScanBlock scan_block(const P &p) {
    ScanBlock b;
    b.pair = blockIdx.x / p.ntiles;
    const int64_t tile = blockIdx.x % p.ntiles;
    b.n = b.pair / p.H;
    b.h = b.pair % p.H;
    b.row0 = p.seq[3 * b.n] + b.h;
    b.len = p.seq[3 * b.n + 1];
    b.coff = p.seq[3 * b.n + 2];
    b.j0 = (int)(tile * TJ);
    b.tj = (int)(p.dv - b.j0 < TJ ? p.dv - b.j0 : TJ);
    return b;
}

/* A thread's part of a block's tile: its warp w owns the rows [i0, i1) of dk, its lane the
 * state column j = j0 + lane (col: the column is inside the tile). */
struct ScanLane { int w, lane; int64_t i0, i1, j; bool col; };
__device__ __forceinline__ ScanLane scan_lane(int64_t dk, int j0, int tj) {
    ScanLane l;
    l.w = threadIdx.x / 32;
    l.lane = threadIdx.x % 32;
    const int64_t rpw = (dk + NW - 1) / NW;
    l.i0 = l.w * rpw;
    l.i1 = l.i0 + rpw < dk ? l.i0 + rpw : dk;
    l.j = j0 + l.lane;
    l.col = l.lane < tj;
    return l;
}

/* Block-cooperative copy of a dk-vector (a token row of q or k) into shared memory, or zeros. */
template <typename T, typename A>
__device__ __forceinline__ void stage(A *dst, const T *src, int64_t dk, bool zero) {
    for (int64_t i = threadIdx.x; i < dk; i += blockDim.x) dst[i] = zero ? (A)0 : (A)load_as_acc(src + i);
}

/* Block-cooperative copies between a dk x tj tile in shared memory (row length LDS) and a
 * state in global memory (row stride ld, the block's first column c0): put_tile writes the
 * tile out, get_tile reads it in (zeros where src is NULL). */
template <typename A>
__device__ __forceinline__ void put_tile(A *dst, int64_t ld, int64_t c0, const A *S, int64_t dk, int tj) {
    for (int64_t e = threadIdx.x; e < dk * tj; e += blockDim.x) {
        int64_t i = e / tj, jj = e % tj;
        dst[i * ld + c0 + jj] = S[i * LDS + jj];
    }
}
template <typename A>
__device__ __forceinline__ void get_tile(A *S, const A *src, int64_t ld, int64_t c0, int64_t dk, int tj) {
    if (!src) {   /* tested once: the backward scans read a state every chunk */
        for (int64_t e = threadIdx.x; e < dk * tj; e += blockDim.x) S[(e / tj) * LDS + e % tj] = (A)0;
        return;
    }
    for (int64_t e = threadIdx.x; e < dk * tj; e += blockDim.x) {
        int64_t i = e / tj, jj = e % tj;
        S[i * LDS + jj] = src[i * ld + c0 + jj];
    }
}

/* A backward token's column phase over the warp's rows: G += q dos^T (q staged in qt, dos in
 * dos), and the warp's partial sums of G^T k (k staged in kt) to po. */
template <typename A> __device__ __forceinline__ void column_phase(ScanSmem<A> &sm, const ScanLane &l) {
    A gk = 0;
    if (l.col) {
        const A ds = sm.dos[l.lane];
        for (int64_t i = l.i0; i < l.i1; i++) {
            A g = sm.G[i * LDS + l.lane] + sm.qt[i] * ds;
            sm.G[i * LDS + l.lane] = g;
            gk += sm.kt[i] * g;
        }
    }
    sm.po[l.w * TJ + l.lane] = gk;
}

} // namespace
#endif

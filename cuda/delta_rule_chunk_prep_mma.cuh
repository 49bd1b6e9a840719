/* delta_rule_chunk_prep_mma.cuh: prep_kernel's products in the register style, bfloat16 inputs.
 * The same outputs as prep_kernel (delta_rule_chunk_kernels.cuh) from the same steps:
 *   G = K K^T, alpha (make_alpha, where p.alpha is NULL), X = (I + strict_lower(diag(a) G))^-1
 *   (unit_lower_inverse, unchanged), T = X diag(a), then W = T K and U = T V, or tril(Q K^T)
 * (or T read from the kept solves, p.solved). prep_kernel runs each product with mm(): WMMA
 * tiles whose float accumulators go through shared memory, then a barrier, then a pass that
 * rounds them and stores them. Here each product is split into strips of 16 rows and SW
 * columns, one mma.sync warp each (mma_fragments.cuh), whose accumulators go from registers
 * straight to their destination: G to the float tile the solve reads, W, U and tril(Q K^T) to
 * global memory. The float tile F of prep_kernel (C x max(dk, dv) floats, 34 KB at d = 128) and
 * its three barriers go. T (block lower triangular) skips the zero k16 steps of W and U.
 * The roundings are prep_kernel's (G in float, T and the products' results to bfloat16 once),
 * so both agree to float sums; the workbench and the host emulator check it.
 *
 * Block: THREADS (16 warps: unit_lower_inverse and make_alpha are written for them), grid
 * (chunk, head). C, DK, DV multiples of 16 up to 128. */
#ifndef EFLA_CUDA_DELTA_RULE_CHUNK_PREP_MMA_CUH
#define EFLA_CUDA_DELTA_RULE_CHUNK_PREP_MMA_CUH
#include "mma_fragments.cuh"

namespace {

/* the widest strip (64, 32 or 16 columns) that divides n: wider strips reload A's fragments
 * for fewer columns */
constexpr int prep_strip_width(int n) { return n % 64 == 0 ? 64 : n % 32 == 0 ? 32 : 16; }

/* K (C x DK); V, or Q where tril(Q K^T) is made (C x max(DK, DV)); G (C x C floats; T in
 * bfloat16 after the solve, or T read); X (C x C floats); the solve's scratch; a */
template <int C, int DK, int DV> constexpr size_t prep_mma_smem() {
    return bm_bytes(C, DK) + bm_bytes(C, DK > DV ? DK : DV) + 2 * fm_bytes(C, C) + fm_bytes(C / 2, C / 2) + (size_t)C * 4;
}

template <int C, int DK, int DV>
__global__ void __launch_bounds__(THREADS, 2) prep_mma_kernel(ArgsT<bf16> p) {
    static_assert(C % 16 == 0 && DK % 16 == 0 && DV % 16 == 0 && DK <= 128 && DV <= 128,
                  "prep_mma_kernel: C, DK, DV multiples of 16, DK and DV up to 128");
    static_assert(bm_bytes(C, C) <= fm_bytes(C, C), "prep_mma_kernel: T takes G's room");
    constexpr int RW = C / 16, DW = DK > DV ? DK : DV;   /* row strips; the second input's width */
    EFLA_DYNAMIC_SMEM(smem);
    Carver cv(smem);
    const Bm K = cv.tm<bf16>(C, DK), V = cv.tm<bf16>(C, DW);
    const Fm G = cv.fm(C, C), X = cv.fm(C, C), scratch = cv.fm(C / 2, C / 2);
    const Bm Tb{(bf16 *)G.p, C + pad_of<bf16>()};   /* G is dead once the solve is done */
    float *const a = (float *)(smem + cv.off);
    EFLA_SMEM_FITS(cv.off + C * 4, (prep_mma_smem<C, DK, DV>()));
    const int64_t g0 = blockIdx.x, h = blockIdx.y, rs = p.H, tile = g0 * p.H + h;
    const int warp = threadIdx.x / 32;
    const ChunkRows cr = chunk_rows(p, g0, h, C);
    bf16 *const tx = p.tx ? p.tx + tile * 2 * C * C : nullptr;
    const bool make_u = p.u != nullptr, make_pq = !make_u && p.pq;   /* Q takes V's room */

    /* two commit groups: K (and T where it is read), then V or Q, which arrive during the solve */
    copy_rows_async<THREADS>(K.p, K.ld, p.k + cr.first * DK, rs * DK, C, DK, cr.len);
    if (p.solved) copy_rows_async<THREADS>(Tb.p, Tb.ld, tx, C, C, C, C);
    cp_async_commit();
    if (make_u) copy_rows_async<THREADS>(V.p, V.ld, p.v + cr.first * DV, rs * DV, C, DV, cr.len);
    if (make_pq) copy_rows_async<THREADS>(V.p, V.ld, p.q + cr.first * DK, rs * DK, C, DK, cr.len);
    cp_async_commit();
    if (p.alpha && !p.solved)
        for (int i = threadIdx.x; i < C; i += THREADS) a[i] = i < cr.len ? to_f(p.alpha[cr.first + i * rs]) : 0.0f;
    if (p.solved) cp_async_wait_all();
    else cp_async_wait_one();
    __syncthreads();   /* K is in (and T, where read) */

    if (!p.solved) {
        if (warp < RW) {   /* G's strip rw, the tile pairs at or left of its diagonal, to the float tile */
            float acc[C / 8][4];
            strip_product<C, DK / 16, true>(acc, K.p, K.ld, K.p, K.ld, warp, 0, DK / 16, true);
            const int lane = threadIdx.x % 32;
#pragma unroll
            for (int j = 0; j <= 2 * warp + 1; j++)   /* the solve reads nothing past the diagonal block */
#pragma unroll
                for (int half = 0; half < 2; half++)
                    *(float2 *)(G.p + (16 * warp + lane / 4 + 8 * half) * G.ld + 8 * j + 2 * (lane % 4)) =
                        make_float2(acc[j][2 * half], acc[j][2 * half + 1]);
        }
        if (!p.alpha) make_alpha<C, DK>(p, K, cr, a);   /* reads K only */
        __syncthreads();
        /* the solve reads G's strictly lower part only (what the tril mask above zeroed is on or
         * above the diagonal) */
        unit_lower_inverse<C>(X, G, a, scratch.p);
        /* T = X diag(a) into G's room, two columns a thread; T and X also to the kept solves */
        for (int e = threadIdx.x; e < C * C / 2; e += THREADS) {
            const int r = e / (C / 2), c = 2 * (e % (C / 2));
            const float x0 = X.p[r * X.ld + c], x1 = X.p[r * X.ld + c + 1];
            const uint32_t t2 = pack_bf16(x0 * a[c], x1 * a[c + 1]);
            *(uint32_t *)(Tb.p + r * Tb.ld + c) = t2;
            if (tx) {
                *(uint32_t *)(tx + r * C + c) = t2;
                *(uint32_t *)(tx + C * C + r * C + c) = pack_bf16(x0, x1);
            }
        }
        cp_async_wait_all();   /* V or Q */
        __syncthreads();
    }

    /* the strips of W = T K, then of U = T V or tril(Q K^T), over the warps; a strip of T's
     * rows rw needs T's k16 steps 0 .. rw only */
    constexpr int SWK = prep_strip_width(DK), SWV = prep_strip_width(DV), SWC = prep_strip_width(C);
    constexpr int NW_ = RW * (DK / SWK), NU = RW * (DV / SWV), NP = RW * (C / SWC);
    const int items = NW_ + (make_u ? NU : make_pq ? NP : 0);
    for (int it = warp; it < items; it += NWARP) {
        if (it < NW_) {
            const int rw = it % RW, c0 = SWK * (it / RW);
            float acc[SWK / 8][4];
            strip_product<SWK, C / 16, false>(acc, Tb.p, Tb.ld, K.p, K.ld, rw, c0, rw + 1, false);
            store_acc(p.w + tile * C * DK + c0, DK, 16 * rw, acc);
        } else if (make_u) {
            const int i = it - NW_, rw = i % RW, c0 = SWV * (i / RW);
            float acc[SWV / 8][4];
            strip_product<SWV, C / 16, false>(acc, Tb.p, Tb.ld, V.p, V.ld, rw, c0, rw + 1, false);
            store_acc(p.u + tile * C * DV + c0, DV, 16 * rw, acc);
        } else {
            const int i = it - NW_, rw = i % RW, c0 = SWC * (i / RW);
            float acc[SWC / 8][4];
            strip_product<SWC, DK / 16, true>(acc, V.p, V.ld, K.p, K.ld, rw, c0, DK / 16, true);
            store_acc(p.pq + tile * C * C + c0, C, 16 * rw, acc);
        }
    }
}

} // namespace
#endif

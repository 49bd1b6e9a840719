/* delta_rule_gated.cu: gated EFLA (order 'exact') and Gated DeltaNet (order 1) on CUDA
 * (docs/MATH.md §6), the column-parallel scan of delta_rule.cu with a decay d_t = e^{g_t} and
 * a value step b_t = alpha'_t. The same rule as the CPU's fwd_recurrent (core/cpu/delta_rule_impl.h):
 *     u_t = b_t v_t - a_t d_t S_{t-1}^T k_t,   S_t = d_t S_{t-1} + k_t u_t^T,   o_t = scale S_t^T q_t
 * (the decay multiplies the old state; the update row carries a d). Every column of S evolves on
 * its own, so a block owns TJ = 32 columns of one (sequence, head) pair in shared memory and
 * its NW = 4 warps split the dk rows, exactly as the ungated scan. The chunk states (the state
 * entering each block of C tokens) have the CPU's layout, so they are interchangeable.
 *
 * This path serves every gated call on CUDA, whatever algorithm was asked: there is no
 * tensor-core (WY) chunked form with a decay yet.
 *
 * Backward: the ungated scan rebuilds S_{t-1} from S_t by inverting the update; with a decay
 * that would divide by e^{g_t} (unbounded), so each chunk's forward is re-run from its chunk
 * state writing the C+1 states of the chunk to a global scratch buffer ((C+1) x dk x TJ per
 * block), and the tokens then run backwards as the CPU's bwd_recurrent_gated does. With
 * G = dL/dS_t (after G += q dos^T, dos = scale do_t):
 *   column phase: du = G^T k, dv = b du, dalpha_v = v.du
 *   row phase:    dq = S_t dos, sd = S_{t-1} du, dk = G u - a d sd,
 *                 dalpha = -d k.sd, dg = d (<G, S_{t-1}> - a k.sd),  G <- d (G - a k du^T)
 * dq, dk, dalpha, dalpha_v and dg sum over column tiles: atomics into zeroed accumulators of
 * the accumulation type (float for float32 and bfloat16 inputs, double for float64). */
#ifndef EFLA_GATED_EMULATE   /* bench/cuda/gated_scan_emu.cpp runs the kernels below on the host */
#include "delta_rule_scan.cuh"
#include <string.h>
#else
#include "delta_rule_scan_tile.cuh"
#endif

namespace {

struct GParams {
    int64_t H, dk, dv, C, ntiles;
    const int64_t *seq;      /* device, per sequence: first token row (b*T+start)*H, length, first chunk */
    double scale;
    const void *q, *k, *v, *al, *bv, *lg, *s0, *d_o, *dsf;
    void *o, *sf, *cs, *dvo, *ds0;
    void *dq_acc, *dk_acc, *da_acc, *db_acc, *dg_acc;   /* A-typed accumulators (zeroed) */
    const void *states;      /* backward: chunk states (A) */
    void *scratch;           /* backward: `slots` states of dk x TJ (A) per block */
    int64_t slots;           /* min(C, longest sequence) + 1 */
};

/* e^{g} of the token at row r, computed in double as the CPU does */
template <typename T, typename A> __device__ __forceinline__ A decay_at(const T *lg, int64_t r) {
    return (A)exp((double)load_as_acc(lg + r));
}

/* The update row of column j of the token at row r: b v - a d p (p = S_{t-1}^T k, column j). */
template <typename T, typename A>
__device__ __forceinline__ A update_row(const GParams &p, int64_t r, int64_t j, A sk) {
    const T *v = (const T *)p.v, *al = (const T *)p.al, *bv = (const T *)p.bv, *lg = (const T *)p.lg;
    const A b = (A)load_as_acc(bv + r), ad = (A)load_as_acc(al + r) * decay_at<T, A>(lg, r);
    return b * (A)load_as_acc(v + r * p.dv + j) - ad * sk;
}

/* Runs tokens [t0, t1) of one pair over the tile, starting from the tile in sm.S.
 * Writes o (when o != NULL), the chunk states (when cs != NULL; chunk c at cs + c*cs_stride),
 * and for the backward (U != NULL) the update row of token t0+m into U[m*TJ + lane] and the
 * state entering token t0+m into slot m of `scr` (dk x TJ per slot; slot t1-t0 = the state
 * after the last token). Ends synchronised. */
template <typename T, typename A>
__device__ void gated_steps(const GParams &p, ScanSmem<A> &sm, int64_t row0, int64_t t0, int64_t t1, int j0,
                            int tj, T *o, A *cs, int64_t cs_stride, A *U, A *scr) {
    const int64_t dk = p.dk, dv = p.dv, H = p.H, C = p.C;
    const T *q = (const T *)p.q, *k = (const T *)p.k, *lg = (const T *)p.lg;
    const auto [w, lane, i0, i1, j, col] = scan_lane(dk, j0, tj);
    if (t0 >= t1) return;
    /* the update row of token t0 from p = S^T k_{t0} */
    stage<T, A>(sm.kn, k + (row0 + t0 * H) * dk, dk, false);
    __syncthreads();
    {
        A uacc = 0;
        if (col)
            for (int64_t i = i0; i < i1; i++) uacc += sm.kn[i] * sm.S[i * LDS + lane];
        sm.pu[w * TJ + lane] = uacc;
    }
    __syncthreads();
    if (w == 0 && col) {
        A s = 0;
        for (int x = 0; x < NW; x++) s += sm.pu[x * TJ + lane];
        A u = update_row<T, A>(p, row0 + t0 * H, j, s);
        if (U) U[lane] = u;
        sm.wv[lane] = u;
    }
    for (int64_t t = t0; t < t1; t++) {
        if ((cs && t % C == 0) || scr) {
            __syncthreads();
            if (cs && t % C == 0) put_tile(cs + (t / C) * cs_stride, dv, j0, sm.S, dk, tj);
            if (scr) put_tile(scr + (t - t0) * dk * TJ, TJ, 0, sm.S, dk, tj);
        }
        const int64_t r = row0 + t * H;
        __syncthreads();
        stage<T, A>(sm.kt, k + r * dk, dk, false);
        stage<T, A>(sm.qt, q + r * dk, dk, o == nullptr);
        stage<T, A>(sm.kn, k + (r + H) * dk, dk, t + 1 >= t1);
        __syncthreads();
        {
            const A d = decay_at<T, A>(lg, r);
            A oacc = 0, uacc = 0;
            if (col) {
                const A wj = sm.wv[lane];
                for (int64_t i = i0; i < i1; i++) {
                    A s = d * sm.S[i * LDS + lane] + sm.kt[i] * wj;
                    sm.S[i * LDS + lane] = s;
                    oacc += sm.qt[i] * s;
                    uacc += sm.kn[i] * s;
                }
            }
            sm.po[w * TJ + lane] = oacc;
            sm.pu[w * TJ + lane] = uacc;
        }
        __syncthreads();
        if (w == 0 && col) {
            A so = 0, su = 0;
            for (int x = 0; x < NW; x++) { so += sm.po[x * TJ + lane]; su += sm.pu[x * TJ + lane]; }
            if (o) store_to(o + r * dv + j, (A)p.scale * so);
            if (t + 1 < t1) {
                A u = update_row<T, A>(p, r + H, j, su);
                if (U) U[(t + 1 - t0) * TJ + lane] = u;
                sm.wv[lane] = u;
            }
        }
    }
    __syncthreads();
    if (scr) {
        put_tile(scr + (t1 - t0) * dk * TJ, TJ, 0, sm.S, dk, tj);
        __syncthreads();
    }
}

/* One block per (pair, column tile). */
template <typename T, typename A>
__global__ void __launch_bounds__(NW * 32) gated_fwd_kernel(GParams p) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    ScanSmem<A> sm((A *)smem_raw, p.dk, p.C, false);
    const auto [pair, n, h, row0, L, coff, j0, tj] = scan_block(p);
    const int64_t dk = p.dk, dv = p.dv, sz = dk * dv;
    get_tile(sm.S, p.s0 ? (const A *)p.s0 + pair * sz : nullptr, dv, j0, dk, tj);
    __syncthreads();
    A *cs = p.cs ? (A *)p.cs + (coff * p.H + h) * sz : nullptr;
    gated_steps<T, A>(p, sm, row0, 0, L, j0, tj, (T *)p.o, cs, p.H * sz, nullptr, nullptr);
    if (p.sf) put_tile((A *)p.sf + pair * sz, dv, j0, sm.S, dk, tj);
}

template <typename T, typename A>
__global__ void __launch_bounds__(NW * 32) gated_bwd_kernel(GParams p) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    ScanSmem<A> sm((A *)smem_raw, p.dk, p.C, true);
    const auto [pair, n, h, row0, L, coff, j0, tj] = scan_block(p);
    const int64_t dk = p.dk, dv = p.dv, sz = dk * dv, H = p.H, C = p.C;
    const ScanLane sl = scan_lane(dk, j0, tj);
    const auto [w, lane, i0, i1, j, col] = sl;
    const T *q = (const T *)p.q, *k = (const T *)p.k, *v = (const T *)p.v, *al = (const T *)p.al;
    const T *bv = (const T *)p.bv, *lg = (const T *)p.lg, *d_o = (const T *)p.d_o;
    T *dvo = (T *)p.dvo;
    A *dq = (A *)p.dq_acc, *dk_sum = (A *)p.dk_acc, *da = (A *)p.da_acc, *db = (A *)p.db_acc, *dg = (A *)p.dg_acc;
    const A *states = (const A *)p.states + (coff * H + h) * sz;
    A *scr = (A *)p.scratch + (int64_t)blockIdx.x * p.slots * dk * TJ;

    get_tile(sm.G, p.dsf ? (const A *)p.dsf + pair * sz : nullptr, dv, j0, dk, tj);
    const int64_t nch = (L + C - 1) / C;
    for (int64_t ci = nch - 1; ci >= 0; ci--) {
        const int64_t c0 = ci * C, nn = L - c0 < C ? L - c0 : C;
        __syncthreads();
        get_tile(sm.S, states + ci * H * sz, dv, j0, dk, tj);
        __syncthreads();
        gated_steps<T, A>(p, sm, row0, c0, c0 + nn, j0, tj, nullptr, nullptr, 0, sm.U, scr);
        for (int64_t m = nn - 1; m >= 0; m--) {
            const int64_t t = c0 + m, r = row0 + t * H;
            const A a = (A)load_as_acc(al + r), d = decay_at<T, A>(lg, r), b = (A)load_as_acc(bv + r);
            const A *Sp = scr + m * dk * TJ, *St = Sp + dk * TJ;   /* S_{t-1}, S_t */
            __syncthreads();
            stage<T, A>(sm.kt, k + r * dk, dk, false);
            stage<T, A>(sm.qt, q + r * dk, dk, false);
            if (w == 0) sm.dos[lane] = col ? (A)p.scale * (A)load_as_acc(d_o + r * dv + j) : (A)0;
            __syncthreads();
            column_phase(sm, sl);   /* G += q dos^T; partial G^T k to po */
            __syncthreads();
            if (w == 0) {
                A s = 0;
                for (int x = 0; x < NW; x++) s += sm.po[x * TJ + lane];
                A du = col ? s : (A)0;
                sm.du[lane] = du;
                A vdu = 0;
                if (col) {
                    store_to(dvo + r * dv + j, b * du);
                    vdu = (A)load_as_acc(v + r * dv + j) * du;
                }
                vdu = warp_sum(vdu);
                if (lane == 0) atomicAdd(db + r, vdu);
            }
            __syncthreads();
            /* row phase: one thread per row i (rows threadIdx.x, + NW*32, ...) */
            A ksd = 0, gs = 0;
            for (int64_t i = threadIdx.x; i < dk; i += 32 * NW) {
                const A ki = sm.kt[i], aki = a * ki;
                A sq = 0, su = 0, sd = 0, sg = 0;
                A *Grow = sm.G + i * LDS;
                const A *Urow = sm.U + m * TJ, *Sprow = Sp + i * TJ, *Strow = St + i * TJ;
                for (int c = 0; c < tj; c++) {
                    const A g = Grow[c], sp = Sprow[c], dd = sm.du[c];
                    sq += Strow[c] * sm.dos[c];
                    su += g * Urow[c];
                    sg += g * sp;
                    sd += sp * dd;
                    Grow[c] = d * (g - aki * dd);
                }
                atomicAdd(dq + r * dk + i, sq);
                atomicAdd(dk_sum + r * dk + i, su - a * d * sd);
                ksd += ki * sd;
                gs += sg;
            }
            ksd = warp_sum(ksd);
            gs = warp_sum(gs);
            if (lane == 0) {
                atomicAdd(da + r, -d * ksd);
                atomicAdd(dg + r, d * (gs - a * ksd));
            }
        }
    }
    __syncthreads();
    if (p.ds0) put_tile((A *)p.ds0 + pair * sz, dv, j0, sm.G, dk, tj);
}

#ifdef EFLA_GATED_EMULATE
} // namespace
#else
GParams gated_params(const efla_delta_rule_args *a, const efla_delta_rule_buffers *buf, const int64_t *seq) {
    GParams p;
    memset(&p, 0, sizeof p);
    p.H = a->H; p.dk = a->dk; p.dv = a->dv; p.C = a->chunk_size;
    p.ntiles = (a->dv + TJ - 1) / TJ;
    p.seq = seq;
    p.scale = a->scale;
    p.q = buf->q; p.k = buf->k; p.v = buf->v; p.al = buf->alpha; p.bv = buf->alpha_v; p.lg = buf->log_decay;
    p.s0 = buf->s0;
    return p;
}

template <typename T, typename A> int gated_fwd_launch(const efla_delta_rule_args *a, GParams &p) {
    size_t smem = ScanSmem<A>::bytes(a->dk, a->chunk_size, false);
    TRY(prepare_launch(gated_fwd_kernel<T, A>, smem, "delta_rule (gated)", a->dk));
    gated_fwd_kernel<T, A><<<(unsigned)(a->N * a->H * p.ntiles), NW * 32, smem>>>(p);
    CU_CHECK_LAUNCH("delta_rule_gated_fwd");
    return 0;
}

int gated_fwd_any(const efla_delta_rule_args *a, GParams &p) {
    switch (a->dtype) {
    case EFLA_FLOAT32: return gated_fwd_launch<float, float>(a, p);
    case EFLA_FLOAT64: return gated_fwd_launch<double, double>(a, p);
    default: return gated_fwd_launch<bf16, float>(a, p);
    }
}

template <typename T, typename A>
int gated_bwd_run(const efla_delta_rule_args *a, const efla_delta_rule_buffers *buf, GParams &p, int device) {
    const int64_t bth = a->B * a->T * a->H, blocks = a->N * a->H * p.ntiles;
    const bool same = sizeof(T) == sizeof(A);
    CuBuffer acc, scratch;
    if (same) {
        p.dq_acc = buf->dq; p.dk_acc = buf->dk; p.da_acc = buf->dalpha; p.db_acc = buf->dalpha_v;
        p.dg_acc = buf->dlog_decay;
    } else {
        TRY(acc.alloc(sizeof(A) * (size_t)(bth * (2 * a->dk + 3)), device));
        A *base = acc.as<A>();
        p.dq_acc = base;
        p.dk_acc = base + bth * a->dk;
        p.da_acc = base + 2 * bth * a->dk;
        p.db_acc = base + 2 * bth * a->dk + bth;
        p.dg_acc = base + 2 * bth * a->dk + 2 * bth;
    }
    CU_CHECK(cudaMemsetAsync(p.dq_acc, 0, sizeof(A) * (size_t)(bth * a->dk), 0));
    CU_CHECK(cudaMemsetAsync(p.dk_acc, 0, sizeof(A) * (size_t)(bth * a->dk), 0));
    CU_CHECK(cudaMemsetAsync(p.da_acc, 0, sizeof(A) * (size_t)bth, 0));
    CU_CHECK(cudaMemsetAsync(p.db_acc, 0, sizeof(A) * (size_t)bth, 0));
    CU_CHECK(cudaMemsetAsync(p.dg_acc, 0, sizeof(A) * (size_t)bth, 0));
    int64_t longest = 0;
    for (int64_t n = 0; n < a->N; n++) longest = a->seq_len[n] > longest ? a->seq_len[n] : longest;
    p.slots = (longest < a->chunk_size ? longest : a->chunk_size) + 1;
    TRY(scratch.alloc(sizeof(A) * (size_t)(blocks * p.slots * a->dk * TJ), device));
    p.scratch = scratch.ptr;
    size_t smem = ScanSmem<A>::bytes(a->dk, a->chunk_size, true);
    TRY(prepare_launch(gated_bwd_kernel<T, A>, smem, "delta_rule backward (gated)", a->dk));
    gated_bwd_kernel<T, A><<<(unsigned)blocks, NW * 32, smem>>>(p);
    CU_CHECK_LAUNCH("delta_rule_gated_bwd");
    if (!same) {
        convert_kernel<T, A><<<cu_blocks(bth * a->dk, 256), 256>>>((T *)buf->dq, (const A *)p.dq_acc, bth * a->dk);
        convert_kernel<T, A><<<cu_blocks(bth * a->dk, 256), 256>>>((T *)buf->dk, (const A *)p.dk_acc, bth * a->dk);
        convert_kernel<T, A><<<cu_blocks(bth, 256), 256>>>((T *)buf->dalpha, (const A *)p.da_acc, bth);
        convert_kernel<T, A><<<cu_blocks(bth, 256), 256>>>((T *)buf->dalpha_v, (const A *)p.db_acc, bth);
        convert_kernel<T, A><<<cu_blocks(bth, 256), 256>>>((T *)buf->dlog_decay, (const A *)p.dg_acc, bth);
        CU_CHECK_LAUNCH("delta_rule_gated_bwd_convert");
    }
    return 0;
}

int check_gated(const char *op, const efla_delta_rule_buffers *buf, bool bwd) {
    if (!buf->alpha_v)
        return efla_fail("%s: a gated call needs alpha_v beside log_decay (the front end computes it)", op);
    if (bwd && (!buf->dalpha_v || !buf->dlog_decay))
        return efla_fail("%s: a gated backward needs the dalpha_v and dlog_decay buffers", op);
    return 0;
}

} // namespace

int efla_cuda_delta_rule_gated_fwd(const efla_delta_rule_args *a, const efla_delta_rule_buffers *buf,
                                   const int64_t *seq, int64_t nch, int device) {
    (void)nch; (void)device;
    TRY(check_gated("delta_rule", buf, false));
    GParams p = gated_params(a, buf, seq);
    p.o = buf->o; p.sf = buf->s_final; p.cs = buf->chunk_states;
    return gated_fwd_any(a, p);
}

int efla_cuda_delta_rule_gated_bwd(const efla_delta_rule_args *a, const efla_delta_rule_buffers *buf,
                                   const int64_t *seq, int64_t nch, int device) {
    TRY(check_gated("delta_rule backward", buf, true));
    GParams p = gated_params(a, buf, seq);
    CuBuffer states;
    const void *chunk_states = buf->chunk_states;
    if (!chunk_states) {   /* recompute the chunk states with a state-only forward */
        size_t ses = a->dtype == EFLA_FLOAT64 ? 8 : 4;
        TRY(states.alloc(ses * (size_t)(nch * a->H * a->dk * a->dv), device));
        p.cs = states.ptr;
        TRY(gated_fwd_any(a, p));
        chunk_states = states.ptr;
        p.cs = nullptr;
    }
    p.states = chunk_states;
    p.d_o = buf->d_o; p.dsf = buf->d_s_final; p.dvo = buf->dv; p.ds0 = buf->ds0;
    switch (a->dtype) {
    case EFLA_FLOAT32: return gated_bwd_run<float, float>(a, buf, p, device);
    case EFLA_FLOAT64: return gated_bwd_run<double, double>(a, buf, p, device);
    default: return gated_bwd_run<bf16, float>(a, buf, p, device);
    }
}
#endif

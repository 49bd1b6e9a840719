/* delta_rule.cu: the delta rule (EFLA, DeltaNet, Runge-Kutta orders) on CUDA; same
 * contract and results (up to rounding) as core/cpu/delta_rule.c, including the layout of
 * the chunk states ([sum_n ceil(len_n/C), H, dk, dv], the state entering each block of C
 * tokens), so saved states are interchangeable with the CPU's.
 *
 * bfloat16 inputs in the chunked algorithm go to the tensor-core WY kernels of
 * delta_rule_chunk.cu where they cover the shape; everything else runs here.
 *
 * This first version is a column-parallel scan (docs/MATH.md §1), not the tensor-core WY
 * form: every column j of the dk x dv state evolves on its own,
 *     S[:,j] += k_t * alpha_t (v_tj - S[:,j].k_t),   o_tj = scale S_t[:,j].q_t,
 * so a block owns a tile of TJ = 32 columns of one (sequence, head) pair, keeps that tile
 * of S in shared memory and walks the tokens; its NW = 4 warps split the dk rows and add
 * their partial dot products through shared memory. The update is fused as on the CPU:
 * one pass over the tile per token updates S, accumulates o_t and the next token's S^T k.
 *
 * Backward (the recurrent rules of delta_rule_impl.h): chunks of C tokens in reverse. A
 * chunk starts from its saved (or recomputed) state, re-runs its forward keeping
 * u_t = v_t - S_{t-1}^T k_t in shared memory, then walks back token by token rebuilding
 * S_{t-1} = S_t - alpha_t k_t u_t^T (exact up to rounding over at most C steps) while the
 * state gradient G (dk x dv, column-local too) moves back. Per token:
 *   column phase: G += q dos^T, du = alpha G^T k          (dos = scale do_t)
 *   row phase:    dq = S_t dos, gu = G u, dk = alpha gu - S_{t-1} du, dalpha = k.gu,
 *                 G -= k du^T, S <- S_{t-1}
 * dq, dk and dalpha sum over column tiles: atomics into zeroed float/double accumulators.
 *
 * float32 and float64, and bfloat16 inputs with float32 state and accumulation. */
#include "delta_rule_scan.cuh"
#include "delta_rule_alpha_kernels.cuh"   /* alpha's formulas and loads, for a forward that makes alpha */
#include <string.h>
#include <mutex>
#include <vector>

namespace {

struct DRParams {
    int64_t H, dk, dv, C, ntiles;
    const int64_t *seq;      /* device, per sequence: first token row (b*T+start)*H, length, first chunk */
    double scale;
    const void *q, *k, *v, *al, *s0, *d_o, *dsf;
    void *o, *sf, *cs, *dvo, *ds0;
    void *dq_acc, *dk_acc, *da_acc;   /* A-typed accumulators (zeroed) */
    const void *states;               /* backward: chunk states (A) */
    /* forward with al NULL: alpha made here from beta and |k|^2 (order, ref), and written with
     * lambda to alpha_out / lambda_out when set */
    const void *beta;
    void *alpha_out;
    double *lambda_out;
    int order, ref;
};

/* alpha of token row r, by every lane of one warp: the given one (p.al), or, when the forward
 * makes alpha (p.al NULL), from beta and lambda = |k_r|^2 of the row staged in kn, summed and
 * rounded as alpha_fwd_kernel does it (lane_sum_squares, warp_sum_d, alpha_as): the same alpha
 * bit for bit as the two-launch path.
 * The block of column tile 0 writes alpha and lambda out where they are wanted. */
template <typename T, typename A>
__device__ A token_alpha(const DRParams &p, const A *kn, int64_t r) {
    if (p.al) return (A)load_as_acc((const T *)p.al + r);
    const double s = warp_sum_d(lane_sum_squares([&](int64_t d) { return (double)kn[d]; }, p.dk));
    const T at = alpha_as<T>(ld((const T *)p.beta + r), s, p.order, p.ref);
    if (threadIdx.x % 32 == 0 && blockIdx.x % p.ntiles == 0) {
        if (p.alpha_out) ((T *)p.alpha_out)[r] = at;
        if (p.lambda_out) p.lambda_out[r] = s;
    }
    return (A)load_as_acc(&at);
}

/* Runs tokens [t0, t1) of one pair over the tile, starting from the tile in sm.S.
 * row(t) = token row index of token t (for q/k/v/o: row*d; alpha: row).
 * Writes o (when o != NULL), the chunk states (when cs != NULL; chunk c at cs + c*cs_stride)
 * and, when U != NULL, u_t of token t0+m into U[m*TJ + lane]. Ends synchronised. */
template <typename T, typename A>
__device__ void fwd_steps(const DRParams &p, ScanSmem<A> &sm, int64_t row0, int64_t t0, int64_t t1, int j0, int tj,
                          T *o, A *cs, int64_t cs_stride, A *U) {
    const int64_t dk = p.dk, dv = p.dv, H = p.H, C = p.C;
    const T *q = (const T *)p.q, *k = (const T *)p.k, *v = (const T *)p.v;
    const auto [w, lane, i0, i1, j, col] = scan_lane(dk, j0, tj);
    if (t0 >= t1) return;
    /* u_{t0} = v_{t0} - S^T k_{t0} */
    stage<T, A>(sm.kn, k + (row0 + t0 * H) * dk, dk, false);
    __syncthreads();
    {
        A uacc = 0;
        if (col)
            for (int64_t i = i0; i < i1; i++) uacc += sm.kn[i] * sm.S[i * LDS + lane];
        sm.pu[w * TJ + lane] = uacc;
    }
    __syncthreads();
    if (w == 0) {
        const int64_t r = row0 + t0 * H;
        const A a0 = token_alpha<T, A>(p, sm.kn, r);   /* the whole warp: kn still holds k_{t0} */
        if (col) {
            A s = 0;
            for (int x = 0; x < NW; x++) s += sm.pu[x * TJ + lane];
            A u = (A)load_as_acc(v + r * dv + j) - s;
            if (U) U[lane] = u;
            sm.wv[lane] = a0 * u;
        }
    }
    for (int64_t t = t0; t < t1; t++) {
        if (cs && t % C == 0) {
            __syncthreads();
            put_tile(cs + (t / C) * cs_stride, dv, j0, sm.S, dk, tj);
        }
        const int64_t r = row0 + t * H;
        __syncthreads();
        stage<T, A>(sm.kt, k + r * dk, dk, false);
        stage<T, A>(sm.qt, q + r * dk, dk, o == nullptr);
        stage<T, A>(sm.kn, k + (r + H) * dk, dk, t + 1 >= t1);
        __syncthreads();
        {
            A oacc = 0, uacc = 0;
            if (col) {
                const A wj = sm.wv[lane];
                for (int64_t i = i0; i < i1; i++) {
                    A s = sm.S[i * LDS + lane] + sm.kt[i] * wj;
                    sm.S[i * LDS + lane] = s;
                    oacc += sm.qt[i] * s;
                    uacc += sm.kn[i] * s;
                }
            }
            sm.po[w * TJ + lane] = oacc;
            sm.pu[w * TJ + lane] = uacc;
        }
        __syncthreads();
        if (w == 0) {
            /* the whole warp (the branch is uniform): kn holds k_{t+1} */
            const A an = t + 1 < t1 ? token_alpha<T, A>(p, sm.kn, r + H) : (A)0;
            if (col) {
                A so = 0, su = 0;
                for (int x = 0; x < NW; x++) { so += sm.po[x * TJ + lane]; su += sm.pu[x * TJ + lane]; }
                if (o) store_to(o + r * dv + j, (A)p.scale * so);
                if (t + 1 < t1) {
                    A u = (A)load_as_acc(v + (r + H) * dv + j) - su;
                    if (U) U[(t + 1 - t0) * TJ + lane] = u;
                    sm.wv[lane] = an * u;
                }
            }
        }
    }
    __syncthreads();
}

/* One block per (pair, column tile). */
template <typename T, typename A>
__global__ void __launch_bounds__(NW * 32) dr_fwd_kernel(DRParams p) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    ScanSmem<A> sm((A *)smem_raw, p.dk, p.C, false);
    const auto [pair, n, h, row0, L, coff, j0, tj] = scan_block(p);
    const int64_t dk = p.dk, dv = p.dv, sz = dk * dv;
    get_tile(sm.S, p.s0 ? (const A *)p.s0 + pair * sz : nullptr, dv, j0, dk, tj);
    __syncthreads();
    A *cs = p.cs ? (A *)p.cs + (coff * p.H + h) * sz : nullptr;
    fwd_steps<T, A>(p, sm, row0, 0, L, j0, tj, (T *)p.o, cs, p.H * sz, nullptr);
    if (p.sf) put_tile((A *)p.sf + pair * sz, dv, j0, sm.S, dk, tj);
}

template <typename T, typename A>
__global__ void __launch_bounds__(NW * 32) dr_bwd_kernel(DRParams p) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    ScanSmem<A> sm((A *)smem_raw, p.dk, p.C, true);
    const auto [pair, n, h, row0, L, coff, j0, tj] = scan_block(p);
    const int64_t dk = p.dk, dv = p.dv, sz = dk * dv, H = p.H, C = p.C;
    const ScanLane sl = scan_lane(dk, j0, tj);
    const auto [w, lane, i0, i1, j, col] = sl;
    const T *q = (const T *)p.q, *k = (const T *)p.k, *al = (const T *)p.al, *d_o = (const T *)p.d_o;
    T *dvo = (T *)p.dvo;
    A *dq = (A *)p.dq_acc, *dk_sum = (A *)p.dk_acc, *da = (A *)p.da_acc;
    const A *states = (const A *)p.states + (coff * H + h) * sz;

    get_tile(sm.G, p.dsf ? (const A *)p.dsf + pair * sz : nullptr, dv, j0, dk, tj);
    const int64_t nch = (L + C - 1) / C;
    for (int64_t ci = nch - 1; ci >= 0; ci--) {
        const int64_t c0 = ci * C, nn = L - c0 < C ? L - c0 : C;
        __syncthreads();
        get_tile(sm.S, states + ci * H * sz, dv, j0, dk, tj);
        __syncthreads();
        fwd_steps<T, A>(p, sm, row0, c0, c0 + nn, j0, tj, nullptr, nullptr, 0, sm.U);
        for (int64_t m = nn - 1; m >= 0; m--) {
            const int64_t t = c0 + m, r = row0 + t * H;
            const A a = (A)load_as_acc(al + r);
            __syncthreads();
            stage<T, A>(sm.kt, k + r * dk, dk, false);
            stage<T, A>(sm.qt, q + r * dk, dk, false);
            if (w == 0) {
                A u = col ? sm.U[m * TJ + lane] : (A)0;
                sm.dos[lane] = col ? (A)p.scale * (A)load_as_acc(d_o + r * dv + j) : (A)0;
                sm.wv[lane] = a * u;
            }
            __syncthreads();
            column_phase(sm, sl);   /* G += q dos^T; partial G^T k to po */
            __syncthreads();
            if (w == 0) {
                A s = 0;
                for (int x = 0; x < NW; x++) s += sm.po[x * TJ + lane];
                A du = col ? a * s : (A)0;
                sm.du[lane] = du;
                if (col) store_to(dvo + r * dv + j, du);
            }
            __syncthreads();
            /* row phase: rows lane + 32*(w + NW*m2) */
            A dap = 0;
            for (int64_t i = lane + 32 * w; i < dk; i += 32 * NW) {
                const A ki = sm.kt[i];
                A sq = 0, su = 0, sd = 0;
                A *Srow = sm.S + i * LDS, *Grow = sm.G + i * LDS;
                const A *Urow = sm.U + m * TJ;
                for (int c = 0; c < tj; c++) {
                    A s = Srow[c], g = Grow[c], d = sm.du[c];
                    sq += s * sm.dos[c];
                    su += g * Urow[c];
                    A sp = s - ki * sm.wv[c];
                    sd += sp * d;
                    Srow[c] = sp;
                    Grow[c] = g - ki * d;
                }
                atomicAdd(dq + r * dk + i, sq);
                atomicAdd(dk_sum + r * dk + i, a * su - sd);
                dap += ki * su;
            }
            dap = warp_sum(dap);
            if (lane == 0) atomicAdd(da + r, dap);
        }
    }
    __syncthreads();
    if (p.ds0) put_tile((A *)p.ds0 + pair * sz, dv, j0, sm.G, dk, tj);
}

int check_args(const char *op, const efla_delta_rule_args *a) {
    if (a->dtype != EFLA_FLOAT32 && a->dtype != EFLA_FLOAT64 && a->dtype != EFLA_BFLOAT16)
        return efla_fail("%s: dtype %s is not supported (use float32, float64 or bfloat16)", op,
                         efla_dtype_name(a->dtype));
    efla_dtype want = a->dtype == EFLA_BFLOAT16 ? EFLA_FLOAT32 : a->dtype;
    if (a->state_dtype != want)
        return efla_fail("%s: the cuda kernels keep the state in %s for %s inputs, got %s", op, efla_dtype_name(want),
                         efla_dtype_name(a->dtype), efla_dtype_name(a->state_dtype));
    if (a->chunk_size != 16 && a->chunk_size != 32 && a->chunk_size != 64 && a->chunk_size != 128)
        return efla_fail("%s: chunk_size %d is not allowed; use 16, 32, 64 or 128", op, a->chunk_size);
    if (a->algorithm != EFLA_ALGO_CHUNKED && a->algorithm != EFLA_ALGO_RECURRENT)
        return efla_fail("%s: the kernel needs algorithm chunked (1) or recurrent (2), got %d", op, a->algorithm);
    return 0;
}

/* The per-sequence table on the device: first token row, length, first chunk.
 * A training loop calls the delta rule with the same table in every layer and step, and a
 * cudaMemcpy from host memory waits for everything queued on the device; so the last few
 * tables of each device stay there (blocks of the caching allocator, never written again
 * once uploaded) and a call whose table matches one of them uploads nothing. A miss copies
 * with cudaMemcpyAsync: the driver stages pageable memory before returning. */
struct SeqTableCache {
    static const int SLOTS = 8;
    struct Entry { std::vector<int64_t> tab; void *ptr = nullptr; size_t nbytes = 0; int device = -1; uint64_t used = 0; };
    std::mutex mu;
    Entry slots[SLOTS];
    uint64_t clock = 0;
};
SeqTableCache seq_cache;

int upload_seqs(const efla_delta_rule_args *a, int device, const int64_t **table, int64_t *total_chunks) {
    std::vector<int64_t> tab((size_t)(3 * a->N));
    int64_t c = 0;
    for (int64_t n = 0; n < a->N; n++) {
        tab[3 * n] = (a->seq_batch[n] * a->T + a->seq_start[n]) * a->H;
        tab[3 * n + 1] = a->seq_len[n];
        tab[3 * n + 2] = c;
        c += (a->seq_len[n] + a->chunk_size - 1) / a->chunk_size;
    }
    *total_chunks = c;
    std::lock_guard<std::mutex> g(seq_cache.mu);
    SeqTableCache::Entry *victim = &seq_cache.slots[0];
    for (auto &e : seq_cache.slots) {
        if (e.device == device && e.tab == tab) {
            e.used = ++seq_cache.clock;
            *table = (const int64_t *)e.ptr;
            return 0;
        }
        if (e.used < victim->used) victim = &e;
    }
    /* replace the least recently used slot; freeing into the caching allocator is stream-ordered,
     * so kernels still queued on the old table finish before its block is handed out again */
    if (victim->ptr) efla_cuda_free(victim->ptr, victim->nbytes, victim->device);
    victim->ptr = nullptr;
    victim->device = -1;
    size_t nbytes = sizeof(int64_t) * (tab.size() ? tab.size() : 1);
    void *ptr = efla_cuda_alloc(nbytes, device);
    if (!ptr) return -1;
    if (tab.size() && cudaMemcpyAsync(ptr, tab.data(), sizeof(int64_t) * tab.size(), cudaMemcpyHostToDevice, 0) != cudaSuccess) {
        efla_cuda_free(ptr, nbytes, device);
        return efla_fail("delta_rule: copying the sequence table to the device failed: %s",
                         cudaGetErrorString(cudaGetLastError()));
    }
    victim->tab.swap(tab);
    victim->ptr = ptr;
    victim->nbytes = nbytes;
    victim->device = device;
    victim->used = ++seq_cache.clock;
    *table = (const int64_t *)ptr;
    return 0;
}

template <typename T, typename A>
int fwd_launch(const efla_delta_rule_args *a, DRParams &p) {
    size_t smem = ScanSmem<A>::bytes(a->dk, a->chunk_size, false);
    TRY(prepare_launch(dr_fwd_kernel<T, A>, smem, "delta_rule", a->dk));
    dr_fwd_kernel<T, A><<<(unsigned)(a->N * a->H * p.ntiles), NW * 32, smem>>>(p);
    CU_CHECK_LAUNCH("delta_rule_fwd");
    return 0;
}

template <typename T, typename A>
int bwd_run(const efla_delta_rule_args *a, DRParams &p, int device, void *dq, void *dk, void *dal) {
    int64_t bth = a->B * a->T * a->H;
    CuBuffer acc;
    if (sizeof(T) == sizeof(A)) {
        p.dq_acc = dq; p.dk_acc = dk; p.da_acc = dal;
    } else {
        TRY(acc.alloc(sizeof(A) * (size_t)(bth * (2 * a->dk + 1)), device));
        p.dq_acc = acc.as<A>();
        p.dk_acc = acc.as<A>() + bth * a->dk;
        p.da_acc = acc.as<A>() + 2 * bth * a->dk;
    }
    CU_CHECK(cudaMemsetAsync(p.dq_acc, 0, sizeof(A) * (size_t)(bth * a->dk), 0));
    CU_CHECK(cudaMemsetAsync(p.dk_acc, 0, sizeof(A) * (size_t)(bth * a->dk), 0));
    CU_CHECK(cudaMemsetAsync(p.da_acc, 0, sizeof(A) * (size_t)bth, 0));
    size_t smem = ScanSmem<A>::bytes(a->dk, a->chunk_size, true);
    TRY(prepare_launch(dr_bwd_kernel<T, A>, smem, "delta_rule backward", a->dk));
    dr_bwd_kernel<T, A><<<(unsigned)(a->N * a->H * p.ntiles), NW * 32, smem>>>(p);
    CU_CHECK_LAUNCH("delta_rule_bwd");
    if (sizeof(T) != sizeof(A)) {
        convert_kernel<T, A><<<cu_blocks(bth * a->dk, 256), 256>>>((T *)dq, (const A *)p.dq_acc, bth * a->dk);
        convert_kernel<T, A><<<cu_blocks(bth * a->dk, 256), 256>>>((T *)dk, (const A *)p.dk_acc, bth * a->dk);
        convert_kernel<T, A><<<cu_blocks(bth, 256), 256>>>((T *)dal, (const A *)p.da_acc, bth);
        CU_CHECK_LAUNCH("delta_rule_bwd_convert");
    }
    return 0;
}

DRParams base_params(const efla_delta_rule_args *a, const int64_t *seq) {
    DRParams p;
    memset(&p, 0, sizeof p);
    p.H = a->H; p.dk = a->dk; p.dv = a->dv; p.C = a->chunk_size;
    p.ntiles = (a->dv + TJ - 1) / TJ;
    p.seq = seq;
    p.scale = a->scale;
    return p;
}

/* EFLA_DELTA_RULE_CHUNK_V1=1: the first tensor-core version (comparisons, and a way back) */
bool chunk_v1(void) {
    static const bool v1 = getenv("EFLA_DELTA_RULE_CHUNK_V1") != nullptr;
    return v1;
}

int device_of_current(void) {
    int d = 0;
    cudaGetDevice(&d);
    return EFLA_DEVICE_CUDA0 + d;
}

} // namespace

/* The delta rule's plan (core/backend.h's delta_rule_plan), one tensor-core plan query for most
 * calls:
 * - chunk states: what the tensor-core version that takes the forward keeps them in (version 2:
 *   bfloat16 for bfloat16 inputs; float32 for float32 ones and in version 1); the state dtype
 *   where the scan kernels take it, and in the gated scan;
 * - chunk size: the one asked for, except for float32 tensor-core calls: at most 32, or the
 *   largest smaller one at which both directions' kernels fit (the same maths). Float tiles take
 *   twice bfloat16's shared memory, so at C = 64 the backward's per-chunk kernel runs one block
 *   per multiprocessor at d = 64 and does not fit at d = 128; at 32 it runs two, and the
 *   forward+backward measured 21 % faster at B=16 T=4096 H=32 d=64 and 18 % at the sMNIST shape
 *   (docs/BENCHMARKS.md, run 12);
 * - alpha: the forward makes it from beta and |k|^2, in the scan (token_alpha; a decoding step is
 *   one launch) and in version 2's prep (make_alpha); not the gated scan, nor version 1, which
 *   read a given alpha;
 * - solves: kept where version 2's kernels take both directions (its backward's prep then skips
 *   G and the triangular inverse). */
void efla_cuda_delta_rule_plan(const efla_delta_rule_args *a, int gated, efla_delta_rule_plan *plan) {
    if (gated) return;   /* the gated scan: the front end's defaults */
    if (chunk_v1()) {
        efla_cuda_delta_rule_chunk_v1_plan(a, &plan->chunk_state_dtype);
        return;
    }
    plan->makes_alpha = a->dtype == EFLA_FLOAT32 || a->dtype == EFLA_FLOAT64 || a->dtype == EFLA_BFLOAT16;
    if (a->algorithm == EFLA_ALGO_CHUNKED && a->dtype == EFLA_FLOAT32) {
        efla_delta_rule_args t = *a;
        for (t.chunk_size = a->chunk_size < 32 ? a->chunk_size : 32; t.chunk_size >= 16; t.chunk_size /= 2) {
            efla_dtype states = a->state_dtype;
            if (efla_cuda_delta_rule_chunk_plan(&t, &states) == 2) {
                plan->chunk_size = t.chunk_size;
                plan->chunk_state_dtype = states;
                plan->keeps_solves = 1;
                return;
            }
        }
    }   /* else, or where no size fits both directions: the size asked for */
    plan->keeps_solves = efla_cuda_delta_rule_chunk_plan(a, &plan->chunk_state_dtype) == 2;
}

/* The backend contract has no device argument here: the front end's tensors live on the
 * current device (made current by the ops that allocated them). */
int efla_cuda_delta_rule_fwd(const efla_delta_rule_args *a, const efla_delta_rule_buffers *buf) {
    TRY(check_args("delta_rule", a));
    int device = device_of_current();
    TRY(cu_set_device(device));
    size_t es = efla_dtype_size(a->dtype);
    if (a->dk == 0 && buf->o) CU_CHECK(cudaMemsetAsync(buf->o, 0, es * (size_t)(a->B * a->T * a->H * a->dv), 0));
    if (a->N * a->H == 0 || a->dk == 0 || a->dv == 0) return 0;
    const int64_t *seq;
    int64_t nch;
    TRY(upload_seqs(a, device, &seq, &nch));
    /* gated: the gated scan whatever the algorithm (no tensor-core WY form with a decay yet) */
    if (buf->log_decay) return efla_cuda_delta_rule_gated_fwd(a, buf, seq, nch, device);
    /* the tensor-core chunked path (delta_rule_chunk.cu) when it covers these arguments */
    int fast = chunk_v1() ? efla_cuda_delta_rule_chunk_v1_fwd(a, buf, seq, nch, device)
                          : efla_cuda_delta_rule_chunk_fwd(a, buf, seq, nch, device);
    if (fast <= 0) return fast;
    if (buf->chunk_solves)   /* the plan's keeps_solves promised the tensor-core forward */
        return efla_fail("delta_rule: the per-chunk solves were asked for, but the tensor-core kernels did not take "
                         "this forward (an internal inconsistency: please report it with the call's shapes)");
    if (buf->chunk_states && a->chunk_state_dtype != a->state_dtype)
        return efla_fail("delta_rule: the chunk states were allocated as %s but the scan kernels that take this call "
                         "write %s; allocate them with the dtype of backend->delta_rule_plan",
                         efla_dtype_name(a->chunk_state_dtype), efla_dtype_name(a->state_dtype));
    DRParams p = base_params(a, seq);
    p.q = buf->q; p.k = buf->k; p.v = buf->v; p.al = buf->alpha; p.s0 = buf->s0;
    p.o = buf->o; p.sf = buf->s_final; p.cs = buf->chunk_states;
    if (!buf->alpha) {   /* the plan's makes_alpha said so: alpha from beta, here */
        if (!buf->beta) return efla_fail("delta_rule: neither alpha nor beta was given to the cuda forward");
        p.beta = buf->beta; p.alpha_out = buf->alpha_out; p.lambda_out = buf->lambda_out;
        p.order = a->alpha_order; p.ref = a->alpha_reference_eps;
    }
    switch (a->dtype) {
    case EFLA_FLOAT32: return fwd_launch<float, float>(a, p);
    case EFLA_FLOAT64: return fwd_launch<double, double>(a, p);
    default: return fwd_launch<bf16, float>(a, p);
    }
}

int efla_cuda_delta_rule_bwd(const efla_delta_rule_args *a, const efla_delta_rule_buffers *buf) {
    TRY(check_args("delta_rule backward", a));
    int device = device_of_current();
    TRY(cu_set_device(device));
    size_t es = efla_dtype_size(a->dtype), bth = (size_t)(a->B * a->T * a->H);
    if (a->dk == 0 || a->dv == 0) {   /* degenerate heads: every gradient is zero */
        CU_CHECK(cudaMemsetAsync(buf->dv, 0, es * bth * (size_t)a->dv, 0));
        CU_CHECK(cudaMemsetAsync(buf->dalpha, 0, es * bth, 0));
        if (a->dk) {
            CU_CHECK(cudaMemsetAsync(buf->dk, 0, es * bth * (size_t)a->dk, 0));
            CU_CHECK(cudaMemsetAsync(buf->dq, 0, es * bth * (size_t)a->dk, 0));
        }
        if (buf->log_decay) {
            CU_CHECK(cudaMemsetAsync(buf->dalpha_v, 0, es * bth, 0));
            CU_CHECK(cudaMemsetAsync(buf->dlog_decay, 0, es * bth, 0));
        }
        return 0;
    }
    if (a->N * a->H == 0) return 0;
    CuBuffer states;
    const int64_t *seq;
    int64_t nch;
    TRY(upload_seqs(a, device, &seq, &nch));
    if (buf->log_decay) return efla_cuda_delta_rule_gated_bwd(a, buf, seq, nch, device);
    int fast = chunk_v1() ? efla_cuda_delta_rule_chunk_v1_bwd(a, buf, seq, nch, device)
                          : efla_cuda_delta_rule_chunk_bwd(a, buf, seq, nch, device);
    if (fast <= 0) return fast;
    DRParams p = base_params(a, seq);
    p.q = buf->q; p.k = buf->k; p.v = buf->v; p.al = buf->alpha; p.s0 = buf->s0;
    /* states saved by the tensor-core path (bfloat16) when this call falls back to the scan: recompute */
    const void *chunk_states = a->chunk_state_dtype == a->state_dtype ? buf->chunk_states : nullptr;
    size_t ses = a->dtype == EFLA_FLOAT64 ? 8 : 4;
    if (!chunk_states) {
        /* recompute the chunk states with a state-only forward */
        TRY(states.alloc(ses * (size_t)(nch * a->H * a->dk * a->dv), device));
        p.cs = states.ptr;
        int rc;
        switch (a->dtype) {
        case EFLA_FLOAT32: rc = fwd_launch<float, float>(a, p); break;
        case EFLA_FLOAT64: rc = fwd_launch<double, double>(a, p); break;
        default: rc = fwd_launch<bf16, float>(a, p); break;
        }
        TRY(rc);
        chunk_states = states.ptr;
        p.cs = nullptr;
    }
    p.states = chunk_states;
    p.d_o = buf->d_o; p.dsf = buf->d_s_final; p.dvo = buf->dv; p.ds0 = buf->ds0;
    switch (a->dtype) {
    case EFLA_FLOAT32: return bwd_run<float, float>(a, p, device, buf->dq, buf->dk, buf->dalpha);
    case EFLA_FLOAT64: return bwd_run<double, double>(a, p, device, buf->dq, buf->dk, buf->dalpha);
    default: return bwd_run<bf16, float>(a, p, device, buf->dq, buf->dk, buf->dalpha);
    }
}

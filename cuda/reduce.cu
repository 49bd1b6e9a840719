/* reduce.cu: the CUDA reduction kernel (sum mean max min prod logsumexp var norm argmax
 * argmin); semantics of core/cpu/reduce.c (see backend.h for the reduce_mask contract).
 *
 * in's dims split into kept dims (one per output element) and reduced dims; each group is
 * coalesced. Every element becomes a small state (double accumulators, int64 for integer
 * inputs) and states combine associatively: Chan's formula for var, a running max for
 * logsumexp, (value, first index) for max/min/argmax/argmin (ties go to the lower index,
 * NaN wins), so any grouping gives the CPU's answer up to rounding.
 *
 * Three shapes of work, one kernel template:
 *  - G = 1:   one thread per output (short reductions, or the kept dim innermost with
 *             unit stride, where neighbouring threads read neighbouring columns);
 *  - G = 32:  one warp per output; G = 256: one block per output (long reductions).
 *  - Few outputs with very long reductions split each output's range over S blocks that
 *    write partial states; a second kernel combines them in order. */
#include "kernels.cuh"
#include <string.h>

namespace {

struct RState {
    double v, m, n;
    int64_t idx, iv;
};

struct RPlan {
    int op;
    double p;
    bool ints;
    int nr, nk;
    int64_t rshape[EFLA_MAX_DIMS], rin[EFLA_MAX_DIMS];
    int64_t kshape[EFLA_MAX_DIMS], kin[EFLA_MAX_DIMS], kout[EFLA_MAX_DIMS];
    int64_t nred, nout;
    const char *in;
    char *out;
    int odt;
    int segs;          /* S: blocks/threads per output range */
    RState *partial;   /* [nout * segs] when segs > 1 */
};

__device__ __forceinline__ bool is_max(int op) { return op == EFLA_MAX || op == EFLA_ARGMAX; }

__device__ RState state_init(const RPlan &c) {
    RState s = { 0, 0, 0, -1, 0 };
    switch (c.op) {
    case EFLA_PROD: s.v = 1; s.iv = 1; break;
    case EFLA_LOGSUMEXP: s.m = -INFINITY; break;
    case EFLA_NORM: if (c.p == -INFINITY) s.v = INFINITY; break;
    default: break;
    }
    return s;
}

/* Is b better than a (max/min)? Ties and NaN ties go to the lower index. */
__device__ __forceinline__ bool better(const RPlan &c, const RState &a, const RState &b) {
    if (b.idx < 0) return false;
    if (a.idx < 0) return true;
    bool mx = is_max(c.op);
    if (c.ints) {
        if (b.iv == a.iv) return b.idx < a.idx;
        return mx ? b.iv > a.iv : b.iv < a.iv;
    }
    bool an = isnan(a.v), bn = isnan(b.v);
    if (an || bn) return an && bn ? b.idx < a.idx : bn;
    if (b.v == a.v) return b.idx < a.idx;
    return mx ? b.v > a.v : b.v < a.v;
}

__device__ void combine(const RPlan &c, RState &a, const RState &b) {
    switch (c.op) {
    case EFLA_SUM: case EFLA_MEAN:
        a.v += b.v;
        a.iv = (int64_t)((uint64_t)a.iv + (uint64_t)b.iv);
        break;
    case EFLA_PROD:
        a.v *= b.v;
        a.iv = (int64_t)((uint64_t)a.iv * (uint64_t)b.iv);
        break;
    case EFLA_MAX: case EFLA_MIN: case EFLA_ARGMAX: case EFLA_ARGMIN:
        if (better(c, a, b)) a = b;
        break;
    case EFLA_NORM:
        if (isnan(a.v)) break;
        if (isnan(b.v)) a.v = b.v;
        else if (c.p == INFINITY) a.v = fmax(a.v, b.v);
        else if (c.p == -INFINITY) a.v = fmin(a.v, b.v);
        else a.v += b.v;
        break;
    case EFLA_LOGSUMEXP: {
        double M = fmax(a.m, b.m);
        if (isnan(a.m) || isnan(b.m)) { a.m = NAN; a.v = 1; }
        else if (M == -INFINITY) { a.m = M; a.v = 0; }
        else if (M == INFINITY) { a.m = M; a.v = 1; }
        else { a.v = a.v * exp(a.m - M) + b.v * exp(b.m - M); a.m = M; }
        break;
    }
    case EFLA_VAR: {
        if (b.n == 0) break;
        if (a.n == 0) { a = b; break; }
        double n = a.n + b.n, d = b.m - a.m;
        a.v += b.v + d * d * a.n * b.n / n;
        a.m += d * b.n / n;
        a.n = n;
        break;
    }
    default: break;
    }
}

/* The state of the single element x (reduced index r). */
__device__ RState elem_state(const RPlan &c, double x, int64_t xi, int64_t r) {
    RState s = state_init(c);
    switch (c.op) {
    case EFLA_SUM: case EFLA_MEAN: case EFLA_PROD: s.v = x; s.iv = xi; break;
    case EFLA_MAX: case EFLA_MIN: case EFLA_ARGMAX: case EFLA_ARGMIN: s.v = x; s.iv = xi; s.idx = r; break;
    case EFLA_NORM: {
        double p = c.p, a = fabs(x);
        if (p == 2) s.v = x * x;
        else if (p == 1 || isinf(p)) s.v = a;
        else if (p == 0) s.v = x != 0;
        else s.v = pow(a, p);
        break;
    }
    case EFLA_LOGSUMEXP:
        if (isnan(x)) { s.m = NAN; s.v = 1; }
        else { s.m = x; s.v = x == -INFINITY ? 0 : 1; }
        break;
    case EFLA_VAR: s.n = 1; s.m = x; s.v = 0; break;
    default: break;
    }
    return s;
}

__device__ double finalize(const RPlan &c, const RState &s) {
    double n = (double)c.nred;
    switch (c.op) {
    case EFLA_SUM: case EFLA_PROD: case EFLA_MAX: case EFLA_MIN: return s.v;
    case EFLA_MEAN: return s.v / n;
    case EFLA_LOGSUMEXP: return s.v == 0 && s.m == -INFINITY ? -INFINITY : s.m + log(s.v);
    case EFLA_VAR: { double dof = n - c.p; return s.v / (dof > 0 ? dof : 0.0); }
    case EFLA_NORM: {
        double p = c.p;
        if (p == 2) return sqrt(s.v);
        if (p == 1 || p == 0 || isinf(p)) return s.v;
        return pow(s.v, 1.0 / p);
    }
    default: return NAN;
    }
}

template <int ODT> __device__ void store_as(char *dst, const RPlan &c, const RState &s) {
    if (c.ints) st_i<ODT>(dst, s.iv);
    else st_d<ODT>(dst, finalize(c, s));
}

__device__ void store_result(const RPlan &c, int64_t o, const RState &s) {
    int64_t off = 0, rem = o;
    for (int d = c.nk - 1; d >= 0; d--) {
        int64_t q = rem / c.kshape[d];
        off += (rem - q * c.kshape[d]) * c.kout[d];
        rem = q;
    }
    if (c.op == EFLA_ARGMAX || c.op == EFLA_ARGMIN) {
        ((int64_t *)c.out)[off] = s.idx < 0 ? 0 : s.idx;
        return;
    }
    char *dst = c.out;
    switch (c.odt) {
    case EFLA_FLOAT32: store_as<EFLA_FLOAT32>(dst + off * 4, c, s); break;
    case EFLA_FLOAT64: store_as<EFLA_FLOAT64>(dst + off * 8, c, s); break;
    case EFLA_BFLOAT16: store_as<EFLA_BFLOAT16>(dst + off * 2, c, s); break;
    case EFLA_INT64: store_as<EFLA_INT64>(dst + off * 8, c, s); break;
    case EFLA_UINT8: store_as<EFLA_UINT8>(dst + off, c, s); break;
    default: store_as<EFLA_BOOL>(dst + off, c, s); break;
    }
}

__device__ __forceinline__ int64_t kept_offset(const RPlan &c, int64_t o) {
    int64_t off = 0;
    for (int d = c.nk - 1; d >= 0; d--) {
        int64_t q = o / c.kshape[d];
        off += (o - q * c.kshape[d]) * c.kin[d];
        o = q;
    }
    return off;
}

template <int DT>
__device__ __forceinline__ void fold(const RPlan &c, RState &s, int64_t base, int64_t r) {
    int64_t off = base, rem = r;
    if (c.nr == 1) off += rem * c.rin[0];
    else
        for (int d = c.nr - 1; d >= 0; d--) {
            int64_t q = rem / c.rshape[d];
            off += (rem - q * c.rshape[d]) * c.rin[d];
            rem = q;
        }
    const char *p = c.in + off * (int64_t)sizeof(typename DT_<DT>::S);
    RState e;
    if (DT_<DT>::fp) e = elem_state(c, ld_d<DT>(p), 0, r);
    else e = elem_state(c, 0, ld_i<DT>(p), r);
    combine(c, s, e);
}

/* Output o, segment seg: fold [r0, r1) with G threads, then store or write a partial. */
template <int DT, int G>
__global__ void reduce_kernel(RPlan c) {
    __shared__ RState sh[G > 1 ? 256 : 1];
    const int per_block = 256 / G;
    int lane = threadIdx.x % G, slot = threadIdx.x / G;
    int64_t total = c.nout * c.segs;
    for (int64_t w = (int64_t)blockIdx.x * per_block + slot; w - slot < total; w += (int64_t)gridDim.x * per_block) {
        bool active = w < total;
        int64_t o = active ? w % c.nout : 0, seg = active ? w / c.nout : 0;
        RState s = state_init(c);
        if (active) {
            int64_t r0 = c.nred * seg / c.segs, r1 = c.nred * (seg + 1) / c.segs;
            int64_t base = kept_offset(c, o);
            for (int64_t r = r0 + lane; r < r1; r += G) fold<DT>(c, s, base, r);
        }
        if (G > 1) {
            sh[threadIdx.x] = s;
            __syncthreads();
            for (int half = G / 2; half > 0; half /= 2) {
                if (lane < half) combine(c, sh[threadIdx.x], sh[threadIdx.x + half]);
                __syncthreads();
            }
            s = sh[slot * G];
            __syncthreads();
        }
        if (active && lane == 0) {
            if (c.segs == 1) store_result(c, o, s);
            else c.partial[o * c.segs + seg] = s;
        }
    }
}

__global__ void finish_kernel(RPlan c) {
    CU_GRID_STRIDE(o, c.nout) {
        RState s = state_init(c);
        for (int k = 0; k < c.segs; k++) combine(c, s, c.partial[o * c.segs + k]);
        store_result(c, o, s);
    }
}

void build_layout(const efla_tensor *out, const efla_tensor *in, uint32_t mask, RPlan *c) {
    c->nr = 0;
    c->nk = 0;
    for (int d = 0; d < in->ndim; d++) {
        int64_t n = in->shape[d];
        if (n == 1) continue;
        if (mask & (1u << d)) {
            int j = c->nr;
            if (j && c->rin[j - 1] == in->strides[d] * n) { c->rshape[j - 1] *= n; c->rin[j - 1] = in->strides[d]; }
            else { c->rshape[j] = n; c->rin[j] = in->strides[d]; c->nr++; }
        } else {
            int j = c->nk;
            if (j && c->kin[j - 1] == in->strides[d] * n && c->kout[j - 1] == out->strides[d] * n) {
                c->kshape[j - 1] *= n; c->kin[j - 1] = in->strides[d]; c->kout[j - 1] = out->strides[d];
            } else { c->kshape[j] = n; c->kin[j] = in->strides[d]; c->kout[j] = out->strides[d]; c->nk++; }
        }
    }
    if (!c->nr) { c->nr = 1; c->rshape[0] = 1; c->rin[0] = 0; }
    if (!c->nk) { c->nk = 1; c->kshape[0] = 1; c->kin[0] = 0; c->kout[0] = 0; }
    c->nred = efla_numel_of(c->nr, c->rshape);
    c->nout = efla_numel_of(c->nk, c->kshape);
}

struct Launch {
    template <int DT> static int run(RPlan &c, int G) {
        int64_t work = c.nout * c.segs;
        if (G == 1) {
            reduce_kernel<DT, 1><<<cu_blocks(work, 256), 256>>>(c);
        } else if (G == 32) {
            reduce_kernel<DT, 32><<<cu_blocks(work * 32, 256), 256>>>(c);
        } else {
            int64_t b = work;
            int64_t cap = (int64_t)cu_sm_count() * 16;
            reduce_kernel<DT, 256><<<(unsigned)(b < cap ? b : cap), 256>>>(c);
        }
        CU_CHECK_LAUNCH("reduce");
        return 0;
    }
};

} // namespace

int efla_cuda_reduce(efla_reduce_op op, efla_tensor *out, const efla_tensor *in, uint32_t reduce_mask, double param) {
    TRY(cu_set_device(in->device));
    RPlan c;
    memset(&c, 0, sizeof c);
    c.op = op;
    c.p = param;
    c.ints = !efla_dtype_is_floating(in->dtype);
    if (c.ints && !(op == EFLA_SUM || op == EFLA_PROD || op == EFLA_MAX || op == EFLA_MIN || op == EFLA_ARGMAX ||
                    op == EFLA_ARGMIN))
        return efla_fail("reduce: %s is not defined for %s tensors on cuda; cast to a float dtype first",
                         efla_reduce_name(op), efla_dtype_name(in->dtype));
    if ((op == EFLA_ARGMAX || op == EFLA_ARGMIN) && out->dtype != EFLA_INT64)
        return efla_fail("reduce: %s writes int64, not %s", efla_reduce_name(op), efla_dtype_name(out->dtype));
    build_layout(out, in, reduce_mask, &c);
    if (c.nout == 0) return 0;
    if (c.nred == 0 && (op == EFLA_MAX || op == EFLA_MIN || op == EFLA_ARGMAX || op == EFLA_ARGMIN))
        return efla_fail("%s: cannot reduce over zero elements (input shape %s)", efla_reduce_name(op), efla_tshape(in));
    c.in = cu_ptr(in);
    c.out = cu_ptr(out);
    c.odt = out->dtype;
    c.segs = 1;

    /* Pick the work shape. Columns (kept dim innermost, unit stride in the input) read
     * coalesced with one thread per output. */
    int G;
    bool columns = c.kin[c.nk - 1] == 1 && c.kshape[c.nk - 1] >= 32 && c.rin[c.nr - 1] != 1;
    int64_t target = (int64_t)cu_sm_count() * 2048;   /* threads that fill the chip */
    if (columns || c.nred <= 16) {
        G = 1;
        if (c.nout < target && c.nred >= 256) {
            int64_t s = target / (c.nout > 0 ? c.nout : 1);
            int64_t maxs = c.nred / 64;
            c.segs = (int)(s < maxs ? (s > 1 ? s : 1) : (maxs > 1 ? maxs : 1));
        }
    } else if (c.nred <= 1024) {
        G = 32;
    } else {
        G = 256;
        int64_t blocks_target = (int64_t)cu_sm_count() * 8;
        if (c.nout < blocks_target && c.nred >= 65536) {
            int64_t s = blocks_target / c.nout, maxs = c.nred / 8192;
            c.segs = (int)(s < maxs ? (s > 1 ? s : 1) : (maxs > 1 ? maxs : 1));
        }
    }
    CuBuffer part;
    if (c.segs > 1) {
        TRY(part.alloc(sizeof(RState) * (size_t)(c.nout * c.segs), in->device));
        c.partial = part.as<RState>();
    }
    int rc;
    switch (in->dtype) {
    case EFLA_FLOAT32: rc = Launch::run<EFLA_FLOAT32>(c, G); break;
    case EFLA_FLOAT64: rc = Launch::run<EFLA_FLOAT64>(c, G); break;
    case EFLA_BFLOAT16: rc = Launch::run<EFLA_BFLOAT16>(c, G); break;
    case EFLA_INT64: rc = Launch::run<EFLA_INT64>(c, G); break;
    case EFLA_UINT8: rc = Launch::run<EFLA_UINT8>(c, G); break;
    case EFLA_BOOL: rc = Launch::run<EFLA_BOOL>(c, G); break;
    default: return efla_fail("reduce: invalid dtype %d", (int)in->dtype);
    }
    TRY(rc);
    if (c.segs > 1) {
        finish_kernel<<<cu_blocks(c.nout, 256), 256>>>(c);
        CU_CHECK_LAUNCH("reduce_finish");
    }
    return 0;
}

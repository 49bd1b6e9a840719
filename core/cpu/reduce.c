/* reduce.c: the CPU reduction kernel (sum mean max min prod logsumexp var norm argmax
 * argmin), see backend.h for the reduce_mask contract.
 *
 * Plan: split in's dims into kept dims (the output's) and reduced dims, coalesce each
 * group, and for every output element walk its reduced elements in row-major order in
 * chunks of CHUNK values converted to double (int64 for integer inputs), folding each
 * chunk into a small running state. States combine associatively (Chan's formula for
 * var, a running max for logsumexp), so one large reduction (a full sum) splits across
 * threads with the same code, and one path serves every layout. Accumulating in double
 * keeps float32 sums accurate without compensated summation.
 * A column path handles sum/mean over outer dims with the kept dims innermost (bias
 * gradients, sum_to_shape), which the per-output walk would read with a large stride. */
#include "cpu_kernels.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define CHUNK 1024
#define PAR_MIN 32768   /* elements below which threads cost more than they save */

typedef struct {
    double v;       /* sum, product, best value, sum of |x|^p, sum of exp(x-m), M2 */
    double m;       /* logsumexp: running max; var: running mean */
    double n;       /* var: count */
    int64_t idx;    /* max/min: reduced index of the best value; -1 while empty */
    int64_t iv;     /* integer inputs: sum, product or best value */
} rstate;

typedef struct {
    efla_reduce_op op;
    double p;                       /* var: correction; norm: p */
    efla_dtype dt;                  /* input dtype */
    bool ints;                      /* integer input: int64 accumulators */
    size_t es;
    int nr;                         /* reduced dims after coalescing (>= 1) */
    int64_t rshape[EFLA_MAX_DIMS], rin[EFLA_MAX_DIMS];
    int64_t nred;
} rctx;

static int nthreads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* ---- states ------------------------------------------------------------------------------ */
static bool is_max(efla_reduce_op op) { return op == EFLA_MAX || op == EFLA_ARGMAX; }

static rstate state_init(const rctx *c) {
    rstate s = { 0, 0, 0, -1, 0 };
    switch (c->op) {
    case EFLA_PROD: s.v = 1; s.iv = 1; break;
    case EFLA_LOGSUMEXP: s.m = -INFINITY; break;
    case EFLA_NORM: if (c->p == -INFINITY) s.v = INFINITY; break;
    default: break;
    }
    return s;
}

/* Better candidate b than a for max/min (a comes first: ties keep a; NaN wins). */
static bool better_d(bool mx, double a, double b) {
    if (isnan(a)) return false;
    if (isnan(b)) return true;
    return mx ? b > a : b < a;
}

/* Fold state b (covering later elements) into a. */
static void state_combine(const rctx *c, rstate *a, const rstate *b) {
    switch (c->op) {
    case EFLA_SUM: case EFLA_MEAN:
        a->v += b->v;
        a->iv = (int64_t)((uint64_t)a->iv + (uint64_t)b->iv);
        break;
    case EFLA_PROD:
        a->v *= b->v;
        a->iv = (int64_t)((uint64_t)a->iv * (uint64_t)b->iv);
        break;
    case EFLA_MAX: case EFLA_MIN: case EFLA_ARGMAX: case EFLA_ARGMIN: {
        if (b->idx < 0) break;
        bool take = a->idx < 0 ||
                    (c->ints ? (is_max(c->op) ? b->iv > a->iv : b->iv < a->iv)
                             : better_d(is_max(c->op), a->v, b->v));
        if (take) *a = *b;
        break;
    }
    case EFLA_NORM:
        if (isnan(a->v)) break;
        if (isnan(b->v)) a->v = b->v;
        else if (c->p == INFINITY) a->v = b->v > a->v ? b->v : a->v;
        else if (c->p == -INFINITY) a->v = b->v < a->v ? b->v : a->v;
        else a->v += b->v;
        break;
    case EFLA_LOGSUMEXP: {
        double M = a->m > b->m ? a->m : b->m;
        if (isnan(a->m) || isnan(b->m)) { a->m = NAN; a->v = 1; }
        else if (M == -INFINITY) { a->m = M; a->v = 0; }
        else if (M == INFINITY) { a->m = M; a->v = 1; }
        else { a->v = a->v * exp(a->m - M) + b->v * exp(b->m - M); a->m = M; }
        break;
    }
    case EFLA_VAR: {
        if (b->n == 0) break;
        if (a->n == 0) { *a = *b; break; }
        double n = a->n + b->n, d = b->m - a->m;
        a->v += b->v + d * d * a->n * b->n / n;
        a->m += d * b->n / n;
        a->n = n;
        break;
    }
    default: break;
    }
}

/* The state of one chunk of doubles x[0..n) whose first element has reduced index base. */
static rstate chunk_state_d(const rctx *c, const double *x, int64_t n, int64_t base) {
    rstate s = state_init(c);
    switch (c->op) {
    case EFLA_SUM: case EFLA_MEAN: {
        double acc = 0;
#pragma omp simd reduction(+:acc)
        for (int64_t i = 0; i < n; i++) acc += x[i];
        s.v = acc;
        break;
    }
    case EFLA_PROD: {
        double acc = 1;
        for (int64_t i = 0; i < n; i++) acc *= x[i];
        s.v = acc;
        break;
    }
    case EFLA_MAX: case EFLA_MIN: case EFLA_ARGMAX: case EFLA_ARGMIN: {
        /* Vectorisable pass for the value (and any NaN), then find its first position. */
        bool mx = is_max(c->op);
        double best = x[0];
        int nan = 0;
        if (mx) {
#pragma omp simd reduction(max:best) reduction(|:nan)
            for (int64_t i = 0; i < n; i++) { best = x[i] > best ? x[i] : best; nan |= x[i] != x[i]; }
        } else {
#pragma omp simd reduction(min:best) reduction(|:nan)
            for (int64_t i = 0; i < n; i++) { best = x[i] < best ? x[i] : best; nan |= x[i] != x[i]; }
        }
        int64_t at = 0;
        if (nan) { while (!isnan(x[at])) at++; best = x[at]; }
        else while (x[at] != best) at++;
        s.v = best;
        s.idx = base + at;
        break;
    }
    case EFLA_NORM: {
        double p = c->p, acc = 0;
        if (p == 2) {
#pragma omp simd reduction(+:acc)
            for (int64_t i = 0; i < n; i++) acc += x[i] * x[i];
        } else if (p == 1) {
#pragma omp simd reduction(+:acc)
            for (int64_t i = 0; i < n; i++) acc += fabs(x[i]);
        } else if (p == INFINITY || p == -INFINITY) {
            acc = s.v;
            for (int64_t i = 0; i < n; i++) {
                double a = fabs(x[i]);
                if (isnan(a)) { acc = a; break; }
                acc = p > 0 ? (a > acc ? a : acc) : (a < acc ? a : acc);
            }
        } else if (p == 0) {
            for (int64_t i = 0; i < n; i++) acc += x[i] != 0;
        } else {
            for (int64_t i = 0; i < n; i++) acc += pow(fabs(x[i]), p);
        }
        s.v = acc;
        break;
    }
    case EFLA_LOGSUMEXP: {
        double m = -INFINITY;
        int nan = 0;
#pragma omp simd reduction(max:m) reduction(|:nan)
        for (int64_t i = 0; i < n; i++) { m = x[i] > m ? x[i] : m; nan |= x[i] != x[i]; }
        if (nan) { s.m = NAN; s.v = 1; break; }
        s.m = m;
        if (m == -INFINITY) { s.v = 0; break; }
        if (m == INFINITY) { s.v = 1; break; }
        double acc = 0;
        for (int64_t i = 0; i < n; i++) acc += exp(x[i] - m);
        s.v = acc;
        break;
    }
    case EFLA_VAR: {
        /* two passes over the chunk (it is in L1): accurate M2 */
        double sum = 0, m2 = 0;
#pragma omp simd reduction(+:sum)
        for (int64_t i = 0; i < n; i++) sum += x[i];
        double mean = sum / (double)n;
#pragma omp simd reduction(+:m2)
        for (int64_t i = 0; i < n; i++) m2 += (x[i] - mean) * (x[i] - mean);
        s.n = (double)n;
        s.m = mean;
        s.v = m2;
        break;
    }
    default: break;
    }
    return s;
}

static rstate chunk_state_i(const rctx *c, const int64_t *x, int64_t n, int64_t base) {
    rstate s = state_init(c);
    switch (c->op) {
    case EFLA_SUM: {
        uint64_t acc = 0;
        for (int64_t i = 0; i < n; i++) acc += (uint64_t)x[i];
        s.iv = (int64_t)acc;
        break;
    }
    case EFLA_PROD: {
        uint64_t acc = 1;
        for (int64_t i = 0; i < n; i++) acc *= (uint64_t)x[i];
        s.iv = (int64_t)acc;
        break;
    }
    default: {   /* max/min/argmax/argmin */
        bool mx = is_max(c->op);
        int64_t at = 0;
        for (int64_t i = 1; i < n; i++)
            if (mx ? x[i] > x[at] : x[i] < x[at]) at = i;
        s.iv = x[at];
        s.idx = base + at;
        break;
    }
    }
    return s;
}

/* ---- loading chunks -------------------------------------------------------------------------- */
static void load_d(double *dst, const char *src, int64_t n, int64_t st, efla_dtype dt) {
    switch (dt) {
    case EFLA_FLOAT32: {
        const float *p = (const float *)src;
        if (st == 1) for (int64_t i = 0; i < n; i++) dst[i] = p[i];
        else for (int64_t i = 0; i < n; i++) dst[i] = p[i * st];
        break;
    }
    case EFLA_FLOAT64: {
        const double *p = (const double *)src;
        if (st == 1) memcpy(dst, p, (size_t)n * sizeof *dst);
        else for (int64_t i = 0; i < n; i++) dst[i] = p[i * st];
        break;
    }
    case EFLA_BFLOAT16: {
        const uint16_t *p = (const uint16_t *)src;
        for (int64_t i = 0; i < n; i++) dst[i] = efla_bf16_to_f32(p[i * st]);
        break;
    }
    default:
        for (int64_t i = 0; i < n; i++) dst[i] = efla_load_as_double(src + i * st * (int64_t)efla_dtype_size(dt), dt);
        break;
    }
}

static void load_i(int64_t *dst, const char *src, int64_t n, int64_t st, efla_dtype dt) {
    switch (dt) {
    case EFLA_INT64: {
        const int64_t *p = (const int64_t *)src;
        for (int64_t i = 0; i < n; i++) dst[i] = p[i * st];
        break;
    }
    case EFLA_UINT8: case EFLA_BOOL: {
        const uint8_t *p = (const uint8_t *)src;
        for (int64_t i = 0; i < n; i++) dst[i] = dt == EFLA_BOOL ? p[i * st] != 0 : p[i * st];
        break;
    }
    default: break;
    }
}

/* Sum of n float32/float64 values with stride st, accumulated in double. The unit-stride
 * loops are what a full or last-dim sum spends its time in: no staging buffer. */
static double sum_run(const char *p, int64_t n, int64_t st, efla_dtype dt) {
    double acc = 0;
    if (dt == EFLA_FLOAT32) {
        const float *x = (const float *)p;
        if (st == 1) {
#pragma omp simd reduction(+:acc)
            for (int64_t i = 0; i < n; i++) acc += x[i];
        } else for (int64_t i = 0; i < n; i++) acc += x[i * st];
    } else {
        const double *x = (const double *)p;
        if (st == 1) {
#pragma omp simd reduction(+:acc)
            for (int64_t i = 0; i < n; i++) acc += x[i];
        } else for (int64_t i = 0; i < n; i++) acc += x[i * st];
    }
    return acc;
}

/* Fold the reduced elements [r0, r1) of the slice starting at base into *s. */
static void fold_range(const rctx *c, const char *base, int64_t r0, int64_t r1, rstate *s) {
    if (r0 >= r1) return;
    bool direct = (c->op == EFLA_SUM || c->op == EFLA_MEAN) && (c->dt == EFLA_FLOAT32 || c->dt == EFLA_FLOAT64);
    double dbuf[CHUNK];
    int64_t ibuf[CHUNK];
    int64_t ridx[EFLA_MAX_DIMS], off = 0;
    int in = c->nr - 1;
    int64_t rem = r0;
    for (int d = in; d >= 0; d--) {
        ridx[d] = rem % c->rshape[d];
        rem /= c->rshape[d];
        off += ridx[d] * c->rin[d];
    }
    int64_t S = c->rshape[in], st = c->rin[in];
    int64_t r = r0, filled = 0, chunk_base = r0;
    while (r < r1) {
        int64_t take = S - ridx[in];
        if (take > r1 - r) take = r1 - r;
        if (!direct && take > CHUNK - filled) take = CHUNK - filled;
        const char *p = base + off * (int64_t)c->es;
        if (direct) s->v += sum_run(p, take, st, c->dt);
        else if (c->ints) load_i(ibuf + filled, p, take, st, c->dt);
        else load_d(dbuf + filled, p, take, st, c->dt);
        if (!direct) filled += take;
        r += take;
        ridx[in] += take;
        off += take * st;
        if (ridx[in] == S) {   /* carry into the outer reduced dims */
            off -= S * st;
            ridx[in] = 0;
            for (int d = in - 1; d >= 0; d--) {
                ridx[d]++;
                off += c->rin[d];
                if (ridx[d] < c->rshape[d]) break;
                off -= c->rin[d] * c->rshape[d];
                ridx[d] = 0;
            }
        }
        if (filled && (filled == CHUNK || r == r1)) {
            rstate cs = c->ints ? chunk_state_i(c, ibuf, filled, chunk_base)
                                : chunk_state_d(c, dbuf, filled, chunk_base);
            state_combine(c, s, &cs);
            chunk_base += filled;
            filled = 0;
        }
    }
}

/* ---- results ------------------------------------------------------------------------------------- */
static double finalize_d(const rctx *c, const rstate *s) {
    double n = (double)c->nred;
    switch (c->op) {
    case EFLA_SUM: return s->v;
    case EFLA_MEAN: return s->v / n;
    case EFLA_PROD: return s->v;
    case EFLA_MAX: case EFLA_MIN: return s->v;
    case EFLA_LOGSUMEXP: return s->v == 0 && s->m == -INFINITY ? -INFINITY : s->m + log(s->v);
    case EFLA_VAR: {
        double dof = n - c->p;   /* no degrees of freedom left: inf or nan, like torch */
        return s->v / (dof > 0 ? dof : 0.0);
    }
    case EFLA_NORM: {
        double p = c->p;
        if (p == 2) return sqrt(s->v);
        if (p == 1 || p == 0 || isinf(p)) return s->v;
        return pow(s->v, 1.0 / p);
    }
    default: return NAN;
    }
}

static void store_result(const rctx *c, char *dst, efla_dtype odt, const rstate *s) {
    if (c->op == EFLA_ARGMAX || c->op == EFLA_ARGMIN) { *(int64_t *)dst = s->idx < 0 ? 0 : s->idx; return; }
    if (c->ints) {
        switch (odt) {
        case EFLA_INT64: *(int64_t *)dst = s->iv; return;
        case EFLA_UINT8: *(uint8_t *)dst = (uint8_t)s->iv; return;
        case EFLA_BOOL: *(uint8_t *)dst = s->iv != 0; return;
        default: efla_store_from_double(dst, odt, (double)s->iv); return;
        }
    }
    double v = finalize_d(c, s);
    switch (odt) {
    case EFLA_FLOAT32: *(float *)dst = (float)v; return;
    case EFLA_FLOAT64: *(double *)dst = v; return;
    default: efla_store_from_double(dst, odt, v); return;
    }
}

/* ---- layouts --------------------------------------------------------------------------------------- */
typedef struct {
    int nk;
    int64_t kshape[EFLA_MAX_DIMS], kin[EFLA_MAX_DIMS], kout[EFLA_MAX_DIMS];
    int64_t nout;
} klayout;

/* Split in's dims by the mask, dropping size-1 dims and merging neighbours in each group
 * whose strides allow it (the walk order stays row-major over the group). */
static void build_layout(const efla_tensor *out, const efla_tensor *in, uint32_t mask, rctx *c, klayout *k) {
    c->nr = 0;
    k->nk = 0;
    for (int d = 0; d < in->ndim; d++) {
        int64_t n = in->shape[d];
        if (n == 1) continue;
        if (mask & (1u << d)) {
            int j = c->nr;
            if (j && c->rin[j - 1] == in->strides[d] * n) { c->rshape[j - 1] *= n; c->rin[j - 1] = in->strides[d]; }
            else { c->rshape[j] = n; c->rin[j] = in->strides[d]; c->nr++; }
        } else {
            int j = k->nk;
            if (j && k->kin[j - 1] == in->strides[d] * n && k->kout[j - 1] == out->strides[d] * n) {
                k->kshape[j - 1] *= n; k->kin[j - 1] = in->strides[d]; k->kout[j - 1] = out->strides[d];
            } else { k->kshape[j] = n; k->kin[j] = in->strides[d]; k->kout[j] = out->strides[d]; k->nk++; }
        }
    }
    if (!c->nr) { c->nr = 1; c->rshape[0] = 1; c->rin[0] = 0; }
    if (!k->nk) { k->nk = 1; k->kshape[0] = 1; k->kin[0] = 0; k->kout[0] = 0; }
    c->nred = efla_numel_of(c->nr, c->rshape);
    k->nout = efla_numel_of(k->nk, k->kshape);
}

/* Outputs [o0, o1), each reduced by one thread. */
static void reduce_outputs(const rctx *c, const klayout *k, const char *ib, char *ob, efla_dtype odt,
                           size_t oes, int64_t o0, int64_t o1) {
    int64_t kidx[EFLA_MAX_DIMS], ioff = 0, ooff = 0, rem = o0;
    for (int d = k->nk - 1; d >= 0; d--) {
        kidx[d] = rem % k->kshape[d];
        rem /= k->kshape[d];
        ioff += kidx[d] * k->kin[d];
        ooff += kidx[d] * k->kout[d];
    }
    for (int64_t o = o0; o < o1; o++) {
        rstate s = state_init(c);
        fold_range(c, ib + ioff * (int64_t)c->es, 0, c->nred, &s);
        store_result(c, ob + ooff * (int64_t)oes, odt, &s);
        for (int d = k->nk - 1; d >= 0; d--) {
            kidx[d]++;
            ioff += k->kin[d];
            ooff += k->kout[d];
            if (kidx[d] < k->kshape[d]) break;
            ioff -= k->kin[d] * k->kshape[d];
            ooff -= k->kout[d] * k->kshape[d];
            kidx[d] = 0;
        }
    }
}

/* sum/mean over outer dims of a float tensor whose kept elements are one contiguous run
 * of K: each thread owns a block of columns and adds whole rows into double accumulators. */
static void reduce_columns(const rctx *c, const klayout *k, const char *ib, char *ob, efla_dtype odt, size_t oes) {
    int64_t K = k->kshape[0];
    int T = nthreads();
    int64_t bs = (K + T - 1) / T;
    bs = (bs + 15) / 16 * 16;
    if (bs > 2048) bs = 2048;
    int64_t nblocks = (K + bs - 1) / bs;
    bool par = K * c->nred >= PAR_MIN && nblocks > 1;
#pragma omp parallel for schedule(static) if (par)
    for (int64_t blk = 0; blk < nblocks; blk++) {
        int64_t j0 = blk * bs, n = K - j0 < bs ? K - j0 : bs;
        double acc[2048], row[2048];
        memset(acc, 0, sizeof(double) * (size_t)n);
        int64_t ridx[EFLA_MAX_DIMS] = {0}, off = 0;
        for (int64_t r = 0; r < c->nred; r++) {
            load_d(row, ib + (off + j0) * (int64_t)c->es, n, 1, c->dt);
#pragma omp simd
            for (int64_t j = 0; j < n; j++) acc[j] += row[j];
            for (int d = c->nr - 1; d >= 0; d--) {
                ridx[d]++;
                off += c->rin[d];
                if (ridx[d] < c->rshape[d]) break;
                off -= c->rin[d] * c->rshape[d];
                ridx[d] = 0;
            }
        }
        for (int64_t j = 0; j < n; j++) {
            rstate s = state_init(c);
            s.v = acc[j];
            store_result(c, ob + (j0 + j) * k->kout[0] * (int64_t)oes, odt, &s);
        }
    }
}

int efla_cpu_reduce(efla_reduce_op op, efla_tensor *out, const efla_tensor *in, uint32_t reduce_mask, double param) {
    rctx c;
    klayout k;
    memset(&c, 0, sizeof c);
    c.op = op;
    c.p = param;
    c.dt = in->dtype;
    c.ints = !efla_dtype_is_floating(in->dtype);
    c.es = efla_dtype_size(in->dtype);
    if (c.ints && !(op == EFLA_SUM || op == EFLA_PROD || op == EFLA_MAX || op == EFLA_MIN ||
                    op == EFLA_ARGMAX || op == EFLA_ARGMIN))
        return efla_fail("reduce: %s is not defined for %s tensors on the cpu; cast to a float dtype first",
                         efla_reduce_name(op), efla_dtype_name(in->dtype));
    build_layout(out, in, reduce_mask, &c, &k);
    if (k.nout == 0) return 0;
    if (c.nred == 0 && (op == EFLA_MAX || op == EFLA_MIN || op == EFLA_ARGMAX || op == EFLA_ARGMIN))
        return efla_fail("%s: cannot reduce over zero elements (input shape %s)", efla_reduce_name(op), efla_tshape(in));

    const char *ib = efla_cpu_ptr(in);
    char *ob = efla_cpu_ptr(out);
    size_t oes = efla_dtype_size(out->dtype);
    int T = nthreads();
    int64_t work = k.nout * (c.nred ? c.nred : 1);

    if ((op == EFLA_SUM || op == EFLA_MEAN) && !c.ints && k.nk == 1 && k.kin[0] == 1 && k.kshape[0] >= 64 &&
        c.nred > 1) {
        reduce_columns(&c, &k, ib, ob, out->dtype, oes);
        return 0;
    }
    if (work < PAR_MIN || T == 1 || k.nout >= T) {
        /* one thread per block of outputs */
        bool par = work >= PAR_MIN && T > 1;
#pragma omp parallel if (par)
        {
            int t = 0, nt = 1;
#ifdef _OPENMP
            t = omp_get_thread_num();
            nt = omp_get_num_threads();
#endif
            int64_t o0 = k.nout * t / nt, o1 = k.nout * (t + 1) / nt;
            reduce_outputs(&c, &k, ib, ob, out->dtype, oes, o0, o1);
        }
        return 0;
    }
    /* Few outputs, long reductions: split each output's range across the threads and
     * combine the partial states in order (deterministic for a given thread count). */
    rstate *part = malloc(sizeof(rstate) * (size_t)T);
    if (!part) return efla_fail("reduce: out of memory");
    int64_t kidx[EFLA_MAX_DIMS] = {0}, ioff = 0, ooff = 0;
    for (int64_t o = 0; o < k.nout; o++) {
        const char *base = ib + ioff * (int64_t)c.es;
#pragma omp parallel num_threads(T)
        {
            int t = 0, nt = 1;
#ifdef _OPENMP
            t = omp_get_thread_num();
            nt = omp_get_num_threads();
#endif
            if (t == 0)
                for (int i = nt; i < T; i++) part[i] = state_init(&c);
            int64_t r0 = c.nred * t / nt, r1 = c.nred * (t + 1) / nt;
            part[t] = state_init(&c);
            fold_range(&c, base, r0, r1, &part[t]);
        }
        rstate s = state_init(&c);
        for (int i = 0; i < T; i++) state_combine(&c, &s, &part[i]);
        store_result(&c, ob + ooff * (int64_t)oes, out->dtype, &s);
        for (int d = k.nk - 1; d >= 0; d--) {
            kidx[d]++;
            ioff += k.kin[d];
            ooff += k.kout[d];
            if (kidx[d] < k.kshape[d]) break;
            ioff -= k.kin[d] * k.kshape[d];
            ooff -= k.kout[d] * k.kshape[d];
            kidx[d] = 0;
        }
    }
    free(part);
    return 0;
}

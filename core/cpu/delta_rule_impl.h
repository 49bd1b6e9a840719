/* delta_rule_impl.h: the CPU delta-rule kernels, written once for a real type R.
 * Included twice by delta_rule.c (R = float, R = double); see there for the overview and
 * docs/MATH.md for the maths.
 *
 * One "pair" is one (sequence, head): `len` tokens whose rows sit ld* elements apart in the
 * [B,T,H,d] buffers. Every function below works on one pair with one thread; the caller
 * runs pairs in parallel. S is the dk x dv state, row-major (row i = key coordinate i).
 *
 * Notation per chunk of n <= C tokens (rows = tokens): K, Q (n x dk), V (n x dv), a (n),
 * S the state entering the chunk.
 *   G  = K K^T (lower), L = strictly-lower(diag(a) G)
 *   R  = V - K S                  (row t: v_t - S^T k_t, as if S had not moved in the chunk)
 *   V' = (I + L)^-1 diag(a) R     (row t: alpha_t (v_t - S_{t-1}^T k_t); a triangular solve)
 *   O  = scale (Q S + tril_incl(Q K^T) V')
 *   S <- S + K^T V'
 * (docs/MATH.md §4 writes V' = U - W S with W = T K, U = T V, T = (I+L)^-1 diag(a); that is
 * the same matrix, T (V - K S). Solving with (I+L) directly skips forming T, W and U.)
 *
 * Gated calls (docs/MATH.md §6: a decay d_t = e^{g_t} and a value step b_t = alpha'_t) run
 *   S_t = d_t S_{t-1} + k_t u_t,   u_t = b_t v_t - a_t d_t S_{t-1}^T k_t,
 * the chunked forward with decay ratios e^{Gc_i - Gc_j} (Gc = cumulative g inside the chunk),
 * and the backward of the algorithm that was asked: F(bwd_chunked_gated) (the WY form with
 * the decay) or F(bwd_recurrent_gated), either from either forward's states.
 */
#define DR_CAT2(a, b) a##b
#define DR_CAT(a, b) DR_CAT2(a, b)
#define F(name) DR_CAT(name, DR_SFX)

/* ---- small dense kernels ------------------------------------------------------------------
 * Everything here is at most 128 x 128 and sits in L1/L2, so a register-tiled loop nest
 * beats a BLAS call (whose packing and dispatch cost as much as the work at these sizes,
 * and whose triangular solve is slow on small matrices). V is a vector of R as wide as the
 * target's registers (DR_VBYTES, set in delta_rule.c: a wider one than the machine has
 * spills to the stack and runs ~10x slower). */
typedef R F(vec) __attribute__((vector_size(DR_VBYTES), aligned(sizeof(R)), may_alias));
#define V F(vec)
#define VL ((int64_t)(DR_VBYTES / sizeof(R)))
#define VLOAD(p) (*(const V *)(p))
#define VSTORE(p, x) (*(V *)(p) = (x))

static inline R F(dot)(const R *restrict x, const R *restrict y, int64_t n) {
    R s = 0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < n; i++) s += x[i] * y[i];
    return s;
}

/* rows of n x d (row stride ld) -> dst (row stride d), each row times a[i*lda] (or 1) */
static inline void F(copy_rows)(R *restrict dst, const R *restrict src, int64_t n, int64_t d,
                                int64_t ld, const R *restrict a, int64_t lda) {
    for (int64_t i = 0; i < n; i++) {
        R s = a ? a[i * lda] : (R)1;
        const R *restrict sr = src + i * ld;
        R *restrict dr = dst + i * d;
        for (int64_t j = 0; j < d; j++) dr[j] = s * sr[j];
    }
}

/* dst (cols x rows, row stride ldd) = src^T, src rows x cols with row stride lds.
 * Whole VL x VL blocks go through registers (log2(VL) rounds of two-vector shuffles that
 * interleave blocks of 1, 2, 4, ... elements); the ragged edges element by element. */
static void F(transpose)(R *restrict dst, int64_t ldd, const R *restrict src, int64_t lds,
                         int64_t rows, int64_t cols) {
    int64_t i0 = 0;
#if defined(__GNUC__) && !defined(__clang__)
    typedef DR_INT IV __attribute__((vector_size(DR_VBYTES)));
    /* the interleave masks of each round: lo, hi for blocks of 1, 2, 4 (, 8) */
    static const DR_INT masks[][VL] = DR_TRANSPOSE_MASKS;
    enum { ROUNDS = sizeof masks / sizeof masks[0] / 2 };
    IV lo[ROUNDS], hi[ROUNDS];
    for (int st = 0; st < ROUNDS; st++) {
        memcpy(&lo[st], masks[2 * st], sizeof(IV));
        memcpy(&hi[st], masks[2 * st + 1], sizeof(IV));
    }
    for (; i0 + VL <= rows; i0 += VL) {
        int64_t j0 = 0;
        for (; j0 + VL <= cols; j0 += VL) {
            V r[VL];
#pragma GCC unroll 16
            for (int i = 0; i < VL; i++) r[i] = VLOAD(src + (i0 + i) * lds + j0);
#pragma GCC unroll 4
            for (int st = 0; st < ROUNDS; st++) {
                const int b = 1 << st;
#pragma GCC unroll 16
                for (int i = 0; i < VL; i++)
                    if (!(i & b)) {
                        V x = r[i], y = r[i + b];
                        r[i] = __builtin_shuffle(x, y, lo[st]);
                        r[i + b] = __builtin_shuffle(x, y, hi[st]);
                    }
            }
#pragma GCC unroll 16
            for (int j = 0; j < VL; j++) VSTORE(dst + (j0 + j) * ldd + i0, r[j]);
        }
        for (int64_t i = i0; i < i0 + VL; i++)
            for (int64_t j = j0; j < cols; j++) dst[j * ldd + i] = src[i * lds + j];
    }
#endif
    for (int64_t i = i0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++) dst[j * ldd + i] = src[i * lds + j];
}

/* One MR x (NV vectors) tile of C = beta C + alpha op(A) B over p in [p0, p1).
 * A(i,p) = A[i*sai + p*sap] (so a transposed A costs nothing); B row-major. */
static inline __attribute__((always_inline)) void
F(tile)(const int MR, const int NV, int64_t p0, int64_t p1, const R *restrict A, int64_t sai,
        int64_t sap, const R *restrict B, int64_t ldb, R *restrict C, int64_t ldc, R alpha, R beta) {
    V acc[4][4];   /* fixed size: a VLA would not live in registers */
    for (int i = 0; i < MR; i++)
        for (int v = 0; v < NV; v++) acc[i][v] = (V){0};
    for (int64_t p = p0; p < p1; p++) {
        const R *b = B + p * ldb;
        V bv[4];
        for (int v = 0; v < NV; v++) bv[v] = VLOAD(b + v * VL);
        for (int i = 0; i < MR; i++) {
            const R a = A[i * sai + p * sap];
            for (int v = 0; v < NV; v++) acc[i][v] += a * bv[v];
        }
    }
    for (int i = 0; i < MR; i++)
        for (int v = 0; v < NV; v++) {
            R *c = C + i * ldc + v * VL;
            VSTORE(c, beta == 0 ? alpha * acc[i][v] : beta * VLOAD(c) + alpha * acc[i][v]);
        }
}

/* C (M x N) = beta C + alpha op(A) B, op(A) = A or A^T (ta), A(i,p) / B(p,j) row-major.
 * tri_a = 1: op(A) is lower triangular (p <= i), 2: upper (p >= i); the other entries must
 * be zero, they are skipped. tri_c = 1: only C's lower triangle (j <= i) is wanted; the
 * columns past it may be left unwritten. beta == 0 never reads C. */
static void F(mm)(int ta, int64_t M, int64_t N, int64_t K, R alpha, const R *A, int64_t lda,
                  const R *B, int64_t ldb, R beta, R *C, int64_t ldc, int tri_a, int tri_c) {
    const int64_t sai = ta ? 1 : lda, sap = ta ? lda : 1;
    for (int64_t i0 = 0; i0 < M; i0 += 4) {
        const int64_t mr = M - i0 < 4 ? M - i0 : 4;
        const int64_t p0 = tri_a == 2 ? i0 : 0;
        const int64_t p1 = tri_a == 1 ? (K < i0 + mr ? K : i0 + mr) : K;
        int64_t nmax = N;
        if (tri_c) {
            nmax = (i0 + mr + VL - 1) / VL * VL;
            if (nmax > N) nmax = N;
        }
        const R *Ai = A + i0 * sai;
        R *Ci = C + i0 * ldc;
        int64_t j0 = 0;
        if (mr == 4) {
            for (; j0 + DR_NV * VL <= nmax; j0 += DR_NV * VL)
                F(tile)(4, DR_NV, p0, p1, Ai, sai, sap, B + j0, ldb, Ci + j0, ldc, alpha, beta);
            for (; j0 + VL <= nmax; j0 += VL) F(tile)(4, 1, p0, p1, Ai, sai, sap, B + j0, ldb, Ci + j0, ldc, alpha, beta);
        } else {
            for (int64_t i = 0; i < mr; i++) {
                int64_t j = j0;
                for (; j + DR_NV * VL <= nmax; j += DR_NV * VL)
                    F(tile)(1, DR_NV, p0, p1, Ai + i * sai, sai, sap, B + j, ldb, Ci + i * ldc + j, ldc, alpha, beta);
                for (; j + VL <= nmax; j += VL)
                    F(tile)(1, 1, p0, p1, Ai + i * sai, sai, sap, B + j, ldb, Ci + i * ldc + j, ldc, alpha, beta);
            }
            j0 = nmax / VL * VL;
        }
        for (int64_t i = 0; i < mr; i++)      /* columns past the last whole vector */
            for (int64_t j = j0; j < nmax; j++) {
                R acc = 0;
                for (int64_t p = p0; p < p1; p++) acc += Ai[i * sai + p * sap] * B[p * ldb + j];
                R *c = Ci + i * ldc + j;
                *c = beta == 0 ? alpha * acc : beta * *c + alpha * acc;
            }
    }
}

/* X (n x d, row stride ldx) <- (I + L)^-1 X      (trans = 0: forward substitution, L given)
 *                              (I + L)^-T X      (trans = 1: backward substitution, given
 *                                                 U = L^T, so that rows are read, not columns)
 * tri holds L strictly lower / U strictly upper (row stride ldl), unit diagonal implied. */
static inline __attribute__((always_inline)) void
F(solve_cols)(const int NV, int trans, int64_t n, const R *restrict tri, int64_t ldl, R *restrict X,
              int64_t ldx) {
    for (int64_t s = 0; s < n; s++) {
        const int64_t i = trans ? n - 1 - s : s;
        V acc[4];
        for (int v = 0; v < NV; v++) acc[v] = VLOAD(X + i * ldx + v * VL);
        if (!trans)
            for (int64_t j = 0; j < i; j++) {
                const R l = tri[i * ldl + j];
                for (int v = 0; v < NV; v++) acc[v] -= l * VLOAD(X + j * ldx + v * VL);
            }
        else
            for (int64_t j = i + 1; j < n; j++) {
                const R l = tri[i * ldl + j];
                for (int v = 0; v < NV; v++) acc[v] -= l * VLOAD(X + j * ldx + v * VL);
            }
        for (int v = 0; v < NV; v++) VSTORE(X + i * ldx + v * VL, acc[v]);
    }
}

static void F(solve)(int trans, int64_t n, int64_t d, const R *tri, int64_t ldl, R *X, int64_t ldx) {
    int64_t j0 = 0;
    for (; j0 + 4 * VL <= d; j0 += 4 * VL) F(solve_cols)(4, trans, n, tri, ldl, X + j0, ldx);
    for (; j0 + VL <= d; j0 += VL) F(solve_cols)(1, trans, n, tri, ldl, X + j0, ldx);
    for (; j0 < d; j0++)
        for (int64_t s = 0; s < n; s++) {
            const int64_t i = trans ? n - 1 - s : s;
            R acc = X[i * ldx + j0];
            if (!trans) for (int64_t j = 0; j < i; j++) acc -= tri[i * ldl + j] * X[j * ldx + j0];
            else for (int64_t j = i + 1; j < n; j++) acc -= tri[i * ldl + j] * X[j * ldx + j0];
            X[i * ldx + j0] = acc;
        }
}

/* ---- chunked forward --------------------------------------------------------------------- */
/* Runs one pair through all its chunks. S: in = initial state, out = final state.
 * o may be NULL (state-only pass, used by the backward's recompute). cs (may be NULL)
 * receives the state entering chunk c at cs + c*cs_stride. bv, lg: the gated inputs or
 * NULL. work: F(work_fwd). */
static void F(fwd_chunked)(const efla_delta_rule_args *A, int64_t len, const R *q, const R *k,
                           const R *v, const R *al, const R *bv, const R *lg, R *o, R *S, R *cs,
                           int64_t cs_stride, R *work) {
    const int64_t dk = A->dk, dv = A->dv, C = A->chunk_size;
    const int64_t ldk = A->H * dk, ldv = A->H * dv, lda = A->H;
    const R scale = (R)A->scale;
    R *G = work, *Am = G + C * C, *Vp = Am + C * C, *Kt = Vp + C * dv, *Gc = Kt + dk * C;
    for (int64_t c0 = 0, ci = 0; c0 < len; c0 += C, ci++) {
        const int64_t n = len - c0 < C ? len - c0 : C;
        const R *Kc = k + c0 * ldk, *Qc = q + c0 * ldk, *Vc = v + c0 * ldv, *ac = al + c0 * lda;
        if (cs) memcpy(cs + ci * cs_stride, S, sizeof(R) * (size_t)(dk * dv));
        if (lg) {   /* Gc_i = g_0 + ... + g_i inside the chunk; decay ratios e^{Gc_i - Gc_j} */
            R acc = 0;
            for (int64_t i = 0; i < n; i++) Gc[i] = acc += lg[(c0 + i) * lda];
        }
        F(transpose)(Kt, C, Kc, ldk, n, dk);
        /* L = strictly-lower(diag(a) K K^T) (gated: times e^{Gc_i - Gc_j}); unit diagonal implied */
        F(mm)(0, n, n, dk, 1, Kc, ldk, Kt, C, 0, G, C, 0, 1);
        for (int64_t i = 1; i < n; i++) {
            R ai = ac[i * lda];
            if (!lg)
                for (int64_t j = 0; j < i; j++) G[i * C + j] *= ai;
            else
                for (int64_t j = 0; j < i; j++) G[i * C + j] *= ai * (R)exp((double)(Gc[i] - Gc[j]));
        }
        if (!lg) {
            /* V' = (I+L)^-1 diag(a) (V - K S) */
            F(copy_rows)(Vp, Vc, n, dv, ldv, NULL, 0);
            F(mm)(0, n, dv, dk, -1, Kc, ldk, S, dv, 1, Vp, dv, 0, 0);
            for (int64_t i = 0; i < n; i++) {
                R ai = ac[i * lda];
                for (int64_t j = 0; j < dv; j++) Vp[i * dv + j] *= ai;
            }
        } else {
            /* V' = (I+L)^-1 (diag(b) V - diag(a e^{Gc}) K S) */
            F(mm)(0, n, dv, dk, 1, Kc, ldk, S, dv, 0, Vp, dv, 0, 0);
            for (int64_t i = 0; i < n; i++) {
                const R b = bv[(c0 + i) * lda], ad = ac[i * lda] * (R)exp((double)Gc[i]);
                for (int64_t j = 0; j < dv; j++) Vp[i * dv + j] = b * Vc[i * ldv + j] - ad * Vp[i * dv + j];
            }
        }
        F(solve)(0, n, dv, G, C, Vp, dv);
        if (o) {
            /* O = scale (Q S + tril_incl(Q K^T) V')  (gated: rows of Q S times e^{Gc_i}, entries
             * of Q K^T times e^{Gc_i - Gc_j}) */
            R *Oc = o + c0 * ldv;
            F(mm)(0, n, dv, dk, scale, Qc, ldk, S, dv, 0, Oc, ldv, 0, 0);
            F(mm)(0, n, n, dk, scale, Qc, ldk, Kt, C, 0, Am, C, 0, 1);
            for (int64_t i = 0; i < n; i++)
                for (int64_t j = i + 1; j < n; j++) Am[i * C + j] = 0;
            if (lg)
                for (int64_t i = 0; i < n; i++) {
                    const R e = (R)exp((double)Gc[i]);
                    for (int64_t j = 0; j < dv; j++) Oc[i * ldv + j] *= e;
                    for (int64_t j = 0; j <= i; j++) Am[i * C + j] *= (R)exp((double)(Gc[i] - Gc[j]));
                }
            F(mm)(0, n, dv, n, 1, Am, C, Vp, dv, 1, Oc, ldv, 1, 0);
        }
        if (lg) {   /* S <- e^{Gc_n} S + sum_j e^{Gc_n - Gc_j} k_j v'_j^T */
            const R last = Gc[n - 1], e = (R)exp((double)last);
            for (int64_t i = 0; i < dk * dv; i++) S[i] *= e;
            for (int64_t i = 0; i < n; i++) {
                const R r = (R)exp((double)(last - Gc[i]));
                for (int64_t j = 0; j < dv; j++) Vp[i * dv + j] *= r;
            }
        }
        /* S <- S + K^T V' */
        F(mm)(1, dk, dv, n, 1, Kc, ldk, Vp, dv, 1, S, dv, 0, 0);
    }
}

/* ---- chunked backward ----------------------------------------------------------------------- */
/* states: the state entering chunk c at states + c*st_stride (saved or recomputed).
 * dS: in = gradient of the final state, out = gradient of the initial state.
 * work: F(work_bwd). */
static void F(bwd_chunked)(const efla_delta_rule_args *A, int64_t len, const R *q, const R *k,
                           const R *v, const R *al, const R *states, int64_t st_stride,
                           const R *d_o, R *dq, R *grad_k, R *grad_v, R *dal, R *dS, R *work) {
    const int64_t dk = A->dk, dv = A->dv, C = A->chunk_size;
    const int64_t ldk = A->H * dk, ldv = A->H * dv, lda = A->H;
    const R scale = (R)A->scale;
    R *Gk = work, *Lm = Gk + C * C, *Mq = Lm + C * C, *dM = Mq + C * C, *E = dM + C * C;
    R *Rr = E + C * C, *Vp = Rr + C * dv, *dOs = Vp + C * dv, *dVp = dOs + C * dv;
    R *Kt = dVp + C * dv, *Vpt = Kt + dk * C, *St = Vpt + dv * C, *dSt = St + dv * dk;
    const int64_t nch = (len + C - 1) / C;
    for (int64_t ci = nch - 1; ci >= 0; ci--) {
        const int64_t c0 = ci * C;
        const int64_t n = len - c0 < C ? len - c0 : C;
        const R *Kc = k + c0 * ldk, *Qc = q + c0 * ldk, *Vc = v + c0 * ldv, *ac = al + c0 * lda;
        const R *S = states + ci * st_stride;
        R *dQc = dq + c0 * ldk, *dKc = grad_k + c0 * ldk, *dVc = grad_v + c0 * ldv, *dac = dal + c0 * lda;
        /* recompute the chunk's forward quantities */
        F(transpose)(Kt, C, Kc, ldk, n, dk);
        F(transpose)(St, dk, S, dv, dk, dv);
        F(mm)(0, n, n, dk, 1, Kc, ldk, Kt, C, 0, Gk, C, 0, 1);
        for (int64_t i = 1; i < n; i++) {
            R ai = ac[i * lda];
            for (int64_t j = 0; j < i; j++) Lm[i * C + j] = ai * Gk[i * C + j];
        }
        F(copy_rows)(Rr, Vc, n, dv, ldv, NULL, 0);
        F(mm)(0, n, dv, dk, -1, Kc, ldk, S, dv, 1, Rr, dv, 0, 0);
        F(copy_rows)(Vp, Rr, n, dv, dv, ac, lda);
        F(solve)(0, n, dv, Lm, C, Vp, dv);
        F(transpose)(Vpt, C, Vp, dv, n, dv);
        F(mm)(0, n, n, dk, 1, Qc, ldk, Kt, C, 0, Mq, C, 0, 1);
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = i + 1; j < n; j++) Mq[i * C + j] = 0;
        F(copy_rows)(dOs, d_o + c0 * ldv, n, dv, ldv, NULL, 0);
        for (int64_t i = 0; i < n * dv; i++) dOs[i] *= scale;
        /* O = Q S + M V' (scaled):  dQ = dOs S^T + dM K,  dM = tril_incl(dOs V'^T) */
        F(mm)(0, n, dk, dv, 1, dOs, dv, St, dk, 0, dQc, ldk, 0, 0);
        F(mm)(0, n, n, dv, 1, dOs, dv, Vpt, C, 0, dM, C, 0, 1);
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = i + 1; j < n; j++) dM[i * C + j] = 0;
        F(mm)(0, n, dk, n, 1, dM, C, Kc, ldk, 1, dQc, ldk, 1, 0);
        /* dK = dM^T Q + V' dS^T ;  dV' = M^T dOs + K dS   (dS: gradient of the state after the chunk) */
        F(transpose)(dSt, dk, dS, dv, dk, dv);
        F(mm)(1, n, dk, n, 1, dM, C, Qc, ldk, 0, dKc, ldk, 2, 0);
        F(mm)(0, n, dk, dv, 1, Vp, dv, dSt, dk, 1, dKc, ldk, 0, 0);
        F(mm)(1, n, dv, n, 1, Mq, C, dOs, dv, 0, dVp, dv, 2, 0);
        F(mm)(0, n, dv, dk, 1, Kc, ldk, dS, dv, 1, dVp, dv, 0, 0);
        /* the state before the chunk feeds O directly: dS += Q^T dOs */
        F(mm)(1, dk, dv, n, 1, Qc, ldk, dOs, dv, 1, dS, dv, 0, 0);
        /* (I+L) V' = diag(a) R:  Y = (I+L)^-T dV';  dR = diag(a) Y;  da_i = Y_i.R_i;
         * dL = -Y V'^T (strictly lower) -> da_i += sum_j dL_ij G_ij, dK += P K + P^T K, P = diag(a) dL */
        F(transpose)(Mq, C, Lm, C, n, n);      /* Mq is free now: it holds L^T */
        F(solve)(1, n, dv, Mq, C, dVp, dv);
        F(mm)(0, n, n, dv, 1, dVp, dv, Vpt, C, 0, E, C, 0, 1);
        for (int64_t i = 0; i < n; i++) {
            const R ai = ac[i * lda];
            R *restrict e = E + i * C;
            const R *restrict g = Gk + i * C;
            R da = 0;
#pragma omp simd reduction(+ : da)
            for (int64_t j = 0; j < i; j++) {
                R dl = -e[j];
                da += dl * g[j];
                e[j] = ai * dl;                /* P = diag(a) dL, strictly lower */
            }
            /* zero the rest of the row: the triangular products below read the corners of
             * their 4-row tiles */
            for (int64_t j = i; j < n; j++) e[j] = 0;
            dac[i * lda] = da + F(dot)(dVp + i * dv, Rr + i * dv, dv);
        }
        F(mm)(0, n, dk, n, 1, E, C, Kc, ldk, 1, dKc, ldk, 1, 0);   /* P K   */
        F(mm)(1, n, dk, n, 1, E, C, Kc, ldk, 1, dKc, ldk, 2, 0);   /* P^T K */
        /* R = V - K S:  dV = dR,  dK -= dR S^T,  dS -= K^T dR */
        for (int64_t i = 0; i < n; i++) {
            R ai = ac[i * lda];
            for (int64_t j = 0; j < dv; j++) dVc[i * ldv + j] = ai * dVp[i * dv + j];
        }
        F(mm)(0, n, dk, dv, -1, dVc, ldv, St, dk, 1, dKc, ldk, 0, 0);
        F(mm)(1, dk, dv, n, -1, Kc, ldk, dVc, ldv, 1, dS, dv, 0, 0);
    }
}

/* ---- recurrent forward ------------------------------------------------------------------------ */
/* One token's state update fused with the output and the next token's S^T k: a single pass
 * over S per token, done in column blocks of W so the accumulators stay in registers.
 * Inlined with a literal W so the j loops unroll into whole vectors. */
static inline __attribute__((always_inline)) void
F(rec_cols)(R *restrict S, int64_t dk, int64_t dv, int64_t jb, const int W, const int decays, R dec,
            const R *restrict kt, const R *restrict qt, const R *restrict kn, const R *restrict w,
            R *restrict oacc_out, R *restrict uacc_out) {
    R oacc[128 / sizeof(R)], uacc[128 / sizeof(R)];   /* W <= 128 / sizeof(R) */
    for (int j = 0; j < W; j++) { oacc[j] = 0; uacc[j] = 0; }
    for (int64_t i = 0; i < dk; i++) {
        R *restrict row = S + i * dv + jb;
        const R ki = kt[i], qi = qt[i], kni = kn[i];
        for (int j = 0; j < W; j++) {
            R r = (decays ? dec * row[j] : row[j]) + ki * w[jb + j];
            row[j] = r;
            oacc[j] += qi * r;
            uacc[j] += kni * r;
        }
    }
    for (int j = 0; j < W; j++) { oacc_out[jb + j] = oacc[j]; uacc_out[jb + j] = uacc[j]; }
}

/* One pass over S for one token: S = dec S + kt w^T, ob = S^T qt, ub = S^T kn (after the
 * update); dec = 1 (ungated) skips the multiply. Out of line on purpose: the first token's
 * S^T k goes through this very code (with kt = 0), so that the rounding of u never depends
 * on where a sequence was cut. */
static __attribute__((noinline)) void F(rec_pass)(R *restrict S, int64_t dk, int64_t dv, R dec,
                                                  const R *restrict kt, const R *restrict qt,
                                                  const R *restrict kn, const R *restrict w,
                                                  R *restrict ob, R *restrict ub) {
    enum { WB = 2 * VL };   /* columns per block: 2 vectors */
    int64_t jb = 0;
    if (dec == (R)1) {
        for (; jb + WB <= dv; jb += WB) F(rec_cols)(S, dk, dv, jb, WB, 0, dec, kt, qt, kn, w, ob, ub);
        for (; jb + VL <= dv; jb += VL) F(rec_cols)(S, dk, dv, jb, VL, 0, dec, kt, qt, kn, w, ob, ub);
        for (; jb < dv; jb++) F(rec_cols)(S, dk, dv, jb, 1, 0, dec, kt, qt, kn, w, ob, ub);
    } else {
        for (; jb + WB <= dv; jb += WB) F(rec_cols)(S, dk, dv, jb, WB, 1, dec, kt, qt, kn, w, ob, ub);
        for (; jb + VL <= dv; jb += VL) F(rec_cols)(S, dk, dv, jb, VL, 1, dec, kt, qt, kn, w, ob, ub);
        for (; jb < dv; jb++) F(rec_cols)(S, dk, dv, jb, 1, 1, dec, kt, qt, kn, w, ob, ub);
    }
}

/* The gate of token t: its decay e^{g_t} (1 without a gate) and its value step (alpha_t
 * without a gate). */
static inline R F(decay_at)(const R *lg, int64_t i) { return lg ? (R)exp((double)lg[i]) : (R)1; }
static inline R F(vstep_at)(const R *bv, const R *al, int64_t i) { return bv ? bv[i] : al[i]; }

/* u = v - S^T k (ungated) or b v - a d S^T k (gated) of the token at gate index i, from
 * sk = S^T k (S = the state before the token). */
static inline void F(update_row)(R *restrict u, const R *restrict v, const R *restrict sk, const R *al,
                                 const R *bv, const R *lg, int64_t i, int64_t dv) {
    if (!lg) {
        for (int64_t j = 0; j < dv; j++) u[j] = v[j] - sk[j];
        return;
    }
    const R b = F(vstep_at)(bv, al, i), ad = al[i] * F(decay_at)(lg, i);
    for (int64_t j = 0; j < dv; j++) u[j] = b * v[j] - ad * sk[j];
}

/* Same as fwd_chunked's contract, one token at a time (docs/MATH.md §1; gated: §6). bv, lg:
 * the gated inputs or NULL. u holds v - S^T k (ungated, w = a u) or the whole update row
 * b v - a d S^T k (gated, w = u). work: 5*dv + dk. */
static void F(fwd_recurrent)(const efla_delta_rule_args *A, int64_t len, const R *q, const R *k,
                             const R *v, const R *al, const R *bv, const R *lg, R *o, R *S, R *cs,
                             int64_t cs_stride, R *work) {
    const int64_t dk = A->dk, dv = A->dv, C = A->chunk_size;
    const int64_t ldk = A->H * dk, ldv = A->H * dv, lda = A->H;
    const R scale = (R)A->scale;
    R *u = work, *w = u + dv, *ob = w + dv, *ub = ob + dv, *zero = ub + dv;
    if (len <= 0) return;
    for (int64_t i = 0; i < dk; i++) zero[i] = 0;
    for (int64_t j = 0; j < dv; j++) w[j] = 0;
    /* u = v_0 - S^T k_0 (a pass that adds 0 to S) */
    F(rec_pass)(S, dk, dv, 1, zero, zero, k, w, ob, ub);
    F(update_row)(u, v, ub, al, bv, lg, 0, dv);
    for (int64_t t = 0; t < len; t++) {
        if (cs && t % C == 0) memcpy(cs + (t / C) * cs_stride, S, sizeof(R) * (size_t)(dk * dv));
        const R a = al[t * lda];
        const R *kt = k + t * ldk, *qt = q + t * ldk;
        const R *kn = t + 1 < len ? kt + ldk : zero;
        for (int64_t j = 0; j < dv; j++) w[j] = lg ? u[j] : a * u[j];
        F(rec_pass)(S, dk, dv, F(decay_at)(lg, t * lda), kt, qt, kn, w, ob, ub);
        if (o) {
            R *ot = o + t * ldv;
            for (int64_t j = 0; j < dv; j++) ot[j] = scale * ob[j];
        }
        if (t + 1 < len) F(update_row)(u, v + (t + 1) * ldv, ub, al, bv, lg, (t + 1) * lda, dv);
    }
}

/* ---- recurrent backward ------------------------------------------------------------------------ */
/* Reverse scan over blocks of C tokens: each block's states are recomputed from its
 * checkpoint (states + c*st_stride) with the forward's own pass (so they are the forward's
 * states bit for bit), then the tokens run backwards (docs/MATH.md §1):
 *   G += scale q do^T;  dq = scale S_t do;  dalpha = k^T G u;  du = alpha G^T k;
 *   dk = alpha G u - S_{t-1} du;  dv = du;  G -= k du^T          (u = v - S_{t-1}^T k)
 * work: F(work_bwd). */
static void F(bwd_recurrent)(const efla_delta_rule_args *A, int64_t len, const R *q, const R *k,
                             const R *v, const R *al, const R *states, int64_t st_stride,
                             const R *d_o, R *dq, R *grad_k, R *grad_v, R *dal, R *G, R *work) {
    const int64_t dk = A->dk, dv = A->dv, C = A->chunk_size, sz = dk * dv;
    const int64_t ldk = A->H * dk, ldv = A->H * dv, lda = A->H;
    const R scale = (R)A->scale;
    R *Sb = work, *U = Sb + (C + 1) * sz, *dos = U + C * dv, *gk = dos + dv, *gu = gk + dv;
    R *w = gu + dk, *ob = w + dv, *ub = ob + dv, *zero = ub + dv;   /* zero: max(dk, dv) */
    for (int64_t i = 0; i < (dk > dv ? dk : dv); i++) zero[i] = 0;
    const int64_t nch = (len + C - 1) / C;
    for (int64_t ci = nch - 1; ci >= 0; ci--) {
        const int64_t c0 = ci * C;
        const int64_t n = len - c0 < C ? len - c0 : C;
        /* recompute S_0..S_n of the block and u_t, exactly as fwd_recurrent did */
        memcpy(Sb, states + ci * st_stride, sizeof(R) * (size_t)sz);
        F(rec_pass)(Sb, dk, dv, 1, zero, zero, k + c0 * ldk, zero, ob, ub);
        for (int64_t c = 0; c < dv; c++) U[c] = v[c0 * ldv + c] - ub[c];
        for (int64_t j = 0; j < n; j++) {
            const int64_t t = c0 + j;
            const R a = al[t * lda];
            R *Sn = Sb + (j + 1) * sz;
            memcpy(Sn, Sn - sz, sizeof(R) * (size_t)sz);
            for (int64_t c = 0; c < dv; c++) w[c] = a * U[j * dv + c];
            F(rec_pass)(Sn, dk, dv, 1, k + t * ldk, zero, t + 1 < len ? k + (t + 1) * ldk : zero, w, ob, ub);
            if (j + 1 < n)
                for (int64_t c = 0; c < dv; c++) U[(j + 1) * dv + c] = v[(t + 1) * ldv + c] - ub[c];
        }
        for (int64_t j = n - 1; j >= 0; j--) {
            const int64_t t = c0 + j;
            const R *kt = k + t * ldk, *qt = q + t * ldk, *u = U + j * dv;
            const R *Sp = Sb + j * sz, *St = Sp + sz;
            const R a = al[t * lda];
            R *dqt = dq + t * ldk, *dkt = grad_k + t * ldk, *dvt = grad_v + t * ldv;
            for (int64_t c = 0; c < dv; c++) { dos[c] = scale * d_o[t * ldv + c]; gk[c] = 0; }
            /* pass 1: G += q dos^T; dq = S_t dos; gu = G u; gk = G^T k */
            for (int64_t i = 0; i < dk; i++) {
                R *restrict g = G + i * dv;
                const R *restrict srow = St + i * dv;
                const R qi = qt[i], ki = kt[i];
                R sq = 0, su = 0;
#pragma omp simd reduction(+ : sq, su)
                for (int64_t c = 0; c < dv; c++) {
                    R gv = g[c] + qi * dos[c];
                    g[c] = gv;
                    sq += srow[c] * dos[c];
                    su += gv * u[c];
                    gk[c] += ki * gv;
                }
                dqt[i] = sq;
                gu[i] = su;
            }
            R da = 0;
            for (int64_t i = 0; i < dk; i++) da += kt[i] * gu[i];
            dal[t * lda] = da;
            for (int64_t c = 0; c < dv; c++) { gk[c] *= a; dvt[c] = gk[c]; }   /* gk is now du */
            /* pass 2: dk = a G u - S_{t-1} du;  G -= k du^T */
            for (int64_t i = 0; i < dk; i++) {
                R *restrict g = G + i * dv;
                const R *restrict prow = Sp + i * dv;
                const R ki = kt[i];
                R sd = 0;
#pragma omp simd reduction(+ : sd)
                for (int64_t c = 0; c < dv; c++) {
                    sd += prow[c] * gk[c];
                    g[c] -= ki * gk[c];
                }
                dkt[i] = a * gu[i] - sd;
            }
        }
    }
}

/* ---- gated backward (docs/MATH.md §6) ------------------------------------------------------------ */
/* The recurrent backward of S_t = d S_{t-1} + k u^T, u = b v - a p, p = d S_{t-1}^T k,
 * o_t = scale S_t^T q, from the states entering each C-token block (either forward's).
 * With G = dL/dS_t (after G += q dos^T):
 *   dq = S_t dos;  du = G^T k;  dv = b du;  db = v.du;  da = -p.du = -d k^T S_{t-1} du
 *   dk = G u - a d S_{t-1} du;  dd = <G, S_{t-1}> - a k^T S_{t-1} du;  dg = d dd
 *   G <- d (G - a k du^T)                                  (the gradient of S_{t-1})
 * The block's states are recomputed with fwd_recurrent's own pass. work: F(work_bwd). */
static void F(bwd_recurrent_gated)(const efla_delta_rule_args *A, int64_t len, const R *q, const R *k,
                                   const R *v, const R *al, const R *bv, const R *lg,
                                   const R *states, int64_t st_stride, const R *d_o, R *dq,
                                   R *grad_k, R *grad_v, R *dal, R *dbv, R *dlg, R *G, R *work) {
    const int64_t dk = A->dk, dv = A->dv, C = A->chunk_size, sz = dk * dv;
    const int64_t ldk = A->H * dk, ldv = A->H * dv, lda = A->H;
    const R scale = (R)A->scale;
    R *Sb = work, *U = Sb + (C + 1) * sz, *dos = U + C * dv, *du = dos + dv, *gu = du + dv;
    R *ob = gu + dk, *ub = ob + dv, *zero = ub + dv;   /* zero: max(dk, dv) */
    for (int64_t i = 0; i < (dk > dv ? dk : dv); i++) zero[i] = 0;
    const int64_t nch = (len + C - 1) / C;
    for (int64_t ci = nch - 1; ci >= 0; ci--) {
        const int64_t c0 = ci * C;
        const int64_t n = len - c0 < C ? len - c0 : C;
        /* recompute S_0..S_n of the block and every token's update row u (as fwd_recurrent) */
        memcpy(Sb, states + ci * st_stride, sizeof(R) * (size_t)sz);
        F(rec_pass)(Sb, dk, dv, 1, zero, zero, k + c0 * ldk, zero, ob, ub);
        F(update_row)(U, v + c0 * ldv, ub, al, bv, lg, c0 * lda, dv);
        for (int64_t j = 0; j < n; j++) {
            const int64_t t = c0 + j;
            R *Sn = Sb + (j + 1) * sz;
            memcpy(Sn, Sn - sz, sizeof(R) * (size_t)sz);
            F(rec_pass)(Sn, dk, dv, F(decay_at)(lg, t * lda), k + t * ldk, zero,
                        t + 1 < len ? k + (t + 1) * ldk : zero, U + j * dv, ob, ub);
            if (j + 1 < n) F(update_row)(U + (j + 1) * dv, v + (t + 1) * ldv, ub, al, bv, lg, (t + 1) * lda, dv);
        }
        for (int64_t j = n - 1; j >= 0; j--) {
            const int64_t t = c0 + j;
            const R *kt = k + t * ldk, *qt = q + t * ldk, *vt = v + t * ldv, *u = U + j * dv;
            const R *Sp = Sb + j * sz, *St = Sp + sz;
            const R a = al[t * lda], d = F(decay_at)(lg, t * lda);
            R *dqt = dq + t * ldk, *dkt = grad_k + t * ldk, *dvt = grad_v + t * ldv;
            for (int64_t c = 0; c < dv; c++) { dos[c] = scale * d_o[t * ldv + c]; du[c] = 0; }
            /* pass 1: G += q dos^T; dq = S_t dos; gu = G u; du = G^T k; gs = <G, S_{t-1}> */
            R gs = 0;
            for (int64_t i = 0; i < dk; i++) {
                R *restrict g = G + i * dv;
                const R *restrict srow = St + i * dv, *restrict prow = Sp + i * dv;
                const R qi = qt[i], ki = kt[i];
                R sq = 0, su = 0, sp = 0;
#pragma omp simd reduction(+ : sq, su, sp)
                for (int64_t c = 0; c < dv; c++) {
                    R gv = g[c] + qi * dos[c];
                    g[c] = gv;
                    sq += srow[c] * dos[c];
                    su += gv * u[c];
                    sp += gv * prow[c];
                    du[c] += ki * gv;
                }
                dqt[i] = sq;
                gu[i] = su;
                gs += sp;
            }
            R dbt = 0;
            for (int64_t c = 0; c < dv; c++) dbt += vt[c] * du[c];
            const R b = F(vstep_at)(bv, al, t * lda);
            for (int64_t c = 0; c < dv; c++) dvt[c] = b * du[c];
            /* pass 2: sd = S_{t-1} du; dk = gu - a d sd; G <- d (G - a k du^T) */
            R ksd = 0;
            for (int64_t i = 0; i < dk; i++) {
                R *restrict g = G + i * dv;
                const R *restrict prow = Sp + i * dv;
                const R aki = a * kt[i];
                R sd = 0;
#pragma omp simd reduction(+ : sd)
                for (int64_t c = 0; c < dv; c++) {
                    sd += prow[c] * du[c];
                    g[c] = d * (g[c] - aki * du[c]);
                }
                dkt[i] = gu[i] - a * d * sd;
                ksd += kt[i] * sd;
            }
            dal[t * lda] = -d * ksd;
            dbv[t * lda] = dbt;
            dlg[t * lda] = d * (gs - a * ksd);
        }
    }
}

/* ---- chunked gated backward (docs/MATH.md §6, "The chunked backward with a decay") -------------- */
/* The reverse of fwd_chunked's gated branch, one chunk at a time. Per chunk (Gc = cumulative g,
 * Dm_ij = e^{Gc_i - Gc_j} for i >= j, gam_i = e^{Gc_i}, r_j = Dm_{n-1,j}):
 *   L = strictly-lower(diag(a) (Dm o K K^T)),  KS = K S,  Rg = diag(b) V - diag(a gam) KS
 *   V' = (I+L)^-1 Rg,   O = scale (diag(gam) Q S + (Dm o tril_incl(Q K^T)) V')
 *   S <- gam_{n-1} S + K^T diag(r) V'
 * dGc_i collects every term through a ratio or gam_i; dg is its reverse cumulative sum.
 * Only ratios with i >= j are ever formed. work: F(work_bwd). */
static void F(bwd_chunked_gated)(const efla_delta_rule_args *A, int64_t len, const R *q, const R *k,
                                 const R *v, const R *al, const R *bv, const R *lg, const R *states,
                                 int64_t st_stride, const R *d_o, R *dq, R *grad_k, R *grad_v, R *dal,
                                 R *dbv, R *dlg, R *dS, R *work) {
    const int64_t dk = A->dk, dv = A->dv, C = A->chunk_size;
    const int64_t ldk = A->H * dk, ldv = A->H * dv, lda = A->H;
    const R scale = (R)A->scale;
    R *Gk = work, *Lm = Gk + C * C, *Md = Lm + C * C, *dM = Md + C * C, *E = dM + C * C, *Dm = E + C * C;
    R *KS = Dm + C * C, *Vp = KS + C * dv, *dOs = Vp + C * dv, *dVp = dOs + C * dv, *Tm = dVp + C * dv;
    R *Kt = Tm + C * dv, *Vpt = Kt + dk * C, *St = Vpt + dv * C, *dSt = St + dv * dk;
    R *Gc = dSt + dk * dv, *gam = Gc + C, *dGc = gam + C;
    const int64_t nch = (len + C - 1) / C;
    for (int64_t ci = nch - 1; ci >= 0; ci--) {
        const int64_t c0 = ci * C;
        const int64_t n = len - c0 < C ? len - c0 : C;
        const R *Kc = k + c0 * ldk, *Qc = q + c0 * ldk, *Vc = v + c0 * ldv, *ac = al + c0 * lda;
        const R *bc = bv + c0 * lda;
        const R *S = states + ci * st_stride;
        R *dQc = dq + c0 * ldk, *dKc = grad_k + c0 * ldk, *dVc = grad_v + c0 * ldv;
        R *dac = dal + c0 * lda, *dbc = dbv + c0 * lda;
        /* recompute the chunk's forward quantities, as fwd_chunked's gated branch does */
        R acc = 0;
        for (int64_t i = 0; i < n; i++) {
            Gc[i] = acc += lg[(c0 + i) * lda];
            gam[i] = (R)exp((double)Gc[i]);
            dGc[i] = 0;
            for (int64_t j = 0; j < i; j++) Dm[i * C + j] = (R)exp((double)(Gc[i] - Gc[j]));
            Dm[i * C + i] = 1;
        }
        F(transpose)(Kt, C, Kc, ldk, n, dk);
        F(transpose)(St, dk, S, dv, dk, dv);
        F(mm)(0, n, n, dk, 1, Kc, ldk, Kt, C, 0, Gk, C, 0, 1);
        for (int64_t i = 1; i < n; i++) {
            const R ai = ac[i * lda];
            for (int64_t j = 0; j < i; j++) Lm[i * C + j] = Gk[i * C + j] * (ai * Dm[i * C + j]);
        }
        F(mm)(0, n, dv, dk, 1, Kc, ldk, S, dv, 0, KS, dv, 0, 0);
        for (int64_t i = 0; i < n; i++) {
            const R b = bc[i * lda], ad = ac[i * lda] * gam[i];
            for (int64_t j = 0; j < dv; j++) Vp[i * dv + j] = b * Vc[i * ldv + j] - ad * KS[i * dv + j];
        }
        F(solve)(0, n, dv, Lm, C, Vp, dv);
        F(transpose)(Vpt, C, Vp, dv, n, dv);
        /* Md = Dm o tril_incl(Q K^T) */
        F(mm)(0, n, n, dk, 1, Qc, ldk, Kt, C, 0, Md, C, 0, 1);
        for (int64_t i = 0; i < n; i++) {
            for (int64_t j = 0; j <= i; j++) Md[i * C + j] *= Dm[i * C + j];
            for (int64_t j = i + 1; j < n; j++) Md[i * C + j] = 0;
        }
        F(copy_rows)(dOs, d_o + c0 * ldv, n, dv, ldv, NULL, 0);
        for (int64_t i = 0; i < n * dv; i++) dOs[i] *= scale;
        /* O: dQ = diag(gam) dOs S^T + (dMd o Dm) K, dGc_i += gam_i q_i.(S dOs_i) (the Q S term) */
        F(mm)(0, n, dk, dv, 1, dOs, dv, St, dk, 0, dQc, ldk, 0, 0);
        for (int64_t i = 0; i < n; i++) {
            R *restrict dqi = dQc + i * ldk;
            dGc[i] += gam[i] * F(dot)(Qc + i * ldk, dqi, dk);
            for (int64_t j = 0; j < dk; j++) dqi[j] *= gam[i];
        }
        /* dMd = tril_incl(dOs V'^T); a ratio's share: dMd_ij Md_ij into dGc_i, out of dGc_j */
        F(mm)(0, n, n, dv, 1, dOs, dv, Vpt, C, 0, dM, C, 0, 1);
        for (int64_t i = 0; i < n; i++) {
            for (int64_t j = 0; j < i; j++) {
                const R h = dM[i * C + j] * Md[i * C + j];
                dGc[i] += h;
                dGc[j] -= h;
                dM[i * C + j] *= Dm[i * C + j];
            }
            for (int64_t j = i + 1; j < n; j++) dM[i * C + j] = 0;
        }
        F(mm)(0, n, dk, n, 1, dM, C, Kc, ldk, 1, dQc, ldk, 1, 0);
        F(mm)(1, n, dk, n, 1, dM, C, Qc, ldk, 0, dKc, ldk, 2, 0);
        /* the state leaving the chunk, gam_{n-1} S + K^T diag(r) V':
         *   dK += diag(r) V' dS^T;  dV' = diag(r) K dS (+ Md^T dOs below);
         *   dGc_{n-1} += gam_{n-1} <dS, S> + sum_j r_j k_j^T dS v'_j;  dGc_j -= r_j k_j^T dS v'_j */
        const R *rl = Dm + (n - 1) * C;
        F(transpose)(dSt, dk, dS, dv, dk, dv);
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < dv; j++) Tm[i * dv + j] = rl[i] * Vp[i * dv + j];
        F(mm)(0, n, dk, dv, 1, Tm, dv, dSt, dk, 1, dKc, ldk, 0, 0);
        F(mm)(0, n, dv, dk, 1, Kc, ldk, dS, dv, 0, dVp, dv, 0, 0);
        R gs = 0;
        for (int64_t i = 0; i < dk * dv; i++) gs += dS[i] * S[i];
        dGc[n - 1] += gam[n - 1] * gs;
        for (int64_t i = 0; i < n; i++) {
            R *restrict dvi = dVp + i * dv;
            const R h = rl[i] * F(dot)(dvi, Vp + i * dv, dv);
            dGc[n - 1] += h;
            dGc[i] -= h;
            for (int64_t j = 0; j < dv; j++) dvi[j] *= rl[i];
        }
        F(mm)(1, n, dv, n, 1, Md, C, dOs, dv, 1, dVp, dv, 2, 0);
        /* dS (of the state entering the chunk) = gam_{n-1} dS + Q^T diag(gam) dOs - K^T diag(a gam) Y */
        for (int64_t i = 0; i < dk * dv; i++) dS[i] *= gam[n - 1];
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < dv; j++) dOs[i * dv + j] *= gam[i];
        F(mm)(1, dk, dv, n, 1, Qc, ldk, dOs, dv, 1, dS, dv, 0, 0);
        /* (I+L) V' = Rg:  Y = (I+L)^-T dV';  dL = -Y V'^T (strictly lower), L_ij = a_i Dm_ij Gk_ij:
         *   da_i += sum_j dL_ij Dm_ij Gk_ij;  dGc_i += dL_ij L_ij, dGc_j -= dL_ij L_ij;
         *   dK += P K + P^T K, P = diag(a) (Dm o dL) */
        F(transpose)(Md, C, Lm, C, n, n);      /* Md is free now: it holds L^T */
        F(solve)(1, n, dv, Md, C, dVp, dv);
        F(mm)(0, n, n, dv, 1, dVp, dv, Vpt, C, 0, E, C, 0, 1);
        for (int64_t i = 0; i < n; i++) {
            const R ai = ac[i * lda];
            R *restrict e = E + i * C;
            R da = 0;
            for (int64_t j = 0; j < i; j++) {
                const R dl = -e[j], dlD = dl * Dm[i * C + j], h = dl * Lm[i * C + j];
                da += dlD * Gk[i * C + j];
                dGc[i] += h;
                dGc[j] -= h;
                e[j] = ai * dlD;
            }
            for (int64_t j = i; j < n; j++) e[j] = 0;   /* the triangular products read tile corners */
            dac[i * lda] = da;
        }
        F(mm)(0, n, dk, n, 1, E, C, Kc, ldk, 1, dKc, ldk, 1, 0);   /* P K   */
        F(mm)(1, n, dk, n, 1, E, C, Kc, ldk, 1, dKc, ldk, 2, 0);   /* P^T K */
        /* Rg = diag(b) V - diag(a gam) K S:  dV = diag(b) Y;  db_i = Y_i.v_i;  w_i = -Y_i.(KS)_i:
         *   da_i += gam_i w_i;  dGc_i += a_i gam_i w_i;  Z = diag(a gam) Y:  dK -= Z S^T, dS -= K^T Z */
        for (int64_t i = 0; i < n; i++) {
            R *restrict y = dVp + i * dv;
            const R b = bc[i * lda], ai = ac[i * lda], ag = ai * gam[i];
            const R w = -F(dot)(y, KS + i * dv, dv);
            dbc[i * lda] = F(dot)(y, Vc + i * ldv, dv);
            dac[i * lda] += gam[i] * w;
            dGc[i] += ag * w;
            for (int64_t j = 0; j < dv; j++) {
                dVc[i * ldv + j] = b * y[j];
                y[j] *= ag;
            }
        }
        F(mm)(0, n, dk, dv, -1, dVp, dv, St, dk, 1, dKc, ldk, 0, 0);
        F(mm)(1, dk, dv, n, -1, Kc, ldk, dVp, dv, 1, dS, dv, 0, 0);
        /* g_t enters every Gc_i with i >= t */
        R rs = 0;
        for (int64_t i = n - 1; i >= 0; i--) dlg[(c0 + i) * lda] = rs += dGc[i];
    }
}

/* ---- one call: every (sequence, head) pair --------------------------------------------------- */
static int64_t F(work_fwd)(const efla_delta_rule_args *A) {
    const int64_t C = A->chunk_size;
    return A->algorithm == EFLA_ALGO_RECURRENT ? 5 * A->dv + A->dk : 2 * C * C + C * A->dv + A->dk * C + C;
}
/* rec: the recurrent backward (gated or not); otherwise the chunked ones (the gated one's
 * layout is the ungated one's plus a C x C, a C x dv and three C-vectors) */
static int64_t F(work_bwd)(const efla_delta_rule_args *A, int rec) {
    const int64_t C = A->chunk_size, dk = A->dk, dv = A->dv;
    return rec ? (C + 1) * dk * dv + C * dv + 5 * dv + dk + (dk > dv ? dk : dv)
               : 6 * C * C + 5 * C * dv + dk * C + dv * C + 2 * dv * dk + 3 * C;
}

static int F(fwd_all)(const efla_delta_rule_args *A, const efla_delta_rule_buffers *buf) {
    const R *q = buf->q, *k = buf->k, *v = buf->v, *al = buf->alpha, *s0 = buf->s0;
    const R *bv = buf->log_decay ? buf->alpha_v : NULL, *lg = buf->log_decay;
    R *o = buf->o, *s_final = buf->s_final, *cs = buf->chunk_states;
    const int64_t H = A->H, dk = A->dk, dv = A->dv, sz = dk * dv;
    const int64_t NP = A->N * H;
    int64_t *coff = chunk_offsets(A);
    if (!coff) return -1;
    const int64_t wsz = F(work_fwd)(A) + sz;
    int failed = 0;
    int nt = pick_threads(A);
#pragma omp parallel num_threads(nt)
    {
        R *work = aligned_alloc(64, round64(sizeof(R) * (size_t)wsz));
        if (!work) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t p = 0; p < NP; p++) {
            if (!work) continue;
            const int64_t n = p / H, h = p % H, len = A->seq_len[n];
            const int64_t tok = (A->seq_batch[n] * A->T + A->seq_start[n]) * H + h;
            R *S = work + F(work_fwd)(A);
            if (s0) memcpy(S, s0 + p * sz, sizeof(R) * (size_t)sz);
            else memset(S, 0, sizeof(R) * (size_t)sz);
            R *csp = cs ? cs + (coff[n] * H + h) * sz : NULL;
            const R *bvp = bv ? bv + tok : NULL, *lgp = lg ? lg + tok : NULL;
            if (A->algorithm == EFLA_ALGO_RECURRENT)
                F(fwd_recurrent)(A, len, q + tok * dk, k + tok * dk, v + tok * dv, al + tok, bvp, lgp,
                                 o + tok * dv, S, csp, H * sz, work);
            else
                F(fwd_chunked)(A, len, q + tok * dk, k + tok * dk, v + tok * dv, al + tok, bvp, lgp,
                               o + tok * dv, S, csp, H * sz, work);
            if (s_final) memcpy(s_final + p * sz, S, sizeof(R) * (size_t)sz);
        }
        free(work);
    }
    free(coff);
    return failed ? efla_fail("delta_rule: out of memory for the kernel's work buffers") : 0;
}

static int F(bwd_all)(const efla_delta_rule_args *A, const efla_delta_rule_buffers *buf) {
    const R *q = buf->q, *k = buf->k, *v = buf->v, *al = buf->alpha, *s0 = buf->s0;
    const R *bv = buf->log_decay ? buf->alpha_v : NULL, *lg = buf->log_decay;
    const R *cs = buf->chunk_states, *d_o = buf->d_o, *d_sf = buf->d_s_final;
    R *dq = buf->dq, *grad_k = buf->dk, *grad_v = buf->dv, *dal = buf->dalpha, *ds0 = buf->ds0;
    R *dbv = buf->dalpha_v, *dlg = buf->dlog_decay;
    const int64_t H = A->H, dk = A->dk, dv = A->dv, sz = dk * dv, C = A->chunk_size;
    const int64_t NP = A->N * H;
    int64_t *coff = chunk_offsets(A);
    if (!coff) return -1;
    int64_t maxch = 0;
    for (int64_t n = 0; n < A->N; n++) {
        int64_t c = (A->seq_len[n] + C - 1) / C;
        if (c > maxch) maxch = c;
    }
    const int rec_fwd = A->algorithm == EFLA_ALGO_RECURRENT;
    const int64_t wb = F(work_bwd)(A, rec_fwd);
    const int64_t wf = F(work_fwd)(A);
    /* work layout: [backward work | forward work | dS | S | recomputed states] */
    const int64_t wsz = wb + wf + 2 * sz + (cs ? 0 : maxch * sz);
    int failed = 0;
    int nt = pick_threads(A);
#pragma omp parallel num_threads(nt)
    {
        R *work = aligned_alloc(64, round64(sizeof(R) * (size_t)wsz));
        if (!work) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t p = 0; p < NP; p++) {
            if (!work) continue;
            const int64_t n = p / H, h = p % H, len = A->seq_len[n];
            const int64_t tok = (A->seq_batch[n] * A->T + A->seq_start[n]) * H + h;
            const R *bvp = bv ? bv + tok : NULL, *lgp = lg ? lg + tok : NULL;
            R *dS = work + wb + wf, *S = dS + sz, *sts = S + sz;
            const R *states;
            int64_t st_stride;
            if (cs) {
                states = cs + (coff[n] * H + h) * sz;
                st_stride = H * sz;
            } else {
                if (s0) memcpy(S, s0 + p * sz, sizeof(R) * (size_t)sz);
                else memset(S, 0, sizeof(R) * (size_t)sz);
                if (rec_fwd)
                    F(fwd_recurrent)(A, len, q + tok * dk, k + tok * dk, v + tok * dv, al + tok, bvp, lgp,
                                     NULL, S, sts, sz, work + wb);
                else
                    F(fwd_chunked)(A, len, q + tok * dk, k + tok * dk, v + tok * dv, al + tok, bvp, lgp,
                                   NULL, S, sts, sz, work + wb);
                states = sts;
                st_stride = sz;
            }
            if (d_sf) memcpy(dS, d_sf + p * sz, sizeof(R) * (size_t)sz);
            else memset(dS, 0, sizeof(R) * (size_t)sz);
            if (lg && !rec_fwd)
                F(bwd_chunked_gated)(A, len, q + tok * dk, k + tok * dk, v + tok * dv, al + tok, bvp, lgp,
                                     states, st_stride, d_o + tok * dv, dq + tok * dk, grad_k + tok * dk,
                                     grad_v + tok * dv, dal + tok, dbv + tok, dlg + tok, dS, work);
            else if (lg)
                F(bwd_recurrent_gated)(A, len, q + tok * dk, k + tok * dk, v + tok * dv, al + tok, bvp, lgp,
                                       states, st_stride, d_o + tok * dv, dq + tok * dk,
                                       grad_k + tok * dk, grad_v + tok * dv, dal + tok, dbv + tok,
                                       dlg + tok, dS, work);
            else if (rec_fwd)
                F(bwd_recurrent)(A, len, q + tok * dk, k + tok * dk, v + tok * dv, al + tok, states,
                                 st_stride, d_o + tok * dv, dq + tok * dk, grad_k + tok * dk,
                                 grad_v + tok * dv, dal + tok, dS, work);
            else
                F(bwd_chunked)(A, len, q + tok * dk, k + tok * dk, v + tok * dv, al + tok, states,
                               st_stride, d_o + tok * dv, dq + tok * dk, grad_k + tok * dk,
                               grad_v + tok * dv, dal + tok, dS, work);
            if (ds0) memcpy(ds0 + p * sz, dS, sizeof(R) * (size_t)sz);
        }
        free(work);
    }
    free(coff);
    return failed ? efla_fail("delta_rule backward: out of memory for the kernel's work buffers") : 0;
}

#undef F
#undef DR_CAT
#undef DR_CAT2
#undef V
#undef VL
#undef DR_INT
#undef DR_TRANSPOSE_MASKS
#undef VLOAD
#undef VSTORE

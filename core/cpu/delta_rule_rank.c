/* delta_rule_rank.c: the CPU kernels of the rank-r exact update (docs/RANK_R.md).
 *
 * Per (batch, head) pair, token by token, with the token's r keys as the rows of K (r x dk)
 * and its values as the rows of V (r x dv):
 *   F = f(K K^T)             (r x r, core/rank_fn.h: Jacobi eigendecomposition, phi on the
 *                             eigenvalues, in double)
 *   D = V - K S,  U = F D,   S <- S + K^T U,   o = scale S^T q.
 * The backward walks the tokens in reverse, block by block: each block of ckpt_len tokens
 * starts from the checkpoint the forward saved, replays its forward keeping every state
 * (exact, no inversion of the step), then runs the adjoint of the lines above, and chains
 * dF into K and beta through f (Daleckii-Krein, rank_fn.h).
 *
 * All arithmetic is in double whatever the dtype (float32 inputs are widened on load): the
 * CPU path is the reference and the r x r function wants the digits. OpenMP over pairs. */
#include "cpu_kernels.h"
#include "../delta_rule_rank.h"
#include <stdlib.h>
#include <string.h>

static inline double ld(const void *p, efla_dtype dt, int64_t i) {
    return dt == EFLA_FLOAT32 ? (double)((const float *)p)[i] : ((const double *)p)[i];
}
static inline void st(void *p, efla_dtype dt, int64_t i, double x) {
    if (dt == EFLA_FLOAT32) ((float *)p)[i] = (float)x;
    else ((double *)p)[i] = x;
}

/* One thread's scratch for one token: K, V, q, the r x r function, D and U. */
typedef struct tok {
    double *K, *V, *q, *D, *U;
    double G[EFLA_RANK_MAX * EFLA_RANK_MAX], F[EFLA_RANK_MAX * EFLA_RANK_MAX];
    double E[EFLA_RANK_MAX * EFLA_RANK_MAX], mu[EFLA_RANK_MAX], beta;
} tok;

/* load token `row` (= (b*T + t)*H + h) and form F */
static void load_token(const efla_rank_args *a, tok *w, int64_t row, const void *q, const void *k,
                       const void *v, const void *beta) {
    const int64_t r = a->r, dk = a->dk, dv = a->dv;
    for (int64_t i = 0; i < r * dk; i++) w->K[i] = ld(k, a->dtype, row * r * dk + i);
    for (int64_t i = 0; i < r * dv; i++) w->V[i] = ld(v, a->dtype, row * r * dv + i);
    for (int64_t i = 0; i < dk; i++) w->q[i] = ld(q, a->dtype, row * dk + i);
    w->beta = ld(beta, a->dtype, row);
    for (int64_t i = 0; i < r; i++)
        for (int64_t j = 0; j <= i; j++) {
            double s = 0;
            for (int64_t d = 0; d < dk; d++) s += w->K[i * dk + d] * w->K[j * dk + d];
            w->G[i * r + j] = w->G[j * r + i] = s;
        }
    efla_rank_f_of_gram((int)r, a->order, w->beta, w->G, w->mu, w->E, w->F);
}

/* D = V - K S, U = F D (S is dk x dv) */
static void residual(const efla_rank_args *a, tok *w, const double *S) {
    const int64_t r = a->r, dk = a->dk, dv = a->dv;
    memcpy(w->D, w->V, sizeof(double) * (size_t)(r * dv));
    for (int64_t i = 0; i < r; i++)
        for (int64_t d = 0; d < dk; d++) {
            const double kd = w->K[i * dk + d];
            const double *s = S + d * dv;
            double *dr = w->D + i * dv;
            for (int64_t j = 0; j < dv; j++) dr[j] -= kd * s[j];
        }
    for (int64_t i = 0; i < r; i++) {
        double *u = w->U + i * dv;
        for (int64_t j = 0; j < dv; j++) u[j] = 0;
        for (int64_t m = 0; m < r; m++) {
            const double f = w->F[i * r + m];
            const double *dm = w->D + m * dv;
            for (int64_t j = 0; j < dv; j++) u[j] += f * dm[j];
        }
    }
}

/* S += K^T U */
static void update(const efla_rank_args *a, const tok *w, double *S) {
    const int64_t r = a->r, dk = a->dk, dv = a->dv;
    for (int64_t d = 0; d < dk; d++) {
        double *s = S + d * dv;
        for (int64_t i = 0; i < r; i++) {
            const double kd = w->K[i * dk + d];
            const double *u = w->U + i * dv;
            for (int64_t j = 0; j < dv; j++) s[j] += kd * u[j];
        }
    }
}

static int alloc_tok(const efla_rank_args *a, tok *w) {
    const int64_t r = a->r, dk = a->dk, dv = a->dv;
    size_t n = (size_t)(r * dk + 3 * r * dv + dk);
    w->K = malloc(sizeof(double) * n);
    if (!w->K) return -1;
    w->V = w->K + r * dk;
    w->D = w->V + r * dv;
    w->U = w->D + r * dv;
    w->q = w->U + r * dv;
    return 0;
}

int efla_cpu_delta_rule_rank_fwd(const efla_rank_args *a, const void *q, const void *k, const void *v,
                                 const void *beta, const void *s0, void *o, void *s_final, void *ckpt) {
    const int64_t B = a->B, T = a->T, H = a->H, dk = a->dk, dv = a->dv, L = a->ckpt_len;
    const int64_t nblk = (T + L - 1) / L, sz = dk * dv;
    int failed = 0;
#pragma omp parallel for schedule(dynamic, 1) if (B * H > 1 && T * sz * a->r > 32768)
    for (int64_t p = 0; p < B * H; p++) {
        const int64_t b = p / H, h = p % H;
        tok w;
        double *S = malloc(sizeof(double) * (size_t)(sz ? sz : 1));
        if (!S || alloc_tok(a, &w)) {
            free(S);
#pragma omp atomic write
            failed = 1;
            continue;
        }
        for (int64_t i = 0; i < sz; i++) S[i] = s0 ? ld(s0, a->state_dtype, p * sz + i) : 0.0;
        for (int64_t t = 0; t < T; t++) {
            if (ckpt && t % L == 0)
                for (int64_t i = 0; i < sz; i++) st(ckpt, a->ckpt_dtype, (p * nblk + t / L) * sz + i, S[i]);
            const int64_t row = (b * T + t) * H + h;
            load_token(a, &w, row, q, k, v, beta);
            residual(a, &w, S);
            update(a, &w, S);
            for (int64_t j = 0; j < dv; j++) {
                double s = 0;
                for (int64_t d = 0; d < dk; d++) s += w.q[d] * S[d * dv + j];
                st(o, a->dtype, row * dv + j, a->scale * s);
            }
        }
        if (s_final)
            for (int64_t i = 0; i < sz; i++) st(s_final, a->state_dtype, p * sz + i, S[i]);
        free(S);
        free(w.K);
    }
    return failed ? efla_fail("delta_rule_rank: out of memory for the per-thread state") : 0;
}

int efla_cpu_delta_rule_rank_bwd(const efla_rank_args *a, const void *q, const void *k, const void *v,
                                 const void *beta, const void *ckpt, const void *d_o,
                                 const void *d_s_final, void *dq, void *dk, void *dv, void *dbeta,
                                 void *ds0) {
    const int64_t B = a->B, T = a->T, H = a->H, r = a->r, dK = a->dk, dV = a->dv, L = a->ckpt_len;
    const int64_t nblk = (T + L - 1) / L, sz = dK * dV;
    if (!ckpt && T > 0) return efla_fail("delta_rule_rank backward: the forward saved no checkpoints");
    int failed = 0;
#pragma omp parallel for schedule(dynamic, 1) if (B * H > 1 && T * sz * r > 32768)
    for (int64_t p = 0; p < B * H; p++) {
        const int64_t b = p / H, h = p % H;
        tok w;
        /* block states (L + 1), dS, then per token dos, dU, dD, dK rows */
        size_t n = (size_t)((L + 2) * sz + dV + 2 * r * dV + r * dK + 1);
        double *S = malloc(sizeof(double) * n);
        if (!S || alloc_tok(a, &w)) {
            free(S);
#pragma omp atomic write
            failed = 1;
            continue;
        }
        double *dS = S + (L + 1) * sz, *dos = dS + sz, *dU = dos + dV, *dD = dU + r * dV, *gK = dD + r * dV;
        for (int64_t i = 0; i < sz; i++) dS[i] = d_s_final ? ld(d_s_final, a->state_dtype, p * sz + i) : 0.0;
        for (int64_t blk = nblk - 1; blk >= 0; blk--) {
            const int64_t t0 = blk * L, nt = T - t0 < L ? T - t0 : L;
            for (int64_t i = 0; i < sz; i++) S[i] = ld(ckpt, a->ckpt_dtype, (p * nblk + blk) * sz + i);
            for (int64_t i = 0; i < nt; i++) {   /* replay: S + i*sz enters token t0 + i */
                load_token(a, &w, (b * T + t0 + i) * H + h, q, k, v, beta);
                memcpy(S + (i + 1) * sz, S + i * sz, sizeof(double) * (size_t)sz);
                residual(a, &w, S + i * sz);
                update(a, &w, S + (i + 1) * sz);
            }
            for (int64_t i = nt - 1; i >= 0; i--) {
                const int64_t row = (b * T + t0 + i) * H + h;
                const double *Sp = S + i * sz, *Sc = S + (i + 1) * sz;
                load_token(a, &w, row, q, k, v, beta);
                residual(a, &w, Sp);
                for (int64_t j = 0; j < dV; j++) dos[j] = a->scale * ld(d_o, a->dtype, row * dV + j);
                for (int64_t d = 0; d < dK; d++) {   /* dq = S_t dos; dS += q dos^T */
                    double s = 0;
                    for (int64_t j = 0; j < dV; j++) s += Sc[d * dV + j] * dos[j];
                    st(dq, a->dtype, row * dK + d, s);
                    for (int64_t j = 0; j < dV; j++) dS[d * dV + j] += w.q[d] * dos[j];
                }
                /* S_t = S_{t-1} + K^T U:  dU = K dS,  dK = U dS^T */
                for (int64_t m = 0; m < r; m++) {
                    for (int64_t j = 0; j < dV; j++) dU[m * dV + j] = 0;
                    for (int64_t d = 0; d < dK; d++) {
                        const double kd = w.K[m * dK + d];
                        double s = 0;
                        for (int64_t j = 0; j < dV; j++) {
                            dU[m * dV + j] += kd * dS[d * dV + j];
                            s += w.U[m * dV + j] * dS[d * dV + j];
                        }
                        gK[m * dK + d] = s;
                    }
                }
                /* U = F D:  dF = dU D^T,  dD = F^T dU (= dV) */
                double dF[EFLA_RANK_MAX * EFLA_RANK_MAX], dG[EFLA_RANK_MAX * EFLA_RANK_MAX];
                for (int64_t m = 0; m < r; m++)
                    for (int64_t n2 = 0; n2 < r; n2++) {
                        double s = 0;
                        for (int64_t j = 0; j < dV; j++) s += dU[m * dV + j] * w.D[n2 * dV + j];
                        dF[m * r + n2] = s;
                    }
                for (int64_t m = 0; m < r; m++)
                    for (int64_t j = 0; j < dV; j++) {
                        double s = 0;
                        for (int64_t n2 = 0; n2 < r; n2++) s += w.F[n2 * r + m] * dU[n2 * dV + j];
                        dD[m * dV + j] = s;
                        st(dv, a->dtype, row * r * dV + m * dV + j, s);
                    }
                /* D = V - K S_{t-1}:  dK -= dD S_{t-1}^T,  dS -= K^T dD */
                for (int64_t d = 0; d < dK; d++)
                    for (int64_t m = 0; m < r; m++) {
                        const double kd = w.K[m * dK + d];
                        double s = 0;
                        for (int64_t j = 0; j < dV; j++) {
                            s += dD[m * dV + j] * Sp[d * dV + j];
                            dS[d * dV + j] -= kd * dD[m * dV + j];
                        }
                        gK[m * dK + d] -= s;
                    }
                /* F = f(K K^T): dK += (dG + dG^T) K, and dbeta */
                double db = efla_rank_f_backward((int)r, a->order, w.beta, w.mu, w.E, dF, dG);
                st(dbeta, a->dtype, row, db);
                for (int64_t m = 0; m < r; m++)
                    for (int64_t n2 = 0; n2 < r; n2++) {
                        const double g = dG[m * r + n2] + dG[n2 * r + m];
                        for (int64_t d = 0; d < dK; d++) gK[m * dK + d] += g * w.K[n2 * dK + d];
                    }
                for (int64_t i2 = 0; i2 < r * dK; i2++) st(dk, a->dtype, row * r * dK + i2, gK[i2]);
            }
        }
        if (ds0)
            for (int64_t i = 0; i < sz; i++) st(ds0, a->state_dtype, p * sz + i, dS[i]);
        free(S);
        free(w.K);
    }
    return failed ? efla_fail("delta_rule_rank backward: out of memory for the per-thread buffers") : 0;
}

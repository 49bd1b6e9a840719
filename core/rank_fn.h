/* rank_fn.h: the r x r matrix function of the rank-r exact update (docs/RANK_R.md), as
 * inline double-precision code that compiles both as C (core/cpu/delta_rule_rank.c) and as
 * CUDA device code (cuda/delta_rule_rank.cu), so host and device evaluate the same formulas.
 *
 *   G = K K^T (r x r Gram of the token's r keys, rows of K),  G = E diag(mu) E^T (Jacobi)
 *   F = f(G) = E diag(g(mu)) E^T,   g(mu) = beta phi_s(beta mu)     (phi of alpha_formulas.h)
 *   backward (Daleckii-Krein): dG = E (P o (E^T dF E)) E^T, P_ij = beta^2 phi_s[x_i, x_j]
 *   (the divided difference of phi at x = beta mu, phi' on ties), dbeta = sum_i
 *   (E^T dF E)_ii (phi_s + x phi_s')(x_i).
 * No epsilon anywhere: phi has no pole at 0, so singular G (rank-deficient K, zero keys) is
 * an ordinary input, and the divided difference is evaluated without cancellation. */
#ifndef EFLA_RANK_FN_H
#define EFLA_RANK_FN_H
#include "alpha_formulas.h"

#define EFLA_RANK_MAX 8   /* keys per token the kernels accept */

/* Symmetric eigendecomposition by cyclic Jacobi: a (r x r, row-major, destroyed) ->
 * eigenvalues mu[r] and eigenvectors as the columns of e (r x r, row-major). */
static inline EFLA_HD void efla_rank_eig(int r, double *a, double *mu, double *e) {
    for (int i = 0; i < r; i++)
        for (int j = 0; j < r; j++) e[i * r + j] = i == j;
    for (int sweep = 0; sweep < 60; sweep++) {
        int rotated = 0;
        for (int p = 0; p < r; p++)
            for (int q = p + 1; q < r; q++) {
                double apq = a[p * r + q], app = a[p * r + p], aqq = a[q * r + q];
                /* negligible next to both diagonal entries: it would not change them */
                if (apq == 0 || (fabs(app) + 1e3 * fabs(apq) == fabs(app) &&
                                 fabs(aqq) + 1e3 * fabs(apq) == fabs(aqq))) {
                    a[p * r + q] = a[q * r + p] = 0;
                    continue;
                }
                rotated = 1;
                double th = (aqq - app) / (2 * apq);
                double t = (th >= 0 ? 1.0 : -1.0) / (fabs(th) + sqrt(th * th + 1));
                if (isinf(th)) t = 0.5 / th;   /* th^2 overflowed: t ~ 1/(2 th) */
                double c = 1 / sqrt(t * t + 1), s = t * c;
                for (int k = 0; k < r; k++) {   /* columns p, q */
                    double akp = a[k * r + p], akq = a[k * r + q];
                    a[k * r + p] = c * akp - s * akq;
                    a[k * r + q] = s * akp + c * akq;
                    double ekp = e[k * r + p], ekq = e[k * r + q];
                    e[k * r + p] = c * ekp - s * ekq;
                    e[k * r + q] = s * ekp + c * ekq;
                }
                for (int k = 0; k < r; k++) {   /* rows p, q */
                    double apk = a[p * r + k], aqk = a[q * r + k];
                    a[p * r + k] = c * apk - s * aqk;
                    a[q * r + k] = s * apk + c * aqk;
                }
                a[p * r + q] = a[q * r + p] = 0;
            }
        if (!rotated) break;
    }
    for (int i = 0; i < r; i++) mu[i] = a[i * r + i];
}

/* The divided difference phi_s[x, y] = (phi_s(x) - phi_s(y)) / (x - y), phi_s'(x) at x = y.
 * Orders 1..4: the polynomial's exact finite sum. Exact step: its Taylor series for
 * max(|x|, |y|) <= 1, else, with a = max, b = min and phi(a) - phi(b) written through
 * e^{-a} - e^{-b} = -e^{-b} (a - b) phi(a - b):  (e^{-b} phi(a - b) - phi(b)) / a. */
static inline EFLA_HD double efla_rank_phi_dd(int order, double x, double y) {
    const int exact = order < 1 || order > 4;
    double a = x > y ? x : y, b = x > y ? y : x;
    if (!exact || (fabs(a) <= 1 && fabs(b) <= 1)) {
        /* sum_{j>=1} (-1)^j / (j+1)! h_{j-1}(a, b), h_m = sum_{i<=m} a^i b^(m-i) */
        int terms = exact ? 24 : order - 1;
        double h = 1, bm = 1, coef = 1, sum = 0;
        for (int j = 1; j <= terms; j++) {
            coef = -coef / (j + 1);
            if (j > 1) { bm *= b; h = a * h + bm; }
            sum += coef * h;
        }
        return sum;
    }
    double d = a - b;
    return (exp(-b) * efla_phi_of(order, d) - efla_phi_of(order, b)) / a;
}

/* F = E diag(beta phi(beta mu)) E^T (r x r, row-major) */
static inline EFLA_HD void efla_rank_f(int r, int order, double beta, const double *mu, const double *e,
                                       double *f) {
    double g[EFLA_RANK_MAX];
    for (int i = 0; i < r; i++) g[i] = beta * efla_phi_of(order, beta == 0 ? 0.0 : beta * mu[i]);
    for (int i = 0; i < r; i++)
        for (int j = 0; j < r; j++) {
            double s = 0;
            for (int m = 0; m < r; m++) s += e[i * r + m] * g[m] * e[j * r + m];
            f[i * r + j] = s;
        }
}

/* G (r x r) -> F, keeping mu and e for the backward */
static inline EFLA_HD void efla_rank_f_of_gram(int r, int order, double beta, const double *gram, double *mu,
                                               double *e, double *f) {
    double a[EFLA_RANK_MAX * EFLA_RANK_MAX];
    for (int i = 0; i < r * r; i++) a[i] = gram[i];
    efla_rank_eig(r, a, mu, e);
    efla_rank_f(r, order, beta, mu, e, f);
}

/* dF (r x r, any) -> dG (r x r, symmetric; written) and the return value dbeta */
static inline EFLA_HD double efla_rank_f_backward(int r, int order, double beta, const double *mu,
                                                  const double *e, const double *df, double *dg) {
    double t[EFLA_RANK_MAX * EFLA_RANK_MAX], m[EFLA_RANK_MAX * EFLA_RANK_MAX], x[EFLA_RANK_MAX];
    for (int i = 0; i < r; i++) x[i] = beta == 0 ? 0.0 : beta * mu[i];
    for (int i = 0; i < r; i++)   /* t = dF E */
        for (int j = 0; j < r; j++) {
            double s = 0;
            for (int k = 0; k < r; k++) s += df[i * r + k] * e[k * r + j];
            t[i * r + j] = s;
        }
    double dbeta = 0;
    for (int i = 0; i < r; i++)   /* m = P o (E^T t) */
        for (int j = 0; j < r; j++) {
            double s = 0;
            for (int k = 0; k < r; k++) s += e[k * r + i] * t[k * r + j];
            if (i == j) dbeta += s * efla_dalpha_dbeta_of(order, x[i]);
            m[i * r + j] = s * beta * beta * efla_rank_phi_dd(order, x[i], x[j]);
        }
    for (int i = 0; i < r; i++)   /* t = E m */
        for (int j = 0; j < r; j++) {
            double s = 0;
            for (int k = 0; k < r; k++) s += e[i * r + k] * m[k * r + j];
            t[i * r + j] = s;
        }
    for (int i = 0; i < r; i++)   /* dG = t E^T */
        for (int j = 0; j < r; j++) {
            double s = 0;
            for (int k = 0; k < r; k++) s += t[i * r + k] * e[j * r + k];
            dg[i * r + j] = s;
        }
    return dbeta;
}
#endif

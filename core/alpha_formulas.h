/* alpha_formulas.h: the step size alpha of the delta rule and its derivatives (docs/MATH.md
 * §2-3) as inline functions that compile both as C (core/delta_rule_alpha.c) and as CUDA
 * device code (cuda/delta_rule_alpha.cu), so the host and the device evaluate the very same
 * expressions, in double.
 *
 *   x = beta * lambda,  alpha = beta * phi_s(x),  phi_s(x) = sum_{j<s} (-x)^j / (j+1)!
 *   exact (EFLA):  phi(x) = -expm1(-x)/x, by its series below |x| = 1e-4 (exact at lambda = 0,
 *                  never divides by zero, never cancels)
 *   d alpha / d beta   = e^{-x} (exact),  sum_{j<s} (-x)^j / j! (order s)
 *   d alpha / d lambda = beta^2 phi'(x)
 * phi' of the exact step comes from its Taylor series for |x| < 0.5 (18 terms, to double
 * precision) and from ((1+x)e^{-x} - 1)/x^2 above: that closed form loses about
 * log10(2/x^2) digits to cancellation near 0. Orders: 1..4, anything else is exact. */
#ifndef EFLA_ALPHA_FORMULAS_H
#define EFLA_ALPHA_FORMULAS_H
#include <math.h>

#ifdef __CUDACC__
#define EFLA_HD __host__ __device__
#else
#define EFLA_HD
#endif

/* The reference option's constants (the published EFLA code clamps lambda >= 1e-6 and adds
 * 1e-6 to the denominator). */
#define EFLA_REF_EPS 1e-6
#define EFLA_ORDER_EXACT_OF 0   /* EFLA_ORDER_EXACT, for device code that cannot see efla.h */

static inline EFLA_HD double efla_phi_of(int order, double x) {
    switch (order) {
    case 1: return 1.0;
    case 2: return 1.0 - x / 2;
    case 3: return 1.0 + x * (-1.0 / 2 + x / 6);
    case 4: return 1.0 + x * (-1.0 / 2 + x * (1.0 / 6 - x / 24));
    default:
        if (fabs(x) < 1e-4) return 1.0 + x * (-1.0 / 2 + x * (1.0 / 6 - x / 24));
        return -expm1(-x) / x;
    }
}

/* phi'(x) = sum_n (-1)^(n+1) (n+1)/(n+2)! x^n, by Horner from n = 17 down */
static inline EFLA_HD double efla_phi_prime_series(double x) {
    double r = 1.4797143443923793e-16;
    r = r * x - 2.6552651846596585e-15;
    r = r * x + 4.498331606952833e-14;
    r = r * x - 7.169215998581078e-13;
    r = r * x + 1.0706029224547743e-11;
    r = r * x - 1.4911969277048643e-10;
    r = r * x + 1.9270852604185937e-09;
    r = r * x - 2.296443268665491e-08;
    r = r * x + 2.505210838544172e-07;
    r = r * x - 2.48015873015873e-06;
    r = r * x + 2.2045855379188714e-05;
    r = r * x - 0.00017361111111111112;
    r = r * x + 0.0011904761904761906;
    r = r * x - 0.006944444444444444;
    r = r * x + 0.03333333333333333;
    r = r * x - 0.125;
    r = r * x + 0.3333333333333333;
    return r * x - 0.5;
}

static inline EFLA_HD double efla_phi_prime_of(int order, double x) {
    switch (order) {
    case 1: return 0.0;
    case 2: return -0.5;
    case 3: return -0.5 + x / 3;
    case 4: return -0.5 + x * (1.0 / 3 - x / 8);
    default:
        if (fabs(x) < 0.5) return efla_phi_prime_series(x);
        if (x > 700) return -1.0 / (x * x);     /* e^{-x} underflows; avoids inf * 0 */
        return ((1 + x) * exp(-x) - 1) / (x * x);
    }
}

/* d alpha / d beta = d(x phi(x))/dx = truncated (or full) e^{-x} */
static inline EFLA_HD double efla_dalpha_dbeta_of(int order, double x) {
    switch (order) {
    case 1: return 1.0;
    case 2: return 1.0 - x;
    case 3: return 1.0 + x * (-1.0 + x / 2);
    case 4: return 1.0 + x * (-1.0 + x * (1.0 / 2 - x / 6));
    default: return exp(-x);
    }
}

/* alpha and, where the pointers are not NULL, its partial derivatives. reference_eps (exact
 * order only): alpha = (1 - exp(-beta*lc)) / (lc + 1e-6), lc = max(lambda, 1e-6), the clamp
 * passing no gradient below 1e-6. */
static inline EFLA_HD void efla_alpha_eval_of(double beta, double lambda, int order, int reference_eps,
                                              double *alpha, double *d_beta, double *d_lambda) {
    const int exact = order < 1 || order > 4;
    if (reference_eps && exact) {
        double lc = lambda < EFLA_REF_EPS ? EFLA_REF_EPS : lambda;
        if (isinf(lc)) {   /* an overflowed key: the limit, not inf/inf */
            *alpha = 0;
            if (d_beta) *d_beta = 0;
            if (d_lambda) *d_lambda = 0;
            return;
        }
        double e = exp(-beta * lc), den = lc + EFLA_REF_EPS;
        *alpha = (1 - e) / den;
        if (d_beta) *d_beta = lc * e / den;
        if (d_lambda) *d_lambda = lambda >= EFLA_REF_EPS ? (beta * e * den - (1 - e)) / (den * den) : 0.0;
        return;
    }
    double x = beta == 0 ? 0.0 : beta * lambda;   /* beta = 0, lambda = inf: no NaN */
    *alpha = beta * efla_phi_of(order, x);
    if (d_beta) *d_beta = efla_dalpha_dbeta_of(order, x);
    if (d_lambda) *d_lambda = beta * beta * efla_phi_prime_of(order, x);
}

/* Gated EFLA's value step (docs/MATH.md §6): with the log-decay g = -beta*gamma <= 0,
 *   alpha' = (1 - e^{-(beta*lambda - g)}) / (lambda - g/beta) = beta * phi(x'),  x' = beta*lambda - g,
 * and its partial derivatives, written so that nothing cancels for g <= 0:
 *   d alpha'/d beta = e^{-x'} + g phi'(x')    (both terms >= 0)
 *   d alpha'/d lambda = beta^2 phi'(x'),   d alpha'/d g = -beta phi'(x').
 * Order 1 (Gated DeltaNet): alpha' = beta. Other orders are refused by the front end. */
static inline EFLA_HD void efla_alpha_v_eval_of(double beta, double lambda, double g, int order,
                                                double *alpha_v, double *d_beta, double *d_lambda,
                                                double *d_g) {
    if (order == 1) {
        *alpha_v = beta;
        if (d_beta) *d_beta = 1;
        if (d_lambda) *d_lambda = 0;
        if (d_g) *d_g = 0;
        return;
    }
    double x = (beta == 0 ? 0.0 : beta * lambda) - g;
    double dphi = efla_phi_prime_of(EFLA_ORDER_EXACT_OF, x);
    *alpha_v = beta * efla_phi_of(EFLA_ORDER_EXACT_OF, x);
    if (d_beta) *d_beta = exp(-x) + (g == 0 ? 0.0 : g * dphi);
    if (d_lambda) *d_lambda = beta * beta * dphi;
    if (d_g) *d_g = -beta * dphi;
}
#endif

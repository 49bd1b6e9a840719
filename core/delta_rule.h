/* delta_rule.h: what the delta-rule front end (ops_delta_rule.c) shares with the alpha
 * code (delta_rule_alpha.c). Not public: users see efla_delta_rule_alpha in efla.h. */
#ifndef EFLA_DELTA_RULE_H
#define EFLA_DELTA_RULE_H
#include "internal.h"

#include "alpha_formulas.h"   /* EFLA_REF_EPS and the inline formulas */

/* alpha = beta * phi_order(beta * lambda) in double (docs/MATH.md §2-3), with its partial
 * derivatives when d_beta / d_lambda are not NULL. order: EFLA_ORDER_EXACT or 1..4.
 * reference_eps (exact order only): alpha = (1 - exp(-beta*lc)) / (lc + 1e-6), lc =
 * max(lambda, 1e-6), the clamp passing no gradient below 1e-6. */
void efla_alpha_eval(double beta, double lambda, int order, int reference_eps, double *alpha,
                     double *d_beta, double *d_lambda);

/* phi_order(x) and its derivative (exposed for the tests' formula checks). */
double efla_phi(int order, double x);
double efla_phi_prime(int order, double x);

/* Over n contiguous elements: beta (dtype dt), lambda (double) -> alpha (dtype dt). */
void efla_alpha_fill(efla_dtype dt, int64_t n, const void *beta, const double *lambda, int order,
                     int reference_eps, void *alpha);
/* Chain rule over n contiguous elements: g = dL/dalpha (dtype dt) -> dL/dbeta (dtype dt,
 * may be NULL) and dL/dlambda (double, may be NULL). */
void efla_alpha_backward(efla_dtype dt, int64_t n, const void *beta, const double *lambda,
                         int order, int reference_eps, const void *g, void *d_beta,
                         double *d_lambda);

/* Gated EFLA (docs/MATH.md §6) over n contiguous elements: beta, g (dtype dt), lambda (double)
 * -> alpha_v = beta * phi(beta*lambda - g) (order 1: beta), dtype dt. */
void efla_alpha_v_fill(efla_dtype dt, int64_t n, const void *beta, const double *lambda, const void *g,
                       int order, void *alpha_v);
/* Its chain rule: gv = dL/dalpha_v (dtype dt) is ADDED into d_beta (dtype dt), d_lambda (double)
 * and d_g (dtype dt). */
void efla_alpha_v_backward(efla_dtype dt, int64_t n, const void *beta, const double *lambda,
                           const void *g, int order, const void *gv, void *d_beta, double *d_lambda,
                           void *d_g);

/* The start every delta-rule entry point shares: copies opts (or the defaults) into *o, clears
 * *out and *final_state, and fails naming op when out is NULL or a final state is asked for
 * without somewhere to put it. ops_delta_rule.c; the rank-r operator calls it too. */
int efla_delta_rule_begin(const char *op, const efla_delta_rule_opts *opts, efla_delta_rule_opts *o,
                          efla_tensor **out, efla_tensor **final_state);

/* "order 7 is not supported ..." unless order is EFLA_ORDER_EXACT or 1..4. */
int efla_check_order(const char *op, int order);
#endif

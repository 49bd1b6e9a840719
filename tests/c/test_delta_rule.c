/* test_delta_rule.c: the delta-rule operator (docs/MATH.md §5 and the list).
 *
 *  1. alpha: formulas, alpha(lambda = 0) == beta, no NaN/Inf for huge lambda, derivatives
 *     vs finite differences (around the series switches), the reference_eps formula, the
 *     differentiable public op.
 *  2. the raw kernels on plain arrays: forward vs a double reference loop, backward vs
 *     finite differences (dalpha included).
 *  3. the front end: chunked == recurrent == reference for every order, chunk size, head
 *     size and T; gradients through alpha vs finite differences; split sequences;
 *     cu_seqlens; the single-token step; non-contiguous inputs; huge keys; bad input.
 */
#include "test_util.h"
#include "backend.h"
#include "delta_rule.h"
#include <float.h>

/* ---- random numbers (independent of the library's RNG) ------------------------------------- */
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static double urand(void) {
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}
static double nrand(void) {
    double u = urand(), v = urand();
    return sqrt(-2 * log(u + 1e-300)) * cos(6.283185307179586 * v);
}
static double *darr(int64_t n) { return calloc((size_t)(n ? n : 1), sizeof(double)); }
static double *randn_arr(int64_t n, double s) {
    double *x = darr(n);
    for (int64_t i = 0; i < n; i++) x[i] = s * nrand();
    return x;
}
static double *rand_beta(int64_t n) {
    double *x = darr(n);
    for (int64_t i = 0; i < n; i++) x[i] = 0.05 + 0.9 * urand();
    return x;
}

/* ---- tensors <-> double arrays -------------------------------------------------------------- */
static efla_tensor *mk(int nd, const int64_t *shape, efla_dtype dt, const double *x) {
    int64_t n = 1;
    for (int i = 0; i < nd; i++) n *= shape[i];
    size_t es = efla_dtype_size(dt);
    char *buf = malloc((size_t)(n ? n : 1) * es);
    for (int64_t i = 0; i < n; i++) {
        if (dt == EFLA_FLOAT32) ((float *)buf)[i] = (float)x[i];
        else ((double *)buf)[i] = x[i];
    }
    efla_tensor *t = MUST(efla_from_buffer(nd, shape, dt, buf, (size_t)n * es));
    free(buf);
    return t;
}
static void rd(const efla_tensor *t, double *out) {
    int64_t n = efla_tensor_numel(t);
    efla_dtype dt = efla_tensor_dtype(t);
    size_t es = efla_dtype_size(dt);
    char *buf = malloc((size_t)(n ? n : 1) * es);
    MUST_OK(efla_to_buffer(t, buf, (size_t)n * es));
    for (int64_t i = 0; i < n; i++) out[i] = dt == EFLA_FLOAT32 ? ((float *)buf)[i] : ((double *)buf)[i];
    free(buf);
}
/* round a double array to float32 in place (so the reference sees what the kernel sees) */
static void round_f32(double *x, int64_t n) { for (int64_t i = 0; i < n; i++) x[i] = (float)x[i]; }

/* max |a - b| / max(max |b|, tiny): norm-wise relative error */
static double rel_err(const double *a, const double *b, int64_t n) {
    double num = 0, den = 1e-300;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs(a[i] - b[i]);
        if (d != d) return INFINITY;
        if (d > num) num = d;
        if (fabs(b[i]) > den) den = fabs(b[i]);
    }
    return num / den;
}
static int all_finite(const double *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) if (!isfinite(x[i])) return 0;
    return 1;
}

/* ---- a plain double reference of docs/MATH.md §1 ------------------------------------------------- */
static double ref_alpha(double beta, double lam, int order, int ref_eps) {
    if (ref_eps && order == 0) {
        double lc = lam < 1e-6 ? 1e-6 : lam;
        return (1 - exp(-beta * lc)) / (lc + 1e-6);
    }
    double x = beta * lam;
    switch (order) {
    case 1: return beta;
    case 2: return beta * (1 - x / 2);
    case 3: return beta * (1 - x / 2 + x * x / 6);
    case 4: return beta * (1 - x / 2 + x * x / 6 - x * x * x / 24);
    }
    if (x < 1e-3) {   /* series: sum (-x)^j/(j+1)! */
        double s = 0, term = 1;
        for (int j = 0; j < 10; j++) { s += term / (j + 1); term *= -x / (j + 1); }
        return beta * s;
    }
    return -expm1(-x) / lam;
}

typedef struct prob {
    int64_t B, T, H, dk, dv, N;
    const int64_t *cu;       /* NULL: one sequence per batch row */
} prob;

static void seq_of(const prob *p, int64_t n, int64_t *b, int64_t *s, int64_t *len) {
    if (p->cu) { *b = 0; *s = p->cu[n]; *len = p->cu[n + 1] - p->cu[n]; }
    else { *b = n; *s = 0; *len = p->T; }
}

/* alpha given (may be NULL: then computed from beta, order, ref_eps) */
static void ref_forward(const prob *p, const double *q, const double *k, const double *v,
                        const double *beta, const double *alpha, const double *s0, int order,
                        int ref_eps, double scale, double *o, double *sf) {
    int64_t H = p->H, dk = p->dk, dv = p->dv;
    double *S = darr(dk * dv), *u = darr(dv);
    for (int64_t n = 0; n < p->N; n++)
        for (int64_t h = 0; h < H; h++) {
            int64_t b, s, len;
            seq_of(p, n, &b, &s, &len);
            for (int64_t i = 0; i < dk * dv; i++) S[i] = s0 ? s0[(n * H + h) * dk * dv + i] : 0;
            for (int64_t t = s; t < s + len; t++) {
                int64_t r = (b * p->T + t) * H + h;
                const double *kt = k + r * dk, *qt = q + r * dk, *vt = v + r * dv;
                double lam = 0;
                for (int64_t i = 0; i < dk; i++) lam += kt[i] * kt[i];
                double a = alpha ? alpha[r] : ref_alpha(beta[r], lam, order, ref_eps);
                for (int64_t j = 0; j < dv; j++) {
                    u[j] = vt[j];
                    for (int64_t i = 0; i < dk; i++) u[j] -= S[i * dv + j] * kt[i];
                }
                for (int64_t i = 0; i < dk; i++)
                    for (int64_t j = 0; j < dv; j++) S[i * dv + j] += a * kt[i] * u[j];
                for (int64_t j = 0; j < dv; j++) {
                    double acc = 0;
                    for (int64_t i = 0; i < dk; i++) acc += S[i * dv + j] * qt[i];
                    o[r * dv + j] = scale * acc;
                }
            }
            if (sf) memcpy(sf + (n * H + h) * dk * dv, S, sizeof(double) * (size_t)(dk * dv));
        }
    free(S);
    free(u);
}

/* ---- the front end on double arrays -------------------------------------------------------------- */
typedef struct runcfg {
    efla_dtype dt;
    int order, algo, chunk, ref_eps, recompute;
    double scale;
} runcfg;

static efla_delta_rule_opts opts_of(const runcfg *c) {
    efla_delta_rule_opts o;
    efla_delta_rule_default_opts(&o);
    o.order = c->order;
    o.algorithm = c->algo;
    o.chunk_size = c->chunk;
    o.reference_eps = c->ref_eps;
    o.recompute_states = c->recompute;
    o.scale = c->scale;
    o.output_final_state = 1;
    return o;
}

/* forward only; o [B,T,H,dv], sf [N,H,dk,dv] */
static int run_fwd(const prob *p, const runcfg *c, const double *q, const double *k, const double *v,
                   const double *beta, const double *s0, double *o, double *sf) {
    int64_t sq[4] = {p->B, p->T, p->H, p->dk}, sv[4] = {p->B, p->T, p->H, p->dv};
    int64_t sb[3] = {p->B, p->T, p->H}, ss[4] = {p->N, p->H, p->dk, p->dv}, sc[1] = {p->N + 1};
    efla_tensor *tq = mk(4, sq, c->dt, q), *tk = mk(4, sq, c->dt, k), *tv = mk(4, sv, c->dt, v);
    efla_tensor *tb = mk(3, sb, c->dt, beta), *ts = s0 ? mk(4, ss, c->dt, s0) : NULL, *tcu = NULL;
    if (p->cu) tcu = MUST(efla_from_buffer(1, sc, EFLA_INT64, p->cu, sizeof(int64_t) * (size_t)(p->N + 1)));
    efla_delta_rule_opts op = opts_of(c);
    efla_tensor *out = NULL, *fin = NULL;
    int rc = efla_delta_rule(tq, tk, tv, tb, ts, tcu, &op, &out, &fin);
    if (!rc) { rd(out, o); if (sf) rd(fin, sf); }
    efla_tensor_release(tq); efla_tensor_release(tk); efla_tensor_release(tv); efla_tensor_release(tb);
    efla_tensor_release(ts); efla_tensor_release(tcu); efla_tensor_release(out); efla_tensor_release(fin);
    return rc;
}

/* forward + backward of L = <o, W1> + <sf, W2>; g* receive the gradients (gs0 only with s0) */
static int run_grad(const prob *p, const runcfg *c, const double *q, const double *k, const double *v,
                    const double *beta, const double *s0, const double *W1, const double *W2,
                    double *gq, double *gk, double *gv, double *gb, double *gs0) {
    int64_t sq[4] = {p->B, p->T, p->H, p->dk}, sv[4] = {p->B, p->T, p->H, p->dv};
    int64_t sb[3] = {p->B, p->T, p->H}, ss[4] = {p->N, p->H, p->dk, p->dv}, sc[1] = {p->N + 1};
    efla_tensor *in[5] = {mk(4, sq, c->dt, q), mk(4, sq, c->dt, k), mk(4, sv, c->dt, v),
                          mk(3, sb, c->dt, beta), s0 ? mk(4, ss, c->dt, s0) : NULL};
    double *outs[5] = {gq, gk, gv, gb, gs0};
    for (int i = 0; i < 5; i++) if (in[i]) MUST_OK(efla_set_requires_grad(in[i], 1));
    efla_tensor *tcu = p->cu ? MUST(efla_from_buffer(1, sc, EFLA_INT64, p->cu,
                                                     sizeof(int64_t) * (size_t)(p->N + 1))) : NULL;
    efla_delta_rule_opts o = opts_of(c);
    efla_tensor *out = NULL, *fin = NULL;
    int rc = efla_delta_rule(in[0], in[1], in[2], in[3], in[4], tcu, &o, &out, &fin);
    if (!rc) {
        efla_tensor *w1 = mk(4, sv, c->dt, W1), *w2 = mk(4, ss, c->dt, W2);
        rc = efla_backward(out, w1, 1);
        if (!rc) rc = efla_backward(fin, w2, 0);
        for (int i = 0; i < 5 && !rc; i++) {
            if (!in[i]) continue;
            efla_tensor *g = efla_grad(in[i]);
            if (!g) { rc = -1; break; }
            rd(g, outs[i]);
            efla_tensor_release(g);
        }
        efla_tensor_release(w1); efla_tensor_release(w2);
    }
    for (int i = 0; i < 5; i++) efla_tensor_release(in[i]);
    efla_tensor_release(tcu); efla_tensor_release(out); efla_tensor_release(fin);
    return rc;
}

/* ================================================================================================ */
/* 1. alpha                                                                                          */
/* ================================================================================================ */
static void test_alpha_formulas(void) {
    /* alpha(lambda = 0) == beta exactly, every order, both paths */
    double betas[] = {0, 1e-300, 1e-7, 0.3, 0.5, 0.999, 1};
    for (int order = 0; order <= 4; order++)
        for (size_t i = 0; i < sizeof betas / sizeof *betas; i++) {
            double a, db, dl;
            efla_alpha_eval(betas[i], 0, order, 0, &a, &db, &dl);
            CHECK(a == betas[i], "order %d: alpha(beta=%g, lambda=0) = %.17g", order, betas[i], a);
            CHECK(db == 1.0, "order %d: dalpha/dbeta at lambda 0 = %.17g, want 1", order, db);
        }
    for (int dt = 0; dt < 2; dt++) {
        int64_t n = 7;
        double z[7] = {0};
        efla_tensor *b = mk(1, &n, dt ? EFLA_FLOAT64 : EFLA_FLOAT32, betas), *l = mk(1, &n, dt ? EFLA_FLOAT64 : EFLA_FLOAT32, z);
        for (int order = 0; order <= 4; order++) {
            efla_tensor *a = MUST(efla_delta_rule_alpha(b, l, order, 0));
            double av[7], bv[7];
            rd(a, av); rd(b, bv);
            int same = 1;
            for (int i = 0; i < 7; i++) same &= av[i] == bv[i];
            CHECK(same, "efla_delta_rule_alpha(lambda = 0) == beta, order %d dtype %d", order, dt);
            efla_tensor_release(a);
        }
        efla_tensor_release(b); efla_tensor_release(l);
    }
    /* values vs the definitions (long double where it matters) */
    double lams[] = {1e-12, 1e-6, 3e-5, 1e-4, 2e-4, 0.01, 0.4, 0.6, 1, 3, 40, 800, 1e6, 1e15, 1e30};
    double worst = 0;
    for (size_t i = 0; i < sizeof lams / sizeof *lams; i++)
        for (int j = 0; j < 5; j++) {
            double beta = (j + 0.5) / 5.0, lam = lams[i], a;
            efla_alpha_eval(beta, lam, 0, 0, &a, NULL, NULL);
            long double x = (long double)beta * lam;
            long double want = -expm1l(-x) / (long double)lam;
            double e = (double)fabsl((a - want) / want);
            if (e > worst) worst = e;
            for (int order = 1; order <= 4; order++) {
                efla_alpha_eval(beta, lam, order, 0, &a, NULL, NULL);
                long double phi = 0, term = 1;
                for (int s = 0; s < order; s++) { phi += term / (s + 1); term *= -x / (s + 1); }
                long double mag = beta * (1 + x + x * x + x * x * x);   /* cancellation scale */
                CHECK(fabsl(a - beta * phi) <= 1e-15L * mag + 1e-300L,
                      "order %d alpha(%g, %g) = %.17g, want %.17Lg", order, beta, lam, a, beta * phi);
            }
        }
    CHECK(worst < 4e-16, "exact alpha vs -expm1(-x)/lambda in long double: rel err %.3g", worst);
    /* order 1 is DeltaNet: alpha = beta whatever lambda */
    double a;
    efla_alpha_eval(0.37, 123.0, 1, 0, &a, NULL, NULL);
    CHECK(a == 0.37, "order 1: alpha = beta, got %.17g", a);
}

static void test_alpha_extremes(void) {
    /* never NaN or Inf, lambda up to 1e30 (and its float32 overflow, inf), beta in [0, 1] */
    double lams[] = {0, 1e-30, 1e-8, 1, 1e10, 1e15, 1e20, 1e30, 1e60, 1e300, INFINITY};
    double betas[] = {0, 1e-20, 0.25, 0.5, 1};
    int ok = 1;
    for (size_t i = 0; i < sizeof lams / sizeof *lams; i++)
        for (size_t j = 0; j < sizeof betas / sizeof *betas; j++)
            for (int ref = 0; ref < 2; ref++) {
                double a, db, dl;
                efla_alpha_eval(betas[j], lams[i], 0, ref, &a, &db, &dl);
                if (!isfinite(a) || !isfinite(db) || !isfinite(dl)) {
                    ok = 0;
                    fprintf(stderr, "  alpha(%g, %g, ref %d) = %g, d %g %g\n", betas[j], lams[i], ref, a, db, dl);
                }
                /* (the reference's literal 1 - exp(-x) loses digits for tiny x: looser bound) */
                if (a < 0 || a > betas[j] * (1 + (ref ? 1e-6 : 1e-15))) { ok = 0; fprintf(stderr, "  range: alpha(%g, %g, ref %d) = %.17g\n", betas[j], lams[i], ref, a); }
            }
    CHECK(ok, "exact alpha and its derivatives finite, 0 <= alpha <= beta, for lambda up to inf");
    /* the same through the tensor op in float32 */
    int64_t n = 6;
    double l[6] = {1e30, 1e20, 1e15, 1, 0, 1e38}, b[6] = {1, 0.5, 0, 1, 0.7, 1};
    efla_tensor *tb = mk(1, &n, EFLA_FLOAT32, b), *tl = mk(1, &n, EFLA_FLOAT32, l);
    efla_tensor *ta = MUST(efla_delta_rule_alpha(tb, tl, 0, 0));
    double av[6];
    rd(ta, av);
    CHECK(all_finite(av, 6) && av[3] > 0.63 && av[3] < 0.64 && av[4] == (float)0.7,
          "float32 alpha for lambda up to 1e38: %g %g %g %g %g %g", av[0], av[1], av[2], av[3], av[4], av[5]);
    efla_tensor_release(tb); efla_tensor_release(tl); efla_tensor_release(ta);
}

/* alpha in long double, straight from the definitions (for finite differences) */
static long double alpha_ld(long double beta, long double lam, int order, int ref) {
    if (ref && order == 0) {
        long double lc = lam < 1e-6L ? 1e-6L : lam;
        return (1 - expl(-beta * lc)) / (lc + 1e-6L);
    }
    long double x = beta * lam;
    if (order == 0) return lam == 0 ? beta : -expm1l(-x) / lam;
    long double phi = 0, term = 1;
    for (int s = 0; s < order; s++) { phi += term / (s + 1); term *= -x / (s + 1); }
    return beta * phi;
}

static void test_alpha_derivatives(void) {
    /* x = beta * lambda placed around the switches (1e-4 for phi, 0.5 for phi') and beyond */
    double xs[] = {0, 1e-9, 5e-5, 9.9e-5, 1e-4, 1.01e-4, 3e-4, 0.01, 0.3, 0.49, 0.5, 0.51, 1, 2.5, 9, 60};
    double betas[] = {0.2, 0.7, 1.0};
    double worst = 0;
    for (int order = 0; order <= 4; order++)
        for (int ref = 0; ref < 2; ref++)
            for (size_t i = 0; i < sizeof xs / sizeof *xs; i++)
                for (size_t j = 0; j < 3; j++) {
                    double beta = betas[j], lam = xs[i] / beta, a, db, dl;
                    if (ref && lam < 2e-6) continue;      /* the clamp's kink */
                    efla_alpha_eval(beta, lam, order, ref, &a, &db, &dl);
                    /* central differences in long double, of the definitions themselves */
                    long double hb = 1e-7L * beta;
                    double fdb = (double)((alpha_ld(beta + hb, lam, order, ref) -
                                           alpha_ld(beta - hb, lam, order, ref)) / (2 * hb));
                    long double hl = 1e-7L * (lam > 1e-3 ? lam : 1e-3);
                    if (lam < hl) hl = lam > 0 ? lam * 0.5L : 1e-9L;
                    double fdl = (double)((alpha_ld(beta, lam + hl, order, ref) -
                                           alpha_ld(beta, lam - hl, order, ref)) / (2 * hl));
                    double eb = fabs(db - fdb) / fmax(1e-3, fabs(fdb));
                    double el = fabs(dl - fdl) / fmax(1e-3 * beta * beta, fabs(fdl));
                    if (eb > worst) worst = eb;
                    if (el > worst) worst = el;
                    if (eb > 1e-6 || el > 1e-6)
                        fprintf(stderr, "  order %d ref %d x %g beta %g: db %.12g fd %.12g | dl %.12g fd %.12g\n",
                                order, ref, xs[i], beta, db, fdb, dl, fdl);
                }
    CHECK(worst < 1e-6, "alpha derivatives vs central differences: worst rel err %.3g", worst);
    /* phi' is smooth across its 0.5 switch and matches -1/2 + x/3 - x^2/8 + x^3/30 near 0 */
    double lo = efla_phi_prime(0, 0.5 - 1e-12), hi = efla_phi_prime(0, 0.5 + 1e-12);
    CHECK(fabs(lo - hi) < 1e-12, "phi' continuous at 0.5 (slope 0.23): %.17g vs %.17g", lo, hi);
    double x = 1e-4, ser = -0.5 + x / 3 - x * x / 8 + x * x * x / 30;
    CHECK(fabs(efla_phi_prime(0, x) - ser) < 1e-17, "phi'(1e-4) vs its series");
    double lo2 = efla_phi(0, 1e-4 * (1 - 1e-12)), hi2 = efla_phi(0, 1e-4 * (1 + 1e-12));
    CHECK(fabs(lo2 - hi2) < 1e-15, "phi continuous at the 1e-4 switch: %.17g vs %.17g", lo2, hi2);
    /* phi' vs a long double evaluation of ((1+x)e^-x - 1)/x^2 where that is accurate */
    double w2 = 0;
    for (double xx = 1e-3; xx < 50; xx *= 1.7) {
        long double X = xx, want = ((1 + X) * expl(-X) - 1) / (X * X);
        double e = (double)fabsl((efla_phi_prime(0, xx) - want) / want);
        if (e > w2) w2 = e;
    }
    CHECK(w2 < 1e-12, "phi'(x) vs long double closed form: rel err %.3g", w2);
}

static void test_alpha_reference_eps(void) {
    /* the published formula: lambda clamped at 1e-6, +1e-6 in the denominator */
    double lams[] = {0, 1e-9, 1e-6, 5e-6, 0.1, 1, 100};
    for (size_t i = 0; i < sizeof lams / sizeof *lams; i++) {
        double beta = 0.6, a, lc = lams[i] < 1e-6 ? 1e-6 : lams[i];
        efla_alpha_eval(beta, lams[i], 0, 1, &a, NULL, NULL);
        double want = (1 - exp(-beta * lc)) / (lc + 1e-6);
        CHECK(a == want, "reference_eps alpha(%g) = %.17g, want %.17g", lams[i], a, want);
    }
    /* at lambda = 0 it is beta * 1e-6 / 2e-6 ~ beta/2, not beta: the documented difference */
    double a;
    efla_alpha_eval(0.6, 0, 0, 1, &a, NULL, NULL);
    CHECK(fabs(a - 0.3) < 1e-6, "reference_eps alpha(lambda=0) ~ beta/2, got %g", a);
    /* through the operator: same outputs as the reference loop with that alpha */
    prob p = {1, 9, 2, 4, 3, 1, NULL};
    int64_t nq = 9 * 2 * 4, nv = 9 * 2 * 3;
    double *q = randn_arr(nq, 1), *k = randn_arr(nq, 1e-4), *v = randn_arr(nv, 1), *b = rand_beta(18);
    double *o = darr(nv), *oref = darr(nv);
    runcfg c = {EFLA_FLOAT64, 0, EFLA_ALGO_CHUNKED, 16, 1, 0, 0};
    MUST_OK(run_fwd(&p, &c, q, k, v, b, NULL, o, NULL));
    ref_forward(&p, q, k, v, b, NULL, NULL, 0, 1, 0.5, oref, NULL);
    CHECK(rel_err(o, oref, nv) < 1e-12, "reference_eps operator vs reference loop: %.3g", rel_err(o, oref, nv));
    c.ref_eps = 0;
    MUST_OK(run_fwd(&p, &c, q, k, v, b, NULL, o, NULL));
    CHECK(rel_err(o, oref, nv) > 1e-3, "tiny keys: reference_eps changes the result (%.3g)", rel_err(o, oref, nv));
    free(q); free(k); free(v); free(b); free(o); free(oref);
}

static void test_alpha_op_autograd(void) {
    /* beta [3,1], lambda [1,4] broadcast to [3,4]; L = sum(alpha * W) */
    int64_t sb[2] = {3, 1}, sl[2] = {1, 4}, so[2] = {3, 4};
    double b[3] = {0.2, 0.5, 0.9}, l[4] = {0, 1e-5, 0.7, 30}, W[12];
    for (int i = 0; i < 12; i++) W[i] = nrand();
    for (int order = 0; order <= 4; order++) {
        efla_tensor *tb = mk(2, sb, EFLA_FLOAT64, b), *tl = mk(2, sl, EFLA_FLOAT64, l), *tw = mk(2, so, EFLA_FLOAT64, W);
        MUST_OK(efla_set_requires_grad(tb, 1));
        MUST_OK(efla_set_requires_grad(tl, 1));
        efla_tensor *a = MUST(efla_delta_rule_alpha(tb, tl, order, 0));
        CHECK(efla_tensor_size(a, 0) == 3 && efla_tensor_size(a, 1) == 4, "broadcast shape");
        MUST_OK(efla_backward(a, tw, 0));
        efla_tensor *gb = MUST(efla_grad(tb)), *gl = MUST(efla_grad(tl));
        double gbv[3], glv[4], wb[3] = {0}, wl[4] = {0};
        rd(gb, gbv); rd(gl, glv);
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 4; j++) {
                double al, db, dl;
                efla_alpha_eval(b[i], l[j], order, 0, &al, &db, &dl);
                wb[i] += W[i * 4 + j] * db;
                wl[j] += W[i * 4 + j] * dl;
            }
        CHECK(rel_err(gbv, wb, 3) < 1e-14 && rel_err(glv, wl, 4) < 1e-14,
              "alpha op gradients (broadcast, order %d)", order);
        efla_tensor_release(gb); efla_tensor_release(gl); efla_tensor_release(a);
        efla_tensor_release(tb); efla_tensor_release(tl); efla_tensor_release(tw);
    }
}

/* ================================================================================================ */
/* 2. raw kernels                                                                                     */
/* ================================================================================================ */
typedef struct kprob {
    efla_delta_rule_args a;
    int64_t batch[4], start[4], len[4];
} kprob;

static void kernel_args(kprob *kp, int64_t B, int64_t T, int64_t H, int64_t dk, int64_t dv, int algo,
                        int C, efla_dtype dt) {
    memset(kp, 0, sizeof *kp);
    for (int64_t n = 0; n < B; n++) { kp->batch[n] = n; kp->start[n] = 0; kp->len[n] = T; }
    kp->a.B = B; kp->a.T = T; kp->a.H = H; kp->a.dk = dk; kp->a.dv = dv; kp->a.N = B;
    kp->a.seq_batch = kp->batch; kp->a.seq_start = kp->start; kp->a.seq_len = kp->len;
    kp->a.scale = 0.7; kp->a.chunk_size = C; kp->a.algorithm = algo; kp->a.dtype = dt; kp->a.state_dtype = dt;
}

/* kernel forward on double arrays (float64 only), L = <o,W1> + <sf,W2> */
static double kernel_loss(const kprob *kp, const double *q, const double *k, const double *v,
                          const double *al, const double *s0, const double *W1, const double *W2) {
    const efla_delta_rule_args *a = &kp->a;
    int64_t no = a->B * a->T * a->H * a->dv, ns = a->N * a->H * a->dk * a->dv;
    double *o = darr(no), *sf = darr(ns), L = 0;
    efla_delta_rule_buffers buf = {.q = q, .k = k, .v = v, .alpha = al, .s0 = s0, .o = o, .s_final = sf};
    MUST_OK(efla_cpu_backend.delta_rule_fwd(a, &buf));
    for (int64_t i = 0; i < no; i++) L += o[i] * W1[i];
    for (int64_t i = 0; i < ns; i++) L += sf[i] * W2[i];
    free(o); free(sf);
    return L;
}

static void test_kernel_forward_and_fd(void) {
    const int64_t B = 2, T = 20, H = 2, dk = 4, dv = 3;
    int64_t nq = B * T * H * dk, nv = B * T * H * dv, na = B * T * H, ns = B * H * dk * dv;
    double *q = randn_arr(nq, 1), *k = randn_arr(nq, 0.5), *v = randn_arr(nv, 1), *al = rand_beta(na);
    double *s0 = randn_arr(ns, 0.3), *W1 = randn_arr(nv, 1), *W2 = randn_arr(ns, 1);
    for (int algo = 1; algo <= 2; algo++) {
        kprob kp;
        kernel_args(&kp, B, T, H, dk, dv, algo, 16, EFLA_FLOAT64);
        /* forward vs the reference loop with the same alpha */
        prob p = {B, T, H, dk, dv, B, NULL};
        double *o = darr(nv), *sf = darr(ns), *oref = darr(nv), *sref = darr(ns);
        double *cs = darr(B * 2 * H * dk * dv);
        efla_delta_rule_buffers fbuf = {.q = q, .k = k, .v = v, .alpha = al, .s0 = s0, .o = o, .s_final = sf, .chunk_states = cs};
        MUST_OK(efla_cpu_backend.delta_rule_fwd(&kp.a, &fbuf));
        ref_forward(&p, q, k, v, NULL, al, s0, 0, 0, 0.7, oref, sref);
        CHECK(rel_err(o, oref, nv) < 1e-13 && rel_err(sf, sref, ns) < 1e-13,
              "kernel algo %d forward vs reference: o %.3g, state %.3g", algo, rel_err(o, oref, nv),
              rel_err(sf, sref, ns));
        /* backward vs central differences of the kernel itself, dalpha included */
        double *dq = darr(nq), *dkk = darr(nq), *dvv = darr(nv), *dal = darr(na), *ds0 = darr(ns);
        for (int saved = 0; saved < 2; saved++) {
            efla_delta_rule_buffers bbuf = {.q = q, .k = k, .v = v, .alpha = al, .s0 = s0,
                                            .chunk_states = saved ? cs : NULL, .d_o = W1, .d_s_final = W2,
                                            .dq = dq, .dk = dkk, .dv = dvv, .dalpha = dal, .ds0 = ds0};
            MUST_OK(efla_cpu_backend.delta_rule_bwd(&kp.a, &bbuf));
            double *xs[5] = {q, k, v, al, s0}, *gs[5] = {dq, dkk, dvv, dal, ds0};
            int64_t ns_[5] = {nq, nq, nv, na, ns};
            const char *names[5] = {"q", "k", "v", "alpha", "s0"};
            for (int w = 0; w < 5; w++) {
                double worst = 0, gmax = 0;
                for (int64_t i = 0; i < ns_[w]; i++) {
                    double x0 = xs[w][i], h = 1e-6;
                    xs[w][i] = x0 + h;
                    double lp = kernel_loss(&kp, q, k, v, al, s0, W1, W2);
                    xs[w][i] = x0 - h;
                    double lm = kernel_loss(&kp, q, k, v, al, s0, W1, W2);
                    xs[w][i] = x0;
                    double fd = (lp - lm) / (2 * h);
                    if (fabs(fd - gs[w][i]) > worst) worst = fabs(fd - gs[w][i]);
                    if (fabs(fd) > gmax) gmax = fabs(fd);
                }
                CHECK(worst <= 1e-7 * fmax(1, gmax), "kernel algo %d (%s states) d%s vs finite differences: %.3g",
                      algo, saved ? "saved" : "recomputed", names[w], worst);
            }
        }
        free(o); free(sf); free(oref); free(sref); free(cs);
        free(dq); free(dkk); free(dvv); free(dal); free(ds0);
    }
    /* bfloat16 at the kernel: a clear error */
    kprob kp;
    kernel_args(&kp, B, T, H, dk, dv, 1, 16, EFLA_BFLOAT16);
    efla_delta_rule_buffers bfbuf = {.q = q, .k = k, .v = v, .alpha = al, .s0 = s0, .o = W1};
    CHECK_ERROR(efla_cpu_backend.delta_rule_fwd(&kp.a, &bfbuf) < 0, "float32");
    free(q); free(k); free(v); free(al); free(s0); free(W1); free(W2);
}

/* ================================================================================================ */
/* 3. the front end                                                                                   */
/* ================================================================================================ */
/* chunked vs recurrent vs the double reference for one configuration; both dtypes */
static void compare_forms(int64_t B, int64_t T, int64_t H, int64_t dk, int64_t dv, int order, int C,
                          double kscale) {
    prob p = {B, T, H, dk, dv, B, NULL};
    int64_t nq = B * T * H * dk, nv = B * T * H * dv, na = B * T * H, ns = B * H * dk * dv;
    double *q = randn_arr(nq, 1), *k = randn_arr(nq, kscale / sqrt((double)dk)), *v = randn_arr(nv, 1);
    double *b = rand_beta(na), *s0 = randn_arr(ns, 0.1);
    double *oc = darr(nv), *orr = darr(nv), *oref = darr(nv), *sc = darr(ns), *sr = darr(ns), *sref = darr(ns);
    for (int dti = 0; dti < 2; dti++) {
        efla_dtype dt = dti ? EFLA_FLOAT64 : EFLA_FLOAT32;
        double tol = dti ? 1e-12 : 1e-5;
        if (!dti) { round_f32(q, nq); round_f32(k, nq); round_f32(v, nv); round_f32(b, na); round_f32(s0, ns); }
        runcfg c = {dt, order, EFLA_ALGO_CHUNKED, C, 0, 0, 0};
        MUST_OK(run_fwd(&p, &c, q, k, v, b, s0, oc, sc));
        c.algo = EFLA_ALGO_RECURRENT;
        MUST_OK(run_fwd(&p, &c, q, k, v, b, s0, orr, sr));
        ref_forward(&p, q, k, v, b, NULL, s0, order, 0, 1 / sqrt((double)dk), oref, sref);
        double e1 = fmax(rel_err(oc, orr, nv), rel_err(sc, sr, ns));
        double e2 = fmax(rel_err(oc, oref, nv), rel_err(sc, sref, ns));
        double e3 = fmax(rel_err(orr, oref, nv), rel_err(sr, sref, ns));
        if (getenv("DR_VERBOSE"))   /* DR_VERBOSE=1 prints the errors of every configuration */
            fprintf(stderr, "%s order %d C %d T %lld dk %lld dv %lld: %.2g %.2g %.2g\n", efla_dtype_name(dt),
                    order, C, (long long)T, (long long)dk, (long long)dv, e1, e2, e3);
        CHECK(e1 <= tol && e2 <= tol && e3 <= tol,
              "%s order %d C %d T %lld H %lld dk %lld dv %lld: chunked-recurrent %.3g, chunked-ref %.3g, "
              "recurrent-ref %.3g", efla_dtype_name(dt), order, C, (long long)T, (long long)H,
              (long long)dk, (long long)dv, e1, e2, e3);
    }
    free(q); free(k); free(v); free(b); free(s0); free(oc); free(orr); free(oref); free(sc); free(sr); free(sref);
}

static void test_chunked_vs_recurrent(void) {
    /* every order (keys of norm ~1 and, for the exact step, ~5: EFLA's regime) */
    for (int order = 0; order <= 4; order++) compare_forms(2, 65, 2, 16, 16, order, 16, 1.0);
    compare_forms(1, 130, 2, 16, 8, 0, 32, 5.0);
    /* every chunk size, T not a multiple of it */
    int Cs[4] = {16, 32, 64, 128};
    for (int i = 0; i < 4; i++) compare_forms(1, 300, 2, 16, 16, i % 2 ? 1 : 0, Cs[i], 1.0);
    /* every T */
    int64_t Ts[5] = {1, 63, 64, 65, 300};
    for (int i = 0; i < 5; i++) compare_forms(2, Ts[i], 1, 16, 16, 0, 64, 1.0);
    /* every head size, dk == dv and dk != dv */
    compare_forms(1, 65, 2, 64, 64, 0, 64, 1.0);
    compare_forms(1, 65, 1, 128, 128, 2, 64, 1.0);
    compare_forms(1, 70, 2, 16, 64, 0, 16, 1.0);
    compare_forms(1, 70, 1, 128, 16, 1, 32, 1.0);
    compare_forms(1, 40, 1, 64, 128, 3, 128, 1.0);
    /* odd sizes (vector remainders) */
    compare_forms(3, 37, 3, 7, 5, 4, 16, 1.0);
    compare_forms(1, 50, 1, 33, 50, 0, 32, 1.0);
}

/* finite-difference gradients through alpha, via autograd: q, k, v, beta, initial state */
static void test_gradients_fd(void) {
    const int64_t B = 2, T = 20, H = 2, dk = 4, dv = 4;
    prob p = {B, T, H, dk, dv, B, NULL};
    int64_t nq = B * T * H * dk, nv = B * T * H * dv, na = B * T * H, ns = B * H * dk * dv;
    double *q = randn_arr(nq, 1), *k = randn_arr(nq, 0.6), *v = randn_arr(nv, 1), *b = rand_beta(na);
    double *s0 = randn_arr(ns, 0.3), *W1 = randn_arr(nv, 1), *W2 = randn_arr(ns, 1);
    double *g[5] = {darr(nq), darr(nq), darr(nv), darr(na), darr(ns)};
    double *o = darr(nv), *sf = darr(ns);
    double *xs[5] = {q, k, v, b, s0};
    int64_t cnt[5] = {nq, nq, nv, na, ns};
    const char *names[5] = {"q", "k", "v", "beta", "initial_state"};
    int orders[2] = {0, 1};
    for (int oi = 0; oi < 2; oi++)
        for (int algo = 1; algo <= 2; algo++) {
            runcfg c = {EFLA_FLOAT64, orders[oi], algo, 16, 0, 0, 0};
            MUST_OK(run_grad(&p, &c, q, k, v, b, s0, W1, W2, g[0], g[1], g[2], g[3], g[4]));
            for (int w = 0; w < 5; w++) {
                double worst = 0, gmax = 0;
                for (int64_t i = 0; i < cnt[w]; i++) {
                    double x0 = xs[w][i], h = 1e-6, lp = 0, lm = 0;
                    xs[w][i] = x0 + h;
                    MUST_OK(run_fwd(&p, &c, q, k, v, b, s0, o, sf));
                    for (int64_t j = 0; j < nv; j++) lp += o[j] * W1[j];
                    for (int64_t j = 0; j < ns; j++) lp += sf[j] * W2[j];
                    xs[w][i] = x0 - h;
                    MUST_OK(run_fwd(&p, &c, q, k, v, b, s0, o, sf));
                    for (int64_t j = 0; j < nv; j++) lm += o[j] * W1[j];
                    for (int64_t j = 0; j < ns; j++) lm += sf[j] * W2[j];
                    xs[w][i] = x0;
                    double fd = (lp - lm) / (2 * h);
                    if (fabs(fd - g[w][i]) > worst) worst = fabs(fd - g[w][i]);
                    if (fabs(fd) > gmax) gmax = fabs(fd);
                }
                CHECK(worst <= 1e-7 * fmax(1, gmax), "order %d %s: d%s vs finite differences: %.3g (max |g| %.3g)",
                      orders[oi], algo == 1 ? "chunked" : "recurrent", names[w], worst, gmax);
            }
        }
    /* the reference_eps chain and orders 2..4: one scalar check each (d beta, d k) */
    for (int order = 0; order <= 4; order++) {
        runcfg c = {EFLA_FLOAT64, order, EFLA_ALGO_CHUNKED, 16, order == 0, 0, 0};
        MUST_OK(run_grad(&p, &c, q, k, v, b, s0, W1, W2, g[0], g[1], g[2], g[3], g[4]));
        double worst = 0;
        for (int w = 1; w <= 3; w += 2)
            for (int64_t i = 0; i < cnt[w]; i += 7) {
                double x0 = xs[w][i], h = 1e-6, lp = 0, lm = 0;
                xs[w][i] = x0 + h;
                MUST_OK(run_fwd(&p, &c, q, k, v, b, s0, o, sf));
                for (int64_t j = 0; j < nv; j++) lp += o[j] * W1[j];
                for (int64_t j = 0; j < ns; j++) lp += sf[j] * W2[j];
                xs[w][i] = x0 - h;
                MUST_OK(run_fwd(&p, &c, q, k, v, b, s0, o, sf));
                for (int64_t j = 0; j < nv; j++) lm += o[j] * W1[j];
                for (int64_t j = 0; j < ns; j++) lm += sf[j] * W2[j];
                xs[w][i] = x0;
                double fd = (lp - lm) / (2 * h);
                if (fabs(fd - g[w][i]) / fmax(1, fabs(fd)) > worst) worst = fabs(fd - g[w][i]) / fmax(1, fabs(fd));
            }
        CHECK(worst < 1e-7, "order %d%s: dk, dbeta vs finite differences: %.3g", order,
              order == 0 ? " (reference_eps)" : "", worst);
    }
    /* recompute_states gives the saved-states gradients */
    {
        double *g2[5] = {darr(nq), darr(nq), darr(nv), darr(na), darr(ns)};
        for (int algo = 1; algo <= 2; algo++) {
            runcfg c = {EFLA_FLOAT64, 0, algo, 16, 0, 0, 0};
            MUST_OK(run_grad(&p, &c, q, k, v, b, s0, W1, W2, g[0], g[1], g[2], g[3], g[4]));
            c.recompute = 1;
            MUST_OK(run_grad(&p, &c, q, k, v, b, s0, W1, W2, g2[0], g2[1], g2[2], g2[3], g2[4]));
            double e = 0;
            for (int w = 0; w < 5; w++) e = fmax(e, rel_err(g2[w], g[w], cnt[w]));
            CHECK(e < 1e-14, "algo %d: recompute_states == saved states gradients (%.3g)", algo, e);
        }
        for (int w = 0; w < 5; w++) free(g2[w]);
    }
    /* float32 gradients of both forms agree */
    {
        double *g2[5] = {darr(nq), darr(nq), darr(nv), darr(na), darr(ns)};
        runcfg c = {EFLA_FLOAT32, 0, EFLA_ALGO_CHUNKED, 16, 0, 0, 0};
        MUST_OK(run_grad(&p, &c, q, k, v, b, s0, W1, W2, g[0], g[1], g[2], g[3], g[4]));
        c.algo = EFLA_ALGO_RECURRENT;
        MUST_OK(run_grad(&p, &c, q, k, v, b, s0, W1, W2, g2[0], g2[1], g2[2], g2[3], g2[4]));
        double e = 0;
        for (int w = 0; w < 5; w++) e = fmax(e, rel_err(g2[w], g[w], cnt[w]));
        CHECK(e < 1e-5, "float32 gradients chunked vs recurrent: %.3g", e);
        for (int w = 0; w < 5; w++) free(g2[w]);
    }
    for (int w = 0; w < 5; w++) free(g[w]);
    free(q); free(k); free(v); free(b); free(s0); free(W1); free(W2); free(o); free(sf);
}

/* a sequence fed in two halves (the second from the first's final state) == one pass */
static void test_split_sequence(void) {
    const int64_t B = 2, T = 100, T1 = 37, H = 2, dk = 8, dv = 6;
    int64_t nq = B * T * H * dk, nv = B * T * H * dv, na = B * T * H, ns = B * H * dk * dv;
    double *q = randn_arr(nq, 1), *k = randn_arr(nq, 0.4), *v = randn_arr(nv, 1), *b = rand_beta(na);
    double *o = darr(nv), *sf = darr(ns);
    for (int algo = 1; algo <= 2; algo++) {
        runcfg c = {EFLA_FLOAT64, 0, algo, 16, 0, 0, 0};
        prob p = {B, T, H, dk, dv, B, NULL};
        MUST_OK(run_fwd(&p, &c, q, k, v, b, NULL, o, sf));
        /* halves: copy tokens [0,T1) and [T1,T) of each batch row */
        int64_t T2 = T - T1;
        prob p1 = {B, T1, H, dk, dv, B, NULL}, p2 = {B, T2, H, dk, dv, B, NULL};
        double *hq[2] = {darr(B * T1 * H * dk), darr(B * T2 * H * dk)}, *hk[2] = {darr(B * T1 * H * dk), darr(B * T2 * H * dk)};
        double *hv[2] = {darr(B * T1 * H * dv), darr(B * T2 * H * dv)}, *hb[2] = {darr(B * T1 * H), darr(B * T2 * H)};
        double *ho[2] = {darr(B * T1 * H * dv), darr(B * T2 * H * dv)}, *s1 = darr(ns), *s2 = darr(ns);
        for (int64_t bb = 0; bb < B; bb++)
            for (int64_t t = 0; t < T; t++) {
                int half = t >= T1;
                int64_t tt = half ? t - T1 : t, Th = half ? T2 : T1;
                int64_t src = (bb * T + t) * H, dst = (bb * Th + tt) * H;
                memcpy(hq[half] + dst * dk, q + src * dk, sizeof(double) * (size_t)(H * dk));
                memcpy(hk[half] + dst * dk, k + src * dk, sizeof(double) * (size_t)(H * dk));
                memcpy(hv[half] + dst * dv, v + src * dv, sizeof(double) * (size_t)(H * dv));
                memcpy(hb[half] + dst, b + src, sizeof(double) * (size_t)H);
            }
        MUST_OK(run_fwd(&p1, &c, hq[0], hk[0], hv[0], hb[0], NULL, ho[0], s1));
        MUST_OK(run_fwd(&p2, &c, hq[1], hk[1], hv[1], hb[1], s1, ho[1], s2));
        CHECK(rel_err(s2, sf, ns) < 1e-13, "algo %d: final state of two halves == one pass (%.3g)", algo,
              rel_err(s2, sf, ns));
        double worst = 0;
        for (int64_t bb = 0; bb < B; bb++)
            for (int64_t t = T1; t < T; t++)
                for (int64_t j = 0; j < H * dv; j++)
                    worst = fmax(worst, fabs(ho[1][((bb * T2 + t - T1) * H) * dv + j] - o[((bb * T + t) * H) * dv + j]));
        CHECK(worst < 1e-13, "algo %d: outputs of the second half == one pass (%.3g)", algo, worst);
        for (int i = 0; i < 2; i++) { free(hq[i]); free(hk[i]); free(hv[i]); free(hb[i]); free(ho[i]); }
        free(s1); free(s2);
    }
    free(q); free(k); free(v); free(b); free(o); free(sf);
}

/* cu_seqlens: packed sequences == separate calls (outputs, final states, gradients) */
static void test_cu_seqlens(void) {
    const int64_t H = 2, dk = 5, dv = 4, N = 4;
    int64_t lens[4] = {20, 0, 45, 13}, cu[5] = {0}, T = 0;
    for (int n = 0; n < N; n++) cu[n + 1] = cu[n] + lens[n];
    T = cu[N];
    int64_t nq = T * H * dk, nv = T * H * dv, na = T * H, ns = N * H * dk * dv, sz = H * dk * dv;
    double *q = randn_arr(nq, 1), *k = randn_arr(nq, 0.5), *v = randn_arr(nv, 1), *b = rand_beta(na);
    double *s0 = randn_arr(ns, 0.2), *W1 = randn_arr(nv, 1), *W2 = randn_arr(ns, 1);
    double *o = darr(nv), *sf = darr(ns), *g[5] = {darr(nq), darr(nq), darr(nv), darr(na), darr(ns)};
    for (int algo = 1; algo <= 2; algo++) {
        runcfg c = {EFLA_FLOAT64, 0, algo, 16, 0, 0, 0};
        prob p = {1, T, H, dk, dv, N, cu};
        MUST_OK(run_fwd(&p, &c, q, k, v, b, s0, o, sf));
        MUST_OK(run_grad(&p, &c, q, k, v, b, s0, W1, W2, g[0], g[1], g[2], g[3], g[4]));
        double eo = 0, es = 0, eg = 0;
        for (int n = 0; n < N; n++) {
            int64_t L = lens[n], st = cu[n];
            prob pn = {1, L, H, dk, dv, 1, NULL};
            double *on = darr(L * H * dv), *sn = darr(sz);
            double *gn[5] = {darr(L * H * dk), darr(L * H * dk), darr(L * H * dv), darr(L * H), darr(sz)};
            MUST_OK(run_fwd(&pn, &c, q + st * H * dk, k + st * H * dk, v + st * H * dv, b + st * H, s0 + n * sz, on, sn));
            MUST_OK(run_grad(&pn, &c, q + st * H * dk, k + st * H * dk, v + st * H * dv, b + st * H, s0 + n * sz,
                             W1 + st * H * dv, W2 + n * sz, gn[0], gn[1], gn[2], gn[3], gn[4]));
            if (L) eo = fmax(eo, rel_err(o + st * H * dv, on, L * H * dv));
            es = fmax(es, rel_err(sf + n * sz, sn, sz));
            if (L) {
                eg = fmax(eg, rel_err(g[0] + st * H * dk, gn[0], L * H * dk));
                eg = fmax(eg, rel_err(g[1] + st * H * dk, gn[1], L * H * dk));
                eg = fmax(eg, rel_err(g[2] + st * H * dv, gn[2], L * H * dv));
                eg = fmax(eg, rel_err(g[3] + st * H, gn[3], L * H));
            }
            eg = fmax(eg, rel_err(g[4] + n * sz, gn[4], sz));
            free(on); free(sn);
            for (int w = 0; w < 5; w++) free(gn[w]);
        }
        CHECK(eo == 0 && es == 0 && eg == 0, "algo %d: cu_seqlens packed == separate calls (o %.3g, state %.3g, grads %.3g)",
              algo, eo, es, eg);
        /* the empty sequence passes its initial state through */
        CHECK(rel_err(sf + 1 * sz, s0 + 1 * sz, sz) == 0, "empty sequence: final state = initial state");
    }
    free(q); free(k); free(v); free(b); free(s0); free(W1); free(W2); free(o); free(sf);
    for (int w = 0; w < 5; w++) free(g[w]);
}

/* the one-token step == the sequence form */
static void test_step(void) {
    const int64_t B = 2, T = 10, H = 3, dk = 8, dv = 5;
    int64_t nq = B * T * H * dk, nv = B * T * H * dv, na = B * T * H, ns = B * H * dk * dv;
    double *q = randn_arr(nq, 1), *k = randn_arr(nq, 0.5), *v = randn_arr(nv, 1), *b = rand_beta(na);
    double *s0 = randn_arr(ns, 0.2);
    for (int dti = 0; dti < 2; dti++) {
        efla_dtype dt = dti ? EFLA_FLOAT64 : EFLA_FLOAT32;
        prob p = {B, T, H, dk, dv, B, NULL};
        double *orec = darr(nv), *ochk = darr(nv), *srec = darr(ns), *schk = darr(ns), *ostep = darr(nv);
        runcfg c = {dt, 0, EFLA_ALGO_RECURRENT, 64, 0, 0, 0};
        MUST_OK(run_fwd(&p, &c, q, k, v, b, s0, orec, srec));
        c.algo = EFLA_ALGO_CHUNKED;
        MUST_OK(run_fwd(&p, &c, q, k, v, b, s0, ochk, schk));
        int64_t s3k[3] = {B, H, dk}, s3v[3] = {B, H, dv}, s2[2] = {B, H}, s4[4] = {B, H, dk, dv};
        efla_tensor *S = mk(4, s4, dt, s0);
        double *tq = darr(B * H * dk), *tk = darr(B * H * dk), *tv = darr(B * H * dv), *tb = darr(B * H), *to = darr(B * H * dv);
        for (int64_t t = 0; t < T; t++) {
            for (int64_t bb = 0; bb < B; bb++) {
                int64_t r = (bb * T + t) * H;
                memcpy(tq + bb * H * dk, q + r * dk, sizeof(double) * (size_t)(H * dk));
                memcpy(tk + bb * H * dk, k + r * dk, sizeof(double) * (size_t)(H * dk));
                memcpy(tv + bb * H * dv, v + r * dv, sizeof(double) * (size_t)(H * dv));
                memcpy(tb + bb * H, b + r, sizeof(double) * (size_t)H);
            }
            efla_tensor *xq = mk(3, s3k, dt, tq), *xk = mk(3, s3k, dt, tk), *xv = mk(3, s3v, dt, tv), *xb = mk(2, s2, dt, tb);
            efla_tensor *o = NULL, *S2 = NULL;
            MUST_OK(efla_delta_rule_step(xq, xk, xv, xb, S, NULL, &o, &S2));
            CHECK(efla_tensor_ndim(o) == 3 && efla_tensor_size(o, 2) == dv, "step output is [B,H,dv]");
            rd(o, to);
            for (int64_t bb = 0; bb < B; bb++)
                memcpy(ostep + ((bb * T + t) * H) * dv, to + bb * H * dv, sizeof(double) * (size_t)(H * dv));
            efla_tensor_release(S);
            S = S2;
            efla_tensor_release(xq); efla_tensor_release(xk); efla_tensor_release(xv); efla_tensor_release(xb);
            efla_tensor_release(o);
        }
        double *sst = darr(ns);
        rd(S, sst);
        CHECK(rel_err(ostep, orec, nv) == 0 && rel_err(sst, srec, ns) == 0,
              "%s: step loop == recurrent sequence form bit for bit (o %.3g, state %.3g)", efla_dtype_name(dt),
              rel_err(ostep, orec, nv), rel_err(sst, srec, ns));
        double tol = dti ? 1e-13 : 1e-5;
        CHECK(rel_err(ostep, ochk, nv) < tol && rel_err(sst, schk, ns) < tol,
              "%s: step loop == chunked sequence form (o %.3g, state %.3g)", efla_dtype_name(dt),
              rel_err(ostep, ochk, nv), rel_err(sst, schk, ns));
        /* NULL state = zeros */
        efla_tensor *xq = mk(3, s3k, dt, tq), *xk = mk(3, s3k, dt, tk), *xv = mk(3, s3v, dt, tv), *xb = mk(2, s2, dt, tb);
        efla_tensor *o = NULL, *S2 = NULL;
        CHECK(efla_delta_rule_step(xq, xk, xv, xb, NULL, NULL, &o, &S2) == 0 && S2 &&
              efla_tensor_size(S2, 2) == dk, "step from a NULL (zero) state");
        efla_tensor_release(o); efla_tensor_release(S2);
        efla_tensor_release(xq); efla_tensor_release(xk); efla_tensor_release(xv); efla_tensor_release(xb);
        efla_tensor_release(S);
        free(orec); free(ochk); free(srec); free(schk); free(ostep); free(sst);
        free(tq); free(tk); free(tv); free(tb); free(to);
    }
    free(q); free(k); free(v); free(b); free(s0);
}

/* gradients through the step's views == the sequence form's with T = 1 */
static void test_step_grad(void) {
    const int64_t B = 2, H = 2, dk = 4, dv = 3;
    int64_t nq = B * H * dk, nv = B * H * dv, na = B * H, ns = B * H * dk * dv;
    double *q = randn_arr(nq, 1), *k = randn_arr(nq, 0.5), *v = randn_arr(nv, 1), *b = rand_beta(na);
    double *s0 = randn_arr(ns, 0.3), *W1 = randn_arr(nv, 1), *W2 = randn_arr(ns, 1);
    double *g[5] = {darr(nq), darr(nq), darr(nv), darr(na), darr(ns)}, *h[5] = {darr(nq), darr(nq), darr(nv), darr(na), darr(ns)};
    prob p = {B, 1, H, dk, dv, B, NULL};
    runcfg c = {EFLA_FLOAT64, 0, EFLA_ALGO_RECURRENT, 64, 0, 0, 0};
    MUST_OK(run_grad(&p, &c, q, k, v, b, s0, W1, W2, g[0], g[1], g[2], g[3], g[4]));
    int64_t s3k[3] = {B, H, dk}, s3v[3] = {B, H, dv}, s2[2] = {B, H}, s4[4] = {B, H, dk, dv};
    efla_tensor *in[5] = {mk(3, s3k, EFLA_FLOAT64, q), mk(3, s3k, EFLA_FLOAT64, k), mk(3, s3v, EFLA_FLOAT64, v),
                          mk(2, s2, EFLA_FLOAT64, b), mk(4, s4, EFLA_FLOAT64, s0)};
    for (int i = 0; i < 5; i++) MUST_OK(efla_set_requires_grad(in[i], 1));
    efla_tensor *o = NULL, *S = NULL, *w1 = mk(3, s3v, EFLA_FLOAT64, W1), *w2 = mk(4, s4, EFLA_FLOAT64, W2);
    MUST_OK(efla_delta_rule_step(in[0], in[1], in[2], in[3], in[4], NULL, &o, &S));
    MUST_OK(efla_backward(o, w1, 1));
    MUST_OK(efla_backward(S, w2, 0));
    double e = 0;
    int64_t cnt[5] = {nq, nq, nv, na, ns};
    for (int i = 0; i < 5; i++) {
        efla_tensor *gt = MUST(efla_grad(in[i]));
        rd(gt, h[i]);
        e = fmax(e, rel_err(h[i], g[i], cnt[i]));
        efla_tensor_release(gt);
        efla_tensor_release(in[i]);
    }
    CHECK(e < 1e-15, "step gradients == sequence gradients (%.3g)", e);
    efla_tensor_release(o); efla_tensor_release(S); efla_tensor_release(w1); efla_tensor_release(w2);
    for (int i = 0; i < 5; i++) { free(g[i]); free(h[i]); }
    free(q); free(k); free(v); free(b); free(s0); free(W1); free(W2);
}

/* enough work for several threads: the result does not depend on the thread count */
static void test_threads(void) {
    const int64_t B = 3, T = 200, H = 3, dk = 32, dv = 32;
    prob p = {B, T, H, dk, dv, B, NULL};
    int64_t nq = B * T * H * dk, nv = B * T * H * dv, na = B * T * H, ns = B * H * dk * dv;
    double *q = randn_arr(nq, 1), *k = randn_arr(nq, 0.2), *v = randn_arr(nv, 1), *b = rand_beta(na);
    double *s0 = randn_arr(ns, 0.1), *W1 = randn_arr(nv, 1), *W2 = randn_arr(ns, 1);
    double *g[5] = {darr(nq), darr(nq), darr(nv), darr(na), darr(ns)}, *h[5] = {darr(nq), darr(nq), darr(nv), darr(na), darr(ns)};
    int64_t cnt[5] = {nq, nq, nv, na, ns};
    int nt = efla_num_threads();
    for (int algo = 1; algo <= 2; algo++) {
        runcfg c = {EFLA_FLOAT32, 0, algo, 32, 0, 0, 0};
        efla_set_num_threads(1);
        MUST_OK(run_grad(&p, &c, q, k, v, b, s0, W1, W2, g[0], g[1], g[2], g[3], g[4]));
        efla_set_num_threads(nt > 1 ? nt : 2);
        MUST_OK(run_grad(&p, &c, q, k, v, b, s0, W1, W2, h[0], h[1], h[2], h[3], h[4]));
        double e = 0;
        for (int i = 0; i < 5; i++) e = fmax(e, rel_err(h[i], g[i], cnt[i]));
        CHECK(e == 0, "algo %d: 1 thread and %d threads give the same bits (%.3g)", algo, nt > 1 ? nt : 2, e);
    }
    efla_set_num_threads(nt);
    for (int i = 0; i < 5; i++) { free(g[i]); free(h[i]); }
    free(q); free(k); free(v); free(b); free(s0); free(W1); free(W2);
}

/* non-contiguous inputs (transposed views) give the contiguous result */
static void test_noncontiguous(void) {
    const int64_t B = 2, T = 19, H = 3, dk = 4, dv = 6;
    int64_t nq = B * T * H * dk, nv = B * T * H * dv, na = B * T * H;
    double *q = randn_arr(nq, 1), *k = randn_arr(nq, 0.5), *v = randn_arr(nv, 1), *b = rand_beta(na);
    /* [B,H,T,d] buffers, transposed to [B,T,H,d] */
    double *qh = darr(nq), *kh = darr(nq), *vh = darr(nv), *bh = darr(na);
    for (int64_t bb = 0; bb < B; bb++)
        for (int64_t t = 0; t < T; t++)
            for (int64_t h = 0; h < H; h++) {
                int64_t r = (bb * T + t) * H + h, r2 = (bb * H + h) * T + t;
                memcpy(qh + r2 * dk, q + r * dk, sizeof(double) * (size_t)dk);
                memcpy(kh + r2 * dk, k + r * dk, sizeof(double) * (size_t)dk);
                memcpy(vh + r2 * dv, v + r * dv, sizeof(double) * (size_t)dv);
                bh[r2] = b[r];
            }
    int64_t sq[4] = {B, H, T, dk}, sv[4] = {B, H, T, dv}, sb[3] = {B, H, T};
    efla_tensor *tq = mk(4, sq, EFLA_FLOAT64, qh), *tk = mk(4, sq, EFLA_FLOAT64, kh), *tv = mk(4, sv, EFLA_FLOAT64, vh);
    efla_tensor *tb = mk(3, sb, EFLA_FLOAT64, bh);
    efla_tensor *vq = MUST(efla_transpose(tq, 1, 2)), *vk = MUST(efla_transpose(tk, 1, 2));
    efla_tensor *vv = MUST(efla_transpose(tv, 1, 2)), *vb = MUST(efla_transpose(tb, 1, 2));
    CHECK(!efla_tensor_is_contiguous(vq), "the view is non-contiguous");
    efla_tensor *o = NULL;
    efla_delta_rule_opts op;
    efla_delta_rule_default_opts(&op);
    op.chunk_size = 16;
    MUST_OK(efla_delta_rule(vq, vk, vv, vb, NULL, NULL, &op, &o, NULL));
    double *ov = darr(nv), *oref = darr(nv);
    rd(o, ov);
    prob p = {B, T, H, dk, dv, B, NULL};
    ref_forward(&p, q, k, v, b, NULL, NULL, 0, 0, 0.5, oref, NULL);
    CHECK(rel_err(ov, oref, nv) < 1e-13, "non-contiguous inputs: %.3g", rel_err(ov, oref, nv));
    efla_tensor_release(o);
    efla_tensor_release(tq); efla_tensor_release(tk); efla_tensor_release(tv); efla_tensor_release(tb);
    efla_tensor_release(vq); efla_tensor_release(vk); efla_tensor_release(vv); efla_tensor_release(vb);
    free(q); free(k); free(v); free(b); free(qh); free(kh); free(vh); free(bh); free(ov); free(oref);
}

/* keys of norm up to 1e15 and beta in [0, 1]: no NaN or Inf (EFLA's spectral gate) */
static void test_huge_keys(void) {
    const int64_t B = 1, T = 70, H = 2, dk = 16, dv = 16;
    int64_t nq = B * T * H * dk, nv = B * T * H * dv, na = B * T * H, ns = B * H * dk * dv;
    double *q = randn_arr(nq, 1), *k = randn_arr(nq, 1), *v = randn_arr(nv, 1), *b = darr(na);
    for (int64_t r = 0; r < na; r++) {
        double norm = 0, target = pow(10.0, (double)(r % 16));   /* 1 .. 1e15 */
        for (int64_t i = 0; i < dk; i++) norm += k[r * dk + i] * k[r * dk + i];
        for (int64_t i = 0; i < dk; i++) k[r * dk + i] *= target / sqrt(norm);
        b[r] = (r % 5) / 4.0;                                         /* 0, .25, .5, .75, 1 */
    }
    double *W1 = randn_arr(nv, 1), *W2 = randn_arr(ns, 1);
    double *o = darr(nv), *sf = darr(ns), *g[5] = {darr(nq), darr(nq), darr(nv), darr(na), darr(ns)};
    prob p = {B, T, H, dk, dv, B, NULL};
    double *o1 = darr(nv);
    for (int dti = 0; dti < 2; dti++)
        for (int algo = 1; algo <= 2; algo++) {
            runcfg c = {dti ? EFLA_FLOAT64 : EFLA_FLOAT32, 0, algo, 16, 0, 0, 0};
            MUST_OK(run_fwd(&p, &c, q, k, v, b, NULL, o, sf));
            if (algo == 1) memcpy(o1, o, sizeof(double) * (size_t)nv);
            else CHECK(rel_err(o1, o, nv) < (dti ? 1e-12 : 1e-4), "%s: keys up to 1e15: chunked vs recurrent %.3g",
                       efla_dtype_name(c.dt), rel_err(o1, o, nv));
            CHECK(all_finite(o, nv) && all_finite(sf, ns), "%s algo %d: keys up to 1e15 give finite outputs",
                  efla_dtype_name(c.dt), algo);
            MUST_OK(run_grad(&p, &c, q, k, v, b, NULL, W1, W2, g[0], g[1], g[2], g[3], NULL));
            CHECK(all_finite(g[0], nq) && all_finite(g[1], nq) && all_finite(g[2], nv) && all_finite(g[3], na),
                  "%s algo %d: keys up to 1e15 give finite gradients", efla_dtype_name(c.dt), algo);
        }
    free(q); free(k); free(v); free(b); free(W1); free(W2); free(o); free(sf); free(o1);
    for (int w = 0; w < 5; w++) free(g[w]);
}

static void test_empty(void) {
    int64_t sq[4] = {2, 0, 2, 3}, sb[3] = {2, 0, 2}, ss[4] = {2, 2, 3, 3};
    double s0[36];
    for (int i = 0; i < 36; i++) s0[i] = i;
    efla_tensor *q = mk(4, sq, EFLA_FLOAT32, NULL), *b = mk(3, sb, EFLA_FLOAT32, NULL), *s = mk(4, ss, EFLA_FLOAT32, s0);
    efla_delta_rule_opts op;
    efla_delta_rule_default_opts(&op);
    op.output_final_state = 1;
    efla_tensor *o = NULL, *f = NULL;
    MUST_OK(efla_delta_rule(q, q, q, b, s, NULL, &op, &o, &f));
    double fv[36];
    rd(f, fv);
    CHECK(efla_tensor_numel(o) == 0 && rel_err(fv, s0, 36) == 0, "T = 0: empty output, final = initial state");
    efla_tensor_release(o); efla_tensor_release(f);
    efla_tensor_release(q); efla_tensor_release(b); efla_tensor_release(s);
}

/* ---- bad input ------------------------------------------------------------------------------------ */
#include "internal.h"
static void test_bad_input(void) {
    int64_t s4[4] = {2, 5, 3, 4}, s4v[4] = {2, 5, 3, 6}, s3[3] = {2, 5, 3}, ss[4] = {2, 3, 4, 6};
    double z[1024] = {0};
    efla_tensor *q = mk(4, s4, EFLA_FLOAT32, z), *v = mk(4, s4v, EFLA_FLOAT32, z), *b = mk(3, s3, EFLA_FLOAT32, z);
    efla_tensor *s = mk(4, ss, EFLA_FLOAT32, z), *o = NULL, *f = NULL;
    efla_delta_rule_opts op;
    efla_delta_rule_default_opts(&op);
    /* shapes */
    efla_tensor *q3 = mk(3, s3, EFLA_FLOAT32, z);
    CHECK_ERROR(efla_delta_rule(q3, q, v, b, NULL, NULL, &op, &o, NULL) < 0, "q must be [B,T,H,dk] (4 dims), got shape [2,5,3]");
    int64_t sT[4] = {2, 6, 3, 4};
    efla_tensor *kT = mk(4, sT, EFLA_FLOAT32, z);
    CHECK_ERROR(efla_delta_rule(q, kT, v, b, NULL, NULL, &op, &o, NULL) < 0, "q [2,5,3,4] and k [2,6,3,4] differ in B, T or H");
    int64_t sd[4] = {2, 5, 3, 8};
    efla_tensor *kd = mk(4, sd, EFLA_FLOAT32, z);
    CHECK_ERROR(efla_delta_rule(q, kd, v, b, NULL, NULL, &op, &o, NULL) < 0, "dk of q (4) and k (8) differ");
    int64_t sH[4] = {2, 5, 2, 6};
    efla_tensor *vH = mk(4, sH, EFLA_FLOAT32, z);
    CHECK_ERROR(efla_delta_rule(q, q, vH, b, NULL, NULL, &op, &o, NULL) < 0, "v [2,5,2,6] must be [B,T,H,dv]");
    int64_t sb2[2] = {2, 5};
    efla_tensor *b2 = mk(2, sb2, EFLA_FLOAT32, z);
    CHECK_ERROR(efla_delta_rule(q, q, v, b2, NULL, NULL, &op, &o, NULL) < 0, "beta [2,5] must be [B,T,H] = [2,5,3]");
    int64_t sbad[4] = {2, 3, 6, 4};
    efla_tensor *sb = mk(4, sbad, EFLA_FLOAT32, z);
    CHECK_ERROR(efla_delta_rule(q, q, v, b, sb, NULL, &op, &o, NULL) < 0, "initial_state [2,3,6,4] must be [N,H,dk,dv] = [2,3,4,6]");
    /* dtypes */
    efla_tensor *k64 = mk(4, s4, EFLA_FLOAT64, z);
    CHECK_ERROR(efla_delta_rule(q, k64, v, b, NULL, NULL, &op, &o, NULL) < 0, "k is float64 but q is float32");
    efla_tensor *s64 = mk(4, ss, EFLA_FLOAT64, z);
    CHECK_ERROR(efla_delta_rule(q, q, v, b, s64, NULL, &op, &o, NULL) < 0, "initial_state is float64 but q is float32");
    efla_tensor *qb = MUST(efla_to(q, EFLA_BFLOAT16, EFLA_DEVICE_CPU)), *vb = MUST(efla_to(v, EFLA_BFLOAT16, EFLA_DEVICE_CPU));
    efla_tensor *bb = MUST(efla_to(b, EFLA_BFLOAT16, EFLA_DEVICE_CPU));
    CHECK_ERROR(efla_delta_rule(qb, qb, vb, bb, NULL, NULL, &op, &o, NULL) < 0, "cast q, k, v and beta to float32");
    int64_t si[4] = {2, 5, 3, 4};
    efla_tensor *qi = MUST(efla_zeros(4, si, EFLA_INT64, EFLA_DEVICE_CPU));
    CHECK_ERROR(efla_delta_rule(qi, qi, qi, qi, NULL, NULL, &op, &o, NULL) < 0, "beta [2,5,3,4] must be [B,T,H]");
    /* devices: a header claiming cuda:0 (never dereferenced: the check comes first) */
    efla_tensor *kc = efla_tensor_alias(q);
    kc->device = EFLA_DEVICE_CUDA0;
    CHECK_ERROR(efla_delta_rule(q, kc, v, b, NULL, NULL, &op, &o, NULL) < 0, "k is on cuda:0 but q is on cpu");
    kc->device = EFLA_DEVICE_CPU;
    /* options */
    op.chunk_size = 48;
    CHECK_ERROR(efla_delta_rule(q, q, v, b, NULL, NULL, &op, &o, NULL) < 0, "chunk_size 48 is not allowed; use 16, 32, 64 or 128");
    efla_delta_rule_default_opts(&op);
    op.order = 7;
    CHECK_ERROR(efla_delta_rule(q, q, v, b, NULL, NULL, &op, &o, NULL) < 0, "order 7 is not supported");
    op.order = -1;
    CHECK_ERROR(efla_delta_rule(q, q, v, b, NULL, NULL, &op, &o, NULL) < 0, "order -1 is not supported");
    efla_delta_rule_default_opts(&op);
    op.algorithm = 5;
    CHECK_ERROR(efla_delta_rule(q, q, v, b, NULL, NULL, &op, &o, NULL) < 0, "algorithm 5 is unknown");
    efla_delta_rule_default_opts(&op);
    op.output_final_state = 1;
    CHECK_ERROR(efla_delta_rule(q, q, v, b, NULL, NULL, &op, &o, NULL) < 0, "final_state pointer is NULL");
    efla_delta_rule_default_opts(&op);
    op.scale = NAN;
    CHECK_ERROR(efla_delta_rule(q, q, v, b, NULL, NULL, &op, &o, NULL) < 0, "scale nan is not a finite number");
    efla_delta_rule_default_opts(&op);
    CHECK_ERROR(efla_delta_rule(NULL, q, v, b, NULL, NULL, &op, &o, NULL) < 0, "q is NULL");
    /* cu_seqlens */
    int64_t cu_ok[3] = {0, 2, 5}, cu_end[3] = {0, 2, 4}, cu_dec[4] = {0, 4, 2, 5}, n3 = 3, n4 = 4;
    efla_tensor *c1 = MUST(efla_from_buffer(1, &n3, EFLA_INT64, cu_ok, sizeof cu_ok));
    CHECK_ERROR(efla_delta_rule(q, q, v, b, NULL, c1, &op, &o, NULL) < 0, "the batch size must be 1");
    int64_t p4[4] = {1, 5, 3, 4}, p4v[4] = {1, 5, 3, 6}, p3[3] = {1, 5, 3}, ps[4] = {2, 3, 4, 6};
    efla_tensor *pq = mk(4, p4, EFLA_FLOAT32, z), *pv = mk(4, p4v, EFLA_FLOAT32, z), *pb = mk(3, p3, EFLA_FLOAT32, z);
    efla_tensor *ps0 = mk(4, ps, EFLA_FLOAT32, z);
    efla_tensor *c2 = MUST(efla_from_buffer(1, &n3, EFLA_INT64, cu_end, sizeof cu_end));
    CHECK_ERROR(efla_delta_rule(pq, pq, pv, pb, NULL, c2, &op, &o, NULL) < 0, "cu_seqlens must start at 0 and end at T = 5");
    efla_tensor *c3 = MUST(efla_from_buffer(1, &n4, EFLA_INT64, cu_dec, sizeof cu_dec));
    CHECK_ERROR(efla_delta_rule(pq, pq, pv, pb, NULL, c3, &op, &o, NULL) < 0, "cu_seqlens must be non-decreasing");
    efla_tensor *c4 = mk(1, &n3, EFLA_FLOAT32, z);
    CHECK_ERROR(efla_delta_rule(pq, pq, pv, pb, NULL, c4, &op, &o, NULL) < 0, "cu_seqlens must be a 1-d int64 tensor");
    int64_t s3n[4] = {3, 3, 4, 6};
    efla_tensor *sN = mk(4, s3n, EFLA_FLOAT32, z);
    CHECK_ERROR(efla_delta_rule(pq, pq, pv, pb, sN, c1, &op, &o, NULL) < 0,
                "initial_state [3,3,4,6] must be [N,H,dk,dv] = [2,3,4,6] (N = number of sequences in cu_seqlens)");
    /* a good packed call works, with its per-sequence states */
    op.output_final_state = 1;
    CHECK(efla_delta_rule(pq, pq, pv, pb, ps0, c1, &op, &o, &f) == 0 && efla_tensor_size(f, 0) == 2,
          "packed call with initial states [N,H,dk,dv]");
    efla_tensor_release(o); efla_tensor_release(f); o = f = NULL;
    /* the step */
    efla_delta_rule_default_opts(&op);
    efla_tensor *n1 = NULL, *n2 = NULL;
    CHECK_ERROR(efla_delta_rule_step(q, q, v, b, NULL, &op, &n1, &n2) < 0, "one token needs q, k [B,H,dk]");
    int64_t t3[3] = {2, 3, 4}, t3v[3] = {2, 3, 6}, t2[2] = {2, 3}, tsb[4] = {2, 3, 4, 7};
    efla_tensor *sq = mk(3, t3, EFLA_FLOAT32, z), *sv = mk(3, t3v, EFLA_FLOAT32, z), *sbt = mk(2, t2, EFLA_FLOAT32, z);
    efla_tensor *sst = mk(4, tsb, EFLA_FLOAT32, z);
    CHECK_ERROR(efla_delta_rule_step(sq, sq, sv, sbt, sst, &op, &n1, &n2) < 0, "delta_rule_step: delta_rule: initial_state [2,3,4,7] must be");
    /* alpha */
    CHECK_ERROR(efla_delta_rule_alpha(b, b, 9, 0) == NULL, "order 9 is not supported");
    CHECK_ERROR(efla_delta_rule_alpha(qi, qi, 0, 0) == NULL, "must be floating point");
    efla_tensor *all[] = {q, v, b, s, q3, kT, kd, vH, b2, sb, k64, s64, qb, vb, bb, qi, kc, c1, pq, pv, pb, ps0, c2, c3, c4,
                          sq, sv, sbt, sst, sN};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) efla_tensor_release(all[i]);
}

int main(int argc, char **argv) {
    TEST_ARGS(argc, argv);
    int64_t live0 = efla_live_tensors();
    RUN(test_alpha_formulas);
    RUN(test_alpha_extremes);
    RUN(test_alpha_derivatives);
    RUN(test_alpha_reference_eps);
    RUN(test_alpha_op_autograd);
    RUN(test_kernel_forward_and_fd);
    RUN(test_chunked_vs_recurrent);
    RUN(test_gradients_fd);
    RUN(test_split_sequence);
    RUN(test_cu_seqlens);
    RUN(test_step);
    RUN(test_step_grad);
    RUN(test_threads);
    RUN(test_noncontiguous);
    RUN(test_huge_keys);
    RUN(test_empty);
    RUN(test_bad_input);
    CHECK_NO_LEAK(live0);
    TEST_SUMMARY();
}

/* attention_impl.h: the body of core/cpu/attention.c's kernels for one element type,
 * included once per type with ATT_REAL (float or double) and ATT_SUFFIX (f32, f64). */
#define ATT_CAT2(a, b) a##_##b
#define ATT_CAT(a, b) ATT_CAT2(a, b)
#define ATT_FN(name) ATT_CAT(name, ATT_SUFFIX)

static double ATT_FN(att_dot)(const ATT_REAL *x, const ATT_REAL *y, int64_t n) {
    double s = 0;
    for (int64_t d = 0; d < n; d++) s += (double)x[d] * y[d];
    return s;
}

static int ATT_FN(att_fwd)(const efla_attention_args *a, const ATT_REAL *q, const ATT_REAL *k,
                           const ATT_REAL *v, ATT_REAL *o, ATT_REAL *lse) {
    const int64_t B = a->B, Tq = a->Tq, Tk = a->Tk, H = a->H, dk = a->dk, dv = a->dv;
    const int64_t rows = B * H * Tq;
    int failed = 0;
#pragma omp parallel if (rows * Tk * dk > 32768)
    {
        double *s = malloc(sizeof(double) * (size_t)(Tk + dv));
        if (!s) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 8)
        for (int64_t r = 0; r < rows; r++) {
            if (!s) continue;
            const int64_t i = r % Tq, h = (r / Tq) % H, b = r / (Tq * H);
            int64_t lo, hi;
            key_range(a, i, &lo, &hi);
            const ATT_REAL *qi = q + ((b * Tq + i) * H + h) * dk;
            double m = -INFINITY;
            for (int64_t j = lo; j <= hi; j++) {
                double x = a->scale * ATT_FN(att_dot)(qi, k + ((b * Tk + j) * H + h) * dk, dk);
                s[j - lo] = x;
                if (x > m) m = x;
            }
            double *acc = s + Tk, sum = 0;
            for (int64_t e = 0; e < dv; e++) acc[e] = 0;
            for (int64_t j = lo; j <= hi; j++) {
                double p = exp(s[j - lo] - m);
                sum += p;
                const ATT_REAL *vj = v + ((b * Tk + j) * H + h) * dv;
                for (int64_t e = 0; e < dv; e++) acc[e] += p * vj[e];
            }
            ATT_REAL *oi = o + ((b * Tq + i) * H + h) * dv;
            for (int64_t e = 0; e < dv; e++) oi[e] = (ATT_REAL)(acc[e] / sum);
            lse[(b * H + h) * Tq + i] = (ATT_REAL)(m + log(sum));
        }
        free(s);
    }
    return failed ? efla_fail("attention: out of memory for the per-thread score rows (%lld keys)", (long long)Tk) : 0;
}

static int ATT_FN(att_bwd)(const efla_attention_args *a, const ATT_REAL *q, const ATT_REAL *k,
                           const ATT_REAL *v, const ATT_REAL *o, const ATT_REAL *lse, const ATT_REAL *d_o,
                           ATT_REAL *dq, ATT_REAL *dk_out, ATT_REAL *dv_out) {
    const int64_t B = a->B, Tq = a->Tq, Tk = a->Tk, H = a->H, dk = a->dk, dv = a->dv;
    int failed = 0;
#pragma omp parallel if (B * H * Tq * Tk * dk > 32768)
    {
        /* per (b, h): dK [Tk, dk], dV [Tk, dv] and one dq row, in double */
        double *gk = malloc(sizeof(double) * (size_t)(Tk * (dk + dv) + dk));
        if (!gk) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t bh = 0; bh < B * H; bh++) {
            if (!gk) continue;
            const int64_t b = bh / H, h = bh % H;
            double *gv = gk + Tk * dk, *gq = gv + Tk * dv;
            for (int64_t x = 0; x < Tk * (dk + dv); x++) gk[x] = 0;
            for (int64_t i = 0; i < Tq; i++) {
                int64_t lo, hi;
                key_range(a, i, &lo, &hi);
                const int64_t qoff = ((b * Tq + i) * H + h);
                const ATT_REAL *qi = q + qoff * dk, *doi = d_o + qoff * dv;
                const double l = lse[(b * H + h) * Tq + i];
                const double D = ATT_FN(att_dot)(doi, o + qoff * dv, dv);
                for (int64_t d = 0; d < dk; d++) gq[d] = 0;
                for (int64_t j = lo; j <= hi; j++) {
                    const ATT_REAL *kj = k + ((b * Tk + j) * H + h) * dk, *vj = v + ((b * Tk + j) * H + h) * dv;
                    double p = exp(a->scale * ATT_FN(att_dot)(qi, kj, dk) - l);
                    double ds = p * (ATT_FN(att_dot)(doi, vj, dv) - D) * a->scale;
                    double *gkj = gk + j * dk, *gvj = gv + j * dv;
                    for (int64_t d = 0; d < dk; d++) {
                        gq[d] += ds * kj[d];
                        gkj[d] += ds * qi[d];
                    }
                    for (int64_t e = 0; e < dv; e++) gvj[e] += p * doi[e];
                }
                ATT_REAL *dqi = dq + qoff * dk;
                for (int64_t d = 0; d < dk; d++) dqi[d] = (ATT_REAL)gq[d];
            }
            for (int64_t j = 0; j < Tk; j++) {
                ATT_REAL *dkj = dk_out + ((b * Tk + j) * H + h) * dk, *dvj = dv_out + ((b * Tk + j) * H + h) * dv;
                for (int64_t d = 0; d < dk; d++) dkj[d] = (ATT_REAL)gk[j * dk + d];
                for (int64_t e = 0; e < dv; e++) dvj[e] = (ATT_REAL)gv[j * dv + e];
            }
        }
        free(gk);
    }
    return failed ? efla_fail("attention backward: out of memory for the per-thread gradients (%lld keys)", (long long)Tk) : 0;
}

#undef ATT_CAT2
#undef ATT_CAT
#undef ATT_FN

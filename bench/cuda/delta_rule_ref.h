/* delta_rule_ref.h: the float64 reference of the delta-rule kernels and the inputs they are
 * checked on, shared by the kernel workbench (delta_rule_dev.cu, on a GPU) and the host emulator
 * of the tensor-core chunk kernels (delta_rule_chunk_emu.cpp, no GPU): a seeded generator, the
 * sequence layouts (whole batch rows; every row cut into three packed sequences), the recurrence
 * forward and backward, and the norm-relative error. Needs bf16 and its conversions first. */
#ifndef EFLA_BENCH_DELTA_RULE_REF_H
#define EFLA_BENCH_DELTA_RULE_REF_H
#include <math.h>
#include <stdint.h>
#include <vector>

static double urand(uint64_t *s) { *s = *s * 6364136223846793005ULL + 1442695040888963407ULL; return (double)(*s >> 11) / 9007199254740992.0; }
static double nrand(uint64_t *s) { double u = urand(s) + 1e-300, w = urand(s); return sqrt(-2 * log(u)) * cos(6.283185307179586 * w); }
static float bf16_round(double x) { return __bfloat162float(__float2bfloat16((float)x)); }

/* The sequences of a batch, as efla_delta_rule_args holds them: sequence n is tokens
 * [start[n], start[n] + len[n]) of batch row batch[n]. */
struct Seqs { std::vector<int64_t> batch, start, len; };
static Seqs whole_rows(int B, int T) {
    Seqs s;
    for (int b = 0; b < B; b++) { s.batch.push_back(b); s.start.push_back(0); s.len.push_back(T); }
    return s;
}
/* every row cut into three packed sequences (cu_seqlens), at places that differ per row and
 * fall inside chunks, so sequences start and end mid-chunk */
static Seqs split_rows(int B, int T) {
    Seqs s;
    for (int b = 0; b < B; b++) {
        const int c1 = T / 5 + 3 * b + 1, c2 = c1 + T / 2 - 5;
        const int cuts[4] = {0, c1, c2, T};
        for (int i = 0; i < 3; i++) { s.batch.push_back(b); s.start.push_back(cuts[i]); s.len.push_back(cuts[i + 1] - cuts[i]); }
    }
    return s;
}

/* float64 recurrence over every (sequence, head) (token t of sequence n, head h, at row
 * ((batch[n]*T + start[n] + t)*H + h)): S_t = S + a k (v - S^T k)^T, o_t = scale S_t^T q_t,
 * starting from s0 (empty: zero) and ending in sf; the backward keeps every state, starts from
 * dsf (empty: zero) and ends in ds0. q, k have dk columns; v, dO, o have dv; states are
 * [N, H, dk, dv]. */
struct Ref { std::vector<double> o, dq, dk, dv, da, sf, ds0; };
static Ref reference(int B, int T, int H, int dk, int dv, const Seqs &sq, const std::vector<float> &q,
                     const std::vector<float> &k, const std::vector<float> &v, const std::vector<float> &al,
                     const std::vector<float> &dO, const std::vector<float> &s0, const std::vector<float> &dsf, double scale) {
    Ref r;
    const size_t rows = (size_t)B * T * H, N = sq.len.size(), dd = (size_t)dk * dv;
    r.o.assign(rows * dv, 0); r.dq.assign(rows * dk, 0); r.dk.assign(rows * dk, 0); r.dv.assign(rows * dv, 0);
    r.da.assign(rows, 0);
    r.sf.assign(N * H * dd, 0); r.ds0.assign(N * H * dd, 0);
    std::vector<double> S((size_t)(T + 1) * dd), dS(dd), u(dv), du(dv);
    for (size_t sn = 0; sn < N; sn++)
        for (int h = 0; h < H; h++) {
            const size_t st = (sn * H + h) * dd;
            const int L = (int)sq.len[sn];
            for (size_t e = 0; e < dd; e++) S[e] = s0.empty() ? 0.0 : s0[st + e];
            for (int t = 0; t < L; t++) {
                size_t row = ((size_t)sq.batch[sn] * T + sq.start[sn] + t) * H + h;
                const double *Sp = &S[(size_t)t * dd];
                double *Sn = &S[(size_t)(t + 1) * dd];
                for (int j = 0; j < dv; j++) {
                    double s = 0;
                    for (int i = 0; i < dk; i++) s += Sp[i * dv + j] * k[row * dk + i];
                    u[j] = v[row * dv + j] - s;
                }
                for (int i = 0; i < dk; i++)
                    for (int j = 0; j < dv; j++) Sn[i * dv + j] = Sp[i * dv + j] + al[row] * k[row * dk + i] * u[j];
                for (int j = 0; j < dv; j++) {
                    double s = 0;
                    for (int i = 0; i < dk; i++) s += Sn[i * dv + j] * q[row * dk + i];
                    r.o[row * dv + j] = scale * s;
                }
            }
            for (size_t e = 0; e < dd; e++) { r.sf[st + e] = S[(size_t)L * dd + e]; dS[e] = dsf.empty() ? 0.0 : dsf[st + e]; }
            for (int t = L - 1; t >= 0; t--) {
                size_t row = ((size_t)sq.batch[sn] * T + sq.start[sn] + t) * H + h;
                const double *Sp = &S[(size_t)t * dd], *Sn = &S[(size_t)(t + 1) * dd];
                for (int i = 0; i < dk; i++) {
                    double s = 0;
                    for (int j = 0; j < dv; j++) {
                        dS[i * dv + j] += scale * q[row * dk + i] * dO[row * dv + j];
                        s += Sn[i * dv + j] * dO[row * dv + j];
                    }
                    r.dq[row * dk + i] = scale * s;
                }
                for (int j = 0; j < dv; j++) {
                    double s = 0;
                    for (int i = 0; i < dk; i++) s += Sp[i * dv + j] * k[row * dk + i];
                    u[j] = v[row * dv + j] - s;
                }
                double da = 0;
                for (int j = 0; j < dv; j++) {
                    double s = 0;
                    for (int i = 0; i < dk; i++) s += dS[i * dv + j] * k[row * dk + i];
                    du[j] = al[row] * s;
                    da += s * u[j];
                }
                r.da[row] = da;
                for (int i = 0; i < dk; i++) {
                    double gu = 0, sd = 0;
                    for (int j = 0; j < dv; j++) { gu += dS[i * dv + j] * u[j]; sd += Sp[i * dv + j] * du[j]; }
                    r.dk[row * dk + i] = al[row] * gu - sd;
                }
                for (int j = 0; j < dv; j++) r.dv[row * dv + j] = du[j];
                for (int i = 0; i < dk; i++)
                    for (int j = 0; j < dv; j++) dS[i * dv + j] -= k[row * dk + i] * du[j];
            }
            for (size_t e = 0; e < dd; e++) r.ds0[st + e] = dS[e];
        }
    return r;
}
static double rel_err_host(const std::vector<double> &ref, const std::vector<double> &x) {
    double num = 0, den = 0;
    for (size_t i = 0; i < x.size(); i++) {
        if (x[i] != x[i]) return INFINITY;
        num += (x[i] - ref[i]) * (x[i] - ref[i]);
        den += ref[i] * ref[i];
    }
    return sqrt(num / (den > 0 ? den : 1));
}

#endif

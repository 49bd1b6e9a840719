/* delta_rule.c: the CPU kernels of the delta rule (EFLA, DeltaNet, Runge-Kutta orders).
 *
 * The maths is in docs/MATH.md: S_t = S_{t-1} + alpha_t k_t (v_t - S_{t-1}^T k_t)^T,
 * o_t = scale S_t^T q_t; gated calls (§6) decay the state by e^{g_t} first and step the value
 * term by alpha'_t. The order of the step only changes the scalar alpha, which the
 * front end (core/ops_delta_rule.c) computes, so these kernels take alpha as an input and
 * return its gradient.
 *
 * Two algorithms, same results up to rounding:
 *  - chunked (WY/UT form, docs/MATH.md §4): per chunk of C tokens a handful of small matrix
 *    products and two triangular solves, with register-tiled kernels of our own (at these
 *    sizes, <= 128 x 128 and cache resident, they beat OpenBLAS calls: its per-call cost,
 *    its slow small trsm, and on some machines a wrong cpu detection; see the bench);
 *  - recurrent: token by token, one fused pass over the dk x dv state per token (the
 *    state stays in L1/L2).
 * Both record the state entering every C-token block ("chunk states": layout
 * [sum_n ceil(len_n/C), H, dk, dv], sequence by sequence), and both backwards start from
 * those states (saved by the forward, or recomputed when chunk_states is NULL), so the
 * saved states of one algorithm serve the backward of the other.
 *
 * Threads: OpenMP over (sequence, head) pairs, one pair per thread at a time, and no more
 * threads than the work pays for. A single pair therefore runs on one core.
 *
 * The type-generic code lives in delta_rule_impl.h, included once per real type. */
#include "cpu_kernels.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static size_t round64(size_t n) { return (n + 63) & ~(size_t)63; }

/* first global chunk index of each sequence (chunk-state layout) */
static int64_t *chunk_offsets(const efla_delta_rule_args *A) {
    int64_t *off = malloc(sizeof(int64_t) * (size_t)(A->N + 1));
    if (!off) { efla_fail("delta_rule: out of memory"); return NULL; }
    off[0] = 0;
    for (int64_t n = 0; n < A->N; n++)
        off[n + 1] = off[n] + (A->seq_len[n] + A->chunk_size - 1) / A->chunk_size;
    return off;
}

/* Threads for one call: at most one per pair, and one per ~2^20 multiply-adds of state
 * work (below that a parallel region's start-up and barrier cost more than they save,
 * badly so on a loaded machine). */
static int pick_threads(const efla_delta_rule_args *A) {
#ifdef _OPENMP
    int64_t pairs = A->N * A->H, tokens = 0;
    for (int64_t n = 0; n < A->N; n++) tokens += A->seq_len[n];
    int64_t by_work = (tokens * A->H * A->dk * A->dv * 8) >> 20;
    int64_t nt = omp_get_max_threads();
    if (nt > pairs) nt = pairs;
    if (nt > by_work) nt = by_work;
    return nt < 1 ? 1 : (int)nt;
#else
    (void)A;
    return 1;
#endif
}

/* The kernels' vector width in bytes: the target's register width (zmm with AVX-512, else
 * ymm). The transpose masks interleave blocks of 1, 2, 4 (, 8) lanes of a vector pair. */
#define DR_MASKS_8                                                                                  \
    {{0, 8, 2, 10, 4, 12, 6, 14}, {1, 9, 3, 11, 5, 13, 7, 15}, {0, 1, 8, 9, 4, 5, 12, 13},           \
     {2, 3, 10, 11, 6, 7, 14, 15}, {0, 1, 2, 3, 8, 9, 10, 11}, {4, 5, 6, 7, 12, 13, 14, 15}}
#ifdef __AVX512F__
#define DR_VBYTES 64
#define DR_NV 4 /* vectors per row of a product's register tile: 4 x DR_NV accumulators */
#define DR_MASKS_F32                                                                                \
    {{0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30},                                   \
     {1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31},                                   \
     {0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29},                                    \
     {2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31},                                  \
     {0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27},                                    \
     {4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31},                                  \
     {0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23},                                      \
     {8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31}}
#define DR_MASKS_F64 DR_MASKS_8
#else
#define DR_VBYTES 32
#define DR_NV 2 /* 16 ymm registers: 8 accumulators, 2 rows of B, a broadcast */
#define DR_MASKS_F32 DR_MASKS_8
#define DR_MASKS_F64 {{0, 4, 2, 6}, {1, 5, 3, 7}, {0, 1, 4, 5}, {2, 3, 6, 7}}
#endif

#define R float
#define DR_SFX _f32
#define DR_INT int32_t
#define DR_TRANSPOSE_MASKS DR_MASKS_F32
#include "delta_rule_impl.h"
#undef R
#undef DR_SFX

#define R double
#define DR_SFX _f64
#define DR_INT int64_t
#define DR_TRANSPOSE_MASKS DR_MASKS_F64
#include "delta_rule_impl.h"
#undef R
#undef DR_SFX

static int check_args(const char *op, const efla_delta_rule_args *a, const efla_delta_rule_buffers *buf) {
    if (!buf->log_decay != !buf->alpha_v)
        return efla_fail("%s: a gated call needs both alpha_v and log_decay (or neither)", op);
    if (a->dtype == EFLA_BFLOAT16)
        return efla_fail("%s: bfloat16 is not supported by the cpu kernels; cast q, k, v, beta "
                         "(and the state) to float32 first", op);
    if (a->dtype != EFLA_FLOAT32 && a->dtype != EFLA_FLOAT64)
        return efla_fail("%s: dtype %s is not supported (use float32 or float64)", op,
                         efla_dtype_name(a->dtype));
    if (a->state_dtype != a->dtype)
        return efla_fail("%s: the cpu kernels keep the state in the inputs' dtype (%s), got %s", op,
                         efla_dtype_name(a->dtype), efla_dtype_name(a->state_dtype));
    if (a->chunk_size != 16 && a->chunk_size != 32 && a->chunk_size != 64 && a->chunk_size != 128)
        return efla_fail("%s: chunk_size %d is not allowed; use 16, 32, 64 or 128", op, a->chunk_size);
    if (a->algorithm != EFLA_ALGO_CHUNKED && a->algorithm != EFLA_ALGO_RECURRENT)
        return efla_fail("%s: the kernel needs algorithm chunked (1) or recurrent (2), got %d", op,
                         a->algorithm);
    return 0;
}

int efla_cpu_delta_rule_fwd(const efla_delta_rule_args *a, const efla_delta_rule_buffers *buf) {
    if (check_args("delta_rule", a, buf)) return -1;
    if (a->dk == 0 && buf->o)   /* no key coordinates: the state is empty and o = 0 */
        memset(buf->o, 0, efla_dtype_size(a->dtype) * (size_t)(a->B * a->T * a->H * a->dv));
    if (a->N * a->H == 0 || a->dk == 0 || a->dv == 0) return 0;
    return a->dtype == EFLA_FLOAT32 ? fwd_all_f32(a, buf) : fwd_all_f64(a, buf);
}

int efla_cpu_delta_rule_bwd(const efla_delta_rule_args *a, const efla_delta_rule_buffers *buf) {
    if (check_args("delta_rule backward", a, buf)) return -1;
    if (a->dk == 0 || a->dv == 0) {   /* degenerate heads: every gradient is zero */
        size_t es = efla_dtype_size(a->dtype), bth = (size_t)(a->B * a->T * a->H);
        memset(buf->dv, 0, es * bth * (size_t)a->dv);
        memset(buf->dalpha, 0, es * bth);
        if (buf->log_decay) memset(buf->dalpha_v, 0, es * bth), memset(buf->dlog_decay, 0, es * bth);
        if (a->dk) memset(buf->dk, 0, es * bth * (size_t)a->dk), memset(buf->dq, 0, es * bth * (size_t)a->dk);
        return 0;
    }
    if (a->N * a->H == 0) return 0;
    return a->dtype == EFLA_FLOAT32 ? bwd_all_f32(a, buf) : bwd_all_f64(a, buf);
}

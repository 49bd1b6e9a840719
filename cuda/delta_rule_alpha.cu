/* delta_rule_alpha.cu: lambda = |k|^2, the step size alpha and the chain rule through alpha
 * on the device, so that a CUDA training step never copies per-token scalars to the host
 * (docs/MATH.md §3; the formulas are core/alpha_formulas.h, the host's own, in double). The
 * kernels and their layout are in delta_rule_alpha_kernels.cuh; here, their launches. */
#include "kernels.cuh"
#include "delta_rule_alpha_kernels.cuh"

namespace {

template <typename T>
int alpha_fwd_launch(int64_t n, int64_t dk, const void *k, const void *beta, int order, int ref, void *alpha,
                     void *lambda) {
    alpha_fwd_kernel<T><<<cu_blocks(n * 32, 256), 256>>>(n, dk, (const T *)k, (const T *)beta, order, ref,
                                                          (T *)alpha, (double *)lambda);
    CU_CHECK_LAUNCH("delta_rule_alpha_fwd");
    return 0;
}

template <typename T>
int alpha_bwd_launch(int64_t n, int64_t dk, const void *k, const void *beta, const void *lambda, const void *g,
                     int order, int ref, void *dkk, void *dbeta) {
    alpha_bwd_kernel<T><<<cu_blocks((n + 31) / 32 * 32, 256), 256>>>(n, dk, (const T *)k, (const T *)beta,
                                                          (const double *)lambda, (const T *)g, order, ref,
                                                          (T *)dkk, (T *)dbeta);
    CU_CHECK_LAUNCH("delta_rule_alpha_bwd");
    return 0;
}

} // namespace

int efla_cuda_delta_rule_alpha_fwd(int64_t n, int64_t dk, efla_dtype dt, const void *k, const void *beta,
                                   int order, int reference_eps, void *alpha, void *lambda) {
    if (n == 0) return 0;
    switch (dt) {
    case EFLA_FLOAT32: return alpha_fwd_launch<float>(n, dk, k, beta, order, reference_eps, alpha, lambda);
    case EFLA_FLOAT64: return alpha_fwd_launch<double>(n, dk, k, beta, order, reference_eps, alpha, lambda);
    case EFLA_BFLOAT16: return alpha_fwd_launch<bf16>(n, dk, k, beta, order, reference_eps, alpha, lambda);
    default: return efla_fail("delta_rule: alpha on cuda needs float32, float64 or bfloat16, got %s", efla_dtype_name(dt));
    }
}

int efla_cuda_delta_rule_alpha_bwd(int64_t n, int64_t dk, efla_dtype dt, const void *k, const void *beta,
                                   const void *lambda, const void *dalpha, int order, int reference_eps,
                                   void *dk_inout, void *dbeta) {
    if (n == 0) return 0;
    switch (dt) {
    case EFLA_FLOAT32: return alpha_bwd_launch<float>(n, dk, k, beta, lambda, dalpha, order, reference_eps, dk_inout, dbeta);
    case EFLA_FLOAT64: return alpha_bwd_launch<double>(n, dk, k, beta, lambda, dalpha, order, reference_eps, dk_inout, dbeta);
    case EFLA_BFLOAT16: return alpha_bwd_launch<bf16>(n, dk, k, beta, lambda, dalpha, order, reference_eps, dk_inout, dbeta);
    default: return efla_fail("delta_rule backward: alpha on cuda needs float32, float64 or bfloat16, got %s", efla_dtype_name(dt));
    }
}

namespace {

template <typename T>
int alpha_v_fwd_launch(int64_t n, const void *beta, const void *lambda, const void *g, int order, void *alpha_v) {
    alpha_v_fwd_kernel<T><<<cu_blocks(n, 256), 256>>>(n, (const T *)beta, (const double *)lambda, (const T *)g,
                                                      order, (T *)alpha_v);
    CU_CHECK_LAUNCH("delta_rule_alpha_v_fwd");
    return 0;
}

template <typename T>
int alpha_v_bwd_launch(int64_t n, int64_t dk, const void *k, const void *beta, const void *lambda, const void *g,
                       const void *gv, int order, void *dkk, void *dbeta, void *dg) {
    alpha_v_bwd_kernel<T><<<cu_blocks((n + 31) / 32 * 32, 256), 256>>>(n, dk, (const T *)k, (const T *)beta,
                                                            (const double *)lambda, (const T *)g, (const T *)gv,
                                                            order, (T *)dkk, (T *)dbeta, (T *)dg);
    CU_CHECK_LAUNCH("delta_rule_alpha_v_bwd");
    return 0;
}

} // namespace

int efla_cuda_delta_rule_alpha_v_fwd(int64_t n, efla_dtype dt, const void *beta, const void *lambda,
                                     const void *log_decay, int order, void *alpha_v) {
    if (n == 0) return 0;
    switch (dt) {
    case EFLA_FLOAT32: return alpha_v_fwd_launch<float>(n, beta, lambda, log_decay, order, alpha_v);
    case EFLA_FLOAT64: return alpha_v_fwd_launch<double>(n, beta, lambda, log_decay, order, alpha_v);
    case EFLA_BFLOAT16: return alpha_v_fwd_launch<bf16>(n, beta, lambda, log_decay, order, alpha_v);
    default: return efla_fail("delta_rule: alpha' on cuda needs float32, float64 or bfloat16, got %s", efla_dtype_name(dt));
    }
}

int efla_cuda_delta_rule_alpha_v_bwd(int64_t n, int64_t dk, efla_dtype dt, const void *k, const void *beta,
                                     const void *lambda, const void *log_decay, const void *dalpha_v, int order,
                                     void *dk_inout, void *dbeta_inout, void *dlog_decay_inout) {
    if (n == 0) return 0;
    switch (dt) {
    case EFLA_FLOAT32: return alpha_v_bwd_launch<float>(n, dk, k, beta, lambda, log_decay, dalpha_v, order, dk_inout, dbeta_inout, dlog_decay_inout);
    case EFLA_FLOAT64: return alpha_v_bwd_launch<double>(n, dk, k, beta, lambda, log_decay, dalpha_v, order, dk_inout, dbeta_inout, dlog_decay_inout);
    case EFLA_BFLOAT16: return alpha_v_bwd_launch<bf16>(n, dk, k, beta, lambda, log_decay, dalpha_v, order, dk_inout, dbeta_inout, dlog_decay_inout);
    default: return efla_fail("delta_rule backward: alpha' on cuda needs float32, float64 or bfloat16, got %s", efla_dtype_name(dt));
    }
}

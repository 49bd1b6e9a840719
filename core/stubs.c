/* stubs.c: weak placeholders for public functions whose family has not landed yet.
 * A real definition in another file overrides each one. Removed once every family exists. */
#include "internal.h"
#include "autograd.h"
#define WEAK __attribute__((weak))

WEAK const char * efla_unary_name(efla_unary_op op) { return efla_fail_null("unary_name: not implemented yet"); }
WEAK const char * efla_binary_name(efla_binary_op op) { return efla_fail_null("binary_name: not implemented yet"); }
WEAK efla_tensor * efla_unary(efla_unary_op op, const efla_tensor *t) { return efla_fail_null("unary: not implemented yet"); }
WEAK efla_tensor * efla_binary(efla_binary_op op, const efla_tensor *a, const efla_tensor *b) { return efla_fail_null("binary: not implemented yet"); }
WEAK efla_tensor * efla_binary_scalar(efla_binary_op op, const efla_tensor *a, double s, int scalar_first) { return efla_fail_null("binary_scalar: not implemented yet"); }
WEAK int efla_binary_(efla_binary_op op, efla_tensor *a, const efla_tensor *b) { return efla_fail("binary_: not implemented yet"); }
WEAK efla_tensor * efla_clamp(const efla_tensor *t, double lo, double hi) { return efla_fail_null("clamp: not implemented yet"); }
WEAK efla_tensor * efla_where(const efla_tensor *cond, const efla_tensor *a, const efla_tensor *b) { return efla_fail_null("where: not implemented yet"); }
WEAK efla_tensor * efla_masked_fill(const efla_tensor *t, const efla_tensor *mask, double value) { return efla_fail_null("masked_fill: not implemented yet"); }
WEAK efla_tensor * efla_tril(const efla_tensor *t, int64_t k) { return efla_fail_null("tril: not implemented yet"); }
WEAK efla_tensor * efla_triu(const efla_tensor *t, int64_t k) { return efla_fail_null("triu: not implemented yet"); }
WEAK const char * efla_reduce_name(efla_reduce_op op) { return efla_fail_null("reduce_name: not implemented yet"); }
WEAK efla_tensor * efla_reduce(efla_reduce_op op, const efla_tensor *t, int ndims, const int *dims, int keepdim, double param) { return efla_fail_null("reduce: not implemented yet"); }
WEAK efla_tensor * efla_matmul(const efla_tensor *a, const efla_tensor *b) { return efla_fail_null("matmul: not implemented yet"); }
WEAK efla_tensor * efla_softmax(const efla_tensor *t, int dim) { return efla_fail_null("softmax: not implemented yet"); }
WEAK efla_tensor * efla_log_softmax(const efla_tensor *t, int dim) { return efla_fail_null("log_softmax: not implemented yet"); }
WEAK efla_tensor * efla_cross_entropy(const efla_tensor *logits, const efla_tensor *target, int64_t ignore_index, double label_smoothing) { return efla_fail_null("cross_entropy: not implemented yet"); }
WEAK efla_tensor * efla_layer_norm(const efla_tensor *x, const efla_tensor *weight, const efla_tensor *bias, double eps) { return efla_fail_null("layer_norm: not implemented yet"); }
WEAK efla_tensor * efla_rms_norm(const efla_tensor *x, const efla_tensor *weight, double eps) { return efla_fail_null("rms_norm: not implemented yet"); }
WEAK efla_tensor * efla_index_select(const efla_tensor *t, int dim, const efla_tensor *index) { return efla_fail_null("index_select: not implemented yet"); }
WEAK efla_tensor * efla_gather(const efla_tensor *t, int dim, const efla_tensor *index) { return efla_fail_null("gather: not implemented yet"); }
WEAK efla_tensor * efla_scatter_add(const efla_tensor *t, int dim, const efla_tensor *index, const efla_tensor *src) { return efla_fail_null("scatter_add: not implemented yet"); }
WEAK efla_tensor * efla_embedding(const efla_tensor *weight, const efla_tensor *index) { return efla_fail_null("embedding: not implemented yet"); }
WEAK efla_tensor * efla_one_hot(const efla_tensor *index, int64_t num_classes) { return efla_fail_null("one_hot: not implemented yet"); }
WEAK efla_tensor * efla_cat(int n, efla_tensor *const *tensors, int dim) { return efla_fail_null("cat: not implemented yet"); }
WEAK efla_tensor * efla_stack(int n, efla_tensor *const *tensors, int dim) { return efla_fail_null("stack: not implemented yet"); }
WEAK void efla_delta_rule_default_opts(efla_delta_rule_opts *opts) {  }
WEAK int efla_delta_rule(const efla_tensor *q, const efla_tensor *k, const efla_tensor *v, const efla_tensor *beta, const efla_tensor *initial_state, const efla_tensor *cu_seqlens, const efla_delta_rule_opts *opts, efla_tensor **out, efla_tensor **final_state) { return efla_fail("delta_rule: not implemented yet"); }
WEAK int efla_delta_rule_step(const efla_tensor *q, const efla_tensor *k, const efla_tensor *v, const efla_tensor *beta, const efla_tensor *state, const efla_delta_rule_opts *opts, efla_tensor **out, efla_tensor **new_state) { return efla_fail("delta_rule_step: not implemented yet"); }
WEAK efla_tensor * efla_delta_rule_alpha(const efla_tensor *beta, const efla_tensor *lambda, int order, int reference_eps) { return efla_fail_null("delta_rule_alpha: not implemented yet"); }
WEAK int efla_adamw_step_(efla_tensor *p, const efla_tensor *grad, efla_tensor *m, efla_tensor *v, double lr, double beta1, double beta2, double eps, double weight_decay, int64_t step) { return efla_fail("adamw_step_: not implemented yet"); }
WEAK efla_h5 * efla_h5_create(const char *path) { return efla_fail_null("h5_create: not implemented yet"); }
WEAK int efla_h5_write_tensor(efla_h5 *f, const char *name, const efla_tensor *t) { return efla_fail("h5_write_tensor: not implemented yet"); }
WEAK int efla_h5_write_attr_string(efla_h5 *f, const char *object, const char *key, const char *value) { return efla_fail("h5_write_attr_string: not implemented yet"); }
WEAK int efla_h5_write_attr_double(efla_h5 *f, const char *object, const char *key, double value) { return efla_fail("h5_write_attr_double: not implemented yet"); }
WEAK int efla_h5_commit(efla_h5 *f) { return efla_fail("h5_commit: not implemented yet"); }
WEAK void efla_h5_abort(efla_h5 *f) {  }
WEAK efla_h5 * efla_h5_open(const char *path) { return efla_fail_null("h5_open: not implemented yet"); }
WEAK int efla_h5_count(efla_h5 *f) { return efla_fail("h5_count: not implemented yet"); }
WEAK const char * efla_h5_name(efla_h5 *f, int i) { return efla_fail_null("h5_name: not implemented yet"); }
WEAK int efla_h5_info(efla_h5 *f, const char *name, int *ndim, int64_t *shape, efla_dtype *dtype) { return efla_fail("h5_info: not implemented yet"); }
WEAK efla_tensor * efla_h5_read_tensor(efla_h5 *f, const char *name) { return efla_fail_null("h5_read_tensor: not implemented yet"); }
WEAK const char * efla_h5_read_attr_string(efla_h5 *f, const char *object, const char *key) { return efla_fail_null("h5_read_attr_string: not implemented yet"); }
WEAK int efla_h5_read_attr_double(efla_h5 *f, const char *object, const char *key, double *out) { return efla_fail("h5_read_attr_double: not implemented yet"); }
WEAK int efla_h5_close(efla_h5 *f) { return efla_fail("h5_close: not implemented yet"); }
WEAK int efla_cuda_memory_stats(int device, efla_memory_stats *stats) { return efla_fail("cuda_memory_stats: not implemented yet"); }
WEAK int efla_cuda_empty_cache(int device) { return efla_fail("cuda_empty_cache: not implemented yet"); }
WEAK int efla_cuda_reset_peak(int device) { return efla_fail("cuda_reset_peak: not implemented yet"); }
WEAK int efla_cuda_set_tf32(int enabled) { return efla_fail("cuda_set_tf32: not implemented yet"); }

/* backend_cpu.c: the CPU backend's table (see backend.h and cpu_kernels.h). */
#include "cpu_kernels.h"
#include "../delta_rule_rank.h"

static int cpu_device_count(void) { return 1; }

const efla_backend efla_cpu_backend = {
    .name = "cpu",
    .device_count = cpu_device_count,
    .synchronize = NULL,
    .alloc = efla_cpu_alloc,
    .free = efla_cpu_free,
    .memcpy_h2d = NULL,
    .memcpy_d2h = NULL,
    .fill = efla_cpu_fill,
    .copy = efla_cpu_copy,
    .unary = efla_cpu_unary,
    .binary = efla_cpu_binary,
    .clamp = efla_cpu_clamp,
    .where = efla_cpu_where,
    .tri = efla_cpu_tri,
    .arange = efla_cpu_arange,
    .rand = efla_cpu_rand,
    .reduce = efla_cpu_reduce,
    .bmm = efla_cpu_bmm,
    .softmax = efla_cpu_softmax,
    .softmax_backward = efla_cpu_softmax_backward,
    .norm = efla_cpu_norm,
    .norm_backward = efla_cpu_norm_backward,
    .cross_entropy = efla_cpu_cross_entropy,
    .index_select = efla_cpu_index_select,
    .index_add = efla_cpu_index_add,
    .gather = efla_cpu_gather,
    .scatter_add = efla_cpu_scatter_add,
    .delta_rule_fwd = efla_cpu_delta_rule_fwd,
    .delta_rule_bwd = efla_cpu_delta_rule_bwd,
    .adamw = efla_cpu_adamw,
    .memory_stats = NULL,
    .empty_cache = NULL,
    .cumsum = efla_cpu_cumsum,
    .sort = efla_cpu_sort,
    .delta_rule_rank_fwd = efla_cpu_delta_rule_rank_fwd,
    .delta_rule_rank_bwd = efla_cpu_delta_rule_rank_bwd,
};

/* test_grad_hook.c: the autograd engine's grad-ready hook (efla_set_grad_ready_hook), on
 * which data-parallel training starts its gradient all-reduces: called once per leaf and
 * backward, only when the leaf's gradient is complete (a leaf used twice reports after its
 * second contribution), never for leaves outside the graph, and not at all once removed. */
#include "test_util.h"

typedef struct { efla_tensor *leaf; int calls; double grad_at_call; } seen_t;
static seen_t seen[4];
static int n_seen, unknown_calls;

static void hook(efla_tensor *leaf, void *ud) {
    (void)ud;
    for (int i = 0; i < n_seen; i++) {
        if (seen[i].leaf != leaf) continue;
        seen[i].calls++;
        efla_tensor *g = efla_grad(leaf);
        double v = NAN;
        if (g) {   /* the sum of the gradient's elements when the hook ran */
            int dim0 = 0;
            efla_tensor *s = efla_reduce(EFLA_SUM, g, 1, &dim0, 0, 0);
            if (s) { efla_item(s, &v); efla_tensor_release(s); }
            efla_tensor_release(g);
        }
        seen[i].grad_at_call = v;
        return;
    }
    unknown_calls++;
}

static double grad_sum(efla_tensor *t) {
    efla_tensor *g = MUST(efla_grad(t));
    int dim0 = 0;
    efla_tensor *s = MUST(efla_reduce(EFLA_SUM, g, 1, &dim0, 0, 0));
    double v;
    MUST_OK(efla_item(s, &v));
    efla_tensor_release(s);
    efla_tensor_release(g);
    return v;
}

int main(void) {
    int64_t live0 = efla_live_tensors();
    int64_t shape[1] = {3};
    efla_tensor *w = MUST(efla_randn(1, shape, EFLA_FLOAT64, EFLA_DEVICE_CPU));
    efla_tensor *b = MUST(efla_randn(1, shape, EFLA_FLOAT64, EFLA_DEVICE_CPU));
    efla_tensor *unused = MUST(efla_randn(1, shape, EFLA_FLOAT64, EFLA_DEVICE_CPU));
    MUST_OK(efla_set_requires_grad(w, 1));
    MUST_OK(efla_set_requires_grad(b, 1));
    MUST_OK(efla_set_requires_grad(unused, 1));
    seen[0].leaf = w; seen[1].leaf = b; seen[2].leaf = unused; n_seen = 3;
    efla_set_grad_ready_hook(hook, NULL);

    /* loss = sum(tanh(w * w + b) * w): w reaches the loss along three edges */
    for (int round = 0; round < 2; round++) {
        efla_tensor *ww = MUST(efla_binary(EFLA_MUL, w, w));
        efla_tensor *z = MUST(efla_binary(EFLA_ADD, ww, b));
        efla_tensor *t = MUST(efla_unary(EFLA_TANH, z));
        efla_tensor *y = MUST(efla_binary(EFLA_MUL, t, w));
        int dim0 = 0;
        efla_tensor *loss = MUST(efla_reduce(EFLA_SUM, y, 1, &dim0, 0, 0));
        MUST_OK(efla_backward(loss, NULL, 0));
        CHECK(seen[0].calls == round + 1, "w: one call per backward (round %d: %d calls)", round, seen[0].calls);
        CHECK(seen[1].calls == round + 1, "b: one call per backward (round %d: %d calls)", round, seen[1].calls);
        CHECK(seen[2].calls == 0, "a leaf outside the graph is not reported (%d calls)", seen[2].calls);
        CHECK(unknown_calls == 0, "only leaves are reported (%d other calls)", unknown_calls);
        /* when w was reported its gradient already held all three contributions */
        CHECK(fabs(seen[0].grad_at_call - grad_sum(w)) < 1e-12, "w's gradient was complete when reported (%g vs %g)",
              seen[0].grad_at_call, grad_sum(w));
        CHECK(fabs(seen[1].grad_at_call - grad_sum(b)) < 1e-12, "b's gradient was complete when reported");
        efla_tensor *arr[] = {ww, z, t, y, loss};
        for (int i = 0; i < 5; i++) efla_tensor_release(arr[i]);
        MUST_OK(efla_set_grad(w, NULL));
        MUST_OK(efla_set_grad(b, NULL));
    }

    /* backward of a leaf itself reports it */
    efla_tensor *ones = MUST(efla_ones(1, shape, EFLA_FLOAT64, EFLA_DEVICE_CPU));
    MUST_OK(efla_backward(w, ones, 0));
    efla_tensor_release(ones);
    CHECK(seen[0].calls == 3, "a leaf root is reported (%d calls)", seen[0].calls);

    /* removed: no more calls */
    efla_set_grad_ready_hook(NULL, NULL);
    efla_tensor *z = MUST(efla_binary(EFLA_MUL, w, b));
    int dim0 = 0;
    efla_tensor *loss = MUST(efla_reduce(EFLA_SUM, z, 1, &dim0, 0, 0));
    MUST_OK(efla_backward(loss, NULL, 0));
    CHECK(seen[0].calls == 3 && seen[1].calls == 2, "no calls after the hook is removed");
    efla_tensor_release(z); efla_tensor_release(loss);
    MUST_OK(efla_set_grad(w, NULL)); MUST_OK(efla_set_grad(b, NULL));
    efla_tensor_release(w); efla_tensor_release(b); efla_tensor_release(unused);
    CHECK_NO_LEAK(live0);
    TEST_SUMMARY();
}

/* test_leaf_grad.c: how a backward hands gradients to leaves. A gradient nothing else can reach
 * becomes the leaf's .grad without a copy; one that is shared (the same tensor sent to two
 * leaves, or held by the caller) is copied, so that no two .grad tensors and no caller's tensor
 * ever share memory; a second backward adds into the .grad the caller may hold. */
#include "test_util.h"

static double at(efla_tensor *t, int i) {
    const double *p = efla_tensor_data(t);
    return p[i];
}

int main(void) {
    int64_t live0 = efla_live_tensors();
    int64_t shape[1] = {4};
    efla_tensor *a = MUST(efla_randn(1, shape, EFLA_FLOAT64, EFLA_DEVICE_CPU));
    efla_tensor *b = MUST(efla_randn(1, shape, EFLA_FLOAT64, EFLA_DEVICE_CPU));
    efla_tensor *g = MUST(efla_randn(1, shape, EFLA_FLOAT64, EFLA_DEVICE_CPU));
    MUST_OK(efla_set_requires_grad(a, 1));
    MUST_OK(efla_set_requires_grad(b, 1));

    /* y = a + b: the add's backward sends the same gradient to both leaves */
    efla_tensor *y = MUST(efla_binary(EFLA_ADD, a, b));
    MUST_OK(efla_backward(y, g, 0));
    efla_tensor *ga = MUST(efla_grad(a)), *gb = MUST(efla_grad(b));
    CHECK(efla_tensor_data(ga) != efla_tensor_data(gb), "two leaves fed by one add get separate buffers");
    CHECK(efla_tensor_data(ga) != efla_tensor_data(g) && efla_tensor_data(gb) != efla_tensor_data(g),
          "neither .grad is the caller's gradient tensor");
    for (int i = 0; i < 4; i++)
        CHECK(at(ga, i) == at(g, i) && at(gb, i) == at(g, i), "d(a+b)/da = d(a+b)/db = g (element %d)", i);
    MUST_OK(efla_fill_(ga, 7.0));
    CHECK(at(gb, 0) == at(g, 0) && at(g, 0) != 7.0, "writing a.grad changes neither b.grad nor g");
    efla_tensor_release(ga); efla_tensor_release(gb); efla_tensor_release(y);
    MUST_OK(efla_set_grad(a, NULL));

    /* z = 3 a: a fresh gradient (3 g) becomes a.grad; a second backward adds into the same tensor */
    for (int round = 1; round <= 2; round++) {
        efla_tensor *z = MUST(efla_binary_scalar(EFLA_MUL, a, 3.0, 0));
        MUST_OK(efla_backward(z, g, 0));
        efla_tensor_release(z);
        if (round == 1) ga = MUST(efla_grad(a));   /* held across the second backward */
    }
    efla_tensor *ga2 = MUST(efla_grad(a));
    CHECK(efla_tensor_data(ga2) == efla_tensor_data(ga), "the second backward adds into the .grad the caller holds");
    for (int i = 0; i < 4; i++)
        CHECK(fabs(at(ga, i) - 6 * at(g, i)) < 1e-12, "two backwards of 3a give 6 g (element %d: %g vs %g)", i,
              at(ga, i), 6 * at(g, i));
    efla_tensor_release(ga); efla_tensor_release(ga2);
    efla_tensor_release(a); efla_tensor_release(b); efla_tensor_release(g);
    CHECK_NO_LEAK(live0);
    TEST_SUMMARY();
}

/* Tests for models/bpr.c: pd_bpr_step against numpy in double precision
 * (tests/unit/reference/bpr_reference.py): the margin it returns and the new user vector,
 * positive and negative items and both biases, L2 included, over one and several negatives in
 * turn; then what must hold exactly: a step of rate 0, or of weight 0 without L2, changes
 * nothing, and margins far beyond expf's range give finite steps of g = 0 and g = weight. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "models/bpr.h"
#include "reference/bpr_fixtures.h"

/* The step does a dot product of at most 16 floats and a handful of operations per
 * coordinate: single precision holds its result to a few ulps of the values involved. */
static void assert_close(const char *what, size_t k, double got, double want)
{
    double tol = 1e-6 + 2e-6 * fabs(want);

    if (!(fabs(got - want) <= tol))
        fail_msg("%s[%zu] = %.9g, numpy says %.9g (tolerance %.3g)", what, k, got, want, tol);
}

static void test_step_matches_numpy(void **state)
{
    (void)state;
    for (size_t c = 0; c < sizeof pd_ref_bpr_cases / sizeof *pd_ref_bpr_cases; c++) {
        const pd_ref_bpr *t = &pd_ref_bpr_cases[c];
        float u[PD_REF_BPR_MAX_DIM], vi[PD_REF_BPR_MAX_DIM], bi = t->bi;
        float vj[PD_REF_BPR_MAX_NEG][PD_REF_BPR_MAX_DIM], bj[PD_REF_BPR_MAX_NEG];

        print_message("case %s\n", t->name);
        memcpy(u, t->u, sizeof u);
        memcpy(vi, t->vi, sizeof vi);
        memcpy(vj, t->vj, sizeof vj);
        memcpy(bj, t->bj, sizeof bj);
        for (size_t n = 0; n < t->negatives; n++) {
            float x = pd_bpr_step(u, vi, &bi, vj[n], &bj[n], t->dim, t->weight, t->rate, t->l2);
            assert_close("x", n, x, t->x[n]);
        }
        for (size_t k = 0; k < t->dim; k++) {
            assert_close("u", k, u[k], t->u_out[k]);
            assert_close("v_i", k, vi[k], t->vi_out[k]);
        }
        assert_close("b_i", 0, bi, t->bi_out);
        for (size_t n = 0; n < t->negatives; n++) {
            for (size_t k = 0; k < t->dim; k++)
                assert_close("v_j", n * PD_REF_BPR_MAX_DIM + k, vj[n][k], t->vj_out[n][k]);
            assert_close("b_j", n, bj[n], t->bj_out[n]);
        }
        /* coordinates past dim are not the step's */
        for (size_t k = t->dim; k < PD_REF_BPR_MAX_DIM; k++)
            assert_true(u[k] == t->u[k] && vi[k] == t->vi[k]);
    }
}

/* A hand case small enough to read: d = 1, u = 1, v_i = 0.5, v_j = -0.5, b = 0, so x = 1 and
 * g = sigmoid(-1) = 0.2689414213699951; rate 0.5, l2 0.1:
 *   u   = 1    + 0.5 * (g * 1    - 0.1 * 1)    = 1.0844707107
 *   v_i = 0.5  + 0.5 * (g * 1    - 0.1 * 0.5)  = 0.6094707107
 *   v_j = -0.5 + 0.5 * (-g * 1   + 0.1 * 0.5)  = -0.6094707107
 *   b_i = 0    + 0.5 * g                       = 0.1344707107, b_j = -0.1344707107 */
static void test_step_by_hand(void **state)
{
    float u = 1.0f, vi = 0.5f, vj = -0.5f, bi = 0.0f, bj = 0.0f;

    (void)state;
    assert_float_equal(pd_bpr_step(&u, &vi, &bi, &vj, &bj, 1, 1.0f, 0.5f, 0.1f), 1.0, 1e-7);
    assert_float_equal(u, 1.0844707107, 1e-6);
    assert_float_equal(vi, 0.6094707107, 1e-6);
    assert_float_equal(vj, -0.6094707107, 1e-6);
    assert_float_equal(bi, 0.1344707107, 1e-6);
    assert_float_equal(bj, -0.1344707107, 1e-6);
}

/* Rate 0 moves nothing; weight 0 without L2 neither; the margin is returned either way. */
static void test_step_without_effect(void **state)
{
    const pd_ref_bpr *t = &pd_ref_bpr_cases[0];
    float u[PD_REF_BPR_MAX_DIM], vi[PD_REF_BPR_MAX_DIM], vj[PD_REF_BPR_MAX_DIM];
    float bi = t->bi, bj = t->bj[0];
    const float rates[2] = {0.0f, 0.3f}, weights[2] = {1.0f, 0.0f}, l2s[2] = {0.5f, 0.0f};

    (void)state;
    for (int c = 0; c < 2; c++) {
        memcpy(u, t->u, sizeof u);
        memcpy(vi, t->vi, sizeof vi);
        memcpy(vj, t->vj[0], sizeof vj);
        float x = pd_bpr_step(u, vi, &bi, vj, &bj, t->dim, weights[c], rates[c], l2s[c]);
        assert_close("x", 0, x, t->x[0]);
        assert_memory_equal(u, t->u, sizeof u);
        assert_memory_equal(vi, t->vi, sizeof vi);
        assert_memory_equal(vj, t->vj[0], sizeof vj);
        assert_true(bi == t->bi && bj == t->bj[0]);
    }
}

/* Margins of +-1000 (expf overflows at 89): sigmoid(-x) is 0 and 1 exactly, nothing is NaN.
 * d = 1, u = 1, v_i = 0, v_j = 0, b_i = +-1000, rate 0.1, weight 2, l2 0.5:
 *   x = +1000: g = 0, so every parameter only shrinks by 1 - 0.05 = 0.95;
 *   x = -1000: g = 2: v_i = 0 + 0.1 * 2 = 0.2, v_j = -0.2, u = 0.95, b_i = -950 + 0.2. */
static void test_step_saturates(void **state)
{
    float u = 1.0f, vi = 0.0f, vj = 0.0f, bi = 1000.0f, bj = 0.0f;

    (void)state;
    assert_float_equal(pd_bpr_step(&u, &vi, &bi, &vj, &bj, 1, 2.0f, 0.1f, 0.5f), 1000.0, 0);
    assert_float_equal(u, 0.95, 1e-7);
    assert_true(vi == 0.0f && vj == 0.0f && bj == 0.0f);
    assert_float_equal(bi, 950.0, 1e-4);

    u = 1.0f, vi = 0.0f, vj = 0.0f, bi = -1000.0f, bj = 0.0f;
    assert_float_equal(pd_bpr_step(&u, &vi, &bi, &vj, &bj, 1, 2.0f, 0.1f, 0.5f), -1000.0, 0);
    assert_float_equal(u, 0.95, 1e-7);
    assert_float_equal(vi, 0.2, 1e-7);
    assert_float_equal(vj, -0.2, 1e-7);
    assert_float_equal(bi, -949.8, 1e-3);
    assert_float_equal(bj, -0.2, 1e-7);
}

/* Small steps ascend: the margin of the same triple is higher after each one. */
static void test_steps_raise_margin(void **state)
{
    const pd_ref_bpr *t = &pd_ref_bpr_cases[2];
    float u[PD_REF_BPR_MAX_DIM], vi[PD_REF_BPR_MAX_DIM], vj[PD_REF_BPR_MAX_DIM];
    float bi = t->bi, bj = t->bj[0], prev = -INFINITY;

    (void)state;
    memcpy(u, t->u, sizeof u);
    memcpy(vi, t->vi, sizeof vi);
    memcpy(vj, t->vj[0], sizeof vj);
    for (int s = 0; s < 20; s++) {
        float x = pd_bpr_step(u, vi, &bi, vj, &bj, t->dim, 1.0f, 0.05f, 0.0f);
        assert_true(x > prev);
        prev = x;
    }
    assert_true(prev > (float)t->x[0] + 0.5f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_step_matches_numpy),
        cmocka_unit_test(test_step_by_hand),
        cmocka_unit_test(test_step_without_effect),
        cmocka_unit_test(test_step_saturates),
        cmocka_unit_test(test_steps_raise_margin),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Tests for daemon/learning_curve.c: the curve's points and the priors against values worked
 * out by hand, and the thinning that keeps it bounded; the rate curves of list models. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "daemon/learning_curve.h"

static void test_classifier_points_and_prior(void **state)
{
    (void)state;
    pd_learning_curve *c = pd_learning_curve_new(PD_METRICS_CLASSIFIER);
    assert_non_null(c);
    const double *x, *y;
    assert_int_equal(pd_learning_curve_points(c, &x, &y), 0);
    assert_true(isnan(pd_learning_curve_prior(c)));
    pd_learning_curve_add(c, 0.5, 1, 1);
    pd_learning_curve_add(c, 0.25, 0, 1);
    pd_learning_curve_add(c, 0.9, 1, 2);
    pd_learning_curve_add(c, 0.9, 1, 0); /* weight 0: ignored */
    pd_learning_curve_add(c, NAN, 1, 1); /* not finite: ignored */
    size_t n = pd_learning_curve_points(c, &x, &y);
    assert_int_equal(n, 3);
    double l1 = log(2.0), l2 = -log(0.75), l3 = -log(0.9);
    assert_float_equal(x[0], 1, 0);
    assert_float_equal(y[0], l1, 1e-12);
    assert_float_equal(x[1], 2, 0);
    assert_float_equal(y[1], (l1 + l2) / 2, 1e-12);
    assert_float_equal(x[2], 3, 0);
    assert_float_equal(y[2], (l1 + l2 + 2 * l3) / 4, 1e-12);
    /* weighted base rate (1 + 2) / 4; its entropy */
    assert_float_equal(pd_learning_curve_base_rate(c), 0.75, 1e-12);
    assert_float_equal(pd_learning_curve_prior(c), -(0.75 * log(0.75) + 0.25 * log(0.25)), 1e-12);
    pd_learning_curve_free(c);
}

static void test_regressor_running_mean(void **state)
{
    (void)state;
    pd_learning_curve *c = pd_learning_curve_new(PD_METRICS_REGRESSOR);
    pd_learning_curve_add(c, 1, 2, 1);
    pd_learning_curve_add(c, 4, 4, 1);
    pd_learning_curve_add(c, 3, 6, 1);
    const double *x, *y;
    assert_int_equal(pd_learning_curve_points(c, &x, &y), 3);
    /* RMSE of the model: errors 1, 0, 3 */
    assert_float_equal(y[2], sqrt(10.0 / 3.0), 1e-12);
    /* the running mean predicts 2 for the second label (4) and 3 for the third (6) */
    assert_float_equal(pd_learning_curve_prior(c), sqrt((4.0 + 9.0) / 2.0), 1e-12);
    assert_true(isnan(pd_learning_curve_base_rate(c)));
    pd_learning_curve_free(c);
}

static void test_margin_has_no_prior_loss(void **state)
{
    (void)state;
    pd_learning_curve *c = pd_learning_curve_new(PD_METRICS_MARGIN);
    pd_learning_curve_add(c, 0.5, 1, 1); /* hinge: 1 - 0.5 */
    pd_learning_curve_add(c, 2.0, 0, 1); /* y = -1: 1 + 2 */
    const double *x, *y;
    assert_int_equal(pd_learning_curve_points(c, &x, &y), 2);
    assert_float_equal(y[1], (0.5 + 3.0) / 2, 1e-12);
    assert_true(isnan(pd_learning_curve_prior(c)));
    assert_float_equal(pd_learning_curve_base_rate(c), 0.5, 1e-12);
    pd_learning_curve_free(c);
}

/* However long the run, the curve stays within 401 points, evenly spaced, and ends at the
 * last example with the all-time mean. */
static void test_thinning(void **state)
{
    (void)state;
    pd_learning_curve *c = pd_learning_curve_new(PD_METRICS_REGRESSOR);
    double sq = 0;
    for (int i = 1; i <= 100003; i++) {
        double err = (double)(i % 7);
        pd_learning_curve_add(c, err, 0, 1);
        sq += err * err;
    }
    const double *x, *y;
    size_t n = pd_learning_curve_points(c, &x, &y);
    assert_true(n >= 200 && n <= 401);
    double step = x[0];
    for (size_t i = 0; i + 1 < n; i++)
        assert_float_equal(x[i], step * (double)(i + 1), 0);
    assert_float_equal(x[n - 1], 100003, 0);
    assert_float_equal(y[n - 1], sqrt(sq / 100003), 1e-12);
    pd_learning_curve_free(c);
}

/* Rates: cumulative hit shares per series, each over its own evaluations, worked by hand. */
static void test_rates(void **state)
{
    (void)state;
    assert_null(pd_rate_curve_new(0));
    assert_null(pd_rate_curve_new(PD_RATE_CURVE_MAX_SERIES + 1));
    pd_rate_curve *c = pd_rate_curve_new(3);
    assert_non_null(c);
    assert_int_equal(pd_rate_curve_series(c), 3);
    const double *x, *y[PD_RATE_CURVE_MAX_SERIES];
    assert_int_equal(pd_rate_curve_points(c, &x, y), 0);
    assert_true(isnan(pd_rate_curve_rate(c, 0)));

    bool e1[] = {true, false, true}, e2[] = {false, false, true}, e3[] = {true, true};
    pd_rate_curve_add(c, e1, 3);
    pd_rate_curve_add(c, e2, 3);
    pd_rate_curve_add(c, e3, 2); /* the third series judged nothing this time */
    size_t n = pd_rate_curve_points(c, &x, y);
    assert_int_equal(n, 3);
    assert_null(y[3]);
    assert_float_equal(x[0], 1, 0);
    assert_float_equal(x[2], 3, 0);
    /* series 0: hit, miss, hit; series 1: miss, miss, hit; series 2: hit, hit over 2 */
    assert_float_equal(y[0][0], 1.0, 1e-12);
    assert_float_equal(y[0][1], 0.5, 1e-12);
    assert_float_equal(y[0][2], 2.0 / 3.0, 1e-12);
    assert_float_equal(y[1][1], 0.0, 1e-12);
    assert_float_equal(y[1][2], 1.0 / 3.0, 1e-12);
    assert_float_equal(y[2][2], 1.0, 1e-12);
    assert_float_equal(pd_rate_curve_rate(c, 0), 2.0 / 3.0, 1e-12);
    assert_float_equal(pd_rate_curve_rate(c, 2), 1.0, 1e-12);
    assert_true(isnan(pd_rate_curve_rate(c, 3)));
    pd_rate_curve_free(c);

    /* thinned like the loss curve, ending at the last evaluation with the all-time rate */
    c = pd_rate_curve_new(1);
    size_t hits = 0;
    for (int i = 1; i <= 50001; i++) {
        bool h = i % 3 == 0;
        hits += h;
        pd_rate_curve_add(c, &h, 1);
    }
    n = pd_rate_curve_points(c, &x, y);
    assert_true(n >= 200 && n <= 401);
    assert_float_equal(x[n - 1], 50001, 0);
    assert_float_equal(y[0][n - 1], (double)hits / 50001, 1e-12);
    pd_rate_curve_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classifier_points_and_prior),
        cmocka_unit_test(test_regressor_running_mean),
        cmocka_unit_test(test_margin_has_no_prior_loss),
        cmocka_unit_test(test_thinning),
        cmocka_unit_test(test_rates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

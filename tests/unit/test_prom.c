/* Tests for daemon/prom.c: the exposition text Prometheus reads (HELP/TYPE lines, label
 * escaping, NaN and infinities, cumulative histograms). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "daemon/prom.h"

static void test_family_and_samples(void **state)
{
    (void)state;
    pd_strbuf sb = PD_STRBUF_INIT;
    pd_prom_family(&sb, "pd_events_total", PD_PROM_COUNTER, "Events, by type.\nSecond \\ line");
    pd_prom_sample(&sb, "pd_events_total", (const char *[]){"type", "view", NULL}, 12);
    pd_prom_sample(&sb, "pd_events_total",
                   (const char *[]){"type", "a\"b\\c\nd", "part", "0", NULL}, 0.25);
    pd_prom_family(&sb, "pd_gauge", PD_PROM_GAUGE, "g");
    pd_prom_sample(&sb, "pd_gauge", NULL, NAN);
    pd_prom_sample(&sb, "pd_gauge", (const char *[]){NULL}, INFINITY);
    pd_prom_sample(&sb, "pd_gauge", NULL, -INFINITY);
    pd_prom_sample(&sb, "pd_gauge", NULL, 18446744073709551615.0);
    assert_string_equal(pd_strbuf_str(&sb),
                        "# HELP pd_events_total Events, by type.\\nSecond \\\\ line\n"
                        "# TYPE pd_events_total counter\n"
                        "pd_events_total{type=\"view\"} 12\n"
                        "pd_events_total{type=\"a\\\"b\\\\c\\nd\",part=\"0\"} 0.25\n"
                        "# HELP pd_gauge g\n"
                        "# TYPE pd_gauge gauge\n"
                        "pd_gauge NaN\n"
                        "pd_gauge +Inf\n"
                        "pd_gauge -Inf\n"
                        "pd_gauge 1.8446744073709552e+19\n");
    pd_strbuf_release(&sb);
}

static void test_histogram(void **state)
{
    (void)state;
    pd_strbuf sb = PD_STRBUF_INIT;
    const double bounds[] = {0.001, 0.5, 2};
    const uint64_t counts[] = {3, 0, 4, 1}; /* per bucket; the last is above 2 */
    pd_prom_histogram(&sb, "pd_lat_seconds", (const char *[]){"op", "flush", NULL}, bounds, counts,
                      3, 7.5);
    assert_string_equal(pd_strbuf_str(&sb), "pd_lat_seconds_bucket{op=\"flush\",le=\"0.001\"} 3\n"
                                            "pd_lat_seconds_bucket{op=\"flush\",le=\"0.5\"} 3\n"
                                            "pd_lat_seconds_bucket{op=\"flush\",le=\"2\"} 7\n"
                                            "pd_lat_seconds_bucket{op=\"flush\",le=\"+Inf\"} 8\n"
                                            "pd_lat_seconds_sum{op=\"flush\"} 7.5\n"
                                            "pd_lat_seconds_count{op=\"flush\"} 8\n");
    pd_strbuf_reset(&sb);
    pd_prom_histogram(&sb, "h", NULL, bounds, (const uint64_t[]){0, 0, 0, 0}, 3, 0);
    assert_non_null(strstr(pd_strbuf_str(&sb), "h_bucket{le=\"+Inf\"} 0\nh_sum 0\nh_count 0\n"));
    pd_strbuf_release(&sb);
}

static void test_values(void **state)
{
    (void)state;
    char buf[32];
    const struct {
        double v;
        const char *want;
    } cases[] = {{0, "0"},        {-3, "-3"},
                 {0.1, "0.1"},    {1.0 / 3.0, "0.3333333333333333"},
                 {1e-9, "1e-09"}, {9007199254740991.0, "9007199254740991"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        pd_prom_format_value(buf, sizeof buf, cases[i].v);
        assert_string_equal(buf, cases[i].want);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_family_and_samples),
        cmocka_unit_test(test_histogram),
        cmocka_unit_test(test_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

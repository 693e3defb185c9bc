/* Tests for common/log_level.c: the one table of level names, both ways. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>

#include "common/log_level.h"

static void test_names_round_trip(void **state)
{
    static const char *const names[PD_LOG_LEVEL_COUNT] = {"debug", "info", "warning", "error"};

    (void)state;
    for (int i = 0; i < PD_LOG_LEVEL_COUNT; i++) {
        pd_log_level level = PD_LOG_ERROR;

        assert_string_equal(pd_log_level_to_name((pd_log_level)i), names[i]);
        assert_int_equal(pd_log_level_from_name(names[i], &level), 0);
        assert_int_equal(level, i);
    }
    assert_int_equal(PD_LOG_DEBUG, 0);
    assert_int_equal(PD_LOG_ERROR, PD_LOG_LEVEL_COUNT - 1);
}

static void test_edges(void **state)
{
    pd_log_level level = PD_LOG_DEBUG;

    (void)state;
    assert_int_equal(pd_log_level_from_name("warn", &level), 0);
    assert_int_equal(level, PD_LOG_WARNING);
    /* refused names leave the output alone */
    level = PD_LOG_DEBUG;
    assert_int_equal(pd_log_level_from_name("loud", &level), -EINVAL);
    assert_int_equal(pd_log_level_from_name("INFO", &level), -EINVAL);
    assert_int_equal(pd_log_level_from_name("", &level), -EINVAL);
    assert_int_equal(level, PD_LOG_DEBUG);
    assert_string_equal(pd_log_level_to_name((pd_log_level)PD_LOG_LEVEL_COUNT), "info");
    assert_string_equal(pd_log_level_to_name((pd_log_level)-1), "info");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names_round_trip),
        cmocka_unit_test(test_edges),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Tests for common/strbuf.c, the growable text buffer behind /metrics and config messages:
 * formatting past the fast path, reset keeping the allocation, release to the empty state, and
 * a length that would overflow failing as out of memory instead of wrapping. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "common/strbuf.h"

static void test_strbuf(void **state)
{
    (void)state;
    pd_strbuf sb = PD_STRBUF_INIT;
    assert_string_equal(pd_strbuf_str(&sb), "");
    for (int i = 0; i < 1000; i++)
        pd_strbuf_addf(&sb, "%d,", i);
    char big[600];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    pd_strbuf_addf(&sb, "%s", big); /* longer than the formatting fast path */
    assert_false(sb.oom);
    assert_int_equal(sb.len, strlen(sb.data));
    assert_memory_equal(sb.data, "0,1,2,", 6);
    assert_non_null(strstr(sb.data, "999,xxxx"));
    size_t cap = sb.cap;
    pd_strbuf_reset(&sb);
    assert_int_equal(sb.len, 0);
    assert_int_equal(sb.cap, cap);
    assert_string_equal(pd_strbuf_str(&sb), "");
    pd_strbuf_release(&sb);
    assert_null(sb.data);
}

static void test_overflow_is_oom(void **state)
{
    (void)state;
    pd_strbuf sb = PD_STRBUF_INIT;
    pd_strbuf_adds(&sb, "abc");
    /* a length near SIZE_MAX (as a bad computation would give) must not wrap the size */
    pd_strbuf_add(&sb, "x", SIZE_MAX - 2);
    assert_true(sb.oom);
    assert_int_equal(sb.len, 3);
    assert_string_equal(pd_strbuf_str(&sb), "abc");
    pd_strbuf_adds(&sb, "def"); /* sticky */
    assert_int_equal(sb.len, 3);
    pd_strbuf_reset(&sb);
    assert_false(sb.oom);
    pd_strbuf_adds(&sb, "ok");
    assert_string_equal(pd_strbuf_str(&sb), "ok");
    pd_strbuf_release(&sb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strbuf),
        cmocka_unit_test(test_overflow_is_oom),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

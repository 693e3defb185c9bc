/* Tests for daemon/sources.c, the partition -> engine source table: ids dense in order of
 * first sight across topics, stable across release and return, first sight and return count
 * as a delivery, wide partition numbers, many partitions, and unknown ids never idle. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "daemon/sources.h"

static void test_ids_dense_and_stable(void **state)
{
    (void)state;
    pd_sources *s = pd_sources_new();
    assert_non_null(s);
    assert_int_equal(pd_sources_get(s, "clicks", 2, 100), 0);
    assert_int_equal(pd_sources_get(s, "clicks", 0, 100), 1);
    assert_int_equal(pd_sources_get(s, "views", 2, 100), 2);
    assert_int_equal(pd_sources_get(s, "clicks", 2, 500), 0);
    assert_int_equal(pd_sources_get(s, "views", 2, 500), 2);
    assert_int_equal(pd_sources_count(s), 3);
    pd_sources_free(s);
}

static void test_seen_times(void **state)
{
    (void)state;
    pd_sources *s = pd_sources_new();
    int64_t id = pd_sources_get(s, "t", 0, 1000);
    assert_int_equal(pd_sources_seen_ms(s, (uint32_t)id), 1000); /* first sight */
    pd_sources_delivered(s, (uint32_t)id, 2000);
    assert_int_equal(pd_sources_get(s, "t", 0, 3000), id); /* a lookup is no delivery */
    assert_int_equal(pd_sources_seen_ms(s, (uint32_t)id), 2000);
    assert_true(pd_sources_assigned(s, (uint32_t)id));
    pd_sources_release(s, (uint32_t)id, 2500);
    assert_false(pd_sources_assigned(s, (uint32_t)id));
    assert_int_equal(pd_sources_seen_ms(s, (uint32_t)id), 2500); /* away since */
    assert_int_equal(pd_sources_get(s, "t", 0, 4000), id); /* back: same id, clock anew */
    assert_int_equal(pd_sources_seen_ms(s, (uint32_t)id), 4000);
    assert_true(pd_sources_assigned(s, (uint32_t)id));
    pd_sources_free(s);
}

/* A revoked source leaves the watermark only after staying away an idle timeout, once; one
 * that comes back in time never does, and after a later release the clock starts anew. */
static void test_expire_released(void **state)
{
    (void)state;
    pd_sources *s = pd_sources_new();
    uint32_t a = (uint32_t)pd_sources_get(s, "t", 0, 0), b = (uint32_t)pd_sources_get(s, "t", 1, 0);
    uint32_t ids[4];
    assert_int_equal(pd_sources_expire(s, 100000, 10, ids, 4), 0); /* assigned: never */
    pd_sources_release(s, a, 1000);
    pd_sources_release(s, b, 1000);
    assert_int_equal(pd_sources_expire(s, 1500, 1000, ids, 4), 0);
    assert_int_equal(pd_sources_get(s, "t", 1, 1600), b); /* b came back in time */
    assert_int_equal(pd_sources_expire(s, 2000, 1000, ids, 4), 1);
    assert_int_equal(ids[0], a);
    assert_int_equal(pd_sources_expire(s, 9000, 1000, ids, 4), 0); /* once */
    assert_int_equal(pd_sources_get(s, "t", 0, 9000), a);
    pd_sources_release(s, a, 9500);
    assert_int_equal(pd_sources_expire(s, 10000, 1000, ids, 4), 0);
    assert_int_equal(pd_sources_expire(s, 10500, 1000, ids, 4), 1);
    pd_sources_free(s);
}

static void test_unknown_and_invalid(void **state)
{
    (void)state;
    pd_sources *s = pd_sources_new();
    assert_true(pd_sources_seen_ms(s, 7) == INT64_MAX);
    pd_sources_delivered(s, 7, 1);
    pd_sources_release(s, 7, 1);
    assert_false(pd_sources_assigned(s, 7));
    assert_int_equal(pd_sources_count(s), 0);
    assert_int_equal(pd_sources_get(s, "t", -1, 0), -EINVAL);
    assert_int_equal(pd_sources_get(s, "t", 1000, 5), 0); /* far past the first array */
    assert_int_equal(pd_sources_get(s, "t", 999, 5), 1);
    assert_int_equal(pd_sources_get(s, "t", 1000, 5), 0);
    pd_sources_free(s);
}

static void test_many_partitions(void **state)
{
    (void)state;
    pd_sources *s = pd_sources_new();
    const char *topics[] = {"a", "b", "c"};
    for (int round = 0; round < 2; round++)
        for (int32_t p = 0; p < 300; p++)
            for (int t = 0; t < 3; t++)
                assert_int_equal(pd_sources_get(s, topics[t], p, round), p * 3 + t);
    assert_int_equal(pd_sources_count(s), 900);
    assert_int_equal(pd_sources_seen_ms(s, 899), 0);
    pd_sources_free(s);
    pd_sources_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ids_dense_and_stable),
        cmocka_unit_test(test_seen_times),
        cmocka_unit_test(test_unknown_and_invalid),
        cmocka_unit_test(test_expire_released),
        cmocka_unit_test(test_many_partitions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

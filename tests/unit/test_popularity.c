/* Tests for models/popularity.c: decayed popularity by half-life as shares of the top item's,
 * all-time totals, both rankings (ties to the lower slot) as interactions arrive in any order,
 * the rescale of the relative values when keys outgrow their range, rankings capped at
 * list_len and rebuilt from the counts when removals thin them, and save/load. */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "models/popularity.h"

#define SLOTS 8
#define HALF_LIFE 1000 /* ms */

static pd_popularity *make(size_t list_len)
{
    pd_popularity *p = pd_popularity_new(HALF_LIFE, list_len);

    assert_non_null(p);
    assert_int_equal(pd_popularity_reserve(p, SLOTS), 0);
    return p;
}

/* Asserts a ranking is exactly want[0..n). */
static void assert_top(const pd_popularity *p, bool recent, const uint32_t *want, size_t n)
{
    const uint32_t *top;
    size_t got = pd_popularity_top(p, recent, &top);

    if (got != n)
        fail_msg("%s ranking holds %zu items, want %zu", recent ? "recent" : "all-time", got, n);
    for (size_t i = 0; i < n; i++)
        if (top[i] != want[i])
            fail_msg("%s ranking[%zu] = %u, want %u", recent ? "recent" : "all-time", i, top[i],
                     want[i]);
}

/* Slot's decayed popularity as a share of the top item's. */
static double share(const pd_popularity *p, uint32_t slot)
{
    float max;
    const float *rel = pd_popularity_relative(p, &max);

    assert_true(max > 0);
    return rel[slot] / max;
}

static void test_new_checks_arguments(void **state)
{
    (void)state;
    assert_null(pd_popularity_new(0, 4));
    assert_null(pd_popularity_new(-5, 4));
    assert_null(pd_popularity_new(HALF_LIFE, 0));
    pd_popularity_free(NULL);
}

/* Half-life 1 s.
 *   t = 0:    slot 0 weight 1, slot 2 weight 4;  t = 1 s: slot 1 weight 1
 * At t = 1 s the decayed counts are 0: 0.5, 1: 1, 2: 4 * 0.5 = 2, so shares 0.25, 0.5, 1;
 * recent ranking 2, 1, 0; all-time 2 (4), then 0 and 1 (1 each: the lower slot first).
 *   t = 2 s:  slot 0 weight 3
 * At t = 2 s: 0: 0.25 + 3 = 3.25, 1: 0.5, 2: 1; shares 1, 0.5 / 3.25, 1 / 3.25; recent 0, 2, 1;
 * all-time 0 (4) and 2 (4) tie, then 1. */
static void test_decay_by_half_life(void **state)
{
    pd_popularity *p = make(4);
    float max;

    (void)state;
    pd_popularity_relative(p, &max);
    assert_true(max == 0);
    assert_top(p, true, NULL, 0);
    assert_int_equal(pd_popularity_add(p, 0, 1.0, 0), 0);
    assert_int_equal(pd_popularity_add(p, 2, 4.0, 0), 0);
    assert_int_equal(pd_popularity_add(p, 1, 1.0, 1000), 0);
    assert_float_equal(share(p, 0), 0.25, 1e-6);
    assert_float_equal(share(p, 1), 0.5, 1e-6);
    assert_float_equal(share(p, 2), 1.0, 1e-6);
    assert_float_equal(share(p, 3), 0.0, 0);
    assert_top(p, true, (const uint32_t[]){2, 1, 0}, 3);
    assert_top(p, false, (const uint32_t[]){2, 0, 1}, 3);

    assert_int_equal(pd_popularity_add(p, 0, 3.0, 2000), 0);
    assert_float_equal(share(p, 0), 1.0, 1e-6);
    assert_float_equal(share(p, 1), 0.5 / 3.25, 1e-6);
    assert_float_equal(share(p, 2), 1.0 / 3.25, 1e-6);
    assert_top(p, true, (const uint32_t[]){0, 2, 1}, 3);
    assert_top(p, false, (const uint32_t[]){0, 2, 1}, 3);
    assert_float_equal(pd_popularity_total(p, 0), 4.0, 0);
    assert_float_equal(pd_popularity_total(p, 1), 1.0, 0);
    assert_float_equal(pd_popularity_total(p, 2), 4.0, 0);
    assert_float_equal(pd_popularity_total(p, 3), 0.0, 0);
    pd_popularity_free(p);
}

/* The same interactions in another order (so another reference time) rank and share alike:
 * an item's key does not depend on when its events arrived. Slot 1 at 0 s (2) and 3 s (1),
 * slot 4 at 1 s (3), slot 0 at 2 s (1): at 3 s they count 1: 2/8 + 1 = 1.25, 4: 3/4 = 0.75,
 * 0: 1/2 = 0.5; totals 3, 3 (a tie: the lower slot first), 1. */
static void test_order_does_not_matter(void **state)
{
    static const struct {
        uint32_t slot;
        double w;
        int64_t t;
    } ev[] = {{1, 2.0, 0}, {4, 3.0, 1000}, {0, 1.0, 2000}, {1, 1.0, 3000}};
    pd_popularity *a = make(4), *b = make(4);

    (void)state;
    for (size_t i = 0; i < 4; i++)
        pd_popularity_add(a, ev[i].slot, ev[i].w, ev[i].t);
    for (size_t i = 4; i-- > 0;)
        pd_popularity_add(b, ev[i].slot, ev[i].w, ev[i].t);
    for (int k = 0; k < 2; k++) {
        const pd_popularity *p = k ? b : a;
        assert_float_equal(share(p, 1), 1.0, 1e-6);
        assert_float_equal(share(p, 4), 0.6, 1e-6);
        assert_float_equal(share(p, 0), 0.4, 1e-6);
        assert_top(p, true, (const uint32_t[]){1, 4, 0}, 3);
        assert_top(p, false, (const uint32_t[]){1, 4, 0}, 3);
    }
    pd_popularity_free(a);
    pd_popularity_free(b);
}

/* Keys grow by one per half-life; relative values are kept below 2^32 times a reference that
 * moves up when an item's key passes it by 32. Half-life 1 s:
 *   slot 0 weight 1 at 0 s: key 0;  slot 1 weight 1 at 10 s: key 10 (no rescale)
 *   slot 1 weight 1 at 33 s: key log2(2^10 + 2^33) > 32: every value is rescaled (returns 1)
 *   slot 0 weight 1 at 33 s: key log2(1 + 2^33), below the new reference: share
 *   (1 + 2^33) / (2^10 + 2^33) of slot 1's. */
static void test_rescale(void **state)
{
    pd_popularity *p = make(4);
    double two33 = 8589934592.0;

    (void)state;
    assert_int_equal(pd_popularity_add(p, 0, 1.0, 0), 0);
    assert_int_equal(pd_popularity_add(p, 1, 1.0, 10000), 0);
    assert_float_equal(share(p, 0), 1.0 / 1024, 1e-9);
    assert_int_equal(pd_popularity_add(p, 1, 1.0, 33000), 1);
    assert_float_equal(share(p, 1), 1.0, 0);
    assert_float_equal(share(p, 0), 1.0 / (1024 + two33), 1e-15);
    assert_true(share(p, 0) > 0);
    assert_int_equal(pd_popularity_add(p, 0, 1.0, 33000), 0);
    assert_float_equal(share(p, 0), (1 + two33) / (1024 + two33), 2e-7);
    assert_top(p, true, (const uint32_t[]){1, 0}, 2);
    assert_top(p, false, (const uint32_t[]){0, 1}, 2); /* 2 each: the lower slot */

    /* a weight of 2^40 at the start is a key of 40 at once */
    pd_popularity *q = make(4);
    assert_int_equal(pd_popularity_add(q, 3, 1099511627776.0, 0), 1);
    assert_int_equal(pd_popularity_add(q, 2, 1.0, 0), 0);
    assert_float_equal(share(q, 3), 1.0, 0);
    assert_float_equal(share(q, 2), 1.0 / 1099511627776.0, 1e-18);
    pd_popularity_free(p);
    pd_popularity_free(q);
}

/* list_len 2: rankings keep 4 in order and hand out 2. Slots 0..5 with weights 6..1 at one
 * time: 4 and 5 stay out. Removing 0 and 1 moves 2 and 3 up; removing 2 leaves one item,
 * fewer than 2, so the ranking is rebuilt from the counts and 4 is back. An item outside
 * that gains enough enters at its place. */
static void test_rankings_capped_and_rebuilt(void **state)
{
    pd_popularity *p = make(2);

    (void)state;
    for (uint32_t s = 0; s < 6; s++)
        pd_popularity_add(p, s, 6.0 - s, 5000);
    for (int recent = 0; recent < 2; recent++) {
        assert_top(p, recent, (const uint32_t[]){0, 1}, 2);
    }
    pd_popularity_remove(p, 0);
    assert_float_equal(pd_popularity_total(p, 0), 0, 0);
    assert_top(p, true, (const uint32_t[]){1, 2}, 2);
    pd_popularity_remove(p, 1);
    assert_top(p, true, (const uint32_t[]){2, 3}, 2);
    pd_popularity_remove(p, 2);
    assert_top(p, true, (const uint32_t[]){3, 4}, 2);
    assert_top(p, false, (const uint32_t[]){3, 4}, 2);
    assert_float_equal(share(p, 4), 2.0 / 3.0, 1e-6);
    assert_float_equal(share(p, 2), 0, 0);

    /* slot 5 (1) gains 9: it passes everyone */
    pd_popularity_add(p, 5, 9.0, 5000);
    assert_top(p, true, (const uint32_t[]){5, 3}, 2);
    assert_top(p, false, (const uint32_t[]){5, 3}, 2);
    /* a removed slot taken by a new item starts from nothing */
    pd_popularity_add(p, 0, 0.5, 5000);
    assert_float_equal(pd_popularity_total(p, 0), 0.5, 0);
    assert_float_equal(share(p, 0), 0.05, 1e-6);
    pd_popularity_remove(p, 5);
    pd_popularity_remove(p, 3);
    pd_popularity_remove(p, 4);
    assert_top(p, true, (const uint32_t[]){0}, 1);
    pd_popularity_remove(p, 0);
    assert_top(p, true, NULL, 0);
    assert_top(p, false, NULL, 0);
    pd_popularity_free(p);
}

typedef struct buf {
    char *data;
    size_t len;
} buf;

static buf save(const pd_popularity *p)
{
    buf b = {0};
    FILE *f = open_memstream(&b.data, &b.len);
    pd_bin_writer w;

    assert_non_null(f);
    pd_bin_writer_init(&w, f);
    pd_popularity_save(p, SLOTS, &w);
    assert_int_equal(w.err, 0);
    assert_int_equal(fclose(f), 0);
    return b;
}

static int load(pd_popularity *p, const buf *b, char *why, size_t len)
{
    FILE *f = fmemopen(b->data, b->len, "r");
    pd_bin_reader r;
    int ret;

    assert_non_null(f);
    pd_bin_reader_init(&r, f);
    ret = pd_popularity_load(p, SLOTS, &r);
    snprintf(why, len, "%s", r.why);
    if (ret == 0)
        assert_true(pd_bin_at_end(&r));
    fclose(f);
    return ret;
}

/* The state of test_decay_by_half_life saved and loaded: the same rankings, totals and
 * shares, and the same results after the same next interaction (the reference time kept). */
static void test_save_load(void **state)
{
    pd_popularity *p = make(4), *q = pd_popularity_new(HALF_LIFE, 4);
    char why[160];

    (void)state;
    pd_popularity_add(p, 0, 1.0, 0);
    pd_popularity_add(p, 2, 4.0, 0);
    pd_popularity_add(p, 1, 1.0, 1000);
    pd_popularity_add(p, 0, 3.0, 2000);
    buf b = save(p);
    /* bool, i64 reference time, f64 reference, then f64 key and f64 total per slot */
    assert_int_equal(b.len, 1 + 8 + 8 + SLOTS * 16);
    assert_non_null(q);
    assert_int_equal(load(q, &b, why, sizeof why), 0);
    for (int recent = 0; recent < 2; recent++) {
        const uint32_t *tp, *tq;
        size_t n = pd_popularity_top(p, recent, &tp);
        assert_int_equal(pd_popularity_top(q, recent, &tq), n);
        assert_int_equal(n, 3);
        assert_memory_equal(tp, tq, n * sizeof *tp);
    }
    for (uint32_t s = 0; s < SLOTS; s++) {
        assert_true(pd_popularity_total(p, s) == pd_popularity_total(q, s));
        assert_true(share(p, s) == share(q, s));
    }
    /* slot 1 weight 8 at 3 s: 0: 1.625, 1: 0.25 + 8 = 8.25, 2: 0.5 */
    pd_popularity_add(p, 1, 8.0, 3000);
    pd_popularity_add(q, 1, 8.0, 3000);
    assert_float_equal(share(q, 0), 1.625 / 8.25, 1e-6);
    assert_true(share(p, 0) == share(q, 0));
    assert_top(q, true, (const uint32_t[]){1, 0, 2}, 3);
    assert_top(q, false, (const uint32_t[]){1, 0, 2}, 3);

    /* a negative total (slot 0's, bytes 25..32), and a key for a slot with no item (slot 5's,
     * bytes 97..104) are refused */
    buf bad = {malloc(b.len), b.len};
    double neg = -1.0, key = 0.0;
    pd_popularity *r = pd_popularity_new(HALF_LIFE, 4);
    memcpy(bad.data, b.data, b.len);
    memcpy(bad.data + 25, &neg, 8); /* little-endian host */
    assert_int_equal(load(r, &bad, why, sizeof why), -EINVAL);
    assert_non_null(strstr(why, "item slot 0"));
    memcpy(bad.data, b.data, b.len);
    memcpy(bad.data + 17 + 5 * 16, &key, 8);
    assert_int_equal(load(r, &bad, why, sizeof why), -EINVAL);
    assert_non_null(strstr(why, "item slot 5"));
    memcpy(bad.data, b.data, b.len);
    bad.len -= 3;
    assert_int_not_equal(load(r, &bad, why, sizeof why), 0);
    free(bad.data);
    free(b.data);
    pd_popularity_free(p);
    pd_popularity_free(q);
    pd_popularity_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_checks_arguments),
        cmocka_unit_test(test_decay_by_half_life),
        cmocka_unit_test(test_order_does_not_matter),
        cmocka_unit_test(test_rescale),
        cmocka_unit_test(test_rankings_capped_and_rebuilt),
        cmocka_unit_test(test_save_load),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

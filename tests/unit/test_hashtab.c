/* Tests for common/hashtab.c against a brute-force model: random inserts and removals with
 * many colliding hashes (so probe chains wrap and deletions shift entries back), growth, and
 * lookups of every entry after every step. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "common/hashtab.h"

#define N 2000

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Finds value (whose key is its own index) by probing as a caller would. */
static bool find(const pd_hashtab *t, const uint64_t *hash_of, uint64_t value)
{
    uint64_t h = hash_of[value];
    for (size_t i = pd_hashtab_first(t, h); t->slots[i].value; i = pd_hashtab_next(t, i))
        if (t->slots[i].hash == h && t->slots[i].value == value)
            return true;
    return false;
}

static void test_against_model(void **state)
{
    (void)state;
    pd_hashtab t;
    assert_int_equal(pd_hashtab_init(&t, 4), 0);
    static uint64_t hash_of[N + 1];
    static bool in[N + 1];
    uint64_t seed = 42;
    for (uint64_t v = 1; v <= N; v++)
        hash_of[v] = rng_next(&seed) % 97; /* few distinct hashes: long chains, wrap-around */
    size_t count = 0;
    for (int step = 0; step < 20000; step++) {
        uint64_t v = 1 + rng_next(&seed) % N;
        if (!in[v]) {
            assert_int_equal(pd_hashtab_reserve(&t), 0);
            size_t i = pd_hashtab_insert(&t, hash_of[v], v);
            assert_true(t.slots[i].value == v);
            in[v] = true;
            count++;
        } else {
            size_t i = pd_hashtab_slot_of(&t, hash_of[v], v);
            assert_true(t.slots[i].value == v);
            pd_hashtab_remove_at(&t, i);
            in[v] = false;
            count--;
        }
        assert_int_equal(t.count, count);
        assert_true(t.count * 2 <= t.cap);
        if (step % 97 == 0)
            for (uint64_t w = 1; w <= N; w++)
                assert_true(find(&t, hash_of, w) == in[w]);
    }
    for (uint64_t w = 1; w <= N; w++)
        assert_true(find(&t, hash_of, w) == in[w]);
    size_t cap = t.cap;
    pd_hashtab_clear(&t);
    assert_int_equal(t.count, 0);
    assert_int_equal(t.cap, cap);
    assert_false(find(&t, hash_of, 1));
    assert_int_equal(pd_hashtab_memory(&t), cap * sizeof(pd_hslot));
    pd_hashtab_release(&t);
    assert_null(t.slots);
}

/* An entry whose home slot is the last one wraps to the front; removing what sits between
 * must pull it back across the end of the array. */
static void test_wrap_around_removal(void **state)
{
    (void)state;
    pd_hashtab t;
    assert_int_equal(pd_hashtab_init(&t, 16), 0);
    uint64_t last = t.cap - 1;
    assert_int_equal(pd_hashtab_insert(&t, last, 1), last);
    assert_int_equal(pd_hashtab_insert(&t, last, 2), 0); /* wrapped */
    assert_int_equal(pd_hashtab_insert(&t, 0, 3), 1);    /* home 0, pushed to 1 */
    pd_hashtab_remove_at(&t, last);
    assert_true(t.slots[last].value == 2); /* moved back home */
    assert_true(t.slots[0].value == 3);    /* moved back home */
    assert_true(t.slots[1].value == 0);
    assert_int_equal(pd_hashtab_slot_of(&t, 0, 3), 0);
    pd_hashtab_release(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_against_model),
        cmocka_unit_test(test_wrap_around_removal),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Tests for models/covisit.c: weights that add up per pair, entries whose item slot was reused
 * (dead) making room before anything live does, a full row replacing its lightest entry the
 * Space-Saving way, rows growing by doubling up to the neighbour limit, and a row's save/load
 * with the checks on what it reads. Then the pairs the recommender feeds it (models/
 * recommender.c): by distance in the user's history, 1 / (1 + k)^decay, and in reverse,
 * read back through its similar-item lists. */
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

#include "config/config.h"
#include "models/covisit.h"
#include "models/recommender.h"

#define SLOTS 16

/* Weight of the live entry from -> (item, gen), or -1 when the row has none. */
static float weight_of(const pd_covisit *c, uint32_t from, uint32_t item, uint32_t gen)
{
    const pd_covisit_entry *e;
    size_t n = pd_covisit_row(c, from, &e);
    float w = -1;

    for (size_t k = 0; k < n; k++)
        if (e[k].item == item && e[k].gen == gen) {
            assert_true(w < 0); /* a pair is in a row once */
            w = e[k].weight;
        }
    return w;
}

static pd_covisit *table(uint32_t neighbors)
{
    pd_covisit *c = pd_covisit_new(neighbors);

    assert_non_null(c);
    assert_int_equal(pd_covisit_reserve(c, SLOTS), 0);
    return c;
}

static void test_new_needs_a_neighbour(void **state)
{
    (void)state;
    assert_null(pd_covisit_new(0));
    pd_covisit_free(NULL);
}

static void test_weights_add_up(void **state)
{
    uint32_t gens[SLOTS] = {0};
    pd_covisit *c = table(4);
    const pd_covisit_entry *e;

    (void)state;
    assert_int_equal(pd_covisit_row(c, 0, &e), 0);
    assert_int_equal(pd_covisit_add(c, 0, 1, 0, 1.0f, gens), 0);
    assert_int_equal(pd_covisit_add(c, 0, 2, 0, 2.0f, gens), 0);
    assert_int_equal(pd_covisit_add(c, 0, 1, 0, 0.5f, gens), 0);
    assert_int_equal(pd_covisit_add(c, 3, 0, 0, 0.25f, gens), 0);
    assert_int_equal(pd_covisit_row(c, 0, &e), 2);
    assert_float_equal(weight_of(c, 0, 1, 0), 1.5, 0);
    assert_float_equal(weight_of(c, 0, 2, 0), 2.0, 0);
    /* rows are directed: 1 -> 0 was never added, 3 -> 0 was */
    assert_int_equal(pd_covisit_row(c, 1, &e), 0);
    assert_int_equal(pd_covisit_row(c, 3, &e), 1);
    assert_float_equal(weight_of(c, 3, 0, 0), 0.25, 0);

    /* a cleared row (its item evicted) is empty, the others keep theirs */
    pd_covisit_clear(c, 0);
    assert_int_equal(pd_covisit_row(c, 0, &e), 0);
    assert_int_equal(pd_covisit_row(c, 3, &e), 1);
    pd_covisit_free(c);
}

/* Slot 1 changes hands (its generation bumps): the old entry is dead, a pair with the new
 * item in slot 1 is a new entry, and a dead entry is reused before the row grows. */
static void test_dead_entries_are_reused(void **state)
{
    uint32_t gens[SLOTS] = {0};
    pd_covisit *c = table(4);
    const pd_covisit_entry *e;

    (void)state;
    pd_covisit_add(c, 0, 1, 0, 3.0f, gens);
    pd_covisit_add(c, 0, 2, 0, 1.0f, gens);
    gens[1] = 1;
    /* the new item in slot 1 takes the dead entry's place, starting from its own weight */
    assert_int_equal(pd_covisit_add(c, 0, 1, 1, 0.5f, gens), 0);
    assert_int_equal(pd_covisit_row(c, 0, &e), 2);
    assert_float_equal(weight_of(c, 0, 1, 1), 0.5, 0);
    assert_float_equal(weight_of(c, 0, 1, 0), -1, 0);
    assert_float_equal(weight_of(c, 0, 2, 0), 1.0, 0);

    gens[2] = 7;
    assert_int_equal(pd_covisit_add(c, 0, 3, 0, 0.25f, gens), 0);
    assert_int_equal(pd_covisit_row(c, 0, &e), 2);
    assert_float_equal(weight_of(c, 0, 3, 0), 0.25, 0);
    assert_float_equal(weight_of(c, 0, 2, 0), -1, 0);
    pd_covisit_free(c);
}

/* neighbors 3: 1 (1), 2 (2), 3 (3) fill the row; then each newcomer replaces the lightest live
 * entry and starts at its weight plus its own:
 *   +4 (0.5): 1 goes, 4 = 1 + 0.5 = 1.5        -> {4: 1.5, 2: 2, 3: 3}
 *   +5 (1):   4 goes, 5 = 1.5 + 1 = 2.5        -> {5: 2.5, 2: 2, 3: 3}
 *   +2 (1):   already in: 2 = 3                -> {5: 2.5, 2: 3, 3: 3}
 *   +6 (0.25): 5 is the lightest, 6 = 2.75     -> {6: 2.75, 2: 3, 3: 3}
 * The row never holds more than 3 and no weight drops. */
static void test_full_row_replaces_lightest(void **state)
{
    uint32_t gens[SLOTS] = {0};
    pd_covisit *c = table(3);
    const pd_covisit_entry *e;

    (void)state;
    pd_covisit_add(c, 0, 1, 0, 1.0f, gens);
    pd_covisit_add(c, 0, 2, 0, 2.0f, gens);
    pd_covisit_add(c, 0, 3, 0, 3.0f, gens);
    assert_int_equal(pd_covisit_add(c, 0, 4, 0, 0.5f, gens), 0);
    assert_int_equal(pd_covisit_row(c, 0, &e), 3);
    assert_float_equal(weight_of(c, 0, 1, 0), -1, 0);
    assert_float_equal(weight_of(c, 0, 4, 0), 1.5, 0);
    pd_covisit_add(c, 0, 5, 0, 1.0f, gens);
    assert_float_equal(weight_of(c, 0, 4, 0), -1, 0);
    assert_float_equal(weight_of(c, 0, 5, 0), 2.5, 0);
    pd_covisit_add(c, 0, 2, 0, 1.0f, gens);
    pd_covisit_add(c, 0, 6, 0, 0.25f, gens);
    assert_int_equal(pd_covisit_row(c, 0, &e), 3);
    assert_float_equal(weight_of(c, 0, 5, 0), -1, 0);
    assert_float_equal(weight_of(c, 0, 6, 0), 2.75, 0);
    assert_float_equal(weight_of(c, 0, 2, 0), 3.0, 0);
    assert_float_equal(weight_of(c, 0, 3, 0), 3.0, 0);

    /* in a full row a dead entry goes first, however heavy: 3 dies, 7 takes its place at its
     * own weight, and the lighter 6 stays */
    gens[3] = 1;
    pd_covisit_add(c, 0, 7, 0, 0.125f, gens);
    assert_int_equal(pd_covisit_row(c, 0, &e), 3);
    assert_float_equal(weight_of(c, 0, 7, 0), 0.125, 0);
    assert_float_equal(weight_of(c, 0, 6, 0), 2.75, 0);
    assert_float_equal(weight_of(c, 0, 2, 0), 3.0, 0);
    pd_covisit_free(c);
}

/* Rows start at 4 entries and double up to the limit (6 here): memory follows. */
static void test_rows_grow_to_the_limit(void **state)
{
    uint32_t gens[SLOTS] = {0};
    pd_covisit *c = table(6);
    size_t base = pd_covisit_memory(c), entry = sizeof(pd_covisit_entry);

    (void)state;
    assert_int_equal(entry, 12);
    pd_covisit_add(c, 0, 1, 0, 1.0f, gens);
    assert_int_equal(pd_covisit_memory(c), base + 4 * entry);
    for (uint32_t to = 2; to <= 4; to++)
        pd_covisit_add(c, 0, to, 0, 1.0f, gens);
    assert_int_equal(pd_covisit_memory(c), base + 4 * entry);
    pd_covisit_add(c, 0, 5, 0, 1.0f, gens);
    assert_int_equal(pd_covisit_memory(c), base + 6 * entry);
    for (uint32_t to = 6; to <= 12; to++)
        pd_covisit_add(c, 0, to, 0, 1.0f, gens);
    assert_int_equal(pd_covisit_memory(c), base + 6 * entry);
    pd_covisit_add(c, 1, 0, 0, 1.0f, gens);
    assert_int_equal(pd_covisit_memory(c), base + 10 * entry);
    pd_covisit_clear(c, 0);
    assert_int_equal(pd_covisit_memory(c), base + 4 * entry);
    pd_covisit_clear(c, 1);
    assert_int_equal(pd_covisit_memory(c), base);
    /* reserving more slots adds empty rows */
    assert_int_equal(pd_covisit_reserve(c, 2 * SLOTS), 0);
    const pd_covisit_entry *e;
    assert_int_equal(pd_covisit_row(c, 2 * SLOTS - 1, &e), 0);
    pd_covisit_free(c);
}

typedef struct buf {
    char *data;
    size_t len;
} buf;

static buf save_row(const pd_covisit *c, uint32_t slot)
{
    buf b = {0};
    FILE *f = open_memstream(&b.data, &b.len);
    pd_bin_writer w;

    assert_non_null(f);
    pd_bin_writer_init(&w, f);
    pd_covisit_save_row(c, slot, &w);
    assert_int_equal(w.err, 0);
    assert_int_equal(fclose(f), 0);
    return b;
}

/* Loads b into slot of c; returns the reader's error (0) and its reason. */
static int load_row(pd_covisit *c, uint32_t slot, size_t n_slots, const buf *b, char *why,
                    size_t len)
{
    FILE *f = fmemopen(b->data, b->len, "r");
    pd_bin_reader r;
    int ret;

    assert_non_null(f);
    pd_bin_reader_init(&r, f);
    ret = pd_covisit_load_row(c, slot, n_slots, &r);
    snprintf(why, len, "%s", r.why);
    if (ret == 0)
        assert_true(pd_bin_at_end(&r));
    fclose(f);
    return ret;
}

static void test_row_save_load(void **state)
{
    uint32_t gens[SLOTS] = {0};
    pd_covisit *c = table(5), *d = table(5);
    const pd_covisit_entry *a, *b;
    char why[160];

    (void)state;
    gens[9] = 4;
    pd_covisit_add(c, 2, 9, 4, 0.75f, gens);
    pd_covisit_add(c, 2, 1, 0, 2.5f, gens);
    pd_covisit_add(c, 2, 9, 4, 0.5f, gens);
    pd_covisit_add(c, 2, 3, 0, 1e-3f, gens);
    buf saved = save_row(c, 2);
    /* u32 count, then 12 bytes an entry */
    assert_int_equal(saved.len, 4 + 3 * 12);

    /* into a row that held something else: replaced */
    pd_covisit_add(d, 5, 7, 0, 9.0f, gens);
    assert_int_equal(load_row(d, 5, SLOTS, &saved, why, sizeof why), 0);
    size_t n = pd_covisit_row(c, 2, &a);
    assert_int_equal(pd_covisit_row(d, 5, &b), n);
    assert_int_equal(n, 3);
    for (size_t k = 0; k < n; k++) {
        assert_int_equal(a[k].item, b[k].item);
        assert_int_equal(a[k].gen, b[k].gen);
        assert_true(a[k].weight == b[k].weight);
    }
    assert_float_equal(weight_of(d, 5, 9, 4), 1.25, 0);
    assert_float_equal(weight_of(d, 5, 7, 0), -1, 0);
    /* and it goes on as a row: a pair adds to its loaded weight */
    pd_covisit_add(d, 5, 1, 0, 0.5f, gens);
    assert_float_equal(weight_of(d, 5, 1, 0), 3.0, 0);

    /* an empty row round-trips */
    buf empty = save_row(c, 0);
    assert_int_equal(empty.len, 4);
    assert_int_equal(load_row(d, 5, SLOTS, &empty, why, sizeof why), 0);
    assert_int_equal(pd_covisit_row(d, 5, &b), 0);
    free(empty.data);

    /* more entries than this table's neighbours */
    pd_covisit *small = table(2);
    assert_int_equal(load_row(small, 0, SLOTS, &saved, why, sizeof why), -EINVAL);
    assert_non_null(strstr(why, "3 entries"));
    pd_covisit_free(small);

    /* an item slot beyond the table: item 9 of 5 slots */
    assert_int_equal(load_row(d, 0, 5, &saved, why, sizeof why), -EINVAL);
    assert_non_null(strstr(why, "item slot 9"));

    /* a negative or NaN weight: the first entry's weight field is bytes 12..15 */
    float bad[2] = {-1.0f, NAN};
    for (int i = 0; i < 2; i++) {
        memcpy(saved.data + 12, &bad[i], sizeof bad[i]); /* little-endian host */
        assert_int_equal(load_row(d, 0, SLOTS, &saved, why, sizeof why), -EINVAL);
        assert_non_null(strstr(why, "weight"));
    }

    /* truncated */
    saved.len -= 2;
    assert_int_not_equal(load_row(d, 0, SLOTS, &saved, why, sizeof why), 0);
    free(saved.data);
    pd_covisit_free(c);
    pd_covisit_free(d);
}

/* ---- the pairs the recommender adds ---- */

static pd_config *load_config(const char *covis)
{
    char yaml[1024];
    pd_diag *diag = pd_diag_new();
    pd_config *conf;

    snprintf(yaml, sizeof yaml,
             "kafka: {brokers: b, topics: [t], group: g}\n"
             "events: {types: [view, buy]}\n"
             "models:\n"
             "  recs:\n"
             "    type: recommender\n"
             "    interactions: {view: 1, buy: 2}\n"
             "    k: 5\n"
             "    dim: 8\n"
             "    co_visitation: {%s}\n",
             covis);
    conf = pd_config_load_string("test.yaml", yaml, strlen(yaml), diag);
    if (!conf)
        pd_diag_print(diag, stderr);
    pd_diag_free(diag);
    assert_non_null(conf);
    assert_int_equal(pd_config_type_index(conf, "view"), 0);
    assert_int_equal(pd_config_type_index(conf, "buy"), 1);
    return conf;
}

#define MAX_LISTS 8

/* The similar lists a refresh hands out, by item. */
typedef struct similar_lists {
    size_t n;
    struct {
        char item[8];
        size_t len;
        char items[8][8];
        float scores[8];
    } list[MAX_LISTS];
} similar_lists;

static void on_similar(void *ctx, const char *item, size_t item_len, const char *const *items,
                       const size_t *item_lens, const float *scores, size_t n)
{
    similar_lists *s = ctx;

    assert_true(s->n < MAX_LISTS && n <= 8 && item_len < 8);
    memcpy(s->list[s->n].item, item, item_len);
    s->list[s->n].item[item_len] = 0;
    s->list[s->n].len = n;
    for (size_t i = 0; i < n; i++) {
        assert_true(item_lens[i] < 8);
        memcpy(s->list[s->n].items[i], items[i], item_lens[i]);
        s->list[s->n].items[i][item_lens[i]] = 0;
        s->list[s->n].scores[i] = scores[i];
    }
    s->n++;
}

/* Asserts item's similar list is exactly want[] (ids "" ending it) with those scores. */
static void assert_similar(const similar_lists *s, const char *item, const char *const *want,
                           const double *scores)
{
    for (size_t l = 0; l < s->n; l++) {
        size_t n = 0;

        if (strcmp(s->list[l].item, item) != 0)
            continue;
        for (; want[n][0]; n++) {
            assert_true(n < s->list[l].len);
            assert_string_equal(s->list[l].items[n], want[n]);
            assert_float_equal(s->list[l].scores[n], scores[n], 1e-6);
        }
        assert_int_equal(s->list[l].len, n);
        return;
    }
    fail_msg("no similar list for %s", item);
}

static void interact(const pd_model_ops *ops, void *m, const char *user, const char *item,
                     int type, int64_t ts)
{
    pd_interaction in = {user, strlen(user), item, strlen(item), type, ts};
    assert_true(ops->interact(m, &in));
}

/* One user: a (view, weight 1), b (buy, weight 2), c (view, weight 1); decay 2, reverse 0.25.
 * When b comes, a is 0 back:   a -> b += 2,              b -> a += 0.25 * 2 = 0.5
 * When c comes, b is 0 back:   b -> c += 1,              c -> b += 0.25
 *               a is 1 back:   a -> c += 1 / 2^2 = 0.25, c -> a += 0.25 * 0.25 = 0.0625
 * Similar lists are a row's heaviest first, as shares of the heaviest:
 *   a: b 1, c 0.25 / 2 = 0.125;  b: c 1, a 0.5;  c: b 1, a 0.0625 / 0.25 = 0.25 */
static void test_pairs_by_distance_and_reverse(void **state)
{
    pd_config *conf = load_config("decay: 2, reverse: 0.25");
    const pd_model_ops *ops = &pd_recommender_ops;
    char err[256];
    void *m = ops->create(&conf->models[0], err, sizeof err);
    similar_lists got = {0};
    pd_list_sink sink = {.ctx = &got, .similar = on_similar};

    (void)state;
    assert_non_null(m);
    interact(ops, m, "u", "a", 0, 1000);
    interact(ops, m, "u", "b", 1, 2000);
    interact(ops, m, "u", "c", 0, 3000);
    ops->refresh(m, 4000, &sink, 100);
    assert_int_equal(got.n, 3);
    assert_similar(&got, "a", (const char *const[]){"b", "c", ""}, (const double[]){1, 0.125});
    assert_similar(&got, "b", (const char *const[]){"c", "a", ""}, (const double[]){1, 0.5});
    assert_similar(&got, "c", (const char *const[]){"b", "a", ""}, (const double[]){1, 0.25});
    ops->destroy(m);
    pd_config_free(conf);
}

/* window 1: a new item pairs with the latest one only, so a and c never meet; reverse 0
 * adds no backward pairs, so c's row stays empty and gets no list.
 *   a -> b += 1, b -> c += 1 */
static void test_pairs_within_window(void **state)
{
    pd_config *conf = load_config("window: 1, score_from: 1, reverse: 0");
    const pd_model_ops *ops = &pd_recommender_ops;
    char err[256];
    void *m = ops->create(&conf->models[0], err, sizeof err);
    similar_lists got = {0};
    pd_list_sink sink = {.ctx = &got, .similar = on_similar};

    (void)state;
    assert_non_null(m);
    interact(ops, m, "u", "a", 0, 1000);
    interact(ops, m, "u", "b", 0, 2000);
    interact(ops, m, "u", "c", 0, 3000);
    ops->refresh(m, 4000, &sink, 100);
    assert_int_equal(got.n, 2);
    assert_similar(&got, "a", (const char *const[]){"b", ""}, (const double[]){1});
    assert_similar(&got, "b", (const char *const[]){"c", ""}, (const double[]){1});
    ops->destroy(m);
    pd_config_free(conf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_needs_a_neighbour),
        cmocka_unit_test(test_weights_add_up),
        cmocka_unit_test(test_dead_entries_are_reused),
        cmocka_unit_test(test_full_row_replaces_lightest),
        cmocka_unit_test(test_rows_grow_to_the_limit),
        cmocka_unit_test(test_row_save_load),
        cmocka_unit_test(test_pairs_by_distance_and_reverse),
        cmocka_unit_test(test_pairs_within_window),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

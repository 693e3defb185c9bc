/* Tests for models/recommender.c through its pd_model_ops table: the progressive HR@K, MRR@K
 * and NDCG@K (and the baselines') of a hand-built stream worked out in full below, the list a
 * user is served, determinism, a save -> load round trip that changes nothing, forget, the LRU
 * bounds on users and items, seen items left out, and what refresh hands its sink. */
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

#include "common/rng.h"
#include "config/config.h"
#include "models/recommender.h"

#define VIEW 0
#define BUY  1

static const pd_model_ops *const ops = &pd_recommender_ops;

/* ---- configuration, model, interactions ---- */

/* A config whose one model is a recommender with the keys in body (indented 4). */
static pd_config *load_config(const char *body)
{
    char yaml[2048];
    pd_diag *diag = pd_diag_new();
    pd_config *conf;

    snprintf(yaml, sizeof yaml,
             "kafka: {brokers: b, topics: [t], group: g}\n"
             "events: {types: [view, buy]}\n"
             "models:\n"
             "  recs:\n"
             "    type: recommender\n"
             "    interactions: {view: 1, buy: 2}\n"
             "%s",
             body);
    conf = pd_config_load_string("test.yaml", yaml, strlen(yaml), diag);
    if (!conf)
        pd_diag_print(diag, stderr);
    pd_diag_free(diag);
    assert_non_null(conf);
    assert_int_equal(pd_config_type_index(conf, "view"), VIEW);
    assert_int_equal(pd_config_type_index(conf, "buy"), BUY);
    assert_int_equal(conf->models[0].kind, PD_MODEL_KIND_RECOMMENDER);
    return conf;
}

/* Co-visitation alone (no embeddings, no popularity term), so every score is a hand sum. */
static const char *const hand_body =
    "    evaluate_on: [view]\n"
    "    k: 2\n"
    "    dim: 8\n"
    "    co_visitation: {window: 20, decay: 1, score_from: 5, "
    "score_decay: 2, reverse: 0.5}\n"
    "    popularity: {half_life: 1d}\n"
    "    blend: {co_visitation: 1, embeddings: 0, popularity: 0}\n";

/* Every part of the blend at work, for the generated streams. */
static const char *const full_body =
    "    k: 5\n"
    "    dim: 8\n"
    "    co_visitation: {window: 10, score_from: 3}\n"
    "    embeddings: {learning_rate: 0.05, negatives: 3}\n"
    "    popularity: {half_life: 10m}\n"
    "    blend: {co_visitation: 1, embeddings: 0.1, popularity: 0.05}\n"
    "    limits: {refresh: 0s}\n";

/* The same with bounds small enough that users and items are evicted and seen rings wrap. */
static const char *const bounded_body =
    "    k: 5\n"
    "    dim: 8\n"
    "    co_visitation: {window: 10, score_from: 3}\n"
    "    embeddings: {learning_rate: 0.05, negatives: 3}\n"
    "    popularity: {half_life: 10m}\n"
    "    blend: {co_visitation: 1, embeddings: 0.1, popularity: 0.05}\n"
    "    limits: {refresh: 0s, users: 30, items: 50, seen: 4}\n";

static void *model_new(const pd_config *conf)
{
    char err[256];
    void *m = ops->create(&conf->models[0], err, sizeof err);

    if (!m)
        fail_msg("create: %s", err);
    return m;
}

static bool interact(void *m, const char *user, const char *item, int type, int64_t ts_ms)
{
    pd_interaction in = {user, strlen(user), item, strlen(item), type, ts_ms};
    return ops->interact(m, &in);
}

static double metric(const void *m, const char *name)
{
    pd_model_metric out[PD_MODEL_MAX_METRICS];
    size_t n = ops->metrics(m, true, out, PD_MODEL_MAX_METRICS);

    for (size_t i = 0; i < n; i++)
        if (strcmp(out[i].name, name) == 0)
            return out[i].value;
    fail_msg("no metric %s", name);
    return NAN;
}

#define MAX_K  8
#define ID_LEN 16

typedef struct list {
    size_t n;
    char items[MAX_K][ID_LEN];
    float scores[MAX_K];
} list;

static void copy_list(list *l, const char *const *items, const size_t *lens, const float *scores,
                      size_t n)
{
    assert_true(n <= MAX_K);
    l->n = n;
    for (size_t i = 0; i < n; i++) {
        assert_true(lens[i] < ID_LEN);
        memcpy(l->items[i], items[i], lens[i]);
        l->items[i][lens[i]] = 0;
        l->scores[i] = scores[i];
    }
}

static list user_list(void *m, const char *user)
{
    const char *items[MAX_K];
    size_t lens[MAX_K];
    float scores[MAX_K];
    list l = {0};

    copy_list(&l, items, lens, scores,
              ops->user_list(m, user, strlen(user), items, lens, scores, MAX_K));
    return l;
}

static void assert_list(const list *l, const char *const *want, const double *scores, double tol)
{
    size_t n = 0;

    for (; want[n]; n++) {
        if (n >= l->n)
            fail_msg("list of %zu items, want %s at %zu", l->n, want[n], n + 1);
        assert_string_equal(l->items[n], want[n]);
        assert_float_equal(l->scores[n], scores[n], tol);
    }
    assert_int_equal(l->n, n);
}

static bool lists_equal(const list *a, const list *b)
{
    if (a->n != b->n)
        return false;
    for (size_t i = 0; i < a->n; i++)
        if (strcmp(a->items[i], b->items[i]) != 0 ||
            memcmp(&a->scores[i], &b->scores[i], sizeof a->scores[i]) != 0)
            return false;
    return true;
}

/* ---- what evaluations and refreshes hand out ---- */

#define MAX_EVALS 16

typedef struct evals {
    size_t n;
    pd_list_eval ev[MAX_EVALS];
} evals;

static void on_eval(void *ctx, const pd_list_eval *ev)
{
    evals *e = ctx;

    assert_true(e->n < MAX_EVALS);
    e->ev[e->n++] = *ev;
}

#define MAX_USERS 64

/* The last list refresh gave each user, a running digest of every call, and checks that
 * hold for every list: at most k items, best first, no item twice. */
typedef struct lists {
    size_t k;
    size_t calls, popular_calls;
    char popular_first[ID_LEN]; /* the first item of the last popular list */
    uint64_t digest;
    size_t n_users;
    char users[MAX_USERS][ID_LEN];
    list last[MAX_USERS];
} lists;

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;

    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

static void check_list(const lists *s, const char *const *items, const size_t *lens,
                       const float *scores, size_t n)
{
    assert_true(n <= s->k);
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            assert_true(scores[i] <= scores[i - 1]);
        for (size_t j = 0; j < i; j++)
            assert_false(lens[i] == lens[j] && memcmp(items[i], items[j], lens[i]) == 0);
    }
}

static size_t user_index(lists *s, const char *user, size_t len)
{
    size_t i = 0;

    for (; i < s->n_users; i++)
        if (strlen(s->users[i]) == len && memcmp(s->users[i], user, len) == 0)
            return i;
    assert_true(i < MAX_USERS && len < ID_LEN);
    memcpy(s->users[i], user, len);
    s->users[i][len] = 0;
    s->last[i] = (list){0};
    s->n_users++;
    return i;
}

static void on_user_list(void *ctx, const char *user, size_t user_len, const char *const *items,
                         const size_t *lens, const float *scores, size_t n)
{
    lists *s = ctx;

    check_list(s, items, lens, scores, n);
    s->calls++;
    s->digest = fnv(s->digest, user, user_len);
    for (size_t i = 0; i < n; i++) {
        s->digest = fnv(s->digest, items[i], lens[i]);
        s->digest = fnv(s->digest, &scores[i], sizeof scores[i]);
    }
    copy_list(&s->last[user_index(s, user, user_len)], items, lens, scores, n);
}

static void on_popular(void *ctx, const char *const *items, const size_t *lens, const float *scores,
                       size_t n)
{
    lists *s = ctx;

    check_list(s, items, lens, scores, n);
    s->popular_calls++;
    if (n)
        snprintf(s->popular_first, sizeof s->popular_first, "%.*s", (int)lens[0], items[0]);
    for (size_t i = 0; i < n; i++)
        s->digest = fnv(s->digest, items[i], lens[i]);
}

static pd_list_sink sink_of(lists *s, size_t k)
{
    *s = (lists){.k = k, .digest = 0xcbf29ce484222325ull};
    return (pd_list_sink){.ctx = s, .user_list = on_user_list, .popular = on_popular};
}

/* The last list refresh handed user, or NULL when it never did. */
static const list *last_list(const lists *s, const char *user)
{
    for (size_t i = 0; i < s->n_users; i++)
        if (strcmp(s->users[i], user) == 0)
            return &s->last[i];
    return NULL;
}

/* ---- the hand-built stream ----
 *
 * k 2, co-visitation alone: window 20, decay 1, reverse 0.5, score_from 5, score_decay 2. A
 * list scores item i by covis(i) = sum over the user's recent items j_k (k = 0: the latest)
 * of C[j_k][i] / (1 + k)^2 / sqrt(visits of j_k), divided by the largest covis over every
 * candidate (seen ones included); seen items are left out and the rest score 0, ties to the
 * item first seen (the lower slot). Slots in order of appearance: p q a b c d.
 * "pop" is the all-time popularity ranking, "recent" the decayed one (half-life 1 day: of two
 * equal totals, the later-earned is ahead); both leave out what the user saw. Served: the arm
 * with the most hits so far, on a tie popularity, then recent, then the blend. Live.
 *
 * Eight users s1..s8 bring in every item before anything is judged (each one interaction, its
 * first: not judged, no pairs), so no judged item is new to the model: s1, s2 buy p and s3, s4
 * buy q (weight 2: p, q total 4), s5..s8 view a, b, c, d (total 1 each). Then, at 9 s on:
 *
 *  1. u1 view a: u1's first. a 2.
 *  2. u1 view b: judged. pop [p, q], recent [q, p]: 0. Blend: row a is empty, all zero: [p, q]:
 *     0. Served pop: 0. Learns a->b 1, b->a 0.5.
 *  3. u2 view a: first. a 3 (visits 3).
 *  4. u2 view b: judged. pop [p, q] (a 3 is seen, b has 2): 0; recent 0. Blend: recent [a],
 *     row a {b 1}: b 1, then p 0: [b, p]: 1. Served pop (all at 0 hits): 0. Hits: blend 1.
 *     Learns a->b 2, b->a 1.
 *  5. u2 view c: judged. pop, recent 0. Blend: recent [b, a], rows b {a 1}, a {b 2}: only seen
 *     candidates, so [p, q]: 0. Served blend: 0. Learns b->c 1, c->b 0.5, a->c 0.5, c->a 0.25.
 *  6. u3 view b: first. b 4 (visits 4).
 *  7. u3 view c: judged. pop [p, q] (b seen): 0, recent 0. Blend: recent [b], row b {a 1, c 1}
 *     / sqrt 4: a and c tie at the top, a the lower slot: [a, c]: 2. Served blend: 2.
 *     Learns b->c 2, c->b 1.
 *  8. u1 view c: judged. pop, recent 0. Blend: recent [b, a], b row {a 1, c 2} / 2, a row
 *     {b 2, c 0.5} / 4 / sqrt 3: c = 1 + 0.072 the top: [c, p]: 1. Served blend: 1.
 *     Learns b->c 3, c->b 1.5, a->c 1, c->a 0.5.
 *  9. u1 view p: judged. pop: p, q, b, c all at 4 (slot order), u1 saw a, b, c: [p, q]: 1.
 *     recent: c, b, q, p (the latest-earned first): [q, p]: 2. Blend: every candidate of
 *     [c, b, a] is seen, p and q score 0: [p, q]: 1. Served blend: 1.
 *     Learns c->p 1, p->c 0.5, b->p 0.5, p->b 0.25, a->p 1/3, p->a 1/6.
 * 10. u1 view a: u1 has seen a: not judged (a repeat of a recent item teaches no pairs).
 * 11. u2 buy d (weight 2): buys are not in evaluate_on: not judged. Recent [c, b, a]:
 *     c->d 2, d->c 1, b->d 1, d->b 0.5, a->d 2/3, d->a 1/3.
 *
 * Served ranks 0, 0, 0, 2, 1, 1 over 6 evaluations, 4 of them served by the blend:
 *   HR@2   = 3 / 6                                 = 0.5
 *   MRR@2  = (1/2 + 1 + 1) / 6                     = 0.4166666667
 *   NDCG@2 = (1/log2 3 + 1/log2 2 + 1/log2 2) / 6  = 0.4384882923
 *   blend_share = 4 / 6
 * Popularity ranks 0, 0, 0, 0, 0, 1:         HR = MRR = NDCG = 1/6
 * Recent popularity ranks 0, 0, 0, 0, 0, 2:  HR 1/6, MRR 0.5 / 6, NDCG (1/log2 3) / 6
 * Plain co-visitation (pairs within the last 20 counted 1 each way, lists from the last 3,
 * ties to the lower slot, only items it has counts for): 2: row a empty: 0; 4: row a {b 1}:
 * 1; 5: c in no row: 0; 7: row b {a 2, c 1}: 2; 8: b {a 2, c 2} + a {b 2, c 1}: c 3, the
 * rest seen: 1; 9: p in no row: 0. Ranks 0, 1, 0, 2, 1, 0: the served figures again.
 *
 * u3's list after it all: recent [c, b] (visits 4 each), seen b, c:
 *   c row {b 1.5, a 0.5, p 1, d 2} / 2, b row {a 1, c 3, p 0.5, d 1} / 4 / 2:
 *   d = 1 + 0.125 = 1.125 (the top), p = 0.5 + 0.0625, a = 0.25 + 0.125: [d 1, p 0.5]. */
typedef struct step {
    const char *user, *item;
    int type;
} step;

static const step hand_stream[] = {
    {"s1", "p", BUY},  {"s2", "p", BUY},  {"s3", "q", BUY},  {"s4", "q", BUY},  {"s5", "a", VIEW},
    {"s6", "b", VIEW}, {"s7", "c", VIEW}, {"s8", "d", VIEW}, {"u1", "a", VIEW}, {"u1", "b", VIEW},
    {"u2", "a", VIEW}, {"u2", "b", VIEW}, {"u2", "c", VIEW}, {"u3", "b", VIEW}, {"u3", "c", VIEW},
    {"u1", "c", VIEW}, {"u1", "p", VIEW}, {"u1", "a", VIEW}, {"u2", "d", BUY},
};
#define HAND_STEPS (sizeof hand_stream / sizeof *hand_stream)

/* Steps [from, to) of the hand stream, step i at (i + 1) s. */
static void feed_hand(void *m, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++)
        assert_true(interact(m, hand_stream[i].user, hand_stream[i].item, hand_stream[i].type,
                             (int64_t)(i + 1) * 1000));
}

static void test_metrics_by_hand(void **state)
{
    pd_config *conf = load_config(hand_body);
    void *m = model_new(conf);
    evals got = {0};
    static const uint32_t served[6] = {0, 0, 0, 2, 1, 1}, pop[6] = {0, 0, 0, 0, 0, 1},
                          recent[6] = {0, 0, 0, 0, 0, 2}, plain[6] = {0, 1, 0, 2, 1, 0};

    (void)state;
    assert_int_equal(ops->output(m), PD_OUTPUT_LIST);
    ops->set_evaluation(m, true, true, on_eval, &got);
    assert_true(isnan(metric(m, "hr_at_k")));
    feed_hand(m, 0, HAND_STEPS);

    assert_int_equal(got.n, 6);
    for (size_t i = 0; i < 6; i++) {
        assert_int_equal(got.ev[i].rank, served[i]);
        assert_int_equal(got.ev[i].n_baselines, 3);
        assert_int_equal(got.ev[i].baseline_rank[0], pop[i]);
        assert_int_equal(got.ev[i].baseline_rank[1], recent[i]);
        assert_int_equal(got.ev[i].baseline_rank[2], plain[i]);
    }
    assert_float_equal(metric(m, "k"), 2, 0);
    assert_float_equal(metric(m, "evaluated"), 6, 0);
    assert_float_equal(metric(m, "hr_at_k"), 0.5, 1e-12);
    assert_float_equal(metric(m, "mrr_at_k"), 0.4166666667, 1e-9);
    assert_float_equal(metric(m, "ndcg_at_k"), 0.4384882923, 1e-9);
    assert_float_equal(metric(m, "blend_share"), 4.0 / 6.0, 1e-12);
    assert_float_equal(metric(m, "baseline_popularity_hr_at_k"), 1.0 / 6.0, 1e-12);
    assert_float_equal(metric(m, "baseline_popularity_mrr_at_k"), 1.0 / 6.0, 1e-12);
    assert_float_equal(metric(m, "baseline_popularity_ndcg_at_k"), 1.0 / 6.0, 1e-12);
    assert_float_equal(metric(m, "baseline_recent_popularity_hr_at_k"), 1.0 / 6.0, 1e-12);
    assert_float_equal(metric(m, "baseline_recent_popularity_mrr_at_k"), 0.5 / 6.0, 1e-12);
    assert_float_equal(metric(m, "baseline_recent_popularity_ndcg_at_k"), 0.1051549589, 1e-9);
    assert_float_equal(metric(m, "baseline_co_visitation_hr_at_k"), 0.5, 1e-12);
    assert_float_equal(metric(m, "baseline_co_visitation_mrr_at_k"), 0.4166666667, 1e-9);
    assert_float_equal(metric(m, "baseline_co_visitation_ndcg_at_k"), 0.4384882923, 1e-9);
    assert_float_equal(metric(m, "users"), 11, 0);
    assert_float_equal(metric(m, "items"), 6, 0);
    assert_float_equal(metric(m, "interactions"), 19, 0);
    assert_float_equal(metric(m, "users_evicted"), 0, 0);
    assert_float_equal(metric(m, "items_evicted"), 0, 0);

    list l = user_list(m, "u3");
    assert_list(&l, (const char *const[]){"d", "p", NULL}, (const double[]){1.0, 0.5}, 1e-6);
    /* a user or an event type it does not know */
    assert_int_equal(user_list(m, "nobody").n, 0);
    assert_false(interact(m, "u1", "z", 5, 30000));
    assert_false(interact(m, "", "z", VIEW, 30000));
    assert_float_equal(metric(m, "interactions"), 19, 0);
    ops->destroy(m);
    pd_config_free(conf);
}

/* Judged as last refreshed (as the daemon does): lists never refreshed hold nothing, so the
 * blend cannot hit where, judged live, it did (step 4), and steps 2..7 all rank 0. A refresh
 * at 15.5 s hands every user (11) what popularity, still serving, gives: u1 (saw a, b) gets
 * [p, q], each at 4 / 4 of the top all-time total; and stores each user's blend list: u1's
 * [c, p], from recent [b, a] as at step 8 above. Step 8 (u1 c) finds c first in it, a hit for
 * the blend, though popularity serves (rank 0); step 9 (u1 p) is judged on the same list,
 * stale as it is (c seen since): p at 2, and the blend, now ahead, serves it: 2. */
static void test_evaluation_as_refreshed(void **state)
{
    pd_config *conf = load_config(hand_body);
    void *m = model_new(conf);
    evals got = {0};
    lists out;
    pd_list_sink sink = sink_of(&out, 2);

    (void)state;
    ops->set_evaluation(m, false, false, on_eval, &got);
    feed_hand(m, 0, 15);
    assert_int_equal(got.n, 4);
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(got.ev[i].rank, 0);
    assert_int_equal(got.ev[0].n_baselines, 0);
    assert_true(isnan(metric(m, "baseline_popularity_hr_at_k")));
    assert_int_equal(ops->refresh(m, 15500, &sink, 100), 11);
    assert_int_equal(out.calls, 11);
    assert_int_equal(out.popular_calls, 1);
    const list *u1 = last_list(&out, "u1");
    assert_non_null(u1);
    assert_list(u1, (const char *const[]){"p", "q", NULL}, (const double[]){1.0, 1.0}, 1e-6);
    feed_hand(m, 15, 17);
    assert_int_equal(got.n, 6);
    assert_int_equal(got.ev[4].rank, 0);
    assert_int_equal(got.ev[5].rank, 2);
    assert_float_equal(metric(m, "blend_share"), 1.0 / 6.0, 1e-12);
    assert_float_equal(metric(m, "hr_at_k"), 1.0 / 6.0, 1e-12);
    assert_float_equal(metric(m, "mrr_at_k"), 0.5 / 6.0, 1e-12);
    assert_float_equal(metric(m, "lists_refreshed"), 11, 0);
    ops->destroy(m);
    pd_config_free(conf);
}

/* ---- generated streams ---- */

#define GEN_USERS     40
#define GEN_USERS_MAX 64
#define GEN_ITEMS     60

typedef struct gen {
    uint64_t state;
    int last[GEN_USERS_MAX]; /* each user's latest item */
} gen;

static uint64_t next_u64(gen *g)
{
    return pd_splitmix64(&g->state);
}

static double uniform(gen *g)
{
    return (double)(next_u64(g) >> 11) / 9007199254740992.0;
}

static gen gen_new(uint64_t seed)
{
    gen g = {seed, {0}};

    for (int u = 0; u < GEN_USERS_MAX; u++)
        g.last[u] = -1;
    return g;
}

typedef struct event {
    char user[ID_LEN], item[ID_LEN];
    int type;
    int64_t ts;
} event;

/* Users uniform; a user mostly walks on along a chain of items (the one after its latest, or
 * the one after that), which co-visitation learns, else picks one skewed towards the low
 * (popular) ids; one event in ten a buy. */
static event gen_event(gen *g, size_t i)
{
    event e;
    int u = (int)(uniform(g) * GEN_USERS), item;

    if (g->last[u] >= 0 && uniform(g) < 0.7)
        item = (g->last[u] + 1 + (uniform(g) < 0.2)) % GEN_ITEMS;
    else
        item = (int)(uniform(g) * uniform(g) * GEN_ITEMS);
    g->last[u] = item;
    snprintf(e.user, sizeof e.user, "u%d", u);
    snprintf(e.item, sizeof e.item, "i%d", item);
    e.type = uniform(g) < 0.1 ? BUY : VIEW;
    e.ts = 1000000 + (int64_t)i * 1000;
    return e;
}

/* Feeds events [from, to) of the stream of seed, refreshing into sink every 50. */
static void feed_gen(void *m, uint64_t seed, size_t from, size_t to, const pd_list_sink *sink)
{
    gen g = gen_new(seed);

    for (size_t i = 0; i < to; i++) {
        event e = gen_event(&g, i);
        if (i < from)
            continue;
        interact(m, e.user, e.item, e.type, e.ts);
        if (sink && i % 50 == 49)
            ops->refresh(m, e.ts, sink, 1000);
    }
}

/* A backlog judged as last refreshed (the daemon catching up: many events per user between
 * two refreshes) says nothing about which list is better, since the blend's lists are stale
 * (or, for new users, not there yet) while the popularity rankings are current: it must not
 * hand the serving to popularity. The blend leads after 2000 events refreshed every 50; then,
 * before any refresh, 1500 new users each touch a rare item and then the most popular one,
 * which popularity ranks first and the blend has no list for: every one of those evaluations
 * is served by the blend all the same (judging them would have handed popularity the lead). */
static void test_backlog_keeps_the_arm(void **state)
{
    pd_config *conf = load_config(full_body);
    void *m = model_new(conf);
    lists out;
    pd_list_sink sink = sink_of(&out, 5);
    char user[ID_LEN];

    (void)state;
    ops->set_evaluation(m, false, false, NULL, NULL);
    feed_gen(m, 7, 0, 2000, &sink);
    double share = metric(m, "blend_share"), n0 = metric(m, "evaluated");
    assert_true(share > 0.5);
    assert_true(out.popular_first[0] && strcmp(out.popular_first, "i59") != 0);
    for (int j = 0; j < 1500; j++) {
        int64_t ts = 1000000 + (2000 + 2 * (int64_t)j) * 1000;
        snprintf(user, sizeof user, "n%d", j);
        interact(m, user, "i59", VIEW, ts);
        interact(m, user, out.popular_first, VIEW, ts + 500);
    }
    double n1 = metric(m, "evaluated");
    assert_float_equal(n1 - n0, 1500, 0);
    assert_float_equal(metric(m, "blend_share") * n1, share * n0 + 1500, 1e-6);
    ops->destroy(m);
    pd_config_free(conf);
}

static void assert_same_metrics(const void *a, const void *b)
{
    pd_model_metric x[PD_MODEL_MAX_METRICS], y[PD_MODEL_MAX_METRICS];
    size_t n = ops->metrics(a, true, x, PD_MODEL_MAX_METRICS);

    assert_int_equal(ops->metrics(b, true, y, PD_MODEL_MAX_METRICS), n);
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(x[i].name, y[i].name);
        if (memcmp(&x[i].value, &y[i].value, sizeof x[i].value) != 0)
            fail_msg("%s: %.17g and %.17g", x[i].name, x[i].value, y[i].value);
    }
}

static void assert_same_lists(void *a, void *b)
{
    char user[ID_LEN];

    for (int u = 0; u < GEN_USERS; u++) {
        snprintf(user, sizeof user, "u%d", u);
        list la = user_list(a, user), lb = user_list(b, user);
        if (!lists_equal(&la, &lb))
            fail_msg("lists of %s differ", user);
    }
}

/* Two models fed the same events give the same lists, bit for bit, live or as refreshed. */
static void test_deterministic(void **state)
{
    pd_config *conf = load_config(full_body);

    (void)state;
    for (int live = 0; live < 2; live++) {
        void *a = model_new(conf), *b = model_new(conf);
        lists la, lb;
        pd_list_sink sa = sink_of(&la, 5), sb = sink_of(&lb, 5);

        ops->set_evaluation(a, live, false, NULL, NULL);
        ops->set_evaluation(b, live, false, NULL, NULL);
        feed_gen(a, 42, 0, 1500, &sa);
        feed_gen(b, 42, 0, 1500, &sb);
        if (!live)
            assert_true(la.calls > 100);
        assert_int_equal(la.calls, lb.calls);
        assert_true(la.digest == lb.digest);
        assert_same_lists(a, b);
        assert_same_metrics(a, b);
        assert_true(metric(a, "evaluated") > 500);
        /* the chains make the blend worth serving: its lists are the ones compared */
        assert_true(metric(a, "blend_share") > 0.5);
        assert_float_equal(metric(a, "interactions"), 1500, 0);
        list l = user_list(a, "u1");
        assert_int_equal(l.n, 5);
        ops->destroy(a);
        ops->destroy(b);
    }
    pd_config_free(conf);
}

typedef struct buf {
    char *data;
    size_t len;
} buf;

static buf save(const void *m)
{
    buf b = {0};
    FILE *f = open_memstream(&b.data, &b.len);
    pd_bin_writer w;

    assert_non_null(f);
    pd_bin_writer_init(&w, f);
    assert_int_equal(ops->save(m, &w), 0);
    assert_int_equal(fclose(f), 0);
    return b;
}

static int load(void *m, const buf *b, char *err, size_t len)
{
    FILE *f = fmemopen(b->data, b->len, "r");
    pd_bin_reader r;
    int ret;

    assert_non_null(f);
    pd_bin_reader_init(&r, f);
    ret = ops->load(m, &r, err, len);
    if (ret == 0)
        assert_true(pd_bin_at_end(&r));
    fclose(f);
    return ret;
}

/* Saved halfway and loaded into a new model: the same lists and figures at once, the same
 * snapshot bytes, and the same everything after the second half fed to both; with evictions
 * (free user slots, reused item slots) and wrapped seen rings in the snapshot. */
static void test_save_load_round_trip(void **state)
{
    pd_config *conf = load_config(bounded_body);
    void *a = model_new(conf), *b = model_new(conf);
    lists la, lb;
    pd_list_sink sa = sink_of(&la, 5), sb = sink_of(&lb, 5);
    char err[256];

    (void)state;
    feed_gen(a, 7, 0, 800, &sa);
    /* some users waiting for a refresh when saved */
    feed_gen(a, 7, 800, 820, NULL);
    buf snap = save(a);
    assert_int_equal(load(b, &snap, err, sizeof err), 0);
    buf again = save(b);
    assert_int_equal(again.len, snap.len);
    assert_memory_equal(again.data, snap.data, snap.len);
    assert_same_lists(a, b);
    assert_same_metrics(a, b);

    la = (lists){.k = 5, .digest = 1};
    lb = (lists){.k = 5, .digest = 1};
    feed_gen(a, 7, 820, 1600, &sa);
    feed_gen(b, 7, 820, 1600, &sb);
    assert_true(la.calls > 100);
    assert_int_equal(la.calls, lb.calls);
    assert_true(la.digest == lb.digest);
    assert_same_lists(a, b);
    assert_same_metrics(a, b);
    assert_float_equal(metric(b, "interactions"), 1600, 0);
    assert_true(metric(b, "users_evicted") > 10);
    assert_true(metric(b, "items_evicted") > 10);

    /* a model of another shape refuses the snapshot and says why */
    pd_config *other = load_config("    k: 4\n    dim: 8\n");
    void *c = model_new(other);
    assert_int_equal(load(c, &snap, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "k 5"));
    ops->destroy(c);
    pd_config_free(other);
    /* and a truncated one */
    c = model_new(conf);
    snap.len /= 2;
    assert_true(load(c, &snap, err, sizeof err) < 0);
    ops->destroy(c);

    free(snap.data);
    free(again.data);
    ops->destroy(a);
    ops->destroy(b);
    pd_config_free(conf);
}

/* A forgotten user has no list, is not refreshed although it was waiting, and comes back as
 * a new user (its next interaction is its first: not judged). */
static void test_forget(void **state)
{
    pd_config *conf = load_config(hand_body);
    void *m = model_new(conf);
    lists out;
    pd_list_sink sink = sink_of(&out, 2);
    evals got = {0};

    (void)state;
    ops->set_evaluation(m, false, false, on_eval, &got);
    feed_hand(m, 0, HAND_STEPS);
    assert_int_equal(user_list(m, "u2").n, 2);
    ops->forget(m, "u2", 2);
    ops->forget(m, "nobody", 6);
    assert_int_equal(user_list(m, "u2").n, 0);
    assert_float_equal(metric(m, "users"), 10, 0);
    assert_int_equal(ops->refresh(m, 20000, &sink, 100), 10);
    assert_null(last_list(&out, "u2"));
    assert_non_null(last_list(&out, "u1"));
    assert_non_null(last_list(&out, "u3"));

    size_t judged = got.n;
    assert_true(interact(m, "u2", "e", VIEW, 21000));
    assert_int_equal(got.n, judged);
    assert_float_equal(metric(m, "users"), 11, 0);
    ops->destroy(m);
    pd_config_free(conf);
}

/* limits.users 2 and limits.items 3: the least recently seen go.
 *   u1 a, u1 b, u2 c, u2 a: users by recency u1, u2; items b, c, a
 *   u3 d: u1 goes (users_evicted 1), b goes and d takes its slot (items_evicted 1).
 * u2 saw a and c: all that is left for it is d. Nothing names b any more. */
static void test_lru_eviction(void **state)
{
    pd_config *conf = load_config("    k: 3\n    dim: 8\n    limits: {users: 2, items: 3}\n");
    void *m = model_new(conf);
    lists out;
    pd_list_sink sink = sink_of(&out, 3);

    (void)state;
    interact(m, "u1", "a", VIEW, 1000);
    interact(m, "u1", "b", VIEW, 2000);
    interact(m, "u2", "c", VIEW, 3000);
    interact(m, "u2", "a", VIEW, 4000);
    assert_float_equal(metric(m, "users_evicted"), 0, 0);
    assert_float_equal(metric(m, "items_evicted"), 0, 0);
    interact(m, "u3", "d", VIEW, 5000);
    assert_float_equal(metric(m, "users_evicted"), 1, 0);
    assert_float_equal(metric(m, "items_evicted"), 1, 0);
    assert_float_equal(metric(m, "users"), 2, 0);
    assert_float_equal(metric(m, "items"), 3, 0);
    assert_int_equal(user_list(m, "u1").n, 0);
    list l = user_list(m, "u2");
    assert_int_equal(l.n, 1);
    assert_string_equal(l.items[0], "d");
    l = user_list(m, "u3");
    assert_int_equal(l.n, 2);
    for (size_t i = 0; i < l.n; i++)
        assert_true(strcmp(l.items[i], "b") != 0 && strcmp(l.items[i], "d") != 0);

    assert_int_equal(ops->refresh(m, 6000, &sink, 100), 2);
    assert_null(last_list(&out, "u1"));
    for (size_t u = 0; u < out.n_users; u++)
        for (size_t i = 0; i < out.last[u].n; i++)
            assert_true(strcmp(out.last[u].items[i], "b") != 0);

    /* u1 comes back: u2, now the least recently seen, goes */
    interact(m, "u1", "c", VIEW, 7000);
    assert_float_equal(metric(m, "users_evicted"), 2, 0);
    assert_int_equal(user_list(m, "u2").n, 0);
    assert_int_equal(user_list(m, "u3").n, 2);
    ops->destroy(m);
    pd_config_free(conf);
}

/* With exclude_seen no list holds an item its user touched, over a generated stream (no user
 * touches more than limits.seen items); without it a user who saw everything still has a
 * list. */
static void test_seen_items_excluded(void **state)
{
    pd_config *conf = load_config(full_body);
    void *m = model_new(conf);
    gen g = gen_new(99);
    static bool seen[GEN_USERS][GEN_ITEMS];
    lists out;
    pd_list_sink sink = sink_of(&out, 5);
    size_t checked = 0;

    (void)state;
    memset(seen, 0, sizeof seen);
    for (size_t i = 0; i < 1200; i++) {
        event e = gen_event(&g, i);
        int u = atoi(e.user + 1), it = atoi(e.item + 1);
        interact(m, e.user, e.item, e.type, e.ts);
        seen[u][it] = true;
        if (i % 40 != 39)
            continue;
        ops->refresh(m, e.ts, &sink, 1000);
        for (size_t x = 0; x < out.n_users; x++) {
            int uu = atoi(out.users[x] + 1);
            for (size_t k = 0; k < out.last[x].n; k++) {
                assert_false(seen[uu][atoi(out.last[x].items[k] + 1)]);
                checked++;
            }
        }
        list l = user_list(m, e.user);
        for (size_t k = 0; k < l.n; k++)
            assert_false(seen[u][atoi(l.items[k] + 1)]);
    }
    assert_true(metric(m, "blend_share") > 0.5); /* the blend's lists, not only popularity's */
    assert_true(checked > 1000);
    ops->destroy(m);
    pd_config_free(conf);

    /* three items, one user who saw them all */
    static const char *const bodies[2] = {"    k: 3\n    dim: 8\n",
                                          "    k: 3\n    dim: 8\n    exclude_seen: false\n"};
    for (int keep = 0; keep < 2; keep++) {
        conf = load_config(bodies[keep]);
        m = model_new(conf);
        interact(m, "u", "a", VIEW, 1000);
        interact(m, "u", "b", VIEW, 2000);
        interact(m, "u", "c", BUY, 3000);
        list l = user_list(m, "u");
        assert_int_equal(l.n, keep ? 3 : 0);
        ops->destroy(m);
        pd_config_free(conf);
    }
}

/* refresh hands each waiting user's list once (up to budget), at most k items, best first
 * (the sink's checks), the same list user_list gives, and nothing for users not waiting. */
static void test_refresh_to_sink(void **state)
{
    pd_config *conf = load_config(full_body);
    void *m = model_new(conf);
    lists out;
    pd_list_sink sink = sink_of(&out, 5);
    char user[ID_LEN];

    (void)state;
    feed_gen(m, 5, 0, 600, NULL);
    /* every user waits; a budget of 10 takes 10 of them */
    assert_int_equal(ops->refresh(m, 700000000, &sink, 10), 10);
    assert_int_equal(out.calls, 10);
    assert_int_equal(out.popular_calls, 1);
    size_t rest = ops->refresh(m, 700000000, &sink, 1000);
    assert_int_equal(10 + rest, metric(m, "users"));
    assert_int_equal(out.calls, 10 + rest);
    assert_int_equal(out.n_users, 10 + rest);
    assert_int_equal(out.popular_calls, 1); /* nothing changed since */
    /* nobody waits now */
    assert_int_equal(ops->refresh(m, 700000000, &sink, 1000), 0);
    assert_float_equal(metric(m, "lists_refreshed"), 10 + rest, 0);
    for (int u = 0; u < GEN_USERS; u++) {
        snprintf(user, sizeof user, "u%d", u);
        const list *last = last_list(&out, user);
        list now = user_list(m, user);
        assert_non_null(last);
        assert_int_equal(last->n, 5);
        assert_true(lists_equal(last, &now));
        for (size_t i = 1; i < now.n; i++)
            assert_true(now.scores[i] <= now.scores[i - 1]);
    }
    /* one interaction: that user alone is refreshed */
    interact(m, "u3", "i7", VIEW, 700001000);
    size_t before = out.calls;
    assert_int_equal(ops->refresh(m, 700002000, &sink, 1000), 1);
    assert_int_equal(out.calls, before + 1);
    ops->destroy(m);
    pd_config_free(conf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metrics_by_hand),
        cmocka_unit_test(test_evaluation_as_refreshed),
        cmocka_unit_test(test_backlog_keeps_the_arm),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_save_load_round_trip),
        cmocka_unit_test(test_forget),
        cmocka_unit_test(test_lru_eviction),
        cmocka_unit_test(test_seen_items_excluded),
        cmocka_unit_test(test_refresh_to_sink),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

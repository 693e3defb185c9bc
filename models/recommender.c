/* The recommender kind of model (recommender.h): items and users with their LRU bounds, the
 * interaction that teaches co-visitation (covisit.h), popularity (popularity.h) and the BPR
 * embeddings (bpr.h), the progressive evaluation of lists, batched scoring through
 * models/topk.h, and the snapshot section.
 *
 * A list is scored, for user u with recent items j_0 (latest), j_1, ... (distinct) and item i, as
 *   covis(i) / max covis + alpha_u * (u . v_i + b_i) + w_pop * pop(i) / max pop
 * where covis(i) = sum over k < score_from of C[j_k][i] / (1 + k)^score_decay / sqrt(visits
 * of j_k), the co-visitation weights of the user's latest items (max-normalised, so it is in
 * [0, 1] whatever the counts), alpha_u = w_emb / sd_i(u . v_i + b_i) puts the embeddings'
 * scores on the scale of a standard deviation (computed from the item vectors' covariance, as
 * u's own variance over the catalogue, without scoring it), and pop is decayed popularity.
 * One cblas_sgemm computes the second and third terms for a batch of users: item rows are
 * [v_i, b_i, pop_i], user rows [alpha_u u, alpha_u, w_pop / max pop]; the sparse first term
 * and the exclusion of seen items are added per block by the selection's hook.
 *
 * What is served is chosen online among three lists, the blend and the two popularity
 * rankings (all-time and decayed), by their hits at K over past evaluations (exponentially
 * weighted): a data set on which co-visitation has nothing to go on (few users per item) gets
 * the popularity list it would have been better off with, and the blend takes over as soon as
 * it hits more. Until the blend has hit more, popularity serves: it needs no evidence. */
#include "models/recommender.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "common/error.h"
#include "common/hashtab.h"
#include "common/rng.h"
#include "models/bpr.h"
#include "models/covisit.h"
#include "models/popularity.h"
#include "models/topk.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

#define REC_SECTION_VERSION 1
#define NONE                UINT32_MAX
#define BATCH               256  /* users scored by one product */
#define NEG_RING            4096 /* latest interactions negatives are drawn from */
#define INIT_SD             0.1  /* new vectors start N(0, 0.1^2) per coordinate */
/* The plain co-visitation baseline: symmetric counts of pairs within a user's last 20 items,
 * lists scored from the last 3 (the bar the blend must clear; issue figures). */
#define BASE_WINDOW     20
#define BASE_SCORE_FROM 3
/* The embeddings' variance is recomputed after this many interactions or as many as there are
 * items, whichever is more: O(items * dim^2) amortised to O(dim^2) per interaction. */
#define STATS_EVERY 1024
/* Evaluations after which an arm's past hits count half in the choice of what to serve. */
#define ARM_HALF_LIFE 10000.0
#define MAX_ID        4096 /* bytes of a user or item id */

enum { ARM_BLEND, ARM_POPULAR, ARM_RECENT, N_ARMS };
enum { BASE_POPULARITY, BASE_RECENT_POPULARITY, BASE_CO_VISITATION, N_BASES };

/* An item as a slot and the generation of that slot: dead once the slot is reused. */
typedef struct ref {
    uint32_t slot, gen;
} ref;

typedef struct item {
    char *id; /* NULL: a free slot */
    uint32_t id_len;
    uint64_t hash;
    uint32_t prev, next; /* LRU, least recently seen first */
    float visits;        /* interactions, unweighted: co-visitation rows are scaled by it */
    bool sim_queued;
    int64_t sim_ms; /* refresh clock of its last similar list; INT64_MIN: never */
} item;

typedef struct user {
    char *id; /* NULL: a free slot */
    uint32_t id_len;
    uint64_t hash;
    uint32_t gen; /* bumps when the slot changes hands: queue entries of the old user die */
    uint32_t prev, next;
    int64_t last_ms;
    int64_t listed_ms; /* refresh clock of its last list; INT64_MIN: never */
    float *vec;        /* dim floats; the block also holds recent and list */
    ref *recent;       /* ring of ring_len, the latest at head - 1 */
    uint32_t n_recent, head_recent;
    ref *seen; /* ring of up to max_seen */
    uint32_t n_seen, head_seen, cap_seen;
    ref *list; /* the blend's list at the last refresh, best first */
    uint32_t n_list;
    bool queued;
} user;

/* HR, MRR and NDCG at K as sums over evaluations. */
typedef struct list_score {
    double n, hits, rr, dcg;
} list_score;

typedef struct cand {
    uint32_t slot;
    float value;
} cand;

/* One user row of a batch: its co-visitation candidates and seen items, sorted by slot, and
 * how far the selection's blocks have consumed them. */
typedef struct row {
    cand *cands;
    size_t n_cands, next_cand;
    float cand_scale;
    uint32_t *seen;
    size_t n_seen, next_seen;
} row;

typedef struct rec {
    pd_recommender_conf conf;
    size_t dim, D, ring_len, k;

    item *items;
    uint32_t *gens;
    float *V; /* D floats per slot: v, b, pop */
    size_t n_items, cap_items;
    uint32_t item_head, item_tail;
    pd_hashtab item_map; /* id hash -> slot + 1 */
    pd_covisit *covis, *plain;
    pd_popularity *pop;

    user *users;
    size_t n_users, cap_users, live_users;
    uint32_t *free_users;
    size_t n_free;
    uint32_t user_head, user_tail;
    pd_hashtab user_map;

    ref neg[NEG_RING];
    size_t n_neg, head_neg;
    pd_rng rng;

    ref *uq, *iq; /* rings of users to rescore and items whose similar list to rewrite */
    size_t uq_head, uq_n, uq_cap, iq_head, iq_n, iq_cap;
    int64_t popular_ms;
    bool popular_dirty;

    /* scoring scratch */
    pd_topk *topk;
    float *urows;
    row rows[BATCH];
    cand *cand_buf;
    uint32_t *seen_buf;
    float *acc;
    uint32_t *touched;
    size_t cand_cap, acc_cap;
    uint32_t *out_items;
    float *out_scores;
    size_t out_counts[BATCH];
    const char **names;
    size_t *name_lens;
    float *name_scores;

    /* the embeddings' covariance over items, for alpha_u */
    float *gram;
    double *mean;
    bool stats_valid;
    uint64_t stats_at;

    bool live, baselines, queues;
    pd_list_eval_fn observer;
    void *observer_ctx;
    list_score served, base[N_BASES];
    double arm_hits[N_ARMS];
    uint64_t interactions, evaluations_blend, users_evicted, items_evicted, lists_refreshed,
        similar_refreshed;
} rec;

/* ------------------------------------------------------------------------------------------ */
/* lifecycle */

static void rec_destroy(void *state)
{
    rec *r = state;

    if (!r)
        return;
    for (size_t s = 0; s < r->n_items; s++)
        free(r->items[s].id);
    for (size_t s = 0; s < r->n_users; s++) {
        free(r->users[s].id);
        free(r->users[s].vec);
        free(r->users[s].seen);
    }
    free(r->items);
    free(r->gens);
    free(r->V);
    pd_hashtab_release(&r->item_map);
    pd_covisit_free(r->covis);
    pd_covisit_free(r->plain);
    pd_popularity_free(r->pop);
    free(r->users);
    free(r->free_users);
    pd_hashtab_release(&r->user_map);
    free(r->uq);
    free(r->iq);
    pd_topk_free(r->topk);
    free(r->urows);
    free(r->cand_buf);
    free(r->seen_buf);
    free(r->acc);
    free(r->touched);
    free(r->out_items);
    free(r->out_scores);
    free(r->names);
    free(r->name_lens);
    free(r->name_scores);
    free(r->gram);
    free(r->mean);
    free(r);
}

static int alloc_scratch(rec *r)
{
    size_t k = r->k, seen = (size_t)r->conf.max_seen;
    char err[128];

    r->cand_cap = (size_t)r->conf.score_from * (size_t)r->conf.neighbors;
    if (r->cand_cap < (size_t)BASE_SCORE_FROM * (size_t)r->conf.neighbors)
        r->cand_cap = (size_t)BASE_SCORE_FROM * (size_t)r->conf.neighbors;
    r->topk = pd_topk_new(BATCH, k, 0, err, sizeof err);
    r->urows = malloc(BATCH * r->D * sizeof *r->urows);
    r->cand_buf = malloc(BATCH * r->cand_cap * sizeof *r->cand_buf);
    r->seen_buf = malloc(BATCH * seen * sizeof *r->seen_buf);
    r->touched = malloc(r->cand_cap * sizeof *r->touched);
    r->out_items = malloc(BATCH * k * sizeof *r->out_items);
    r->out_scores = malloc(BATCH * k * sizeof *r->out_scores);
    r->names = malloc(k * sizeof *r->names);
    r->name_lens = malloc(k * sizeof *r->name_lens);
    r->name_scores = malloc(k * sizeof *r->name_scores);
    r->gram = calloc(r->D * r->D, sizeof *r->gram);
    r->mean = calloc(r->D, sizeof *r->mean);
    if (!r->topk || !r->urows || !r->cand_buf || !r->seen_buf || !r->touched || !r->out_items ||
        !r->out_scores || !r->names || !r->name_lens || !r->name_scores || !r->gram || !r->mean)
        return -ENOMEM;
    for (size_t b = 0; b < BATCH; b++) {
        r->rows[b].cands = r->cand_buf + b * r->cand_cap;
        r->rows[b].seen = r->seen_buf + b * seen;
    }
    return 0;
}

static void *rec_create(const pd_model_conf *conf, char *errbuf, size_t errlen)
{
    const pd_recommender_conf *c = &conf->recommender;
    rec *r = calloc(1, sizeof *r);

    if (!r) {
        pd_set_error(errbuf, errlen, "out of memory");
        return NULL;
    }
    r->conf = *c;
    r->dim = (size_t)c->dim;
    r->D = r->dim + 2;
    r->k = (size_t)c->k;
    r->ring_len = (size_t)(c->window > BASE_WINDOW ? c->window : BASE_WINDOW);
    if ((size_t)c->score_from > r->ring_len)
        r->ring_len = (size_t)c->score_from;
    r->item_head = r->item_tail = r->user_head = r->user_tail = NONE;
    r->popular_ms = INT64_MIN;
    r->queues = true;
    pd_rng_seed(&r->rng, c->seed, 0);
    r->covis = pd_covisit_new((uint32_t)c->neighbors);
    r->pop = pd_popularity_new(c->popularity_half_life_ms, r->k + (size_t)c->max_seen);
    if (!r->covis || !r->pop || pd_hashtab_init(&r->item_map, 64) < 0 ||
        pd_hashtab_init(&r->user_map, 64) < 0 || alloc_scratch(r) < 0) {
        pd_set_error(errbuf, errlen, "out of memory for a recommender of k %zu, dim %zu", r->k,
                     r->dim);
        rec_destroy(r);
        return NULL;
    }
    return r;
}

/* What makes the learned state meaningful: the vectors' size and what an interaction is. */
static uint64_t rec_fingerprint(const pd_model_conf *conf)
{
    const pd_recommender_conf *c = &conf->recommender;
    int64_t parts[] = {PD_MODEL_KIND_RECOMMENDER, c->dim, c->k, c->max_seen, c->neighbors,
                       c->window, c->score_from};

    return XXH3_64bits(parts, sizeof parts);
}

/* The rest (weights, rates, the blend, the limits that do not size the state) applies at
 * once; users and items above new caps go at their next eviction. */
static int rec_reconfigure(void *state, const pd_model_conf *conf)
{
    rec *r = state;

    r->conf = conf->recommender;
    return 0;
}

static pd_model_output rec_output(const void *state)
{
    (void)state;
    return PD_OUTPUT_LIST;
}

static double rec_predict(const void *state, const pd_feature *x, size_t n)
{
    (void)state;
    (void)x;
    (void)n;
    return NAN; /* a recommender scores lists, not feature vectors */
}

static double rec_learn(void *state, const pd_feature *x, size_t n, double label, double weight)
{
    (void)state;
    (void)x;
    (void)n;
    (void)label;
    (void)weight;
    return NAN;
}

static bool rec_publishing(const void *state)
{
    (void)state;
    return true;
}

/* ------------------------------------------------------------------------------------------ */
/* ids, LRU lists */

static uint64_t id_hash(const char *id, size_t len)
{
    return XXH3_64bits(id, len);
}

/* Links for both LRU lists: an array of records with prev/next at the same place. */
#define LRU_UNLINK(arr, head, tail, s)                                                        \
    do {                                                                                      \
        uint32_t p_ = (arr)[s].prev, n_ = (arr)[s].next;                                      \
        if (p_ != NONE)                                                                       \
            (arr)[p_].next = n_;                                                              \
        else                                                                                  \
            (head) = n_;                                                                      \
        if (n_ != NONE)                                                                       \
            (arr)[n_].prev = p_;                                                              \
        else                                                                                  \
            (tail) = p_;                                                                      \
        (arr)[s].prev = (arr)[s].next = NONE;                                                 \
    } while (0)

#define LRU_APPEND(arr, head, tail, s)                                                        \
    do {                                                                                      \
        (arr)[s].prev = (tail);                                                               \
        (arr)[s].next = NONE;                                                                 \
        if ((tail) != NONE)                                                                   \
            (arr)[tail].next = (s);                                                           \
        else                                                                                  \
            (head) = (s);                                                                     \
        (tail) = (s);                                                                         \
    } while (0)

static size_t item_find(const rec *r, uint64_t h, const char *id, size_t len)
{
    size_t i;

    for (i = pd_hashtab_first(&r->item_map, h); r->item_map.slots[i].value;
         i = pd_hashtab_next(&r->item_map, i)) {
        const item *it = &r->items[r->item_map.slots[i].value - 1];
        if (r->item_map.slots[i].hash == h && it->id_len == len && memcmp(it->id, id, len) == 0)
            return i;
    }
    return i;
}

static size_t user_find(const rec *r, uint64_t h, const char *id, size_t len)
{
    size_t i;

    for (i = pd_hashtab_first(&r->user_map, h); r->user_map.slots[i].value;
         i = pd_hashtab_next(&r->user_map, i)) {
        const user *u = &r->users[r->user_map.slots[i].value - 1];
        if (r->user_map.slots[i].hash == h && u->id_len == len && memcmp(u->id, id, len) == 0)
            return i;
    }
    return i;
}

/* Draws the starting vector of an id: the same in every process for the same seed. */
static void init_vector(const rec *r, float *v, uint64_t h, uint64_t stream)
{
    pd_rng g;

    pd_rng_seed(&g, r->conf.seed ^ h, stream);
    for (size_t k = 0; k < r->dim; k++)
        v[k] = (float)(INIT_SD * pd_rng_normal(&g));
}

/* ------------------------------------------------------------------------------------------ */
/* items */

static int items_grow(rec *r)
{
    size_t cap = r->cap_items ? r->cap_items * 2 : 256;
    void *p;

    if (cap > (size_t)r->conf.max_items)
        cap = (size_t)r->conf.max_items;
    if (!(p = realloc(r->items, cap * sizeof *r->items)))
        return -ENOMEM;
    r->items = p;
    if (!(p = realloc(r->gens, cap * sizeof *r->gens)))
        return -ENOMEM;
    r->gens = p;
    if (!(p = realloc(r->V, cap * r->D * sizeof *r->V)))
        return -ENOMEM;
    r->V = p;
    if (!(p = realloc(r->acc, cap * sizeof *r->acc)))
        return -ENOMEM;
    r->acc = p;
    memset(r->items + r->cap_items, 0, (cap - r->cap_items) * sizeof *r->items);
    memset(r->acc + r->cap_items, 0, (cap - r->cap_items) * sizeof *r->acc);
    memset(r->gens + r->cap_items, 0, (cap - r->cap_items) * sizeof *r->gens);
    if (pd_covisit_reserve(r->covis, cap) < 0 || (r->plain && pd_covisit_reserve(r->plain, cap) < 0) ||
        pd_popularity_reserve(r->pop, cap) < 0)
        return -ENOMEM;
    r->cap_items = cap;
    return 0;
}

/* The least recently seen item makes room: its row, counts and id go; references to it
 * elsewhere die with its generation. */
static uint32_t item_evict(rec *r)
{
    uint32_t s = r->item_head;
    item *it = &r->items[s];

    pd_hashtab_remove_at(&r->item_map, pd_hashtab_slot_of(&r->item_map, it->hash, s + 1));
    LRU_UNLINK(r->items, r->item_head, r->item_tail, s);
    free(it->id);
    it->id = NULL;
    r->gens[s]++;
    pd_covisit_clear(r->covis, s);
    if (r->plain)
        pd_covisit_clear(r->plain, s);
    pd_popularity_remove(r->pop, s);
    r->items_evicted++;
    return s;
}

static int item_add(rec *r, uint64_t h, const char *id, size_t len, uint32_t *ret_slot)
{
    uint32_t s;
    char *copy = malloc(len + 1);

    if (!copy || pd_hashtab_reserve(&r->item_map) < 0)
        goto out_nomem;
    if (r->n_items == r->cap_items && r->n_items < (size_t)r->conf.max_items &&
        items_grow(r) < 0)
        goto out_nomem;
    /* at limits.items (or above it, lowered by a reload) the least recently seen makes room */
    s = r->n_items < r->cap_items && r->n_items < (size_t)r->conf.max_items
            ? (uint32_t)r->n_items++
            : item_evict(r);
    memcpy(copy, id, len);
    copy[len] = 0;
    r->items[s] = (item){.id = copy, .id_len = (uint32_t)len, .hash = h, .sim_ms = INT64_MIN};
    float *v = r->V + (size_t)s * r->D;
    init_vector(r, v, h, 1);
    v[r->dim] = 0;     /* bias */
    v[r->dim + 1] = 0; /* popularity, set by the interaction */
    pd_hashtab_insert(&r->item_map, h, s + 1);
    LRU_APPEND(r->items, r->item_head, r->item_tail, s);
    *ret_slot = s;
    return 0;

out_nomem:
    free(copy);
    return -ENOMEM;
}

/* The slot of an item, added when it is new: 1 when it was added, 0 when it was known (and
 * is now the most recently seen), or -ENOMEM. */
static int item_get(rec *r, const char *id, size_t len, uint32_t *ret_slot)
{
    uint64_t h = id_hash(id, len);
    size_t i = item_find(r, h, id, len);

    if (!r->item_map.slots[i].value)
        return item_add(r, h, id, len, ret_slot) < 0 ? -ENOMEM : 1;
    *ret_slot = (uint32_t)(r->item_map.slots[i].value - 1);
    LRU_UNLINK(r->items, r->item_head, r->item_tail, *ret_slot);
    LRU_APPEND(r->items, r->item_head, r->item_tail, *ret_slot);
    return 0;
}

static bool ref_live(const rec *r, ref x)
{
    return x.slot < r->n_items && r->gens[x.slot] == x.gen && r->items[x.slot].id;
}

/* ------------------------------------------------------------------------------------------ */
/* users */

static void user_release(rec *r, uint32_t s)
{
    user *u = &r->users[s];

    pd_hashtab_remove_at(&r->user_map, pd_hashtab_slot_of(&r->user_map, u->hash, s + 1));
    LRU_UNLINK(r->users, r->user_head, r->user_tail, s);
    free(u->id);
    free(u->vec);
    free(u->seen);
    *u = (user){.gen = u->gen + 1, .prev = NONE, .next = NONE};
    r->free_users[r->n_free++] = s;
    r->live_users--;
}

static int users_grow(rec *r)
{
    size_t cap = r->cap_users ? r->cap_users * 2 : 256;
    void *p;

    if (cap > (size_t)r->conf.max_users)
        cap = (size_t)r->conf.max_users;
    if (!(p = realloc(r->users, cap * sizeof *r->users)))
        return -ENOMEM;
    r->users = p;
    if (!(p = realloc(r->free_users, cap * sizeof *r->free_users)))
        return -ENOMEM;
    r->free_users = p;
    r->cap_users = cap;
    return 0;
}

/* A slot for a new user: the least recently seen one's when limits.users is reached (or was
 * lowered by a reload), else a free or new one (the caller has made room). */
static uint32_t user_slot_take(rec *r)
{
    if (r->live_users >= (size_t)r->conf.max_users) {
        r->users_evicted++;
        user_release(r, r->user_head);
    }
    if (r->n_free)
        return r->free_users[--r->n_free];
    r->users[r->n_users] = (user){.prev = NONE, .next = NONE};
    return (uint32_t)r->n_users++;
}

static int user_add(rec *r, uint64_t h, const char *id, size_t len, int64_t ts_ms,
                    uint32_t *ret_slot)
{
    size_t block = r->dim * sizeof(float) + (r->ring_len + r->k) * sizeof(ref);
    char *copy = malloc(len + 1);
    /* zeroed: a snapshot writes the whole recent ring, its unused slots too (memcheck saw
     * heap garbage go into the file and its checksum) */
    float *vec = calloc(1, block);

    if (!copy || !vec || pd_hashtab_reserve(&r->user_map) < 0)
        goto out_nomem;
    if (r->live_users < (size_t)r->conf.max_users && !r->n_free && r->n_users == r->cap_users &&
        users_grow(r) < 0)
        goto out_nomem;
    uint32_t s = user_slot_take(r);
    user *u = &r->users[s];
    memcpy(copy, id, len);
    copy[len] = 0;
    *u = (user){.id = copy, .id_len = (uint32_t)len, .hash = h, .gen = u->gen, .vec = vec,
                .last_ms = ts_ms, .listed_ms = INT64_MIN};
    u->recent = (ref *)(vec + r->dim);
    u->list = u->recent + r->ring_len;
    init_vector(r, vec, h, 0);
    pd_hashtab_insert(&r->user_map, h, s + 1);
    LRU_APPEND(r->users, r->user_head, r->user_tail, s);
    r->live_users++;
    *ret_slot = s;
    return 0;

out_nomem:
    free(copy);
    free(vec);
    return -ENOMEM;
}

static int user_get(rec *r, const char *id, size_t len, int64_t ts_ms, uint32_t *ret_slot)
{
    uint64_t h = id_hash(id, len);
    size_t i = user_find(r, h, id, len);

    if (!r->user_map.slots[i].value)
        return user_add(r, h, id, len, ts_ms, ret_slot);
    *ret_slot = (uint32_t)(r->user_map.slots[i].value - 1);
    LRU_UNLINK(r->users, r->user_head, r->user_tail, *ret_slot);
    LRU_APPEND(r->users, r->user_head, r->user_tail, *ret_slot);
    return 0;
}

/* The k-th latest of u's recent items (k = 0: the latest). */
static ref recent_at(const rec *r, const user *u, size_t k)
{
    return u->recent[(u->head_recent + r->ring_len - 1 - k) % r->ring_len];
}

static bool has_seen(const user *u, ref x)
{
    for (uint32_t i = 0; i < u->n_seen; i++)
        if (u->seen[i].slot == x.slot && u->seen[i].gen == x.gen)
            return true;
    return false;
}

/* Where x stands among u's recent items (0: the latest), or n_recent when it is not there. */
static size_t recent_find(const rec *r, const user *u, ref x)
{
    size_t k = 0;

    for (; k < u->n_recent; k++) {
        ref j = recent_at(r, u, k);
        if (j.slot == x.slot && j.gen == x.gen)
            break;
    }
    return k;
}

/* Makes x u's latest item: recent items are distinct, so a repeat (at, from recent_find())
 * moves to the front and the others keep their order; a new one pushes the oldest out. */
static int remember(rec *r, user *u, ref x, size_t at)
{
    size_t L = r->ring_len;

    if (at < u->n_recent) {
        for (size_t k = at; k > 0; k--)
            u->recent[(u->head_recent + L - 1 - k) % L] = recent_at(r, u, k - 1);
        u->recent[(u->head_recent + L - 1) % L] = x;
        return 0;
    }
    u->recent[u->head_recent] = x;
    u->head_recent = (uint32_t)((u->head_recent + 1) % r->ring_len);
    if (u->n_recent < r->ring_len)
        u->n_recent++;
    if (has_seen(u, x))
        return 0;
    if (u->n_seen < (uint32_t)r->conf.max_seen && u->n_seen == u->cap_seen) {
        uint32_t cap = u->cap_seen ? u->cap_seen * 2 : 8;
        ref *p;

        if (cap > (uint32_t)r->conf.max_seen)
            cap = (uint32_t)r->conf.max_seen;
        if (!(p = realloc(u->seen, cap * sizeof *p)))
            return -ENOMEM;
        u->seen = p;
        u->cap_seen = cap;
    }
    if (u->n_seen < u->cap_seen) {
        u->seen[u->n_seen++] = x;
        return 0;
    }
    u->seen[u->head_seen] = x; /* full: the oldest goes */
    u->head_seen = (u->head_seen + 1) % u->n_seen;
    return 0;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* The slots of u's live seen items, ascending, into out (max_seen room). */
static size_t sorted_seen(const rec *r, const user *u, uint32_t *out)
{
    size_t n = 0;

    for (uint32_t i = 0; i < u->n_seen; i++)
        if (ref_live(r, u->seen[i]))
            out[n++] = u->seen[i].slot;
    qsort(out, n, sizeof *out, cmp_u32);
    return n;
}

static bool in_sorted(const uint32_t *a, size_t n, uint32_t x)
{
    size_t lo = 0, hi = n;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (a[mid] < x)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n && a[lo] == x;
}

/* ------------------------------------------------------------------------------------------ */
/* queues of users and items to refresh */

static int ring_push(ref **q, size_t *head, size_t *n, size_t *cap, ref x)
{
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 256;
        ref *p = malloc(nc * sizeof *p);

        if (!p)
            return -ENOMEM;
        for (size_t i = 0; i < *n; i++)
            p[i] = (*q)[(*head + i) % *cap];
        free(*q);
        *q = p;
        *head = 0;
        *cap = nc;
    }
    (*q)[(*head + *n) % *cap] = x;
    (*n)++;
    return 0;
}

static ref ring_pop(ref *q, size_t *head, size_t *n, size_t cap)
{
    ref x = q[*head];

    *head = (*head + 1) % cap;
    (*n)--;
    return x;
}

static void queue_user(rec *r, uint32_t s)
{
    user *u = &r->users[s];

    if (r->queues && !u->queued &&
        ring_push(&r->uq, &r->uq_head, &r->uq_n, &r->uq_cap, (ref){s, u->gen}) == 0)
        u->queued = true;
}

static void queue_item(rec *r, uint32_t s)
{
    item *it = &r->items[s];

    if (r->queues && !it->sim_queued &&
        ring_push(&r->iq, &r->iq_head, &r->iq_n, &r->iq_cap, (ref){s, r->gens[s]}) == 0)
        it->sim_queued = true;
}

/* ------------------------------------------------------------------------------------------ */
/* scoring */

/* Recomputes the covariance of the item rows' first dim + 1 columns (v, b) when it is due. */
static void stats_update(rec *r)
{
    size_t D = r->D, n = r->n_items;
    uint64_t every = n > STATS_EVERY ? n : STATS_EVERY;

    if (r->stats_valid && r->interactions - r->stats_at < every)
        return;
    r->stats_valid = true;
    r->stats_at = r->interactions;
    if (n == 0)
        return;
    /* rows of evicted items are reused at once, so every slot below n holds an item */
    cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)D, (int)n, 1.0f / (float)n, r->V,
                (int)D, 0.0f, r->gram, (int)D);
    for (size_t c = 0; c < D; c++)
        r->mean[c] = 0;
    for (size_t s = 0; s < n; s++)
        for (size_t c = 0; c < D; c++)
            r->mean[c] += r->V[s * D + c];
    for (size_t c = 0; c < D; c++)
        r->mean[c] /= (double)n;
}

/* alpha_u: w_emb over the standard deviation of u . v_i + b_i across items, i.e.
 * sqrt(x' Cov x) with x = (u, 1). 0 when that is too small to divide by. */
static float user_alpha(const rec *r, const float *u)
{
    size_t d1 = r->dim + 1, D = r->D;
    double var = 0;

    if (!(r->conf.blend_embeddings > 0) || !r->stats_valid)
        return 0;
    for (size_t a = 0; a < d1; a++) {
        double xa = a < r->dim ? u[a] : 1.0;
        for (size_t b = 0; b < d1; b++) {
            double xb = b < r->dim ? u[b] : 1.0;
            double g = a <= b ? r->gram[a * D + b] : r->gram[b * D + a];
            var += xa * xb * (g - r->mean[a] * r->mean[b]);
        }
    }
    return var > 1e-12 ? (float)(r->conf.blend_embeddings / sqrt(var)) : 0.0f;
}

/* Sums the co-visitation rows of u's latest depth items into (slot, value) pairs sorted by
 * slot; plain: the baseline's table, unscaled. Returns the largest value (0: none). */
static float gather_cands(rec *r, const user *u, bool plain, row *rw)
{
    size_t depth = plain ? BASE_SCORE_FROM : (size_t)r->conf.score_from, nt = 0;
    pd_covisit *table = plain ? r->plain : r->covis;
    float top = 0;

    if (depth > u->n_recent)
        depth = u->n_recent;
    for (size_t k = 0; k < depth; k++) {
        ref j = recent_at(r, u, k);
        const pd_covisit_entry *e;
        float wk;

        if (!ref_live(r, j))
            continue;
        wk = plain ? 1.0f
                   : (float)(pow(1.0 + (double)k, -r->conf.score_decay) /
                             sqrt(r->items[j.slot].visits));
        for (size_t n = pd_covisit_row(table, j.slot, &e), x = 0; x < n; x++) {
            if (e[x].gen != r->gens[e[x].item])
                continue;
            if (r->acc[e[x].item] == 0) {
                if (nt == r->cand_cap)
                    continue; /* cannot happen: depth rows of at most neighbors entries */
                r->touched[nt++] = e[x].item;
            }
            r->acc[e[x].item] += wk * e[x].weight;
        }
    }
    qsort(r->touched, nt, sizeof *r->touched, cmp_u32);
    for (size_t x = 0; x < nt; x++) {
        float v = r->acc[r->touched[x]];
        rw->cands[x] = (cand){r->touched[x], v};
        r->acc[r->touched[x]] = 0;
        top = v > top ? v : top;
    }
    rw->n_cands = nt;
    return top;
}

/* Fills row b of the batch for user u: the dense coefficients and the sparse terms. */
static void prepare_row(rec *r, const user *u, size_t b)
{
    row *rw = &r->rows[b];
    float *x = r->urows + b * r->D, pmax, alpha = user_alpha(r, u->vec);
    float top = gather_cands(r, u, false, rw);

    pd_popularity_relative(r->pop, &pmax);
    for (size_t k = 0; k < r->dim; k++)
        x[k] = alpha * u->vec[k];
    x[r->dim] = alpha;
    x[r->dim + 1] = pmax > 0 ? (float)(r->conf.blend_popularity / pmax) : 0.0f;
    rw->cand_scale = top > 0 ? (float)(r->conf.blend_covis / top) : 0.0f;
    rw->n_seen = r->conf.exclude_seen ? sorted_seen(r, u, rw->seen) : 0;
    rw->next_cand = rw->next_seen = 0;
}

static void adjust(void *ctx, size_t b, size_t first, float *scores, size_t count)
{
    row *rw = &((rec *)ctx)->rows[b];
    size_t end = first + count;

    for (; rw->next_cand < rw->n_cands && rw->cands[rw->next_cand].slot < end; rw->next_cand++)
        scores[rw->cands[rw->next_cand].slot - first] +=
            rw->cand_scale * rw->cands[rw->next_cand].value;
    for (; rw->next_seen < rw->n_seen && rw->seen[rw->next_seen] < end; rw->next_seen++)
        scores[rw->seen[rw->next_seen] - first] = -INFINITY;
}

/* The blend's lists of the users in slots[0..n) into out_items / out_scores / out_counts. */
static int score_batch(rec *r, const uint32_t *slots, size_t n)
{
    stats_update(r);
    for (size_t b = 0; b < n; b++)
        prepare_row(r, &r->users[slots[b]], b);
    return pd_topk_batch(r->topk, r->urows, n, r->V, NULL, r->n_items, r->D, adjust, r,
                         r->out_items, r->out_scores, r->out_counts);
}

/* Where item slot stands in a popularity ranking once u's seen items are left out: 1..k, or
 * 0 when it is not in the first k. */
static uint32_t popular_rank(const rec *r, bool recent, const uint32_t *seen, size_t n_seen,
                             uint32_t slot)
{
    const uint32_t *top;
    size_t n = pd_popularity_top(r->pop, recent, &top);
    uint32_t pos = 0;

    for (size_t i = 0; i < n && pos < r->k; i++) {
        if (in_sorted(seen, n_seen, top[i]))
            continue;
        pos++;
        if (top[i] == slot)
            return pos;
    }
    return 0;
}

/* The plain co-visitation baseline's rank of slot (its scores; ties to the lower slot). */
static uint32_t plain_rank(rec *r, const user *u, const uint32_t *seen, size_t n_seen,
                           uint32_t slot)
{
    row rw = {.cands = r->rows[0].cands};
    float target = 0;
    uint32_t above = 0;

    gather_cands(r, u, true, &rw);
    for (size_t x = 0; x < rw.n_cands; x++)
        if (rw.cands[x].slot == slot)
            target = rw.cands[x].value;
    if (target == 0)
        return 0;
    for (size_t x = 0; x < rw.n_cands; x++) {
        const cand *c = &rw.cands[x];
        if (c->slot != slot && !in_sorted(seen, n_seen, c->slot) &&
            (c->value > target || (c->value == target && c->slot < slot)))
            above++;
    }
    return above < r->k ? above + 1 : 0;
}

/* ------------------------------------------------------------------------------------------ */
/* progressive evaluation */

static void score_add(list_score *s, uint32_t rank)
{
    s->n++;
    if (rank) {
        s->hits++;
        s->rr += 1.0 / rank;
        s->dcg += 1.0 / log2(rank + 1.0);
    }
}

/* The list served now: the arm with the most (decayed) hits; on a tie the popularity lists,
 * which need no evidence, before the blend. */
static int leader(const rec *r)
{
    static const int order[N_ARMS] = {ARM_POPULAR, ARM_RECENT, ARM_BLEND};
    int best = order[0];

    for (int i = 1; i < N_ARMS; i++)
        if (r->arm_hits[order[i]] > r->arm_hits[best])
            best = order[i];
    return best;
}

/* The blend's rank of slot in u's list: scored now (live) or as last refreshed. */
static uint32_t blend_rank(rec *r, uint32_t us, ref target)
{
    const user *u = &r->users[us];

    if (r->live) {
        if (score_batch(r, &us, 1) < 0)
            return 0;
        for (size_t i = 0; i < r->out_counts[0]; i++)
            if (r->out_items[i] == target.slot)
                return (uint32_t)i + 1;
        return 0;
    }
    for (uint32_t i = 0; i < u->n_list; i++)
        if (u->list[i].slot == target.slot && u->list[i].gen == target.gen)
            return i + 1;
    return 0;
}

/* Before an interaction with target is learned: where each list had it. known: whether the
 * item existed before this interaction (a new one was in no list: it is a miss everywhere,
 * though its fresh vector could score it in a list rescored now). */
static void evaluate(rec *r, uint32_t us, ref target, bool known)
{
    const user *u = &r->users[us];
    uint32_t *seen = r->rows[1 % BATCH].seen;
    size_t n_seen = r->conf.exclude_seen ? sorted_seen(r, u, seen) : 0;
    uint32_t rank[N_ARMS];
    pd_list_eval ev = {0};
    double keep = exp2(-1.0 / ARM_HALF_LIFE);
    int lead = leader(r);

    memset(rank, 0, sizeof rank);
    if (known) {
        rank[ARM_BLEND] = blend_rank(r, us, target);
        rank[ARM_POPULAR] = popular_rank(r, false, seen, n_seen, target.slot);
        rank[ARM_RECENT] = popular_rank(r, true, seen, n_seen, target.slot);
    }
    ev.rank = rank[lead];
    score_add(&r->served, ev.rank);
    if (lead == ARM_BLEND)
        r->evaluations_blend++;
    /* The arms are compared on equal terms only: the popularity rankings are judged as they
     * stand, so the blend must be too. Judged as last refreshed, its list is older than the
     * user's latest interaction while the user waits for a refresh (always, in a backlog read
     * faster than limits.refresh), and such an evaluation says nothing about which arm is
     * better: it counts in what was served, not in the choice. */
    if (r->live || !u->queued)
        for (int a = 0; a < N_ARMS; a++)
            r->arm_hits[a] = r->arm_hits[a] * keep + (rank[a] ? 1.0 : 0.0);
    if (r->baselines) {
        ev.n_baselines = N_BASES;
        ev.baseline_rank[BASE_POPULARITY] = rank[ARM_POPULAR];
        ev.baseline_rank[BASE_RECENT_POPULARITY] = rank[ARM_RECENT];
        ev.baseline_rank[BASE_CO_VISITATION] =
            known ? plain_rank(r, u, seen, n_seen, target.slot) : 0;
        for (size_t b = 0; b < N_BASES; b++)
            score_add(&r->base[b], ev.baseline_rank[b]);
    }
    if (r->observer)
        r->observer(r->observer_ctx, &ev);
}

/* ------------------------------------------------------------------------------------------ */
/* learning */

/* Pairs the new item with u's recent ones, latest first: j -> i weighs w / (1 + k)^decay and
 * i -> j reverse times that; the plain baseline counts each pair once both ways. */
static int learn_pairs(rec *r, const user *u, ref i, float w)
{
    size_t depth = u->n_recent < (uint32_t)r->conf.window ? u->n_recent : (size_t)r->conf.window;
    float rev = (float)r->conf.reverse;

    for (size_t k = 0; k < depth; k++) {
        ref j = recent_at(r, u, k);
        float wk = w * (float)pow(1.0 + (double)k, -r->conf.decay);

        if (!ref_live(r, j) || j.slot == i.slot)
            continue;
        if (pd_covisit_add(r->covis, j.slot, i.slot, i.gen, wk, r->gens) < 0 ||
            (rev > 0 && pd_covisit_add(r->covis, i.slot, j.slot, j.gen, rev * wk, r->gens) < 0))
            return -ENOMEM;
        queue_item(r, j.slot);
    }
    if (!r->plain)
        return 0;
    depth = u->n_recent < BASE_WINDOW ? u->n_recent : BASE_WINDOW;
    for (size_t k = 0; k < depth; k++) {
        ref j = recent_at(r, u, k);

        if (!ref_live(r, j) || j.slot == i.slot)
            continue;
        if (pd_covisit_add(r->plain, j.slot, i.slot, i.gen, 1.0f, r->gens) < 0 ||
            pd_covisit_add(r->plain, i.slot, j.slot, j.gen, 1.0f, r->gens) < 0)
            return -ENOMEM;
    }
    return 0;
}

/* BPR steps against negatives drawn from the latest interactions (so in proportion to recent
 * popularity: the items a user was likeliest to have seen and passed over). */
static void learn_embeddings(rec *r, user *u, ref i, float w)
{
    const pd_recommender_conf *c = &r->conf;
    double t = (double)r->interactions;
    float rate = (float)(c->learning_rate * pow(c->initial_t / (c->initial_t + t), c->power_t));
    float *vi = r->V + (size_t)i.slot * r->D;

    if (!(c->blend_embeddings > 0))
        return; /* nothing would read them */
    for (int n = 0; n < c->negatives && r->n_neg; n++) {
        ref j = r->neg[pd_rng_below(&r->rng, (uint32_t)r->n_neg)];
        float *vj = r->V + (size_t)j.slot * r->D;

        if (!ref_live(r, j) || j.slot == i.slot)
            continue;
        pd_bpr_step(u->vec, vi, vi + r->dim, vj, vj + r->dim, r->dim, w, rate, (float)c->l2);
    }
    r->neg[r->head_neg] = i;
    r->head_neg = (r->head_neg + 1) % NEG_RING;
    if (r->n_neg < NEG_RING)
        r->n_neg++;
}

static void learn_popularity(rec *r, uint32_t slot, float w, int64_t ts_ms)
{
    float pmax;
    const float *rel;

    if (pd_popularity_add(r->pop, slot, w, ts_ms) == 1) {
        rel = pd_popularity_relative(r->pop, &pmax);
        for (size_t s = 0; s < r->n_items; s++)
            r->V[s * r->D + r->dim + 1] = rel[s];
    } else {
        rel = pd_popularity_relative(r->pop, &pmax);
        r->V[(size_t)slot * r->D + r->dim + 1] = rel[slot];
    }
    r->items[slot].visits += 1;
    r->popular_dirty = true;
}

static bool rec_interact(void *state, const pd_interaction *in)
{
    rec *r = state;
    int type = in->type;
    float w;
    uint32_t is, us;
    size_t at;
    user *u;

    if (type < 0 || type >= PD_MAX_EVENT_TYPES || !(r->conf.interaction[type] > 0) ||
        in->user_len == 0 || in->item_len == 0 || in->user_len > MAX_ID || in->item_len > MAX_ID)
        return false;
    w = r->conf.interaction[type];
    int added = item_get(r, in->item, in->item_len, &is);
    if (added < 0 || user_get(r, in->user, in->user_len, in->ts_ms, &us) < 0)
        return false; /* out of memory: the interaction is not learned */
    u = &r->users[us];
    ref target = {is, r->gens[is]};
    if ((r->conf.evaluate_on & (UINT32_C(1) << type)) && u->n_recent > 0 && !has_seen(u, target))
        evaluate(r, us, target, added == 0);
    /* A repeat of a recent item teaches no pairs: they were counted when it came first. */
    at = recent_find(r, u, target);
    if (at == u->n_recent && learn_pairs(r, u, target, w) < 0)
        return false;
    learn_embeddings(r, u, target, w);
    learn_popularity(r, is, w, in->ts_ms);
    if (remember(r, u, target, at) < 0)
        return false;
    u->last_ms = in->ts_ms;
    r->interactions++;
    queue_user(r, us);
    queue_item(r, is);
    return true;
}

/* ------------------------------------------------------------------------------------------ */
/* lists out */

/* A popularity ranking's first k items not in seen, with their share of the top item's
 * popularity as scores, into r->names / name_lens / name_scores. */
static size_t popular_list(const rec *r, bool recent, const uint32_t *seen, size_t n_seen)
{
    const uint32_t *top;
    size_t n = pd_popularity_top(r->pop, recent, &top), out = 0;
    float pmax;
    const float *rel = pd_popularity_relative(r->pop, &pmax);
    double tmax = n ? pd_popularity_total(r->pop, top[0]) : 0;

    for (size_t i = 0; i < n && out < r->k; i++) {
        const item *it = &r->items[top[i]];

        if (in_sorted(seen, n_seen, top[i]))
            continue;
        r->names[out] = it->id;
        r->name_lens[out] = it->id_len;
        r->name_scores[out++] = recent ? (pmax > 0 ? rel[top[i]] / pmax : 0)
                                       : (float)(pd_popularity_total(r->pop, top[i]) / tmax);
    }
    return out;
}

/* Row b of the last batch as names. */
static size_t batch_list(const rec *r, size_t b)
{
    size_t n = r->out_counts[b];

    for (size_t i = 0; i < n; i++) {
        const item *it = &r->items[r->out_items[b * r->k + i]];
        r->names[i] = it->id;
        r->name_lens[i] = it->id_len;
        r->name_scores[i] = r->out_scores[b * r->k + i];
    }
    return n;
}

/* The list the user of row b of the last batch is served now (the leading arm's) into
 * r->names... */
static size_t served_list(rec *r, size_t b)
{
    int lead = leader(r);

    if (lead == ARM_BLEND)
        return batch_list(r, b);
    return popular_list(r, lead == ARM_RECENT, r->rows[b].seen, r->rows[b].n_seen);
}

static void store_list(rec *r, user *u, size_t b)
{
    u->n_list = (uint32_t)r->out_counts[b];
    for (uint32_t i = 0; i < u->n_list; i++) {
        uint32_t s = r->out_items[b * r->k + i];
        u->list[i] = (ref){s, r->gens[s]};
    }
}

static int refresh_batch(rec *r, const uint32_t *slots, size_t n, int64_t now_ms,
                         const pd_list_sink *sink)
{
    if (score_batch(r, slots, n) < 0) {
        /* they stay due: back in the queue (there is room, they were just taken from it) */
        for (size_t b = 0; b < n; b++)
            ring_push(&r->uq, &r->uq_head, &r->uq_n, &r->uq_cap,
                      (ref){slots[b], r->users[slots[b]].gen});
        return -EINVAL;
    }
    for (size_t b = 0; b < n; b++) {
        user *u = &r->users[slots[b]];
        size_t m;

        store_list(r, u, b);
        u->listed_ms = now_ms;
        u->queued = false;
        if (!sink || !sink->user_list)
            continue;
        m = served_list(r, b);
        sink->user_list(sink->ctx, u->id, u->id_len, r->names, r->name_lens, r->name_scores, m);
    }
    r->lists_refreshed += n;
    return 0;
}

/* The users waiting, those not refreshed within limits.refresh first, up to budget. */
static size_t refresh_users(rec *r, int64_t now_ms, const pd_list_sink *sink, size_t budget)
{
    uint32_t slots[BATCH];
    size_t nb = 0, done = 0, pending = r->uq_n;

    while (pending-- && done + nb < budget) {
        ref q = ring_pop(r->uq, &r->uq_head, &r->uq_n, r->uq_cap);
        user *u = q.slot < r->n_users ? &r->users[q.slot] : NULL;

        if (!u || !u->id || u->gen != q.gen)
            continue; /* forgotten or evicted since */
        if (u->listed_ms != INT64_MIN && now_ms - u->listed_ms < r->conf.refresh_ms) {
            ring_push(&r->uq, &r->uq_head, &r->uq_n, &r->uq_cap, q); /* room: just popped */
            continue;
        }
        slots[nb++] = q.slot;
        if (nb == BATCH) {
            if (refresh_batch(r, slots, nb, now_ms, sink) < 0)
                return done;
            done += nb;
            nb = 0;
        }
    }
    if (nb && refresh_batch(r, slots, nb, now_ms, sink) == 0)
        done += nb;
    return done;
}

/* An item's k heaviest live co-visited items (ties to the lower slot) into r->names... */
static size_t similar_list(rec *r, uint32_t slot)
{
    const pd_covisit_entry *e;
    size_t n = pd_covisit_row(r->covis, slot, &e), out = 0;
    float top = 0;

    for (size_t x = 0; x < n; x++) {
        size_t pos;
        if (e[x].gen != r->gens[e[x].item] || !r->items[e[x].item].id)
            continue;
        /* insertion into the first k, heaviest first */
        for (pos = out; pos > 0; pos--) {
            uint32_t prev = r->out_items[pos - 1];
            float pw = r->out_scores[pos - 1];
            if (pw > e[x].weight || (pw == e[x].weight && prev < e[x].item))
                break;
            if (pos < r->k) {
                r->out_items[pos] = prev;
                r->out_scores[pos] = pw;
            }
        }
        if (pos < r->k) {
            r->out_items[pos] = e[x].item;
            r->out_scores[pos] = e[x].weight;
            if (out < r->k)
                out++;
        }
    }
    top = out ? r->out_scores[0] : 0;
    for (size_t i = 0; i < out; i++) {
        r->names[i] = r->items[r->out_items[i]].id;
        r->name_lens[i] = r->items[r->out_items[i]].id_len;
        r->name_scores[i] = r->out_scores[i] / top;
    }
    return out;
}

static size_t refresh_similar(rec *r, int64_t now_ms, const pd_list_sink *sink, size_t budget)
{
    size_t done = 0, pending = r->iq_n;

    while (pending-- && done < budget) {
        ref q = ring_pop(r->iq, &r->iq_head, &r->iq_n, r->iq_cap);
        item *it;

        if (!ref_live(r, q))
            continue;
        it = &r->items[q.slot];
        if (it->sim_ms != INT64_MIN && now_ms - it->sim_ms < r->conf.similar_refresh_ms) {
            ring_push(&r->iq, &r->iq_head, &r->iq_n, &r->iq_cap, q);
            continue;
        }
        it->sim_queued = false;
        it->sim_ms = now_ms;
        size_t m = similar_list(r, q.slot);
        if (m)
            sink->similar(sink->ctx, it->id, it->id_len, r->names, r->name_lens, r->name_scores, m);
        r->similar_refreshed++;
        done++;
    }
    return done;
}

static size_t rec_refresh(void *state, int64_t now_ms, const pd_list_sink *sink, size_t budget)
{
    rec *r = state;
    size_t done = refresh_users(r, now_ms, sink, budget);

    if (!sink)
        return done;
    if (sink->popular && r->popular_dirty &&
        (r->popular_ms == INT64_MIN || now_ms - r->popular_ms >= r->conf.refresh_ms)) {
        bool recent = r->arm_hits[ARM_RECENT] > r->arm_hits[ARM_POPULAR];
        size_t m = popular_list(r, recent, NULL, 0);

        sink->popular(sink->ctx, r->names, r->name_lens, r->name_scores, m);
        r->popular_ms = now_ms;
        r->popular_dirty = false;
    }
    if (sink->similar)
        refresh_similar(r, now_ms, sink, budget);
    return done;
}

static size_t rec_user_list(void *state, const char *id, size_t len, const char **items,
                            size_t *item_lens, float *scores, size_t max)
{
    rec *r = state;
    uint64_t h = id_hash(id, len);
    size_t i = user_find(r, h, id, len), n;
    uint32_t us;

    if (!r->user_map.slots[i].value)
        return 0;
    us = (uint32_t)(r->user_map.slots[i].value - 1);
    if (score_batch(r, &us, 1) < 0)
        return 0;
    n = served_list(r, 0);
    n = n < max ? n : max;
    for (size_t x = 0; x < n; x++) {
        items[x] = r->names[x];
        item_lens[x] = r->name_lens[x];
        scores[x] = r->name_scores[x];
    }
    return n;
}

static void rec_forget(void *state, const char *id, size_t len)
{
    rec *r = state;
    uint64_t h = id_hash(id, len);
    size_t i = user_find(r, h, id, len);

    if (r->user_map.slots[i].value)
        user_release(r, (uint32_t)(r->user_map.slots[i].value - 1));
}

static void rec_set_evaluation(void *state, bool live, bool baselines, pd_list_eval_fn observer,
                               void *ctx)
{
    rec *r = state;

    r->live = live;
    r->queues = !live; /* live lists are scored at each evaluation: nothing waits */
    r->observer = observer;
    r->observer_ctx = ctx;
    if (baselines && !r->plain) {
        r->plain = pd_covisit_new((uint32_t)r->conf.neighbors);
        if (r->plain && pd_covisit_reserve(r->plain, r->cap_items) < 0) {
            pd_covisit_free(r->plain);
            r->plain = NULL;
        }
    }
    r->baselines = baselines && r->plain;
}

/* ------------------------------------------------------------------------------------------ */
/* figures */

static double ratio(double a, double b)
{
    return b > 0 ? a / b : NAN;
}

static size_t put_scores(pd_model_metric *out, size_t n, size_t max, const char *const names[3],
                         const char *const helps[3], const list_score *s, bool on)
{
    double v[3] = {ratio(s->hits, s->n), ratio(s->rr, s->n), ratio(s->dcg, s->n)};

    for (size_t i = 0; i < 3 && n < max; i++)
        out[n++] = (pd_model_metric){names[i], helps[i], on ? v[i] : NAN};
    return n;
}

static size_t rec_metrics(const void *state, bool full, pd_model_metric *out, size_t max)
{
    static const char *const served_names[3] = {"hr_at_k", "mrr_at_k", "ndcg_at_k"};
    static const char *const served_helps[3] = {
        "share of evaluated interactions whose item was in the list served (hit rate at k)",
        "mean reciprocal rank of the item in the list served (0 when not in it)",
        "mean normalised discounted cumulative gain at k of the list served"};
    static const char *const base_metric[N_BASES][3] = {
        {"baseline_popularity_hr_at_k", "baseline_popularity_mrr_at_k",
         "baseline_popularity_ndcg_at_k"},
        {"baseline_recent_popularity_hr_at_k", "baseline_recent_popularity_mrr_at_k",
         "baseline_recent_popularity_ndcg_at_k"},
        {"baseline_co_visitation_hr_at_k", "baseline_co_visitation_mrr_at_k",
         "baseline_co_visitation_ndcg_at_k"}};
    static const char *const base_help[3] = {"hit rate at k of a baseline (replay)",
                                             "MRR at k of a baseline (replay)",
                                             "NDCG at k of a baseline (replay)"};
    const rec *r = state;
    size_t n = 0;

    (void)full;
    pd_model_metric head[] = {
        {"k", "list length", (double)r->k},
        {"evaluated", "interactions judged before they were learned", r->served.n},
    };
    for (size_t i = 0; i < 2 && n < max; i++)
        out[n++] = head[i];
    n = put_scores(out, n, max, served_names, served_helps, &r->served, true);
    for (size_t b = 0; b < N_BASES; b++)
        n = put_scores(out, n, max, base_metric[b], base_help, &r->base[b], r->baselines);
    pd_model_metric tail[] = {
        {"blend_share", "share of evaluations at which the blend, not popularity, was served",
         ratio((double)r->evaluations_blend, r->served.n)},
        {"users", "users held", (double)r->live_users},
        {"items", "items held", (double)r->n_items},
        {"interactions", "interactions learned", (double)r->interactions},
        {"users_evicted", "users dropped by limits.users (least recently seen)",
         (double)r->users_evicted},
        {"items_evicted", "items dropped by limits.items (least recently seen)",
         (double)r->items_evicted},
        {"lists_refreshed", "user lists rescored", (double)r->lists_refreshed},
    };
    for (size_t i = 0; i < sizeof tail / sizeof *tail && n < max; i++)
        out[n++] = tail[i];
    return n;
}

static size_t rec_memory(const void *state)
{
    const rec *r = state;
    size_t m = sizeof *r + r->cap_items * (sizeof(item) + sizeof(uint32_t) + r->D * sizeof(float) +
                                           sizeof(float));

    m += pd_hashtab_memory(&r->item_map) + pd_hashtab_memory(&r->user_map);
    m += pd_covisit_memory(r->covis) + (r->plain ? pd_covisit_memory(r->plain) : 0);
    m += pd_popularity_memory(r->pop);
    m += r->cap_users * (sizeof(user) + sizeof(uint32_t));
    for (size_t s = 0; s < r->n_users; s++)
        if (r->users[s].id)
            m += r->users[s].id_len + 1 + r->dim * sizeof(float) +
                 (r->ring_len + r->k + r->users[s].cap_seen) * sizeof(ref);
    for (size_t s = 0; s < r->n_items; s++)
        m += r->items[s].id ? r->items[s].id_len + 1 : 0;
    return m + (r->uq_cap + r->iq_cap) * sizeof(ref);
}

/* At most, for `check` and reports: a user's vector, rings, list, seen items, its share of
 * the id table (two slots of 16 bytes at the table's load) and a 16-byte id. */
size_t pd_recommender_bytes_per_user(const pd_recommender_conf *c)
{
    size_t ring = (size_t)(c->window > BASE_WINDOW ? c->window : BASE_WINDOW);

    return sizeof(user) + sizeof(uint32_t) + (size_t)c->dim * sizeof(float) +
           (ring + (size_t)c->k + (size_t)c->max_seen) * sizeof(ref) + 2 * sizeof(pd_hslot) +
           16 + sizeof(ref);
}

/* An item's row of the scoring matrix, its co-visitation neighbours, popularity counts and
 * rankings' positions, id table share and a 16-byte id. */
size_t pd_recommender_bytes_per_item(const pd_recommender_conf *c)
{
    return sizeof(item) + 2 * sizeof(uint32_t) + ((size_t)c->dim + 2) * sizeof(float) +
           sizeof(float) + (size_t)c->neighbors * sizeof(pd_covisit_entry) +
           2 * sizeof(double) + sizeof(float) + 2 * sizeof(int32_t) + 2 * sizeof(pd_hslot) + 16;
}

/* ------------------------------------------------------------------------------------------ */
/* snapshot section
 *
 *   u32 version; u32 dim, k, ring_len, max_seen, neighbors (must match the model's)
 *   u64 x 4 generator; u64 interactions, evaluations served by the blend, users evicted,
 *   items evicted, lists refreshed, similar lists refreshed; f64 x 4 served and each
 *   baseline's sums; f64 x 3 arms' hits; bool + u64 + f32 D*D + f64 D embedding statistics
 *   u32 items; per slot: u32 generation, str id, f32 visits, i64 similar list time, f32 x D
 *     row, co-visitation row; u32 x items LRU order; the popularity counts
 *   u32 + u32 + refs: the negatives' ring
 *   u32 user slots, u32 x slots generations, u32 live users; per live user, least recently
 *     seen first: u32 slot, str id, i64 last, i64 listed, bool queued, f32 x dim vector,
 *     u32 n + u32 head + refs recent, u32 n + u32 head + refs seen, u32 n + refs list
 *   u32 + refs users to refresh; u32 + refs items to refresh; i64 popular time, bool dirty
 * The baseline's plain co-visitation table is not saved (replay's alone; it restarts). */

static void put_refs(pd_bin_writer *w, const ref *x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        pd_bin_put_u32(w, x[i].slot);
        pd_bin_put_u32(w, x[i].gen);
    }
}

static void get_refs(pd_bin_reader *rd, ref *x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        x[i].slot = pd_bin_get_u32(rd);
        x[i].gen = pd_bin_get_u32(rd);
    }
}

static void put_ring(pd_bin_writer *w, const ref *q, size_t head, size_t n, size_t cap)
{
    pd_bin_put_u32(w, (uint32_t)n);
    for (size_t i = 0; i < n; i++)
        put_refs(w, &q[(head + i) % cap], 1);
}

static void save_head(const rec *r, pd_bin_writer *w)
{
    const list_score *scores[1 + N_BASES] = {&r->served, &r->base[0], &r->base[1], &r->base[2]};

    pd_bin_put_version(w, REC_SECTION_VERSION);
    pd_bin_put_u32(w, (uint32_t)r->dim);
    pd_bin_put_u32(w, (uint32_t)r->k);
    pd_bin_put_u32(w, (uint32_t)r->ring_len);
    pd_bin_put_u32(w, (uint32_t)r->conf.max_seen);
    pd_bin_put_u32(w, (uint32_t)r->conf.neighbors);
    pd_bin_put_u64_array(w, r->rng.s, 4);
    uint64_t counts[] = {r->interactions, r->evaluations_blend, r->users_evicted,
                         r->items_evicted, r->lists_refreshed, r->similar_refreshed};
    pd_bin_put_u64_array(w, counts, sizeof counts / sizeof *counts);
    for (size_t i = 0; i < 1 + N_BASES; i++) {
        pd_bin_put_f64(w, scores[i]->n);
        pd_bin_put_f64(w, scores[i]->hits);
        pd_bin_put_f64(w, scores[i]->rr);
        pd_bin_put_f64(w, scores[i]->dcg);
    }
    for (int a = 0; a < N_ARMS; a++)
        pd_bin_put_f64(w, r->arm_hits[a]);
    pd_bin_put_bool(w, r->stats_valid);
    pd_bin_put_u64(w, r->stats_at);
    pd_bin_put_f32_array(w, r->gram, r->D * r->D);
    for (size_t c = 0; c < r->D; c++)
        pd_bin_put_f64(w, r->mean[c]);
}

static void save_items(const rec *r, pd_bin_writer *w)
{
    pd_bin_put_u32(w, (uint32_t)r->n_items);
    for (size_t s = 0; s < r->n_items; s++) {
        const item *it = &r->items[s];
        pd_bin_put_u32(w, r->gens[s]);
        pd_bin_put_str(w, it->id, it->id_len);
        pd_bin_put_f32(w, it->visits);
        pd_bin_put_i64(w, it->sim_ms);
        pd_bin_put_f32_array(w, r->V + s * r->D, r->D);
        pd_covisit_save_row(r->covis, (uint32_t)s, w);
    }
    for (uint32_t s = r->item_head; s != NONE; s = r->items[s].next)
        pd_bin_put_u32(w, s);
    pd_popularity_save(r->pop, r->n_items, w);
    pd_bin_put_u32(w, (uint32_t)r->n_neg);
    pd_bin_put_u32(w, (uint32_t)r->head_neg);
    put_refs(w, r->neg, r->n_neg);
}

static void save_user(const rec *r, uint32_t s, pd_bin_writer *w)
{
    const user *u = &r->users[s];

    pd_bin_put_u32(w, s);
    pd_bin_put_str(w, u->id, u->id_len);
    pd_bin_put_i64(w, u->last_ms);
    pd_bin_put_i64(w, u->listed_ms);
    pd_bin_put_bool(w, u->queued);
    pd_bin_put_f32_array(w, u->vec, r->dim);
    pd_bin_put_u32(w, u->n_recent);
    pd_bin_put_u32(w, u->head_recent);
    put_refs(w, u->recent, r->ring_len);
    pd_bin_put_u32(w, u->n_seen);
    pd_bin_put_u32(w, u->head_seen);
    put_refs(w, u->seen, u->n_seen);
    pd_bin_put_u32(w, u->n_list);
    put_refs(w, u->list, u->n_list);
}

static int rec_save(const void *state, pd_bin_writer *w)
{
    const rec *r = state;

    save_head(r, w);
    save_items(r, w);
    pd_bin_put_u32(w, (uint32_t)r->n_users);
    for (size_t s = 0; s < r->n_users; s++)
        pd_bin_put_u32(w, r->users[s].gen);
    pd_bin_put_u32(w, (uint32_t)r->live_users);
    for (uint32_t s = r->user_head; s != NONE; s = r->users[s].next)
        save_user(r, s, w);
    put_ring(w, r->uq, r->uq_head, r->uq_n, r->uq_cap);
    put_ring(w, r->iq, r->iq_head, r->iq_n, r->iq_cap);
    pd_bin_put_i64(w, r->popular_ms);
    pd_bin_put_bool(w, r->popular_dirty);
    return w->err;
}

static int load_head(rec *r, pd_bin_reader *rd)
{
    list_score *scores[1 + N_BASES] = {&r->served, &r->base[0], &r->base[1], &r->base[2]};
    uint32_t dim, k, ring, seen, neighbors;
    uint64_t counts[6];

    pd_bin_get_version(rd, "recommender", REC_SECTION_VERSION);
    dim = pd_bin_get_u32(rd);
    k = pd_bin_get_u32(rd);
    ring = pd_bin_get_u32(rd);
    seen = pd_bin_get_u32(rd);
    neighbors = pd_bin_get_u32(rd);
    if (!rd->err && (dim != r->dim || k != r->k || ring != r->ring_len ||
                     seen != (uint32_t)r->conf.max_seen ||
                     neighbors != (uint32_t)r->conf.neighbors))
        pd_bin_fail(rd, "saved with dim %u, k %u, window %u, seen %u, neighbors %u", dim, k,
                    ring, seen, neighbors);
    pd_bin_get_u64_array(rd, r->rng.s, 4);
    pd_bin_get_u64_array(rd, counts, 6);
    r->interactions = counts[0];
    r->evaluations_blend = counts[1];
    r->users_evicted = counts[2];
    r->items_evicted = counts[3];
    r->lists_refreshed = counts[4];
    r->similar_refreshed = counts[5];
    for (size_t i = 0; i < 1 + N_BASES; i++) {
        scores[i]->n = pd_bin_get_f64(rd);
        scores[i]->hits = pd_bin_get_f64(rd);
        scores[i]->rr = pd_bin_get_f64(rd);
        scores[i]->dcg = pd_bin_get_f64(rd);
    }
    for (int a = 0; a < N_ARMS; a++)
        r->arm_hits[a] = pd_bin_get_f64(rd);
    r->stats_valid = pd_bin_get_bool(rd);
    r->stats_at = pd_bin_get_u64(rd);
    pd_bin_get_f32_array(rd, r->gram, r->D * r->D);
    for (size_t c = 0; c < r->D; c++)
        r->mean[c] = pd_bin_get_f64(rd);
    return rd->err;
}

static int load_item(rec *r, uint32_t s, pd_bin_reader *rd)
{
    item *it = &r->items[s];
    size_t len;
    char *id;

    r->gens[s] = pd_bin_get_u32(rd);
    id = pd_bin_get_strdup(rd, MAX_ID, &len);
    *it = (item){.id = id, .id_len = (uint32_t)len, .prev = NONE, .next = NONE};
    it->visits = pd_bin_get_f32(rd);
    it->sim_ms = pd_bin_get_i64(rd);
    pd_bin_get_f32_array(rd, r->V + (size_t)s * r->D, r->D);
    if (rd->err || !id)
        return rd->err ? rd->err : -EINVAL;
    pd_covisit_load_row(r->covis, s, r->n_items, rd);
    it->hash = id_hash(id, len);
    if (pd_hashtab_reserve(&r->item_map) < 0)
        return -ENOMEM;
    if (r->item_map.slots[item_find(r, it->hash, id, len)].value)
        pd_bin_fail(rd, "item \"%s\" saved twice", id);
    else
        pd_hashtab_insert(&r->item_map, it->hash, s + 1);
    return rd->err;
}

/* Every slot once, in LRU order. */
static int load_item_order(rec *r, pd_bin_reader *rd)
{
    uint8_t *linked = calloc(r->n_items ? r->n_items : 1, 1);

    if (!linked)
        return -ENOMEM;
    for (size_t i = 0; i < r->n_items && !rd->err; i++) {
        uint32_t s = pd_bin_get_u32(rd);
        if (rd->err)
            break;
        if (s >= r->n_items || linked[s]) {
            pd_bin_fail(rd, "item order names slot %u twice or out of range", s);
            break;
        }
        linked[s] = 1;
        LRU_APPEND(r->items, r->item_head, r->item_tail, s);
    }
    free(linked);
    return rd->err;
}

static int load_items(rec *r, pd_bin_reader *rd)
{
    uint32_t n = pd_bin_get_u32(rd);

    if (!rd->err && n > (uint64_t)r->conf.max_items)
        pd_bin_fail(rd, "%u items saved, more than limits.items (%" PRId64 "): raise the limit, or "
                        "move the snapshot away to start afresh",
                    n, r->conf.max_items);
    while (!rd->err && r->cap_items < n)
        if (items_grow(r) < 0)
            return -ENOMEM;
    r->n_items = rd->err ? 0 : n;
    for (uint32_t s = 0; s < r->n_items && !rd->err; s++)
        if (load_item(r, s, rd) == -ENOMEM)
            return -ENOMEM;
    if (rd->err || load_item_order(r, rd) < 0 || pd_popularity_load(r->pop, r->n_items, rd) < 0)
        return rd->err ? rd->err : -ENOMEM;
    r->n_neg = pd_bin_get_u32(rd);
    r->head_neg = pd_bin_get_u32(rd);
    if (!rd->err && (r->n_neg > NEG_RING || r->head_neg >= NEG_RING))
        pd_bin_fail(rd, "negatives ring of %zu from %zu", r->n_neg, r->head_neg);
    if (!rd->err)
        get_refs(rd, r->neg, r->n_neg);
    return rd->err;
}

static int load_user_rings(rec *r, user *u, pd_bin_reader *rd)
{
    u->n_recent = pd_bin_get_u32(rd);
    u->head_recent = pd_bin_get_u32(rd);
    get_refs(rd, u->recent, r->ring_len);
    u->n_seen = pd_bin_get_u32(rd);
    u->head_seen = pd_bin_get_u32(rd);
    if (rd->err || u->n_recent > r->ring_len || u->head_recent >= r->ring_len ||
        u->n_seen > (uint32_t)r->conf.max_seen || (u->n_seen && u->head_seen >= u->n_seen)) {
        pd_bin_fail(rd, "user \"%s\": rings of %u and %u items", u->id, u->n_recent, u->n_seen);
        return rd->err;
    }
    if (u->n_seen && !(u->seen = malloc(u->n_seen * sizeof *u->seen)))
        return -ENOMEM;
    u->cap_seen = u->n_seen;
    get_refs(rd, u->seen, u->n_seen);
    u->n_list = pd_bin_get_u32(rd);
    if (!rd->err && u->n_list > r->k)
        pd_bin_fail(rd, "user \"%s\": a list of %u items, k is %zu", u->id, u->n_list, r->k);
    if (!rd->err)
        get_refs(rd, u->list, u->n_list);
    return rd->err;
}

static int load_user(rec *r, pd_bin_reader *rd)
{
    uint32_t s = pd_bin_get_u32(rd);
    size_t len;
    user *u;

    if (!rd->err && (s >= r->n_users || r->users[s].id))
        pd_bin_fail(rd, "user slot %u twice or out of range", s);
    if (rd->err)
        return rd->err;
    u = &r->users[s];
    u->id = pd_bin_get_strdup(rd, MAX_ID, &len);
    if (!u->id)
        return rd->err ? rd->err : -ENOMEM;
    u->id_len = (uint32_t)len;
    u->hash = id_hash(u->id, len);
    u->last_ms = pd_bin_get_i64(rd);
    u->listed_ms = pd_bin_get_i64(rd);
    u->queued = pd_bin_get_bool(rd);
    if (!(u->vec = malloc(r->dim * sizeof(float) + (r->ring_len + r->k) * sizeof(ref))))
        return -ENOMEM;
    u->recent = (ref *)(u->vec + r->dim);
    u->list = u->recent + r->ring_len;
    pd_bin_get_f32_array(rd, u->vec, r->dim);
    if (load_user_rings(r, u, rd) != 0)
        return rd->err ? rd->err : -ENOMEM;
    if (pd_hashtab_reserve(&r->user_map) < 0)
        return -ENOMEM;
    if (r->user_map.slots[user_find(r, u->hash, u->id, len)].value)
        pd_bin_fail(rd, "user \"%s\" saved twice", u->id);
    else
        pd_hashtab_insert(&r->user_map, u->hash, s + 1);
    LRU_APPEND(r->users, r->user_head, r->user_tail, s);
    r->live_users++;
    return rd->err;
}

static int load_users(rec *r, pd_bin_reader *rd)
{
    uint32_t n = pd_bin_get_u32(rd), live;

    if (rd->err)
        return rd->err;
    if (n && (!(r->users = calloc(n, sizeof *r->users)) ||
              !(r->free_users = malloc(n * sizeof *r->free_users))))
        return -ENOMEM;
    r->n_users = r->cap_users = n;
    for (uint32_t s = 0; s < n; s++) {
        r->users[s].gen = pd_bin_get_u32(rd);
        r->users[s].prev = r->users[s].next = NONE;
    }
    live = pd_bin_get_u32(rd);
    if (!rd->err && (live > n || live > (uint64_t)r->conf.max_users))
        pd_bin_fail(rd, "%u users saved, more than limits.users (%" PRId64 ") or their slots: raise "
                        "the limit, or move the snapshot away to start afresh",
                    live, r->conf.max_users);
    for (uint32_t i = 0; i < live && !rd->err; i++)
        if (load_user(r, rd) == -ENOMEM)
            return -ENOMEM;
    for (uint32_t s = n; s-- > 0 && !rd->err;)
        if (!r->users[s].id)
            r->free_users[r->n_free++] = s;
    return rd->err;
}

static int load_ring(pd_bin_reader *rd, ref **q, size_t *head, size_t *n, size_t *cap)
{
    uint32_t count = pd_bin_get_u32(rd);

    for (uint32_t i = 0; i < count && !rd->err; i++) {
        ref x;
        get_refs(rd, &x, 1);
        if (!rd->err && ring_push(q, head, n, cap, x) < 0)
            return -ENOMEM;
    }
    return rd->err;
}

static int rec_load(void *state, pd_bin_reader *rd, char *errbuf, size_t errlen)
{
    rec *r = state;
    int ret;

    if ((ret = load_head(r, rd)) != 0 || (ret = load_items(r, rd)) != 0 ||
        (ret = load_users(r, rd)) != 0 ||
        (ret = load_ring(rd, &r->uq, &r->uq_head, &r->uq_n, &r->uq_cap)) != 0 ||
        (ret = load_ring(rd, &r->iq, &r->iq_head, &r->iq_n, &r->iq_cap)) != 0)
        goto out_fail;
    r->popular_ms = pd_bin_get_i64(rd);
    r->popular_dirty = pd_bin_get_bool(rd);
    if (rd->err) {
        ret = rd->err;
        goto out_fail;
    }
    for (size_t i = 0; i < r->iq_n; i++) {
        ref q = r->iq[(r->iq_head + i) % r->iq_cap];
        if (ref_live(r, q))
            r->items[q.slot].sim_queued = true;
    }
    return 0;

out_fail:
    pd_set_error(errbuf, errlen, "%s",
                 ret == -ENOMEM ? "out of memory" : (rd->why[0] ? rd->why : "truncated"));
    return ret < 0 ? ret : -EINVAL;
}

const pd_model_ops pd_recommender_ops = {
    .kind = "recommender",
    .create = rec_create,
    .destroy = rec_destroy,
    .fingerprint = rec_fingerprint,
    .reconfigure = rec_reconfigure,
    .output = rec_output,
    .predict = rec_predict,
    .prefetch = NULL,
    .learn = rec_learn,
    .publishing = rec_publishing,
    .metrics = rec_metrics,
    .memory = rec_memory,
    .save = rec_save,
    .load = rec_load,
    .interact = rec_interact,
    .refresh = rec_refresh,
    .user_list = rec_user_list,
    .forget = rec_forget,
    .set_evaluation = rec_set_evaluation,
    /* no delta_* ops: lists are not exchanged between instances (model sync); each
     * instance's lists come from the users of its own partitions */
};

/* Two rankings of at most 2 * list_len slots each, with every slot's position in them, so an
 * interaction moves its item up by swaps and a ranking is rebuilt from the counts only when
 * evictions have thinned it below list_len while items outside it remain. */
#include "models/popularity.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* rel[] stays below 2^REL_RANGE times its reference: floats keep the top items exact and let
 * items 2^-126 below the top round to 0, which no ranking of them can see. */
#define REL_RANGE 32.0

typedef struct ranking {
    uint32_t *slots; /* best first */
    size_t n, cap;
    int32_t *pos;       /* per slot: its index in slots, or -1 */
    const double *by;   /* the counts it ranks by */
    bool complete;      /* every item with a count is in slots */
} ranking;

struct pd_popularity {
    double inv_half_life; /* per ms */
    bool have_t0;
    int64_t t0_ms; /* event time the keys count from, so they stay small */
    double *key;   /* log2 of the decayed sum; -INFINITY: no item */
    double *total;
    float *rel;
    double ref; /* rel[s] = 2^(key[s] - ref) */
    size_t n_slots, list_len;
    ranking recent, all;
};

static void ranking_release(ranking *r)
{
    free(r->slots);
    free(r->pos);
}

static int ranking_init(ranking *r, size_t cap, const double *by)
{
    *r = (ranking){.cap = cap, .by = by, .complete = true};
    r->slots = malloc(cap * sizeof *r->slots);
    return r->slots ? 0 : -ENOMEM;
}

pd_popularity *pd_popularity_new(int64_t half_life_ms, size_t list_len)
{
    pd_popularity *p;

    if (half_life_ms <= 0 || list_len == 0)
        return NULL;
    p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->inv_half_life = 1.0 / (double)half_life_ms;
    p->list_len = list_len;
    if (ranking_init(&p->recent, 2 * list_len, NULL) < 0 ||
        ranking_init(&p->all, 2 * list_len, NULL) < 0) {
        pd_popularity_free(p);
        return NULL;
    }
    return p;
}

void pd_popularity_free(pd_popularity *p)
{
    if (!p)
        return;
    ranking_release(&p->recent);
    ranking_release(&p->all);
    free(p->key);
    free(p->total);
    free(p->rel);
    free(p);
}

#define GROW(ptr, n)                                                                          \
    do {                                                                                      \
        void *grown_ = realloc((ptr), (n) * sizeof *(ptr));                                   \
        if (!grown_)                                                                          \
            return -ENOMEM;                                                                   \
        (ptr) = grown_;                                                                       \
    } while (0)

int pd_popularity_reserve(pd_popularity *p, size_t n_slots)
{
    if (n_slots <= p->n_slots)
        return 0;
    GROW(p->key, n_slots);
    GROW(p->total, n_slots);
    GROW(p->rel, n_slots);
    GROW(p->recent.pos, n_slots);
    GROW(p->all.pos, n_slots);
    for (size_t s = p->n_slots; s < n_slots; s++) {
        p->key[s] = -INFINITY;
        p->total[s] = 0;
        p->rel[s] = 0;
        p->recent.pos[s] = p->all.pos[s] = -1;
    }
    p->n_slots = n_slots;
    p->recent.by = p->key; /* the arrays may have moved */
    p->all.by = p->total;
    return 0;
}

static bool before(const ranking *r, uint32_t a, uint32_t b)
{
    return r->by[a] > r->by[b] || (r->by[a] == r->by[b] && a < b);
}

static void bubble_up(ranking *r, size_t i)
{
    uint32_t s = r->slots[i];

    while (i > 0 && before(r, s, r->slots[i - 1])) {
        r->slots[i] = r->slots[i - 1];
        r->pos[r->slots[i]] = (int32_t)i;
        i--;
    }
    r->slots[i] = s;
    r->pos[s] = (int32_t)i;
}

/* slot's count rose (or it is new): it moves up, enters, or stays out. */
static void ranking_update(ranking *r, uint32_t slot)
{
    if (r->pos[slot] >= 0) {
        bubble_up(r, (size_t)r->pos[slot]);
        return;
    }
    if (r->n == r->cap) {
        if (!before(r, slot, r->slots[r->n - 1])) {
            r->complete = false;
            return;
        }
        r->pos[r->slots[--r->n]] = -1;
        r->complete = false;
    }
    r->slots[r->n] = slot;
    bubble_up(r, r->n++);
}

static void ranking_rebuild(ranking *r, const double *total, size_t n_slots)
{
    for (size_t i = 0; i < r->n; i++)
        r->pos[r->slots[i]] = -1;
    r->n = 0;
    r->complete = true;
    for (size_t s = 0; s < n_slots; s++)
        if (total[s] > 0)
            ranking_update(r, (uint32_t)s);
}

static void ranking_remove(ranking *r, uint32_t slot, size_t list_len, const double *total,
                           size_t n_slots)
{
    int32_t i = r->pos[slot];

    if (i < 0)
        return;
    memmove(r->slots + i, r->slots + i + 1, (r->n - (size_t)i - 1) * sizeof *r->slots);
    r->n--;
    for (size_t k = (size_t)i; k < r->n; k++)
        r->pos[r->slots[k]] = (int32_t)k;
    r->pos[slot] = -1;
    if (r->n < list_len && !r->complete)
        ranking_rebuild(r, total, n_slots);
}

static void rescale(pd_popularity *p, double ref)
{
    p->ref = ref;
    for (size_t s = 0; s < p->n_slots; s++)
        p->rel[s] = p->total[s] > 0 ? (float)exp2(p->key[s] - ref) : 0.0f;
}

int pd_popularity_add(pd_popularity *p, uint32_t slot, double weight, int64_t ts_ms)
{
    double x, k;

    if (!p->have_t0) {
        p->have_t0 = true;
        p->t0_ms = ts_ms;
    }
    x = log2(weight) + (double)(ts_ms - p->t0_ms) * p->inv_half_life;
    k = p->key[slot];
    /* log2(2^k + 2^x) without overflow */
    p->key[slot] = k == -INFINITY ? x : fmax(k, x) + log2(1.0 + exp2(-fabs(k - x)));
    p->total[slot] += weight;
    ranking_update(&p->recent, slot);
    ranking_update(&p->all, slot);
    if (p->key[slot] > p->ref + REL_RANGE) {
        rescale(p, p->key[slot]);
        return 1;
    }
    p->rel[slot] = (float)exp2(p->key[slot] - p->ref);
    return 0;
}

void pd_popularity_remove(pd_popularity *p, uint32_t slot)
{
    p->key[slot] = -INFINITY;
    p->total[slot] = 0;
    p->rel[slot] = 0;
    ranking_remove(&p->recent, slot, p->list_len, p->total, p->n_slots);
    ranking_remove(&p->all, slot, p->list_len, p->total, p->n_slots);
}

size_t pd_popularity_top(const pd_popularity *p, bool recent, const uint32_t **ret_slots)
{
    const ranking *r = recent ? &p->recent : &p->all;

    *ret_slots = r->slots;
    return r->n < p->list_len ? r->n : p->list_len;
}

const float *pd_popularity_relative(const pd_popularity *p, float *ret_max)
{
    *ret_max = p->recent.n ? p->rel[p->recent.slots[0]] : 0.0f;
    return p->rel;
}

double pd_popularity_total(const pd_popularity *p, uint32_t slot)
{
    return p->total[slot];
}

size_t pd_popularity_memory(const pd_popularity *p)
{
    return sizeof *p + p->n_slots * (2 * sizeof(double) + sizeof(float) + 2 * sizeof(int32_t)) +
           2 * p->recent.cap * sizeof(uint32_t);
}

void pd_popularity_save(const pd_popularity *p, size_t n_slots, pd_bin_writer *w)
{
    pd_bin_put_bool(w, p->have_t0);
    pd_bin_put_i64(w, p->t0_ms);
    pd_bin_put_f64(w, p->ref);
    for (size_t s = 0; s < n_slots; s++) {
        pd_bin_put_f64(w, p->key[s]);
        pd_bin_put_f64(w, p->total[s]);
    }
}

int pd_popularity_load(pd_popularity *p, size_t n_slots, pd_bin_reader *r)
{
    if (pd_popularity_reserve(p, n_slots) < 0)
        return -ENOMEM;
    p->have_t0 = pd_bin_get_bool(r);
    p->t0_ms = pd_bin_get_i64(r);
    p->ref = pd_bin_get_f64(r);
    for (size_t s = 0; s < n_slots && !r->err; s++) {
        p->key[s] = pd_bin_get_f64(r);
        p->total[s] = pd_bin_get_f64(r);
        if (!(p->total[s] >= 0) || (p->total[s] > 0) == (p->key[s] == -INFINITY))
            pd_bin_fail(r, "popularity of item slot %zu: total %g, key %g", s, p->total[s],
                        p->key[s]);
    }
    if (r->err)
        return r->err;
    rescale(p, p->ref);
    ranking_rebuild(&p->recent, p->total, n_slots);
    ranking_rebuild(&p->all, p->total, n_slots);
    return 0;
}

/* Per-user state store: the common hash table (common/hashtab.h) over pd_user pointers, keyed
 * by the id's 64-bit hash and confirmed on the id, and an intrusive LRU list. */
#include "pipeline/user_state.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "common/hashtab.h"

#define SKETCH_WORDS (PD_SKETCH_BITS / 64)

struct pd_user_state {
    pd_user_layout layout;
    pd_hashtab table; /* user id hash -> pd_user * */
    size_t count;
    pd_user *lru_first, *lru_last;
    size_t body_bytes;
    size_t user_bytes; /* records, ids and bodies of every user: kept as they change, since
                        * metrics ask often and a walk over ten million users would stall */
};

static size_t user_size(const pd_user_state *st, size_t id_len)
{
    return sizeof(pd_user) + ((id_len + 1 + 7) & ~(size_t)7) + st->body_bytes;
}

uint64_t pd_user_hash(const char *id, size_t len)
{
    return XXH3_64bits(id, len);
}

static size_t body_size(const pd_user_layout *l)
{
    return l->n_types * sizeof(int64_t) + l->n_acc * sizeof(pd_acc) +
           l->n_sketch * SKETCH_WORDS * sizeof(uint64_t) + l->ring_items * sizeof(uint32_t);
}

size_t pd_user_state_bytes_per_user(const pd_user_layout *layout)
{
    /* record + body + a table slot at the table's worst load factor (1/2) */
    return sizeof(pd_user) + body_size(layout) + 2 * sizeof(pd_hslot);
}

static int layout_copy(pd_user_layout *dst, const pd_user_layout *src)
{
    memset(dst, 0, sizeof *dst);
    dst->n_types = src->n_types;
    dst->ring_items = src->ring_items;
    dst->label_types = src->label_types;
    if (src->n_acc) {
        dst->acc = malloc(src->n_acc * sizeof *dst->acc);
        if (!dst->acc)
            return -ENOMEM;
        memcpy(dst->acc, src->acc, src->n_acc * sizeof *dst->acc);
        dst->n_acc = src->n_acc;
    }
    if (src->n_sketch) {
        dst->sketch_type = malloc(src->n_sketch * sizeof *dst->sketch_type);
        if (!dst->sketch_type) {
            free(dst->acc);
            return -ENOMEM;
        }
        memcpy(dst->sketch_type, src->sketch_type, src->n_sketch * sizeof *dst->sketch_type);
        dst->n_sketch = src->n_sketch;
    }
    return 0;
}

static void layout_release(pd_user_layout *l)
{
    free(l->acc);
    free(l->sketch_type);
    memset(l, 0, sizeof *l);
}

pd_user_state *pd_user_state_new(const pd_user_layout *layout, char *errbuf, size_t errlen)
{
    pd_user_state *st = calloc(1, sizeof *st);
    if (!st)
        goto out_nomem;
    if (layout_copy(&st->layout, layout) < 0)
        goto out_free_st;
    if (pd_hashtab_init(&st->table, 1024) < 0)
        goto out_free_layout;
    st->body_bytes = body_size(layout);
    return st;

out_free_layout:
    layout_release(&st->layout);
out_free_st:
    free(st);
out_nomem:
    snprintf(errbuf, errlen, "out of memory for user state");
    return NULL;
}

static void user_free(pd_user *u)
{
    if (!u)
        return;
    if (!u->body_inline)
        free(u->last_ts_by_type); /* the body: one block, last_ts_by_type first */
    free(u);                      /* the id (and at first the body) live in the record's block */
}

void pd_user_state_free(pd_user_state *st)
{
    if (!st)
        return;
    pd_user *u = st->lru_first;
    while (u) {
        pd_user *next = u->lru_next;
        user_free(u);
        u = next;
    }
    pd_hashtab_release(&st->table);
    layout_release(&st->layout);
    free(st);
}

const pd_user_layout *pd_user_state_layout(const pd_user_state *st)
{
    return &st->layout;
}

/* Points the record's arrays into body, laid out for l. */
static void body_attach(pd_user *u, void *body, const pd_user_layout *l)
{
    char *p = body;
    u->last_ts_by_type = (int64_t *)(void *)p;
    p += l->n_types * sizeof(int64_t);
    u->acc = (pd_acc *)(void *)p;
    p += l->n_acc * sizeof(pd_acc);
    u->sketch = (uint64_t *)(void *)p;
    p += l->n_sketch * SKETCH_WORDS * sizeof(uint64_t);
    u->ring = (uint32_t *)(void *)p;
}

static void body_init(pd_user *u, const pd_user_layout *l)
{
    for (size_t i = 0; i < l->n_types; i++)
        u->last_ts_by_type[i] = INT64_MIN;
    for (size_t i = 0; i < l->n_acc; i++) {
        u->acc[i].value = 0;
        u->acc[i].ts_ms = INT64_MIN;
    }
    memset(u->sketch, 0, l->n_sketch * SKETCH_WORDS * sizeof(uint64_t));
    u->ring_head = 0;
    u->ring_len = 0;
}

static pd_user *slot_user(const pd_user_state *st, size_t i)
{
    return (pd_user *)(uintptr_t)st->table.slots[i].value;
}

/* The slot holding the user of this id and hash, or the empty slot ending its chain. */
static size_t find_slot(const pd_user_state *st, const char *id, size_t len, uint64_t h)
{
    const pd_hashtab *t = &st->table;
    size_t i = pd_hashtab_first(t, h);
    for (; t->slots[i].value; i = pd_hashtab_next(t, i)) {
        const pd_user *u = slot_user(st, i);
        if (t->slots[i].hash == h && u->id_len == len && memcmp(u->id, id, len) == 0)
            break;
    }
    return i;
}

pd_user *pd_user_state_find(pd_user_state *st, const char *id, size_t len)
{
    return slot_user(st, find_slot(st, id, len, pd_user_hash(id, len)));
}

static void lru_unlink(pd_user_state *st, pd_user *u)
{
    if (u->lru_prev)
        u->lru_prev->lru_next = u->lru_next;
    else
        st->lru_first = u->lru_next;
    if (u->lru_next)
        u->lru_next->lru_prev = u->lru_prev;
    else
        st->lru_last = u->lru_prev;
    u->lru_prev = u->lru_next = NULL;
}

static void lru_push_front(pd_user_state *st, pd_user *u)
{
    u->lru_prev = NULL;
    u->lru_next = st->lru_first;
    if (st->lru_first)
        st->lru_first->lru_prev = u;
    st->lru_first = u;
    if (!st->lru_last)
        st->lru_last = u;
}

pd_user *pd_user_state_get(pd_user_state *st, const char *id, size_t len, int64_t ts_ms,
                           bool *ret_created)
{
    uint64_t h = pd_user_hash(id, len);
    pd_user *found = slot_user(st, find_slot(st, id, len, h));
    if (found) {
        if (ts_ms > found->seen_ts_ms)
            found->seen_ts_ms = ts_ms;
        if (st->lru_first != found) {
            lru_unlink(st, found);
            lru_push_front(st, found);
        }
        if (ret_created)
            *ret_created = false;
        return found;
    }
    if (pd_hashtab_reserve(&st->table) < 0)
        return NULL;
    /* id and arrays share the record's block: one allocation, and an event touches one
     * region of memory per user instead of three */
    size_t id_room = (len + 1 + 7) & ~(size_t)7;
    pd_user *u = calloc(1, sizeof *u + id_room + st->body_bytes);
    if (!u)
        return NULL;
    void *body = (char *)(u + 1) + id_room;
    u->body_inline = true;
    u->id = (char *)(u + 1);
    memcpy(u->id, id, len);
    u->id[len] = '\0';
    u->id_len = (uint32_t)len;
    u->hash = h;
    u->first_ts_ms = ts_ms;
    u->last_ts_ms = INT64_MIN;
    u->seen_ts_ms = ts_ms;
    u->shard = PD_SHARD_NONE;
    body_attach(u, body, &st->layout);
    body_init(u, &st->layout);
    pd_hashtab_insert(&st->table, h, (uint64_t)(uintptr_t)u);
    st->count++;
    u->bytes = (uint32_t)user_size(st, len);
    st->user_bytes += u->bytes;
    lru_push_front(st, u);
    if (ret_created)
        *ret_created = true;
    return u;
}

static void acc_add(pd_acc *a, const pd_acc_def *def, int64_t ts_ms, double x)
{
    if (a->ts_ms == INT64_MIN) {
        a->value = x;
        a->ts_ms = ts_ms;
        return;
    }
    if (def->half_life_ms <= 0) {
        a->value += x;
        if (ts_ms > a->ts_ms)
            a->ts_ms = ts_ms;
        return;
    }
    /* Late events add what they would have decayed to by now, so the order of arrival does
     * not change the result. */
    if (ts_ms >= a->ts_ms) {
        a->value = a->value * exp2(-(double)(ts_ms - a->ts_ms) / (double)def->half_life_ms) + x;
        a->ts_ms = ts_ms;
    } else {
        a->value += x * exp2(-(double)(a->ts_ms - ts_ms) / (double)def->half_life_ms);
    }
}

void pd_user_state_apply(pd_user_state *st, pd_user *u, int type, int64_t ts_ms, uint32_t item_hash,
                         bool has_item, double value, bool has_value)
{
    const pd_user_layout *l = &st->layout;
    u->events++;
    if (ts_ms > u->last_ts_ms)
        u->last_ts_ms = ts_ms;
    if (ts_ms < u->first_ts_ms)
        u->first_ts_ms = ts_ms;
    if (type >= 0 && (size_t)type < l->n_types && ts_ms > u->last_ts_by_type[type])
        u->last_ts_by_type[type] = ts_ms;
    for (size_t i = 0; i < l->n_acc; i++) {
        const pd_acc_def *def = &l->acc[i];
        if (def->event_type >= 0 && def->event_type != type)
            continue;
        if (def->sum_value) {
            if (has_value)
                acc_add(&u->acc[i], def, ts_ms, value);
        } else {
            acc_add(&u->acc[i], def, ts_ms, 1.0);
        }
    }
    if (has_item) {
        for (size_t i = 0; i < l->n_sketch; i++) {
            if (l->sketch_type[i] >= 0 && l->sketch_type[i] != type)
                continue;
            unsigned bit = item_hash % PD_SKETCH_BITS;
            u->sketch[i * SKETCH_WORDS + bit / 64] |= UINT64_C(1) << (bit % 64);
        }
        if (l->ring_items) {
            u->ring[u->ring_head] = item_hash;
            u->ring_head = (uint32_t)((u->ring_head + 1) % l->ring_items);
            if (u->ring_len < l->ring_items)
                u->ring_len++;
        }
    }
    if (type >= 0 && type < 32 && (l->label_types & (UINT32_C(1) << type))) {
        pd_label_event *e = &u->labels[u->labels_head];
        e->ts_ms = ts_ms;
        e->item_hash = has_item ? item_hash : 0;
        e->type = type;
        u->labels_head = (u->labels_head + 1) % PD_LABEL_RING;
        if (u->labels_len < PD_LABEL_RING)
            u->labels_len++;
    }
}

double pd_user_acc_value(const pd_user_state *st, const pd_user *u, size_t i, int64_t ts_ms)
{
    const pd_acc *a = &u->acc[i];
    const pd_acc_def *def = &st->layout.acc[i];
    if (a->ts_ms == INT64_MIN)
        return 0.0;
    if (def->half_life_ms <= 0 || ts_ms <= a->ts_ms)
        return a->value;
    return a->value * exp2(-(double)(ts_ms - a->ts_ms) / (double)def->half_life_ms);
}

double pd_user_sketch_estimate(const pd_user *u, size_t i)
{
    unsigned set = 0;
    for (size_t w = 0; w < SKETCH_WORDS; w++)
        set += (unsigned)__builtin_popcountll(u->sketch[i * SKETCH_WORDS + w]);
    unsigned zero = PD_SKETCH_BITS - set;
    if (zero == 0)
        zero = 1; /* saturated: report the largest estimate the bitmap can give */
    /* linear counting (Whang et al. 1990): n = -m ln(V) with V the fraction of zero bits */
    return -(double)PD_SKETCH_BITS * log((double)zero / PD_SKETCH_BITS);
}

void pd_user_state_remove(pd_user_state *st, pd_user *u)
{
    size_t i = pd_hashtab_slot_of(&st->table, u->hash, (uint64_t)(uintptr_t)u);
    assert(slot_user(st, i) == u && u->pending.first == NULL); /* pending released first */
    pd_hashtab_remove_at(&st->table, i);
    st->count--;
    st->user_bytes -= u->bytes;
    lru_unlink(st, u);
    user_free(u);
}

pd_user *pd_user_state_oldest(pd_user_state *st)
{
    return st->lru_last;
}

size_t pd_user_state_count(const pd_user_state *st)
{
    return st->count;
}

size_t pd_user_state_memory(const pd_user_state *st)
{
    return sizeof *st + pd_hashtab_memory(&st->table) + st->user_bytes;
}

int pd_user_state_each(pd_user_state *st, pd_user_visit_fn fn, void *ctx)
{
    pd_user *u = st->lru_last;
    while (u) {
        pd_user *prev = u->lru_prev; /* fn may remove u */
        int r = fn(ctx, u);
        if (r)
            return r;
        u = prev;
    }
    return 0;
}

static int acc_find(const pd_user_layout *l, const pd_acc_def *def)
{
    for (size_t i = 0; i < l->n_acc; i++)
        if (l->acc[i].event_type == def->event_type &&
            l->acc[i].half_life_ms == def->half_life_ms && l->acc[i].sum_value == def->sum_value)
            return (int)i;
    return -1;
}

static int sketch_find(const pd_user_layout *l, int type)
{
    for (size_t i = 0; i < l->n_sketch; i++)
        if (l->sketch_type[i] == type)
            return (int)i;
    return -1;
}

int pd_user_state_relayout(pd_user_state *st, const pd_user_layout *layout, char *errbuf,
                           size_t errlen)
{
    pd_user_layout nl;
    if (layout_copy(&nl, layout) < 0)
        goto out_nomem;
    size_t nbytes = body_size(&nl);
    /* allocate every new body first, so a failure leaves the store as it was */
    void **bodies = calloc(st->count ? st->count : 1, sizeof *bodies);
    if (!bodies)
        goto out_release_layout;
    size_t k = 0;
    for (pd_user *u = st->lru_first; u; u = u->lru_next, k++) {
        bodies[k] = malloc(nbytes ? nbytes : 1);
        if (!bodies[k])
            goto out_free_bodies;
    }
    const pd_user_layout *ol = &st->layout;
    k = 0;
    for (pd_user *u = st->lru_first; u; u = u->lru_next, k++) {
        pd_user old = *u;
        void *old_body = u->last_ts_by_type;
        body_attach(u, bodies[k], &nl);
        body_init(u, &nl);
        for (size_t i = 0; i < nl.n_types && i < ol->n_types; i++)
            u->last_ts_by_type[i] = old.last_ts_by_type[i];
        for (size_t i = 0; i < nl.n_acc; i++) {
            int j = acc_find(ol, &nl.acc[i]);
            if (j >= 0)
                u->acc[i] = old.acc[j];
        }
        for (size_t i = 0; i < nl.n_sketch; i++) {
            int j = sketch_find(ol, nl.sketch_type[i]);
            if (j >= 0)
                memcpy(u->sketch + i * SKETCH_WORDS, old.sketch + (size_t)j * SKETCH_WORDS,
                       SKETCH_WORDS * sizeof(uint64_t));
        }
        /* keep the newest items, oldest first so the ring order survives */
        uint32_t keep = old.ring_len < nl.ring_items ? old.ring_len : (uint32_t)nl.ring_items;
        for (uint32_t n = keep; n > 0; n--) {
            uint32_t idx = (uint32_t)((old.ring_head + ol->ring_items - n) % ol->ring_items);
            u->ring[u->ring_head] = old.ring[idx];
            u->ring_head = (uint32_t)((u->ring_head + 1) % nl.ring_items);
            u->ring_len++;
        }
        if (!old.body_inline) {
            free(old_body);
            u->bytes -= (uint32_t)st->body_bytes;
        }
        u->body_inline = false;
        u->bytes += (uint32_t)nbytes;
        st->user_bytes += nbytes - (old.body_inline ? 0 : st->body_bytes);
    }
    free(bodies);
    layout_release(&st->layout);
    st->layout = nl;
    st->body_bytes = nbytes;
    return 0;

out_free_bodies:
    for (size_t i = 0; i < st->count; i++)
        free(bodies[i]);
    free(bodies);
out_release_layout:
    layout_release(&nl);
out_nomem:
    snprintf(errbuf, errlen, "out of memory changing the user state layout");
    return -ENOMEM;
}

/* ---- snapshots ---- */

/* The users section, version 2 (little-endian, field by field):
 *   u32 version; u64 users; layout: u32 types, u32 accumulators (each i32 type, i64 half-life,
 *   bool sum), u32 sketches (each i32 type), u32 ring items;
 *   per user, least recently seen first (loading in this order recreates the LRU list):
 *   str id, u64 events, i64 first, last, seen, u32 shard (from version 2); i64 last per
 *   type; per accumulator f64 value,
 *   i64 its time; sketches as u64 words; u32 ring head, u32 ring length, u32 ring items;
 *   label ring: PD_LABEL_RING x (i64 ts, u32 item, i32 type), u32 head, u32 length. */
#define USERS_VERSION 2
#define MAX_LAYOUT    4096

static void put_layout(pd_bin_writer *w, const pd_user_layout *l)
{
    pd_bin_put_u32(w, (uint32_t)l->n_types);
    pd_bin_put_u32(w, (uint32_t)l->n_acc);
    for (size_t i = 0; i < l->n_acc; i++) {
        pd_bin_put_i32(w, l->acc[i].event_type);
        pd_bin_put_i64(w, l->acc[i].half_life_ms);
        pd_bin_put_bool(w, l->acc[i].sum_value);
    }
    pd_bin_put_u32(w, (uint32_t)l->n_sketch);
    for (size_t i = 0; i < l->n_sketch; i++)
        pd_bin_put_i32(w, l->sketch_type[i]);
    pd_bin_put_u32(w, (uint32_t)l->ring_items);
}

/* Reads a saved layout into *l (arrays allocated; layout_release frees them). */
static void get_layout(pd_bin_reader *r, pd_user_layout *l)
{
    memset(l, 0, sizeof *l);
    l->n_types = pd_bin_get_u32(r);
    l->n_acc = pd_bin_get_u32(r);
    if (!r->err && (l->n_types > PD_MAX_EVENT_TYPES || l->n_acc > MAX_LAYOUT))
        pd_bin_fail(r, "user state layout of %zu types, %zu accumulators", l->n_types, l->n_acc);
    if (r->err)
        return;
    if (!(l->acc = calloc(l->n_acc ? l->n_acc : 1, sizeof *l->acc))) {
        pd_bin_fail(r, "out of memory");
        return;
    }
    for (size_t i = 0; i < l->n_acc && !r->err; i++) {
        l->acc[i].event_type = pd_bin_get_i32(r);
        l->acc[i].half_life_ms = pd_bin_get_i64(r);
        l->acc[i].sum_value = pd_bin_get_bool(r);
    }
    l->n_sketch = pd_bin_get_u32(r);
    if (!r->err && l->n_sketch > MAX_LAYOUT)
        pd_bin_fail(r, "user state layout of %zu sketches", l->n_sketch);
    if (r->err)
        return;
    if (!(l->sketch_type = calloc(l->n_sketch ? l->n_sketch : 1, sizeof *l->sketch_type))) {
        pd_bin_fail(r, "out of memory");
        return;
    }
    for (size_t i = 0; i < l->n_sketch; i++)
        l->sketch_type[i] = pd_bin_get_i32(r);
    l->ring_items = pd_bin_get_u32(r);
    if (!r->err && l->ring_items > MAX_LAYOUT)
        pd_bin_fail(r, "user state layout of %zu ring items", l->ring_items);
}

static void put_user(pd_bin_writer *w, const pd_user_layout *l, const pd_user *u)
{
    pd_bin_put_str(w, u->id, u->id_len);
    pd_bin_put_u64(w, u->events);
    pd_bin_put_i64(w, u->first_ts_ms);
    pd_bin_put_i64(w, u->last_ts_ms);
    pd_bin_put_i64(w, u->seen_ts_ms);
    pd_bin_put_u32(w, u->shard);
    for (size_t i = 0; i < l->n_types; i++)
        pd_bin_put_i64(w, u->last_ts_by_type[i]);
    for (size_t i = 0; i < l->n_acc; i++) {
        pd_bin_put_f64(w, u->acc[i].value);
        pd_bin_put_i64(w, u->acc[i].ts_ms);
    }
    pd_bin_put_u64_array(w, u->sketch, l->n_sketch * SKETCH_WORDS);
    pd_bin_put_u32(w, u->ring_head);
    pd_bin_put_u32(w, u->ring_len);
    pd_bin_put_u32_array(w, u->ring, l->ring_items);
    for (size_t i = 0; i < PD_LABEL_RING; i++) {
        pd_bin_put_i64(w, u->labels[i].ts_ms);
        pd_bin_put_u32(w, u->labels[i].item_hash);
        pd_bin_put_i32(w, u->labels[i].type);
    }
    pd_bin_put_u32(w, u->labels_head);
    pd_bin_put_u32(w, u->labels_len);
}

int pd_user_state_save_some(const pd_user_state *st, pd_user_filter_fn keep, void *ctx,
                            pd_bin_writer *w, uint64_t *ret_n)
{
    const pd_user_layout *l = &st->layout;
    uint64_t n = 0;
    for (const pd_user *u = st->lru_last; u; u = u->lru_prev)
        n += !keep || keep(ctx, u);
    if (ret_n)
        *ret_n = n;
    pd_bin_put_version(w, USERS_VERSION);
    pd_bin_put_u64(w, n);
    put_layout(w, l);
    for (const pd_user *u = st->lru_last; u && !w->err; u = u->lru_prev)
        if (!keep || keep(ctx, u))
            put_user(w, l, u);
    return w->err;
}

int pd_user_state_save(const pd_user_state *st, pd_bin_writer *w)
{
    return pd_user_state_save_some(st, NULL, NULL, w, NULL);
}

/* Reads one user in the saved layout into old (its body at tmp); the id goes to id. */
static void get_user(pd_bin_reader *r, uint32_t version, const pd_user_layout *saved,
                     pd_user *old, void *tmp, char *id, size_t id_cap)
{
    memset(old, 0, sizeof *old);
    old->id_len = (uint32_t)pd_bin_get_str(r, id, id_cap);
    body_attach(old, tmp, saved);
    old->events = pd_bin_get_u64(r);
    old->first_ts_ms = pd_bin_get_i64(r);
    old->last_ts_ms = pd_bin_get_i64(r);
    old->seen_ts_ms = pd_bin_get_i64(r);
    old->shard = version >= 2 ? pd_bin_get_u32(r) : PD_SHARD_NONE;
    for (size_t i = 0; i < saved->n_types; i++)
        old->last_ts_by_type[i] = pd_bin_get_i64(r);
    for (size_t i = 0; i < saved->n_acc; i++) {
        old->acc[i].value = pd_bin_get_f64(r);
        old->acc[i].ts_ms = pd_bin_get_i64(r);
    }
    pd_bin_get_u64_array(r, old->sketch, saved->n_sketch * SKETCH_WORDS);
    old->ring_head = pd_bin_get_u32(r);
    old->ring_len = pd_bin_get_u32(r);
    pd_bin_get_u32_array(r, old->ring, saved->ring_items);
    for (size_t i = 0; i < PD_LABEL_RING; i++) {
        old->labels[i].ts_ms = pd_bin_get_i64(r);
        old->labels[i].item_hash = pd_bin_get_u32(r);
        old->labels[i].type = pd_bin_get_i32(r);
    }
    old->labels_head = pd_bin_get_u32(r);
    old->labels_len = pd_bin_get_u32(r);
    size_t ring = saved->ring_items;
    if (!r->err && (old->id_len == 0 || old->ring_head >= (ring ? ring : 1) ||
                    old->ring_len > ring || old->labels_head >= PD_LABEL_RING ||
                    old->labels_len > PD_LABEL_RING))
        pd_bin_fail(r, "a user record is inconsistent");
}

/* Maps a user read in the saved layout onto the store's own layout. */
static void adopt_user(const pd_user_layout *l, const pd_user_layout *saved, pd_user *u,
                       const pd_user *old)
{
    u->events = old->events;
    u->first_ts_ms = old->first_ts_ms;
    u->last_ts_ms = old->last_ts_ms;
    u->seen_ts_ms = old->seen_ts_ms;
    u->shard = old->shard;
    for (size_t i = 0; i < l->n_types && i < saved->n_types; i++)
        u->last_ts_by_type[i] = old->last_ts_by_type[i];
    for (size_t i = 0; i < l->n_acc; i++) {
        int j = acc_find(saved, &l->acc[i]);
        if (j >= 0)
            u->acc[i] = old->acc[j];
    }
    for (size_t i = 0; i < l->n_sketch; i++) {
        int j = sketch_find(saved, l->sketch_type[i]);
        if (j >= 0)
            memcpy(u->sketch + i * SKETCH_WORDS, old->sketch + (size_t)j * SKETCH_WORDS,
                   SKETCH_WORDS * sizeof(uint64_t));
    }
    size_t ring = saved->ring_items;
    uint32_t keep = old->ring_len < l->ring_items ? old->ring_len : (uint32_t)l->ring_items;
    u->ring_head = u->ring_len = 0;
    for (uint32_t k = keep; k > 0; k--) {
        uint32_t idx = (uint32_t)((old->ring_head + ring - k) % ring);
        u->ring[u->ring_head] = old->ring[idx];
        u->ring_head = (uint32_t)((u->ring_head + 1) % l->ring_items);
        u->ring_len++;
    }
    memcpy(u->labels, old->labels, sizeof u->labels);
    u->labels_head = old->labels_head;
    u->labels_len = old->labels_len;
}

int pd_user_state_load(pd_user_state *st, pd_bin_reader *r, char *errbuf, size_t errlen)
{
    pd_user_layout saved;
    void *tmp = NULL;
    char *id = NULL;
    int ret = -EINVAL;
    uint32_t version = pd_bin_get_version(r, "users", USERS_VERSION);
    uint64_t count = pd_bin_get_u64(r);
    get_layout(r, &saved);
    if (r->err)
        goto out_release;
    size_t saved_bytes = body_size(&saved);
    tmp = malloc(saved_bytes ? saved_bytes : 1);
    id = malloc(65536 + 1);
    if (!tmp || !id) {
        ret = -ENOMEM;
        snprintf(errbuf, errlen, "out of memory loading user state");
        goto out_free;
    }
    for (uint64_t n = 0; n < count; n++) {
        pd_user old;
        get_user(r, version, &saved, &old, tmp, id, 65536 + 1);
        if (r->err)
            goto out_release;
        pd_user *u = pd_user_state_get(st, id, old.id_len, old.seen_ts_ms, NULL);
        if (!u) {
            ret = -ENOMEM;
            snprintf(errbuf, errlen, "out of memory loading user state");
            goto out_free;
        }
        adopt_user(&st->layout, &saved, u, &old);
    }
    ret = 0;
    goto out_free;

out_release:
    snprintf(errbuf, errlen, "user state section: %s", r->why[0] ? r->why : "truncated");
out_free:
    free(tmp);
    free(id);
    layout_release(&saved);
    return ret;
}

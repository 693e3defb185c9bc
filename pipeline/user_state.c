/* Per-user state store: open addressing with linear probing (backward-shift deletion, so no
 * tombstones build up) over pd_user pointers, and an intrusive LRU list. */
#include "pipeline/user_state.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#define SKETCH_WORDS (PD_SKETCH_BITS / 64)

/* A table slot keeps the hash beside the pointer, so probing compares hashes without touching
 * (and cache-missing on) the users it passes. */
typedef struct slot {
    uint64_t hash;
    pd_user *u; /* NULL = empty */
} slot;

struct pd_user_state {
    pd_user_layout layout;
    slot *slots;
    size_t cap; /* power of two */
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
    return sizeof(pd_user) + body_size(layout) + 2 * sizeof(slot);
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
    st->cap = 1024;
    st->slots = calloc(st->cap, sizeof *st->slots);
    if (!st->slots)
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
    free(st->slots);
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

static size_t slot_of(const pd_user_state *st, uint64_t hash)
{
    return (size_t)hash & (st->cap - 1);
}

pd_user *pd_user_state_find(pd_user_state *st, const char *id, size_t len)
{
    uint64_t h = pd_user_hash(id, len);
    for (size_t i = slot_of(st, h);; i = (i + 1) & (st->cap - 1)) {
        const slot *sl = &st->slots[i];
        if (!sl->u)
            return NULL;
        if (sl->hash == h && sl->u->id_len == len && memcmp(sl->u->id, id, len) == 0)
            return sl->u;
    }
}

static int table_grow(pd_user_state *st)
{
    size_t ncap = st->cap * 2;
    slot *ns = calloc(ncap, sizeof *ns);
    if (!ns)
        return -ENOMEM;
    for (size_t i = 0; i < st->cap; i++) {
        if (!st->slots[i].u)
            continue;
        size_t j = (size_t)st->slots[i].hash & (ncap - 1);
        while (ns[j].u)
            j = (j + 1) & (ncap - 1);
        ns[j] = st->slots[i];
    }
    free(st->slots);
    st->slots = ns;
    st->cap = ncap;
    return 0;
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
    size_t i;
    for (i = slot_of(st, h); st->slots[i].u; i = (i + 1) & (st->cap - 1)) {
        pd_user *u = st->slots[i].u;
        if (st->slots[i].hash == h && u->id_len == len && memcmp(u->id, id, len) == 0) {
            if (ts_ms > u->seen_ts_ms)
                u->seen_ts_ms = ts_ms;
            if (st->lru_first != u) {
                lru_unlink(st, u);
                lru_push_front(st, u);
            }
            if (ret_created)
                *ret_created = false;
            return u;
        }
    }
    if ((st->count + 1) * 2 > st->cap) {
        if (table_grow(st) < 0)
            return NULL;
        for (i = slot_of(st, h); st->slots[i].u; i = (i + 1) & (st->cap - 1))
            ;
    }
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
    body_attach(u, body, &st->layout);
    body_init(u, &st->layout);
    st->slots[i] = (slot){.hash = h, .u = u};
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
    size_t i = slot_of(st, u->hash);
    while (st->slots[i].u != u)
        i = (i + 1) & (st->cap - 1);
    /* backward-shift deletion keeps every probe chain unbroken */
    size_t j = i;
    for (;;) {
        j = (j + 1) & (st->cap - 1);
        if (!st->slots[j].u)
            break;
        size_t home = slot_of(st, st->slots[j].hash);
        bool between = (i <= j) ? (home > i && home <= j) : (home > i || home <= j);
        if (between)
            continue;
        st->slots[i] = st->slots[j];
        i = j;
    }
    st->slots[i] = (slot){0};
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
    return sizeof *st + st->cap * sizeof(slot) + st->user_bytes;
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

#define USER_MAGIC UINT32_C(0x50445553) /* "PDUS" */

static int put(FILE *out, const void *p, size_t n)
{
    if (n == 0)
        return 0; /* p may be NULL for an empty array */
    return fwrite(p, 1, n, out) == n ? 0 : -EIO;
}

static int get(FILE *in, void *p, size_t n)
{
    if (n == 0)
        return 0;
    return fread(p, 1, n, in) == n ? 0 : -EIO;
}

/* Field by field, so struct padding never reaches the file. */
static int put_acc_defs(FILE *out, const pd_acc_def *defs, size_t n)
{
    int r = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t type = defs[i].event_type;
        uint8_t sum = defs[i].sum_value;
        r |= put(out, &type, sizeof type);
        r |= put(out, &defs[i].half_life_ms, sizeof defs[i].half_life_ms);
        r |= put(out, &sum, sizeof sum);
    }
    return r;
}

static int get_acc_defs(FILE *in, pd_acc_def *defs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int32_t type;
        uint8_t sum;
        if (get(in, &type, sizeof type) || get(in, &defs[i].half_life_ms, sizeof(int64_t)) ||
            get(in, &sum, sizeof sum))
            return -EIO;
        defs[i].event_type = type;
        defs[i].sum_value = sum != 0;
    }
    return 0;
}

int pd_user_state_save(const pd_user_state *st, FILE *out)
{
    const pd_user_layout *l = &st->layout;
    uint32_t magic = USER_MAGIC;
    uint64_t count = st->count, n_types = l->n_types, n_acc = l->n_acc, n_sketch = l->n_sketch,
             ring = l->ring_items;
    int r = 0;
    r |= put(out, &magic, sizeof magic);
    r |= put(out, &count, sizeof count);
    r |= put(out, &n_types, sizeof n_types);
    r |= put(out, &n_acc, sizeof n_acc);
    r |= put_acc_defs(out, l->acc, n_acc);
    r |= put(out, &n_sketch, sizeof n_sketch);
    r |= put(out, l->sketch_type, n_sketch * sizeof *l->sketch_type);
    r |= put(out, &ring, sizeof ring);
    /* least recently seen first: loading in this order recreates the LRU list */
    for (const pd_user *u = st->lru_last; u && !r; u = u->lru_prev) {
        r |= put(out, &u->id_len, sizeof u->id_len);
        r |= put(out, u->id, u->id_len);
        r |= put(out, &u->events, sizeof u->events);
        r |= put(out, &u->first_ts_ms, sizeof u->first_ts_ms);
        r |= put(out, &u->last_ts_ms, sizeof u->last_ts_ms);
        r |= put(out, &u->seen_ts_ms, sizeof u->seen_ts_ms);
        r |= put(out, u->last_ts_by_type, n_types * sizeof(int64_t));
        r |= put(out, u->acc, n_acc * sizeof(pd_acc));
        r |= put(out, u->sketch, n_sketch * SKETCH_WORDS * sizeof(uint64_t));
        r |= put(out, &u->ring_head, sizeof u->ring_head);
        r |= put(out, &u->ring_len, sizeof u->ring_len);
        r |= put(out, u->ring, ring * sizeof(uint32_t));
        r |= put(out, u->labels, sizeof u->labels);
        r |= put(out, &u->labels_head, sizeof u->labels_head);
        r |= put(out, &u->labels_len, sizeof u->labels_len);
    }
    return r ? -EIO : 0;
}

int pd_user_state_load(pd_user_state *st, FILE *in, char *errbuf, size_t errlen)
{
    uint32_t magic;
    uint64_t count, n_types, n_acc, n_sketch, ring;
    pd_user_layout saved;
    memset(&saved, 0, sizeof saved);
    int r = -EIO;
    if (get(in, &magic, sizeof magic) || magic != USER_MAGIC || get(in, &count, sizeof count) ||
        get(in, &n_types, sizeof n_types) || get(in, &n_acc, sizeof n_acc) || n_acc > 4096 ||
        n_types > PD_MAX_EVENT_TYPES) {
        snprintf(errbuf, errlen, "user state section is malformed");
        return -EINVAL;
    }
    saved.n_types = n_types;
    saved.n_acc = n_acc;
    saved.acc = calloc(n_acc ? n_acc : 1, sizeof *saved.acc);
    if (!saved.acc || get_acc_defs(in, saved.acc, n_acc) || get(in, &n_sketch, sizeof n_sketch) ||
        n_sketch > 4096)
        goto out_malformed;
    saved.n_sketch = n_sketch;
    saved.sketch_type = calloc(n_sketch ? n_sketch : 1, sizeof *saved.sketch_type);
    if (!saved.sketch_type || get(in, saved.sketch_type, n_sketch * sizeof *saved.sketch_type) ||
        get(in, &ring, sizeof ring) || ring > 4096)
        goto out_malformed;
    saved.ring_items = ring;

    /* Read each user in the saved layout, then map it onto the store's own layout. */
    size_t saved_bytes = body_size(&saved);
    void *tmp = malloc(saved_bytes ? saved_bytes : 1);
    char *id = malloc(65536 + 1);
    if (!tmp || !id) {
        free(tmp);
        free(id);
        r = -ENOMEM;
        snprintf(errbuf, errlen, "out of memory loading user state");
        goto out_release;
    }
    const pd_user_layout *l = &st->layout;
    for (uint64_t n = 0; n < count; n++) {
        pd_user old;
        memset(&old, 0, sizeof old);
        if (get(in, &old.id_len, sizeof old.id_len) || old.id_len > 65536 ||
            get(in, id, old.id_len))
            goto out_malformed_tmp;
        body_attach(&old, tmp, &saved);
        if (get(in, &old.events, sizeof old.events) ||
            get(in, &old.first_ts_ms, sizeof old.first_ts_ms) ||
            get(in, &old.last_ts_ms, sizeof old.last_ts_ms) ||
            get(in, &old.seen_ts_ms, sizeof old.seen_ts_ms) ||
            get(in, old.last_ts_by_type, n_types * sizeof(int64_t)) ||
            get(in, old.acc, n_acc * sizeof(pd_acc)) ||
            get(in, old.sketch, n_sketch * SKETCH_WORDS * sizeof(uint64_t)) ||
            get(in, &old.ring_head, sizeof old.ring_head) ||
            get(in, &old.ring_len, sizeof old.ring_len) ||
            get(in, old.ring, ring * sizeof(uint32_t)) || get(in, old.labels, sizeof old.labels) ||
            get(in, &old.labels_head, sizeof old.labels_head) ||
            get(in, &old.labels_len, sizeof old.labels_len))
            goto out_malformed_tmp;
        if (old.ring_head >= (ring ? ring : 1) || old.ring_len > ring ||
            old.labels_head >= PD_LABEL_RING || old.labels_len > PD_LABEL_RING)
            goto out_malformed_tmp;
        pd_user *u = pd_user_state_get(st, id, old.id_len, old.seen_ts_ms, NULL);
        if (!u) {
            r = -ENOMEM;
            snprintf(errbuf, errlen, "out of memory loading user state");
            goto out_free_tmp;
        }
        u->events = old.events;
        u->first_ts_ms = old.first_ts_ms;
        u->last_ts_ms = old.last_ts_ms;
        u->seen_ts_ms = old.seen_ts_ms;
        for (size_t i = 0; i < l->n_types && i < n_types; i++)
            u->last_ts_by_type[i] = old.last_ts_by_type[i];
        for (size_t i = 0; i < l->n_acc; i++) {
            int j = acc_find(&saved, &l->acc[i]);
            if (j >= 0)
                u->acc[i] = old.acc[j];
        }
        for (size_t i = 0; i < l->n_sketch; i++) {
            int j = sketch_find(&saved, l->sketch_type[i]);
            if (j >= 0)
                memcpy(u->sketch + i * SKETCH_WORDS, old.sketch + (size_t)j * SKETCH_WORDS,
                       SKETCH_WORDS * sizeof(uint64_t));
        }
        uint32_t keep = old.ring_len < l->ring_items ? old.ring_len : (uint32_t)l->ring_items;
        u->ring_head = u->ring_len = 0;
        for (uint32_t k = keep; k > 0; k--) {
            uint32_t idx = (uint32_t)((old.ring_head + ring - k) % ring);
            u->ring[u->ring_head] = old.ring[idx];
            u->ring_head = (uint32_t)((u->ring_head + 1) % l->ring_items);
            u->ring_len++;
        }
        memcpy(u->labels, old.labels, sizeof u->labels);
        u->labels_head = old.labels_head;
        u->labels_len = old.labels_len;
    }
    r = 0;
    goto out_free_tmp;

out_malformed_tmp:
    snprintf(errbuf, errlen, "user state section is truncated or malformed");
    r = -EINVAL;
out_free_tmp:
    free(tmp);
    free(id);
    goto out_release;
out_malformed:
    snprintf(errbuf, errlen, "user state section is truncated or malformed");
    r = -EINVAL;
out_release:
    layout_release(&saved);
    return r;
}

/* Pending examples live in two structures at once: a per-user list in arrival order (to match
 * positives and evict a user's oldest) and a timing wheel of one-second buckets on deadline
 * (to resolve negatives as the watermark passes and to evict globally). A binary heap did the
 * second job first, but each pop moved ~17 entries and wrote each one's index back into its
 * example: a cache miss per level. Bucket lists make insert, removal and expiry O(1);
 * deadlines beyond the wheel's 18-hour horizon wait in an overflow list. Buckets are appended
 * to in arrival order and sorted by deadline only when the watermark stops inside one (the
 * daemon interleaves partitions, and keeping every bucket sorted on insert walked back over
 * the other partitions' examples). A bucket the watermark has passed entirely resolves in
 * arrival order, as deterministic as the events. What each choice saved is measured in
 * tests/bench/README.md ("Measured design choices"). */
#include "pipeline/labels.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define WHEEL_BITS   16
#define WHEEL_SIZE   ((int64_t)1 << WHEEL_BITS)
#define BUCKET_MS    1000
#define POOL_STEP    8  /* feature capacity classes: multiples of 8 */
#define POOL_CLASSES 64 /* pooled up to 512 features; larger ones use malloc directly */

typedef struct pd_pending {
    pd_user *user;
    struct pd_pending *prev, *next;   /* the user's list */
    struct pd_pending *tprev, *tnext; /* its bucket's (or the overflow) list */
    int64_t bucket;                   /* deadline bucket; INT64_MIN while in the overflow */
    uint64_t seq;                     /* arrival order */
    int model;
    pd_label_rule rule;
    int64_t ts_ms;
    int64_t deadline_ms; /* ts + window: negative once the watermark passes it */
    uint32_t item_hash;
    float weight;
    uint32_t n;
    uint32_t cap; /* feature capacity of this block (its pool class) */
    pd_feature x[];
} pd_pending;

struct pd_labels {
    pd_pending **wheel;   /* WHEEL_SIZE bucket heads */
    pd_pending **tails;   /* WHEEL_SIZE bucket tails */
    uint8_t *unsorted;    /* per bucket: an insert came after a later deadline */
    pd_pending **scratch; /* for sorting a bucket */
    size_t scratch_cap;
    uint64_t seq;   /* arrival counter: ties in deadline keep arrival order */
    int64_t cursor; /* lowest bucket that may hold an example; INT64_MIN: none yet */
    int64_t top;    /* highest bucket in the wheel */
    size_t in_wheel;
    pd_pending *overflow; /* deadlines beyond cursor + WHEEL_SIZE, unsorted */
    size_t in_overflow;
    int64_t max_per_user, max_total;
    pd_labels_stats stats;
    size_t bytes;
    pd_pending *pool[POOL_CLASSES]; /* freed blocks by capacity class, linked through next */
    size_t pooled_bytes;
    pd_label_prefetch_fn prefetch;
    void *prefetch_ctx;
    pd_label_evict_fn evict;
    void *evict_ctx;
};

void pd_labels_set_evict(pd_labels *lb, pd_label_evict_fn fn, void *ctx)
{
    lb->evict = fn;
    lb->evict_ctx = ctx;
}

void pd_labels_set_prefetch(pd_labels *lb, pd_label_prefetch_fn fn, void *ctx)
{
    lb->prefetch = fn;
    lb->prefetch_ctx = ctx;
}

static void prefetch(const pd_labels *lb, const pd_pending *p)
{
    if (p && lb->prefetch)
        lb->prefetch(lb->prefetch_ctx, p->model, p->x, p->n);
}

static int64_t bucket_of(int64_t deadline_ms)
{
    /* floor division, so negative times bucket consistently too */
    return deadline_ms >= 0 ? deadline_ms / BUCKET_MS
                            : -((-deadline_ms + BUCKET_MS - 1) / BUCKET_MS);
}

pd_labels *pd_labels_new(int64_t max_per_user, int64_t max_total, char *errbuf, size_t errlen)
{
    pd_labels *lb = calloc(1, sizeof *lb);
    if (lb) {
        lb->wheel = calloc((size_t)WHEEL_SIZE, sizeof *lb->wheel);
        lb->tails = calloc((size_t)WHEEL_SIZE, sizeof *lb->tails);
        lb->unsorted = calloc((size_t)WHEEL_SIZE, 1);
    }
    if (!lb || !lb->wheel || !lb->tails || !lb->unsorted) {
        if (lb) {
            free(lb->wheel);
            free(lb->tails);
            free(lb->unsorted);
        }
        free(lb);
        snprintf(errbuf, errlen, "out of memory for pending examples");
        return NULL;
    }
    lb->cursor = INT64_MIN;
    lb->top = INT64_MIN;
    lb->max_per_user = max_per_user > 0 ? max_per_user : 1;
    lb->max_total = max_total > 0 ? max_total : 1;
    return lb;
}

static void free_list(pd_pending *p, bool timing)
{
    while (p) {
        pd_pending *next = timing ? p->tnext : p->next;
        p->user->pending = (pd_user_pending){0};
        free(p);
        p = next;
    }
}

void pd_labels_free(pd_labels *lb)
{
    if (!lb)
        return;
    for (int64_t i = 0; i < WHEEL_SIZE; i++)
        free_list(lb->wheel[i], true);
    free_list(lb->overflow, true);
    for (size_t c = 0; c < POOL_CLASSES; c++) {
        pd_pending *p = lb->pool[c];
        while (p) {
            pd_pending *next = p->next;
            free(p);
            p = next;
        }
    }
    free(lb->wheel);
    free(lb->tails);
    free(lb->unsorted);
    free(lb->scratch);
    free(lb);
}

void pd_labels_set_bounds(pd_labels *lb, int64_t max_per_user, int64_t max_total)
{
    lb->max_per_user = max_per_user > 0 ? max_per_user : 1;
    lb->max_total = max_total > 0 ? max_total : 1;
}

/* ---- memory: blocks are recycled by capacity class ---- */

static size_t block_capacity(size_t n)
{
    size_t cls = (n + POOL_STEP - 1) / POOL_STEP;
    return cls < POOL_CLASSES ? cls * POOL_STEP : n;
}

size_t pd_labels_bytes_per_example(size_t n_features)
{
    return sizeof(pd_pending) + block_capacity(n_features) * sizeof(pd_feature);
}

static pd_pending *block_get(pd_labels *lb, size_t n)
{
    size_t cls = (n + POOL_STEP - 1) / POOL_STEP;
    if (cls < POOL_CLASSES && lb->pool[cls]) {
        pd_pending *p = lb->pool[cls];
        lb->pool[cls] = p->next;
        lb->pooled_bytes -= sizeof *p + p->cap * sizeof(pd_feature);
        return p;
    }
    size_t cap = block_capacity(n);
    pd_pending *p = malloc(sizeof *p + cap * sizeof(pd_feature));
    if (p)
        p->cap = (uint32_t)cap;
    return p;
}

static void block_put(pd_labels *lb, pd_pending *p)
{
    size_t cls = p->cap / POOL_STEP;
    if (p->cap % POOL_STEP == 0 && cls < POOL_CLASSES) {
        p->next = lb->pool[cls];
        lb->pool[cls] = p;
        lb->pooled_bytes += sizeof *p + p->cap * sizeof(pd_feature);
        return;
    }
    free(p);
}

/* ---- timing wheel ---- */

static void list_push(pd_pending **head, pd_pending *p)
{
    p->tprev = NULL;
    p->tnext = *head;
    if (*head)
        (*head)->tprev = p;
    *head = p;
}

static void timing_insert(pd_labels *lb, pd_pending *p)
{
    int64_t b = bucket_of(p->deadline_ms);
    if (lb->in_wheel == 0) {
        lb->cursor = b;
        lb->top = b;
    }
    /* the wheel holds buckets [cursor, cursor + WHEEL_SIZE): outside it, the overflow */
    if (b < lb->cursor && lb->top - b < WHEEL_SIZE)
        lb->cursor = b;
    if (b < lb->cursor || b - lb->cursor >= WHEEL_SIZE) {
        p->bucket = INT64_MIN;
        list_push(&lb->overflow, p);
        lb->in_overflow++;
        return;
    }
    if (b > lb->top)
        lb->top = b;
    p->bucket = b;
    size_t slot = (size_t)(b & (WHEEL_SIZE - 1));
    pd_pending *tail = lb->tails[slot];
    if (tail && tail->deadline_ms > p->deadline_ms)
        lb->unsorted[slot] = 1;
    p->tprev = tail;
    p->tnext = NULL;
    if (tail)
        tail->tnext = p;
    else
        lb->wheel[slot] = p;
    lb->tails[slot] = p;
    lb->in_wheel++;
}

static int cmp_deadline(const void *a, const void *b)
{
    const pd_pending *x = *(pd_pending *const *)a, *y = *(pd_pending *const *)b;
    if (x->deadline_ms != y->deadline_ms)
        return x->deadline_ms < y->deadline_ms ? -1 : 1;
    return x->seq < y->seq ? -1 : (x->seq > y->seq ? 1 : 0);
}

/* Sorts one bucket by deadline, arrival order among equals. Returns -ENOMEM and leaves the
 * bucket as it was when the scratch space cannot grow. */
static int bucket_sort(pd_labels *lb, size_t slot)
{
    size_t n = 0;
    for (pd_pending *p = lb->wheel[slot]; p; p = p->tnext)
        n++;
    if (n > lb->scratch_cap) {
        size_t cap = lb->scratch_cap ? lb->scratch_cap : 256;
        while (cap < n)
            cap *= 2;
        pd_pending **ns = realloc(lb->scratch, cap * sizeof *ns);
        if (!ns)
            return -ENOMEM;
        lb->scratch = ns;
        lb->scratch_cap = cap;
    }
    size_t k = 0;
    for (pd_pending *p = lb->wheel[slot]; p; p = p->tnext)
        lb->scratch[k++] = p;
    qsort(lb->scratch, n, sizeof *lb->scratch, cmp_deadline);
    for (size_t i = 0; i < n; i++) {
        lb->scratch[i]->tprev = i ? lb->scratch[i - 1] : NULL;
        lb->scratch[i]->tnext = i + 1 < n ? lb->scratch[i + 1] : NULL;
    }
    lb->wheel[slot] = n ? lb->scratch[0] : NULL;
    lb->tails[slot] = n ? lb->scratch[n - 1] : NULL;
    lb->unsorted[slot] = 0;
    return 0;
}

/* The earliest example of a bucket, sorting it first if needed (or scanning when that fails). */
static pd_pending *bucket_first(pd_labels *lb, size_t slot)
{
    if (lb->unsorted[slot] && bucket_sort(lb, slot) < 0) {
        pd_pending *best = NULL;
        for (pd_pending *p = lb->wheel[slot]; p; p = p->tnext)
            if (!best || cmp_deadline(&p, &best) < 0)
                best = p;
        return best;
    }
    return lb->wheel[slot];
}

static void timing_remove(pd_labels *lb, pd_pending *p)
{
    bool wheel = p->bucket != INT64_MIN;
    size_t slot = wheel ? (size_t)(p->bucket & (WHEEL_SIZE - 1)) : 0;
    pd_pending **head = wheel ? &lb->wheel[slot] : &lb->overflow;
    if (p->tprev)
        p->tprev->tnext = p->tnext;
    else
        *head = p->tnext;
    if (p->tnext)
        p->tnext->tprev = p->tprev;
    else if (wheel)
        lb->tails[slot] = p->tprev;
    assert(wheel ? lb->in_wheel > 0 : lb->in_overflow > 0);
    if (p->bucket == INT64_MIN)
        lb->in_overflow--;
    else
        lb->in_wheel--;
}

/* Of the (unsorted) overflow list, the example with the earliest deadline, the oldest
 * arrival among equals. */
static pd_pending *list_earliest(pd_pending *p, pd_pending *best)
{
    for (; p; p = p->tnext)
        if (!best || p->deadline_ms <= best->deadline_ms)
            best = p; /* <=: the list grows at the head, so later in it is older */
    return best;
}

/* The example with the earliest deadline (for the total bound): it is in the lowest non-empty
 * bucket or in the overflow. */
static pd_pending *timing_earliest(pd_labels *lb)
{
    pd_pending *best = NULL;
    if (lb->in_wheel) {
        for (int64_t b = lb->cursor; b <= lb->top; b++) {
            size_t slot = (size_t)(b & (WHEEL_SIZE - 1));
            if (!lb->wheel[slot])
                continue;
            best = bucket_first(lb, slot);
            lb->cursor = b;
            break;
        }
    }
    pd_pending *o = list_earliest(lb->overflow, NULL);
    if (o && (!best || o->deadline_ms < best->deadline_ms))
        best = o;
    return best;
}

/* ---- user lists ---- */

static void user_unlink(pd_pending *p)
{
    pd_user *u = p->user;
    if (p->prev)
        p->prev->next = p->next;
    else
        u->pending.first = p->next;
    if (p->next)
        p->next->prev = p->prev;
    else
        u->pending.last = p->prev;
    u->pending.count--;
}

static void release(pd_labels *lb, pd_pending *p)
{
    assert(p->user->pending.count > 0 && lb->stats.pending > 0);
    timing_remove(lb, p);
    user_unlink(p);
    lb->bytes -= sizeof *p + p->cap * sizeof(pd_feature);
    lb->stats.pending--;
    block_put(lb, p);
}

static void resolve(pd_labels *lb, pd_pending *p, double label, pd_label_fn cb, void *ctx)
{
    cb(ctx, p->model, p->x, p->n, label, p->weight);
    release(lb, p);
}

static bool matches(const pd_pending *p, int type, int64_t ts_ms, uint32_t item_hash)
{
    return p->rule.positive_on == type && ts_ms >= p->ts_ms && ts_ms <= p->deadline_ms &&
           (!p->rule.match_item || p->item_hash == item_hash);
}

static bool seen_positive(const pd_user *u, const pd_label_rule *rule, int64_t ts_ms,
                          uint32_t item_hash, bool skip_newest)
{
    uint32_t n = u->labels_len;
    for (uint32_t k = skip_newest ? 1 : 0; k < n; k++) {
        const pd_label_event *e =
            &u->labels[(u->labels_head + PD_LABEL_RING - 1 - k) % PD_LABEL_RING];
        if (e->type == rule->positive_on && e->ts_ms >= ts_ms &&
            e->ts_ms <= ts_ms + rule->window_ms && (!rule->match_item || e->item_hash == item_hash))
            return true;
    }
    return false;
}

static int insert_pending(pd_labels *lb, pd_user *u, int model, const pd_label_rule *rule,
                          int64_t ts_ms, uint32_t item_hash, const pd_feature *x, size_t n,
                          double weight, uint64_t seq);

int pd_labels_add(pd_labels *lb, pd_user *u, int model, const pd_label_rule *rule, int64_t ts_ms,
                  uint32_t item_hash, const pd_feature *x, size_t n, double weight,
                  int64_t watermark_ms, bool skip_newest, pd_label_fn cb, void *ctx)
{
    lb->stats.added++;
    if (seen_positive(u, rule, ts_ms, item_hash, skip_newest)) {
        lb->stats.early_positives++;
        cb(ctx, model, x, n, 1.0, weight);
        return 0;
    }
    if (ts_ms + rule->window_ms < watermark_ms) {
        lb->stats.late++;
        lb->stats.negatives++;
        cb(ctx, model, x, n, 0.0, weight);
        return 0;
    }
    return insert_pending(lb, u, model, rule, ts_ms, item_hash, x, n, weight, lb->seq);
}

/* Puts an example behind u's others, evicting by the bounds first. */
static int insert_pending(pd_labels *lb, pd_user *u, int model, const pd_label_rule *rule,
                          int64_t ts_ms, uint32_t item_hash, const pd_feature *x, size_t n,
                          double weight, uint64_t seq)
{
    if ((int64_t)u->pending.count >= lb->max_per_user) {
        lb->stats.evicted_user++;
        if (lb->evict)
            lb->evict(lb->evict_ctx, u->pending.first->model, PD_EVICTED_USER_LIMIT);
        release(lb, u->pending.first);
    }
    if ((int64_t)lb->stats.pending >= lb->max_total) {
        pd_pending *victim = timing_earliest(lb);
        if (victim) {
            lb->stats.evicted_total++;
            if (lb->evict)
                lb->evict(lb->evict_ctx, victim->model, PD_EVICTED_TOTAL_LIMIT);
            release(lb, victim);
        }
    }
    pd_pending *p = block_get(lb, n);
    if (!p)
        goto out_nomem;
    assert(n <= p->cap);
    p->user = u;
    p->model = model;
    p->rule = *rule;
    p->ts_ms = ts_ms;
    p->deadline_ms = ts_ms + rule->window_ms;
    p->item_hash = item_hash;
    p->weight = (float)weight;
    p->n = (uint32_t)n;
    p->seq = seq;
    if (seq >= lb->seq)
        lb->seq = seq + 1;
    memcpy(p->x, x, n * sizeof(pd_feature));
    p->next = NULL;
    p->prev = u->pending.last;
    if (u->pending.last)
        u->pending.last->next = p;
    else
        u->pending.first = p;
    u->pending.last = p;
    u->pending.count++;
    timing_insert(lb, p);
    lb->stats.pending++;
    lb->bytes += sizeof *p + p->cap * sizeof(pd_feature);
    return 0;

out_nomem:
    lb->stats.dropped++;
    return -ENOMEM;
}

uint32_t pd_labels_user_pending(const pd_user *u)
{
    return u->pending.count;
}

size_t pd_labels_positive(pd_labels *lb, pd_user *u, int type, int64_t ts_ms, uint32_t item_hash,
                          pd_label_fn cb, void *ctx)
{
    size_t n = 0;
    pd_pending *p = u->pending.first;
    while (p) {
        pd_pending *next = p->next;
        if (matches(p, type, ts_ms, item_hash)) {
            lb->stats.positives++;
            resolve(lb, p, 1.0, cb, ctx);
            n++;
        }
        p = next;
    }
    return n;
}

/* Resolves, in list order, the examples of the unsorted overflow whose deadline is before
 * wm. */
static size_t expire_overflow(pd_labels *lb, int64_t wm, pd_label_fn cb, void *ctx)
{
    size_t n = 0;
    pd_pending *p = lb->overflow;
    while (p) {
        pd_pending *next = p->tnext; /* the callback never touches this list */
        if (p->deadline_ms < wm) {
            lb->stats.negatives++;
            resolve(lb, p, 0.0, cb, ctx);
            n++;
        }
        p = next;
    }
    return n;
}

size_t pd_labels_advance(pd_labels *lb, int64_t watermark_ms, pd_label_fn cb, void *ctx)
{
    size_t n = 0;
    if (lb->in_overflow)
        n += expire_overflow(lb, watermark_ms, cb, ctx);
    if (lb->in_wheel == 0)
        return n;
    int64_t last = bucket_of(watermark_ms);
    for (int64_t b = lb->cursor; b <= last && b <= lb->top && lb->in_wheel; b++) {
        size_t slot = (size_t)(b & (WHEEL_SIZE - 1));
        pd_pending **head = &lb->wheel[slot];
        if ((b + 1) * BUCKET_MS <= watermark_ms) {
            /* passed entirely: everything in it is due, in arrival order */
            while (*head) {
                lb->stats.negatives++;
                prefetch(lb, (*head)->tnext);
                resolve(lb, *head, 0.0, cb, ctx);
                n++;
            }
            lb->unsorted[slot] = 0;
            lb->cursor = b + 1;
            continue;
        }
        /* the watermark's own bucket: only deadlines before it are due */
        pd_pending *p;
        while ((p = *head ? bucket_first(lb, slot) : NULL) && p->deadline_ms < watermark_ms) {
            lb->stats.negatives++;
            if (!lb->unsorted[slot])
                prefetch(lb, p->tnext);
            resolve(lb, p, 0.0, cb, ctx);
            n++;
        }
        if (*head)
            break;
        lb->cursor = b + 1;
    }
    if (lb->in_wheel == 0)
        lb->cursor = lb->top = INT64_MIN;
    return n;
}

void pd_labels_forget_user(pd_labels *lb, pd_user *u)
{
    while (u->pending.first) {
        lb->stats.dropped++;
        release(lb, u->pending.first);
    }
}

void pd_labels_hand_out_user(pd_labels *lb, pd_user *u)
{
    while (u->pending.first) {
        lb->stats.handed_out++;
        release(lb, u->pending.first);
    }
}

/* Calls fn for every waiting example; fn may release the one it is given. */
static void each_pending(pd_labels *lb, void (*fn)(pd_labels *, pd_pending *, void *), void *ctx)
{
    for (int64_t i = 0; i < WHEEL_SIZE && lb->in_wheel; i++) {
        pd_pending *p = lb->wheel[i];
        while (p) {
            pd_pending *next = p->tnext;
            fn(lb, p, ctx);
            p = next;
        }
    }
    pd_pending *p = lb->overflow;
    while (p) {
        pd_pending *next = p->tnext;
        fn(lb, p, ctx);
        p = next;
    }
}

typedef struct remap_ctx {
    const int *old_to_new;
    size_t n_old;
} remap_ctx;

static void remap_one(pd_labels *lb, pd_pending *p, void *ctx)
{
    const remap_ctx *rc = ctx;
    int m = (p->model >= 0 && (size_t)p->model < rc->n_old) ? rc->old_to_new[p->model] : -1;
    if (m < 0) {
        lb->stats.dropped++;
        release(lb, p);
        return;
    }
    p->model = m;
}

void pd_labels_remap_models(pd_labels *lb, const int *old_to_new, size_t n_old)
{
    remap_ctx rc = {.old_to_new = old_to_new, .n_old = n_old};
    each_pending(lb, remap_one, &rc);
}

void pd_labels_get_stats(const pd_labels *lb, pd_labels_stats *ret_stats)
{
    *ret_stats = lb->stats;
}

size_t pd_labels_memory(const pd_labels *lb)
{
    return sizeof *lb + (size_t)WHEEL_SIZE * (2 * sizeof(pd_pending *) + 1) + lb->bytes +
           lb->pooled_bytes + lb->scratch_cap * sizeof(pd_pending *);
}

/* ---- snapshots ----
 *
 * The pending section, version 1 (little-endian, field by field):
 *   u32 version; the stats (u64 added, positives, negatives, early_positives, late,
 *   evicted_user, evicted_total, dropped); u64 count; then every waiting example in arrival
 *   order: u64 arrival number, str user id, i32 model, i32 positive_on, i64 window, bool match
 *   item, i64 ts, u32 item hash, f32 weight, u32 n, n x (u32 hash, f32 value).
 * Arrival order and numbers come back as they were, so the restored join resolves its
 * examples in the same order as the uninterrupted one: bit-identical learning. */

#define PENDING_VERSION 1

static int cmp_seq(const void *a, const void *b)
{
    const pd_pending *x = *(pd_pending *const *)a, *y = *(pd_pending *const *)b;
    return x->seq < y->seq ? -1 : (x->seq > y->seq ? 1 : 0);
}

typedef struct collect_ctx {
    pd_pending **all;
    size_t n;
    pd_user_filter_fn keep; /* NULL: all */
    void *keep_ctx;
} collect_ctx;

static void collect(pd_labels *lb, pd_pending *p, void *ctx)
{
    (void)lb;
    collect_ctx *cc = ctx;
    if (!cc->keep || cc->keep(cc->keep_ctx, p->user))
        cc->all[cc->n++] = p;
}

static void put_stats(pd_bin_writer *w, const pd_labels_stats *st)
{
    const uint64_t v[] = {st->added,     st->positives,     st->negatives,
                          st->early_positives, st->late,    st->evicted_user,
                          st->evicted_total,   st->dropped};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        pd_bin_put_u64(w, v[i]);
}

static void get_stats(pd_bin_reader *r, pd_labels_stats *st)
{
    uint64_t *v[] = {&st->added,          &st->positives, &st->negatives,
                     &st->early_positives, &st->late,     &st->evicted_user,
                     &st->evicted_total,   &st->dropped};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        *v[i] = pd_bin_get_u64(r);
}

static void put_pending(pd_bin_writer *w, const pd_pending *p)
{
    pd_bin_put_u64(w, p->seq);
    pd_bin_put_str(w, p->user->id, p->user->id_len);
    pd_bin_put_i32(w, p->model);
    pd_bin_put_i32(w, p->rule.positive_on);
    pd_bin_put_i64(w, p->rule.window_ms);
    pd_bin_put_bool(w, p->rule.match_item);
    pd_bin_put_i64(w, p->ts_ms);
    pd_bin_put_u32(w, p->item_hash);
    pd_bin_put_f32(w, p->weight);
    pd_bin_put_u32(w, p->n);
    for (uint32_t i = 0; i < p->n; i++) {
        pd_bin_put_u32(w, p->x[i].hash);
        pd_bin_put_f32(w, p->x[i].value);
    }
}

int pd_labels_save_some(const pd_labels *lb, pd_user_filter_fn keep, void *ctx,
                        pd_bin_writer *w)
{
    collect_ctx cc = {.all = malloc((lb->stats.pending ? lb->stats.pending : 1) * sizeof *cc.all),
                      .keep = keep,
                      .keep_ctx = ctx};
    if (!cc.all)
        return w->err = -ENOMEM;
    each_pending((pd_labels *)lb, collect, &cc);
    qsort(cc.all, cc.n, sizeof *cc.all, cmp_seq);
    pd_bin_put_version(w, PENDING_VERSION);
    put_stats(w, &lb->stats);
    pd_bin_put_u64(w, cc.n);
    for (size_t i = 0; i < cc.n && !w->err; i++)
        put_pending(w, cc.all[i]);
    free(cc.all);
    return w->err;
}

int pd_labels_save(const pd_labels *lb, pd_bin_writer *w)
{
    return pd_labels_save_some(lb, NULL, NULL, w);
}

#define MAX_SAVED_FEATURES 65536

/* How a load places what it reads: a restore keeps the saved arrival numbers, a handover
 * gives them this join's next numbers and maps the models. */
typedef struct load_mode {
    bool more;
    const int *model_map;
    size_t n_map;
} load_mode;

/* Reads one example and puts it back behind its user (if the user is still known). */
static int load_one(pd_labels *lb, pd_user_state *st, const load_mode *mode, pd_bin_reader *r,
                    char *id, pd_feature *x)
{
    uint64_t seq = pd_bin_get_u64(r);
    size_t id_len = pd_bin_get_str(r, id, 65536 + 1);
    int32_t model = pd_bin_get_i32(r);
    pd_label_rule rule = {.positive_on = pd_bin_get_i32(r)};
    rule.window_ms = pd_bin_get_i64(r);
    rule.match_item = pd_bin_get_bool(r);
    int64_t ts_ms = pd_bin_get_i64(r);
    uint32_t item_hash = pd_bin_get_u32(r);
    float weight = pd_bin_get_f32(r);
    uint32_t n = pd_bin_get_u32(r);
    if (!r->err && n > MAX_SAVED_FEATURES)
        pd_bin_fail(r, "an example of %u features", n);
    for (uint32_t i = 0; i < n && !r->err; i++) {
        x[i].hash = pd_bin_get_u32(r);
        x[i].value = pd_bin_get_f32(r);
    }
    if (r->err)
        return -EINVAL;
    pd_user *u = pd_user_state_find(st, id, id_len);
    if (mode->more)
        model = model >= 0 && (size_t)model < mode->n_map ? mode->model_map[model] : -1;
    if (!u || model < 0) {
        lb->stats.dropped++;
        return 0;
    }
    /* no watermark and no ring check: the example was waiting when it was saved */
    if (mode->more)
        lb->stats.handed_in++;
    else
        lb->stats.added++;
    return insert_pending(lb, u, model, &rule, ts_ms, item_hash, x, n, weight,
                          mode->more ? lb->seq : seq);
}

static int load_examples(pd_labels *lb, pd_user_state *st, const load_mode *mode,
                         pd_bin_reader *r, char *errbuf, size_t errlen)
{
    pd_labels_stats stats = {0};
    char *id = malloc(65536 + 1);
    pd_feature *x = malloc(MAX_SAVED_FEATURES * sizeof *x);
    int ret = -EINVAL;
    if (!id || !x) {
        ret = -ENOMEM;
        snprintf(errbuf, errlen, "out of memory loading pending examples");
        goto out_free;
    }
    pd_bin_get_version(r, "pending", PENDING_VERSION);
    get_stats(r, &stats);
    uint64_t count = pd_bin_get_u64(r);
    for (uint64_t k = 0; k < count && !r->err; k++) {
        int rr = load_one(lb, st, mode, r, id, x);
        if (rr == -ENOMEM) {
            ret = rr;
            snprintf(errbuf, errlen, "out of memory loading pending examples");
            goto out_free;
        }
    }
    if (r->err) {
        snprintf(errbuf, errlen, "pending examples section: %s",
                 r->why[0] ? r->why : "truncated");
        goto out_free;
    }
    if (!mode->more) {
        stats.pending = lb->stats.pending;
        stats.dropped += lb->stats.dropped;
        stats.handed_out = lb->stats.handed_out;
        stats.handed_in = lb->stats.handed_in;
        lb->stats = stats;
    }
    ret = 0;
out_free:
    free(id);
    free(x);
    return ret;
}

int pd_labels_load(pd_labels *lb, pd_user_state *st, pd_bin_reader *r, char *errbuf,
                   size_t errlen)
{
    const load_mode mode = {.more = false};
    return load_examples(lb, st, &mode, r, errbuf, errlen);
}

int pd_labels_load_more(pd_labels *lb, pd_user_state *st, const int *model_map, size_t n_map,
                        pd_bin_reader *r, char *errbuf, size_t errlen)
{
    const load_mode mode = {.more = true, .model_map = model_map, .n_map = n_map};
    return load_examples(lb, st, &mode, r, errbuf, errlen);
}

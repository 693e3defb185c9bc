/* Pending examples live in two structures at once: a per-user list in arrival order (to match
 * positives and evict a user's oldest) and a binary min-heap on deadline (to resolve negatives
 * as the watermark passes and to evict globally). */
#include "pipeline/labels.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

typedef struct pd_pending {
    pd_user *user;
    struct pd_pending *prev, *next; /* the user's list */
    size_t heap_idx;
    int model;
    pd_label_rule rule;
    int64_t ts_ms;
    int64_t deadline_ms; /* ts + window: negative once the watermark passes it */
    uint32_t item_hash;
    float weight;
    uint32_t n;
    pd_feature x[];
} pd_pending;

struct pd_labels {
    pd_pending **heap;
    size_t len, cap;
    int64_t max_per_user, max_total;
    pd_labels_stats stats;
    size_t bytes;
};

pd_labels *pd_labels_new(int64_t max_per_user, int64_t max_total, char *errbuf, size_t errlen)
{
    pd_labels *lb = calloc(1, sizeof *lb);
    if (!lb) {
        snprintf(errbuf, errlen, "out of memory for pending examples");
        return NULL;
    }
    lb->max_per_user = max_per_user > 0 ? max_per_user : 1;
    lb->max_total = max_total > 0 ? max_total : 1;
    return lb;
}

void pd_labels_free(pd_labels *lb)
{
    if (!lb)
        return;
    for (size_t i = 0; i < lb->len; i++) {
        pd_pending *p = lb->heap[i];
        p->user->pending_first = p->user->pending_last = NULL;
        p->user->n_pending = 0;
        free(p);
    }
    free(lb->heap);
    free(lb);
}

void pd_labels_set_bounds(pd_labels *lb, int64_t max_per_user, int64_t max_total)
{
    lb->max_per_user = max_per_user > 0 ? max_per_user : 1;
    lb->max_total = max_total > 0 ? max_total : 1;
}

/* ---- heap on deadline ---- */

static bool earlier(const pd_pending *a, const pd_pending *b)
{
    return a->deadline_ms < b->deadline_ms;
}

static void heap_set(pd_labels *lb, size_t i, pd_pending *p)
{
    lb->heap[i] = p;
    p->heap_idx = i;
}

static void sift_up(pd_labels *lb, size_t i)
{
    pd_pending *p = lb->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!earlier(p, lb->heap[parent]))
            break;
        heap_set(lb, i, lb->heap[parent]);
        i = parent;
    }
    heap_set(lb, i, p);
}

static void sift_down(pd_labels *lb, size_t i)
{
    pd_pending *p = lb->heap[i];
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const pd_pending *best = p;
        if (l < lb->len && earlier(lb->heap[l], best)) {
            m = l;
            best = lb->heap[l];
        }
        if (r < lb->len && earlier(lb->heap[r], best))
            m = r;
        if (m == i)
            break;
        heap_set(lb, i, lb->heap[m]);
        i = m;
    }
    heap_set(lb, i, p);
}

static void heap_remove(pd_labels *lb, pd_pending *p)
{
    size_t i = p->heap_idx;
    lb->len--;
    if (i == lb->len)
        return;
    pd_pending *moved = lb->heap[lb->len];
    heap_set(lb, i, moved);
    sift_down(lb, i);
    sift_up(lb, moved->heap_idx);
}

/* ---- user lists ---- */

static void user_unlink(pd_pending *p)
{
    pd_user *u = p->user;
    if (p->prev)
        p->prev->next = p->next;
    else
        u->pending_first = p->next;
    if (p->next)
        p->next->prev = p->prev;
    else
        u->pending_last = p->prev;
    u->n_pending--;
}

static void release(pd_labels *lb, pd_pending *p)
{
    heap_remove(lb, p);
    user_unlink(p);
    lb->bytes -= sizeof *p + p->n * sizeof(pd_feature);
    lb->stats.pending--;
    free(p);
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
        const pd_label_event *e = &u->labels[(u->labels_head + PD_LABEL_RING - 1 - k) %
                                             PD_LABEL_RING];
        if (e->type == rule->positive_on && e->ts_ms >= ts_ms &&
            e->ts_ms <= ts_ms + rule->window_ms && (!rule->match_item || e->item_hash == item_hash))
            return true;
    }
    return false;
}

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
    if ((int64_t)u->n_pending >= lb->max_per_user) {
        lb->stats.evicted_user++;
        release(lb, u->pending_first);
    }
    if ((int64_t)lb->len >= lb->max_total && lb->len > 0) {
        lb->stats.evicted_total++;
        release(lb, lb->heap[0]);
    }
    if (lb->len == lb->cap) {
        size_t ncap = lb->cap ? lb->cap * 2 : 1024;
        pd_pending **nh = realloc(lb->heap, ncap * sizeof *nh);
        if (!nh)
            goto out_nomem;
        lb->heap = nh;
        lb->cap = ncap;
    }
    pd_pending *p = malloc(sizeof *p + n * sizeof(pd_feature));
    if (!p)
        goto out_nomem;
    p->user = u;
    p->model = model;
    p->rule = *rule;
    p->ts_ms = ts_ms;
    p->deadline_ms = ts_ms + rule->window_ms;
    p->item_hash = item_hash;
    p->weight = (float)weight;
    p->n = (uint32_t)n;
    memcpy(p->x, x, n * sizeof(pd_feature));
    p->next = NULL;
    p->prev = u->pending_last;
    if (u->pending_last)
        u->pending_last->next = p;
    else
        u->pending_first = p;
    u->pending_last = p;
    u->n_pending++;
    lb->heap[lb->len] = p;
    p->heap_idx = lb->len++;
    sift_up(lb, p->heap_idx);
    lb->stats.pending++;
    lb->bytes += sizeof *p + n * sizeof(pd_feature);
    return 0;

out_nomem:
    lb->stats.dropped++;
    return -ENOMEM;
}

size_t pd_labels_positive(pd_labels *lb, pd_user *u, int type, int64_t ts_ms, uint32_t item_hash,
                          pd_label_fn cb, void *ctx)
{
    size_t n = 0;
    pd_pending *p = u->pending_first;
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

size_t pd_labels_advance(pd_labels *lb, int64_t watermark_ms, pd_label_fn cb, void *ctx)
{
    size_t n = 0;
    while (lb->len > 0 && lb->heap[0]->deadline_ms < watermark_ms) {
        lb->stats.negatives++;
        resolve(lb, lb->heap[0], 0.0, cb, ctx);
        n++;
    }
    return n;
}

void pd_labels_forget_user(pd_labels *lb, pd_user *u)
{
    while (u->pending_first) {
        lb->stats.dropped++;
        release(lb, u->pending_first);
    }
}

void pd_labels_remap_models(pd_labels *lb, const int *old_to_new, size_t n_old)
{
    /* one pass: renumber or drop every entry, compact the survivors, then rebuild the heap;
     * removing entries one by one would move remapped ones back under the cursor */
    size_t keep = 0;
    for (size_t i = 0; i < lb->len; i++) {
        pd_pending *p = lb->heap[i];
        int m = (p->model >= 0 && (size_t)p->model < n_old) ? old_to_new[p->model] : -1;
        if (m < 0) {
            lb->stats.dropped++;
            lb->stats.pending--;
            lb->bytes -= sizeof *p + p->n * sizeof(pd_feature);
            user_unlink(p);
            free(p);
            continue;
        }
        p->model = m;
        heap_set(lb, keep++, p);
    }
    lb->len = keep;
    for (size_t i = keep / 2; i-- > 0;)
        sift_down(lb, i);
}

void pd_labels_get_stats(const pd_labels *lb, pd_labels_stats *ret_stats)
{
    *ret_stats = lb->stats;
}

size_t pd_labels_memory(const pd_labels *lb)
{
    return sizeof *lb + lb->cap * sizeof(pd_pending *) + lb->bytes;
}

/* ---- snapshots ---- */

#define LABELS_MAGIC UINT32_C(0x50444c42) /* "PDLB" */

typedef struct saved_pending {
    int32_t model;
    int32_t positive_on;
    int64_t window_ms;
    int64_t ts_ms;
    uint32_t item_hash;
    uint32_t match_item;
    float weight;
    uint32_t n;
    uint32_t id_len;
    uint32_t pad;
} saved_pending;

int pd_labels_save(const pd_labels *lb, FILE *out)
{
    uint32_t magic = LABELS_MAGIC;
    uint64_t count = lb->len;
    if (fwrite(&magic, sizeof magic, 1, out) != 1 || fwrite(&count, sizeof count, 1, out) != 1 ||
        fwrite(&lb->stats, sizeof lb->stats, 1, out) != 1)
        return -EIO;
    /* per user in arrival order, so a restore rebuilds identical user lists */
    for (size_t i = 0; i < lb->len; i++) {
        const pd_pending *first = lb->heap[i];
        if (first->prev)
            continue; /* written with its user's list */
        for (const pd_pending *p = first; p; p = p->next) {
            saved_pending s = {.model = p->model,
                               .positive_on = p->rule.positive_on,
                               .window_ms = p->rule.window_ms,
                               .ts_ms = p->ts_ms,
                               .item_hash = p->item_hash,
                               .match_item = p->rule.match_item,
                               .weight = p->weight,
                               .n = p->n,
                               .id_len = p->user->id_len};
            if (fwrite(&s, sizeof s, 1, out) != 1 ||
                fwrite(p->user->id, 1, s.id_len, out) != s.id_len ||
                fwrite(p->x, sizeof(pd_feature), p->n, out) != p->n)
                return -EIO;
        }
    }
    return 0;
}

/* Restored examples skip the checks that resolve at once, so this is never reached. */
static void never_called(void *ctx, int model, const pd_feature *x, size_t n, double label,
                         double weight)
{
    (void)ctx, (void)model, (void)x, (void)n, (void)label, (void)weight;
}

int pd_labels_load(pd_labels *lb, pd_user_state *st, FILE *in, char *errbuf, size_t errlen)
{
    uint32_t magic;
    uint64_t count;
    pd_labels_stats stats;
    char *id = NULL;
    pd_feature *x = NULL;
    int r = -EINVAL;
    if (fread(&magic, sizeof magic, 1, in) != 1 || magic != LABELS_MAGIC ||
        fread(&count, sizeof count, 1, in) != 1 || fread(&stats, sizeof stats, 1, in) != 1)
        goto out_malformed;
    id = malloc(65537);
    x = malloc(65536 * sizeof *x);
    if (!id || !x) {
        r = -ENOMEM;
        snprintf(errbuf, errlen, "out of memory loading pending examples");
        goto out_free;
    }
    for (uint64_t k = 0; k < count; k++) {
        saved_pending s;
        if (fread(&s, sizeof s, 1, in) != 1 || s.id_len > 65536 || s.n > 65536 ||
            fread(id, 1, s.id_len, in) != s.id_len || fread(x, sizeof *x, s.n, in) != s.n)
            goto out_malformed;
        pd_user *u = pd_user_state_find(st, id, s.id_len);
        if (!u) {
            lb->stats.dropped++;
            continue;
        }
        pd_label_rule rule = {.positive_on = s.positive_on,
                              .window_ms = s.window_ms,
                              .match_item = s.match_item != 0};
        /* no watermark and no ring check: the example was waiting when it was saved */
        uint32_t saved_len = u->labels_len;
        u->labels_len = 0;
        int rr = pd_labels_add(lb, u, s.model, &rule, s.ts_ms, s.item_hash, x, s.n, s.weight,
                               INT64_MIN, false, never_called, NULL);
        u->labels_len = saved_len;
        if (rr < 0) {
            r = rr;
            snprintf(errbuf, errlen, "out of memory loading pending examples");
            goto out_free;
        }
    }
    stats.pending = lb->stats.pending;
    stats.dropped += lb->stats.dropped;
    lb->stats = stats;
    r = 0;
    goto out_free;

out_malformed:
    snprintf(errbuf, errlen, "pending examples section is truncated or malformed");
out_free:
    free(id);
    free(x);
    return r;
}

/* The delayed-label join: examples wait here, features frozen, until a later event of the same
 * user (and item) labels them positive, or event time moves past their window (watermark) and
 * labels them negative. Bounded per user and in total; what is evicted is counted. */
#ifndef PD_LABELS_H
#define PD_LABELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/binio.h"
#include "config/config.h"
#include "models/sparse.h"
#include "pipeline/user_state.h"

typedef struct pd_labels pd_labels;

/* What resolves an example. */
typedef struct pd_label_rule {
    int positive_on; /* event type id */
    int64_t window_ms;
    bool match_item;
} pd_label_rule;

typedef struct pd_labels_stats {
    uint64_t added;
    uint64_t positives;       /* resolved 1 by a later event */
    uint64_t negatives;       /* resolved 0 by the watermark */
    uint64_t early_positives; /* resolved 1 at once: the positive event had arrived first */
    uint64_t late;            /* examples already past the watermark when they arrived */
    uint64_t evicted_user;    /* dropped: the user had max_pending_per_user waiting */
    uint64_t evicted_total;   /* dropped: max_pending_total were waiting */
    uint64_t dropped;         /* dropped with their user (forget, eviction) or their model */
    uint64_t handed_out;      /* given to another instance with their user (not lost) */
    uint64_t handed_in;       /* taken over from another instance */
    uint64_t pending;
} pd_labels_stats;

/* Called for every resolved example. x is valid only during the call. */
typedef void (*pd_label_fn)(void *ctx, int model, const pd_feature *x, size_t n, double label,
                            double weight);

/* Optional: called for the example that will be resolved next, before the current one is,
 * so the learner can start loading its weights while the current example learns. */
typedef void (*pd_label_prefetch_fn)(void *ctx, int model, const pd_feature *x, size_t n);

/* Why an example was dropped before its label resolved. */
typedef enum pd_label_eviction {
    PD_EVICTED_USER_LIMIT,  /* its user had max_pending_per_user waiting */
    PD_EVICTED_TOTAL_LIMIT, /* max_pending_total were waiting */
    PD_EVICTED__COUNT
} pd_label_eviction;

/* Optional: called for every example evicted by a bound, with its model, so losses can be
 * counted per model (an evicted example is never learned). */
typedef void (*pd_label_evict_fn)(void *ctx, int model, pd_label_eviction why);

pd_labels *pd_labels_new(int64_t max_per_user, int64_t max_total, char *errbuf, size_t errlen);
void pd_labels_set_prefetch(pd_labels *lb, pd_label_prefetch_fn fn, void *ctx);
void pd_labels_set_evict(pd_labels *lb, pd_label_evict_fn fn, void *ctx);
void pd_labels_free(pd_labels *lb);

/* Takes a copy of x. The example is resolved at once when a matching positive of u is already
 * known (ring of u's recent label events, skipping its newest entry when skip_newest: that is
 * the event the example comes from) or when its window has already passed watermark; cb is
 * called then. Returns 0, or -ENOMEM (the example is counted as dropped). */
int pd_labels_add(pd_labels *lb, pd_user *u, int model, const pd_label_rule *rule, int64_t ts_ms,
                  uint32_t item_hash, const pd_feature *x, size_t n, double weight,
                  int64_t watermark_ms, bool skip_newest, pd_label_fn cb, void *ctx);

/* An event of type at ts_ms (item item_hash) of u: labels 1 every waiting example of u whose
 * rule it satisfies. Returns how many. */
size_t pd_labels_positive(pd_labels *lb, pd_user *u, int type, int64_t ts_ms, uint32_t item_hash,
                          pd_label_fn cb, void *ctx);

/* Labels 0 every example whose window ends before watermark_ms. Returns how many. */
size_t pd_labels_advance(pd_labels *lb, int64_t watermark_ms, pd_label_fn cb, void *ctx);

/* How many examples of u are waiting. */
uint32_t pd_labels_user_pending(const pd_user *u);

/* Drops every waiting example of u without learning from it. */
void pd_labels_forget_user(pd_labels *lb, pd_user *u);
/* The same for a user whose examples another instance now holds (counted as handed out,
 * not dropped). */
void pd_labels_hand_out_user(pd_labels *lb, pd_user *u);

/* After a reload: model indices move (old_to_new[i] = new index or -1 to drop). */
void pd_labels_remap_models(pd_labels *lb, const int *old_to_new, size_t n_old);

void pd_labels_set_bounds(pd_labels *lb, int64_t max_per_user, int64_t max_total);

/* Bytes one waiting example of n_features coordinates takes, for `check`'s memory figures. */
size_t pd_labels_bytes_per_example(size_t n_features);
void pd_labels_get_stats(const pd_labels *lb, pd_labels_stats *ret_stats);
size_t pd_labels_memory(const pd_labels *lb);

/* Snapshot support. Users must be in st before loading. */
int pd_labels_save(const pd_labels *lb, pd_bin_writer *w);
int pd_labels_load(pd_labels *lb, pd_user_state *st, pd_bin_reader *r, char *errbuf,
                   size_t errlen);

/* Handing users over between instances: the same section with only the examples of users
 * keep() takes, and its loader that adds them to what is waiting here (behind this join's
 * own, in the saved order, counted as handed in; the saved statistics are the other
 * instance's and are skipped). model_map[i] is the local model of the saved model i (-1:
 * none here, the example is dropped). */
int pd_labels_save_some(const pd_labels *lb, pd_user_filter_fn keep, void *ctx,
                        pd_bin_writer *w);
int pd_labels_load_more(pd_labels *lb, pd_user_state *st, const int *model_map, size_t n_map,
                        pd_bin_reader *r, char *errbuf, size_t errlen);

#endif

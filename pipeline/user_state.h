/* Per-user state: last event times, exponentially decayed counters and sums, distinct-item
 * sketches and a ring of recent items, kept in a hash table keyed by user id with an LRU list
 * for bounded memory. The store owns every pd_user; a pd_user is a plain record that features
 * and label joins read and write in place. */
#ifndef PD_USER_STATE_H
#define PD_USER_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/binio.h"
#include "config/config.h"

#define PD_SKETCH_BITS 512 /* linear-counting bitmap per distinct-items sketch */
#define PD_LABEL_RING  8   /* recent label events kept per user for out-of-order joins */

/* One decayed accumulator: a count (or sum of values) of events of a type, halving every
 * half_life_ms (0 = never decays). */
typedef struct pd_acc_def {
    int event_type; /* -1 = any */
    int64_t half_life_ms;
    bool sum_value; /* false: count events; true: sum their values */
} pd_acc_def;

/* What each user carries; derived from the config, identical for every user of one store. */
typedef struct pd_user_layout {
    size_t n_types;
    pd_acc_def *acc;
    size_t n_acc;
    int *sketch_type; /* per distinct-items sketch: its event type or -1 */
    size_t n_sketch;
    size_t ring_items;    /* recent items kept */
    uint32_t label_types; /* bit mask of types that resolve labels (kept in the label ring) */
} pd_user_layout;

typedef struct pd_acc {
    double value;
    int64_t ts_ms; /* time value is expressed at */
} pd_acc;

typedef struct pd_label_event {
    int64_t ts_ms;
    uint32_t item_hash;
    int32_t type;
} pd_label_event;

struct pd_pending;

/* A user's waiting examples. The label join (pipeline/labels.c) is the only reader and writer;
 * the store zeroes it when it makes a user and never looks at it. */
typedef struct pd_user_pending {
    struct pd_pending *first; /* oldest first */
    struct pd_pending *last;
    uint32_t count;
} pd_user_pending;

typedef struct pd_user {
    uint64_t hash;
    char *id; /* NUL-terminated, id_len bytes */
    uint32_t id_len;
    uint64_t events;
    int64_t first_ts_ms;
    int64_t last_ts_ms;       /* any type; INT64_MIN before the first event */
    int64_t *last_ts_by_type; /* [n_types], INT64_MIN = never */
    pd_acc *acc;              /* [n_acc] */
    uint64_t *sketch;         /* [n_sketch][PD_SKETCH_BITS / 64] */
    uint32_t *ring;           /* [ring_items] item hashes, newest at ring_head - 1 */
    uint32_t ring_head, ring_len;
    pd_label_event labels[PD_LABEL_RING];
    uint32_t labels_head, labels_len;
    pd_user_pending pending; /* the label join's */
    /* LRU list of the store, most recently seen first */
    struct pd_user *lru_prev, *lru_next;
    int64_t seen_ts_ms; /* event time of the last event that touched the user */
    /* the input partition its last event came from (the caller's number for it, e.g. topic
     * and partition; PD_SHARD_NONE when not known): whose state it is when partitions move
     * between instances */
    uint32_t shard;
    bool body_inline;   /* the arrays share the record's block (until a relayout) */
    uint32_t bytes;     /* memory this user holds, for the store's running total */
} pd_user;

#define PD_SHARD_NONE UINT32_MAX

typedef struct pd_user_state pd_user_state;

/* Takes a copy of layout. */
pd_user_state *pd_user_state_new(const pd_user_layout *layout, char *errbuf, size_t errlen);
void pd_user_state_free(pd_user_state *st);

const pd_user_layout *pd_user_state_layout(const pd_user_state *st);

/* 64-bit hash of a user id as the store uses it (stable across runs and builds). */
uint64_t pd_user_hash(const char *id, size_t len);

pd_user *pd_user_state_find(pd_user_state *st, const char *id, size_t len);

/* Finds or creates the user and marks it most recently seen. Returns NULL only when out of
 * memory. *ret_created tells whether it is new (may be NULL). */
pd_user *pd_user_state_get(pd_user_state *st, const char *id, size_t len, int64_t ts_ms,
                           bool *ret_created);

/* Folds one event into the user: last times, accumulators, sketches, ring, label ring. */
void pd_user_state_apply(pd_user_state *st, pd_user *u, int type, int64_t ts_ms, uint32_t item_hash,
                         bool has_item, double value, bool has_value);

/* Value of accumulator i of u at time ts_ms (decayed to it; never into the future). */
double pd_user_acc_value(const pd_user_state *st, const pd_user *u, size_t i, int64_t ts_ms);

/* Estimated distinct items in sketch i of u. */
double pd_user_sketch_estimate(const pd_user *u, size_t i);

/* Removes the user. The caller must have released its pending examples first. */
void pd_user_state_remove(pd_user_state *st, pd_user *u);

/* The least recently seen user, or NULL when empty (for eviction). */
pd_user *pd_user_state_oldest(pd_user_state *st);

size_t pd_user_state_count(const pd_user_state *st);
size_t pd_user_state_memory(const pd_user_state *st);
/* Bytes one user takes beyond its id, for `check` and replay reports. */
size_t pd_user_state_bytes_per_user(const pd_user_layout *layout);

/* Visits every user, least recently seen first (the order a restore must recreate). */
typedef int (*pd_user_visit_fn)(void *ctx, pd_user *u);
int pd_user_state_each(pd_user_state *st, pd_user_visit_fn fn, void *ctx);

/* Changes every user to a new layout in place (pd_user addresses stay valid), carrying over
 * what the two layouts share: types by index, accumulators and sketches by definition, the
 * ring's newest items. On failure nothing changes. */
int pd_user_state_relayout(pd_user_state *st, const pd_user_layout *layout, char *errbuf,
                           size_t errlen);

/* Snapshot support: the users' records in a compact binary form (pending examples are
 * written by the label join). */
int pd_user_state_save(const pd_user_state *st, pd_bin_writer *w);
/* Loads saved users; a user already in the store takes the saved record (its waiting
 * examples are the caller's to drop first). */
int pd_user_state_load(pd_user_state *st, pd_bin_reader *r, char *errbuf, size_t errlen);

/* Which users a partial save takes. */
typedef bool (*pd_user_filter_fn)(void *ctx, const pd_user *u);
/* The users section with only the users keep() takes (the same format, so
 * pd_user_state_load() reads it); how many into *ret_n when given. */
int pd_user_state_save_some(const pd_user_state *st, pd_user_filter_fn keep, void *ctx,
                            pd_bin_writer *w, uint64_t *ret_n);

#endif

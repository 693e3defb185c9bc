/* Item popularity for a recommender: every item's weight of interactions, all-time and decayed
 * exponentially in event time, and the items most popular by each, kept up to date on every
 * interaction so a lookup never scans the catalogue. Items are the recommender's slots.
 *
 * Decay is kept as a log-sum: key = log2(sum of weight * 2^(t / half_life)) over the item's
 * interactions, which ranks items exactly as their decayed popularity at any time would (the
 * same factor divides them all) and does not depend on the order events arrive in. So an item
 * nobody touches keeps its key, and only the item of an interaction can change rank.
 * Not synchronised. */
#ifndef PD_POPULARITY_H
#define PD_POPULARITY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/binio.h"

typedef struct pd_popularity pd_popularity;

/* half_life_ms > 0; list_len: items each ranking keeps in order (>= 1). */
pd_popularity *pd_popularity_new(int64_t half_life_ms, size_t list_len);
void pd_popularity_free(pd_popularity *p);

/* Room for slots [0, n_slots); new slots hold no item. 0 or -ENOMEM. */
int pd_popularity_reserve(pd_popularity *p, size_t n_slots);

/* An interaction of weight (> 0) with the item in slot at ts_ms. Returns 1 when every slot's
 * relative value changed (the reference moved up, which keys growing with time make it do
 * every REL_RANGE half-lives or so), else 0: a caller that keeps a copy of them knows when
 * to copy all of them rather than slot's. */
int pd_popularity_add(pd_popularity *p, uint32_t slot, double weight, int64_t ts_ms);

/* The item in slot is gone: its counts are dropped and it leaves both rankings. */
void pd_popularity_remove(pd_popularity *p, uint32_t slot);

/* The most popular items first, up to list_len of them: decayed (recent = true) or all-time;
 * ties go to the lower slot. Valid until the next change. */
size_t pd_popularity_top(const pd_popularity *p, bool recent, const uint32_t **ret_slots);

/* Decayed popularity of every slot relative to a reference (0 for no item), and the largest
 * of them: value[s] / max is slot s's decayed popularity as a share of the top item's. */
const float *pd_popularity_relative(const pd_popularity *p, float *ret_max);

/* All-time weight of slot. */
double pd_popularity_total(const pd_popularity *p, uint32_t slot);

size_t pd_popularity_memory(const pd_popularity *p);

/* Counts of every slot below n_slots (which must be what was reserved); load rebuilds the
 * rankings. */
void pd_popularity_save(const pd_popularity *p, size_t n_slots, pd_bin_writer *w);
int pd_popularity_load(pd_popularity *p, size_t n_slots, pd_bin_reader *r);

#endif

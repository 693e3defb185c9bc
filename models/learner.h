/* Online generalised linear models over hashed sparse features: logistic, linear (squared or
 * Huber loss) and hinge, learned with FTRL-Proximal, AdaGrad or SGD, and logistic models with
 * FTRL-Proximal at several alphas side by side (ftrl_multi). A learner owns its weight table
 * and optimizer state; it knows nothing of events, Kafka or Redis. */
#ifndef PD_LEARNER_H
#define PD_LEARNER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/binio.h"
#include "config/config.h"
#include "models/sparse.h"

typedef struct pd_learner pd_learner;

/* ftrl_multi's lanes: FTRL-Proximal learners at alpha 10^((k - 1) / 2) for k = 0..3 (alpha /
 * sqrt(10) to 10 alpha in half-decade steps), side by side in one table entry. */
#define PD_LEARNER_LANES 4

/* What the learner does, beyond the formulas (in learner.c and the python reference):
 *  - Threads: a learner is not synchronised. learn(), set_conf() and free() need it alone;
 *    predict(), prefetch(), weight(), get_stats() and save() only read and may run together
 *    while nothing writes.
 *  - The intercept (conf.intercept) is one coordinate outside the hashed table, value 1, same
 *    optimizer, never regularised by l1 or l2. l1 is FTRL's only; AdaGrad and SGD ignore it.
 *    L2 decays only the coordinates an example touches, once per update, whatever the
 *    importance weight.
 *  - Index = hash & (2^bits - 1): colliding features share a weight; a hash that occurs twice
 *    in one example updates twice.
 *  - Non-finite feature values, labels or importance weights: predict() takes such a value as
 *    0; learn() skips the whole update and counts it in stats.nonfinite. importance <= 0 makes
 *    learn() a predict(). Outputs are never NaN or infinite.
 *  - stats.clipped counts learn() calls whose margin was clipped (predict() clips silently).
 *  - Admission (admission_min_count N > 0, N <= 255): one saturating byte per table entry counts
 *    the learn() occurrences of an entry that has no state yet; it predicts and learns from the
 *    N-th on. Colliding features are admitted together, as they share the weight anyway.
 *  - weights: f16 stores bfloat16 with stochastic rounding (learner.c says why), half the
 *    memory of f32; the intercept stays float32.
 *  - Memory: 2^bits entries of pd_learner_bytes_per_weight() bytes (FTRL 16, AdaGrad 8,
 *    SGD 4, ftrl_multi 32; halved for f16; +1 with admission), allocated zeroed and backed only
 *    as touched (tables of 2 MiB or more are mapped and advised for transparent huge pages).
 *  - ftrl_multi (logistic only): PD_LEARNER_LANES FTRL-Proximal learners, each learning from
 *    its own prediction as if alone, sharing beta, l1, l2 and the intercept setting. The output
 *    is their predictions averaged with weights that follow each lane's progressive log loss
 *    (learner.c has the rule); so are learn()'s return value and the progressive metrics.
 *    predict() and learn() do every lane in one pass over x. weight() and intercept() are those
 *    of the lane with the largest mixture weight. stats.clipped counts a learn() when any lane's
 *    margin was clipped. */

typedef struct pd_learner_stats {
    uint64_t updates;      /* learn() calls that changed weights */
    uint64_t nonfinite;    /* updates skipped because a gradient or weight was not finite */
    uint64_t clipped;      /* margins clipped to +-max_abs_margin */
    uint64_t not_admitted; /* feature occurrences that were not yet admitted */
    /* entries with a non-zero weight (ftrl_multi: in any lane, counted by a scan of the table,
     * as its update does not track them) */
    uint64_t weights_nonzero;
} pd_learner_stats;

/* Returns NULL and a message in errbuf when conf is out of range. */
pd_learner *pd_learner_new(const pd_learner_conf *conf, char *errbuf, size_t errlen);
void pd_learner_free(pd_learner *learner);

/* Output for x: a probability (logistic), a value (linear) or a margin (hinge). Never NaN. */
double pd_learner_predict(const pd_learner *learner, const pd_feature *x, size_t n);

/* Learns one example; label is 0/1 for logistic and hinge, a value for linear. importance
 * scales the gradient (1 = plain). Returns the prediction made before the update
 * (progressive validation). */
double pd_learner_learn(pd_learner *learner, const pd_feature *x, size_t n, double label,
                        double importance);

/* Starts loading the table entries x will touch, without waiting for them. Call it for the
 * next example before predict()/learn() of the current one: the entries' cache misses then
 * overlap with this example's arithmetic instead of adding to the next one. Optional; reads
 * nothing, changes nothing. */
void pd_learner_prefetch(const pd_learner *learner, const pd_feature *x, size_t n);

/* (For FTRL and each lane of ftrl_multi, whose weights follow from z and n, new alpha, beta, l1
 * or l2 re-express every z so that each weight stays as it was: one pass over the table; the
 * mixture weights stay. Switching admission on starts counting from then; switching it off
 * frees the counters.) */
/* Takes new hyper-parameters (rates, L1/L2, margins) without touching the weights. Refuses
 * (-EINVAL) a change of type, loss, optimizer, bits or weight format: those need a new learner. */
int pd_learner_set_conf(pd_learner *learner, const pd_learner_conf *conf);

void pd_learner_get_stats(const pd_learner *learner, pd_learner_stats *ret_stats);

/* ftrl_multi's lanes: each one's alpha and mixture weight (the weights sum to 1). Returns the
 * number of lanes (PD_LEARNER_LANES), 0 for the other optimizers, which leave the arrays alone.
 * Cheap: for metrics rendered often. */
size_t pd_learner_mixture(const pd_learner *learner, double ret_alpha[PD_LEARNER_LANES],
                          double ret_weight[PD_LEARNER_LANES]);

/* Table entries that hold any state (some example touched them). A scan of the whole table:
 * for reports, not for the hot path. */
size_t pd_learner_occupied(const pd_learner *learner);

/* Hash-collision estimates for a table of 2^bits entries: the number of distinct features
 * that would leave `occupied` entries in use, and the share of n distinct features that share
 * their entry with at least one other. */
double pd_hash_distinct_estimate(size_t occupied, int bits);
double pd_hash_collision_rate(double distinct, int bits);

/* Bytes of weight and optimizer state, and bytes per weight-table entry. */
/* (pd_learner_memory() counts the table at its full size, whether touched or not, and the
 * admission counters; pd_learner_bytes_per_weight() includes the counter byte.) */
size_t pd_learner_memory(const pd_learner *learner);
size_t pd_learner_bytes_per_weight(const pd_learner_conf *conf);

/* Checks conf the way pd_learner_new() does, without allocating: 0, or -EINVAL and the reason in
 * errbuf (e.g. "ftrl beta must be > 0"). For `propensityd check` and reload validation. */
int pd_learner_check_conf(const pd_learner_conf *conf, char *errbuf, size_t errlen);

/* The weight the coordinate of hash has now (what one unit of its value adds to the margin), and
 * the intercept's weight (0 without one). For tests and introspection; not for the hot path. */
double pd_learner_weight(const pd_learner *learner, uint32_t hash);
double pd_learner_intercept(const pd_learner *learner);

/* Serialises weights, optimizer state, admission counts, the update counter SGD's schedule needs,
 * ftrl_multi's mixture weights, the stats and the hyper-parameters they were learned under, in a
 * little-endian binary form (the format is described in learner.c). Checksums and atomic files are
 * the snapshot module's job. Returns 0 or -errno (-EIO when a write fails). */
int pd_learner_save(const pd_learner *learner, pd_bin_writer *w);

/* Reads what pd_learner_save() wrote, in this version's format or the previous one (which had no
 * ftrl_multi), into a new learner for conf. Type, loss, optimizer, bits and weight format must
 * match what was saved (else NULL and the reason in errbuf); differing hyper-parameters are taken
 * as pd_learner_set_conf() would take them, so predictions right after loading are those of the
 * saved learner. Reads exactly the saved bytes from in. */
pd_learner *pd_learner_load(const pd_learner_conf *conf, pd_bin_reader *r, char *errbuf,
                            size_t errlen);

/* ---- model sync: instances that split a stream exchange what each learned ----
 * learner.c ("model sync") says what a delta holds and why it adds up across instances. In
 * short: FTRL's z and n, AdaGrad's w and G, SGD's w, ftrl_multi's z and n per lane and the
 * change of its log mixture weights, the intercept's the same way; float32 deltas, the
 * bfloat16 table rounding them stochastically as learn() does. Counters, the SGD schedule's
 * update count and admission counts stay local. */

/* Starts capturing what learn() changes (idempotent): a bit per table entry, and the state of
 * each entry an example touches, recorded before its first update since the last seal.
 * 0 or -ENOMEM. */
int pd_learner_delta_start(pd_learner *learner);
bool pd_learner_delta_capturing(const pd_learner *learner);
/* Call before learning x (nothing while not capturing). */
void pd_learner_delta_mark(pd_learner *learner, const pd_feature *x, size_t n);
/* Seals what was learned since the last seal (or the start) as the delta to send, and starts
 * the next one from the state now. Returns its entries; *ret_any says whether anything at all
 * changed (the intercept or the mixture may change without an entry). */
size_t pd_learner_delta_seal(pd_learner *learner, bool *ret_any);
/* Writes one part of the sealed delta, entries *pos.. as many as fit in max_bytes, and moves
 * *pos past them; the part at *pos 0 carries the intercept and mixture too. The delta is sent
 * whole when *pos reaches the count the seal returned. 0 or -errno (-EMSGSIZE: max_bytes holds
 * no entry). */
int pd_learner_delta_write(const pd_learner *learner, pd_bin_writer *w, size_t *pos,
                           size_t max_bytes);
/* Adds a part another instance's learner of the same optimizer and bits wrote. Reads it whole
 * before changing anything: a truncated or malformed part changes nothing and returns -EINVAL
 * with the reason in errbuf (-ENOMEM when out of memory). An entry whose sum would not fit the
 * storage keeps its state (counted in stats.nonfinite). */
int pd_learner_delta_apply(pd_learner *learner, pd_bin_reader *r, char *errbuf, size_t errlen);
/* The delta-domain state of the entry of hash (or of the intercept) into ret (room for 8),
 * e.g. FTRL's z and n; returns how many values. For tests. */
size_t pd_learner_delta_values(const pd_learner *learner, uint32_t hash, bool intercept,
                               double *ret);
/* Marks dropped for want of memory (what those entries learned is not sent). */
uint64_t pd_learner_delta_lost(const pd_learner *learner);

#endif

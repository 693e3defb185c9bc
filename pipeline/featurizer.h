/* Features: turns an event and its user's state into the hashed sparse vector the pipeline
 * YAML describes (categorical, numeric with transforms and online standardisation, buckets,
 * crosses, text tokens, user-state counters). Owns the state features learn as they go
 * (running means and variances, vocabularies) and the per-event buffer. */
#ifndef PD_FEATURIZER_H
#define PD_FEATURIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/binio.h"
#include "config/config.h"
#include "models/sparse.h"
#include "pipeline/event.h"
#include "pipeline/user_state.h"

typedef struct pd_featurizer pd_featurizer;

/* field_slot[i]: index into pd_event.fields of feature i's source field, or -1 for features
 * without one. Copies what it needs from conf. */
pd_featurizer *pd_featurizer_new(const pd_config *conf, const int *field_slot, char *errbuf,
                                 size_t errlen);
void pd_featurizer_free(pd_featurizer *f);

/* The per-user state the features need (accumulators, sketches, ring); label_types is left 0
 * for the caller. Pointers stay valid for the featurizer's lifetime. */
const pd_user_layout *pd_featurizer_layout(const pd_featurizer *f);

/* What the user looked like before the event was applied: recency needs the previous times. */
typedef struct pd_user_before {
    int64_t last_ts_ms; /* INT64_MIN = no earlier event */
    int64_t last_ts_by_type[PD_MAX_EVENT_TYPES];
} pd_user_before;

void pd_user_before_capture(const pd_user *u, size_t n_types, pd_user_before *ret_before);

/* Computes every feature for ev. u is the user's state with ev already applied (so counts
 * include the event); before is what u was without it. learn: whether running normalisers and
 * vocabularies take this event in (false for read-only scoring). Results stay until the next
 * build. */
void pd_featurizer_build(pd_featurizer *f, const pd_event *ev, const pd_user_state *st,
                         const pd_user *u, const pd_user_before *before, bool learn);

/* Concatenates the built features listed in idx into out; returns how many were written.
 * out must have room for pd_featurizer_max_nnz(f, idx, n). */
size_t pd_featurizer_gather(const pd_featurizer *f, const int *idx, size_t n, pd_feature *out);
size_t pd_featurizer_max_nnz(const pd_featurizer *f, const int *idx, size_t n);

/* The built coordinates of one feature. */
const pd_feature *pd_featurizer_get(const pd_featurizer *f, int feature, size_t *ret_n);

/* 32-bit feature hash of a categorical value of the named feature (stable across runs,
 * builds and hosts: xxHash XXH3 64-bit, seeded with the XXH3 hash of the feature name). */
uint32_t pd_feature_hash(const char *feature, const char *value, size_t len);

/* Carries learned feature state (normalisers, vocabularies) of features whose definition is
 * unchanged from old into f; used on reload. */
void pd_featurizer_adopt(pd_featurizer *f, const pd_featurizer *old);

int pd_featurizer_save(const pd_featurizer *f, pd_bin_writer *w);
int pd_featurizer_load(pd_featurizer *f, pd_bin_reader *r, char *errbuf, size_t errlen);

/* How often a field-based feature (categorical, numeric, text) found nothing usable in its
 * JSON path, over the events built with learn since the featurizer was made. */
typedef struct pd_feature_coverage {
    uint64_t events;
    uint64_t missing;    /* the path is absent or null */
    uint64_t wrong_type; /* present, but of a type the feature cannot use */
} pd_feature_coverage;

/* Fills *ret_cov for feature i (config order) and returns true; false for features that read
 * no field. */
bool pd_featurizer_coverage(const pd_featurizer *f, size_t i, pd_feature_coverage *ret_cov);

#endif

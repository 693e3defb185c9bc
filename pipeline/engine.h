/* The pipeline engine: decode -> user state -> features -> models -> label joins, for one
 * event at a time, with no Kafka, Redis or wall clock inside (the daemon and the offline replay
 * run the same engine, and the same events give the same numbers). Owns the decoder, the user
 * store, the featurizer, the learners, their metrics and the pending examples. */
#ifndef PD_ENGINE_H
#define PD_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "config/config.h"
#include "models/model.h"
#include "models/snapshot.h"
#include "pipeline/event.h"
#include "pipeline/featurizer.h"
#include "pipeline/labels.h"

typedef struct pd_engine pd_engine;

typedef struct pd_score {
    int model;
    double value;
} pd_score;

/* What one event produced; pointers are valid until the next call on the engine. */
typedef struct pd_engine_result {
    const char *user;
    size_t user_len;
    int64_t ts_ms;
    const pd_score *scores; /* one per published model whose quality gate is open */
    size_t n_scores;
    bool forgotten; /* the event was a forget request: the user is gone */
} pd_engine_result;

typedef struct pd_engine_stats {
    uint64_t events;
    uint64_t events_by_type[PD_MAX_EVENT_TYPES];
    uint64_t decode_errors[PD_DECODE__COUNT];
    uint64_t users;
    uint64_t users_evicted;
    uint64_t forgotten;
    uint64_t users_handed_out; /* given to the next owner of their partition */
    uint64_t users_handed_in;  /* taken over from the last owner of their partition */
    int64_t max_event_ts_ms; /* INT64_MIN before the first event */
    int64_t watermark_ms;
    pd_labels_stats labels;
    size_t memory_users;
    size_t memory_pending;
    size_t memory_models;
} pd_engine_stats;

typedef struct pd_model_info {
    const char *name;
    const char *output;
    const char *kind;            /* the model kind's name ("glm") */
    pd_model_output output_kind; /* what the published value is */
    uint64_t generation;         /* bumps when the model's configuration changes */
    uint64_t examples;           /* labelled examples learned */
    uint64_t positives;
    uint64_t predictions; /* scores computed */
    /* examples dropped by watermark.max_pending_per_user / max_pending_total before their
     * label resolved: never learned */
    uint64_t evicted_user, evicted_total;
    bool gate_open; /* publishing (quality gate passed or off) */
    size_t memory;
    /* the model's own figures (progressive metrics), in a fixed order per model */
    pd_model_metric figures[PD_MODEL_MAX_METRICS];
    size_t n_figures;
} pd_model_info;

/* A figure of info by name, NaN when the model has none of that name. */
double pd_model_info_figure(const pd_model_info *info, const char *name);

pd_engine *pd_engine_new(const pd_config *conf, char *errbuf, size_t errlen);
void pd_engine_free(pd_engine *eng);

/* Decodes one message with the engine's field mapping; counts failures by reason. */
pd_decode_error pd_engine_decode(pd_engine *eng, const char *buf, size_t len,
                                 int64_t fallback_ts_ms, pd_event *ret_event, char *detail,
                                 size_t detail_len);

/* Runs one decoded event through the pipeline. Returns 0, or -ENOMEM (the event's effects may
 * be partial; counters say so). *ret_result is filled either way; after a failure it holds
 * the event's user and time and no scores. */
int pd_engine_process(pd_engine *eng, const pd_event *ev, pd_engine_result *ret_result);

/* Applies a new configuration without losing learned state: models whose fingerprint is
 * unchanged keep their weights and metrics (new hyper-parameters take effect), changed ones
 * start fresh and are named in *ret_fresh (a message for the log; may be empty). The caller
 * keeps ownership of conf. On failure nothing changes. */
int pd_engine_reconfigure(pd_engine *eng, const pd_config *conf, char *ret_fresh, size_t fresh_len,
                          char *errbuf, size_t errlen);

/* Event-time sources. Events of one source (a Kafka partition) arrive in about time order, but
 * sources are read in batches, so one may run hours ahead of another while a backlog is caught
 * up. The watermark is therefore the lowest of the sources' highest event times (minus the
 * allowed lateness), counting only sources that still have events to deliver: a caught-up
 * source is marked idle by its reader and stops holding the watermark back until its next
 * event. It never moves backwards. With one source this is the brief's "highest event time
 * seen minus allowed lateness". */
/* Declares a source (a newly assigned partition with events waiting holds the watermark until
 * its first event) or marks it idle / busy. */
void pd_engine_source_idle(pd_engine *eng, uint32_t source, bool idle);
/* Forgets a source (its partition was revoked). */
void pd_engine_source_remove(pd_engine *eng, uint32_t source);

/* Removes a user's state and waiting examples. Returns whether the user was known. */
bool pd_engine_forget(pd_engine *eng, const char *user, size_t len);

/* Field coverage of feature i (config order): false for features that read no field. */
bool pd_engine_feature_coverage(const pd_engine *eng, size_t i, pd_feature_coverage *ret_cov);

/* Whether every event is scored by every model (on by default). Scoring changes no learned
 * state, so an offline replay that needs no scores turns it off and learns the same. */
void pd_engine_set_scoring(pd_engine *eng, bool scoring);

/* Off by default. While on and not scoring, an example labelled by its own event (value_from)
 * has its weights prefetched and is learned at the engine's next call that changes anything
 * (the next pd_engine_process(), a reload, ...), not before it returns: the cache misses then
 * overlap with the caller decoding the next event. Learning order, and so every learned
 * figure, is unchanged; only its moment moves. The read-only calls (model info, stats,
 * pd_engine_save()) do not learn it: call pd_engine_flush() before reading figures. */
void pd_engine_set_deferred_learning(pd_engine *eng, bool defer);
/* Learns a deferred example now (nothing when none waits). */
void pd_engine_flush(pd_engine *eng);

/* Sees every example as a model learns it: its features, the prediction made just before
 * learning, the label and the weight (for replay reports and example exports). */
typedef void (*pd_label_observer_fn)(void *ctx, int model, const pd_feature *x, size_t n,
                                     double prediction, double label, double weight);
void pd_engine_set_label_observer(pd_engine *eng, pd_label_observer_fn fn, void *ctx);

/* ---- models of lists (a recommender) ----
 * They learn from every event that names an item and publish nothing per event: the caller
 * asks them for the lists that changed. */

/* How they judge their lists (models/model.h, set_evaluation): live (rescored at each
 * evaluation: replay) or as last refreshed (the daemon, the default); baselines too; fn, when
 * not NULL, sees every evaluation with the model's index. Applies to models a reload starts. */
typedef void (*pd_list_observer_fn)(void *ctx, int model, const pd_list_eval *ev);
void pd_engine_set_list_evaluation(pd_engine *eng, bool live, bool baselines,
                                   pd_list_observer_fn fn, void *ctx);

/* Rescores up to budget of model i's lists that are due (now_ms: the clock limits.refresh
 * counts in) and hands them to sink. Returns how many users it rescored (0 for a model that
 * keeps no lists). */
size_t pd_engine_refresh_lists(pd_engine *eng, size_t i, int64_t now_ms, const pd_list_sink *sink,
                               size_t budget);

/* A user's list from model i as it would be served now (up to max items, best first; the
 * pointers are valid until the next call on the engine); 0 for an unknown user. */
size_t pd_engine_user_list(pd_engine *eng, size_t i, const char *user, size_t len,
                           const char **items, size_t *item_lens, float *scores, size_t max);

uint64_t pd_engine_generation(const pd_engine *eng);
void pd_engine_get_stats(const pd_engine *eng, pd_engine_stats *ret_stats);
size_t pd_engine_model_count(const pd_engine *eng);
void pd_engine_model_info(const pd_engine *eng, size_t i, pd_model_info *ret_info);
/* The same with the figures that need a scan of the model's state (table use, collision
 * estimates): for reports, not for every metrics render. */
void pd_engine_model_report(const pd_engine *eng, size_t i, pd_model_info *ret_info);

/* Scores a known user from its state alone (no event fields), for the control plane's
 * `score USER` (models of lists are left out: pd_engine_user_list()); fills up to max scores
 * and returns how many, or -ENOENT for an unknown user. */
int pd_engine_score_user(pd_engine *eng, const char *user, size_t len, pd_score *scores,
                         size_t max);

/* Writes everything the engine has learned as sections of w: engine counters, feature
 * state, users, pending examples, and one section per model (weights, optimizer state,
 * metrics). */
int pd_engine_save(const pd_engine *eng, pd_snapshot_writer *w, char *errbuf, size_t errlen);

/* Restores a fresh engine (nothing processed yet) from s. Models whose fingerprint differs
 * from the saved one (features, bits, type or optimizer changed) or that are new start fresh
 * and are named in *ret_fresh; the others continue where they were. */
int pd_engine_load(pd_engine *eng, const pd_snapshot *s, char *ret_fresh, size_t fresh_len,
                   char *errbuf, size_t errlen);

/* Only what models learned (feature state and every model's section), for an instance joining
 * a group from the snapshot another member published: no users, pending examples or engine
 * counters, and the models' example counters start at 0 (their own progressive metrics are
 * the writer's). Models that do not match start fresh and are named in *ret_fresh. */
int pd_engine_load_models(pd_engine *eng, const pd_snapshot *s, char *ret_fresh, size_t fresh_len,
                          char *errbuf, size_t errlen);

/* ---- handing users over between instances ----
 * A user belongs to the shard of its last event (pd_event.shard: the caller's number for a
 * partition). When a partition moves to another instance, its old owner writes the users of
 * its shard, with their waiting examples, for the new owner to take over: learned weights
 * stay where they are, the user state moves. */

/* Writes the users of the shards and their waiting examples to f (a handover blob); counts
 * them into *ret_users. Changes nothing: pd_engine_drop_shards() once the blob is safe. */
int pd_engine_hand_out(pd_engine *eng, const uint32_t *shards, size_t n_shards, FILE *f,
                       uint64_t *ret_users, char *errbuf, size_t errlen);
/* Removes the users of the shards, their waiting examples counted as handed out; how many. */
uint64_t pd_engine_drop_shards(pd_engine *eng, const uint32_t *shards, size_t n_shards);
/* Removes the users of every other shard (users of no known shard stay) and their waiting
 * examples, counted as dropped: what a snapshot restored of partitions another member owns
 * now. Returns how many. */
uint64_t pd_engine_keep_shards(pd_engine *eng, const uint32_t *shards, size_t n_shards);
/* Takes over a handover blob: the users held here of its shards go (they are older), its
 * users and their examples come in (behind the examples waiting here). */
int pd_engine_take_over(pd_engine *eng, FILE *f, uint64_t *ret_users, char *errbuf,
                        size_t errlen);

/* ---- for the control plane (daemon/ops) ---- */

/* What the engine knows of one user, for `score USER`. Pointers are valid until the next call
 * on the engine. */
typedef struct pd_user_info {
    uint64_t events;
    int64_t first_ts_ms;
    int64_t last_ts_ms;
    const int64_t *last_ts_by_type; /* [n_types], INT64_MIN = never */
    size_t n_types;
    uint32_t pending; /* examples waiting for their label */
    uint32_t recent_items;
    /* the decayed counters and sums (features' accumulators, in the store's layout order),
     * each expressed at its own time */
    const pd_acc *acc;
    size_t n_acc;
} pd_user_info;

/* Fills *ret_info for a known user; -ENOENT when the user is unknown (never seen, forgotten
 * or evicted). Read-only: the user is not marked as recently seen. */
int pd_engine_user_info(pd_engine *eng, const char *user, size_t len, pd_user_info *ret_info);

/* ---- model sync (pipeline/model_sync.c carries the parts between instances) ----
 * A part is one model's delta, or a piece of it: str name, u64 fingerprint, then the model's
 * own bytes (models/model.h, delta_*). Only models whose kind has delta ops take part. */

/* A part, valid during the call; returns 0 or a negative errno, which stops the collection. */
typedef int (*pd_delta_part_fn)(void *ctx, const void *bytes, size_t len);

/* Seals every syncable model's delta since the last collect and hands it to fn in parts of at
 * most max_bytes. A model not yet capturing (the first collect, or one a reload started)
 * starts now and sends from the next collect. fn NULL drops the parts (the first collect, to
 * start capturing). Returns the number of parts, or a negative errno (the reason in errbuf). */
int pd_engine_delta_collect(pd_engine *eng, size_t max_bytes, pd_delta_part_fn fn, void *ctx,
                            char *errbuf, size_t errlen);

/* What became of a part. */
typedef enum pd_delta_outcome {
    PD_DELTA_APPLIED,
    PD_DELTA_UNKNOWN_MODEL, /* no model of that name here */
    PD_DELTA_FINGERPRINT,   /* a model of that name with another fingerprint */
    PD_DELTA_NOT_SYNCED,    /* a model whose kind exchanges nothing */
} pd_delta_outcome;

/* Adds one part another instance collected. Returns a pd_delta_outcome, or -EINVAL for a
 * truncated or malformed part (nothing changed; the reason in errbuf) or -ENOMEM. */
int pd_engine_delta_apply(pd_engine *eng, const void *bytes, size_t len, char *errbuf,
                          size_t errlen);

/* Model i's scores of max fixed synthetic feature vectors: vector k holds every max-th hash
 * from k on (65536 of them, value 1/64), so together they read every weight of a table of up to
 * 65536 max entries, and two instances' models can be compared (the same state gives the same
 * figures) without dumping them. Returns max (0 for a model of lists). */
size_t pd_engine_model_probe(pd_engine *eng, size_t i, double *out, size_t max);

#endif

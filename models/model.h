/* One interface for every kind of model. The engine holds, per configured model, an opaque
 * state and a table of functions (as librdkafka drives its assignors or PipeWire its SPA
 * plugins) and knows no kind by name: a new kind is a new file with its own table, listed in
 * model.c. Models know nothing of events, Kafka or Redis: they get feature vectors, labelled
 * examples and interactions, and give back scores, metrics and snapshot sections.
 *
 * Threads: a model is not synchronised; the engine calls it from one thread. */
#ifndef PD_MODEL_H
#define PD_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/binio.h"
#include "config/config.h"
#include "models/sparse.h"

/* What a model's published value is, so reports read it right (a probability has a log loss
 * and a calibration, a value an RMSE, a margin neither). */
typedef enum pd_model_output {
    PD_OUTPUT_PROBABILITY,
    PD_OUTPUT_VALUE,
    PD_OUTPUT_MARGIN,
    PD_OUTPUT_LIST, /* a list of items per user (a recommender) */
} pd_model_output;

/* An event a model learns from directly (a recommender's interactions): the engine hands it
 * every event that names an item, and the model decides what it means. */
typedef struct pd_interaction {
    const char *user;
    size_t user_len;
    const char *item;
    size_t item_len;
    int type;
    int64_t ts_ms;
} pd_interaction;

/* Where a model's lists go when it refreshes them (the daemon's publisher). Items are best
 * first; pointers are valid during the call only. */
typedef struct pd_list_sink {
    void *ctx;
    /* a user's list replaces the one before */
    void (*user_list)(void *ctx, const char *user, size_t user_len, const char *const *items,
                      const size_t *item_lens, const float *scores, size_t n);
    /* the items most popular now, for users with nothing to go on */
    void (*popular)(void *ctx, const char *const *items, const size_t *item_lens,
                    const float *scores, size_t n);
    /* the items most often seen with item */
    void (*similar)(void *ctx, const char *item, size_t item_len, const char *const *items,
                    const size_t *item_lens, const float *scores, size_t n);
} pd_list_sink;

/* One progressive evaluation of a list (a recommender's): the rank the next item had in the
 * list served, 0 when it was not in it, and in each baseline's list, for reports. */
#define PD_MAX_BASELINES 3
typedef struct pd_list_eval {
    uint32_t rank;
    uint32_t baseline_rank[PD_MAX_BASELINES];
    size_t n_baselines;
} pd_list_eval;
typedef void (*pd_list_eval_fn)(void *ctx, const pd_list_eval *ev);

/* One figure a model reports: name (snake_case, stable: it becomes the Prometheus family
 * propensityd_model_<name>, the field of {prefix}:model:{name} and the key in replay's JSON),
 * a help line, and the value (NaN when there is nothing to judge yet). */
typedef struct pd_model_metric {
    const char *name;
    const char *help;
    double value;
} pd_model_metric;

/* Room a metrics() call may fill. */
#define PD_MODEL_MAX_METRICS 24

typedef struct pd_model_ops {
    const char *kind; /* for messages and snapshots: "glm" */

    /* Creates a model for conf (which it may keep pointers into only while the config lives:
     * copy what must survive a reload). NULL and the reason in errbuf on failure. */
    void *(*create)(const pd_model_conf *conf, char *errbuf, size_t errlen);
    void (*destroy)(void *state);

    /* What makes learned state meaningful beyond the features (the engine hashes those): a
     * model whose fingerprint changes on reload starts fresh. */
    uint64_t (*fingerprint)(const pd_model_conf *conf);
    /* Takes new hyper-parameters of an unchanged fingerprint without losing what was learned.
     * Returns 0, or -ENOMEM and leaves the model as it was. */
    int (*reconfigure)(void *state, const pd_model_conf *conf);

    pd_model_output (*output)(const void *state);
    /* The model's score for a feature vector: what is published. */
    double (*predict)(const void *state, const pd_feature *x, size_t n);
    /* Starts loading what predict()/learn() of x will touch (optional; may be NULL). */
    void (*prefetch)(const void *state, const pd_feature *x, size_t n);
    /* Learns one labelled example (importance weight > 0); returns the prediction made just
     * before learning it (progressive validation), which the model also scores itself on. */
    double (*learn)(void *state, const pd_feature *x, size_t n, double label, double weight);
    /* Whether its scores may be published now (a quality gate may say no). */
    bool (*publishing)(const void *state);

    /* Fills up to max figures and returns how many. full: include what needs a scan of the
     * model's state (for reports, not for every metrics render). The names and their order
     * are fixed for the life of the model. */
    size_t (*metrics)(const void *state, bool full, pd_model_metric *out, size_t max);
    /* Bytes of learned state. */
    size_t (*memory)(const void *state);

    /* Snapshot section body (versioned by the model itself). load() restores into a model
     * just created for the same configuration what save() wrote; on failure it returns a
     * negative errno with the reason in errbuf and the model is as it was. */
    int (*save)(const void *state, pd_bin_writer *w);
    int (*load)(void *state, pd_bin_reader *r, char *errbuf, size_t errlen);

    /* ---- models of lists (NULL in a kind that scores feature vectors) ---- */

    /* Learns an interaction (and judges the user's list before it, progressively). Returns
     * whether it was one (its type has a weight and it was learned). */
    bool (*interact)(void *state, const pd_interaction *in);
    /* Rescores the lists that changed, up to budget users, and hands them to sink; now_ms is
     * the event time they are computed at. Returns how many users it rescored. */
    size_t (*refresh)(void *state, int64_t now_ms, const pd_list_sink *sink, size_t budget);
    /* A user's current list into items/item_lens/scores (max entries); how many. */
    size_t (*user_list)(void *state, const char *user, size_t len, const char **items,
                        size_t *item_lens, float *scores, size_t max);
    /* Drops what the model holds of a user (its vector, lists and history). */
    void (*forget)(void *state, const char *user, size_t len);
    /* How it judges lists: live (a user's list is rescored at each evaluation, as replay
     * does, deterministically) or as last refreshed (what a reader saw, as the daemon does);
     * baselines: also judge the baselines' lists (for reports). observer, when not NULL,
     * sees every evaluation. */
    void (*set_evaluation)(void *state, bool live, bool baselines, pd_list_eval_fn observer,
                           void *ctx);

    /* ---- model sync (optional: NULL in a kind whose state is not exchanged) ----
     * Instances splitting a stream exchange deltas of what each learned (pipeline/model_sync.c,
     * README "Scale-out"); a kind says what a delta holds and why deltas add up (models/
     * learner.c for the GLM). Models of lists leave these NULL: each instance's lists come from
     * its own users. Counters and metrics are never exchanged. */

    /* Starts capturing what learning changes (idempotent; costs nothing until called).
     * 0 or -ENOMEM. */
    int (*delta_start)(void *state);
    /* Seals what was learned since the last seal as the delta to send; returns whether there
     * is anything to send. */
    bool (*delta_seal)(void *state);
    /* Writes the sealed delta's part starting at *pos, at most max_bytes, and moves *pos on;
     * returns 1 when more parts follow, 0 after the last, or a negative errno. */
    int (*delta_write)(const void *state, pd_bin_writer *w, size_t *pos, size_t max_bytes);
    /* Adds one part another instance's model of the same fingerprint wrote. A malformed part
     * changes nothing: negative errno and the reason in errbuf. */
    int (*delta_apply)(void *state, pd_bin_reader *r, char *errbuf, size_t errlen);
} pd_model_ops;

/* The table of the kind conf asks for. */
const pd_model_ops *pd_model_ops_for(const pd_model_conf *conf);

#endif

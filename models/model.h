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
} pd_model_output;

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
} pd_model_ops;

/* The table of the kind conf asks for. */
const pd_model_ops *pd_model_ops_for(const pd_model_conf *conf);

#endif

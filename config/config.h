/* The pipeline configuration as loaded from YAML: a read-only tree that every other layer reads.
 * pd_config_load() parses, expands ${ENV} references, validates and reports every error with
 * file:line:column; the result is immutable and swapped whole on reload. This is the bottom layer:
 * it includes nothing of pipeline/, models/ or daemon/. */
#ifndef PD_CONFIG_H
#define PD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/log_level.h"

#define PD_MAX_EVENT_TYPES 32
#define PD_MAX_MODELS      64 /* checked by the loader; every layer may size tables by it */
#define PD_MAX_CROSS       3
#define PD_MAX_BUCKETS     64
#define PD_MAX_HASH_BITS   30
#define PD_MIN_HASH_BITS   4

/* Where a value came from, for messages that point back at the file. */
typedef struct pd_conf_pos {
    const char *file; /* points into pd_config.path; NULL for built-in defaults */
    int line;         /* 1-based */
    int column;       /* 1-based */
} pd_conf_pos;

/* ---- kafka: ---- */
typedef struct pd_kv {
    char *key;
    char *value;
    bool secret; /* came from ${ENV} or a *_file reference: never print the value */
    pd_conf_pos pos;
} pd_kv;

typedef enum pd_start_position {
    PD_START_EARLIEST,
    PD_START_LATEST,
} pd_start_position;

typedef enum pd_handover {
    PD_HANDOVER_OFF,   /* the next owner starts the partition's users afresh */
    PD_HANDOVER_REDIS, /* {prefix}:state:{topic}:{partition} */
} pd_handover;

typedef struct pd_kafka_conf {
    char *brokers;
    char **topics;
    size_t n_topics;
    char *group;
    pd_start_position start;
    pd_kv *properties; /* passed verbatim to librdkafka, secrets resolved */
    size_t n_properties;
    int64_t poll_batch; /* messages taken per poll */
    /* where the user state of a partition goes when it moves to another group member */
    pd_handover handover;
} pd_kafka_conf;

/* ---- redis: ---- */
/* How a user's keys are named: the plain {prefix}:u:{user} and {prefix}:rec:{user}, or with
 * the user as a Redis Cluster hash tag, {prefix}:{{user}}:u and {prefix}:{{user}}:rec, so every
 * key of one user lives in one slot and a reader may read them in one transaction. */
typedef enum pd_key_layout {
    PD_KEYS_PLAIN,
    PD_KEYS_CLUSTER,
} pd_key_layout;

typedef struct pd_redis_conf {
    char *url;       /* as written: redis://host:port/db or unix:///path */
    char *host;      /* parsed from url; NULL for unix sockets */
    int port;        /* parsed from url */
    char *unix_path; /* parsed from url; NULL for tcp */
    int db;          /* from url path or the db: key */
    char *username;  /* ACL user, optional */
    char *password;  /* resolved secret, optional; never logged */
    char *prefix;    /* key prefix, default "pd" */
    int64_t ttl_ms;  /* TTL set on every user key */
    int64_t flush_interval_ms;
    int64_t max_pipeline; /* commands in flight per round trip */
    int64_t timeout_ms;   /* connect and command timeout */
    pd_key_layout key_layout;
} pd_redis_conf;

/* ---- events: ---- */
typedef struct pd_events_conf {
    /* JSON paths (dotted, e.g. "context.device") of the mapped fields */
    char *field_event_id;
    char *field_user;
    char *field_item;
    char *field_type;
    char *field_time;
    char *field_value;
    char *field_text;
    char **types; /* declared event types; index = type id */
    size_t n_types;
    int forget_type; /* type id of the privacy "forget" event, or -1 */
    int64_t max_message_bytes;
    int64_t max_string_length;
    char *dead_letter_topic; /* NULL = count and drop */
} pd_events_conf;

/* ---- features: ---- */
typedef enum pd_feature_kind {
    PD_FEAT_CATEGORICAL,   /* hashed value of a field */
    PD_FEAT_NUMERIC,       /* a number from a field, transformed */
    PD_FEAT_CROSS,         /* product of 2 or 3 other features */
    PD_FEAT_TEXT,          /* lower-cased word tokens (and bigrams) of a field */
    PD_FEAT_RECENCY,       /* seconds since the user's previous event (of a type, or any) */
    PD_FEAT_DECAYED_COUNT, /* exponentially decayed count of a type, with a half-life */
    PD_FEAT_SPEND, /* sum of event values of a type (default purchase), optionally decayed */
    PD_FEAT_DISTINCT_ITEMS, /* estimated number of distinct items the user touched */
    PD_FEAT_RECENT_ITEMS,   /* the user's last N items, each a hashed categorical */
} pd_feature_kind;

typedef enum pd_transform_kind {
    PD_TF_LOG1P,
    PD_TF_CLIP,
} pd_transform_kind;

typedef struct pd_transform {
    pd_transform_kind kind;
    double lo, hi; /* clip bounds */
} pd_transform;

typedef struct pd_feature_conf {
    char *name;
    pd_feature_kind kind;
    pd_conf_pos pos;
    char *field; /* JSON path: categorical, numeric, text */
    /* categorical */
    int64_t vocabulary; /* 0 = unlimited; else the first N values, the rest share one bucket */
    /* numeric and numeric user-state kinds (recency, decayed_count, spend, distinct_items) */
    pd_transform *transforms; /* applied in order */
    size_t n_transforms;
    bool standardize; /* online (x - mean) / sd */
    double *buckets;  /* ascending boundaries; non-NULL = one-hot bucket instead of value */
    size_t n_buckets;
    /* cross */
    int cross[PD_MAX_CROSS]; /* indices into pd_config.features, all < this feature's index */
    size_t n_cross;
    /* text */
    bool bigrams;
    int64_t max_tokens;
    /* user-state kinds */
    int event_type;       /* type id, or -1 for any (recency) */
    int64_t half_life_ms; /* decayed_count; spend when > 0 */
    int64_t count;        /* recent_items: how many */
} pd_feature_conf;

/* ---- models: ---- */
/* The family a model's type belongs to; each kind has its own keys (config/README.md). */
typedef enum pd_model_kind {
    PD_MODEL_KIND_GLM,         /* type logistic, linear or hinge: pd_model_conf.learner */
    PD_MODEL_KIND_RECOMMENDER, /* type recommender: pd_model_conf.recommender */
} pd_model_kind;

typedef enum pd_model_type {
    PD_MODEL_LOGISTIC,
    PD_MODEL_LINEAR,
    PD_MODEL_HINGE,
} pd_model_type;

typedef enum pd_loss {
    PD_LOSS_LOGISTIC, /* implied by type logistic */
    PD_LOSS_SQUARED,
    PD_LOSS_HUBER,
    PD_LOSS_HINGE, /* implied by type hinge */
} pd_loss;

typedef enum pd_optimizer {
    PD_OPT_FTRL,
    PD_OPT_ADAGRAD,
    PD_OPT_SGD,
    PD_OPT_FTRL_MULTI, /* FTRL-Proximal at four alphas side by side, mixed (models/learner.h) */
} pd_optimizer;

typedef enum pd_weight_format {
    PD_WEIGHTS_F32,
    PD_WEIGHTS_F16, /* compact 16-bit storage */
} pd_weight_format;

/* Everything a learner needs; models/ takes this without knowing the rest of the config. */
typedef struct pd_learner_conf {
    pd_model_type type;
    pd_loss loss;
    double huber_delta;
    pd_optimizer optimizer;
    /* FTRL-Proximal */
    double alpha, beta, l1, l2;
    /* AdaGrad and SGD */
    double learning_rate;
    double power_t;   /* SGD: rate_t = learning_rate * (initial_t / (initial_t + t))^power_t */
    double initial_t; /* SGD */
    int bits;         /* weight table of 2^bits entries */
    bool intercept;
    pd_weight_format weights;
    int64_t admission_min_count; /* 0 = off; else a feature learns only after N sightings */
    double max_abs_margin;       /* margins are clipped to +-this before the link */
} pd_learner_conf;

/* A recommender: a list of items per user, scored from item-to-item co-visitation, online
 * embeddings (BPR) and decayed popularity; models/ takes this as it is. */
typedef struct pd_recommender_conf {
    float interaction[PD_MAX_EVENT_TYPES]; /* weight of each event type; 0: not an interaction */
    uint32_t evaluate_on;                  /* types whose events the progressive HR@K counts */
    int k;                                 /* list length */
    int dim;                               /* embedding size */
    bool exclude_seen;                     /* lists leave out what the user touched */
    int window;           /* co_visitation.window: recent items a new one is paired with */
    double decay;         /* co_visitation.decay: a pair k items apart weighs 1/(1+k)^decay */
    int score_from;       /* co_visitation.score_from: recent items a list is scored from */
    double score_decay;   /* co_visitation.score_decay: the k-th latest counts 1/(1+k)^this */
    double reverse;       /* co_visitation.reverse: weight of a pair's other direction */
    int neighbors;        /* co_visitation.neighbors: co-visited items kept per item */
    double learning_rate; /* embeddings.learning_rate: SGD step of the BPR updates */
    double power_t;       /* embeddings.power_t: rate * (initial_t / (initial_t + t))^power_t */
    double initial_t;     /* embeddings.initial_t */
    double l2;            /* embeddings.l2 */
    int negatives;        /* embeddings.negatives: sampled by popularity per interaction */
    int64_t popularity_half_life_ms;
    double blend_covis, blend_embeddings, blend_popularity;
    int64_t max_users, max_items; /* limits.users, limits.items: least recently seen go */
    int max_seen;                 /* limits.seen: items remembered per user for exclude_seen */
    int64_t refresh_ms;           /* limits.refresh: a user's list is rescored at most this often */
    int64_t similar_refresh_ms;   /* limits.similar_refresh: an item's similar list likewise */
    uint64_t seed;                /* embeddings start from it: replay is deterministic */
} pd_recommender_conf;

typedef enum pd_label_kind {
    PD_LABEL_POSITIVE_WITHIN, /* 1 if a positive_on event follows within the window, else 0 */
    PD_LABEL_VALUE_FROM,      /* the example's own value field, learned immediately */
} pd_label_kind;

typedef enum pd_label_match {
    PD_MATCH_USER,
    PD_MATCH_USER_ITEM,
} pd_label_match;

typedef struct pd_quality_gate {
    bool enabled;
    double min_auc;       /* publish only while recent AUC >= this (classifiers) */
    double max_log_loss;  /* and recent log loss <= this; 0 = no ceiling */
    double max_rmse;      /* regressors; 0 = no ceiling */
    int64_t min_examples; /* the gate judges only after this many labelled examples */
} pd_quality_gate;

typedef struct pd_model_conf {
    char *name;
    pd_conf_pos pos;
    pd_model_kind kind;
    pd_learner_conf learner;         /* PD_MODEL_KIND_GLM */
    pd_recommender_conf recommender; /* PD_MODEL_KIND_RECOMMENDER */
    int *features; /* indices into pd_config.features */
    size_t n_features;
    uint32_t example_on; /* bit mask of type ids that make an example */
    pd_label_kind label;
    int positive_on;   /* type id */
    int64_t window_ms; /* label window in event time */
    pd_label_match match;
    char *value_field;  /* PD_LABEL_VALUE_FROM: JSON path, default the events.value field */
    char *weight_field; /* optional importance weight per example: JSON path */
    char *output;       /* field name in the Redis user hash; a recommender: its list key */
    bool publish;
    int64_t metrics_window; /* examples in the "recent" progressive metrics */
    pd_quality_gate gate;
} pd_model_conf;

/* ---- the rest ---- */
/* A partition that delivered nothing for this long while caught up stops holding the watermark
 * (config/README.md says why 10 s). */
#define PD_DEFAULT_IDLE_TIMEOUT_MS 10000
/* Room for a user with an event every 0.2 s over a 30-minute window (config/README.md). */
#define PD_DEFAULT_MAX_PENDING_PER_USER 10000

typedef struct pd_state_conf {
    int64_t allowed_lateness_ms;  /* watermark = max event time - this */
    int64_t idle_timeout_ms;      /* a caught-up source this long without events stops holding it */
    int64_t max_pending_per_user; /* pending examples per user (all models) */
    int64_t max_pending_total;
    int64_t max_users;        /* 0 = unlimited; else least recently seen are evicted */
    int64_t user_idle_ttl_ms; /* 0 = keep forever */
    int64_t recent_items;     /* ring size kept per user */
} pd_state_conf;

typedef struct pd_snapshot_conf {
    char *dir;           /* NULL = snapshots off */
    int64_t interval_ms; /* 0 = only on stop and on demand */
    int64_t keep;
} pd_snapshot_conf;

typedef struct pd_daemon_conf {
    pd_log_level log_level;
    char *control;                   /* ZeroMQ endpoint, NULL = off */
    char *control_curve_secret_file; /* server secret key file for tcp:// off loopback */
    char *feed;                      /* ZeroMQ PUB endpoint, NULL = off */
    char *http;                      /* host:port for /metrics /healthz /readyz, NULL = off */
    int64_t ready_max_lag;           /* /readyz: caught up within this many messages */
    int64_t watchdog_ms;             /* 0 = use WATCHDOG_USEC from systemd */
} pd_daemon_conf;

/* sync: instances of one consumer group exchange model deltas (pipeline/model_sync.h) */
typedef struct pd_sync_conf {
    bool enabled;
    char *topic;               /* the topic of model deltas; required when enabled */
    int64_t interval_ms;       /* how often each instance publishes what it learned */
    char *instance_id;         /* NULL = hostname:pid */
    int64_t max_message_bytes; /* no delta message is larger */
    int64_t peer_timeout_ms;   /* a generation waits this long for a silent peer */
} pd_sync_conf;

typedef struct pd_config {
    char *path; /* file it was loaded from */
    uint64_t
        fingerprint; /* hash of the semantic content; changes when anything that matters does */
    pd_kafka_conf kafka;
    pd_redis_conf redis;
    pd_events_conf events;
    pd_feature_conf *features;
    size_t n_features;
    pd_model_conf *models;
    size_t n_models;
    pd_state_conf state;
    pd_snapshot_conf snapshot;
    pd_daemon_conf daemon;
    pd_sync_conf sync;
} pd_config;

/* ---- diagnostics ---- */

/* A list of errors found while loading; every error in a file is kept, not only the first. */
typedef struct pd_diag pd_diag;

pd_diag *pd_diag_new(void);
void pd_diag_free(pd_diag *diag);
size_t pd_diag_count(const pd_diag *diag);
/* The i-th message, formatted "file:line:column: error: text" (no trailing newline). */
const char *pd_diag_message(const pd_diag *diag, size_t i);
/* Print every message, one per line. */
void pd_diag_print(const pd_diag *diag, FILE *out);

/* ---- loading ---- */

/* Loads, expands ${NAME} / ${NAME:-default} from the environment, reads *_file secrets, and
 * validates. Returns NULL when anything is wrong; every problem is appended to diag.
 * The returned config is owned by the caller: free with pd_config_free(). */
pd_config *pd_config_load(const char *path, pd_diag *diag);

/* Same, from a string; name is used in messages in place of a file name. */
pd_config *pd_config_load_string(const char *name, const char *text, size_t len, pd_diag *diag);

void pd_config_free(pd_config *conf);

/* Index of a feature / model / event type by name, or -1. */
int pd_config_feature_index(const pd_config *conf, const char *name);
int pd_config_model_index(const pd_config *conf, const char *name);
int pd_config_type_index(const pd_config *conf, const char *type);

/* A hash of what makes a model's weights meaningful: its features' definitions, type, loss
 * and bits. Equal fingerprints across reloads mean the learned weights may be kept. */
uint64_t pd_config_model_fingerprint(const pd_config *conf, size_t model);

/* A hash of everything a model's configuration says (hyper-parameters, label, output, gate
 * and all): when it changes on reload the model's generation bumps. */
uint64_t pd_config_model_settings(const pd_config *conf, size_t model);

/* Whether new can replace old without a restart; if not, a message naming the key that changed
 * (e.g. "kafka.topics changed: restart to apply") is written to errbuf. */
bool pd_config_reloadable(const pd_config *old, const pd_config *new_conf, char *errbuf,
                          size_t errlen);

/* Whether any feature or label reads a user's past (user-state features, delayed labels):
 * if not, the pipeline keeps no per-user state at all. */
bool pd_config_needs_user_state(const pd_config *conf);

/* Parses "250ms", "30s", "5m", "2h", "7d" into milliseconds. Returns 0 or -EINVAL. */
int pd_parse_duration(const char *text, int64_t *ret_ms);

#endif

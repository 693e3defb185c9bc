/* The daemon's private header, shared by the files that each own one concern of the run loop:
 *
 *   daemon.c           life cycle, signals, start-up and the loop itself
 *   daemon_kafka.c     the consumer: rebalance hooks (run inside pd_kafka_in_poll), its log
 *                      hook, event-time sources (partition -> engine source id, idleness)
 *   daemon_events.c    each message: decode, dead letter, engine, publisher, forget events
 *   daemon_feed.c      the ZeroMQ PUB score feed
 *   daemon_flush.c     Redis flush, then Kafka commit; the flush schedule and its backoff;
 *                      the lists of list models, refreshed before each flush
 *   daemon_models.c    everything said per model: Redis summaries, /metrics families, the
 *                      status reply's list, quality-gate and eviction log lines
 *   daemon_metrics.c   the rest of /metrics, one function per family group
 *   daemon_ready.c     readiness, READY=1, the STATUS= line and the event rate
 *   daemon_control.c   control command handlers, the status reply, pause and resume
 *   daemon_reload.c    configuration reload
 *   daemon_snapshot.c  snapshot write, restore, offsets and scheduling
 *   daemon_handover.c  a partition's user state to and from its next owner in the group
 *   daemon_sync.c      model sync: publishing rounds of model deltas, applying the peers'
 *
 * Each group of fields in struct pd_daemon is written by the file its comment names; other
 * files only read it. Everything runs on the main thread (the publisher writes to Redis on a
 * thread of its own, behind pd_publisher_flush_start()). */
#ifndef PD_DAEMON_INTERNAL_H
#define PD_DAEMON_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>
#include <librdkafka/rdkafka.h>

#include "common/strbuf.h"
#include "config/config.h"
#include "daemon/control.h"
#include "daemon/daemon.h"
#include "daemon/http.h"
#include "daemon/notify.h"
#include "daemon/prom.h"
#include "daemon/sources.h"
#include "pipeline/dead_letter.h"
#include "pipeline/engine.h"
#include "pipeline/kafka_in.h"
#include "pipeline/model_sync.h"
#include "pipeline/publisher.h"

#ifndef PD_VERSION
#define PD_VERSION "unknown"
#endif

#define MAX_BACKOFF_MS   5000
#define MAX_GATED_MODELS PD_MAX_MODELS /* the config allows no more */
#define N_BATCH_BOUNDS   6  /* buckets of the flush batch-size histogram */

/* daemon.c: the loop's own state */
typedef struct daemon_loop {
    rd_kafka_message_t **batch;
    size_t batch_cap;
    bool batch_full;      /* the last poll filled the batch: more is waiting */
    bool in_batch;        /* the batch is being handed to the engine */
    int64_t batch_ms;     /* when the batch in hand was polled */
    rd_kafka_queue_t *kq; /* the consumer queue, which wakes the loop through wake[] */
    int wake[2];
} daemon_loop;

/* daemon_flush.c */
typedef struct daemon_flush {
    int64_t interval_ms;
    int64_t next_ms;
    int64_t backoff_ms; /* 0 while Redis takes the writes */
    int64_t retry_at_ms;
    uint64_t flushes_seen;
    uint64_t batch_hist[N_BATCH_BOUNDS + 1];
    double batch_sum;
    /* positions waiting until the lists covering them are out (daemon_flush.c says when) */
    rd_kafka_topic_partition_list_t *held;
    int64_t held_ms; /* list clock by which every list they touch is due */
    /* the flush in flight on the publisher's thread: since when (monotonic, 0: none), and the
     * positions it covers with the list clock they were taken at */
    int64_t flight_ms;
    rd_kafka_topic_partition_list_t *flight_pos;
    bool flight_caught;
    int64_t flight_now;
    bool retry; /* the last flush failed: the next start writes its writes again */
    /* positions Redis acknowledged, waiting for the dead letters before them */
    rd_kafka_topic_partition_list_t *dlq_held;
    int64_t dlq_held_ms, dlq_next_ms, dlq_logged_ms;
} daemon_flush;

/* daemon_flush.c: models of lists (recommenders), refreshed before each flush */
typedef struct daemon_lists {
    bool any;          /* the configuration has a model of lists */
    int64_t lag_ms;    /* the longest limits.refresh among them */
    int64_t clock_ms;  /* the list clock (wall time, never backwards) */
    int64_t future_ms; /* lists may carry refresh times up to this (a complete refresh) */
    double us_per_user[PD_MAX_MODELS]; /* measured refresh cost, by model index; 0: unknown */
    bool behind;                       /* the last refresh left due users for the next */
    int64_t behind_since_ms, behind_logged_ms; /* monotonic */
    uint64_t users;                            /* user lists rescored */
    uint64_t limited;                          /* refreshes the budget cut short */
    uint64_t put_errors; /* lists the publisher refused (out of memory, NaN score) */
    pd_strbuf key;       /* scratch: a list's Redis name */
} daemon_lists;

/* daemon_events.c */
typedef struct daemon_events {
    uint64_t dead_lettered;
    uint64_t dead_letter_failures;
    uint64_t process_errors;
    uint64_t forgets; /* users forgotten by an event */
    /* events whose Kafka key is not their user id (keyed otherwise, or not keyed): their
     * user's state may live on two members of the group */
    uint64_t key_mismatch, key_missing;
} daemon_events;

/* daemon_feed.c */
typedef struct daemon_feed {
    uint64_t dropped;
} daemon_feed;

/* daemon_models.c: quality gates and evictions as last logged, by model index (reset on
 * reload, when indices may move) */
typedef struct daemon_models {
    int64_t next_summary_ms;
    bool gate_closed[MAX_GATED_MODELS];
    int64_t gate_logged_ms[MAX_GATED_MODELS];
    uint64_t evicted_logged[MAX_GATED_MODELS];
    int64_t evicted_logged_ms[MAX_GATED_MODELS];
} daemon_models;

/* daemon_snapshot.c */
typedef struct daemon_snapshots {
    int64_t next_ms;   /* the next periodic one; INT64_MAX: off */
    int64_t forget_ms; /* the one replacing snapshots that hold forgotten users; INT64_MAX: none */
    bool on_assign;    /* partitions were assigned: record where they start */
    rd_kafka_topic_partition_list_t *restore_offsets; /* from the snapshot, applied once */
    bool restored;         /* a snapshot of this instance's was restored at start */
    uint64_t group_published; /* snapshots published to the group (sync on) */
    int64_t group_from_ms; /* started from the group's snapshot of this wall time (0: not) */
    int64_t last_wall_ms;                             /* 0 = none yet */
    double last_seconds;
    uint64_t written, failed;
} daemon_snapshots;

/* daemon_handover.c */
typedef struct daemon_handover {
    uint64_t out_partitions, out_users, out_bytes, out_failed;
    uint64_t in_partitions, in_users, in_bytes, in_failed;
    uint64_t stale; /* states older than the group's commit, not taken over */
    uint64_t checkpoints, checkpoint_bytes; /* partitions' users written with a snapshot */
    uint64_t rewound; /* partitions resumed at a checkpoint behind the commit (a crash) */
} daemon_handover;

/* daemon_reload.c */
typedef struct daemon_reloads {
    uint64_t ok, failed;
    bool again; /* postponed: the loop retries on its next turn */
} daemon_reloads;

/* daemon_control.c */
typedef struct daemon_ctl {
    bool paused; /* consumption paused from the control socket */
    uint64_t rebalances_seen;
    uint64_t forgets; /* users forgotten on request */
} daemon_ctl;

/* daemon_ready.c */
typedef struct daemon_ready {
    bool sent; /* READY=1 sent */
    int64_t started_ms, started_wall_ms;
    int64_t next_check_ms, next_status_ms;
    uint64_t rate_events;
    int64_t rate_ms;
    double events_per_s;
    char starting[600]; /* what start-up waits for, while it does (daemon.c writes it) */
} daemon_ready;

/* daemon_kafka.c: broker health, from librdkafka's statistics */
typedef struct daemon_brokers {
    int up;            /* brokers connected (bootstrap and learned; -1: no statistics yet) */
    int known;         /* brokers librdkafka knows of */
    int64_t down_since_ms; /* monotonic: since when none is up (0: one is, or not known yet) */
    uint64_t stats_seen;
} daemon_brokers;

/* daemon_metrics.c */
typedef struct daemon_metrics {
    int64_t next_render_ms;
    pd_strbuf text; /* scratch: the /metrics text */
} daemon_metrics;

/* daemon_sync.c: model sync between the instances of a group (ms NULL: off) */
#define SYNC_MAX_PEERS 64
typedef enum sync_skip {
    SYNC_SKIP_OWN,         /* this instance's own messages */
    SYNC_SKIP_MALFORMED,   /* messages that did not decode */
    SYNC_SKIP_MODEL,       /* parts of a model this configuration does not have */
    SYNC_SKIP_FINGERPRINT, /* parts of a model of that name with another fingerprint */
    SYNC_SKIP_NOT_SYNCED,  /* parts for a model whose kind exchanges nothing */
    SYNC_SKIP_BAD_PART,    /* parts the model refused (truncated, malformed) */
    SYNC_SKIP_PEERS,       /* messages of a peer beyond SYNC_MAX_PEERS */
    SYNC_SKIP__COUNT
} sync_skip;
typedef struct sync_peer {
    char id[256];
    uint64_t round;   /* the last round it finished sending */
    int64_t seen_ms;  /* monotonic: its last message */
    double lag_s;     /* from sending its newest message to applying it here */
    uint64_t messages;
} sync_peer;
typedef struct daemon_sync {
    pd_model_sync *ms;
    char instance[256];
    int64_t interval_ms;
    uint64_t round;      /* the last round published: floor(wall ms / interval) */
    uint64_t generation; /* group-wide generation served (Redis field v) */
    sync_peer peers[SYNC_MAX_PEERS];
    size_t n_peers;
    uint64_t rounds, parts_sent, parts_applied, bytes_applied;
    uint64_t bytes_by_model[PD_MAX_MODELS];
    uint64_t round_bytes, last_round_bytes;
    double collect_seconds;
    uint64_t skipped[SYNC_SKIP__COUNT];
    int64_t logged_ms;
} daemon_sync;

struct pd_daemon {
    /* the pipeline (daemon.c and daemon_kafka.c build it; reload replaces conf) */
    char *config_path;
    pd_config *conf;
    pd_engine *engine;
    pd_publisher *pub;
    pd_kafka_in *in;
    pd_dead_letter *dlq;
    pd_sources *sources; /* daemon_kafka.c */
    daemon_brokers brokers; /* daemon_kafka.c */
    /* operations endpoints (daemon.c) */
    pd_notify *notify;
    pd_http *http;
    pd_control *ctl;

    daemon_loop loop;
    daemon_flush flush;
    daemon_lists lists;
    daemon_events events;
    daemon_feed feed;
    daemon_models models;
    daemon_snapshots snap;
    daemon_handover handover;
    daemon_reloads reload;
    daemon_ctl control;
    daemon_ready ready;
    daemon_metrics metrics;
    daemon_sync sync;
};

/* ---- daemon_kafka.c ---- */

/* Creates the dead-letter producer (when configured) and the consumer, which joins the group;
 * logs what fails. Returns 0 or a negative errno. */
int daemon_kafka_start(pd_daemon *d);
/* The engine's source id of m's partition, which delivered it at the batch's poll time. */
uint32_t daemon_source_delivered(pd_daemon *d, const rd_kafka_message_t *m);
/* Tells the engine which partitions are idle now (caught up and quiet long enough). */
void daemon_sources_mark_idle(pd_daemon *d);

/* ---- daemon_events.c ---- */

/* Runs a polled batch through the engine and the publisher, marks each message processed
 * and destroys it. */
void daemon_events_process(pd_daemon *d, rd_kafka_message_t **msgs, size_t n);
/* The audit line of a privacy request (source "event" or "control"). */
void daemon_audit_forget(const char *user, size_t len, const char *source, bool known,
                         const char *redis);

/* ---- daemon_feed.c ---- */

void daemon_feed_scores(pd_daemon *d, const pd_engine_result *res, int64_t ts, uint64_t gen);
void daemon_feed_forget(pd_daemon *d, const char *user, size_t len);
/* A list model's new list under key (its Redis name without the prefix); user or item names
 * whose list it is (NULL for the popular list). */
void daemon_feed_list(pd_daemon *d, size_t model, const char *key, size_t key_len, const char *user,
                      size_t user_len, const char *item, size_t item_len, const char *const *items,
                      const size_t *item_lens, const float *scores, size_t n, int64_t ts);

/* ---- daemon_flush.c ---- */

/* Refreshes the lists that are due (within a budget), writes everything waiting to Redis and
 * waits for it (the flush in flight first); on success commits the offsets processed before
 * the flush began whose lists are out too (daemon_flush.c). Returns 0 or a negative errno
 * (logged). */
int daemon_flush_commit(pd_daemon *d, bool sync);
/* The same with every waiting list refreshed whatever the budget and limits.refresh say, and
 * all the processed offsets committed: before partitions go and at stop. */
int daemon_flush_commit_all(pd_daemon *d);
/* Writes everything waiting to Redis and waits for it, committing nothing: where a commit
 * would wait for the rebalance it runs in (the assignment hook). Returns 0 or a negative
 * errno (logged). */
int daemon_flush_settle(pd_daemon *d);
/* Whether the last flush reached Redis. */
bool daemon_flush_redis_ok(const pd_daemon *d);
/* Queues the deletion of a user's lists ({prefix}:{output}:{user} of every list model). */
void daemon_lists_forget(pd_daemon *d, const char *user, size_t len);
void daemon_flush_release(pd_daemon *d);
/* Reads the flush interval from the configuration (the next flush keeps its time). */
void daemon_flush_configure(pd_daemon *d);
/* daemon_flush_configure(), and the first flush one interval from now. */
void daemon_flush_start(pd_daemon *d);
/* Never waits: takes the outcome of the flush in flight on the publisher's thread (and
 * commits what it covers), and starts the next one when due; on failure keeps consuming and
 * writes the failed writes again with backoff. */
void daemon_flush_tick(pd_daemon *d, int64_t now_ms);
/* When daemon_flush_tick() next has work (monotonic ms): the next flush or retry, or never
 * while one is in flight (its end wakes the loop through the wakeup pipe). */
int64_t daemon_flush_due_ms(const pd_daemon *d);
/* How long the flush in flight has been waiting for Redis (0: none). */
int64_t daemon_flush_stalled_ms(const pd_daemon *d, int64_t now_ms);
/* The last flush at stop, retried for up to 25 s (not when Redis took it and only the group
 * refused the commit because it is rebalancing). Returns 0, or -EIO when it never took. */
int daemon_flush_final(pd_daemon *d);
/* The flush batch-size histogram's bucket bounds (N_BATCH_BOUNDS of them). */
extern const double daemon_batch_bounds[N_BATCH_BOUNDS];

/* ---- daemon_models.c ---- */

/* Queues each model's summary hash for Redis and logs gate and eviction changes, when due
 * (always with force). */
void daemon_models_tick(pd_daemon *d, int64_t now_ms, bool force);
/* Forgets what was logged per model index (after a reload). */
void daemon_models_reset(pd_daemon *d);
void daemon_models_render(pd_daemon *d, pd_strbuf *sb);
/* The status reply's "models" list; NULL when out of memory. */
json_t *daemon_models_status(pd_daemon *d);

/* ---- daemon_metrics.c ---- */

/* Renders /metrics and readiness for the HTTP thread, when due. */
void daemon_metrics_tick(pd_daemon *d, int64_t now_ms);

/* ---- daemon_ready.c ---- */

/* Why the daemon should not take traffic now, or NULL when it is ready. */
const char *daemon_not_ready_reason(pd_daemon *d, char *buf, size_t len);
void daemon_status_line(pd_daemon *d, char *buf, size_t len);
/* READY=1 with the status line. */
void daemon_notify_ready(pd_daemon *d);
/* Sends READY=1 once a Kafka broker answers (probed every second until then). */
void daemon_ready_check(pd_daemon *d, int64_t now_ms);
/* Refreshes the events/s rate and STATUS= every 2 s. */
void daemon_ready_status_tick(pd_daemon *d, int64_t now_ms);

/* ---- daemon_control.c ---- */

/* Answers waiting control requests: the full command set, or while start-up waits for
 * Redis the set that only says so. */
void daemon_control_serve(pd_daemon *d, bool starting);
/* While paused, pauses what a rebalance assigned since. */
void daemon_control_tick(pd_daemon *d);

/* ---- daemon_reload.c ---- */

/* The publisher's Redis field per model, in model order (an array the caller frees). */
int daemon_publisher_fields(const pd_config *conf, const char ***ret_fields);
/* Re-reads the configuration file, bracketed by RELOADING=1 and READY=1. Returns 0, or a
 * negative errno with the reason in msg (also logged); on success msg names the models that
 * start fresh (may be empty). */
int daemon_reload(pd_daemon *d, char *msg, size_t msglen);

/* ---- daemon_snapshot.c ---- */

/* Writes the engine's state and the offsets it covers; keep > 0 overrides how many
 * snapshots stay. The new path (or the error) goes to ret_path when given. Returns 0 (also
 * when snapshots are off) or -EIO. */
int daemon_snapshot_write(pd_daemon *d, const char *why, int keep, char *ret_path, size_t path_len);
/* Restores the newest valid snapshot, if any. Returns 0 or a negative errno (logged). */
int daemon_snapshot_restore(pd_daemon *d);
/* From the assignment hook: partitions the snapshot covers resume where it ended. */
void daemon_snapshot_assigning(pd_daemon *d, rd_kafka_topic_partition_list_t *parts);
/* After a poll, before its batch: the snapshot an assignment asked for. */
void daemon_snapshot_after_poll(pd_daemon *d);
void daemon_snapshot_start(pd_daemon *d);
void daemon_snapshot_interval_tick(pd_daemon *d, int64_t now_ms);
/* A forget event: replace the older snapshots soon, several forgets at once. */
void daemon_snapshot_forget_soon(pd_daemon *d);
void daemon_snapshot_forget_tick(pd_daemon *d, int64_t now_ms);
/* With sync on and nothing restored from this instance's own snapshots: starts the models
 * from the snapshot another member of the group published in Redis, if there is one. */
void daemon_snapshot_from_group(pd_daemon *d);
/* The snapshot at stop. Returns 0 or -EIO. */
int daemon_snapshot_final(pd_daemon *d);
void daemon_snapshot_release(pd_daemon *d);

/* ---- daemon_handover.c ---- */

/* The number the engine keeps a partition's users under (pd_event.shard): the topic's index
 * in kafka.topics and the partition. */
uint32_t daemon_shard_of(const pd_daemon *d, const char *topic, int32_t partition);
/* From the revoking hook, after the flush and commit: writes each partition's users for its
 * next owner and drops them here (kafka.handover: redis; otherwise nothing). */
void daemon_handover_revoking(pd_daemon *d, const rd_kafka_topic_partition_list_t *parts);
/* After a periodic snapshot: writes every assigned partition's users as a checkpoint, the
 * state its next owner resumes from if this instance dies without a revoke. */
void daemon_handover_checkpoint(pd_daemon *d);
/* From the assigning hook: takes over the partitions' handed-over user state and sets their
 * starting offsets to where it ends. */
void daemon_handover_assigning(pd_daemon *d, rd_kafka_topic_partition_list_t *parts);

/* ---- daemon_sync.c ---- */

/* With sync on: the producer, the consumer at the topic's end, capture in every model.
 * 0 (also when off) or a negative errno (logged). */
int daemon_sync_start(pd_daemon *d);
/* Applies what peers sent (bounded), publishes a round when one began, moves the generation. */
void daemon_sync_tick(pd_daemon *d, int64_t now_ms);
/* When the next round begins (monotonic ms; INT64_MAX when off). */
int64_t daemon_sync_due_ms(const pd_daemon *d);
/* The generation scores are published with: the group-wide one with sync on, else the
 * engine's configuration generation. */
uint64_t daemon_generation(const pd_daemon *d);
/* The last round at stop, then the producer's flush. */
void daemon_sync_stop(pd_daemon *d);
void daemon_sync_release(pd_daemon *d);
void daemon_sync_render(pd_daemon *d, pd_strbuf *sb);
/* The status reply's "sync" object (null when off); NULL when out of memory. */
json_t *daemon_sync_status(pd_daemon *d);

/* The /metrics renderers (daemon_metrics.c, daemon_models.c) write to a pd_strbuf named sb. */
#define FAMILY(name, type, help) pd_prom_family(sb, name, PD_PROM_##type, help)
#define SAMPLE(name, value)      pd_prom_sample(sb, name, NULL, (double)(value))
#define SAMPLE1(name, k, v, value)                                                                 \
    pd_prom_sample(sb, name, (const char *[]){k, v, NULL}, (double)(value))

#endif

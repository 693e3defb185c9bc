/* Kafka input: a librdkafka consumer-group member with manual offset commits. It tracks the
 * next offset to commit per partition as messages are processed, and hands rebalances to its
 * owner, who flushes and commits before partitions go (and may seek them where a snapshot
 * ended when they come). */
#ifndef PD_KAFKA_IN_H
#define PD_KAFKA_IN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "config/config.h"

typedef struct pd_kafka_in pd_kafka_in;

/* The hooks run on the caller's thread from inside pd_kafka_in_poll() (and
 * pd_kafka_in_close() or _free()), never concurrently with anything else the caller does. */
typedef struct pd_kafka_hooks {
    void *ctx;
    /* Partitions are about to go (lost: taken without a chance to commit). The owner should
     * flush its output and call pd_kafka_in_commit() for them now. */
    void (*revoking)(void *ctx, pd_kafka_in *in, const rd_kafka_topic_partition_list_t *parts,
                     bool lost);
    /* Partitions are about to be assigned; the owner may set their starting offsets. */
    void (*assigning)(void *ctx, pd_kafka_in *in, rd_kafka_topic_partition_list_t *parts);
    /* A librdkafka error or log line worth the daemon's log (no secrets: librdkafka does not
     * print passwords). level is syslog-style (3 = error, 4 = warning, ...). */
    void (*log)(void *ctx, int level, const char *facility, const char *message);
    /* librdkafka's statistics JSON (every statistics.interval.ms, 1 s unless configured):
     * what the owner reads broker health from. Optional. */
    void (*stats)(void *ctx, const char *json, size_t len);
} pd_kafka_hooks;

typedef struct pd_kafka_stats {
    uint64_t messages;
    uint64_t errors;        /* consumer errors seen (transport, partition) */
    uint64_t stale_dropped; /* messages of partitions revoked while in a batch */
    uint64_t commits;
    uint64_t commit_failures;
    uint64_t rebalances;
    size_t assigned;
} pd_kafka_stats;

/* Creates and subscribes. hooks is copied. */
pd_kafka_in *pd_kafka_in_new(const pd_kafka_conf *conf, const pd_kafka_hooks *hooks, char *errbuf,
                             size_t errlen);
/* Leaves the group (the revoking hook runs) and destroys the consumer. Accepts NULL. */
void pd_kafka_in_free(pd_kafka_in *in);

/* Leaves the group now; the revoking hook runs from inside. Idempotent. */
void pd_kafka_in_close(pd_kafka_in *in);

/* Takes up to max messages, waiting up to timeout_ms for the first. Messages belong to the
 * caller (rd_kafka_message_destroy); error events are counted and reported through the log
 * hook, never returned. Returns how many. */
size_t pd_kafka_in_poll(pd_kafka_in *in, rd_kafka_message_t **msgs, size_t max, int timeout_ms);

/* Records that msg (and everything before it in its partition) has been processed. */
void pd_kafka_in_processed(pd_kafka_in *in, const rd_kafka_message_t *msg);

/* A copy of the processed positions (next offset per partition; for an assigned partition
 * that delivered nothing yet, where it started, possibly RD_KAFKA_OFFSET_BEGINNING or _END),
 * for committing once the output covering them is acknowledged and for snapshots. NULL when
 * there is nothing or out of memory. */
rd_kafka_topic_partition_list_t *pd_kafka_in_positions(pd_kafka_in *in);

/* Commits offsets (only those of partitions still assigned). sync waits for the broker.
 * Returns 0, -EBUSY when the group refused it because it is rebalancing (or no longer knows
 * this member, or the consumer is closing), or -EIO. */
int pd_kafka_in_commit(pd_kafka_in *in, const rd_kafka_topic_partition_list_t *offsets, bool sync,
                       char *errbuf, size_t errlen);

/* From the revoking hook: the partition's state went to its next owner, so if it comes back
 * it resumes where the group committed, not where this instance let it go. */
void pd_kafka_in_state_moved(pd_kafka_in *in, const char *topic, int32_t partition);

int pd_kafka_in_pause(pd_kafka_in *in);
int pd_kafka_in_resume(pd_kafka_in *in);

/* Messages between the processed position and the last known end of every assigned
 * partition (from fetch responses; no broker round trip). -1 when unknown. */
int64_t pd_kafka_in_lag(pd_kafka_in *in);

/* Per-partition lag for metrics: calls fn for each assigned partition. */
typedef void (*pd_kafka_lag_fn)(void *ctx, const char *topic, int32_t partition, int64_t lag);
void pd_kafka_in_each_lag(pd_kafka_in *in, pd_kafka_lag_fn fn, void *ctx);

void pd_kafka_in_get_stats(const pd_kafka_in *in, pd_kafka_stats *ret_stats);

/* The underlying handle, for a dead-letter producer sharing its configuration. */
rd_kafka_t *pd_kafka_in_handle(pd_kafka_in *in);

/* Applies conf's properties and the given fixed settings to a new librdkafka conf: shared by
 * the consumer and the dead-letter producer so both see the same security settings. */
rd_kafka_conf_t *pd_kafka_conf_build(const pd_kafka_conf *conf, bool consumer, char *errbuf,
                                     size_t errlen);

/* ---- for readiness and the control plane (daemon/ops) ---- */

/* Whether a broker answers a metadata request within timeout_ms (blocks up to that long). */
bool pd_kafka_in_reachable(pd_kafka_in *in, int timeout_ms);

/* While paused, pauses the partitions a rebalance assigned since (they arrive running).
 * No-op when not paused. Returns 0 or -EIO. */
int pd_kafka_in_repause(pd_kafka_in *in);

#endif

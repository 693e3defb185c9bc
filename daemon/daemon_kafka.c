/* The daemon's side of the Kafka consumer: its hooks and the event-time sources.
 *
 * librdkafka runs the rebalance and log hooks from inside pd_kafka_in_poll() (and
 * pd_kafka_in_close() at stop), on the loop's thread. The loop calls poll only between
 * batches: every message of the previous batch has been run through the engine, marked
 * processed and destroyed, and the batch being collected is handed to nobody yet (kafka_in
 * drops its messages of partitions that went). So when handle_revoke() flushes and commits,
 * the processed positions cover exactly the work Redis is about to hold, never half a batch. */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include <jansson.h>

#include "common/clock.h"
#include "daemon/daemon_internal.h"
#include "daemon/log.h"

/* ---- event-time sources ---- */

/* The engine's source id of a partition (see daemon/sources.h). Without room to track a new
 * partition it shares the last source's clock: it can only be found idle later than it
 * should, never earlier. */
static uint32_t source_of(pd_daemon *d, const char *topic, int32_t partition)
{
    int64_t id = pd_sources_get(d->sources, topic, partition, pd_clock_mono_ms());
    if (id >= 0)
        return (uint32_t)id;
    pd_log_error("%s partition \"%s\" [%" PRId32 "]",
                 id == -ENOMEM ? "out of memory tracking" : "cannot track", topic, partition);
    size_t n = pd_sources_count(d->sources);
    return n ? (uint32_t)(n - 1) : 0;
}

uint32_t daemon_source_delivered(pd_daemon *d, const rd_kafka_message_t *m)
{
    uint32_t id = source_of(d, rd_kafka_topic_name(m->rkt), m->partition);
    pd_sources_delivered(d->sources, id, d->loop.batch_ms);
    return id;
}

/* Idleness is a wall-clock property (as Flink's withIdleness): a partition stops holding the
 * watermark only once it is caught up AND delivered nothing for watermark.idle_timeout. The
 * lag alone is not enough: it is computed from the end offset of the last fetch response, so
 * it reads 0 while the next fetch, holding the events that would resolve pending examples,
 * is still in flight, and the watermark would pass them by. A partition with lag > 0 or not
 * known yet always holds the watermark; one event makes an idle partition hold it again. */
static void mark_idle(void *ctx, const char *topic, int32_t partition, int64_t lag)
{
    pd_daemon *d = ctx;
    uint32_t id = source_of(d, topic, partition);
    bool quiet =
        pd_clock_mono_ms() - pd_sources_seen_ms(d->sources, id) >= d->conf->state.idle_timeout_ms;
    pd_engine_source_idle(d->engine, id, lag == 0 && quiet);
}

void daemon_sources_mark_idle(pd_daemon *d)
{
    pd_kafka_in_each_lag(d->in, mark_idle, d);
    /* revoked partitions that did not come back within an idle timeout stop holding the
     * watermark: they are another member's now */
    uint32_t ids[64];
    size_t n;
    while ((n = pd_sources_expire(d->sources, pd_clock_mono_ms(), d->conf->state.idle_timeout_ms,
                                  ids, sizeof ids / sizeof ids[0])) > 0)
        for (size_t i = 0; i < n; i++)
            pd_engine_source_remove(d->engine, ids[i]);
}

/* ---- rebalance hooks: inside pd_kafka_in_poll() ---- */

/* Partitions are going. Unless they are already lost, the leaving owner flushes and commits
 * before letting go, so their new owner resumes right after what this one wrote to Redis
 * (librdkafka's contract for the revoke callback). Their sources keep holding the watermark
 * for an idle timeout: in an eager rebalance every partition is revoked and most come right
 * back, and letting the lowest go one by one would raise the watermark past examples whose
 * purchases those partitions still hold. */
static void handle_revoke(void *ctx, pd_kafka_in *in, const rd_kafka_topic_partition_list_t *parts,
                          bool lost)
{
    (void)in;
    pd_daemon *d = ctx;
    assert(!d->loop.in_batch); /* see the top of this file */
    for (int i = 0; i < parts->cnt; i++) {
        uint32_t id = source_of(d, parts->elems[i].topic, parts->elems[i].partition);
        pd_sources_release(d->sources, id, pd_clock_mono_ms());
    }
    if (lost) {
        pd_log_warning("lost %d partition(s) without a chance to commit; their new owner "
                       "resumes from the last commit",
                       parts->cnt);
        return;
    }
    /* every waiting list first: the new owner resumes after what this one published */
    bool handover = d->conf->kafka.handover != PD_HANDOVER_OFF;
    if (daemon_flush_commit_all(d) < 0) {
        if (!handover || !daemon_flush_redis_ok(d)) {
            pd_log_warning("could not flush before giving up %d partition(s); their new owner "
                           "resumes from the last commit",
                           parts->cnt);
            return;
        }
        /* Redis has the writes; the handed-over state says where its partition resumes */
        pd_log_warning("could not commit before giving up %d partition(s); their handed-over "
                       "state carries the offsets",
                       parts->cnt);
    }
    daemon_handover_revoking(d, parts);
}

/* Partitions are coming: each holds the watermark from now on, before the first batch that
 * may bring another partition's events (without that, a restart catching up a backlog moved
 * the watermark to the first partition's events, hours of event time ahead of the others,
 * and labelled their waiting examples 0); a snapshot records where they start before any of
 * their events, and those a restored snapshot covers resume where it ended. */
static void handle_assign(void *ctx, pd_kafka_in *in, rd_kafka_topic_partition_list_t *parts)
{
    (void)in;
    pd_daemon *d = ctx;
    assert(!d->loop.in_batch);
    for (int i = 0; i < parts->cnt; i++)
        pd_engine_source_idle(d->engine,
                              source_of(d, parts->elems[i].topic, parts->elems[i].partition),
                              false);
    daemon_snapshot_assigning(d, parts);
    daemon_handover_assigning(d, parts);
}

static void on_kafka_log(void *ctx, int level, const char *facility, const char *message)
{
    (void)ctx;
    pd_log_level l =
        level <= 3 ? PD_LOG_ERROR
                   : (level == 4 ? PD_LOG_WARNING : (level <= 6 ? PD_LOG_INFO : PD_LOG_DEBUG));
    pd_log(l, "kafka %s: %s", facility, message);
}

/* Broker health from librdkafka's statistics (inside pd_kafka_in_poll): how many of the
 * brokers it knows (its internal pseudo-broker aside) are up, and since when none is. */
static void handle_stats(void *ctx, const char *json, size_t len)
{
    pd_daemon *d = ctx;
    json_t *root = json_loadb(json, len, 0, NULL);
    json_t *brokers = root ? json_object_get(root, "brokers") : NULL;
    if (!json_is_object(brokers)) {
        json_decref(root);
        return;
    }
    int up = 0, known = 0;
    const char *name;
    json_t *b;
    json_object_foreach(brokers, name, b)
    {
        const char *source = json_string_value(json_object_get(b, "source"));
        const char *state = json_string_value(json_object_get(b, "state"));
        if (!state || (source && strcmp(source, "internal") == 0))
            continue;
        known++;
        up += strcmp(state, "UP") == 0;
    }
    json_decref(root);
    daemon_brokers *h = &d->brokers;
    int64_t now = pd_clock_mono_ms();
    if (up == 0 && h->down_since_ms == 0)
        h->down_since_ms = now;
    else if (up > 0)
        h->down_since_ms = 0;
    h->up = up;
    h->known = known;
    h->stats_seen++;
}

int daemon_kafka_start(pd_daemon *d)
{
    char err[512];
    if (d->conf->events.dead_letter_topic) {
        d->dlq =
            pd_dead_letter_new(&d->conf->kafka, d->conf->events.dead_letter_topic, err, sizeof err);
        if (!d->dlq) {
            pd_log_error("%s", err);
            return -EINVAL;
        }
    }
    pd_kafka_hooks hooks = {
        .ctx = d,
        .revoking = handle_revoke,
        .assigning = handle_assign,
        .log = on_kafka_log,
        .stats = handle_stats};
    d->brokers.up = -1;
    d->in = pd_kafka_in_new(&d->conf->kafka, &hooks, err, sizeof err);
    if (!d->in) {
        pd_log_error("%s", err);
        return -EINVAL;
    }
    return 0;
}

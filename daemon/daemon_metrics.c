/* /metrics: everything an operator watches, rendered from the stats of each layer into the
 * Prometheus text every RENDER_MS and handed, with readiness for /readyz, to the HTTP
 * thread. One function per family group, in the order the families are written; the
 * per-model families come from daemon_models.c. */
#include <dirent.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <sys/resource.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <librdkafka/rdkafka.h>

#include "daemon/build_commit.h"
#include "common/clock.h"
#include "daemon/daemon_internal.h"
#include "daemon/log.h"

#define RENDER_MS 500 /* /metrics and /readyz refresh */

static void render_daemon(pd_daemon *d, pd_strbuf *sb)
{
    char hiredis[32];
    snprintf(hiredis, sizeof hiredis, "%d.%d.%d", HIREDIS_MAJOR, HIREDIS_MINOR, HIREDIS_PATCH);
    FAMILY("propensityd_build_info", GAUGE,
           "The running daemon's version and the libraries it runs on (always 1).");
    pd_prom_sample(sb, "propensityd_build_info",
                   (const char *[]){"version", PD_VERSION, "commit", PD_COMMIT, "librdkafka",
                                    rd_kafka_version_str(), "hiredis", hiredis, NULL},
                   1);
    FAMILY("propensityd_ready", GAUGE, "1 when /readyz answers 200.");
    char why[160];
    SAMPLE("propensityd_ready", daemon_not_ready_reason(d, why, sizeof why) ? 0 : 1);
    FAMILY("propensityd_paused", GAUGE, "1 while consumption is paused from the control socket.");
    SAMPLE("propensityd_paused", d->control.paused ? 1 : 0);
}

static void render_events(pd_daemon *d, pd_strbuf *sb, const pd_engine_stats *es)
{
    FAMILY("propensityd_events_total", COUNTER, "Events processed, by type.");
    for (size_t i = 0; i < d->conf->events.n_types && i < PD_MAX_EVENT_TYPES; i++)
        SAMPLE1("propensityd_events_total", "type", d->conf->events.types[i],
                es->events_by_type[i]);
    FAMILY("propensityd_decode_errors_total", COUNTER,
           "Messages that did not decode or validate, by reason.");
    for (int i = 1; i < PD_DECODE__COUNT; i++)
        SAMPLE1("propensityd_decode_errors_total", "reason",
                pd_decode_error_name((pd_decode_error)i), es->decode_errors[i]);
    FAMILY("propensityd_dead_lettered_total", COUNTER,
           "Undecodable messages handed to the dead-letter topic.");
    SAMPLE("propensityd_dead_lettered_total", d->events.dead_lettered);
    FAMILY("propensityd_dead_letter_failures_total", COUNTER,
           "Undecodable messages the dead-letter producer refused or failed to deliver.");
    pd_dead_letter_stats ds = {0};
    if (d->dlq)
        pd_dead_letter_get_stats(d->dlq, &ds);
    SAMPLE("propensityd_dead_letter_failures_total", d->events.dead_letter_failures + ds.failed);
    FAMILY("propensityd_events_key_mismatch_total", COUNTER,
           "Events whose Kafka key is not their user id, by reason (different, missing): "
           "with several instances their user's state may be split between two.");
    SAMPLE1("propensityd_events_key_mismatch_total", "reason", "different",
            d->events.key_mismatch);
    SAMPLE1("propensityd_events_key_mismatch_total", "reason", "missing", d->events.key_missing);
    FAMILY("propensityd_process_errors_total", COUNTER,
           "Events whose processing ran out of memory.");
    SAMPLE("propensityd_process_errors_total", d->events.process_errors);
}

static void render_features(pd_daemon *d, pd_strbuf *sb)
{
    FAMILY("propensityd_feature_field_misses_total", COUNTER,
           "Events whose field-based feature found its JSON path absent or of a type it cannot "
           "use, by feature and reason.");
    for (size_t i = 0; i < d->conf->n_features; i++) {
        pd_feature_coverage fc;
        if (!pd_engine_feature_coverage(d->engine, i, &fc))
            continue;
        const char *name = d->conf->features[i].name;
        pd_prom_sample(sb, "propensityd_feature_field_misses_total",
                       (const char *[]){"feature", name, "reason", "missing", NULL},
                       (double)fc.missing);
        pd_prom_sample(sb, "propensityd_feature_field_misses_total",
                       (const char *[]){"feature", name, "reason", "wrong_type", NULL},
                       (double)fc.wrong_type);
    }
}

static void render_labels(pd_strbuf *sb, const pd_engine_stats *es)
{
    FAMILY("propensityd_labels_resolved_total", COUNTER,
           "Examples resolved by the label join, by outcome.");
    SAMPLE1("propensityd_labels_resolved_total", "outcome", "positive", es->labels.positives);
    SAMPLE1("propensityd_labels_resolved_total", "outcome", "early_positive",
            es->labels.early_positives);
    SAMPLE1("propensityd_labels_resolved_total", "outcome", "negative", es->labels.negatives);
    FAMILY("propensityd_examples_dropped_total", COUNTER,
           "Examples dropped before their label resolved, by reason.");
    SAMPLE1("propensityd_examples_dropped_total", "reason", "late", es->labels.late);
    SAMPLE1("propensityd_examples_dropped_total", "reason", "user_limit", es->labels.evicted_user);
    SAMPLE1("propensityd_examples_dropped_total", "reason", "total_limit",
            es->labels.evicted_total);
    SAMPLE1("propensityd_examples_dropped_total", "reason", "user_removed", es->labels.dropped);
    FAMILY("propensityd_pending_examples", GAUGE, "Examples waiting for their label.");
    SAMPLE("propensityd_pending_examples", es->labels.pending);
}

static void render_state(pd_daemon *d, pd_strbuf *sb, const pd_engine_stats *es)
{
    FAMILY("propensityd_users", GAUGE, "Users held in state.");
    SAMPLE("propensityd_users", es->users);
    FAMILY("propensityd_users_evicted_total", COUNTER,
           "Users evicted by users.max or users.idle_ttl.");
    SAMPLE("propensityd_users_evicted_total", es->users_evicted);
    FAMILY("propensityd_users_forgotten_total", COUNTER,
           "Users forgotten on a privacy request, by source.");
    SAMPLE1("propensityd_users_forgotten_total", "source", "control", d->control.forgets);
    SAMPLE1("propensityd_users_forgotten_total", "source", "event", d->events.forgets);
    const daemon_handover *h = &d->handover;
    FAMILY("propensityd_handover_partitions_total", COUNTER,
           "Partitions whose user state was handed to the next owner (out) or taken over "
           "(in), and attempts that failed or found a stale state (kafka.handover).");
    SAMPLE1("propensityd_handover_partitions_total", "direction", "out", h->out_partitions);
    SAMPLE1("propensityd_handover_partitions_total", "direction", "in", h->in_partitions);
    SAMPLE1("propensityd_handover_partitions_total", "direction", "out_failed", h->out_failed);
    SAMPLE1("propensityd_handover_partitions_total", "direction", "in_failed", h->in_failed);
    SAMPLE1("propensityd_handover_partitions_total", "direction", "stale", h->stale);
    SAMPLE1("propensityd_handover_partitions_total", "direction", "checkpoint", h->checkpoints);
    SAMPLE1("propensityd_handover_partitions_total", "direction", "rewound", h->rewound);
    FAMILY("propensityd_handover_users_total", COUNTER, "Users handed over, by direction.");
    SAMPLE1("propensityd_handover_users_total", "direction", "out", h->out_users);
    SAMPLE1("propensityd_handover_users_total", "direction", "in", h->in_users);
    FAMILY("propensityd_handover_bytes_total", COUNTER,
           "Bytes of user state handed over, by direction.");
    SAMPLE1("propensityd_handover_bytes_total", "direction", "out", h->out_bytes);
    SAMPLE1("propensityd_handover_bytes_total", "direction", "in", h->in_bytes);
    SAMPLE1("propensityd_handover_bytes_total", "direction", "checkpoint", h->checkpoint_bytes);
    /* no samples before there is a watermark (every partition holds it until its first event) */
    bool has_wm = es->max_event_ts_ms != INT64_MIN && es->watermark_ms != INT64_MIN;
    FAMILY("propensityd_watermark_timestamp_seconds", GAUGE,
           "Event-time watermark (highest event time minus allowed lateness), since the epoch.");
    if (has_wm)
        SAMPLE("propensityd_watermark_timestamp_seconds", (double)es->watermark_ms / 1000.0);
    FAMILY("propensityd_event_time_lag_seconds", GAUGE,
           "Wall clock minus the event-time watermark: how far behind the events the labels are.");
    if (has_wm)
        SAMPLE("propensityd_event_time_lag_seconds",
               (double)(pd_clock_wall_ms() - es->watermark_ms) / 1000.0);
    FAMILY("propensityd_memory_bytes", GAUGE, "Memory held by part of the engine.");
    SAMPLE1("propensityd_memory_bytes", "part", "users", es->memory_users);
    SAMPLE1("propensityd_memory_bytes", "part", "pending", es->memory_pending);
    SAMPLE1("propensityd_memory_bytes", "part", "models", es->memory_models);
}

static void put_lag(void *ctx, const char *topic, int32_t partition, int64_t lag)
{
    pd_strbuf *sb = ctx;
    char part[16];
    snprintf(part, sizeof part, "%" PRId32, partition);
    pd_prom_sample(sb, "propensityd_kafka_consumer_lag_messages",
                   (const char *[]){"topic", topic, "partition", part, NULL},
                   lag >= 0 ? (double)lag : NAN);
}

static void render_kafka(pd_daemon *d, pd_strbuf *sb)
{
    pd_kafka_stats ks = {0};
    if (d->in)
        pd_kafka_in_get_stats(d->in, &ks);
    FAMILY("propensityd_kafka_consumer_lag_messages", GAUGE,
           "Messages between the processed position and the end of each assigned partition.");
    if (d->in)
        pd_kafka_in_each_lag(d->in, put_lag, sb);
    FAMILY("propensityd_kafka_assigned_partitions", GAUGE, "Partitions assigned to this member.");
    SAMPLE("propensityd_kafka_assigned_partitions", ks.assigned);
    if (d->brokers.up >= 0) {
        FAMILY("propensityd_kafka_brokers_up", GAUGE,
               "Kafka brokers the consumer is connected to (librdkafka's statistics, each "
               "statistics.interval.ms); 0 for 2 s makes /readyz 503.");
        SAMPLE("propensityd_kafka_brokers_up", d->brokers.up);
    }
    FAMILY("propensityd_kafka_messages_total", COUNTER, "Messages taken from Kafka.");
    SAMPLE("propensityd_kafka_messages_total", ks.messages);
    FAMILY("propensityd_kafka_errors_total", COUNTER, "Consumer errors (transport, partition).");
    SAMPLE("propensityd_kafka_errors_total", ks.errors);
    FAMILY("propensityd_kafka_commits_total", COUNTER, "Offset commits, by result.");
    SAMPLE1("propensityd_kafka_commits_total", "result", "ok", ks.commits);
    SAMPLE1("propensityd_kafka_commits_total", "result", "failed", ks.commit_failures);
    FAMILY("propensityd_kafka_rebalances_total", COUNTER, "Consumer group rebalances.");
    SAMPLE("propensityd_kafka_rebalances_total", ks.rebalances);
}

static void render_redis_histograms(pd_daemon *d, pd_strbuf *sb)
{
    const double *bounds;
    const uint64_t *counts;
    double sum;
    size_t nb = pd_publisher_latency_buckets(d->pub, &bounds, &counts, &sum);
    FAMILY("propensityd_redis_write_duration_seconds", HISTOGRAM,
           "Duration of successful Redis flushes (pipelined writes until acknowledged).");
    pd_prom_histogram(sb, "propensityd_redis_write_duration_seconds", NULL, bounds, counts, nb,
                      sum);
    FAMILY("propensityd_redis_flush_batch_users", HISTOGRAM,
           "Users written per successful Redis flush.");
    pd_prom_histogram(sb, "propensityd_redis_flush_batch_users", NULL, daemon_batch_bounds,
                      d->flush.batch_hist, N_BATCH_BOUNDS, d->flush.batch_sum);
}

static void render_redis(pd_daemon *d, pd_strbuf *sb)
{
    pd_publisher_stats ps;
    pd_publisher_get_stats(d->pub, &ps);
    render_redis_histograms(d, sb);
    FAMILY("propensityd_redis_flush_failures_total", COUNTER,
           "Redis flushes that failed and kept their data for a retry.");
    SAMPLE("propensityd_redis_flush_failures_total", ps.flush_failures);
    FAMILY("propensityd_redis_reply_errors_total", COUNTER,
           "Redis commands refused for good (counted, not retried).");
    SAMPLE("propensityd_redis_reply_errors_total", ps.reply_errors);
    FAMILY("propensityd_redis_writes_total", COUNTER, "Redis keys written, by kind.");
    SAMPLE1("propensityd_redis_writes_total", "kind", "user", ps.user_writes);
    SAMPLE1("propensityd_redis_writes_total", "kind", "model", ps.model_writes);
    SAMPLE1("propensityd_redis_writes_total", "kind", "delete", ps.deletes);
    SAMPLE1("propensityd_redis_writes_total", "kind", "list", ps.list_writes);
    FAMILY("propensityd_redis_coalesced_total", COUNTER,
           "Score updates merged into a user already waiting for the flush.");
    SAMPLE("propensityd_redis_coalesced_total", ps.coalesced);
    FAMILY("propensityd_redis_lists_coalesced_total", COUNTER,
           "Sorted-set lists replaced while still waiting for the flush (never written).");
    SAMPLE("propensityd_redis_lists_coalesced_total", ps.list_coalesced);
    FAMILY("propensityd_redis_connects_total", COUNTER, "Connections made to Redis.");
    SAMPLE("propensityd_redis_connects_total", ps.connects);
    FAMILY("propensityd_redis_connected", GAUGE, "1 while connected to Redis.");
    SAMPLE("propensityd_redis_connected", pd_publisher_connected(d->pub) ? 1 : 0);
    FAMILY("propensityd_redis_pending_users", GAUGE, "Users waiting for the next flush.");
    SAMPLE("propensityd_redis_pending_users", pd_publisher_dirty(d->pub));
}

/* Models of lists: their refreshes before each flush (daemon_flush.c). */
static void render_lists(pd_daemon *d, pd_strbuf *sb)
{
    const daemon_lists *l = &d->lists;
    if (!l->any)
        return;
    FAMILY("propensityd_list_refresh_users_total", COUNTER,
           "User lists rescored before a flush (all models of lists).");
    SAMPLE("propensityd_list_refresh_users_total", l->users);
    FAMILY("propensityd_list_refresh_limited_total", COUNTER,
           "List refreshes the per-flush budget cut short (due users left for the next).");
    SAMPLE("propensityd_list_refresh_limited_total", l->limited);
    FAMILY("propensityd_list_refresh_behind", GAUGE,
           "1 while the last refresh left due users waiting (offset commits wait too).");
    SAMPLE("propensityd_list_refresh_behind", l->behind ? 1 : 0);
    FAMILY("propensityd_list_errors_total", COUNTER,
           "Lists the publisher refused (out of memory, a score that is not a number).");
    SAMPLE("propensityd_list_errors_total", l->put_errors);
}

static void render_snapshots(pd_daemon *d, pd_strbuf *sb)
{
    const daemon_snapshots *sn = &d->snap;
    FAMILY("propensityd_snapshots_total", COUNTER, "Snapshots written, by result.");
    SAMPLE1("propensityd_snapshots_total", "result", "ok", sn->written);
    SAMPLE1("propensityd_snapshots_total", "result", "failed", sn->failed);
    FAMILY("propensityd_last_snapshot_timestamp_seconds", GAUGE,
           "When the last snapshot was written, since the epoch (0 before the first).");
    SAMPLE("propensityd_last_snapshot_timestamp_seconds", (double)sn->last_wall_ms / 1000.0);
    FAMILY("propensityd_snapshot_duration_seconds", GAUGE,
           "How long the last snapshot took to write.");
    SAMPLE("propensityd_snapshot_duration_seconds", sn->last_wall_ms ? sn->last_seconds : NAN);
}

static void render_operations(pd_daemon *d, pd_strbuf *sb)
{
    pd_control_stats cs;
    pd_control_get_stats(d->ctl, &cs);
    FAMILY("propensityd_reloads_total", COUNTER, "Configuration reloads, by result.");
    SAMPLE1("propensityd_reloads_total", "result", "ok", d->reload.ok);
    SAMPLE1("propensityd_reloads_total", "result", "failed", d->reload.failed);
    FAMILY("propensityd_control_requests_total", COUNTER, "Control socket requests, by result.");
    SAMPLE1("propensityd_control_requests_total", "result", "ok",
            cs.requests - cs.failed - cs.malformed);
    SAMPLE1("propensityd_control_requests_total", "result", "failed", cs.failed);
    SAMPLE1("propensityd_control_requests_total", "result", "malformed", cs.malformed);
    FAMILY("propensityd_control_auth_denied_total", COUNTER,
           "CURVE clients refused by the allow-list.");
    SAMPLE("propensityd_control_auth_denied_total", cs.auth_denied);
    FAMILY("propensityd_feed_messages_total", COUNTER, "Score feed messages, by result.");
    SAMPLE1("propensityd_feed_messages_total", "result", "published", cs.published);
    SAMPLE1("propensityd_feed_messages_total", "result", "dropped", d->feed.dropped);
}

/* Virtual and resident memory from /proc/self/statm (pages), NaN when unreadable. */
static void memory_bytes(double *ret_virtual, double *ret_resident)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long long size = 0, resident = 0;
    double page = (double)sysconf(_SC_PAGESIZE);

    *ret_virtual = *ret_resident = NAN;
    if (!f)
        return;
    if (fscanf(f, "%llu %llu", &size, &resident) == 2) {
        *ret_virtual = (double)size * page;
        *ret_resident = (double)resident * page;
    }
    fclose(f);
}

/* Open file descriptors: the entries of /proc/self/fd, less the one reading it. */
static double open_fds(void)
{
    DIR *dir = opendir("/proc/self/fd");
    double n = 0;

    if (!dir)
        return NAN;
    for (struct dirent *e; (e = readdir(dir));)
        if (e->d_name[0] != '.')
            n++;
    closedir(dir);
    return n - 1;
}

/* The standard process_* families of the Prometheus client libraries. */
static void render_process(pd_daemon *d, pd_strbuf *sb)
{
    struct rusage ru;
    struct rlimit rl;
    double virt, res;

    memory_bytes(&virt, &res);
    FAMILY("process_cpu_seconds_total", COUNTER, "Total user and system CPU time in seconds.");
    SAMPLE("process_cpu_seconds_total",
           getrusage(RUSAGE_SELF, &ru) == 0
               ? (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                     (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6
               : NAN);
    FAMILY("process_open_fds", GAUGE, "Number of open file descriptors.");
    SAMPLE("process_open_fds", open_fds());
    FAMILY("process_max_fds", GAUGE, "Maximum number of open file descriptors.");
    SAMPLE("process_max_fds", getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY
                                  ? (double)rl.rlim_cur
                                  : NAN);
    FAMILY("process_virtual_memory_bytes", GAUGE, "Virtual memory size in bytes.");
    SAMPLE("process_virtual_memory_bytes", virt);
    FAMILY("process_resident_memory_bytes", GAUGE, "Resident memory size in bytes.");
    SAMPLE("process_resident_memory_bytes", res);
    FAMILY("process_start_time_seconds", GAUGE, "Start time of the process since the epoch.");
    SAMPLE("process_start_time_seconds", (double)d->ready.started_wall_ms / 1000.0);
}

static void render_metrics(pd_daemon *d, pd_strbuf *sb)
{
    pd_engine_stats es;
    pd_engine_get_stats(d->engine, &es);
    render_daemon(d, sb);
    render_events(d, sb, &es);
    daemon_models_render(d, sb);
    render_features(d, sb);
    render_labels(sb, &es);
    render_state(d, sb, &es);
    render_kafka(d, sb);
    render_redis(d, sb);
    render_lists(d, sb);
    render_snapshots(d, sb);
    daemon_sync_render(d, sb);
    render_operations(d, sb);
    render_process(d, sb);
}

/* Hands the HTTP thread fresh metrics and readiness. */
static void publish_health(pd_daemon *d)
{
    if (!d->http)
        return;
    pd_strbuf *text = &d->metrics.text;
    pd_strbuf_reset(text);
    render_metrics(d, text);
    if (text->oom || pd_http_set_metrics(d->http, text->data, text->len) < 0)
        pd_log_error("out of memory rendering /metrics; serving the previous text");
    char why[160];
    const char *reason = daemon_not_ready_reason(d, why, sizeof why);
    pd_http_set_ready(d->http, reason == NULL, reason);
}

void daemon_metrics_tick(pd_daemon *d, int64_t now_ms)
{
    if (now_ms < d->metrics.next_render_ms)
        return;
    publish_health(d);
    d->metrics.next_render_ms = now_ms + RENDER_MS;
}

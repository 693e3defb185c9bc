/* The daemon's loop: poll a batch from Kafka, run each event through the engine, coalesce the
 * scores in the publisher, and every flush interval write them to Redis and then commit the
 * offsets that were processed before the flush began. The same loop answers the control
 * socket, renders /metrics, and tells systemd how it is doing, so everything that touches
 * the engine happens on this one thread. */
#include "daemon/daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "daemon/control.h"
#include "daemon/http.h"
#include "daemon/log.h"
#include "daemon/notify.h"
#include "daemon/prom.h"
#include "common/clock.h"
#include "common/strbuf.h"
#include "models/snapshot.h"
#include "pipeline/dead_letter.h"
#include "pipeline/engine.h"
#include "pipeline/kafka_in.h"
#include "pipeline/publisher.h"
#include "pipeline/user_state.h"

#ifndef PD_VERSION
#define PD_VERSION "unknown"
#endif

#define MODEL_SUMMARY_MS   1000
#define MAX_BACKOFF_MS     5000
#define MAX_WAIT_MS        100       /* longest the loop sleeps: bounds stop and control latency */
#define RENDER_MS          500       /* /metrics and /readyz refresh */
#define STATUS_MS          2000      /* STATUS= line for systemd */
#define READY_CHECK_MS     1000      /* Kafka reachability probe before READY=1 */
#define CONTROL_BATCH      16        /* control requests answered per loop turn */
#define FORGET_SNAPSHOT_MS 1000      /* forget events are coalesced into one snapshot this late */
#define FEED_FORGET_TOPIC  "!forget" /* not a valid model name, so no clash */

static const double batch_bounds[] = {1, 10, 100, 1000, 10000, 100000};
#define N_BATCH_BOUNDS (sizeof batch_bounds / sizeof batch_bounds[0])

static volatile sig_atomic_t got_stop;
static volatile sig_atomic_t got_reload;
static volatile sig_atomic_t exit_status;

/* librdkafka 2.0's teardown can wait on a broker thread for a long time after the group was
 * left cleanly. By then everything is flushed, committed and snapshotted, so a bounded wait is
 * safe: the handler only writes a fixed line and exits with the status already decided. */
static void on_teardown_timeout(int sig)
{
    (void)sig;
    static const char msg[] = "level=warning msg=\"kafka client teardown is hanging after a "
                              "clean stop; exiting anyway\"\n";
    ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)w;
    _exit(exit_status);
}

static void on_stop_signal(int sig)
{
    (void)sig;
    got_stop = 1;
}

static void on_reload_signal(int sig)
{
    (void)sig;
    got_reload = 1;
}

#define GATE_REMINDER_MS     60000
#define EVICTION_REMINDER_MS 60000
#define MAX_GATED_MODELS 64

struct pd_daemon {
    /* quality gates as last logged, by model index (reset on reload) */
    bool gate_closed[MAX_GATED_MODELS];
    int64_t gate_logged_ms[MAX_GATED_MODELS];
    /* examples lost to the pending bounds as last logged, by model index */
    uint64_t evicted_logged[MAX_GATED_MODELS];
    int64_t evicted_logged_ms[MAX_GATED_MODELS];
    char *config_path;
    pd_config *conf;
    pd_engine *engine;
    pd_publisher *pub;
    pd_kafka_in *in;
    pd_dead_letter *dlq;
    rd_kafka_message_t **batch;
    size_t batch_cap;
    int64_t next_flush_ms;
    int64_t next_summary_ms;
    int64_t backoff_ms;
    int64_t retry_at_ms;
    uint64_t dead_lettered;
    uint64_t dead_letter_failures;
    uint64_t process_errors;
    uint64_t reloads, reload_failures;
    /* snapshots */
    int64_t next_snapshot_ms;
    int64_t last_snapshot_wall_ms; /* 0 = none yet */
    double last_snapshot_seconds;
    uint64_t snapshots, snapshot_failures;
    rd_kafka_topic_partition_list_t *restore_offsets; /* from the snapshot, applied once */
    bool snapshot_on_assign; /* partitions were assigned: record where they start */
    /* event-time sources: one per partition, so a lagging partition holds the watermark;
     * source_seen_ms[i] is when source i last delivered an event (or was assigned), on the
     * monotonic clock, INT64_MIN while it is not assigned */
    rd_kafka_topic_partition_list_t *sources;
    int64_t *source_seen_ms;
    size_t source_cap;
    int64_t loop_ms; /* when the batch in hand was polled */
    /* operations: systemd, metrics, control plane */
    pd_notify *notify;
    pd_http *http;
    pd_control *ctl;
    rd_kafka_queue_t *kq; /* the consumer queue, which wakes the loop through wake[] */
    int wake[2];
    bool ready;      /* READY=1 sent */
    bool paused;     /* consumption paused from the control socket */
    bool batch_full; /* the last poll filled the batch: more is waiting */
    uint64_t rebalances_seen;
    int64_t started_ms, started_wall_ms;
    int64_t next_render_ms, next_status_ms, next_ready_check_ms;
    int64_t forget_snapshot_ms; /* INT64_MAX: none due */
    uint64_t rate_events;
    int64_t rate_ms;
    double events_per_s;
    uint64_t flushes_seen;
    uint64_t batch_hist[N_BATCH_BOUNDS + 1];
    double batch_sum;
    uint64_t forgets_control, forgets_event;
    uint64_t feed_dropped;
    pd_strbuf text;     /* scratch: the /metrics text */
    char starting[600]; /* what startup waits for, while it does */
};

static int install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_stop_signal;
    if (sigaction(SIGTERM, &sa, NULL) < 0 || sigaction(SIGINT, &sa, NULL) < 0)
        return -errno;
    sa.sa_handler = on_reload_signal;
    if (sigaction(SIGHUP, &sa, NULL) < 0)
        return -errno;
    sa.sa_handler = SIG_IGN; /* a dropped Redis socket must be an error, not a death */
    if (sigaction(SIGPIPE, &sa, NULL) < 0)
        return -errno;
    return 0;
}

/* ---- event-time sources ---- */

/* The engine's source id of a message's partition (its index in d->sources). A source seen
 * for the first time counts as having just delivered, so it holds the watermark for a full
 * idle timeout before it may be found idle. */
static uint32_t source_of(pd_daemon *d, const char *topic, int32_t partition)
{
    for (int i = 0; i < d->sources->cnt; i++)
        if (d->sources->elems[i].partition == partition &&
            strcmp(d->sources->elems[i].topic, topic) == 0) {
            if (d->source_seen_ms[i] == INT64_MIN)
                d->source_seen_ms[i] = pd_clock_mono_ms();
            return (uint32_t)i;
        }
    size_t n = (size_t)d->sources->cnt;
    if (n >= d->source_cap) {
        size_t cap = d->source_cap ? d->source_cap * 2 : 64;
        int64_t *ns = realloc(d->source_seen_ms, cap * sizeof *ns);
        if (!ns) {
            /* without room to time it, the partition shares the last source's clock: it can
             * only be found idle later than it should, never earlier */
            pd_log_error("out of memory tracking partition \"%s\" [%" PRId32 "]", topic,
                         partition);
            return n ? (uint32_t)(n - 1) : 0;
        }
        d->source_seen_ms = ns;
        d->source_cap = cap;
    }
    rd_kafka_topic_partition_list_add(d->sources, topic, partition);
    d->source_seen_ms[n] = pd_clock_mono_ms();
    return (uint32_t)n;
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
    bool quiet = pd_clock_mono_ms() - d->source_seen_ms[id] >= d->conf->state.idle_timeout_ms;
    pd_engine_source_idle(d->engine, id, lag == 0 && quiet);
}

/* A partition delivered an event now. */
static uint32_t source_delivered(pd_daemon *d, const char *topic, int32_t partition, int64_t t)
{
    uint32_t id = source_of(d, topic, partition);
    d->source_seen_ms[id] = t;
    return id;
}

/* ---- flushing and committing ---- */

/* Writes everything waiting to Redis; on success commits the offsets processed before the
 * flush began (all their effects were in it). */
static int flush_and_commit(pd_daemon *d, bool sync)
{
    char err[512] = "";
    rd_kafka_topic_partition_list_t *pos = pd_kafka_in_positions(d->in);
    int r = 0;
    if (d->dlq && pd_dead_letter_flush(d->dlq, sync ? 10000 : 1000) < 0) {
        pd_log_warning("dead-letter producer has undelivered events: not committing yet");
        r = -EAGAIN;
        goto out;
    }
    r = pd_publisher_flush(d->pub, err, sizeof err);
    if (r < 0) {
        pd_log_error("%s", err);
        goto out;
    }
    if (err[0])
        pd_log_warning("%s", err); /* refused for good and counted; the flush went on */
    pd_publisher_stats ps;
    pd_publisher_get_stats(d->pub, &ps);
    if (ps.flushes != d->flushes_seen) {
        d->flushes_seen = ps.flushes;
        size_t b = 0;
        while (b < N_BATCH_BOUNDS && (double)ps.last_batch_users > batch_bounds[b])
            b++;
        d->batch_hist[b]++;
        d->batch_sum += (double)ps.last_batch_users;
    }
    if (pos && pd_kafka_in_commit(d->in, pos, sync, err, sizeof err) < 0) {
        pd_log_error("%s", err);
        r = -EIO;
    }
out:
    if (pos)
        rd_kafka_topic_partition_list_destroy(pos);
    return r;
}

static void on_revoking(void *ctx, pd_kafka_in *in, const rd_kafka_topic_partition_list_t *parts,
                        bool lost)
{
    (void)in;
    pd_daemon *d = ctx;
    for (int i = 0; i < parts->cnt; i++) {
        uint32_t id = source_of(d, parts->elems[i].topic, parts->elems[i].partition);
        pd_engine_source_remove(d->engine, id);
        d->source_seen_ms[id] = INT64_MIN; /* if it comes back, its idle timeout starts anew */
    }
    if (lost) {
        pd_log_warning("lost %d partition(s) without a chance to commit; their new owner "
                       "resumes from the last commit",
                       parts->cnt);
        return;
    }
    /* the leaving owner flushes and commits before letting go */
    if (flush_and_commit(d, true) < 0)
        pd_log_warning("could not flush before giving up %d partition(s); their new owner "
                       "resumes from the last commit",
                       parts->cnt);
}

static void on_kafka_log(void *ctx, int level, const char *facility, const char *message)
{
    (void)ctx;
    pd_log_level l =
        level <= 3 ? PD_LOG_ERROR
                   : (level == 4 ? PD_LOG_WARNING : (level <= 6 ? PD_LOG_INFO : PD_LOG_DEBUG));
    pd_log(l, "kafka %s: %s", facility, message);
}

/* ---- model summaries ---- */

static void fmt_metric(char *buf, size_t len, double v)
{
    if (isfinite(v))
        snprintf(buf, len, "%.6g", v);
    else
        snprintf(buf, len, "nan");
}

/* Says when a model's quality gate closes or opens, and reminds every minute while it stays
 * closed: its users keep their last good scores meanwhile. */
static void log_gate(pd_daemon *d, size_t i, const pd_model_info *mi, int64_t now)
{
    if (i >= MAX_GATED_MODELS)
        return;
    bool closed = !mi->gate_open;
    bool remind = closed && now - d->gate_logged_ms[i] >= GATE_REMINDER_MS;
    if (closed == d->gate_closed[i] && !remind)
        return;
    const pd_metrics_report *m = &mi->metrics;
    if (closed)
        pd_logkv(PD_LOG_WARNING,
                 "model fails its quality gate: not publishing new scores, "
                 "the last good ones stay in redis",
                 "model=%s recent_auc=%.4f recent_log_loss=%.4f recent_rmse=%.4g "
                 "examples=%" PRIu64,
                 mi->name, m->recent_auc, m->recent_log_loss, m->recent_rmse, mi->examples);
    else
        pd_logkv(PD_LOG_INFO, "model passes its quality gate again: publishing",
                 "model=%s recent_auc=%.4f recent_log_loss=%.4f recent_rmse=%.4g", mi->name,
                 m->recent_auc, m->recent_log_loss, m->recent_rmse);
    d->gate_closed[i] = closed;
    d->gate_logged_ms[i] = now;
}

/* An evicted example is a loss: the model never learns it. Says so at once, then at most once
 * a minute while it goes on, with what was lost since the last line. */
static void log_evictions(pd_daemon *d, size_t i, const pd_model_info *mi, int64_t now)
{
    if (i >= MAX_GATED_MODELS)
        return;
    uint64_t lost = mi->evicted_user + mi->evicted_total;
    if (lost <= d->evicted_logged[i] ||
        (d->evicted_logged_ms[i] && now - d->evicted_logged_ms[i] < EVICTION_REMINDER_MS))
        return;
    uint64_t taken = mi->examples + lost;
    pd_logkv(PD_LOG_WARNING,
             "examples evicted before their label resolved: the model never learns them; "
             "raise watermark.max_pending_per_user or watermark.max_pending_total",
             "model=%s evicted=%" PRIu64 " user_limit=%" PRIu64 " total_limit=%" PRIu64
             " share=%.3f%% max_pending_per_user=%" PRId64 " max_pending_total=%" PRId64,
             mi->name, lost - d->evicted_logged[i], mi->evicted_user, mi->evicted_total,
             taken ? 100.0 * (double)lost / (double)taken : 0.0,
             d->conf->state.max_pending_per_user, d->conf->state.max_pending_total);
    d->evicted_logged[i] = lost;
    d->evicted_logged_ms[i] = now;
}

static void put_model_summaries(pd_daemon *d)
{
    size_t n = pd_engine_model_count(d->engine);
    int64_t now = pd_clock_mono_ms();
    for (size_t i = 0; i < n; i++) {
        pd_model_info mi;
        pd_engine_model_info(d->engine, i, &mi);
        log_gate(d, i, &mi, now);
        log_evictions(d, i, &mi, now);
        char v[16][40];
        const char *fields[16], *values[16];
        size_t k = 0;
#define PUT_U(name, x)                                                                             \
    do {                                                                                           \
        fields[k] = name;                                                                          \
        snprintf(v[k], sizeof v[k], "%" PRIu64, (uint64_t)(x));                                    \
        values[k] = v[k];                                                                          \
        k++;                                                                                       \
    } while (0)
#define PUT_D(name, x)                                                                             \
    do {                                                                                           \
        fields[k] = name;                                                                          \
        fmt_metric(v[k], sizeof v[k], x);                                                          \
        values[k] = v[k];                                                                          \
        k++;                                                                                       \
    } while (0)
        PUT_U("generation", mi.generation);
        PUT_U("examples", mi.examples);
        PUT_U("positives", mi.positives);
        PUT_U("predictions", mi.predictions);
        PUT_U("evicted", mi.evicted_user + mi.evicted_total);
        if (mi.type == PD_MODEL_LINEAR) {
            PUT_D("rmse", mi.metrics.rmse);
            PUT_D("mae", mi.metrics.mae);
            PUT_D("r2", mi.metrics.r2);
            PUT_D("rmse_recent", mi.metrics.recent_rmse);
        } else {
            PUT_D("log_loss", mi.metrics.log_loss);
            PUT_D("auc", mi.metrics.auc);
            PUT_D("auc_recent", mi.metrics.recent_auc);
            PUT_D("calibration", mi.metrics.calibration);
            PUT_D("accuracy", mi.metrics.accuracy);
        }
        PUT_U("publishing", mi.gate_open ? 1 : 0);
        PUT_U("updated", pd_clock_wall_ms());
#undef PUT_U
#undef PUT_D
        if (pd_publisher_put_model(d->pub, mi.name, fields, values, k) < 0)
            pd_log_error("out of memory queueing the summary of model \"%s\"", mi.name);
    }
}

/* ---- events ---- */

static void dead_letter(pd_daemon *d, const rd_kafka_message_t *m, pd_decode_error err,
                        const char *detail)
{
    const char *topic = rd_kafka_topic_name(m->rkt);
    if (!d->dlq) {
        pd_logkv(PD_LOG_WARNING, "dropped an event that does not decode",
                 "reason=%s topic=%s "
                 "partition=%" PRId32 " offset=%" PRId64,
                 pd_decode_error_name(err), topic, m->partition, m->offset);
        return;
    }
    char msg[512];
    if (pd_dead_letter_send(d->dlq, m->payload, m->len, m->key, m->key_len,
                            pd_decode_error_name(err), detail, topic, m->partition, m->offset, msg,
                            sizeof msg) < 0) {
        d->dead_letter_failures++;
        pd_log_error("%s", msg);
        return;
    }
    d->dead_lettered++;
}

/* A number as the replies write it: integral values without a fraction, NaN and infinities
 * as null (JSON has neither). */
static json_t *number(double v)
{
    if (!isfinite(v))
        return json_null();
    if (v == floor(v) && fabs(v) < 9007199254740992.0) /* 2^53: every integer is exact */
        return json_integer((json_int_t)v);
    return json_real(v);
}

/* Publishes msg, which it takes; NULL (out of memory) counts as dropped. */
static void feed_publish(pd_daemon *d, const char *topic, json_t *msg)
{
    char *text = msg ? json_dumps(msg, JSON_COMPACT) : NULL;
    json_decref(msg);
    if (!text || pd_control_publish(d->ctl, topic, text, strlen(text)) < 0)
        d->feed_dropped++;
    free(text);
}

/* Every score change on the PUB feed, topic = model name. */
static void feed_scores(pd_daemon *d, const pd_engine_result *res, int64_t ts, uint64_t gen)
{
    for (size_t i = 0; i < res->n_scores; i++) {
        const pd_model_conf *mc = &d->conf->models[res->scores[i].model];
        feed_publish(d, mc->name,
                     json_pack("{s:s%, s:o, s:o, s:o, s:I, s:I}", "user", res->user, res->user_len,
                               "model", pd_control_string(mc->name), "field",
                               pd_control_string(mc->output ? mc->output : mc->name), "value",
                               number(res->scores[i].value), "ts", (json_int_t)ts, "v",
                               (json_int_t)gen));
    }
}

static void feed_forget(pd_daemon *d, const char *user, size_t len)
{
    if (pd_control_has_feed(d->ctl))
        feed_publish(d, FEED_FORGET_TOPIC, json_pack("{s:s%}", "user", user, len));
}

/* The audit line of a privacy request. It names the user by the store's hash, so an auditor
 * holding the id can match it while the log keeps no id of a forgotten user. */
static void audit_forget(const char *user, size_t len, const char *source, bool known,
                         const char *redis)
{
    pd_logkv(PD_LOG_INFO, "forgot a user on request",
             "audit=forget source=%s user_hash=%016" PRIx64 " known=%s redis=%s", source,
             pd_user_hash(user, len), known ? "true" : "false", redis);
}

static void handle_message(pd_daemon *d, const rd_kafka_message_t *m)
{
    pd_event ev;
    char detail[256];
    rd_kafka_timestamp_type_t tstype;
    uint32_t source = source_delivered(d, rd_kafka_topic_name(m->rkt), m->partition, d->loop_ms);
    int64_t fallback = rd_kafka_message_timestamp(m, &tstype);
    pd_decode_error err = pd_engine_decode(d->engine, m->payload ? m->payload : "", m->len,
                                           fallback, &ev, detail, sizeof detail);
    if (err != PD_DECODE_OK) {
        dead_letter(d, m, err, detail);
        return;
    }
    ev.source = source;
    pd_engine_result res;
    if (pd_engine_process(d->engine, &ev, &res) < 0) {
        d->process_errors++;
        pd_log_error("out of memory processing an event; its effects may be partial");
    }
    if (res.forgotten) {
        if (pd_publisher_forget(d->pub, res.user, res.user_len) < 0)
            pd_log_error("out of memory queueing the deletion of a user's keys");
        d->forgets_event++;
        audit_forget(res.user, res.user_len, "event", true, "queued");
        feed_forget(d, res.user, res.user_len);
        /* older snapshots still hold the user: replace them soon, several forgets at once */
        if (d->conf->snapshot.dir && d->forget_snapshot_ms == INT64_MAX)
            d->forget_snapshot_ms = pd_clock_mono_ms() + FORGET_SNAPSHOT_MS;
        return;
    }
    if (res.n_scores == 0)
        return;
    pd_publish_score scores[64];
    size_t n = res.n_scores < 64 ? res.n_scores : 64;
    for (size_t i = 0; i < n; i++)
        scores[i] = (pd_publish_score){.field = res.scores[i].model, .value = res.scores[i].value};
    int64_t ts = pd_clock_wall_ms();
    uint64_t gen = pd_engine_generation(d->engine);
    if (pd_publisher_update(d->pub, res.user, res.user_len, ts, gen, scores, n) < 0)
        pd_log_error("out of memory queueing scores for redis");
    if (pd_control_has_feed(d->ctl))
        feed_scores(d, &res, ts, gen);
}

/* ---- reload ---- */

static int publisher_fields(const pd_config *conf, const char ***ret_fields)
{
    const char **f = calloc(conf->n_models ? conf->n_models : 1, sizeof *f);
    if (!f)
        return -ENOMEM;
    for (size_t i = 0; i < conf->n_models; i++)
        f[i] = conf->models[i].output ? conf->models[i].output : conf->models[i].name;
    *ret_fields = f;
    return 0;
}

/* Re-reads the config file. Returns 0, or a negative errno with the reason in msg (also
 * logged); on success msg says which models start fresh (may be empty). */
static int reload(pd_daemon *d, char *msg, size_t msglen)
{
    char err[1024], fresh[1024];
    int r = -EINVAL;
    msg[0] = '\0';
    pd_log_info("reloading configuration from \"%s\"", d->config_path);
    pd_diag *diag = pd_diag_new();
    pd_config *conf = diag ? pd_config_load(d->config_path, diag) : NULL;
    if (!conf) {
        d->reload_failures++;
        pd_log_error("reload failed: \"%s\" has errors; keeping the running configuration",
                     d->config_path);
        for (size_t i = 0; diag && i < pd_diag_count(diag); i++)
            pd_log_error("%s", pd_diag_message(diag, i));
        snprintf(msg, msglen, "\"%s\" has errors%s%s; keeping the running configuration",
                 d->config_path, diag && pd_diag_count(diag) ? ": " : "",
                 diag && pd_diag_count(diag) ? pd_diag_message(diag, 0) : "");
        goto out_diag;
    }
    if (!pd_config_reloadable(d->conf, conf, err, sizeof err)) {
        d->reload_failures++;
        pd_log_error("reload refused: %s; keeping the running configuration", err);
        snprintf(msg, msglen, "refused: %.900s; keeping the running configuration", err);
        goto out_conf;
    }
    /* scores waiting in the publisher are indexed by the old model order */
    if (flush_and_commit(d, false) < 0) {
        d->reload_failures++;
        pd_log_error("reload postponed: redis did not take the waiting scores");
        snprintf(msg, msglen, "postponed: redis did not take the waiting scores; retrying");
        got_reload = 1;
        r = -EAGAIN;
        goto out_conf;
    }
    const char **fields = NULL;
    if (publisher_fields(conf, &fields) < 0) {
        pd_log_error("reload failed: out of memory");
        snprintf(msg, msglen, "out of memory");
        r = -ENOMEM;
        goto out_conf;
    }
    if (pd_engine_reconfigure(d->engine, conf, fresh, sizeof fresh, err, sizeof err) < 0) {
        d->reload_failures++;
        pd_log_error("reload failed: %s; keeping the running configuration", err);
        snprintf(msg, msglen, "%.900s; keeping the running configuration", err);
        free(fields);
        goto out_conf;
    }
    if (pd_publisher_set_fields(d->pub, fields, conf->n_models) < 0)
        pd_log_error("reload: out of memory updating the redis fields");
    free(fields);
    pd_publisher_set_conf(d->pub, &conf->redis);
    pd_log_set_level(conf->daemon.log_level);
    pd_config_free(d->conf);
    d->conf = conf;
    d->reloads++;
    /* model indices may have moved: say each gate's state again */
    memset(d->gate_closed, 0, sizeof d->gate_closed);
    memset(d->gate_logged_ms, 0, sizeof d->gate_logged_ms);
    memset(d->evicted_logged, 0, sizeof d->evicted_logged);
    memset(d->evicted_logged_ms, 0, sizeof d->evicted_logged_ms);
    if (fresh[0])
        pd_log_info("models starting fresh after reload: %s", fresh);
    snprintf(msg, msglen, "%s", fresh);
    pd_logkv(PD_LOG_INFO, "configuration reloaded", "models=%zu features=%zu generation=%" PRIu64,
             conf->n_models, conf->n_features, pd_engine_generation(d->engine));
    conf = NULL;
    r = 0;
out_conf:
    pd_config_free(conf);
out_diag:
    pd_diag_free(diag);
    return r;
}

/* ---- snapshots ---- */

static int save_offsets(FILE *f, const rd_kafka_topic_partition_list_t *pos)
{
    uint32_t n = pos ? (uint32_t)pos->cnt : 0;
    if (fwrite(&n, sizeof n, 1, f) != 1)
        return -EIO;
    for (uint32_t i = 0; i < n; i++) {
        const rd_kafka_topic_partition_t *p = &pos->elems[i];
        uint16_t tl = (uint16_t)strlen(p->topic);
        int32_t part = p->partition;
        int64_t off = p->offset;
        if (fwrite(&tl, sizeof tl, 1, f) != 1 || fwrite(p->topic, 1, tl, f) != tl ||
            fwrite(&part, sizeof part, 1, f) != 1 || fwrite(&off, sizeof off, 1, f) != 1)
            return -EIO;
    }
    return 0;
}

static rd_kafka_topic_partition_list_t *load_offsets(FILE *f)
{
    uint32_t n;
    if (fread(&n, sizeof n, 1, f) != 1 || n > 1000000)
        return NULL;
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new((int)n);
    for (uint32_t i = 0; i < n; i++) {
        uint16_t tl;
        char topic[512];
        int32_t part;
        int64_t off;
        if (fread(&tl, sizeof tl, 1, f) != 1 || tl >= sizeof topic ||
            fread(topic, 1, tl, f) != tl || fread(&part, sizeof part, 1, f) != 1 ||
            fread(&off, sizeof off, 1, f) != 1) {
            rd_kafka_topic_partition_list_destroy(list);
            return NULL;
        }
        topic[tl] = '\0';
        rd_kafka_topic_partition_list_add(list, topic, part)->offset = off;
    }
    return list;
}

/* Where the state in the engine ends, per partition: the processed positions, and for the
 * partitions a restored snapshot covers that are not assigned back yet, the snapshot's own
 * offsets (the engine still holds exactly their events). Without the latter a snapshot taken
 * before the assignment would drop them, and a restart from it would resume at the group's
 * committed offsets and skip the events between. NULL when there is nothing. */
static rd_kafka_topic_partition_list_t *snapshot_positions(pd_daemon *d)
{
    rd_kafka_topic_partition_list_t *pos = d->in ? pd_kafka_in_positions(d->in) : NULL;
    if (!d->restore_offsets || d->restore_offsets->cnt == 0)
        return pos;
    if (!pos)
        return rd_kafka_topic_partition_list_copy(d->restore_offsets);
    for (int i = 0; i < d->restore_offsets->cnt; i++) {
        const rd_kafka_topic_partition_t *r = &d->restore_offsets->elems[i];
        if (!rd_kafka_topic_partition_list_find(pos, r->topic, r->partition))
            rd_kafka_topic_partition_list_add(pos, r->topic, r->partition)->offset = r->offset;
    }
    return pos;
}

/* Writes the engine's state and the offsets it covers. Everything processed so far is in the
 * engine, so the processed positions are exactly what the snapshot includes. keep > 0
 * overrides how many snapshots stay (a forget keeps only this one: the older ones still hold
 * the user). The new file's path goes to ret_path when given. */
static int write_snapshot(pd_daemon *d, const char *why, int keep, char *ret_path, size_t path_len)
{
    const pd_snapshot_conf *sc = &d->conf->snapshot;
    if (!sc->dir)
        return 0;
    char err[512], path[1024];
    int64_t t0 = pd_clock_mono_ms();
    pd_snapshot_writer *w =
        pd_snapshot_writer_new(sc->dir, d->conf->fingerprint, pd_clock_wall_ms(), err, sizeof err);
    if (!w)
        goto out_fail;
    if (pd_engine_save(d->engine, w, err, sizeof err) < 0) {
        pd_snapshot_writer_abort(w);
        goto out_fail;
    }
    rd_kafka_topic_partition_list_t *pos = snapshot_positions(d);
    FILE *f = pd_snapshot_writer_section(w, "kafka.offsets");
    int r = f ? save_offsets(f, pos) : -EIO;
    if (pos)
        rd_kafka_topic_partition_list_destroy(pos);
    if (r < 0) {
        snprintf(err, sizeof err, "cannot write the kafka offsets to the snapshot");
        pd_snapshot_writer_abort(w);
        goto out_fail;
    }
    if (pd_snapshot_writer_commit(w, keep > 0 ? keep : (int)sc->keep, path, sizeof path, err,
                                  sizeof err) < 0)
        goto out_fail;
    if (ret_path)
        snprintf(ret_path, path_len, "%s", path);
    d->snapshots++;
    d->last_snapshot_wall_ms = pd_clock_wall_ms();
    d->last_snapshot_seconds = (double)(pd_clock_mono_ms() - t0) / 1000.0;
    pd_logkv(PD_LOG_INFO, "snapshot written", "path=%s reason=%s seconds=%.3f", path, why,
             d->last_snapshot_seconds);
    return 0;

out_fail:
    d->snapshot_failures++;
    pd_log_error("snapshot failed: %s", err);
    if (ret_path)
        snprintf(ret_path, path_len, "%s", err);
    return -EIO;
}

static void on_snapshot_skipped(void *ctx, const char *path, const char *why)
{
    (void)ctx;
    (void)path;
    pd_log_warning("%s; trying an older one", why);
}

/* Restores the newest valid snapshot, if any: learned state now, offsets on assignment. */
static int restore_snapshot(pd_daemon *d)
{
    const pd_snapshot_conf *sc = &d->conf->snapshot;
    if (!sc->dir)
        return 0;
    char err[1024], fresh[1024];
    pd_snapshot *s = pd_snapshot_open_latest(sc->dir, on_snapshot_skipped, d, err, sizeof err);
    if (!s) {
        if (err[0]) {
            pd_log_error("%s", err);
            return -EIO;
        }
        pd_log_info("no snapshot in \"%s\": starting fresh", sc->dir);
        return 0;
    }
    if (pd_engine_load(d->engine, s, fresh, sizeof fresh, err, sizeof err) < 0) {
        pd_log_error("snapshot \"%s\" cannot be restored: %s", pd_snapshot_path(s), err);
        pd_snapshot_close(s);
        return -EINVAL;
    }
    FILE *f = pd_snapshot_section(s, "kafka.offsets");
    if (f) {
        d->restore_offsets = load_offsets(f);
        fclose(f);
    }
    pd_engine_stats es;
    pd_engine_get_stats(d->engine, &es);
    pd_logkv(PD_LOG_INFO, "restored snapshot",
             "path=%s events=%" PRIu64 " users=%" PRIu64 " pending=%" PRIu64 " partitions=%d",
             pd_snapshot_path(s), es.events, es.users, es.labels.pending,
             d->restore_offsets ? d->restore_offsets->cnt : 0);
    if (fresh[0])
        pd_log_warning("models starting fresh: %s", fresh);
    pd_snapshot_close(s);
    return 0;
}

static void on_assigning(void *ctx, pd_kafka_in *in, rd_kafka_topic_partition_list_t *parts)
{
    (void)in;
    pd_daemon *d = ctx;
    /* New partitions start from the group's committed offsets, which later commits move on.
     * Until a snapshot records where they started, a crash would restart from an older
     * snapshot that does not know them and skip, unlearned, what this run committed: so one
     * is written as soon as the assignment is in place, before any of their events. */
    if (parts->cnt > 0)
        d->snapshot_on_assign = true;
    if (!d->restore_offsets)
        return;
    /* resume where the snapshot ended, so nothing it includes is learned twice; once per
     * partition: a later reassignment continues from what was processed since */
    for (int i = 0; i < parts->cnt; i++) {
        rd_kafka_topic_partition_t *p = &parts->elems[i];
        rd_kafka_topic_partition_t *saved =
            rd_kafka_topic_partition_list_find(d->restore_offsets, p->topic, p->partition);
        if (!saved)
            continue;
        p->offset = saved->offset;
        pd_logkv(PD_LOG_INFO, "resuming partition from the snapshot",
                 "topic=%s partition=%" PRId32 " offset=%" PRId64, p->topic, p->partition,
                 p->offset);
        rd_kafka_topic_partition_list_del(d->restore_offsets, p->topic, p->partition);
    }
}

/* ---- readiness and status ---- */

/* Why the daemon should not take traffic now, or NULL when it is ready: started, consuming,
 * writing to Redis and caught up within daemon.ready_max_lag. */
static const char *not_ready_reason(pd_daemon *d, char *buf, size_t len)
{
    if (!d->ready)
        return "starting";
    if (d->paused)
        return "consumption paused";
    if (!pd_publisher_connected(d->pub) || d->backoff_ms)
        return "redis writes failing";
    pd_kafka_stats ks;
    pd_kafka_in_get_stats(d->in, &ks);
    if (ks.rebalances == 0)
        return "waiting for a partition assignment";
    if (ks.assigned == 0)
        return NULL; /* more members than partitions: nothing to catch up on */
    int64_t lag = pd_kafka_in_lag(d->in);
    if (lag < 0)
        return "consumer lag not known yet";
    if (lag > d->conf->daemon.ready_max_lag) {
        snprintf(buf, len, "%" PRId64 " messages behind (ready_max_lag %" PRId64 ")", lag,
                 d->conf->daemon.ready_max_lag);
        return buf;
    }
    return NULL;
}

static void update_rate(pd_daemon *d, int64_t t)
{
    pd_engine_stats es;
    pd_engine_get_stats(d->engine, &es);
    if (d->rate_ms && t > d->rate_ms)
        d->events_per_s = (double)(es.events - d->rate_events) * 1000.0 / (double)(t - d->rate_ms);
    d->rate_events = es.events;
    d->rate_ms = t;
}

/* The one-line STATUS= summary systemctl status shows. */
static void status_line(pd_daemon *d, char *buf, size_t len)
{
    pd_engine_stats es;
    pd_engine_get_stats(d->engine, &es);
    int64_t lag = d->in ? pd_kafka_in_lag(d->in) : -1;
    char lag_s[32];
    if (lag >= 0)
        snprintf(lag_s, sizeof lag_s, "%" PRId64, lag);
    else
        snprintf(lag_s, sizeof lag_s, "unknown");
    snprintf(buf, len,
             "%s: %.1f events/s, lag %s, %" PRIu64 " users, %" PRIu64 " pending examples%s",
             d->paused ? "paused" : "consuming", d->events_per_s, lag_s, es.users,
             es.labels.pending, d->backoff_ms ? ", redis writes failing" : "");
}

/* ---- /metrics ---- */

typedef struct lag_ctx {
    pd_strbuf *sb;
} lag_ctx;

static void put_lag(void *ctx, const char *topic, int32_t partition, int64_t lag)
{
    lag_ctx *lc = ctx;
    char part[16];
    snprintf(part, sizeof part, "%" PRId32, partition);
    pd_prom_sample(lc->sb, "propensityd_kafka_consumer_lag",
                   (const char *[]){"topic", topic, "partition", part, NULL},
                   lag >= 0 ? (double)lag : NAN);
}

static double rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long long size = 0, resident = 0;
    if (!f)
        return NAN;
    int n = fscanf(f, "%llu %llu", &size, &resident);
    fclose(f);
    return n == 2 ? (double)resident * (double)sysconf(_SC_PAGESIZE) : NAN;
}

#define FAMILY(name, type, help) pd_prom_family(sb, name, PD_PROM_##type, help)
#define SAMPLE(name, value)      pd_prom_sample(sb, name, NULL, (double)(value))
#define SAMPLE1(name, k, v, value)                                                                 \
    pd_prom_sample(sb, name, (const char *[]){k, v, NULL}, (double)(value))

static void render_model_metrics(pd_daemon *d, pd_strbuf *sb)
{
    size_t n = pd_engine_model_count(d->engine);
    pd_model_info *mi = calloc(n ? n : 1, sizeof *mi);
    if (!mi) {
        sb->oom = true;
        return;
    }
    for (size_t i = 0; i < n; i++)
        pd_engine_model_info(d->engine, i, &mi[i]);
    static const struct {
        const char *name, *help;
        int kind; /* 0 all, 1 classifiers, 2 regressors */
        size_t off;
    } gauges[] = {
        {"propensityd_model_log_loss", "Progressive (predict-then-learn) log loss, all time.", 1,
         offsetof(pd_metrics_report, log_loss)},
        {"propensityd_model_auc", "Progressive AUC, all time.", 1,
         offsetof(pd_metrics_report, auc)},
        {"propensityd_model_auc_recent", "Progressive AUC over the recent window.", 1,
         offsetof(pd_metrics_report, recent_auc)},
        {"propensityd_model_calibration", "Mean prediction over mean label (1 = calibrated).", 1,
         offsetof(pd_metrics_report, calibration)},
        {"propensityd_model_rmse", "Progressive RMSE, all time.", 2,
         offsetof(pd_metrics_report, rmse)},
        {"propensityd_model_rmse_recent", "Progressive RMSE over the recent window.", 2,
         offsetof(pd_metrics_report, recent_rmse)},
        {"propensityd_model_mae", "Progressive mean absolute error, all time.", 2,
         offsetof(pd_metrics_report, mae)},
        {"propensityd_model_r2", "Progressive R squared, all time.", 2,
         offsetof(pd_metrics_report, r2)},
    };
    FAMILY("propensityd_model_examples_total", COUNTER,
           "Labelled examples learned (labels resolved) per model.");
    for (size_t i = 0; i < n; i++)
        SAMPLE1("propensityd_model_examples_total", "model", mi[i].name, mi[i].examples);
    FAMILY("propensityd_model_positive_examples_total", COUNTER,
           "Examples learned with a positive label per model.");
    for (size_t i = 0; i < n; i++)
        SAMPLE1("propensityd_model_positive_examples_total", "model", mi[i].name, mi[i].positives);
    FAMILY("propensityd_model_predictions_total", COUNTER, "Scores computed per model.");
    for (size_t i = 0; i < n; i++)
        SAMPLE1("propensityd_model_predictions_total", "model", mi[i].name, mi[i].predictions);
    FAMILY("propensityd_model_publishing", GAUGE,
           "1 while the model's scores are published (quality gate open or off).");
    for (size_t i = 0; i < n; i++)
        SAMPLE1("propensityd_model_publishing", "model", mi[i].name, mi[i].gate_open ? 1 : 0);
    FAMILY("propensityd_model_examples_evicted_total", COUNTER,
           "Examples a model lost to the pending bounds before their label resolved, by "
           "reason (never learned).");
    for (size_t i = 0; i < n; i++) {
        pd_prom_sample(sb, "propensityd_model_examples_evicted_total",
                       (const char *[]){"model", mi[i].name, "reason", "user_limit", NULL},
                       (double)mi[i].evicted_user);
        pd_prom_sample(sb, "propensityd_model_examples_evicted_total",
                       (const char *[]){"model", mi[i].name, "reason", "total_limit", NULL},
                       (double)mi[i].evicted_total);
    }
    FAMILY("propensityd_model_generation", GAUGE,
           "Configuration generation of the model (bumps when it changes).");
    for (size_t i = 0; i < n; i++)
        SAMPLE1("propensityd_model_generation", "model", mi[i].name, mi[i].generation);
    for (size_t g = 0; g < sizeof gauges / sizeof gauges[0]; g++) {
        FAMILY(gauges[g].name, GAUGE, gauges[g].help);
        for (size_t i = 0; i < n; i++) {
            bool regressor = mi[i].type == PD_MODEL_LINEAR;
            if ((gauges[g].kind == 1 && regressor) || (gauges[g].kind == 2 && !regressor))
                continue;
            double v = *(const double *)((const char *)&mi[i].metrics + gauges[g].off);
            SAMPLE1(gauges[g].name, "model", mi[i].name, v);
        }
    }
    FAMILY("propensityd_model_memory_bytes", GAUGE, "Weight and optimizer memory per model.");
    for (size_t i = 0; i < n; i++)
        SAMPLE1("propensityd_model_memory_bytes", "model", mi[i].name, mi[i].memory);
    free(mi);
}

/* Everything an operator watches, rendered from the stats structs of each layer. */
static void render_metrics(pd_daemon *d, pd_strbuf *sb)
{
    pd_engine_stats es;
    pd_engine_get_stats(d->engine, &es);
    pd_publisher_stats ps;
    pd_publisher_get_stats(d->pub, &ps);
    pd_kafka_stats ks = {0};
    if (d->in)
        pd_kafka_in_get_stats(d->in, &ks);
    pd_control_stats cs;
    pd_control_get_stats(d->ctl, &cs);

    FAMILY("propensityd_build_info", GAUGE, "Version of the running daemon (always 1).");
    pd_prom_sample(sb, "propensityd_build_info", (const char *[]){"version", PD_VERSION, NULL}, 1);
    FAMILY("propensityd_ready", GAUGE, "1 when /readyz answers 200.");
    char why[160];
    SAMPLE("propensityd_ready", not_ready_reason(d, why, sizeof why) ? 0 : 1);
    FAMILY("propensityd_paused", GAUGE, "1 while consumption is paused from the control socket.");
    SAMPLE("propensityd_paused", d->paused ? 1 : 0);

    FAMILY("propensityd_events_total", COUNTER, "Events processed, by type.");
    for (size_t i = 0; i < d->conf->events.n_types && i < PD_MAX_EVENT_TYPES; i++)
        SAMPLE1("propensityd_events_total", "type", d->conf->events.types[i], es.events_by_type[i]);
    FAMILY("propensityd_decode_errors_total", COUNTER,
           "Messages that did not decode or validate, by reason.");
    for (int i = 1; i < PD_DECODE__COUNT; i++)
        SAMPLE1("propensityd_decode_errors_total", "reason",
                pd_decode_error_name((pd_decode_error)i), es.decode_errors[i]);
    FAMILY("propensityd_dead_lettered_total", COUNTER,
           "Undecodable messages handed to the dead-letter topic.");
    SAMPLE("propensityd_dead_lettered_total", d->dead_lettered);
    FAMILY("propensityd_dead_letter_failures_total", COUNTER,
           "Undecodable messages the dead-letter producer refused or failed to deliver.");
    pd_dead_letter_stats ds = {0};
    if (d->dlq)
        pd_dead_letter_get_stats(d->dlq, &ds);
    SAMPLE("propensityd_dead_letter_failures_total", d->dead_letter_failures + ds.failed);
    FAMILY("propensityd_process_errors_total", COUNTER,
           "Events whose processing ran out of memory.");
    SAMPLE("propensityd_process_errors_total", d->process_errors);

    render_model_metrics(d, sb);

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

    FAMILY("propensityd_labels_resolved_total", COUNTER,
           "Examples resolved by the label join, by outcome.");
    SAMPLE1("propensityd_labels_resolved_total", "outcome", "positive", es.labels.positives);
    SAMPLE1("propensityd_labels_resolved_total", "outcome", "early_positive",
            es.labels.early_positives);
    SAMPLE1("propensityd_labels_resolved_total", "outcome", "negative", es.labels.negatives);
    FAMILY("propensityd_examples_dropped_total", COUNTER,
           "Examples dropped before their label resolved, by reason.");
    SAMPLE1("propensityd_examples_dropped_total", "reason", "late", es.labels.late);
    SAMPLE1("propensityd_examples_dropped_total", "reason", "user_limit", es.labels.evicted_user);
    SAMPLE1("propensityd_examples_dropped_total", "reason", "total_limit", es.labels.evicted_total);
    SAMPLE1("propensityd_examples_dropped_total", "reason", "user_removed", es.labels.dropped);
    FAMILY("propensityd_pending_examples", GAUGE, "Examples waiting for their label.");
    SAMPLE("propensityd_pending_examples", es.labels.pending);
    FAMILY("propensityd_users", GAUGE, "Users held in state.");
    SAMPLE("propensityd_users", es.users);
    FAMILY("propensityd_users_evicted_total", COUNTER,
           "Users evicted by users.max or users.idle_ttl.");
    SAMPLE("propensityd_users_evicted_total", es.users_evicted);
    FAMILY("propensityd_users_forgotten_total", COUNTER,
           "Users forgotten on a privacy request, by source.");
    SAMPLE1("propensityd_users_forgotten_total", "source", "control", d->forgets_control);
    SAMPLE1("propensityd_users_forgotten_total", "source", "event", d->forgets_event);
    FAMILY("propensityd_watermark_seconds", GAUGE,
           "Event-time watermark (highest event time minus allowed lateness).");
    SAMPLE("propensityd_watermark_seconds",
           es.max_event_ts_ms == INT64_MIN ? NAN : (double)es.watermark_ms / 1000.0);
    FAMILY("propensityd_memory_bytes", GAUGE, "Memory held by part of the engine.");
    SAMPLE1("propensityd_memory_bytes", "part", "users", es.memory_users);
    SAMPLE1("propensityd_memory_bytes", "part", "pending", es.memory_pending);
    SAMPLE1("propensityd_memory_bytes", "part", "models", es.memory_models);

    FAMILY("propensityd_kafka_consumer_lag", GAUGE,
           "Messages between the processed position and the end of each assigned partition.");
    if (d->in) {
        lag_ctx lc = {.sb = sb};
        pd_kafka_in_each_lag(d->in, put_lag, &lc);
    }
    FAMILY("propensityd_kafka_assigned_partitions", GAUGE, "Partitions assigned to this member.");
    SAMPLE("propensityd_kafka_assigned_partitions", ks.assigned);
    FAMILY("propensityd_kafka_messages_total", COUNTER, "Messages taken from Kafka.");
    SAMPLE("propensityd_kafka_messages_total", ks.messages);
    FAMILY("propensityd_kafka_errors_total", COUNTER, "Consumer errors (transport, partition).");
    SAMPLE("propensityd_kafka_errors_total", ks.errors);
    FAMILY("propensityd_kafka_commits_total", COUNTER, "Offset commits, by result.");
    SAMPLE1("propensityd_kafka_commits_total", "result", "ok", ks.commits);
    SAMPLE1("propensityd_kafka_commits_total", "result", "failed", ks.commit_failures);
    FAMILY("propensityd_kafka_rebalances_total", COUNTER, "Consumer group rebalances.");
    SAMPLE("propensityd_kafka_rebalances_total", ks.rebalances);

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
    pd_prom_histogram(sb, "propensityd_redis_flush_batch_users", NULL, batch_bounds, d->batch_hist,
                      N_BATCH_BOUNDS, d->batch_sum);
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
    FAMILY("propensityd_redis_coalesced_total", COUNTER,
           "Score updates merged into a user already waiting for the flush.");
    SAMPLE("propensityd_redis_coalesced_total", ps.coalesced);
    FAMILY("propensityd_redis_connects_total", COUNTER, "Connections made to Redis.");
    SAMPLE("propensityd_redis_connects_total", ps.connects);
    FAMILY("propensityd_redis_connected", GAUGE, "1 while connected to Redis.");
    SAMPLE("propensityd_redis_connected", pd_publisher_connected(d->pub) ? 1 : 0);
    FAMILY("propensityd_redis_pending_users", GAUGE, "Users waiting for the next flush.");
    SAMPLE("propensityd_redis_pending_users", pd_publisher_dirty(d->pub));

    FAMILY("propensityd_snapshots_total", COUNTER, "Snapshots written, by result.");
    SAMPLE1("propensityd_snapshots_total", "result", "ok", d->snapshots);
    SAMPLE1("propensityd_snapshots_total", "result", "failed", d->snapshot_failures);
    FAMILY("propensityd_snapshot_age_seconds", GAUGE,
           "Seconds since the last snapshot was written (NaN before the first).");
    SAMPLE("propensityd_snapshot_age_seconds",
           d->last_snapshot_wall_ms ? (double)(pd_clock_wall_ms() - d->last_snapshot_wall_ms) / 1000.0
                                    : NAN);
    FAMILY("propensityd_snapshot_duration_seconds", GAUGE,
           "How long the last snapshot took to write.");
    SAMPLE("propensityd_snapshot_duration_seconds",
           d->last_snapshot_wall_ms ? d->last_snapshot_seconds : NAN);

    FAMILY("propensityd_reloads_total", COUNTER, "Configuration reloads, by result.");
    SAMPLE1("propensityd_reloads_total", "result", "ok", d->reloads);
    SAMPLE1("propensityd_reloads_total", "result", "failed", d->reload_failures);
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
    SAMPLE1("propensityd_feed_messages_total", "result", "dropped", d->feed_dropped);

    FAMILY("process_resident_memory_bytes", GAUGE, "Resident memory size in bytes.");
    SAMPLE("process_resident_memory_bytes", rss_bytes());
    FAMILY("process_start_time_seconds", GAUGE, "Start time of the process since the epoch.");
    SAMPLE("process_start_time_seconds", (double)d->started_wall_ms / 1000.0);
}

#undef FAMILY
#undef SAMPLE
#undef SAMPLE1

/* Hands the HTTP thread fresh metrics and readiness. */
static void publish_health(pd_daemon *d)
{
    if (!d->http)
        return;
    pd_strbuf_reset(&d->text);
    render_metrics(d, &d->text);
    if (d->text.oom || pd_http_set_metrics(d->http, d->text.data, d->text.len) < 0)
        pd_log_error("out of memory rendering /metrics; serving the previous text");
    char why[160];
    const char *reason = not_ready_reason(d, why, sizeof why);
    pd_http_set_ready(d->http, reason == NULL, reason);
}

/* ---- control commands ---- */

/* Replies are built member by member in the order they are printed; json_object_set_new()
 * takes the value even when it fails, so one flag collects any out-of-memory. */

static int add_model_metrics(json_t *m, const pd_model_info *mi)
{
    int e = 0;
    if (mi->type == PD_MODEL_LINEAR) {
        e |= json_object_set_new(m, "rmse", number(mi->metrics.rmse));
        e |= json_object_set_new(m, "mae", number(mi->metrics.mae));
        e |= json_object_set_new(m, "r2", number(mi->metrics.r2));
    } else {
        e |= json_object_set_new(m, "log_loss", number(mi->metrics.log_loss));
        e |= json_object_set_new(m, "auc", number(mi->metrics.auc));
        e |= json_object_set_new(m, "auc_recent", number(mi->metrics.recent_auc));
        e |= json_object_set_new(m, "calibration", number(mi->metrics.calibration));
    }
    return e;
}

static json_t *status_models(pd_daemon *d)
{
    json_t *list = json_array();
    int e = 0;
    for (size_t i = 0; i < pd_engine_model_count(d->engine) && e == 0; i++) {
        pd_model_info mi;
        pd_engine_model_info(d->engine, i, &mi);
        json_t *m = json_object();
        e |= json_array_append_new(list, m); /* the list owns m even when this fails */
        e |= json_object_set_new(m, "name", pd_control_string(mi.name));
        e |= json_object_set_new(m, "output", pd_control_string(mi.output ? mi.output : mi.name));
        e |= json_object_set_new(m, "generation", json_integer(mi.generation));
        e |= json_object_set_new(m, "examples", json_integer(mi.examples));
        e |= json_object_set_new(m, "positives", json_integer(mi.positives));
        e |= json_object_set_new(m, "predictions", json_integer(mi.predictions));
        e |= json_object_set_new(m, "evicted",
                                 json_integer((json_int_t)(mi.evicted_user + mi.evicted_total)));
        e |= json_object_set_new(m, "publishing", json_boolean(mi.gate_open));
        e |= add_model_metrics(m, &mi);
    }
    if (e) {
        json_decref(list);
        return NULL;
    }
    return list;
}

static json_t *cmd_status(void *ctx, const char *arg, size_t arg_len, char *err, size_t errlen)
{
    (void)arg;
    (void)arg_len;
    (void)err;
    (void)errlen;
    pd_daemon *d = ctx;
    pd_engine_stats es;
    pd_engine_get_stats(d->engine, &es);
    pd_publisher_stats ps;
    pd_publisher_get_stats(d->pub, &ps);
    pd_kafka_stats ks;
    pd_kafka_in_get_stats(d->in, &ks);
    uint64_t decode_errors = 0;
    for (int i = 0; i < PD_DECODE__COUNT; i++)
        decode_errors += es.decode_errors[i];
    char why[160], line[256];
    const char *reason = not_ready_reason(d, why, sizeof why);
    status_line(d, line, sizeof line);
    int64_t lag = pd_kafka_in_lag(d->in);
    int64_t snap_ms = d->last_snapshot_wall_ms;

    json_t *kafka = json_object(), *redis = json_object(), *snap = json_object();
    int e = 0;
    e |= json_object_set_new(kafka, "group", pd_control_string(d->conf->kafka.group));
    e |= json_object_set_new(kafka, "assigned_partitions", json_integer(ks.assigned));
    e |= json_object_set_new(kafka, "lag", number(lag >= 0 ? (double)lag : NAN));
    e |= json_object_set_new(kafka, "paused", json_boolean(d->paused));
    e |= json_object_set_new(kafka, "rebalances", json_integer(ks.rebalances));
    e |= json_object_set_new(kafka, "commits", json_integer(ks.commits));

    e |= json_object_set_new(redis, "connected", json_boolean(pd_publisher_connected(d->pub)));
    e |= json_object_set_new(redis, "prefix", pd_control_string(d->conf->redis.prefix));
    e |= json_object_set_new(redis, "pending_users", json_integer(pd_publisher_dirty(d->pub)));
    e |= json_object_set_new(redis, "flushes", json_integer(ps.flushes));
    e |= json_object_set_new(redis, "flush_failures", json_integer(ps.flush_failures));
    e |= json_object_set_new(redis, "last_flush_seconds", number(ps.last_flush_seconds));

    e |= json_object_set_new(snap, "dir", pd_control_string(d->conf->snapshot.dir));
    e |= json_object_set_new(snap, "written", json_integer(d->snapshots));
    e |= json_object_set_new(snap, "failed", json_integer(d->snapshot_failures));
    e |= json_object_set_new(snap, "age_seconds",
                             number(snap_ms ? (double)(pd_clock_wall_ms() - snap_ms) / 1000.0 : NAN));

    json_t *st = json_object();
    double uptime = (double)(pd_clock_mono_ms() - d->started_ms) / 1000.0;
    e |= json_object_set_new(st, "version", json_string(PD_VERSION));
    e |= json_object_set_new(st, "state", json_string(d->paused ? "paused" : "running"));
    e |= json_object_set_new(st, "ready", json_boolean(reason == NULL));
    e |= json_object_set_new(st, "not_ready_reason", pd_control_string(reason));
    e |= json_object_set_new(st, "summary", pd_control_string(line));
    e |= json_object_set_new(st, "uptime_seconds", number(uptime));
    e |= json_object_set_new(st, "config", pd_control_string(d->config_path));
    e |= json_object_set_new(st, "generation", json_integer(pd_engine_generation(d->engine)));
    e |= json_object_set_new(st, "log_level", json_string(pd_log_level_name(pd_log_get_level())));
    e |= json_object_set_new(st, "events", json_integer(es.events));
    e |= json_object_set_new(st, "events_per_second", number(d->events_per_s));
    e |= json_object_set_new(st, "decode_errors", json_integer(decode_errors));
    e |= json_object_set_new(st, "dead_lettered", json_integer(d->dead_lettered));
    e |= json_object_set_new(st, "users", json_integer(es.users));
    e |= json_object_set_new(st, "pending_examples", json_integer(es.labels.pending));
    e |= json_object_set_new(st, "forgotten", json_integer(es.forgotten));
    e |= json_object_set_new(st, "kafka", kafka);
    e |= json_object_set_new(st, "redis", redis);
    e |= json_object_set_new(st, "snapshot", snap);
    e |= json_object_set_new(st, "models", status_models(d));
    if (e) {
        json_decref(st);
        return NULL;
    }
    return st;
}

static json_t *cmd_score(void *ctx, const char *user, size_t len, char *err, size_t errlen)
{
    pd_daemon *d = ctx;
    pd_user_info ui;
    if (pd_engine_user_info(d->engine, user, len, &ui) < 0) {
        snprintf(err, errlen, "unknown user (never seen, forgotten or evicted)");
        return NULL;
    }
    /* copied out: the next engine call (scoring) may move them */
    int64_t last_by_type[PD_MAX_EVENT_TYPES];
    size_t n_types = ui.n_types < PD_MAX_EVENT_TYPES ? ui.n_types : PD_MAX_EVENT_TYPES;
    memcpy(last_by_type, ui.last_ts_by_type, n_types * sizeof *last_by_type);
    pd_score scores[64];
    int n = pd_engine_score_user(d->engine, user, len, scores, 64);
    if (n < 0) {
        snprintf(err, errlen, "unknown user (never seen, forgotten or evicted)");
        return NULL;
    }
    json_t *by_output = json_object(), *models = json_array();
    int e = 0;
    for (int i = 0; i < n && e == 0; i++) {
        const pd_model_conf *mc = &d->conf->models[scores[i].model];
        pd_model_info mi;
        pd_engine_model_info(d->engine, (size_t)scores[i].model, &mi);
        e |= json_object_set_new(by_output, mc->output ? mc->output : mc->name,
                                 number(scores[i].value));
        json_t *m = json_object();
        e |= json_array_append_new(models, m); /* the list owns m even when this fails */
        e |= json_object_set_new(m, "name", pd_control_string(mi.name));
        e |= json_object_set_new(m, "output", pd_control_string(mi.output ? mi.output : mi.name));
        e |= json_object_set_new(m, "score", number(scores[i].value));
        e |= json_object_set_new(m, "publishing", json_boolean(mi.gate_open));
    }
    json_t *by_type = json_object();
    for (size_t i = 0; i < n_types && i < d->conf->events.n_types && e == 0; i++)
        if (last_by_type[i] != INT64_MIN)
            e |= json_object_set_new(by_type, d->conf->events.types[i],
                                     json_integer(last_by_type[i]));

    json_t *state = json_object();
    e |= json_object_set_new(state, "events", json_integer(ui.events));
    e |= json_object_set_new(state, "first_ts", number((double)ui.first_ts_ms));
    e |= json_object_set_new(state, "last_ts",
                             number(ui.last_ts_ms == INT64_MIN ? NAN : (double)ui.last_ts_ms));
    e |= json_object_set_new(state, "pending_examples", json_integer(ui.pending));
    e |= json_object_set_new(state, "recent_items", json_integer(ui.recent_items));
    e |= json_object_set_new(state, "last_ts_by_type", by_type);

    json_t *r = json_object();
    e |= json_object_set_new(r, "user", json_stringn(user, len));
    e |= json_object_set_new(r, "generation", json_integer(pd_engine_generation(d->engine)));
    e |= json_object_set_new(r, "scores", by_output);
    e |= json_object_set_new(r, "models", models);
    e |= json_object_set_new(r, "state", state);
    if (e) {
        json_decref(r);
        return NULL;
    }
    return r;
}

static json_t *cmd_forget(void *ctx, const char *user, size_t len, char *err, size_t errlen)
{
    pd_daemon *d = ctx;
    bool known = pd_engine_forget(d->engine, user, len);
    /* the keys may exist even when the state does not (evicted, or written by another
     * instance before a rebalance), so the deletion is always queued */
    if (pd_publisher_forget(d->pub, user, len) < 0) {
        snprintf(err, errlen, "out of memory queueing the deletion of the user's keys");
        return NULL;
    }
    bool deleted = flush_and_commit(d, true) == 0;
    d->forgets_control++;
    audit_forget(user, len, "control", known, deleted ? "deleted" : "queued");
    feed_forget(d, user, len);
    char path[1024] = "";
    bool snap = false;
    if (d->conf->snapshot.dir) {
        snap = write_snapshot(d, "forget", 1, path, sizeof path) == 0;
        d->forget_snapshot_ms = INT64_MAX; /* this one covers earlier forget events too */
    }
    return json_pack("{s:s%, s:b, s:b, s:o}", "user", user, len, "known", known, "redis_deleted",
                     deleted, "snapshot", pd_control_string(snap ? path : NULL));
}

static void notify_ready(pd_daemon *d)
{
    char line[256];
    status_line(d, line, sizeof line);
    pd_notify_ready(d->notify, line);
}

/* A reload bracketed by RELOADING=1 and READY=1, as systemd expects. */
static int reload_notified(pd_daemon *d, char *msg, size_t len)
{
    if (d->ready)
        pd_notify_reloading(d->notify, "reloading configuration");
    int r = reload(d, msg, len);
    if (d->ready)
        notify_ready(d);
    return r;
}

static json_t *cmd_reload(void *ctx, const char *arg, size_t arg_len, char *err, size_t errlen)
{
    (void)arg;
    (void)arg_len;
    pd_daemon *d = ctx;
    char msg[1024];
    if (reload_notified(d, msg, sizeof msg) < 0) {
        snprintf(err, errlen, "reload failed: %s", msg);
        return NULL;
    }
    return json_pack("{s:I, s:I, s:o}", "generation", (json_int_t)pd_engine_generation(d->engine),
                     "models", (json_int_t)d->conf->n_models, "fresh", pd_control_string(msg));
}

static json_t *cmd_snapshot(void *ctx, const char *arg, size_t arg_len, char *err, size_t errlen)
{
    (void)arg;
    (void)arg_len;
    pd_daemon *d = ctx;
    if (!d->conf->snapshot.dir) {
        snprintf(err, errlen, "snapshots are off (no snapshot.dir in the configuration)");
        return NULL;
    }
    char path[1024];
    if (write_snapshot(d, "control", 0, path, sizeof path) < 0) {
        snprintf(err, errlen, "snapshot failed: %s", path);
        return NULL;
    }
    return json_pack("{s:o, s:o}", "path", pd_control_string(path), "seconds",
                     number(d->last_snapshot_seconds));
}

static json_t *set_paused(pd_daemon *d, bool pause, char *err, size_t errlen)
{
    if ((pause ? pd_kafka_in_pause(d->in) : pd_kafka_in_resume(d->in)) < 0) {
        snprintf(err, errlen, "kafka refused to %s the assigned partitions",
                 pause ? "pause" : "resume");
        return NULL;
    }
    if (d->paused != pause)
        pd_logkv(PD_LOG_INFO, pause ? "consumption paused" : "consumption resumed",
                 "source=control");
    d->paused = pause;
    return json_pack("{s:b}", "paused", pause);
}

static json_t *cmd_pause(void *ctx, const char *arg, size_t arg_len, char *err, size_t errlen)
{
    (void)arg;
    (void)arg_len;
    return set_paused(ctx, true, err, errlen);
}

static json_t *cmd_resume(void *ctx, const char *arg, size_t arg_len, char *err, size_t errlen)
{
    (void)arg;
    (void)arg_len;
    return set_paused(ctx, false, err, errlen);
}

static json_t *cmd_log_level(void *ctx, const char *level, size_t len, char *err, size_t errlen)
{
    (void)ctx;
    pd_log_level l;
    char name[16];
    if (len >= sizeof name || memchr(level, '\0', len) ||
        (memcpy(name, level, len), name[len] = '\0', pd_log_level_parse(name, &l) < 0)) {
        snprintf(err, errlen, "unknown log level (debug, info, warning, error)");
        return NULL;
    }
    pd_log_level old = pd_log_get_level();
    pd_log_set_level(l);
    pd_logkv(PD_LOG_WARNING, "log level changed", "source=control level=%s previous=%s",
             pd_log_level_name(l), pd_log_level_name(old));
    return json_pack("{s:s, s:s}", "level", pd_log_level_name(l), "previous",
                     pd_log_level_name(old));
}

static const pd_control_command control_commands[] = {
    {"status", NULL, cmd_status},     {"reload", NULL, cmd_reload},
    {"snapshot", NULL, cmd_snapshot}, {"score", "user", cmd_score},
    {"forget", "user", cmd_forget},   {"pause", NULL, cmd_pause},
    {"resume", NULL, cmd_resume},     {"log-level", "level", cmd_log_level},
};

/* While Redis is awaited the loop does not run yet: status says so, the rest must wait. */
static json_t *cmd_status_starting(void *ctx, const char *arg, size_t arg_len, char *err,
                                   size_t errlen)
{
    (void)arg;
    (void)arg_len;
    (void)err;
    (void)errlen;
    pd_daemon *d = ctx;
    return json_pack("{s:s, s:s, s:b, s:o, s:o, s:o, s:s}", "version", PD_VERSION, "state",
                     "starting", "ready", 0, "not_ready_reason", pd_control_string(d->starting),
                     "uptime_seconds", number((double)(pd_clock_mono_ms() - d->started_ms) / 1000.0),
                     "config", pd_control_string(d->config_path), "log_level",
                     pd_log_level_name(pd_log_get_level()));
}

static json_t *cmd_starting(void *ctx, const char *arg, size_t arg_len, char *err, size_t errlen)
{
    (void)arg;
    (void)arg_len;
    pd_daemon *d = ctx;
    snprintf(err, errlen, "not yet: the daemon is starting (%s)", d->starting);
    return NULL;
}

static const pd_control_command starting_commands[] = {
    {"status", NULL, cmd_status_starting}, {"reload", NULL, cmd_starting},
    {"snapshot", NULL, cmd_starting},      {"score", "user", cmd_starting},
    {"forget", "user", cmd_starting},      {"pause", NULL, cmd_starting},
    {"resume", NULL, cmd_starting},        {"log-level", "level", cmd_log_level},
};

/* ---- operations start and stop ---- */

/* The control endpoint: the configured one, else a socket in systemd's RuntimeDirectory. */
static const char *control_endpoint(const pd_config *conf, char *buf, size_t len)
{
    if (conf->daemon.control)
        return conf->daemon.control;
    const char *rt = getenv("RUNTIME_DIRECTORY");
    if (!rt || !*rt)
        return NULL;
    size_t n = strcspn(rt, ":"); /* several directories are separated by colons */
    snprintf(buf, len, "ipc://%.*s/control.sock", (int)n, rt);
    return buf;
}

static int start_ops(pd_daemon *d)
{
    char err[512], ep[600];
    d->notify = pd_notify_new(d->conf->daemon.watchdog_ms);
    if (!d->notify) {
        pd_log_error("out of memory");
        return -ENOMEM;
    }
    pd_control_conf cc = {.endpoint = control_endpoint(d->conf, ep, sizeof ep),
                          .feed = d->conf->daemon.feed,
                          .curve_secret_file = d->conf->daemon.control_curve_secret_file};
    d->ctl = pd_control_new(&cc, err, sizeof err);
    if (!d->ctl) {
        pd_log_error("%s", err);
        return -EINVAL;
    }
    if (d->conf->daemon.http) {
        int64_t wd = pd_notify_watchdog_ms(d->notify);
        d->http = pd_http_new(d->conf->daemon.http, wd > 0 ? wd : 30000, err, sizeof err);
        if (!d->http) {
            pd_log_error("%s", err);
            return -EINVAL;
        }
    }
    pd_logkv(PD_LOG_INFO, "operations endpoints", "control=%s feed=%s http=%s watchdog_ms=%" PRId64,
             pd_control_endpoint(d->ctl) ? pd_control_endpoint(d->ctl) : "off",
             pd_control_feed_endpoint(d->ctl) ? pd_control_feed_endpoint(d->ctl) : "off",
             d->conf->daemon.http ? d->conf->daemon.http : "off", pd_notify_watchdog_ms(d->notify));
    return 0;
}

/* The consumer queue writes to a pipe when it goes from empty to not, so one wait covers
 * Kafka and the control socket. */
static void start_wakeup(pd_daemon *d)
{
    if (pipe2(d->wake, O_NONBLOCK | O_CLOEXEC) < 0) {
        d->wake[0] = d->wake[1] = -1;
        return; /* the loop then wakes every MAX_WAIT_MS at worst */
    }
    d->kq = rd_kafka_queue_get_consumer(pd_kafka_in_handle(d->in));
    if (d->kq)
        rd_kafka_queue_io_event_enable(d->kq, d->wake[1], "1", 1);
}

static void stop_wakeup(pd_daemon *d)
{
    if (d->kq) {
        rd_kafka_queue_io_event_enable(d->kq, -1, NULL, 0);
        rd_kafka_queue_destroy(d->kq);
        d->kq = NULL;
    }
    for (int i = 0; i < 2; i++) {
        if (d->wake[i] >= 0)
            close(d->wake[i]);
        d->wake[i] = -1;
    }
}

static void drain_wakeup(pd_daemon *d)
{
    char buf[64];
    while (d->wake[0] >= 0 && read(d->wake[0], buf, sizeof buf) > 0)
        ;
}

/* ---- life cycle ---- */

pd_daemon *pd_daemon_new(const char *config_path, pd_config *conf, char *errbuf, size_t errlen)
{
    pd_daemon *d = calloc(1, sizeof *d);
    const char **fields = NULL;
    if (d)
        d->wake[0] = d->wake[1] = -1;
    if (!d || !(d->config_path = strdup(config_path))) {
        snprintf(errbuf, errlen, "out of memory");
        free(d);
        return NULL;
    }
    d->engine = pd_engine_new(conf, errbuf, errlen);
    if (!d->engine)
        goto out_free;
    if (publisher_fields(conf, &fields) < 0) {
        snprintf(errbuf, errlen, "out of memory");
        goto out_free;
    }
    d->pub = pd_publisher_new(&conf->redis, fields, conf->n_models, errbuf, errlen);
    free(fields);
    if (!d->pub)
        goto out_free;
    d->batch_cap = conf->kafka.poll_batch > 0 ? (size_t)conf->kafka.poll_batch : 1000;
    d->batch = calloc(d->batch_cap, sizeof *d->batch);
    if (!d->batch) {
        snprintf(errbuf, errlen, "out of memory");
        goto out_free;
    }
    d->sources = rd_kafka_topic_partition_list_new(16);
    d->forget_snapshot_ms = INT64_MAX;
    d->conf = conf;
    return d;

out_free:
    d->conf = NULL; /* still the caller's */
    pd_daemon_free(d);
    return NULL;
}

void pd_daemon_free(pd_daemon *d)
{
    if (!d)
        return;
    /* the control socket file and the HTTP port go first: a hanging Kafka teardown below
     * may end the process before the rest is freed */
    pd_control_free(d->ctl);
    d->ctl = NULL;
    pd_http_free(d->http);
    d->http = NULL;
    if (d->in) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_teardown_timeout;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGALRM, &sa, NULL);
        alarm(5);
    }
    stop_wakeup(d);
    pd_kafka_in_free(d->in);
    pd_dead_letter_free(d->dlq);
    pd_publisher_free(d->pub);
    pd_engine_free(d->engine);
    pd_config_free(d->conf);
    if (d->restore_offsets)
        rd_kafka_topic_partition_list_destroy(d->restore_offsets);
    if (d->sources)
        rd_kafka_topic_partition_list_destroy(d->sources);
    free(d->source_seen_ms);
    pd_notify_free(d->notify);
    pd_strbuf_release(&d->text);
    free(d->batch);
    free(d->config_path);
    free(d);
}

/* Connects to Redis before consuming anything, retrying with backoff until it answers or a
 * stop is requested. Waiting for a dependency is progress, so the watchdog is fed. */
static int connect_redis(pd_daemon *d)
{
    char err[512];
    int64_t backoff = 100;
    while (!got_stop) {
        pd_notify_watchdog(d->notify, pd_clock_mono_ms());
        if (d->http)
            pd_http_heartbeat(d->http, pd_clock_mono_ms());
        if (pd_publisher_connect(d->pub, err, sizeof err) == 0) {
            pd_log_info("connected to redis");
            return 0;
        }
        pd_log_error("%s; retrying in %" PRId64 " ms", err, backoff);
        snprintf(d->starting, sizeof d->starting, "waiting for redis: %s", err);
        pd_notify_status(d->notify, d->starting);
        /* the control socket answers meanwhile, so `propensityctl status` says why */
        for (int64_t until = pd_clock_mono_ms() + backoff; !got_stop && pd_clock_mono_ms() < until;) {
            pd_control_wait(d->ctl, -1, (int)(until - pd_clock_mono_ms()));
            pd_control_serve(d->ctl, starting_commands,
                             sizeof starting_commands / sizeof starting_commands[0], d,
                             CONTROL_BATCH);
        }
        backoff = backoff * 2 > MAX_BACKOFF_MS ? MAX_BACKOFF_MS : backoff * 2;
    }
    return -EINTR;
}

static int start_inputs(pd_daemon *d)
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
        .ctx = d, .revoking = on_revoking, .assigning = on_assigning, .log = on_kafka_log};
    d->in = pd_kafka_in_new(&d->conf->kafka, &hooks, err, sizeof err);
    if (!d->in) {
        pd_log_error("%s", err);
        return -EINVAL;
    }
    return 0;
}

static void log_stop_summary(pd_daemon *d)
{
    pd_engine_stats es;
    pd_engine_get_stats(d->engine, &es);
    pd_publisher_stats ps;
    pd_publisher_get_stats(d->pub, &ps);
    uint64_t decode_errors = 0;
    for (int i = 0; i < PD_DECODE__COUNT; i++)
        decode_errors += es.decode_errors[i];
    pd_logkv(PD_LOG_INFO, "stopped",
             "events=%" PRIu64 " decode_errors=%" PRIu64 " dead_lettered=%" PRIu64 " users=%" PRIu64
             " redis_flushes=%" PRIu64 " redis_user_writes=%" PRIu64,
             es.events, decode_errors, d->dead_lettered, es.users, ps.flushes, ps.user_writes);
}

/* Sends READY=1 once a Kafka broker answers (Redis is connected and any snapshot restored
 * before the loop starts). */
static void check_ready(pd_daemon *d, int64_t t)
{
    if (d->ready || t < d->next_ready_check_ms)
        return;
    d->next_ready_check_ms = t + READY_CHECK_MS;
    if (!pd_kafka_in_reachable(d->in, 500)) {
        pd_notify_status(d->notify, "waiting for kafka: no broker answers");
        return;
    }
    d->ready = true;
    update_rate(d, pd_clock_mono_ms());
    notify_ready(d);
    pd_log_info("ready: kafka and redis reachable");
}

/* The periodic duties of the loop that are not Kafka or Redis. */
static void ops_tick(pd_daemon *d, int64_t t)
{
    check_ready(d, t);
    if (d->paused) {
        pd_kafka_stats ks;
        pd_kafka_in_get_stats(d->in, &ks);
        if (ks.rebalances != d->rebalances_seen && pd_kafka_in_repause(d->in) < 0)
            pd_log_warning("could not pause partitions assigned while paused");
        d->rebalances_seen = ks.rebalances;
    }
    if (t >= d->next_status_ms) {
        update_rate(d, t);
        if (d->ready) {
            char line[256];
            status_line(d, line, sizeof line);
            pd_notify_status(d->notify, line);
        }
        d->next_status_ms = t + STATUS_MS;
    }
    if (t >= d->next_render_ms) {
        publish_health(d);
        d->next_render_ms = t + RENDER_MS;
    }
    if (t >= d->forget_snapshot_ms) {
        /* the deletions go to Redis before the snapshot that no longer replays them */
        if (flush_and_commit(d, false) == 0) {
            write_snapshot(d, "forget", 1, NULL, 0);
            d->forget_snapshot_ms = INT64_MAX;
        } else {
            d->forget_snapshot_ms = t + FORGET_SNAPSHOT_MS;
        }
    }
    /* the loop came round: that is the progress the watchdog and /healthz vouch for */
    pd_notify_watchdog(d->notify, t);
    if (d->http)
        pd_http_heartbeat(d->http, t);
}

int pd_daemon_run(pd_daemon *d)
{
    int status = 0;
    if (install_signals() < 0) {
        pd_log_error("cannot install signal handlers: %s", strerror(errno));
        return 1;
    }
    d->started_ms = pd_clock_mono_ms();
    d->started_wall_ms = pd_clock_wall_ms();
    if (start_ops(d) < 0)
        return 1;
    pd_notify_status(d->notify, "starting: restoring the snapshot");
    if (restore_snapshot(d) < 0)
        return 1;
    pd_notify_status(d->notify, "starting: connecting to redis");
    if (connect_redis(d) < 0)
        return 0; /* stopped before anything was consumed */
    pd_notify_status(d->notify, "starting: joining the kafka consumer group");
    if (start_inputs(d) < 0)
        return 1;
    start_wakeup(d);
    pd_logkv(PD_LOG_INFO, "started", "models=%zu features=%zu topics=%zu", d->conf->n_models,
             d->conf->n_features, d->conf->kafka.n_topics);

    int64_t interval = d->conf->redis.flush_interval_ms > 0 ? d->conf->redis.flush_interval_ms : 50;
    d->next_flush_ms = pd_clock_mono_ms() + interval;
    d->next_summary_ms = pd_clock_mono_ms();
    d->next_snapshot_ms =
        d->conf->snapshot.interval_ms > 0 ? pd_clock_mono_ms() + d->conf->snapshot.interval_ms : INT64_MAX;
    while (!got_stop) {
        if (got_reload) {
            char msg[1024];
            got_reload = 0;
            reload_notified(d, msg, sizeof msg);
            interval = d->conf->redis.flush_interval_ms > 0 ? d->conf->redis.flush_interval_ms : 50;
        }
        int64_t t = pd_clock_mono_ms();
        int timeout = (int)(d->next_flush_ms > t ? d->next_flush_ms - t : 0);
        if (timeout > MAX_WAIT_MS)
            timeout = MAX_WAIT_MS;
        if (d->batch_full)
            timeout = 0; /* the queue was not drained: its wakeup will not come again */
        int ready = pd_control_wait(d->ctl, d->wake[0], timeout);
        if (ready & PD_CONTROL_FD)
            drain_wakeup(d);
        size_t n = pd_kafka_in_poll(d->in, d->batch, d->batch_cap, 0);
        d->batch_full = n == d->batch_cap;
        d->loop_ms = pd_clock_mono_ms();
        if (d->snapshot_on_assign) {
            /* the batch is not processed yet: the snapshot holds where each new partition
             * starts (pd_kafka_in_positions) and none of its events */
            d->snapshot_on_assign = false;
            write_snapshot(d, "assignment", 0, NULL, 0);
        }
        for (size_t i = 0; i < n; i++) {
            handle_message(d, d->batch[i]);
            pd_kafka_in_processed(d->in, d->batch[i]);
            rd_kafka_message_destroy(d->batch[i]);
        }
        pd_kafka_in_each_lag(d->in, mark_idle, d);
        if (d->dlq)
            pd_dead_letter_poll(d->dlq);
        pd_control_serve(d->ctl, control_commands,
                         sizeof control_commands / sizeof control_commands[0], d, CONTROL_BATCH);
        t = pd_clock_mono_ms();
        if (t >= d->next_summary_ms) {
            put_model_summaries(d);
            d->next_summary_ms = t + MODEL_SUMMARY_MS;
        }
        if (t >= d->next_flush_ms && t >= d->retry_at_ms) {
            if (flush_and_commit(d, false) < 0) {
                /* keep consuming and coalescing; retry with backoff */
                d->backoff_ms = d->backoff_ms ? d->backoff_ms * 2 : 100;
                if (d->backoff_ms > MAX_BACKOFF_MS)
                    d->backoff_ms = MAX_BACKOFF_MS;
                d->retry_at_ms = t + d->backoff_ms;
            } else {
                if (d->backoff_ms)
                    pd_log_info("redis writes recovered");
                d->backoff_ms = 0;
            }
            d->next_flush_ms = t + interval;
        }
        if (t >= d->next_snapshot_ms) {
            write_snapshot(d, "interval", 0, NULL, 0);
            d->next_snapshot_ms = d->conf->snapshot.interval_ms > 0
                                      ? pd_clock_mono_ms() + d->conf->snapshot.interval_ms
                                      : INT64_MAX;
        }
        ops_tick(d, t);
    }

    pd_log_info("stopping: draining the batch in hand, flushing redis, committing offsets");
    pd_notify_stopping(d->notify, "stopping: flushing redis, committing offsets, snapshot");
    if (d->http)
        pd_http_set_ready(d->http, false, "stopping");
    put_model_summaries(d);
    int64_t deadline = pd_clock_mono_ms() + 30000;
    while (flush_and_commit(d, true) < 0) {
        if (pd_clock_mono_ms() > deadline) {
            pd_log_error("could not flush before stopping; uncommitted events will be consumed "
                         "again on restart");
            status = 1;
            break;
        }
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 200 * 1000000};
        nanosleep(&ts, NULL);
    }
    if (write_snapshot(d, "stop", d->forget_snapshot_ms != INT64_MAX ? 1 : 0, NULL, 0) < 0)
        status = 1;
    stop_wakeup(d);
    pd_kafka_in_close(d->in); /* leaves the group; the revoke hook finds nothing left */
    log_stop_summary(d);
    exit_status = status;
    return status;
}

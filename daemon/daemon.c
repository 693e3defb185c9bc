/* The daemon's loop: poll a batch from Kafka, run each event through the engine, coalesce the
 * scores in the publisher, and every flush interval write them to Redis and then commit the
 * offsets that were processed before the flush began. */
#include "daemon/daemon.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "daemon/log.h"
#include "models/snapshot.h"
#include "pipeline/dead_letter.h"
#include "pipeline/engine.h"
#include "pipeline/kafka_in.h"
#include "pipeline/publisher.h"

#define MODEL_SUMMARY_MS 1000
#define MAX_BACKOFF_MS 5000

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

struct pd_daemon {
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
    /* event-time sources: one per partition, so a lagging partition holds the watermark */
    rd_kafka_topic_partition_list_t *sources;
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

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

/* The engine's source id of a message's partition (its index in d->sources). */
static uint32_t source_of(pd_daemon *d, const char *topic, int32_t partition)
{
    for (int i = 0; i < d->sources->cnt; i++)
        if (d->sources->elems[i].partition == partition &&
            strcmp(d->sources->elems[i].topic, topic) == 0)
            return (uint32_t)i;
    rd_kafka_topic_partition_list_add(d->sources, topic, partition);
    return (uint32_t)(d->sources->cnt - 1);
}

static void mark_idle(void *ctx, const char *topic, int32_t partition, int64_t lag)
{
    pd_daemon *d = ctx;
    /* caught up: until its next event the partition must not hold the watermark back; not
     * caught up or not known yet (no fetch answered): it holds the watermark */
    pd_engine_source_idle(d->engine, source_of(d, topic, partition), lag == 0);
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
    for (int i = 0; i < parts->cnt; i++)
        pd_engine_source_remove(d->engine,
                                source_of(d, parts->elems[i].topic, parts->elems[i].partition));
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
    pd_log_level l = level <= 3 ? PD_LOG_ERROR
                                : (level == 4 ? PD_LOG_WARNING
                                              : (level <= 6 ? PD_LOG_INFO : PD_LOG_DEBUG));
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

static void put_model_summaries(pd_daemon *d)
{
    size_t n = pd_engine_model_count(d->engine);
    for (size_t i = 0; i < n; i++) {
        pd_model_info mi;
        pd_engine_model_info(d->engine, i, &mi);
        char v[16][40];
        const char *fields[16], *values[16];
        size_t k = 0;
#define PUT_U(name, x)                                                                            \
    do {                                                                                          \
        fields[k] = name;                                                                         \
        snprintf(v[k], sizeof v[k], "%" PRIu64, (uint64_t)(x));                                   \
        values[k] = v[k];                                                                         \
        k++;                                                                                      \
    } while (0)
#define PUT_D(name, x)                                                                            \
    do {                                                                                          \
        fields[k] = name;                                                                         \
        fmt_metric(v[k], sizeof v[k], x);                                                         \
        values[k] = v[k];                                                                         \
        k++;                                                                                      \
    } while (0)
        PUT_U("generation", mi.generation);
        PUT_U("examples", mi.examples);
        PUT_U("positives", mi.positives);
        PUT_U("predictions", mi.predictions);
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
        PUT_U("updated", wall_ms());
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
        pd_logkv(PD_LOG_WARNING, "dropped an event that does not decode", "reason=%s topic=%s "
                 "partition=%" PRId32 " offset=%" PRId64,
                 pd_decode_error_name(err), topic, m->partition, m->offset);
        return;
    }
    char msg[512];
    if (pd_dead_letter_send(d->dlq, m->payload, m->len, m->key, m->key_len,
                            pd_decode_error_name(err), detail, topic, m->partition, m->offset,
                            msg, sizeof msg) < 0) {
        d->dead_letter_failures++;
        pd_log_error("%s", msg);
        return;
    }
    d->dead_lettered++;
}

static void handle_message(pd_daemon *d, const rd_kafka_message_t *m)
{
    pd_event ev;
    char detail[256];
    rd_kafka_timestamp_type_t tstype;
    int64_t fallback = rd_kafka_message_timestamp(m, &tstype);
    pd_decode_error err = pd_engine_decode(d->engine, m->payload ? m->payload : "", m->len,
                                           fallback, &ev, detail, sizeof detail);
    if (err != PD_DECODE_OK) {
        dead_letter(d, m, err, detail);
        return;
    }
    ev.source = source_of(d, rd_kafka_topic_name(m->rkt), m->partition);
    pd_engine_result res;
    if (pd_engine_process(d->engine, &ev, &res) < 0) {
        d->process_errors++;
        pd_log_error("out of memory processing an event; its effects may be partial");
    }
    if (res.forgotten) {
        if (pd_publisher_forget(d->pub, res.user, res.user_len) < 0)
            pd_log_error("out of memory queueing the deletion of a user's keys");
        pd_logkv(PD_LOG_INFO, "forgot a user on request", "source=event");
        return;
    }
    if (res.n_scores == 0)
        return;
    pd_publish_score scores[64];
    size_t n = res.n_scores < 64 ? res.n_scores : 64;
    for (size_t i = 0; i < n; i++)
        scores[i] = (pd_publish_score){.field = res.scores[i].model,
                                       .value = res.scores[i].value};
    if (pd_publisher_update(d->pub, res.user, res.user_len, wall_ms(),
                            pd_engine_generation(d->engine), scores, n) < 0)
        pd_log_error("out of memory queueing scores for redis");
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

static void reload(pd_daemon *d)
{
    char err[1024], fresh[1024];
    pd_log_info("reloading configuration from \"%s\"", d->config_path);
    pd_diag *diag = pd_diag_new();
    pd_config *conf = diag ? pd_config_load(d->config_path, diag) : NULL;
    if (!conf) {
        d->reload_failures++;
        pd_log_error("reload failed: \"%s\" has errors; keeping the running configuration",
                     d->config_path);
        for (size_t i = 0; diag && i < pd_diag_count(diag); i++)
            pd_log_error("%s", pd_diag_message(diag, i));
        goto out_diag;
    }
    if (!pd_config_reloadable(d->conf, conf, err, sizeof err)) {
        d->reload_failures++;
        pd_log_error("reload refused: %s; keeping the running configuration", err);
        goto out_conf;
    }
    /* scores waiting in the publisher are indexed by the old model order */
    if (flush_and_commit(d, false) < 0) {
        d->reload_failures++;
        pd_log_error("reload postponed: redis did not take the waiting scores");
        got_reload = 1;
        goto out_conf;
    }
    const char **fields = NULL;
    if (publisher_fields(conf, &fields) < 0) {
        pd_log_error("reload failed: out of memory");
        goto out_conf;
    }
    if (pd_engine_reconfigure(d->engine, conf, fresh, sizeof fresh, err, sizeof err) < 0) {
        d->reload_failures++;
        pd_log_error("reload failed: %s; keeping the running configuration", err);
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
    if (fresh[0])
        pd_log_info("models starting fresh after reload: %s", fresh);
    pd_logkv(PD_LOG_INFO, "configuration reloaded", "models=%zu features=%zu generation=%" PRIu64,
             conf->n_models, conf->n_features, pd_engine_generation(d->engine));
    conf = NULL;
out_conf:
    pd_config_free(conf);
out_diag:
    pd_diag_free(diag);
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

/* Writes the engine's state and the offsets it covers. Everything processed so far is in the
 * engine, so the processed positions are exactly what the snapshot includes. */
static int write_snapshot(pd_daemon *d, const char *why)
{
    const pd_snapshot_conf *sc = &d->conf->snapshot;
    if (!sc->dir)
        return 0;
    char err[512], path[1024];
    int64_t t0 = now_ms();
    pd_snapshot_writer *w = pd_snapshot_writer_new(sc->dir, d->conf->fingerprint, wall_ms(),
                                                   err, sizeof err);
    if (!w)
        goto out_fail;
    if (pd_engine_save(d->engine, w, err, sizeof err) < 0) {
        pd_snapshot_writer_abort(w);
        goto out_fail;
    }
    rd_kafka_topic_partition_list_t *pos = d->in ? pd_kafka_in_positions(d->in) : NULL;
    FILE *f = pd_snapshot_writer_section(w, "kafka.offsets");
    int r = f ? save_offsets(f, pos) : -EIO;
    if (pos)
        rd_kafka_topic_partition_list_destroy(pos);
    if (r < 0) {
        snprintf(err, sizeof err, "cannot write the kafka offsets to the snapshot");
        pd_snapshot_writer_abort(w);
        goto out_fail;
    }
    if (pd_snapshot_writer_commit(w, (int)sc->keep, path, sizeof path, err, sizeof err) < 0)
        goto out_fail;
    d->snapshots++;
    d->last_snapshot_wall_ms = wall_ms();
    d->last_snapshot_seconds = (double)(now_ms() - t0) / 1000.0;
    pd_logkv(PD_LOG_INFO, "snapshot written", "path=%s reason=%s seconds=%.3f", path, why,
             d->last_snapshot_seconds);
    return 0;

out_fail:
    d->snapshot_failures++;
    pd_log_error("snapshot failed: %s", err);
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

/* ---- life cycle ---- */

pd_daemon *pd_daemon_new(const char *config_path, pd_config *conf, char *errbuf, size_t errlen)
{
    pd_daemon *d = calloc(1, sizeof *d);
    const char **fields = NULL;
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
    if (d->in) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_teardown_timeout;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGALRM, &sa, NULL);
        alarm(10);
    }
    pd_kafka_in_free(d->in);
    pd_dead_letter_free(d->dlq);
    pd_publisher_free(d->pub);
    pd_engine_free(d->engine);
    pd_config_free(d->conf);
    if (d->restore_offsets)
        rd_kafka_topic_partition_list_destroy(d->restore_offsets);
    if (d->sources)
        rd_kafka_topic_partition_list_destroy(d->sources);
    free(d->batch);
    free(d->config_path);
    free(d);
}

/* Connects to Redis before consuming anything, retrying with backoff until it answers or a
 * stop is requested. */
static int connect_redis(pd_daemon *d)
{
    char err[512];
    int64_t backoff = 100;
    while (!got_stop) {
        if (pd_publisher_connect(d->pub, err, sizeof err) == 0) {
            pd_log_info("connected to redis");
            return 0;
        }
        pd_log_error("%s; retrying in %" PRId64 " ms", err, backoff);
        struct timespec ts = {.tv_sec = backoff / 1000, .tv_nsec = (backoff % 1000) * 1000000};
        nanosleep(&ts, NULL);
        backoff = backoff * 2 > MAX_BACKOFF_MS ? MAX_BACKOFF_MS : backoff * 2;
    }
    return -EINTR;
}

static int start_inputs(pd_daemon *d)
{
    char err[512];
    if (d->conf->events.dead_letter_topic) {
        d->dlq = pd_dead_letter_new(&d->conf->kafka, d->conf->events.dead_letter_topic, err,
                                    sizeof err);
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
             "events=%" PRIu64 " decode_errors=%" PRIu64 " dead_lettered=%" PRIu64
             " users=%" PRIu64 " redis_flushes=%" PRIu64 " redis_user_writes=%" PRIu64,
             es.events, decode_errors, d->dead_lettered, es.users, ps.flushes, ps.user_writes);
}

int pd_daemon_run(pd_daemon *d)
{
    int status = 0;
    if (install_signals() < 0) {
        pd_log_error("cannot install signal handlers: %s", strerror(errno));
        return 1;
    }
    if (restore_snapshot(d) < 0)
        return 1;
    if (connect_redis(d) < 0)
        return 0; /* stopped before anything was consumed */
    if (start_inputs(d) < 0)
        return 1;
    pd_logkv(PD_LOG_INFO, "started", "models=%zu features=%zu topics=%zu",
             d->conf->n_models, d->conf->n_features, d->conf->kafka.n_topics);

    int64_t interval = d->conf->redis.flush_interval_ms > 0 ? d->conf->redis.flush_interval_ms
                                                            : 50;
    d->next_flush_ms = now_ms() + interval;
    d->next_summary_ms = now_ms();
    d->next_snapshot_ms = d->conf->snapshot.interval_ms > 0
                              ? now_ms() + d->conf->snapshot.interval_ms
                              : INT64_MAX;
    while (!got_stop) {
        if (got_reload) {
            got_reload = 0;
            reload(d);
            interval = d->conf->redis.flush_interval_ms > 0 ? d->conf->redis.flush_interval_ms
                                                            : 50;
        }
        int64_t t = now_ms();
        int timeout = (int)(d->next_flush_ms > t ? d->next_flush_ms - t : 0);
        if (timeout > 100)
            timeout = 100;
        size_t n = pd_kafka_in_poll(d->in, d->batch, d->batch_cap, timeout);
        for (size_t i = 0; i < n; i++) {
            handle_message(d, d->batch[i]);
            pd_kafka_in_processed(d->in, d->batch[i]);
            rd_kafka_message_destroy(d->batch[i]);
        }
        pd_kafka_in_each_lag(d->in, mark_idle, d);
        if (d->dlq)
            pd_dead_letter_poll(d->dlq);
        t = now_ms();
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
            write_snapshot(d, "interval");
            d->next_snapshot_ms = d->conf->snapshot.interval_ms > 0
                                      ? now_ms() + d->conf->snapshot.interval_ms
                                      : INT64_MAX;
        }
    }

    pd_log_info("stopping: draining the batch in hand, flushing redis, committing offsets");
    put_model_summaries(d);
    int64_t deadline = now_ms() + 30000;
    while (flush_and_commit(d, true) < 0) {
        if (now_ms() > deadline) {
            pd_log_error("could not flush before stopping; uncommitted events will be consumed "
                         "again on restart");
            status = 1;
            break;
        }
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 200 * 1000000};
        nanosleep(&ts, NULL);
    }
    if (write_snapshot(d, "stop") < 0)
        status = 1;
    pd_kafka_in_close(d->in); /* leaves the group; the revoke hook finds nothing left */
    log_stop_summary(d);
    exit_status = status;
    return status;
}

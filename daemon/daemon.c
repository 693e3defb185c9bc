/* The daemon's life cycle and its loop. Each turn: poll a batch from Kafka, run it through the
 * engine into the publisher, answer the control socket, and when due flush to Redis and then
 * commit the offsets that were processed before the flush began. Everything that touches the
 * engine happens on this one thread; daemon_internal.h says which file holds each concern. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "daemon/daemon_internal.h"
#include "daemon/log.h"
#include "models/topk.h"

#define MAX_WAIT_MS 100 /* longest the loop sleeps: bounds stop and control latency */

static volatile sig_atomic_t got_stop;
static volatile sig_atomic_t got_reload;
static volatile sig_atomic_t exit_status;

/* The stop is bounded as a whole (STOP_LIMIT_S from SIGTERM, README "How it keeps what it
 * accepted"): the last flush and commit are retried for up to STOP_FLUSH_MS
 * (daemon_flush.c), then the snapshot is written, then the consumer leaves the group and is
 * destroyed. rd_kafka_consumer_close() and rd_kafka_destroy() can wait on a broker thread
 * without end (librdkafka 2.0, a broker gone or a rare teardown race), so an alarm armed when
 * the drain begins ends the process once the bound has passed, with the status decided so
 * far: 1 until the flush and the snapshot are done, theirs after (what the close would add is
 * leaving the group, which the session timeout does too). The handler only writes a fixed
 * line and exits. */
#define STOP_LIMIT_S   35
#define TEARDOWN_MAX_S 5 /* the Kafka teardown's share, when no drain ran before it */
#define STR_(x)        #x
#define STR(x)         STR_(x)

/* flushed, committed and snapshotted: only Kafka's teardown is left */
static volatile sig_atomic_t drained;

static void on_stop_timeout(int sig)
{
    (void)sig;
    static const char late[] = "level=warning msg=\"stopping took longer than its bound; "
                               "exiting anyway\" bound_seconds=" STR(STOP_LIMIT_S) "\n";
    static const char teardown[] = "level=warning msg=\"kafka client teardown is hanging after "
                                   "a clean stop; exiting anyway\"\n";
    ssize_t w = drained ? write(STDERR_FILENO, teardown, sizeof teardown - 1)
                        : write(STDERR_FILENO, late, sizeof late - 1);
    (void)w;
    _exit(exit_status);
}

/* Arms the stop's alarm for at most seconds, never later than one already running. */
static void arm_stop_limit(unsigned seconds)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_timeout;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, NULL);
    unsigned left = alarm(0);
    alarm(left && left < seconds ? left : seconds);
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

/* ---- life cycle ---- */

pd_daemon *pd_daemon_new(const char *config_path, pd_config *conf, char *errbuf, size_t errlen)
{
    pd_daemon *d = calloc(1, sizeof *d);
    const char **fields = NULL;
    if (d)
        d->loop.wake[0] = d->loop.wake[1] = -1;
    if (!d || !(d->config_path = strdup(config_path))) {
        snprintf(errbuf, errlen, "out of memory");
        free(d);
        return NULL;
    }
    d->engine = pd_engine_new(conf, errbuf, errlen);
    if (!d->engine)
        goto out_free;
    if (daemon_publisher_fields(conf, &fields) < 0) {
        snprintf(errbuf, errlen, "out of memory");
        goto out_free;
    }
    d->pub = pd_publisher_new(&conf->redis, fields, conf->n_models, errbuf, errlen);
    free(fields);
    if (!d->pub)
        goto out_free;
    d->loop.batch_cap = conf->kafka.poll_batch > 0 ? (size_t)conf->kafka.poll_batch : 1000;
    d->loop.batch = calloc(d->loop.batch_cap, sizeof *d->loop.batch);
    d->sources = pd_sources_new();
    if (!d->loop.batch || !d->sources) {
        snprintf(errbuf, errlen, "out of memory");
        goto out_free;
    }
    d->snap.forget_ms = INT64_MAX;
    d->conf = conf;
    return d;

out_free:
    d->conf = NULL; /* still the caller's */
    pd_daemon_free(d);
    return NULL;
}

/* The consumer queue writes to a pipe when it goes from empty to not, so one wait covers
 * Kafka and the control socket. */
static void start_wakeup(pd_daemon *d)
{
    daemon_loop *l = &d->loop;
    if (pipe2(l->wake, O_NONBLOCK | O_CLOEXEC) < 0) {
        l->wake[0] = l->wake[1] = -1;
        return; /* the loop then wakes every MAX_WAIT_MS at worst */
    }
    l->kq = rd_kafka_queue_get_consumer(pd_kafka_in_handle(d->in));
    if (l->kq)
        rd_kafka_queue_io_event_enable(l->kq, l->wake[1], "1", 1);
    pd_publisher_set_wakeup(d->pub, l->wake[1]); /* a finished flush: commit at once */
}

static void stop_wakeup(pd_daemon *d)
{
    daemon_loop *l = &d->loop;
    if (d->pub)
        pd_publisher_set_wakeup(d->pub, -1); /* before the pipe closes */
    if (l->kq) {
        rd_kafka_queue_io_event_enable(l->kq, -1, NULL, 0);
        rd_kafka_queue_destroy(l->kq);
        l->kq = NULL;
    }
    for (int i = 0; i < 2; i++) {
        if (l->wake[i] >= 0)
            close(l->wake[i]);
        l->wake[i] = -1;
    }
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
    if (d->in)
        arm_stop_limit(TEARDOWN_MAX_S); /* within what is left of a drain's bound */
    stop_wakeup(d);
    daemon_sync_release(d);
    pd_kafka_in_free(d->in); /* a revoke may still run here: the rest is still in place */
    pd_dead_letter_free(d->dlq);
    pd_publisher_free(d->pub);
    pd_engine_free(d->engine);
    pd_config_free(d->conf);
    daemon_snapshot_release(d);
    daemon_flush_release(d);
    pd_sources_free(d->sources);
    pd_notify_free(d->notify);
    pd_strbuf_release(&d->metrics.text);
    free(d->loop.batch);
    free(d->config_path);
    free(d);
}

/* ---- start-up ---- */

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

/* systemd notification, the control socket and the HTTP endpoint. */
static int start_ops(pd_daemon *d)
{
    char err[512], ep[600];
    const pd_daemon_conf *dc = &d->conf->daemon;
    d->notify = pd_notify_new(dc->watchdog_ms);
    if (!d->notify) {
        pd_log_error("out of memory");
        return -ENOMEM;
    }
    pd_control_conf cc = {.endpoint = control_endpoint(d->conf, ep, sizeof ep),
                          .feed = dc->feed,
                          .curve_secret_file = dc->control_curve_secret_file};
    d->ctl = pd_control_new(&cc, err, sizeof err);
    if (!d->ctl) {
        pd_log_error("%s", err);
        return -EINVAL;
    }
    if (dc->http) {
        int64_t wd = pd_notify_watchdog_ms(d->notify);
        d->http = pd_http_new(dc->http, wd > 0 ? wd : 30000, err, sizeof err);
        if (!d->http) {
            pd_log_error("%s", err);
            return -EINVAL;
        }
    }
    const char *ctl = pd_control_endpoint(d->ctl), *feed = pd_control_feed_endpoint(d->ctl);
    pd_logkv(PD_LOG_INFO, "operations endpoints", "control=%s feed=%s http=%s watchdog_ms=%" PRId64,
             ctl ? ctl : "off", feed ? feed : "off", dc->http ? dc->http : "off",
             pd_notify_watchdog_ms(d->notify));
    return 0;
}

/* The loop (or start-up) made progress: what the watchdog and /healthz vouch for. */
static void heartbeat(pd_daemon *d, int64_t now_ms)
{
    pd_notify_watchdog(d->notify, now_ms);
    if (d->http)
        pd_http_heartbeat(d->http, now_ms);
}

/* Connects to Redis before consuming anything, retrying with backoff until it answers or a
 * stop is requested. Waiting for a dependency is progress, so the watchdog is fed. */
static int connect_redis(pd_daemon *d)
{
    char err[512];
    int64_t backoff = 100;
    while (!got_stop) {
        heartbeat(d, pd_clock_mono_ms());
        if (pd_publisher_connect(d->pub, err, sizeof err) == 0) {
            pd_log_info("connected to redis");
            return 0;
        }
        pd_log_error("%s; retrying in %" PRId64 " ms", err, backoff);
        snprintf(d->ready.starting, sizeof d->ready.starting, "waiting for redis: %s", err);
        pd_notify_status(d->notify, d->ready.starting);
        /* the control socket answers meanwhile, so `propensityctl status` says why */
        for (int64_t until = pd_clock_mono_ms() + backoff;
             !got_stop && pd_clock_mono_ms() < until;) {
            pd_control_wait(d->ctl, -1, (int)(until - pd_clock_mono_ms()));
            daemon_control_serve(d, true);
        }
        backoff = backoff * 2 > MAX_BACKOFF_MS ? MAX_BACKOFF_MS : backoff * 2;
    }
    return -EINTR;
}

/* OpenBLAS runs the recommenders' products on a pool of one thread per core by default, which
 * would compete with the loop (and other instances) for cores: one thread, the loop's own
 * (models/topk.h). Says which kernels it chose, as they set the cost of every list. */
static void start_blas(pd_daemon *d)
{
    pd_topk_set_blas_threads(1);
    bool lists = false;
    for (size_t i = 0; i < d->conf->n_models; i++)
        lists |= d->conf->models[i].kind == PD_MODEL_KIND_RECOMMENDER;
    const char *core = pd_topk_blas_core();
    pd_logkv(lists ? PD_LOG_INFO : PD_LOG_DEBUG, "openblas for the models of lists",
             "threads=%d core=%s", pd_topk_blas_threads(), core ? core : "unknown");
}

/* Everything before the loop: a snapshot to restore, Redis, the consumer group. Returns 0,
 * -EINTR when a stop came first (nothing was consumed), or another negative errno. */
static int start(pd_daemon *d)
{
    d->ready.started_ms = pd_clock_mono_ms();
    d->ready.started_wall_ms = pd_clock_wall_ms();
    if (start_ops(d) < 0)
        return -EINVAL;
    start_blas(d);
    pd_notify_status(d->notify, "starting: restoring the snapshot");
    if (daemon_snapshot_restore(d) < 0)
        return -EIO;
    pd_notify_status(d->notify, "starting: connecting to redis");
    if (connect_redis(d) < 0)
        return -EINTR;
    daemon_snapshot_from_group(d);
    pd_notify_status(d->notify, "starting: joining the kafka consumer group");
    if (daemon_kafka_start(d) < 0)
        return -EINVAL;
    start_wakeup(d);
    if (daemon_sync_start(d) < 0)
        return -EINVAL;
    pd_logkv(PD_LOG_INFO, "started", "models=%zu features=%zu topics=%zu", d->conf->n_models,
             d->conf->n_features, d->conf->kafka.n_topics);
    daemon_flush_start(d);
    d->models.next_summary_ms = pd_clock_mono_ms();
    daemon_snapshot_start(d);
    return 0;
}

/* ---- the loop ---- */

/* Sleeps until Kafka has messages, a control request comes, the flush in flight finishes or
 * the next one is due (at most MAX_WAIT_MS). */
static void wait_for_work(pd_daemon *d)
{
    int64_t t = pd_clock_mono_ms(), due = daemon_flush_due_ms(d), sync_due = daemon_sync_due_ms(d);
    due = sync_due < due ? sync_due : due;
    int timeout = due - t > MAX_WAIT_MS ? MAX_WAIT_MS : (int)(due > t ? due - t : 0);
    if (d->loop.batch_full)
        timeout = 0; /* the queue was not drained: its wakeup will not come again */
    if (pd_control_wait(d->ctl, d->loop.wake[0], timeout) & PD_CONTROL_FD) {
        char buf[64];
        while (read(d->loop.wake[0], buf, sizeof buf) > 0)
            ;
    }
}

/* One turn: reload when asked, poll -> engine -> publisher, control requests, then what is
 * due: model summaries, flush -> commit, snapshots, readiness and metrics. */
static void turn(pd_daemon *d)
{
    if (got_reload || d->reload.again) {
        char msg[1024];
        got_reload = 0;
        d->reload.again = false;
        daemon_reload(d, msg, sizeof msg);
    }
    wait_for_work(d);
    /* the rebalance hooks run inside this call, between batches (daemon_kafka.c) */
    size_t n = pd_kafka_in_poll(d->in, d->loop.batch, d->loop.batch_cap, 0);
    d->loop.batch_full = n == d->loop.batch_cap;
    d->loop.batch_ms = pd_clock_mono_ms();
    daemon_snapshot_after_poll(d);
    d->loop.in_batch = true;
    daemon_events_process(d, d->loop.batch, n);
    d->loop.in_batch = false;
    daemon_sources_mark_idle(d);
    if (d->dlq)
        pd_dead_letter_poll(d->dlq);
    daemon_control_serve(d, false);
    int64_t t = pd_clock_mono_ms();
    daemon_models_tick(d, t, false);
    daemon_flush_tick(d, t);
    daemon_sync_tick(d, t);
    daemon_snapshot_interval_tick(d, t);
    daemon_ready_check(d, t);
    daemon_control_tick(d);
    daemon_ready_status_tick(d, t);
    daemon_metrics_tick(d, t);
    daemon_snapshot_forget_tick(d, t);
    heartbeat(d, t); /* the loop came round */
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
             es.events, decode_errors, d->events.dead_lettered, es.users, ps.flushes,
             ps.user_writes);
}

/* The batch in hand is done (turns end with it); flush, commit, snapshot, leave the group.
 * Returns the exit status. */
static int drain(pd_daemon *d)
{
    int status = 0;
    exit_status = 1; /* what the alarm exits with until the flush and snapshot are done */
    arm_stop_limit(STOP_LIMIT_S);
    pd_log_info("stopping: draining the batch in hand, flushing redis, committing offsets");
    pd_notify_stopping(d->notify, "stopping: flushing redis, committing offsets, snapshot");
    if (d->http)
        pd_http_set_ready(d->http, false, "stopping");
    daemon_models_tick(d, pd_clock_mono_ms(), true);
    if (daemon_flush_final(d) < 0)
        status = 1;
    daemon_sync_stop(d);
    if (daemon_snapshot_final(d) < 0)
        status = 1;
    exit_status = status;
    stop_wakeup(d);
    pd_kafka_in_close(d->in); /* leaves the group; the revoke hook finds nothing left */
    log_stop_summary(d);
    drained = 1;
    return status;
}

int pd_daemon_run(pd_daemon *d)
{
    if (install_signals() < 0) {
        pd_log_error("cannot install signal handlers: %s", strerror(errno));
        return 1;
    }
    int r = start(d);
    if (r == -EINTR)
        return 0; /* stopped before anything was consumed */
    if (r < 0)
        return 1;
    while (!got_stop)
        turn(d);
    exit_status = drain(d);
    return exit_status;
}

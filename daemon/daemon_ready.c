/* Readiness and what systemd shows: READY=1 once a Kafka broker answers (Redis is connected
 * and any snapshot restored before the loop starts), why the daemon should not take traffic
 * (/readyz, the status reply), the events/s rate and the one-line STATUS= summary. */
#include <inttypes.h>
#include <stdio.h>

#include "common/clock.h"
#include "daemon/daemon_internal.h"
#include "daemon/log.h"

#define STATUS_MS      2000 /* STATUS= line for systemd */
#define READY_CHECK_MS 1000 /* Kafka reachability probe before READY=1 */
#define BROKERS_DOWN_MS 2000 /* no broker up in the statistics this long: not ready */
#define STALL_MS       1000 /* a flush waiting this long (and 4 intervals) makes the daemon unready */

/* Started, consuming, writing to Redis and caught up within daemon.ready_max_lag. */
const char *daemon_not_ready_reason(pd_daemon *d, char *buf, size_t len)
{
    if (!d->ready.sent)
        return "starting";
    if (d->control.paused)
        return "consumption paused";
    int64_t now = pd_clock_mono_ms();
    if (!pd_publisher_connected(d->pub) || d->flush.backoff_ms)
        return "redis writes failing";
    int64_t stalled = daemon_flush_stalled_ms(d, now);
    if (stalled > STALL_MS && stalled > 4 * d->flush.interval_ms) {
        snprintf(buf, len, "redis writes stalled: a flush has waited %" PRId64 " ms", stalled);
        return buf;
    }
    if (d->brokers.down_since_ms && now - d->brokers.down_since_ms >= BROKERS_DOWN_MS) {
        snprintf(buf, len, "kafka: no broker reachable for %.0f s (%d known)",
                 (double)(now - d->brokers.down_since_ms) / 1000.0, d->brokers.known);
        return buf;
    }
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
    daemon_ready *r = &d->ready;
    pd_engine_stats es;
    pd_engine_get_stats(d->engine, &es);
    if (r->rate_ms && t > r->rate_ms)
        r->events_per_s = (double)(es.events - r->rate_events) * 1000.0 / (double)(t - r->rate_ms);
    r->rate_events = es.events;
    r->rate_ms = t;
}

/* The one-line STATUS= summary systemctl status shows. */
void daemon_status_line(pd_daemon *d, char *buf, size_t len)
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
             d->control.paused ? "paused" : "consuming", d->ready.events_per_s, lag_s, es.users,
             es.labels.pending, d->flush.backoff_ms ? ", redis writes failing" : "");
}

void daemon_notify_ready(pd_daemon *d)
{
    char line[256];
    daemon_status_line(d, line, sizeof line);
    pd_notify_ready(d->notify, line);
}

void daemon_ready_check(pd_daemon *d, int64_t now_ms)
{
    daemon_ready *r = &d->ready;
    if (r->sent || now_ms < r->next_check_ms)
        return;
    r->next_check_ms = now_ms + READY_CHECK_MS;
    if (!pd_kafka_in_reachable(d->in, 500)) {
        pd_notify_status(d->notify, "waiting for kafka: no broker answers");
        return;
    }
    r->sent = true;
    update_rate(d, pd_clock_mono_ms());
    daemon_notify_ready(d);
    pd_log_info("ready: kafka and redis reachable");
}

void daemon_ready_status_tick(pd_daemon *d, int64_t now_ms)
{
    if (now_ms < d->ready.next_status_ms)
        return;
    update_rate(d, now_ms);
    if (d->ready.sent) {
        char line[256];
        daemon_status_line(d, line, sizeof line);
        pd_notify_status(d->notify, line);
    }
    d->ready.next_status_ms = now_ms + STATUS_MS;
}

/* Flush, then commit: everything waiting goes to Redis, and only once Redis acknowledged it
 * are the Kafka offsets processed before the flush began committed (all their effects were in
 * it). A failed flush keeps every update for the next attempt, and the loop keeps consuming
 * and coalescing meanwhile, retrying with a backoff. */
#include <errno.h>
#include <time.h>

#include "common/clock.h"
#include "daemon/daemon_internal.h"
#include "daemon/log.h"

#define DEFAULT_FLUSH_MS 50
#define STOP_FLUSH_MS    30000 /* how long the flush at stop is retried */

const double daemon_batch_bounds[N_BATCH_BOUNDS] = {1, 10, 100, 1000, 10000, 100000};

/* Counts a successful flush's batch size in the histogram (once per flush). */
static void count_batch(pd_daemon *d)
{
    pd_publisher_stats ps;
    pd_publisher_get_stats(d->pub, &ps);
    if (ps.flushes == d->flush.flushes_seen)
        return;
    d->flush.flushes_seen = ps.flushes;
    size_t b = 0;
    while (b < N_BATCH_BOUNDS && (double)ps.last_batch_users > daemon_batch_bounds[b])
        b++;
    d->flush.batch_hist[b]++;
    d->flush.batch_sum += (double)ps.last_batch_users;
}

int daemon_flush_commit(pd_daemon *d, bool sync)
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
    count_batch(d);
    if (pos && pd_kafka_in_commit(d->in, pos, sync, err, sizeof err) < 0) {
        pd_log_error("%s", err);
        r = -EIO;
    }
out:
    if (pos)
        rd_kafka_topic_partition_list_destroy(pos);
    return r;
}

void daemon_flush_configure(pd_daemon *d)
{
    int64_t ms = d->conf->redis.flush_interval_ms;
    d->flush.interval_ms = ms > 0 ? ms : DEFAULT_FLUSH_MS;
}

void daemon_flush_start(pd_daemon *d)
{
    daemon_flush_configure(d);
    d->flush.next_ms = pd_clock_mono_ms() + d->flush.interval_ms;
}

void daemon_flush_tick(pd_daemon *d, int64_t now_ms)
{
    daemon_flush *f = &d->flush;
    if (now_ms < f->next_ms || now_ms < f->retry_at_ms)
        return;
    if (daemon_flush_commit(d, false) < 0) {
        f->backoff_ms = f->backoff_ms ? f->backoff_ms * 2 : 100;
        if (f->backoff_ms > MAX_BACKOFF_MS)
            f->backoff_ms = MAX_BACKOFF_MS;
        f->retry_at_ms = now_ms + f->backoff_ms;
    } else {
        if (f->backoff_ms)
            pd_log_info("redis writes recovered");
        f->backoff_ms = 0;
    }
    f->next_ms = now_ms + f->interval_ms;
}

int daemon_flush_final(pd_daemon *d)
{
    int64_t deadline = pd_clock_mono_ms() + STOP_FLUSH_MS;
    while (daemon_flush_commit(d, true) < 0) {
        if (pd_clock_mono_ms() > deadline) {
            pd_log_error("could not flush before stopping; uncommitted events will be consumed "
                         "again on restart");
            return -EIO;
        }
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 200 * 1000000};
        nanosleep(&ts, NULL);
    }
    return 0;
}

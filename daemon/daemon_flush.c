/* Flush, then commit: everything waiting goes to Redis, and only once Redis acknowledged it
 * are the Kafka offsets processed before the flush began committed (all their effects were in
 * it). A failed flush keeps every update for the next attempt, and the loop keeps consuming
 * and coalescing meanwhile, retrying with a backoff.
 *
 * Models of lists (recommenders) publish nothing per event: before each flush their due lists
 * are rescored (pd_engine_refresh_lists) into the publisher, {prefix}:{output}:{user}, the
 * popular list and the similar lists, so the flush carries them. A user's list is due once
 * limits.refresh has passed since its last one, so an event's list may go out one refresh
 * period after its scores; its offset is therefore held back until a refresh that left no
 * due user behind ran at least that long after it, and commits lag by about limits.refresh
 * (similar lists, refreshed at the slower limits.similar_refresh, are not waited for). The
 * work per flush is bounded (list_budget) so that a flood of users does not stall
 * consumption; users left over stay queued in the model, and so in its snapshot. */
#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "daemon/daemon_internal.h"
#include "daemon/log.h"

#define DEFAULT_FLUSH_MS 50
/* dead letters before a commit: a sync commit waits DLQ_SYNC_MS for them; otherwise the commit
 * waits without blocking, and after DLQ_PATIENCE_MS of a queue never seen empty each try
 * waits DLQ_WAIT_MS (a steady flow of dead letters would hold commits for ever) */
#define DLQ_SYNC_MS     10000
#define DLQ_PATIENCE_MS 1000
#define DLQ_WAIT_MS     100
#define DLQ_LOG_MS      10000
/* how long the flush at stop is retried: it leaves room for the snapshot and the Kafka
 * teardown within the stop's bound (STOP_LIMIT_S, daemon.c) */
#define STOP_FLUSH_MS 25000

/* Refresh budget: a quarter of the flush interval of list scoring per flush, shared by the
 * list models, in users from each model's measured cost per user. At the benchmark's 0.24 ms
 * per user (100,000 items, d 32, tests/bench/README.md) and the default 50 ms interval that
 * is about 50 users per flush, 1,000 a second, while consumption keeps three quarters of the
 * loop. Never below LIST_BUDGET_MIN (progress on a huge catalogue), never above
 * LIST_BUDGET_MAX; LIST_BUDGET_FIRST (one product batch of the model) before a measurement. */
#define LIST_SHARE        4
#define LIST_BUDGET_MIN   16
#define LIST_BUDGET_MAX   65536
#define LIST_BUDGET_FIRST 256
#define LIST_EWMA         0.2   /* weight of the newest measurement of the cost per user */
#define BEHIND_WARN_MS    10000 /* refreshes cut short this long: say so (then every minute) */
#define BEHIND_REMIND_MS  60000

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

/* ---- models of lists ---- */

static bool is_list_model(const pd_daemon *d, size_t i)
{
    return d->conf->models[i].kind == PD_MODEL_KIND_RECOMMENDER;
}

static const char *list_output(const pd_daemon *d, size_t i)
{
    const pd_model_conf *mc = &d->conf->models[i];
    return mc->output ? mc->output : mc->name;
}

/* d->lists.key = what, the list names of model i: "{output}:{id}" for a user, "popular" and
 * "sim:{id}" for the output "rec" (the brief's keys), "{output}_popular" and
 * "{output}_sim:{id}" for another. */
enum list_what { LIST_USER, LIST_POPULAR, LIST_SIMILAR };

static bool list_key(pd_daemon *d, size_t i, enum list_what what, const char *id, size_t len)
{
    pd_strbuf *k = &d->lists.key;
    const char *out = list_output(d, i);
    bool rec = strcmp(out, "rec") == 0;
    pd_strbuf_reset(k);
    if (what == LIST_USER && d->conf->redis.key_layout == PD_KEYS_CLUSTER) {
        /* "{id}:{output}": the list shares the score hash's hash tag ({prefix}:{id}:u, the
         * id in braces) */
        pd_strbuf_addc(k, '{');
        pd_strbuf_add(k, id, len);
        pd_strbuf_adds(k, "}:");
        pd_strbuf_adds(k, out);
        return !k->oom;
    }
    if (what == LIST_USER) {
        pd_strbuf_adds(k, out);
        pd_strbuf_addc(k, ':');
    } else {
        if (!rec) {
            pd_strbuf_adds(k, out);
            pd_strbuf_addc(k, '_');
        }
        pd_strbuf_adds(k, what == LIST_POPULAR ? "popular" : "sim:");
    }
    if (id)
        pd_strbuf_add(k, id, len);
    return !k->oom;
}

typedef struct list_sink_ctx {
    pd_daemon *d;
    size_t model;
    int64_t ts; /* wall time, for the feed */
} list_sink_ctx;

static void put_list(list_sink_ctx *c, enum list_what what, const char *id, size_t id_len,
                     const char *const *items, const size_t *item_lens, const float *scores,
                     size_t n)
{
    pd_daemon *d = c->d;
    int r = -ENOMEM;
    if (list_key(d, c->model, what, id, id_len))
        r = pd_publisher_put_zset(d->pub, d->lists.key.data, d->lists.key.len, items, item_lens,
                                  scores, n);
    if (r < 0) {
        /* once, then counted (propensityd_list_errors_total): a NaN would repeat per list */
        if (d->lists.put_errors++ == 0)
            pd_log_error("cannot queue the list \"%.*s\" of model \"%s\" for redis: %s",
                         (int)d->lists.key.len, d->lists.key.data ? d->lists.key.data : "",
                         d->conf->models[c->model].name,
                         r == -EINVAL ? "a score is not a number or the list is too long"
                                      : "out of memory");
        return;
    }
    if (pd_control_has_feed(d->ctl))
        daemon_feed_list(d, c->model, d->lists.key.data, d->lists.key.len,
                         what == LIST_USER ? id : NULL, id_len, what == LIST_SIMILAR ? id : NULL,
                         id_len, items, item_lens, scores, n, c->ts);
}

static void sink_user(void *ctx, const char *user, size_t user_len, const char *const *items,
                      const size_t *item_lens, const float *scores, size_t n)
{
    put_list(ctx, LIST_USER, user, user_len, items, item_lens, scores, n);
}

static void sink_popular(void *ctx, const char *const *items, const size_t *item_lens,
                         const float *scores, size_t n)
{
    put_list(ctx, LIST_POPULAR, NULL, 0, items, item_lens, scores, n);
}

static void sink_similar(void *ctx, const char *item, size_t item_len, const char *const *items,
                         const size_t *item_lens, const float *scores, size_t n)
{
    put_list(ctx, LIST_SIMILAR, item, item_len, items, item_lens, scores, n);
}

static size_t list_budget(const pd_daemon *d, size_t i, size_t n_models)
{
    double us = d->lists.us_per_user[i];
    if (!(us > 0))
        return LIST_BUDGET_FIRST;
    double target_us = (double)d->flush.interval_ms * 1000.0 / LIST_SHARE / (double)n_models;
    double b = target_us / us;
    return b < LIST_BUDGET_MIN   ? LIST_BUDGET_MIN
           : b > LIST_BUDGET_MAX ? LIST_BUDGET_MAX
                                 : (size_t)b;
}

/* Says when refreshes stay behind for a while (commits wait meanwhile), and when they catch up. */
static void note_behind(pd_daemon *d, bool behind)
{
    daemon_lists *l = &d->lists;
    int64_t now = pd_clock_mono_ms();
    if (!behind) {
        if (l->behind && l->behind_logged_ms)
            pd_logkv(PD_LOG_INFO, "list refreshes caught up", "behind_seconds=%.1f",
                     (double)(now - l->behind_since_ms) / 1000.0);
        l->behind = false;
        l->behind_logged_ms = 0;
        return;
    }
    if (!l->behind) {
        l->behind = true;
        l->behind_since_ms = now;
    }
    if (now - l->behind_since_ms < BEHIND_WARN_MS ||
        (l->behind_logged_ms && now - l->behind_logged_ms < BEHIND_REMIND_MS))
        return;
    pd_logkv(PD_LOG_WARNING,
             "list refreshes are behind: users wait longer than limits.refresh for their lists "
             "and offset commits wait for them",
             "behind_seconds=%.1f", (double)(now - l->behind_since_ms) / 1000.0);
    l->behind_logged_ms = now;
}

/* Rescores the due lists of every list model into the publisher: within the budget, or all
 * of them (complete: the clock is moved on by each model's limits.refresh, so every waiting
 * user is due; those users then wait up to one refresh longer for their next list). Sets
 * *ret_now to the list clock; returns whether no due user was left for the next time. */
static bool lists_refresh(pd_daemon *d, bool complete, int64_t *ret_now)
{
    daemon_lists *l = &d->lists;
    int64_t now = pd_clock_wall_ms();
    if (now < l->clock_ms)
        now = l->clock_ms; /* a wall clock stepping back would hold every list */
    l->clock_ms = now;
    *ret_now = now;
    if (!l->any)
        return true;
    size_t n_models = 0;
    for (size_t i = 0; i < d->conf->n_models; i++)
        n_models += is_list_model(d, i);
    list_sink_ctx c = {.d = d, .ts = now};
    const pd_list_sink sink = {
        .ctx = &c, .user_list = sink_user, .popular = sink_popular, .similar = sink_similar};
    bool caught = true;
    for (size_t i = 0; i < d->conf->n_models && i < PD_MAX_MODELS; i++) {
        if (!is_list_model(d, i))
            continue;
        int64_t refresh_ms = d->conf->models[i].recommender.refresh_ms;
        size_t budget = complete ? SIZE_MAX : list_budget(d, i, n_models);
        c.model = i;
        int64_t t0 = pd_clock_mono_us();
        size_t n =
            pd_engine_refresh_lists(d->engine, i, complete ? now + refresh_ms : now, &sink, budget);
        int64_t dt = pd_clock_mono_us() - t0;
        if (n > 0) {
            double us = (double)dt / (double)n, *m = &l->us_per_user[i];
            *m = *m > 0 ? (1 - LIST_EWMA) * *m + LIST_EWMA * us : us;
        }
        l->users += n;
        if (n >= budget) {
            caught = false;
            l->limited++;
        }
        if (complete && now + refresh_ms > l->future_ms)
            l->future_ms = now + refresh_ms;
    }
    note_behind(d, !caught);
    return caught;
}

void daemon_lists_forget(pd_daemon *d, const char *user, size_t len)
{
    for (size_t i = 0; i < d->conf->n_models; i++) {
        if (!is_list_model(d, i))
            continue;
        if (!list_key(d, i, LIST_USER, user, len) ||
            pd_publisher_put_zset(d->pub, d->lists.key.data, d->lists.key.len, NULL, NULL, NULL,
                                  0) < 0)
            pd_log_error("out of memory queueing the deletion of a user's list");
    }
}

/* ---- flush, then commit ---- */

static void drop_held(daemon_flush *f)
{
    if (f->held)
        rd_kafka_topic_partition_list_destroy(f->held);
    f->held = NULL;
}

/* Of pos, the positions processed now (taken), what a flush that Redis acknowledged may
 * commit, or NULL for nothing yet. Without list models, or after a complete refresh, all of
 * pos. Otherwise pos is held (one set at a time) with the list clock by which every list its
 * events touched is due: limits.refresh after the later of now and any refresh time a
 * complete refresh gave out. It is committed at the first flush after that whose refresh left
 * no due user behind. */
static rd_kafka_topic_partition_list_t *covered(pd_daemon *d, rd_kafka_topic_partition_list_t *pos,
                                                bool caught, bool complete, int64_t now)
{
    daemon_flush *f = &d->flush;
    const daemon_lists *l = &d->lists;
    if (!l->any || complete) {
        drop_held(f);
        return pos;
    }
    int64_t due = (now > l->future_ms ? now : l->future_ms) + l->lag_ms;
    if (!f->held) {
        f->held = pos;
        f->held_ms = due;
        pos = NULL;
    }
    if (!caught || now < f->held_ms) {
        if (pos)
            rd_kafka_topic_partition_list_destroy(pos);
        return NULL;
    }
    rd_kafka_topic_partition_list_t *c = f->held;
    f->held = pos;
    f->held_ms = due;
    return c;
}

/* Commits pos (taken) once the dead letters of the events before it are acknowledged: at once
 * when sync (waiting up to DLQ_SYNC_MS, -EAGAIN past that), else without waiting, holding pos
 * until a later tick finds the producer's queue empty (a newer pos replaces a held one: what
 * Redis acknowledged for it covers the older one too). */
static int commit_after_dead_letters(pd_daemon *d, rd_kafka_topic_partition_list_t *pos, bool sync)
{
    daemon_flush *f = &d->flush;
    char err[512];
    if (!pos)
        return 0;
    if (d->dlq) {
        int64_t now = pd_clock_mono_ms();
        int wait = sync ? DLQ_SYNC_MS : (f->dlq_held_ms && now - f->dlq_held_ms > DLQ_PATIENCE_MS
                                             ? DLQ_WAIT_MS
                                             : 0);
        int r = pd_dead_letter_flush(d->dlq, wait);
        if (r < 0) {
            /* (in flight for a moment is normal: said only when it lasts or failed for good) */
            if ((r == -EIO || sync || wait) && now - f->dlq_logged_ms >= DLQ_LOG_MS) {
                pd_log_warning("dead-letter producer has undelivered events: not committing yet");
                f->dlq_logged_ms = now;
            }
            if (sync) {
                rd_kafka_topic_partition_list_destroy(pos);
                return -EAGAIN;
            }
            if (!f->dlq_held)
                f->dlq_held_ms = now;
            else if (f->dlq_held != pos)
                rd_kafka_topic_partition_list_destroy(f->dlq_held);
            f->dlq_held = pos;
            f->dlq_next_ms = now + f->interval_ms;
            return 0;
        }
    }
    if (f->dlq_held && f->dlq_held != pos)
        rd_kafka_topic_partition_list_destroy(f->dlq_held);
    f->dlq_held = NULL;
    f->dlq_held_ms = 0;
    int r = pd_kafka_in_commit(d->in, pos, sync, err, sizeof err);
    rd_kafka_topic_partition_list_destroy(pos);
    if (r == -EBUSY) {
        pd_log_warning("%s: the group is rebalancing, the next commit goes through", err);
        return -EBUSY;
    }
    if (r < 0) {
        pd_log_error("%s", err);
        return -EIO;
    }
    return 0;
}

/* A flush that Redis acknowledged: what its positions allow is committed. Takes pos. */
static int flushed(pd_daemon *d, rd_kafka_topic_partition_list_t *pos, bool caught, bool complete,
                   int64_t now, bool sync)
{
    count_batch(d);
    return commit_after_dead_letters(d, covered(d, pos, caught, complete, now), sync);
}

static void drop_flight(daemon_flush *f)
{
    if (f->flight_pos)
        rd_kafka_topic_partition_list_destroy(f->flight_pos);
    f->flight_pos = NULL;
    f->flight_ms = 0;
}

static void failed(pd_daemon *d, int64_t now_ms, const char *err)
{
    daemon_flush *f = &d->flush;
    pd_log_error("%s", err);
    f->retry = true;
    f->backoff_ms = f->backoff_ms ? f->backoff_ms * 2 : 100;
    if (f->backoff_ms > MAX_BACKOFF_MS)
        f->backoff_ms = MAX_BACKOFF_MS;
    f->retry_at_ms = now_ms + f->backoff_ms;
}

static void recovered(daemon_flush *f)
{
    if (f->backoff_ms)
        pd_log_info("redis writes recovered");
    f->backoff_ms = 0;
    f->retry = false;
}

/* Takes the outcome of the flush in flight, if it finished: commits what it covers, or backs
 * off before writing its writes again. Never waits. */
static void take_result(pd_daemon *d, int64_t now_ms)
{
    daemon_flush *f = &d->flush;
    char err[512];
    int r = pd_publisher_flush_result(d->pub, err, sizeof err);
    if (r == -EINPROGRESS || r == 1)
        return;
    if (r < 0) {
        failed(d, now_ms, err);
        f->flight_ms = 0; /* its positions stay: the retry writes what they cover */
        return;
    }
    if (err[0])
        pd_log_warning("%s", err); /* refused for good and counted; the flush went on */
    recovered(f);
    rd_kafka_topic_partition_list_t *pos = f->flight_pos;
    f->flight_pos = NULL;
    f->flight_ms = 0;
    flushed(d, pos, f->flight_caught, false, f->flight_now, false);
}

/* Starts a flush on the publisher's thread: the writes of a failed one again (with the
 * positions they cover), or everything waiting with the positions processed now. */
static void start_flush(pd_daemon *d, int64_t now_ms)
{
    daemon_flush *f = &d->flush;
    if (f->retry) {
        if (pd_publisher_flush_start(d->pub) > 0)
            f->flight_ms = now_ms;
        else
            f->retry = false; /* nothing was left to write again */
        return;
    }
    rd_kafka_topic_partition_list_t *pos = pd_kafka_in_positions(d->in);
    int64_t now;
    bool caught = lists_refresh(d, false, &now);
    int r = pd_publisher_flush_start(d->pub);
    if (r == 0) { /* nothing to write: the positions are covered already */
        flushed(d, pos, caught, false, now, false);
        return;
    }
    if (r < 0) { /* cannot happen: the outcome was taken */
        if (pos)
            rd_kafka_topic_partition_list_destroy(pos);
        return;
    }
    f->flight_pos = pos;
    f->flight_caught = caught;
    f->flight_now = now;
    f->flight_ms = now_ms;
}

/* Flushes and waits (the flush in flight, then everything waiting), then commits. */
static int flush_commit(pd_daemon *d, bool sync, bool complete)
{
    daemon_flush *f = &d->flush;
    char err[512] = "";
    rd_kafka_topic_partition_list_t *pos = pd_kafka_in_positions(d->in);
    int64_t now;
    bool caught = lists_refresh(d, complete, &now);
    int r = pd_publisher_flush(d->pub, err, sizeof err);
    drop_flight(f); /* pos covers what the flush in flight covered */
    if (r < 0) {
        /* the publisher keeps the writes: the next start writes them again, and commits
         * wait for a flush after that, with newer positions */
        pd_log_error("%s", err);
        f->retry = true;
        if (pos)
            rd_kafka_topic_partition_list_destroy(pos);
        return r;
    }
    if (err[0])
        pd_log_warning("%s", err);
    recovered(f);
    return flushed(d, pos, caught, complete, now, sync);
}

int daemon_flush_commit(pd_daemon *d, bool sync)
{
    return flush_commit(d, sync, false);
}

int daemon_flush_commit_all(pd_daemon *d)
{
    return flush_commit(d, true, true);
}

int daemon_flush_settle(pd_daemon *d)
{
    char err[512] = "";
    int r = pd_publisher_flush(d->pub, err, sizeof err);
    /* what the flush in flight covered is committed with the next flush's positions */
    drop_flight(&d->flush);
    if (r < 0) {
        pd_log_error("%s", err);
        d->flush.retry = true;
        return r;
    }
    if (err[0])
        pd_log_warning("%s", err);
    recovered(&d->flush);
    return 0;
}

bool daemon_flush_redis_ok(const pd_daemon *d)
{
    return !d->flush.retry;
}

int64_t daemon_flush_due_ms(const pd_daemon *d)
{
    const daemon_flush *f = &d->flush;
    if (f->flight_ms)
        return INT64_MAX;
    int64_t due = f->next_ms > f->retry_at_ms ? f->next_ms : f->retry_at_ms;
    /* positions waiting for dead letters are tried again each interval */
    return f->dlq_held && f->dlq_next_ms < due ? f->dlq_next_ms : due;
}

int64_t daemon_flush_stalled_ms(const pd_daemon *d, int64_t now_ms)
{
    return d->flush.flight_ms ? now_ms - d->flush.flight_ms : 0;
}

void daemon_flush_release(pd_daemon *d)
{
    daemon_flush *f = &d->flush;
    drop_held(f);
    drop_flight(f);
    if (f->dlq_held)
        rd_kafka_topic_partition_list_destroy(f->dlq_held);
    f->dlq_held = NULL;
    pd_strbuf_release(&d->lists.key);
}

void daemon_flush_configure(pd_daemon *d)
{
    int64_t ms = d->conf->redis.flush_interval_ms;
    d->flush.interval_ms = ms > 0 ? ms : DEFAULT_FLUSH_MS;
    daemon_lists *l = &d->lists;
    l->any = false;
    l->lag_ms = 0;
    for (size_t i = 0; i < d->conf->n_models; i++) {
        if (!is_list_model(d, i))
            continue;
        l->any = true;
        if (d->conf->models[i].recommender.refresh_ms > l->lag_ms)
            l->lag_ms = d->conf->models[i].recommender.refresh_ms;
    }
    /* model indices may have moved: measure each model's cost again */
    memset(l->us_per_user, 0, sizeof l->us_per_user);
}

void daemon_flush_start(pd_daemon *d)
{
    daemon_flush_configure(d);
    /* a snapshot written at stop may hold refresh times up to one refresh ahead */
    d->lists.future_ms = pd_clock_wall_ms() + d->lists.lag_ms;
    d->flush.next_ms = pd_clock_mono_ms() + d->flush.interval_ms;
}

void daemon_flush_tick(pd_daemon *d, int64_t now_ms)
{
    daemon_flush *f = &d->flush;
    take_result(d, now_ms);
    if (f->dlq_held && now_ms >= f->dlq_next_ms)
        commit_after_dead_letters(d, f->dlq_held, false);
    if (f->flight_ms || now_ms < f->next_ms || now_ms < f->retry_at_ms)
        return;
    start_flush(d, now_ms);
    f->next_ms = now_ms + f->interval_ms;
}

int daemon_flush_final(pd_daemon *d)
{
    int64_t deadline = pd_clock_mono_ms() + STOP_FLUSH_MS;
    int r;
    while ((r = daemon_flush_commit_all(d)) < 0) {
        /* Redis has it all; the group refused the commit because members are leaving too:
         * leaving the group commits again, and the snapshot (or the handed-over state)
         * carries the offsets, so waiting out the rebalance here gains nothing */
        if (r == -EBUSY && daemon_flush_redis_ok(d))
            return 0;
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

/* The control commands (daemon/control.c carries them over ZeroMQ): status, score, forget,
 * reload, snapshot, pause, resume, log-level, and the reduced set that answers while start-up
 * waits for Redis. Handlers run on the loop's thread between batches. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/clock.h"
#include "daemon/daemon_internal.h"
#include "daemon/log.h"

#define CONTROL_BATCH 16 /* control requests answered per loop turn */
#define MAX_SCORES    PD_MAX_MODELS /* scores in a score reply: one per model */
#define PD_SCORE_LIST_MAX 1000 /* items of a list in a score reply (the config's largest k) */

/* Replies are built member by member in the order they are printed; json_object_set_new()
 * takes the value even when it fails, so one flag collects any out-of-memory. */

/* ---- status ---- */

static int status_kafka(pd_daemon *d, json_t *kafka)
{
    pd_kafka_stats ks;
    pd_kafka_in_get_stats(d->in, &ks);
    int64_t lag = pd_kafka_in_lag(d->in);
    int e = 0;
    e |= json_object_set_new(kafka, "group", pd_control_string(d->conf->kafka.group));
    e |= json_object_set_new(kafka, "assigned_partitions", json_integer(ks.assigned));
    e |= json_object_set_new(kafka, "lag", pd_control_number(lag >= 0 ? (double)lag : NAN));
    e |= json_object_set_new(kafka, "paused", json_boolean(d->control.paused));
    e |= json_object_set_new(kafka, "rebalances", json_integer(ks.rebalances));
    e |= json_object_set_new(kafka, "commits", json_integer(ks.commits));
    return e;
}

static int status_redis(pd_daemon *d, json_t *redis)
{
    pd_publisher_stats ps;
    pd_publisher_get_stats(d->pub, &ps);
    int e = 0;
    e |= json_object_set_new(redis, "connected", json_boolean(pd_publisher_connected(d->pub)));
    e |= json_object_set_new(redis, "prefix", pd_control_string(d->conf->redis.prefix));
    e |= json_object_set_new(redis, "pending_users", json_integer(pd_publisher_dirty(d->pub)));
    e |= json_object_set_new(redis, "flushes", json_integer(ps.flushes));
    e |= json_object_set_new(redis, "flush_failures", json_integer(ps.flush_failures));
    e |= json_object_set_new(redis, "last_flush_seconds", pd_control_number(ps.last_flush_seconds));
    return e;
}

static int status_snapshot(pd_daemon *d, json_t *snap)
{
    int64_t ms = d->snap.last_wall_ms;
    double age = ms ? (double)(pd_clock_wall_ms() - ms) / 1000.0 : NAN;
    int e = 0;
    e |= json_object_set_new(snap, "dir", pd_control_string(d->conf->snapshot.dir));
    e |= json_object_set_new(snap, "written", json_integer(d->snap.written));
    e |= json_object_set_new(snap, "failed", json_integer(d->snap.failed));
    e |= json_object_set_new(snap, "age_seconds", pd_control_number(age));
    return e;
}

/* The top of the reply: state, readiness and why not, the summary line. */
static int status_state(pd_daemon *d, json_t *st)
{
    char why[160], line[256];
    const char *reason = daemon_not_ready_reason(d, why, sizeof why);
    daemon_status_line(d, line, sizeof line);
    double uptime = (double)(pd_clock_mono_ms() - d->ready.started_ms) / 1000.0;
    int e = 0;
    e |= json_object_set_new(st, "version", json_string(PD_VERSION));
    e |= json_object_set_new(st, "state", json_string(d->control.paused ? "paused" : "running"));
    e |= json_object_set_new(st, "ready", json_boolean(reason == NULL));
    e |= json_object_set_new(st, "not_ready_reason", pd_control_string(reason));
    e |= json_object_set_new(st, "summary", pd_control_string(line));
    e |= json_object_set_new(st, "uptime_seconds", pd_control_number(uptime));
    e |= json_object_set_new(st, "config", pd_control_string(d->config_path));
    const char *level = pd_log_level_to_name(pd_log_get_level());
    e |= json_object_set_new(st, "generation", json_integer(pd_engine_generation(d->engine)));
    e |= json_object_set_new(st, "log_level", json_string(level));
    return e;
}

static int status_counts(pd_daemon *d, json_t *st)
{
    pd_engine_stats es;
    pd_engine_get_stats(d->engine, &es);
    uint64_t decode_errors = 0;
    for (int i = 0; i < PD_DECODE__COUNT; i++)
        decode_errors += es.decode_errors[i];
    int e = 0;
    e |= json_object_set_new(st, "events", json_integer(es.events));
    e |= json_object_set_new(st, "events_per_second", pd_control_number(d->ready.events_per_s));
    e |= json_object_set_new(st, "decode_errors", json_integer(decode_errors));
    e |= json_object_set_new(st, "dead_lettered", json_integer(d->events.dead_lettered));
    e |= json_object_set_new(st, "users", json_integer(es.users));
    e |= json_object_set_new(st, "pending_examples", json_integer(es.labels.pending));
    e |= json_object_set_new(st, "forgotten", json_integer(es.forgotten));
    return e;
}

static json_t *cmd_status(void *ctx, const char *arg, size_t arg_len, char *err, size_t errlen)
{
    (void)arg;
    (void)arg_len;
    (void)err;
    (void)errlen;
    pd_daemon *d = ctx;
    json_t *kafka = json_object(), *redis = json_object(), *snap = json_object();
    int e = status_kafka(d, kafka);
    e |= status_redis(d, redis);
    e |= status_snapshot(d, snap);
    json_t *st = json_object();
    e |= status_state(d, st);
    e |= status_counts(d, st);
    e |= json_object_set_new(st, "kafka", kafka);
    e |= json_object_set_new(st, "redis", redis);
    e |= json_object_set_new(st, "snapshot", snap);
    e |= json_object_set_new(st, "models", daemon_models_status(d));
    e |= json_object_set_new(st, "sync", daemon_sync_status(d));
    if (e) {
        json_decref(st);
        return NULL;
    }
    return st;
}

/* ---- score ---- */

/* The scores of a user, by output and per model. */
static int score_models(pd_daemon *d, const pd_score *scores, int n, json_t *by_output,
                        json_t *models)
{
    int e = 0;
    for (int i = 0; i < n && e == 0; i++) {
        const pd_model_conf *mc = &d->conf->models[scores[i].model];
        pd_model_info mi;
        pd_engine_model_info(d->engine, (size_t)scores[i].model, &mi);
        e |= json_object_set_new(by_output, mc->output ? mc->output : mc->name,
                                 pd_control_number(scores[i].value));
        json_t *m = json_object();
        e |= json_array_append_new(models, m); /* the list owns m even when this fails */
        e |= json_object_set_new(m, "name", pd_control_string(mi.name));
        e |= json_object_set_new(m, "output", pd_control_string(mi.output ? mi.output : mi.name));
        e |= json_object_set_new(m, "score", pd_control_number(scores[i].value));
        e |= json_object_set_new(m, "publishing", json_boolean(mi.gate_open));
    }
    return e;
}

/* The user's state; last_by_type holds n_types times (INT64_MIN: never). */
static int score_state(pd_daemon *d, const pd_user_info *ui, const int64_t *last_by_type,
                       size_t n_types, json_t *state)
{
    json_t *by_type = json_object();
    int e = 0;
    for (size_t i = 0; i < n_types && i < d->conf->events.n_types && e == 0; i++)
        if (last_by_type[i] != INT64_MIN)
            e |= json_object_set_new(by_type, d->conf->events.types[i],
                                     json_integer(last_by_type[i]));
    double last_ts = ui->last_ts_ms == INT64_MIN ? NAN : (double)ui->last_ts_ms;
    e |= json_object_set_new(state, "events", json_integer(ui->events));
    e |= json_object_set_new(state, "first_ts", pd_control_number((double)ui->first_ts_ms));
    e |= json_object_set_new(state, "last_ts", pd_control_number(last_ts));
    e |= json_object_set_new(state, "pending_examples", json_integer(ui->pending));
    e |= json_object_set_new(state, "recent_items", json_integer(ui->recent_items));
    e |= json_object_set_new(state, "last_ts_by_type", by_type);
    /* the decayed counters as last updated (each at its own time): what a handover must carry
     * exactly */
    json_t *acc = json_array();
    for (size_t i = 0; acc && i < ui->n_acc && e == 0; i++)
        e |= json_array_append_new(acc, pd_control_number(ui->acc[i].value));
    e |= json_object_set_new(state, "counters", acc);
    return e;
}

/* The lists of a user from every model of lists, by output ("rec": [{"item","score"}...], the
 * list as it would be served now) and appended to models; *ret_known: any model knows the
 * user. */
static int score_lists(pd_daemon *d, const char *user, size_t len, json_t *lists, json_t *models,
                       bool *ret_known)
{
    const char *items[PD_SCORE_LIST_MAX];
    size_t lens[PD_SCORE_LIST_MAX];
    float scores[PD_SCORE_LIST_MAX];
    bool known = false;
    int e = 0;
    for (size_t i = 0; i < pd_engine_model_count(d->engine) && e == 0; i++) {
        pd_model_info mi;
        pd_engine_model_info(d->engine, i, &mi);
        if (mi.output_kind != PD_OUTPUT_LIST)
            continue;
        size_t n =
            pd_engine_user_list(d->engine, i, user, len, items, lens, scores, PD_SCORE_LIST_MAX);
        if (n == 0)
            continue; /* unknown to this model, or nothing left to list */
        known = true;
        json_t *list = json_array();
        for (size_t k = 0; k < n && e == 0; k++)
            e |= json_array_append_new(list, json_pack("{s:s%, s:o}", "item", items[k], lens[k],
                                                       "score", pd_control_number(scores[k])));
        const char *output = mi.output ? mi.output : mi.name;
        json_t *m = json_object();
        e |= json_array_append_new(models, m);
        e |= json_object_set_new(m, "name", pd_control_string(mi.name));
        e |= json_object_set_new(m, "output", pd_control_string(output));
        e |= json_object_set_new(m, "list", json_incref(list));
        e |= json_object_set_new(m, "publishing", json_boolean(mi.gate_open));
        e |= json_object_set_new(lists, output, list);
    }
    *ret_known = known;
    return e;
}

static json_t *cmd_score(void *ctx, const char *user, size_t len, char *err, size_t errlen)
{
    pd_daemon *d = ctx;
    pd_user_info ui;
    pd_score scores[MAX_SCORES];
    int64_t last_by_type[PD_MAX_EVENT_TYPES];
    int n = -1;
    size_t n_types = 0;
    if (pd_engine_user_info(d->engine, user, len, &ui) == 0) {
        /* copied out: the next engine call (scoring) may move them */
        n_types = ui.n_types < PD_MAX_EVENT_TYPES ? ui.n_types : PD_MAX_EVENT_TYPES;
        memcpy(last_by_type, ui.last_ts_by_type, n_types * sizeof *last_by_type);
        n = pd_engine_score_user(d->engine, user, len, scores, MAX_SCORES);
    }
    json_t *by_output = json_object(), *models = json_array(), *lists = json_object();
    bool listed = false;
    int e = score_lists(d, user, len, lists, models, &listed);
    /* a pipeline of lists alone keeps no user state: the lists' models know the user */
    if (n < 0 && !listed) {
        json_decref(by_output);
        json_decref(models);
        json_decref(lists);
        snprintf(err, errlen, "unknown user (never seen, forgotten or evicted)");
        return NULL;
    }
    json_t *state = json_null();
    if (n >= 0) {
        e |= score_models(d, scores, n, by_output, models);
        state = json_object();
        e |= score_state(d, &ui, last_by_type, n_types, state);
    }
    json_t *r = json_object();
    e |= json_object_set_new(r, "user", json_stringn(user, len));
    e |= json_object_set_new(r, "generation", json_integer(pd_engine_generation(d->engine)));
    e |= json_object_set_new(r, "scores", by_output);
    e |= json_object_set_new(r, "lists", lists);
    e |= json_object_set_new(r, "models", models);
    e |= json_object_set_new(r, "state", state);
    if (e) {
        json_decref(r);
        return NULL;
    }
    return r;
}

/* ---- forget, reload, snapshot ---- */

/* Whether a model of lists knows the user (which it may while the pipeline keeps no state). */
static bool user_listed(pd_daemon *d, const char *user, size_t len)
{
    const char *item;
    size_t item_len;
    float score;
    for (size_t i = 0; i < pd_engine_model_count(d->engine); i++)
        if (pd_engine_user_list(d->engine, i, user, len, &item, &item_len, &score, 1) > 0)
            return true;
    return false;
}

static json_t *cmd_forget(void *ctx, const char *user, size_t len, char *err, size_t errlen)
{
    pd_daemon *d = ctx;
    bool known = user_listed(d, user, len);
    known |= pd_engine_forget(d->engine, user, len);
    /* the keys may exist even when the state does not (evicted, or written by another
     * instance before a rebalance), so the deletion is always queued */
    if (pd_publisher_forget(d->pub, user, len) < 0) {
        snprintf(err, errlen, "out of memory queueing the deletion of the user's keys");
        return NULL;
    }
    daemon_lists_forget(d, user, len);
    bool deleted = daemon_flush_commit(d, true) == 0;
    d->control.forgets++;
    daemon_audit_forget(user, len, "control", known, deleted ? "deleted" : "queued");
    daemon_feed_forget(d, user, len);
    char path[1024] = "";
    bool snap = false;
    if (d->conf->snapshot.dir) {
        snap = daemon_snapshot_write(d, "forget", 1, path, sizeof path) == 0;
        d->snap.forget_ms = INT64_MAX; /* this one covers earlier forget events too */
    }
    return json_pack("{s:s%, s:b, s:b, s:o}", "user", user, len, "known", known, "redis_deleted",
                     deleted, "snapshot", pd_control_string(snap ? path : NULL));
}

static json_t *cmd_reload(void *ctx, const char *arg, size_t arg_len, char *err, size_t errlen)
{
    (void)arg;
    (void)arg_len;
    pd_daemon *d = ctx;
    char msg[1024];
    if (daemon_reload(d, msg, sizeof msg) < 0) {
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
    if (daemon_snapshot_write(d, "control", 0, path, sizeof path) < 0) {
        snprintf(err, errlen, "snapshot failed: %s", path);
        return NULL;
    }
    return json_pack("{s:o, s:o}", "path", pd_control_string(path), "seconds",
                     pd_control_number(d->snap.last_seconds));
}

/* ---- pause, resume, log-level ---- */

static json_t *set_paused(pd_daemon *d, bool pause, char *err, size_t errlen)
{
    if ((pause ? pd_kafka_in_pause(d->in) : pd_kafka_in_resume(d->in)) < 0) {
        snprintf(err, errlen, "kafka refused to %s the assigned partitions",
                 pause ? "pause" : "resume");
        return NULL;
    }
    if (d->control.paused != pause)
        pd_logkv(PD_LOG_INFO, pause ? "consumption paused" : "consumption resumed",
                 "source=control");
    d->control.paused = pause;
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

void daemon_control_tick(pd_daemon *d)
{
    if (!d->control.paused)
        return;
    pd_kafka_stats ks;
    pd_kafka_in_get_stats(d->in, &ks);
    if (ks.rebalances != d->control.rebalances_seen && pd_kafka_in_repause(d->in) < 0)
        pd_log_warning("could not pause partitions assigned while paused");
    d->control.rebalances_seen = ks.rebalances;
}

static json_t *cmd_log_level(void *ctx, const char *level, size_t len, char *err, size_t errlen)
{
    (void)ctx;
    pd_log_level l;
    char name[16];
    if (len >= sizeof name || memchr(level, '\0', len) ||
        (memcpy(name, level, len), name[len] = '\0', pd_log_level_from_name(name, &l) < 0)) {
        snprintf(err, errlen, "unknown log level (debug, info, warning, error)");
        return NULL;
    }
    pd_log_level old = pd_log_get_level();
    pd_log_set_level(l);
    pd_logkv(PD_LOG_WARNING, "log level changed", "source=control level=%s previous=%s",
             pd_log_level_to_name(l), pd_log_level_to_name(old));
    return json_pack("{s:s, s:s}", "level", pd_log_level_to_name(l), "previous",
                     pd_log_level_to_name(old));
}

static const pd_control_command control_commands[] = {
    {"status", NULL, cmd_status},     {"reload", NULL, cmd_reload},
    {"snapshot", NULL, cmd_snapshot}, {"score", "user", cmd_score},
    {"forget", "user", cmd_forget},   {"pause", NULL, cmd_pause},
    {"resume", NULL, cmd_resume},     {"log-level", "level", cmd_log_level},
};

/* ---- while start-up waits for Redis ---- */

/* The loop does not run yet: status says so, the rest must wait. */
static json_t *cmd_status_starting(void *ctx, const char *arg, size_t arg_len, char *err,
                                   size_t errlen)
{
    (void)arg;
    (void)arg_len;
    (void)err;
    (void)errlen;
    pd_daemon *d = ctx;
    double uptime = (double)(pd_clock_mono_ms() - d->ready.started_ms) / 1000.0;
    return json_pack("{s:s, s:s, s:b, s:o, s:o, s:o, s:s}", "version", PD_VERSION, "state",
                     "starting", "ready", 0, "not_ready_reason",
                     pd_control_string(d->ready.starting), "uptime_seconds",
                     pd_control_number(uptime), "config", pd_control_string(d->config_path),
                     "log_level", pd_log_level_to_name(pd_log_get_level()));
}

static json_t *cmd_starting(void *ctx, const char *arg, size_t arg_len, char *err, size_t errlen)
{
    (void)arg;
    (void)arg_len;
    pd_daemon *d = ctx;
    snprintf(err, errlen, "not yet: the daemon is starting (%s)", d->ready.starting);
    return NULL;
}

static const pd_control_command starting_commands[] = {
    {"status", NULL, cmd_status_starting}, {"reload", NULL, cmd_starting},
    {"snapshot", NULL, cmd_starting},      {"score", "user", cmd_starting},
    {"forget", "user", cmd_starting},      {"pause", NULL, cmd_starting},
    {"resume", NULL, cmd_starting},        {"log-level", "level", cmd_log_level},
};

void daemon_control_serve(pd_daemon *d, bool starting)
{
    if (starting)
        pd_control_serve(d->ctl, starting_commands,
                         sizeof starting_commands / sizeof starting_commands[0], d, CONTROL_BATCH);
    else
        pd_control_serve(d->ctl, control_commands,
                         sizeof control_commands / sizeof control_commands[0], d, CONTROL_BATCH);
}

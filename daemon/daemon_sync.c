/* Model sync's schedule (README "Scale-out"): every sync.interval of wall time, collect what
 * the models learned and publish it as one round; each loop turn, apply what the other
 * instances published (a bounded number of messages). Rounds are numbered floor(wall ms /
 * interval), so all instances agree on them without talking; the generation served (the
 * Redis field `v`) is the highest round that this instance and every live peer have finished
 * publishing and that was applied here. A peer silent for sync.peer_timeout is not waited for.
 * Counters and metrics stay each instance's own: only model state travels. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "daemon/daemon_internal.h"
#include "daemon/log.h"
#include "pipeline/model_sync.h"

#define MESSAGES_PER_TURN 16 /* each at most sync.max_message_bytes */
#define LOG_EVERY_MS      60000

static const char *const skip_names[SYNC_SKIP__COUNT] = {
    [SYNC_SKIP_OWN] = "own",
    [SYNC_SKIP_MALFORMED] = "malformed",
    [SYNC_SKIP_MODEL] = "unknown_model",
    [SYNC_SKIP_FINGERPRINT] = "fingerprint",
    [SYNC_SKIP_NOT_SYNCED] = "not_synced",
    [SYNC_SKIP_BAD_PART] = "bad_part",
    [SYNC_SKIP_PEERS] = "too_many_peers",
};

/* A skipped message or part: counted, and logged at most once a minute. */
static void skipped(pd_daemon *d, sync_skip why, const char *detail)
{
    daemon_sync *s = &d->sync;
    s->skipped[why]++;
    int64_t now = pd_clock_mono_ms();
    if (why == SYNC_SKIP_OWN || now - s->logged_ms < LOG_EVERY_MS)
        return;
    s->logged_ms = now;
    pd_logkv(PD_LOG_WARNING, "model sync skipped a delta", "reason=%s detail=\"%s\"",
             skip_names[why], detail ? detail : "");
}

static uint64_t round_now(const daemon_sync *s)
{
    return (uint64_t)(pd_clock_wall_ms() / s->interval_ms);
}

/* The model index of a part (its name comes first), -1 when none matches. */
static int part_model(const pd_daemon *d, const unsigned char *p, size_t len)
{
    if (len < 4)
        return -1;
    size_t n = (size_t)p[0] | (size_t)p[1] << 8 | (size_t)p[2] << 16 | (size_t)p[3] << 24;
    for (size_t i = 0; i < d->conf->n_models && i < PD_MAX_MODELS; i++)
        if (n <= len - 4 && strlen(d->conf->models[i].name) == n &&
            memcmp(d->conf->models[i].name, p + 4, n) == 0)
            return (int)i;
    return -1;
}

static int on_collected(void *ctx, const void *bytes, size_t len)
{
    pd_daemon *d = ctx;
    int mi = part_model(d, bytes, len);
    if (mi >= 0)
        d->sync.bytes_by_model[mi] += len;
    d->sync.round_bytes += len;
    return pd_model_sync_add(d->sync.ms, bytes, len);
}

/* Collects the models' deltas and sends them as round r. */
static void publish_round(pd_daemon *d, uint64_t r)
{
    daemon_sync *s = &d->sync;
    char err[512];
    int64_t t0 = pd_clock_mono_us();
    s->round_bytes = 0;
    if (pd_model_sync_begin(s->ms, r, pd_clock_wall_ms()) < 0) {
        pd_log_error("model sync: out of memory");
        return;
    }
    int n = pd_engine_delta_collect(d->engine, pd_model_sync_part_max(s->ms), on_collected, d,
                                    err, sizeof err);
    if (n < 0)
        pd_log_error("model sync: %s", err);
    else
        s->parts_sent += (uint64_t)n;
    if (pd_model_sync_end(s->ms) < 0)
        pd_log_warning("model sync: the producer refused round %" PRIu64, r);
    s->round = r;
    s->rounds++;
    s->last_round_bytes = s->round_bytes;
    s->collect_seconds = (double)(pd_clock_mono_us() - t0) / 1e6;
}

static sync_peer *peer_of(pd_daemon *d, const char *id)
{
    daemon_sync *s = &d->sync;
    for (size_t i = 0; i < s->n_peers; i++)
        if (strcmp(s->peers[i].id, id) == 0)
            return &s->peers[i];
    if (s->n_peers == SYNC_MAX_PEERS)
        return NULL;
    sync_peer *p = &s->peers[s->n_peers++];
    memset(p, 0, sizeof *p);
    snprintf(p->id, sizeof p->id, "%s", id);
    return p;
}

static void on_part(void *ctx, const pd_sync_message *m, const void *part, size_t len)
{
    pd_daemon *d = ctx;
    char err[512];
    (void)m;
    int r = pd_engine_delta_apply(d->engine, part, len, err, sizeof err);
    switch (r) {
    case PD_DELTA_APPLIED:
        d->sync.parts_applied++;
        d->sync.bytes_applied += len;
        break;
    case PD_DELTA_UNKNOWN_MODEL:
        skipped(d, SYNC_SKIP_MODEL, m->instance);
        break;
    case PD_DELTA_FINGERPRINT:
        skipped(d, SYNC_SKIP_FINGERPRINT, m->instance);
        break;
    case PD_DELTA_NOT_SYNCED:
        skipped(d, SYNC_SKIP_NOT_SYNCED, m->instance);
        break;
    default:
        skipped(d, SYNC_SKIP_BAD_PART, err);
        break;
    }
}

static void on_message(void *ctx, const pd_sync_message *m)
{
    pd_daemon *d = ctx;
    sync_peer *p = peer_of(d, m->instance);
    if (!p) {
        skipped(d, SYNC_SKIP_PEERS, m->instance);
        return;
    }
    p->seen_ms = pd_clock_mono_ms();
    p->lag_s = (double)(pd_clock_wall_ms() - m->sent_ms) / 1000.0;
    p->messages++;
    if (m->last && m->round > p->round)
        p->round = m->round;
}

/* The highest round this instance and every live peer finished. */
static void update_generation(pd_daemon *d, int64_t now_ms)
{
    daemon_sync *s = &d->sync;
    uint64_t g = s->round;
    for (size_t i = 0; i < s->n_peers; i++)
        if (now_ms - s->peers[i].seen_ms <= d->conf->sync.peer_timeout_ms && s->peers[i].round < g)
            g = s->peers[i].round;
    if (g > s->generation)
        s->generation = g;
}

int daemon_sync_start(pd_daemon *d)
{
    daemon_sync *s = &d->sync;
    const pd_sync_conf *sc = &d->conf->sync;
    char err[512], host[200];
    if (!sc->enabled)
        return 0;
    if (sc->instance_id) {
        snprintf(s->instance, sizeof s->instance, "%s", sc->instance_id);
    } else {
        if (gethostname(host, sizeof host) < 0)
            snprintf(host, sizeof host, "localhost");
        host[sizeof host - 1] = '\0';
        snprintf(s->instance, sizeof s->instance, "%s:%ld", host, (long)getpid());
    }
    s->interval_ms = sc->interval_ms;
    s->ms = pd_model_sync_new(&d->conf->kafka, sc, d->snap.group_from_ms, s->instance, err,
                              sizeof err);
    if (!s->ms) {
        pd_log_error("model sync: %s", err);
        return -EIO;
    }
    if (d->loop.wake[1] >= 0)
        pd_model_sync_set_wakeup(s->ms, d->loop.wake[1]);
    /* captures from now on; what a restored snapshot holds is not sent again */
    s->round = round_now(s);
    if (pd_engine_delta_collect(d->engine, pd_model_sync_part_max(s->ms), NULL, NULL, err,
                                sizeof err) < 0) {
        pd_log_error("model sync: %s", err);
        return -ENOMEM;
    }
    s->generation = s->round;
    pd_logkv(PD_LOG_INFO, "model sync on", "instance=%s topic=%s interval_ms=%" PRId64,
             s->instance, sc->topic, sc->interval_ms);
    return 0;
}

void daemon_sync_tick(pd_daemon *d, int64_t now_ms)
{
    daemon_sync *s = &d->sync;
    char why[256] = "";
    if (!s->ms)
        return;
    s->interval_ms = d->conf->sync.interval_ms; /* a reload may change it */
    pd_model_sync_poll(s->ms);
    pd_model_sync_stats before;
    pd_model_sync_get_stats(s->ms, &before);
    pd_model_sync_receive(s->ms, MESSAGES_PER_TURN, on_part, on_message, d, why, sizeof why);
    pd_model_sync_stats after;
    pd_model_sync_get_stats(s->ms, &after);
    s->skipped[SYNC_SKIP_OWN] += after.own - before.own;
    if (after.malformed > before.malformed) {
        s->skipped[SYNC_SKIP_MALFORMED] += after.malformed - before.malformed - 1;
        skipped(d, SYNC_SKIP_MALFORMED, why);
    }
    uint64_t r = round_now(s);
    if (r > s->round)
        publish_round(d, r);
    update_generation(d, now_ms);
}

int64_t daemon_sync_due_ms(const pd_daemon *d)
{
    const daemon_sync *s = &d->sync;
    if (!s->ms)
        return INT64_MAX;
    int64_t wall = pd_clock_wall_ms();
    return pd_clock_mono_ms() + ((int64_t)(s->round + 1) * s->interval_ms - wall);
}

uint64_t daemon_generation(const pd_daemon *d)
{
    return d->sync.ms ? d->sync.generation : pd_engine_generation(d->engine);
}

void daemon_sync_stop(pd_daemon *d)
{
    daemon_sync *s = &d->sync;
    if (!s->ms)
        return;
    /* what was learned since the last round goes out before the producer's last flush */
    uint64_t r = round_now(s);
    publish_round(d, r > s->round ? r : s->round + 1);
    pd_model_sync_free(s->ms);
    s->ms = NULL;
}

void daemon_sync_release(pd_daemon *d)
{
    pd_model_sync_free(d->sync.ms);
    d->sync.ms = NULL;
}

void daemon_sync_render(pd_daemon *d, pd_strbuf *sb)
{
    const daemon_sync *s = &d->sync;
    if (!s->ms)
        return;
    pd_model_sync_stats st;
    pd_model_sync_get_stats(s->ms, &st);
    int64_t now = pd_clock_mono_ms();
    FAMILY("propensityd_sync_rounds_total", COUNTER, "Model sync rounds published.");
    SAMPLE("propensityd_sync_rounds_total", s->rounds);
    FAMILY("propensityd_sync_published_total", COUNTER,
           "Model delta messages published (parts: model deltas or pieces of one).");
    SAMPLE1("propensityd_sync_published_total", "unit", "messages", st.messages_sent);
    SAMPLE1("propensityd_sync_published_total", "unit", "parts", s->parts_sent);
    FAMILY("propensityd_sync_publish_failed_total", COUNTER,
           "Model delta messages the producer refused or could not deliver.");
    SAMPLE("propensityd_sync_publish_failed_total", st.send_failed);
    FAMILY("propensityd_sync_applied_total", COUNTER, "Other instances' model delta parts applied.");
    SAMPLE("propensityd_sync_applied_total", s->parts_applied);
    FAMILY("propensityd_sync_bytes_total", COUNTER, "Bytes of model delta messages, by direction.");
    SAMPLE1("propensityd_sync_bytes_total", "direction", "published", st.bytes_sent);
    SAMPLE1("propensityd_sync_bytes_total", "direction", "received", st.bytes_received);
    SAMPLE1("propensityd_sync_bytes_total", "direction", "applied", s->bytes_applied);
    FAMILY("propensityd_sync_model_bytes_total", COUNTER,
           "Bytes of model delta parts published, by model.");
    for (size_t i = 0; i < d->conf->n_models && i < PD_MAX_MODELS; i++)
        SAMPLE1("propensityd_sync_model_bytes_total", "model", d->conf->models[i].name,
                s->bytes_by_model[i]);
    FAMILY("propensityd_sync_skipped_total", COUNTER,
           "Model delta messages (own, malformed, too_many_peers) or parts skipped, by reason.");
    for (int i = 0; i < SYNC_SKIP__COUNT; i++)
        SAMPLE1("propensityd_sync_skipped_total", "reason", skip_names[i], s->skipped[i]);
    double lag = 0.0;
    size_t live = 0;
    for (size_t i = 0; i < s->n_peers; i++)
        if (now - s->peers[i].seen_ms <= d->conf->sync.peer_timeout_ms) {
            live++;
            lag = s->peers[i].lag_s > lag ? s->peers[i].lag_s : lag;
        }
    FAMILY("propensityd_sync_lag_seconds", GAUGE,
           "Longest, over live peers, from sending their newest delta to applying it here.");
    SAMPLE("propensityd_sync_lag_seconds", lag);
    FAMILY("propensityd_sync_peers", GAUGE, "Other instances heard from within peer_timeout.");
    SAMPLE("propensityd_sync_peers", live);
    FAMILY("propensityd_sync_generation", GAUGE,
           "Group-wide model generation served (the sync round, the Redis field v).");
    SAMPLE("propensityd_sync_generation", s->generation);
    FAMILY("propensityd_sync_generation_behind", GAUGE,
           "Rounds between this instance's last published round and the generation served.");
    SAMPLE("propensityd_sync_generation_behind", s->round - s->generation);
    FAMILY("propensityd_sync_last_round_bytes", GAUGE, "Bytes of parts in the last round.");
    SAMPLE("propensityd_sync_last_round_bytes", s->last_round_bytes);
    FAMILY("propensityd_sync_collect_seconds", GAUGE, "How long the last round's collect took.");
    SAMPLE("propensityd_sync_collect_seconds", s->collect_seconds);
}

json_t *daemon_sync_status(pd_daemon *d)
{
    const daemon_sync *s = &d->sync;
    if (!s->ms)
        return json_null();
    json_t *st = json_object(), *peers = json_array(), *probe = json_object();
    int e = !st || !peers || !probe;
    for (size_t i = 0; i < s->n_peers && !e; i++)
        e |= json_array_append_new(
            peers, json_pack("{s:s, s:I, s:f, s:I}", "instance", s->peers[i].id, "round",
                             (json_int_t)s->peers[i].round, "lag_seconds", s->peers[i].lag_s,
                             "messages", (json_int_t)s->peers[i].messages));
    /* a fingerprint of each model's state, for comparing instances */
    for (size_t i = 0; i < pd_engine_model_count(d->engine) && !e; i++) {
        double v[16];
        size_t n = pd_engine_model_probe(d->engine, i, v, 16);
        pd_model_info mi;
        pd_engine_model_info(d->engine, i, &mi);
        json_t *a = json_array();
        for (size_t k = 0; k < n && a; k++)
            json_array_append_new(a, json_real(v[k]));
        e |= json_object_set_new(probe, mi.name, a ? a : json_null());
    }
    e |= json_object_set_new(st, "instance", json_string(s->instance));
    e |= json_object_set_new(st, "round", json_integer((json_int_t)s->round));
    e |= json_object_set_new(st, "generation", json_integer((json_int_t)s->generation));
    e |= json_object_set_new(st, "rounds", json_integer((json_int_t)s->rounds));
    e |= json_object_set_new(st, "parts_applied", json_integer((json_int_t)s->parts_applied));
    e |= json_object_set_new(st, "peers", peers);
    e |= json_object_set_new(st, "probe", probe);
    if (e) {
        json_decref(st);
        return NULL;
    }
    return st;
}

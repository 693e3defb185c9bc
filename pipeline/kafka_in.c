/* Kafka consumer. Everything librdkafka reports (logs, errors, rebalances, commit results) is
 * routed to the consumer queue, so it reaches us on the polling thread only. */
#include "pipeline/kafka_in.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct pd_kafka_in {
    rd_kafka_t *rk;
    pd_kafka_hooks hooks;
    rd_kafka_topic_partition_list_t *processed; /* next offset per partition */
    /* the entry of processed the last message went to: messages come in runs of one
     * partition (a fetch response each), so most lookups skip the list's strcmp scan */
    struct {
        const rd_kafka_topic_t *rkt;
        int32_t partition;
        int idx;
    } last;
    /* where consumption of each assigned partition began (absolute, or BEGINNING/END when
     * the group had no commit): a snapshot taken before a partition delivered anything must
     * still say where its events start, or a restart would skip what came after it */
    rd_kafka_topic_partition_list_t *started;
    /* where revoked partitions stood: if they come back, this instance's state holds every
     * event before that point, so it resumes there even when the revoke was "lost" and the
     * group's committed offset lies elsewhere */
    rd_kafka_topic_partition_list_t *resume;
    /* partitions being revoked whose state went to their next owner: not resumed here */
    rd_kafka_topic_partition_list_t *moved;
    rd_kafka_topic_partition_list_t *assigned;
    pd_start_position start;
    pd_kafka_stats stats;
    bool closed;
    bool paused;
    bool rebalanced; /* set by the callback: the batch being collected may be stale */
};

static void log_line(pd_kafka_in *in, int level, const char *fac, const char *msg)
{
    if (in->hooks.log)
        in->hooks.log(in->hooks.ctx, level, fac, msg);
}

rd_kafka_conf_t *pd_kafka_conf_build(const pd_kafka_conf *conf, bool consumer, char *errbuf,
                                     size_t errlen)
{
    rd_kafka_conf_t *kc = rd_kafka_conf_new();
    char err[512];
    if (!kc) {
        snprintf(errbuf, errlen, "out of memory for the kafka configuration");
        return NULL;
    }
    if (rd_kafka_conf_set(kc, "bootstrap.servers", conf->brokers, err, sizeof err) !=
        RD_KAFKA_CONF_OK)
        goto out_bad;
    /* Prefetch sized by bytes: up to 1M messages, but at most 32 MiB queued, where librdkafka's
     * defaults are 100k / 64 MiB and this was 256 MiB, which held a small pipeline at 400 MiB
     * RSS (tests/bench/README.md, "Measured design choices"). Set before the passed-through
     * properties, which may override them. */
    /* Cooperative-sticky assignment: a member joining or leaving moves only the partitions
     * that change owner, where the eager protocol stopped every member (KIP-429). */
    static const char *const consumer_defaults[][2] = {
        {"queued.min.messages", "1000000"},
        {"queued.max.messages.kbytes", "32768"},
        {"partition.assignment.strategy", "cooperative-sticky"},
    };
    for (size_t i = 0; consumer && i < sizeof consumer_defaults / sizeof consumer_defaults[0]; i++)
        rd_kafka_conf_set(kc, consumer_defaults[i][0], consumer_defaults[i][1], err, sizeof err);
    for (size_t i = 0; i < conf->n_properties; i++) {
        const pd_kv *kv = &conf->properties[i];
        if (rd_kafka_conf_set(kc, kv->key, kv->value, err, sizeof err) != RD_KAFKA_CONF_OK) {
            /* librdkafka's message may quote the value; a secret's must not reach a log */
            snprintf(errbuf, errlen, "kafka property \"%s\": %s", kv->key,
                     kv->secret ? "invalid value" : err);
            rd_kafka_conf_destroy(kc);
            return NULL;
        }
    }
    return kc;

out_bad:
    snprintf(errbuf, errlen, "kafka configuration: %s", err);
    rd_kafka_conf_destroy(kc);
    return NULL;
}

static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)rk;
    pd_kafka_in *in = opaque;
    in->stats.errors++;
    char msg[768];
    snprintf(msg, sizeof msg, "%s: %s", rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
    log_line(in, err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN ? 3 : 4, "error", msg);
}

static void on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    pd_kafka_in *in = rd_kafka_opaque(rk);
    if (in)
        log_line(in, level, fac, buf);
}

static int on_stats(rd_kafka_t *rk, char *json, size_t len, void *opaque)
{
    (void)rk;
    pd_kafka_in *in = opaque;
    if (in->hooks.stats)
        in->hooks.stats(in->hooks.ctx, json, len);
    return 0; /* librdkafka frees json */
}

static void on_commit(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                      rd_kafka_topic_partition_list_t *offsets, void *opaque)
{
    (void)rk;
    (void)offsets;
    pd_kafka_in *in = opaque;
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR || err == RD_KAFKA_RESP_ERR__NO_OFFSET)
        return;
    in->stats.commit_failures++;
    char msg[256];
    snprintf(msg, sizeof msg, "offset commit failed: %s", rd_kafka_err2str(err));
    log_line(in, 4, "commit", msg);
}

static bool cooperative(rd_kafka_t *rk)
{
    const char *proto = rd_kafka_rebalance_protocol(rk);
    return proto && strcmp(proto, "COOPERATIVE") == 0;
}

static void refresh_assignment(pd_kafka_in *in)
{
    rd_kafka_topic_partition_list_t *a = NULL;
    if (rd_kafka_assignment(in->rk, &a) == RD_KAFKA_RESP_ERR_NO_ERROR && a) {
        if (in->assigned)
            rd_kafka_topic_partition_list_destroy(in->assigned);
        in->assigned = a;
        in->stats.assigned = (size_t)a->cnt;
    }
}

static void forget_positions(pd_kafka_in *in, const rd_kafka_topic_partition_list_t *parts)
{
    rd_kafka_topic_partition_list_t *pos = pd_kafka_in_positions(in);
    for (int i = 0; pos && i < parts->cnt; i++) {
        const rd_kafka_topic_partition_t *p = rd_kafka_topic_partition_list_find(
            pos, parts->elems[i].topic, parts->elems[i].partition);
        if (!p || p->offset < 0)
            continue;
        if (rd_kafka_topic_partition_list_find(in->moved, p->topic, p->partition)) {
            rd_kafka_topic_partition_list_del(in->resume, p->topic, p->partition);
            continue;
        }
        rd_kafka_topic_partition_t *r =
            rd_kafka_topic_partition_list_find(in->resume, p->topic, p->partition);
        if (!r)
            r = rd_kafka_topic_partition_list_add(in->resume, p->topic, p->partition);
        r->offset = p->offset;
    }
    if (pos)
        rd_kafka_topic_partition_list_destroy(pos);
    for (int i = 0; i < parts->cnt; i++)
        rd_kafka_topic_partition_list_del(in->moved, parts->elems[i].topic,
                                          parts->elems[i].partition);
    for (int i = 0; i < parts->cnt; i++) {
        in->last.rkt = NULL; /* entries move */
        rd_kafka_topic_partition_list_del(in->processed, parts->elems[i].topic,
                                          parts->elems[i].partition);
        rd_kafka_topic_partition_list_del(in->started, parts->elems[i].topic,
                                          parts->elems[i].partition);
    }
}

/* Records where each newly assigned partition starts: the offset the owner chose, else the
 * group's committed offset, else the configured start. */
static void note_starts(pd_kafka_in *in, const rd_kafka_topic_partition_list_t *parts)
{
    rd_kafka_topic_partition_list_t *ask = rd_kafka_topic_partition_list_new(parts->cnt);
    for (int i = 0; i < parts->cnt; i++) {
        rd_kafka_topic_partition_t *p = &parts->elems[i];
        rd_kafka_topic_partition_t *r =
            rd_kafka_topic_partition_list_find(in->resume, p->topic, p->partition);
        if (p->offset == RD_KAFKA_OFFSET_INVALID && r) {
            p->offset = r->offset; /* back to this instance: continue where its state ends */
            char msg[256];
            snprintf(msg, sizeof msg, "\"%s\" [%d] came back: resuming at %lld", p->topic,
                     p->partition, (long long)p->offset);
            log_line(in, 6, "rebalance", msg);
        }
        if (r)
            rd_kafka_topic_partition_list_del(in->resume, p->topic, p->partition);
        if (p->offset == RD_KAFKA_OFFSET_INVALID)
            rd_kafka_topic_partition_list_add(ask, p->topic, p->partition);
    }
    if (ask->cnt > 0 && rd_kafka_committed(in->rk, ask, 10000) != RD_KAFKA_RESP_ERR_NO_ERROR)
        log_line(in, 4, "rebalance", "could not read the group's committed offsets");
    for (int i = 0; i < parts->cnt; i++) {
        const rd_kafka_topic_partition_t *p = &parts->elems[i];
        int64_t off = p->offset;
        if (off == RD_KAFKA_OFFSET_INVALID) {
            const rd_kafka_topic_partition_t *c =
                rd_kafka_topic_partition_list_find(ask, p->topic, p->partition);
            off = c && c->offset >= 0 ? c->offset
                                      : (in->start == PD_START_LATEST ? RD_KAFKA_OFFSET_END
                                                                      : RD_KAFKA_OFFSET_BEGINNING);
        }
        rd_kafka_topic_partition_t *s =
            rd_kafka_topic_partition_list_find(in->started, p->topic, p->partition);
        if (!s)
            s = rd_kafka_topic_partition_list_add(in->started, p->topic, p->partition);
        s->offset = off;
    }
    rd_kafka_topic_partition_list_destroy(ask);
}

/* Applies an assignment change: adds parts (assign) or takes them away. librdkafka may refuse
 * (a duplicate or invalid partition, a call that does not match the group's protocol); the
 * member then consumes other partitions than the group believes, so a refusal is logged as an
 * error. Returns 0 or -EINVAL. */
static int change_assignment(pd_kafka_in *in, rd_kafka_topic_partition_list_t *parts, bool assign)
{
    rd_kafka_error_t *error = NULL;
    rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
    if (cooperative(in->rk))
        error = assign ? rd_kafka_incremental_assign(in->rk, parts)
                       : rd_kafka_incremental_unassign(in->rk, parts);
    else
        err = rd_kafka_assign(in->rk, assign ? parts : NULL);
    if (!error && !err)
        return 0;
    char msg[512];
    snprintf(msg, sizeof msg, "could not %s %d partition(s): %s", assign ? "assign" : "unassign",
             parts->cnt, error ? rd_kafka_error_string(error) : rd_kafka_err2str(err));
    log_line(in, 3, "rebalance", msg);
    if (error)
        rd_kafka_error_destroy(error);
    return -EINVAL;
}

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    pd_kafka_in *in = opaque;
    in->stats.rebalances++;
    in->rebalanced = true;
    char msg[256];
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    switch (err) {
    case RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS:
        if (in->hooks.assigning)
            in->hooks.assigning(in->hooks.ctx, in, parts);
        note_starts(in, parts);
        if (change_assignment(in, parts, true) < 0)
            break;
        snprintf(msg, sizeof msg, "assigned %d partition(s)", parts->cnt);
        log_line(in, 6, "rebalance", msg);
        break;
    case RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS: {
        bool lost = rd_kafka_assignment_lost(rk);
        if (in->hooks.revoking)
            in->hooks.revoking(in->hooks.ctx, in, parts, lost);
        forget_positions(in, parts);
        if (change_assignment(in, parts, false) < 0)
            break;
        snprintf(msg, sizeof msg, "%s %d partition(s)", lost ? "lost" : "revoked", parts->cnt);
        log_line(in, lost ? 4 : 6, "rebalance", msg);
        break;
    }
    default: {
        snprintf(msg, sizeof msg, "rebalance failed: %s", rd_kafka_err2str(err));
        log_line(in, 3, "rebalance", msg);
        rd_kafka_resp_err_t aerr = rd_kafka_assign(rk, NULL);
        if (aerr) {
            snprintf(msg, sizeof msg, "could not clear the assignment: %s", rd_kafka_err2str(aerr));
            log_line(in, 3, "rebalance", msg);
        }
        break;
    }
    }
    refresh_assignment(in);
    /* the group waits for this member while it runs: a slow one holds up every member and,
     * beyond the session timeout, loses the member its partitions */
    clock_gettime(CLOCK_MONOTONIC, &t1);
    long ms = (long)((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000);
    if (ms >= 1000) {
        snprintf(msg, sizeof msg, "the rebalance callback took %ld ms", ms);
        log_line(in, 4, "rebalance", msg);
    }
}

pd_kafka_in *pd_kafka_in_new(const pd_kafka_conf *conf, const pd_kafka_hooks *hooks, char *errbuf,
                             size_t errlen)
{
    char err[512];
    pd_kafka_in *in = calloc(1, sizeof *in);
    if (!in) {
        snprintf(errbuf, errlen, "out of memory for the kafka consumer");
        return NULL;
    }
    if (hooks)
        in->hooks = *hooks;
    in->processed = rd_kafka_topic_partition_list_new(16);
    in->started = rd_kafka_topic_partition_list_new(16);
    in->resume = rd_kafka_topic_partition_list_new(16);
    in->moved = rd_kafka_topic_partition_list_new(16);
    in->assigned = rd_kafka_topic_partition_list_new(16);
    in->start = conf->start;
    rd_kafka_conf_t *kc = pd_kafka_conf_build(conf, true, errbuf, errlen);
    if (!kc)
        goto out_free;
    /* our guarantees rest on these, so they win over any passed-through property */
    const char *fixed[][2] = {
        {"group.id", conf->group},
        {"enable.auto.commit", "false"},
        {"enable.auto.offset.store", "false"},
        {"auto.offset.reset", conf->start == PD_START_LATEST ? "latest" : "earliest"},
        {"enable.partition.eof", "false"},
        {"log.queue", "true"},
    };
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
        if (rd_kafka_conf_set(kc, fixed[i][0], fixed[i][1], err, sizeof err) != RD_KAFKA_CONF_OK) {
            snprintf(errbuf, errlen, "kafka configuration: %s", err);
            rd_kafka_conf_destroy(kc);
            goto out_free;
        }
    }
    if (hooks && hooks->stats) {
        /* statistics once a second unless configured otherwise: broker health for readiness */
        char v[32];
        size_t vlen = sizeof v;
        if (rd_kafka_conf_get(kc, "statistics.interval.ms", v, &vlen) == RD_KAFKA_CONF_OK &&
            strcmp(v, "0") == 0 &&
            rd_kafka_conf_set(kc, "statistics.interval.ms", "1000", err, sizeof err) !=
                RD_KAFKA_CONF_OK) {
            snprintf(errbuf, errlen, "kafka configuration: %s", err);
            rd_kafka_conf_destroy(kc);
            goto out_free;
        }
        rd_kafka_conf_set_stats_cb(kc, on_stats);
    }
    rd_kafka_conf_set_opaque(kc, in);
    rd_kafka_conf_set_error_cb(kc, on_error);
    rd_kafka_conf_set_log_cb(kc, on_log);
    rd_kafka_conf_set_rebalance_cb(kc, on_rebalance);
    rd_kafka_conf_set_offset_commit_cb(kc, on_commit);

    in->rk = rd_kafka_new(RD_KAFKA_CONSUMER, kc, err, sizeof err);
    if (!in->rk) {
        snprintf(errbuf, errlen, "failed to create the kafka consumer: %s", err);
        rd_kafka_conf_destroy(kc);
        goto out_free;
    }
    rd_kafka_set_log_queue(in->rk, NULL); /* logs to the main queue ... */
    rd_kafka_poll_set_consumer(in->rk);   /* ... which is forwarded to the consumer queue */

    rd_kafka_topic_partition_list_t *topics =
        rd_kafka_topic_partition_list_new((int)conf->n_topics);
    for (size_t i = 0; i < conf->n_topics; i++)
        rd_kafka_topic_partition_list_add(topics, conf->topics[i], RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t rerr = rd_kafka_subscribe(in->rk, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (rerr) {
        snprintf(errbuf, errlen, "failed to subscribe to the kafka topics: %s",
                 rd_kafka_err2str(rerr));
        goto out_free;
    }
    return in;

out_free:
    in->closed = true; /* nothing joined: no revoke to run */
    pd_kafka_in_free(in);
    return NULL;
}

void pd_kafka_in_close(pd_kafka_in *in)
{
    if (!in || in->closed || !in->rk)
        return;
    in->closed = true;
    rd_kafka_consumer_close(in->rk);
}

void pd_kafka_in_free(pd_kafka_in *in)
{
    if (!in)
        return;
    pd_kafka_in_close(in);
    if (in->rk)
        rd_kafka_destroy(in->rk);
    if (in->processed)
        rd_kafka_topic_partition_list_destroy(in->processed);
    if (in->started)
        rd_kafka_topic_partition_list_destroy(in->started);
    if (in->resume)
        rd_kafka_topic_partition_list_destroy(in->resume);
    if (in->moved)
        rd_kafka_topic_partition_list_destroy(in->moved);
    if (in->assigned)
        rd_kafka_topic_partition_list_destroy(in->assigned);
    free(in);
}

static bool is_assigned(const pd_kafka_in *in, const char *topic, int32_t partition)
{
    return rd_kafka_topic_partition_list_find(in->assigned, topic, partition) != NULL;
}

size_t pd_kafka_in_poll(pd_kafka_in *in, rd_kafka_message_t **msgs, size_t max, int timeout_ms)
{
    size_t n = 0;
    in->rebalanced = false;
    while (n < max) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(in->rk, n == 0 ? timeout_ms : 0);
        if (!m)
            break;
        if (m->err) {
            in->stats.errors++;
            char msg[512];
            snprintf(msg, sizeof msg, "consume error on \"%s\" [%d]: %s",
                     m->rkt ? rd_kafka_topic_name(m->rkt) : "-", m->partition,
                     rd_kafka_message_errstr(m));
            log_line(in, 4, "consume", msg);
            rd_kafka_message_destroy(m);
            continue;
        }
        msgs[n++] = m;
    }
    if (in->rebalanced) {
        /* messages of partitions taken away while we collected belong to their new owner */
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            if (is_assigned(in, rd_kafka_topic_name(msgs[i]->rkt), msgs[i]->partition)) {
                msgs[k++] = msgs[i];
            } else {
                in->stats.stale_dropped++;
                rd_kafka_message_destroy(msgs[i]);
            }
        }
        n = k;
    }
    in->stats.messages += n;
    return n;
}

void pd_kafka_in_processed(pd_kafka_in *in, const rd_kafka_message_t *msg)
{
    rd_kafka_topic_partition_t *p;
    if (in->last.rkt == msg->rkt && in->last.partition == msg->partition) {
        p = &in->processed->elems[in->last.idx];
    } else {
        const char *topic = rd_kafka_topic_name(msg->rkt);
        p = rd_kafka_topic_partition_list_find(in->processed, topic, msg->partition);
        if (!p)
            p = rd_kafka_topic_partition_list_add(in->processed, topic, msg->partition);
        in->last.rkt = msg->rkt;
        in->last.partition = msg->partition;
        in->last.idx = (int)(p - in->processed->elems);
    }
    if (msg->offset + 1 > p->offset)
        p->offset = msg->offset + 1;
}

rd_kafka_topic_partition_list_t *pd_kafka_in_positions(pd_kafka_in *in)
{
    rd_kafka_topic_partition_list_t *pos = rd_kafka_topic_partition_list_copy(in->processed);
    /* partitions that delivered nothing yet are where they started */
    for (int i = 0; i < in->started->cnt; i++) {
        const rd_kafka_topic_partition_t *s = &in->started->elems[i];
        if (!rd_kafka_topic_partition_list_find(pos, s->topic, s->partition))
            rd_kafka_topic_partition_list_add(pos, s->topic, s->partition)->offset = s->offset;
    }
    if (pos->cnt == 0) {
        rd_kafka_topic_partition_list_destroy(pos);
        return NULL;
    }
    return pos;
}

int pd_kafka_in_commit(pd_kafka_in *in, const rd_kafka_topic_partition_list_t *offsets, bool sync,
                       char *errbuf, size_t errlen)
{
    if (!offsets || offsets->cnt == 0)
        return 0;
    rd_kafka_topic_partition_list_t *mine = rd_kafka_topic_partition_list_new(offsets->cnt);
    for (int i = 0; i < offsets->cnt; i++) {
        const rd_kafka_topic_partition_t *p = &offsets->elems[i];
        if (p->offset >= 0 && is_assigned(in, p->topic, p->partition))
            rd_kafka_topic_partition_list_add(mine, p->topic, p->partition)->offset = p->offset;
    }
    int r = 0;
    if (mine->cnt > 0) {
        rd_kafka_resp_err_t err = rd_kafka_commit(in->rk, mine, sync ? 0 : 1);
        if (err) {
            in->stats.commit_failures++;
            snprintf(errbuf, errlen, "offset commit failed: %s", rd_kafka_err2str(err));
            /* refused while the group rebalances, or the member is leaving it: not a fault,
             * the next commit (or the next owner's) goes through */
            r = err == RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS ||
                        err == RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION ||
                        err == RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID ||
                        err == RD_KAFKA_RESP_ERR__DESTROY
                    ? -EBUSY
                    : -EIO;
        } else {
            in->stats.commits++;
        }
    }
    rd_kafka_topic_partition_list_destroy(mine);
    return r;
}

static int set_paused(pd_kafka_in *in, bool pause)
{
    if (in->paused == pause)
        return 0;
    rd_kafka_topic_partition_list_t *a = NULL;
    if (rd_kafka_assignment(in->rk, &a) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return -EIO;
    rd_kafka_resp_err_t err =
        pause ? rd_kafka_pause_partitions(in->rk, a) : rd_kafka_resume_partitions(in->rk, a);
    rd_kafka_topic_partition_list_destroy(a);
    if (err)
        return -EIO;
    in->paused = pause;
    return 0;
}

void pd_kafka_in_state_moved(pd_kafka_in *in, const char *topic, int32_t partition)
{
    if (!rd_kafka_topic_partition_list_find(in->moved, topic, partition))
        rd_kafka_topic_partition_list_add(in->moved, topic, partition);
}

int pd_kafka_in_pause(pd_kafka_in *in)
{
    return set_paused(in, true);
}

int pd_kafka_in_resume(pd_kafka_in *in)
{
    return set_paused(in, false);
}

typedef struct lag_sum {
    int64_t total;
    bool known;
} lag_sum;

static void add_lag(void *ctx, const char *topic, int32_t partition, int64_t lag)
{
    (void)topic;
    (void)partition;
    lag_sum *s = ctx;
    if (lag >= 0) {
        s->total += lag;
        s->known = true;
    }
}

void pd_kafka_in_each_lag(pd_kafka_in *in, pd_kafka_lag_fn fn, void *ctx)
{
    for (int i = 0; i < in->assigned->cnt; i++) {
        const rd_kafka_topic_partition_t *a = &in->assigned->elems[i];
        int64_t lo = -1, hi = -1;
        if (rd_kafka_get_watermark_offsets(in->rk, a->topic, a->partition, &lo, &hi) || hi < 0) {
            fn(ctx, a->topic, a->partition, -1);
            continue;
        }
        const rd_kafka_topic_partition_t *p =
            rd_kafka_topic_partition_list_find(in->processed, a->topic, a->partition);
        int64_t pos = p ? p->offset : (lo >= 0 ? lo : 0);
        fn(ctx, a->topic, a->partition, hi > pos ? hi - pos : 0);
    }
}

int64_t pd_kafka_in_lag(pd_kafka_in *in)
{
    lag_sum s = {0};
    pd_kafka_in_each_lag(in, add_lag, &s);
    return s.known ? s.total : -1;
}

void pd_kafka_in_get_stats(const pd_kafka_in *in, pd_kafka_stats *ret_stats)
{
    *ret_stats = in->stats;
}

rd_kafka_t *pd_kafka_in_handle(pd_kafka_in *in)
{
    return in->rk;
}

/* ---- for readiness and the control plane (daemon/ops) ---- */

bool pd_kafka_in_reachable(pd_kafka_in *in, int timeout_ms)
{
    const struct rd_kafka_metadata *md = NULL;
    /* locally known topics only: the answer proves a broker talks to us, nothing more */
    rd_kafka_resp_err_t err = rd_kafka_metadata(in->rk, 0, NULL, &md, timeout_ms);
    if (md)
        rd_kafka_metadata_destroy(md);
    return err == RD_KAFKA_RESP_ERR_NO_ERROR;
}

int pd_kafka_in_repause(pd_kafka_in *in)
{
    if (!in->paused)
        return 0;
    rd_kafka_topic_partition_list_t *a = NULL;
    if (rd_kafka_assignment(in->rk, &a) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return -EIO;
    rd_kafka_resp_err_t err = rd_kafka_pause_partitions(in->rk, a);
    rd_kafka_topic_partition_list_destroy(a);
    return err ? -EIO : 0;
}

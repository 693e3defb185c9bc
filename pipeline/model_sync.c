/* Model sync's transport. A message, little-endian:
 *   "PDSY", u32 version (1), u32 flags (bit 0: the sender's last message of the round),
 *   u32 length + instance id, u64 round, i64 sent_ms (sender's wall clock), u32 n parts,
 *   n x (u32 length + part)
 * keyed by the instance id, so one instance's messages stay in order on one partition. The
 * receiver checks the whole framing before it hands out a part: a truncated or garbled message
 * gives none. */
#include "pipeline/model_sync.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

#include "pipeline/kafka_in.h"

#define MAGIC        "PDSY"
#define VERSION      1u
#define FLAG_LAST    1u
#define INSTANCE_MAX 255
#define HEADROOM     4096 /* producer's message.max.bytes over ours: key and record framing */

struct pd_model_sync {
    rd_kafka_t *producer;
    rd_kafka_topic_t *ptopic;
    rd_kafka_t *consumer;
    rd_kafka_queue_t *queue;
    char instance[INSTANCE_MAX + 1];
    size_t max_bytes;
    int64_t from_ms; /* > 0: messages older than this were in the snapshot started from */
    /* the round being sent: its parts, framed, waiting for the header */
    uint64_t round;
    int64_t sent_ms;
    unsigned char *buf;
    size_t len, cap;
    uint32_t n_parts;
    pd_model_sync_stats stats;
};

static void put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const unsigned char *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

static size_t header_bytes(const pd_model_sync *s)
{
    return 4 + 4 + 4 + 4 + strlen(s->instance) + 8 + 8 + 4;
}

size_t pd_model_sync_part_max(const pd_model_sync *s)
{
    return s->max_bytes - header_bytes(s) - 4;
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    pd_model_sync *s = opaque;
    (void)rk;
    if (m->err)
        s->stats.send_failed++;
}

static int set_all(rd_kafka_conf_t *kc, const char *const (*kv)[2], size_t n, char *errbuf,
                   size_t errlen)
{
    char err[512];
    for (size_t i = 0; i < n; i++)
        if (rd_kafka_conf_set(kc, kv[i][0], kv[i][1], err, sizeof err) != RD_KAFKA_CONF_OK) {
            snprintf(errbuf, errlen, "sync kafka configuration: %s", err);
            return -EINVAL;
        }
    return 0;
}

/* Every partition of the topic, at its end, or from_ms > 0: at the first message of that time
 * or later. */
static int assign_all(pd_model_sync *s, const char *topic, int64_t from_ms, char *errbuf,
                      size_t errlen)
{
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *t = rd_kafka_topic_new(s->consumer, topic, NULL);
    if (!t) {
        snprintf(errbuf, errlen, "sync topic \"%s\": out of memory", topic);
        return -ENOMEM;
    }
    rd_kafka_resp_err_t err = rd_kafka_metadata(s->consumer, 0, t, &md, 10000);
    rd_kafka_topic_destroy(t);
    if (err || md->topic_cnt != 1 || md->topics[0].err || md->topics[0].partition_cnt < 1) {
        snprintf(errbuf, errlen, "sync topic \"%s\": no metadata (%s)", topic,
                 rd_kafka_err2str(err ? err
                                      : (md && md->topic_cnt == 1 ? md->topics[0].err
                                                                  : RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC)));
        if (md)
            rd_kafka_metadata_destroy(md);
        return -EIO;
    }
    rd_kafka_topic_partition_list_t *parts =
        rd_kafka_topic_partition_list_new(md->topics[0].partition_cnt);
    for (int i = 0; i < md->topics[0].partition_cnt; i++)
        rd_kafka_topic_partition_list_add(parts, topic, md->topics[0].partitions[i].id)->offset =
            from_ms > 0 ? from_ms : RD_KAFKA_OFFSET_END;
    rd_kafka_metadata_destroy(md);
    if (from_ms > 0) {
        /* the deltas published since the snapshot this instance started from */
        err = rd_kafka_offsets_for_times(s->consumer, parts, 10000);
        /* a broker that cannot look times up: from the start, the older ones skipped as
         * they come (pd_model_sync_receive) */
        for (int i = 0; i < parts->cnt; i++)
            if (err || parts->elems[i].err)
                parts->elems[i].offset = RD_KAFKA_OFFSET_BEGINNING;
            else if (parts->elems[i].offset < 0)
                parts->elems[i].offset = RD_KAFKA_OFFSET_END;
        s->from_ms = from_ms;
    }
    err = rd_kafka_assign(s->consumer, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    if (err) {
        snprintf(errbuf, errlen, "sync topic \"%s\": assign: %s", topic, rd_kafka_err2str(err));
        return -EIO;
    }
    return 0;
}

pd_model_sync *pd_model_sync_new(const pd_kafka_conf *kafka, const pd_sync_conf *conf,
                                 int64_t from_ms,
                                 const char *instance, char *errbuf, size_t errlen)
{
    char err[512], max[32], group[INSTANCE_MAX + 32];
    pd_model_sync *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(errbuf, errlen, "out of memory for model sync");
        return NULL;
    }
    snprintf(s->instance, sizeof s->instance, "%s", instance);
    s->max_bytes = (size_t)conf->max_message_bytes;

    rd_kafka_conf_t *kc = pd_kafka_conf_build(kafka, false, errbuf, errlen);
    if (!kc)
        goto out_free;
    snprintf(max, sizeof max, "%zu", s->max_bytes + HEADROOM > 1000000 ? s->max_bytes + HEADROOM
                                                                       : (size_t)1000000);
    /* idempotent: a round's messages arrive once and in order */
    const char *const pfixed[][2] = {
        {"enable.idempotence", "true"}, {"acks", "all"}, {"linger.ms", "5"},
        {"message.max.bytes", max},
    };
    if (set_all(kc, pfixed, sizeof pfixed / sizeof pfixed[0], errbuf, errlen) < 0) {
        rd_kafka_conf_destroy(kc);
        goto out_free;
    }
    rd_kafka_conf_set_opaque(kc, s);
    rd_kafka_conf_set_dr_msg_cb(kc, on_delivery);
    s->producer = rd_kafka_new(RD_KAFKA_PRODUCER, kc, err, sizeof err);
    if (!s->producer) {
        snprintf(errbuf, errlen, "failed to create the sync producer: %s", err);
        rd_kafka_conf_destroy(kc);
        goto out_free;
    }
    s->ptopic = rd_kafka_topic_new(s->producer, conf->topic, NULL);
    if (!s->ptopic) {
        snprintf(errbuf, errlen, "sync topic \"%s\": out of memory", conf->topic);
        goto out_free;
    }

    kc = pd_kafka_conf_build(kafka, true, errbuf, errlen);
    if (!kc)
        goto out_free;
    /* a group id only because librdkafka wants one; nothing joins or commits */
    snprintf(group, sizeof group, "propensityd-sync-%s", s->instance);
    const char *const cfixed[][2] = {
        {"group.id", group},           {"enable.auto.commit", "false"},
        {"enable.auto.offset.store", "false"}, {"enable.partition.eof", "false"},
        {"fetch.wait.max.ms", "50"},   {"fetch.message.max.bytes", max},
    };
    if (set_all(kc, cfixed, sizeof cfixed / sizeof cfixed[0], errbuf, errlen) < 0) {
        rd_kafka_conf_destroy(kc);
        goto out_free;
    }
    s->consumer = rd_kafka_new(RD_KAFKA_CONSUMER, kc, err, sizeof err);
    if (!s->consumer) {
        snprintf(errbuf, errlen, "failed to create the sync consumer: %s", err);
        rd_kafka_conf_destroy(kc);
        goto out_free;
    }
    s->queue = rd_kafka_queue_get_consumer(s->consumer);
    if (!s->queue || assign_all(s, conf->topic, from_ms, errbuf, errlen) < 0)
        goto out_free;
    return s;

out_free:
    pd_model_sync_free(s);
    return NULL;
}

void pd_model_sync_free(pd_model_sync *s)
{
    if (!s)
        return;
    if (s->queue) {
        rd_kafka_queue_io_event_enable(s->queue, -1, NULL, 0);
        rd_kafka_queue_destroy(s->queue);
    }
    if (s->consumer) {
        rd_kafka_assign(s->consumer, NULL);
        rd_kafka_destroy(s->consumer);
    }
    if (s->producer) {
        rd_kafka_flush(s->producer, 2000); /* the last round, if the broker is there */
        if (s->ptopic)
            rd_kafka_topic_destroy(s->ptopic);
        rd_kafka_destroy(s->producer);
    }
    free(s->buf);
    free(s);
}

void pd_model_sync_set_wakeup(pd_model_sync *s, int fd)
{
    if (fd >= 0)
        rd_kafka_queue_io_event_enable(s->queue, fd, "1", 1);
    else
        rd_kafka_queue_io_event_enable(s->queue, -1, NULL, 0);
}

int pd_model_sync_begin(pd_model_sync *s, uint64_t round, int64_t sent_ms)
{
    s->round = round;
    s->sent_ms = sent_ms;
    s->len = 0;
    s->n_parts = 0;
    if (!s->buf) {
        s->cap = s->max_bytes;
        s->buf = malloc(s->cap);
        if (!s->buf)
            return -ENOMEM;
    }
    /* the header goes in front when the message is sent */
    s->len = header_bytes(s);
    return 0;
}

static int send_message(pd_model_sync *s, bool last)
{
    unsigned char *p = s->buf;
    size_t il = strlen(s->instance);
    memcpy(p, MAGIC, 4);
    put32(p + 4, VERSION);
    put32(p + 8, last ? FLAG_LAST : 0);
    put32(p + 12, (uint32_t)il);
    memcpy(p + 16, s->instance, il);
    put64(p + 16 + il, s->round);
    put64(p + 24 + il, (uint64_t)s->sent_ms);
    put32(p + 32 + il, s->n_parts);
    rd_kafka_resp_err_t err = rd_kafka_producev(
        s->producer, RD_KAFKA_V_RKT(s->ptopic), RD_KAFKA_V_VALUE(s->buf, s->len),
        RD_KAFKA_V_KEY(s->instance, il), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
    size_t sent = s->len;
    s->len = header_bytes(s);
    s->n_parts = 0;
    if (err) {
        /* never waits: a full queue loses this message (counted; peers drift until the
         * next snapshot restore) */
        s->stats.send_failed++;
        return -EAGAIN;
    }
    s->stats.messages_sent++;
    s->stats.bytes_sent += sent;
    return 0;
}

int pd_model_sync_add(pd_model_sync *s, const void *part, size_t len)
{
    if (len > pd_model_sync_part_max(s))
        return -EMSGSIZE;
    if (s->len + 4 + len > s->max_bytes && s->n_parts > 0)
        send_message(s, false);
    put32(s->buf + s->len, (uint32_t)len);
    memcpy(s->buf + s->len + 4, part, len);
    s->len += 4 + len;
    s->n_parts++;
    return 0;
}

int pd_model_sync_end(pd_model_sync *s)
{
    int r = send_message(s, true);
    rd_kafka_poll(s->producer, 0);
    return r;
}

void pd_model_sync_poll(pd_model_sync *s)
{
    rd_kafka_poll(s->producer, 0);
}

int pd_model_sync_decode(const void *payload, size_t len, pd_sync_part_fn part,
                         pd_sync_message_fn message, void *ctx, char *why, size_t why_len)
{
    const unsigned char *p = payload;
    char instance[INSTANCE_MAX + 1];

    if (len < 16 || memcmp(p, MAGIC, 4) != 0) {
        snprintf(why, why_len, "not a model sync message");
        return -EINVAL;
    }
    if (get32(p + 4) != VERSION) {
        snprintf(why, why_len, "model sync message version %u is not supported", get32(p + 4));
        return -EINVAL;
    }
    uint32_t flags = get32(p + 8), il = get32(p + 12);
    if (il > INSTANCE_MAX || len < 16 + (size_t)il + 20) {
        snprintf(why, why_len, "model sync message is truncated");
        return -EINVAL;
    }
    memcpy(instance, p + 16, il);
    instance[il] = '\0';
    pd_sync_message m = {.instance = instance,
                         .round = get64(p + 16 + il),
                         .sent_ms = (int64_t)get64(p + 24 + il),
                         .last = (flags & FLAG_LAST) != 0};
    uint32_t n = get32(p + 32 + il);
    size_t start = 36 + (size_t)il, at = start;
    /* the framing first, whole: a bad message hands out nothing */
    for (uint32_t i = 0; i < n; i++) {
        if (len - at < 4 || len - at - 4 < get32(p + at)) {
            snprintf(why, why_len, "model sync message is truncated (part %u of %u)", i + 1, n);
            return -EINVAL;
        }
        at += 4 + get32(p + at);
    }
    if (at != len) {
        snprintf(why, why_len, "model sync message has %zu bytes after its parts", len - at);
        return -EINVAL;
    }
    for (uint32_t i = 0, q = (uint32_t)start; i < n; i++) {
        uint32_t pl = get32(p + q);
        if (part)
            part(ctx, &m, p + q + 4, pl);
        q += 4 + pl;
    }
    if (message)
        message(ctx, &m);
    return 0;
}

size_t pd_model_sync_receive(pd_model_sync *s, size_t max, pd_sync_part_fn part,
                             pd_sync_message_fn message, void *ctx, char *ret_why,
                             size_t why_len)
{
    size_t taken = 0;
    char why[256];
    while (taken < max) {
        rd_kafka_message_t *km = rd_kafka_consume_queue(s->queue, 0);
        if (!km)
            break;
        taken++;
        if (km->err) {
            rd_kafka_message_destroy(km);
            continue;
        }
        s->stats.messages_received++;
        s->stats.bytes_received += km->len;
        size_t il = strlen(s->instance);
        int64_t ts = rd_kafka_message_timestamp(km, NULL);
        if (km->key_len == il && km->key && memcmp(km->key, s->instance, il) == 0) {
            s->stats.own++;
        } else if (s->from_ms > 0 && ts >= 0 && ts < s->from_ms) {
            s->stats.before_start++;
        } else if (pd_model_sync_decode(km->payload, km->len, part, message, ctx, why,
                                        sizeof why) < 0) {
            s->stats.malformed++;
            if (ret_why)
                snprintf(ret_why, why_len, "%s", why);
        }
        rd_kafka_message_destroy(km);
    }
    return taken;
}

void pd_model_sync_get_stats(const pd_model_sync *s, pd_model_sync_stats *ret_stats)
{
    *ret_stats = s->stats;
}

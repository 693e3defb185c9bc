/* Dead-letter producer: idempotent, acks=all, so a delivered event is there exactly once. */
#include "pipeline/dead_letter.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

#include "pipeline/kafka_in.h"

/* A dead letter too large for the producer (message.max.bytes) or the broker goes as a prefix
 * of its payload, halved until it fits but never below MIN_PREFIX bytes; HEADROOM is left in
 * the producer's limit for the key, the headers and the record's framing. */
#define MIN_PREFIX 1024
#define HEADROOM   8192

struct pd_dead_letter {
    rd_kafka_t *rk;
    rd_kafka_topic_t *rkt;
    size_t max_bytes; /* the producer's message.max.bytes */
    pd_dead_letter_stats stats;
};

/* Marks h as carrying a prefix of a payload of original bytes (headers truncated and
 * original.size), once. */
static void mark_truncated(rd_kafka_headers_t *h, size_t original)
{
    char size[32];
    const void *v;
    size_t n;

    if (rd_kafka_header_get_last(h, "truncated", &v, &n) == RD_KAFKA_RESP_ERR_NO_ERROR)
        return;
    snprintf(size, sizeof size, "%zu", original);
    rd_kafka_header_add(h, "truncated", -1, "true", -1);
    rd_kafka_header_add(h, "original.size", -1, size, -1);
}

/* Queues len bytes of value; a payload the producer or the broker finds too large is retried
 * as a prefix of half the size (see MIN_PREFIX). Takes h on success. */
static rd_kafka_resp_err_t produce(pd_dead_letter *dl, const void *value, size_t len,
                                   size_t original, const void *key, size_t key_len,
                                   rd_kafka_headers_t *h)
{
    rd_kafka_resp_err_t err;

    for (;;) {
        if (len < original)
            mark_truncated(h, original);
        err = rd_kafka_producev(dl->rk, RD_KAFKA_V_RKT(dl->rkt),
                                RD_KAFKA_V_VALUE((void *)value, len),
                                RD_KAFKA_V_KEY((void *)key, key ? key_len : 0),
                                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(h),
                                RD_KAFKA_V_END);
        if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            rd_kafka_poll(dl->rk, 100); /* back-pressure: let deliveries drain */
            continue;
        }
        if (err == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE && len > MIN_PREFIX) {
            len = len / 2 > MIN_PREFIX ? len / 2 : MIN_PREFIX;
            continue;
        }
        if (!err && len < original)
            dl->stats.truncated++;
        return err;
    }
}

/* A delivery the broker refused for its size is sent again as a shorter prefix (the
 * broker's limit may be below the producer's); any other failure is final and counted, and
 * pd_dead_letter_flush() then never reports everything delivered, so no offset moves past it. */
static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    pd_dead_letter *dl = opaque;
    rd_kafka_headers_t *src = NULL, *h;
    const void *v;
    size_t n, original;

    (void)rk;
    if (!m->err) {
        dl->stats.delivered++;
        return;
    }
    if (m->err == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE && m->len > MIN_PREFIX &&
        rd_kafka_message_headers(m, &src) == RD_KAFKA_RESP_ERR_NO_ERROR &&
        (h = rd_kafka_headers_copy(src))) {
        original = m->len;
        if (rd_kafka_header_get_last(h, "original.size", &v, &n) == RD_KAFKA_RESP_ERR_NO_ERROR) {
            char buf[32];
            snprintf(buf, sizeof buf, "%.*s", (int)(n < 31 ? n : 31), (const char *)v);
            original = (size_t)strtoull(buf, NULL, 10);
        }
        if (produce(dl, m->payload, m->len / 2 > MIN_PREFIX ? m->len / 2 : MIN_PREFIX, original,
                    m->key, m->key_len, h) == RD_KAFKA_RESP_ERR_NO_ERROR)
            return; /* the retry is in flight: flush waits for it */
        rd_kafka_headers_destroy(h);
    }
    dl->stats.failed++;
}

pd_dead_letter *pd_dead_letter_new(const pd_kafka_conf *conf, const char *topic, char *errbuf,
                                   size_t errlen)
{
    char err[512];
    pd_dead_letter *dl = calloc(1, sizeof *dl);
    if (!dl) {
        snprintf(errbuf, errlen, "out of memory for the dead-letter producer");
        return NULL;
    }
    rd_kafka_conf_t *kc = pd_kafka_conf_build(conf, false, errbuf, errlen);
    if (!kc)
        goto out_free;
    const char *fixed[][2] = {
        {"enable.idempotence", "true"},
        {"acks", "all"},
        {"linger.ms", "5"},
    };
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
        if (rd_kafka_conf_set(kc, fixed[i][0], fixed[i][1], err, sizeof err) != RD_KAFKA_CONF_OK) {
            snprintf(errbuf, errlen, "dead-letter producer configuration: %s", err);
            rd_kafka_conf_destroy(kc);
            goto out_free;
        }
    }
    char max[32];
    size_t max_len = sizeof max;
    dl->max_bytes = 1000000; /* librdkafka's default */
    if (rd_kafka_conf_get(kc, "message.max.bytes", max, &max_len) == RD_KAFKA_CONF_OK)
        dl->max_bytes = (size_t)strtoull(max, NULL, 10);
    rd_kafka_conf_set_opaque(kc, dl);
    rd_kafka_conf_set_dr_msg_cb(kc, on_delivery);
    dl->rk = rd_kafka_new(RD_KAFKA_PRODUCER, kc, err, sizeof err);
    if (!dl->rk) {
        snprintf(errbuf, errlen, "failed to create the dead-letter producer: %s", err);
        rd_kafka_conf_destroy(kc);
        goto out_free;
    }
    dl->rkt = rd_kafka_topic_new(dl->rk, topic, NULL);
    if (!dl->rkt) {
        snprintf(errbuf, errlen, "dead-letter topic \"%s\": %s", topic,
                 rd_kafka_err2str(rd_kafka_last_error()));
        goto out_free;
    }
    return dl;

out_free:
    pd_dead_letter_free(dl);
    return NULL;
}

void pd_dead_letter_free(pd_dead_letter *dl)
{
    if (!dl)
        return;
    if (dl->rk)
        rd_kafka_flush(dl->rk, 5000);
    if (dl->rkt)
        rd_kafka_topic_destroy(dl->rkt);
    if (dl->rk)
        rd_kafka_destroy(dl->rk);
    free(dl);
}

int pd_dead_letter_send(pd_dead_letter *dl, const void *value, size_t len, const void *key,
                        size_t key_len, const char *reason, const char *detail,
                        const char *src_topic, int32_t src_partition, int64_t src_offset,
                        char *errbuf, size_t errlen)
{
    char part[16], off[32];
    snprintf(part, sizeof part, "%" PRId32, src_partition);
    snprintf(off, sizeof off, "%" PRId64, src_offset);
    rd_kafka_headers_t *h = rd_kafka_headers_new(5);
    rd_kafka_header_add(h, "reason", -1, reason, -1);
    rd_kafka_header_add(h, "detail", -1, detail ? detail : "", -1);
    rd_kafka_header_add(h, "source.topic", -1, src_topic ? src_topic : "", -1);
    rd_kafka_header_add(h, "source.partition", -1, part, -1);
    rd_kafka_header_add(h, "source.offset", -1, off, -1);
    size_t room = dl->max_bytes > key_len + HEADROOM + MIN_PREFIX
                      ? dl->max_bytes - key_len - HEADROOM
                      : MIN_PREFIX;
    rd_kafka_resp_err_t err = produce(dl, value, len < room ? len : room, len, key, key_len, h);
    if (err) {
        rd_kafka_headers_destroy(h);
        snprintf(errbuf, errlen, "failed to produce to the dead-letter topic: %s",
                 rd_kafka_err2str(err));
        return -EIO;
    }
    dl->stats.produced++;
    rd_kafka_poll(dl->rk, 0);
    return 0;
}

void pd_dead_letter_poll(pd_dead_letter *dl)
{
    rd_kafka_poll(dl->rk, 0);
}

int pd_dead_letter_flush(pd_dead_letter *dl, int timeout_ms)
{
    rd_kafka_flush(dl->rk, timeout_ms);
    if (rd_kafka_outq_len(dl->rk) > 0)
        return -ETIMEDOUT;
    return dl->stats.failed ? -EIO : 0;
}

void pd_dead_letter_get_stats(const pd_dead_letter *dl, pd_dead_letter_stats *ret_stats)
{
    *ret_stats = dl->stats;
}

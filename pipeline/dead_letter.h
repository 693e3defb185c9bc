/* The dead-letter topic: events that do not decode or validate are produced there unchanged,
 * with headers giving the reason and where they came from, so nothing is silently lost. */
#ifndef PD_DEAD_LETTER_H
#define PD_DEAD_LETTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"

typedef struct pd_dead_letter pd_dead_letter;

typedef struct pd_dead_letter_stats {
    uint64_t produced;  /* handed to librdkafka */
    uint64_t delivered; /* acknowledged by the broker */
    uint64_t failed;    /* delivery failed for good */
    uint64_t truncated; /* too large for the producer or broker: sent as a prefix */
} pd_dead_letter_stats;

/* A producer with the consumer's brokers and security properties. */
pd_dead_letter *pd_dead_letter_new(const pd_kafka_conf *conf, const char *topic, char *errbuf,
                                   size_t errlen);
void pd_dead_letter_free(pd_dead_letter *dl);

/* Queues one event. Headers: reason, detail, source.topic, source.partition, source.offset.
 * key may be NULL. An event larger than the producer's message.max.bytes (less room for key
 * and headers) or than the broker takes goes as a prefix, halved until it fits (at least
 * 1 KiB), with headers truncated: true and original.size. Returns 0 or a negative errno with
 * a message. */
int pd_dead_letter_send(pd_dead_letter *dl, const void *value, size_t len, const void *key,
                        size_t key_len, const char *reason, const char *detail,
                        const char *src_topic, int32_t src_partition, int64_t src_offset,
                        char *errbuf, size_t errlen);

/* Serves delivery reports without waiting. */
void pd_dead_letter_poll(pd_dead_letter *dl);

/* Waits up to timeout_ms for everything queued to be acknowledged. 0 when nothing is left in
 * flight, -ETIMEDOUT otherwise (offsets covering those events must not be committed yet), and
 * -EIO once any delivery failed for good: from then on no offset may be committed past it, and
 * a restart dead-letters the events again from the last committed offset. */
int pd_dead_letter_flush(pd_dead_letter *dl, int timeout_ms);

void pd_dead_letter_get_stats(const pd_dead_letter *dl, pd_dead_letter_stats *ret_stats);

#endif

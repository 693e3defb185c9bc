/* Model sync's transport: a librdkafka producer of this instance's model deltas and a plain
 * (non-group) consumer of every instance's, on one topic (config sync:). It frames the parts
 * pd_engine_delta_collect() gives into messages of at most sync.max_message_bytes and hands
 * back the parts of the other instances' messages; what a part means is the engine's business.
 * Nothing here blocks: produce is asynchronous, polls take what is there. */
#ifndef PD_MODEL_SYNC_H
#define PD_MODEL_SYNC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"

typedef struct pd_model_sync pd_model_sync;

/* One received message's header. */
typedef struct pd_sync_message {
    const char *instance; /* NUL-terminated, valid during the callback */
    uint64_t round;
    int64_t sent_ms; /* the sender's wall clock when it sent the round */
    bool last;       /* the sender's last message of the round */
} pd_sync_message;

typedef struct pd_model_sync_stats {
    uint64_t messages_sent, bytes_sent, send_failed; /* send_failed: refused or not delivered */
    uint64_t messages_received, bytes_received;
    uint64_t own;       /* this instance's messages, skipped */
    uint64_t before_start; /* older than the snapshot this instance started from, skipped */
    uint64_t malformed; /* messages that did not decode (their parts are not applied) */
} pd_model_sync_stats;

/* Creates the producer and the consumer, the latter assigned every partition of the topic at
 * its end (a new instance does not replay history), or with from_ms > 0 at the first message
 * of that wall time or later (an instance that started from a snapshot of that time applies
 * what peers learned since). kafka supplies brokers and security properties. Blocks up to a
 * few seconds for the topic's metadata. */
pd_model_sync *pd_model_sync_new(const pd_kafka_conf *kafka, const pd_sync_conf *conf,
                                 int64_t from_ms,
                                 const char *instance, char *errbuf, size_t errlen);
void pd_model_sync_free(pd_model_sync *s);

/* The consumer's queue writes a byte to fd when it goes from empty to not (-1: off). */
void pd_model_sync_set_wakeup(pd_model_sync *s, int fd);

/* A round: begin, any number of parts (each at most max_message_bytes less the header),
 * end, which sends the last message flagged as such (a round with no part still sends one:
 * peers learn that this instance finished it). 0 or a negative errno. */
int pd_model_sync_begin(pd_model_sync *s, uint64_t round, int64_t sent_ms);
int pd_model_sync_add(pd_model_sync *s, const void *part, size_t len);
int pd_model_sync_end(pd_model_sync *s);
/* The largest part add() takes. */
size_t pd_model_sync_part_max(const pd_model_sync *s);

/* Serves delivery reports; never waits. */
void pd_model_sync_poll(pd_model_sync *s);

/* Takes up to max messages of other instances: for each, part() for every part, then
 * message(). Returns how many messages it took (own and malformed ones included). A malformed
 * message calls neither callback; its reason goes to ret_why when given (the last one). */
typedef void (*pd_sync_part_fn)(void *ctx, const pd_sync_message *m, const void *part,
                                size_t len);
typedef void (*pd_sync_message_fn)(void *ctx, const pd_sync_message *m);
size_t pd_model_sync_receive(pd_model_sync *s, size_t max, pd_sync_part_fn part,
                             pd_sync_message_fn message, void *ctx, char *ret_why,
                             size_t why_len);

/* Decodes one message (for receive() and the tests): the same callbacks; 0 or -EINVAL with the
 * reason in why. */
int pd_model_sync_decode(const void *payload, size_t len, pd_sync_part_fn part,
                         pd_sync_message_fn message, void *ctx, char *why, size_t why_len);

void pd_model_sync_get_stats(const pd_model_sync *s, pd_model_sync_stats *ret_stats);

#endif

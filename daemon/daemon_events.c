/* Each polled message, in order: decode (what does not decode goes to the dead-letter topic),
 * the engine (state, features, models, labels), then the publisher and the feed with the
 * scores, or the deletion of a user a forget event names. */
#include <inttypes.h>
#include <string.h>

#include "common/clock.h"
#include "daemon/daemon_internal.h"
#include "daemon/log.h"
#include "pipeline/user_state.h"

#define MAX_SCORES PD_MAX_MODELS /* scores queued per event: one per model */

static void dead_letter(pd_daemon *d, const rd_kafka_message_t *m, pd_decode_error err,
                        const char *detail)
{
    const char *topic = rd_kafka_topic_name(m->rkt);
    if (!d->dlq) {
        pd_logkv(PD_LOG_WARNING, "dropped an event that does not decode",
                 "reason=%s topic=%s "
                 "partition=%" PRId32 " offset=%" PRId64,
                 pd_decode_error_name(err), topic, m->partition, m->offset);
        return;
    }
    char msg[512];
    if (pd_dead_letter_send(d->dlq, m->payload, m->len, m->key, m->key_len,
                            pd_decode_error_name(err), detail, topic, m->partition, m->offset, msg,
                            sizeof msg) < 0) {
        d->events.dead_letter_failures++;
        pd_log_error("%s", msg);
        return;
    }
    d->events.dead_lettered++;
}

/* The audit line names the user by the store's hash, so an auditor holding the id can match
 * it while the log keeps no id of a forgotten user. */
void daemon_audit_forget(const char *user, size_t len, const char *source, bool known,
                         const char *redis)
{
    pd_logkv(PD_LOG_INFO, "forgot a user on request",
             "audit=forget source=%s user_hash=%016" PRIx64 " known=%s redis=%s", source,
             pd_user_hash(user, len), known ? "true" : "false", redis);
}

/* The engine already dropped the user's state: its Redis keys go with the next flush. */
static void forget_user(pd_daemon *d, const pd_engine_result *res)
{
    if (pd_publisher_forget(d->pub, res->user, res->user_len) < 0)
        pd_log_error("out of memory queueing the deletion of a user's keys");
    daemon_lists_forget(d, res->user, res->user_len);
    d->events.forgets++;
    daemon_audit_forget(res->user, res->user_len, "event", true, "queued");
    daemon_feed_forget(d, res->user, res->user_len);
    /* older snapshots still hold the user */
    daemon_snapshot_forget_soon(d);
}

static void publish_scores(pd_daemon *d, const pd_engine_result *res)
{
    pd_publish_score scores[MAX_SCORES];
    size_t n = res->n_scores < MAX_SCORES ? res->n_scores : MAX_SCORES;
    for (size_t i = 0; i < n; i++)
        scores[i] =
            (pd_publish_score){.field = res->scores[i].model, .value = res->scores[i].value};
    int64_t ts = pd_clock_wall_ms();
    uint64_t gen = daemon_generation(d);
    if (pd_publisher_update(d->pub, res->user, res->user_len, ts, gen, scores, n) < 0)
        pd_log_error("out of memory queueing scores for redis");
    if (pd_control_has_feed(d->ctl))
        daemon_feed_scores(d, res, ts, gen);
}

static void handle_message(pd_daemon *d, const rd_kafka_message_t *m)
{
    pd_event ev;
    char detail[256];
    rd_kafka_timestamp_type_t tstype;
    uint32_t source = daemon_source_delivered(d, m);
    int64_t fallback = rd_kafka_message_timestamp(m, &tstype);
    pd_decode_error err = pd_engine_decode(d->engine, m->payload ? m->payload : "", m->len,
                                           fallback, &ev, detail, sizeof detail);
    if (err != PD_DECODE_OK) {
        dead_letter(d, m, err, detail);
        return;
    }
    ev.source = source;
    ev.shard = daemon_shard_of(d, rd_kafka_topic_name(m->rkt), m->partition);
    if (!m->key)
        d->events.key_missing++;
    else if (m->key_len != ev.user_len || memcmp(m->key, ev.user, ev.user_len) != 0)
        d->events.key_mismatch++;
    pd_engine_result res;
    if (pd_engine_process(d->engine, &ev, &res) < 0) {
        d->events.process_errors++;
        pd_log_error("out of memory processing an event; its effects may be partial");
    }
    if (res.forgotten)
        forget_user(d, &res);
    else if (res.n_scores > 0)
        publish_scores(d, &res);
}

void daemon_events_process(pd_daemon *d, rd_kafka_message_t **msgs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        handle_message(d, msgs[i]);
        pd_kafka_in_processed(d->in, msgs[i]);
        rd_kafka_message_destroy(msgs[i]);
    }
}

/* The score feed (daemon.feed): a ZeroMQ PUB socket with every score change, topic = model
 * name, payload {"user","model","field","value","ts","v"}; every list a model of lists
 * publishes, same topic, payload {"key","user" or "item" (absent for the popular list),
 * "model","field","items":[{"item","score"}...] best first,"ts","v"} (key: its Redis name
 * without the prefix; an empty list is a deletion); and forgets under FEED_FORGET_TOPIC.
 * Publishing never blocks: what a slow subscriber cannot take is counted as dropped. */
#include <stdlib.h>
#include <string.h>

#include "daemon/daemon_internal.h"

#define FEED_FORGET_TOPIC "!forget" /* not a valid model name, so no clash */

/* Publishes msg, which it takes; NULL (out of memory) counts as dropped. */
static void feed_publish(pd_daemon *d, const char *topic, json_t *msg)
{
    char *text = msg ? json_dumps(msg, JSON_COMPACT) : NULL;
    json_decref(msg);
    if (!text || pd_control_publish(d->ctl, topic, text, strlen(text)) < 0)
        d->feed.dropped++;
    free(text);
}

void daemon_feed_scores(pd_daemon *d, const pd_engine_result *res, int64_t ts, uint64_t gen)
{
    for (size_t i = 0; i < res->n_scores; i++) {
        const pd_model_conf *mc = &d->conf->models[res->scores[i].model];
        feed_publish(d, mc->name,
                     json_pack("{s:s%, s:o, s:o, s:o, s:I, s:I}", "user", res->user, res->user_len,
                               "model", pd_control_string(mc->name), "field",
                               pd_control_string(mc->output ? mc->output : mc->name), "value",
                               pd_control_number(res->scores[i].value), "ts", (json_int_t)ts, "v",
                               (json_int_t)gen));
    }
}

void daemon_feed_forget(pd_daemon *d, const char *user, size_t len)
{
    if (pd_control_has_feed(d->ctl))
        feed_publish(d, FEED_FORGET_TOPIC, json_pack("{s:s%}", "user", user, len));
}

void daemon_feed_list(pd_daemon *d, size_t model, const char *key, size_t key_len, const char *user,
                      size_t user_len, const char *item, size_t item_len, const char *const *items,
                      const size_t *item_lens, const float *scores, size_t n, int64_t ts)
{
    const pd_model_conf *mc = &d->conf->models[model];
    json_t *list = json_array(), *msg = json_object();
    int e = !list || !msg;
    for (size_t i = 0; i < n && !e; i++)
        e |= json_array_append_new(list, json_pack("{s:s%, s:o}", "item", items[i], item_lens[i],
                                                   "score", pd_control_number(scores[i])));
    e |= json_object_set_new(msg, "key", json_stringn(key, key_len));
    if (user)
        e |= json_object_set_new(msg, "user", json_stringn(user, user_len));
    if (item)
        e |= json_object_set_new(msg, "item", json_stringn(item, item_len));
    e |= json_object_set_new(msg, "model", pd_control_string(mc->name));
    e |= json_object_set_new(msg, "field", pd_control_string(mc->output ? mc->output : mc->name));
    e |= json_object_set_new(msg, "items", list); /* takes list even when it fails */
    e |= json_object_set_new(msg, "ts", json_integer((json_int_t)ts));
    e |= json_object_set_new(msg, "v", json_integer((json_int_t)daemon_generation(d)));
    if (e) {
        json_decref(msg);
        msg = NULL;
    }
    feed_publish(d, mc->name, msg);
}

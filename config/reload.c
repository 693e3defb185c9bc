/* Which changes a running daemon can take on SIGHUP (config/README.md lists them): what it is
 * connected to, bound to or keeps in snapshots cannot change without a restart. */
#include <stdio.h>
#include <string.h>

#include "config/config_internal.h"

static bool kv_lists_equal(const pd_kv *a, size_t na, const pd_kv *b, size_t nb)
{
    if (na != nb)
        return false;
    for (size_t i = 0; i < na; i++) {
        bool found = false;

        for (size_t j = 0; j < nb && !found; j++)
            found = str_eq(a[i].key, b[j].key) && str_eq(a[i].value, b[j].value);
        if (!found)
            return false;
    }
    return true;
}

static bool string_lists_equal(char *const *a, size_t na, char *const *b, size_t nb)
{
    if (na != nb)
        return false;
    for (size_t i = 0; i < na; i++)
        if (!str_eq(a[i], b[i]))
            return false;
    return true;
}

/* The first key that changed and needs a restart, in the order config/README.md lists them;
 * NULL when none did. */
static const char *first_restart_key(const pd_config *old, const pd_config *new_conf)
{
    const pd_kafka_conf *ok = &old->kafka, *nk = &new_conf->kafka;
    const pd_redis_conf *orr = &old->redis, *nr = &new_conf->redis;
    const pd_events_conf *oe = &old->events, *ne = &new_conf->events;

    if (!str_eq(ok->brokers, nk->brokers))
        return "kafka.brokers";
    if (!string_lists_equal(ok->topics, ok->n_topics, nk->topics, nk->n_topics))
        return "kafka.topics";
    if (!str_eq(ok->group, nk->group))
        return "kafka.group";
    if (!kv_lists_equal(ok->properties, ok->n_properties, nk->properties, nk->n_properties))
        return "kafka.properties";
    if (ok->handover != nk->handover)
        return "kafka.handover";
    if (!str_eq(orr->host, nr->host) || orr->port != nr->port ||
        !str_eq(orr->unix_path, nr->unix_path))
        return "redis.url";
    if (orr->db != nr->db)
        return "redis.db";
    if (!str_eq(orr->username, nr->username))
        return "redis.username";
    if (!str_eq(orr->password, nr->password))
        return "redis.password";
    /* the keys already written would be left behind under the old names */
    if (!str_eq(orr->prefix, nr->prefix))
        return "redis.prefix";
    if (orr->key_layout != nr->key_layout)
        return "redis.key_layout";
    /* type ids are kept in snapshots and user state: new types may only be appended */
    if (oe->n_types > ne->n_types ||
        !string_lists_equal(oe->types, oe->n_types, ne->types, oe->n_types))
        return "events.types";
    if (!str_eq(old->snapshot.dir, new_conf->snapshot.dir))
        return "snapshot.dir";
    if (!str_eq(old->daemon.control, new_conf->daemon.control))
        return "daemon.control";
    if (!str_eq(old->daemon.control_curve_secret_file, new_conf->daemon.control_curve_secret_file))
        return "daemon.curve_secret_file";
    if (!str_eq(old->daemon.feed, new_conf->daemon.feed))
        return "daemon.feed";
    if (!str_eq(old->daemon.http, new_conf->daemon.http))
        return "daemon.http";
    /* the producer, the consumer and the instance's name are made at start */
    if (old->sync.enabled != new_conf->sync.enabled)
        return "sync.enabled";
    if (!str_eq(old->sync.topic, new_conf->sync.topic))
        return "sync.topic";
    if (!str_eq(old->sync.instance_id, new_conf->sync.instance_id))
        return "sync.instance_id";
    return NULL;
}

bool pd_config_reloadable(const pd_config *old, const pd_config *new_conf, char *errbuf,
                          size_t errlen)
{
    const char *changed;

    if (!old || !new_conf) {
        if (errbuf && errlen)
            snprintf(errbuf, errlen, "no configuration to compare");
        return false;
    }
    changed = first_restart_key(old, new_conf);
    if (!changed)
        return true;
    if (errbuf && errlen) {
        if (!strcmp(changed, "events.types"))
            snprintf(errbuf, errlen,
                     "events.types changed: types may only be appended on reload; restart to "
                     "apply");
        else
            snprintf(errbuf, errlen, "%s changed: restart to apply", changed);
    }
    return false;
}

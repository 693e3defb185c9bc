/* The top level of the pipeline language and the sections that fit on a page each: kafka:,
 * redis:, events:, watermark:, users:, snapshot:, daemon:, sync:. features: and models: have
 * files of their own. The tables of keys here are what config/README.md documents. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config_internal.h"
#include "config/redis_url.h"
#include "config/secrets.h"

#define MAX_TOPICS 64

/* The only ways a secret may be written; any other is refused with this. */
#define SECRET_SOURCES_PASSWORD                                                                    \
    "secrets must come from ${ENV} or \"password_file\", not the file body"

/* ------------------------------------------------------------------------------------------ */
/* lists of names */

/* Fills a list of unique strings (topics, types); names are checked by check_name when given. */
static void load_string_list(loader *ld, ynode *n, const char *path, bool single, size_t min,
                             size_t max, bool (*check_name)(const char *), const char *name_rule,
                             char ***ret, size_t *ret_n)
{
    char kp[KEYPATH_MAX];
    size_t count;
    char **list;

    if (!ld_check_list(ld, n, path, single, min, max, "strings", &count))
        return;
    list = ld_calloc(ld, count, sizeof(char *));
    if (!list)
        return;
    *ret = list;
    *ret_n = 0;
    for (size_t i = 0; i < count; i++) {
        ynode *item = ld_list_at(n, i);
        char buf[64];
        scalar sc;
        bool dup = false;

        ld_path_item(kp, n, path, i);
        if (!ld_scalar(ld, item, kp, "a string", &sc))
            continue;
        if (!*sc.value) {
            ld_report(ld, item, kp, "must not be empty");
            free(sc.value);
            continue;
        }
        if (check_name && !check_name(sc.value)) {
            ld_report(ld, item, kp, "invalid name %s (%s)", ld_describe(item, buf, sizeof(buf)),
                      name_rule);
            free(sc.value);
            continue;
        }
        for (size_t j = 0; j < *ret_n && !dup; j++)
            dup = !strcmp(list[j], sc.value);
        if (dup) {
            ld_report(ld, item, kp, "%s is listed twice", ld_describe(item, buf, sizeof(buf)));
            free(sc.value);
            continue;
        }
        list[(*ret_n)++] = sc.value;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* kafka: */

static const char *const kafka_keys[] = {"brokers",    "topics",     "group",    "start",
                                         "poll_batch", "properties", "handover", NULL};
static const char *const start_names[] = {"earliest", "latest"};
static const char *const handover_names[] = {"off", "redis"};

/* Properties propensityd sets itself; a second source would be ambiguous or break the
 * "commit only after redis acknowledged" rule. */
static const struct {
    const char *name;
    const char *why;
} managed_properties[] = {
    {"bootstrap.servers", "set it with kafka.brokers"},
    {"metadata.broker.list", "set it with kafka.brokers"},
    {"group.id", "set it with kafka.group"},
    {"auto.offset.reset", "set it with kafka.start"},
    {"enable.auto.commit", "offsets are committed by propensityd after redis acknowledged"},
    {"enable.auto.offset.store", "offsets are committed by propensityd after redis acknowledged"},
};

static void load_property(loader *ld, ynode *map, size_t i, const char *mpath, pd_kv *kv, bool *ok)
{
    ynode *k = pd_yaml_node_key(map, i), *v = pd_yaml_node_value(map, i);
    const char *key = pd_yaml_node_text(k);
    size_t key_len = strlen(key);
    bool from_file = key_len > 5 && !strcmp(key + key_len - 5, "_file");
    char kp[KEYPATH_MAX], base[KEYPATH_MAX];
    scalar sc;

    *ok = false;
    ld_path_key(kp, mpath, key);
    snprintf(base, sizeof(base), "%.*s", (int)(from_file ? key_len - 5 : key_len), key);
    for (size_t j = 0; j < ARRAY_SIZE(managed_properties); j++) {
        if (!strcmp(base, managed_properties[j].name)) {
            ld_report(ld, k, kp, "not allowed here: %s", managed_properties[j].why);
            return;
        }
    }
    if (from_file && ld_map_find(map, base) >= 0) {
        ld_report(ld, k, kp, "conflicts with \"%s\" (give one or the other)", base);
        return;
    }
    if (pd_yaml_node_kind(v) == PD_YAML_NULL) {
        ld_report(ld, v, kp, "a value is required");
        return;
    }
    if (!ld_scalar(ld, v, kp, "a scalar", &sc))
        return;
    if (from_file) {
        char *contents = NULL;
        int err = 0;

        if (secret_read_file(ld, sc.value, &contents, &err) < 0) {
            secret_report_unreadable(ld, v, kp, sc.value, err);
            free(sc.value);
            return;
        }
        free(sc.value);
        sc.value = contents;
    } else if (secret_key_name(base) && !sc.env_whole) {
        ld_report(ld, v, kp, "secrets must come from ${ENV} or \"%s_file\", not the file body",
                  base);
        secret_free(sc.value);
        return;
    }
    kv->key = ld_strdup(ld, base);
    kv->value = sc.value;
    /* Anything that came from outside the file may be a credential the name does not betray. */
    kv->secret = from_file || sc.env || secret_key_name(base);
    ld_pos(ld, k, &kv->pos);
    *ok = true;
}

static void load_properties(loader *ld, ynode *map, pd_kafka_conf *kafka)
{
    const char *mpath = "kafka.properties";
    size_t n = pd_yaml_node_size(map);

    if (!ld_check_map(ld, map, mpath, NULL) || !n)
        return;
    kafka->properties = ld_calloc(ld, n, sizeof(pd_kv));
    if (!kafka->properties)
        return;
    for (size_t i = 0; i < n; i++) {
        bool ok;

        if (!ld_key_to_read(map, i))
            continue; /* reported by ld_check_map */
        load_property(ld, map, i, mpath, &kafka->properties[kafka->n_properties], &ok);
        if (ok)
            kafka->n_properties++;
    }
}

static void load_kafka(loader *ld, ynode *map)
{
    pd_kafka_conf *kafka = &ld->conf->kafka;
    const char *mp = "kafka";
    int start = PD_START_EARLIEST;
    int handover = PD_HANDOVER_OFF;

    if (!ld_check_map(ld, map, mp, kafka_keys))
        return;
    if (ld_need(ld, map, mp, "brokers"))
        ld_get_string(ld, map, mp, "brokers", true, &kafka->brokers);
    if (ld_need(ld, map, mp, "topics"))
        load_string_list(ld, ld_map_get(map, "topics"), "kafka.topics", true, 1, MAX_TOPICS, NULL,
                         NULL, &kafka->topics, &kafka->n_topics);
    if (ld_need(ld, map, mp, "group"))
        ld_get_string(ld, map, mp, "group", true, &kafka->group);
    if (ld_get_enum(ld, map, mp, "start", start_names, ARRAY_SIZE(start_names), &start) > 0)
        kafka->start = (pd_start_position)start;
    ld_get_int(ld, map, mp, "poll_batch", 1, 100000, &kafka->poll_batch);
    if (ld_get_enum(ld, map, mp, "handover", handover_names, ARRAY_SIZE(handover_names),
                    &handover) > 0)
        kafka->handover = (pd_handover)handover;
    load_properties(ld, ld_map_get(map, "properties"), kafka);
}

/* ------------------------------------------------------------------------------------------ */
/* redis: */

static const char *const redis_keys[] = {"url",          "username", "password", "password_file",
                                         "db",           "prefix",   "ttl",      "flush_interval",
                                         "max_pipeline", "timeout",  "key_layout",
                                         NULL};
static const char *const key_layout_names[] = {"plain", "cluster"};

static void load_redis_url(loader *ld, ynode *map, pd_redis_conf *redis)
{
    ynode *n = ld_map_get(map, "url");
    redis_url u = {0};
    const char *err;
    scalar sc = {0};

    if (n) {
        if (!ld_scalar(ld, n, "redis.url", "a string", &sc))
            return;
    } else {
        sc.value = ld_strdup(ld, "redis://127.0.0.1:6379/0");
        if (!sc.value)
            return;
    }
    err = redis_url_parse(sc.value, &u);
    if (err) {
        ld_report(ld, n, "redis.url", "invalid url: %s (expected " REDIS_URL_FORMS ")", err);
        goto out;
    }
    if (u.password && !sc.env_whole) {
        ld_report(ld, n, "redis.url", SECRET_SOURCES_PASSWORD);
        goto out;
    }
    free(redis->url);
    redis->url = redis_url_redact(sc.value, &u);
    if (!redis->url)
        ld->oom = true;
    redis->host = u.host;
    redis->unix_path = u.unix_path;
    redis->port = u.port;
    redis->db = u.db;
    redis->username = u.user;
    redis->password = u.password;
    u = (redis_url){0};

out:
    redis_url_release(&u);
    secret_free(sc.value);
}

/* password: or password_file:, one or the other; NULL when neither gives one. */
static char *load_redis_password(loader *ld, ynode *map)
{
    char *password = NULL;
    ynode *n;

    if ((n = ld_map_get(map, "password"))) {
        scalar sc;

        if (ld_map_get(map, "password_file")) {
            ld_report_key(ld, map, "redis", "password_file",
                          "conflicts with \"password\" (give one or the other)");
        } else if (ld_scalar(ld, n, "redis.password", "a string", &sc)) {
            if (!sc.env_whole) {
                ld_report(ld, n, "redis.password", SECRET_SOURCES_PASSWORD);
                secret_free(sc.value);
            } else {
                password = sc.value;
            }
        }
    } else if ((n = ld_map_get(map, "password_file"))) {
        char *file = NULL;
        int err = 0;

        if (ld_get_string(ld, map, "redis", "password_file", true, &file) > 0 &&
            secret_read_file(ld, file, &password, &err) < 0)
            secret_report_unreadable(ld, n, "redis.password_file", file, err);
        free(file);
    }
    return password;
}

static void load_redis(loader *ld, ynode *map)
{
    pd_redis_conf *redis = &ld->conf->redis;
    const char *mp = "redis";
    char *password, *username = NULL;

    if (!ld_check_map(ld, map, mp, redis_keys))
        return;
    load_redis_url(ld, map, redis);
    if (ld_get_string(ld, map, mp, "username", false, &username) > 0) {
        free(redis->username);
        redis->username = username;
    }
    password = load_redis_password(ld, map);
    if (password && *password) {
        secret_free(redis->password);
        redis->password = password;
    } else {
        secret_free(password);
    }
    ld_get_int32(ld, map, mp, "db", 0, INT_MAX, &redis->db);
    if (ld_get_string(ld, map, mp, "prefix", true, &redis->prefix) > 0 &&
        !ld_valid_redis_token(redis->prefix)) {
        char buf[64];

        ld_report(ld, ld_map_get(map, "prefix"), "redis.prefix",
                  "invalid prefix %s (use letters, digits and _ . : -)",
                  ld_describe(ld_map_get(map, "prefix"), buf, sizeof(buf)));
    }
    ld_get_duration(ld, map, mp, "ttl", MS_PER_S, INT64_MAX, false, &redis->ttl_ms);
    ld_get_duration(ld, map, mp, "flush_interval", 1, 10 * MS_PER_S, false,
                    &redis->flush_interval_ms);
    ld_get_int(ld, map, mp, "max_pipeline", 1, 100000, &redis->max_pipeline);
    ld_get_duration(ld, map, mp, "timeout", 10, 60 * MS_PER_S, false, &redis->timeout_ms);
    int layout = PD_KEYS_PLAIN;
    if (ld_get_enum(ld, map, mp, "key_layout", key_layout_names, ARRAY_SIZE(key_layout_names),
                    &layout) > 0)
        redis->key_layout = (pd_key_layout)layout;
}

/* ------------------------------------------------------------------------------------------ */
/* events: */

static const char *const events_keys[] = {
    "fields", "types", "forget_type", "max_message_bytes", "max_string_length", "dead_letter_topic",
    NULL};
static const char *const field_keys[] = {"event_id", "user",  "item", "type",
                                         "time",     "value", "text", NULL};

static bool valid_type_name(const char *s)
{
    return ld_valid_name(s) && strcmp(s, "any") != 0;
}

static void load_events(loader *ld, ynode *map)
{
    pd_events_conf *ev = &ld->conf->events;
    const char *mp = "events";
    ynode *fields;
    size_t errors;

    if (!ld_check_map(ld, map, mp, events_keys))
        return;
    fields = ld_map_get(map, "fields");
    if (ld_check_map(ld, fields, "events.fields", field_keys)) {
        char **slots[] = {&ev->field_event_id, &ev->field_user,  &ev->field_item, &ev->field_type,
                          &ev->field_time,     &ev->field_value, &ev->field_text};

        for (size_t i = 0; i < ARRAY_SIZE(slots); i++)
            ld_get_json_path(ld, fields, "events.fields", field_keys[i], slots[i]);
    }
    errors = ld->errors;
    if (ld_need(ld, map, mp, "types")) {
        load_string_list(ld, ld_map_get(map, "types"), "events.types", false, 1, PD_MAX_EVENT_TYPES,
                         valid_type_name,
                         "use lowercase letters, digits and _; \"any\" is reserved", &ev->types,
                         &ev->n_types);
        ld->types_ok = ev->types && errors == ld->errors;
    }
    if (ld_map_get(map, "forget_type"))
        ld_resolve_type(ld, ld_map_get(map, "forget_type"), "events.forget_type", false,
                        &ev->forget_type);
    ld_get_size(ld, map, mp, "max_message_bytes", 64, INT64_C(16) << 20, &ev->max_message_bytes);
    ld_get_int(ld, map, mp, "max_string_length", 1, 65536, &ev->max_string_length);
    /* checked against kafka.topics in check_dead_letter_topic(), once those are read */
    ld_get_string(ld, map, mp, "dead_letter_topic", false, &ev->dead_letter_topic);
}

/* kafka is read after events; the dead-letter topic is checked once topics are known. */
static void check_dead_letter_topic(loader *ld, ynode *root)
{
    const pd_kafka_conf *kafka = &ld->conf->kafka;
    const char *dlq = ld->conf->events.dead_letter_topic;

    if (!dlq)
        return;
    for (size_t i = 0; i < kafka->n_topics; i++) {
        if (!strcmp(kafka->topics[i], dlq)) {
            ld_report(ld, ld_map_get(ld_map_get(root, "events"), "dead_letter_topic"),
                      "events.dead_letter_topic",
                      "\"%s\" is also a consumed topic (bad events would come back)", dlq);
            break;
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* watermark:, users:, snapshot:, daemon: */

static const char *const watermark_keys[] = {"allowed_lateness", "idle_timeout",
                                             "max_pending_per_user", "max_pending_total", NULL};
static const char *const users_keys[] = {"max", "idle_ttl", NULL};
static const char *const snapshot_keys[] = {"dir", "interval", "keep", NULL};
static const char *const daemon_keys[] = {"log_level", "control",       "curve_secret_file", "feed",
                                          "http",      "ready_max_lag", "watchdog",          NULL};

static void load_watermark(loader *ld, ynode *map)
{
    pd_state_conf *st = &ld->conf->state;
    const char *mp = "watermark";

    if (!ld_check_map(ld, map, mp, watermark_keys))
        return;
    ld_get_duration(ld, map, mp, "allowed_lateness", 0, INT64_MAX, false, &st->allowed_lateness_ms);
    ld_get_duration(ld, map, mp, "idle_timeout", 10, 24 * MS_PER_H, false, &st->idle_timeout_ms);
    ld_get_int(ld, map, mp, "max_pending_per_user", 1, 1000000, &st->max_pending_per_user);
    ld_get_int(ld, map, mp, "max_pending_total", 1, 100000000, &st->max_pending_total);
}

static void load_users(loader *ld, ynode *map)
{
    pd_state_conf *st = &ld->conf->state;
    const char *mp = "users";

    if (!ld_check_map(ld, map, mp, users_keys))
        return;
    ld_get_int(ld, map, mp, "max", 0, INT64_MAX, &st->max_users);
    ld_get_duration(ld, map, mp, "idle_ttl", 0, INT64_MAX, false, &st->user_idle_ttl_ms);
}

static void load_snapshot(loader *ld, ynode *map)
{
    pd_snapshot_conf *sn = &ld->conf->snapshot;
    const char *mp = "snapshot";

    if (!ld_check_map(ld, map, mp, snapshot_keys))
        return;
    ld_get_string(ld, map, mp, "dir", false, &sn->dir);
    ld_get_duration(ld, map, mp, "interval", 0, INT64_MAX, false, &sn->interval_ms);
    ld_get_int(ld, map, mp, "keep", 1, 100, &sn->keep);
}

static bool valid_host_port(const char *s)
{
    char *host = NULL;
    int port = 0;
    const char *colon = s[0] == '[' ? strstr(s, "]:") : strrchr(s, ':');

    if (!colon || colon == s)
        return false;
    if (redis_url_split_host_port(s, strlen(s), &host, &port) || !port) {
        free(host);
        return false;
    }
    free(host);
    return true;
}

/* ZeroMQ endpoints this daemon binds: ipc://PATH or tcp://HOST:PORT. */
static bool valid_endpoint(const char *s)
{
    if (!strncmp(s, "ipc://", 6))
        return s[6] != '\0';
    if (!strncmp(s, "tcp://", 6)) {
        const char *colon = strrchr(s + 6, ':');

        if (colon && !strcmp(colon, ":*"))
            return colon > s + 6;
        return valid_host_port(s + 6);
    }
    return false;
}

/* The level names come from the one table the log lines use; the language takes exactly those
 * (the control plane also takes "warn"). */
static void load_log_level(loader *ld, ynode *map, const char *mp, pd_log_level *level)
{
    const char *names[PD_LOG_LEVEL_COUNT];
    int v = (int)*level;

    for (size_t i = 0; i < PD_LOG_LEVEL_COUNT; i++)
        names[i] = pd_log_level_to_name((pd_log_level)i);
    if (ld_get_enum(ld, map, mp, "log_level", names, PD_LOG_LEVEL_COUNT, &v) > 0)
        *level = (pd_log_level)v;
}

static void load_daemon(loader *ld, ynode *map)
{
    pd_daemon_conf *d = &ld->conf->daemon;
    const char *mp = "daemon";
    char buf[64];

    if (!ld_check_map(ld, map, mp, daemon_keys))
        return;
    load_log_level(ld, map, mp, &d->log_level);
    for (size_t i = 0; i < 2; i++) {
        const char *key = i ? "feed" : "control";
        char **slot = i ? &d->feed : &d->control;
        char kp[KEYPATH_MAX];

        if (ld_get_string(ld, map, mp, key, false, slot) > 0 && !valid_endpoint(*slot)) {
            ld_path_key(kp, mp, key);
            ld_report(ld, ld_map_get(map, key), kp,
                      "invalid endpoint %s (expected ipc://PATH or tcp://HOST:PORT)",
                      ld_describe(ld_map_get(map, key), buf, sizeof(buf)));
        }
    }
    ld_get_string(ld, map, mp, "curve_secret_file", false, &d->control_curve_secret_file);
    if (ld_get_string(ld, map, mp, "http", false, &d->http) > 0 && !valid_host_port(d->http))
        ld_report(ld, ld_map_get(map, "http"), "daemon.http",
                  "invalid address %s (expected HOST:PORT such as 127.0.0.1:9464)",
                  ld_describe(ld_map_get(map, "http"), buf, sizeof(buf)));
    ld_get_int(ld, map, mp, "ready_max_lag", 0, INT64_MAX, &d->ready_max_lag);
    ld_get_duration(ld, map, mp, "watchdog", 0, INT64_MAX, false, &d->watchdog_ms);
}

/* ------------------------------------------------------------------------------------------ */
/* sync: model deltas between the instances of a group */

static const char *const sync_keys[] = {"enabled",     "topic",
                                        "interval",    "instance_id",
                                        "max_message_bytes", "peer_timeout",
                                        NULL};

static void load_sync(loader *ld, ynode *map)
{
    pd_sync_conf *sy = &ld->conf->sync;
    const char *mp = "sync";

    if (!ld_check_map(ld, map, mp, sync_keys))
        return;
    ld_get_bool(ld, map, mp, "enabled", &sy->enabled);
    ld_get_string(ld, map, mp, "topic", false, &sy->topic);
    ld_get_duration(ld, map, mp, "interval", 10, MS_PER_H, false, &sy->interval_ms);
    ld_get_string(ld, map, mp, "instance_id", false, &sy->instance_id);
    /* room for one entry of the widest model, below librdkafka's 1e9 limit */
    ld_get_size(ld, map, mp, "max_message_bytes", 4096, 100 << 20, &sy->max_message_bytes);
    ld_get_duration(ld, map, mp, "peer_timeout", 10, 24 * MS_PER_H, false, &sy->peer_timeout_ms);
    if (!sy->enabled)
        return;
    if (!sy->topic) {
        ld_need(ld, map, mp, "topic");
        return;
    }
    for (size_t i = 0; i < ld->conf->kafka.n_topics; i++)
        if (!strcmp(ld->conf->kafka.topics[i], sy->topic))
            ld_report(ld, ld_map_get(map, "topic"), "sync.topic",
                      "\"%s\" is also a consumed topic (deltas would be read as events)",
                      sy->topic);
    if (ld->conf->events.dead_letter_topic &&
        !strcmp(ld->conf->events.dead_letter_topic, sy->topic))
        ld_report(ld, ld_map_get(map, "topic"), "sync.topic",
                  "\"%s\" is also events.dead_letter_topic", sy->topic);
}

/* ------------------------------------------------------------------------------------------ */
/* the top level */

static const char *const top_keys[] = {"kafka",  "redis",    "events", "features", "models",
                                       "watermark", "users", "snapshot", "daemon", "sync",
                                       NULL};

void sections_set_defaults(loader *ld)
{
    pd_config *conf = ld->conf;

    conf->kafka.start = PD_START_EARLIEST;
    conf->kafka.poll_batch = 1000;
    conf->redis.prefix = ld_strdup(ld, "pd");
    conf->redis.ttl_ms = 7 * MS_PER_DAY;
    conf->redis.flush_interval_ms = 50;
    conf->redis.max_pipeline = 1000;
    conf->redis.timeout_ms = 2 * MS_PER_S;
    conf->events.field_event_id = ld_strdup(ld, "event_id");
    conf->events.field_user = ld_strdup(ld, "user_id");
    conf->events.field_item = ld_strdup(ld, "item_id");
    conf->events.field_type = ld_strdup(ld, "type");
    conf->events.field_time = ld_strdup(ld, "ts");
    conf->events.field_value = ld_strdup(ld, "price");
    conf->events.field_text = ld_strdup(ld, "text");
    conf->events.forget_type = -1;
    conf->events.max_message_bytes = 64 << 10;
    conf->events.max_string_length = 1024;
    conf->state.allowed_lateness_ms = MS_PER_MIN;
    conf->state.idle_timeout_ms = PD_DEFAULT_IDLE_TIMEOUT_MS;
    conf->state.max_pending_per_user = PD_DEFAULT_MAX_PENDING_PER_USER;
    conf->state.max_pending_total = 1000000;
    conf->snapshot.interval_ms = 5 * MS_PER_MIN;
    conf->snapshot.keep = 3;
    conf->daemon.log_level = PD_LOG_INFO;
    conf->daemon.ready_max_lag = 10000;
    conf->sync.interval_ms = MS_PER_S;
    conf->sync.max_message_bytes = 900 << 10;
    conf->sync.peer_timeout_ms = 5 * MS_PER_S;
}

/* A section's node, "nothing" included, so an empty section reports at its own position. */
static ynode *section(ynode *root, const char *key)
{
    ptrdiff_t i = ld_map_find(root, key);

    return i < 0 ? NULL : pd_yaml_node_value(root, (size_t)i);
}

void sections_load(loader *ld, ynode *root)
{
    char buf[64];
    static const char *const required[] = {"kafka", "events", "models"};

    if (pd_yaml_node_kind(root) != PD_YAML_NULL && pd_yaml_node_kind(root) != PD_YAML_MAP) {
        ld_report(ld, root, NULL, "expected a mapping of sections at the top level, got %s",
                  ld_describe(root, buf, sizeof(buf)));
        return;
    }
    ld_check_map(ld, root, "", top_keys);
    for (size_t i = 0; i < ARRAY_SIZE(required); i++)
        if (ld_map_find(root, required[i]) < 0)
            ld_report(ld, root, required[i], "missing required section");
    /* A missing required section is one error, not one per key it would have held. Sections
     * written as nothing ("kafka:") are read as empty and do report their missing keys. */
    /* events first: every other section may name its types */
    if (ld_map_find(root, "events") >= 0)
        load_events(ld, section(root, "events"));
    if (ld_map_find(root, "kafka") >= 0)
        load_kafka(ld, section(root, "kafka"));
    check_dead_letter_topic(ld, root);
    load_redis(ld, ld_map_get(root, "redis"));
    features_load(ld, ld_map_get(root, "features"));
    if (ld_map_find(root, "models") >= 0)
        models_load(ld, section(root, "models"));
    load_watermark(ld, ld_map_get(root, "watermark"));
    load_users(ld, ld_map_get(root, "users"));
    load_snapshot(ld, ld_map_get(root, "snapshot"));
    load_daemon(ld, ld_map_get(root, "daemon"));
    load_sync(ld, ld_map_get(root, "sync"));
}

/* propensityd check [--config] FILE...: validate pipeline configs and summarise what each would
 * run, as text or JSON; with --connect also ask the Kafka brokers and Redis of each whether they
 * answer, with a short timeout. */
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>

#include "common/clock.h"
#include "config/config.h"
#include "daemon/cli.h"
#include "daemon/commands.h"
#include "models/learner.h"
#include "models/recommender.h"
#include "pipeline/featurizer.h"
#include "pipeline/kafka_in.h"
#include "pipeline/labels.h"
#include "pipeline/user_state.h"

static const char *const kind_names[] = {"categorical", "numeric",        "cross",
                                         "text",        "recency",        "decayed_count",
                                         "spend",       "distinct_items", "recent_items"};
static const char *const type_names[] = {"logistic", "linear", "hinge"};
static const char *const opt_names[] = {"ftrl", "adagrad", "sgd", "ftrl_multi"};

static void human_bytes(char *buf, size_t len, double bytes)
{
    const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (bytes >= 1024 && u < 4) {
        bytes /= 1024;
        u++;
    }
    snprintf(buf, len, u ? "%.1f %s" : "%.0f %s", bytes, units[u]);
}

#define PROG               "propensityd check"
#define DEFAULT_TIMEOUT_MS 3000

typedef struct check_opts {
    bool json;
    bool connect;
    int timeout_ms;
} check_opts;

static void check_usage(FILE *out)
{
    fprintf(out, "usage: propensityd check [--json] [--connect [--timeout MS]] [--config] FILE...\n\n"
                 "Validates each FILE (every error with file:line:column) and prints a summary:\n"
                 "topics, features, models and the memory their weight tables take.\n"
                 "Exit status 0 when every file is valid (and, with --connect, everything\n"
                 "answered), 1 when not, 2 on a usage error.\n\n"
                 "  -c, --config FILE   a file to check (as the files after the options)\n"
                 "      --json          one JSON object on stdout: {\"ok\", \"files\": [...]},\n"
                 "                      each file's summary, errors and connection results\n"
                 "      --connect       also ask the Kafka brokers for the topics and Redis for\n"
                 "                      a PING, and say what answered\n"
                 "  -t, --timeout MS    how long --connect waits for each (default %d)\n"
                 "  -h, --help          this text\n",
            DEFAULT_TIMEOUT_MS);
}

static void print_inputs(const char *path, const pd_config *conf)
{
    printf("%s: ok\n", path);
    printf("kafka: group \"%s\", %zu topic(s):", conf->kafka.group, conf->kafka.n_topics);
    for (size_t i = 0; i < conf->kafka.n_topics; i++)
        printf(" %s", conf->kafka.topics[i]);
    printf("\n");
    printf("events: %zu type(s):", conf->events.n_types);
    for (size_t i = 0; i < conf->events.n_types; i++)
        printf(" %s", conf->events.types[i]);
    printf("%s%s\n", conf->events.dead_letter_topic ? "; dead letters to " : "",
           conf->events.dead_letter_topic ? conf->events.dead_letter_topic : "");
    printf("features: %zu\n", conf->n_features);
    for (size_t i = 0; i < conf->n_features; i++)
        printf("  %-24s %s\n", conf->features[i].name, kind_names[conf->features[i].kind]);
}

/* Prints an error of path to stderr, or appends it to errors (--json). */
static void report_error(json_t *errors, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void report_error(json_t *errors, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (errors)
        json_array_append_new(errors, json_string(msg));
    else
        fprintf(stderr, "%s\n", msg);
}

/* The learner's own range checks, beyond what the YAML layer knows; how many failed. */
static int check_learners(const char *path, const pd_config *conf, json_t *errors)
{
    int bad = 0;
    for (size_t i = 0; i < conf->n_models; i++) {
        char err[256];
        if (conf->models[i].kind != PD_MODEL_KIND_GLM)
            continue;
        if (pd_learner_check_conf(&conf->models[i].learner, err, sizeof err) < 0) {
            report_error(errors, "%s:%d:%d: error: models.%s: %s", path, conf->models[i].pos.line,
                         conf->models[i].pos.column, conf->models[i].name, err);
            bad++;
        }
    }
    return bad;
}

/* A GLM's weight table, in bytes. */
static double model_weight_bytes(const pd_model_conf *m)
{
    return ldexp(1.0, m->learner.bits) * (double)pd_learner_bytes_per_weight(&m->learner);
}

/* One active user's state with its id; 0 when the pipeline keeps none. */
static double user_bytes(const pd_config *conf, const pd_featurizer *fz)
{
    if (!pd_config_needs_user_state(conf))
        return 0;
    pd_user_layout layout = *pd_featurizer_layout(fz);
    return (double)pd_user_state_bytes_per_user(&layout) + 16;
}

/* The largest pending example of the models with delayed labels; 0 without such models. */
static double pending_example_bytes(const pd_config *conf, const pd_featurizer *fz)
{
    double per = 0;
    for (size_t i = 0; i < conf->n_models; i++) {
        const pd_model_conf *m = &conf->models[i];
        if (m->kind != PD_MODEL_KIND_GLM || m->label != PD_LABEL_POSITIVE_WITHIN)
            continue;
        size_t nnz = pd_featurizer_max_nnz(fz, m->features, m->n_features);
        double b = (double)pd_labels_bytes_per_example(nnz);
        if (b > per)
            per = b;
    }
    return per;
}

/* One model's lines; returns its weight table's bytes. */
static double print_model(const pd_config *conf, const pd_model_conf *m)
{
    char buf[64];
    const pd_learner_conf *lc = &m->learner;
    double entries = ldexp(1.0, lc->bits);
    double bytes = model_weight_bytes(m);
    human_bytes(buf, sizeof buf, bytes);
    printf("  %s: %s, %s, 2^%d weights x %zu B = %s, %zu feature(s), output \"%s\"%s\n", m->name,
           type_names[lc->type], opt_names[lc->optimizer], lc->bits,
           pd_learner_bytes_per_weight(lc), buf, m->n_features, m->output ? m->output : m->name,
           m->publish ? "" : " (not published)");
    printf("    examples on");
    for (size_t t = 0; t < conf->events.n_types; t++)
        if (m->example_on & (UINT32_C(1) << t))
            printf(" %s", conf->events.types[t]);
    if (m->label == PD_LABEL_POSITIVE_WITHIN)
        printf("; label 1 when %s follows within %.0f s (%s)\n",
               conf->events.types[m->positive_on], (double)m->window_ms / 1000.0,
               m->match == PD_MATCH_USER_ITEM ? "same user and item" : "same user");
    else
        printf("; label from \"%s\"\n", m->value_field ? m->value_field : "value");
    /* 1 - e^(-(n-1)/m) of n distinct features share an entry: n for a 1% and 10% share */
    printf("    hash collisions: 1%% of features share an entry at ~%.0f distinct features, "
           "10%% at ~%.0f\n",
           -entries * log(0.99), -entries * log(0.90));
    return bytes;
}

static void print_users(const pd_config *conf, const pd_featurizer *fz)
{
    char buf[64];
    pd_user_layout layout = *pd_featurizer_layout(fz);
    double per_user = user_bytes(conf, fz);
    if (per_user <= 0) {
        printf("  users: no per-user state kept (no feature or label reads a user's past)\n");
        return;
    }
    human_bytes(buf, sizeof buf, per_user * 1e6);
    printf("  users: ~%.0f B per active user (%zu accumulator(s), %zu sketch(es), %zu "
           "recent item(s)): %s per million users",
           per_user, layout.n_acc, layout.n_sketch, layout.ring_items, buf);
    if (conf->state.max_users > 0) {
        human_bytes(buf, sizeof buf, per_user * (double)conf->state.max_users);
        printf(", at most %s (users.max %lld)", buf, (long long)conf->state.max_users);
    }
    printf("\n");
}

static void print_pending(const pd_config *conf, const pd_featurizer *fz)
{
    double per = pending_example_bytes(conf, fz);
    if (per <= 0)
        return;
    char one[32], all[32];
    human_bytes(one, sizeof one, per * (double)conf->state.max_pending_per_user);
    human_bytes(all, sizeof all, per * (double)conf->state.max_pending_total);
    printf("  pending examples: up to %.0f B each; one user at most %s "
           "(watermark.max_pending_per_user %lld), all at most %s "
           "(watermark.max_pending_total %lld)\n",
           per, one, (long long)conf->state.max_pending_per_user, all,
           (long long)conf->state.max_pending_total);
    printf("  watermark: allowed lateness %.0f s; a caught-up partition stops holding it "
           "after %.1f s without events (watermark.idle_timeout)\n",
           (double)conf->state.allowed_lateness_ms / 1000.0,
           (double)conf->state.idle_timeout_ms / 1000.0);
}

/* A model of lists' lines: its keys, what it learns from, how often lists go out, the memory
 * one user and one item take and all of them at limits.users and limits.items. Returns those
 * bytes at the limits. */
static double print_recommender(const pd_config *conf, const pd_model_conf *m)
{
    const pd_recommender_conf *r = &m->recommender;
    const char *out = m->output ? m->output : m->name;
    bool rec = strcmp(out, "rec") == 0;
    printf("  %s: recommender, k %d, dim %d, lists {prefix}:%s:{user}, "
           "{prefix}:%s%spopular, {prefix}:%s%ssim:{item}%s\n",
           m->name, r->k, r->dim, out, rec ? "" : out, rec ? "" : "_", rec ? "" : out,
           rec ? "" : "_", m->publish ? "" : " (not published)");
    printf("    interactions");
    for (size_t t = 0; t < conf->events.n_types && t < PD_MAX_EVENT_TYPES; t++)
        if (r->interaction[t] > 0)
            printf(" %s x%g", conf->events.types[t], r->interaction[t]);
    printf("; a user's list rescored at most every %.1f s, an item's similar list every %.0f s\n",
           (double)r->refresh_ms / 1000.0, (double)r->similar_refresh_ms / 1000.0);
    size_t per_user = pd_recommender_bytes_per_user(r), per_item = pd_recommender_bytes_per_item(r);
    double users = (double)per_user * (double)r->max_users;
    double items = (double)per_item * (double)r->max_items;
    char ub[32], ib[32];
    human_bytes(ub, sizeof ub, users);
    human_bytes(ib, sizeof ib, items);
    printf("    memory: %zu B per user (limits.users %lld: at most %s), %zu B per item "
           "(limits.items %lld: at most %s)\n",
           per_user, (long long)r->max_users, ub, per_item, (long long)r->max_items, ib);
    return users + items;
}

/* ---- the summary as JSON (--json) ---- */

static json_t *json_names(char *const *names, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_string(names[i]));
    return a;
}

static json_t *json_model(const pd_config *conf, const pd_model_conf *m)
{
    const char *out = m->output ? m->output : m->name;
    if (m->kind == PD_MODEL_KIND_RECOMMENDER) {
        const pd_recommender_conf *r = &m->recommender;
        size_t per_user = pd_recommender_bytes_per_user(r), per_item = pd_recommender_bytes_per_item(r);
        return json_pack("{s:s, s:s, s:s, s:b, s:i, s:i, s:I, s:I, s:I}", "name", m->name, "type",
                         "recommender", "output", out, "publish", m->publish, "k", r->k, "dim",
                         r->dim, "bytes_per_user", (json_int_t)per_user, "bytes_per_item",
                         (json_int_t)per_item,
                         "bytes_at_limits",
                         (json_int_t)((double)per_user * (double)r->max_users +
                                      (double)per_item * (double)r->max_items));
    }
    const pd_learner_conf *lc = &m->learner;
    json_t *feats = json_array();
    for (size_t i = 0; i < m->n_features; i++)
        json_array_append_new(feats, json_string(conf->features[m->features[i]].name));
    return json_pack("{s:s, s:s, s:s, s:b, s:s, s:i, s:I, s:I, s:o}", "name", m->name, "type",
                     type_names[lc->type], "output", out, "publish", m->publish, "optimizer",
                     opt_names[lc->optimizer], "bits", lc->bits, "bytes_per_weight",
                     (json_int_t)pd_learner_bytes_per_weight(lc), "weight_bytes",
                     (json_int_t)model_weight_bytes(m), "features", feats);
}

/* The summary members of one valid file's object. */
static void json_summary(json_t *f, const pd_config *conf, const pd_featurizer *fz)
{
    json_object_set_new(f, "kafka",
                        json_pack("{s:s, s:o}", "group", conf->kafka.group, "topics",
                                  json_names(conf->kafka.topics, conf->kafka.n_topics)));
    json_object_set_new(f, "events",
                        json_pack("{s:o, s:s?}", "types",
                                  json_names(conf->events.types, conf->events.n_types),
                                  "dead_letter_topic", conf->events.dead_letter_topic));
    json_t *feats = json_array(), *models = json_array();
    for (size_t i = 0; i < conf->n_features; i++)
        json_array_append_new(feats, json_pack("{s:s, s:s}", "name", conf->features[i].name,
                                               "kind", kind_names[conf->features[i].kind]));
    double weights = 0, lists = 0;
    for (size_t i = 0; i < conf->n_models; i++) {
        json_t *m = json_model(conf, &conf->models[i]);
        if (conf->models[i].kind == PD_MODEL_KIND_RECOMMENDER)
            lists += (double)json_integer_value(json_object_get(m, "bytes_at_limits"));
        else
            weights += model_weight_bytes(&conf->models[i]);
        json_array_append_new(models, m);
    }
    json_object_set_new(f, "features", feats);
    json_object_set_new(f, "models", models);
    double per_user = user_bytes(conf, fz), per_example = pending_example_bytes(conf, fz);
    json_t *mem = json_pack("{s:I, s:I}", "weight_tables_bytes", (json_int_t)weights,
                            "lists_bytes", (json_int_t)lists);
    json_object_set_new(mem, "bytes_per_user",
                        per_user > 0 ? json_integer((json_int_t)per_user) : json_null());
    json_object_set_new(mem, "bytes_per_pending_example",
                        per_example > 0 ? json_integer((json_int_t)per_example) : json_null());
    json_object_set_new(f, "memory", mem);
}

/* ---- --connect: does anything answer? ---- */

typedef struct kafka_probe {
    char last_error[400];
} kafka_probe;

static void kafka_quiet_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    (void)level;
    (void)fac;
    (void)buf;
}

static void kafka_probe_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)rk;
    (void)err;
    kafka_probe *p = opaque;
    snprintf(p->last_error, sizeof p->last_error, "%s", reason);
}

/* Lowercases the first letter of a library's message, for the house style of messages. */
static const char *lower_first(char *msg)
{
    if (msg[0] >= 'A' && msg[0] <= 'Z' && !(msg[1] >= 'A' && msg[1] <= 'Z'))
        msg[0] = (char)(msg[0] - 'A' + 'a');
    return msg;
}

/* Asks the brokers for metadata: which brokers and which of our topics answered. Prints a
 * line per finding (text) or fills out (JSON); returns 0 or -1. */
static int connect_kafka(const pd_config *conf, int timeout_ms, json_t *out)
{
    char err[600];
    kafka_probe probe = {{0}};
    const char *brokers = conf->kafka.brokers;
    rd_kafka_conf_t *kc = pd_kafka_conf_build(&conf->kafka, false, err, sizeof err);
    rd_kafka_t *rk = NULL;
    int r = -1;
    if (!kc)
        goto out_report;
    rd_kafka_conf_set_log_cb(kc, kafka_quiet_log);
    rd_kafka_conf_set_error_cb(kc, kafka_probe_error);
    rd_kafka_conf_set_opaque(kc, &probe);
    if (!(rk = rd_kafka_new(RD_KAFKA_PRODUCER, kc, err, sizeof err))) {
        rd_kafka_conf_destroy(kc);
        goto out_report;
    }
    const struct rd_kafka_metadata *md = NULL;
    double t0 = pd_clock_mono_s();
    rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 1, NULL, &md, timeout_ms);
    double ms = (pd_clock_mono_s() - t0) * 1000.0;
    if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        char why[400];
        snprintf(why, sizeof why, "%s", probe.last_error[0] ? probe.last_error : rd_kafka_err2str(e));
        /* librdkafka's local errors read "Local: Broker transport failure" */
        char *reason = strncmp(why, "Local: ", 7) == 0 ? why + 7 : why;
        snprintf(err, sizeof err, "no broker answered within %d ms: %s", timeout_ms,
                 lower_first(reason));
        goto out_report;
    }
    json_t *topics = json_object();
    int missing = 0;
    for (size_t t = 0; t < conf->kafka.n_topics; t++) {
        const char *name = conf->kafka.topics[t];
        const struct rd_kafka_metadata_topic *found = NULL;
        for (int i = 0; i < md->topic_cnt; i++)
            if (strcmp(md->topics[i].topic, name) == 0 && md->topics[i].err == 0)
                found = &md->topics[i];
        json_object_set_new(topics, name, found ? json_integer(found->partition_cnt) : json_null());
        missing += found == NULL;
    }
    if (out) {
        json_object_set_new(out, "brokers", json_integer(md->broker_cnt));
        json_object_set_new(out, "topics", topics);
        json_object_set_new(out, "milliseconds", json_real(ms));
    } else {
        printf("kafka \"%s\": answered in %.0f ms: %d broker(s)", brokers, ms, md->broker_cnt);
        for (int i = 0; i < md->broker_cnt; i++)
            printf("%s%s:%d", i ? ", " : " (", md->brokers[i].host, md->brokers[i].port);
        printf("%s\n", md->broker_cnt ? ")" : "");
        const char *name;
        json_t *v;
        json_object_foreach(topics, name, v)
        {
            if (json_is_null(v))
                printf("  topic \"%s\": not found\n", name);
            else
                printf("  topic \"%s\": %" JSON_INTEGER_FORMAT " partition(s)\n", name,
                       json_integer_value(v));
        }
        json_decref(topics);
    }
    rd_kafka_metadata_destroy(md);
    if (missing) {
        snprintf(err, sizeof err, "%d topic(s) not found", missing);
        goto out_report;
    }
    r = 0;
out_report:
    if (r < 0) {
        if (out)
            json_object_set_new(out, "error", json_string(lower_first(err)));
        else
            fprintf(stderr, "%s: kafka \"%s\": %s\n", PROG, brokers, lower_first(err));
    }
    if (out)
        json_object_set_new(out, "ok", json_boolean(r == 0));
    if (rk)
        rd_kafka_destroy(rk);
    return r;
}

/* The error of a failed step of the Redis conversation, in *err; always -1. */
static int redis_failed(char *err, size_t len, const char *what, redisContext *c, redisReply *rep)
{
    snprintf(err, len, "%s: %s", what,
             rep && rep->type == REDIS_REPLY_ERROR ? rep->str : (c->err ? c->errstr : "no reply"));
    if (rep)
        freeReplyObject(rep);
    return -1;
}

/* Connects, authenticates as the daemon would, PINGs and asks the version. */
static int redis_talk(const pd_redis_conf *rc, struct timeval tv, char *version, size_t vlen,
                      char *err, size_t len)
{
    redisContext *c = rc->unix_path
                          ? redisConnectUnixWithTimeout(rc->unix_path, tv)
                          : redisConnectWithTimeout(rc->host ? rc->host : "127.0.0.1",
                                                    rc->port ? rc->port : 6379, tv);
    int r = -1;
    redisReply *rep = NULL;
    if (!c) {
        snprintf(err, len, "out of memory");
        return -1;
    }
    if (c->err) {
        snprintf(err, len, "cannot connect: %s", c->errstr);
        lower_first(err + strlen("cannot connect: "));
        goto out_free;
    }
    redisSetTimeout(c, tv);
    if (rc->password && rc->password[0]) {
        rep = rc->username ? redisCommand(c, "AUTH %s %s", rc->username, rc->password)
                           : redisCommand(c, "AUTH %s", rc->password);
        if (!rep || rep->type == REDIS_REPLY_ERROR) {
            r = redis_failed(err, len, "authentication failed", c, rep);
            goto out_free;
        }
        freeReplyObject(rep);
    }
    rep = redisCommand(c, "PING");
    if (!rep || rep->type == REDIS_REPLY_ERROR ||
        !(rep->type == REDIS_REPLY_STATUS && strcmp(rep->str, "PONG") == 0)) {
        r = redis_failed(err, len, "no PONG to PING", c, rep);
        goto out_free;
    }
    freeReplyObject(rep);
    rep = redisCommand(c, "INFO server");
    if (rep && rep->type == REDIS_REPLY_STRING) {
        const char *v = strstr(rep->str, "redis_version:");
        if (v) {
            v += strlen("redis_version:");
            snprintf(version, vlen, "%.*s", (int)strcspn(v, "\r\n"), v);
        }
    }
    if (rep)
        freeReplyObject(rep);
    r = 0;
out_free:
    redisFree(c);
    return r;
}

static int connect_redis(const pd_config *conf, int timeout_ms, json_t *out)
{
    const pd_redis_conf *rc = &conf->redis;
    char addr[300], err[512] = "", version[64] = "";
    if (rc->unix_path)
        snprintf(addr, sizeof addr, "unix://%s", rc->unix_path);
    else
        snprintf(addr, sizeof addr, "%s:%d", rc->host ? rc->host : "127.0.0.1",
                 rc->port ? rc->port : 6379);
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    double t0 = pd_clock_mono_s();
    int r = redis_talk(rc, tv, version, sizeof version, err, sizeof err);
    double ms = (pd_clock_mono_s() - t0) * 1000.0;
    if (out) {
        json_object_set_new(out, "ok", json_boolean(r == 0));
        json_object_set_new(out, "address", json_string(addr));
        if (r == 0) {
            json_object_set_new(out, "version", version[0] ? json_string(version) : json_null());
            json_object_set_new(out, "milliseconds", json_real(ms));
        } else {
            json_object_set_new(out, "error", json_string(lower_first(err)));
        }
    } else if (r == 0) {
        printf("redis \"%s\": answered PONG in %.0f ms%s%s\n", addr, ms,
               version[0] ? ", redis " : "", version);
    } else {
        fprintf(stderr, "%s: redis \"%s\": %s\n", PROG, addr, lower_first(err));
    }
    return r;
}

/* ---- one file ---- */

/* Checks path: 0 when valid (and everything answered), else 1. With files (--json) the file's
 * object is appended there instead of printing. */
static int check_file(const char *path, const check_opts *o, json_t *files)
{
    json_t *f = NULL, *errors = NULL;
    if (files) {
        f = json_pack("{s:s}", "path", path);
        errors = json_array();
    }
    int status = 1;
    pd_featurizer *fz = NULL;
    pd_diag *diag = pd_diag_new();
    pd_config *conf = diag ? pd_config_load(path, diag) : NULL;
    if (!diag) {
        report_error(errors, "%s: out of memory", path);
        goto out;
    }
    if (!conf) {
        for (size_t i = 0; i < pd_diag_count(diag); i++)
            report_error(errors, "%s", pd_diag_message(diag, i));
        if (!errors)
            fprintf(stderr, "%s: %zu error%s\n", path, pd_diag_count(diag),
                    pd_diag_count(diag) == 1 ? "" : "s");
        goto out;
    }
    if (!files)
        print_inputs(path, conf);
    char err[256] = "";
    if (check_learners(path, conf, errors) > 0)
        goto out;
    if (!(fz = pd_featurizer_new(conf, NULL, err, sizeof err))) {
        if (err[0])
            report_error(errors, "%s: %s", path, err);
        goto out;
    }
    status = 0;
    if (files) {
        json_summary(f, conf, fz);
    } else {
        double total = 0, lists = 0;
        printf("models: %zu\n", conf->n_models);
        for (size_t i = 0; i < conf->n_models; i++) {
            if (conf->models[i].kind == PD_MODEL_KIND_RECOMMENDER)
                lists += print_recommender(conf, &conf->models[i]);
            else
                total += print_model(conf, &conf->models[i]);
        }
        char buf[64];
        human_bytes(buf, sizeof buf, total);
        printf("memory:\n  weight tables: %s\n", buf);
        if (lists > 0) {
            human_bytes(buf, sizeof buf, lists);
            printf("  models of lists: at most %s (at their limits)\n", buf);
        }
        print_users(conf, fz);
        print_pending(conf, fz);
    }
    if (o->connect) {
        json_t *kafka = files ? json_object() : NULL, *redis = files ? json_object() : NULL;
        if (!files)
            printf("connect:\n");
        fflush(stdout);
        if (connect_kafka(conf, o->timeout_ms, kafka) < 0)
            status = 1;
        fflush(stdout);
        if (connect_redis(conf, o->timeout_ms, redis) < 0)
            status = 1;
        if (files)
            json_object_set_new(f, "connect",
                                json_pack("{s:o, s:o}", "kafka", kafka, "redis", redis));
    }
out:
    if (files) {
        json_object_set_new(f, "valid", json_boolean(conf && fz));
        json_object_set_new(f, "ok", json_boolean(status == 0));
        json_object_set_new(f, "errors", errors);
        json_array_append_new(files, f);
    }
    pd_featurizer_free(fz);
    pd_config_free(conf);
    pd_diag_free(diag);
    return status;
}

/* Reads the options into *o and the files into ret_paths (argv's strings); -1 to go on, else
 * the exit status. */
static int parse_options(int argc, char **argv, check_opts *o, const char ***ret_paths,
                         int *ret_n)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"json", no_argument, NULL, 'j'},
        {"connect", no_argument, NULL, 'C'},      {"timeout", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    const char **paths = calloc((size_t)argc + 1, sizeof *paths);
    int n = 0, c;
    char *end;
    if (!paths) {
        fprintf(stderr, "%s: out of memory\n", PROG);
        return 1;
    }
    *o = (check_opts){.timeout_ms = DEFAULT_TIMEOUT_MS};
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":c:t:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c': paths[n++] = optarg; break;
        case 'j': o->json = true; break;
        case 'C': o->connect = true; break;
        case 't': {
            long v = strtol(optarg, &end, 10);
            if (*end || end == optarg || v <= 0 || v > 600000) {
                free(paths);
                return pd_cli_usage_error(PROG, "--timeout needs milliseconds, 1..600000, not \"%s\"",
                                          optarg);
            }
            o->timeout_ms = (int)v;
            break;
        }
        case 'h':
            free(paths);
            check_usage(stdout);
            return 0;
        default: free(paths); return pd_cli_option_error(PROG, c, argv, optind);
        }
    }
    while (optind < argc)
        paths[n++] = argv[optind++];
    if (n == 0) {
        free(paths);
        return pd_cli_usage_error(PROG, "no configuration file given");
    }
    *ret_paths = paths;
    *ret_n = n;
    return -1;
}

int pd_cmd_check(int argc, char **argv)
{
    check_opts o;
    const char **paths = NULL;
    int n = 0;
    int status = parse_options(argc, argv, &o, &paths, &n);
    if (status >= 0)
        return status;
    json_t *files = o.json ? json_array() : NULL;
    status = 0;
    for (int i = 0; i < n; i++) {
        if (!o.json && i > 0)
            printf("\n");
        status |= check_file(paths[i], &o, files);
        fflush(stdout);
    }
    if (files) {
        json_t *root = json_pack("{s:b, s:o}", "ok", status == 0, "files", files);
        char *text = root ? json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
        if (!text) {
            fprintf(stderr, "%s: out of memory\n", PROG);
            status = 1;
        } else {
            printf("%s\n", text);
        }
        free(text);
        json_decref(root);
    }
    free(paths);
    return status;
}

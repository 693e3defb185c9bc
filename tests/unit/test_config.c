/* Tests for config/: good files load into the expected pd_config, the shipped examples load
 * cleanly, and every broken file in tests/configs/bad/ gives exactly the messages in its
 * .expected twin (see tests/configs/bad/README.md). Runs with tests/unit as working directory. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"

#define BAD_DIR      "../configs/bad"
#define GOOD_DIR     "../configs/good"
#define EXAMPLE      "../../config/example.yaml"
#define EXAMPLES_DIR "../../config/examples"

#define SECRET_VALUE "s3cret-value"

extern char **environ;

#define assert_double_equal(a, b) assert_true(fabs((double)(a) - (double)(b)) < 1e-9)

/* Enough for a config to load; every test that needs more appends to or edits this. */
#define MINIMAL                                                                                    \
    "kafka:\n"                                                                                     \
    "  brokers: localhost:9092\n"                                                                  \
    "  topics: events\n"                                                                           \
    "  group: g\n"                                                                                 \
    "events:\n"                                                                                    \
    "  types: [view, purchase]\n"                                                                  \
    "features:\n"                                                                                  \
    "  device: { categorical: context.device }\n"                                                  \
    "models:\n"                                                                                    \
    "  m:\n"                                                                                       \
    "    type: logistic\n"                                                                         \
    "    features: [device]\n"                                                                     \
    "    example_on: [view]\n"                                                                     \
    "    label: { positive_on: purchase, within: 30m }\n"

static int setup_env(void **state)
{
    char *names[256];
    size_t n = 0;

    (void)state;
    /* the corpus relies on these being unset, whatever the caller's environment holds */
    for (char **e = environ; *e && n < 256; e++)
        if (!strncmp(*e, "PD_TEST_UNSET", 13))
            names[n++] = strndup(*e, strcspn(*e, "="));
    for (size_t i = 0; i < n; i++) {
        unsetenv(names[i]);
        free(names[i]);
    }
    setenv("PD_TEST_BROKERS", "broker-1:9092", 1);
    setenv("PD_TEST_SECRET", SECRET_VALUE, 1);
    setenv("PD_TEST_EMPTY", "", 1);
    return 0;
}

static pd_config *load_text(const char *text, pd_diag *diag)
{
    return pd_config_load_string("test.yaml", text, strlen(text), diag);
}

/* Loads text that must be valid; prints the messages when it is not. */
static pd_config *load_ok(const char *text)
{
    pd_diag *diag = pd_diag_new();
    pd_config *conf;

    assert_non_null(diag);
    conf = load_text(text, diag);
    for (size_t i = 0; i < pd_diag_count(diag); i++)
        print_message("%s\n", pd_diag_message(diag, i));
    assert_int_equal(pd_diag_count(diag), 0);
    assert_non_null(conf);
    pd_diag_free(diag);
    return conf;
}

/* Loads text that must fail and returns its first message (static buffer). */
static const char *load_first_error(const char *text)
{
    static char first[1024];
    pd_diag *diag = pd_diag_new();
    pd_config *conf = load_text(text, diag);

    assert_null(conf);
    assert_true(pd_diag_count(diag) > 0);
    snprintf(first, sizeof(first), "%s", pd_diag_message(diag, 0));
    pd_diag_free(diag);
    return first;
}

/* MINIMAL with one line replaced (find must occur once) or, with find NULL, text appended. */
static char *minimal_with(const char *find, const char *replace)
{
    const char *base = MINIMAL;
    char *out = NULL;

    if (!find) {
        assert_true(asprintf(&out, "%s%s", base, replace) > 0);
        return out;
    }
    const char *at = strstr(base, find);

    assert_non_null(at);
    assert_true(asprintf(&out, "%.*s%s%s", (int)(at - base), base, replace, at + strlen(find)) > 0);
    return out;
}

/* ---- good configs ---- */

static void test_defaults(void **state)
{
    pd_config *conf = load_ok(MINIMAL);
    const pd_learner_conf *lc;

    (void)state;
    assert_string_equal(conf->path, "test.yaml");
    assert_string_equal(conf->kafka.brokers, "localhost:9092");
    assert_int_equal(conf->kafka.n_topics, 1);
    assert_string_equal(conf->kafka.topics[0], "events");
    assert_string_equal(conf->kafka.group, "g");
    assert_int_equal(conf->kafka.start, PD_START_EARLIEST);
    assert_int_equal(conf->kafka.poll_batch, 1000);
    assert_int_equal(conf->kafka.n_properties, 0);

    assert_string_equal(conf->redis.url, "redis://127.0.0.1:6379/0");
    assert_string_equal(conf->redis.host, "127.0.0.1");
    assert_int_equal(conf->redis.port, 6379);
    assert_null(conf->redis.unix_path);
    assert_int_equal(conf->redis.db, 0);
    assert_null(conf->redis.username);
    assert_null(conf->redis.password);
    assert_string_equal(conf->redis.prefix, "pd");
    assert_int_equal(conf->redis.ttl_ms, 7 * 86400000LL);
    assert_int_equal(conf->redis.flush_interval_ms, 50);
    assert_int_equal(conf->redis.max_pipeline, 1000);
    assert_int_equal(conf->redis.timeout_ms, 2000);

    assert_string_equal(conf->events.field_event_id, "event_id");
    assert_string_equal(conf->events.field_user, "user_id");
    assert_string_equal(conf->events.field_item, "item_id");
    assert_string_equal(conf->events.field_type, "type");
    assert_string_equal(conf->events.field_time, "ts");
    assert_string_equal(conf->events.field_value, "price");
    assert_string_equal(conf->events.field_text, "text");
    assert_int_equal(conf->events.n_types, 2);
    assert_int_equal(conf->events.forget_type, -1);
    assert_int_equal(conf->events.max_message_bytes, 65536);
    assert_int_equal(conf->events.max_string_length, 1024);
    assert_null(conf->events.dead_letter_topic);

    assert_int_equal(conf->n_features, 1);
    assert_int_equal(conf->features[0].kind, PD_FEAT_CATEGORICAL);
    assert_string_equal(conf->features[0].field, "context.device");
    assert_int_equal(conf->features[0].vocabulary, 0);
    assert_int_equal(conf->features[0].event_type, -1);
    assert_string_equal(conf->features[0].pos.file, "test.yaml");
    assert_int_equal(conf->features[0].pos.line, 8);
    assert_int_equal(conf->features[0].pos.column, 3);

    assert_int_equal(conf->n_models, 1);
    lc = &conf->models[0].learner;
    assert_int_equal(lc->type, PD_MODEL_LOGISTIC);
    assert_int_equal(lc->loss, PD_LOSS_LOGISTIC);
    assert_double_equal(lc->huber_delta, 1.0);
    assert_int_equal(lc->optimizer, PD_OPT_FTRL_MULTI);
    assert_double_equal(lc->alpha, 0.3);
    assert_double_equal(lc->beta, 1.0);
    assert_double_equal(lc->l1, 0);
    assert_double_equal(lc->l2, 0);
    assert_double_equal(lc->learning_rate, 0.1);
    assert_double_equal(lc->power_t, 0.5);
    assert_double_equal(lc->initial_t, 1000);
    assert_int_equal(lc->bits, 20);
    assert_true(lc->intercept);
    assert_int_equal(lc->weights, PD_WEIGHTS_F32);
    assert_int_equal(lc->admission_min_count, 0);
    assert_double_equal(lc->max_abs_margin, 35);
    assert_int_equal(conf->models[0].example_on, 1u << 0);
    assert_int_equal(conf->models[0].label, PD_LABEL_POSITIVE_WITHIN);
    assert_int_equal(conf->models[0].positive_on, 1);
    assert_int_equal(conf->models[0].window_ms, 30 * 60000);
    assert_int_equal(conf->models[0].match, PD_MATCH_USER);
    assert_null(conf->models[0].value_field);
    assert_null(conf->models[0].weight_field);
    assert_string_equal(conf->models[0].output, "m");
    assert_true(conf->models[0].publish);
    assert_int_equal(conf->models[0].metrics_window, 10000);
    assert_false(conf->models[0].gate.enabled);

    assert_int_equal(conf->state.allowed_lateness_ms, 60000);
    assert_int_equal(conf->state.idle_timeout_ms, 10000);
    assert_int_equal(conf->state.max_pending_per_user, 10000);
    assert_int_equal(conf->state.max_pending_total, 1000000);
    assert_int_equal(conf->state.max_users, 0);
    assert_int_equal(conf->state.user_idle_ttl_ms, 0);
    assert_int_equal(conf->state.recent_items, 0);
    assert_null(conf->snapshot.dir);
    assert_int_equal(conf->snapshot.interval_ms, 5 * 60000);
    assert_int_equal(conf->snapshot.keep, 3);
    assert_int_equal(conf->daemon.log_level, PD_LOG_INFO);
    assert_null(conf->daemon.control);
    assert_null(conf->daemon.control_curve_secret_file);
    assert_null(conf->daemon.feed);
    assert_null(conf->daemon.http);
    assert_int_equal(conf->daemon.ready_max_lag, 10000);
    assert_int_equal(conf->daemon.watchdog_ms, 0);
    assert_true(conf->fingerprint != 0);
    pd_config_free(conf);
}

static const pd_kv *property(const pd_config *conf, const char *key)
{
    for (size_t i = 0; i < conf->kafka.n_properties; i++)
        if (!strcmp(conf->kafka.properties[i].key, key))
            return &conf->kafka.properties[i];
    fail_msg("no property \"%s\"", key);
    return NULL;
}

static const pd_feature_conf *feature(const pd_config *conf, const char *name)
{
    int i = pd_config_feature_index(conf, name);

    assert_true(i >= 0);
    return &conf->features[i];
}

static void test_full(void **state)
{
    pd_diag *diag = pd_diag_new();
    pd_config *conf = pd_config_load(GOOD_DIR "/full.yaml", diag);
    const pd_feature_conf *f;
    const pd_model_conf *m;

    (void)state;
    pd_diag_print(diag, stderr);
    assert_int_equal(pd_diag_count(diag), 0);
    assert_non_null(conf);
    assert_string_equal(conf->path, GOOD_DIR "/full.yaml");

    assert_string_equal(conf->kafka.brokers, "broker-1:9092");
    assert_int_equal(conf->kafka.n_topics, 2);
    assert_string_equal(conf->kafka.topics[1], "more_events");
    assert_string_equal(conf->kafka.group, "group-default");
    assert_int_equal(conf->kafka.start, PD_START_LATEST);
    assert_int_equal(conf->kafka.poll_batch, 250);
    assert_int_equal(conf->kafka.n_properties, 5);
    assert_string_equal(property(conf, "security.protocol")->value, "SASL_SSL");
    assert_false(property(conf, "security.protocol")->secret);
    assert_false(property(conf, "sasl.username")->secret);
    assert_string_equal(property(conf, "sasl.password")->value, SECRET_VALUE);
    assert_true(property(conf, "sasl.password")->secret);
    assert_int_equal(property(conf, "sasl.password")->pos.line, 12);
    assert_string_equal(property(conf, "ssl.key.password")->value, "kafka-file-secret");
    assert_true(property(conf, "ssl.key.password")->secret);
    assert_string_equal(property(conf, "note")->value, "${NOT_EXPANDED}");
    assert_false(property(conf, "note")->secret);

    assert_string_equal(conf->redis.host, "cache.internal");
    assert_int_equal(conf->redis.port, 6380);
    assert_int_equal(conf->redis.db, 5); /* db: overrides the url's /2 */
    assert_string_equal(conf->redis.username, "app");
    assert_string_equal(conf->redis.password, "redis-file-secret"); /* CRLF stripped */
    assert_string_equal(conf->redis.prefix, "pd:test");
    assert_int_equal(conf->redis.ttl_ms, 2 * 3600000);
    assert_int_equal(conf->redis.flush_interval_ms, 250);
    assert_int_equal(conf->redis.max_pipeline, 64);
    assert_int_equal(conf->redis.timeout_ms, 1500);

    assert_string_equal(conf->events.field_event_id, "id");
    assert_string_equal(conf->events.field_user, "who.id");
    assert_string_equal(conf->events.field_item, "what");
    assert_string_equal(conf->events.field_type, "kind");
    assert_string_equal(conf->events.field_time, "when");
    assert_string_equal(conf->events.field_value, "amount");
    assert_string_equal(conf->events.field_text, "body");
    assert_int_equal(conf->events.n_types, 4);
    assert_int_equal(conf->events.forget_type, 3);
    assert_int_equal(conf->events.max_message_bytes, 1 << 20);
    assert_int_equal(conf->events.max_string_length, 512);
    assert_string_equal(conf->events.dead_letter_topic, "events.dlq");

    assert_int_equal(conf->n_features, 13);
    f = feature(conf, "device");
    assert_int_equal(f->vocabulary, 100);
    f = feature(conf, "price");
    assert_int_equal(f->kind, PD_FEAT_NUMERIC);
    assert_string_equal(f->field, "amount");
    assert_int_equal(f->n_transforms, 2);
    assert_int_equal(f->transforms[0].kind, PD_TF_LOG1P);
    assert_int_equal(f->transforms[1].kind, PD_TF_CLIP);
    assert_double_equal(f->transforms[1].lo, -1.5);
    assert_double_equal(f->transforms[1].hi, 10);
    assert_true(f->standardize);
    assert_null(f->buckets);
    f = feature(conf, "price_band");
    assert_int_equal(f->n_buckets, 3);
    assert_double_equal(f->buckets[2], 100);
    assert_false(f->standardize);
    f = feature(conf, "words");
    assert_int_equal(f->kind, PD_FEAT_TEXT);
    assert_true(f->bigrams);
    assert_int_equal(f->max_tokens, 32);
    assert_int_equal(feature(conf, "since_click")->event_type, 1);
    assert_int_equal(feature(conf, "since_any")->event_type, -1);
    assert_int_equal(feature(conf, "views_1h")->half_life_ms, 3600000);
    assert_int_equal(feature(conf, "spend")->half_life_ms, 0);
    assert_int_equal(feature(conf, "spend")->event_type, 2);
    assert_int_equal(feature(conf, "spend_30d")->half_life_ms, 30 * 86400000LL);
    assert_int_equal(feature(conf, "items")->kind, PD_FEAT_DISTINCT_ITEMS);
    assert_int_equal(feature(conf, "recent")->count, 5);
    assert_int_equal(conf->state.recent_items, 9);

    m = &conf->models[pd_config_model_index(conf, "propensity")];
    assert_double_equal(m->learner.alpha, 0.2);
    assert_double_equal(m->learner.beta, 0.5);
    assert_double_equal(m->learner.l1, 1.5);
    assert_double_equal(m->learner.l2, 2);
    assert_int_equal(m->learner.bits, 18);
    assert_false(m->learner.intercept);
    assert_int_equal(m->learner.weights, PD_WEIGHTS_F16);
    assert_int_equal(m->learner.admission_min_count, 3);
    assert_double_equal(m->learner.max_abs_margin, 20);
    assert_int_equal(m->n_features, 3);
    assert_int_equal(m->features[2], pd_config_feature_index(conf, "pair"));
    assert_int_equal(m->example_on, (1u << 0) | (1u << 1));
    assert_int_equal(m->positive_on, 2);
    assert_int_equal(m->window_ms, 1800000);
    assert_int_equal(m->match, PD_MATCH_USER_ITEM);
    assert_string_equal(m->weight_field, "context.w");
    assert_string_equal(m->output, "purchase_p");
    assert_false(m->publish);
    assert_int_equal(m->metrics_window, 500);
    assert_true(m->gate.enabled);
    assert_double_equal(m->gate.min_auc, 0.55);
    assert_double_equal(m->gate.max_log_loss, 0.7);
    assert_double_equal(m->gate.max_rmse, 0);
    assert_int_equal(m->gate.min_examples, 100);

    m = &conf->models[pd_config_model_index(conf, "value")];
    assert_int_equal(m->learner.type, PD_MODEL_LINEAR);
    assert_int_equal(m->learner.loss, PD_LOSS_HUBER);
    assert_double_equal(m->learner.huber_delta, 2.5);
    assert_int_equal(m->learner.optimizer, PD_OPT_SGD);
    assert_double_equal(m->learner.learning_rate, 0.25);
    assert_double_equal(m->learner.power_t, 0.25);
    assert_double_equal(m->learner.initial_t, 50);
    assert_int_equal(m->example_on, 1u << 2);
    assert_int_equal(m->label, PD_LABEL_VALUE_FROM);
    assert_string_equal(m->value_field, "amount"); /* "value" = events.fields.value */
    assert_string_equal(m->output, "value");
    assert_true(m->gate.enabled); /* present, even empty */
    assert_int_equal(m->gate.min_examples, 1000);

    m = &conf->models[pd_config_model_index(conf, "margin")];
    assert_int_equal(m->learner.type, PD_MODEL_HINGE);
    assert_int_equal(m->learner.loss, PD_LOSS_HINGE);
    assert_int_equal(m->learner.optimizer, PD_OPT_ADAGRAD);
    assert_double_equal(m->learner.learning_rate, 0.1);
    assert_string_equal(m->value_field, "context.label");

    assert_int_equal(conf->state.allowed_lateness_ms, 0);
    assert_int_equal(conf->state.idle_timeout_ms, 2000);
    assert_int_equal(conf->state.max_pending_per_user, 10);
    assert_int_equal(conf->state.max_pending_total, 1000);
    assert_int_equal(conf->state.max_users, 500000);
    assert_int_equal(conf->state.user_idle_ttl_ms, 30 * 86400000LL);
    assert_string_equal(conf->snapshot.dir, "state");
    assert_int_equal(conf->snapshot.interval_ms, 0);
    assert_int_equal(conf->snapshot.keep, 7);
    assert_int_equal(conf->daemon.log_level, PD_LOG_DEBUG);
    assert_string_equal(conf->daemon.control, "tcp://0.0.0.0:5555");
    assert_string_equal(conf->daemon.control_curve_secret_file, "curve.key");
    assert_string_equal(conf->daemon.feed, "ipc:///run/propensityd/feed.sock");
    assert_string_equal(conf->daemon.http, "[::1]:9464");
    assert_int_equal(conf->daemon.ready_max_lag, 0);
    assert_int_equal(conf->daemon.watchdog_ms, 20000);
    pd_config_free(conf);
    pd_diag_free(diag);
}

static void test_env_expansion(void **state)
{
    char *text =
        minimal_with("  topics: events\n",
                     "  topics: [\"a${PD_TEST_BROKERS}b\", \"$${X}\", \"$$\", \"$5\",\n"
                     "           \"${PD_TEST_EMPTY}x\", \"${PD_TEST_EMPTY:-dflt}\",\n"
                     "           \"${PD_TEST_UNSET_A:-}y\", \"${PD_TEST_UNSET_B:-a b}\"]\n");
    pd_config *conf = load_ok(text);

    (void)state;
    assert_int_equal(conf->kafka.n_topics, 8);
    assert_string_equal(conf->kafka.topics[0], "abroker-1:9092b");
    assert_string_equal(conf->kafka.topics[1], "${X}");
    assert_string_equal(conf->kafka.topics[2], "$$");
    assert_string_equal(conf->kafka.topics[3], "$5");
    assert_string_equal(conf->kafka.topics[4], "x");
    assert_string_equal(conf->kafka.topics[5], "dflt"); /* set but empty takes the default */
    assert_string_equal(conf->kafka.topics[6], "y");
    assert_string_equal(conf->kafka.topics[7], "a b");
    pd_config_free(conf);
    free(text);

    /* an optional key expanding to nothing is not set */
    text = minimal_with(NULL, "events2: x\n");
    assert_string_equal(load_first_error(text),
                        "test.yaml:15:1: error: events2: unknown key (did you mean \"events\"?)");
    free(text);
    text = minimal_with("  types: [view, purchase]\n",
                        "  types: [view, purchase]\n  dead_letter_topic: ${PD_TEST_EMPTY}\n");
    conf = load_ok(text);
    assert_null(conf->events.dead_letter_topic);
    pd_config_free(conf);
    free(text);

    /* a required key may not */
    text = minimal_with("  group: g\n", "  group: ${PD_TEST_EMPTY}\n");
    assert_string_equal(load_first_error(text), "test.yaml:4:10: error: kafka.group: must not be "
                                                "empty");
    free(text);
}

static void test_secrets_from_env_and_files(void **state)
{
    char *text = minimal_with(
        NULL, "redis:\n  url: \"${PD_TEST_URL}\"\n  password: ${PD_TEST_UNSET_PW:-}\n");
    pd_config *conf;

    (void)state;
    setenv("PD_TEST_URL", "redis://us%40er:p%3Ass@h:1/1", 1);
    conf = load_ok(text);
    assert_string_equal(conf->redis.username, "us@er");
    assert_string_equal(conf->redis.password, "p:ss");
    assert_string_equal(conf->redis.host, "h");
    assert_int_equal(conf->redis.port, 1);
    assert_int_equal(conf->redis.db, 1);
    /* the url kept in the config can be printed */
    assert_string_equal(conf->redis.url, "redis://us%40er:****@h:1/1");
    pd_config_free(conf);
    free(text);

    /* password: overrides the url's; an empty ${...:-} means none */
    text = minimal_with(NULL, "redis:\n  url: redis://h\n  password: ${PD_TEST_SECRET}\n");
    conf = load_ok(text);
    assert_string_equal(conf->redis.password, SECRET_VALUE);
    pd_config_free(conf);
    free(text);
    text = minimal_with(NULL, "redis:\n  password: ${PD_TEST_EMPTY}\n");
    conf = load_ok(text);
    assert_null(conf->redis.password);
    pd_config_free(conf);
    free(text);

    /* load_string reads relative *_file paths from the working directory */
    text = minimal_with("  group: g\n", "  group: g\n  properties:\n"
                                        "    sasl.password_file: " GOOD_DIR "/secrets/kafka.pass\n"
                                        "    ssl.ca.pem_file: " GOOD_DIR "/secrets/redis.pass\n");
    conf = load_ok(text);
    assert_int_equal(conf->kafka.n_properties, 2);
    assert_string_equal(conf->kafka.properties[0].key, "sasl.password");
    assert_string_equal(conf->kafka.properties[0].value, "kafka-file-secret");
    assert_true(conf->kafka.properties[0].secret);
    assert_string_equal(conf->kafka.properties[1].key, "ssl.ca.pem");
    assert_true(conf->kafka.properties[1].secret);
    pd_config_free(conf);
    free(text);
}

static void test_secret_never_in_messages(void **state)
{
    static const char *const misuses[] = {
        "kafka:\n  brokers: b\n  topics: t\n  group: g\n  poll_batch: ${PD_TEST_SECRET}\n",
        "redis:\n  url: ${PD_TEST_SECRET}\n",
        "redis:\n  url: \"redis://u:${PD_TEST_SECRET}@h:99999\"\n",
        "redis:\n  ttl: ${PD_TEST_SECRET}\n",
        "events:\n  types: [\"${PD_TEST_SECRET}\"]\n",
        "events:\n  types: [view]\n  forget_type: ${PD_TEST_SECRET}\n",
        "daemon:\n  http: ${PD_TEST_SECRET}\n",
        "models:\n  m:\n    type: ${PD_TEST_SECRET}\n",
    };

    (void)state;
    for (size_t i = 0; i < sizeof(misuses) / sizeof(misuses[0]); i++) {
        pd_diag *diag = pd_diag_new();
        pd_config *conf = load_text(misuses[i], diag);

        assert_null(conf);
        assert_true(pd_diag_count(diag) > 0);
        for (size_t j = 0; j < pd_diag_count(diag); j++) {
            if (strstr(pd_diag_message(diag, j), SECRET_VALUE))
                fail_msg("secret in message: %s", pd_diag_message(diag, j));
        }
        pd_diag_free(diag);
    }
}

static void test_redis_urls(void **state)
{
    static const struct {
        const char *url;
        const char *host;
        int port;
        const char *unix_path;
        int db;
    } cases[] = {
        {"redis://cache", "cache", 6379, NULL, 0},
        {"redis://cache:7000/3", "cache", 7000, NULL, 3},
        {"redis://cache/", "cache", 6379, NULL, 0},
        {"redis://[::1]:7001", "::1", 7001, NULL, 0},
        {"redis://app@10.0.0.5", "10.0.0.5", 6379, NULL, 0},
        {"unix:///run/redis/redis.sock", NULL, 0, "/run/redis/redis.sock", 0},
        {"unix:///run/redis.sock?db=4", NULL, 0, "/run/redis.sock", 4},
    };
    static const char *const bad[] = {
        "rediss://cache",  "redis://",     "redis://:6379",  "redis://h:0",
        "redis://h:65536", "redis://h/x",  "redis://h?db=1", "unix://relative.sock",
        "unix:///s?x=1",   "redis://[::1",
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *text, *redis;
        pd_config *conf;

        assert_true(asprintf(&redis, "redis:\n  url: \"%s\"\n", cases[i].url) > 0);
        text = minimal_with(NULL, redis);
        conf = load_ok(text);
        assert_string_equal(conf->redis.url, cases[i].url);
        if (cases[i].host)
            assert_string_equal(conf->redis.host, cases[i].host);
        else
            assert_null(conf->redis.host);
        if (cases[i].unix_path)
            assert_string_equal(conf->redis.unix_path, cases[i].unix_path);
        else
            assert_null(conf->redis.unix_path);
        assert_int_equal(conf->redis.port, cases[i].port);
        assert_int_equal(conf->redis.db, cases[i].db);
        pd_config_free(conf);
        free(text);
        free(redis);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *text, *redis;
        const char *msg;

        assert_true(asprintf(&redis, "redis:\n  url: \"%s\"\n", bad[i]) > 0);
        text = minimal_with(NULL, redis);
        msg = load_first_error(text);
        if (!strstr(msg, "error: redis.url: invalid url: "))
            fail_msg("%s: %s", bad[i], msg);
        free(text);
        free(redis);
    }
}

static void test_parse_duration(void **state)
{
    static const struct {
        const char *text;
        int64_t ms;
    } good[] = {
        {"0", 0},       {"250ms", 250},   {"30s", 30000},
        {"5m", 300000}, {"2h", 7200000},  {"7d", 604800000},
        {"0s", 0},      {"1000ms", 1000}, {"106751991167d", 106751991167LL * 86400000},
    };
    static const char *const bad[] = {"",
                                      "5",
                                      "1.5s",
                                      "-1s",
                                      "+1s",
                                      "1 s",
                                      "1S",
                                      "1sec",
                                      "ms",
                                      "1mss",
                                      "1w",
                                      "99999999999999999999ms",
                                      "106751991168d",
                                      " 1s"};
    int64_t ms;

    (void)state;
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        ms = -1;
        assert_int_equal(pd_parse_duration(good[i].text, &ms), 0);
        assert_int_equal(ms, good[i].ms);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ms = 42;
        if (pd_parse_duration(bad[i], &ms) != -EINVAL)
            fail_msg("\"%s\" parsed", bad[i]);
        assert_int_equal(ms, 42); /* untouched on failure */
    }
    assert_int_equal(pd_parse_duration(NULL, &ms), -EINVAL);
}

static void test_sizes(void **state)
{
    static const struct {
        const char *text;
        int64_t bytes;
    } cases[] = {{"65536", 65536}, {"64KiB", 65536}, {"1MiB", 1 << 20},
                 {"100B", 100},    {"64", 64},       {"16MiB", 16 << 20}};

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *line, *text;
        pd_config *conf;

        assert_true(asprintf(&line, "  types: [view, purchase]\n  max_message_bytes: %s\n",
                             cases[i].text) > 0);
        text = minimal_with("  types: [view, purchase]\n", line);
        conf = load_ok(text);
        assert_int_equal(conf->events.max_message_bytes, cases[i].bytes);
        pd_config_free(conf);
        free(text);
        free(line);
    }
}

static void test_feature_order_and_lookups(void **state)
{
    char *text = minimal_with("  device: { categorical: context.device }\n",
                              "  x: { cross: [device, country] }\n"
                              "  device: { categorical: context.device }\n"
                              "  y: { cross: [country, device, since] }\n"
                              "  country: { categorical: context.country }\n"
                              "  since: { recency: any }\n");
    pd_config *conf = load_ok(text);

    (void)state;
    assert_int_equal(conf->n_features, 5);
    /* parts in file order, then crosses in file order */
    assert_string_equal(conf->features[0].name, "device");
    assert_string_equal(conf->features[1].name, "country");
    assert_string_equal(conf->features[2].name, "since");
    assert_string_equal(conf->features[3].name, "x");
    assert_string_equal(conf->features[4].name, "y");
    assert_int_equal(conf->features[3].n_cross, 2);
    assert_int_equal(conf->features[3].cross[0], 0);
    assert_int_equal(conf->features[3].cross[1], 1);
    assert_int_equal(conf->features[4].n_cross, 3);
    assert_int_equal(conf->features[4].cross[2], 2);
    assert_int_equal(conf->features[4].pos.line, 10);
    for (size_t i = 0; i < conf->n_features; i++)
        for (size_t j = 0; j < conf->features[i].n_cross; j++)
            assert_true(conf->features[i].cross[j] < (int)i);

    assert_int_equal(pd_config_feature_index(conf, "since"), 2);
    assert_int_equal(pd_config_feature_index(conf, "nope"), -1);
    assert_int_equal(pd_config_feature_index(NULL, "x"), -1);
    assert_int_equal(pd_config_feature_index(conf, NULL), -1);
    assert_int_equal(pd_config_model_index(conf, "m"), 0);
    assert_int_equal(pd_config_model_index(conf, "n"), -1);
    assert_int_equal(pd_config_type_index(conf, "purchase"), 1);
    assert_int_equal(pd_config_type_index(conf, "any"), -1);
    assert_int_equal(pd_config_type_index(NULL, "view"), -1);
    pd_config_free(conf);
    free(text);
}

/* ---- fingerprints and reload ---- */

static void test_fingerprints(void **state)
{
    char *reformatted = minimal_with("  topics: events\n", "  # a comment\n  topics: [ events ]\n");
    char *alpha = minimal_with(NULL, "    alpha: 0.5\n");
    char *bits = minimal_with(NULL, "    bits: 22\n");
    char *vocab = minimal_with("  device: { categorical: context.device }\n",
                               "  device: { categorical: context.device, vocabulary: 9 }\n");
    pd_config *base = load_ok(MINIMAL), *same = load_ok(MINIMAL), *c;

    (void)state;
    assert_true(base->fingerprint == same->fingerprint);
    assert_true(pd_config_model_fingerprint(base, 0) == pd_config_model_fingerprint(same, 0));
    assert_int_equal(pd_config_model_fingerprint(base, 1), 0);
    assert_int_equal(pd_config_model_fingerprint(NULL, 0), 0);

    c = load_ok(reformatted); /* positions and layout do not count */
    assert_true(c->fingerprint == base->fingerprint);
    pd_config_free(c);

    c = load_ok(alpha); /* a hyper-parameter: the config changes, the weights still fit */
    assert_true(c->fingerprint != base->fingerprint);
    assert_true(pd_config_model_fingerprint(c, 0) == pd_config_model_fingerprint(base, 0));
    pd_config_free(c);

    c = load_ok(bits);
    assert_true(pd_config_model_fingerprint(c, 0) != pd_config_model_fingerprint(base, 0));
    pd_config_free(c);

    c = load_ok(vocab);
    assert_true(pd_config_model_fingerprint(c, 0) != pd_config_model_fingerprint(base, 0));
    pd_config_free(c);
    free(vocab);

    /* a cross is hashed with its parts: changing a part's definition changes the model */
    const char *two = "kafka:\n  brokers: b\n  topics: t\n  group: g\n"
                      "events:\n  types: [view]\n"
                      "features:\n  dx: { cross: [device, os] }\n"
                      "  device: { categorical: context.device }\n"
                      "  os: { categorical: context.os }\n"
                      "models:\n  m:\n    type: logistic\n    features: [dx]\n"
                      "    example_on: [view]\n    label: { value_from: c }\n";
    const char *two_b = "kafka:\n  brokers: b\n  topics: t\n  group: g\n"
                        "events:\n  types: [view]\n"
                        "features:\n  dx: { cross: [device, os] }\n"
                        "  device: { categorical: context.device }\n"
                        "  os: { categorical: context.platform }\n"
                        "models:\n  m:\n    type: logistic\n    features: [dx]\n"
                        "    example_on: [view]\n    label: { value_from: c }\n";
    pd_config *x = load_ok(two), *y = load_ok(two_b);
    assert_true(pd_config_model_fingerprint(x, 0) != pd_config_model_fingerprint(y, 0));
    pd_config_free(x);
    pd_config_free(y);

    /* secret values stay out of the printed fingerprint */
    char *secret = minimal_with(NULL, "redis:\n  password: ${PD_TEST_SECRET}\n");
    x = load_ok(secret);
    setenv("PD_TEST_SECRET", "another-secret", 1);
    y = load_ok(secret);
    setenv("PD_TEST_SECRET", SECRET_VALUE, 1);
    assert_true(x->fingerprint == y->fingerprint);
    assert_true(x->fingerprint != base->fingerprint);
    pd_config_free(x);
    pd_config_free(y);
    free(secret);

    pd_config_free(base);
    pd_config_free(same);
    free(reformatted);
    free(alpha);
    free(bits);
}

static void check_reload(const pd_config *old, const char *find, const char *replace,
                         const char *expect)
{
    char *text = minimal_with(find, replace), err[256] = "";
    pd_config *c = load_ok(text);
    bool ok = pd_config_reloadable(old, c, err, sizeof(err));

    if (expect) {
        assert_false(ok);
        assert_string_equal(err, expect);
    } else {
        if (!ok)
            fail_msg("refused: %s", err);
    }
    pd_config_free(c);
    free(text);
}

static void test_reloadable(void **state)
{
    pd_config *base = load_ok(MINIMAL);
    char err[128];

    (void)state;
    assert_true(pd_config_reloadable(base, base, err, sizeof(err)));
    assert_false(pd_config_reloadable(NULL, base, err, sizeof(err)));
    check_reload(base, "  topics: events\n", "  topics: [events, more]\n",
                 "kafka.topics changed: restart to apply");
    check_reload(base, "  brokers: localhost:9092\n", "  brokers: other:9092\n",
                 "kafka.brokers changed: restart to apply");
    check_reload(base, "  group: g\n", "  group: h\n", "kafka.group changed: restart to apply");
    check_reload(base, "  group: g\n", "  group: g\n  properties: { client.id: x }\n",
                 "kafka.properties changed: restart to apply");
    check_reload(base, NULL, "redis:\n  url: redis://127.0.0.1:6380/0\n",
                 "redis.url changed: restart to apply");
    check_reload(base, NULL, "redis:\n  db: 3\n", "redis.db changed: restart to apply");
    check_reload(base, NULL, "redis:\n  username: u\n", "redis.username changed: restart to apply");
    check_reload(base, NULL, "redis:\n  password: ${PD_TEST_SECRET}\n",
                 "redis.password changed: restart to apply");
    check_reload(base, NULL, "snapshot:\n  dir: /var/lib/pd\n",
                 "snapshot.dir changed: restart to apply");
    check_reload(base, NULL, "daemon:\n  control: ipc:///run/pd.sock\n",
                 "daemon.control changed: restart to apply");
    check_reload(base, NULL, "daemon:\n  feed: tcp://127.0.0.1:5556\n",
                 "daemon.feed changed: restart to apply");
    check_reload(base, NULL, "daemon:\n  http: 127.0.0.1:9464\n",
                 "daemon.http changed: restart to apply");
    check_reload(base, "  types: [view, purchase]\n", "  types: [purchase, view]\n",
                 "events.types changed: types may only be appended on reload; restart to apply");
    check_reload(base, "  types: [view, purchase]\n", "  types: [view, buy, purchase]\n",
                 "events.types changed: types may only be appended on reload; restart to apply");
    /* what reload is for */
    check_reload(base, "  types: [view, purchase]\n", "  types: [view, purchase, click]\n", NULL);
    check_reload(base, NULL, "    alpha: 0.5\n    bits: 24\n", NULL);
    check_reload(base, NULL, "redis:\n  ttl: 1d\n  flush_interval: 20ms\n", NULL);
    /* keys already written would stay behind under the old names */
    check_reload(base, NULL, "redis:\n  prefix: other\n", "redis.prefix changed: restart to apply");
    check_reload(base, NULL, "redis:\n  key_layout: cluster\n",
                 "redis.key_layout changed: restart to apply");
    check_reload(base, NULL, "daemon:\n  log_level: debug\n", NULL);
    check_reload(base, "  group: g\n", "  group: g\n  start: latest\n  poll_batch: 5\n", NULL);
    pd_config_free(base);
}

/* ---- files ---- */

static void assert_loads_cleanly(const char *path)
{
    pd_diag *diag = pd_diag_new();
    pd_config *conf = pd_config_load(path, diag);

    for (size_t i = 0; i < pd_diag_count(diag); i++)
        print_message("%s\n", pd_diag_message(diag, i));
    if (!conf || pd_diag_count(diag))
        fail_msg("%s does not load cleanly", path);
    assert_true(conf->n_models > 0);
    pd_config_free(conf);
    pd_diag_free(diag);
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted file names in dir ending in suffix (NULL-terminated, caller frees). */
static char **list_dir(const char *dir, const char *suffix, size_t *ret_n)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char **names = NULL;
    size_t n = 0;

    if (!d)
        fail_msg("cannot open %s: %s", dir, strerror(errno));
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name), sl = strlen(suffix);

        if (len <= sl || strcmp(e->d_name + len - sl, suffix))
            continue;
        names = realloc(names, (n + 2) * sizeof(*names));
        assert_non_null(names);
        names[n++] = strdup(e->d_name);
        names[n] = NULL;
    }
    closedir(d);
    if (n)
        qsort(names, n, sizeof(*names), compare_names);
    *ret_n = n;
    return names;
}

static void free_names(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

static void test_examples_load(void **state)
{
    size_t n;
    char **names = list_dir(EXAMPLES_DIR, ".yaml", &n);

    (void)state;
    assert_loads_cleanly(EXAMPLE);
    assert_true(n >= 2);
    for (size_t i = 0; i < n; i++) {
        char path[512];

        snprintf(path, sizeof(path), "%s/%s", EXAMPLES_DIR, names[i]);
        assert_loads_cleanly(path);
    }
    free_names(names, n);
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "r");
    char *buf = NULL;
    size_t len = 0;

    if (!f)
        fail_msg("cannot open %s: %s", path, strerror(errno));
    assert_int_equal(getdelim(&buf, &len, '\0', f) >= 0 || feof(f), 1);
    fclose(f);
    return buf ? buf : strdup("");
}

/* Replaces every "{file}" in line with path. */
static char *expand_placeholder(const char *line, const char *path)
{
    size_t cap = strlen(line) * 2 + strlen(path) * 4 + 1, o = 0;
    char *out = malloc(cap);

    assert_non_null(out);
    for (const char *p = line; *p;) {
        if (!strncmp(p, "{file}", 6)) {
            if (o + strlen(path) + 1 > cap) {
                cap = cap * 2 + strlen(path);
                out = realloc(out, cap);
                assert_non_null(out);
            }
            memcpy(out + o, path, strlen(path));
            o += strlen(path);
            p += 6;
            continue;
        }
        if (o + 2 > cap) {
            cap *= 2;
            out = realloc(out, cap);
            assert_non_null(out);
        }
        out[o++] = *p++;
    }
    out[o] = '\0';
    return out;
}

static bool check_bad_case(const char *name)
{
    char path[512], expected_path[512];
    pd_diag *diag = pd_diag_new();
    pd_config *conf;
    char *expected, *line, *save = NULL;
    size_t i = 0;
    bool ok = true;

    snprintf(path, sizeof(path), "%s/%s", BAD_DIR, name);
    snprintf(expected_path, sizeof(expected_path), "%.*s.expected", (int)(strlen(path) - 5), path);
    expected = read_file(expected_path);
    conf = pd_config_load(path, diag);
    if (conf) {
        print_message("%s: loaded, expected errors\n", path);
        ok = false;
    }
    for (line = strtok_r(expected, "\n", &save); line; line = strtok_r(NULL, "\n", &save), i++) {
        char *want = expand_placeholder(line, path);
        const char *got = pd_diag_message(diag, i);

        if (!got || strcmp(got, want)) {
            print_message("%s: message %zu\n  expected: %s\n  got:      %s\n", path, i + 1, want,
                          got ? got : "(none)");
            ok = false;
        }
        free(want);
    }
    if (i != pd_diag_count(diag)) {
        print_message("%s: %zu messages expected, %zu reported:\n", path, i, pd_diag_count(diag));
        ok = false;
    }
    if (!ok)
        pd_diag_print(diag, stderr);
    if (i == 0) {
        print_message("%s: the .expected file is empty\n", expected_path);
        ok = false;
    }
    pd_config_free(conf);
    pd_diag_free(diag);
    free(expected);
    return ok;
}

static void test_bad_corpus(void **state)
{
    size_t n, n_expected, failed = 0;
    char **names = list_dir(BAD_DIR, ".yaml", &n);
    char **expected = list_dir(BAD_DIR, ".expected", &n_expected);

    (void)state;
    assert_true(n >= 25);
    /* every case has both halves */
    assert_int_equal(n, n_expected);
    for (size_t i = 0; i < n; i++) {
        size_t stem = strlen(names[i]) - 5;

        if (strncmp(names[i], expected[i], stem) || strcmp(expected[i] + stem, ".expected"))
            fail_msg("%s and %s do not pair up", names[i], expected[i]);
        if (!check_bad_case(names[i]))
            failed++;
    }
    free_names(names, n);
    free_names(expected, n_expected);
    if (failed)
        fail_msg("%zu of the bad configs did not give the expected messages", failed);
}

/* ---- diagnostics and edges ---- */

static void test_diag(void **state)
{
    pd_diag *diag = pd_diag_new();
    pd_config *conf;
    char *out = NULL;
    size_t len = 0;
    FILE *f;

    (void)state;
    assert_int_equal(pd_diag_count(NULL), 0);
    assert_null(pd_diag_message(NULL, 0));
    pd_diag_free(NULL);
    pd_config_free(NULL);

    conf = pd_config_load(BAD_DIR "/no-such-file.yaml", diag);
    assert_null(conf);
    assert_int_equal(pd_diag_count(diag), 1);
    assert_string_equal(pd_diag_message(diag, 0), BAD_DIR
                        "/no-such-file.yaml: error: cannot read: no such file or directory");
    conf = pd_config_load(BAD_DIR, diag);
    assert_null(conf);
    assert_int_equal(pd_diag_count(diag), 2);
    assert_string_equal(pd_diag_message(diag, 1), BAD_DIR ": error: cannot read: is a directory");
    assert_null(pd_diag_message(diag, 2));

    /* a second load appends; each load's messages are in file order */
    conf = pd_config_load_string("inline", "kafka: [\n", 9, diag);
    assert_null(conf);
    assert_int_equal(pd_diag_count(diag), 3);
    assert_string_equal(pd_diag_message(diag, 2),
                        "inline:2:1: error: syntax: did not find expected node content");

    f = open_memstream(&out, &len);
    assert_non_null(f);
    pd_diag_print(diag, f);
    fclose(f);
    assert_string_equal(out,
                        BAD_DIR "/no-such-file.yaml: error: cannot read: no such file or "
                                "directory\n" BAD_DIR ": error: cannot read: is a directory\n"
                                "inline:2:1: error: syntax: did not find expected node content\n");
    free(out);
    pd_diag_free(diag);

    /* a NULL diag still fails the load, it just cannot say why */
    assert_null(pd_config_load_string("x", "kafka: 1\n", 9, NULL));
}

static void test_aliases_are_shared(void **state)
{
    /* a recursive alias is legal YAML; it must neither hang nor crash the loader */
    const char *text = MINIMAL "watermark: &w\n  allowed_lateness: 5s\nusers: *w\n"
                               "snapshot: &s [*s]\n";
    pd_diag *diag = pd_diag_new();
    pd_config *conf = load_text(text, diag);

    (void)state;
    assert_null(conf);
    assert_true(pd_diag_count(diag) >= 2);
    assert_string_equal(pd_diag_message(diag, 0),
                        "test.yaml:16:3: error: users.allowed_lateness: unknown key "
                        "(expected one of: max, idle_ttl)");
    pd_diag_free(diag);
}

/* MINIMAL (one model, m) with n more models x1..xn appended to models:. */
static char *with_models(size_t n)
{
    char *models = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&models, &len);
    char *text;

    assert_non_null(f);
    for (size_t i = 1; i <= n; i++)
        fprintf(f,
                "  x%zu: { type: logistic, features: [device], example_on: [view], "
                "label: { positive_on: purchase, within: 30m } }\n",
                i);
    fclose(f);
    text = minimal_with(NULL, models);
    free(models);
    return text;
}

static void test_model_limit(void **state)
{
    char *text = with_models(PD_MAX_MODELS - 1);
    pd_config *conf = load_ok(text);
    pd_diag *diag;

    (void)state;
    assert_int_equal(conf->n_models, PD_MAX_MODELS);
    for (size_t i = 0; i < conf->n_models; i++)
        assert_int_equal(conf->models[i].kind, PD_MODEL_KIND_GLM);
    pd_config_free(conf);
    free(text);

    /* the 65th model is refused at its name, MINIMAL being 14 lines; once, however many follow */
    text = with_models(PD_MAX_MODELS + 5);
    diag = pd_diag_new();
    assert_null(load_text(text, diag));
    assert_int_equal(pd_diag_count(diag), 1);
    assert_string_equal(pd_diag_message(diag, 0),
                        "test.yaml:78:3: error: models.x64: too many models: "
                        "at most 64 are allowed");
    pd_diag_free(diag);
    free(text);
}

/* MINIMAL with a daemon: section of one log_level. */
static char *with_log_level(const char *name)
{
    char *daemon, *text;

    assert_true(asprintf(&daemon, "daemon:\n  log_level: %s\n", name) > 0);
    text = minimal_with(NULL, daemon);
    free(daemon);
    return text;
}

static void test_log_level(void **state)
{
    static const pd_log_level levels[] = {PD_LOG_DEBUG, PD_LOG_INFO, PD_LOG_WARNING, PD_LOG_ERROR};
    static const char *const names[] = {"debug", "info", "warning", "error"};
    char *text;
    pd_config *conf;

    (void)state;
    conf = load_ok(MINIMAL);
    assert_int_equal(conf->daemon.log_level, PD_LOG_INFO);
    pd_config_free(conf);
    for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++) {
        text = with_log_level(names[i]);
        conf = load_ok(text);
        assert_int_equal(conf->daemon.log_level, levels[i]);
        pd_config_free(conf);
        free(text);
    }
    /* the language takes the names the log lines carry, not the control plane's "warn" */
    text = with_log_level("warn");
    assert_string_equal(load_first_error(text),
                        "test.yaml:16:14: error: daemon.log_level: unknown value \"warn\" "
                        "(did you mean \"warning\"?)");
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_full),
        cmocka_unit_test(test_env_expansion),
        cmocka_unit_test(test_secrets_from_env_and_files),
        cmocka_unit_test(test_secret_never_in_messages),
        cmocka_unit_test(test_redis_urls),
        cmocka_unit_test(test_parse_duration),
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_feature_order_and_lookups),
        cmocka_unit_test(test_fingerprints),
        cmocka_unit_test(test_reloadable),
        cmocka_unit_test(test_examples_load),
        cmocka_unit_test(test_bad_corpus),
        cmocka_unit_test(test_diag),
        cmocka_unit_test(test_aliases_are_shared),
        cmocka_unit_test(test_model_limit),
        cmocka_unit_test(test_log_level),
    };

    return cmocka_run_group_tests(tests, setup_env, NULL);
}

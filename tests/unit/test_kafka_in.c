/* Tests for pipeline/kafka_in.c against librdkafka's in-process mock cluster: a consumer joins
 * a group and is assigned the topic's partitions; an assignment librdkafka refuses (here a
 * duplicate partition the assigning hook slips in) is reported through the log hook, with the
 * eager and with the cooperative protocol, and leaks nothing (the sanitizer build checks). The
 * mock delays the first join of a group by 3 s, so each case takes about that long. The
 * consumer's prefetch default is bounded by bytes, and a property in the config overrides it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "common/clock.h"
#include "pipeline/kafka_in.h"

#define TOPIC      "events"
#define PARTITIONS 3
#define JOIN_MS    20000

typedef struct fixture {
    rd_kafka_t *mock_rk;
    rd_kafka_mock_cluster_t *mock;
    char brokers[256];
} fixture;

/* What the hooks saw. */
typedef struct seen {
    bool duplicate; /* the assigning hook adds the first partition again */
    int assigning;
    int rebalance_errors;
    char last_error[512];
} seen;

static int setup(void **state)
{
    static fixture f;
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "log_level", "3", err, sizeof err) != RD_KAFKA_CONF_OK)
        return -1;
    f.mock_rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
    if (!f.mock_rk)
        return -1;
    f.mock = rd_kafka_mock_cluster_new(f.mock_rk, 1);
    if (!f.mock || rd_kafka_mock_topic_create(f.mock, TOPIC, PARTITIONS, 1))
        return -1;
    snprintf(f.brokers, sizeof f.brokers, "%s", rd_kafka_mock_cluster_bootstraps(f.mock));
    *state = &f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    rd_kafka_mock_cluster_destroy(f->mock);
    rd_kafka_destroy(f->mock_rk);
    return 0;
}

static void on_log(void *ctx, int level, const char *facility, const char *message)
{
    seen *s = ctx;
    if (level <= 3 && strcmp(facility, "rebalance") == 0) {
        s->rebalance_errors++;
        snprintf(s->last_error, sizeof s->last_error, "%s", message);
    }
}

static void on_assigning(void *ctx, pd_kafka_in *in, rd_kafka_topic_partition_list_t *parts)
{
    (void)in;
    seen *s = ctx;
    s->assigning++;
    if (s->duplicate && parts->cnt > 0) {
        char topic[64];
        snprintf(topic, sizeof topic, "%s", parts->elems[0].topic);
        rd_kafka_topic_partition_list_add(parts, topic, parts->elems[0].partition);
    }
}

/* Joins group with the given assignment strategy and polls until the first assignment was
 * handled; returns the consumer's stats then. */
static void join(fixture *f, const char *group, const char *strategy, seen *s,
                 pd_kafka_stats *ret_stats)
{
    char *topics[] = {TOPIC};
    /* a short session bounds how long leaving a group whose assignment was refused may
     * wait (the default is 45 s; a run under load was cut off by the test's timeout) */
    pd_kv props[] = {
        {.key = "partition.assignment.strategy", .value = (char *)strategy},
        {.key = "log_level", .value = "3"},
        {.key = "session.timeout.ms", .value = "6000"},
        {.key = "heartbeat.interval.ms", .value = "500"},
    };
    pd_kafka_conf conf = {.brokers = f->brokers,
                          .topics = topics,
                          .n_topics = 1,
                          .group = (char *)group,
                          .start = PD_START_EARLIEST,
                          .properties = props,
                          .n_properties = sizeof props / sizeof props[0]};
    pd_kafka_hooks hooks = {.ctx = s, .assigning = on_assigning, .log = on_log};
    char err[512];
    pd_kafka_in *in = pd_kafka_in_new(&conf, &hooks, err, sizeof err);
    assert_non_null(in);
    rd_kafka_message_t *msgs[16];
    for (int64_t until = pd_clock_mono_ms() + JOIN_MS;
         s->assigning == 0 && pd_clock_mono_ms() < until;) {
        size_t n = pd_kafka_in_poll(in, msgs, 16, 100);
        for (size_t i = 0; i < n; i++)
            rd_kafka_message_destroy(msgs[i]);
    }
    pd_kafka_in_get_stats(in, ret_stats);
    pd_kafka_in_free(in);
}

static void test_assignment_taken(void **state)
{
    seen s = {0};
    pd_kafka_stats ks;
    join(*state, "g-eager-ok", "range", &s, &ks);
    assert_int_equal(s.assigning, 1);
    assert_int_equal(s.rebalance_errors, 0);
    assert_int_equal(ks.assigned, PARTITIONS);
}

/* The hook's duplicate makes librdkafka refuse the assignment: it is logged with why (reason;
 * the eager call only returns an error code), and nothing is consumed. */
static void check_refused(fixture *f, const char *group, const char *strategy, const char *reason)
{
    seen s = {.duplicate = true};
    pd_kafka_stats ks;
    join(f, group, strategy, &s, &ks);
    assert_int_equal(s.assigning, 1);
    assert_int_equal(s.rebalance_errors, 1);
    assert_non_null(strstr(s.last_error, "could not assign"));
    assert_non_null(strstr(s.last_error, reason));
    assert_int_equal(ks.assigned, 0);
}

static void test_refused_assignment_reported(void **state)
{
    check_refused(*state, "g-eager-dup", "range", "Invalid argument");
}

static void test_refused_incremental_assignment_reported(void **state)
{
    check_refused(*state, "g-coop-dup", "cooperative-sticky", "Duplicate");
}

/* The value of `name` in a built configuration, or "" */
static void conf_value(const pd_kafka_conf *conf, const char *name, char *out, size_t len)
{
    char err[512];
    rd_kafka_conf_t *kc = pd_kafka_conf_build(conf, true, err, sizeof err);
    assert_non_null(kc);
    out[0] = '\0';
    size_t n = len;
    assert_int_equal(rd_kafka_conf_get(kc, name, out, &n), RD_KAFKA_CONF_OK);
    rd_kafka_conf_destroy(kc);
}

static void test_prefetch_default_and_override(void **state)
{
    fixture *f = *state;
    char value[64];
    pd_kafka_conf conf = {.brokers = f->brokers};
    conf_value(&conf, "queued.max.messages.kbytes", value, sizeof value);
    assert_string_equal(value, "32768");
    pd_kv props[] = {{.key = "queued.max.messages.kbytes", .value = "262144"}};
    conf.properties = props;
    conf.n_properties = 1;
    conf_value(&conf, "queued.max.messages.kbytes", value, sizeof value);
    assert_string_equal(value, "262144");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_assignment_taken),
        cmocka_unit_test(test_refused_assignment_reported),
        cmocka_unit_test(test_refused_incremental_assignment_reported),
        cmocka_unit_test(test_prefetch_default_and_override),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

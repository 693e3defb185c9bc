/* The engine end to end on hand-made events: label timing through the per-source watermark,
 * immediate value labels, scores on every event, reload keeping weights, forget, snapshots. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config/config.h"
#include "models/snapshot.h"
#include "pipeline/engine.h"

static const char *const base_yaml = "kafka: {brokers: b, topics: [t], group: g}\n"
                                     "events: {types: [view, click, purchase]}\n"
                                     "watermark: {allowed_lateness: 1m}\n"
                                     "features:\n"
                                     "  device: {categorical: context.device}\n"
                                     "  views: {decayed_count: view, half_life: 1h}\n"
                                     "models:\n"
                                     "  buy:\n"
                                     "    type: logistic\n"
                                     "    features: [device, views]\n"
                                     "    example_on: [view]\n"
                                     "    label: {positive_on: purchase, within: 30m}\n"
                                     "  spend:\n"
                                     "    type: linear\n"
                                     "    optimizer: adagrad\n"
                                     "    features: [device]\n"
                                     "    example_on: [purchase]\n"
                                     "    label: {value_from: value}\n";

static pd_config *load(const char *yaml)
{
    pd_diag *diag = pd_diag_new();
    pd_config *conf = pd_config_load_string("test.yaml", yaml, strlen(yaml), diag);
    if (!conf)
        pd_diag_print(diag, stderr);
    pd_diag_free(diag);
    assert_non_null(conf);
    return conf;
}

static pd_engine *engine_from(const pd_config *conf)
{
    char err[256];
    pd_engine *eng = pd_engine_new(conf, err, sizeof err);
    if (!eng)
        fprintf(stderr, "%s\n", err);
    assert_non_null(eng);
    return eng;
}

/* Feeds one event written as JSON, from a partition of that shard; returns the result. */
static pd_engine_result feed_shard(pd_engine *eng, uint32_t source, uint32_t shard,
                                   const char *json)
{
    pd_event ev;
    char detail[128];
    assert_int_equal(pd_engine_decode(eng, json, strlen(json), 0, &ev, detail, sizeof detail),
                     PD_DECODE_OK);
    ev.source = source;
    ev.shard = shard;
    pd_engine_result res;
    assert_int_equal(pd_engine_process(eng, &ev, &res), 0);
    return res;
}

static pd_engine_result feed(pd_engine *eng, uint32_t source, const char *json)
{
    return feed_shard(eng, source, 0, json);
}

static void event(char *buf, size_t len, const char *type, const char *user, long long ts_s,
                  const char *extra)
{
    snprintf(buf, len,
             "{\"type\":\"%s\",\"user_id\":\"%s\",\"ts\":%lld000,"
             "\"context\":{\"device\":\"mobile\"}%s}",
             type, user, ts_s, extra ? extra : "");
}

static uint64_t examples(pd_engine *eng, size_t model)
{
    pd_model_info mi;
    pd_engine_model_info(eng, model, &mi);
    return mi.examples;
}

/* Source 1 runs an hour ahead while source 0 still has events to deliver: the watermark stays
 * with source 0, so the purchase that source 0 delivers late still labels the view positive. */
static void test_lagging_source_holds_watermark(void **state)
{
    (void)state;
    pd_config *conf = load(base_yaml);
    pd_engine *eng = engine_from(conf);
    char buf[256];
    pd_engine_source_idle(eng, 0, false);
    pd_engine_source_idle(eng, 1, false);
    event(buf, sizeof buf, "view", "a", 1000, NULL);
    feed(eng, 0, buf);
    event(buf, sizeof buf, "view", "b", 1000 + 3600, NULL); /* source 1 is an hour ahead */
    feed(eng, 1, buf);
    pd_engine_stats st;
    pd_engine_get_stats(eng, &st);
    assert_int_equal(st.watermark_ms, (1000 - 60) * 1000LL); /* source 0's time - lateness */
    assert_int_equal(examples(eng, 0), 0);
    event(buf, sizeof buf, "purchase", "a", 1000 + 600, ",\"price\":10");
    feed(eng, 0, buf);
    pd_engine_get_stats(eng, &st);
    assert_int_equal(st.labels.positives, 1);
    assert_int_equal(st.labels.negatives, 0);

    /* With one global watermark (a single source) the same order labels it negative: the
     * view's window ended an hour before the purchase arrived. */
    pd_engine *one = engine_from(conf);
    event(buf, sizeof buf, "view", "a", 1000, NULL);
    feed(one, 0, buf);
    event(buf, sizeof buf, "view", "b", 1000 + 3600, NULL);
    feed(one, 0, buf);
    event(buf, sizeof buf, "purchase", "a", 1000 + 600, ",\"price\":10");
    feed(one, 0, buf);
    pd_engine_get_stats(one, &st);
    assert_int_equal(st.labels.negatives, 1);
    assert_int_equal(st.labels.positives, 0);
    pd_engine_free(one);
    pd_engine_free(eng);
    pd_config_free(conf);
}

/* An idle (caught-up) source does not hold the watermark; a declared source without events
 * blocks it; the watermark never moves back. */
static void test_idle_and_new_sources(void **state)
{
    (void)state;
    pd_config *conf = load(base_yaml);
    pd_engine *eng = engine_from(conf);
    char buf[256];
    pd_engine_stats st;
    event(buf, sizeof buf, "view", "a", 1000, NULL);
    feed(eng, 0, buf);
    pd_engine_source_idle(eng, 1, false); /* assigned, events waiting, none seen yet */
    event(buf, sizeof buf, "view", "a", 5000, NULL);
    feed(eng, 0, buf);
    pd_engine_get_stats(eng, &st);
    assert_int_equal(st.watermark_ms, (1000 - 60) * 1000LL); /* blocked since source 1 came */
    pd_engine_source_idle(eng, 1, true);                     /* it turned out empty */
    pd_engine_get_stats(eng, &st);
    assert_int_equal(st.watermark_ms, (5000 - 60) * 1000LL);
    /* the first view's window (1000 + 30 min) is now far behind: labelled 0 */
    assert_int_equal(st.labels.negatives, 1);
    event(buf, sizeof buf, "view", "c", 2000, NULL); /* source 1 wakes with old events */
    feed(eng, 1, buf);
    pd_engine_get_stats(eng, &st);
    assert_int_equal(st.watermark_ms, (5000 - 60) * 1000LL); /* never backwards */
    assert_int_equal(st.labels.late, 1);
    pd_engine_free(eng);
    pd_config_free(conf);
}

/* Value labels are learned at once; every event is scored by every model. */
static void test_value_labels_and_scores(void **state)
{
    (void)state;
    pd_config *conf = load(base_yaml);
    pd_engine *eng = engine_from(conf);
    char buf[256];
    event(buf, sizeof buf, "purchase", "a", 1000, ",\"price\":42");
    pd_engine_result res = feed(eng, 0, buf);
    assert_int_equal(res.n_scores, 2);
    assert_int_equal(examples(eng, 1), 1);
    pd_model_info mi;
    pd_engine_model_info(eng, 1, &mi);
    assert_int_equal(mi.examples, 1);
    assert_int_equal(mi.output_kind, PD_OUTPUT_VALUE);
    assert_string_equal(mi.kind, "glm");
    /* the first prediction is made before learning: 0, so the absolute error is 42 */
    assert_true(fabs(pd_model_info_figure(&mi, "mae") - 42.0) < 1e-9);
    assert_true(isnan(pd_model_info_figure(&mi, "log_loss"))); /* no such figure */
    event(buf, sizeof buf, "purchase", "a", 1001, ""); /* no price: no example */
    feed(eng, 0, buf);
    assert_int_equal(examples(eng, 1), 1);
    pd_engine_free(eng);
    pd_config_free(conf);
}

/* Reload: a new hyper-parameter keeps the weights (same prediction right after), a changed
 * feature list starts the model fresh, and forget removes the user. */
static void test_reload_and_forget(void **state)
{
    (void)state;
    pd_config *conf = load(base_yaml);
    pd_engine *eng = engine_from(conf);
    char buf[256];
    for (int i = 0; i < 200; i++) {
        event(buf, sizeof buf, i % 3 ? "view" : "purchase", i % 2 ? "a" : "b", 1000 + i * 60,
              ",\"price\":5");
        feed(eng, 0, buf);
    }
    pd_score before[4], after[4];
    assert_int_equal(pd_engine_score_user(eng, "a", 1, before, 4), 2);
    uint64_t ex = examples(eng, 0);

    char *yaml = strdup(base_yaml);
    char *alpha = strstr(yaml, "    type: logistic\n");
    assert_non_null(alpha);
    char *changed = NULL;
    assert_true(asprintf(&changed, "%.*s    type: logistic\n    alpha: 0.5\n%s",
                         (int)(alpha - yaml), yaml, alpha + strlen("    type: logistic\n")) > 0);
    pd_config *conf2 = load(changed);
    char fresh[256], err[256];
    assert_int_equal(pd_engine_reconfigure(eng, conf2, fresh, sizeof fresh, err, sizeof err), 0);
    assert_string_equal(fresh, "");
    assert_int_equal(pd_engine_score_user(eng, "a", 1, after, 4), 2);
    assert_true(fabs(before[0].value - after[0].value) < 1e-6); /* FTRL re-expressed, same w */
    assert_int_equal(examples(eng, 0), ex);
    assert_int_equal(pd_engine_generation(eng), 2);

    /* the spend model loses its only feature's companion: a new feature list */
    char *p = strstr(changed, "    features: [device]\n    example_on: [purchase]");
    assert_non_null(p);
    memcpy(p, "    features: [views] ", strlen("    features: [views] "));
    pd_config *conf3 = load(changed);
    assert_int_equal(pd_engine_reconfigure(eng, conf3, fresh, sizeof fresh, err, sizeof err), 0);
    assert_non_null(strstr(fresh, "\"spend\""));
    assert_int_equal(examples(eng, 1), 0);
    assert_int_equal(examples(eng, 0), ex);

    assert_true(pd_engine_forget(eng, "a", 1));
    assert_int_equal(pd_engine_score_user(eng, "a", 1, after, 4), -ENOENT);
    assert_false(pd_engine_forget(eng, "a", 1));
    pd_engine_free(eng);
    pd_config_free(conf3);
    pd_config_free(conf2);
    pd_config_free(conf);
    free(changed);
    free(yaml);
}

/* A snapshot restores identical predictions, counters and pending examples. */
static void test_snapshot_round_trip(void **state)
{
    (void)state;
    pd_config *conf = load(base_yaml);
    pd_engine *eng = engine_from(conf);
    char buf[256], err[512], fresh[256], path[1024];
    for (int i = 0; i < 300; i++) {
        event(buf, sizeof buf, i % 4 ? "view" : "purchase", i % 3 ? "a" : "b", 1000 + i * 120,
              ",\"price\":7");
        feed(eng, 0, buf);
    }
    char dir[] = "/tmp/pd-engine-snap-XXXXXX";
    assert_non_null(mkdtemp(dir));
    pd_snapshot_writer *w = pd_snapshot_writer_new(dir, conf->fingerprint, 1, err, sizeof err);
    assert_non_null(w);
    assert_int_equal(pd_engine_save(eng, w, err, sizeof err), 0);
    assert_int_equal(pd_snapshot_writer_commit(w, 2, path, sizeof path, err, sizeof err), 0);

    pd_snapshot *s = pd_snapshot_open(path, err, sizeof err);
    assert_non_null(s);
    pd_engine *copy = engine_from(conf);
    assert_int_equal(pd_engine_load(copy, s, fresh, sizeof fresh, err, sizeof err), 0);
    assert_string_equal(fresh, "");
    pd_snapshot_close(s);

    pd_engine_stats a, b;
    pd_engine_get_stats(eng, &a);
    pd_engine_get_stats(copy, &b);
    assert_int_equal(a.events, b.events);
    assert_int_equal(a.users, b.users);
    assert_int_equal(a.labels.pending, b.labels.pending);
    assert_int_equal(a.watermark_ms, b.watermark_ms);
    for (size_t m = 0; m < 2; m++)
        assert_int_equal(examples(eng, m), examples(copy, m));
    /* the same next events give bit-identical scores in both */
    for (int i = 300; i < 340; i++) {
        event(buf, sizeof buf, i % 4 ? "view" : "purchase", i % 3 ? "a" : "b", 1000 + i * 120,
              ",\"price\":7");
        pd_engine_result r1 = feed(eng, 0, buf);
        double s1[2] = {r1.scores[0].value, r1.scores[1].value};
        pd_engine_result r2 = feed(copy, 0, buf);
        double s2[2] = {r2.scores[0].value, r2.scores[1].value};
        assert_int_equal(r1.n_scores, r2.n_scores);
        assert_memory_equal(s1, s2, sizeof s1);
    }
    pd_engine_get_stats(eng, &a);
    pd_engine_get_stats(copy, &b);
    assert_int_equal(a.labels.positives, b.labels.positives);
    assert_int_equal(a.labels.negatives, b.labels.negatives);
    unlink(path);
    rmdir(dir);
    pd_engine_free(copy);
    pd_engine_free(eng);
    pd_config_free(conf);
}

/* Examples lost to the pending bounds are counted against their model, and the counts
 * survive a snapshot (a restart must not make a loss disappear). */
static void test_evictions_counted_and_kept(void **state)
{
    (void)state;
    pd_config *conf = load("kafka: {brokers: b, topics: [t], group: g}\n"
                           "events: {types: [view, click, purchase]}\n"
                           "watermark: {max_pending_per_user: 4}\n"
                           "features: {device: {categorical: context.device}}\n"
                           "models:\n"
                           "  buy: {type: logistic, features: [device], example_on: [view],\n"
                           "        label: {positive_on: purchase, within: 30m}}\n"
                           "  clk: {type: logistic, features: [device], example_on: [click],\n"
                           "        label: {positive_on: purchase, within: 30m}}\n");
    pd_engine *eng = engine_from(conf);
    char buf[256], err[512], fresh[256], path[1024];
    for (int i = 0; i < 10; i++) {
        event(buf, sizeof buf, "view", "a", 1000 + i, NULL);
        feed(eng, 0, buf);
    }
    event(buf, sizeof buf, "click", "a", 1100, NULL); /* evicts a view, not a click */
    feed(eng, 0, buf);
    pd_model_info mi;
    pd_engine_model_info(eng, 0, &mi);
    assert_int_equal(mi.evicted_user, 7);
    assert_int_equal(mi.evicted_total, 0);
    pd_engine_model_info(eng, 1, &mi);
    assert_int_equal(mi.evicted_user, 0);

    char dir[] = "/tmp/pd-engine-evict-XXXXXX";
    assert_non_null(mkdtemp(dir));
    pd_snapshot_writer *w = pd_snapshot_writer_new(dir, conf->fingerprint, 1, err, sizeof err);
    assert_non_null(w);
    assert_int_equal(pd_engine_save(eng, w, err, sizeof err), 0);
    assert_int_equal(pd_snapshot_writer_commit(w, 2, path, sizeof path, err, sizeof err), 0);
    pd_snapshot *s = pd_snapshot_open(path, err, sizeof err);
    assert_non_null(s);
    pd_engine *copy = engine_from(conf);
    assert_int_equal(pd_engine_load(copy, s, fresh, sizeof fresh, err, sizeof err), 0);
    pd_snapshot_close(s);
    pd_engine_model_info(copy, 0, &mi);
    assert_int_equal(mi.evicted_user, 7);
    unlink(path);
    rmdir(dir);
    pd_engine_free(copy);
    pd_engine_free(eng);
    pd_config_free(conf);
}

/* Snapshots written by earlier builds (tests/unit/fixtures/README.md): the current format's
 * fixture restores with every counter and waiting example; format 1 (raw memory sections) is
 * refused with a message that says what to do, and the search for an older snapshot stops at
 * it instead of starting fresh. */
static const char *const fixture_yaml = "kafka: {brokers: b, topics: [t], group: g}\n"
                                        "events: {types: [view, click, purchase]}\n"
                                        "features:\n"
                                        "  device: {categorical: context.device}\n"
                                        "  views: {decayed_count: view, half_life: 1h}\n"
                                        "models:\n"
                                        "  buy:\n"
                                        "    type: logistic\n"
                                        "    optimizer: ftrl\n"
                                        "    bits: 6\n"
                                        "    features: [device, views]\n"
                                        "    example_on: [view]\n"
                                        "    label: {positive_on: purchase, within: 5m}\n";

static void test_snapshot_fixtures(void **state)
{
    (void)state;
    char err[1024], fresh[256];
    pd_config *conf = load(fixture_yaml);
    pd_engine *eng = engine_from(conf);
    pd_snapshot *s = pd_snapshot_open("fixtures/snapshot-v2.pds", err, sizeof err);
    if (!s)
        fail_msg("%s", err);
    if (pd_engine_load(eng, s, fresh, sizeof fresh, err, sizeof err) < 0)
        fail_msg("%s", err);
    pd_snapshot_close(s);
    assert_string_equal(fresh, "");
    pd_engine_stats st;
    pd_engine_get_stats(eng, &st);
    assert_int_equal(st.events, 40);
    assert_int_equal(st.users, 3);
    assert_int_equal(st.labels.pending, 5);
    pd_model_info mi;
    pd_engine_model_info(eng, 0, &mi);
    assert_int_equal(mi.examples, 31);
    assert_int_equal(mi.positives, 4);
    /* the waiting examples come back with their users: a late purchase of u1 labels its
     * views of the last five minutes, the rest go negative as event time moves on */
    char buf[256];
    event(buf, sizeof buf, "purchase", "u1", 1764000000 + 40 * 60, NULL);
    feed(eng, 0, buf);
    event(buf, sizeof buf, "click", "u9", 1764000000 + 3 * 3600, NULL);
    feed(eng, 0, buf);
    pd_engine_model_info(eng, 0, &mi);
    pd_engine_get_stats(eng, &st);
    assert_int_equal(mi.examples, 36);
    assert_true(mi.positives > 4);
    assert_int_equal(st.labels.pending, 0);
    pd_engine_free(eng);

    assert_null(pd_snapshot_open("fixtures/snapshot-v1.pds", err, sizeof err));
    assert_non_null(strstr(err, "format version 1"));
    assert_non_null(strstr(err, "move the snapshot directory away"));
    char dir[] = "/tmp/pd-engine-v1-XXXXXX", path[256];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/snapshot-00000000000000000001.pds", dir);
    FILE *in = fopen("fixtures/snapshot-v1.pds", "rb"), *out = fopen(path, "wb");
    assert_non_null(in);
    assert_non_null(out);
    char bytes[8192];
    size_t n = fread(bytes, 1, sizeof bytes, in);
    assert_int_equal(fwrite(bytes, 1, n, out), n);
    fclose(in);
    fclose(out);
    err[0] = '\0';
    assert_null(pd_snapshot_open_latest(dir, NULL, NULL, err, sizeof err));
    assert_non_null(strstr(err, "format version 1"));
    unlink(path);
    rmdir(dir);
    pd_config_free(conf);
}

/* When the engine runs out of memory mid-event, the result is still filled (no scores, not a
 * forget): the daemon reads it either way. Memory is made to run out in a child process by
 * lowering its address-space limit (not under AddressSanitizer, which needs its reservations). */
static void test_out_of_memory_fills_the_result(void **state)
{
    (void)state;
#if defined(__SANITIZE_ADDRESS__)
    skip();
#else
    pd_config *conf = load(base_yaml);
    pd_engine *eng = engine_from(conf);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct rlimit lim;
        FILE *f = fopen("/proc/self/statm", "r");
        unsigned long pages = 0;
        if (!f || fscanf(f, "%lu", &pages) != 1)
            _exit(3);
        fclose(f);
        lim.rlim_cur = lim.rlim_max = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE) + (8u << 20);
        if (setrlimit(RLIMIT_AS, &lim) < 0)
            _exit(4);
        char buf[256];
        for (int i = 0; i < 10000000; i++) {
            char user[32];
            snprintf(user, sizeof user, "user-%d", i);
            event(buf, sizeof buf, "view", user, 1000 + i, NULL);
            pd_event ev;
            if (pd_engine_decode(eng, buf, strlen(buf), 0, &ev, NULL, 0) != PD_DECODE_OK)
                _exit(5);
            pd_engine_result res;
            memset(&res, 0xa5, sizeof res);
            if (pd_engine_process(eng, &ev, &res) < 0)
                _exit(res.user == ev.user && res.n_scores == 0 && !res.forgotten ? 0 : 1);
        }
        _exit(2); /* never ran out */
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    pd_engine_free(eng);
    pd_config_free(conf);
#endif
}

/* The quality gate stops publishing while recent AUC is below the floor and publishes again
 * once the model recovers; learning never stops. */
static void test_quality_gate(void **state)
{
    (void)state;
    pd_config *conf = load("kafka: {brokers: b, topics: [t], group: g}\n"
                           "events: {types: [view]}\n"
                           "features:\n"
                           "  device: {categorical: context.device}\n"
                           "models:\n"
                           "  m:\n"
                           "    type: logistic\n"
                           "    alpha: 0.5\n"
                           "    features: [device]\n"
                           "    example_on: [view]\n"
                           "    label: {value_from: label}\n"
                           "    metrics_window: 500\n"
                           "    quality_gate: {min_auc: 0.7, min_examples: 300}\n");
    pd_engine *eng = engine_from(conf);
    char buf[256];
    unsigned seed = 7;
    pd_model_info mi;
    /* noise: the label ignores the device, so AUC stays near 0.5 */
    for (int i = 0; i < 2000; i++) {
        seed = seed * 1103515245u + 12345u;
        int dev = (int)(seed >> 16) % 8, label = (int)((seed >> 8) & 1);
        snprintf(buf, sizeof buf,
                 "{\"type\":\"view\",\"user_id\":\"u%d\",\"ts\":%d,\"label\":%d,"
                 "\"context\":{\"device\":\"d%d\"}}",
                 i % 50, 1000 + i, label, dev);
        pd_engine_result res = feed(eng, 0, buf);
        pd_engine_model_info(eng, 0, &mi);
        if (i < 299)
            assert_int_equal(res.n_scores, 1); /* too few examples to judge */
    }
    pd_engine_model_info(eng, 0, &mi);
    assert_false(mi.gate_open);
    assert_true(pd_model_info_figure(&mi, "auc_recent") < 0.7);
    snprintf(buf, sizeof buf,
             "{\"type\":\"view\",\"user_id\":\"u1\",\"ts\":5000,\"label\":0,"
             "\"context\":{\"device\":\"d1\"}}");
    uint64_t before = mi.examples;
    assert_int_equal(feed(eng, 0, buf).n_scores, 0); /* publishing stops ... */
    pd_engine_model_info(eng, 0, &mi);
    assert_int_equal(mi.examples, before + 1); /* ... learning goes on */
    /* signal: devices d0-d3 buy, d4-d7 do not */
    for (int i = 0; i < 3000; i++) {
        seed = seed * 1103515245u + 12345u;
        int dev = (int)(seed >> 16) % 8;
        snprintf(buf, sizeof buf,
                 "{\"type\":\"view\",\"user_id\":\"u%d\",\"ts\":%d,\"label\":%d,"
                 "\"context\":{\"device\":\"d%d\"}}",
                 i % 50, 6000 + i, dev < 4, dev);
        feed(eng, 0, buf);
    }
    pd_engine_model_info(eng, 0, &mi);
    assert_true(pd_model_info_figure(&mi, "auc_recent") > 0.9);
    assert_true(mi.gate_open);
    pd_engine_free(eng);
    pd_config_free(conf);
}

/* What an observer saw, in order. */
typedef struct seen_log {
    int model[4096];
    double prediction[4096], label[4096];
    size_t n;
} seen_log;

static void log_example(void *ctx, int model, const pd_feature *x, size_t n, double prediction,
                        double label, double weight)
{
    (void)x, (void)n, (void)weight;
    seen_log *log = ctx;
    if (log->n < 4096) {
        log->model[log->n] = model;
        log->prediction[log->n] = prediction;
        log->label[log->n] = label;
    }
    log->n++;
}

/* Deferred learning moves when an immediate example is learned, never the order: two value
 * models in one event and a joined one between them learn exactly what an engine without
 * deferral learns, and the last example waits for pd_engine_flush(). */
static void test_deferred_learning_same_order(void **state)
{
    (void)state;
    pd_config *conf = load("kafka: {brokers: b, topics: [t], group: g}\n"
                           "events: {types: [view, purchase]}\n"
                           "features:\n"
                           "  device: {categorical: context.device}\n"
                           "  item: {categorical: item_id}\n"
                           "models:\n"
                           "  a: {type: logistic, features: [device, item], example_on: [view],\n"
                           "      label: {value_from: label}}\n"
                           "  joined: {type: logistic, features: [device], example_on: [view],\n"
                           "           label: {positive_on: purchase, within: 1m}}\n"
                           "  b: {type: logistic, features: [item], example_on: [view],\n"
                           "      label: {value_from: label}}\n");
    pd_engine *plain = engine_from(conf), *deferred = engine_from(conf);
    static seen_log seen_plain, seen_deferred;
    seen_plain.n = seen_deferred.n = 0;
    pd_engine_set_scoring(plain, false);
    pd_engine_set_scoring(deferred, false);
    pd_engine_set_label_observer(plain, log_example, &seen_plain);
    pd_engine_set_label_observer(deferred, log_example, &seen_deferred);
    pd_engine_set_deferred_learning(deferred, true);
    char buf[256];
    unsigned seed = 3;
    for (int i = 0; i < 1000; i++) {
        seed = seed * 1103515245u + 12345u;
        int dev = (int)(seed >> 16) % 4, item = (int)(seed >> 8) % 16;
        bool buy = (seed >> 4) % 5 == 0;
        snprintf(buf, sizeof buf,
                 "{\"type\":\"%s\",\"user_id\":\"u%d\",\"item_id\":\"i%d\",\"ts\":%d,"
                 "\"label\":%d,\"context\":{\"device\":\"d%d\"}}",
                 buy ? "purchase" : "view", i % 20, item, 1000 + 1000 * i, dev < 2, dev);
        feed(plain, 0, buf);
        feed(deferred, 0, buf);
    }
    assert_int_equal(examples(deferred, 2) + 1, examples(plain, 2)); /* b's last one waits */
    pd_engine_flush(deferred);
    assert_true(seen_plain.n > 1000 && seen_plain.n < 4096);
    assert_int_equal(seen_deferred.n, seen_plain.n);
    for (size_t i = 0; i < seen_plain.n; i++) {
        assert_int_equal(seen_deferred.model[i], seen_plain.model[i]);
        assert_memory_equal(&seen_deferred.prediction[i], &seen_plain.prediction[i],
                            sizeof(double));
        assert_memory_equal(&seen_deferred.label[i], &seen_plain.label[i], sizeof(double));
    }
    for (size_t m = 0; m < 3; m++) {
        pd_model_info a, b;
        pd_engine_model_info(plain, m, &a);
        pd_engine_model_info(deferred, m, &b);
        assert_int_equal(a.examples, b.examples);
        double la = pd_model_info_figure(&a, "log_loss"), lb = pd_model_info_figure(&b, "log_loss");
        assert_memory_equal(&la, &lb, sizeof la);
    }
    pd_engine_free(plain);
    pd_engine_free(deferred);
    pd_config_free(conf);
}

/* A user's state and waiting examples move with its partition: instance A hands user "a"
 * (shard 1) over to B half-way through; afterwards a's events go to B and b's stay with A.
 * Each user's state on its holder equals the state of an engine that saw every event, and
 * between them A and B made exactly the examples it made. */
static void user_equal(pd_engine *x, pd_engine *y, const char *user)
{
    pd_user_info ux, uy;
    assert_int_equal(pd_engine_user_info(x, user, strlen(user), &ux), 0);
    uint64_t events = ux.events;
    uint32_t pending = ux.pending;
    double acc[8];
    size_t n_acc = ux.n_acc < 8 ? ux.n_acc : 8;
    for (size_t i = 0; i < n_acc; i++)
        acc[i] = ux.acc[i].value;
    assert_int_equal(pd_engine_user_info(y, user, strlen(user), &uy), 0);
    assert_int_equal(uy.events, events);
    assert_int_equal(uy.pending, pending);
    assert_int_equal(uy.n_acc, ux.n_acc);
    for (size_t i = 0; i < n_acc; i++)
        assert_true(uy.acc[i].value == acc[i]);
}

static void test_hand_over_users(void **state)
{
    (void)state;
    pd_config *conf = load(base_yaml);
    pd_engine *x = engine_from(conf), *a = engine_from(conf), *b = engine_from(conf);
    char buf[256], err[512];
    for (int i = 0; i < 200; i++) {
        const char *user = i % 2 ? "a" : "b";
        uint32_t shard = i % 2 ? 1 : 2;
        event(buf, sizeof buf, i % 5 == 4 ? "purchase" : "view", user, 1000 + i * 30,
              ",\"price\":3");
        feed_shard(x, 0, shard, buf);
        if (i < 104) {
            feed_shard(a, 0, shard, buf);
            continue;
        }
        if (i == 104) {
            char *blob = NULL;
            size_t len = 0;
            FILE *f = open_memstream(&blob, &len);
            uint64_t out = 0, in = 0;
            uint32_t one = 1;
            assert_int_equal(pd_engine_hand_out(a, &one, 1, f, &out, err, sizeof err), 0);
            fclose(f);
            assert_int_equal(out, 1);
            /* a truncated blob is refused */
            f = fmemopen(blob, len / 2, "rb");
            assert_true(pd_engine_take_over(b, f, &in, err, sizeof err) < 0);
            fclose(f);
            f = fmemopen(blob, len, "rb");
            assert_int_equal(pd_engine_take_over(b, f, &in, err, sizeof err), 0);
            fclose(f);
            free(blob);
            assert_int_equal(in, 1);
            user_equal(a, b, "a");
            assert_int_equal(pd_engine_drop_shards(a, &one, 1), 1);
            pd_user_info ui;
            assert_int_equal(pd_engine_user_info(a, "a", 1, &ui), -ENOENT);
        }
        feed_shard(shard == 1 ? b : a, 0, shard, buf);
    }
    user_equal(x, b, "a");
    user_equal(x, a, "b");
    pd_engine_stats sx, sa, sb;
    pd_engine_get_stats(x, &sx);
    pd_engine_get_stats(a, &sa);
    pd_engine_get_stats(b, &sb);
    assert_true(sa.labels.handed_out > 0);
    assert_int_equal(sb.labels.handed_in, sa.labels.handed_out);
    assert_int_equal(examples(a, 0) + examples(b, 0) + sa.labels.pending + sb.labels.pending,
                     examples(x, 0) + sx.labels.pending);
    assert_int_equal(sa.users_handed_out, 1);
    assert_int_equal(sb.users_handed_in, 1);
    /* an engine keeping shard 2 only loses the users of every other shard */
    uint32_t two = 2;
    pd_user_info ui;
    assert_int_equal(pd_engine_keep_shards(x, &two, 1), 1);
    assert_int_equal(pd_engine_user_info(x, "a", 1, &ui), -ENOENT);
    assert_int_equal(pd_engine_user_info(x, "b", 1, &ui), 0);
    pd_engine_free(x);
    pd_engine_free(a);
    pd_engine_free(b);
    pd_config_free(conf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lagging_source_holds_watermark),
        cmocka_unit_test(test_idle_and_new_sources),
        cmocka_unit_test(test_value_labels_and_scores),
        cmocka_unit_test(test_reload_and_forget),
        cmocka_unit_test(test_evictions_counted_and_kept),
        cmocka_unit_test(test_snapshot_fixtures),
        cmocka_unit_test(test_out_of_memory_fills_the_result),
        cmocka_unit_test(test_snapshot_round_trip),
        cmocka_unit_test(test_quality_gate),
        cmocka_unit_test(test_deferred_learning_same_order),
        cmocka_unit_test(test_hand_over_users),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

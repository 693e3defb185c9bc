/* Everything the daemon says about each model, in one place: the summary hash written to
 * Redis ({prefix}:model:{name}) every second, the per-model /metrics families, the "models"
 * list of the status reply, and the log lines when a quality gate closes or opens and when
 * examples are lost to the pending bounds. All of it reads pd_model_info from the engine. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "daemon/daemon_internal.h"
#include "daemon/log.h"

#define MODEL_SUMMARY_MS     1000
#define GATE_REMINDER_MS     60000
#define EVICTION_REMINDER_MS 60000
#define SUMMARY_FIELDS       16

/* ---- log lines ---- */

/* Says when a model's quality gate closes or opens, and reminds every minute while it stays
 * closed: its users keep their last good scores meanwhile. */
static void log_gate(pd_daemon *d, size_t i, const pd_model_info *mi, int64_t now)
{
    daemon_models *dm = &d->models;
    if (i >= MAX_GATED_MODELS)
        return;
    bool closed = !mi->gate_open;
    bool remind = closed && now - dm->gate_logged_ms[i] >= GATE_REMINDER_MS;
    if (closed == dm->gate_closed[i] && !remind)
        return;
    const pd_metrics_report *m = &mi->metrics;
    if (closed)
        pd_logkv(PD_LOG_WARNING,
                 "model fails its quality gate: not publishing new scores, "
                 "the last good ones stay in redis",
                 "model=%s recent_auc=%.4f recent_log_loss=%.4f recent_rmse=%.4g "
                 "examples=%" PRIu64,
                 mi->name, m->recent_auc, m->recent_log_loss, m->recent_rmse, mi->examples);
    else
        pd_logkv(PD_LOG_INFO, "model passes its quality gate again: publishing",
                 "model=%s recent_auc=%.4f recent_log_loss=%.4f recent_rmse=%.4g", mi->name,
                 m->recent_auc, m->recent_log_loss, m->recent_rmse);
    dm->gate_closed[i] = closed;
    dm->gate_logged_ms[i] = now;
}

/* An evicted example is a loss: the model never learns it. Says so at once, then at most once
 * a minute while it goes on, with what was lost since the last line. */
static void log_evictions(pd_daemon *d, size_t i, const pd_model_info *mi, int64_t now)
{
    daemon_models *dm = &d->models;
    if (i >= MAX_GATED_MODELS)
        return;
    uint64_t lost = mi->evicted_user + mi->evicted_total;
    if (lost <= dm->evicted_logged[i] ||
        (dm->evicted_logged_ms[i] && now - dm->evicted_logged_ms[i] < EVICTION_REMINDER_MS))
        return;
    uint64_t taken = mi->examples + lost;
    pd_logkv(PD_LOG_WARNING,
             "examples evicted before their label resolved: the model never learns them; "
             "raise watermark.max_pending_per_user or watermark.max_pending_total",
             "model=%s evicted=%" PRIu64 " user_limit=%" PRIu64 " total_limit=%" PRIu64
             " share=%.3f%% max_pending_per_user=%" PRId64 " max_pending_total=%" PRId64,
             mi->name, lost - dm->evicted_logged[i], mi->evicted_user, mi->evicted_total,
             taken ? 100.0 * (double)lost / (double)taken : 0.0,
             d->conf->state.max_pending_per_user, d->conf->state.max_pending_total);
    dm->evicted_logged[i] = lost;
    dm->evicted_logged_ms[i] = now;
}

void daemon_models_reset(pd_daemon *d)
{
    daemon_models *dm = &d->models;
    memset(dm->gate_closed, 0, sizeof dm->gate_closed);
    memset(dm->gate_logged_ms, 0, sizeof dm->gate_logged_ms);
    memset(dm->evicted_logged, 0, sizeof dm->evicted_logged);
    memset(dm->evicted_logged_ms, 0, sizeof dm->evicted_logged_ms);
}

/* ---- Redis summary hashes ---- */

typedef struct summary {
    const char *fields[SUMMARY_FIELDS], *values[SUMMARY_FIELDS];
    char text[SUMMARY_FIELDS][40];
    size_t n;
} summary;

static void put_u(summary *s, const char *name, uint64_t x)
{
    s->fields[s->n] = name;
    snprintf(s->text[s->n], sizeof s->text[s->n], "%" PRIu64, x);
    s->values[s->n] = s->text[s->n];
    s->n++;
}

static void put_d(summary *s, const char *name, double x)
{
    s->fields[s->n] = name;
    if (isfinite(x))
        snprintf(s->text[s->n], sizeof s->text[s->n], "%.6g", x);
    else
        snprintf(s->text[s->n], sizeof s->text[s->n], "nan");
    s->values[s->n] = s->text[s->n];
    s->n++;
}

static void summary_fill(summary *s, const pd_model_info *mi)
{
    put_u(s, "generation", mi->generation);
    put_u(s, "examples", mi->examples);
    put_u(s, "positives", mi->positives);
    put_u(s, "predictions", mi->predictions);
    put_u(s, "evicted", mi->evicted_user + mi->evicted_total);
    if (mi->type == PD_MODEL_LINEAR) {
        put_d(s, "rmse", mi->metrics.rmse);
        put_d(s, "mae", mi->metrics.mae);
        put_d(s, "r2", mi->metrics.r2);
        put_d(s, "rmse_recent", mi->metrics.recent_rmse);
    } else {
        put_d(s, "log_loss", mi->metrics.log_loss);
        put_d(s, "auc", mi->metrics.auc);
        put_d(s, "auc_recent", mi->metrics.recent_auc);
        put_d(s, "calibration", mi->metrics.calibration);
        put_d(s, "accuracy", mi->metrics.accuracy);
    }
    put_u(s, "publishing", mi->gate_open ? 1 : 0);
    put_u(s, "updated", (uint64_t)pd_clock_wall_ms());
}

static void put_model_summaries(pd_daemon *d)
{
    size_t n = pd_engine_model_count(d->engine);
    int64_t now = pd_clock_mono_ms();
    for (size_t i = 0; i < n; i++) {
        pd_model_info mi;
        pd_engine_model_info(d->engine, i, &mi);
        log_gate(d, i, &mi, now);
        log_evictions(d, i, &mi, now);
        summary s = {.n = 0};
        summary_fill(&s, &mi);
        if (pd_publisher_put_model(d->pub, mi.name, s.fields, s.values, s.n) < 0)
            pd_log_error("out of memory queueing the summary of model \"%s\"", mi.name);
    }
}

void daemon_models_tick(pd_daemon *d, int64_t now_ms, bool force)
{
    if (!force && now_ms < d->models.next_summary_ms)
        return;
    put_model_summaries(d);
    d->models.next_summary_ms = now_ms + MODEL_SUMMARY_MS;
}

/* ---- /metrics ---- */

static void render_model_counts(pd_strbuf *sb, const pd_model_info *mi, size_t n)
{
    FAMILY("propensityd_model_examples_total", COUNTER,
           "Labelled examples learned (labels resolved) per model.");
    for (size_t i = 0; i < n; i++)
        SAMPLE1("propensityd_model_examples_total", "model", mi[i].name, mi[i].examples);
    FAMILY("propensityd_model_positive_examples_total", COUNTER,
           "Examples learned with a positive label per model.");
    for (size_t i = 0; i < n; i++)
        SAMPLE1("propensityd_model_positive_examples_total", "model", mi[i].name, mi[i].positives);
    FAMILY("propensityd_model_predictions_total", COUNTER, "Scores computed per model.");
    for (size_t i = 0; i < n; i++)
        SAMPLE1("propensityd_model_predictions_total", "model", mi[i].name, mi[i].predictions);
    FAMILY("propensityd_model_publishing", GAUGE,
           "1 while the model's scores are published (quality gate open or off).");
    for (size_t i = 0; i < n; i++)
        SAMPLE1("propensityd_model_publishing", "model", mi[i].name, mi[i].gate_open ? 1 : 0);
    FAMILY("propensityd_model_examples_evicted_total", COUNTER,
           "Examples a model lost to the pending bounds before their label resolved, by "
           "reason (never learned).");
    for (size_t i = 0; i < n; i++) {
        pd_prom_sample(sb, "propensityd_model_examples_evicted_total",
                       (const char *[]){"model", mi[i].name, "reason", "user_limit", NULL},
                       (double)mi[i].evicted_user);
        pd_prom_sample(sb, "propensityd_model_examples_evicted_total",
                       (const char *[]){"model", mi[i].name, "reason", "total_limit", NULL},
                       (double)mi[i].evicted_total);
    }
    FAMILY("propensityd_model_generation", GAUGE,
           "Configuration generation of the model (bumps when it changes).");
    for (size_t i = 0; i < n; i++)
        SAMPLE1("propensityd_model_generation", "model", mi[i].name, mi[i].generation);
}

/* The progressive quality gauges, each for the kind of model it applies to. */
static void render_model_quality(pd_strbuf *sb, const pd_model_info *mi, size_t n)
{
    enum { CLASSIFIERS, REGRESSORS };
    static const struct {
        const char *name, *help;
        int kind;
        size_t off;
    } gauges[] = {
        {"propensityd_model_log_loss", "Progressive (predict-then-learn) log loss, all time.",
         CLASSIFIERS, offsetof(pd_metrics_report, log_loss)},
        {"propensityd_model_auc", "Progressive AUC, all time.", CLASSIFIERS,
         offsetof(pd_metrics_report, auc)},
        {"propensityd_model_auc_recent", "Progressive AUC over the recent window.", CLASSIFIERS,
         offsetof(pd_metrics_report, recent_auc)},
        {"propensityd_model_calibration", "Mean prediction over mean label (1 = calibrated).",
         CLASSIFIERS, offsetof(pd_metrics_report, calibration)},
        {"propensityd_model_rmse", "Progressive RMSE, all time.", REGRESSORS,
         offsetof(pd_metrics_report, rmse)},
        {"propensityd_model_rmse_recent", "Progressive RMSE over the recent window.", REGRESSORS,
         offsetof(pd_metrics_report, recent_rmse)},
        {"propensityd_model_mae", "Progressive mean absolute error, all time.", REGRESSORS,
         offsetof(pd_metrics_report, mae)},
        {"propensityd_model_r2", "Progressive R squared, all time.", REGRESSORS,
         offsetof(pd_metrics_report, r2)},
    };
    for (size_t g = 0; g < sizeof gauges / sizeof gauges[0]; g++) {
        FAMILY(gauges[g].name, GAUGE, gauges[g].help);
        for (size_t i = 0; i < n; i++) {
            bool regressor = mi[i].type == PD_MODEL_LINEAR;
            if ((gauges[g].kind == CLASSIFIERS && regressor) ||
                (gauges[g].kind == REGRESSORS && !regressor))
                continue;
            double v = *(const double *)((const char *)&mi[i].metrics + gauges[g].off);
            SAMPLE1(gauges[g].name, "model", mi[i].name, v);
        }
    }
    FAMILY("propensityd_model_memory_bytes", GAUGE, "Weight and optimizer memory per model.");
    for (size_t i = 0; i < n; i++)
        SAMPLE1("propensityd_model_memory_bytes", "model", mi[i].name, mi[i].memory);
}

void daemon_models_render(pd_daemon *d, pd_strbuf *sb)
{
    size_t n = pd_engine_model_count(d->engine);
    pd_model_info *mi = calloc(n ? n : 1, sizeof *mi);
    if (!mi) {
        sb->oom = true;
        return;
    }
    for (size_t i = 0; i < n; i++)
        pd_engine_model_info(d->engine, i, &mi[i]);
    render_model_counts(sb, mi, n);
    render_model_quality(sb, mi, n);
    free(mi);
}

/* ---- the status reply ---- */

/* Replies are built member by member in the order they are printed; json_object_set_new()
 * takes the value even when it fails, so one flag collects any out-of-memory. */
static int add_model_metrics(json_t *m, const pd_model_info *mi)
{
    int e = 0;
    if (mi->type == PD_MODEL_LINEAR) {
        e |= json_object_set_new(m, "rmse", pd_control_number(mi->metrics.rmse));
        e |= json_object_set_new(m, "mae", pd_control_number(mi->metrics.mae));
        e |= json_object_set_new(m, "r2", pd_control_number(mi->metrics.r2));
    } else {
        e |= json_object_set_new(m, "log_loss", pd_control_number(mi->metrics.log_loss));
        e |= json_object_set_new(m, "auc", pd_control_number(mi->metrics.auc));
        e |= json_object_set_new(m, "auc_recent", pd_control_number(mi->metrics.recent_auc));
        e |= json_object_set_new(m, "calibration", pd_control_number(mi->metrics.calibration));
    }
    return e;
}

json_t *daemon_models_status(pd_daemon *d)
{
    json_t *list = json_array();
    int e = 0;
    for (size_t i = 0; i < pd_engine_model_count(d->engine) && e == 0; i++) {
        pd_model_info mi;
        pd_engine_model_info(d->engine, i, &mi);
        json_t *m = json_object();
        e |= json_array_append_new(list, m); /* the list owns m even when this fails */
        e |= json_object_set_new(m, "name", pd_control_string(mi.name));
        e |= json_object_set_new(m, "output", pd_control_string(mi.output ? mi.output : mi.name));
        e |= json_object_set_new(m, "generation", json_integer(mi.generation));
        e |= json_object_set_new(m, "examples", json_integer(mi.examples));
        e |= json_object_set_new(m, "positives", json_integer(mi.positives));
        e |= json_object_set_new(m, "predictions", json_integer(mi.predictions));
        e |= json_object_set_new(m, "evicted",
                                 json_integer((json_int_t)(mi.evicted_user + mi.evicted_total)));
        e |= json_object_set_new(m, "publishing", json_boolean(mi.gate_open));
        e |= add_model_metrics(m, &mi);
    }
    if (e) {
        json_decref(list);
        return NULL;
    }
    return list;
}

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
#define SUMMARY_FIELDS       (8 + PD_MODEL_MAX_METRICS)

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
    /* the model's own figures say why: e.g. auc_recent=0.5123 log_loss_recent=0.7 */
    char figs[1024];
    size_t used = 0;
    figs[0] = '\0';
    for (size_t k = 0; k < mi->n_figures && used < sizeof figs; k++) {
        int w = snprintf(figs + used, sizeof figs - used, " %s=%.4g", mi->figures[k].name,
                         mi->figures[k].value);
        if (w > 0)
            used += (size_t)w;
    }
    if (closed)
        pd_logkv(PD_LOG_WARNING,
                 "model fails its quality gate: not publishing new scores, "
                 "the last good ones stay in redis",
                 "model=%s examples=%" PRIu64 "%s", mi->name, mi->examples, figs);
    else
        pd_logkv(PD_LOG_INFO, "model passes its quality gate again: publishing",
                 "model=%s examples=%" PRIu64 "%s", mi->name, mi->examples, figs);
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
    for (size_t k = 0; k < mi->n_figures; k++)
        put_d(s, mi->figures[k].name, mi->figures[k].value);
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

static bool model_has_figure(const pd_model_info *mi, const char *name)
{
    for (size_t k = 0; k < mi->n_figures; k++)
        if (strcmp(mi->figures[k].name, name) == 0)
            return true;
    return false;
}

static void render_model_counts(pd_strbuf *sb, const pd_model_info *mi, size_t n)
{
    FAMILY("propensityd_model_examples_total", COUNTER,
           "Labelled examples learned (labels resolved) per model; interactions learned by a "
           "model of lists.");
    for (size_t i = 0; i < n; i++)
        SAMPLE1("propensityd_model_examples_total", "model", mi[i].name, mi[i].examples);
    FAMILY("propensityd_model_positive_examples_total", COUNTER,
           "Examples learned with a positive label per model.");
    for (size_t i = 0; i < n; i++)
        SAMPLE1("propensityd_model_positive_examples_total", "model", mi[i].name, mi[i].positives);
    FAMILY("propensityd_model_predictions_total", COUNTER,
           "Scores computed per model; user lists rescored by a model of lists.");
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

/* The models' own figures, one gauge family each (propensityd_model_<figure>), in the order a
 * model first reports it; a model without a figure has no sample in its family. */
static void render_model_quality(pd_strbuf *sb, const pd_model_info *mi, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        for (size_t k = 0; k < mi[i].n_figures; k++) {
            const pd_model_metric *f = &mi[i].figures[k];
            bool rendered = false; /* by an earlier model */
            for (size_t j = 0; j < i && !rendered; j++)
                rendered = model_has_figure(&mi[j], f->name);
            if (rendered)
                continue;
            char family[128];
            snprintf(family, sizeof family, "propensityd_model_%s", f->name);
            FAMILY(family, GAUGE, f->help);
            for (size_t j = i; j < n; j++)
                if (model_has_figure(&mi[j], f->name))
                    SAMPLE1(family, "model", mi[j].name, pd_model_info_figure(&mi[j], f->name));
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
    for (size_t k = 0; k < mi->n_figures; k++)
        e |= json_object_set_new(m, mi->figures[k].name, pd_control_number(mi->figures[k].value));
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

/* The engine's per-event path. Order matters and is the same in the daemon and in replay:
 * watermark -> positives of this event -> user state -> features -> predict every model ->
 * take examples -> bounds. */
#include "pipeline/engine.h"

#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "models/model.h"
#include "pipeline/featurizer.h"
#include "pipeline/user_state.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

/* One configured model: its kind's table and state, and what the engine does for it (which
 * features it reads, which events make its examples, how they are labelled). */
typedef struct model {
    const pd_model_ops *ops;
    void *state;
    char *name;
    char *output;
    uint64_t fingerprint; /* what makes its learned state meaningful */
    uint64_t settings;    /* all its configuration says: a change bumps the generation */
    int *features;
    size_t n_features;
    uint32_t example_on;
    pd_label_kind label;
    pd_label_rule rule;
    int value_slot;  /* -1: the event's value field */
    int weight_slot; /* -1: importance 1 */
    bool publish;
    uint64_t generation;
    uint64_t examples, positives, predictions;
    uint64_t evicted[PD_EVICTED__COUNT]; /* examples lost to the pending bounds, never learned */
} model;

typedef struct source {
    int64_t max_ts_ms; /* INT64_MIN: no event yet */
    bool idle;
    bool used;
} source;

#define MAX_SOURCES 65536

/* The engine parts a config determines, built aside so a reload can fail without harm. */
typedef struct parts {
    pd_decoder *decoder;
    pd_featurizer *features;
    pd_user_layout layout;
    model *models;
    size_t n_models;
    pd_feature *x;
    size_t x_cap;
    pd_score *scores;
    pd_value *missing; /* one PD_VALUE_MISSING per decoded path */
    size_t n_paths;
    uint32_t label_types;
} parts;

struct pd_engine {
    parts cur; /* what the running config built: swapped whole on reload */
    pd_user_state *users;
    pd_labels *labels;
    size_t n_types;
    int forget_type;
    int64_t lateness_ms;
    int64_t max_users;
    int64_t idle_ttl_ms;
    uint64_t generation;
    source *sources;
    size_t n_sources;
    bool scoring;
    bool track_users; /* some feature or label reads per-user state */
    /* pd_engine_set_deferred_learning(): the last event's immediately labelled example, its
     * features still in cur.x, learned at the next call that may need it */
    bool defer;
    struct deferred {
        bool pending;
        int model;
        size_t n;
        double label, weight;
    } deferred;
    pd_label_observer_fn observer;
    void *observer_ctx;
    /* how models of lists judge them (pd_engine_set_list_evaluation), applied to every model
     * a reload starts; thunks carry each model's index to the observer */
    bool list_live, list_baselines;
    pd_list_observer_fn list_observer;
    void *list_observer_ctx;
    struct list_thunk {
        pd_engine *eng;
        int model;
    } thunks[PD_MAX_MODELS];
    pd_engine_stats stats;
};

/* ---- building from a config ---- */

typedef struct path_list {
    char **paths;
    size_t n;
} path_list;

static int path_slot(path_list *pl, const char *path)
{
    for (size_t i = 0; i < pl->n; i++)
        if (strcmp(pl->paths[i], path) == 0)
            return (int)i;
    char **np = realloc(pl->paths, (pl->n + 1) * sizeof *np);
    if (!np)
        return -ENOMEM;
    pl->paths = np;
    if (!(pl->paths[pl->n] = strdup(path)))
        return -ENOMEM;
    return (int)pl->n++;
}

static void path_list_release(path_list *pl)
{
    for (size_t i = 0; i < pl->n; i++)
        free(pl->paths[i]);
    free(pl->paths);
}

static void model_release(model *m)
{
    free(m->name);
    free(m->output);
    free(m->features);
    if (m->ops)
        m->ops->destroy(m->state);
    memset(m, 0, sizeof *m);
}

static void parts_release(parts *p)
{
    pd_decoder_free(p->decoder);
    pd_featurizer_free(p->features);
    for (size_t i = 0; p->models && i < p->n_models; i++)
        model_release(&p->models[i]);
    free(p->models);
    free(p->x);
    free(p->scores);
    free(p->missing);
    memset(p, 0, sizeof *p);
}

/* Builds everything but the learners (which a reload may keep). */
static int parts_build(parts *p, const pd_config *conf, char *errbuf, size_t errlen)
{
    path_list pl = {0};
    int *slots = NULL;
    int r = -ENOMEM;
    memset(p, 0, sizeof *p);

    slots = calloc(conf->n_features ? conf->n_features : 1, sizeof *slots);
    p->models = calloc(conf->n_models ? conf->n_models : 1, sizeof *p->models);
    if (!slots || !p->models)
        goto out_nomem;
    p->n_models = conf->n_models;
    for (size_t i = 0; i < conf->n_features; i++) {
        const pd_feature_conf *f = &conf->features[i];
        bool has_field =
            f->kind == PD_FEAT_CATEGORICAL || f->kind == PD_FEAT_NUMERIC || f->kind == PD_FEAT_TEXT;
        slots[i] = has_field && f->field ? path_slot(&pl, f->field) : -1;
        if (has_field && f->field && slots[i] < 0)
            goto out_nomem;
    }
    for (size_t i = 0; i < conf->n_models; i++) {
        const pd_model_conf *mc = &conf->models[i];
        model *m = &p->models[i];
        m->name = strdup(mc->name);
        m->output = strdup(mc->output ? mc->output : mc->name);
        m->features = malloc((mc->n_features ? mc->n_features : 1) * sizeof *m->features);
        if (!m->name || !m->output || !m->features)
            goto out_nomem;
        if (mc->n_features) /* a list model has none: no NULL source to memcpy */
            memcpy(m->features, mc->features, mc->n_features * sizeof *m->features);
        m->n_features = mc->n_features;
        m->ops = pd_model_ops_for(mc);
        m->fingerprint = pd_config_model_fingerprint(conf, i) ^ m->ops->fingerprint(mc);
        m->settings = pd_config_model_settings(conf, i);
        m->example_on = mc->example_on;
        m->label = mc->label;
        m->rule.positive_on = mc->positive_on;
        m->rule.window_ms = mc->window_ms;
        m->rule.match_item = mc->match == PD_MATCH_USER_ITEM;
        m->value_slot = -1;
        m->weight_slot = -1;
        if (mc->label == PD_LABEL_VALUE_FROM && mc->value_field &&
            strcmp(mc->value_field, "value") != 0 &&
            !(conf->events.field_value && strcmp(mc->value_field, conf->events.field_value) == 0)) {
            if ((m->value_slot = path_slot(&pl, mc->value_field)) < 0)
                goto out_nomem;
        }
        if (mc->weight_field && (m->weight_slot = path_slot(&pl, mc->weight_field)) < 0)
            goto out_nomem;
        m->publish = mc->publish;
        m->generation = 1;
        if (mc->label == PD_LABEL_POSITIVE_WITHIN && mc->positive_on >= 0 && mc->positive_on < 32)
            p->label_types |= UINT32_C(1) << mc->positive_on;
    }

    p->decoder = pd_decoder_new(&conf->events, (const char *const *)pl.paths, pl.n, errbuf, errlen);
    if (!p->decoder) {
        r = -EINVAL;
        goto out_release;
    }
    p->features = pd_featurizer_new(conf, slots, errbuf, errlen);
    if (!p->features) {
        r = -EINVAL;
        goto out_release;
    }
    p->layout = *pd_featurizer_layout(p->features);
    p->layout.label_types = p->label_types;
    for (size_t i = 0; i < p->n_models; i++) {
        size_t w =
            pd_featurizer_max_nnz(p->features, p->models[i].features, p->models[i].n_features);
        if (w > p->x_cap)
            p->x_cap = w;
    }
    p->x = malloc((p->x_cap ? p->x_cap : 1) * sizeof *p->x);
    p->scores = malloc((p->n_models ? p->n_models : 1) * sizeof *p->scores);
    p->missing = calloc(pl.n ? pl.n : 1, sizeof *p->missing);
    p->n_paths = pl.n;
    if (!p->x || !p->scores || !p->missing)
        goto out_nomem;
    free(slots);
    path_list_release(&pl);
    return 0;

out_nomem:
    snprintf(errbuf, errlen, "out of memory building the pipeline");
out_release:
    free(slots);
    path_list_release(&pl);
    parts_release(p);
    return r;
}

static int model_start(model *m, const pd_config *conf, size_t i, char *errbuf, size_t errlen)
{
    char err[256];
    m->state = m->ops->create(&conf->models[i], err, sizeof err);
    if (!m->state) {
        snprintf(errbuf, errlen, "model \"%s\": %s", m->name, err);
        return -EINVAL;
    }
    return 0;
}

/* Takes over what p holds; p is left empty. */
static void parts_install(pd_engine *eng, parts *p)
{
    eng->cur = *p;
    memset(p, 0, sizeof *p);
}

static void engine_settings(pd_engine *eng, const pd_config *conf)
{
    eng->n_types = conf->events.n_types;
    eng->forget_type = conf->events.forget_type;
    eng->lateness_ms = conf->state.allowed_lateness_ms;
    eng->max_users = conf->state.max_users;
    eng->idle_ttl_ms = conf->state.user_idle_ttl_ms;
    /* A pipeline whose features and labels read nothing of a user's past keeps no state for
     * users at all: looking them up cost a sizeable share of such a replay, for state nobody
     * read (tests/bench/README.md, "Measured design choices"). */
    eng->track_users = pd_config_needs_user_state(conf);
}

static void on_list_eval(void *ctx, const pd_list_eval *ev)
{
    struct list_thunk *t = ctx;
    if (t->eng->list_observer)
        t->eng->list_observer(t->eng->list_observer_ctx, t->model, ev);
}

/* Tells every model of lists how to judge them: after a model starts and on request. */
static void apply_list_evaluation(pd_engine *eng)
{
    for (size_t i = 0; i < eng->cur.n_models; i++) {
        model *m = &eng->cur.models[i];
        if (!m->ops->set_evaluation)
            continue;
        eng->thunks[i] = (struct list_thunk){eng, (int)i};
        m->ops->set_evaluation(m->state, eng->list_live, eng->list_baselines, on_list_eval,
                               &eng->thunks[i]);
    }
}

static void on_prefetch(void *ctx, int mi, const pd_feature *x, size_t n)
{
    pd_engine *eng = ctx;
    const model *m = &eng->cur.models[mi];
    if (m->ops->prefetch)
        m->ops->prefetch(m->state, x, n);
}

static void on_evict(void *ctx, int mi, pd_label_eviction why)
{
    pd_engine *eng = ctx;
    if (mi >= 0 && (size_t)mi < eng->cur.n_models)
        eng->cur.models[mi].evicted[why]++;
}

pd_engine *pd_engine_new(const pd_config *conf, char *errbuf, size_t errlen)
{
    parts p;
    pd_engine *eng = calloc(1, sizeof *eng);
    if (!eng) {
        snprintf(errbuf, errlen, "out of memory");
        return NULL;
    }
    if (parts_build(&p, conf, errbuf, errlen) < 0)
        goto out_free;
    for (size_t i = 0; i < p.n_models; i++)
        if (model_start(&p.models[i], conf, i, errbuf, errlen) < 0)
            goto out_release_parts;
    eng->users = pd_user_state_new(&p.layout, errbuf, errlen);
    if (!eng->users)
        goto out_release_parts;
    eng->labels = pd_labels_new(conf->state.max_pending_per_user, conf->state.max_pending_total,
                                errbuf, errlen);
    if (!eng->labels)
        goto out_release_parts;
    pd_labels_set_prefetch(eng->labels, on_prefetch, eng);
    pd_labels_set_evict(eng->labels, on_evict, eng);
    parts_install(eng, &p);
    engine_settings(eng, conf);
    apply_list_evaluation(eng);
    eng->generation = 1;
    eng->scoring = true;
    eng->stats.max_event_ts_ms = INT64_MIN;
    eng->stats.watermark_ms = INT64_MIN;
    return eng;

out_release_parts:
    parts_release(&p);
out_free:
    pd_engine_free(eng);
    return NULL;
}

void pd_engine_free(pd_engine *eng)
{
    if (!eng)
        return;
    pd_labels_free(eng->labels); /* before the users its examples point at */
    pd_user_state_free(eng->users);
    parts_release(&eng->cur);
    free(eng->sources);
    free(eng);
}

/* ---- per event ---- */

pd_decode_error pd_engine_decode(pd_engine *eng, const char *buf, size_t len,
                                 int64_t fallback_ts_ms, pd_event *ret_event, char *detail,
                                 size_t detail_len)
{
    pd_decode_error err = pd_decoder_decode(eng->cur.decoder, buf, len, fallback_ts_ms, ret_event,
                                            detail, detail_len);
    if (err != PD_DECODE_OK)
        eng->stats.decode_errors[err]++;
    return err;
}

static void learn_example(pd_engine *eng, int mi, const pd_feature *x, size_t n, double label,
                          double weight)
{
    assert(mi >= 0 && (size_t)mi < eng->cur.n_models); /* remapped on every reload */
    model *m = &eng->cur.models[mi];
    double pred = m->ops->learn(m->state, x, n, label, weight);
    if (eng->observer)
        eng->observer(eng->observer_ctx, mi, x, n, pred, label, weight);
    m->examples++;
    if (label > 0.5)
        m->positives++;
}

void pd_engine_flush(pd_engine *eng)
{
    struct deferred *d = &eng->deferred;
    if (!d->pending)
        return;
    d->pending = false;
    learn_example(eng, d->model, eng->cur.x, d->n, d->label, d->weight);
}

/* Every example is learned through here, so a deferred one always goes first: models learn
 * and observers see examples in exactly the order they would without deferral. */
static void on_label(void *ctx, int mi, const pd_feature *x, size_t n, double label, double weight)
{
    pd_engine *eng = ctx;
    pd_engine_flush(eng);
    learn_example(eng, mi, x, n, label, weight);
}

/* An example labelled by its own event (value_from), whose features are in cur.x. With
 * deferral on, its table entries are prefetched and it is learned at the next call, so that
 * their cache misses overlap with decoding the next event (tests/bench/README.md). While
 * scoring, the model is read right after (publishing()), so it learns at once. */
static void learn_immediate(pd_engine *eng, int mi, size_t n, double label, double weight)
{
    const model *m = &eng->cur.models[mi];
    if (!eng->defer || eng->scoring || !m->ops->prefetch) {
        on_label(eng, mi, eng->cur.x, n, label, weight);
        return;
    }
    pd_engine_flush(eng);
    m->ops->prefetch(m->state, eng->cur.x, n);
    eng->deferred = (struct deferred){
        .pending = true, .model = mi, .n = n, .label = label, .weight = weight};
}

void pd_engine_set_deferred_learning(pd_engine *eng, bool defer)
{
    pd_engine_flush(eng);
    eng->defer = defer;
}

static uint32_t item_hash32(const pd_event *ev)
{
    return (uint32_t)XXH3_64bits(ev->item, ev->item_len);
}

static void forget_user(pd_engine *eng, pd_user *u)
{
    pd_labels_forget_user(eng->labels, u);
    pd_user_state_remove(eng->users, u);
}

/* Models of lists keep users of their own (a pipeline may track no user state at all). */
static void forget_in_lists(pd_engine *eng, const char *user, size_t len)
{
    for (size_t i = 0; i < eng->cur.n_models; i++)
        if (eng->cur.models[i].ops->forget)
            eng->cur.models[i].ops->forget(eng->cur.models[i].state, user, len);
}

static void enforce_user_bounds(pd_engine *eng, const pd_user *current)
{
    for (;;) {
        pd_user *old = pd_user_state_oldest(eng->users);
        if (!old || old == current)
            return;
        bool over = eng->max_users > 0 && (int64_t)pd_user_state_count(eng->users) > eng->max_users;
        bool idle = eng->idle_ttl_ms > 0 && eng->stats.watermark_ms != INT64_MIN &&
                    old->seen_ts_ms < eng->stats.watermark_ms - eng->idle_ttl_ms;
        if (!over && !idle)
            return;
        forget_user(eng, old);
        eng->stats.users_evicted++;
    }
}

static double field_number(const pd_event *ev, int slot, double fallback)
{
    if (slot < 0 || (size_t)slot >= ev->n_fields)
        return fallback;
    const pd_value *v = &ev->fields[slot];
    if (v->kind == PD_VALUE_NUMBER || v->kind == PD_VALUE_BOOL)
        return v->num;
    return fallback;
}

static source *source_get(pd_engine *eng, uint32_t id)
{
    if (id >= MAX_SOURCES)
        id = MAX_SOURCES - 1;
    if (id >= eng->n_sources) {
        size_t n = eng->n_sources ? eng->n_sources : 4;
        while (n <= id)
            n *= 2;
        source *ns = realloc(eng->sources, n * sizeof *ns);
        if (!ns)
            return NULL;
        for (size_t i = eng->n_sources; i < n; i++)
            ns[i] = (source){.max_ts_ms = INT64_MIN};
        eng->sources = ns;
        eng->n_sources = n;
    }
    return &eng->sources[id];
}

/* Moves the watermark to the lowest highest-time of the sources that still deliver (all
 * sources when every one is idle); labels 0 what it passes. */
static void watermark_update(pd_engine *eng)
{
    int64_t low = INT64_MAX, high = INT64_MIN;
    for (size_t i = 0; i < eng->n_sources; i++) {
        const source *s = &eng->sources[i];
        if (!s->used)
            continue;
        if (!s->idle) {
            if (s->max_ts_ms == INT64_MIN)
                return; /* has events to deliver but none seen yet: they may be the oldest */
            if (s->max_ts_ms < low)
                low = s->max_ts_ms;
        }
        if (s->max_ts_ms > high)
            high = s->max_ts_ms;
    }
    int64_t t = low != INT64_MAX ? low : high;
    if (t == INT64_MIN)
        return;
    int64_t wm = t - eng->lateness_ms;
    if (wm > eng->stats.watermark_ms) {
        eng->stats.watermark_ms = wm;
        pd_labels_advance(eng->labels, wm, on_label, eng);
    }
}

void pd_engine_source_idle(pd_engine *eng, uint32_t id, bool idle)
{
    pd_engine_flush(eng);
    source *s = source_get(eng, id);
    if (!s || (s->used && s->idle == idle))
        return;
    s->used = true;
    s->idle = idle;
    watermark_update(eng);
}

void pd_engine_source_remove(pd_engine *eng, uint32_t id)
{
    pd_engine_flush(eng);
    if (id >= eng->n_sources || !eng->sources[id].used)
        return;
    eng->sources[id] = (source){.max_ts_ms = INT64_MIN};
    watermark_update(eng);
}

int pd_engine_process(pd_engine *eng, const pd_event *ev, pd_engine_result *ret_result)
{
    pd_engine_flush(eng);
    int r = 0;
    pd_engine_result res = {
        .ts_ms = ev->ts_ms, .scores = eng->cur.scores, .user = ev->user, .user_len = ev->user_len};
    *ret_result = res; /* a caller may read it whatever happens: no scores, not forgotten */
    eng->stats.events++;
    if (ev->type >= 0 && ev->type < PD_MAX_EVENT_TYPES)
        eng->stats.events_by_type[ev->type]++;
    if (ev->ts_ms > eng->stats.max_event_ts_ms)
        eng->stats.max_event_ts_ms = ev->ts_ms;
    source *src = source_get(eng, ev->source);
    if (!src)
        return -ENOMEM;
    bool was_idle = src->idle || !src->used;
    src->used = true;
    src->idle = false;
    if (ev->ts_ms > src->max_ts_ms) {
        src->max_ts_ms = ev->ts_ms;
        watermark_update(eng);
    } else if (was_idle) {
        watermark_update(eng);
    }

    pd_user *u = NULL;
    if (eng->track_users) {
        u = pd_user_state_get(eng->users, ev->user, ev->user_len, ev->ts_ms, NULL);
        if (!u)
            return -ENOMEM;
        u->shard = ev->shard;
    }
    if (ev->type == eng->forget_type) {
        if (u)
            forget_user(eng, u);
        forget_in_lists(eng, ev->user, ev->user_len);
        eng->stats.forgotten++;
        res.forgotten = true;
        *ret_result = res;
        return 0;
    }

    bool has_item = ev->item_len > 0;
    uint32_t item = has_item ? item_hash32(ev) : 0;
    bool is_label_event = ev->type < 32 && (eng->cur.label_types & (UINT32_C(1) << ev->type));
    if (is_label_event)
        pd_labels_positive(eng->labels, u, ev->type, ev->ts_ms, item, on_label, eng);

    pd_user_before before = {.last_ts_ms = INT64_MIN};
    if (u) {
        pd_user_before_capture(u, eng->n_types, &before);
        pd_user_state_apply(eng->users, u, ev->type, ev->ts_ms, item, has_item, ev->value,
                            ev->has_value);
    }
    /* without tracked users no feature reads u or before */
    pd_featurizer_build(eng->cur.features, ev, eng->users, u, &before, true);

    for (size_t i = 0; i < eng->cur.n_models; i++) {
        model *m = &eng->cur.models[i];
        if (m->ops->interact) {
            pd_interaction in = {.user = ev->user, .user_len = ev->user_len, .item = ev->item,
                                 .item_len = ev->item_len, .type = ev->type, .ts_ms = ev->ts_ms};
            if (has_item && m->ops->interact(m->state, &in))
                m->examples++;
            continue; /* its lists go out through pd_engine_refresh_lists() */
        }
        pd_engine_flush(eng); /* a previous model's example, whose features are in cur.x */
        size_t n = pd_featurizer_gather(eng->cur.features, m->features, m->n_features, eng->cur.x);
        double p = 0;
        if (eng->scoring) {
            p = m->ops->predict(m->state, eng->cur.x, n);
            m->predictions++;
        }
        if (m->example_on & (UINT32_C(1) << ev->type)) {
            double w = field_number(ev, m->weight_slot, 1.0);
            if (!(w > 0) || !isfinite(w))
                w = 1.0;
            if (m->label == PD_LABEL_VALUE_FROM) {
                bool has = m->value_slot < 0 ? ev->has_value : true;
                double y = m->value_slot < 0 ? ev->value : field_number(ev, m->value_slot, NAN);
                if (has && isfinite(y))
                    learn_immediate(eng, (int)i, n, y, w);
            } else if (pd_labels_add(eng->labels, u, (int)i, &m->rule, ev->ts_ms, item, eng->cur.x,
                                     n, w, eng->stats.watermark_ms, is_label_event, on_label,
                                     eng) < 0) {
                r = -ENOMEM;
            }
        }
        if (eng->scoring && m->publish && m->ops->publishing(m->state))
            eng->cur.scores[res.n_scores++] = (pd_score){.model = (int)i, .value = p};
    }
    if (u)
        enforce_user_bounds(eng, u);
    *ret_result = res;
    return r;
}

/* ---- reload ---- */

int pd_engine_reconfigure(pd_engine *eng, const pd_config *conf, char *ret_fresh, size_t fresh_len,
                          char *errbuf, size_t errlen)
{
    pd_engine_flush(eng); /* before anything reads or replaces a model */
    parts p;
    int *old_to_new = NULL;
    size_t fresh_used = 0;
    if (ret_fresh && fresh_len)
        ret_fresh[0] = '\0';
    if (parts_build(&p, conf, errbuf, errlen) < 0)
        return -EINVAL;
    old_to_new = malloc((eng->cur.n_models ? eng->cur.n_models : 1) * sizeof *old_to_new);
    if (!old_to_new) {
        snprintf(errbuf, errlen, "out of memory");
        goto out_release;
    }
    for (size_t j = 0; j < eng->cur.n_models; j++)
        old_to_new[j] = -1;
    bool changed = eng->cur.n_models != p.n_models;
    /* first pass: everything that can fail, without touching the running engine */
    for (size_t i = 0; i < p.n_models; i++) {
        model *m = &p.models[i];
        int old = -1;
        for (size_t j = 0; j < eng->cur.n_models; j++)
            if (strcmp(eng->cur.models[j].name, m->name) == 0)
                old = (int)j;
        if (old >= 0 && eng->cur.models[old].fingerprint == m->fingerprint && old_to_new[old] < 0) {
            old_to_new[old] = (int)i; /* kept: learner and metrics move over below */
            continue;
        }
        changed = true;
        if (model_start(m, conf, i, errbuf, errlen) < 0)
            goto out_release;
        if (ret_fresh && fresh_len > fresh_used) {
            int w = snprintf(ret_fresh + fresh_used, fresh_len - fresh_used, "%s\"%s\" (%s)",
                             fresh_used ? ", " : "", m->name,
                             old >= 0 ? "features or weights changed" : "new");
            if (w > 0)
                fresh_used += (size_t)w;
        }
    }
    if (pd_user_state_relayout(eng->users, &p.layout, errbuf, errlen) < 0)
        goto out_release;

    /* from here on nothing fails */
    for (size_t j = 0; j < eng->cur.n_models; j++) {
        model *om = &eng->cur.models[j];
        if (old_to_new[j] < 0)
            continue;
        model *m = &p.models[old_to_new[j]];
        if (om->ops->reconfigure(om->state, &conf->models[old_to_new[j]]) < 0) {
            /* only running out of memory gets here (the config was validated): the model
             * keeps its previous hyper-parameters; say so, so the engine's view matches */
            m->settings = om->settings;
            if (ret_fresh && fresh_len > fresh_used) {
                int w = snprintf(ret_fresh + fresh_used, fresh_len - fresh_used,
                                 "%s\"%s\" (kept its previous hyper-parameters: out of memory)",
                                 fresh_used ? ", " : "", m->name);
                if (w > 0)
                    fresh_used += (size_t)w;
            }
        }
        if (om->settings != m->settings) {
            m->generation = om->generation + 1;
            changed = true;
        } else {
            m->generation = om->generation;
        }
        m->state = om->state;
        m->examples = om->examples;
        m->positives = om->positives;
        m->predictions = om->predictions;
        memcpy(m->evicted, om->evicted, sizeof m->evicted);
        om->state = NULL;
    }
    pd_labels_remap_models(eng->labels, old_to_new, eng->cur.n_models);
    pd_labels_set_bounds(eng->labels, conf->state.max_pending_per_user,
                         conf->state.max_pending_total);
    pd_featurizer_adopt(p.features, eng->cur.features);

    parts_release(&eng->cur);
    parts_install(eng, &p);
    engine_settings(eng, conf);
    apply_list_evaluation(eng);
    if (changed)
        eng->generation++;
    free(old_to_new);
    return 0;

out_release:
    free(old_to_new);
    parts_release(&p);
    return -EINVAL;
}

bool pd_engine_forget(pd_engine *eng, const char *user, size_t len)
{
    pd_engine_flush(eng);
    pd_user *u = pd_user_state_find(eng->users, user, len);
    forget_in_lists(eng, user, len);
    if (!u)
        return false;
    forget_user(eng, u);
    eng->stats.forgotten++;
    return true;
}

void pd_engine_set_list_evaluation(pd_engine *eng, bool live, bool baselines,
                                   pd_list_observer_fn fn, void *ctx)
{
    pd_engine_flush(eng); /* before anything reads or replaces a model */
    eng->list_live = live;
    eng->list_baselines = baselines;
    eng->list_observer = fn;
    eng->list_observer_ctx = ctx;
    apply_list_evaluation(eng);
}

size_t pd_engine_refresh_lists(pd_engine *eng, size_t i, int64_t now_ms, const pd_list_sink *sink,
                               size_t budget)
{
    pd_engine_flush(eng); /* before anything reads or replaces a model */
    model *m = i < eng->cur.n_models ? &eng->cur.models[i] : NULL;
    if (!m || !m->ops->refresh)
        return 0;
    size_t n = m->ops->refresh(m->state, now_ms, sink, budget);
    m->predictions += n;
    return n;
}

size_t pd_engine_user_list(pd_engine *eng, size_t i, const char *user, size_t len,
                           const char **items, size_t *item_lens, float *scores, size_t max)
{
    pd_engine_flush(eng); /* before anything reads or replaces a model */
    model *m = i < eng->cur.n_models ? &eng->cur.models[i] : NULL;
    if (!m || !m->ops->user_list)
        return 0;
    return m->ops->user_list(m->state, user, len, items, item_lens, scores, max);
}

bool pd_engine_feature_coverage(const pd_engine *eng, size_t i, pd_feature_coverage *ret_cov)
{
    return pd_featurizer_coverage(eng->cur.features, i, ret_cov);
}

void pd_engine_set_scoring(pd_engine *eng, bool scoring)
{
    pd_engine_flush(eng);
    eng->scoring = scoring;
}

void pd_engine_set_label_observer(pd_engine *eng, pd_label_observer_fn fn, void *ctx)
{
    pd_engine_flush(eng);
    eng->observer = fn;
    eng->observer_ctx = ctx;
}

uint64_t pd_engine_generation(const pd_engine *eng)
{
    return eng->generation;
}

void pd_engine_get_stats(const pd_engine *eng, pd_engine_stats *ret_stats)
{
    pd_engine_stats s = eng->stats;
    s.users = pd_user_state_count(eng->users);
    pd_labels_get_stats(eng->labels, &s.labels);
    s.memory_users = pd_user_state_memory(eng->users);
    s.memory_pending = pd_labels_memory(eng->labels);
    s.memory_models = 0;
    for (size_t i = 0; i < eng->cur.n_models; i++)
        s.memory_models += eng->cur.models[i].ops->memory(eng->cur.models[i].state);
    *ret_stats = s;
}

size_t pd_engine_model_count(const pd_engine *eng)
{
    return eng->cur.n_models;
}

static void model_info(const pd_engine *eng, size_t i, bool full, pd_model_info *ret_info)
{
    const model *m = &eng->cur.models[i];
    pd_model_info info = {
        .name = m->name,
        .output = m->output,
        .kind = m->ops->kind,
        .output_kind = m->ops->output(m->state),
        .generation = m->generation,
        .examples = m->examples,
        .positives = m->positives,
        .predictions = m->predictions,
        .evicted_user = m->evicted[PD_EVICTED_USER_LIMIT],
        .evicted_total = m->evicted[PD_EVICTED_TOTAL_LIMIT],
        .gate_open = m->ops->publishing(m->state),
        .memory = m->ops->memory(m->state),
    };
    info.n_figures = m->ops->metrics(m->state, full, info.figures, PD_MODEL_MAX_METRICS);
    *ret_info = info;
}

void pd_engine_model_info(const pd_engine *eng, size_t i, pd_model_info *ret_info)
{
    model_info(eng, i, false, ret_info);
}

void pd_engine_model_report(const pd_engine *eng, size_t i, pd_model_info *ret_info)
{
    model_info(eng, i, true, ret_info);
}

double pd_model_info_figure(const pd_model_info *info, const char *name)
{
    for (size_t k = 0; k < info->n_figures; k++)
        if (strcmp(info->figures[k].name, name) == 0)
            return info->figures[k].value;
    return NAN;
}

int pd_engine_score_user(pd_engine *eng, const char *user, size_t len, pd_score *scores, size_t max)
{
    pd_engine_flush(eng);
    pd_user *u = pd_user_state_find(eng->users, user, len);
    if (!u)
        return -ENOENT;
    /* an event with only the user and its latest time: state features, no event fields;
     * read-only, so normalisers and vocabularies do not learn from a query */
    pd_event ev = {.user = u->id,
                   .user_len = u->id_len,
                   .item = "",
                   .text = "",
                   .type = -1,
                   .ts_ms = u->last_ts_ms,
                   .fields = eng->cur.missing,
                   .n_fields = eng->cur.n_paths};
    pd_user_before before;
    pd_user_before_capture(u, eng->n_types, &before);
    pd_featurizer_build(eng->cur.features, &ev, eng->users, u, &before, false);
    size_t k = 0;
    for (size_t i = 0; i < eng->cur.n_models && k < max; i++) {
        model *m = &eng->cur.models[i];
        if (m->ops->output(m->state) == PD_OUTPUT_LIST)
            continue; /* pd_engine_user_list() */
        size_t n = pd_featurizer_gather(eng->cur.features, m->features, m->n_features, eng->cur.x);
        scores[k++] = (pd_score){.model = (int)i, .value = m->ops->predict(m->state, eng->cur.x, n)};
    }
    return (int)k;
}

/* ---- snapshots ----
 *
 * Sections (each little-endian, field by field, version first):
 *   engine     u32 version; u64 generation, events; u32 n + n x u64 events by type; u32 n +
 *              n x u64 decode errors by reason; u64 users evicted, forgotten; i64 highest
 *              event time, watermark; u32 models, each str name, u64 fingerprint
 *   features   the featurizer's (pipeline/featurizer.c)
 *   users      the user store's (pipeline/user_state.c)
 *   pending    the label join's (pipeline/labels.c)
 *   model/NAME u32 version; u64 fingerprint; str kind; u64 generation, examples, positives,
 *              predictions, evicted by the per-user bound, by the total bound; then the
 *              kind's own body (its save()). */

#define ENGINE_VERSION 1
#define MODEL_VERSION  1
#define MAX_NAME       255

/* A section's writer; NULL when the snapshot cannot take another section. */
static FILE *section(pd_snapshot_writer *w, const char *name, pd_bin_writer *bw)
{
    FILE *f = pd_snapshot_writer_section(w, name);
    pd_bin_writer_init(bw, f);
    return f;
}

static int save_engine_section(const pd_engine *eng, pd_bin_writer *w)
{
    const pd_engine_stats *st = &eng->stats;
    pd_bin_put_version(w, ENGINE_VERSION);
    pd_bin_put_u64(w, eng->generation);
    pd_bin_put_u64(w, st->events);
    pd_bin_put_u32(w, PD_MAX_EVENT_TYPES);
    pd_bin_put_u64_array(w, st->events_by_type, PD_MAX_EVENT_TYPES);
    pd_bin_put_u32(w, PD_DECODE__COUNT);
    pd_bin_put_u64_array(w, st->decode_errors, PD_DECODE__COUNT);
    pd_bin_put_u64(w, st->users_evicted);
    pd_bin_put_u64(w, st->forgotten);
    pd_bin_put_i64(w, st->max_event_ts_ms);
    pd_bin_put_i64(w, st->watermark_ms);
    pd_bin_put_u32(w, (uint32_t)eng->cur.n_models);
    for (size_t i = 0; i < eng->cur.n_models; i++) {
        pd_bin_put_str(w, eng->cur.models[i].name, strlen(eng->cur.models[i].name));
        pd_bin_put_u64(w, eng->cur.models[i].fingerprint);
    }
    return w->err;
}

static int save_model(const model *m, pd_snapshot_writer *sw)
{
    char name[300];
    pd_bin_writer w;
    snprintf(name, sizeof name, "model/%s", m->name);
    if (!section(sw, name, &w))
        return -EIO;
    pd_bin_put_version(&w, MODEL_VERSION);
    pd_bin_put_u64(&w, m->fingerprint);
    pd_bin_put_str(&w, m->ops->kind, strlen(m->ops->kind));
    pd_bin_put_u64(&w, m->generation);
    pd_bin_put_u64(&w, m->examples);
    pd_bin_put_u64(&w, m->positives);
    pd_bin_put_u64(&w, m->predictions);
    pd_bin_put_u64(&w, m->evicted[PD_EVICTED_USER_LIMIT]);
    pd_bin_put_u64(&w, m->evicted[PD_EVICTED_TOTAL_LIMIT]);
    if (w.err)
        return w.err;
    return m->ops->save(m->state, &w);
}

int pd_engine_save(const pd_engine *eng, pd_snapshot_writer *sw, char *errbuf, size_t errlen)
{
    pd_bin_writer w;
    const char *what = "engine counters";
    int r = -EIO;
    if (section(sw, "engine", &w) && (r = save_engine_section(eng, &w)) < 0)
        goto out_err;
    if (r < 0)
        goto out_err;
    what = "feature state";
    r = section(sw, "features", &w) ? pd_featurizer_save(eng->cur.features, &w) : -EIO;
    if (r < 0)
        goto out_err;
    what = "user state";
    r = section(sw, "users", &w) ? pd_user_state_save(eng->users, &w) : -EIO;
    if (r < 0)
        goto out_err;
    what = "pending examples";
    r = section(sw, "pending", &w) ? pd_labels_save(eng->labels, &w) : -EIO;
    if (r < 0)
        goto out_err;
    for (size_t i = 0; i < eng->cur.n_models; i++) {
        what = eng->cur.models[i].name;
        if ((r = save_model(&eng->cur.models[i], sw)) < 0)
            goto out_err;
    }
    return 0;

out_err: {
    /* the stream only says a write failed; the writer knows why (ENOSPC, EDQUOT, EIO) */
    int e = pd_snapshot_writer_errno(sw);
    snprintf(errbuf, errlen, "cannot write the %s to the snapshot: %s", what,
             strerror(e ? e : (r < 0 ? -r : EIO)));
    return r < 0 ? r : -EIO;
}
}

static void note_fresh(char *buf, size_t len, size_t *used, const char *name, const char *why)
{
    if (!buf || *used >= len)
        return;
    int w = snprintf(buf + *used, len - *used, "%s\"%s\" (%s)", *used ? ", " : "", name, why);
    if (w > 0)
        *used += (size_t)w;
}

/* Restores one model from its section if the saved state still means the same thing; *ret_why
 * says why it starts fresh otherwise. */
static int load_model(model *m, const pd_snapshot *s, const char **ret_why, char *errbuf,
                      size_t errlen)
{
    char name[300], kind[64], err[512];
    snprintf(name, sizeof name, "model/%s", m->name);
    FILE *f = pd_snapshot_section(s, name);
    if (!f) {
        *ret_why = "not in the snapshot";
        return 0;
    }
    pd_bin_reader r;
    pd_bin_reader_init(&r, f);
    pd_bin_get_version(&r, name, MODEL_VERSION);
    uint64_t fp = pd_bin_get_u64(&r);
    pd_bin_get_str(&r, kind, sizeof kind);
    uint64_t gen = pd_bin_get_u64(&r), examples = pd_bin_get_u64(&r);
    uint64_t positives = pd_bin_get_u64(&r), predictions = pd_bin_get_u64(&r);
    uint64_t ev_user = pd_bin_get_u64(&r), ev_total = pd_bin_get_u64(&r);
    int ret = -EINVAL;
    if (r.err) {
        snprintf(errbuf, errlen, "model \"%s\" section: %s", m->name, r.why);
        goto out_close;
    }
    if (fp != m->fingerprint || strcmp(kind, m->ops->kind) != 0) {
        *ret_why = "features, bits, type or optimizer changed";
        ret = 0;
        goto out_close;
    }
    if (m->ops->load(m->state, &r, err, sizeof err) < 0) {
        snprintf(errbuf, errlen, "model \"%s\": %s", m->name, err);
        goto out_close;
    }
    m->generation = gen;
    m->examples = examples;
    m->positives = positives;
    m->predictions = predictions;
    m->evicted[PD_EVICTED_USER_LIMIT] = ev_user;
    m->evicted[PD_EVICTED_TOTAL_LIMIT] = ev_total;
    *ret_why = NULL;
    ret = 0;
out_close:
    fclose(f);
    return ret;
}

typedef struct saved_engine {
    uint64_t generation;
    pd_engine_stats stats;
    uint32_t n_models;
    char names[PD_MAX_MODELS][MAX_NAME + 1];
    uint64_t fingerprints[PD_MAX_MODELS];
} saved_engine;

static int load_engine_section(const pd_snapshot *s, saved_engine *se, char *errbuf,
                               size_t errlen)
{
    FILE *f = pd_snapshot_section(s, "engine");
    if (!f) {
        snprintf(errbuf, errlen, "snapshot has no engine section");
        return -EINVAL;
    }
    pd_bin_reader r;
    pd_bin_reader_init(&r, f);
    pd_engine_stats *st = &se->stats;
    pd_bin_get_version(&r, "engine", ENGINE_VERSION);
    se->generation = pd_bin_get_u64(&r);
    st->events = pd_bin_get_u64(&r);
    uint32_t n = pd_bin_get_u32(&r);
    for (uint32_t i = 0; i < n && !r.err; i++) {
        uint64_t v = pd_bin_get_u64(&r);
        if (i < PD_MAX_EVENT_TYPES)
            st->events_by_type[i] = v;
    }
    n = pd_bin_get_u32(&r);
    for (uint32_t i = 0; i < n && !r.err; i++) {
        uint64_t v = pd_bin_get_u64(&r);
        if (i < PD_DECODE__COUNT)
            st->decode_errors[i] = v;
    }
    st->users_evicted = pd_bin_get_u64(&r);
    st->forgotten = pd_bin_get_u64(&r);
    st->max_event_ts_ms = pd_bin_get_i64(&r);
    st->watermark_ms = pd_bin_get_i64(&r);
    se->n_models = pd_bin_get_u32(&r);
    if (!r.err && se->n_models > PD_MAX_MODELS)
        pd_bin_fail(&r, "%u models", se->n_models);
    for (uint32_t i = 0; i < se->n_models && !r.err; i++) {
        pd_bin_get_str(&r, se->names[i], sizeof se->names[i]);
        se->fingerprints[i] = pd_bin_get_u64(&r);
    }
    fclose(f);
    if (r.err) {
        snprintf(errbuf, errlen, "engine section: %s", r.why);
        return -EINVAL;
    }
    return 0;
}

/* Runs a section through load (a module's reader); an absent section loads nothing. */
static int load_section(const pd_snapshot *s, const char *name,
                        int (*load)(void *ctx, pd_bin_reader *r, char *errbuf, size_t errlen),
                        void *ctx, char *errbuf, size_t errlen)
{
    FILE *f = pd_snapshot_section(s, name);
    if (!f)
        return 0;
    pd_bin_reader r;
    pd_bin_reader_init(&r, f);
    int ret = load(ctx, &r, errbuf, errlen);
    fclose(f);
    return ret;
}

static int load_features(void *ctx, pd_bin_reader *r, char *errbuf, size_t errlen)
{
    pd_engine *eng = ctx;
    return pd_featurizer_load(eng->cur.features, r, errbuf, errlen);
}

static int load_users(void *ctx, pd_bin_reader *r, char *errbuf, size_t errlen)
{
    pd_engine *eng = ctx;
    return pd_user_state_load(eng->users, r, errbuf, errlen);
}

static int load_pending(void *ctx, pd_bin_reader *r, char *errbuf, size_t errlen)
{
    pd_engine *eng = ctx;
    return pd_labels_load(eng->labels, eng->users, r, errbuf, errlen);
}

int pd_engine_load(pd_engine *eng, const pd_snapshot *s, char *ret_fresh, size_t fresh_len,
                   char *errbuf, size_t errlen)
{
    pd_engine_flush(eng); /* before anything reads or replaces a model */
    int old_to_new[PD_MAX_MODELS];
    size_t fresh_used = 0;
    int r;
    if (ret_fresh && fresh_len)
        ret_fresh[0] = '\0';
    saved_engine *se = calloc(1, sizeof *se);
    if (!se) {
        snprintf(errbuf, errlen, "out of memory");
        return -ENOMEM;
    }
    se->stats = eng->stats;
    if ((r = load_engine_section(s, se, errbuf, errlen)) < 0 ||
        (r = load_section(s, "features", load_features, eng, errbuf, errlen)) < 0 ||
        (r = load_section(s, "users", load_users, eng, errbuf, errlen)) < 0)
        goto out_free;
    for (size_t i = 0; i < eng->cur.n_models; i++) {
        const char *why = NULL;
        if ((r = load_model(&eng->cur.models[i], s, &why, errbuf, errlen)) < 0)
            goto out_free;
        if (why)
            note_fresh(ret_fresh, fresh_len, &fresh_used, eng->cur.models[i].name, why);
    }
    /* pending examples follow their model by name, if it kept its state */
    for (uint32_t i = 0; i < se->n_models; i++) {
        old_to_new[i] = -1;
        for (size_t j = 0; j < eng->cur.n_models; j++)
            if (strcmp(eng->cur.models[j].name, se->names[i]) == 0 &&
                eng->cur.models[j].fingerprint == se->fingerprints[i])
                old_to_new[i] = (int)j;
    }
    if ((r = load_section(s, "pending", load_pending, eng, errbuf, errlen)) < 0)
        goto out_free;
    pd_labels_remap_models(eng->labels, old_to_new, se->n_models);
    eng->generation = se->generation;
    eng->stats = se->stats;
out_free:
    free(se);
    return r;
}

int pd_engine_load_models(pd_engine *eng, const pd_snapshot *s, char *ret_fresh, size_t fresh_len,
                          char *errbuf, size_t errlen)
{
    pd_engine_flush(eng);
    size_t fresh_used = 0;
    int r;
    if (ret_fresh && fresh_len)
        ret_fresh[0] = '\0';
    if ((r = load_section(s, "features", load_features, eng, errbuf, errlen)) < 0)
        return r;
    for (size_t i = 0; i < eng->cur.n_models; i++) {
        model *m = &eng->cur.models[i];
        const char *why = NULL;
        if ((r = load_model(m, s, &why, errbuf, errlen)) < 0)
            return r;
        if (why)
            note_fresh(ret_fresh, fresh_len, &fresh_used, m->name, why);
        /* what this instance learns is counted from here: the writer counted the rest */
        m->examples = m->positives = m->predictions = 0;
        memset(m->evicted, 0, sizeof m->evicted);
    }
    return 0;
}

/* ---- handing users over between instances ----
 *
 * The handover blob, version 1 (little-endian, field by field): u32 version; u32 shards and
 * each u32 shard; u32 models and each (str name, u64 fingerprint), so examples follow their
 * model by name as in a snapshot; then a users section and a pending section
 * (pd_user_state_save_some(), pd_labels_save_some()) with only the shards' users. */

#define HANDOVER_VERSION 1
#define MAX_HANDOVER_SHARDS 4096

typedef struct shard_set {
    const uint32_t *shards;
    size_t n;
} shard_set;

static bool in_shards(void *ctx, const pd_user *u)
{
    const shard_set *ss = ctx;
    for (size_t i = 0; i < ss->n; i++)
        if (ss->shards[i] == u->shard)
            return true;
    return false;
}

int pd_engine_hand_out(pd_engine *eng, const uint32_t *shards, size_t n_shards, FILE *f,
                       uint64_t *ret_users, char *errbuf, size_t errlen)
{
    pd_engine_flush(eng); /* a deferred example may belong to one of them */
    shard_set ss = {.shards = shards, .n = n_shards};
    uint64_t users = 0;
    pd_bin_writer w;
    pd_bin_writer_init(&w, f);
    pd_bin_put_version(&w, HANDOVER_VERSION);
    pd_bin_put_u32(&w, (uint32_t)n_shards);
    pd_bin_put_u32_array(&w, shards, n_shards);
    pd_bin_put_u32(&w, (uint32_t)eng->cur.n_models);
    for (size_t i = 0; i < eng->cur.n_models; i++) {
        pd_bin_put_str(&w, eng->cur.models[i].name, strlen(eng->cur.models[i].name));
        pd_bin_put_u64(&w, eng->cur.models[i].fingerprint);
    }
    if (pd_user_state_save_some(eng->users, in_shards, &ss, &w, &users) == 0)
        pd_labels_save_some(eng->labels, in_shards, &ss, &w);
    if (w.err || fflush(f) != 0) {
        snprintf(errbuf, errlen, "cannot write the users handed over: %s",
                 w.err == -ENOMEM ? "out of memory" : "write error");
        return w.err ? w.err : -EIO;
    }
    if (ret_users)
        *ret_users = users;
    return 0;
}

static bool outside_shards(void *ctx, const pd_user *u)
{
    return u->shard != PD_SHARD_NONE && !in_shards(ctx, u);
}

/* Removes every user which() takes (their examples counted as handed out, or as dropped when
 * stale); returns how many. */
static uint64_t remove_users(pd_engine *eng, pd_user_filter_fn which, const shard_set *ss,
                             bool handed_out)
{
    uint64_t n = 0;
    pd_user *u = pd_user_state_oldest(eng->users);
    while (u) {
        pd_user *next = u->lru_prev;
        if (which((void *)ss, u)) {
            if (handed_out)
                pd_labels_hand_out_user(eng->labels, u);
            else
                pd_labels_forget_user(eng->labels, u);
            pd_user_state_remove(eng->users, u);
            n++;
        }
        u = next;
    }
    return n;
}

uint64_t pd_engine_keep_shards(pd_engine *eng, const uint32_t *shards, size_t n_shards)
{
    pd_engine_flush(eng);
    shard_set ss = {.shards = shards, .n = n_shards};
    return remove_users(eng, outside_shards, &ss, false);
}

uint64_t pd_engine_drop_shards(pd_engine *eng, const uint32_t *shards, size_t n_shards)
{
    pd_engine_flush(eng);
    shard_set ss = {.shards = shards, .n = n_shards};
    uint64_t n = remove_users(eng, in_shards, &ss, true);
    eng->stats.users_handed_out += n;
    return n;
}

int pd_engine_take_over(pd_engine *eng, FILE *f, uint64_t *ret_users, char *errbuf, size_t errlen)
{
    pd_engine_flush(eng);
    pd_bin_reader r;
    pd_bin_reader_init(&r, f);
    uint32_t shards[MAX_HANDOVER_SHARDS];
    int map[PD_MAX_MODELS];
    char name[512];
    pd_bin_get_version(&r, "handover", HANDOVER_VERSION);
    uint32_t n_shards = pd_bin_get_u32(&r);
    if (!r.err && n_shards > MAX_HANDOVER_SHARDS)
        pd_bin_fail(&r, "%u shards", n_shards);
    if (!r.err)
        pd_bin_get_u32_array(&r, shards, n_shards);
    uint32_t n_models = pd_bin_get_u32(&r);
    if (!r.err && n_models > PD_MAX_MODELS)
        pd_bin_fail(&r, "%u models", n_models);
    for (uint32_t i = 0; i < n_models && !r.err; i++) {
        size_t len = pd_bin_get_str(&r, name, sizeof name);
        uint64_t fp = pd_bin_get_u64(&r);
        map[i] = -1;
        for (size_t j = 0; j < eng->cur.n_models && !r.err; j++)
            if (strlen(eng->cur.models[j].name) == len &&
                memcmp(eng->cur.models[j].name, name, len) == 0 &&
                eng->cur.models[j].fingerprint == fp)
                map[i] = (int)j;
    }
    if (r.err) {
        snprintf(errbuf, errlen, "handover: %s", r.why[0] ? r.why : "truncated");
        return -EINVAL;
    }
    /* what is here of these shards is older than what their last owner hands over (a
     * snapshot's, or this instance's before it let them go) */
    shard_set ss = {.shards = shards, .n = n_shards};
    remove_users(eng, in_shards, &ss, false);
    size_t before = pd_user_state_count(eng->users);
    int ret = pd_user_state_load(eng->users, &r, errbuf, errlen);
    if (ret == 0)
        ret = pd_labels_load_more(eng->labels, eng->users, map, n_models, &r, errbuf, errlen);
    uint64_t taken = pd_user_state_count(eng->users) - before;
    eng->stats.users_handed_in += taken;
    if (ret_users)
        *ret_users = taken;
    return ret;
}

/* ---- for the control plane (daemon/ops) ---- */

int pd_engine_user_info(pd_engine *eng, const char *user, size_t len, pd_user_info *ret_info)
{
    pd_engine_flush(eng);
    const pd_user *u = pd_user_state_find(eng->users, user, len);
    if (!u)
        return -ENOENT;
    *ret_info = (pd_user_info){
        .events = u->events,
        .first_ts_ms = u->first_ts_ms,
        .last_ts_ms = u->last_ts_ms,
        .last_ts_by_type = u->last_ts_by_type,
        .n_types = eng->n_types,
        .pending = pd_labels_user_pending(u),
        .recent_items = u->ring_len,
        .acc = u->acc,
        .n_acc = pd_user_state_layout(eng->users)->n_acc,
    };
    return 0;
}

/* ---- model sync ---- */

#define DELTA_NAME_MAX 256

int pd_engine_delta_collect(pd_engine *eng, size_t max_bytes, pd_delta_part_fn fn, void *ctx,
                            char *errbuf, size_t errlen)
{
    int n_parts = 0;
    pd_engine_flush(eng); /* a deferred example belongs to this round */
    for (size_t i = 0; i < eng->cur.n_models; i++) {
        model *m = &eng->cur.models[i];
        if (!m->ops->delta_start || !m->ops->delta_seal || !m->ops->delta_write)
            continue;
        if (m->ops->delta_start(m->state) < 0) {
            snprintf(errbuf, errlen, "out of memory capturing model \"%s\"", m->name);
            return -ENOMEM;
        }
        if (!m->ops->delta_seal(m->state))
            continue;
        size_t name_len = strlen(m->name), head = 4 + name_len + 8;
        if (max_bytes <= head) {
            snprintf(errbuf, errlen, "a model delta part of %zu bytes holds nothing", max_bytes);
            return -EMSGSIZE;
        }
        size_t pos = 0;
        int more;
        do {
            char *buf = NULL;
            size_t len = 0;
            FILE *f = open_memstream(&buf, &len);
            if (!f) {
                snprintf(errbuf, errlen, "out of memory collecting model \"%s\"", m->name);
                return -ENOMEM;
            }
            pd_bin_writer w;
            pd_bin_writer_init(&w, f);
            pd_bin_put_str(&w, m->name, name_len);
            pd_bin_put_u64(&w, m->fingerprint);
            more = m->ops->delta_write(m->state, &w, &pos, max_bytes - head);
            if (fclose(f) != 0 && more >= 0)
                more = -EIO;
            if (more >= 0 && w.err)
                more = w.err;
            int r = more < 0 ? more : (fn ? fn(ctx, buf, len) : 0);
            free(buf);
            if (more < 0) {
                snprintf(errbuf, errlen, "collecting model \"%s\": %s", m->name,
                         strerror(-more));
                return more;
            }
            if (r < 0) {
                snprintf(errbuf, errlen, "sending model \"%s\": %s", m->name, strerror(-r));
                return r;
            }
            n_parts++;
        } while (more > 0);
    }
    return n_parts;
}

int pd_engine_delta_apply(pd_engine *eng, const void *bytes, size_t len, char *errbuf,
                          size_t errlen)
{
    char name[DELTA_NAME_MAX], err[256];
    if (len == 0) {
        snprintf(errbuf, errlen, "empty model delta");
        return -EINVAL;
    }
    pd_engine_flush(eng);
    FILE *f = fmemopen((void *)bytes, len, "rb");
    if (!f) {
        snprintf(errbuf, errlen, "out of memory reading a model delta");
        return -ENOMEM;
    }
    pd_bin_reader r;
    pd_bin_reader_init(&r, f);
    pd_bin_get_str(&r, name, sizeof name);
    uint64_t fp = pd_bin_get_u64(&r);
    int ret = -EINVAL;
    if (r.err) {
        snprintf(errbuf, errlen, "model delta: %s", r.err == -EIO ? "truncated" : r.why);
        goto out_close;
    }
    model *m = NULL;
    for (size_t i = 0; i < eng->cur.n_models && !m; i++)
        if (strcmp(eng->cur.models[i].name, name) == 0)
            m = &eng->cur.models[i];
    if (!m) {
        ret = PD_DELTA_UNKNOWN_MODEL;
        goto out_close;
    }
    if (!m->ops->delta_apply) {
        ret = PD_DELTA_NOT_SYNCED;
        goto out_close;
    }
    if (m->fingerprint != fp) {
        ret = PD_DELTA_FINGERPRINT;
        goto out_close;
    }
    ret = m->ops->delta_apply(m->state, &r, err, sizeof err);
    if (ret < 0) {
        snprintf(errbuf, errlen, "model \"%s\" delta: %s", m->name, err);
        goto out_close;
    }
    ret = PD_DELTA_APPLIED;
out_close:
    fclose(f);
    return ret;
}

#define PROBE_FEATURES 65536

size_t pd_engine_model_probe(pd_engine *eng, size_t i, double *out, size_t max)
{
    pd_engine_flush(eng);
    if (i >= eng->cur.n_models)
        return 0;
    model *m = &eng->cur.models[i];
    if (m->ops->output(m->state) == PD_OUTPUT_LIST)
        return 0;
    pd_feature *x = malloc(PROBE_FEATURES * sizeof *x);
    if (!x)
        return 0;
    for (size_t k = 0; k < max; k++) {
        for (size_t j = 0; j < PROBE_FEATURES; j++) {
            /* probe k: every max-th entry from k on, so max probes cover 2^20 entries */
            x[j] = (pd_feature){.hash = (uint32_t)(k + max * j), .value = 1.0 / 64};
        }
        out[k] = m->ops->predict(m->state, x, PROBE_FEATURES);
    }
    free(x);
    return max;
}

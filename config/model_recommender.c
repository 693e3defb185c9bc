/* The recommender kind of model: type recommender. Its keys fill pd_model_conf.recommender,
 * which models/recommender.c takes as it is. The defaults were chosen by measurement on the
 * data sets config/README.md names (tests/bench/quality_recs.py). */
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "config/config_internal.h"

static const char *const rec_types[] = {"recommender", NULL};
static const char *const rec_keys[] = {"interactions",  "evaluate_on", "k",          "dim",
                                       "exclude_seen",  "co_visitation", "embeddings",
                                       "popularity",    "blend",       "limits",     "seed",
                                       NULL};
static const char *const covis_keys[] = {"window",  "decay",     "score_from", "score_decay",
                                         "reverse", "neighbors", NULL};
static const char *const emb_keys[] = {"learning_rate", "power_t", "initial_t", "l2",
                                       "negatives",     NULL};
static const char *const pop_keys[] = {"half_life", NULL};
static const char *const blend_keys[] = {"co_visitation", "embeddings", "popularity", NULL};
static const char *const limit_keys[] = {"users", "items", "seen", "refresh", "similar_refresh",
                                         NULL};

static void rec_init(pd_model_conf *m)
{
    pd_recommender_conf *r = &m->recommender;
    *r = (pd_recommender_conf){
        .k = 20,
        .dim = 32,
        .exclude_seen = true,
        .window = 20,
        .decay = 1.0,
        .score_from = 5,
        .score_decay = 2.0,
        .reverse = 0.7,
        .neighbors = 100,
        .learning_rate = 0.2,
        .power_t = 0.0,
        .initial_t = 1000,
        .l2 = 0.01,
        .negatives = 5,
        .popularity_half_life_ms = 24 * MS_PER_H,
        .blend_covis = 1.0,
        .blend_embeddings = 0.01,
        .blend_popularity = 0.02,
        .max_users = 1000000,
        .max_items = 1000000,
        .max_seen = 200,
        .refresh_ms = MS_PER_S,
        .similar_refresh_ms = 60 * MS_PER_S,
        .seed = 1,
    };
}

static bool rec_learns_value(size_t type)
{
    (void)type;
    return false;
}

/* interactions: { view: 1, click: 2, ... }: the event types a recommender learns from, each
 * with the weight of its evidence. */
static void load_interactions(loader *ld, ynode *n, const char *path, pd_recommender_conf *r)
{
    char kp[KEYPATH_MAX];
    size_t count = pd_yaml_node_size(n);

    if (!ld_check_map(ld, n, path, NULL))
        return;
    if (count == 0) {
        ld_report(ld, n, path, "needs at least one event type and its weight");
        return;
    }
    for (size_t i = 0; i < count; i++) {
        ynode *key = (ynode *)pd_yaml_node_key(n, i);
        const char *type_name = pd_yaml_node_text(key);
        int t;
        double w;

        if (!type_name)
            continue;
        ld_path_key(kp, path, type_name);
        if (ld_resolve_type(ld, key, kp, false, &t) < 0)
            continue;
        if (ld_get_double(ld, n, path, type_name, 0, true, 1e6, &w) > 0)
            r->interaction[t] = (float)w;
    }
}

static void load_evaluate_on(loader *ld, ynode *n, const char *path, pd_recommender_conf *r)
{
    char kp[KEYPATH_MAX];
    size_t count;

    if (!ld_check_list(ld, n, path, true, 1, PD_MAX_EVENT_TYPES, "event types", &count))
        return;
    r->evaluate_on = 0;
    for (size_t i = 0; i < count; i++) {
        int t;

        ld_path_item(kp, n, path, i);
        if (ld_resolve_type(ld, ld_list_at(n, i), kp, false, &t) < 0)
            continue;
        if (!(r->interaction[t] > 0))
            ld_report(ld, ld_list_at(n, i), kp,
                      "%s is not one of the interactions: a list is judged on what it learns",
                      ld->conf->events.types[t]);
        r->evaluate_on |= UINT32_C(1) << t;
    }
}

/* A sub-mapping's keys (co_visitation:, embeddings:, ...): checked, and read by fn. */
static void load_group(loader *ld, ynode *def, const char *mp, const char *key,
                       const char *const *keys,
                       void (*fn)(loader *, ynode *, const char *, pd_recommender_conf *),
                       pd_recommender_conf *r)
{
    char kp[KEYPATH_MAX];
    ynode *n = ld_map_get(def, key);

    if (!n)
        return;
    ld_path_key(kp, mp, key);
    if (ld_check_map(ld, n, kp, keys))
        fn(ld, n, kp, r);
}

static void load_covis(loader *ld, ynode *n, const char *kp, pd_recommender_conf *r)
{
    ld_get_int32(ld, n, kp, "window", 1, 1000, &r->window);
    ld_get_double(ld, n, kp, "decay", 0, false, 10, &r->decay);
    ld_get_int32(ld, n, kp, "score_from", 1, 1000, &r->score_from);
    ld_get_double(ld, n, kp, "score_decay", 0, false, 10, &r->score_decay);
    ld_get_double(ld, n, kp, "reverse", 0, false, 1, &r->reverse);
    ld_get_int32(ld, n, kp, "neighbors", 1, 100000, &r->neighbors);
}

static void load_embeddings(loader *ld, ynode *n, const char *kp, pd_recommender_conf *r)
{
    ld_get_double(ld, n, kp, "learning_rate", 0, true, 10, &r->learning_rate);
    ld_get_double(ld, n, kp, "power_t", 0, false, 1, &r->power_t);
    ld_get_double(ld, n, kp, "initial_t", 0, true, 1e12, &r->initial_t);
    ld_get_double(ld, n, kp, "l2", 0, false, 10, &r->l2);
    ld_get_int32(ld, n, kp, "negatives", 1, 100, &r->negatives);
}

static void load_popularity(loader *ld, ynode *n, const char *kp, pd_recommender_conf *r)
{
    ld_get_duration(ld, n, kp, "half_life", MS_PER_S, INT64_MAX, false,
                    &r->popularity_half_life_ms);
}

static void load_blend(loader *ld, ynode *n, const char *kp, pd_recommender_conf *r)
{
    ld_get_double(ld, n, kp, "co_visitation", 0, false, 1e6, &r->blend_covis);
    ld_get_double(ld, n, kp, "embeddings", 0, false, 1e6, &r->blend_embeddings);
    ld_get_double(ld, n, kp, "popularity", 0, false, 1e6, &r->blend_popularity);
    if (r->blend_covis == 0 && r->blend_embeddings == 0 && r->blend_popularity == 0)
        ld_report(ld, n, kp, "every weight is 0: nothing would score the lists");
}

static void load_limits(loader *ld, ynode *n, const char *kp, pd_recommender_conf *r)
{
    ld_get_int(ld, n, kp, "users", 1, INT64_C(1) << 32, &r->max_users);
    ld_get_int(ld, n, kp, "items", 2, INT64_C(1) << 31, &r->max_items);
    ld_get_int32(ld, n, kp, "seen", 1, 100000, &r->max_seen);
    ld_get_duration(ld, n, kp, "refresh", 0, 24 * MS_PER_H, true, &r->refresh_ms);
    ld_get_duration(ld, n, kp, "similar_refresh", MS_PER_S, 24 * MS_PER_H, false,
                    &r->similar_refresh_ms);
}

/* The lists go to {prefix}:{output}:{user}: the default is the brief's "rec", and an output
 * may not be a key family of its own. */
static void rec_output(loader *ld, ynode *def, const char *mp, pd_model_conf *m)
{
    static const char *const reserved[] = {"u", "model", "popular", "sim", NULL};
    ynode *n = ld_map_get(def, "output");
    const char *text = n ? pd_yaml_node_text(n) : NULL;
    char kp[KEYPATH_MAX];

    if (!n) {
        m->output = ld_strdup(ld, "rec");
        return;
    }
    ld_path_key(kp, mp, "output");
    for (const char *const *w = reserved; text && *w; w++)
        if (strcmp(text, *w) == 0)
            ld_report(ld, n, kp,
                      "\"%s\" is taken ({prefix}:u:, :model:, :popular and :sim: are keys of "
                      "their own): name the lists something else",
                      text);
}

static void rec_load(loader *ld, ynode *def, const char *mp, pd_model_conf *m, size_t type,
                     bool type_ok)
{
    pd_recommender_conf *r = &m->recommender;
    char kp[KEYPATH_MAX];
    int64_t seed = 1;

    (void)type;
    (void)type_ok;
    rec_output(ld, def, mp, m);
    ld_path_key(kp, mp, "interactions");
    if (ld_need(ld, def, mp, "interactions"))
        load_interactions(ld, ld_map_get(def, "interactions"), kp, r);
    ld_path_key(kp, mp, "evaluate_on");
    if (ld_map_get(def, "evaluate_on"))
        load_evaluate_on(ld, ld_map_get(def, "evaluate_on"), kp, r);
    else
        for (int t = 0; t < PD_MAX_EVENT_TYPES; t++)
            if (r->interaction[t] > 0)
                r->evaluate_on |= UINT32_C(1) << t; /* every interaction */
    ld_get_int32(ld, def, mp, "k", 1, 1000, &r->k);
    ld_get_int32(ld, def, mp, "dim", 8, 128, &r->dim);
    ld_get_bool(ld, def, mp, "exclude_seen", &r->exclude_seen);
    load_group(ld, def, mp, "co_visitation", covis_keys, load_covis, r);
    load_group(ld, def, mp, "embeddings", emb_keys, load_embeddings, r);
    load_group(ld, def, mp, "popularity", pop_keys, load_popularity, r);
    load_group(ld, def, mp, "blend", blend_keys, load_blend, r);
    load_group(ld, def, mp, "limits", limit_keys, load_limits, r);
    if (ld_get_int(ld, def, mp, "seed", 0, INT64_MAX, &seed) > 0)
        r->seed = (uint64_t)seed;
    if (r->score_from > r->window) {
        ld_path_key(kp, mp, "co_visitation");
        ld_report(ld, ld_map_get(def, "co_visitation"), kp,
                  "score_from (%d) is more than window (%d): a list is scored from the items "
                  "the window keeps",
                  r->score_from, r->window);
    }
}

const model_kind_ops model_recommender_ops = {
    .kind = PD_MODEL_KIND_RECOMMENDER,
    .types = rec_types,
    .keys = rec_keys,
    .init = rec_init,
    .load = rec_load,
    .learns_value = rec_learns_value,
    .learns_examples = false,
};

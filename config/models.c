/* models: the keys every model has whatever its kind (features, examples, label, output,
 * metrics, quality gate), the choice of kind by `type:`, and the limits across models (how
 * many, unique outputs). The keys of a kind are read by its model_<kind>.c. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "config/config_internal.h"

#define MAX_MODEL_FEATS 256

/* Every kind, in the order their types are listed in messages; the first is the default when
 * `type:` is missing or wrong. */
static const model_kind_ops *const model_kinds[] = {&model_glm_ops, &model_recommender_ops};

static const char *const common_keys[] = {"features",       "example_on",   "label",
                                          "weight_from",    "output",       "publish",
                                          "metrics_window", "quality_gate", NULL};
/* The common keys that only kinds learning examples take. */
static const char *const example_keys[] = {"features", "example_on", "label", "weight_from",
                                           "quality_gate", NULL};
static const char *const label_keys[] = {"positive_on", "within", "match", "value_from", NULL};
static const char *const gate_keys[] = {"min_auc", "max_log_loss", "max_rmse", "min_examples",
                                        NULL};
static const char *const match_names[] = {"user", "user_item"};

/* The words of every kind together, built once per models: section. */
typedef struct model_words {
    const char **keys;  /* NULL-terminated: type, each kind's keys, the common keys */
    const char **types; /* each kind's types, in the order of model_kinds */
    size_t n_types;
} model_words;

/* What `type:` said. */
typedef struct model_type {
    const model_kind_ops *kind;
    size_t type; /* index into kind->types */
    bool ok;     /* type: was read; else the checks that depend on it are skipped */
} model_type;

static size_t count_words(const char *const *words)
{
    size_t n = 0;

    while (words[n])
        n++;
    return n;
}

static bool model_words_init(loader *ld, model_words *w)
{
    size_t n_keys = 1 + count_words(common_keys), n_types = 0, k = 0;

    for (size_t i = 0; i < ARRAY_SIZE(model_kinds); i++) {
        n_keys += count_words(model_kinds[i]->keys);
        n_types += count_words(model_kinds[i]->types);
    }
    w->keys = ld_calloc(ld, n_keys + 1, sizeof(char *));
    w->types = ld_calloc(ld, n_types, sizeof(char *));
    if (!w->keys || !w->types)
        return false;
    w->keys[k++] = "type";
    for (size_t i = 0; i < ARRAY_SIZE(model_kinds); i++) {
        for (const char *const *p = model_kinds[i]->keys; *p; p++)
            w->keys[k++] = *p;
        for (const char *const *p = model_kinds[i]->types; *p; p++)
            w->types[w->n_types++] = *p;
    }
    for (const char *const *p = common_keys; *p; p++)
        w->keys[k++] = *p;
    return true;
}

static void model_words_release(model_words *w)
{
    free(w->keys);
    free(w->types);
}

/* `type:`, required; the default kind's first type when it is missing or wrong. */
static model_type read_type(loader *ld, ynode *def, const char *mp, const model_words *w)
{
    model_type t = {.kind = model_kinds[0]};
    int v = 0;

    if (!ld_need(ld, def, mp, "type") ||
        ld_get_enum(ld, def, mp, "type", w->types, w->n_types, &v) <= 0)
        return t;
    t.ok = true;
    t.type = (size_t)v;
    for (size_t i = 0; i < ARRAY_SIZE(model_kinds); i++) {
        size_t n = count_words(model_kinds[i]->types);

        if (t.type < n) {
            t.kind = model_kinds[i];
            break;
        }
        t.type -= n;
    }
    return t;
}

/* ------------------------------------------------------------------------------------------ */
/* the keys every model has */

static void load_model_features(loader *ld, ynode *n, const char *path, pd_model_conf *m)
{
    size_t count;

    if (!ld_check_list(ld, n, path, true, 1, MAX_MODEL_FEATS, "feature names", &count))
        return;
    m->features = ld_calloc(ld, count, sizeof(int));
    if (m->features)
        features_resolve_list(ld, n, path, count, false, m->features, &m->n_features);
}

static void load_example_on(loader *ld, ynode *n, const char *path, pd_model_conf *m)
{
    char kp[KEYPATH_MAX], buf[64];
    size_t count;

    if (!ld_check_list(ld, n, path, true, 1, PD_MAX_EVENT_TYPES, "event types", &count))
        return;
    for (size_t i = 0; i < count; i++) {
        ynode *item = ld_list_at(n, i);
        int t;

        ld_path_item(kp, n, path, i);
        if (ld_resolve_type(ld, item, kp, false, &t) < 0)
            continue;
        if (m->example_on & (UINT32_C(1) << t))
            ld_report(ld, item, kp, "%s is listed twice", ld_describe(item, buf, sizeof(buf)));
        m->example_on |= UINT32_C(1) << t;
    }
}

static void load_positive_label(loader *ld, ynode *n, const char *path, pd_model_conf *m,
                                const model_type *t)
{
    char kp[KEYPATH_MAX];
    int v;

    m->label = PD_LABEL_POSITIVE_WITHIN;
    if (t->ok && t->kind->learns_value(t->type)) {
        ld_report_key(ld, n, path, "positive_on", "%s models learn a value: use \"value_from\"",
                      t->kind->types[t->type]);
        return;
    }
    ld_path_key(kp, path, "positive_on");
    ld_resolve_type(ld, ld_map_get(n, "positive_on"), kp, false, &m->positive_on);
    if (ld_need(ld, n, path, "within"))
        ld_get_duration(ld, n, path, "within", MS_PER_S, INT64_MAX, false, &m->window_ms);
    v = m->match;
    if (ld_get_enum(ld, n, path, "match", match_names, ARRAY_SIZE(match_names), &v) > 0)
        m->match = (pd_label_match)v;
}

static void load_value_label(loader *ld, ynode *n, const char *path, pd_model_conf *m)
{
    m->label = PD_LABEL_VALUE_FROM;
    for (size_t i = 0; i < 2; i++) {
        const char *key = i ? "match" : "within";

        if (ld_map_get(n, key))
            ld_report_key(ld, n, path, key, "applies to positive_on labels, not value_from");
    }
    if (ld_get_json_path(ld, n, path, "value_from", &m->value_field) > 0 &&
        !strcmp(m->value_field, "value")) {
        /* the word "value" names the mapped events.fields.value */
        free(m->value_field);
        m->value_field = ld_strdup(ld, ld->conf->events.field_value);
    }
}

static void load_label(loader *ld, ynode *n, const char *path, pd_model_conf *m,
                       const model_type *t)
{
    ynode *pos, *val;

    if (!ld_check_map(ld, n, path, label_keys))
        return;
    pos = ld_map_get(n, "positive_on");
    val = ld_map_get(n, "value_from");
    if (!pos && !val) {
        ld_report(ld, n, path, "needs \"positive_on\" (a later event) or \"value_from\" (a field)");
        return;
    }
    if (pos && val) {
        ld_report_key(ld, n, path, "value_from",
                      "conflicts with \"positive_on\" (a label is one or the other)");
        return;
    }
    if (pos)
        load_positive_label(ld, n, path, m, t);
    else
        load_value_label(ld, n, path, m);
}

/* The types, of every kind, whose models learn examples, joined with "and" into b: those that
 * learn a value (for_value 1), a class (0) or either (-1). */
static void join_example_types(pd_strbuf *b, int for_value)
{
    const char *names[32];
    size_t n_names = 0;

    for (size_t i = 0; i < ARRAY_SIZE(model_kinds); i++)
        for (size_t j = 0; model_kinds[i]->learns_examples && model_kinds[i]->types[j] &&
                           n_names < ARRAY_SIZE(names);
             j++)
            if (for_value < 0 || model_kinds[i]->learns_value(j) == (for_value == 1))
                names[n_names++] = model_kinds[i]->types[j];
    ld_join_names(b, names, n_names, " and ");
}

/* "applies to linear models, not logistic": the types, of every kind, whose models learn a
 * value (for_value) or a class. */
static void report_gate_key(loader *ld, ynode *n, const char *path, const char *key, bool for_value,
                            const model_type *t)
{
    pd_strbuf b = PD_STRBUF_INIT;

    join_example_types(&b, for_value ? 1 : 0);
    ld_report_key(ld, n, path, key, "applies to %s models, not %s", pd_strbuf_str(&b),
                  t->kind->types[t->type]);
    pd_strbuf_release(&b);
}

static void load_gate(loader *ld, ynode *n, const char *path, pd_model_conf *m, const model_type *t)
{
    pd_quality_gate *g = &m->gate;
    bool value = t->kind->learns_value(t->type);

    if (!ld_check_map(ld, n, path, gate_keys))
        return;
    g->enabled = true;
    for (size_t i = 0; i < 3; i++) {
        const char *key = gate_keys[i];
        bool for_value = i == 2;

        if (!ld_map_get(n, key))
            continue;
        if (t->ok && for_value != value) {
            report_gate_key(ld, n, path, key, for_value, t);
            continue;
        }
        if (i == 0)
            ld_get_double(ld, n, path, key, 0, false, 1, &g->min_auc);
        else
            ld_get_double(ld, n, path, key, 0, false, INFINITY,
                          i == 1 ? &g->max_log_loss : &g->max_rmse);
    }
    ld_get_int(ld, n, path, "min_examples", 0, INT64_MAX, &g->min_examples);
}

static void load_output(loader *ld, ynode *def, const char *mp, pd_model_conf *m)
{
    char kp[KEYPATH_MAX], buf[64];

    if (ld_get_string(ld, def, mp, "output", true, &m->output) <= 0)
        return;
    ld_path_key(kp, mp, "output");
    if (!ld_valid_redis_token(m->output))
        ld_report(ld, ld_map_get(def, "output"), kp,
                  "invalid field name %s (use letters, digits "
                  "and _ . : -)",
                  ld_describe(ld_map_get(def, "output"), buf, sizeof(buf)));
    else if (!strcmp(m->output, "ts") || !strcmp(m->output, "v"))
        ld_report(ld, ld_map_get(def, "output"), kp,
                  "\"%s\" is reserved (the user hash keeps \"ts\" and \"v\" itself)", m->output);
}

/* A kind that learns no examples has no features, labels or quality gate: say which kinds do. */
static void refuse_example_keys(loader *ld, ynode *def, const char *mp, const model_type *t)
{
    pd_strbuf b = PD_STRBUF_INIT;

    join_example_types(&b, -1);
    for (const char *const *k = example_keys; *k; k++)
        if (ld_map_get(def, *k))
            ld_report_key(ld, def, mp, *k, "applies to %s models, not %s", pd_strbuf_str(&b),
                          t->kind->types[t->type]);
    pd_strbuf_release(&b);
}

/* ------------------------------------------------------------------------------------------ */
/* one model, all models */

static void load_model(loader *ld, ynode *def, const char *mp, pd_model_conf *m,
                       const model_words *w)
{
    char kp[KEYPATH_MAX];
    model_type t;

    m->kind = model_kinds[0]->kind;
    model_kinds[0]->init(m);
    m->publish = true;
    m->metrics_window = 10000;
    m->gate.min_examples = 1000;
    m->positive_on = -1;
    m->match = PD_MATCH_USER;
    if (!ld_check_map(ld, def, mp, w->keys))
        return;
    t = read_type(ld, def, mp, w);
    if (t.kind != model_kinds[0]) {
        m->kind = t.kind->kind;
        t.kind->init(m);
    }
    t.kind->load(ld, def, mp, m, t.type, t.ok);
    if (!t.kind->learns_examples) {
        refuse_example_keys(ld, def, mp, &t);
        load_output(ld, def, mp, m);
        ld_get_bool(ld, def, mp, "publish", &m->publish);
        ld_get_int(ld, def, mp, "metrics_window", 10, 10000000, &m->metrics_window);
        return;
    }
    ld_path_key(kp, mp, "features");
    if (ld_need(ld, def, mp, "features"))
        load_model_features(ld, ld_map_get(def, "features"), kp, m);
    ld_path_key(kp, mp, "example_on");
    if (ld_need(ld, def, mp, "example_on"))
        load_example_on(ld, ld_map_get(def, "example_on"), kp, m);
    ld_path_key(kp, mp, "label");
    if (ld_need(ld, def, mp, "label"))
        load_label(ld, ld_map_get(def, "label"), kp, m, &t);
    ld_get_json_path(ld, def, mp, "weight_from", &m->weight_field);
    load_output(ld, def, mp, m);
    ld_get_bool(ld, def, mp, "publish", &m->publish);
    ld_get_int(ld, def, mp, "metrics_window", 10, 10000000, &m->metrics_window);
    if (ld_map_get(def, "quality_gate")) {
        ld_path_key(kp, mp, "quality_gate");
        load_gate(ld, ld_map_get(def, "quality_gate"), kp, m, &t);
    }
}

/* Each output is a field of the same Redis hash: two models may not write one. */
static void check_outputs(loader *ld, ynode *const *output_nodes)
{
    const pd_config *conf = ld->conf;
    char path[KEYPATH_MAX], mp[KEYPATH_MAX];

    for (size_t i = 0; i < conf->n_models; i++) {
        for (size_t j = 0; j < i; j++) {
            if (!str_eq(conf->models[i].output, conf->models[j].output) || !conf->models[i].output)
                continue;
            ld_path_key(mp, "models", conf->models[i].name);
            ld_path_key(path, mp, "output");
            ld_report(ld, output_nodes[i], path, "\"%s\" is also the output of model \"%s\"",
                      conf->models[i].output, conf->models[j].name);
            break;
        }
    }
}

void models_load(loader *ld, ynode *map)
{
    pd_config *conf = ld->conf;
    size_t n = pd_yaml_node_size(map);
    char path[KEYPATH_MAX];
    ynode **output_nodes = NULL;
    model_words w = {0};

    if (!ld_check_map(ld, map, "models", NULL))
        return;
    if (!n) {
        ld_report(ld, map, "models", "needs at least one model");
        return;
    }
    conf->models = ld_calloc(ld, n, sizeof(*conf->models));
    output_nodes = ld_calloc(ld, n, sizeof(*output_nodes));
    if (!conf->models || !output_nodes || !model_words_init(ld, &w))
        goto out_free;
    for (size_t i = 0; i < n; i++) {
        ynode *k = pd_yaml_node_key(map, i), *def = pd_yaml_node_value(map, i);
        const char *name = ld_entry_name(ld, map, i, "models", "model", path);
        pd_model_conf *m = &conf->models[conf->n_models];

        if (!name)
            continue;
        /* every layer sizes its tables by PD_MAX_MODELS; the rest is still read and checked */
        if (conf->n_models == PD_MAX_MODELS)
            ld_report(ld, k, path, "too many models: at most %d are allowed", PD_MAX_MODELS);
        conf->n_models++;
        m->name = ld_strdup(ld, name);
        ld_pos(ld, k, &m->pos);
        load_model(ld, def, path, m, &w);
        output_nodes[conf->n_models - 1] =
            ld_map_get(def, "output") ? ld_map_get(def, "output") : k;
        if (!m->output)
            m->output = ld_strdup(ld, name);
    }
    check_outputs(ld, output_nodes);

out_free:
    model_words_release(&w);
    free(output_nodes);
}

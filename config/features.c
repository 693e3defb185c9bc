/* features: one definition per name, of exactly one kind, with the keys that kind takes. Crosses
 * name other features, so they are resolved once every name is read, and stored after all
 * other features: every cross index is below its own. */
#include <stdlib.h>
#include <string.h>

#include "config/config_internal.h"

#define MAX_TRANSFORMS   16
#define MAX_RECENT_ITEMS 16

static const char *const feature_kind_names[] = {
    [PD_FEAT_CATEGORICAL] = "categorical",
    [PD_FEAT_NUMERIC] = "numeric",
    [PD_FEAT_CROSS] = "cross",
    [PD_FEAT_TEXT] = "text",
    [PD_FEAT_RECENCY] = "recency",
    [PD_FEAT_DECAYED_COUNT] = "decayed_count",
    [PD_FEAT_SPEND] = "spend",
    [PD_FEAT_DISTINCT_ITEMS] = "distinct_items",
    [PD_FEAT_RECENT_ITEMS] = "recent_items",
};
static const char *const transform_names[] = {"log1p", "clip"};

static const char *const feature_keys[] = {
    "categorical", "numeric",        "cross",        "text",       "recency",    "decayed_count",
    "spend",       "distinct_items", "recent_items", "vocabulary", "transforms", "standardize",
    "buckets",     "bigrams",        "max_tokens",   "half_life",  NULL};

#define KIND_BIT(k) (1u << (k))
#define NUMERIC_KINDS                                                                              \
    (KIND_BIT(PD_FEAT_NUMERIC) | KIND_BIT(PD_FEAT_RECENCY) | KIND_BIT(PD_FEAT_DECAYED_COUNT) |     \
     KIND_BIT(PD_FEAT_SPEND) | KIND_BIT(PD_FEAT_DISTINCT_ITEMS))

/* Which kinds each non-kind key applies to. */
static const struct {
    const char *key;
    unsigned kinds;
} feature_key_kinds[] = {
    {"vocabulary", KIND_BIT(PD_FEAT_CATEGORICAL)},
    {"transforms", NUMERIC_KINDS},
    {"standardize", NUMERIC_KINDS},
    {"buckets", NUMERIC_KINDS},
    {"bigrams", KIND_BIT(PD_FEAT_TEXT)},
    {"max_tokens", KIND_BIT(PD_FEAT_TEXT)},
    {"half_life", KIND_BIT(PD_FEAT_DECAYED_COUNT) | KIND_BIT(PD_FEAT_SPEND)},
};

static int feature_kind_of(const char *key)
{
    for (size_t i = 0; i < ARRAY_SIZE(feature_kind_names); i++)
        if (!strcmp(key, feature_kind_names[i]))
            return (int)i;
    return -1;
}

/* What the loader needs beyond pd_feature_conf while features are read in file order. */
typedef struct feature_src {
    ynode *cross; /* the cross: list, resolved once every name is known */
    const char *path_name;
} feature_src;

/* ------------------------------------------------------------------------------------------ */
/* numeric options */

/* The bounds of {clip: [lo, hi]} into t. Returns false after reporting. */
static bool load_clip(loader *ld, ynode *bounds, const char *kp, pd_transform *t)
{
    char cp[KEYPATH_MAX], buf[64];
    double v[2];
    bool ok = true;

    ld_path_key(cp, kp, "clip");
    if (pd_yaml_node_kind(bounds) != PD_YAML_LIST || pd_yaml_node_size(bounds) != 2) {
        ld_report(ld, bounds, cp, "expected [lo, hi], got %s",
                  ld_describe(bounds, buf, sizeof(buf)));
        return false;
    }
    for (size_t j = 0; j < 2; j++) {
        ynode *b = pd_yaml_node_item(bounds, j);
        char bp[KEYPATH_MAX];
        scalar sc;

        ld_path_index(bp, cp, j);
        if (!ld_scalar(ld, b, bp, "a number", &sc)) {
            ok = false;
            continue;
        }
        if (!units_parse_double(sc.value, &v[j])) {
            ld_report(ld, b, bp, "expected a number, got %s", ld_describe(b, buf, sizeof(buf)));
            ok = false;
        }
        free(sc.value);
    }
    if (!ok)
        return false;
    if (v[0] >= v[1]) {
        ld_report(ld, bounds, cp, "lower bound %g must be below upper bound %g", v[0], v[1]);
        return false;
    }
    t->lo = v[0];
    t->hi = v[1];
    return true;
}

/* One item of transforms: a word (log1p) or a mapping of one word to its arguments. */
static bool load_transform(loader *ld, ynode *item, const char *kp, pd_transform *t)
{
    ynode *word = item, *bounds = NULL;
    char buf[64];
    int kind;

    if (pd_yaml_node_kind(item) == PD_YAML_MAP) {
        if (pd_yaml_node_size(item) != 1) {
            ld_report(ld, item, kp, "expected one transform such as {clip: [lo, hi]}");
            return false;
        }
        word = pd_yaml_node_key(item, 0);
        bounds = pd_yaml_node_value(item, 0);
    } else if (pd_yaml_node_kind(item) != PD_YAML_SCALAR) {
        ld_report(ld, item, kp, "expected a transform (log1p or {clip: [lo, hi]}), got %s",
                  ld_describe(item, buf, sizeof(buf)));
        return false;
    }
    if (ld_match_word(ld, word, kp, "transform", transform_names, ARRAY_SIZE(transform_names),
                      &kind) < 0)
        return false;
    t->kind = (pd_transform_kind)kind;
    if (t->kind == PD_TF_LOG1P && bounds) {
        ld_report(ld, bounds, kp, "log1p takes no arguments");
        return false;
    }
    if (t->kind == PD_TF_CLIP) {
        if (!bounds) {
            ld_report(ld, item, kp, "clip needs bounds: {clip: [lo, hi]}");
            return false;
        }
        return load_clip(ld, bounds, kp, t);
    }
    return true;
}

static void load_transforms(loader *ld, ynode *n, const char *path, pd_feature_conf *f)
{
    char kp[KEYPATH_MAX];
    size_t count;

    if (!ld_check_list(ld, n, path, false, 0, MAX_TRANSFORMS, "transforms", &count) || !count)
        return;
    f->transforms = ld_calloc(ld, count, sizeof(pd_transform));
    if (!f->transforms)
        return;
    for (size_t i = 0; i < count; i++) {
        pd_transform t = {0};

        ld_path_index(kp, path, i);
        if (load_transform(ld, pd_yaml_node_item(n, i), kp, &t))
            f->transforms[f->n_transforms++] = t;
    }
}

static void load_buckets(loader *ld, ynode *n, const char *path, pd_feature_conf *f)
{
    char kp[KEYPATH_MAX], buf[64];
    size_t count;
    double *b;

    if (!ld_check_list(ld, n, path, false, 1, PD_MAX_BUCKETS, "numbers", &count))
        return;
    b = ld_calloc(ld, count, sizeof(double));
    if (!b)
        return;
    size_t ok = 0;
    for (size_t i = 0; i < count; i++) {
        ynode *item = pd_yaml_node_item(n, i);
        scalar sc;
        double v;

        ld_path_index(kp, path, i);
        if (!ld_scalar(ld, item, kp, "a number", &sc))
            continue;
        if (!units_parse_double(sc.value, &v)) {
            ld_report(ld, item, kp, "expected a number, got %s",
                      ld_describe(item, buf, sizeof(buf)));
        } else if (ok && v <= b[ok - 1]) {
            ld_report(ld, item, kp, "buckets must be strictly ascending (%g after %g)", v,
                      b[ok - 1]);
        } else {
            b[ok++] = v;
        }
        free(sc.value);
    }
    f->buckets = b;
    f->n_buckets = ok;
}

/* transforms, standardize and buckets, which every numeric kind takes. */
static void load_numeric_options(loader *ld, ynode *def, const char *path, pd_feature_conf *f)
{
    char kp[KEYPATH_MAX];

    ld_path_key(kp, path, "transforms");
    if (ld_map_get(def, "transforms"))
        load_transforms(ld, ld_map_get(def, "transforms"), kp, f);
    ld_get_bool(ld, def, path, "standardize", &f->standardize);
    ld_path_key(kp, path, "buckets");
    if (ld_map_get(def, "buckets")) {
        load_buckets(ld, ld_map_get(def, "buckets"), kp, f);
        if (f->standardize)
            ld_report_key(ld, def, path, "standardize",
                          "cannot be combined with buckets (buckets one-hot the raw value)");
    }
}

/* ------------------------------------------------------------------------------------------ */
/* one definition */

/* The kind of a definition: its one kind key (in *ret_key), or -1 after reporting none. */
static int find_kind(loader *ld, ynode *def, const char *path, ynode **ret_key)
{
    char kp[KEYPATH_MAX];
    int kind = -1;

    for (size_t i = 0; i < pd_yaml_node_size(def); i++) {
        ynode *k = pd_yaml_node_key(def, i);
        int k_kind;

        if (!ld_key_to_read(def, i) || (k_kind = feature_kind_of(pd_yaml_node_text(k))) < 0)
            continue;
        if (kind < 0) {
            kind = k_kind;
            *ret_key = k;
            continue;
        }
        ld_path_key(kp, path, pd_yaml_node_text(k));
        ld_report(ld, k, kp, "a feature has exactly one kind (\"%s\" is already given)",
                  feature_kind_names[kind]);
    }
    if (kind < 0) {
        pd_strbuf b = PD_STRBUF_INIT;

        ld_join_names(&b, feature_kind_names, ARRAY_SIZE(feature_kind_names), " or ");
        ld_report(ld, def, path, "needs a kind: %s", pd_strbuf_str(&b));
        pd_strbuf_release(&b);
    }
    return kind;
}

/* Reports each key of def that the kind does not take, naming the kinds that do. */
static void check_keys_apply(loader *ld, ynode *def, const char *path, int kind)
{
    char kp[KEYPATH_MAX];

    for (size_t i = 0; i < pd_yaml_node_size(def); i++) {
        ynode *k = pd_yaml_node_key(def, i);

        if (!ld_key_to_read(def, i))
            continue;
        for (size_t j = 0; j < ARRAY_SIZE(feature_key_kinds); j++) {
            if (strcmp(pd_yaml_node_text(k), feature_key_kinds[j].key) ||
                (feature_key_kinds[j].kinds & KIND_BIT(kind)))
                continue;
            const char *names[ARRAY_SIZE(feature_kind_names)];
            size_t n = 0;
            pd_strbuf b = PD_STRBUF_INIT;

            for (size_t m = 0; m < ARRAY_SIZE(feature_kind_names); m++)
                if (feature_key_kinds[j].kinds & KIND_BIT(m))
                    names[n++] = feature_kind_names[m];
            ld_join_names(&b, names, n, " and ");
            ld_path_key(kp, path, pd_yaml_node_text(k));
            ld_report(ld, k, kp, "applies to %s features, not %s", pd_strbuf_str(&b),
                      feature_kind_names[kind]);
            pd_strbuf_release(&b);
        }
    }
}

/* The value of the kind key (categorical: FIELD, cross: [...], recency: TYPE, ...). */
static void load_kind_value(loader *ld, ynode *def, const char *path, ynode *kind_key,
                            pd_feature_conf *f, feature_src *src)
{
    const char *key = pd_yaml_node_text(kind_key);
    char kp[KEYPATH_MAX];
    ynode *kv = ld_map_get(def, key);

    ld_path_key(kp, path, key);
    if (!kv) {
        ld_report(ld, pd_yaml_node_value(def, (size_t)ld_map_find(def, key)), kp,
                  "a value is required");
        return;
    }
    switch (f->kind) {
    case PD_FEAT_CATEGORICAL:
    case PD_FEAT_NUMERIC:
    case PD_FEAT_TEXT:
        ld_get_json_path(ld, def, path, key, &f->field);
        break;
    case PD_FEAT_CROSS:
        src->cross = kv;
        break;
    case PD_FEAT_RECENCY:
    case PD_FEAT_DECAYED_COUNT:
    case PD_FEAT_SPEND:
    case PD_FEAT_DISTINCT_ITEMS:
        ld_resolve_type(ld, kv, kp, true, &f->event_type);
        break;
    case PD_FEAT_RECENT_ITEMS:
        ld_get_int(ld, def, path, "recent_items", 1, MAX_RECENT_ITEMS, &f->count);
        break;
    }
}

/* The keys that only some kinds take. */
static void load_kind_options(loader *ld, ynode *def, const char *path, pd_feature_conf *f)
{
    if (f->kind == PD_FEAT_CATEGORICAL)
        ld_get_int(ld, def, path, "vocabulary", 1, INT64_MAX, &f->vocabulary);
    if (f->kind == PD_FEAT_TEXT) {
        f->max_tokens = 64;
        ld_get_bool(ld, def, path, "bigrams", &f->bigrams);
        ld_get_int(ld, def, path, "max_tokens", 1, 1024, &f->max_tokens);
    }
    if (f->kind == PD_FEAT_DECAYED_COUNT) {
        if (ld_need(ld, def, path, "half_life"))
            ld_get_duration(ld, def, path, "half_life", MS_PER_S, INT64_MAX, false,
                            &f->half_life_ms);
    }
    if (f->kind == PD_FEAT_SPEND)
        ld_get_duration(ld, def, path, "half_life", MS_PER_S, INT64_MAX, true, &f->half_life_ms);
    if (KIND_BIT(f->kind) & NUMERIC_KINDS)
        load_numeric_options(ld, def, path, f);
}

/* Reads one feature definition, all but its cross references. */
static void load_feature(loader *ld, ynode *def, const char *path, pd_feature_conf *f,
                         feature_src *src)
{
    ynode *kind_key = NULL;
    int kind;

    f->event_type = -1;
    for (size_t i = 0; i < PD_MAX_CROSS; i++)
        f->cross[i] = -1;
    f->kind = PD_FEAT_CATEGORICAL;
    if (!ld_check_map(ld, def, path, feature_keys))
        return;
    kind = find_kind(ld, def, path, &kind_key);
    if (kind < 0)
        return;
    f->kind = (pd_feature_kind)kind;
    check_keys_apply(ld, def, path, kind);
    load_kind_value(ld, def, path, kind_key, f, src);
    if (ld_map_get(def, pd_yaml_node_text(kind_key)))
        load_kind_options(ld, def, path, f);
}

/* ------------------------------------------------------------------------------------------ */
/* names */

/* "undefined feature" with a did-you-mean among the features read so far. */
static void report_undefined(loader *ld, ynode *item, const char *kp, const char *name)
{
    const pd_config *conf = ld->conf;
    const char **names = ld_calloc(ld, conf->n_features, sizeof(char *));
    const char *hint = NULL;
    char buf[64];

    if (names) {
        for (size_t j = 0; j < conf->n_features; j++)
            names[j] = conf->features[j].name ? conf->features[j].name : "";
        hint = ld_did_you_mean(name, names, conf->n_features);
    }
    if (hint)
        ld_report(ld, item, kp, "undefined feature %s (did you mean \"%s\"?)",
                  ld_describe(item, buf, sizeof(buf)), hint);
    else
        ld_report(ld, item, kp, "undefined feature %s", ld_describe(item, buf, sizeof(buf)));
    free(names);
}

void features_resolve_list(loader *ld, ynode *n, const char *path, size_t count, bool no_cross,
                           int *out, size_t *ret_n)
{
    const pd_config *conf = ld->conf;
    char kp[KEYPATH_MAX], buf[64];

    for (size_t i = 0; i < count; i++) {
        ynode *item = ld_list_at(n, i);
        scalar sc;
        int idx;
        bool dup = false;

        ld_path_item(kp, n, path, i);
        if (!ld_scalar(ld, item, kp, "a feature name", &sc))
            continue;
        idx = pd_config_feature_index(conf, sc.value);
        for (size_t j = 0; j < *ret_n && !dup; j++)
            dup = idx >= 0 && out[j] == idx;
        if (idx < 0) {
            report_undefined(ld, item, kp, sc.value);
        } else if (no_cross && conf->features[idx].kind == PD_FEAT_CROSS) {
            ld_report(ld, item, kp, "%s is a cross; a cross cannot include another cross",
                      ld_describe(item, buf, sizeof(buf)));
        } else if (dup) {
            ld_report(ld, item, kp, "%s is listed twice", ld_describe(item, buf, sizeof(buf)));
        } else {
            out[(*ret_n)++] = idx;
        }
        free(sc.value);
    }
}

/* Resolves a cross's names once every feature is known; crosses sit after their parts. */
static void resolve_cross(loader *ld, pd_feature_conf *f, ynode *n, const char *path)
{
    size_t count;

    if (ld_check_list(ld, n, path, false, 2, PD_MAX_CROSS, "feature names", &count))
        features_resolve_list(ld, n, path, count, true, f->cross, &f->n_cross);
}

/* Parts before crosses, each group in file order, into conf->features; src follows along. */
static size_t order_features(pd_config *conf, const pd_feature_conf *tmp, const feature_src *src,
                             size_t n, feature_src *final_src)
{
    size_t out = 0;

    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < n; i++) {
            if ((tmp[i].kind == PD_FEAT_CROSS) != (pass == 1))
                continue;
            conf->features[out] = tmp[i];
            final_src[out] = src[i];
            out++;
        }
    }
    return out;
}

void features_load(loader *ld, ynode *map)
{
    pd_config *conf = ld->conf;
    size_t n = pd_yaml_node_size(map), m = 0;
    pd_feature_conf *tmp = NULL;
    feature_src *src = NULL, *final_src = NULL;
    char path[KEYPATH_MAX];

    if (!ld_check_map(ld, map, "features", NULL) || !n)
        return;
    tmp = ld_calloc(ld, n, sizeof(*tmp));
    src = ld_calloc(ld, n, sizeof(*src));
    final_src = ld_calloc(ld, n, sizeof(*final_src));
    conf->features = ld_calloc(ld, n, sizeof(*conf->features));
    if (!tmp || !src || !final_src || !conf->features)
        goto out_free;
    for (size_t i = 0; i < n; i++) {
        const char *name = ld_entry_name(ld, map, i, "features", "feature", path);

        if (!name)
            continue;
        tmp[m].name = ld_strdup(ld, name);
        ld_pos(ld, pd_yaml_node_key(map, i), &tmp[m].pos);
        load_feature(ld, pd_yaml_node_value(map, i), path, &tmp[m], &src[m]);
        src[m].path_name = name;
        m++;
    }
    conf->n_features = order_features(conf, tmp, src, m, final_src);
    for (size_t i = 0; i < conf->n_features; i++) {
        if (!final_src[i].cross)
            continue;
        char cp[KEYPATH_MAX];

        ld_path_key(path, "features", final_src[i].path_name);
        ld_path_key(cp, path, "cross");
        resolve_cross(ld, &conf->features[i], final_src[i].cross, cp);
    }
    for (size_t i = 0; i < conf->n_features; i++)
        if (conf->features[i].kind == PD_FEAT_RECENT_ITEMS &&
            conf->features[i].count > conf->state.recent_items)
            conf->state.recent_items = conf->features[i].count;

out_free:
    free(tmp);
    free(src);
    free(final_src);
}

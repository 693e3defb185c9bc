/* propensityd check FILE: validate a pipeline config and summarise what it would run. */
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "config/config.h"
#include "daemon/commands.h"
#include "models/learner.h"
#include "models/recommender.h"
#include "pipeline/featurizer.h"
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

static void check_usage(FILE *out)
{
    fprintf(out, "usage: propensityd check FILE\n\n"
                 "Validates FILE (every error with file:line:column) and prints a summary:\n"
                 "topics, features, models and the memory their weight tables take.\n"
                 "Exit status 0 when valid, 1 when not.\n");
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

/* The learner's own range checks, beyond what the YAML layer knows; how many failed. */
static int check_learners(const char *path, const pd_config *conf)
{
    int bad = 0;
    for (size_t i = 0; i < conf->n_models; i++) {
        char err[256];
        if (conf->models[i].kind != PD_MODEL_KIND_GLM)
            continue;
        if (pd_learner_check_conf(&conf->models[i].learner, err, sizeof err) < 0) {
            fprintf(stderr, "%s:%d:%d: error: models.%s: %s\n", path, conf->models[i].pos.line,
                    conf->models[i].pos.column, conf->models[i].name, err);
            bad++;
        }
    }
    return bad;
}

/* One model's lines; returns its weight table's bytes. */
static double print_model(const pd_config *conf, const pd_model_conf *m)
{
    char buf[64];
    const pd_learner_conf *lc = &m->learner;
    double entries = ldexp(1.0, lc->bits);
    double bytes = entries * (double)pd_learner_bytes_per_weight(lc);
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
    double per_user = (double)pd_user_state_bytes_per_user(&layout) + 16; /* + the id */
    if (!pd_config_needs_user_state(conf)) {
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

/* The config with its positioned errors, or NULL after printing them. */
static pd_config *load_checked(const char *path)
{
    pd_diag *diag = pd_diag_new();
    if (!diag) {
        fprintf(stderr, "propensityd: out of memory\n");
        return NULL;
    }
    pd_config *conf = pd_config_load(path, diag);
    if (!conf) {
        pd_diag_print(diag, stderr);
        fprintf(stderr, "%s: %zu error%s\n", path, pd_diag_count(diag),
                pd_diag_count(diag) == 1 ? "" : "s");
    }
    pd_diag_free(diag);
    return conf;
}

int pd_cmd_check(int argc, char **argv)
{
    if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        check_usage(stdout);
        return 0;
    }
    if (argc != 2) {
        check_usage(stderr);
        return 2;
    }
    const char *path = argv[1];
    pd_config *conf = load_checked(path);
    if (!conf)
        return 1;
    print_inputs(path, conf);
    char err[256] = "";
    pd_featurizer *fz = NULL;
    if (check_learners(path, conf) > 0 || !(fz = pd_featurizer_new(conf, NULL, err, sizeof err))) {
        if (!fz && err[0])
            fprintf(stderr, "%s: %s\n", path, err);
        pd_config_free(conf);
        return 1;
    }
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
    pd_featurizer_free(fz);
    pd_config_free(conf);
    return 0;
}

/* propensityd check FILE: validate a pipeline config and summarise what it would run. */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "config/config.h"
#include "daemon/commands.h"
#include "models/learner.h"
#include "pipeline/user_state.h"

static const char *const kind_names[] = {"categorical",   "numeric",        "cross",
                                         "text",          "recency",        "decayed_count",
                                         "spend",         "distinct_items", "recent_items"};
static const char *const type_names[] = {"logistic", "linear", "hinge"};
static const char *const opt_names[] = {"ftrl", "adagrad", "sgd"};

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
    pd_diag *diag = pd_diag_new();
    if (!diag) {
        fprintf(stderr, "propensityd: out of memory\n");
        return 1;
    }
    pd_config *conf = pd_config_load(path, diag);
    if (!conf) {
        pd_diag_print(diag, stderr);
        fprintf(stderr, "%s: %zu error%s\n", path, pd_diag_count(diag),
                pd_diag_count(diag) == 1 ? "" : "s");
        pd_diag_free(diag);
        return 1;
    }
    pd_diag_free(diag);

    char buf[64];
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
    double total = 0;
    printf("models: %zu\n", conf->n_models);
    for (size_t i = 0; i < conf->n_models; i++) {
        const pd_model_conf *m = &conf->models[i];
        double bytes = (double)((size_t)1 << m->learner.bits) *
                       (double)pd_learner_bytes_per_weight(&m->learner);
        total += bytes;
        human_bytes(buf, sizeof buf, bytes);
        printf("  %-24s %s/%s, 2^%d weights (%s), %zu feature(s), output \"%s\"\n", m->name,
               type_names[m->learner.type], opt_names[m->learner.optimizer], m->learner.bits, buf,
               m->n_features, m->output ? m->output : m->name);
    }
    human_bytes(buf, sizeof buf, total);
    printf("memory: weight tables %s", buf);
    printf("\n");
    pd_config_free(conf);
    return 0;
}

/* How config.c assembles a pd_config, internal to config/: the readers of the sections, the
 * interface each model kind implements, and the fingerprint. Each block names the file that
 * defines it; the tools they are written with are in loader.h. */
#ifndef PD_CONFIG_INTERNAL_H
#define PD_CONFIG_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "config/config.h"
#include "config/loader.h"

/* NULL equals only NULL. */
static inline bool str_eq(const char *a, const char *b)
{
    if (!a || !b)
        return a == b;
    return strcmp(a, b) == 0;
}

/* ---- sections.c: the top level and the sections without a file of their own ---- */

/* The defaults of every section, before the file is read. */
void sections_set_defaults(loader *ld);
/* Reads the whole document: each section in the order their references need. */
void sections_load(loader *ld, ynode *root);

/* ---- features.c ---- */

void features_load(loader *ld, ynode *map);
/* Resolves the count feature names of list n (checked by ld_check_list) into out, appending at
 * *ret_n: an undefined name gets a did-you-mean among the features read so far, a repeat is
 * refused, and with no_cross so is a cross. */
void features_resolve_list(loader *ld, ynode *n, const char *path, size_t count, bool no_cross,
                           int *out, size_t *ret_n);

/* ---- models.c: the keys every model has, whatever its kind ---- */

void models_load(loader *ld, ynode *map);

/* A model kind: the words of `type:` that select it and the keys only its models have.
 * models.c reads the keys every model has and reaches a kind only through this table, so a
 * new kind is a new model_<kind>.c and one line in models.c's list of kinds. */
typedef struct model_kind_ops {
    pd_model_kind kind;
    const char *const *types; /* NULL-terminated */
    const char *const *keys;  /* NULL-terminated, beyond the keys every model has */
    /* The kind's defaults, set before any key is read. */
    void (*init)(pd_model_conf *m);
    /* Reads the kind's keys from def for types[type]; type_ok is false when `type:` is
     * missing or wrong (type is then 0, and checks that depend on it are skipped). */
    void (*load)(loader *ld, ynode *def, const char *mp, pd_model_conf *m, size_t type,
                 bool type_ok);
    /* Whether types[type] learns a value (a regression) rather than a class: its labels are
     * value_from only, its quality gate max_rmse. */
    bool (*learns_value)(size_t type);
    /* Whether its models learn examples of features and labels, and so take the common keys
     * features, example_on, label, weight_from and quality_gate (required or optional as
     * models.c says); a kind that does not refuses them. */
    bool learns_examples;
} model_kind_ops;

/* model_glm.c: logistic, linear and hinge models with FTRL, AdaGrad or SGD */
extern const model_kind_ops model_glm_ops;
/* model_recommender.c: lists of items per user */
extern const model_kind_ops model_recommender_ops;

/* ---- fingerprint.c ---- */

/* The hash of everything pd_config holds but positions, the path and secret values. */
uint64_t config_fingerprint(const pd_config *conf);

#endif

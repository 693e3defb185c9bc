/* The GLM kind of model: type logistic, linear or hinge, learned by FTRL-Proximal, AdaGrad or
 * SGD. Its keys fill pd_model_conf.learner, which models/ takes as it is. A key that belongs to
 * another loss or optimizer than the one in use is an error naming the one in use. */
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "config/config_internal.h"

/* in pd_model_type order */
static const char *const glm_types[] = {"logistic", "linear", "hinge", NULL};
static const char *const glm_keys[] = {
    "loss",    "huber_delta",   "optimizer",      "alpha",     "beta", "l1",
    "l2",      "learning_rate", "power_t",        "initial_t", "bits", "intercept",
    "weights", "admission",     "max_abs_margin", NULL};

static const char *const loss_names[] = {
    [PD_LOSS_LOGISTIC] = "logistic",
    [PD_LOSS_SQUARED] = "squared",
    [PD_LOSS_HUBER] = "huber",
    [PD_LOSS_HINGE] = "hinge",
};
static const char *const optimizer_names[] = {"ftrl", "adagrad", "sgd", "ftrl_multi"};
static const char *const weight_format_names[] = {"float32", "float16"};

#define OPT_BIT(o) (1u << (o))
#define FTRL_BITS (OPT_BIT(PD_OPT_FTRL) | OPT_BIT(PD_OPT_FTRL_MULTI))

/* The optimizers' hyper-parameters: which optimizers take each, its range, where it goes. */
static const struct {
    const char *key;
    unsigned opts;
    double lo;
    bool lo_open;
    double hi;
    size_t offset;
} hyper_params[] = {
    {"alpha", FTRL_BITS, 0, true, INFINITY, offsetof(pd_learner_conf, alpha)},
    {"beta", FTRL_BITS, 0, true, INFINITY, offsetof(pd_learner_conf, beta)},
    {"l1", FTRL_BITS, 0, false, INFINITY, offsetof(pd_learner_conf, l1)},
    {"l2", FTRL_BITS | OPT_BIT(PD_OPT_ADAGRAD) | OPT_BIT(PD_OPT_SGD), 0, false, INFINITY,
     offsetof(pd_learner_conf, l2)},
    {"learning_rate", OPT_BIT(PD_OPT_ADAGRAD) | OPT_BIT(PD_OPT_SGD), 0, true, INFINITY,
     offsetof(pd_learner_conf, learning_rate)},
    {"power_t", OPT_BIT(PD_OPT_SGD), 0, false, 1, offsetof(pd_learner_conf, power_t)},
    {"initial_t", OPT_BIT(PD_OPT_SGD), 0, true, INFINITY, offsetof(pd_learner_conf, initial_t)},
};

static void glm_init(pd_model_conf *m)
{
    m->learner = (pd_learner_conf){
        .type = PD_MODEL_LOGISTIC,
        .loss = PD_LOSS_LOGISTIC,
        .huber_delta = 1.0,
        .optimizer = PD_OPT_FTRL,
        /* measured by tests/bench/quality_defaults.py (its README section): on streams with a
         * known optimum, progressive log loss is flat from 0.25 to 0.3 and 0.1 closes 5 to 9
         * points less of the gap from the base rate to the Bayes optimum; 0.25 is the end of
         * that plateau that costs the small dense sets (bank marketing) less */
        .alpha = 0.25,
        .beta = 1.0,
        .learning_rate = 0.1,
        .power_t = 0.5,
        .initial_t = 1000,
        .bits = 20,
        .intercept = true,
        .weights = PD_WEIGHTS_F32,
        .max_abs_margin = 35,
    };
}

static bool glm_learns_value(size_t type)
{
    return type == PD_MODEL_LINEAR;
}

/* loss: and huber_delta:, which only linear models take. */
static void load_loss(loader *ld, ynode *map, const char *mp, pd_learner_conf *lc, bool type_ok)
{
    static const char *const linear_losses[] = {"squared", "huber"};
    bool loss_ok = type_ok;

    if (ld_map_get(map, "loss")) {
        if (type_ok && lc->type != PD_MODEL_LINEAR) {
            ld_report_key(ld, map, mp, "loss", "applies to linear models, not %s",
                          glm_types[lc->type]);
        } else {
            int v = 0;
            int ret = ld_get_enum(ld, map, mp, "loss", linear_losses, 2, &v);

            if (ret > 0)
                lc->loss = v ? PD_LOSS_HUBER : PD_LOSS_SQUARED;
            loss_ok = loss_ok && ret > 0;
        }
    }
    if (ld_map_get(map, "huber_delta")) {
        if (loss_ok && lc->loss != PD_LOSS_HUBER)
            ld_report_key(ld, map, mp, "huber_delta", "applies to loss huber, not %s",
                          loss_names[lc->loss]);
        else
            ld_get_double(ld, map, mp, "huber_delta", 0, true, INFINITY, &lc->huber_delta);
    }
}

static void report_not_for_optimizer(loader *ld, ynode *map, const char *mpath, const char *key,
                                     unsigned opts, pd_optimizer opt)
{
    const char *names[ARRAY_SIZE(optimizer_names)];
    size_t n = 0;
    pd_strbuf b = PD_STRBUF_INIT;

    for (size_t i = 0; i < ARRAY_SIZE(optimizer_names); i++)
        if (opts & OPT_BIT(i))
            names[n++] = optimizer_names[i];
    ld_join_names(&b, names, n, " and ");
    ld_report_key(ld, map, mpath, key, "applies to optimizer%s %s, not %s", n > 1 ? "s" : "",
                  pd_strbuf_str(&b), optimizer_names[opt]);
    pd_strbuf_release(&b);
}

/* optimizer: and the hyper-parameters of the one chosen. */
static void load_optimizer(loader *ld, ynode *map, const char *mp, pd_learner_conf *lc)
{
    int opt = lc->type == PD_MODEL_LOGISTIC ? PD_OPT_FTRL_MULTI : PD_OPT_FTRL;
    bool opt_ok = true;

    if (ld_get_enum(ld, map, mp, "optimizer", optimizer_names, ARRAY_SIZE(optimizer_names), &opt) <
        0)
        opt_ok = false;
    lc->optimizer = (pd_optimizer)opt;
    lc->learning_rate = lc->optimizer == PD_OPT_SGD ? 0.5 : 0.1;
    if (lc->optimizer == PD_OPT_FTRL_MULTI)
        lc->alpha = 0.3;
    for (size_t i = 0; i < ARRAY_SIZE(hyper_params); i++) {
        if (!ld_map_get(map, hyper_params[i].key))
            continue;
        if (opt_ok && !(hyper_params[i].opts & OPT_BIT(lc->optimizer))) {
            report_not_for_optimizer(ld, map, mp, hyper_params[i].key, hyper_params[i].opts,
                                     lc->optimizer);
            continue;
        }
        ld_get_double(ld, map, mp, hyper_params[i].key, hyper_params[i].lo, hyper_params[i].lo_open,
                      hyper_params[i].hi, (double *)((char *)lc + hyper_params[i].offset));
    }
}

static void glm_load(loader *ld, ynode *def, const char *mp, pd_model_conf *m, size_t type,
                     bool type_ok)
{
    pd_learner_conf *lc = &m->learner;
    int v;

    lc->type = (pd_model_type)type;
    lc->loss = lc->type == PD_MODEL_LINEAR  ? PD_LOSS_SQUARED
               : lc->type == PD_MODEL_HINGE ? PD_LOSS_HINGE
                                            : PD_LOSS_LOGISTIC;
    load_loss(ld, def, mp, lc, type_ok);
    load_optimizer(ld, def, mp, lc);
    /* its lanes are mixed by their likelihood of the label */
    if (type_ok && lc->optimizer == PD_OPT_FTRL_MULTI && lc->type != PD_MODEL_LOGISTIC)
        ld_report_key(ld, def, mp, "optimizer", "ftrl_multi is for logistic models, not %s",
                      glm_types[lc->type]);
    ld_get_int32(ld, def, mp, "bits", PD_MIN_HASH_BITS, PD_MAX_HASH_BITS, &lc->bits);
    ld_get_bool(ld, def, mp, "intercept", &lc->intercept);
    v = lc->weights;
    if (ld_get_enum(ld, def, mp, "weights", weight_format_names, ARRAY_SIZE(weight_format_names),
                    &v) > 0)
        lc->weights = (pd_weight_format)v;
    /* the learner counts sightings in one byte per weight */
    ld_get_int(ld, def, mp, "admission", 0, 255, &lc->admission_min_count);
    /* a linear model's output is a value (an order value, say), not a margin: clipping it at
     * the logistic default would cap every prediction at 35 */
    if (type_ok && lc->type == PD_MODEL_LINEAR)
        lc->max_abs_margin = 1e9;
    ld_get_double(ld, def, mp, "max_abs_margin", 0, true, 1e12, &lc->max_abs_margin);
}

const model_kind_ops model_glm_ops = {
    .kind = PD_MODEL_KIND_GLM,
    .types = glm_types,
    .keys = glm_keys,
    .init = glm_init,
    .load = glm_load,
    .learns_value = glm_learns_value,
    .learns_examples = true,
};

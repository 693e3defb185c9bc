/* The generalised linear model kind: logistic, linear and hinge models over hashed sparse
 * features (models/learner.c does the maths), with their progressive metrics
 * (models/metrics.c) and the quality gate that decides whether their scores are published. */
#include "models/glm.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"
#include "models/learner.h"
#include "models/metrics.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

#define GLM_SECTION_VERSION 1
#define DEFAULT_METRICS_WINDOW 10000

typedef struct glm {
    pd_learner_conf lconf;
    pd_learner *learner;
    pd_metrics *metrics;
    size_t metrics_window;
    pd_quality_gate gate;
    bool gate_open;
    uint64_t examples;
    uint64_t next_gate_check;
    bool sync; /* capturing deltas for model sync */
    size_t delta_entries; /* entries of the sealed delta */
} glm;

static pd_metrics_kind metrics_kind(pd_model_type t)
{
    return t == PD_MODEL_LINEAR ? PD_METRICS_REGRESSOR
                                : (t == PD_MODEL_HINGE ? PD_METRICS_MARGIN : PD_METRICS_CLASSIFIER);
}

static void glm_destroy(void *state)
{
    glm *g = state;
    if (!g)
        return;
    pd_learner_free(g->learner);
    pd_metrics_free(g->metrics);
    free(g);
}

/* The model without its learner and metrics. */
static glm *glm_shell(const pd_model_conf *conf, char *errbuf, size_t errlen)
{
    glm *g = calloc(1, sizeof *g);
    if (!g) {
        pd_set_error(errbuf, errlen, "out of memory");
        return NULL;
    }
    g->lconf = conf->learner;
    g->metrics_window =
        conf->metrics_window > 0 ? (size_t)conf->metrics_window : DEFAULT_METRICS_WINDOW;
    g->gate = conf->gate;
    g->gate_open = true;
    return g;
}

static void *glm_create(const pd_model_conf *conf, char *errbuf, size_t errlen)
{
    char err[256];
    glm *g = glm_shell(conf, errbuf, errlen);
    if (!g)
        return NULL;
    g->learner = pd_learner_new(&g->lconf, err, sizeof err);
    if (!g->learner) {
        pd_set_error(errbuf, errlen, "%s", err);
        goto out_free;
    }
    g->metrics = pd_metrics_new(metrics_kind(g->lconf.type), g->metrics_window);
    if (!g->metrics) {
        pd_set_error(errbuf, errlen, "out of memory for the metrics");
        goto out_free;
    }
    return g;

out_free:
    glm_destroy(g);
    return NULL;
}

/* The learner keeps per-coordinate optimizer state in a table of 2^bits entries and refuses
 * to switch type, loss, optimizer, bits or storage: those make the weights mean something else. */
static uint64_t glm_fingerprint(const pd_model_conf *conf)
{
    const pd_learner_conf *lc = &conf->learner;
    int64_t parts[] = {lc->type, lc->loss, lc->bits, lc->weights, lc->intercept, lc->optimizer};
    return XXH3_64bits(parts, sizeof parts);
}

static int glm_reconfigure(void *state, const pd_model_conf *conf)
{
    glm *g = state;
    if (pd_learner_set_conf(g->learner, &conf->learner) < 0)
        return -ENOMEM;
    g->lconf = conf->learner;
    g->gate = conf->gate;
    g->next_gate_check = 0; /* judge the new gate at the next example */
    return 0;
}

static pd_model_output glm_output(const void *state)
{
    const glm *g = state;
    return g->lconf.type == PD_MODEL_LINEAR
               ? PD_OUTPUT_VALUE
               : (g->lconf.type == PD_MODEL_HINGE ? PD_OUTPUT_MARGIN : PD_OUTPUT_PROBABILITY);
}

static double glm_predict(const void *state, const pd_feature *x, size_t n)
{
    const glm *g = state;
    return pd_learner_predict(g->learner, x, n);
}

static void glm_prefetch(const void *state, const pd_feature *x, size_t n)
{
    const glm *g = state;
    pd_learner_prefetch(g->learner, x, n);
}

/* The gate judges the recent window at most every tenth of it, so the check stays cheap;
 * before gate.min_examples it stays open. */
static void gate_check(glm *g)
{
    if (!g->gate.enabled || g->examples < g->next_gate_check)
        return;
    pd_metrics_report rep;
    pd_metrics_report_get(g->metrics, &rep);
    uint64_t step = rep.recent_examples / 10 > 100 ? rep.recent_examples / 10 : 100;
    g->next_gate_check = g->examples + step;
    if ((int64_t)g->examples < g->gate.min_examples) {
        g->gate_open = true;
        return;
    }
    bool ok = true;
    if (g->lconf.type == PD_MODEL_LINEAR) {
        if (g->gate.max_rmse > 0 && !(rep.recent_rmse <= g->gate.max_rmse))
            ok = false;
    } else {
        if (g->gate.min_auc > 0 && isfinite(rep.recent_auc) && rep.recent_auc < g->gate.min_auc)
            ok = false;
        if (g->gate.max_log_loss > 0 && g->lconf.type == PD_MODEL_LOGISTIC &&
            !(rep.recent_log_loss <= g->gate.max_log_loss))
            ok = false;
    }
    g->gate_open = ok;
}

static double glm_learn(void *state, const pd_feature *x, size_t n, double label, double weight)
{
    glm *g = state;
    if (g->sync)
        pd_learner_delta_mark(g->learner, x, n);
    double pred = pd_learner_learn(g->learner, x, n, label, weight);
    pd_metrics_add(g->metrics, pred, label, weight);
    g->examples++;
    gate_check(g);
    return pred;
}

static bool glm_publishing(const void *state)
{
    const glm *g = state;
    return g->gate_open;
}

/* ftrl_multi serves a mixture of its lanes: which alpha the mixture leans on, and how much. */
static void mixture_metrics(const glm *g, pd_model_metric *out, size_t max, size_t *k)
{
    double alpha[PD_LEARNER_LANES], mix[PD_LEARNER_LANES], log_alpha = 0.0, top = 0.0;
    size_t lanes = pd_learner_mixture(g->learner, alpha, mix);

    if (lanes == 0)
        return;
    for (size_t j = 0; j < lanes; j++) {
        log_alpha += mix[j] * log(alpha[j]);
        top = fmax(top, mix[j]);
    }
    if (*k < max)
        out[(*k)++] = (pd_model_metric){
            "alpha_mixture",
            "ftrl_multi: its lanes' alphas, geometric mean weighted by their mixture weights.",
            exp(log_alpha)};
    if (*k < max)
        out[(*k)++] = (pd_model_metric){
            "lane_weight_max",
            "ftrl_multi: the largest lane's mixture weight (1: it serves alone).", top};
}

#define PUT(n, h, v)                                                                               \
    do {                                                                                           \
        if (k < max)                                                                               \
            out[k++] = (pd_model_metric){(n), (h), (double)(v)};                                   \
    } while (0)

static size_t glm_metrics(const void *state, bool full, pd_model_metric *out, size_t max)
{
    const glm *g = state;
    pd_metrics_report m;
    pd_metrics_report_get(g->metrics, &m);
    size_t k = 0;
    switch (g->lconf.type) {
    case PD_MODEL_LINEAR:
        PUT("rmse", "Progressive RMSE, all time.", m.rmse);
        PUT("mae", "Progressive mean absolute error, all time.", m.mae);
        PUT("r2", "Progressive R squared, all time.", m.r2);
        PUT("rmse_recent", "Progressive RMSE over the recent window.", m.recent_rmse);
        break;
    case PD_MODEL_HINGE:
        PUT("hinge_loss", "Progressive hinge loss, all time.", m.hinge_loss);
        PUT("auc", "Progressive AUC, all time.", m.auc);
        PUT("auc_recent", "Progressive AUC over the recent window.", m.recent_auc);
        PUT("accuracy", "Progressive accuracy (margin > 0), all time.", m.accuracy);
        break;
    case PD_MODEL_LOGISTIC:
    default:
        PUT("log_loss", "Progressive (predict-then-learn) log loss, all time.", m.log_loss);
        PUT("auc", "Progressive AUC, all time.", m.auc);
        PUT("auc_recent", "Progressive AUC over the recent window.", m.recent_auc);
        PUT("log_loss_recent", "Progressive log loss over the recent window.",
            m.recent_log_loss);
        PUT("calibration", "Mean prediction over mean label (1 = calibrated).", m.calibration);
        PUT("accuracy", "Progressive accuracy (threshold 0.5), all time.", m.accuracy);
        mixture_metrics(g, out, max, &k);
        break;
    }
    if (full) {
        pd_learner_stats st;
        pd_learner_get_stats(g->learner, &st);
        size_t occupied = pd_learner_occupied(g->learner);
        double distinct = pd_hash_distinct_estimate(occupied, g->lconf.bits);
        PUT("bytes_per_weight", "Bytes per weight-table entry.",
            pd_learner_bytes_per_weight(&g->lconf));
        PUT("weights_in_use", "Weight-table entries holding state.", occupied);
        PUT("weight_table_bits", "The weight table has 2^bits entries.", g->lconf.bits);
        PUT("distinct_features_estimate", "Distinct features the entries in use imply.",
            distinct);
        PUT("collision_rate_estimate", "Share of those features that share an entry.",
            pd_hash_collision_rate(distinct, g->lconf.bits));
        PUT("updates_nonfinite", "Updates skipped because a value was not finite.",
            st.nonfinite);
        PUT("margins_clipped", "Learned examples whose margin was clipped.", st.clipped);
    }
    return k;
}

#undef PUT

static size_t glm_memory(const void *state)
{
    const glm *g = state;
    return pd_learner_memory(g->learner);
}

static int glm_save(const void *state, pd_bin_writer *w)
{
    const glm *g = state;
    pd_bin_put_version(w, GLM_SECTION_VERSION);
    pd_bin_put_bool(w, g->gate_open);
    pd_bin_put_u64(w, g->examples);
    pd_learner_save(g->learner, w);
    return pd_metrics_save(g->metrics, w);
}

static int glm_load(void *state, pd_bin_reader *r, char *errbuf, size_t errlen)
{
    glm *g = state;
    char err[256];
    pd_bin_get_version(r, "glm model", GLM_SECTION_VERSION);
    bool gate_open = pd_bin_get_bool(r);
    uint64_t examples = pd_bin_get_u64(r);
    if (r->err) {
        pd_set_error(errbuf, errlen, "%s", r->why);
        return -EINVAL;
    }
    pd_learner *l = pd_learner_load(&g->lconf, r, err, sizeof err);
    if (!l) {
        pd_set_error(errbuf, errlen, "%s", err);
        return -EINVAL;
    }
    pd_metrics *mt =
        pd_metrics_load(metrics_kind(g->lconf.type), g->metrics_window, r, err, sizeof err);
    if (!mt) {
        pd_learner_free(l);
        pd_set_error(errbuf, errlen, "%s", err);
        return -EINVAL;
    }
    /* a model capturing deltas goes on capturing, from the loaded state */
    if (g->sync && pd_learner_delta_start(l) < 0) {
        pd_learner_free(l);
        pd_metrics_free(mt);
        pd_set_error(errbuf, errlen, "out of memory for model sync");
        return -ENOMEM;
    }
    pd_learner_free(g->learner);
    pd_metrics_free(g->metrics);
    g->learner = l;
    g->metrics = mt;
    g->gate_open = gate_open;
    g->examples = examples;
    g->next_gate_check = 0;
    return 0;
}

/* Model sync: the learner captures and applies (models/learner.c, "model sync"); the metrics,
 * the example count and the gate stay this instance's. */
static int glm_delta_start(void *state)
{
    glm *g = state;
    int err = pd_learner_delta_start(g->learner);
    if (err == 0)
        g->sync = true;
    return err;
}

static bool glm_delta_seal(void *state)
{
    glm *g = state;
    bool any;
    g->delta_entries = pd_learner_delta_seal(g->learner, &any);
    return any;
}

static int glm_delta_write(const void *state, pd_bin_writer *w, size_t *pos, size_t max_bytes)
{
    const glm *g = state;
    int err = pd_learner_delta_write(g->learner, w, pos, max_bytes);
    if (err < 0)
        return err;
    return *pos < g->delta_entries ? 1 : 0;
}

static int glm_delta_apply(void *state, pd_bin_reader *r, char *errbuf, size_t errlen)
{
    glm *g = state;
    return pd_learner_delta_apply(g->learner, r, errbuf, errlen);
}

const pd_model_ops pd_glm_ops = {
    .kind = "glm",
    .create = glm_create,
    .destroy = glm_destroy,
    .fingerprint = glm_fingerprint,
    .reconfigure = glm_reconfigure,
    .output = glm_output,
    .predict = glm_predict,
    .prefetch = glm_prefetch,
    .learn = glm_learn,
    .publishing = glm_publishing,
    .metrics = glm_metrics,
    .memory = glm_memory,
    .save = glm_save,
    .load = glm_load,
    .delta_start = glm_delta_start,
    .delta_seal = glm_delta_seal,
    .delta_write = glm_delta_write,
    .delta_apply = glm_delta_apply,
};

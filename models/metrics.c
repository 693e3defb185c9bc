/* Progressive validation figures. All-time figures are running weighted sums (and a
 * per-class histogram of logits for AUC) so they cost O(1) per example and fixed memory;
 * recent figures keep the last `window` triples in a ring and are computed exactly when a
 * report is asked for, which is rare next to add(). */
#include "models/metrics.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/binio.h"
#include "common/error.h"

/* sklearn's log_loss clip */
#define PROB_EPS 1e-15

typedef struct pd_sample {
    double prediction;
    double label;
    double weight;
} pd_sample;

struct pd_metrics {
    pd_metrics_kind kind;
    uint64_t examples;
    uint64_t positives;
    double weight_sum;
    double loss_sum;    /* weighted: log loss (classifier), hinge loss (margin) */
    double correct_sum; /* weighted count of right answers */
    double pred_sum;    /* weighted sums of predictions and labels, for calibration */
    double label_sum;
    double sq_sum; /* weighted squared and absolute errors (regressor) */
    double abs_sum;
    /* weighted Welford (West 1979) over labels: SST without cancellation */
    double label_mean;
    double label_m2;
    double *hist; /* negatives' weights per bin, then positives'; NULL for regressors */
    double hist_pos_sum;
    double hist_neg_sum;
    pd_sample *ring;
    size_t window;
    size_t ring_len;
    size_t ring_next;
};

pd_metrics *pd_metrics_new(pd_metrics_kind kind, size_t window)
{
    pd_metrics *m;

    if (window == 0 || window > SIZE_MAX / sizeof(pd_sample) ||
        (kind != PD_METRICS_CLASSIFIER && kind != PD_METRICS_MARGIN &&
         kind != PD_METRICS_REGRESSOR))
        return NULL;
    m = calloc(1, sizeof(*m));
    if (m == NULL)
        return NULL;
    m->kind = kind;
    m->window = window;
    m->ring = malloc(window * sizeof(pd_sample));
    if (m->ring == NULL)
        goto out_free_metrics;
    if (kind != PD_METRICS_REGRESSOR) {
        m->hist = calloc(2 * (size_t)PD_METRICS_AUC_BINS, sizeof(double));
        if (m->hist == NULL)
            goto out_free_ring;
    }
    return m;

out_free_ring:
    free(m->ring);
out_free_metrics:
    free(m);
    return NULL;
}

void pd_metrics_free(pd_metrics *metrics)
{
    if (metrics == NULL)
        return;
    free(metrics->hist);
    free(metrics->ring);
    free(metrics);
}

static double clip_prob(double p)
{
    return p < PROB_EPS ? PROB_EPS : (p > 1.0 - PROB_EPS ? 1.0 - PROB_EPS : p);
}

static double log_loss(double p, bool positive)
{
    p = clip_prob(p);
    return positive ? -log(p) : -log(1.0 - p);
}

static double hinge_loss(double m, bool positive)
{
    double y = positive ? 1.0 : -1.0;

    return 1.0 - y * m > 0.0 ? 1.0 - y * m : 0.0;
}

static size_t auc_bin(const pd_metrics *m, double prediction)
{
    const double range = PD_METRICS_AUC_LOGIT_RANGE;
    double logit;

    if (m->kind == PD_METRICS_MARGIN) {
        logit = prediction; /* logit(sigmoid(m)) = m */
    } else {
        double p = prediction < 0.0 ? 0.0 : (prediction > 1.0 ? 1.0 : prediction);
        logit = log(p) - log1p(-p); /* -inf at 0, +inf at 1: the end bins */
    }
    double pos = (logit + range) * (PD_METRICS_AUC_BINS / (2.0 * range));
    if (!(pos > 0.0))
        return 0;
    if (pos >= PD_METRICS_AUC_BINS)
        return PD_METRICS_AUC_BINS - 1;
    return (size_t)pos;
}

void pd_metrics_add(pd_metrics *metrics, double prediction, double label, double weight)
{
    pd_metrics *m = metrics;

    if (!isfinite(prediction) || !isfinite(label) || !isfinite(weight) || !(weight > 0.0))
        return;
    m->examples++;
    m->weight_sum += weight;
    m->pred_sum += weight * prediction;
    m->label_sum += weight * label;

    if (m->kind == PD_METRICS_REGRESSOR) {
        double e = prediction - label;
        m->sq_sum += weight * e * e;
        m->abs_sum += weight * fabs(e);
        double delta = label - m->label_mean;
        m->label_mean += delta * (weight / m->weight_sum);
        m->label_m2 += weight * delta * (label - m->label_mean);
    } else {
        bool positive = label > 0.5;
        bool said = m->kind == PD_METRICS_MARGIN ? prediction > 0.0 : prediction > 0.5;
        m->positives += positive;
        m->correct_sum += said == positive ? weight : 0.0;
        m->loss_sum += weight * (m->kind == PD_METRICS_MARGIN ? hinge_loss(prediction, positive)
                                                              : log_loss(prediction, positive));
        m->hist[(positive ? PD_METRICS_AUC_BINS : 0) + auc_bin(m, prediction)] += weight;
        if (positive)
            m->hist_pos_sum += weight;
        else
            m->hist_neg_sum += weight;
    }

    m->ring[m->ring_next] = (pd_sample){prediction, label, weight};
    m->ring_next = m->ring_next + 1 == m->window ? 0 : m->ring_next + 1;
    if (m->ring_len < m->window)
        m->ring_len++;
}

static double hist_auc(const pd_metrics *m)
{
    const double *neg = m->hist, *pos = m->hist + PD_METRICS_AUC_BINS;
    double below = 0.0, num = 0.0;

    if (!(m->hist_pos_sum > 0.0 && m->hist_neg_sum > 0.0))
        return NAN;
    for (size_t b = 0; b < PD_METRICS_AUC_BINS; b++) {
        num += pos[b] * (below + 0.5 * neg[b]);
        below += neg[b];
    }
    return num / (m->hist_pos_sum * below);
}

static int sample_cmp(const void *a, const void *b)
{
    double x = ((const pd_sample *)a)->prediction, y = ((const pd_sample *)b)->prediction;

    return (x > y) - (x < y);
}

/* Exact weighted AUC of samples (sorted in place): each positive-negative pair scores 1 when
 * the positive ranks above, 1/2 when tied. This is the trapezoidal ROC area sklearn computes. */
static double exact_auc(pd_sample *s, size_t n)
{
    double below = 0.0, num = 0.0, pos_sum = 0.0;

    qsort(s, n, sizeof(*s), sample_cmp);
    for (size_t i = 0; i < n;) {
        double gp = 0.0, gn = 0.0;
        size_t j = i;
        for (; j < n && s[j].prediction == s[i].prediction; j++) {
            if (s[j].label > 0.5)
                gp += s[j].weight;
            else
                gn += s[j].weight;
        }
        num += gp * (below + 0.5 * gn);
        below += gn;
        pos_sum += gp;
        i = j;
    }
    if (!(pos_sum > 0.0 && below > 0.0))
        return NAN;
    return num / (pos_sum * below);
}

static void recent_figures(const pd_metrics *m, pd_metrics_report *r)
{
    double w_sum = 0.0, loss = 0.0, sq = 0.0;

    r->recent_examples = m->ring_len;
    r->recent_log_loss = NAN;
    r->recent_auc = NAN;
    r->recent_rmse = NAN;
    if (m->ring_len == 0)
        return;
    for (size_t i = 0; i < m->ring_len; i++) {
        const pd_sample *s = &m->ring[i];
        w_sum += s->weight;
        if (m->kind == PD_METRICS_CLASSIFIER)
            loss += s->weight * log_loss(s->prediction, s->label > 0.5);
        else if (m->kind == PD_METRICS_REGRESSOR)
            sq += s->weight * (s->prediction - s->label) * (s->prediction - s->label);
    }
    if (m->kind == PD_METRICS_CLASSIFIER)
        r->recent_log_loss = loss / w_sum;
    if (m->kind == PD_METRICS_REGRESSOR) {
        r->recent_rmse = sqrt(sq / w_sum);
        return;
    }
    /* sorting needs a copy: the ring is in arrival order. Reports are rare; when the copy
     * cannot be had, the recent AUC stays NaN rather than the report failing. */
    pd_sample *copy = malloc(m->ring_len * sizeof(*copy));
    if (copy == NULL)
        return;
    memcpy(copy, m->ring, m->ring_len * sizeof(*copy));
    r->recent_auc = exact_auc(copy, m->ring_len);
    free(copy);
}

void pd_metrics_report_get(const pd_metrics *metrics, pd_metrics_report *ret_report)
{
    const pd_metrics *m = metrics;
    pd_metrics_report r = {
        .examples = m->examples,
        .weight_sum = m->weight_sum,
        .positives = m->positives,
        .log_loss = NAN,
        .auc = NAN,
        .calibration = NAN,
        .accuracy = NAN,
        .hinge_loss = NAN,
        .rmse = NAN,
        .mae = NAN,
        .r2 = NAN,
    };

    if (m->examples > 0) {
        double w = m->weight_sum;
        switch (m->kind) {
        case PD_METRICS_CLASSIFIER:
            r.log_loss = m->loss_sum / w;
            r.auc = hist_auc(m);
            if (m->label_sum > 0.0)
                r.calibration = m->pred_sum / m->label_sum;
            r.accuracy = m->correct_sum / w;
            break;
        case PD_METRICS_MARGIN:
            r.hinge_loss = m->loss_sum / w;
            r.auc = hist_auc(m);
            r.accuracy = m->correct_sum / w;
            break;
        case PD_METRICS_REGRESSOR:
            r.rmse = sqrt(m->sq_sum / w);
            r.mae = m->abs_sum / w;
            if (m->label_m2 > 0.0)
                r.r2 = 1.0 - m->sq_sum / m->label_m2;
            break;
        }
    }
    recent_figures(m, &r);
    *ret_report = r;
}

/* ---- serialisation ----
 *
 * Little-endian:
 *   "PDMETRC\0" u32 version (1) u32 kind u64 window
 *   u64 examples, positives
 *   f64 weight_sum, loss_sum, correct_sum, pred_sum, label_sum, sq_sum, abs_sum, label_mean,
 *       label_m2, hist_neg_sum, hist_pos_sum
 *   u32 bins with weight; per bin: u32 index, f64 negatives, f64 positives (classifier, margin)
 *   u64 samples; per sample, oldest first: f64 prediction, label, weight */

#define SAVE_MAGIC   "PDMETRC"
#define SAVE_VERSION 1u

int pd_metrics_save(const pd_metrics *metrics, pd_bin_writer *w)
{
    const pd_metrics *m = metrics;
    const double sums[] = {m->weight_sum, m->loss_sum,     m->correct_sum, m->pred_sum,
                           m->label_sum,  m->sq_sum,       m->abs_sum,     m->label_mean,
                           m->label_m2,   m->hist_neg_sum, m->hist_pos_sum};

    pd_bin_put_bytes(w, SAVE_MAGIC, 8);
    pd_bin_put_version(w, SAVE_VERSION);
    pd_bin_put_u32(w, (uint32_t)m->kind);
    pd_bin_put_u64(w, m->window);
    pd_bin_put_u64(w, m->examples);
    pd_bin_put_u64(w, m->positives);
    for (size_t i = 0; i < sizeof(sums) / sizeof(sums[0]); i++)
        pd_bin_put_f64(w, sums[i]);
    if (m->hist != NULL) {
        const double *neg = m->hist, *pos = m->hist + PD_METRICS_AUC_BINS;
        uint32_t used = 0;
        for (size_t b = 0; b < PD_METRICS_AUC_BINS; b++)
            used += neg[b] != 0.0 || pos[b] != 0.0;
        pd_bin_put_u32(w, used);
        for (size_t b = 0; b < PD_METRICS_AUC_BINS; b++) {
            if (neg[b] == 0.0 && pos[b] == 0.0)
                continue;
            pd_bin_put_u32(w, (uint32_t)b);
            pd_bin_put_f64(w, neg[b]);
            pd_bin_put_f64(w, pos[b]);
        }
    }
    pd_bin_put_u64(w, m->ring_len);
    size_t start = (m->ring_next + m->window - m->ring_len) % m->window;
    for (size_t i = 0; i < m->ring_len; i++) {
        const pd_sample *smp = &m->ring[(start + i) % m->window];
        pd_bin_put_f64(w, smp->prediction);
        pd_bin_put_f64(w, smp->label);
        pd_bin_put_f64(w, smp->weight);
    }
    return w->err;
}

pd_metrics *pd_metrics_load(pd_metrics_kind kind, size_t window, pd_bin_reader *r, char *errbuf,
                            size_t errlen)
{
    char magic[8];
    pd_metrics *m = pd_metrics_new(kind, window);

    if (m == NULL) {
        pd_set_error(errbuf, errlen, "cannot create metrics (kind %d, window %zu)", (int)kind,
                     window);
        return NULL;
    }
    pd_bin_get_bytes(r, magic, sizeof magic);
    if (!r->err && memcmp(magic, SAVE_MAGIC, sizeof(magic)) != 0)
        pd_bin_fail(r, "not a metrics state");
    pd_bin_get_version(r, "metrics", SAVE_VERSION);
    uint32_t saved_kind = pd_bin_get_u32(r);
    uint64_t saved_window = pd_bin_get_u64(r);
    m->examples = pd_bin_get_u64(r);
    m->positives = pd_bin_get_u64(r);
    if (!r->err && saved_kind != (uint32_t)kind)
        pd_bin_fail(r, "metrics state is of kind %u, expected %d", saved_kind, (int)kind);
    double *sums[] = {&m->weight_sum, &m->loss_sum,     &m->correct_sum, &m->pred_sum,
                      &m->label_sum,  &m->sq_sum,       &m->abs_sum,     &m->label_mean,
                      &m->label_m2,   &m->hist_neg_sum, &m->hist_pos_sum};
    for (size_t i = 0; i < sizeof(sums) / sizeof(sums[0]); i++)
        *sums[i] = pd_bin_get_f64(r);
    if (m->hist != NULL) {
        uint32_t used = pd_bin_get_u32(r);
        if (used > PD_METRICS_AUC_BINS)
            pd_bin_fail(r, "metrics state is damaged (%u histogram bins)", used);
        for (uint32_t i = 0; i < used && !r->err; i++) {
            uint32_t b = pd_bin_get_u32(r);
            double neg = pd_bin_get_f64(r), pos = pd_bin_get_f64(r);
            if (r->err)
                break;
            if (b >= PD_METRICS_AUC_BINS || !(neg >= 0.0) || !(pos >= 0.0) || !isfinite(neg) ||
                !isfinite(pos)) {
                pd_bin_fail(r, "metrics state is damaged (histogram bin %u)", b);
                break;
            }
            m->hist[b] = neg;
            m->hist[PD_METRICS_AUC_BINS + b] = pos;
        }
    }
    uint64_t n_samples = pd_bin_get_u64(r);
    if (!r->err && n_samples > saved_window)
        pd_bin_fail(r, "metrics state is damaged (%llu samples in a window of %llu)",
                    (unsigned long long)n_samples, (unsigned long long)saved_window);
    for (uint64_t i = 0; i < n_samples && !r->err; i++) {
        pd_sample smp;
        smp.prediction = pd_bin_get_f64(r);
        smp.label = pd_bin_get_f64(r);
        smp.weight = pd_bin_get_f64(r);
        /* oldest first: with a smaller window the ring simply overwrites the oldest */
        m->ring[m->ring_next] = smp;
        m->ring_next = m->ring_next + 1 == m->window ? 0 : m->ring_next + 1;
        if (m->ring_len < m->window)
            m->ring_len++;
    }
    if (r->err) {
        pd_set_error(errbuf, errlen, "metrics state: %s", r->why[0] ? r->why : "truncated");
        pd_metrics_free(m);
        return NULL;
    }
    return m;
}

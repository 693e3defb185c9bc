/* Progressive validation figures. All-time figures are running weighted sums (and a
 * per-class histogram of logits for AUC) so they cost O(1) per example and fixed memory;
 * recent figures keep the last `window` triples in a ring and are computed exactly when a
 * report is asked for, which is rare next to add(). */
#include "models/metrics.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

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

static int write_u64(FILE *out, uint64_t v)
{
    uint8_t b[8];

    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(v >> (8 * i));
    return fwrite(b, 1, sizeof(b), out) == sizeof(b) ? 0 : -EIO;
}

static int write_u32(FILE *out, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};

    return fwrite(b, 1, sizeof(b), out) == sizeof(b) ? 0 : -EIO;
}

static int write_f64(FILE *out, double v)
{
    uint64_t u;

    memcpy(&u, &v, sizeof(u));
    return write_u64(out, u);
}

static int read_u64(FILE *in, uint64_t *ret)
{
    uint8_t b[8];
    uint64_t v = 0;

    if (fread(b, 1, sizeof(b), in) != sizeof(b))
        return -EIO;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | b[i];
    *ret = v;
    return 0;
}

static int read_u32(FILE *in, uint32_t *ret)
{
    uint8_t b[4];

    if (fread(b, 1, sizeof(b), in) != sizeof(b))
        return -EIO;
    *ret = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
    return 0;
}

static int read_f64(FILE *in, double *ret)
{
    uint64_t u;

    if (read_u64(in, &u) < 0)
        return -EIO;
    memcpy(ret, &u, sizeof(*ret));
    return 0;
}

int pd_metrics_save(const pd_metrics *metrics, FILE *out)
{
    const pd_metrics *m = metrics;
    const double sums[] = {m->weight_sum, m->loss_sum,     m->correct_sum, m->pred_sum,
                           m->label_sum,  m->sq_sum,       m->abs_sum,     m->label_mean,
                           m->label_m2,   m->hist_neg_sum, m->hist_pos_sum};
    int r;

    if (fwrite(SAVE_MAGIC, 1, 8, out) != 8)
        return -EIO;
    if ((r = write_u32(out, SAVE_VERSION)) < 0 || (r = write_u32(out, (uint32_t)m->kind)) < 0 ||
        (r = write_u64(out, m->window)) < 0 || (r = write_u64(out, m->examples)) < 0 ||
        (r = write_u64(out, m->positives)) < 0)
        return r;
    for (size_t i = 0; i < sizeof(sums) / sizeof(sums[0]); i++)
        if ((r = write_f64(out, sums[i])) < 0)
            return r;
    if (m->hist != NULL) {
        const double *neg = m->hist, *pos = m->hist + PD_METRICS_AUC_BINS;
        uint32_t used = 0;
        for (size_t b = 0; b < PD_METRICS_AUC_BINS; b++)
            used += neg[b] != 0.0 || pos[b] != 0.0;
        if ((r = write_u32(out, used)) < 0)
            return r;
        for (size_t b = 0; b < PD_METRICS_AUC_BINS; b++) {
            if (neg[b] == 0.0 && pos[b] == 0.0)
                continue;
            if ((r = write_u32(out, (uint32_t)b)) < 0 || (r = write_f64(out, neg[b])) < 0 ||
                (r = write_f64(out, pos[b])) < 0)
                return r;
        }
    }
    if ((r = write_u64(out, m->ring_len)) < 0)
        return r;
    size_t start = (m->ring_next + m->window - m->ring_len) % m->window;
    for (size_t i = 0; i < m->ring_len; i++) {
        const pd_sample *s = &m->ring[(start + i) % m->window];
        if ((r = write_f64(out, s->prediction)) < 0 || (r = write_f64(out, s->label)) < 0 ||
            (r = write_f64(out, s->weight)) < 0)
            return r;
    }
    return 0;
}

pd_metrics *pd_metrics_load(pd_metrics_kind kind, size_t window, FILE *in, char *errbuf,
                            size_t errlen)
{
    char magic[8];
    uint32_t version, saved_kind, used;
    uint64_t saved_window, n_samples;
    pd_metrics *m = pd_metrics_new(kind, window);

    if (m == NULL) {
        pd_set_error(errbuf, errlen, "cannot create metrics (kind %d, window %zu)", (int)kind, window);
        return NULL;
    }
    if (fread(magic, 1, sizeof(magic), in) != sizeof(magic) || read_u32(in, &version) < 0)
        goto out_truncated;
    if (memcmp(magic, SAVE_MAGIC, sizeof(magic)) != 0 || version != SAVE_VERSION) {
        pd_set_error(errbuf, errlen, "not a metrics state (or an unsupported version)");
        goto out_free;
    }
    if (read_u32(in, &saved_kind) < 0 || read_u64(in, &saved_window) < 0 ||
        read_u64(in, &m->examples) < 0 || read_u64(in, &m->positives) < 0)
        goto out_truncated;
    if (saved_kind != (uint32_t)kind) {
        pd_set_error(errbuf, errlen, "metrics state is of kind %u, expected %d", saved_kind,
                  (int)kind);
        goto out_free;
    }
    double *sums[] = {&m->weight_sum, &m->loss_sum,     &m->correct_sum, &m->pred_sum,
                      &m->label_sum,  &m->sq_sum,       &m->abs_sum,     &m->label_mean,
                      &m->label_m2,   &m->hist_neg_sum, &m->hist_pos_sum};
    for (size_t i = 0; i < sizeof(sums) / sizeof(sums[0]); i++)
        if (read_f64(in, sums[i]) < 0)
            goto out_truncated;
    if (m->hist != NULL) {
        if (read_u32(in, &used) < 0)
            goto out_truncated;
        if (used > PD_METRICS_AUC_BINS)
            goto out_damaged;
        for (uint32_t i = 0; i < used; i++) {
            uint32_t b;
            double neg, pos;
            if (read_u32(in, &b) < 0 || read_f64(in, &neg) < 0 || read_f64(in, &pos) < 0)
                goto out_truncated;
            if (b >= PD_METRICS_AUC_BINS || !(neg >= 0.0) || !(pos >= 0.0) || !isfinite(neg) ||
                !isfinite(pos))
                goto out_damaged;
            m->hist[b] = neg;
            m->hist[PD_METRICS_AUC_BINS + b] = pos;
        }
    }
    if (read_u64(in, &n_samples) < 0)
        goto out_truncated;
    if (n_samples > saved_window)
        goto out_damaged;
    for (uint64_t i = 0; i < n_samples; i++) {
        pd_sample s;
        if (read_f64(in, &s.prediction) < 0 || read_f64(in, &s.label) < 0 ||
            read_f64(in, &s.weight) < 0)
            goto out_truncated;
        /* oldest first: with a smaller window the ring simply overwrites the oldest */
        m->ring[m->ring_next] = s;
        m->ring_next = m->ring_next + 1 == m->window ? 0 : m->ring_next + 1;
        if (m->ring_len < m->window)
            m->ring_len++;
    }
    return m;

out_truncated:
    pd_set_error(errbuf, errlen, "metrics state is truncated");
    goto out_free;
out_damaged:
    pd_set_error(errbuf, errlen, "metrics state is damaged");
out_free:
    pd_metrics_free(m);
    return NULL;
}

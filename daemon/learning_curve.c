/* A curve keeps a point every `step` examples (evaluations); when the buffer fills, every other
 * point goes and the step doubles, so a replay of any length ends with between CAP/2 and CAP
 * points at equal spacing, in O(1) memory. The loss and rate curves share that schedule. */
#include "daemon/learning_curve.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>

#define CAP 400

/* The checkpoints of a curve and the values of its series there. */
typedef struct checkpoints {
    uint64_t count; /* pairs (evaluations) taken */
    uint64_t step;
    size_t n;
    double x[CAP + 1];
} checkpoints;

/* Counts one more pair; whether it falls on a checkpoint. When the buffer is full, thins x and
 * the n_ys series in ys to every other point first. */
static bool checkpoint_due(checkpoints *k, double (*ys)[CAP + 1], size_t n_ys)
{
    k->count++;
    if (k->count % k->step != 0)
        return false;
    if (k->n == CAP) {
        size_t m = 0;
        for (size_t i = 1; i < k->n; i += 2) {
            k->x[m] = k->x[i];
            for (size_t s = 0; s < n_ys; s++)
                ys[s][m] = ys[s][i];
            m++;
        }
        k->n = m;
        k->step *= 2;
        if (k->count % k->step != 0)
            return false;
    }
    return true;
}

struct pd_learning_curve {
    pd_metrics_kind kind;
    checkpoints at;
    double loss_sum, w_sum; /* weighted sums of the loss (squared error for regressors) */
    double wy_sum;          /* weighted sum of labels (positives for classifiers) */
    double prior_sq_sum;    /* regressors: squared error of the running mean */
    double prior_w_sum;
    double y[1][CAP + 1];
    double out_x[CAP + 1], out_y[CAP + 1];
};

pd_learning_curve *pd_learning_curve_new(pd_metrics_kind kind)
{
    pd_learning_curve *c = calloc(1, sizeof *c);
    if (c) {
        c->kind = kind;
        c->at.step = 1;
    }
    return c;
}

void pd_learning_curve_free(pd_learning_curve *c)
{
    free(c);
}

static double loss_of(pd_metrics_kind kind, double p, double y)
{
    switch (kind) {
    case PD_METRICS_REGRESSOR:
        return (p - y) * (p - y);
    case PD_METRICS_MARGIN:
        return fmax(0.0, 1.0 - (y > 0.5 ? 1.0 : -1.0) * p);
    case PD_METRICS_CLASSIFIER:
    default: {
        double q = p < 1e-15 ? 1e-15 : (p > 1 - 1e-15 ? 1 - 1e-15 : p);
        return y > 0.5 ? -log(q) : -log(1 - q);
    }
    }
}

static double current(const pd_learning_curve *c)
{
    if (!(c->w_sum > 0))
        return NAN;
    double m = c->loss_sum / c->w_sum;
    return c->kind == PD_METRICS_REGRESSOR ? sqrt(m) : m;
}

void pd_learning_curve_add(pd_learning_curve *c, double prediction, double label, double weight)
{
    if (!(weight > 0) || !isfinite(weight) || !isfinite(prediction) || !isfinite(label))
        return;
    bool regressor = c->kind == PD_METRICS_REGRESSOR;
    double y = regressor ? label : (label > 0.5 ? 1.0 : 0.0);
    if (regressor && c->w_sum > 0) {
        double mean = c->wy_sum / c->w_sum; /* of the labels before this one */
        c->prior_sq_sum += weight * (label - mean) * (label - mean);
        c->prior_w_sum += weight;
    }
    c->loss_sum += weight * loss_of(c->kind, prediction, y);
    c->w_sum += weight;
    c->wy_sum += weight * y;
    if (!checkpoint_due(&c->at, c->y, 1))
        return;
    c->at.x[c->at.n] = (double)c->at.count;
    c->y[0][c->at.n] = current(c);
    c->at.n++;
}

size_t pd_learning_curve_points(pd_learning_curve *c, const double **ret_x, const double **ret_y)
{
    size_t n = 0;
    for (size_t i = 0; i < c->at.n; i++) {
        c->out_x[n] = c->at.x[i];
        c->out_y[n++] = c->y[0][i];
    }
    if (c->at.count > 0 && (n == 0 || c->out_x[n - 1] != (double)c->at.count)) {
        c->out_x[n] = (double)c->at.count;
        c->out_y[n++] = current(c);
    }
    *ret_x = c->out_x;
    *ret_y = c->out_y;
    return n;
}

double pd_learning_curve_base_rate(const pd_learning_curve *c)
{
    if (c->kind == PD_METRICS_REGRESSOR || !(c->w_sum > 0))
        return NAN;
    return c->wy_sum / c->w_sum;
}

double pd_learning_curve_prior(const pd_learning_curve *c)
{
    switch (c->kind) {
    case PD_METRICS_REGRESSOR:
        return c->prior_w_sum > 0 ? sqrt(c->prior_sq_sum / c->prior_w_sum) : NAN;
    case PD_METRICS_CLASSIFIER: {
        double b = pd_learning_curve_base_rate(c);
        if (!(b > 0 && b < 1))
            return NAN;
        return -(b * log(b) + (1 - b) * log(1 - b));
    }
    case PD_METRICS_MARGIN:
    default:
        return NAN;
    }
}

/* ---- rates ---- */

struct pd_rate_curve {
    size_t n_series;
    checkpoints at;
    uint64_t hits[PD_RATE_CURVE_MAX_SERIES], evals[PD_RATE_CURVE_MAX_SERIES];
    double y[PD_RATE_CURVE_MAX_SERIES][CAP + 1];
    double out_x[CAP + 1], out_y[PD_RATE_CURVE_MAX_SERIES][CAP + 1];
};

pd_rate_curve *pd_rate_curve_new(size_t n_series)
{
    if (n_series == 0 || n_series > PD_RATE_CURVE_MAX_SERIES)
        return NULL;
    pd_rate_curve *c = calloc(1, sizeof *c);
    if (c) {
        c->n_series = n_series;
        c->at.step = 1;
    }
    return c;
}

void pd_rate_curve_free(pd_rate_curve *c)
{
    free(c);
}

size_t pd_rate_curve_series(const pd_rate_curve *c)
{
    return c->n_series;
}

double pd_rate_curve_rate(const pd_rate_curve *c, size_t s)
{
    if (s >= c->n_series || c->evals[s] == 0)
        return NAN;
    return (double)c->hits[s] / (double)c->evals[s];
}

void pd_rate_curve_add(pd_rate_curve *c, const bool *hits, size_t n)
{
    if (n > c->n_series)
        n = c->n_series;
    for (size_t s = 0; s < n; s++) {
        c->evals[s]++;
        c->hits[s] += hits[s] ? 1 : 0;
    }
    if (!checkpoint_due(&c->at, c->y, c->n_series))
        return;
    c->at.x[c->at.n] = (double)c->at.count;
    for (size_t s = 0; s < c->n_series; s++)
        c->y[s][c->at.n] = pd_rate_curve_rate(c, s);
    c->at.n++;
}

size_t pd_rate_curve_points(pd_rate_curve *c, const double **ret_x,
                            const double *ret_y[PD_RATE_CURVE_MAX_SERIES])
{
    size_t n = c->at.n;
    for (size_t i = 0; i < n; i++) {
        c->out_x[i] = c->at.x[i];
        for (size_t s = 0; s < c->n_series; s++)
            c->out_y[s][i] = c->y[s][i];
    }
    if (c->at.count > 0 && (n == 0 || c->out_x[n - 1] != (double)c->at.count)) {
        c->out_x[n] = (double)c->at.count;
        for (size_t s = 0; s < c->n_series; s++)
            c->out_y[s][n] = pd_rate_curve_rate(c, s);
        n++;
    }
    *ret_x = c->out_x;
    for (size_t s = 0; s < PD_RATE_CURVE_MAX_SERIES; s++)
        ret_y[s] = s < c->n_series ? c->out_y[s] : NULL;
    return n;
}

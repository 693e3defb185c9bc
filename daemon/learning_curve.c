/* The curve keeps a point every `step` examples; when the buffer fills, every other point goes
 * and the step doubles, so a replay of any length ends with between CAP/2 and CAP points at
 * equal spacing, in O(1) memory. */
#include "daemon/learning_curve.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>

#define CAP 400

struct pd_learning_curve {
    pd_metrics_kind kind;
    uint64_t count;
    uint64_t step;
    double loss_sum, w_sum; /* weighted sums of the loss (squared error for regressors) */
    double wy_sum;          /* weighted sum of labels (positives for classifiers) */
    double prior_sq_sum;    /* regressors: squared error of the running mean */
    double prior_w_sum;
    double x[CAP + 1], y[CAP + 1];
    size_t n;
    double out_x[CAP + 1], out_y[CAP + 1];
};

pd_learning_curve *pd_learning_curve_new(pd_metrics_kind kind)
{
    pd_learning_curve *c = calloc(1, sizeof *c);
    if (c) {
        c->kind = kind;
        c->step = 1;
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
    c->count++;
    if (c->count % c->step != 0)
        return;
    if (c->n == CAP) {
        size_t k = 0;
        for (size_t i = 1; i < c->n; i += 2) {
            c->x[k] = c->x[i];
            c->y[k] = c->y[i];
            k++;
        }
        c->n = k;
        c->step *= 2;
        if (c->count % c->step != 0)
            return;
    }
    c->x[c->n] = (double)c->count;
    c->y[c->n] = current(c);
    c->n++;
}

size_t pd_learning_curve_points(pd_learning_curve *c, const double **ret_x, const double **ret_y)
{
    size_t n = 0;
    for (size_t i = 0; i < c->n; i++) {
        c->out_x[n] = c->x[i];
        c->out_y[n++] = c->y[i];
    }
    if (c->count > 0 && (n == 0 || c->out_x[n - 1] != (double)c->count)) {
        c->out_x[n] = (double)c->count;
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

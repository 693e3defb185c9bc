/* A model's progressive learning curve as replay reports it, in bounded memory: the running
 * mean loss (log loss, hinge loss, or RMSE for regressors) at a few hundred points spread over
 * the examples, however many there are, and the prior it should be read against: the log loss
 * of always predicting the base rate (classifiers) or the RMSE of predicting the running mean
 * of the labels seen so far (regressors). */
#ifndef PD_LEARNING_CURVE_H
#define PD_LEARNING_CURVE_H

#include <stddef.h>
#include <stdint.h>

#include "models/metrics.h"

typedef struct pd_learning_curve pd_learning_curve;

pd_learning_curve *pd_learning_curve_new(pd_metrics_kind kind);
void pd_learning_curve_free(pd_learning_curve *c);

/* One progressive (prediction, label, weight) pair, in learning order. Pairs with a weight
 * <= 0 or a non-finite value are ignored, as the metrics do. */
void pd_learning_curve_add(pd_learning_curve *c, double prediction, double label, double weight);

/* The curve: *ret_x[i] examples seen, *ret_y[i] the mean loss (RMSE) over them, ending at the
 * last example. Pointers stay valid until the next add or free. Returns the number of points
 * (0 before the first pair). */
size_t pd_learning_curve_points(pd_learning_curve *c, const double **ret_x, const double **ret_y);

/* The prior: base-rate log loss (classifiers; NaN for margin models and when one class is
 * missing) or running-mean RMSE (regressors). NaN before the first pair. */
double pd_learning_curve_prior(const pd_learning_curve *c);

/* Weighted share of positive labels (classifiers and margin models), NaN before any pair. */
double pd_learning_curve_base_rate(const pd_learning_curve *c);

#endif

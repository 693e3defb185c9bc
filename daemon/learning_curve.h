/* A model's progressive learning curve as replay reports it, in bounded memory: the running
 * mean loss (log loss, hinge loss, or RMSE for regressors) at a few hundred points spread over
 * the examples, however many there are, and the prior it should be read against: the log loss
 * of always predicting the base rate (classifiers) or the RMSE of predicting the running mean
 * of the labels seen so far (regressors). A model of lists gets a rate curve instead: the hit
 * rate of the list served and of each baseline over the evaluations. */
#ifndef PD_LEARNING_CURVE_H
#define PD_LEARNING_CURVE_H

#include <stdbool.h>
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

/* ---- rates (a recommender's HR@K) ----
 * Up to PD_RATE_CURVE_MAX_SERIES series side by side (the list served, then each baseline),
 * each the cumulative share of its evaluations that were hits, at the same kind of checkpoints
 * as the loss curve (a few hundred at equal spacing, ending at the last evaluation). Cumulative,
 * as the loss curve is a running mean: the last point is the HR@K the model reports, and the
 * curve shows how long the lists take to settle; a drift late in a long replay moves it only
 * slowly (compare two halves of the stream for that). */

#define PD_RATE_CURVE_MAX_SERIES 4

typedef struct pd_rate_curve pd_rate_curve;

/* NULL when n_series is 0 or over PD_RATE_CURVE_MAX_SERIES, or out of memory. */
pd_rate_curve *pd_rate_curve_new(size_t n_series);
void pd_rate_curve_free(pd_rate_curve *c);
size_t pd_rate_curve_series(const pd_rate_curve *c);

/* One evaluation: whether each of the first n series (n <= n_series; more are ignored) had a
 * hit. A series beyond n counts no evaluation this time, so each rate has its own
 * denominator. */
void pd_rate_curve_add(pd_rate_curve *c, const bool *hits, size_t n);

/* The curves: *ret_x[i] evaluations seen, ret_y[s][i] series s's hit rate over them (NaN
 * while it has judged none). ret_y has room for PD_RATE_CURVE_MAX_SERIES pointers; those past
 * pd_rate_curve_series() are set to NULL. Pointers stay valid until the next add or free.
 * Returns the number of points (0 before the first evaluation). */
size_t pd_rate_curve_points(pd_rate_curve *c, const double **ret_x,
                            const double *ret_y[PD_RATE_CURVE_MAX_SERIES]);

/* Series s's hit rate over all evaluations so far (NaN: none yet, or no such series). */
double pd_rate_curve_rate(const pd_rate_curve *c, size_t s);

#endif

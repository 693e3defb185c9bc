/* Progressive validation: every prediction is scored against its label before the model learns
 * from it. Keeps all-time and recent-window figures for classifiers (log loss, AUC,
 * calibration) and regressors (RMSE, MAE, R^2). */
#ifndef PD_METRICS_H
#define PD_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/binio.h"

typedef struct pd_metrics pd_metrics;

/* All-time AUC comes from a histogram of predictions per class: PD_METRICS_AUC_BINS bins
 * uniform in logit over [-PD_METRICS_AUC_LOGIT_RANGE, +PD_METRICS_AUC_LOGIT_RANGE] (a
 * probability p is binned at log(p / (1 - p)); a hinge margin m, taken through a sigmoid, at m;
 * anything beyond the range in the end bins), so rare-event propensities near 0 still get fine
 * bins. Pairs that share a bin count half, hence the bound against the exact AUC:
 *   |AUC_hist - AUC_exact| <= (1/2) sum_b P_b N_b / (P N)     (P_b, N_b: class weights in bin b)
 *                          <= (1/2) h d = 3.05e-4 d,
 * h = 40/65536 = 6.1e-4 being the bin width in logit and d the highest density of either
 * class's logits, as a share of that class's weight per unit of logit (a class spread evenly
 * over two logit units has d = 0.5: error <= 1.5e-4). Recent figures are exact. */
#define PD_METRICS_AUC_BINS        65536
#define PD_METRICS_AUC_LOGIT_RANGE 20.0

typedef enum pd_metrics_kind {
    PD_METRICS_CLASSIFIER, /* predictions are probabilities, labels 0/1 */
    PD_METRICS_MARGIN,     /* predictions are margins (hinge), labels 0/1 */
    PD_METRICS_REGRESSOR,
} pd_metrics_kind;

typedef struct pd_metrics_report {
    uint64_t examples;
    double weight_sum;
    uint64_t positives;   /* classifiers */
    double log_loss;      /* classifiers: mean; NaN when no examples */
    double auc;           /* all-time; NaN when one class is missing */
    double calibration;   /* mean predicted / mean observed */
    double accuracy;      /* margin and classifiers (threshold 0.5 / 0) */
    double hinge_loss;    /* margin models */
    double rmse, mae, r2; /* regressors */
    /* the same over the most recent `window` examples */
    uint64_t recent_examples;
    double recent_log_loss;
    double recent_auc;
    double recent_rmse;
} pd_metrics_report;

/* window: how many of the most recent examples the recent figures cover (>= 1). */
pd_metrics *pd_metrics_new(pd_metrics_kind kind, size_t window);
void pd_metrics_free(pd_metrics *metrics);

/* One (prediction, label, weight) pair. */
void pd_metrics_add(pd_metrics *metrics, double prediction, double label, double weight);
/* pd_metrics_add() ignores a pair whose prediction, label or weight is not finite, or whose
 * weight is <= 0. Figures are weighted means; a classifier label counts as positive when > 0.5.
 * Figures that do not apply to the kind (log loss of a regressor, RMSE of a classifier, ...)
 * are NaN, as are those with nothing to judge yet. A metrics object is not thread-safe; the
 * caller serialises add, report, save. */

void pd_metrics_report_get(const pd_metrics *metrics, pd_metrics_report *ret_report);

/* Serialises the all-time accumulators, the AUC histogram and the recent window
 * (little-endian, format in metrics.c). Returns 0 or -errno (-EIO when a write fails). */
int pd_metrics_save(const pd_metrics *metrics, pd_bin_writer *w);

/* Reads what pd_metrics_save() wrote into a new object of kind with the given window; NULL and
 * the reason in errbuf when the kind differs or the input is damaged. With a smaller window
 * than was saved, the most recent examples are kept. Reads exactly the saved bytes. */
pd_metrics *pd_metrics_load(pd_metrics_kind kind, size_t window, pd_bin_reader *r, char *errbuf,
                            size_t errlen);

#endif

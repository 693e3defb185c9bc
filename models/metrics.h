/* Progressive validation: every prediction is scored against its label before the model learns
 * from it. Keeps all-time and recent-window figures for classifiers (log loss, AUC,
 * calibration) and regressors (RMSE, MAE, R^2). */
#ifndef PD_METRICS_H
#define PD_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct pd_metrics pd_metrics;

typedef enum pd_metrics_kind {
    PD_METRICS_CLASSIFIER, /* predictions are probabilities, labels 0/1 */
    PD_METRICS_MARGIN,     /* predictions are margins (hinge), labels 0/1 */
    PD_METRICS_REGRESSOR,
} pd_metrics_kind;

typedef struct pd_metrics_report {
    uint64_t examples;
    double weight_sum;
    uint64_t positives;       /* classifiers */
    double log_loss;          /* classifiers: mean; NaN when no examples */
    double auc;               /* all-time; NaN when one class is missing */
    double calibration;       /* mean predicted / mean observed */
    double accuracy;          /* margin and classifiers (threshold 0.5 / 0) */
    double hinge_loss;        /* margin models */
    double rmse, mae, r2;     /* regressors */
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

void pd_metrics_report_get(const pd_metrics *metrics, pd_metrics_report *ret_report);

#endif

/* The replay's HTML report: one self-contained page (inline SVG, no scripts, no network) with,
 * per model, its learning curve (progressive log loss or RMSE over examples), its calibration
 * by decile and its ROC curve, so two configs can be compared by eye. Collects the
 * (prediction, label) pairs of progressive validation as the replay runs. */
#ifndef PD_REPLAY_REPORT_H
#define PD_REPLAY_REPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "models/metrics.h"

typedef struct pd_replay_report pd_replay_report;

pd_replay_report *pd_replay_report_new(void);
void pd_replay_report_free(pd_replay_report *rep);

/* Declares model i (in engine order): classifiers get log loss, calibration and ROC; margin
 * models (hinge) hinge loss and ROC; regressors RMSE and calibration of values. */
int pd_replay_report_model(pd_replay_report *rep, size_t i, const char *name, pd_metrics_kind kind);

/* One progressive-validation pair of model i, in learning order. */
int pd_replay_report_add(pd_replay_report *rep, size_t i, double prediction, double label,
                         double weight);

/* Model i's progressive learning curve (x: examples, y: mean loss or RMSE) and the prior to
 * draw beside it (NaN: none). Copies the arrays. */
int pd_replay_report_curve(pd_replay_report *rep, size_t i, const double *x, const double *y,
                           size_t n, double prior);

/* A previous run to compare with (its file name), and model i's learning curve in it. */
int pd_replay_report_baseline(pd_replay_report *rep, const char *name);
int pd_replay_report_baseline_curve(pd_replay_report *rep, size_t i, const double *x,
                                    const double *y, size_t n);

/* One row of model i's figures table: this run's value and the baseline's (NaN: none). */
int pd_replay_report_figure(pd_replay_report *rep, size_t i, const char *metric, double value,
                            double baseline);

/* A warning shown at the top of the page. */
int pd_replay_report_warn(pd_replay_report *rep, const char *text);

/* Writes the page; title names the config and the event files. Returns 0 or -errno. */
int pd_replay_report_write(const pd_replay_report *rep, const char *title, FILE *out);

#endif

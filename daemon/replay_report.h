/* The replay's HTML report: one self-contained page (inline SVG, no scripts, no network) with,
 * per model, its learning curve (progressive log loss or RMSE over examples), its calibration
 * by decile and its ROC curve, so two configs can be compared by eye; for a model of lists (a
 * recommender), the table of HR, MRR and NDCG at K of the list served beside its baselines,
 * and their hit rates over the evaluations. Collects the (prediction, label) pairs of
 * progressive validation as the replay runs. */
#ifndef PD_REPLAY_REPORT_H
#define PD_REPLAY_REPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "models/metrics.h"

typedef struct pd_replay_report pd_replay_report;

pd_replay_report *pd_replay_report_new(void);
void pd_replay_report_free(pd_replay_report *rep);

/* Declares model i (in engine order): classifiers get log loss, calibration and ROC; margin
 * models (hinge) hinge loss and ROC; regressors RMSE and calibration of values. */
int pd_replay_report_model(pd_replay_report *rep, size_t i, const char *name, pd_metrics_kind kind);

/* Declares model i as a model of lists: no pairs; its section has the list table and the rate
 * curves below instead of loss, calibration and ROC. */
int pd_replay_report_list_model(pd_replay_report *rep, size_t i, const char *name);

/* One list of model i's table, in order: the list served first, then each baseline. */
typedef struct pd_replay_list_row {
    const char *list; /* "served", "popularity", ...; copied */
    double hr, mrr, ndcg;
} pd_replay_list_row;

/* Model i's list table: K, the evaluations it is over and its rows. Copies the rows. */
int pd_replay_report_list_table(pd_replay_report *rep, size_t i, int k, uint64_t evaluated,
                                const pd_replay_list_row *rows, size_t n_rows);

/* Model i's hit rate curves: x evaluations (n points), y[s] the rate of the list names[s] at
 * them, n_series of them (the list served first). Copies the arrays and names. */
int pd_replay_report_rate_curves(pd_replay_report *rep, size_t i, const double *x,
                                 const double *const *y, const char *const *names, size_t n_series,
                                 size_t n);

/* One progressive-validation pair of model i, in learning order. */
int pd_replay_report_add(pd_replay_report *rep, size_t i, double prediction, double label,
                         double weight);

/* Model i's progressive learning curve (x: examples, y: mean loss or RMSE) and the prior to
 * draw beside it (NaN: none). Copies the arrays. */
int pd_replay_report_curve(pd_replay_report *rep, size_t i, const double *x, const double *y,
                           size_t n, double prior);

/* A previous run to compare with (its file name), and model i's learning curve in it (a model
 * of lists: the hit rate of the list it served). */
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

/* HTML report of a replay. Pairs are kept as floats (8 bytes each), so a 10-million example
 * replay takes 80 MB; the curves are computed at write time. */
#include "daemon/replay_report.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CURVE_POINTS 200
#define SVG_W        420
#define SVG_H        280
#define PAD          44

typedef struct pair {
    float pred, label, weight;
} pair;

typedef struct series {
    double *x, *y;
    size_t n;
} series;

typedef struct figure {
    char *metric;
    double value, baseline;
} figure;

#define MAX_RATES 4

typedef struct list_row {
    char *list;
    double hr, mrr, ndcg;
} list_row;

typedef struct model {
    char *name;
    pd_metrics_kind kind;
    bool regressor;
    bool declared;
    bool list; /* a model of lists: rows and rates, no pairs */
    int k;
    uint64_t evaluated;
    list_row *rows;
    size_t n_rows;
    series rates[MAX_RATES];
    char *rate_names[MAX_RATES];
    size_t n_rates;
    pair *pairs;
    size_t n, cap;
    series curve, baseline_curve;
    double prior; /* horizontal reference line on the learning curve; NaN = none */
    figure *figures;
    size_t n_figures;
} model;

struct pd_replay_report {
    model *models;
    size_t n_models;
    char **warnings;
    size_t n_warnings;
    char *baseline_name; /* NULL: no baseline */
};

pd_replay_report *pd_replay_report_new(void)
{
    return calloc(1, sizeof(pd_replay_report));
}

void pd_replay_report_free(pd_replay_report *rep)
{
    if (!rep)
        return;
    for (size_t i = 0; i < rep->n_models; i++) {
        model *m = &rep->models[i];
        free(m->name);
        free(m->pairs);
        free(m->curve.x);
        free(m->curve.y);
        free(m->baseline_curve.x);
        free(m->baseline_curve.y);
        for (size_t k = 0; k < m->n_figures; k++)
            free(m->figures[k].metric);
        free(m->figures);
        for (size_t k = 0; k < m->n_rows; k++)
            free(m->rows[k].list);
        free(m->rows);
        for (size_t k = 0; k < m->n_rates; k++) {
            free(m->rates[k].x);
            free(m->rates[k].y);
            free(m->rate_names[k]);
        }
    }
    for (size_t i = 0; i < rep->n_warnings; i++)
        free(rep->warnings[i]);
    free(rep->warnings);
    free(rep->baseline_name);
    free(rep->models);
    free(rep);
}

static model *model_at(pd_replay_report *rep, size_t i)
{
    if (i >= rep->n_models) {
        model *nm = realloc(rep->models, (i + 1) * sizeof *nm);
        if (!nm)
            return NULL;
        memset(nm + rep->n_models, 0, (i + 1 - rep->n_models) * sizeof *nm);
        for (size_t k = rep->n_models; k <= i; k++)
            nm[k].prior = NAN;
        rep->models = nm;
        rep->n_models = i + 1;
    }
    return &rep->models[i];
}

int pd_replay_report_model(pd_replay_report *rep, size_t i, const char *name, pd_metrics_kind kind)
{
    model *m = model_at(rep, i);
    if (!m)
        return -ENOMEM;
    free(m->name);
    if (!(m->name = strdup(name)))
        return -ENOMEM;
    m->kind = kind;
    m->regressor = kind == PD_METRICS_REGRESSOR;
    m->declared = true;
    return 0;
}

int pd_replay_report_list_model(pd_replay_report *rep, size_t i, const char *name)
{
    int r = pd_replay_report_model(rep, i, name, PD_METRICS_CLASSIFIER);
    if (r == 0)
        rep->models[i].list = true;
    return r;
}

int pd_replay_report_list_table(pd_replay_report *rep, size_t i, int k, uint64_t evaluated,
                                const pd_replay_list_row *rows, size_t n_rows)
{
    model *m = model_at(rep, i);
    list_row *nr = m ? calloc(n_rows ? n_rows : 1, sizeof *nr) : NULL;
    if (!nr)
        return -ENOMEM;
    for (size_t r = 0; r < n_rows; r++) {
        nr[r] = (list_row){strdup(rows[r].list), rows[r].hr, rows[r].mrr, rows[r].ndcg};
        if (!nr[r].list) {
            for (size_t q = 0; q < r; q++)
                free(nr[q].list);
            free(nr);
            return -ENOMEM;
        }
    }
    for (size_t r = 0; r < m->n_rows; r++)
        free(m->rows[r].list);
    free(m->rows);
    m->rows = nr;
    m->n_rows = n_rows;
    m->k = k;
    m->evaluated = evaluated;
    return 0;
}

static int series_set(series *s, const double *x, const double *y, size_t n);

int pd_replay_report_rate_curves(pd_replay_report *rep, size_t i, const double *x,
                                 const double *const *y, const char *const *names, size_t n_series,
                                 size_t n)
{
    model *m = model_at(rep, i);
    if (!m || n_series > MAX_RATES)
        return -ENOMEM;
    for (size_t s = 0; s < n_series; s++) {
        char *name = strdup(names[s]);
        if (!name || series_set(&m->rates[s], x, y[s], n) < 0) {
            free(name);
            return -ENOMEM;
        }
        free(m->rate_names[s]);
        m->rate_names[s] = name;
        if (s >= m->n_rates)
            m->n_rates = s + 1;
    }
    return 0;
}

int pd_replay_report_add(pd_replay_report *rep, size_t i, double prediction, double label,
                         double weight)
{
    model *m = model_at(rep, i);
    if (!m)
        return -ENOMEM;
    if (m->n == m->cap) {
        size_t ncap = m->cap ? m->cap * 2 : 4096;
        pair *np = realloc(m->pairs, ncap * sizeof *np);
        if (!np)
            return -ENOMEM;
        m->pairs = np;
        m->cap = ncap;
    }
    m->pairs[m->n++] = (pair){(float)prediction, (float)label, (float)weight};
    return 0;
}

static int series_set(series *s, const double *x, const double *y, size_t n)
{
    double *nx = malloc((n ? n : 1) * sizeof *nx), *ny = malloc((n ? n : 1) * sizeof *ny);
    if (!nx || !ny) {
        free(nx);
        free(ny);
        return -ENOMEM;
    }
    memcpy(nx, x, n * sizeof *nx);
    memcpy(ny, y, n * sizeof *ny);
    free(s->x);
    free(s->y);
    *s = (series){nx, ny, n};
    return 0;
}

int pd_replay_report_curve(pd_replay_report *rep, size_t i, const double *x, const double *y,
                           size_t n, double prior)
{
    model *m = model_at(rep, i);
    if (!m)
        return -ENOMEM;
    m->prior = prior;
    return series_set(&m->curve, x, y, n);
}

int pd_replay_report_baseline_curve(pd_replay_report *rep, size_t i, const double *x,
                                    const double *y, size_t n)
{
    model *m = model_at(rep, i);
    return m ? series_set(&m->baseline_curve, x, y, n) : -ENOMEM;
}

int pd_replay_report_baseline(pd_replay_report *rep, const char *name)
{
    char *dup = strdup(name);
    if (!dup)
        return -ENOMEM;
    free(rep->baseline_name);
    rep->baseline_name = dup;
    return 0;
}

int pd_replay_report_figure(pd_replay_report *rep, size_t i, const char *metric, double value,
                            double baseline)
{
    model *m = model_at(rep, i);
    if (!m)
        return -ENOMEM;
    figure *nf = realloc(m->figures, (m->n_figures + 1) * sizeof *nf);
    if (!nf)
        return -ENOMEM;
    m->figures = nf;
    if (!(nf[m->n_figures].metric = strdup(metric)))
        return -ENOMEM;
    nf[m->n_figures].value = value;
    nf[m->n_figures].baseline = baseline;
    m->n_figures++;
    return 0;
}

int pd_replay_report_warn(pd_replay_report *rep, const char *text)
{
    char **nw = realloc(rep->warnings, (rep->n_warnings + 1) * sizeof *nw);
    if (!nw)
        return -ENOMEM;
    rep->warnings = nw;
    if (!(nw[rep->n_warnings] = strdup(text)))
        return -ENOMEM;
    rep->n_warnings++;
    return 0;
}

/* ---- SVG helpers ---- */

typedef struct frame {
    double x0, x1, y0, y1; /* data ranges */
} frame;

static double sx(const frame *f, double x)
{
    return PAD + (x - f->x0) / (f->x1 - f->x0) * (SVG_W - PAD - 12);
}

static double sy(const frame *f, double y)
{
    return SVG_H - PAD + 8 - (y - f->y0) / (f->y1 - f->y0) * (SVG_H - PAD - 16);
}

static void html_text(FILE *out, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '<':
            fputs("&lt;", out);
            break;
        case '>':
            fputs("&gt;", out);
            break;
        case '&':
            fputs("&amp;", out);
            break;
        case '"':
            fputs("&quot;", out);
            break;
        default:
            fputc(*s, out);
        }
    }
}

/* Tick labels that fit: 1.8M, 460k, 0.25. */
static void tick(char *buf, size_t len, double v)
{
    double a = fabs(v);
    if (a >= 1e6)
        snprintf(buf, len, "%.3gM", v / 1e6);
    else if (a >= 1e4)
        snprintf(buf, len, "%.3gk", v / 1e3);
    else
        snprintf(buf, len, "%.3g", v);
}

static void axes(FILE *out, const frame *f, const char *title, const char *xlabel,
                 const char *ylabel)
{
    fprintf(out,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
            "viewBox=\"0 0 %d %d\" role=\"img\">\n",
            SVG_W, SVG_H, SVG_W, SVG_H);
    fprintf(out, "<title>");
    html_text(out, title);
    fprintf(out, "</title>\n<rect width=\"100%%\" height=\"100%%\" fill=\"#fff\"/>\n");
    fprintf(out, "<text x=\"%d\" y=\"14\" font-size=\"13\" font-weight=\"bold\">", PAD);
    html_text(out, title);
    fprintf(out, "</text>\n");
    double l = sx(f, f->x0), r = sx(f, f->x1), b = sy(f, f->y0), t = sy(f, f->y1);
    fprintf(out,
            "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" "
            "stroke=\"#999\"/>\n",
            l, t, r - l, b - t);
    for (int k = 0; k <= 4; k++) {
        double xv = f->x0 + (f->x1 - f->x0) * k / 4, yv = f->y0 + (f->y1 - f->y0) * k / 4;
        char xt[32], yt[32];
        tick(xt, sizeof xt, xv);
        tick(yt, sizeof yt, yv);
        fprintf(out, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"10\" text-anchor=\"%s\">%s</text>\n",
                sx(f, xv), b + 13, k == 4 ? "end" : "middle", xt);
        fprintf(out, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"10\" text-anchor=\"end\">%s</text>\n",
                l - 4, sy(f, yv) + 3, yt);
    }
    fprintf(out, "<text x=\"%.1f\" y=\"%d\" font-size=\"11\" text-anchor=\"middle\">%s</text>\n",
            (l + r) / 2, SVG_H - 6, xlabel);
    fprintf(out,
            "<text x=\"12\" y=\"%.1f\" font-size=\"11\" text-anchor=\"middle\" "
            "transform=\"rotate(-90 12 %.1f)\">%s</text>\n",
            (t + b) / 2, (t + b) / 2, ylabel);
}

static void polyline_styled(FILE *out, const frame *f, const double *x, const double *y,
                            size_t n, const char *color, bool dots, const char *dash)
{
    fprintf(out, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.6\"%s%s%s points=\"",
            color, dash ? " stroke-dasharray=\"" : "", dash ? dash : "", dash ? "\"" : "");
    for (size_t i = 0; i < n; i++)
        fprintf(out, "%.1f,%.1f ", sx(f, x[i]), sy(f, y[i]));
    fprintf(out, "\"/>\n");
    for (size_t i = 0; dots && i < n; i++)
        fprintf(out, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.5\" fill=\"%s\"/>\n", sx(f, x[i]),
                sy(f, y[i]), color);
}

static void polyline(FILE *out, const frame *f, const double *x, const double *y, size_t n,
                     const char *color, bool dots)
{
    polyline_styled(out, f, x, y, n, color, dots, NULL);
}

/* ---- the three plots ---- */

static void legend(FILE *out, int row, const char *color, const char *dash, const char *text)
{
    double y = PAD / 2.0 + 4 + 13 * row;
    fprintf(out,
            "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"%s\" "
            "stroke-width=\"1.6\"%s%s%s/>\n",
            SVG_W - 150, y, SVG_W - 130, y, color, dash ? " stroke-dasharray=\"" : "",
            dash ? dash : "", dash ? "\"" : "");
    fprintf(out, "<text x=\"%d\" y=\"%.1f\" font-size=\"10\">", SVG_W - 126, y + 3);
    html_text(out, text);
    fprintf(out, "</text>\n");
}

/* This run's progressive loss over examples, the baseline run's on the same axes, and the
 * prior (base-rate log loss, running-mean RMSE) as a flat line to read both against. */
static void learning_curve(FILE *out, const model *m, const char *baseline_name)
{
    const series *c = &m->curve, *b = &m->baseline_curve;
    double xmax = 1, ymax = 0;
    for (size_t i = 0; i < c->n; i++) {
        xmax = fmax(xmax, c->x[i]);
        if (isfinite(c->y[i]))
            ymax = fmax(ymax, c->y[i]);
    }
    for (size_t i = 0; i < b->n; i++) {
        xmax = fmax(xmax, b->x[i]);
        if (isfinite(b->y[i]))
            ymax = fmax(ymax, b->y[i]);
    }
    if (isfinite(m->prior))
        ymax = fmax(ymax, m->prior);
    frame f = {0, xmax, 0, ymax > 0 ? ymax * 1.05 : 1};
    const char *what =
        m->regressor ? "RMSE" : (m->kind == PD_METRICS_MARGIN ? "hinge loss" : "log loss");
    char title[64];
    snprintf(title, sizeof title, "progressive %s", what);
    axes(out, &f, title, "examples", what);
    int row = 0;
    if (isfinite(m->prior)) {
        double px[2] = {0, xmax}, py[2] = {m->prior, m->prior};
        polyline_styled(out, &f, px, py, 2, "#888", false, "2,3");
        legend(out, row++, "#888", "2,3", m->regressor ? "running mean" : "base rate");
    }
    if (b->n) {
        polyline_styled(out, &f, b->x, b->y, b->n, "#c2410c", false, "6,3");
        legend(out, row++, "#c2410c", "6,3", baseline_name ? baseline_name : "baseline");
    }
    polyline(out, &f, c->x, c->y, c->n, "#1f6fb4", false);
    if (row)
        legend(out, row, "#1f6fb4", NULL, "this run");
    fprintf(out, "</svg>\n");
}

/* The model's figures, beside the baseline's when there is one. */
static void figures_table(FILE *out, const model *m, const char *baseline_name)
{
    if (m->n_figures == 0)
        return;
    fprintf(out, "<table><tr><th>metric</th><th>this run</th>");
    if (baseline_name) {
        fprintf(out, "<th>");
        html_text(out, baseline_name);
        fprintf(out, "</th><th>difference</th>");
    }
    fprintf(out, "</tr>\n");
    for (size_t k = 0; k < m->n_figures; k++) {
        const figure *fg = &m->figures[k];
        fprintf(out, "<tr><td>");
        html_text(out, fg->metric);
        fprintf(out, "</td><td>%.6g</td>", fg->value);
        if (baseline_name) {
            if (isfinite(fg->baseline) && isfinite(fg->value))
                fprintf(out, "<td>%.6g</td><td>%+.6g</td>", fg->baseline, fg->value - fg->baseline);
            else if (isfinite(fg->baseline))
                fprintf(out, "<td>%.6g</td><td></td>", fg->baseline);
            else
                fprintf(out, "<td>&ndash;</td><td></td>");
        }
        fprintf(out, "</tr>\n");
    }
    fprintf(out, "</table>\n");
}

/* ---- models of lists ---- */

/* HR, MRR and NDCG at K of the list served and of each baseline, side by side, and how the
 * served HR compares with the best baseline's. */
static void list_table(FILE *out, const model *m)
{
    if (m->n_rows == 0)
        return;
    fprintf(out, "<table><tr><th>list</th><th>HR@%d</th><th>MRR@%d</th><th>NDCG@%d</th></tr>\n",
            m->k, m->k, m->k);
    size_t best = 0;
    for (size_t r = 0; r < m->n_rows; r++) {
        const list_row *row = &m->rows[r];
        fprintf(out, "<tr><td style=\"text-align:left\">%s", r ? "" : "<b>");
        html_text(out, row->list);
        fprintf(out, "%s</td><td>%.4f</td><td>%.4f</td><td>%.4f</td></tr>\n", r ? "" : "</b>",
                row->hr, row->mrr, row->ndcg);
        if (r > 0 && (best == 0 || row->hr > m->rows[best].hr))
            best = r;
    }
    fprintf(out, "</table>\n");
    if (best > 0 && m->rows[best].hr > 0 && isfinite(m->rows[0].hr))
        fprintf(out, "<p>served HR@%d is %.3f&times; the best baseline&rsquo;s (%s, %.4f)</p>\n",
                m->k, m->rows[0].hr / m->rows[best].hr, m->rows[best].list, m->rows[best].hr);
}

/* The hit rate of every list over the evaluations, the served one solid, and the baseline
 * run's served list dashed. The top third is left for the legend. */
static void rate_curves(FILE *out, const model *m, const char *baseline_name)
{
    static const char *const colors[MAX_RATES] = {"#1f6fb4", "#888", "#7c3aed", "#15803d"};
    static const char *const dashes[MAX_RATES] = {NULL, "2,3", "4,2", "1,2"};
    const series *b = &m->baseline_curve;
    double xmax = 1, ymax = 0;
    for (size_t s = 0; s < m->n_rates; s++)
        for (size_t i = 0; i < m->rates[s].n; i++) {
            xmax = fmax(xmax, m->rates[s].x[i]);
            if (isfinite(m->rates[s].y[i]))
                ymax = fmax(ymax, m->rates[s].y[i]);
        }
    for (size_t i = 0; i < b->n; i++) {
        xmax = fmax(xmax, b->x[i]);
        if (isfinite(b->y[i]))
            ymax = fmax(ymax, b->y[i]);
    }
    frame f = {0, xmax, 0, ymax > 0 ? ymax * 1.5 : 1};
    char title[64];
    snprintf(title, sizeof title, "HR@%d over evaluations (cumulative)", m->k);
    axes(out, &f, title, "evaluations", "hit rate");
    int row = 0;
    /* baselines first so the served list is drawn on top */
    for (size_t s = m->n_rates; s-- > 0;) {
        const series *c = &m->rates[s];
        size_t a = 0;
        while (a < c->n) { /* a series is NaN until its first evaluation: skip that head */
            if (isfinite(c->y[a]))
                break;
            a++;
        }
        polyline_styled(out, &f, c->x + a, c->y + a, c->n - a, colors[s], false, dashes[s]);
    }
    for (size_t s = 0; s < m->n_rates; s++)
        legend(out, row++, colors[s], dashes[s], m->rate_names[s] ? m->rate_names[s] : "");
    if (b->n) {
        polyline_styled(out, &f, b->x, b->y, b->n, "#c2410c", false, "6,3");
        char label[96];
        snprintf(label, sizeof label, "served, %s", baseline_name ? baseline_name : "baseline");
        legend(out, row, "#c2410c", "6,3", label);
    }
    fprintf(out, "</svg>\n");
}

static void list_section(FILE *out, const model *m, const char *baseline_name)
{
    fprintf(out, "<section><h2>");
    html_text(out, m->name);
    fprintf(out, " &mdash; lists of %d, %llu evaluations</h2>\n", m->k,
            (unsigned long long)m->evaluated);
    list_table(out, m);
    figures_table(out, m, baseline_name);
    if (m->evaluated == 0 || m->n_rates == 0)
        fprintf(out, "<p>no evaluations</p>\n");
    else
        rate_curves(out, m, baseline_name);
    fprintf(out, "</section>\n");
}

static int cmp_pred(const void *a, const void *b)
{
    float x = ((const pair *)a)->pred, y = ((const pair *)b)->pred;
    return x < y ? -1 : (x > y ? 1 : 0);
}

/* Mean prediction and mean label per decile of prediction (sorted is sorted by prediction). */
static void calibration(FILE *out, const model *m, const pair *sorted)
{
    double px[10], py[10], lo = INFINITY, hi = -INFINITY;
    size_t k = 0;
    for (size_t d = 0; d < 10; d++) {
        size_t a = m->n * d / 10, b = m->n * (d + 1) / 10;
        double sp = 0, sl = 0, sw = 0;
        for (size_t i = a; i < b; i++) {
            sp += sorted[i].weight * sorted[i].pred;
            sl += sorted[i].weight * sorted[i].label;
            sw += sorted[i].weight;
        }
        if (sw <= 0)
            continue;
        px[k] = sp / sw;
        py[k] = sl / sw;
        lo = fmin(lo, fmin(px[k], py[k]));
        hi = fmax(hi, fmax(px[k], py[k]));
        k++;
    }
    if (!(lo < hi)) {
        lo = 0;
        hi = 1;
    }
    if (!m->regressor) {
        lo = 0;
        hi = fmax(hi, 0.05);
    }
    frame f = {lo, hi, lo, hi};
    axes(out, &f, "calibration by decile", "mean predicted", "mean observed");
    double diag[2] = {lo, hi};
    polyline(out, &f, diag, diag, 2, "#bbb", false);
    polyline(out, &f, px, py, k, "#c2410c", true);
    fprintf(out, "</svg>\n");
}

/* ROC from pairs sorted by prediction, walked from the highest; ties move together. */
static double roc(FILE *out, const model *m, const pair *sorted)
{
    double pos = 0, neg = 0;
    for (size_t i = 0; i < m->n; i++) {
        if (sorted[i].label > 0.5)
            pos += sorted[i].weight;
        else
            neg += sorted[i].weight;
    }
    double x[CURVE_POINTS + 2], y[CURVE_POINTS + 2];
    size_t k = 0;
    x[k] = 0;
    y[k++] = 0;
    double tp = 0, fp = 0, auc = 0;
    size_t step = m->n / CURVE_POINTS ? m->n / CURVE_POINTS : 1, since = 0;
    size_t i = m->n;
    while (i > 0) {
        size_t j = i;
        double tp0 = tp, fp0 = fp;
        while (j > 0 && sorted[j - 1].pred == sorted[i - 1].pred) {
            if (sorted[j - 1].label > 0.5)
                tp += sorted[j - 1].weight;
            else
                fp += sorted[j - 1].weight;
            j--;
        }
        auc += (fp - fp0) * (tp + tp0) / 2;
        since += i - j;
        i = j;
        if ((since >= step || i == 0) && k < CURVE_POINTS + 1 && pos > 0 && neg > 0) {
            x[k] = fp / neg;
            y[k++] = tp / pos;
            since = 0;
        }
    }
    auc = pos > 0 && neg > 0 ? auc / (pos * neg) : NAN;
    frame f = {0, 1, 0, 1};
    char title[64];
    snprintf(title, sizeof title, "ROC (AUC %.4f)", auc);
    axes(out, &f, title, "false positive rate", "true positive rate");
    double diag[2] = {0, 1};
    polyline(out, &f, diag, diag, 2, "#bbb", false);
    polyline(out, &f, x, y, k, "#15803d", false);
    fprintf(out, "</svg>\n");
    return auc;
}

int pd_replay_report_write(const pd_replay_report *rep, const char *title, FILE *out)
{
    fprintf(out, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>");
    html_text(out, title);
    fprintf(out, "</title>\n<style>body{font-family:sans-serif;margin:24px;color:#222}"
                 "section{margin-bottom:28px}svg{margin-right:12px;border:1px solid #eee}"
                 "h2{font-size:16px}table{border-collapse:collapse;margin:8px 0}"
                 "td,th{border:1px solid #ddd;padding:2px 8px;text-align:right;font-size:13px}"
                 ".warning{background:#fff4e5;border:1px solid #f0a020;padding:8px 12px;"
                 "margin:8px 0}</style></head><body>\n<h1 style=\"font-size:20px\">"
                 "propensityd replay: ");
    html_text(out, title);
    fprintf(out, "</h1>\n<p>Progressive validation: every example is scored before the model "
                 "learns from it.</p>\n");
    for (size_t i = 0; i < rep->n_warnings; i++) {
        fprintf(out, "<p class=\"warning\"><b>WARNING</b> ");
        html_text(out, rep->warnings[i]);
        fprintf(out, "</p>\n");
    }
    for (size_t i = 0; i < rep->n_models; i++) {
        const model *m = &rep->models[i];
        if (!m->declared)
            continue;
        if (m->list) {
            list_section(out, m, rep->baseline_name);
            continue;
        }
        fprintf(out, "<section><h2>");
        html_text(out, m->name);
        fprintf(out, " &mdash; %zu examples</h2>\n", m->n);
        figures_table(out, m, rep->baseline_name);
        if (m->n == 0) {
            fprintf(out, "<p>no labelled examples</p></section>\n");
            continue;
        }
        pair *sorted = malloc(m->n * sizeof *sorted);
        if (!sorted)
            return -ENOMEM;
        memcpy(sorted, m->pairs, m->n * sizeof *sorted);
        qsort(sorted, m->n, sizeof *sorted, cmp_pred);
        learning_curve(out, m, rep->baseline_name);
        if (m->kind != PD_METRICS_MARGIN)
            calibration(out, m, sorted); /* a margin is not a probability to calibrate */
        if (!m->regressor)
            roc(out, m, sorted);
        free(sorted);
        fprintf(out, "</section>\n");
    }
    fprintf(out, "</body></html>\n");
    return ferror(out) ? -EIO : 0;
}

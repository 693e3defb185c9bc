/* propensityd replay --config FILE EVENTS.jsonl [...]: the daemon's pipeline (decode, state,
 * features, label joins, learners, models of lists) over files, with no Kafka or Redis, and a
 * report of each model's progressive quality: losses for the models that score users, HR, MRR
 * and NDCG at K beside three baselines for the models of lists. Same files and config, same
 * numbers. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <zlib.h>

#include "common/clock.h"
#include "common/hashtab.h"
#include "config/config.h"
#include "daemon/cli.h"
#include "daemon/commands.h"
#include "daemon/learning_curve.h"
#include "daemon/replay_report.h"
#include "models/learner.h"
#include "models/recommender.h"
#include "models/topk.h"
#include "pipeline/engine.h"
#include "pipeline/user_state.h"

/* A model that lost more than this share of its examples to the pending bounds gets a
 * WARNING in the text output and the report page. */
#define LOST_WARN_SHARE 0.001

typedef struct replay_opts {
    const char *config;
    const char *baseline_path;
    const char *examples_path;
    const char *scores_path;
    const char *report_path;
    bool json;
    bool progress;
} replay_opts;

/* The last scores each user got, in first-seen order, for --scores. */
typedef struct score_table {
    char **users;
    double *scores; /* [users][n_models], NaN = none yet */
    pd_hashtab map; /* user id hash -> index + 1 */
    size_t n, cap, n_models;
} score_table;

static int scores_init(score_table *t, size_t n_models)
{
    memset(t, 0, sizeof *t);
    t->n_models = n_models ? n_models : 1;
    return pd_hashtab_init(&t->map, 1024);
}

static void scores_release(score_table *t)
{
    for (size_t i = 0; i < t->n; i++)
        free(t->users[i]);
    free(t->users);
    free(t->scores);
    pd_hashtab_release(&t->map);
}

/* The row of a user, added when new; SIZE_MAX when out of memory. */
static size_t scores_row(score_table *t, const char *user, size_t len)
{
    uint64_t h = pd_user_hash(user, len);
    const pd_hashtab *m = &t->map;
    for (size_t i = pd_hashtab_first(m, h); m->slots[i].value; i = pd_hashtab_next(m, i)) {
        const char *u = t->users[m->slots[i].value - 1];
        if (m->slots[i].hash == h && strlen(u) == len && memcmp(u, user, len) == 0)
            return m->slots[i].value - 1;
    }
    if (t->n == t->cap) {
        size_t ncap = t->cap ? t->cap * 2 : 1024;
        char **nu = realloc(t->users, ncap * sizeof *nu);
        if (!nu)
            return SIZE_MAX;
        t->users = nu;
        double *ns = realloc(t->scores, ncap * t->n_models * sizeof *ns);
        if (!ns)
            return SIZE_MAX;
        t->scores = ns;
        t->cap = ncap;
    }
    if (pd_hashtab_reserve(&t->map) < 0 || !(t->users[t->n] = strndup(user, len)))
        return SIZE_MAX;
    for (size_t m2 = 0; m2 < t->n_models; m2++)
        t->scores[t->n * t->n_models + m2] = NAN;
    pd_hashtab_insert(&t->map, h, t->n + 1);
    return t->n++;
}

static int scores_put(score_table *t, const pd_engine_result *res)
{
    size_t idx = scores_row(t, res->user, res->user_len);
    if (idx == SIZE_MAX)
        return -ENOMEM;
    for (size_t i = 0; i < res->n_scores; i++)
        t->scores[idx * t->n_models + (size_t)res->scores[i].model] = res->scores[i].value;
    return 0;
}

static void put_json_string(FILE *out, const char *s)
{
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(out, "\\%c", *p);
        else if (*p < 0x20)
            fprintf(out, "\\u%04x", *p);
        else
            fputc(*p, out);
    }
    fputc('"', out);
}

static int scores_write(const score_table *t, pd_engine *eng, const char *path)
{
    FILE *out = fopen(path, "w");
    if (!out) {
        fprintf(stderr, "propensityd: cannot write \"%s\": %s\n", path, strerror(errno));
        return -errno;
    }
    for (size_t i = 0; i < t->n; i++) {
        fputs("{\"user\":", out);
        put_json_string(out, t->users[i]);
        for (size_t m = 0; m < t->n_models && m < pd_engine_model_count(eng); m++) {
            double v = t->scores[i * t->n_models + m];
            if (isnan(v))
                continue;
            pd_model_info mi;
            pd_engine_model_info(eng, m, &mi);
            fputc(',', out);
            put_json_string(out, mi.output);
            fprintf(out, ":%.9g", v);
        }
        fputs("}\n", out);
    }
    int r = ferror(out) ? -EIO : 0;
    if (fclose(out) != 0)
        r = -EIO;
    return r;
}

typedef struct model_export {
    const char *name;
    bool value; /* a regressor: the label is the value, not -1/1 */
    uint32_t mask;
} model_export;

typedef struct replay_ctx {
    pd_replay_report *report;
    pd_learning_curve **curves; /* per model, always kept: the JSON carries them */
    pd_rate_curve **rates;      /* per model of lists (NULL for the others): its hit rates */
    size_t n_curves;
    FILE *examples;
    model_export *exports;
    score_table scores;
    bool keep_scores;
    int err;
} replay_ctx;

/* One learned example in Vowpal Wabbit's text format, so the same stream can be fed to VW or
 * to an independent reference: "label importance 'model |f index:value ...", the label -1/1
 * for classifiers, indices already masked to the model's table (VW takes integer feature names
 * as indices as they are). */
static void export_example(replay_ctx *rc, int model, const pd_feature *x, size_t n, double label,
                           double weight)
{
    const model_export *me = &rc->exports[model];
    FILE *out = rc->examples;
    if (me->value)
        fprintf(out, "%.9g", label);
    else
        fputs(label > 0.5 ? "1" : "-1", out);
    fprintf(out, " %.9g '%s |f", weight, me->name);
    for (size_t i = 0; i < n; i++)
        fprintf(out, " %u:%.9g", x[i].hash & me->mask, (double)x[i].value);
    fputc('\n', out);
}

static void observe(void *ctx, int model, const pd_feature *x, size_t n, double prediction,
                    double label, double weight)
{
    replay_ctx *rc = ctx;
    if ((size_t)model < rc->n_curves)
        pd_learning_curve_add(rc->curves[model], prediction, label, weight);
    if (rc->report &&
        pd_replay_report_add(rc->report, (size_t)model, prediction, label, weight) < 0)
        rc->err = -ENOMEM;
    if (rc->examples)
        export_example(rc, model, x, n, label, weight);
}

/* One evaluation of a list: the served list's hit, then each baseline's, into the model's
 * rate curve. */
static void observe_list(void *ctx, int model, const pd_list_eval *ev)
{
    replay_ctx *rc = ctx;
    if ((size_t)model >= rc->n_curves || !rc->rates[model])
        return;
    bool hits[1 + PD_MAX_BASELINES] = {ev->rank != 0};
    size_t n = ev->n_baselines < PD_MAX_BASELINES ? ev->n_baselines : PD_MAX_BASELINES;
    for (size_t b = 0; b < n; b++)
        hits[1 + b] = ev->baseline_rank[b] != 0;
    pd_rate_curve_add(rc->rates[model], hits, 1 + n);
}

static void replay_usage(FILE *out)
{
    fprintf(out, "usage: propensityd replay --config FILE [--json] [--scores OUT.jsonl]\n"
                 "                          [--report OUT.html] [--baseline OLD.json]\n"
                 "                          EVENTS.jsonl[.gz] [...]\n\n"
                 "Runs the pipeline of FILE over event files (one JSON event per line) with no\n"
                 "Kafka or Redis, and reports each model's progressive validation metrics\n"
                 "(every example is scored before the model learns from it; a recommender's\n"
                 "list is judged before each interaction: HR, MRR and NDCG at K beside its\n"
                 "popularity, recent popularity and co-visitation baselines), throughput and\n"
                 "memory. Deterministic: the same files and config give the same numbers.\n"
                 "A file named - is stdin; .gz files (and gzip on stdin) are decompressed.\n"
                 "Every path is checked before the run starts. On a terminal, stderr shows\n"
                 "the share read and the time left.\n\n"
                 "  -c, --config FILE   pipeline configuration (YAML)\n"
                 "      --json          machine-readable report on stdout\n"
                 "      --scores FILE   the final scores of every user, one JSON line each\n"
                 "      --report FILE   an HTML page with each model's learning curve,\n"
                 "                      calibration by decile and ROC curve (a recommender:\n"
                 "                      its table and HR@K over the evaluations)\n"
                 "      --examples FILE every learned example, in learning order, in Vowpal\n"
                 "                      Wabbit's text format tagged with its model\n"
                 "      --baseline FILE a previous run's --json output: both runs side by\n"
                 "                      side, with the difference per metric (text and\n"
                 "                      --report, which plots both learning curves)\n"
                 "  -q, --quiet         no progress line\n"
                 "  -h, --help          this text\n");
}

/* Where the run is, for the progress line on a terminal: bytes of the inputs read so far
 * against their total (0 when a pipe makes it unknown). */
typedef struct replay_progress {
    bool on;
    double t0, last;
    uint64_t total_bytes; /* 0: unknown */
    uint64_t done_bytes;  /* of the files finished */
    uint64_t *lines;
} replay_progress;

static void eta_text(char *buf, size_t len, double s)
{
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, len, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(buf, len, "%ld:%02ld", t / 60, t % 60);
}

/* The progress line, at most every 100 ms (and on the first call); pos is the offset in the
 * current file. */
static void progress_tick(replay_progress *pr, const char *path, uint64_t pos)
{
    double now = pd_clock_mono_s(), dt = now - pr->t0;
    if (!pr->on || (pr->last > 0 && now - pr->last < 0.1))
        return;
    pr->last = now;
    double rate = dt > 0 ? (double)*pr->lines / dt : 0.0;
    uint64_t done = pr->done_bytes + pos;
    if (pr->total_bytes > 0 && done > 0) {
        double share = (double)done / (double)pr->total_bytes;
        char eta[32];
        eta_text(eta, sizeof eta, share < 1 ? dt * (1 - share) / share : 0);
        fprintf(stderr, "\r%s: %3.0f%%, %" PRIu64 " events, %.0f events/s, ETA %s\033[K",
                strcmp(path, "-") == 0 ? "stdin" : path, 100.0 * (share < 1 ? share : 1),
                *pr->lines, rate, eta);
    } else {
        fprintf(stderr, "\r%s: %" PRIu64 " events, %.0f events/s\033[K",
                strcmp(path, "-") == 0 ? "stdin" : path, *pr->lines, rate);
    }
}

/* Clears the progress line before a message, so the message starts its own line. */
static void progress_clear(const replay_progress *pr)
{
    if (pr->on && pr->last > 0)
        fputs("\r\033[K", stderr);
}

/* One line of events through the engine. */
static void replay_line(pd_engine *eng, replay_ctx *rc, const char *p, size_t len)
{
    if (len && p[len - 1] == '\r')
        len--;
    if (len == 0)
        return;
    pd_event ev;
    pd_engine_result res;
    if (pd_engine_decode(eng, p, len, 0, &ev, NULL, 0) == PD_DECODE_OK &&
        pd_engine_process(eng, &ev, &res) == 0 && rc->keep_scores && res.n_scores &&
        scores_put(&rc->scores, &res) < 0)
        rc->err = -ENOMEM;
}

/* Every line of data[0..size) through the engine, counted in *pr->lines. data is the file
 * itself with tick (offsets in it are the progress); else the caller ticks. */
static void replay_lines(pd_engine *eng, replay_ctx *rc, replay_progress *pr, const char *path,
                         const char *data, size_t size, bool tick)
{
    const char *p = data, *end = data + size;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *eol = nl ? nl : end;
        if (eol > p && !(eol == p + 1 && *p == '\r')) {
            replay_line(eng, rc, p, (size_t)(eol - p));
            if ((++*pr->lines & 0x3FF) == 0 && tick)
                progress_tick(pr, path, (uint64_t)(eol - data));
        }
        p = eol + 1;
    }
}

/* A regular uncompressed file: mapped, not copied. */
static int replay_mapped(pd_engine *eng, const char *path, int fd, size_t size, replay_ctx *rc,
                         replay_progress *pr)
{
    const char *data = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (data == MAP_FAILED) {
        fprintf(stderr, "propensityd replay: cannot map \"%s\": %s\n", path, strerror(errno));
        return -EIO;
    }
    madvise((void *)data, size, MADV_SEQUENTIAL);
    replay_lines(eng, rc, pr, path, data, size, true);
    munmap((void *)data, size);
    return 0;
}

/* A .gz file, stdin or a pipe, read through zlib (which passes uncompressed data through). */
static int replay_stream(pd_engine *eng, const char *path, int fd, replay_ctx *rc,
                         replay_progress *pr)
{
    const char *name = strcmp(path, "-") == 0 ? "stdin" : path;
    gzFile gz = gzdopen(fd, "rb");
    size_t cap = (size_t)1 << 20, have = 0;
    char *buf = malloc(cap);
    int r = 0;
    if (!gz || !buf) {
        if (!gz)
            close(fd);
        fprintf(stderr, "propensityd replay: out of memory reading \"%s\"\n", name);
        r = -ENOMEM;
        goto out;
    }
    gzbuffer(gz, 1 << 17);
    for (;;) {
        if (have == cap) { /* a line longer than the buffer */
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                fprintf(stderr, "propensityd replay: out of memory reading \"%s\"\n", name);
                r = -ENOMEM;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        size_t want = cap - have > (size_t)INT_MAX ? (size_t)INT_MAX : cap - have;
        int n = gzread(gz, buf + have, (unsigned)want);
        if (n < 0) {
            progress_clear(pr);
            int zerr;
            const char *msg = gzerror(gz, &zerr);
            fprintf(stderr, "propensityd replay: cannot read \"%s\": %s\n", name,
                    zerr == Z_ERRNO ? strerror(errno) : msg);
            r = -EIO;
            break;
        }
        if (n == 0) {
            /* gzread() returns what it could of a cut-off stream, then 0 with the error */
            int zerr;
            const char *msg = gzerror(gz, &zerr);
            if (zerr != Z_OK && zerr != Z_STREAM_END) {
                progress_clear(pr);
                /* zlib names the descriptor: "<fd:3>: unexpected end of file" */
                const char *colon = strncmp(msg, "<fd:", 4) == 0 ? strstr(msg, ": ") : NULL;
                fprintf(stderr, "propensityd replay: cannot read \"%s\": %s\n", name,
                        colon ? colon + 2 : msg);
                r = -EIO;
            }
            replay_lines(eng, rc, pr, path, buf, have, false);
            break;
        }
        have += (size_t)n;
        const char *last_nl = memrchr(buf, '\n', have);
        if (!last_nl)
            continue;
        size_t whole = (size_t)(last_nl - buf) + 1;
        long off = gzoffset(gz);
        replay_lines(eng, rc, pr, path, buf, whole, false);
        progress_tick(pr, path, off > 0 ? (uint64_t)off : 0);
        memmove(buf, buf + whole, have - whole);
        have -= whole;
    }
out:
    free(buf);
    if (gz)
        gzclose(gz);
    return r;
}

/* Runs every line of one file (or of stdin for "-") through the engine. */
static int replay_file(pd_engine *eng, const char *path, replay_ctx *rc, replay_progress *pr)
{
    bool is_stdin = strcmp(path, "-") == 0;
    int fd = is_stdin ? dup(STDIN_FILENO) : open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "propensityd replay: cannot open \"%s\": %s\n", path, strerror(errno));
        return -errno;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int e = errno;
        fprintf(stderr, "propensityd replay: cannot stat \"%s\": %s\n", path, strerror(e));
        close(fd);
        return -e;
    }
    size_t n = strlen(path);
    bool gz = n > 3 && strcmp(path + n - 3, ".gz") == 0;
    int r;
    if (is_stdin || gz || !S_ISREG(st.st_mode)) {
        r = replay_stream(eng, path, fd, rc, pr);
    } else {
        r = st.st_size > 0 ? replay_mapped(eng, path, fd, (size_t)st.st_size, rc, pr) : 0;
        close(fd);
    }
    if (S_ISREG(st.st_mode))
        pr->done_bytes += (uint64_t)st.st_size;
    return r;
}

static void json_num(const char *key, double v, bool comma)
{
    if (isfinite(v))
        printf("\"%s\":%.10g%s", key, v, comma ? "," : "");
    else
        printf("\"%s\":null%s", key, comma ? "," : "");
}

static pd_metrics_kind metrics_kind_of(pd_model_output o)
{
    return o == PD_OUTPUT_VALUE ? PD_METRICS_REGRESSOR
                                : (o == PD_OUTPUT_MARGIN ? PD_METRICS_MARGIN : PD_METRICS_CLASSIFIER);
}

/* ---- what a run is judged and compared on ---- */

typedef struct figure {
    const char *name; /* as in --json, so a baseline file is read by the same names */
    double value;
    const char *group; /* NULL, or the baseline list it is under in "baselines" */
} figure;

#define MAX_FIGURES (PD_MODEL_MAX_METRICS + 8)

static double lost_share(const pd_model_info *mi)
{
    uint64_t lost = mi->evicted_user + mi->evicted_total, taken = mi->examples + lost;
    return taken ? (double)lost / (double)taken : 0.0;
}

/* Model i's figures in print order: its counters, the model's own figures (progressive
 * metrics; with full, also what needs a scan of its state), then the prior it is read against
 * (base-rate log loss and normalised entropy for probabilities, the running mean's RMSE for
 * values) and the share of examples lost to the pending bounds. */
static size_t model_figures(const pd_model_info *mi, pd_learning_curve *c, figure *out)
{
    size_t k = 0;
    out[k++] = (figure){"examples", (double)mi->examples};
    if (mi->output_kind != PD_OUTPUT_VALUE)
        out[k++] = (figure){"positives", (double)mi->positives};
    for (size_t i = 0; i < mi->n_figures && k < MAX_FIGURES - 5; i++)
        out[k++] = (figure){mi->figures[i].name, mi->figures[i].value};
    double prior = pd_learning_curve_prior(c);
    switch (mi->output_kind) {
    case PD_OUTPUT_VALUE:
        out[k++] = (figure){"mean_rmse", prior};
        break;
    case PD_OUTPUT_PROBABILITY: {
        double ll = pd_model_info_figure(mi, "log_loss");
        out[k++] = (figure){"prior_log_loss", prior};
        out[k++] = (figure){"normalized_entropy", prior > 0 ? ll / prior : NAN};
        out[k++] = (figure){"base_rate", pd_learning_curve_base_rate(c)};
        break;
    }
    case PD_OUTPUT_MARGIN:
    default:
        out[k++] = (figure){"base_rate", pd_learning_curve_base_rate(c)};
        break;
    }
    out[k++] = (figure){"lost_share", lost_share(mi)};
    return k;
}

/* The lists a model of lists is judged beside, as its metrics name them
 * (baseline_<list>_hr_at_k) and as --json groups them ("baselines": {"<list>": ...}). */
static const char *const list_baselines[PD_MAX_BASELINES] = {"popularity", "recent_popularity",
                                                             "co_visitation"};
static const char *const list_scores[3] = {"hr_at_k", "mrr_at_k", "ndcg_at_k"};

static double list_baseline_figure(const pd_model_info *mi, size_t b, size_t score)
{
    char name[64];
    snprintf(name, sizeof name, "baseline_%s_%s", list_baselines[b], list_scores[score]);
    return pd_model_info_figure(mi, name);
}

static const pd_model_conf *model_conf(const pd_config *conf, const char *name)
{
    for (size_t i = 0; i < conf->n_models; i++)
        if (strcmp(conf->models[i].name, name) == 0)
            return &conf->models[i];
    return NULL;
}

/* A model of lists' figures in print order: K and the evaluations, the served list's scores,
 * each baseline's, then its other figures in the model's order with the bytes a user and an
 * item take at most (from its configuration) after the counts of users and items. */
static size_t list_figures(const pd_model_info *mi, const pd_model_conf *mc, figure *out)
{
    static const char *const head[] = {"k", "evaluated", "hr_at_k", "mrr_at_k", "ndcg_at_k"};
    size_t k = 0;
    for (size_t i = 0; i < sizeof head / sizeof *head; i++)
        out[k++] = (figure){head[i], pd_model_info_figure(mi, head[i]), NULL};
    for (size_t b = 0; b < PD_MAX_BASELINES; b++)
        for (size_t sc = 0; sc < 3; sc++)
            out[k++] =
                (figure){list_scores[sc], list_baseline_figure(mi, b, sc), list_baselines[b]};
    bool rec = mc && mc->kind == PD_MODEL_KIND_RECOMMENDER;
    double per_user = rec ? (double)pd_recommender_bytes_per_user(&mc->recommender) : NAN;
    double per_item = rec ? (double)pd_recommender_bytes_per_item(&mc->recommender) : NAN;
    for (size_t i = 0; i < mi->n_figures && k < MAX_FIGURES - 2; i++) {
        const char *n = mi->figures[i].name;
        bool shown = strncmp(n, "baseline_", 9) == 0;
        for (size_t h = 0; h < sizeof head / sizeof *head; h++)
            shown = shown || strcmp(n, head[h]) == 0;
        if (shown)
            continue;
        out[k++] = (figure){n, mi->figures[i].value, NULL};
        if (strcmp(n, "items") == 0) {
            out[k++] = (figure){"bytes_per_user", per_user, NULL};
            out[k++] = (figure){"bytes_per_item", per_item, NULL};
        }
    }
    return k;
}

/* An ungrouped figure by name (NaN: none). */
static double figure_value(const figure *fg, size_t nf, const char *name)
{
    for (size_t k = 0; k < nf; k++)
        if (!fg[k].group && strcmp(fg[k].name, name) == 0)
            return fg[k].value;
    return NAN;
}

/* Model i's figures, whichever its kind (mc: its configuration, for a model of lists). */
static size_t figures_of(const pd_model_info *mi, const pd_model_conf *mc, pd_learning_curve *c,
                         figure *out)
{
    return mi->output_kind == PD_OUTPUT_LIST ? list_figures(mi, mc, out)
                                             : model_figures(mi, c, out);
}

/* A previous run's --json output, read once. */
typedef struct baseline {
    const char *path;
    json_t *root;
} baseline;

static int baseline_load(baseline *b, const char *path)
{
    json_error_t je;
    b->path = path;
    b->root = json_load_file(path, 0, &je);
    if (!b->root) {
        fprintf(stderr, "propensityd: baseline \"%s\": %s (line %d)\n", path, je.text, je.line);
        return -EINVAL;
    }
    if (!json_is_array(json_object_get(b->root, "models"))) {
        fprintf(stderr, "propensityd: baseline \"%s\" is not a replay --json report\n", path);
        json_decref(b->root);
        b->root = NULL;
        return -EINVAL;
    }
    return 0;
}

static json_t *baseline_model(const baseline *b, const char *name)
{
    json_t *models = b->root ? json_object_get(b->root, "models") : NULL;
    size_t i;
    json_t *m;
    json_array_foreach(models, i, m)
    {
        const char *n = json_string_value(json_object_get(m, "name"));
        if (n && strcmp(n, name) == 0)
            return m;
    }
    return NULL;
}

static double baseline_value(json_t *bm, const figure *fg)
{
    if (bm && fg->group)
        bm = json_object_get(json_object_get(bm, "baselines"), fg->group);
    json_t *v = bm ? json_object_get(bm, fg->name) : NULL;
    return json_is_number(v) ? json_number_value(v) : NAN;
}

/* The baseline model's curve, into x/y (capacity cap); returns the points read. A model of
 * lists': the served list's hit rate over evaluations. */
static size_t baseline_curve(json_t *bm, bool list, double *x, double *y, size_t cap)
{
    json_t *c = bm ? json_object_get(bm, "curve") : NULL;
    json_t *jx = json_object_get(c, list ? "evaluations" : "examples");
    json_t *jy = json_object_get(c, list ? "hr_at_k" : "loss");
    size_t n = 0;
    for (size_t i = 0; i < json_array_size(jx) && i < json_array_size(jy) && n < cap; i++) {
        json_t *a = json_array_get(jx, i), *b = json_array_get(jy, i);
        if (json_is_number(a) && json_is_number(b)) {
            x[n] = json_number_value(a);
            y[n++] = json_number_value(b);
        }
    }
    return n;
}

/* ---- warnings ---- */

typedef struct warnings {
    char text[32][600];
    size_t n;
} warnings;

static void warn(warnings *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void warn(warnings *w, const char *fmt, ...)
{
    if (w->n >= sizeof w->text / sizeof w->text[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->text[w->n++], sizeof w->text[0], fmt, ap);
    va_end(ap);
}

/* What an engineer must not miss: examples lost to the pending bounds (never learned), a model
 * of lists that was never judged (no evaluate_on event came from a user with a history) and
 * feature fields that never held a usable value (a path that does not match the data). */
static void collect_warnings(pd_engine *eng, const pd_config *conf, const baseline *b,
                             warnings *w)
{
    for (size_t i = 0; i < pd_engine_model_count(eng); i++) {
        pd_model_info mi;
        pd_engine_model_info(eng, i, &mi);
        double share = lost_share(&mi);
        if (share > LOST_WARN_SHARE)
            warn(w,
                 "model %s lost %.2f%% of its examples (%" PRIu64 " of %" PRIu64
                 ") to the pending bounds before their label resolved: %" PRIu64
                 " to watermark.max_pending_per_user (%" PRId64 "), %" PRIu64
                 " to watermark.max_pending_total (%" PRId64 "); they were never learned",
                 mi.name, 100.0 * share, mi.evicted_user + mi.evicted_total,
                 mi.examples + mi.evicted_user + mi.evicted_total, mi.evicted_user,
                 conf->state.max_pending_per_user, mi.evicted_total,
                 conf->state.max_pending_total);
        if (mi.output_kind == PD_OUTPUT_LIST && !(pd_model_info_figure(&mi, "evaluated") > 0))
            warn(w,
                 "model %s judged no list: no evaluate_on event came from a user with an "
                 "earlier interaction, on an item new to that user",
                 mi.name);
        if (b->root && !baseline_model(b, mi.name))
            warn(w, "model %s is not in the baseline \"%s\"", mi.name, b->path);
    }
    for (size_t i = 0; i < conf->n_features; i++) {
        pd_feature_coverage fc;
        if (!pd_engine_feature_coverage(eng, i, &fc) || fc.events == 0 ||
            fc.missing + fc.wrong_type < fc.events)
            continue;
        warn(w,
             "feature %s never found a usable value at \"%s\" (%" PRIu64 " events: %" PRIu64
             " missing, %" PRIu64 " of the wrong type)",
             conf->features[i].name, conf->features[i].field, fc.events, fc.missing,
             fc.wrong_type);
    }
}

/* ---- the reports ---- */

static void json_string_array_item(const char *s, bool comma)
{
    put_json_string(stdout, s);
    if (comma)
        putchar(',');
}

static void json_curve(pd_learning_curve *c)
{
    const double *x, *y;
    size_t n = pd_learning_curve_points(c, &x, &y);
    printf("\"curve\":{\"examples\":[");
    for (size_t i = 0; i < n; i++)
        printf("%s%.0f", i ? "," : "", x[i]);
    printf("],\"loss\":[");
    for (size_t i = 0; i < n; i++) {
        if (isfinite(y[i]))
            printf("%s%.8g", i ? "," : "", y[i]);
        else
            printf("%snull", i ? "," : "");
    }
    printf("]}");
}

static void json_rates(const double *y, size_t n)
{
    putchar('[');
    for (size_t i = 0; i < n; i++) {
        if (y && isfinite(y[i]))
            printf("%s%.8g", i ? "," : "", y[i]);
        else
            printf("%snull", i ? "," : "");
    }
    putchar(']');
}

/* A model of lists' hit rates at the same points: the served list's, then each baseline's
 * under "baselines" as the figures are. */
static void json_rate_curve(pd_rate_curve *c)
{
    const double *x, *y[PD_RATE_CURVE_MAX_SERIES];
    size_t n = c ? pd_rate_curve_points(c, &x, y) : 0;
    printf("\"curve\":{\"evaluations\":[");
    for (size_t i = 0; i < n; i++)
        printf("%s%.0f", i ? "," : "", x[i]);
    printf("],\"hr_at_k\":");
    json_rates(n ? y[0] : NULL, n);
    printf(",\"baselines\":{");
    for (size_t b = 0; b < PD_MAX_BASELINES; b++) {
        printf("%s\"%s\":{\"hr_at_k\":", b ? "," : "", list_baselines[b]);
        json_rates(n && b + 1 < PD_RATE_CURVE_MAX_SERIES ? y[b + 1] : NULL, n);
        putchar('}');
    }
    printf("}}");
}

/* A model of lists: its figures, the grouped ones under "baselines": {"<list>": {...}}, and
 * no loss, base rate or pending-example figures (it has none). */
static void json_list_model(const pd_model_info *mi, const figure *fg, size_t nf, pd_rate_curve *c)
{
    printf(",\"type\":");
    put_json_string(stdout, mi->kind);
    const char *group = NULL;
    bool first = false; /* the first figure of a list's object takes no comma */
    for (size_t k = 0; k < nf; k++) {
        const char *g = fg[k].group;
        if (g != group) {
            if (group)
                putchar('}'); /* the previous list */
            if (group && !g)
                putchar('}'); /* "baselines" */
            if (g)
                printf(group ? ",\"%s\":{" : ",\"baselines\":{\"%s\":{", g);
            group = g;
            first = g != NULL;
        }
        if (!first)
            putchar(',');
        first = false;
        json_num(fg[k].name, fg[k].value, false);
    }
    if (group)
        printf("}}");
    printf(",\"memory\":%zu,", mi->memory);
    json_rate_curve(c);
}

static void report_json(pd_engine *eng, const pd_config *conf, const pd_engine_stats *s,
                        uint64_t lines, double secs, replay_ctx *rc, const warnings *w)
{
    printf("{\"events\":%" PRIu64 ",\"lines\":%" PRIu64 ",\"seconds\":%.6f,", s->events, lines,
           secs);
    json_num("events_per_second", secs > 0 ? (double)lines / secs : 0, true);
    printf("\"decode_errors\":{");
    bool first = true;
    for (int i = 1; i < PD_DECODE__COUNT; i++) {
        if (!s->decode_errors[i])
            continue;
        printf("%s\"%s\":%" PRIu64, first ? "" : ",", pd_decode_error_name((pd_decode_error)i),
               s->decode_errors[i]);
        first = false;
    }
    printf("},\"users\":%" PRIu64 ",", s->users);
    printf("\"memory\":{\"users\":%zu,\"bytes_per_user\":%.1f,\"pending\":%zu,"
           "\"models\":%zu},",
           s->memory_users, s->users ? (double)s->memory_users / (double)s->users : 0.0,
           s->memory_pending, s->memory_models);
    printf("\"labels\":{\"positives\":%" PRIu64 ",\"negatives\":%" PRIu64
           ",\"early_positives\":%" PRIu64 ",\"late\":%" PRIu64 ",\"evicted_user\":%" PRIu64
           ",\"evicted_total\":%" PRIu64 ",\"pending\":%" PRIu64 "},",
           s->labels.positives, s->labels.negatives, s->labels.early_positives, s->labels.late,
           s->labels.evicted_user, s->labels.evicted_total, s->labels.pending);
    printf("\"features\":[");
    first = true;
    for (size_t i = 0; i < conf->n_features; i++) {
        pd_feature_coverage fc;
        if (!pd_engine_feature_coverage(eng, i, &fc))
            continue;
        printf("%s{\"name\":", first ? "" : ",");
        put_json_string(stdout, conf->features[i].name);
        printf(",\"field\":");
        put_json_string(stdout, conf->features[i].field);
        printf(",\"events\":%" PRIu64 ",\"missing\":%" PRIu64 ",\"wrong_type\":%" PRIu64 "}",
               fc.events, fc.missing, fc.wrong_type);
        first = false;
    }
    printf("],\"models\":[");
    for (size_t i = 0; i < pd_engine_model_count(eng); i++) {
        pd_model_info mi;
        pd_engine_model_report(eng, i, &mi);
        figure fg[MAX_FIGURES];
        size_t nf = figures_of(&mi, model_conf(conf, mi.name), rc->curves[i], fg);
        printf("%s{\"name\":", i ? "," : "");
        put_json_string(stdout, mi.name);
        printf(",\"kind\":");
        put_json_string(stdout, mi.kind);
        if (mi.output_kind == PD_OUTPUT_LIST) {
            json_list_model(&mi, fg, nf, rc->rates[i]);
            printf("}");
            continue;
        }
        printf(",");
        for (size_t k = 0; k < nf; k++)
            json_num(fg[k].name, fg[k].value, true);
        printf("\"evicted\":{\"user_limit\":%" PRIu64 ",\"total_limit\":%" PRIu64 "},",
               mi.evicted_user, mi.evicted_total);
        printf("\"memory\":%zu,", mi.memory);
        json_curve(rc->curves[i]);
        printf("}");
    }
    printf("],\"warnings\":[");
    for (size_t i = 0; i < w->n; i++)
        json_string_array_item(w->text[i], i + 1 < w->n);
    printf("]}\n");
}

/* This run beside the baseline's, one figure per line (a baseline list's as "<list>.<name>"). */
static void text_comparison(const figure *fg, size_t nf, json_t *bm, const char *path, int width)
{
    printf("  compared with %s:\n    %-*s %14s %14s %14s\n", path, width, "metric", "baseline",
           "this run", "difference");
    for (size_t k = 0; k < nf; k++) {
        double b = baseline_value(bm, &fg[k]);
        char label[96];
        snprintf(label, sizeof label, "%s%s%s", fg[k].group ? fg[k].group : "",
                 fg[k].group ? "." : "", fg[k].name);
        printf("    %-*s %14.6g %14.6g", width, label, b, fg[k].value);
        if (isfinite(b) && isfinite(fg[k].value))
            printf(" %+14.6g\n", fg[k].value - b);
        else
            printf(" %14s\n", "-");
    }
}

/* A figure as the text report writes it: "log loss 0.206700". */
static void text_figure(const pd_model_info *mi, const char *name, const char *label)
{
    double v = pd_model_info_figure(mi, name);
    if (isfinite(v))
        printf(", %s %.6g", label, v);
}

/* One model: its figures, the prior to read them against, its table, the baseline. */
static void text_model(const pd_model_info *mi, pd_learning_curve *c, const baseline *b)
{
    printf("model %s: %" PRIu64 " examples", mi->name, mi->examples);
    if (mi->output_kind != PD_OUTPUT_VALUE)
        printf(" (%" PRIu64 " positive)", mi->positives);
    for (size_t k = 0; k < mi->n_figures; k++) {
        const char *n = mi->figures[k].name;
        /* the table figures get their own line */
        if (strcmp(n, "bytes_per_weight") == 0)
            break;
        if (isfinite(mi->figures[k].value))
            printf(", %s %.6g", n, mi->figures[k].value);
    }
    printf("\n");
    double prior = pd_learning_curve_prior(c);
    if (mi->output_kind == PD_OUTPUT_VALUE) {
        double rmse = pd_model_info_figure(mi, "rmse");
        printf("  prior: predicting the running mean, rmse %.6g (the model's rmse is %.1f%% "
               "of it)\n",
               prior, prior > 0 ? 100.0 * rmse / prior : NAN);
    } else if (mi->output_kind == PD_OUTPUT_PROBABILITY) {
        double ll = pd_model_info_figure(mi, "log_loss");
        printf("  prior: base rate %.4f, log loss %.6f; normalised entropy %.4f\n",
               pd_learning_curve_base_rate(c), prior, prior > 0 ? ll / prior : NAN);
    } else {
        printf("  prior: base rate %.4f\n", pd_learning_curve_base_rate(c));
    }
    double used = pd_model_info_figure(mi, "weights_in_use");
    if (isfinite(used)) {
        printf("  weights: %.0f of 2^%.0f in use (%.0f bytes each)", used,
               pd_model_info_figure(mi, "weight_table_bits"),
               pd_model_info_figure(mi, "bytes_per_weight"));
        text_figure(mi, "distinct_features_estimate", "~distinct features");
        printf("; ~%.2f%% of them share an entry\n",
               100.0 * pd_model_info_figure(mi, "collision_rate_estimate"));
    }
    if (b->root) {
        figure fg[MAX_FIGURES];
        size_t nf = model_figures(mi, c, fg);
        json_t *bm = baseline_model(b, mi->name);
        if (bm)
            text_comparison(fg, nf, bm, b->path, 20);
    }
}

/* HR, MRR and NDCG at K of the list served and of each baseline side by side, and the served
 * HR against the best baseline's. */
static void text_list_table(const pd_model_info *mi, int k)
{
    char h[3][16];
    for (size_t sc = 0; sc < 3; sc++)
        snprintf(h[sc], sizeof h[sc], "%s@%d", sc == 0 ? "HR" : (sc == 1 ? "MRR" : "NDCG"), k);
    printf("  %-20s %9s %9s %9s\n", "list", h[0], h[1], h[2]);
    double hr = pd_model_info_figure(mi, "hr_at_k");
    printf("  %-20s %9.4f %9.4f %9.4f\n", "served", hr, pd_model_info_figure(mi, "mrr_at_k"),
           pd_model_info_figure(mi, "ndcg_at_k"));
    size_t best = PD_MAX_BASELINES;
    double best_hr = -1;
    for (size_t l = 0; l < PD_MAX_BASELINES; l++) {
        double v[3];
        for (size_t sc = 0; sc < 3; sc++)
            v[sc] = list_baseline_figure(mi, l, sc);
        printf("  %-20s %9.4f %9.4f %9.4f\n", list_baselines[l], v[0], v[1], v[2]);
        if (isfinite(v[0]) && v[0] > best_hr) {
            best_hr = v[0];
            best = l;
        }
    }
    if (best < PD_MAX_BASELINES && best_hr > 0 && isfinite(hr))
        printf("  served HR@%d is %.3fx the best baseline's (%s, %.4f)\n", k, hr / best_hr,
               list_baselines[best], best_hr);
}

/* A model of lists: its table (when it judged any list), its counts and sizes, the baseline
 * run beside it. */
static void text_list_model(const pd_model_info *mi, const pd_model_conf *mc, const baseline *b)
{
    figure fg[MAX_FIGURES];
    size_t nf = list_figures(mi, mc, fg);
    int k = (int)pd_model_info_figure(mi, "k");
    double evaluated = pd_model_info_figure(mi, "evaluated");
    printf("model %s: %s, lists of %d; %.0f evaluations of %.0f interactions", mi->name, mi->kind,
           k, evaluated, pd_model_info_figure(mi, "interactions"));
    if (evaluated > 0)
        printf(", the blend served at %.5g%% of them",
               100.0 * pd_model_info_figure(mi, "blend_share"));
    printf("\n");
    if (evaluated > 0)
        text_list_table(mi, k);
    printf("  users %.0f (at most %.0f bytes each), items %.0f (at most %.0f bytes each); "
           "evicted %.0f users, %.0f items; %.0f lists refreshed\n",
           pd_model_info_figure(mi, "users"), figure_value(fg, nf, "bytes_per_user"),
           pd_model_info_figure(mi, "items"), figure_value(fg, nf, "bytes_per_item"),
           pd_model_info_figure(mi, "users_evicted"), pd_model_info_figure(mi, "items_evicted"),
           pd_model_info_figure(mi, "lists_refreshed"));
    json_t *bm = b->root ? baseline_model(b, mi->name) : NULL;
    if (bm)
        text_comparison(fg, nf, bm, b->path, 30);
}

static void report_text(pd_engine *eng, const pd_config *conf, const pd_engine_stats *s,
                        uint64_t lines, double secs, replay_ctx *rc, const baseline *b,
                        const warnings *w)
{
    uint64_t bad = 0;
    for (int i = 1; i < PD_DECODE__COUNT; i++)
        bad += s->decode_errors[i];
    printf("events: %" PRIu64 " processed, %" PRIu64 " refused, %.3f s, %.0f events/s\n", s->events,
           bad, secs, secs > 0 ? (double)lines / secs : 0.0);
    for (int i = 1; i < PD_DECODE__COUNT; i++)
        if (s->decode_errors[i])
            printf("  refused %-18s %" PRIu64 "\n", pd_decode_error_name((pd_decode_error)i),
                   s->decode_errors[i]);
    printf("users: %" PRIu64 " (%.0f bytes each)\n", s->users,
           s->users ? (double)s->memory_users / (double)s->users : 0.0);
    printf("labels: %" PRIu64 " positive (%" PRIu64 " arrived first), %" PRIu64
           " negative (%" PRIu64 " late), %" PRIu64 " still pending, evicted %" PRIu64
           " per-user / %" PRIu64 " total\n",
           s->labels.positives + s->labels.early_positives, s->labels.early_positives,
           s->labels.negatives, s->labels.late, s->labels.pending, s->labels.evicted_user,
           s->labels.evicted_total);
    bool header = false;
    for (size_t i = 0; i < conf->n_features; i++) {
        pd_feature_coverage fc;
        if (!pd_engine_feature_coverage(eng, i, &fc) || fc.events == 0)
            continue;
        if (!header)
            printf("feature coverage (share of events whose field was missing / of the wrong "
                   "type):\n");
        header = true;
        printf("  %-20s %-28s %6.2f%% / %6.2f%%\n", conf->features[i].name,
               conf->features[i].field, 100.0 * (double)fc.missing / (double)fc.events,
               100.0 * (double)fc.wrong_type / (double)fc.events);
    }
    for (size_t i = 0; i < pd_engine_model_count(eng); i++) {
        pd_model_info mi;
        pd_engine_model_report(eng, i, &mi);
        if (mi.output_kind == PD_OUTPUT_LIST)
            text_list_model(&mi, model_conf(conf, mi.name), b);
        else
            text_model(&mi, rc->curves[i], b);
    }
    printf("memory: users %zu B, pending examples %zu B, models %zu B\n", s->memory_users,
           s->memory_pending, s->memory_models);
    for (size_t i = 0; i < w->n; i++)
        printf("WARNING: %s\n", w->text[i]);
}

/* A model of lists on the report page: its table (the list served, then each baseline), the
 * rest of its figures beside the baseline run's, and the hit rates over evaluations. */
static int fill_report_list(pd_replay_report *rep, size_t i, const pd_model_info *mi,
                            const pd_model_conf *mc, pd_rate_curve *c, json_t *bm)
{
    figure fg[MAX_FIGURES];
    size_t nf = list_figures(mi, mc, fg);
    pd_replay_list_row rows[1 + PD_MAX_BASELINES];
    rows[0] = (pd_replay_list_row){"served", pd_model_info_figure(mi, "hr_at_k"),
                                   pd_model_info_figure(mi, "mrr_at_k"),
                                   pd_model_info_figure(mi, "ndcg_at_k")};
    for (size_t l = 0; l < PD_MAX_BASELINES; l++)
        rows[1 + l] =
            (pd_replay_list_row){list_baselines[l], list_baseline_figure(mi, l, 0),
                                 list_baseline_figure(mi, l, 1), list_baseline_figure(mi, l, 2)};
    double evaluated = pd_model_info_figure(mi, "evaluated");
    int r = pd_replay_report_list_table(rep, i, (int)pd_model_info_figure(mi, "k"),
                                        evaluated > 0 ? (uint64_t)evaluated : 0, rows,
                                        1 + PD_MAX_BASELINES);
    for (size_t k = 0; k < nf; k++)
        if (!fg[k].group && strcmp(fg[k].name, "k") != 0 && !strstr(fg[k].name, "_at_k"))
            r |= pd_replay_report_figure(rep, i, fg[k].name, fg[k].value,
                                         baseline_value(bm, &fg[k]));
    if (c) {
        const double *x, *y[PD_RATE_CURVE_MAX_SERIES];
        size_t n = pd_rate_curve_points(c, &x, y);
        const char *names[PD_RATE_CURVE_MAX_SERIES] = {"served"};
        for (size_t l = 0; l < PD_MAX_BASELINES && l + 1 < PD_RATE_CURVE_MAX_SERIES; l++)
            names[l + 1] = list_baselines[l];
        r |= pd_replay_report_rate_curves(rep, i, x, y, names, pd_rate_curve_series(c), n);
    }
    if (bm) {
        double bx[1024], by[1024];
        size_t bn = baseline_curve(bm, true, bx, by, sizeof bx / sizeof bx[0]);
        r |= pd_replay_report_baseline_curve(rep, i, bx, by, bn);
    }
    return r;
}

/* Hands the report page what the text output shows: figures (beside the baseline's), the
 * learning curves and the warnings. */
static int fill_report(pd_replay_report *rep, pd_engine *eng, const pd_config *conf, replay_ctx *rc,
                       const baseline *b, const warnings *w)
{
    int r = 0;
    if (b->root)
        r |= pd_replay_report_baseline(rep, b->path);
    for (size_t i = 0; i < w->n; i++)
        r |= pd_replay_report_warn(rep, w->text[i]);
    for (size_t i = 0; i < pd_engine_model_count(eng); i++) {
        pd_model_info mi;
        pd_engine_model_report(eng, i, &mi);
        json_t *bm = baseline_model(b, mi.name);
        if (mi.output_kind == PD_OUTPUT_LIST) {
            r |= fill_report_list(rep, i, &mi, model_conf(conf, mi.name), rc->rates[i], bm);
            continue;
        }
        figure fg[MAX_FIGURES];
        size_t nf = model_figures(&mi, rc->curves[i], fg);
        for (size_t k = 0; k < nf; k++)
            r |= pd_replay_report_figure(rep, i, fg[k].name, fg[k].value,
                                         baseline_value(bm, &fg[k]));
        const double *x, *y;
        size_t n = pd_learning_curve_points(rc->curves[i], &x, &y);
        r |= pd_replay_report_curve(rep, i, x, y, n, pd_learning_curve_prior(rc->curves[i]));
        if (bm) {
            double bx[1024], by[1024];
            size_t bn = baseline_curve(bm, false, bx, by, sizeof bx / sizeof bx[0]);
            r |= pd_replay_report_baseline_curve(rep, i, bx, by, bn);
        }
    }
    return r ? -ENOMEM : 0;
}

#define PROG "propensityd replay"

/* Reads the options into *o; returns -1 to go on, else the exit status. */
static int parse_options(int argc, char **argv, replay_opts *o)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},   {"json", no_argument, NULL, 'j'},
        {"scores", required_argument, NULL, 's'},   {"report", required_argument, NULL, 'r'},
        {"examples", required_argument, NULL, 'e'}, {"quiet", no_argument, NULL, 'q'},
        {"baseline", required_argument, NULL, 'b'}, {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    *o = (replay_opts){.progress = isatty(STDERR_FILENO)};
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":c:qh", opts, NULL)) != -1) {
        switch (c) {
        case 'c': o->config = optarg; break;
        case 'j': o->json = true; break;
        case 's': o->scores_path = optarg; break;
        case 'r': o->report_path = optarg; break;
        case 'e': o->examples_path = optarg; break;
        case 'b': o->baseline_path = optarg; break;
        case 'q': o->progress = false; break;
        case 'h': replay_usage(stdout); return 0;
        default: return pd_cli_option_error(PROG, c, argv, optind);
        }
    }
    if (!o->config)
        return pd_cli_usage_error(PROG, "no configuration file (--config FILE)");
    if (optind >= argc)
        return pd_cli_usage_error(PROG, "no event file given (EVENTS.jsonl, .gz, or - for stdin)");
    return -1;
}

/* "no such file or directory": strerror() in the house style of messages. */
static const char *errno_text(int e, char *buf, size_t len)
{
    snprintf(buf, len, "%s", strerror(e));
    if (buf[0] >= 'A' && buf[0] <= 'Z' && !(buf[1] >= 'A' && buf[1] <= 'Z'))
        buf[0] = (char)(buf[0] - 'A' + 'a');
    return buf;
}

/* Whether path can be read: a readable file that is not a directory. Prints why not. */
static bool input_ok(const char *what, const char *path)
{
    char e[128];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        fprintf(stderr, "%s: cannot read %s \"%s\": %s\n", PROG, what, path,
                errno_text(errno, e, sizeof e));
        if (fd >= 0)
            close(fd);
        return false;
    }
    close(fd);
    if (S_ISDIR(st.st_mode)) {
        fprintf(stderr, "%s: cannot read %s \"%s\": it is a directory\n", PROG, what, path);
        return false;
    }
    return true;
}

/* Whether path can be written: an existing writable file, or a new one in a writable
 * directory; and not one of the inputs. Prints why not. */
static bool output_ok(const char *what, const char *path, char **inputs, int n_inputs)
{
    char e[128];
    struct stat st;
    if (stat(path, &st) == 0) {
        if (S_ISDIR(st.st_mode)) {
            fprintf(stderr, "%s: cannot write %s \"%s\": it is a directory\n", PROG, what, path);
            return false;
        }
        for (int i = 0; i < n_inputs; i++) {
            struct stat in;
            if (strcmp(inputs[i], "-") != 0 && stat(inputs[i], &in) == 0 &&
                in.st_dev == st.st_dev && in.st_ino == st.st_ino) {
                fprintf(stderr, "%s: %s \"%s\" is also an input\n", PROG, what, path);
                return false;
            }
        }
        if (access(path, W_OK) < 0) {
            fprintf(stderr, "%s: cannot write %s \"%s\": %s\n", PROG, what, path,
                    errno_text(errno, e, sizeof e));
            return false;
        }
        return true;
    }
    if (errno != ENOENT) {
        fprintf(stderr, "%s: cannot write %s \"%s\": %s\n", PROG, what, path,
                errno_text(errno, e, sizeof e));
        return false;
    }
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == path)
        snprintf(dir, sizeof dir, "/");
    else
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    int err = 0;
    if (stat(dir, &st) < 0)
        err = errno;
    else if (!S_ISDIR(st.st_mode))
        err = ENOTDIR;
    else if (access(dir, W_OK | X_OK) < 0)
        err = errno;
    if (err) {
        fprintf(stderr, "%s: cannot write %s \"%s\": %s\n", PROG, what, path,
                errno_text(err, e, sizeof e));
        return false;
    }
    return true;
}

/* Every path of the run checked before anything starts, each problem one line; 0 or 1. */
static int check_paths(const replay_opts *o, char **files, int n)
{
    bool ok = input_ok("configuration", o->config);
    if (o->baseline_path)
        ok &= input_ok("baseline", o->baseline_path);
    int stdin_uses = 0;
    for (int i = 0; i < n; i++) {
        if (strcmp(files[i], "-") == 0)
            stdin_uses++;
        else
            ok &= input_ok("events", files[i]);
    }
    if (stdin_uses > 1) {
        fprintf(stderr, "%s: \"-\" (stdin) is given %d times; it can be read once\n", PROG,
                stdin_uses);
        ok = false;
    }
    const char *outs[][2] = {{"scores", o->scores_path},
                             {"report", o->report_path},
                             {"examples", o->examples_path}};
    for (size_t i = 0; i < sizeof outs / sizeof outs[0]; i++)
        if (outs[i][1])
            ok &= output_ok(outs[i][0], outs[i][1], files, n);
    return ok ? 0 : 1;
}

/* One replay: the config, the engine and everything collected while it runs. */
typedef struct replay_run {
    replay_opts o;
    pd_config *conf;
    pd_engine *eng;
    baseline base;
    replay_ctx rc;
    warnings *w;
    uint64_t lines;
    double secs;
} replay_run;

static void run_release(replay_run *r)
{
    replay_ctx *rc = &r->rc;
    for (size_t i = 0; i < rc->n_curves; i++) {
        pd_learning_curve_free(rc->curves[i]);
        if (rc->rates)
            pd_rate_curve_free(rc->rates[i]);
    }
    free(rc->curves);
    free(rc->rates);
    pd_replay_report_free(rc->report);
    if (rc->examples)
        fclose(rc->examples);
    free(rc->exports);
    if (rc->keep_scores)
        scores_release(&rc->scores);
    free(r->w);
    json_decref(r->base.root);
    pd_engine_free(r->eng);
    pd_config_free(r->conf);
}

static pd_config *load_config(const char *path)
{
    pd_diag *diag = pd_diag_new();
    pd_config *conf = diag ? pd_config_load(path, diag) : NULL;
    if (!conf && diag)
        pd_diag_print(diag, stderr);
    pd_diag_free(diag);
    return conf;
}

/* Learning curves always (the JSON carries them), the report page and the example export
 * when asked. Failures are collected in rc->err. */
static void collectors_new(replay_run *r)
{
    replay_ctx *rc = &r->rc;
    size_t n = pd_engine_model_count(r->eng);
    rc->n_curves = n;
    rc->curves = calloc(n ? n : 1, sizeof *rc->curves);
    rc->rates = calloc(n ? n : 1, sizeof *rc->rates);
    if (!rc->curves || !rc->rates) {
        rc->n_curves = 0;
        rc->err = -ENOMEM;
    }
    if (r->o.report_path && !(rc->report = pd_replay_report_new()))
        rc->err = -ENOMEM;
    for (size_t i = 0; i < rc->n_curves; i++) {
        pd_model_info mi;
        pd_engine_model_info(r->eng, i, &mi);
        pd_metrics_kind kind = metrics_kind_of(mi.output_kind);
        if (!(rc->curves[i] = pd_learning_curve_new(kind)))
            rc->err = -ENOMEM;
        if (mi.output_kind == PD_OUTPUT_LIST) {
            /* the list served, then each baseline */
            if (!(rc->rates[i] = pd_rate_curve_new(1 + PD_MAX_BASELINES)))
                rc->err = -ENOMEM;
            if (rc->report && pd_replay_report_list_model(rc->report, i, mi.name) < 0)
                rc->err = -ENOMEM;
        } else if (rc->report && pd_replay_report_model(rc->report, i, mi.name, kind) < 0) {
            rc->err = -ENOMEM;
        }
    }
    if (rc->keep_scores && scores_init(&rc->scores, n) < 0)
        rc->err = -ENOMEM;
    if (!r->o.examples_path)
        return;
    const pd_config *conf = r->conf;
    rc->examples = fopen(r->o.examples_path, "w");
    rc->exports = calloc(conf->n_models ? conf->n_models : 1, sizeof *rc->exports);
    if (!rc->examples || !rc->exports) {
        fprintf(stderr, "propensityd: cannot write \"%s\": %s\n", r->o.examples_path,
                strerror(errno));
        rc->err = -EIO;
    }
    for (size_t i = 0; rc->exports && i < conf->n_models; i++)
        rc->exports[i] = (model_export){
            .name = conf->models[i].name,
            .value = conf->models[i].learner.type == PD_MODEL_LINEAR,
            .mask = (uint32_t)(((uint64_t)1 << conf->models[i].learner.bits) - 1)};
}

/* Everything before the first event; 0 or the exit status. */
static int run_start(replay_run *r)
{
    char err[512];
    if (!(r->conf = load_config(r->o.config)))
        return 1;
    if (r->o.baseline_path && baseline_load(&r->base, r->o.baseline_path) < 0)
        return 1;
    if (!(r->eng = pd_engine_new(r->conf, err, sizeof err))) {
        fprintf(stderr, "propensityd: %s\n", err);
        return 1;
    }
    /* replay scores one user's list at a time: products too small for OpenBLAS's pool to pay
     * for its threads, which would only spin beside this one */
    pd_topk_set_blas_threads(1);
    r->rc.keep_scores = r->o.scores_path != NULL;
    /* scores change no learned state: without --scores they are not computed at all */
    pd_engine_set_scoring(r->eng, r->rc.keep_scores);
    /* the next line's decoding overlaps with fetching the table entries of the example the
     * last one labelled; run_files() learns the last of them */
    pd_engine_set_deferred_learning(r->eng, true);
    collectors_new(r);
    if (r->rc.err || !(r->w = calloc(1, sizeof *r->w))) {
        fprintf(stderr, "propensityd: %s\n",
                r->rc.err == -EIO ? "cannot open an output" : "out of memory");
        return 1;
    }
    pd_engine_set_label_observer(r->eng, observe, &r->rc);
    /* lists are rescored at every evaluation (deterministic), beside the baselines */
    pd_engine_set_list_evaluation(r->eng, true, true, observe_list, &r->rc);
    return 0;
}

/* The bytes all inputs hold, for the progress line's share; 0 when one is a pipe. */
static uint64_t input_bytes(char **files, int n)
{
    uint64_t total = 0;
    for (int i = 0; i < n; i++) {
        struct stat st;
        int r = strcmp(files[i], "-") == 0 ? fstat(STDIN_FILENO, &st) : stat(files[i], &st);
        if (r < 0 || !S_ISREG(st.st_mode))
            return 0;
        total += (uint64_t)st.st_size;
    }
    return total;
}

static int run_files(replay_run *r, char **files, int n)
{
    double t0 = pd_clock_mono_s();
    replay_progress pr = {.on = r->o.progress, .t0 = t0, .lines = &r->lines};
    if (pr.on)
        pr.total_bytes = input_bytes(files, n);
    int status = 0;
    for (int i = 0; i < n && status == 0; i++)
        if (replay_file(r->eng, files[i], &r->rc, &pr) < 0)
            status = 1;
    pd_engine_flush(r->eng);
    r->secs = pd_clock_mono_s() - t0;
    if (r->o.progress)
        fprintf(stderr, "\r\033[K");
    if (r->rc.err) {
        fprintf(stderr, "propensityd: out of memory collecting scores or report data\n");
        status = 1;
    }
    return status;
}

static int write_report_page(replay_run *r, int n_files)
{
    int status = 0;
    if (fill_report(r->rc.report, r->eng, r->conf, &r->rc, &r->base, r->w) < 0) {
        fprintf(stderr, "propensityd: out of memory building the report\n");
        status = 1;
    }
    FILE *out = fopen(r->o.report_path, "w");
    char title[1024];
    snprintf(title, sizeof title, "%s over %d file(s)", r->o.config, n_files);
    if (!out || pd_replay_report_write(r->rc.report, title, out) < 0) {
        fprintf(stderr, "propensityd: cannot write \"%s\": %s\n", r->o.report_path,
                strerror(errno));
        status = 1;
    }
    if (out && fclose(out) != 0)
        status = 1;
    return status;
}

/* The report on stdout and every output file asked for; the exit status. */
static int run_report(replay_run *r, int n_files)
{
    int status = 0;
    pd_engine_stats s;
    pd_engine_get_stats(r->eng, &s);
    collect_warnings(r->eng, r->conf, &r->base, r->w);
    if (r->o.json)
        report_json(r->eng, r->conf, &s, r->lines, r->secs, &r->rc, r->w);
    else
        report_text(r->eng, r->conf, &s, r->lines, r->secs, &r->rc, &r->base, r->w);
    if (r->o.scores_path && scores_write(&r->rc.scores, r->eng, r->o.scores_path) < 0)
        status = 1;
    if (r->rc.report && write_report_page(r, n_files) != 0)
        status = 1;
    if (r->rc.examples) {
        int bad = fclose(r->rc.examples) != 0;
        r->rc.examples = NULL;
        if (bad) {
            fprintf(stderr, "propensityd: cannot write \"%s\"\n", r->o.examples_path);
            status = 1;
        }
    }
    return status;
}

int pd_cmd_replay(int argc, char **argv)
{
    replay_run r = {0};
    int status = parse_options(argc, argv, &r.o);
    if (status >= 0)
        return status;
    if (check_paths(&r.o, argv + optind, argc - optind) != 0)
        return 1;
    status = run_start(&r);
    if (status == 0)
        status = run_files(&r, argv + optind, argc - optind);
    if (status == 0 || r.w) /* a file that failed midway still gets its report */
        status |= run_report(&r, argc - optind);
    run_release(&r);
    return status;
}

/* propensityd replay --config FILE EVENTS.jsonl [...]: the daemon's pipeline (decode, state,
 * features, label joins, learners) over files, with no Kafka or Redis, and a report of each
 * model's progressive quality. Same files and config, same numbers. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config/config.h"
#include "daemon/commands.h"
#include "pipeline/engine.h"

typedef struct replay_opts {
    const char *config;
    bool json;
    bool progress;
} replay_opts;

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void replay_usage(FILE *out)
{
    fprintf(out, "usage: propensityd replay --config FILE [--json] EVENTS.jsonl [...]\n\n"
                 "Runs the pipeline of FILE over event files (one JSON event per line) with no\n"
                 "Kafka or Redis, and reports each model's progressive validation metrics\n"
                 "(every example is scored before the model learns from it), throughput and\n"
                 "memory. Deterministic: the same files and config give the same numbers.\n\n"
                 "  -c, --config FILE   pipeline configuration (YAML)\n"
                 "      --json          machine-readable report on stdout\n"
                 "  -q, --quiet         no progress line\n"
                 "  -h, --help          this text\n");
}

/* Runs every line of one file through the engine. */
static int replay_file(pd_engine *eng, const char *path, const replay_opts *o, uint64_t *lines,
                       double t0)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "propensityd: cannot open \"%s\": %s\n", path, strerror(errno));
        return -errno;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int e = errno;
        fprintf(stderr, "propensityd: cannot stat \"%s\": %s\n", path, strerror(e));
        close(fd);
        return -e;
    }
    if (st.st_size == 0) {
        close(fd);
        return 0;
    }
    const char *data = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (data == MAP_FAILED) {
        fprintf(stderr, "propensityd: cannot map \"%s\": %s\n", path, strerror(errno));
        return -EIO;
    }
    madvise((void *)data, (size_t)st.st_size, MADV_SEQUENTIAL);
    const char *p = data, *end = data + st.st_size;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *eol = nl ? nl : end;
        size_t len = (size_t)(eol - p);
        if (len && p[len - 1] == '\r')
            len--;
        if (len > 0) {
            pd_event ev;
            pd_engine_result res;
            if (pd_engine_decode(eng, p, len, 0, &ev, NULL, 0) == PD_DECODE_OK)
                pd_engine_process(eng, &ev, &res);
            (*lines)++;
            if (o->progress && (*lines & 0xFFFFF) == 0) {
                double dt = now_seconds() - t0;
                fprintf(stderr, "\r%s: %" PRIu64 " events, %.0f events/s   ", path, *lines,
                        dt > 0 ? (double)*lines / dt : 0.0);
            }
        }
        p = eol + 1;
    }
    munmap((void *)data, (size_t)st.st_size);
    return 0;
}

static void json_num(const char *key, double v, bool comma)
{
    if (isfinite(v))
        printf("\"%s\":%.10g%s", key, v, comma ? "," : "");
    else
        printf("\"%s\":null%s", key, comma ? "," : "");
}

static void report_json(pd_engine *eng, const pd_engine_stats *s, uint64_t lines, double secs)
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
    printf("},\"users\":%" PRIu64 ",\"memory\":{\"users\":%zu,\"pending\":%zu,\"models\":%zu},",
           s->users, s->memory_users, s->memory_pending, s->memory_models);
    printf("\"labels\":{\"positives\":%" PRIu64 ",\"negatives\":%" PRIu64
           ",\"early_positives\":%" PRIu64 ",\"late\":%" PRIu64 ",\"evicted_user\":%" PRIu64
           ",\"evicted_total\":%" PRIu64 ",\"pending\":%" PRIu64 "},",
           s->labels.positives, s->labels.negatives, s->labels.early_positives, s->labels.late,
           s->labels.evicted_user, s->labels.evicted_total, s->labels.pending);
    printf("\"models\":[");
    for (size_t i = 0; i < pd_engine_model_count(eng); i++) {
        pd_model_info mi;
        pd_engine_model_info(eng, i, &mi);
        const pd_metrics_report *m = &mi.metrics;
        printf("%s{\"name\":\"%s\",\"examples\":%" PRIu64 ",\"positives\":%" PRIu64 ",",
               i ? "," : "", mi.name, mi.examples, mi.positives);
        if (mi.type == PD_MODEL_LINEAR) {
            json_num("rmse", m->rmse, true);
            json_num("mae", m->mae, true);
            json_num("r2", m->r2, true);
        } else {
            json_num("log_loss", m->log_loss, true);
            json_num("auc", m->auc, true);
            json_num("auc_recent", m->recent_auc, true);
            json_num("calibration", m->calibration, true);
            json_num("accuracy", m->accuracy, true);
        }
        printf("\"memory\":%zu}", mi.memory);
    }
    printf("]}\n");
}

static void report_text(pd_engine *eng, const pd_engine_stats *s, uint64_t lines, double secs)
{
    uint64_t bad = 0;
    for (int i = 1; i < PD_DECODE__COUNT; i++)
        bad += s->decode_errors[i];
    printf("events: %" PRIu64 " processed, %" PRIu64 " refused, %.3f s, %.0f events/s\n",
           s->events, bad, secs, secs > 0 ? (double)lines / secs : 0.0);
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
    for (size_t i = 0; i < pd_engine_model_count(eng); i++) {
        pd_model_info mi;
        pd_engine_model_info(eng, i, &mi);
        const pd_metrics_report *m = &mi.metrics;
        printf("model %s: %" PRIu64 " examples", mi.name, mi.examples);
        if (mi.type == PD_MODEL_LINEAR)
            printf(", rmse %.6g, mae %.6g, r2 %.4f\n", m->rmse, m->mae, m->r2);
        else
            printf(" (%" PRIu64 " positive), log loss %.6f, auc %.4f (recent %.4f), "
                   "calibration %.3f\n",
                   mi.positives, m->log_loss, m->auc, m->recent_auc, m->calibration);
    }
    printf("memory: users %zu B, pending examples %zu B, models %zu B\n", s->memory_users,
           s->memory_pending, s->memory_models);
}

int pd_cmd_replay(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"json", no_argument, NULL, 'j'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    replay_opts o = {.progress = isatty(STDERR_FILENO)};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "c:qh", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            o.config = optarg;
            break;
        case 'j':
            o.json = true;
            break;
        case 'q':
            o.progress = false;
            break;
        case 'h':
            replay_usage(stdout);
            return 0;
        default:
            replay_usage(stderr);
            return 2;
        }
    }
    if (!o.config || optind >= argc) {
        replay_usage(stderr);
        return 2;
    }
    pd_diag *diag = pd_diag_new();
    pd_config *conf = diag ? pd_config_load(o.config, diag) : NULL;
    if (!conf) {
        if (diag)
            pd_diag_print(diag, stderr);
        pd_diag_free(diag);
        return 1;
    }
    pd_diag_free(diag);
    char err[512];
    pd_engine *eng = pd_engine_new(conf, err, sizeof err);
    if (!eng) {
        fprintf(stderr, "propensityd: %s\n", err);
        pd_config_free(conf);
        return 1;
    }
    uint64_t lines = 0;
    double t0 = now_seconds();
    int status = 0;
    for (int i = optind; i < argc && status == 0; i++)
        if (replay_file(eng, argv[i], &o, &lines, t0) < 0)
            status = 1;
    double secs = now_seconds() - t0;
    if (o.progress)
        fprintf(stderr, "\r\033[K");
    pd_engine_stats s;
    pd_engine_get_stats(eng, &s);
    if (o.json)
        report_json(eng, &s, lines, secs);
    else
        report_text(eng, &s, lines, secs);
    pd_engine_free(eng);
    pd_config_free(conf);
    return status;
}

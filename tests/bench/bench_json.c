/* JSON decoder benchmark: every candidate decodes the same event file into the same struct;
 * rates are printed with their ratio to simdjson's DOM parser measured in the same run, and
 * with the project's own decoder (simdjson + field mapping + validation) beside them.
 * usage: bench_json [--only NAME[,NAME...]] EVENTS.jsonl [repetitions]
 * --only runs the named candidates and the project's decoder; simdjson-dom always runs, as it is
 * the reference every ratio is taken against. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_json.h"
#include "pipeline/event.h"

int bench_decode_jansson(const char *buf, size_t len, bench_event *ev);
int bench_decode_cjson(const char *buf, size_t len, bench_event *ev);
int bench_decode_jsonc(const char *buf, size_t len, bench_event *ev);
int bench_decode_yajl(const char *buf, size_t len, bench_event *ev);

typedef struct candidate {
    const char *name;
    bench_decode_fn fn;
} candidate;

static const candidate candidates[] = {
    {"simdjson-dom", bench_decode_simdjson_dom},
    {"simdjson-ondemand", bench_decode_simdjson_ondemand},
#ifdef HAVE_YAJL
    {"yajl", bench_decode_yajl},
#endif
#ifdef HAVE_CJSON
    {"cjson", bench_decode_cjson},
#endif
#ifdef HAVE_JSONC
    {"json-c", bench_decode_jsonc},
#endif
#ifdef HAVE_JANSSON
    {"jansson", bench_decode_jansson},
#endif
};

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

typedef struct corpus {
    char *buf;
    size_t size;
    size_t *off, *len;
    size_t lines;
} corpus;

static int load(const char *path, corpus *c)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    c->buf = malloc((size_t)size + 64);
    if (!c->buf || fread(c->buf, 1, (size_t)size, f) != (size_t)size) {
        fclose(f);
        return -1;
    }
    fclose(f);
    memset(c->buf + size, 0, 64); /* simdjson reads up to 64 bytes past the end */
    c->size = (size_t)size;
    size_t cap = 1024;
    c->off = malloc(cap * sizeof *c->off);
    c->len = malloc(cap * sizeof *c->len);
    size_t start = 0;
    for (size_t i = 0; i < c->size; i++) {
        if (c->buf[i] != '\n')
            continue;
        if (c->lines == cap) {
            cap *= 2;
            c->off = realloc(c->off, cap * sizeof *c->off);
            c->len = realloc(c->len, cap * sizeof *c->len);
        }
        c->off[c->lines] = start;
        c->len[c->lines] = i - start;
        c->lines++;
        start = i + 1;
    }
    return 0;
}

/* Whether name is an item of the comma-separated list (NULL: every name is). */
static bool selected(const char *list, const char *name)
{
    if (!list)
        return true;
    size_t len = strlen(name);
    for (const char *p = list; *p;) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        if (n == len && memcmp(p, name, len) == 0)
            return true;
        p += n + (comma != NULL);
    }
    return false;
}

int main(int argc, char **argv)
{
    size_t n = sizeof candidates / sizeof candidates[0];
    const char *only = NULL;
    if (argc > 2 && strcmp(argv[1], "--only") == 0) {
        only = argv[2];
        argc -= 2;
        argv += 2;
    }
    if (argc < 2) {
        fprintf(stderr, "usage: bench_json [--only NAME[,NAME...]] EVENTS.jsonl [repetitions]\n");
        return 2;
    }
    for (const char *p = only; p && *p;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        bool known = false;
        for (size_t k = 0; k < n; k++)
            known |= strlen(candidates[k].name) == len && memcmp(candidates[k].name, p, len) == 0;
        if (!known) {
            fprintf(stderr, "bench_json: --only: unknown or unavailable decoder \"%.*s\"\n",
                    (int)len, p);
            return 2;
        }
        p += len + (comma != NULL);
    }
    corpus c = {0};
    if (load(argv[1], &c) < 0 || c.lines == 0) {
        fprintf(stderr, "bench_json: cannot read events from \"%s\"\n", argv[1]);
        return 1;
    }
    int reps = argc > 2 ? atoi(argv[2]) : 5;
    if (reps < 1)
        reps = 1;
    double rate[16] = {0};
    printf("json decoders on %zu events (%.1f bytes/event), %d repetitions\n", c.lines,
           (double)c.size / (double)c.lines, reps);
    for (size_t k = 0; k < n; k++) {
        if (k > 0 && !selected(only, candidates[k].name))
            continue;
        size_t bad = 0;
        double t0 = now_seconds();
        for (int r = 0; r < reps; r++) {
            for (size_t i = 0; i < c.lines; i++) {
                bench_event ev;
                memset(&ev, 0, sizeof ev);
                if (candidates[k].fn(c.buf + c.off[i], c.len[i], &ev) != 0)
                    bad++;
            }
        }
        double dt = now_seconds() - t0;
        rate[k] = (double)c.lines * reps / dt;
        printf("  %-20s %9.0f events/s %7.1f MB/s %6.0f ns/event  x%.2f of simdjson-dom%s\n",
               candidates[k].name, rate[k], (double)c.size * reps / dt / 1e6, 1e9 / rate[k],
               rate[k] / rate[0], bad ? "  (some events refused)" : "");
    }

    /* the project's decoder: simdjson DOM plus the field mapping and validation */
    char *types[] = {"view", "click", "add_to_cart", "purchase", "review", "profile"};
    pd_events_conf ec = {.field_user = "user_id",
                         .field_item = "item_id",
                         .field_type = "type",
                         .field_time = "ts",
                         .field_value = "price",
                         .field_text = "text",
                         .field_event_id = "event_id",
                         .types = types,
                         .n_types = 6,
                         .forget_type = -1,
                         .max_message_bytes = 1 << 20,
                         .max_string_length = 4096};
    const char *paths[] = {"context.device", "context.country", "context.campaign"};
    char err[256];
    pd_decoder *dec = pd_decoder_new(&ec, paths, 3, err, sizeof err);
    if (!dec) {
        fprintf(stderr, "bench_json: %s\n", err);
        return 1;
    }
    size_t refused = 0;
    double t0 = now_seconds();
    for (int r = 0; r < reps; r++) {
        for (size_t i = 0; i < c.lines; i++) {
            pd_event ev;
            if (pd_decoder_decode(dec, c.buf + c.off[i], c.len[i], 1, &ev, NULL, 0))
                refused++;
        }
    }
    double dt = now_seconds() - t0;
    double own = (double)c.lines * reps / dt;
    printf("  %-20s %9.0f events/s %7.1f MB/s %6.0f ns/event  x%.2f of simdjson-dom "
           "(%zu refused)\n",
           "propensityd-decoder", own, (double)c.size * reps / dt / 1e6, 1e9 / own, own / rate[0],
           refused / (size_t)reps);
    pd_decoder_free(dec);
    free(c.buf);
    free(c.off);
    free(c.len);
    return 0;
}

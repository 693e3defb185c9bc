/* Reads what propensityd publishes for a user, as an ad server does: one round trip per user.
 * The C twin of read_scores.py, on hiredis; it prints the same lines.
 *
 *   read_scores [-h HOST] [-p PORT] [-n DB] [-P PREFIX] [-f FAMILY] [-k N] USER...
 *
 * Per user, two commands are appended to hiredis' output buffer and sent in one write, then
 * both replies are read:
 *
 *   HGETALL   {prefix}:u:{user}                       model outputs, ts (ms), v (generation)
 *   ZREVRANGE {prefix}:rec:{user} 0 N-1 WITHSCORES    the recommendation list, best first
 *
 * Not a MULTI transaction: propensityd writes each key whole (one HSET; the list in one
 * MULTI), so each reply is complete on its own. Exit status 0 when every user had scores or a
 * list, 1 when one had neither, 2 on a usage or connection error. An ad server keeps the
 * connection open and calls read_user() per request. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

struct user_reply {
    redisReply *hash; /* array of field, value, field, value ... */
    redisReply *list; /* array of item, score, item, score ... best first */
};

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void user_reply_release(struct user_reply *r)
{
    if (r->hash)
        freeReplyObject(r->hash);
    if (r->list)
        freeReplyObject(r->list);
    r->hash = r->list = NULL;
}

/* One round trip: append both commands, then read both replies (the first read sends the
 * buffer). Returns 0 with both replies in *out, or -1 with the reason in errbuf. */
static int read_user(redisContext *c, const char *prefix, const char *family, const char *user,
                     long top, struct user_reply *out, char *errbuf, size_t errlen)
{
    struct user_reply r = {0};
    void *reply;
    if (redisAppendCommand(c, "HGETALL %s:u:%s", prefix, user) != REDIS_OK ||
        redisAppendCommand(c, "ZREVRANGE %s:%s:%s 0 %ld WITHSCORES", prefix, family, user,
                           top - 1) != REDIS_OK)
        goto out_io;
    if (redisGetReply(c, &reply) != REDIS_OK)
        goto out_io;
    r.hash = reply;
    if (redisGetReply(c, &reply) != REDIS_OK)
        goto out_io;
    r.list = reply;
    for (int i = 0; i < 2; i++) {
        redisReply *x = i == 0 ? r.hash : r.list;
        if (x->type == REDIS_REPLY_ERROR) {
            snprintf(errbuf, errlen, "%s", x->str);
            goto out_release;
        }
        if (x->type != REDIS_REPLY_ARRAY || x->elements % 2 != 0) {
            snprintf(errbuf, errlen, "unexpected reply type %d", x->type);
            goto out_release;
        }
    }
    *out = r;
    return 0;

out_io:
    snprintf(errbuf, errlen, "%s", c->errstr[0] ? c->errstr : "connection lost");
out_release:
    user_reply_release(&r);
    return -1;
}

struct field {
    const char *name, *value;
};

static int cmp_field(const void *a, const void *b)
{
    return strcmp(((const struct field *)a)->name, ((const struct field *)b)->name);
}

/* Prints the lines read_scores.py prints (scores in name order); returns whether the user
 * had anything. */
static bool print_user(const char *user, const struct user_reply *r)
{
    const char *ts = NULL, *generation = NULL;
    size_t n_scores = 0;
    struct field *scores = calloc(r->hash->elements / 2 + 1, sizeof *scores);
    if (!scores) {
        fprintf(stderr, "read_scores: out of memory\n");
        exit(2);
    }
    for (size_t i = 0; i + 1 < r->hash->elements; i += 2) {
        const char *k = r->hash->element[i]->str, *v = r->hash->element[i + 1]->str;
        if (strcmp(k, "ts") == 0)
            ts = v;
        else if (strcmp(k, "v") == 0)
            generation = v;
        else
            scores[n_scores++] = (struct field){k, v};
    }
    qsort(scores, n_scores, sizeof *scores, cmp_field);

    printf("user %s\n", user);
    if (!ts && n_scores == 0)
        printf("no scores\n");
    for (size_t i = 0; i < n_scores; i++)
        printf("score %s %s\n", scores[i].name, scores[i].value);
    if (generation)
        printf("generation %s\n", generation);
    if (ts) {
        long long t = strtoll(ts, NULL, 10);
        printf("ts %lld\n", t);
        printf("staleness_ms %lld\n", now_ms() - t);
    }
    if (r->list->elements == 0)
        printf("no list\n");
    for (size_t i = 0; i + 1 < r->list->elements; i += 2)
        printf("rec %zu %s %s\n", i / 2 + 1, r->list->element[i]->str,
               r->list->element[i + 1]->str);
    free(scores);
    return ts || n_scores > 0 || r->list->elements > 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: read_scores [-h HOST] [-p PORT] [-n DB] [-P PREFIX] [-f FAMILY] [-k N] "
               "USER...\n"
               "  defaults: -h 127.0.0.1 -p 6379 -n 0 -P pd -f rec -k 10\n");
}

static long parse_long(const char *s, long min, const char *what)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min) {
        fprintf(stderr, "read_scores: bad %s \"%s\"\n", what, s);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *prefix = "pd", *family = "rec";
    long port = 6379, db = 0, top = 10;
    int opt;
    while ((opt = getopt(argc, argv, "h:p:n:P:f:k:")) != -1) {
        switch (opt) {
        case 'h': host = optarg; break;
        case 'p': port = parse_long(optarg, 1, "port"); break;
        case 'n': db = parse_long(optarg, 0, "database"); break;
        case 'P': prefix = optarg; break;
        case 'f': family = optarg; break;
        case 'k': top = parse_long(optarg, 1, "list length"); break;
        default: usage(stderr); return 2;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return 2;
    }

    struct timeval timeout = {.tv_sec = 2};
    redisContext *c = redisConnectWithTimeout(host, (int)port, timeout);
    if (!c || c->err) {
        fprintf(stderr, "read_scores: failed to connect to redis \"%s:%ld\": %s\n", host, port,
                c ? c->errstr : "out of memory");
        redisFree(c);
        return 2;
    }
    redisSetTimeout(c, timeout);
    int status = 0;
    if (db != 0) { /* once per connection, not per read */
        redisReply *r = redisCommand(c, "SELECT %ld", db);
        bool ok = r && r->type == REDIS_REPLY_STATUS;
        if (!ok) {
            fprintf(stderr, "read_scores: SELECT %ld: %s\n", db,
                    r && r->type == REDIS_REPLY_ERROR ? r->str : c->errstr);
            status = 2;
        }
        if (r)
            freeReplyObject(r);
    }
    for (int i = optind; i < argc && status != 2; i++) {
        struct user_reply r;
        char err[256];
        if (read_user(c, prefix, family, argv[i], top, &r, err, sizeof err) < 0) {
            fprintf(stderr, "read_scores: redis \"%s:%ld\": %s\n", host, port, err);
            status = 2;
            break;
        }
        if (!print_user(argv[i], &r))
            status = 1;
        user_reply_release(&r);
    }
    redisFree(c);
    return status;
}

/*
 * bench_latency: events produced at a fixed rate, and the time until each is visible where it
 * should be: in Redis (the daemon's HSET of {prefix}:u:{user}, seen through a keyevent
 * notification) or, as the reference, at a plain librdkafka consumer of the same topic (the
 * broker's own delivery latency). One process times both ends on one monotonic clock.
 *
 * Users are produced round robin, so each user's next event comes USERS/RATE seconds after its
 * last: the first notification of a user's key after its event was produced belongs to that
 * event as long as latencies stay below that period (events still unseen when their user
 * comes round again are counted as "late" with the period as a lower bound). Prints one JSON
 * object; tests/bench/latency.py and soak.py run it.
 *
 * What reached the broker is counted from delivery reports, not from what was queued:
 * "produced" is what the loop handed to librdkafka, "delivered" what the broker acknowledged,
 * "failed" what librdkafka gave up on ("possibly_persisted" of those may still be in the log:
 * timed out in flight), "outstanding" what had no report when the final flush gave up
 * (--flush-timeout, 60 s). The producer is idempotent (acks=all, retries, in-order); note that
 * librdkafka 2.0's mock broker checks sequence numbers only for transactional producers, so a
 * retried request can still land twice there: "retries" (the producer's request retries, from
 * its statistics) says whether any happened.
 */

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis/hiredis.h>
#include <librdkafka/rdkafka.h>

#define STOP_MESSAGE "bench_latency:stop"

struct opts {
    const char *brokers;
    const char *topic;
    const char *redis_host;
    int redis_port;
    const char *prefix;
    bool consume;
    double rate;
    double duration;
    double warmup;
    double drain;
    double flush_timeout;
    unsigned users;
    const char *fetch_wait_ms;
};

struct shared {
    const struct opts *o;
    _Atomic int64_t *pending; /* per user: produce time (ns) of the event not yet seen, or 0 */
    _Atomic bool measuring;   /* past the warm-up: latencies are recorded */
    _Atomic bool stop;
    _Atomic bool ready; /* the reader is subscribed / assigned */
    int64_t *lat;       /* recorded latencies (ns), written by the reader thread only */
    size_t n_lat, cap_lat;
    uint64_t stray; /* notifications with no event waiting */
    uint64_t other; /* notifications of keys that are not our users */
    char error[600];
};

/* the producer's delivery reports and statistics, served by rd_kafka_poll/flush on the main
 * thread only */
struct delivery {
    uint64_t delivered;
    uint64_t failed;
    uint64_t possibly_persisted; /* of failed: may be in the log all the same */
    uint64_t retries;            /* summed "txretries" of the last statistics */
    uint64_t req_timeouts;       /* summed "req_timeouts" */
    int64_t stats_at;            /* when the latest statistics came (now_ns) */
    char first_failure[256];
    char fatal[512];
};

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

/* "lt123" (anywhere after the last ':') -> 123; -1 when it is not one of ours */
static long user_index(const char *s, size_t len, unsigned users)
{
    const char *p = memrchr(s, ':', len);
    p = p ? p + 1 : s;
    size_t rest = len - (size_t)(p - s);
    if (rest < 3 || p[0] != 'l' || p[1] != 't')
        return -1;
    long v = 0;
    for (size_t i = 2; i < rest; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        v = v * 10 + (p[i] - '0');
        if (v >= (long)users)
            return -1;
    }
    return v;
}

static void seen(struct shared *sh, long u, int64_t t)
{
    if (u < 0) {
        sh->other++;
        return;
    }
    int64_t sent = atomic_exchange(&sh->pending[u], 0);
    if (sent == 0) {
        sh->stray++;
        return;
    }
    if (!atomic_load(&sh->measuring) || sent < 0)
        return; /* produced during the warm-up (stored negated) */
    if (sh->n_lat == sh->cap_lat) {
        size_t cap = sh->cap_lat ? 2 * sh->cap_lat : 1 << 16;
        int64_t *p = realloc(sh->lat, cap * sizeof *p);
        if (!p)
            return;
        sh->lat = p;
        sh->cap_lat = cap;
    }
    sh->lat[sh->n_lat++] = t - sent;
}

static void *redis_reader(void *arg)
{
    struct shared *sh = arg;
    const struct opts *o = sh->o;
    redisContext *c = redisConnect(o->redis_host, o->redis_port);
    if (!c || c->err) {
        snprintf(sh->error, sizeof sh->error, "redis connect: %s", c ? c->errstr : "oom");
        atomic_store(&sh->ready, true);
        return NULL;
    }
    redisReply *r = redisCommand(c, "SUBSCRIBE __keyevent@0__:hset");
    freeReplyObject(r);
    atomic_store(&sh->ready, true);
    for (;;) {
        void *reply = NULL;
        if (redisGetReply(c, &reply) != REDIS_OK) {
            snprintf(sh->error, sizeof sh->error, "redis subscription: %s", c->errstr);
            break;
        }
        int64_t t = now_ns();
        r = reply;
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
            r->element[2]->type == REDIS_REPLY_STRING) {
            const char *key = r->element[2]->str;
            size_t len = r->element[2]->len;
            if (len == strlen(STOP_MESSAGE) && memcmp(key, STOP_MESSAGE, len) == 0) {
                freeReplyObject(r);
                break;
            }
            seen(sh, user_index(key, len, o->users), t);
        }
        freeReplyObject(r);
    }
    redisFree(c);
    return NULL;
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk;
    struct delivery *d = opaque;
    if (!m->err) {
        d->delivered++;
        return;
    }
    d->failed++;
    if (rd_kafka_message_status(m) == RD_KAFKA_MSG_STATUS_POSSIBLY_PERSISTED)
        d->possibly_persisted++;
    if (!d->first_failure[0])
        snprintf(d->first_failure, sizeof d->first_failure, "%s", rd_kafka_err2name(m->err));
}

static void on_producer_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    struct delivery *d = opaque;
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char why[400];
        rd_kafka_resp_err_t orig = rd_kafka_fatal_error(rk, why, sizeof why);
        if (!d->fatal[0])
            snprintf(d->fatal, sizeof d->fatal, "producer fatal error %s: %s",
                     rd_kafka_err2name(orig), why);
        return;
    }
    /* transient (the client retries): on stderr for whoever looks, not in the report */
    fprintf(stderr, "bench_latency: producer: %s: %s\n",
            rd_kafka_err2name((rd_kafka_resp_err_t)err), reason);
}

static uint64_t json_sum(const char *json, const char *key)
{
    uint64_t sum = 0;
    size_t kl = strlen(key);
    for (const char *p = strstr(json, key); p; p = strstr(p + kl, key))
        sum += strtoull(p + kl, NULL, 10);
    return sum;
}

/* every broker's counters (the internal one's are 0): summed, the latest statistics kept */
static int on_stats(rd_kafka_t *rk, char *json, size_t len, void *opaque)
{
    (void)rk;
    (void)len;
    struct delivery *d = opaque;
    d->retries = json_sum(json, "\"txretries\":");
    d->req_timeouts = json_sum(json, "\"req_timeouts\":");
    d->stats_at = now_ns();
    return 0;
}

static rd_kafka_t *kafka_new(rd_kafka_type_t type, const struct opts *o, const char *const *kv,
                             struct delivery *d, char *err, size_t errlen)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (d) {
        rd_kafka_conf_set_opaque(conf, d);
        rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
        rd_kafka_conf_set_error_cb(conf, on_producer_error);
        rd_kafka_conf_set_stats_cb(conf, on_stats);
    }
    if (rd_kafka_conf_set(conf, "bootstrap.servers", o->brokers, err, errlen) != RD_KAFKA_CONF_OK)
        goto out_bad;
    for (size_t i = 0; kv[i]; i += 2)
        if (rd_kafka_conf_set(conf, kv[i], kv[i + 1], err, errlen) != RD_KAFKA_CONF_OK)
            goto out_bad;
    rd_kafka_t *rk = rd_kafka_new(type, conf, err, errlen);
    if (!rk)
        goto out_bad;
    return rk;

out_bad:
    rd_kafka_conf_destroy(conf);
    return NULL;
}

static void *kafka_reader(void *arg)
{
    struct shared *sh = arg;
    const struct opts *o = sh->o;
    char err[512];
    /* librdkafka's defaults, as the daemon gets them apart from its prefetch */
    const char *const kv[] = {"group.id", "bench-latency-reference", "enable.auto.commit",
                              "false",    "fetch.wait.max.ms",       o->fetch_wait_ms,
                              NULL};
    rd_kafka_t *rk = kafka_new(RD_KAFKA_CONSUMER, o, kv, NULL, err, sizeof err);
    if (!rk) {
        snprintf(sh->error, sizeof sh->error, "consumer: %s", err);
        atomic_store(&sh->ready, true);
        return NULL;
    }
    rd_kafka_poll_set_consumer(rk);
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, o->topic, NULL);
    if (rd_kafka_metadata(rk, 0, rkt, &md, 10000) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        md->topic_cnt != 1 || md->topics[0].partition_cnt == 0) {
        snprintf(sh->error, sizeof sh->error, "no metadata for topic \"%s\"", o->topic);
        atomic_store(&sh->ready, true);
        goto out;
    }
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(0);
    for (int i = 0; i < md->topics[0].partition_cnt; i++)
        rd_kafka_topic_partition_list_add(parts, o->topic, md->topics[0].partitions[i].id)->offset =
            RD_KAFKA_OFFSET_END;
    rd_kafka_assign(rk, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    atomic_store(&sh->ready, true);
    while (!atomic_load(&sh->stop)) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (!m)
            continue;
        int64_t t = now_ns();
        if (!m->err)
            seen(sh, user_index(m->key ? m->key : "", m->key_len, o->users), t);
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(rk);
out:
    if (md)
        rd_kafka_metadata_destroy(md);
    rd_kafka_topic_destroy(rkt);
    rd_kafka_destroy(rk);
    return NULL;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static double pct_ms(const int64_t *v, size_t n, double q)
{
    if (n == 0)
        return -1;
    size_t i = (size_t)(q * (double)(n - 1) + 0.5);
    return (double)v[i] / 1e6;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: bench_latency --brokers B --topic T --rate R --duration S --users N\n"
            "                     (--redis HOST:PORT [--prefix P] | --consume)\n"
            "                     [--warmup S] [--drain S] [--fetch-wait-ms MS (the consumer's)]\n"
            "                     [--flush-timeout S (for the last delivery reports, 60)]\n");
}

static int parse(int argc, char **argv, struct opts *o)
{
    static const struct option lo[] = {
        {"brokers", required_argument, NULL, 'b'},
        {"topic", required_argument, NULL, 't'},
        {"redis", required_argument, NULL, 'r'},
        {"prefix", required_argument, NULL, 'p'},
        {"consume", no_argument, NULL, 'c'},
        {"rate", required_argument, NULL, 'R'},
        {"duration", required_argument, NULL, 'd'},
        {"warmup", required_argument, NULL, 'w'},
        {"drain", required_argument, NULL, 'D'},
        {"users", required_argument, NULL, 'u'},
        {"fetch-wait-ms", required_argument, NULL, 'f'},
        {"flush-timeout", required_argument, NULL, 'F'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    static char host[256];
    *o = (struct opts){.prefix = "bench",
                       .warmup = 2.0,
                       .drain = 5.0,
                       .flush_timeout = 60.0,
                       .users = 0,
                       .fetch_wait_ms = "500"};
    int ch;
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 'b':
            o->brokers = optarg;
            break;
        case 't':
            o->topic = optarg;
            break;
        case 'p':
            o->prefix = optarg;
            break;
        case 'c':
            o->consume = true;
            break;
        case 'R':
            o->rate = atof(optarg);
            break;
        case 'd':
            o->duration = atof(optarg);
            break;
        case 'w':
            o->warmup = atof(optarg);
            break;
        case 'D':
            o->drain = atof(optarg);
            break;
        case 'f':
            o->fetch_wait_ms = optarg;
            break;
        case 'F':
            o->flush_timeout = atof(optarg);
            break;
        case 'u':
            o->users = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'r': {
            const char *colon = strrchr(optarg, ':');
            if (!colon || (size_t)(colon - optarg) >= sizeof host)
                return -1;
            memcpy(host, optarg, (size_t)(colon - optarg));
            host[colon - optarg] = '\0';
            o->redis_host = host;
            o->redis_port = atoi(colon + 1);
            break;
        }
        case 'h':
            usage(stdout);
            exit(0);
        default:
            return -1;
        }
    }
    if (!o->brokers || !o->topic || o->rate <= 0 || o->duration <= 0 || o->users == 0 ||
        o->flush_timeout < 0 || (o->consume == (o->redis_host != NULL)))
        return -1;
    return 0;
}

static void sleep_until(int64_t t)
{
    struct timespec ts = {.tv_sec = (time_t)(t / 1000000000LL),
                          .tv_nsec = (long)(t % 1000000000LL)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

int main(int argc, char **argv)
{
    struct opts o;
    if (parse(argc, argv, &o) < 0) {
        usage(stderr);
        return 2;
    }
    struct shared sh = {.o = &o};
    sh.pending = calloc(o.users, sizeof *sh.pending);
    if (!sh.pending)
        return 1;

    char err[512];
    /* linger 1 ms: at linger 0 every event was its own produce request, which saturated the
     * single-threaded mock broker from 5k events/s on (the reference p99 was seconds).
     * Idempotent: acks=all, retries without reordering (and, on a real broker, without
     * duplicates); statistics every second for the retry count. */
    static const char *const pkv[] = {"linger.ms",
                                      "1",
                                      "topic.partitioner",
                                      "murmur2_random",
                                      "queue.buffering.max.messages",
                                      "1000000",
                                      "enable.idempotence",
                                      "true",
                                      "statistics.interval.ms",
                                      "1000",
                                      NULL};
    static struct delivery dlv;
    rd_kafka_t *prod = kafka_new(RD_KAFKA_PRODUCER, &o, pkv, &dlv, err, sizeof err);
    if (!prod) {
        fprintf(stderr, "bench_latency: producer: %s\n", err);
        return 1;
    }
    pthread_t reader;
    pthread_create(&reader, NULL, o.consume ? kafka_reader : redis_reader, &sh);
    while (!atomic_load(&sh.ready))
        sleep_until(now_ns() + 1000000);
    if (sh.error[0]) {
        fprintf(stderr, "bench_latency: %s\n", sh.error);
        return 1;
    }
    if (o.consume)
        sleep_until(now_ns() + 1000000000LL); /* the assignment's END offsets resolve */

    static const char *const types[] = {"view", "view",  "view",  "view",        "view",
                                        "view", "click", "click", "add_to_cart", "purchase"};
    static const char *const devices[] = {"mobile", "desktop", "tablet"};
    static const char *const countries[] = {"US", "DE", "GB", "FR", "ES"};
    uint64_t produced = 0, measured = 0, late = 0, errors = 0;
    int64_t late_floor = 0; /* the period: a late event's latency is at least this */
    double warmup_n = o.warmup * o.rate, total_n = (o.warmup + o.duration) * o.rate;
    int64_t start = now_ns();
    while ((double)produced < total_n) {
        int64_t due = start + (int64_t)((double)produced * 1e9 / o.rate);
        int64_t t = now_ns();
        if (t < due) {
            rd_kafka_poll(prod, 0);
            sleep_until(due);
            t = now_ns();
        }
        bool measuring = (double)produced >= warmup_n;
        if (measuring && !atomic_load(&sh.measuring))
            atomic_store(&sh.measuring, true);
        unsigned u = (unsigned)(produced % o.users);
        char key[32], value[512];
        int kl = snprintf(key, sizeof key, "lt%u", u);
        uint64_t h = produced * 0x9E3779B97F4A7C15ULL;
        const char *type = types[(h >> 20) % 10];
        int vl = snprintf(value, sizeof value,
                          "{\"event_id\":\"l-%" PRIu64 "\",\"type\":\"%s\",\"user_id\":\"%s\","
                          "\"item_id\":\"sku-%u\",\"ts\":%" PRId64 ",\"price\":%.2f,"
                          "\"sent_ns\":%" PRId64 ",\"context\":{\"device\":\"%s\","
                          "\"country\":\"%s\",\"campaign\":\"c%u\"}}",
                          produced, type, key, (unsigned)((h >> 30) % 5000), wall_ms(),
                          5.0 + (double)((h >> 40) % 20000) / 100.0, t, devices[(h >> 8) % 3],
                          countries[(h >> 12) % 5], (unsigned)((h >> 16) % 10));
        /* negated while warming up: seen, not recorded */
        int64_t old = atomic_exchange(&sh.pending[u], measuring ? t : -t);
        if (old != 0 && measuring) {
            late++;
            int64_t was = old < 0 ? -old : old;
            if (late_floor == 0 || t - was < late_floor)
                late_floor = t - was;
        }
        while (rd_kafka_producev(
                   prod, RD_KAFKA_V_TOPIC(o.topic), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                   RD_KAFKA_V_KEY(key, (size_t)kl), RD_KAFKA_V_VALUE(value, (size_t)vl),
                   RD_KAFKA_V_END) != RD_KAFKA_RESP_ERR_NO_ERROR) {
            if (rd_kafka_last_error() != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
                errors++;
                break;
            }
            rd_kafka_poll(prod, 10);
        }
        produced++;
        if (measuring)
            measured++;
    }
    double produce_secs = (double)(now_ns() - start) / 1e9;
    /* until every queued message has its delivery report, or the flush timeout */
    uint64_t queued = produced - errors;
    int64_t flush_start = now_ns();
    int64_t flush_end = flush_start + (int64_t)(o.flush_timeout * 1e9);
    while (dlv.delivered + dlv.failed < queued && !dlv.fatal[0] && now_ns() < flush_end)
        rd_kafka_flush(prod, 100);
    rd_kafka_poll(prod, 0);
    double flush_secs = (double)(now_ns() - flush_start) / 1e9;
    uint64_t outstanding = queued - dlv.delivered - dlv.failed;
    if (outstanding)
        fprintf(stderr,
                "bench_latency: %" PRIu64 " of %" PRIu64 " messages without a delivery report "
                "after %.0f s of flushing\n",
                outstanding, queued, flush_secs);

    /* let the last events arrive, then stop the reader */
    int64_t drain_end = now_ns() + (int64_t)(o.drain * 1e9);
    unsigned unseen = 0;
    while (now_ns() < drain_end) {
        unseen = 0;
        for (unsigned u = 0; u < o.users; u++)
            unseen += atomic_load(&sh.pending[u]) != 0;
        if (unseen == 0)
            break;
        rd_kafka_poll(prod, 20);
    }
    /* statistics taken after the last delivery report, for the final retry count */
    int64_t flush_done = flush_start + (int64_t)(flush_secs * 1e9);
    while (dlv.stats_at < flush_done && now_ns() < flush_done + 2000000000LL)
        rd_kafka_poll(prod, 50);
    atomic_store(&sh.stop, true);
    if (!o.consume) {
        redisContext *c = redisConnect(o.redis_host, o.redis_port);
        if (c && !c->err)
            freeReplyObject(redisCommand(c, "PUBLISH __keyevent@0__:hset %s", STOP_MESSAGE));
        if (c)
            redisFree(c);
    }
    pthread_join(reader, NULL);
    if (outstanding) /* not waited for again by rd_kafka_destroy */
        rd_kafka_purge(prod, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_poll(prod, 0);
    rd_kafka_destroy(prod);
    if (dlv.fatal[0] && !sh.error[0])
        snprintf(sh.error, sizeof sh.error, "%s", dlv.fatal);

    for (char *c = sh.error; *c; c++) /* a JSON string */
        if (*c == '"' || *c == '\\' || (unsigned char)*c < 0x20)
            *c = '\'';
    qsort(sh.lat, sh.n_lat, sizeof *sh.lat, cmp_i64);
    double sum = 0;
    for (size_t i = 0; i < sh.n_lat; i++)
        sum += (double)sh.lat[i];
    printf("{\"mode\":\"%s\",\"rate\":%.0f,\"achieved_rate\":%.0f,\"users\":%u,"
           "\"period_s\":%.3f,\"produced\":%" PRIu64 ",\"measured\":%" PRIu64
           ",\"matched\":%zu,\"late\":%" PRIu64 ",\"late_floor_ms\":%.1f,\"unseen\":%u"
           ",\"stray\":%" PRIu64 ",\"other\":%" PRIu64 ",\"produce_errors\":%" PRIu64
           ",\"delivered\":%" PRIu64 ",\"failed\":%" PRIu64 ",\"possibly_persisted\":%" PRIu64
           ",\"outstanding\":%" PRIu64 ",\"delivery_error\":\"%s\",\"retries\":%" PRIu64
           ",\"req_timeouts\":%" PRIu64 ",\"flush_s\":%.3f"
           ",\"mean_ms\":%.3f,\"p50_ms\":%.3f,\"p90_ms\":%.3f,\"p99_ms\":%.3f"
           ",\"p999_ms\":%.3f,\"max_ms\":%.3f,\"error\":\"%s\"}\n",
           o.consume ? "consume" : "redis", o.rate, (double)produced / produce_secs, o.users,
           (double)o.users / o.rate, produced, measured, sh.n_lat, late, (double)late_floor / 1e6,
           unseen, sh.stray, sh.other, errors, dlv.delivered, dlv.failed, dlv.possibly_persisted,
           outstanding, dlv.first_failure, dlv.retries, dlv.req_timeouts, flush_secs,
           sh.n_lat ? sum / (double)sh.n_lat / 1e6 : -1.0, pct_ms(sh.lat, sh.n_lat, 0.50),
           pct_ms(sh.lat, sh.n_lat, 0.90), pct_ms(sh.lat, sh.n_lat, 0.99),
           pct_ms(sh.lat, sh.n_lat, 0.999), sh.n_lat ? (double)sh.lat[sh.n_lat - 1] / 1e6 : -1.0,
           sh.error);
    free(sh.lat);
    free(sh.pending);
    return 0;
}

/*
 * pd-kafka-broker: librdkafka's in-process mock Kafka cluster run as a standalone process, so the
 * demo and the integration tests get a real Kafka wire protocol (produce, fetch, consumer groups,
 * offset commits) without a JVM. Development and test use only: nothing is persisted.
 */

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#define DEFAULT_PARTITIONS 4
#define MAX_PARTITIONS     10000
#define MAX_BROKERS        32
#define MAX_TOPIC_LEN      249 /* Kafka's own limit on topic names */

struct broker_topic {
    char name[MAX_TOPIC_LEN + 1];
    int partitions;
};

struct broker_opts {
    struct broker_topic *topics;
    size_t n_topics;
    int brokers;
    const char *ready_file;
    bool control; /* fault-injection commands on stdin */
};

/* Set by the signal handler only; everything else happens in main's loop. */
static volatile sig_atomic_t stop_requested;

static void on_stop_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static void usage(FILE *out, const char *argv0)
{
    fprintf(out,
            "usage: %s [--topic NAME[:PARTITIONS]]... [--brokers N] [--ready-file FILE] "
            "[--control]\n"
            "\n"
            "Runs librdkafka's mock Kafka cluster as a standalone broker for development and\n"
            "tests. Prints the bootstrap address (host:port[,host:port...]) as the first line\n"
            "on stdout, then serves until SIGTERM or SIGINT.\n"
            "\n"
            "  -t, --topic NAME[:PARTITIONS]  create a topic (repeatable; default %d partitions,\n"
            "                                 replication factor = number of brokers)\n"
            "  -b, --brokers N                number of mock brokers (default 1, max %d)\n"
            "  -r, --ready-file FILE          once listening, atomically write the bootstrap\n"
            "                                 address to FILE (temp file + rename)\n"
            "  -c, --control                  read fault-injection commands from stdin, one a\n"
            "                                 line, each answered on stdout with \"ok\" or\n"
            "                                 \"error: WHY\" (for the fault tests):\n"
            "      down BROKER | up BROKER    refuse / accept connections (-1: every broker)\n"
            "      rtt BROKER MS              delay every response of a broker\n"
            "      leader TOPIC PART BROKER   move a partition's leader\n"
            "      coordinator GROUP BROKER   move a consumer group's coordinator\n"
            "      errors API N ERROR         the next N requests of API (Fetch, OffsetCommit,\n"
            "                                 ... or its number) fail with ERROR (a name such\n"
            "                                 as NOT_COORDINATOR, or a number)\n"
            "      clear API                  drop the errors still queued for API\n"
            "  -h, --help                     this text\n"
            "\n"
            "Limits of the mock cluster (librdkafka %s), which is not a real Kafka:\n"
            "  - each partition keeps a bounded in-memory log (measured with librdkafka 2.0.2:\n"
            "    about 5 MB of record batches or 100000 batches, whichever is reached first):\n"
            "    the oldest batches are dropped as new ones arrive and the beginning offset\n"
            "    moves forward, so size long runs with that in mind; nothing survives a restart\n"
            "  - the first consumer-group join waits 3 s (initial rebalance delay); later\n"
            "    rebalances wait up to session.timeout.ms - 1 s for members to rejoin\n"
            "  - OffsetFetch for \"all partitions\" (null topic list) is not supported: ask\n"
            "    for explicit partitions; ListGroups and DescribeGroups are not implemented\n"
            "  - listens on 127.0.0.1 with ephemeral ports chosen by the kernel\n"
            "  - topics a client asks for that were not created here are auto-created\n"
            "  - no CreateTopics/DeleteTopics admin API, no ACLs, no SASL/TLS\n",
            argv0, DEFAULT_PARTITIONS, MAX_BROKERS, rd_kafka_version_str());
}

/* Kafka accepts [a-zA-Z0-9._-], at most 249 characters, and not "." or "..". */
static bool topic_name_valid(const char *name, size_t len)
{
    if (len == 0 || len > MAX_TOPIC_LEN)
        return false;
    if ((len == 1 && name[0] == '.') || (len == 2 && name[0] == '.' && name[1] == '.'))
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-';
        if (!ok)
            return false;
    }
    return true;
}

static int parse_int(const char *s, int min, int max, int *ret_value)
{
    char *end = NULL;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
        return -EINVAL;
    *ret_value = (int)v;
    return 0;
}

static int topic_parse(const char *spec, struct broker_topic *ret_topic)
{
    const char *colon = strchr(spec, ':');
    size_t name_len = colon ? (size_t)(colon - spec) : strlen(spec);
    int partitions = DEFAULT_PARTITIONS;

    if (!topic_name_valid(spec, name_len)) {
        fprintf(stderr,
                "pd-kafka-broker: invalid topic name in \"%s\": use 1-%d of [a-zA-Z0-9._-]\n", spec,
                MAX_TOPIC_LEN);
        return -EINVAL;
    }
    if (colon && parse_int(colon + 1, 1, MAX_PARTITIONS, &partitions) < 0) {
        fprintf(stderr, "pd-kafka-broker: invalid partition count in \"%s\": expected 1-%d\n", spec,
                MAX_PARTITIONS);
        return -EINVAL;
    }
    memcpy(ret_topic->name, spec, name_len);
    ret_topic->name[name_len] = '\0';
    ret_topic->partitions = partitions;
    return 0;
}

static int opts_add_topic(struct broker_opts *opts, const char *spec)
{
    struct broker_topic topic;
    struct broker_topic *grown;

    if (topic_parse(spec, &topic) < 0)
        return -EINVAL;
    for (size_t i = 0; i < opts->n_topics; i++) {
        if (strcmp(opts->topics[i].name, topic.name) == 0) {
            fprintf(stderr, "pd-kafka-broker: topic \"%s\" given twice\n", topic.name);
            return -EINVAL;
        }
    }
    grown = realloc(opts->topics, (opts->n_topics + 1) * sizeof(*grown));
    if (!grown)
        return -ENOMEM;
    opts->topics = grown;
    opts->topics[opts->n_topics++] = topic;
    return 0;
}

/* Returns 0 to run, 1 when --help was printed, -EINVAL on a bad command line. */
static int opts_parse(int argc, char **argv, struct broker_opts *opts)
{
    static const struct option longopts[] = {
        {"topic", required_argument, NULL, 't'},
        {"brokers", required_argument, NULL, 'b'},
        {"ready-file", required_argument, NULL, 'r'},
        {"control", no_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;

    opts->brokers = 1;
    while ((c = getopt_long(argc, argv, "t:b:r:ch", longopts, NULL)) != -1) {
        switch (c) {
        case 't': {
            int err = opts_add_topic(opts, optarg);
            if (err < 0)
                return err;
            break;
        }
        case 'b':
            if (parse_int(optarg, 1, MAX_BROKERS, &opts->brokers) < 0) {
                fprintf(stderr, "pd-kafka-broker: invalid --brokers \"%s\": expected 1-%d\n",
                        optarg, MAX_BROKERS);
                return -EINVAL;
            }
            break;
        case 'r':
            if (optarg[0] == '\0') {
                fprintf(stderr, "pd-kafka-broker: --ready-file needs a file name\n");
                return -EINVAL;
            }
            opts->ready_file = optarg;
            break;
        case 'c':
            opts->control = true;
            break;
        case 'h':
            usage(stdout, argv[0]);
            return 1;
        default:
            fprintf(stderr, "Try '%s --help'.\n", argv[0]);
            return -EINVAL;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "pd-kafka-broker: unexpected argument \"%s\"\nTry '%s --help'.\n",
                argv[optind], argv[0]);
        return -EINVAL;
    }
    return 0;
}

/* Readers poll for the file to appear, so it must never be seen half-written: write a temp file
 * in the same directory, fsync it, then rename over the target. */
static int ready_file_write(const char *path, const char *bootstraps)
{
    char tmp[PATH_MAX];
    FILE *f;
    int n, err = 0;

    n = snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
    if (n < 0 || (size_t)n >= sizeof(tmp))
        return -ENAMETOOLONG;
    f = fopen(tmp, "w");
    if (!f)
        return -errno;
    if (fprintf(f, "%s\n", bootstraps) < 0 || fflush(f) != 0 || fsync(fileno(f)) != 0)
        err = -errno;
    if (fclose(f) != 0 && err == 0)
        err = -errno;
    if (err < 0)
        goto out_unlink;
    if (rename(tmp, path) != 0) {
        err = -errno;
        goto out_unlink;
    }
    return 0;

out_unlink:
    unlink(tmp);
    return err ? err : -EIO;
}

/* ---- fault injection (--control) ---- */

static const struct {
    const char *name;
    int16_t key;
} api_keys[] = {
    {"Produce", 0},       {"Fetch", 1},          {"ListOffsets", 2},      {"Metadata", 3},
    {"OffsetCommit", 8},  {"OffsetFetch", 9},    {"FindCoordinator", 10}, {"JoinGroup", 11},
    {"Heartbeat", 12},    {"LeaveGroup", 13},    {"SyncGroup", 14},       {"ApiVersions", 18},
    {"InitProducerId", 22},
};

static int parse_api(const char *s, int16_t *ret_key)
{
    int v;
    for (size_t i = 0; i < sizeof api_keys / sizeof api_keys[0]; i++) {
        if (strcmp(s, api_keys[i].name) == 0) {
            *ret_key = api_keys[i].key;
            return 0;
        }
    }
    if (parse_int(s, 0, 100, &v) < 0)
        return -EINVAL;
    *ret_key = (int16_t)v;
    return 0;
}

/* An error by librdkafka's name without the RD_KAFKA_RESP_ERR_ prefix, or by number. */
static int parse_error(const char *s, rd_kafka_resp_err_t *ret_err)
{
    const struct rd_kafka_err_desc *descs;
    size_t n;
    int v;
    rd_kafka_get_err_descs(&descs, &n);
    for (size_t i = 0; i < n; i++) {
        if (descs[i].name && strcmp(descs[i].name, s) == 0) {
            *ret_err = descs[i].code;
            return 0;
        }
    }
    if (parse_int(s, -200, 200, &v) < 0)
        return -EINVAL;
    *ret_err = (rd_kafka_resp_err_t)v;
    return 0;
}

/* Runs one command line; writes the reason of a refusal to why. */
static int control_run(rd_kafka_mock_cluster_t *mc, char *line, char *why, size_t whylen)
{
    char *argv[5];
    int argc = 0, broker, part, n;
    int16_t api;
    rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR, inj;
    for (char *save = NULL, *tok = strtok_r(line, " \t\r\n", &save); tok && argc < 5;
         tok = strtok_r(NULL, " \t\r\n", &save))
        argv[argc++] = tok;
    if (argc == 0) {
        snprintf(why, whylen, "empty command");
        return -EINVAL;
    }
#define NEED(k)                                                                                    \
    do {                                                                                           \
        if (argc != (k) + 1) {                                                                     \
            snprintf(why, whylen, "%s takes %d argument(s)", argv[0], (k));                        \
            return -EINVAL;                                                                        \
        }                                                                                          \
    } while (0)
    if (strcmp(argv[0], "down") == 0 || strcmp(argv[0], "up") == 0) {
        NEED(1);
        if (parse_int(argv[1], -1, MAX_BROKERS, &broker) < 0)
            goto out_bad;
        err = argv[0][0] == 'd' ? rd_kafka_mock_broker_set_down(mc, broker)
                                : rd_kafka_mock_broker_set_up(mc, broker);
    } else if (strcmp(argv[0], "rtt") == 0) {
        NEED(2);
        if (parse_int(argv[1], -1, MAX_BROKERS, &broker) < 0 ||
            parse_int(argv[2], 0, 600000, &n) < 0)
            goto out_bad;
        err = rd_kafka_mock_broker_set_rtt(mc, broker, n);
    } else if (strcmp(argv[0], "leader") == 0) {
        NEED(3);
        if (parse_int(argv[2], 0, MAX_PARTITIONS, &part) < 0 ||
            parse_int(argv[3], -1, MAX_BROKERS, &broker) < 0)
            goto out_bad;
        err = rd_kafka_mock_partition_set_leader(mc, argv[1], part, broker);
    } else if (strcmp(argv[0], "coordinator") == 0) {
        NEED(2);
        if (parse_int(argv[2], -1, MAX_BROKERS, &broker) < 0)
            goto out_bad;
        err = rd_kafka_mock_coordinator_set(mc, "group", argv[1], broker);
    } else if (strcmp(argv[0], "errors") == 0) {
        NEED(3);
        if (parse_api(argv[1], &api) < 0 || parse_int(argv[2], 1, 100000, &n) < 0 ||
            parse_error(argv[3], &inj) < 0)
            goto out_bad;
        rd_kafka_resp_err_t *errs = malloc((size_t)n * sizeof *errs);
        if (!errs) {
            snprintf(why, whylen, "out of memory");
            return -ENOMEM;
        }
        for (int i = 0; i < n; i++)
            errs[i] = inj;
        rd_kafka_mock_push_request_errors_array(mc, api, (size_t)n, errs);
        free(errs);
    } else if (strcmp(argv[0], "clear") == 0) {
        NEED(1);
        if (parse_api(argv[1], &api) < 0)
            goto out_bad;
        rd_kafka_mock_clear_request_errors(mc, api);
    } else {
        snprintf(why, whylen, "unknown command \"%s\"", argv[0]);
        return -EINVAL;
    }
#undef NEED
    if (err) {
        snprintf(why, whylen, "%s", rd_kafka_err2str(err));
        return -EIO;
    }
    return 0;

out_bad:
    snprintf(why, whylen, "bad argument to %s", argv[0]);
    return -EINVAL;
}

/* Reads what stdin has and runs each complete line. Returns false at end of input. */
static bool control_read(rd_kafka_mock_cluster_t *mc, char *buf, size_t cap, size_t *len)
{
    ssize_t got = read(STDIN_FILENO, buf + *len, cap - 1 - *len);
    if (got <= 0)
        return got < 0 && (errno == EINTR || errno == EAGAIN);
    *len += (size_t)got;
    buf[*len] = '\0';
    char *nl;
    while ((nl = strchr(buf, '\n')) != NULL) {
        char why[256];
        *nl = '\0';
        fprintf(stderr, "pd-kafka-broker: control: %s\n", buf);
        if (control_run(mc, buf, why, sizeof why) == 0)
            printf("ok\n");
        else
            printf("error: %s\n", why);
        fflush(stdout);
        size_t used = (size_t)(nl + 1 - buf);
        memmove(buf, nl + 1, *len - used + 1);
        *len -= used;
    }
    if (*len == cap - 1) { /* a line longer than the buffer: refuse it whole */
        printf("error: command too long\n");
        fflush(stdout);
        *len = 0;
    }
    return true;
}

/* Blocks the stop signals first and waits with sigsuspend(), so a signal arriving between the
 * flag check and the wait cannot be lost. */
static int signals_install(sigset_t *ret_waitmask)
{
    struct sigaction sa;
    sigset_t block;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGTERM, &sa, NULL) != 0 || sigaction(SIGINT, &sa, NULL) != 0)
        return -errno;
    /* A client closing its socket mid-write must not kill the broker. */
    signal(SIGPIPE, SIG_IGN);

    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    if (sigprocmask(SIG_BLOCK, &block, ret_waitmask) != 0)
        return -errno;
    sigdelset(ret_waitmask, SIGTERM);
    sigdelset(ret_waitmask, SIGINT);
    return 0;
}

int main(int argc, char **argv)
{
    struct broker_opts opts = {0};
    char errstr[512];
    rd_kafka_conf_t *conf = NULL;
    rd_kafka_t *rk = NULL;
    rd_kafka_mock_cluster_t *mcluster = NULL;
    const char *bootstraps;
    sigset_t waitmask;
    int exit_code = 1;
    int err;

    err = opts_parse(argc, argv, &opts);
    if (err == 1) {
        exit_code = 0;
        goto out_free_opts;
    }
    if (err < 0) {
        exit_code = 2;
        goto out_free_opts;
    }

    err = signals_install(&waitmask);
    if (err < 0) {
        fprintf(stderr, "pd-kafka-broker: failed to install signal handlers: %s\n", strerror(-err));
        goto out_free_opts;
    }

    /* The mock cluster lives inside a client handle; a producer is the cheapest one, it never
     * connects anywhere because nothing is ever produced through it. */
    conf = rd_kafka_conf_new();
    /* Level 4 keeps warnings and errors but drops the notice that this handle has no
     * bootstrap.servers, which is by design and would only confuse whoever reads the log. */
    if (rd_kafka_conf_set(conf, "client.id", "pd-kafka-broker", errstr, sizeof(errstr)) !=
            RD_KAFKA_CONF_OK ||
        rd_kafka_conf_set(conf, "log_level", "4", errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, "pd-kafka-broker: failed to configure the mock handle: %s\n", errstr);
        goto out_free_conf;
    }
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!rk) {
        fprintf(stderr, "pd-kafka-broker: failed to create the mock handle: %s\n", errstr);
        goto out_free_conf;
    }
    conf = NULL; /* owned by rk now */

    mcluster = rd_kafka_mock_cluster_new(rk, opts.brokers);
    if (!mcluster) {
        fprintf(stderr, "pd-kafka-broker: failed to create a mock cluster of %d broker(s)\n",
                opts.brokers);
        goto out_destroy_rk;
    }

    for (size_t i = 0; i < opts.n_topics; i++) {
        rd_kafka_resp_err_t rerr = rd_kafka_mock_topic_create(
            mcluster, opts.topics[i].name, opts.topics[i].partitions, opts.brokers);
        if (rerr) {
            fprintf(stderr, "pd-kafka-broker: failed to create topic \"%s\": %s\n",
                    opts.topics[i].name, rd_kafka_err2str(rerr));
            goto out_destroy_cluster;
        }
    }

    bootstraps = rd_kafka_mock_cluster_bootstraps(mcluster);
    /* Write the file before stdout: a reader of either can connect as soon as it sees it. */
    if (opts.ready_file) {
        err = ready_file_write(opts.ready_file, bootstraps);
        if (err < 0) {
            fprintf(stderr, "pd-kafka-broker: failed to write ready file \"%s\": %s\n",
                    opts.ready_file, strerror(-err));
            goto out_destroy_cluster;
        }
    }
    printf("%s\n", bootstraps);
    if (fflush(stdout) != 0) {
        fprintf(stderr, "pd-kafka-broker: failed to write the bootstrap address to stdout\n");
        goto out_destroy_cluster;
    }
    fprintf(stderr, "pd-kafka-broker: %d broker(s) listening on %s, %zu topic(s)\n", opts.brokers,
            bootstraps, opts.n_topics);

    if (opts.control) {
        /* ppoll() unblocks the stop signals only while it waits, like sigsuspend() */
        char buf[4096];
        size_t len = 0;
        bool open = true;
        while (!stop_requested) {
            struct pollfd pfd = {.fd = STDIN_FILENO, .events = POLLIN};
            int r = ppoll(&pfd, open ? 1 : 0, NULL, &waitmask);
            if (r > 0 && open)
                open = control_read(mcluster, buf, sizeof buf, &len);
        }
    } else {
        while (!stop_requested)
            sigsuspend(&waitmask);
    }

    fprintf(stderr, "pd-kafka-broker: stopping\n");
    exit_code = 0;

out_destroy_cluster:
    rd_kafka_mock_cluster_destroy(mcluster);
out_destroy_rk:
    rd_kafka_destroy(rk);
out_free_conf:
    if (conf)
        rd_kafka_conf_destroy(conf);
out_free_opts:
    free(opts.topics);
    return exit_code;
}

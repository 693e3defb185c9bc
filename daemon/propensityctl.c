/* propensityctl: the command line over propensityd's ZeroMQ control socket. Sends one JSON
 * command, prints the reply readably (or as JSON with --json); `watch` follows the score
 * feed; `keygen` makes CURVE keys for a control socket that leaves the host. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <jansson.h>
#include <zmq.h>

#include "daemon/cli.h"

#ifndef PD_VERSION
#define PD_VERSION "unknown"
#endif

#define DEFAULT_ENDPOINT "ipc:///run/propensityd/control.sock"
#define EXIT_REFUSED     1 /* the daemon answered with an error */
#define EXIT_USAGE       PD_EXIT_USAGE
#define EXIT_UNREACHABLE 3

typedef struct ctl_opts {
    const char *endpoint;
    const char *feed;
    const char *server_key;
    const char *client_key_file;
    int timeout_ms;
    long count;
    int json;
} ctl_opts;

/* name, argument, summary: the commands that go to the daemon as {"cmd": name, arg: ARG} */
static const struct {
    const char *name, *arg, *arg_usage, *summary;
} commands[] = {
    {"status", NULL, "", "state, readiness, throughput, lag, users, models"},
    {"reload", NULL, "", "re-read the configuration file (as SIGHUP) and say how it went"},
    {"snapshot", NULL, "", "write a snapshot now"},
    {"score", "user", " USER", "a user's current scores and state, computed live"},
    {"forget", "user", " USER", "remove a user's state, pending examples and Redis keys"},
    {"pause", NULL, "", "stop consuming from Kafka (the daemon stays up)"},
    {"resume", NULL, "", "consume again"},
    {"log-level", "level", " LEVEL", "set the log level: debug, info, warning, error"},
    {"help", NULL, "", "list the commands the daemon knows"},
};

static void usage(FILE *out)
{
    fprintf(out, "NAME\n"
                 "    propensityctl - control a running propensityd\n\n"
                 "SYNOPSIS\n"
                 "    propensityctl [OPTIONS] COMMAND [ARG]\n\n"
                 "DESCRIPTION\n"
                 "    Sends COMMAND to propensityd's control socket (ZeroMQ, JSON) and prints the\n"
                 "    reply: readable by default, the daemon's JSON with --json.\n\n"
                 "COMMANDS\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        char head[32];
        snprintf(head, sizeof head, "%s%s", commands[i].name, commands[i].arg_usage);
        fprintf(out, "    %-18s %s\n", head, commands[i].summary);
    }
    fprintf(out, "    %-18s %s\n    %-18s %s\n    %-18s %s\n\n", "raw JSON",
            "send JSON as the request, verbatim", "watch [MODEL...]",
            "print score changes from the feed (all models, or those named) until\n"
            "                       interrupted", "keygen",
            "print a new CURVE key pair (for daemon.curve_secret_file)");
    fprintf(out,
            "OPTIONS\n"
            "    -e, --endpoint EP      control socket (default $PROPENSITYD_CONTROL, else\n"
            "                           " DEFAULT_ENDPOINT ")\n"
            "    -f, --feed EP          score feed for watch (default $PROPENSITYD_FEED)\n"
            "    -k, --server-key KEY   the daemon's CURVE public key (Z85) for a tcp://\n"
            "                           socket with CURVE (default $PROPENSITYD_SERVER_KEY)\n"
            "        --client-key-file FILE\n"
            "                           this client's CURVE secret key (as keygen writes it),\n"
            "                           for a daemon with a client allow-list; default: a\n"
            "                           fresh key pair per run\n"
            "    -j, --json             print the reply as JSON\n"
            "    -t, --timeout MS       how long to wait for the reply (default 5000)\n"
            "    -n, --count N          watch: stop after N messages\n"
            "    -h, --help             this text (COMMAND --help: that command's)\n"
            "    -V, --version          the version\n\n"
            "EXIT STATUS\n"
            "    0 done; 1 the daemon refused or the command failed; 2 usage error;\n"
            "    3 no answer (daemon not running, wrong endpoint or keys, timeout).\n\n"
            "EXAMPLES\n"
            "    propensityctl status\n"
            "    propensityctl score u42\n"
            "    propensityctl --json forget u42\n"
            "    propensityctl -e tcp://10.0.0.5:7070 -k \"$KEY\" status\n");
}

/* ---- readable output ---- */

/* epoch_ms as ISO 8601 in UTC: "2025-01-31T12:00:00Z", with ".123" when it has milliseconds. */
static void iso8601(char *buf, size_t len, double epoch_ms)
{
    double secs = floor(epoch_ms / 1000.0);
    time_t t = (time_t)secs;
    int ms = (int)llround(epoch_ms - secs * 1000.0);
    if (ms >= 1000) {
        t++;
        ms -= 1000;
    }
    struct tm tm;
    if (!gmtime_r(&t, &tm)) {
        snprintf(buf, len, "-");
        return;
    }
    size_t n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, len - n, ms ? ".%03dZ" : "Z", ms);
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

/* A duration for people: "850 ms", "12.3 s", "4 min 05 s", "2 h 03 min", "3 d 04 h". */
static void duration_text(char *buf, size_t len, double s)
{
    long t = (long)(s + 0.5);
    if (s < 1)
        snprintf(buf, len, "%.3g ms", s * 1000.0);
    else if (s < 60)
        snprintf(buf, len, "%.3g s", s);
    else if (t < 3600)
        snprintf(buf, len, "%ld min %02ld s", t / 60, t % 60);
    else if (t < 86400)
        snprintf(buf, len, "%ld h %02ld min", t / 3600, t / 60 % 60);
    else
        snprintf(buf, len, "%ld d %02ld h", t / 86400, t / 3600 % 24);
}

/* A figure rounded for reading: integers as they are, others to 4 significant digits (whole
 * numbers from 1000 on, never an exponent between 0.0001 and 1e15). */
static void number_text(char *buf, size_t len, double v)
{
    double a = fabs(v);
    if (!isfinite(v))
        snprintf(buf, len, "-");
    else if (v == floor(v) && a < 1e15)
        snprintf(buf, len, "%.0f", v);
    else if (a >= 1000 && a < 1e15)
        snprintf(buf, len, "%.0f", v);
    else if (a >= 1e-4)
        snprintf(buf, len, "%.4g", v);
    else
        snprintf(buf, len, "%.3e", v);
}

static void print_scalar(const json_t *n)
{
    char buf[64];
    switch (json_typeof(n)) {
    case JSON_NULL:
        printf("-");
        break;
    case JSON_TRUE:
    case JSON_FALSE:
        printf("%s", json_is_true(n) ? "yes" : "no");
        break;
    case JSON_INTEGER:
    case JSON_REAL:
        number_text(buf, sizeof buf, json_number_value(n));
        printf("%s", buf);
        break;
    case JSON_STRING:
        fwrite(json_string_value(n), 1, json_string_length(n), stdout);
        break;
    default:
        break;
    }
}

/* Whether a member holds event or wall-clock time in epoch milliseconds. */
static bool is_time_key(const char *key)
{
    size_t n = strlen(key);
    return strcmp(key, "ts") == 0 || strcmp(key, "updated") == 0 ||
           (n > 3 && strcmp(key + n - 3, "_ts") == 0);
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* A time in epoch ms, or "-" when there is none (0 or null). */
static void print_time(const json_t *v)
{
    char buf[64];
    double ms = json_number_value(v);
    if (!json_is_number(v) || ms <= 0) {
        printf("-");
        return;
    }
    iso8601(buf, sizeof buf, ms);
    printf("%s", buf);
}

static void print_node(json_t *n, int indent, bool times);

/* The members that the daemon reports in seconds: uptime and a snapshot's age become the
 * wall-clock time they started at, other *_seconds a duration. True when printed. */
static bool print_seconds(const char *key, const json_t *v, int indent, const char *lead)
{
    char at[64], dur[64];
    if (!ends_with(key, "_seconds") || !(json_is_number(v) || json_is_null(v)))
        return false;
    double s = json_number_value(v);
    int stem = (int)(strlen(key) - strlen("_seconds"));
    if (strcmp(key, "uptime_seconds") == 0 || strcmp(key, "age_seconds") == 0) {
        bool up = key[0] == 'u';
        printf("%*s%s%s: ", indent, "", lead, up ? "started" : "last_written");
        if (!json_is_number(v)) {
            printf("%s\n", up ? "-" : "never");
            return true;
        }
        iso8601(at, sizeof at, floor(now_ms() - s * 1000.0));
        duration_text(dur, sizeof dur, s);
        printf(up ? "%s (up %s)\n" : "%s (%s ago)\n", at, dur);
        return true;
    }
    printf("%*s%s%.*s: ", indent, "", lead, stem, key);
    if (json_is_number(v)) {
        duration_text(dur, sizeof dur, s);
        printf("%s\n", dur);
    } else {
        printf("-\n");
    }
    return true;
}

/* One member of an object: "key: value", or "key:" and the container below it. times: the
 * object's scalars are epoch-ms times (the members of a *_ts_by_type object). */
static void print_member(const char *key, json_t *v, int indent, const char *lead, bool times)
{
    if (print_seconds(key, v, indent, lead))
        return;
    printf("%*s%s%s:", indent, "", lead, key);
    if (json_is_object(v) || json_is_array(v)) {
        if ((json_is_object(v) ? json_object_size(v) : json_array_size(v)) == 0) {
            printf(" -\n");
            return;
        }
        printf("\n");
        print_node(v, indent + 2, ends_with(key, "_ts_by_type"));
    } else {
        printf(" ");
        if (times || is_time_key(key))
            print_time(v);
        else
            print_scalar(v);
        printf("\n");
    }
}

static void print_node(json_t *n, int indent, bool times)
{
    if (json_is_object(n)) {
        for (void *it = json_object_iter(n); it; it = json_object_iter_next(n, it))
            print_member(json_object_iter_key(it), json_object_iter_value(it), indent, "", times);
        return;
    }
    if (json_is_array(n)) {
        for (size_t i = 0; i < json_array_size(n); i++) {
            json_t *e = json_array_get(n, i);
            if (json_is_object(e) && json_object_size(e) > 0) {
                /* "- first: x" then the other members under it */
                void *it = json_object_iter(e);
                print_member(json_object_iter_key(it), json_object_iter_value(it), indent, "- ",
                             false);
                for (it = json_object_iter_next(e, it); it; it = json_object_iter_next(e, it))
                    print_member(json_object_iter_key(it), json_object_iter_value(it), indent + 2,
                                 "", false);
            } else if (json_is_object(e) || json_is_array(e)) {
                printf("%*s-\n", indent, "");
                print_node(e, indent + 2, false);
            } else {
                printf("%*s- ", indent, "");
                print_scalar(e);
                printf("\n");
            }
        }
        return;
    }
    printf("%*s", indent, "");
    print_scalar(n);
    printf("\n");
}

/* ---- talking to the daemon ---- */

static int read_client_key(const char *path, char *ret_secret41)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -errno;
    char line[512];
    int r = -EINVAL;
    while (fgets(line, sizeof line, f)) {
        char *s = line + strspn(line, " \t");
        size_t n = strcspn(s, " \t\r\n");
        if (n == 0 || s[0] == '#') /* '#' is a Z85 digit: comments only start a line */
            continue;
        if (n == 40) {
            memcpy(ret_secret41, s, 40);
            ret_secret41[40] = '\0';
            r = 0;
        }
        break;
    }
    fclose(f);
    return r;
}

static int setup_curve(void *sock, const ctl_opts *o)
{
    if (!o->server_key)
        return 0;
    char pub[41], sec[41];
    if (strlen(o->server_key) != 40 ||
        zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, o->server_key, 40) < 0) {
        fprintf(stderr, "propensityctl: the server key must be 40 characters of Z85\n");
        return -EINVAL;
    }
    if (o->client_key_file) {
        int r = read_client_key(o->client_key_file, sec);
        if (r < 0) {
            fprintf(stderr, "propensityctl: cannot read a client key from \"%s\": %s\n",
                    o->client_key_file, r == -EINVAL ? "no 40-character key" : strerror(-r));
            return r;
        }
        if (zmq_curve_public(pub, sec) < 0) {
            fprintf(stderr, "propensityctl: \"%s\" does not hold a valid key\n",
                    o->client_key_file);
            return -EINVAL;
        }
    } else if (zmq_curve_keypair(pub, sec) < 0) {
        fprintf(stderr, "propensityctl: this libzmq has no CURVE support\n");
        return -ENOTSUP;
    }
    zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, pub, 40);
    zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, sec, 40);
    memset(sec, 0, sizeof sec);
    return 0;
}

static bool ipc_missing(const char *ep)
{
    struct stat st;
    return strncmp(ep, "ipc://", 6) == 0 && stat(ep + 6, &st) < 0;
}

/* Sends request, waits for the reply; returns the exit status. */
/* Prints a reply as the options ask; the exit status. */
static int print_reply(const ctl_opts *o, const char *cmd, const char *reply, size_t rlen)
{
    json_error_t jerr;
    json_t *root = json_loadb(reply, rlen, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    json_t *ok = json_object_get(root, "ok");
    int status;
    if (!root) {
        fprintf(stderr,
                "propensityctl: the reply is not a propensityd answer: invalid json at "
                "byte %d: %s\n",
                jerr.position, jerr.text);
        status = EXIT_REFUSED;
    } else if (!ok) {
        fprintf(stderr, "propensityctl: the reply is not a propensityd answer\n");
        status = EXIT_REFUSED;
    } else if (o->json) {
        fwrite(reply, 1, rlen, stdout);
        printf("\n");
        status = json_is_true(ok) ? 0 : EXIT_REFUSED;
    } else if (!json_is_true(ok)) {
        const char *e = json_string_value(json_object_get(root, "error"));
        fprintf(stderr, "propensityctl: %s: %s\n", cmd, e ? e : "failed");
        status = EXIT_REFUSED;
    } else {
        json_t *res = json_object_get(root, "result");
        if (res && !json_is_null(res))
            print_node(res, 0, false);
        else
            printf("ok\n");
        status = 0;
    }
    json_decref(root);
    return status;
}

/* A REQ socket connected to the daemon, or NULL with the reason printed (*ret_status says
 * which exit status it is). */
static void *connect_control(void *zctx, const ctl_opts *o, int *ret_status)
{
    int zero = 0;
    void *sock = zmq_socket(zctx, ZMQ_REQ);
    *ret_status = EXIT_UNREACHABLE;
    if (!sock) {
        fprintf(stderr, "propensityctl: cannot create a zeromq socket: %s\n", zmq_strerror(errno));
        return NULL;
    }
    zmq_setsockopt(sock, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(sock, ZMQ_RCVTIMEO, &o->timeout_ms, sizeof o->timeout_ms);
    zmq_setsockopt(sock, ZMQ_SNDTIMEO, &o->timeout_ms, sizeof o->timeout_ms);
    if (setup_curve(sock, o) < 0) {
        *ret_status = EXIT_USAGE;
        zmq_close(sock);
        return NULL;
    }
    if (zmq_connect(sock, o->endpoint) < 0) {
        fprintf(stderr, "propensityctl: cannot connect to \"%s\": %s\n", o->endpoint,
                zmq_strerror(errno));
        zmq_close(sock);
        return NULL;
    }
    return sock;
}

static int request(const ctl_opts *o, const char *cmd, const char *req, size_t len)
{
    if (ipc_missing(o->endpoint)) {
        fprintf(stderr, "propensityctl: cannot reach propensityd at \"%s\": %s (is it running?)\n",
                o->endpoint, strerror(errno));
        return EXIT_UNREACHABLE;
    }
    int status = EXIT_UNREACHABLE;
    void *zctx = zmq_ctx_new();
    void *sock = zctx ? connect_control(zctx, o, &status) : NULL;
    if (!zctx)
        fprintf(stderr, "propensityctl: cannot create a zeromq context: %s\n",
                zmq_strerror(errno));
    if (!sock)
        goto out_ctx;
    if (zmq_send(sock, req, len, 0) < 0) {
        fprintf(stderr, "propensityctl: cannot send to \"%s\": %s\n", o->endpoint,
                zmq_strerror(errno));
        goto out_sock;
    }
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, sock, 0) < 0)
        fprintf(stderr,
                "propensityctl: no answer from \"%s\" within %d ms (is propensityd "
                "running, and are the keys right?)\n",
                o->endpoint, o->timeout_ms);
    else
        status = print_reply(o, cmd, zmq_msg_data(&m), zmq_msg_size(&m));
    zmq_msg_close(&m);
out_sock:
    zmq_close(sock);
out_ctx:
    if (zctx)
        zmq_ctx_term(zctx);
    return status;
}

/* Set by SIGINT and SIGTERM while watching: the feed is followed until then. */
static volatile sig_atomic_t interrupted;

static void on_interrupt(int sig)
{
    (void)sig;
    interrupted = 1;
}

/* One feed message for people: "TIME USER FIELD VALUE (MODEL, vN)", a list as its first items,
 * a forget as "TIME forget USER"; what does not parse as it came. */
static void print_feed_line(const char *topic, const char *payload, size_t len)
{
    char when[64], num[64];
    json_t *m = json_loadb(payload, len, 0, NULL);
    json_t *ts = json_object_get(m, "ts"), *user = json_object_get(m, "user");
    if (!json_is_object(m)) {
        printf("%s %.*s\n", topic, (int)len, payload);
        json_decref(m);
        return;
    }
    iso8601(when, sizeof when, json_is_number(ts) ? json_number_value(ts) : now_ms());
    if (strcmp(topic, "!forget") == 0) {
        printf("%s  forget %s\n", when, json_string_value(user) ? json_string_value(user) : "?");
        json_decref(m);
        return;
    }
    const char *field = json_string_value(json_object_get(m, "field"));
    const char *model = json_string_value(json_object_get(m, "model"));
    json_t *items = json_object_get(m, "items"), *v = json_object_get(m, "v");
    const char *who = json_string_value(user);
    const char *item = json_string_value(json_object_get(m, "item"));
    const char *key = json_string_value(json_object_get(m, "key"));
    /* a user's scores or list; an item's similar list; else the key it went to */
    if (who)
        printf("%s  %s  %s", when, who, field ? field : topic);
    else
        printf("%s  %s%s  %s", when, item ? "item " : "", item ? item : (key ? key : "?"),
               field ? field : topic);
    if (json_is_array(items)) {
        size_t n = json_array_size(items);
        if (n == 0)
            printf(" (list removed)");
        for (size_t i = 0; i < n && i < 5; i++) {
            json_t *e = json_array_get(items, i);
            number_text(num, sizeof num, json_number_value(json_object_get(e, "score")));
            const char *it = json_string_value(json_object_get(e, "item"));
            printf("%s %s %s", i ? "," : ":", it ? it : "?", num);
        }
        if (n > 5)
            printf(", ... (%zu items)", n);
    } else {
        number_text(num, sizeof num, json_number_value(json_object_get(m, "value")));
        printf(" %s", json_is_number(json_object_get(m, "value")) ? num : "-");
    }
    bool named = model && field && strcmp(model, field) != 0;
    if (named && json_is_integer(v))
        printf("  (%s, v%" JSON_INTEGER_FORMAT ")", model, json_integer_value(v));
    else if (named)
        printf("  (%s)", model);
    else if (json_is_integer(v))
        printf("  (v%" JSON_INTEGER_FORMAT ")", json_integer_value(v));
    printf("\n");
    json_decref(m);
}

/* Follows the PUB feed until interrupted (or --count messages), one line per message: readable
 * (print_feed_line), or the payload as it came with --json. */
static int watch(const ctl_opts *o, int argc, char **argv)
{
    if (!o->feed)
        return pd_cli_usage_error("propensityctl watch",
                                  "needs the feed endpoint (--feed EP or $PROPENSITYD_FEED)");
    int status = EXIT_UNREACHABLE, zero = 0;
    void *zctx = zmq_ctx_new();
    void *sock = zctx ? zmq_socket(zctx, ZMQ_SUB) : NULL;
    if (!sock)
        goto out;
    zmq_setsockopt(sock, ZMQ_LINGER, &zero, sizeof zero);
    if (setup_curve(sock, o) < 0) {
        status = EXIT_USAGE;
        goto out;
    }
    if (argc == 0)
        zmq_setsockopt(sock, ZMQ_SUBSCRIBE, "", 0);
    for (int i = 0; i < argc; i++)
        zmq_setsockopt(sock, ZMQ_SUBSCRIBE, argv[i], strlen(argv[i]));
    if (zmq_connect(sock, o->feed) < 0) {
        fprintf(stderr, "propensityctl: cannot connect to \"%s\": %s\n", o->feed,
                zmq_strerror(errno));
        goto out;
    }
    /* no SA_RESTART: the interrupt ends the blocking receive, which then reports EINTR */
    struct sigaction sa = {.sa_handler = on_interrupt};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    /* with --count, give up after the timeout without a message; otherwise follow until
     * interrupted */
    int rcv = o->count > 0 ? o->timeout_ms : -1;
    zmq_setsockopt(sock, ZMQ_RCVTIMEO, &rcv, sizeof rcv);
    long seen = 0;
    while (o->count <= 0 || seen < o->count) {
        char topic[256];
        int tl = zmq_recv(sock, topic, sizeof topic - 1, 0);
        if (interrupted)
            break;
        if (tl < 0 && errno == EINTR)
            continue;
        if (tl < 0) {
            fprintf(stderr, "propensityctl: no message from \"%s\" within %d ms\n", o->feed,
                    o->timeout_ms);
            goto out;
        }
        topic[tl < (int)sizeof topic - 1 ? tl : (int)sizeof topic - 1] = '\0';
        int more = 0;
        size_t ml = sizeof more;
        zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &ml);
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (more && zmq_msg_recv(&m, sock, 0) >= 0) {
            if (o->json) {
                fwrite(zmq_msg_data(&m), 1, zmq_msg_size(&m), stdout);
                printf("\n");
            } else {
                print_feed_line(topic, zmq_msg_data(&m), zmq_msg_size(&m));
            }
            fflush(stdout);
            seen++;
        }
        zmq_msg_close(&m);
    }
    status = 0;
out:
    if (sock)
        zmq_close(sock);
    if (zctx)
        zmq_ctx_term(zctx);
    return status;
}

static int keygen(void)
{
    char pub[41], sec[41];
    if (zmq_curve_keypair(pub, sec) < 0) {
        fprintf(stderr, "propensityctl: this libzmq has no CURVE support\n");
        return 1;
    }
    printf("# propensityd CURVE key pair: keep this file private (chmod 600).\n"
           "# The daemon reads the secret key below (daemon.curve_secret_file); further lines\n"
           "# there may list the public keys of the only clients it accepts.\n"
           "# public: %s\n%s\n",
           pub, sec);
    memset(sec, 0, sizeof sec);
    return 0;
}

/* Reads the options into *o; returns -1 to go on, else the exit status. */
static int parse_options(int argc, char **argv, ctl_opts *o)
{
    static const struct option long_opts[] = {
        {"endpoint", required_argument, NULL, 'e'},
        {"feed", required_argument, NULL, 'f'},
        {"server-key", required_argument, NULL, 'k'},
        {"client-key-file", required_argument, NULL, 'K'},
        {"json", no_argument, NULL, 'j'},
        {"timeout", required_argument, NULL, 't'},
        {"count", required_argument, NULL, 'n'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    int c;
    char *end;
    opterr = 0;
    /* "+": options stop at the command, so a user id may start with '-' after it */
    while ((c = getopt_long(argc, argv, "+:e:f:k:jt:n:hV", long_opts, NULL)) != -1) {
        switch (c) {
        case 'e': o->endpoint = optarg; break;
        case 'f': o->feed = optarg; break;
        case 'k': o->server_key = optarg; break;
        case 'K': o->client_key_file = optarg; break;
        case 'j': o->json = 1; break;
        case 't':
            o->timeout_ms = (int)strtol(optarg, &end, 10);
            if (*end || end == optarg || o->timeout_ms <= 0)
                return pd_cli_usage_error("propensityctl",
                                          "--timeout needs milliseconds > 0, not \"%s\"", optarg);
            break;
        case 'n':
            o->count = strtol(optarg, &end, 10);
            if (*end || end == optarg || o->count <= 0)
                return pd_cli_usage_error("propensityctl", "--count needs a number > 0, not \"%s\"",
                                          optarg);
            break;
        case 'h': usage(stdout); return 0;
        case 'V': printf("propensityctl %s\n", PD_VERSION); return 0;
        default: return pd_cli_option_error("propensityctl", c, argv, optind);
        }
    }
    if (!o->endpoint || !*o->endpoint)
        o->endpoint = DEFAULT_ENDPOINT;
    if (o->server_key && !*o->server_key)
        o->server_key = NULL;
    return -1;
}

/* One of the commands of the table, sent as {"cmd": ..., "<arg>": ...}. */
static int table_command(const ctl_opts *o, size_t i, int nargs, char **args)
{
    const char *cmd = commands[i].name;
    if (nargs != (commands[i].arg ? 1 : 0)) {
        char prog[64];
        snprintf(prog, sizeof prog, "propensityctl %s", cmd);
        if (nargs == 0)
            return pd_cli_usage_error(prog, "needs%s", commands[i].arg_usage);
        return pd_cli_usage_error(prog, "takes %s, not %d argument%s",
                                  commands[i].arg ? "one argument" : "no arguments", nargs,
                                  nargs == 1 ? "" : "s");
    }
    json_error_t jerr;
    json_t *req = commands[i].arg
                      ? json_pack_ex(&jerr, 0, "{s:s, s:s}", "cmd", cmd, commands[i].arg, args[0])
                      : json_pack_ex(&jerr, 0, "{s:s}", "cmd", cmd);
    char *text = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    if (!text) {
        fprintf(stderr, "propensityctl: cannot build the request: %s\n",
                req ? "out of memory" : jerr.text);
        return EXIT_USAGE;
    }
    int r = request(o, cmd, text, strlen(text));
    free(text);
    return r;
}

/* The commands propensityctl runs itself, beside the table's. */
static const struct {
    const char *name, *arg_usage, *text;
} local_commands[] = {
    {"raw", " JSON", "Sends JSON verbatim as the request and prints the reply."},
    {"watch", " [MODEL...]",
     "Prints every score change on the feed (--feed EP, default $PROPENSITYD_FEED) of all\n"
     "models, or of those named, one readable line each (TIME USER FIELD VALUE), or the\n"
     "message's JSON with --json. Follows the feed until interrupted (SIGINT or SIGTERM,\n"
     "exit 0), or until --count messages, waiting at most --timeout for each."},
    {"keygen", "", "Prints a new CURVE key pair in the form daemon.curve_secret_file reads."},
};

#define N_TABLE (sizeof commands / sizeof commands[0])
#define N_LOCAL (sizeof local_commands / sizeof local_commands[0])

static bool is_help(const char *arg)
{
    return strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0;
}

/* `propensityctl COMMAND --help`; false when cmd is no command. */
static bool command_help(const char *cmd)
{
    const char *arg_usage = NULL, *text = NULL;
    for (size_t i = 0; i < N_TABLE; i++)
        if (strcmp(cmd, commands[i].name) == 0) {
            arg_usage = commands[i].arg_usage;
            text = commands[i].summary;
        }
    for (size_t i = 0; i < N_LOCAL; i++)
        if (strcmp(cmd, local_commands[i].name) == 0) {
            arg_usage = local_commands[i].arg_usage;
            text = local_commands[i].text;
        }
    if (!text)
        return false;
    printf("usage: propensityctl [OPTIONS] %s%s\n\n", cmd, arg_usage);
    if (strcmp(cmd, "status") == 0 || strcmp(cmd, "score") == 0)
        printf("%c%s.\nTimes are printed in ISO 8601 (UTC), figures rounded; --json prints the\n"
               "daemon's reply as it came.\n",
               text[0] >= 'a' && text[0] <= 'z' ? text[0] - 'a' + 'A' : text[0], text + 1);
    else if (strchr(text, '.'))
        printf("%s\n", text);
    else
        printf("%c%s.\n", text[0] >= 'a' && text[0] <= 'z' ? text[0] - 'a' + 'A' : text[0],
               text + 1);
    printf("\nOptions go before COMMAND; `propensityctl --help` lists them.\n");
    return true;
}

static int unknown_command(const char *cmd)
{
    const char *names[N_TABLE + N_LOCAL];
    for (size_t i = 0; i < N_TABLE; i++)
        names[i] = commands[i].name;
    for (size_t i = 0; i < N_LOCAL; i++)
        names[N_TABLE + i] = local_commands[i].name;
    const char *hint = pd_cli_did_you_mean(cmd, names, N_TABLE + N_LOCAL);
    if (hint)
        return pd_cli_usage_error("propensityctl", "unknown command \"%s\" (did you mean \"%s\"?)",
                                  cmd, hint);
    return pd_cli_usage_error("propensityctl", "unknown command \"%s\"", cmd);
}

int main(int argc, char **argv)
{
    ctl_opts o = {.endpoint = getenv("PROPENSITYD_CONTROL"),
                  .feed = getenv("PROPENSITYD_FEED"),
                  .server_key = getenv("PROPENSITYD_SERVER_KEY"),
                  .timeout_ms = 5000};
    int status = parse_options(argc, argv, &o);
    if (status >= 0)
        return status;
    if (optind >= argc)
        return pd_cli_usage_error("propensityctl", "no command given");
    const char *cmd = argv[optind];
    int nargs = argc - optind - 1;
    char **args = argv + optind + 1;
    /* COMMAND --help describes the command; a user id "--help" is `score -- --help` */
    if (nargs >= 1 && is_help(args[0]) && command_help(cmd))
        return 0;
    if (nargs >= 1 && strcmp(args[0], "--") == 0) {
        nargs--;
        args++;
    }
    if (strcmp(cmd, "keygen") == 0)
        return nargs == 0 ? keygen()
                          : pd_cli_usage_error("propensityctl keygen", "takes no arguments");
    if (strcmp(cmd, "watch") == 0)
        return watch(&o, nargs, args);
    if (strcmp(cmd, "raw") == 0) {
        if (nargs != 1)
            return pd_cli_usage_error("propensityctl raw", "takes one argument: the JSON request");
        return request(&o, "raw", args[0], strlen(args[0]));
    }
    for (size_t i = 0; i < N_TABLE; i++)
        if (strcmp(cmd, commands[i].name) == 0)
            return table_command(&o, i, nargs, args);
    return unknown_command(cmd);
}

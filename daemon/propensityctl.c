/* propensityctl: the command line over propensityd's ZeroMQ control socket. Sends one JSON
 * command, prints the reply readably (or as JSON with --json); `watch` follows the score
 * feed; `keygen` makes CURVE keys for a control socket that leaves the host. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>
#include <zmq.h>

#ifndef PD_VERSION
#define PD_VERSION "unknown"
#endif

#define DEFAULT_ENDPOINT "ipc:///run/propensityd/control.sock"
#define EXIT_REFUSED     1 /* the daemon answered with an error */
#define EXIT_USAGE       2
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
            "print score changes from the feed (all models, or those named)", "keygen",
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
            "    -h, --help             this text\n"
            "        --version          the version\n\n"
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

static void print_scalar(const json_t *n)
{
    switch (json_typeof(n)) {
    case JSON_NULL:
        printf("-");
        break;
    case JSON_TRUE:
    case JSON_FALSE:
        printf("%s", json_is_true(n) ? "yes" : "no");
        break;
    case JSON_INTEGER:
    case JSON_REAL: {
        double v = json_number_value(n);
        if (v == floor(v) && fabs(v) < 1e15)
            printf("%.0f", v);
        else
            printf("%.6g", v);
        break;
    }
    case JSON_STRING:
        fwrite(json_string_value(n), 1, json_string_length(n), stdout);
        break;
    default:
        break;
    }
}

static void print_node(json_t *n, int indent);

/* One member of an object: "key: value", or "key:" and the container below it. */
static void print_member(const char *key, json_t *v, int indent, const char *lead)
{
    printf("%*s%s%s:", indent, "", lead, key);
    if (json_is_object(v) || json_is_array(v)) {
        if ((json_is_object(v) ? json_object_size(v) : json_array_size(v)) == 0) {
            printf(" -\n");
            return;
        }
        printf("\n");
        print_node(v, indent + 2);
    } else {
        printf(" ");
        print_scalar(v);
        printf("\n");
    }
}

static void print_node(json_t *n, int indent)
{
    if (json_is_object(n)) {
        for (void *it = json_object_iter(n); it; it = json_object_iter_next(n, it))
            print_member(json_object_iter_key(it), json_object_iter_value(it), indent, "");
        return;
    }
    if (json_is_array(n)) {
        for (size_t i = 0; i < json_array_size(n); i++) {
            json_t *e = json_array_get(n, i);
            if (json_is_object(e) && json_object_size(e) > 0) {
                /* "- first: x" then the other members under it */
                void *it = json_object_iter(e);
                print_member(json_object_iter_key(it), json_object_iter_value(it), indent, "- ");
                for (it = json_object_iter_next(e, it); it; it = json_object_iter_next(e, it))
                    print_member(json_object_iter_key(it), json_object_iter_value(it), indent + 2,
                                 "");
            } else if (json_is_object(e) || json_is_array(e)) {
                printf("%*s-\n", indent, "");
                print_node(e, indent + 2);
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
            print_node(res, 0);
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

/* Follows the PUB feed, one line per message: "TOPIC PAYLOAD" (PAYLOAD alone with --json). */
static int watch(const ctl_opts *o, int argc, char **argv)
{
    if (!o->feed) {
        fprintf(stderr, "propensityctl: watch needs the feed endpoint (--feed or "
                        "$PROPENSITYD_FEED)\n");
        return EXIT_USAGE;
    }
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
    /* with --count, give up after the timeout without a message; otherwise follow forever */
    int rcv = o->count > 0 ? o->timeout_ms : -1;
    zmq_setsockopt(sock, ZMQ_RCVTIMEO, &rcv, sizeof rcv);
    long seen = 0;
    while (o->count <= 0 || seen < o->count) {
        char topic[256];
        int tl = zmq_recv(sock, topic, sizeof topic - 1, 0);
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
            if (!o->json)
                printf("%s ", topic);
            fwrite(zmq_msg_data(&m), 1, zmq_msg_size(&m), stdout);
            printf("\n");
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
    /* "+": options stop at the command, so a user id may start with '-' after it */
    while ((c = getopt_long(argc, argv, "+e:f:k:jt:n:hV", long_opts, NULL)) != -1) {
        switch (c) {
        case 'e': o->endpoint = optarg; break;
        case 'f': o->feed = optarg; break;
        case 'k': o->server_key = optarg; break;
        case 'K': o->client_key_file = optarg; break;
        case 'j': o->json = 1; break;
        case 't':
            o->timeout_ms = (int)strtol(optarg, &end, 10);
            if (*end || o->timeout_ms <= 0) {
                fprintf(stderr, "propensityctl: --timeout needs milliseconds > 0\n");
                return EXIT_USAGE;
            }
            break;
        case 'n':
            o->count = strtol(optarg, &end, 10);
            if (*end || o->count <= 0) {
                fprintf(stderr, "propensityctl: --count needs a number > 0\n");
                return EXIT_USAGE;
            }
            break;
        case 'h': usage(stdout); return 0;
        case 'V': printf("propensityctl %s\n", PD_VERSION); return 0;
        default: usage(stderr); return EXIT_USAGE;
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
        fprintf(stderr, "usage: propensityctl %s%s\n", cmd, commands[i].arg_usage);
        return EXIT_USAGE;
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

int main(int argc, char **argv)
{
    ctl_opts o = {.endpoint = getenv("PROPENSITYD_CONTROL"),
                  .feed = getenv("PROPENSITYD_FEED"),
                  .server_key = getenv("PROPENSITYD_SERVER_KEY"),
                  .timeout_ms = 5000};
    int status = parse_options(argc, argv, &o);
    if (status >= 0)
        return status;
    if (optind >= argc) {
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[optind];
    int nargs = argc - optind - 1;
    char **args = argv + optind + 1;
    if (strcmp(cmd, "keygen") == 0)
        return nargs == 0 ? keygen() : EXIT_USAGE;
    if (strcmp(cmd, "watch") == 0)
        return watch(&o, nargs, args);
    if (strcmp(cmd, "raw") == 0) {
        if (nargs != 1) {
            fprintf(stderr, "propensityctl: raw takes one argument: the JSON request\n");
            return EXIT_USAGE;
        }
        return request(&o, "raw", args[0], strlen(args[0]));
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(cmd, commands[i].name) == 0)
            return table_command(&o, i, nargs, args);
    fprintf(stderr, "propensityctl: unknown command \"%s\" (see --help)\n", cmd);
    return EXIT_USAGE;
}

/* Requests are read without blocking and answered at once, so a client that sends garbage,
 * several frames, or never reads its reply cannot stall the daemon: REP drops replies to
 * peers that left, and oversized messages are refused by ZMQ_MAXMSGSIZE before they reach
 * us. With CURVE, an optional allow-list of client keys is enforced by a ZAP handler that
 * lives on the same loop. */
#include "daemon/control.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zmq.h>

#define ZAP_ENDPOINT    "inproc://zeromq.zap.01"
#define MAX_CLIENT_KEYS 256
#define FEED_HWM        10000

struct pd_control {
    void *zctx;
    void *rep, *pub, *zap;
    char *endpoint, *feed_endpoint;
    char *ipc_path; /* removed on free */
    bool curve;
    uint8_t server_secret[32];
    uint8_t (*clients)[32];
    size_t n_clients;
    pd_control_stats stats;
};

bool pd_control_endpoint_local(const char *ep)
{
    if (strncmp(ep, "ipc://", 6) == 0)
        return true;
    if (strncmp(ep, "tcp://", 6) != 0)
        return false;
    const char *h = ep + 6;
    return strncmp(h, "127.", 4) == 0 || strncmp(h, "localhost:", 10) == 0 ||
           strncmp(h, "[::1]:", 6) == 0 || strncmp(h, "::1:", 4) == 0;
}

/* Reads the Z85 keys of path: the server's secret key, then any client public keys. */
static int read_keys(pd_control *c, const char *path, char *errbuf, size_t errlen)
{
    struct stat st;
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(errbuf, errlen, "cannot read curve secret file \"%s\": %s", path, strerror(errno));
        return -errno;
    }
    if (fstat(fileno(f), &st) == 0 && (st.st_mode & 0007)) {
        snprintf(errbuf, errlen,
                 "curve secret file \"%s\" is accessible to other users "
                 "(chmod o-rwx)",
                 path);
        fclose(f);
        return -EPERM;
    }
    char line[512];
    int lineno = 0, r = 0;
    bool have_server = false;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        char *s = line;
        while (*s == ' ' || *s == '\t')
            s++;
        size_t n = strcspn(s, " \t\r\n");
        if (n == 0 || s[0] == '#') /* '#' is a Z85 digit: comments only start a line */
            continue;
        s[n] = '\0';
        uint8_t key[32];
        if (n != 40 || !zmq_z85_decode(key, s)) {
            /* the line may be a secret: say where, never what */
            snprintf(errbuf, errlen,
                     "curve secret file \"%s\" line %d: not a 40-character "
                     "Z85 key",
                     path, lineno);
            r = -EINVAL;
            break;
        }
        if (!have_server) {
            memcpy(c->server_secret, key, 32);
            have_server = true;
            continue;
        }
        if (c->n_clients == MAX_CLIENT_KEYS) {
            snprintf(errbuf, errlen, "curve secret file \"%s\": more than %d client keys", path,
                     MAX_CLIENT_KEYS);
            r = -E2BIG;
            break;
        }
        if (!c->clients && !(c->clients = calloc(MAX_CLIENT_KEYS, sizeof *c->clients))) {
            snprintf(errbuf, errlen, "out of memory");
            r = -ENOMEM;
            break;
        }
        memcpy(c->clients[c->n_clients++], key, 32);
    }
    fclose(f);
    if (r == 0 && !have_server) {
        snprintf(errbuf, errlen, "curve secret file \"%s\" holds no key", path);
        r = -EINVAL;
    }
    return r;
}

static int make_server(pd_control *c, void *sock, char *errbuf, size_t errlen)
{
    int one = 1;
    if (c->curve && (zmq_setsockopt(sock, ZMQ_CURVE_SERVER, &one, sizeof one) < 0 ||
                     zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, c->server_secret, 32) < 0)) {
        snprintf(errbuf, errlen, "cannot enable curve: %s", zmq_strerror(errno));
        return -EINVAL;
    }
    return 0;
}

/* Binds sock to ep: ipc sockets owner-only, tcp off loopback only with CURVE. */
static int bind_endpoint(pd_control *c, void *sock, const char *what, const char *ep,
                         char **ret_bound, char *errbuf, size_t errlen)
{
    if (!pd_control_endpoint_local(ep) && !c->curve) {
        snprintf(errbuf, errlen,
                 "%s endpoint \"%s\" is not on loopback: set "
                 "daemon.curve_secret_file to encrypt and authenticate it",
                 what, ep);
        return -EPERM;
    }
    int r = make_server(c, sock, errbuf, errlen);
    if (r < 0)
        return r;
    bool ipc = strncmp(ep, "ipc://", 6) == 0;
    mode_t old = umask(0077); /* the socket file is born 0600: no window for others */
    int br = zmq_bind(sock, ep);
    int berr = errno;
    umask(old);
    if (br < 0) {
        snprintf(errbuf, errlen, "cannot bind %s endpoint \"%s\": %s", what, ep,
                 zmq_strerror(berr));
        return -berr;
    }
    if (ipc) {
        chmod(ep + 6, 0600);
        if (!c->ipc_path)
            c->ipc_path = strdup(ep + 6);
    }
    char last[1024];
    size_t ll = sizeof last;
    if (zmq_getsockopt(sock, ZMQ_LAST_ENDPOINT, last, &ll) < 0)
        snprintf(last, sizeof last, "%s", ep);
    *ret_bound = strdup(last);
    return 0;
}

pd_control *pd_control_new(const pd_control_conf *conf, char *errbuf, size_t errlen)
{
    pd_control *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(errbuf, errlen, "out of memory");
        return NULL;
    }
    if (!conf->endpoint && !conf->feed)
        return c;
    if (conf->curve_secret_file) {
        if (read_keys(c, conf->curve_secret_file, errbuf, errlen) < 0)
            goto out_free;
        c->curve = true;
    }
    if (!(c->zctx = zmq_ctx_new())) {
        snprintf(errbuf, errlen, "cannot create a zeromq context: %s", zmq_strerror(errno));
        goto out_free;
    }
    int zero = 0, hwm = FEED_HWM;
    int64_t maxmsg64 = PD_CONTROL_MAX_REQUEST;
    if (c->curve && c->n_clients) {
        /* must exist before any CURVE handshake starts */
        if (!(c->zap = zmq_socket(c->zctx, ZMQ_REP)) ||
            zmq_setsockopt(c->zap, ZMQ_LINGER, &zero, sizeof zero) < 0 ||
            zmq_bind(c->zap, ZAP_ENDPOINT) < 0) {
            snprintf(errbuf, errlen, "cannot start the curve authenticator: %s",
                     zmq_strerror(errno));
            goto out_free;
        }
    }
    if (conf->endpoint) {
        if (!(c->rep = zmq_socket(c->zctx, ZMQ_REP)) ||
            zmq_setsockopt(c->rep, ZMQ_LINGER, &zero, sizeof zero) < 0 ||
            zmq_setsockopt(c->rep, ZMQ_MAXMSGSIZE, &maxmsg64, sizeof maxmsg64) < 0) {
            snprintf(errbuf, errlen, "cannot create the control socket: %s", zmq_strerror(errno));
            goto out_free;
        }
        if (bind_endpoint(c, c->rep, "control", conf->endpoint, &c->endpoint, errbuf, errlen) < 0)
            goto out_free;
    }
    if (conf->feed) {
        if (!(c->pub = zmq_socket(c->zctx, ZMQ_PUB)) ||
            zmq_setsockopt(c->pub, ZMQ_LINGER, &zero, sizeof zero) < 0 ||
            zmq_setsockopt(c->pub, ZMQ_SNDHWM, &hwm, sizeof hwm) < 0) {
            snprintf(errbuf, errlen, "cannot create the feed socket: %s", zmq_strerror(errno));
            goto out_free;
        }
        if (bind_endpoint(c, c->pub, "feed", conf->feed, &c->feed_endpoint, errbuf, errlen) < 0)
            goto out_free;
    }
    return c;

out_free:
    pd_control_free(c);
    return NULL;
}

void pd_control_free(pd_control *c)
{
    if (!c)
        return;
    if (c->rep)
        zmq_close(c->rep);
    if (c->pub)
        zmq_close(c->pub);
    if (c->zap)
        zmq_close(c->zap);
    if (c->zctx)
        zmq_ctx_term(c->zctx);
    if (c->ipc_path)
        unlink(c->ipc_path);
    free(c->ipc_path);
    free(c->endpoint);
    free(c->feed_endpoint);
    free(c->clients);
    memset(c->server_secret, 0, sizeof c->server_secret);
    free(c);
}

/* ---- the CURVE allow-list (ZAP, RFC 27) ---- */

static void zap_serve(pd_control *c)
{
    for (int round = 0; round < 16; round++) {
        zmq_msg_t frames[8];
        int n = 0, more = 1;
        while (more) {
            zmq_msg_t m;
            zmq_msg_init(&m);
            if (zmq_msg_recv(&m, c->zap, n == 0 ? ZMQ_DONTWAIT : 0) < 0) {
                zmq_msg_close(&m);
                for (int i = 0; i < n && i < 8; i++)
                    zmq_msg_close(&frames[i]);
                return;
            }
            more = zmq_msg_more(&m);
            if (n < 8) {
                zmq_msg_init(&frames[n]);
                zmq_msg_move(&frames[n], &m);
            }
            zmq_msg_close(&m);
            n++;
        }
        /* version, request id, domain, address, identity, mechanism, credentials */
        bool ok = false;
        if (n >= 7 && n <= 8 && zmq_msg_size(&frames[6]) == 32) {
            for (size_t i = 0; i < c->n_clients && !ok; i++)
                ok = memcmp(zmq_msg_data(&frames[6]), c->clients[i], 32) == 0;
        }
        if (!ok)
            c->stats.auth_denied++;
        const char *status = ok ? "200" : "400";
        const char *text = ok ? "OK" : "client key not allowed";
        zmq_send(c->zap, "1.0", 3, ZMQ_SNDMORE);
        if (n >= 2)
            zmq_send(c->zap, zmq_msg_data(&frames[1]), zmq_msg_size(&frames[1]), ZMQ_SNDMORE);
        else
            zmq_send(c->zap, "", 0, ZMQ_SNDMORE);
        zmq_send(c->zap, status, 3, ZMQ_SNDMORE);
        zmq_send(c->zap, text, strlen(text), ZMQ_SNDMORE);
        zmq_send(c->zap, "", 0, ZMQ_SNDMORE);
        zmq_send(c->zap, "", 0, 0);
        for (int i = 0; i < n && i < 8; i++)
            zmq_msg_close(&frames[i]);
    }
}

int pd_control_wait(pd_control *c, int fd, int timeout_ms)
{
    zmq_pollitem_t items[3];
    int n = 0, i_rep = -1, i_zap = -1, i_fd = -1;
    if (c->rep) {
        i_rep = n;
        items[n++] = (zmq_pollitem_t){.socket = c->rep, .events = ZMQ_POLLIN};
    }
    if (c->zap) {
        i_zap = n;
        items[n++] = (zmq_pollitem_t){.socket = c->zap, .events = ZMQ_POLLIN};
    }
    if (fd >= 0) {
        i_fd = n;
        items[n++] = (zmq_pollitem_t){.fd = fd, .events = ZMQ_POLLIN};
    }
    if (!c->rep && !c->zap) { /* no sockets: a plain poll needs no zeromq context */
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int r = poll(&pfd, fd >= 0 ? 1 : 0, timeout_ms);
        return r > 0 && (pfd.revents & POLLIN) ? PD_CONTROL_FD : 0;
    }
    if (zmq_poll(items, n, timeout_ms) <= 0)
        return 0;
    int mask = 0;
    if (i_zap >= 0 && (items[i_zap].revents & ZMQ_POLLIN))
        zap_serve(c);
    if (i_rep >= 0 && (items[i_rep].revents & ZMQ_POLLIN))
        mask |= PD_CONTROL_READABLE;
    if (i_fd >= 0 && (items[i_fd].revents & ZMQ_POLLIN))
        mask |= PD_CONTROL_FD;
    return mask;
}

/* ---- requests ---- */

#define REQUEST_FLAGS (JSON_REJECT_DUPLICATES | JSON_DECODE_ANY | JSON_ALLOW_NUL)

/* Sent when not even an error reply could be built. */
static const char oom_reply[] = "{\"ok\":false,\"error\":\"out of memory\"}";

json_t *pd_control_string(const char *s)
{
    if (!s)
        return json_null();
    json_t *j = json_string(s);
    if (j)
        return j;
    /* not UTF-8 (or out of memory): keep the ASCII, mark every other byte */
    size_t n = strlen(s), k = 0;
    char *clean = malloc(3 * n + 1);
    if (!clean)
        return NULL;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p < 0x80) {
            clean[k++] = (char)*p;
        } else {
            memcpy(clean + k, "\xef\xbf\xbd", 3);
            k += 3;
        }
    }
    j = json_stringn(clean, k);
    free(clean);
    return j;
}

json_t *pd_control_number(double v)
{
    if (!isfinite(v))
        return json_null();
    if (v == floor(v) && fabs(v) < 9007199254740992.0) /* 2^53: every integer is exact */
        return json_integer((json_int_t)v);
    return json_real(v);
}

/* {"ok":false,"cmd":cmd,"error":msg}, without "cmd" when it is NULL. */
static json_t *error_reply(const char *cmd, const char *msg)
{
    return json_pack("{s:b, s:s*, s:o}", "ok", 0, "cmd", cmd, "error", pd_control_string(msg));
}

static json_t *help(const pd_control_command *cmds, size_t n)
{
    json_t *list = json_array();
    for (size_t i = 0; i < n; i++)
        if (json_array_append_new(
                list, json_pack("{s:s, s:s?}", "cmd", cmds[i].name, "arg", cmds[i].arg)) < 0) {
            json_decref(list);
            return NULL;
        }
    return json_pack("{s:b, s:s, s:{s:o}}", "ok", 1, "cmd", "help", "result", "commands", list);
}

static const char *type_name(const json_t *j)
{
    switch (json_typeof(j)) {
    case JSON_OBJECT:
        return "object";
    case JSON_ARRAY:
        return "array";
    case JSON_STRING:
        return "string";
    case JSON_INTEGER:
    case JSON_REAL:
        return "number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "boolean";
    default:
        return "null";
    }
}

/* The command a request names (NULL with the reason in err), or *ret_help for "help". */
static const pd_control_command *find_command(json_t *root, const pd_control_command *cmds,
                                              size_t n_cmds, bool *ret_help, char *err,
                                              size_t errlen)
{
    json_t *name_v = json_object_get(root, "cmd");
    const char *name = json_string_value(name_v);
    *ret_help = false;
    if (!json_is_object(root)) {
        snprintf(err, errlen,
                 "expected a JSON object such as {\"cmd\":\"status\"}, not a%s %s",
                 json_is_array(root) ? "n" : "", type_name(root));
        return NULL;
    }
    if (!name) {
        snprintf(err, errlen, "\"cmd\": a command name (string) is required");
        return NULL;
    }
    if (strlen(name) != json_string_length(name_v)) { /* a NUL inside: it names no command */
        snprintf(err, errlen, "unknown command (try \"help\")");
        return NULL;
    }
    if (strcmp(name, "help") == 0) {
        *ret_help = true;
        return NULL;
    }
    for (size_t i = 0; i < n_cmds; i++)
        if (strcmp(cmds[i].name, name) == 0)
            return &cmds[i];
    snprintf(err, errlen, "unknown command (try \"help\")");
    return NULL;
}

/* The command's argument from the request's other members: 0 (arg NULL for commands that
 * take none), or -EINVAL with the reason in err. */
static int read_argument(json_t *root, const pd_control_command *cmd, const char **ret_arg,
                         size_t *ret_len, char *err, size_t errlen)
{
    const char *arg = NULL;
    size_t arg_len = 0;
    for (void *it = json_object_iter(root); it; it = json_object_iter_next(root, it)) {
        const char *key = json_object_iter_key(it);
        json_t *value = json_object_iter_value(it);
        if (strcmp(key, "cmd") == 0)
            continue;
        if (!cmd->arg || strcmp(key, cmd->arg) != 0) {
            snprintf(err, errlen, "unknown member \"%.64s\" (%s takes %s%s%s)", key, cmd->name,
                     cmd->arg ? "\"" : "no arguments", cmd->arg ? cmd->arg : "",
                     cmd->arg ? "\"" : "");
            return -EINVAL;
        }
        arg = json_string_value(value);
        arg_len = json_string_length(value);
        if (!arg || arg_len == 0 || arg_len > 4096)
            break;
    }
    if (cmd->arg && (!arg || arg_len == 0 || arg_len > 4096)) {
        snprintf(err, errlen, "\"%s\": a non-empty string is required", cmd->arg);
        return -EINVAL;
    }
    *ret_arg = arg;
    *ret_len = arg_len;
    return 0;
}

/* The reply to one request, NULL when out of memory. */
static json_t *dispatch(pd_control *c, const char *req, size_t len, bool multipart,
                        const pd_control_command *cmds, size_t n_cmds, void *ctx)
{
    char err[512];
    if (multipart) {
        c->stats.malformed++;
        return error_reply(NULL, "a request is one frame holding a JSON object");
    }
    json_error_t jerr;
    json_t *root = json_loadb(req, len, REQUEST_FLAGS, &jerr);
    if (!root) {
        c->stats.malformed++;
        snprintf(err, sizeof err, "invalid json at byte %d: %s", jerr.position, jerr.text);
        return error_reply(NULL, err);
    }
    json_t *reply;
    bool is_help;
    const char *arg = NULL;
    size_t arg_len = 0;
    const pd_control_command *cmd = find_command(root, cmds, n_cmds, &is_help, err, sizeof err);
    if (is_help) {
        reply = help(cmds, n_cmds);
    } else if (!cmd || read_argument(root, cmd, &arg, &arg_len, err, sizeof err) < 0) {
        c->stats.malformed++;
        reply = error_reply(cmd ? cmd->name : NULL, err);
    } else {
        err[0] = '\0';
        json_t *result = cmd->fn(ctx, arg, arg_len, err, sizeof err);
        if (result) {
            reply = json_pack("{s:b, s:s, s:o}", "ok", 1, "cmd", cmd->name, "result", result);
        } else {
            c->stats.failed++;
            reply = error_reply(cmd->name, err[0] ? err : "out of memory");
        }
    }
    json_decref(root);
    return reply;
}

static char *answer(pd_control *c, const char *req, size_t len, bool multipart,
                    const pd_control_command *cmds, size_t n_cmds, void *ctx)
{
    json_t *reply = dispatch(c, req, len, multipart, cmds, n_cmds, ctx);
    char *text = reply ? json_dumps(reply, JSON_COMPACT) : NULL;
    json_decref(reply);
    return text;
}

char *pd_control_answer(pd_control *c, const char *req, size_t len, const pd_control_command *cmds,
                        size_t n_cmds, void *ctx)
{
    return answer(c, req, len, false, cmds, n_cmds, ctx);
}

size_t pd_control_serve(pd_control *c, const pd_control_command *cmds, size_t n_cmds, void *ctx,
                        size_t max)
{
    size_t served = 0;
    if (!c->rep)
        return 0;
    while (served < max) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, c->rep, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&m);
            break;
        }
        bool multipart = false;
        int more = zmq_msg_more(&m);
        while (more) { /* REP must take every frame before it may answer */
            zmq_msg_t extra;
            zmq_msg_init(&extra);
            if (zmq_msg_recv(&extra, c->rep, 0) < 0) {
                zmq_msg_close(&extra);
                break;
            }
            more = zmq_msg_more(&extra);
            zmq_msg_close(&extra);
            multipart = true;
        }
        char *reply = answer(c, zmq_msg_data(&m), zmq_msg_size(&m), multipart, cmds, n_cmds, ctx);
        zmq_msg_close(&m);
        if (reply)
            zmq_send(c->rep, reply, strlen(reply), ZMQ_DONTWAIT);
        else
            zmq_send(c->rep, oom_reply, sizeof oom_reply - 1, ZMQ_DONTWAIT);
        free(reply);
        c->stats.requests++;
        served++;
    }
    return served;
}

bool pd_control_has_feed(const pd_control *c)
{
    return c->pub != NULL;
}

int pd_control_publish(pd_control *c, const char *topic, const char *payload, size_t len)
{
    if (!c->pub)
        return 0;
    if (zmq_send(c->pub, topic, strlen(topic), ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
        zmq_send(c->pub, payload, len, ZMQ_DONTWAIT) < 0)
        return -errno;
    c->stats.published++;
    return 0;
}

const char *pd_control_endpoint(const pd_control *c)
{
    return c->endpoint;
}

const char *pd_control_feed_endpoint(const pd_control *c)
{
    return c->feed_endpoint;
}

void pd_control_get_stats(const pd_control *c, pd_control_stats *ret_stats)
{
    *ret_stats = c->stats;
}

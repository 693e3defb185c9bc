/* The daemon binds the listening socket itself so a failure names its reason (libmicrohttpd
 * only says it failed). Handlers copy the current text under a mutex into the response, so
 * the main loop can swap it at any time. */
#include "daemon/http.h"

#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "common/clock.h"

#define PROM_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

struct pd_http {
    struct MHD_Daemon *mhd;
    int fd;
    int64_t stale_ms;
    pthread_mutex_t lock; /* guards metrics and reason */
    char *metrics;
    size_t metrics_len;
    char reason[256];
    atomic_bool ready;
    atomic_llong heartbeat_ms;
};

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status, const char *type,
                             const char *body, size_t len)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    enum MHD_Result r = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return r;
}

static enum MHD_Result text(struct MHD_Connection *conn, unsigned status, const char *body)
{
    return reply(conn, status, "text/plain; charset=utf-8", body, strlen(body));
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **req_cls)
{
    (void)version;
    (void)upload_data;
    pd_http *h = cls;
    if (!*req_cls) { /* first call: headers only; answer on the next */
        *req_cls = h;
        return MHD_YES;
    }
    if (*upload_data_size) { /* a body nobody asked for: drop it */
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return text(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n");
    if (strcmp(url, "/metrics") == 0) {
        pthread_mutex_lock(&h->lock);
        enum MHD_Result r =
            h->metrics ? reply(conn, MHD_HTTP_OK, PROM_CONTENT_TYPE, h->metrics, h->metrics_len)
                       : text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "starting\n");
        pthread_mutex_unlock(&h->lock);
        return r;
    }
    if (strcmp(url, "/healthz") == 0) {
        int64_t age = pd_clock_mono_ms() - (int64_t)atomic_load(&h->heartbeat_ms);
        if (age <= h->stale_ms)
            return text(conn, MHD_HTTP_OK, "ok\n");
        char body[96];
        snprintf(body, sizeof body, "main loop stalled for %lld ms\n", (long long)age);
        return text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, body);
    }
    if (strcmp(url, "/readyz") == 0) {
        if (atomic_load(&h->ready))
            return text(conn, MHD_HTTP_OK, "ready\n");
        char body[300];
        pthread_mutex_lock(&h->lock);
        snprintf(body, sizeof body, "not ready: %s\n", h->reason[0] ? h->reason : "starting");
        pthread_mutex_unlock(&h->lock);
        return text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, body);
    }
    if (strcmp(url, "/") == 0)
        return text(conn, MHD_HTTP_OK, "propensityd: /metrics /healthz /readyz\n");
    return text(conn, MHD_HTTP_NOT_FOUND, "not found\n");
}

/* "host:port" or "[v6]:port" into a listening socket. */
static int listen_on(const char *addr, char *errbuf, size_t errlen)
{
    char host[256];
    const char *colon, *h0 = addr;
    size_t hl;
    if (addr[0] == '[') {
        const char *close = strchr(addr, ']');
        if (!close || close[1] != ':')
            goto out_bad;
        h0 = addr + 1;
        hl = (size_t)(close - h0);
        colon = close + 1;
    } else {
        colon = strrchr(addr, ':');
        if (!colon)
            goto out_bad;
        hl = (size_t)(colon - addr);
    }
    if (hl >= sizeof host)
        goto out_bad;
    memcpy(host, h0, hl);
    host[hl] = '\0';
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE},
                    *res = NULL;
    int gr = getaddrinfo(hl ? host : NULL, colon + 1, &hints, &res);
    if (gr != 0) {
        snprintf(errbuf, errlen, "cannot resolve http address \"%s\": %s", addr, gai_strerror(gr));
        return -EINVAL;
    }
    int fd = -1, err = 0;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 64) == 0)
            break;
        err = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        snprintf(errbuf, errlen, "cannot listen on http address \"%s\": %s", addr, strerror(err));
        return -err;
    }
    return fd;

out_bad:
    snprintf(errbuf, errlen, "invalid http address \"%s\" (expected HOST:PORT)", addr);
    return -EINVAL;
}

pd_http *pd_http_new(const char *addr, int64_t stale_ms, char *errbuf, size_t errlen)
{
    pd_http *h = calloc(1, sizeof *h);
    if (!h) {
        snprintf(errbuf, errlen, "out of memory starting the http server");
        return NULL;
    }
    pthread_mutex_init(&h->lock, NULL);
    h->fd = -1;
    h->stale_ms = stale_ms > 0 ? stale_ms : 30000;
    atomic_store(&h->heartbeat_ms, (long long)pd_clock_mono_ms());
    int fd = listen_on(addr, errbuf, errlen);
    if (fd < 0)
        goto out_free;
    h->fd = fd;
    /* the server thread inherits this mask: stop and reload signals must reach the main
     * thread, whose wait they interrupt */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGHUP);
    sigaddset(&block, SIGALRM);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    h->mhd =
        MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO, 0, NULL, NULL, on_request,
                         h, MHD_OPTION_LISTEN_SOCKET, h->fd, MHD_OPTION_CONNECTION_LIMIT,
                         (unsigned)64, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10, MHD_OPTION_END);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (!h->mhd) {
        snprintf(errbuf, errlen, "cannot start the http server on \"%s\"", addr);
        goto out_free;
    }
    h->fd = -1; /* the server closes it when it stops */
    return h;

out_free:
    pd_http_free(h);
    return NULL;
}

void pd_http_free(pd_http *h)
{
    if (!h)
        return;
    if (h->mhd)
        MHD_stop_daemon(h->mhd);
    if (h->fd >= 0)
        close(h->fd);
    pthread_mutex_destroy(&h->lock);
    free(h->metrics);
    free(h);
}

int pd_http_set_metrics(pd_http *h, const char *body, size_t len)
{
    char *copy = malloc(len + 1);
    if (!copy)
        return -ENOMEM;
    memcpy(copy, body, len);
    copy[len] = '\0';
    pthread_mutex_lock(&h->lock);
    char *old = h->metrics;
    h->metrics = copy;
    h->metrics_len = len;
    pthread_mutex_unlock(&h->lock);
    free(old);
    return 0;
}

void pd_http_set_ready(pd_http *h, bool ready, const char *reason)
{
    pthread_mutex_lock(&h->lock);
    snprintf(h->reason, sizeof h->reason, "%s", reason ? reason : "");
    pthread_mutex_unlock(&h->lock);
    atomic_store(&h->ready, ready);
}

void pd_http_heartbeat(pd_http *h, int64_t now_ms)
{
    atomic_store(&h->heartbeat_ms, (long long)now_ms);
}

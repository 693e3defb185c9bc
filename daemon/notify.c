/* Messages go through libsystemd's sd_notify(), which handles path and abstract sockets and
 * passes credentials; this module adds the watchdog pacing and one-line STATUS texts. */
#include "daemon/notify.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <systemd/sd-daemon.h>

#include "common/clock.h"

struct pd_notify {
    bool enabled;
    int64_t watchdog_ms;
    int64_t last_ping_ms; /* -1 before the first */
};

pd_notify *pd_notify_new(int64_t watchdog_ms)
{
    pd_notify *n = calloc(1, sizeof *n);
    if (!n)
        return NULL;
    const char *sock = getenv("NOTIFY_SOCKET");
    n->enabled = sock && *sock;
    uint64_t usec = 0;
    if (watchdog_ms > 0)
        n->watchdog_ms = watchdog_ms;
    else if (sd_watchdog_enabled(0, &usec) > 0)
        n->watchdog_ms = (int64_t)(usec / 1000) > 0 ? (int64_t)(usec / 1000) : 1;
    n->last_ping_ms = -1;
    return n;
}

void pd_notify_free(pd_notify *n)
{
    free(n);
}

bool pd_notify_enabled(const pd_notify *n)
{
    return n->enabled;
}

int64_t pd_notify_watchdog_ms(const pd_notify *n)
{
    return n->watchdog_ms;
}

/* head, then STATUS=<status> with newlines flattened. */
static int send_msg(pd_notify *n, const char *head, const char *status)
{
    if (!n->enabled)
        return 0;
    char msg[1024];
    int w = snprintf(msg, sizeof msg, "%s%s%s", head, status ? (*head ? "\n" : "") : "",
                     status ? "STATUS=" : "");
    if (w < 0 || (size_t)w >= sizeof msg)
        return -EINVAL;
    size_t k = (size_t)w;
    for (const char *s = status; s && *s && k < sizeof msg - 1; s++)
        msg[k++] = (*s == '\n' || *s == '\r') ? ' ' : *s;
    msg[k] = '\0';
    int r = sd_notify(0, msg);
    return r < 0 ? r : 0;
}

int pd_notify_ready(pd_notify *n, const char *status)
{
    return send_msg(n, "READY=1", status);
}

int pd_notify_status(pd_notify *n, const char *status)
{
    return status ? send_msg(n, "", status) : 0;
}

int pd_notify_reloading(pd_notify *n, const char *status)
{
    char head[96];
    snprintf(head, sizeof head, "RELOADING=1\nMONOTONIC_USEC=%llu",
             (unsigned long long)pd_clock_mono_us());
    return send_msg(n, head, status);
}

int pd_notify_stopping(pd_notify *n, const char *status)
{
    return send_msg(n, "STOPPING=1", status);
}

void pd_notify_watchdog(pd_notify *n, int64_t now_ms)
{
    if (!n->enabled || n->watchdog_ms <= 0)
        return;
    if (n->last_ping_ms >= 0 && now_ms - n->last_ping_ms < n->watchdog_ms / 2)
        return;
    if (sd_notify(0, "WATCHDOG=1") > 0)
        n->last_ping_ms = now_ms;
}

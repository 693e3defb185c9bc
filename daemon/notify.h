/* The systemd notification protocol (sd_notify): READY, STATUS, RELOADING, STOPPING and the
 * watchdog keep-alive. Without NOTIFY_SOCKET (not under systemd) every call is a cheap no-op,
 * so the daemon calls them unconditionally. */
#ifndef PD_NOTIFY_H
#define PD_NOTIFY_H

#include <stdbool.h>
#include <stdint.h>

typedef struct pd_notify pd_notify;

/* Reads the environment systemd sets. watchdog_ms > 0 replaces the interval systemd asks
 * for (WATCHDOG_USEC); 0 takes systemd's, and no watchdog when it has none. NULL only when
 * out of memory. */
pd_notify *pd_notify_new(int64_t watchdog_ms);
void pd_notify_free(pd_notify *n);

/* Whether a service manager listens (NOTIFY_SOCKET is set). */
bool pd_notify_enabled(const pd_notify *n);
/* The watchdog interval in ms, 0 when off. */
int64_t pd_notify_watchdog_ms(const pd_notify *n);

/* Each returns 0, or a negative errno when the message could not be sent. status may be NULL;
 * it is one line (newlines are replaced). */
int pd_notify_ready(pd_notify *n, const char *status);
int pd_notify_status(pd_notify *n, const char *status);
/* RELOADING=1 with the MONOTONIC_USEC newer service managers require; READY=1 ends it. */
int pd_notify_reloading(pd_notify *n, const char *status);
int pd_notify_stopping(pd_notify *n, const char *status);

/* Sends WATCHDOG=1 when half the interval has passed since the last one. The caller calls
 * this only from the point of its loop that proves progress. now_ms is monotonic. */
void pd_notify_watchdog(pd_notify *n, int64_t now_ms);

#endif

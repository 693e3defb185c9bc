/* The HTTP endpoint for Prometheus and health checks (libmicrohttpd on its own thread):
 * /metrics serves the last text the main loop rendered, /healthz says whether the main loop
 * is still turning, /readyz whether the daemon is connected and caught up. The server thread
 * never touches the engine; it only reads what the main loop hands it. */
#ifndef PD_HTTP_H
#define PD_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct pd_http pd_http;

/* Listens on addr ("HOST:PORT", "[V6ADDR]:PORT") and starts serving. stale_ms: /healthz fails
 * when the main loop has not called pd_http_heartbeat() for this long. */
pd_http *pd_http_new(const char *addr, int64_t stale_ms, char *errbuf, size_t errlen);
/* Stops the server thread. Accepts NULL. */
void pd_http_free(pd_http *h);

/* Replaces the /metrics text (copied). Returns 0 or -ENOMEM (the old text stays). */
int pd_http_set_metrics(pd_http *h, const char *text, size_t len);
/* Readiness for /readyz; reason (copied, may be NULL) says why not. */
void pd_http_set_ready(pd_http *h, bool ready, const char *reason);
/* The main loop is alive at now_ms (monotonic). */
void pd_http_heartbeat(pd_http *h, int64_t now_ms);

#endif

/* The ZeroMQ control plane: a REP socket taking JSON commands ({"cmd":"status"}) answered
 * with {"ok":true,"result":...} or {"ok":false,"error":"..."}, and an optional PUB socket (the
 * score feed). ipc:// sockets are created 0600; tcp:// off loopback needs CURVE keys. The
 * owner polls it from its loop and supplies the command table, so commands run on the thread
 * that owns the engine. */
#ifndef PD_CONTROL_H
#define PD_CONTROL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define PD_CONTROL_MAX_REQUEST 65536

typedef struct pd_control pd_control;

typedef struct pd_control_conf {
    const char *endpoint;          /* REP: ipc://PATH or tcp://HOST:PORT; NULL = none */
    const char *feed;              /* PUB; NULL = none */
    const char *curve_secret_file; /* server key (and optional client allow-list); NULL */
} pd_control_conf;

typedef struct pd_control_command {
    const char *name;
    const char *arg; /* a required non-empty string member (e.g. "user"), or NULL */
    /* Returns the result, a new reference the caller takes, or NULL and a message in errbuf
     * (the reply is then an error; no message means out of memory). */
    json_t *(*fn)(void *ctx, const char *arg, size_t arg_len, char *errbuf, size_t errlen);
} pd_control_command;

typedef struct pd_control_stats {
    uint64_t requests;  /* answered, good or not */
    uint64_t failed;    /* a command that ran and returned an error */
    uint64_t malformed; /* not JSON, not an object, unknown command, bad arguments */
    uint64_t auth_denied;
    uint64_t published;
} pd_control_stats;

/* Binds what conf names (either may be NULL; then the object only waits on fds). */
pd_control *pd_control_new(const pd_control_conf *conf, char *errbuf, size_t errlen);
void pd_control_free(pd_control *c);

#define PD_CONTROL_READABLE 1 /* a request (or an authentication handshake) is waiting */
#define PD_CONTROL_FD       2 /* fd became readable */

/* Waits up to timeout_ms for a request or for fd (< 0: none) to be readable. Returns a mask
 * of the PD_CONTROL_* bits, 0 on timeout or when a signal interrupted the wait. */
int pd_control_wait(pd_control *c, int fd, int timeout_ms);

/* Answers up to max waiting requests without blocking; returns how many. Every request gets
 * exactly one reply; malformed ones get an error reply. */
size_t pd_control_serve(pd_control *c, const pd_control_command *cmds, size_t n_cmds, void *ctx,
                        size_t max);

/* The reply pd_control_serve() sends to a one-frame request: JSON text the caller frees, or
 * NULL when out of memory. Counts malformed and failed requests in the stats. */
char *pd_control_answer(pd_control *c, const char *req, size_t len, const pd_control_command *cmds,
                        size_t n_cmds, void *ctx);

/* A JSON string of s, null when s is NULL. When s is not UTF-8 (a message cut short, a path in
 * another encoding) each non-ASCII byte becomes U+FFFD, so a reply can always be built. A new
 * reference, or NULL when out of memory. */
json_t *pd_control_string(const char *s);

/* A number as the replies write it: integral values without a fraction, NaN and infinities
 * as null (JSON has neither). A new reference, or NULL when out of memory. */
json_t *pd_control_number(double v);

bool pd_control_has_feed(const pd_control *c);
/* Publishes payload under topic on the feed; never blocks (a slow subscriber loses
 * messages at its high-water mark). Returns 0 or a negative errno. */
int pd_control_publish(pd_control *c, const char *topic, const char *payload, size_t len);

/* The endpoints as bound (a tcp port of 0 or * resolved), or NULL. */
const char *pd_control_endpoint(const pd_control *c);
const char *pd_control_feed_endpoint(const pd_control *c);
void pd_control_get_stats(const pd_control *c, pd_control_stats *ret_stats);

/* Whether a tcp:// or ipc:// endpoint stays on this host (ipc, 127/8, ::1, localhost). */
bool pd_control_endpoint_local(const char *endpoint);

#endif

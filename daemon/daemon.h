/* The running daemon: owns the loaded config, the engine, the Kafka consumer, the Redis
 * publisher and the dead-letter producer, and drives them from one loop on one thread.
 * Offsets are committed only after Redis acknowledged the writes that cover them. */
#ifndef PD_DAEMON_H
#define PD_DAEMON_H

#include <stddef.h>

#include "config/config.h"

typedef struct pd_daemon pd_daemon;

/* Takes ownership of conf on success (the caller sets its pointer to NULL); on failure the
 * caller still owns it and errbuf says why. */
pd_daemon *pd_daemon_new(const char *config_path, pd_config *conf, char *errbuf, size_t errlen);
void pd_daemon_free(pd_daemon *d);

/* Runs until SIGTERM or SIGINT, then drains (flush, commit, leave the group). Returns the
 * process exit status. */
int pd_daemon_run(pd_daemon *d);

#endif

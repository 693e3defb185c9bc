/* Configuration reload (SIGHUP or the reload command): the file is read and checked in full
 * before anything changes; a file with errors, or one that changes what only a restart can
 * (pd_config_reloadable), keeps the running configuration. Learned state stays: models whose
 * configuration is unchanged keep their weights. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "daemon/daemon_internal.h"
#include "daemon/log.h"

int daemon_publisher_fields(const pd_config *conf, const char ***ret_fields)
{
    const char **f = calloc(conf->n_models ? conf->n_models : 1, sizeof *f);
    if (!f)
        return -ENOMEM;
    for (size_t i = 0; i < conf->n_models; i++)
        f[i] = conf->models[i].output ? conf->models[i].output : conf->models[i].name;
    *ret_fields = f;
    return 0;
}

/* The new configuration when it loads and may replace the running one; else NULL, with the
 * failure counted, logged and said in msg. */
static pd_config *load_config(pd_daemon *d, pd_diag *diag, char *msg, size_t msglen)
{
    char err[1024];
    pd_config *conf = diag ? pd_config_load(d->config_path, diag) : NULL;
    if (!conf) {
        d->reload.failed++;
        pd_log_error("reload failed: \"%s\" has errors; keeping the running configuration",
                     d->config_path);
        for (size_t i = 0; diag && i < pd_diag_count(diag); i++)
            pd_log_error("%s", pd_diag_message(diag, i));
        snprintf(msg, msglen, "\"%s\" has errors%s%s; keeping the running configuration",
                 d->config_path, diag && pd_diag_count(diag) ? ": " : "",
                 diag && pd_diag_count(diag) ? pd_diag_message(diag, 0) : "");
        return NULL;
    }
    if (!pd_config_reloadable(d->conf, conf, err, sizeof err)) {
        d->reload.failed++;
        pd_log_error("reload refused: %s; keeping the running configuration", err);
        snprintf(msg, msglen, "refused: %.900s; keeping the running configuration", err);
        pd_config_free(conf);
        return NULL;
    }
    return conf;
}

/* Makes conf the running configuration; takes it on success (returns 0). */
static int apply_config(pd_daemon *d, pd_config *conf, char *msg, size_t msglen)
{
    char err[1024], fresh[1024];
    /* scores waiting in the publisher are indexed by the old model order */
    if (daemon_flush_commit(d, false) < 0) {
        d->reload.failed++;
        pd_log_error("reload postponed: redis did not take the waiting scores");
        snprintf(msg, msglen, "postponed: redis did not take the waiting scores; retrying");
        d->reload.again = true;
        return -EAGAIN;
    }
    const char **fields = NULL;
    if (daemon_publisher_fields(conf, &fields) < 0) {
        pd_log_error("reload failed: out of memory");
        snprintf(msg, msglen, "out of memory");
        return -ENOMEM;
    }
    if (pd_engine_reconfigure(d->engine, conf, fresh, sizeof fresh, err, sizeof err) < 0) {
        d->reload.failed++;
        pd_log_error("reload failed: %s; keeping the running configuration", err);
        snprintf(msg, msglen, "%.900s; keeping the running configuration", err);
        free(fields);
        return -EINVAL;
    }
    if (pd_publisher_set_fields(d->pub, fields, conf->n_models) < 0)
        pd_log_error("reload: out of memory updating the redis fields");
    free(fields);
    pd_publisher_set_conf(d->pub, &conf->redis);
    pd_log_set_level(conf->daemon.log_level);
    pd_config_free(d->conf);
    d->conf = conf;
    d->reload.ok++;
    daemon_flush_configure(d); /* a new redis.flush_interval, from SIGHUP and the control socket */
    daemon_models_reset(d);    /* model indices may have moved: say each gate's state again */
    if (fresh[0])
        pd_log_info("models starting fresh after reload: %s", fresh);
    snprintf(msg, msglen, "%s", fresh);
    pd_logkv(PD_LOG_INFO, "configuration reloaded", "models=%zu features=%zu generation=%" PRIu64,
             conf->n_models, conf->n_features, pd_engine_generation(d->engine));
    return 0;
}

static int reload_now(pd_daemon *d, char *msg, size_t msglen)
{
    msg[0] = '\0';
    pd_log_info("reloading configuration from \"%s\"", d->config_path);
    pd_diag *diag = pd_diag_new();
    pd_config *conf = load_config(d, diag, msg, msglen);
    int r = conf ? apply_config(d, conf, msg, msglen) : -EINVAL;
    if (r < 0)
        pd_config_free(conf);
    pd_diag_free(diag);
    return r;
}

int daemon_reload(pd_daemon *d, char *msg, size_t msglen)
{
    if (d->ready.sent)
        pd_notify_reloading(d->notify, "reloading configuration");
    int r = reload_now(d, msg, msglen);
    if (d->ready.sent)
        daemon_notify_ready(d);
    return r;
}

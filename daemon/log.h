/* Logging for the daemon: logfmt lines on stderr (level=... msg="..." key=value), with the
 * syslog priority prefix journald understands when stderr is the journal, and a rate limit
 * per call site so a failing dependency cannot flood the log. Libraries never log; they
 * return messages that the daemon logs here, once. */
#ifndef PD_LOG_H
#define PD_LOG_H

#include <stdarg.h>
#include <stdbool.h>

#include "config/config.h"

/* Decides the output format once (journal or terminal). */
void pd_log_init(void);

void pd_log_set_level(pd_log_level level);
pd_log_level pd_log_get_level(void);
/* Parses "debug", "info", "warning" (or "warn"), "error". Returns 0 or -EINVAL. */
int pd_log_level_parse(const char *name, pd_log_level *ret_level);
const char *pd_log_level_name(pd_log_level level);

/* msg is a printf format; the result is quoted and escaped into msg="...". */
void pd_log(pd_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* msg is written as is (quoted); kv is a printf format of extra key=value pairs whose values
 * are plain tokens (numbers, names without spaces). */
void pd_logkv(pd_log_level level, const char *msg, const char *kv, ...)
    __attribute__((format(printf, 3, 4)));

#define pd_log_debug(...)   pd_log(PD_LOG_DEBUG, __VA_ARGS__)
#define pd_log_info(...)    pd_log(PD_LOG_INFO, __VA_ARGS__)
#define pd_log_warning(...) pd_log(PD_LOG_WARNING, __VA_ARGS__)
#define pd_log_error(...)   pd_log(PD_LOG_ERROR, __VA_ARGS__)

#endif

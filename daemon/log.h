/* Logging for the daemon: logfmt lines on stderr (level=... msg="..." key=value), with the
 * syslog priority prefix journald understands when stderr is the journal, and a rate limit
 * per call site so a failing dependency cannot flood the log. Libraries never log; they
 * return messages that the daemon logs here, once. */
#ifndef PD_LOG_H
#define PD_LOG_H

#include <stdarg.h>
#include <stdbool.h>

#include "common/log_level.h"

/* Decides the output format once (journal or terminal). */
void pd_log_init(void);

void pd_log_set_level(pd_log_level level);
pd_log_level pd_log_get_level(void);

/* The rate limit: each call site writes at most PD_LOG_RATE_BURST lines per
 * PD_LOG_RATE_WINDOW_S seconds; the first line after a window in which some were held back
 * says how many (suppressed_before=N). A call site is the file and line of the call, not
 * the format: identical literals at several sites (pd_log_error("%s", err)) have a budget
 * each, so a burst from one cannot hide another's errors. */
#define PD_LOG_RATE_BURST    20
#define PD_LOG_RATE_WINDOW_S 10

/* fmt is a printf format; the result is quoted and escaped into msg="...". */
#define pd_log(level, ...) pd_log_at(__FILE__, __LINE__, level, __VA_ARGS__)

/* msg is written as is (quoted); kv is a printf format of extra key=value pairs whose values
 * are plain tokens (numbers, names without spaces). */
#define pd_logkv(level, msg, ...) pd_logkv_at(__FILE__, __LINE__, level, msg, __VA_ARGS__)

/* What the macros call; file and line name the call site for the rate limit. */
void pd_log_at(const char *file, int line, pd_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void pd_logkv_at(const char *file, int line, pd_log_level level, const char *msg, const char *kv,
                 ...) __attribute__((format(printf, 5, 6)));

#define pd_log_debug(...)   pd_log(PD_LOG_DEBUG, __VA_ARGS__)
#define pd_log_info(...)    pd_log(PD_LOG_INFO, __VA_ARGS__)
#define pd_log_warning(...) pd_log(PD_LOG_WARNING, __VA_ARGS__)
#define pd_log_error(...)   pd_log(PD_LOG_ERROR, __VA_ARGS__)

#endif

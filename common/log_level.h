/* The log levels and their names, in one table: the config's daemon.log_level, the daemon's
 * log lines and the control plane's log-level command all spell a level the same way. */
#ifndef PD_LOG_LEVEL_H
#define PD_LOG_LEVEL_H

typedef enum pd_log_level {
    PD_LOG_DEBUG,
    PD_LOG_INFO,
    PD_LOG_WARNING,
    PD_LOG_ERROR,
} pd_log_level;

/* Levels are 0 .. PD_LOG_LEVEL_COUNT - 1; a macro, not an enumerator, so that a switch over the
 * levels need not name it. */
#define PD_LOG_LEVEL_COUNT 4

/* "debug", "info", "warning" or "error"; "info" for a value out of range. */
const char *pd_log_level_to_name(pd_log_level level);

/* Parses one of those names, or "warn" for warning. Returns 0 or -EINVAL; ret_level is written
 * only on success. */
int pd_log_level_from_name(const char *name, pd_log_level *ret_level);

#endif

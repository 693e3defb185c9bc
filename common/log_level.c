/* The names are the ones logfmt lines carry (level=warning), so they never change. */
#include "common/log_level.h"

#include <errno.h>
#include <string.h>

static const char *const level_names[PD_LOG_LEVEL_COUNT] = {
    [PD_LOG_DEBUG] = "debug",
    [PD_LOG_INFO] = "info",
    [PD_LOG_WARNING] = "warning",
    [PD_LOG_ERROR] = "error",
};

const char *pd_log_level_to_name(pd_log_level level)
{
    return (unsigned)level < PD_LOG_LEVEL_COUNT ? level_names[level] : "info";
}

int pd_log_level_from_name(const char *name, pd_log_level *ret_level)
{
    for (unsigned i = 0; i < PD_LOG_LEVEL_COUNT; i++) {
        if (strcmp(name, level_names[i]) == 0) {
            *ret_level = (pd_log_level)i;
            return 0;
        }
    }
    /* the spelling syslog and many tools use */
    if (strcmp(name, "warn") == 0) {
        *ret_level = PD_LOG_WARNING;
        return 0;
    }
    return -EINVAL;
}

/* The loader's side of pd_diag: appending positioned messages. pd_diag itself (declared in
 * config/config.h) is a plain list of formatted lines; the loader appends everything it finds
 * and sorts one load's messages by position so a file reads top to bottom. */
#ifndef PD_CONFIG_DIAG_H
#define PD_CONFIG_DIAG_H

#include <stddef.h>

#include "config/config.h"

/* Appends "file:line:column: error: text"; line <= 0 omits the position ("file: error: text").
 * Returns 0 or -ENOMEM; the caller keeps its own count, so a lost message still fails a load. */
int pd_diag_add(pd_diag *diag, const char *file, int line, int column, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Stable-sorts the messages from index first on by line, then column. */
void pd_diag_sort_from(pd_diag *diag, size_t first);

#endif

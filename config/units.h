/* Numbers as the pipeline language writes them: plain integers and decimals, durations
 * (250ms, 30s, 5m, 2h, 7d) and sizes (65536, 64KiB, 16MiB), read from text and printed back
 * for messages. Internal to config/; pd_parse_duration() in config.h is the public face. */
#ifndef PD_CONFIG_UNITS_H
#define PD_CONFIG_UNITS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MS_PER_S   INT64_C(1000)
#define MS_PER_MIN (60 * MS_PER_S)
#define MS_PER_H   (60 * MS_PER_MIN)
#define MS_PER_DAY (24 * MS_PER_H)

/* An optional '-' and decimal digits, nothing else; false when out of range. */
bool units_parse_int(const char *text, int64_t *ret);
/* A plain finite decimal number (no hex, inf or nan); -0 reads as 0. */
bool units_parse_double(const char *text, double *ret);

/* A number with a unit: how to read it, how to print a bound, what to say when it is
 * unreadable. */
typedef struct units_quantity {
    const char *what;     /* "a duration" */
    const char *noun;     /* "duration" */
    const char *expected; /* the forms it takes, for "invalid duration ... (expected ...)" */
    int (*parse)(const char *text, int64_t *ret); /* 0 or -EINVAL */
    void (*format)(int64_t v, char *buf, size_t len);
} units_quantity;

extern const units_quantity units_duration; /* milliseconds */
extern const units_quantity units_size;     /* bytes */

#endif

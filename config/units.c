/* Units are exact: a duration is a whole number of one unit, so "1.5h" is refused rather than
 * rounded, and a bound is printed in the largest unit that divides it. */
#include "config/units.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"

static bool parse_u64_digits(const char **s, uint64_t *ret)
{
    uint64_t v = 0;
    const char *p = *s;

    if (!isdigit((unsigned char)*p))
        return false;
    for (; isdigit((unsigned char)*p); p++) {
        unsigned d = (unsigned)(*p - '0');

        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *s = p;
    *ret = v;
    return true;
}

int pd_parse_duration(const char *text, int64_t *ret_ms)
{
    static const struct {
        const char *unit;
        int64_t ms;
    } units[] = {{"ms", 1}, {"s", MS_PER_S}, {"m", MS_PER_MIN}, {"h", MS_PER_H}, {"d", MS_PER_DAY}};
    const char *p = text;
    uint64_t v;

    if (!text || !parse_u64_digits(&p, &v) || v > INT64_MAX)
        return -EINVAL;
    if (!*p) {
        if (v != 0)
            return -EINVAL; /* a bare number has no unit to guess */
        if (ret_ms)
            *ret_ms = 0;
        return 0;
    }
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcmp(p, units[i].unit))
            continue;
        if ((int64_t)v > INT64_MAX / units[i].ms)
            return -EINVAL;
        if (ret_ms)
            *ret_ms = (int64_t)v * units[i].ms;
        return 0;
    }
    return -EINVAL;
}

static int parse_size(const char *text, int64_t *ret)
{
    static const struct {
        const char *unit;
        int64_t bytes;
    } units[] = {{"", 1}, {"B", 1}, {"KiB", INT64_C(1) << 10}, {"MiB", INT64_C(1) << 20}};
    const char *p = text;
    uint64_t v;

    if (!parse_u64_digits(&p, &v) || v > INT64_MAX)
        return -EINVAL;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcmp(p, units[i].unit))
            continue;
        if ((int64_t)v > INT64_MAX / units[i].bytes)
            return -EINVAL;
        *ret = (int64_t)v * units[i].bytes;
        return 0;
    }
    return -EINVAL;
}

bool units_parse_int(const char *text, int64_t *ret)
{
    const char *p = text;
    bool neg = *p == '-';
    uint64_t v;

    if (neg)
        p++;
    if (!parse_u64_digits(&p, &v) || *p)
        return false;
    if (neg ? v > (uint64_t)INT64_MAX + 1 : v > INT64_MAX)
        return false;
    *ret = neg ? (int64_t)(0 - v) : (int64_t)v;
    return true;
}

bool units_parse_double(const char *text, double *ret)
{
    char *end;
    double v;

    /* strtod also takes hex, "inf" and "nan"; a config number is plain decimal. */
    if (!*text || strspn(text, "0123456789+-.eE") != strlen(text))
        return false;
    errno = 0;
    v = strtod(text, &end);
    if (*end || errno || !isfinite(v))
        return false;
    *ret = v == 0 ? 0 : v; /* -0 and 0 must fingerprint alike */
    return true;
}

static void format_duration(int64_t ms, char *buf, size_t len)
{
    static const struct {
        const char *unit;
        int64_t ms;
    } units[] = {{"d", MS_PER_DAY}, {"h", MS_PER_H}, {"m", MS_PER_MIN}, {"s", MS_PER_S}};

    if (ms == 0) {
        snprintf(buf, len, "0");
        return;
    }
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (ms % units[i].ms == 0) {
            snprintf(buf, len, "%lld%s", (long long)(ms / units[i].ms), units[i].unit);
            return;
        }
    }
    snprintf(buf, len, "%lldms", (long long)ms);
}

static void format_size(int64_t bytes, char *buf, size_t len)
{
    if (bytes && bytes % (INT64_C(1) << 20) == 0)
        snprintf(buf, len, "%lldMiB", (long long)(bytes >> 20));
    else if (bytes && bytes % (INT64_C(1) << 10) == 0)
        snprintf(buf, len, "%lldKiB", (long long)(bytes >> 10));
    else
        snprintf(buf, len, "%lld", (long long)bytes);
}

const units_quantity units_duration = {"a duration", "duration",
                                       "a whole number and a unit: 250ms, 30s, 5m, 2h, 7d",
                                       pd_parse_duration, format_duration};
const units_quantity units_size = {"a size", "size", "bytes, KiB or MiB: 65536, 64KiB, 16MiB",
                                   parse_size, format_size};

/* The exposition format's escaping rules: HELP text escapes backslash and newline; label
 * values also escape the double quote. */
#include "daemon/prom.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const type_names[] = {"counter", "gauge", "histogram"};

static void add_escaped(pd_strbuf *sb, const char *s, int quote)
{
    for (; *s; s++) {
        if (*s == '\\')
            pd_strbuf_adds(sb, "\\\\");
        else if (*s == '\n')
            pd_strbuf_adds(sb, "\\n");
        else if (quote && *s == '"')
            pd_strbuf_adds(sb, "\\\"");
        else
            pd_strbuf_addc(sb, *s);
    }
}

void pd_prom_family(pd_strbuf *sb, const char *name, pd_prom_type type, const char *help)
{
    pd_strbuf_addf(sb, "# HELP %s ", name);
    add_escaped(sb, help, 0);
    pd_strbuf_addf(sb, "\n# TYPE %s %s\n", name, type_names[type]);
}

void pd_prom_format_value(char *buf, size_t len, double value)
{
    if (isnan(value)) {
        snprintf(buf, len, "NaN");
    } else if (isinf(value)) {
        snprintf(buf, len, value > 0 ? "+Inf" : "-Inf");
    } else if (value == floor(value) && fabs(value) < 9007199254740992.0) {
        snprintf(buf, len, "%.0f", value);
    } else {
        for (int prec = 15; prec <= 17; prec++) {
            snprintf(buf, len, "%.*g", prec, value);
            if (strtod(buf, NULL) == value)
                break;
        }
    }
}

static void add_labels(pd_strbuf *sb, const char *const *labels, const char *le)
{
    if ((!labels || !labels[0]) && !le)
        return;
    pd_strbuf_addc(sb, '{');
    int first = 1;
    for (size_t i = 0; labels && labels[i] && labels[i + 1]; i += 2) {
        pd_strbuf_addf(sb, "%s%s=\"", first ? "" : ",", labels[i]);
        add_escaped(sb, labels[i + 1], 1);
        pd_strbuf_addc(sb, '"');
        first = 0;
    }
    if (le)
        pd_strbuf_addf(sb, "%sle=\"%s\"", first ? "" : ",", le);
    pd_strbuf_addc(sb, '}');
}

void pd_prom_sample(pd_strbuf *sb, const char *name, const char *const *labels, double value)
{
    char v[32];
    pd_prom_format_value(v, sizeof v, value);
    pd_strbuf_adds(sb, name);
    add_labels(sb, labels, NULL);
    pd_strbuf_addf(sb, " %s\n", v);
}

void pd_prom_histogram(pd_strbuf *sb, const char *name, const char *const *labels,
                       const double *bounds, const uint64_t *counts, size_t n, double sum)
{
    char le[32], v[32];
    uint64_t cum = 0;
    for (size_t i = 0; i <= n; i++) {
        cum += counts[i];
        if (i < n)
            pd_prom_format_value(le, sizeof le, bounds[i]);
        else
            snprintf(le, sizeof le, "+Inf");
        pd_strbuf_addf(sb, "%s_bucket", name);
        add_labels(sb, labels, le);
        pd_strbuf_addf(sb, " %llu\n", (unsigned long long)cum);
    }
    pd_prom_format_value(v, sizeof v, sum);
    pd_strbuf_addf(sb, "%s_sum", name);
    add_labels(sb, labels, NULL);
    pd_strbuf_addf(sb, " %s\n%s_count", v, name);
    add_labels(sb, labels, NULL);
    pd_strbuf_addf(sb, " %llu\n", (unsigned long long)cum);
}

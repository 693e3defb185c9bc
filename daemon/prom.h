/* Prometheus text exposition format (version 0.0.4): families with HELP and TYPE, samples with
 * escaped labels, histograms from per-bucket counts. It only renders; the daemon decides what
 * to expose and the HTTP server serves the text. */
#ifndef PD_PROM_H
#define PD_PROM_H

#include <stddef.h>
#include <stdint.h>

#include "common/strbuf.h"

typedef enum pd_prom_type {
    PD_PROM_COUNTER,
    PD_PROM_GAUGE,
    PD_PROM_HISTOGRAM,
} pd_prom_type;

/* Starts a family: "# HELP name help" and "# TYPE name type". Every sample of the family
 * must follow before the next family starts. */
void pd_prom_family(pd_strbuf *sb, const char *name, pd_prom_type type, const char *help);

/* One sample. labels is NULL or a NULL-terminated list of name, value pairs; values are
 * escaped. NaN and infinities are written the way Prometheus reads them. */
void pd_prom_sample(pd_strbuf *sb, const char *name, const char *const *labels, double value);

/* A histogram's samples from n ascending upper bounds and n + 1 per-bucket counts (the last
 * counts what lies above the largest bound): cumulative _bucket lines with le, then _sum and
 * _count. labels as for pd_prom_sample() (le is added). */
void pd_prom_histogram(pd_strbuf *sb, const char *name, const char *const *labels,
                       const double *bounds, const uint64_t *counts, size_t n, double sum);

/* A number as the format writes it: integers exactly, others shortest round-trip, NaN,
 * +Inf, -Inf. buf needs 32 bytes. */
void pd_prom_format_value(char *buf, size_t len, double value);

#endif

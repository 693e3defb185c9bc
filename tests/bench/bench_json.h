/* The JSON decoder benchmark's shared shapes: every candidate extracts the same fields of a
 * brief-schema event into one struct, so the comparison is of the decoders alone. */
#ifndef PD_BENCH_JSON_H
#define PD_BENCH_JSON_H

#include <stddef.h>
#include <stdint.h>

typedef struct bench_str {
    const char *p;
    size_t n;
} bench_str;

typedef struct bench_event {
    bench_str type, user, item, device, country, campaign;
    int64_t ts;
    double price;
} bench_event;

/* Each returns 0 on success; buf has 64 readable padding bytes after len. */
typedef int (*bench_decode_fn)(const char *buf, size_t len, bench_event *ev);

#ifdef __cplusplus
extern "C" {
#endif
int bench_decode_simdjson_dom(const char *buf, size_t len, bench_event *ev);
int bench_decode_simdjson_ondemand(const char *buf, size_t len, bench_event *ev);
#ifdef __cplusplus
}
#endif

#endif

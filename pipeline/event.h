/* Decoding of one Kafka message value (a JSON event) into a pd_event, with the field mapping of
 * the pipeline YAML. Anything that does not decode or validate gets a reason code, never a
 * crash. The decoder owns the strings an event points at until its next decode call. */
#ifndef PD_EVENT_H
#define PD_EVENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct pd_decoder pd_decoder;

/* Why an event was refused; the names are the dead-letter header and metric label values. */
typedef enum pd_decode_error {
    PD_DECODE_OK = 0,
    PD_DECODE_OVERSIZE, /* larger than events.max_message_bytes */
    PD_DECODE_INVALID_UTF8,
    PD_DECODE_NOT_JSON,
    PD_DECODE_NOT_OBJECT,   /* valid JSON, but not an object */
    PD_DECODE_MISSING_USER, /* user field absent, null or empty */
    PD_DECODE_MISSING_TYPE,
    PD_DECODE_UNKNOWN_TYPE,    /* type not declared in events.types */
    PD_DECODE_WRONG_TYPE,      /* a mapped field has the wrong JSON type */
    PD_DECODE_BAD_NUMBER,      /* a number that is out of range, NaN or Inf */
    PD_DECODE_STRING_TOO_LONG, /* a mapped string over events.max_string_length */
    PD_DECODE_BAD_STRING,      /* a mapped string holding a NUL character */
    PD_DECODE_MISSING_TIME,    /* no time field and no message timestamp */
    PD_DECODE_DUPLICATE_KEY,   /* a field the pipeline reads appears twice in one object */
    PD_DECODE__COUNT
} pd_decode_error;

/* Stable snake_case name of a reason ("not_json"), for headers, logs and metrics. */
const char *pd_decode_error_name(pd_decode_error err);

typedef enum pd_value_kind {
    PD_VALUE_MISSING = 0, /* absent or null */
    PD_VALUE_STRING,
    PD_VALUE_NUMBER,
    PD_VALUE_BOOL,
    PD_VALUE_OTHER, /* an object or array where a scalar was expected */
} pd_value_kind;

typedef struct pd_value {
    pd_value_kind kind;
    const char *str; /* PD_VALUE_STRING: not NUL-terminated */
    size_t len;
    double num;      /* PD_VALUE_NUMBER (finite), PD_VALUE_BOOL (0/1) */
    bool is_integer; /* PD_VALUE_NUMBER written as an integer: exact in `integer` */
    int64_t integer; /* (unsigned values above INT64_MAX are not integers here) */
} pd_value;

typedef struct pd_event {
    const char *user; /* never empty */
    size_t user_len;
    const char *item; /* may be empty */
    size_t item_len;
    const char *event_id; /* may be empty */
    size_t event_id_len;
    const char *text; /* may be empty */
    size_t text_len;
    int type;        /* index into events.types */
    int64_t ts_ms;   /* event time */
    uint32_t source; /* which ordered input it came from (a Kafka partition); 0 by default */
    uint32_t shard;  /* whose state its user's is (the caller's number for its partition) */
    bool has_value;
    double value; /* events.fields.value, finite when has_value */
    /* the extra paths given to pd_decoder_new(), in the same order */
    const pd_value *fields;
    size_t n_fields;
} pd_event;

/* Builds a decoder for the mapping in conf plus n_paths extra dotted JSON paths (feature
 * sources, label values, weights); event.fields[i] is the value at paths[i]. A path segment is
 * matched against whole keys, so "context.emp.var.rate" finds {"context":{"emp.var.rate":1}}.
 * Copies what it needs; conf and paths may be freed afterwards. */
pd_decoder *pd_decoder_new(const pd_events_conf *conf, const char *const *paths, size_t n_paths,
                           char *errbuf, size_t errlen);
void pd_decoder_free(pd_decoder *dec);

/* Decodes buf (len bytes, any alignment, need not be NUL-terminated). fallback_ts_ms is used
 * when the event has no time field (the Kafka message timestamp; <= 0 for none). On success
 * fills *ret_event, whose pointers stay valid until the next call on this decoder. On failure
 * returns the reason and, when detail is non-NULL, a short human-readable explanation naming
 * the field (no event contents beyond the field name). */
pd_decode_error pd_decoder_decode(pd_decoder *dec, const char *buf, size_t len,
                                  int64_t fallback_ts_ms, pd_event *ret_event, char *detail,
                                  size_t detail_len);

#ifdef __cplusplus
}
#endif

#endif

/* Just enough JSON for the control plane: a strict parser into a read-only tree (for the
 * daemon's commands and the CLI's replies) and writers for strings and numbers. Input that is
 * not valid JSON, not valid UTF-8, nested too deep or has duplicate keys is refused with a
 * message, never half-parsed. */
#ifndef PD_JSON_H
#define PD_JSON_H

#include <stdbool.h>
#include <stddef.h>

#include "daemon/strbuf.h"

#define PD_JSON_MAX_DEPTH 32

typedef enum pd_json_type {
    PD_JSON_NULL,
    PD_JSON_BOOL,
    PD_JSON_NUMBER,
    PD_JSON_STRING,
    PD_JSON_ARRAY,
    PD_JSON_OBJECT,
} pd_json_type;

typedef struct pd_json pd_json;           /* a parsed document; owns every node */
typedef struct pd_json_node pd_json_node; /* valid while its document lives */

/* Parses one JSON value (surrounding whitespace allowed, nothing else). NULL and a message
 * with the byte offset on failure. */
pd_json *pd_json_parse(const char *text, size_t len, char *errbuf, size_t errlen);
void pd_json_free(pd_json *doc);

const pd_json_node *pd_json_root(const pd_json *doc);
pd_json_type pd_json_type_of(const pd_json_node *n);
const char *pd_json_type_name(pd_json_type t);

/* The member of an object named key, or NULL (also when n is not an object). */
const pd_json_node *pd_json_get(const pd_json_node *n, const char *key);
/* First element of an array or member of an object (NULL when empty or a scalar); next. */
const pd_json_node *pd_json_first(const pd_json_node *n);
const pd_json_node *pd_json_next(const pd_json_node *n);
/* The key of an object member (NUL-terminated; may contain NULs, hence the length). */
const char *pd_json_key(const pd_json_node *member, size_t *ret_len);
/* A string's bytes (NUL-terminated), or NULL when n is not a string. */
const char *pd_json_string(const pd_json_node *n, size_t *ret_len);
double pd_json_number(const pd_json_node *n); /* NaN when not a number */
bool pd_json_bool(const pd_json_node *n);     /* false when not a boolean */
size_t pd_json_count(const pd_json_node *n);  /* elements or members; 0 for scalars */

/* Whether s is well-formed UTF-8 (no overlongs, surrogates or code points past U+10FFFF). */
bool pd_utf8_valid(const char *s, size_t len);

/* Appends s as a JSON string: quoted, escaped, invalid UTF-8 replaced by U+FFFD. */
void pd_json_add_string(pd_strbuf *sb, const char *s, size_t len);
void pd_json_add_str(pd_strbuf *sb, const char *s); /* NUL-terminated; NULL writes null */
/* Appends a number (shortest round-trip form); non-finite values are written as null. */
void pd_json_add_number(pd_strbuf *sb, double v);

#endif

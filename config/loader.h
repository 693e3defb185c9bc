/* The loader's toolkit, internal to config/: walking the YAML tree with key paths, expanding
 * ${ENV} references, reading typed values with their range checks, and reporting every problem
 * at its position, with a did-you-mean when a word is misspelt. The section readers
 * (sections.c, features.c, models.c, model_*.c) are written with these and nothing else; no
 * function here knows a section. */
#ifndef PD_CONFIG_LOADER_H
#define PD_CONFIG_LOADER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/strbuf.h"
#include "config/config.h"
#include "config/units.h"
#include "config/yaml_tree.h"

#define KEYPATH_MAX 512 /* a longer key path is cut in messages, never an error */

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

typedef const pd_yaml_node ynode;

/* One load in progress. Readers fill conf and count what they report; the load fails when
 * errors or oom is set at the end. */
typedef struct loader {
    pd_config *conf;
    pd_diag *diag;
    const char *file;     /* conf->path */
    const char *base_dir; /* relative *_file paths start here; NULL = working directory */
    size_t errors;
    bool oom;
    bool types_ok; /* events.types is usable: type references can be checked */
} loader;

/* Appends "file:line:column: error: path: text" at the node's position (1:1 without one). */
void ld_report(loader *ld, ynode *at, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* ld_report at the key node of map[key], named mpath.key: for a key that is misplaced. */
void ld_report_key(loader *ld, ynode *map, const char *mpath, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* strdup and calloc (of at least one element) that mark the load out of memory on failure. */
char *ld_strdup(loader *ld, const char *s);
void *ld_calloc(loader *ld, size_t n, size_t size);

/* strerror, lowercased the way every message here is. */
const char *ld_errno_text(int err, char *buf, size_t len);

/* ---- key paths, as messages name a value: models.p.features[2] ---- */

/* out = parent.key (key alone when parent is empty); out may be parent itself. out holds
 * KEYPATH_MAX bytes. */
void ld_path_key(char *out, const char *parent, const char *key);
/* out = parent[i]; out may be parent itself. */
void ld_path_index(char *out, const char *parent, size_t i);
/* The path of item i of a list node: parent[i], or parent itself when a lone scalar stands
 * for a list of one. */
void ld_path_item(char *out, ynode *list, const char *parent, size_t i);

/* How a node is shown in "expected X, got Y": scalars as written in the file (never a value
 * taken from the environment, which may be a secret), other kinds by name. */
const char *ld_describe(ynode *n, char *buf, size_t len);
void ld_pos(loader *ld, ynode *n, pd_conf_pos *pos);

/* ---- scalars, after ${ENV} expansion ---- */

typedef struct scalar {
    char *value;     /* expanded, owned */
    const char *raw; /* as written in the file: what messages may quote */
    bool env;        /* some of it came from the environment */
    bool env_whole;  /* all of it is one ${NAME} (or ${NAME:-}): nothing taken from the file */
} scalar;

/* The expanded text of a scalar; anything else is reported as "expected <what>". */
bool ld_scalar(loader *ld, ynode *n, const char *path, const char *what, scalar *out);

/* ---- mappings ---- */

/* Index of the first pair whose key is `key`, or -1. */
ptrdiff_t ld_map_find(ynode *map, const char *key);
/* The key node of `key`, or NULL. */
ynode *ld_map_key(ynode *map, const char *key);
/* The value of `key`; NULL when absent or written as nothing ("key:" means "not set"). */
ynode *ld_map_get(ynode *map, const char *key);
/* Whether pair i is a key to read: the first with its text (later duplicates are reported and
 * ignored) and not a merge key (reported too). */
bool ld_key_to_read(ynode *map, size_t i);

/* Checks the keys of a mapping: strings, no duplicates and, when allowed (NULL-terminated) is
 * given, only those. "Nothing" passes as an empty mapping. Returns false when the node is not
 * a mapping. */
bool ld_check_map(loader *ld, ynode *map, const char *path, const char *const *allowed);

/* The name of entry i of a section of named definitions (features:, models:), its key path
 * (section.name) in path; NULL when the entry is not read: a duplicate or merge key (reported
 * by ld_check_map) or a name that is not [a-z0-9_]+ (reported here as an invalid noun name). */
const char *ld_entry_name(loader *ld, ynode *map, size_t i, const char *section, const char *noun,
                          char *path);

/* Reports a missing required key at the mapping that lacks it. */
bool ld_need(loader *ld, ynode *map, const char *mpath, const char *key);

/* ---- typed values ----
 * Each ld_get_* reads map[key]: returns 0 when absent (the output keeps its default), 1 when
 * set, -1 after reporting a problem. Outputs are written only on success. */

/* An empty value turns an optional string off (returns 0); a required one must not be empty. */
int ld_get_string(loader *ld, ynode *map, const char *mpath, const char *key, bool required,
                  char **out);
int ld_get_int(loader *ld, ynode *map, const char *mpath, const char *key, int64_t lo, int64_t hi,
               int64_t *out);
int ld_get_int32(loader *ld, ynode *map, const char *mpath, const char *key, int64_t lo, int64_t hi,
                 int *out);
/* lo is exclusive when lo_open; hi may be INFINITY. */
int ld_get_double(loader *ld, ynode *map, const char *mpath, const char *key, double lo,
                  bool lo_open, double hi, double *out);
int ld_get_bool(loader *ld, ynode *map, const char *mpath, const char *key, bool *out);
/* lo..hi in milliseconds; zero_ok additionally admits 0 below lo ("0 = off"). */
int ld_get_duration(loader *ld, ynode *map, const char *mpath, const char *key, int64_t lo,
                    int64_t hi, bool zero_ok, int64_t *out);
/* lo..hi in bytes. */
int ld_get_size(loader *ld, ynode *map, const char *mpath, const char *key, int64_t lo, int64_t hi,
                int64_t *out);
/* One of names; *out is its index. */
int ld_get_enum(loader *ld, ynode *map, const char *mpath, const char *key,
                const char *const *names, size_t n_names, int *out);
/* A dotted JSON path such as context.device. */
int ld_get_json_path(loader *ld, ynode *map, const char *mpath, const char *key, char **out);

/* Matches a scalar against a word list; unknown words get a did-you-mean. subject names what
 * the word is ("unknown transform ..."). Returns 1 (and the index in *out) or -1. */
int ld_match_word(loader *ld, ynode *n, const char *kp, const char *subject,
                  const char *const *names, size_t n_names, int *out);

/* An event type by name; "any" gives -1 when allowed. Returns 0 or -1 after reporting (or
 * silently when events.types itself is broken and already reported). */
int ld_resolve_type(loader *ld, ynode *n, const char *kp, bool allow_any, int *out);

/* ---- lists ---- */

/* Checks a list's kind and length; with single, a lone scalar counts as a list of one. */
bool ld_check_list(loader *ld, ynode *n, const char *path, bool single, size_t min, size_t max,
                   const char *what, size_t *ret_n);
/* Item i of a list, or the node itself when it is a lone scalar standing for a list of one. */
ynode *ld_list_at(ynode *n, size_t i);

/* ---- names and suggestions ---- */

/* [a-z0-9_]+: names that end up in hash seeds, Redis fields and metric labels. */
bool ld_valid_name(const char *s);
/* [A-Za-z0-9_.:-]+: safe inside a Redis key or hash field without quoting. */
bool ld_valid_redis_token(const char *s);

/* The best suggestion for a misspelt word among cands: edit distance <= 2, else a prefix
 * either way; NULL when nothing is close. */
const char *ld_did_you_mean(const char *word, const char *const *cands, size_t n);
/* Appends "a, b<last_sep>c". */
void ld_join_names(pd_strbuf *b, const char *const *names, size_t n, const char *last_sep);

#endif

/* Loads the pipeline YAML into a pd_config: expands ${ENV} references, reads *_file secrets,
 * checks every key and value against the language in config/README.md and reports every problem
 * it finds with the position of the offending key or value. Nothing here logs. */
#include "config/config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "config/diag.h"
#include "config/yaml_tree.h"

#define KEYPATH_MAX      512
#define MAX_FILE_BYTES   (16 << 20)
#define MAX_SECRET_BYTES (64 << 10)
#define MAX_TOPICS       64
#define MAX_MODEL_FEATS  256
#define MAX_TRANSFORMS   16
#define MAX_RECENT_ITEMS 16

#define MS_PER_S   INT64_C(1000)
#define MS_PER_MIN (60 * MS_PER_S)
#define MS_PER_H   (60 * MS_PER_MIN)
#define MS_PER_DAY (24 * MS_PER_H)

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* ------------------------------------------------------------------------------------------ */
/* small strings */

typedef struct strbuf {
    char *s;
    size_t n, cap;
    bool oom;
} strbuf;

static void sb_add(strbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        char *p;

        while (cap < b->n + n + 1)
            cap *= 2;
        p = realloc(b->s, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = '\0';
}

static void sb_puts(strbuf *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

/* Hands the string over (an empty string when nothing was added); NULL when out of memory. */
static char *sb_take(strbuf *b)
{
    char *s;

    if (b->oom) {
        free(b->s);
        return NULL;
    }
    s = b->s ? b->s : strdup("");
    b->s = NULL;
    b->n = b->cap = 0;
    return s;
}

static void sb_release(strbuf *b)
{
    free(b->s);
    b->s = NULL;
    b->n = b->cap = 0;
}

static bool str_eq(const char *a, const char *b)
{
    if (!a || !b)
        return a == b;
    return strcmp(a, b) == 0;
}

/* Frees a string that may hold a secret without leaving it in freed memory. */
static void free_secret(char *s)
{
    if (!s)
        return;
    explicit_bzero(s, strlen(s));
    free(s);
}

/* strerror, lowercased the way every message here is. */
static const char *errno_text(int err, char *buf, size_t len)
{
    const char *s = strerror_r(err, buf, len);

    if (s != buf) {
        snprintf(buf, len, "%s", s);
    }
    if (buf[0])
        buf[0] = (char)tolower((unsigned char)buf[0]);
    return buf;
}

/* ------------------------------------------------------------------------------------------ */
/* names */

static const char *const feature_kind_names[] = {
    [PD_FEAT_CATEGORICAL] = "categorical",
    [PD_FEAT_NUMERIC] = "numeric",
    [PD_FEAT_CROSS] = "cross",
    [PD_FEAT_TEXT] = "text",
    [PD_FEAT_RECENCY] = "recency",
    [PD_FEAT_DECAYED_COUNT] = "decayed_count",
    [PD_FEAT_SPEND] = "spend",
    [PD_FEAT_DISTINCT_ITEMS] = "distinct_items",
    [PD_FEAT_RECENT_ITEMS] = "recent_items",
};
static const char *const model_type_names[] = {"logistic", "linear", "hinge"};
static const char *const loss_names[] = {
    [PD_LOSS_LOGISTIC] = "logistic",
    [PD_LOSS_SQUARED] = "squared",
    [PD_LOSS_HUBER] = "huber",
    [PD_LOSS_HINGE] = "hinge",
};
static const char *const optimizer_names[] = {"ftrl", "adagrad", "sgd"};
static const char *const weight_format_names[] = {"float32", "float16"};
static const char *const start_names[] = {"earliest", "latest"};
static const char *const match_names[] = {"user", "user_item"};
static const char *const log_level_names[] = {"debug", "info", "warning", "error"};
static const char *const transform_names[] = {"log1p", "clip"};

/* [a-z0-9_]+: names that end up in hash seeds, Redis fields and metric labels. */
static bool valid_name(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!(islower((unsigned char)*s) || isdigit((unsigned char)*s) || *s == '_'))
            return false;
    return true;
}

/* [A-Za-z0-9_.:-]+: safe inside a Redis key or hash field without quoting. */
static bool valid_redis_token(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!(isalnum((unsigned char)*s) || strchr("_.:-", *s)))
            return false;
    return true;
}

/* Dotted JSON paths: non-empty segments without spaces. */
static bool valid_json_path(const char *s)
{
    bool segment = false;

    for (; *s; s++) {
        if (*s == '.') {
            if (!segment)
                return false;
            segment = false;
        } else if (isspace((unsigned char)*s) || iscntrl((unsigned char)*s)) {
            return false;
        } else {
            segment = true;
        }
    }
    return segment;
}

/* Optimal string alignment distance, capped: only "close enough" matters. */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    size_t d[3][65];
    size_t *prev2 = d[0], *prev = d[1], *cur = d[2];

    if (la > 64 || lb > 64)
        return SIZE_MAX;
    for (size_t j = 0; j <= lb; j++)
        prev[j] = j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
            size_t v = prev[j] + 1;

            if (cur[j - 1] + 1 < v)
                v = cur[j - 1] + 1;
            if (prev[j - 1] + cost < v)
                v = prev[j - 1] + cost;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                prev2[j - 2] + 1 < v)
                v = prev2[j - 2] + 1;
            cur[j] = v;
        }
        size_t *t = prev2;
        prev2 = prev;
        prev = cur;
        cur = t;
    }
    return prev[lb];
}

static bool is_prefix(const char *p, const char *s)
{
    return strncmp(p, s, strlen(p)) == 0;
}

/* The best suggestion for a misspelt word: edit distance <= 2, else a prefix either way. */
static const char *did_you_mean(const char *word, const char *const *cands, size_t n)
{
    const char *best = NULL;
    size_t best_score = SIZE_MAX;

    for (size_t i = 0; i < n; i++) {
        size_t score = edit_distance(word, cands[i]);

        if (score > 2) {
            bool prefix = strlen(word) >= 3 && strlen(cands[i]) >= 3 &&
                          (is_prefix(word, cands[i]) || is_prefix(cands[i], word));
            score = prefix ? 3 : SIZE_MAX;
        }
        if (score < best_score) {
            best_score = score;
            best = cands[i];
        }
    }
    return best;
}

static void join_names(strbuf *b, const char *const *names, size_t n, const char *last_sep)
{
    for (size_t i = 0; i < n; i++) {
        if (i)
            sb_puts(b, i + 1 == n ? last_sep : ", ");
        sb_puts(b, names[i]);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* durations, sizes, numbers */

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
    for (size_t i = 0; i < ARRAY_SIZE(units); i++) {
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
    for (size_t i = 0; i < ARRAY_SIZE(units); i++) {
        if (strcmp(p, units[i].unit))
            continue;
        if ((int64_t)v > INT64_MAX / units[i].bytes)
            return -EINVAL;
        *ret = (int64_t)v * units[i].bytes;
        return 0;
    }
    return -EINVAL;
}

static bool parse_int(const char *text, int64_t *ret)
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

static bool parse_double(const char *text, double *ret)
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

static bool parse_bool(const char *text, bool *ret)
{
    static const char *const yes[] = {"true", "yes", "on"};
    static const char *const no[] = {"false", "no", "off"};

    for (size_t i = 0; i < ARRAY_SIZE(yes); i++) {
        if (!strcasecmp(text, yes[i])) {
            *ret = true;
            return true;
        }
        if (!strcasecmp(text, no[i])) {
            *ret = false;
            return true;
        }
    }
    return false;
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
    for (size_t i = 0; i < ARRAY_SIZE(units); i++) {
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

/* ------------------------------------------------------------------------------------------ */
/* the loader */

typedef struct loader {
    pd_config *conf;
    pd_diag *diag;
    const char *file;     /* conf->path */
    const char *base_dir; /* relative *_file paths start here; NULL = working directory */
    size_t errors;
    bool oom;
    bool types_ok; /* events.types is usable: type references can be checked */
} loader;

typedef const pd_yaml_node ynode;

static void report(loader *ld, ynode *at, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void report(loader *ld, ynode *at, const char *path, const char *fmt, ...)
{
    va_list ap;
    char *msg = NULL;
    int line = at ? pd_yaml_node_line(at) : 1;
    int column = at ? pd_yaml_node_column(at) : 1;

    ld->errors++;
    va_start(ap, fmt);
    if (vasprintf(&msg, fmt, ap) < 0)
        msg = NULL;
    va_end(ap);
    if (!msg) {
        ld->oom = true;
        return;
    }
    if (path && *path)
        pd_diag_add(ld->diag, ld->file, line, column, "%s: %s", path, msg);
    else
        pd_diag_add(ld->diag, ld->file, line, column, "%s", msg);
    free(msg);
}

static char *dup_str(loader *ld, const char *s)
{
    char *d;

    if (!s)
        return NULL;
    d = strdup(s);
    if (!d)
        ld->oom = true;
    return d;
}

static void *alloc_array(loader *ld, size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);

    if (!p)
        ld->oom = true;
    return p;
}

/* Key paths are built by hand: a very long path is cut, not an error. */
static size_t path_append(char *out, size_t n, const char *s)
{
    while (*s && n < KEYPATH_MAX - 1)
        out[n++] = *s++;
    out[n] = '\0';
    return n;
}

static void path_key(char *out, const char *parent, const char *key)
{
    char tmp[KEYPATH_MAX];
    size_t n = 0;

    /* parent may be out itself */
    n = path_append(tmp, n, parent ? parent : "");
    if (n)
        n = path_append(tmp, n, ".");
    path_append(tmp, n, key);
    memcpy(out, tmp, strlen(tmp) + 1);
}

static void path_index(char *out, const char *parent, size_t i)
{
    char tmp[KEYPATH_MAX], idx[32];
    size_t n;

    snprintf(idx, sizeof(idx), "[%zu]", i);
    n = path_append(tmp, 0, parent);
    path_append(tmp, n, idx);
    memcpy(out, tmp, strlen(tmp) + 1);
}

/* How a node is shown in "expected X, got Y": scalars as written in the file (never a value
 * taken from the environment, which may be a secret), other kinds by name. */
static const char *describe(ynode *n, char *buf, size_t len)
{
    switch (pd_yaml_node_kind(n)) {
    case PD_YAML_LIST:
        return "a list";
    case PD_YAML_MAP:
        return "a mapping";
    case PD_YAML_NULL:
        return "nothing";
    case PD_YAML_SCALAR:
        break;
    }
    if (strlen(pd_yaml_node_text(n)) > 40)
        snprintf(buf, len, "\"%.37s...\"", pd_yaml_node_text(n));
    else
        snprintf(buf, len, "\"%s\"", pd_yaml_node_text(n));
    return buf;
}

static void pos_of(loader *ld, ynode *n, pd_conf_pos *pos)
{
    pos->file = ld->file;
    pos->line = pd_yaml_node_line(n);
    pos->column = pd_yaml_node_column(n);
}

/* ---- ${ENV} references ---- */

typedef struct scalar {
    char *value;     /* expanded, owned */
    const char *raw; /* as written in the file: what messages may quote */
    bool env;        /* some of it came from the environment */
    bool env_whole;  /* all of it is one ${NAME} (or ${NAME:-}): nothing taken from the file */
} scalar;

static bool is_name_start(char c)
{
    return isalpha((unsigned char)c) || c == '_';
}

static bool is_name_char(char c)
{
    return isalnum((unsigned char)c) || c == '_';
}

static int expand(loader *ld, ynode *n, const char *path, scalar *out)
{
    const char *raw = pd_yaml_node_text(n);
    size_t len = pd_yaml_node_text_len(n);
    strbuf b = {0};
    size_t refs = 0;
    bool ok = true, whole = false;

    if (memchr(raw, '\0', len)) {
        report(ld, n, path, "contains a NUL character");
        return -EINVAL;
    }
    for (size_t i = 0; i < len;) {
        if (raw[i] == '$' && raw[i + 1] == '$' && raw[i + 2] == '{') {
            sb_add(&b, "${", 2);
            i += 3;
            continue;
        }
        if (raw[i] != '$' || raw[i + 1] != '{') {
            sb_add(&b, raw + i, 1);
            i++;
            continue;
        }
        size_t name_at = i + 2, j = name_at;
        const char *close = memchr(raw + name_at, '}', len - name_at);
        const char *def = NULL, *value;
        size_t def_len = 0;
        char name[256];

        while (j < len && is_name_char(raw[j]))
            j++;
        if (close && raw[j] == ':' && raw[j + 1] == '-') {
            def = raw + j + 2;
            def_len = (size_t)(close - def);
        } else if (raw + j != close) {
            close = NULL;
        }
        if (!close || !is_name_start(raw[name_at]) || j - name_at >= sizeof(name)) {
            report(ld, n, path,
                   "malformed environment reference (expected ${NAME} or "
                   "${NAME:-default}; write $${ for a literal ${)");
            ok = false;
            break;
        }
        memcpy(name, raw + name_at, j - name_at);
        name[j - name_at] = '\0';
        value = getenv(name);
        if (value && (*value || !def)) {
            sb_puts(&b, value);
        } else if (def) {
            sb_add(&b, def, def_len);
        } else {
            report(ld, n, path, "environment variable \"%s\" is not set", name);
            ok = false;
        }
        whole = i == 0 && close == raw + len - 1 && def_len == 0;
        refs++;
        i = (size_t)(close - raw) + 1;
    }
    if (!ok || b.oom) {
        if (b.oom)
            ld->oom = true;
        free_secret(b.s);
        return -EINVAL;
    }
    out->value = sb_take(&b);
    if (!out->value) {
        ld->oom = true;
        return -ENOMEM;
    }
    out->raw = raw;
    out->env = refs > 0;
    out->env_whole = refs == 1 && whole;
    return 0;
}

/* The expanded text of a scalar; anything else is reported as "expected <what>". */
static bool scalar_of(loader *ld, ynode *n, const char *path, const char *what, scalar *out)
{
    char buf[64];

    if (pd_yaml_node_kind(n) != PD_YAML_SCALAR) {
        report(ld, n, path, "expected %s, got %s", what, describe(n, buf, sizeof(buf)));
        return false;
    }
    return expand(ld, n, path, out) == 0;
}

/* ---- mappings ---- */

/* Index of the first pair whose key is `key`, or -1. */
static ptrdiff_t map_find(ynode *map, const char *key)
{
    for (size_t i = 0; i < pd_yaml_node_size(map); i++) {
        ynode *k = pd_yaml_node_key(map, i);

        if (pd_yaml_node_kind(k) == PD_YAML_SCALAR && !strcmp(pd_yaml_node_text(k), key))
            return (ptrdiff_t)i;
    }
    return -1;
}

/* The key node of `key`, or NULL. */
static ynode *map_key(ynode *map, const char *key)
{
    ptrdiff_t i = map_find(map, key);

    return i < 0 ? NULL : pd_yaml_node_key(map, (size_t)i);
}

/* The value of `key`; NULL when absent or written as nothing ("key:" means "not set"). */
static ynode *map_get(ynode *map, const char *key)
{
    ptrdiff_t i = map_find(map, key);
    ynode *v;

    if (i < 0)
        return NULL;
    v = pd_yaml_node_value(map, (size_t)i);
    return pd_yaml_node_kind(v) == PD_YAML_NULL ? NULL : v;
}

/* Whether pair i is a key to read: the first with its text (later duplicates are reported and
 * ignored) and not a merge key (reported too). */
static bool key_to_read(ynode *map, size_t i)
{
    ynode *k = pd_yaml_node_key(map, i);

    return pd_yaml_node_kind(k) == PD_YAML_SCALAR && strcmp(pd_yaml_node_text(k), "<<") &&
           map_find(map, pd_yaml_node_text(k)) == (ptrdiff_t)i;
}

/* Checks the keys of a mapping: strings, no duplicates and, when allowed is given, only those.
 * "Nothing" passes as an empty mapping. Returns false when the node is not a mapping. */
static bool check_map(loader *ld, ynode *map, const char *path, const char *const *allowed)
{
    char buf[64], kp[KEYPATH_MAX];

    if (pd_yaml_node_kind(map) == PD_YAML_NULL)
        return true;
    if (pd_yaml_node_kind(map) != PD_YAML_MAP) {
        report(ld, map, path, "expected a mapping, got %s", describe(map, buf, sizeof(buf)));
        return false;
    }
    for (size_t i = 0; i < pd_yaml_node_size(map); i++) {
        ynode *k = pd_yaml_node_key(map, i);
        const char *key = pd_yaml_node_text(k);
        ptrdiff_t first;
        size_t n_allowed = 0;
        const char *hint;

        if (pd_yaml_node_kind(k) != PD_YAML_SCALAR) {
            report(ld, k, path, "keys must be strings, got %s", describe(k, buf, sizeof(buf)));
            continue;
        }
        path_key(kp, path, key);
        first = map_find(map, key);
        if (first != (ptrdiff_t)i) {
            report(ld, k, kp, "duplicate key (first defined at line %d)",
                   pd_yaml_node_line(pd_yaml_node_key(map, (size_t)first)));
            continue;
        }
        if (!strcmp(key, "<<") && pd_yaml_node_kind(k) == PD_YAML_SCALAR) {
            report(ld, k, kp, "merge keys are not supported: write the keys out");
            continue;
        }
        if (!allowed)
            continue;
        while (allowed[n_allowed])
            n_allowed++;
        bool known = false;
        for (size_t j = 0; j < n_allowed && !known; j++)
            known = !strcmp(allowed[j], key);
        if (known)
            continue;
        hint = did_you_mean(key, allowed, n_allowed);
        if (hint) {
            report(ld, k, kp, "unknown key (did you mean \"%s\"?)", hint);
        } else {
            strbuf b = {0};

            join_names(&b, allowed, n_allowed, ", ");
            report(ld, k, kp, "unknown key (expected one of: %s)", b.s ? b.s : "");
            sb_release(&b);
        }
    }
    return true;
}

/* Reports a missing required key at the mapping that lacks it. */
static bool need(loader *ld, ynode *map, const char *mpath, const char *key)
{
    char kp[KEYPATH_MAX];
    ptrdiff_t i = map_find(map, key);

    path_key(kp, mpath, key);
    if (i < 0) {
        report(ld, map, kp, "missing required key");
        return false;
    }
    if (pd_yaml_node_kind(pd_yaml_node_value(map, (size_t)i)) == PD_YAML_NULL) {
        report(ld, pd_yaml_node_value(map, (size_t)i), kp, "a value is required");
        return false;
    }
    return true;
}

/* ---- typed values ----
 * Each get_* reads map[key]: returns 0 when absent (the output keeps its default), 1 when set,
 * -1 after reporting a problem. Outputs are written only on success. */

static int get_string(loader *ld, ynode *map, const char *mpath, const char *key, bool required,
                      char **out)
{
    ynode *n = map_get(map, key);
    char kp[KEYPATH_MAX];
    scalar sc;

    if (!n)
        return 0;
    path_key(kp, mpath, key);
    if (!scalar_of(ld, n, kp, "a string", &sc))
        return -1;
    if (!*sc.value) {
        /* "${X:-}" turns an optional setting off; a required one cannot be empty. */
        free(sc.value);
        if (!required)
            return 0;
        report(ld, n, kp, "must not be empty");
        return -1;
    }
    free(*out);
    *out = sc.value;
    return 1;
}

static void report_int_range(loader *ld, ynode *n, const char *kp, int64_t lo, int64_t hi,
                             const char *raw)
{
    if (hi == INT64_MAX)
        report(ld, n, kp, "must be at least %lld (got %s)", (long long)lo, raw);
    else
        report(ld, n, kp, "must be between %lld and %lld (got %s)", (long long)lo, (long long)hi,
               raw);
}

static int get_int(loader *ld, ynode *map, const char *mpath, const char *key, int64_t lo,
                   int64_t hi, int64_t *out)
{
    ynode *n = map_get(map, key);
    char kp[KEYPATH_MAX], buf[64];
    scalar sc;
    int64_t v;
    int ret = -1;

    if (!n)
        return 0;
    path_key(kp, mpath, key);
    if (!scalar_of(ld, n, kp, "an integer", &sc))
        return -1;
    if (!parse_int(sc.value, &v))
        report(ld, n, kp, "expected an integer, got %s", describe(n, buf, sizeof(buf)));
    else if (v < lo || v > hi)
        report_int_range(ld, n, kp, lo, hi, sc.raw);
    else {
        *out = v;
        ret = 1;
    }
    free(sc.value);
    return ret;
}

static int get_int32(loader *ld, ynode *map, const char *mpath, const char *key, int64_t lo,
                     int64_t hi, int *out)
{
    int64_t v = *out;
    int ret = get_int(ld, map, mpath, key, lo, hi, &v);

    if (ret > 0)
        *out = (int)v;
    return ret;
}

/* Bounds for doubles: lo is exclusive when lo_open; hi may be INFINITY. */
static int check_double(loader *ld, ynode *n, const char *kp, const char *raw, double v, double lo,
                        bool lo_open, double hi)
{
    bool ok = (lo_open ? v > lo : v >= lo) && v <= hi;

    if (ok)
        return 0;
    if (isinf(hi))
        report(ld, n, kp, "must be %s %g (got %s)", lo_open ? "greater than" : "at least", lo, raw);
    else if (lo_open)
        report(ld, n, kp, "must be greater than %g and at most %g (got %s)", lo, hi, raw);
    else
        report(ld, n, kp, "must be between %g and %g (got %s)", lo, hi, raw);
    return -1;
}

static int get_double(loader *ld, ynode *map, const char *mpath, const char *key, double lo,
                      bool lo_open, double hi, double *out)
{
    ynode *n = map_get(map, key);
    char kp[KEYPATH_MAX], buf[64];
    scalar sc;
    double v;
    int ret = -1;

    if (!n)
        return 0;
    path_key(kp, mpath, key);
    if (!scalar_of(ld, n, kp, "a number", &sc))
        return -1;
    if (!parse_double(sc.value, &v))
        report(ld, n, kp, "expected a number, got %s", describe(n, buf, sizeof(buf)));
    else if (check_double(ld, n, kp, sc.raw, v, lo, lo_open, hi) == 0) {
        *out = v;
        ret = 1;
    }
    free(sc.value);
    return ret;
}

static int get_bool(loader *ld, ynode *map, const char *mpath, const char *key, bool *out)
{
    ynode *n = map_get(map, key);
    char kp[KEYPATH_MAX], buf[64];
    scalar sc;
    bool v;
    int ret = -1;

    if (!n)
        return 0;
    path_key(kp, mpath, key);
    if (!scalar_of(ld, n, kp, "true or false", &sc))
        return -1;
    if (!parse_bool(sc.value, &v))
        report(ld, n, kp, "expected true or false, got %s", describe(n, buf, sizeof(buf)));
    else {
        *out = v;
        ret = 1;
    }
    free(sc.value);
    return ret;
}

/* A number with a unit: how to read it, how to print a bound, what to say when it is
 * unreadable. */
typedef struct quantity {
    const char *what; /* "a duration" */
    const char *noun; /* "duration" */
    const char *expected;
    int (*parse)(const char *text, int64_t *ret);
    void (*format)(int64_t v, char *buf, size_t len);
} quantity;

static const quantity duration_q = {"a duration", "duration",
                                    "a whole number and a unit: 250ms, 30s, 5m, 2h, 7d",
                                    pd_parse_duration, format_duration};
static const quantity size_q = {"a size", "size", "bytes, KiB or MiB: 65536, 64KiB, 16MiB",
                                parse_size, format_size};

/* lo..hi in the quantity's base unit; zero_ok additionally admits 0 below lo ("0 = off"). */
static int get_quantity(loader *ld, ynode *map, const char *mpath, const char *key,
                        const quantity *q, int64_t lo, int64_t hi, bool zero_ok, int64_t *out)
{
    ynode *n = map_get(map, key);
    char kp[KEYPATH_MAX], buf[64], a[32], b[32];
    scalar sc;
    int64_t v;
    int ret = -1;

    if (!n)
        return 0;
    path_key(kp, mpath, key);
    if (!scalar_of(ld, n, kp, q->what, &sc))
        return -1;
    q->format(lo, a, sizeof(a));
    q->format(hi, b, sizeof(b));
    if (q->parse(sc.value, &v) < 0)
        report(ld, n, kp, "invalid %s %s (expected %s)", q->noun, describe(n, buf, sizeof(buf)),
               q->expected);
    else if ((v < lo && !(zero_ok && v == 0)) || v > hi) {
        if (hi == INT64_MAX)
            report(ld, n, kp, "must be %sat least %s (got %s)", zero_ok ? "0 or " : "", a, sc.raw);
        else
            report(ld, n, kp, "must be %sbetween %s and %s (got %s)", zero_ok ? "0 or " : "", a, b,
                   sc.raw);
    } else {
        *out = v;
        ret = 1;
    }
    free(sc.value);
    return ret;
}

static int get_duration(loader *ld, ynode *map, const char *mpath, const char *key, int64_t lo,
                        int64_t hi, bool zero_ok, int64_t *out)
{
    return get_quantity(ld, map, mpath, key, &duration_q, lo, hi, zero_ok, out);
}

static int get_size(loader *ld, ynode *map, const char *mpath, const char *key, int64_t lo,
                    int64_t hi, int64_t *out)
{
    return get_quantity(ld, map, mpath, key, &size_q, lo, hi, false, out);
}

/* Matches a scalar against a word list; unknown words get a did-you-mean. */
static int match_word(loader *ld, ynode *n, const char *kp, const char *subject,
                      const char *const *names, size_t n_names, int *out)
{
    char buf[64];
    scalar sc;
    const char *hint;
    int ret = -1;

    if (!scalar_of(ld, n, kp, "a word", &sc))
        return -1;
    for (size_t i = 0; i < n_names; i++) {
        if (!strcmp(sc.value, names[i])) {
            *out = (int)i;
            ret = 1;
            goto out;
        }
    }
    hint = did_you_mean(sc.value, names, n_names);
    if (hint) {
        report(ld, n, kp, "unknown %s %s (did you mean \"%s\"?)", subject,
               describe(n, buf, sizeof(buf)), hint);
    } else {
        strbuf b = {0};

        join_names(&b, names, n_names, ", ");
        report(ld, n, kp, "unknown %s %s (expected one of: %s)", subject,
               describe(n, buf, sizeof(buf)), b.s ? b.s : "");
        sb_release(&b);
    }
out:
    free(sc.value);
    return ret;
}

static int get_enum(loader *ld, ynode *map, const char *mpath, const char *key,
                    const char *const *names, size_t n_names, int *out)
{
    ynode *n = map_get(map, key);
    char kp[KEYPATH_MAX];

    if (!n)
        return 0;
    path_key(kp, mpath, key);
    return match_word(ld, n, kp, "value", names, n_names, out);
}

/* ---- lists ---- */

/* Checks a list's kind and length; with single, a lone scalar counts as a list of one. */
static bool check_list(loader *ld, ynode *n, const char *path, bool single, size_t min, size_t max,
                       const char *what, size_t *ret_n)
{
    char buf[64];
    size_t count;

    if (single && pd_yaml_node_kind(n) == PD_YAML_SCALAR) {
        *ret_n = 1;
        return true;
    }
    if (pd_yaml_node_kind(n) != PD_YAML_LIST) {
        report(ld, n, path, "expected a list of %s, got %s", what, describe(n, buf, sizeof(buf)));
        return false;
    }
    count = pd_yaml_node_size(n);
    if (count == 0 && min > 0) {
        report(ld, n, path, "must not be empty");
        return false;
    }
    if (count < min) {
        report(ld, n, path, "needs at least %zu items, has %zu", min, count);
        return false;
    }
    if (count > max) {
        report(ld, n, path, "has %zu items, at most %zu are allowed", count, max);
        return false;
    }
    *ret_n = count;
    return true;
}

static ynode *list_at(ynode *n, size_t i)
{
    return pd_yaml_node_kind(n) == PD_YAML_LIST ? pd_yaml_node_item(n, i) : n;
}

/* ------------------------------------------------------------------------------------------ */
/* secrets */

/* Secret-looking property names: their values may not be written in the file. */
static bool secret_name(const char *key)
{
    return strcasestr(key, "password") || strcasestr(key, "secret");
}

/* Reads all of fd into a new buffer with room for a NUL, refusing more than max bytes
 * (EFBIG). Returns 0 or -errno; on failure nothing is allocated. */
static int read_bounded(int fd, size_t max, char **ret_buf, size_t *ret_len)
{
    char *buf = malloc(max + 1);
    size_t len = 0;
    ssize_t got;

    if (!buf)
        return -ENOMEM;
    do {
        got = read(fd, buf + len, max + 1 - len);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            int err = errno;
            explicit_bzero(buf, len); /* it may be a secret */
            free(buf);
            return -err;
        }
        len += (size_t)got;
    } while (got > 0 && len <= max);
    if (len > max) {
        explicit_bzero(buf, max + 1);
        free(buf);
        return -EFBIG;
    }
    *ret_buf = buf;
    *ret_len = len;
    return 0;
}

/* Reads a *_file secret: the whole file, one trailing newline stripped. Relative paths start at
 * the config file's directory, so a unit file's working directory does not matter. */
static int read_secret_file(loader *ld, const char *file, char **ret, int *ret_errno)
{
    char *full = NULL, *buf = NULL;
    const char *open_path = file;
    size_t len = 0;
    int fd, err = 0;

    if (file[0] != '/' && ld->base_dir) {
        if (asprintf(&full, "%s/%s", ld->base_dir, file) < 0) {
            ld->oom = true;
            return -ENOMEM;
        }
        open_path = full;
    }
    fd = open(open_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        err = errno;
        goto out_free_path;
    }
    err = -read_bounded(fd, MAX_SECRET_BYTES, &buf, &len);
    if (err)
        goto out_close;
    if (len && buf[len - 1] == '\n')
        len--;
    if (len && buf[len - 1] == '\r')
        len--;
    buf[len] = '\0';

out_close:
    close(fd);
out_free_path:
    free(full);
    if (err) { /* read_bounded() left nothing allocated */
        *ret_errno = err;
        return -err;
    }
    *ret = buf;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* kafka: */

static const char *const kafka_keys[] = {"brokers",    "topics",     "group", "start",
                                         "poll_batch", "properties", NULL};

/* Properties propensityd sets itself; a second source would be ambiguous or break the
 * "commit only after redis acknowledged" rule. */
static const struct {
    const char *name;
    const char *why;
} managed_properties[] = {
    {"bootstrap.servers", "set it with kafka.brokers"},
    {"metadata.broker.list", "set it with kafka.brokers"},
    {"group.id", "set it with kafka.group"},
    {"auto.offset.reset", "set it with kafka.start"},
    {"enable.auto.commit", "offsets are committed by propensityd after redis acknowledged"},
    {"enable.auto.offset.store", "offsets are committed by propensityd after redis acknowledged"},
};

static void load_property(loader *ld, ynode *map, size_t i, const char *mpath, pd_kv *kv, bool *ok)
{
    ynode *k = pd_yaml_node_key(map, i), *v = pd_yaml_node_value(map, i);
    const char *key = pd_yaml_node_text(k);
    size_t key_len = strlen(key);
    bool from_file = key_len > 5 && !strcmp(key + key_len - 5, "_file");
    char kp[KEYPATH_MAX], base[KEYPATH_MAX], ebuf[128];
    scalar sc;

    *ok = false;
    path_key(kp, mpath, key);
    snprintf(base, sizeof(base), "%.*s", (int)(from_file ? key_len - 5 : key_len), key);
    for (size_t j = 0; j < ARRAY_SIZE(managed_properties); j++) {
        if (!strcmp(base, managed_properties[j].name)) {
            report(ld, k, kp, "not allowed here: %s", managed_properties[j].why);
            return;
        }
    }
    if (from_file && map_find(map, base) >= 0) {
        report(ld, k, kp, "conflicts with \"%s\" (give one or the other)", base);
        return;
    }
    if (pd_yaml_node_kind(v) == PD_YAML_NULL) {
        report(ld, v, kp, "a value is required");
        return;
    }
    if (!scalar_of(ld, v, kp, "a scalar", &sc))
        return;
    if (from_file) {
        char *contents = NULL;
        int err = 0;

        if (read_secret_file(ld, sc.value, &contents, &err) < 0) {
            report(ld, v, kp, "cannot read \"%s\": %s", sc.value,
                   err == EFBIG ? "larger than 64KiB" : errno_text(err, ebuf, sizeof(ebuf)));
            free(sc.value);
            return;
        }
        free(sc.value);
        sc.value = contents;
    } else if (secret_name(base) && !sc.env_whole) {
        report(ld, v, kp, "secrets must come from ${ENV} or \"%s_file\", not the file body", base);
        free_secret(sc.value);
        return;
    }
    kv->key = dup_str(ld, base);
    kv->value = sc.value;
    /* Anything that came from outside the file may be a credential the name does not betray. */
    kv->secret = from_file || sc.env || secret_name(base);
    pos_of(ld, k, &kv->pos);
    *ok = true;
}

static void load_properties(loader *ld, ynode *map, pd_kafka_conf *kafka)
{
    const char *mpath = "kafka.properties";
    size_t n = pd_yaml_node_size(map);

    if (!check_map(ld, map, mpath, NULL) || !n)
        return;
    kafka->properties = alloc_array(ld, n, sizeof(pd_kv));
    if (!kafka->properties)
        return;
    for (size_t i = 0; i < n; i++) {
        bool ok;

        if (!key_to_read(map, i))
            continue; /* reported by check_map */
        load_property(ld, map, i, mpath, &kafka->properties[kafka->n_properties], &ok);
        if (ok)
            kafka->n_properties++;
    }
}

/* Fills a list of unique strings (topics); names are checked by check_name when given. */
static void load_string_list(loader *ld, ynode *n, const char *path, bool single, size_t min,
                             size_t max, bool (*check_name)(const char *), const char *name_rule,
                             char ***ret, size_t *ret_n)
{
    char kp[KEYPATH_MAX];
    size_t count;
    char **list;

    if (!check_list(ld, n, path, single, min, max, "strings", &count))
        return;
    list = alloc_array(ld, count, sizeof(char *));
    if (!list)
        return;
    *ret = list;
    *ret_n = 0;
    for (size_t i = 0; i < count; i++) {
        ynode *item = list_at(n, i);
        char buf[64];
        scalar sc;
        bool dup = false;

        if (pd_yaml_node_kind(n) == PD_YAML_LIST)
            path_index(kp, path, i);
        else
            snprintf(kp, sizeof(kp), "%s", path);
        if (!scalar_of(ld, item, kp, "a string", &sc))
            continue;
        if (!*sc.value) {
            report(ld, item, kp, "must not be empty");
            free(sc.value);
            continue;
        }
        if (check_name && !check_name(sc.value)) {
            report(ld, item, kp, "invalid name %s (%s)", describe(item, buf, sizeof(buf)),
                   name_rule);
            free(sc.value);
            continue;
        }
        for (size_t j = 0; j < *ret_n && !dup; j++)
            dup = !strcmp(list[j], sc.value);
        if (dup) {
            report(ld, item, kp, "%s is listed twice", describe(item, buf, sizeof(buf)));
            free(sc.value);
            continue;
        }
        list[(*ret_n)++] = sc.value;
    }
}

static void load_kafka(loader *ld, ynode *map)
{
    pd_kafka_conf *kafka = &ld->conf->kafka;
    const char *mp = "kafka";
    int start = PD_START_EARLIEST;

    if (!check_map(ld, map, mp, kafka_keys))
        return;
    if (need(ld, map, mp, "brokers"))
        get_string(ld, map, mp, "brokers", true, &kafka->brokers);
    if (need(ld, map, mp, "topics"))
        load_string_list(ld, map_get(map, "topics"), "kafka.topics", true, 1, MAX_TOPICS, NULL,
                         NULL, &kafka->topics, &kafka->n_topics);
    if (need(ld, map, mp, "group"))
        get_string(ld, map, mp, "group", true, &kafka->group);
    if (get_enum(ld, map, mp, "start", start_names, ARRAY_SIZE(start_names), &start) > 0)
        kafka->start = (pd_start_position)start;
    get_int(ld, map, mp, "poll_batch", 1, 100000, &kafka->poll_batch);
    load_properties(ld, map_get(map, "properties"), kafka);
}

/* ------------------------------------------------------------------------------------------ */
/* redis: */

static const char *const redis_keys[] = {"url",          "username", "password", "password_file",
                                         "db",           "prefix",   "ttl",      "flush_interval",
                                         "max_pipeline", "timeout",  NULL};

#define REDIS_URL_FORMS "redis://[user[:password]@]host[:port][/db] or unix:///path[?db=N]"

typedef struct redis_url {
    char *host, *unix_path, *user, *password;
    int port, db;
    bool has_db;
    size_t pw_at, pw_len; /* where the password sits in the url text, for redaction */
} redis_url;

static void redis_url_release(redis_url *u)
{
    free(u->host);
    free(u->unix_path);
    free(u->user);
    free_secret(u->password);
}

static int hex_value(char c)
{
    if (isdigit((unsigned char)c))
        return c - '0';
    c = (char)tolower((unsigned char)c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* %XX-decodes s[0..len); NULL on a bad escape or out of memory (*bad tells which). */
static char *percent_decode(const char *s, size_t len, bool *bad)
{
    char *out = malloc(len + 1);
    size_t o = 0;

    if (!out)
        return NULL;
    for (size_t i = 0; i < len; i++) {
        if (s[i] != '%') {
            out[o++] = s[i];
            continue;
        }
        int hi = i + 2 < len ? hex_value(s[i + 1]) : -1;
        int lo = i + 2 < len ? hex_value(s[i + 2]) : -1;

        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
            *bad = true;
            explicit_bzero(out, len + 1);
            free(out);
            return NULL;
        }
        out[o++] = (char)(hi * 16 + lo);
        i += 2;
    }
    out[o] = '\0';
    return out;
}

static bool parse_port(const char *s, size_t len, int *ret)
{
    int64_t v = 0;

    if (!len || len > 5)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (!isdigit((unsigned char)s[i]))
            return false;
        v = v * 10 + (s[i] - '0');
    }
    if (v < 1 || v > 65535)
        return false;
    *ret = (int)v;
    return true;
}

static bool parse_db(const char *s, size_t len, int *ret)
{
    int64_t v = 0;

    if (!len || len > 9)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (!isdigit((unsigned char)s[i]))
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *ret = (int)v;
    return true;
}

/* Splits "host", "host:port", "[v6]" or "[v6]:port"; port keeps its value when absent. */
static const char *split_host_port(const char *s, size_t len, char **ret_host, int *port)
{
    const char *host = s, *colon;
    size_t host_len;

    if (len && s[0] == '[') {
        const char *close = memchr(s, ']', len);

        if (!close || close == s + 1)
            return "bad IPv6 address";
        host = s + 1;
        host_len = (size_t)(close - host);
        colon = close + 1 < s + len ? close + 1 : NULL;
        if (colon && *colon != ':')
            return "bad IPv6 address";
    } else {
        colon = memchr(s, ':', len);
        host_len = colon ? (size_t)(colon - s) : len;
    }
    if (!host_len)
        return "missing host";
    if (colon && !parse_port(colon + 1, (size_t)(s + len - colon - 1), port))
        return "port must be a number from 1 to 65535";
    *ret_host = strndup(host, host_len);
    return *ret_host ? NULL : "out of memory";
}

/* Returns NULL or what is wrong; never quotes the url, which may hold a password. */
static const char *parse_redis_url(const char *url, redis_url *u)
{
    bool bad = false;

    u->port = 6379;
    if (!strncmp(url, "unix://", 7)) {
        const char *path = url + 7, *q = strchr(path, '?');
        size_t path_len = q ? (size_t)(q - path) : strlen(path);

        if (path[0] != '/' || path_len < 2)
            return "unix socket path must be absolute";
        if (q) {
            if (strncmp(q, "?db=", 4) || !parse_db(q + 4, strlen(q + 4), &u->db))
                return "the only query is ?db=N";
            u->has_db = true;
        }
        u->port = 0;
        u->unix_path = strndup(path, path_len);
        return u->unix_path ? NULL : "out of memory";
    }
    if (strncmp(url, "redis://", 8))
        return "unknown scheme";
    const char *auth = url + 8, *at = NULL, *slash, *end = auth + strlen(auth);

    /* The last '@' ends the credentials: an unencoded '@' in a password still parses. */
    for (const char *p = auth; *p; p++)
        if (*p == '@')
            at = p;
    const char *hostport = at ? at + 1 : auth;
    slash = strchr(hostport, '/');
    if (strchr(hostport, '?'))
        return "query parameters are not supported";
    if (at) {
        const char *colon = memchr(auth, ':', (size_t)(at - auth));
        size_t user_len = colon ? (size_t)(colon - auth) : (size_t)(at - auth);

        if (user_len) {
            u->user = percent_decode(auth, user_len, &bad);
            if (!u->user)
                return bad ? "bad %-escape in the user name" : "out of memory";
        }
        if (colon && at > colon + 1) {
            u->pw_at = (size_t)(colon + 1 - url);
            u->pw_len = (size_t)(at - colon - 1);
            u->password = percent_decode(colon + 1, u->pw_len, &bad);
            if (!u->password)
                return bad ? "bad %-escape in the password" : "out of memory";
        }
    }
    const char *err =
        split_host_port(hostport, slash ? (size_t)(slash - hostport) : (size_t)(end - hostport),
                        &u->host, &u->port);
    if (err)
        return err;
    if (slash && slash[1]) {
        if (!parse_db(slash + 1, strlen(slash + 1), &u->db))
            return "the path must be a database number";
        u->has_db = true;
    }
    return NULL;
}

/* The url as kept in the config: with the password blanked, so printing it is safe. */
static char *redact_url(loader *ld, const char *url, const redis_url *u)
{
    strbuf b = {0};
    char *s;

    if (!u->password)
        return dup_str(ld, url);
    sb_add(&b, url, u->pw_at);
    sb_puts(&b, "****");
    sb_puts(&b, url + u->pw_at + u->pw_len);
    s = sb_take(&b);
    if (!s)
        ld->oom = true;
    return s;
}

static void load_redis_url(loader *ld, ynode *map, pd_redis_conf *redis)
{
    ynode *n = map_get(map, "url");
    redis_url u = {0};
    const char *err;
    scalar sc = {0};

    if (n) {
        if (!scalar_of(ld, n, "redis.url", "a string", &sc))
            return;
    } else {
        sc.value = dup_str(ld, "redis://127.0.0.1:6379/0");
        if (!sc.value)
            return;
    }
    err = parse_redis_url(sc.value, &u);
    if (err) {
        report(ld, n, "redis.url", "invalid url: %s (expected " REDIS_URL_FORMS ")", err);
        goto out;
    }
    if (u.password && !sc.env_whole) {
        report(ld, n, "redis.url",
               "secrets must come from ${ENV} or \"password_file\", not the file body");
        goto out;
    }
    free(redis->url);
    redis->url = redact_url(ld, sc.value, &u);
    redis->host = u.host;
    redis->unix_path = u.unix_path;
    redis->port = u.port;
    redis->db = u.db;
    redis->username = u.user;
    redis->password = u.password;
    u = (redis_url){0};

out:
    redis_url_release(&u);
    free_secret(sc.value);
}

static void load_redis(loader *ld, ynode *map)
{
    pd_redis_conf *redis = &ld->conf->redis;
    const char *mp = "redis";
    char *password = NULL, *username = NULL;
    ynode *n;

    if (!check_map(ld, map, mp, redis_keys))
        return;
    load_redis_url(ld, map, redis);
    if (get_string(ld, map, mp, "username", false, &username) > 0) {
        free(redis->username);
        redis->username = username;
    }
    if ((n = map_get(map, "password"))) {
        scalar sc;

        if (map_get(map, "password_file")) {
            report(ld, map_key(map, "password_file"), "redis.password_file",
                   "conflicts with \"password\" (give one or the other)");
        } else if (scalar_of(ld, n, "redis.password", "a string", &sc)) {
            if (!sc.env_whole) {
                report(ld, n, "redis.password",
                       "secrets must come from ${ENV} or \"password_file\", not the file body");
                free_secret(sc.value);
            } else {
                password = sc.value;
            }
        }
    } else if ((n = map_get(map, "password_file"))) {
        char *file = NULL, ebuf[128];
        int err = 0;

        if (get_string(ld, map, mp, "password_file", true, &file) > 0 &&
            read_secret_file(ld, file, &password, &err) < 0)
            report(ld, n, "redis.password_file", "cannot read \"%s\": %s", file,
                   err == EFBIG ? "larger than 64KiB" : errno_text(err, ebuf, sizeof(ebuf)));
        free(file);
    }
    if (password && *password) {
        free_secret(redis->password);
        redis->password = password;
    } else {
        free_secret(password);
    }
    get_int32(ld, map, mp, "db", 0, INT_MAX, &redis->db);
    if (get_string(ld, map, mp, "prefix", true, &redis->prefix) > 0 &&
        !valid_redis_token(redis->prefix)) {
        char buf[64];

        report(ld, map_get(map, "prefix"), "redis.prefix",
               "invalid prefix %s (use letters, digits and _ . : -)",
               describe(map_get(map, "prefix"), buf, sizeof(buf)));
    }
    get_duration(ld, map, mp, "ttl", MS_PER_S, INT64_MAX, false, &redis->ttl_ms);
    get_duration(ld, map, mp, "flush_interval", 1, 10 * MS_PER_S, false, &redis->flush_interval_ms);
    get_int(ld, map, mp, "max_pipeline", 1, 100000, &redis->max_pipeline);
    get_duration(ld, map, mp, "timeout", 10, 60 * MS_PER_S, false, &redis->timeout_ms);
}

/* ------------------------------------------------------------------------------------------ */
/* events: */

static const char *const events_keys[] = {
    "fields", "types", "forget_type", "max_message_bytes", "max_string_length", "dead_letter_topic",
    NULL};
static const char *const field_keys[] = {"event_id", "user",  "item", "type",
                                         "time",     "value", "text", NULL};

static bool valid_type_name(const char *s)
{
    return valid_name(s) && strcmp(s, "any") != 0;
}

static int get_json_path(loader *ld, ynode *map, const char *mpath, const char *key, char **out)
{
    char *v = NULL, kp[KEYPATH_MAX], buf[64];
    int ret = get_string(ld, map, mpath, key, true, &v);

    if (ret <= 0)
        return ret;
    if (!valid_json_path(v)) {
        path_key(kp, mpath, key);
        report(ld, map_get(map, key), kp,
               "invalid JSON path %s (expected dot-separated names such as context.device)",
               describe(map_get(map, key), buf, sizeof(buf)));
        free(v);
        return -1;
    }
    free(*out);
    *out = v;
    return 1;
}

/* An event type by name; "any" gives -1 when allowed. Unknown names get a did-you-mean. */
static int resolve_type(loader *ld, ynode *n, const char *kp, bool allow_any, int *out)
{
    const pd_events_conf *ev = &ld->conf->events;
    const char *names[PD_MAX_EVENT_TYPES + 1];
    size_t n_names = 0;
    int found;

    if (!ld->types_ok) {
        /* events.types is broken and already reported; a second message would be noise */
        return -1;
    }
    for (size_t i = 0; i < ev->n_types; i++)
        names[n_names++] = ev->types[i];
    if (allow_any)
        names[n_names++] = "any";
    if (match_word(ld, n, kp, "event type", names, n_names, &found) < 0)
        return -1;
    *out = allow_any && (size_t)found == ev->n_types ? -1 : found;
    return 0;
}

static void load_events(loader *ld, ynode *map)
{
    pd_events_conf *ev = &ld->conf->events;
    const char *mp = "events";
    ynode *fields;
    size_t errors;

    if (!check_map(ld, map, mp, events_keys))
        return;
    fields = map_get(map, "fields");
    if (check_map(ld, fields, "events.fields", field_keys)) {
        char **slots[] = {&ev->field_event_id, &ev->field_user,  &ev->field_item, &ev->field_type,
                          &ev->field_time,     &ev->field_value, &ev->field_text};

        for (size_t i = 0; i < ARRAY_SIZE(slots); i++)
            get_json_path(ld, fields, "events.fields", field_keys[i], slots[i]);
    }
    errors = ld->errors;
    if (need(ld, map, mp, "types")) {
        load_string_list(ld, map_get(map, "types"), "events.types", false, 1, PD_MAX_EVENT_TYPES,
                         valid_type_name,
                         "use lowercase letters, digits and _; \"any\" is reserved", &ev->types,
                         &ev->n_types);
        ld->types_ok = ev->types && errors == ld->errors;
    }
    if (map_get(map, "forget_type"))
        resolve_type(ld, map_get(map, "forget_type"), "events.forget_type", false,
                     &ev->forget_type);
    get_size(ld, map, mp, "max_message_bytes", 64, INT64_C(16) << 20, &ev->max_message_bytes);
    get_int(ld, map, mp, "max_string_length", 1, 65536, &ev->max_string_length);
    /* checked against kafka.topics in load_root, once those are read */
    get_string(ld, map, mp, "dead_letter_topic", false, &ev->dead_letter_topic);
}

/* ------------------------------------------------------------------------------------------ */
/* features: */

static const char *const feature_keys[] = {
    "categorical", "numeric",        "cross",        "text",       "recency",    "decayed_count",
    "spend",       "distinct_items", "recent_items", "vocabulary", "transforms", "standardize",
    "buckets",     "bigrams",        "max_tokens",   "half_life",  NULL};

#define KIND_BIT(k) (1u << (k))
#define NUMERIC_KINDS                                                                              \
    (KIND_BIT(PD_FEAT_NUMERIC) | KIND_BIT(PD_FEAT_RECENCY) | KIND_BIT(PD_FEAT_DECAYED_COUNT) |     \
     KIND_BIT(PD_FEAT_SPEND) | KIND_BIT(PD_FEAT_DISTINCT_ITEMS))

/* Which kinds each non-kind key applies to. */
static const struct {
    const char *key;
    unsigned kinds;
} feature_key_kinds[] = {
    {"vocabulary", KIND_BIT(PD_FEAT_CATEGORICAL)},
    {"transforms", NUMERIC_KINDS},
    {"standardize", NUMERIC_KINDS},
    {"buckets", NUMERIC_KINDS},
    {"bigrams", KIND_BIT(PD_FEAT_TEXT)},
    {"max_tokens", KIND_BIT(PD_FEAT_TEXT)},
    {"half_life", KIND_BIT(PD_FEAT_DECAYED_COUNT) | KIND_BIT(PD_FEAT_SPEND)},
};

static int feature_kind_of(const char *key)
{
    for (size_t i = 0; i < ARRAY_SIZE(feature_kind_names); i++)
        if (!strcmp(key, feature_kind_names[i]))
            return (int)i;
    return -1;
}

/* What the loader needs beyond pd_feature_conf while features are read in file order. */
typedef struct feature_src {
    ynode *cross; /* the cross: list, resolved once every name is known */
    const char *path_name;
} feature_src;

static void load_transforms(loader *ld, ynode *n, const char *path, pd_feature_conf *f)
{
    char kp[KEYPATH_MAX], cp[KEYPATH_MAX], buf[64];
    size_t count;

    if (!check_list(ld, n, path, false, 0, MAX_TRANSFORMS, "transforms", &count) || !count)
        return;
    f->transforms = alloc_array(ld, count, sizeof(pd_transform));
    if (!f->transforms)
        return;
    for (size_t i = 0; i < count; i++) {
        ynode *item = pd_yaml_node_item(n, i), *word = item, *bounds = NULL;
        pd_transform t = {0};
        int kind;

        path_index(kp, path, i);
        if (pd_yaml_node_kind(item) == PD_YAML_MAP) {
            if (pd_yaml_node_size(item) != 1) {
                report(ld, item, kp, "expected one transform such as {clip: [lo, hi]}");
                continue;
            }
            word = pd_yaml_node_key(item, 0);
            bounds = pd_yaml_node_value(item, 0);
        } else if (pd_yaml_node_kind(item) != PD_YAML_SCALAR) {
            report(ld, item, kp, "expected a transform (log1p or {clip: [lo, hi]}), got %s",
                   describe(item, buf, sizeof(buf)));
            continue;
        }
        if (match_word(ld, word, kp, "transform", transform_names, ARRAY_SIZE(transform_names),
                       &kind) < 0)
            continue;
        t.kind = (pd_transform_kind)kind;
        if (t.kind == PD_TF_LOG1P && bounds) {
            report(ld, bounds, kp, "log1p takes no arguments");
            continue;
        }
        if (t.kind == PD_TF_CLIP) {
            double v[2];
            bool ok = true;

            if (!bounds) {
                report(ld, item, kp, "clip needs bounds: {clip: [lo, hi]}");
                continue;
            }
            path_key(cp, kp, "clip");
            if (pd_yaml_node_kind(bounds) != PD_YAML_LIST || pd_yaml_node_size(bounds) != 2) {
                report(ld, bounds, cp, "expected [lo, hi], got %s",
                       describe(bounds, buf, sizeof(buf)));
                continue;
            }
            for (size_t j = 0; j < 2; j++) {
                ynode *b = pd_yaml_node_item(bounds, j);
                char bp[KEYPATH_MAX];
                scalar sc;

                path_index(bp, cp, j);
                if (!scalar_of(ld, b, bp, "a number", &sc)) {
                    ok = false;
                    continue;
                }
                if (!parse_double(sc.value, &v[j])) {
                    report(ld, b, bp, "expected a number, got %s", describe(b, buf, sizeof(buf)));
                    ok = false;
                }
                free(sc.value);
            }
            if (!ok)
                continue;
            if (v[0] >= v[1]) {
                report(ld, bounds, cp, "lower bound %g must be below upper bound %g", v[0], v[1]);
                continue;
            }
            t.lo = v[0];
            t.hi = v[1];
        }
        f->transforms[f->n_transforms++] = t;
    }
}

static void load_buckets(loader *ld, ynode *n, const char *path, pd_feature_conf *f)
{
    char kp[KEYPATH_MAX], buf[64];
    size_t count;
    double *b;

    if (!check_list(ld, n, path, false, 1, PD_MAX_BUCKETS, "numbers", &count))
        return;
    b = alloc_array(ld, count, sizeof(double));
    if (!b)
        return;
    size_t ok = 0;
    for (size_t i = 0; i < count; i++) {
        ynode *item = pd_yaml_node_item(n, i);
        scalar sc;
        double v;

        path_index(kp, path, i);
        if (!scalar_of(ld, item, kp, "a number", &sc))
            continue;
        if (!parse_double(sc.value, &v)) {
            report(ld, item, kp, "expected a number, got %s", describe(item, buf, sizeof(buf)));
        } else if (ok && v <= b[ok - 1]) {
            report(ld, item, kp, "buckets must be strictly ascending (%g after %g)", v, b[ok - 1]);
        } else {
            b[ok++] = v;
        }
        free(sc.value);
    }
    f->buckets = b;
    f->n_buckets = ok;
}

/* Reads one feature definition, all but its cross references. */
static void load_feature(loader *ld, ynode *def, const char *path, pd_feature_conf *f,
                         feature_src *src)
{
    char kp[KEYPATH_MAX];
    int kind = -1;
    ynode *kind_key = NULL, *kv;

    f->event_type = -1;
    for (size_t i = 0; i < PD_MAX_CROSS; i++)
        f->cross[i] = -1;
    f->kind = PD_FEAT_CATEGORICAL;
    if (!check_map(ld, def, path, feature_keys))
        return;
    for (size_t i = 0; i < pd_yaml_node_size(def); i++) {
        ynode *k = pd_yaml_node_key(def, i);
        int k_kind;

        if (!key_to_read(def, i) || (k_kind = feature_kind_of(pd_yaml_node_text(k))) < 0)
            continue;
        if (kind < 0) {
            kind = k_kind;
            kind_key = k;
            continue;
        }
        path_key(kp, path, pd_yaml_node_text(k));
        report(ld, k, kp, "a feature has exactly one kind (\"%s\" is already given)",
               feature_kind_names[kind]);
    }
    if (kind < 0) {
        strbuf b = {0};

        join_names(&b, feature_kind_names, ARRAY_SIZE(feature_kind_names), " or ");
        report(ld, def, path, "needs a kind: %s", b.s ? b.s : "");
        sb_release(&b);
        return;
    }
    f->kind = (pd_feature_kind)kind;
    for (size_t i = 0; i < pd_yaml_node_size(def); i++) {
        ynode *k = pd_yaml_node_key(def, i);

        if (!key_to_read(def, i))
            continue;
        for (size_t j = 0; j < ARRAY_SIZE(feature_key_kinds); j++) {
            if (strcmp(pd_yaml_node_text(k), feature_key_kinds[j].key) ||
                (feature_key_kinds[j].kinds & KIND_BIT(kind)))
                continue;
            const char *names[ARRAY_SIZE(feature_kind_names)];
            size_t n = 0;
            strbuf b = {0};

            for (size_t m = 0; m < ARRAY_SIZE(feature_kind_names); m++)
                if (feature_key_kinds[j].kinds & KIND_BIT(m))
                    names[n++] = feature_kind_names[m];
            join_names(&b, names, n, " and ");
            path_key(kp, path, pd_yaml_node_text(k));
            report(ld, k, kp, "applies to %s features, not %s", b.s ? b.s : "",
                   feature_kind_names[kind]);
            sb_release(&b);
        }
    }
    path_key(kp, path, pd_yaml_node_text(kind_key));
    kv = map_get(def, pd_yaml_node_text(kind_key));
    if (!kv) {
        report(ld, pd_yaml_node_value(def, (size_t)map_find(def, pd_yaml_node_text(kind_key))), kp,
               "a value is required");
        return;
    }
    switch (f->kind) {
    case PD_FEAT_CATEGORICAL:
    case PD_FEAT_NUMERIC:
    case PD_FEAT_TEXT:
        get_json_path(ld, def, path, feature_kind_names[kind], &f->field);
        break;
    case PD_FEAT_CROSS:
        src->cross = kv;
        break;
    case PD_FEAT_RECENCY:
    case PD_FEAT_DECAYED_COUNT:
    case PD_FEAT_SPEND:
    case PD_FEAT_DISTINCT_ITEMS:
        resolve_type(ld, kv, kp, true, &f->event_type);
        break;
    case PD_FEAT_RECENT_ITEMS:
        get_int(ld, def, path, "recent_items", 1, MAX_RECENT_ITEMS, &f->count);
        break;
    }
    if (f->kind == PD_FEAT_CATEGORICAL)
        get_int(ld, def, path, "vocabulary", 1, INT64_MAX, &f->vocabulary);
    if (f->kind == PD_FEAT_TEXT) {
        f->max_tokens = 64;
        get_bool(ld, def, path, "bigrams", &f->bigrams);
        get_int(ld, def, path, "max_tokens", 1, 1024, &f->max_tokens);
    }
    if (f->kind == PD_FEAT_DECAYED_COUNT) {
        if (need(ld, def, path, "half_life"))
            get_duration(ld, def, path, "half_life", MS_PER_S, INT64_MAX, false, &f->half_life_ms);
    }
    if (f->kind == PD_FEAT_SPEND)
        get_duration(ld, def, path, "half_life", MS_PER_S, INT64_MAX, true, &f->half_life_ms);
    if (KIND_BIT(kind) & NUMERIC_KINDS) {
        path_key(kp, path, "transforms");
        if (map_get(def, "transforms"))
            load_transforms(ld, map_get(def, "transforms"), kp, f);
        get_bool(ld, def, path, "standardize", &f->standardize);
        path_key(kp, path, "buckets");
        if (map_get(def, "buckets")) {
            load_buckets(ld, map_get(def, "buckets"), kp, f);
            if (f->standardize) {
                path_key(kp, path, "standardize");
                report(ld, map_key(def, "standardize"), kp,
                       "cannot be combined with buckets (buckets one-hot the raw value)");
            }
        }
    }
}

/* Resolves a cross's names once every feature is known; crosses sit after their parts. */
/* "undefined feature" with a did-you-mean among the features defined so far. */
static void report_undefined_feature(loader *ld, ynode *item, const char *kp, const char *name)
{
    const pd_config *conf = ld->conf;
    const char **names = alloc_array(ld, conf->n_features, sizeof(char *));
    const char *hint = NULL;
    char buf[64];

    if (names) {
        for (size_t j = 0; j < conf->n_features; j++)
            names[j] = conf->features[j].name ? conf->features[j].name : "";
        hint = did_you_mean(name, names, conf->n_features);
    }
    if (hint)
        report(ld, item, kp, "undefined feature %s (did you mean \"%s\"?)",
               describe(item, buf, sizeof(buf)), hint);
    else
        report(ld, item, kp, "undefined feature %s", describe(item, buf, sizeof(buf)));
    free(names);
}

static void resolve_cross(loader *ld, pd_feature_conf *f, ynode *n, const char *path)
{
    const pd_config *conf = ld->conf;
    char kp[KEYPATH_MAX], buf[64];
    size_t count;

    if (!check_list(ld, n, path, false, 2, PD_MAX_CROSS, "feature names", &count))
        return;
    for (size_t i = 0; i < count; i++) {
        ynode *item = pd_yaml_node_item(n, i);
        scalar sc;
        int idx;
        bool dup = false;

        path_index(kp, path, i);
        if (!scalar_of(ld, item, kp, "a feature name", &sc))
            continue;
        idx = pd_config_feature_index(conf, sc.value);
        for (size_t j = 0; j < f->n_cross && !dup; j++)
            dup = idx >= 0 && f->cross[j] == idx;
        if (idx < 0) {
            report_undefined_feature(ld, item, kp, sc.value);
        } else if (conf->features[idx].kind == PD_FEAT_CROSS) {
            report(ld, item, kp, "%s is a cross; a cross cannot include another cross",
                   describe(item, buf, sizeof(buf)));
        } else if (dup) {
            report(ld, item, kp, "%s is listed twice", describe(item, buf, sizeof(buf)));
        } else {
            f->cross[f->n_cross++] = idx;
        }
        free(sc.value);
    }
}

static void load_features(loader *ld, ynode *map)
{
    pd_config *conf = ld->conf;
    size_t n = pd_yaml_node_size(map), m = 0, out = 0;
    pd_feature_conf *tmp = NULL;
    feature_src *src = NULL, *final_src = NULL;
    char path[KEYPATH_MAX], buf[64];

    if (!check_map(ld, map, "features", NULL) || !n)
        return;
    tmp = alloc_array(ld, n, sizeof(*tmp));
    src = alloc_array(ld, n, sizeof(*src));
    final_src = alloc_array(ld, n, sizeof(*final_src));
    conf->features = alloc_array(ld, n, sizeof(*conf->features));
    if (!tmp || !src || !final_src || !conf->features)
        goto out_free;
    for (size_t i = 0; i < n; i++) {
        ynode *k = pd_yaml_node_key(map, i);
        const char *name = pd_yaml_node_text(k);

        if (!key_to_read(map, i))
            continue;
        path_key(path, "features", name);
        if (!valid_name(name)) {
            report(ld, k, path, "invalid feature name %s (use lowercase letters, digits and _)",
                   describe(k, buf, sizeof(buf)));
            continue;
        }
        tmp[m].name = dup_str(ld, name);
        pos_of(ld, k, &tmp[m].pos);
        load_feature(ld, pd_yaml_node_value(map, i), path, &tmp[m], &src[m]);
        src[m].path_name = name;
        m++;
    }
    /* Parts before crosses, each group in file order: every cross index is below its own. */
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < m; i++) {
            if ((tmp[i].kind == PD_FEAT_CROSS) != (pass == 1))
                continue;
            conf->features[out] = tmp[i];
            final_src[out] = src[i];
            out++;
        }
    }
    conf->n_features = out;
    for (size_t i = 0; i < out; i++) {
        if (!final_src[i].cross)
            continue;
        char cp[KEYPATH_MAX];

        path_key(path, "features", final_src[i].path_name);
        path_key(cp, path, "cross");
        resolve_cross(ld, &conf->features[i], final_src[i].cross, cp);
    }
    for (size_t i = 0; i < out; i++)
        if (conf->features[i].kind == PD_FEAT_RECENT_ITEMS &&
            conf->features[i].count > conf->state.recent_items)
            conf->state.recent_items = conf->features[i].count;

out_free:
    free(tmp);
    free(src);
    free(final_src);
}

/* ------------------------------------------------------------------------------------------ */
/* models: */

static const char *const model_keys[] = {
    "type",      "loss",           "huber_delta",  "optimizer",  "alpha", "beta",        "l1",
    "l2",        "learning_rate",  "power_t",      "initial_t",  "bits",  "intercept",   "weights",
    "admission", "max_abs_margin", "features",     "example_on", "label", "weight_from", "output",
    "publish",   "metrics_window", "quality_gate", NULL};
static const char *const label_keys[] = {"positive_on", "within", "match", "value_from", NULL};
static const char *const gate_keys[] = {"min_auc", "max_log_loss", "max_rmse", "min_examples",
                                        NULL};

#define OPT_BIT(o) (1u << (o))

static void report_not_for_optimizer(loader *ld, ynode *map, const char *mpath, const char *key,
                                     unsigned opts, pd_optimizer opt)
{
    const char *names[ARRAY_SIZE(optimizer_names)];
    size_t n = 0;
    char kp[KEYPATH_MAX];
    strbuf b = {0};

    for (size_t i = 0; i < ARRAY_SIZE(optimizer_names); i++)
        if (opts & OPT_BIT(i))
            names[n++] = optimizer_names[i];
    join_names(&b, names, n, " and ");
    path_key(kp, mpath, key);
    report(ld, map_key(map, key), kp, "applies to optimizer%s %s, not %s", n > 1 ? "s" : "",
           b.s ? b.s : "", optimizer_names[opt]);
    sb_release(&b);
}

static void load_learner(loader *ld, ynode *map, const char *mp, pd_learner_conf *lc, bool type_ok)
{
    static const struct {
        const char *key;
        unsigned opts;
        double lo;
        bool lo_open;
        double hi;
        size_t offset;
    } hyper[] = {
        {"alpha", OPT_BIT(PD_OPT_FTRL), 0, true, INFINITY, offsetof(pd_learner_conf, alpha)},
        {"beta", OPT_BIT(PD_OPT_FTRL), 0, true, INFINITY, offsetof(pd_learner_conf, beta)},
        {"l1", OPT_BIT(PD_OPT_FTRL), 0, false, INFINITY, offsetof(pd_learner_conf, l1)},
        {"l2", OPT_BIT(PD_OPT_FTRL) | OPT_BIT(PD_OPT_ADAGRAD) | OPT_BIT(PD_OPT_SGD), 0, false,
         INFINITY, offsetof(pd_learner_conf, l2)},
        {"learning_rate", OPT_BIT(PD_OPT_ADAGRAD) | OPT_BIT(PD_OPT_SGD), 0, true, INFINITY,
         offsetof(pd_learner_conf, learning_rate)},
        {"power_t", OPT_BIT(PD_OPT_SGD), 0, false, 1, offsetof(pd_learner_conf, power_t)},
        {"initial_t", OPT_BIT(PD_OPT_SGD), 0, true, INFINITY, offsetof(pd_learner_conf, initial_t)},
    };
    char kp[KEYPATH_MAX];
    int v, opt = PD_OPT_FTRL;
    bool loss_ok = type_ok, opt_ok = true;

    if (map_get(map, "loss")) {
        if (type_ok && lc->type != PD_MODEL_LINEAR) {
            path_key(kp, mp, "loss");
            report(ld, map_key(map, "loss"), kp, "applies to linear models, not %s",
                   model_type_names[lc->type]);
        } else {
            static const char *const linear_losses[] = {"squared", "huber"};

            v = 0;
            int ret = get_enum(ld, map, mp, "loss", linear_losses, 2, &v);
            if (ret > 0)
                lc->loss = v ? PD_LOSS_HUBER : PD_LOSS_SQUARED;
            loss_ok = loss_ok && ret > 0;
        }
    }
    if (map_get(map, "huber_delta")) {
        if (loss_ok && lc->loss != PD_LOSS_HUBER) {
            path_key(kp, mp, "huber_delta");
            report(ld, map_key(map, "huber_delta"), kp, "applies to loss huber, not %s",
                   loss_names[lc->loss]);
        } else {
            get_double(ld, map, mp, "huber_delta", 0, true, INFINITY, &lc->huber_delta);
        }
    }
    if (get_enum(ld, map, mp, "optimizer", optimizer_names, ARRAY_SIZE(optimizer_names), &opt) < 0)
        opt_ok = false;
    lc->optimizer = (pd_optimizer)opt;
    lc->learning_rate = lc->optimizer == PD_OPT_SGD ? 0.5 : 0.1;
    for (size_t i = 0; i < ARRAY_SIZE(hyper); i++) {
        if (!map_get(map, hyper[i].key))
            continue;
        if (opt_ok && !(hyper[i].opts & OPT_BIT(lc->optimizer))) {
            report_not_for_optimizer(ld, map, mp, hyper[i].key, hyper[i].opts, lc->optimizer);
            continue;
        }
        get_double(ld, map, mp, hyper[i].key, hyper[i].lo, hyper[i].lo_open, hyper[i].hi,
                   (double *)((char *)lc + hyper[i].offset));
    }
    get_int32(ld, map, mp, "bits", PD_MIN_HASH_BITS, PD_MAX_HASH_BITS, &lc->bits);
    get_bool(ld, map, mp, "intercept", &lc->intercept);
    v = lc->weights;
    if (get_enum(ld, map, mp, "weights", weight_format_names, ARRAY_SIZE(weight_format_names), &v) >
        0)
        lc->weights = (pd_weight_format)v;
    /* the learner counts sightings in one byte per weight */
    get_int(ld, map, mp, "admission", 0, 255, &lc->admission_min_count);
    /* a linear model's output is a value (an order value, say), not a margin: clipping it at
     * the logistic default would cap every prediction at 35 */
    if (type_ok && lc->type == PD_MODEL_LINEAR)
        lc->max_abs_margin = 1e9;
    get_double(ld, map, mp, "max_abs_margin", 0, true, 1e12, &lc->max_abs_margin);
}

static void load_model_features(loader *ld, ynode *n, const char *path, pd_model_conf *m)
{
    const pd_config *conf = ld->conf;
    char kp[KEYPATH_MAX], buf[64];
    size_t count;

    if (!check_list(ld, n, path, true, 1, MAX_MODEL_FEATS, "feature names", &count))
        return;
    m->features = alloc_array(ld, count, sizeof(int));
    if (!m->features)
        return;
    for (size_t i = 0; i < count; i++) {
        ynode *item = list_at(n, i);
        scalar sc;
        int idx;
        bool dup = false;

        if (pd_yaml_node_kind(n) == PD_YAML_LIST)
            path_index(kp, path, i);
        else
            snprintf(kp, sizeof(kp), "%s", path);
        if (!scalar_of(ld, item, kp, "a feature name", &sc))
            continue;
        idx = pd_config_feature_index(conf, sc.value);
        for (size_t j = 0; j < m->n_features && !dup; j++)
            dup = idx >= 0 && m->features[j] == idx;
        if (idx < 0) {
            report_undefined_feature(ld, item, kp, sc.value);
        } else if (dup) {
            report(ld, item, kp, "%s is listed twice", describe(item, buf, sizeof(buf)));
        } else {
            m->features[m->n_features++] = idx;
        }
        free(sc.value);
    }
}

static void load_example_on(loader *ld, ynode *n, const char *path, pd_model_conf *m)
{
    char kp[KEYPATH_MAX], buf[64];
    size_t count;

    if (!check_list(ld, n, path, true, 1, PD_MAX_EVENT_TYPES, "event types", &count))
        return;
    for (size_t i = 0; i < count; i++) {
        ynode *item = list_at(n, i);
        int t;

        if (pd_yaml_node_kind(n) == PD_YAML_LIST)
            path_index(kp, path, i);
        else
            snprintf(kp, sizeof(kp), "%s", path);
        if (resolve_type(ld, item, kp, false, &t) < 0)
            continue;
        if (m->example_on & (UINT32_C(1) << t))
            report(ld, item, kp, "%s is listed twice", describe(item, buf, sizeof(buf)));
        m->example_on |= UINT32_C(1) << t;
    }
}

static void load_label(loader *ld, ynode *n, const char *path, pd_model_conf *m, bool type_ok)
{
    char kp[KEYPATH_MAX];
    ynode *pos, *val;
    int v;

    if (!check_map(ld, n, path, label_keys))
        return;
    pos = map_get(n, "positive_on");
    val = map_get(n, "value_from");
    if (!pos && !val) {
        report(ld, n, path, "needs \"positive_on\" (a later event) or \"value_from\" (a field)");
        return;
    }
    if (pos && val) {
        path_key(kp, path, "value_from");
        report(ld, map_key(n, "value_from"), kp,
               "conflicts with \"positive_on\" (a label is one or the other)");
        return;
    }
    if (pos) {
        m->label = PD_LABEL_POSITIVE_WITHIN;
        path_key(kp, path, "positive_on");
        if (type_ok && m->learner.type == PD_MODEL_LINEAR) {
            report(ld, map_key(n, "positive_on"), kp,
                   "linear models learn a value: use \"value_from\"");
            return;
        }
        resolve_type(ld, pos, kp, false, &m->positive_on);
        if (need(ld, n, path, "within"))
            get_duration(ld, n, path, "within", MS_PER_S, INT64_MAX, false, &m->window_ms);
        v = m->match;
        if (get_enum(ld, n, path, "match", match_names, ARRAY_SIZE(match_names), &v) > 0)
            m->match = (pd_label_match)v;
        return;
    }
    m->label = PD_LABEL_VALUE_FROM;
    for (size_t i = 0; i < 2; i++) {
        const char *key = i ? "match" : "within";

        if (!map_get(n, key))
            continue;
        path_key(kp, path, key);
        report(ld, map_key(n, key), kp, "applies to positive_on labels, not value_from");
    }
    if (get_json_path(ld, n, path, "value_from", &m->value_field) > 0 &&
        !strcmp(m->value_field, "value")) {
        /* the word "value" names the mapped events.fields.value */
        free(m->value_field);
        m->value_field = dup_str(ld, ld->conf->events.field_value);
    }
}

static void load_gate(loader *ld, ynode *n, const char *path, pd_model_conf *m, bool type_ok)
{
    pd_quality_gate *g = &m->gate;
    bool linear = m->learner.type == PD_MODEL_LINEAR;
    char kp[KEYPATH_MAX];

    if (!check_map(ld, n, path, gate_keys))
        return;
    g->enabled = true;
    for (size_t i = 0; i < 3; i++) {
        const char *key = gate_keys[i];
        bool for_linear = i == 2;

        if (!map_get(n, key))
            continue;
        if (type_ok && for_linear != linear) {
            path_key(kp, path, key);
            report(ld, map_key(n, key), kp, "applies to %s models, not %s",
                   for_linear ? "linear" : "logistic and hinge", model_type_names[m->learner.type]);
            continue;
        }
        if (i == 0)
            get_double(ld, n, path, key, 0, false, 1, &g->min_auc);
        else
            get_double(ld, n, path, key, 0, false, INFINITY,
                       i == 1 ? &g->max_log_loss : &g->max_rmse);
    }
    get_int(ld, n, path, "min_examples", 0, INT64_MAX, &g->min_examples);
}

static void load_model(loader *ld, ynode *def, const char *mp, pd_model_conf *m)
{
    pd_learner_conf *lc = &m->learner;
    char kp[KEYPATH_MAX], buf[64];
    int type = PD_MODEL_LOGISTIC;
    bool type_ok = false;

    *lc = (pd_learner_conf){
        .type = PD_MODEL_LOGISTIC,
        .loss = PD_LOSS_LOGISTIC,
        .huber_delta = 1.0,
        .optimizer = PD_OPT_FTRL,
        /* measured by tests/bench/quality_defaults.py (its README section): on streams with a
         * known optimum, progressive log loss is flat from 0.25 to 0.3 and 0.1 closes 5 to 9
         * points less of the gap from the base rate to the Bayes optimum; 0.25 is the end of
         * that plateau that costs the small dense sets (bank marketing) less */
        .alpha = 0.25,
        .beta = 1.0,
        .learning_rate = 0.1,
        .power_t = 0.5,
        .initial_t = 1000,
        .bits = 20,
        .intercept = true,
        .weights = PD_WEIGHTS_F32,
        .max_abs_margin = 35,
    };
    m->publish = true;
    m->metrics_window = 10000;
    m->gate.min_examples = 1000;
    m->positive_on = -1;
    m->match = PD_MATCH_USER;
    if (!check_map(ld, def, mp, model_keys))
        return;
    if (need(ld, def, mp, "type") &&
        get_enum(ld, def, mp, "type", model_type_names, ARRAY_SIZE(model_type_names), &type) > 0)
        type_ok = true;
    lc->type = (pd_model_type)type;
    lc->loss = lc->type == PD_MODEL_LINEAR  ? PD_LOSS_SQUARED
               : lc->type == PD_MODEL_HINGE ? PD_LOSS_HINGE
                                            : PD_LOSS_LOGISTIC;
    load_learner(ld, def, mp, lc, type_ok);
    path_key(kp, mp, "features");
    if (need(ld, def, mp, "features"))
        load_model_features(ld, map_get(def, "features"), kp, m);
    path_key(kp, mp, "example_on");
    if (need(ld, def, mp, "example_on"))
        load_example_on(ld, map_get(def, "example_on"), kp, m);
    path_key(kp, mp, "label");
    if (need(ld, def, mp, "label"))
        load_label(ld, map_get(def, "label"), kp, m, type_ok);
    get_json_path(ld, def, mp, "weight_from", &m->weight_field);
    if (get_string(ld, def, mp, "output", true, &m->output) > 0) {
        path_key(kp, mp, "output");
        if (!valid_redis_token(m->output))
            report(ld, map_get(def, "output"), kp,
                   "invalid field name %s (use letters, digits "
                   "and _ . : -)",
                   describe(map_get(def, "output"), buf, sizeof(buf)));
        else if (!strcmp(m->output, "ts") || !strcmp(m->output, "v"))
            report(ld, map_get(def, "output"), kp,
                   "\"%s\" is reserved (the user hash keeps \"ts\" and \"v\" itself)", m->output);
    }
    get_bool(ld, def, mp, "publish", &m->publish);
    get_int(ld, def, mp, "metrics_window", 10, 10000000, &m->metrics_window);
    if (map_get(def, "quality_gate")) {
        path_key(kp, mp, "quality_gate");
        load_gate(ld, map_get(def, "quality_gate"), kp, m, type_ok);
    }
}

static void load_models(loader *ld, ynode *map)
{
    pd_config *conf = ld->conf;
    size_t n = pd_yaml_node_size(map);
    char path[KEYPATH_MAX], buf[64];
    ynode **output_nodes;

    if (!check_map(ld, map, "models", NULL))
        return;
    if (!n) {
        report(ld, map, "models", "needs at least one model");
        return;
    }
    conf->models = alloc_array(ld, n, sizeof(*conf->models));
    output_nodes = alloc_array(ld, n, sizeof(*output_nodes));
    if (!conf->models || !output_nodes)
        goto out_free;
    for (size_t i = 0; i < n; i++) {
        ynode *k = pd_yaml_node_key(map, i), *def = pd_yaml_node_value(map, i);
        const char *name = pd_yaml_node_text(k);
        pd_model_conf *m = &conf->models[conf->n_models];

        if (!key_to_read(map, i))
            continue;
        path_key(path, "models", name);
        if (!valid_name(name)) {
            report(ld, k, path, "invalid model name %s (use lowercase letters, digits and _)",
                   describe(k, buf, sizeof(buf)));
            continue;
        }
        conf->n_models++;
        m->name = dup_str(ld, name);
        pos_of(ld, k, &m->pos);
        load_model(ld, def, path, m);
        output_nodes[conf->n_models - 1] = map_get(def, "output") ? map_get(def, "output") : k;
        if (!m->output)
            m->output = dup_str(ld, name);
    }
    for (size_t i = 0; i < conf->n_models; i++) {
        for (size_t j = 0; j < i; j++) {
            if (!str_eq(conf->models[i].output, conf->models[j].output) || !conf->models[i].output)
                continue;
            char mp[KEYPATH_MAX];

            path_key(mp, "models", conf->models[i].name);
            path_key(path, mp, "output");
            report(ld, output_nodes[i], path, "\"%s\" is also the output of model \"%s\"",
                   conf->models[i].output, conf->models[j].name);
            break;
        }
    }

out_free:
    free(output_nodes);
}

/* ------------------------------------------------------------------------------------------ */
/* watermark:, users:, snapshot:, daemon: */

static const char *const watermark_keys[] = {"allowed_lateness", "idle_timeout",
                                             "max_pending_per_user", "max_pending_total", NULL};
static const char *const users_keys[] = {"max", "idle_ttl", NULL};
static const char *const snapshot_keys[] = {"dir", "interval", "keep", NULL};
static const char *const daemon_keys[] = {"log_level", "control",       "curve_secret_file", "feed",
                                          "http",      "ready_max_lag", "watchdog",          NULL};

static void load_watermark(loader *ld, ynode *map)
{
    pd_state_conf *st = &ld->conf->state;
    const char *mp = "watermark";

    if (!check_map(ld, map, mp, watermark_keys))
        return;
    get_duration(ld, map, mp, "allowed_lateness", 0, INT64_MAX, false, &st->allowed_lateness_ms);
    get_duration(ld, map, mp, "idle_timeout", 10, 24 * MS_PER_H, false, &st->idle_timeout_ms);
    get_int(ld, map, mp, "max_pending_per_user", 1, 1000000, &st->max_pending_per_user);
    get_int(ld, map, mp, "max_pending_total", 1, 100000000, &st->max_pending_total);
}

static void load_users(loader *ld, ynode *map)
{
    pd_state_conf *st = &ld->conf->state;
    const char *mp = "users";

    if (!check_map(ld, map, mp, users_keys))
        return;
    get_int(ld, map, mp, "max", 0, INT64_MAX, &st->max_users);
    get_duration(ld, map, mp, "idle_ttl", 0, INT64_MAX, false, &st->user_idle_ttl_ms);
}

static void load_snapshot(loader *ld, ynode *map)
{
    pd_snapshot_conf *sn = &ld->conf->snapshot;
    const char *mp = "snapshot";

    if (!check_map(ld, map, mp, snapshot_keys))
        return;
    get_string(ld, map, mp, "dir", false, &sn->dir);
    get_duration(ld, map, mp, "interval", 0, INT64_MAX, false, &sn->interval_ms);
    get_int(ld, map, mp, "keep", 1, 100, &sn->keep);
}

static bool valid_host_port(const char *s)
{
    char *host = NULL;
    int port = 0;
    const char *colon = s[0] == '[' ? strstr(s, "]:") : strrchr(s, ':');

    if (!colon || colon == s)
        return false;
    if (split_host_port(s, strlen(s), &host, &port) || !port) {
        free(host);
        return false;
    }
    free(host);
    return true;
}

/* ZeroMQ endpoints this daemon binds: ipc://PATH or tcp://HOST:PORT. */
static bool valid_endpoint(const char *s)
{
    if (!strncmp(s, "ipc://", 6))
        return s[6] != '\0';
    if (!strncmp(s, "tcp://", 6)) {
        const char *colon = strrchr(s + 6, ':');

        if (colon && !strcmp(colon, ":*"))
            return colon > s + 6;
        return valid_host_port(s + 6);
    }
    return false;
}

static void load_daemon(loader *ld, ynode *map)
{
    pd_daemon_conf *d = &ld->conf->daemon;
    const char *mp = "daemon";
    char buf[64];
    int level = d->log_level;

    if (!check_map(ld, map, mp, daemon_keys))
        return;
    if (get_enum(ld, map, mp, "log_level", log_level_names, ARRAY_SIZE(log_level_names), &level) >
        0)
        d->log_level = (pd_log_level)level;
    for (size_t i = 0; i < 2; i++) {
        const char *key = i ? "feed" : "control";
        char **slot = i ? &d->feed : &d->control;
        char kp[KEYPATH_MAX];

        if (get_string(ld, map, mp, key, false, slot) > 0 && !valid_endpoint(*slot)) {
            path_key(kp, mp, key);
            report(ld, map_get(map, key), kp,
                   "invalid endpoint %s (expected ipc://PATH or tcp://HOST:PORT)",
                   describe(map_get(map, key), buf, sizeof(buf)));
        }
    }
    get_string(ld, map, mp, "curve_secret_file", false, &d->control_curve_secret_file);
    if (get_string(ld, map, mp, "http", false, &d->http) > 0 && !valid_host_port(d->http))
        report(ld, map_get(map, "http"), "daemon.http",
               "invalid address %s (expected HOST:PORT such as 127.0.0.1:9464)",
               describe(map_get(map, "http"), buf, sizeof(buf)));
    get_int(ld, map, mp, "ready_max_lag", 0, INT64_MAX, &d->ready_max_lag);
    get_duration(ld, map, mp, "watchdog", 0, INT64_MAX, false, &d->watchdog_ms);
}

/* ------------------------------------------------------------------------------------------ */
/* loading */

static const char *const top_keys[] = {"kafka",     "redis", "events",   "features", "models",
                                       "watermark", "users", "snapshot", "daemon",   NULL};

static void set_defaults(loader *ld)
{
    pd_config *conf = ld->conf;

    conf->kafka.start = PD_START_EARLIEST;
    conf->kafka.poll_batch = 1000;
    conf->redis.prefix = dup_str(ld, "pd");
    conf->redis.ttl_ms = 7 * MS_PER_DAY;
    conf->redis.flush_interval_ms = 50;
    conf->redis.max_pipeline = 1000;
    conf->redis.timeout_ms = 2 * MS_PER_S;
    conf->events.field_event_id = dup_str(ld, "event_id");
    conf->events.field_user = dup_str(ld, "user_id");
    conf->events.field_item = dup_str(ld, "item_id");
    conf->events.field_type = dup_str(ld, "type");
    conf->events.field_time = dup_str(ld, "ts");
    conf->events.field_value = dup_str(ld, "price");
    conf->events.field_text = dup_str(ld, "text");
    conf->events.forget_type = -1;
    conf->events.max_message_bytes = 64 << 10;
    conf->events.max_string_length = 1024;
    conf->state.allowed_lateness_ms = MS_PER_MIN;
    conf->state.idle_timeout_ms = PD_DEFAULT_IDLE_TIMEOUT_MS;
    conf->state.max_pending_per_user = PD_DEFAULT_MAX_PENDING_PER_USER;
    conf->state.max_pending_total = 1000000;
    conf->snapshot.interval_ms = 5 * MS_PER_MIN;
    conf->snapshot.keep = 3;
    conf->daemon.log_level = PD_LOG_INFO;
    conf->daemon.ready_max_lag = 10000;
}

/* A section's node, "nothing" included, so an empty section reports at its own position. */
static ynode *section(ynode *root, const char *key)
{
    ptrdiff_t i = map_find(root, key);

    return i < 0 ? NULL : pd_yaml_node_value(root, (size_t)i);
}

static void load_root(loader *ld, ynode *root)
{
    char buf[64];
    static const char *const required[] = {"kafka", "events", "models"};

    if (pd_yaml_node_kind(root) != PD_YAML_NULL && pd_yaml_node_kind(root) != PD_YAML_MAP) {
        report(ld, root, NULL, "expected a mapping of sections at the top level, got %s",
               describe(root, buf, sizeof(buf)));
        return;
    }
    check_map(ld, root, "", top_keys);
    for (size_t i = 0; i < ARRAY_SIZE(required); i++)
        if (map_find(root, required[i]) < 0)
            report(ld, root, required[i], "missing required section");
    /* A missing required section is one error, not one per key it would have held. Sections
     * written as nothing ("kafka:") are read as empty and do report their missing keys. */
    /* events first: every other section may name its types */
    if (map_find(root, "events") >= 0)
        load_events(ld, section(root, "events"));
    if (map_find(root, "kafka") >= 0)
        load_kafka(ld, section(root, "kafka"));
    if (ld->conf->events.dead_letter_topic) {
        /* kafka was read after events; check the dead-letter topic now that topics are known */
        const pd_kafka_conf *kafka = &ld->conf->kafka;
        ynode *ev = map_get(root, "events");

        for (size_t i = 0; i < kafka->n_topics; i++) {
            if (!strcmp(kafka->topics[i], ld->conf->events.dead_letter_topic)) {
                report(ld, map_get(ev, "dead_letter_topic"), "events.dead_letter_topic",
                       "\"%s\" is also a consumed topic (bad events would come back)",
                       ld->conf->events.dead_letter_topic);
                break;
            }
        }
    }
    load_redis(ld, map_get(root, "redis"));
    load_features(ld, map_get(root, "features"));
    if (map_find(root, "models") >= 0)
        load_models(ld, section(root, "models"));
    load_watermark(ld, map_get(root, "watermark"));
    load_users(ld, map_get(root, "users"));
    load_snapshot(ld, map_get(root, "snapshot"));
    load_daemon(ld, map_get(root, "daemon"));
}

static uint64_t config_fingerprint(const pd_config *conf);

static pd_config *load_text(const char *file, const char *base_dir, const char *text, size_t len,
                            pd_diag *diag)
{
    size_t first = pd_diag_count(diag);
    pd_yaml_tree *tree = NULL;
    pd_config *conf;
    loader ld = {.diag = diag, .base_dir = base_dir};
    int err = 0;

    conf = calloc(1, sizeof(*conf));
    if (!conf || !(conf->path = strdup(file ? file : "<config>"))) {
        pd_diag_add(diag, file, 0, 0, "out of memory");
        goto out_free_conf;
    }
    ld.conf = conf;
    ld.file = conf->path;
    tree = pd_yaml_tree_parse(conf->path, text, len, diag, &err);
    if (!tree) {
        if (err == -ENOMEM)
            pd_diag_add(diag, conf->path, 0, 0, "out of memory");
        goto out_free_conf;
    }
    set_defaults(&ld);
    load_root(&ld, pd_yaml_tree_root(tree));
    if (ld.oom)
        pd_diag_add(diag, conf->path, 0, 0, "out of memory");
    if (ld.errors || ld.oom)
        goto out_free_conf;
    conf->fingerprint = config_fingerprint(conf);
    pd_yaml_tree_free(tree);
    pd_diag_sort_from(diag, first);
    return conf;

out_free_conf:
    pd_yaml_tree_free(tree);
    pd_config_free(conf);
    pd_diag_sort_from(diag, first);
    return NULL;
}

pd_config *pd_config_load_string(const char *name, const char *text, size_t len, pd_diag *diag)
{
    if (!text)
        return NULL;
    return load_text(name, NULL, text, len, diag);
}

pd_config *pd_config_load(const char *path, pd_diag *diag)
{
    char *text = NULL, *dir = NULL, ebuf[128];
    pd_config *conf = NULL;
    struct stat st;
    size_t len = 0;
    int fd, err = 0;

    if (!path)
        return NULL;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        err = errno;
        goto out_report;
    }
    if (fstat(fd, &st) < 0) {
        err = errno;
        goto out_close;
    }
    if (S_ISDIR(st.st_mode)) {
        err = EISDIR;
        goto out_close;
    }
    err = -read_bounded(fd, MAX_FILE_BYTES, &text, &len);

out_close:
    close(fd);
out_report:
    if (err) {
        pd_diag_add(diag, path, 0, 0, "cannot read: %s",
                    err == EFBIG ? "larger than 16MiB" : errno_text(err, ebuf, sizeof(ebuf)));
        goto out_free;
    }
    /* *_file secrets named relative to the config sit beside it */
    const char *slash = strrchr(path, '/');
    if (slash) {
        dir = strndup(path, slash == path ? 1 : (size_t)(slash - path));
        if (!dir) {
            pd_diag_add(diag, path, 0, 0, "out of memory");
            goto out_free;
        }
    }
    conf = load_text(path, dir, text, len, diag);

out_free:
    free(dir);
    free(text);
    return conf;
}

/* ------------------------------------------------------------------------------------------ */
/* freeing and lookups */

static void free_string_list(char **list, size_t n)
{
    if (!list)
        return;
    for (size_t i = 0; i < n; i++)
        free(list[i]);
    free(list);
}

void pd_config_free(pd_config *conf)
{
    if (!conf)
        return;
    free(conf->kafka.brokers);
    free_string_list(conf->kafka.topics, conf->kafka.n_topics);
    free(conf->kafka.group);
    for (size_t i = 0; conf->kafka.properties && i < conf->kafka.n_properties; i++) {
        free(conf->kafka.properties[i].key);
        free_secret(conf->kafka.properties[i].value);
    }
    free(conf->kafka.properties);
    free(conf->redis.url);
    free(conf->redis.host);
    free(conf->redis.unix_path);
    free(conf->redis.username);
    free_secret(conf->redis.password);
    free(conf->redis.prefix);
    free(conf->events.field_event_id);
    free(conf->events.field_user);
    free(conf->events.field_item);
    free(conf->events.field_type);
    free(conf->events.field_time);
    free(conf->events.field_value);
    free(conf->events.field_text);
    free_string_list(conf->events.types, conf->events.n_types);
    free(conf->events.dead_letter_topic);
    for (size_t i = 0; conf->features && i < conf->n_features; i++) {
        free(conf->features[i].name);
        free(conf->features[i].field);
        free(conf->features[i].transforms);
        free(conf->features[i].buckets);
    }
    free(conf->features);
    for (size_t i = 0; conf->models && i < conf->n_models; i++) {
        free(conf->models[i].name);
        free(conf->models[i].features);
        free(conf->models[i].value_field);
        free(conf->models[i].weight_field);
        free(conf->models[i].output);
    }
    free(conf->models);
    free(conf->snapshot.dir);
    free(conf->daemon.control);
    free(conf->daemon.control_curve_secret_file);
    free(conf->daemon.feed);
    free(conf->daemon.http);
    free(conf->path);
    free(conf);
}

int pd_config_feature_index(const pd_config *conf, const char *name)
{
    if (!conf || !name)
        return -1;
    for (size_t i = 0; i < conf->n_features; i++)
        if (str_eq(conf->features[i].name, name))
            return (int)i;
    return -1;
}

int pd_config_model_index(const pd_config *conf, const char *name)
{
    if (!conf || !name)
        return -1;
    for (size_t i = 0; i < conf->n_models; i++)
        if (str_eq(conf->models[i].name, name))
            return (int)i;
    return -1;
}

int pd_config_type_index(const pd_config *conf, const char *type)
{
    if (!conf || !type)
        return -1;
    for (size_t i = 0; i < conf->events.n_types; i++)
        if (str_eq(conf->events.types[i], type))
            return (int)i;
    return -1;
}

/* ------------------------------------------------------------------------------------------ */
/* fingerprints */

/* A canonical serialisation fed straight into the hash: fixed field order, length-prefixed
 * strings, NULL distinct from "", doubles by bit pattern. Positions and the path never enter. */
typedef struct fp {
    XXH3_state_t *state;
} fp;

static void fp_bytes(fp *f, const void *p, size_t n)
{
    if (f->state)
        XXH3_64bits_update(f->state, p, n);
}

static void fp_i64(fp *f, int64_t v)
{
    fp_bytes(f, &v, sizeof(v));
}

static void fp_f64(fp *f, double v)
{
    uint64_t bits;

    memcpy(&bits, &v, sizeof(bits));
    fp_bytes(f, &bits, sizeof(bits));
}

static void fp_str(fp *f, const char *s)
{
    if (!s) {
        fp_i64(f, -1);
        return;
    }
    fp_i64(f, (int64_t)strlen(s));
    fp_bytes(f, s, strlen(s));
}

static void fp_type(fp *f, const pd_config *conf, int type)
{
    fp_str(f, type >= 0 && (size_t)type < conf->events.n_types ? conf->events.types[type] : NULL);
}

static void fp_feature(fp *f, const pd_config *conf, size_t i, int depth)
{
    const pd_feature_conf *ft = &conf->features[i];

    fp_str(f, ft->name);
    fp_i64(f, ft->kind);
    fp_str(f, ft->field);
    fp_i64(f, ft->vocabulary);
    fp_i64(f, (int64_t)ft->n_transforms);
    for (size_t j = 0; j < ft->n_transforms; j++) {
        fp_i64(f, ft->transforms[j].kind);
        fp_f64(f, ft->transforms[j].lo);
        fp_f64(f, ft->transforms[j].hi);
    }
    fp_i64(f, ft->standardize);
    fp_i64(f, (int64_t)ft->n_buckets);
    for (size_t j = 0; j < ft->n_buckets; j++)
        fp_f64(f, ft->buckets[j]);
    fp_i64(f, (int64_t)ft->n_cross);
    /* a cross is hashed with its parts' definitions: changing a part changes the cross */
    for (size_t j = 0; j < ft->n_cross && depth == 0; j++)
        if (ft->cross[j] >= 0 && (size_t)ft->cross[j] < conf->n_features)
            fp_feature(f, conf, (size_t)ft->cross[j], depth + 1);
    fp_i64(f, ft->bigrams);
    fp_i64(f, ft->max_tokens);
    fp_type(f, conf, ft->event_type);
    fp_i64(f, ft->half_life_ms);
    fp_i64(f, ft->count);
}

static void fp_model(fp *f, const pd_config *conf, const pd_model_conf *m)
{
    const pd_learner_conf *lc = &m->learner;

    fp_str(f, m->name);
    fp_i64(f, lc->type);
    fp_i64(f, lc->loss);
    fp_f64(f, lc->huber_delta);
    fp_i64(f, lc->optimizer);
    fp_f64(f, lc->alpha);
    fp_f64(f, lc->beta);
    fp_f64(f, lc->l1);
    fp_f64(f, lc->l2);
    fp_f64(f, lc->learning_rate);
    fp_f64(f, lc->power_t);
    fp_f64(f, lc->initial_t);
    fp_i64(f, lc->bits);
    fp_i64(f, lc->intercept);
    fp_i64(f, lc->weights);
    fp_i64(f, lc->admission_min_count);
    fp_f64(f, lc->max_abs_margin);
    fp_i64(f, (int64_t)m->n_features);
    for (size_t j = 0; j < m->n_features; j++)
        fp_str(f, conf->features[m->features[j]].name);
    for (size_t t = 0; t < conf->events.n_types; t++)
        if (m->example_on & (UINT32_C(1) << t))
            fp_type(f, conf, (int)t);
    fp_i64(f, m->label);
    fp_type(f, conf, m->positive_on);
    fp_i64(f, m->window_ms);
    fp_i64(f, m->match);
    fp_str(f, m->value_field);
    fp_str(f, m->weight_field);
    fp_str(f, m->output);
    fp_i64(f, m->publish);
    fp_i64(f, m->metrics_window);
    fp_i64(f, m->gate.enabled);
    fp_f64(f, m->gate.min_auc);
    fp_f64(f, m->gate.max_log_loss);
    fp_f64(f, m->gate.max_rmse);
    fp_i64(f, m->gate.min_examples);
}

static uint64_t config_fingerprint(const pd_config *conf)
{
    const pd_kafka_conf *k = &conf->kafka;
    const pd_redis_conf *r = &conf->redis;
    const pd_events_conf *e = &conf->events;
    fp f = {.state = XXH3_createState()};
    uint64_t h;

    if (!f.state || XXH3_64bits_reset(f.state) != XXH_OK) {
        XXH3_freeState(f.state);
        return 0;
    }
    fp_str(&f, k->brokers);
    fp_i64(&f, (int64_t)k->n_topics);
    for (size_t i = 0; i < k->n_topics; i++)
        fp_str(&f, k->topics[i]);
    fp_str(&f, k->group);
    fp_i64(&f, k->start);
    fp_i64(&f, k->poll_batch);
    fp_i64(&f, (int64_t)k->n_properties);
    /* Secret values stay out: the fingerprint is printed and a fast hash is easy to invert for
     * a guessable password. Reload compares the secrets themselves. */
    for (size_t i = 0; i < k->n_properties; i++) {
        fp_str(&f, k->properties[i].key);
        fp_str(&f, k->properties[i].secret ? "(secret)" : k->properties[i].value);
    }
    fp_str(&f, r->url);
    fp_str(&f, r->host);
    fp_i64(&f, r->port);
    fp_str(&f, r->unix_path);
    fp_i64(&f, r->db);
    fp_str(&f, r->username);
    fp_i64(&f, r->password != NULL);
    fp_str(&f, r->prefix);
    fp_i64(&f, r->ttl_ms);
    fp_i64(&f, r->flush_interval_ms);
    fp_i64(&f, r->max_pipeline);
    fp_i64(&f, r->timeout_ms);
    fp_str(&f, e->field_event_id);
    fp_str(&f, e->field_user);
    fp_str(&f, e->field_item);
    fp_str(&f, e->field_type);
    fp_str(&f, e->field_time);
    fp_str(&f, e->field_value);
    fp_str(&f, e->field_text);
    fp_i64(&f, (int64_t)e->n_types);
    for (size_t i = 0; i < e->n_types; i++)
        fp_str(&f, e->types[i]);
    fp_type(&f, conf, e->forget_type);
    fp_i64(&f, e->max_message_bytes);
    fp_i64(&f, e->max_string_length);
    fp_str(&f, e->dead_letter_topic);
    fp_i64(&f, (int64_t)conf->n_features);
    for (size_t i = 0; i < conf->n_features; i++)
        fp_feature(&f, conf, i, 0);
    fp_i64(&f, (int64_t)conf->n_models);
    for (size_t i = 0; i < conf->n_models; i++)
        fp_model(&f, conf, &conf->models[i]);
    fp_i64(&f, conf->state.allowed_lateness_ms);
    fp_i64(&f, conf->state.idle_timeout_ms);
    fp_i64(&f, conf->state.max_pending_per_user);
    fp_i64(&f, conf->state.max_pending_total);
    fp_i64(&f, conf->state.max_users);
    fp_i64(&f, conf->state.user_idle_ttl_ms);
    fp_i64(&f, conf->state.recent_items);
    fp_str(&f, conf->snapshot.dir);
    fp_i64(&f, conf->snapshot.interval_ms);
    fp_i64(&f, conf->snapshot.keep);
    fp_i64(&f, conf->daemon.log_level);
    fp_str(&f, conf->daemon.control);
    fp_str(&f, conf->daemon.control_curve_secret_file);
    fp_str(&f, conf->daemon.feed);
    fp_str(&f, conf->daemon.http);
    fp_i64(&f, conf->daemon.ready_max_lag);
    fp_i64(&f, conf->daemon.watchdog_ms);
    h = XXH3_64bits_digest(f.state);
    XXH3_freeState(f.state);
    return h;
}

uint64_t pd_config_model_fingerprint(const pd_config *conf, size_t model)
{
    const pd_model_conf *m;
    fp f;
    uint64_t h;

    if (!conf || model >= conf->n_models)
        return 0;
    m = &conf->models[model];
    f.state = XXH3_createState();
    if (!f.state || XXH3_64bits_reset(f.state) != XXH_OK) {
        XXH3_freeState(f.state);
        return 0;
    }
    fp_i64(&f, m->learner.type);
    fp_i64(&f, m->learner.loss);
    fp_i64(&f, m->learner.bits);
    fp_i64(&f, m->learner.weights);
    fp_i64(&f, m->learner.intercept);
    /* the learner keeps per-coordinate optimizer state and refuses to switch optimizers */
    fp_i64(&f, m->learner.optimizer);
    fp_i64(&f, (int64_t)m->n_features);
    for (size_t i = 0; i < m->n_features; i++)
        fp_feature(&f, conf, (size_t)m->features[i], 0);
    h = XXH3_64bits_digest(f.state);
    XXH3_freeState(f.state);
    return h;
}

/* ------------------------------------------------------------------------------------------ */
/* reload */

static bool kv_lists_equal(const pd_kv *a, size_t na, const pd_kv *b, size_t nb)
{
    if (na != nb)
        return false;
    for (size_t i = 0; i < na; i++) {
        bool found = false;

        for (size_t j = 0; j < nb && !found; j++)
            found = str_eq(a[i].key, b[j].key) && str_eq(a[i].value, b[j].value);
        if (!found)
            return false;
    }
    return true;
}

static bool string_lists_equal(char *const *a, size_t na, char *const *b, size_t nb)
{
    if (na != nb)
        return false;
    for (size_t i = 0; i < na; i++)
        if (!str_eq(a[i], b[i]))
            return false;
    return true;
}

bool pd_config_reloadable(const pd_config *old, const pd_config *new_conf, char *errbuf,
                          size_t errlen)
{
    const char *changed = NULL;

    if (!old || !new_conf) {
        if (errbuf && errlen)
            snprintf(errbuf, errlen, "no configuration to compare");
        return false;
    }
    const pd_kafka_conf *ok = &old->kafka, *nk = &new_conf->kafka;
    const pd_redis_conf *orr = &old->redis, *nr = &new_conf->redis;
    const pd_events_conf *oe = &old->events, *ne = &new_conf->events;

    if (!str_eq(ok->brokers, nk->brokers))
        changed = "kafka.brokers";
    else if (!string_lists_equal(ok->topics, ok->n_topics, nk->topics, nk->n_topics))
        changed = "kafka.topics";
    else if (!str_eq(ok->group, nk->group))
        changed = "kafka.group";
    else if (!kv_lists_equal(ok->properties, ok->n_properties, nk->properties, nk->n_properties))
        changed = "kafka.properties";
    else if (!str_eq(orr->host, nr->host) || orr->port != nr->port ||
             !str_eq(orr->unix_path, nr->unix_path))
        changed = "redis.url";
    else if (orr->db != nr->db)
        changed = "redis.db";
    else if (!str_eq(orr->username, nr->username))
        changed = "redis.username";
    else if (!str_eq(orr->password, nr->password))
        changed = "redis.password";
    else if (oe->n_types > ne->n_types ||
             !string_lists_equal(oe->types, oe->n_types, ne->types, oe->n_types))
        changed = "events.types";
    else if (!str_eq(old->snapshot.dir, new_conf->snapshot.dir))
        changed = "snapshot.dir";
    else if (!str_eq(old->daemon.control, new_conf->daemon.control))
        changed = "daemon.control";
    else if (!str_eq(old->daemon.control_curve_secret_file,
                     new_conf->daemon.control_curve_secret_file))
        changed = "daemon.curve_secret_file";
    else if (!str_eq(old->daemon.feed, new_conf->daemon.feed))
        changed = "daemon.feed";
    else if (!str_eq(old->daemon.http, new_conf->daemon.http))
        changed = "daemon.http";
    if (!changed)
        return true;
    if (errbuf && errlen) {
        if (!strcmp(changed, "events.types"))
            snprintf(errbuf, errlen,
                     "events.types changed: types may only be appended on reload; restart to "
                     "apply");
        else
            snprintf(errbuf, errlen, "%s changed: restart to apply", changed);
    }
    return false;
}

bool pd_config_needs_user_state(const pd_config *conf)
{
    for (size_t i = 0; i < conf->n_features; i++) {
        switch (conf->features[i].kind) {
        case PD_FEAT_RECENCY:
        case PD_FEAT_DECAYED_COUNT:
        case PD_FEAT_SPEND:
        case PD_FEAT_DISTINCT_ITEMS:
        case PD_FEAT_RECENT_ITEMS:
            return true;
        default:
            break;
        }
    }
    for (size_t i = 0; i < conf->n_models; i++)
        if (conf->models[i].label == PD_LABEL_POSITIVE_WITHIN)
            return true;
    return false;
}

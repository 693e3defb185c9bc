/* Every reader reports and goes on: a bad value keeps its default and the load continues, so
 * one run lists every problem in the file. Messages quote the file, never the environment. */
#include "config/loader.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/diag.h"
#include "config/secrets.h"

static void vreport(loader *ld, ynode *at, const char *path, const char *fmt, va_list ap)
    __attribute__((format(printf, 4, 0)));

static void vreport(loader *ld, ynode *at, const char *path, const char *fmt, va_list ap)
{
    char *msg = NULL;
    int line = at ? pd_yaml_node_line(at) : 1;
    int column = at ? pd_yaml_node_column(at) : 1;

    ld->errors++;
    if (vasprintf(&msg, fmt, ap) < 0)
        msg = NULL;
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

void ld_report(loader *ld, ynode *at, const char *path, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vreport(ld, at, path, fmt, ap);
    va_end(ap);
}

void ld_report_key(loader *ld, ynode *map, const char *mpath, const char *key, const char *fmt, ...)
{
    char kp[KEYPATH_MAX];
    va_list ap;

    ld_path_key(kp, mpath, key);
    va_start(ap, fmt);
    vreport(ld, ld_map_key(map, key), kp, fmt, ap);
    va_end(ap);
}

char *ld_strdup(loader *ld, const char *s)
{
    char *d;

    if (!s)
        return NULL;
    d = strdup(s);
    if (!d)
        ld->oom = true;
    return d;
}

void *ld_calloc(loader *ld, size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);

    if (!p)
        ld->oom = true;
    return p;
}

const char *ld_errno_text(int err, char *buf, size_t len)
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
/* key paths */

static size_t path_append(char *out, size_t n, const char *s)
{
    while (*s && n < KEYPATH_MAX - 1)
        out[n++] = *s++;
    out[n] = '\0';
    return n;
}

void ld_path_key(char *out, const char *parent, const char *key)
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

void ld_path_index(char *out, const char *parent, size_t i)
{
    char tmp[KEYPATH_MAX], idx[32];
    size_t n;

    snprintf(idx, sizeof(idx), "[%zu]", i);
    n = path_append(tmp, 0, parent);
    path_append(tmp, n, idx);
    memcpy(out, tmp, strlen(tmp) + 1);
}

void ld_path_item(char *out, ynode *list, const char *parent, size_t i)
{
    if (pd_yaml_node_kind(list) == PD_YAML_LIST)
        ld_path_index(out, parent, i);
    else
        snprintf(out, KEYPATH_MAX, "%s", parent);
}

const char *ld_describe(ynode *n, char *buf, size_t len)
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

void ld_pos(loader *ld, ynode *n, pd_conf_pos *pos)
{
    pos->file = ld->file;
    pos->line = pd_yaml_node_line(n);
    pos->column = pd_yaml_node_column(n);
}

/* ------------------------------------------------------------------------------------------ */
/* ${ENV} references */

static bool is_name_start(char c)
{
    return isalpha((unsigned char)c) || c == '_';
}

static bool is_name_char(char c)
{
    return isalnum((unsigned char)c) || c == '_';
}

/* One ${NAME} or ${NAME:-default} starting at raw[i]: its value appended to b, the index past
 * it in *ret_next, whether it is all of the text (with no default) in *ret_whole. Returns 1,
 * 0 after reporting a variable that is not set (the text after it can still be read) or -1
 * after reporting a malformed reference (it cannot). */
static int expand_ref(loader *ld, ynode *n, const char *path, const char *raw, size_t len, size_t i,
                      pd_strbuf *b, size_t *ret_next, bool *ret_whole)
{
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
        ld_report(ld, n, path,
                  "malformed environment reference (expected ${NAME} or "
                  "${NAME:-default}; write $${ for a literal ${)");
        return -1;
    }
    memcpy(name, raw + name_at, j - name_at);
    name[j - name_at] = '\0';
    *ret_whole = i == 0 && close == raw + len - 1 && def_len == 0;
    *ret_next = (size_t)(close - raw) + 1;
    value = getenv(name);
    if (value && (*value || !def)) {
        pd_strbuf_adds(b, value);
    } else if (def) {
        pd_strbuf_add(b, def, def_len);
    } else {
        ld_report(ld, n, path, "environment variable \"%s\" is not set", name);
        return 0;
    }
    return 1;
}

static int expand(loader *ld, ynode *n, const char *path, scalar *out)
{
    const char *raw = pd_yaml_node_text(n);
    size_t len = pd_yaml_node_text_len(n);
    pd_strbuf b = PD_STRBUF_INIT;
    size_t refs = 0;
    bool ok = true, whole = false;

    if (memchr(raw, '\0', len)) {
        ld_report(ld, n, path, "contains a NUL character");
        return -EINVAL;
    }
    for (size_t i = 0; i < len;) {
        if (raw[i] == '$' && raw[i + 1] == '$' && raw[i + 2] == '{') {
            pd_strbuf_add(&b, "${", 2);
            i += 3;
            continue;
        }
        if (raw[i] != '$' || raw[i + 1] != '{') {
            pd_strbuf_add(&b, raw + i, 1);
            i++;
            continue;
        }
        int got = expand_ref(ld, n, path, raw, len, i, &b, &i, &whole);

        if (got < 0) {
            ok = false;
            break;
        }
        /* a variable that is not set still counts, and the references after it are checked */
        ok = ok && got > 0;
        refs++;
    }
    if (!ok || b.oom) {
        if (b.oom)
            ld->oom = true;
        secret_free(b.data);
        return -EINVAL;
    }
    out->value = b.data ? b.data : strdup("");
    if (!out->value) {
        ld->oom = true;
        return -ENOMEM;
    }
    out->raw = raw;
    out->env = refs > 0;
    out->env_whole = refs == 1 && whole;
    return 0;
}

bool ld_scalar(loader *ld, ynode *n, const char *path, const char *what, scalar *out)
{
    char buf[64];

    if (pd_yaml_node_kind(n) != PD_YAML_SCALAR) {
        ld_report(ld, n, path, "expected %s, got %s", what, ld_describe(n, buf, sizeof(buf)));
        return false;
    }
    return expand(ld, n, path, out) == 0;
}

/* ------------------------------------------------------------------------------------------ */
/* mappings */

ptrdiff_t ld_map_find(ynode *map, const char *key)
{
    for (size_t i = 0; i < pd_yaml_node_size(map); i++) {
        ynode *k = pd_yaml_node_key(map, i);

        if (pd_yaml_node_kind(k) == PD_YAML_SCALAR && !strcmp(pd_yaml_node_text(k), key))
            return (ptrdiff_t)i;
    }
    return -1;
}

ynode *ld_map_key(ynode *map, const char *key)
{
    ptrdiff_t i = ld_map_find(map, key);

    return i < 0 ? NULL : pd_yaml_node_key(map, (size_t)i);
}

ynode *ld_map_get(ynode *map, const char *key)
{
    ptrdiff_t i = ld_map_find(map, key);
    ynode *v;

    if (i < 0)
        return NULL;
    v = pd_yaml_node_value(map, (size_t)i);
    return pd_yaml_node_kind(v) == PD_YAML_NULL ? NULL : v;
}

bool ld_key_to_read(ynode *map, size_t i)
{
    ynode *k = pd_yaml_node_key(map, i);

    return pd_yaml_node_kind(k) == PD_YAML_SCALAR && strcmp(pd_yaml_node_text(k), "<<") &&
           ld_map_find(map, pd_yaml_node_text(k)) == (ptrdiff_t)i;
}

/* An unknown word: the closest of names, or all of them. */
static void report_unknown(loader *ld, ynode *n, const char *kp, const char *what, const char *word,
                           const char *const *names, size_t n_names)
{
    const char *hint = ld_did_you_mean(word, names, n_names);
    pd_strbuf b = PD_STRBUF_INIT;

    if (hint) {
        ld_report(ld, n, kp, "%s (did you mean \"%s\"?)", what, hint);
        return;
    }
    ld_join_names(&b, names, n_names, ", ");
    ld_report(ld, n, kp, "%s (expected one of: %s)", what, pd_strbuf_str(&b));
    pd_strbuf_release(&b);
}

bool ld_check_map(loader *ld, ynode *map, const char *path, const char *const *allowed)
{
    char buf[64], kp[KEYPATH_MAX];

    if (pd_yaml_node_kind(map) == PD_YAML_NULL)
        return true;
    if (pd_yaml_node_kind(map) != PD_YAML_MAP) {
        ld_report(ld, map, path, "expected a mapping, got %s", ld_describe(map, buf, sizeof(buf)));
        return false;
    }
    for (size_t i = 0; i < pd_yaml_node_size(map); i++) {
        ynode *k = pd_yaml_node_key(map, i);
        const char *key = pd_yaml_node_text(k);
        ptrdiff_t first;
        size_t n_allowed = 0;

        if (pd_yaml_node_kind(k) != PD_YAML_SCALAR) {
            ld_report(ld, k, path, "keys must be strings, got %s",
                      ld_describe(k, buf, sizeof(buf)));
            continue;
        }
        ld_path_key(kp, path, key);
        first = ld_map_find(map, key);
        if (first != (ptrdiff_t)i) {
            ld_report(ld, k, kp, "duplicate key (first defined at line %d)",
                      pd_yaml_node_line(pd_yaml_node_key(map, (size_t)first)));
            continue;
        }
        if (!strcmp(key, "<<") && pd_yaml_node_kind(k) == PD_YAML_SCALAR) {
            ld_report(ld, k, kp, "merge keys are not supported: write the keys out");
            continue;
        }
        if (!allowed)
            continue;
        while (allowed[n_allowed])
            n_allowed++;
        bool known = false;
        for (size_t j = 0; j < n_allowed && !known; j++)
            known = !strcmp(allowed[j], key);
        if (!known)
            report_unknown(ld, k, kp, "unknown key", key, allowed, n_allowed);
    }
    return true;
}

const char *ld_entry_name(loader *ld, ynode *map, size_t i, const char *section, const char *noun,
                          char *path)
{
    ynode *k = pd_yaml_node_key(map, i);
    const char *name = pd_yaml_node_text(k);
    char buf[64];

    if (!ld_key_to_read(map, i))
        return NULL;
    ld_path_key(path, section, name);
    if (!ld_valid_name(name)) {
        ld_report(ld, k, path, "invalid %s name %s (use lowercase letters, digits and _)", noun,
                  ld_describe(k, buf, sizeof(buf)));
        return NULL;
    }
    return name;
}

bool ld_need(loader *ld, ynode *map, const char *mpath, const char *key)
{
    char kp[KEYPATH_MAX];
    ptrdiff_t i = ld_map_find(map, key);

    ld_path_key(kp, mpath, key);
    if (i < 0) {
        ld_report(ld, map, kp, "missing required key");
        return false;
    }
    if (pd_yaml_node_kind(pd_yaml_node_value(map, (size_t)i)) == PD_YAML_NULL) {
        ld_report(ld, pd_yaml_node_value(map, (size_t)i), kp, "a value is required");
        return false;
    }
    return true;
}

/* ------------------------------------------------------------------------------------------ */
/* typed values */

/* map[key] as an expanded scalar: 0 when absent, 1 when read (the caller frees sc->value), -1
 * after reporting. kp receives the key path, *ret_n the value node. */
static int read_scalar(loader *ld, ynode *map, const char *mpath, const char *key, const char *what,
                       char *kp, ynode **ret_n, scalar *sc)
{
    ynode *n = ld_map_get(map, key);

    if (!n)
        return 0;
    ld_path_key(kp, mpath, key);
    if (!ld_scalar(ld, n, kp, what, sc))
        return -1;
    *ret_n = n;
    return 1;
}

/* map[key] parsed into *v, "expected <what>, got ..." when it does not parse. Returns as
 * read_scalar(); *ret_raw is the text as written, for range messages. */
static int read_typed(loader *ld, ynode *map, const char *mpath, const char *key, const char *what,
                      bool (*parse)(const char *text, void *v), void *v, char *kp, ynode **ret_n,
                      const char **ret_raw)
{
    char buf[64];
    scalar sc;
    bool ok;
    int ret = read_scalar(ld, map, mpath, key, what, kp, ret_n, &sc);

    if (ret <= 0)
        return ret;
    ok = parse(sc.value, v);
    free(sc.value);
    if (!ok) {
        ld_report(ld, *ret_n, kp, "expected %s, got %s", what,
                  ld_describe(*ret_n, buf, sizeof(buf)));
        return -1;
    }
    *ret_raw = sc.raw;
    return 1;
}

int ld_get_string(loader *ld, ynode *map, const char *mpath, const char *key, bool required,
                  char **out)
{
    char kp[KEYPATH_MAX];
    ynode *n;
    scalar sc;
    int ret = read_scalar(ld, map, mpath, key, "a string", kp, &n, &sc);

    if (ret <= 0)
        return ret;
    if (!*sc.value) {
        /* "${X:-}" turns an optional setting off; a required one cannot be empty. */
        free(sc.value);
        if (!required)
            return 0;
        ld_report(ld, n, kp, "must not be empty");
        return -1;
    }
    free(*out);
    *out = sc.value;
    return 1;
}

static bool parse_int(const char *text, void *v)
{
    return units_parse_int(text, v);
}

static bool parse_double(const char *text, void *v)
{
    return units_parse_double(text, v);
}

static bool parse_bool(const char *text, void *v)
{
    static const char *const yes[] = {"true", "yes", "on"};
    static const char *const no[] = {"false", "no", "off"};
    bool *ret = v;

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

int ld_get_int(loader *ld, ynode *map, const char *mpath, const char *key, int64_t lo, int64_t hi,
               int64_t *out)
{
    char kp[KEYPATH_MAX];
    const char *raw;
    ynode *n;
    int64_t v;
    int ret = read_typed(ld, map, mpath, key, "an integer", parse_int, &v, kp, &n, &raw);

    if (ret <= 0)
        return ret;
    if (v < lo || v > hi) {
        if (hi == INT64_MAX)
            ld_report(ld, n, kp, "must be at least %lld (got %s)", (long long)lo, raw);
        else
            ld_report(ld, n, kp, "must be between %lld and %lld (got %s)", (long long)lo,
                      (long long)hi, raw);
        return -1;
    }
    *out = v;
    return 1;
}

int ld_get_int32(loader *ld, ynode *map, const char *mpath, const char *key, int64_t lo, int64_t hi,
                 int *out)
{
    int64_t v = *out;
    int ret = ld_get_int(ld, map, mpath, key, lo, hi, &v);

    if (ret > 0)
        *out = (int)v;
    return ret;
}

int ld_get_double(loader *ld, ynode *map, const char *mpath, const char *key, double lo,
                  bool lo_open, double hi, double *out)
{
    char kp[KEYPATH_MAX];
    const char *raw;
    ynode *n;
    double v;
    int ret = read_typed(ld, map, mpath, key, "a number", parse_double, &v, kp, &n, &raw);

    if (ret <= 0)
        return ret;
    if (!((lo_open ? v > lo : v >= lo) && v <= hi)) {
        if (isinf(hi))
            ld_report(ld, n, kp, "must be %s %g (got %s)", lo_open ? "greater than" : "at least",
                      lo, raw);
        else if (lo_open)
            ld_report(ld, n, kp, "must be greater than %g and at most %g (got %s)", lo, hi, raw);
        else
            ld_report(ld, n, kp, "must be between %g and %g (got %s)", lo, hi, raw);
        return -1;
    }
    *out = v;
    return 1;
}

int ld_get_bool(loader *ld, ynode *map, const char *mpath, const char *key, bool *out)
{
    char kp[KEYPATH_MAX];
    const char *raw;
    ynode *n;
    bool v;
    int ret = read_typed(ld, map, mpath, key, "true or false", parse_bool, &v, kp, &n, &raw);

    if (ret > 0)
        *out = v;
    return ret;
}

static int get_quantity(loader *ld, ynode *map, const char *mpath, const char *key,
                        const units_quantity *q, int64_t lo, int64_t hi, bool zero_ok, int64_t *out)
{
    char kp[KEYPATH_MAX], buf[64], a[32], b[32];
    ynode *n;
    scalar sc;
    int64_t v;
    int ret = read_scalar(ld, map, mpath, key, q->what, kp, &n, &sc);

    if (ret <= 0)
        return ret;
    q->format(lo, a, sizeof(a));
    q->format(hi, b, sizeof(b));
    if (q->parse(sc.value, &v) < 0) {
        ld_report(ld, n, kp, "invalid %s %s (expected %s)", q->noun,
                  ld_describe(n, buf, sizeof(buf)), q->expected);
        ret = -1;
    } else if ((v < lo && !(zero_ok && v == 0)) || v > hi) {
        if (hi == INT64_MAX)
            ld_report(ld, n, kp, "must be %sat least %s (got %s)", zero_ok ? "0 or " : "", a,
                      sc.raw);
        else
            ld_report(ld, n, kp, "must be %sbetween %s and %s (got %s)", zero_ok ? "0 or " : "", a,
                      b, sc.raw);
        ret = -1;
    } else {
        *out = v;
    }
    free(sc.value);
    return ret;
}

int ld_get_duration(loader *ld, ynode *map, const char *mpath, const char *key, int64_t lo,
                    int64_t hi, bool zero_ok, int64_t *out)
{
    return get_quantity(ld, map, mpath, key, &units_duration, lo, hi, zero_ok, out);
}

int ld_get_size(loader *ld, ynode *map, const char *mpath, const char *key, int64_t lo, int64_t hi,
                int64_t *out)
{
    return get_quantity(ld, map, mpath, key, &units_size, lo, hi, false, out);
}

int ld_match_word(loader *ld, ynode *n, const char *kp, const char *subject,
                  const char *const *names, size_t n_names, int *out)
{
    char buf[64], *what = NULL;
    scalar sc;

    if (!ld_scalar(ld, n, kp, "a word", &sc))
        return -1;
    for (size_t i = 0; i < n_names; i++) {
        if (!strcmp(sc.value, names[i])) {
            *out = (int)i;
            free(sc.value);
            return 1;
        }
    }
    if (asprintf(&what, "unknown %s %s", subject, ld_describe(n, buf, sizeof(buf))) < 0) {
        ld->errors++;
        ld->oom = true;
    } else {
        report_unknown(ld, n, kp, what, sc.value, names, n_names);
        free(what);
    }
    free(sc.value);
    return -1;
}

int ld_get_enum(loader *ld, ynode *map, const char *mpath, const char *key,
                const char *const *names, size_t n_names, int *out)
{
    ynode *n = ld_map_get(map, key);
    char kp[KEYPATH_MAX];

    if (!n)
        return 0;
    ld_path_key(kp, mpath, key);
    return ld_match_word(ld, n, kp, "value", names, n_names, out);
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

int ld_get_json_path(loader *ld, ynode *map, const char *mpath, const char *key, char **out)
{
    char *v = NULL, kp[KEYPATH_MAX], buf[64];
    int ret = ld_get_string(ld, map, mpath, key, true, &v);

    if (ret <= 0)
        return ret;
    if (!valid_json_path(v)) {
        ld_path_key(kp, mpath, key);
        ld_report(ld, ld_map_get(map, key), kp,
                  "invalid JSON path %s (expected dot-separated names such as context.device)",
                  ld_describe(ld_map_get(map, key), buf, sizeof(buf)));
        free(v);
        return -1;
    }
    free(*out);
    *out = v;
    return 1;
}

int ld_resolve_type(loader *ld, ynode *n, const char *kp, bool allow_any, int *out)
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
    if (ld_match_word(ld, n, kp, "event type", names, n_names, &found) < 0)
        return -1;
    *out = allow_any && (size_t)found == ev->n_types ? -1 : found;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* lists */

bool ld_check_list(loader *ld, ynode *n, const char *path, bool single, size_t min, size_t max,
                   const char *what, size_t *ret_n)
{
    char buf[64];
    size_t count;

    if (single && pd_yaml_node_kind(n) == PD_YAML_SCALAR) {
        *ret_n = 1;
        return true;
    }
    if (pd_yaml_node_kind(n) != PD_YAML_LIST) {
        ld_report(ld, n, path, "expected a list of %s, got %s", what,
                  ld_describe(n, buf, sizeof(buf)));
        return false;
    }
    count = pd_yaml_node_size(n);
    if (count == 0 && min > 0) {
        ld_report(ld, n, path, "must not be empty");
        return false;
    }
    if (count < min) {
        ld_report(ld, n, path, "needs at least %zu items, has %zu", min, count);
        return false;
    }
    if (count > max) {
        ld_report(ld, n, path, "has %zu items, at most %zu are allowed", count, max);
        return false;
    }
    *ret_n = count;
    return true;
}

ynode *ld_list_at(ynode *n, size_t i)
{
    return pd_yaml_node_kind(n) == PD_YAML_LIST ? pd_yaml_node_item(n, i) : n;
}

/* ------------------------------------------------------------------------------------------ */
/* names and suggestions */

bool ld_valid_name(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!(islower((unsigned char)*s) || isdigit((unsigned char)*s) || *s == '_'))
            return false;
    return true;
}

bool ld_valid_redis_token(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!(isalnum((unsigned char)*s) || strchr("_.:-", *s)))
            return false;
    return true;
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

const char *ld_did_you_mean(const char *word, const char *const *cands, size_t n)
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

void ld_join_names(pd_strbuf *b, const char *const *names, size_t n, const char *last_sep)
{
    for (size_t i = 0; i < n; i++) {
        if (i)
            pd_strbuf_adds(b, i + 1 == n ? last_sep : ", ");
        pd_strbuf_adds(b, names[i]);
    }
}

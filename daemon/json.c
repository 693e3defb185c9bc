/* Recursive descent over the input with a depth bound; nodes live in one array that grows
 * while parsing (linked by index) and are linked by pointer once it can no longer move.
 * Decoded strings are never longer than their source, so one buffer of twice the input
 * holds all of them with their terminators. */
#include "daemon/json.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NONE SIZE_MAX

struct pd_json_node {
    pd_json_type type;
    bool boolean;
    double number;
    const char *str;
    size_t str_len;
    const char *key;
    size_t key_len;
    size_t count;
    const pd_json_node *first, *next;
    size_t first_i, next_i; /* while parsing */
};

struct pd_json {
    pd_json_node *nodes;
    size_t n, cap;
    char *strings;
    size_t str_used;
};

typedef struct parser {
    pd_json *doc;
    const char *p, *end, *start;
    char *err;
    size_t errlen;
    bool failed;
} parser;

static void fail(parser *ps, const char *what)
{
    if (ps->failed)
        return;
    ps->failed = true;
    snprintf(ps->err, ps->errlen, "invalid json at byte %zu: %s", (size_t)(ps->p - ps->start),
             what);
}

static void skip_ws(parser *ps)
{
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
        ps->p++;
}

static size_t new_node(parser *ps, pd_json_type type)
{
    pd_json *d = ps->doc;
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 16;
        pd_json_node *nn = realloc(d->nodes, cap * sizeof *nn);
        if (!nn) {
            fail(ps, "out of memory");
            return NONE;
        }
        d->nodes = nn;
        d->cap = cap;
    }
    d->nodes[d->n] = (pd_json_node){.type = type, .first_i = NONE, .next_i = NONE};
    return d->n++;
}

/* Length of the UTF-8 sequence at s (1..4) or 0 when it is not well-formed. */
static size_t utf8_seq(const unsigned char *s, size_t avail)
{
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    size_t n;
    uint32_t cp;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (avail < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

bool pd_utf8_valid(const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        size_t n = utf8_seq(u + i, len - i);
        if (!n)
            return false;
        i += n;
    }
    return true;
}

static int hex4(const char *p, uint32_t *ret)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (uint32_t)(c - 'A' + 10);
        else
            return -EINVAL;
    }
    *ret = v;
    return 0;
}

static size_t put_utf8(char *out, uint32_t cp)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* At the opening quote; decodes into the string arena. */
static const char *parse_string(parser *ps, size_t *ret_len)
{
    pd_json *d = ps->doc;
    char *out = d->strings + d->str_used;
    size_t n = 0;
    ps->p++;
    for (;;) {
        if (ps->p >= ps->end) {
            fail(ps, "unterminated string");
            return NULL;
        }
        unsigned char c = (unsigned char)*ps->p;
        if (c == '"') {
            ps->p++;
            break;
        }
        if (c < 0x20) {
            fail(ps, "control character in string");
            return NULL;
        }
        if (c != '\\') {
            size_t k = utf8_seq((const unsigned char *)ps->p, (size_t)(ps->end - ps->p));
            if (!k) {
                fail(ps, "invalid utf-8 in string");
                return NULL;
            }
            memcpy(out + n, ps->p, k);
            n += k;
            ps->p += k;
            continue;
        }
        if (ps->end - ps->p < 2) {
            fail(ps, "unterminated escape");
            return NULL;
        }
        char e = ps->p[1];
        ps->p += 2;
        switch (e) {
        case '"':
        case '\\':
        case '/':
            out[n++] = e;
            break;
        case 'b':
            out[n++] = '\b';
            break;
        case 'f':
            out[n++] = '\f';
            break;
        case 'n':
            out[n++] = '\n';
            break;
        case 'r':
            out[n++] = '\r';
            break;
        case 't':
            out[n++] = '\t';
            break;
        case 'u': {
            uint32_t cp;
            if (ps->end - ps->p < 4 || hex4(ps->p, &cp) < 0) {
                fail(ps, "bad \\u escape");
                return NULL;
            }
            ps->p += 4;
            if (cp >= 0xdc00 && cp <= 0xdfff) {
                fail(ps, "unpaired surrogate");
                return NULL;
            }
            if (cp >= 0xd800 && cp <= 0xdbff) {
                uint32_t lo;
                if (ps->end - ps->p < 6 || ps->p[0] != '\\' || ps->p[1] != 'u' ||
                    hex4(ps->p + 2, &lo) < 0 || lo < 0xdc00 || lo > 0xdfff) {
                    fail(ps, "unpaired surrogate");
                    return NULL;
                }
                ps->p += 6;
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            }
            /* an escape takes 6 or 12 source bytes and yields at most 4 */
            n += put_utf8(out + n, cp);
            break;
        }
        default:
            ps->p -= 2;
            fail(ps, "bad escape");
            return NULL;
        }
    }
    out[n] = '\0';
    d->str_used += n + 1;
    *ret_len = n;
    return out;
}

static void parse_number(parser *ps, pd_json_node *node)
{
    const char *s = ps->p;
    const char *p = s;
    if (p < ps->end && *p == '-')
        p++;
    if (p < ps->end && *p == '0') {
        p++;
    } else if (p < ps->end && *p >= '1' && *p <= '9') {
        while (p < ps->end && *p >= '0' && *p <= '9')
            p++;
    } else {
        fail(ps, "bad number");
        return;
    }
    if (p < ps->end && *p == '.') {
        p++;
        if (p >= ps->end || *p < '0' || *p > '9') {
            fail(ps, "bad number");
            return;
        }
        while (p < ps->end && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < ps->end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < ps->end && (*p == '+' || *p == '-'))
            p++;
        if (p >= ps->end || *p < '0' || *p > '9') {
            fail(ps, "bad number");
            return;
        }
        while (p < ps->end && *p >= '0' && *p <= '9')
            p++;
    }
    char buf[64];
    size_t n = (size_t)(p - s);
    if (n >= sizeof buf) {
        fail(ps, "number too long");
        return;
    }
    memcpy(buf, s, n);
    buf[n] = '\0';
    node->number = strtod(buf, NULL);
    ps->p = p;
}

static bool literal(parser *ps, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0)
        return false;
    ps->p += n;
    return true;
}

static size_t parse_value(parser *ps, int depth);

/* Links child after prev (or as the first child of parent). */
static void link_child(parser *ps, size_t parent, size_t *prev, size_t child)
{
    pd_json_node *nodes = ps->doc->nodes;
    if (*prev == NONE)
        nodes[parent].first_i = child;
    else
        nodes[*prev].next_i = child;
    *prev = child;
    nodes[parent].count++;
}

static bool duplicate_key(parser *ps, size_t obj, const char *key, size_t len)
{
    pd_json_node *nodes = ps->doc->nodes;
    for (size_t i = nodes[obj].first_i; i != NONE; i = nodes[i].next_i)
        if (nodes[i].key_len == len && memcmp(nodes[i].key, key, len) == 0)
            return true;
    return false;
}

static size_t parse_container(parser *ps, int depth, bool object)
{
    size_t self = new_node(ps, object ? PD_JSON_OBJECT : PD_JSON_ARRAY);
    if (self == NONE)
        return NONE;
    size_t prev = NONE;
    ps->p++;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == (object ? '}' : ']')) {
        ps->p++;
        return self;
    }
    for (;;) {
        const char *key = NULL;
        size_t key_len = 0;
        skip_ws(ps);
        if (object) {
            if (ps->p >= ps->end || *ps->p != '"') {
                fail(ps, "expected a string key");
                return NONE;
            }
            if (!(key = parse_string(ps, &key_len)))
                return NONE;
            if (duplicate_key(ps, self, key, key_len)) {
                fail(ps, "duplicate key");
                return NONE;
            }
            skip_ws(ps);
            if (ps->p >= ps->end || *ps->p != ':') {
                fail(ps, "expected ':'");
                return NONE;
            }
            ps->p++;
        }
        size_t child = parse_value(ps, depth + 1);
        if (child == NONE)
            return NONE;
        ps->doc->nodes[child].key = key;
        ps->doc->nodes[child].key_len = key_len;
        link_child(ps, self, &prev, child);
        skip_ws(ps);
        if (ps->p < ps->end && *ps->p == ',') {
            ps->p++;
            continue;
        }
        if (ps->p < ps->end && *ps->p == (object ? '}' : ']')) {
            ps->p++;
            return self;
        }
        fail(ps, object ? "expected ',' or '}'" : "expected ',' or ']'");
        return NONE;
    }
}

static size_t parse_value(parser *ps, int depth)
{
    if (depth > PD_JSON_MAX_DEPTH) {
        fail(ps, "nested too deep");
        return NONE;
    }
    skip_ws(ps);
    if (ps->p >= ps->end) {
        fail(ps, "unexpected end of input");
        return NONE;
    }
    char c = *ps->p;
    if (c == '{' || c == '[')
        return parse_container(ps, depth, c == '{');
    if (c == '"') {
        size_t len;
        const char *s = parse_string(ps, &len);
        if (!s)
            return NONE;
        size_t self = new_node(ps, PD_JSON_STRING);
        if (self != NONE) {
            ps->doc->nodes[self].str = s;
            ps->doc->nodes[self].str_len = len;
        }
        return self;
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
        size_t self = new_node(ps, PD_JSON_NUMBER);
        if (self != NONE)
            parse_number(ps, &ps->doc->nodes[self]);
        return ps->failed ? NONE : self;
    }
    bool is_true = literal(ps, "true");
    if (is_true || literal(ps, "false")) {
        size_t self = new_node(ps, PD_JSON_BOOL);
        if (self != NONE)
            ps->doc->nodes[self].boolean = is_true;
        return self;
    }
    if (literal(ps, "null"))
        return new_node(ps, PD_JSON_NULL);
    fail(ps, "unexpected character");
    return NONE;
}

pd_json *pd_json_parse(const char *text, size_t len, char *errbuf, size_t errlen)
{
    pd_json *doc = calloc(1, sizeof *doc);
    if (!doc || !(doc->strings = malloc(2 * len + 2))) {
        snprintf(errbuf, errlen, "out of memory parsing json");
        free(doc);
        return NULL;
    }
    parser ps = {
        .doc = doc, .p = text, .end = text + len, .start = text, .err = errbuf, .errlen = errlen};
    size_t root = parse_value(&ps, 0);
    if (root != NONE) {
        skip_ws(&ps);
        if (ps.p != ps.end)
            fail(&ps, "trailing characters after the value");
    }
    if (ps.failed) {
        pd_json_free(doc);
        return NULL;
    }
    /* the array is final: indices become pointers. A value's node is made before those of
     * its children, so the root is node 0. */
    for (size_t i = 0; i < doc->n; i++) {
        pd_json_node *nd = &doc->nodes[i];
        nd->first = nd->first_i == NONE ? NULL : &doc->nodes[nd->first_i];
        nd->next = nd->next_i == NONE ? NULL : &doc->nodes[nd->next_i];
    }
    return doc;
}

void pd_json_free(pd_json *doc)
{
    if (!doc)
        return;
    free(doc->nodes);
    free(doc->strings);
    free(doc);
}

const pd_json_node *pd_json_root(const pd_json *doc)
{
    return &doc->nodes[0];
}

pd_json_type pd_json_type_of(const pd_json_node *n)
{
    return n->type;
}

const char *pd_json_type_name(pd_json_type t)
{
    static const char *const names[] = {"null", "boolean", "number", "string", "array", "object"};
    return (unsigned)t < sizeof names / sizeof names[0] ? names[t] : "unknown";
}

const pd_json_node *pd_json_get(const pd_json_node *n, const char *key)
{
    if (!n || n->type != PD_JSON_OBJECT)
        return NULL;
    size_t len = strlen(key);
    for (const pd_json_node *c = n->first; c; c = c->next)
        if (c->key_len == len && memcmp(c->key, key, len) == 0)
            return c;
    return NULL;
}

const pd_json_node *pd_json_first(const pd_json_node *n)
{
    return n ? n->first : NULL;
}

const pd_json_node *pd_json_next(const pd_json_node *n)
{
    return n ? n->next : NULL;
}

const char *pd_json_key(const pd_json_node *member, size_t *ret_len)
{
    if (ret_len)
        *ret_len = member->key_len;
    return member->key ? member->key : "";
}

const char *pd_json_string(const pd_json_node *n, size_t *ret_len)
{
    if (!n || n->type != PD_JSON_STRING)
        return NULL;
    if (ret_len)
        *ret_len = n->str_len;
    return n->str;
}

double pd_json_number(const pd_json_node *n)
{
    return n && n->type == PD_JSON_NUMBER ? n->number : NAN;
}

bool pd_json_bool(const pd_json_node *n)
{
    return n && n->type == PD_JSON_BOOL && n->boolean;
}

size_t pd_json_count(const pd_json_node *n)
{
    return n ? n->count : 0;
}

/* ---- writing ---- */

void pd_json_add_string(pd_strbuf *sb, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    pd_strbuf_addc(sb, '"');
    size_t i = 0;
    while (i < len) {
        unsigned char c = u[i];
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            pd_strbuf_add(sb, esc, 2);
            i++;
        } else if (c < 0x20 || c == 0x7f) {
            char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            pd_strbuf_add(sb, esc, 6);
            i++;
        } else if (c < 0x80) {
            pd_strbuf_addc(sb, (char)c);
            i++;
        } else {
            size_t k = utf8_seq(u + i, len - i);
            if (k) {
                pd_strbuf_add(sb, s + i, k);
                i += k;
            } else {
                pd_strbuf_adds(sb, "\\ufffd");
                i++;
            }
        }
    }
    pd_strbuf_addc(sb, '"');
}

void pd_json_add_str(pd_strbuf *sb, const char *s)
{
    if (!s)
        pd_strbuf_adds(sb, "null");
    else
        pd_json_add_string(sb, s, strlen(s));
}

void pd_json_add_number(pd_strbuf *sb, double v)
{
    if (!isfinite(v)) {
        pd_strbuf_adds(sb, "null");
        return;
    }
    if (v == floor(v) && fabs(v) < 9007199254740992.0) {
        pd_strbuf_addf(sb, "%.0f", v);
        return;
    }
    char buf[32];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            break;
    }
    pd_strbuf_adds(sb, buf);
}

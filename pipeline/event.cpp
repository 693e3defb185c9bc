/* JSON event decoding with simdjson's DOM parser. C++ only because simdjson is: it decoded the
 * real event samples 4x faster than yajl and 6x faster than cJSON while validating UTF-8 and
 * every number (tests/bench/bench_json.c has the figures), and decoding is the first cost of
 * every event. The interface is C (event.h); nothing here throws. */
#include "pipeline/event.h"

#include <cerrno>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <new>
#include <string>
#include <string_view>
#include <vector>

#include <simdjson.h>

namespace
{

/* Slots of the mapped fields come first, the caller's extra paths after them. */
enum {
    SLOT_USER,
    SLOT_ITEM,
    SLOT_TYPE,
    SLOT_TIME,
    SLOT_VALUE,
    SLOT_TEXT,
    SLOT_EVENT_ID,
    SLOT__MAPPED,
};

const char *const slot_names[SLOT__MAPPED] = {"user",  "item", "type",    "time",
                                              "value", "text", "event_id"};

constexpr int max_depth = 8;

const char *const error_names[PD_DECODE__COUNT] = {
    "ok",           "oversize",      "invalid_utf8",    "not_json",
    "not_object",   "missing_user",  "missing_type",    "unknown_type",
    "wrong_type",   "bad_number",    "string_too_long", "bad_string",
    "missing_time", "duplicate_key",
};

/* A top-level key as two words and its length, which together are the key itself for keys of
 * up to 16 bytes (the words are its first and last 8 bytes, overlapping, or fewer bytes packed
 * for shorter keys): most keys compare in three integer tests, no memcmp call. Longer keys
 * also compare their middle bytes. */
struct key_words {
    uint64_t w0, w1;
};

inline key_words words_of(const char *s, size_t n)
{
    key_words k{0, 0};
    if (n >= 8) {
        memcpy(&k.w0, s, 8);
        memcpy(&k.w1, s + n - 8, 8);
    } else if (n >= 4) {
        uint32_t a, b;
        memcpy(&a, s, 4);
        memcpy(&b, s + n - 4, 4);
        k.w0 = (uint64_t)a | (uint64_t)b << 32;
    } else if (n > 0) {
        k.w0 = (uint64_t)(unsigned char)s[0] | (uint64_t)(unsigned char)s[n / 2] << 8 |
               (uint64_t)(unsigned char)s[n - 1] << 16;
    }
    return k;
}

/* Multiplicative hashing of the words and the length; the table index is the top bits. */
inline uint64_t hash_of(key_words k, size_t n)
{
    uint64_t h = (k.w0 ^ ((k.w1 << 23) | (k.w1 >> 41)) ^ (uint64_t)n) * 0x9E3779B97F4A7C15ull;
    return h ^ (h >> 29);
}

/* One prefix: len 0 marks an empty slot (no path prefix is empty, and an empty key is looked
 * up nowhere). The paths are top_paths[first .. first + nleaf + ncont). */
struct top_slot {
    uint64_t w0 = 0, w1 = 0;
    const char *bytes = nullptr; /* the prefix, in `paths` */
    uint32_t len = 0;
    uint32_t first = 0;
    uint16_t nleaf = 0, ncont = 0;
};

inline bool slot_is(const top_slot &e, key_words k, const char *s, size_t n)
{
    return e.len == n && e.w0 == k.w0 && e.w1 == k.w1 &&
           (n <= 16 || memcmp(e.bytes + 8, s + 8, n - 16) == 0);
}

} // namespace

struct pd_decoder {
    simdjson::dom::parser parser;
    std::vector<char> buf; /* the message copied with SIMDJSON_PADDING readable bytes after it */
    std::vector<std::string> paths;
    std::vector<pd_value> values; /* one per path */
    std::vector<size_t> consumed; /* per path: bytes of the path matched by the walk so far */
    /* per path, for this message: bit k set once the walk entered the path's object at depth
     * k + 1, LEAF once its value was read; a second time is a duplicate key */
    std::vector<uint16_t> reached;
    int duplicate = -1;            /* the first path met twice in this message, or -1 */
    std::vector<uint16_t> scratch; /* candidate path indices, one row per depth */
    std::vector<std::string> types;
    /* Every prefix of every path that ends at a '.' or at the path's end, with the paths it
     * begins: a top-level key is one lookup instead of a test against every path (a linear
     * scan showed in replay profiles: tests/bench/README.md). An open-addressing table built
     * once, at most a quarter full, probed linearly; see top_slot. */
    std::vector<top_slot> top;
    unsigned top_shift = 64; /* 64 - log2(top.size()) */
    std::vector<uint16_t> top_paths; /* per prefix: the paths it ends, then those it continues */
    size_t max_bytes = 0;
    size_t max_string = 0;
    char numtext[SLOT__MAPPED][24]; /* numbers given where strings are mapped (user ids) */
};

extern "C" const char *pd_decode_error_name(pd_decode_error err)
{
    if ((unsigned)err >= PD_DECODE__COUNT)
        return "unknown";
    return error_names[err];
}

static void set_value(pd_value *v, simdjson::dom::element el)
{
    using simdjson::dom::element_type;
    v->str = nullptr;
    v->len = 0;
    v->num = 0;
    v->is_integer = false;
    switch (el.type()) {
    case element_type::STRING: {
        std::string_view s = el.get_string().value_unsafe();
        v->kind = PD_VALUE_STRING;
        v->str = s.data();
        v->len = s.size();
        break;
    }
    case element_type::INT64:
        v->kind = PD_VALUE_NUMBER;
        v->integer = el.get_int64().value_unsafe();
        v->is_integer = true;
        v->num = (double)v->integer;
        break;
    case element_type::UINT64:
        v->kind = PD_VALUE_NUMBER;
        v->num = (double)el.get_uint64().value_unsafe();
        break;
    case element_type::DOUBLE:
        v->kind = PD_VALUE_NUMBER;
        v->num = el.get_double().value_unsafe();
        break;
    case element_type::BOOL:
        v->kind = PD_VALUE_BOOL;
        v->num = el.get_bool().value_unsafe() ? 1.0 : 0.0;
        break;
    case element_type::NULL_VALUE:
        v->kind = PD_VALUE_MISSING;
        break;
    default:
        v->kind = PD_VALUE_OTHER;
        break;
    }
}

constexpr uint16_t LEAF = 0x8000;

/* Marks path p reached (bit: LEAF, or its object at some depth); a path reached twice in one
 * message means a key the pipeline reads appears twice, which JSON parsers resolve in
 * different ways (first wins, last wins, refuse), so the event is refused. */
static void reach(pd_decoder *d, uint16_t p, uint16_t bit)
{
    if ((d->reached[p] & bit) && d->duplicate < 0)
        d->duplicate = p;
    d->reached[p] |= bit;
}

static void set_leaf(pd_decoder *d, uint16_t p, simdjson::dom::element el)
{
    reach(d, p, LEAF);
    set_value(&d->values[p], el);
}

/* The paths in next continue below key, whose value is not an object: an array, a string, ...
 * where the path needs an object is a value of the wrong type (the feature counts it as such);
 * null is missing. */
static void not_an_object(pd_decoder *d, simdjson::dom::element el, const uint16_t *next,
                          size_t nnext)
{
    if (el.type() == simdjson::dom::element_type::NULL_VALUE)
        return;
    for (size_t i = 0; i < nnext; i++) {
        reach(d, next[i], LEAF);
        d->values[next[i]].kind = PD_VALUE_OTHER;
    }
}

/* Matches the keys of obj against the candidate paths; a path segment must equal a whole key,
 * so keys that contain dots are reachable too. */
static void walk(pd_decoder *d, simdjson::dom::object obj, const uint16_t *cand, size_t ncand,
                 int depth)
{
    uint16_t *next = d->scratch.data() + (size_t)(depth + 1) * d->paths.size();
    for (auto field : obj) {
        std::string_view key = field.key;
        size_t nnext = 0;
        for (size_t i = 0; i < ncand; i++) {
            uint16_t p = cand[i];
            const std::string &path = d->paths[p];
            size_t off = d->consumed[p];
            size_t rem = path.size() - off;
            size_t k = key.size();
            /* the cheap tests first: the key must end where a segment of the path ends, and
             * most candidates already differ in the first byte; keys are short, so the byte
             * loop beats a memcmp call */
            if (rem < k || (rem > k && path[off + k] != '.') || k == 0 || path[off] != key[0])
                continue;
            const char *a = path.data() + off, *b = key.data();
            size_t j = 1;
            while (j < k && a[j] == b[j])
                j++;
            if (j != k)
                continue;
            if (rem == key.size())
                set_leaf(d, p, field.value);
            else if (path[off + key.size()] == '.')
                next[nnext++] = p;
        }
        if (nnext == 0 || depth + 1 >= max_depth)
            continue;
        simdjson::dom::object child;
        if (field.value.get_object().get(child) != simdjson::SUCCESS) {
            not_an_object(d, field.value, next, nnext);
            continue;
        }
        for (size_t i = 0; i < nnext; i++) {
            reach(d, next[i], (uint16_t)(1u << depth));
            d->consumed[next[i]] += key.size() + 1;
        }
        walk(d, child, next, nnext, depth + 1);
        for (size_t i = 0; i < nnext; i++)
            d->consumed[next[i]] -= key.size() + 1;
    }
}

/* The slot of the prefix equal to s[0..n), or nullptr. */
static const top_slot *find_top(const pd_decoder *d, const char *s, size_t n)
{
    if (n == 0)
        return nullptr;
    key_words k = words_of(s, n);
    size_t mask = d->top.size() - 1;
    for (size_t i = (size_t)(hash_of(k, n) >> d->top_shift);; i = (i + 1) & mask) {
        const top_slot &e = d->top[i];
        if (e.len == 0)
            return nullptr;
        if (slot_is(e, k, s, n))
            return &e;
    }
}

/* The object at the root: keys are looked up in the prefix index, deeper levels walked. */
static void walk_top(pd_decoder *d, simdjson::dom::object obj)
{
    for (auto field : obj) {
        std::string_view key = field.key;
        const top_slot *e = find_top(d, key.data(), key.size());
        if (!e)
            continue;
        const uint16_t *leaf = d->top_paths.data() + e->first;
        for (size_t i = 0; i < e->nleaf; i++)
            set_leaf(d, leaf[i], field.value);
        const uint16_t *next = leaf + e->nleaf;
        size_t nnext = e->ncont;
        if (nnext == 0)
            continue;
        simdjson::dom::object child;
        if (field.value.get_object().get(child) != simdjson::SUCCESS) {
            not_an_object(d, field.value, next, nnext);
            continue;
        }
        for (size_t i = 0; i < nnext; i++) {
            reach(d, next[i], 1);
            d->consumed[next[i]] = key.size() + 1;
        }
        walk(d, child, next, nnext, 1);
    }
}

/* Fills the prefix table: every prefix of every path that ends at a '.' or at the path's end,
 * with the paths it ends (the key is their leaf) and those it continues, each in path order
 * (pd_decoder_new bounds the paths to what a uint16_t counts). */
static void build_top(pd_decoder *d)
{
    std::vector<std::string_view> keys;
    std::vector<std::vector<uint16_t>> leaf, cont;
    {
        /* a first pass over a temporary table of key indices finds the distinct prefixes */
        size_t total = 0;
        for (const std::string &path : d->paths)
            for (size_t k = 1; k <= path.size(); k++)
                total += k == path.size() || path[k] == '.';
        size_t size = 8;
        while (size < 4 * total)
            size *= 2;
        unsigned shift = 64;
        for (size_t s = size; s > 1; s /= 2)
            shift--;
        std::vector<int32_t> index(size, -1);
        for (size_t i = 0; i < d->paths.size(); i++) {
            const std::string &path = d->paths[i];
            for (size_t k = 1; k <= path.size(); k++) {
                if (k != path.size() && path[k] != '.')
                    continue;
                size_t slot = (size_t)(hash_of(words_of(path.data(), k), k) >> shift);
                while (index[slot] >= 0 &&
                       keys[(size_t)index[slot]] != std::string_view(path.data(), k))
                    slot = (slot + 1) & (size - 1);
                if (index[slot] < 0) {
                    index[slot] = (int32_t)keys.size();
                    keys.emplace_back(path.data(), k);
                    leaf.emplace_back();
                    cont.emplace_back();
                }
                size_t key = (size_t)index[slot];
                (k == path.size() ? leaf : cont)[key].push_back((uint16_t)i);
            }
        }
        d->top.assign(size, top_slot());
        d->top_shift = shift;
    }
    size_t mask = d->top.size() - 1;
    for (size_t j = 0; j < keys.size(); j++) {
        key_words k = words_of(keys[j].data(), keys[j].size());
        size_t slot = (size_t)(hash_of(k, keys[j].size()) >> d->top_shift);
        while (d->top[slot].len != 0)
            slot = (slot + 1) & mask;
        top_slot &e = d->top[slot];
        e.w0 = k.w0;
        e.w1 = k.w1;
        e.bytes = keys[j].data();
        e.len = (uint32_t)keys[j].size();
        e.first = (uint32_t)d->top_paths.size();
        e.nleaf = (uint16_t)leaf[j].size();
        e.ncont = (uint16_t)cont[j].size();
        d->top_paths.insert(d->top_paths.end(), leaf[j].begin(), leaf[j].end());
        d->top_paths.insert(d->top_paths.end(), cont[j].begin(), cont[j].end());
    }
}

extern "C" pd_decoder *pd_decoder_new(const pd_events_conf *conf, const char *const *paths,
                                      size_t n_paths, char *errbuf, size_t errlen)
{
    const char *mapped[SLOT__MAPPED] = {conf->field_user,    conf->field_item,  conf->field_type,
                                        conf->field_time,    conf->field_value, conf->field_text,
                                        conf->field_event_id};
    if (SLOT__MAPPED + n_paths > UINT16_MAX) {
        snprintf(errbuf, errlen, "too many event fields (%zu)", n_paths);
        return nullptr;
    }
    pd_decoder *d = new (std::nothrow) pd_decoder();
    if (!d) {
        snprintf(errbuf, errlen, "out of memory");
        return nullptr;
    }
    d->max_bytes = conf->max_message_bytes > 0 ? (size_t)conf->max_message_bytes : 65536;
    d->max_string = conf->max_string_length > 0 ? (size_t)conf->max_string_length : 1024;
    for (int i = 0; i < SLOT__MAPPED; i++)
        d->paths.emplace_back(mapped[i] ? mapped[i] : "");
    for (size_t i = 0; i < n_paths; i++)
        d->paths.emplace_back(paths[i]);
    for (size_t i = 0; i < conf->n_types; i++)
        d->types.emplace_back(conf->types[i]);
    build_top(d);
    d->values.resize(d->paths.size());
    d->consumed.resize(d->paths.size());
    d->reached.resize(d->paths.size());
    d->scratch.resize(d->paths.size() * (max_depth + 1));
    d->buf.resize(d->max_bytes + simdjson::SIMDJSON_PADDING);
    if (d->parser.allocate(d->max_bytes) != simdjson::SUCCESS) {
        snprintf(errbuf, errlen, "cannot allocate a JSON parser for %zu-byte messages",
                 d->max_bytes);
        delete d;
        return nullptr;
    }
    return d;
}

extern "C" void pd_decoder_free(pd_decoder *dec)
{
    delete dec;
}

static pd_decode_error fail(pd_decode_error err, char *detail, size_t detail_len, const char *what)
{
    if (detail && detail_len)
        snprintf(detail, detail_len, "%s", what);
    return err;
}

/* A mapped string field: a JSON string, or an integer written as text (numeric user ids are
 * common). Returns PD_DECODE_OK and sets the string (empty when missing). */
static pd_decode_error mapped_string(pd_decoder *d, int slot, const char **s, size_t *n,
                                     char *detail, size_t detail_len)
{
    const pd_value *v = &d->values[slot];
    char what[64];
    *s = "";
    *n = 0;
    switch (v->kind) {
    case PD_VALUE_MISSING:
        return PD_DECODE_OK;
    case PD_VALUE_STRING:
        if (v->len > d->max_string) {
            snprintf(what, sizeof what, "field \"%s\" is longer than %zu bytes", slot_names[slot],
                     d->max_string);
            return fail(PD_DECODE_STRING_TOO_LONG, detail, detail_len, what);
        }
        if (memchr(v->str, '\0', v->len)) {
            snprintf(what, sizeof what, "field \"%s\" holds a NUL character", slot_names[slot]);
            return fail(PD_DECODE_BAD_STRING, detail, detail_len, what);
        }
        *s = v->str;
        *n = v->len;
        return PD_DECODE_OK;
    case PD_VALUE_NUMBER:
        /* ids written as JSON integers are kept exactly (snowflake ids exceed 2^53) */
        if (v->is_integer) {
            int len = snprintf(d->numtext[slot], sizeof d->numtext[slot], "%" PRId64, v->integer);
            *s = d->numtext[slot];
            *n = (size_t)len;
            return PD_DECODE_OK;
        }
        if (v->num == std::floor(v->num) && std::fabs(v->num) < 9007199254740992.0) {
            int len =
                snprintf(d->numtext[slot], sizeof d->numtext[slot], "%" PRId64, (int64_t)v->num);
            *s = d->numtext[slot];
            *n = (size_t)len;
            return PD_DECODE_OK;
        }
        break;
    default:
        break;
    }
    snprintf(what, sizeof what, "field \"%s\" must be a string", slot_names[slot]);
    return fail(PD_DECODE_WRONG_TYPE, detail, detail_len, what);
}

extern "C" pd_decode_error pd_decoder_decode(pd_decoder *d, const char *buf, size_t len,
                                             int64_t fallback_ts_ms, pd_event *ret_event,
                                             char *detail, size_t detail_len)
{
    char what[96];
    if (len > d->max_bytes) {
        snprintf(what, sizeof what, "message of %zu bytes is over the %zu-byte limit", len,
                 d->max_bytes);
        return fail(PD_DECODE_OVERSIZE, detail, detail_len, what);
    }
    memcpy(d->buf.data(), buf, len);
    memset(d->buf.data() + len, 0, simdjson::SIMDJSON_PADDING);

    simdjson::dom::element root;
    simdjson::error_code perr = d->parser.parse(d->buf.data(), len, false).get(root);
    /* the parser may stop at another error first (an unclosed string in binary data), and
     * the reason must not depend on where a quote byte happens to fall */
    if (perr != simdjson::SUCCESS && perr != simdjson::UTF8_ERROR &&
        !simdjson::validate_utf8(d->buf.data(), len))
        perr = simdjson::UTF8_ERROR;
    if (perr == simdjson::UTF8_ERROR)
        return fail(PD_DECODE_INVALID_UTF8, detail, detail_len, "not valid UTF-8");
    if (perr == simdjson::NUMBER_ERROR)
        return fail(PD_DECODE_BAD_NUMBER, detail, detail_len, "a number is out of range");
    if (perr != simdjson::SUCCESS)
        return fail(PD_DECODE_NOT_JSON, detail, detail_len, simdjson::error_message(perr));
    simdjson::dom::object obj;
    if (root.get_object().get(obj) != simdjson::SUCCESS)
        return fail(PD_DECODE_NOT_OBJECT, detail, detail_len, "not a JSON object");

    size_t n = d->paths.size();
    for (size_t i = 0; i < n; i++) {
        d->values[i].kind = PD_VALUE_MISSING;
        d->reached[i] = 0;
    }
    d->duplicate = -1;
    walk_top(d, obj);
    if (d->duplicate >= 0) {
        const std::string &path = d->paths[(size_t)d->duplicate];
        snprintf(what, sizeof what, "field \"%.*s\" appears twice",
                 (int)(path.size() < 64 ? path.size() : 64), path.data());
        return fail(PD_DECODE_DUPLICATE_KEY, detail, detail_len, what);
    }

    pd_event ev;
    memset(&ev, 0, sizeof ev);
    pd_decode_error err;
    if ((err = mapped_string(d, SLOT_USER, &ev.user, &ev.user_len, detail, detail_len)))
        return err;
    if (ev.user_len == 0)
        return fail(PD_DECODE_MISSING_USER, detail, detail_len, "no user");
    if ((err = mapped_string(d, SLOT_ITEM, &ev.item, &ev.item_len, detail, detail_len)))
        return err;
    if ((err = mapped_string(d, SLOT_EVENT_ID, &ev.event_id, &ev.event_id_len, detail, detail_len)))
        return err;

    const pd_value *t = &d->values[SLOT_TYPE];
    if (t->kind == PD_VALUE_MISSING)
        return fail(PD_DECODE_MISSING_TYPE, detail, detail_len, "no event type");
    if (t->kind != PD_VALUE_STRING)
        return fail(PD_DECODE_WRONG_TYPE, detail, detail_len, "field \"type\" must be a string");
    ev.type = -1;
    for (size_t i = 0; i < d->types.size(); i++) {
        if (d->types[i].size() == t->len && memcmp(d->types[i].data(), t->str, t->len) == 0) {
            ev.type = (int)i;
            break;
        }
    }
    if (ev.type < 0)
        return fail(PD_DECODE_UNKNOWN_TYPE, detail, detail_len, "event type is not declared");

    const pd_value *ts = &d->values[SLOT_TIME];
    if (ts->kind == PD_VALUE_NUMBER) {
        if (!(ts->num >= 0 && ts->num < 9.2e18))
            return fail(PD_DECODE_BAD_NUMBER, detail, detail_len, "field \"time\" is out of range");
        ev.ts_ms = (int64_t)ts->num;
    } else if (ts->kind == PD_VALUE_MISSING) {
        if (fallback_ts_ms <= 0)
            return fail(PD_DECODE_MISSING_TIME, detail, detail_len,
                        "no event time and no message timestamp");
        ev.ts_ms = fallback_ts_ms;
    } else {
        return fail(PD_DECODE_WRONG_TYPE, detail, detail_len, "field \"time\" must be a number");
    }

    const pd_value *val = &d->values[SLOT_VALUE];
    if (val->kind == PD_VALUE_NUMBER) {
        if (!std::isfinite(val->num))
            return fail(PD_DECODE_BAD_NUMBER, detail, detail_len, "field \"value\" is not finite");
        ev.has_value = true;
        ev.value = val->num;
    } else if (val->kind != PD_VALUE_MISSING) {
        return fail(PD_DECODE_WRONG_TYPE, detail, detail_len, "field \"value\" must be a number");
    }

    const pd_value *text = &d->values[SLOT_TEXT];
    if (text->kind == PD_VALUE_STRING) {
        ev.text = text->str;
        ev.text_len = text->len;
    } else if (text->kind != PD_VALUE_MISSING) {
        return fail(PD_DECODE_WRONG_TYPE, detail, detail_len, "field \"text\" must be a string");
    } else {
        ev.text = "";
    }

    ev.fields = d->values.data() + SLOT__MAPPED;
    ev.n_fields = n - SLOT__MAPPED;
    *ret_event = ev;
    return PD_DECODE_OK;
}

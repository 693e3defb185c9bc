/* Feature construction. Every feature writes its coordinates into one preallocated buffer per
 * event; nothing here allocates after pd_featurizer_new(). */
#include "pipeline/featurizer.h"

#include <ctype.h>
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "common/hashtab.h"

#define MAX_CROSS_NNZ 256

/* Running mean and variance (Welford) of a standardised feature. */
typedef struct pd_norm {
    double n, mean, m2;
} pd_norm;

/* A capped set of admitted categorical values (their 64-bit hashes). */
typedef struct pd_vocab {
    pd_hashtab set; /* value hash -> 1; sized for the limit, so it never grows */
    size_t limit;
} pd_vocab;

typedef struct feat {
    pd_feature_conf conf; /* shallow copy: pointers into arrays owned below */
    char *name;
    char *field;
    pd_transform *transforms;
    double *buckets;
    uint64_t seed;
    uint64_t state_id; /* identifies the definition that learned state belongs to */
    int slot;          /* event field slot or -1 */
    int acc;           /* user accumulator index or -1 */
    int sketch;        /* user sketch index or -1 */
    size_t max_nnz;
    size_t offset; /* into the build buffer */
    size_t nnz;    /* built this event */
    pd_norm norm;
    pd_vocab vocab;
    uint32_t h_never, h_oov;
    /* field coverage: events whose field was absent / of a type the feature cannot use */
    uint64_t missing, wrong_type;
} feat;

struct pd_featurizer {
    feat *f;
    size_t n;
    size_t n_types;
    pd_user_layout layout;
    pd_feature *buf;
    size_t buf_len;
    uint64_t events; /* events built with learn (coverage counts these) */
    char *lower; /* scratch for lower-cased text */
    size_t lower_cap;
    char numtext[32];
};

static uint64_t name_seed(const char *name)
{
    return XXH3_64bits(name, strlen(name));
}

uint32_t pd_feature_hash(const char *feature, const char *value, size_t len)
{
    return (uint32_t)XXH3_64bits_withSeed(value, len, name_seed(feature));
}

static uint64_t def_id(const pd_feature_conf *c)
{
    XXH3_state_t s;
    XXH3_64bits_reset(&s);
    XXH3_64bits_update(&s, c->name, strlen(c->name) + 1);
    XXH3_64bits_update(&s, &c->kind, sizeof c->kind);
    if (c->field)
        XXH3_64bits_update(&s, c->field, strlen(c->field) + 1);
    for (size_t i = 0; i < c->n_transforms; i++) {
        XXH3_64bits_update(&s, &c->transforms[i].kind, sizeof c->transforms[i].kind);
        XXH3_64bits_update(&s, &c->transforms[i].lo, sizeof(double));
        XXH3_64bits_update(&s, &c->transforms[i].hi, sizeof(double));
    }
    XXH3_64bits_update(&s, &c->standardize, sizeof c->standardize);
    XXH3_64bits_update(&s, &c->vocabulary, sizeof c->vocabulary);
    XXH3_64bits_update(&s, &c->event_type, sizeof c->event_type);
    XXH3_64bits_update(&s, &c->half_life_ms, sizeof c->half_life_ms);
    return XXH3_64bits_digest(&s);
}

static int vocab_init(pd_vocab *v, int64_t limit)
{
    if (limit <= 0)
        return 0;
    v->limit = (size_t)limit;
    return pd_hashtab_init(&v->set, (size_t)limit * 2 + 2);
}

/* Whether value hash h is in the vocabulary, admitting it while there is room. */
static bool vocab_admit(pd_vocab *v, uint64_t h, bool learn)
{
    const pd_hashtab *t = &v->set;
    for (size_t i = pd_hashtab_first(t, h); t->slots[i].value; i = pd_hashtab_next(t, i))
        if (t->slots[i].hash == h)
            return true;
    if (t->count >= v->limit || !learn || pd_hashtab_reserve(&v->set) < 0)
        return false;
    pd_hashtab_insert(&v->set, h, 1);
    return true;
}

static size_t feat_max_nnz(const pd_featurizer *fz, const pd_feature_conf *c)
{
    switch (c->kind) {
    case PD_FEAT_TEXT:
        return (size_t)c->max_tokens * (c->bigrams ? 2 : 1);
    case PD_FEAT_RECENT_ITEMS:
        return (size_t)c->count;
    case PD_FEAT_CROSS: {
        size_t n = 1;
        for (size_t i = 0; i < c->n_cross; i++) {
            n *= feat_max_nnz(fz, &fz->f[c->cross[i]].conf);
            if (n > MAX_CROSS_NNZ)
                return MAX_CROSS_NNZ;
        }
        return n;
    }
    default:
        return 1;
    }
}

static int acc_index(pd_user_layout *l, int type, int64_t half_life, bool sum)
{
    for (size_t i = 0; i < l->n_acc; i++)
        if (l->acc[i].event_type == type && l->acc[i].half_life_ms == half_life &&
            l->acc[i].sum_value == sum)
            return (int)i;
    l->acc[l->n_acc] =
        (pd_acc_def){.event_type = type, .half_life_ms = half_life, .sum_value = sum};
    return (int)l->n_acc++;
}

static int sketch_index(pd_user_layout *l, int type)
{
    for (size_t i = 0; i < l->n_sketch; i++)
        if (l->sketch_type[i] == type)
            return (int)i;
    l->sketch_type[l->n_sketch] = type;
    return (int)l->n_sketch++;
}

pd_featurizer *pd_featurizer_new(const pd_config *conf, const int *field_slot, char *errbuf,
                                 size_t errlen)
{
    pd_featurizer *fz = calloc(1, sizeof *fz);
    if (!fz)
        goto out_nomem;
    fz->n = conf->n_features;
    fz->n_types = conf->events.n_types;
    fz->f = calloc(fz->n ? fz->n : 1, sizeof *fz->f);
    fz->layout.acc = calloc(fz->n ? fz->n : 1, sizeof *fz->layout.acc);
    fz->layout.sketch_type = calloc(fz->n ? fz->n : 1, sizeof *fz->layout.sketch_type);
    if (!fz->f || !fz->layout.acc || !fz->layout.sketch_type)
        goto out_free;
    fz->layout.n_types = conf->events.n_types;

    for (size_t i = 0; i < fz->n; i++) {
        const pd_feature_conf *c = &conf->features[i];
        feat *f = &fz->f[i];
        f->conf = *c;
        f->name = strdup(c->name);
        f->field = c->field ? strdup(c->field) : NULL;
        if (!f->name || (c->field && !f->field))
            goto out_free;
        if (c->n_transforms) {
            f->transforms = malloc(c->n_transforms * sizeof *f->transforms);
            if (!f->transforms)
                goto out_free;
            memcpy(f->transforms, c->transforms, c->n_transforms * sizeof *f->transforms);
        }
        if (c->n_buckets) {
            f->buckets = malloc(c->n_buckets * sizeof *f->buckets);
            if (!f->buckets)
                goto out_free;
            memcpy(f->buckets, c->buckets, c->n_buckets * sizeof *f->buckets);
        }
        f->conf.name = f->name;
        f->conf.field = f->field;
        f->conf.transforms = f->transforms;
        f->conf.buckets = f->buckets;
        f->seed = name_seed(c->name);
        f->state_id = def_id(c);
        f->slot = field_slot ? field_slot[i] : -1;
        f->acc = -1;
        f->sketch = -1;
        f->h_never = (uint32_t)XXH3_64bits_withSeed("\0never", 6, f->seed);
        f->h_oov = (uint32_t)XXH3_64bits_withSeed("\0oov", 4, f->seed);
        if (vocab_init(&f->vocab, c->kind == PD_FEAT_CATEGORICAL ? c->vocabulary : 0) < 0)
            goto out_free;
        switch (c->kind) {
        case PD_FEAT_DECAYED_COUNT:
            f->acc = acc_index(&fz->layout, c->event_type, c->half_life_ms, false);
            break;
        case PD_FEAT_SPEND:
            f->acc = acc_index(&fz->layout, c->event_type, c->half_life_ms, true);
            break;
        case PD_FEAT_DISTINCT_ITEMS:
            f->sketch = sketch_index(&fz->layout, c->event_type);
            break;
        case PD_FEAT_RECENT_ITEMS:
            if ((size_t)c->count > fz->layout.ring_items)
                fz->layout.ring_items = (size_t)c->count;
            break;
        default:
            break;
        }
    }
    /* sizes need every feature's definition (crosses refer to any other) */
    size_t total = 0, max_text = 0;
    for (size_t i = 0; i < fz->n; i++) {
        feat *f = &fz->f[i];
        f->max_nnz = feat_max_nnz(fz, &f->conf);
        f->offset = total;
        total += f->max_nnz;
        if (f->conf.kind == PD_FEAT_TEXT)
            max_text = 1;
    }
    fz->buf_len = total;
    fz->buf = calloc(total ? total : 1, sizeof *fz->buf);
    if (!fz->buf)
        goto out_free;
    if (max_text) {
        fz->lower_cap =
            conf->events.max_message_bytes > 0 ? (size_t)conf->events.max_message_bytes : 65536;
        fz->lower = malloc(fz->lower_cap);
        if (!fz->lower)
            goto out_free;
    }
    return fz;

out_free:
    pd_featurizer_free(fz);
out_nomem:
    snprintf(errbuf, errlen, "out of memory building features");
    return NULL;
}

void pd_featurizer_free(pd_featurizer *fz)
{
    if (!fz)
        return;
    for (size_t i = 0; fz->f && i < fz->n; i++) {
        free(fz->f[i].name);
        free(fz->f[i].field);
        free(fz->f[i].transforms);
        free(fz->f[i].buckets);
        pd_hashtab_release(&fz->f[i].vocab.set);
    }
    free(fz->f);
    free(fz->layout.acc);
    free(fz->layout.sketch_type);
    free(fz->buf);
    free(fz->lower);
    free(fz);
}

const pd_user_layout *pd_featurizer_layout(const pd_featurizer *fz)
{
    return &fz->layout;
}

void pd_user_before_capture(const pd_user *u, size_t n_types, pd_user_before *ret_before)
{
    ret_before->last_ts_ms = u->last_ts_ms;
    for (size_t i = 0; i < n_types && i < PD_MAX_EVENT_TYPES; i++)
        ret_before->last_ts_by_type[i] = u->last_ts_by_type[i];
}

static uint32_t hash_value(const feat *f, const void *p, size_t len)
{
    return (uint32_t)XXH3_64bits_withSeed(p, len, f->seed);
}

/* XXH3_64bits_withSeed() itself, flattened for the lengths the hot features hash (a bucket
 * index, the 2 or 3 hashes of a cross, a short string), so that the call, its dispatch on
 * the length and its long-input paths go: the generic call was a third of a cross's cost
 * (tests/bench/README.md). Same function, same bits. */
static __attribute__((flatten)) uint64_t hash4(const void *p, uint64_t seed)
{
    return XXH3_64bits_withSeed(p, 4, seed);
}

static __attribute__((flatten)) uint64_t hash8(const void *p, uint64_t seed)
{
    return XXH3_64bits_withSeed(p, 8, seed);
}

static __attribute__((flatten)) uint64_t hash12(const void *p, uint64_t seed)
{
    return XXH3_64bits_withSeed(p, 12, seed);
}

static __attribute__((flatten)) uint64_t hash_upto16(const void *p, size_t len, uint64_t seed)
{
    if (len > 16)
        __builtin_unreachable();
    return XXH3_64bits_withSeed(p, len, seed);
}

static inline uint64_t hash_bytes(const void *p, size_t len, uint64_t seed)
{
    return len <= 16 ? hash_upto16(p, len, seed) : XXH3_64bits_withSeed(p, len, seed);
}

/* Text of a scalar for hashing: strings as they are, integral numbers without a fraction,
 * other numbers with 17 significant digits, booleans as true/false. */
static bool scalar_text(pd_featurizer *fz, const pd_value *v, const char **s, size_t *n)
{
    switch (v->kind) {
    case PD_VALUE_STRING:
        *s = v->str;
        *n = v->len;
        return true;
    case PD_VALUE_NUMBER:
        if (v->is_integer)
            *n = (size_t)snprintf(fz->numtext, sizeof fz->numtext, "%" PRId64, v->integer);
        else if (v->num == floor(v->num) && fabs(v->num) < 9007199254740992.0)
            *n = (size_t)snprintf(fz->numtext, sizeof fz->numtext, "%" PRId64, (int64_t)v->num);
        else
            *n = (size_t)snprintf(fz->numtext, sizeof fz->numtext, "%.17g", v->num);
        *s = fz->numtext;
        return true;
    case PD_VALUE_BOOL:
        *s = v->num != 0 ? "true" : "false";
        *n = strlen(*s);
        return true;
    default:
        return false;
    }
}

/* log(1 + x) for x >= 0 in float, the precision features are stored in: logf is about twice
 * as fast as log1pf here, and glibc's log1p showed in replay profiles (tests/bench/README.md).
 * Near 0, where 1 + x would round, the series is exact to float precision. */
static double fast_log1p(double x)
{
    if (x < 1e-3)
        return x * (1.0 - x * (0.5 - x / 3.0));
    return (double)logf(1.0f + (float)x);
}

static double apply_transforms(const feat *f, double x)
{
    for (size_t i = 0; i < f->conf.n_transforms; i++) {
        const pd_transform *t = &f->conf.transforms[i];
        /* symmetric, so negative inputs stay finite */
        if (t->kind == PD_TF_LOG1P)
            x = x >= 0 ? fast_log1p(x) : -fast_log1p(-x);
        else if (t->kind == PD_TF_CLIP)
            x = x < t->lo ? t->lo : (x > t->hi ? t->hi : x);
    }
    return x;
}

/* Writes a numeric feature: raw value, standardised value or one-hot bucket. */
static size_t emit_number(feat *f, pd_feature *out, double x, bool learn)
{
    if (!isfinite(x))
        return 0;
    x = apply_transforms(f, x);
    if (f->conf.n_buckets) {
        uint32_t b = 0;
        while (b < f->conf.n_buckets && x >= f->conf.buckets[b])
            b++;
        _Static_assert(sizeof b == 4, "a bucket index hashes as 4 bytes");
        out[0].hash = (uint32_t)hash4(&b, f->seed);
        out[0].value = 1.0f;
        return 1;
    }
    if (f->conf.standardize) {
        pd_norm *nm = &f->norm;
        if (learn) {
            nm->n += 1;
            double d = x - nm->mean;
            nm->mean += d / nm->n;
            nm->m2 += d * (x - nm->mean);
        }
        double var = nm->n > 1 ? nm->m2 / (nm->n - 1) : 0.0;
        double sd = sqrt(var);
        x = sd > 1e-9 ? (x - nm->mean) / sd : 0.0;
    }
    out[0].hash = (uint32_t)f->seed;
    out[0].value = (float)x;
    return 1;
}

static size_t build_text(pd_featurizer *fz, feat *f, const char *s, size_t n, pd_feature *out)
{
    if (n > fz->lower_cap)
        n = fz->lower_cap;
    size_t max = (size_t)f->conf.max_tokens;
    size_t nnz = 0, ntok = 0;
    const char *prev = NULL;
    size_t prev_len = 0;
    size_t i = 0;
    while (i < n && ntok < max) {
        /* a token is a run of ASCII letters/digits and any non-ASCII (UTF-8) bytes */
        while (i < n && (unsigned char)s[i] < 0x80 && !isalnum((unsigned char)s[i]))
            i++;
        size_t start = i;
        while (i < n && ((unsigned char)s[i] >= 0x80 || isalnum((unsigned char)s[i]))) {
            unsigned char c = (unsigned char)s[i];
            fz->lower[i] = (char)(c < 0x80 ? tolower(c) : c);
            i++;
        }
        if (i == start)
            break;
        const char *tok = fz->lower + start;
        size_t len = i - start;
        out[nnz].hash = hash_value(f, tok, len);
        out[nnz].value = 1.0f;
        nnz++;
        if (f->conf.bigrams && prev) {
            /* the bigram is hashed as "prev tok": the two tokens and the gap between them are
             * contiguous in the lower-cased copy once the gap is a single space */
            char pair[512];
            if (prev_len + 1 + len <= sizeof pair) {
                memcpy(pair, prev, prev_len);
                pair[prev_len] = ' ';
                memcpy(pair + prev_len + 1, tok, len);
                out[nnz].hash = hash_value(f, pair, prev_len + 1 + len);
                out[nnz].value = 1.0f;
                nnz++;
            }
        }
        prev = tok;
        prev_len = len;
        ntok++;
    }
    return nnz;
}

/* A cross's coordinate: the hash of its parts' hashes, in order. */
static uint32_t cross_hash(const feat *f, const uint32_t *hs, size_t k)
{
    _Static_assert(PD_MAX_CROSS == 3, "crosses hash 2 or 3 part hashes");
    if (k == 2)
        return (uint32_t)hash8(hs, f->seed);
    if (k == 3)
        return (uint32_t)hash12(hs, f->seed);
    return hash_value(f, hs, k * sizeof hs[0]);
}

static size_t build_cross(pd_featurizer *fz, feat *f, pd_feature *out)
{
    const pd_feature *part[PD_MAX_CROSS];
    size_t len[PD_MAX_CROSS], pos[PD_MAX_CROSS] = {0};
    size_t k = f->conf.n_cross;
    bool single = true;
    for (size_t i = 0; i < k; i++) {
        const feat *c = &fz->f[f->conf.cross[i]];
        part[i] = fz->buf + c->offset;
        len[i] = c->nnz;
        if (len[i] == 0)
            return 0;
        single &= len[i] == 1;
    }
    if (single) { /* the usual case: one coordinate per part, so one out (max_nnz >= 1) */
        uint32_t hs[PD_MAX_CROSS];
        float v = 1.0f;
        for (size_t i = 0; i < k; i++) {
            hs[i] = part[i][0].hash;
            v *= part[i][0].value;
        }
        out[0].hash = cross_hash(f, hs, k);
        out[0].value = v;
        return 1;
    }
    size_t nnz = 0;
    while (nnz < f->max_nnz) {
        uint32_t hs[PD_MAX_CROSS];
        float v = 1.0f;
        for (size_t i = 0; i < k; i++) {
            hs[i] = part[i][pos[i]].hash;
            v *= part[i][pos[i]].value;
        }
        out[nnz].hash = cross_hash(f, hs, k);
        out[nnz].value = v;
        nnz++;
        size_t i = 0;
        while (i < k && ++pos[i] == len[i])
            pos[i++] = 0;
        if (i == k)
            break;
    }
    return nnz;
}

/* A field-based feature got nothing from its field: absent (or null), or of a type it cannot
 * use (an object or array where a scalar belongs, a string for a number, ...). */
static void count_miss(feat *f, const pd_value *v, bool learn)
{
    if (!learn)
        return;
    if (!v || v->kind == PD_VALUE_MISSING)
        f->missing++;
    else
        f->wrong_type++;
}

static size_t build_one(pd_featurizer *fz, feat *f, const pd_event *ev, const pd_user_state *st,
                        const pd_user *u, const pd_user_before *before, bool learn)
{
    pd_feature *out = fz->buf + f->offset;
    const pd_value *v = f->slot >= 0 ? &ev->fields[f->slot] : NULL;
    switch (f->conf.kind) {
    case PD_FEAT_CATEGORICAL: {
        const char *s;
        size_t n;
        if (!v || !scalar_text(fz, v, &s, &n)) {
            count_miss(f, v, learn);
            return 0;
        }
        uint64_t h = hash_bytes(s, n, f->seed);
        out[0].hash =
            (f->vocab.limit && !vocab_admit(&f->vocab, h, learn)) ? f->h_oov : (uint32_t)h;
        out[0].value = 1.0f;
        return 1;
    }
    case PD_FEAT_NUMERIC:
        if (!v || (v->kind != PD_VALUE_NUMBER && v->kind != PD_VALUE_BOOL)) {
            count_miss(f, v, learn);
            return 0;
        }
        return emit_number(f, out, v->num, learn);
    case PD_FEAT_TEXT:
        if (!v || v->kind != PD_VALUE_STRING) {
            count_miss(f, v, learn);
            return 0;
        }
        return build_text(fz, f, v->str, v->len, out);
    case PD_FEAT_RECENCY: {
        int64_t prev = f->conf.event_type < 0 ? before->last_ts_ms
                                              : before->last_ts_by_type[f->conf.event_type];
        if (prev == INT64_MIN) {
            out[0].hash = f->h_never;
            out[0].value = 1.0f;
            return 1;
        }
        int64_t gap = ev->ts_ms > prev ? ev->ts_ms - prev : 0;
        return emit_number(f, out, (double)gap / 1000.0, learn);
    }
    case PD_FEAT_DECAYED_COUNT:
    case PD_FEAT_SPEND:
        return emit_number(f, out, pd_user_acc_value(st, u, (size_t)f->acc, ev->ts_ms), learn);
    case PD_FEAT_DISTINCT_ITEMS:
        return emit_number(f, out, pd_user_sketch_estimate(u, (size_t)f->sketch), learn);
    case PD_FEAT_RECENT_ITEMS: {
        size_t ring = fz->layout.ring_items;
        size_t n = u->ring_len < f->max_nnz ? u->ring_len : f->max_nnz;
        for (size_t i = 0; i < n; i++) {
            uint32_t item = u->ring[(u->ring_head + ring - 1 - i) % ring];
            out[i].hash = hash_value(f, &item, sizeof item);
            out[i].value = 1.0f;
        }
        return n;
    }
    case PD_FEAT_CROSS:
        return build_cross(fz, f, out);
    }
    return 0;
}

void pd_featurizer_build(pd_featurizer *fz, const pd_event *ev, const pd_user_state *st,
                         const pd_user *u, const pd_user_before *before, bool learn)
{
    /* crosses read their parts' results, so they go last */
    if (learn)
        fz->events++;
    for (size_t i = 0; i < fz->n; i++)
        if (fz->f[i].conf.kind != PD_FEAT_CROSS)
            fz->f[i].nnz = build_one(fz, &fz->f[i], ev, st, u, before, learn);
    for (size_t i = 0; i < fz->n; i++)
        if (fz->f[i].conf.kind == PD_FEAT_CROSS)
            fz->f[i].nnz = build_one(fz, &fz->f[i], ev, st, u, before, learn);
}

size_t pd_featurizer_gather(const pd_featurizer *fz, const int *idx, size_t n, pd_feature *out)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const feat *f = &fz->f[idx[i]];
        assert(f->nnz <= f->max_nnz); /* out was sized by pd_featurizer_max_nnz */
        if (f->nnz == 1) /* most features: a copy, not a memcpy call */
            out[k] = fz->buf[f->offset];
        else
            memcpy(out + k, fz->buf + f->offset, f->nnz * sizeof *out);
        k += f->nnz;
    }
    return k;
}

size_t pd_featurizer_max_nnz(const pd_featurizer *fz, const int *idx, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += fz->f[idx[i]].max_nnz;
    return k;
}

const pd_feature *pd_featurizer_get(const pd_featurizer *fz, int feature, size_t *ret_n)
{
    const feat *f = &fz->f[feature];
    *ret_n = f->nnz;
    return fz->buf + f->offset;
}

static void vocab_copy(pd_vocab *dst, const pd_vocab *src)
{
    if (!dst->limit || !src->limit)
        return;
    for (size_t i = 0; i < src->set.cap; i++)
        if (src->set.slots[i].value && dst->set.count < dst->limit)
            vocab_admit(dst, src->set.slots[i].hash, true);
}

void pd_featurizer_adopt(pd_featurizer *fz, const pd_featurizer *old)
{
    for (size_t i = 0; i < fz->n; i++) {
        for (size_t j = 0; j < old->n; j++) {
            if (fz->f[i].state_id != old->f[j].state_id)
                continue;
            fz->f[i].norm = old->f[j].norm;
            vocab_copy(&fz->f[i].vocab, &old->f[j].vocab);
            break;
        }
    }
}

/* ---- snapshots ---- */

/* The features section, version 1 (little-endian, field by field): u32 version, u32 features;
 * per feature: u64 state id (which definition learned it), the normaliser (f64 n, mean, m2),
 * u64 vocabulary size and the admitted values' hashes (u64 each). */
#define FEATURES_VERSION 1

int pd_featurizer_save(const pd_featurizer *fz, pd_bin_writer *w)
{
    pd_bin_put_version(w, FEATURES_VERSION);
    pd_bin_put_u32(w, (uint32_t)fz->n);
    for (size_t i = 0; i < fz->n; i++) {
        const feat *f = &fz->f[i];
        pd_bin_put_u64(w, f->state_id);
        pd_bin_put_f64(w, f->norm.n);
        pd_bin_put_f64(w, f->norm.mean);
        pd_bin_put_f64(w, f->norm.m2);
        pd_bin_put_u64(w, f->vocab.set.count);
        for (size_t k = 0; k < f->vocab.set.cap; k++)
            if (f->vocab.set.slots[k].value)
                pd_bin_put_u64(w, f->vocab.set.slots[k].hash);
    }
    return w->err;
}

int pd_featurizer_load(pd_featurizer *fz, pd_bin_reader *r, char *errbuf, size_t errlen)
{
    pd_bin_get_version(r, "features", FEATURES_VERSION);
    uint32_t n = pd_bin_get_u32(r);
    if (!r->err && n > 100000)
        pd_bin_fail(r, "%u features", n);
    for (uint32_t k = 0; k < n && !r->err; k++) {
        uint64_t id = pd_bin_get_u64(r);
        pd_norm norm = {.n = pd_bin_get_f64(r)};
        norm.mean = pd_bin_get_f64(r);
        norm.m2 = pd_bin_get_f64(r);
        uint64_t nv = pd_bin_get_u64(r);
        if (!r->err && nv > (UINT64_C(1) << 32))
            pd_bin_fail(r, "a vocabulary of %llu values", (unsigned long long)nv);
        feat *f = NULL;
        for (size_t i = 0; i < fz->n; i++)
            if (fz->f[i].state_id == id)
                f = &fz->f[i];
        if (f && !r->err)
            f->norm = norm;
        for (uint64_t v = 0; v < nv && !r->err; v++) {
            uint64_t h = pd_bin_get_u64(r);
            if (f && f->vocab.limit && !r->err)
                vocab_admit(&f->vocab, h, true);
        }
    }
    if (r->err) {
        snprintf(errbuf, errlen, "feature state section: %s", r->why[0] ? r->why : "truncated");
        return -EINVAL;
    }
    return 0;
}

bool pd_featurizer_coverage(const pd_featurizer *fz, size_t i, pd_feature_coverage *ret_cov)
{
    if (i >= fz->n)
        return false;
    const feat *f = &fz->f[i];
    bool has_field = f->slot >= 0 && (f->conf.kind == PD_FEAT_CATEGORICAL ||
                                      f->conf.kind == PD_FEAT_NUMERIC ||
                                      f->conf.kind == PD_FEAT_TEXT);
    if (!has_field)
        return false;
    *ret_cov = (pd_feature_coverage){
        .events = fz->events, .missing = f->missing, .wrong_type = f->wrong_type};
    return true;
}

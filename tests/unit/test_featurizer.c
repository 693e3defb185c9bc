/* Tests for pipeline/featurizer.c against independent reference hashes
 * (tests/unit/reference/pipeline_reference.py, python's xxhash): categorical, numeric with
 * transforms and online standardisation, buckets, crosses, text, the user-state features,
 * gather and vocabularies. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "pipeline/featurizer.h"
#include "reference/pipeline_fixtures.h"

#define ERRLEN       256
#define HOUR         INT64_C(3600000)
#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

enum { VIEW, CLICK, ADD_TO_CART, PURCHASE, REVIEW, N_TYPES };

static char *type_names[] = {"view", "click", "add_to_cart", "purchase", "review"};

static pd_transform tf_log1p[] = {{.kind = PD_TF_LOG1P}};
static pd_transform tf_clip_log1p[] = {{.kind = PD_TF_CLIP, .lo = 0, .hi = 5},
                                       {.kind = PD_TF_LOG1P}};
static pd_transform tf_log1p_clip[] = {{.kind = PD_TF_LOG1P},
                                       {.kind = PD_TF_CLIP, .lo = 0, .hi = 2}};
static double price_buckets[] = {10, 50, 100};

/* A featurizer with its own user store, as the engine pairs them. */
typedef struct fx {
    pd_featurizer *fz;
    pd_user_state *st;
} fx;

static fx fx_new(pd_feature_conf *features, size_t n, const int *slots)
{
    pd_config c;
    char err[ERRLEN] = "";
    fx f;

    memset(&c, 0, sizeof c);
    c.events.types = type_names;
    c.events.n_types = N_TYPES;
    c.events.forget_type = -1;
    c.events.max_message_bytes = 65536;
    c.events.max_string_length = 1024;
    c.features = features;
    c.n_features = n;
    f.fz = pd_featurizer_new(&c, slots, err, sizeof err);
    if (!f.fz)
        fail_msg("pd_featurizer_new: %s", err);
    f.st = pd_user_state_new(pd_featurizer_layout(f.fz), err, sizeof err);
    if (!f.st)
        fail_msg("pd_user_state_new: %s", err);
    return f;
}

static void fx_free(fx *f)
{
    pd_user_state_free(f->st);
    pd_featurizer_free(f->fz);
}

static pd_value str_val(const char *s)
{
    return (pd_value){.kind = PD_VALUE_STRING, .str = s, .len = strlen(s)};
}

static pd_value num_val(double x)
{
    return (pd_value){.kind = PD_VALUE_NUMBER, .num = x};
}

static pd_value bool_val(bool b)
{
    return (pd_value){.kind = PD_VALUE_BOOL, .num = b ? 1.0 : 0.0};
}

static const pd_value missing = {.kind = PD_VALUE_MISSING};

/* One event through the pipeline's order: capture, apply to the user, build. */
static void fx_event(fx *f, const char *user, int type, int64_t ts, const pd_value *fields,
                     size_t n_fields, bool has_item, uint32_t item, bool has_value, double value,
                     bool learn)
{
    pd_user *u = pd_user_state_get(f->st, user, strlen(user), ts, NULL);
    pd_user_before before;
    pd_event ev;

    assert_non_null(u);
    memset(&ev, 0, sizeof ev);
    ev.user = user;
    ev.user_len = strlen(user);
    ev.item = "";
    ev.event_id = "";
    ev.text = "";
    ev.type = type;
    ev.ts_ms = ts;
    ev.has_value = has_value;
    ev.value = value;
    ev.fields = fields;
    ev.n_fields = n_fields;
    pd_user_before_capture(u, N_TYPES, &before);
    pd_user_state_apply(f->st, u, type, ts, item, has_item, value, has_value);
    pd_featurizer_build(f->fz, &ev, f->st, u, &before, learn);
}

/* Asserts feature i built exactly one coordinate (hash, value). */
static void expect_one(const fx *f, int i, uint32_t hash, double value)
{
    size_t n = 99;
    const pd_feature *x = pd_featurizer_get(f->fz, i, &n);

    if (n != 1)
        fail_msg("feature %d: %zu coordinates, want 1", i, n);
    if (x[0].hash != hash)
        fail_msg("feature %d: hash 0x%08x, want 0x%08x", i, x[0].hash, hash);
    if (!(fabs(x[0].value - value) <= 1e-6 * (1.0 + fabs(value))))
        fail_msg("feature %d: value %.9g, want %.9g", i, (double)x[0].value, value);
}

static void expect_none(const fx *f, int i)
{
    size_t n = 99;

    pd_featurizer_get(f->fz, i, &n);
    if (n != 0)
        fail_msg("feature %d: %zu coordinates, want none", i, n);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

    return x < y ? -1 : x > y;
}

/* Asserts feature i's hashes are, as a multiset, want[0..n), every value 1. */
static void expect_hash_set(const fx *f, int i, const uint32_t *want, size_t n_want)
{
    size_t n = 0;
    const pd_feature *x = pd_featurizer_get(f->fz, i, &n);
    uint32_t got[256];

    if (n != n_want)
        fail_msg("feature %d: %zu coordinates, want %zu", i, n, n_want);
    for (size_t k = 0; k < n; k++) {
        got[k] = x[k].hash;
        assert_true(x[k].value == 1.0f);
    }
    qsort(got, n, sizeof got[0], cmp_u32);
    for (size_t k = 0; k < n; k++)
        if (got[k] != want[k])
            fail_msg("feature %d: sorted hash %zu is 0x%08x, want 0x%08x", i, k, got[k], want[k]);
}

/* ---- the event-field features ---- */

enum {
    F_COUNTRY,
    F_DEVICE,
    F_PRICE_LOG,
    F_PRICE_STD,
    F_PRICE_BUCKET,
    F_COUNTRY_X_DEVICE,
    F_COUNTRY_X_PRICE,
    F_CROSS_3,
    F_REVIEW,
    F_AGE,
    F_MEMBER,
    F_PRICE_CLIP,
    F_REVIEW_X_COUNTRY,
    N_FIELD_FEATURES
};

/* event field slots */
enum { S_COUNTRY, S_DEVICE, S_PRICE, S_TEXT, S_AGE, S_MEMBER, N_SLOTS };

static pd_feature_conf field_features[N_FIELD_FEATURES] = {
    [F_COUNTRY] = {.name = "country", .kind = PD_FEAT_CATEGORICAL, .field = "context.country"},
    [F_DEVICE] = {.name = "device", .kind = PD_FEAT_CATEGORICAL, .field = "context.device"},
    [F_PRICE_LOG] = {.name = "price_log",
                     .kind = PD_FEAT_NUMERIC,
                     .field = "price",
                     .transforms = tf_log1p,
                     .n_transforms = 1},
    [F_PRICE_STD] = {.name = "price_std",
                     .kind = PD_FEAT_NUMERIC,
                     .field = "price",
                     .standardize = true},
    [F_PRICE_BUCKET] = {.name = "price_bucket",
                        .kind = PD_FEAT_NUMERIC,
                        .field = "price",
                        .buckets = price_buckets,
                        .n_buckets = 3},
    [F_COUNTRY_X_DEVICE] = {.name = "country_x_device",
                            .kind = PD_FEAT_CROSS,
                            .cross = {F_COUNTRY, F_DEVICE},
                            .n_cross = 2},
    [F_COUNTRY_X_PRICE] = {.name = "country_x_price",
                           .kind = PD_FEAT_CROSS,
                           .cross = {F_COUNTRY, F_PRICE_LOG},
                           .n_cross = 2},
    [F_CROSS_3] = {.name = "country_x_device_x_price",
                   .kind = PD_FEAT_CROSS,
                   .cross = {F_COUNTRY, F_DEVICE, F_PRICE_LOG},
                   .n_cross = 3},
    [F_REVIEW] = {.name = "review",
                  .kind = PD_FEAT_TEXT,
                  .field = "text",
                  .bigrams = true,
                  .max_tokens = 100},
    [F_AGE] = {.name = "age", .kind = PD_FEAT_CATEGORICAL, .field = "age"},
    [F_MEMBER] = {.name = "member", .kind = PD_FEAT_CATEGORICAL, .field = "member"},
    [F_PRICE_CLIP] = {.name = "price_clip",
                      .kind = PD_FEAT_NUMERIC,
                      .field = "price",
                      .transforms = tf_clip_log1p,
                      .n_transforms = 2},
    [F_REVIEW_X_COUNTRY] = {.name = "review_x_country",
                            .kind = PD_FEAT_CROSS,
                            .cross = {F_REVIEW, F_COUNTRY},
                            .n_cross = 2},
};

static const int field_slots[N_FIELD_FEATURES] = {
    [F_COUNTRY] = S_COUNTRY,   [F_DEVICE] = S_DEVICE,      [F_PRICE_LOG] = S_PRICE,
    [F_PRICE_STD] = S_PRICE,   [F_PRICE_BUCKET] = S_PRICE, [F_COUNTRY_X_DEVICE] = -1,
    [F_COUNTRY_X_PRICE] = -1,  [F_CROSS_3] = -1,           [F_REVIEW] = S_TEXT,
    [F_AGE] = S_AGE,           [F_MEMBER] = S_MEMBER,      [F_PRICE_CLIP] = S_PRICE,
    [F_REVIEW_X_COUNTRY] = -1,
};

static fx field_fx(void)
{
    return fx_new(field_features, N_FIELD_FEATURES, field_slots);
}

static void test_feature_hash(void **state)
{
    (void)state;
    /* python: xxh3_64_intdigest(value, seed=xxh3_64_intdigest(name)) & 0xffffffff */
    assert_int_equal(pd_feature_hash("country", "DE", 2), REF_COUNTRY_DE);
    assert_int_equal(pd_feature_hash("country", "FR", 2), REF_COUNTRY_FR);
    assert_int_equal(pd_feature_hash("country", "", 0), REF_COUNTRY_EMPTY);
    assert_int_equal(pd_feature_hash("device", "mobile", 6), REF_DEVICE_MOBILE);
    /* only len bytes of the value count */
    assert_int_equal(pd_feature_hash("country", "DEU", 2), REF_COUNTRY_DE);
}

static void test_categorical(void **state)
{
    (void)state;
    fx f = field_fx();
    pd_value v[N_SLOTS] = {str_val("DE"), str_val("mobile"), missing,
                           missing,       num_val(30.0),     bool_val(true)};

    fx_event(&f, "u", VIEW, 1000, v, N_SLOTS, false, 0, false, 0, true);
    expect_one(&f, F_COUNTRY, REF_COUNTRY_DE, 1.0);
    expect_one(&f, F_DEVICE, REF_DEVICE_MOBILE, 1.0);
    expect_one(&f, F_AGE, REF_AGE_30, 1.0); /* 30.0 is hashed as "30" */
    expect_one(&f, F_MEMBER, REF_MEMBER_TRUE, 1.0);
    /* a missing field gives no coordinate */
    expect_none(&f, F_PRICE_LOG);
    expect_none(&f, F_REVIEW);

    v[S_COUNTRY] = str_val("FR");
    v[S_AGE] = num_val(-4.0);
    v[S_MEMBER] = bool_val(false);
    fx_event(&f, "u", VIEW, 2000, v, N_SLOTS, false, 0, false, 0, true);
    expect_one(&f, F_COUNTRY, REF_COUNTRY_FR, 1.0);
    expect_one(&f, F_AGE, REF_AGE_MINUS_4, 1.0);
    expect_one(&f, F_MEMBER, REF_MEMBER_FALSE, 1.0);

    v[S_COUNTRY] = str_val("");
    v[S_AGE] = num_val(2.5); /* "%.17g": "2.5" */
    v[S_MEMBER] = (pd_value){.kind = PD_VALUE_OTHER};
    fx_event(&f, "u", VIEW, 3000, v, N_SLOTS, false, 0, false, 0, true);
    expect_one(&f, F_COUNTRY, REF_COUNTRY_EMPTY, 1.0);
    expect_one(&f, F_AGE, REF_AGE_2_5, 1.0);
    expect_none(&f, F_MEMBER); /* an object is no categorical value */

    v[S_AGE] = num_val(0.1); /* "%.17g": "0.10000000000000001" */
    fx_event(&f, "u", VIEW, 4000, v, N_SLOTS, false, 0, false, 0, true);
    expect_one(&f, F_AGE, REF_AGE_0_1, 1.0);
    fx_free(&f);
}

/* Coverage counts, per field-based feature, the events (built with learn) whose field was
 * absent and those whose field had a type the feature cannot use; read-only builds and
 * features without a field are not counted. */
static void test_coverage(void **state)
{
    (void)state;
    fx f = field_fx();
    pd_value v[N_SLOTS] = {str_val("DE"), missing, num_val(3), str_val("great"), missing,
                           (pd_value){.kind = PD_VALUE_OTHER}};
    fx_event(&f, "u", VIEW, 1000, v, N_SLOTS, false, 0, false, 0, true);
    v[S_PRICE] = str_val("cheap"); /* a string where a number belongs */
    v[S_TEXT] = num_val(4);       /* a number where text belongs */
    v[S_COUNTRY] = (pd_value){.kind = PD_VALUE_OTHER}; /* an object as a category */
    fx_event(&f, "u", VIEW, 2000, v, N_SLOTS, false, 0, false, 0, true);
    fx_event(&f, "u", VIEW, 3000, v, N_SLOTS, false, 0, false, 0, false); /* not counted */
    pd_feature_coverage c;
    assert_true(pd_featurizer_coverage(f.fz, F_COUNTRY, &c));
    assert_true(c.events == 2 && c.missing == 0 && c.wrong_type == 1);
    assert_true(pd_featurizer_coverage(f.fz, F_DEVICE, &c));
    assert_true(c.missing == 2 && c.wrong_type == 0);
    assert_true(pd_featurizer_coverage(f.fz, F_PRICE_LOG, &c));
    assert_true(c.missing == 0 && c.wrong_type == 1);
    assert_true(pd_featurizer_coverage(f.fz, F_REVIEW, &c));
    assert_true(c.missing == 0 && c.wrong_type == 1);
    assert_true(pd_featurizer_coverage(f.fz, F_AGE, &c));
    assert_true(c.missing == 2 && c.wrong_type == 0);
    assert_true(pd_featurizer_coverage(f.fz, F_MEMBER, &c));
    assert_true(c.missing == 0 && c.wrong_type == 2);
    assert_false(pd_featurizer_coverage(f.fz, F_COUNTRY_X_DEVICE, &c)); /* no field */
    assert_false(pd_featurizer_coverage(f.fz, N_FIELD_FEATURES, &c));
    fx_free(&f);
}

static void test_numeric_transforms(void **state)
{
    (void)state;
    fx f = field_fx();
    pd_value v[N_SLOTS] = {missing, missing, num_val(9.0), missing, missing, missing};

    fx_event(&f, "u", VIEW, 1000, v, N_SLOTS, false, 0, false, 0, true);
    /* log1p(9) = ln 10 = 2.302585093 */
    expect_one(&f, F_PRICE_LOG, REF_PRICE_LOG, log(10.0));
    /* clip to [0, 5] first: log1p(5) = ln 6 = 1.791759469 */
    expect_one(&f, F_PRICE_CLIP, REF_PRICE_CLIP, log(6.0));

    v[S_PRICE] = num_val(-9.0);
    fx_event(&f, "u", VIEW, 2000, v, N_SLOTS, false, 0, false, 0, true);
    /* log1p is symmetric: -log1p(9) */
    expect_one(&f, F_PRICE_LOG, REF_PRICE_LOG, -log(10.0));
    /* clipped to 0, log1p(0) = 0 */
    expect_one(&f, F_PRICE_CLIP, REF_PRICE_CLIP, 0.0);

    v[S_PRICE] = str_val("12");
    fx_event(&f, "u", VIEW, 3000, v, N_SLOTS, false, 0, false, 0, true);
    expect_none(&f, F_PRICE_LOG); /* a string is no number */
    fx_free(&f);
}

static void test_standardize(void **state)
{
    (void)state;
    fx f = field_fx();
    pd_value v[N_SLOTS] = {missing, missing, missing, missing, missing, missing};
    const double xs[] = {1, 2, 3, 4};

    /* Welford over 1, 2, 3, 4, sample variance including the current value (by hand:
     * 2nd: mean 1.5, sd sqrt(0.5), z = 0.7071; 4th: mean 2.5, sd sqrt(5/3), z = 1.161895;
     * the 1st has sd 0 and gives 0) */
    for (size_t i = 0; i < ARRAY_LEN(xs); i++) {
        v[S_PRICE] = num_val(xs[i]);
        fx_event(&f, "u", VIEW, 1000 + (int64_t)i, v, N_SLOTS, false, 0, false, 0, true);
        expect_one(&f, F_PRICE_STD, REF_PRICE_STD, ref_std_z[i]);
    }
    assert_true(fabs(ref_std_z[3] - 1.161895) < 1e-6);
    /* scoring without learning uses the statistics but does not move them: twice the same */
    v[S_PRICE] = num_val(10.0);
    fx_event(&f, "u", VIEW, 2000, v, N_SLOTS, false, 0, false, 0, false);
    expect_one(&f, F_PRICE_STD, REF_PRICE_STD, REF_STD_PEEK); /* (10 - 2.5) / sqrt(5/3) */
    fx_event(&f, "u", VIEW, 2001, v, N_SLOTS, false, 0, false, 0, false);
    expect_one(&f, F_PRICE_STD, REF_PRICE_STD, REF_STD_PEEK);
    /* the next learned value sees only 1..4 before it: 1..5 gives (5 - 3) / sqrt(2.5) */
    v[S_PRICE] = num_val(5.0);
    fx_event(&f, "u", VIEW, 2002, v, N_SLOTS, false, 0, false, 0, true);
    expect_one(&f, F_PRICE_STD, REF_PRICE_STD, REF_STD_NEXT);

    /* a constant stream has sd 0: the value is 0, not NaN */
    fx g = field_fx();
    v[S_PRICE] = num_val(7.0);
    for (int i = 0; i < 3; i++) {
        fx_event(&g, "u", VIEW, 1000 + i, v, N_SLOTS, false, 0, false, 0, true);
        expect_one(&g, F_PRICE_STD, REF_PRICE_STD, 0.0);
    }
    fx_free(&g);
    fx_free(&f);
}

static void test_buckets(void **state)
{
    (void)state;
    fx f = field_fx();
    pd_value v[N_SLOTS] = {missing, missing, missing, missing, missing, missing};
    /* boundaries 10, 50, 100: bucket = how many boundaries are <= x */
    const struct {
        double x;
        uint32_t hash;
    } cases[] = {
        {-3, REF_PRICE_BUCKET_0},   {5, REF_PRICE_BUCKET_0},    {10, REF_PRICE_BUCKET_1},
        {49.9, REF_PRICE_BUCKET_1}, {50, REF_PRICE_BUCKET_2},   {75, REF_PRICE_BUCKET_2},
        {100, REF_PRICE_BUCKET_3},  {1000, REF_PRICE_BUCKET_3},
    };

    for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
        v[S_PRICE] = num_val(cases[i].x);
        fx_event(&f, "u", VIEW, 1000 + (int64_t)i, v, N_SLOTS, false, 0, false, 0, true);
        expect_one(&f, F_PRICE_BUCKET, cases[i].hash, 1.0);
    }
    fx_free(&f);
}

static void test_cross(void **state)
{
    (void)state;
    fx f = field_fx();
    pd_value v[N_SLOTS] = {str_val("DE"), str_val("mobile"), num_val(9.0),
                           missing,       missing,           missing};

    fx_event(&f, "u", VIEW, 1000, v, N_SLOTS, false, 0, false, 0, true);
    /* hash of the parts' uint32 LE hashes, seeded with the cross's name; value = product */
    expect_one(&f, F_COUNTRY_X_DEVICE, REF_CROSS_COUNTRY_DEVICE, 1.0);
    expect_one(&f, F_COUNTRY_X_PRICE, REF_CROSS_COUNTRY_PRICE, log(10.0));
    expect_one(&f, F_CROSS_3, REF_CROSS_3, log(10.0));
    assert_int_not_equal(REF_CROSS_COUNTRY_DEVICE, REF_COUNTRY_DE);
    assert_int_not_equal(REF_CROSS_COUNTRY_DEVICE, REF_DEVICE_MOBILE);

    /* a missing part: no cross coordinates */
    v[S_DEVICE] = missing;
    fx_event(&f, "u", VIEW, 2000, v, N_SLOTS, false, 0, false, 0, true);
    expect_none(&f, F_COUNTRY_X_DEVICE);
    expect_none(&f, F_CROSS_3);
    expect_one(&f, F_COUNTRY_X_PRICE, REF_CROSS_COUNTRY_PRICE, log(10.0));

    /* value of a product: log1p(-9) * 1 */
    v[S_DEVICE] = str_val("mobile");
    v[S_PRICE] = num_val(-9.0);
    fx_event(&f, "u", VIEW, 3000, v, N_SLOTS, false, 0, false, 0, true);
    expect_one(&f, F_COUNTRY_X_PRICE, REF_CROSS_COUNTRY_PRICE, -log(10.0));
    expect_one(&f, F_COUNTRY_X_DEVICE, REF_CROSS_COUNTRY_DEVICE, 1.0);
    fx_free(&f);
}

#define REVIEW_TEXT "Great phone, GREAT battery!  CAF\xc3\x89 caf\xc3\xa9 -- 4k"

static void test_text(void **state)
{
    (void)state;
    pd_value v[N_SLOTS] = {missing, missing, missing, str_val(REVIEW_TEXT), missing, missing};

    /* tokens: great phone great battery caf\xc3\x89 caf\xc3\xa9 4k (only ASCII is lowered);
     * bigrams "great phone", "phone great", ... */
    fx f = field_fx();
    fx_event(&f, "u", REVIEW, 1000, v, N_SLOTS, false, 0, false, 0, true);
    expect_hash_set(&f, F_REVIEW, ref_text_bigrams, ARRAY_LEN(ref_text_bigrams));
    expect_none(&f, F_REVIEW_X_COUNTRY); /* no country */
    /* crossed with a one-coordinate feature: one cross coordinate per text coordinate */
    v[S_COUNTRY] = str_val("DE");
    fx_event(&f, "u", REVIEW, 2000, v, N_SLOTS, false, 0, false, 0, true);
    expect_hash_set(&f, F_REVIEW_X_COUNTRY, ref_cross_review_country,
                    ARRAY_LEN(ref_cross_review_country));
    v[S_COUNTRY] = missing;
    fx_free(&f);

    pd_feature_conf unigram = field_features[F_REVIEW];
    unigram.bigrams = false;
    int slot = S_TEXT;
    f = fx_new(&unigram, 1, &slot);
    fx_event(&f, "u", REVIEW, 1000, v, N_SLOTS, false, 0, false, 0, true);
    expect_hash_set(&f, 0, ref_text_all, ARRAY_LEN(ref_text_all));
    /* a token is hashed as its categorical value would be */
    uint32_t great = pd_feature_hash("review", "great", 5);
    size_t seen = 0;
    for (size_t i = 0; i < ARRAY_LEN(ref_text_all); i++)
        seen += ref_text_all[i] == great;
    assert_int_equal(seen, 2);
    /* empty text and text without a token give nothing */
    v[S_TEXT] = str_val("");
    fx_event(&f, "u", REVIEW, 2000, v, N_SLOTS, false, 0, false, 0, true);
    expect_none(&f, 0);
    v[S_TEXT] = str_val(" ,.! ");
    fx_event(&f, "u", REVIEW, 3000, v, N_SLOTS, false, 0, false, 0, true);
    expect_none(&f, 0);
    fx_free(&f);

    /* max_tokens 3: great phone great, and the two bigrams among them */
    pd_feature_conf capped = field_features[F_REVIEW];
    capped.max_tokens = 3;
    v[S_TEXT] = str_val(REVIEW_TEXT);
    f = fx_new(&capped, 1, &slot);
    fx_event(&f, "u", REVIEW, 1000, v, N_SLOTS, false, 0, false, 0, true);
    expect_hash_set(&f, 0, ref_text_capped, ARRAY_LEN(ref_text_capped));
    fx_free(&f);
}

static void test_gather(void **state)
{
    (void)state;
    fx f = field_fx();
    pd_value v[N_SLOTS] = {str_val("DE"), missing, num_val(9.0), missing, num_val(30), missing};
    const int idx[] = {F_AGE, F_COUNTRY, F_COUNTRY_X_PRICE, F_DEVICE, F_PRICE_LOG};
    pd_feature out[16];

    fx_event(&f, "u", VIEW, 1000, v, N_SLOTS, false, 0, false, 0, true);
    assert_int_equal(pd_featurizer_max_nnz(f.fz, idx, ARRAY_LEN(idx)), 5);
    /* the order given, the missing device contributing nothing */
    assert_int_equal(pd_featurizer_gather(f.fz, idx, ARRAY_LEN(idx), out), 4);
    assert_int_equal(out[0].hash, REF_AGE_30);
    assert_int_equal(out[1].hash, REF_COUNTRY_DE);
    assert_int_equal(out[2].hash, REF_CROSS_COUNTRY_PRICE);
    assert_int_equal(out[3].hash, REF_PRICE_LOG);
    assert_true(fabs(out[3].value - log(10.0)) < 1e-6);

    /* text is bounded by max_tokens (and as many bigrams) */
    const int with_text[] = {F_COUNTRY, F_REVIEW};
    assert_int_equal(pd_featurizer_max_nnz(f.fz, with_text, 2), 1 + 200);
    fx_free(&f);
}

static void test_vocabulary(void **state)
{
    (void)state;
    pd_feature_conf c = {.name = "country",
                         .kind = PD_FEAT_CATEGORICAL,
                         .field = "context.country",
                         .vocabulary = 2};
    int slot = 0;
    fx f = fx_new(&c, 1, &slot);
    pd_value v[1];
    size_t n;

    v[0] = str_val("DE");
    fx_event(&f, "u", VIEW, 1, v, 1, false, 0, false, 0, true);
    expect_one(&f, 0, REF_COUNTRY_DE, 1.0);
    /* not learning: FR is not admitted though there is room */
    v[0] = str_val("FR");
    fx_event(&f, "u", VIEW, 2, v, 1, false, 0, false, 0, false);
    uint32_t oov = pd_featurizer_get(f.fz, 0, &n)[0].hash;
    assert_int_equal(n, 1);
    assert_int_not_equal(oov, REF_COUNTRY_FR);
    fx_event(&f, "u", VIEW, 3, v, 1, false, 0, false, 0, true);
    expect_one(&f, 0, REF_COUNTRY_FR, 1.0);
    /* full: the rest share one bucket */
    v[0] = str_val("IT");
    fx_event(&f, "u", VIEW, 4, v, 1, false, 0, false, 0, true);
    expect_one(&f, 0, oov, 1.0);
    v[0] = str_val("ES");
    fx_event(&f, "u", VIEW, 5, v, 1, false, 0, false, 0, true);
    expect_one(&f, 0, oov, 1.0);
    v[0] = str_val("DE");
    fx_event(&f, "u", VIEW, 6, v, 1, false, 0, false, 0, true);
    expect_one(&f, 0, REF_COUNTRY_DE, 1.0);
    fx_free(&f);
}

/* ---- the user-state features ---- */

enum {
    F_SINCE_LAST,
    F_SINCE_CLICK,
    F_CLICKS_1H,
    F_SPEND,
    F_DISTINCT,
    F_RECENT,
    F_SINCE_LAST_LOG,
    N_STATE_FEATURES
};

static pd_feature_conf state_features[N_STATE_FEATURES] = {
    [F_SINCE_LAST] = {.name = "since_last", .kind = PD_FEAT_RECENCY, .event_type = -1},
    [F_SINCE_CLICK] = {.name = "since_click", .kind = PD_FEAT_RECENCY, .event_type = CLICK},
    [F_CLICKS_1H] = {.name = "clicks_1h",
                     .kind = PD_FEAT_DECAYED_COUNT,
                     .event_type = CLICK,
                     .half_life_ms = HOUR},
    [F_SPEND] = {.name = "spend", .kind = PD_FEAT_SPEND, .event_type = PURCHASE},
    [F_DISTINCT] = {.name = "distinct", .kind = PD_FEAT_DISTINCT_ITEMS, .event_type = -1},
    [F_RECENT] = {.name = "recent", .kind = PD_FEAT_RECENT_ITEMS, .event_type = -1, .count = 3},
    [F_SINCE_LAST_LOG] = {.name = "since_last_log",
                          .kind = PD_FEAT_RECENCY,
                          .event_type = -1,
                          .transforms = tf_log1p_clip,
                          .n_transforms = 2},
};

static const int state_slots[N_STATE_FEATURES] = {-1, -1, -1, -1, -1, -1, -1};

static fx state_fx(void)
{
    return fx_new(state_features, N_STATE_FEATURES, state_slots);
}

static void ev(fx *f, const char *user, int type, int64_t ts)
{
    fx_event(f, user, type, ts, NULL, 0, false, 0, false, 0, true);
}

static void test_layout(void **state)
{
    (void)state;
    fx f = state_fx();
    const pd_user_layout *l = pd_featurizer_layout(f.fz);

    assert_int_equal(l->n_types, N_TYPES);
    assert_int_equal(l->n_acc, 2);
    assert_int_equal(l->n_sketch, 1);
    assert_int_equal(l->ring_items, 3);
    assert_int_equal(l->label_types, 0);
    fx_free(&f);
}

static void test_recency(void **state)
{
    (void)state;
    fx f = state_fx();
    size_t n;

    ev(&f, "u", VIEW, 1000);
    /* no earlier event: one "never" coordinate of value 1 */
    const pd_feature *x = pd_featurizer_get(f.fz, F_SINCE_LAST, &n);
    assert_int_equal(n, 1);
    assert_true(x[0].value == 1.0f);
    uint32_t never_last = x[0].hash;
    assert_int_not_equal(never_last, REF_SINCE_LAST);
    x = pd_featurizer_get(f.fz, F_SINCE_CLICK, &n);
    assert_int_equal(n, 1);
    assert_true(x[0].value == 1.0f);
    uint32_t never_click = x[0].hash;
    assert_int_not_equal(never_click, REF_SINCE_CLICK);
    assert_int_not_equal(never_click, never_last);

    ev(&f, "u", VIEW, 61000);
    expect_one(&f, F_SINCE_LAST, REF_SINCE_LAST, 60.0); /* (61000 - 1000) / 1000 */
    expect_one(&f, F_SINCE_CLICK, never_click, 1.0);
    /* log1p(60) = 4.1 clipped to 2 */
    expect_one(&f, F_SINCE_LAST_LOG, REF_SINCE_LAST_LOG, 2.0);

    ev(&f, "u", CLICK, 61500);
    expect_one(&f, F_SINCE_LAST, REF_SINCE_LAST, 0.5);
    expect_one(&f, F_SINCE_CLICK, never_click, 1.0); /* the click itself is not "earlier" */
    expect_one(&f, F_SINCE_LAST_LOG, REF_SINCE_LAST_LOG, log1p(0.5));

    ev(&f, "u", VIEW, 71500);
    expect_one(&f, F_SINCE_LAST, REF_SINCE_LAST, 10.0);
    expect_one(&f, F_SINCE_CLICK, REF_SINCE_CLICK, 10.0);

    /* another user starts from never again, with the same never coordinate */
    ev(&f, "w", CLICK, 80000);
    expect_one(&f, F_SINCE_LAST, never_last, 1.0);
    expect_one(&f, F_SINCE_CLICK, never_click, 1.0);
    fx_free(&f);
}

static void test_decayed_count_and_spend(void **state)
{
    (void)state;
    fx f = state_fx();

    /* the event being built is already counted */
    ev(&f, "u", CLICK, 0);
    expect_one(&f, F_CLICKS_1H, REF_CLICKS_1H, 1.0);
    ev(&f, "u", CLICK, HOUR);
    expect_one(&f, F_CLICKS_1H, REF_CLICKS_1H, 1.5); /* 2^-1 + 1 */
    ev(&f, "u", VIEW, 3 * HOUR);
    expect_one(&f, F_CLICKS_1H, REF_CLICKS_1H, 0.375); /* 1.5 * 2^-2 */
    expect_one(&f, F_SPEND, REF_SPEND, 0.0);

    fx_event(&f, "u", PURCHASE, 4 * HOUR, NULL, 0, false, 0, true, 10.0, true);
    expect_one(&f, F_SPEND, REF_SPEND, 10.0);
    fx_event(&f, "u", PURCHASE, 5 * HOUR, NULL, 0, false, 0, true, 20.5, true);
    expect_one(&f, F_SPEND, REF_SPEND, 30.5); /* half_life 0: a plain sum */
    fx_event(&f, "u", VIEW, 6 * HOUR, NULL, 0, false, 0, true, 7.0, true);
    expect_one(&f, F_SPEND, REF_SPEND, 30.5); /* a view's value is no spend */
    fx_free(&f);
}

static void test_distinct_items(void **state)
{
    (void)state;
    fx f = state_fx();

    fx_event(&f, "u", VIEW, 1, NULL, 0, true, 0x00000001u, false, 0, true);
    /* one bit set: -512 ln(511/512) */
    expect_one(&f, F_DISTINCT, REF_DISTINCT, -512.0 * log(511.0 / 512.0));
    fx_event(&f, "u", VIEW, 2, NULL, 0, true, 0x00000201u, false, 0, true); /* same bit */
    fx_event(&f, "u", VIEW, 3, NULL, 0, false, 0, false, 0, true);          /* no item */
    fx_event(&f, "u", CLICK, 4, NULL, 0, true, 0x00000002u, false, 0, true);
    expect_one(&f, F_DISTINCT, REF_DISTINCT, REF_DISTINCT_3);
    fx_free(&f);
}

static void test_recent_items(void **state)
{
    (void)state;
    fx f = state_fx();
    const uint32_t items[] = {0x11111111u, 0x22222222u, 0xdeadbeefu, 0x00000007u};
    size_t n;

    ev(&f, "u", VIEW, 1);
    expect_none(&f, F_RECENT);
    fx_event(&f, "u", VIEW, 2, NULL, 0, true, items[0], false, 0, true);
    /* ref_recent is newest first over all four: the first item alone is its last entry */
    expect_one(&f, F_RECENT, ref_recent[3], 1.0);
    for (size_t i = 1; i < 4; i++)
        fx_event(&f, "u", CLICK, 2 + (int64_t)i, NULL, 0, true, items[i], false, 0, true);
    const pd_feature *x = pd_featurizer_get(f.fz, F_RECENT, &n);
    assert_int_equal(n, 3); /* count 3: the oldest item has left */
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(x[i].hash, ref_recent[i]);
        assert_true(x[i].value == 1.0f);
    }
    fx_free(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_feature_hash),
        cmocka_unit_test(test_categorical),
        cmocka_unit_test(test_coverage),
        cmocka_unit_test(test_numeric_transforms),
        cmocka_unit_test(test_standardize),
        cmocka_unit_test(test_buckets),
        cmocka_unit_test(test_cross),
        cmocka_unit_test(test_text),
        cmocka_unit_test(test_gather),
        cmocka_unit_test(test_vocabulary),
        cmocka_unit_test(test_layout),
        cmocka_unit_test(test_recency),
        cmocka_unit_test(test_decayed_count_and_spend),
        cmocka_unit_test(test_distinct_items),
        cmocka_unit_test(test_recent_items),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

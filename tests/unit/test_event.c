/* Tests for pipeline/event.cpp: the JSON event decoder. Valid events land in pd_event with the
 * YAML field mapping and the extra paths; every refusal carries the reason the dead-letter
 * header will name, and a refusal never disturbs the next decode. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "pipeline/event.h"

#define ERRLEN 256

static char *type_names[] = {"view", "click", "add_to_cart", "purchase", "review"};

static pd_events_conf events_conf(void)
{
    pd_events_conf c = {
        .field_event_id = "event_id",
        .field_user = "user_id",
        .field_item = "item_id",
        .field_type = "type",
        .field_time = "ts",
        .field_value = "price",
        .field_text = "text",
        .types = type_names,
        .n_types = 5,
        .forget_type = -1,
        .max_message_bytes = 65536,
        .max_string_length = 64,
    };
    return c;
}

static const char *const extra_paths[] = {"context.device", "context.emp.var.rate",
                                          "context.nested.deep", "flag"};
#define N_EXTRA 4

static pd_decoder *new_decoder(void)
{
    pd_events_conf c = events_conf();
    char err[ERRLEN] = "";
    pd_decoder *d = pd_decoder_new(&c, extra_paths, N_EXTRA, err, sizeof err);

    if (!d)
        fail_msg("pd_decoder_new: %s", err);
    return d;
}

static pd_decode_error decode(pd_decoder *d, const char *json, int64_t fallback, pd_event *ev)
{
    char detail[128] = "";

    return pd_decoder_decode(d, json, strlen(json), fallback, ev, detail, sizeof detail);
}

static void assert_str(const char *s, size_t n, const char *want)
{
    if (n != strlen(want) || memcmp(s, want, n) != 0)
        fail_msg("got \"%.*s\", want \"%s\"", (int)n, s, want);
}

static void expect_error(pd_decoder *d, const char *json, pd_decode_error want)
{
    pd_event ev;
    pd_decode_error got = decode(d, json, 1000, &ev);

    if (got != want)
        fail_msg("%s: got %s, want %s", json, pd_decode_error_name(got),
                 pd_decode_error_name(want));
}

/* ---- valid events ---- */

static void test_valid_event(void **state)
{
    (void)state;
    pd_decoder *d = new_decoder();
    pd_event ev;
    const char *json = "{\"event_id\":\"e-81\",\"type\":\"click\",\"user_id\":\"u42\","
                       "\"item_id\":\"sku-9\",\"ts\":1764000000123,\"price\":12.5,"
                       "\"context\":{\"device\":\"mobile\",\"country\":\"DE\","
                       "\"emp.var.rate\":1.5},\"text\":\"optional review text\",\"flag\":true}";

    assert_int_equal(decode(d, json, 0, &ev), PD_DECODE_OK);
    assert_str(ev.user, ev.user_len, "u42");
    assert_str(ev.item, ev.item_len, "sku-9");
    assert_str(ev.event_id, ev.event_id_len, "e-81");
    assert_str(ev.text, ev.text_len, "optional review text");
    assert_int_equal(ev.type, 1); /* click is types[1] */
    assert_true(ev.ts_ms == INT64_C(1764000000123));
    assert_true(ev.has_value);
    assert_true(ev.value == 12.5);

    assert_int_equal(ev.n_fields, N_EXTRA);
    assert_int_equal(ev.fields[0].kind, PD_VALUE_STRING);
    assert_str(ev.fields[0].str, ev.fields[0].len, "mobile");
    /* a path segment matches a whole key, dots and all */
    assert_int_equal(ev.fields[1].kind, PD_VALUE_NUMBER);
    assert_true(ev.fields[1].num == 1.5);
    assert_int_equal(ev.fields[2].kind, PD_VALUE_MISSING);
    assert_int_equal(ev.fields[3].kind, PD_VALUE_BOOL);
    assert_true(ev.fields[3].num == 1.0);
    pd_decoder_free(d);
}

static void test_optional_fields_and_paths(void **state)
{
    (void)state;
    pd_decoder *d = new_decoder();
    pd_event ev;

    /* the same dotted path also reaches nested objects, segment by segment */
    assert_int_equal(decode(d,
                            "{\"user_id\":\"u1\",\"type\":\"view\",\"ts\":5,"
                            "\"context\":{\"emp\":{\"var\":{\"rate\":-2}},"
                            "\"nested\":{\"deep\":{\"x\":1}},\"device\":null}}",
                            0, &ev),
                     PD_DECODE_OK);
    assert_int_equal(ev.fields[1].kind, PD_VALUE_NUMBER);
    assert_true(ev.fields[1].num == -2.0);
    assert_int_equal(ev.fields[2].kind, PD_VALUE_OTHER);   /* an object where a scalar was wanted */
    assert_int_equal(ev.fields[0].kind, PD_VALUE_MISSING); /* null counts as absent */
    /* absent optional fields: empty strings, no value */
    assert_int_equal(ev.item_len, 0);
    assert_int_equal(ev.event_id_len, 0);
    assert_int_equal(ev.text_len, 0);
    assert_non_null(ev.text);
    assert_false(ev.has_value);
    assert_true(ev.ts_ms == 5);

    /* the next event does not see the previous one's fields */
    assert_int_equal(decode(d, "{\"user_id\":\"u2\",\"type\":\"review\",\"ts\":6}", 0, &ev),
                     PD_DECODE_OK);
    assert_int_equal(ev.type, 4);
    for (size_t i = 0; i < N_EXTRA; i++)
        assert_int_equal(ev.fields[i].kind, PD_VALUE_MISSING);

    /* a key that only starts like a path segment is not it */
    assert_int_equal(decode(d,
                            "{\"user_id\":\"u3\",\"type\":\"view\",\"ts\":7,"
                            "\"context\":{\"devices\":\"x\",\"emp.var\":{\"rate\":3}}}",
                            0, &ev),
                     PD_DECODE_OK);
    assert_int_equal(ev.fields[0].kind, PD_VALUE_MISSING);
    assert_int_equal(ev.fields[1].kind, PD_VALUE_NUMBER); /* "emp.var" then "rate" */
    assert_true(ev.fields[1].num == 3.0);
    pd_decoder_free(d);
}

static void test_numeric_user_id(void **state)
{
    (void)state;
    pd_decoder *d = new_decoder();
    pd_event ev;

    assert_int_equal(decode(d, "{\"user_id\":42,\"type\":\"view\",\"ts\":1,\"item_id\":7}", 0, &ev),
                     PD_DECODE_OK);
    assert_str(ev.user, ev.user_len, "42");
    assert_str(ev.item, ev.item_len, "7");
    pd_decoder_free(d);
}

static void test_fallback_time(void **state)
{
    (void)state;
    pd_decoder *d = new_decoder();
    pd_event ev;

    assert_int_equal(decode(d, "{\"user_id\":\"u\",\"type\":\"view\"}", 1764000000999, &ev),
                     PD_DECODE_OK);
    assert_true(ev.ts_ms == INT64_C(1764000000999));
    /* an event's own time wins over the message timestamp */
    assert_int_equal(decode(d, "{\"user_id\":\"u\",\"type\":\"view\",\"ts\":77}", 1000, &ev),
                     PD_DECODE_OK);
    assert_true(ev.ts_ms == 77);
    expect_error(d, "{\"user_id\":\"u\",\"type\":\"view\"}", PD_DECODE_OK);
    pd_event ev2;
    assert_int_equal(decode(d, "{\"user_id\":\"u\",\"type\":\"view\"}", 0, &ev2),
                     PD_DECODE_MISSING_TIME);
    assert_int_equal(decode(d, "{\"user_id\":\"u\",\"type\":\"view\"}", -5, &ev2),
                     PD_DECODE_MISSING_TIME);
    pd_decoder_free(d);
}

/* The buffer is a slice of a larger one: what follows it must not be read as part of the JSON. */
static void test_not_nul_terminated(void **state)
{
    (void)state;
    pd_decoder *d = new_decoder();
    pd_event ev;
    const char *event = "{\"user_id\":\"u9\",\"type\":\"purchase\",\"ts\":3,\"price\":2}";
    size_t n = strlen(event);
    char *buf = malloc(n + 8);

    assert_non_null(buf);
    memcpy(buf, event, n);
    memcpy(buf + n, "GARBAGE!", 8); /* no NUL anywhere */
    assert_int_equal(pd_decoder_decode(d, buf, n, 0, &ev, NULL, 0), PD_DECODE_OK);
    assert_str(ev.user, ev.user_len, "u9");
    assert_int_equal(ev.type, 3);
    assert_true(ev.value == 2.0);
    /* the same bytes with the garbage included are refused */
    assert_int_equal(pd_decoder_decode(d, buf, n + 8, 0, &ev, NULL, 0), PD_DECODE_NOT_JSON);
    free(buf);
    pd_decoder_free(d);
}

/* ---- refusals ---- */

static void test_refusals(void **state)
{
    (void)state;
    pd_decoder *d = new_decoder();

    expect_error(d, "not json", PD_DECODE_NOT_JSON);
    expect_error(d, "", PD_DECODE_NOT_JSON);
    expect_error(d, "{\"user_id\":\"u1\",\"type\":\"view\"", PD_DECODE_NOT_JSON); /* truncated */
    expect_error(d, "{\"user_id\":\"u1\",\"type\":\"vi", PD_DECODE_NOT_JSON);
    expect_error(d, "{\"user_id\":\"u1\",\"type\":\"view\"} x", PD_DECODE_NOT_JSON);
    expect_error(d, "{\"user_id\":\"u1\",\"type\":\"view\"}{}", PD_DECODE_NOT_JSON);
    expect_error(d, "[1]", PD_DECODE_NOT_OBJECT);
    expect_error(d, "\"u1\"", PD_DECODE_NOT_OBJECT);
    expect_error(d, "{\"type\":\"view\"}", PD_DECODE_MISSING_USER);
    expect_error(d, "{\"user_id\":null,\"type\":\"view\"}", PD_DECODE_MISSING_USER);
    expect_error(d, "{\"user_id\":\"\",\"type\":\"view\"}", PD_DECODE_MISSING_USER);
    expect_error(d, "{\"user_id\":{\"id\":1},\"type\":\"view\"}", PD_DECODE_WRONG_TYPE);
    expect_error(d, "{\"user_id\":\"u1\"}", PD_DECODE_MISSING_TYPE);
    expect_error(d, "{\"user_id\":\"u1\",\"type\":\"hover\"}", PD_DECODE_UNKNOWN_TYPE);
    expect_error(d, "{\"user_id\":\"u1\",\"type\":\"View\"}", PD_DECODE_UNKNOWN_TYPE);
    expect_error(d, "{\"user_id\":\"u1\",\"type\":\"view\",\"ts\":\"1764000000123\"}",
                 PD_DECODE_WRONG_TYPE);
    expect_error(d, "{\"user_id\":\"u1\",\"type\":\"view\",\"price\":\"12.5\"}",
                 PD_DECODE_WRONG_TYPE);
    expect_error(d, "{\"user_id\":\"u1\",\"type\":\"view\",\"text\":5}", PD_DECODE_WRONG_TYPE);
    /* NUL inside the user id */
    expect_error(d, "{\"user_id\":\"u\\u0000x\",\"type\":\"view\"}", PD_DECODE_BAD_STRING);
    /* out-of-range numbers, mapped or not */
    expect_error(d, "{\"user_id\":\"u1\",\"type\":\"view\",\"price\":1e999}", PD_DECODE_BAD_NUMBER);
    expect_error(d, "{\"user_id\":\"u1\",\"type\":\"view\",\"other\":[1e999]}",
                 PD_DECODE_BAD_NUMBER);
    expect_error(d, "{\"user_id\":\"u1\",\"type\":\"view\",\"ts\":-1}", PD_DECODE_BAD_NUMBER);
    /* invalid UTF-8: a lone continuation byte, and a truncated 2-byte sequence */
    expect_error(d, "{\"user_id\":\"u\x80\",\"type\":\"view\"}", PD_DECODE_INVALID_UTF8);
    expect_error(d, "{\"user_id\":\"u1\",\"type\":\"view\",\"text\":\"\xc3\"}",
                 PD_DECODE_INVALID_UTF8);
    /* not UTF-8 and not JSON either (the parser stops at the unclosed string first): binary
     * is invalid_utf8 wherever its quote bytes fall */
    expect_error(d, "\xff\xfe\"\x01\x90", PD_DECODE_INVALID_UTF8);
    expect_error(d, "{\"user_id\":\"u\x80", PD_DECODE_INVALID_UTF8);
    pd_decoder_free(d);
}

/* A key the pipeline reads, given twice, is refused: parsers disagree on which one wins, so
 * two consumers of one topic could learn different events. Keys it does not read may repeat. */
static void test_duplicate_keys(void **state)
{
    (void)state;
    pd_decoder *d = new_decoder();
    pd_event ev;
    char detail[128] = "";
    const char *dup_user = "{\"user_id\":\"u1\",\"type\":\"view\",\"user_id\":\"u2\"}";

    assert_int_equal(
        pd_decoder_decode(d, dup_user, strlen(dup_user), 1000, &ev, detail, sizeof detail),
        PD_DECODE_DUPLICATE_KEY);
    assert_string_equal(detail, "field \"user_id\" appears twice");
    expect_error(d, "{\"user_id\":\"u1\",\"type\":\"view\",\"type\":\"click\"}",
                 PD_DECODE_DUPLICATE_KEY);
    /* a null is a value too: which one wins still depends on the parser */
    expect_error(d, "{\"user_id\":\"u1\",\"type\":\"view\",\"ts\":5,\"ts\":null}",
                 PD_DECODE_DUPLICATE_KEY);
    /* nested: the path's leaf twice, or the object on its way twice */
    expect_error(d,
                 "{\"user_id\":\"u1\",\"type\":\"view\",\"context\":{\"device\":\"a\","
                 "\"device\":\"b\"}}",
                 PD_DECODE_DUPLICATE_KEY);
    expect_error(d,
                 "{\"user_id\":\"u1\",\"type\":\"view\",\"context\":{\"device\":\"a\"},"
                 "\"context\":{\"os\":\"b\"}}",
                 PD_DECODE_DUPLICATE_KEY);
    /* keys nothing reads may repeat, and the next event is judged on its own */
    assert_int_equal(decode(d,
                            "{\"user_id\":\"u1\",\"type\":\"view\",\"ts\":5,\"x\":1,\"x\":2,"
                            "\"context\":{\"os\":1,\"os\":2,\"device\":\"m\"}}",
                            0, &ev),
                     PD_DECODE_OK);
    assert_str(ev.user, ev.user_len, "u1");
    assert_int_equal(ev.fields[0].kind, PD_VALUE_STRING);
    expect_error(d, dup_user, PD_DECODE_DUPLICATE_KEY);
    assert_int_equal(decode(d, "{\"user_id\":\"u3\",\"type\":\"view\",\"ts\":6}", 0, &ev),
                     PD_DECODE_OK);
    assert_str(ev.user, ev.user_len, "u3");
    pd_decoder_free(d);
}

/* A path through something that is not an object (an array, a string) reaches a value of the
 * wrong type, which features count as such; through null it is missing. */
static void test_path_through_non_object(void **state)
{
    (void)state;
    pd_decoder *d = new_decoder();
    pd_event ev;

    assert_int_equal(decode(d,
                            "{\"user_id\":\"u1\",\"type\":\"view\",\"ts\":5,"
                            "\"context\":[{\"device\":\"m\"}]}",
                            0, &ev),
                     PD_DECODE_OK);
    assert_int_equal(ev.fields[0].kind, PD_VALUE_OTHER); /* context.device */
    assert_int_equal(ev.fields[1].kind, PD_VALUE_OTHER); /* context.emp.var.rate */
    assert_int_equal(ev.fields[3].kind, PD_VALUE_MISSING);
    assert_int_equal(decode(d,
                            "{\"user_id\":\"u1\",\"type\":\"view\",\"ts\":5,"
                            "\"context\":{\"emp\":\"x\",\"device\":\"m\"}}",
                            0, &ev),
                     PD_DECODE_OK);
    assert_int_equal(ev.fields[0].kind, PD_VALUE_STRING);
    assert_int_equal(ev.fields[1].kind, PD_VALUE_OTHER); /* "emp" is a string */
    assert_int_equal(
        decode(d, "{\"user_id\":\"u1\",\"type\":\"view\",\"ts\":5,\"context\":null}", 0, &ev),
        PD_DECODE_OK);
    assert_int_equal(ev.fields[0].kind, PD_VALUE_MISSING);
    assert_int_equal(ev.fields[1].kind, PD_VALUE_MISSING);
    pd_decoder_free(d);
}

static void test_string_length_limit(void **state)
{
    (void)state;
    pd_decoder *d = new_decoder();
    pd_event ev;
    char user[66], json[256];

    /* 64 bytes is the limit: allowed */
    memset(user, 'a', 64);
    user[64] = '\0';
    snprintf(json, sizeof json, "{\"user_id\":\"%s\",\"type\":\"view\",\"ts\":1}", user);
    assert_int_equal(decode(d, json, 0, &ev), PD_DECODE_OK);
    assert_int_equal(ev.user_len, 64);
    /* 65 is over it */
    memset(user, 'a', 65);
    user[65] = '\0';
    snprintf(json, sizeof json, "{\"user_id\":\"%s\",\"type\":\"view\",\"ts\":1}", user);
    expect_error(d, json, PD_DECODE_STRING_TOO_LONG);

    char detail[128] = "";
    assert_int_equal(pd_decoder_decode(d, json, strlen(json), 0, &ev, detail, sizeof detail),
                     PD_DECODE_STRING_TOO_LONG);
    assert_non_null(strstr(detail, "user")); /* the detail names the field */
    pd_decoder_free(d);
}

static void test_oversize(void **state)
{
    (void)state;
    pd_decoder *d = new_decoder();
    pd_event ev;
    const char *head = "{\"user_id\":\"u1\",\"type\":\"view\",\"ts\":1,\"pad\":\"";
    const char *tail = "\"}";
    size_t limit = 65536;
    char *buf = malloc(limit + 2);

    assert_non_null(buf);
    /* exactly max_message_bytes: decodes */
    memcpy(buf, head, strlen(head));
    memset(buf + strlen(head), 'x', limit - strlen(head) - strlen(tail));
    memcpy(buf + limit - strlen(tail), tail, strlen(tail));
    assert_int_equal(pd_decoder_decode(d, buf, limit, 0, &ev, NULL, 0), PD_DECODE_OK);
    assert_str(ev.user, ev.user_len, "u1");
    /* one byte more: refused before parsing */
    memcpy(buf + limit - strlen(tail), "x\"}", 3);
    assert_int_equal(pd_decoder_decode(d, buf, limit + 1, 0, &ev, NULL, 0), PD_DECODE_OVERSIZE);
    free(buf);
    pd_decoder_free(d);
}

static void test_recovers_after_failure(void **state)
{
    (void)state;
    pd_decoder *d = new_decoder();
    pd_event ev;
    const char *good = "{\"user_id\":\"u5\",\"type\":\"add_to_cart\",\"ts\":10,\"item_id\":\"i\","
                       "\"context\":{\"device\":\"tv\"}}";

    expect_error(d, "{\"user_id\":\"u1\",\"type\":\"view\",\"price\":1e999}", PD_DECODE_BAD_NUMBER);
    assert_int_equal(decode(d, good, 0, &ev), PD_DECODE_OK);
    expect_error(d, "{\"user_id\":\"u\x80\"}", PD_DECODE_INVALID_UTF8);
    expect_error(d, "{\"user_id\":\"u1\",\"type\":\"view\"", PD_DECODE_NOT_JSON);
    expect_error(d, "{\"user_id\":\"u1\",\"type\":\"nope\"}", PD_DECODE_UNKNOWN_TYPE);
    assert_int_equal(decode(d, good, 0, &ev), PD_DECODE_OK);
    assert_str(ev.user, ev.user_len, "u5");
    assert_str(ev.item, ev.item_len, "i");
    assert_int_equal(ev.type, 2);
    assert_true(ev.ts_ms == 10);
    assert_str(ev.fields[0].str, ev.fields[0].len, "tv");
    pd_decoder_free(d);
}

/* ---- the table of top-level keys ---- */

/* A decoder with the usual mapping plus paths[0..n). */
static pd_decoder *decoder_with(const char *const *paths, size_t n)
{
    pd_events_conf c = events_conf();
    char err[ERRLEN] = "";
    pd_decoder *d = pd_decoder_new(&c, paths, n, err, sizeof err);

    if (!d)
        fail_msg("pd_decoder_new: %s", err);
    return d;
}

/* Appends to buf at *at; fails the test when it would not fit. */
static void append(char *buf, size_t size, size_t *at, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void append(char *buf, size_t size, size_t *at, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + *at, size - *at, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= size - *at)
        fail_msg("test event buffer too small");
    *at += (size_t)n;
}

/* Keys of more than 16 bytes that share their length, first 8 and last 8 bytes differ only in
 * the middle: the table keys on exactly those bytes, so they all land in one probe chain and
 * only the comparison of the middle bytes tells them apart. Unknown keys of the same shape are
 * ignored, and one given twice is refused like any other. */
#define N_LONG 24
static void test_keys_colliding_in_the_table(void **state)
{
    (void)state;
    char names[N_LONG][32];
    const char *paths[N_LONG];
    for (int i = 0; i < N_LONG; i++) {
        snprintf(names[i], sizeof names[i], "prefix__%03d__suffix__", i * 2); /* 21 bytes */
        paths[i] = names[i];
    }
    pd_decoder *d = decoder_with(paths, N_LONG);
    pd_event ev;
    char json[4096];
    size_t at = 0;

    append(json, sizeof json, &at, "{\"user_id\":\"u1\",\"type\":\"view\",\"ts\":1");
    /* every configured key in reverse order, each with an unknown neighbour (odd numbers) */
    for (int i = N_LONG - 1; i >= 0; i--)
        append(json, sizeof json, &at, ",\"prefix__%03d__suffix__\":%d,\"prefix__%03d__suffix__\":-1",
               i * 2, 100 + i, i * 2 + 1);
    append(json, sizeof json, &at, "}");
    assert_int_equal(decode(d, json, 0, &ev), PD_DECODE_OK);
    assert_int_equal(ev.n_fields, N_LONG);
    for (int i = 0; i < N_LONG; i++) {
        assert_int_equal(ev.fields[i].kind, PD_VALUE_NUMBER);
        assert_true(ev.fields[i].num == 100 + i);
    }

    /* only some present: the others are missing, not a neighbour's value */
    assert_int_equal(decode(d,
                            "{\"user_id\":\"u1\",\"type\":\"view\",\"ts\":1,"
                            "\"prefix__001__suffix__\":7,\"prefix__004__suffix__\":8}",
                            0, &ev),
                     PD_DECODE_OK);
    for (int i = 0; i < N_LONG; i++)
        assert_int_equal(ev.fields[i].kind, i == 2 ? PD_VALUE_NUMBER : PD_VALUE_MISSING);
    assert_true(ev.fields[2].num == 8);

    /* a colliding configured key twice is a duplicate; an unknown one twice is not */
    char detail[128] = "";
    const char *dup = "{\"user_id\":\"u1\",\"type\":\"view\",\"ts\":1,\"prefix__006__suffix__\":1,"
                      "\"prefix__007__suffix__\":1,\"prefix__006__suffix__\":2}";
    assert_int_equal(pd_decoder_decode(d, dup, strlen(dup), 0, &ev, detail, sizeof detail),
                     PD_DECODE_DUPLICATE_KEY);
    assert_string_equal(detail, "field \"prefix__006__suffix__\" appears twice");
    assert_int_equal(decode(d,
                            "{\"user_id\":\"u1\",\"type\":\"view\",\"ts\":1,"
                            "\"prefix__007__suffix__\":1,\"prefix__007__suffix__\":2}",
                            0, &ev),
                     PD_DECODE_OK);
    pd_decoder_free(d);
}

/* Keys that are prefixes of each other, of every length the table packs differently (1-3,
 * 4-7, 8-16 and more bytes), keys that differ in one inner byte only, and a key that is both a
 * path's leaf and the way into another path. */
static void test_keys_that_are_prefixes(void **state)
{
    (void)state;
    static const char *const paths[] = {
        "k", "kk", "kkk", "kkkk", "kkkkkkk", "kkkkkkkk", "kkkkkkkkkkkkkkkk", "kkkkkkkkkkkkkkkkk",
        "abXde", "a", "a.b", "a.b.c",
    };
    const size_t n = sizeof paths / sizeof paths[0];
    pd_decoder *d = decoder_with(paths, n);
    pd_event ev;

    assert_int_equal(
        decode(d,
               "{\"user_id\":\"u1\",\"type\":\"view\",\"ts\":1,\"kkkkkkkkkkkkkkkkk\":17,"
               "\"kkkkkkkkkkkkkkkk\":16,\"kkkkkkkk\":8,\"kkkkkkk\":7,\"kkkk\":4,\"kkk\":3,"
               "\"kk\":2,\"k\":1,\"kkkkkk\":6,\"kkkkkkkkkkkkkkkkkk\":18,\"abYde\":0,\"abXdf\":0,"
               "\"bbXde\":0,\"abXde\":5,\"\":0,\"a\":{\"b\":{\"c\":9}}}",
               0, &ev),
        PD_DECODE_OK);
    static const double want[] = {1, 2, 3, 4, 7, 8, 16, 17, 5};
    for (size_t i = 0; i < 9; i++) {
        assert_int_equal(ev.fields[i].kind, PD_VALUE_NUMBER);
        assert_true(ev.fields[i].num == want[i]);
    }
    assert_int_equal(ev.fields[9].kind, PD_VALUE_OTHER);  /* "a" is an object */
    assert_int_equal(ev.fields[10].kind, PD_VALUE_OTHER); /* so is "a.b" */
    assert_int_equal(ev.fields[11].kind, PD_VALUE_NUMBER);
    assert_true(ev.fields[11].num == 9);

    /* "a" a number: its leaf, and no way into "a.b" or "a.b.c" */
    assert_int_equal(decode(d, "{\"user_id\":\"u1\",\"type\":\"view\",\"ts\":1,\"a\":3}", 0, &ev),
                     PD_DECODE_OK);
    assert_true(ev.fields[9].kind == PD_VALUE_NUMBER && ev.fields[9].num == 3);
    assert_int_equal(ev.fields[10].kind, PD_VALUE_OTHER);
    assert_int_equal(ev.fields[11].kind, PD_VALUE_OTHER);
    /* the dotted key at the top reaches the same paths as the nested one ... */
    assert_int_equal(
        decode(d, "{\"user_id\":\"u1\",\"type\":\"view\",\"ts\":1,\"a.b.c\":4,\"a.b\":{}}", 0, &ev),
        PD_DECODE_OK);
    assert_int_equal(ev.fields[9].kind, PD_VALUE_MISSING);
    assert_int_equal(ev.fields[10].kind, PD_VALUE_OTHER);
    assert_true(ev.fields[11].kind == PD_VALUE_NUMBER && ev.fields[11].num == 4);
    /* ... so both ways in one event are the same field twice */
    expect_error(d, "{\"user_id\":\"u1\",\"type\":\"view\",\"ts\":1,\"a.b.c\":4,\"a\":{\"b.c\":5}}",
                 PD_DECODE_DUPLICATE_KEY);
    expect_error(d, "{\"user_id\":\"u1\",\"type\":\"view\",\"ts\":1,\"kkk\":1,\"kk\":1,\"kkk\":2}",
                 PD_DECODE_DUPLICATE_KEY);
    /* a key with a NUL byte is not the key without it */
    assert_int_equal(decode(d, "{\"user_id\":\"u1\",\"type\":\"view\",\"ts\":1,\"k\\u0000\":1}", 0,
                            &ev),
                     PD_DECODE_OK);
    assert_int_equal(ev.fields[0].kind, PD_VALUE_MISSING);
    pd_decoder_free(d);
}

/* Hundreds of configured fields (a larger table), one of them the user field again: both read
 * the same key, which is not a duplicate. */
#define N_MANY 400
static void test_many_fields(void **state)
{
    (void)state;
    static char names[N_MANY][16];
    const char *paths[N_MANY + 1];
    for (int i = 0; i < N_MANY; i++) {
        snprintf(names[i], sizeof names[i], i % 2 ? "f%d" : "g.f%d", i);
        paths[i] = names[i];
    }
    paths[N_MANY] = "user_id";
    pd_decoder *d = decoder_with(paths, N_MANY + 1);
    pd_event ev;
    static char json[32768];
    size_t at = 0;

    append(json, sizeof json, &at, "{\"user_id\":\"u7\",\"type\":\"click\",\"ts\":1,\"g\":{");
    for (int i = 0; i < N_MANY; i += 2)
        append(json, sizeof json, &at, "%s\"f%d\":%d", i ? "," : "", i, i);
    append(json, sizeof json, &at, "}");
    for (int i = 1; i < N_MANY; i += 2)
        append(json, sizeof json, &at, ",\"f%d\":%d,\"x%d\":0", i, i, i);
    append(json, sizeof json, &at, "}");
    assert_int_equal(decode(d, json, 0, &ev), PD_DECODE_OK);
    assert_int_equal(ev.n_fields, N_MANY + 1);
    for (int i = 0; i < N_MANY; i++) {
        assert_int_equal(ev.fields[i].kind, PD_VALUE_NUMBER);
        assert_true(ev.fields[i].num == i);
    }
    assert_str(ev.user, ev.user_len, "u7");
    assert_str(ev.fields[N_MANY].str, ev.fields[N_MANY].len, "u7");
    pd_decoder_free(d);
}

static void test_error_names(void **state)
{
    (void)state;
    assert_string_equal(pd_decode_error_name(PD_DECODE_OK), "ok");
    assert_string_equal(pd_decode_error_name(PD_DECODE_NOT_JSON), "not_json");
    assert_string_equal(pd_decode_error_name(PD_DECODE_INVALID_UTF8), "invalid_utf8");
    assert_string_equal(pd_decode_error_name(PD_DECODE_MISSING_USER), "missing_user");
    assert_string_equal(pd_decode_error_name(PD_DECODE_STRING_TOO_LONG), "string_too_long");
    assert_string_equal(pd_decode_error_name(PD_DECODE_MISSING_TIME), "missing_time");
    assert_string_equal(pd_decode_error_name(PD_DECODE_DUPLICATE_KEY), "duplicate_key");
    assert_string_equal(pd_decode_error_name(PD_DECODE__COUNT), "unknown");
    /* every reason has a distinct snake_case name */
    for (int i = 0; i < PD_DECODE__COUNT; i++) {
        const char *a = pd_decode_error_name((pd_decode_error)i);
        for (const char *p = a; *p; p++)
            assert_true((*p >= 'a' && *p <= 'z') || *p == '_' || (*p >= '0' && *p <= '9'));
        for (int j = 0; j < i; j++)
            assert_string_not_equal(a, pd_decode_error_name((pd_decode_error)j));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_event),
        cmocka_unit_test(test_optional_fields_and_paths),
        cmocka_unit_test(test_numeric_user_id),
        cmocka_unit_test(test_fallback_time),
        cmocka_unit_test(test_not_nul_terminated),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_duplicate_keys),
        cmocka_unit_test(test_path_through_non_object),
        cmocka_unit_test(test_string_length_limit),
        cmocka_unit_test(test_oversize),
        cmocka_unit_test(test_recovers_after_failure),
        cmocka_unit_test(test_keys_colliding_in_the_table),
        cmocka_unit_test(test_keys_that_are_prefixes),
        cmocka_unit_test(test_many_fields),
        cmocka_unit_test(test_error_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

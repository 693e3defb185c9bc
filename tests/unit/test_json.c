/* Tests for daemon/json.c and daemon/strbuf.c: the control plane's parser accepts exactly
 * JSON (RFC 8259) with UTF-8 strings, refuses what it must with a position, and the writer's
 * output parses back to the same values. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "daemon/json.h"
#include "daemon/strbuf.h"

static pd_json *parse_ok(const char *text)
{
    char err[256] = "";
    pd_json *doc = pd_json_parse(text, strlen(text), err, sizeof err);
    if (!doc)
        fail_msg("%s: %s", text, err);
    return doc;
}

static void test_object_members(void **state)
{
    (void)state;
    pd_json *doc = parse_ok(" {\"cmd\": \"score\", \"user\": \"u\\u00e9\\n\", \"n\": -1.5e2,"
                            " \"t\": true, \"f\": false, \"z\": null, \"a\": [1, [2], {}]} ");
    const pd_json_node *root = pd_json_root(doc);
    assert_int_equal(pd_json_type_of(root), PD_JSON_OBJECT);
    assert_int_equal(pd_json_count(root), 7);
    size_t len;
    assert_string_equal(pd_json_string(pd_json_get(root, "cmd"), &len), "score");
    assert_int_equal(len, 5);
    assert_string_equal(pd_json_string(pd_json_get(root, "user"), &len), "u\xc3\xa9\n");
    assert_int_equal(len, 4);
    assert_true(pd_json_number(pd_json_get(root, "n")) == -150.0);
    assert_true(pd_json_bool(pd_json_get(root, "t")));
    assert_false(pd_json_bool(pd_json_get(root, "f")));
    assert_int_equal(pd_json_type_of(pd_json_get(root, "z")), PD_JSON_NULL);
    const pd_json_node *a = pd_json_get(root, "a");
    assert_int_equal(pd_json_count(a), 3);
    const pd_json_node *e = pd_json_first(a);
    assert_true(pd_json_number(e) == 1.0);
    e = pd_json_next(e);
    assert_int_equal(pd_json_type_of(e), PD_JSON_ARRAY);
    assert_true(pd_json_number(pd_json_first(e)) == 2.0);
    e = pd_json_next(e);
    assert_int_equal(pd_json_type_of(e), PD_JSON_OBJECT);
    assert_null(pd_json_next(e));
    assert_null(pd_json_get(root, "missing"));
    assert_null(pd_json_string(pd_json_get(root, "n"), NULL));
    assert_true(isnan(pd_json_number(pd_json_get(root, "cmd"))));
    /* members keep their order */
    const char *order[] = {"cmd", "user", "n", "t", "f", "z", "a"};
    size_t i = 0;
    for (const pd_json_node *m = pd_json_first(root); m; m = pd_json_next(m), i++)
        assert_string_equal(pd_json_key(m, NULL), order[i]);
    pd_json_free(doc);
}

static void test_scalars_and_escapes(void **state)
{
    (void)state;
    pd_json *doc = parse_ok("\"\\ud83d\\ude00 \\\"q\\\" \\\\ \\/ \\b\\f\\r\\t \\u0000x\"");
    size_t len;
    const char *s = pd_json_string(pd_json_root(doc), &len);
    const char want[] = "\xf0\x9f\x98\x80 \"q\" \\ / \b\f\r\t \0x";
    assert_int_equal(len, sizeof want - 1);
    assert_memory_equal(s, want, len);
    pd_json_free(doc);
    doc = parse_ok("0");
    assert_true(pd_json_number(pd_json_root(doc)) == 0.0);
    pd_json_free(doc);
    doc = parse_ok("[]");
    assert_int_equal(pd_json_count(pd_json_root(doc)), 0);
    assert_null(pd_json_first(pd_json_root(doc)));
    pd_json_free(doc);
}

static void test_refused(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        size_t len; /* 0: strlen */
        const char *why;
    } bad[] = {
        {"", 0, "end of input"},
        {"   ", 0, "end of input"},
        {"{", 0, "expected a string key"},
        {"{\"a\" 1}", 0, "expected ':'"},
        {"{\"a\":1,}", 0, "expected a string key"},
        {"[1,]", 0, "unexpected character"},
        {"[1 2]", 0, "expected ',' or ']'"},
        {"{\"a\":1 \"b\":2}", 0, "expected ',' or '}'"},
        {"{\"a\":1,\"a\":2}", 0, "duplicate key"},
        {"01", 0, "trailing characters"},
        {"1.", 0, "bad number"},
        {"-", 0, "bad number"},
        {"1e", 0, "bad number"},
        {"+1", 0, "unexpected character"},
        {"NaN", 0, "unexpected character"},
        {"tru", 0, "unexpected character"},
        {"\"abc", 0, "unterminated string"},
        {"\"a\tb\"", 0, "control character"},
        {"\"\\x\"", 0, "bad escape"},
        {"\"\\u12g4\"", 0, "bad \\u escape"},
        {"\"\\ud800\"", 0, "unpaired surrogate"},
        {"\"\\udc00\"", 0, "unpaired surrogate"},
        {"\"\xff\"", 0, "invalid utf-8"},
        {"\"\xc0\xaf\"", 0, "invalid utf-8"},         /* overlong '/' */
        {"\"\xed\xa0\x80\"", 0, "invalid utf-8"},     /* encoded surrogate */
        {"\"\xf4\x90\x80\x80\"", 0, "invalid utf-8"}, /* past U+10FFFF */
        {"\"\xe2\x82\"", 0, "invalid utf-8"},         /* truncated */
        {"{} {}", 0, "trailing characters"},
        {"{}\0", 3, "trailing characters"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char err[256] = "";
        size_t len = bad[i].len ? bad[i].len : strlen(bad[i].text);
        pd_json *doc = pd_json_parse(bad[i].text, len, err, sizeof err);
        if (doc)
            fail_msg("accepted %s", bad[i].text);
        if (!strstr(err, bad[i].why) || !strstr(err, "at byte"))
            fail_msg("%s: message \"%s\" lacks \"%s\"", bad[i].text, err, bad[i].why);
    }
}

static void test_depth_limit(void **state)
{
    (void)state;
    char buf[2 * (PD_JSON_MAX_DEPTH + 2) + 1];
    for (int depth = PD_JSON_MAX_DEPTH; depth <= PD_JSON_MAX_DEPTH + 1; depth++) {
        size_t n = 0;
        for (int i = 0; i <= depth; i++)
            buf[n++] = '[';
        for (int i = 0; i <= depth; i++)
            buf[n++] = ']';
        char err[128] = "";
        pd_json *doc = pd_json_parse(buf, n, err, sizeof err);
        if (depth == PD_JSON_MAX_DEPTH) {
            assert_non_null(doc);
        } else {
            assert_null(doc);
            assert_non_null(strstr(err, "nested too deep"));
        }
        pd_json_free(doc);
    }
}

static void test_writer_round_trip(void **state)
{
    (void)state;
    pd_strbuf sb = PD_STRBUF_INIT;
    const char nasty[] = "q\"b\\s\n\x01\x7f \xc3\xa9 \xff end";
    pd_strbuf_adds(&sb, "{\"s\":");
    pd_json_add_string(&sb, nasty, sizeof nasty - 1);
    pd_strbuf_adds(&sb, ",\"n\":[");
    const double nums[] = {0.1, -2.5e-300, 1e21, 123456789012345.0, 1.0 / 3.0, -0.0};
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
        if (i)
            pd_strbuf_addc(&sb, ',');
        pd_json_add_number(&sb, nums[i]);
    }
    pd_strbuf_adds(&sb, "],\"nan\":");
    pd_json_add_number(&sb, NAN);
    pd_strbuf_adds(&sb, ",\"none\":");
    pd_json_add_str(&sb, NULL);
    pd_strbuf_addc(&sb, '}');
    assert_false(sb.oom);
    pd_json *doc = parse_ok(pd_strbuf_str(&sb));
    const pd_json_node *root = pd_json_root(doc);
    size_t len;
    const char *s = pd_json_string(pd_json_get(root, "s"), &len);
    /* the invalid byte comes back as U+FFFD, everything else as written */
    const char want[] = "q\"b\\s\n\x01\x7f \xc3\xa9 \xef\xbf\xbd end";
    assert_int_equal(len, sizeof want - 1);
    assert_memory_equal(s, want, len);
    size_t i = 0;
    for (const pd_json_node *e = pd_json_first(pd_json_get(root, "n")); e; e = pd_json_next(e), i++)
        assert_true(pd_json_number(e) == nums[i]);
    assert_int_equal(i, sizeof nums / sizeof nums[0]);
    assert_int_equal(pd_json_type_of(pd_json_get(root, "nan")), PD_JSON_NULL);
    assert_int_equal(pd_json_type_of(pd_json_get(root, "none")), PD_JSON_NULL);
    pd_json_free(doc);
    pd_strbuf_release(&sb);
}

static void test_strbuf(void **state)
{
    (void)state;
    pd_strbuf sb = PD_STRBUF_INIT;
    assert_string_equal(pd_strbuf_str(&sb), "");
    for (int i = 0; i < 1000; i++)
        pd_strbuf_addf(&sb, "%d,", i);
    char big[600];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    pd_strbuf_addf(&sb, "%s", big); /* longer than the formatting fast path */
    assert_false(sb.oom);
    assert_int_equal(sb.len, strlen(sb.data));
    assert_memory_equal(sb.data, "0,1,2,", 6);
    assert_non_null(strstr(sb.data, "999,xxxx"));
    size_t cap = sb.cap;
    pd_strbuf_reset(&sb);
    assert_int_equal(sb.len, 0);
    assert_int_equal(sb.cap, cap);
    assert_string_equal(pd_strbuf_str(&sb), "");
    pd_strbuf_release(&sb);
    assert_null(sb.data);
}

static void test_utf8(void **state)
{
    (void)state;
    assert_true(pd_utf8_valid("", 0));
    assert_true(pd_utf8_valid("a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 10));
    assert_false(pd_utf8_valid("\x80", 1));
    assert_false(pd_utf8_valid("\xe0\x80\x80", 3)); /* overlong */
    assert_false(pd_utf8_valid("\xf8\x88\x80\x80\x80", 5));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_object_members),
        cmocka_unit_test(test_scalars_and_escapes),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_writer_round_trip),
        cmocka_unit_test(test_strbuf),
        cmocka_unit_test(test_utf8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

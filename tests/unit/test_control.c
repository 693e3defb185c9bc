/* Tests for the request side of daemon/control.c without sockets: command dispatch, the
 * exact reply shapes, an error reply (never a crash) for every malformed request, and replies
 * that stay valid JSON whatever a command's message holds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "daemon/control.h"

static json_t *cmd_echo(void *ctx, const char *arg, size_t arg_len, char *err, size_t errlen)
{
    (void)ctx;
    (void)err;
    (void)errlen;
    return json_pack("{s:s%}", "user", arg, arg_len);
}

static json_t *cmd_fail(void *ctx, const char *arg, size_t arg_len, char *err, size_t errlen)
{
    (void)ctx;
    (void)arg;
    (void)arg_len;
    /* a message cut in the middle of a UTF-8 sequence, as snprintf truncation leaves it */
    snprintf(err, errlen, "snapshot failed: caf\xc3");
    return NULL;
}

static json_t *cmd_oom(void *ctx, const char *arg, size_t arg_len, char *err, size_t errlen)
{
    (void)ctx;
    (void)arg;
    (void)arg_len;
    (void)err;
    (void)errlen;
    return NULL;
}

static const pd_control_command cmds[] = {
    {"echo", "user", cmd_echo},
    {"fail", NULL, cmd_fail},
    {"oom", NULL, cmd_oom},
};
#define N_CMDS (sizeof cmds / sizeof cmds[0])

static int setup(void **state)
{
    char err[256];
    pd_control *c = pd_control_new(&(pd_control_conf){0}, err, sizeof err);
    *state = c;
    return c ? 0 : -1;
}

static int teardown(void **state)
{
    pd_control_free(*state);
    return 0;
}

/* The reply to req (len 0: strlen), parsed; it must be a JSON object with a boolean "ok". */
static json_t *ask(pd_control *c, const char *req, size_t len)
{
    char *text = pd_control_answer(c, req, len ? len : strlen(req), cmds, N_CMDS, NULL);
    assert_non_null(text);
    json_error_t jerr;
    json_t *reply = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
    if (!reply)
        fail_msg("reply %s is not JSON: %s", text, jerr.text);
    free(text);
    assert_true(json_is_boolean(json_object_get(reply, "ok")));
    return reply;
}

static void assert_reply(pd_control *c, const char *req, const char *want)
{
    char *text = pd_control_answer(c, req, strlen(req), cmds, N_CMDS, NULL);
    assert_non_null(text);
    assert_string_equal(text, want);
    free(text);
}

static void test_replies(void **state)
{
    pd_control *c = *state;
    assert_reply(c, "{\"cmd\":\"echo\",\"user\":\"u1\"}",
                 "{\"ok\":true,\"cmd\":\"echo\",\"result\":{\"user\":\"u1\"}}");
    /* whitespace, escapes, and a NUL inside the argument, which keeps its length */
    assert_reply(c, " {\"user\" : \"a\\u0000\\u00e9\\\"\", \"cmd\":\"echo\"}\n",
                 "{\"ok\":true,\"cmd\":\"echo\",\"result\":{\"user\":\"a\\u0000\xc3\xa9\\\"\"}}");
    assert_reply(c, "{\"cmd\":\"help\"}",
                 "{\"ok\":true,\"cmd\":\"help\",\"result\":{\"commands\":["
                 "{\"cmd\":\"echo\",\"arg\":\"user\"},{\"cmd\":\"fail\",\"arg\":null},"
                 "{\"cmd\":\"oom\",\"arg\":null}]}}");
    assert_reply(c, "{\"cmd\":\"oom\"}",
                 "{\"ok\":false,\"cmd\":\"oom\",\"error\":\"out of memory\"}");
    /* the cut sequence becomes U+FFFD; the reply stays valid UTF-8 */
    assert_reply(c, "{\"cmd\":\"fail\"}",
                 "{\"ok\":false,\"cmd\":\"fail\",\"error\":\"snapshot failed: caf\xef\xbf\xbd\"}");
    pd_control_stats st;
    pd_control_get_stats(c, &st);
    assert_int_equal(st.failed, 2);
    assert_int_equal(st.malformed, 0);
}

static void test_malformed(void **state)
{
    pd_control *c = *state;
    static char deep[2 * 5000];
    memset(deep, '[', 5000);
    memset(deep + 5000, ']', 5000);
    static const struct {
        const char *req;
        size_t len; /* 0: strlen */
        const char *why;
        bool names_cmd; /* the error reply carries "cmd" */
    } bad[] = {
        {"", 0, "invalid json at byte 0", false},
        {"status please", 0, "invalid json", false},
        {"[1,2]", 0, "expected a JSON object such as {\"cmd\":\"status\"}, not an array", false},
        {"\"echo\"", 0, "not a string", false},
        {"42", 0, "not a number", false},
        {"null", 0, "not a null", false},
        {"{\"cmd\":5}", 0, "\"cmd\": a command name (string) is required", false},
        {"{\"user\":\"u1\"}", 0, "a command name", false},
        {"{\"cmd\":\"explode\"}", 0, "unknown command (try \"help\")", false},
        {"{\"cmd\":\"echo\\u0000x\",\"user\":\"u\"}", 0, "unknown command", false},
        {"{\"cmd\":\"help\\u0000\"}", 0, "unknown command", false},
        {"{\"cmd\":\"echo\"}", 0, "\"user\": a non-empty string is required", true},
        {"{\"cmd\":\"echo\",\"user\":\"\"}", 0, "non-empty string", true},
        {"{\"cmd\":\"echo\",\"user\":42}", 0, "non-empty string", true},
        {"{\"cmd\":\"echo\",\"user\":null}", 0, "non-empty string", true},
        {"{\"cmd\":\"fail\",\"verbose\":true}", 0,
         "unknown member \"verbose\" (fail takes no arguments)", true},
        {"{\"cmd\":\"echo\",\"user\":\"u\",\"x\":1}", 0,
         "unknown member \"x\" (echo takes \"user\")", true},
        {"{\"cmd\":\"echo\",\"cmd\":\"fail\"}", 0, "duplicate", false},
        {"{\"cmd\":\"echo\",\"user\":\"\xff\xfe\"}", 0, "invalid json", false},
        {"{\"cmd\":\"echo\",\"user\":\"\\ud800\"}", 0, "invalid json", false},
        {"{\"cmd\":\"echo\"} x", 0, "invalid json", false},
        {"{\"cmd\":\"echo\"}\0", 15, "invalid json", false},
        {"{\"cmd\":\"ec", 0, "invalid json", false},
        {"{\"cmd\":\"echo\",\"user\":1e999}", 0, "invalid json", false},
        {"{\"k\\u0000\":1}", 0, "invalid json", false},
        {deep, sizeof deep, "invalid json", false},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_t *reply = ask(c, bad[i].req, bad[i].len);
        const char *err = json_string_value(json_object_get(reply, "error"));
        assert_true(json_is_false(json_object_get(reply, "ok")));
        if (!err || !strstr(err, bad[i].why))
            fail_msg("request %zu: error \"%s\" lacks \"%s\"", i, err ? err : "(none)", bad[i].why);
        if (bad[i].names_cmd != (json_object_get(reply, "cmd") != NULL))
            fail_msg("request %zu: \"cmd\" %s in the reply", i,
                     bad[i].names_cmd ? "missing" : "unexpected");
        json_decref(reply);
    }
    pd_control_stats st;
    pd_control_get_stats(c, &st);
    assert_int_equal(st.malformed, sizeof bad / sizeof bad[0]);
    assert_int_equal(st.failed, 0);
}

/* Mangled requests (bytes flipped, cut short, spliced) each get one valid JSON reply. */
static void test_garbage(void **state)
{
    pd_control *c = *state;
    static const char *const seeds[] = {
        "{\"cmd\":\"echo\",\"user\":\"u\\u00e9\\n\"}",
        "{\"cmd\":\"help\"}",
        "[{\"cmd\":[1,{\"a\":-0.5e3}]},true,false,null]",
    };
    uint32_t rnd = 12345;
    char buf[128];
    for (int i = 0; i < 20000; i++) {
        const char *seed = seeds[i % 3];
        size_t n = strlen(seed);
        memcpy(buf, seed, n);
        for (int k = 0; k < 1 + i % 4; k++) {
            rnd = rnd * 1103515245u + 12345u;
            buf[(rnd >> 8) % n] = (char)(rnd >> 20);
        }
        rnd = rnd * 1103515245u + 12345u;
        json_decref(ask(c, buf, i % 5 == 0 ? 1 + (rnd >> 8) % n : n));
    }
}

static void test_string(void **state)
{
    (void)state;
    json_t *j = pd_control_string(NULL);
    assert_true(json_is_null(j));
    json_decref(j);
    j = pd_control_string("caf\xc3\xa9");
    assert_string_equal(json_string_value(j), "caf\xc3\xa9");
    json_decref(j);
    j = pd_control_string("snapshots/\xe9t\xe9");
    assert_string_equal(json_string_value(j), "snapshots/\xef\xbf\xbdt\xef\xbf\xbd");
    json_decref(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_replies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_garbage, setup, teardown),
        cmocka_unit_test(test_string),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

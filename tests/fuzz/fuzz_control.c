/* Fuzzes the control plane's request handling (daemon/control.h) without a socket:
 * pd_control_answer() is what pd_control_serve() runs on each one-frame request. Any bytes must
 * get exactly one reply, a JSON object with a boolean "ok". The command table mirrors the
 * daemon's shapes: commands without an argument, with a required string argument, one that
 * fails with a message and one that fails without. The same bytes also go through the string
 * and endpoint helpers the replies and the configuration use. */
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/control.h"
#include "fuzz.h"

static json_t *cmd_status(void *ctx, const char *arg, size_t arg_len, char *err, size_t errlen)
{
    (void)ctx, (void)arg, (void)arg_len, (void)err, (void)errlen;
    return json_pack("{s:s, s:o}", "state", "running", "lag", pd_control_number(1e300 * 1e300));
}

/* Echoes the argument the way the score and forget commands name their user. */
static json_t *cmd_score(void *ctx, const char *arg, size_t arg_len, char *err, size_t errlen)
{
    (void)ctx, (void)err, (void)errlen;
    FUZZ_CHECK(arg != NULL && arg_len > 0 && arg_len <= 4096);
    json_t *user = json_stringn(arg, arg_len);
    return user ? json_pack("{s:o}", "user", user) : NULL;
}

static json_t *cmd_fail(void *ctx, const char *arg, size_t arg_len, char *err, size_t errlen)
{
    (void)ctx, (void)arg, (void)arg_len;
    snprintf(err, errlen, "snapshot directory is not writable");
    return NULL;
}

static json_t *cmd_oom(void *ctx, const char *arg, size_t arg_len, char *err, size_t errlen)
{
    (void)ctx, (void)arg, (void)arg_len, (void)err, (void)errlen;
    return NULL;
}

static const pd_control_command cmds[] = {
    {"status", NULL, cmd_status},      {"score", "user", cmd_score}, {"forget", "user", cmd_score},
    {"log-level", "level", cmd_score}, {"snapshot", NULL, cmd_fail}, {"reload", NULL, cmd_oom},
};
#define N_CMDS (sizeof cmds / sizeof cmds[0])

static void check_reply(const char *text)
{
    json_error_t jerr;
    FUZZ_CHECK(text != NULL);
    json_t *reply = json_loads(text, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    FUZZ_CHECK(json_is_object(reply));
    FUZZ_CHECK(json_is_boolean(json_object_get(reply, "ok")));
    if (json_is_false(json_object_get(reply, "ok")))
        FUZZ_CHECK(json_is_string(json_object_get(reply, "error")));
    json_decref(reply);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static pd_control *c;
    char err[256];
    if (size > PD_CONTROL_MAX_REQUEST) /* the socket refuses larger messages */
        return 0;
    if (!c && !(c = pd_control_new(&(pd_control_conf){0}, err, sizeof err))) {
        fprintf(stderr, "pd_control_new: %s\n", err);
        abort();
    }
    char *reply = pd_control_answer(c, (const char *)data, size, cmds, N_CMDS, NULL);
    check_reply(reply);
    free(reply);

    /* a reply can be built from any bytes, UTF-8 or not */
    char *s = malloc(size + 1);
    FUZZ_CHECK(s != NULL);
    memcpy(s, data, size);
    s[size] = '\0';
    json_t *str = pd_control_string(s);
    FUZZ_CHECK(json_is_string(str));
    json_decref(str);
    (void)pd_control_endpoint_local(s);
    free(s);

    double v = 0;
    if (size >= sizeof v) {
        memcpy(&v, data, sizeof v);
        json_t *num = pd_control_number(v);
        FUZZ_CHECK(json_is_number(num) || json_is_null(num));
        json_decref(num);
    }
    return 0;
}

/* Tests for config/redis_url.c on its own: every form of redis.url the language accepts, the
 * reason given for each it refuses, %-decoding of credentials and the redacted url the config
 * keeps. test_config.c checks how the loader reports these. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "config/redis_url.h"

static void assert_str_or_null(const char *got, const char *want)
{
    if (want)
        assert_string_equal(got, want);
    else
        assert_null(got);
}

static void test_accepted(void **state)
{
    /* each url with what it parses into (pw_at and pw_len are checked by test_redact) */
    static const struct {
        const char *url;
        redis_url want;
    } cases[] = {
        {"redis://cache", {.host = "cache", .port = 6379}},
        {"redis://cache:7000/3", {.host = "cache", .port = 7000, .db = 3, .has_db = true}},
        {"redis://cache/", {.host = "cache", .port = 6379}},
        {"redis://[::1]:7001", {.host = "::1", .port = 7001}},
        {"redis://[fe80::1]", {.host = "fe80::1", .port = 6379}},
        {"redis://h:1/999999999", {.host = "h", .port = 1, .db = 999999999, .has_db = true}},
        {"redis://app@10.0.0.5", {.host = "10.0.0.5", .port = 6379, .user = "app"}},
        {"redis://app:pw@h:65535/0",
         {.host = "h", .port = 65535, .has_db = true, .user = "app", .password = "pw"}},
        {"redis://:pw@h", {.host = "h", .port = 6379, .password = "pw"}},
        {"redis://app:@h", {.host = "h", .port = 6379, .user = "app"}},
        /* the last '@' ends the credentials, so an unencoded '@' in a password parses */
        {"redis://u:p@ss@h", {.host = "h", .port = 6379, .user = "u", .password = "p@ss"}},
        {"redis://u%3Ax:p%2fw%40@h",
         {.host = "h", .port = 6379, .user = "u:x", .password = "p/w@"}},
        {"unix:///run/redis/redis.sock", {.unix_path = "/run/redis/redis.sock"}},
        {"unix:///run/redis.sock?db=4", {.unix_path = "/run/redis.sock", .db = 4, .has_db = true}},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const redis_url *want = &cases[i].want;
        redis_url u = {0};
        const char *err = redis_url_parse(cases[i].url, &u);

        if (err)
            fail_msg("%s: %s", cases[i].url, err);
        assert_str_or_null(u.host, want->host);
        assert_int_equal(u.port, want->port);
        assert_str_or_null(u.unix_path, want->unix_path);
        assert_int_equal(u.db, want->db);
        assert_int_equal(u.has_db, want->has_db);
        assert_str_or_null(u.user, want->user);
        assert_str_or_null(u.password, want->password);
        redis_url_release(&u);
        assert_null(u.host);
        assert_null(u.password);
    }
}

/* A url and the text it must give: the reason it is refused, or its redacted form. */
typedef struct url_text {
    const char *url;
    const char *text;
} url_text;

static void test_refused(void **state)
{
    static const url_text cases[] = {
        {"rediss://cache", "TLS (rediss://) is not supported (Debian 12's hiredis, 0.14, has none): "
                           "reach the server through a local TLS tunnel (config/README.md)"},
        {"http://cache", "unknown scheme"},
        {"redis://", "missing host"},
        {"redis://:6379", "missing host"},
        {"redis://u@", "missing host"},
        {"redis://h:0", "port must be a number from 1 to 65535"},
        {"redis://h:65536", "port must be a number from 1 to 65535"},
        {"redis://h:123456", "port must be a number from 1 to 65535"},
        {"redis://h:", "port must be a number from 1 to 65535"},
        {"redis://h:x1", "port must be a number from 1 to 65535"},
        {"redis://h/x", "the path must be a database number"},
        {"redis://h/1234567890", "the path must be a database number"},
        {"redis://h?db=1", "query parameters are not supported"},
        {"redis://[::1", "bad IPv6 address"},
        {"redis://[]:1", "bad IPv6 address"},
        {"redis://[::1]x", "bad IPv6 address"},
        {"redis://u%zz@h", "bad %-escape in the user name"},
        {"redis://u:p%4@h", "bad %-escape in the password"},
        {"redis://u:%00@h", "bad %-escape in the password"},
        {"unix://relative.sock", "unix socket path must be absolute"},
        {"unix:///", "unix socket path must be absolute"},
        {"unix:///s?x=1", "the only query is ?db=N"},
        {"unix:///s?db=", "the only query is ?db=N"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        redis_url u = {0};
        const char *err = redis_url_parse(cases[i].url, &u);

        if (!err || strcmp(err, cases[i].text))
            fail_msg("%s: \"%s\", expected \"%s\"", cases[i].url, err ? err : "(accepted)",
                     cases[i].text);
        redis_url_release(&u);
    }
}

static void test_redact(void **state)
{
    static const url_text cases[] = {
        {"redis://h:1/2", "redis://h:1/2"},
        {"redis://app@h", "redis://app@h"},
        {"redis://app:s3cret@h:1/2", "redis://app:****@h:1/2"},
        {"redis://:s3cret@h", "redis://:****@h"},
        {"redis://u:p@ss@h", "redis://u:****@h"},
        {"redis://u:p%40ss@h", "redis://u:****@h"},
        {"unix:///run/redis.sock?db=1", "unix:///run/redis.sock?db=1"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        redis_url u = {0};
        char *s;

        assert_null(redis_url_parse(cases[i].url, &u));
        s = redis_url_redact(cases[i].url, &u);
        assert_non_null(s);
        assert_string_equal(s, cases[i].text);
        free(s);
        redis_url_release(&u);
    }
}

static void test_split_host_port(void **state)
{
    char *host = NULL;
    int port = 42;

    (void)state;
    assert_null(redis_url_split_host_port("127.0.0.1:9464", 14, &host, &port));
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 9464);
    free(host);
    /* no port written: the caller's stays */
    port = 42;
    assert_null(redis_url_split_host_port("cache", 5, &host, &port));
    assert_string_equal(host, "cache");
    assert_int_equal(port, 42);
    free(host);
    /* only len bytes are read */
    assert_null(redis_url_split_host_port("[::1]:80/rest", 8, &host, &port));
    assert_string_equal(host, "::1");
    assert_int_equal(port, 80);
    free(host);
    host = NULL;
    assert_string_equal(redis_url_split_host_port(":80", 3, &host, &port), "missing host");
    assert_null(host);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accepted),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_redact),
        cmocka_unit_test(test_split_host_port),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}

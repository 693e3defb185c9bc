/* Tests for daemon/log.c: the logfmt line, the level filter, and the rate limit, which is per
 * call site: sites sharing a format literal (pd_log_error("%s", err)) or a message literal
 * keep separate budgets. Each test reads what the logger wrote to stderr from a file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/clock.h"
#include "daemon/log.h"

typedef struct capture {
    FILE *file;
    int saved_fd;
    char text[65536];
} capture;

static void capture_start(capture *c)
{
    fflush(stderr);
    c->file = tmpfile();
    assert_non_null(c->file);
    c->saved_fd = dup(STDERR_FILENO);
    assert_true(c->saved_fd >= 0);
    assert_true(dup2(fileno(c->file), STDERR_FILENO) >= 0);
}

/* Restores stderr; c->text holds what was written meanwhile. */
static const char *capture_end(capture *c)
{
    fflush(stderr);
    dup2(c->saved_fd, STDERR_FILENO);
    close(c->saved_fd);
    rewind(c->file);
    size_t n = fread(c->text, 1, sizeof c->text - 1, c->file);
    c->text[n] = '\0';
    fclose(c->file);
    return c->text;
}

static int count(const char *text, const char *needle)
{
    int n = 0;
    for (const char *p = strstr(text, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

static int64_t window_now(void)
{
    return pd_clock_mono_ms() / 1000 / PD_LOG_RATE_WINDOW_S;
}

/* Runs fn with stderr captured inside one rate-limit window (again if it crossed into the
 * next one, which would refill the budgets half-way). */
static const char *run_in_one_window(capture *c, void (*fn)(int round), int *round)
{
    for (;; (*round)++) {
        int64_t w = window_now();
        capture_start(c);
        fn(*round);
        capture_end(c);
        if (window_now() == w || *round >= 3)
            return c->text;
    }
}

static void one_site_floods(int round)
{
    (void)round;
    for (int i = 0; i < PD_LOG_RATE_BURST + 10; i++)
        pd_log_error("%s", "flood from one site");
    pd_log_error("%s", "another site with the same format");
}

static void kv_sites_share_a_message(int round)
{
    (void)round;
    for (int i = 0; i < PD_LOG_RATE_BURST + 5; i++)
        pd_logkv(PD_LOG_WARNING, "same message", "site=a i=%d", i);
    pd_logkv(PD_LOG_WARNING, "same message", "site=b");
}

/* fn floods from one site and then logs once from another that looks the same: the flood is
 * cut at the burst, the other line is written. */
static void check_separate_budgets(void (*fn)(int round), const char *flood, const char *other)
{
    capture c;
    int round = 0;
    const char *text = run_in_one_window(&c, fn, &round);
    /* a later round starts in the window the first one filled: only the first is exact */
    if (round == 0)
        assert_int_equal(count(text, flood), PD_LOG_RATE_BURST);
    assert_int_equal(count(text, other), 1);
}

static void test_identical_formats_have_separate_budgets(void **state)
{
    (void)state;
    check_separate_budgets(one_site_floods, "msg=\"flood from one site\"",
                           "msg=\"another site with the same format\"");
}

static void test_identical_messages_have_separate_budgets(void **state)
{
    (void)state;
    check_separate_budgets(kv_sites_share_a_message, "site=a", "site=b");
}

/* Many sites at once: each keeps its own count even when their slots collide. */
#define MANY_SITE(i) pd_log_info("site %d", i)
static void many_sites(int round)
{
    (void)round;
    for (int k = 0; k < PD_LOG_RATE_BURST + 3; k++) {
        MANY_SITE(0);
        MANY_SITE(1);
        MANY_SITE(2);
        MANY_SITE(3);
        MANY_SITE(4);
        MANY_SITE(5);
        MANY_SITE(6);
        MANY_SITE(7);
    }
}

static void test_many_sites_each_limited(void **state)
{
    (void)state;
    capture c;
    int round = 0;
    const char *text = run_in_one_window(&c, many_sites, &round);
    if (round > 0)
        skip();
    char needle[32];
    for (int i = 0; i < 8; i++) {
        snprintf(needle, sizeof needle, "msg=\"site %d\"", i);
        assert_int_equal(count(text, needle), PD_LOG_RATE_BURST);
    }
}

static void test_level_filter_and_line(void **state)
{
    (void)state;
    capture c;
    pd_log_set_level(PD_LOG_WARNING);
    capture_start(&c);
    pd_log_info("not written");
    pd_log_warning("quote \" and\nnewline");
    pd_logkv(PD_LOG_ERROR, "snapshot failed", "path=%s seconds=%.3f", "/x", 0.5);
    const char *text = capture_end(&c);
    pd_log_set_level(PD_LOG_INFO);
    assert_null(strstr(text, "not written"));
    assert_non_null(strstr(text, "level=warning msg=\"quote \\\" and\\nnewline\"\n"));
    assert_non_null(strstr(text, "level=error msg=\"snapshot failed\" path=/x seconds=0.500\n"));
}

int main(void)
{
    unsetenv("JOURNAL_STREAM");
    pd_log_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_identical_formats_have_separate_budgets),
        cmocka_unit_test(test_identical_messages_have_separate_budgets),
        cmocka_unit_test(test_many_sites_each_limited),
        cmocka_unit_test(test_level_filter_and_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

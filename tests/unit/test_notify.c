/* Tests for daemon/notify.c against a datagram socket standing in for systemd: the messages
 * and their order, one-line STATUS, watchdog pacing, and silence without NOTIFY_SOCKET. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "daemon/notify.h"

typedef struct fixture {
    int fd;
    char dir[64];
    char path[96];
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/pd-notify-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->path, sizeof f->path, "%s/notify.sock", f->dir);
    f->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", f->path);
    if (bind(f->fd, (struct sockaddr *)&sa, sizeof sa) < 0)
        return -1;
    setenv("NOTIFY_SOCKET", f->path, 1);
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    close(f->fd);
    unlink(f->path);
    rmdir(f->dir);
    unsetenv("NOTIFY_SOCKET");
    free(f);
    return 0;
}

/* The next datagram, or "" when none is waiting. */
static const char *next_msg(fixture *f, char *buf, size_t len)
{
    ssize_t n = recv(f->fd, buf, len - 1, 0);
    buf[n > 0 ? n : 0] = '\0';
    return buf;
}

static void test_sequence(void **state)
{
    fixture *f = *state;
    char buf[1024];
    pd_notify *n = pd_notify_new(0);
    assert_non_null(n);
    assert_true(pd_notify_enabled(n));
    assert_int_equal(pd_notify_watchdog_ms(n), 0);
    assert_int_equal(pd_notify_status(n, "starting: waiting\nfor redis"), 0);
    assert_string_equal(next_msg(f, buf, sizeof buf), "STATUS=starting: waiting for redis");
    assert_int_equal(pd_notify_ready(n, "consuming"), 0);
    assert_string_equal(next_msg(f, buf, sizeof buf), "READY=1\nSTATUS=consuming");
    assert_int_equal(pd_notify_reloading(n, NULL), 0);
    next_msg(f, buf, sizeof buf);
    assert_memory_equal(buf, "RELOADING=1\nMONOTONIC_USEC=", 27);
    assert_true(strtoull(buf + 27, NULL, 10) > 0);
    assert_int_equal(pd_notify_ready(n, NULL), 0);
    assert_string_equal(next_msg(f, buf, sizeof buf), "READY=1");
    assert_int_equal(pd_notify_stopping(n, "draining"), 0);
    assert_string_equal(next_msg(f, buf, sizeof buf), "STOPPING=1\nSTATUS=draining");
    pd_notify_watchdog(n, 1000); /* no interval: never sent */
    assert_string_equal(next_msg(f, buf, sizeof buf), "");
    pd_notify_free(n);
}

static void test_watchdog_pacing(void **state)
{
    fixture *f = *state;
    char buf[256];
    setenv("WATCHDOG_USEC", "4000000", 1);
    pd_notify *n = pd_notify_new(0);
    assert_int_equal(pd_notify_watchdog_ms(n), 4000);
    pd_notify_free(n);
    n = pd_notify_new(1000); /* the configured interval wins */
    assert_int_equal(pd_notify_watchdog_ms(n), 1000);
    pd_notify_watchdog(n, 10000);
    assert_string_equal(next_msg(f, buf, sizeof buf), "WATCHDOG=1");
    pd_notify_watchdog(n, 10400); /* under half the interval since the last */
    assert_string_equal(next_msg(f, buf, sizeof buf), "");
    pd_notify_watchdog(n, 10500);
    assert_string_equal(next_msg(f, buf, sizeof buf), "WATCHDOG=1");
    pd_notify_free(n);
    unsetenv("WATCHDOG_USEC");
}

static void test_without_systemd(void **state)
{
    fixture *f = *state;
    char buf[256];
    unsetenv("NOTIFY_SOCKET");
    pd_notify *n = pd_notify_new(1000);
    assert_false(pd_notify_enabled(n));
    assert_int_equal(pd_notify_ready(n, "x"), 0);
    pd_notify_watchdog(n, 5000);
    assert_string_equal(next_msg(f, buf, sizeof buf), "");
    pd_notify_free(n);
    setenv("NOTIFY_SOCKET", f->path, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sequence, setup, teardown),
        cmocka_unit_test_setup_teardown(test_watchdog_pacing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_without_systemd, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

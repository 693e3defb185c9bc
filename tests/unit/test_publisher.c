/* Tests for the sorted-set lists of pipeline/publisher.c against a real redis-server, started
 * here as a child on a unix socket in a temporary directory: what a flush writes (members,
 * scores, TTL, deletion), coalescing, lists kept across a failed flush and a restart of Redis,
 * refusals for now and for good, and that a reader polling a list while it is replaced hundreds
 * of times only ever sees whole lists. redis-server comes from $PD_REDIS_SERVER or the PATH
 * (scripts/install-deps installs the Debian package); without it every test fails. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "pipeline/publisher.h"

#define TTL_MS   60000
#define K        20  /* members of a list in the atomicity test */
#define VERSIONS 600 /* replacements in the atomicity test */

typedef struct fixture {
    pid_t pid;
    char dir[200];
    char sock[sizeof(((struct sockaddr_un *)0)->sun_path)];
    char log[256];
    redisContext *check; /* the test's own view of Redis */
} fixture;

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static redisContext *connect_unix(const char *path)
{
    struct timeval tv = {.tv_sec = 2};
    redisContext *c = redisConnectUnixWithTimeout(path, tv);
    if (c && c->err) {
        redisFree(c);
        return NULL;
    }
    return c;
}

static bool ping(const char *path)
{
    redisContext *c = connect_unix(path);
    if (!c)
        return false;
    redisReply *rep = redisCommand(c, "PING");
    bool ok = rep && rep->type == REDIS_REPLY_STATUS && strcmp(rep->str, "PONG") == 0;
    if (rep)
        freeReplyObject(rep);
    redisFree(c);
    return ok;
}

static void print_log(const fixture *f)
{
    char buf[2048];
    FILE *fp = fopen(f->log, "r");
    size_t n = fp ? fread(buf, 1, sizeof buf - 1, fp) : 0;
    buf[n] = '\0';
    if (fp)
        fclose(fp);
    print_error("redis-server log:\n%s\n", buf);
}

/* Execs redis-server in the child; a close-on-exec pipe tells the parent whether exec failed. */
static void exec_redis(const fixture *f, int report_fd)
{
    const char *bin = getenv("PD_REDIS_SERVER");
    if (!bin || !*bin)
        bin = "redis-server";
    int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
        dup2(null, STDIN_FILENO);
        dup2(null, STDOUT_FILENO);
    }
    execlp(bin, bin, "--port", "0", "--unixsocket", f->sock, "--unixsocketperm", "700", "--save",
           "", "--appendonly", "no", "--dir", f->dir, "--daemonize", "no", "--logfile", f->log,
           (char *)NULL);
    int e = errno;
    ssize_t w = write(report_fd, &e, sizeof e);
    (void)w;
    _exit(127);
}

/* Starts redis-server on f->sock and waits until it answers PING. 0, or -1 with a message. */
static int start_redis(fixture *f)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return -1;
    unlink(f->sock);
    f->pid = fork();
    if (f->pid < 0)
        return -1;
    if (f->pid == 0)
        exec_redis(f, p[1]);
    close(p[1]);
    int e = 0;
    ssize_t got = read(p[0], &e, sizeof e);
    close(p[0]);
    if (got == (ssize_t)sizeof e) {
        print_error("cannot run redis-server: %s. The tests need the Debian package "
                    "redis-server (scripts/install-deps installs it) or $PD_REDIS_SERVER.\n",
                    strerror(e));
        waitpid(f->pid, NULL, 0);
        f->pid = 0;
        return -1;
    }
    for (int i = 0; i < 500; i++) {
        if (ping(f->sock))
            return 0;
        if (waitpid(f->pid, NULL, WNOHANG) == f->pid) {
            f->pid = 0;
            print_error("redis-server exited on start\n");
            print_log(f);
            return -1;
        }
        sleep_ms(10);
    }
    print_error("redis-server did not answer PING within 5 s\n");
    print_log(f);
    return -1;
}

static void stop_redis(fixture *f)
{
    if (f->pid > 0) {
        kill(f->pid, SIGKILL);
        waitpid(f->pid, NULL, 0);
        f->pid = 0;
    }
}

static int group_teardown(void **state)
{
    fixture *f = *state;
    if (f->check)
        redisFree(f->check);
    stop_redis(f);
    unlink(f->sock);
    unlink(f->log);
    rmdir(f->dir);
    return 0;
}

static int group_setup(void **state)
{
    static fixture f;
    *state = &f;
    const char *tmp = getenv("TMPDIR");
    snprintf(f.dir, sizeof f.dir, "%s/pd-publisher-XXXXXX", tmp && *tmp ? tmp : P_tmpdir);
    if (!mkdtemp(f.dir)) {
        print_error("cannot make a temporary directory from \"%s\"\n", f.dir);
        return -1;
    }
    int n = snprintf(f.sock, sizeof f.sock, "%s/redis.sock", f.dir);
    if (n < 0 || (size_t)n >= sizeof f.sock) {
        print_error("unix socket path too long under \"%s\"; set TMPDIR shorter\n", f.dir);
        return -1;
    }
    snprintf(f.log, sizeof f.log, "%s/redis.log", f.dir);
    if (start_redis(&f) < 0) /* cmocka still calls group_teardown(), which cleans up */
        return -1;
    f.check = connect_unix(f.sock);
    return f.check ? 0 : -1;
}

/* Every test starts from an empty database (and a reachable server). */
static int setup(void **state)
{
    fixture *f = *state;
    redisReply *rep = redisCommand(f->check, "FLUSHALL");
    if (!rep)
        return -1;
    freeReplyObject(rep);
    return 0;
}

static pd_publisher *publisher(const fixture *f, int64_t ttl_ms, int64_t max_pipeline)
{
    pd_redis_conf conf = {
        .unix_path = (char *)f->sock,
        .prefix = "t",
        .ttl_ms = ttl_ms,
        .max_pipeline = max_pipeline,
        .timeout_ms = 2000,
    };
    const char *fields[] = {"p"};
    char err[256];
    pd_publisher *pub = pd_publisher_new(&conf, fields, 1, err, sizeof err);
    assert_non_null(pub);
    return pub;
}

static void flush_ok(pd_publisher *pub)
{
    char err[512];
    int r = pd_publisher_flush(pub, err, sizeof err);
    if (r != 0)
        fail_msg("flush: %d %s", r, err);
}

static redisReply *command(const fixture *f, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *rep = redisvCommand(f->check, fmt, ap);
    va_end(ap);
    assert_non_null(rep);
    return rep;
}

static long long integer(const fixture *f, const char *fmt, const char *key, size_t len)
{
    redisReply *rep = command(f, fmt, key, len);
    assert_int_equal(rep->type, REDIS_REPLY_INTEGER);
    long long v = rep->integer;
    freeReplyObject(rep);
    return v;
}

/* Asserts that key holds exactly these members, in this order from the best score down, with
 * these scores (each read back to the float that was given). */
static void assert_list(const fixture *f, const char *key, size_t key_len,
                        const char *const *members, const size_t *lens, const float *scores,
                        size_t n)
{
    redisReply *rep = command(f, "ZREVRANGE %b 0 -1 WITHSCORES", key, key_len);
    assert_int_equal(rep->type, REDIS_REPLY_ARRAY);
    assert_int_equal(rep->elements, 2 * n);
    for (size_t i = 0; i < n; i++) {
        const redisReply *m = rep->element[2 * i], *s = rep->element[2 * i + 1];
        assert_int_equal(m->len, lens[i]);
        assert_memory_equal(m->str, members[i], lens[i]);
        float back = strtof(s->str, NULL);
        if (memcmp(&back, &scores[i], sizeof back) != 0)
            fail_msg("member %zu: score %.9g came back as %s", i, (double)scores[i], s->str);
    }
    freeReplyObject(rep);
}

static void test_put_and_flush_write_the_list(void **state)
{
    fixture *f = *state;
    pd_publisher *pub = publisher(f, TTL_MS, 1000);
    static const char bin[] = {'b', '\0', 'c'};
    const char *members[] = {"item-1", bin, "", "item with spaces"};
    const size_t lens[] = {6, sizeof bin, 0, 16};
    const float scores[] = {3.14159274f, 0.1f, 1e-7f, -2.5e30f};
    assert_int_equal(pd_publisher_put_zset(pub, "rec:u:7", 7, members, lens, scores, 4), 0);
    assert_int_equal(pd_publisher_dirty(pub), 1);
    flush_ok(pub);
    assert_int_equal(pd_publisher_dirty(pub), 0);
    assert_list(f, "t:rec:u:7", 9, members, lens, scores, 4);
    long long pttl = integer(f, "PTTL %b", "t:rec:u:7", 9);
    assert_true(pttl > TTL_MS - 10000 && pttl <= TTL_MS);

    /* a shorter list replaces the whole set; without a TTL the key keeps none */
    pd_redis_conf conf = {.ttl_ms = 0, .max_pipeline = 1000, .timeout_ms = 2000};
    pd_publisher_set_conf(pub, &conf);
    assert_int_equal(pd_publisher_put_zset(pub, "rec:u:7", 7, members + 2, lens + 2, scores + 2, 2),
                     0);
    flush_ok(pub);
    assert_list(f, "t:rec:u:7", 9, members + 2, lens + 2, scores + 2, 2);
    assert_int_equal(integer(f, "PTTL %b", "t:rec:u:7", 9), -1);

    /* n == 0 deletes the key */
    assert_int_equal(pd_publisher_put_zset(pub, "rec:u:7", 7, NULL, NULL, NULL, 0), 0);
    flush_ok(pub);
    assert_int_equal(integer(f, "EXISTS %b", "t:rec:u:7", 9), 0);

    pd_publisher_stats st;
    pd_publisher_get_stats(pub, &st);
    assert_int_equal(st.list_writes, 3);
    assert_int_equal(st.list_coalesced, 0);
    assert_int_equal(st.reply_errors, 0);
    pd_publisher_free(pub);
}

static void test_put_refuses_nan(void **state)
{
    fixture *f = *state;
    pd_publisher *pub = publisher(f, TTL_MS, 1000);
    const char *members[] = {"a", "b"};
    const size_t lens[] = {1, 1};
    const float scores[] = {1.0f, NAN};
    assert_int_equal(pd_publisher_put_zset(pub, "x", 1, members, lens, scores, 2), -EINVAL);
    assert_int_equal(pd_publisher_dirty(pub), 0);
    pd_publisher_free(pub);
}

/* Hundreds of lists of every size, binary names among them, mixed with user hashes, across
 * windows of 7 commands that cut transactions anywhere. */
static void test_many_lists_across_windows(void **state)
{
    fixture *f = *state;
    pd_publisher *pub = publisher(f, TTL_MS, 7);
    enum { LISTS = 300, MAX_N = 40 };
    char names[LISTS][16];
    size_t name_lens[LISTS];
    char text[MAX_N][16];
    const char *members[MAX_N];
    size_t lens[MAX_N];
    float scores[MAX_N];
    for (int l = 0; l < LISTS; l++) {
        name_lens[l] = (size_t)snprintf(names[l], sizeof names[l], "l%d", l);
        if (l % 10 == 0)
            names[l][name_lens[l]++] = '\0'; /* a NUL inside the key */
        size_t n = (size_t)(l % MAX_N);
        for (size_t i = 0; i < n; i++) {
            lens[i] = (size_t)snprintf(text[i], sizeof text[i], "m%d-%zu", l, i);
            members[i] = text[i];
            scores[i] = (float)(n - i) / 3.0f;
        }
        assert_int_equal(
            pd_publisher_put_zset(pub, names[l], name_lens[l], members, lens, scores, n), 0);
        pd_publish_score s = {.field = 0, .value = l};
        char user[16];
        int ul = snprintf(user, sizeof user, "u%d", l);
        assert_int_equal(pd_publisher_update(pub, user, (size_t)ul, 1000, 1, &s, 1), 0);
    }
    flush_ok(pub);
    for (int l = 0; l < LISTS; l++) {
        char key[32] = "t:";
        memcpy(key + 2, names[l], name_lens[l]);
        size_t n = (size_t)(l % MAX_N);
        for (size_t i = 0; i < n; i++) {
            lens[i] = (size_t)snprintf(text[i], sizeof text[i], "m%d-%zu", l, i);
            scores[i] = (float)(n - i) / 3.0f;
        }
        assert_list(f, key, 2 + name_lens[l], members, lens, scores, n);
    }
    pd_publisher_stats st;
    pd_publisher_get_stats(pub, &st);
    assert_int_equal(st.list_writes, LISTS);
    assert_int_equal(st.user_writes, LISTS);
    assert_int_equal(st.reply_errors, 0);
    pd_publisher_free(pub);
}

static void test_second_put_replaces_the_first(void **state)
{
    fixture *f = *state;
    pd_publisher *pub = publisher(f, TTL_MS, 1000);
    const char *first[] = {"a", "b", "c"}, *second[] = {"d", "e"}, *other[] = {"z"};
    const size_t lens[] = {1, 1, 1};
    const float s1[] = {3, 2, 1}, s2[] = {9, 8}, s3[] = {5};
    assert_int_equal(pd_publisher_put_zset(pub, "popular", 7, first, lens, s1, 3), 0);
    assert_int_equal(pd_publisher_put_zset(pub, "similar:42", 10, other, lens, s3, 1), 0);
    assert_int_equal(pd_publisher_put_zset(pub, "popular", 7, second, lens, s2, 2), 0);
    assert_int_equal(pd_publisher_dirty(pub), 2);
    flush_ok(pub);
    assert_list(f, "t:popular", 9, second, lens, s2, 2);
    assert_list(f, "t:similar:42", 12, other, lens, s3, 1);
    pd_publisher_stats st;
    pd_publisher_get_stats(pub, &st);
    assert_int_equal(st.list_coalesced, 1);
    assert_int_equal(st.list_writes, 2);
    pd_publisher_free(pub);
}

static void test_failed_flush_keeps_lists(void **state)
{
    fixture *f = *state;
    pd_publisher *pub = publisher(f, TTL_MS, 1000);
    char err[512];
    assert_int_equal(pd_publisher_connect(pub, err, sizeof err), 0);
    const char *v1[] = {"a", "b"}, *v2[] = {"c"}, *y[] = {"y1", "y2", "y3"};
    const size_t lens[] = {1, 1}, ylens[] = {2, 2, 2};
    const float s[] = {2, 1}, ys[] = {0.5f, 0.25f, 0.125f};
    assert_int_equal(pd_publisher_put_zset(pub, "x", 1, v1, lens, s, 2), 0);
    assert_int_equal(pd_publisher_put_zset(pub, "y", 1, y, ylens, ys, 3), 0);

    redisFree(f->check);
    f->check = NULL;
    stop_redis(f);
    assert_true(pd_publisher_flush(pub, err, sizeof err) < 0); /* the connection breaks */
    assert_true(pd_publisher_flush(pub, err, sizeof err) < 0); /* the connect is refused */
    assert_int_equal(pd_publisher_dirty(pub), 2);
    /* a put while Redis is away waits behind the failed flush's writes, which go first */
    assert_int_equal(pd_publisher_put_zset(pub, "x", 1, v2, lens, s + 1, 1), 0);
    assert_int_equal(pd_publisher_dirty(pub), 3);

    assert_int_equal(start_redis(f), 0);
    assert_non_null(f->check = connect_unix(f->sock));
    flush_ok(pub);
    assert_list(f, "t:x", 3, v2, lens, s + 1, 1);
    assert_list(f, "t:y", 3, y, ylens, ys, 3);
    pd_publisher_stats st;
    pd_publisher_get_stats(pub, &st);
    assert_int_equal(st.flush_failures, 2);
    assert_int_equal(st.list_writes, 3); /* x and y again, then the newer x */
    assert_true(st.connects >= 2);
    pd_publisher_free(pub);
}

/* Out of memory, Redis refuses MULTI's commands as they are queued and EXEC with EXECABORT:
 * a refusal for now, so the flush fails and keeps the list. */
static void test_refusal_for_now_keeps_lists(void **state)
{
    fixture *f = *state;
    pd_publisher *pub = publisher(f, TTL_MS, 1000);
    const char *m[] = {"a", "b"};
    const size_t lens[] = {1, 1};
    const float s[] = {2, 1};
    char err[512];
    freeReplyObject(command(f, "CONFIG SET maxmemory 1"));
    assert_int_equal(pd_publisher_put_zset(pub, "x", 1, m, lens, s, 2), 0);
    int r = pd_publisher_flush(pub, err, sizeof err);
    freeReplyObject(command(f, "CONFIG SET maxmemory 0"));
    assert_int_equal(r, -EAGAIN);
    assert_non_null(strstr(err, "OOM"));
    assert_int_equal(pd_publisher_dirty(pub), 1);
    flush_ok(pub);
    assert_list(f, "t:x", 3, m, lens, s, 2);
    pd_publisher_stats st;
    pd_publisher_get_stats(pub, &st);
    assert_int_equal(st.reply_errors, 0);
    assert_int_equal(st.list_writes, 1);
    pd_publisher_free(pub);
}

/* A user that may not ZADD: the transaction is discarded (the old list stays whole), counted
 * once as a reply error and not retried; the plain DEL of an empty list still goes through. */
static void test_refusal_for_good_is_counted(void **state)
{
    fixture *f = *state;
    freeReplyObject(command(f, "ACL SETUSER nozadd on >secret ~* &* +@all -zadd"));
    freeReplyObject(command(f, "ZADD t:x 1 old"));
    freeReplyObject(command(f, "ZADD t:gone 1 old"));
    pd_redis_conf conf = {.unix_path = f->sock,
                          .prefix = "t",
                          .username = "nozadd",
                          .password = "secret",
                          .ttl_ms = TTL_MS,
                          .max_pipeline = 1000,
                          .timeout_ms = 2000};
    const char *fields[] = {"p"};
    char err[512];
    pd_publisher *pub = pd_publisher_new(&conf, fields, 1, err, sizeof err);
    assert_non_null(pub);
    const char *m[] = {"new"};
    const size_t lens[] = {3};
    const float s[] = {2};
    assert_int_equal(pd_publisher_put_zset(pub, "x", 1, m, lens, s, 1), 0);
    assert_int_equal(pd_publisher_put_zset(pub, "gone", 4, NULL, NULL, NULL, 0), 0);
    assert_int_equal(pd_publisher_flush(pub, err, sizeof err), 0);
    assert_non_null(strstr(err, "NOPERM"));
    assert_int_equal(pd_publisher_dirty(pub), 0);
    const char *old[] = {"old"};
    const float olds[] = {1};
    assert_list(f, "t:x", 3, old, lens, olds, 1);
    assert_int_equal(integer(f, "EXISTS %b", "t:gone", 6), 0);
    pd_publisher_stats st;
    pd_publisher_get_stats(pub, &st);
    assert_int_equal(st.reply_errors, 1);
    assert_int_equal(st.list_writes, 1);
    pd_publisher_free(pub);
    freeReplyObject(command(f, "ACL DELUSER nozadd"));
}

/* ---- the writer thread ---- */

static void update(pd_publisher *pub, const char *user, double p, int64_t ts)
{
    const pd_publish_score sc = {.field = 0, .value = p};
    assert_int_equal(pd_publisher_update(pub, user, strlen(user), ts, 1, &sc, 1), 0);
}

static double hash_p(const fixture *f, const char *user)
{
    redisReply *rep = command(f, "HGET t:u:%s p", user);
    double v = rep->type == REDIS_REPLY_STRING ? strtod(rep->str, NULL) : -1;
    freeReplyObject(rep);
    return v;
}

/* The outcome of the flush in flight, waiting up to 5 s for it. */
static int wait_result(pd_publisher *pub, char *err, size_t len)
{
    for (int i = 0; i < 5000; i++) {
        int r = pd_publisher_flush_result(pub, err, len);
        if (r != -EINPROGRESS)
            return r;
        sleep_ms(1);
    }
    fail_msg("the flush did not finish within 5 s");
    return -ETIMEDOUT;
}

/* A hung Redis (SIGSTOP) holds the writer, not the caller: the start returns at once, the
 * caller keeps coalescing into the next flush, and both land in order once Redis wakes. */
static void test_hung_redis_holds_only_the_writer(void **state)
{
    fixture *f = *state;
    pd_publisher *pub = publisher(f, TTL_MS, 1000);
    int wake[2];
    assert_int_equal(pipe2(wake, O_NONBLOCK | O_CLOEXEC), 0);
    pd_publisher_set_wakeup(pub, wake[1]);
    char err[512];
    assert_int_equal(pd_publisher_connect(pub, err, sizeof err), 0);
    update(pub, "a", 0.25, 1);
    update(pub, "b", 0.5, 1);

    assert_int_equal(kill(f->pid, SIGSTOP), 0);
    assert_int_equal(pd_publisher_flush_start(pub), 1);
    sleep_ms(200);
    assert_true(pd_publisher_flushing(pub));
    assert_int_equal(pd_publisher_flush_result(pub, err, sizeof err), -EINPROGRESS);
    assert_int_equal(pd_publisher_flush_start(pub), -EBUSY);
    update(pub, "a", 0.75, 2); /* waits for the next flush */
    assert_int_equal(pd_publisher_dirty(pub), 3); /* two in flight, one waiting */
    char byte;
    assert_int_equal(read(wake[0], &byte, 1), -1); /* nothing finished: no wakeup */

    assert_int_equal(kill(f->pid, SIGCONT), 0);
    assert_int_equal(wait_result(pub, err, sizeof err), 0);
    assert_int_equal(read(wake[0], &byte, 1), 1);
    assert_int_equal(pd_publisher_flush_result(pub, err, sizeof err), 1); /* taken once */
    assert_true(hash_p(f, "a") == 0.25);
    assert_true(hash_p(f, "b") == 0.5);
    assert_int_equal(pd_publisher_dirty(pub), 1);
    assert_int_equal(pd_publisher_flush_start(pub), 1);
    assert_int_equal(wait_result(pub, err, sizeof err), 0);
    assert_true(hash_p(f, "a") == 0.75);
    assert_int_equal(pd_publisher_dirty(pub), 0);
    assert_int_equal(pd_publisher_flush_start(pub), 0); /* nothing waits */
    pd_publisher_stats st;
    pd_publisher_get_stats(pub, &st);
    assert_int_equal(st.flushes, 2);
    assert_int_equal(st.user_writes, 3);
    pd_publisher_free(pub);
    close(wake[0]);
    close(wake[1]);
}

/* A failed flush's writes go again before anything newer: had the newer update of a user gone
 * first, the older one would have overwritten it. */
static void test_failed_writes_go_before_newer_ones(void **state)
{
    fixture *f = *state;
    pd_publisher *pub = publisher(f, TTL_MS, 1000);
    char err[512];
    assert_int_equal(pd_publisher_connect(pub, err, sizeof err), 0);
    update(pub, "a", 0.125, 1);
    update(pub, "c", 0.5, 1);
    redisFree(f->check);
    f->check = NULL;
    stop_redis(f);
    assert_int_equal(pd_publisher_flush_start(pub), 1);
    assert_true(wait_result(pub, err, sizeof err) < 0);
    assert_non_null(strstr(err, "redis"));
    update(pub, "a", 0.875, 2);
    assert_int_equal(pd_publisher_flush_start(pub), 1); /* the failed set again, alone */
    assert_true(wait_result(pub, err, sizeof err) < 0); /* the connect is refused */
    assert_int_equal(pd_publisher_dirty(pub), 3);

    assert_int_equal(start_redis(f), 0);
    assert_non_null(f->check = connect_unix(f->sock));
    assert_int_equal(pd_publisher_flush_start(pub), 1);
    assert_int_equal(wait_result(pub, err, sizeof err), 0);
    assert_true(hash_p(f, "a") == 0.125);
    assert_true(hash_p(f, "c") == 0.5);
    flush_ok(pub);
    assert_true(hash_p(f, "a") == 0.875);
    assert_true(hash_p(f, "c") == 0.5);
    pd_publisher_stats st;
    pd_publisher_get_stats(pub, &st);
    assert_int_equal(st.flush_failures, 2);
    assert_int_equal(st.user_writes, 3);
    pd_publisher_free(pub);
}

/* A waiting flush that blocks on a failed one in flight writes its set again and succeeds
 * cleanly: the failure is not handed on as a warning of the flush that succeeded. */
static void test_waiting_flush_takes_a_failed_one_in_flight(void **state)
{
    fixture *f = *state;
    pd_publisher *pub = publisher(f, TTL_MS, 1000);
    char err[512];
    assert_int_equal(pd_publisher_connect(pub, err, sizeof err), 0);
    update(pub, "a", 0.375, 1);
    redisFree(f->check);
    f->check = NULL;
    stop_redis(f);
    assert_int_equal(pd_publisher_flush_start(pub), 1);
    for (int i = 0; i < 5000 && pd_publisher_flushing(pub); i++)
        sleep_ms(1);
    assert_false(pd_publisher_flushing(pub)); /* failed, outcome not taken */
    assert_int_equal(start_redis(f), 0);
    assert_non_null(f->check = connect_unix(f->sock));
    assert_int_equal(pd_publisher_flush(pub, err, sizeof err), 0);
    assert_string_equal(err, "");
    assert_true(hash_p(f, "a") == 0.375);
    pd_publisher_stats st;
    pd_publisher_get_stats(pub, &st);
    assert_int_equal(st.flush_failures, 1);
    pd_publisher_free(pub);
}

/* ---- atomic replacement ---- */

typedef struct reader {
    const char *sock;
    atomic_bool stop;  /* set by the writer when done, or by the reader when it cannot read */
    atomic_long reads; /* the writer waits for the first */
    long bad;
    int versions_seen; /* distinct versions, counted when the version changes */
    char first_bad[200];
} reader;

/* Whether a ZRANGE reply is one whole written list: K members "v{version}-i{0..K-1}". */
static bool whole_list(const redisReply *rep, int *ret_version, char *why, size_t len)
{
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != K) {
        if (rep->type == REDIS_REPLY_ARRAY)
            snprintf(why, len, "%zu members", rep->elements);
        else
            snprintf(why, len, "a reply of type %d, not an array", rep->type);
        return false;
    }
    int version = -1;
    uint32_t seen = 0;
    for (size_t i = 0; i < rep->elements; i++) {
        int v, item;
        if (sscanf(rep->element[i]->str, "v%d-i%d", &v, &item) != 2 || item < 0 || item >= K ||
            (version >= 0 && v != version)) {
            snprintf(why, len, "member \"%s\" in a list of version %d", rep->element[i]->str,
                     version);
            return false;
        }
        version = v;
        seen |= UINT32_C(1) << item;
    }
    if (seen != (UINT32_C(1) << K) - 1) {
        snprintf(why, len, "version %d with members missing", version);
        return false;
    }
    *ret_version = version;
    return true;
}

static void *read_loop(void *arg)
{
    reader *rd = arg;
    redisContext *c = connect_unix(rd->sock);
    int last = -1;
    while (c && !atomic_load(&rd->stop)) {
        redisReply *rep = redisCommand(c, "ZRANGE t:swap 0 -1");
        if (!rep)
            break;
        char why[200];
        int version;
        atomic_fetch_add(&rd->reads, 1);
        if (!whole_list(rep, &version, why, sizeof why)) {
            if (rd->bad++ == 0)
                snprintf(rd->first_bad, sizeof rd->first_bad, "%s", why);
        } else if (version != last) {
            rd->versions_seen++;
            last = version;
        }
        freeReplyObject(rep);
    }
    if (c)
        redisFree(c);
    atomic_store(&rd->stop, true);
    return NULL;
}

static void put_version(pd_publisher *pub, int version)
{
    char text[K][16];
    const char *members[K];
    size_t lens[K];
    float scores[K];
    for (int i = 0; i < K; i++) {
        lens[i] = (size_t)snprintf(text[i], sizeof text[i], "v%d-i%d", version, i);
        members[i] = text[i];
        scores[i] = (float)(K - i);
    }
    assert_int_equal(pd_publisher_put_zset(pub, "swap", 4, members, lens, scores, K), 0);
    flush_ok(pub);
}

/* One command per round trip (max_pipeline 1), so the DEL and the ZADD of a replacement reach
 * Redis apart: only MULTI / EXEC keeps a reader from seeing the list missing in between. */
static void test_reader_sees_whole_lists_only(void **state)
{
    fixture *f = *state;
    pd_publisher *pub = publisher(f, TTL_MS, 1);
    put_version(pub, 0);
    static reader rd;
    rd.sock = f->sock;
    atomic_init(&rd.stop, false);
    atomic_init(&rd.reads, 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, read_loop, &rd), 0);
    while (atomic_load(&rd.reads) == 0 && !atomic_load(&rd.stop))
        sleep_ms(1);
    /* at least VERSIONS replacements, and on until the reader overlapped them 100 times: on a
     * loaded machine the reader thread may get little time while the writer runs */
    for (int v = 1; (v <= VERSIONS || atomic_load(&rd.reads) < 100) && v <= 100 * VERSIONS &&
                    !atomic_load(&rd.stop);
         v++)
        put_version(pub, v);
    atomic_store(&rd.stop, true);
    pthread_join(t, NULL);
    long reads = atomic_load(&rd.reads);
    print_message("%ld reads saw %d versions\n", reads, rd.versions_seen);
    if (rd.bad)
        fail_msg("%ld of %ld reads saw a partial list, first: %s", rd.bad, reads, rd.first_bad);
    assert_true(reads >= 100);
    assert_true(rd.versions_seen >= 10);
    pd_publisher_free(pub);
}

int main(void)
{
    /* writing to a Redis that was killed must fail the flush, not end the process */
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_put_and_flush_write_the_list, setup),
        cmocka_unit_test_setup(test_put_refuses_nan, setup),
        cmocka_unit_test_setup(test_many_lists_across_windows, setup),
        cmocka_unit_test_setup(test_second_put_replaces_the_first, setup),
        cmocka_unit_test_setup(test_failed_flush_keeps_lists, setup),
        cmocka_unit_test_setup(test_hung_redis_holds_only_the_writer, setup),
        cmocka_unit_test_setup(test_failed_writes_go_before_newer_ones, setup),
        cmocka_unit_test_setup(test_waiting_flush_takes_a_failed_one_in_flight, setup),
        cmocka_unit_test_setup(test_refusal_for_now_keeps_lists, setup),
        cmocka_unit_test_setup(test_refusal_for_good_is_counted, setup),
        cmocka_unit_test_setup(test_reader_sees_whole_lists_only, setup),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

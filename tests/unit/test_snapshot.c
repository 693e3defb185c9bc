/* Snapshot files: sections round-trip, every kind of damage is refused with a message and the
 * previous snapshot is used instead, only the newest N are kept, and a writer killed at any
 * moment never leaves the directory without a valid snapshot. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "models/snapshot.h"

typedef struct fixture {
    char dir[64];
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/pd-snap-test-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    DIR *d = opendir(f->dir);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        char path[512];
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "%s/%s", f->dir, e->d_name);
        unlink(path);
    }
    if (d)
        closedir(d);
    rmdir(f->dir);
    free(f);
    return 0;
}

/* Writes a snapshot with two sections whose content depends on `seed`. */
static int write_one(const char *dir, uint64_t seed, int keep, char *path, size_t len)
{
    char err[512];
    pd_snapshot_writer *w =
        pd_snapshot_writer_new(dir, 0xfeed0000 + seed, 1000 + (int64_t)seed, err, sizeof err);
    if (!w)
        return -1;
    FILE *a = pd_snapshot_writer_section(w, "alpha");
    fprintf(a, "seed=%llu", (unsigned long long)seed);
    FILE *b = pd_snapshot_writer_section(w, "beta");
    for (uint64_t i = 0; i < 50000; i++) {
        uint64_t v = i * seed;
        fwrite(&v, sizeof v, 1, b);
    }
    pd_snapshot_writer_section(w, "empty");
    return pd_snapshot_writer_commit(w, keep, path, len, err, sizeof err);
}

static void check_content(const pd_snapshot *s, uint64_t seed)
{
    char buf[64] = {0};
    FILE *a = pd_snapshot_section(s, "alpha");
    assert_non_null(a);
    assert_non_null(fgets(buf, sizeof buf, a));
    fclose(a);
    char want[64];
    snprintf(want, sizeof want, "seed=%llu", (unsigned long long)seed);
    assert_string_equal(buf, want);
    FILE *b = pd_snapshot_section(s, "beta");
    for (uint64_t i = 0; i < 50000; i++) {
        uint64_t v;
        assert_int_equal(fread(&v, sizeof v, 1, b), 1);
        assert_true(v == i * seed);
    }
    uint64_t extra;
    assert_int_equal(fread(&extra, sizeof extra, 1, b), 0); /* the section ends where it should */
    fclose(b);
    FILE *e = pd_snapshot_section(s, "empty");
    assert_non_null(e);
    assert_int_equal(fgetc(e), EOF);
    fclose(e);
    assert_null(pd_snapshot_section(s, "missing"));
    assert_true(pd_snapshot_fingerprint(s) == 0xfeed0000 + seed);
    assert_int_equal(pd_snapshot_created_ms(s), 1000 + (int64_t)seed);
}

static void test_round_trip(void **state)
{
    fixture *f = *state;
    char path[512], err[512];
    assert_int_equal(write_one(f->dir, 7, 3, path, sizeof path), 0);
    pd_snapshot *s = pd_snapshot_open(path, err, sizeof err);
    assert_non_null(s);
    assert_int_equal(pd_snapshot_section_count(s), 3);
    assert_string_equal(pd_snapshot_section_name(s, 1), "beta");
    check_content(s, 7);
    pd_snapshot_close(s);
}

static void test_keep_newest(void **state)
{
    fixture *f = *state;
    char path[512], err[512];
    for (uint64_t i = 1; i <= 5; i++)
        assert_int_equal(write_one(f->dir, i, 2, path, sizeof path), 0);
    int n = 0;
    DIR *d = opendir(f->dir);
    struct dirent *e;
    while ((e = readdir(d)))
        n += strstr(e->d_name, ".pds") != NULL;
    closedir(d);
    assert_int_equal(n, 2);
    pd_snapshot *s = pd_snapshot_open_latest(f->dir, NULL, NULL, err, sizeof err);
    assert_non_null(s);
    check_content(s, 5);
    pd_snapshot_close(s);
}

typedef struct skipped {
    int n;
    char why[4][512];
} skipped;

static void on_skip(void *ctx, const char *path, const char *why)
{
    (void)path;
    skipped *sk = ctx;
    if (sk->n < 4)
        snprintf(sk->why[sk->n], sizeof sk->why[0], "%s", why);
    sk->n++;
}

/* Damages the newest snapshot with `damage`, then checks that opening the latest skips it
 * with a message containing `expect` and falls back to the one before. */
static void damaged(const char *dir, void (*damage)(const char *path), const char *expect)
{
    char older[512], newer[512], err[512];
    assert_int_equal(write_one(dir, 11, 5, older, sizeof older), 0);
    assert_int_equal(write_one(dir, 12, 5, newer, sizeof newer), 0);
    damage(newer);
    pd_snapshot *direct = pd_snapshot_open(newer, err, sizeof err);
    assert_null(direct);
    assert_non_null(strstr(err, expect));
    skipped sk = {0};
    pd_snapshot *s = pd_snapshot_open_latest(dir, on_skip, &sk, err, sizeof err);
    assert_non_null(s);
    assert_int_equal(sk.n, 1);
    assert_non_null(strstr(sk.why[0], expect));
    check_content(s, 11);
    pd_snapshot_close(s);
}

static void truncate_half(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(truncate(path, st.st_size / 2), 0);
}

static void flip_payload_byte(const char *path)
{
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    unsigned char c;
    assert_int_equal(pread(fd, &c, 1, 64 + 1000), 1);
    c ^= 0x40;
    assert_int_equal(pwrite(fd, &c, 1, 64 + 1000), 1);
    close(fd);
}

static void flip_header_byte(const char *path)
{
    int fd = open(path, O_RDWR);
    unsigned char c;
    assert_int_equal(pread(fd, &c, 1, 20), 1); /* inside the fingerprint */
    c ^= 1;
    assert_int_equal(pwrite(fd, &c, 1, 20), 1);
    close(fd);
}

static void bad_magic(const char *path)
{
    int fd = open(path, O_RDWR);
    assert_int_equal(pwrite(fd, "XXXX", 4, 0), 4);
    close(fd);
}

static void test_truncated(void **state)
{
    damaged(((fixture *)*state)->dir, truncate_half, "truncated");
}

static void test_corrupted_payload(void **state)
{
    damaged(((fixture *)*state)->dir, flip_payload_byte, "checksum mismatch");
}

static void test_corrupted_header(void **state)
{
    damaged(((fixture *)*state)->dir, flip_header_byte, "header checksum mismatch");
}

static void test_bad_magic(void **state)
{
    damaged(((fixture *)*state)->dir, bad_magic, "bad magic");
}

static void test_empty_dir(void **state)
{
    fixture *f = *state;
    char err[512] = "x";
    assert_null(pd_snapshot_open_latest(f->dir, NULL, NULL, err, sizeof err));
    assert_string_equal(err, ""); /* none is not an error */
    assert_null(pd_snapshot_open_latest("/nonexistent/pd-snapshots", NULL, NULL, err, sizeof err));
    assert_string_equal(err, "");
}

/* A child writes snapshots in a loop; the parent kills it with SIGKILL at random moments.
 * After every kill the directory must hold a valid snapshot (the child wrote one before the
 * first kill), and never a leftover that opens as valid but is not. */
static void test_kill_during_writes(void **state)
{
    fixture *f = *state;
    char path[512], err[512];
    assert_int_equal(write_one(f->dir, 1, 2, path, sizeof path), 0);
    srand(42);
    for (int round = 0; round < 20; round++) {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            for (uint64_t i = 2;; i++)
                write_one(f->dir, i, 2, path, sizeof path);
        }
        struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)(1 + rand() % 30) * 1000000L};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        assert_true(WIFSIGNALED(status));
        skipped sk = {0};
        pd_snapshot *s = pd_snapshot_open_latest(f->dir, on_skip, &sk, err, sizeof err);
        assert_non_null(s);
        assert_int_equal(sk.n, 0); /* a kill never leaves a damaged .pds behind */
        uint64_t seed = pd_snapshot_fingerprint(s) - 0xfeed0000;
        check_content(s, seed);
        pd_snapshot_close(s);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keep_newest, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truncated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupted_payload, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupted_header, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_magic, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_dir, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill_during_writes, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

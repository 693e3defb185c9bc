/* Tests for common/binio.c: the exact bytes of each width (little-endian, whatever the host),
 * round trips, sticky errors on truncation and malformed input, section versions. */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/binio.h"

typedef struct buf {
    char *data;
    size_t len;
} buf;

/* Writes with fn into memory and returns the bytes. */
static buf written(void (*fn)(pd_bin_writer *))
{
    buf b = {0};
    FILE *f = open_memstream(&b.data, &b.len);
    assert_non_null(f);
    pd_bin_writer w;
    pd_bin_writer_init(&w, f);
    fn(&w);
    assert_int_equal(w.err, 0);
    assert_int_equal(fclose(f), 0);
    return b;
}

static FILE *reading(const buf *b)
{
    FILE *f = fmemopen(b->data, b->len, "r");
    assert_non_null(f);
    return f;
}

static void write_all_kinds(pd_bin_writer *w)
{
    pd_bin_put_version(w, 3);
    pd_bin_put_u8(w, 0xab);
    pd_bin_put_u16(w, 0x0102);
    pd_bin_put_u32(w, 0x01020304u);
    pd_bin_put_u64(w, 0x0102030405060708ull);
    pd_bin_put_i32(w, -2);
    pd_bin_put_i64(w, INT64_MIN);
    pd_bin_put_f32(w, 1.0f);
    pd_bin_put_f64(w, -0.5);
    pd_bin_put_bool(w, true);
    pd_bin_put_str(w, "abc", 3);
    float fa[3] = {1.0f, -2.0f, 0.25f};
    pd_bin_put_f32_array(w, fa, 3);
    uint32_t ua[2] = {7, 0xdeadbeef};
    pd_bin_put_u32_array(w, ua, 2);
}

static void test_exact_bytes(void **state)
{
    (void)state;
    buf b = written(write_all_kinds);
    static const unsigned char want[] = {
        3, 0, 0, 0,                   /* version */
        0xab,                         /* u8 */
        0x02, 0x01,                   /* u16 */
        0x04, 0x03, 0x02, 0x01,       /* u32 */
        8, 7, 6, 5, 4, 3, 2, 1,       /* u64 */
        0xfe, 0xff, 0xff, 0xff,       /* i32 -2 */
        0, 0, 0, 0, 0, 0, 0, 0x80,    /* i64 min */
        0, 0, 0x80, 0x3f,             /* f32 1.0 */
        0, 0, 0, 0, 0, 0, 0xe0, 0xbf, /* f64 -0.5 */
        1,                            /* bool */
        3, 0, 0, 0, 'a', 'b', 'c',    /* str */
        0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0, 0, 0, 0x80, 0x3e, /* f32 array */
        7, 0, 0, 0, 0xef, 0xbe, 0xad, 0xde,                 /* u32 array */
    };
    assert_int_equal(b.len, sizeof want);
    assert_memory_equal(b.data, want, sizeof want);

    FILE *f = reading(&b);
    pd_bin_reader r;
    pd_bin_reader_init(&r, f);
    assert_int_equal(pd_bin_get_version(&r, "test", 3), 3);
    assert_int_equal(pd_bin_get_u8(&r), 0xab);
    assert_int_equal(pd_bin_get_u16(&r), 0x0102);
    assert_int_equal(pd_bin_get_u32(&r), 0x01020304u);
    assert_true(pd_bin_get_u64(&r) == 0x0102030405060708ull);
    assert_int_equal(pd_bin_get_i32(&r), -2);
    assert_true(pd_bin_get_i64(&r) == INT64_MIN);
    assert_true(pd_bin_get_f32(&r) == 1.0f);
    assert_true(pd_bin_get_f64(&r) == -0.5);
    assert_true(pd_bin_get_bool(&r));
    char s[8];
    assert_int_equal(pd_bin_get_str(&r, s, sizeof s), 3);
    assert_string_equal(s, "abc");
    float fa[3];
    pd_bin_get_f32_array(&r, fa, 3);
    assert_true(fa[0] == 1.0f && fa[1] == -2.0f && fa[2] == 0.25f);
    uint32_t ua[2];
    pd_bin_get_u32_array(&r, ua, 2);
    assert_true(ua[0] == 7 && ua[1] == 0xdeadbeef);
    assert_int_equal(r.err, 0);
    assert_true(pd_bin_at_end(&r));
    fclose(f);
    free(b.data);
}

/* A truncated stream fails once and stays failed; every later read gives 0. */
static void test_truncation_sticks(void **state)
{
    (void)state;
    buf b = written(write_all_kinds);
    b.len = 9; /* version, u8, u16, and half of the u32 */
    FILE *f = reading(&b);
    pd_bin_reader r;
    pd_bin_reader_init(&r, f);
    assert_int_equal(pd_bin_get_version(&r, "test", 3), 3);
    assert_int_equal(pd_bin_get_u8(&r), 0xab);
    assert_int_equal(pd_bin_get_u16(&r), 0x0102);
    assert_int_equal(pd_bin_get_u32(&r), 0);
    assert_int_equal(r.err, -EIO);
    assert_int_equal(pd_bin_get_u8(&r), 0);
    char s[4] = "xyz";
    assert_int_equal(pd_bin_get_str(&r, s, sizeof s), 0);
    assert_string_equal(s, "");
    assert_int_equal(r.err, -EIO);
    fclose(f);
    free(b.data);
}

static void write_versioned(pd_bin_writer *w)
{
    pd_bin_put_version(w, 7);
    pd_bin_put_str(w, "toolong", 7);
    pd_bin_put_u8(w, 2);
}

static void test_malformed(void **state)
{
    (void)state;
    buf b = written(write_versioned);
    FILE *f = reading(&b);
    pd_bin_reader r;
    pd_bin_reader_init(&r, f);
    /* a newer version than this build reads is refused by name */
    assert_int_equal(pd_bin_get_version(&r, "users", 6), 0);
    assert_int_equal(r.err, -EINVAL);
    assert_non_null(strstr(r.why, "\"users\" has format version 7"));
    fclose(f);

    f = reading(&b);
    pd_bin_reader_init(&r, f);
    assert_int_equal(pd_bin_get_version(&r, "users", 7), 7);
    char s[4];
    assert_int_equal(pd_bin_get_str(&r, s, sizeof s), 0); /* 7 bytes do not fit in 4 */
    assert_int_equal(r.err, -EINVAL);
    fclose(f);

    f = reading(&b);
    pd_bin_reader_init(&r, f);
    pd_bin_get_version(&r, "users", 7);
    size_t n = 0;
    char *d = pd_bin_get_strdup(&r, 100, &n);
    assert_non_null(d);
    assert_int_equal(n, 7);
    assert_string_equal(d, "toolong");
    free(d);
    assert_false(pd_bin_get_bool(&r)); /* 2 is no flag */
    assert_int_equal(r.err, -EINVAL);
    fclose(f);
    free(b.data);
}

/* A failed write sticks too: the caller checks once at the end. */
static void test_write_failure_sticks(void **state)
{
    (void)state;
    char mem[6];
    FILE *f = fmemopen(mem, sizeof mem, "w");
    assert_non_null(f);
    setvbuf(f, NULL, _IONBF, 0);
    pd_bin_writer w;
    pd_bin_writer_init(&w, f);
    pd_bin_put_u32(&w, 1);
    assert_int_equal(w.err, 0);
    pd_bin_put_u64(&w, 2); /* does not fit */
    assert_int_equal(w.err, -EIO);
    pd_bin_put_u8(&w, 3);
    assert_int_equal(w.err, -EIO);
    fclose(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_bytes),
        cmocka_unit_test(test_truncation_sticks),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_write_failure_sticks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Little-endian by construction: values are shifted into bytes, so the code is the same on any
 * host; only the array helpers take the direct path when the host is little-endian too. */
#include "common/binio.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define HOST_LE 1
#else
#define HOST_LE 0
#endif

void pd_bin_writer_init(pd_bin_writer *w, FILE *f)
{
    w->f = f;
    w->err = f ? 0 : -EIO;
}

void pd_bin_reader_init(pd_bin_reader *r, FILE *f)
{
    r->f = f;
    r->err = f ? 0 : -EIO;
    r->why[0] = '\0';
}

/* ---- writing ---- */

void pd_bin_put_bytes(pd_bin_writer *w, const void *p, size_t n)
{
    if (w->err || n == 0)
        return;
    if (fwrite_unlocked(p, 1, n, w->f) != n)
        w->err = -EIO;
}

static void put_le(pd_bin_writer *w, uint64_t v, size_t width)
{
    unsigned char b[8];
    for (size_t i = 0; i < width; i++)
        b[i] = (unsigned char)(v >> (8 * i));
    pd_bin_put_bytes(w, b, width);
}

void pd_bin_put_u8(pd_bin_writer *w, uint8_t v)
{
    put_le(w, v, 1);
}

void pd_bin_put_u16(pd_bin_writer *w, uint16_t v)
{
    put_le(w, v, 2);
}

void pd_bin_put_u32(pd_bin_writer *w, uint32_t v)
{
    put_le(w, v, 4);
}

void pd_bin_put_u64(pd_bin_writer *w, uint64_t v)
{
    put_le(w, v, 8);
}

void pd_bin_put_i32(pd_bin_writer *w, int32_t v)
{
    put_le(w, (uint32_t)v, 4);
}

void pd_bin_put_i64(pd_bin_writer *w, int64_t v)
{
    put_le(w, (uint64_t)v, 8);
}

void pd_bin_put_f32(pd_bin_writer *w, float v)
{
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    put_le(w, u, 4);
}

void pd_bin_put_f64(pd_bin_writer *w, double v)
{
    uint64_t u;
    memcpy(&u, &v, sizeof u);
    put_le(w, u, 8);
}

void pd_bin_put_bool(pd_bin_writer *w, bool v)
{
    put_le(w, v ? 1 : 0, 1);
}

void pd_bin_put_str(pd_bin_writer *w, const char *s, size_t len)
{
    if (len > UINT32_MAX) {
        w->err = -EINVAL;
        return;
    }
    pd_bin_put_u32(w, (uint32_t)len);
    pd_bin_put_bytes(w, s, len);
}

void pd_bin_put_version(pd_bin_writer *w, uint32_t version)
{
    pd_bin_put_u32(w, version);
}

#define PUT_ARRAY(name, type, width, bits)                                                         \
    void name(pd_bin_writer *w, const type *a, size_t n)                                           \
    {                                                                                              \
        if (HOST_LE) {                                                                             \
            pd_bin_put_bytes(w, a, n * (width));                                                   \
            return;                                                                                \
        }                                                                                          \
        for (size_t i = 0; i < n; i++) {                                                           \
            bits u;                                                                                \
            memcpy(&u, &a[i], sizeof u);                                                           \
            put_le(w, u, width);                                                                   \
        }                                                                                          \
    }

PUT_ARRAY(pd_bin_put_f32_array, float, 4, uint32_t)
PUT_ARRAY(pd_bin_put_u16_array, uint16_t, 2, uint16_t)
PUT_ARRAY(pd_bin_put_u32_array, uint32_t, 4, uint32_t)
PUT_ARRAY(pd_bin_put_u64_array, uint64_t, 8, uint64_t)

/* ---- reading ---- */

void pd_bin_fail(pd_bin_reader *r, const char *fmt, ...)
{
    if (r->err)
        return;
    r->err = -EINVAL;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->why, sizeof r->why, fmt, ap);
    va_end(ap);
}

void pd_bin_get_bytes(pd_bin_reader *r, void *p, size_t n)
{
    if (r->err) {
        memset(p, 0, n);
        return;
    }
    if (n && fread_unlocked(p, 1, n, r->f) != n) {
        r->err = -EIO;
        snprintf(r->why, sizeof r->why, "truncated");
        memset(p, 0, n);
    }
}

static uint64_t get_le(pd_bin_reader *r, size_t width)
{
    unsigned char b[8];
    pd_bin_get_bytes(r, b, width);
    uint64_t v = 0;
    for (size_t i = width; i > 0; i--)
        v = (v << 8) | b[i - 1];
    return v;
}

uint8_t pd_bin_get_u8(pd_bin_reader *r)
{
    return (uint8_t)get_le(r, 1);
}

uint16_t pd_bin_get_u16(pd_bin_reader *r)
{
    return (uint16_t)get_le(r, 2);
}

uint32_t pd_bin_get_u32(pd_bin_reader *r)
{
    return (uint32_t)get_le(r, 4);
}

uint64_t pd_bin_get_u64(pd_bin_reader *r)
{
    return get_le(r, 8);
}

int32_t pd_bin_get_i32(pd_bin_reader *r)
{
    return (int32_t)(uint32_t)get_le(r, 4);
}

int64_t pd_bin_get_i64(pd_bin_reader *r)
{
    return (int64_t)get_le(r, 8);
}

float pd_bin_get_f32(pd_bin_reader *r)
{
    uint32_t u = (uint32_t)get_le(r, 4);
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

double pd_bin_get_f64(pd_bin_reader *r)
{
    uint64_t u = get_le(r, 8);
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

bool pd_bin_get_bool(pd_bin_reader *r)
{
    uint8_t v = (uint8_t)get_le(r, 1);
    if (v > 1)
        pd_bin_fail(r, "a flag holds %u", v);
    return v == 1;
}

size_t pd_bin_get_str(pd_bin_reader *r, char *buf, size_t cap)
{
    uint32_t n = pd_bin_get_u32(r);
    if (!r->err && (size_t)n >= cap)
        pd_bin_fail(r, "a string of %u bytes where at most %zu fit", n, cap ? cap - 1 : 0);
    if (r->err) {
        if (cap)
            buf[0] = '\0';
        return 0;
    }
    pd_bin_get_bytes(r, buf, n);
    buf[r->err ? 0 : n] = '\0';
    return r->err ? 0 : n;
}

char *pd_bin_get_strdup(pd_bin_reader *r, size_t max, size_t *ret_len)
{
    uint32_t n = pd_bin_get_u32(r);
    if (!r->err && n > max)
        pd_bin_fail(r, "a string of %u bytes where at most %zu are allowed", n, max);
    if (r->err)
        return NULL;
    char *s = malloc((size_t)n + 1);
    if (!s) {
        r->err = -ENOMEM;
        snprintf(r->why, sizeof r->why, "out of memory");
        return NULL;
    }
    pd_bin_get_bytes(r, s, n);
    if (r->err) {
        free(s);
        return NULL;
    }
    s[n] = '\0';
    if (ret_len)
        *ret_len = n;
    return s;
}

#define GET_ARRAY(name, type, width, bits)                                                         \
    void name(pd_bin_reader *r, type *a, size_t n)                                                 \
    {                                                                                              \
        if (HOST_LE) {                                                                             \
            pd_bin_get_bytes(r, a, n * (width));                                                   \
            return;                                                                                \
        }                                                                                          \
        for (size_t i = 0; i < n; i++) {                                                           \
            bits u = (bits)get_le(r, width);                                                       \
            memcpy(&a[i], &u, sizeof u);                                                           \
        }                                                                                          \
    }

GET_ARRAY(pd_bin_get_f32_array, float, 4, uint32_t)
GET_ARRAY(pd_bin_get_u16_array, uint16_t, 2, uint16_t)
GET_ARRAY(pd_bin_get_u32_array, uint32_t, 4, uint32_t)
GET_ARRAY(pd_bin_get_u64_array, uint64_t, 8, uint64_t)

uint32_t pd_bin_get_version(pd_bin_reader *r, const char *section, uint32_t newest)
{
    uint32_t v = pd_bin_get_u32(r);
    if (r->err)
        return 0;
    if (v < 1 || v > newest) {
        pd_bin_fail(r,
                    "section \"%s\" has format version %u; this build reads versions 1 to %u",
                    section, v, newest);
        return 0;
    }
    return v;
}

bool pd_bin_at_end(pd_bin_reader *r)
{
    if (r->err)
        return false;
    int c = getc_unlocked(r->f);
    if (c == EOF)
        return true;
    ungetc(c, r->f);
    return false;
}

/* Growth doubles the capacity, so rendering the same text every interval settles on one
 * allocation that pd_strbuf_reset() keeps. */
#include "common/strbuf.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void pd_strbuf_release(pd_strbuf *sb)
{
    free(sb->data);
    *sb = (pd_strbuf)PD_STRBUF_INIT;
}

void pd_strbuf_reset(pd_strbuf *sb)
{
    sb->len = 0;
    sb->oom = false;
    if (sb->data)
        sb->data[0] = '\0';
}

/* Room for extra more bytes and the NUL. A size that would overflow is treated as running
 * out of memory (sticky), never wrapped into a small allocation. */
static bool grow(pd_strbuf *sb, size_t extra)
{
    if (sb->oom)
        return false;
    if (extra > SIZE_MAX / 2 - 1 - sb->len) {
        sb->oom = true;
        return false;
    }
    size_t need = sb->len + extra + 1;
    if (need <= sb->cap)
        return true;
    size_t cap = sb->cap ? sb->cap : 256;
    while (cap < need)
        cap *= 2;
    char *p = realloc(sb->data, cap);
    if (!p) {
        sb->oom = true;
        return false;
    }
    sb->data = p;
    sb->cap = cap;
    return true;
}

void pd_strbuf_add(pd_strbuf *sb, const char *s, size_t len)
{
    if (!grow(sb, len))
        return;
    memcpy(sb->data + sb->len, s, len);
    sb->len += len;
    sb->data[sb->len] = '\0';
}

void pd_strbuf_adds(pd_strbuf *sb, const char *s)
{
    pd_strbuf_add(sb, s, strlen(s));
}

void pd_strbuf_addc(pd_strbuf *sb, char c)
{
    pd_strbuf_add(sb, &c, 1);
}

void pd_strbuf_addf(pd_strbuf *sb, const char *fmt, ...)
{
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof small) {
        pd_strbuf_add(sb, small, (size_t)n);
        return;
    }
    if (!grow(sb, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(sb->data + sb->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    sb->len += (size_t)n;
}

const char *pd_strbuf_str(const pd_strbuf *sb)
{
    return sb->data ? sb->data : "";
}

/* A growable, always NUL-terminated byte string for the text the daemon renders (the
 * Prometheus exposition). A value type, like git's strbuf: the caller owns it; running out of
 * memory is sticky, so a render checks once at the end. */
#ifndef PD_STRBUF_H
#define PD_STRBUF_H

#include <stdbool.h>
#include <stddef.h>

typedef struct pd_strbuf {
    char *data; /* NUL-terminated; NULL until the first append */
    size_t len;
    size_t cap;
    bool oom; /* an append failed: the content is incomplete */
} pd_strbuf;

#define PD_STRBUF_INIT                                                                             \
    {                                                                                              \
        NULL, 0, 0, false                                                                          \
    }

void pd_strbuf_release(pd_strbuf *sb);
/* Empties the string and clears the out-of-memory mark, keeping the allocation. */
void pd_strbuf_reset(pd_strbuf *sb);

void pd_strbuf_add(pd_strbuf *sb, const char *s, size_t len);
void pd_strbuf_adds(pd_strbuf *sb, const char *s);
void pd_strbuf_addc(pd_strbuf *sb, char c);
void pd_strbuf_addf(pd_strbuf *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The text so far ("" when nothing was added). */
const char *pd_strbuf_str(const pd_strbuf *sb);

#endif

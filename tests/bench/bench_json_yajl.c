/* yajl candidate for the JSON decoder benchmark: the streaming (callback) parser, which builds
 * no tree. String pointers are only valid inside callbacks; a real decoder would copy them, so
 * this candidate is measured slightly optimistically. */
#include "bench_json.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <yajl/yajl_parse.h>

int bench_decode_yajl(const char *buf, size_t len, bench_event *ev);

typedef struct yctx {
    bench_event *ev;
    int depth;
    bool in_context;
    bench_str *target; /* where the next string goes */
    bool want_ts, want_price;
} yctx;

static void clear(yctx *y)
{
    y->target = NULL;
    y->want_ts = y->want_price = false;
}

static int on_null(void *c)
{
    clear(c);
    return 1;
}

static int on_bool(void *c, int b)
{
    (void)b;
    clear(c);
    return 1;
}

static int on_number(void *c, const char *s, size_t l)
{
    yctx *y = c;
    char tmp[64];
    if (l < sizeof tmp && (y->want_ts || y->want_price)) {
        memcpy(tmp, s, l);
        tmp[l] = '\0';
        if (y->want_ts)
            y->ev->ts = strtoll(tmp, NULL, 10);
        else
            y->ev->price = strtod(tmp, NULL);
    }
    clear(y);
    return 1;
}

static int on_string(void *c, const unsigned char *s, size_t l)
{
    yctx *y = c;
    if (y->target) {
        y->target->p = (const char *)s;
        y->target->n = l;
    }
    clear(y);
    return 1;
}

static bool key_is(const unsigned char *k, size_t l, const char *want)
{
    return l == strlen(want) && memcmp(k, want, l) == 0;
}

static int on_key(void *c, const unsigned char *k, size_t l)
{
    yctx *y = c;
    bench_event *ev = y->ev;
    clear(y);
    if (y->depth == 1) {
        if (key_is(k, l, "type"))
            y->target = &ev->type;
        else if (key_is(k, l, "user_id"))
            y->target = &ev->user;
        else if (key_is(k, l, "item_id"))
            y->target = &ev->item;
        else if (key_is(k, l, "ts"))
            y->want_ts = true;
        else if (key_is(k, l, "price"))
            y->want_price = true;
        y->in_context = key_is(k, l, "context");
    } else if (y->depth == 2 && y->in_context) {
        if (key_is(k, l, "device"))
            y->target = &ev->device;
        else if (key_is(k, l, "country"))
            y->target = &ev->country;
        else if (key_is(k, l, "campaign"))
            y->target = &ev->campaign;
    }
    return 1;
}

static int on_start_map(void *c)
{
    ((yctx *)c)->depth++;
    return 1;
}

static int on_end_map(void *c)
{
    yctx *y = c;
    if (--y->depth == 1)
        y->in_context = false;
    return 1;
}

static const yajl_callbacks callbacks = {
    on_null,      on_bool, NULL,       NULL, on_number, on_string,
    on_start_map, on_key,  on_end_map, NULL, NULL,
};

int bench_decode_yajl(const char *buf, size_t len, bench_event *ev)
{
    yctx y = {.ev = ev};
    yajl_handle h = yajl_alloc(&callbacks, NULL, &y);
    int ok = yajl_parse(h, (const unsigned char *)buf, len) == yajl_status_ok &&
             yajl_complete_parse(h) == yajl_status_ok;
    yajl_free(h);
    return ok ? 0 : -1;
}

/* Fuzzes the event decoder (pipeline/event.h) with one message per input: any bytes must give
 * either an event whose strings lie in valid memory and respect the limits, or a refusal with a
 * reason; a refusal must not disturb the next decode. The mapping is tests/unit/test_event.c's,
 * plus extra paths that overlap the mapped fields, reach through dotted keys and go deeper
 * than the decoder walks. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "pipeline/event.h"

#define MAX_STRING 64

static char *type_names[] = {"view", "click", "add_to_cart", "purchase", "review", "forget"};

static const char *const extra_paths[] = {
    "context.device",
    "context.emp.var.rate",
    "context.nested.deep",
    "flag",
    "user_id",             /* the same key as a mapped field: read twice, never a duplicate */
    "a.b.c.d.e.f.g.h.i.j", /* deeper than the decoder walks */
    "context",
};
#define N_EXTRA (sizeof extra_paths / sizeof extra_paths[0])

static const char good_event[] = "{\"user_id\":\"u1\",\"type\":\"view\",\"ts\":5,"
                                 "\"context\":{\"device\":\"d\"}}";
/* what good_event gives at each extra path */
static const pd_value_kind good_kinds[N_EXTRA] = {
    PD_VALUE_STRING, PD_VALUE_MISSING, PD_VALUE_MISSING, PD_VALUE_MISSING,
    PD_VALUE_STRING, PD_VALUE_MISSING, PD_VALUE_OTHER,
};

static pd_decoder *decoder(void)
{
    static pd_decoder *dec;
    if (dec)
        return dec;
    pd_events_conf conf = {
        .field_event_id = "event_id",
        .field_user = "user_id",
        .field_item = "item_id",
        .field_type = "type",
        .field_time = "ts",
        .field_value = "price",
        .field_text = "meta.text",
        .types = type_names,
        .n_types = sizeof type_names / sizeof type_names[0],
        .forget_type = 5,
        .max_message_bytes = 8192,
        .max_string_length = MAX_STRING,
    };
    char err[256] = "";
    dec = pd_decoder_new(&conf, extra_paths, N_EXTRA, err, sizeof err);
    if (!dec) {
        fprintf(stderr, "pd_decoder_new: %s\n", err);
        abort();
    }
    return dec;
}

/* Reads every byte the event points at, so ASan sees a pointer into freed or foreign memory. */
static unsigned touch(const char *s, size_t n)
{
    unsigned h = 0;
    FUZZ_CHECK(s != NULL || n == 0);
    for (size_t i = 0; i < n; i++)
        h = h * 31 + (unsigned char)s[i];
    return h;
}

static void check_event(const pd_event *ev)
{
    volatile unsigned h = 0;
    FUZZ_CHECK(ev->user_len > 0 && ev->user_len <= MAX_STRING);
    FUZZ_CHECK(ev->item_len <= MAX_STRING && ev->event_id_len <= MAX_STRING);
    FUZZ_CHECK(memchr(ev->user, '\0', ev->user_len) == NULL);
    FUZZ_CHECK(ev->type >= 0 && (size_t)ev->type < sizeof type_names / sizeof type_names[0]);
    FUZZ_CHECK(ev->ts_ms >= 0);
    FUZZ_CHECK(!ev->has_value || (ev->value == ev->value && ev->value - ev->value == 0));
    FUZZ_CHECK(ev->n_fields == N_EXTRA);
    h += touch(ev->user, ev->user_len) + touch(ev->item, ev->item_len);
    h += touch(ev->event_id, ev->event_id_len) + touch(ev->text, ev->text_len);
    for (size_t i = 0; i < ev->n_fields; i++) {
        const pd_value *v = &ev->fields[i];
        FUZZ_CHECK(v->kind >= PD_VALUE_MISSING && v->kind <= PD_VALUE_OTHER);
        if (v->kind == PD_VALUE_STRING)
            h += touch(v->str, v->len);
        if (v->kind == PD_VALUE_NUMBER)
            FUZZ_CHECK(v->num - v->num == 0); /* finite */
    }
    (void)h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pd_decoder *dec = decoder();
    pd_event ev;
    char detail[128];

    /* with a message timestamp to fall back on, and without one */
    pd_decode_error err =
        pd_decoder_decode(dec, (const char *)data, size, 1000, &ev, detail, sizeof detail);
    FUZZ_CHECK(err >= PD_DECODE_OK && err < PD_DECODE__COUNT);
    if (err == PD_DECODE_OK)
        check_event(&ev);
    else
        FUZZ_CHECK(strlen(detail) < sizeof detail && detail[0] != '\0');
    err = pd_decoder_decode(dec, (const char *)data, size, 0, &ev, NULL, 0);
    FUZZ_CHECK(err >= PD_DECODE_OK && err < PD_DECODE__COUNT);
    if (err == PD_DECODE_OK)
        check_event(&ev);

    /* whatever came before, a good event still decodes to itself */
    err = pd_decoder_decode(dec, good_event, sizeof good_event - 1, 0, &ev, NULL, 0);
    FUZZ_CHECK(err == PD_DECODE_OK);
    FUZZ_CHECK(ev.user_len == 2 && memcmp(ev.user, "u1", 2) == 0 && ev.ts_ms == 5);
    FUZZ_CHECK(ev.fields[0].kind == PD_VALUE_STRING && ev.fields[0].len == 1);
    for (size_t i = 1; i < N_EXTRA; i++)
        FUZZ_CHECK(ev.fields[i].kind == good_kinds[i]);
    return 0;
}

/* jansson candidate for the JSON decoder benchmark. */
#include "bench_json.h"

#include <jansson.h>

int bench_decode_jansson(const char *buf, size_t len, bench_event *ev);

static bench_str str_of(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    bench_str s = {0, 0};
    if (json_is_string(v)) {
        s.p = json_string_value(v);
        s.n = json_string_length(v);
    }
    return s;
}

int bench_decode_jansson(const char *buf, size_t len, bench_event *ev)
{
    json_error_t err;
    json_t *root = json_loadb(buf, len, 0, &err);
    if (!json_is_object(root)) {
        json_decref(root);
        return -1;
    }
    ev->type = str_of(root, "type");
    ev->user = str_of(root, "user_id");
    ev->item = str_of(root, "item_id");
    ev->ts = json_integer_value(json_object_get(root, "ts"));
    ev->price = json_number_value(json_object_get(root, "price"));
    json_t *ctx = json_object_get(root, "context");
    if (json_is_object(ctx)) {
        ev->device = str_of(ctx, "device");
        ev->country = str_of(ctx, "country");
        ev->campaign = str_of(ctx, "campaign");
    }
    json_decref(root); /* strings die with the tree: a real decoder would copy them */
    return 0;
}

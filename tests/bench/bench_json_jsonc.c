/* json-c candidate for the JSON decoder benchmark (strict, UTF-8 validating tokener). */
#include "bench_json.h"

#include <json-c/json.h>

int bench_decode_jsonc(const char *buf, size_t len, bench_event *ev);

static bench_str str_of(struct json_object *obj, const char *key)
{
    struct json_object *v;
    bench_str s = {0, 0};
    if (json_object_object_get_ex(obj, key, &v) && json_object_is_type(v, json_type_string)) {
        s.p = json_object_get_string(v);
        s.n = (size_t)json_object_get_string_len(v);
    }
    return s;
}

int bench_decode_jsonc(const char *buf, size_t len, bench_event *ev)
{
    static struct json_tokener *tok; /* reused across calls: a benchmark, not library code */
    if (!tok) {
        tok = json_tokener_new();
        json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    }
    json_tokener_reset(tok);
    struct json_object *root = json_tokener_parse_ex(tok, buf, (int)len);
    if (!root || !json_object_is_type(root, json_type_object)) {
        json_object_put(root);
        return -1;
    }
    ev->type = str_of(root, "type");
    ev->user = str_of(root, "user_id");
    ev->item = str_of(root, "item_id");
    struct json_object *v;
    if (json_object_object_get_ex(root, "ts", &v))
        ev->ts = json_object_get_int64(v);
    if (json_object_object_get_ex(root, "price", &v))
        ev->price = json_object_get_double(v);
    if (json_object_object_get_ex(root, "context", &v)) {
        ev->device = str_of(v, "device");
        ev->country = str_of(v, "country");
        ev->campaign = str_of(v, "campaign");
    }
    json_object_put(root);
    return 0;
}

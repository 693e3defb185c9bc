/* cJSON candidate for the JSON decoder benchmark. */
#include "bench_json.h"

#include <string.h>

#include <cjson/cJSON.h>

int bench_decode_cjson(const char *buf, size_t len, bench_event *ev);

static bench_str str_of(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    bench_str s = {0, 0};
    if (cJSON_IsString(v)) {
        s.p = v->valuestring;
        s.n = strlen(v->valuestring);
    }
    return s;
}

int bench_decode_cjson(const char *buf, size_t len, bench_event *ev)
{
    cJSON *root = cJSON_ParseWithLength(buf, len);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return -1;
    }
    ev->type = str_of(root, "type");
    ev->user = str_of(root, "user_id");
    ev->item = str_of(root, "item_id");
    const cJSON *ts = cJSON_GetObjectItemCaseSensitive(root, "ts");
    ev->ts = cJSON_IsNumber(ts) ? (int64_t)ts->valuedouble : 0;
    const cJSON *price = cJSON_GetObjectItemCaseSensitive(root, "price");
    ev->price = cJSON_IsNumber(price) ? price->valuedouble : 0;
    const cJSON *ctx = cJSON_GetObjectItemCaseSensitive(root, "context");
    if (cJSON_IsObject(ctx)) {
        ev->device = str_of(ctx, "device");
        ev->country = str_of(ctx, "country");
        ev->campaign = str_of(ctx, "campaign");
    }
    cJSON_Delete(root);
    return 0;
}

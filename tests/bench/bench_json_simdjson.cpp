/* simdjson candidates for the JSON decoder benchmark (DOM and On-Demand). */
#include "bench_json.h"

#include <simdjson.h>

using namespace simdjson;

static bench_str str_of(dom::element el)
{
    std::string_view s;
    if (el.get_string().get(s) != SUCCESS)
        return {nullptr, 0};
    return {s.data(), s.size()};
}

extern "C" int bench_decode_simdjson_dom(const char *buf, size_t len, bench_event *ev)
{
    static dom::parser parser; /* one per process: a benchmark, not library code */
    dom::element root;
    if (parser.parse(buf, len, false).get(root) != SUCCESS)
        return -1;
    dom::object obj;
    if (root.get_object().get(obj) != SUCCESS)
        return -1;
    for (auto field : obj) {
        std::string_view k = field.key;
        if (k == "type")
            ev->type = str_of(field.value);
        else if (k == "user_id")
            ev->user = str_of(field.value);
        else if (k == "item_id")
            ev->item = str_of(field.value);
        else if (k == "ts") {
            if (field.value.get_int64().get(ev->ts) != SUCCESS)
                ev->ts = 0;
        } else if (k == "price") {
            if (field.value.get_double().get(ev->price) != SUCCESS)
                ev->price = 0;
        } else if (k == "context") {
            dom::object ctx;
            if (field.value.get_object().get(ctx) != SUCCESS)
                continue;
            for (auto c : ctx) {
                if (c.key == "device")
                    ev->device = str_of(c.value);
                else if (c.key == "country")
                    ev->country = str_of(c.value);
                else if (c.key == "campaign")
                    ev->campaign = str_of(c.value);
            }
        }
    }
    return 0;
}

extern "C" int bench_decode_simdjson_ondemand(const char *buf, size_t len, bench_event *ev)
{
    static ondemand::parser parser;
    ondemand::document doc;
    if (parser.iterate(buf, len, len + SIMDJSON_PADDING).get(doc) != SUCCESS)
        return -1;
    ondemand::object obj;
    if (doc.get_object().get(obj) != SUCCESS)
        return -1;
    for (auto field : obj) {
        std::string_view k;
        if (field.unescaped_key().get(k) != SUCCESS)
            return -1;
        std::string_view s;
        if (k == "type" && field.value().get_string().get(s) == SUCCESS)
            ev->type = {s.data(), s.size()};
        else if (k == "user_id" && field.value().get_string().get(s) == SUCCESS)
            ev->user = {s.data(), s.size()};
        else if (k == "item_id" && field.value().get_string().get(s) == SUCCESS)
            ev->item = {s.data(), s.size()};
        else if (k == "ts") {
            if (field.value().get_int64().get(ev->ts) != SUCCESS)
                ev->ts = 0;
        } else if (k == "price") {
            if (field.value().get_double().get(ev->price) != SUCCESS)
                ev->price = 0;
        } else if (k == "context") {
            ondemand::object ctx;
            if (field.value().get_object().get(ctx) != SUCCESS)
                continue;
            for (auto c : ctx) {
                std::string_view ck;
                if (c.unescaped_key().get(ck) != SUCCESS)
                    return -1;
                if (ck == "device" && c.value().get_string().get(s) == SUCCESS)
                    ev->device = {s.data(), s.size()};
                else if (ck == "country" && c.value().get_string().get(s) == SUCCESS)
                    ev->country = {s.data(), s.size()};
                else if (ck == "campaign" && c.value().get_string().get(s) == SUCCESS)
                    ev->campaign = {s.data(), s.size()};
            }
        }
    }
    return 0;
}

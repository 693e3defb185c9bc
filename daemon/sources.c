/* Per topic an array of ids indexed by partition, grown to the highest partition seen; one
 * array of per-id state (last delivery, assignment) indexed by id. */
#include "daemon/sources.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define NO_ID UINT32_MAX

typedef struct topic_ids {
    char *name;
    uint32_t *ids; /* by partition; NO_ID where not seen */
    size_t n_ids;
} topic_ids;

typedef struct source {
    int64_t seen_ms; /* last delivery, or when it was (re)assigned or released */
    bool assigned;
    bool held; /* the engine counts it in the watermark */
} source;

struct pd_sources {
    topic_ids *topics;
    size_t n_topics;
    source *by_id;
    size_t count, cap;
};

pd_sources *pd_sources_new(void)
{
    return calloc(1, sizeof(pd_sources));
}

void pd_sources_free(pd_sources *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n_topics; i++) {
        free(s->topics[i].name);
        free(s->topics[i].ids);
    }
    free(s->topics);
    free(s->by_id);
    free(s);
}

static topic_ids *topic_find(pd_sources *s, const char *topic)
{
    for (size_t i = 0; i < s->n_topics; i++)
        if (strcmp(s->topics[i].name, topic) == 0)
            return &s->topics[i];
    return NULL;
}

static topic_ids *topic_add(pd_sources *s, const char *topic)
{
    char *name = strdup(topic);
    topic_ids *t = name ? realloc(s->topics, (s->n_topics + 1) * sizeof *t) : NULL;
    if (!t) {
        free(name);
        return NULL;
    }
    s->topics = t;
    t = &s->topics[s->n_topics++];
    *t = (topic_ids){.name = name};
    return t;
}

/* The slot of partition in t, growing the array (doubling) to reach it; NULL when out of
 * memory. */
static uint32_t *partition_slot(topic_ids *t, int32_t partition)
{
    size_t p = (size_t)partition;
    if (p >= t->n_ids) {
        size_t n = t->n_ids ? t->n_ids : 16;
        while (n <= p)
            n *= 2;
        uint32_t *ids = realloc(t->ids, n * sizeof *ids);
        if (!ids)
            return NULL;
        for (size_t i = t->n_ids; i < n; i++)
            ids[i] = NO_ID;
        t->ids = ids;
        t->n_ids = n;
    }
    return &t->ids[p];
}

/* A new id, its time taken from now_ms; -ENOMEM when out of room. */
static int64_t id_new(pd_sources *s, int64_t now_ms)
{
    if (s->count >= s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        source *n = realloc(s->by_id, cap * sizeof *n);
        if (!n)
            return -ENOMEM;
        s->by_id = n;
        s->cap = cap;
    }
    s->by_id[s->count] = (source){.seen_ms = now_ms, .assigned = true, .held = true};
    return (int64_t)s->count++;
}

int64_t pd_sources_get(pd_sources *s, const char *topic, int32_t partition, int64_t now_ms)
{
    if (partition < 0)
        return -EINVAL;
    topic_ids *t = topic_find(s, topic);
    if (!t && !(t = topic_add(s, topic)))
        return -ENOMEM;
    uint32_t *slot = partition_slot(t, partition);
    if (!slot)
        return -ENOMEM;
    if (*slot != NO_ID) {
        source *src = &s->by_id[*slot];
        if (!src->assigned)
            *src = (source){.seen_ms = now_ms, .assigned = true, .held = true};
        return *slot;
    }
    int64_t id = id_new(s, now_ms);
    if (id >= 0)
        *slot = (uint32_t)id;
    return id;
}

void pd_sources_delivered(pd_sources *s, uint32_t id, int64_t t_ms)
{
    if (id < s->count)
        s->by_id[id].seen_ms = t_ms;
}

int64_t pd_sources_seen_ms(const pd_sources *s, uint32_t id)
{
    return id < s->count ? s->by_id[id].seen_ms : INT64_MAX;
}

bool pd_sources_assigned(const pd_sources *s, uint32_t id)
{
    return id < s->count && s->by_id[id].assigned;
}

void pd_sources_release(pd_sources *s, uint32_t id, int64_t now_ms)
{
    if (id < s->count) {
        s->by_id[id].assigned = false;
        s->by_id[id].seen_ms = now_ms;
    }
}

size_t pd_sources_expire(pd_sources *s, int64_t now_ms, int64_t timeout_ms, uint32_t *ret_ids,
                         size_t max)
{
    size_t n = 0;
    for (size_t i = 0; i < s->count && n < max; i++) {
        source *src = &s->by_id[i];
        if (!src->assigned && src->held && now_ms - src->seen_ms >= timeout_ms) {
            src->held = false;
            ret_ids[n++] = (uint32_t)i;
        }
    }
    return n;
}

size_t pd_sources_count(const pd_sources *s)
{
    return s->count;
}

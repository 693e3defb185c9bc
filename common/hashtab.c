#include "common/hashtab.h"

#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

int pd_hashtab_init(pd_hashtab *t, size_t min_cap)
{
    size_t cap = 16;
    while (cap < min_cap)
        cap *= 2;
    t->slots = calloc(cap, sizeof *t->slots);
    t->cap = t->slots ? cap : 0;
    t->count = 0;
    return t->slots ? 0 : -ENOMEM;
}

void pd_hashtab_release(pd_hashtab *t)
{
    free(t->slots);
    *t = (pd_hashtab){0};
}

size_t pd_hashtab_slot_of(const pd_hashtab *t, uint64_t hash, uint64_t value)
{
    size_t i = pd_hashtab_first(t, hash);
    while (t->slots[i].value && t->slots[i].value != value)
        i = pd_hashtab_next(t, i);
    return i;
}

static size_t empty_slot(const pd_hslot *slots, size_t cap, uint64_t hash)
{
    size_t i = (size_t)hash & (cap - 1);
    while (slots[i].value)
        i = (i + 1) & (cap - 1);
    return i;
}

int pd_hashtab_reserve(pd_hashtab *t)
{
    if ((t->count + 1) * 2 <= t->cap)
        return 0;
    size_t ncap = t->cap ? t->cap * 2 : 16;
    pd_hslot *ns = calloc(ncap, sizeof *ns);
    if (!ns)
        return -ENOMEM;
    for (size_t i = 0; i < t->cap; i++)
        if (t->slots[i].value)
            ns[empty_slot(ns, ncap, t->slots[i].hash)] = t->slots[i];
    free(t->slots);
    t->slots = ns;
    t->cap = ncap;
    return 0;
}

size_t pd_hashtab_insert(pd_hashtab *t, uint64_t hash, uint64_t value)
{
    assert(value != 0 && t->count * 2 < t->cap); /* a reserve() must come first */
    size_t i = empty_slot(t->slots, t->cap, hash);
    t->slots[i] = (pd_hslot){hash, value};
    t->count++;
    return i;
}

void pd_hashtab_remove_at(pd_hashtab *t, size_t i)
{
    assert(i < t->cap && t->slots[i].value != 0);
    /* backward-shift deletion: pull back every later entry of the cluster that may move
     * closer to its home slot, so every probe chain stays unbroken */
    size_t j = i;
    for (;;) {
        j = pd_hashtab_next(t, j);
        if (!t->slots[j].value)
            break;
        size_t home = pd_hashtab_first(t, t->slots[j].hash);
        bool between = (i <= j) ? (home > i && home <= j) : (home > i || home <= j);
        if (between)
            continue;
        t->slots[i] = t->slots[j];
        i = j;
    }
    t->slots[i] = (pd_hslot){0};
    t->count--;
}

void pd_hashtab_clear(pd_hashtab *t)
{
    if (t->slots)
        memset(t->slots, 0, t->cap * sizeof *t->slots);
    t->count = 0;
}

size_t pd_hashtab_memory(const pd_hashtab *t)
{
    return t->cap * sizeof *t->slots;
}

/* The one hash table: open addressing with linear probing over (64-bit hash, value) slots,
 * growing at a load of one half, with backward-shift deletion so no tombstones build up. The
 * hash sits beside the value, so a probe compares hashes without touching (and cache-missing
 * on) the records it passes; the caller confirms a match on its own key. Values are non-zero
 * 64-bit words (a pointer, or an index + 1): 0 marks an empty slot. A value type: the caller
 * owns it; the probe functions are inline because they are on every event's path.
 *
 *   for (size_t i = pd_hashtab_first(t, h); t->slots[i].value; i = pd_hashtab_next(t, i))
 *       if (t->slots[i].hash == h && same_key(t->slots[i].value, key))
 *           return found(i);
 *   // not found: i is the empty slot where (h, value) goes, after pd_hashtab_reserve() */
#ifndef PD_HASHTAB_H
#define PD_HASHTAB_H

#include <stddef.h>
#include <stdint.h>

typedef struct pd_hslot {
    uint64_t hash;
    uint64_t value; /* 0 = empty */
} pd_hslot;

typedef struct pd_hashtab {
    pd_hslot *slots;
    size_t cap; /* a power of two */
    size_t count;
} pd_hashtab;

/* Room for at least min_cap / 2 entries before the first growth. 0 or -ENOMEM. */
int pd_hashtab_init(pd_hashtab *t, size_t min_cap);
void pd_hashtab_release(pd_hashtab *t);

static inline size_t pd_hashtab_first(const pd_hashtab *t, uint64_t hash)
{
    return (size_t)hash & (t->cap - 1);
}

static inline size_t pd_hashtab_next(const pd_hashtab *t, size_t i)
{
    return (i + 1) & (t->cap - 1);
}

/* The slot of the entry with this hash and value, or of the empty slot that ends its chain. */
size_t pd_hashtab_slot_of(const pd_hashtab *t, uint64_t hash, uint64_t value);

/* Makes room for one more entry, growing the table if that entry would pass the load limit.
 * Growing moves entries: a slot found before is stale afterwards. 0 or -ENOMEM. */
int pd_hashtab_reserve(pd_hashtab *t);

/* Inserts (hash, value), value != 0, after pd_hashtab_reserve() succeeded. Duplicates are the
 * caller's to avoid. Returns the slot. */
size_t pd_hashtab_insert(pd_hashtab *t, uint64_t hash, uint64_t value);

/* Removes the entry in slot i. */
void pd_hashtab_remove_at(pd_hashtab *t, size_t i);

/* Empties the table, keeping its size. */
void pd_hashtab_clear(pd_hashtab *t);

size_t pd_hashtab_memory(const pd_hashtab *t);

#endif

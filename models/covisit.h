/* Item-to-item co-visitation (Linden et al. 2003): for every item, the items seen after (or
 * before) it by the same users and how strongly, kept to a fixed number of neighbours per item.
 * Items are the recommender's slots; an entry remembers the generation of its item's slot, so
 * an entry that outlived its item (the slot was reused) is skipped by readers and reused by
 * writers, and evicting an item costs nothing here but its own row.
 *
 * A full row keeps its heaviest entries the way Space-Saving does (Metwally et al. 2005): a
 * new neighbour takes the place of the lightest entry and starts at its weight plus its own,
 * so a neighbour that keeps coming back rises and a one-off sinks, and no weight is ever
 * under-counted. Not synchronised. */
#ifndef PD_COVISIT_H
#define PD_COVISIT_H

#include <stddef.h>
#include <stdint.h>

#include "common/binio.h"

typedef struct pd_covisit pd_covisit;

typedef struct pd_covisit_entry {
    uint32_t item; /* slot */
    uint32_t gen;  /* generation of the slot when the entry was made */
    float weight;
} pd_covisit_entry;

/* Rows of at most neighbors entries (>= 1). NULL when out of memory. */
pd_covisit *pd_covisit_new(uint32_t neighbors);
void pd_covisit_free(pd_covisit *c);

/* Makes room for rows of slots [0, n_slots) (new rows are empty). 0 or -ENOMEM. */
int pd_covisit_reserve(pd_covisit *c, size_t n_slots);

/* Empties the row of slot (its item was evicted). */
void pd_covisit_clear(pd_covisit *c, uint32_t slot);

/* Adds weight to the pair from -> to, where to's slot is now at generation to_gen; gens[s] is
 * the current generation of every slot s (for spotting dead entries). 0 or -ENOMEM (the row
 * is as it was). */
int pd_covisit_add(pd_covisit *c, uint32_t from, uint32_t to, uint32_t to_gen, float weight,
                   const uint32_t *gens);

/* The entries of slot's row in no particular order, dead ones included (compare gen with the
 * slot's); valid until the next change. */
size_t pd_covisit_row(const pd_covisit *c, uint32_t slot, const pd_covisit_entry **ret_entries);

/* Bytes held. */
size_t pd_covisit_memory(const pd_covisit *c);

/* A row as a count and its entries; load checks items against n_slots and the count against
 * the neighbour limit (fails the reader otherwise). */
void pd_covisit_save_row(const pd_covisit *c, uint32_t slot, pd_bin_writer *w);
int pd_covisit_load_row(pd_covisit *c, uint32_t slot, size_t n_slots, pd_bin_reader *r);

#endif

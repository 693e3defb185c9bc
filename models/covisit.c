/* Rows grow by doubling up to the neighbour limit, so memory follows the pairs actually seen;
 * lookups scan the row, which for the default of 100 neighbours is a few cache lines. */
#include "models/covisit.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

typedef struct row {
    pd_covisit_entry *e;
    uint32_t n, cap;
} row;

struct pd_covisit {
    row *rows;
    size_t n_rows;
    uint32_t neighbors;
    size_t bytes; /* of every row's entries */
};

pd_covisit *pd_covisit_new(uint32_t neighbors)
{
    pd_covisit *c;

    if (neighbors == 0)
        return NULL;
    c = calloc(1, sizeof *c);
    if (c)
        c->neighbors = neighbors;
    return c;
}

void pd_covisit_free(pd_covisit *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n_rows; i++)
        free(c->rows[i].e);
    free(c->rows);
    free(c);
}

int pd_covisit_reserve(pd_covisit *c, size_t n_slots)
{
    row *rows;

    if (n_slots <= c->n_rows)
        return 0;
    rows = realloc(c->rows, n_slots * sizeof *rows);
    if (!rows)
        return -ENOMEM;
    memset(rows + c->n_rows, 0, (n_slots - c->n_rows) * sizeof *rows);
    c->rows = rows;
    c->n_rows = n_slots;
    return 0;
}

void pd_covisit_clear(pd_covisit *c, uint32_t slot)
{
    row *r = &c->rows[slot];

    c->bytes -= r->cap * sizeof *r->e;
    free(r->e);
    *r = (row){0};
}

static int row_grow(pd_covisit *c, row *r)
{
    uint32_t cap = r->cap ? r->cap * 2 : 4;
    pd_covisit_entry *e;

    if (cap > c->neighbors)
        cap = c->neighbors;
    e = realloc(r->e, cap * sizeof *e);
    if (!e)
        return -ENOMEM;
    c->bytes += (cap - r->cap) * sizeof *e;
    r->e = e;
    r->cap = cap;
    return 0;
}

int pd_covisit_add(pd_covisit *c, uint32_t from, uint32_t to, uint32_t to_gen, float weight,
                   const uint32_t *gens)
{
    row *r = &c->rows[from];
    uint32_t dead = UINT32_MAX, lightest = UINT32_MAX;

    for (uint32_t k = 0; k < r->n; k++) {
        pd_covisit_entry *e = &r->e[k];

        if (e->item == to && e->gen == to_gen) {
            e->weight += weight;
            return 0;
        }
        if (e->gen != gens[e->item])
            dead = k;
        else if (lightest == UINT32_MAX || e->weight < r->e[lightest].weight)
            lightest = k;
    }
    if (dead != UINT32_MAX) {
        r->e[dead] = (pd_covisit_entry){to, to_gen, weight};
        return 0;
    }
    if (r->n == c->neighbors) {
        pd_covisit_entry *e = &r->e[lightest];

        *e = (pd_covisit_entry){to, to_gen, e->weight + weight};
        return 0;
    }
    if (r->n == r->cap && row_grow(c, r) < 0)
        return -ENOMEM;
    r->e[r->n++] = (pd_covisit_entry){to, to_gen, weight};
    return 0;
}

size_t pd_covisit_row(const pd_covisit *c, uint32_t slot, const pd_covisit_entry **ret_entries)
{
    const row *r = &c->rows[slot];

    *ret_entries = r->e;
    return r->n;
}

size_t pd_covisit_memory(const pd_covisit *c)
{
    return sizeof *c + c->n_rows * sizeof *c->rows + c->bytes;
}

void pd_covisit_save_row(const pd_covisit *c, uint32_t slot, pd_bin_writer *w)
{
    const row *r = &c->rows[slot];

    pd_bin_put_u32(w, r->n);
    for (uint32_t k = 0; k < r->n; k++) {
        pd_bin_put_u32(w, r->e[k].item);
        pd_bin_put_u32(w, r->e[k].gen);
        pd_bin_put_f32(w, r->e[k].weight);
    }
}

int pd_covisit_load_row(pd_covisit *c, uint32_t slot, size_t n_slots, pd_bin_reader *rd)
{
    row *r = &c->rows[slot];
    uint32_t n = pd_bin_get_u32(rd);

    if (n > c->neighbors) {
        pd_bin_fail(rd, "co-visitation row of %u entries, more than the %u neighbours allowed",
                    n, c->neighbors);
        return rd->err;
    }
    pd_covisit_clear(c, slot);
    while (r->cap < n)
        if (row_grow(c, r) < 0)
            return -ENOMEM;
    for (uint32_t k = 0; k < n && !rd->err; k++) {
        pd_covisit_entry e;

        /* one field per statement: the order of an initialiser's calls is unspecified */
        e.item = pd_bin_get_u32(rd);
        e.gen = pd_bin_get_u32(rd);
        e.weight = pd_bin_get_f32(rd);

        if (e.item >= n_slots || !(e.weight >= 0))
            pd_bin_fail(rd, "co-visitation entry of item slot %u (of %zu), weight %g", e.item,
                        n_slots, (double)e.weight);
        r->e[r->n++] = e;
    }
    return rd->err;
}

/* A growable list of formatted error messages. */
#include "config/diag.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct pd_diag_entry {
    char *text; /* NULL when formatting ran out of memory */
    int line;
    int column;
} pd_diag_entry;

struct pd_diag {
    pd_diag_entry *entries;
    size_t n, cap;
};

pd_diag *pd_diag_new(void)
{
    return calloc(1, sizeof(pd_diag));
}

void pd_diag_free(pd_diag *diag)
{
    if (!diag)
        return;
    for (size_t i = 0; i < diag->n; i++)
        free(diag->entries[i].text);
    free(diag->entries);
    free(diag);
}

size_t pd_diag_count(const pd_diag *diag)
{
    return diag ? diag->n : 0;
}

const char *pd_diag_message(const pd_diag *diag, size_t i)
{
    if (!diag || i >= diag->n)
        return NULL;
    /* A message lost to memory pressure still counts as an error; say so rather than NULL. */
    return diag->entries[i].text ? diag->entries[i].text : "error: out of memory";
}

void pd_diag_print(const pd_diag *diag, FILE *out)
{
    for (size_t i = 0; i < pd_diag_count(diag); i++)
        fprintf(out, "%s\n", pd_diag_message(diag, i));
}

static char *format_message(const char *file, int line, int column, const char *fmt, va_list ap)
    __attribute__((format(printf, 4, 0)));

static char *format_message(const char *file, int line, int column, const char *fmt, va_list ap)
{
    char *body = NULL, *text = NULL;
    int n;

    if (vasprintf(&body, fmt, ap) < 0)
        return NULL;
    if (line > 0)
        n = asprintf(&text, "%s:%d:%d: error: %s", file ? file : "<config>", line, column, body);
    else
        n = asprintf(&text, "%s: error: %s", file ? file : "<config>", body);
    free(body);
    return n < 0 ? NULL : text;
}

int pd_diag_add(pd_diag *diag, const char *file, int line, int column, const char *fmt, ...)
{
    va_list ap;
    char *text;

    if (!diag)
        return -EINVAL;
    if (diag->n == diag->cap) {
        size_t cap = diag->cap ? diag->cap * 2 : 16;
        pd_diag_entry *entries = realloc(diag->entries, cap * sizeof(*entries));

        if (!entries)
            return -ENOMEM;
        diag->entries = entries;
        diag->cap = cap;
    }
    va_start(ap, fmt);
    text = format_message(file, line, column, fmt, ap);
    va_end(ap);
    diag->entries[diag->n++] = (pd_diag_entry){.text = text, .line = line, .column = column};
    return text ? 0 : -ENOMEM;
}

void pd_diag_sort_from(pd_diag *diag, size_t first)
{
    /* Insertion sort: stable, and a file's errors number in the tens. */
    if (!diag)
        return;
    for (size_t i = first + 1; i < diag->n; i++) {
        pd_diag_entry e = diag->entries[i];
        size_t j = i;

        while (j > first &&
               (diag->entries[j - 1].line > e.line ||
                (diag->entries[j - 1].line == e.line && diag->entries[j - 1].column > e.column))) {
            diag->entries[j] = diag->entries[j - 1];
            j--;
        }
        diag->entries[j] = e;
    }
}

/* Usage errors and did-you-mean for the command lines (cli.h). */
#include "daemon/cli.h"

#include <getopt.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

int pd_cli_usage_error(const char *prog, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry '%s --help' for more information.\n", prog);
    return PD_EXIT_USAGE;
}

int pd_cli_option_error(const char *prog, int c, char *const *argv, int optind_now)
{
    /* the word getopt stopped at; for a short option in a group ("-qx") the letter itself */
    const char *word = optind_now > 0 ? argv[optind_now - 1] : "";
    char shortopt[3] = {'-', (char)optopt, '\0'};
    bool is_long = strncmp(word, "--", 2) == 0;
    const char *name = is_long || optopt == 0 ? word : shortopt;
    if (is_long) {
        /* "--config=x" is named without its value */
        size_t n = strcspn(word, "=");
        if (c == ':')
            return pd_cli_usage_error(prog, "option \"%.*s\" needs a value", (int)n, word);
        return pd_cli_usage_error(prog, "unknown option \"%.*s\"", (int)n, word);
    }
    if (c == ':')
        return pd_cli_usage_error(prog, "option \"%s\" needs a value", name);
    return pd_cli_usage_error(prog, "unknown option \"%s\"", name);
}

/* Levenshtein distance with a small cap: names here are short. */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 63 || lb > 63)
        return 64;
    size_t prev[64], cur[64];
    for (size_t j = 0; j <= lb; j++)
        prev[j] = j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t del = prev[j] + 1, ins = cur[j - 1] + 1;
            size_t sub = prev[j - 1] + (a[i - 1] != b[j - 1]);
            cur[j] = del < ins ? (del < sub ? del : sub) : (ins < sub ? ins : sub);
        }
        memcpy(prev, cur, (lb + 1) * sizeof prev[0]);
    }
    return prev[lb];
}

const char *pd_cli_did_you_mean(const char *word, const char *const *cands, size_t n)
{
    size_t wl = strlen(word);
    size_t limit = wl <= 3 ? 1 : 2, best_d = limit + 1;
    const char *best = NULL;
    for (size_t i = 0; i < n; i++) {
        size_t d = edit_distance(word, cands[i]);
        if (d < best_d) {
            best_d = d;
            best = cands[i];
        }
    }
    if (best || wl < 2)
        return best;
    for (size_t i = 0; i < n; i++) {
        size_t cl = strlen(cands[i]);
        if (strncmp(word, cands[i], wl < cl ? wl : cl) == 0)
            return cands[i];
    }
    return NULL;
}

/* What the command lines of propensityd and propensityctl share, so both read the same way: a
 * usage error is one line and "Try 'PROG --help'", getopt's mistakes are reported in those
 * words, and a misspelt command gets the closest known name. No state: every call takes what it
 * needs. */
#ifndef PD_DAEMON_CLI_H
#define PD_DAEMON_CLI_H

#include <stddef.h>

#define PD_EXIT_USAGE 2

/* Prints "PROG: MESSAGE" and "Try 'PROG --help' for more information." to stderr and returns
 * PD_EXIT_USAGE. prog may be "propensityd replay": the hint then names that command's help. */
int pd_cli_usage_error(const char *prog, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The usage error for what getopt_long() returned in c (with opterr = 0 and an optstring that
 * starts with ':'): an unknown option or one that lacks its value, named as written. argv and
 * the current optind are getopt's. Returns PD_EXIT_USAGE. */
int pd_cli_option_error(const char *prog, int c, char *const *argv, int optind_now);

/* The closest name to word among cands: edit distance at most 2 (at most 1 for words of three
 * letters or fewer), or one a prefix of the other; NULL when nothing is close. */
const char *pd_cli_did_you_mean(const char *word, const char *const *cands, size_t n);

#endif

/* propensityd: dispatch to a subcommand. `propensityd --config FILE` is `run`. */
#include <stdio.h>
#include <string.h>

#include "daemon/commands.h"

#ifndef PD_VERSION
#define PD_VERSION "unknown"
#endif

typedef struct pd_command {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
} pd_command;

static const pd_command commands[] = {
    {"run", pd_cmd_run, "run the daemon: Kafka in, scores to Redis (default)"},
    {"check", pd_cmd_check, "validate a pipeline config and summarise it"},
    {"replay", pd_cmd_replay, "run the pipeline over event files and report model quality"},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: propensityd [run] --config FILE\n"
                 "       propensityd check FILE\n"
                 "       propensityd replay --config FILE EVENTS.jsonl [...]\n\n"
                 "Streaming propensity scores: consumes events from Kafka, learns online models\n"
                 "and publishes scores to Redis.\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-8s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\n`propensityd COMMAND --help` describes a command.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("propensityd %s\n", PD_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].fn(argc - 1, argv + 1);
    if (argv[1][0] == '-')
        return pd_cmd_run(argc, argv); /* options only: the daemon itself */
    fprintf(stderr, "propensityd: unknown command \"%s\"\n\n", argv[1]);
    usage(stderr);
    return 2;
}

/* propensityd: dispatch to a subcommand. `propensityd --config FILE` is `run`. */
#include <stdio.h>
#include <string.h>

#include "daemon/cli.h"
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

/* Man-page shaped, so `propensityd --help` answers what `man propensityd` would. */
static void usage(FILE *out)
{
    fprintf(out, "NAME\n"
                 "    propensityd - streaming propensity scores from Kafka events to Redis\n\n"
                 "SYNOPSIS\n"
                 "    propensityd [run] --config FILE\n"
                 "    propensityd check [--json] [--connect] FILE [...]\n"
                 "    propensityd replay --config FILE EVENTS.jsonl [...]\n"
                 "    propensityd --help | -V\n\n"
                 "DESCRIPTION\n"
                 "    Consumes events from Kafka, keeps per-user state, learns online models as\n"
                 "    labels resolve and publishes scores to Redis; offsets are committed only\n"
                 "    after Redis acknowledged. propensityctl talks to a running daemon.\n\n"
                 "COMMANDS\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "    %-8s %s\n", commands[i].name, commands[i].summary);
    fprintf(out,
            "\n    `propensityd COMMAND --help` (or `propensityd help COMMAND`) describes a\n"
            "    command.\n\n"
            "OPTIONS\n"
            "    -c, --config FILE   run the daemon on FILE (as `propensityd run`)\n"
            "    -h, --help          this text\n"
            "    -V, --version       the version\n\n"
            "SIGNALS\n"
            "    SIGHUP            re-read the configuration (a bad file keeps the old one)\n"
            "    SIGTERM, SIGINT   drain: flush Redis, commit offsets, snapshot, exit 0\n\n"
            "OPERATIONS\n"
            "    systemd Type=notify (READY, STATUS, WATCHDOG, RELOADING, STOPPING);\n"
            "    daemon.http: /metrics (Prometheus), /healthz, /readyz;\n"
            "    daemon.control: ZeroMQ control socket, default $RUNTIME_DIRECTORY/control.sock;\n"
            "    daemon.feed: ZeroMQ PUB socket with every score change.\n"
            "    Logs: logfmt on stderr (journald priorities under systemd), no secrets.\n\n"
            "ENVIRONMENT\n"
            "    The YAML may read any variable with ${NAME}; secrets only that way or from\n"
            "    *_file keys. NOTIFY_SOCKET, WATCHDOG_USEC, RUNTIME_DIRECTORY and\n"
            "    STATE_DIRECTORY come from systemd.\n\n"
            "FILES\n"
            "    /etc/propensityd/pipeline.yaml    the configuration the unit runs\n"
            "    /etc/propensityd/propensityd.env  the unit's environment (secrets)\n"
            "    /var/lib/propensityd              snapshots\n"
            "    /run/propensityd/control.sock     the control socket\n\n"
            "EXIT STATUS\n"
            "    0 clean stop or valid config; 1 failure; 2 usage error.\n\n"
            "SEE ALSO\n"
            "    propensityctl(1), propensityd.yaml(5), propensityd(8)\n");
}

#define N_COMMANDS (sizeof commands / sizeof commands[0])

static const pd_command *find_command(const char *name)
{
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (strcmp(name, commands[i].name) == 0)
            return &commands[i];
    return NULL;
}

static int unknown_command(const char *name)
{
    const char *names[N_COMMANDS + 1];
    for (size_t i = 0; i < N_COMMANDS; i++)
        names[i] = commands[i].name;
    names[N_COMMANDS] = "help";
    const char *hint = pd_cli_did_you_mean(name, names, N_COMMANDS + 1);
    if (hint)
        return pd_cli_usage_error("propensityd", "unknown command \"%s\" (did you mean \"%s\"?)",
                                  name, hint);
    return pd_cli_usage_error("propensityd", "unknown command \"%s\"", name);
}

/* propensityd help [COMMAND] */
static int help(int argc, char **argv)
{
    if (argc < 2) {
        usage(stdout);
        return 0;
    }
    if (argc > 2)
        return pd_cli_usage_error("propensityd help", "takes one command, not %d", argc - 1);
    if (strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "-h") == 0) {
        printf("usage: propensityd help [COMMAND]\n\n"
               "Describes COMMAND, or propensityd with no COMMAND.\n");
        return 0;
    }
    const pd_command *c = find_command(argv[1]);
    if (!c)
        return unknown_command(argv[1]);
    char help_opt[] = "--help";
    char *args[] = {argv[1], help_opt, NULL};
    return c->fn(2, args);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return pd_cli_usage_error("propensityd", "no command given (run --config FILE, check "
                                                 "FILE or replay)");
    const char *arg = argv[1];
    if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(arg, "--version") == 0 || strcmp(arg, "-V") == 0) {
        printf("propensityd %s\n", PD_VERSION);
        return 0;
    }
    if (strcmp(arg, "help") == 0)
        return help(argc - 1, argv + 1);
    const pd_command *c = find_command(arg);
    if (c)
        return c->fn(argc - 1, argv + 1);
    if (arg[0] == '-')
        return pd_cmd_run(argc, argv); /* options only: the daemon itself */
    return unknown_command(arg);
}

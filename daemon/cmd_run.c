/* propensityd [run] --config FILE: the daemon. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "config/config.h"
#include "daemon/cli.h"
#include "daemon/commands.h"
#include "daemon/daemon.h"
#include "daemon/log.h"

static void run_usage(FILE *out)
{
    fprintf(out, "usage: propensityd [run] --config FILE\n\n"
                 "Consumes events from the Kafka topics of FILE, keeps per-user state, learns\n"
                 "the configured models online and publishes scores to Redis.\n"
                 "SIGHUP reloads FILE; SIGTERM or SIGINT drains and exits 0.\n\n"
                 "  -c, --config FILE   pipeline configuration (YAML, see propensityd.yaml(5))\n"
                 "  -h, --help          this text\n");
}

int pd_cmd_run(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    /* "propensityd --config F" comes here with argv[0] "propensityd" */
    const char *prog = strcmp(argv[0], "run") == 0 ? "propensityd run" : "propensityd";
    const char *path = NULL;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            path = optarg;
            break;
        case 'h':
            run_usage(stdout);
            return 0;
        default:
            return pd_cli_option_error(prog, c, argv, optind);
        }
    }
    if (optind != argc)
        return pd_cli_usage_error(prog, "unexpected argument \"%s\" (the file goes after "
                                        "--config)", argv[optind]);
    if (!path)
        return pd_cli_usage_error(prog, "no configuration file (--config FILE)");

    pd_log_init();
    pd_diag *diag = pd_diag_new();
    if (!diag) {
        fprintf(stderr, "propensityd: out of memory\n");
        return 1;
    }
    pd_config *conf = pd_config_load(path, diag);
    if (!conf) {
        pd_log_error("configuration \"%s\" has errors", path);
        for (size_t i = 0; i < pd_diag_count(diag); i++)
            pd_log_error("%s", pd_diag_message(diag, i));
        pd_diag_free(diag);
        return 1;
    }
    pd_diag_free(diag);
    pd_log_set_level(conf->daemon.log_level);

    char err[1024];
    pd_daemon *d = pd_daemon_new(path, conf, err, sizeof err);
    if (!d) {
        pd_log_error("%s", err);
        pd_config_free(conf);
        return 1;
    }
    int status = pd_daemon_run(d);
    pd_daemon_free(d);
    return status;
}

/* Fuzzes the YAML pipeline loader (config/config.h) from a string: any text must give either
 * a config, on which the queries the daemon makes on reload must work, or NULL with at least
 * one message, each formatted and bounded. Secrets named by *_file resolve against the working
 * directory, as for a config given on the command line. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "fuzz.h"

/* Far above what a pipeline file holds; the loader itself has no limit of its own, and YAML
 * aliases make larger inputs slow to load without finding anything new. */
#define MAX_INPUT (256 * 1024)

static void check_config(const pd_config *conf)
{
    char err[256];
    volatile uint64_t h = conf->fingerprint;
    FUZZ_CHECK(conf->n_models >= 1 && conf->n_models <= PD_MAX_MODELS);
    FUZZ_CHECK(conf->events.n_types >= 1 && conf->events.n_types <= PD_MAX_EVENT_TYPES);
    for (size_t i = 0; i < conf->n_models; i++) {
        h += pd_config_model_fingerprint(conf, i) + pd_config_model_settings(conf, i);
        FUZZ_CHECK(pd_config_model_index(conf, conf->models[i].name) == (int)i);
        for (size_t k = 0; k < conf->models[i].n_features; k++) {
            int f = conf->models[i].features[k];
            FUZZ_CHECK(f >= 0 && (size_t)f < conf->n_features);
        }
    }
    for (size_t i = 0; i < conf->n_features; i++)
        FUZZ_CHECK(pd_config_feature_index(conf, conf->features[i].name) == (int)i);
    for (size_t i = 0; i < conf->events.n_types; i++)
        FUZZ_CHECK(pd_config_type_index(conf, conf->events.types[i]) == (int)i);
    /* a reload with the same file never needs a restart */
    FUZZ_CHECK(pd_config_reloadable(conf, conf, err, sizeof err));
    h += pd_config_needs_user_state(conf);
    (void)h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool verbose;
    if (size > MAX_INPUT)
        return 0;
    /* what the corpus's full config (from tests/configs/good) reads from the environment */
    setenv("PD_FUZZ_BROKERS", "localhost:9092", 0);
    setenv("PD_FUZZ_SECRET", "s3cret", 0);
    verbose = getenv("PD_FUZZ_VERBOSE") != NULL; /* prints the messages: for corpus upkeep */
    pd_diag *diag = pd_diag_new();
    FUZZ_CHECK(diag != NULL);
    pd_config *conf = pd_config_load_string("fuzz.yaml", (const char *)data, size, diag);
    if (conf) {
        check_config(conf);
        if (verbose)
            printf("loaded\n");
        pd_config_free(conf);
    } else {
        FUZZ_CHECK(pd_diag_count(diag) > 0);
    }
    for (size_t i = 0; i < pd_diag_count(diag); i++) {
        const char *msg = pd_diag_message(diag, i);
        FUZZ_CHECK(msg != NULL && strncmp(msg, "fuzz.yaml", 9) == 0);
    }
    if (verbose)
        pd_diag_print(diag, stdout);
    pd_diag_free(diag);

    /* the duration parser reads the same bytes as a NUL-terminated value */
    char text[64];
    size_t n = size < sizeof text - 1 ? size : sizeof text - 1;
    memcpy(text, data, n);
    text[n] = '\0';
    int64_t ms = -1;
    if (pd_parse_duration(text, &ms) == 0)
        FUZZ_CHECK(ms >= 0);
    return 0;
}

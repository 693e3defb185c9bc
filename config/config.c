/* The public entry of config/: loading a file or a string into a pd_config, freeing it, and the
 * lookups config.h offers. The language itself is read by sections.c, features.c, models.c and
 * the model kinds, with the tools of loader.c; nothing here logs. */
#include "config/config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/config_internal.h"
#include "config/diag.h"
#include "config/secrets.h"
#include "config/yaml_tree.h"

#define MAX_FILE_BYTES (16 << 20)

/* ------------------------------------------------------------------------------------------ */
/* loading */

static pd_config *load_text(const char *file, const char *base_dir, const char *text, size_t len,
                            pd_diag *diag)
{
    size_t first = pd_diag_count(diag);
    pd_yaml_tree *tree = NULL;
    pd_config *conf;
    loader ld = {.diag = diag, .base_dir = base_dir};
    int err = 0;

    conf = calloc(1, sizeof(*conf));
    if (!conf || !(conf->path = strdup(file ? file : "<config>"))) {
        pd_diag_add(diag, file, 0, 0, "out of memory");
        goto out_free_conf;
    }
    ld.conf = conf;
    ld.file = conf->path;
    tree = pd_yaml_tree_parse(conf->path, text, len, diag, &err);
    if (!tree) {
        if (err == -ENOMEM)
            pd_diag_add(diag, conf->path, 0, 0, "out of memory");
        goto out_free_conf;
    }
    sections_set_defaults(&ld);
    sections_load(&ld, pd_yaml_tree_root(tree));
    if (ld.oom)
        pd_diag_add(diag, conf->path, 0, 0, "out of memory");
    if (ld.errors || ld.oom)
        goto out_free_conf;
    conf->fingerprint = config_fingerprint(conf);
    pd_yaml_tree_free(tree);
    pd_diag_sort_from(diag, first);
    return conf;

out_free_conf:
    pd_yaml_tree_free(tree);
    pd_config_free(conf);
    pd_diag_sort_from(diag, first);
    return NULL;
}

pd_config *pd_config_load_string(const char *name, const char *text, size_t len, pd_diag *diag)
{
    if (!text)
        return NULL;
    return load_text(name, NULL, text, len, diag);
}

pd_config *pd_config_load(const char *path, pd_diag *diag)
{
    char *text = NULL, *dir = NULL, ebuf[128];
    pd_config *conf = NULL;
    struct stat st;
    size_t len = 0;
    int fd, err = 0;

    if (!path)
        return NULL;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        err = errno;
        goto out_report;
    }
    if (fstat(fd, &st) < 0) {
        err = errno;
        goto out_close;
    }
    if (S_ISDIR(st.st_mode)) {
        err = EISDIR;
        goto out_close;
    }
    /* the file may quote secrets too: read it the way secrets are read */
    err = -secret_read_bounded(fd, MAX_FILE_BYTES, &text, &len);

out_close:
    close(fd);
out_report:
    if (err) {
        pd_diag_add(diag, path, 0, 0, "cannot read: %s",
                    err == EFBIG ? "larger than 16MiB" : ld_errno_text(err, ebuf, sizeof(ebuf)));
        goto out_free;
    }
    /* *_file secrets named relative to the config sit beside it */
    const char *slash = strrchr(path, '/');
    if (slash) {
        dir = strndup(path, slash == path ? 1 : (size_t)(slash - path));
        if (!dir) {
            pd_diag_add(diag, path, 0, 0, "out of memory");
            goto out_free;
        }
    }
    conf = load_text(path, dir, text, len, diag);

out_free:
    free(dir);
    free(text);
    return conf;
}

/* ------------------------------------------------------------------------------------------ */
/* freeing */

static void free_string_list(char **list, size_t n)
{
    if (!list)
        return;
    for (size_t i = 0; i < n; i++)
        free(list[i]);
    free(list);
}

static void free_features(pd_feature_conf *features, size_t n)
{
    for (size_t i = 0; features && i < n; i++) {
        free(features[i].name);
        free(features[i].field);
        free(features[i].transforms);
        free(features[i].buckets);
    }
    free(features);
}

static void free_models(pd_model_conf *models, size_t n)
{
    for (size_t i = 0; models && i < n; i++) {
        free(models[i].name);
        free(models[i].features);
        free(models[i].value_field);
        free(models[i].weight_field);
        free(models[i].output);
    }
    free(models);
}

void pd_config_free(pd_config *conf)
{
    if (!conf)
        return;
    free(conf->kafka.brokers);
    free_string_list(conf->kafka.topics, conf->kafka.n_topics);
    free(conf->kafka.group);
    for (size_t i = 0; conf->kafka.properties && i < conf->kafka.n_properties; i++) {
        free(conf->kafka.properties[i].key);
        secret_free(conf->kafka.properties[i].value);
    }
    free(conf->kafka.properties);
    free(conf->redis.url);
    free(conf->redis.host);
    free(conf->redis.unix_path);
    free(conf->redis.username);
    secret_free(conf->redis.password);
    free(conf->redis.prefix);
    free(conf->events.field_event_id);
    free(conf->events.field_user);
    free(conf->events.field_item);
    free(conf->events.field_type);
    free(conf->events.field_time);
    free(conf->events.field_value);
    free(conf->events.field_text);
    free_string_list(conf->events.types, conf->events.n_types);
    free(conf->events.dead_letter_topic);
    free_features(conf->features, conf->n_features);
    free_models(conf->models, conf->n_models);
    free(conf->snapshot.dir);
    free(conf->daemon.control);
    free(conf->daemon.control_curve_secret_file);
    free(conf->daemon.feed);
    free(conf->daemon.http);
    free(conf->sync.topic);
    free(conf->sync.instance_id);
    free(conf->path);
    free(conf);
}

/* ------------------------------------------------------------------------------------------ */
/* lookups */

int pd_config_feature_index(const pd_config *conf, const char *name)
{
    if (!conf || !name)
        return -1;
    for (size_t i = 0; i < conf->n_features; i++)
        if (str_eq(conf->features[i].name, name))
            return (int)i;
    return -1;
}

int pd_config_model_index(const pd_config *conf, const char *name)
{
    if (!conf || !name)
        return -1;
    for (size_t i = 0; i < conf->n_models; i++)
        if (str_eq(conf->models[i].name, name))
            return (int)i;
    return -1;
}

int pd_config_type_index(const pd_config *conf, const char *type)
{
    if (!conf || !type)
        return -1;
    for (size_t i = 0; i < conf->events.n_types; i++)
        if (str_eq(conf->events.types[i], type))
            return (int)i;
    return -1;
}

bool pd_config_needs_user_state(const pd_config *conf)
{
    for (size_t i = 0; i < conf->n_features; i++) {
        switch (conf->features[i].kind) {
        case PD_FEAT_RECENCY:
        case PD_FEAT_DECAYED_COUNT:
        case PD_FEAT_SPEND:
        case PD_FEAT_DISTINCT_ITEMS:
        case PD_FEAT_RECENT_ITEMS:
            return true;
        default:
            break;
        }
    }
    /* a model of lists has no label (its label field is left at the enum's first value) and
     * keeps its users itself */
    for (size_t i = 0; i < conf->n_models; i++)
        if (conf->models[i].kind == PD_MODEL_KIND_GLM &&
            conf->models[i].label == PD_LABEL_POSITIVE_WITHIN)
            return true;
    return false;
}

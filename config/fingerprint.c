/* The fingerprints of config.h: of a whole config, to tell whether anything that matters
 * changed, and of one model, to tell whether its learned weights still mean the same thing. */
#include <string.h>
#include <xxhash.h>

#include "config/config_internal.h"

/* A canonical serialisation fed straight into the hash: fixed field order, length-prefixed
 * strings, NULL distinct from "", doubles by bit pattern. Positions and the path never enter. */
typedef struct fp {
    XXH3_state_t *state;
} fp;

static void fp_bytes(fp *f, const void *p, size_t n)
{
    if (f->state)
        XXH3_64bits_update(f->state, p, n);
}

static void fp_i64(fp *f, int64_t v)
{
    fp_bytes(f, &v, sizeof(v));
}

static void fp_f64(fp *f, double v)
{
    uint64_t bits;

    memcpy(&bits, &v, sizeof(bits));
    fp_bytes(f, &bits, sizeof(bits));
}

static void fp_str(fp *f, const char *s)
{
    if (!s) {
        fp_i64(f, -1);
        return;
    }
    fp_i64(f, (int64_t)strlen(s));
    fp_bytes(f, s, strlen(s));
}

static void fp_type(fp *f, const pd_config *conf, int type)
{
    fp_str(f, type >= 0 && (size_t)type < conf->events.n_types ? conf->events.types[type] : NULL);
}

static void fp_feature(fp *f, const pd_config *conf, size_t i, int depth)
{
    const pd_feature_conf *ft = &conf->features[i];

    fp_str(f, ft->name);
    fp_i64(f, ft->kind);
    fp_str(f, ft->field);
    fp_i64(f, ft->vocabulary);
    fp_i64(f, (int64_t)ft->n_transforms);
    for (size_t j = 0; j < ft->n_transforms; j++) {
        fp_i64(f, ft->transforms[j].kind);
        fp_f64(f, ft->transforms[j].lo);
        fp_f64(f, ft->transforms[j].hi);
    }
    fp_i64(f, ft->standardize);
    fp_i64(f, (int64_t)ft->n_buckets);
    for (size_t j = 0; j < ft->n_buckets; j++)
        fp_f64(f, ft->buckets[j]);
    fp_i64(f, (int64_t)ft->n_cross);
    /* a cross is hashed with its parts' definitions: changing a part changes the cross */
    for (size_t j = 0; j < ft->n_cross && depth == 0; j++)
        if (ft->cross[j] >= 0 && (size_t)ft->cross[j] < conf->n_features)
            fp_feature(f, conf, (size_t)ft->cross[j], depth + 1);
    fp_i64(f, ft->bigrams);
    fp_i64(f, ft->max_tokens);
    fp_type(f, conf, ft->event_type);
    fp_i64(f, ft->half_life_ms);
    fp_i64(f, ft->count);
}

static void fp_recommender(fp *f, const pd_config *conf, const pd_model_conf *m)
{
    const pd_recommender_conf *r = &m->recommender;

    fp_i64(f, m->kind);
    for (size_t t = 0; t < conf->events.n_types; t++) {
        fp_type(f, conf, (int)t);
        fp_f64(f, r->interaction[t]);
        fp_i64(f, (r->evaluate_on >> t) & 1);
    }
    fp_i64(f, r->k);
    fp_i64(f, r->dim);
    fp_i64(f, r->exclude_seen);
    fp_i64(f, r->window);
    fp_i64(f, r->score_from);
    fp_f64(f, r->reverse);
    fp_i64(f, r->neighbors);
    fp_f64(f, r->learning_rate);
    fp_f64(f, r->l2);
    fp_i64(f, r->negatives);
    fp_i64(f, r->popularity_half_life_ms);
    fp_f64(f, r->blend_covis);
    fp_f64(f, r->blend_embeddings);
    fp_f64(f, r->blend_popularity);
    fp_i64(f, r->max_users);
    fp_i64(f, r->max_items);
    fp_i64(f, r->max_seen);
    fp_i64(f, r->refresh_ms);
    fp_i64(f, r->similar_refresh_ms);
    fp_i64(f, (int64_t)r->seed);
}

static void fp_model(fp *f, const pd_config *conf, const pd_model_conf *m)
{
    const pd_learner_conf *lc = &m->learner;

    fp_str(f, m->name);
    fp_i64(f, lc->type);
    fp_i64(f, lc->loss);
    fp_f64(f, lc->huber_delta);
    fp_i64(f, lc->optimizer);
    fp_f64(f, lc->alpha);
    fp_f64(f, lc->beta);
    fp_f64(f, lc->l1);
    fp_f64(f, lc->l2);
    fp_f64(f, lc->learning_rate);
    fp_f64(f, lc->power_t);
    fp_f64(f, lc->initial_t);
    fp_i64(f, lc->bits);
    fp_i64(f, lc->intercept);
    fp_i64(f, lc->weights);
    fp_i64(f, lc->admission_min_count);
    fp_f64(f, lc->max_abs_margin);
    fp_i64(f, (int64_t)m->n_features);
    for (size_t j = 0; j < m->n_features; j++)
        fp_str(f, conf->features[m->features[j]].name);
    for (size_t t = 0; t < conf->events.n_types; t++)
        if (m->example_on & (UINT32_C(1) << t))
            fp_type(f, conf, (int)t);
    fp_i64(f, m->label);
    fp_type(f, conf, m->positive_on);
    fp_i64(f, m->window_ms);
    fp_i64(f, m->match);
    fp_str(f, m->value_field);
    fp_str(f, m->weight_field);
    fp_str(f, m->output);
    fp_i64(f, m->publish);
    fp_i64(f, m->metrics_window);
    fp_i64(f, m->gate.enabled);
    fp_f64(f, m->gate.min_auc);
    fp_f64(f, m->gate.max_log_loss);
    fp_f64(f, m->gate.max_rmse);
    fp_i64(f, m->gate.min_examples);
    if (m->kind != PD_MODEL_KIND_GLM) /* GLM fingerprints stay as they were */
        fp_recommender(f, conf, m);
}

/* A fresh hash state in f; false when out of memory (the fingerprint is then 0). */
static bool fp_begin(fp *f)
{
    f->state = XXH3_createState();
    if (!f->state || XXH3_64bits_reset(f->state) != XXH_OK) {
        XXH3_freeState(f->state);
        return false;
    }
    return true;
}

static uint64_t fp_end(fp *f)
{
    uint64_t h = XXH3_64bits_digest(f->state);

    XXH3_freeState(f->state);
    return h;
}

static void fp_kafka(fp *f, const pd_kafka_conf *k)
{
    fp_str(f, k->brokers);
    fp_i64(f, (int64_t)k->n_topics);
    for (size_t i = 0; i < k->n_topics; i++)
        fp_str(f, k->topics[i]);
    fp_str(f, k->group);
    fp_i64(f, k->start);
    fp_i64(f, k->poll_batch);
    fp_i64(f, (int64_t)k->n_properties);
    /* Secret values stay out: the fingerprint is printed and a fast hash is easy to invert for
     * a guessable password. Reload compares the secrets themselves. */
    for (size_t i = 0; i < k->n_properties; i++) {
        fp_str(f, k->properties[i].key);
        fp_str(f, k->properties[i].secret ? "(secret)" : k->properties[i].value);
    }
}

static void fp_redis(fp *f, const pd_redis_conf *r)
{
    fp_str(f, r->url);
    fp_str(f, r->host);
    fp_i64(f, r->port);
    fp_str(f, r->unix_path);
    fp_i64(f, r->db);
    fp_str(f, r->username);
    fp_i64(f, r->password != NULL);
    fp_str(f, r->prefix);
    fp_i64(f, r->key_layout);
    fp_i64(f, r->ttl_ms);
    fp_i64(f, r->flush_interval_ms);
    fp_i64(f, r->max_pipeline);
    fp_i64(f, r->timeout_ms);
}

static void fp_events(fp *f, const pd_config *conf)
{
    const pd_events_conf *e = &conf->events;

    fp_str(f, e->field_event_id);
    fp_str(f, e->field_user);
    fp_str(f, e->field_item);
    fp_str(f, e->field_type);
    fp_str(f, e->field_time);
    fp_str(f, e->field_value);
    fp_str(f, e->field_text);
    fp_i64(f, (int64_t)e->n_types);
    for (size_t i = 0; i < e->n_types; i++)
        fp_str(f, e->types[i]);
    fp_type(f, conf, e->forget_type);
    fp_i64(f, e->max_message_bytes);
    fp_i64(f, e->max_string_length);
    fp_str(f, e->dead_letter_topic);
}

/* watermark:, users:, snapshot:, daemon: */
static void fp_runtime(fp *f, const pd_config *conf)
{
    fp_i64(f, conf->state.allowed_lateness_ms);
    fp_i64(f, conf->state.idle_timeout_ms);
    fp_i64(f, conf->state.max_pending_per_user);
    fp_i64(f, conf->state.max_pending_total);
    fp_i64(f, conf->state.max_users);
    fp_i64(f, conf->state.user_idle_ttl_ms);
    fp_i64(f, conf->state.recent_items);
    fp_str(f, conf->snapshot.dir);
    fp_i64(f, conf->snapshot.interval_ms);
    fp_i64(f, conf->snapshot.keep);
    fp_i64(f, conf->daemon.log_level);
    fp_str(f, conf->daemon.control);
    fp_str(f, conf->daemon.control_curve_secret_file);
    fp_str(f, conf->daemon.feed);
    fp_str(f, conf->daemon.http);
    fp_i64(f, conf->daemon.ready_max_lag);
    fp_i64(f, conf->daemon.watchdog_ms);
    /* only when on: a config without sync keeps the fingerprint it had before sync existed */
    if (conf->sync.enabled) {
        fp_str(f, "sync");
        fp_str(f, conf->sync.topic);
        fp_i64(f, conf->sync.interval_ms);
        fp_str(f, conf->sync.instance_id);
        fp_i64(f, conf->sync.max_message_bytes);
        fp_i64(f, conf->sync.peer_timeout_ms);
    }
}

/* The order of the parts is part of the value: it must not change. */
uint64_t config_fingerprint(const pd_config *conf)
{
    fp f;

    if (!fp_begin(&f))
        return 0;
    fp_kafka(&f, &conf->kafka);
    fp_redis(&f, &conf->redis);
    fp_events(&f, conf);
    fp_i64(&f, (int64_t)conf->n_features);
    for (size_t i = 0; i < conf->n_features; i++)
        fp_feature(&f, conf, i, 0);
    fp_i64(&f, (int64_t)conf->n_models);
    for (size_t i = 0; i < conf->n_models; i++)
        fp_model(&f, conf, &conf->models[i]);
    fp_runtime(&f, conf);
    return fp_end(&f);
}

uint64_t pd_config_model_fingerprint(const pd_config *conf, size_t model)
{
    const pd_model_conf *m;
    fp f;

    if (!conf || model >= conf->n_models)
        return 0;
    m = &conf->models[model];
    if (!fp_begin(&f))
        return 0;
    if (m->kind == PD_MODEL_KIND_RECOMMENDER) {
        /* the embeddings' size; the rest are hyper-parameters a reload may change */
        fp_i64(&f, m->kind);
        fp_i64(&f, m->recommender.dim);
        return fp_end(&f);
    }
    /* the GLM kind is not hashed: fingerprints kept in snapshots stay valid */
    fp_i64(&f, m->learner.type);
    fp_i64(&f, m->learner.loss);
    fp_i64(&f, m->learner.bits);
    fp_i64(&f, m->learner.weights);
    fp_i64(&f, m->learner.intercept);
    /* the learner keeps per-coordinate optimizer state and refuses to switch optimizers */
    fp_i64(&f, m->learner.optimizer);
    fp_i64(&f, (int64_t)m->n_features);
    for (size_t i = 0; i < m->n_features; i++)
        fp_feature(&f, conf, (size_t)m->features[i], 0);
    return fp_end(&f);
}

uint64_t pd_config_model_settings(const pd_config *conf, size_t model)
{
    fp f;

    if (!conf || model >= conf->n_models || !fp_begin(&f))
        return 0;
    fp_model(&f, conf, &conf->models[model]);
    return fp_end(&f);
}

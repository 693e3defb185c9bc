/* Redis publisher over hiredis' blocking API with a socket timeout, on a thread of its own:
 * the caller coalesces updates into the waiting set while the writer thread writes the set in
 * flight (the two are swapped when a flush starts), so a slow or hung Redis never stalls the
 * caller's loop. A flush appends a window of commands, then reads their replies, so each round
 * trip carries up to max_pipeline commands. A set that failed stays in flight and is written
 * again, alone, before the waiting one, so Redis sees every key's updates in order. One HSET per user carries every score field plus ts and v, so a reader sees a
 * user's scores from one flush, never a mix of two. A list needs DEL then ZADD, which a reader
 * could see between (an empty list) were they not one MULTI / EXEC: a window boundary can fall
 * anywhere, so the transaction is what makes the replacement atomic. */
#include "pipeline/publisher.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "common/clock.h"
#include "common/hashtab.h"

#define N_BUCKETS 12

static const double latency_bounds[N_BUCKETS] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                 0.05,   0.1,   0.25,   0.5,   1.0,  2.5};

typedef struct entry {
    char *id;
    size_t len, cap;
    int64_t ts_ms;
    uint64_t generation;
    uint64_t mask; /* which fields hold a score */
} entry;

typedef struct model_put {
    char *name;
    char **fields;
    char **values;
    size_t n;
} model_put;

/* A waiting list in one allocation: this header, then lens[n], scores[n], name, members. */
typedef struct zset_put {
    size_t size; /* bytes allocated, header included */
    size_t n, name_len;
    size_t *lens;
    float *scores;
    char *name;
    char *members; /* concatenated */
} zset_put;

/* What a reply answers, so that a flush can check it (and count a list once written). */
enum cmd_kind {
    CMD_PLAIN,
    CMD_LIST_DEL, /* a list put with no members, written as a plain DEL */
    CMD_MULTI,
    CMD_QUEUED, /* a command inside MULTI / EXEC */
    CMD_EXEC,
};

/* Everything one flush writes: the caller fills the waiting set, the writer writes the one in
 * flight. */
typedef struct pub_set {
    entry *entries;
    double *scores; /* [entries][n_fields] */
    size_t n_entries, cap_entries;
    pd_hashtab map; /* user id hash -> entry index + 1 */

    char **forgets;
    size_t n_forgets, cap_forgets;
    model_put *models;
    size_t n_models;
    zset_put **zsets;
    size_t n_zsets, cap_zsets;
    pd_hashtab zmap; /* list name hash -> zsets index + 1 */
} pub_set;

/* What the writer reports of one flush; the caller's thread adds it to the stats. */
typedef struct job_outcome {
    int r;
    char err[512];
    uint64_t users, lists, reply_errors, connects;
    double seconds;
} job_outcome;

enum writer_state {
    W_IDLE, /* nothing in flight, or a failed set waiting for the next start */
    W_BUSY, /* the writer owns the set in flight, the connection and the scratch */
    W_DONE, /* finished: the outcome waits for the caller */
};

struct pd_publisher {
    pd_redis_conf conf; /* strings owned below */
    char *host, *unix_path, *username, *password, *prefix;
    char **fields;
    size_t n_fields;
    redisContext *ctx; /* the writer's while W_BUSY, the caller's otherwise */
    atomic_bool connected;

    pub_set sets[2];
    pub_set *pend;      /* the caller's: updates coalesce here */
    pub_set *flight;    /* being written, or failed and kept for the next start */
    size_t flight_size; /* pd_publisher_dirty() of the set in flight, 0 once acknowledged */

    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* state changes, and quit */
    enum writer_state state;
    bool quit;
    job_outcome out;
    int wake_fd;

    /* the writer's per command scratch */
    const char **argv;
    size_t *argvlen;
    size_t argc_cap;
    char *text;
    size_t text_cap;
    unsigned char *kinds; /* enum cmd_kind of each command in flight */
    size_t kinds_cap;

    pd_publisher_stats stats;
    uint64_t hist[N_BUCKETS + 1];
    double hist_sum;
};

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static void free_fields(char **fields, size_t n)
{
    for (size_t i = 0; fields && i < n; i++)
        free(fields[i]);
    free(fields);
}

static char **copy_fields(const char *const *fields, size_t n)
{
    char **out = calloc(n ? n : 1, sizeof *out);
    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (!(out[i] = strdup(fields[i]))) {
            free_fields(out, i);
            return NULL;
        }
    }
    return out;
}

static int scratch_reserve(pd_publisher *pub, size_t argc, size_t text)
{
    if (argc > pub->argc_cap) {
        const char **a = realloc(pub->argv, argc * sizeof *a);
        if (!a)
            return -ENOMEM;
        pub->argv = a;
        size_t *l = realloc(pub->argvlen, argc * sizeof *l);
        if (!l)
            return -ENOMEM;
        pub->argvlen = l;
        pub->argc_cap = argc;
    }
    if (text > pub->text_cap) {
        char *t = realloc(pub->text, text);
        if (!t)
            return -ENOMEM;
        pub->text = t;
        pub->text_cap = text;
    }
    return 0;
}

static void *writer_main(void *arg);

pd_publisher *pd_publisher_new(const pd_redis_conf *conf, const char *const *fields,
                               size_t n_fields, char *errbuf, size_t errlen)
{
    pd_publisher *pub = calloc(1, sizeof *pub);
    if (!pub)
        goto out_nomem;
    pub->pend = &pub->sets[0];
    pub->flight = &pub->sets[1];
    pub->wake_fd = -1;
    atomic_init(&pub->connected, false);
    if (pthread_mutex_init(&pub->mu, NULL) != 0) {
        free(pub);
        goto out_nomem;
    }
    if (pthread_cond_init(&pub->cv, NULL) != 0) {
        pthread_mutex_destroy(&pub->mu);
        free(pub);
        goto out_nomem;
    }
    pub->conf = *conf;
    pub->host = dup_or_null(conf->host);
    pub->unix_path = dup_or_null(conf->unix_path);
    pub->username = dup_or_null(conf->username);
    pub->password = dup_or_null(conf->password);
    pub->prefix = strdup(conf->prefix ? conf->prefix : "pd");
    if ((conf->host && !pub->host) || (conf->unix_path && !pub->unix_path) ||
        (conf->username && !pub->username) || (conf->password && !pub->password) || !pub->prefix)
        goto out_free;
    pub->conf.host = pub->host;
    pub->conf.unix_path = pub->unix_path;
    pub->conf.username = pub->username;
    pub->conf.password = pub->password;
    pub->conf.prefix = pub->prefix;
    pub->conf.url = NULL;
    if (pd_publisher_set_fields(pub, fields, n_fields) < 0)
        goto out_free;
    for (int i = 0; i < 2; i++)
        if (pd_hashtab_init(&pub->sets[i].map, 1024) < 0 ||
            pd_hashtab_init(&pub->sets[i].zmap, 16) < 0)
            goto out_free;
    if (scratch_reserve(pub, 64, 4096) < 0)
        goto out_free;
    if (pthread_create(&pub->thread, NULL, writer_main, pub) != 0) {
        snprintf(errbuf, errlen, "cannot start the redis writer thread");
        pd_publisher_free(pub);
        return NULL;
    }
    pub->thread_started = true;
    return pub;

out_free:
    pd_publisher_free(pub);
out_nomem:
    snprintf(errbuf, errlen, "out of memory for the redis publisher");
    return NULL;
}

static void models_clear(pub_set *s)
{
    for (size_t i = 0; i < s->n_models; i++) {
        free(s->models[i].name);
        free_fields(s->models[i].fields, s->models[i].n);
        free_fields(s->models[i].values, s->models[i].n);
    }
    s->n_models = 0;
}

static void zsets_clear(pub_set *s)
{
    for (size_t i = 0; i < s->n_zsets; i++)
        free(s->zsets[i]);
    s->n_zsets = 0;
    pd_hashtab_clear(&s->zmap);
}

/* Lets go of what a set holds, keeping its capacity. */
static void set_clear(pub_set *s)
{
    pd_hashtab_clear(&s->map);
    s->n_entries = 0;
    for (size_t i = 0; i < s->n_forgets; i++)
        free(s->forgets[i]);
    s->n_forgets = 0;
    models_clear(s);
    zsets_clear(s);
}

static size_t set_size(const pub_set *s)
{
    return s->n_entries + s->n_forgets + s->n_models + s->n_zsets;
}

static void set_release(pub_set *s)
{
    set_clear(s);
    for (size_t i = 0; i < s->cap_entries; i++)
        free(s->entries[i].id);
    free(s->entries);
    free(s->scores);
    pd_hashtab_release(&s->map);
    free(s->forgets);
    free(s->models);
    free(s->zsets);
    pd_hashtab_release(&s->zmap);
}

void pd_publisher_free(pd_publisher *pub)
{
    if (!pub)
        return;
    if (pub->thread_started) {
        /* a write in flight ends within redis.timeout: the socket has one */
        pthread_mutex_lock(&pub->mu);
        pub->quit = true;
        pthread_cond_broadcast(&pub->cv);
        pthread_mutex_unlock(&pub->mu);
        pthread_join(pub->thread, NULL);
    }
    pthread_cond_destroy(&pub->cv);
    pthread_mutex_destroy(&pub->mu);
    if (pub->ctx)
        redisFree(pub->ctx);
    free(pub->host);
    free(pub->unix_path);
    free(pub->username);
    if (pub->password) {
        /* explicit_bzero: the compiler may not drop it like a memset before free */
        explicit_bzero(pub->password, strlen(pub->password));
        free(pub->password);
    }
    free(pub->prefix);
    free_fields(pub->fields, pub->n_fields);
    set_release(&pub->sets[0]);
    set_release(&pub->sets[1]);
    free(pub->kinds);
    free(pub->argv);
    free(pub->argvlen);
    free(pub->text);
    free(pub);
}

int pd_publisher_set_fields(pd_publisher *pub, const char *const *fields, size_t n_fields)
{
    /* the config allows at most PD_MAX_MODELS models: one bit each in the dirty mask */
    _Static_assert(PD_MAX_MODELS <= 64, "the dirty mask is 64 bits");
    if (n_fields > PD_MAX_MODELS)
        return -EINVAL;
    char **nf = copy_fields(fields, n_fields);
    if (!nf)
        return -ENOMEM;
    double *ns[2] = {NULL, NULL};
    for (int k = 0; k < 2; k++) {
        if (pub->sets[k].cap_entries &&
            !(ns[k] = calloc(pub->sets[k].cap_entries * (n_fields ? n_fields : 1), sizeof *ns[k]))) {
            free(ns[0]);
            free_fields(nf, n_fields);
            return -ENOMEM;
        }
    }
    free_fields(pub->fields, pub->n_fields);
    pub->fields = nf;
    pub->n_fields = n_fields;
    for (int k = 0; k < 2; k++) {
        pub_set *s = &pub->sets[k];
        free(s->scores);
        s->scores = ns[k];
        for (size_t i = 0; i < s->n_entries; i++)
            s->entries[i].mask = 0; /* indices changed meaning: callers flush before this */
    }
    return 0;
}

void pd_publisher_set_conf(pd_publisher *pub, const pd_redis_conf *conf)
{
    pub->conf.ttl_ms = conf->ttl_ms;
    pub->conf.flush_interval_ms = conf->flush_interval_ms;
    pub->conf.max_pipeline = conf->max_pipeline;
    pub->conf.timeout_ms = conf->timeout_ms;
}

/* ---- connection ---- */

static void disconnect(pd_publisher *pub)
{
    if (pub->ctx) {
        redisFree(pub->ctx);
        pub->ctx = NULL;
    }
    atomic_store(&pub->connected, false);
}

static void describe_address(const pd_publisher *pub, char *buf, size_t len)
{
    if (pub->unix_path)
        snprintf(buf, len, "unix:%s", pub->unix_path);
    else
        snprintf(buf, len, "%s:%d", pub->host ? pub->host : "127.0.0.1", pub->conf.port);
}

/* Connects the context of whichever thread owns it (the caller's before the first flush, the
 * writer's in a flush). */
static int connect_ctx(pd_publisher *pub, char *errbuf, size_t errlen)
{
    char addr[300];
    describe_address(pub, addr, sizeof addr);
    disconnect(pub);
    int64_t ms = pub->conf.timeout_ms > 0 ? pub->conf.timeout_ms : 2000;
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    redisContext *c = pub->unix_path
                          ? redisConnectUnixWithTimeout(pub->unix_path, tv)
                          : redisConnectWithTimeout(pub->host ? pub->host : "127.0.0.1",
                                                    pub->conf.port ? pub->conf.port : 6379, tv);
    if (!c) {
        snprintf(errbuf, errlen, "failed to connect to redis \"%s\": out of memory", addr);
        return -ENOMEM;
    }
    if (c->err) {
        snprintf(errbuf, errlen, "failed to connect to redis \"%s\": %s", addr, c->errstr);
        redisFree(c);
        return -ECONNREFUSED;
    }
    redisSetTimeout(c, tv);
    if (pub->password) {
        redisReply *rep = pub->username
                              ? redisCommand(c, "AUTH %s %s", pub->username, pub->password)
                              : redisCommand(c, "AUTH %s", pub->password);
        if (!rep || rep->type == REDIS_REPLY_ERROR) {
            snprintf(errbuf, errlen, "failed to authenticate to redis \"%s\"%s%s%s: %s", addr,
                     pub->username ? " as \"" : "", pub->username ? pub->username : "",
                     pub->username ? "\"" : "", rep ? rep->str : c->errstr);
            if (rep)
                freeReplyObject(rep);
            redisFree(c);
            return -EACCES;
        }
        freeReplyObject(rep);
    }
    if (pub->conf.db != 0) {
        redisReply *rep = redisCommand(c, "SELECT %d", pub->conf.db);
        if (!rep || rep->type == REDIS_REPLY_ERROR) {
            snprintf(errbuf, errlen, "failed to select redis database %d on \"%s\": %s",
                     pub->conf.db, addr, rep ? rep->str : c->errstr);
            if (rep)
                freeReplyObject(rep);
            redisFree(c);
            return -EINVAL;
        }
        freeReplyObject(rep);
    }
    pub->ctx = c;
    atomic_store(&pub->connected, true);
    return 0;
}

/* 0 when the caller's thread may use the connection (no flush in flight), else -EBUSY. */
static int caller_owns_ctx(pd_publisher *pub, char *errbuf, size_t errlen)
{
    pthread_mutex_lock(&pub->mu);
    bool busy = pub->state == W_BUSY;
    pthread_mutex_unlock(&pub->mu);
    if (busy) {
        snprintf(errbuf, errlen, "a redis flush is in flight");
        return -EBUSY;
    }
    return 0;
}

int pd_publisher_connect(pd_publisher *pub, char *errbuf, size_t errlen)
{
    int r = caller_owns_ctx(pub, errbuf, errlen);
    if (r < 0)
        return r;
    r = connect_ctx(pub, errbuf, errlen);
    if (r == 0)
        pub->stats.connects++;
    return r;
}

/* ---- blobs: one key at a time, waiting for Redis (handing user state over) ---- */

/* The connection, for the caller's thread: only while no flush is in flight. */
static int caller_ctx(pd_publisher *pub, char *errbuf, size_t errlen)
{
    int r = caller_owns_ctx(pub, errbuf, errlen);
    if (r < 0 || (pub->ctx && pub->ctx->err == 0))
        return r;
    return pd_publisher_connect(pub, errbuf, errlen);
}

/* The reply of one command, or NULL with the reason in errbuf (the connection is dropped on
 * a transport error, so the next call reconnects). */
static redisReply *blob_command(pd_publisher *pub, int argc, const char **argv,
                                const size_t *lens, char *errbuf, size_t errlen)
{
    if (caller_ctx(pub, errbuf, errlen) < 0)
        return NULL;
    redisReply *rep = redisCommandArgv(pub->ctx, argc, argv, lens);
    if (!rep) {
        snprintf(errbuf, errlen, "redis: %s", pub->ctx->errstr[0] ? pub->ctx->errstr : "no reply");
        disconnect(pub);
        return NULL;
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        snprintf(errbuf, errlen, "redis refused %s: %.*s", argv[0], (int)rep->len, rep->str);
        freeReplyObject(rep);
        return NULL;
    }
    return rep;
}

int pd_publisher_blob_put(pd_publisher *pub, const char *key, const void *data, size_t len,
                          int64_t ttl_ms, char *errbuf, size_t errlen)
{
    char ttl[32];
    snprintf(ttl, sizeof ttl, "%lld", (long long)(ttl_ms > 0 ? ttl_ms : 1));
    const char *argv[] = {"SET", key, data, "PX", ttl};
    const size_t lens[] = {3, strlen(key), len, 2, strlen(ttl)};
    redisReply *rep = blob_command(pub, 5, argv, lens, errbuf, errlen);
    if (!rep)
        return -EIO;
    freeReplyObject(rep);
    return 0;
}

int pd_publisher_blob_get(pd_publisher *pub, const char *key, void **ret_data, size_t *ret_len,
                          char *errbuf, size_t errlen)
{
    const char *argv[] = {"GET", key};
    const size_t lens[] = {3, strlen(key)};
    redisReply *rep = blob_command(pub, 2, argv, lens, errbuf, errlen);
    if (!rep)
        return -EIO;
    int ret = 0;
    if (rep->type == REDIS_REPLY_NIL) {
        ret = -ENOENT;
    } else if (rep->type != REDIS_REPLY_STRING) {
        snprintf(errbuf, errlen, "redis: %s is not a string", key);
        ret = -EINVAL;
    } else if (!(*ret_data = malloc(rep->len ? rep->len : 1))) {
        snprintf(errbuf, errlen, "out of memory reading %s", key);
        ret = -ENOMEM;
    } else {
        memcpy(*ret_data, rep->str, rep->len);
        *ret_len = rep->len;
    }
    freeReplyObject(rep);
    return ret;
}

int pd_publisher_blob_del(pd_publisher *pub, const char *key, char *errbuf, size_t errlen)
{
    const char *argv[] = {"DEL", key};
    const size_t lens[] = {3, strlen(key)};
    redisReply *rep = blob_command(pub, 2, argv, lens, errbuf, errlen);
    if (!rep)
        return -EIO;
    freeReplyObject(rep);
    return 0;
}

bool pd_publisher_connected(const pd_publisher *pub)
{
    return atomic_load(&((pd_publisher *)pub)->connected);
}

/* ---- coalescing ---- */

static uint64_t id_hash(const char *id, size_t len)
{
    return XXH3_64bits(id, len);
}

/* The dirty entry of a user, or NULL. */
static entry *map_find(pub_set *s, const char *user, size_t len)
{
    const pd_hashtab *t = &s->map;
    uint64_t h = id_hash(user, len);
    for (size_t i = pd_hashtab_first(t, h); t->slots[i].value; i = pd_hashtab_next(t, i)) {
        entry *e = &s->entries[t->slots[i].value - 1];
        if (t->slots[i].hash == h && e->len == len && memcmp(e->id, user, len) == 0)
            return e;
    }
    return NULL;
}

static entry *entry_add(pd_publisher *pub, const char *user, size_t len)
{
    pub_set *s = pub->pend;
    if (pd_hashtab_reserve(&s->map) < 0)
        return NULL;
    if (s->n_entries == s->cap_entries) {
        size_t ncap = s->cap_entries ? s->cap_entries * 2 : 256;
        entry *ne = realloc(s->entries, ncap * sizeof *ne);
        if (!ne)
            return NULL;
        memset(ne + s->cap_entries, 0, (ncap - s->cap_entries) * sizeof *ne);
        s->entries = ne;
        double *ns = realloc(s->scores, ncap * (pub->n_fields ? pub->n_fields : 1) * sizeof *ns);
        if (!ns)
            return NULL;
        s->scores = ns;
        s->cap_entries = ncap;
    }
    entry *e = &s->entries[s->n_entries];
    if (e->cap < len + 1) {
        char *id = realloc(e->id, len + 1);
        if (!id)
            return NULL;
        e->id = id;
        e->cap = len + 1;
    }
    memcpy(e->id, user, len);
    e->id[len] = '\0';
    e->len = len;
    e->mask = 0;
    pd_hashtab_insert(&s->map, id_hash(user, len), ++s->n_entries);
    return e;
}

int pd_publisher_update(pd_publisher *pub, const char *user, size_t len, int64_t ts_ms,
                        uint64_t generation, const pd_publish_score *scores, size_t n)
{
    pub_set *s = pub->pend;
    entry *e = map_find(s, user, len);
    if (e)
        pub->stats.coalesced++;
    else if (!(e = entry_add(pub, user, len)))
        return -ENOMEM;
    if (ts_ms > e->ts_ms || e->mask == 0)
        e->ts_ms = ts_ms;
    e->generation = generation;
    double *row = s->scores + (size_t)(e - s->entries) * pub->n_fields;
    for (size_t i = 0; i < n; i++) {
        if (scores[i].field < 0 || (size_t)scores[i].field >= pub->n_fields)
            continue;
        row[scores[i].field] = scores[i].value;
        e->mask |= UINT64_C(1) << scores[i].field;
    }
    return 0;
}

int pd_publisher_forget(pd_publisher *pub, const char *user, size_t len)
{
    pub_set *s = pub->pend;
    entry *e = map_find(s, user, len);
    if (e)
        e->mask = 0; /* stays in the map; written as nothing */
    if (s->n_forgets == s->cap_forgets) {
        size_t ncap = s->cap_forgets ? s->cap_forgets * 2 : 16;
        char **nf = realloc(s->forgets, ncap * sizeof *nf);
        if (!nf)
            return -ENOMEM;
        s->forgets = nf;
        s->cap_forgets = ncap;
    }
    char *copy = malloc(len + 1);
    if (!copy)
        return -ENOMEM;
    memcpy(copy, user, len);
    copy[len] = '\0';
    s->forgets[s->n_forgets++] = copy;
    return 0;
}

int pd_publisher_put_model(pd_publisher *pub, const char *model, const char *const *fields,
                           const char *const *values, size_t n)
{
    pub_set *s = pub->pend;
    model_put *slot = NULL;
    for (size_t i = 0; i < s->n_models; i++)
        if (strcmp(s->models[i].name, model) == 0)
            slot = &s->models[i];
    char **nf = copy_fields(fields, n);
    char **nv = copy_fields(values, n);
    if (!nf || !nv)
        goto out_nomem;
    if (!slot) {
        model_put *nm = realloc(s->models, (s->n_models + 1) * sizeof *nm);
        if (!nm)
            goto out_nomem;
        s->models = nm;
        slot = &s->models[s->n_models];
        if (!(slot->name = strdup(model)))
            goto out_nomem;
        s->n_models++;
    } else {
        free_fields(slot->fields, slot->n);
        free_fields(slot->values, slot->n);
    }
    slot->fields = nf;
    slot->values = nv;
    slot->n = n;
    return 0;

out_nomem:
    free_fields(nf, n);
    free_fields(nv, n);
    return -ENOMEM;
}

/* Index + 1 of the waiting list of this name, or 0. */
static size_t zset_find(const pub_set *s, uint64_t h, const char *name, size_t len)
{
    const pd_hashtab *t = &s->zmap;
    for (size_t i = pd_hashtab_first(t, h); t->slots[i].value; i = pd_hashtab_next(t, i)) {
        const zset_put *z = s->zsets[t->slots[i].value - 1];
        if (t->slots[i].hash == h && z->name_len == len && memcmp(z->name, name, len) == 0)
            return (size_t)t->slots[i].value;
    }
    return 0;
}

/* Bytes of a list's allocation, or 0 when that does not fit in a size_t. */
static size_t zset_size(size_t n, size_t name_len, const size_t *member_lens)
{
    size_t size = sizeof(zset_put) + name_len + 1;
    if (n > (SIZE_MAX - size) / (sizeof(size_t) + sizeof(float)))
        return 0;
    size += n * (sizeof(size_t) + sizeof(float));
    for (size_t i = 0; i < n; i++) {
        if (member_lens[i] > SIZE_MAX - size)
            return 0;
        size += member_lens[i];
    }
    return size;
}

static void zset_fill(zset_put *z, size_t size, const char *name, size_t name_len,
                      const char *const *members, const size_t *member_lens, const float *scores,
                      size_t n)
{
    z->size = size;
    z->n = n;
    z->name_len = name_len;
    z->lens = (size_t *)(z + 1);
    z->scores = (float *)(z->lens + n);
    z->name = (char *)(z->scores + n);
    z->members = z->name + name_len + 1;
    memcpy(z->name, name, name_len);
    z->name[name_len] = '\0';
    char *m = z->members;
    for (size_t i = 0; i < n; i++) {
        z->lens[i] = member_lens[i];
        z->scores[i] = scores[i];
        if (member_lens[i])
            memcpy(m, members[i], member_lens[i]);
        m += member_lens[i];
    }
}

/* A new slot in the waiting lists, not yet in the map; NULL when out of memory. */
static zset_put **zset_slot_add(pub_set *s)
{
    if (pd_hashtab_reserve(&s->zmap) < 0)
        return NULL;
    if (s->n_zsets == s->cap_zsets) {
        size_t ncap = s->cap_zsets ? s->cap_zsets * 2 : 16;
        zset_put **nz = realloc(s->zsets, ncap * sizeof *nz);
        if (!nz)
            return NULL;
        s->zsets = nz;
        s->cap_zsets = ncap;
    }
    s->zsets[s->n_zsets] = NULL;
    return &s->zsets[s->n_zsets];
}

int pd_publisher_put_zset(pd_publisher *pub, const char *name, size_t name_len,
                          const char *const *members, const size_t *member_lens,
                          const float *scores, size_t n)
{
    if (n > (size_t)(INT_MAX - 2) / 2) /* ZADD key, then a score and a member each */
        return -EINVAL;
    for (size_t i = 0; i < n; i++)
        if (isnan(scores[i]))
            return -EINVAL;
    size_t size = zset_size(n, name_len, member_lens);
    if (!size)
        return -ENOMEM;
    pub_set *s = pub->pend;
    uint64_t h = id_hash(name, name_len);
    size_t found = zset_find(s, h, name, name_len);
    zset_put **slot = found ? &s->zsets[found - 1] : zset_slot_add(s);
    if (!slot)
        return -ENOMEM;
    zset_put *z = *slot;
    /* a replacement reuses the old allocation when it fits and is not much larger */
    if (!z || z->size < size || z->size / 4 > size) {
        if (!(z = malloc(size)))
            return -ENOMEM; /* a replaced list stays waiting as it was */
        free(*slot);
        *slot = z;
    } else {
        size = z->size;
    }
    zset_fill(z, size, name, name_len, members, member_lens, scores, n);
    if (found) {
        pub->stats.list_coalesced++;
    } else {
        pd_hashtab_insert(&s->zmap, h, ++s->n_zsets);
    }
    return 0;
}

size_t pd_publisher_dirty(const pd_publisher *pub)
{
    return set_size(pub->pend) + pub->flight_size;
}

/* ---- flushing ---- */

static bool retryable(const char *err)
{
    static const char *const codes[] = {"OOM",        "READONLY", "LOADING",     "BUSY",
                                        "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "NOAUTH"};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
        if (strncmp(err, codes[i], strlen(codes[i])) == 0)
            return true;
    return false;
}

typedef struct flush_state {
    size_t in_flight;
    int err;
    bool tx_refused;     /* the open MULTI had a command refused: EXEC answers EXECABORT */
    size_t users, lists; /* user hashes sent, lists acknowledged */
    size_t reply_errors;
    char *errbuf;
    size_t errlen;
} flush_state;

static void reply_error(pd_publisher *pub, flush_state *fs, const char *err)
{
    char addr[300];
    if (retryable(err)) {
        if (!fs->err) {
            describe_address(pub, addr, sizeof addr);
            snprintf(fs->errbuf, fs->errlen, "redis \"%s\" refused a write for now: %s", addr, err);
        }
        fs->err = -EAGAIN;
    } else {
        /* a permanent refusal (e.g. WRONGTYPE on a key someone else wrote): retrying would
         * refuse again, so it is counted and reported instead */
        fs->reply_errors++;
        if (!fs->err)
            snprintf(fs->errbuf, fs->errlen, "redis refused a write: %s", err);
    }
}

static bool is_status(const redisReply *rep, const char *status)
{
    return rep->type == REDIS_REPLY_STATUS && strcmp(rep->str, status) == 0;
}

/* An EXEC reply: the queued commands' replies, an error, or nil for an aborted transaction. */
static bool check_exec(pd_publisher *pub, flush_state *fs, const redisReply *rep)
{
    bool refused = fs->tx_refused;
    fs->tx_refused = false;
    if (rep->type == REDIS_REPLY_ERROR) {
        if (!refused) /* otherwise EXECABORT, and its cause is already counted */
            reply_error(pub, fs, rep->str);
        return true;
    }
    if (rep->type == REDIS_REPLY_NIL) {
        /* nothing ran (a WATCH would do that; the publisher sets none): write it again */
        reply_error(pub, fs, "TRYAGAIN EXEC answered nil: transaction aborted");
        return true;
    }
    if (rep->type != REDIS_REPLY_ARRAY)
        return false;
    bool clean = !refused; /* (Redis before 2.6.5 ran the rest of a refused transaction) */
    for (size_t i = 0; i < rep->elements; i++) {
        if (rep->element[i]->type == REDIS_REPLY_ERROR) {
            reply_error(pub, fs, rep->element[i]->str);
            clean = false;
        }
    }
    fs->lists += clean;
    return true;
}

/* Checks a reply against its command; false when replies and commands are out of step. */
static bool check_reply(pd_publisher *pub, flush_state *fs, unsigned kind, const redisReply *rep)
{
    if (kind == CMD_EXEC)
        return check_exec(pub, fs, rep);
    if (rep->type == REDIS_REPLY_ERROR) {
        reply_error(pub, fs, rep->str);
        if (kind == CMD_MULTI || kind == CMD_QUEUED)
            fs->tx_refused = true;
        return true;
    }
    if (kind == CMD_MULTI)
        return is_status(rep, "OK");
    if (kind == CMD_QUEUED) /* after a refused MULTI, the command ran on its own */
        return fs->tx_refused || is_status(rep, "QUEUED");
    fs->lists += kind == CMD_LIST_DEL;
    return true;
}

/* Ends a flush whose connection cannot be trusted any more. */
static int flush_broken(pd_publisher *pub, flush_state *fs, int err, const char *what,
                        const char *detail)
{
    char addr[300];
    describe_address(pub, addr, sizeof addr);
    snprintf(fs->errbuf, fs->errlen, "redis \"%s\" %s during a flush: %s", addr, what, detail);
    disconnect(pub);
    return err;
}

/* Reads the replies of every command in flight. */
static int drain(pd_publisher *pub, flush_state *fs)
{
    for (size_t i = 0; i < fs->in_flight; i++) {
        void *reply = NULL;
        if (redisGetReply(pub->ctx, &reply) != REDIS_OK)
            return flush_broken(pub, fs, -EIO, "went away",
                                pub->ctx->errstr[0] ? pub->ctx->errstr : "connection lost");
        bool in_step = check_reply(pub, fs, pub->kinds[i], reply);
        freeReplyObject(reply);
        if (!in_step) /* what was acknowledged can no longer be told apart */
            return flush_broken(pub, fs, -EPROTO, "went out of step",
                                "a reply did not fit its command");
    }
    fs->in_flight = 0;
    return 0;
}

static int send_argv(pd_publisher *pub, flush_state *fs, int argc, enum cmd_kind kind)
{
    if (fs->in_flight == pub->kinds_cap) {
        size_t ncap = pub->kinds_cap ? pub->kinds_cap * 2 : 256;
        unsigned char *nk = realloc(pub->kinds, ncap);
        if (!nk)
            return -ENOMEM;
        pub->kinds = nk;
        pub->kinds_cap = ncap;
    }
    if (redisAppendCommandArgv(pub->ctx, argc, pub->argv, pub->argvlen) != REDIS_OK)
        return -ENOMEM;
    pub->kinds[fs->in_flight++] = (unsigned char)kind;
    if ((int64_t)fs->in_flight >= (pub->conf.max_pipeline > 0 ? pub->conf.max_pipeline : 1000))
        return drain(pub, fs);
    return 0;
}

/* Appends one argument; text arguments are copied into the scratch buffer at *pos. Callers
 * reserve room first (every argument of a command has to stay put until it is sent). */
static void arg_text(pd_publisher *pub, int *argc, size_t *pos, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void arg_text(pd_publisher *pub, int *argc, size_t *pos, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(pub->text + *pos, pub->text_cap - *pos, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n >= pub->text_cap - *pos)
        n = (int)(pub->text_cap - *pos - 1);
    pub->argv[*argc] = pub->text + *pos;
    pub->argvlen[*argc] = (size_t)n;
    *pos += (size_t)n + 1;
    (*argc)++;
}

static void arg_raw(pd_publisher *pub, int *argc, const char *s, size_t len)
{
    pub->argv[*argc] = s;
    pub->argvlen[*argc] = len;
    (*argc)++;
}

/* A user's score hash: {prefix}:u:{user}, or {prefix}:{{user}}:u under the cluster layout. */
static void arg_user_key(pd_publisher *pub, int *argc, size_t *pos, const char *user)
{
    if (pub->conf.key_layout == PD_KEYS_CLUSTER)
        arg_text(pub, argc, pos, "%s:{%s}:u", pub->prefix, user);
    else
        arg_text(pub, argc, pos, "%s:u:%s", pub->prefix, user);
}

static int write_user(pd_publisher *pub, flush_state *fs, const entry *e)
{
    size_t need_text = e->len + strlen(pub->prefix) + 16 + (pub->n_fields + 2) * 32 + 64;
    int r = scratch_reserve(pub, 2 * pub->n_fields + 8, need_text);
    if (r < 0)
        return r;
    const pub_set *s = pub->flight;
    const double *row = s->scores + (size_t)(e - s->entries) * pub->n_fields;
    int argc = 0;
    size_t pos = 0;
    arg_raw(pub, &argc, "HSET", 4);
    arg_user_key(pub, &argc, &pos, e->id);
    for (size_t i = 0; i < pub->n_fields; i++) {
        if (!(e->mask & (UINT64_C(1) << i)))
            continue;
        arg_raw(pub, &argc, pub->fields[i], strlen(pub->fields[i]));
        arg_text(pub, &argc, &pos, "%.9g", row[i]);
    }
    arg_raw(pub, &argc, "ts", 2);
    arg_text(pub, &argc, &pos, "%" PRId64, e->ts_ms);
    arg_raw(pub, &argc, "v", 1);
    arg_text(pub, &argc, &pos, "%" PRIu64, e->generation);
    if ((r = send_argv(pub, fs, argc, CMD_PLAIN)) < 0)
        return r;
    if (pub->conf.ttl_ms > 0) {
        argc = 0;
        pos = 0;
        arg_raw(pub, &argc, "PEXPIRE", 7);
        arg_user_key(pub, &argc, &pos, e->id);
        arg_text(pub, &argc, &pos, "%" PRId64, pub->conf.ttl_ms);
        if ((r = send_argv(pub, fs, argc, CMD_PLAIN)) < 0)
            return r;
    }
    return 0;
}

static int write_forget(pd_publisher *pub, flush_state *fs, const char *user)
{
    int r = scratch_reserve(pub, 4, 2 * (strlen(user) + strlen(pub->prefix)) + 32);
    if (r < 0)
        return r;
    int argc = 0;
    size_t pos = 0;
    arg_raw(pub, &argc, "DEL", 3);
    arg_user_key(pub, &argc, &pos, user);
    return send_argv(pub, fs, argc, CMD_PLAIN);
}

static int write_model(pd_publisher *pub, flush_state *fs, const model_put *m)
{
    int r = scratch_reserve(pub, 2 * m->n + 4, strlen(m->name) + strlen(pub->prefix) + 16);
    if (r < 0)
        return r;
    int argc = 0;
    size_t pos = 0;
    arg_raw(pub, &argc, "HSET", 4);
    arg_text(pub, &argc, &pos, "%s:model:%s", pub->prefix, m->name);
    for (size_t i = 0; i < m->n; i++) {
        arg_raw(pub, &argc, m->fields[i], strlen(m->fields[i]));
        arg_raw(pub, &argc, m->values[i], strlen(m->values[i]));
    }
    return send_argv(pub, fs, argc, CMD_PLAIN);
}

/* The key {prefix}:{name}, bytes as they are (names are binary-safe). */
static void arg_key(pd_publisher *pub, int *argc, size_t *pos, const zset_put *z)
{
    size_t plen = strlen(pub->prefix);
    char *k = pub->text + *pos;
    memcpy(k, pub->prefix, plen);
    k[plen] = ':';
    memcpy(k + plen + 1, z->name, z->name_len);
    arg_raw(pub, argc, k, plen + 1 + z->name_len);
    *pos += plen + 1 + z->name_len;
}

/* MULTI or EXEC, or DEL / PEXPIRE of a list's key. */
static int send_list_cmd(pd_publisher *pub, flush_state *fs, const zset_put *z, const char *verb,
                         enum cmd_kind kind)
{
    int argc = 0;
    size_t pos = 0;
    arg_raw(pub, &argc, verb, strlen(verb));
    if (kind != CMD_MULTI && kind != CMD_EXEC)
        arg_key(pub, &argc, &pos, z);
    if (strcmp(verb, "PEXPIRE") == 0)
        arg_text(pub, &argc, &pos, "%" PRId64, pub->conf.ttl_ms);
    return send_argv(pub, fs, argc, kind);
}

static int send_zadd(pd_publisher *pub, flush_state *fs, const zset_put *z)
{
    int argc = 0;
    size_t pos = 0;
    arg_raw(pub, &argc, "ZADD", 4);
    arg_key(pub, &argc, &pos, z);
    const char *m = z->members;
    for (size_t i = 0; i < z->n; i++) {
        /* 9 significant digits bring every float back exactly */
        arg_text(pub, &argc, &pos, "%.9g", (double)z->scores[i]);
        arg_raw(pub, &argc, m, z->lens[i]);
        m += z->lens[i];
    }
    return send_argv(pub, fs, argc, CMD_QUEUED);
}

static int write_list(pd_publisher *pub, flush_state *fs, const zset_put *z)
{
    /* the key, then up to 16 bytes per score ("-1.17549435e-38") and 21 for the TTL */
    size_t text = strlen(pub->prefix) + 1 + z->name_len + 16 * z->n + 32;
    int r = scratch_reserve(pub, 2 * z->n + 2, text);
    if (r < 0)
        return r;
    if (z->n == 0) /* one command is atomic by itself */
        return send_list_cmd(pub, fs, z, "DEL", CMD_LIST_DEL);
    if ((r = send_list_cmd(pub, fs, z, "MULTI", CMD_MULTI)) < 0 ||
        (r = send_list_cmd(pub, fs, z, "DEL", CMD_QUEUED)) < 0 || (r = send_zadd(pub, fs, z)) < 0)
        return r;
    if (pub->conf.ttl_ms > 0 && (r = send_list_cmd(pub, fs, z, "PEXPIRE", CMD_QUEUED)) < 0)
        return r;
    return send_list_cmd(pub, fs, z, "EXEC", CMD_EXEC);
}

/* Sends the set in flight and reads every reply (the writer thread). */
static int write_all(pd_publisher *pub, flush_state *fs)
{
    const pub_set *s = pub->flight;
    int r = 0;
    /* deletions first: a forgotten user's older scores must not be written after its DEL */
    for (size_t i = 0; i < s->n_forgets && r == 0; i++)
        r = write_forget(pub, fs, s->forgets[i]);
    for (size_t i = 0; i < s->n_entries && r == 0; i++) {
        if (s->entries[i].mask == 0)
            continue;
        r = write_user(pub, fs, &s->entries[i]);
        fs->users++;
    }
    for (size_t i = 0; i < s->n_zsets && r == 0; i++)
        r = write_list(pub, fs, s->zsets[i]);
    for (size_t i = 0; i < s->n_models && r == 0; i++)
        r = write_model(pub, fs, &s->models[i]);
    if (r == 0)
        r = drain(pub, fs);
    return r;
}

/* One flush of the set in flight, on the writer thread: connects first when needed. */
static void write_flight(pd_publisher *pub, job_outcome *out)
{
    *out = (job_outcome){0};
    if (!pub->ctx) {
        if ((out->r = connect_ctx(pub, out->err, sizeof out->err)) < 0)
            return;
        out->connects++;
    }
    double t0 = pd_clock_mono_s();
    flush_state fs = {.errbuf = out->err, .errlen = sizeof out->err};
    int r = write_all(pub, &fs);
    if (r == -ENOMEM && pub->ctx) {
        snprintf(out->err, sizeof out->err, "out of memory during a redis flush");
        disconnect(pub); /* replies of what was sent cannot be matched any more */
    }
    if (r == 0 && fs.err)
        r = fs.err;
    out->r = r;
    out->users = fs.users;
    out->lists = fs.lists;
    out->reply_errors = fs.reply_errors;
    out->seconds = pd_clock_mono_s() - t0;
}

static void *writer_main(void *arg)
{
    pd_publisher *pub = arg;
    pthread_mutex_lock(&pub->mu);
    for (;;) {
        while (pub->state != W_BUSY && !pub->quit)
            pthread_cond_wait(&pub->cv, &pub->mu);
        if (pub->state != W_BUSY)
            break; /* quit, nothing in flight */
        pthread_mutex_unlock(&pub->mu);
        job_outcome out;
        write_flight(pub, &out);
        pthread_mutex_lock(&pub->mu);
        pub->out = out;
        pub->state = W_DONE;
        pthread_cond_broadcast(&pub->cv);
        if (pub->wake_fd >= 0) {
            ssize_t w = write(pub->wake_fd, "r", 1); /* a full pipe is awake already */
            (void)w;
        }
    }
    pthread_mutex_unlock(&pub->mu);
    return NULL;
}

void pd_publisher_set_wakeup(pd_publisher *pub, int fd)
{
    pthread_mutex_lock(&pub->mu);
    pub->wake_fd = fd;
    pthread_mutex_unlock(&pub->mu);
}

/* Takes a finished flush's outcome (the caller's thread, state W_DONE, mutex not held): adds
 * it to the stats and lets go of the set it wrote, or keeps the set for the next start. */
static int take_outcome(pd_publisher *pub, const job_outcome *out, char *errbuf, size_t errlen)
{
    pd_publisher_stats *st = &pub->stats;
    st->connects += out->connects;
    st->reply_errors += out->reply_errors;
    if (errlen)
        snprintf(errbuf, errlen, "%s", out->err);
    if (out->r < 0) {
        st->flush_failures++;
        return out->r;
    }
    const pub_set *s = pub->flight;
    st->user_writes += out->users;
    st->deletes += s->n_forgets;
    st->model_writes += s->n_models;
    st->list_writes += out->lists;
    st->flushes++;
    st->last_batch_users = out->users;
    st->last_flush_seconds = out->seconds;
    size_t b = 0;
    while (b < N_BUCKETS && out->seconds > latency_bounds[b])
        b++;
    pub->hist[b]++;
    pub->hist_sum += out->seconds;
    set_clear(pub->flight);
    pub->flight_size = 0;
    return 0;
}

int pd_publisher_flush_start(pd_publisher *pub)
{
    pthread_mutex_lock(&pub->mu);
    enum writer_state state = pub->state;
    pthread_mutex_unlock(&pub->mu);
    if (state != W_IDLE)
        return -EBUSY;
    if (pub->flight_size == 0) { /* nothing failed: the waiting set goes */
        if (set_size(pub->pend) == 0)
            return 0;
        pub_set *t = pub->flight;
        pub->flight = pub->pend;
        pub->pend = t;
        pub->flight_size = set_size(pub->flight);
    }
    pthread_mutex_lock(&pub->mu);
    pub->state = W_BUSY;
    pthread_cond_broadcast(&pub->cv);
    pthread_mutex_unlock(&pub->mu);
    return 1;
}

/* The outcome of a finished flush, or -EINPROGRESS; waits for it when wait. 1 when idle. */
static int result(pd_publisher *pub, bool wait, char *errbuf, size_t errlen)
{
    if (errlen)
        errbuf[0] = '\0';
    pthread_mutex_lock(&pub->mu);
    while (wait && pub->state == W_BUSY)
        pthread_cond_wait(&pub->cv, &pub->mu);
    enum writer_state state = pub->state;
    job_outcome out;
    if (state == W_DONE) {
        out = pub->out;
        pub->state = W_IDLE;
    }
    pthread_mutex_unlock(&pub->mu);
    if (state == W_BUSY)
        return -EINPROGRESS;
    if (state == W_IDLE)
        return 1;
    return take_outcome(pub, &out, errbuf, errlen);
}

int pd_publisher_flush_result(pd_publisher *pub, char *errbuf, size_t errlen)
{
    return result(pub, false, errbuf, errlen);
}

bool pd_publisher_flushing(const pd_publisher *pub)
{
    pd_publisher *p = (pd_publisher *)pub; /* the lock is not part of the value */
    pthread_mutex_lock(&p->mu);
    bool busy = p->state == W_BUSY;
    pthread_mutex_unlock(&p->mu);
    return busy;
}

int pd_publisher_flush(pd_publisher *pub, char *errbuf, size_t errlen)
{
    char warn[512] = "";
    /* the flush in flight first; when it failed, its set is written again below */
    if (result(pub, true, errbuf, errlen) == 0 && errlen && errbuf[0])
        snprintf(warn, sizeof warn, "%s", errbuf);
    /* at most two rounds: a set kept from a failed flush, then the waiting one */
    for (int round = 0; round < 2 && pd_publisher_dirty(pub) > 0; round++) {
        if (pd_publisher_flush_start(pub) <= 0)
            break;
        int r = result(pub, true, errbuf, errlen);
        if (r < 0)
            return r;
        if (errlen && errbuf[0])
            snprintf(warn, sizeof warn, "%s", errbuf);
    }
    if (errlen)
        snprintf(errbuf, errlen, "%s", warn);
    return 0;
}

void pd_publisher_get_stats(const pd_publisher *pub, pd_publisher_stats *ret_stats)
{
    *ret_stats = pub->stats;
}

size_t pd_publisher_latency_buckets(const pd_publisher *pub, const double **ret_bounds,
                                    const uint64_t **ret_counts, double *ret_sum)
{
    *ret_bounds = latency_bounds;
    *ret_counts = pub->hist;
    *ret_sum = pub->hist_sum;
    return N_BUCKETS;
}

/* Redis output: the user score hashes ({prefix}:u:{user}), model summaries
 * ({prefix}:model:{name}), sorted-set lists ({prefix}:{name}) and forget deletions. Updates are
 * coalesced per user or list until a flush, which writes them pipelined and returns only when
 * Redis has acknowledged every one; a failed flush keeps everything for the next attempt, so
 * nothing accepted is lost. */
#ifndef PD_PUBLISHER_H
#define PD_PUBLISHER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"

typedef struct pd_publisher pd_publisher;

typedef struct pd_publisher_stats {
    uint64_t flushes;        /* successful flushes */
    uint64_t flush_failures; /* flushes that kept their data for a retry */
    uint64_t user_writes;    /* user hashes written */
    uint64_t model_writes;
    uint64_t deletes;      /* forget deletions written */
    uint64_t coalesced;    /* updates merged into an already dirty user */
    uint64_t list_writes;  /* sorted-set lists written (a deletion counts as one) */
    uint64_t list_coalesced; /* lists replaced while still waiting */
    uint64_t reply_errors; /* commands Redis refused for good (counted, not retried) */
    uint64_t connects;
    uint64_t last_batch_users;
    double last_flush_seconds;
} pd_publisher_stats;

/* fields[i] is the hash field of model i's score. Copies conf and fields. */
pd_publisher *pd_publisher_new(const pd_redis_conf *conf, const char *const *fields,
                               size_t n_fields, char *errbuf, size_t errlen);
void pd_publisher_free(pd_publisher *pub);

/* Connects (AUTH and SELECT included). Returns 0, or a negative errno with a message naming
 * the address (never the password). */
int pd_publisher_connect(pd_publisher *pub, char *errbuf, size_t errlen);
bool pd_publisher_connected(const pd_publisher *pub);

/* Replaces the model fields after a reload. Flush first: dirty scores are indexed by model. */
int pd_publisher_set_fields(pd_publisher *pub, const char *const *fields, size_t n_fields);
/* Takes new TTL, flush interval and pipeline depth (the address needs a new publisher). */
void pd_publisher_set_conf(pd_publisher *pub, const pd_redis_conf *conf);

typedef struct pd_publish_score {
    int field; /* index into fields */
    double value;
} pd_publish_score;

/* Records the newest scores of a user; merged with what is already waiting for it. */
int pd_publisher_update(pd_publisher *pub, const char *user, size_t len, int64_t ts_ms,
                        uint64_t generation, const pd_publish_score *scores, size_t n);

/* Drops anything waiting for the user and queues the deletion of its keys. */
int pd_publisher_forget(pd_publisher *pub, const char *user, size_t len);

/* Queues the summary hash of a model (replacing one still waiting). */
int pd_publisher_put_model(pd_publisher *pub, const char *model, const char *const *fields,
                           const char *const *values, size_t n);

/* Queues the replacement of the sorted set {prefix}:{name} by n (member, score) entries, best
 * first (readers take them with ZREVRANGE); n == 0 queues the deletion of the key. A list still
 * waiting for the same name is replaced, not merged. Names and members are bytes of the given
 * lengths (binary-safe); members should be distinct, as Redis keeps one score per member.
 * Copies everything. The next flush writes the list as one MULTI / DEL / ZADD / PEXPIRE / EXEC
 * (PEXPIRE with the conf's ttl_ms, none when it is 0), so a reader sees the old list or the new
 * one, never a part of either. Returns 0; -ENOMEM, or -EINVAL for a NaN score (Redis refuses
 * it) or more members than one command carries, leave what was waiting as it was. */
int pd_publisher_put_zset(pd_publisher *pub, const char *name, size_t name_len,
                          const char *const *members, const size_t *member_lens,
                          const float *scores, size_t n);

/* Users, forgets, model summaries and lists waiting to be written (0: a flush has nothing to
 * do). */
size_t pd_publisher_dirty(const pd_publisher *pub);

/* Writes everything waiting. 0 when Redis acknowledged all of it; otherwise a negative errno,
 * a message, and every update is kept for the next flush (after a reconnect). */
int pd_publisher_flush(pd_publisher *pub, char *errbuf, size_t errlen);

void pd_publisher_get_stats(const pd_publisher *pub, pd_publisher_stats *ret_stats);

/* Flush latency histogram (seconds): n upper bounds and n + 1 per-bucket counts (the last
 * counts flushes above the largest bound); the caller accumulates for Prometheus. */
size_t pd_publisher_latency_buckets(const pd_publisher *pub, const double **ret_bounds,
                                    const uint64_t **ret_counts, double *ret_sum);

#endif

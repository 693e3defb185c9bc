/* Redis output: the user score hashes ({prefix}:u:{user}), model summaries
 * ({prefix}:model:{name}), sorted-set lists ({prefix}:{name}) and forget deletions. Updates are
 * coalesced per user or list until a flush writes them, pipelined, on the publisher's own
 * writer thread: pd_publisher_flush_start() hands what is waiting to it and returns at once,
 * and updates made meanwhile wait for the next flush, so a slow or hung Redis never holds up
 * the caller. A flush has succeeded once Redis acknowledged every write of it; a failed flush
 * keeps its writes and the next start writes them again, alone and before anything newer, so
 * nothing accepted is lost and no key sees its updates out of order. pd_publisher_flush() does
 * all of that and waits. Every function is called from one thread, the caller's. */
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

/* Connects (AUTH and SELECT included), waiting up to the conf's timeout; a flush reconnects
 * by itself. Returns 0, or a negative errno with a message naming the address (never the
 * password); -EBUSY while a flush is in flight. */
int pd_publisher_connect(pd_publisher *pub, char *errbuf, size_t errlen);
bool pd_publisher_connected(const pd_publisher *pub);

/* One key at a time, waiting for Redis up to the timeout, on the publisher's connection:
 * for handing a partition's user state to its next owner. Only while no flush is in flight
 * (-EBUSY otherwise). put: SET key data PX ttl_ms. get: the value in *ret_data (malloc'd, the
 * caller frees it) and *ret_len, or -ENOENT when there is none. Return 0 or a negative errno
 * with the reason in errbuf. */
int pd_publisher_blob_put(pd_publisher *pub, const char *key, const void *data, size_t len,
                          int64_t ttl_ms, char *errbuf, size_t errlen);
int pd_publisher_blob_get(pd_publisher *pub, const char *key, void **ret_data, size_t *ret_len,
                          char *errbuf, size_t errlen);
int pd_publisher_blob_del(pd_publisher *pub, const char *key, char *errbuf, size_t errlen);

/* Replaces the model fields after a reload. pd_publisher_flush() first: dirty scores are
 * indexed by model, and the writer must be idle. */
int pd_publisher_set_fields(pd_publisher *pub, const char *const *fields, size_t n_fields);
/* Takes new TTL, flush interval and pipeline depth (the address needs a new publisher); only
 * while no flush is in flight (after pd_publisher_flush()). */
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

/* Users, forgets, model summaries and lists waiting to be written or in flight (0: a flush
 * has nothing to do). */
size_t pd_publisher_dirty(const pd_publisher *pub);

/* Starts a flush and returns without waiting: 1 when one started, 0 when nothing waits, and
 * -EBUSY while the previous one is in flight or its outcome has not been taken. The writes of
 * a flush that failed go again, alone; otherwise everything waiting goes. */
int pd_publisher_flush_start(pd_publisher *pub);

/* The outcome of the flush last started, without waiting: -EINPROGRESS while it runs, 1 when
 * there is none to take (idle), 0 when Redis acknowledged all of it (errbuf may still carry
 * a warning: writes refused for good, counted in reply_errors), or a negative errno with a
 * message: its writes are kept for the next start (after a reconnect). Taken once. */
int pd_publisher_flush_result(pd_publisher *pub, char *errbuf, size_t errlen);

/* Whether a flush is in flight. */
bool pd_publisher_flushing(const pd_publisher *pub);

/* Writes one byte to fd (non-blocking, e.g. a self-pipe) whenever a flush finishes, so a
 * loop waiting in poll() takes the outcome at once; -1 for none. */
void pd_publisher_set_wakeup(pd_publisher *pub, int fd);

/* Waits for the flush in flight, then writes everything waiting and waits for that: 0 when
 * Redis acknowledged all of it (errbuf may carry a warning, as above); otherwise a negative
 * errno, a message, and every update is kept for the next flush. */
int pd_publisher_flush(pd_publisher *pub, char *errbuf, size_t errlen);

void pd_publisher_get_stats(const pd_publisher *pub, pd_publisher_stats *ret_stats);

/* Flush latency histogram (seconds): n upper bounds and n + 1 per-bucket counts (the last
 * counts flushes above the largest bound); the caller accumulates for Prometheus. */
size_t pd_publisher_latency_buckets(const pd_publisher *pub, const double **ret_bounds,
                                    const uint64_t **ret_counts, double *ret_sum);

#endif

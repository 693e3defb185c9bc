/* Event-time sources: the engine's source id of each Kafka partition, and when each last
 * delivered an event (monotonic ms), which decides when an idle partition stops holding the
 * watermark, and whether it is assigned here: a revoked partition keeps holding it for an
 * idle timeout, as it will usually come back in the same rebalance. Ids are dense, given in order of first sight and kept for good, so a partition
 * that comes back after a rebalance gets its old id. A lookup scans the topics (a pipeline
 * reads few) and indexes an array by partition number: no per-partition scan per message. */
#ifndef PD_SOURCES_H
#define PD_SOURCES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct pd_sources pd_sources;

/* NULL when out of memory. */
pd_sources *pd_sources_new(void);
/* Accepts NULL. */
void pd_sources_free(pd_sources *s);

/* The id of topic/partition (partition >= 0), given now if it has none. A source seen for the
 * first time, or again after pd_sources_release(), counts as having delivered at now_ms, so
 * it holds the watermark for a full idle timeout before it may be found idle. Returns the id,
 * -ENOMEM, or -EINVAL for a negative partition. */
int64_t pd_sources_get(pd_sources *s, const char *topic, int32_t partition, int64_t now_ms);

/* Source id delivered an event at t_ms. Ignores an unknown id. */
void pd_sources_delivered(pd_sources *s, uint32_t id, int64_t t_ms);

/* When source id last delivered (or was assigned or released); INT64_MAX for an unknown id,
 * which so never looks idle. */
int64_t pd_sources_seen_ms(const pd_sources *s, uint32_t id);

bool pd_sources_assigned(const pd_sources *s, uint32_t id);

/* The partition was revoked at now_ms. If it comes back, its idle timeout starts anew. */
void pd_sources_release(pd_sources *s, uint32_t id, int64_t now_ms);

/* The released sources that stayed away for timeout_ms (at most max, into ret_ids): the
 * caller takes them out of the watermark; each is returned once until it is assigned and
 * released again. */
size_t pd_sources_expire(pd_sources *s, int64_t now_ms, int64_t timeout_ms, uint32_t *ret_ids,
                         size_t max);

/* How many ids were given. */
size_t pd_sources_count(const pd_sources *s);

#endif

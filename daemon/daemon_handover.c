/* Handing a partition's user state to its next owner in the consumer group (kafka.handover:
 * redis). A user belongs to the partition of its last event (producers key events by user id,
 * README "Scale-out"); when partitions are revoked, their old owner flushes, commits, writes
 * the users of each to {prefix}:state:{topic}:{partition} with the offset they cover, and
 * drops them; the new owner, as the partitions are assigned and before any of their events,
 * takes the state over, resumes at that offset and deletes the key. Learned weights stay
 * where they are (the sync of model deltas keeps them in step).
 *
 * The blob, version 1 (little-endian, field by field): u32 magic "PDHS", u32 version, i64 the
 * next offset of the partition it covers, i64 wall time written, str the writer (host:pid),
 * u8 kind (0: handed over at a revoke, 1: a checkpoint), then the engine's handover blob
 * (pd_engine_hand_out()).
 *
 * With snapshots on, every periodic snapshot also writes each assigned partition's users as
 * a checkpoint (they stay here): the path a crash falls back to, per partition. A member that
 * dies without a revoke leaves its last checkpoint; the next owner takes it over and resumes
 * the partition at the checkpoint's offset, reading again the events since (their scores are
 * written again, latest-wins, and the models learn them again: at least once).
 *
 * A handed-over state is taken over only when it is not older than the group's committed
 * offset: a commit beyond it means another member consumed the partition since (without
 * handing over), and its users are further along than the state. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/binio.h"
#include "common/clock.h"
#include "daemon/daemon_internal.h"
#include "daemon/log.h"

#define STATE_MAGIC   0x53484450u /* "PDHS" little-endian */
#define STATE_VERSION 1
#define KIND_HANDOVER   0
#define KIND_CHECKPOINT 1
#define SHARD_PARTITION_BITS 20

uint32_t daemon_shard_of(const pd_daemon *d, const char *topic, int32_t partition)
{
    uint32_t t = 0;
    for (size_t i = 0; i < d->conf->kafka.n_topics; i++)
        if (strcmp(d->conf->kafka.topics[i], topic) == 0)
            t = (uint32_t)i;
    return t << SHARD_PARTITION_BITS | ((uint32_t)partition & ((1u << SHARD_PARTITION_BITS) - 1));
}

static void state_key(const pd_daemon *d, const char *topic, int32_t partition, char *buf,
                      size_t len)
{
    snprintf(buf, len, "%s:state:%s:%" PRId32, d->conf->redis.prefix, topic, partition);
}

static void writer_name(char *buf, size_t len)
{
    char host[256];
    if (gethostname(host, sizeof host) != 0)
        snprintf(host, sizeof host, "unknown");
    host[sizeof host - 1] = '\0';
    snprintf(buf, len, "%s:%ld", host, (long)getpid());
}

/* Writes one partition's users; 0 when they are safe in Redis, and then (kind handover) they
 * are dropped here. */
static int hand_out(pd_daemon *d, const char *topic, int32_t partition, int64_t offset, int kind)
{
    char key[600], err[512], who[300];
    uint32_t shard = daemon_shard_of(d, topic, partition);
    int64_t t0 = pd_clock_mono_ms();
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) {
        pd_log_error("out of memory handing over partition \"%s\" [%" PRId32 "]", topic,
                     partition);
        return -ENOMEM;
    }
    pd_bin_writer w;
    pd_bin_writer_init(&w, f);
    pd_bin_put_u32(&w, STATE_MAGIC);
    pd_bin_put_version(&w, STATE_VERSION);
    pd_bin_put_i64(&w, offset);
    pd_bin_put_i64(&w, pd_clock_wall_ms());
    writer_name(who, sizeof who);
    pd_bin_put_str(&w, who, strlen(who));
    pd_bin_put_u8(&w, (uint8_t)kind);
    uint64_t users = 0;
    int r = w.err ? w.err : pd_engine_hand_out(d->engine, &shard, 1, f, &users, err, sizeof err);
    if (fclose(f) != 0 && r == 0) {
        snprintf(err, sizeof err, "out of memory");
        r = -ENOMEM;
    }
    if (r == 0) {
        state_key(d, topic, partition, key, sizeof key);
        r = pd_publisher_blob_put(d->pub, key, buf, len, d->conf->redis.ttl_ms, err, sizeof err);
    }
    if (r < 0) {
        d->handover.out_failed++;
        pd_logkv(PD_LOG_WARNING,
                 kind == KIND_CHECKPOINT ? "could not checkpoint a partition's user state"
                                         : "could not hand over a partition's user state; its "
                                           "next owner starts those users afresh",
                 "topic=%s partition=%" PRId32 " error=\"%s\"", topic, partition, err);
        free(buf);
        return r;
    }
    if (kind == KIND_CHECKPOINT) {
        d->handover.checkpoints++;
        d->handover.checkpoint_bytes += len;
        free(buf);
        return 0;
    }
    pd_engine_drop_shards(d->engine, &shard, 1);
    pd_kafka_in_state_moved(d->in, topic, partition);
    d->handover.out_partitions++;
    d->handover.out_users += users;
    d->handover.out_bytes += len;
    pd_logkv(PD_LOG_INFO, "handed over a partition's user state",
             "topic=%s partition=%" PRId32 " offset=%" PRId64 " users=%" PRIu64
             " bytes=%zu ms=%" PRId64,
             topic, partition, offset, users, len, pd_clock_mono_ms() - t0);
    free(buf);
    return 0;
}

void daemon_handover_revoking(pd_daemon *d, const rd_kafka_topic_partition_list_t *parts)
{
    if (d->conf->kafka.handover != PD_HANDOVER_REDIS)
        return;
    /* after daemon_flush_commit_all(): the positions are what Redis holds (and what the
     * group committed, unless the rebalance refused the commit) */
    rd_kafka_topic_partition_list_t *pos = pd_kafka_in_positions(d->in);
    for (int i = 0; i < parts->cnt; i++) {
        const rd_kafka_topic_partition_t *p = &parts->elems[i];
        const rd_kafka_topic_partition_t *at =
            pos ? rd_kafka_topic_partition_list_find(pos, p->topic, p->partition) : NULL;
        if (!at || at->offset < 0)
            continue; /* nothing consumed here: nothing of its own to hand over */
        hand_out(d, p->topic, p->partition, at->offset, KIND_HANDOVER);
    }
    if (pos)
        rd_kafka_topic_partition_list_destroy(pos);
}

void daemon_handover_checkpoint(pd_daemon *d)
{
    if (d->conf->kafka.handover != PD_HANDOVER_REDIS || !d->in)
        return;
    rd_kafka_topic_partition_list_t *pos = pd_kafka_in_positions(d->in);
    if (!pos)
        return;
    /* the blob calls need the connection: the flush in flight goes first */
    if (daemon_flush_settle(d) == 0)
        for (int i = 0; i < pos->cnt; i++)
            if (pos->elems[i].offset >= 0)
                hand_out(d, pos->elems[i].topic, pos->elems[i].partition, pos->elems[i].offset,
                         KIND_CHECKPOINT);
    rd_kafka_topic_partition_list_destroy(pos);
}

/* Reads a state's header; the engine's blob starts at *ret_body. -EINVAL when it is not one. */
static int parse_header(const char *buf, size_t len, int64_t *ret_offset, int64_t *ret_wall,
                        char *who, size_t who_len, int *ret_kind, size_t *ret_body)
{
    FILE *f = fmemopen((void *)buf, len, "rb");
    if (!f)
        return -ENOMEM;
    pd_bin_reader r;
    pd_bin_reader_init(&r, f);
    uint32_t magic = pd_bin_get_u32(&r);
    if (!r.err && magic != STATE_MAGIC)
        pd_bin_fail(&r, "not a propensityd user state");
    pd_bin_get_version(&r, "partition state", STATE_VERSION);
    *ret_offset = pd_bin_get_i64(&r);
    *ret_wall = pd_bin_get_i64(&r);
    pd_bin_get_str(&r, who, who_len);
    *ret_kind = pd_bin_get_u8(&r);
    long at = ftell(f);
    fclose(f);
    if (r.err || at < 0)
        return -EINVAL;
    *ret_body = (size_t)at;
    return 0;
}

/* Takes one partition's state over when there is one not older than the group's commit;
 * sets p->offset to where it ends. */
static void take_over(pd_daemon *d, rd_kafka_topic_partition_t *p, int64_t committed)
{
    char key[600], err[512], who[300] = "";
    state_key(d, p->topic, p->partition, key, sizeof key);
    int64_t t0 = pd_clock_mono_ms();
    void *data = NULL;
    size_t len = 0;
    int r = pd_publisher_blob_get(d->pub, key, &data, &len, err, sizeof err);
    if (r == -ENOENT)
        return;
    if (r < 0) {
        d->handover.in_failed++;
        pd_logkv(PD_LOG_WARNING, "could not read a partition's handed-over user state; its "
                 "users start afresh", "topic=%s partition=%" PRId32 " error=\"%s\"", p->topic,
                 p->partition, err);
        return;
    }
    int64_t offset = -1, wall = 0;
    size_t body = 0;
    int kind = KIND_HANDOVER;
    if (parse_header(data, len, &offset, &wall, who, sizeof who, &kind, &body) < 0) {
        d->handover.in_failed++;
        pd_logkv(PD_LOG_WARNING, "a partition's handed-over user state is unreadable; its users "
                 "start afresh", "key=%s bytes=%zu", key, len);
        goto out_delete;
    }
    /* the snapshot restored here may already be as far along for this partition (it is
     * then taken as it is, in its own order of waiting examples); a
     * checkpoint behind the commit is what a member that died left: the partition goes back
     * to it */
    bool rewind = kind == KIND_CHECKPOINT && offset < committed;
    if ((offset < committed && !rewind) || (p->offset >= 0 && offset <= p->offset)) {
        d->handover.stale++;
        pd_logkv(PD_LOG_WARNING, "a partition's handed-over user state is older than what was "
                 "consumed since; not taken over", "key=%s state_offset=%" PRId64
                 " committed=%" PRId64 " writer=%s", key, offset, committed, who);
        goto out_delete;
    }
    FILE *f = fmemopen((char *)data + body, len - body, "rb");
    uint64_t users = 0;
    r = f ? pd_engine_take_over(d->engine, f, &users, err, sizeof err) : -ENOMEM;
    if (f)
        fclose(f);
    if (r < 0) {
        d->handover.in_failed++;
        pd_logkv(PD_LOG_WARNING, "could not take over a partition's user state; its users "
                 "start afresh", "key=%s error=\"%s\"", key, r == -ENOMEM ? "out of memory" : err);
        goto out_delete;
    }
    p->offset = offset;
    if (rewind) {
        d->handover.rewound++;
        pd_logkv(PD_LOG_WARNING, "resuming a partition from its last checkpoint: its owner left "
                 "without handing it over; the events since are read again",
                 "topic=%s partition=%" PRId32 " checkpoint=%" PRId64 " committed=%" PRId64
                 " writer=%s", p->topic, p->partition, offset, committed, who);
    }
    d->handover.in_partitions++;
    d->handover.in_users += users;
    d->handover.in_bytes += len;
    pd_logkv(PD_LOG_INFO, "took over a partition's user state",
             "topic=%s partition=%" PRId32 " offset=%" PRId64 " users=%" PRIu64
             " bytes=%zu writer=%s age_ms=%" PRId64 " ms=%" PRId64,
             p->topic, p->partition, offset, users, len, who, pd_clock_wall_ms() - wall,
             pd_clock_mono_ms() - t0);
out_delete:
    /* taken or refused, it is not to be taken again */
    if (pd_publisher_blob_del(d->pub, key, err, sizeof err) < 0)
        pd_logkv(PD_LOG_WARNING, "could not delete a handed-over user state", "key=%s error=\"%s\"",
                 key, err);
    free(data);
}

/* Users of partitions this member does not own after the assignment (what a snapshot of
 * an earlier ownership restored, after a crash) go: their partitions' owners hold them, and
 * their waiting examples resolved here too would be learned twice. parts: what is being
 * added; the assignment held so far stays. */
static void drop_unowned(pd_daemon *d, const rd_kafka_topic_partition_list_t *parts)
{
    rd_kafka_topic_partition_list_t *held = NULL;
    if (rd_kafka_assignment(pd_kafka_in_handle(d->in), &held) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return; /* not knowing what is held, keep everything */
    size_t n = (size_t)held->cnt + (size_t)parts->cnt, k = 0;
    uint32_t *shards = malloc((n ? n : 1) * sizeof *shards);
    if (shards) {
        for (int i = 0; i < held->cnt; i++)
            shards[k++] = daemon_shard_of(d, held->elems[i].topic, held->elems[i].partition);
        for (int i = 0; i < parts->cnt; i++)
            shards[k++] = daemon_shard_of(d, parts->elems[i].topic, parts->elems[i].partition);
        uint64_t dropped = pd_engine_keep_shards(d->engine, shards, k);
        if (dropped > 0)
            pd_logkv(PD_LOG_INFO, "dropped the users of partitions other members own",
                     "users=%" PRIu64 " partitions_held=%zu", dropped, k);
        free(shards);
    }
    rd_kafka_topic_partition_list_destroy(held);
}

void daemon_handover_assigning(pd_daemon *d, rd_kafka_topic_partition_list_t *parts)
{
    if (d->conf->kafka.handover != PD_HANDOVER_REDIS || parts->cnt == 0)
        return;
    /* the blob calls need the connection: the flush in flight goes first (no commit: it
     * would wait for the end of the rebalance this runs in) */
    if (daemon_flush_settle(d) < 0)
        pd_log_warning("could not flush before taking over %d partition(s)", parts->cnt);
    rd_kafka_topic_partition_list_t *committed = rd_kafka_topic_partition_list_copy(parts);
    for (int i = 0; i < committed->cnt; i++)
        committed->elems[i].offset = RD_KAFKA_OFFSET_INVALID;
    rd_kafka_resp_err_t cerr = rd_kafka_committed(pd_kafka_in_handle(d->in), committed, 10000);
    if (cerr != RD_KAFKA_RESP_ERR_NO_ERROR)
        pd_log_warning("could not read the group's committed offsets (%s): taking over the "
                       "handed-over user state as it is", rd_kafka_err2str(cerr));
    for (int i = 0; i < parts->cnt; i++) {
        const rd_kafka_topic_partition_t *c = rd_kafka_topic_partition_list_find(
            committed, parts->elems[i].topic, parts->elems[i].partition);
        take_over(d, &parts->elems[i],
                  cerr == RD_KAFKA_RESP_ERR_NO_ERROR && c && c->offset >= 0 ? c->offset : -1);
    }
    rd_kafka_topic_partition_list_destroy(committed);
    drop_unowned(d, parts);
}

/* Snapshots: the engine's state (weights, optimizer state, normalisers, users, pending
 * examples) with the Kafka offsets it includes, so a restart resumes exactly after what it
 * learned. Written when partitions are assigned, every snapshot.interval, on demand, soon
 * after forget events and on stop; the newest valid one is restored at start. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "daemon/daemon_internal.h"
#include "daemon/log.h"
#include "common/binio.h"
#include "models/snapshot.h"

#define FORGET_SNAPSHOT_MS 1000 /* forget events are coalesced into one snapshot this late */
#define OFFSETS_SECTION    "kafka.offsets"

/* ---- the offsets section ----
 *
 * Version 1 (little-endian, field by field): u32 version, u32 count, then per partition:
 * str topic, i32 partition, i64 next offset. */

#define OFFSETS_VERSION 1
#define MAX_OFFSETS     1000000

static int save_offsets(pd_bin_writer *w, const rd_kafka_topic_partition_list_t *pos)
{
    uint32_t n = pos ? (uint32_t)pos->cnt : 0;
    pd_bin_put_version(w, OFFSETS_VERSION);
    pd_bin_put_u32(w, n);
    for (uint32_t i = 0; i < n; i++) {
        const rd_kafka_topic_partition_t *p = &pos->elems[i];
        pd_bin_put_str(w, p->topic, strlen(p->topic));
        pd_bin_put_i32(w, p->partition);
        pd_bin_put_i64(w, p->offset);
    }
    return w->err;
}

/* The saved offsets, or NULL with the reason in errbuf. */
static rd_kafka_topic_partition_list_t *load_offsets(pd_bin_reader *r, char *errbuf,
                                                     size_t errlen)
{
    pd_bin_get_version(r, OFFSETS_SECTION, OFFSETS_VERSION);
    uint32_t n = pd_bin_get_u32(r);
    if (!r->err && n > MAX_OFFSETS)
        pd_bin_fail(r, "%u partitions", n);
    rd_kafka_topic_partition_list_t *list =
        rd_kafka_topic_partition_list_new(r->err ? 0 : (int)n);
    for (uint32_t i = 0; i < n && !r->err; i++) {
        char topic[256];
        pd_bin_get_str(r, topic, sizeof topic);
        int32_t part = pd_bin_get_i32(r);
        int64_t off = pd_bin_get_i64(r);
        if (!r->err)
            rd_kafka_topic_partition_list_add(list, topic, part)->offset = off;
    }
    if (r->err) {
        snprintf(errbuf, errlen, "%s section: %s", OFFSETS_SECTION, r->why);
        rd_kafka_topic_partition_list_destroy(list);
        return NULL;
    }
    return list;
}

/* Where the state in the engine ends, per partition: the processed positions, and for the
 * partitions a restored snapshot covers that are not assigned back yet, the snapshot's own
 * offsets (the engine still holds exactly their events). Without the latter a snapshot taken
 * before the assignment would drop them, and a restart from it would resume at the group's
 * committed offsets and skip the events between. NULL when there is nothing. */
static rd_kafka_topic_partition_list_t *snapshot_positions(pd_daemon *d)
{
    const rd_kafka_topic_partition_list_t *restore = d->snap.restore_offsets;
    rd_kafka_topic_partition_list_t *pos = d->in ? pd_kafka_in_positions(d->in) : NULL;
    if (!restore || restore->cnt == 0)
        return pos;
    if (!pos)
        return rd_kafka_topic_partition_list_copy(restore);
    for (int i = 0; i < restore->cnt; i++) {
        const rd_kafka_topic_partition_t *r = &restore->elems[i];
        if (!rd_kafka_topic_partition_list_find(pos, r->topic, r->partition))
            rd_kafka_topic_partition_list_add(pos, r->topic, r->partition)->offset = r->offset;
    }
    return pos;
}

/* ---- write and restore ---- */

/* The engine's state and its offsets into w. Everything processed so far is in the engine,
 * so the processed positions are exactly what the snapshot includes. */
static int fill_snapshot(pd_daemon *d, pd_snapshot_writer *w, char *err, size_t errlen)
{
    if (pd_engine_save(d->engine, w, err, errlen) < 0)
        return -EIO;
    rd_kafka_topic_partition_list_t *pos = snapshot_positions(d);
    pd_bin_writer bw;
    pd_bin_writer_init(&bw, pd_snapshot_writer_section(w, OFFSETS_SECTION));
    int r = save_offsets(&bw, pos);
    if (pos)
        rd_kafka_topic_partition_list_destroy(pos);
    if (r < 0)
        snprintf(err, errlen, "cannot write the kafka offsets to the snapshot: %s",
                 strerror(pd_snapshot_writer_errno(w) ? pd_snapshot_writer_errno(w) : -r));
    return r;
}

/* ---- the group's snapshot ----
 *
 * With sync on, every snapshot but those of assignments is also published to Redis as
 * {prefix}:snapshot:{group}: u32 magic "PDGS", u32 version 1, i64 wall time written, str the
 * writer, then the snapshot file's bytes. An instance that starts with no snapshot of its own
 * takes the models (not the users, pending examples or offsets: those are other partitions')
 * from it, and its sync consumer applies the deltas published since. */

#define GROUP_MAGIC   0x53474450u /* "PDGS" little-endian */
#define GROUP_VERSION 1

static void group_key(const pd_daemon *d, char *buf, size_t len)
{
    snprintf(buf, len, "%s:snapshot:%s", d->conf->redis.prefix, d->conf->kafka.group);
}

/* The whole file at path (malloc'd), or NULL. */
static char *read_file(const char *path, size_t *ret_len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    char chunk[65536];
    size_t n;
    bool ok = m != NULL;
    while (ok && (n = fread(chunk, 1, sizeof chunk, f)) > 0)
        ok = fwrite(chunk, 1, n, m) == n;
    ok = ok && !ferror(f);
    fclose(f);
    if (m && fclose(m) != 0)
        ok = false;
    if (!ok) {
        free(buf);
        return NULL;
    }
    *ret_len = len;
    return buf;
}

static void publish_to_group(pd_daemon *d, const char *path)
{
    if (!d->conf->sync.enabled || !d->pub)
        return;
    char key[600], err[512], who[300];
    size_t file_len = 0, len = 0;
    char *file = read_file(path, &file_len), *buf = NULL;
    FILE *m = file ? open_memstream(&buf, &len) : NULL;
    if (!m) {
        free(file);
        pd_log_warning("could not read snapshot \"%s\" to publish it to the group", path);
        return;
    }
    pd_bin_writer w;
    pd_bin_writer_init(&w, m);
    pd_bin_put_u32(&w, GROUP_MAGIC);
    pd_bin_put_version(&w, GROUP_VERSION);
    pd_bin_put_i64(&w, d->snap.last_wall_ms);
    snprintf(who, sizeof who, "%s", d->sync.instance);
    pd_bin_put_str(&w, who, strlen(who));
    pd_bin_put_bytes(&w, file, file_len);
    free(file);
    bool ok = fclose(m) == 0 && !w.err;
    /* the blob call needs the connection: the flush in flight goes first */
    if (ok && daemon_flush_settle(d) == 0) {
        group_key(d, key, sizeof key);
        if (pd_publisher_blob_put(d->pub, key, buf, len, d->conf->redis.ttl_ms, err,
                                  sizeof err) == 0) {
            d->snap.group_published++;
            pd_logkv(PD_LOG_DEBUG, "published the snapshot to the group", "key=%s bytes=%zu",
                     key, len);
        } else {
            pd_log_warning("could not publish the snapshot to the group: %s", err);
        }
    }
    free(buf);
}

void daemon_snapshot_from_group(pd_daemon *d)
{
    const pd_snapshot_conf *sc = &d->conf->snapshot;
    if (!d->conf->sync.enabled || d->snap.restored || !sc->dir)
        return;
    char key[600], err[1024], fresh[1024], who[300] = "", path[1200];
    group_key(d, key, sizeof key);
    void *data = NULL;
    size_t len = 0;
    int r = pd_publisher_blob_get(d->pub, key, &data, &len, err, sizeof err);
    if (r == -ENOENT) {
        pd_logkv(PD_LOG_INFO, "no snapshot published for the group: starting fresh", "key=%s",
                 key);
        return;
    }
    if (r < 0) {
        pd_log_warning("could not read the group's snapshot (%s): starting fresh", err);
        return;
    }
    FILE *f = fmemopen(data, len, "rb");
    pd_bin_reader rd;
    int64_t wall = 0;
    long body = -1;
    if (f) {
        pd_bin_reader_init(&rd, f);
        if (pd_bin_get_u32(&rd) != GROUP_MAGIC && !rd.err)
            pd_bin_fail(&rd, "not a propensityd group snapshot");
        pd_bin_get_version(&rd, "group snapshot", GROUP_VERSION);
        wall = pd_bin_get_i64(&rd);
        pd_bin_get_str(&rd, who, sizeof who);
        body = rd.err ? -1 : ftell(f);
        fclose(f);
    }
    snprintf(path, sizeof path, "%s/.group-snapshot.tmp", sc->dir);
    FILE *out = body >= 0 ? fopen(path, "wb") : NULL;
    bool written = out && fwrite((char *)data + body, 1, len - (size_t)body, out) ==
                              len - (size_t)body;
    if (out && fclose(out) != 0)
        written = false;
    free(data);
    pd_snapshot *s = written ? pd_snapshot_open(path, err, sizeof err) : NULL;
    if (!s) {
        pd_log_warning("the group's snapshot cannot be used (%s): starting fresh",
                       body < 0 ? "unreadable" : (written ? err : "cannot write it to the "
                                                                 "snapshot directory"));
        unlink(path);
        return;
    }
    if (pd_engine_load_models(d->engine, s, fresh, sizeof fresh, err, sizeof err) < 0) {
        pd_log_warning("the group's snapshot cannot be restored (%s): starting fresh", err);
    } else {
        d->snap.group_from_ms = wall;
        pd_logkv(PD_LOG_INFO, "started the models from the group's snapshot",
                 "writer=%s age_ms=%" PRId64 " bytes=%zu", who, pd_clock_wall_ms() - wall, len);
        if (fresh[0])
            pd_log_warning("models starting fresh: %s", fresh);
    }
    pd_snapshot_close(s);
    unlink(path);
}

int daemon_snapshot_write(pd_daemon *d, const char *why, int keep, char *ret_path, size_t path_len)
{
    const pd_snapshot_conf *sc = &d->conf->snapshot;
    if (!sc->dir)
        return 0;
    char err[512], path[1024];
    int64_t t0 = pd_clock_mono_ms();
    pd_snapshot_writer *w =
        pd_snapshot_writer_new(sc->dir, d->conf->fingerprint, pd_clock_wall_ms(), err, sizeof err);
    if (!w)
        goto out_fail;
    if (fill_snapshot(d, w, err, sizeof err) < 0) {
        pd_snapshot_writer_abort(w);
        goto out_fail;
    }
    if (pd_snapshot_writer_commit(w, keep > 0 ? keep : (int)sc->keep, path, sizeof path, err,
                                  sizeof err) < 0)
        goto out_fail;
    if (ret_path)
        snprintf(ret_path, path_len, "%s", path);
    d->snap.written++;
    d->snap.last_wall_ms = pd_clock_wall_ms();
    d->snap.last_seconds = (double)(pd_clock_mono_ms() - t0) / 1000.0;
    pd_logkv(PD_LOG_INFO, "snapshot written", "path=%s reason=%s seconds=%.3f", path, why,
             d->snap.last_seconds);
    if (strcmp(why, "assignment") != 0)
        publish_to_group(d, path);
    if (strcmp(why, "interval") == 0 || strcmp(why, "control") == 0)
        daemon_handover_checkpoint(d);
    return 0;

out_fail:
    d->snap.failed++;
    pd_log_error("snapshot failed: %s", err);
    if (ret_path)
        snprintf(ret_path, path_len, "%s", err);
    return -EIO;
}

static void on_snapshot_skipped(void *ctx, const char *path, const char *why)
{
    (void)ctx;
    (void)path;
    pd_log_warning("%s; trying an older one", why);
}

/* Learned state now, offsets on assignment (daemon_snapshot_assigning). */
int daemon_snapshot_restore(pd_daemon *d)
{
    const pd_snapshot_conf *sc = &d->conf->snapshot;
    if (!sc->dir)
        return 0;
    char err[1024], fresh[1024];
    pd_snapshot *s = pd_snapshot_open_latest(sc->dir, on_snapshot_skipped, d, err, sizeof err);
    if (!s) {
        if (err[0]) {
            pd_log_error("%s", err);
            return -EIO;
        }
        pd_log_info("no snapshot in \"%s\": starting fresh", sc->dir);
        return 0;
    }
    if (pd_engine_load(d->engine, s, fresh, sizeof fresh, err, sizeof err) < 0) {
        pd_log_error("snapshot \"%s\" cannot be restored: %s", pd_snapshot_path(s), err);
        pd_snapshot_close(s);
        return -EINVAL;
    }
    FILE *f = pd_snapshot_section(s, OFFSETS_SECTION);
    if (f) {
        pd_bin_reader r;
        pd_bin_reader_init(&r, f);
        d->snap.restore_offsets = load_offsets(&r, err, sizeof err);
        fclose(f);
        if (!d->snap.restore_offsets) {
            /* without its offsets the state would resume at the group's commits and skip or
             * repeat events: refuse rather than guess */
            pd_log_error("snapshot \"%s\" cannot be restored: %s", pd_snapshot_path(s), err);
            pd_snapshot_close(s);
            return -EINVAL;
        }
    }
    if (pd_snapshot_fingerprint(s) != d->conf->fingerprint)
        pd_log_info("the configuration changed since snapshot \"%s\" was written: models whose "
                    "features or learner changed start fresh, the others continue",
                    pd_snapshot_path(s));
    d->snap.restored = true;
    pd_engine_stats es;
    pd_engine_get_stats(d->engine, &es);
    pd_logkv(PD_LOG_INFO, "restored snapshot",
             "path=%s events=%" PRIu64 " users=%" PRIu64 " pending=%" PRIu64 " partitions=%d",
             pd_snapshot_path(s), es.events, es.users, es.labels.pending,
             d->snap.restore_offsets ? d->snap.restore_offsets->cnt : 0);
    if (fresh[0])
        pd_log_warning("models starting fresh: %s", fresh);
    pd_snapshot_close(s);
    return 0;
}

/* ---- scheduling ---- */

void daemon_snapshot_assigning(pd_daemon *d, rd_kafka_topic_partition_list_t *parts)
{
    /* New partitions start from the group's committed offsets, which later commits move on.
     * Until a snapshot records where they started, a crash would restart from an older
     * snapshot that does not know them and skip, unlearned, what this run committed: so one
     * is written as soon as the assignment is in place, before any of their events. */
    if (parts->cnt > 0)
        d->snap.on_assign = true;
    if (!d->snap.restore_offsets)
        return;
    /* resume where the snapshot ended, so nothing it includes is learned twice; once per
     * partition: a later reassignment continues from what was processed since */
    for (int i = 0; i < parts->cnt; i++) {
        rd_kafka_topic_partition_t *p = &parts->elems[i];
        rd_kafka_topic_partition_t *saved =
            rd_kafka_topic_partition_list_find(d->snap.restore_offsets, p->topic, p->partition);
        if (!saved)
            continue;
        p->offset = saved->offset;
        pd_logkv(PD_LOG_INFO, "resuming partition from the snapshot",
                 "topic=%s partition=%" PRId32 " offset=%" PRId64, p->topic, p->partition,
                 p->offset);
        rd_kafka_topic_partition_list_del(d->snap.restore_offsets, p->topic, p->partition);
    }
}

void daemon_snapshot_after_poll(pd_daemon *d)
{
    if (!d->snap.on_assign)
        return;
    /* the batch is not processed yet: the snapshot holds where each new partition starts
     * (pd_kafka_in_positions) and none of its events */
    d->snap.on_assign = false;
    daemon_snapshot_write(d, "assignment", 0, NULL, 0);
}

static int64_t next_interval(const pd_daemon *d)
{
    int64_t ms = d->conf->snapshot.interval_ms;
    return ms > 0 ? pd_clock_mono_ms() + ms : INT64_MAX;
}

void daemon_snapshot_start(pd_daemon *d)
{
    d->snap.next_ms = next_interval(d);
}

void daemon_snapshot_interval_tick(pd_daemon *d, int64_t now_ms)
{
    if (now_ms < d->snap.next_ms)
        return;
    daemon_snapshot_write(d, "interval", 0, NULL, 0);
    d->snap.next_ms = next_interval(d);
}

void daemon_snapshot_forget_soon(pd_daemon *d)
{
    if (d->conf->snapshot.dir && d->snap.forget_ms == INT64_MAX)
        d->snap.forget_ms = pd_clock_mono_ms() + FORGET_SNAPSHOT_MS;
}

void daemon_snapshot_forget_tick(pd_daemon *d, int64_t now_ms)
{
    if (now_ms < d->snap.forget_ms)
        return;
    /* the deletions go to Redis before the snapshot that no longer replays them */
    if (daemon_flush_commit(d, false) == 0) {
        daemon_snapshot_write(d, "forget", 1, NULL, 0);
        d->snap.forget_ms = INT64_MAX;
    } else {
        d->snap.forget_ms = now_ms + FORGET_SNAPSHOT_MS;
    }
}

int daemon_snapshot_final(pd_daemon *d)
{
    /* a forget still due keeps only this snapshot: the older ones hold the user */
    return daemon_snapshot_write(d, "stop", d->snap.forget_ms != INT64_MAX ? 1 : 0, NULL, 0);
}

void daemon_snapshot_release(pd_daemon *d)
{
    if (d->snap.restore_offsets)
        rd_kafka_topic_partition_list_destroy(d->snap.restore_offsets);
    d->snap.restore_offsets = NULL;
}

/* Snapshot files: named sections of learned state (weights, optimizer state, user state,
 * pending examples, Kafka offsets) behind a header with magic, format version, config
 * fingerprint and a checksum. Written to a temp file, fsync'd, renamed and the directory
 * fsync'd, so a crash at any point leaves the previous snapshot intact; the last N are kept. */
#ifndef PD_SNAPSHOT_H
#define PD_SNAPSHOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* 2: every section is written field by field through common/binio.h, with its own version;
 * version 1 files (sections as raw memory) are refused with a message. */
#define PD_SNAPSHOT_VERSION 2

typedef struct pd_snapshot_writer pd_snapshot_writer;
typedef struct pd_snapshot pd_snapshot;

/* Starts a snapshot in dir (created if missing). Returns NULL and a message on failure. */
pd_snapshot_writer *pd_snapshot_writer_new(const char *dir, uint64_t fingerprint,
                                           int64_t created_ms, char *errbuf, size_t errlen);

/* Starts the next section. The returned stream belongs to the writer and is valid until the
 * next section or commit; write with fwrite/fprintf, never fclose it. NULL on failure. */
FILE *pd_snapshot_writer_section(pd_snapshot_writer *w, const char *name);

/* Finishes the file, makes it durable and visible atomically, then removes all but the
 * newest keep snapshots. Frees w either way. On success the new file's path is copied to
 * ret_path (may be NULL). */
int pd_snapshot_writer_commit(pd_snapshot_writer *w, int keep, char *ret_path, size_t path_len,
                              char *errbuf, size_t errlen);

/* The errno of the first failed write of a section (ENOSPC, EDQUOT, EIO...), 0 when none: a
 * section's stream only says that a write failed. */
int pd_snapshot_writer_errno(const pd_snapshot_writer *w);

/* Abandons the snapshot and removes its temp file. Accepts NULL. */
void pd_snapshot_writer_abort(pd_snapshot_writer *w);

/* Called for every snapshot that was passed over as damaged, newest first. */
typedef void (*pd_snapshot_skip_fn)(void *ctx, const char *path, const char *why);

/* Opens the newest snapshot in dir that passes every check, passing over damaged ones (skip
 * says which). NULL with errbuf empty when dir holds none (or does not exist); NULL with a
 * message on other errors, among them a snapshot of another format version: then the search
 * stops, as the older files have that version too. */
pd_snapshot *pd_snapshot_open_latest(const char *dir, pd_snapshot_skip_fn skip, void *ctx,
                                     char *errbuf, size_t errlen);

/* Opens one file, verifying magic, version, size and checksum. */
pd_snapshot *pd_snapshot_open(const char *path, char *errbuf, size_t errlen);
void pd_snapshot_close(pd_snapshot *s);

/* A read-only stream over a section (caller fcloses it), or NULL when absent. */
FILE *pd_snapshot_section(const pd_snapshot *s, const char *name);
size_t pd_snapshot_section_count(const pd_snapshot *s);
const char *pd_snapshot_section_name(const pd_snapshot *s, size_t i);

uint64_t pd_snapshot_fingerprint(const pd_snapshot *s);
int64_t pd_snapshot_created_ms(const pd_snapshot *s);
const char *pd_snapshot_path(const pd_snapshot *s);

#endif

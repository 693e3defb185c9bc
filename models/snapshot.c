/* Snapshot file layout (little-endian):
 *   header, 64 bytes: magic "PDSNAP\r\n", u32 version, u32 section count, u64 fingerprint,
 *                     i64 created_ms, u64 payload bytes, u64 index offset (from payload start),
 *                     u64 XXH3-64 of the payload, u64 XXH3-64 of the header's first 56 bytes
 *   payload:          the sections' bytes one after another, then the index:
 *                     per section u16 name length, name, u64 offset, u64 length
 * Sections are streamed through a stdio cookie that hashes and counts as it writes, so even a
 * multi-gigabyte weight table is never held twice in memory. Files are named
 * snapshot-<20-digit sequence>.pds, so name order is age order. */
#include "models/snapshot.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#define HEADER_BYTES 64
#define MAX_SECTIONS 4096
#define MAX_NAME     255

static const char magic[8] = {'P', 'D', 'S', 'N', 'A', 'P', '\r', '\n'};

typedef struct section {
    char *name;
    uint64_t offset, length;
} section;

struct pd_snapshot_writer {
    char *dir;
    char *tmp_path;
    int fd;
    FILE *out; /* the cookie stream */
    XXH3_state_t *hash;
    uint64_t written; /* payload bytes so far */
    int io_error;
    uint64_t fingerprint;
    int64_t created_ms;
    section *sections;
    size_t n_sections;
};

struct pd_snapshot {
    char *path;
    void *map;
    size_t size;
    const unsigned char *payload;
    uint64_t fingerprint;
    int64_t created_ms;
    section *sections;
    size_t n_sections;
};

static void put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_u64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint32_t get_u32(const unsigned char *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static int write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* ---- writing ---- */

static ssize_t cookie_write(void *cookie, const char *buf, size_t len)
{
    pd_snapshot_writer *w = cookie;
    int r = write_all(w->fd, buf, len);
    if (r < 0) {
        w->io_error = -r;
        errno = -r;
        return -1;
    }
    XXH3_64bits_update(w->hash, buf, len);
    w->written += len;
    return (ssize_t)len;
}

static int mkdir_p(const char *dir)
{
    char path[PATH_MAX];
    size_t n = strlen(dir);
    if (n == 0 || n >= sizeof path)
        return -ENAMETOOLONG;
    memcpy(path, dir, n + 1);
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(path, 0700) < 0 && errno != EEXIST)
            return -errno;
        *p = '/';
    }
    if (mkdir(path, 0700) < 0 && errno != EEXIST)
        return -errno;
    return 0;
}

/* The sequence number after the newest snapshot in dir (1 when none). */
static uint64_t next_sequence(const char *dir)
{
    uint64_t max = 0;
    DIR *d = opendir(dir);
    if (!d)
        return 1;
    struct dirent *e;
    while ((e = readdir(d))) {
        unsigned long long seq;
        char tail[8];
        if (sscanf(e->d_name, "snapshot-%20llu.%7s", &seq, tail) == 2 && seq > max)
            max = seq;
    }
    closedir(d);
    return max + 1;
}

pd_snapshot_writer *pd_snapshot_writer_new(const char *dir, uint64_t fingerprint,
                                           int64_t created_ms, char *errbuf, size_t errlen)
{
    int r = mkdir_p(dir);
    if (r < 0) {
        snprintf(errbuf, errlen, "cannot create snapshot directory \"%s\": %s", dir, strerror(-r));
        return NULL;
    }
    pd_snapshot_writer *w = calloc(1, sizeof *w);
    if (!w)
        goto out_nomem;
    w->fd = -1;
    w->fingerprint = fingerprint;
    w->created_ms = created_ms;
    w->dir = strdup(dir);
    w->hash = XXH3_createState();
    if (!w->dir || !w->hash)
        goto out_free;
    if (asprintf(&w->tmp_path, "%s/snapshot-%020" PRIu64 ".tmp", dir, next_sequence(dir)) < 0) {
        w->tmp_path = NULL;
        goto out_free;
    }
    w->fd = open(w->tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (w->fd < 0) {
        snprintf(errbuf, errlen, "cannot create snapshot \"%s\": %s", w->tmp_path, strerror(errno));
        pd_snapshot_writer_abort(w);
        return NULL;
    }
    unsigned char header[HEADER_BYTES] = {0}; /* the real header is written at commit */
    if ((r = write_all(w->fd, header, sizeof header)) < 0) {
        snprintf(errbuf, errlen, "cannot write snapshot \"%s\": %s", w->tmp_path, strerror(-r));
        pd_snapshot_writer_abort(w);
        return NULL;
    }
    XXH3_64bits_reset(w->hash);
    cookie_io_functions_t io = {.write = cookie_write};
    w->out = fopencookie(w, "w", io);
    if (!w->out)
        goto out_free;
    /* large buffer: sections are written in many small pieces */
    setvbuf(w->out, NULL, _IOFBF, 1 << 20);
    return w;

out_free:
    pd_snapshot_writer_abort(w);
out_nomem:
    snprintf(errbuf, errlen, "out of memory starting a snapshot");
    return NULL;
}

FILE *pd_snapshot_writer_section(pd_snapshot_writer *w, const char *name)
{
    size_t len = strlen(name);
    if (len == 0 || len > MAX_NAME || w->n_sections >= MAX_SECTIONS)
        return NULL;
    if (fflush(w->out) != 0)
        return NULL;
    section *ns = realloc(w->sections, (w->n_sections + 1) * sizeof *ns);
    if (!ns)
        return NULL;
    w->sections = ns;
    section *s = &w->sections[w->n_sections];
    if (!(s->name = strdup(name)))
        return NULL;
    s->offset = w->written;
    s->length = 0;
    w->n_sections++;
    return w->out;
}

static void fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

static int cmp_names_desc(const void *a, const void *b)
{
    return strcmp(*(char *const *)b, *(char *const *)a);
}

static bool has_suffix(const char *name, const char *suffix)
{
    size_t n = strlen(name), k = strlen(suffix);
    return strncmp(name, "snapshot-", 9) == 0 && n >= 9 + k && strcmp(name + n - k, suffix) == 0;
}

/* The snapshot files (*.pds) of dir, newest first; removes temp files left by crashed writers
 * when clean_tmp. Returns how many (names are the caller's to free), 0 when none or on error. */
static size_t list_snapshots(const char *dir, bool clean_tmp, char ***ret_names)
{
    DIR *d = opendir(dir);
    *ret_names = NULL;
    if (!d)
        return 0;
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (clean_tmp && has_suffix(e->d_name, ".tmp")) {
            char *path;
            if (asprintf(&path, "%s/%s", dir, e->d_name) >= 0) {
                unlink(path);
                free(path);
            }
            continue;
        }
        if (!has_suffix(e->d_name, ".pds"))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            char **nn = realloc(names, cap * sizeof *nn);
            if (!nn)
                break;
            names = nn;
        }
        if (!(names[n] = strdup(e->d_name)))
            break;
        n++;
    }
    closedir(d);
    if (names)
        qsort(names, n, sizeof *names, cmp_names_desc);
    *ret_names = names;
    return n;
}

/* Removes all but the newest keep snapshots, and temp files left by crashed writers (the
 * caller's own is renamed by then). */
static void prune(const char *dir, int keep)
{
    char **names;
    size_t n = list_snapshots(dir, true, &names);
    for (size_t i = 0; i < n; i++) {
        if ((int)i >= keep) {
            char *path;
            if (asprintf(&path, "%s/%s", dir, names[i]) >= 0) {
                unlink(path);
                free(path);
            }
        }
        free(names[i]);
    }
    free(names);
}

int pd_snapshot_writer_commit(pd_snapshot_writer *w, int keep, char *ret_path, size_t path_len,
                              char *errbuf, size_t errlen)
{
    char *final_path = NULL;
    int r = 0;
    if (fflush(w->out) != 0 || w->io_error) {
        r = -(w->io_error ? w->io_error : EIO);
        goto out_io;
    }
    for (size_t i = 0; i < w->n_sections; i++) {
        uint64_t end = i + 1 < w->n_sections ? w->sections[i + 1].offset : w->written;
        w->sections[i].length = end - w->sections[i].offset;
    }
    uint64_t index_offset = w->written;
    for (size_t i = 0; i < w->n_sections; i++) {
        unsigned char rec[2 + MAX_NAME + 16];
        size_t nl = strlen(w->sections[i].name);
        rec[0] = (unsigned char)nl;
        rec[1] = (unsigned char)(nl >> 8);
        memcpy(rec + 2, w->sections[i].name, nl);
        put_u64(rec + 2 + nl, w->sections[i].offset);
        put_u64(rec + 2 + nl + 8, w->sections[i].length);
        if (fwrite(rec, 1, 2 + nl + 16, w->out) != 2 + nl + 16) {
            r = -EIO;
            goto out_io;
        }
    }
    if (fflush(w->out) != 0 || w->io_error) {
        r = -(w->io_error ? w->io_error : EIO);
        goto out_io;
    }
    unsigned char header[HEADER_BYTES];
    memcpy(header, magic, 8);
    put_u32(header + 8, PD_SNAPSHOT_VERSION);
    put_u32(header + 12, (uint32_t)w->n_sections);
    put_u64(header + 16, w->fingerprint);
    put_u64(header + 24, (uint64_t)w->created_ms);
    put_u64(header + 32, w->written);
    put_u64(header + 40, index_offset);
    put_u64(header + 48, XXH3_64bits_digest(w->hash));
    put_u64(header + 56, XXH3_64bits(header, 56));
    if (pwrite(w->fd, header, sizeof header, 0) != (ssize_t)sizeof header) {
        r = errno ? -errno : -EIO;
        goto out_io;
    }
    if (fsync(w->fd) < 0) {
        r = -errno;
        goto out_io;
    }
    size_t tl = strlen(w->tmp_path);
    final_path = strdup(w->tmp_path);
    if (!final_path) {
        r = -ENOMEM;
        goto out_io;
    }
    memcpy(final_path + tl - 4, ".pds", 4);
    if (rename(w->tmp_path, final_path) < 0) {
        r = -errno;
        goto out_io;
    }
    fsync_dir(w->dir);
    if (ret_path && path_len)
        snprintf(ret_path, path_len, "%s", final_path);
    prune(w->dir, keep > 0 ? keep : 1);
    free(final_path);
    free(w->tmp_path);
    w->tmp_path = NULL; /* nothing left to remove */
    pd_snapshot_writer_abort(w);
    return 0;

out_io:
    snprintf(errbuf, errlen, "cannot write snapshot \"%s\": %s", w->tmp_path, strerror(-r));
    free(final_path);
    pd_snapshot_writer_abort(w);
    return r;
}

int pd_snapshot_writer_errno(const pd_snapshot_writer *w)
{
    return w->io_error;
}

void pd_snapshot_writer_abort(pd_snapshot_writer *w)
{
    if (!w)
        return;
    if (w->out) {
        w->io_error = 0;
        fclose(w->out);
    }
    if (w->fd >= 0)
        close(w->fd);
    if (w->tmp_path)
        unlink(w->tmp_path);
    for (size_t i = 0; i < w->n_sections; i++)
        free(w->sections[i].name);
    free(w->sections);
    free(w->tmp_path);
    free(w->dir);
    if (w->hash)
        XXH3_freeState(w->hash);
    free(w);
}

/* ---- reading ---- */

/* Why a file could not be used: damaged files are passed over for an older snapshot; one of
 * another format version stops the search, since every older file has it too and starting
 * fresh would silently drop what they hold. */
typedef enum open_status { OPEN_OK, OPEN_DAMAGED, OPEN_VERSION, OPEN_FAILED } open_status;

static pd_snapshot *snapshot_open(const char *path, open_status *ret_status, char *errbuf,
                                  size_t errlen);

pd_snapshot *pd_snapshot_open(const char *path, char *errbuf, size_t errlen)
{
    open_status st;
    return snapshot_open(path, &st, errbuf, errlen);
}

static pd_snapshot *snapshot_open(const char *path, open_status *ret_status, char *errbuf,
                                  size_t errlen)
{
    const char *why = NULL;
    *ret_status = OPEN_FAILED;
    pd_snapshot *s = calloc(1, sizeof *s);
    if (!s || !(s->path = strdup(path))) {
        free(s);
        snprintf(errbuf, errlen, "out of memory opening snapshot \"%s\"", path);
        return NULL;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        snprintf(errbuf, errlen, "cannot open snapshot \"%s\": %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        pd_snapshot_close(s);
        return NULL;
    }
    if ((size_t)st.st_size < HEADER_BYTES) {
        close(fd);
        why = "truncated: shorter than its header";
        goto out_bad;
    }
    s->size = (size_t)st.st_size;
    s->map = mmap(NULL, s->size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (s->map == MAP_FAILED) {
        s->map = NULL;
        snprintf(errbuf, errlen, "cannot map snapshot \"%s\": %s", path, strerror(errno));
        pd_snapshot_close(s);
        return NULL;
    }
    const unsigned char *h = s->map;
    if (memcmp(h, magic, 8) != 0) {
        why = "not a propensityd snapshot (bad magic)";
        goto out_bad;
    }
    if (get_u64(h + 56) != XXH3_64bits(h, 56)) {
        why = "header checksum mismatch";
        goto out_bad;
    }
    uint32_t version = get_u32(h + 8);
    if (version != PD_SNAPSHOT_VERSION) {
        *ret_status = OPEN_VERSION;
        snprintf(errbuf, errlen,
                 "snapshot \"%s\" has format version %u; this propensityd reads version %u%s",
                 path, version, PD_SNAPSHOT_VERSION,
                 version < PD_SNAPSHOT_VERSION
                     ? " (version 1 wrote sections as raw memory, which a newer build cannot "
                       "read safely). To keep what it learned, run the propensityd that wrote it; "
                       "to start fresh from the committed Kafka offsets, move the snapshot "
                       "directory away"
                     : ": it was written by a newer propensityd");
        pd_snapshot_close(s);
        return NULL;
    }
    uint32_t n_sections = get_u32(h + 12);
    uint64_t payload = get_u64(h + 32), index_offset = get_u64(h + 40);
    if (payload != s->size - HEADER_BYTES) {
        why = payload > s->size - HEADER_BYTES ? "truncated: shorter than its header says"
                                               : "longer than its header says";
        goto out_bad;
    }
    s->payload = h + HEADER_BYTES;
    if (XXH3_64bits(s->payload, payload) != get_u64(h + 48)) {
        why = "checksum mismatch: the file is corrupted";
        goto out_bad;
    }
    s->fingerprint = get_u64(h + 16);
    s->created_ms = (int64_t)get_u64(h + 24);
    if (n_sections > MAX_SECTIONS || index_offset > payload) {
        why = "malformed section index";
        goto out_bad;
    }
    s->sections = calloc(n_sections ? n_sections : 1, sizeof *s->sections);
    if (!s->sections) {
        snprintf(errbuf, errlen, "out of memory opening snapshot \"%s\"", path);
        pd_snapshot_close(s);
        return NULL;
    }
    const unsigned char *p = s->payload + index_offset, *end = s->payload + payload;
    for (uint32_t i = 0; i < n_sections; i++) {
        if (end - p < 2) {
            why = "malformed section index";
            goto out_bad;
        }
        size_t nl = (size_t)p[0] | ((size_t)p[1] << 8);
        if (nl == 0 || nl > MAX_NAME || (size_t)(end - p) < 2 + nl + 16) {
            why = "malformed section index";
            goto out_bad;
        }
        section *sec = &s->sections[i];
        sec->name = strndup((const char *)p + 2, nl);
        sec->offset = get_u64(p + 2 + nl);
        sec->length = get_u64(p + 2 + nl + 8);
        s->n_sections = i + 1;
        if (!sec->name || sec->offset > index_offset || sec->length > index_offset - sec->offset) {
            why = "malformed section index";
            goto out_bad;
        }
        p += 2 + nl + 16;
    }
    *ret_status = OPEN_OK;
    return s;

out_bad:
    *ret_status = OPEN_DAMAGED;
    snprintf(errbuf, errlen, "snapshot \"%s\" is unusable: %s", path, why);
    pd_snapshot_close(s);
    return NULL;
}

void pd_snapshot_close(pd_snapshot *s)
{
    if (!s)
        return;
    if (s->map)
        munmap(s->map, s->size);
    for (size_t i = 0; i < s->n_sections; i++)
        free(s->sections[i].name);
    free(s->sections);
    free(s->path);
    free(s);
}

pd_snapshot *pd_snapshot_open_latest(const char *dir, pd_snapshot_skip_fn skip, void *ctx,
                                     char *errbuf, size_t errlen)
{
    if (errlen)
        errbuf[0] = '\0';
    struct stat st;
    if (stat(dir, &st) < 0) {
        if (errno != ENOENT)
            snprintf(errbuf, errlen, "cannot read snapshot directory \"%s\": %s", dir,
                     strerror(errno));
        return NULL;
    }
    char **names;
    size_t n = list_snapshots(dir, false, &names);
    pd_snapshot *found = NULL;
    bool stop = false;
    for (size_t i = 0; i < n; i++) {
        char *path;
        if (!found && !stop && asprintf(&path, "%s/%s", dir, names[i]) >= 0) {
            char why[1024];
            open_status status;
            found = snapshot_open(path, &status, why, sizeof why);
            if (status == OPEN_VERSION) {
                snprintf(errbuf, errlen, "%s", why);
                stop = true;
            } else if (!found && skip) {
                skip(ctx, path, why);
            }
            free(path);
        }
        free(names[i]);
    }
    free(names);
    return found;
}

static const section *find_section(const pd_snapshot *s, const char *name)
{
    for (size_t i = 0; i < s->n_sections; i++)
        if (strcmp(s->sections[i].name, name) == 0)
            return &s->sections[i];
    return NULL;
}

FILE *pd_snapshot_section(const pd_snapshot *s, const char *name)
{
    const section *sec = find_section(s, name);
    if (!sec)
        return NULL;
    return fmemopen((void *)(s->payload + sec->offset), sec->length, "r");
}

size_t pd_snapshot_section_count(const pd_snapshot *s)
{
    return s->n_sections;
}

const char *pd_snapshot_section_name(const pd_snapshot *s, size_t i)
{
    return s->sections[i].name;
}

uint64_t pd_snapshot_fingerprint(const pd_snapshot *s)
{
    return s->fingerprint;
}

int64_t pd_snapshot_created_ms(const pd_snapshot *s)
{
    return s->created_ms;
}

const char *pd_snapshot_path(const pd_snapshot *s)
{
    return s->path;
}

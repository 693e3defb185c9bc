/* The one binary encoding of snapshot sections: fixed-width little-endian fields written one
 * by one (never a struct as it lies in memory), strings with a length in front, and errors
 * that stick, so a section is written or read straight through and checked once at the end
 * (like librdkafka's rd_kafka_buf_write_i32 / read). Every section starts with a version
 * (pd_bin_put_version), so a changed layout is refused with a message instead of misread.
 * Reader and writer are value types over a stdio stream the caller owns. */
#ifndef PD_BINIO_H
#define PD_BINIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct pd_bin_writer {
    FILE *f;
    int err; /* 0, or the first failure (-EIO): later writes do nothing */
} pd_bin_writer;

typedef struct pd_bin_reader {
    FILE *f;
    int err; /* 0, or the first failure (-EIO truncated, -EINVAL malformed) */
    char why[160]; /* what failed, for the caller's message */
} pd_bin_reader;

void pd_bin_writer_init(pd_bin_writer *w, FILE *f);
void pd_bin_reader_init(pd_bin_reader *r, FILE *f);

void pd_bin_put_u8(pd_bin_writer *w, uint8_t v);
void pd_bin_put_u16(pd_bin_writer *w, uint16_t v);
void pd_bin_put_u32(pd_bin_writer *w, uint32_t v);
void pd_bin_put_u64(pd_bin_writer *w, uint64_t v);
void pd_bin_put_i32(pd_bin_writer *w, int32_t v);
void pd_bin_put_i64(pd_bin_writer *w, int64_t v);
void pd_bin_put_f32(pd_bin_writer *w, float v);
void pd_bin_put_f64(pd_bin_writer *w, double v);
void pd_bin_put_bool(pd_bin_writer *w, bool v);
/* Raw bytes (already in their final encoding). */
void pd_bin_put_bytes(pd_bin_writer *w, const void *p, size_t n);
/* u32 length, then the bytes. */
void pd_bin_put_str(pd_bin_writer *w, const char *s, size_t len);
/* Arrays of n values, each little-endian: one write on a little-endian host. */
void pd_bin_put_f32_array(pd_bin_writer *w, const float *a, size_t n);
void pd_bin_put_u16_array(pd_bin_writer *w, const uint16_t *a, size_t n);
void pd_bin_put_u32_array(pd_bin_writer *w, const uint32_t *a, size_t n);
void pd_bin_put_u64_array(pd_bin_writer *w, const uint64_t *a, size_t n);
/* A section's first field: its format version. */
void pd_bin_put_version(pd_bin_writer *w, uint32_t version);

/* Each getter returns 0 (false for bool) once the reader has failed. */
uint8_t pd_bin_get_u8(pd_bin_reader *r);
uint16_t pd_bin_get_u16(pd_bin_reader *r);
uint32_t pd_bin_get_u32(pd_bin_reader *r);
uint64_t pd_bin_get_u64(pd_bin_reader *r);
int32_t pd_bin_get_i32(pd_bin_reader *r);
int64_t pd_bin_get_i64(pd_bin_reader *r);
float pd_bin_get_f32(pd_bin_reader *r);
double pd_bin_get_f64(pd_bin_reader *r);
bool pd_bin_get_bool(pd_bin_reader *r);
void pd_bin_get_bytes(pd_bin_reader *r, void *p, size_t n);
/* Reads a string written by pd_bin_put_str into buf (NUL-terminated); a string of cap bytes or
 * more fails the reader. Returns its length. */
size_t pd_bin_get_str(pd_bin_reader *r, char *buf, size_t cap);
/* A string of at most max bytes into a new allocation (NUL-terminated), or NULL on failure. */
char *pd_bin_get_strdup(pd_bin_reader *r, size_t max, size_t *ret_len);
void pd_bin_get_f32_array(pd_bin_reader *r, float *a, size_t n);
void pd_bin_get_u16_array(pd_bin_reader *r, uint16_t *a, size_t n);
void pd_bin_get_u32_array(pd_bin_reader *r, uint32_t *a, size_t n);
void pd_bin_get_u64_array(pd_bin_reader *r, uint64_t *a, size_t n);
/* Reads a section's version: fails the reader (-EINVAL, with a message naming the section)
 * unless 1 <= version <= newest. Returns it (0 on failure). */
uint32_t pd_bin_get_version(pd_bin_reader *r, const char *section, uint32_t newest);
/* Fails the reader as malformed, with a reason (kept only if it is the first failure). */
void pd_bin_fail(pd_bin_reader *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Whether the reader is at the end of its stream (no byte left). */
bool pd_bin_at_end(pd_bin_reader *r);

#endif

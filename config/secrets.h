/* Secrets in the config, internal to config/: which keys count as secrets, reading *_file
 * references and any file that may quote one (the config itself), and freeing them without
 * leaving them in freed memory. */
#ifndef PD_CONFIG_SECRETS_H
#define PD_CONFIG_SECRETS_H

#include <stdbool.h>
#include <stddef.h>

#include "config/loader.h"

#define SECRET_MAX_BYTES (64 << 10)

/* Frees a string that may hold a secret, wiping it first; accepts NULL. */
void secret_free(char *s);

/* Whether a property name looks like a secret ("password", "secret"): its value may not be
 * written in the file. */
bool secret_key_name(const char *key);

/* Reads all of fd into a new buffer with room for a NUL, refusing more than max bytes
 * (-EFBIG). Returns 0 or -errno; on failure nothing is allocated and nothing read is left in
 * freed memory. */
int secret_read_bounded(int fd, size_t max, char **ret_buf, size_t *ret_len);

/* Reads a *_file secret: the whole file, one trailing newline stripped. Relative paths start
 * at the config file's directory. Returns 0 or -errno, the errno also in *ret_errno (left
 * alone when out of memory, which marks the load instead). */
int secret_read_file(loader *ld, const char *file, char **ret, int *ret_errno);

/* "cannot read "FILE": reason" at the node, for a secret_read_file() that failed with err. */
void secret_report_unreadable(loader *ld, ynode *at, const char *kp, const char *file, int err);

#endif

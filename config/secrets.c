/* A secret never enters a message: what is reported is the file name or the key, and every
 * buffer that held one is wiped before it is freed. */
#include "config/secrets.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void secret_free(char *s)
{
    if (!s)
        return;
    explicit_bzero(s, strlen(s));
    free(s);
}

bool secret_key_name(const char *key)
{
    return strcasestr(key, "password") || strcasestr(key, "secret");
}

int secret_read_bounded(int fd, size_t max, char **ret_buf, size_t *ret_len)
{
    char *buf = malloc(max + 1);
    size_t len = 0;
    ssize_t got;

    if (!buf)
        return -ENOMEM;
    do {
        got = read(fd, buf + len, max + 1 - len);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            int err = errno;
            explicit_bzero(buf, len); /* it may be a secret */
            free(buf);
            return -err;
        }
        len += (size_t)got;
    } while (got > 0 && len <= max);
    if (len > max) {
        explicit_bzero(buf, max + 1);
        free(buf);
        return -EFBIG;
    }
    *ret_buf = buf;
    *ret_len = len;
    return 0;
}

/* Relative to the config file, so a unit file's working directory does not matter. */
int secret_read_file(loader *ld, const char *file, char **ret, int *ret_errno)
{
    char *full = NULL, *buf = NULL;
    const char *open_path = file;
    size_t len = 0;
    int fd, err = 0;

    if (file[0] != '/' && ld->base_dir) {
        if (asprintf(&full, "%s/%s", ld->base_dir, file) < 0) {
            ld->oom = true;
            return -ENOMEM;
        }
        open_path = full;
    }
    fd = open(open_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        err = errno;
        goto out_free_path;
    }
    err = -secret_read_bounded(fd, SECRET_MAX_BYTES, &buf, &len);
    if (err)
        goto out_close;
    if (len && buf[len - 1] == '\n')
        len--;
    if (len && buf[len - 1] == '\r')
        len--;
    buf[len] = '\0';

out_close:
    close(fd);
out_free_path:
    free(full);
    if (err) { /* secret_read_bounded() left nothing allocated */
        *ret_errno = err;
        return -err;
    }
    *ret = buf;
    return 0;
}

void secret_report_unreadable(loader *ld, ynode *at, const char *kp, const char *file, int err)
{
    char ebuf[128];

    ld_report(ld, at, kp, "cannot read \"%s\": %s", file,
              err == EFBIG ? "larger than 64KiB" : ld_errno_text(err, ebuf, sizeof(ebuf)));
}

/* Errors travel up as a message in the caller's buffer (librdkafka's errstr, hiredis' errstr):
 * libraries never log, the daemon logs each message once. */
#ifndef PD_ERROR_H
#define PD_ERROR_H

#include <stddef.h>

/* Formats into errbuf (truncating); accepts a NULL or empty buffer. */
void pd_set_error(char *errbuf, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif

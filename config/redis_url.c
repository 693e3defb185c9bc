/* Only what hiredis can connect to is accepted: one host or socket, a database number, and
 * ACL credentials; TLS (rediss://) and query options are refused rather than ignored. */
#include "config/redis_url.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/secrets.h"

void redis_url_release(redis_url *u)
{
    free(u->host);
    free(u->unix_path);
    free(u->user);
    secret_free(u->password);
    *u = (redis_url){0};
}

static int hex_value(char c)
{
    if (isdigit((unsigned char)c))
        return c - '0';
    c = (char)tolower((unsigned char)c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* %XX-decodes s[0..len); NULL on a bad escape or out of memory (*bad tells which). */
static char *percent_decode(const char *s, size_t len, bool *bad)
{
    char *out = malloc(len + 1);
    size_t o = 0;

    if (!out)
        return NULL;
    for (size_t i = 0; i < len; i++) {
        if (s[i] != '%') {
            out[o++] = s[i];
            continue;
        }
        int hi = i + 2 < len ? hex_value(s[i + 1]) : -1;
        int lo = i + 2 < len ? hex_value(s[i + 2]) : -1;

        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
            *bad = true;
            explicit_bzero(out, len + 1);
            free(out);
            return NULL;
        }
        out[o++] = (char)(hi * 16 + lo);
        i += 2;
    }
    out[o] = '\0';
    return out;
}

/* Up to max_digits decimal digits, nothing else, within lo..hi. */
static bool parse_number(const char *s, size_t len, size_t max_digits, int64_t lo, int64_t hi,
                         int *ret)
{
    int64_t v = 0;

    if (!len || len > max_digits)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (!isdigit((unsigned char)s[i]))
            return false;
        v = v * 10 + (s[i] - '0');
    }
    if (v < lo || v > hi)
        return false;
    *ret = (int)v;
    return true;
}

static bool parse_port(const char *s, size_t len, int *ret)
{
    return parse_number(s, len, 5, 1, 65535, ret);
}

static bool parse_db(const char *s, size_t len, int *ret)
{
    return parse_number(s, len, 9, 0, 999999999, ret);
}

const char *redis_url_split_host_port(const char *s, size_t len, char **ret_host, int *port)
{
    const char *host = s, *colon;
    size_t host_len;

    if (len && s[0] == '[') {
        const char *close = memchr(s, ']', len);

        if (!close || close == s + 1)
            return "bad IPv6 address";
        host = s + 1;
        host_len = (size_t)(close - host);
        colon = close + 1 < s + len ? close + 1 : NULL;
        if (colon && *colon != ':')
            return "bad IPv6 address";
    } else {
        colon = memchr(s, ':', len);
        host_len = colon ? (size_t)(colon - s) : len;
    }
    if (!host_len)
        return "missing host";
    if (colon && !parse_port(colon + 1, (size_t)(s + len - colon - 1), port))
        return "port must be a number from 1 to 65535";
    *ret_host = strndup(host, host_len);
    return *ret_host ? NULL : "out of memory";
}

static const char *parse_unix(const char *url, redis_url *u)
{
    const char *path = url + 7, *q = strchr(path, '?');
    size_t path_len = q ? (size_t)(q - path) : strlen(path);

    if (path[0] != '/' || path_len < 2)
        return "unix socket path must be absolute";
    if (q) {
        if (strncmp(q, "?db=", 4) || !parse_db(q + 4, strlen(q + 4), &u->db))
            return "the only query is ?db=N";
        u->has_db = true;
    }
    u->port = 0;
    u->unix_path = strndup(path, path_len);
    return u->unix_path ? NULL : "out of memory";
}

/* user[:password] in url[auth_at .. at) */
static const char *parse_credentials(const char *url, const char *auth, const char *at,
                                     redis_url *u)
{
    const char *colon = memchr(auth, ':', (size_t)(at - auth));
    size_t user_len = colon ? (size_t)(colon - auth) : (size_t)(at - auth);
    bool bad = false;

    if (user_len) {
        u->user = percent_decode(auth, user_len, &bad);
        if (!u->user)
            return bad ? "bad %-escape in the user name" : "out of memory";
    }
    if (colon && at > colon + 1) {
        u->pw_at = (size_t)(colon + 1 - url);
        u->pw_len = (size_t)(at - colon - 1);
        u->password = percent_decode(colon + 1, u->pw_len, &bad);
        if (!u->password)
            return bad ? "bad %-escape in the password" : "out of memory";
    }
    return NULL;
}

const char *redis_url_parse(const char *url, redis_url *u)
{
    const char *err;

    u->port = REDIS_URL_DEFAULT_PORT;
    if (!strncmp(url, "unix://", 7))
        return parse_unix(url, u);
    if (!strncmp(url, "rediss://", 9))
        return "TLS (rediss://) is not supported (Debian 12's hiredis, 0.14, has none): "
               "reach the server through a local TLS tunnel (config/README.md)";
    if (strncmp(url, "redis://", 8))
        return "unknown scheme";
    const char *auth = url + 8, *at = NULL, *slash, *end = auth + strlen(auth);

    /* The last '@' ends the credentials: an unencoded '@' in a password still parses. */
    for (const char *p = auth; *p; p++)
        if (*p == '@')
            at = p;
    const char *hostport = at ? at + 1 : auth;
    slash = strchr(hostport, '/');
    if (strchr(hostport, '?'))
        return "query parameters are not supported";
    if (at && (err = parse_credentials(url, auth, at, u)))
        return err;
    err = redis_url_split_host_port(hostport,
                                    slash ? (size_t)(slash - hostport) : (size_t)(end - hostport),
                                    &u->host, &u->port);
    if (err)
        return err;
    if (slash && slash[1]) {
        if (!parse_db(slash + 1, strlen(slash + 1), &u->db))
            return "the path must be a database number";
        u->has_db = true;
    }
    return NULL;
}

char *redis_url_redact(const char *url, const redis_url *u)
{
    char *s;

    if (!u->password)
        return strdup(url);
    /* the url is the scalar of a config file, far below INT_MAX */
    if (asprintf(&s, "%.*s****%s", (int)u->pw_at, url, url + u->pw_at + u->pw_len) < 0)
        return NULL;
    return s;
}

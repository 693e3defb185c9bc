/* The redis.url parser, internal to config/ and unit-tested on its own: redis:// and unix://
 * URLs into their parts, and the url with its password blanked for printing. It knows nothing
 * of the loader; its errors say what is wrong without quoting the url, which may hold a
 * password. */
#ifndef PD_CONFIG_REDIS_URL_H
#define PD_CONFIG_REDIS_URL_H

#include <stdbool.h>
#include <stddef.h>

/* What the language accepts, for "(expected ...)" in messages. */
#define REDIS_URL_FORMS        "redis://[user[:password]@]host[:port][/db] or unix:///path[?db=N]"
#define REDIS_URL_DEFAULT_PORT 6379

typedef struct redis_url {
    char *host;      /* NULL for unix sockets */
    char *unix_path; /* NULL for tcp */
    char *user;      /* %-decoded; NULL when not given */
    char *password;  /* %-decoded; NULL when not given */
    int port;        /* 0 for unix sockets */
    int db;
    bool has_db;          /* the url names a database */
    size_t pw_at, pw_len; /* where the password sits in the url text, for redaction */
} redis_url;

/* Parses url into *u, which starts zeroed. Returns NULL, or what is wrong ("unknown scheme");
 * either way the caller releases u. */
const char *redis_url_parse(const char *url, redis_url *u);

/* Frees the parts (the password wiped) and leaves u zeroed. */
void redis_url_release(redis_url *u);

/* url with the password parsed into u replaced by "****", so printing it is safe; a copy of url
 * when it holds none. NULL when out of memory. */
char *redis_url_redact(const char *url, const redis_url *u);

/* Splits s[0..len) written as "host", "host:port", "[v6]" or "[v6]:port" (a new string in
 * *ret_host); *port keeps its value when no port is written. Returns NULL or what is wrong.
 * Also what daemon.http and tcp:// endpoints are checked with. */
const char *redis_url_split_host_port(const char *s, size_t len, char **ret_host, int *port);

#endif

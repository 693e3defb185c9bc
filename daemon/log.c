/* The log level and the rate limiter are this module's private state: with the read-only
 * config, the only process-wide state the house style allows. Only the main thread logs. */
#include "daemon/log.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"

#define RL_SLOT_BITS 6
#define RL_SLOTS     (1u << RL_SLOT_BITS)
#define RL_PROBES    4 /* slots tried per site, so two busy sites rarely evict each other */

/* A call site is __FILE__ and __LINE__ of the call, compared by the name's address and the
 * line: two calls match only when they are the same line of the same file. */
typedef struct rl_slot {
    const char *file; /* NULL: free */
    int line;
    int64_t window;
    unsigned count;
    unsigned suppressed;
} rl_slot;

static struct {
    pd_log_level level;
    bool journal;
    rl_slot rl[RL_SLOTS];
} log_state = {.level = PD_LOG_INFO};

static const int syslog_prio[] = {7, 6, 4, 3};

void pd_log_init(void)
{
    /* JOURNAL_STREAM holds "dev:ino" of the journal socket when stderr is connected to it */
    const char *js = getenv("JOURNAL_STREAM");
    struct stat st;
    unsigned long long dev, ino;
    if (js && sscanf(js, "%llu:%llu", &dev, &ino) == 2 && fstat(STDERR_FILENO, &st) == 0 &&
        (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino)
        log_state.journal = true;
}

void pd_log_set_level(pd_log_level level)
{
    log_state.level = level;
}

pd_log_level pd_log_get_level(void)
{
    return log_state.level;
}

/* The slot of a call site: its own if it has one among its probes, else a free one or one
 * whose window has passed, else (all busy now) its home slot, which it takes over. */
static rl_slot *rate_slot(const char *file, int line, int64_t window)
{
    /* Fibonacci hashing: the top bits of the product depend on every bit of the key */
    uint64_t h =
        ((uint64_t)(uintptr_t)file ^ (uint64_t)(unsigned)line) * UINT64_C(0x9e3779b97f4a7c15);
    size_t home = (size_t)(h >> (64 - RL_SLOT_BITS));
    rl_slot *spare = NULL;
    for (size_t i = 0; i < RL_PROBES; i++) {
        rl_slot *s = &log_state.rl[(home + i) % RL_SLOTS];
        if (s->file == file && s->line == line)
            return s;
        if (!spare && (!s->file || s->window != window))
            spare = s;
    }
    return spare ? spare : &log_state.rl[home];
}

/* Whether a line from the call site may be written now; counts what is held back. */
static bool rate_ok(const char *file, int line, unsigned *ret_suppressed)
{
    int64_t window = pd_clock_mono_ms() / 1000 / PD_LOG_RATE_WINDOW_S;
    rl_slot *s = rate_slot(file, line, window);
    bool mine = s->file == file && s->line == line;
    *ret_suppressed = 0;
    if (!mine || s->window != window) {
        *ret_suppressed = mine ? s->suppressed : 0;
        s->file = file;
        s->line = line;
        s->window = window;
        s->count = 0;
        s->suppressed = 0;
    }
    if (++s->count > PD_LOG_RATE_BURST) {
        s->suppressed++;
        return false;
    }
    return true;
}

static void write_line(pd_log_level level, const char *msg, const char *kv, unsigned suppressed)
{
    char line[4096];
    size_t n = 0;
#define ADD(...)                                                                                   \
    do {                                                                                           \
        int w_ = snprintf(line + n, sizeof line - n, __VA_ARGS__);                                 \
        if (w_ > 0)                                                                                \
            n = n + (size_t)w_ < sizeof line ? n + (size_t)w_ : sizeof line - 1;                   \
    } while (0)
    if (log_state.journal) {
        ADD("<%d>", syslog_prio[level]);
    } else {
        int64_t wall = pd_clock_wall_ms();
        time_t secs = (time_t)(wall / 1000);
        struct tm tm;
        gmtime_r(&secs, &tm);
        ADD("ts=%04d-%02d-%02dT%02d:%02d:%02d.%03dZ ", tm.tm_year + 1900, tm.tm_mon + 1,
            tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(wall % 1000));
    }
    ADD("level=%s msg=\"", pd_log_level_to_name(level));
    for (const char *p = msg; *p && n < sizeof line - 8; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '"' || c == '\\')
            ADD("\\%c", c);
        else if (c == '\n')
            ADD("\\n");
        else if (c < 0x20)
            ADD("\\x%02x", c);
        else
            line[n++] = (char)c;
    }
    ADD("\"");
    if (kv && *kv)
        ADD(" %s", kv);
    if (suppressed)
        ADD(" suppressed_before=%u", suppressed);
#undef ADD
    if (n > sizeof line - 2)
        n = sizeof line - 2;
    line[n++] = '\n';
    fwrite(line, 1, n, stderr);
}

void pd_log_at(const char *file, int line, pd_log_level level, const char *fmt, ...)
{
    if (level < log_state.level)
        return;
    unsigned suppressed;
    if (!rate_ok(file, line, &suppressed))
        return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    write_line(level, msg, NULL, suppressed);
}

void pd_logkv_at(const char *file, int line, pd_log_level level, const char *msg, const char *kv,
                 ...)
{
    if (level < log_state.level)
        return;
    unsigned suppressed;
    if (!rate_ok(file, line, &suppressed))
        return;
    char kvs[2048];
    va_list ap;
    va_start(ap, kv);
    vsnprintf(kvs, sizeof kvs, kv, ap);
    va_end(ap);
    write_line(level, msg, kvs, suppressed);
}

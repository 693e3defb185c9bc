/*
 * pd-eventgen: deterministic generator of shopping sessions (view -> click -> add_to_cart ->
 * purchase -> review), one JSON event per line in the propensityd event schema. It feeds the
 * demo, the integration tests and the benchmarks; the same options and seed give the same bytes.
 *
 * Each user has a latent purchase propensity (a per-user trait plus device, country and campaign
 * effects); --truth writes it out so tests can check that the models recover it.
 */

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/rng.h"

#define DEFAULT_START_MS 1764000000000LL
#define DEFAULT_USERS    1000u
#define DEFAULT_EVENTS   10000ull
#define DEFAULT_ITEMS    5000u
#define MAX_USERS        10000000u
#define ITEMS_PER_CAT    100u

/* A session is generated whole when it starts; these bounds size its buffer. */
#define SESSION_MAX_VIEWS  30
#define SESSION_MAX_CART   3
#define SESSION_MAX_EVENTS (SESSION_MAX_VIEWS * 3 + 2 + 2 * SESSION_MAX_CART)

/* The oversize malformed event must exceed the daemon's 64 KiB limit with margin. */
#define OVERSIZE_TEXT_BYTES ((size_t)70 * 1024)
#define MAX_LINE_BYTES      (OVERSIZE_TEXT_BYTES + 4096)
#define OUT_BUF_BYTES       ((size_t)4 * 1024 * 1024)

/* ---- the simulated world ----------------------------------------------------------------- */

enum ev_type { EV_VIEW, EV_CLICK, EV_CART, EV_PURCHASE, EV_REVIEW, EV_TYPE_COUNT };

static const char *const ev_type_names[EV_TYPE_COUNT] = {
    "view", "click", "add_to_cart", "purchase", "review",
};

/* A categorical context value: how often it occurs and its effect on the purchase logit. */
struct weighted {
    const char *name;
    double weight;
    double effect;
};

static const struct weighted devices[] = {
    {"mobile", 0.55, -0.3},
    {"desktop", 0.35, 0.5},
    {"tablet", 0.10, 0.1},
};

static const struct weighted countries[] = {
    {"US", 0.22, 0.2},  {"DE", 0.18, 0.3},  {"GB", 0.12, 0.1},  {"FR", 0.10, 0.0},
    {"ES", 0.08, -0.2}, {"IT", 0.08, -0.2}, {"NL", 0.06, 0.15}, {"PL", 0.06, -0.3},
    {"BR", 0.05, -0.5}, {"IN", 0.05, -0.6},
};

/* c3 is the campaign that converts; c5 is the one that brings window shoppers. */
static const struct weighted campaigns[] = {
    {"c0", 0.20, 0.0},  {"c1", 0.15, -0.3}, {"c2", 0.12, 0.0}, {"c3", 0.08, 0.9},
    {"c4", 0.10, 0.0},  {"c5", 0.08, -0.5}, {"c6", 0.07, 0.0}, {"c7", 0.08, 0.4},
    {"c8", 0.06, -0.1}, {"c9", 0.06, 0.1},
};

#define N_DEVICES   (sizeof(devices) / sizeof(devices[0]))
#define N_COUNTRIES (sizeof(countries) / sizeof(countries[0]))
#define N_CAMPAIGNS (sizeof(campaigns) / sizeof(campaigns[0]))

/* Share of sessions on the user's own device; the rest follow the population mix. */
#define HOME_DEVICE_SHARE 0.8

enum segment { SEG_BROWSER, SEG_OCCASIONAL, SEG_FREQUENT };
static const char *const segment_names[] = {"browser", "occasional", "frequent"};

static const char *const positive_words[] = {
    "great", "love",          "excellent",  "perfect", "recommend",
    "happy", "fast delivery", "works well", "amazing", "good value",
};
static const char *const negative_words[] = {
    "broken",       "disappointed",    "terrible", "slow",  "refund",
    "poor quality", "stopped working", "waste",    "cheap", "returned",
};
static const char *const filler_words[] = {
    "the", "product", "it", "was", "and", "really", "very", "this", "item", "arrived",
};
#define N_WORDS(a) (sizeof(a) / sizeof((a)[0]))

/* ---- random numbers: common/rng.h, and the draws built on it ------------------------------- */

static inline bool rng_chance(pd_rng *r, double p)
{
    return pd_rng_unit(r) < p;
}

static inline double rng_exp(pd_rng *r, double mean)
{
    return -mean * log1p(-pd_rng_unit(r));
}

static size_t rng_pick(pd_rng *r, const struct weighted *w, size_t n)
{
    double u = pd_rng_unit(r), acc = 0.0;
    for (size_t i = 0; i < n; i++) {
        acc += w[i].weight;
        if (u < acc)
            return i;
    }
    return n - 1;
}

static double sigmoid(double x)
{
    return 1.0 / (1.0 + exp(-x));
}

/* ---- users, sessions and the event-time scheduler ----------------------------------------- */

struct sess_ev {
    int64_t ts;
    uint32_t item;
    uint32_t text_seed;
    uint8_t type;
    uint8_t positive;
    uint8_t converts; /* the session ends in a purchase (the --label ground truth) */
};

struct session {
    struct session *next_free;
    uint16_t n, pos;
    uint8_t device, campaign;
    bool intent;
    struct sess_ev ev[SESSION_MAX_EVENTS];
};

struct user {
    int64_t next_ts; /* heap key: the next event, or the start of the next session */
    struct session *s;
    float base_logit;
    float gap_mean_ms;
    float satisfaction; /* chance a review is positive */
    uint16_t fav_category;
    uint8_t segment, home_device, country;
};

struct gen_opts {
    uint32_t users;
    uint32_t items;
    uint64_t events; /* 0 = endless */
    uint64_t seed;
    double rate;
    double bad_ratio;
    int64_t start_ms;
    int64_t disorder_ms;
    bool keyed;
    bool stats;
    bool label;
    const char *truth_path;
};

struct gen_stats {
    uint64_t by_type[EV_TYPE_COUNT];
    uint64_t bad;
    uint64_t sessions;
    int64_t first_ts, last_ts;
};

struct gen {
    pd_rng world;    /* users, sessions */
    pd_rng bad;      /* which lines are malformed */
    pd_rng disorder; /* timestamp jitter */
    struct user *users;
    uint32_t n_users;
    uint32_t *heap; /* user indices, min-heap on (next_ts, index) */
    uint32_t n_items, n_categories;
    int32_t *price_cents;
    struct session *free_sessions;
    uint64_t next_event_id;
    uint64_t next_bad_id;
    struct gen_stats stats;
};

static inline bool heap_less(const struct gen *g, uint32_t a, uint32_t b)
{
    int64_t ta = g->users[a].next_ts, tb = g->users[b].next_ts;
    return ta < tb || (ta == tb && a < b);
}

static void heap_sift_down(struct gen *g, uint32_t pos)
{
    uint32_t *h = g->heap, n = g->n_users, v = h[pos];
    for (;;) {
        uint32_t c = 2 * pos + 1;
        if (c >= n)
            break;
        if (c + 1 < n && heap_less(g, h[c + 1], h[c]))
            c++;
        if (!heap_less(g, h[c], v))
            break;
        h[pos] = h[c];
        pos = c;
    }
    h[pos] = v;
}

static double user_session_purchase_p(const struct user *u, size_t device, size_t campaign)
{
    if (u->segment == SEG_BROWSER)
        return 0.0;
    return sigmoid(u->base_logit + devices[device].effect + countries[u->country].effect +
                   campaigns[campaign].effect);
}

/* Expected per-session purchase probability over this user's device and campaign mix. */
static double user_propensity(const struct user *u)
{
    double p = 0.0;
    for (size_t d = 0; d < N_DEVICES; d++) {
        double wd = (1.0 - HOME_DEVICE_SHARE) * devices[d].weight +
                    (d == u->home_device ? HOME_DEVICE_SHARE : 0.0);
        for (size_t c = 0; c < N_CAMPAIGNS; c++)
            p += wd * campaigns[c].weight * user_session_purchase_p(u, d, c);
    }
    return p;
}

static void user_init(struct gen *g, struct user *u, int64_t start_ms)
{
    pd_rng *r = &g->world;
    double seg = pd_rng_unit(r);

    u->segment = seg < 0.35 ? SEG_BROWSER : seg < 0.85 ? SEG_OCCASIONAL : SEG_FREQUENT;
    u->base_logit = (float)(u->segment == SEG_FREQUENT ? -0.4 + (pd_rng_unit(r) - 0.5)
                                                       : -2.6 + 1.2 * (pd_rng_unit(r) - 0.5));
    u->home_device = (uint8_t)rng_pick(r, devices, N_DEVICES);
    u->country = (uint8_t)rng_pick(r, countries, N_COUNTRIES);
    /* Between 35 minutes and 3.4 hours between sessions; frequent buyers come back sooner. */
    u->gap_mean_ms =
        (float)(7200e3 * (0.3 + 1.4 * pd_rng_unit(r)) * (u->segment == SEG_FREQUENT ? 0.6 : 1.0));
    u->satisfaction = (float)(0.5 + 0.45 * pd_rng_unit(r));
    /* Skewed so some categories are popular across users. */
    u->fav_category = (uint16_t)(g->n_categories * pow(pd_rng_unit(r), 1.5));
    /* Spread first sessions over one gap so the stream starts mid-traffic, not in lockstep. */
    u->next_ts = start_ms + (int64_t)(pd_rng_unit(r) * u->gap_mean_ms);
    u->s = NULL;
}

static uint32_t catalog_pick(struct gen *g, uint32_t category)
{
    /* Quadratic skew: the first items of a category are its best sellers. */
    double u = pd_rng_unit(&g->world);
    uint32_t within = (uint32_t)(ITEMS_PER_CAT * u * u);
    uint32_t item = category * ITEMS_PER_CAT + within;
    return item < g->n_items ? item : g->n_items - 1;
}

static struct session *session_alloc(struct gen *g)
{
    struct session *s = g->free_sessions;
    if (s) {
        g->free_sessions = s->next_free;
        return s;
    }
    return malloc(sizeof(*s));
}

static void session_free(struct gen *g, struct session *s)
{
    s->next_free = g->free_sessions;
    g->free_sessions = s;
}

static void session_push(struct session *s, enum ev_type type, int64_t ts, uint32_t item)
{
    struct sess_ev *e = &s->ev[s->n++];
    e->type = (uint8_t)type;
    e->ts = ts;
    e->item = item;
    e->positive = 0;
    e->text_seed = 0;
    e->converts = s->intent;
}

/* Builds the whole funnel of one session starting at u->next_ts. Whether it converts is
 * decided up front from the latent propensity; intent also raises click and cart rates, so the
 * behaviour leading up to a purchase carries signal a model can learn. */
static int session_start(struct gen *g, struct user *u)
{
    pd_rng *r = &g->world;
    struct session *s = session_alloc(g);
    uint32_t carted[SESSION_MAX_CART];
    uint32_t n_cart = 0, category, last_item = 0;
    bool clicked_last = false, intent;
    int64_t t = u->next_ts;
    int n_views;

    if (!s)
        return -ENOMEM;
    s->n = s->pos = 0;
    s->device = rng_chance(r, HOME_DEVICE_SHARE) ? u->home_device
                                                 : (uint8_t)rng_pick(r, devices, N_DEVICES);
    s->campaign = (uint8_t)rng_pick(r, campaigns, N_CAMPAIGNS);
    intent = rng_chance(r, user_session_purchase_p(u, s->device, s->campaign));
    s->intent = intent;
    category = rng_chance(r, 0.6) ? u->fav_category : pd_rng_below(r, g->n_categories);

    n_views = 1 + (int)rng_exp(r, intent ? 7.0 : 4.0);
    if (n_views > SESSION_MAX_VIEWS)
        n_views = SESSION_MAX_VIEWS;

    for (int v = 0; v < n_views; v++) {
        if (v > 0)
            t += 4000 + (int64_t)rng_exp(r, 20000.0);
        if (rng_chance(r, 0.15))
            category = pd_rng_below(r, g->n_categories);
        last_item = catalog_pick(g, category);
        clicked_last = false;
        session_push(s, EV_VIEW, t, last_item);
        if (!rng_chance(r, intent ? 0.45 : 0.22))
            continue;
        t += 1000 + (int64_t)rng_exp(r, 5000.0);
        session_push(s, EV_CLICK, t, last_item);
        clicked_last = true;
        /* Non-buying sessions abandon carts too, so a cart alone does not give the label away. */
        if (n_cart < SESSION_MAX_CART && rng_chance(r, intent ? 0.35 : 0.07)) {
            t += 5000 + (int64_t)rng_exp(r, 25000.0);
            session_push(s, EV_CART, t, last_item);
            carted[n_cart++] = last_item;
        }
    }

    if (intent) {
        if (n_cart == 0) {
            if (!clicked_last) {
                t += 1000 + (int64_t)rng_exp(r, 5000.0);
                session_push(s, EV_CLICK, t, last_item);
            }
            t += 5000 + (int64_t)rng_exp(r, 25000.0);
            session_push(s, EV_CART, t, last_item);
            carted[n_cart++] = last_item;
        }
        /* Checkout follows within minutes, well inside a 30 minute label window. */
        t += 20000 + (int64_t)rng_exp(r, 90000.0);
        for (uint32_t i = 0; i < n_cart; i++) {
            if (i > 0)
                t += 500 + (int64_t)rng_exp(r, 1500.0);
            session_push(s, EV_PURCHASE, t, carted[i]);
        }
        for (uint32_t i = 0; i < n_cart; i++) {
            if (!rng_chance(r, 0.25))
                continue;
            t += 60000 + (int64_t)rng_exp(r, 600000.0);
            session_push(s, EV_REVIEW, t, carted[i]);
            s->ev[s->n - 1].positive = rng_chance(r, u->satisfaction);
            s->ev[s->n - 1].text_seed = (uint32_t)pd_rng_next(r);
        }
    }

    u->s = s;
    g->stats.sessions++;
    return 0;
}

static int gen_init(struct gen *g, const struct gen_opts *o)
{
    memset(g, 0, sizeof(*g));
    pd_rng_seed(&g->world, o->seed, 1);
    pd_rng_seed(&g->bad, o->seed, 2);
    pd_rng_seed(&g->disorder, o->seed, 3);
    g->n_users = o->users;
    g->n_items = o->items;
    g->n_categories = (o->items + ITEMS_PER_CAT - 1) / ITEMS_PER_CAT;
    g->next_event_id = 1;
    g->next_bad_id = 1;
    g->stats.first_ts = INT64_MAX;
    g->stats.last_ts = INT64_MIN;

    g->users = calloc(o->users, sizeof(*g->users));
    g->heap = malloc((size_t)o->users * sizeof(*g->heap));
    g->price_cents = malloc((size_t)o->items * sizeof(*g->price_cents));
    if (!g->users || !g->heap || !g->price_cents)
        return -ENOMEM;

    /* Each category has a price level (log-uniform, 3 to 300); items vary around it. */
    for (uint32_t c = 0; c < g->n_categories; c++) {
        double level = 3.0 * pow(100.0, pd_rng_unit(&g->world));
        for (uint32_t i = c * ITEMS_PER_CAT; i < (c + 1) * ITEMS_PER_CAT && i < o->items; i++)
            g->price_cents[i] = (int32_t)(100.0 * level * (0.5 + pd_rng_unit(&g->world))) + 1;
    }
    for (uint32_t i = 0; i < o->users; i++) {
        user_init(g, &g->users[i], o->start_ms);
        g->heap[i] = i;
    }
    for (uint32_t i = o->users / 2; i-- > 0;)
        heap_sift_down(g, i);
    return 0;
}

static void gen_release(struct gen *g)
{
    struct session *s = g->free_sessions;
    while (s) {
        struct session *next = s->next_free;
        free(s);
        s = next;
    }
    if (g->users) {
        for (uint32_t i = 0; i < g->n_users; i++)
            free(g->users[i].s);
    }
    free(g->users);
    free(g->heap);
    free(g->price_cents);
}

/* The user whose next event comes first, with a session ready to read from. */
static int gen_peek(struct gen *g, uint32_t *ret_user)
{
    uint32_t ui = g->heap[0];
    struct user *u = &g->users[ui];

    if (!u->s) {
        int err = session_start(g, u);
        if (err < 0)
            return err;
    }
    *ret_user = ui;
    return 0;
}

static void gen_advance(struct gen *g, uint32_t ui)
{
    struct user *u = &g->users[ui];
    struct session *s = u->s;

    s->pos++;
    if (s->pos < s->n) {
        u->next_ts = s->ev[s->pos].ts;
    } else {
        u->next_ts = s->ev[s->n - 1].ts + 60000 + (int64_t)rng_exp(&g->world, u->gap_mean_ms);
        session_free(g, s);
        u->s = NULL;
    }
    heap_sift_down(g, 0);
}

/* ---- output ------------------------------------------------------------------------------- */

struct out {
    char *buf;
    size_t len;
    int fd;
};

static int out_flush(struct out *o)
{
    size_t off = 0;
    while (off < o->len) {
        ssize_t n = write(o->fd, o->buf + off, o->len - off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        off += (size_t)n;
    }
    o->len = 0;
    return 0;
}

/* Flushes only between lines, so every write() carries whole events and a reader that is cut
 * off by a signal never sees half a line. */
static inline int out_reserve_line(struct out *o)
{
    if (OUT_BUF_BYTES - o->len < MAX_LINE_BYTES)
        return out_flush(o);
    return 0;
}

static inline void put_mem(struct out *o, const char *s, size_t n)
{
    memcpy(o->buf + o->len, s, n);
    o->len += n;
}

#define PUT_LIT(o, lit) put_mem((o), (lit), sizeof(lit) - 1)

static inline void put_str(struct out *o, const char *s)
{
    put_mem(o, s, strlen(s));
}

static inline void put_u64(struct out *o, uint64_t v)
{
    char tmp[20];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        o->buf[o->len++] = tmp[--n];
}

static inline void put_i64(struct out *o, int64_t v)
{
    if (v < 0) {
        o->buf[o->len++] = '-';
        put_u64(o, (uint64_t)0 - (uint64_t)v);
    } else {
        put_u64(o, (uint64_t)v);
    }
}

static inline void put_price(struct out *o, int32_t cents)
{
    put_u64(o, (uint64_t)cents / 100);
    o->buf[o->len++] = '.';
    o->buf[o->len++] = (char)('0' + cents / 10 % 10);
    o->buf[o->len++] = (char)('0' + cents % 10);
}

/* Review text: a few sentiment words among fillers, from a per-event seed so it is stable. */
static void put_review_text(struct out *o, uint32_t seed, bool positive)
{
    pd_rng r;
    uint32_t n_words;
    const char *const *words = positive ? positive_words : negative_words;
    uint32_t n_sentiment = positive ? N_WORDS(positive_words) : N_WORDS(negative_words);

    pd_rng_seed(&r, seed, 4);
    n_words = 4 + pd_rng_below(&r, 6);
    for (uint32_t i = 0; i < n_words; i++) {
        if (i > 0)
            o->buf[o->len++] = ' ';
        if (i == 0 || rng_chance(&r, 0.4))
            put_str(o, words[pd_rng_below(&r, n_sentiment)]);
        else
            put_str(o, filler_words[pd_rng_below(&r, N_WORDS(filler_words))]);
    }
}

/* One way to break an event; malformed lines cycle through them in this order. */
enum bad_kind {
    BAD_NOT_JSON,
    BAD_MISSING_USER,
    BAD_WRONG_TYPES,
    BAD_INVALID_UTF8,
    BAD_OVERSIZE,
    BAD_OUT_OF_RANGE,
    BAD_UNKNOWN_TYPE,
    BAD_KIND_COUNT,
};

struct event_view {
    const struct sess_ev *e;
    uint32_t user;
    uint8_t device, country, campaign;
    int64_t ts;
    bool label; /* write the ground-truth "label" on views and clicks */
};

static void put_event(struct out *o, const struct gen *g, const struct event_view *v, bool keyed,
                      int bad, uint64_t id)
{
    const struct sess_ev *e = v->e;
    size_t line_start;

    if (keyed) {
        if (bad != BAD_MISSING_USER) {
            o->buf[o->len++] = 'u';
            put_u64(o, (uint64_t)v->user + 1);
        }
        o->buf[o->len++] = '\t';
    }
    line_start = o->len;

    if (bad < 0) {
        PUT_LIT(o, "{\"event_id\":\"e-");
    } else {
        PUT_LIT(o, "{\"event_id\":\"bad-");
    }
    put_u64(o, id);
    PUT_LIT(o, "\",\"type\":\"");
    if (bad == BAD_UNKNOWN_TYPE)
        PUT_LIT(o, "teleport");
    else
        put_str(o, ev_type_names[e->type]);
    if (bad != BAD_MISSING_USER) {
        PUT_LIT(o, "\",\"user_id\":\"u");
        put_u64(o, (uint64_t)v->user + 1);
    }
    PUT_LIT(o, "\",\"item_id\":\"sku-");
    put_u64(o, (uint64_t)e->item + 1);
    if (bad == BAD_INVALID_UTF8)
        PUT_LIT(o, "\xc3\x28\xff"); /* truncated 2-byte sequence, then a byte UTF-8 never uses */
    if (bad == BAD_WRONG_TYPES) {
        /* A date string where epoch milliseconds belong, and a price as a string. */
        PUT_LIT(o, "\",\"ts\":\"2025-11-24T16:00:00Z\",\"price\":\"");
        put_price(o, g->price_cents[e->item]);
        o->buf[o->len++] = '"';
    } else {
        PUT_LIT(o, "\",\"ts\":");
        put_i64(o, v->ts);
        PUT_LIT(o, ",\"price\":");
        if (bad == BAD_OUT_OF_RANGE)
            PUT_LIT(o, "1e999");
        else
            put_price(o, g->price_cents[e->item]);
    }
    if (v->label && (e->type == EV_VIEW || e->type == EV_CLICK)) {
        PUT_LIT(o, ",\"label\":");
        o->buf[o->len++] = e->converts ? '1' : '0';
    }
    PUT_LIT(o, ",\"context\":{\"device\":\"");
    put_str(o, devices[v->device].name);
    PUT_LIT(o, "\",\"country\":\"");
    put_str(o, countries[v->country].name);
    PUT_LIT(o, "\",\"campaign\":\"");
    put_str(o, campaigns[v->campaign].name);
    PUT_LIT(o, "\"");
    if (e->type == EV_REVIEW) {
        /* what a producer that knows the star rating would add: 1 for 4-5 stars */
        PUT_LIT(o, ",\"positive\":");
        o->buf[o->len++] = e->positive ? '1' : '0';
    }
    o->buf[o->len++] = '}';
    if (bad == BAD_OVERSIZE) {
        /* Valid JSON and UTF-8, only too large. */
        PUT_LIT(o, ",\"text\":\"");
        while (o->len - line_start < OVERSIZE_TEXT_BYTES)
            PUT_LIT(o, "too long review text ");
        o->buf[o->len++] = '"';
    } else if (e->type == EV_REVIEW) {
        PUT_LIT(o, ",\"text\":\"");
        put_review_text(o, e->text_seed, e->positive);
        o->buf[o->len++] = '"';
    }
    o->buf[o->len++] = '}';
    if (bad == BAD_NOT_JSON)
        o->len = line_start + (o->len - line_start) / 2; /* cut mid-object */
    o->buf[o->len++] = '\n';
}

/* ---- command line ------------------------------------------------------------------------- */

static volatile sig_atomic_t stop_requested;

static void on_stop_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static void usage(FILE *f, const char *argv0)
{
    fprintf(f,
            "usage: %s [options]\n"
            "\n"
            "Writes simulated shopping sessions to stdout, one JSON event per line:\n"
            "  {\"event_id\":\"e-81\",\"type\":\"click\",\"user_id\":\"u42\",\"item_id\":\"sku-9\","
            "\"ts\":1764000000123,\n"
            "   \"price\":12.50,\"context\":{\"device\":\"mobile\",\"country\":\"DE\","
            "\"campaign\":\"c7\"}}\n"
            "Types: view, click, add_to_cart, purchase, review (with \"text\"). Event time is\n"
            "simulated and non-decreasing (unless --disorder-ms); the same options and seed give\n"
            "byte-identical output.\n"
            "\n"
            "  --users N          number of users (default %u)\n"
            "  --items N          catalog size (default %u)\n"
            "  --events N         lines to write, malformed ones included (default %llu;\n"
            "                     0 = until SIGINT/SIGTERM)\n"
            "  --seed S           random seed (default 1)\n"
            "  --start-ms MS      event time of the start (default %lld)\n"
            "  --rate R           pace to R lines per wall-clock second (default 0 = flat out)\n"
            "  --format F         jsonl (default) or keyed: USER<TAB>JSON for kcat -K'\\t'\n"
            "  --bad-ratio F      fraction 0..1 of malformed lines, cycling through: cut-off\n"
            "                     JSON, missing user_id, wrong field types, invalid UTF-8,\n"
            "                     oversize (> 64 KiB), number out of range (1e999), unknown type;\n"
            "                     they get ids bad-N and do not change the good events\n"
            "  --disorder-ms N    move each event's ts back by up to N ms (late events)\n"
            "  --label            add \"label\":0|1 to views and clicks: whether their session\n"
            "                     ends in a purchase (ground truth for evaluation and for\n"
            "                     benchmarks of immediate learning; the daemon's own labels\n"
            "                     come from later events)\n"
            "  --truth FILE       write each user's latent propensity as JSON lines:\n"
            "                     {\"user_id\",\"propensity\",\"segment\",\"home_device\","
            "\"country\"}\n"
            "  --stats            print a summary to stderr at the end\n"
            "  -h, --help         this text\n"
            "\n"
            "A user's propensity is the chance that one of their sessions ends in a purchase;\n"
            "'browser' users never buy. Desktop, campaign c3 (and c7) and countries DE, US\n"
            "convert better; purchases follow their clicks within minutes.\n",
            argv0, DEFAULT_USERS, DEFAULT_ITEMS, (unsigned long long)DEFAULT_EVENTS,
            (long long)DEFAULT_START_MS);
}

static int parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *ret_value)
{
    char *end = NULL;
    unsigned long long v;

    if (*s == '-' || *s == '\0')
        return -EINVAL;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        return -EINVAL;
    *ret_value = v;
    return 0;
}

static int parse_i64(const char *s, int64_t min, int64_t max, int64_t *ret_value)
{
    char *end = NULL;
    long long v;

    if (*s == '\0')
        return -EINVAL;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        return -EINVAL;
    *ret_value = v;
    return 0;
}

static int parse_double(const char *s, double min, double max, double *ret_value)
{
    char *end = NULL;
    double v;

    if (*s == '\0')
        return -EINVAL;
    errno = 0;
    v = strtod(s, &end);
    if (errno != 0 || *end != '\0' || !(v >= min && v <= max))
        return -EINVAL;
    *ret_value = v;
    return 0;
}

enum {
    OPT_USERS = 256,
    OPT_ITEMS,
    OPT_EVENTS,
    OPT_SEED,
    OPT_START_MS,
    OPT_RATE,
    OPT_FORMAT,
    OPT_BAD_RATIO,
    OPT_DISORDER_MS,
    OPT_TRUTH,
    OPT_LABEL,
    OPT_STATS,
};

static int bad_option(const char *name, const char *value, const char *expected)
{
    fprintf(stderr, "pd-eventgen: invalid %s \"%s\": expected %s\n", name, value, expected);
    return -EINVAL;
}

/* Returns 0 to run, 1 when --help was printed, -EINVAL on a bad command line. */
static int opts_parse(int argc, char **argv, struct gen_opts *o)
{
    static const struct option longopts[] = {
        {"users", required_argument, NULL, OPT_USERS},
        {"items", required_argument, NULL, OPT_ITEMS},
        {"events", required_argument, NULL, OPT_EVENTS},
        {"seed", required_argument, NULL, OPT_SEED},
        {"start-ms", required_argument, NULL, OPT_START_MS},
        {"rate", required_argument, NULL, OPT_RATE},
        {"format", required_argument, NULL, OPT_FORMAT},
        {"bad-ratio", required_argument, NULL, OPT_BAD_RATIO},
        {"disorder-ms", required_argument, NULL, OPT_DISORDER_MS},
        {"truth", required_argument, NULL, OPT_TRUTH},
        {"label", no_argument, NULL, OPT_LABEL},
        {"stats", no_argument, NULL, OPT_STATS},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    uint64_t u;
    int c;

    *o = (struct gen_opts){
        .users = DEFAULT_USERS,
        .items = DEFAULT_ITEMS,
        .events = DEFAULT_EVENTS,
        .seed = 1,
        .start_ms = DEFAULT_START_MS,
    };
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_USERS:
            if (parse_u64(optarg, 1, MAX_USERS, &u) < 0)
                return bad_option("--users", optarg, "1-10000000");
            o->users = (uint32_t)u;
            break;
        case OPT_ITEMS:
            if (parse_u64(optarg, 1, (uint64_t)65535 * ITEMS_PER_CAT, &u) < 0)
                return bad_option("--items", optarg, "1-6553500");
            o->items = (uint32_t)u;
            break;
        case OPT_EVENTS:
            if (parse_u64(optarg, 0, UINT64_MAX, &o->events) < 0)
                return bad_option("--events", optarg, "a count, 0 for endless");
            break;
        case OPT_SEED:
            if (parse_u64(optarg, 0, UINT64_MAX, &o->seed) < 0)
                return bad_option("--seed", optarg, "an unsigned integer");
            break;
        case OPT_START_MS:
            /* Up to year ~5000, so simulated time never overflows. */
            if (parse_i64(optarg, 0, 100000000000000LL, &o->start_ms) < 0)
                return bad_option("--start-ms", optarg, "epoch milliseconds");
            break;
        case OPT_RATE:
            if (parse_double(optarg, 0.0, 1e9, &o->rate) < 0)
                return bad_option("--rate", optarg, "events per second, 0-1e9");
            break;
        case OPT_FORMAT:
            if (strcmp(optarg, "jsonl") == 0)
                o->keyed = false;
            else if (strcmp(optarg, "keyed") == 0)
                o->keyed = true;
            else
                return bad_option("--format", optarg, "jsonl or keyed");
            break;
        case OPT_BAD_RATIO:
            if (parse_double(optarg, 0.0, 1.0, &o->bad_ratio) < 0)
                return bad_option("--bad-ratio", optarg, "a fraction 0-1");
            break;
        case OPT_DISORDER_MS:
            if (parse_i64(optarg, 0, 86400000LL, &o->disorder_ms) < 0)
                return bad_option("--disorder-ms", optarg, "0-86400000");
            break;
        case OPT_LABEL:
            o->label = true;
            break;
        case OPT_TRUTH:
            o->truth_path = optarg;
            break;
        case OPT_STATS:
            o->stats = true;
            break;
        case 'h':
            usage(stdout, argv[0]);
            return 1;
        default:
            fprintf(stderr, "Try '%s --help'.\n", argv[0]);
            return -EINVAL;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "pd-eventgen: unexpected argument \"%s\"\nTry '%s --help'.\n", argv[optind],
                argv[0]);
        return -EINVAL;
    }
    return 0;
}

static int truth_write(const struct gen *g, const char *path)
{
    FILE *f = fopen(path, "w");
    int err = 0;

    if (!f)
        return -errno;
    for (uint32_t i = 0; i < g->n_users; i++) {
        const struct user *u = &g->users[i];
        if (fprintf(f,
                    "{\"user_id\":\"u%" PRIu32 "\",\"propensity\":%.6f,\"segment\":\"%s\","
                    "\"home_device\":\"%s\",\"country\":\"%s\"}\n",
                    i + 1, user_propensity(u), segment_names[u->segment],
                    devices[u->home_device].name, countries[u->country].name) < 0) {
            err = -errno;
            break;
        }
    }
    if (fclose(f) != 0 && err == 0)
        err = -errno;
    return err;
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Sleeps until line number `lines` is due at `rate` per second; flushes first so the reader
 * gets events as they are due rather than in buffer-sized bursts. */
static int pace(struct out *o, int64_t start_ns, uint64_t lines, double rate)
{
    int64_t due = start_ns + (int64_t)((double)lines * 1e9 / rate);
    int64_t now = now_ns();
    struct timespec ts;
    int err;

    if (now >= due)
        return 0;
    err = out_flush(o);
    if (err < 0)
        return err;
    ts.tv_sec = (time_t)((due - now) / 1000000000LL);
    ts.tv_nsec = (long)((due - now) % 1000000000LL);
    nanosleep(&ts, NULL); /* a stop signal cuts it short; the caller checks the flag */
    return 0;
}

static void stats_print(const struct gen *g, uint64_t lines, double seconds)
{
    const struct gen_stats *s = &g->stats;
    fprintf(stderr,
            "pd-eventgen: %" PRIu64 " lines (%" PRIu64 " malformed) in %.3f s = %.0f lines/s; "
            "%" PRIu64 " sessions from %" PRIu32 " users\n",
            lines, s->bad, seconds, seconds > 0 ? (double)lines / seconds : 0.0, s->sessions,
            g->n_users);
    fprintf(stderr,
            "pd-eventgen: view %" PRIu64 ", click %" PRIu64 ", add_to_cart %" PRIu64
            ", purchase %" PRIu64 ", review %" PRIu64 "\n",
            s->by_type[EV_VIEW], s->by_type[EV_CLICK], s->by_type[EV_CART], s->by_type[EV_PURCHASE],
            s->by_type[EV_REVIEW]);
    if (s->first_ts <= s->last_ts)
        fprintf(stderr, "pd-eventgen: event time %" PRId64 " .. %" PRId64 " (%.2f h)\n",
                s->first_ts, s->last_ts, (double)(s->last_ts - s->first_ts) / 3600e3);
}

static int run(struct gen *g, const struct gen_opts *o, struct out *out, uint64_t *ret_lines)
{
    int64_t start = now_ns();
    uint64_t lines = 0;
    int err = 0;

    while ((o->events == 0 || lines < o->events) && !stop_requested) {
        struct event_view v;
        uint32_t ui;
        const struct user *u;
        int bad = -1;

        err = gen_peek(g, &ui);
        if (err < 0)
            break;
        u = &g->users[ui];
        v.e = &u->s->ev[u->s->pos];
        v.user = ui;
        v.device = u->s->device;
        v.country = u->country;
        v.campaign = u->s->campaign;
        v.ts = v.e->ts;
        v.label = o->label;
        if (o->disorder_ms > 0)
            v.ts -= (int64_t)(pd_rng_next(&g->disorder) % (uint64_t)(o->disorder_ms + 1));
        /* A malformed line borrows the next good event's fields but does not consume it. */
        if (o->bad_ratio > 0 && rng_chance(&g->bad, o->bad_ratio))
            bad = (int)(g->stats.bad % BAD_KIND_COUNT);

        err = out_reserve_line(out);
        if (err < 0)
            break;
        if (bad >= 0) {
            put_event(out, g, &v, o->keyed, bad, g->next_bad_id++);
            g->stats.bad++;
        } else {
            put_event(out, g, &v, o->keyed, -1, g->next_event_id++);
            g->stats.by_type[v.e->type]++;
            if (v.ts < g->stats.first_ts)
                g->stats.first_ts = v.ts;
            if (v.ts > g->stats.last_ts)
                g->stats.last_ts = v.ts;
            gen_advance(g, ui);
        }
        lines++;

        if (o->rate > 0) {
            err = pace(out, start, lines, o->rate);
            if (err < 0)
                break;
        }
    }
    if (err == 0)
        err = out_flush(out);
    *ret_lines = lines;
    return err;
}

int main(int argc, char **argv)
{
    struct gen_opts opts;
    struct gen g;
    struct out out = {.fd = STDOUT_FILENO};
    struct sigaction sa;
    uint64_t lines = 0;
    int64_t t0;
    int exit_code = 1;
    int err;

    err = opts_parse(argc, argv, &opts);
    if (err != 0)
        return err == 1 ? 0 : 2;

    /* No SA_RESTART: a stop signal must interrupt the pacing sleep. SIGPIPE keeps its default,
     * like any filter whose reader went away. */
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    err = gen_init(&g, &opts);
    if (err < 0) {
        fprintf(stderr, "pd-eventgen: failed to set up %" PRIu32 " users: %s\n", opts.users,
                strerror(-err));
        goto out_release;
    }
    if (opts.truth_path) {
        err = truth_write(&g, opts.truth_path);
        if (err < 0) {
            fprintf(stderr, "pd-eventgen: failed to write truth file \"%s\": %s\n", opts.truth_path,
                    strerror(-err));
            goto out_release;
        }
    }
    out.buf = malloc(OUT_BUF_BYTES);
    if (!out.buf) {
        fprintf(stderr, "pd-eventgen: out of memory\n");
        goto out_release;
    }

    t0 = now_ns();
    err = run(&g, &opts, &out, &lines);
    if (err < 0) {
        fprintf(stderr, "pd-eventgen: failed to generate events: %s\n", strerror(-err));
        goto out_free_buf;
    }
    if (opts.stats)
        stats_print(&g, lines, (double)(now_ns() - t0) / 1e9);
    exit_code = 0;

out_free_buf:
    free(out.buf);
out_release:
    gen_release(&g);
    return exit_code;
}

/* Online generalised linear models over hashed sparse features. One weight table of 2^bits
 * entries, each entry holding a coordinate's whole optimizer state side by side (one cache
 * access per coordinate), in float32 or bfloat16; learn() is a predict pass plus an update pass
 * over the same entries, specialised per optimizer and storage format so the loops carry no
 * per-coordinate dispatch.
 *
 * Semantics worth knowing (also covered by tests/unit/reference/glm_reference.py):
 *  - Margin m = sum(w_i * x_i) [+ w_0 for the intercept], summed in double, clipped to
 *    +-max_abs_margin; output = sigmoid(m) (logistic), m (linear, hinge).
 *  - Loss gradient with respect to m, times the importance weight k:
 *    logistic p - y; squared m - y; Huber clamp(m - y, -delta, delta);
 *    hinge -y' if y' m < 1 else 0, where y' = +1 for label > 0.5 and -1 otherwise.
 *  - Coordinate gradient g_i = k * dloss * x_i. Duplicate hashes in one example are applied one
 *    after the other, each seeing the state the previous one left.
 *  - FTRL-Proximal (McMahan et al. 2013, Algorithm 1): per coordinate z, n;
 *    w = 0 if |z| <= l1 else -(z - sgn(z) l1) / ((beta + sqrt(n)) / alpha + l2);
 *    sigma = (sqrt(n + g^2) - sqrt(n)) / alpha; z += g - sigma w; n += g^2.
 *  - AdaGrad: g_i += l2 w_i; G += g_i^2; w -= learning_rate g_i / sqrt(G) (no step while G = 0).
 *  - SGD: g_i += l2 w_i; w -= rate_t g_i, rate_t = learning_rate (initial_t / (initial_t + t))
 *    ^ power_t, t = updates applied before this one.
 *  - ftrl_multi (logistic): lanes j = 0..3, each FTRL-Proximal as above with its own z, n and
 *    intercept, alpha_j = alpha 10^((j - 1) / 2), and its own gradient k (p_j - y) x_i from its
 *    own prediction p_j = sigmoid(m_j) (m_j clipped). Output p = sum_j u_j p_j, with mixture
 *    weights u_j (1/4 each at first) updated after every learned example:
 *      u_j <- u_j q_j^(eta k), q_j = p_j^y (1 - p_j)^(1 - y), y clamped to [0, 1];
 *      u <- (1 - share) u / sum(u) + share / 4;        eta = 1/4, share = 1e-4.
 *    That is exponentially weighted averaging of the lanes by their progressive log loss, with
 *    a fixed share (Herbster and Warmuth 1998): no lane's weight falls below share / 4, so a
 *    lane that becomes the best takes over once it gains about ln(4 / share) / eta = 42 nats.
 *    The lanes' arithmetic between loads and stores is float32 (four lanes per SIMD
 *    instruction), not float64; ftrl_multi section below says why these constants.
 *  - l1 is FTRL's only; AdaGrad and SGD ignore it. L2 is a per-update decay of the coordinates an
 *    example touches (lazy, as in VW) and is not scaled by the importance weight.
 *  - The intercept is one more coordinate outside the table, value 1, same optimizer, never
 *    regularised (l1 = l2 = 0 for it): a bias should follow the base rate, not shrink to 0.
 *  - An update with a non-finite feature value, label or importance is skipped as a whole and
 *    counted in stats.nonfinite; predictions treat a non-finite value as 0. As a backstop, a
 *    coordinate whose new state would not fit the storage keeps its old state (counted too).
 *    An importance <= 0 makes learn() a predict().
 */
#include "models/learner.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "common/error.h"
#include "common/hashtab.h"

/* Largest magnitude a state value may take. Below FLT_MAX and below bfloat16's largest finite
 * value (3.39e38) even after rounding up, so nothing stored can become infinite. */
#define STATE_LIMIT 1e38

/* The hot functions take the storage format as a constant and must be specialised by it: a
 * plain `inline` leaves that to the compiler, which declines for functions this size. */
#define HOT static inline __attribute__((always_inline))

/* Values per table entry at most (ftrl_multi's), and of the intercept's state. */
#define STRIDE_MAX 8
#define ICPT_MAX   12

#define LANES PD_LEARNER_LANES

/* Admission counters are saturating bytes. */
#define ADMIT_MAX 255

/* Tables from this size on are mapped directly so they can be asked for huge pages: with random
 * access over tens of megabytes, TLB misses cost as much as the cache misses. */
#define TABLE_MMAP_MIN (2u << 20)
#define HUGE_PAGE      (2u << 20)

typedef double (*pd_learn_fn)(pd_learner *l, const pd_feature *x, size_t n, double label,
                              double importance);
typedef double (*pd_margin_fn)(const pd_learner *l, const pd_feature *x, size_t n, bool *ret_bad);
typedef double (*pd_predict_fn)(const pd_learner *l, const pd_feature *x, size_t n);

struct pd_learner {
    pd_learner_conf conf;
    uint32_t mask;
    bool f16;
    size_t stride; /* values per entry */
    size_t entry_bytes;
    /* derived hyper-parameters */
    double inv_alpha;
    double ftrl_den;      /* beta + alpha * l2: the FTRL denominator times alpha, less sqrt(n) */
    double ftrl_icpt_den; /* the same without l2, for the intercept */
    /* ftrl_multi: each lane's alpha, 1 / alpha and FTRL denominator (the intercept's is beta) */
    double lane_alpha[LANES];
    double lane_inv_alpha[LANES];
    double lane_den[LANES];
    double mix[LANES]; /* ftrl_multi's mixture weights, summing to 1 */
    void *table;
    size_t table_bytes;
    size_t table_map_bytes;      /* non-zero when table came from mmap */
    uint8_t *seen;               /* admission counters, one per table entry; NULL when off */
    /* intercept state: laid out as a float32 entry; ftrl_multi's w[4], z[4], sqrt(n)[4] */
    float icpt[ICPT_MAX];
    uint64_t updates;
    uint64_t nonfinite;
    uint64_t clipped;
    uint64_t not_admitted;
    uint64_t nonzero; /* table entries whose weight is non-zero */
    struct delta_log *delta; /* model sync's capture (the end of this file); NULL: off */
    pd_learn_fn learn;
    pd_margin_fn margin; /* NULL for ftrl_multi, whose lanes have a margin each */
    pd_predict_fn predict;
};

struct delta_log;
static void delta_log_free(struct delta_log *d);
static void delta_rebase(pd_learner *l);
static size_t delta_log_memory(const struct delta_log *d);

/* ---- storage formats ---- */

static inline float f32_from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof(f));
    return f;
}

static inline uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof(u));
    return u;
}

static inline double bf16_decode(uint16_t h)
{
    return f32_from_bits((uint32_t)h << 16);
}

/* bfloat16 keeps float32's exponent (accumulators such as z and n grow without a bound that
 * IEEE half's 65504 could hold; the conversion is a shift, no F16C needed) and 8 bits of
 * precision. Round-to-nearest lets an accumulator stop moving once each increment is below
 * half a unit in the last place (FTRL's sqrt(n) stops growing once |g| < sqrt(n)/11), so state
 * is rounded stochastically: the 16 dropped bits decide up or down with probability equal to
 * their fraction, which makes every store unbiased. Measured by tests/bench/bench_learner at
 * 2^22 weights: progressive log loss 0.4357 against 0.4348 for float32, where round-to-nearest
 * gave 2.63. The random bits are a hash of (entry, update count): deterministic, so a replay
 * reproduces the same weights. dither 0x8000 is round-half-up. |x| <= STATE_LIMIT. */
HOT uint16_t bf16_encode(double x, uint32_t dither)
{
    return (uint16_t)((f32_bits((float)x) + (dither & 0xffffu)) >> 16);
}

HOT uint32_t dither_hash(uint32_t idx, uint32_t salt)
{
    uint32_t h = idx * 0x9e3779b1u ^ salt;

    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    h ^= h >> 16;
    return h;
}

static inline uint32_t update_salt(uint64_t updates)
{
    uint64_t x = updates + 0x9e3779b97f4a7c15ull;

    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return (uint32_t)(x ^ (x >> 31));
}

/* An entry is `stride` consecutive values, float32 or bfloat16; value 0 is always the weight:
 *   FTRL       stride 4: w, z, sqrt(n), unused. w is cached so predict() is a plain gather and
 *              n is kept as its root so an update costs one sqrt and one division; the unused
 *              value makes entries 16 (8) bytes, so none straddles a cache line. VW's FTRL also
 *              keeps four floats per weight.
 *   AdaGrad    stride 2: w, G
 *   SGD        stride 1: w
 *   ftrl_multi stride 8: z[4], sqrt(n)[4], the four lanes' values side by side so that each
 *              is one SIMD vector; 32 (16) bytes, half a cache line (a quarter), so the four
 *              lanes cost the one random access a coordinate costs anyway. No cached w: the
 *              lanes' weights are computed where they are read, which costs a SIMD division
 *              per coordinate and halves the table (w[4] too measured the same per update,
 *              but a 2M-event replay spent more time having the kernel zero the larger
 *              table than learning). The intercept keeps w[4], z[4], sqrt(n)[4]. */
enum { FTRL_STRIDE = 4, ADAGRAD_STRIDE = 2, SGD_STRIDE = 1, MULTI_STRIDE = STRIDE_MAX };
enum { MULTI_Z = 0, MULTI_S = 4 };
enum { ICPT_W = 0, ICPT_Z = 4, ICPT_S = 8 };

static size_t stride_of(pd_optimizer opt)
{
    switch (opt) {
    case PD_OPT_FTRL:
        return FTRL_STRIDE;
    case PD_OPT_ADAGRAD:
        return ADAGRAD_STRIDE;
    case PD_OPT_SGD:
        return SGD_STRIDE;
    case PD_OPT_FTRL_MULTI:
        return MULTI_STRIDE;
    }
    return SGD_STRIDE;
}

HOT double get_val(const void *tab, size_t pos, bool f16)
{
    if (f16)
        return bf16_decode(((const uint16_t *)tab)[pos]);
    return ((const float *)tab)[pos];
}

/* Stores x rounded (stochastically by dither for bfloat16) and returns the value as stored. */
HOT double put_val(void *tab, size_t pos, bool f16, double x, uint32_t dither)
{
    if (f16) {
        uint16_t h = bf16_encode(x, dither);
        ((uint16_t *)tab)[pos] = h;
        return bf16_decode(h);
    }
    float f = (float)x;
    ((float *)tab)[pos] = f;
    return f;
}

/* Whether a stored value is non-zero, from its bits (no float compare). */
HOT bool stored_nonzero(const void *tab, size_t pos, bool f16)
{
    if (f16)
        return (((const uint16_t *)tab)[pos] & 0x7fffu) != 0;
    uint32_t u;
    memcpy(&u, (const float *)tab + pos, sizeof(u));
    return (u & 0x7fffffffu) != 0;
}

static inline bool in_range(double x)
{
    return fabs(x) <= STATE_LIMIT;
}

/* bfloat16 dither that rounds to nearest (ties up): for values derived from state, such as
 * FTRL's cached weight, where noise would only hurt. */
#define ROUND_NEAREST 0x8000u

/* ---- per-coordinate arithmetic ---- */

/* McMahan's closed form, multiplied through by alpha, with s = sqrt(n):
 * -sgn(z) max(|z| - l1, 0) alpha / (beta + s + alpha l2). Whether |z| <= l1 is data, and a
 * mispredicted branch per coordinate costs more than the division it would skip, so the dead
 * zone is arithmetic: (t + |t|) / 2 is exactly max(t, 0), and compilers turn a ?: on it into
 * a branch. Adding +0 turns the dead zone's -0 into 0. */
HOT double ftrl_weight(double z, double s, double l1, double alpha, double den)
{
    double t = fabs(z) - l1;

    t = 0.5 * (t + fabs(t));
    return -copysign(t, z) * alpha / (den + s) + 0.0;
}

/* ---- margins ---- */

/* Every entry starts with its weight, so one gather serves all optimizers. Four partial sums:
 * one chain of dependent additions would cost more than the loads. */
HOT double margin_sum(const pd_learner *l, const pd_feature *x, size_t n, bool f16, size_t stride)
{
    const uint32_t mask = l->mask;
    const void *tab = l->table;
    double m0 = 0.0, m1 = 0.0, m2 = 0.0, m3 = 0.0;
    size_t i = 0;

    for (; i + 4 <= n; i += 4) {
        m0 += get_val(tab, (size_t)(x[i].hash & mask) * stride, f16) * x[i].value;
        m1 += get_val(tab, (size_t)(x[i + 1].hash & mask) * stride, f16) * x[i + 1].value;
        m2 += get_val(tab, (size_t)(x[i + 2].hash & mask) * stride, f16) * x[i + 2].value;
        m3 += get_val(tab, (size_t)(x[i + 3].hash & mask) * stride, f16) * x[i + 3].value;
    }
    for (; i < n; i++)
        m0 += get_val(tab, (size_t)(x[i].hash & mask) * stride, f16) * x[i].value;
    return (m0 + m1) + (m2 + m3);
}

/* The margin with non-finite values taken as 0, for the rare example that has one. */
static double margin_sum_checked(const pd_learner *l, const pd_feature *x, size_t n, size_t stride)
{
    double m = 0.0;

    for (size_t i = 0; i < n; i++) {
        double v = x[i].value;
        if (fabs(v) <= FLT_MAX)
            m += get_val(l->table, (size_t)(x[i].hash & l->mask) * stride, l->f16) * v;
    }
    return m;
}

/* Weights are at most STATE_LIMIT and finite values at most FLT_MAX, so a sum of their
 * products cannot overflow a double: a non-finite sum means a non-finite value, and only then
 * are the values looked at one by one. */
HOT double margin_gather(const pd_learner *l, const pd_feature *x, size_t n, bool f16,
                         size_t stride, bool *ret_bad)
{
    double m = margin_sum(l, x, n, f16, stride);

    *ret_bad = !isfinite(m);
    if (__builtin_expect(*ret_bad, 0))
        m = margin_sum_checked(l, x, n, stride);
    return m + (l->conf.intercept ? l->icpt[0] : 0.0);
}

#define MARGIN_FN(name, f16, stride)                                                               \
    static double name(const pd_learner *l, const pd_feature *x, size_t n, bool *ret_bad)          \
    {                                                                                              \
        return margin_gather(l, x, n, f16, stride, ret_bad);                                       \
    }
MARGIN_FN(margin_ftrl_f32, false, FTRL_STRIDE)
MARGIN_FN(margin_ftrl_f16, true, FTRL_STRIDE)
MARGIN_FN(margin_adagrad_f32, false, ADAGRAD_STRIDE)
MARGIN_FN(margin_adagrad_f16, true, ADAGRAD_STRIDE)
MARGIN_FN(margin_sgd_f32, false, SGD_STRIDE)
MARGIN_FN(margin_sgd_f16, true, SGD_STRIDE)
#undef MARGIN_FN

/* ---- link and loss ---- */

/* Clips m in place; returns whether it had to. A NaN margin (not reachable from finite state
 * and inputs, but cheap to rule out) becomes 0 and counts as clipped. */
HOT bool clip_margin(double *m, double limit)
{
    double v = *m;

    if (fabs(v) <= limit)
        return false;
    *m = isnan(v) ? 0.0 : copysign(limit, v);
    return true;
}

HOT double link_output(const pd_learner *l, double m)
{
    if (l->conf.type == PD_MODEL_LOGISTIC)
        return 1.0 / (1.0 + exp(-m));
    return m;
}

/* d loss / d margin, at the clipped margin m whose output is out. */
HOT double loss_gradient(const pd_learner *l, double m, double out, double label)
{
    switch (l->conf.loss) {
    case PD_LOSS_LOGISTIC:
    case PD_LOSS_SQUARED:
        return out - label;
    case PD_LOSS_HUBER: {
        double r = out - label, d = l->conf.huber_delta;
        return r > d ? d : (r < -d ? -d : r);
    }
    case PD_LOSS_HINGE: {
        double y = label > 0.5 ? 1.0 : -1.0;
        return y * m < 1.0 ? -y : 0.0;
    }
    }
    return 0.0;
}

/* The part of learn() before the update pass: clip, output, input checks. Returns whether to
 * update, with the importance-scaled loss gradient in ret_gm. */
HOT bool learn_prologue(pd_learner *l, double m, bool bad, double label, double importance,
                        double *ret_out, double *ret_gm)
{
    if (clip_margin(&m, l->conf.max_abs_margin))
        l->clipped++;
    *ret_out = link_output(l, m);
    if (bad || !isfinite(label) || !isfinite(importance)) {
        l->nonfinite++;
        return false;
    }
    if (!(importance > 0))
        return false;
    *ret_gm = loss_gradient(l, m, *ret_out, label) * importance;
    return true;
}

/* Admission for an entry whose state is all zero: count the sighting and say whether the
 * coordinate may learn now. An entry with state is admitted already (only admitted entries
 * learn), so the counters are only touched on the way in. */
HOT bool admit(pd_learner *l, uint32_t idx)
{
    unsigned c = l->seen[idx];

    c += c < ADMIT_MAX;
    l->seen[idx] = (uint8_t)c;
    if (c >= (unsigned)l->conf.admission_min_count)
        return true;
    l->not_admitted++;
    return false;
}

/* ---- update passes ----
 *
 * Each is specialised by storage format (f16) and admission (adm), both constants, so the loop
 * carries neither test. A coordinate's new state is checked against STATE_LIMIT before any of
 * it is stored. */

HOT double learn_ftrl(pd_learner *l, const pd_feature *x, size_t n, double label, double importance,
                      bool f16, bool adm)
{
    const double l1 = l->conf.l1, alpha = l->conf.alpha, den = l->ftrl_den;
    const double inv_alpha = l->inv_alpha;
    const uint32_t mask = l->mask, salt = f16 ? update_salt(l->updates) : 0;
    void *tab = l->table;
    bool bad, failed = false;
    double out, gm;
    int64_t nz = 0;
    double m = margin_gather(l, x, n, f16, FTRL_STRIDE, &bad);

    if (!learn_prologue(l, m, bad, label, importance, &out, &gm))
        return out;

    for (size_t i = 0; i < n; i++) {
        const uint32_t idx = x[i].hash & mask;
        const size_t pos = (size_t)idx * FTRL_STRIDE;
        const double w = get_val(tab, pos, f16), z = get_val(tab, pos + 1, f16);
        const double s = get_val(tab, pos + 2, f16);

        if (adm && z == 0.0 && s == 0.0 && !admit(l, idx))
            continue;
        const double g = gm * x[i].value;
        const double s2 = sqrt(s * s + g * g);
        const double z2 = z + g - (s2 - s) * inv_alpha * w;
        if (__builtin_expect(!(fabs(z2) <= STATE_LIMIT && s2 <= STATE_LIMIT), 0)) {
            failed = true;
            continue;
        }
        const uint32_t d = f16 ? dither_hash(idx, salt) : 0;
        const bool was = stored_nonzero(tab, pos, f16);
        /* the cached weight is that of the state as stored */
        const double zs = put_val(tab, pos + 1, f16, z2, d);
        const double ss = put_val(tab, pos + 2, f16, s2, d >> 16);
        put_val(tab, pos, f16, ftrl_weight(zs, ss, l1, alpha, den), ROUND_NEAREST);
        nz += (int)stored_nonzero(tab, pos, f16) - (int)was;
    }
    if (l->conf.intercept) {
        const double w = l->icpt[0], z = l->icpt[1], s = l->icpt[2];
        const double s2 = sqrt(s * s + gm * gm);
        const double z2 = z + gm - (s2 - s) * inv_alpha * w;

        if (in_range(z2) && s2 <= STATE_LIMIT) {
            l->icpt[1] = (float)z2;
            l->icpt[2] = (float)s2;
            l->icpt[0] = (float)ftrl_weight(l->icpt[1], l->icpt[2], 0.0, alpha, l->ftrl_icpt_den);
        } else {
            failed = true;
        }
    }
    l->nonzero += (uint64_t)nz;
    l->nonfinite += failed;
    l->updates++;
    return out;
}

HOT double learn_adagrad(pd_learner *l, const pd_feature *x, size_t n, double label,
                         double importance, bool f16, bool adm)
{
    const double l2 = l->conf.l2, rate = l->conf.learning_rate;
    const uint32_t mask = l->mask, salt = f16 ? update_salt(l->updates) : 0;
    void *tab = l->table;
    bool bad, failed = false;
    double out, gm;
    int64_t nz = 0;
    double m = margin_gather(l, x, n, f16, ADAGRAD_STRIDE, &bad);

    if (!learn_prologue(l, m, bad, label, importance, &out, &gm))
        return out;

    for (size_t i = 0; i < n; i++) {
        const uint32_t idx = x[i].hash & mask;
        const size_t pos = (size_t)idx * ADAGRAD_STRIDE;
        const double w = get_val(tab, pos, f16), G = get_val(tab, pos + 1, f16);

        if (adm && w == 0.0 && G == 0.0 && !admit(l, idx))
            continue;
        const double g = gm * x[i].value + l2 * w;
        const double G2 = G + g * g;
        /* G2 = 0 only when g = 0: no step, and no 0/0 */
        const double w2 = w - (G2 > 0.0 ? rate * g / sqrt(G2) : 0.0);
        if (__builtin_expect(!(fabs(w2) <= STATE_LIMIT && G2 <= STATE_LIMIT), 0)) {
            failed = true;
            continue;
        }
        const uint32_t d = f16 ? dither_hash(idx, salt) : 0;
        const bool was = stored_nonzero(tab, pos, f16);
        put_val(tab, pos, f16, w2, d);
        put_val(tab, pos + 1, f16, G2, d >> 16);
        nz += (int)stored_nonzero(tab, pos, f16) - (int)was;
    }
    if (l->conf.intercept) {
        double G2 = l->icpt[1] + gm * gm;
        double w2 = l->icpt[0] - (G2 > 0 ? rate * gm / sqrt(G2) : 0.0);

        if (in_range(w2) && G2 <= STATE_LIMIT) {
            l->icpt[0] = (float)w2;
            l->icpt[1] = (float)G2;
        } else {
            failed = true;
        }
    }
    l->nonzero += (uint64_t)nz;
    l->nonfinite += failed;
    l->updates++;
    return out;
}

static double sgd_rate(const pd_learner_conf *conf, uint64_t t)
{
    double p = conf->power_t;

    if (p == 0.0)
        return conf->learning_rate;
    double r = conf->initial_t / (conf->initial_t + (double)t);
    if (p == 0.5)
        return conf->learning_rate * sqrt(r);
    if (p == 1.0)
        return conf->learning_rate * r;
    return conf->learning_rate * pow(r, p);
}

HOT double learn_sgd(pd_learner *l, const pd_feature *x, size_t n, double label, double importance,
                     bool f16, bool adm)
{
    const double l2 = l->conf.l2;
    const uint32_t mask = l->mask, salt = f16 ? update_salt(l->updates) : 0;
    void *tab = l->table;
    bool bad, failed = false;
    double out, gm;
    int64_t nz = 0;
    double m = margin_gather(l, x, n, f16, SGD_STRIDE, &bad);

    if (!learn_prologue(l, m, bad, label, importance, &out, &gm))
        return out;

    const double rate = sgd_rate(&l->conf, l->updates);
    for (size_t i = 0; i < n; i++) {
        const uint32_t idx = x[i].hash & mask;
        const double w = get_val(tab, idx, f16);

        if (adm && w == 0.0 && !admit(l, idx))
            continue;
        const double w2 = w - rate * (gm * x[i].value + l2 * w);
        if (__builtin_expect(!(fabs(w2) <= STATE_LIMIT), 0)) {
            failed = true;
            continue;
        }
        const bool was = stored_nonzero(tab, idx, f16);
        put_val(tab, idx, f16, w2, f16 ? dither_hash(idx, salt) : 0);
        nz += (int)stored_nonzero(tab, idx, f16) - (int)was;
    }
    if (l->conf.intercept) {
        double w2 = l->icpt[0] - rate * gm;

        if (in_range(w2))
            l->icpt[0] = (float)w2;
        else
            failed = true;
    }
    l->nonzero += (uint64_t)nz;
    l->nonfinite += failed;
    l->updates++;
    return out;
}

/* ---- ftrl_multi ----
 *
 * Why four lanes, this rule and these constants (tests/bench/quality_defaults.py, its README
 * section, and prototypes over the examples it exports): no single FTRL alpha is best
 * everywhere (bank marketing wants 0.1, the delayed-label streams 1 to 3, the generated streams
 * with a known optimum 0.3), while the best alpha of each data set ties Vowpal Wabbit's best
 * tuned learner on nearly all of them. Lanes in half-decade steps from alpha / sqrt(10) to
 * 10 alpha (0.095 .. 3 by default) cover those. Four is what one SIMD vector of float32 holds:
 * a fifth lane (0.03) helped only the 100- and 200-example sets, and doubled the update's
 * instructions. Mixing the lanes' probabilities by their likelihood (eta 1: Bayesian model
 * averaging) costs up to ln 4 nats over the best lane in all, which 4,000 examples still feel
 * (+0.0003 on bank marketing); eta from 0.1 to 0.5 did as well on the large sets and better on
 * the small ones, and 1/4 is two square roots. Serving the lane with the lowest decayed loss,
 * with hysteresis, was worse than mixing on every set, and so was averaging margins instead of
 * probabilities. Without the fixed share a lane that is bad early (a fast one, before the runs
 * of joined labels start) keeps a vanishing weight for good: 8% worse on the joined eventgen
 * stream at eta 1. Share 1e-4 against 1e-5 cost at most 0.00006 (bank marketing) and gained
 * OTTO 3%; 1e-3 cost the large sets 0.1%. */

_Static_assert(LANES == 4, "ftrl_multi's lanes are one vector of four float32");

/* lane j's alpha over the configured alpha: 10^((j - 1) / 2) */
static const double lane_scale[LANES] = {0.31622776601683794, 1.0, 3.1622776601683795, 10.0};

#define MIX_ETA   0.25 /* the fast path below takes q^(1/4) as sqrt(sqrt(q)) */
#define MIX_SHARE 1e-4
/* a lane's likelihood is taken as at least this (below it only with max_abs_margin > 690) */
#define MIX_LIKELIHOOD_MIN 1e-300

/* The lanes' arithmetic between loading a coordinate's state and storing it is SIMD over the
 * four lanes, in float32 as the state is (float32 or bfloat16): GCC and Clang vector extensions,
 * SSE on x86-64, NEON on arm64, plain code elsewhere. In float64 and scalar, the lanes' square
 * roots and divisions made learn() several times as slow as a single FTRL's. A sum of squares
 * over 1.8e19 does not fit float32: such an update fails the range check, like one whose state
 * would not fit the storage. */
typedef float v4f __attribute__((vector_size(16)));
typedef int32_t v4i __attribute__((vector_size(16)));
typedef uint32_t v4u __attribute__((vector_size(16)));
typedef double v2d __attribute__((vector_size(16)));

HOT v4f v_sqrt(v4f a)
{
    v4f r;

    for (int k = 0; k < 4; k++)
        r[k] = sqrtf(a[k]);
    return r;
}

HOT v4f v_abs(v4f a)
{
    return (v4f)((v4i)a & 0x7fffffff);
}

/* The mask's elements as four bits: movmskps where there is one, as compilers otherwise reduce
 * element by element. */
HOT unsigned v_bits(v4i m)
{
#if defined(__SSE__)
    return (unsigned)__builtin_ia32_movmskps((v4f)m);
#else
    return (m[0] != 0) | (m[1] != 0) << 1 | (m[2] != 0) << 2 | (m[3] != 0) << 3;
#endif
}

/* Values pos..pos+3 of the table as a vector. */
HOT v4f load4(const void *tab, size_t pos, bool f16)
{
    if (f16) {
        const uint16_t *h = (const uint16_t *)tab + pos;
        return (v4f)((v4u){h[0], h[1], h[2], h[3]} << 16);
    }
    v4f r;
    memcpy(&r, (const float *)tab + pos, sizeof(r));
    return r;
}

/* Stores x at pos..pos+3, rounded (stochastically by dither for bfloat16); returns the values
 * as stored. */
HOT v4f store4(void *tab, size_t pos, bool f16, v4f x, v4u dither)
{
    if (f16) {
        v4u h = ((v4u)x + (dither & 0xffffu)) >> 16;
        uint16_t *t = (uint16_t *)tab + pos;
        for (int k = 0; k < 4; k++)
            t[k] = (uint16_t)h[k];
        return (v4f)(h << 16);
    }
    memcpy((float *)tab + pos, &x, sizeof(x));
    return x;
}

/* dither_hash() of idx under each lane's salt */
HOT v4u dither_hash4(uint32_t idx, v4u salt)
{
    return (v4u){dither_hash(idx, salt[0]), dither_hash(idx, salt[1]), dither_hash(idx, salt[2]),
                 dither_hash(idx, salt[3])};
}

/* ftrl_weight() of four lanes (a zero weight may come out as -0: it is never stored) */
HOT v4f ftrl_weight4(v4f z, v4f s, float l1, v4f alpha, v4f den)
{
    v4f t = v_abs(z) - l1;

    t = 0.5f * (t + v_abs(t));
    /* copysign(t, z) */
    v4f w = (v4f)((v4i)t | ((v4i)z & (int32_t)0x80000000));
    return -w * alpha / (den + s);
}

/* The lanes' float32 constants for the vector arithmetic. */
typedef struct lanes4 {
    v4f alpha, inv_alpha, den;
    float l1;
} lanes4;

HOT lanes4 lanes_of(const pd_learner *l)
{
    lanes4 c;

    for (size_t j = 0; j < LANES; j++) {
        c.alpha[j] = (float)l->lane_alpha[j];
        c.inv_alpha[j] = (float)l->lane_inv_alpha[j];
        c.den[j] = (float)l->lane_den[j];
    }
    c.l1 = (float)l->conf.l1;
    return c;
}

/* The lanes' weights of the entry at pos. */
HOT v4f entry_weights(const void *tab, size_t pos, bool f16, const lanes4 *c)
{
    return ftrl_weight4(load4(tab, pos + MULTI_Z, f16), load4(tab, pos + MULTI_S, f16), c->l1,
                        c->alpha, c->den);
}

/* Adds w * v, in float64, to the margins of lanes 0..1 (lo) and 2..3 (hi). Two-double vectors:
 * a four-double one is wider than SSE, and compilers keep it on the stack. */
HOT void add_margins(v2d *lo, v2d *hi, v4f w, double v)
{
    *lo += (v2d){w[0], w[1]} * v;
    *hi += (v2d){w[2], w[3]} * v;
}

/* Every lane's margin for x into m; returns whether a value was not finite (such values then
 * count as 0, as in margin_gather()). Two sets of sums, for even and odd i: one chain of
 * dependent additions would cost more than the loads. */
HOT bool multi_margins(const pd_learner *l, const pd_feature *x, size_t n, bool f16, double *m)
{
    const uint32_t mask = l->mask;
    const void *tab = l->table;
    const lanes4 c = lanes_of(l);
    v2d lo0 = {0.0, 0.0}, hi0 = {0.0, 0.0}, lo1 = {0.0, 0.0}, hi1 = {0.0, 0.0};
    size_t i = 0;

    for (; i + 2 <= n; i += 2) {
        const size_t p0 = (size_t)(x[i].hash & mask) * MULTI_STRIDE;
        const size_t p1 = (size_t)(x[i + 1].hash & mask) * MULTI_STRIDE;
        add_margins(&lo0, &hi0, entry_weights(tab, p0, f16, &c), x[i].value);
        add_margins(&lo1, &hi1, entry_weights(tab, p1, f16, &c), x[i + 1].value);
    }
    if (i < n)
        add_margins(&lo0, &hi0,
                    entry_weights(tab, (size_t)(x[i].hash & mask) * MULTI_STRIDE, f16, &c),
                    x[i].value);
    v2d sum_lo = lo0 + lo1, sum_hi = hi0 + hi1;
    /* as in margin_gather(): only a non-finite value makes the sums non-finite */
    const bool bad = !isfinite(sum_lo[0] + sum_lo[1] + sum_hi[0] + sum_hi[1]);
    if (__builtin_expect(bad, 0)) {
        sum_lo = sum_hi = (v2d){0.0, 0.0};
        for (i = 0; i < n; i++) {
            const size_t pos = (size_t)(x[i].hash & mask) * MULTI_STRIDE;
            if (fabs(x[i].value) <= FLT_MAX)
                add_margins(&sum_lo, &sum_hi, entry_weights(tab, pos, f16, &c), x[i].value);
        }
    }
    const double sums[LANES] = {sum_lo[0], sum_lo[1], sum_hi[0], sum_hi[1]};
    for (size_t j = 0; j < LANES; j++)
        m[j] = sums[j] + (l->conf.intercept ? l->icpt[ICPT_W + j] : 0.0);
    return bad;
}

/* sigmoid(m) and 1 - sigmoid(m), neither by cancellation nor overflowing for any m. */
HOT void sigmoid_pair(double m, double *ret_p, double *ret_q)
{
    const double e = exp(-fabs(m));
    const double a = 1.0 / (1.0 + e), b = e * a;

    *ret_p = m >= 0.0 ? a : b;
    *ret_q = m >= 0.0 ? b : a;
}

/* Clips each lane's margin and gives its probability of a positive (p) and of a negative (q);
 * returns whether any margin was clipped. */
HOT bool multi_probabilities(const pd_learner *l, double *m, double *p, double *q)
{
    bool clipped = false;

    for (size_t j = 0; j < LANES; j++)
        clipped |= clip_margin(&m[j], l->conf.max_abs_margin);
    for (size_t j = 0; j < LANES; j++)
        sigmoid_pair(m[j], &p[j], &q[j]);
    return clipped;
}

HOT double mixture(const pd_learner *l, const double *p)
{
    double out = 0.0;

    for (size_t j = 0; j < LANES; j++)
        out += l->mix[j] * p[j];
    /* the weights sum to 1 only up to rounding */
    return fmin(fmax(out, 0.0), 1.0);
}

/* The mixture weights after an example with this label: each times the lane's likelihood of the
 * label to the power eta * importance, normalised, then the fixed share. */
static void mix_update(pd_learner *l, const double *p, const double *q, double label,
                       double importance)
{
    double u[LANES], sum = 0.0;

    if (importance == 1.0 && (label == 0.0 || label == 1.0)) {
        for (size_t j = 0; j < LANES; j++)
            u[j] = l->mix[j] * sqrt(sqrt(fmax(label != 0.0 ? p[j] : q[j], MIX_LIKELIHOOD_MIN)));
    } else {
        /* in logs, so that a large importance cannot underflow every weight at once */
        const double y = fmin(fmax(label, 0.0), 1.0);
        double a[LANES], top = -INFINITY;

        for (size_t j = 0; j < LANES; j++) {
            const double ll = y * log(fmax(p[j], MIX_LIKELIHOOD_MIN)) +
                              (1.0 - y) * log(fmax(q[j], MIX_LIKELIHOOD_MIN));
            a[j] = log(l->mix[j]) + MIX_ETA * importance * ll;
            top = fmax(top, a[j]);
        }
        for (size_t j = 0; j < LANES; j++)
            u[j] = exp(a[j] - top);
    }
    for (size_t j = 0; j < LANES; j++)
        sum += u[j];
    if (!(sum > 0.0 && sum <= DBL_MAX))
        return; /* every lane's a[j] was -inf: nothing to learn about the lanes */
    for (size_t j = 0; j < LANES; j++)
        l->mix[j] = (1.0 - MIX_SHARE) * (u[j] / sum) + MIX_SHARE / LANES;
}

HOT double learn_multi(pd_learner *l, const pd_feature *x, size_t n, double label,
                       double importance, bool f16, bool adm)
{
    const float limit = (float)STATE_LIMIT;
    const uint32_t mask = l->mask, salt = f16 ? update_salt(l->updates) : 0;
    const lanes4 c = lanes_of(l);
    void *tab = l->table;
    double m[LANES], p[LANES], q[LANES], gm[LANES];
    v4f grad;
    v4u salts;
    bool failed = false;
    const bool bad = multi_margins(l, x, n, f16, m);

    if (multi_probabilities(l, m, p, q))
        l->clipped++;
    const double out = mixture(l, p);
    if (bad || !isfinite(label) || !isfinite(importance)) {
        l->nonfinite++;
        return out;
    }
    if (!(importance > 0))
        return out;
    for (size_t j = 0; j < LANES; j++) {
        gm[j] = (p[j] - label) * importance;
        grad[j] = (float)gm[j];
        /* the lanes' bfloat16 roundings independent of each other */
        salts[j] = salt + (uint32_t)j * 0x68e31da4u;
    }

    for (size_t i = 0; i < n; i++) {
        const uint32_t idx = x[i].hash & mask;
        const size_t pos = (size_t)idx * MULTI_STRIDE;
        const v4f z = load4(tab, pos + MULTI_Z, f16), s = load4(tab, pos + MULTI_S, f16);

        if (adm && v_bits((z != 0.0f) | (s != 0.0f)) == 0 && !admit(l, idx))
            continue;
        const v4f w = ftrl_weight4(z, s, c.l1, c.alpha, c.den);
        const v4f g = grad * x[i].value;
        const v4f s2 = v_sqrt(s * s + g * g);
        const v4f z2 = z + g - (s2 - s) * c.inv_alpha * w;
        /* within the limit, and not NaN (a NaN fails <=) */
        if (__builtin_expect(v_bits((v_abs(z2) <= limit) & (s2 <= limit)) != 0xf, 0)) {
            failed = true;
            continue;
        }
        const v4u d = f16 ? dither_hash4(idx, salts) : (v4u){0, 0, 0, 0};
        store4(tab, pos + MULTI_Z, f16, z2, d);
        store4(tab, pos + MULTI_S, f16, s2, d >> 16);
    }
    if (l->conf.intercept) {
        float *ic = l->icpt;
        double z2[LANES], s2[LANES];
        bool fits = true;

        for (size_t j = 0; j < LANES; j++) {
            const double w = ic[ICPT_W + j], z = ic[ICPT_Z + j], s = ic[ICPT_S + j];
            s2[j] = sqrt(s * s + gm[j] * gm[j]);
            z2[j] = z + gm[j] - (s2[j] - s) * l->lane_inv_alpha[j] * w;
            fits &= in_range(z2[j]) & (s2[j] <= STATE_LIMIT);
        }
        if (fits) {
            for (size_t j = 0; j < LANES; j++) {
                ic[ICPT_Z + j] = (float)z2[j];
                ic[ICPT_S + j] = (float)s2[j];
                ic[ICPT_W + j] = (float)ftrl_weight(ic[ICPT_Z + j], ic[ICPT_S + j], 0.0,
                                                    l->lane_alpha[j], l->ftrl_icpt_den);
            }
        } else {
            failed = true;
        }
    }
    mix_update(l, p, q, label, importance);
    l->nonfinite += failed;
    l->updates++;
    return out;
}

HOT double predict_multi(const pd_learner *l, const pd_feature *x, size_t n, bool f16)
{
    double m[LANES], p[LANES], q[LANES];

    multi_margins(l, x, n, f16, m);
    multi_probabilities(l, m, p, q);
    return mixture(l, p);
}

static double predict_multi_f32(const pd_learner *l, const pd_feature *x, size_t n)
{
    return predict_multi(l, x, n, false);
}

static double predict_multi_f16(const pd_learner *l, const pd_feature *x, size_t n)
{
    return predict_multi(l, x, n, true);
}

/* The other optimizers: one margin, clipped, through the link. */
static double predict_single(const pd_learner *l, const pd_feature *x, size_t n)
{
    bool bad;
    double m = l->margin(l, x, n, &bad);

    clip_margin(&m, l->conf.max_abs_margin);
    return link_output(l, m);
}

/* The lane whose weights pd_learner_weight() reports: the one with the largest mixture weight
 * (the first of equals); 0 for the other optimizers. */
static size_t top_lane(const pd_learner *l)
{
    size_t top = 0;

    if (l->conf.optimizer != PD_OPT_FTRL_MULTI)
        return 0;
    for (size_t j = 1; j < LANES; j++)
        if (l->mix[j] > l->mix[top])
            top = j;
    return top;
}

#define LEARN_FN(name, body, f16, adm)                                                             \
    static double name(pd_learner *l, const pd_feature *x, size_t n, double label,                 \
                       double importance)                                                          \
    {                                                                                              \
        return body(l, x, n, label, importance, f16, adm);                                         \
    }
LEARN_FN(learn_ftrl_f32, learn_ftrl, false, false)
LEARN_FN(learn_ftrl_f16, learn_ftrl, true, false)
LEARN_FN(learn_ftrl_f32_adm, learn_ftrl, false, true)
LEARN_FN(learn_ftrl_f16_adm, learn_ftrl, true, true)
LEARN_FN(learn_adagrad_f32, learn_adagrad, false, false)
LEARN_FN(learn_adagrad_f16, learn_adagrad, true, false)
LEARN_FN(learn_adagrad_f32_adm, learn_adagrad, false, true)
LEARN_FN(learn_adagrad_f16_adm, learn_adagrad, true, true)
LEARN_FN(learn_sgd_f32, learn_sgd, false, false)
LEARN_FN(learn_sgd_f16, learn_sgd, true, false)
LEARN_FN(learn_sgd_f32_adm, learn_sgd, false, true)
LEARN_FN(learn_sgd_f16_adm, learn_sgd, true, true)
LEARN_FN(learn_multi_f32, learn_multi, false, false)
LEARN_FN(learn_multi_f16, learn_multi, true, false)
LEARN_FN(learn_multi_f32_adm, learn_multi, false, true)
LEARN_FN(learn_multi_f16_adm, learn_multi, true, true)
#undef LEARN_FN

/* The kernels for a learner's optimizer, format and admission; [optimizer][f16][adm]. */
static const pd_learn_fn learn_kernels[4][2][2] = {
    [PD_OPT_FTRL] = {{learn_ftrl_f32, learn_ftrl_f32_adm}, {learn_ftrl_f16, learn_ftrl_f16_adm}},
    [PD_OPT_ADAGRAD] = {{learn_adagrad_f32, learn_adagrad_f32_adm},
                        {learn_adagrad_f16, learn_adagrad_f16_adm}},
    [PD_OPT_SGD] = {{learn_sgd_f32, learn_sgd_f32_adm}, {learn_sgd_f16, learn_sgd_f16_adm}},
    [PD_OPT_FTRL_MULTI] = {{learn_multi_f32, learn_multi_f32_adm},
                           {learn_multi_f16, learn_multi_f16_adm}},
};
/* ftrl_multi has none: its lanes have a margin each */
static const pd_margin_fn margin_kernels[4][2] = {
    [PD_OPT_FTRL] = {margin_ftrl_f32, margin_ftrl_f16},
    [PD_OPT_ADAGRAD] = {margin_adagrad_f32, margin_adagrad_f16},
    [PD_OPT_SGD] = {margin_sgd_f32, margin_sgd_f16},
};

static void select_kernels(pd_learner *l)
{
    l->learn = learn_kernels[l->conf.optimizer][l->f16][l->seen != NULL];
    l->margin = margin_kernels[l->conf.optimizer][l->f16];
    if (l->conf.optimizer == PD_OPT_FTRL_MULTI)
        l->predict = l->f16 ? predict_multi_f16 : predict_multi_f32;
    else
        l->predict = predict_single;
}

/* ---- configuration ---- */

static const char *type_name(pd_model_type t)
{
    switch (t) {
    case PD_MODEL_LOGISTIC:
        return "logistic";
    case PD_MODEL_LINEAR:
        return "linear";
    case PD_MODEL_HINGE:
        return "hinge";
    }
    return "unknown";
}

static const char *loss_name(pd_loss loss)
{
    switch (loss) {
    case PD_LOSS_LOGISTIC:
        return "logistic";
    case PD_LOSS_SQUARED:
        return "squared";
    case PD_LOSS_HUBER:
        return "huber";
    case PD_LOSS_HINGE:
        return "hinge";
    }
    return "unknown";
}

static bool positive(double v)
{
    return v > 0 && isfinite(v);
}

static bool non_negative(double v)
{
    return v >= 0 && isfinite(v);
}

int pd_learner_check_conf(const pd_learner_conf *conf, char *errbuf, size_t errlen)
{
    if (conf == NULL) {
        pd_set_error(errbuf, errlen, "no learner configuration");
        return -EINVAL;
    }
    switch (conf->type) {
    case PD_MODEL_LOGISTIC:
    case PD_MODEL_HINGE:
        if (conf->loss != (conf->type == PD_MODEL_LOGISTIC ? PD_LOSS_LOGISTIC : PD_LOSS_HINGE))
            goto bad_loss;
        break;
    case PD_MODEL_LINEAR:
        if (conf->loss != PD_LOSS_SQUARED && conf->loss != PD_LOSS_HUBER)
            goto bad_loss;
        break;
    default:
        pd_set_error(errbuf, errlen, "unknown model type %d", (int)conf->type);
        return -EINVAL;
    }
    if (conf->loss == PD_LOSS_HUBER && !positive(conf->huber_delta)) {
        pd_set_error(errbuf, errlen, "huber_delta must be > 0, not %g", conf->huber_delta);
        return -EINVAL;
    }
    switch (conf->optimizer) {
    case PD_OPT_FTRL:
    case PD_OPT_FTRL_MULTI:
        if (conf->optimizer == PD_OPT_FTRL_MULTI && conf->type != PD_MODEL_LOGISTIC) {
            /* its lanes are mixed by their likelihood of the label */
            pd_set_error(errbuf, errlen, "optimizer ftrl_multi is for logistic models, not %s",
                         type_name(conf->type));
            return -EINVAL;
        }
        /* ftrl_multi's fastest lane learns at 10 alpha */
        if (!positive(conf->alpha) || !positive(conf->alpha * 10.0)) {
            pd_set_error(errbuf, errlen, "ftrl alpha must be > 0, not %g", conf->alpha);
            return -EINVAL;
        }
        /* beta = 0 would divide by sqrt(n) = 0 for a coordinate whose gradients underflowed */
        if (!positive(conf->beta)) {
            pd_set_error(errbuf, errlen, "ftrl beta must be > 0, not %g", conf->beta);
            return -EINVAL;
        }
        if (!non_negative(conf->l1)) {
            pd_set_error(errbuf, errlen, "l1 must be >= 0, not %g", conf->l1);
            return -EINVAL;
        }
        break;
    case PD_OPT_ADAGRAD:
    case PD_OPT_SGD:
        if (!positive(conf->learning_rate)) {
            pd_set_error(errbuf, errlen, "learning_rate must be > 0, not %g", conf->learning_rate);
            return -EINVAL;
        }
        break;
    default:
        pd_set_error(errbuf, errlen, "unknown optimizer %d", (int)conf->optimizer);
        return -EINVAL;
    }
    if (!non_negative(conf->l2)) {
        pd_set_error(errbuf, errlen, "l2 must be >= 0, not %g", conf->l2);
        return -EINVAL;
    }
    if (conf->optimizer == PD_OPT_SGD) {
        if (!non_negative(conf->power_t) || !non_negative(conf->initial_t)) {
            pd_set_error(errbuf, errlen, "sgd power_t and initial_t must be >= 0");
            return -EINVAL;
        }
        if (conf->power_t > 0 && conf->initial_t == 0) {
            pd_set_error(errbuf, errlen, "sgd initial_t must be > 0 when power_t is > 0");
            return -EINVAL;
        }
        /* the L2 decay alone multiplies w by (1 - rate l2) each update */
        if (conf->learning_rate * conf->l2 > 1.0) {
            pd_set_error(errbuf, errlen, "sgd learning_rate * l2 must be <= 1 (is %g)",
                      conf->learning_rate * conf->l2);
            return -EINVAL;
        }
    }
    if (conf->bits < PD_MIN_HASH_BITS || conf->bits > PD_MAX_HASH_BITS) {
        pd_set_error(errbuf, errlen, "bits must be between %d and %d, not %d", PD_MIN_HASH_BITS,
                  PD_MAX_HASH_BITS, conf->bits);
        return -EINVAL;
    }
    if (conf->weights != PD_WEIGHTS_F32 && conf->weights != PD_WEIGHTS_F16) {
        pd_set_error(errbuf, errlen, "unknown weight format %d", (int)conf->weights);
        return -EINVAL;
    }
    if (conf->admission_min_count < 0 || conf->admission_min_count > ADMIT_MAX) {
        pd_set_error(errbuf, errlen, "admission_min_count must be between 0 and %d, not %lld",
                  ADMIT_MAX, (long long)conf->admission_min_count);
        return -EINVAL;
    }
    if (!positive(conf->max_abs_margin)) {
        pd_set_error(errbuf, errlen, "max_abs_margin must be > 0 and finite, not %g",
                  conf->max_abs_margin);
        return -EINVAL;
    }
    return 0;

bad_loss:
    pd_set_error(errbuf, errlen, "loss %s does not go with model type %s", loss_name(conf->loss),
              type_name(conf->type));
    return -EINVAL;
}

size_t pd_learner_bytes_per_weight(const pd_learner_conf *conf)
{
    size_t bytes = stride_of(conf->optimizer) * (conf->weights == PD_WEIGHTS_F16 ? 2 : 4);

    return bytes + (conf->admission_min_count > 0 ? 1 : 0);
}

static void derive(pd_learner *l)
{
    l->inv_alpha = 1.0 / l->conf.alpha;
    l->ftrl_den = l->conf.beta + l->conf.alpha * l->conf.l2;
    l->ftrl_icpt_den = l->conf.beta;
    for (size_t j = 0; j < LANES; j++) {
        l->lane_alpha[j] = l->conf.alpha * lane_scale[j];
        l->lane_inv_alpha[j] = 1.0 / l->lane_alpha[j];
        l->lane_den[j] = l->conf.beta + l->lane_alpha[j] * l->conf.l2;
    }
}

static void *table_alloc(size_t bytes, size_t *ret_map_bytes)
{
    *ret_map_bytes = 0;
    if (bytes < TABLE_MMAP_MIN) {
        /* aligned to a cache line, so that no entry straddles two */
        size_t size = (bytes + 63) & ~(size_t)63;
        void *p = aligned_alloc(64, size);
        if (p != NULL)
            memset(p, 0, size);
        return p;
    }

    /* Anonymous memory is zero and only backed as it is touched. Over-map by a huge page to
     * align the table on one, and give the slack back. */
    size_t map = bytes + HUGE_PAGE;
    char *p = mmap(NULL, map, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    uintptr_t start = ((uintptr_t)p + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1);
    size_t head = start - (uintptr_t)p;
    if (head > 0)
        munmap(p, head);
    size_t tail = map - head - bytes;
    if (tail > 0)
        munmap((char *)start + bytes, tail);
#ifdef MADV_HUGEPAGE
    /* advice only: without transparent huge pages the table still works */
    (void)madvise((void *)start, bytes, MADV_HUGEPAGE);
#endif
    *ret_map_bytes = bytes;
    return (void *)start;
}

static void table_release(void *table, size_t map_bytes)
{
    if (map_bytes > 0)
        munmap(table, map_bytes);
    else
        free(table);
}

pd_learner *pd_learner_new(const pd_learner_conf *conf, char *errbuf, size_t errlen)
{
    pd_learner *l;

    if (pd_learner_check_conf(conf, errbuf, errlen) < 0)
        return NULL;
    l = calloc(1, sizeof(*l));
    if (l == NULL) {
        pd_set_error(errbuf, errlen, "out of memory");
        return NULL;
    }
    l->conf = *conf;
    l->mask = (uint32_t)((1ull << conf->bits) - 1);
    l->f16 = conf->weights == PD_WEIGHTS_F16;
    l->stride = stride_of(conf->optimizer);
    l->entry_bytes = l->stride * (l->f16 ? 2 : 4);
    l->table_bytes = l->entry_bytes << conf->bits;
    derive(l);
    for (size_t j = 0; j < LANES; j++)
        l->mix[j] = 1.0 / LANES; /* ftrl_multi's; the others have none */

    l->table = table_alloc(l->table_bytes, &l->table_map_bytes);
    if (l->table == NULL) {
        pd_set_error(errbuf, errlen, "cannot allocate a weight table of %zu bytes (bits %d)",
                  l->table_bytes, conf->bits);
        goto out_free_learner;
    }
    if (conf->admission_min_count > 0) {
        l->seen = calloc((size_t)1 << conf->bits, 1);
        if (l->seen == NULL) {
            pd_set_error(errbuf, errlen, "cannot allocate admission counters (bits %d)", conf->bits);
            goto out_free_table;
        }
    }

    select_kernels(l);
    return l;

out_free_table:
    table_release(l->table, l->table_map_bytes);
out_free_learner:
    free(l);
    return NULL;
}

void pd_learner_free(pd_learner *learner)
{
    if (learner == NULL)
        return;
    if (learner->table != NULL)
        table_release(learner->table, learner->table_map_bytes);
    free(learner->seen);
    delta_log_free(learner->delta);
    free(learner);
}

double pd_learner_predict(const pd_learner *learner, const pd_feature *x, size_t n)
{
    return learner->predict(learner, x, n);
}

void pd_learner_prefetch(const pd_learner *learner, const pd_feature *x, size_t n)
{
    const char *tab = learner->table;

    for (size_t i = 0; i < n; i++)
        __builtin_prefetch(tab + (size_t)(x[i].hash & learner->mask) * learner->entry_bytes, 1);
    /* a coordinate not yet admitted reads its counter on every occurrence */
    if (learner->seen != NULL)
        for (size_t i = 0; i < n; i++)
            __builtin_prefetch(learner->seen + (x[i].hash & learner->mask), 1);
}

double pd_learner_learn(pd_learner *learner, const pd_feature *x, size_t n, double label,
                        double importance)
{
    return learner->learn(learner, x, n, label, importance);
}

double pd_learner_weight(const pd_learner *learner, uint32_t hash)
{
    size_t pos = (size_t)(hash & learner->mask) * learner->stride;

    if (learner->conf.optimizer == PD_OPT_FTRL_MULTI) {
        const lanes4 c = lanes_of(learner);
        return entry_weights(learner->table, pos, learner->f16, &c)[top_lane(learner)];
    }
    return get_val(learner->table, pos, learner->f16);
}

double pd_learner_intercept(const pd_learner *learner)
{
    return learner->conf.intercept ? learner->icpt[ICPT_W + top_lane(learner)] : 0.0;
}

static uint64_t count_nonzero(const pd_learner *l)
{
    const bool multi = l->conf.optimizer == PD_OPT_FTRL_MULTI;
    const float l1 = (float)l->conf.l1;
    uint64_t nz = 0;

    for (uint64_t i = 0; i <= l->mask; i++) {
        size_t pos = (size_t)i * l->stride;
        /* ftrl_multi: a lane's weight is non-zero where |z| > l1 */
        nz += multi ? v_bits(v_abs(load4(l->table, pos + MULTI_Z, l->f16)) > l1) != 0
                    : stored_nonzero(l->table, pos, l->f16);
    }
    return nz;
}

double pd_hash_distinct_estimate(size_t occupied, int bits)
{
    double m = ldexp(1.0, bits);
    if ((double)occupied >= m)
        return INFINITY;
    /* k = m (1 - e^(-n/m)) occupied slots are expected from n distinct hashes */
    return -m * log1p(-(double)occupied / m);
}

double pd_hash_collision_rate(double distinct, int bits)
{
    if (!(distinct > 1))
        return 0.0;
    /* a feature is alone in its slot when none of the other n - 1 lands there */
    return -expm1(-(distinct - 1) / ldexp(1.0, bits));
}

size_t pd_learner_occupied(const pd_learner *learner)
{
    /* an entry any example touched has some non-zero state: a gradient sum or a weight (with
     * L1 many touched entries keep w = 0, so the weight alone would undercount). The entries'
     * values are ORed as whole words, sign bits masked off (-0 is zero): a pass over memory,
     * not a test per value. */
    const size_t entries = (size_t)learner->mask + 1, eb = learner->entry_bytes;
    const unsigned char *tab = learner->table;
    size_t used = 0;

    if (eb % 8 == 0) {
        const uint64_t sign = learner->f16 ? 0x7fff7fff7fff7fffull : 0x7fffffff7fffffffull;
        for (size_t i = 0; i < entries; i++) {
            uint64_t any = 0, w;
            for (size_t b = 0; b < eb; b += 8) {
                memcpy(&w, tab + i * eb + b, 8);
                any |= w;
            }
            used += (any & sign) != 0;
        }
        return used;
    }
    for (size_t i = 0; i < entries; i++) {
        bool any = false;
        for (size_t k = 0; k < learner->stride; k++)
            any |= stored_nonzero(tab, i * learner->stride + k, learner->f16);
        used += any;
    }
    return used;
}

/* FTRL derives w from z and n, so new alpha, beta, l1 or l2 would move every weight at its
 * next update. To keep the weights, each z is re-expressed: a non-zero w gets the z that yields
 * it under the new parameters, z = -sgn(w) (l1' + |w| ((beta' + sqrt(n)) / alpha' + l2')); a
 * zero w keeps its relative place inside the new dead zone, z' = z l1' / l1. n, the gradient
 * history, stays; so does the cached w. */
static double reexpressed_z(double w, double z, double s, double l1, double dead, double inv_alpha,
                            double den)
{
    double z_new = w != 0.0 ? copysign(l1 + fabs(w) * (den + s) * inv_alpha, -w) : z * dead;

    return in_range(z_new) ? z_new : copysign(STATE_LIMIT, z_new);
}

/* ftrl_multi does it lane by lane; it caches no w in the table, so each lane's weight under
 * the old parameters is computed as learn() computes it. */
static void multi_reexpress(pd_learner *l, const pd_learner_conf *old, double dead)
{
    lanes4 was;

    for (size_t j = 0; j < LANES; j++) {
        double alpha = old->alpha * lane_scale[j];
        was.alpha[j] = (float)alpha;
        was.den[j] = (float)(old->beta + alpha * old->l2);
    }
    was.l1 = (float)old->l1;
    for (uint64_t i = 0; i <= l->mask; i++) {
        size_t pos = (size_t)i * MULTI_STRIDE;
        v4f z = load4(l->table, pos + MULTI_Z, l->f16), s = load4(l->table, pos + MULTI_S, l->f16);
        v4f w = ftrl_weight4(z, s, was.l1, was.alpha, was.den);

        for (size_t j = 0; j < LANES; j++) {
            if (z[j] == 0.0f)
                continue;
            put_val(l->table, pos + MULTI_Z + j, l->f16,
                    reexpressed_z(w[j], z[j], s[j], l->conf.l1, dead, l->lane_inv_alpha[j],
                                  l->lane_den[j]),
                    ROUND_NEAREST);
        }
    }
    for (size_t j = 0; j < LANES; j++) {
        double w = l->icpt[ICPT_W + j];
        double z_new = -w * (l->ftrl_icpt_den + l->icpt[ICPT_S + j]) * l->lane_inv_alpha[j];
        if (w != 0.0 && in_range(z_new))
            l->icpt[ICPT_Z + j] = (float)z_new;
    }
}

static void ftrl_reexpress(pd_learner *l, const pd_learner_conf *old)
{
    const double l1 = l->conf.l1;
    const double dead = old->l1 > 0 ? l1 / old->l1 : 0.0;

    if (l->conf.optimizer == PD_OPT_FTRL_MULTI) {
        multi_reexpress(l, old, dead);
        return;
    }
    for (uint64_t i = 0; i <= l->mask; i++) {
        size_t pos = (size_t)i * FTRL_STRIDE;
        double w = get_val(l->table, pos, l->f16), z = get_val(l->table, pos + 1, l->f16);
        double s = get_val(l->table, pos + 2, l->f16);

        if (z == 0.0)
            continue;
        put_val(l->table, pos + 1, l->f16,
                reexpressed_z(w, z, s, l1, dead, l->inv_alpha, l->ftrl_den), ROUND_NEAREST);
    }
    if (l->icpt[0] != 0.0f) {
        double z_new = -l->icpt[0] * (l->ftrl_icpt_den + l->icpt[2]) * l->inv_alpha;
        if (in_range(z_new))
            l->icpt[1] = (float)z_new;
    }
}

int pd_learner_set_conf(pd_learner *learner, const pd_learner_conf *conf)
{
    pd_learner_conf old;
    uint8_t *seen = learner->seen;

    if (pd_learner_check_conf(conf, NULL, 0) < 0)
        return -EINVAL;
    if (conf->type != learner->conf.type || conf->loss != learner->conf.loss ||
        conf->optimizer != learner->conf.optimizer || conf->bits != learner->conf.bits ||
        conf->weights != learner->conf.weights)
        return -EINVAL;

    /* admission switched on: counting starts now; entries with state are admitted already */
    if (conf->admission_min_count > 0 && seen == NULL) {
        seen = calloc((size_t)1 << conf->bits, 1);
        if (seen == NULL)
            return -ENOMEM;
    }

    if (conf->admission_min_count == 0) {
        free(seen);
        seen = NULL;
    }

    old = learner->conf;
    learner->conf = *conf;
    learner->seen = seen;
    derive(learner);
    select_kernels(learner);
    if ((conf->optimizer == PD_OPT_FTRL || conf->optimizer == PD_OPT_FTRL_MULTI) &&
        (old.alpha != conf->alpha || old.beta != conf->beta || old.l1 != conf->l1 ||
         old.l2 != conf->l2)) {
        ftrl_reexpress(learner, &old);
        /* the captured old values are in the old parameters' terms: the difference to them
         * would send the re-expression as if learned */
        delta_rebase(learner);
    }
    return 0;
}

void pd_learner_get_stats(const pd_learner *learner, pd_learner_stats *ret_stats)
{
    ret_stats->updates = learner->updates;
    ret_stats->nonfinite = learner->nonfinite;
    ret_stats->clipped = learner->clipped;
    ret_stats->not_admitted = learner->not_admitted;
    /* ftrl_multi's update does not track them: a scan */
    ret_stats->weights_nonzero =
        learner->conf.optimizer == PD_OPT_FTRL_MULTI ? count_nonzero(learner) : learner->nonzero;
}

size_t pd_learner_mixture(const pd_learner *learner, double ret_alpha[PD_LEARNER_LANES],
                          double ret_weight[PD_LEARNER_LANES])
{
    if (learner->conf.optimizer != PD_OPT_FTRL_MULTI)
        return 0;
    memcpy(ret_alpha, learner->lane_alpha, sizeof(learner->lane_alpha));
    memcpy(ret_weight, learner->mix, sizeof(learner->mix));
    return LANES;
}

size_t pd_learner_memory(const pd_learner *learner)
{
    size_t bytes = sizeof(*learner) + learner->table_bytes;

    if (learner->seen != NULL)
        bytes += (size_t)learner->mask + 1;
    bytes += delta_log_memory(learner->delta);
    return bytes;
}

/* ---- serialisation ----
 *
 * Little-endian throughout:
 *   "PDLEARN\0"  u32 version (2)
 *   u32 type, loss, optimizer, weights, bits, flags (bit 0: intercept)
 *   f64 huber_delta, alpha, beta, l1, l2, learning_rate, power_t, initial_t, max_abs_margin
 *   i64 admission_min_count
 *   u64 updates, nonfinite, clipped, not_admitted
 *   u32 n, then n f32 intercept state (FTRL w, z, sqrt(n); AdaGrad w, G, 0; SGD w, 0, 0: n = 3;
 *       ftrl_multi w[4], z[4], sqrt(n)[4]: n = 12)
 *   u32 n, then n f64 mixture weights (ftrl_multi 4, the others 0)
 *   table:    u32 encoding, u64 count, then entries
 *   counters: u32 encoding, u64 count, then counters
 * An encoding is 0 (absent), 1 (raw: all 2^bits entries in index order) or 2 (sparse: count
 * pairs of u32 index and entry, ascending, for entries that are not all zero). The writer picks
 * whichever is smaller. An entry is its 16- or 32-bit values in order; a counter is one byte.
 * Version 1, which load() still reads, had exactly three intercept values and no mixture
 * weights (there was no ftrl_multi). */

#define SAVE_MAGIC   "PDLEARN"
#define SAVE_VERSION 2u
/* intercept values saved: FTRL, AdaGrad and SGD 3, ftrl_multi all */
#define ICPT_SAVED_SINGLE 3u
#define ICPT_SAVED_MULTI  ICPT_MAX

enum { ENC_NONE = 0, ENC_RAW = 1, ENC_SPARSE = 2 };

static bool host_little_endian(void)
{
    return __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__;
}

/* One entry's bytes in file order: its 16- or 32-bit units, little-endian. */
static void entry_to_file(const pd_learner *l, uint32_t idx, uint8_t *buf)
{
    const uint8_t *src = (const uint8_t *)l->table + (size_t)idx * l->entry_bytes;
    size_t unit = l->f16 ? 2 : 4;

    memcpy(buf, src, l->entry_bytes);
    if (!host_little_endian()) {
        for (size_t u = 0; u < l->entry_bytes; u += unit)
            for (size_t a = 0, b = unit - 1; a < b; a++, b--) {
                uint8_t t = buf[u + a];
                buf[u + a] = buf[u + b];
                buf[u + b] = t;
            }
    }
}

static void entry_from_file(pd_learner *l, uint32_t idx, const uint8_t *buf)
{
    uint8_t *dst = (uint8_t *)l->table + (size_t)idx * l->entry_bytes;
    size_t unit = l->f16 ? 2 : 4;

    memcpy(dst, buf, l->entry_bytes);
    if (!host_little_endian()) {
        for (size_t u = 0; u < l->entry_bytes; u += unit)
            for (size_t a = 0, b = unit - 1; a < b; a++, b--) {
                uint8_t t = dst[u + a];
                dst[u + a] = dst[u + b];
                dst[u + b] = t;
            }
    }
}

static bool entry_is_zero(const pd_learner *l, uint32_t idx)
{
    const uint8_t *p = (const uint8_t *)l->table + (size_t)idx * l->entry_bytes;

    for (size_t i = 0; i < l->entry_bytes; i++)
        if (p[i] != 0)
            return false;
    return true;
}

static void save_table(const pd_learner *l, pd_bin_writer *w)
{
    uint64_t size = (uint64_t)l->mask + 1, used = 0;
    uint8_t buf[STRIDE_MAX * sizeof(float)];

    for (uint64_t i = 0; i < size; i++)
        used += !entry_is_zero(l, (uint32_t)i);
    if (used * (4 + l->entry_bytes) < size * l->entry_bytes) {
        pd_bin_put_u32(w, ENC_SPARSE);
        pd_bin_put_u64(w, used);
        for (uint64_t i = 0; i < size && !w->err; i++) {
            if (entry_is_zero(l, (uint32_t)i))
                continue;
            entry_to_file(l, (uint32_t)i, buf);
            pd_bin_put_u32(w, (uint32_t)i);
            pd_bin_put_bytes(w, buf, l->entry_bytes);
        }
        return;
    }
    pd_bin_put_u32(w, ENC_RAW);
    pd_bin_put_u64(w, size);
    if (host_little_endian()) {
        pd_bin_put_bytes(w, l->table, l->table_bytes);
        return;
    }
    for (uint64_t i = 0; i < size && !w->err; i++) {
        entry_to_file(l, (uint32_t)i, buf);
        pd_bin_put_bytes(w, buf, l->entry_bytes);
    }
}

static void save_counters(const pd_learner *l, pd_bin_writer *w)
{
    uint64_t size = (uint64_t)l->mask + 1, used = 0;

    if (l->seen == NULL) {
        pd_bin_put_u32(w, ENC_NONE);
        pd_bin_put_u64(w, 0);
        return;
    }
    for (uint64_t i = 0; i < size; i++)
        used += l->seen[i] != 0;
    if (used * 5 < size) {
        pd_bin_put_u32(w, ENC_SPARSE);
        pd_bin_put_u64(w, used);
        for (uint64_t i = 0; i < size && !w->err; i++) {
            if (l->seen[i] == 0)
                continue;
            pd_bin_put_u32(w, (uint32_t)i);
            pd_bin_put_u8(w, l->seen[i]);
        }
        return;
    }
    pd_bin_put_u32(w, ENC_RAW);
    pd_bin_put_u64(w, size);
    pd_bin_put_bytes(w, l->seen, size);
}

int pd_learner_save(const pd_learner *learner, pd_bin_writer *w)
{
    const pd_learner_conf *c = &learner->conf;
    const double params[] = {c->huber_delta,   c->alpha,   c->beta,      c->l1,
                             c->l2,            c->learning_rate, c->power_t, c->initial_t,
                             c->max_abs_margin};

    pd_bin_put_bytes(w, SAVE_MAGIC, 8);
    pd_bin_put_version(w, SAVE_VERSION);
    pd_bin_put_u32(w, (uint32_t)c->type);
    pd_bin_put_u32(w, (uint32_t)c->loss);
    pd_bin_put_u32(w, (uint32_t)c->optimizer);
    pd_bin_put_u32(w, (uint32_t)c->weights);
    pd_bin_put_u32(w, (uint32_t)c->bits);
    pd_bin_put_u32(w, c->intercept ? 1u : 0u);
    for (size_t i = 0; i < sizeof params / sizeof params[0]; i++)
        pd_bin_put_f64(w, params[i]);
    pd_bin_put_u64(w, (uint64_t)c->admission_min_count);
    pd_bin_put_u64(w, learner->updates);
    pd_bin_put_u64(w, learner->nonfinite);
    pd_bin_put_u64(w, learner->clipped);
    pd_bin_put_u64(w, learner->not_admitted);
    bool multi = c->optimizer == PD_OPT_FTRL_MULTI;
    uint32_t n_icpt = multi ? ICPT_SAVED_MULTI : ICPT_SAVED_SINGLE;
    pd_bin_put_u32(w, n_icpt);
    for (uint32_t k = 0; k < n_icpt; k++)
        pd_bin_put_f32(w, learner->icpt[k]);
    pd_bin_put_u32(w, multi ? LANES : 0);
    for (size_t j = 0; multi && j < LANES; j++)
        pd_bin_put_f64(w, learner->mix[j]);
    save_table(learner, w);
    save_counters(learner, w);
    return w->err;
}

/* A state file is checked like any input: every value finite and in range, accumulators
 * (n, G) not negative, so nothing loaded can make a prediction NaN.
 *
 * Where state accumulates squares (FTRL's sqrt(n), AdaGrad's G): values first..first+count-1
 * of a table entry, or of the intercept's state. */
typedef struct acc_span {
    size_t first, count;
} acc_span;

static acc_span accumulators(pd_optimizer opt, bool intercept)
{
    switch (opt) {
    case PD_OPT_FTRL:
        return (acc_span){2, 1};
    case PD_OPT_ADAGRAD:
        return (acc_span){1, 1};
    case PD_OPT_SGD:
        break;
    case PD_OPT_FTRL_MULTI:
        return (acc_span){intercept ? ICPT_S : MULTI_S, LANES};
    }
    return (acc_span){0, 0};
}

/* Whether n values of state at pos are finite and in range, the accumulators not negative. */
static bool state_valid(const void *tab, size_t pos, size_t n, bool f16, acc_span acc)
{
    for (size_t k = 0; k < n; k++) {
        double v = get_val(tab, pos + k, f16);
        bool is_acc = k >= acc.first && k < acc.first + acc.count;
        if (!in_range(v) || (is_acc && !(v >= 0.0)))
            return false;
    }
    return true;
}

static bool table_valid(const pd_learner *l)
{
    acc_span acc = accumulators(l->conf.optimizer, false);

    for (uint64_t i = 0; i <= l->mask; i++)
        if (!state_valid(l->table, (size_t)i * l->stride, l->stride, l->f16, acc))
            return false;
    return true;
}

static void load_table(pd_learner *l, pd_bin_reader *r)
{
    uint64_t size = (uint64_t)l->mask + 1;
    uint32_t prev = 0;
    uint8_t buf[STRIDE_MAX * sizeof(float)];

    uint32_t enc = pd_bin_get_u32(r);
    uint64_t count = pd_bin_get_u64(r);
    if (r->err)
        return;
    if (enc == ENC_RAW) {
        if (count != size) {
            pd_bin_fail(r, "learner state has %llu entries, expected %llu",
                        (unsigned long long)count, (unsigned long long)size);
            return;
        }
        if (host_little_endian()) {
            pd_bin_get_bytes(r, l->table, l->table_bytes);
            return;
        }
        for (uint64_t i = 0; i < size && !r->err; i++) {
            pd_bin_get_bytes(r, buf, l->entry_bytes);
            entry_from_file(l, (uint32_t)i, buf);
        }
        return;
    }
    if (enc != ENC_SPARSE || count > size) {
        pd_bin_fail(r, "learner state has a bad table encoding");
        return;
    }
    for (uint64_t i = 0; i < count && !r->err; i++) {
        uint32_t idx = pd_bin_get_u32(r);
        pd_bin_get_bytes(r, buf, l->entry_bytes);
        if (r->err)
            return;
        if (idx > l->mask || (i > 0 && idx <= prev)) {
            pd_bin_fail(r, "learner state has a bad entry index %u", idx);
            return;
        }
        prev = idx;
        entry_from_file(l, idx, buf);
    }
}

/* Reads the counters; into l->seen when it has them, else reads past them. */
static void load_counters(pd_learner *l, pd_bin_reader *r)
{
    uint64_t size = (uint64_t)l->mask + 1;
    uint8_t chunk[4096];

    uint32_t enc = pd_bin_get_u32(r);
    uint64_t count = pd_bin_get_u64(r);
    if (r->err || enc == ENC_NONE)
        return;
    if (enc == ENC_RAW && count == size) {
        if (l->seen != NULL) {
            pd_bin_get_bytes(r, l->seen, size);
            return;
        }
        for (uint64_t left = size; left > 0 && !r->err;) {
            size_t n = left < sizeof(chunk) ? (size_t)left : sizeof(chunk);
            pd_bin_get_bytes(r, chunk, n);
            left -= n;
        }
        return;
    }
    if (enc != ENC_SPARSE || count > size) {
        pd_bin_fail(r, "learner state has a bad counter encoding");
        return;
    }
    for (uint64_t i = 0; i < count && !r->err; i++) {
        uint32_t idx = pd_bin_get_u32(r);
        uint8_t c = pd_bin_get_u8(r);
        if (r->err)
            return;
        if (idx > l->mask) {
            pd_bin_fail(r, "learner state has a bad counter index %u", idx);
            return;
        }
        if (l->seen != NULL)
            l->seen[idx] = c;
    }
}

/* The reader's failure as this module words it. */
static void reader_error(const pd_bin_reader *r, char *errbuf, size_t errlen)
{
    if (r->err == -EIO)
        pd_set_error(errbuf, errlen, "learner state is truncated");
    else
        pd_set_error(errbuf, errlen, "%s", r->why);
}

pd_learner *pd_learner_load(const pd_learner_conf *conf, pd_bin_reader *r, char *errbuf,
                            size_t errlen)
{
    char magic[8];
    pd_learner_conf saved;
    pd_learner *l = NULL;

    if (pd_learner_check_conf(conf, errbuf, errlen) < 0)
        return NULL;
    pd_bin_get_bytes(r, magic, sizeof(magic));
    if (!r->err && memcmp(magic, SAVE_MAGIC, sizeof(magic)) != 0)
        pd_bin_fail(r, "not a learner state");
    uint32_t version = pd_bin_get_u32(r);
    if (!r->err && version != SAVE_VERSION && version != 1)
        pd_bin_fail(r, "learner state version %u is not supported", version);
    uint32_t type = pd_bin_get_u32(r), loss = pd_bin_get_u32(r);
    uint32_t optimizer = pd_bin_get_u32(r), weights = pd_bin_get_u32(r);
    uint32_t bits = pd_bin_get_u32(r);
    (void)pd_bin_get_u32(r); /* flags: the intercept is conf's to decide */
    if (!r->err && (type != (uint32_t)conf->type || loss != (uint32_t)conf->loss ||
                    optimizer != (uint32_t)conf->optimizer ||
                    weights != (uint32_t)conf->weights || bits != (uint32_t)conf->bits))
        pd_bin_fail(r,
                    "learner state is for type %u loss %u optimizer %u weights %u bits %u; the "
                    "configuration asks for type %d loss %d optimizer %d weights %d bits %d",
                    type, loss, optimizer, weights, bits, (int)conf->type, (int)conf->loss,
                    (int)conf->optimizer, (int)conf->weights, conf->bits);

    /* the learner is built under the saved hyper-parameters, then moved to conf's */
    saved = *conf;
    double *params[] = {&saved.huber_delta,   &saved.alpha,   &saved.beta,
                        &saved.l1,            &saved.l2,      &saved.learning_rate,
                        &saved.power_t,       &saved.initial_t, &saved.max_abs_margin};
    for (size_t i = 0; i < sizeof params / sizeof params[0]; i++)
        *params[i] = pd_bin_get_f64(r);
    (void)pd_bin_get_u64(r); /* admission: conf decides it from now on */
    uint64_t updates = pd_bin_get_u64(r), nonfinite = pd_bin_get_u64(r);
    uint64_t clipped = pd_bin_get_u64(r), not_admitted = pd_bin_get_u64(r);
    const bool multi = conf->optimizer == PD_OPT_FTRL_MULTI;
    float icpt[ICPT_MAX] = {0.0f};
    double mix[LANES];
    uint32_t n_icpt = version == 1 ? ICPT_SAVED_SINGLE : pd_bin_get_u32(r);
    if (!r->err && n_icpt != (multi ? ICPT_SAVED_MULTI : ICPT_SAVED_SINGLE))
        pd_bin_fail(r, "learner state has %u intercept values, expected %u", n_icpt,
                    multi ? ICPT_SAVED_MULTI : ICPT_SAVED_SINGLE);
    for (uint32_t k = 0; k < n_icpt && !r->err; k++)
        icpt[k] = pd_bin_get_f32(r);
    uint32_t n_mix = version == 1 ? 0 : pd_bin_get_u32(r);
    if (!r->err && n_mix != (multi ? LANES : 0))
        pd_bin_fail(r, "learner state has %u mixture weights, expected %u", n_mix,
                    multi ? LANES : 0);
    for (uint32_t j = 0; j < n_mix && !r->err; j++)
        mix[j] = pd_bin_get_f64(r);
    if (r->err) {
        reader_error(r, errbuf, errlen);
        return NULL;
    }
    double mix_sum = 0.0;
    bool mix_ok = true;
    for (uint32_t j = 0; j < n_mix; j++) {
        mix_ok = mix_ok && mix[j] >= 0.0 && mix[j] <= 1.0;
        mix_sum += mix[j];
    }
    if (!mix_ok || (n_mix > 0 && !(fabs(mix_sum - 1.0) <= 1e-9))) {
        pd_set_error(errbuf, errlen, "learner state has mixture weights that do not sum to 1");
        return NULL;
    }

    l = pd_learner_new(&saved, errbuf, errlen);
    if (l == NULL)
        return NULL;
    l->updates = updates;
    l->nonfinite = nonfinite;
    l->clipped = clipped;
    l->not_admitted = not_admitted;
    memcpy(l->icpt, icpt, sizeof icpt);
    if (multi)
        memcpy(l->mix, mix, sizeof mix);
    if (!state_valid(l->icpt, 0, n_icpt, false, accumulators(conf->optimizer, true))) {
        pd_set_error(errbuf, errlen, "learner state has a non-finite intercept");
        goto out_free_learner;
    }
    load_table(l, r);
    load_counters(l, r);
    if (r->err) {
        reader_error(r, errbuf, errlen);
        goto out_free_learner;
    }
    if (!table_valid(l)) {
        pd_set_error(errbuf, errlen, "learner state has values out of range");
        goto out_free_learner;
    }
    l->nonzero = count_nonzero(l);
    if (pd_learner_set_conf(l, conf) < 0) {
        pd_set_error(errbuf, errlen, "cannot apply the configuration to the loaded learner");
        goto out_free_learner;
    }
    return l;

out_free_learner:
    pd_learner_free(l);
    return NULL;
}

/* ---- model sync ----
 *
 * Instances that split a stream exchange what each learned (pipeline/model_sync.c carries the
 * bytes). What adds up across instances is optimizer state, not weights: FTRL's z (a sum of
 * gradient terms) and n (a sum of squared gradients: the table keeps sqrt(n), the deltas carry
 * n), AdaGrad's w and G, SGD's w, ftrl_multi's z and n per lane, and the intercept's the same
 * way. The sum of every instance's deltas is what one learner that saw every gradient would
 * hold, up to the order of FTRL's sigma w terms (asynchronous, as in Hogwild or a parameter
 * server). A weight the entry caches (FTRL's w) is recomputed from the new z and n.
 * ftrl_multi's mixture weights are a product of each lane's likelihoods: what is exchanged is
 * the change of their logarithms (centred: only the ratios mean anything), which adds, and
 * the fixed share is applied once after each addition, as mix_update() does.
 *
 * Capture: before learn(), each entry of x not yet marked since the last seal is marked (a
 * bitmap) and its state then recorded (in the delta domain above, float64); the seal sends
 * current - recorded. A remote delta applied to a marked entry is added to the record too, so
 * the local delta stays what this instance learned. The intercept's and the mixture's values
 * at the last seal are kept the same way. Off (delta NULL), learn() pays nothing.
 *
 * Part format, little-endian: u32 version (1), optimizer, bits, values per entry (k); u8 head;
 * if head: k f32 intercept deltas and u32 n + n f32 mixture deltas (ftrl_multi 4, else 0);
 * u32 count, then count x (u32 index, k f32 deltas). The first part of a seal has the head. */

#define DELTA_VERSION 1u
#define DELTA_MAX     STRIDE_MAX /* delta values per entry at most (ftrl_multi's z[4], n[4]) */

struct delta_log {
    uint64_t *dirty;  /* one bit per table entry: marked since the last seal */
    uint32_t *idx;    /* the marked entries, in marking order */
    double *old;      /* their state when marked, k values each */
    size_t n, cap;
    pd_hashtab where; /* entry index -> record + 1, for remote deltas to marked entries */
    double icpt_old[DELTA_MAX];
    double mix_old[LANES]; /* log mixture weights at the last seal */
    uint64_t lost;         /* marks dropped for want of memory */
    /* the last seal: entries with a non-zero delta, k floats each, and the head */
    uint32_t *s_idx;
    float *s_val;
    size_t s_n, s_cap;
    float s_icpt[DELTA_MAX];
    float s_mix[LANES];
};

static size_t delta_k(pd_optimizer opt)
{
    switch (opt) {
    case PD_OPT_FTRL:
    case PD_OPT_ADAGRAD:
        return 2;
    case PD_OPT_SGD:
        return 1;
    case PD_OPT_FTRL_MULTI:
        return 2 * LANES;
    }
    return 1;
}

static uint64_t delta_hash(uint32_t idx)
{
    return (uint64_t)idx * 0x9e3779b97f4a7c15ull;
}

/* The delta-domain values of the state at pos: a table entry, or (icpt) the intercept's
 * float32 state, whose ftrl_multi layout differs from the table's. */
static void dvals_get(const pd_learner *l, const void *tab, size_t pos, bool f16, bool icpt,
                      double *v)
{
    switch (l->conf.optimizer) {
    case PD_OPT_FTRL: {
        double s = get_val(tab, pos + 2, f16);
        v[0] = get_val(tab, pos + 1, f16);
        v[1] = s * s;
        return;
    }
    case PD_OPT_ADAGRAD:
        v[0] = get_val(tab, pos, f16);
        v[1] = get_val(tab, pos + 1, f16);
        return;
    case PD_OPT_SGD:
        v[0] = get_val(tab, pos, f16);
        return;
    case PD_OPT_FTRL_MULTI: {
        size_t zo = icpt ? ICPT_Z : MULTI_Z, so = icpt ? ICPT_S : MULTI_S;
        for (size_t j = 0; j < LANES; j++) {
            double s = get_val(tab, pos + so + j, f16);
            v[j] = get_val(tab, pos + zo + j, f16);
            v[LANES + j] = s * s;
        }
        return;
    }
    }
}

/* Stores delta-domain values v at pos (n clamped at 0: float rounding of the records may
 * leave a sum of squares a hair below it), recomputing what derives from them. Returns false,
 * storing nothing, when they do not fit the storage. */
static bool dvals_put(pd_learner *l, void *tab, size_t pos, bool f16, bool icpt, const double *v,
                      uint32_t dither)
{
    const double l1 = icpt ? 0.0 : l->conf.l1;

    switch (l->conf.optimizer) {
    case PD_OPT_FTRL: {
        double z = v[0], s = sqrt(fmax(v[1], 0.0));
        if (!(in_range(z) && s <= STATE_LIMIT))
            return false;
        double zs = put_val(tab, pos + 1, f16, z, dither);
        double ss = put_val(tab, pos + 2, f16, s, dither >> 16);
        put_val(tab, pos, f16,
                ftrl_weight(zs, ss, l1, l->conf.alpha, icpt ? l->ftrl_icpt_den : l->ftrl_den),
                ROUND_NEAREST);
        return true;
    }
    case PD_OPT_ADAGRAD: {
        double G = fmax(v[1], 0.0);
        if (!(in_range(v[0]) && G <= STATE_LIMIT))
            return false;
        put_val(tab, pos, f16, v[0], dither);
        put_val(tab, pos + 1, f16, G, dither >> 16);
        return true;
    }
    case PD_OPT_SGD:
        if (!in_range(v[0]))
            return false;
        put_val(tab, pos, f16, v[0], dither);
        return true;
    case PD_OPT_FTRL_MULTI: {
        size_t zo = icpt ? ICPT_Z : MULTI_Z, so = icpt ? ICPT_S : MULTI_S;
        double s[LANES];
        for (size_t j = 0; j < LANES; j++) {
            s[j] = sqrt(fmax(v[LANES + j], 0.0));
            if (!(in_range(v[j]) && s[j] <= STATE_LIMIT))
                return false;
        }
        for (size_t j = 0; j < LANES; j++) {
            uint32_t d = dither_hash(dither, (uint32_t)j);
            double zs = put_val(tab, pos + zo + j, f16, v[j], d);
            double ss = put_val(tab, pos + so + j, f16, s[j], d >> 16);
            if (icpt)
                put_val(tab, pos + ICPT_W + j, false,
                        ftrl_weight(zs, ss, 0.0, l->lane_alpha[j], l->ftrl_icpt_den),
                        ROUND_NEAREST);
        }
        return true;
    }
    }
    return false;
}

static void delta_log_free(struct delta_log *d)
{
    if (d == NULL)
        return;
    free(d->dirty);
    free(d->idx);
    free(d->old);
    pd_hashtab_release(&d->where);
    free(d->s_idx);
    free(d->s_val);
    free(d);
}

static size_t delta_log_memory(const struct delta_log *d)
{
    if (d == NULL)
        return 0;
    return sizeof(*d) + d->cap * (sizeof(uint32_t) + DELTA_MAX * sizeof(double)) +
           pd_hashtab_memory(&d->where) + d->s_cap * (sizeof(uint32_t) + DELTA_MAX * sizeof(float));
}

/* Log-mixture changes smaller than this are rounding, not learning (one example of weight 1
 * moves them by about eta times a log loss, far above). */
#define MIX_DELTA_MIN 1e-9

static void log_mix(const pd_learner *l, double *ret)
{
    for (size_t j = 0; j < LANES; j++)
        ret[j] = log(l->mix[j]);
}

/* The intercept's and the mixture's values now become the base of the next delta. */
static void delta_base_head(pd_learner *l)
{
    struct delta_log *d = l->delta;

    memset(d->icpt_old, 0, sizeof d->icpt_old);
    if (l->conf.intercept)
        dvals_get(l, l->icpt, 0, false, true, d->icpt_old);
    log_mix(l, d->mix_old);
}

int pd_learner_delta_start(pd_learner *l)
{
    if (l->delta != NULL)
        return 0;
    struct delta_log *d = calloc(1, sizeof(*d));
    size_t words = (((size_t)l->mask + 1) + 63) / 64;
    if (d == NULL || (d->dirty = calloc(words, sizeof(uint64_t))) == NULL ||
        pd_hashtab_init(&d->where, 1024) < 0) {
        delta_log_free(d);
        return -ENOMEM;
    }
    l->delta = d;
    delta_base_head(l);
    return 0;
}

bool pd_learner_delta_capturing(const pd_learner *l)
{
    return l->delta != NULL;
}

static bool delta_grow(struct delta_log *d, size_t k)
{
    size_t cap = d->cap ? d->cap * 2 : 1024;
    uint32_t *idx = realloc(d->idx, cap * sizeof(*idx));
    if (idx == NULL)
        return false;
    d->idx = idx;
    double *old = realloc(d->old, cap * k * sizeof(*old));
    if (old == NULL)
        return false;
    d->old = old;
    d->cap = cap;
    return true;
}

void pd_learner_delta_mark(pd_learner *l, const pd_feature *x, size_t n)
{
    struct delta_log *d = l->delta;
    const size_t k = delta_k(l->conf.optimizer);

    if (d == NULL)
        return;
    for (size_t i = 0; i < n; i++) {
        const uint32_t idx = x[i].hash & l->mask;
        const uint64_t bit = 1ull << (idx & 63);
        if (d->dirty[idx >> 6] & bit)
            continue;
        if ((d->n == d->cap && !delta_grow(d, k)) || pd_hashtab_reserve(&d->where) < 0) {
            d->lost++;
            continue;
        }
        d->dirty[idx >> 6] |= bit;
        d->idx[d->n] = idx;
        dvals_get(l, l->table, (size_t)idx * l->stride, l->f16, false, d->old + d->n * k);
        pd_hashtab_insert(&d->where, delta_hash(idx), d->n + 1);
        d->n++;
    }
}

/* Forgets the marks: what follows is measured from the state now. */
static void delta_clear_marks(struct delta_log *d)
{
    for (size_t r = 0; r < d->n; r++)
        d->dirty[d->idx[r] >> 6] &= ~(1ull << (d->idx[r] & 63));
    d->n = 0;
    pd_hashtab_clear(&d->where);
}

static void delta_rebase(pd_learner *l)
{
    if (l->delta == NULL)
        return;
    delta_clear_marks(l->delta);
    delta_base_head(l);
}

size_t pd_learner_delta_seal(pd_learner *l, bool *ret_any)
{
    struct delta_log *d = l->delta;
    const size_t k = delta_k(l->conf.optimizer);
    double cur[DELTA_MAX];
    bool any = false;

    *ret_any = false;
    if (d == NULL)
        return 0;
    d->s_n = 0;
    if (d->s_cap < d->n) {
        uint32_t *si = realloc(d->s_idx, d->n * sizeof(*si));
        if (si != NULL)
            d->s_idx = si;
        float *sv = si ? realloc(d->s_val, d->n * k * sizeof(*sv)) : NULL;
        if (sv == NULL) {
            /* nothing sealed: the marks stay and the next seal tries again */
            return 0;
        }
        d->s_val = sv;
        d->s_cap = d->n;
    }
    for (size_t r = 0; r < d->n; r++) {
        const uint32_t idx = d->idx[r];
        bool nz = false;
        float *out = d->s_val + d->s_n * k;
        dvals_get(l, l->table, (size_t)idx * l->stride, l->f16, false, cur);
        for (size_t c = 0; c < k; c++) {
            out[c] = (float)(cur[c] - d->old[r * k + c]);
            nz |= out[c] != 0.0f;
        }
        if (nz)
            d->s_idx[d->s_n++] = idx;
    }
    delta_clear_marks(d);
    memset(d->s_icpt, 0, sizeof d->s_icpt);
    if (l->conf.intercept) {
        dvals_get(l, l->icpt, 0, false, true, cur);
        /* the intercept is stored in float32 and its base in double: what a peer's change
         * leaves after rounding is not learning, and sent it would come back for ever */
        for (size_t c = 0; c < k; c++) {
            double dc = cur[c] - d->icpt_old[c];
            d->s_icpt[c] = fabs(dc) <= 4.0 * FLT_EPSILON * fmax(1.0, fabs(cur[c])) ? 0.0f
                                                                                : (float)dc;
            any |= d->s_icpt[c] != 0.0f;
        }
    }
    memset(d->s_mix, 0, sizeof d->s_mix);
    if (l->conf.optimizer == PD_OPT_FTRL_MULTI) {
        double lm[LANES], mean = 0.0;
        log_mix(l, lm);
        for (size_t j = 0; j < LANES; j++)
            mean += (lm[j] - d->mix_old[j]) / LANES;
        /* what rounding leaves of a mixture nobody changed is not a change: sent, it would
         * make every peer apply its fixed share again, each round, for ever */
        for (size_t j = 0; j < LANES; j++) {
            double dj = lm[j] - d->mix_old[j] - mean;
            d->s_mix[j] = fabs(dj) < MIX_DELTA_MIN ? 0.0f : (float)dj;
            any |= d->s_mix[j] != 0.0f;
        }
    }
    delta_base_head(l);
    *ret_any = any || d->s_n > 0;
    return d->s_n;
}

/* bytes of a part before its entries: header, head, count */
static size_t delta_part_overhead(size_t k)
{
    return 4 * 4 + 1 + k * 4 + 4 + LANES * 4 + 4;
}

int pd_learner_delta_write(const pd_learner *l, pd_bin_writer *w, size_t *pos, size_t max_bytes)
{
    const struct delta_log *d = l->delta;
    const size_t k = delta_k(l->conf.optimizer);
    const bool multi = l->conf.optimizer == PD_OPT_FTRL_MULTI;
    size_t room = max_bytes > delta_part_overhead(k) ? max_bytes - delta_part_overhead(k) : 0;
    size_t first = *pos, count;

    if (d == NULL || first > d->s_n)
        return -EINVAL;
    count = room / (4 + 4 * k);
    if (count > d->s_n - first)
        count = d->s_n - first;
    if (count == 0 && first < d->s_n)
        return -EMSGSIZE;
    pd_bin_put_u32(w, DELTA_VERSION);
    pd_bin_put_u32(w, (uint32_t)l->conf.optimizer);
    pd_bin_put_u32(w, (uint32_t)l->conf.bits);
    pd_bin_put_u32(w, (uint32_t)k);
    pd_bin_put_u8(w, first == 0);
    if (first == 0) {
        pd_bin_put_f32_array(w, d->s_icpt, k);
        pd_bin_put_u32(w, multi ? LANES : 0);
        if (multi)
            pd_bin_put_f32_array(w, d->s_mix, LANES);
    }
    pd_bin_put_u32(w, (uint32_t)count);
    for (size_t e = first; e < first + count && !w->err; e++) {
        pd_bin_put_u32(w, d->s_idx[e]);
        pd_bin_put_f32_array(w, d->s_val + e * k, k);
    }
    *pos = first + count;
    return w->err;
}

static bool finite_deltas(const float *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!(fabsf(v[i]) <= (float)STATE_LIMIT))
            return false;
    return true;
}

/* A remote delta to an entry marked here goes into its record too. */
static void delta_add_to_record(struct delta_log *d, uint32_t idx, const float *dv, size_t k)
{
    if (!(d->dirty[idx >> 6] & (1ull << (idx & 63))))
        return;
    uint64_t h = delta_hash(idx);
    for (size_t i = pd_hashtab_first(&d->where, h); d->where.slots[i].value;
         i = pd_hashtab_next(&d->where, i)) {
        size_t r = (size_t)d->where.slots[i].value - 1;
        if (d->where.slots[i].hash == h && d->idx[r] == idx) {
            for (size_t c = 0; c < k; c++)
                d->old[r * k + c] += dv[c];
            return;
        }
    }
}

/* The mixture after a remote change of its log weights: as mix_update() with the peers'
 * likelihood ratios in place of one example's. Only for a change: the fixed share moves any
 * mixture towards uniform, so applying it for nothing would drift a model that learns
 * nothing. */
static void mix_apply(pd_learner *l, const float *dm)
{
    double a[LANES], top = -INFINITY, sum = 0.0, u[LANES];

    for (size_t j = 0; j < LANES; j++) {
        a[j] = log(l->mix[j]) + dm[j];
        top = fmax(top, a[j]);
    }
    for (size_t j = 0; j < LANES; j++) {
        u[j] = exp(a[j] - top);
        sum += u[j];
    }
    if (!(sum > 0.0 && sum <= DBL_MAX))
        return;
    for (size_t j = 0; j < LANES; j++)
        l->mix[j] = (1.0 - MIX_SHARE) * (u[j] / sum) + MIX_SHARE / LANES;
}

int pd_learner_delta_apply(pd_learner *l, pd_bin_reader *r, char *errbuf, size_t errlen)
{
    const size_t k = delta_k(l->conf.optimizer);
    const bool multi = l->conf.optimizer == PD_OPT_FTRL_MULTI;
    float head[DELTA_MAX] = {0.0f}, dm[LANES] = {0.0f};
    uint32_t *idx = NULL;
    float *val = NULL;
    size_t cap = 0, count = 0;
    int ret = -EINVAL;

    uint32_t version = pd_bin_get_u32(r), opt = pd_bin_get_u32(r), bits = pd_bin_get_u32(r);
    uint32_t kk = pd_bin_get_u32(r);
    if (!r->err && version != DELTA_VERSION)
        pd_bin_fail(r, "model delta version %u is not supported", version);
    if (!r->err && (opt != (uint32_t)l->conf.optimizer || bits != (uint32_t)l->conf.bits ||
                    kk != (uint32_t)k))
        pd_bin_fail(r, "model delta is for optimizer %u bits %u, this model has %d and %d", opt,
                    bits, (int)l->conf.optimizer, l->conf.bits);
    bool has_head = pd_bin_get_u8(r) != 0;
    if (has_head) {
        pd_bin_get_f32_array(r, head, k);
        uint32_t n_mix = pd_bin_get_u32(r);
        if (!r->err && n_mix != (multi ? LANES : 0))
            pd_bin_fail(r, "model delta has %u mixture values, expected %u", n_mix,
                        multi ? LANES : 0);
        if (multi)
            pd_bin_get_f32_array(r, dm, LANES);
        if (!r->err && !(finite_deltas(head, k) && finite_deltas(dm, LANES)))
            pd_bin_fail(r, "model delta has a non-finite intercept or mixture value");
    }
    uint64_t n = pd_bin_get_u32(r);
    if (!r->err && n > (uint64_t)l->mask + 1)
        pd_bin_fail(r, "model delta has %llu entries, more than the table's %llu",
                    (unsigned long long)n, (unsigned long long)l->mask + 1);
    /* read before anything is applied, growing as the bytes turn out to be there: a count
     * from a garbled message allocates no more than the message holds */
    while (!r->err && count < n) {
        if (count == cap) {
            size_t nc = cap ? cap * 2 : 256;
            uint32_t *ni = realloc(idx, nc * sizeof(*ni));
            if (ni == NULL)
                goto out_nomem;
            idx = ni;
            float *nv = realloc(val, nc * k * sizeof(*nv));
            if (nv == NULL)
                goto out_nomem;
            val = nv;
            cap = nc;
        }
        idx[count] = pd_bin_get_u32(r);
        pd_bin_get_f32_array(r, val + count * k, k);
        if (r->err)
            break;
        if (idx[count] > l->mask)
            pd_bin_fail(r, "model delta has a bad entry index %u", idx[count]);
        else if (!finite_deltas(val + count * k, k))
            pd_bin_fail(r, "model delta has a non-finite value at entry %u", idx[count]);
        count++;
    }
    if (r->err) {
        pd_set_error(errbuf, errlen, "%s",
                     r->err == -EIO ? "model delta is truncated" : r->why);
        goto out_free;
    }

    const uint32_t salt = update_salt(l->updates) ^ 0x5bd1e995u;
    double cur[DELTA_MAX];
    for (size_t e = 0; e < count; e++) {
        const size_t pos = (size_t)idx[e] * l->stride;
        const float *dv = val + e * k;
        const bool was = stored_nonzero(l->table, pos, l->f16);
        dvals_get(l, l->table, pos, l->f16, false, cur);
        for (size_t c = 0; c < k; c++)
            cur[c] += dv[c];
        if (!dvals_put(l, l->table, pos, l->f16, false, cur,
                       l->f16 ? dither_hash(idx[e], salt) : 0)) {
            l->nonfinite++;
            continue;
        }
        if (!multi)
            l->nonzero += (uint64_t)((int64_t)stored_nonzero(l->table, pos, l->f16) - was);
        if (l->delta != NULL)
            delta_add_to_record(l->delta, idx[e], dv, k);
    }
    if (has_head && l->conf.intercept) {
        dvals_get(l, l->icpt, 0, false, true, cur);
        for (size_t c = 0; c < k; c++)
            cur[c] += head[c];
        if (dvals_put(l, l->icpt, 0, false, true, cur, 0) && l->delta != NULL)
            for (size_t c = 0; c < k; c++)
                l->delta->icpt_old[c] += head[c];
    }
    bool mix_moved = false;
    for (size_t j = 0; multi && j < LANES; j++)
        mix_moved |= dm[j] != 0.0f;
    if (has_head && mix_moved) {
        double before[LANES], after[LANES];
        log_mix(l, before);
        mix_apply(l, dm);
        log_mix(l, after);
        /* what this instance learned of the mixture since its last seal stays its own */
        if (l->delta != NULL)
            for (size_t j = 0; j < LANES; j++)
                l->delta->mix_old[j] += after[j] - before[j];
    }
    ret = 0;
    goto out_free;

out_nomem:
    pd_set_error(errbuf, errlen, "out of memory reading a model delta");
    ret = -ENOMEM;
out_free:
    free(idx);
    free(val);
    return ret;
}

size_t pd_learner_delta_values(const pd_learner *l, uint32_t hash, bool intercept, double *ret)
{
    if (intercept)
        dvals_get(l, l->icpt, 0, false, true, ret);
    else
        dvals_get(l, l->table, (size_t)(hash & l->mask) * l->stride, l->f16, false, ret);
    return delta_k(l->conf.optimizer);
}

uint64_t pd_learner_delta_lost(const pd_learner *l)
{
    return l->delta ? l->delta->lost : 0;
}

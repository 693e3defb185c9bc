/* The one pseudo-random generator: xoshiro256** (Blackman and Vigna 2018) seeded through
 * splitmix64, a value type with no global state, so a model that draws from it gives the same
 * numbers in every process from the same seed (replay is deterministic) and can save its state
 * in a snapshot. Not for anything secret. */
#ifndef PD_RNG_H
#define PD_RNG_H

#include <math.h>
#include <stdint.h>

typedef struct pd_rng {
    uint64_t s[4];
} pd_rng;

static inline uint64_t pd_splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* A generator for (seed, stream): different streams are independent sequences of one seed. */
static inline void pd_rng_seed(pd_rng *r, uint64_t seed, uint64_t stream)
{
    uint64_t x = seed ^ (stream * 0xd1b54a32d192ed03ull);

    for (int i = 0; i < 4; i++)
        r->s[i] = pd_splitmix64(&x);
}

static inline uint64_t pd_rng_next(pd_rng *r)
{
    uint64_t *s = r->s;
    uint64_t x = s[1] * 5;
    uint64_t result = ((x << 7) | (x >> 57)) * 9;
    uint64_t t = s[1] << 17;

    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = (s[3] << 45) | (s[3] >> 19);
    return result;
}

/* Uniform in [0, 1) with 53 random bits. */
static inline double pd_rng_unit(pd_rng *r)
{
    return (double)(pd_rng_next(r) >> 11) * 0x1.0p-53;
}

/* Uniform in [0, n), n >= 1 (Lemire's multiply-shift; the bias is below 2^-32 n). */
static inline uint32_t pd_rng_below(pd_rng *r, uint32_t n)
{
    return (uint32_t)(((pd_rng_next(r) >> 32) * (uint64_t)n) >> 32);
}

/* Standard normal (Box-Muller; one of the pair is dropped, which keeps the state simple). */
static inline double pd_rng_normal(pd_rng *r)
{
    double u = 1.0 - pd_rng_unit(r); /* (0, 1]: log() stays finite */
    double v = pd_rng_unit(r);

    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

#endif

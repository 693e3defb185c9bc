/* Tests for models/topk.c: batched sgemm top-K against a brute-force reference (every score,
 * a full sort with the same tie rule) on random data. The vectors hold small dyadic values, so
 * every dot product is exact in float whatever order BLAS sums in, and the reference can
 * demand equal scores, not close ones; coarse values give heavy ties. */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "models/topk.h"

#define ERRLEN 256

typedef struct rng {
    uint64_t state;
} rng;

static uint64_t next_u64(rng *r)
{
    uint64_t z = (r->state += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static size_t below(rng *r, size_t n)
{
    return (size_t)(next_u64(r) % n);
}

/* Values a / 2^8 with |a| <= amp <= 256: a product is a multiple of 2^-16, a sum of d <= 128
 * of them stays below 2^23 such units, exact in a float's 24 bits. */
static float dyadic(rng *r, int amp)
{
    return (float)((int)below(r, 2 * (size_t)amp + 1) - amp) / 256.0f;
}

/* ---- the hook: a pure function of (row, item), so the reference can apply it to a row ---- */

typedef struct hook {
    uint64_t seed;
    int exclude_mod; /* -INFINITY when the hash is 0 modulo this (0: never) */
    int nan_mod;     /* NaN likewise */
    int inf_mod;     /* +INFINITY likewise */
    int delta_amp;   /* adds a multiple of 2^-16 of at most this (exact) */
    size_t calls;
    size_t covered; /* items seen, to check each row's blocks cover the catalogue once */
    size_t next_first[64];
} hook;

static uint64_t mix(uint64_t seed, size_t b, size_t item)
{
    rng r = {seed ^ ((uint64_t)b << 40) ^ (uint64_t)item};
    return next_u64(&r);
}

static float hooked(const hook *h, size_t b, size_t item, float s)
{
    uint64_t v = mix(h->seed, b, item);
    if (h->exclude_mod > 0 && v % (uint64_t)h->exclude_mod == 0)
        return -INFINITY;
    if (h->nan_mod > 0 && (v >> 16) % (uint64_t)h->nan_mod == 0)
        return NAN;
    if (h->inf_mod > 0 && (v >> 24) % (uint64_t)h->inf_mod == 0)
        return INFINITY;
    if (h->delta_amp > 0)
        s += (float)((int)((v >> 32) % (uint64_t)(2 * h->delta_amp + 1)) - h->delta_amp) / 65536.0f;
    return s;
}

static void adjust(void *ctx, size_t b, size_t first, float *scores, size_t count)
{
    hook *h = ctx;

    assert_true(b < 64);
    assert_int_equal(first, h->next_first[b]); /* blocks in order, no gap, no overlap */
    h->next_first[b] = first + count;
    h->calls++;
    h->covered += count;
    for (size_t j = 0; j < count; j++)
        scores[j] = hooked(h, b, first + j, scores[j]);
}

/* ---- the reference ---- */

typedef struct scored {
    float s;
    uint32_t i;
} scored;

static int cmp_scored(const void *a, const void *b)
{
    const scored *x = a, *y = b;
    if (x->s != y->s)
        return x->s > y->s ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

/* Every score of row b, exact in double then rounded once (exact anyway), the selectable ones
 * fully sorted. Returns how many are selectable. */
static size_t reference_row(const float *u, const float *items, const float *bias, size_t n,
                            size_t d, const hook *h, size_t b, scored *out)
{
    size_t m = 0;
    for (size_t j = 0; j < n; j++) {
        double acc = 0.0;
        for (size_t c = 0; c < d; c++)
            acc += (double)u[c] * (double)items[j * d + c];
        float s = (float)acc;
        if (bias != NULL)
            s += bias[j];
        if (h != NULL)
            s = hooked(h, b, j, s);
        if (s > -INFINITY) /* also false for NaN */
            out[m++] = (scored){s, (uint32_t)j};
    }
    qsort(out, m, sizeof(*out), cmp_scored);
    return m;
}

typedef struct trial {
    size_t max_batch, batch, n, d, k, block;
    int amp;      /* vector values, see dyadic() */
    int bias_amp; /* 0: no item bias */
    bool with_hook;
    bool coarse_hook; /* deltas of -1, 0, 1 units instead of up to 300 */
    uint64_t seed;
} trial;

static void run_trial(const trial *tr)
{
    char err[ERRLEN];
    rng r = {tr->seed};
    size_t batch = tr->batch, n = tr->n, d = tr->d, k = tr->k;
    float *users = malloc(batch * d * sizeof(float));
    float *items = malloc((n ? n : 1) * d * sizeof(float));
    float *bias = tr->bias_amp > 0 ? malloc((n ? n : 1) * sizeof(float)) : NULL;
    uint32_t *ri = malloc(batch * k * sizeof(uint32_t));
    float *rs = malloc(batch * k * sizeof(float));
    size_t *rc = malloc(batch * sizeof(size_t));
    scored *ref = malloc((n ? n : 1) * sizeof(scored));
    hook h = {.seed = tr->seed * 31 + 7,
              .exclude_mod = 5,
              .nan_mod = 17,
              .inf_mod = 89,
              .delta_amp = tr->coarse_hook ? 1 : 300};

    assert_non_null(users);
    assert_non_null(items);
    assert_non_null(ri);
    assert_non_null(rs);
    assert_non_null(rc);
    assert_non_null(ref);
    for (size_t i = 0; i < batch * d; i++)
        users[i] = dyadic(&r, tr->amp);
    for (size_t i = 0; i < n * d; i++)
        items[i] = dyadic(&r, tr->amp);
    if (bias != NULL)
        for (size_t j = 0; j < n; j++)
            bias[j] =
                (float)((int)below(&r, 2 * (size_t)tr->bias_amp + 1) - tr->bias_amp) / 65536.0f;

    pd_topk *t = pd_topk_new(tr->max_batch, k, tr->block, err, sizeof(err));
    assert_non_null(t);
    assert_int_equal(pd_topk_k(t), k);
    /* twice: the scratch must carry nothing from one call to the next */
    for (int pass = 0; pass < 2; pass++) {
        memset(&h.next_first, 0, sizeof(h.next_first));
        h.calls = h.covered = 0;
        assert_int_equal(pd_topk_batch(t, users, batch, items, bias, n, d,
                                       tr->with_hook ? adjust : NULL, &h, ri, rs, rc),
                         0);
        if (tr->with_hook) {
            size_t block = pd_topk_block(t);
            assert_int_equal(h.calls, batch * ((n + block - 1) / block));
            assert_int_equal(h.covered, batch * n);
        }
        for (size_t b = 0; b < batch; b++) {
            size_t m =
                reference_row(users + b * d, items, bias, n, d, tr->with_hook ? &h : NULL, b, ref);
            size_t want = m < k ? m : k;
            if (rc[b] != want)
                fail_msg("seed %llu row %zu: %zu results, reference %zu",
                         (unsigned long long)tr->seed, b, rc[b], want);
            for (size_t q = 0; q < want; q++)
                if (ri[b * k + q] != ref[q].i || !(rs[b * k + q] == ref[q].s))
                    fail_msg("seed %llu (n %zu d %zu k %zu block %zu) row %zu rank %zu: item "
                             "%u score %g, reference item %u score %g",
                             (unsigned long long)tr->seed, n, d, k, pd_topk_block(t), b, q,
                             ri[b * k + q], (double)rs[b * k + q], ref[q].i, (double)ref[q].s);
            for (size_t q = want; q < k; q++) {
                assert_int_equal(ri[b * k + q], UINT32_MAX);
                assert_true(rs[b * k + q] == -INFINITY);
            }
        }
    }
    pd_topk_free(t);
    free(users);
    free(items);
    free(bias);
    free(ri);
    free(rs);
    free(rc);
    free(ref);
}

/* Fine values: few ties; every batch size 1..max, several d, blocks smaller and larger than
 * the catalogue. */
static void test_random_against_reference(void **state)
{
    (void)state;
    const size_t ds[] = {8, 13, 32, 64, 128};
    const size_t blocks[] = {16, 48, 0};
    uint64_t seed = 1;
    for (size_t di = 0; di < sizeof(ds) / sizeof(ds[0]); di++)
        for (size_t bi = 0; bi < sizeof(blocks) / sizeof(blocks[0]); bi++)
            for (size_t batch = 1; batch <= 9; batch++) {
                trial tr = {.max_batch = 9,
                            .batch = batch,
                            .n = 37 + 61 * batch,
                            .d = ds[di],
                            .k = 1 + (seed * 7) % 24,
                            .block = blocks[bi],
                            .amp = 256,
                            .bias_amp = 1 << 20,
                            .with_hook = (seed & 1) != 0,
                            .seed = seed};
                run_trial(&tr);
                seed++;
            }
}

/* Coarse values in {-1, 0, 1} / 256 and no bias: scores take a handful of values, so nearly
 * every selection is decided by the tie rule, within blocks and across their boundaries. */
static void test_heavy_ties(void **state)
{
    (void)state;
    uint64_t seed = 1000;
    for (size_t d = 8; d <= 128; d *= 2)
        for (size_t batch = 1; batch <= 6; batch++) {
            trial tr = {.max_batch = 6,
                        .batch = batch,
                        .n = 300,
                        .d = d,
                        .k = 3 + batch * 5,
                        .block = 32,
                        .amp = 1,
                        .with_hook = false,
                        .seed = seed++};
            run_trial(&tr);
            tr.with_hook = true; /* coarse deltas keep the ties, and exclusions come in */
            tr.coarse_hook = true;
            tr.seed = seed++;
            run_trial(&tr);
        }
    /* all scores equal: the k lowest indexes */
    trial zero = {.max_batch = 4,
                  .batch = 4,
                  .n = 200,
                  .d = 16,
                  .k = 20,
                  .block = 64,
                  .amp = 0,
                  .seed = seed};
    run_trial(&zero);
}

/* Fewer items than k, no items, and rows where the hook leaves fewer than k selectable. */
static void test_fewer_than_k(void **state)
{
    (void)state;
    uint64_t seed = 5000;
    for (size_t n = 0; n < 30; n++) {
        trial tr = {.max_batch = 3,
                    .batch = 3,
                    .n = n,
                    .d = 8,
                    .k = 20,
                    .block = 16,
                    .amp = 4,
                    .with_hook = (n & 1) != 0,
                    .seed = seed++};
        run_trial(&tr);
    }
}

typedef struct exclude_ctx {
    size_t keep_every; /* only items multiple of this stay */
} exclude_ctx;

static void exclude_most(void *ctx, size_t b, size_t first, float *scores, size_t count)
{
    const exclude_ctx *e = ctx;
    (void)b;
    for (size_t j = 0; j < count; j++)
        if ((first + j) % e->keep_every != 0)
            scores[j] = -INFINITY;
}

/* Items excluded by the hook are never returned, even when nothing else is left. */
static void test_excluded_items(void **state)
{
    (void)state;
    char err[ERRLEN];
    enum { N = 1000, D = 8, K = 10, B = 2 };
    float *items = calloc(N * D, sizeof(float));
    float users[B * D];
    uint32_t ri[B * K];
    float rs[B * K];
    size_t rc[B];

    assert_non_null(items);
    for (size_t j = 0; j < N; j++)
        items[j * D] = (float)j; /* score = index for user 0, -index for user 1 */
    memset(users, 0, sizeof(users));
    users[0] = 1.0f;
    users[D] = -1.0f;
    pd_topk *t = pd_topk_new(B, K, 128, err, sizeof(err));
    assert_non_null(t);

    exclude_ctx e = {.keep_every = 300}; /* 0, 300, 600, 900 stay */
    assert_int_equal(pd_topk_batch(t, users, B, items, NULL, N, D, exclude_most, &e, ri, rs, rc),
                     0);
    assert_int_equal(rc[0], 4);
    assert_int_equal(ri[0], 900);
    assert_int_equal(ri[1], 600);
    assert_int_equal(ri[2], 300);
    assert_int_equal(ri[3], 0);
    assert_int_equal(rc[1], 4);
    assert_int_equal(ri[K + 0], 0);
    assert_int_equal(ri[K + 3], 900);
    assert_true(rs[K + 3] == -900.0f);

    e.keep_every = N + 1; /* only item 0 */
    assert_int_equal(pd_topk_batch(t, users, B, items, NULL, N, D, exclude_most, &e, ri, rs, rc),
                     0);
    assert_int_equal(rc[0], 1);
    assert_int_equal(ri[0], 0);
    assert_int_equal(ri[1], UINT32_MAX);
    pd_topk_free(t);
    free(items);
}

/* Ascending scores (every item beats the current k-th: the selection's worst case) and a larger
 * catalogue over the default block. */
static void test_large_and_adversarial(void **state)
{
    (void)state;
    trial tr = {.max_batch = 16,
                .batch = 16,
                .n = 20000,
                .d = 32,
                .k = 20,
                .block = 0,
                .amp = 256,
                .bias_amp = 1 << 20,
                .with_hook = true,
                .seed = 77};
    run_trial(&tr);

    char err[ERRLEN];
    enum { N = 5000, D = 8, K = 50 };
    float *items = calloc(N * D, sizeof(float));
    float users[D] = {1.0f};
    uint32_t ri[K];
    float rs[K];
    size_t rc;
    assert_non_null(items);
    for (size_t j = 0; j < N; j++)
        items[j * D] = (float)j;
    pd_topk *t = pd_topk_new(1, K, 0, err, sizeof(err));
    assert_non_null(t);
    assert_int_equal(pd_topk_batch(t, users, 1, items, NULL, N, D, NULL, NULL, ri, rs, &rc), 0);
    assert_int_equal(rc, K);
    for (size_t q = 0; q < K; q++)
        assert_int_equal(ri[q], N - 1 - q);
    pd_topk_free(t);
    free(items);
}

/* Ordinary floats: BLAS rounding differs from a plain loop, so this checks the result is
 * sorted by the rule and its scores are the items' scores to float precision. */
static void test_continuous_scores(void **state)
{
    (void)state;
    char err[ERRLEN];
    enum { N = 3000, D = 24, K = 15, B = 5 };
    rng r = {99};
    float *items = malloc(N * D * sizeof(float));
    float users[B * D];
    uint32_t ri[B * K];
    float rs[B * K];
    size_t rc[B];
    scored *ref = malloc(N * sizeof(scored));

    assert_non_null(items);
    assert_non_null(ref);
    for (size_t i = 0; i < N * D; i++)
        items[i] = (float)((double)(next_u64(&r) >> 11) / 9007199254740992.0 - 0.5);
    for (size_t i = 0; i < B * D; i++)
        users[i] = (float)((double)(next_u64(&r) >> 11) / 9007199254740992.0 - 0.5);
    pd_topk *t = pd_topk_new(B, K, 0, err, sizeof(err));
    assert_non_null(t);
    assert_int_equal(pd_topk_batch(t, users, B, items, NULL, N, D, NULL, NULL, ri, rs, rc), 0);
    for (size_t b = 0; b < B; b++) {
        assert_int_equal(rc[b], K);
        size_t m = reference_row(users + b * D, items, NULL, N, D, NULL, b, ref);
        assert_int_equal(m, N);
        for (size_t q = 0; q < K; q++) {
            double exact = 0.0;
            for (size_t c = 0; c < D; c++)
                exact += (double)users[b * D + c] * (double)items[ri[b * K + q] * D + c];
            assert_true(fabs(rs[b * K + q] - exact) < 1e-5);
            assert_true(fabs(rs[b * K + q] - ref[q].s) < 1e-5); /* the q-th best score */
            if (q > 0)
                assert_true(
                    rs[b * K + q - 1] > rs[b * K + q] ||
                    (rs[b * K + q - 1] == rs[b * K + q] && ri[b * K + q - 1] < ri[b * K + q]));
        }
    }
    pd_topk_free(t);
    free(items);
    free(ref);
}

static void test_invalid_arguments(void **state)
{
    (void)state;
    char err[ERRLEN];
    float users[4 * 8] = {0}, items[10 * 8] = {0};
    uint32_t ri[4 * 3] = {7};
    float rs[4 * 3] = {7.0f};
    size_t rc[4] = {7};

    err[0] = '\0';
    assert_null(pd_topk_new(0, 3, 0, err, sizeof(err)));
    assert_true(strlen(err) > 0);
    err[0] = '\0';
    assert_null(pd_topk_new(4, 0, 0, err, sizeof(err)));
    assert_true(strlen(err) > 0);
    assert_null(pd_topk_new(SIZE_MAX / 2, 3, 0, err, sizeof(err)));
    pd_topk_free(NULL);

    pd_topk *t = pd_topk_new(3, 3, 0, err, sizeof(err));
    assert_non_null(t);
    assert_int_equal(pd_topk_block(t) % 16, 0);
    assert_int_equal(pd_topk_blas_threads(), 1); /* as main() set it */
    assert_non_null(pd_topk_blas_core());
    /* batch over max_batch, d of 0, NULL outputs: -EINVAL and nothing written */
    assert_int_equal(pd_topk_batch(t, users, 4, items, NULL, 10, 8, NULL, NULL, ri, rs, rc),
                     -EINVAL);
    assert_int_equal(pd_topk_batch(t, users, 2, items, NULL, 10, 0, NULL, NULL, ri, rs, rc),
                     -EINVAL);
    assert_int_equal(pd_topk_batch(t, users, 2, items, NULL, 10, 8, NULL, NULL, NULL, rs, rc),
                     -EINVAL);
    assert_int_equal(pd_topk_batch(t, users, 2, NULL, NULL, 10, 8, NULL, NULL, ri, rs, rc),
                     -EINVAL);
    assert_int_equal(ri[0], 7);
    assert_true(rs[0] == 7.0f);
    assert_int_equal(rc[0], 7);
    /* an empty batch is a no-op */
    assert_int_equal(pd_topk_batch(t, users, 0, items, NULL, 10, 8, NULL, NULL, ri, rs, rc), 0);
    assert_int_equal(rc[0], 7);
    pd_topk_free(t);
}

int main(void)
{
    /* the products here are small; one thread keeps the test's timing and ASan's view simple */
    pd_topk_set_blas_threads(1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_against_reference),
        cmocka_unit_test(test_heavy_ties),
        cmocka_unit_test(test_fewer_than_k),
        cmocka_unit_test(test_excluded_items),
        cmocka_unit_test(test_large_and_adversarial),
        cmocka_unit_test(test_continuous_scores),
        cmocka_unit_test(test_invalid_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

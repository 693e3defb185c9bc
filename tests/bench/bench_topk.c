/* Benchmark for models/topk.c: batched top-K (one sgemm per block of items for the batch, item
 * bias, a co-visitation-like hook, partial selection) in ms per user, beside references
 * measured in the same run on the same data: the obvious per-user loop (a dot product per item
 * and a full sort), pd_topk one user at a time (what batching buys), and cblas_sgemm alone
 * over the same shape, whose GFLOP/s bound the scoring. OpenBLAS runs on one thread.
 *
 * usage: bench_topk [USERS [ITEMS [D [K [REPS [BLOCK]]]]]]   (default 256 100000 32 20 10 0;
 * BLOCK is pd_topk_new's, 0 for its default) */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cblas.h>

#include "common/rng.h"
#include "models/topk.h"

#define BOOSTS          48 /* co-visitation terms per user */
#define EXCLUDED        16 /* items a user already has: excluded */
#define NAIVE_MAX_USERS 32

typedef struct gen {
    uint64_t state;
} gen;

static uint64_t next_u64(gen *g)
{
    return pd_splitmix64(&g->state);
}

static float uniform(gen *g)
{
    return (float)((double)(next_u64(g) >> 11) * (1.0 / 9007199254740992.0));
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Per user a sorted list of (item, delta): co-visitation boosts, and -INFINITY for items the
 * user already has. The hook walks it block by block, as the recommender's would. */
typedef struct term {
    uint32_t item;
    float delta;
} term;

typedef struct terms {
    term *t;    /* users x (BOOSTS + EXCLUDED), each user's sorted by item */
    size_t *at; /* per user: the first term not applied yet */
    size_t per_user;
    size_t offset; /* row b of a batch is user offset + b */
} terms;

static int cmp_term(const void *a, const void *b)
{
    const term *x = a, *y = b;
    return x->item < y->item ? -1 : x->item > y->item;
}

static void adjust(void *ctx, size_t b, size_t first, float *scores, size_t count)
{
    terms *tm = ctx;
    size_t u = tm->offset + b;
    const term *t = tm->t + u * tm->per_user;
    size_t i = first == 0 ? 0 : tm->at[u];

    for (; i < tm->per_user && t[i].item < first + count; i++) {
        float *s = &scores[t[i].item - first];
        *s = t[i].delta == -INFINITY ? -INFINITY : *s + t[i].delta;
    }
    tm->at[u] = i;
}

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

/* The obvious per-user code: every item's score, then a full sort. */
static void naive_user(const float *u, const float *items, const float *bias, const terms *tm,
                       size_t user, size_t n, size_t d, size_t k, scored *buf, uint32_t *ret)
{
    for (size_t j = 0; j < n; j++) {
        float s = 0.0f;
        for (size_t c = 0; c < d; c++)
            s += u[c] * items[j * d + c];
        buf[j] = (scored){s + bias[j], (uint32_t)j};
    }
    const term *t = tm->t + user * tm->per_user;
    for (size_t i = 0; i < tm->per_user; i++)
        buf[t[i].item].s = t[i].delta == -INFINITY ? -INFINITY : buf[t[i].item].s + t[i].delta;
    qsort(buf, n, sizeof(*buf), cmp_scored);
    for (size_t r = 0; r < k; r++)
        ret[r] = buf[r].s > -INFINITY ? buf[r].i : UINT32_MAX;
}

typedef struct data {
    size_t users, n, d, k;
    float *u, *items, *bias;
    terms tm;
} data;

static int make_data(data *x, size_t users, size_t n, size_t d, size_t k)
{
    gen g = {42};
    *x = (data){.users = users, .n = n, .d = d, .k = k};
    x->u = malloc(users * d * sizeof(float));
    x->items = malloc(n * d * sizeof(float));
    x->bias = malloc(n * sizeof(float));
    x->tm.per_user = BOOSTS + EXCLUDED;
    x->tm.t = malloc(users * x->tm.per_user * sizeof(term));
    x->tm.at = calloc(users, sizeof(size_t));
    if (!x->u || !x->items || !x->bias || !x->tm.t || !x->tm.at)
        return -ENOMEM;
    /* embeddings in [-1, 1) scaled so that scores spread like a trained model's (unit-ish) */
    float scale = 1.0f / sqrtf((float)d);
    for (size_t i = 0; i < users * d; i++)
        x->u[i] = (2.0f * uniform(&g) - 1.0f) * 2.0f * scale;
    for (size_t i = 0; i < n * d; i++)
        x->items[i] = (2.0f * uniform(&g) - 1.0f) * 2.0f * scale;
    /* popularity: log-like, a few items much more popular */
    for (size_t j = 0; j < n; j++)
        x->bias[j] = -0.5f * logf(1.0f + (float)(next_u64(&g) % n));
    for (size_t u = 0; u < users; u++) {
        term *t = x->tm.t + u * x->tm.per_user;
        for (size_t i = 0; i < x->tm.per_user; i++)
            t[i] =
                (term){(uint32_t)(next_u64(&g) % n), i < BOOSTS ? 2.0f * uniform(&g) : -INFINITY};
        qsort(t, x->tm.per_user, sizeof(*t), cmp_term);
    }
    return 0;
}

static void free_data(data *x)
{
    free(x->u);
    free(x->items);
    free(x->bias);
    free(x->tm.t);
    free(x->tm.at);
}

/* One pass of pd_topk over the first `users` users in batches of pd_topk's max_batch, seconds
 * per user (NAN on failure). */
static double pass_topk(pd_topk *t, size_t batch, data *x, size_t users, uint32_t *ri, float *rs,
                        size_t *rc)
{
    double t0 = now_s();
    for (size_t u = 0; u < users; u += batch) {
        size_t nb = users - u < batch ? users - u : batch;
        x->tm.offset = u;
        if (pd_topk_batch(t, x->u + u * x->d, nb, x->items, x->bias, x->n, x->d, adjust, &x->tm,
                          ri + u * x->k, rs + u * x->k, rc + u) < 0)
            return NAN;
    }
    return (now_s() - t0) / (double)users;
}

/* One pass of cblas_sgemm alone over the same shape, in blocks of `block` items (the whole
 * catalogue at once when block >= n), into buf. Seconds per user. */
static double pass_sgemm(const data *x, size_t block, float *buf)
{
    double t0 = now_s();
    for (size_t first = 0; first < x->n; first += block) {
        size_t count = x->n - first < block ? x->n - first : block;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)x->users, (int)count, (int)x->d,
                    1.0f, x->u, (int)x->d, x->items + first * x->d, (int)x->d, 0.0f, buf,
                    (int)count);
    }
    return (now_s() - t0) / (double)x->users;
}

static void keep_min(double *best, double v)
{
    if (!(v >= *best))
        *best = v;
}

int main(int argc, char **argv)
{
    size_t users = argc > 1 ? strtoull(argv[1], NULL, 10) : 256;
    size_t n = argc > 2 ? strtoull(argv[2], NULL, 10) : 100000;
    size_t d = argc > 3 ? strtoull(argv[3], NULL, 10) : 32;
    size_t k = argc > 4 ? strtoull(argv[4], NULL, 10) : 20;
    size_t reps = argc > 5 ? strtoull(argv[5], NULL, 10) : 10;
    size_t block = argc > 6 ? strtoull(argv[6], NULL, 10) : 0;
    data x;

    if (users == 0 || n == 0 || d == 0 || k == 0 || k > n || reps == 0) {
        fprintf(stderr, "usage: bench_topk [USERS [ITEMS [D [K [REPS [BLOCK]]]]]]  (K <= ITEMS)\n");
        return 2;
    }
    /* one core: the figure the daemon's loop would get, and no pool stealing the other core */
    pd_topk_set_blas_threads(1);
    if (make_data(&x, users, n, d, k) < 0) {
        fprintf(stderr, "bench_topk: out of memory\n");
        return 1;
    }
    uint32_t *ri = malloc(users * k * sizeof(uint32_t));
    float *rs = malloc(users * k * sizeof(float));
    size_t *rc = malloc(users * sizeof(size_t));
    uint32_t *naive_ri = malloc(users * k * sizeof(uint32_t));
    scored *buf = malloc(n * sizeof(scored));
    float *full = malloc(users * n * sizeof(float));
    if (!ri || !rs || !rc || !naive_ri || !buf || !full) {
        fprintf(stderr, "bench_topk: out of memory\n");
        return 1;
    }

    printf("bench_topk: top-%zu over %zu items, d=%zu, batches of %zu users; item bias and a hook\n"
           "adding %d co-visitation terms and excluding %d items per user. Best of %zu, ms per\n"
           "user; xN: pd_topk_batch's speed as a multiple of the line's (above 1: faster).\n"
           "%s; kernels %s, %d thread(s)\n",
           k, n, d, users, BOOSTS, EXCLUDED, reps, openblas_get_config(), pd_topk_blas_core(),
           pd_topk_blas_threads());

    double flops = 2.0 * (double)n * (double)d; /* per user */
    char err[256];
    pd_topk *batched = pd_topk_new(users, k, block, err, sizeof(err));
    pd_topk *single = batched ? pd_topk_new(1, k, block, err, sizeof(err)) : NULL;
    if (single == NULL) {
        fprintf(stderr, "bench_topk: %s\n", err);
        return 1;
    }
    block = pd_topk_block(batched);
    size_t few = users < NAIVE_MAX_USERS ? users : NAIVE_MAX_USERS;

    /* The variants take turns, rep after rep, and each keeps its best: on a shared machine a
     * burst of load then hits all of them alike rather than one. */
    double topk = INFINITY, gemm_full = INFINITY, gemm_block = INFINITY, one = INFINITY;
    for (size_t r = 0; r < reps; r++) {
        keep_min(&topk, pass_topk(batched, users, &x, users, ri, rs, rc));
        keep_min(&gemm_block, pass_sgemm(&x, block, full));
        keep_min(&gemm_full, pass_sgemm(&x, n, full));
        keep_min(&one, pass_topk(single, 1, &x, few, naive_ri, rs, rc));
    }
    if (isnan(topk) || isnan(one)) {
        fprintf(stderr, "bench_topk: pd_topk_batch failed\n");
        return 1;
    }
    /* the obvious loop over a few users (it is slow), once */
    double t0 = now_s();
    for (size_t u = 0; u < few; u++)
        naive_user(x.u + u * d, x.items, x.bias, &x.tm, u, n, d, k, buf, naive_ri + u * k);
    double naive = (now_s() - t0) / (double)few;
    /* rounding differs between the loops, so agreement is counted, not required */
    size_t same = 0;
    for (size_t u = 0; u < few; u++)
        same += memcmp(naive_ri + u * k, ri + u * k, k * sizeof(uint32_t)) == 0;

    printf("  %-34s %8.4f ms/user  %7.1f GFLOP/s of the product\n", "pd_topk_batch (batch)",
           topk * 1e3, flops / topk * 1e-9);
    printf("  %-34s %8.4f ms/user  %7.1f GFLOP/s  pd_topk is x%.2f of it\n",
           "sgemm alone, one call (B x n)", gemm_full * 1e3, flops / gemm_full * 1e-9,
           gemm_full / topk);
    char label[64];
    snprintf(label, sizeof(label), "sgemm alone, blocks of %zu items", block);
    printf("  %-34s %8.4f ms/user  %7.1f GFLOP/s  pd_topk is x%.2f of it\n", label,
           gemm_block * 1e3, flops / gemm_block * 1e-9, gemm_block / topk);
    printf("  %-34s %8.4f ms/user                   pd_topk is x%.2f of it (%zu users)\n",
           "pd_topk, one user per call", one * 1e3, one / topk, few);
    printf("  %-34s %8.4f ms/user                   pd_topk is x%.2f of it (%zu users; %zu/%zu "
           "identical lists)\n",
           "naive loop: dot per item + qsort", naive * 1e3, naive / topk, few, same, few);
    printf("  %-34s %8.4f ms/user                   pd_topk is x%.2f of it\n", "target", 0.3,
           0.3e-3 / topk);

    pd_topk_free(batched);
    pd_topk_free(single);
    free(ri);
    free(rs);
    free(rc);
    free(naive_ri);
    free(buf);
    free(full);
    free_data(&x);
    return 0;
}

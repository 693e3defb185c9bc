/* Batched top-K: one cblas_sgemm per block of items for the whole batch, then per row a
 * size-k heap behind a vectorised reject test (topk.h says what is promised). */
#include "models/topk.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#if defined(__SSE2__) || (defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__)))
#include <immintrin.h>
#endif

#include "common/error.h"

/* Default block: about 1 MiB of scores for the whole batch, which stays in a core's L2 between
 * the product writing it and the selection reading it. */
#define DEFAULT_BLOCK_BYTES ((size_t)1 << 20)
#define MIN_BLOCK           256
#define MAX_BLOCK           16384
/* Rows of a multiple of 16 floats start on 64-byte lines. */
#define ROW_ALIGN 16

/* See select_block. */
typedef size_t (*scan_fn)(const float *s, size_t j, size_t n, float thr, uint32_t *ret_mask);

struct pd_topk {
    size_t max_batch;
    size_t k;
    size_t block;
    float *scores;    /* max_batch x block, row stride block */
    float *heap_s;    /* max_batch x k: per row a heap whose root is the worst candidate */
    uint32_t *heap_i; /* the candidates' item indexes */
    size_t *fill;     /* max_batch: candidates held per row */
    scan_fn scan;
    size_t scan_width;
};

/* a ranks below b: lower score, or the same score and a higher index */
static inline bool worse(float sa, uint32_t ia, float sb, uint32_t ib)
{
    return sa < sb || (sa == sb && ia > ib);
}

/* Adds a candidate to a heap that is not full yet. */
static void heap_push(float *hs, uint32_t *hi, size_t n, float s, uint32_t i)
{
    while (n > 0) {
        size_t parent = (n - 1) / 2;
        if (!worse(s, i, hs[parent], hi[parent]))
            break;
        hs[n] = hs[parent];
        hi[n] = hi[parent];
        n = parent;
    }
    hs[n] = s;
    hi[n] = i;
}

/* Replaces the root (the worst candidate) of a full heap of k by a better one. */
static void heap_replace_root(float *hs, uint32_t *hi, size_t k, float s, uint32_t i)
{
    size_t at = 0;

    for (;;) {
        size_t c = 2 * at + 1;
        if (c >= k)
            break;
        if (c + 1 < k && worse(hs[c + 1], hi[c + 1], hs[c], hi[c]))
            c++;
        if (!worse(hs[c], hi[c], s, i))
            break;
        hs[at] = hs[c];
        hi[at] = hi[c];
        at = c;
    }
    hs[at] = s;
    hi[at] = i;
}

/* The reject test, where the time goes: all but a few hundred of a row's scores fall below
 * the k-th candidate. A scan returns the first j' >= j (in steps of its width) where one of
 * the next `width` scores is above thr, with a bit set in *ret_mask for each that is, or the
 * first j' with fewer than `width` scores left (*ret_mask then undefined). Compares are false
 * for NaN, so NaN never passes. */
#if defined(__SSE2__)
#define SCAN_BASE       scan_sse2
#define SCAN_BASE_WIDTH 16
static size_t scan_sse2(const float *s, size_t j, size_t n, float thr, uint32_t *ret_mask)
{
    __m128 t = _mm_set1_ps(thr);

    for (; j + 16 <= n; j += 16) {
        __m128 a = _mm_cmpgt_ps(_mm_loadu_ps(s + j), t);
        __m128 b = _mm_cmpgt_ps(_mm_loadu_ps(s + j + 4), t);
        __m128 c = _mm_cmpgt_ps(_mm_loadu_ps(s + j + 8), t);
        __m128 d = _mm_cmpgt_ps(_mm_loadu_ps(s + j + 12), t);
        if (_mm_movemask_ps(_mm_or_ps(_mm_or_ps(a, b), _mm_or_ps(c, d))) != 0) {
            *ret_mask = (uint32_t)_mm_movemask_ps(a) | (uint32_t)_mm_movemask_ps(b) << 4 |
                        (uint32_t)_mm_movemask_ps(c) << 8 | (uint32_t)_mm_movemask_ps(d) << 12;
            break;
        }
    }
    return j;
}
#else
#define SCAN_BASE       scan_generic
#define SCAN_BASE_WIDTH 16
static size_t scan_generic(const float *s, size_t j, size_t n, float thr, uint32_t *ret_mask)
{
    for (; j + 16 <= n; j += 16) {
        uint32_t mask = 0;
        for (uint32_t q = 0; q < 16; q++)
            mask |= (uint32_t)(s[j + q] > thr) << q;
        if (mask != 0) {
            *ret_mask = mask;
            break;
        }
    }
    return j;
}
#endif

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__)) && !defined(PD_TOPK_NO_AVX2)
#define HAVE_AVX2_SCAN 1
/* 8-wide compares, 32 scores per branch: 2.2 times the SSE2 loop's speed on scores in L2 on the
 * benchmark's machine. Chosen at run time, so the build needs no -march. */
__attribute__((target("avx2"))) static size_t scan_avx2(const float *s, size_t j, size_t n,
                                                        float thr, uint32_t *ret_mask)
{
    __m256 t = _mm256_set1_ps(thr);

    for (; j + 32 <= n; j += 32) {
        __m256 a = _mm256_cmp_ps(_mm256_loadu_ps(s + j), t, _CMP_GT_OQ);
        __m256 b = _mm256_cmp_ps(_mm256_loadu_ps(s + j + 8), t, _CMP_GT_OQ);
        __m256 c = _mm256_cmp_ps(_mm256_loadu_ps(s + j + 16), t, _CMP_GT_OQ);
        __m256 d = _mm256_cmp_ps(_mm256_loadu_ps(s + j + 24), t, _CMP_GT_OQ);
        __m256 any = _mm256_or_ps(_mm256_or_ps(a, b), _mm256_or_ps(c, d));
        if (!_mm256_testz_ps(any, any)) {
            *ret_mask = (uint32_t)_mm256_movemask_ps(a) | (uint32_t)_mm256_movemask_ps(b) << 8 |
                        (uint32_t)_mm256_movemask_ps(c) << 16 |
                        (uint32_t)_mm256_movemask_ps(d) << 24;
            break;
        }
    }
    return j;
}
#endif

/* Offers scores s[0..n) (items first..first+n) to one row's heap. Items arrive in ascending
 * index order, so a newcomer that ties the worst candidate's score ranks below it (higher
 * index): "strictly above the threshold" is the whole test, and a threshold of -INFINITY while
 * the heap fills keeps -INFINITY and NaN out. */
static void select_block(const pd_topk *t, float *hs, uint32_t *hi, size_t *fill, const float *s,
                         size_t n, uint32_t first)
{
    size_t k = t->k, j = 0, filled = *fill;

    for (; j < n && filled < k; j++)
        if (s[j] > -INFINITY)
            heap_push(hs, hi, filled++, s[j], first + (uint32_t)j);
    *fill = filled;
    if (filled < k)
        return;

    float thr = hs[0];
    for (;;) {
        uint32_t mask;
        j = t->scan(s, j, n, thr, &mask);
        if (j + t->scan_width > n)
            break;
        /* the lanes above the threshold the scan saw; it rises as they go in, so each is
         * tested again */
        for (; mask != 0; mask &= mask - 1) {
            size_t q = j + (size_t)__builtin_ctz(mask);
            if (s[q] > thr) {
                heap_replace_root(hs, hi, k, s[q], first + (uint32_t)q);
                thr = hs[0];
            }
        }
        j += t->scan_width;
    }
    for (; j < n; j++)
        if (s[j] > thr) {
            heap_replace_root(hs, hi, k, s[j], first + (uint32_t)j);
            thr = hs[0];
        }
}

pd_topk *pd_topk_new(size_t max_batch, size_t k, size_t block, char *errbuf, size_t errlen)
{
    if (max_batch == 0 || k == 0) {
        pd_set_error(errbuf, errlen, "top-k needs a batch size and k of at least 1 (got %zu, %zu)",
                     max_batch, k);
        return NULL;
    }
    if (block == 0) {
        block = DEFAULT_BLOCK_BYTES / sizeof(float) / max_batch;
        block = block < MIN_BLOCK ? MIN_BLOCK : block > MAX_BLOCK ? MAX_BLOCK : block;
    }
    block = (block + ROW_ALIGN - 1) / ROW_ALIGN * ROW_ALIGN;
    if (block > INT_MAX || max_batch > INT_MAX || max_batch > SIZE_MAX / sizeof(float) / block ||
        max_batch > SIZE_MAX / sizeof(float) / k) {
        pd_set_error(errbuf, errlen, "top-k scratch of %zu x %zu scores is too large", max_batch,
                     block);
        return NULL;
    }

    pd_topk *t = calloc(1, sizeof(*t));
    if (t == NULL)
        goto out_nomem;
    t->max_batch = max_batch;
    t->k = k;
    t->block = block;
    t->scan = SCAN_BASE;
    t->scan_width = SCAN_BASE_WIDTH;
#ifdef HAVE_AVX2_SCAN
    if (__builtin_cpu_supports("avx2")) {
        t->scan = scan_avx2;
        t->scan_width = 32;
    }
#endif
    t->scores = aligned_alloc(64, max_batch * block * sizeof(float));
    t->heap_s = malloc(max_batch * k * sizeof(float));
    t->heap_i = malloc(max_batch * k * sizeof(uint32_t));
    t->fill = malloc(max_batch * sizeof(size_t));
    if (t->scores == NULL || t->heap_s == NULL || t->heap_i == NULL || t->fill == NULL)
        goto out_free;
    return t;

out_free:
    pd_topk_free(t);
out_nomem:
    pd_set_error(errbuf, errlen, "top-k scratch for %zu users x %zu items: out of memory",
                 max_batch, block);
    return NULL;
}

void pd_topk_free(pd_topk *t)
{
    if (t == NULL)
        return;
    free(t->scores);
    free(t->heap_s);
    free(t->heap_i);
    free(t->fill);
    free(t);
}

size_t pd_topk_k(const pd_topk *t)
{
    return t->k;
}

size_t pd_topk_block(const pd_topk *t)
{
    return t->block;
}

int pd_topk_blas_threads(void)
{
    return openblas_get_num_threads();
}

void pd_topk_set_blas_threads(int n)
{
    openblas_set_num_threads(n);
}

const char *pd_topk_blas_core(void)
{
    return openblas_get_corename();
}

/* Writes one row's candidates best first: an insertion sort, k is small. */
static void emit_row(const float *hs, const uint32_t *hi, size_t n, size_t k, uint32_t *items,
                     float *scores)
{
    for (size_t r = 0; r < n; r++) {
        float s = hs[r];
        uint32_t i = hi[r];
        size_t at = r;
        while (at > 0 && worse(scores[at - 1], items[at - 1], s, i)) {
            scores[at] = scores[at - 1];
            items[at] = items[at - 1];
            at--;
        }
        scores[at] = s;
        items[at] = i;
    }
    for (size_t r = n; r < k; r++) {
        scores[r] = -INFINITY;
        items[r] = UINT32_MAX;
    }
}

int pd_topk_batch(pd_topk *t, const float *users, size_t batch, const float *items,
                  const float *item_bias, size_t n_items, size_t d, pd_topk_adjust_fn adjust,
                  void *ctx, uint32_t *ret_items, float *ret_scores, size_t *ret_counts)
{
    if (t == NULL || batch > t->max_batch || d == 0 || d > INT_MAX || n_items > UINT32_MAX)
        return -EINVAL;
    if (batch == 0)
        return 0;
    if (users == NULL || (items == NULL && n_items > 0) || ret_items == NULL ||
        ret_scores == NULL || ret_counts == NULL)
        return -EINVAL;

    size_t k = t->k;
    memset(t->fill, 0, batch * sizeof(*t->fill));
    for (size_t first = 0; first < n_items; first += t->block) {
        size_t count = n_items - first < t->block ? n_items - first : t->block;
        /* C (batch x count, ldc count) = users (batch x d) . items[first..]^T (+ the bias,
         * copied into C for the product to add to: that costs about what OpenBLAS's own
         * clearing of C for a beta of 0 costs, where a pass adding it afterwards cost more
         * than the whole selection) */
        float beta = 0.0f;
        if (item_bias != NULL) {
            for (size_t b = 0; b < batch; b++)
                memcpy(t->scores + b * count, item_bias + first, count * sizeof(float));
            beta = 1.0f;
        }
        /* One user: OpenBLAS 0.3.21's sgemm would pack the block of items for a single row
         * (measured 2 ms per user at the benchmark's shape); sgemv reads it as it is. */
        if (batch == 1)
            cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)count, (int)d, 1.0f, items + first * d,
                        (int)d, users, 1, beta, t->scores, 1);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)batch, (int)count, (int)d,
                        1.0f, users, (int)d, items + first * d, (int)d, beta, t->scores,
                        (int)count);
        for (size_t b = 0; b < batch; b++) {
            float *row = t->scores + b * count;
            if (adjust != NULL)
                adjust(ctx, b, first, row, count);
            select_block(t, t->heap_s + b * k, t->heap_i + b * k, &t->fill[b], row, count,
                         (uint32_t)first);
        }
    }
    for (size_t b = 0; b < batch; b++) {
        emit_row(t->heap_s + b * k, t->heap_i + b * k, t->fill[b], k, ret_items + b * k,
                 ret_scores + b * k);
        ret_counts[b] = t->fill[b];
    }
    return 0;
}

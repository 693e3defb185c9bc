/* Batched top-K scoring: the K best items for each of a batch of users, scores = user vector .
 * item vector (one cblas_sgemm per block of items for the whole batch) + an optional item bias
 * + whatever a caller's hook adds, then a partial selection per user. A pd_topk owns only its
 * scratch; it knows nothing of users, co-visitation or Redis.
 *
 * What it does, beyond the signatures:
 *  - Order: score descending, ties broken by the lower item index, so the result is one
 *    definite list for given scores. An item scoring NaN or -INFINITY is never selected (a
 *    hook excludes an item by setting -INFINITY); +INFINITY ranks above every finite score.
 *  - Items are scored a block at a time (pd_topk_new's block): the batch's block of scores is
 *    small enough to stay in cache between the product and the selection, and the scratch does
 *    not grow with the catalogue. On the benchmark's shape (tests/bench/README.md) the product
 *    over the whole catalogue at once writes and rereads 100 MB and is 1.5 times slower.
 *  - Threads: pd_topk_batch() runs on the caller's thread and is not synchronised (one batch
 *    at a time per pd_topk; the inputs are only read). cblas_sgemm uses OpenBLAS's thread
 *    count, which is process-wide, and this module never changes it by itself. Debian's
 *    OpenBLAS (pthread build) starts its pool when the library is loaded, one thread per core
 *    unless OPENBLAS_NUM_THREADS says otherwise, and then runs these products on every core
 *    (measured: both cores of the benchmark's VM busy). The linker drops OpenBLAS from a
 *    program that calls nothing here, so the daemon gets that pool the day it uses this module.
 *    One core per loop takes OPENBLAS_NUM_THREADS=1 in the environment (no pool at all), or
 *    pd_topk_set_blas_threads(1) before the first batch (the pool's threads then sit idle:
 *    0.1 s of CPU in 2 s of products, measured). pd_topk_blas_threads() says which it got.
 *  - Speed depends on the kernels OpenBLAS chose for the CPU (pd_topk_blas_core()): 0.3.21
 *    falls back to SSE3 ones ("Prescott") on CPU models newer than itself, a quarter to a third
 *    of what an AVX-512 CPU does; OPENBLAS_CORETYPE in the environment names the right ones. */
#ifndef PD_TOPK_H
#define PD_TOPK_H

#include <stddef.h>
#include <stdint.h>

typedef struct pd_topk pd_topk;

/* Scratch for batches of up to max_batch users and the k best items of each: max_batch x
 * block scores and max_batch x k candidates, all allocated here, nothing per call. block:
 * items per product, 0 for the default (a multiple of 16 near 1 MiB of scores for the whole
 * batch, at least 256 and at most 16384 items). Returns NULL and the reason in errbuf when an
 * argument is 0 or the memory is not there. */
pd_topk *pd_topk_new(size_t max_batch, size_t k, size_t block, char *errbuf, size_t errlen);
void pd_topk_free(pd_topk *t);

size_t pd_topk_k(const pd_topk *t);
/* Items per product (the block pd_topk_new chose). */
size_t pd_topk_block(const pd_topk *t);

/* Adds per-user terms to raw scores before selection: scores[j] is item first_item + j of
 * user row b of the batch, count items, already holding user . item (+ item_bias). It may
 * add to them, overwrite them, or set -INFINITY to exclude an item. Called once per row for
 * every block, blocks in ascending item order, so together the calls of a row cover
 * [0, n_items) exactly once. It must not call pd_topk on the same object. */
typedef void (*pd_topk_adjust_fn)(void *ctx, size_t b, size_t first_item, float *scores,
                                  size_t count);

/* The top k items of each of batch users (batch <= max_batch): users is batch x d and items is
 * n_items x d, row-major floats; item_bias (n_items floats) and adjust may be NULL. Row b of
 * ret_items and ret_scores (k entries each, best first) holds ret_counts[b] results, fewer
 * than k when fewer of the row's items are selectable; the rest of the row is set to
 * UINT32_MAX and -INFINITY. Returns 0, or -EINVAL (batch over max_batch, d or the sizes
 * beyond what BLAS takes, n_items over UINT32_MAX, a NULL array) and writes nothing. */
int pd_topk_batch(pd_topk *t, const float *users, size_t batch, const float *items,
                  const float *item_bias, size_t n_items, size_t d, pd_topk_adjust_fn adjust,
                  void *ctx, uint32_t *ret_items, float *ret_scores, size_t *ret_counts);

/* OpenBLAS's process-wide thread count and kernels (see above), so that a caller can set,
 * check or log them without including cblas.h. */
int pd_topk_blas_threads(void);
void pd_topk_set_blas_threads(int n);
const char *pd_topk_blas_core(void);

#endif

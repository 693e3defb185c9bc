/* The recommender kind of model: for every user a list of the K items most worth showing now,
 * scored as a blend of item-to-item co-visitation over the user's recent items (Linden et al.
 * 2003), implicit-feedback embeddings learned online with a BPR pairwise loss (Rendle et al.
 * 2009) and decayed item popularity (the cold-start fallback), batched through OpenBLAS
 * (models/topk.h). Judged progressively ("test then train", Vinagre et al. 2014): before an
 * interaction is learned, the user's list is looked up and HR@K, MRR@K and NDCG@K count where
 * the item stood, beside three baselines computed in the same pass when asked (popularity,
 * recent popularity, plain co-visitation). A pd_model_ops table for the engine.
 *
 * Bounded memory: limits.users and limits.items, least recently seen evicted (counted);
 * co_visitation.neighbors per item; limits.seen items remembered per user. New users and
 * items start from vectors drawn from a generator seeded by the model's seed and their id, so
 * the same events give the same lists in any process. Not synchronised. */
#ifndef PD_RECOMMENDER_H
#define PD_RECOMMENDER_H

#include <stddef.h>

#include "config/config.h"
#include "models/model.h"

extern const pd_model_ops pd_recommender_ops;

/* Bytes one user and one item take at most under conf (for `check` and reports). */
size_t pd_recommender_bytes_per_user(const pd_recommender_conf *conf);
size_t pd_recommender_bytes_per_item(const pd_recommender_conf *conf);

#endif

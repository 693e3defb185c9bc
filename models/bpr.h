/* One step of Bayesian Personalised Ranking (Rendle et al. 2009) for implicit feedback: a
 * user u preferred item i to a sampled item j, so SGD ascends ln sigmoid(x) with
 * x = u . (v_i - v_j) + b_i - b_j, weighted by the interaction's weight, with L2 on every
 * parameter the step touches. Pure arithmetic on the caller's vectors; the recommender owns
 * them and decides what i, j and the weight are. */
#ifndef PD_BPR_H
#define PD_BPR_H

#include <stddef.h>

/* With g = weight * sigmoid(-x), every parameter moves from its value before the step:
 *   u   += rate * (g * (v_i - v_j) - l2 * u)
 *   v_i += rate * (g * u - l2 * v_i)        b_i += rate * (g - l2 * b_i)
 *   v_j += rate * (-g * u - l2 * v_j)       b_j += rate * (-g - l2 * b_j)
 * The vectors have d floats and do not overlap (i != j). Returns x before the step. */
float pd_bpr_step(float *u, float *v_i, float *b_i, float *v_j, float *b_j, size_t d,
                  float weight, float rate, float l2);

#endif

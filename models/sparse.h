/* The hashed sparse feature vector shared by features (which build it) and learners (which read
 * it). A plain value type: no functions, no ownership. */
#ifndef PD_SPARSE_H
#define PD_SPARSE_H

#include <stdint.h>

/* One active coordinate: a 32-bit feature hash (the learner masks it to its table size) and
 * its value (1 for categorical features). */
typedef struct pd_feature {
    uint32_t hash;
    float value;
} pd_feature;

#endif

/* Online generalised linear models over hashed sparse features: logistic, linear (squared or
 * Huber loss) and hinge, learned with FTRL-Proximal, AdaGrad or SGD. A learner owns its weight
 * table and optimizer state; it knows nothing of events, Kafka or Redis. */
#ifndef PD_LEARNER_H
#define PD_LEARNER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "models/sparse.h"

typedef struct pd_learner pd_learner;

typedef struct pd_learner_stats {
    uint64_t updates;        /* learn() calls that changed weights */
    uint64_t nonfinite;      /* updates skipped because a gradient or weight was not finite */
    uint64_t clipped;        /* margins clipped to +-max_abs_margin */
    uint64_t not_admitted;   /* feature occurrences that were not yet admitted */
    uint64_t weights_nonzero;
} pd_learner_stats;

/* Returns NULL and a message in errbuf when conf is out of range. */
pd_learner *pd_learner_new(const pd_learner_conf *conf, char *errbuf, size_t errlen);
void pd_learner_free(pd_learner *learner);

/* Output for x: a probability (logistic), a value (linear) or a margin (hinge). Never NaN. */
double pd_learner_predict(const pd_learner *learner, const pd_feature *x, size_t n);

/* Learns one example; label is 0/1 for logistic and hinge, a value for linear. importance
 * scales the gradient (1 = plain). Returns the prediction made before the update
 * (progressive validation). */
double pd_learner_learn(pd_learner *learner, const pd_feature *x, size_t n, double label,
                        double importance);

/* Takes new hyper-parameters (rates, L1/L2, margins) without touching the weights. Refuses
 * (-EINVAL) a change of type, loss, optimizer, bits or weight format: those need a new learner. */
int pd_learner_set_conf(pd_learner *learner, const pd_learner_conf *conf);

void pd_learner_get_stats(const pd_learner *learner, pd_learner_stats *ret_stats);

/* Bytes of weight and optimizer state, and bytes per weight-table entry. */
size_t pd_learner_memory(const pd_learner *learner);
size_t pd_learner_bytes_per_weight(const pd_learner_conf *conf);

#endif

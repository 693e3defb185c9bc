/* The generalised linear model kind (logistic, linear, hinge over hashed sparse features):
 * a pd_model_ops table for the engine. */
#ifndef PD_GLM_H
#define PD_GLM_H

#include "models/model.h"

extern const pd_model_ops pd_glm_ops;

#endif

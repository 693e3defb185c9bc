/* The kinds of model there are. Each kind's table lives in its own file. */
#include "models/model.h"

#include "models/glm.h"
#include "models/recommender.h"

const pd_model_ops *pd_model_ops_for(const pd_model_conf *conf)
{
    switch (conf->kind) {
    case PD_MODEL_KIND_RECOMMENDER:
        return &pd_recommender_ops;
    case PD_MODEL_KIND_GLM:
        break;
    }
    return &pd_glm_ops; /* logistic, linear and hinge are all generalised linear models */
}

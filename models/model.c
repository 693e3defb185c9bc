/* The kinds of model there are. Each kind's table lives in its own file. */
#include "models/model.h"

#include "models/glm.h"

const pd_model_ops *pd_model_ops_for(const pd_model_conf *conf)
{
    (void)conf; /* logistic, linear and hinge are all generalised linear models */
    return &pd_glm_ops;
}

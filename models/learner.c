/* placeholder: being written */
#include "models/learner.h"

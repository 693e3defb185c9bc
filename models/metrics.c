/* placeholder: being written */
#include "models/metrics.h"

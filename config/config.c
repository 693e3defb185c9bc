/* placeholder: being written */
#include "config/config.h"

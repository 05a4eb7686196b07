/* Placeholder: being written (see pgctl.h). */
#include "pgctl.h"

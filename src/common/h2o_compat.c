#include "common/h2o_compat.h"

#include <stdlib.h>

void est_h2o_free_disposed_queue(h2o_multithread_queue_t *queue)
{
    free(queue);
}

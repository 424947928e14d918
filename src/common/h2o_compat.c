#include "common/h2o_compat.h"

#include <stdlib.h>

void est_h2o_free_disposed_queue(h2o_multithread_queue_t *queue)
{
    free(queue);
}

void est_h2o_context_teardown(h2o_context_t *ctx)
{
    h2o_evloop_t *loop = ctx->loop;
    h2o_multithread_queue_t *queue = ctx->queue;
    h2o_context_dispose(ctx);
    h2o_evloop_run(loop, 0);
    est_h2o_free_disposed_queue(queue);
    h2o_evloop_destroy(loop);
}

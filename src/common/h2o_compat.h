/*
 * estuary - work-arounds for libh2o 2.2.5 quirks that are not worth spreading around.
 */
#ifndef EST_COMMON_H2O_COMPAT_H
#define EST_COMMON_H2O_COMPAT_H

#include <h2o.h>

/*
 * h2o_context_dispose() in libh2o 2.2.5 (evloop) closes the context's message queue but never
 * frees its memory. Call with the queue pointer saved before h2o_context_dispose(), after the
 * loop has run once more.
 */
void est_h2o_free_disposed_queue(h2o_multithread_queue_t *queue);

/*
 * Ends a thread's h2o context and its loop, in the order libh2o 2.2.5 needs: dispose the
 * context, run the loop once (sockets closed by the dispose are freed there), free the queue
 * (above), destroy the loop. The caller unregisters its receivers and disposes its own
 * timeouts first.
 */
void est_h2o_context_teardown(h2o_context_t *ctx);

#endif

/*
 * estuary - the request handler (handler.c): pins the worker's current generation view for
 * the request (worker_gen.h), matches the route and hands the request to the proxy or the
 * aggregate handler, with SPEC's JSON errors for what matches nothing.
 */
#ifndef EST_SERVER_HANDLER_H
#define EST_SERVER_HANDLER_H

#include <stddef.h>
#include <h2o.h>

/* h2o's on_req of the one path handler ("/") */
int est_handler_on_req(h2o_handler_t *self, h2o_req_t *req);
/* the request id of the HTTP/1.1 layer's own error replies (est_h1_ctx_t.request_id; data: the worker) */
size_t est_handler_error_request_id(void *data, h2o_req_t *req, char *buf);
/* makes the 413 h2o sends itself (body over h2o's limit) SPEC's JSON error */
void est_handler_setup_fallback(h2o_hostconf_t *host);

#endif

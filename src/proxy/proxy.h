/*
 * estuary - the proxy route handler: one upstream, the reply streamed back as it arrives
 * (status, headers without hop-by-hop ones, body with backpressure), and WebSocket relay.
 */
#ifndef EST_PROXY_PROXY_H
#define EST_PROXY_PROXY_H

#include "http/request.h"

/* Takes over the request; the response is sent later from the loop. */
void est_proxy_handle(est_request_t *r);

/*
 * The HTTP/1.1 layer's body_policy (est_h1_ctx_t), given the worker's current router: 1 when
 * `req` (a parsed head, not yet handled) matches a proxy route, whose body then streams, with
 * *max_body set to the route's max_request_body; 0 otherwise (the body is buffered).
 */
int est_proxy_body_policy(const est_router_t *router, h2o_req_t *req, uint64_t *max_body);

/* the worker thread is exiting (no request left): frees its request-coalescing table */
void est_proxy_worker_exit(void);

#endif

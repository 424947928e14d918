/*
 * estuary - the proxy route handler: one upstream, the reply streamed back as it arrives
 * (status, headers without hop-by-hop ones, body with backpressure), and WebSocket relay.
 */
#ifndef EST_PROXY_PROXY_H
#define EST_PROXY_PROXY_H

#include "http/request.h"

/* Takes over the request; the response is sent later from the loop. */
void est_proxy_handle(est_request_t *r);

#endif

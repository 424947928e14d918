/*
 * estuary - admin listener, metrics and access log glue (observe.c).
 *
 * Main thread: est_observe_server_start before the workers start (opens the admin listener
 * and the access log; 0 or -1, logged), est_observe_server_ready once every listener is up,
 * est_observe_server_draining when the drain starts, est_observe_server_reopen_log on
 * SIGUSR1, est_observe_server_stop after the workers stopped (-1: the admin loop could not be
 * torn down; exit without further cleanup).
 * Worker thread: est_observe_worker_init once its upstreams exist, est_observe_worker_close
 * after the drain (before the context is disposed), est_observe_worker_dispose at the end.
 * Request path: est_observe_request_start as the handler starts (counts and logs the
 * request when its pool is freed), est_observe_request_matched once the route is known.
 */
#ifndef EST_SERVER_OBSERVE_H
#define EST_SERVER_OBSERVE_H

#include <h2o.h>
#include "config/config.h"
#include "http/request.h"
#include "server/worker.h"

/*
 * The client's address of `req`: cached in `cc` (formatted on its first request), or formatted
 * into a per-worker scratch slot when the connection is not tracked (cc NULL; the result is
 * then valid until the next call on this thread).
 */
const est_conn_peer_t *est_conn_peer(est_client_conn_t *cc, h2o_req_t *req);

typedef struct est_reqlog est_reqlog_t;
int est_observe_server_start(est_server_t *s);
/* (main thread: start, or a reload turning "admin" on) starts the admin listener of conf->admin */
int est_observe_admin_start(est_server_t *s, const est_config_t *conf);
void est_observe_server_ready(est_server_t *s);
void est_observe_server_draining(est_server_t *s);
void est_observe_server_reopen_log(est_server_t *s);
int est_observe_server_stop(est_server_t *s);
void est_observe_worker_init(est_worker_t *w);
void est_observe_worker_close(est_worker_t *w);
void est_observe_worker_dispose(est_worker_t *w);
est_reqlog_t *est_observe_request_start(est_worker_t *w, h2o_req_t *req, h2o_iovec_t request_id, const est_conn_peer_t *peer,
                                        est_disposer_t **disposers);
/* (reload) worker thread: the route counters move from `from`'s routes to `to`'s (by path) */
void est_observe_worker_switch(est_worker_t *w, const est_config_t *from, const est_config_t *to);
/* (tracing) the request's trace context (NULL: off): the server span and the access log's
 * trace_id come from it when the request ends; `tctx` must live until then */
void est_observe_request_trace(est_reqlog_t *rl, est_trace_ctx_t *tctx);
/* returns the trace handlers fill (est_request_t.trace) */
est_request_trace_t *est_observe_request_matched(est_reqlog_t *rl, const est_route_conf_t *route);

#endif

/*
 * estuary - libh2o's HTTP/2 server behind the frame guard (guard.h, docs/http2.md).
 *
 * est_h2_accept hands an accepted socket (plaintext after the h2c preface was seen, or TLS
 * after ALPN chose h2) to h2o_http2_accept, then wraps the socket's read callback so that
 * every byte passes the guard before libh2o's parser sees it. A refusal counts
 * counters->closed[reason], writes a GOAWAY and makes libh2o tear its connection down through
 * its own read-error path (every stream disposed, so every upstream exchange is cancelled).
 */
#ifndef EST_H2_ATTACH_H
#define EST_H2_ATTACH_H

#include <h2o.h>
#include "admin/metrics.h"
#include "config/config.h"
#include "h2/guard.h"

/* SPEC's limits with the config's client_header_timeout, client_idle_timeout and the largest
 * max_request_body (top level or any route's: the connection's budget must fit any one request) */
void est_h2_limits_from_config(est_h2_limits_t *l, const est_config_t *conf);

/*
 * Accepts `sock` as an HTTP/2 connection. Call it where h2o_http2_accept would be called,
 * after sock->on_close is set: on_close.cb is chained (ours runs, then the caller's), and
 * on_close.data is left as it is: it must be unique per socket (when it is NULL, it is set to
 * the guard's own state). Bytes already in sock->input
 * (the preface read while sniffing the protocol) go through the guard first.
 * `limits` is copied. `counters` must outlive the connection (the worker's). `open_requests`
 * points at the number of the connection's requests in flight (est_client_conn_t.inflight);
 * NULL turns the idle limit off, since the guard cannot see responses finish.
 */
void est_h2_accept(h2o_accept_ctx_t *actx, h2o_socket_t *sock, struct timeval connected_at, const est_h2_limits_t *limits,
                   est_conn_counters_t *counters, const size_t *open_requests);

#endif

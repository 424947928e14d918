/*
 * estuary - the HTTP/1.1 server connection layer (RFC 9112), in place of libh2o's lib/http1.c.
 *
 * One est_h1 connection per accepted socket (plain, or TLS once the handshake chose
 * "http/1.1"). It reads and parses requests strictly (h1/parse.h), turns each into an
 * h2o_req_t for h2o_process_request (so the handlers run the same code for HTTP/1.1 and
 * HTTP/2), and writes the response itself: status line, Date, headers, Content-Length or
 * chunked, formatted by hand, one writev per h2o_send. A malformed request is answered with
 * estuary's JSON error and `Connection: close` by this layer alone (no h2o_req_t, no
 * handler, no backend), after which nothing more of that connection is parsed.
 *
 * Timers (one per connection, switched per phase): client_header_timeout from the first byte
 * of a request head, client_body_timeout between body reads (both: 408 when nothing was sent
 * yet), client_idle_timeout between keep-alive requests, client_send_timeout while a write is
 * pending. Each close for one of these is counted in counters->closed[reason].
 *
 * While a request is handled the socket stays readable (bounded): pipelined bytes wait, and an
 * end of stream from the client closes the connection, which disposes the request (the
 * handlers' dispose callbacks cancel their upstream work). See docs/http1.md.
 */
#ifndef EST_H1_CONN_H
#define EST_H1_CONN_H

#include <stdint.h>
#include <h2o.h>
#include "admin/metrics.h"

#define EST_H1_REQUEST_ID_MAX 128

/*
 * What the connection layer needs from its owner (the worker): shared by every connection of
 * one thread and changed only on that thread (a reload may replace the timeouts and the body
 * limit; a connection reads them at each phase). Everything is borrowed and must outlive the
 * connections.
 */
typedef struct est_h1_ctx {
    h2o_context_t *ctx;
    h2o_hostconf_t **hosts;
    h2o_timeout_t *header_timeout; /* client_header_timeout (also: a new connection's first byte) */
    h2o_timeout_t *body_timeout;   /* client_body_timeout */
    h2o_timeout_t *send_timeout;   /* client_send_timeout */
    h2o_timeout_t *idle_timeout;   /* client_idle_timeout */
    h2o_timeout_t *linger_timeout; /* how long a closing connection's input is drained */
    uint64_t max_request_body;     /* over it: 413 and close */
    /*
     * Asked at the head of a request with a body (not an upgrade): 1 when its body is to be
     * streamed (the handler then runs at once and pulls the body with est_h1_body_start /
     * est_h1_body_proceed), 0 when it is buffered whole before the handler runs (as with a NULL
     * callback). *max_body is preset to max_request_body; the callback may set the route's own
     * (used for a streamed body). See docs/streaming.md.
     */
    int (*body_policy)(void *data, h2o_req_t *req, uint64_t *max_body);
    void *body_policy_data;
    const char *server_name;       /* the Server field of this layer's own replies; NULL: none */
    /*
     * The request id of this layer's own error replies (body and x-request-id), written to
     * buf (at most EST_H1_REQUEST_ID_MAX bytes, no NUL), its length returned (0: none). `req`
     * is the request when its head was parsed (the client's X-Request-Id may be kept), else
     * NULL. NULL callback: no id.
     */
    size_t (*request_id)(void *data, h2o_req_t *req, char *buf);
    void *request_id_data;
    est_conn_counters_t *counters;
    /*
     * A plain connection whose first bytes are the HTTP/2 connection preface (RFC 9113 3.4,
     * prior knowledge) is handed to this callback with its input intact; the h1 connection is
     * gone by then. NULL: such a connection gets 505 like any other version.
     */
    void (*accept_h2)(void *data, h2o_socket_t *sock, struct timeval connected_at);
    void *accept_h2_data;
    /* internal: every live connection of this context (est_h1_shutdown) */
    h2o_linklist_t _conns;
    int _shutdown;
} est_h1_ctx_t;

/* initializes the fields starting with _ (the caller sets the others) */
void est_h1_ctx_init(est_h1_ctx_t *c);

/* Takes `sock` (its on_close is the caller's and left alone; sock->data becomes ours). */
void est_h1_accept(est_h1_ctx_t *c, h2o_socket_t *sock, struct timeval connected_at);

/*
 * Graceful drain: connections with no request in progress are closed at once; requests in
 * progress get `Connection: close` (when their head is not sent yet) and their connection is
 * closed once the response is written. Later requests are refused the same way.
 */
void est_h1_shutdown(est_h1_ctx_t *c);

/* true when `req` was made by this layer (an HTTP/1.x request of an est_h1 connection) */
int est_h1_is_h1_request(h2o_req_t *req);

/*
 * Switches the connection of `req` (an est_h1 request with req->upgrade set) to another
 * protocol: writes `HTTP/1.1 101` with req->res.headers and `Connection: upgrade`, then
 * disposes the request, frees the connection and calls cb(data, sock, 0) with the socket
 * (its input holds whatever the client sent after the request), or cb(data, NULL, 0) when
 * the write failed (the socket is closed then). Returns 0, or -1 when `req` is not an est_h1
 * request (nothing done).
 */
typedef void (*est_h1_upgrade_cb)(void *data, h2o_socket_t *sock, size_t reqsize);
int est_h1_upgrade(h2o_req_t *req, est_h1_upgrade_cb cb, void *data);

/*
 * Streamed request bodies (SPEC "Proxy routes"). The bytes given to the callback are the next
 * ones of the body (chunk framing removed), never empty unless `is_final`; they stay valid
 * until est_h1_body_proceed or the request's disposal. While the consumer holds them the
 * client is not read (backpressure). An error of the client's (a bad chunk, a body over the
 * limit, client_body_timeout, the client leaving) is answered by this layer (400/413/408 when
 * no response head was sent yet) and disposes the request: the consumer learns it from its
 * dispose callback, never from this one.
 */
typedef void (*est_h1_body_cb)(void *data, const char *bytes, size_t len, int is_final);

/*
 * Whether `req` has a streamed body (req->entity is then empty); *length is its
 * Content-Length, or UINT64_MAX when it is chunked; *expect_continue is 1 when the client
 * waits for `100 Continue` (sent by est_h1_body_start) before it sends the body.
 */
int est_h1_body_is_streamed(h2o_req_t *req, uint64_t *length, int *expect_continue);
/*
 * Starts reading a streamed body: writes `100 Continue` first when the client asked for it
 * (RFC 9110 10.1.1; call this once the body has somewhere to go), then calls cb with the first
 * bytes (possibly from inside this call). Once per request.
 */
void est_h1_body_start(h2o_req_t *req, est_h1_body_cb cb, void *data);
/* The bytes of the last callback are used: reads on (cb is called with the next ones). After
 * the final delivery this only releases them. */
void est_h1_body_proceed(h2o_req_t *req);

#endif

/*
 * estuary - the upstream HTTP/1.1 client: per-worker upstreams, connection pools,
 * exchanges (one logical request, with its retries).
 *
 * Everything here belongs to one worker thread and its loop. An est_upstream_t is the
 * worker's runtime state for one configured upstream: its pool of keep-alive connections
 * (at most pool.max_connections in use, requests beyond wait FIFO for at most
 * connect_timeout), its balancer over targets x addresses, its counters.
 *
 * An exchange sends one request and delivers the reply as a stream of callbacks:
 * on_head once, then on_body until is_final, or on_error at any point. Retries (per the
 * upstream's retry policy, bounded by the request's deadline) happen inside the exchange
 * and are invisible to the caller except in est_exchange_info().
 */
#ifndef EST_UPSTREAM_CLIENT_H
#define EST_UPSTREAM_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <h2o.h>
#include "common/phr.h"
#include "config/config.h"
#include "upstream/dns.h"
#include "trace/span.h"

typedef struct est_upstream est_upstream_t;
typedef struct est_upstream_set est_upstream_set_t;
typedef struct est_exchange est_exchange_t;

/* Why an attempt or exchange failed */
typedef enum {
    EST_UERR_NONE = 0,
    EST_UERR_DNS,             /* name did not resolve */
    EST_UERR_CONNECT,         /* refused / unreachable */
    EST_UERR_CONNECT_TIMEOUT, /* no connection within connect_timeout */
    EST_UERR_TLS,             /* handshake or certificate verification failed */
    EST_UERR_RESET,           /* connection closed or reset before the reply was complete */
    EST_UERR_TIMEOUT,         /* no head within response_timeout, or a body read stalled that long */
    EST_UERR_BAD_REPLY,       /* an invalid or ambiguous reply (h1wire.h): head, framing, chunking, size */
    EST_UERR_OVERLOADED,      /* no pooled connection free within connect_timeout */
    EST_UERR_DEADLINE,        /* the request's deadline passed (route timeout) */
} est_uerr_t;

const char *est_uerr_name(est_uerr_t e); /* "dns", "connect_failure", "timeout", ... */
/* true for the errors that map to 504 upstream_timeout rather than 502 */
int est_uerr_is_timeout(est_uerr_t e);

typedef struct est_upstream_request {
    h2o_iovec_t method;           /* "GET", ... */
    h2o_iovec_t path;             /* origin-form, encoded, with the query string */
    h2o_iovec_t host;             /* Host header; {NULL,0} = the chosen target's authority */
    const h2o_header_t *headers;  /* end-to-end headers to send (no Host, Content-Length, hop-by-hop) */
    size_t num_headers;
    h2o_iovec_t body;             /* sent with Content-Length when has_body */
    int has_body;
    uint64_t deadline;            /* absolute, in h2o_now() ms; no attempt outlives it; 0 = none */
    int is_idempotent;            /* POST/PATCH: 0 -> retried only when never sent */
    int want_upgrade;             /* websocket: keep Connection: upgrade + Upgrade headers, expect 101 */
    /*
     * (added) 0 (default): `deadline` bounds the attempts, i.e. the wait for the head; the body
     * then reads as long as no read waits longer than response_timeout (SPEC "Proxy routes").
     * 1: it also bounds the body (EST_UERR_DEADLINE via on_error after on_head).
     */
    int deadline_covers_body;
    /*
     * (streamed request body) 1: the body is not in `body` but written piece by piece with
     * est_exchange_write_body as the exchange asks for it (est_exchange_cb_t.on_send_ready);
     * body_length is its length (sent as Content-Length), UINT64_MAX when unknown (sent
     * chunked). Once the exchange has asked for body bytes it is never retried (the bytes are
     * gone), and its connection is pooled only when the whole body was written. While the body
     * streams, `deadline` does not run (client_body_timeout bounds the client, response_timeout
     * each write to the backend); it runs again, as long as it was, once the body is written.
     */
    int body_stream;
    uint64_t body_length;
    /*
     * (SPEC "Tracing") the request's trace context, NULL when tracing is off: every attempt
     * then gets a new span id, sends its own traceparent (and the context's tracestate; the
     * caller leaves the client's copies out of `headers`) and, when sampled, is reported as a
     * client span as it ends (est_trace_record_client). Must outlive the exchange like `req`.
     */
    est_trace_ctx_t *trace;
} est_upstream_request_t;

/* Per-exchange facts for logs, Server-Timing and the access log */
typedef struct est_exchange_info {
    unsigned attempts;          /* 1 + retries so far */
    int status;                 /* final status, 0 if none */
    est_uerr_t error;           /* last error, NONE on success */
    char address[64];           /* "ip:port" of the last attempt, "" if none */
    uint64_t start_at;          /* h2o_now() at est_exchange_start */
    uint64_t connect_ms;        /* of the last attempt (0 for a reused connection) */
    int reused;                 /* last attempt ran on a pooled connection */
    unsigned hedged;            /* (hedging) hedge attempts sent, 0 = not hedged (docs/upstream.md "Hedging") */
    int hedge_won;              /* a hedge's head came first: the reply is the hedge's */
} est_exchange_info_t;

typedef struct est_exchange_cb {
    /*
     * The reply's status line and headers. `headers` live only during the call. Return 0 to
     * go on, -1 to abort (no more callbacks; the connection is closed, not pooled).
     * For a 1xx other than 101 this is not called (interim replies are skipped).
     */
    int (*on_head)(est_exchange_t *x, void *data, int status, const struct phr_header *headers, size_t num_headers);
    /*
     * Body bytes (valid only during the call). `is_final` is 1 exactly once, on a clean end
     * (bytes may be empty then). Return 0 to go on, -1 to abort. After is_final the exchange
     * is gone.
     */
    int (*on_body)(est_exchange_t *x, void *data, const char *bytes, size_t len, int is_final);
    /* The exchange failed (before or after on_head). No callback follows; the exchange is gone. */
    void (*on_error)(est_exchange_t *x, void *data, est_uerr_t err, const char *message);
    /*
     * (streamed request body, req->body_stream) The exchange takes body bytes now: first once
     * the request head was written to a connection (the backend connection is ready), then
     * each time the previous est_exchange_write_body was written, the final one included.
     * Never called re-entrantly from est_exchange_write_body. NULL for other requests.
     */
    void (*on_send_ready)(est_exchange_t *x, void *data);
} est_exchange_cb_t;

est_upstream_set_t *est_upstream_set_create(h2o_loop_t *loop, est_dns_t *dns, const est_config_t *conf);
/* Closes idle connections and frees the set. No exchange may still be running. */
void est_upstream_set_destroy(est_upstream_set_t *set);
est_upstream_t *est_upstream_set_get(est_upstream_set_t *set, size_t upstream_index);

/*
 * Starts an exchange; never calls back synchronously. `req` and everything it points to
 * must stay valid until the exchange ends (callers keep them in the request's pool).
 */
est_exchange_t *est_exchange_start(est_upstream_t *u, const est_upstream_request_t *req, const est_exchange_cb_t *cb,
                                   void *data);
/*
 * Aborts a running exchange: no callback follows. Its connection is closed, or, when the
 * request was written whole and the rest of the reply is small enough, drained in the
 * background and pooled (see docs/upstream.md).
 */
void est_exchange_cancel(est_exchange_t *x);
/* Backpressure for streaming: stop / restart reading the body (read timeout paused too). */
void est_exchange_pause(est_exchange_t *x);
void est_exchange_resume(est_exchange_t *x);
/*
 * (added, streaming) Zero-copy body relay. Called from inside on_body for a non-final
 * delivery: the `bytes` of that call stay valid after it returns. The exchange pauses (as
 * est_exchange_pause, read timer included) and leaves those bytes in its input buffer until
 * est_exchange_release(), which consumes them and resumes reading (from the loop, like
 * est_exchange_resume). est_exchange_resume does nothing while bytes are held.
 * est_exchange_cancel frees them. Ignored outside on_body and on the final delivery.
 */
void est_exchange_hold(est_exchange_t *x);
void est_exchange_release(est_exchange_t *x);
/*
 * (streamed request body) Writes the next `len` bytes of the body (chunk-framed when the
 * length is unknown), `is_final` on the last call (len may be 0 then). Only after
 * on_send_ready, one call per on_send_ready. `bytes` must stay valid until the next
 * on_send_ready or the end of the exchange. Returns 0, or -1 when the exchange cannot take
 * them (its attempt failed: on_error follows or came; or more than body_length bytes).
 */
int est_exchange_write_body(est_exchange_t *x, const char *bytes, size_t len, int is_final);
const est_exchange_info_t *est_exchange_info(const est_exchange_t *x);
/*
 * After on_head with status 101: take the raw socket (and the bytes already read after the
 * head, left in sock->input) for a tunnel. The exchange is gone afterwards.
 */
h2o_socket_t *est_exchange_steal_socket(est_exchange_t *x);

/* Per-upstream counters (per worker, summed by the admin endpoint) */
typedef struct est_upstream_stats {
    uint64_t attempts_ok, attempts_failed[EST_UERR_DEADLINE + 1];
    uint64_t retries;
    uint64_t conns_created, conns_reused;
    uint64_t conns_open, conns_idle; /* gauges */
    uint64_t queue_waits;
    /* (added) passive health and retry budget */
    uint64_t ejections;               /* an address was ejected (after repeated connect failures) */
    uint64_t retries_budget_exceeded; /* a retry was allowed by retry.* but refused by the budget */
    uint64_t tls_resumed;             /* TLS handshakes that resumed a cached session */
    /* (hedging) hedge attempts by outcome: its head came first (won), the other attempt's did or
     * the exchange ended first (lost), it failed (failed); a hedge due but refused by the budget
     * (refused) */
    uint64_t hedges_won, hedges_lost, hedges_failed, hedges_refused;
} est_upstream_stats_t;

const est_upstream_stats_t *est_upstream_get_stats(const est_upstream_t *u);

/* (admin console) one address of an upstream's targets, as the balancer sees it now */
typedef struct est_upstream_addr_info {
    size_t target;                     /* index in the upstream's conf->targets */
    const struct sockaddr_storage *sa; /* borrowed: valid during the callback */
    uint16_t port;
    unsigned fails;         /* consecutive connect failures */
    uint64_t ejected_until; /* h2o_now() ms; 0: admitted; in the past: half-open */
} est_upstream_addr_info_t;

/* Calls cb for every address of every target's last DNS answer (loop thread). Returns the
 * requests waiting for a connection slot now; *now receives the loop's clock. Read-only. */
size_t est_upstream_describe(const est_upstream_t *u, void (*cb)(void *data, const est_upstream_addr_info_t *a), void *data,
                             uint64_t *now);

/*
 * (reload) Hands the runtime state of `from` (an upstream of a set that is no longer the
 * worker's current one) to `to` (the upstream of the same name in the current set, whose
 * configuration is equal; both sets on the same loop): its idle connections move to `to`'s
 * pool now, connections its running exchanges release later go to `to`'s pool instead of
 * its own, and its counters are added to `to`'s (and zeroed in `from`). `to` NULL undoes a
 * previous hand-over (the upstream changed): `from` keeps its connections until its set is
 * destroyed. Call it again when `to`'s set is replaced, before destroying that set.
 */
void est_upstream_handover(est_upstream_t *from, est_upstream_t *to);

#endif

/*
 * estuary - what the front end hands to a route handler (aggregate or proxy), and the
 * request-side helpers both share: JSON errors, forwarded headers, request ids.
 *
 * The front end matches the route, checks the method, fixes the request id, builds the
 * end-to-end + forwarding headers once, and passes an est_request_t allocated in the
 * request's pool. Handlers own the response from then on.
 */
#ifndef EST_HTTP_REQUEST_H
#define EST_HTTP_REQUEST_H

#include <stdint.h>
#include <string.h>
#include <h2o.h>
#include "config/config.h"
#include "router/router.h"
#include "upstream/client.h"

/* Per-worker services a handler may use (owned by the worker; lives as long as the loop) */
typedef struct est_services {
    h2o_loop_t *loop;
    est_upstream_set_t *upstreams;
    /* returns the worker's h2o_timeout_t of this duration (created on first use) */
    h2o_timeout_t *(*get_timeout)(struct est_services *svc, uint64_t ms);
    /* the worker's client-connection counters (admin/metrics.h: closed[reason]); may be NULL */
    struct est_conn_counters *conns;
    /* the worker's metrics (admin/metrics.h), for the policy stages' counters; may be NULL */
    struct est_worker_metrics *metrics;
    /* keep these services (upstream set, config) alive for work that outlives its request, such
     * as the cache's background refresh; one unpin per pin, on the worker's loop. May be NULL. */
    void (*pin)(struct est_services *svc);
    void (*unpin)(struct est_services *svc);
} est_services_t;

/*
 * (admin: access log) What the access log shows of one upstream exchange. Handlers report
 * each exchange with est_request_trace_exchange() when it answers (head) or fails.
 */
typedef struct est_trace_exchange {
    const char *upstream; /* upstream name, owned by the config */
    char address[64];     /* "ip:port" of the last attempt, "" if none */
    int status;           /* upstream status, 0 when it failed before a head */
    est_uerr_t error;     /* why it failed, NONE when it answered */
    unsigned attempt;     /* attempts made: 1 + retries */
    uint64_t connect_ms;  /* of the last attempt (0 for a reused connection) */
    uint64_t duration_ms; /* from the exchange's start to its head or failure */
    const char *reason;   /* static; when set, the access log's "error" instead of est_uerr_name(error)
                           * (aggregate: invalid_json, reply_too_large, dependency_failed) */
    unsigned char hedged;    /* (hedging) a hedge attempt was sent ("hedge": true) */
    unsigned char hedge_won; /* ... and its reply is the one delivered */
} est_trace_exchange_t;

#define EST_TRACE_MAX_EXCHANGES 8

/* (admin: access log) Per-request record of upstream exchanges, owned by the front end */
typedef struct est_request_trace {
    est_trace_exchange_t exchanges[EST_TRACE_MAX_EXCHANGES];
    size_t num_exchanges; /* recorded, at most EST_TRACE_MAX_EXCHANGES */
    size_t num_dropped;   /* reported beyond the array */
    unsigned retries;     /* summed over every reported exchange */
} est_request_trace_t;

/*
 * Cleanups of per-request objects, run when the request is disposed, newest first (the order
 * h2o runs its pool's shared entries in). The objects live in the request's pool; the list
 * hangs off one shared entry the front end makes per request, so a handler's state costs a
 * pool allocation instead of a malloc + free of its own (h2o_mem_alloc_shared).
 */
typedef struct est_disposer est_disposer_t;
struct est_disposer {
    est_disposer_t *next;
    void (*cb)(void *obj);
};

/* `size` bytes in `pool` (not zeroed) whose `cb(obj)` runs from est_run_disposers(*list) */
void *est_alloc_disposable(h2o_mem_pool_t *pool, est_disposer_t **list, size_t size, void (*cb)(void *obj));
/* runs and empties the list, newest first; a cleanup may not add to it */
void est_run_disposers(est_disposer_t **list);

typedef struct est_request {
    h2o_req_t *req;
    est_disposer_t **disposers;  /* for est_alloc_disposable: released with the request */
    est_services_t *svc;
    const est_config_t *conf;
    const est_route_conf_t *route;
    const est_router_t *router;  /* for the compiled backend path templates */
    const est_match_t *match;    /* params point into `path`; est_match_size() bytes in the pool */
    h2o_iovec_t path;            /* normalized path, no query (in the request pool) */
    h2o_iovec_t query;           /* without '?', {NULL,0} when absent */
    h2o_iovec_t request_id;      /* kept or generated */
    unsigned method;             /* EST_METHOD_* bit of the client's method */
    h2o_header_t *fwd_headers;   /* end-to-end request headers + Via, X-Forwarded-*, X-Request-Id */
    size_t num_fwd_headers;
    uint64_t deadline;           /* h2o_now() + route timeout */
    est_request_trace_t *trace;  /* (admin) upstream exchanges for the access log; may be NULL */
    h2o_iovec_t client_ip;       /* the peer's bare IP as text ("" when unknown), for client_ip rate-limit keys */
    est_trace_ctx_t *tctx;       /* (SPEC "Tracing") the request's trace context, NULL when tracing is off */
} est_request_t;

/*
 * (admin: access log) Records exchange `x` of upstream `upstream` (name, borrowed from the
 * config) in r->trace: call it from on_head (`status` = the reply's status) or on_error /
 * before a cancel (`status` 0, `err` = why). A few copies, no allocation.
 */
static inline void est_request_trace_exchange(est_request_t *r, const char *upstream, const est_exchange_t *x, int status,
                                              est_uerr_t err)
{
    est_request_trace_t *t = r->trace;
    if (t == NULL || x == NULL)
        return;
    const est_exchange_info_t *info = est_exchange_info(x);
    t->retries += info->attempts > 1 ? info->attempts - 1 : 0;
    if (t->num_exchanges == EST_TRACE_MAX_EXCHANGES) {
        ++t->num_dropped;
        return;
    }
    est_trace_exchange_t *e = t->exchanges + t->num_exchanges++;
    e->upstream = upstream;
    memcpy(e->address, info->address, sizeof(e->address));
    e->address[sizeof(e->address) - 1] = '\0';
    e->status = status;
    e->error = status != 0 ? EST_UERR_NONE : err;
    e->reason = NULL;
    e->attempt = info->attempts;
    e->connect_ms = info->connect_ms;
    e->hedged = info->hedged != 0;
    e->hedge_won = info->hedge_won != 0;
    uint64_t now = h2o_now(r->svc->loop);
    e->duration_ms = now > info->start_at ? now - info->start_at : 0;
}

/*
 * Sends a JSON error `{"error": {"status", "code", "message", "request_id"}}` with
 * Content-Type: application/json and X-Request-Id. `message` is copied.
 */
void est_send_error(h2o_req_t *req, int status, const char *code, const char *message, h2o_iovec_t request_id);

/* The reason phrase for a status ("Bad Gateway"), "" when unknown */
const char *est_status_reason(int status);

/* 1 for hop-by-hop header names (RFC 7230 6.1), including the ones a Connection header names */
int est_is_hop_by_hop(const char *name, size_t len, const h2o_iovec_t *connection_value);

/* copies `len` bytes of `src` to `dst` with ASCII A-Z lower-cased (other bytes unchanged) */
void est_lower_copy(char *dst, const char *src, size_t len);

/*
 * Builds the headers sent upstream from the client's: end-to-end headers as they came
 * (without Host, Content-Length and hop-by-hop ones), then Via, X-Forwarded-For/-Proto/-Host
 * and X-Request-Id. `keep_upgrade` keeps the Upgrade header (websocket). Allocated in req->pool.
 */
void est_build_forward_headers(h2o_req_t *req, h2o_iovec_t request_id, int keep_upgrade, h2o_header_t **out, size_t *num_out);

/* The same, with the client's address (X-Forwarded-For) already formatted: `peer` ("" when
 * unknown) is copied into req->pool. The front end formats it once per connection. */
void est_build_forward_headers_peer(h2o_req_t *req, h2o_iovec_t request_id, int keep_upgrade, h2o_iovec_t peer,
                                    h2o_header_t **out, size_t *num_out);

/* 1 when the value is an acceptable client request id: 1-128 chars of [A-Za-z0-9._-] */
int est_request_id_is_valid(const char *s, size_t len);

/*
 * Fills `u` for backend `backend_index` of the route (0 for a proxy route): method (as
 * given), the expanded backend path with the client's query, Host (preserve_host), the
 * forwarded headers, the client's body, the route deadline and idempotency. Everything points
 * into the request's pool. Returns 0, or -1 when the backend path cannot be built.
 */
int est_request_prepare_upstream(est_request_t *r, size_t backend_index, h2o_iovec_t method, est_upstream_request_t *u);

/*
 * (dependent backends, SPEC "Dependent backends") Gives the value of a {GROUP.dot.path}
 * reference: `backend_index` is the earlier backend whose group is GROUP, `path` the dot path
 * after "GROUP." (never empty). Returns 0 with *text set to a string's decoded value or a
 * number's text exactly as the backend wrote it (valid until the fan-out ends); -1 when that
 * backend failed or contributed nothing, the path is missing, or the value is not a string or
 * a number (object, array, null, true, false).
 */
typedef int (*est_group_value_cb)(void *data, size_t backend_index, const char *path, size_t pathlen, h2o_iovec_t *text);

#define EST_PREPARE_DEPENDENCY_FAILED (-2)

/*
 * est_request_prepare_upstream for a backend of an aggregating route that may name earlier
 * groups (conf->num_deps > 0) in its path or headers: values come from `lookup` (which may be
 * NULL for a backend without deps); a path value is percent-encoded as one segment, a header
 * value used as it is. The backend's own `headers` are added to the forwarded ones. Returns
 * 0, -1 when the path cannot be built, or EST_PREPARE_DEPENDENCY_FAILED when a value is
 * missing or unusable (lookup -1, or a header value with CR, LF or NUL): the backend then
 * fails with reason `dependency_failed` and is not called.
 */
int est_request_prepare_backend(est_request_t *r, size_t backend_index, h2o_iovec_t method, est_upstream_request_t *u,
                                est_group_value_cb lookup, void *lookup_data);

/* Copies `bytes` into a buffer owned by req->pool and sends it as the whole body. */
void est_send_body(h2o_req_t *req, const char *bytes, size_t len);

#endif

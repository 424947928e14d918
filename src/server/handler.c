/*
 * estuary - the request handler: path normalization, route match, method check, request
 * id, body limit, forwarded headers; then the aggregate or proxy handler takes over.
 */
#include "server/handler.h"
#include "server/worker.h"
#include "server/observe.h"
#include "server/worker_gen.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/rand.h>

#include "aggregate/fanout.h"
#include "proxy/proxy.h"
#include "common/jsonutil.h"
#include "h2/fields.h"
#include "policy/cors.h"
#include "policy/gate.h"

/* splitmix64: cheap, good enough to make request ids unique per process */
static uint64_t next_random(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* "%016llx" without printf */
static void put_hex64(char *dst, uint64_t v)
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 15; i >= 0; --i) {
        dst[i] = digits[v & 0xf];
        v >>= 4;
    }
}

/* 32 hex digits into buf (NUL-terminated: 33 bytes) */
static void generate_request_id_into(est_worker_t *w, char *buf)
{
    if (w->rid_state[1] == 0) {
        if (RAND_bytes((unsigned char *)w->rid_state, sizeof(w->rid_state)) != 1)
            w->rid_state[0] = (uint64_t)(uintptr_t)w ^ (uint64_t)time(NULL);
        w->rid_state[1] = 1;
    }
    put_hex64(buf, next_random(&w->rid_state[0]));
    put_hex64(buf + 16, next_random(&w->rid_state[0]));
    buf[32] = '\0';
}

static h2o_iovec_t generate_request_id(est_worker_t *w, h2o_mem_pool_t *pool)
{
    char *buf = h2o_mem_alloc_pool(pool, 33);
    generate_request_id_into(w, buf);
    return h2o_iovec_init(buf, 32);
}

static h2o_iovec_t take_request_id(est_worker_t *w, h2o_req_t *req)
{
    ssize_t i = h2o_find_header_by_str(&req->headers, H2O_STRLIT("x-request-id"), -1);
    if (i != -1) {
        h2o_iovec_t v = req->headers.entries[i].value;
        if (est_request_id_is_valid(v.base, v.len))
            return v;
    }
    return generate_request_id(w, &req->pool);
}

size_t est_handler_error_request_id(void *data, h2o_req_t *req, char *buf)
{
    est_worker_t *w = data;
    if (req != NULL) {
        ssize_t i = h2o_find_header_by_str(&req->headers, H2O_STRLIT("x-request-id"), -1);
        if (i != -1) {
            h2o_iovec_t v = req->headers.entries[i].value;
            if (v.len <= EST_H1_REQUEST_ID_MAX && est_request_id_is_valid(v.base, v.len)) {
                memcpy(buf, v.base, v.len);
                return v.len;
            }
        }
    }
    generate_request_id_into(w, buf);
    return 32;
}

static void send_method_not_allowed(h2o_req_t *req, unsigned allowed, h2o_iovec_t rid)
{
    char allow[128] = "";
    size_t off = 0;
    for (unsigned bit = 1; bit < (1u << EST_METHOD__COUNT); bit <<= 1)
        if (allowed & bit)
            off += snprintf(allow + off, sizeof(allow) - off, "%s%s", off == 0 ? "" : ", ", est_method_name(bit));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL, allow, off);
    char msg[192];
    snprintf(msg, sizeof(msg), "method %.*s is not allowed here (allowed: %s)", (int)(req->method.len < 32 ? req->method.len : 32),
             req->method.base, allow);
    est_send_error(req, 405, "method_not_allowed", msg, rid);
}

/*
 * An error h2o itself answers before any handler runs (with estuary's own HTTP/1.1 layer,
 * h1/conn.c, that can only happen on HTTP/2: a body over max_request_entity_size, a field
 * libh2o finds invalid (its 400 "found an invalid character in header value"), ...) is bound
 * to the host's fallback path and sent as text/plain; this filter on that path rewrites every
 * such error into SPEC's JSON error (with a request id), libh2o's text as the message.
 */
typedef struct st_json_error_ostream_t {
    h2o_ostream_t super;
    h2o_iovec_t rid;
    int done;
} json_error_ostream_t;

static const char *fallback_error_code(int status)
{
    switch (status) {
    case 400: return "bad_request";
    case 403: return "forbidden";
    case 404: return "route_not_found";
    case 405: return "method_not_allowed";
    case 408: return "request_timeout";
    case 413: return "request_too_large";
    case 414: return "uri_too_long";
    case 417: return "expectation_failed";
    case 431: return "headers_too_large";
    case 501: return "not_implemented";
    case 502: return "upstream_unavailable";
    case 503: return "upstream_overloaded";
    case 504: return "upstream_timeout";
    case 505: return "http_version_not_supported";
    default: return status >= 500 ? "internal_error" : "bad_request";
    }
}

static void json_error_do_send(h2o_ostream_t *self, h2o_req_t *req, h2o_iovec_t *inbufs, size_t inbufcnt,
                               h2o_send_state_t state)
{
    json_error_ostream_t *o = (json_error_ostream_t *)self;
    h2o_iovec_t body = {NULL, 0};
    if (!o->done) { /* the first call carries h2o's whole text: sent once, as JSON */
        o->done = 1;
        char msg[160], rid_z[129];
        if (req->res.status == 413) {
            /* h2o's limit is max_request_body + 1 (setup_h2o) */
            snprintf(msg, sizeof(msg), "request body is over the limit of %zu bytes",
                     req->conn->ctx->globalconf->max_request_entity_size - 1);
        } else {
            size_t n = inbufcnt != 0 ? inbufs[0].len : 0;
            while (n != 0 && (inbufs[0].base[n - 1] == '\n' || inbufs[0].base[n - 1] == '\r'))
                --n;
            if (n == 0)
                snprintf(msg, sizeof(msg), "%s", req->res.reason != NULL ? req->res.reason : "error");
            else
                snprintf(msg, sizeof(msg), "%.*s", (int)(n < sizeof(msg) - 1 ? n : sizeof(msg) - 1), inbufs[0].base);
        }
        size_t rid_len = o->rid.len < sizeof(rid_z) - 1 ? o->rid.len : sizeof(rid_z) - 1;
        memcpy(rid_z, o->rid.base, rid_len);
        rid_z[rid_len] = '\0';
        size_t len = 0;
        char *json = est_error_body(req->res.status, fallback_error_code(req->res.status), msg, rid_z, &len);
        if (json != NULL) {
            body = h2o_strdup(&req->pool, json, len);
            free(json);
        }
        req->res.content_length = body.len;
        if (h2o_memis(req->input.method.base, req->input.method.len, H2O_STRLIT("HEAD")))
            body = h2o_iovec_init(NULL, 0); /* the length of what GET would get, no body */
    }
    h2o_ostream_send_next(&o->super, req, &body, body.len != 0 ? 1 : 0, state);
}

static void on_setup_fallback_ostream(h2o_filter_t *self, h2o_req_t *req, h2o_ostream_t **slot)
{
    if (req->res.status >= 400) {
        est_worker_t *w = (est_worker_t *)req->conn->ctx;
        h2o_iovec_t rid = take_request_id(w, req);
        json_error_ostream_t *o = (json_error_ostream_t *)h2o_add_ostream(req, sizeof(*o), slot);
        o->super.do_send = json_error_do_send;
        o->rid = rid;
        o->done = 0;
        req->res.content_length = SIZE_MAX; /* set when the body is built */
        ssize_t ct = h2o_find_header(&req->res.headers, H2O_TOKEN_CONTENT_TYPE, -1);
        if (ct != -1)
            req->res.headers.entries[ct].value = h2o_iovec_init(H2O_STRLIT("application/json"));
        else
            h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("application/json"));
        h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-request-id"), 0, NULL, rid.base, rid.len);
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_SERVER, NULL, H2O_STRLIT(EST_SERVER_HEADER));
        slot = &o->super.next;
    }
    h2o_setup_next_ostream(req, slot);
}

void est_handler_setup_fallback(h2o_hostconf_t *host)
{
    h2o_filter_t *f = h2o_create_filter(&host->fallback_path, sizeof(*f));
    f->on_setup_ostream = on_setup_fallback_ostream;
}

/* (tracing) the value of header `name` when it appears exactly once, else NULL (W3C Trace
 * Context §3.2.1: several traceparent fields make the request's context invalid) */
static const h2o_iovec_t *single_header(h2o_req_t *req, const char *name, size_t len)
{
    ssize_t i = h2o_find_header_by_str(&req->headers, name, len, -1);
    if (i == -1 || h2o_find_header_by_str(&req->headers, name, len, i) != -1)
        return NULL;
    return &req->headers.entries[i].value;
}

/* (tracing) continues the client's trace or starts one; NULL when the view does not trace */
static est_trace_ctx_t *begin_trace(est_worker_gen_t *wg, h2o_req_t *req, est_reqlog_t *rl)
{
    if (wg->tracer == NULL)
        return NULL;
    est_trace_ctx_t *t = h2o_mem_alloc_pool(&req->pool, sizeof(*t));
    const h2o_iovec_t *tp = single_header(req, H2O_STRLIT("traceparent"));
    const h2o_iovec_t *ts = tp != NULL ? single_header(req, H2O_STRLIT("tracestate")) : NULL;
    est_trace_begin(t, est_tracer_sink(wg->tracer), tp != NULL ? tp->base : NULL, tp != NULL ? tp->len : 0,
                    ts != NULL ? ts->base : NULL, ts != NULL ? ts->len : 0, est_trace_now_ns());
    est_observe_request_trace(rl, t);
    return t;
}

/* (tracing) the client's traceparent/tracestate are not forwarded as they came: each attempt
 * sends its own (upstream/client.h) */
static void drop_trace_headers(est_request_t *r)
{
    size_t n = 0;
    for (size_t i = 0; i != r->num_fwd_headers; ++i) {
        const h2o_iovec_t *name = r->fwd_headers[i].name;
        if ((name->len == 11 && memcmp(name->base, "traceparent", 11) == 0) ||
            (name->len == 10 && memcmp(name->base, "tracestate", 10) == 0))
            continue;
        r->fwd_headers[n++] = r->fwd_headers[i];
    }
    r->num_fwd_headers = n;
}

/* the request's pool is being freed: it no longer uses its generation nor its connection */
static void on_request_dispose(void *p)
{
    est_inflight_t *r = p;
    est_run_disposers(&r->disposers);
    h2o_linklist_unlink(&r->link);
    if (r->conn != NULL)
        --r->conn->inflight;
    est_worker_gen_unpin(r->wg);
}

/* what the front end keeps per request: one allocation, with the handlers' est_request_t */
typedef struct st_request_record_t {
    est_inflight_t inflight;
    est_request_t r;
} request_record_t;

/*
 * Pins the worker's current generation view for the request's lifetime. Allocated first in
 * the pool: h2o runs dispose callbacks newest first, so everything the handlers put in the
 * pool (proxy, fan-out, access log record) is released before the generation can be.
 */
static request_record_t *start_request(est_worker_t *w, h2o_req_t *req)
{
    request_record_t *rec = h2o_mem_alloc_shared(&req->pool, sizeof(*rec), on_request_dispose);
    est_inflight_t *r = &rec->inflight;
    memset(rec, 0, sizeof(*rec));
    r->wg = est_worker_gen_pin(w);
    r->req = req;
    h2o_linklist_insert(&w->requests, &r->link);
    h2o_socket_t *sock = req->conn->callbacks->get_socket != NULL ? req->conn->callbacks->get_socket(req->conn) : NULL;
    if (sock != NULL && sock->on_close.data != NULL) { /* accept.c sets it on every accepted socket */
        r->conn = sock->on_close.data;
        ++r->conn->inflight;
        if (req->version >= 0x200)
            r->conn->is_h2 = 1;
    }
    if (w->draining && req->version < 0x200)
        req->http1_is_persistent = 0; /* tell the client to go elsewhere */
    rec->r.disposers = &r->disposers;
    return rec;
}

int est_handler_on_req(h2o_handler_t *self, h2o_req_t *req)
{
    est_worker_t *w = (est_worker_t *)req->conn->ctx;
    request_record_t *rec = start_request(w, req);
    est_client_conn_t *cc = rec->inflight.conn;
    est_worker_gen_t *wg = rec->inflight.wg;
    const est_conn_peer_t *peer = est_conn_peer(cc, req); /* formatted once per connection */
    const est_config_t *conf = wg->gen->conf;
    const est_router_t *router = wg->gen->router;
    h2o_iovec_t rid = take_request_id(w, req);
    est_reqlog_t *rl = est_observe_request_start(w, req, rid, peer, &rec->inflight.disposers); /* (admin) metrics + access log at the end */
    est_trace_ctx_t *tctx = begin_trace(wg, req, rl);
    /* (perf) the Server header is ours, not h2o's server_name (see setup_h2o in server.c) */
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_SERVER, NULL, H2O_STRLIT(EST_SERVER_HEADER));
    /* HTTP/2: RFC 9113 §8.2-§8.3 field rules, beyond what libh2o refuses itself (docs/http2.md) */
    const char *bad_field = est_h2_fields_check(req);
    if (bad_field != NULL) {
        est_send_error(req, 400, "bad_request", bad_field, rid);
        return 0;
    }

    /* the path as the client sent it, minus the query; dot segments resolved, nothing decoded */
    size_t path_len = req->query_at != SIZE_MAX ? req->query_at : req->path.len;
    char *path = h2o_mem_alloc_pool(&req->pool, path_len + 1);
    ssize_t norm_len = est_path_normalize(req->path.base, path_len, path);
    if (norm_len < 0) {
        est_send_error(req, 400, "bad_request", "the request path is malformed or climbs above the root", rid);
        return 0;
    }

    unsigned method = est_method_from_request(req->method.base, req->method.len);
    est_request_t *r = &rec->r;
    est_match_t match; /* 1 KiB with room for every param; the request keeps what is used */
    switch (est_router_match(router, path, (size_t)norm_len, method, &match)) {
    case EST_ROUTER_FOUND:
        r->match = memcpy(h2o_mem_alloc_pool(&req->pool, est_match_size(&match)), &match, est_match_size(&match));
        break;
    case EST_ROUTER_METHOD_NOT_ALLOWED: {
        /* a CORS preflight where no route lists OPTIONS: answered for the route the actual
         * request would reach, when that route has "cors" (policy/cors.h) */
        const est_route_conf_t *cors_route = est_cors_preflight_route(req, router, path, (size_t)norm_len);
        if (cors_route != NULL) {
            est_observe_request_matched(rl, cors_route);
            est_cors_answer_preflight(req, cors_route, rid);
            return 0;
        }
        send_method_not_allowed(req, match.allowed, rid);
        return 0;
    }
    default: {
        char msg[160];
        snprintf(msg, sizeof(msg), "no route matches %.*s", (int)(norm_len < 100 ? norm_len : 100), path);
        est_send_error(req, 404, "route_not_found", msg, rid);
        return 0;
    }
    }
    const est_route_conf_t *route = r->match->route;
    r->trace = est_observe_request_matched(rl, route); /* (admin) */

    /* a buffered body (HTTP/2, aggregating routes) is held to the route's own cap too; the front
     * ends never buffer more than the top-level one (docs/configuration.md) */
    uint64_t body_cap = route->max_request_body < conf->max_request_body ? route->max_request_body : conf->max_request_body;
    if (req->entity.base != NULL && req->entity.len > body_cap) {
        char msg[128];
        snprintf(msg, sizeof(msg), "request body of %zu bytes is over the limit of %llu bytes", req->entity.len,
                 (unsigned long long)body_cap);
        req->http1_is_persistent = 0;
        if (route->cors != NULL) /* every reply of a cors route carries CORS (SPEC), before the gate too */
            est_cors_add_headers(req, route->cors);
        est_send_error(req, 413, "request_too_large", msg, rid);
        return 0;
    }
    int is_upgrade = req->upgrade.base != NULL && req->version < 0x200;
    if (is_upgrade && !(route->websocket && route->proxy != NULL)) {
        if (route->cors != NULL)
            est_cors_add_headers(req, route->cors);
        est_send_error(req, 400, "upgrade_not_allowed", "this route does not allow protocol upgrades", rid);
        return 0;
    }

    r->req = req;
    r->svc = &wg->svc;
    r->router = router;
    r->conf = conf;
    r->route = route;
    r->path = h2o_iovec_init(path, (size_t)norm_len);
    if (req->query_at != SIZE_MAX)
        r->query = h2o_iovec_init(req->path.base + req->query_at + 1, req->path.len - req->query_at - 1);
    r->request_id = rid;
    r->method = method;
    r->deadline = h2o_now(w->ctx.loop) + route->timeout_ms;
    r->client_ip = h2o_iovec_init(peer->remote + peer->ip_off, peer->ip_len);
    est_build_forward_headers_peer(req, rid, is_upgrade, h2o_iovec_init(peer->remote + peer->ip_off, peer->ip_len),
                                   &r->fwd_headers, &r->num_fwd_headers);
    if (tctx != NULL) {
        r->tctx = tctx;
        drop_trace_headers(r);
    }
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-request-id"), 0, NULL, rid.base, rid.len);

    void (*dispatch)(est_request_t *) = route->proxy != NULL ? est_proxy_handle : est_aggregate_handle;
    if (est_gate_needed(route))
        est_gate_run(r, wg->policy, dispatch); /* CORS, auth, rate limit, then dispatch */
    else
        dispatch(r);
    return 0;
}

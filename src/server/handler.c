/*
 * estuary - the request handler: path normalization, route match, method check, request
 * id, body limit, forwarded headers; then the aggregate or proxy handler takes over.
 */
#include "server/worker.h"

#include <stdio.h>
#include <string.h>
#include <openssl/rand.h>

#include "aggregate/fanout.h"
#include "proxy/proxy.h"

/* splitmix64: cheap, good enough to make request ids unique per process */
static uint64_t next_random(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static h2o_iovec_t generate_request_id(est_worker_t *w, h2o_mem_pool_t *pool)
{
    if (w->rid_state[1] == 0) {
        if (RAND_bytes((unsigned char *)w->rid_state, sizeof(w->rid_state)) != 1)
            w->rid_state[0] = (uint64_t)(uintptr_t)w ^ (uint64_t)time(NULL);
        w->rid_state[1] = 1;
    }
    char *buf = h2o_mem_alloc_pool(pool, 33);
    snprintf(buf, 33, "%016llx%016llx", (unsigned long long)next_random(&w->rid_state[0]),
             (unsigned long long)next_random(&w->rid_state[0]));
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

int est_handler_on_req(h2o_handler_t *self, h2o_req_t *req)
{
    est_worker_t *w = (est_worker_t *)req->conn->ctx;
    est_server_t *s = w->server;
    const est_config_t *conf = s->conf;
    h2o_iovec_t rid = take_request_id(w, req);
    est_reqlog_t *rl = est_observe_request_start(w, req, rid); /* (admin) metrics + access log at the end */

    /* the path as the client sent it, minus the query; dot segments resolved, nothing decoded */
    size_t path_len = req->query_at != SIZE_MAX ? req->query_at : req->path.len;
    char *path = h2o_mem_alloc_pool(&req->pool, path_len + 1);
    ssize_t norm_len = est_path_normalize(req->path.base, path_len, path);
    if (norm_len < 0) {
        est_send_error(req, 400, "bad_request", "the request path is malformed or climbs above the root", rid);
        return 0;
    }

    unsigned method = est_method_from_name(req->method.base, req->method.len);
    est_request_t *r = h2o_mem_alloc_pool(&req->pool, sizeof(*r));
    memset(r, 0, sizeof(*r));
    switch (est_router_match(s->router, path, (size_t)norm_len, method, &r->match)) {
    case EST_ROUTER_FOUND:
        break;
    case EST_ROUTER_METHOD_NOT_ALLOWED:
        send_method_not_allowed(req, r->match.allowed, rid);
        return 0;
    default: {
        char msg[160];
        snprintf(msg, sizeof(msg), "no route matches %.*s", (int)(norm_len < 100 ? norm_len : 100), path);
        est_send_error(req, 404, "route_not_found", msg, rid);
        return 0;
    }
    }
    const est_route_conf_t *route = r->match.route;
    r->trace = est_observe_request_matched(rl, route); /* (admin) */

    if (req->entity.base != NULL && req->entity.len > conf->max_request_body) {
        char msg[128];
        snprintf(msg, sizeof(msg), "request body of %zu bytes is over the limit of %llu bytes", req->entity.len,
                 (unsigned long long)conf->max_request_body);
        req->http1_is_persistent = 0;
        est_send_error(req, 413, "request_too_large", msg, rid);
        return 0;
    }
    int is_upgrade = req->upgrade.base != NULL && req->version < 0x200;
    if (is_upgrade && !(route->websocket && route->proxy != NULL)) {
        est_send_error(req, 400, "upgrade_not_allowed", "this route does not allow protocol upgrades", rid);
        return 0;
    }

    r->req = req;
    r->svc = &w->svc;
    r->router = s->router;
    r->conf = conf;
    r->route = route;
    r->path = h2o_iovec_init(path, (size_t)norm_len);
    if (req->query_at != SIZE_MAX)
        r->query = h2o_iovec_init(req->path.base + req->query_at + 1, req->path.len - req->query_at - 1);
    r->request_id = rid;
    r->method = method;
    r->deadline = h2o_now(w->ctx.loop) + route->timeout_ms;
    est_build_forward_headers(req, rid, is_upgrade, &r->fwd_headers, &r->num_fwd_headers);
    h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-request-id"), 0, NULL, rid.base, rid.len);

    if (route->proxy != NULL)
        est_proxy_handle(r);
    else
        est_aggregate_handle(r);
    return 0;
}

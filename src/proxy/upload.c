/*
 * estuary - which HTTP/1.1 request bodies stream (docs/streaming.md): the body of a request
 * that a proxy route will serve goes to the backend as it arrives, under the route's own
 * max_request_body; every other body (aggregate routes, no route, a bad path) is buffered
 * as before, and its handler sees it whole in req->entity.
 */
#include "proxy/proxy.h"

#include <string.h>
#include "config/config.h"
#include "router/router.h"

int est_proxy_body_policy(const est_router_t *router, h2o_req_t *req, uint64_t *max_body)
{
    if (router == NULL)
        return 0;
    h2o_iovec_t path = req->input.path;
    const char *q = memchr(path.base, '?', path.len);
    size_t len = q != NULL ? (size_t)(q - path.base) : path.len;
    /* the same match the handler makes (handler.c): normalized path, method bit */
    char *norm = h2o_mem_alloc_pool(&req->pool, len + 1);
    ssize_t norm_len = est_path_normalize(path.base, len, norm);
    if (norm_len < 0)
        return 0;
    est_match_t match;
    unsigned method = est_method_from_request(req->input.method.base, req->input.method.len);
    if (est_router_match(router, norm, (size_t)norm_len, method, &match) != EST_ROUTER_FOUND)
        return 0;
    const est_route_conf_t *route = match.route;
    if (route->proxy == NULL)
        return 0;
    *max_body = route->max_request_body;
    return 1;
}

/*
 * estuary - CORS on routes with "cors" (SPEC "Access control and traffic policy"; the Fetch
 * standard's CORS protocol, https://fetch.spec.whatwg.org/#http-cors-protocol).
 *
 * The gate's first stage (est_cors_stage, gate.h) does both jobs on a route that lists
 * OPTIONS; the front end calls est_cors_preflight_route + est_cors_answer_preflight for a
 * preflight on a path whose routes do not list OPTIONS (the router says 405 there).
 *
 * Nothing here copies the client's Origin into a reply: an allowed origin is answered with
 * the config's own string (or "*"), so a refused or oversized Origin is never reflected.
 */
#ifndef EST_POLICY_CORS_H
#define EST_POLICY_CORS_H

#include <stddef.h>
#include <h2o.h>

#include "config/config.h"
#include "router/router.h"

/* 1 when `req` is a CORS preflight (Fetch "CORS-preflight request"): method OPTIONS with
 * an Origin and an Access-Control-Request-Method header */
int est_cors_is_preflight(h2o_req_t *req);

/*
 * For a preflight on a path the router refused OPTIONS for: the route the actual request
 * (method = Access-Control-Request-Method) would reach, when that route has "cors"; NULL when
 * `req` is not a preflight, its method is unknown, no route serves it or the route has no
 * "cors" (the caller sends its usual 405). `path` is the normalized path (est_path_normalize).
 * Allocates nothing.
 */
const est_route_conf_t *est_cors_preflight_route(h2o_req_t *req, const est_router_t *router, const char *path, size_t path_len);

/*
 * Answers the preflight `req` for `route` (route->cors != NULL): 204 with
 * Access-Control-Allow-Origin/-Methods/-Headers/-Max-Age/-Credentials and Vary: Origin when
 * the origin, the method and every requested header are allowed; otherwise 403 `forbidden`
 * (JSON) with no Access-Control-* header. No backend is called either way.
 */
void est_cors_answer_preflight(h2o_req_t *req, const est_route_conf_t *route, h2o_iovec_t request_id);

/*
 * For any other request on a route with `cors`: adds Vary: Origin, and for an allowed Origin
 * Access-Control-Allow-Origin (+ -Allow-Credentials, -Expose-Headers) to req->res.headers,
 * where every later reply of the request (the backend's, or an error) finds them.
 */
void est_cors_add_headers(h2o_req_t *req, const est_cors_conf_t *cors);

#endif

/*
 * estuary - request routing: path normalization, matching against the configured route
 * templates, and expansion of backend path templates.
 *
 * A router is built once per configuration and never modified: worker threads match against
 * it concurrently without locks. Matching allocates nothing.
 */
#ifndef EST_ROUTER_ROUTER_H
#define EST_ROUTER_ROUTER_H

#include <stddef.h>
#include <sys/types.h>
#include <h2o.h>

#include "config/config.h"
#include "router/template.h"

/* at most this many parameters per route template (est_router_create fails beyond it) */
#define EST_ROUTER_MAX_PARAMS EST_TEMPLATE_MAX_PARAMS

typedef struct st_est_router_t est_router_t;

typedef enum {
    EST_ROUTER_FOUND = 0,
    EST_ROUTER_NOT_FOUND,          /* 404 */
    EST_ROUTER_METHOD_NOT_ALLOWED, /* 405, Allow = est_match_t.allowed */
} est_router_result_t;

typedef struct est_match_param {
    h2o_iovec_t name;  /* points into the route's template */
    h2o_iovec_t value; /* points into the matched path: raw, still percent-encoded */
} est_match_param_t;

typedef struct est_match {
    const est_route_conf_t *route; /* FOUND: the route (an element of the array given to create) */
    size_t route_index;            /* FOUND: its position in that array */
    const est_template_t *tpl;     /* FOUND: the route's compiled template */
    size_t num_params;
    unsigned allowed; /* union of the EST_METHOD_* bits of every template that matched the path (HEAD with GET) */
    h2o_iovec_t path; /* the path given to est_router_match */
    /* FOUND: in template order. Last, so that a copy of est_match_size() bytes (only the
     * params in use) is a valid est_match_t: a request keeps that, not the 1 KiB array. */
    est_match_param_t params[EST_ROUTER_MAX_PARAMS];
} est_match_t;

/* bytes of `m` that matter: everything up to its last param in use */
static inline size_t est_match_size(const est_match_t *m)
{
    return offsetof(est_match_t, params) + m->num_params * sizeof(m->params[0]);
}

/*
 * Compiles the route templates (routes[i].path), the backend path templates
 * (routes[i].backends[j].path, routes[i].proxy->path) and the backends' header value
 * templates (routes[i].backends[j].headers[k].value). A {GROUP.path} reference is bound to the
 * last backend listed before its own whose `group` is GROUP (the config validator has checked
 * there is one; a proxy has none). `routes` is borrowed and must outlive
 * the router (matches point into it). Returns NULL with a message in `err` on a bad template
 * or out of memory. Same-shape clashes are the config validator's job; if present anyway, the
 * first route in array order wins.
 */
est_router_t *est_router_create(const est_route_conf_t *routes, size_t n, char *err, size_t errsz);
void est_router_destroy(est_router_t *router);

/*
 * Matches `path` (normalized, no query; see est_path_normalize) for a request whose method
 * is `method_bit` (one EST_METHOD_* bit; 0 for a method no route can allow). Precedence,
 * segment by segment from the left: literal, then {param} (a non-empty segment), then
 * {rest...}. Among the templates that match the path, the most specific one that allows the
 * method serves. GET allows HEAD. `m` is filled completely; its slices point into `path` and
 * into the router. Thread-safe; allocates nothing.
 */
est_router_result_t est_router_match(const est_router_t *router, const char *path, size_t len, unsigned method_bit,
                                     est_match_t *m);

/* the value of parameter `name` in a FOUND match, or NULL */
const h2o_iovec_t *est_match_get_param(const est_match_t *m, const char *name, size_t len);

/*
 * The compiled backend path template of backends[backend_index] of route `route_index`; for a
 * proxy route, backend_index 0 is the proxy. NULL when that backend has no path (or the
 * indexes are out of range): pass NULL to est_template_expand to forward the request path.
 */
const est_template_t *est_router_backend_template(const est_router_t *router, size_t route_index,
                                                  size_t backend_index);

/* the compiled value template of backends[backend_index].headers[header_index], or NULL */
const est_template_t *est_router_header_template(const est_router_t *router, size_t route_index, size_t backend_index,
                                                 size_t header_index);

/*
 * Resolves "." and ".." segments of `path` (RFC 3986 5.2.4) into `out` (at least len + 1
 * bytes, NUL-terminated; `out` may be `path`). A segment made only of '.' and "%2e"/"%2E"
 * counts as a dot segment when it decodes to "." or "..". Nothing else changes: no decoding
 * (%2F stays), empty segments and a trailing slash stay. Returns the new length, or -1 when
 * the path is empty, does not start with '/', would climb above the root, or holds a control
 * character or a space (all 400).
 */
ssize_t est_path_normalize(const char *path, size_t len, char *out);

/*
 * Builds the upstream path for a FOUND match `m` into `*out` (allocated from `pool`):
 * literal text copied, {name}/{name...} replaced by the raw matched values (no decoding, no
 * re-encoding; in the query part of the template, '&', '+' and '#' of a value are
 * percent-encoded so a value cannot add query parameters), then the client's `query`
 * (without '?') appended with '?', or with '&' when the template already has a '?'.
 * `backend_tpl` NULL: the request path (m->path) plus the query. Returns 0, or -1 when the
 * template names a parameter the match does not bind.
 */
int est_template_expand(const est_template_t *backend_tpl, const est_match_t *m, h2o_mem_pool_t *pool, h2o_iovec_t query,
                        h2o_iovec_t *out);

/*
 * The value of a {GROUP.dot.path} reference (same contract as est_group_value_cb in
 * http/request.h): `backend_index` is the piece's `backend`, `path` the text after "GROUP.".
 * Returns 0 with *text set, or -1 when there is no usable value.
 */
typedef int (*est_template_lookup_cb)(void *data, size_t backend_index, const char *path, size_t pathlen, h2o_iovec_t *text);

/* est_template_expand_refs / est_template_expand_value: a reference has no usable value */
#define EST_TEMPLATE_NO_VALUE (-2)
/* an expanded header value is at most this long (else EST_TEMPLATE_NO_VALUE) */
#define EST_TEMPLATE_MAX_VALUE 8192

/*
 * est_template_expand for a template that may hold {GROUP.dot.path} references, whose values
 * come from `lookup` (called once per reference). Such a value is percent-encoded as data:
 * every byte but the unreserved ones (RFC 3986 2.3: A-Z a-z 0-9 - . _ ~) becomes %XX, so
 * that it stays one path segment or one query value ('/', '?', '#', '&', '=', '%' cannot
 * change the target). In the path part (before the first '?') a value that is empty, "." or
 * ".." is refused, as it would name another resource (RFC 3986 5.2.4). Returns 0, -1 for an
 * unbound parameter, or EST_TEMPLATE_NO_VALUE when a reference has no usable value.
 */
int est_template_expand_refs(const est_template_t *backend_tpl, const est_match_t *m, est_template_lookup_cb lookup,
                             void *lookup_data, h2o_mem_pool_t *pool, h2o_iovec_t query, h2o_iovec_t *out);

/*
 * Expands a header value template (est_template_parse_value) into `*out` (from `pool`):
 * literal text copied, {param} the raw matched value, {GROUP.path} the looked-up value as it
 * is. Returns 0, -1 for an unbound parameter, or EST_TEMPLATE_NO_VALUE when a reference has
 * no usable value, or the result holds CR, LF or NUL (RFC 9110 5.5: it would split or end
 * the header) or is longer than EST_TEMPLATE_MAX_VALUE.
 */
int est_template_expand_value(const est_template_t *tpl, const est_match_t *m, est_template_lookup_cb lookup,
                              void *lookup_data, h2o_mem_pool_t *pool, h2o_iovec_t *out);

#endif

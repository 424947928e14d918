/*
 * estuary - CORS on routes with "cors" (SPEC "Access control and traffic policy"; the Fetch
 * standard's CORS protocol). See cors.h and docs/cors.md.
 *
 * Costs: an Origin is compared with the configured origins (length first, then bytes); an
 * Access-Control-Request-Headers list is read once, each name compared with the configured
 * names (lengths computed once per preflight), so a list of n names costs O(n * names
 * configured) and its answer is at most as long as the list. Nothing the client sent is
 * copied unbounded: the answer's origin and header names are the config's own strings,
 * except under a configured "*" header (names echoed, lower-cased, only after every byte
 * was checked to be a token character).
 */
#include "policy/cors.h"
#include "policy/gate.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "common/method.h"
#include "http/request.h"

/* Fetch "CORS-safelisted request-header" names: a browser lists one in
 * Access-Control-Request-Headers only when its value is not safelisted (e.g. Content-Type:
 * application/json); estuary allows them on every cors route without configuration */
static const char *const safelisted_names[] = {"accept", "accept-language", "content-language", "content-type", "range"};
#define NUM_SAFELISTED (sizeof(safelisted_names) / sizeof(safelisted_names[0]))

/* a refused preflight's message quotes at most this much of what the client sent */
#define QUOTE_MAX 64

static h2o_iovec_t trim_ows(const char *s, const char *e)
{
    while (s < e && (*s == ' ' || *s == '\t'))
        ++s;
    while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
        --e;
    return h2o_iovec_init(s, (size_t)(e - s));
}

/* RFC 9110 §5.6.2 tchar */
static int is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return 1;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/*
 * The request's single value of header `name` (lower-case): 1 with *value set when it came
 * once, 2 when it came more than once (*value unset: no single value to trust; Origin is one
 * serialized origin, RFC 6454 §7), 0 when absent.
 */
static int single_header(h2o_req_t *req, const char *name, size_t len, h2o_iovec_t *value)
{
    ssize_t i = h2o_find_header_by_str(&req->headers, name, len, -1);
    if (i == -1)
        return 0;
    if (h2o_find_header_by_str(&req->headers, name, len, i) != -1)
        return 2;
    *value = req->headers.entries[i].value;
    return 1;
}

/*
 * The Access-Control-Allow-Origin value for `origin` (sent once, as is), or {NULL, 0} when it
 * is not allowed. The value is the config's own bytes or "*", never the client's. `null` (an
 * opaque origin: sandboxed iframes, file: and data: URLs) passes only when listed literally.
 */
static h2o_iovec_t allowed_origin(const est_cors_conf_t *cors, h2o_iovec_t origin)
{
    if (origin.len == 0)
        return h2o_iovec_init(NULL, 0);
    /* "*" never goes with credentials (a --check error): if it ever did, the reply would
     * still be "*" and no Allow-Credentials (browsers refuse that pair: Fetch, "CORS
     * protocol and credentials") */
    if (cors->any_origin && !h2o_memis(origin.base, origin.len, H2O_STRLIT("null")))
        return h2o_iovec_init(H2O_STRLIT("*"));
    for (size_t i = 0; i != cors->num_origins; ++i) {
        const char *o = cors->origins[i];
        size_t olen = strlen(o);
        /* Fetch "CORS check": the browser compares byte for byte; browsers serialize the scheme
         * and host lower-case, so the config's spelling is the one that can match */
        if (olen == origin.len && memcmp(o, origin.base, olen) == 0)
            return h2o_iovec_init(o, olen);
    }
    return h2o_iovec_init(NULL, 0);
}

static void add_vary_origin(h2o_req_t *req)
{
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_VARY, NULL, H2O_STRLIT("Origin"));
}

static void add_str(h2o_req_t *req, const char *name, size_t name_len, const char *value, size_t value_len)
{
    h2o_add_header_by_str(&req->pool, &req->res.headers, name, name_len, 0, NULL, value, value_len);
}

static void add_allow_origin(h2o_req_t *req, const est_cors_conf_t *cors, h2o_iovec_t acao)
{
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ACCESS_CONTROL_ALLOW_ORIGIN, NULL, acao.base, acao.len);
    if (cors->credentials && !(acao.len == 1 && acao.base[0] == '*'))
        add_str(req, H2O_STRLIT("access-control-allow-credentials"), H2O_STRLIT("true"));
}

/* names joined with ", " in the request's pool; {NULL, 0} for none */
static h2o_iovec_t join_names(h2o_mem_pool_t *pool, char *const *names, size_t n)
{
    size_t cap = 0;
    for (size_t i = 0; i != n; ++i)
        cap += strlen(names[i]) + 2;
    if (cap == 0)
        return h2o_iovec_init(NULL, 0);
    char *buf = h2o_mem_alloc_pool(pool, cap);
    size_t off = 0;
    for (size_t i = 0; i != n; ++i) {
        size_t len = strlen(names[i]);
        if (off != 0) {
            memcpy(buf + off, ", ", 2);
            off += 2;
        }
        memcpy(buf + off, names[i], len);
        off += len;
    }
    return h2o_iovec_init(buf, off);
}

int est_cors_is_preflight(h2o_req_t *req)
{
    return h2o_memis(req->method.base, req->method.len, H2O_STRLIT("OPTIONS")) &&
           h2o_find_header_by_str(&req->headers, H2O_STRLIT("origin"), -1) != -1 &&
           h2o_find_header_by_str(&req->headers, H2O_STRLIT("access-control-request-method"), -1) != -1;
}

/* the method bit a preflight asks for (Access-Control-Request-Method, once), 0 when it names no
 * method estuary knows (method names are case-sensitive, RFC 9110 §9.1) */
static unsigned requested_method(h2o_req_t *req, h2o_iovec_t *raw)
{
    h2o_iovec_t v;
    *raw = h2o_iovec_init(NULL, 0);
    if (single_header(req, H2O_STRLIT("access-control-request-method"), &v) != 1)
        return 0;
    *raw = trim_ows(v.base, v.base + v.len);
    return est_method_from_request(raw->base, raw->len);
}

const est_route_conf_t *est_cors_preflight_route(h2o_req_t *req, const est_router_t *router, const char *path, size_t path_len)
{
    if (!est_cors_is_preflight(req))
        return NULL;
    h2o_iovec_t raw;
    unsigned bit = requested_method(req, &raw);
    if (bit == 0 || bit == EST_METHOD_OPTIONS)
        return NULL;
    est_match_t m;
    if (est_router_match(router, path, path_len, bit, &m) != EST_ROUTER_FOUND || m.route->cors == NULL)
        return NULL;
    return m.route;
}

/* a refused preflight: 403 `forbidden` with no Access-Control-* header (Fetch, "CORS-preflight
 * fetch": the browser then fails the actual request) */
static void refuse(h2o_req_t *req, h2o_iovec_t request_id, const char *what, h2o_iovec_t quoted)
{
    char msg[160];
    if (quoted.base != NULL)
        snprintf(msg, sizeof(msg), "CORS preflight refused: %s \"%.*s\" is not allowed", what,
                 (int)(quoted.len < QUOTE_MAX ? quoted.len : QUOTE_MAX), quoted.base);
    else
        snprintf(msg, sizeof(msg), "CORS preflight refused: %s", what);
    est_send_error(req, 403, "forbidden", msg, request_id);
}

enum { HEADERS_OK = 0, HEADERS_BAD_SYNTAX, HEADERS_NOT_ALLOWED };

/*
 * Checks every name of the request's Access-Control-Request-Headers (a comma list, possibly
 * over several fields; names compared case-insensitively, Fetch "CORS-preflight fetch")
 * against the route's "headers" and the safelisted names. On HEADERS_OK *answer is the Access-Control-Allow-Headers
 * value: each allowed name once, lower-case ({NULL, 0} when nothing was asked). Otherwise
 * *bad is the offending name (points into the request).
 */
static int check_request_headers(h2o_req_t *req, const est_cors_conf_t *cors, h2o_iovec_t *answer, h2o_iovec_t *bad)
{
    static const char field[] = "access-control-request-headers";
    *answer = h2o_iovec_init(NULL, 0);
    size_t cap = 0;
    for (ssize_t i = -1; (i = h2o_find_header_by_str(&req->headers, field, sizeof(field) - 1, i)) != -1;)
        cap += req->headers.entries[i].value.len + 1;
    if (cap == 0)
        return HEADERS_OK;

    /* every emitted name stands for one list element at least as long, and one separator for
     * each element after the first: the answer fits in the fields' total length + 1 per field */
    char *out = h2o_mem_alloc_pool(&req->pool, cap);
    size_t off = 0;
    size_t n = cors->num_headers;
    size_t *lens = n != 0 ? h2o_mem_alloc_pool(&req->pool, n * sizeof(*lens)) : NULL;
    unsigned char *seen = n != 0 ? h2o_mem_alloc_pool(&req->pool, n) : NULL;
    int any_header = 0;
    for (size_t j = 0; j != n; ++j) {
        lens[j] = strlen(cors->headers[j]);
        seen[j] = 0;
        if (lens[j] == 1 && cors->headers[j][0] == '*')
            any_header = 1;
    }
    unsigned safe_seen = 0;

    for (ssize_t i = -1; (i = h2o_find_header_by_str(&req->headers, field, sizeof(field) - 1, i)) != -1;) {
        const char *p = req->headers.entries[i].value.base, *end = p + req->headers.entries[i].value.len;
        while (p < end) {
            const char *comma = memchr(p, ',', (size_t)(end - p));
            const char *e = comma != NULL ? comma : end;
            h2o_iovec_t name = trim_ows(p, e);
            p = comma != NULL ? comma + 1 : end;
            if (name.len == 0)
                continue; /* RFC 9110 §5.6.1: empty list elements do not count */
            for (size_t k = 0; k != name.len; ++k) {
                if (!is_tchar((unsigned char)name.base[k])) {
                    *bad = name;
                    return HEADERS_BAD_SYNTAX;
                }
            }
            const char *known = NULL; /* the config's or the safelist's spelling */
            int repeated = 0;
            for (size_t k = 0; k != NUM_SAFELISTED && known == NULL; ++k) {
                if (strlen(safelisted_names[k]) == name.len && strncasecmp(safelisted_names[k], name.base, name.len) == 0) {
                    known = safelisted_names[k];
                    repeated = (safe_seen >> k) & 1;
                    safe_seen |= 1u << k;
                }
            }
            for (size_t j = 0; j != n && known == NULL; ++j) {
                if (lens[j] == name.len && strncasecmp(cors->headers[j], name.base, name.len) == 0) {
                    known = cors->headers[j];
                    repeated = seen[j];
                    seen[j] = 1;
                }
            }
            if (known == NULL && !any_header) {
                *bad = name;
                return HEADERS_NOT_ALLOWED;
            }
            if (repeated)
                continue; /* already in the answer */
            if (off != 0)
                out[off++] = ',';
            if (known != NULL)
                memcpy(out + off, known, name.len);
            else
                est_lower_copy(out + off, name.base, name.len); /* "*": the name as asked, a checked token */
            off += name.len;
        }
    }
    if (off != 0)
        *answer = h2o_iovec_init(out, off);
    return HEADERS_OK;
}

void est_cors_answer_preflight(h2o_req_t *req, const est_route_conf_t *route, h2o_iovec_t request_id)
{
    const est_cors_conf_t *cors = route->cors;
    /* what the answer depends on: a cache must not give one origin's answer to another */
    add_vary_origin(req);

    h2o_iovec_t origin = {NULL, 0};
    single_header(req, H2O_STRLIT("origin"), &origin);
    h2o_iovec_t acao = allowed_origin(cors, origin);
    if (acao.base == NULL) {
        refuse(req, request_id, "the origin is not allowed on this route", h2o_iovec_init(NULL, 0));
        return;
    }

    h2o_iovec_t raw;
    unsigned bit = requested_method(req, &raw);
    unsigned allowed = cors->methods != 0 ? cors->methods : route->methods;
    if (allowed & EST_METHOD_GET)
        allowed |= EST_METHOD_HEAD; /* as for a route's methods: GET allows HEAD */
    if (bit == 0 || !(allowed & bit)) {
        refuse(req, request_id, "method", raw.base != NULL ? raw : h2o_iovec_init(H2O_STRLIT("")));
        return;
    }

    h2o_iovec_t acah, bad = {NULL, 0};
    switch (check_request_headers(req, cors, &acah, &bad)) {
    case HEADERS_OK:
        break;
    case HEADERS_BAD_SYNTAX:
        refuse(req, request_id, "malformed header name", bad);
        return;
    default:
        refuse(req, request_id, "header", bad);
        return;
    }

    /* Fetch "HTTP responses" (CORS protocol): the preflight's answer */
    add_allow_origin(req, cors, acao);
    char *methods = h2o_mem_alloc_pool(&req->pool, 10 * EST_METHOD__COUNT);
    size_t off = 0;
    for (unsigned b = 1; b < (1u << EST_METHOD__COUNT); b <<= 1) {
        if (!(allowed & b))
            continue;
        const char *name = est_method_name(b);
        size_t len = strlen(name);
        if (off != 0) {
            memcpy(methods + off, ", ", 2);
            off += 2;
        }
        memcpy(methods + off, name, len);
        off += len;
    }
    add_str(req, H2O_STRLIT("access-control-allow-methods"), methods, off);
    if (acah.base != NULL)
        add_str(req, H2O_STRLIT("access-control-allow-headers"), acah.base, acah.len);
    if (cors->has_max_age) {
        char *age = h2o_mem_alloc_pool(&req->pool, 24);
        int n = snprintf(age, 24, "%llu", (unsigned long long)(cors->max_age_ms / 1000));
        add_str(req, H2O_STRLIT("access-control-max-age"), age, (size_t)n);
    }
    if (request_id.len != 0 && h2o_find_header_by_str(&req->res.headers, H2O_STRLIT("x-request-id"), -1) == -1)
        add_str(req, H2O_STRLIT("x-request-id"), request_id.base, request_id.len);
    req->res.status = 204;
    req->res.reason = "No Content";
    req->res.content_length = SIZE_MAX; /* RFC 9110 §8.6: no Content-Length on a 204 */
    h2o_send_inline(req, "", 0);
}

void est_cors_add_headers(h2o_req_t *req, const est_cors_conf_t *cors)
{
    add_vary_origin(req);
    h2o_iovec_t origin;
    if (single_header(req, H2O_STRLIT("origin"), &origin) != 1)
        return;
    h2o_iovec_t acao = allowed_origin(cors, origin);
    if (acao.base == NULL)
        return;
    add_allow_origin(req, cors, acao);
    if (cors->num_expose_headers != 0) {
        h2o_iovec_t v = join_names(&req->pool, cors->expose_headers, cors->num_expose_headers);
        add_str(req, H2O_STRLIT("access-control-expose-headers"), v.base, v.len);
    }
}

est_gate_verdict_t est_cors_stage(est_gate_t *g)
{
    est_request_t *r = g->r;
    if (r->route->cors == NULL)
        return EST_GATE_PASS;
    if (est_cors_is_preflight(r->req)) {
        /* answered here, before auth and rate limit: a preflight carries no credentials
         * (Fetch "CORS-preflight request") and never reaches the backend */
        est_cors_answer_preflight(r->req, r->route, r->request_id);
        return EST_GATE_DONE;
    }
    est_cors_add_headers(r->req, r->route->cors);
    return EST_GATE_PASS;
}

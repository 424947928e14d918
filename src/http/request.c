/*
 * estuary - request-side helpers shared by the aggregate and proxy handlers.
 */
#include "http/request.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include "common/fieldvalue.h"
#include "common/jsonutil.h"
#include "common/sockaddr.h"

const char *est_status_reason(int status)
{
    switch (status) {
    /* RFC 9110 §15's reason phrases of the statuses estuary sends or commonly passes through;
     * others go out with an empty phrase, which RFC 9112 §4 allows */
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 412: return "Precondition Failed";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "";
    }
}

void est_send_body(h2o_req_t *req, const char *bytes, size_t len)
{
    /* h2o_send_inline does not set content_length (shared/LIBH2O-2.2.5.md §1): do it here so
     * HTTP/1.1 answers with Content-Length instead of chunked */
    req->res.content_length = len;
    h2o_send_inline(req, bytes, len);
}

void est_send_error(h2o_req_t *req, int status, const char *code, const char *message, h2o_iovec_t request_id)
{
    char rid[129];
    size_t rid_len = request_id.len < sizeof(rid) - 1 ? request_id.len : sizeof(rid) - 1;
    memcpy(rid, request_id.base, rid_len);
    rid[rid_len] = '\0';
    size_t len = 0;
    char *body = est_error_body(status, code, message, rid, &len);

    req->res.status = status;
    req->res.reason = est_status_reason(status);
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("application/json"));
    if (request_id.len != 0 && h2o_find_header_by_str(&req->res.headers, H2O_STRLIT("x-request-id"), -1) == -1)
        h2o_add_header_by_str(&req->pool, &req->res.headers, H2O_STRLIT("x-request-id"), 0, NULL, request_id.base,
                              request_id.len);
    est_send_body(req, body != NULL ? body : "", body != NULL ? len : 0);
    free(body);
}

int est_request_id_is_valid(const char *s, size_t len)
{
    if (len == 0 || len > 128)
        return 0;
    for (size_t i = 0; i != len; ++i) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

/* `len` bytes of `name` equal the lower-case `lit` (ASCII case-insensitive) */
static int name_is(const char *name, const char *lit, size_t len)
{
    return (name[0] | 0x20) == lit[0] && strncasecmp(name, lit, len) == 0;
}

int est_is_hop_by_hop(const char *name, size_t len, const h2o_iovec_t *connection_value)
{
    /* by length first, then the first letter: at most one strncasecmp for a fixed name */
    int fixed = 0;
    switch (len) {
    case 2:
        fixed = name_is(name, "te", 2);
        break;
    case 7:
        fixed = name_is(name, "trailer", 7) || name_is(name, "upgrade", 7);
        break;
    case 10:
        fixed = name_is(name, "connection", 10) || name_is(name, "keep-alive", 10);
        break;
    case 14:
        fixed = name_is(name, "http2-settings", 14);
        break;
    case 17:
        fixed = name_is(name, "transfer-encoding", 17);
        break;
    default:
        break;
    }
    if (fixed)
        return 1;
    if (len >= 6 && name_is(name, "proxy-", 6))
        return 1;
    if (connection_value != NULL && connection_value->len != 0 && est_list_has_token(connection_value->base, connection_value->len, name, len))
        return 1;
    return 0;
}

static inline uint64_t lower8(uint64_t x)
{
    /* a byte gets 0x20 when it is below 0x80 and in 'A'..'Z' (the high bit of heptet + 0x3f
     * says >= 'A', of heptet + 0x25 says > 'Z'; no carry crosses bytes) */
    uint64_t heptets = x & 0x7f7f7f7f7f7f7f7fULL;
    uint64_t ge_a = heptets + 0x3f3f3f3f3f3f3f3fULL, gt_z = heptets + 0x2525252525252525ULL;
    return x | ((~x & (ge_a ^ gt_z) & 0x8080808080808080ULL) >> 2);
}

void est_lower_copy(char *dst, const char *src, size_t len)
{
    if (len < 8) {
        for (; len != 0; --len)
            *dst++ = h2o_tolower(*src++);
        return;
    }
    /* 8 bytes at a time; the last word overlaps the previous one (lower-casing twice is the same) */
    uint64_t x;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        memcpy(&x, src + i, 8);
        x = lower8(x);
        memcpy(dst + i, &x, 8);
    }
    if (i != len) {
        memcpy(&x, src + len - 8, 8);
        x = lower8(x);
        memcpy(dst + len - 8, &x, 8);
    }
}

static size_t format_peer(h2o_req_t *req, char *buf, size_t bufsz)
{
    struct sockaddr_storage ss;
    socklen_t sslen = req->conn->callbacks->get_peername(req->conn, (void *)&ss);
    if (sslen == 0)
        return 0;
    return est_sockaddr_ntop(&ss, buf, bufsz);
}

/* what the forward-headers pass does with one request header */
enum { FWD_KEEP, FWD_DROP, FWD_XFF, FWD_VIA };

/* the original checks, in their order: for names h2o did not intern as tokens, and for every
 * name when a Connection header is present (a name it lists is hop-by-hop) */
static int classify_by_name(const h2o_iovec_t *name, const h2o_iovec_t *connection)
{
    if (name == &H2O_TOKEN_HOST->buf || name == &H2O_TOKEN_CONTENT_LENGTH->buf)
        return FWD_DROP;
    if (est_is_hop_by_hop(name->base, name->len, connection))
        return FWD_DROP;
    if (name->len == 15 && strncasecmp(name->base, "x-forwarded-for", 15) == 0)
        return FWD_XFF;
    if ((name->len == 17 && (strncasecmp(name->base, "x-forwarded-proto", 17) == 0)) ||
        (name->len == 16 && strncasecmp(name->base, "x-forwarded-host", 16) == 0) ||
        (name->len == 12 && strncasecmp(name->base, "x-request-id", 12) == 0))
        return FWD_DROP; /* replaced by ours */
    if (name == &H2O_TOKEN_VIA->buf)
        return FWD_VIA;
    return FWD_KEEP;
}

/*
 * h2o interns the names it knows as tokens (h2o_iovec_is_token; a token's buf is the
 * lower-case name): without a Connection header those are classified by address, with no
 * string compare. Of the tokens only these are hop-by-hop ("trailer" and the non-standard
 * proxy-* names are not tokens in h2o 2.2.5), and x-forwarded-proto/-host and x-request-id
 * are not tokens either.
 */
static int classify(const h2o_iovec_t *name, const h2o_iovec_t *connection)
{
    if (connection->len == 0 && h2o_iovec_is_token(name)) {
        const h2o_token_t *t = H2O_STRUCT_FROM_MEMBER(h2o_token_t, buf, name);
        if (t == H2O_TOKEN_HOST || t == H2O_TOKEN_CONTENT_LENGTH || t == H2O_TOKEN_CONNECTION || t == H2O_TOKEN_KEEP_ALIVE ||
            t == H2O_TOKEN_TE || t == H2O_TOKEN_TRANSFER_ENCODING || t == H2O_TOKEN_UPGRADE || t == H2O_TOKEN_HTTP2_SETTINGS ||
            t == H2O_TOKEN_PROXY_AUTHENTICATE || t == H2O_TOKEN_PROXY_AUTHORIZATION)
            return FWD_DROP;
        if (t == H2O_TOKEN_X_FORWARDED_FOR)
            return FWD_XFF;
        if (t == H2O_TOKEN_VIA)
            return FWD_VIA;
        return FWD_KEEP;
    }
    return classify_by_name(name, connection);
}

void est_build_forward_headers_peer(h2o_req_t *req, h2o_iovec_t request_id, int keep_upgrade, h2o_iovec_t peer,
                                    h2o_header_t **out, size_t *num_out)
{
    h2o_iovec_t connection = {NULL, 0};
    h2o_iovec_t xff = {NULL, 0}, via = {NULL, 0};
    for (size_t i = 0; i != req->headers.size; ++i) {
        const h2o_header_t *h = req->headers.entries + i;
        if (h->name == &H2O_TOKEN_CONNECTION->buf)
            connection = h->value;
    }

    h2o_header_t *hdrs = h2o_mem_alloc_pool(&req->pool, sizeof(*hdrs) * (req->headers.size + 6));
    size_t n = 0;
    for (size_t i = 0; i != req->headers.size; ++i) {
        const h2o_header_t *h = req->headers.entries + i;
        switch (classify(h->name, &connection)) {
        case FWD_KEEP:
            hdrs[n++] = *h;
            break;
        case FWD_XFF: /* several X-Forwarded-For lines are joined, in order */
            xff = xff.len == 0 ? h->value : h2o_concat(&req->pool, xff, h2o_iovec_init(H2O_STRLIT(", ")), h->value);
            break;
        case FWD_VIA:
            via = via.len == 0 ? h->value : h2o_concat(&req->pool, via, h2o_iovec_init(H2O_STRLIT(", ")), h->value);
            break;
        default:
            break;
        }
    }

    h2o_iovec_t peer_iov = h2o_strdup(&req->pool, peer.base, peer.len);
    if (xff.len != 0)
        xff = h2o_concat(&req->pool, xff, h2o_iovec_init(H2O_STRLIT(", ")), peer_iov);
    else
        xff = peer_iov;

    /* SPEC: "Via: 1.1 estuary" whatever the client's protocol (the hop to the upstream is HTTP/1.1) */
    h2o_iovec_t our_via = h2o_iovec_init(H2O_STRLIT("1.1 estuary"));
    if (via.len != 0)
        via = h2o_concat(&req->pool, via, h2o_iovec_init(H2O_STRLIT(", ")), our_via);
    else
        via = our_via;

    static h2o_iovec_t xff_name = {H2O_STRLIT("x-forwarded-for")}, xfp_name = {H2O_STRLIT("x-forwarded-proto")},
                       xfh_name = {H2O_STRLIT("x-forwarded-host")}, xri_name = {H2O_STRLIT("x-request-id")};
    /* h2o keeps the h1 Upgrade header in req->upgrade, not in req->headers */
    if (keep_upgrade && req->upgrade.base != NULL)
        hdrs[n++] = (h2o_header_t){&H2O_TOKEN_UPGRADE->buf, NULL, req->upgrade};
    hdrs[n++] = (h2o_header_t){&H2O_TOKEN_VIA->buf, NULL, via};
    if (xff.len != 0)
        hdrs[n++] = (h2o_header_t){&xff_name, NULL, xff};
    hdrs[n++] = (h2o_header_t){&xfp_name, NULL, req->scheme->name};
    hdrs[n++] = (h2o_header_t){&xfh_name, NULL, req->authority};
    hdrs[n++] = (h2o_header_t){&xri_name, NULL, request_id};
    *out = hdrs;
    *num_out = n;
}

void est_build_forward_headers(h2o_req_t *req, h2o_iovec_t request_id, int keep_upgrade, h2o_header_t **out, size_t *num_out)
{
    char peer[INET6_ADDRSTRLEN];
    size_t peer_len = format_peer(req, peer, sizeof(peer));
    est_build_forward_headers_peer(req, request_id, keep_upgrade, h2o_iovec_init(peer, peer_len), out, num_out);
}

/* est_request_prepare_upstream; `path` non-NULL: the backend path already built (dependent backends) */
static int prepare_upstream(est_request_t *r, size_t backend_index, h2o_iovec_t method, est_upstream_request_t *u,
                            const h2o_iovec_t *path)
{
    h2o_req_t *req = r->req;
    memset(u, 0, sizeof(*u));
    u->method = method;
    if (path != NULL)
        u->path = *path;
    else if (est_template_expand(est_router_backend_template(r->router, r->match->route_index, backend_index), r->match,
                                 &req->pool, r->query, &u->path) != 0)
        return -1;
    if (r->route->preserve_host)
        u->host = req->authority;
    u->headers = r->fwd_headers;
    u->num_headers = r->num_fwd_headers;
    if (req->entity.base != NULL) {
        u->body = req->entity;
        u->has_body = 1;
    }
    u->deadline = r->deadline;
    u->is_idempotent = !(r->method == EST_METHOD_POST || r->method == EST_METHOD_PATCH);
    u->trace = r->tctx; /* each attempt sends its own traceparent */
    return 0;
}

int est_request_prepare_upstream(est_request_t *r, size_t backend_index, h2o_iovec_t method, est_upstream_request_t *u)
{
    return prepare_upstream(r, backend_index, method, u, NULL);
}

/* ---- per-request cleanups ------------------------------------------------------------------ */

void *est_alloc_disposable(h2o_mem_pool_t *pool, est_disposer_t **list, size_t size, void (*cb)(void *obj))
{
    /* h2o_mem_alloc_pool returns 16-byte aligned memory, so the object after the node is too */
    _Static_assert(sizeof(est_disposer_t) == 16, "the object after the node stays 16-byte aligned");
    est_disposer_t *d = h2o_mem_alloc_pool(pool, sizeof(est_disposer_t) + size);
    d->cb = cb;
    d->next = *list;
    *list = d;
    return d + 1;
}

void est_run_disposers(est_disposer_t **list)
{
    est_disposer_t *d = *list;
    *list = NULL;
    for (; d != NULL; d = d->next)
        d->cb(d + 1);
}

/* ---- dependent backends (SPEC "Dependent backends") ------------------------------------------ */

/* 1 when the header name `name` (any case) is one of the `n` lower-case `names` */
static int is_one_of(const h2o_iovec_t *names, size_t n, const h2o_iovec_t *name)
{
    for (size_t k = 0; k != n; ++k)
        if (names[k].len == name->len && strncasecmp(names[k].base, name->base, name->len) == 0)
            return 1;
    return 0;
}

int est_request_prepare_backend(est_request_t *r, size_t backend_index, h2o_iovec_t method, est_upstream_request_t *u,
                                est_group_value_cb lookup, void *lookup_data)
{
    const est_route_conf_t *route = r->route;
    const est_backend_conf_t *b =
        route->proxy == NULL && backend_index < route->num_backends ? route->backends + backend_index : NULL;
    if (b == NULL || (b->num_deps == 0 && b->num_headers == 0))
        return est_request_prepare_upstream(r, backend_index, method, u);

    h2o_req_t *req = r->req;
    size_t route_index = r->match->route_index, k;
    int rc;

    /* the header values first: a missing value fails the backend before anything is built */
    h2o_header_t *own = NULL;
    h2o_iovec_t *names = NULL;
    if (b->num_headers != 0) {
        own = h2o_mem_alloc_pool(&req->pool, sizeof(*own) * b->num_headers);
        names = h2o_mem_alloc_pool(&req->pool, sizeof(*names) * b->num_headers);
    }
    for (k = 0; k != b->num_headers; ++k) {
        const est_template_t *tpl = est_router_header_template(r->router, route_index, backend_index, k);
        h2o_iovec_t value;
        if (tpl == NULL)
            return -1;
        if ((rc = est_template_expand_value(tpl, r->match, lookup, lookup_data, &req->pool, &value)) != 0)
            return rc == EST_TEMPLATE_NO_VALUE ? EST_PREPARE_DEPENDENCY_FAILED : -1;
        names[k] = h2o_iovec_init(b->headers[k].name, strlen(b->headers[k].name));
        own[k] = (h2o_header_t){names + k, NULL, value};
    }

    const est_template_t *path_tpl = est_router_backend_template(r->router, route_index, backend_index);
    h2o_iovec_t path;
    if (path_tpl != NULL && path_tpl->num_groups != 0) {
        if ((rc = est_template_expand_refs(path_tpl, r->match, lookup, lookup_data, &req->pool, r->query, &path)) != 0)
            return rc == EST_TEMPLATE_NO_VALUE ? EST_PREPARE_DEPENDENCY_FAILED : -1;
        rc = prepare_upstream(r, backend_index, method, u, &path);
    } else {
        rc = prepare_upstream(r, backend_index, method, u, NULL);
    }
    if (rc != 0 || b->num_headers == 0)
        return rc;

    /* the forwarded headers without those the backend sets itself, then the backend's own */
    h2o_header_t *hdrs = h2o_mem_alloc_pool(&req->pool, sizeof(*hdrs) * (u->num_headers + b->num_headers));
    size_t n = 0;
    for (k = 0; k != u->num_headers; ++k)
        if (!is_one_of(names, b->num_headers, u->headers[k].name))
            hdrs[n++] = u->headers[k];
    memcpy(hdrs + n, own, sizeof(*own) * b->num_headers);
    u->headers = hdrs;
    u->num_headers = n + b->num_headers;
    return 0;
}

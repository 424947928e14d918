/*
 * estuary - libFuzzer driver for the router: template compile, route table build, path
 * normalisation, match and backend path expansion (src/router).
 *
 * Input: lines. Up to the first empty line, each line is a route: its first byte picks the
 * methods (low 7 bits as EST_METHOD_* bits), the rest is "TEMPLATE" or "TEMPLATE BACKEND"
 * (split at the first space; BACKEND is that route's backend path template; on an aggregating
 * route, odd lines, it is the second backend's, after one of group "g", and also that
 * backend's header value template when it parses as one). After the
 * empty line, each line is a request: its first byte picks one method bit, the rest is the
 * raw request target ("PATH" or "PATH?QUERY").
 *
 * Every template is parsed alone (route and backend rules); the routes whose templates
 * parse are compiled into one router (and the whole list once, for the error path); every
 * request path is normalised, matched, and on a match its backend path is expanded (with
 * {GROUP.path} values from a lookup that echoes the path or fails) and so are its header values. The
 * checks: no crash, no leak, and the documented invariants (normalised length <= input,
 * params point into the path, a FOUND match names a route that allows the method).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "router/router.h"

#define MAX_ROUTES 64
#define MAX_REQUESTS 64

typedef struct line {
    const char *s;
    size_t len;
} line_t;

static char *dup_mem(const char *s, size_t len)
{
    char *p = malloc(len + 1);
    if (p == NULL)
        abort();
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

/* parses `s` alone as a route, a backend and a header value template; checks the error offset */
static void parse_alone(const char *s)
{
    for (int mode = 0; mode <= 2; mode++) {
        est_template_t t;
        char err[160];
        size_t off = 0, groups = 0;
        memset(&t, 0, sizeof(t));
        int rc = mode == 2 ? est_template_parse_value(&t, s, err, sizeof(err), &off) : est_template_parse(&t, s, mode, err, sizeof(err), &off);
        if (rc == 0) {
            for (size_t i = 0; i < t.num_pieces; i++) {
                const est_tpl_piece_t *p = &t.pieces[i];
                if (p->kind == EST_TPL_GROUP) {
                    /* "GROUP.path": both parts non-empty; never in a route template */
                    if (mode == 1 || p->group_len == 0 || p->group_len + 1 >= p->len || p->text[p->group_len] != '.')
                        abort();
                    groups++;
                } else if (p->kind != EST_TPL_LITERAL && est_template_find_param(&t, p->text, p->len) == NULL) {
                    abort();
                }
            }
            if (groups != t.num_groups)
                abort();
            est_template_dispose(&t);
        } else if (off > strlen(s) || err[0] == '\0') {
            abort();
        }
    }
}

/* {GROUP.path} values: the path itself, or no value when its length is a multiple of 3 */
static int echo_lookup(void *data, size_t backend, const char *path, size_t pathlen, h2o_iovec_t *text)
{
    (void)data;
    if (backend != 0 || pathlen % 3 == 0)
        return -1;
    *text = h2o_iovec_init(path, pathlen);
    return 0;
}

static void run_request(const est_router_t *router, const est_route_conf_t *routes, size_t nroutes, const line_t *req)
{
    unsigned method = req->len != 0 ? 1u << ((unsigned char)req->s[0] % EST_METHOD__COUNT) : EST_METHOD_GET;
    const char *target = req->len != 0 ? req->s + 1 : req->s;
    size_t tlen = req->len != 0 ? req->len - 1 : 0;
    const char *q = memchr(target, '?', tlen);
    size_t plen = q != NULL ? (size_t)(q - target) : tlen;
    h2o_iovec_t query = q != NULL ? h2o_iovec_init(q + 1, tlen - plen - 1) : h2o_iovec_init(NULL, 0);

    char *path = malloc(plen + 1);
    if (path == NULL)
        abort();
    ssize_t n = est_path_normalize(target, plen, path);
    if (n > (ssize_t)plen)
        abort();
    if (n >= 0 && router != NULL) {
        est_match_t m;
        if (est_router_match(router, path, (size_t)n, method, &m) == EST_ROUTER_FOUND) {
            if (m.route_index >= nroutes || m.route != routes + m.route_index || m.num_params > EST_ROUTER_MAX_PARAMS)
                abort();
            if ((m.route->methods | ((m.route->methods & EST_METHOD_GET) ? EST_METHOD_HEAD : 0)) & method) {
                /* ok */
            } else {
                abort();
            }
            for (size_t i = 0; i < m.num_params; i++) {
                const h2o_iovec_t *v = &m.params[i].value;
                if (v->len != 0 && (v->base < path || v->base + v->len > path + n))
                    abort();
                if (est_match_get_param(&m, m.params[i].name.base, m.params[i].name.len) == NULL)
                    abort();
            }
            h2o_mem_pool_t pool;
            h2o_mem_init_pool(&pool);
            size_t nb = m.route->proxy != NULL ? 1 : m.route->num_backends;
            for (size_t b = 0; b <= nb; b++) { /* b == nb: out of range -> NULL template */
                h2o_iovec_t out;
                const est_template_t *tpl = est_router_backend_template(router, m.route_index, b);
                est_template_expand(tpl, &m, &pool, query, &out);
                if (est_template_expand_refs(tpl, &m, echo_lookup, NULL, &pool, query, &out) == 0) {
                    /* nothing a value brings may leave a space or a CTL in the target */
                    for (size_t i = 0; i + query.len < out.len; i++)
                        if ((unsigned char)out.base[i] <= 0x20 || out.base[i] == 0x7f)
                            abort();
                }
                const est_template_t *htpl = est_router_header_template(router, m.route_index, b, 0);
                if (htpl != NULL && est_template_expand_value(htpl, &m, echo_lookup, NULL, &pool, &out) == 0) {
                    if (out.len > EST_TEMPLATE_MAX_VALUE || memchr(out.base, '\r', out.len) != NULL ||
                        memchr(out.base, '\n', out.len) != NULL || memchr(out.base, '\0', out.len) != NULL)
                        abort();
                }
            }
            h2o_mem_clear_pool(&pool);
        }
        /* the same path with every method: the allowed set is stable */
        for (unsigned bit = 0; bit < EST_METHOD__COUNT; bit++)
            est_router_match(router, path, (size_t)n, 1u << bit, &m);
        est_router_match(router, path, (size_t)n, 0, &m);
    }
    free(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data, *end = s + size;
    line_t route_lines[MAX_ROUTES], reqs[MAX_REQUESTS];
    size_t nroute_lines = 0, nreqs = 0;
    int in_requests = 0;

    while (s < end) {
        const char *nl = memchr(s, '\n', (size_t)(end - s));
        line_t l = {s, nl != NULL ? (size_t)(nl - s) : (size_t)(end - s)};
        s = nl != NULL ? nl + 1 : end;
        if (!in_requests) {
            if (l.len == 0)
                in_requests = 1;
            else if (nroute_lines < MAX_ROUTES)
                route_lines[nroute_lines++] = l;
        } else if (nreqs < MAX_REQUESTS) {
            reqs[nreqs++] = l;
        }
    }

    est_route_conf_t all[MAX_ROUTES], good[MAX_ROUTES];
    est_backend_conf_t backends[MAX_ROUTES][2];
    est_header_tpl_conf_t hdrs[MAX_ROUTES];
    char hname[] = "x-h", gname[] = "g", gpath[] = "/g";
    size_t ngood = 0;
    memset(all, 0, sizeof(all));
    memset(backends, 0, sizeof(backends));
    for (size_t i = 0; i < nroute_lines; i++) {
        const line_t *l = &route_lines[i];
        const char *sp = memchr(l->s + 1, ' ', l->len - 1);
        size_t tlen = sp != NULL ? (size_t)(sp - l->s - 1) : l->len - 1;
        all[i].index = i;
        all[i].methods = (unsigned char)l->s[0] & ((1u << EST_METHOD__COUNT) - 1);
        all[i].path = dup_mem(l->s + 1, tlen);
        if (sp != NULL) {
            char *bpath = dup_mem(sp + 1, (size_t)(l->s + l->len - sp - 1));
            if (i % 2 == 0) {
                backends[i][0].path = bpath;
                all[i].proxy = &backends[i][0];
            } else {
                est_template_t t;
                backends[i][0].path = gpath;
                backends[i][0].group = gname;
                backends[i][1].path = bpath;
                if (est_template_parse_value(&t, bpath, NULL, 0, NULL) == 0) {
                    est_template_dispose(&t);
                    hdrs[i] = (est_header_tpl_conf_t){hname, bpath};
                    backends[i][1].headers = &hdrs[i];
                    backends[i][1].num_headers = 1;
                }
                all[i].backends = backends[i];
                all[i].num_backends = 2;
            }
            parse_alone(bpath);
        }
        parse_alone(all[i].path);
    }

    char err[256];
    est_router_t *r = est_router_create(all, nroute_lines, err, sizeof(err));
    if (r != NULL) {
        for (size_t i = 0; i < nreqs; i++)
            run_request(r, all, nroute_lines, &reqs[i]);
        est_router_destroy(r);
    } else {
        /* keep the routes that compile on their own, then match against those */
        for (size_t i = 0; i < nroute_lines; i++) {
            est_router_t *one = est_router_create(&all[i], 1, err, sizeof(err));
            if (one != NULL) {
                good[ngood] = all[i];
                good[ngood].index = ngood;
                ngood++;
                est_router_destroy(one);
            }
        }
        r = est_router_create(good, ngood, err, sizeof(err));
        if (r == NULL)
            abort(); /* each compiles alone: together they must too */
        for (size_t i = 0; i < nreqs; i++)
            run_request(r, good, ngood, &reqs[i]);
        est_router_destroy(r);
    }
    for (size_t i = 0; i < nroute_lines; i++) {
        free(all[i].path);
        free(all[i].proxy != NULL ? backends[i][0].path : backends[i][1].path);
    }
    return 0;
}

/*
 * estuary - router: a segment trie over the route templates.
 *
 * Each trie node stands for a prefix of template segments and has up to three kinds of
 * children: literal edges (sorted, binary-searched), one {param} child and one {rest...} child.
 * Routes hang on the node where their template ends. Matching is a depth-first walk in
 * precedence order (literal, param, rest) with backtracking; the first terminal node, in that
 * order, holding a route that allows the method wins. A node sits at a fixed depth, so the walk
 * visits each node at most once: the cost is bounded by the trie size and is about
 * O(path length) for typical configs. Captured values go to a stack array: no allocation.
 */
#include "router/router.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct st_route_entry_t {
    const est_route_conf_t *conf;
    size_t index;
    unsigned methods; /* GET implies HEAD folded in */
    est_template_t tpl;
    est_template_t *backend_tpls; /* one per backend (proxy: one); pieces NULL when no path */
    size_t num_backend_tpls;
    struct st_header_tpls_t {
        est_template_t *tpls; /* one per backends[j].headers[k] */
        size_t num;
    } * header_tpls; /* one per backend; NULL for a proxy route */
} route_entry_t;

typedef struct st_trie_node_t trie_node_t;

typedef struct st_trie_edge_t {
    const char *text; /* points into a route template */
    size_t len;
    trie_node_t *child;
} trie_edge_t;

struct st_trie_node_t {
    trie_edge_t *lits;
    size_t num_lits, cap_lits;
    trie_node_t *param;
    trie_node_t *rest;
    route_entry_t **routes; /* ending here, in config order */
    size_t num_routes;
};

struct st_est_router_t {
    route_entry_t *entries;
    size_t num_entries;
    trie_node_t *root;
};

typedef struct st_walk_t {
    const char *path;
    size_t len;
    unsigned method;
    unsigned allowed;
    const route_entry_t *found;
    h2o_iovec_t caps[EST_ROUTER_MAX_PARAMS];
} walk_t;

static void set_err(char *err, size_t errsz, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static trie_node_t *node_new(void);
static void node_free(trie_node_t *n);
static int node_add_route(trie_node_t *n, route_entry_t *e);
/* the literal edges while a router is built: (parent, text) -> child, open addressing, so that
 * a node with thousands of literal children is not scanned once per route inserted */
typedef struct st_lit_index_t {
    struct {
        const trie_node_t *parent;
        const char *text;
        size_t len;
        trie_node_t *child;
    } *slots;
    size_t mask;
} lit_index_t;

static trie_node_t *node_lit_child(lit_index_t *ix, trie_node_t *n, const char *text, size_t len);
static void node_sort(trie_node_t *n);
static int edge_cmp(const void *a, const void *b);
static int insert_route(est_router_t *r, lit_index_t *ix, route_entry_t *e);
static int compile_backends(route_entry_t *e, char *err, size_t errsz);
static int bind_groups(est_template_t *t, const est_backend_conf_t *bs, size_t self, int is_proxy);
static int check_terminal(walk_t *w, const trie_node_t *n);
static int walk(walk_t *w, const trie_node_t *n, size_t pos, size_t ncaps);
static int dot_count(const char *s, size_t len);
static size_t value_size(h2o_iovec_t v, int in_query);
static char *append_value(char *dst, h2o_iovec_t v, int in_query);

static void set_err(char *err, size_t errsz, const char *fmt, ...)
{
    if (err == NULL || errsz == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errsz, fmt, ap);
    va_end(ap);
}

static trie_node_t *node_new(void)
{
    return calloc(1, sizeof(trie_node_t));
}

static void node_free(trie_node_t *n)
{
    size_t i;
    if (n == NULL)
        return;
    for (i = 0; i != n->num_lits; ++i)
        node_free(n->lits[i].child);
    free(n->lits);
    node_free(n->param);
    node_free(n->rest);
    free(n->routes);
    free(n);
}

static int node_add_route(trie_node_t *n, route_entry_t *e)
{
    route_entry_t **r = realloc(n->routes, (n->num_routes + 1) * sizeof(*r));
    if (r == NULL)
        return -1;
    n->routes = r;
    n->routes[n->num_routes++] = e;
    return 0;
}

static size_t lit_hash(const trie_node_t *parent, const char *text, size_t len)
{
    uint64_t h = 1469598103934665603ULL ^ (uint64_t)(uintptr_t)parent; /* FNV-1a */
    for (size_t i = 0; i != len; ++i)
        h = (h ^ (unsigned char)text[i]) * 1099511628211ULL;
    return (size_t)(h ^ (h >> 29));
}

/* the literal child `text` of `n`, created if absent; NULL when out of memory */
static trie_node_t *node_lit_child(lit_index_t *ix, trie_node_t *n, const char *text, size_t len)
{
    size_t i = lit_hash(n, text, len) & ix->mask;
    for (; ix->slots[i].parent != NULL; i = (i + 1) & ix->mask)
        if (ix->slots[i].parent == n && ix->slots[i].len == len && memcmp(ix->slots[i].text, text, len) == 0)
            return ix->slots[i].child;
    if (n->num_lits == n->cap_lits) {
        size_t cap = n->cap_lits ? n->cap_lits * 2 : 4;
        trie_edge_t *lits = realloc(n->lits, cap * sizeof(*lits));
        if (lits == NULL)
            return NULL;
        n->lits = lits;
        n->cap_lits = cap;
    }
    trie_node_t *child = node_new();
    if (child == NULL)
        return NULL;
    n->lits[n->num_lits++] = (trie_edge_t){text, len, child};
    ix->slots[i].parent = n;
    ix->slots[i].text = text;
    ix->slots[i].len = len;
    ix->slots[i].child = child;
    return child;
}

/* edges are ordered by length, then bytes: the order bsearch uses in walk() */
static int edge_cmp(const void *a, const void *b)
{
    const trie_edge_t *x = a, *y = b;
    if (x->len != y->len)
        return x->len < y->len ? -1 : 1;
    return memcmp(x->text, y->text, x->len);
}

static void node_sort(trie_node_t *n)
{
    size_t i;
    if (n == NULL)
        return;
    if (n->num_lits > 1)
        qsort(n->lits, n->num_lits, sizeof(*n->lits), edge_cmp);
    for (i = 0; i != n->num_lits; ++i)
        node_sort(n->lits[i].child);
    node_sort(n->param);
    node_sort(n->rest);
}

static int insert_route(est_router_t *r, lit_index_t *ix, route_entry_t *e)
{
    trie_node_t *n = r->root;
    size_t i;
    for (i = 0; i != e->tpl.num_pieces; ++i) {
        const est_tpl_piece_t *p = e->tpl.pieces + i;
        trie_node_t **slot;
        switch (p->kind) {
        case EST_TPL_LITERAL:
            if ((n = node_lit_child(ix, n, p->text, p->len)) == NULL)
                return -1;
            continue;
        case EST_TPL_PARAM:
            slot = &n->param;
            break;
        default:
            slot = &n->rest;
            break;
        }
        if (*slot == NULL && (*slot = node_new()) == NULL)
            return -1;
        n = *slot;
    }
    return node_add_route(n, e);
}

static int compile_backends(route_entry_t *e, char *err, size_t errsz)
{
    const est_route_conf_t *rc = e->conf;
    const est_backend_conf_t *bs = rc->proxy != NULL ? rc->proxy : rc->backends;
    size_t n = rc->proxy != NULL ? 1 : rc->num_backends, i;

    if (n == 0 || bs == NULL)
        return 0;
    if ((e->backend_tpls = calloc(n, sizeof(*e->backend_tpls))) == NULL) {
        set_err(err, errsz, "out of memory");
        return -1;
    }
    e->num_backend_tpls = n;
    if (rc->proxy == NULL && (e->header_tpls = calloc(n, sizeof(*e->header_tpls))) == NULL) {
        set_err(err, errsz, "out of memory");
        return -1;
    }
    for (i = 0; i != n; ++i) {
        char msg[160];
        size_t off = 0;
        if (bs[i].path != NULL) {
            if (est_template_parse(e->backend_tpls + i, bs[i].path, 0, msg, sizeof(msg), &off) != 0) {
                set_err(err, errsz, "route '%s': backend path '%s': %s (at offset %zu)", rc->path, bs[i].path, msg, off);
                return -1;
            }
            if (bind_groups(e->backend_tpls + i, bs, i, rc->proxy != NULL) != 0) {
                set_err(err, errsz, "route '%s': backend path '%s': names no earlier backend's group", rc->path, bs[i].path);
                return -1;
            }
        }
        if (bs[i].num_headers == 0)
            continue;
        if (rc->proxy != NULL) {
            set_err(err, errsz, "route '%s': a proxy cannot set request headers", rc->path);
            return -1;
        }
        struct st_header_tpls_t *h = e->header_tpls + i;
        if ((h->tpls = calloc(bs[i].num_headers, sizeof(*h->tpls))) == NULL) {
            set_err(err, errsz, "out of memory");
            return -1;
        }
        for (; h->num != bs[i].num_headers; ++h->num) {
            const est_header_tpl_conf_t *hc = bs[i].headers + h->num;
            if (est_template_parse_value(h->tpls + h->num, hc->value, msg, sizeof(msg), &off) != 0) {
                set_err(err, errsz, "route '%s': backend header '%s': %s (at offset %zu)", rc->path, hc->name, msg, off);
                return -1;
            }
            if (bind_groups(h->tpls + h->num, bs, i, 0) != 0) {
                est_template_dispose(h->tpls + h->num);
                set_err(err, errsz, "route '%s': backend header '%s': names no earlier backend's group", rc->path, hc->name);
                return -1;
            }
        }
    }
    return 0;
}

/* binds each GROUP piece of `t` (of backend bs[self]) to the last earlier backend of that group */
static int bind_groups(est_template_t *t, const est_backend_conf_t *bs, size_t self, int is_proxy)
{
    for (size_t i = 0; i != t->num_pieces; ++i) {
        est_tpl_piece_t *p = t->pieces + i;
        if (p->kind != EST_TPL_GROUP)
            continue;
        if (is_proxy)
            return -1;
        size_t j = self, found = SIZE_MAX;
        while (j-- != 0) {
            const char *g = bs[j].group;
            if (g != NULL && strlen(g) == p->group_len && memcmp(g, p->text, p->group_len) == 0) {
                found = j;
                break;
            }
        }
        if (found == SIZE_MAX)
            return -1;
        p->backend = found;
    }
    return 0;
}

est_router_t *est_router_create(const est_route_conf_t *routes, size_t n, char *err, size_t errsz)
{
    est_router_t *r;
    size_t i, j, nlits = 0;
    lit_index_t ix = {NULL, 0};

    if ((r = calloc(1, sizeof(*r))) == NULL || (r->root = node_new()) == NULL ||
        (n != 0 && (r->entries = calloc(n, sizeof(*r->entries))) == NULL)) {
        set_err(err, errsz, "out of memory");
        goto Error;
    }
    r->num_entries = n;
    for (i = 0; i != n; ++i) {
        route_entry_t *e = r->entries + i;
        char msg[160];
        size_t off = 0, nparams = 0;
        e->conf = routes + i;
        e->index = i;
        e->methods = routes[i].methods;
        if (e->methods & EST_METHOD_GET)
            e->methods |= EST_METHOD_HEAD;
        if (est_template_parse(&e->tpl, routes[i].path, 1, msg, sizeof(msg), &off) != 0) {
            set_err(err, errsz, "route '%s': %s (at offset %zu)", routes[i].path != NULL ? routes[i].path : "(null)", msg, off);
            goto Error;
        }
        for (j = 0; j != e->tpl.num_pieces; ++j)
            nparams += e->tpl.pieces[j].kind != EST_TPL_LITERAL;
        if (nparams > EST_ROUTER_MAX_PARAMS) {
            set_err(err, errsz, "route '%s': more than %d parameters", routes[i].path, EST_ROUTER_MAX_PARAMS);
            goto Error;
        }
        if (compile_backends(e, err, errsz) != 0)
            goto Error;
        nlits += e->tpl.num_pieces - nparams;
    }
    /* at least twice as many slots as literal edges can be */
    size_t nslots = 16;
    while (nslots < 2 * nlits + 2)
        nslots *= 2;
    if ((ix.slots = calloc(nslots, sizeof(*ix.slots))) == NULL) {
        set_err(err, errsz, "out of memory");
        goto Error;
    }
    ix.mask = nslots - 1;
    for (i = 0; i != n; ++i) {
        if (insert_route(r, &ix, r->entries + i) != 0) {
            set_err(err, errsz, "out of memory");
            goto Error;
        }
    }
    free(ix.slots);
    node_sort(r->root);
    return r;

Error:
    free(ix.slots);
    est_router_destroy(r);
    return NULL;
}

void est_router_destroy(est_router_t *r)
{
    size_t i, j;
    if (r == NULL)
        return;
    node_free(r->root);
    for (i = 0; i != r->num_entries; ++i) {
        route_entry_t *e = r->entries + i;
        est_template_dispose(&e->tpl);
        for (j = 0; j != e->num_backend_tpls; ++j) {
            est_template_dispose(e->backend_tpls + j);
            if (e->header_tpls != NULL) {
                for (size_t k = 0; k != e->header_tpls[j].num; ++k)
                    est_template_dispose(e->header_tpls[j].tpls + k);
                free(e->header_tpls[j].tpls);
            }
        }
        free(e->backend_tpls);
        free(e->header_tpls);
    }
    free(r->entries);
    free(r);
}

/* the path ended at node `n`: record its routes; 1 when one allows the method */
static int check_terminal(walk_t *w, const trie_node_t *n)
{
    size_t i;
    for (i = 0; i != n->num_routes; ++i) {
        const route_entry_t *e = n->routes[i];
        w->allowed |= e->methods;
        if ((e->methods & w->method) != 0) {
            w->found = e;
            return 1;
        }
    }
    return 0;
}

/* `pos` is the offset of the '/' before the next segment, or len when the path is consumed */
static int walk(walk_t *w, const trie_node_t *n, size_t pos, size_t ncaps)
{
    if (pos == w->len)
        return check_terminal(w, n);

    size_t seg = pos + 1, end = seg;
    while (end < w->len && w->path[end] != '/')
        ++end;

    if (n->num_lits != 0) {
        trie_edge_t key = {w->path + seg, end - seg, NULL};
        const trie_edge_t *e = bsearch(&key, n->lits, n->num_lits, sizeof(*n->lits), edge_cmp);
        if (e != NULL && walk(w, e->child, end, ncaps))
            return 1;
    }
    /* a {param} takes a whole, non-empty segment */
    if (n->param != NULL && end > seg && ncaps < EST_ROUTER_MAX_PARAMS) {
        w->caps[ncaps] = h2o_iovec_init(w->path + seg, end - seg);
        if (walk(w, n->param, end, ncaps + 1))
            return 1;
    }
    /* {rest...} takes everything after this '/', possibly nothing */
    if (n->rest != NULL && ncaps < EST_ROUTER_MAX_PARAMS) {
        w->caps[ncaps] = h2o_iovec_init(w->path + seg, w->len - seg);
        if (check_terminal(w, n->rest))
            return 1;
    }
    return 0;
}

est_router_result_t est_router_match(const est_router_t *router, const char *path, size_t len, unsigned method_bit,
                                     est_match_t *m)
{
    walk_t w;
    size_t i, k;

    m->route = NULL;
    m->route_index = 0;
    m->tpl = NULL;
    m->num_params = 0;
    m->allowed = 0;
    m->path = h2o_iovec_init(path, len);
    if (len == 0 || path[0] != '/')
        return EST_ROUTER_NOT_FOUND;

    w.path = path;
    w.len = len;
    w.method = method_bit;
    w.allowed = 0;
    w.found = NULL;
    walk(&w, router->root, 0, 0);
    m->allowed = w.allowed;
    if (w.found == NULL)
        return w.allowed != 0 ? EST_ROUTER_METHOD_NOT_ALLOWED : EST_ROUTER_NOT_FOUND;

    m->route = w.found->conf;
    m->route_index = w.found->index;
    m->tpl = &w.found->tpl;
    for (i = 0, k = 0; i != m->tpl->num_pieces; ++i) {
        const est_tpl_piece_t *p = m->tpl->pieces + i;
        if (p->kind == EST_TPL_LITERAL)
            continue;
        m->params[k].name = h2o_iovec_init(p->text, p->len);
        m->params[k].value = w.caps[k];
        ++k;
    }
    m->num_params = k;
    return EST_ROUTER_FOUND;
}

const h2o_iovec_t *est_match_get_param(const est_match_t *m, const char *name, size_t len)
{
    size_t i;
    for (i = 0; i != m->num_params; ++i)
        if (m->params[i].name.len == len && memcmp(m->params[i].name.base, name, len) == 0)
            return &m->params[i].value;
    return NULL;
}

const est_template_t *est_router_backend_template(const est_router_t *router, size_t route_index, size_t backend_index)
{
    if (route_index >= router->num_entries)
        return NULL;
    const route_entry_t *e = router->entries + route_index;
    if (backend_index >= e->num_backend_tpls || e->backend_tpls[backend_index].pieces == NULL)
        return NULL;
    return e->backend_tpls + backend_index;
}

const est_template_t *est_router_header_template(const est_router_t *router, size_t route_index, size_t backend_index,
                                                 size_t header_index)
{
    if (route_index >= router->num_entries)
        return NULL;
    const route_entry_t *e = router->entries + route_index;
    if (e->header_tpls == NULL || backend_index >= e->num_backend_tpls || header_index >= e->header_tpls[backend_index].num)
        return NULL;
    return e->header_tpls[backend_index].tpls + header_index;
}

/* 1 for ".", 2 for "..", counting "%2e" as a dot; 0 otherwise (RFC 3986 2.3: %2E is '.') */
static int dot_count(const char *s, size_t len)
{
    size_t i = 0;
    int dots = 0;
    while (i < len) {
        if (s[i] == '.') {
            i += 1;
        } else if (i + 3 <= len && s[i] == '%' && s[i + 1] == '2' && (s[i + 2] == 'e' || s[i + 2] == 'E')) {
            i += 3;
        } else {
            return 0;
        }
        if (++dots > 2)
            return 0;
    }
    return dots;
}

ssize_t est_path_normalize(const char *path, size_t len, char *out)
{
    size_t i, o = 0;

    if (len == 0 || path[0] != '/')
        return -1;
    for (i = 0; i != len; ++i) {
        unsigned char c = (unsigned char)path[i];
        if (c <= 0x20 || c == 0x7f)
            return -1;
    }

    i = 0;
    while (i < len) { /* path[i] == '/' */
        size_t seg = i + 1, end = seg;
        while (end < len && path[end] != '/')
            ++end;
        int last = end == len;
        switch (dot_count(path + seg, end - seg)) {
        case 1: /* "/." -> nothing, but "/a/." -> "/a/" */
            if (last)
                out[o++] = '/';
            break;
        case 2: /* drop the last output segment */
            if (o == 0)
                return -1; /* above the root */
            while (out[--o] != '/')
                ;
            if (last)
                out[o++] = '/';
            break;
        default: /* o <= i always, so memmove keeps in-place use safe */
            memmove(out + o, path + i, end - i);
            o += end - i;
            break;
        }
        i = end;
    }
    if (o == 0)
        out[o++] = '/';
    out[o] = '\0';
    return (ssize_t)o;
}

static size_t value_size(h2o_iovec_t v, int in_query)
{
    size_t i, n = v.len;
    if (in_query)
        for (i = 0; i != v.len; ++i)
            if (v.base[i] == '&' || v.base[i] == '+' || v.base[i] == '#')
                n += 2;
    return n;
}

static char *append_value(char *dst, h2o_iovec_t v, int in_query)
{
    size_t i;
    if (v.len == 0)
        return dst;
    if (!in_query) {
        memcpy(dst, v.base, v.len);
        return dst + v.len;
    }
    for (i = 0; i != v.len; ++i) {
        char c = v.base[i];
        if (c == '&' || c == '+' || c == '#') {
            static const char hex[] = "0123456789ABCDEF";
            *dst++ = '%';
            *dst++ = hex[(unsigned char)c >> 4];
            *dst++ = hex[c & 0xf];
        } else {
            *dst++ = c;
        }
    }
    return dst;
}

/* RFC 3986 2.3 */
static int is_unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
           c == '~';
}

static size_t encoded_size(h2o_iovec_t v)
{
    size_t n = v.len;
    for (size_t i = 0; i != v.len; ++i)
        if (!is_unreserved((unsigned char)v.base[i]))
            n += 2;
    return n;
}

static char *append_encoded(char *dst, h2o_iovec_t v)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i != v.len; ++i) {
        unsigned char c = (unsigned char)v.base[i];
        if (is_unreserved(c)) {
            *dst++ = (char)c;
        } else {
            *dst++ = '%';
            *dst++ = hex[c >> 4];
            *dst++ = hex[c & 0xf];
        }
    }
    return dst;
}

/* the value of non-literal piece `p`: 0, -1 (unbound parameter) or EST_TEMPLATE_NO_VALUE */
static int piece_value(const est_tpl_piece_t *p, const est_match_t *m, est_template_lookup_cb lookup, void *lookup_data,
                       h2o_iovec_t *v)
{
    if (p->kind == EST_TPL_GROUP) {
        *v = h2o_iovec_init(NULL, 0);
        if (lookup == NULL || lookup(lookup_data, p->backend, p->text + p->group_len + 1, p->len - p->group_len - 1, v) != 0)
            return EST_TEMPLATE_NO_VALUE;
        if (v->len != 0 && v->base == NULL)
            return EST_TEMPLATE_NO_VALUE;
        return 0;
    }
    const h2o_iovec_t *pv = est_match_get_param(m, p->text, p->len);
    if (pv == NULL)
        return -1;
    *v = *pv;
    return 0;
}

/* est_template_expand without a template: the request path as it came, then the query */
static int expand_request_path(const est_match_t *m, h2o_mem_pool_t *pool, h2o_iovec_t query, h2o_iovec_t *out)
{
    int in_query = m->path.len != 0 && memchr(m->path.base, '?', m->path.len) != NULL;
    char last = m->path.len != 0 ? m->path.base[m->path.len - 1] : '\0';
    int need_sep = query.len != 0 && !(in_query && (last == '?' || last == '&'));
    char *buf = h2o_mem_alloc_pool(pool, m->path.len + need_sep + query.len + 1), *dst = buf;
    if (m->path.len != 0)
        memcpy(dst, m->path.base, m->path.len);
    dst += m->path.len;
    if (need_sep)
        *dst++ = in_query ? '&' : '?';
    if (query.len != 0) {
        memcpy(dst, query.base, query.len);
        dst += query.len;
    }
    *dst = '\0';
    *out = h2o_iovec_init(buf, (size_t)(dst - buf));
    return 0;
}

int est_template_expand(const est_template_t *tpl, const est_match_t *m, h2o_mem_pool_t *pool, h2o_iovec_t query,
                        h2o_iovec_t *out)
{
    /* a group reference has no value here: -1 like an unbound parameter */
    return est_template_expand_refs(tpl, m, NULL, NULL, pool, query, out) == 0 ? 0 : -1;
}

int est_template_expand_refs(const est_template_t *tpl, const est_match_t *m, est_template_lookup_cb lookup, void *lookup_data,
                             h2o_mem_pool_t *pool, h2o_iovec_t query, h2o_iovec_t *out)
{
    if (tpl == NULL)
        return expand_request_path(m, pool, query, out);

    h2o_iovec_t vals[EST_TEMPLATE_MAX_REFS];
    size_t i, nv = 0, total = 0;
    int in_query = 0, rc;
    char last = '\0';

    /* pass 1: every value (each reference looked up once), the size, the query state */
    for (i = 0; i != tpl->num_pieces; ++i) {
        const est_tpl_piece_t *p = tpl->pieces + i;
        if (p->kind == EST_TPL_LITERAL) {
            total += p->len;
            if (!in_query && memchr(p->text, '?', p->len) != NULL)
                in_query = 1;
            if (p->len != 0)
                last = p->text[p->len - 1];
            continue;
        }
        if (nv == EST_TEMPLATE_MAX_REFS)
            return -1; /* est_template_parse never makes more */
        h2o_iovec_t *v = vals + nv++;
        if ((rc = piece_value(p, m, lookup, lookup_data, v)) != 0)
            return rc;
        if (p->kind == EST_TPL_GROUP) {
            /* as (part of) a path segment, "", "." and ".." would name another resource */
            if (!in_query && (v->len == 0 || (v->len <= 2 && memcmp(v->base, "..", v->len) == 0)))
                return EST_TEMPLATE_NO_VALUE;
            total += encoded_size(*v);
        } else {
            total += value_size(*v, in_query);
        }
        /* a value's own '?' or '&' is data (in the query a '&' goes out as "%26"): no separator */
        if (v->len != 0)
            last = v->base[v->len - 1] == '?' || v->base[v->len - 1] == '&' ? '%' : v->base[v->len - 1];
    }
    /* the separator is skipped after a template ending in '?' or '&' ("/search?", "/s?a=1&") */
    int need_sep = query.len != 0 && !(in_query && (last == '?' || last == '&'));
    total += need_sep + query.len;

    /* pass 2: write */
    char *buf = h2o_mem_alloc_pool(pool, total + 1), *dst = buf;
    in_query = 0;
    nv = 0;
    for (i = 0; i != tpl->num_pieces; ++i) {
        const est_tpl_piece_t *p = tpl->pieces + i;
        if (p->kind == EST_TPL_LITERAL) {
            memcpy(dst, p->text, p->len);
            dst += p->len;
            if (!in_query && memchr(p->text, '?', p->len) != NULL)
                in_query = 1;
        } else if (p->kind == EST_TPL_GROUP) {
            dst = append_encoded(dst, vals[nv++]);
        } else {
            dst = append_value(dst, vals[nv++], in_query);
        }
    }
    if (need_sep)
        *dst++ = in_query ? '&' : '?';
    if (query.len != 0) {
        memcpy(dst, query.base, query.len);
        dst += query.len;
    }
    *dst = '\0';
    *out = h2o_iovec_init(buf, (size_t)(dst - buf));
    return 0;
}

int est_template_expand_value(const est_template_t *tpl, const est_match_t *m, est_template_lookup_cb lookup, void *lookup_data,
                              h2o_mem_pool_t *pool, h2o_iovec_t *out)
{
    h2o_iovec_t vals[EST_TEMPLATE_MAX_REFS];
    size_t i, nv = 0, total = 0;
    int rc;

    for (i = 0; i != tpl->num_pieces; ++i) {
        const est_tpl_piece_t *p = tpl->pieces + i;
        if (p->kind == EST_TPL_LITERAL) {
            total += p->len;
            continue;
        }
        if (nv == EST_TEMPLATE_MAX_REFS)
            return -1;
        h2o_iovec_t *v = vals + nv++;
        if ((rc = piece_value(p, m, lookup, lookup_data, v)) != 0)
            return rc;
        /* RFC 9110 5.5: CR, LF and NUL would end or split the field */
        for (size_t k = 0; k != v->len; ++k)
            if (v->base[k] == '\r' || v->base[k] == '\n' || v->base[k] == '\0')
                return EST_TEMPLATE_NO_VALUE;
        total += v->len;
        if (total > EST_TEMPLATE_MAX_VALUE)
            return EST_TEMPLATE_NO_VALUE;
    }
    if (total > EST_TEMPLATE_MAX_VALUE)
        return EST_TEMPLATE_NO_VALUE;

    char *buf = h2o_mem_alloc_pool(pool, total + 1), *dst = buf;
    nv = 0;
    for (i = 0; i != tpl->num_pieces; ++i) {
        const est_tpl_piece_t *p = tpl->pieces + i;
        h2o_iovec_t v = p->kind == EST_TPL_LITERAL ? h2o_iovec_init(p->text, p->len) : vals[nv++];
        if (v.len != 0) {
            memcpy(dst, v.base, v.len);
            dst += v.len;
        }
    }
    *dst = '\0';
    *out = h2o_iovec_init(buf, total);
    return 0;
}

/* estuary - unit tests for matching and expansion (src/router/router.c) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "router/router.h"

#define GET EST_METHOD_GET
#define HEAD EST_METHOD_HEAD
#define POST EST_METHOD_POST
#define PUT EST_METHOD_PUT
#define PATCH EST_METHOD_PATCH
#define DELETE EST_METHOD_DELETE
#define OPTIONS EST_METHOD_OPTIONS

struct route_def {
    const char *path;
    unsigned methods;
};

/* index in this table == route index */
static const struct route_def defs[] = {
    /* 0 */ {"/a/{x}/c", GET | HEAD},
    /* 1 */ {"/a/b/{y}", GET | HEAD},
    /* 2 */ {"/a/{rest...}", GET | HEAD},
    /* 3 */ {"/users", GET | HEAD},
    /* 4 */ {"/users/", GET | HEAD},
    /* 5 */ {"/users/{id}", GET | HEAD},
    /* 6 */ {"/users/{uid}", DELETE}, /* same shape, other method: allowed */
    /* 7 */ {"/users/me", POST},
    /* 8 */ {"/files/{path...}", GET | HEAD | PUT},
    /* 9 */ {"/", GET | HEAD},
    /* 10 */ {"/x/{a}/{b}/z", GET | HEAD},
    /* 11 */ {"/x/{a}/y/{r...}", POST},
    /* 12 */ {"/o/{id}", POST},
    /* 13 */ {"/h", GET}, /* HEAD not folded in by the caller: GET still allows it */
    /* 14 */ {"/m/{x}", PUT},
    /* 15 */ {"/m/{rest...}", GET},
    /* 16 */ {"/g/{a}/{b}/{c}", PATCH},
    /* 17 */ {"/d/{x}", GET},
    /* 18 */ {"/d/{y}", GET | POST}, /* a clash config rejects; first one wins */
    /* 19 */ {"/e/{x}/", OPTIONS},
};
#define NUM_DEFS (sizeof(defs) / sizeof(defs[0]))

static est_route_conf_t routes[NUM_DEFS];
static est_router_t *router;

static int setup(void **state)
{
    size_t i;
    char err[256];
    memset(routes, 0, sizeof(routes));
    for (i = 0; i != NUM_DEFS; ++i) {
        routes[i].index = i;
        routes[i].path = (char *)defs[i].path;
        routes[i].methods = defs[i].methods;
    }
    router = est_router_create(routes, NUM_DEFS, err, sizeof(err));
    if (router == NULL)
        fail_msg("create: %s", err);
    return 0;
}

static int teardown(void **state)
{
    est_router_destroy(router);
    router = NULL;
    return 0;
}

#define FOUND EST_ROUTER_FOUND
#define NF EST_ROUTER_NOT_FOUND
#define NA EST_ROUTER_METHOD_NOT_ALLOWED

struct match_case {
    unsigned method;
    const char *path;
    int result;
    int route;            /* FOUND */
    const char *params;   /* FOUND: "name=value&..." in template order */
    unsigned allowed;     /* NA: exact allowed set; FOUND: not checked */
};

static const struct match_case match_cases[] = {
    /* literal beats param beats rest, segment by segment, with backtracking */
    {GET, "/a/b/c", FOUND, 1, "y=c", 0},
    {GET, "/a/z/c", FOUND, 0, "x=z", 0},
    {GET, "/a/b/d", FOUND, 1, "y=d", 0},
    {GET, "/a/z/d", FOUND, 2, "rest=z/d", 0},
    {GET, "/a/b", FOUND, 2, "rest=b", 0},
    {GET, "/a/b/c/d", FOUND, 2, "rest=b/c/d", 0},
    {GET, "/a/", FOUND, 2, "rest=", 0}, /* empty rest */
    {GET, "/a//c", FOUND, 2, "rest=/c", 0}, /* a {param} never takes an empty segment */
    {GET, "/a", NF, -1, NULL, 0},        /* {rest...} needs the '/' */
    {HEAD, "/a/q/c", FOUND, 0, "x=q", 0},
    {POST, "/a/b/c", NA, -1, NULL, GET | HEAD},
    /* trailing slash is significant */
    {GET, "/users", FOUND, 3, "", 0},
    {GET, "/users/", FOUND, 4, "", 0},
    {GET, "/users/42", FOUND, 5, "id=42", 0},
    {GET, "/users/42/", NF, -1, NULL, 0},
    {GET, "/users//", NF, -1, NULL, 0},
    {GET, "/USERS", NF, -1, NULL, 0},
    {GET, "/users/a%2Fb", FOUND, 5, "id=a%2Fb", 0}, /* raw, still encoded */
    {GET, "/users/caf%C3%A9", FOUND, 5, "id=caf%C3%A9", 0},
    /* same shape, other method; literal that does not allow the method falls back */
    {DELETE, "/users/42", FOUND, 6, "uid=42", 0},
    {GET, "/users/me", FOUND, 5, "id=me", 0},
    {POST, "/users/me", FOUND, 7, "", 0},
    {DELETE, "/users/me", FOUND, 6, "uid=me", 0},
    {PUT, "/users/42", NA, -1, NULL, GET | HEAD | DELETE},
    {PUT, "/users/me", NA, -1, NULL, GET | HEAD | DELETE | POST},
    {0, "/users", NA, -1, NULL, GET | HEAD}, /* unknown method */
    /* rest */
    {GET, "/files/", FOUND, 8, "path=", 0},
    {PUT, "/files/a/b%2Fc/", FOUND, 8, "path=a/b%2Fc/", 0},
    {DELETE, "/files/x", NA, -1, NULL, GET | HEAD | PUT},
    {GET, "/files", NF, -1, NULL, 0},
    /* root */
    {GET, "/", FOUND, 9, "", 0},
    {HEAD, "/", FOUND, 9, "", 0},
    {POST, "/", NA, -1, NULL, GET | HEAD},
    /* most specific template lacks the method: a less specific one serves */
    {GET, "/x/1/y/z", FOUND, 10, "a=1&b=y", 0},
    {POST, "/x/1/y/z", FOUND, 11, "a=1&r=z", 0},
    {POST, "/x/1/y/z/w", FOUND, 11, "a=1&r=z/w", 0},
    {POST, "/x/1/y/", FOUND, 11, "a=1&r=", 0},
    {PUT, "/x/1/y/z", NA, -1, NULL, GET | HEAD | POST},
    {GET, "/x/1/y/z/w", NA, -1, NULL, POST},
    {GET, "/m/1", FOUND, 15, "rest=1", 0},
    {PUT, "/m/1", FOUND, 14, "x=1", 0},
    {PUT, "/m/1/2", NA, -1, NULL, GET | HEAD}, /* GET-only route: Allow lists HEAD too */
    /* 405 */
    {GET, "/o/5", NA, -1, NULL, POST},
    {POST, "/o/5", FOUND, 12, "id=5", 0},
    {GET, "/o/", NF, -1, NULL, 0},
    /* HEAD via GET */
    {HEAD, "/h", FOUND, 13, "", 0},
    {PUT, "/h", NA, -1, NULL, GET | HEAD},
    {PATCH, "/g/1/2/3", FOUND, 16, "a=1&b=2&c=3", 0},
    {PATCH, "/g/1/2", NF, -1, NULL, 0},
    {PATCH, "/g/1/2/3/4", NF, -1, NULL, 0},
    /* clash: the first route in config order serves */
    {GET, "/d/1", FOUND, 17, "x=1", 0},
    {POST, "/d/1", FOUND, 18, "y=1", 0},
    {OPTIONS, "/e/1/", FOUND, 19, "x=1", 0},
    {OPTIONS, "/e/1", NF, -1, NULL, 0},
    /* misc */
    {GET, "/nope", NF, -1, NULL, 0},
    {GET, "", NF, -1, NULL, 0},
    {GET, "users", NF, -1, NULL, 0},
};

static void format_params(const est_match_t *m, char *buf, size_t bufsz)
{
    size_t i;
    buf[0] = '\0';
    for (i = 0; i != m->num_params; ++i)
        snprintf(buf + strlen(buf), bufsz - strlen(buf), "%s%.*s=%.*s", i ? "&" : "", (int)m->params[i].name.len,
                 m->params[i].name.base, (int)m->params[i].value.len, m->params[i].value.base);
}

static void test_match_table(void **state)
{
    size_t i;
    for (i = 0; i != sizeof(match_cases) / sizeof(match_cases[0]); ++i) {
        const struct match_case *c = match_cases + i;
        size_t len = strlen(c->path);
        /* a private copy without a terminating NUL after len: matching must respect len */
        char *path = malloc(len + 8);
        memcpy(path, c->path, len);
        memcpy(path + len, "/zz?q=1", 8);
        est_match_t m;
        int r = est_router_match(router, path, len, c->method, &m);
        if (r != c->result)
            fail_msg("case %zu %s: result %d, expected %d", i, c->path, r, c->result);
        if (r == FOUND) {
            char buf[256];
            if (m.route != routes + c->route || m.route_index != (size_t)c->route)
                fail_msg("case %zu %s: route %zu (%s), expected %d (%s)", i, c->path, m.route_index, m.route->path, c->route,
                         defs[c->route].path);
            format_params(&m, buf, sizeof(buf));
            if (strcmp(buf, c->params) != 0)
                fail_msg("case %zu %s: params '%s', expected '%s'", i, c->path, buf, c->params);
            for (size_t j = 0; j != m.num_params; ++j)
                assert_true(m.params[j].value.base >= path && m.params[j].value.base + m.params[j].value.len <= path + len);
            assert_non_null(m.tpl);
            assert_true(m.path.base == path && m.path.len == len);
        } else {
            assert_null(m.route);
            assert_int_equal(m.num_params, 0);
            if (m.allowed != c->allowed)
                fail_msg("case %zu %s: allowed 0x%x, expected 0x%x", i, c->path, m.allowed, c->allowed);
        }
        free(path);
    }
}

static void test_get_param(void **state)
{
    est_match_t m;
    const char *p = "/g/one/two%20/3";
    assert_int_equal(est_router_match(router, p, strlen(p), PATCH, &m), FOUND);
    const h2o_iovec_t *v = est_match_get_param(&m, "b", 1);
    assert_non_null(v);
    assert_int_equal(v->len, 6);
    assert_memory_equal(v->base, "two%20", 6);
    assert_null(est_match_get_param(&m, "d", 1));
    assert_null(est_match_get_param(&m, "bb", 2));
}

/*
 * Matching on a const router allocates nothing: malloc & co. are interposed here and counted
 * (glibc's __libc_* do the work). ASan brings its own allocator, so there the check only runs
 * the loop.
 */
#if !defined(__SANITIZE_ADDRESS__)
#define COUNT_ALLOCS 1
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
static volatile int counting;
static volatile size_t alloc_calls;
void *malloc(size_t n)
{
    if (counting)
        ++alloc_calls;
    return __libc_malloc(n);
}
void *calloc(size_t a, size_t b)
{
    if (counting)
        ++alloc_calls;
    return __libc_calloc(a, b);
}
void *realloc(void *p, size_t n)
{
    if (counting)
        ++alloc_calls;
    return __libc_realloc(p, n);
}
#endif

static void test_match_does_not_allocate(void **state)
{
    const est_router_t *r = router;
    est_match_t m;
    size_t i, j;
    unsigned found = 0;

#ifdef COUNT_ALLOCS
    /* the counter works */
    counting = 1;
    free(malloc(16));
    counting = 0;
    assert_int_equal(alloc_calls, 1);
    alloc_calls = 0;
    counting = 1;
#endif
    for (i = 0; i != 1000; ++i) {
        for (j = 0; j != sizeof(match_cases) / sizeof(match_cases[0]); ++j)
            found += est_router_match(r, match_cases[j].path, strlen(match_cases[j].path), match_cases[j].method, &m) == FOUND;
    }
#ifdef COUNT_ALLOCS
    counting = 0;
    assert_int_equal(alloc_calls, 0);
#endif
    assert_true(found > 0);
}

/* a long, deep path on a deep config: no recursion by path length */
static void test_match_long_path(void **state)
{
    size_t len = 100000, i;
    char *p = malloc(len);
    for (i = 0; i != len; ++i)
        p[i] = i % 2 == 0 ? '/' : 'q';
    est_match_t m;
    assert_int_equal(est_router_match(router, p, len, GET, &m), NF);
    memcpy(p, "/a/", 3);
    assert_int_equal(est_router_match(router, p, len, GET, &m), FOUND);
    assert_int_equal(m.route_index, 2);
    assert_int_equal(m.params[0].value.len, len - 3);
    free(p);
}

struct create_err_case {
    const char *route_path;
    const char *backend_path;
    const char *msg_part;
};

static const struct create_err_case create_err_cases[] = {
    {"/a/{x", NULL, "unclosed"},
    {"no-slash", NULL, "start with '/'"},
    {"/a/{x}", "/b/{x", "backend path"},
    {"/a/{x}/{x}", NULL, "duplicate"},
};

static void test_create_errors(void **state)
{
    size_t i;
    for (i = 0; i != sizeof(create_err_cases) / sizeof(create_err_cases[0]); ++i) {
        est_route_conf_t rc[2];
        est_backend_conf_t be;
        char err[256] = "";
        memset(rc, 0, sizeof(rc));
        memset(&be, 0, sizeof(be));
        rc[0].path = "/ok";
        rc[0].methods = GET;
        rc[1].path = (char *)create_err_cases[i].route_path;
        rc[1].methods = GET;
        if (create_err_cases[i].backend_path != NULL) {
            be.path = (char *)create_err_cases[i].backend_path;
            rc[1].proxy = &be;
        }
        est_router_t *r = est_router_create(rc, 2, err, sizeof(err));
        if (r != NULL)
            fail_msg("case %zu: created", i);
        if (strstr(err, create_err_cases[i].msg_part) == NULL)
            fail_msg("case %zu: message '%s' lacks '%s'", i, err, create_err_cases[i].msg_part);
    }
    /* too many parameters */
    char big[EST_ROUTER_MAX_PARAMS * 8 + 16] = "", err[256] = "";
    for (i = 0; i <= EST_ROUTER_MAX_PARAMS; ++i)
        snprintf(big + strlen(big), sizeof(big) - strlen(big), "/{p%zu}", i);
    est_route_conf_t rc = {.path = big, .methods = GET};
    assert_null(est_router_create(&rc, 1, err, sizeof(err)));
    assert_non_null(strstr(err, "more than"));
    /* an empty router matches nothing */
    est_router_t *r = est_router_create(NULL, 0, err, sizeof(err));
    assert_non_null(r);
    est_match_t m;
    assert_int_equal(est_router_match(r, "/", 1, GET, &m), NF);
    est_router_destroy(r);
    est_router_destroy(NULL);
}

/* expansion: one proxy route per case */
struct expand_case {
    const char *route;
    const char *backend; /* NULL: no backend path, the request path is forwarded */
    const char *path;
    const char *query;
    const char *expect; /* NULL: -1 expected */
};

static const struct expand_case expand_cases[] = {
    {"/gateway/{user_id}/{order_id}", "/users/{user_id}", "/gateway/42/7", "", "/users/42"},
    {"/gateway/{user_id}/{order_id}", "/users/{user_id}", "/gateway/42/7", "a=1&b=2", "/users/42?a=1&b=2"},
    {"/gateway/{user_id}/{order_id}", "/orders/{order_id}?user={user_id}", "/gateway/42/7", "", "/orders/7?user=42"},
    {"/gateway/{user_id}/{order_id}", "/orders/{order_id}?user={user_id}", "/gateway/42/7", "x=1", "/orders/7?user=42&x=1"},
    {"/s/{q}", "/search?q={q}", "/s/foo", "x=1", "/search?q=foo&x=1"},
    {"/s/{q}", "/search?q={q}", "/s/a&b=c+d", "", "/search?q=a%26b=c%2Bd"}, /* no query injection */
    {"/s/{q}", "/p/{q}/x", "/s/a&b=c+d", "", "/p/a&b=c+d/x"},               /* path part: unchanged */
    {"/api/{rest...}", "/v2/{rest...}", "/api/a/b%2Fc", "z=%20", "/v2/a/b%2Fc?z=%20"},
    {"/api/{rest...}", "/v2/{rest...}", "/api/", "", "/v2/"},
    {"/api/{rest...}", "/v2/{rest...}", "/api/", "q", "/v2/?q"},
    {"/api/{rest...}", "/{rest...}", "/api/x/", "", "/x/"},
    {"/u/{id}", "/users/{id}/profile", "/u/caf%C3%A9", "", "/users/caf%C3%A9/profile"},
    {"/u/{id}", "/users/{id}", "/u/%252F", "", "/users/%252F"}, /* not decoded, not re-encoded */
    {"/u/{id}", "/search?", "/u/1", "q=1", "/search?q=1"},
    {"/u/{id}", "/x?a=1&", "/u/1", "b=2", "/x?a=1&b=2"},
    {"/u/{id}", "/x/{id}/{id}", "/u/7", "", "/x/7/7"},
    {"/u/{id}", "/static", "/u/7", "k=v", "/static?k=v"},
    {"/u/{id}", NULL, "/u/1", "q=2", "/u/1?q=2"},
    {"/u/{id}", NULL, "/u/1", "", "/u/1"},
    {"/u/{id}", "/x/{nope}", "/u/1", "", NULL},
    /* a value's '&' in the query goes out as %26: the client's query still gets its '&' */
    {"/u/{id}", "/s?x={id}", "/u/a&", "k=v", "/s?x=a%26&k=v"},
};

static void test_expand_table(void **state)
{
    size_t i;
    h2o_mem_pool_t pool;
    h2o_mem_init_pool(&pool);
    for (i = 0; i != sizeof(expand_cases) / sizeof(expand_cases[0]); ++i) {
        const struct expand_case *c = expand_cases + i;
        est_route_conf_t rc;
        est_backend_conf_t be;
        char err[256];
        memset(&rc, 0, sizeof(rc));
        memset(&be, 0, sizeof(be));
        rc.path = (char *)c->route;
        rc.methods = GET;
        be.path = (char *)c->backend;
        rc.proxy = &be;
        est_router_t *r = est_router_create(&rc, 1, err, sizeof(err));
        if (r == NULL)
            fail_msg("case %zu: create: %s", i, err);
        const est_template_t *tpl = est_router_backend_template(r, 0, 0);
        assert_true((tpl == NULL) == (c->backend == NULL));
        est_match_t m;
        if (est_router_match(r, c->path, strlen(c->path), GET, &m) != FOUND)
            fail_msg("case %zu: %s does not match %s", i, c->path, c->route);
        h2o_iovec_t out = {NULL, 0};
        int rc2 = est_template_expand(tpl, &m, &pool, h2o_iovec_init(c->query, strlen(c->query)), &out);
        if (c->expect == NULL) {
            if (rc2 != -1)
                fail_msg("case %zu: expanded to '%.*s', expected -1", i, (int)out.len, out.base);
        } else {
            if (rc2 != 0)
                fail_msg("case %zu: -1, expected '%s'", i, c->expect);
            if (out.len != strlen(c->expect) || memcmp(out.base, c->expect, out.len) != 0)
                fail_msg("case %zu: '%.*s', expected '%s'", i, (int)out.len, out.base, c->expect);
            assert_int_equal(out.base[out.len], '\0');
        }
        est_router_destroy(r);
    }
    h2o_mem_clear_pool(&pool);
}

/* aggregating routes: one template per backend, NULL where a backend has no path */
static void test_backend_templates(void **state)
{
    est_backend_conf_t be[3];
    est_route_conf_t rc;
    char err[256];
    memset(be, 0, sizeof(be));
    memset(&rc, 0, sizeof(rc));
    be[0].path = "/users/{id}";
    be[2].path = "/orders?user={id}";
    rc.path = "/p/{id}";
    rc.methods = GET;
    rc.backends = be;
    rc.num_backends = 3;
    est_router_t *r = est_router_create(&rc, 1, err, sizeof(err));
    assert_non_null(r);
    const est_template_t *t0 = est_router_backend_template(r, 0, 0);
    assert_non_null(t0);
    assert_int_equal(t0->is_route, 0);
    assert_int_equal(t0->num_pieces, 2);
    assert_null(est_router_backend_template(r, 0, 1));
    assert_non_null(est_router_backend_template(r, 0, 2));
    assert_null(est_router_backend_template(r, 0, 3));
    assert_null(est_router_backend_template(r, 1, 0));

    h2o_mem_pool_t pool;
    h2o_mem_init_pool(&pool);
    est_match_t m;
    h2o_iovec_t out;
    assert_int_equal(est_router_match(r, "/p/9", 4, HEAD, &m), FOUND);
    assert_int_equal(est_template_expand(est_router_backend_template(r, 0, 2), &m, &pool, h2o_iovec_init("a=b", 3), &out), 0);
    assert_int_equal(out.len, strlen("/orders?user=9&a=b"));
    assert_memory_equal(out.base, "/orders?user=9&a=b", out.len);
    h2o_mem_clear_pool(&pool);
    est_router_destroy(r);
}

/* ---- dependent backends: {GROUP.path} references ---------------------------------------- */

/* the lookup of the tests: backend index -> a table of "path=value" (NULL value: unusable) */
struct lookup_entry {
    size_t backend;
    const char *path, *value;
    size_t value_len; /* 0: strlen(value) */
};

struct lookup_state {
    const struct lookup_entry *entries;
    size_t n, calls;
};

static int test_lookup(void *data, size_t backend, const char *path, size_t pathlen, h2o_iovec_t *text)
{
    struct lookup_state *st = data;
    st->calls++;
    for (size_t i = 0; i != st->n; ++i) {
        const struct lookup_entry *e = st->entries + i;
        if (e->backend == backend && strlen(e->path) == pathlen && memcmp(e->path, path, pathlen) == 0) {
            if (e->value == NULL)
                return -1;
            *text = h2o_iovec_init(e->value, e->value_len ? e->value_len : strlen(e->value));
            return 0;
        }
    }
    return -1;
}

static const struct lookup_entry lookup_table[] = {
    {0, "id", "42", 0},
    {0, "user.last_order_id", "o-7", 0},
    {0, "slash", "a/b?c#d%e&f=g+h", 0},
    {0, "space", "x y", 0},
    {0, "big", "12345678901234567890", 0},
    {0, "real", "1e+400", 0},
    {0, "dot", ".", 0},
    {0, "dotdot", "..", 0},
    {0, "empty", "", 0},
    {0, "utf8", "caf\xc3\xa9", 0},
    {0, "token", "abc.def", 0},
    {0, "crlf", "a\r\nX-Evil: 1", 0},
    {0, "nul", "a\0b", 3},
    {0, "null", NULL, 0},
    {1, "n", "7", 0},
};

struct refs_case {
    const char *backend; /* backends[2].path; backends[0] is group "a", [1] group "b" */
    const char *path, *query;
    const char *expect; /* NULL: EST_TEMPLATE_NO_VALUE */
};

static const struct refs_case refs_cases[] = {
    {"/orders/{a.user.last_order_id}", "/g/1", "", "/orders/o-7"},
    {"/o/{a.id}/{b.n}", "/g/1", "q=1", "/o/42/7?q=1"},
    {"/o/{a.slash}", "/g/1", "", "/o/a%2Fb%3Fc%23d%25e%26f%3Dg%2Bh"},
    {"/o?x={a.slash}", "/g/1", "k=v", "/o?x=a%2Fb%3Fc%23d%25e%26f%3Dg%2Bh&k=v"},
    {"/o/{a.space}", "/g/1", "", "/o/x%20y"},
    {"/o/{a.big}", "/g/1", "", "/o/12345678901234567890"},
    {"/o/{a.real}", "/g/1", "", "/o/1e%2B400"},
    {"/o/{a.utf8}", "/g/1", "", "/o/caf%C3%A9"},
    {"/o/{id}/{a.token}", "/g/x%2Fy", "", "/o/x%2Fy/abc.def"},
    {"/o/{a.nul}", "/g/1", "", "/o/a%00b"},
    /* as a path segment "", "." and ".." would name another resource; in the query they are data */
    {"/o/{a.dot}", "/g/1", "", NULL},
    {"/o/{a.dotdot}/x", "/g/1", "", NULL},
    {"/o/{a.empty}", "/g/1", "", NULL},
    {"/o?e={a.empty}&d={a.dotdot}", "/g/1", "", "/o?e=&d=.."},
    /* missing or unusable */
    {"/o/{a.missing}", "/g/1", "", NULL},
    {"/o/{a.null}", "/g/1", "", NULL},
    {"/o/{b.id}", "/g/1", "", NULL},
};

static est_router_t *dep_router(est_backend_conf_t be[3], est_route_conf_t *rc, const char *path2)
{
    char err[256];
    memset(be, 0, 3 * sizeof(*be));
    memset(rc, 0, sizeof(*rc));
    be[0].path = "/a";
    be[0].group = "a";
    be[1].path = "/b/{a.id}";
    be[1].group = "b";
    be[2].path = (char *)path2;
    rc->path = "/g/{id}";
    rc->methods = GET;
    rc->backends = be;
    rc->num_backends = 3;
    est_router_t *r = est_router_create(rc, 1, err, sizeof(err));
    if (r == NULL)
        fail_msg("create: %s", err);
    return r;
}

static void test_expand_refs(void **state)
{
    h2o_mem_pool_t pool;
    h2o_mem_init_pool(&pool);
    for (size_t i = 0; i != sizeof(refs_cases) / sizeof(refs_cases[0]); ++i) {
        const struct refs_case *c = refs_cases + i;
        est_backend_conf_t be[3];
        est_route_conf_t rc;
        est_router_t *r = dep_router(be, &rc, c->backend);
        est_match_t m;
        assert_int_equal(est_router_match(r, c->path, strlen(c->path), GET, &m), FOUND);
        const est_template_t *tpl = est_router_backend_template(r, 0, 2);
        assert_non_null(tpl);
        struct lookup_state st = {lookup_table, sizeof(lookup_table) / sizeof(lookup_table[0]), 0};
        h2o_iovec_t out = {NULL, 0};
        int rc2 = est_template_expand_refs(tpl, &m, test_lookup, &st, &pool, h2o_iovec_init(c->query, strlen(c->query)), &out);
        if (c->expect == NULL) {
            if (rc2 != EST_TEMPLATE_NO_VALUE)
                fail_msg("case %zu '%s': %d '%.*s', expected no value", i, c->backend, rc2, (int)out.len, out.base);
        } else {
            if (rc2 != 0)
                fail_msg("case %zu '%s': %d, expected '%s'", i, c->backend, rc2, c->expect);
            if (out.len != strlen(c->expect) || memcmp(out.base, c->expect, out.len) != 0)
                fail_msg("case %zu: '%.*s', expected '%s'", i, (int)out.len, out.base, c->expect);
            assert_int_equal(out.base[out.len], '\0');
            assert_int_equal(st.calls, tpl->num_groups); /* each reference looked up once */
        }
        /* the plain expansion never expands a group reference */
        assert_int_equal(est_template_expand(tpl, &m, &pool, h2o_iovec_init(NULL, 0), &out), -1);
        /* without a lookup a reference has no value */
        assert_int_equal(est_template_expand_refs(tpl, &m, NULL, NULL, &pool, h2o_iovec_init(NULL, 0), &out),
                         EST_TEMPLATE_NO_VALUE);
        est_router_destroy(r);
    }
    /* bound to the backend of the group: b's {a.id} names backend 0 */
    est_backend_conf_t be[3];
    est_route_conf_t rc;
    est_router_t *r = dep_router(be, &rc, "/c/{b.n}");
    assert_int_equal(est_router_backend_template(r, 0, 1)->pieces[1].backend, 0);
    assert_int_equal(est_router_backend_template(r, 0, 2)->pieces[1].backend, 1);
    /* a template without references expands as est_template_expand does */
    est_match_t m;
    h2o_iovec_t out;
    assert_int_equal(est_router_match(r, "/g/5", 4, GET, &m), FOUND);
    assert_int_equal(est_template_expand_refs(NULL, &m, NULL, NULL, &pool, h2o_iovec_init("q", 1), &out), 0);
    assert_int_equal(out.len, 6);
    assert_memory_equal(out.base, "/g/5?q", 6);
    est_router_destroy(r);
    h2o_mem_clear_pool(&pool);
}

struct value_case {
    const char *tpl;
    const char *expect; /* NULL: EST_TEMPLATE_NO_VALUE */
};

static const struct value_case value_cases[] = {
    {"Bearer {a.token}", "Bearer abc.def"},
    {"{id}:{a.slash} {b.n}", "9:a/b?c#d%e&f=g+h 7"},
    {"{a.big}", "12345678901234567890"},
    {"{a.empty}", ""},
    {"static", "static"},
    {"x {a.crlf}", NULL},
    {"{a.nul}", NULL},
    {"{a.null}", NULL},
    {"{a.missing}", NULL},
};

static void test_expand_value(void **state)
{
    h2o_mem_pool_t pool;
    h2o_mem_init_pool(&pool);
    for (size_t i = 0; i != sizeof(value_cases) / sizeof(value_cases[0]); ++i) {
        const struct value_case *c = value_cases + i;
        est_backend_conf_t be[3];
        est_route_conf_t rc;
        est_header_tpl_conf_t hdr = {"x-h", (char *)c->tpl};
        char err[256];
        memset(be, 0, sizeof(be));
        memset(&rc, 0, sizeof(rc));
        be[0].group = "a";
        be[1].group = "b";
        be[2].headers = &hdr;
        be[2].num_headers = 1;
        rc.path = "/g/{id}";
        rc.methods = GET;
        rc.backends = be;
        rc.num_backends = 3;
        est_router_t *r = est_router_create(&rc, 1, err, sizeof(err));
        if (r == NULL)
            fail_msg("case %zu: create: %s", i, err);
        assert_null(est_router_header_template(r, 0, 2, 1));
        assert_null(est_router_header_template(r, 0, 1, 0));
        const est_template_t *tpl = est_router_header_template(r, 0, 2, 0);
        assert_non_null(tpl);
        est_match_t m;
        assert_int_equal(est_router_match(r, "/g/9", 4, GET, &m), FOUND);
        struct lookup_state st = {lookup_table, sizeof(lookup_table) / sizeof(lookup_table[0]), 0};
        h2o_iovec_t out = {NULL, 0};
        int rc2 = est_template_expand_value(tpl, &m, test_lookup, &st, &pool, &out);
        if (c->expect == NULL) {
            if (rc2 != EST_TEMPLATE_NO_VALUE)
                fail_msg("case %zu '%s': %d, expected no value", i, c->tpl, rc2);
        } else if (rc2 != 0 || out.len != strlen(c->expect) || memcmp(out.base, c->expect, out.len) != 0) {
            fail_msg("case %zu '%s': %d '%.*s', expected '%s'", i, c->tpl, rc2, (int)out.len, out.base, c->expect);
        }
        est_router_destroy(r);
    }
    h2o_mem_clear_pool(&pool);
}

/* an expanded header value is bounded */
static void test_expand_value_bound(void **state)
{
    static char big[EST_TEMPLATE_MAX_VALUE + 1];
    memset(big, 'v', sizeof(big));
    struct lookup_entry entries[] = {{0, "v", big, EST_TEMPLATE_MAX_VALUE}, {0, "w", big, EST_TEMPLATE_MAX_VALUE + 1}};
    h2o_mem_pool_t pool;
    h2o_mem_init_pool(&pool);
    est_template_t t;
    est_match_t m;
    memset(&m, 0, sizeof(m));
    h2o_iovec_t out;
    struct lookup_state st = {entries, 2, 0};
    assert_int_equal(est_template_parse_value(&t, "{a.v}", NULL, 0, NULL), 0);
    assert_int_equal(est_template_expand_value(&t, &m, test_lookup, &st, &pool, &out), 0);
    assert_int_equal(out.len, EST_TEMPLATE_MAX_VALUE);
    est_template_dispose(&t);
    assert_int_equal(est_template_parse_value(&t, "x{a.v}", NULL, 0, NULL), 0);
    assert_int_equal(est_template_expand_value(&t, &m, test_lookup, &st, &pool, &out), EST_TEMPLATE_NO_VALUE);
    est_template_dispose(&t);
    assert_int_equal(est_template_parse_value(&t, "{a.w}", NULL, 0, NULL), 0);
    assert_int_equal(est_template_expand_value(&t, &m, test_lookup, &st, &pool, &out), EST_TEMPLATE_NO_VALUE);
    est_template_dispose(&t);
    h2o_mem_clear_pool(&pool);
}

/* references the router cannot bind (the config validator reports these first) */
static void test_bind_errors(void **state)
{
    const char *paths[] = {"/x/{a.id}", "/x/{c.id}", "/x/{nope.id}"};
    for (size_t i = 0; i != 3; ++i) {
        est_backend_conf_t be[2];
        est_route_conf_t rc;
        char err[256] = "";
        memset(be, 0, sizeof(be));
        memset(&rc, 0, sizeof(rc));
        be[0].path = (char *)paths[i]; /* the first backend: nothing before it */
        be[0].group = "a";
        be[1].path = "/y";
        be[1].group = "c";
        rc.path = "/g";
        rc.methods = GET;
        rc.backends = be;
        rc.num_backends = 2;
        assert_null(est_router_create(&rc, 1, err, sizeof(err)));
        assert_non_null(strstr(err, "names no earlier backend's group"));
    }
    /* a proxy has no groups, and no headers */
    est_backend_conf_t be;
    est_route_conf_t rc;
    est_header_tpl_conf_t hdr = {"x", "1"};
    char err[256] = "";
    memset(&be, 0, sizeof(be));
    memset(&rc, 0, sizeof(rc));
    be.path = "/x/{a.id}";
    rc.path = "/g";
    rc.methods = GET;
    rc.proxy = &be;
    assert_null(est_router_create(&rc, 1, err, sizeof(err)));
    be.path = "/x";
    be.headers = &hdr;
    be.num_headers = 1;
    assert_null(est_router_create(&rc, 1, err, sizeof(err)));
    assert_non_null(strstr(err, "proxy cannot set request headers"));
}

/* many routes under one node: built without scanning the node's edges once per route */
static void test_many_routes(void **state)
{
    enum { N = 40000 };
    est_route_conf_t *rc = calloc(N, sizeof(*rc));
    char (*paths)[32] = calloc(N, sizeof(*paths));
    char err[256];
    assert_non_null(rc);
    assert_non_null(paths);
    for (size_t i = 0; i != N; ++i) {
        snprintf(paths[i], sizeof(paths[i]), "/api/r%zu/{id}", i);
        rc[i].index = i;
        rc[i].path = paths[i];
        rc[i].methods = GET;
    }
    clock_t start = clock();
    est_router_t *r = est_router_create(rc, N, err, sizeof(err));
    double took = (double)(clock() - start) / CLOCKS_PER_SEC;
    assert_non_null(r);
    if (took > 1.0)
        fail_msg("building %d routes took %.2fs of CPU", N, took);
    est_match_t m;
    assert_int_equal(est_router_match(r, "/api/r39999/7", 13, GET, &m), FOUND);
    assert_int_equal(m.route_index, 39999);
    assert_int_equal(est_router_match(r, "/api/r0/x", 9, GET, &m), FOUND);
    assert_int_equal(m.route_index, 0);
    assert_int_equal(est_router_match(r, "/api/r40000/x", 13, GET, &m), NF);
    est_router_destroy(r);
    free(paths);
    free(rc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_match_table, setup, teardown),
        cmocka_unit_test_setup_teardown(test_get_param, setup, teardown),
        cmocka_unit_test_setup_teardown(test_match_does_not_allocate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_match_long_path, setup, teardown),
        cmocka_unit_test(test_create_errors),
        cmocka_unit_test(test_expand_table),
        cmocka_unit_test(test_backend_templates),
        cmocka_unit_test(test_expand_refs),
        cmocka_unit_test(test_expand_value),
        cmocka_unit_test(test_expand_value_bound),
        cmocka_unit_test(test_bind_errors),
        cmocka_unit_test(test_many_routes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

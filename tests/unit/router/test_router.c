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
        cmocka_unit_test(test_many_routes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * Unit tests: which request bodies stream (proxy/proxy.h, est_proxy_body_policy). A body
 * streams only for a request the handler will give to a proxy route, matched the same way
 * (normalized path without the query, case-sensitive method), under that route's own
 * max_request_body; everything else is buffered.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "proxy/proxy.h"

static const char CONFIG_TEXT[] =
    "{\"max_request_body\": \"1MiB\","
    " \"upstreams\": {\"u\": {\"targets\": [\"http://127.0.0.1:8001\"]}},"
    " \"routes\": ["
    "  {\"path\": \"/p/{rest...}\", \"methods\": [\"GET\", \"POST\"], \"max_request_body\": \"5KiB\","
    "   \"proxy\": {\"upstream\": \"u\"}},"
    "  {\"path\": \"/q\", \"methods\": [\"PUT\"], \"proxy\": {\"upstream\": \"u\"}},"
    "  {\"path\": \"/agg\", \"methods\": [\"POST\"], \"backends\": [{\"upstream\": \"u\", \"path\": \"/x\"}]}"
    " ]}";

typedef struct {
    est_config_t *conf;
    est_router_t *router;
} fixture_t;

static int setup(void **state)
{
    static fixture_t f;
    est_errors_t errs = {0};
    f.conf = est_config_load_buffer("t.json", CONFIG_TEXT, sizeof(CONFIG_TEXT) - 1, &errs);
    for (size_t i = 0; i < errs.count; i++)
        print_error("unexpected: %s\n", errs.items[i]);
    est_errors_clear(&errs);
    if (f.conf == NULL)
        return -1;
    char err[256];
    if ((f.router = est_router_create(f.conf->routes, f.conf->num_routes, err, sizeof(err))) == NULL) {
        print_error("router: %s\n", err);
        return -1;
    }
    *state = &f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    est_router_destroy(f->router);
    est_config_free(f->conf);
    return 0;
}

/* est_proxy_body_policy on a request head `method` `path`; *max_body keeps 7 when not set */
static int policy(const est_router_t *router, const char *method, const char *path, uint64_t *max_body)
{
    h2o_req_t req;
    memset(&req, 0, sizeof(req));
    h2o_mem_init_pool(&req.pool);
    req.input.method = h2o_iovec_init(method, strlen(method));
    req.input.path = h2o_iovec_init(path, strlen(path));
    *max_body = 7;
    int r = est_proxy_body_policy(router, &req, max_body);
    h2o_mem_clear_pool(&req.pool);
    return r;
}

static void test_proxy_route_streams_with_its_limit(void **state)
{
    fixture_t *f = *state;
    uint64_t max;
    assert_int_equal(policy(f->router, "POST", "/p/a/b", &max), 1);
    assert_int_equal(max, 5 * 1024);
    assert_int_equal(policy(f->router, "POST", "/p/a?x=/agg", &max), 1); /* the query is no part of the match */
    assert_int_equal(max, 5 * 1024);
    assert_int_equal(policy(f->router, "PUT", "/q", &max), 1);
    assert_int_equal(max, 1024 * 1024);                                /* the top-level limit */
    assert_int_equal(policy(f->router, "POST", "/x/../p/c", &max), 1); /* matched after normalization */
}

static void test_everything_else_is_buffered(void **state)
{
    fixture_t *f = *state;
    uint64_t max;
    assert_int_equal(policy(f->router, "POST", "/agg", &max), 0); /* an aggregate route */
    assert_int_equal(max, 7);
    assert_int_equal(policy(f->router, "POST", "/none", &max), 0);  /* no route */
    assert_int_equal(policy(f->router, "DELETE", "/p/a", &max), 0); /* method not allowed */
    assert_int_equal(policy(f->router, "post", "/p/a", &max), 0);   /* methods are case-sensitive */
    assert_int_equal(policy(NULL, "POST", "/p/a", &max), 0);        /* no router yet */
    assert_int_equal(max, 7);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_proxy_route_streams_with_its_limit),
        cmocka_unit_test(test_everything_else_is_buffered),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

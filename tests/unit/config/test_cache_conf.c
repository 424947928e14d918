/*
 * Unit tests: the response cache's config (SPEC "Caching, coalescing and hedging"): the
 * top-level "cache" limits and their defaults, a route's "cache" and "coalesce", and every
 * malformed value with its FILE:LINE:COLUMN.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "helpers.h"

#define F "t.json"

#define UP "\"upstreams\": {\"u\": {\"targets\": [\"http://127.0.0.1:1\"]}}"

static void test_defaults(void **state)
{
    (void)state;
    est_config_t *c = load_ok(F, "{" UP ", \"routes\": [{\"path\": \"/a\", \"proxy\": {\"upstream\": \"u\"}}]}");
    assert_non_null(c);
    assert_int_equal(c->cache_max_size, 256u << 20);
    assert_int_equal(c->cache_max_entry, 8u << 20);
    assert_null(c->routes[0].cache);
    assert_int_equal(c->routes[0].coalesce, 0);
    est_config_free(c);
}

static void test_values(void **state)
{
    (void)state;
    est_config_t *c = load_ok(F, "{" UP ", \"cache\": {\"max_size\": \"1MiB\", \"max_entry\": \"64KiB\"}, \"routes\": ["
                                 "{\"path\": \"/a\", \"proxy\": {\"upstream\": \"u\"}, \"cache\": {\"ttl\": \"30s\", "
                                 "\"stale_while_revalidate\": \"5s\", \"stale_if_error\": \"1m\", \"vary\": [\"Accept-Language\", "
                                 "\"X-Tenant\"], \"shared\": true}},"
                                 "{\"path\": \"/b\", \"proxy\": {\"upstream\": \"u\"}, \"coalesce\": true},"
                                 "{\"path\": \"/c\", \"proxy\": {\"upstream\": \"u\"}, \"cache\": {}}]}");
    assert_non_null(c);
    assert_int_equal(c->cache_max_size, 1u << 20);
    assert_int_equal(c->cache_max_entry, 64u << 10);
    est_route_cache_conf_t *rc = c->routes[0].cache;
    assert_non_null(rc);
    assert_int_equal(rc->ttl_ms, 30000);
    assert_int_equal(rc->stale_while_revalidate_ms, 5000);
    assert_int_equal(rc->stale_if_error_ms, 60000);
    assert_int_equal(rc->num_vary, 2);
    assert_string_equal(rc->vary[0], "accept-language"); /* lower-cased: compared as key bytes */
    assert_string_equal(rc->vary[1], "x-tenant");
    assert_int_equal(rc->shared, 1);
    assert_int_equal(c->routes[0].coalesce, 1); /* implied by "cache" */
    assert_null(c->routes[1].cache);
    assert_int_equal(c->routes[1].coalesce, 1);
    rc = c->routes[2].cache;
    assert_non_null(rc);
    assert_int_equal(rc->ttl_ms, 0);
    assert_int_equal(rc->num_vary, 0);
    assert_int_equal(rc->shared, 0);
    est_config_free(c);
}

/* aggregating routes take "cache" and "coalesce" like proxy routes (they store only complete replies) */
static void test_aggregating(void **state)
{
    (void)state;
    est_config_t *c = load_ok(F,
                              "{" UP ", \"routes\": ["
                              "{\"path\": \"/a\", \"backends\": [{\"upstream\": \"u\", \"path\": \"/x\"}], "
                              "\"cache\": {\"ttl\": \"10s\", \"stale_if_error\": \"1m\", \"vary\": [\"X-Tenant\"]}},"
                              "{\"path\": \"/b\", \"backends\": [{\"upstream\": \"u\", \"path\": \"/y\"}], \"coalesce\": true}]}");
    assert_non_null(c);
    est_route_cache_conf_t *rc = c->routes[0].cache;
    assert_non_null(rc);
    assert_int_equal(rc->ttl_ms, 10000);
    assert_int_equal(rc->stale_if_error_ms, 60000);
    assert_int_equal(rc->num_vary, 1);
    assert_string_equal(rc->vary[0], "x-tenant");
    assert_int_equal(c->routes[0].coalesce, 1);
    assert_null(c->routes[1].cache);
    assert_int_equal(c->routes[1].coalesce, 1);
    est_config_free(c);
}

static const bad_case_t bad[] = {
    {"cache not an object",
     "{\"cache\": 1}",
     {F ":1:11: cache: expected an object such as {\"max_size\": \"256MiB\", "
        "\"max_entry\": \"8MiB\"}, got an integer"}},
    {"cache unknown key",
     "{\"cache\": {\"max_sise\": \"1MiB\"}}",
     {F ":1:12: unknown key \"max_sise\" in cache (did you mean \"max_size\"?)"}},
    {"cache zero size",
     "{\"cache\": {\"max_size\": \"0\"}}",
     {F ":1:24: cache.max_size: must be more than 0 (leave \"cache\" out of the routes to cache nothing)"}},
    {"max_entry over max_size",
     "{\"cache\": {\"max_size\": \"1KiB\",\n \"max_entry\": \"2KiB\"}}",
     {F ":2:15: cache.max_entry: must not exceed max_size (1024 bytes)"}},
    {"bad size",
     "{\"cache\": {\"max_size\": \"lots\"}}",
     {F ":1:24: cache.max_size: bad size \"lots\" (use bytes, or e.g. \"512KiB\", \"8MiB\", \"1GiB\")"}},
    {"route cache not an object",
     "{" UP ", \"routes\": [{\"path\": \"/a\", \"proxy\": {\"upstream\": \"u\"},\n \"cache\": true}]}",
     {F ":2:11: routes[0].cache: expected an object such as {\"ttl\": \"30s\"}, got a boolean"}},
    {"route cache unknown key",
     "{" UP ", \"routes\": [{\"path\": \"/a\", \"proxy\": {\"upstream\": \"u\"},\n \"cache\": {\"tll\": \"1s\"}}]}",
     {F ":2:12: unknown key \"tll\" in routes[0].cache (did you mean \"ttl\"?)"}},
    {"route ttl bad",
     "{" UP ", \"routes\": [{\"path\": \"/a\", \"proxy\": {\"upstream\": \"u\"},\n \"cache\": {\"ttl\": \"soon\"}}]}",
     {F ":2:19: routes[0].cache.ttl: bad duration \"soon\" (use e.g. \"250ms\", \"5s\", \"1m30s\")"}},
    {"vary not array",
     "{" UP ", \"routes\": [{\"path\": \"/a\", \"proxy\": {\"upstream\": \"u\"},\n \"cache\": {\"vary\": \"Accept\"}}]}",
     {F ":2:20: routes[0].cache.vary: expected an array of request header names such as [\"Accept-Language\"], got a string"}},
    {"vary bad name",
     "{" UP
     ", \"routes\": [{\"path\": \"/a\", \"proxy\": {\"upstream\": \"u\"},\n \"cache\": {\"vary\": [\"Accept\", \"a b\", 3]}}]}",
     {F ":2:31: routes[0].cache.vary[1]: expected a header name such as \"Accept-Language\", got \"a b\"",
      F ":2:38: routes[0].cache.vary[2]: expected a header name such as \"Accept-Language\", got an integer"}},
    {"vary twice",
     "{" UP
     ", \"routes\": [{\"path\": \"/a\", \"proxy\": {\"upstream\": \"u\"},\n \"cache\": {\"vary\": [\"Accept\", \"accept\"]}}]}",
     {F ":2:31: routes[0].cache.vary[1]: \"accept\" is listed twice"}},
    {"shared not bool",
     "{" UP ", \"routes\": [{\"path\": \"/a\", \"proxy\": {\"upstream\": \"u\"},\n \"cache\": {\"shared\": \"yes\"}}]}",
     {F ":2:22: routes[0].cache.shared: expected true or false, got a string"}},
    {"coalesce not bool",
     "{" UP ", \"routes\": [{\"path\": \"/a\", \"proxy\": {\"upstream\": \"u\"},\n \"coalesce\": 1}]}",
     {F ":2:14: routes[0].coalesce: expected true or false, got an integer"}},
    {"websocket cached",
     "{" UP ", \"routes\": [{\"path\": \"/a\", \"proxy\": {\"upstream\": \"u\"}, \"websocket\": true,\n \"cache\": {}}]}",
     {F ":2:11: routes[0].cache: a route with \"websocket\": true cannot be cached"}},
    {"aggregating cache bad ttl",
     "{" UP
     ", \"routes\": [{\"path\": \"/a\", \"backends\": [{\"upstream\": \"u\", \"path\": \"/x\"}],\n \"cache\": {\"ttl\": \"x\"}}]}",
     {F ":2:19: routes[0].cache.ttl: bad duration \"x\" (use e.g. \"250ms\", \"5s\", \"1m30s\")"}},
};

static void test_bad(void **state)
{
    (void)state;
    run_bad_cases(F, bad, sizeof(bad) / sizeof(bad[0]));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_aggregating),
        cmocka_unit_test(test_bad),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

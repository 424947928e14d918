/*
 * Unit tests: dependent backends in the config (SPEC "Dependent backends"): a backend's
 * "headers", {GROUP.dot.path} references in its path and header values, the `deps` they give,
 * and every error with its exact "FILE:LINE:COLUMN: message".
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "helpers.h"

#define F "no-such-dir.est/d.json"
#define UPS "{\"upstreams\": {\"u\": {\"targets\": [\"http://u\"]}},\n"

/* a chain a -> b -> c beside an independent d; headers lower-cased, in file order */
static void test_deps_and_headers(void **state)
{
    (void)state;
    est_config_t *c = load_ok(F, UPS
                              " \"routes\": [{\"path\": \"/g/{id}\", \"backends\": [\n"
                              "  {\"upstream\": \"u\", \"path\": \"/a/{id}\", \"group\": \"a\"},\n"
                              "  {\"upstream\": \"u\", \"path\": \"/d\", \"group\": \"d\", \"headers\": {\"X-Static\": \"1\"}},\n"
                              "  {\"upstream\": \"u\", \"path\": \"/b/{a.user.id}?x={d.n}\", \"group\": \"b\",\n"
                              "   \"headers\": {\"Authorization\": \"Bearer {a.token}\", \"X-Id\": \"{id}-{a.x}\"}},\n"
                              "  {\"upstream\": \"u\", \"path\": \"/c/{b.id}/{a.id}/{b.id}\"}]}]}");
    const est_route_conf_t *r = &c->routes[0];
    assert_int_equal(r->num_backends, 4);
    assert_int_equal(r->backends[0].num_deps, 0);
    assert_int_equal(r->backends[0].num_headers, 0);
    assert_int_equal(r->backends[1].num_deps, 0);
    assert_int_equal(r->backends[1].num_headers, 1);
    assert_string_equal(r->backends[1].headers[0].name, "x-static");
    assert_string_equal(r->backends[1].headers[0].value, "1");
    assert_int_equal(r->backends[2].num_deps, 2);
    assert_int_equal(r->backends[2].deps[0], 0);
    assert_int_equal(r->backends[2].deps[1], 1);
    assert_int_equal(r->backends[2].num_headers, 2);
    assert_string_equal(r->backends[2].headers[0].name, "authorization");
    assert_string_equal(r->backends[2].headers[0].value, "Bearer {a.token}");
    assert_string_equal(r->backends[2].headers[1].name, "x-id");
    assert_string_equal(r->backends[2].headers[1].value, "{id}-{a.x}");
    /* sorted, unique: b named twice, a once */
    assert_int_equal(r->backends[3].num_deps, 2);
    assert_int_equal(r->backends[3].deps[0], 0);
    assert_int_equal(r->backends[3].deps[1], 2);
    est_config_free(c);
}

/* two earlier backends of one group: the reference binds the last of them */
static void test_group_clash_binds_last(void **state)
{
    (void)state;
    est_config_t *c = load_ok(F, UPS " \"routes\": [{\"path\": \"/g\", \"backends\": [\n"
                                     "  {\"upstream\": \"u\", \"path\": \"/1\", \"group\": \"a\"},\n"
                                     "  {\"upstream\": \"u\", \"path\": \"/2\", \"group\": \"a\"},\n"
                                     "  {\"upstream\": \"u\", \"path\": \"/3/{a.id}\"}]}]}");
    assert_int_equal(c->routes[0].backends[2].num_deps, 1);
    assert_int_equal(c->routes[0].backends[2].deps[0], 1);
    est_config_free(c);
}

static const bad_case_t bad_cases[] = {
    {"unknown group",
     UPS " \"routes\": [{\"path\": \"/g\", \"backends\": [\n"
         "  {\"upstream\": \"u\", \"path\": \"/a\", \"group\": \"user\"},\n"
         "  {\"upstream\": \"u\", \"path\": \"/o/{usr.id}\", \"headers\": {\"X-T\": \"t {nobody.x}\"}}]}]}",
     {F ":4:33: routes[0].backends[1].path: {usr.id}: no backend listed before this one has group \"usr\" (did you mean "
        "\"user\"?)",
      F ":4:66: routes[0].backends[1].headers.X-T: {nobody.x}: no backend listed before this one has group \"nobody\""}},
    {"own group and a later group (a cycle)",
     UPS " \"routes\": [{\"path\": \"/g\", \"backends\": [\n"
         "  {\"upstream\": \"u\", \"path\": \"/a/{b.id}\", \"group\": \"a\"},\n"
         "  {\"upstream\": \"u\", \"path\": \"/b/{a.id}\", \"group\": \"b\"},\n"
         "  {\"upstream\": \"u\", \"path\": \"/c\", \"group\": \"c\", \"headers\": {\"x-c\": \"{c.self}\"}}]}]}",
     {F ":3:33: routes[0].backends[0].path: {b.id}: group \"b\" belongs to a later backend (backends[1]); list that backend "
        "before this one (dependencies cannot form a cycle)",
      F ":5:69: routes[0].backends[2].headers.x-c: {c.self} names this backend's own group \"c\": a backend can only use the "
        "reply of a backend listed before it"}},
    {"group reference in a route path and a proxy",
     UPS " \"routes\": [{\"path\": \"/g/{a.b}\", \"backends\": [{\"upstream\": \"u\", \"path\": \"/a\"}]},\n"
         "  {\"path\": \"/p\", \"proxy\": {\"upstream\": \"u\", \"path\": \"/x/{a.id}\", \"headers\": {\"x\": \"1\"}}}]}",
     {F ":2:26: routes[0].path: bad path template \"/g/{a.b}\": {a.b} names a group: only a backend's path and headers can "
        "use an earlier backend's reply",
      F ":3:57: routes[1].proxy.path: {a.id}: a proxy has no groups to refer to; only the backends of an aggregating route "
        "can use an earlier backend's reply",
      F ":3:66: routes[1].proxy.headers: \"headers\" applies to the backends of an aggregating route, not to a proxy (which "
        "forwards the client's headers)"}},
    {"bad references",
     UPS " \"routes\": [{\"path\": \"/g\", \"backends\": [\n"
         "  {\"upstream\": \"u\", \"path\": \"/a\", \"group\": \"a\"},\n"
         "  {\"upstream\": \"u\", \"path\": \"/b/{a.}\", \"headers\": {\"x\": \"{.id}\", \"y\": \"{a..b}\", \"z\": \"{id}\"}}]}]}",
     {F ":4:36: routes[0].backends[1].path: bad path \"/b/{a.}\": empty field name in the group reference {a.}",
      F ":4:59: routes[0].backends[1].headers.x: bad header value \"{.id}\": empty group name in a {GROUP.field} reference",
      F ":4:75: routes[0].backends[1].headers.y: bad header value \"{a..b}\": empty field name in the group reference {a..b}",
      F ":4:87: routes[0].backends[1].headers.z: parameter {id} is not bound by the route path \"/g\""}},
    {"bad headers",
     UPS " \"routes\": [{\"path\": \"/g\", \"backends\": [\n"
         "  {\"upstream\": \"u\", \"path\": \"/a\", \"headers\": {\"Host\": \"h\", \"Connection\": \"x\", \"proxy-x\": \"1\",\n"
         "   \"Content-Length\": \"1\", \"Transfer-Encoding\": \"x\", \"a b\": \"1\", \"\": \"1\", \"n\": 1,\n"
         "   \"X-A\": \"1\", \"x-a\": \"2\", \"v\": \"a\\r\\nb\", \"z\": \"}\"}}]}]}",
     {F ":3:47: routes[0].backends[0].headers.Host: header \"Host\" is set by estuary (the target's authority, or the "
        "client's with \"preserve_host\"); a backend cannot set it",
      F ":3:60: routes[0].backends[0].headers.Connection: header \"Connection\" is a hop-by-hop header; a backend cannot set "
        "it",
      F ":3:79: routes[0].backends[0].headers.proxy-x: header \"proxy-x\" is a hop-by-hop header; a backend cannot set it",
      F ":4:4: routes[0].backends[0].headers.Content-Length: header \"Content-Length\" is set by estuary with the request "
        "body; a backend cannot set it",
      F ":4:27: routes[0].backends[0].headers.Transfer-Encoding: header \"Transfer-Encoding\" is a hop-by-hop header; a "
        "backend cannot set it",
      F ":4:53: routes[0].backends[0].headers[\"a b\"]: \"a b\" is not a valid header name (RFC 9110 5.1: letters, digits "
        "and !#$%&'*+-.^_`|~)",
      F ":4:65: routes[0].backends[0].headers[\"\"]: \"\" is not a valid header name (RFC 9110 5.1: letters, digits and "
        "!#$%&'*+-.^_`|~)",
      F ":4:79: routes[0].backends[0].headers.n: expected the header value as a string such as \"Bearer {session.token}\", "
        "got an integer",
      F ":5:16: routes[0].backends[0].headers.x-a: header \"x-a\" is set twice (names are case-insensitive)",
      F ":5:35: routes[0].backends[0].headers.v: bad header value \"a\r\nb\": invalid character 0x0d in a header value",
      F ":5:49: routes[0].backends[0].headers.z: bad header value \"}\": unmatched '}'"}},
    {"headers not an object",
     UPS " \"routes\": [{\"path\": \"/g\", \"backends\": [{\"upstream\": \"u\", \"path\": \"/a\", \"headers\": [\"x\"]}]}]}",
     {F ":2:84: routes[0].backends[0].headers: expected an object, got an array"}},
};

static void test_bad_configs(void **state)
{
    (void)state;
    run_bad_cases(F, bad_cases, sizeof(bad_cases) / sizeof(bad_cases[0]));
}

/* at most 32 headers per backend; a value at most 8 KiB */
static void test_bounds(void **state)
{
    (void)state;
    char text[20000];
    size_t n = (size_t)snprintf(text, sizeof(text),
                                UPS " \"routes\": [{\"path\": \"/g\", \"backends\": [{\"upstream\": \"u\", "
                                    "\"path\": \"/a\", \"headers\": {");
    for (int i = 0; i < 33; i++)
        n += (size_t)snprintf(text + n, sizeof(text) - n, "%s\"h%d\": \"v\"", i ? ", " : "", i);
    snprintf(text + n, sizeof(text) - n, "}}]}]}");
    bad_case_t many = {"33 headers", text, {F ":2:84: routes[0].backends[0].headers: at most 32 headers per backend, got 33"}};
    run_bad_cases(F, &many, 1);

    char *big = malloc(9000);
    assert_non_null(big);
    memset(big, 'v', 8193);
    big[8193] = '\0';
    snprintf(text, sizeof(text),
             UPS " \"routes\": [{\"path\": \"/g\", \"backends\": [{\"upstream\": \"u\", \"path\": \"/a\", "
                 "\"headers\": {\"h\": \"%s\"}}]}]}",
             big);
    bad_case_t long_value = {
        "long value", text, {F ":2:90: routes[0].backends[0].headers.h: a header value is at most 8192 bytes, got 8193"}};
    run_bad_cases(F, &long_value, 1);
    big[8192] = '\0';
    snprintf(text, sizeof(text),
             UPS " \"routes\": [{\"path\": \"/g\", \"backends\": [{\"upstream\": \"u\", \"path\": \"/a\", "
                 "\"headers\": {\"h\": \"%s\"}}]}]}",
             big);
    est_config_free(load_ok(F, text));
    free(big);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_deps_and_headers),
        cmocka_unit_test(test_group_clash_binds_last),
        cmocka_unit_test(test_bad_configs),
        cmocka_unit_test(test_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

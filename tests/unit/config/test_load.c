/*
 * Unit tests: est_config_load / est_config_load_buffer. A valid full config (the example
 * of shared/SPEC.md, in data/spec_example.json) with every field checked, defaults, and a
 * table of malformed configs, each with the exact "FILE:LINE:COLUMN: message" lines.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"
#include "helpers.h"

/* a config file name whose folder does not exist: relative paths resolve to "no-such-dir.est/..." */
#define F "no-such-dir.est/t.json"

/* ---- valid configs --------------------------------------------------------------------- */

static void test_spec_example(void **state)
{
    est_errors_t errs = {0};
    est_config_t *c = est_config_load(TEST_DATA_DIR "/spec_example.json", &errs);
    for (size_t i = 0; i < errs.count; i++)
        print_error("%s\n", errs.items[i]);
    assert_int_equal(errs.count, 0);
    assert_non_null(c);

    char dir[PATH_MAX], want[PATH_MAX + 32];
    assert_non_null(realpath(TEST_DATA_DIR, dir));
    assert_string_equal(c->file, TEST_DATA_DIR "/spec_example.json");
    assert_string_equal(c->base_dir, dir);
    assert_non_null(c->json);
    assert_true(json_is_object(c->json));

    assert_int_equal(c->num_listen, 2);
    assert_string_equal(c->listen[0].host, "0.0.0.0");
    assert_int_equal(c->listen[0].port, 8080);
    assert_int_equal(c->listen[0].tls, 0);
    assert_null(c->listen[0].certificate_file);
    assert_int_equal(c->listen[1].port, 8443);
    assert_int_equal(c->listen[1].tls, 1);
    snprintf(want, sizeof(want), "%s/tls/cert.pem", dir);
    assert_string_equal(c->listen[1].certificate_file, want);
    snprintf(want, sizeof(want), "%s/tls/key.pem", dir);
    assert_string_equal(c->listen[1].key_file, want);

    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    assert_int_equal(c->workers_auto, 1);
    assert_int_equal(c->workers, cpus < 1 ? 1 : cpus > 256 ? 256 : cpus);
    assert_int_equal(c->shutdown_timeout_ms, 10000);
    assert_int_equal(c->max_request_body, 8 * 1024 * 1024);
    assert_non_null(c->admin);
    assert_string_equal(c->admin->host, "127.0.0.1");
    assert_int_equal(c->admin->port, 9901);

    assert_int_equal(c->dns.num_servers, 1);
    assert_string_equal(c->dns.servers[0], "127.0.0.1:5353");
    assert_int_equal(c->dns.min_ttl_ms, 1000);
    assert_int_equal(c->dns.max_ttl_ms, 300000);
    assert_int_equal(c->dns.negative_ttl_ms, 5000);
    assert_int_equal(c->dns.stale_ttl_ms, 60000);
    assert_int_equal(c->dns.timeout_ms, 1000);
    assert_int_equal(c->dns.attempts, 2);

    assert_int_equal(c->num_upstreams, 2);
    est_upstream_conf_t *u = est_config_find_upstream(c, "users");
    assert_ptr_equal(u, &c->upstreams[0]);
    assert_int_equal(u->index, 0);
    assert_string_equal(u->name, "users");
    assert_int_equal(u->num_targets, 1);
    assert_string_equal(u->targets[0].url, "https://users.internal:8443");
    assert_int_equal(u->targets[0].is_tls, 1);
    assert_string_equal(u->targets[0].host, "users.internal");
    assert_int_equal(u->targets[0].port, 8443);
    assert_string_equal(u->targets[0].authority, "users.internal:8443");
    assert_int_equal(u->targets[0].is_ip_literal, 0);
    assert_int_equal(u->balance, EST_BALANCE_ROUND_ROBIN);
    assert_int_equal(u->connect_timeout_ms, 1000);
    assert_int_equal(u->response_timeout_ms, 5000);
    assert_int_equal(u->pool.max_connections, 64);
    assert_int_equal(u->pool.max_idle, 16);
    assert_int_equal(u->pool.idle_timeout_ms, 30000);
    assert_int_equal(u->pool.max_requests, 10000);
    assert_int_equal(u->retry.attempts, 3);
    assert_int_equal(u->retry.backoff_ms, 25);
    assert_int_equal(u->retry.max_backoff_ms, 1000);
    assert_int_equal(u->retry.on, EST_RETRY_ON_CONNECT_FAILURE | EST_RETRY_ON_RESET | EST_RETRY_ON_TIMEOUT);
    assert_int_equal(u->retry.num_statuses, 3);
    assert_int_equal(u->retry.statuses[0], 502);
    assert_int_equal(u->retry.statuses[1], 503);
    assert_int_equal(u->retry.statuses[2], 504);
    assert_int_equal(u->tls.verify, 1);
    snprintf(want, sizeof(want), "%s/tls/ca.pem", dir);
    assert_string_equal(u->tls.ca_file, want);
    assert_string_equal(u->tls.server_name, "users.internal");

    est_upstream_conf_t *o = est_config_find_upstream(c, "orders");
    assert_ptr_equal(o, &c->upstreams[1]);
    assert_int_equal(o->index, 1);
    assert_string_equal(o->targets[0].authority, "orders.internal:8082");
    assert_int_equal(o->targets[0].is_tls, 0);
    /* upstream defaults */
    assert_int_equal(o->balance, EST_BALANCE_ROUND_ROBIN);
    assert_int_equal(o->connect_timeout_ms, 1000);
    assert_int_equal(o->response_timeout_ms, 10000);
    assert_int_equal(o->pool.max_connections, 256);
    assert_int_equal(o->pool.max_idle, 32);
    assert_int_equal(o->pool.idle_timeout_ms, 30000);
    assert_int_equal(o->pool.max_requests, 10000);
    assert_int_equal(o->retry.attempts, 2);
    assert_int_equal(o->retry.backoff_ms, 25);
    assert_int_equal(o->retry.max_backoff_ms, 250);
    assert_int_equal(o->retry.on, EST_RETRY_ON_CONNECT_FAILURE | EST_RETRY_ON_RESET);
    assert_int_equal(o->retry.num_statuses, 0);
    assert_int_equal(o->tls.verify, 1);
    assert_null(o->tls.ca_file);
    assert_null(o->tls.server_name);
    assert_null(est_config_find_upstream(c, "user"));

    assert_int_equal(c->num_routes, 2);
    est_route_conf_t *r = &c->routes[0];
    assert_int_equal(r->index, 0);
    assert_string_equal(r->path, "/gateway/{user_id}/{order_id}");
    assert_int_equal(r->methods, EST_METHOD_GET | EST_METHOD_HEAD);
    assert_int_equal(r->timeout_ms, 3000);
    assert_int_equal(r->on_error, EST_ON_ERROR_PARTIAL);
    assert_int_equal(r->websocket, 0);
    assert_int_equal(r->preserve_host, 0);
    assert_null(r->proxy);
    assert_int_equal(r->num_backends, 2);
    est_backend_conf_t *b = &r->backends[0];
    assert_string_equal(b->upstream_name, "users");
    assert_ptr_equal(b->upstream, u);
    assert_string_equal(b->path, "/users/{user_id}");
    assert_string_equal(b->group, "user");
    assert_null(b->target);
    assert_int_equal(b->num_allow, 0);
    assert_int_equal(b->num_deny, 0);
    assert_int_equal(b->num_mapping, 0);
    assert_string_equal(b->timing_name, "user");
    b = &r->backends[1];
    assert_ptr_equal(b->upstream, o);
    assert_string_equal(b->path, "/orders/{order_id}");
    assert_string_equal(b->group, "order");
    assert_string_equal(b->target, "data");
    assert_int_equal(b->num_allow, 2);
    assert_string_equal(b->allow[0], "id");
    assert_string_equal(b->allow[1], "product");
    assert_int_equal(b->num_mapping, 1);
    assert_string_equal(b->mapping[0].from, "product");
    assert_string_equal(b->mapping[0].to, "item");
    assert_string_equal(b->timing_name, "order");

    r = &c->routes[1];
    assert_int_equal(r->index, 1);
    assert_string_equal(r->path, "/api/users/{rest...}");
    assert_int_equal(r->methods, EST_METHOD_GET | EST_METHOD_HEAD);
    assert_int_equal(r->timeout_ms, 5000);
    assert_int_equal(r->websocket, 1);
    assert_int_equal(r->num_backends, 0);
    assert_non_null(r->proxy);
    assert_ptr_equal(r->proxy->upstream, u);
    assert_string_equal(r->proxy->path, "/users/{rest...}");
    assert_string_equal(r->proxy->timing_name, "users");

    est_config_free(c);
}

static void test_defaults(void **state)
{
    est_config_t *c = load_ok(F, "{}");
    assert_string_equal(c->file, F);
    assert_string_equal(c->base_dir, "no-such-dir.est");
    assert_int_equal(c->num_listen, 1);
    assert_string_equal(c->listen[0].host, "0.0.0.0");
    assert_int_equal(c->listen[0].port, 8080);
    assert_int_equal(c->listen[0].tls, 0);
    assert_int_equal(c->workers_auto, 1);
    assert_true(c->workers >= 1 && c->workers <= 256);
    assert_int_equal(c->io_uring, 1); /* "auto" */
    assert_int_equal(c->shutdown_timeout_ms, 10000);
    assert_int_equal(c->max_request_body, 8388608);
    assert_null(c->admin);
    assert_int_equal(c->dns.num_servers, 0);
    assert_int_equal(c->dns.min_ttl_ms, 1000);
    assert_int_equal(c->dns.max_ttl_ms, 300000);
    assert_int_equal(c->dns.negative_ttl_ms, 5000);
    assert_int_equal(c->dns.stale_ttl_ms, 60000);
    assert_int_equal(c->dns.timeout_ms, 1000);
    assert_int_equal(c->dns.attempts, 2);
    assert_int_equal(c->num_upstreams, 0);
    assert_int_equal(c->num_routes, 0);
    est_config_free(c);

    /* a file name without a folder resolves against "." */
    c = load_ok("t.json", "{\"workers\": 3, \"io_uring\": \"off\", \"shutdown_timeout\": \"0s\", \"max_request_body\": 0, \"admin\": {\"port\": 9}}");
    char cwd[PATH_MAX];
    assert_non_null(realpath(".", cwd));
    assert_string_equal(c->base_dir, cwd);
    assert_int_equal(c->workers, 3);
    assert_int_equal(c->workers_auto, 0);
    assert_int_equal(c->io_uring, 0);
    assert_int_equal(c->shutdown_timeout_ms, 0);
    assert_int_equal(c->max_request_body, 0);
    assert_string_equal(c->admin->host, "127.0.0.1");
    est_config_free(c);
}

static void test_routes_and_targets(void **state)
{
    est_config_t *c = load_ok(F, "{\"max_request_body\": \"1MiB\",\n"
                                 " \"listen\": [{\"host\": \"::\", \"port\": 80}, {\"host\": \"[::1]\", \"port\": 80}],\n"
                                 " \"dns\": {\"servers\": [\"1.1.1.1\", \"::1\", \"[2001:db8::1]:5353\"], \"min_ttl\": \"0s\"},\n"
                                 " \"upstreams\": {\n"
                                 "  \"a\": {\"targets\": [\"http://[::1]:8080\", \"HTTPS://h.example\", \"http://10.0.0.1:80/\","
                                 " \"https://h:443\"], \"balance\": \"least_request\",\n"
                                 "         \"retry\": {\"on\": [\"503\", \"503\", \"timeout\"]}, \"tls\": {\"verify\": false}},\n"
                                 "  \"b\": {\"targets\": [\"http://b\"]}},\n"
                                 " \"routes\": [\n"
                                 "  {\"path\": \"/x/{id}\", \"methods\": [\"get\", \"Post\"], \"on_error\": \"fail\", \"preserve_host\": true,\n"
                                 "   \"backends\": [{\"upstream\": \"a\", \"path\": \"/a/{id}\"}, {\"upstream\": \"a\", \"path\": \"/a2\"},\n"
                                 "                {\"upstream\": \"b\", \"path\": \"/b\", \"group\": \"a\", \"deny\": [\"x.y\"]},\n"
                                 "                {\"upstream\": \"b\", \"path\": \"/b?id={id}\"}]},\n"
                                 "  {\"path\": \"/x/{other}\", \"methods\": [\"PUT\", \"delete\", \"OPTIONS\", \"PATCH\"], \"proxy\": {\"upstream\": \"b\"}},\n"
                                 "  {\"path\": \"/x/{id}/\", \"proxy\": {\"upstream\": \"b\"}},\n"
                                 "  {\"path\": \"/x/lit\", \"proxy\": {\"upstream\": \"b\"}},\n"
                                 "  {\"path\": \"/h\", \"methods\": [\"HEAD\"], \"proxy\": {\"upstream\": \"b\"}}\n"
                                 " ]}");
    assert_int_equal(c->max_request_body, 1048576);
    assert_string_equal(c->listen[0].host, "::");
    assert_string_equal(c->listen[1].host, "::1");
    assert_int_equal(c->dns.num_servers, 3);
    assert_int_equal(c->dns.min_ttl_ms, 0);
    est_upstream_conf_t *a = &c->upstreams[0];
    assert_int_equal(a->num_targets, 4);
    assert_string_equal(a->targets[0].host, "::1");
    assert_int_equal(a->targets[0].port, 8080);
    assert_string_equal(a->targets[0].authority, "[::1]:8080");
    assert_int_equal(a->targets[0].is_ip_literal, 1);
    assert_int_equal(a->targets[1].is_tls, 1);
    assert_int_equal(a->targets[1].port, 443);
    assert_string_equal(a->targets[1].authority, "h.example");
    assert_string_equal(a->targets[2].host, "10.0.0.1");
    assert_string_equal(a->targets[2].authority, "10.0.0.1");
    assert_int_equal(a->targets[2].is_ip_literal, 1);
    assert_string_equal(a->targets[3].authority, "h");
    assert_int_equal(a->balance, EST_BALANCE_LEAST_REQUEST);
    assert_int_equal(a->retry.on, EST_RETRY_ON_TIMEOUT);
    assert_int_equal(a->retry.num_statuses, 1);
    assert_int_equal(a->retry.statuses[0], 503);
    assert_int_equal(a->tls.verify, 0);

    est_route_conf_t *r = &c->routes[0];
    assert_int_equal(r->methods, EST_METHOD_GET | EST_METHOD_HEAD | EST_METHOD_POST);
    assert_int_equal(r->on_error, EST_ON_ERROR_FAIL);
    assert_int_equal(r->preserve_host, 1);
    assert_int_equal(r->num_backends, 4);
    assert_string_equal(r->backends[0].timing_name, "a");
    assert_string_equal(r->backends[1].timing_name, "a#2");
    assert_string_equal(r->backends[2].timing_name, "a#3"); /* group "a" clashes with upstream "a" */
    assert_string_equal(r->backends[3].timing_name, "b");
    assert_int_equal(r->backends[2].num_deny, 1);
    assert_string_equal(r->backends[2].deny[0], "x.y");
    assert_string_equal(r->backends[3].path, "/b?id={id}");
    r = &c->routes[1];
    assert_int_equal(r->methods, EST_METHOD_PUT | EST_METHOD_DELETE | EST_METHOD_OPTIONS | EST_METHOD_PATCH);
    assert_null(r->proxy->path); /* the client's path, as it came */
    assert_string_equal(r->proxy->timing_name, "b");
    assert_int_equal(c->routes[4].methods, EST_METHOD_HEAD);
    est_config_free(c);
}

/* ---- malformed configs ----------------------------------------------------------------- */

static const bad_case_t bad_cases[] = {
    {"syntax: invalid token", "{\"workers\": x}", {F ":1:13: invalid JSON: invalid token near 'x'"}},
    {"syntax: missing comma",
     "{\n  \"workers\": 2\n  \"routes\": []\n}",
     {F ":3:3: invalid JSON: '}' expected near '\"routes\"'"}},
    {"syntax: trailing comma", "{\"routes\": [\n  {\"path\": \"/x\", }\n]}", {F ":2:18: invalid JSON: string or '}' expected near '}'"}},
    {"syntax: duplicate key", "{\"workers\": 1,\n \"workers\": 2}", {F ":2:2: invalid JSON: duplicate object key near '\"workers\"'"}},
    {"syntax: truncated", "{\"workers\": 2", {F ":1:14: invalid JSON: '}' expected near end of file"}},
    {"syntax: empty", "", {F ":1:1: invalid JSON: '[' or '{' expected near end of file"}},
    {"syntax: huge integer", "{\"workers\":\n  123456789012345678901234567890}", {F ":2:3: invalid JSON: too big integer"}},
    {"not an object", "[]", {F ":1:1: the config must be a JSON object, not an array"}},
    {"unknown key at top level", "{\"worker\": 2}", {F ":1:2: unknown key \"worker\" at the top level (did you mean \"workers\"?)"}},
    {"unknown key at depth",
     "{\"upstreams\": {\"u\": {\"targets\": [\"http://u\"]}},\n"
     " \"routes\": [{\"path\": \"/a\", \"backends\": [\n"
     "   {\"upstream\": \"u\", \"path\": \"/a\"},\n"
     "   {\"upstream\": \"u\", \"path\": \"/b\", \"mappng\": {}, \"zzz\": 1}]}]}",
     {F ":4:36: unknown key \"mappng\" in routes[0].backends[1] (did you mean \"mapping\"?)",
      F ":4:50: unknown key \"zzz\" in routes[0].backends[1]"}},
    {"unknown key with escapes and UTF-8", "{\"dns\": {\"\\u00e9t\\u00e9\": 1, \"é\": 2}}",
     {F ":1:10: unknown key \"été\" in dns",
      F ":1:30: unknown key \"é\" in dns"}},
    {"io_uring values",
     "{\"io_uring\": \"on\"}",
     {F ":1:14: io_uring: expected \"auto\" or \"off\", got \"on\""}},
    {"io_uring type", "{\"io_uring\": false}", {F ":1:14: io_uring: expected \"auto\" or \"off\", got a boolean"}},
    {"wrong types",
     "{\"listen\": {\"port\": 80}, \"workers\": \"many\", \"shutdown_timeout\": 10,\n"
     " \"max_request_body\": 1.5, \"admin\": [], \"dns\": {\"servers\": \"1.1.1.1\"},\n"
     " \"upstreams\": [], \"routes\": {}}",
     {F ":1:12: listen: expected an array of listeners, got an object",
      F ":1:37: workers: expected \"auto\" or an integer from 1 to 256, got \"many\"",
      F ":1:65: shutdown_timeout: expected a duration string such as \"5s\", got an integer",
      F ":2:22: max_request_body: expected a size (bytes, or a string such as \"8MiB\"), got a real number",
      F ":2:36: admin: expected an object, got an array",
      F ":2:59: dns.servers: expected an array, got a string",
      F ":3:15: upstreams: expected an object, got an array",
      F ":3:29: routes: expected an array of routes, got an object"}},
    {"wrong types in a route",
     "{\"upstreams\": {\"u\": {\"targets\": [\"http://u\"]}}, \"routes\": [\n"
     "  {\"path\": 1, \"methods\": \"GET\", \"websocket\": 1, \"backends\": {}},\n"
     "  {\"path\": \"/b\", \"backends\": [{\"upstream\": \"u\", \"path\": \"/\", \"allow\": \"a\", \"mapping\": {\"a\": true}}]},\n"
     "  \"/c\"]}",
     {F ":2:12: routes[0].path: expected a string, got an integer",
      F ":2:26: routes[0].methods: expected an array such as [\"GET\", \"POST\"], got a string",
      F ":2:46: routes[0].websocket: expected true or false, got an integer",
      F ":2:61: routes[0].backends: expected an array of backends, got an object",
      F ":3:71: routes[1].backends[0].allow: expected an array, got a string",
      F ":3:93: routes[1].backends[0].mapping.a: expected the new field name as a string, got a boolean",
      F ":4:3: routes[2]: expected a route object, got a string"}},
    {"bad durations",
     "{\"shutdown_timeout\": \"5 s\", \"dns\": {\"timeout\": \"0s\", \"max_ttl\": \"1m\", \"min_ttl\": \"2m\"},\n"
     " \"upstreams\": {\"u\": {\"targets\": [\"http://u\"], \"connect_timeout\": \"30s1m\", \"retry\": {\"backoff\": \"-1ms\"}}},\n"
     " \"routes\": [{\"path\": \"/\", \"timeout\": \"\", \"proxy\": {\"upstream\": \"u\"}}]}",
     {F ":1:22: shutdown_timeout: bad duration \"5 s\" (use e.g. \"250ms\", \"5s\", \"1m30s\")",
      F ":1:48: dns.timeout: must be more than 0s",
      F ":1:82: dns.min_ttl: min_ttl (2m) is more than max_ttl (1m)",
      F ":2:66: upstreams.u.connect_timeout: bad duration \"30s1m\" (use e.g. \"250ms\", \"5s\", \"1m30s\")",
      F ":2:96: upstreams.u.retry.backoff: bad duration \"-1ms\" (use e.g. \"250ms\", \"5s\", \"1m30s\")",
      F ":3:38: routes[0].timeout: bad duration \"\" (use e.g. \"250ms\", \"5s\", \"1m30s\")"}},
    {"bad sizes", "{\"max_request_body\": \"8MB\"}", {F ":1:22: max_request_body: bad size \"8MB\" (use bytes, or e.g. \"512KiB\", \"8MiB\", \"1GiB\")"}},
    {"negative size", "{\"max_request_body\": -1}", {F ":1:22: max_request_body: a size cannot be negative"}},
    {"unknown upstream",
     "{\"upstreams\": {\"users\": {\"targets\": [\"http://u\"]}},\n"
     " \"routes\": [{\"path\": \"/a\", \"backends\": [{\"upstream\": \"userz\", \"path\": \"/\"}, {\"upstream\": \"zzz\", \"path\": \"/\"}]},\n"
     "            {\"path\": \"/b\", \"proxy\": {\"path\": \"/\"}}]}",
     {F ":2:54: routes[0].backends[0].upstream: upstream \"userz\" is not defined (did you mean \"users\"?)",
      F ":2:90: routes[0].backends[1].upstream: upstream \"zzz\" is not defined",
      F ":3:37: routes[1].proxy: missing \"upstream\""}},
    {"unbound parameter",
     "{\"upstreams\": {\"u\": {\"targets\": [\"http://u\"]}},\n"
     " \"routes\": [{\"path\": \"/gateway/{user_id}\", \"backends\": [\n"
     "   {\"upstream\": \"u\", \"path\": \"/orders/{order_id}?u={user_id}&r={rest...}\"}]},\n"
     "  {\"path\": \"/p/{a}\", \"proxy\": {\"upstream\": \"u\", \"path\": \"/q/{b}\"}}]}",
     {F ":3:39: routes[0].backends[0].path: parameter {order_id} is not bound by the route path \"/gateway/{user_id}\"",
      F ":3:64: routes[0].backends[0].path: parameter {rest} is not bound by the route path \"/gateway/{user_id}\"",
      F ":4:61: routes[1].proxy.path: parameter {b} is not bound by the route path \"/p/{a}\""}},
    {"bad templates",
     "{\"upstreams\": {\"u\": {\"targets\": [\"http://u\"]}},\n"
     " \"routes\": [{\"path\": \"/a/{b\", \"proxy\": {\"upstream\": \"u\", \"path\": \"/x/}\"}},\n"
     "            {\"path\": \"/a/x{b}\", \"proxy\": {\"upstream\": \"u\", \"path\": \"x\"}}]}",
     {F ":2:26: routes[0].path: bad path template \"/a/{b\": unclosed '{'",
      F ":2:70: routes[0].proxy.path: bad path \"/x/}\": unmatched '}'",
      F ":3:27: routes[1].path: bad path template \"/a/x{b}\": '{' inside a literal segment (a parameter must be a whole segment)",
      F ":3:69: routes[1].proxy.path: bad path \"x\": a backend path template must start with '/'"}},
    {"clashing routes",
     "{\"upstreams\": {\"u\": {\"targets\": [\"http://u\"]}},\n"
     " \"routes\": [\n"
     "  {\"path\": \"/a/{x}\", \"methods\": [\"GET\", \"POST\"], \"proxy\": {\"upstream\": \"u\"}},\n"
     "  {\"path\": \"/a/{y}\", \"methods\": [\"put\", \"post\"], \"proxy\": {\"upstream\": \"u\"}},\n"
     "  {\"path\": \"/a/{z}\", \"methods\": [\"HEAD\"], \"proxy\": {\"upstream\": \"u\"}},\n"
     "  {\"path\": \"/a/{z}\", \"methods\": [\"DELETE\"], \"proxy\": {\"upstream\": \"u\"}}]}",
     {F ":4:12: routes[1].path: route \"/a/{y}\" clashes with route \"/a/{x}\" (line 3) for method POST",
      F ":5:12: routes[2].path: route \"/a/{z}\" clashes with route \"/a/{x}\" (line 3) for method HEAD"}},
    {"unreadable files",
     "{\"listen\": [{\"port\": 8443, \"tls\": {\"certificate_file\": \"tls/missing.pem\", \"key_file\": \"" TEST_DATA_DIR "\"}}],\n"
     " \"upstreams\": {\"u\": {\"targets\": [\"https://u\"], \"tls\": {\"ca_file\": \"/nonexistent/ca.pem\"}}}}",
     {F ":1:56: listen[0].tls.certificate_file: cannot read \"tls/missing.pem\" (no-such-dir.est/tls/missing.pem): No such file or directory",
      F ":1:87: listen[0].tls.key_file: cannot read \"" TEST_DATA_DIR "\": not a regular file",
      F ":2:67: upstreams.u.tls.ca_file: cannot read \"/nonexistent/ca.pem\": No such file or directory"}},
    {"listeners",
     "{\"listen\": [{\"port\": 0}, {\"host\": \"example.com\", \"port\": 80}, {\"host\": \"0.0.0.0\"}, {\"port\": 81}, {\"port\": 81},\n"
     "  {\"port\": 82, \"tls\": {\"key_file\": \"" TEST_DATA_DIR "/tls/key.pem\"}}],\n"
     " \"admin\": {\"host\": \"0.0.0.0\", \"port\": 81}}",
     {F ":1:22: listen[0].port: expected an integer from 1 to 65535, got 0",
      F ":1:35: listen[1].host: expected an IP address such as \"0.0.0.0\" or \"::\", got \"example.com\"",
      F ":1:63: listen[2]: missing \"port\"",
      F ":1:98: listen[4]: 0.0.0.0:81 is already used by listen[3] (line 1)",
      F ":2:23: listen[5].tls: missing \"certificate_file\"",
      F ":3:11: admin: 0.0.0.0:81 is already used by listen[3]"}},
    {"empty listen", "{\"listen\": []}", {F ":1:12: listen: must hold at least one listener (or leave \"listen\" out for 0.0.0.0:8080)"}},
    {"bad targets",
     "{\"upstreams\": {\"u\": {\"targets\": [\"ftp://u\", \"http://a@u\", \"http://u/p\", \"http://u:99999\", \"http://[::1\",\n"
     "  \"http://1.2.3.999\", \"http://\", \"http://a..b\", 8080]},\n"
     "  \"v\": {\"targets\": []}, \"w\": {}}}",
     {F ":1:34: upstreams.u.targets[0]: bad target \"ftp://u\": it must start with http:// or https://",
      F ":1:45: upstreams.u.targets[1]: bad target \"http://a@u\": user info (user@) is not allowed",
      F ":1:59: upstreams.u.targets[2]: bad target \"http://u/p\": a target has no path, query or fragment (set the path on the route)",
      F ":1:73: upstreams.u.targets[3]: bad target \"http://u:99999\": bad port (use 1 to 65535)",
      F ":1:91: upstreams.u.targets[4]: bad target \"http://[::1\": missing ']' after the IPv6 address",
      F ":2:3: upstreams.u.targets[5]: bad target \"http://1.2.3.999\": bad IPv4 address",
      F ":2:23: upstreams.u.targets[6]: bad target \"http://\": missing host",
      F ":2:34: upstreams.u.targets[7]: bad target \"http://a..b\": bad host name",
      F ":2:49: upstreams.u.targets[8]: expected a URL string such as \"http://host:8080\", got an integer",
      F ":3:20: upstreams.v.targets: must list at least one URL",
      F ":3:30: upstreams.w: missing \"targets\""}},
    {"bad upstream values",
     "{\"upstreams\": {\"u\": {\"targets\": [\"http://u\"], \"balance\": \"random\",\n"
     "  \"pool\": {\"max_connections\": 0, \"max_idle\": -1}, \"retry\": {\"attempts\": 0, \"on\": [\"600\", 503, \"5xx\"]}},\n"
     "  \"v\": {\"targets\": []}, \"w\": {}, \"x y\": {\"targets\": [\"http://u\"]}}}",
     {F ":1:58: upstreams.u.balance: unknown balance \"random\" (use \"round_robin\" or \"least_request\")",
      F ":2:31: upstreams.u.pool.max_connections: expected an integer from 1 to 1000000, got 0",
      F ":2:46: upstreams.u.pool.max_idle: expected an integer from 0 to 1000000, got -1",
      F ":2:73: upstreams.u.retry.attempts: expected an integer from 1 to 100, got 0",
      F ":2:83: upstreams.u.retry.on[0]: unknown retry condition \"600\" (use \"connect_failure\", \"reset\", \"timeout\" or a status from \"100\" to \"599\")",
      F ":2:90: upstreams.u.retry.on[1]: expected a string (\"connect_failure\", \"reset\", \"timeout\" or a status such as \"503\"), got an integer",
      F ":2:95: upstreams.u.retry.on[2]: unknown retry condition \"5xx\" (use \"connect_failure\", \"reset\", \"timeout\" or a status from \"100\" to \"599\")",
      F ":3:20: upstreams.v.targets: must list at least one URL",
      F ":3:30: upstreams.w: missing \"targets\"",
      F ":3:34: upstreams[\"x y\"]: bad upstream name \"x y\" (use letters, digits, '_', '-' and '.')"}},
    {"bad upstream values 2", "{\"upstreams\": {\"w\": {}, \"x y\": {\"targets\": [\"http://u\"]}}}",
     {F ":1:21: upstreams.w: missing \"targets\"",
      F ":1:25: upstreams[\"x y\"]: bad upstream name \"x y\" (use letters, digits, '_', '-' and '.')"}},
    {"bad dns",
     "{\"dns\": {\"servers\": [\"1.1.1.1:0\", \"dns.google\", \"[::1]:53\", \"::1:53:x\", 53], \"attempts\": 11}}",
     {F ":1:22: dns.servers[0]: bad DNS server \"1.1.1.1:0\" (use \"IP\", \"IP:PORT\" or \"[IPv6]:PORT\")",
      F ":1:35: dns.servers[1]: bad DNS server \"dns.google\" (use \"IP\", \"IP:PORT\" or \"[IPv6]:PORT\")",
      F ":1:61: dns.servers[3]: bad DNS server \"::1:53:x\" (use \"IP\", \"IP:PORT\" or \"[IPv6]:PORT\")",
      F ":1:73: dns.servers[4]: expected a string such as \"127.0.0.1:53\", got an integer",
      F ":1:90: dns.attempts: expected an integer from 1 to 10, got 11"}},
    {"route shape",
     "{\"upstreams\": {\"u\": {\"targets\": [\"http://u\"]}}, \"routes\": [\n"
     "  {\"path\": \"/a\", \"backends\": [], \"proxy\": {\"upstream\": \"u\"}},\n"
     "  {\"path\": \"/b\"},\n"
     "  {\"path\": \"/c\", \"backends\": []},\n"
     "  {\"path\": \"/d\", \"proxy\": {\"upstream\": \"u\", \"group\": \"g\"}, \"on_error\": \"fail\"},\n"
     "  {\"path\": \"/e\", \"websocket\": true, \"on_error\": \"maybe\", \"backends\": [{\"upstream\": \"u\"}]},\n"
     "  {\"methods\": [], \"proxy\": {\"upstream\": \"u\"}}]}",
     {F ":2:34: routes[0]: use either \"backends\" or \"proxy\", not both",
      F ":3:3: routes[1]: missing \"backends\" or \"proxy\"",
      F ":4:30: routes[2].backends: must list at least one backend",
      F ":5:45: unknown key \"group\" in routes[3].proxy",
      F ":5:60: routes[3].on_error: applies only to routes with \"backends\"",
      F ":6:31: routes[4].websocket: WebSockets need a \"proxy\" route",
      F ":6:49: routes[4].on_error: unknown on_error \"maybe\" (use \"partial\" or \"fail\")",
      F ":6:71: routes[4].backends[0]: missing \"path\"",
      F ":7:3: routes[5]: missing \"path\"",
      F ":7:15: routes[5].methods: must list at least one method"}},
    {"route shape 2", "{\"routes\": [{\"methods\": [\"FETCH\", \"get\"], \"proxy\": 1}]}",
     {F ":1:13: routes[0]: missing \"path\"",
      F ":1:26: routes[0].methods[0]: unknown method \"FETCH\" (use GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS)",
      F ":1:52: routes[0].proxy: expected an object such as {\"upstream\": \"users\"}, got an integer"}},
    {"backend fields",
     "{\"upstreams\": {\"u\": {\"targets\": [\"http://u\"]}}, \"routes\": [{\"path\": \"/\", \"backends\": [\n"
     "  {\"upstream\": \"u\", \"path\": \"/\", \"target\": \"a.\", \"allow\": [\"x\", \"\"], \"deny\": [\".y\"], \"group\": \"\"},\n"
     "  {\"upstream\": \"u\", \"path\": \"/\", \"mapping\": {\"\": \"x\", \"b\": \"\"}}, 7]}]}",
     {F ":2:44: routes[0].backends[0].target: bad field path \"a.\" (use names separated by single dots, e.g. \"data.user\")",
      F ":2:65: routes[0].backends[0].allow[1]: bad field path \"\" (use names separated by single dots, e.g. \"data.user\")",
      F ":2:70: routes[0].backends[0]: use either \"allow\" or \"deny\", not both",
      F ":2:79: routes[0].backends[0].deny[0]: bad field path \".y\" (use names separated by single dots, e.g. \"data.user\")",
      F ":2:95: routes[0].backends[0].group: must not be empty",
      F ":3:46: routes[0].backends[1].mapping[\"\"]: a field name cannot be empty",
      F ":3:60: routes[0].backends[1].mapping.b: the new field name cannot be empty",
      F ":3:66: routes[0].backends[2]: expected an object such as {\"upstream\": \"users\", \"path\": \"/users/{id}\"}, got an integer"}},
    {"multiple errors, sorted by position",
     "{\"routes\": [{\"path\": \"/a\", \"timeout\": \"1x\", \"proxy\": {\"upstream\": \"nope\"}}],\n"
     " \"upstreams\": {\"u\": {\"targets\": [\"http://u\"], \"pool\": {\"max_idle\": \"3\"}}},\n"
     " \"workers\": 300, \"bogus\": null}",
     {F ":1:39: routes[0].timeout: bad duration \"1x\" (use e.g. \"250ms\", \"5s\", \"1m30s\")",
      F ":1:67: routes[0].proxy.upstream: upstream \"nope\" is not defined",
      F ":2:68: upstreams.u.pool.max_idle: expected an integer from 0 to 1000000, got a string",
      F ":3:13: workers: expected an integer from 1 to 256, got 300",
      F ":3:18: unknown key \"bogus\" at the top level"}},
};

static void test_bad_configs(void **state)
{
    run_bad_cases(F, bad_cases, sizeof(bad_cases) / sizeof(bad_cases[0]));
}

static void test_load_file_errors(void **state)
{
    est_errors_t errs = {0};
    assert_null(est_config_load(TEST_DATA_DIR "/does-not-exist.json", &errs));
    assert_int_equal(errs.count, 1);
    assert_string_equal(errs.items[0], TEST_DATA_DIR "/does-not-exist.json:1:1: cannot read the config file: No such file or directory");
    est_errors_clear(&errs);

    assert_null(est_config_load(TEST_DATA_DIR, &errs));
    assert_int_equal(errs.count, 1);
    assert_string_equal(errs.items[0], TEST_DATA_DIR ":1:1: cannot read the config file: Is a directory");
    est_errors_clear(&errs);

    /* errors append to what is already in the list */
    est_errors_add(&errs, "earlier");
    assert_null(est_config_load_buffer("x.json", "{\"a\": 1}", 8, &errs));
    assert_int_equal(errs.count, 2);
    assert_string_equal(errs.items[1], "x.json:1:2: unknown key \"a\" at the top level");
    est_errors_clear(&errs);

    /* the buffer need not be NUL-terminated */
    const char text[] = {'{', '}', 'x'};
    est_config_t *c = est_config_load_buffer("x.json", text, 2, &errs);
    assert_non_null(c);
    est_config_free(c);
    est_config_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spec_example),  cmocka_unit_test(test_defaults),         cmocka_unit_test(test_routes_and_targets),
        cmocka_unit_test(test_bad_configs),   cmocka_unit_test(test_load_file_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

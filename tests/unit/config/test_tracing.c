/*
 * Unit tests: the optional top-level "tracing" key (SPEC "Tracing"): the endpoint as an
 * upstream of its own with SPEC defaults, the defaults, and every malformed value with its
 * FILE:LINE:COLUMN.
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

static void test_absent(void **state)
{
    est_config_t *c = load_ok(F, "{}");
    assert_non_null(c);
    assert_null(c->tracing);
    est_config_free(c);
}

static void test_values(void **state)
{
    est_config_t *c = load_ok(F, "{\"tracing\": {\"otlp_endpoint\": \"http://collector:4318/v1/traces\", "
                                 "\"service_name\": \"edge\", \"sample_ratio\": 0.25}}");
    assert_non_null(c);
    est_tracing_conf_t *t = c->tracing;
    assert_non_null(t);
    assert_string_equal(t->otlp_endpoint, "http://collector:4318/v1/traces");
    assert_string_equal(t->otlp_path, "/v1/traces");
    assert_string_equal(t->service_name, "edge");
    assert_true(t->sample_ratio == 0.25);
    est_upstream_conf_t *u = t->otlp_upstream;
    assert_non_null(u);
    assert_int_equal(u->num_targets, 1);
    assert_string_equal(u->targets[0].host, "collector");
    assert_int_equal(u->targets[0].port, 4318);
    assert_int_equal(u->targets[0].is_tls, 0);
    assert_string_equal(u->name, "tracing");
    /* SPEC upstream defaults, a 5 s response timeout */
    assert_int_equal(u->connect_timeout_ms, 1000);
    assert_int_equal(u->response_timeout_ms, 5000);
    assert_int_equal(u->pool.max_connections, 256);
    assert_int_equal(u->retry.attempts, 2);
    assert_int_equal(u->tls.verify, 1);
    est_config_free(c);

    c = load_ok(F, "{\"tracing\": {\"otlp_endpoint\": \"https://[::1]\"}}");
    assert_non_null(c);
    t = c->tracing;
    assert_string_equal(t->otlp_path, "/");
    assert_string_equal(t->service_name, "estuary");
    assert_true(t->sample_ratio == 1.0);
    assert_int_equal(t->otlp_upstream->targets[0].is_tls, 1);
    assert_int_equal(t->otlp_upstream->targets[0].port, 443);
    est_config_free(c);

    c = load_ok(F, "{\"tracing\": {\"otlp_endpoint\": \"http://127.0.0.1:4318?x=1\", \"sample_ratio\": 0}}");
    assert_non_null(c);
    assert_string_equal(c->tracing->otlp_path, "/?x=1");
    assert_true(c->tracing->sample_ratio == 0.0);
    est_config_free(c);

    c = load_ok(F, "{\"tracing\": {\"otlp_endpoint\": \"http://127.0.0.1:4318/v1/traces\", \"sample_ratio\": 1}}");
    assert_non_null(c);
    assert_true(c->tracing->sample_ratio == 1.0);
    est_config_free(c);
}

static void test_errors(void **state)
{
    static const bad_case_t cases[] = {
        {"not an object", "{\"tracing\": true}", {"t.json:1:13: tracing: expected an object, got a boolean", NULL}},
        {"missing endpoint",
         "{\"tracing\": {}}",
         {"t.json:1:13: tracing: missing \"otlp_endpoint\" (such as \"http://127.0.0.1:4318/v1/traces\")", NULL}},
        {"unknown key",
         "{\"tracing\": {\"otlp_endpoint\": \"http://c:4318\",\n \"sample\": 1}}",
         {"t.json:2:2: unknown key \"sample\" in tracing", NULL}},
        {"bad scheme",
         "{\"tracing\": {\"otlp_endpoint\": \"ftp://c/v1/traces\"}}",
         {"t.json:1:31: tracing.otlp_endpoint: bad URL \"ftp://c/v1/traces\": it must start with http:// or https://", NULL}},
        {"no scheme",
         "{\"tracing\": {\"otlp_endpoint\": \"collector:4318\"}}",
         {"t.json:1:31: tracing.otlp_endpoint: bad URL \"collector:4318\": it must start with http:// or https://", NULL}},
        {"fragment",
         "{\"tracing\": {\"otlp_endpoint\": \"http://c/x#y\"}}",
         {"t.json:1:31: tracing.otlp_endpoint: bad URL \"http://c/x#y\": a fragment (#) is not allowed", NULL}},
        {"ratio above 1",
         "{\"tracing\": {\"otlp_endpoint\": \"http://c\",\n  \"sample_ratio\": 1.5}}",
         {"t.json:2:19: tracing.sample_ratio: expected a number from 0 to 1, got 1.5", NULL}},
        {"ratio negative",
         "{\"tracing\": {\"otlp_endpoint\": \"http://c\", \"sample_ratio\": -0.1}}",
         {"t.json:1:59: tracing.sample_ratio: expected a number from 0 to 1, got -0.1", NULL}},
        {"ratio string",
         "{\"tracing\": {\"otlp_endpoint\": \"http://c\", \"sample_ratio\": \"10%\"}}",
         {"t.json:1:59: tracing.sample_ratio: expected a number from 0 to 1, got a string", NULL}},
        {"service name type",
         "{\"tracing\": {\"otlp_endpoint\": \"http://c\", \"service_name\": 3}}",
         {"t.json:1:59: tracing.service_name: expected a string, got an integer", NULL}},
        {"endpoint type",
         "{\"tracing\": {\"otlp_endpoint\": 4318}}",
         {"t.json:1:31: tracing.otlp_endpoint: expected a string, got an integer", NULL}},
    };
    run_bad_cases(F, cases, sizeof(cases) / sizeof(cases[0]));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_absent),
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

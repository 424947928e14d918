/*
 * Unit tests: what a reload may keep (server/gen.c). An upstream keeps its pool only when
 * every setting that shapes its connections or exchanges is equal; listeners are kept by
 * host, port and TLS files; generations are refcounted and free their config.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/gen.h"
#include "helpers.h"


#define BASE "\"u\": {\"targets\": [\"http://127.0.0.1:8001\", \"http://b.example:8002\"]%s}"
#define L1 "{\"host\": \"127.0.0.1\", \"port\": 8080}"

static int same_upstream(const char *extra_a, const char *extra_b)
{
    char a[1024], b[1024];
    snprintf(a, sizeof(a), BASE, extra_a);
    snprintf(b, sizeof(b), BASE, extra_b);
    est_config_t *ca = load(a, L1), *cb = load(b, L1);
    int eq = est_upstream_conf_equal(est_config_find_upstream(ca, "u"), est_config_find_upstream(cb, "u"));
    est_config_free(ca);
    est_config_free(cb);
    return eq;
}

static void test_upstream_equal_when_unchanged(void **state)
{
    (void)state;
    assert_true(same_upstream("", ""));
    assert_true(same_upstream(", \"connect_timeout\": \"2s\"", ", \"connect_timeout\": \"2s\""));
    /* a default written out is the same setting */
    est_config_t *c = load("\"u\": {\"targets\": [\"http://127.0.0.1:8001\"]}", L1);
    assert_true(est_upstream_conf_equal(&c->upstreams[0], &c->upstreams[0]));
    est_config_free(c);
}

static void test_upstream_differs_on_any_setting(void **state)
{
    (void)state;
    assert_false(same_upstream("", ", \"connect_timeout\": \"9s\""));
    assert_false(same_upstream("", ", \"response_timeout\": \"9s\""));
    assert_false(same_upstream("", ", \"balance\": \"least_request\""));
    assert_false(same_upstream("", ", \"pool\": {\"max_connections\": 7}"));
    assert_false(same_upstream("", ", \"pool\": {\"idle_timeout\": \"7s\"}"));
    assert_false(same_upstream("", ", \"retry\": {\"attempts\": 3}"));
    assert_false(same_upstream("", ", \"tls\": {\"verify\": false}"));
    /* targets: order and value matter */
    char a[256] = "\"u\": {\"targets\": [\"http://127.0.0.1:8001\"]}", b[256] = "\"u\": {\"targets\": [\"http://127.0.0.1:8003\"]}";
    est_config_t *ca = load(a, L1), *cb = load(b, L1);
    assert_false(est_upstream_conf_equal(&ca->upstreams[0], &cb->upstreams[0]));
    est_config_free(ca);
    est_config_free(cb);
}

static void test_upstream_name_matters_index_does_not(void **state)
{
    (void)state;
    est_config_t *ca = load("\"u\": {\"targets\": [\"http://127.0.0.1:8001\"]}, \"v\": {\"targets\": [\"http://127.0.0.1:8001\"]}", L1);
    est_config_t *cb = load("\"v\": {\"targets\": [\"http://127.0.0.1:8001\"]}, \"u\": {\"targets\": [\"http://127.0.0.1:8001\"]}", L1);
    assert_false(est_upstream_conf_equal(&ca->upstreams[0], &ca->upstreams[1])); /* u vs v */
    assert_true(est_upstream_conf_equal(est_config_find_upstream(ca, "u"), est_config_find_upstream(cb, "u")));
    assert_int_not_equal(est_config_find_upstream(ca, "u")->index, est_config_find_upstream(cb, "u")->index);
    est_config_free(ca);
    est_config_free(cb);
}

static void test_listener_equal(void **state)
{
    (void)state;
    const char *u = "\"u\": {\"targets\": [\"http://127.0.0.1:8001\"]}";
    est_config_t *ca = load(u, L1 ", {\"host\": \"127.0.0.1\", \"port\": 8081}");
    est_config_t *cb = load(u, "{\"host\": \"127.0.0.1\", \"port\": 8081}, {\"host\": \"0.0.0.0\", \"port\": 8080}");
    assert_true(est_listen_conf_equal(&ca->listen[1], &cb->listen[0]));
    assert_false(est_listen_conf_equal(&ca->listen[0], &cb->listen[1])); /* host differs */
    assert_false(est_listen_conf_equal(&ca->listen[0], &ca->listen[1])); /* port differs */
    est_config_free(ca);
    est_config_free(cb);
}

static void test_dns_and_admin_equal(void **state)
{
    (void)state;
    est_config_t *a = load("\"u\": {\"targets\": [\"http://127.0.0.1:8001\"]}", L1);
    est_config_t *b = load("\"u\": {\"targets\": [\"http://127.0.0.1:8001\"]}", L1);
    assert_true(est_dns_conf_equal(&a->dns, &b->dns));
    b->dns.min_ttl_ms++;
    assert_false(est_dns_conf_equal(&a->dns, &b->dns));
    est_admin_conf_t x = {.host = "127.0.0.1", .port = 9901}, y = x;
    assert_true(est_admin_conf_equal(&x, &y));
    assert_true(est_admin_conf_equal(NULL, NULL));
    assert_false(est_admin_conf_equal(&x, NULL));
    y.port = 9902;
    assert_false(est_admin_conf_equal(&x, &y));
    est_config_free(a);
    est_config_free(b);
}

static void test_generation_refcount(void **state)
{
    (void)state;
    est_gen_t *g = est_gen_create(load("\"u\": {\"targets\": [\"http://127.0.0.1:8001\"]}", L1), 7);
    assert_non_null(g);
    assert_int_equal(g->id, 7);
    assert_non_null(g->router);
    assert_null(g->listener_ssl[0]);
    est_gen_addref(g);
    est_gen_release(g);
    est_gen_release(g); /* frees config and router: checked by ASan/LSan builds */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_upstream_equal_when_unchanged),
        cmocka_unit_test(test_upstream_differs_on_any_setting),
        cmocka_unit_test(test_upstream_name_matters_index_does_not),
        cmocka_unit_test(test_listener_equal),
        cmocka_unit_test(test_dns_and_admin_equal),
        cmocka_unit_test(test_generation_refcount),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* The JWKS cache's timing rules (policy/jwks_rules.h): pure functions, no thread, no socket. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "policy/jwks_rules.h"

static void test_refresh_ahead_of_interval(void **state)
{
    /* 5 minutes: between 85% and 90% of it, whatever the jitter */
    uint64_t lo = UINT64_MAX, hi = 0;
    for (uint32_t r = 0; r != 100000; r += 7) {
        uint64_t d = est_jwks_refresh_delay(300000, r);
        assert_true(d >= 255000 && d <= 270000);
        lo = d < lo ? d : lo;
        hi = d > hi ? d : hi;
    }
    /* the jitter spreads the fetches: not every rnd gives the same delay */
    assert_true(hi - lo > 10000);
    assert_int_equal(est_jwks_refresh_delay(300000, 0), 270000);
    /* 2 s: 1.7 .. 1.8 s, strictly before the interval */
    for (uint32_t r = 0; r != 1000; ++r) {
        uint64_t d = est_jwks_refresh_delay(2000, r);
        assert_true(d >= 1700 && d <= 1800);
    }
}

static void test_refresh_floor(void **state)
{
    /* a tiny jwks_refresh does not turn into a flood of fetches */
    assert_int_equal(est_jwks_refresh_delay(1, 0), EST_JWKS_REFRESH_FLOOR_MS);
    assert_int_equal(est_jwks_refresh_delay(500, 12345), EST_JWKS_REFRESH_FLOOR_MS);
    assert_int_equal(est_jwks_refresh_delay(0, 0), EST_JWKS_REFRESH_FLOOR_MS);
    /* huge intervals do not overflow */
    uint64_t big = UINT64_MAX / 2;
    assert_true(est_jwks_refresh_delay(big, 0) < big && est_jwks_refresh_delay(big, 0) > big / 10 * 8);
}

static void test_retry_backoff_doubles_and_caps(void **state)
{
    /* rnd 0: no jitter; 1 s doubling up to min(refresh, 60 s) */
    assert_int_equal(est_jwks_retry_delay(300000, 1, 0), 1000);
    assert_int_equal(est_jwks_retry_delay(300000, 2, 0), 2000);
    assert_int_equal(est_jwks_retry_delay(300000, 3, 0), 4000);
    assert_int_equal(est_jwks_retry_delay(300000, 6, 0), 32000);
    assert_int_equal(est_jwks_retry_delay(300000, 7, 0), 60000);
    assert_int_equal(est_jwks_retry_delay(300000, 1000000, 0), 60000);
    /* capped by a shorter refresh interval */
    assert_int_equal(est_jwks_retry_delay(5000, 10, 0), 5000);
    assert_int_equal(est_jwks_retry_delay(2000, 3, 0), 2000);
    /* never below the minimum, even with a tiny refresh interval */
    assert_int_equal(est_jwks_retry_delay(10, 5, 0), 1000);
    /* jitter takes at most 10% off */
    for (uint32_t r = 0; r != 5000; ++r) {
        uint64_t d = est_jwks_retry_delay(300000, 3, r);
        assert_true(d >= 3600 && d <= 4000);
    }
}

static void test_refetch_rules(void **state)
{
    const uint64_t T = 1000000;
    /* never fetched: start */
    assert_int_equal(est_jwks_refetch_decide(T, 0, 0, 0, 0, 0), EST_JWKS_REFETCH_START);
    /* a fetch runs (or is wanted): join, whatever the times, first fetch included */
    assert_int_equal(est_jwks_refetch_decide(T, 1, 0, 0, 0, 0), EST_JWKS_REFETCH_JOIN);
    assert_int_equal(est_jwks_refetch_decide(T, 1, 1, T - 1, 1, T - 1), EST_JWKS_REFETCH_JOIN);
    /* started 9.999 s ago, still running is covered above; ended: counted from the end */
    assert_int_equal(est_jwks_refetch_decide(T, 0, 1, T - 20000, 1, T - 9999), EST_JWKS_REFETCH_REFUSE);
    assert_int_equal(est_jwks_refetch_decide(T, 0, 1, T - 20000, 1, T - 10000), EST_JWKS_REFETCH_START);
    /* counted from the start too (the later of the two) */
    assert_int_equal(est_jwks_refetch_decide(T, 0, 1, T - 9000, 1, T - 30000), EST_JWKS_REFETCH_REFUSE);
    assert_int_equal(est_jwks_refetch_decide(T, 0, 1, T - 10000, 0, 0), EST_JWKS_REFETCH_START);
    assert_int_equal(est_jwks_refetch_decide(T, 0, 1, T - 1, 0, 0), EST_JWKS_REFETCH_REFUSE);
    /* a clock that appears to go back refuses rather than underflows */
    assert_int_equal(est_jwks_refetch_decide(T, 0, 1, T + 5, 1, T + 5), EST_JWKS_REFETCH_REFUSE);
}

static est_upstream_conf_t *mk_up(est_target_conf_t *t, const char *name)
{
    static est_upstream_conf_t u[4];
    static int i;
    est_upstream_conf_t *p = &u[i++ % 4];
    memset(p, 0, sizeof(*p));
    p->name = (char *)name;
    p->targets = t;
    p->num_targets = 1;
    p->connect_timeout_ms = 1000;
    p->response_timeout_ms = 5000;
    p->retry.attempts = 2;
    p->tls.verify = 1;
    return p;
}

static void test_same_source(void **state)
{
    est_target_conf_t t = {.url = "https://idp.test", .is_tls = 1, .host = "idp.test", .port = 443, .authority = "idp.test"};
    est_target_conf_t t2 = {
        .url = "https://idp.test:8443", .is_tls = 1, .host = "idp.test", .port = 8443, .authority = "idp.test:8443"};
    est_jwt_conf_t a = {.jwks_url = "https://idp.test/jwks", .jwks_path = "/jwks", .jwks_upstream = mk_up(&t, "jwks:a")};
    est_jwt_conf_t b = {.jwks_url = "https://idp.test/jwks", .jwks_path = "/jwks", .jwks_upstream = mk_up(&t, "jwks:b")};
    /* the policy name is not part of the key: two policies share one source */
    assert_true(est_jwks_same_source(&a, &b));
    b.jwks_upstream->tls.ca_file = "ca.pem";
    assert_false(est_jwks_same_source(&a, &b));
    b.jwks_upstream->tls.ca_file = NULL;
    b.jwks_upstream->response_timeout_ms = 6000;
    assert_false(est_jwks_same_source(&a, &b));
    b.jwks_upstream->response_timeout_ms = 5000;
    assert_true(est_jwks_same_source(&a, &b));
    b.jwks_url = "https://idp.test/jwks?x=1";
    b.jwks_path = "/jwks?x=1";
    assert_false(est_jwks_same_source(&a, &b));
    est_jwt_conf_t c = {.jwks_url = "https://idp.test:8443/jwks", .jwks_path = "/jwks", .jwks_upstream = mk_up(&t2, "jwks:c")};
    assert_false(est_jwks_same_source(&a, &c));
    est_jwt_conf_t file = {.jwks_file = "x.json"};
    assert_false(est_jwks_same_source(&a, &file));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refresh_ahead_of_interval),
        cmocka_unit_test(test_refresh_floor),
        cmocka_unit_test(test_retry_backoff_doubles_and_caps),
        cmocka_unit_test(test_refetch_rules),
        cmocka_unit_test(test_same_source),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

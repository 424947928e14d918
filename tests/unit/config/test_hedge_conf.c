/*
 * Unit tests: an upstream's "hedge" (SPEC "Caching, coalescing and hedging"): its values and
 * defaults, and every malformed value with its FILE:LINE:COLUMN.
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
#define UPS(h) "{\"upstreams\": {\"u\": {\"targets\": [\"http://127.0.0.1:1\"],\n \"hedge\": " h "}}}"

static void test_values(void **state)
{
    (void)state;
    est_config_t *c = load_ok(F, "{\"upstreams\": {\"u\": {\"targets\": [\"http://127.0.0.1:1\"]}}}");
    assert_null(c->upstreams[0].hedge);
    est_config_free(c);

    c = load_ok(F, UPS("{\"delay\": \"50ms\"}"));
    const est_hedge_conf_t *h = c->upstreams[0].hedge;
    assert_non_null(h);
    assert_int_equal(h->delay_auto, 0);
    assert_int_equal(h->delay_ms, 50);
    assert_int_equal(h->max, 1);               /* default */
    assert_int_equal(h->budget_permille, 100); /* default 10% */
    est_config_free(c);

    c = load_ok(F, UPS("{\"delay\": \"auto\", \"max\": 3, \"budget\": \"2.5%\"}"));
    h = c->upstreams[0].hedge;
    assert_non_null(h);
    assert_int_equal(h->delay_auto, 1);
    assert_int_equal(h->max, 3);
    assert_int_equal(h->budget_permille, 25);
    est_config_free(c);
}

static const bad_case_t bad[] = {
    {"not an object",
     UPS("true"),
     {F ":2:11: upstreams.u.hedge: expected an object such as {\"delay\": \"auto\", \"max\": 1, \"budget\": \"10%\"}, got a "
        "boolean"}},
    {"unknown key",
     UPS("{\"delay\": \"5ms\", \"maxx\": 1}"),
     {F ":2:28: unknown key \"maxx\" in upstreams.u.hedge (did you mean \"max\"?)"}},
    {"no delay", UPS("{\"max\": 1}"), {F ":2:11: upstreams.u.hedge: missing \"delay\" (a duration such as \"50ms\", or \"auto\")"}},
    {"bad delay",
     UPS("{\"delay\": \"soon\"}"),
     {F ":2:21: upstreams.u.hedge.delay: bad duration \"soon\" (use e.g. \"250ms\", \"5s\", \"1m30s\")"}},
    {"delay not a string",
     UPS("{\"delay\": 50}"),
     {F ":2:21: upstreams.u.hedge.delay: expected a duration such as \"50ms\", or \"auto\", got an integer"}},
    {"max zero",
     UPS("{\"delay\": \"auto\", \"max\": 0}"),
     {F ":2:36: upstreams.u.hedge.max: expected an integer from 1 to 4, got 0"}},
    {"max too many",
     UPS("{\"delay\": \"auto\", \"max\": 5}"),
     {F ":2:36: upstreams.u.hedge.max: expected an integer from 1 to 4, got 5"}},
    {"budget zero",
     UPS("{\"delay\": \"auto\", \"budget\": \"0%\"}"),
     {F ":2:39: upstreams.u.hedge.budget: expected a share of the first attempts such as \"10%\" (more than 0%, at most 100%), got "
        "\"0%\""}},
    {"budget over",
     UPS("{\"delay\": \"auto\", \"budget\": \"101%\"}"),
     {F ":2:39: upstreams.u.hedge.budget: expected a share of the first attempts such as \"10%\" (more than 0%, at most 100%), got "
        "\"101%\""}},
    {"budget number",
     UPS("{\"delay\": \"auto\", \"budget\": 10}"),
     {F ":2:39: upstreams.u.hedge.budget: expected a share of the first attempts such as \"10%\" (more than 0%, at most 100%), got "
        "an integer"}},
};

static void test_bad(void **state)
{
    (void)state;
    run_bad_cases(F, bad, sizeof(bad) / sizeof(bad[0]));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_bad),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

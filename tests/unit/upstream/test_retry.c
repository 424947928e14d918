/*
 * Unit tests for the upstream retry policy (src/upstream/retry.c): may-retry by reason,
 * method and whether the request was sent, the deadline, the budget, the backoff.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include "upstream/retry.h"

static est_upstream_conf_t conf_with(unsigned attempts, unsigned on)
{
    est_upstream_conf_t c = {0};
    c.retry.attempts = attempts;
    c.retry.backoff_ms = 10;
    c.retry.max_backoff_ms = 100;
    c.retry.on = on;
    return c;
}

static est_retry_ask_t ask(est_uerr_t err, unsigned attempts, int idempotent, int sent)
{
    return (est_retry_ask_t){.attempts = attempts, .err = err, .is_idempotent = idempotent, .sent = sent,
                             .now = 1000, .active_requests = 1};
}

#define ALL (EST_RETRY_ON_CONNECT_FAILURE | EST_RETRY_ON_RESET | EST_RETRY_ON_TIMEOUT)

static void test_reasons(void **state)
{
    est_upstream_conf_t c = conf_with(3, ALL);
    unsigned seed = 1;
    uint64_t w = 0;
    est_retry_ask_t a;
    est_uerr_t yes[] = {EST_UERR_CONNECT, EST_UERR_CONNECT_TIMEOUT, EST_UERR_TLS, EST_UERR_RESET, EST_UERR_TIMEOUT};
    for (size_t i = 0; i != sizeof(yes) / sizeof(yes[0]); ++i) {
        a = ask(yes[i], 1, 1, 1);
        assert_int_equal(est_retry_decide(&c, &a, &seed, &w), EST_RETRY_YES);
        assert_true(w >= 5 && w <= 10);
    }
    /* never retried: a bad reply (it could be read two ways), dns, overloaded, deadline */
    est_uerr_t no[] = {EST_UERR_BAD_REPLY, EST_UERR_DNS, EST_UERR_OVERLOADED, EST_UERR_DEADLINE};
    for (size_t i = 0; i != sizeof(no) / sizeof(no[0]); ++i) {
        a = ask(no[i], 1, 1, 0);
        assert_int_equal(est_retry_decide(&c, &a, &seed, &w), EST_RETRY_NO);
    }
    /* a reason not in retry.on */
    c = conf_with(3, EST_RETRY_ON_RESET);
    a = ask(EST_UERR_TIMEOUT, 1, 1, 1);
    assert_int_equal(est_retry_decide(&c, &a, &seed, &w), EST_RETRY_NO);
    a = ask(EST_UERR_CONNECT, 1, 1, 0);
    assert_int_equal(est_retry_decide(&c, &a, &seed, &w), EST_RETRY_NO);
    /* no attempts left */
    c = conf_with(3, ALL);
    a = ask(EST_UERR_RESET, 3, 1, 1);
    assert_int_equal(est_retry_decide(&c, &a, &seed, &w), EST_RETRY_NO);
}

static void test_methods(void **state)
{
    est_upstream_conf_t c = conf_with(3, ALL);
    unsigned seed = 1;
    uint64_t w;
    /* a non-idempotent request: only when nothing was sent */
    est_retry_ask_t a = ask(EST_UERR_RESET, 1, 0, 1);
    assert_int_equal(est_retry_decide(&c, &a, &seed, &w), EST_RETRY_NO);
    a = ask(EST_UERR_TIMEOUT, 1, 0, 1);
    assert_int_equal(est_retry_decide(&c, &a, &seed, &w), EST_RETRY_NO);
    a = ask(EST_UERR_RESET, 1, 0, 0);
    assert_int_equal(est_retry_decide(&c, &a, &seed, &w), EST_RETRY_YES);
    a = ask(EST_UERR_CONNECT, 1, 0, 0);
    assert_int_equal(est_retry_decide(&c, &a, &seed, &w), EST_RETRY_YES);
    /* a listed status: the request was processed, so idempotent requests only */
    a = ask(EST_UERR_NONE, 1, 0, 1);
    assert_int_equal(est_retry_decide(&c, &a, &seed, &w), EST_RETRY_NO);
    a = ask(EST_UERR_NONE, 1, 1, 1);
    assert_int_equal(est_retry_decide(&c, &a, &seed, &w), EST_RETRY_YES);
}

static void test_deadline_and_budget(void **state)
{
    est_upstream_conf_t c = conf_with(5, ALL);
    unsigned seed = 1;
    uint64_t w;
    est_retry_ask_t a = ask(EST_UERR_RESET, 1, 1, 1);
    a.deadline = a.now + 4; /* the backoff (>= 5 ms) ends after it */
    assert_int_equal(est_retry_decide(&c, &a, &seed, &w), EST_RETRY_NO);
    a.deadline = a.now + 11;
    assert_int_equal(est_retry_decide(&c, &a, &seed, &w), EST_RETRY_YES);
    a.deadline = 0;
    a.active_requests = 10;
    a.active_retries = 3;
    assert_int_equal(est_retry_decide(&c, &a, &seed, &w), EST_RETRY_NO_BUDGET);
    a.active_retries = 2;
    assert_int_equal(est_retry_decide(&c, &a, &seed, &w), EST_RETRY_YES);
}

static void test_statuses(void **state)
{
    int st[] = {502, 503};
    est_upstream_conf_t c = conf_with(2, 0);
    c.retry.statuses = st;
    c.retry.num_statuses = 2;
    assert_true(est_retry_status_listed(&c, 503));
    assert_false(est_retry_status_listed(&c, 500));
}

static void test_backoff(void **state)
{
    unsigned seed = 7;
    for (unsigned n = 1; n != 10; ++n) {
        uint64_t d = 25;
        for (unsigned i = 1; i < n && d < 250; ++i)
            d *= 2;
        if (d > 250)
            d = 250;
        for (int k = 0; k != 50; ++k) {
            uint64_t w = est_retry_backoff_ms(25, 250, n, &seed);
            assert_true(w >= d / 2 && w <= d);
        }
    }
    assert_int_equal(est_retry_backoff_ms(0, 0, 3, &seed), 0);
    assert_true(est_retry_backoff_ms(1000, 5000, 200, &seed) <= 5000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reasons),  cmocka_unit_test(test_methods), cmocka_unit_test(test_deadline_and_budget),
        cmocka_unit_test(test_statuses), cmocka_unit_test(test_backoff),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

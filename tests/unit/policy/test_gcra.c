#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "policy/gcra.h"

#define SEC 1000000ULL

/* a fresh key admits burst + 1 at once, then one every per/rate */
static void test_burst_then_spacing(void **state)
{
    est_gcra_params_t p = est_gcra_params(10, 1000, 4); /* T = 100ms, bucket of 5 */
    assert_int_equal(p.interval_us, 100000);
    assert_int_equal(p.burst, 4);
    uint64_t tat = 0, now = 1000 * SEC;
    est_gcra_result_t r;
    for (int i = 0; i != 5; ++i) {
        est_gcra_decide(&p, now, &tat, &r);
        assert_true(r.allowed);
        assert_int_equal(r.remaining, 4 - i);
        assert_int_equal(r.retry_after_us, 0);
        assert_int_equal(r.reset_us, (uint64_t)(i + 1) * 100000);
    }
    uint64_t before = tat;
    est_gcra_decide(&p, now, &tat, &r);
    assert_false(r.allowed);
    assert_int_equal(tat, before); /* a refusal changes nothing */
    assert_int_equal(r.remaining, 0);
    assert_int_equal(r.retry_after_us, 100000);
    assert_int_equal(r.reset_us, 500000);

    /* 1us short of the next slot: still refused, 1us to wait */
    est_gcra_decide(&p, now + 99999, &tat, &r);
    assert_false(r.allowed);
    assert_int_equal(r.retry_after_us, 1);
    /* at the slot: one, then refused again */
    est_gcra_decide(&p, now + 100000, &tat, &r);
    assert_true(r.allowed);
    assert_int_equal(r.remaining, 0);
    est_gcra_decide(&p, now + 100000, &tat, &r);
    assert_false(r.allowed);
    assert_int_equal(r.retry_after_us, 100000);

    /* steady traffic at exactly the rate is always admitted */
    for (uint64_t t = now + 200000; t < now + 10 * SEC; t += 100000) {
        est_gcra_decide(&p, t, &tat, &r);
        assert_true(r.allowed);
    }
}

/* an idle key refills to the full bucket, never beyond */
static void test_refill_caps_at_bucket(void **state)
{
    est_gcra_params_t p = est_gcra_params(2, 1000, 1); /* T = 500ms, bucket of 2 */
    uint64_t tat = 0, now = 50 * SEC;
    est_gcra_result_t r;
    est_gcra_decide(&p, now, &tat, &r);
    est_gcra_decide(&p, now, &tat, &r);
    assert_true(r.allowed);
    est_gcra_decide(&p, now, &tat, &r);
    assert_false(r.allowed);
    now += 3600 * SEC; /* an hour idle: still only 2 */
    int n = 0;
    for (int i = 0; i != 10; ++i) {
        est_gcra_decide(&p, now, &tat, &r);
        n += r.allowed;
    }
    assert_int_equal(n, 2);
}

/* burst 0: exactly one per interval */
static void test_no_burst(void **state)
{
    est_gcra_params_t p = est_gcra_params(1, 1000, 0);
    uint64_t tat = 0, now = SEC;
    est_gcra_result_t r;
    est_gcra_decide(&p, now, &tat, &r);
    assert_true(r.allowed);
    assert_int_equal(r.remaining, 0);
    assert_int_equal(r.reset_us, SEC);
    est_gcra_decide(&p, now + SEC - 1, &tat, &r);
    assert_false(r.allowed);
    assert_int_equal(r.retry_after_us, 1);
    est_gcra_decide(&p, now + SEC, &tat, &r);
    assert_true(r.allowed);
}

static void test_params(void **state)
{
    /* 3 per second: 333333us (truncated) */
    assert_int_equal(est_gcra_params(3, 1000, 0).interval_us, 333333);
    /* more than a million per second: at least 1us */
    assert_int_equal(est_gcra_params(5000000, 1000, 0).interval_us, 1);
    /* rate 0 is refused by the config; here it never divides by zero */
    assert_int_equal(est_gcra_params(0, 1000, 0).interval_us, 1000000);
    /* a minute, a day */
    assert_int_equal(est_gcra_params(1000, 60000, 0).interval_us, 60000);
    assert_int_equal(est_gcra_params(1, 86400000, 0).interval_us, 86400 * SEC);
    /* per_ms * 1000 would overflow: capped at 2^52us (142 years), never wrapped to a tiny interval */
    assert_int_equal(est_gcra_params(1, UINT64_MAX, 0).interval_us, (uint64_t)1 << 52);
    assert_int_equal(est_gcra_params(2, UINT64_MAX, 0).interval_us, (uint64_t)1 << 52);
    assert_int_equal(est_gcra_params(1, 1000ULL * 86400 * 365 * 100, 0).interval_us, 1000000ULL * 86400 * 365 * 100);
    /* huge rate and huge per: T = per / rate, the remainder handled without overflow */
    assert_int_equal(est_gcra_params(UINT64_MAX / 2, UINT64_MAX - 1, 0).interval_us, 2000);
    assert_int_equal(est_gcra_params(UINT64_MAX / 2 + 1, UINT64_MAX, 0).interval_us, 1999); /* 1999.99.. truncated */
    assert_int_equal(est_gcra_params(UINT64_MAX, UINT64_MAX / 1000, 0).interval_us, 1);
    /* burst * T capped at 2^62us */
    assert_int_equal(est_gcra_params(1, 1000, UINT64_MAX).burst, ((uint64_t)1 << 62) / SEC);
    assert_int_equal(est_gcra_params(1000000, 1000, UINT64_MAX).burst, (uint64_t)1 << 62);
    assert_int_equal(est_gcra_params(1, 1000, 7).burst, 7);
}

static int count_allowed(const est_gcra_params_t *p, uint64_t now, uint64_t *tat, int n)
{
    est_gcra_result_t r;
    int allowed = 0;
    for (int i = 0; i != n; ++i) {
        est_gcra_decide(p, now, tat, &r);
        allowed += r.allowed;
    }
    return allowed;
}

/* huge per / burst: limits become strict or loose, never wrap around */
static void test_overflow_edges(void **state)
{
    est_gcra_result_t r;
    uint64_t tat, now = 10 * SEC;

    /* the longest interval: one request, then refused for the next 142 years */
    est_gcra_params_t p = est_gcra_params(1, UINT64_MAX, 0);
    tat = 0;
    assert_int_equal(count_allowed(&p, now, &tat, 5), 1);
    est_gcra_decide(&p, now + 1000 * SEC, &tat, &r);
    assert_false(r.allowed);
    assert_int_equal(r.retry_after_us, ((uint64_t)1 << 52) - 1000 * SEC);

    /* a huge interval with a burst: exactly burst + 1, not "everything" */
    p = est_gcra_params(1, UINT64_MAX / 1000, 3);
    tat = 0;
    assert_int_equal(count_allowed(&p, now, &tat, 10), 4);

    /* a bucket larger than time itself admits (remaining capped at the bucket) */
    p = est_gcra_params(1, 1000, UINT64_MAX);
    tat = 0;
    assert_int_equal(count_allowed(&p, now, &tat, 1000), 1000);
    est_gcra_decide(&p, now, &tat, &r);
    assert_true(r.allowed);
    assert_true(r.remaining <= p.burst);

    /* the clock near 2^64 (never in practice): a TAT that would not fit refuses */
    p = est_gcra_params(10, 1000, 5);
    tat = 0;
    assert_int_equal(count_allowed(&p, UINT64_MAX - 10, &tat, 10), 0);
    tat = 0;
    assert_int_equal(count_allowed(&p, UINT64_MAX - 100000 * 6, &tat, 10), 6);
    /* a saturated TAT refuses rather than wrapping to "fresh" */
    tat = UINT64_MAX;
    est_gcra_decide(&p, now, &tat, &r);
    assert_false(r.allowed);
    assert_int_equal(tat, UINT64_MAX);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_burst_then_spacing), cmocka_unit_test(test_refill_caps_at_bucket),
        cmocka_unit_test(test_no_burst),           cmocka_unit_test(test_params),
        cmocka_unit_test(test_overflow_edges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

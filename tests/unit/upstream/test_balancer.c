/*
 * Unit tests for target x address selection and passive health (src/upstream/balancer.c),
 * the retry backoff and the retry budget (src/upstream/client.c). No sockets: the upstream is
 * built by hand around IP answers, and time is passed explicitly.
 */
#include <arpa/inet.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "upstream/client_internal.h"
#include "upstream/dns_cache.h"

#define NOW 100000 /* any time base */

typedef struct bfix {
    est_upstream_set_t set;
    est_upstream_t u;
    est_upstream_conf_t uconf;
    est_target_conf_t tconf[3];
    est_target_t targets[3];
    est_dns_result_t *res[3];
} bfix_t;

/* `num_targets` targets; target i has `addrs[i]` addresses 10.0.i.1, 10.0.i.2, ... on port 80+i */
static void bfix_init(bfix_t *f, size_t num_targets, const size_t *addrs, est_balance_t balance)
{
    memset(f, 0, sizeof(*f));
    f->uconf.name = "test";
    f->uconf.targets = f->tconf;
    f->uconf.num_targets = num_targets;
    f->uconf.balance = balance;
    f->u.set = &f->set;
    f->u.conf = &f->uconf;
    f->u.targets = f->targets;
    h2o_linklist_init_anchor(&f->u.idle);
    h2o_linklist_init_anchor(&f->u.waiters);
    for (size_t t = 0; t != num_targets; ++t) {
        f->tconf[t].port = (uint16_t)(80 + t);
        f->targets[t].conf = &f->tconf[t];
        f->res[t] = est_dns_result_new(addrs[t]);
        assert_non_null(f->res[t]);
        for (size_t a = 0; a != addrs[t]; ++a) {
            struct sockaddr_in sin = {.sin_family = AF_INET};
            sin.sin_addr.s_addr = htonl(0x0a000000u | (uint32_t)(t << 8) | (uint32_t)(a + 1));
            assert_int_equal(est_dns_result_add(f->res[t], (struct sockaddr *)&sin, sizeof(sin)), 1);
        }
        f->res[t]->generation = t + 1;
    }
}

static void bfix_dispose(bfix_t *f)
{
    for (size_t t = 0; t != f->uconf.num_targets; ++t) {
        if (f->targets[t].res != NULL)
            est_dns_result_release(f->targets[t].res);
        free(f->targets[t].inflight);
        free(f->targets[t].health);
        est_dns_result_release(f->res[t]);
    }
}

/* One attempt: picks a target and an address like client.c's begin_attempt / on_resolved. */
static void pick(bfix_t *f, est_pick_t *x, int mode, uint64_t now)
{
    struct sockaddr_storage prev = x->sa;
    size_t prev_ti = x->target_index;
    est_balance_done(&f->u, x);
    size_t ti = est_balance_pick_target(&f->u, mode, prev_ti, now);
    assert_true(ti < f->uconf.num_targets);
    assert_int_equal(est_balance_pick_address(&f->u, x, ti, f->res[ti], mode, mode == EST_PICK_FIRST ? NULL : &prev, now), 0);
}

static void attempt_ends(bfix_t *f, est_pick_t *x, int connect_ok, uint64_t now)
{
    est_balance_report(&f->u, x, connect_ok, now);
    est_balance_done(&f->u, x);
}

/* ------------------------------------------------------------------ backoff and budget */

static void test_backoff_bounds(void **state)
{
    unsigned seed = 12345;
    /* backoff 25 ms, max 250 ms: d = 25, 50, 100, 200, 250, 250, ... */
    static const uint64_t d[] = {25, 50, 100, 200, 250, 250, 250};
    for (unsigned n = 1; n <= 7; ++n) {
        uint64_t lo = UINT64_MAX, hi = 0;
        for (int i = 0; i != 2000; ++i) {
            uint64_t w = est_retry_backoff_ms(25, 250, n, &seed);
            assert_true(w >= d[n - 1] / 2 && w <= d[n - 1]);
            lo = w < lo ? w : lo;
            hi = w > hi ? w : hi;
        }
        /* jitter really spreads over the interval */
        assert_true(lo <= d[n - 1] / 2 + d[n - 1] / 10);
        assert_true(hi >= d[n - 1] - d[n - 1] / 10);
    }
    /* no overflow with many attempts, and the cap holds */
    assert_true(est_retry_backoff_ms(1000, 5000, 200, &seed) <= 5000);
    assert_true(est_retry_backoff_ms(1000, 5000, 200, &seed) >= 2500);
    assert_int_equal(est_retry_backoff_ms(0, 0, 3, &seed), 0);
    uint64_t w = est_retry_backoff_ms(1, 1, 1, &seed);
    assert_true(w <= 1);
}

static void test_retry_budget(void **state)
{
    /* 20% of live requests, at least 3 concurrent retries */
    assert_true(est_retry_budget_allows(1, 0));
    assert_true(est_retry_budget_allows(1, 2));
    assert_false(est_retry_budget_allows(1, 3));
    assert_false(est_retry_budget_allows(10, 3)); /* 20% of 10 = 2 < 3 */
    assert_true(est_retry_budget_allows(20, 3));  /* 4 */
    assert_false(est_retry_budget_allows(20, 4));
    assert_true(est_retry_budget_allows(100, 19));
    assert_false(est_retry_budget_allows(100, 20));
    assert_false(est_retry_budget_allows(0, 3));
    assert_int_equal(EST_RETRY_BUDGET_PERCENT, 20);
    assert_int_equal(EST_RETRY_BUDGET_MIN, 3);
}

/* ------------------------------------------------------------------ health */

static void test_eject_duration(void **state)
{
    static const uint64_t want[] = {1000, 2000, 4000, 8000, 16000, 30000, 30000};
    for (unsigned n = 1; n <= 7; ++n)
        assert_int_equal(est_eject_duration_ms(n), want[n - 1]);
    assert_int_equal(est_eject_duration_ms(100000), 30000);
}

static void test_health_state_machine(void **state)
{
    est_addr_health_t h = {0};
    uint64_t now = NOW;
    assert_false(est_health_update(&h, 0, now));
    assert_false(est_health_update(&h, 0, now));
    assert_true(est_health_usable(&h, now));
    assert_false(est_health_update(&h, 1, now)); /* a success resets the count */
    assert_false(est_health_update(&h, 0, now));
    assert_false(est_health_update(&h, 0, now));
    assert_true(est_health_update(&h, 0, now)); /* third consecutive failure: ejected 1 s */
    assert_false(est_health_usable(&h, now));
    assert_false(est_health_usable(&h, now + 999));
    assert_false(est_health_update(&h, 0, now + 10)); /* failures while ejected change nothing */
    assert_int_equal(h.ejected_until, now + 1000);
    assert_true(est_health_usable(&h, now + 1000)); /* half-open */
    h.trial = 1;
    assert_false(est_health_usable(&h, now + 1000)); /* one trial at a time */
    h.trial = 0;
    assert_true(est_health_update(&h, 0, now + 1000)); /* the trial failed: 2 s */
    assert_int_equal(h.ejected_until, now + 3000);
    assert_true(est_health_update(&h, 0, now + 3000)); /* 4 s */
    assert_int_equal(h.ejected_until, now + 7000);
    assert_false(est_health_update(&h, 1, now + 7000)); /* the trial connected: admitted, backoff reset */
    assert_true(est_health_usable(&h, now + 7000));
    assert_int_equal(h.ejections, 0);
    assert_false(est_health_update(&h, 0, now + 8000));
    assert_false(est_health_update(&h, 0, now + 8000));
    assert_true(est_health_update(&h, 0, now + 8000));
    assert_int_equal(h.ejected_until, now + 9000); /* 1 s again */
}

/* ------------------------------------------------------------------ balancing */

static void test_round_robin_even_with_retries(void **state)
{
    bfix_t f;
    size_t addrs[2] = {1, 1};
    bfix_init(&f, 2, addrs, EST_BALANCE_ROUND_ROBIN);
    unsigned first[2] = {0}, load[2] = {0};
    for (int i = 0; i != 1000; ++i) {
        est_pick_t x = {0};
        pick(&f, &x, EST_PICK_FIRST, NOW);
        first[x.target_index]++;
        load[x.target_index]++;
        /* every third first attempt on target 0 fails (reset) and is retried */
        if (x.target_index == 0 && i % 3 == 0) {
            attempt_ends(&f, &x, 1, NOW);
            pick(&f, &x, EST_PICK_RETRY, NOW);
            assert_int_equal(x.target_index, 1); /* the retry goes to the other target */
            load[x.target_index]++;
        }
        attempt_ends(&f, &x, 1, NOW);
    }
    /* first attempts alternate exactly; a retry does not move the round robin */
    assert_int_equal(first[0], 500);
    assert_int_equal(first[1], 500);
    assert_int_equal(f.u.rr, 1000);
    bfix_dispose(&f);
}

static void test_addresses_of_a_name_all_used(void **state)
{
    bfix_t f;
    size_t addrs[2] = {3, 1};
    bfix_init(&f, 2, addrs, EST_BALANCE_ROUND_ROBIN);
    unsigned per_addr[3] = {0};
    for (int i = 0; i != 60; ++i) {
        est_pick_t x = {0};
        pick(&f, &x, EST_PICK_FIRST, NOW);
        if (x.target_index == 0)
            per_addr[x.addr_index]++;
        attempt_ends(&f, &x, 1, NOW);
    }
    assert_int_equal(per_addr[0], 10);
    assert_int_equal(per_addr[1], 10);
    assert_int_equal(per_addr[2], 10);
    bfix_dispose(&f);
}

static void test_retry_prefers_another_address(void **state)
{
    bfix_t f;
    size_t addrs[1] = {3};
    bfix_init(&f, 1, addrs, EST_BALANCE_ROUND_ROBIN);
    for (int i = 0; i != 9; ++i) {
        est_pick_t x = {0};
        pick(&f, &x, EST_PICK_FIRST, NOW);
        size_t a0 = x.addr_index, rr = f.targets[0].rr;
        attempt_ends(&f, &x, 0, NOW);
        pick(&f, &x, EST_PICK_RETRY, NOW);
        assert_int_not_equal(x.addr_index, a0);
        assert_int_equal(x.addr_index, (a0 + 1) % 3);
        assert_int_equal(f.targets[0].rr, rr); /* retries leave the round robin alone */
        pick(&f, &x, EST_PICK_SAME, NOW);    /* a transparent retry stays */
        assert_int_equal(x.addr_index, (a0 + 1) % 3);
        attempt_ends(&f, &x, 1, NOW);
    }
    bfix_dispose(&f);
}

static void test_least_request_over_addresses(void **state)
{
    bfix_t f;
    size_t addrs[1] = {3};
    bfix_init(&f, 1, addrs, EST_BALANCE_LEAST_REQUEST);
    est_pick_t x[6];
    memset(x, 0, sizeof(x));
    /* three in flight: one per address */
    for (int i = 0; i != 3; ++i)
        pick(&f, &x[i], EST_PICK_FIRST, NOW);
    assert_int_equal(f.targets[0].inflight[0], 1);
    assert_int_equal(f.targets[0].inflight[1], 1);
    assert_int_equal(f.targets[0].inflight[2], 1);
    /* address 1 finishes: the next two go there, then to whichever is least loaded */
    est_balance_done(&f.u, &x[1]);
    pick(&f, &x[3], EST_PICK_FIRST, NOW);
    assert_int_equal(x[3].addr_index, 1);
    est_balance_done(&f.u, &x[0]);
    est_balance_done(&f.u, &x[2]);
    pick(&f, &x[4], EST_PICK_FIRST, NOW);
    assert_int_not_equal(x[4].addr_index, 1);
    pick(&f, &x[5], EST_PICK_FIRST, NOW);
    assert_int_not_equal(x[5].addr_index, 1);
    assert_int_not_equal(x[5].addr_index, x[4].addr_index);
    for (int i = 3; i != 6; ++i)
        est_balance_done(&f.u, &x[i]);
    bfix_dispose(&f);
}

static void test_ejection_and_readmission(void **state)
{
    bfix_t f;
    size_t addrs[2] = {1, 1};
    bfix_init(&f, 2, addrs, EST_BALANCE_ROUND_ROBIN);
    uint64_t now = NOW;
    /* target 1 refuses connections: after 3 failures it is ejected */
    unsigned to_dead = 0;
    for (int i = 0; i != 20; ++i) {
        est_pick_t x = {0};
        pick(&f, &x, EST_PICK_FIRST, now);
        if (x.target_index == 1) {
            to_dead++;
            attempt_ends(&f, &x, 0, now);
            pick(&f, &x, EST_PICK_RETRY, now);
            assert_int_equal(x.target_index, 0);
        }
        attempt_ends(&f, &x, 1, now);
    }
    assert_int_equal(to_dead, 3);
    assert_int_equal(f.u.stats.ejections, 1);

    /* 999 ms later: still ejected */
    now += 999;
    for (int i = 0; i != 10; ++i) {
        est_pick_t x = {0};
        pick(&f, &x, EST_PICK_FIRST, now);
        assert_int_equal(x.target_index, 0);
        attempt_ends(&f, &x, 1, now);
    }
    /* 1 s after the ejection: half-open, exactly one trial while it is in flight */
    now += 1;
    est_pick_t trial = {0};
    int got_trial = 0;
    for (int i = 0; i != 4; ++i) {
        est_pick_t x = {0};
        pick(&f, &x, EST_PICK_FIRST, now);
        if (x.target_index == 1) {
            assert_false(got_trial);
            got_trial = 1;
            assert_true(x.health_trial);
            trial = x;
        } else {
            attempt_ends(&f, &x, 1, now);
        }
    }
    assert_true(got_trial);
    /* the trial fails: ejected again, for 2 s */
    attempt_ends(&f, &trial, 0, now);
    assert_int_equal(f.u.stats.ejections, 2);
    now += 1999;
    for (int i = 0; i != 4; ++i) {
        est_pick_t x = {0};
        pick(&f, &x, EST_PICK_FIRST, now);
        assert_int_equal(x.target_index, 0);
        attempt_ends(&f, &x, 1, now);
    }
    /* the next trial connects: target 1 is back in the rotation */
    now += 1;
    int back = 0;
    for (int i = 0; i != 2; ++i) {
        est_pick_t x = {0};
        pick(&f, &x, EST_PICK_FIRST, now);
        back += x.target_index == 1;
        attempt_ends(&f, &x, 1, now);
    }
    assert_int_equal(back, 1);
    unsigned per[2] = {0};
    for (int i = 0; i != 10; ++i) {
        est_pick_t x = {0};
        pick(&f, &x, EST_PICK_FIRST, now);
        per[x.target_index]++;
        attempt_ends(&f, &x, 1, now);
    }
    assert_int_equal(per[0], 5);
    assert_int_equal(per[1], 5);
    bfix_dispose(&f);
}

static void test_trial_without_verdict_is_released(void **state)
{
    bfix_t f;
    size_t addrs[2] = {1, 1};
    bfix_init(&f, 2, addrs, EST_BALANCE_ROUND_ROBIN);
    est_addr_health_t *h;
    est_pick_t x = {0};
    pick(&f, &x, EST_PICK_FIRST, NOW); /* resolves both targets' health arrays lazily */
    attempt_ends(&f, &x, 1, NOW);
    pick(&f, &x, EST_PICK_FIRST, NOW);
    assert_int_equal(x.target_index, 1);
    attempt_ends(&f, &x, 1, NOW);
    h = &f.targets[1].health[0];
    h->ejected_until = NOW; /* half-open now */
    h->ejections = 1;
    est_pick_t t = {0};
    pick(&f, &t, EST_PICK_FIRST, NOW);
    assert_int_equal(t.target_index, 0);
    attempt_ends(&f, &t, 1, NOW);
    pick(&f, &t, EST_PICK_FIRST, NOW);
    assert_int_equal(t.target_index, 1);
    assert_true(h->trial);
    est_balance_done(&f.u, &t); /* e.g. cancelled while connecting */
    assert_false(h->trial);
    assert_true(est_health_usable(h, NOW));
    bfix_dispose(&f);
}

static void test_all_ejected_still_tried(void **state)
{
    bfix_t f;
    size_t addrs[2] = {2, 1};
    bfix_init(&f, 2, addrs, EST_BALANCE_ROUND_ROBIN);
    /* every address of every target fails until all are ejected */
    for (int i = 0; i != 30; ++i) {
        est_pick_t x = {0};
        pick(&f, &x, EST_PICK_FIRST, NOW);
        attempt_ends(&f, &x, 0, NOW);
    }
    assert_int_equal(f.u.stats.ejections, 3);
    unsigned per[2] = {0};
    for (int i = 0; i != 10; ++i) {
        est_pick_t x = {0};
        pick(&f, &x, EST_PICK_FIRST, NOW + 1);
        per[x.target_index]++;
        attempt_ends(&f, &x, 0, NOW + 1);
    }
    /* still balanced over everything */
    assert_int_equal(per[0], 5);
    assert_int_equal(per[1], 5);
    bfix_dispose(&f);
}

static void test_least_request_skips_ejected_target(void **state)
{
    bfix_t f;
    size_t addrs[2] = {1, 1};
    bfix_init(&f, 2, addrs, EST_BALANCE_LEAST_REQUEST);
    for (int i = 0; i != 12; ++i) {
        est_pick_t x = {0};
        pick(&f, &x, EST_PICK_FIRST, NOW);
        attempt_ends(&f, &x, x.target_index == 0, NOW);
    }
    /* target 1 is ejected: even with requests in flight on target 0, new ones go there */
    est_pick_t x[3];
    memset(x, 0, sizeof(x));
    for (int i = 0; i != 3; ++i) {
        pick(&f, &x[i], EST_PICK_FIRST, NOW);
        assert_int_equal(x[i].target_index, 0);
    }
    for (int i = 0; i != 3; ++i)
        est_balance_done(&f.u, &x[i]);
    bfix_dispose(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backoff_bounds),
        cmocka_unit_test(test_retry_budget),
        cmocka_unit_test(test_eject_duration),
        cmocka_unit_test(test_health_state_machine),
        cmocka_unit_test(test_round_robin_even_with_retries),
        cmocka_unit_test(test_addresses_of_a_name_all_used),
        cmocka_unit_test(test_retry_prefers_another_address),
        cmocka_unit_test(test_least_request_over_addresses),
        cmocka_unit_test(test_ejection_and_readmission),
        cmocka_unit_test(test_trial_without_verdict_is_released),
        cmocka_unit_test(test_all_ejected_still_tried),
        cmocka_unit_test(test_least_request_skips_ejected_target),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

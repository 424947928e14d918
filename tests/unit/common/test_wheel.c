/*
 * Unit tests for the timer wheel (src/common/wheel.c): never early, at most a tick late,
 * across revolutions (512 x 5 ms = 2.56 s), unlinked entries never fire, due ones fire at
 * the next tick, callbacks may relink. Driven by est_wheel_run with a synthetic clock, and
 * once on a real h2o loop.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "common/wheel.h"

typedef struct rec {
    est_wheel_entry_t e;
    est_wheel_t *w;
    uint64_t now_at_fire, fired_at, want;
    int fired, relink; /* relink: fires again 20 ms later (a callback linking an entry) */
} rec_t;

static uint64_t clock_now;

static void on_fire(est_wheel_entry_t *e)
{
    rec_t *r = H2O_STRUCT_FROM_MEMBER(rec_t, e, e);
    ++r->fired;
    r->fired_at = clock_now;
    if (r->relink) {
        r->relink = 0;
        r->want = r->fired_at + 20;
        est_wheel_link(r->w, &r->e, r->want, clock_now);
    }
}

static void test_synthetic_clock(void **state)
{
    enum { N = 600 };
    static rec_t recs[N];
    est_wheel_t w;
    est_wheel_init(&w, NULL);
    srand(11);
    clock_now = 1000003;
    uint64_t start = clock_now;
    for (size_t i = 0; i != N; ++i) {
        memset(&recs[i], 0, sizeof(recs[i]));
        recs[i].e.cb = on_fire;
        recs[i].w = &w;
        /* spread over 0..3.2 s (past one revolution), some already due, some on tick edges */
        uint64_t off = i % 10 == 0 ? 0 : i % 10 == 1 ? (uint64_t)(i % 640) * 5 : (uint64_t)(rand() % 3200);
        recs[i].want = i % 25 == 0 ? start - 7 : start + off;
        recs[i].relink = i % 50 == 3;
        est_wheel_link(&w, &recs[i].e, recs[i].want, clock_now);
        if (i % 7 == 0) /* relinked to a later expiry: only that one counts */
            est_wheel_link(&w, &recs[i].e, recs[i].want += 100, clock_now);
    }
    for (size_t i = 5; i < N; i += 40) /* unlinked: must never fire */
        est_wheel_unlink(&recs[i].e);
    assert_int_equal(w.count, N - (N - 5 + 39) / 40);
    /* the clock moves by uneven steps, as the loop's ticks do */
    uint64_t worst = 0;
    for (int step = 0; w.count != 0 && step != 100000; ++step) {
        clock_now += 1 + (uint64_t)(rand() % 9);
        est_wheel_run(&w, clock_now);
    }
    assert_int_equal(w.count, 0);
    for (size_t i = 0; i != N; ++i) {
        if (i >= 5 && (i - 5) % 40 == 0) {
            assert_int_equal(recs[i].fired, 0);
            continue;
        }
        assert_int_equal(recs[i].fired, i % 50 == 3 ? 2 : 1);
        uint64_t due = recs[i].want < start ? start : recs[i].want;
        assert_true(recs[i].fired_at >= recs[i].want);
        if (recs[i].fired_at - due > worst)
            worst = recs[i].fired_at - due;
    }
    /* one tick plus one clock step late at most */
    assert_true(worst < EST_WHEEL_TICK_MS + 10);
    est_wheel_dispose(&w);
}

static void test_long_gap(void **state)
{
    /* the clock jumps over several revolutions: every due entry fires once, later ones wait */
    est_wheel_t w;
    est_wheel_init(&w, NULL);
    rec_t a = {.e.cb = on_fire, .w = &w}, b = {.e.cb = on_fire, .w = &w};
    clock_now = 50;
    est_wheel_link(&w, &a.e, 100, clock_now);
    est_wheel_link(&w, &b.e, 100 + 3 * EST_WHEEL_SLOTS * EST_WHEEL_TICK_MS, clock_now);
    clock_now = 100 + 2 * EST_WHEEL_SLOTS * EST_WHEEL_TICK_MS;
    est_wheel_run(&w, clock_now);
    assert_int_equal(a.fired, 1);
    assert_int_equal(b.fired, 0);
    clock_now = 100 + 3 * EST_WHEEL_SLOTS * EST_WHEEL_TICK_MS;
    est_wheel_run(&w, clock_now);
    assert_int_equal(b.fired, 1);
    assert_int_equal(w.count, 0);
    est_wheel_dispose(&w);
}

static void on_loop_fire(est_wheel_entry_t *e)
{
    rec_t *r = H2O_STRUCT_FROM_MEMBER(rec_t, e, e);
    ++r->fired;
    r->fired_at = h2o_now(r->w->loop);
}

static void test_on_a_loop(void **state)
{
    h2o_loop_t *loop = h2o_evloop_create();
    est_wheel_t w;
    est_wheel_init(&w, loop);
    h2o_evloop_run(loop, 0);
    uint64_t start = h2o_now(loop);
    rec_t r[3];
    for (int i = 0; i != 3; ++i) {
        memset(&r[i], 0, sizeof(r[i]));
        r[i].e.cb = on_loop_fire;
        r[i].w = &w;
        r[i].want = start + 20 * (uint64_t)i;
        est_wheel_link(&w, &r[i].e, r[i].want, start);
    }
    for (int k = 0; k != 500 && w.count != 0; ++k)
        h2o_evloop_run(loop, 10);
    assert_int_equal(w.count, 0);
    for (int i = 0; i != 3; ++i) {
        assert_int_equal(r[i].fired, 1);
        assert_true(r[i].fired_at >= r[i].want);
        assert_true(r[i].fired_at < r[i].want + 500);
    }
    est_wheel_dispose(&w);
    h2o_evloop_run(loop, 0);
    h2o_evloop_destroy(loop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_synthetic_clock),
        cmocka_unit_test(test_long_gap),
        cmocka_unit_test(test_on_a_loop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * Unit tests for request coalescing (src/cache/coalesce.c): one leader per key, waiters
 * sharing its reply by reference (errors included), waiters leaving, the leader abandoning
 * (the oldest waiter takes over), the waiter bound, callbacks that re-enter the table, destroy.
 * Every reply reference handed out is released by the tests, so ASan's leak check counts them.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "cache/coalesce.h"

#define S(lit) lit, sizeof(lit) - 1

typedef struct rec {
    est_coalesce_waiter_t w;
    int called;
    est_cache_entry_t *reply;
    const char *errstr;
    /* what the callback does besides recording */
    est_coalesce_t *table;
    struct rec *leave_other;
    int rejoin;
    est_coalesce_role_t rejoin_role;
    est_coalesce_flight_t *rejoin_flight;
    int done_when_promoted;
    est_cache_entry_t *done_reply;
} rec_t;

static void on_reply(est_coalesce_waiter_t *w, est_cache_entry_t *reply, const char *errstr)
{
    rec_t *r = (rec_t *)w;
    ++r->called;
    r->reply = reply;
    r->errstr = errstr;
    if (r->leave_other != NULL)
        est_coalesce_leave(&r->leave_other->w);
    if (r->rejoin) {
        rec_t dummy = {0};
        dummy.w.cb = on_reply;
        r->rejoin_role = est_coalesce_join(r->table, S("k"), &dummy.w, &r->rejoin_flight);
    }
    if (errstr == est_coalesce_err_promoted && r->done_when_promoted)
        est_coalesce_done(w->promoted, r->done_reply, NULL);
}

static est_cache_entry_t *reply_entry(int status, const char *body)
{
    est_cache_entry_init_t init = {.status = status, .body_reserve = strlen(body)};
    est_cache_entry_t *e = est_cache_entry_create(&init);
    assert_non_null(e);
    assert_int_equal(est_cache_entry_append(e, body, strlen(body)), 0);
    return e;
}

static void init_rec(rec_t *r, est_coalesce_t *c)
{
    memset(r, 0, sizeof(*r));
    r->w.cb = on_reply;
    r->w.data = r;
    r->table = c;
}

static void release_reply(rec_t *r)
{
    est_cache_entry_release(r->reply);
    r->reply = NULL;
}

static void test_leader_and_waiters_share_the_reply(void **state)
{
    (void)state;
    est_coalesce_t *c = est_coalesce_create(0);
    est_coalesce_flight_t *f, *f2, *unused = NULL;
    rec_t r[4];
    for (int i = 0; i < 4; ++i)
        init_rec(&r[i], c);
    assert_int_equal(est_coalesce_join(c, S("k"), &r[0].w, &f), EST_COALESCE_LEADER);
    for (int i = 1; i < 4; ++i)
        assert_int_equal(est_coalesce_join(c, S("k"), &r[i].w, &unused), EST_COALESCE_WAITER);
    assert_null(unused);
    assert_int_equal(est_coalesce_join(c, S("other"), &r[0].w, &f2), EST_COALESCE_LEADER);
    assert_int_equal(est_coalesce_size(c), 2);
    assert_int_equal(est_coalesce_waiters(f), 3);
    for (int i = 1; i < 4; ++i)
        assert_int_equal(r[i].called, 0); /* never synchronously from join */

    est_cache_entry_t *e = reply_entry(200, "shared body");
    est_coalesce_done(f, e, NULL);
    assert_int_equal(est_coalesce_size(c), 1);
    for (int i = 1; i < 4; ++i) {
        assert_int_equal(r[i].called, 1);
        assert_ptr_equal(r[i].reply, e); /* by reference */
        assert_null(r[i].errstr);
    }
    assert_int_equal(atomic_load(&e->_refcnt), 4); /* the leader's and one per waiter */
    assert_true(e->_frozen);
    for (int i = 1; i < 4; ++i)
        release_reply(&r[i]);
    est_cache_entry_release(e);
    /* the key is free again: the next request leads */
    assert_int_equal(est_coalesce_join(c, S("k"), &r[1].w, &f), EST_COALESCE_LEADER);
    est_coalesce_abandon(f);
    est_coalesce_abandon(f2);
    assert_int_equal(est_coalesce_size(c), 0);
    est_coalesce_destroy(c);
}

static void test_errors_are_shared(void **state)
{
    (void)state;
    static const char upstream_timeout[] = "upstream timeout";
    est_coalesce_t *c = est_coalesce_create(0);
    est_coalesce_flight_t *f;
    rec_t a, b, d;
    init_rec(&a, c);
    init_rec(&b, c);
    init_rec(&d, c);
    /* an error the leader reports as such */
    assert_int_equal(est_coalesce_join(c, S("k"), &a.w, &f), EST_COALESCE_LEADER);
    assert_int_equal(est_coalesce_join(c, S("k"), &b.w, NULL), EST_COALESCE_WAITER);
    est_coalesce_done(f, NULL, upstream_timeout);
    assert_ptr_equal(b.errstr, upstream_timeout);
    assert_null(b.reply);
    /* an error reply (a 503) shared like any reply */
    init_rec(&b, c);
    assert_int_equal(est_coalesce_join(c, S("k"), &a.w, &f), EST_COALESCE_LEADER);
    assert_int_equal(est_coalesce_join(c, S("k"), &b.w, NULL), EST_COALESCE_WAITER);
    est_cache_entry_t *e = reply_entry(503, "{\"error\":{}}");
    est_coalesce_done(f, e, "ignored with a reply");
    assert_int_equal(b.reply->status, 503);
    assert_null(b.errstr);
    release_reply(&b);
    est_cache_entry_release(e);
    /* no reply to share (too large, streamed): waiters go themselves */
    init_rec(&b, c);
    assert_int_equal(est_coalesce_join(c, S("k"), &a.w, &f), EST_COALESCE_LEADER);
    assert_int_equal(est_coalesce_join(c, S("k"), &b.w, NULL), EST_COALESCE_WAITER);
    assert_int_equal(est_coalesce_join(c, S("k"), &d.w, NULL), EST_COALESCE_WAITER);
    est_coalesce_done(f, NULL, NULL);
    assert_ptr_equal(b.errstr, est_coalesce_err_unshareable);
    assert_ptr_equal(d.errstr, est_coalesce_err_unshareable);
    est_coalesce_destroy(c);
}

static void test_waiter_leaves(void **state)
{
    (void)state;
    est_coalesce_t *c = est_coalesce_create(0);
    est_coalesce_flight_t *f;
    rec_t lead, r[3];
    init_rec(&lead, c);
    assert_int_equal(est_coalesce_join(c, S("k"), &lead.w, &f), EST_COALESCE_LEADER);
    for (int i = 0; i < 3; ++i) {
        init_rec(&r[i], c);
        assert_int_equal(est_coalesce_join(c, S("k"), &r[i].w, NULL), EST_COALESCE_WAITER);
    }
    /* the middle one, then the last, then the first: list stays whole */
    est_coalesce_leave(&r[1].w);
    est_coalesce_leave(&r[1].w); /* twice: no-op */
    assert_int_equal(est_coalesce_waiters(f), 2);
    est_coalesce_leave(&r[2].w);
    assert_int_equal(est_coalesce_waiters(f), 1);
    rec_t late;
    init_rec(&late, c);
    assert_int_equal(est_coalesce_join(c, S("k"), &late.w, NULL), EST_COALESCE_WAITER);
    est_coalesce_leave(&r[0].w);
    est_cache_entry_t *e = reply_entry(200, "x");
    est_coalesce_done(f, e, NULL); /* the leader goes on regardless */
    for (int i = 0; i < 3; ++i)
        assert_int_equal(r[i].called, 0);
    assert_int_equal(late.called, 1);
    est_coalesce_leave(&late.w); /* after the callback: no-op */
    release_reply(&late);
    est_cache_entry_release(e);
    est_coalesce_destroy(c);
}

static void test_leader_abandons(void **state)
{
    (void)state;
    est_coalesce_t *c = est_coalesce_create(0);
    est_coalesce_flight_t *f;
    rec_t lead, a, b, n;
    init_rec(&lead, c);
    init_rec(&a, c);
    init_rec(&b, c);
    init_rec(&n, c);
    assert_int_equal(est_coalesce_join(c, S("k"), &lead.w, &f), EST_COALESCE_LEADER);
    assert_int_equal(est_coalesce_join(c, S("k"), &a.w, NULL), EST_COALESCE_WAITER);
    assert_int_equal(est_coalesce_join(c, S("k"), &b.w, NULL), EST_COALESCE_WAITER);
    /* the leader's client left and its exchange was cancelled: the oldest waiter leads */
    est_coalesce_abandon(f);
    assert_int_equal(a.called, 1);
    assert_ptr_equal(a.errstr, est_coalesce_err_promoted);
    assert_ptr_equal(a.w.promoted, f);
    assert_int_equal(b.called, 0); /* not failed */
    assert_int_equal(est_coalesce_size(c), 1);
    /* newcomers still join that flight */
    assert_int_equal(est_coalesce_join(c, S("k"), &n.w, NULL), EST_COALESCE_WAITER);
    est_cache_entry_t *e = reply_entry(200, "from the new leader");
    est_coalesce_done(a.w.promoted, e, NULL);
    assert_ptr_equal(b.reply, e);
    assert_ptr_equal(n.reply, e);
    release_reply(&b);
    release_reply(&n);
    est_cache_entry_release(e);
    assert_int_equal(est_coalesce_size(c), 0);

    /* a promoted waiter that finishes at once (inside abandon), with another still waiting */
    init_rec(&a, c);
    init_rec(&b, c);
    a.done_when_promoted = 1;
    a.done_reply = e = reply_entry(502, "err");
    assert_int_equal(est_coalesce_join(c, S("k"), &lead.w, &f), EST_COALESCE_LEADER);
    assert_int_equal(est_coalesce_join(c, S("k"), &a.w, NULL), EST_COALESCE_WAITER);
    assert_int_equal(est_coalesce_join(c, S("k"), &b.w, NULL), EST_COALESCE_WAITER);
    est_coalesce_abandon(f);
    assert_int_equal(b.reply->status, 502);
    release_reply(&b);
    est_cache_entry_release(e);
    assert_int_equal(est_coalesce_size(c), 0);

    /* abandoned with nobody waiting: the flight ends */
    assert_int_equal(est_coalesce_join(c, S("k"), &lead.w, &f), EST_COALESCE_LEADER);
    est_coalesce_abandon(f);
    assert_int_equal(est_coalesce_size(c), 0);
    est_coalesce_destroy(c);
}

static void test_bounds(void **state)
{
    (void)state;
    est_coalesce_t *c = est_coalesce_create(3);
    est_coalesce_flight_t *f;
    rec_t lead, r[4];
    init_rec(&lead, c);
    assert_int_equal(est_coalesce_join(c, S("k"), &lead.w, &f), EST_COALESCE_LEADER);
    for (int i = 0; i < 3; ++i) {
        init_rec(&r[i], c);
        assert_int_equal(est_coalesce_join(c, S("k"), &r[i].w, NULL), EST_COALESCE_WAITER);
    }
    init_rec(&r[3], c);
    assert_int_equal(est_coalesce_join(c, S("k"), &r[3].w, NULL), EST_COALESCE_ALONE);
    est_coalesce_leave(&r[0].w); /* room again */
    assert_int_equal(est_coalesce_join(c, S("k"), &r[3].w, NULL), EST_COALESCE_WAITER);
    /* a key over EST_CACHE_MAX_KEY is never coalesced */
    char *huge = calloc(1, EST_CACHE_MAX_KEY + 1);
    assert_non_null(huge);
    est_coalesce_flight_t *g = NULL;
    assert_int_equal(est_coalesce_join(c, huge, EST_CACHE_MAX_KEY + 1, &lead.w, &g), EST_COALESCE_ALONE);
    assert_null(g);
    assert_int_equal(est_coalesce_join(c, huge, EST_CACHE_MAX_KEY, &lead.w, &g), EST_COALESCE_LEADER);
    free(huge);
    est_coalesce_done(g, NULL, NULL);
    /* an empty key is a key */
    assert_int_equal(est_coalesce_join(c, "", 0, &lead.w, &g), EST_COALESCE_LEADER);
    est_coalesce_abandon(g);
    est_coalesce_done(f, NULL, NULL);
    est_coalesce_destroy(c);
}

static void test_callbacks_reenter(void **state)
{
    (void)state;
    est_coalesce_t *c = est_coalesce_create(0);
    est_coalesce_flight_t *f;
    rec_t lead, a, b, d;
    init_rec(&lead, c);
    init_rec(&a, c);
    init_rec(&b, c);
    init_rec(&d, c);
    assert_int_equal(est_coalesce_join(c, S("k"), &lead.w, &f), EST_COALESCE_LEADER);
    assert_int_equal(est_coalesce_join(c, S("k"), &a.w, NULL), EST_COALESCE_WAITER);
    assert_int_equal(est_coalesce_join(c, S("k"), &b.w, NULL), EST_COALESCE_WAITER);
    assert_int_equal(est_coalesce_join(c, S("k"), &d.w, NULL), EST_COALESCE_WAITER);
    /* a's callback makes b's client leave and starts a new flight for the same key */
    a.leave_other = &b;
    a.rejoin = 1;
    est_coalesce_done(f, NULL, "boom");
    assert_int_equal(a.called, 1);
    assert_int_equal(b.called, 0);
    assert_int_equal(d.called, 1);
    assert_int_equal(a.rejoin_role, EST_COALESCE_LEADER); /* the finished flight had left the table */
    assert_int_equal(est_coalesce_size(c), 1);
    est_coalesce_abandon(a.rejoin_flight);
    assert_int_equal(est_coalesce_size(c), 0);
    est_coalesce_destroy(c);
}

static void test_many_waiters_one_body(void **state)
{
    (void)state;
    enum { N = 1000 };
    est_coalesce_t *c = est_coalesce_create(0);
    rec_t *r = calloc(N, sizeof(*r));
    assert_non_null(r);
    est_coalesce_flight_t *f = NULL, *g;
    int leaders = 0;
    for (int i = 0; i < N; ++i) {
        init_rec(&r[i], c);
        est_coalesce_role_t role = est_coalesce_join(c, S("GET /catalog/1"), &r[i].w, &g);
        if (role == EST_COALESCE_LEADER) {
            ++leaders;
            f = g;
        }
    }
    assert_int_equal(leaders, 1); /* one backend request */
    est_cache_entry_t *e = reply_entry(200, "{\"id\":1}");
    est_coalesce_done(f, e, NULL);
    for (int i = 1; i < N; ++i) {
        assert_int_equal(r[i].called, 1);
        assert_ptr_equal(r[i].reply->body, e->body);
        release_reply(&r[i]);
    }
    assert_int_equal(atomic_load(&e->_refcnt), 1);
    est_cache_entry_release(e);
    free(r);
    est_coalesce_destroy(c);
}

static void test_destroy_calls_waiters(void **state)
{
    (void)state;
    est_coalesce_t *c = est_coalesce_create(0);
    est_coalesce_flight_t *f;
    rec_t lead, a, b;
    init_rec(&lead, c);
    init_rec(&a, c);
    init_rec(&b, c);
    char key[16];
    for (int i = 0; i < 40; ++i) { /* enough flights to grow the table */
        snprintf(key, sizeof(key), "k%d", i);
        assert_int_equal(est_coalesce_join(c, key, strlen(key), &lead.w, &f), EST_COALESCE_LEADER);
    }
    assert_int_equal(est_coalesce_join(c, S("k7"), &a.w, NULL), EST_COALESCE_WAITER);
    assert_int_equal(est_coalesce_join(c, S("k39"), &b.w, NULL), EST_COALESCE_WAITER);
    assert_int_equal(est_coalesce_size(c), 40);
    est_coalesce_destroy(c);
    assert_ptr_equal(a.errstr, est_coalesce_err_shutdown);
    assert_ptr_equal(b.errstr, est_coalesce_err_shutdown);
    est_coalesce_destroy(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_leader_and_waiters_share_the_reply),
        cmocka_unit_test(test_errors_are_shared),
        cmocka_unit_test(test_waiter_leaves),
        cmocka_unit_test(test_leader_abandons),
        cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_callbacks_reenter),
        cmocka_unit_test(test_many_waiters_one_body),
        cmocka_unit_test(test_destroy_calls_waiters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * Unit tests: a worker's view of a generation (server/worker_gen.c). A request pins the
 * current view; a switch keeps a pinned old view (and its generation) alive, and the last
 * unpin destroys it later, from the loop, never inside the unpin itself; an unpinned old view
 * goes at once.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/worker_gen.h"
#include "upstream/dns.h"

static est_gen_t *make_gen(uint64_t id)
{
    static const char text[] = "{\"listen\": [{\"host\": \"127.0.0.1\", \"port\": 8080}],"
                               " \"upstreams\": {\"u\": {\"targets\": [\"http://127.0.0.1:8001\"]}},"
                               " \"routes\": [{\"path\": \"/a\", \"proxy\": {\"upstream\": \"u\"}}]}";
    est_errors_t errs = {0};
    est_config_t *conf = est_config_load_buffer("t.json", text, sizeof(text) - 1, &errs);
    est_errors_clear(&errs);
    if (conf == NULL)
        return NULL;
    return est_gen_create(conf, id);
}

static size_t refs(est_gen_t *g)
{
    return atomic_load(&g->_refs);
}

static int setup(void **state)
{
    est_worker_t *w = calloc(1, sizeof(*w));
    w->ctx.loop = h2o_evloop_create();
    h2o_linklist_init_anchor(&w->old_gens);
    est_gen_t *gen = make_gen(1);
    if (gen == NULL)
        return -1;
    w->dns = est_dns_create(w->ctx.loop, &gen->conf->dns);
    est_worker_metrics_init(&w->metrics, gen->conf->num_routes);
    if (w->dns == NULL || (w->current = est_worker_gen_create(w, gen)) == NULL)
        return -1;
    *state = w;
    return 0;
}

static int teardown(void **state)
{
    est_worker_t *w = *state;
    while (!h2o_linklist_is_empty(&w->old_gens))
        est_worker_gen_retire(H2O_STRUCT_FROM_MEMBER(est_worker_gen_t, link, w->old_gens.next));
    est_worker_gen_t *cur = w->current;
    w->current = NULL;
    est_worker_gen_retire(cur);
    est_dns_destroy(w->dns);
    est_worker_metrics_dispose(&w->metrics);
    for (size_t i = 0; i != w->num_timeouts; ++i) {
        h2o_timeout_dispose(w->ctx.loop, w->timeouts[i]);
        free(w->timeouts[i]);
    }
    free(w->timeouts);
    for (int i = 0; i != 5; ++i)
        h2o_evloop_run(w->ctx.loop, 0);
    h2o_evloop_destroy(w->ctx.loop);
    free(w);
    return 0;
}

static void run_loop(est_worker_t *w)
{
    for (int i = 0; i != 5; ++i)
        h2o_evloop_run(w->ctx.loop, 0);
}

static void test_pinned_view_outlives_the_switch(void **state)
{
    est_worker_t *w = *state;
    est_worker_gen_t *old = w->current;
    est_gen_t *g1 = old->gen;
    est_gen_addref(g1); /* the test's own reference, to watch the view's */
    assert_int_equal(refs(g1), 2);

    assert_ptr_equal(est_worker_gen_pin(w), old);
    assert_ptr_equal(est_worker_gen_pin(w), old);
    assert_int_equal(old->inflight, 2);

    est_gen_t *g2 = make_gen(2);
    assert_non_null(g2);
    est_worker_gen_t *wg = est_worker_gen_create(w, g2);
    assert_non_null(wg);
    est_worker_gen_switch(w, wg);
    assert_ptr_equal(w->current, wg);
    assert_ptr_equal(w->old_gens.next, &old->link); /* kept: two requests pin it */
    assert_int_equal(refs(g1), 2);

    /* new requests pin the new view */
    assert_ptr_equal(est_worker_gen_pin(w), wg);
    est_worker_gen_unpin(wg);
    assert_int_equal(wg->inflight, 0);

    est_worker_gen_unpin(old);
    run_loop(w);
    assert_int_equal(refs(g1), 2); /* one pin left */
    est_worker_gen_unpin(old);
    assert_int_equal(refs(g1), 2); /* not destroyed inside the unpin (a request pool's dispose) */
    assert_false(h2o_linklist_is_empty(&w->old_gens));
    run_loop(w);
    assert_true(h2o_linklist_is_empty(&w->old_gens)); /* destroyed from the loop */
    assert_int_equal(refs(g1), 1);
    est_gen_release(g1);
}

static void test_unpinned_view_goes_at_once(void **state)
{
    est_worker_t *w = *state;
    est_gen_t *g1 = w->current->gen;
    est_gen_addref(g1);
    est_gen_t *g2 = make_gen(2);
    assert_non_null(g2);
    est_worker_gen_t *wg = est_worker_gen_create(w, g2);
    assert_non_null(wg);
    est_worker_gen_switch(w, wg);
    assert_ptr_equal(w->current, wg);
    assert_true(h2o_linklist_is_empty(&w->old_gens));
    assert_int_equal(refs(g1), 1);
    est_gen_release(g1);
}

static void test_current_view_stays_when_unpinned(void **state)
{
    est_worker_t *w = *state;
    est_worker_gen_t *cur = w->current;
    est_worker_gen_pin(w);
    est_worker_gen_unpin(cur);
    run_loop(w);
    assert_ptr_equal(w->current, cur); /* the current view is never retired by its requests */
    assert_int_equal(cur->inflight, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_pinned_view_outlives_the_switch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unpinned_view_goes_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_current_view_stays_when_unpinned, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * Unit tests for the connection pool's request handle (src/upstream/pool.c), without any
 * exchange: est_pool_connect / est_pool_cancel_connect / est_pool_release, the slot bound,
 * the FIFO hand-over of a released slot, pooling and reuse of a connection.
 *
 * The peer is a listening socket on 127.0.0.1:0 that never accepts: the kernel completes the
 * TCP handshakes from its backlog, which is all a pool needs.
 */
#include <arpa/inet.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>
#include "upstream/client_internal.h"

typedef struct env {
    int lfd;
    h2o_loop_t *loop;
    est_dns_t *dns;
    est_config_t conf;
    est_upstream_conf_t uconf;
    est_target_conf_t target;
    char authority[64];
    est_upstream_set_t *set;
    est_upstream_t *u;
} env_t;

typedef struct user {
    est_pool_req_t req;
    struct sockaddr_storage sa;
    int slots, connects;
    const char *err;
} user_t;

static void on_slot(est_pool_req_t *req)
{
    H2O_STRUCT_FROM_MEMBER(user_t, req, req)->slots++;
}

static void on_connect(est_pool_req_t *req, const char *err, int tls_stage)
{
    user_t *us = H2O_STRUCT_FROM_MEMBER(user_t, req, req);
    us->connects++;
    us->err = err;
}

static int setup(void **state)
{
    env_t *e = calloc(1, sizeof(*e));
    e->lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (e->lfd < 0 || bind(e->lfd, (struct sockaddr *)&sin, sizeof(sin)) != 0 || listen(e->lfd, 64) != 0)
        return -1;
    socklen_t len = sizeof(sin);
    getsockname(e->lfd, (struct sockaddr *)&sin, &len);
    uint16_t port = ntohs(sin.sin_port);
    e->loop = h2o_evloop_create();
    e->conf.dns.min_ttl_ms = 1000;
    e->conf.dns.max_ttl_ms = 300000;
    e->conf.dns.timeout_ms = 1000;
    e->conf.dns.attempts = 1;
    snprintf(e->authority, sizeof(e->authority), "127.0.0.1:%u", port);
    e->target.url = e->authority;
    e->target.host = "127.0.0.1";
    e->target.port = port;
    e->target.authority = e->authority;
    e->target.is_ip_literal = 1;
    e->uconf.name = "test";
    e->uconf.targets = &e->target;
    e->uconf.num_targets = 1;
    e->uconf.connect_timeout_ms = 1000;
    e->uconf.response_timeout_ms = 1000;
    e->uconf.pool.max_connections = 2;
    e->uconf.pool.max_idle = 4;
    e->uconf.pool.max_requests = 100;
    e->uconf.pool.idle_timeout_ms = 30000;
    e->uconf.retry.attempts = 1;
    e->conf.upstreams = &e->uconf;
    e->conf.num_upstreams = 1;
    if ((e->dns = est_dns_create(e->loop, &e->conf.dns)) == NULL ||
        (e->set = est_upstream_set_create(e->loop, e->dns, &e->conf)) == NULL)
        return -1;
    e->u = est_upstream_set_get(e->set, 0);
    *state = e;
    return 0;
}

static int teardown(void **state)
{
    env_t *e = *state;
    est_upstream_set_destroy(e->set);
    est_dns_destroy(e->dns);
    for (int i = 0; i != 5; ++i)
        h2o_evloop_run(e->loop, 0);
    h2o_evloop_destroy(e->loop);
    close(e->lfd);
    free(e);
    return 0;
}

static void user_init(env_t *e, user_t *us)
{
    memset(us, 0, sizeof(*us));
    struct sockaddr_in *sin = (void *)&us->sa;
    sin->sin_family = AF_INET;
    sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin->sin_port = htons(e->target.port);
    us->req.sa = &us->sa;
    us->req.salen = sizeof(struct sockaddr_in);
    us->req.on_slot = on_slot;
    us->req.on_connect = on_connect;
}

static int run_until(env_t *e, const int *counter, int want)
{
    for (int i = 0; i != 200 && *counter < want; ++i)
        h2o_evloop_run(e->loop, 10);
    return *counter >= want;
}

static void test_slots_queue_and_reuse(void **state)
{
    env_t *e = *state;
    user_t a, b, c;
    user_init(e, &a);
    user_init(e, &b);
    user_init(e, &c);
    /* two slots: a and b connect, c waits */
    assert_int_equal(est_pool_connect(e->u, &a.req), 0);
    assert_int_equal(est_pool_connect(e->u, &b.req), 0);
    assert_int_equal(est_pool_connect(e->u, &c.req), 1);
    assert_non_null(a.req.conn);
    assert_null(c.req.conn);
    assert_true(run_until(e, &a.connects, 1));
    assert_true(run_until(e, &b.connects, 1));
    assert_null(a.err);
    assert_int_equal(a.req.conn->state, EST_CONN_ACTIVE);
    assert_int_equal(c.slots, 0);
    /* a is done with a reusable connection: pooled, and its slot goes to c (FIFO) */
    est_pool_release(e->u, &a.req, 1);
    assert_null(a.req.conn);
    assert_int_equal(c.slots, 1);
    assert_int_equal(est_upstream_get_stats(e->u)->conns_idle, 1);
    /* c, with its slot, gets the pooled connection without connecting */
    assert_int_equal(est_pool_connect(e->u, &c.req), 0);
    assert_true(c.req.reused);
    assert_int_equal(c.connects, 0);
    assert_int_equal(est_upstream_get_stats(e->u)->conns_created, 2);
    est_pool_release(e->u, &b.req, 0); /* closed */
    est_pool_release(e->u, &c.req, 1);
    assert_int_equal(est_upstream_get_stats(e->u)->conns_idle, 1);
    assert_int_equal(est_upstream_get_stats(e->u)->conns_open, 1);
    assert_int_equal(e->u->num_slots, 0);
}

static void test_cancel_connect(void **state)
{
    env_t *e = *state;
    user_t a, b, c, d;
    user_init(e, &a);
    user_init(e, &b);
    user_init(e, &c);
    user_init(e, &d);
    assert_int_equal(est_pool_connect(e->u, &a.req), 0);
    assert_int_equal(est_pool_connect(e->u, &b.req), 0);
    assert_int_equal(est_pool_connect(e->u, &c.req), 1);
    assert_int_equal(est_pool_connect(e->u, &d.req), 1);
    /* c leaves the queue: the freed slot goes to d, c is never called */
    est_pool_cancel_connect(e->u, &c.req);
    est_pool_release(e->u, &c.req, 0); /* no slot, no connection: nothing */
    est_pool_release(e->u, &a.req, 0); /* still connecting: closed */
    assert_int_equal(c.slots, 0);
    assert_int_equal(d.slots, 1);
    assert_int_equal(est_pool_connect(e->u, &d.req), 0);
    assert_false(d.req.reused);
    /* the closed connection never calls back */
    run_until(e, &d.connects, 1);
    assert_int_equal(a.connects, 0);
    est_pool_release(e->u, &b.req, 0);
    est_pool_release(e->u, &d.req, 0);
    assert_int_equal(e->u->num_slots, 0);
    assert_int_equal(est_upstream_get_stats(e->u)->conns_open, 0);
}

static void test_force_new(void **state)
{
    env_t *e = *state;
    user_t a;
    user_init(e, &a);
    assert_int_equal(est_pool_connect(e->u, &a.req), 0);
    assert_true(run_until(e, &a.connects, 1));
    est_pool_release(e->u, &a.req, 1);
    assert_int_equal(est_upstream_get_stats(e->u)->conns_idle, 1);
    a.req.force_new = 1; /* a fresh connection although one is pooled */
    assert_int_equal(est_pool_connect(e->u, &a.req), 0);
    assert_false(a.req.reused);
    assert_int_equal(a.req.conn->state, EST_CONN_CONNECTING);
    est_pool_release(e->u, &a.req, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_slots_queue_and_reuse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_connect, setup, teardown),
        cmocka_unit_test_setup_teardown(test_force_new, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * Unit tests for the Redis client (src/policy/redis.c) against a scripted fake Redis served
 * on the same h2o loop (one thread, so every step is deterministic): pipelining and FIFO
 * matching, NOSCRIPT -> EVAL, a late reply after a timeout landing in its own slot,
 * reconnection after repeated timeouts, garbage and closed connections, cancel, destroy,
 * the bound on pending calls, binary and long keys, and the metrics. The loop always runs in
 * bounded steps until a condition holds.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "admin/metrics.h"
#include "policy/gate.h"
#include "policy/redis.h"
#include "policy/redis_resp.h"

/* The metrics hook of gate.c, here so that the test links only the client (gate.c pulls in
 * every stage); it counts into the fixture's metrics as gate.c does. */
void est_gate_count_redis(est_policy_view_t *view, int result)
{
    assert_true((unsigned)result < EST_REDIS_RESULT__COUNT);
    ++view->svc->metrics->conns.redis[result];
}

/* ------------------------------------------------------------------ the fake Redis */

enum {
    M_ANSWER,   /* every command: {1, seq, 0, 1000} where seq counts the commands answered */
    M_HOLD,     /* read, answer nothing until release() */
    M_NOSCRIPT, /* EVALSHA -> NOSCRIPT error; EVAL -> as M_ANSWER */
    M_GARBAGE,  /* a reply that is not RESP */
    M_CLOSE,    /* close the connection on the first command */
    M_ERROR,    /* -ERR reply */
};

typedef struct fake {
    h2o_loop_t *loop;
    h2o_socket_t *listener;
    h2o_socket_t *conn;
    uint16_t port;
    int mode;
    int accepted, closed_by_peer;
    int evalsha, eval, held;
    int64_t seq;
    char last_key[4096];
    size_t last_key_len;
    char last_args[2][32];
} fake_t;

static void reply(fake_t *f, const char *s)
{
    size_t n = strlen(s);
    assert_int_equal(write(h2o_socket_get_fd(f->conn), s, n), (ssize_t)n);
}

static void answer(fake_t *f)
{
    char buf[128];
    snprintf(buf, sizeof(buf), "*4\r\n:1\r\n:%lld\r\n:0\r\n:1000\r\n", (long long)++f->seq);
    reply(f, buf);
}

static void on_srv_read(h2o_socket_t *sock, const char *err)
{
    fake_t *f = sock->data;
    if (err != NULL) {
        ++f->closed_by_peer;
        h2o_socket_close(sock);
        if (f->conn == sock)
            f->conn = NULL;
        return;
    }
    for (;;) {
        est_resp_reply_t r;
        size_t used;
        if (est_resp_parse(sock->input->bytes, sock->input->size, &r, &used) != EST_RESP_OK)
            return;
        /* EVALSHA|EVAL sha|script 1 key interval burst */
        assert_int_equal(r.num_nodes, 7);
        assert_int_equal(r.nodes[0].integer, 6);
        int is_eval = r.nodes[1].len == 4 && memcmp(r.nodes[1].str, "EVAL", 4) == 0;
        if (is_eval)
            ++f->eval;
        else
            ++f->evalsha;
        assert_true(r.nodes[4].len < sizeof(f->last_key));
        memcpy(f->last_key, r.nodes[4].str, r.nodes[4].len);
        f->last_key_len = r.nodes[4].len;
        for (int i = 0; i != 2; ++i)
            snprintf(f->last_args[i], sizeof(f->last_args[i]), "%.*s", (int)r.nodes[5 + i].len, r.nodes[5 + i].str);
        h2o_buffer_consume(&sock->input, used);
        switch (f->mode) {
        case M_ANSWER:
            answer(f);
            break;
        case M_HOLD:
            ++f->held;
            break;
        case M_NOSCRIPT:
            if (is_eval)
                answer(f);
            else
                reply(f, "-NOSCRIPT No matching script. Please use EVAL.\r\n");
            break;
        case M_GARBAGE:
            reply(f, "?what\r\n");
            break;
        case M_ERROR:
            reply(f, "-ERR something\r\n");
            break;
        case M_CLOSE:
            h2o_socket_close(sock);
            f->conn = NULL;
            return;
        }
    }
}

static void on_accept(h2o_socket_t *listener, const char *err)
{
    fake_t *f = listener->data;
    h2o_socket_t *s;
    if (err != NULL || (s = h2o_evloop_socket_accept(listener)) == NULL)
        return;
    if (f->conn != NULL)
        h2o_socket_close(f->conn);
    f->conn = s;
    s->data = f;
    ++f->accepted;
    h2o_socket_read_start(s, on_srv_read);
}

static void release(fake_t *f)
{
    for (; f->held > 0; --f->held)
        answer(f);
}

/* ------------------------------------------------------------------ fixture */

typedef struct fixture {
    h2o_loop_t *loop;
    fake_t fake;
    est_worker_metrics_t metrics;
    est_services_t svc;
    est_policy_view_t pv;
    est_redis_conf_t conf;
    est_redis_client_t *c;
} fixture_t;

static fixture_t *fixture_new(uint64_t timeout_ms, int listen_too)
{
    fixture_t *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->loop = h2o_evloop_create();
    f->fake.loop = f->loop;
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    assert_true(fd >= 0);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    socklen_t len = sizeof(sin);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    f->fake.port = ntohs(sin.sin_port);
    if (listen_too) {
        assert_int_equal(listen(fd, 16), 0);
        f->fake.listener = h2o_evloop_socket_create(f->loop, fd, H2O_SOCKET_FLAG_DONT_READ);
        f->fake.listener->data = &f->fake;
        h2o_socket_read_start(f->fake.listener, on_accept);
    } else {
        close(fd); /* a port nobody listens on (refused) */
    }
    f->svc.loop = f->loop;
    f->svc.metrics = &f->metrics;
    f->pv.loop = f->loop;
    f->pv.svc = &f->svc;
    f->conf.host = "127.0.0.1";
    f->conf.port = f->fake.port;
    f->conf.timeout_ms = timeout_ms;
    f->c = est_redis_client_create(&f->pv, &f->conf);
    assert_non_null(f->c);
    return f;
}

static void fixture_free(fixture_t *f)
{
    if (f->c != NULL)
        est_redis_client_destroy(f->c);
    if (f->fake.conn != NULL)
        h2o_socket_close(f->fake.conn);
    if (f->fake.listener != NULL)
        h2o_socket_close(f->fake.listener);
    for (int i = 0; i != 5; ++i)
        h2o_evloop_run(f->loop, 0);
    h2o_evloop_destroy(f->loop);
    free(f);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* runs the loop until *flag >= want, at most max_ms; returns the time it took */
static uint64_t run_until(fixture_t *f, const int *flag, int want, uint64_t max_ms)
{
    uint64_t start = now_ms();
    while (*flag < want) {
        if (now_ms() - start > max_ms) {
            fprintf(stderr, "run_until: timed out after %llu ms (%d < %d)\n", (unsigned long long)max_ms, *flag, want);
            fail();
        }
        h2o_evloop_run(f->loop, 10);
    }
    return now_ms() - start;
}

static void run_for(fixture_t *f, uint64_t ms)
{
    uint64_t start = now_ms();
    while (now_ms() - start < ms)
        h2o_evloop_run(f->loop, 10);
}

typedef struct rec {
    int calls, ok, order;
    est_gcra_result_t res;
} rec_t;

static int order_counter;

static void on_result(void *data, int ok, const est_gcra_result_t *res)
{
    rec_t *r = data;
    ++r->calls;
    r->ok = ok;
    r->order = ++order_counter;
    if (ok)
        r->res = *res;
    else
        assert_null(res);
}

static const est_gcra_params_t params = {.interval_us = 250000, .burst = 7};

static est_redis_call_t *call(fixture_t *f, const char *key, rec_t *r)
{
    est_redis_call_t *c = est_redis_gcra(f->c, key, strlen(key), &params, on_result, r);
    assert_int_equal(r->calls, 0); /* never from inside the call */
    return c;
}

/* ------------------------------------------------------------------ tests */

static void test_pipelined_in_order(void **state)
{
    fixture_t *f = fixture_new(2000, 1);
    rec_t r[3] = {{0}};
    int done = 0;
    for (int i = 0; i != 3; ++i)
        assert_non_null(call(f, "route", &r[i]));
    for (uint64_t start = now_ms(); done != 3 && now_ms() - start < 2000;) {
        h2o_evloop_run(f->loop, 10);
        done = r[0].calls + r[1].calls + r[2].calls;
    }
    assert_int_equal(done, 3);
    for (int i = 0; i != 3; ++i) {
        assert_int_equal(r[i].calls, 1);
        assert_int_equal(r[i].ok, 1);
        assert_int_equal(r[i].res.allowed, 1);
        assert_int_equal(r[i].res.remaining, (uint64_t)i + 1); /* the server's sequence: FIFO */
        assert_int_equal(r[i].res.reset_us, 1000);
    }
    assert_true(r[0].order < r[1].order && r[1].order < r[2].order);
    assert_int_equal(f->fake.accepted, 1); /* one connection, pipelined */
    assert_int_equal(f->fake.evalsha, 3);
    assert_int_equal(f->fake.eval, 0);
    assert_int_equal(f->fake.last_key_len, strlen("estuary:rl:route"));
    assert_memory_equal(f->fake.last_key, "estuary:rl:route", f->fake.last_key_len);
    assert_string_equal(f->fake.last_args[0], "250000");
    assert_string_equal(f->fake.last_args[1], "7");
    assert_int_equal(f->metrics.conns.redis[EST_REDIS_RESULT_OK], 3);
    assert_int_equal(f->metrics.conns.redis[EST_REDIS_RESULT_ERROR], 0);
    fixture_free(f);
}

static void test_binary_and_long_keys(void **state)
{
    fixture_t *f = fixture_new(2000, 1);
    static const char bin[] = "a\0b\r\n*1\r\n$-1";
    rec_t r = {0}, r2 = {0};
    assert_non_null(est_redis_gcra(f->c, bin, sizeof(bin) - 1, &params, on_result, &r));
    run_until(f, &r.calls, 1, 2000);
    assert_int_equal(r.ok, 1);
    assert_int_equal(f->fake.last_key_len, 11 + sizeof(bin) - 1);
    assert_memory_equal(f->fake.last_key, "estuary:rl:", 11);
    assert_memory_equal(f->fake.last_key + 11, bin, sizeof(bin) - 1);

    /* over 1 KiB: the key's SHA-256 under its own prefix */
    char *big = malloc(5000);
    memset(big, 'x', 5000);
    assert_non_null(est_redis_gcra(f->c, big, 5000, &params, on_result, &r2));
    run_until(f, &r2.calls, 1, 2000);
    assert_int_equal(r2.ok, 1);
    assert_int_equal(f->fake.last_key_len, strlen("estuary:rlh:") + 64);
    assert_memory_equal(f->fake.last_key, "estuary:rlh:", 12);
    free(big);
    fixture_free(f);
}

static void test_noscript_falls_back_to_eval(void **state)
{
    fixture_t *f = fixture_new(2000, 1);
    f->fake.mode = M_NOSCRIPT;
    rec_t r[2] = {{0}};
    call(f, "k", &r[0]);
    call(f, "k", &r[1]);
    run_until(f, &r[1].calls, 1, 2000);
    run_until(f, &r[0].calls, 1, 2000);
    assert_int_equal(r[0].ok, 1);
    assert_int_equal(r[1].ok, 1);
    assert_int_equal(f->fake.evalsha, 2);
    assert_int_equal(f->fake.eval, 2);
    assert_int_equal(f->metrics.conns.redis[EST_REDIS_RESULT_OK], 2);
    fixture_free(f);
}

static void test_error_reply(void **state)
{
    fixture_t *f = fixture_new(2000, 1);
    f->fake.mode = M_ERROR;
    rec_t r = {0}, r2 = {0};
    call(f, "k", &r);
    run_until(f, &r.calls, 1, 2000);
    assert_int_equal(r.ok, 0);
    assert_int_equal(f->metrics.conns.redis[EST_REDIS_RESULT_ERROR], 1);
    /* an error reply is an answer: the connection stays */
    f->fake.mode = M_ANSWER;
    call(f, "k", &r2);
    run_until(f, &r2.calls, 1, 2000);
    assert_int_equal(r2.ok, 1);
    assert_int_equal(f->fake.accepted, 1);
    fixture_free(f);
}

static void test_late_reply_keeps_its_slot(void **state)
{
    fixture_t *f = fixture_new(100, 1);
    f->fake.mode = M_HOLD;
    rec_t a = {0}, b = {0};
    call(f, "k", &a);
    uint64_t took = run_until(f, &a.calls, 1, 2000);
    assert_int_equal(a.ok, 0);
    assert_true(took >= 50 && took < 1000); /* about the 100 ms deadline */
    assert_int_equal(f->metrics.conns.redis[EST_REDIS_RESULT_TIMEOUT], 1);
    call(f, "k", &b);
    run_until(f, &f->fake.held, 2, 2000);
    release(&f->fake); /* answers 1 (A's, late) then 2 (B's) */
    run_until(f, &b.calls, 1, 2000);
    assert_int_equal(b.ok, 1);
    assert_int_equal(b.res.remaining, 2); /* not A's reply */
    assert_int_equal(a.calls, 1);
    assert_int_equal(f->metrics.conns.redis[EST_REDIS_RESULT_OK], 1);
    fixture_free(f);
}

static void test_timeouts_reconnect(void **state)
{
    fixture_t *f = fixture_new(50, 1);
    f->fake.mode = M_HOLD;
    rec_t r[3] = {{0}};
    for (int i = 0; i != 3; ++i) {
        call(f, "k", &r[i]);
        run_until(f, &r[i].calls, 1, 2000);
        assert_int_equal(r[i].ok, 0);
    }
    assert_int_equal(f->metrics.conns.redis[EST_REDIS_RESULT_TIMEOUT], 3);
    run_until(f, &f->fake.closed_by_peer, 1, 2000); /* the client dropped the connection */
    /* backing off: the next call fails fast, from the loop */
    rec_t fast = {0};
    call(f, "k", &fast);
    uint64_t took = run_until(f, &fast.calls, 1, 2000);
    assert_int_equal(fast.ok, 0);
    assert_true(took < 1000);
    /* failed, not timed out: it never waited for a deadline */
    assert_int_equal(f->metrics.conns.redis[EST_REDIS_RESULT_ERROR], 1);
    assert_int_equal(f->metrics.conns.redis[EST_REDIS_RESULT_TIMEOUT], 3);
    /* after the backoff (100 ms) the next call reconnects and is answered */
    f->fake.mode = M_ANSWER;
    f->fake.held = 0;
    run_for(f, 150);
    rec_t again = {0};
    call(f, "k", &again);
    run_until(f, &again.calls, 1, 2000);
    assert_int_equal(again.ok, 1);
    assert_int_equal(f->fake.accepted, 2);
    fixture_free(f);
}

static void test_refused_fails_from_loop(void **state)
{
    fixture_t *f = fixture_new(1000, 0);
    rec_t r = {0}, r2 = {0};
    call(f, "k", &r);
    uint64_t took = run_until(f, &r.calls, 1, 2000);
    assert_int_equal(r.ok, 0);
    assert_true(took < 500); /* refused, not timed out */
    call(f, "k", &r2);
    run_until(f, &r2.calls, 1, 2000);
    assert_int_equal(r2.ok, 0);
    assert_int_equal(f->metrics.conns.redis[EST_REDIS_RESULT_ERROR], 2);
    assert_int_equal(f->metrics.conns.redis[EST_REDIS_RESULT_TIMEOUT], 0);
    fixture_free(f);
}

static void test_garbage_and_close(void **state)
{
    fixture_t *f = fixture_new(2000, 1);
    f->fake.mode = M_GARBAGE;
    rec_t r = {0};
    call(f, "k", &r);
    run_until(f, &r.calls, 1, 2000);
    assert_int_equal(r.ok, 0);
    run_until(f, &f->fake.closed_by_peer, 1, 2000);
    run_for(f, 150); /* the backoff */
    f->fake.mode = M_CLOSE;
    rec_t r2 = {0};
    call(f, "k", &r2);
    run_until(f, &r2.calls, 1, 2000);
    assert_int_equal(r2.ok, 0);
    assert_int_equal(f->fake.accepted, 2);
    assert_int_equal(f->metrics.conns.redis[EST_REDIS_RESULT_ERROR], 2);
    fixture_free(f);
}

static void test_cancel(void **state)
{
    fixture_t *f = fixture_new(100, 1);
    f->fake.mode = M_HOLD;
    rec_t a = {0}, b = {0};
    est_redis_call_t *ca = call(f, "k", &a);
    call(f, "k", &b);
    run_until(f, &f->fake.held, 2, 2000);
    est_redis_call_cancel(ca);
    release(&f->fake);
    run_until(f, &b.calls, 1, 2000);
    assert_int_equal(b.ok, 1);
    assert_int_equal(b.res.remaining, 2);
    run_for(f, 150); /* past A's deadline too */
    assert_int_equal(a.calls, 0);
    assert_int_equal(f->metrics.conns.redis[EST_REDIS_RESULT_TIMEOUT], 0);
    fixture_free(f);
}

static void test_hung_connection_found_without_requesters(void **state)
{
    /* every requester left (cancelled) while the server hangs: the deadlines still pass and
     * the connection is dropped, so the cancelled slots cannot pile up to the bound */
    fixture_t *f = fixture_new(50, 1);
    f->fake.mode = M_HOLD;
    rec_t r[3] = {{0}};
    for (int i = 0; i != 3; ++i)
        est_redis_call_cancel(call(f, "k", &r[i]));
    run_until(f, &f->fake.closed_by_peer, 1, 2000);
    for (int i = 0; i != 3; ++i)
        assert_int_equal(r[i].calls, 0);
    assert_int_equal(f->metrics.conns.redis[EST_REDIS_RESULT_TIMEOUT], 0);
    fixture_free(f);
}

static void test_destroy_answers_pending(void **state)
{
    fixture_t *f = fixture_new(5000, 1);
    f->fake.mode = M_HOLD;
    rec_t a = {0};
    call(f, "k", &a);
    run_until(f, &f->fake.held, 1, 2000);
    est_redis_client_destroy(f->c);
    f->c = NULL;
    assert_int_equal(a.calls, 1);
    assert_int_equal(a.ok, 0);
    fixture_free(f);
}

static void test_pending_bound(void **state)
{
    fixture_t *f = fixture_new(5000, 1);
    f->fake.mode = M_HOLD;
    enum { N = 4096 };
    rec_t *r = calloc(N + 1, sizeof(*r));
    for (int i = 0; i != N; ++i)
        assert_non_null(call(f, "k", &r[i]));
    assert_null(est_redis_gcra(f->c, "k", 1, &params, on_result, &r[N]));
    assert_int_equal(r[N].calls, 0);
    assert_int_equal(f->metrics.conns.redis[EST_REDIS_RESULT_ERROR], 1);
    est_redis_client_destroy(f->c);
    f->c = NULL;
    for (int i = 0; i != N; ++i)
        assert_int_equal(r[i].calls, 1);
    free(r);
    fixture_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pipelined_in_order),
        cmocka_unit_test(test_binary_and_long_keys),
        cmocka_unit_test(test_noscript_falls_back_to_eval),
        cmocka_unit_test(test_error_reply),
        cmocka_unit_test(test_late_reply_keeps_its_slot),
        cmocka_unit_test(test_timeouts_reconnect),
        cmocka_unit_test(test_refused_fails_from_loop),
        cmocka_unit_test(test_garbage_and_close),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_hung_connection_found_without_requesters),
        cmocka_unit_test(test_destroy_answers_pending),
        cmocka_unit_test(test_pending_bound),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

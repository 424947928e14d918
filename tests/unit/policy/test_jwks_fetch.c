/*
 * The JWKS cache (policy/jwks.c) end to end inside one process: the real fetcher thread and
 * upstream client against a small HTTP server on a thread of this test (127.0.0.1, one
 * request per connection), with this test's loop playing a worker. Waits are bounded polls.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "policy/jwks.h"
#include "policy/jwks_rules.h"
#include "upstream/dns.h"

/* ------------------------------------------------------------------ the test IdP */

static struct {
    int fd;
    uint16_t port;
    pthread_t tid;
    atomic_int stop;
    atomic_int hits;
    pthread_mutex_t mutex;
    int status;
    char *body; /* owned */
    size_t body_len;
    int delay_ms;
    int chunked; /* send the body chunked (no Content-Length) */
} idp = {.mutex = PTHREAD_MUTEX_INITIALIZER};

static void idp_set(int status, const char *body, size_t len, int delay_ms, int chunked)
{
    pthread_mutex_lock(&idp.mutex);
    free(idp.body);
    idp.body = malloc(len + 1);
    memcpy(idp.body, body, len);
    idp.body_len = len;
    idp.status = status;
    idp.delay_ms = delay_ms;
    idp.chunked = chunked;
    pthread_mutex_unlock(&idp.mutex);
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n != 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

static void *idp_main(void *arg)
{
    while (!atomic_load(&idp.stop)) {
        struct pollfd pfd = {.fd = idp.fd, .events = POLLIN};
        if (poll(&pfd, 1, 50) <= 0)
            continue;
        int c = accept(idp.fd, NULL, NULL);
        if (c < 0)
            continue;
        char buf[4096];
        size_t got = 0;
        while (got < sizeof(buf) - 1) {
            struct pollfd cp = {.fd = c, .events = POLLIN};
            if (poll(&cp, 1, 2000) <= 0)
                break;
            ssize_t r = recv(c, buf + got, sizeof(buf) - 1 - got, 0);
            if (r <= 0)
                break;
            got += (size_t)r;
            buf[got] = '\0';
            if (strstr(buf, "\r\n\r\n") != NULL)
                break;
        }
        atomic_fetch_add(&idp.hits, 1);
        pthread_mutex_lock(&idp.mutex);
        int status = idp.status, delay = idp.delay_ms, chunked = idp.chunked;
        size_t len = idp.body_len;
        char *body = malloc(len + 1);
        memcpy(body, idp.body, len);
        pthread_mutex_unlock(&idp.mutex);
        if (delay != 0)
            usleep((useconds_t)delay * 1000);
        char head[256];
        int hl = chunked ? snprintf(head, sizeof(head),
                                    "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
                                    "Connection: close\r\n\r\n",
                                    status)
                         : snprintf(head, sizeof(head),
                                    "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                                    "Connection: close\r\n\r\n",
                                    status, len);
        write_all(c, head, (size_t)hl);
        if (chunked) {
            for (size_t off = 0; off < len; off += 65536) {
                size_t n = len - off < 65536 ? len - off : 65536;
                char sz[32];
                int sl = snprintf(sz, sizeof(sz), "%zx\r\n", n);
                write_all(c, sz, (size_t)sl);
                write_all(c, body + off, n);
                write_all(c, "\r\n", 2);
            }
            write_all(c, "0\r\n\r\n", 5);
        } else {
            write_all(c, body, len);
        }
        free(body);
        close(c);
    }
    return NULL;
}

static void idp_start(void)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sin);
    idp.fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(idp.fd >= 0);
    assert_int_equal(bind(idp.fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(listen(idp.fd, 128), 0);
    assert_int_equal(getsockname(idp.fd, (struct sockaddr *)&sin, &sl), 0);
    idp.port = ntohs(sin.sin_port);
    atomic_store(&idp.stop, 0);
    atomic_store(&idp.hits, 0);
    assert_int_equal(pthread_create(&idp.tid, NULL, idp_main, NULL), 0);
}

static void idp_stop(void)
{
    atomic_store(&idp.stop, 1);
    pthread_join(idp.tid, NULL);
    close(idp.fd);
    free(idp.body);
    idp.body = NULL;
}

/* ------------------------------------------------------------------ the "worker" */

static h2o_loop_t *loop;
static h2o_multithread_queue_t *queue;

static est_target_conf_t target;
static est_upstream_conf_t upconf;
static char url[64], authority[32], origin[48];

static est_jwt_conf_t make_conf(uint64_t refresh_ms)
{
    snprintf(authority, sizeof(authority), "127.0.0.1:%u", idp.port);
    snprintf(origin, sizeof(origin), "http://%s", authority);
    snprintf(url, sizeof(url), "%s/jwks", origin);
    target = (est_target_conf_t){.url = origin, .host = "127.0.0.1", .port = idp.port, .authority = authority, .is_ip_literal = 1};
    upconf = (est_upstream_conf_t){.name = "jwks:test",
                                   .targets = &target,
                                   .num_targets = 1,
                                   .connect_timeout_ms = 1000,
                                   .response_timeout_ms = 2000,
                                   .pool = {.max_connections = 16, .max_idle = 4, .max_requests = 100, .idle_timeout_ms = 1000},
                                   .retry = {.attempts = 1},
                                   .tls = {.verify = 1}};
    return (est_jwt_conf_t){
        .name = "test", .jwks_url = url, .jwks_path = "/jwks", .jwks_upstream = &upconf, .jwks_refresh_ms = refresh_ms};
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* runs the loop until cond(arg) or `ms` passed; returns cond's last value */
static int run_until(int (*cond)(void *), void *arg, uint64_t ms)
{
    uint64_t end = now_ms() + ms;
    while (!cond(arg) && now_ms() < end)
        h2o_evloop_run(loop, 20);
    return cond(arg);
}

static int has_set(void *arg)
{
    return est_jwks_sub_current(arg, NULL) != NULL;
}

static uint64_t want_hits;
static int hits_reached(void *arg)
{
    return (uint64_t)atomic_load(&idp.hits) >= want_hits;
}

static uint64_t want_version;
static int version_changed(void *arg)
{
    uint64_t v = 0;
    est_jwks_sub_current(arg, &v);
    return v != want_version;
}

static int calls;
static int want_calls;
static void on_done(void *data)
{
    ++calls;
    ++*(int *)data;
}
static void on_done_other(void *data)
{
    ++*(int *)data;
}
static int calls_reached(void *arg)
{
    return calls >= want_calls;
}

static const char JWKS_A[] = "{\"keys\":[{\"kty\":\"oct\",\"kid\":\"a\",\"k\":\"c2VjcmV0LWE\"}]}";
static const char JWKS_C[] = "{\"keys\":[{\"kty\":\"oct\",\"kid\":\"c\",\"k\":\"c2VjcmV0LWM\"}]}";
static const char JWKS_AB[] =
    "{\"keys\":[{\"kty\":\"oct\",\"kid\":\"a\",\"k\":\"c2VjcmV0LWE\"},{\"kty\":\"oct\",\"kid\":\"b\",\"k\":\"c2VjcmV0LWI\"}]}";

static int setup(void **state)
{
    loop = h2o_evloop_create();
    queue = h2o_multithread_create_queue(loop);
    idp_start();
    calls = 0;
    return 0;
}

static int teardown(void **state)
{
    est_jwks_shutdown();
    idp_stop();
    h2o_multithread_destroy_queue(queue);
    h2o_evloop_run(loop, 0);
    free(queue); /* libh2o 2.2.5 does not free a destroyed queue (common/h2o_compat.h) */
    h2o_evloop_destroy(loop);
    return 0;
}

/* The first subscriber starts the first fetch; requests that arrive during it join it (one
 * hit for all of them); a refetch right after is refused (the 10 s gap). */
static void test_first_fetch_is_shared(void **state)
{
    idp_set(200, JWKS_A, strlen(JWKS_A), 300, 0);
    est_jwt_conf_t jc = make_conf(300000);
    est_jwks_sub_t *s = est_jwks_subscribe(loop, queue, &jc);
    assert_non_null(s);
    assert_null(est_jwks_sub_current(s, NULL));
    int mine[50] = {0};
    for (int i = 0; i != 50; ++i)
        assert_non_null(est_jwks_sub_refetch(s, on_done, &mine[i]));
    want_calls = 50;
    assert_true(run_until(calls_reached, NULL, 5000));
    for (int i = 0; i != 50; ++i)
        assert_int_equal(mine[i], 1);
    assert_int_equal(atomic_load(&idp.hits), 1);
    uint64_t v = 0;
    const est_jwks_t *set = est_jwks_sub_current(s, &v);
    assert_non_null(set);
    assert_true(v != 0);
    assert_int_equal(set->count, 1);
    assert_non_null(est_jwks_find_kid(set, "a"));
    /* the fetch just ended: an unknown kid now is answered at once, without a fetch */
    int late = 0;
    assert_null(est_jwks_sub_refetch(s, on_done, &late));
    h2o_evloop_run(loop, 100);
    assert_int_equal(atomic_load(&idp.hits), 1);
    assert_int_equal(late, 0);
    est_jwks_sub_destroy(s);
}

/* The caller checked an older set than the one published since (a fetch ended between its
 * est_jwks_sub_current and its refetch): it is called back at once to look again, no fetch. */
static void test_newer_set_answers_at_once(void **state)
{
    idp_set(200, JWKS_A, strlen(JWKS_A), 0, 0);
    est_jwt_conf_t jc = make_conf(300000);
    est_jwks_sub_t *s1 = est_jwks_subscribe(loop, queue, &jc);
    assert_null(est_jwks_sub_current(s1, NULL));
    est_jwks_sub_t *s2 = est_jwks_subscribe(loop, queue, &jc);
    assert_true(run_until(has_set, s2, 5000)); /* s1 has not looked since */
    int a = 0;
    assert_non_null(est_jwks_sub_refetch(s1, on_done, &a));
    want_calls = 1;
    assert_true(run_until(calls_reached, NULL, 500));
    assert_int_equal(a, 1);
    assert_non_null(est_jwks_sub_current(s1, NULL));
    assert_int_equal(atomic_load(&idp.hits), 1);
    /* now up to date: refused (the fetch just ended) */
    assert_null(est_jwks_sub_refetch(s1, on_done, &a));
    est_jwks_sub_destroy(s2);
    est_jwks_sub_destroy(s1);
}

/* At most EST_JWKS_MAX_WAITERS requests of one sub wait; the next is answered at once. */
static void test_waiters_bounded(void **state)
{
    idp_set(200, JWKS_A, strlen(JWKS_A), 300, 0);
    est_jwt_conf_t jc = make_conf(300000);
    est_jwks_sub_t *s = est_jwks_subscribe(loop, queue, &jc);
    static int each[EST_JWKS_MAX_WAITERS];
    memset(each, 0, sizeof(each));
    for (int i = 0; i != EST_JWKS_MAX_WAITERS; ++i)
        assert_non_null(est_jwks_sub_refetch(s, on_done, &each[i]));
    int over = 0;
    assert_null(est_jwks_sub_refetch(s, on_done, &over));
    want_calls = EST_JWKS_MAX_WAITERS;
    assert_true(run_until(calls_reached, NULL, 5000));
    h2o_evloop_run(loop, 50);
    assert_int_equal(over, 0);
    assert_int_equal(calls, EST_JWKS_MAX_WAITERS);
    assert_int_equal(atomic_load(&idp.hits), 1);
    est_jwks_sub_destroy(s);
}

/* A cancelled waiter is never called, the others are. */
static void test_cancelled_waiter_not_called(void **state)
{
    idp_set(200, JWKS_A, strlen(JWKS_A), 200, 0);
    est_jwt_conf_t jc = make_conf(300000);
    est_jwks_sub_t *s = est_jwks_subscribe(loop, queue, &jc);
    int a = 0, b = 0;
    est_jwks_wait_t *wa = est_jwks_sub_refetch(s, on_done, &a);
    est_jwks_wait_t *wb = est_jwks_sub_refetch(s, on_done, &b);
    assert_non_null(wa);
    assert_non_null(wb);
    est_jwks_wait_cancel(wa);
    want_calls = 1;
    assert_true(run_until(calls_reached, NULL, 5000));
    h2o_evloop_run(loop, 50);
    assert_int_equal(a, 0);
    assert_int_equal(b, 1);
    est_jwks_sub_destroy(s);
}

/* Same URL and settings: one source, one fetch; a "reload" (new sub, old one destroyed)
 * keeps the set without fetching again. */
static void test_sources_shared_and_kept(void **state)
{
    idp_set(200, JWKS_A, strlen(JWKS_A), 0, 0);
    est_jwt_conf_t jc = make_conf(300000);
    est_jwks_sub_t *s1 = est_jwks_subscribe(loop, queue, &jc);
    assert_true(run_until(has_set, s1, 5000));
    uint64_t v1 = 0;
    est_jwks_sub_current(s1, &v1);
    est_jwt_conf_t jc2 = make_conf(300000);
    jc2.name = "other";
    est_jwks_sub_t *s2 = est_jwks_subscribe(loop, queue, &jc2);
    uint64_t v2 = 0;
    assert_non_null(est_jwks_sub_current(s2, &v2));
    assert_true(v1 == v2);
    est_jwks_sub_destroy(s1);
    h2o_evloop_run(loop, 100);
    assert_non_null(est_jwks_sub_current(s2, &v2));
    assert_true(v1 == v2);
    assert_int_equal(atomic_load(&idp.hits), 1);
    est_jwks_sub_destroy(s2);
}

/* Every kind of bad reply keeps the last good set and is retried (1 s: jwks_refresh is 1 s);
 * a good one after them replaces the set. */
static void test_failures_keep_last_good_set(void **state)
{
    idp_set(200, JWKS_A, strlen(JWKS_A), 0, 0);
    est_jwt_conf_t jc = make_conf(1000);
    est_jwks_sub_t *s = est_jwks_subscribe(loop, queue, &jc);
    assert_true(run_until(has_set, s, 5000));
    uint64_t v0 = 0;
    est_jwks_sub_current(s, &v0);

    /* the same document again: the version does not change (workers keep their token caches) */
    want_hits = 2;
    assert_true(run_until(hits_reached, NULL, 3000));
    h2o_evloop_run(loop, 50);

    size_t big_len = EST_JWKS_MAX_BYTES + 10;
    char *big = malloc(big_len);
    memset(big, ' ', big_len);
    memcpy(big, "{\"keys\":[]}", 11);
    char *many = malloc(64 * 1024);
    size_t n = (size_t)snprintf(many, 64 * 1024, "{\"keys\":[");
    for (int i = 0; i != 101; ++i)
        n += (size_t)snprintf(many + n, 64 * 1024 - n, "%s{\"kty\":\"oct\",\"kid\":\"k%d\",\"k\":\"c2VjcmV0\"}", i ? "," : "", i);
    n += (size_t)snprintf(many + n, 64 * 1024 - n, "]}");
    struct {
        int status;
        const char *body;
        size_t len;
        int chunked;
    } bad[] = {
        {404, JWKS_C, strlen(JWKS_C), 0}, /* a set, but not from a 200 */
        {500, "{}", 2, 0},
        {200, "<html>502</html>", 16, 0},
        {200, big, big_len, 0},        /* refused from Content-Length */
        {200, big, big_len, 1},        /* refused while reading */
        {200, many, n, 0},             /* over EST_JWKS_MAX_KEYS */
        {200, "{\"keys\":[]}", 11, 0}, /* no usable key */
    };
    for (size_t i = 0; i != sizeof(bad) / sizeof(bad[0]); ++i) {
        idp_set(bad[i].status, bad[i].body, bad[i].len, 0, bad[i].chunked);
        want_hits = (uint64_t)atomic_load(&idp.hits) + 1;
        assert_true(run_until(hits_reached, NULL, 3000));
        h2o_evloop_run(loop, 300);
        uint64_t v = 0;
        const est_jwks_t *set = est_jwks_sub_current(s, &v);
        assert_non_null(set);
        assert_true(v == v0);
        assert_non_null(est_jwks_find_kid(set, "a"));
        assert_null(est_jwks_find_kid(set, "b"));
        assert_null(est_jwks_find_kid(set, "c"));
    }
    free(big);
    free(many);

    /* recovery: the next good reply is published */
    idp_set(200, JWKS_AB, strlen(JWKS_AB), 0, 0);
    want_version = v0;
    assert_true(run_until(version_changed, s, 3000));
    uint64_t v1 = 0;
    const est_jwks_t *set = est_jwks_sub_current(s, &v1);
    assert_true(v1 != v0);
    assert_non_null(est_jwks_find_kid(set, "b"));
    est_jwks_sub_destroy(s);
}

/* A waiter is answered when the fetch takes too long (the IdP never answers in time). */
static void test_slow_fetch_answers_waiters(void **state)
{
    idp_set(200, JWKS_A, strlen(JWKS_A), 3000, 0); /* over the 2 s response timeout */
    est_jwt_conf_t jc = make_conf(300000);
    est_jwks_sub_t *s = est_jwks_subscribe(loop, queue, &jc);
    int a = 0;
    uint64_t t0 = now_ms();
    assert_non_null(est_jwks_sub_refetch(s, on_done, &a));
    want_calls = 1;
    assert_true(run_until(calls_reached, NULL, 4500));
    assert_true(now_ms() - t0 < 4000);
    assert_int_equal(a, 1);
    assert_null(est_jwks_sub_current(s, NULL));
    est_jwks_sub_destroy(s);
}

/* Two "workers" (threads with their own loop and queue) share one source: one fetch. */
static pthread_barrier_t *start_line; /* NULL: no barrier */

static void *other_worker(void *arg)
{
    est_jwt_conf_t *jc = arg;
    h2o_loop_t *l = h2o_evloop_create();
    h2o_multithread_queue_t *q = h2o_multithread_create_queue(l);
    if (start_line != NULL)
        pthread_barrier_wait(start_line);
    est_jwks_sub_t *s = est_jwks_subscribe(l, q, jc);
    int ok = 0, got = 0;
    est_jwks_wait_t *w = est_jwks_sub_refetch(s, on_done_other, &got);
    uint64_t end = now_ms() + 5000;
    while (now_ms() < end && !(got && est_jwks_sub_current(s, NULL) != NULL))
        h2o_evloop_run(l, 20);
    ok = w != NULL && got == 1 && est_jwks_sub_current(s, NULL) != NULL;
    est_jwks_sub_destroy(s);
    h2o_multithread_destroy_queue(q);
    h2o_evloop_run(l, 0);
    free(q);
    h2o_evloop_destroy(l);
    /* this thread ends: release libh2o's thread-local cache of socket buffers */
    while (h2o_socket_buffer_prototype.allocator.cnt != 0)
        free(h2o_mem_alloc_recycle(&h2o_socket_buffer_prototype.allocator, 1));
    return ok ? (void *)1 : NULL;
}

static void test_two_workers_one_fetch(void **state)
{
    idp_set(200, JWKS_A, strlen(JWKS_A), 300, 0);
    est_jwt_conf_t jc = make_conf(300000);
    est_jwks_sub_t *s = est_jwks_subscribe(loop, queue, &jc);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, other_worker, &jc), 0);
    int a = 0;
    assert_non_null(est_jwks_sub_refetch(s, on_done, &a));
    want_calls = 1;
    assert_true(run_until(calls_reached, NULL, 5000));
    void *ok = NULL;
    pthread_join(t, &ok);
    assert_non_null(ok);
    assert_int_equal(atomic_load(&idp.hits), 1);
    est_jwks_sub_destroy(s);
}

/* Workers that start together race to start the fetcher: each waits until it is ready, all
 * share the first fetch. */
static void test_workers_start_together(void **state)
{
    idp_set(200, JWKS_A, strlen(JWKS_A), 300, 0);
    est_jwt_conf_t jc = make_conf(300000);
    pthread_barrier_t b;
    pthread_t t[4];
    pthread_barrier_init(&b, NULL, 4);
    start_line = &b;
    for (int i = 0; i != 4; ++i)
        assert_int_equal(pthread_create(&t[i], NULL, other_worker, &jc), 0);
    int ok = 1;
    for (int i = 0; i != 4; ++i) {
        void *r = NULL;
        pthread_join(t[i], &r);
        ok &= r != NULL;
    }
    start_line = NULL;
    pthread_barrier_destroy(&b);
    assert_true(ok);
    assert_int_equal(atomic_load(&idp.hits), 1);
}

int main(void)
{
    est_dns_global_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_first_fetch_is_shared, setup, teardown),
        cmocka_unit_test_setup_teardown(test_newer_set_answers_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_waiters_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancelled_waiter_not_called, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sources_shared_and_kept, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failures_keep_last_good_set, setup, teardown),
        cmocka_unit_test_setup_teardown(test_slow_fetch_answers_waiters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_workers_one_fetch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_workers_start_together, setup, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    est_dns_global_dispose();
    return rc;
}

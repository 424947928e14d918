/*
 * Unit tests for the upstream HTTP/1.1 client (src/upstream/client.c, pool.c, balancer.c).
 *
 * Each test runs an h2o evloop in the main thread and a small scripted blocking HTTP server
 * in other threads on 127.0.0.1:0 (one thread per connection, so concurrency is real). The
 * loop is always run in bounded steps until a condition holds.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include "common/log.h"
#include "upstream/client.h"
#include "upstream/client_internal.h" /* active_requests / active_retries */
#include "upstream/exchange_internal.h" /* est_hedge_record_ttfb */

/* ------------------------------------------------------------------ scripted server */

enum {
    MODE_NONE = -1,       /* no server: the upstream's port is one nobody listens on */
    MODE_CL,              /* 200, Content-Length body "hello", keep-alive */
    MODE_CHUNKED,         /* 200, chunked "hello world", split across several writes */
    MODE_CLOSE_DELIMITED, /* 200, no length, body ends with the connection */
    MODE_SLOW,            /* like MODE_CL after 150 ms */
    MODE_NO_REPLY,        /* reads the request, never answers */
    MODE_503_THEN_200,    /* first request 503, then 200 */
    MODE_RESET,           /* reads the request, closes without an answer */
    MODE_CLOSE_AFTER_ONE, /* answers one request per connection, then closes at the next request */
    MODE_CLOSE_IDLE,      /* answers, then closes the connection (server-side idle close) */
    MODE_BIG,             /* 200, Content-Length BIG_LEN, sent in 16 KiB pieces */
    MODE_SLOW_600,        /* like MODE_CL after 600 ms */
    MODE_SLOW_80,         /* like MODE_CL after 80 ms */
    MODE_204,             /* 204 without body, keep-alive */
    MODE_INTERIM,         /* 100 Continue, then 200 */
    MODE_HUGE_HEAD,       /* a head over 64 KiB */
    MODE_UPGRADE,         /* 101, then "abc" right after the head */
    MODE_GARBAGE,         /* not HTTP */
    MODE_BIG_PAUSE,       /* like MODE_BIG, with a 200 ms pause after the first 16 KiB piece */
};

#define BIG_LEN (1024 * 1024)
#define MAX_HANDLERS 64

typedef struct server {
    int fd;
    uint16_t port;
    int mode;
    atomic_int stop;
    atomic_int conns_total, conns_now, conns_max, requests;
    char last_request[8192];
    pthread_mutex_t mu;
    pthread_t acceptor;
    pthread_t handlers[MAX_HANDLERS];
    int num_handlers;
} server_t;

typedef struct handler_arg {
    server_t *srv;
    int fd;
} handler_arg_t;

static int wait_readable(server_t *srv, int fd)
{
    for (;;) {
        if (atomic_load(&srv->stop))
            return 0;
        struct pollfd p = {fd, POLLIN, 0};
        int r = poll(&p, 1, 20);
        if (r > 0)
            return 1;
        if (r < 0 && errno != EINTR)
            return 0;
    }
}

static int send_all(int fd, const char *s, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, s, len, MSG_NOSIGNAL);
        if (n <= 0)
            return -1;
        s += n;
        len -= (size_t)n;
    }
    return 0;
}

static int send_str(int fd, const char *s)
{
    return send_all(fd, s, strlen(s));
}

static void msleep(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

/* reads one request (head + Content-Length body); 1 on success, 0 on EOF/stop */
static int read_request(server_t *srv, int fd, char *buf, size_t cap)
{
    size_t len = 0;
    for (;;) {
        buf[len] = '\0';
        char *end = strstr(buf, "\r\n\r\n");
        if (end != NULL) {
            size_t head = (size_t)(end + 4 - buf), body = 0;
            char *cl = strcasestr(buf, "\r\ncontent-length:");
            if (cl != NULL && cl < end)
                body = strtoul(cl + 17, NULL, 10);
            if (len >= head + body)
                return 1;
        }
        if (len + 1 >= cap || !wait_readable(srv, fd))
            return 0;
        ssize_t n = recv(fd, buf + len, cap - 1 - len, 0);
        if (n <= 0)
            return 0;
        len += (size_t)n;
    }
}

static void *handler_main(void *p)
{
    handler_arg_t *a = p;
    server_t *srv = a->srv;
    int fd = a->fd;
    free(a);
    int now = atomic_fetch_add(&srv->conns_now, 1) + 1;
    pthread_mutex_lock(&srv->mu);
    if (now > atomic_load(&srv->conns_max))
        atomic_store(&srv->conns_max, now);
    pthread_mutex_unlock(&srv->mu);

    static char big_piece[16384];
    memset(big_piece, 'x', sizeof(big_piece));
    char buf[8192];
    int on_conn = 0;
    for (;;) {
        if (!read_request(srv, fd, buf, sizeof(buf)))
            break;
        int nreq = atomic_fetch_add(&srv->requests, 1) + 1;
        pthread_mutex_lock(&srv->mu);
        snprintf(srv->last_request, sizeof(srv->last_request), "%s", buf);
        pthread_mutex_unlock(&srv->mu);
        ++on_conn;
        const char *ok = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        switch (srv->mode) {
        case MODE_CL:
            send_all(fd, ok, strlen(ok));
            continue;
        case MODE_CHUNKED:
            send_str(fd, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel");
            msleep(30);
            send_str(fd, "lo\r\n");
            msleep(30);
            send_str(fd, "6\r");
            msleep(30);
            send_str(fd, "\n world\r\n0\r\n\r\n");
            continue;
        case MODE_CLOSE_DELIMITED: {
            const char *r = "HTTP/1.1 200 OK\r\n\r\nuntil-close";
            send_all(fd, r, strlen(r));
            goto Close;
        }
        case MODE_SLOW:
        case MODE_SLOW_600:
        case MODE_SLOW_80:
            msleep(srv->mode == MODE_SLOW ? 150 : srv->mode == MODE_SLOW_80 ? 80 : 600);
            send_all(fd, ok, strlen(ok));
            continue;
        case MODE_NO_REPLY:
            while (wait_readable(srv, fd) && recv(fd, buf, sizeof(buf), 0) > 0)
                ;
            goto Close;
        case MODE_503_THEN_200:
            if (nreq == 1) {
                const char *r = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy";
                send_all(fd, r, strlen(r));
            } else {
                send_all(fd, ok, strlen(ok));
            }
            continue;
        case MODE_RESET:
            goto Close;
        case MODE_CLOSE_AFTER_ONE:
            if (on_conn > 1)
                goto Close;
            send_all(fd, ok, strlen(ok));
            continue;
        case MODE_CLOSE_IDLE:
            send_all(fd, ok, strlen(ok));
            goto Close;
        case MODE_204:
            send_str(fd, "HTTP/1.1 204 No Content\r\n\r\n");
            continue;
        case MODE_INTERIM:
            send_str(fd, "HTTP/1.1 100 Continue\r\n\r\n");
            msleep(20);
            send_str(fd, ok);
            continue;
        case MODE_HUGE_HEAD: {
            send_str(fd, "HTTP/1.1 200 OK\r\n");
            char line[1024];
            memset(line, 'a', sizeof(line));
            memcpy(line, "X-Big: ", 7);
            memcpy(line + sizeof(line) - 2, "\r\n", 2);
            for (int i = 0; i != 80; ++i)
                if (send_all(fd, line, sizeof(line)) != 0)
                    goto Close;
            while (wait_readable(srv, fd) && recv(fd, buf, sizeof(buf), 0) > 0)
                ;
            goto Close;
        }
        case MODE_UPGRADE:
            send_str(fd, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nabc");
            while (wait_readable(srv, fd) && recv(fd, buf, sizeof(buf), 0) > 0)
                ;
            goto Close;
        case MODE_GARBAGE:
            send_str(fd, "SSH-2.0-OpenSSH\r\n\r\n");
            goto Close;
        case MODE_BIG:
        case MODE_BIG_PAUSE: {
            char head[128];
            int n = snprintf(head, sizeof(head), "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", BIG_LEN);
            if (send_all(fd, head, (size_t)n) != 0)
                goto Close;
            for (size_t sent = 0; sent < BIG_LEN; sent += sizeof(big_piece)) {
                if (send_all(fd, big_piece, sizeof(big_piece)) != 0)
                    goto Close;
                if (sent == 0 && srv->mode == MODE_BIG_PAUSE)
                    msleep(200);
            }
            continue;
        }
        }
    }
Close:
    close(fd);
    atomic_fetch_sub(&srv->conns_now, 1);
    return NULL;
}

static void *acceptor_main(void *p)
{
    server_t *srv = p;
    while (wait_readable(srv, srv->fd)) {
        int fd = accept(srv->fd, NULL, NULL);
        if (fd < 0)
            continue;
        atomic_fetch_add(&srv->conns_total, 1);
        handler_arg_t *a = malloc(sizeof(*a));
        a->srv = srv;
        a->fd = fd;
        pthread_mutex_lock(&srv->mu);
        if (srv->num_handlers < MAX_HANDLERS && pthread_create(&srv->handlers[srv->num_handlers], NULL, handler_main, a) == 0)
            srv->num_handlers++;
        else
            close(fd), free(a);
        pthread_mutex_unlock(&srv->mu);
    }
    return NULL;
}

static void server_start(server_t *srv, int mode)
{
    memset(srv, 0, sizeof(*srv));
    srv->mode = mode;
    pthread_mutex_init(&srv->mu, NULL);
    srv->fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(srv->fd >= 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(srv->fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(listen(srv->fd, 64), 0);
    socklen_t len = sizeof(sin);
    getsockname(srv->fd, (struct sockaddr *)&sin, &len);
    srv->port = ntohs(sin.sin_port);
    assert_int_equal(pthread_create(&srv->acceptor, NULL, acceptor_main, srv), 0);
}

static void server_stop(server_t *srv)
{
    atomic_store(&srv->stop, 1);
    pthread_join(srv->acceptor, NULL);
    for (int i = 0; i != srv->num_handlers; ++i)
        pthread_join(srv->handlers[i], NULL);
    close(srv->fd);
    pthread_mutex_destroy(&srv->mu);
}

/* a port nobody listens on */
static uint16_t closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bind(fd, (struct sockaddr *)&sin, sizeof(sin));
    socklen_t len = sizeof(sin);
    getsockname(fd, (struct sockaddr *)&sin, &len);
    close(fd);
    return ntohs(sin.sin_port);
}

/* ------------------------------------------------------------------ client fixture */

typedef struct fixture {
    h2o_loop_t *loop;
    est_dns_t *dns;
    est_config_t conf;
    est_upstream_conf_t uconf;
    est_target_conf_t target;
    char authority[64];
    int statuses[4];
    est_upstream_set_t *set;
    est_upstream_t *u;
} fixture_t;

static void fixture_conf(fixture_t *f, uint16_t port)
{
    memset(f, 0, sizeof(*f));
    f->loop = h2o_evloop_create();
    f->conf.dns.min_ttl_ms = 1000;
    f->conf.dns.max_ttl_ms = 300000;
    f->conf.dns.negative_ttl_ms = 5000;
    f->conf.dns.stale_ttl_ms = 60000;
    f->conf.dns.timeout_ms = 1000;
    f->conf.dns.attempts = 2;
    snprintf(f->authority, sizeof(f->authority), "127.0.0.1:%u", port);
    f->target.url = f->authority;
    f->target.host = "127.0.0.1";
    f->target.port = port;
    f->target.authority = f->authority;
    f->target.is_ip_literal = 1;
    f->uconf.name = "test";
    f->uconf.index = 0;
    f->uconf.targets = &f->target;
    f->uconf.num_targets = 1;
    f->uconf.balance = EST_BALANCE_ROUND_ROBIN;
    f->uconf.connect_timeout_ms = 1000;
    f->uconf.response_timeout_ms = 2000;
    f->uconf.pool.max_connections = 16;
    f->uconf.pool.max_idle = 8;
    f->uconf.pool.max_requests = 10000;
    f->uconf.pool.idle_timeout_ms = 30000;
    f->uconf.retry.attempts = 2;
    f->uconf.retry.backoff_ms = 10;
    f->uconf.retry.max_backoff_ms = 50;
    f->uconf.retry.on = EST_RETRY_ON_CONNECT_FAILURE | EST_RETRY_ON_RESET;
    f->uconf.retry.statuses = f->statuses;
    f->uconf.tls.verify = 1;
    f->conf.upstreams = &f->uconf;
    f->conf.num_upstreams = 1;
}

static void fixture_start(fixture_t *f)
{
    f->dns = est_dns_create(f->loop, &f->conf.dns);
    assert_non_null(f->dns);
    f->set = est_upstream_set_create(f->loop, f->dns, &f->conf);
    assert_non_null(f->set);
    f->u = est_upstream_set_get(f->set, 0);
    assert_non_null(f->u);
}

/* also after a fixture_conf without fixture_start (a test that failed before starting) */
static void fixture_stop(fixture_t *f)
{
    if (f->set != NULL)
        est_upstream_set_destroy(f->set);
    if (f->dns != NULL)
        est_dns_destroy(f->dns);
    for (int i = 0; i != 5; ++i)
        h2o_evloop_run(f->loop, 0); /* let closed sockets be freed */
    h2o_evloop_destroy(f->loop);
}

typedef struct rec {
    est_exchange_t *x;
    int status, head_calls, body_calls, finals, errors;
    est_uerr_t err;
    char body[256];
    size_t body_len;
    est_exchange_info_t info;
    int done;
    /* behaviour */
    int pause_on_first_body, cancel_on_first_body;
    int paused_now;
} rec_t;

static int on_head(est_exchange_t *x, void *data, int status, const struct phr_header *headers, size_t num_headers)
{
    rec_t *r = data;
    r->status = status;
    r->head_calls++;
    return 0;
}

static int on_body(est_exchange_t *x, void *data, const char *bytes, size_t len, int is_final)
{
    rec_t *r = data;
    r->body_calls++;
    size_t room = sizeof(r->body) - 1 - r->body_len;
    if (len != 0)
        memcpy(r->body + r->body_len, bytes, len < room ? len : room);
    r->body_len += len < room ? len : room;
    r->body[r->body_len] = '\0';
    if (is_final) {
        r->finals++;
        r->info = *est_exchange_info(x);
        r->done = 1;
        return 0;
    }
    if (r->body_calls == 1 && r->cancel_on_first_body) {
        r->info = *est_exchange_info(x);
        est_exchange_cancel(x);
        r->done = 1;
        return 0;
    }
    if (r->body_calls == 1 && r->pause_on_first_body) {
        est_exchange_pause(x);
        r->paused_now = 1;
    }
    return 0;
}

static void on_error(est_exchange_t *x, void *data, est_uerr_t err, const char *message)
{
    rec_t *r = data;
    r->errors++;
    r->err = err;
    r->info = *est_exchange_info(x);
    r->done = 1;
}

static const est_exchange_cb_t callbacks = {on_head, on_body, on_error};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* runs the loop until *flag (or all of n recs) done, at most max_ms */
static int run_until_done(fixture_t *f, rec_t *recs, size_t n, uint64_t max_ms)
{
    uint64_t until = now_ms() + max_ms;
    for (;;) {
        size_t done = 0;
        for (size_t i = 0; i != n; ++i)
            done += recs[i].done != 0;
        if (done == n)
            return 1;
        if (now_ms() >= until)
            return 0;
        h2o_evloop_run(f->loop, 10);
    }
}

static void run_for(fixture_t *f, uint64_t ms)
{
    uint64_t until = now_ms() + ms;
    while (now_ms() < until)
        h2o_evloop_run(f->loop, 10);
}

static est_upstream_request_t get_request(void)
{
    est_upstream_request_t req = {0};
    req.method = h2o_iovec_init(H2O_STRLIT("GET"));
    req.path = h2o_iovec_init(H2O_STRLIT("/x?y=1"));
    req.is_idempotent = 1;
    return req;
}

static void start(fixture_t *f, rec_t *r, const est_upstream_request_t *req)
{
    memset(r, 0, sizeof(*r));
    r->x = est_exchange_start(f->u, req, &callbacks, r);
    assert_non_null(r->x);
}

/*
 * Fixtures by cmocka setup/teardown, around the one scripted server: the prestate is the
 * server's mode (MODE_NONE: no server, a closed port). env_setup gives the test the server and
 * an upstream set on it (fixture_conf defaults) as an env_t; env_setup_conf stops before the
 * set is built, so the test adjusts e->f.uconf and calls env_start. env_teardown stops
 * whatever was started, also when the test failed half-way.
 */

typedef struct env {
    server_t srv;
    int has_srv;
    fixture_t f;
    /* env_add_target: a second target, on a second scripted server (srv2) or a closed port */
    server_t srv2;
    int has_srv2;
    est_target_conf_t targets[2];
    char authority2[64];
} env_t;

static int env_setup_conf(void **state)
{
    int mode = *(int *)*state;
    env_t *e = calloc(1, sizeof(*e));
    if (e == NULL)
        return -1;
    *state = e;
    if (mode != MODE_NONE) {
        server_start(&e->srv, mode);
        e->has_srv = 1;
    }
    fixture_conf(&e->f, e->has_srv ? e->srv.port : closed_port());
    return 0;
}

/* before env_start: the upstream gets a second target, a server in `mode` (MODE_NONE: a port
 * nobody listens on) */
static void env_add_target(env_t *e, int mode)
{
    uint16_t port;
    if (mode != MODE_NONE) {
        server_start(&e->srv2, mode);
        e->has_srv2 = 1;
        port = e->srv2.port;
    } else {
        port = closed_port();
    }
    e->targets[0] = e->targets[1] = e->f.target;
    snprintf(e->authority2, sizeof(e->authority2), "127.0.0.1:%u", port);
    e->targets[1].port = port;
    e->targets[1].authority = e->authority2;
    e->targets[1].url = e->authority2;
    e->f.uconf.targets = e->targets;
    e->f.uconf.num_targets = 2;
}

static void env_start(env_t *e)
{
    fixture_start(&e->f);
}

static int env_setup(void **state)
{
    if (env_setup_conf(state) != 0)
        return -1;
    env_start(*state);
    return 0;
}

static int env_teardown(void **state)
{
    env_t *e = *state;
    if (e->f.loop != NULL)
        fixture_stop(&e->f);
    if (e->has_srv)
        server_stop(&e->srv);
    if (e->has_srv2)
        server_stop(&e->srv2);
    free(e);
    return 0;
}

/* ------------------------------------------------------------------ tests */

static void test_content_length(void **state)
{
    env_t *e = *state; /* MODE_CL */
    static h2o_iovec_t name = {H2O_STRLIT("X-Test")};
    h2o_header_t hdrs[] = {{&name, NULL, {H2O_STRLIT("1")}}};
    est_upstream_request_t req = get_request();
    req.headers = hdrs;
    req.num_headers = 1;
    rec_t r;
    start(&e->f, &r, &req);
    assert_int_equal(r.done, 0); /* never synchronous */
    assert_true(run_until_done(&e->f, &r, 1, 3000));
    assert_int_equal(r.errors, 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.head_calls, 1);
    assert_int_equal(r.finals, 1);
    assert_string_equal(r.body, "hello");
    assert_int_equal(r.info.attempts, 1);
    assert_int_equal(r.info.status, 200);
    assert_string_equal(r.info.address, e->f.authority);
    assert_int_equal(r.info.reused, 0);
    pthread_mutex_lock(&e->srv.mu);
    assert_non_null(strstr(e->srv.last_request, "GET /x?y=1 HTTP/1.1\r\nHost: 127.0.0.1:"));
    assert_non_null(strstr(e->srv.last_request, "\r\nX-Test: 1\r\n"));
    assert_null(strcasestr(e->srv.last_request, "connection:"));
    assert_null(strcasestr(e->srv.last_request, "content-length:"));
    pthread_mutex_unlock(&e->srv.mu);
    assert_int_equal(est_upstream_get_stats(e->f.u)->conns_idle, 1);

}

static void test_chunked_split(void **state)
{
    env_t *e = *state; /* MODE_CHUNKED */
    est_upstream_request_t req = get_request();
    rec_t r;
    start(&e->f, &r, &req);
    assert_true(run_until_done(&e->f, &r, 1, 3000));
    assert_int_equal(r.errors, 0);
    assert_string_equal(r.body, "hello world");
    assert_true(r.body_calls >= 2); /* arrived in pieces */
    assert_int_equal(r.finals, 1);
    /* complete chunked reply: pooled */
    assert_int_equal(est_upstream_get_stats(e->f.u)->conns_idle, 1);
    rec_t r2;
    start(&e->f, &r2, &req);
    assert_true(run_until_done(&e->f, &r2, 1, 3000));
    assert_string_equal(r2.body, "hello world");
    assert_int_equal(r2.info.reused, 1);
    assert_int_equal(atomic_load(&e->srv.conns_total), 1);
}

static void test_close_delimited(void **state)
{
    env_t *e = *state; /* MODE_CLOSE_DELIMITED */
    est_upstream_request_t req = get_request();
    rec_t r;
    start(&e->f, &r, &req);
    assert_true(run_until_done(&e->f, &r, 1, 3000));
    assert_int_equal(r.errors, 0);
    assert_string_equal(r.body, "until-close");
    assert_int_equal(r.finals, 1);
    assert_int_equal(est_upstream_get_stats(e->f.u)->conns_idle, 0); /* never pooled */
    assert_int_equal(est_upstream_get_stats(e->f.u)->conns_open, 0);
}

static void test_keepalive_reuse(void **state)
{
    env_t *e = *state; /* MODE_CL */
    est_upstream_request_t req = get_request();
    for (int i = 0; i != 5; ++i) {
        rec_t r;
        start(&e->f, &r, &req);
        assert_true(run_until_done(&e->f, &r, 1, 3000));
        assert_int_equal(r.status, 200);
        assert_string_equal(r.body, "hello");
        assert_int_equal(r.info.reused, i != 0);
    }
    assert_int_equal(atomic_load(&e->srv.conns_total), 1);
    assert_int_equal(atomic_load(&e->srv.requests), 5);
    const est_upstream_stats_t *st = est_upstream_get_stats(e->f.u);
    assert_int_equal(st->conns_created, 1);
    assert_int_equal(st->conns_reused, 4);
    assert_int_equal(st->attempts_ok, 5);
}

static void test_max_connections_queue(void **state)
{
    env_t *e = *state; /* MODE_SLOW */
    fixture_t *f = &e->f;
    server_t *srv = &e->srv;
    f->uconf.pool.max_connections = 2;
    env_start(e);
    est_upstream_request_t req = get_request();
    rec_t r[5];
    for (int i = 0; i != 5; ++i)
        start(f, &r[i], &req);
    assert_true(run_until_done(f, r, 5, 5000));
    for (int i = 0; i != 5; ++i) {
        assert_int_equal(r[i].errors, 0);
        assert_int_equal(r[i].status, 200);
    }
    assert_true(atomic_load(&srv->conns_max) <= 2);
    assert_true(atomic_load(&srv->conns_total) <= 2);
    assert_int_equal(atomic_load(&srv->requests), 5);
    assert_true(est_upstream_get_stats(f->u)->queue_waits >= 3);
}

static void test_overloaded(void **state)
{
    env_t *e = *state; /* MODE_SLOW_600 */
    fixture_t *f = &e->f;
    server_t *srv = &e->srv;
    f->uconf.pool.max_connections = 1;
    f->uconf.connect_timeout_ms = 200;
    env_start(e);
    est_upstream_request_t req = get_request();
    rec_t r[2];
    start(f, &r[0], &req);
    start(f, &r[1], &req);
    uint64_t t0 = now_ms();
    assert_true(run_until_done(f, &r[1], 1, 3000));
    uint64_t waited = now_ms() - t0;
    assert_int_equal(r[1].errors, 1);
    assert_int_equal(r[1].err, EST_UERR_OVERLOADED);
    assert_true(waited >= 150 && waited < 550);
    assert_int_equal(r[0].done, 0);
    assert_true(run_until_done(f, &r[0], 1, 3000));
    assert_int_equal(r[0].status, 200);
    assert_int_equal(atomic_load(&srv->requests), 1);
}

static void test_server_closes_idle(void **state)
{
    env_t *e = *state; /* MODE_CLOSE_IDLE */
    fixture_t *f = &e->f;
    server_t *srv = &e->srv;
    f->uconf.retry.attempts = 1; /* success must not depend on a counted retry */
    env_start(e);
    est_upstream_request_t req = get_request();
    rec_t r;
    start(f, &r, &req);
    assert_true(run_until_done(f, &r, 1, 3000));
    assert_int_equal(r.status, 200);
    /* the pooled connection sees the server's FIN while idle and is closed at once */
    uint64_t until = now_ms() + 2000;
    while (est_upstream_get_stats(f->u)->conns_open != 0 && now_ms() < until)
        h2o_evloop_run(f->loop, 10);
    assert_int_equal(est_upstream_get_stats(f->u)->conns_open, 0);
    start(f, &r, &req);
    assert_true(run_until_done(f, &r, 1, 3000));
    assert_int_equal(r.errors, 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.info.reused, 0);
    assert_int_equal(atomic_load(&srv->conns_total), 2);
}

static void test_stale_reuse_transparent_retry(void **state)
{
    /* the server closes a kept-alive connection when the next request arrives: the
     * exchange goes on over a fresh connection without a counted retry */
    env_t *e = *state; /* MODE_CLOSE_AFTER_ONE */
    fixture_t *f = &e->f;
    server_t *srv = &e->srv;
    f->uconf.retry.attempts = 1;
    env_start(e);
    est_upstream_request_t req = get_request();
    rec_t r;
    start(f, &r, &req);
    assert_true(run_until_done(f, &r, 1, 3000));
    assert_int_equal(r.status, 200);
    start(f, &r, &req);
    assert_true(run_until_done(f, &r, 1, 3000));
    assert_int_equal(r.errors, 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.info.attempts, 1);
    assert_int_equal(r.info.reused, 0);
    assert_int_equal(atomic_load(&srv->conns_total), 2);
}

static void test_connection_refused(void **state)
{
    env_t *e = *state; /* MODE_NONE */
    fixture_t *f = &e->f;
    env_start(e);
    est_upstream_request_t req = get_request();
    rec_t r;
    start(f, &r, &req);
    assert_true(run_until_done(f, &r, 1, 3000));
    assert_int_equal(r.errors, 1);
    assert_int_equal(r.err, EST_UERR_CONNECT);
    assert_int_equal(r.info.attempts, 2);
    assert_int_equal(r.head_calls, 0);
    const est_upstream_stats_t *st = est_upstream_get_stats(f->u);
    assert_int_equal(st->attempts_failed[EST_UERR_CONNECT], 2);
    assert_int_equal(st->retries, 1);
    assert_int_equal(st->conns_open, 0);
}

static void test_response_timeout(void **state)
{
    env_t *e = *state; /* MODE_NO_REPLY */
    fixture_t *f = &e->f;
    f->uconf.response_timeout_ms = 200;
    f->uconf.retry.attempts = 1;
    env_start(e);
    est_upstream_request_t req = get_request();
    rec_t r;
    uint64_t t0 = now_ms();
    start(f, &r, &req);
    assert_true(run_until_done(f, &r, 1, 3000));
    uint64_t took = now_ms() - t0;
    assert_int_equal(r.errors, 1);
    assert_int_equal(r.err, EST_UERR_TIMEOUT);
    assert_true(est_uerr_is_timeout(r.err));
    assert_true(took >= 180 && took < 1000);
}

static void test_deadline(void **state)
{
    env_t *e = *state; /* MODE_NO_REPLY */
    est_upstream_request_t req = get_request();
    req.deadline = h2o_now(e->f.loop) + 150;
    rec_t r;
    uint64_t t0 = now_ms();
    start(&e->f, &r, &req);
    assert_true(run_until_done(&e->f, &r, 1, 3000));
    uint64_t took = now_ms() - t0;
    assert_int_equal(r.err, EST_UERR_DEADLINE);
    assert_true(took >= 100 && took < 1000);
}

static void test_retry_503(void **state)
{
    env_t *e = *state; /* MODE_503_THEN_200 */
    fixture_t *f = &e->f;
    f->statuses[0] = 503;
    f->uconf.retry.num_statuses = 1;
    env_start(e);
    est_upstream_request_t req = get_request();
    rec_t r;
    start(f, &r, &req);
    assert_true(run_until_done(f, &r, 1, 3000));
    assert_int_equal(r.errors, 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.head_calls, 1);
    assert_string_equal(r.body, "hello");
    assert_int_equal(r.info.attempts, 2);
    assert_int_equal(est_upstream_get_stats(f->u)->retries, 1);
}

/* (tracing) each attempt sends its own traceparent (a new parent id) and, sampled, is
 * reported as a client span whose id is that parent id */
static void test_retry_503_traced(void **state)
{
    env_t *e = *state; /* MODE_503_THEN_200 */
    fixture_t *f = &e->f;
    f->statuses[0] = 503;
    f->uconf.retry.num_statuses = 1;
    env_start(e);
    est_trace_sink_t sink;
    assert_int_equal(est_trace_sink_init(&sink, 1.0, NULL, NULL), 0);
    est_trace_ctx_t tc;
    static const char tp[] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    est_trace_begin(&tc, &sink, tp, sizeof(tp) - 1, "k=v", 3, est_trace_now_ns());
    est_upstream_request_t req = get_request();
    req.trace = &tc;
    rec_t r;
    start(f, &r, &req);
    assert_true(run_until_done(f, &r, 1, 3000));
    assert_int_equal(r.status, 200);
    assert_int_equal(r.info.attempts, 2);
    assert_int_equal(sink.count, 2);
    const est_span_t *a = est_trace_sink_at(&sink, 0), *b = est_trace_sink_at(&sink, 1);
    assert_int_equal(a->kind, EST_SPAN_KIND_CLIENT);
    assert_int_equal(a->attempt, 1);
    assert_int_equal(a->status, 503);
    assert_int_equal(a->is_error, 1);
    assert_int_equal(b->attempt, 2);
    assert_int_equal(b->status, 200);
    assert_int_equal(b->is_error, 0);
    assert_memory_not_equal(a->span_id, b->span_id, 8);
    assert_memory_equal(a->parent_id, tc.span_id, 8);
    assert_memory_equal(a->trace_id, tc.trace_id, 16);
    assert_true(b->start_ns >= a->end_ns && b->end_ns >= b->start_ns);
    assert_true(strncmp(b->address, "127.0.0.1:", 10) == 0);
    /* the last attempt's head carries its own span id as the parent-id, before the blank line */
    char want[128], hex[17];
    est_hex_lower(hex, b->span_id, 8);
    hex[16] = '\0';
    snprintf(want, sizeof(want), "\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-%s-01\r\ntracestate: k=v\r\n\r\n", hex);
    pthread_mutex_lock(&e->srv.mu);
    assert_non_null(strstr(e->srv.last_request, want));
    pthread_mutex_unlock(&e->srv.mu);
    est_trace_sink_dispose(&sink);
}

static void test_retry_503_exhausted_delivers_last(void **state)
{
    env_t *e = *state; /* MODE_503_THEN_200 */
    fixture_t *f = &e->f;
    f->statuses[0] = 503;
    f->uconf.retry.num_statuses = 1;
    f->uconf.retry.attempts = 1;
    env_start(e);
    est_upstream_request_t req = get_request();
    rec_t r;
    start(f, &r, &req);
    assert_true(run_until_done(f, &r, 1, 3000));
    assert_int_equal(r.errors, 0);
    assert_int_equal(r.status, 503);
    assert_string_equal(r.body, "busy");
}

static void test_post_not_retried_after_send(void **state)
{
    env_t *e = *state; /* MODE_RESET */
    fixture_t *f = &e->f;
    server_t *srv = &e->srv;
    f->uconf.retry.attempts = 3;
    env_start(e);
    est_upstream_request_t req = get_request();
    req.method = h2o_iovec_init(H2O_STRLIT("POST"));
    req.body = h2o_iovec_init(H2O_STRLIT("{\"a\":1}"));
    req.has_body = 1;
    req.is_idempotent = 0;
    rec_t r;
    start(f, &r, &req);
    assert_true(run_until_done(f, &r, 1, 3000));
    assert_int_equal(r.errors, 1);
    assert_int_equal(r.err, EST_UERR_RESET);
    assert_int_equal(r.info.attempts, 1);
    assert_int_equal(atomic_load(&srv->requests), 1);
    pthread_mutex_lock(&srv->mu);
    assert_non_null(strstr(srv->last_request, "POST /x?y=1 HTTP/1.1\r\n"));
    assert_non_null(strstr(srv->last_request, "\r\nContent-Length: 7\r\n\r\n{\"a\":1}"));
    pthread_mutex_unlock(&srv->mu);

    /* the same with GET is retried (reset is in retry.on) */
    est_upstream_request_t get = get_request();
    start(f, &r, &get);
    assert_true(run_until_done(f, &r, 1, 3000));
    assert_int_equal(r.err, EST_UERR_RESET);
    assert_int_equal(r.info.attempts, 3);
}

static void test_post_empty_body_content_length(void **state)
{
    env_t *e = *state; /* MODE_CL */
    est_upstream_request_t req = get_request();
    req.method = h2o_iovec_init(H2O_STRLIT("POST"));
    req.is_idempotent = 0;
    rec_t r;
    start(&e->f, &r, &req);
    assert_true(run_until_done(&e->f, &r, 1, 3000));
    assert_int_equal(r.status, 200);
    pthread_mutex_lock(&e->srv.mu);
    assert_non_null(strstr(e->srv.last_request, "\r\nContent-Length: 0\r\n\r\n"));
    pthread_mutex_unlock(&e->srv.mu);
}

static void test_pause_resume(void **state)
{
    env_t *e = *state; /* MODE_BIG */
    fixture_t *f = &e->f;
    f->uconf.response_timeout_ms = 300; /* the pause is longer: the read timer must be paused too */
    env_start(e);
    est_upstream_request_t req = get_request();
    rec_t r;
    start(f, &r, &req);
    r.pause_on_first_body = 1;
    uint64_t until = now_ms() + 3000;
    while (!r.paused_now && !r.done && now_ms() < until)
        h2o_evloop_run(f->loop, 10);
    assert_int_equal(r.paused_now, 1);
    int calls = r.body_calls;
    run_for(f, 500);
    assert_int_equal(r.body_calls, calls); /* nothing while paused */
    assert_int_equal(r.done, 0);
    est_exchange_resume(r.x);
    assert_int_equal(r.body_calls, calls); /* not synchronous */
    assert_true(run_until_done(f, &r, 1, 5000));
    assert_int_equal(r.errors, 0);
    assert_int_equal(r.finals, 1);
    assert_int_equal(r.body_len, sizeof(r.body) - 1); /* truncated copy, but all delivered */
}

typedef struct big_counter {
    rec_t r;
    size_t total;
} big_counter_t;

static int count_body(est_exchange_t *x, void *data, const char *bytes, size_t len, int is_final)
{
    big_counter_t *b = data;
    b->total += len;
    if (is_final)
        b->r.done = 1;
    return 0;
}

static void test_big_body_total(void **state)
{
    env_t *e = *state; /* MODE_BIG */
    est_upstream_request_t req = get_request();
    big_counter_t b = {0};
    est_exchange_cb_t cbs = {on_head, count_body, on_error};
    assert_non_null(est_exchange_start(e->f.u, &req, &cbs, &b));
    assert_true(run_until_done(&e->f, &b.r, 1, 5000));
    assert_int_equal(b.total, BIG_LEN);
    assert_int_equal(b.r.errors, 0);
}

static void test_cancel_mid_body(void **state)
{
    env_t *e = *state; /* MODE_BIG */
    est_upstream_request_t req = get_request();
    rec_t r;
    start(&e->f, &r, &req);
    r.cancel_on_first_body = 1;
    assert_true(run_until_done(&e->f, &r, 1, 3000));
    int calls = r.body_calls;
    run_for(&e->f, 100);
    assert_int_equal(r.body_calls, calls);
    assert_int_equal(r.finals, 0);
    assert_int_equal(r.errors, 0);
    const est_upstream_stats_t *st = est_upstream_get_stats(e->f.u);
    assert_int_equal(st->conns_open, 0); /* closed, not pooled */
    assert_int_equal(st->conns_idle, 0);
}

static void test_cancel_before_start(void **state)
{
    env_t *e = *state; /* MODE_CL */
    est_upstream_request_t req = get_request();
    rec_t r;
    start(&e->f, &r, &req);
    est_exchange_cancel(r.x);
    run_for(&e->f, 100);
    assert_int_equal(r.head_calls + r.body_calls + r.errors, 0);
    assert_int_equal(atomic_load(&e->srv.requests), 0);
}


static void test_no_body_statuses(void **state)
{
    env_t *e = *state; /* MODE_204 */
    est_upstream_request_t req = get_request();
    for (int i = 0; i != 2; ++i) {
        rec_t r;
        start(&e->f, &r, &req);
        assert_true(run_until_done(&e->f, &r, 1, 3000));
        assert_int_equal(r.status, 204);
        assert_int_equal(r.finals, 1);
        assert_int_equal(r.body_len, 0);
    }
    assert_int_equal(atomic_load(&e->srv.conns_total), 1);
    fixture_stop(&e->f);
    server_stop(&e->srv);

    /* HEAD: the Content-Length describes a body that is not sent */
    server_start(&e->srv, MODE_CL);
    fixture_conf(&e->f, e->srv.port);
    fixture_start(&e->f);
    req.method = h2o_iovec_init(H2O_STRLIT("HEAD"));
    rec_t r;
    start(&e->f, &r, &req);
    assert_true(run_until_done(&e->f, &r, 1, 3000));
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 0);
}

static void test_interim_skipped(void **state)
{
    env_t *e = *state; /* MODE_INTERIM */
    est_upstream_request_t req = get_request();
    rec_t r;
    start(&e->f, &r, &req);
    assert_true(run_until_done(&e->f, &r, 1, 3000));
    assert_int_equal(r.head_calls, 1);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "hello");
}

/* run once per bad mode: MODE_HUGE_HEAD, MODE_GARBAGE */
static void test_bad_replies(void **state)
{
    env_t *e = *state;
    est_upstream_request_t req = get_request();
    rec_t r;
    start(&e->f, &r, &req);
    assert_true(run_until_done(&e->f, &r, 1, 3000));
    assert_int_equal(r.errors, 1);
    assert_int_equal(r.err, EST_UERR_BAD_REPLY);
    assert_int_equal(r.info.attempts, 1); /* not retried */
}

static h2o_socket_t *stolen;

static int steal_on_head(est_exchange_t *x, void *data, int status, const struct phr_header *headers, size_t num_headers)
{
    rec_t *r = data;
    r->status = status;
    r->head_calls++;
    r->info = *est_exchange_info(x);
    stolen = est_exchange_steal_socket(x);
    r->done = 1;
    return 0;
}

static void test_upgrade_steal(void **state)
{
    env_t *e = *state; /* MODE_UPGRADE */
    static h2o_iovec_t upgrade = {H2O_STRLIT("Upgrade")};
    h2o_header_t hdrs[] = {{&upgrade, NULL, {H2O_STRLIT("websocket")}}};
    est_upstream_request_t req = get_request();
    req.headers = hdrs;
    req.num_headers = 1;
    req.want_upgrade = 1;
    est_exchange_cb_t cbs = {steal_on_head, on_body, on_error};
    rec_t r = {0};
    stolen = NULL;
    assert_non_null(est_exchange_start(e->f.u, &req, &cbs, &r));
    assert_true(run_until_done(&e->f, &r, 1, 3000));
    assert_int_equal(r.status, 101);
    assert_non_null(stolen);
    assert_int_equal(stolen->input->size, 3);
    assert_memory_equal(stolen->input->bytes, "abc", 3);
    pthread_mutex_lock(&e->srv.mu);
    assert_non_null(strstr(e->srv.last_request, "\r\nUpgrade: websocket\r\nConnection: upgrade\r\n"));
    pthread_mutex_unlock(&e->srv.mu);
    assert_int_equal(est_upstream_get_stats(e->f.u)->conns_open, 0);
    h2o_socket_close(stolen);
}

static void test_pool_max_idle(void **state)
{
    env_t *e = *state; /* MODE_SLOW */
    fixture_t *f = &e->f;
    f->uconf.pool.max_idle = 1;
    env_start(e);
    est_upstream_request_t req = get_request();
    rec_t r[3];
    for (int i = 0; i != 3; ++i)
        start(f, &r[i], &req);
    assert_true(run_until_done(f, r, 3, 3000));
    assert_int_equal(atomic_load(&e->srv.conns_total), 3);
    const est_upstream_stats_t *st = est_upstream_get_stats(f->u);
    assert_int_equal(st->conns_idle, 1); /* the others were closed */
    assert_int_equal(st->conns_open, 1);
}

/* max_requests: a connection serves at most 2 requests */
static void test_pool_max_requests(void **state)
{
    env_t *e = *state; /* MODE_CL */
    fixture_t *f = &e->f;
    f->uconf.pool.max_requests = 2;
    env_start(e);
    est_upstream_request_t req = get_request();
    rec_t r;
    for (int i = 0; i != 5; ++i) {
        start(f, &r, &req);
        assert_true(run_until_done(f, &r, 1, 3000));
        assert_int_equal(r.status, 200);
    }
    assert_int_equal(atomic_load(&e->srv.conns_total), 3);
}

static void test_pool_idle_timeout(void **state)
{
    env_t *e = *state; /* MODE_CL */
    fixture_t *f = &e->f;
    f->uconf.pool.idle_timeout_ms = 100;
    env_start(e);
    est_upstream_request_t req = get_request();
    rec_t r;
    start(f, &r, &req);
    assert_true(run_until_done(f, &r, 1, 3000));
    assert_int_equal(est_upstream_get_stats(f->u)->conns_idle, 1);
    uint64_t until = now_ms() + 1000;
    while (est_upstream_get_stats(f->u)->conns_idle != 0 && now_ms() < until)
        h2o_evloop_run(f->loop, 10);
    assert_int_equal(est_upstream_get_stats(f->u)->conns_idle, 0);
    assert_int_equal(est_upstream_get_stats(f->u)->conns_open, 0);
}

static void test_two_targets_round_robin(void **state)
{
    env_t *e = *state; /* MODE_CL, and a second target in MODE_CL */
    env_add_target(e, MODE_CL);
    env_start(e);
    est_upstream_request_t req = get_request();
    for (int i = 0; i != 4; ++i) {
        rec_t r;
        start(&e->f, &r, &req);
        assert_true(run_until_done(&e->f, &r, 1, 3000));
        assert_int_equal(r.status, 200);
    }
    assert_int_equal(atomic_load(&e->srv.requests), 2);
    assert_int_equal(atomic_load(&e->srv2.requests), 2);
}

/* the second target is down: connect failures move on to the first (the attempt is counted) */
static void test_two_targets_one_down(void **state)
{
    env_t *e = *state; /* MODE_CL, and a second target nobody listens on */
    env_add_target(e, MODE_NONE);
    env_start(e);
    est_upstream_request_t req = get_request();
    unsigned retried = 0;
    for (int i = 0; i != 4; ++i) {
        rec_t r;
        start(&e->f, &r, &req);
        assert_true(run_until_done(&e->f, &r, 1, 3000));
        assert_int_equal(r.errors, 0);
        assert_int_equal(r.status, 200);
        assert_true(r.info.attempts == 1 || r.info.attempts == 2);
        assert_string_equal(r.info.address, e->f.authority);
        retried += r.info.attempts == 2;
    }
    assert_true(retried >= 2);
}

/* the retry budget: 20 concurrent failing requests with 3 attempts each do not make 40 retries */
static void test_retry_budget_caps_retries(void **state)
{
    env_t *e = *state; /* MODE_NONE */
    fixture_t *f = &e->f;
    f->uconf.retry.attempts = 3;
    f->uconf.retry.backoff_ms = 10;
    f->uconf.retry.max_backoff_ms = 20;
    env_start(e);
    est_upstream_request_t req = get_request();
    rec_t r[20];
    for (int i = 0; i != 20; ++i)
        start(f, &r[i], &req);
    assert_true(run_until_done(f, r, 20, 5000));
    const est_upstream_stats_t *st = est_upstream_get_stats(f->u);
    for (int i = 0; i != 20; ++i)
        assert_int_equal(r[i].errors, 1);
    /* 20% of 20 live requests = 4 concurrent retries; fewer once requests finish (minimum 3) */
    assert_true(st->retries >= 3);
    assert_true(st->retries <= 8);
    assert_true(st->retries_budget_exceeded >= 12);
    assert_int_equal(f->u->active_requests, 0);
    assert_int_equal(f->u->active_retries, 0);
}

/* a lone request is never refused a retry by the budget (minimum 3) */
static void test_retry_budget_minimum(void **state)
{
    env_t *e = *state; /* MODE_NONE */
    fixture_t *f = &e->f;
    f->uconf.retry.attempts = 3;
    f->uconf.retry.backoff_ms = 1;
    f->uconf.retry.max_backoff_ms = 2;
    env_start(e);
    est_upstream_request_t req = get_request();
    rec_t r;
    start(f, &r, &req);
    assert_true(run_until_done(f, &r, 1, 3000));
    assert_int_equal(r.info.attempts, 3);
    assert_int_equal(est_upstream_get_stats(f->u)->retries, 2);
    assert_int_equal(est_upstream_get_stats(f->u)->retries_budget_exceeded, 0);
}

static void test_least_request(void **state)
{
    env_t *e = *state; /* MODE_SLOW_600, and a second target in MODE_CL */
    fixture_t *f = &e->f;
    env_add_target(e, MODE_CL);
    f->uconf.balance = EST_BALANCE_LEAST_REQUEST;
    env_start(e);
    est_upstream_request_t req = get_request();
    rec_t slow[2], fast;
    start(f, &slow[0], &req);
    start(f, &slow[1], &req);
    run_for(f, 50); /* both started: one per target */
    /* while the slow target's request is in flight, fast requests go to the other */
    for (int i = 0; i != 3; ++i) {
        start(f, &fast, &req);
        assert_true(run_until_done(f, &fast, 1, 3000));
        assert_int_equal(fast.status, 200);
    }
    assert_true(run_until_done(f, slow, 2, 3000));
    assert_int_equal(atomic_load(&e->srv.requests), 1);
    assert_int_equal(atomic_load(&e->srv2.requests), 4);
}

/* ------------------------------------------------------------------ TLS */

typedef struct tls_server {
    server_t base; /* fd, port, stop, counters */
    SSL_CTX *ctx;
} tls_server_t;

static char tls_ca_path[64];

/* self-signed P-256 certificate for DNS:api.test and IP:127.0.0.1, written to tls_ca_path */
static SSL_CTX *make_server_ctx(void)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    assert_non_null(key);
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, key);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"api.test", -1, -1, 0);
    X509_set_issuer_name(x, name);
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, "DNS:api.test,IP:127.0.0.1");
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    ext = X509V3_EXT_conf_nid(NULL, &v3, NID_basic_constraints, "critical,CA:TRUE");
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    assert_true(X509_sign(x, key, EVP_sha256()) > 0);

    snprintf(tls_ca_path, sizeof(tls_ca_path), "/tmp/est-test-ca-%d.pem", (int)getpid());
    FILE *fp = fopen(tls_ca_path, "w");
    assert_non_null(fp);
    PEM_write_X509(fp, x);
    fclose(fp);

    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    SSL_CTX_use_certificate(ctx, x);
    SSL_CTX_use_PrivateKey(ctx, key);
    X509_free(x);
    EVP_PKEY_free(key);
    return ctx;
}

static void *tls_handler_main(void *p)
{
    handler_arg_t *a = p;
    tls_server_t *srv = (tls_server_t *)a->srv;
    int fd = a->fd;
    free(a);
    SSL *ssl = SSL_new(srv->ctx);
    SSL_set_fd(ssl, fd);
    if (wait_readable(&srv->base, fd) && SSL_accept(ssl) == 1) {
        char buf[8192];
        size_t len = 0;
        for (;;) {
            if (SSL_pending(ssl) == 0 && !wait_readable(&srv->base, fd))
                break;
            int n = SSL_read(ssl, buf + len, (int)(sizeof(buf) - 1 - len));
            if (n <= 0)
                break;
            len += (size_t)n;
            buf[len] = '\0';
            if (strstr(buf, "\r\n\r\n") != NULL) {
                atomic_fetch_add(&srv->base.requests, 1);
                const char *ok = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ntls";
                SSL_write(ssl, ok, (int)strlen(ok));
                len = 0;
            }
        }
    }
    SSL_free(ssl);
    close(fd);
    return NULL;
}

static void *tls_acceptor_main(void *p)
{
    tls_server_t *srv = p;
    while (wait_readable(&srv->base, srv->base.fd)) {
        int fd = accept(srv->base.fd, NULL, NULL);
        if (fd < 0)
            continue;
        atomic_fetch_add(&srv->base.conns_total, 1);
        handler_arg_t *a = malloc(sizeof(*a));
        a->srv = &srv->base;
        a->fd = fd;
        if (srv->base.num_handlers < MAX_HANDLERS &&
            pthread_create(&srv->base.handlers[srv->base.num_handlers], NULL, tls_handler_main, a) == 0)
            srv->base.num_handlers++;
        else
            close(fd), free(a);
    }
    return NULL;
}

static void tls_server_start(tls_server_t *srv)
{
    server_t *b = &srv->base;
    memset(srv, 0, sizeof(*srv));
    pthread_mutex_init(&b->mu, NULL);
    srv->ctx = make_server_ctx();
    b->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(b->fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(listen(b->fd, 64), 0);
    socklen_t len = sizeof(sin);
    getsockname(b->fd, (struct sockaddr *)&sin, &len);
    b->port = ntohs(sin.sin_port);
    assert_int_equal(pthread_create(&b->acceptor, NULL, tls_acceptor_main, srv), 0);
}

static void tls_server_stop(tls_server_t *srv)
{
    server_stop(&srv->base);
    SSL_CTX_free(srv->ctx);
    unlink(tls_ca_path);
}

static void tls_fixture(fixture_t *f, uint16_t port, const char *ca, const char *server_name)
{
    fixture_conf(f, port);
    f->target.is_tls = 1;
    f->uconf.tls.verify = 1;
    f->uconf.tls.ca_file = (char *)ca;
    f->uconf.tls.server_name = (char *)server_name;
    f->uconf.retry.attempts = 1;
    fixture_start(f);
}

static void test_tls(void **state)
{
    tls_server_t srv;
    tls_server_start(&srv);
    est_upstream_request_t req = get_request();
    fixture_t f;
    rec_t r;

    /* IP literal checked against the IP SAN; keep-alive over TLS */
    tls_fixture(&f, srv.base.port, tls_ca_path, NULL);
    for (int i = 0; i != 2; ++i) {
        start(&f, &r, &req);
        assert_true(run_until_done(&f, &r, 1, 3000));
        assert_int_equal(r.errors, 0);
        assert_int_equal(r.status, 200);
        assert_string_equal(r.body, "tls");
        assert_int_equal(r.info.reused, i != 0);
    }
    assert_int_equal(atomic_load(&srv.base.conns_total), 1);
    fixture_stop(&f);

    /* server_name matching the DNS SAN */
    tls_fixture(&f, srv.base.port, tls_ca_path, "api.test");
    start(&f, &r, &req);
    assert_true(run_until_done(&f, &r, 1, 3000));
    assert_int_equal(r.errors, 0);
    assert_int_equal(r.status, 200);
    fixture_stop(&f);

    /* name mismatch (TLS 1.3, where h2o's own check is skipped) */
    tls_fixture(&f, srv.base.port, tls_ca_path, "wrong.test");
    start(&f, &r, &req);
    assert_true(run_until_done(&f, &r, 1, 3000));
    assert_int_equal(r.errors, 1);
    assert_int_equal(r.err, EST_UERR_TLS);
    fixture_stop(&f);

    /* unknown issuer (system store) */
    tls_fixture(&f, srv.base.port, NULL, NULL);
    start(&f, &r, &req);
    assert_true(run_until_done(&f, &r, 1, 3000));
    assert_int_equal(r.err, EST_UERR_TLS);
    fixture_stop(&f);

    /* verify off accepts it */
    fixture_conf(&f, srv.base.port);
    f.target.is_tls = 1;
    f.uconf.tls.verify = 0;
    f.uconf.tls.server_name = "wrong.test";
    fixture_start(&f);
    start(&f, &r, &req);
    assert_true(run_until_done(&f, &r, 1, 3000));
    assert_int_equal(r.errors, 0);
    assert_int_equal(r.status, 200);
    fixture_stop(&f);

    tls_server_stop(&srv);
}

static int abort_on_head(est_exchange_t *x, void *data, int status, const struct phr_header *headers, size_t num_headers)
{
    rec_t *r = data;
    r->head_calls++;
    r->done = 1;
    if (r->cancel_on_first_body) {
        est_exchange_cancel(x); /* cancel from inside a callback */
        return 0;
    }
    return -1;
}

static void test_abort_in_head(void **state)
{
    env_t *e = *state; /* MODE_BIG */
    est_upstream_request_t req = get_request();
    est_exchange_cb_t cbs = {abort_on_head, on_body, on_error};
    for (int i = 0; i != 2; ++i) {
        rec_t r = {0};
        r.cancel_on_first_body = i;
        assert_non_null(est_exchange_start(e->f.u, &req, &cbs, &r));
        assert_true(run_until_done(&e->f, &r, 1, 3000));
        run_for(&e->f, 50);
        assert_int_equal(r.head_calls, 1);
        assert_int_equal(r.body_calls + r.errors, 0);
        assert_int_equal(est_upstream_get_stats(e->f.u)->conns_open, 0);
    }
}

static void test_cancel_queued(void **state)
{
    env_t *e = *state; /* MODE_SLOW */
    fixture_t *f = &e->f;
    server_t *srv = &e->srv;
    f->uconf.pool.max_connections = 1;
    env_start(e);
    est_upstream_request_t req = get_request();
    rec_t r[3];
    for (int i = 0; i != 3; ++i)
        start(f, &r[i], &req);
    run_for(f, 30); /* r[0] connecting/sent, r[1] and r[2] queued */
    est_exchange_cancel(r[1].x);
    r[1].done = 1;
    assert_true(run_until_done(f, r, 3, 3000));
    assert_int_equal(r[0].status, 200);
    assert_int_equal(r[2].status, 200);
    assert_int_equal(r[1].head_calls + r[1].errors, 0);
    assert_int_equal(atomic_load(&srv->requests), 2);
    assert_int_equal(atomic_load(&srv->conns_total), 1);
}

static void test_deadline_covers_body(void **state)
{
    /* a body slower than the deadline: cut when the deadline covers the body, not otherwise */
    env_t *e = *state; /* MODE_CHUNKED: the body takes ~90 ms after the head */
    fixture_t *f = &e->f;
    env_start(e);
    est_upstream_request_t req = get_request();
    rec_t r;
    req.deadline = h2o_now(f->loop) + 40;
    req.deadline_covers_body = 1;
    start(f, &r, &req);
    assert_true(run_until_done(f, &r, 1, 3000));
    assert_int_equal(r.head_calls, 1);
    assert_int_equal(r.err, EST_UERR_DEADLINE);
    h2o_evloop_run(f->loop, 0);
    req.deadline = h2o_now(f->loop) + 40;
    req.deadline_covers_body = 0;
    start(f, &r, &req);
    assert_true(run_until_done(f, &r, 1, 3000));
    assert_int_equal(r.errors, 0);
    assert_string_equal(r.body, "hello world");
}



/* ---- cancelled exchanges keep their connection when the reply can be drained (drain.c) */

static int wait_idle(fixture_t *f, uint64_t n, uint64_t max_ms)
{
    uint64_t until = now_ms() + max_ms;
    while (est_upstream_get_stats(f->u)->conns_idle != n && now_ms() < until)
        h2o_evloop_run(f->loop, 10);
    return est_upstream_get_stats(f->u)->conns_idle == n;
}

/* runs the loop until the scripted server has read n requests */
static int wait_requests(env_t *e, int n)
{
    uint64_t until = now_ms() + 3000;
    while (atomic_load(&e->srv.requests) < n && now_ms() < until)
        h2o_evloop_run(e->f.loop, 10);
    h2o_evloop_run(e->f.loop, 0); /* the write completion, reported from the loop */
    return atomic_load(&e->srv.requests) >= n;
}

/* the next request on the upstream: 200 "hello" */
static void next_request_ok(fixture_t *f)
{
    est_upstream_request_t req = get_request();
    rec_t r;
    start(f, &r, &req);
    assert_true(run_until_done(f, &r, 1, 3000));
    assert_int_equal(r.status, 200);
    assert_int_equal(r.errors, 0);
}

static void test_cancel_waiting_for_head_drains(void **state)
{
    env_t *e = *state;
    est_upstream_request_t req = get_request();
    rec_t r;
    start(&e->f, &r, &req);
    assert_true(wait_requests(e, 1)); /* written; the server answers 150 ms after reading it */
    est_exchange_cancel(r.x);
    assert_true(wait_idle(&e->f, 1, 2000)); /* the reply was read and discarded, the connection pooled */
    next_request_ok(&e->f);
    assert_int_equal(atomic_load(&e->srv.conns_total), 1);
    assert_int_equal(r.head_calls + r.body_calls + r.errors, 0);
}

static void test_cancel_in_body_drains(void **state)
{
    env_t *e = *state; /* MODE_CHUNKED: the body comes in 4 writes, 30 ms apart */
    est_upstream_request_t req = get_request();
    rec_t r;
    start(&e->f, &r, &req);
    r.cancel_on_first_body = 1;
    assert_true(run_until_done(&e->f, &r, 1, 3000));
    assert_int_equal(r.finals, 0);
    assert_true(wait_idle(&e->f, 1, 2000));
    e->srv.mode = MODE_CL;
    next_request_ok(&e->f);
    assert_int_equal(atomic_load(&e->srv.conns_total), 1);
}

static void test_cancel_big_body_closes(void **state)
{
    env_t *e = *state; /* MODE_BIG_PAUSE: 1 MiB, the rest after 16 KiB more than EST_DRAIN_MAX_BODY */
    est_upstream_request_t req = get_request();
    rec_t r;
    start(&e->f, &r, &req);
    r.cancel_on_first_body = 1;
    assert_true(run_until_done(&e->f, &r, 1, 3000));
    run_for(&e->f, 50);
    assert_int_equal(est_upstream_get_stats(e->f.u)->conns_idle, 0);
    assert_int_equal(est_upstream_get_stats(e->f.u)->conns_open, 0);
    e->srv.mode = MODE_CL;
    next_request_ok(&e->f);
    assert_int_equal(atomic_load(&e->srv.conns_total), 2);
}

static void test_drain_keeps_the_slot(void **state)
{
    env_t *e = *state; /* MODE_SLOW, one connection at most */
    e->f.uconf.pool.max_connections = 1;
    est_upstream_request_t req = get_request();
    rec_t r[2];
    start(&e->f, &r[0], &req);
    assert_true(wait_requests(e, 1));
    est_exchange_cancel(r[0].x);
    /* the drain holds the only slot: the next exchange waits for it, then reuses the connection */
    start(&e->f, &r[1], &req);
    assert_true(run_until_done(&e->f, &r[1], 1, 3000));
    assert_int_equal(r[1].status, 200);
    assert_int_equal(atomic_load(&e->srv.conns_total), 1);
    assert_true(atomic_load(&e->srv.conns_max) <= 1);
    assert_true(r[1].info.reused);
}

static void test_drain_times_out(void **state)
{
    env_t *e = *state; /* MODE_SLOW_600: the reply comes after response_timeout (300 ms) */
    fixture_stop(&e->f);
    fixture_conf(&e->f, e->srv.port);
    e->f.uconf.response_timeout_ms = 300;
    fixture_start(&e->f);
    est_upstream_request_t req = get_request();
    rec_t r;
    start(&e->f, &r, &req);
    assert_true(wait_requests(e, 1));
    est_exchange_cancel(r.x);
    run_for(&e->f, 450);
    assert_int_equal(est_upstream_get_stats(e->f.u)->conns_open, 0); /* closed at response_timeout */
}

/* ------------------------------------------------------------------ hedging */

static est_hedge_conf_t hedge_conf;

/* builds e's upstream with hedging set to conf (env_setup_conf tests) */
static void hedge_start(env_t *e, est_hedge_conf_t conf)
{
    hedge_conf = conf;
    e->f.uconf.hedge = &hedge_conf;
    env_start(e);
}

/* runs one exchange of req on e's upstream to its end (at most 3 s) into r */
static void run_one(env_t *e, const est_upstream_request_t *req, rec_t *r)
{
    start(&e->f, r, req);
    assert_true(run_until_done(&e->f, r, 1, 3000));
}

/* hedge_start, then one GET run into r; with deadline_ms != 0 its deadline is that far off */
static void hedge_get(env_t *e, est_hedge_conf_t conf, uint64_t deadline_ms, rec_t *r)
{
    hedge_start(e, conf);
    est_upstream_request_t req = get_request();
    if (deadline_ms != 0)
        req.deadline = h2o_now(e->f.loop) + deadline_ms;
    run_one(e, &req, r);
}

static int wait_conns_now(server_t *srv, int n, uint64_t max_ms)
{
    uint64_t until = now_ms() + max_ms;
    while (atomic_load(&srv->conns_now) != n && now_ms() < until)
        msleep(10);
    return atomic_load(&srv->conns_now) == n;
}

/* one slow target (600 ms), one fast: the request sent to the slow one is hedged to the fast
 * one after 50 ms, the hedge wins, and the loser's connection is closed (not pooled) */
static void test_hedge_wins(void **state)
{
    env_t *e = *state; /* MODE_SLOW_600, and a second target in MODE_CL */
    env_add_target(e, MODE_CL);
    hedge_start(e, (est_hedge_conf_t){.delay_ms = 50, .max = 1, .budget_permille = 1000});
    est_upstream_request_t req = get_request();
    int won = 0;
    for (int i = 0; i != 2; ++i) {
        rec_t r;
        uint64_t t0 = now_ms();
        run_one(e, &req, &r);
        assert_int_equal(r.status, 200);
        assert_string_equal(r.body, "hello");
        assert_true(now_ms() - t0 < 400); /* never the slow target's 600 ms */
        assert_string_equal(r.info.address, e->authority2);
        if (r.info.hedged) {
            assert_int_equal(r.info.hedged, 1);
            assert_int_equal(r.info.hedge_won, 1);
            won++;
        }
    }
    assert_int_equal(won, 1);
    const est_upstream_stats_t *st = est_upstream_get_stats(e->f.u);
    assert_int_equal(st->hedges_won, 1);
    assert_int_equal(st->hedges_lost + st->hedges_failed + st->hedges_refused, 0);
    assert_int_equal(atomic_load(&e->srv.requests), 1);
    assert_int_equal(atomic_load(&e->srv2.requests), 2);
    /* only the fast target's connection is kept; the slow one's was closed: its server sees EOF */
    assert_int_equal(st->conns_open, st->conns_idle);
    assert_true(wait_conns_now(&e->srv, 0, 2000));
    assert_int_equal(e->f.u->active_requests, 0);
}

/* the hedge fails (its target is down): the primary's reply is the exchange's */
static void test_hedge_fails_primary_wins(void **state)
{
    env_t *e = *state; /* MODE_SLOW, and a second target nobody listens on */
    env_add_target(e, MODE_NONE);
    e->f.uconf.retry.attempts = 1;
    rec_t r;
    hedge_get(e, (est_hedge_conf_t){.delay_ms = 20, .max = 1, .budget_permille = 1000}, 0, &r); /* round robin: to the first target */
    assert_int_equal(r.status, 200);
    assert_int_equal(r.info.hedged, 1);
    assert_int_equal(r.info.hedge_won, 0);
    const est_upstream_stats_t *st = est_upstream_get_stats(e->f.u);
    assert_int_equal(st->hedges_failed, 1);
    assert_int_equal(st->hedges_won + st->hedges_lost, 0);
}

/* POST is never hedged (nor any non-idempotent request) */
static void test_hedge_never_post(void **state)
{
    env_t *e = *state; /* MODE_SLOW, and a second target in MODE_CL */
    env_add_target(e, MODE_CL);
    hedge_start(e, (est_hedge_conf_t){.delay_ms = 10, .max = 1, .budget_permille = 1000});
    est_upstream_request_t req = get_request();
    req.method = h2o_iovec_init(H2O_STRLIT("POST"));
    req.is_idempotent = 0;
    req.has_body = 1;
    req.body = h2o_iovec_init(H2O_STRLIT("abc"));
    for (int i = 0; i != 2; ++i) {
        rec_t r;
        run_one(e, &req, &r);
        assert_int_equal(r.status, 200);
        assert_int_equal(r.info.hedged, 0);
    }
    assert_int_equal(atomic_load(&e->srv.requests), 1); /* the slow one was waited for */
    assert_int_equal(atomic_load(&e->srv2.requests), 1);
    const est_upstream_stats_t *st = est_upstream_get_stats(e->f.u);
    assert_int_equal(st->hedges_won + st->hedges_lost + st->hedges_failed + st->hedges_refused, 0);
}

/* a 10% budget refuses the hedge of a lone first attempt (1 hedge > 10% of 1) */
static void test_hedge_budget_refuses(void **state)
{
    env_t *e = *state; /* MODE_SLOW */
    rec_t r;
    hedge_get(e, (est_hedge_conf_t){.delay_ms = 10, .max = 1, .budget_permille = 100}, 0, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.info.hedged, 0);
    assert_int_equal(est_upstream_get_stats(e->f.u)->hedges_refused, 1);
    assert_int_equal(atomic_load(&e->srv.requests), 1);
}

/* max 1: one hedge (same address, another connection, as there is no other), however long the
 * wait; the deadline ends both attempts, their connections closed */
static void test_hedge_max_and_deadline(void **state)
{
    env_t *e = *state; /* MODE_SLOW_600 */
    rec_t r;
    hedge_get(e, (est_hedge_conf_t){.delay_ms = 20, .max = 1, .budget_permille = 1000}, 250, &r);
    assert_int_equal(r.errors, 1);
    assert_int_equal(r.err, EST_UERR_DEADLINE);
    assert_int_equal(r.info.hedged, 1);
    const est_upstream_stats_t *st = est_upstream_get_stats(e->f.u);
    assert_int_equal(st->hedges_lost, 1);
    assert_int_equal(st->conns_open, 0);
    assert_int_equal(atomic_load(&e->srv.conns_total), 2);
    assert_true(wait_conns_now(&e->srv, 0, 2000));
    assert_int_equal(atomic_load(&e->srv.requests), 2);
    assert_int_equal(e->f.u->active_requests, 0);
}

/* the primary attempt times out while its hedge runs: it is not retried, the exchange waits,
 * and the hedge's reply is delivered */
static void test_hedge_primary_fails_hedge_wins(void **state)
{
    env_t *e = *state; /* MODE_NO_REPLY, and a second target in MODE_SLOW_80 */
    env_add_target(e, MODE_SLOW_80);
    e->f.uconf.response_timeout_ms = 100; /* the primary times out at 100 ms, the hedge answers at ~130 */
    e->f.uconf.retry.on |= EST_RETRY_ON_TIMEOUT;
    rec_t r;
    hedge_get(e, (est_hedge_conf_t){.delay_ms = 50, .max = 1, .budget_permille = 1000}, 0, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.info.attempts, 1); /* no retry while the hedge ran */
    assert_int_equal(r.info.hedge_won, 1);
    const est_upstream_stats_t *st = est_upstream_get_stats(e->f.u);
    assert_int_equal(st->hedges_won, 1);
    assert_int_equal(st->retries, 0);
    assert_int_equal(st->attempts_failed[EST_UERR_TIMEOUT], 1);
    assert_int_equal(e->f.u->active_requests, 0);
}

/* every attempt fails: the exchange fails once, with the last failure (no retry is left) */
static void test_hedge_all_fail(void **state)
{
    env_t *e = *state; /* MODE_NO_REPLY, and a second target in MODE_NO_REPLY */
    env_add_target(e, MODE_NO_REPLY);
    e->f.uconf.response_timeout_ms = 100;
    e->f.uconf.retry.attempts = 1;
    rec_t r;
    hedge_get(e, (est_hedge_conf_t){.delay_ms = 20, .max = 1, .budget_permille = 1000}, 0, &r);
    assert_int_equal(r.errors, 1);
    assert_int_equal(r.err, EST_UERR_TIMEOUT);
    assert_int_equal(r.info.hedged, 1);
    const est_upstream_stats_t *st = est_upstream_get_stats(e->f.u);
    assert_int_equal(st->hedges_failed, 1);
    assert_int_equal(st->attempts_failed[EST_UERR_TIMEOUT], 2);
    assert_int_equal(st->conns_open, 0);
    assert_int_equal(e->f.u->active_requests, 0);
}

/* "delay": "auto": no hedge before EST_HEDGE_MIN_SAMPLES times to first byte; then the p95 */
static void test_hedge_auto_delay(void **state)
{
    env_t *e = *state; /* MODE_SLOW (150 ms) */
    rec_t r;
    hedge_get(e, (est_hedge_conf_t){.delay_ms = 0, .max = 1, .budget_permille = 1000, .delay_auto = 1}, 0, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.info.hedged, 0); /* one sample: no delay known yet */
    assert_int_equal(e->f.u->hedge->num_ttfb, 1);
    for (int i = 0; i != EST_HEDGE_MIN_SAMPLES - 1; ++i)
        est_hedge_record_ttfb(e->f.u, 10);
    assert_int_equal(e->f.u->hedge->p95, 10); /* nearest rank: 19 x 10 ms and one ~150 ms */
    est_upstream_request_t req = get_request();
    run_one(e, &req, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.info.hedged, 1); /* hedged after ~10 ms, on a second connection */
    const est_upstream_stats_t *st = est_upstream_get_stats(e->f.u);
    assert_int_equal(st->hedges_won + st->hedges_lost, 1);
    assert_int_equal(atomic_load(&e->srv.conns_total), 2);
}

int main(void)
{
    /* the scripted server's mode of each env_setup / env_setup_conf test */
    static int mode_none = MODE_NONE,
        mode_204 = MODE_204,
        mode_503_then_200 = MODE_503_THEN_200,
        mode_close_after_one = MODE_CLOSE_AFTER_ONE,
        mode_close_idle = MODE_CLOSE_IDLE,
        mode_reset = MODE_RESET,
        mode_huge_head = MODE_HUGE_HEAD,
        mode_garbage = MODE_GARBAGE,
        mode_big = MODE_BIG,
        mode_big_pause = MODE_BIG_PAUSE,
        mode_chunked = MODE_CHUNKED,
        mode_cl = MODE_CL,
        mode_close_delimited = MODE_CLOSE_DELIMITED,
        mode_interim = MODE_INTERIM,
        mode_no_reply = MODE_NO_REPLY,
        mode_slow = MODE_SLOW,
        mode_slow_600 = MODE_SLOW_600,
        mode_upgrade = MODE_UPGRADE;
    signal(SIGPIPE, SIG_IGN);
    est_log_init_from_env();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_prestate_setup_teardown(test_content_length, env_setup, env_teardown, &mode_cl),
        cmocka_unit_test_prestate_setup_teardown(test_chunked_split, env_setup, env_teardown, &mode_chunked),
        cmocka_unit_test_prestate_setup_teardown(test_close_delimited, env_setup, env_teardown, &mode_close_delimited),
        cmocka_unit_test_prestate_setup_teardown(test_keepalive_reuse, env_setup, env_teardown, &mode_cl),
        cmocka_unit_test_prestate_setup_teardown(test_max_connections_queue, env_setup_conf, env_teardown, &mode_slow),
        cmocka_unit_test_prestate_setup_teardown(test_overloaded, env_setup_conf, env_teardown, &mode_slow_600),
        cmocka_unit_test_prestate_setup_teardown(test_server_closes_idle, env_setup_conf, env_teardown, &mode_close_idle),
        cmocka_unit_test_prestate_setup_teardown(test_stale_reuse_transparent_retry, env_setup_conf, env_teardown, &mode_close_after_one),
        cmocka_unit_test_prestate_setup_teardown(test_connection_refused, env_setup_conf, env_teardown, &mode_none),
        cmocka_unit_test_prestate_setup_teardown(test_response_timeout, env_setup_conf, env_teardown, &mode_no_reply),
        cmocka_unit_test_prestate_setup_teardown(test_deadline, env_setup, env_teardown, &mode_no_reply),
        cmocka_unit_test_prestate_setup_teardown(test_retry_503, env_setup_conf, env_teardown, &mode_503_then_200),
        cmocka_unit_test_prestate_setup_teardown(test_retry_503_traced, env_setup_conf, env_teardown, &mode_503_then_200),
        cmocka_unit_test_prestate_setup_teardown(test_retry_503_exhausted_delivers_last, env_setup_conf, env_teardown, &mode_503_then_200),
        cmocka_unit_test_prestate_setup_teardown(test_post_not_retried_after_send, env_setup_conf, env_teardown, &mode_reset),
        cmocka_unit_test_prestate_setup_teardown(test_post_empty_body_content_length, env_setup, env_teardown, &mode_cl),
        cmocka_unit_test_prestate_setup_teardown(test_pause_resume, env_setup_conf, env_teardown, &mode_big),
        cmocka_unit_test_prestate_setup_teardown(test_big_body_total, env_setup, env_teardown, &mode_big),
        cmocka_unit_test_prestate_setup_teardown(test_cancel_mid_body, env_setup, env_teardown, &mode_big),
        cmocka_unit_test_prestate_setup_teardown(test_cancel_before_start, env_setup, env_teardown, &mode_cl),
        cmocka_unit_test_prestate_setup_teardown(test_no_body_statuses, env_setup, env_teardown, &mode_204),
        cmocka_unit_test_prestate_setup_teardown(test_interim_skipped, env_setup, env_teardown, &mode_interim),
        cmocka_unit_test_prestate_setup_teardown(test_bad_replies, env_setup, env_teardown, &mode_huge_head),
        cmocka_unit_test_prestate_setup_teardown(test_bad_replies, env_setup, env_teardown, &mode_garbage),
        cmocka_unit_test_prestate_setup_teardown(test_upgrade_steal, env_setup, env_teardown, &mode_upgrade),
        cmocka_unit_test_prestate_setup_teardown(test_pool_max_idle, env_setup_conf, env_teardown, &mode_slow),
        cmocka_unit_test_prestate_setup_teardown(test_pool_max_requests, env_setup_conf, env_teardown, &mode_cl),
        cmocka_unit_test_prestate_setup_teardown(test_pool_idle_timeout, env_setup_conf, env_teardown, &mode_cl),
        cmocka_unit_test_prestate_setup_teardown(test_two_targets_round_robin, env_setup_conf, env_teardown, &mode_cl),
        cmocka_unit_test_prestate_setup_teardown(test_hedge_wins, env_setup_conf, env_teardown, &mode_slow_600),
        cmocka_unit_test_prestate_setup_teardown(test_hedge_fails_primary_wins, env_setup_conf, env_teardown, &mode_slow),
        cmocka_unit_test_prestate_setup_teardown(test_hedge_never_post, env_setup_conf, env_teardown, &mode_slow),
        cmocka_unit_test_prestate_setup_teardown(test_hedge_budget_refuses, env_setup_conf, env_teardown, &mode_slow),
        cmocka_unit_test_prestate_setup_teardown(test_hedge_max_and_deadline, env_setup_conf, env_teardown, &mode_slow_600),
        cmocka_unit_test_prestate_setup_teardown(test_hedge_primary_fails_hedge_wins, env_setup_conf, env_teardown, &mode_no_reply),
        cmocka_unit_test_prestate_setup_teardown(test_hedge_all_fail, env_setup_conf, env_teardown, &mode_no_reply),
        cmocka_unit_test_prestate_setup_teardown(test_hedge_auto_delay, env_setup_conf, env_teardown, &mode_slow),
        cmocka_unit_test_prestate_setup_teardown(test_two_targets_one_down, env_setup_conf, env_teardown, &mode_cl),
        cmocka_unit_test_prestate_setup_teardown(test_least_request, env_setup_conf, env_teardown, &mode_slow_600),
        cmocka_unit_test_prestate_setup_teardown(test_retry_budget_caps_retries, env_setup_conf, env_teardown, &mode_none),
        cmocka_unit_test_prestate_setup_teardown(test_retry_budget_minimum, env_setup_conf, env_teardown, &mode_none),
        cmocka_unit_test(test_tls),
        cmocka_unit_test_prestate_setup_teardown(test_abort_in_head, env_setup, env_teardown, &mode_big),
        cmocka_unit_test_prestate_setup_teardown(test_cancel_queued, env_setup_conf, env_teardown, &mode_slow),
        cmocka_unit_test_prestate_setup_teardown(test_deadline_covers_body, env_setup_conf, env_teardown, &mode_chunked),
        cmocka_unit_test_prestate_setup_teardown(test_cancel_waiting_for_head_drains, env_setup, env_teardown, &mode_slow),
        cmocka_unit_test_prestate_setup_teardown(test_cancel_in_body_drains, env_setup, env_teardown, &mode_chunked),
        cmocka_unit_test_prestate_setup_teardown(test_cancel_big_body_closes, env_setup, env_teardown, &mode_big_pause),
        cmocka_unit_test_prestate_setup_teardown(test_drain_keeps_the_slot, env_setup, env_teardown, &mode_slow),
        cmocka_unit_test_prestate_setup_teardown(test_drain_times_out, env_setup, env_teardown, &mode_slow_600),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

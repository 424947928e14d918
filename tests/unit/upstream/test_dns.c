/*
 * Unit tests: est_dns_t round trips on a real h2o evloop against a tiny fake DNS server
 * (UDP on 127.0.0.1, port chosen by the kernel, served from a thread).
 *
 * The server answers A queries with `answer_addr` and `answer_ttl`, AAAA queries with
 * NOERROR and no answer (NODATA), names starting with "nx" with NXDOMAIN, and does not
 * answer names starting with "silent" (nor anything while `silent` is set). It counts A
 * queries per name. Names starting with "tcp" get a truncated (TC) UDP reply, so c-ares
 * retries over TCP (same port), which exercises the write-notify path. Waits are bounded
 * spins of the loop, never sleeps.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "upstream/dns.h"

/* -- the fake server -- */

#define MAX_NAMES 32

static struct {
    int fd, tcp_fd;
    uint16_t port;
    pthread_t thread;
    pthread_mutex_t mutex;
    int stop;
    int silent;
    uint8_t answer_addr[4];
    uint32_t answer_ttl;
    struct {
        char name[256];
        int a_queries;
    } names[MAX_NAMES];
    size_t num_names;
} server = {.mutex = PTHREAD_MUTEX_INITIALIZER};

static void count_query(const char *name)
{
    for (size_t i = 0; i != server.num_names; ++i) {
        if (strcasecmp(server.names[i].name, name) == 0) {
            ++server.names[i].a_queries;
            return;
        }
    }
    if (server.num_names < MAX_NAMES) {
        snprintf(server.names[server.num_names].name, sizeof(server.names[0].name), "%s", name);
        server.names[server.num_names++].a_queries = 1;
    }
}

static int a_queries(const char *name)
{
    int n = 0;
    pthread_mutex_lock(&server.mutex);
    for (size_t i = 0; i != server.num_names; ++i)
        if (strcasecmp(server.names[i].name, name) == 0)
            n = server.names[i].a_queries;
    pthread_mutex_unlock(&server.mutex);
    return n;
}

static void set_answer(const char *ip, uint32_t ttl)
{
    pthread_mutex_lock(&server.mutex);
    inet_pton(AF_INET, ip, server.answer_addr);
    server.answer_ttl = ttl;
    pthread_mutex_unlock(&server.mutex);
}

static void set_silent(int silent)
{
    pthread_mutex_lock(&server.mutex);
    server.silent = silent;
    pthread_mutex_unlock(&server.mutex);
}

/* Builds the reply to `q` in `r`; returns its length, or 0 for no reply. */
static size_t handle_query(const uint8_t *q, size_t qlen, uint8_t *r, int over_tcp)
{
    char name[256];
    size_t off = 12, nlen = 0;

    if (qlen < 12 || (q[2] & 0x80) != 0 || q[4] != 0 || q[5] != 1)
        return 0;
    while (off < qlen && q[off] != 0) {
        size_t l = q[off];
        if ((l & 0xc0) != 0 || off + 1 + l >= qlen || nlen + l + 1 >= sizeof(name))
            return 0;
        if (nlen != 0)
            name[nlen++] = '.';
        memcpy(name + nlen, q + off + 1, l);
        nlen += l;
        off += 1 + l;
    }
    name[nlen] = '\0';
    if (off + 5 > qlen)
        return 0;
    size_t qend = off + 5; /* root label, type, class */
    uint16_t qtype = (uint16_t)(q[off + 1] << 8 | q[off + 2]);

    pthread_mutex_lock(&server.mutex);
    if (qtype == 1)
        count_query(name);
    int silent = server.silent || strncasecmp(name, "silent", 6) == 0;
    int nx = strncasecmp(name, "nx", 2) == 0;
    uint8_t addr[4];
    memcpy(addr, server.answer_addr, 4);
    uint32_t ttl = server.answer_ttl;
    pthread_mutex_unlock(&server.mutex);
    if (silent)
        return 0;

    memcpy(r, q, qend);
    r[2] = 0x80 | (q[2] & 0x79); /* QR, opcode, RD */
    if (!over_tcp && strncasecmp(name, "tcp", 3) == 0) {
        r[2] |= 0x02; /* TC: retry over TCP (RFC 1035 4.2.1) */
        r[3] = 0x80;
        r[6] = r[7] = r[8] = r[9] = r[10] = r[11] = 0;
        return qend;
    }
    r[3] = 0x80 | (nx ? 3 : 0);  /* RA, NXDOMAIN or NOERROR */
    r[6] = r[7] = r[8] = r[9] = r[10] = r[11] = 0;
    size_t len = qend;
    if (!nx && qtype == 1) {
        r[7] = 1;
        static const uint8_t head[] = {0xc0, 0x0c, 0, 1, 0, 1};
        memcpy(r + len, head, sizeof(head));
        len += sizeof(head);
        r[len++] = (uint8_t)(ttl >> 24);
        r[len++] = (uint8_t)(ttl >> 16);
        r[len++] = (uint8_t)(ttl >> 8);
        r[len++] = (uint8_t)ttl;
        r[len++] = 0;
        r[len++] = 4;
        memcpy(r + len, addr, 4);
        len += 4;
    }
    return len;
}

/* One TCP connection: length-prefixed queries until the peer closes (short waits only). */
static void serve_tcp(int fd)
{
    uint8_t q[514], r[602];
    size_t have = 0;
    for (;;) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, 500) <= 0)
            return;
        ssize_t n = read(fd, q + have, sizeof(q) - have);
        if (n <= 0)
            return;
        have += (size_t)n;
        while (have >= 2 && have >= 2 + (size_t)(q[0] << 8 | q[1])) {
            size_t qlen = (size_t)(q[0] << 8 | q[1]);
            size_t rlen = handle_query(q + 2, qlen, r + 2, 1);
            if (rlen != 0) {
                r[0] = (uint8_t)(rlen >> 8);
                r[1] = (uint8_t)rlen;
                if (write(fd, r, rlen + 2) != (ssize_t)(rlen + 2))
                    return;
            }
            memmove(q, q + 2 + qlen, have - 2 - qlen);
            have -= 2 + qlen;
        }
    }
}

static void *server_main(void *arg)
{
    uint8_t q[512], r[600];
    for (;;) {
        pthread_mutex_lock(&server.mutex);
        int stop = server.stop;
        pthread_mutex_unlock(&server.mutex);
        if (stop)
            break;
        struct pollfd pfds[2] = {{.fd = server.fd, .events = POLLIN}, {.fd = server.tcp_fd, .events = POLLIN}};
        if (poll(pfds, 2, 20) <= 0)
            continue;
        if ((pfds[1].revents & POLLIN) != 0) {
            int c = accept(server.tcp_fd, NULL, NULL);
            if (c >= 0) {
                serve_tcp(c);
                close(c);
            }
        }
        if ((pfds[0].revents & POLLIN) == 0)
            continue;
        struct sockaddr_storage peer;
        socklen_t plen = sizeof(peer);
        ssize_t n = recvfrom(server.fd, q, sizeof(q), 0, (struct sockaddr *)&peer, &plen);
        if (n <= 0)
            continue;
        size_t rlen = handle_query(q, (size_t)n, r, 0);
        if (rlen != 0)
            sendto(server.fd, r, rlen, 0, (struct sockaddr *)&peer, plen);
    }
    return NULL;
}

static int server_start(void **state)
{
    /* UDP on an ephemeral port, TCP on the same number (another namespace, usually free; when
     * it is taken, try another pair) */
    for (int tries = 0; tries != 50; ++tries) {
        struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof(sin);
        server.fd = socket(AF_INET, SOCK_DGRAM, 0);
        if (server.fd < 0 || bind(server.fd, (struct sockaddr *)&sin, sizeof(sin)) != 0 ||
            getsockname(server.fd, (struct sockaddr *)&sin, &len) != 0)
            return -1;
        server.port = ntohs(sin.sin_port);
        int one = 1;
        server.tcp_fd = socket(AF_INET, SOCK_STREAM, 0);
        if (server.tcp_fd >= 0 && setsockopt(server.tcp_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == 0 &&
            bind(server.tcp_fd, (struct sockaddr *)&sin, sizeof(sin)) == 0 && listen(server.tcp_fd, 8) == 0) {
            set_answer("10.0.0.1", 1);
            return pthread_create(&server.thread, NULL, server_main, NULL) == 0 ? 0 : -1;
        }
        if (server.tcp_fd >= 0)
            close(server.tcp_fd);
        close(server.fd);
    }
    return -1;
}

static int server_stop(void **state)
{
    pthread_mutex_lock(&server.mutex);
    server.stop = 1;
    pthread_mutex_unlock(&server.mutex);
    pthread_join(server.thread, NULL);
    close(server.fd);
    close(server.tcp_fd);
    return 0;
}

/* -- the resolver under test -- */

typedef struct {
    int called;
    est_dns_status_t status;
    est_dns_result_t *result; /* kept (addref) */
    uint64_t at;              /* ms, monotonic */
} outcome_t;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void on_resolved(void *data, est_dns_status_t st, est_dns_result_t *r)
{
    outcome_t *o = data;
    ++o->called;
    o->status = st;
    o->at = now_ms();
    if (r != NULL) {
        est_dns_result_addref(r);
        est_dns_result_release(o->result);
        o->result = r;
    }
}

static void outcome_clear(outcome_t *o)
{
    est_dns_result_release(o->result);
    memset(o, 0, sizeof(*o));
}

typedef struct {
    h2o_loop_t *loop;
    est_dns_t *dns;
    char server[64];
    char *servers[1];
} fixture_t;

/* timeout_ms: per-try DNS timeout; success paths use a long one so that a loaded machine
 * (sanitizers, parallel builds) cannot turn a slow answer into a failure */
static void fixture_init(fixture_t *f, uint64_t max_ttl_ms, uint64_t timeout_ms)
{
    est_dns_conf_t c = {0};
    snprintf(f->server, sizeof(f->server), "127.0.0.1:%u", (unsigned)server.port);
    f->servers[0] = f->server;
    c.servers = f->servers;
    c.num_servers = 1;
    c.min_ttl_ms = 1000;
    c.max_ttl_ms = max_ttl_ms;
    c.negative_ttl_ms = 5000;
    c.stale_ttl_ms = 60000;
    c.timeout_ms = timeout_ms;
    c.attempts = 2;
    f->loop = h2o_evloop_create();
    f->dns = est_dns_create(f->loop, &c);
    assert_non_null(f->dns);
}

static void fixture_dispose(fixture_t *f)
{
    est_dns_destroy(f->dns);
    h2o_evloop_run(f->loop, 0); /* frees the closed sockets */
    h2o_evloop_destroy(f->loop);
}

/* Runs the loop until every outcome in `o[0..n)` was called, or `max_ms` passed. */
static void spin_until_called(fixture_t *f, outcome_t *o, size_t n, uint64_t max_ms)
{
    uint64_t end = now_ms() + max_ms;
    for (;;) {
        size_t done = 0;
        for (size_t i = 0; i != n; ++i)
            done += o[i].called != 0;
        if (done == n || now_ms() >= end)
            return;
        h2o_evloop_run(f->loop, 10);
    }
}

/* Runs the loop for `ms` (a bounded wait, e.g. for a TTL to pass). */
static void spin_for(fixture_t *f, uint64_t ms)
{
    uint64_t end = now_ms() + ms;
    while (now_ms() < end)
        h2o_evloop_run(f->loop, 10);
}

static void assert_first_addr(const est_dns_result_t *r, const char *ip)
{
    char buf[INET_ADDRSTRLEN];
    assert_non_null(r);
    assert_true(r->num_addrs >= 1);
    assert_int_equal(r->addrs[0].sa.ss_family, AF_INET);
    inet_ntop(AF_INET, &((const struct sockaddr_in *)&r->addrs[0].sa)->sin_addr, buf, sizeof(buf));
    assert_string_equal(buf, ip);
}

static void test_coalescing(void **state)
{
    fixture_t f;
    outcome_t o[3] = {{0}};
    fixture_init(&f, 300000, 1000);
    set_answer("10.0.0.1", 60);

    for (int i = 0; i != 3; ++i)
        assert_non_null(est_dns_resolve(f.dns, "coal.test", on_resolved, &o[i]));
    for (int i = 0; i != 3; ++i)
        assert_int_equal(o[i].called, 0); /* never from inside est_dns_resolve */
    spin_until_called(&f, o, 3, 2000);
    for (int i = 0; i != 3; ++i) {
        assert_int_equal(o[i].called, 1);
        assert_int_equal(o[i].status, EST_DNS_OK);
        assert_first_addr(o[i].result, "10.0.0.1");
        assert_int_equal(o[i].result->num_addrs, 1);
        assert_ptr_equal(o[i].result, o[0].result);
    }
    assert_int_equal(a_queries("coal.test"), 1);
    const est_dns_stats_t *s = est_dns_get_stats(f.dns);
    assert_int_equal(s->queries_ok, 1);
    assert_int_equal(s->queries_failed, 0);
    assert_int_equal(s->cache_misses, 3);
    assert_int_equal(s->cache_hits, 0);

    /* case-insensitive: same entry, no query */
    assert_ptr_equal(est_dns_lookup_cached(f.dns, "COAL.test"), o[0].result);
    for (int i = 0; i != 3; ++i)
        outcome_clear(&o[i]);
    fixture_dispose(&f);
}

static void test_cache_hit_within_ttl(void **state)
{
    fixture_t f;
    outcome_t o = {0}, o2 = {0};
    fixture_init(&f, 300000, 1000);
    set_answer("10.0.0.2", 60);

    assert_null(est_dns_lookup_cached(f.dns, "hit.test"));
    est_dns_resolve(f.dns, "hit.test", on_resolved, &o);
    spin_until_called(&f, &o, 1, 2000);
    assert_int_equal(o.status, EST_DNS_OK);
    assert_int_equal(a_queries("hit.test"), 1);

    est_dns_result_t *r = est_dns_lookup_cached(f.dns, "hit.test");
    assert_ptr_equal(r, o.result);
    est_dns_resolve(f.dns, "hit.test", on_resolved, &o2);
    assert_int_equal(o2.called, 0);
    spin_until_called(&f, &o2, 1, 1000);
    assert_int_equal(o2.status, EST_DNS_OK);
    assert_ptr_equal(o2.result, o.result);
    assert_int_equal(o2.result->generation, o.result->generation);
    assert_int_equal(a_queries("hit.test"), 1); /* no new query */
    const est_dns_stats_t *s = est_dns_get_stats(f.dns);
    assert_int_equal(s->cache_hits, 2);
    assert_int_equal(s->cache_misses, 1);
    assert_int_equal(s->queries_ok, 1);
    outcome_clear(&o);
    outcome_clear(&o2);
    fixture_dispose(&f);
}

static void test_requery_after_ttl(void **state)
{
    fixture_t f;
    outcome_t o = {0}, o2 = {0};
    fixture_init(&f, 1000, 1000); /* TTL clamped to 1 s */
    set_answer("10.0.0.3", 3600);

    est_dns_resolve(f.dns, "ttl.test", on_resolved, &o);
    spin_until_called(&f, &o, 1, 2000);
    assert_int_equal(o.status, EST_DNS_OK);
    assert_first_addr(o.result, "10.0.0.3");
    assert_int_equal(a_queries("ttl.test"), 1);

    spin_for(&f, 1200);
    assert_int_equal(a_queries("ttl.test"), 1); /* unused names are not refreshed */
    assert_null(est_dns_lookup_cached(f.dns, "ttl.test")); /* expired, not servable before a refresh failed */

    /* the address changed meanwhile: the new answer has a new generation */
    set_answer("10.0.0.4", 3600);
    est_dns_resolve(f.dns, "ttl.test", on_resolved, &o2);
    spin_until_called(&f, &o2, 1, 2000);
    assert_int_equal(o2.status, EST_DNS_OK);
    assert_first_addr(o2.result, "10.0.0.4");
    assert_int_equal(a_queries("ttl.test"), 2);
    assert_int_not_equal(o2.result->generation, o.result->generation);
    assert_int_equal(est_dns_get_stats(f.dns)->queries_ok, 2);
    assert_int_equal(est_dns_get_stats(f.dns)->stale_served, 0);
    outcome_clear(&o);
    outcome_clear(&o2);
    fixture_dispose(&f);
}

static void test_refresh_ahead(void **state)
{
    fixture_t f;
    outcome_t o = {0};
    fixture_init(&f, 2000, 1000); /* TTL 2 s: refreshed when used in its last 1 s (min_ttl is 1 s) */
    set_answer("10.0.0.5", 2);

    est_dns_resolve(f.dns, "ahead.test", on_resolved, &o);
    spin_until_called(&f, &o, 1, 2000);
    uint64_t gen = o.result->generation;
    est_dns_result_t *r = est_dns_lookup_cached(f.dns, "ahead.test");
    assert_non_null(r);
    assert_int_equal(a_queries("ahead.test"), 1); /* early in the TTL: no refresh */

    spin_for(&f, 1150);
    r = est_dns_lookup_cached(f.dns, "ahead.test"); /* fresh, near expiry: served, and refreshed */
    assert_non_null(r);
    assert_int_equal(r->generation, gen);
    spin_for(&f, 150);
    assert_int_equal(a_queries("ahead.test"), 2);
    assert_int_equal(est_dns_get_stats(f.dns)->queries_ok, 2);

    /* past the first expiry the refreshed answer is fresh: served at once (an expired one
     * that was never refreshed would not be, see test_requery_after_ttl) */
    spin_for(&f, 800);
    assert_int_equal(a_queries("ahead.test"), 2);
    r = est_dns_lookup_cached(f.dns, "ahead.test");
    assert_non_null(r);
    assert_int_equal(r->generation, gen); /* same address */
    outcome_clear(&o);
    fixture_dispose(&f);
}

static void test_nxdomain(void **state)
{
    fixture_t f;
    outcome_t o = {0}, o2 = {0};
    fixture_init(&f, 300000, 1000);

    est_dns_resolve(f.dns, "nx1.test", on_resolved, &o);
    spin_until_called(&f, &o, 1, 2000);
    assert_int_equal(o.called, 1);
    assert_int_equal(o.status, EST_DNS_NOT_FOUND);
    assert_null(o.result);
    int queries = a_queries("nx1.test");
    assert_int_equal(queries, 1);
    assert_int_equal(est_dns_get_stats(f.dns)->queries_failed, 1);
    assert_null(est_dns_lookup_cached(f.dns, "nx1.test"));

    /* negative cache: the failure again, asynchronously, without a query */
    est_dns_resolve(f.dns, "nx1.test", on_resolved, &o2);
    assert_int_equal(o2.called, 0);
    spin_until_called(&f, &o2, 1, 1000);
    assert_int_equal(o2.status, EST_DNS_NOT_FOUND);
    assert_int_equal(a_queries("nx1.test"), queries);
    assert_int_equal(est_dns_get_stats(f.dns)->cache_hits, 1);
    outcome_clear(&o);
    outcome_clear(&o2);
    fixture_dispose(&f);
}

static void test_timeout(void **state)
{
    fixture_t f;
    outcome_t o = {0}, o2 = {0};
    fixture_init(&f, 300000, 150); /* timeout 150 ms x 2 attempts */

    uint64_t start = now_ms();
    est_dns_resolve(f.dns, "silent1.test", on_resolved, &o);
    spin_until_called(&f, &o, 1, 2000);
    assert_int_equal(o.called, 1);
    assert_int_equal(o.status, EST_DNS_TIMEOUT);
    assert_null(o.result);
    uint64_t elapsed = o.at - start;
    /* deadline timeout*attempts = 300 ms, checked on the 100 ms tick */
    assert_true(elapsed >= 290);
    assert_true(elapsed <= 300 + 400); /* 100 ms tick + a loaded machine */
    assert_true(a_queries("silent1.test") >= 1);

    /* cached as a failure: the next lookup does not wait */
    est_dns_resolve(f.dns, "silent1.test", on_resolved, &o2);
    spin_until_called(&f, &o2, 1, 1000);
    assert_int_equal(o2.status, EST_DNS_TIMEOUT);
    assert_true(o2.at - o.at < 100);

    /* destroyed while c-ares still retries (ARES_EDESTRUCTION path; ASan checks) */
    outcome_clear(&o);
    outcome_clear(&o2);
    fixture_dispose(&f);
}

static void test_stale_served(void **state)
{
    fixture_t f;
    outcome_t o = {0}, o2 = {0};
    fixture_init(&f, 1000, 150); /* the refresh must time out quickly */
    set_answer("10.0.0.6", 1);

    est_dns_resolve(f.dns, "stale.test", on_resolved, &o);
    spin_until_called(&f, &o, 1, 2000);
    assert_int_equal(o.status, EST_DNS_OK);

    set_silent(1);
    spin_for(&f, 1100);
    est_dns_resolve(f.dns, "stale.test", on_resolved, &o2);
    spin_until_called(&f, &o2, 1, 2000);
    set_silent(0);
    assert_int_equal(o2.called, 1);
    assert_int_equal(o2.status, EST_DNS_OK); /* the refresh timed out: the expired answer serves */
    assert_ptr_equal(o2.result, o.result);
    assert_first_addr(o2.result, "10.0.0.6");
    assert_true(a_queries("stale.test") >= 2); /* c-ares retried within the deadline */
    const est_dns_stats_t *s = est_dns_get_stats(f.dns);
    assert_int_equal(s->stale_served, 1);

    /* and keeps serving at once, from the fast path too */
    assert_ptr_equal(est_dns_lookup_cached(f.dns, "stale.test"), o.result);
    assert_int_equal(s->stale_served, 2);
    outcome_clear(&o);
    outcome_clear(&o2);
    fixture_dispose(&f);
}

static void test_cancel(void **state)
{
    fixture_t f;
    outcome_t o[3] = {{0}};
    fixture_init(&f, 300000, 1000);
    set_answer("10.0.0.7", 60);

    est_dns_query_t *q0 = est_dns_resolve(f.dns, "cancel.test", on_resolved, &o[0]);
    est_dns_resolve(f.dns, "cancel.test", on_resolved, &o[1]);
    est_dns_cancel(q0); /* the shared query goes on for the other waiter */
    spin_until_called(&f, &o[1], 1, 2000);
    assert_int_equal(o[1].status, EST_DNS_OK);
    assert_int_equal(o[0].called, 0);

    /* cancelling an answer that is already due */
    est_dns_query_t *q2 = est_dns_resolve(f.dns, "cancel.test", on_resolved, &o[2]);
    est_dns_cancel(q2);
    spin_for(&f, 30);
    assert_int_equal(o[2].called, 0);
    assert_int_equal(o[0].called, 0);
    assert_int_equal(a_queries("cancel.test"), 1);

    /* everybody cancelled: the query still completes and fills the cache */
    est_dns_query_t *q3 = est_dns_resolve(f.dns, "cancel2.test", on_resolved, &o[0]);
    est_dns_cancel(q3);
    spin_for(&f, 100);
    assert_non_null(est_dns_lookup_cached(f.dns, "cancel2.test"));
    assert_int_equal(o[0].called, 0);
    for (int i = 0; i != 3; ++i)
        outcome_clear(&o[i]);
    fixture_dispose(&f);
}

static void test_tcp_fallback(void **state)
{
    fixture_t f;
    outcome_t o = {0};
    fixture_init(&f, 300000, 1000);
    set_answer("10.0.0.8", 60);
    est_dns_resolve(f.dns, "tcp.test", on_resolved, &o);
    spin_until_called(&f, &o, 1, 2000);
    assert_int_equal(o.called, 1);
    assert_int_equal(o.status, EST_DNS_OK);
    assert_first_addr(o.result, "10.0.0.8");
    assert_int_equal(a_queries("tcp.test"), 2); /* UDP (truncated), then TCP */
    outcome_clear(&o);
    fixture_dispose(&f);
}

static void test_destroy_pending(void **state)
{
    fixture_t f;
    outcome_t o[2] = {{0}};
    fixture_init(&f, 300000, 1000);

    est_dns_resolve(f.dns, "silent2.test", on_resolved, &o[0]);
    spin_for(&f, 20); /* the query is on the wire */
    est_dns_resolve(f.dns, "127.0.0.1", on_resolved, &o[1]); /* due, not yet called */
    fixture_dispose(&f);
    assert_int_equal(o[0].called, 0);
    assert_int_equal(o[1].called, 0);
}

static void test_literal_no_query(void **state)
{
    fixture_t f;
    outcome_t o = {0};
    fixture_init(&f, 300000, 1000);
    est_dns_resolve(f.dns, "192.0.2.1", on_resolved, &o);
    spin_until_called(&f, &o, 1, 1000);
    assert_int_equal(o.status, EST_DNS_OK);
    assert_first_addr(o.result, "192.0.2.1");
    assert_int_equal(est_dns_get_stats(f.dns)->queries_ok + est_dns_get_stats(f.dns)->queries_failed, 0);
    outcome_clear(&o);
    fixture_dispose(&f);
}

int main(void)
{
    if (est_dns_global_init() != 0)
        return 1;
    /* no hosts-file names in the way of the fake server */
    setenv("ESTUARY_HOSTS_FILE", "/dev/null", 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_coalescing),   cmocka_unit_test(test_cache_hit_within_ttl),
        cmocka_unit_test(test_requery_after_ttl), cmocka_unit_test(test_refresh_ahead),
        cmocka_unit_test(test_nxdomain),     cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_stale_served), cmocka_unit_test(test_cancel), cmocka_unit_test(test_tcp_fallback),
        cmocka_unit_test(test_destroy_pending), cmocka_unit_test(test_literal_no_query),
    };
    int ret = cmocka_run_group_tests(tests, server_start, server_stop);
    est_dns_global_dispose();
    return ret;
}

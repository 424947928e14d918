/*
 * Unit tests: DNS cache rules (TTL clamp, refresh window, negative cache, stale window,
 * generation), the name table (case, LRU eviction), results, and the hosts file (parsing,
 * and through est_dns_create with ESTUARY_HOSTS_FILE).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "upstream/dns.h"
#include "upstream/dns_cache.h"

static est_dns_conf_t test_conf(void)
{
    est_dns_conf_t c = {0};
    c.min_ttl_ms = 1000;
    c.max_ttl_ms = 300000;
    c.negative_ttl_ms = 2000;
    c.stale_ttl_ms = 5000;
    c.timeout_ms = 1000;
    c.attempts = 2;
    return c;
}

static est_dns_result_t *make_result(const char *const *ips, size_t n)
{
    est_dns_result_t *r = est_dns_result_new(n);
    for (size_t i = 0; i != n; ++i) {
        est_dns_addr_t a;
        assert_int_equal(est_dns_parse_literal(ips[i], &a), 0);
        assert_int_equal(est_dns_result_add(r, (struct sockaddr *)&a.sa, a.len), 1);
    }
    return r;
}

static const char *addr_str(const est_dns_addr_t *a, char *buf, size_t len)
{
    if (a->sa.ss_family == AF_INET)
        return inet_ntop(AF_INET, &((const struct sockaddr_in *)&a->sa)->sin_addr, buf, (socklen_t)len);
    return inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)&a->sa)->sin6_addr, buf, (socklen_t)len);
}

static void assert_addrs(const est_dns_result_t *r, const char *const *expected, size_t n)
{
    char buf[INET6_ADDRSTRLEN];
    assert_non_null(r);
    assert_int_equal(r->num_addrs, n);
    for (size_t i = 0; i != n; ++i) {
        assert_string_equal(addr_str(&r->addrs[i], buf, sizeof(buf)), expected[i]);
        if (r->addrs[i].sa.ss_family == AF_INET) {
            assert_int_equal(r->addrs[i].len, sizeof(struct sockaddr_in));
            assert_int_equal(((const struct sockaddr_in *)&r->addrs[i].sa)->sin_port, 0);
        } else {
            assert_int_equal(r->addrs[i].len, sizeof(struct sockaddr_in6));
        }
    }
}

static void test_clamp_ttl(void **state)
{
    est_dns_conf_t c = test_conf();
    assert_int_equal(est_dns_clamp_ttl(&c, 0), 1000);
    assert_int_equal(est_dns_clamp_ttl(&c, -5), 1000);
    assert_int_equal(est_dns_clamp_ttl(&c, 1), 1000);
    assert_int_equal(est_dns_clamp_ttl(&c, 42), 42000);
    assert_int_equal(est_dns_clamp_ttl(&c, 300), 300000);
    assert_int_equal(est_dns_clamp_ttl(&c, 86400), 300000);
    c.min_ttl_ms = 0;
    assert_int_equal(est_dns_clamp_ttl(&c, 0), 0);
}

static void test_refresh_window(void **state)
{
    assert_int_equal(est_dns_refresh_window(1000), 500);      /* half of a short TTL */
    assert_int_equal(est_dns_refresh_window(5000), 1000);     /* 1 s floor */
    assert_int_equal(est_dns_refresh_window(20000), 2000);    /* 10% */
    assert_int_equal(est_dns_refresh_window(300000), 30000);  /* 10% */
}

static void init_entry(est_dns_entry_t *e)
{
    memset(e, 0, sizeof(*e));
    h2o_linklist_init_anchor(&e->waiters);
}

static void test_entry_lifecycle(void **state)
{
    est_dns_conf_t c = test_conf();
    c.min_ttl_ms = 100; /* below the refresh window: the window alone decides below */
    est_dns_cache_t cache;
    est_dns_entry_t e;
    est_dns_result_t *r;
    int stale;
    uint64_t gen = 1;

    assert_int_equal(est_dns_cache_init(&cache, 16, 16), 0);
    init_entry(&e);
    assert_int_equal(est_dns_entry_state(&e, 0), EST_DNS_ENTRY_MISS);
    assert_int_equal(est_dns_entry_serve(&e, 0, &r, &stale), EST_DNS_FAILURE);
    assert_null(r);

    static const char *const ips[] = {"10.0.0.1"};
    est_dns_entry_store_answer(&cache, &e, make_result(ips, 1), 1000, 1000, &c, &gen);
    assert_int_equal(e.expires_at, 2000);
    assert_int_equal(e.stale_until, 7000);
    assert_int_equal(e.result->generation, 1);
    assert_int_equal(gen, 2);

    /* fresh; refresh due in the last 500 ms */
    assert_int_equal(est_dns_entry_state(&e, 1000), EST_DNS_ENTRY_FRESH);
    assert_int_equal(est_dns_entry_state(&e, 1999), EST_DNS_ENTRY_FRESH);
    assert_false(est_dns_entry_refresh_due(&e, 1499));
    assert_true(est_dns_entry_refresh_due(&e, 1500));
    e.querying = 1;
    assert_false(est_dns_entry_refresh_due(&e, 1500));
    e.querying = 0;
    assert_int_equal(est_dns_entry_serve(&e, 1999, &r, &stale), EST_DNS_OK);
    assert_ptr_equal(r, e.result);
    assert_false(stale);

    /* expired, no failure yet: a lookup waits for a query, but the answer remains as fallback */
    assert_int_equal(est_dns_entry_state(&e, 2000), EST_DNS_ENTRY_EXPIRED);
    assert_false(est_dns_entry_refresh_due(&e, 2000));
    assert_int_equal(est_dns_entry_serve(&e, 2000, &r, &stale), EST_DNS_OK);
    assert_true(stale);

    /* the refresh fails: stale, served without a new query during negative_ttl */
    est_dns_entry_store_failure(&cache, &e, EST_DNS_TIMEOUT, 2100, &c);
    assert_non_null(e.result);
    assert_int_equal(est_dns_entry_state(&e, 2100), EST_DNS_ENTRY_STALE);
    assert_int_equal(est_dns_entry_serve(&e, 3000, &r, &stale), EST_DNS_OK);
    assert_true(stale);
    assert_false(est_dns_entry_refresh_due(&e, 4099));
    assert_true(est_dns_entry_refresh_due(&e, 4100));
    /* stale_ttl counts from the expiry (2000 + 5000), not from the failure */
    assert_int_equal(est_dns_entry_state(&e, 6999), EST_DNS_ENTRY_STALE);
    assert_int_equal(est_dns_entry_state(&e, 7000), EST_DNS_ENTRY_MISS);

    /* a failure past the stale window drops the answer and is cached */
    est_dns_entry_store_failure(&cache, &e, EST_DNS_TIMEOUT, 7000, &c);
    assert_null(e.result);
    assert_int_equal(cache.graveyard_len, 1);
    assert_int_equal(est_dns_entry_state(&e, 8999), EST_DNS_ENTRY_NEGATIVE);
    assert_int_equal(est_dns_entry_serve(&e, 8999, &r, &stale), EST_DNS_TIMEOUT);
    assert_null(r);
    assert_int_equal(est_dns_entry_state(&e, 9000), EST_DNS_ENTRY_MISS);

    est_dns_cache_flush_graveyard(&cache);
    est_dns_cache_dispose(&cache);
}

/* a TTL 0 answer is raised to min_ttl and not asked again before min_ttl is over, not even by
 * an early refresh; a longer TTL still refreshes early */
static void test_ttl_zero_kept_for_min_ttl(void **state)
{
    est_dns_conf_t c = test_conf(); /* min_ttl 1 s */
    est_dns_cache_t cache;
    est_dns_entry_t e;
    uint64_t gen = 1;
    static const char *const ips[] = {"10.0.0.1"};

    assert_int_equal(est_dns_cache_init(&cache, 16, 16), 0);
    init_entry(&e);
    est_dns_entry_store_answer(&cache, &e, make_result(ips, 1), est_dns_clamp_ttl(&c, 0), 5000, &c, &gen);
    assert_int_equal(e.expires_at, 6000);
    for (uint64_t now = 5000; now < 6000; now += 10) {
        assert_int_equal(est_dns_entry_state(&e, now), EST_DNS_ENTRY_FRESH);
        if (est_dns_entry_refresh_due(&e, now))
            fail_msg("refresh due at +%llums", (unsigned long long)(now - 5000));
    }
    assert_int_equal(est_dns_entry_state(&e, 6000), EST_DNS_ENTRY_EXPIRED); /* then asked, and waited for */

    /* TTL 3 s: refreshed in its last second, which is past min_ttl */
    est_dns_entry_store_answer(&cache, &e, make_result(ips, 1), est_dns_clamp_ttl(&c, 3), 10000, &c, &gen);
    assert_false(est_dns_entry_refresh_due(&e, 11999));
    assert_true(est_dns_entry_refresh_due(&e, 12000));

    /* a larger min_ttl holds off the early refresh of a short TTL until min_ttl is over */
    c.min_ttl_ms = 2500;
    est_dns_entry_store_answer(&cache, &e, make_result(ips, 1), 3000, 20000, &c, &gen);
    assert_false(est_dns_entry_refresh_due(&e, 22000));
    assert_false(est_dns_entry_refresh_due(&e, 22499));
    assert_true(est_dns_entry_refresh_due(&e, 22500));

    est_dns_cache_flush_graveyard(&cache);
    est_dns_result_release(e.result);
    est_dns_cache_dispose(&cache);
}

static void test_negative_then_answer(void **state)
{
    est_dns_conf_t c = test_conf();
    est_dns_cache_t cache;
    est_dns_entry_t e;
    est_dns_result_t *r;
    int stale;
    uint64_t gen = 7;

    assert_int_equal(est_dns_cache_init(&cache, 16, 16), 0);
    init_entry(&e);
    est_dns_entry_store_failure(&cache, &e, EST_DNS_NOT_FOUND, 100, &c);
    assert_int_equal(est_dns_entry_state(&e, 100), EST_DNS_ENTRY_NEGATIVE);
    assert_int_equal(est_dns_entry_serve(&e, 2099, &r, &stale), EST_DNS_NOT_FOUND);
    assert_false(est_dns_entry_refresh_due(&e, 150));
    assert_int_equal(est_dns_entry_state(&e, 2100), EST_DNS_ENTRY_MISS);

    static const char *const ips[] = {"10.0.0.9"};
    est_dns_entry_store_answer(&cache, &e, make_result(ips, 1), 42000, 2100, &c, &gen);
    assert_int_equal(e.neg_status, EST_DNS_OK);
    assert_int_equal(est_dns_entry_state(&e, 2100), EST_DNS_ENTRY_FRESH);
    assert_int_equal(e.result->generation, 7);

    /* a failed early refresh keeps the fresh answer, then serves it stale without waiting */
    est_dns_entry_store_failure(&cache, &e, EST_DNS_FAILURE, 40000, &c);
    assert_int_equal(est_dns_entry_state(&e, 40000), EST_DNS_ENTRY_FRESH);
    assert_false(est_dns_entry_refresh_due(&e, 41000)); /* negative_ttl not over */
    assert_true(est_dns_entry_refresh_due(&e, 42000));
    assert_int_equal(est_dns_entry_state(&e, 44100), EST_DNS_ENTRY_STALE);

    est_dns_result_release(e.result);
    est_dns_cache_dispose(&cache);
}

static void test_generation(void **state)
{
    est_dns_conf_t c = test_conf();
    est_dns_cache_t cache;
    est_dns_entry_t e;
    uint64_t gen = 1;

    assert_int_equal(est_dns_cache_init(&cache, 16, 16), 0);
    init_entry(&e);
    static const char *const a[] = {"10.0.0.1", "10.0.0.2"}, *const b[] = {"10.0.0.2", "10.0.0.1"},
                             *const d[] = {"10.0.0.2", "10.0.0.3"}, *const sub[] = {"10.0.0.2"};
    est_dns_entry_store_answer(&cache, &e, make_result(a, 2), 1000, 0, &c, &gen);
    uint64_t g1 = e.result->generation;
    /* same set, other order: same generation, new object */
    est_dns_entry_store_answer(&cache, &e, make_result(b, 2), 1000, 1000, &c, &gen);
    assert_int_equal(e.result->generation, g1);
    assert_addrs(e.result, b, 2);
    /* another set: a new generation */
    est_dns_entry_store_answer(&cache, &e, make_result(d, 2), 1000, 2000, &c, &gen);
    uint64_t g2 = e.result->generation;
    assert_int_not_equal(g2, g1);
    /* a subset is a change too */
    est_dns_entry_store_answer(&cache, &e, make_result(sub, 1), 1000, 3000, &c, &gen);
    assert_int_not_equal(e.result->generation, g2);
    assert_int_not_equal(e.result->generation, g1);
    assert_int_equal(cache.graveyard_len, 3);

    est_dns_result_release(e.result);
    est_dns_cache_dispose(&cache); /* flushes the graveyard (ASan checks) */
}

static void test_result_sort_dedupe(void **state)
{
    static const char *const in[] = {"2001:db8::1", "10.0.0.1", "2001:db8::2", "10.0.0.2", "10.0.0.3"};
    static const char *const out[] = {"10.0.0.1", "10.0.0.2", "10.0.0.3", "2001:db8::1", "2001:db8::2"};
    est_dns_result_t *r = make_result(in, 5);
    est_dns_addr_t dup;
    assert_int_equal(est_dns_parse_literal("10.0.0.2", &dup), 0);
    assert_int_equal(est_dns_result_add(r, (struct sockaddr *)&dup.sa, dup.len), 0);
    est_dns_result_sort(r);
    assert_addrs(r, out, 5);
    est_dns_result_addref(r);
    assert_int_equal(r->refcnt, 2);
    est_dns_result_release(r);
    est_dns_result_release(r);
}

static void test_literals_and_names(void **state)
{
    est_dns_addr_t a;
    char buf[INET6_ADDRSTRLEN];
    assert_int_equal(est_dns_parse_literal("192.0.2.7", &a), 0);
    assert_int_equal(a.sa.ss_family, AF_INET);
    assert_int_equal(est_dns_parse_literal("::1", &a), 0);
    assert_int_equal(a.sa.ss_family, AF_INET6);
    assert_int_equal(est_dns_parse_literal("[2001:db8::5]", &a), 0);
    assert_string_equal(addr_str(&a, buf, sizeof(buf)), "2001:db8::5");
    assert_int_equal(est_dns_parse_literal("api.test", &a), -1);
    assert_int_equal(est_dns_parse_literal("1.2.3", &a), -1);
    assert_int_equal(est_dns_parse_literal("[10.0.0.1]", &a), -1);
    assert_int_equal(est_dns_parse_literal("", &a), -1);

    assert_true(est_dns_name_is_valid("api.test"));
    assert_true(est_dns_name_is_valid("a"));
    assert_false(est_dns_name_is_valid(""));
    assert_false(est_dns_name_is_valid("a b"));
    assert_false(est_dns_name_is_valid("a\nb"));
    char long_name[300];
    memset(long_name, 'a', sizeof(long_name) - 1);
    long_name[sizeof(long_name) - 1] = '\0';
    assert_false(est_dns_name_is_valid(long_name));
    long_name[253] = '\0';
    assert_true(est_dns_name_is_valid(long_name));
    long_name[253] = 'a';
    long_name[254] = '\0';
    assert_false(est_dns_name_is_valid(long_name));
    long_name[253] = '.';
    assert_true(est_dns_name_is_valid(long_name));
}

static void test_table_case_and_eviction(void **state)
{
    est_dns_cache_t cache;
    assert_int_equal(est_dns_cache_init(&cache, 4, 3), 0);
    est_dns_entry_t *a = est_dns_cache_insert(&cache, "A.Test");
    assert_non_null(a);
    assert_string_equal(a->name, "a.test");
    assert_ptr_equal(est_dns_cache_find(&cache, "a.TEST"), a);
    assert_non_null(est_dns_cache_insert(&cache, "b.test"));
    est_dns_entry_t *c = est_dns_cache_insert(&cache, "c.test");
    static const char *const ips[] = {"10.0.0.1"};
    c->result = make_result(ips, 1);
    assert_int_equal(cache.count, 3);

    /* a used recently; b is the oldest */
    est_dns_cache_touch(&cache, a);
    assert_non_null(est_dns_cache_insert(&cache, "d.test"));
    assert_int_equal(cache.count, 3);
    assert_null(est_dns_cache_find(&cache, "b.test"));
    assert_non_null(est_dns_cache_find(&cache, "a.test"));

    /* busy entries (query running) are skipped: c is the oldest, but querying */
    c->querying = 1;
    assert_non_null(est_dns_cache_insert(&cache, "e.test"));
    assert_non_null(est_dns_cache_find(&cache, "c.test"));
    assert_null(est_dns_cache_find(&cache, "a.test"));
    /* its answer, once evicted, waits in the graveyard (borrowers stay valid until the loop) */
    c->querying = 0;
    assert_non_null(est_dns_cache_insert(&cache, "f.test"));
    assert_null(est_dns_cache_find(&cache, "c.test"));
    assert_int_equal(cache.graveyard_len, 1);
    assert_int_equal(cache.count, 3);

    /* many names: the table stays bounded */
    char name[32];
    for (int i = 0; i != 1000; ++i) {
        snprintf(name, sizeof(name), "n%d.test", i);
        assert_non_null(est_dns_cache_insert(&cache, name));
    }
    assert_int_equal(cache.count, 3);
    assert_non_null(est_dns_cache_find(&cache, "n999.test"));
    est_dns_cache_dispose(&cache);
}

static void test_hosts_parse(void **state)
{
    static const char text[] = "# comment line\n"
                               "127.0.0.1\tlocalhost\n"
                               "::1     localhost ip6-localhost ip6-loopback   # trailing comment\n"
                               "\n"
                               "   \t  \n"
                               "10.1.0.1 Api.Internal api\n"
                               "2001:db8::1 api.internal\n"
                               "10.1.0.2 api.internal\r\n"
                               "10.1.0.1 api.internal\n"       /* duplicate */
                               "not-an-ip bogus.internal\n"
                               "fe80::1%eth0 zoned.internal\n" /* zones are not supported */
                               "10.9.9.9\n"                    /* no name */
                               "10.2.0.1 db#comment.internal\n"
                               "10.3.0.1 1.2.3.4 real.internal\n"
                               "10.4.0.1 last.internal"; /* no final newline */
    est_dns_cache_t t;
    uint64_t gen = 1;
    assert_int_equal(est_dns_cache_init(&t, 16, SIZE_MAX), 0);
    assert_int_equal(est_dns_hosts_parse(&t, text, sizeof(text) - 1, &gen), 0);

    static const char *const lo[] = {"127.0.0.1", "::1"}, *const api[] = {"10.1.0.1", "10.1.0.2", "2001:db8::1"},
                             *const api_short[] = {"10.1.0.1"}, *const db[] = {"10.2.0.1"}, *const last[] = {"10.4.0.1"},
                             *const real[] = {"10.3.0.1"}, *const v6[] = {"::1"};
    est_dns_entry_t *e = est_dns_cache_find(&t, "localhost");
    assert_non_null(e);
    assert_true(e->permanent);
    assert_addrs(e->result, lo, 2);
    assert_addrs(est_dns_cache_find(&t, "API.INTERNAL")->result, api, 3);
    assert_addrs(est_dns_cache_find(&t, "api")->result, api_short, 1);
    assert_addrs(est_dns_cache_find(&t, "ip6-loopback")->result, v6, 1);
    assert_addrs(est_dns_cache_find(&t, "db")->result, db, 1);
    assert_addrs(est_dns_cache_find(&t, "real.internal")->result, real, 1);
    assert_addrs(est_dns_cache_find(&t, "last.internal")->result, last, 1);
    assert_null(est_dns_cache_find(&t, "bogus.internal"));
    assert_null(est_dns_cache_find(&t, "zoned.internal"));
    assert_null(est_dns_cache_find(&t, "1.2.3.4"));
    assert_null(est_dns_cache_find(&t, "db#comment.internal"));
    assert_int_equal(est_dns_entry_state(e, UINT64_MAX - 1), EST_DNS_ENTRY_FRESH);
    assert_true(e->result->generation != 0);
    est_dns_cache_dispose(&t);

    /* localhost is there even when the file does not list it (IPv4 first when only ::1 is) */
    assert_int_equal(est_dns_cache_init(&t, 16, SIZE_MAX), 0);
    static const char only_v6[] = "::1 localhost\n";
    assert_int_equal(est_dns_hosts_parse(&t, only_v6, sizeof(only_v6) - 1, &gen), 0);
    assert_addrs(est_dns_cache_find(&t, "localhost")->result, lo, 2);
    est_dns_cache_dispose(&t);
    assert_int_equal(est_dns_cache_init(&t, 16, SIZE_MAX), 0);
    assert_int_equal(est_dns_hosts_parse(&t, "", 0, &gen), 0);
    static const char *const lo4[] = {"127.0.0.1"};
    assert_addrs(est_dns_cache_find(&t, "localhost")->result, lo4, 1);
    assert_int_equal(t.count, 1);
    est_dns_cache_dispose(&t);
}

/* -- through the resolver, with ESTUARY_HOSTS_FILE -- */

static int ncalled;
static est_dns_status_t last_status;
static char last_addr[INET6_ADDRSTRLEN];

static void on_resolved(void *data, est_dns_status_t st, est_dns_result_t *r)
{
    ++ncalled;
    last_status = st;
    last_addr[0] = '\0';
    if (r != NULL && r->num_addrs != 0)
        addr_str(&r->addrs[0], last_addr, sizeof(last_addr));
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void spin(h2o_loop_t *loop, int target)
{
    uint64_t end = now_ms() + 2000;
    while (ncalled < target && now_ms() < end)
        h2o_evloop_run(loop, 10);
}

static void test_hosts_file_resolver(void **state)
{
    char path[] = "/tmp/estuary-test-hosts-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    static const char text[] = "10.7.7.7 MyHost.Example myhost\n::1 localhost\n2001:db8::7 myhost.example\n";
    assert_int_equal(write(fd, text, sizeof(text) - 1), (ssize_t)(sizeof(text) - 1));
    close(fd);
    assert_int_equal(setenv("ESTUARY_HOSTS_FILE", path, 1), 0);

    h2o_loop_t *loop = h2o_evloop_create();
    est_dns_conf_t c = test_conf();
    char *servers[] = {"127.0.0.1:9"}; /* never contacted: everything here is local */
    c.servers = servers;
    c.num_servers = 1;
    est_dns_t *dns = est_dns_create(loop, &c);
    assert_non_null(dns);
    unlink(path);

    static const char *const my[] = {"10.7.7.7", "2001:db8::7"}, *const lo[] = {"127.0.0.1", "::1"},
                             *const lit[] = {"10.1.2.3"}, *const lit6[] = {"2001:db8::9"};
    assert_addrs(est_dns_lookup_cached(dns, "myhost.EXAMPLE"), my, 2);
    assert_addrs(est_dns_lookup_cached(dns, "localhost"), lo, 2);
    assert_addrs(est_dns_lookup_cached(dns, "10.1.2.3"), lit, 1);
    assert_addrs(est_dns_lookup_cached(dns, "[2001:db8::9]"), lit6, 1);
    est_dns_result_t *l1 = est_dns_lookup_cached(dns, "10.1.2.3");
    assert_ptr_equal(l1, est_dns_lookup_cached(dns, "10.1.2.3"));
    assert_null(est_dns_lookup_cached(dns, "other.example"));
    assert_null(est_dns_lookup_cached(dns, ""));
    assert_int_equal(est_dns_get_stats(dns)->cache_hits, 6);

    /* resolve answers asynchronously, from the loop */
    ncalled = 0;
    est_dns_query_t *q = est_dns_resolve(dns, "MYHOST", on_resolved, NULL);
    assert_non_null(q);
    assert_int_equal(ncalled, 0);
    spin(loop, 1);
    assert_int_equal(ncalled, 1);
    assert_int_equal(last_status, EST_DNS_OK);
    assert_string_equal(last_addr, "10.7.7.7");

    assert_non_null(est_dns_resolve(dns, "::1", on_resolved, NULL));
    assert_non_null(est_dns_resolve(dns, "bad name", on_resolved, NULL));
    assert_int_equal(ncalled, 1);
    spin(loop, 3);
    assert_int_equal(ncalled, 3);
    assert_int_equal(last_status, EST_DNS_NOT_FOUND);

    /* a cancelled lookup is never called back */
    q = est_dns_resolve(dns, "localhost", on_resolved, NULL);
    est_dns_cancel(q);
    for (int i = 0; i != 5; ++i)
        h2o_evloop_run(loop, 1);
    assert_int_equal(ncalled, 3);
    assert_int_equal(est_dns_get_stats(dns)->queries_ok + est_dns_get_stats(dns)->queries_failed, 0);

    /* a due callback is dropped by destroy */
    est_dns_resolve(dns, "localhost", on_resolved, NULL);
    est_dns_destroy(dns);
    h2o_evloop_run(loop, 0);
    assert_int_equal(ncalled, 3);
    h2o_evloop_destroy(loop);

    /* an unreadable file: only localhost */
    assert_int_equal(setenv("ESTUARY_HOSTS_FILE", "/nonexistent/estuary-hosts", 1), 0);
    loop = h2o_evloop_create();
    dns = est_dns_create(loop, &c);
    assert_non_null(dns);
    static const char *const lo4[] = {"127.0.0.1"};
    assert_addrs(est_dns_lookup_cached(dns, "localhost"), lo4, 1);
    assert_null(est_dns_lookup_cached(dns, "myhost"));
    est_dns_destroy(dns);
    h2o_evloop_run(loop, 0);
    h2o_evloop_destroy(loop);
    unsetenv("ESTUARY_HOSTS_FILE");
}

static void test_bad_servers(void **state)
{
    setenv("ESTUARY_HOSTS_FILE", "/dev/null", 1);
    h2o_loop_t *loop = h2o_evloop_create();
    est_dns_conf_t c = test_conf();
    char *servers[] = {"not an address"};
    c.servers = servers;
    c.num_servers = 1;
    assert_null(est_dns_create(loop, &c));
    h2o_evloop_run(loop, 0);
    h2o_evloop_destroy(loop);
    unsetenv("ESTUARY_HOSTS_FILE");
}

int main(void)
{
    if (est_dns_global_init() != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_clamp_ttl),
        cmocka_unit_test(test_refresh_window),
        cmocka_unit_test(test_entry_lifecycle),
        cmocka_unit_test(test_ttl_zero_kept_for_min_ttl),
        cmocka_unit_test(test_negative_then_answer),
        cmocka_unit_test(test_generation),
        cmocka_unit_test(test_result_sort_dedupe),
        cmocka_unit_test(test_literals_and_names),
        cmocka_unit_test(test_table_case_and_eviction),
        cmocka_unit_test(test_hosts_parse),
        cmocka_unit_test(test_hosts_file_resolver),
        cmocka_unit_test(test_bad_servers),
    };
    int ret = cmocka_run_group_tests(tests, NULL, NULL);
    est_dns_global_dispose();
    return ret;
}

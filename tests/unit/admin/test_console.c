/*
 * Unit tests: the console's /state document (sums over workers, status classes, quantiles
 * from the histogram buckets, rates from the history ring, address health merged over
 * workers).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>

#include "admin/console.h"
#include "admin/metrics.h"

/* a snapshot of `m` (one route named `route`) with one upstream "u" and one address */
static est_metrics_snapshot_t make_snap(const est_worker_metrics_t *m, const char *route, int ejected)
{
    est_metrics_snapshot_t s = {0};
    s.filled = 1;
    s.num_routes = 1;
    s.route_names = calloc(1, sizeof(char *));
    s.route_names[0] = strdup(route);
    s.routes = calloc(2, sizeof(*s.routes));
    for (size_t i = 0; i != 2; ++i) {
        s.routes[i] = m->routes[i];
        s.routes[i].counts = malloc(sizeof(*s.routes[i].counts) * (m->routes[i].num_counts + 1));
        if (m->routes[i].num_counts != 0)
            memcpy(s.routes[i].counts, m->routes[i].counts, sizeof(*s.routes[i].counts) * m->routes[i].num_counts);
    }
    s.num_upstreams = 1;
    s.upstream_names = calloc(1, sizeof(char *));
    s.upstream_names[0] = strdup("u");
    s.upstreams = calloc(1, sizeof(*s.upstreams));
    s.upstreams[0].attempts_ok = 2;
    s.upstreams[0].attempts_failed[EST_UERR_CONNECT] = 3;
    s.upstreams[0].hedges_won = 2;
    s.upstreams[0].hedges_lost = 1;
    s.upstreams[0].hedges_refused = 4;
    s.upstream_states = calloc(1, sizeof(*s.upstream_states));
    s.upstream_states[0].addrs = calloc(1, sizeof(est_metrics_addr_t));
    s.upstream_states[0].num_addrs = 1;
    s.upstream_states[0].waiting = 1;
    strcpy(s.upstream_states[0].addrs[0].addr, "127.0.0.1:9");
    s.upstream_states[0].addrs[0].ejected = (uint8_t)ejected;
    s.upstream_states[0].addrs[0].ejected_for_ms = ejected ? 700 : 0;
    s.dns_entries = calloc(1, sizeof(*s.dns_entries));
    s.num_dns_entries = 1;
    strcpy(s.dns_entries[0].name, "svc.test");
    strcpy(s.dns_entries[0].addrs, "192.0.2.1 2001:db8::1");
    s.dns_entries[0].has_answer = 1;
    s.dns_entries[0].stale = (uint8_t)ejected;
    s.dns_entries[0].ttl_left_ms = ejected ? 0 : 5000;
    return s;
}

static json_t *render(est_metrics_snapshot_t *snaps, size_t n, est_console_history_t *h, double mono)
{
    est_process_metrics_t proc = {.workers = n, .config_generation = 3, .reloads_ok = 2};
    json_t *config = json_pack("{s:{s:{s:[s]}}}", "upstreams", "u", "targets", "http://127.0.0.1:9");
    est_console_info_t info = {
        .proc = &proc, .last_reload = 1, .last_reload_time = 1000, .config = config, .now = 2000, .mono = mono};
    est_strbuf_t out = {0};
    est_console_render_state(&out, snaps, n, &info, h);
    json_decref(config);
    json_error_t err;
    json_t *doc = json_loads(out.base, 0, &err);
    if (doc == NULL)
        fail_msg("invalid JSON (%s): %s", err.text, out.base);
    est_strbuf_dispose(&out);
    return doc;
}

static json_int_t geti(json_t *o, const char *path)
{
    char buf[256];
    strcpy(buf, path);
    json_t *v = o;
    for (char *k = strtok(buf, "."); k != NULL; k = strtok(NULL, "."))
        v = json_is_array(v) ? json_array_get(v, (size_t)atoi(k)) : json_object_get(v, k);
    if (!json_is_integer(v))
        fail_msg("%s: not an integer", path);
    return json_integer_value(v);
}

static void test_state_sums_and_rates(void **state)
{
    est_worker_metrics_t w1, w2;
    est_worker_metrics_init(&w1, 1);
    est_worker_metrics_init(&w2, 1);
    for (int i = 0; i != 8; ++i)
        est_worker_metrics_record(&w1, 0, "GET", 3, 200, 0.003); /* bucket (2.5 ms, 5 ms] */
    est_worker_metrics_record(&w2, 0, "POST", 4, 502, 0.3);
    est_worker_metrics_record(&w2, 0, "GET", 3, 404, 0.003);
    est_worker_metrics_record(&w2, SIZE_MAX, "GET", 3, 404, 0.001);
    est_console_history_t *h = est_console_history_create();

    est_metrics_snapshot_t snaps[2] = {make_snap(&w1, "/a", 1), make_snap(&w2, "/a", 0)};
    json_t *doc = render(snaps, 2, h, 100.0);
    json_t *a = json_array_get(json_object_get(doc, "routes"), 0), *none = json_array_get(json_object_get(doc, "routes"), 1);
    assert_string_equal(json_string_value(json_object_get(a, "path")), "/a");
    assert_int_equal(geti(a, "requests"), 10);
    assert_int_equal(geti(a, "by_class.2xx"), 8);
    assert_int_equal(geti(a, "by_class.4xx"), 1);
    assert_int_equal(geti(a, "by_class.5xx"), 1);
    assert_int_equal(geti(a, "errors"), 1);
    assert_true(json_is_null(json_object_get(a, "rps"))); /* one sample: no rate yet */
    /* 8 of 10 in (2.5, 5] ms: p50 interpolated there; p99 in (250, 500] ms */
    double p50 = json_real_value(json_object_get(a, "p50_ms")), p99 = json_real_value(json_object_get(a, "p99_ms"));
    assert_true(p50 > 2.5 && p50 <= 5.0);
    assert_true(p99 > 250 && p99 <= 500);
    assert_true(json_is_null(json_object_get(a, "p99_ms_1m"))); /* no older sample yet */
    assert_true(json_is_true(json_object_get(none, "unmatched")));
    assert_int_equal(geti(none, "requests"), 1);
    /* the upstream, summed; its address ejected on one worker of two */
    json_t *u = json_array_get(json_object_get(doc, "upstreams"), 0);
    assert_int_equal(geti(u, "attempts"), 10);
    assert_int_equal(geti(u, "failures.connect_failure"), 6);
    assert_int_equal(geti(u, "connections.waiting"), 2);
    assert_int_equal(geti(u, "hedges"), 6); /* sent: won + lost + failed, summed over both workers */
    assert_int_equal(geti(u, "hedges_won"), 4);
    assert_int_equal(geti(u, "hedges_refused"), 8);
    json_t *addr = json_array_get(json_object_get(u, "addresses"), 0);
    assert_int_equal(json_array_size(json_object_get(u, "addresses")), 1);
    assert_string_equal(json_string_value(json_object_get(addr, "address")), "127.0.0.1:9");
    assert_string_equal(json_string_value(json_object_get(addr, "target")), "http://127.0.0.1:9");
    assert_string_equal(json_string_value(json_object_get(addr, "health")), "ejected");
    assert_int_equal(geti(addr, "ejected_workers"), 1);
    assert_int_equal(geti(addr, "ejected_for_ms"), 700);
    /* one DNS name cached by both workers, stale on one */
    json_t *entries = json_object_get(json_object_get(doc, "dns"), "entries"), *e = json_array_get(entries, 0);
    assert_int_equal(json_array_size(entries), 1);
    assert_string_equal(json_string_value(json_object_get(e, "name")), "svc.test");
    assert_int_equal(json_array_size(json_object_get(e, "addresses")), 2);
    assert_string_equal(json_string_value(json_array_get(json_object_get(e, "addresses"), 1)), "2001:db8::1");
    assert_true(json_is_true(json_object_get(e, "stale")));
    assert_int_equal(geti(e, "ttl_left_ms"), 5000);
    assert_int_equal(geti(e, "workers"), 2);
    assert_true(json_is_null(json_object_get(e, "failure")));
    assert_int_equal(geti(doc, "config.generation"), 3);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(json_object_get(doc, "config"), "last_reload"), "result")), "ok");
    assert_true(json_is_false(json_object_get(json_object_get(doc, "cache"), "enabled")));
    json_decref(doc);
    for (size_t i = 0; i != 2; ++i)
        est_metrics_snapshot_dispose(snaps + i);

    /* 10 s later, 20 more requests (5 of them 5xx): 2/s, and the minute's error ratio 5/20 */
    for (int i = 0; i != 15; ++i)
        est_worker_metrics_record(&w1, 0, "GET", 3, 200, 0.003);
    for (int i = 0; i != 5; ++i)
        est_worker_metrics_record(&w1, 0, "GET", 3, 500, 0.003);
    snaps[0] = make_snap(&w1, "/a", 0);
    snaps[1] = make_snap(&w2, "/a", 0);
    doc = render(snaps, 2, h, 110.0);
    a = json_array_get(json_object_get(doc, "routes"), 0);
    assert_int_equal(geti(a, "requests"), 30);
    assert_true(json_real_value(json_object_get(a, "rps")) == 2.0);
    assert_true(json_real_value(json_object_get(a, "error_ratio_1m")) == 0.25);
    /* the window's 20 requests all took 3 ms; since start, one of 30 took 300 ms */
    p99 = json_real_value(json_object_get(a, "p99_ms_1m"));
    assert_true(p99 > 2.5 && p99 <= 5.0);
    p50 = json_real_value(json_object_get(a, "p50_ms_1m"));
    assert_true(p50 > 2.5 && p50 <= 5.0);
    p99 = json_real_value(json_object_get(a, "p99_ms"));
    assert_true(p99 > 5.0);
    assert_int_equal(json_array_size(json_object_get(a, "rps_history")), 0); /* this call's sample comes after */
    addr = json_array_get(json_object_get(json_array_get(json_object_get(doc, "upstreams"), 0), "addresses"), 0);
    assert_string_equal(json_string_value(json_object_get(addr, "health")), "ok");
    json_decref(doc);
    /* a poll within the same second sees both samples and adds none */
    doc = render(snaps, 2, h, 110.4);
    a = json_array_get(json_object_get(doc, "routes"), 0);
    assert_int_equal(json_array_size(json_object_get(a, "rps_history")), 1);
    assert_true(json_real_value(json_array_get(json_object_get(a, "rps_history"), 0)) == 2.0);
    assert_int_equal(json_array_size(json_object_get(a, "p99_history")), 1);
    p99 = json_real_value(json_array_get(json_object_get(a, "p99_history"), 0));
    assert_true(p99 > 2.5 && p99 <= 5.0);
    json_decref(doc);
    doc = render(snaps, 2, h, 110.8);
    assert_int_equal(json_array_size(json_object_get(json_array_get(json_object_get(doc, "routes"), 0), "rps_history")), 1);
    json_decref(doc);
    for (size_t i = 0; i != 2; ++i)
        est_metrics_snapshot_dispose(snaps + i);
    /* the ring keeps the last EST_CONSOLE_HISTORY samples */
    snaps[0] = make_snap(&w1, "/a", 0);
    snaps[1] = make_snap(&w2, "/a", 0);
    for (int i = 0; i != EST_CONSOLE_HISTORY + 10; ++i)
        json_decref(render(snaps, 2, h, 120.0 + i));
    doc = render(snaps, 2, h, 1000.0);
    a = json_array_get(json_object_get(doc, "routes"), 0);
    assert_int_equal(json_array_size(json_object_get(a, "rps_history")), EST_CONSOLE_HISTORY - 1);
    assert_true(json_real_value(json_object_get(a, "rps")) == 0.0);
    /* no request in those intervals: no p99 for them, nor for the last minute */
    assert_int_equal(json_array_size(json_object_get(a, "p99_history")), EST_CONSOLE_HISTORY - 1);
    assert_true(json_is_null(json_array_get(json_object_get(a, "p99_history"), 0)));
    assert_true(json_is_null(json_object_get(a, "p99_ms_1m")));
    json_decref(doc);
    for (size_t i = 0; i != 2; ++i)
        est_metrics_snapshot_dispose(snaps + i);

    est_console_history_destroy(h);
    est_worker_metrics_dispose(&w1);
    est_worker_metrics_dispose(&w2);
}

static void test_quantile(void **state)
{
    uint64_t b[EST_METRICS_NUM_BUCKETS + 1] = {0};
    assert_true(est_console_quantile(b, 0.5) < 0);
    b[0] = 10; /* all in (0, 1 ms] */
    double q = est_console_quantile(b, 0.5);
    assert_true(q > 0.00049 && q < 0.00051);
    memset(b, 0, sizeof(b));
    b[EST_METRICS_NUM_BUCKETS] = 1; /* +Inf: the largest finite bound */
    assert_true(est_console_quantile(b, 0.99) == 5.0);
}

static void test_page_embedded(void **state)
{
    assert_true(est_console_html_len > 100);
    assert_memory_equal(est_console_html, "<!doctype html>", 15);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_state_sums_and_rates),
        cmocka_unit_test(test_quantile),
        cmocka_unit_test(test_page_embedded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

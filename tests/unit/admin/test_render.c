/*
 * Unit tests: Prometheus text rendering (sums over workers, label escaping, histogram
 * buckets), the access-log line builder (fields, JSON escaping, invalid UTF-8) and the
 * /config redaction.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>

#include "admin/accesslog.h"
#include "admin/admin.h"
#include "admin/metrics.h"

static est_metrics_snapshot_t make_snap(est_worker_metrics_t *m, const char *route)
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
    s.upstream_names[0] = strdup("users");
    s.upstreams = calloc(1, sizeof(*s.upstreams));
    s.upstreams[0].attempts_ok = 3;
    s.upstreams[0].attempts_failed[EST_UERR_CONNECT] = 1;
    s.upstreams[0].retries = 1;
    s.upstreams[0].conns_open = 2;
    s.upstreams[0].conns_idle = 1;
    s.dns.cache_hits = 5;
    s.dns.queries_ok = 1;
    s.open_connections = 4;
    return s;
}

static void assert_contains(const char *hay, const char *needle)
{
    if (strstr(hay, needle) == NULL)
        fail_msg("missing line: %s\n--- in ---\n%s", needle, hay);
}

static void test_render_sums_workers(void **state)
{
    const char *route = "/a/{id}\"\\\n";
    est_worker_metrics_t w1, w2;
    est_worker_metrics_init(&w1, 1);
    est_worker_metrics_init(&w2, 1);
    est_worker_metrics_record(&w1, 0, "GET", 3, 200, 0.003);
    est_worker_metrics_record(&w1, 0, "get", 3, 200, 0.2); /* methods are case-sensitive: OTHER */
    est_worker_metrics_record(&w2, 0, "GET", 3, 200, 7.0);
    est_worker_metrics_record(&w2, 0, "POST", 4, 502, 0.01);
    est_worker_metrics_record(&w2, SIZE_MAX, "BREW", 4, 404, 0.0001);
    est_metrics_snapshot_t snaps[3] = {make_snap(&w1, route), make_snap(&w2, route), {0}};
    est_process_metrics_t proc = {.workers = 3, .workers_missing = 1, .config_generation = 2, .reloads_ok = 1, .ready = 1};
    est_strbuf_t out = {0};
    est_metrics_render(&out, snaps, 3, &proc);

    assert_contains(out.base, "# TYPE estuary_requests_total counter\n");
    assert_contains(out.base, "estuary_requests_total{route=\"/a/{id}\\\"\\\\\\n\",method=\"GET\",status=\"200\"} 2\n");
    assert_contains(out.base, "estuary_requests_total{route=\"/a/{id}\\\"\\\\\\n\",method=\"OTHER\",status=\"200\"} 1\n");
    assert_contains(out.base, "estuary_requests_total{route=\"/a/{id}\\\"\\\\\\n\",method=\"POST\",status=\"502\"} 1\n");
    assert_contains(out.base, "estuary_requests_total{route=\"none\",method=\"OTHER\",status=\"404\"} 1\n");
    assert_contains(out.base, "# TYPE estuary_request_duration_seconds histogram\n");
    assert_contains(out.base, "estuary_request_duration_seconds_bucket{route=\"/a/{id}\\\"\\\\\\n\",le=\"0.001\"} 0\n");
    assert_contains(out.base, "estuary_request_duration_seconds_bucket{route=\"/a/{id}\\\"\\\\\\n\",le=\"0.005\"} 1\n");
    assert_contains(out.base, "estuary_request_duration_seconds_bucket{route=\"/a/{id}\\\"\\\\\\n\",le=\"0.01\"} 2\n");
    assert_contains(out.base, "estuary_request_duration_seconds_bucket{route=\"/a/{id}\\\"\\\\\\n\",le=\"0.25\"} 3\n");
    assert_contains(out.base, "estuary_request_duration_seconds_bucket{route=\"/a/{id}\\\"\\\\\\n\",le=\"5\"} 3\n");
    assert_contains(out.base, "estuary_request_duration_seconds_bucket{route=\"/a/{id}\\\"\\\\\\n\",le=\"+Inf\"} 4\n");
    assert_contains(out.base, "estuary_request_duration_seconds_count{route=\"/a/{id}\\\"\\\\\\n\"} 4\n");
    assert_contains(out.base, "estuary_upstream_attempts_total{upstream=\"users\",result=\"ok\"} 6\n");
    assert_contains(out.base, "estuary_upstream_attempts_total{upstream=\"users\",result=\"connect_failure\"} 2\n");
    assert_contains(out.base, "estuary_upstream_retries_total{upstream=\"users\"} 2\n");
    assert_contains(out.base, "estuary_upstream_connections{upstream=\"users\",state=\"open\"} 4\n");
    assert_contains(out.base, "estuary_upstream_connections{upstream=\"users\",state=\"idle\"} 2\n");
    assert_contains(out.base, "estuary_dns_cache_hits_total 10\n");
    assert_contains(out.base, "estuary_dns_queries_total{result=\"ok\"} 2\n");
    assert_contains(out.base, "estuary_client_connections 8\n");
    assert_contains(out.base, "estuary_workers 3\n");
    assert_contains(out.base, "estuary_workers_missing 1\n");
    assert_contains(out.base, "estuary_config_generation 2\n");
    assert_contains(out.base, "estuary_config_reloads_total{result=\"ok\"} 1\n");
    assert_contains(out.base, "estuary_config_reloads_total{result=\"error\"} 0\n");
    /* every line is a comment or "name[{...}] value" */
    for (char *line = out.base; *line != '\0';) {
        char *nl = strchr(line, '\n');
        assert_non_null(nl);
        assert_true(line[0] == '#' || (line[0] >= 'a' && line[0] <= 'z'));
        line = nl + 1;
    }

    est_strbuf_dispose(&out);
    for (size_t i = 0; i != 3; ++i)
        est_metrics_snapshot_dispose(snaps + i);
    est_worker_metrics_dispose(&w1);
    est_worker_metrics_dispose(&w2);
}

static void test_access_line(void **state)
{
    est_request_trace_t trace = {0};
    trace.num_exchanges = 2;
    trace.retries = 1;
    trace.exchanges[0] = (est_trace_exchange_t){"users", "10.0.0.1:80", 200, EST_UERR_NONE, 1, 3, 12};
    trace.exchanges[1] = (est_trace_exchange_t){"orders", "", 0, EST_UERR_TIMEOUT, 2, 0, 5000};
    const char path[] = "/a\"b\\c\n\x01\xc3\xa9\xff?q=1";
    est_access_entry_t e = {.time = {1700000000, 123456789},
                            .request_id = h2o_iovec_init(H2O_STRLIT("rid-1")),
                            .remote = "127.0.0.1:5000",
                            .method = h2o_iovec_init(H2O_STRLIT("GET")),
                            .path = h2o_iovec_init(path, sizeof(path) - 1),
                            .route = "/a/{x}",
                            .status = 200,
                            .bytes_sent = 42,
                            .duration_ms = 1.5,
                            .trace = &trace};
    est_strbuf_t out = {0};
    est_accesslog_build(&out, &e);
    assert_int_equal(out.base[out.len - 1], '\n');
    assert_null(memchr(out.base, '\n', out.len - 1));
    assert_string_equal(out.base,
                        "{\"time\":\"2023-11-14T22:13:20.123Z\",\"request_id\":\"rid-1\",\"remote\":\"127.0.0.1:5000\","
                        "\"method\":\"GET\",\"path\":\"/a\\\"b\\\\c\\n\\u0001\xc3\xa9\\ufffd?q=1\",\"route\":\"/a/{x}\","
                        "\"status\":200,\"bytes_sent\":42,\"duration_ms\":1.500,\"upstreams\":["
                        "{\"upstream\":\"users\",\"address\":\"10.0.0.1:80\",\"status\":200,\"connect_ms\":3,"
                        "\"duration_ms\":12,\"attempt\":1},"
                        "{\"upstream\":\"orders\",\"address\":null,\"status\":0,\"error\":\"timeout\",\"connect_ms\":0,"
                        "\"duration_ms\":5000,\"attempt\":2}],\"retries\":1}\n");
    json_error_t err;
    json_t *doc = json_loads(out.base, 0, &err);
    assert_non_null(doc);
    json_decref(doc);

    /* no route, no remote, no trace */
    est_access_entry_t e2 = {.request_id = h2o_iovec_init(H2O_STRLIT("x")), .method = h2o_iovec_init(H2O_STRLIT("BREW")),
                             .path = h2o_iovec_init(H2O_STRLIT("/"))};
    out.len = 0;
    est_accesslog_build(&out, &e2);
    assert_non_null(strstr(out.base, "\"remote\":null,\"method\":\"BREW\",\"path\":\"/\",\"route\":null,\"status\":0"));
    assert_non_null(strstr(out.base, "\"upstreams\":[],\"retries\":0}\n"));
    est_strbuf_dispose(&out);
}

static void test_redact(void **state)
{
    json_error_t err;
    json_t *in = json_loads("{\"listen\":[{\"port\":1,\"tls\":{\"certificate_file\":\"c.pem\",\"key_file\":\"k.pem\"}}],"
                            "\"x\":{\"client_secret\":\"s\",\"Password\":\"p\",\"api_key\":\"k\",\"token\":3,"
                            "\"keys\":{\"a\":1},\"url\":\"https://u:p@h:1/x@y\",\"plain\":\"http://h/a@b\","
                            "\"key\":\"client_ip\",\"credentials\":true,\"credential\":\"c\"}}",
                            0, &err);
    assert_non_null(in);
    json_t *out = est_admin_redact_config(in);
    char *s = json_dumps(out, JSON_COMPACT | JSON_SORT_KEYS);
    assert_string_equal(s, "{\"listen\":[{\"port\":1,\"tls\":{\"certificate_file\":\"c.pem\",\"key_file\":\"<redacted>\"}}],"
                           "\"x\":{\"Password\":\"<redacted>\",\"api_key\":\"<redacted>\",\"client_secret\":\"<redacted>\","
                           "\"credential\":\"<redacted>\",\"credentials\":true,\"key\":\"client_ip\",\"keys\":{\"a\":1},\"plain\":\"http://h/a@b\",\"token\":\"<redacted>\","
                           "\"url\":\"https://<redacted>@h:1/x@y\"}}");
    free(s);
    /* the input is untouched */
    assert_string_equal(json_string_value(json_object_get(json_object_get(json_array_get(json_object_get(in, "listen"), 0), "tls"),
                                                          "key_file")),
                        "k.pem");
    json_decref(out);
    json_decref(in);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_render_sums_workers), cmocka_unit_test(test_access_line),
                                       cmocka_unit_test(test_redact)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}

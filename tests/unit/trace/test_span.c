/*
 * Unit tests: trace contexts (continue / start / sampling), the headers an attempt sends, the
 * span ring (drop oldest, counted) and the OTLP/HTTP JSON encoding (checked with jansson).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>

#include "trace/span.h"

#define TP_OK "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
#define TP_UNSAMPLED "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"

static void test_continue(void **state)
{
    est_trace_sink_t s;
    assert_int_equal(est_trace_sink_init(&s, 0.0, NULL, NULL), 0);
    est_trace_ctx_t t;
    est_trace_begin(&t, &s, TP_OK, 55, "k=v", 3, 1000);
    assert_true(est_trace_sampled(&t)); /* the client's decision wins over ratio 0 */
    assert_int_equal(t.has_parent, 1);
    assert_int_equal(t.parent_id[7], 0xb7);
    assert_int_equal(t.trace_id[0], 0x4b);
    assert_non_null(t.tracestate);

    uint8_t span[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    char buf[256];
    assert_true(est_trace_headers_bound(&t) < sizeof(buf));
    size_t n = est_trace_write_headers(buf, &t, span);
    assert_true(n <= est_trace_headers_bound(&t));
    buf[n] = '\0';
    assert_string_equal(buf, "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-0102030405060708-01\r\ntracestate: k=v\r\n");

    est_trace_begin(&t, &s, TP_UNSAMPLED, 55, NULL, 0, 1000);
    assert_false(est_trace_sampled(&t));
    n = est_trace_write_headers(buf, &t, span);
    buf[n] = '\0';
    assert_string_equal(buf, "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-0102030405060708-00\r\n");
    /* not sampled: nothing recorded */
    est_trace_record_server(&t, 2000, "GET", 3, "/x", "/x", 2, 200);
    assert_int_equal(s.count, 0);
    est_trace_sink_dispose(&s);
}

static void test_start_and_ratio(void **state)
{
    est_trace_sink_t s;
    assert_int_equal(est_trace_sink_init(&s, 1.0, NULL, NULL), 0);
    est_trace_ctx_t t, u;
    est_trace_begin(&t, &s, "garbage", 7, "k=v", 3, 1000);
    assert_true(est_trace_sampled(&t));
    assert_int_equal(t.has_parent, 0);
    assert_null(t.tracestate); /* without a valid traceparent, tracestate is dropped */
    est_trace_begin(&u, &s, NULL, 0, NULL, 0, 1000);
    assert_memory_not_equal(t.trace_id, u.trace_id, 16);
    assert_memory_not_equal(t.span_id, u.span_id, 8);

    s.sample_ratio = 0.0;
    for (int i = 0; i != 1000; ++i) {
        est_trace_begin(&t, &s, NULL, 0, NULL, 0, 0);
        assert_false(est_trace_sampled(&t));
    }
    s.sample_ratio = 0.1;
    int sampled = 0;
    for (int i = 0; i != 10000; ++i) {
        est_trace_begin(&t, &s, NULL, 0, NULL, 0, 0);
        sampled += est_trace_sampled(&t);
    }
    assert_true(sampled > 800 && sampled < 1200);
    est_trace_sink_dispose(&s);
}

static void test_ring_drops_oldest(void **state)
{
    est_trace_sink_t s;
    uint64_t dropped = 0, exported = 0;
    assert_int_equal(est_trace_sink_init(&s, 1.0, &dropped, &exported), 0);
    int batches = 0;
    est_trace_ctx_t t;
    est_trace_begin(&t, &s, NULL, 0, NULL, 0, 0);
    uint8_t id[8] = {0};
    for (unsigned i = 0; i != EST_TRACE_RING_SIZE + 10; ++i) {
        est_trace_record_client(&t, id, 1, 2, "GET", 3, "users", "127.0.0.1:80", 200, i + 1, NULL);
        if (s.count == EST_TRACE_BATCH)
            batches++;
    }
    (void)batches;
    assert_int_equal(s.count, EST_TRACE_RING_SIZE);
    assert_int_equal(dropped, 10);
    assert_int_equal(est_trace_sink_at(&s, 0)->attempt, 11); /* the 10 oldest went */
    est_trace_sink_pop(&s, 100);
    assert_int_equal(s.count, EST_TRACE_RING_SIZE - 100);
    assert_int_equal(est_trace_sink_at(&s, 0)->attempt, 111);
    est_trace_sink_pop(&s, SIZE_MAX);
    assert_int_equal(s.count, 0);
    est_trace_sink_dispose(&s);
}

static int batch_calls;
static void on_batch(est_trace_sink_t *s)
{
    batch_calls++;
}

static void test_batch_callback(void **state)
{
    est_trace_sink_t s;
    assert_int_equal(est_trace_sink_init(&s, 1.0, NULL, NULL), 0);
    s.on_batch_ready = on_batch;
    est_trace_ctx_t t;
    est_trace_begin(&t, &s, NULL, 0, NULL, 0, 0);
    for (int i = 0; i != EST_TRACE_BATCH; ++i)
        est_trace_record_server(&t, 1, "GET", 3, NULL, "/", 1, 200);
    assert_int_equal(batch_calls, 1);
    est_trace_sink_dispose(&s);
}

static const char *attr(json_t *span, const char *key, const char *kind)
{
    json_t *a;
    size_t i;
    json_array_foreach(json_object_get(span, "attributes"), i, a) {
        if (strcmp(json_string_value(json_object_get(a, "key")), key) == 0)
            return json_string_value(json_object_get(json_object_get(a, "value"), kind));
    }
    return NULL;
}

static void test_otlp_json(void **state)
{
    est_trace_sink_t s;
    assert_int_equal(est_trace_sink_init(&s, 1.0, NULL, NULL), 0);
    est_trace_ctx_t t;
    est_trace_begin(&t, &s, TP_OK, 55, NULL, 0, 1700000000000000000ull);
    uint8_t id[8] = {0xaa, 1, 2, 3, 4, 5, 6, 7};
    est_trace_record_client(&t, id, 1700000000000000100ull, 1700000000000000200ull, "GET", 3, "us\"ers", "[::1]:8080", 503, 2,
                            NULL);
    est_trace_record_client(&t, id, 1, 2, "GET", 3, "users", "", 0, 3, "connect_failure");
    est_trace_record_server(&t, 1700000000000000300ull, "GET", 3, "/users/{id}", "/users/\xc3\xa9\n", 10, 502);

    est_trace_buf_t b = {0};
    assert_int_equal(est_trace_otlp_encode(&b, "edge", &s, 10), 0);
    json_error_t err;
    json_t *doc = json_loadb(b.base, b.len, 0, &err);
    if (doc == NULL)
        fail_msg("invalid JSON: %s in %s", err.text, b.base);
    json_t *rs = json_array_get(json_object_get(doc, "resourceSpans"), 0);
    json_t *res_attr = json_array_get(json_object_get(json_object_get(rs, "resource"), "attributes"), 0);
    assert_string_equal(json_string_value(json_object_get(res_attr, "key")), "service.name");
    assert_string_equal(json_string_value(json_object_get(json_object_get(res_attr, "value"), "stringValue")), "edge");
    json_t *ss = json_array_get(json_object_get(rs, "scopeSpans"), 0);
    assert_string_equal(json_string_value(json_object_get(json_object_get(ss, "scope"), "name")), "estuary");
    json_t *spans = json_object_get(ss, "spans");
    assert_int_equal(json_array_size(spans), 3);

    json_t *c1 = json_array_get(spans, 0), *c2 = json_array_get(spans, 1), *sv = json_array_get(spans, 2);
    assert_string_equal(json_string_value(json_object_get(c1, "traceId")), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_string_equal(json_string_value(json_object_get(c1, "spanId")), "aa01020304050607");
    assert_int_equal(json_integer_value(json_object_get(c1, "kind")), 3);
    assert_string_equal(json_string_value(json_object_get(c1, "startTimeUnixNano")), "1700000000000000100");
    assert_string_equal(json_string_value(json_object_get(c1, "name")), "GET us\"ers");
    assert_string_equal(attr(c1, "network.peer.address", "stringValue"), "::1");
    assert_string_equal(attr(c1, "network.peer.port", "intValue"), "8080");
    assert_string_equal(attr(c1, "http.response.status_code", "intValue"), "503");
    assert_string_equal(attr(c1, "http.request.resend_count", "intValue"), "1");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(c1, "status"), "code")), 2);
    assert_string_equal(attr(c2, "error.type", "stringValue"), "connect_failure");
    assert_null(attr(c2, "http.response.status_code", "intValue"));
    assert_null(attr(c2, "network.peer.address", "stringValue"));
    /* the server span: child of the client's span; its id is every client span's parent */
    assert_int_equal(json_integer_value(json_object_get(sv, "kind")), 2);
    assert_string_equal(json_string_value(json_object_get(sv, "parentSpanId")), "00f067aa0ba902b7");
    assert_string_equal(json_string_value(json_object_get(sv, "spanId")), json_string_value(json_object_get(c1, "parentSpanId")));
    assert_string_equal(json_string_value(json_object_get(sv, "name")), "GET /users/{id}");
    assert_string_equal(attr(sv, "http.route", "stringValue"), "/users/{id}");
    assert_string_equal(attr(sv, "http.request.method", "stringValue"), "GET");
    assert_string_equal(attr(sv, "url.path", "stringValue"), "/users/\xc3\x83\xc2\xa9\n"); /* bytes escaped one by one */
    assert_int_equal(json_integer_value(json_object_get(json_object_get(sv, "status"), "code")), 2);
    json_decref(doc);

    /* n is bounded by what is queued; an empty batch is still a valid document */
    b.len = 0;
    est_trace_sink_pop(&s, SIZE_MAX);
    assert_int_equal(est_trace_otlp_encode(&b, "e", &s, 5), 0);
    doc = json_loadb(b.base, b.len, 0, &err);
    assert_non_null(doc);
    json_decref(doc);
    est_trace_buf_dispose(&b);
    est_trace_sink_dispose(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_continue),       cmocka_unit_test(test_start_and_ratio), cmocka_unit_test(test_ring_drops_oldest),
        cmocka_unit_test(test_batch_callback), cmocka_unit_test(test_otlp_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* estuary - unit tests for est_json_dumps_compact and est_error_body
 * (src/aggregate/jsonutil.c) */
#include <math.h>
#include "helpers.h"

/* without reals, the output is byte for byte jansson's json_dumps(v, 0) */
static const char *same_as_jansson[] = {
    "{}",
    "[]",
    "{\"a\": {}, \"b\": [], \"c\": [[], {}]}",
    "{\"z\": 1, \"a\": 2, \"m\": {\"y\": null, \"b\": true, \"a\": false}}",
    "[\"quote \\\" backslash \\\\ slash / tab \\t nl \\n cr \\r bs \\b ff \\f\"]",
    "[\"\\u0001\\u001f\\u007f \\u00e9 \\u20ac \\ud83d\\ude00\"]",
    "{\"k\\\"ey\\n\": \"v\"}",
    "[-9223372036854775808, 9223372036854775807, 0, -1]",
    "\"scalar\"",
    "17",
};

static void test_dump_like_jansson(void **state)
{
    for (size_t i = 0; i < sizeof(same_as_jansson) / sizeof(same_as_jansson[0]); ++i) {
        json_t *v = test_parse(same_as_jansson[i]);
        char *want = json_dumps(v, JSON_ENCODE_ANY);
        size_t len;
        char *got = est_json_dumps_compact(v, &len);
        assert_non_null(want);
        assert_non_null(got);
        assert_string_equal(got, want);
        assert_int_equal(len, strlen(want));
        free(want);
        free(got);
        json_decref(v);
    }
}

struct real_case {
    double d;
    const char *text;
};

static const struct real_case real_cases[] = {
    {0.1, "0.1"},
    {9.95, "9.95"},
    {2.5, "2.5"},
    {1e5, "100000.0"},
    {-0.0, "-0.0"},
    {0.30000000000000004, "0.30000000000000004"},
    {1700000000.123456, "1700000000.123456"},
    {1e300, "1e+300"},
    {-1.5e-7, "-1.5e-07"},
    {1.7976931348623157e308, "1.7976931348623157e+308"},
    {5e-324, "4.94065645841247e-324"}, /* reads back as 5e-324 */
    {123456789012345678.0, "1.2345678901234568e+17"},
};

static void test_dump_reals(void **state)
{
    for (size_t i = 0; i < sizeof(real_cases) / sizeof(real_cases[0]); ++i) {
        json_t *v = json_real(real_cases[i].d);
        size_t len;
        char *got = est_json_dumps_compact(v, &len);
        assert_non_null(got);
        if (strcmp(got, real_cases[i].text) != 0)
            fail_msg("real %zu: got %s, expected %s", i, got, real_cases[i].text);
        free(got);
        json_decref(v);
    }
    /* every double reads back exactly */
    srand(42);
    for (int i = 0; i < 100000; ++i) {
        uint64_t bits = ((uint64_t)rand() << 42) ^ ((uint64_t)rand() << 21) ^ (uint64_t)rand();
        double d;
        memcpy(&d, &bits, sizeof(d));
        if (!isfinite(d))
            continue;
        json_t *v = json_real(d);
        char *got = est_json_dumps_compact(v, NULL);
        assert_non_null(got);
        json_t *back = test_parse(got);
        if (json_real_value(back) != d)
            fail_msg("%s does not read back as %.17g", got, d);
        free(got);
        json_decref(back);
        json_decref(v);
    }
}

static void test_dump_large(void **state)
{
    json_t *arr = json_array();
    for (int i = 0; i < 200000; ++i)
        json_array_append_new(arr, json_pack("{s:i, s:s}", "id", i, "name", "some name"));
    size_t len;
    char *got = est_json_dumps_compact(arr, &len);
    char *want = json_dumps(arr, 0);
    assert_non_null(got);
    assert_int_equal(len, strlen(want));
    assert_memory_equal(got, want, len);
    free(got);
    free(want);
    json_decref(arr);
}

static void test_error_body(void **state)
{
    size_t len;
    char *s = est_error_body(504, "upstream_timeout", "upstream 'users' did not answer within 3s", "abc-123", &len);
    assert_string_equal(s, "{\"error\": {\"status\": 504, \"code\": \"upstream_timeout\", \"message\": \"upstream 'users' did not "
                           "answer within 3s\", \"request_id\": \"abc-123\"}}");
    assert_int_equal(len, strlen(s));
    json_t *v = test_parse(s);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(v, "error"), "status")), 504);
    json_decref(v);
    free(s);

    s = est_error_body(400, "bad_request", "bad \"quote\" \\ and\nnewline \x01", NULL, &len);
    assert_string_equal(
        s, "{\"error\": {\"status\": 400, \"code\": \"bad_request\", \"message\": \"bad \\\"quote\\\" \\\\ and\\nnewline "
           "\\u0001\"}}");
    assert_int_equal(len, strlen(s));
    free(s);

    s = est_error_body(404, "route_not_found", NULL, "r1", NULL);
    assert_string_equal(s, "{\"error\": {\"status\": 404, \"code\": \"route_not_found\", \"request_id\": \"r1\"}}");
    free(s);
}

/* string escaping, word at a time: the same bytes as jansson's json_dumps for every length
 * and every position of a byte to escape, and for random UTF-8 strings (keys and values) */
static void check_string_like_jansson(const char *str, size_t n)
{
    json_t *v = json_array();
    json_t *o = json_object();
    assert_int_equal(json_array_append_new(v, json_stringn(str, n)), 0);
    assert_int_equal(json_object_setn_new(o, str, n, json_stringn(str, n)), 0);
    assert_int_equal(json_array_append_new(v, o), 0);
    char *want = json_dumps(v, 0);
    size_t len;
    char *got = est_json_dumps_compact(v, &len);
    assert_non_null(want);
    assert_non_null(got);
    if (strcmp(got, want) != 0)
        fail_msg("string of %zu bytes:\n  got  %s\n  want %s", n, got, want);
    assert_int_equal(len, strlen(want));
    free(want);
    free(got);
    json_decref(v);
}

static void test_dump_strings(void **state)
{
    static const char dirty[] = {'"', '\\', '\n', '\x01', '\x1f', '\t', 0};
    char buf[80];
    for (size_t n = 0; n <= 40; ++n) {
        memset(buf, 'a', n);
        check_string_like_jansson(buf, n);
        for (size_t pos = 0; pos < n; ++pos)
            for (size_t d = 0; d < sizeof(dirty); ++d) {
                memset(buf, 'a', n);
                buf[pos] = dirty[d];
                if (dirty[d] == 0 && pos + 1 < n)
                    buf[n - 1] = '\x7f'; /* NUL inside, DEL (not escaped) at the end */
                check_string_like_jansson(buf, n);
            }
    }
    static const char *pieces[] = {"a",  "Z",  " ",  "/",    "~",   "\x7f", "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80",
                                   "\"", "\\", "\n", "\x1f", "\x00"};
    srand(7);
    for (int i = 0; i < 50000; ++i) {
        size_t n = 0, want_len = (size_t)(rand() % 24);
        while (n < want_len) {
            int r = rand() % 100; /* mostly plain ASCII, as real replies */
            const char *piece = r < 80 ? pieces[r % 5] : pieces[5 + r % 9];
            size_t pl = piece[0] == '\0' ? 1 : strlen(piece);
            memcpy(buf + n, piece, pl);
            n += pl;
        }
        check_string_like_jansson(buf, n);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dump_like_jansson), cmocka_unit_test(test_dump_reals), cmocka_unit_test(test_dump_large),
        cmocka_unit_test(test_dump_strings),      cmocka_unit_test(test_error_body),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

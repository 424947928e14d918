/*
 * Unit tests: value syntaxes of the config file (durations, sizes, methods) and the
 * error list.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "config/config.h"

static void test_duration_valid(void **state)
{
    static const struct {
        const char *in;
        uint64_t ms;
    } cases[] = {
        {"0s", 0},          {"0ms", 0},        {"250ms", 250},       {"5s", 5000},         {"1m", 60000},
        {"1m30s", 90000},   {"1h", 3600000},   {"2h30m", 9000000},   {"1s500ms", 1500},    {"1h1m1s1ms", 3661001},
        {"90s", 90000},     {"007s", 7000},    {"1500ms", 1500},     {"300s", 300000},
        {"5124095576030h", 5124095576030ULL * 3600000}, /* close to the uint64 limit */
        {"5124095576030h25m", 5124095576030ULL * 3600000 + 25 * 60000},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint64_t ms = 12345;
        if (est_parse_duration(cases[i].in, &ms) != 0)
            fail_msg("\"%s\" rejected", cases[i].in);
        if (ms != cases[i].ms)
            fail_msg("\"%s\" -> %llu, want %llu", cases[i].in, (unsigned long long)ms, (unsigned long long)cases[i].ms);
    }
}

static void test_duration_malformed(void **state)
{
    static const char *const cases[] = {
        "",       "5",      "s",       "5 s",    " 5s",     "5s ",     "-5s",      "+5s",   "1.5s",   "5S",    "5sec",
        "5d",     "1s1s",   "30s1m",   "1ms1s",  "1m1h",    "5ms5ms",  "1m30",     "m5",    "5us",    "0x10s", "1s 500ms",
        "18446744073709551616ms", "18446744073709551615s", "99999999999999999999h", "5124095576031h", "5124095576030h26m",
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint64_t ms = 777;
        if (est_parse_duration(cases[i], &ms) == 0)
            fail_msg("\"%s\" accepted as %llu", cases[i], (unsigned long long)ms);
        assert_int_equal(ms, 777); /* untouched on failure */
    }
    uint64_t ms;
    assert_int_equal(est_parse_duration(NULL, &ms), -1);
}

static void test_format_duration(void **state)
{
    static const struct {
        uint64_t ms;
        const char *out;
    } cases[] = {
        {0, "0s"}, {1, "1ms"}, {250, "250ms"}, {1000, "1s"}, {1500, "1s500ms"}, {60000, "1m"}, {90000, "1m30s"}, {3600000, "1h"}, {3661001, "1h1m1s1ms"},
    };
    char buf[64];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        est_format_duration(cases[i].ms, buf, sizeof(buf));
        assert_string_equal(buf, cases[i].out);
        /* and it parses back */
        uint64_t back;
        assert_int_equal(est_parse_duration(buf, &back), 0);
        assert_int_equal(back, cases[i].ms);
    }
    est_format_duration(3661001, buf, 4); /* truncated, still terminated */
    assert_int_equal(strlen(buf), 3);
}

static void test_size_valid(void **state)
{
    static const struct {
        const char *in;
        uint64_t bytes;
    } cases[] = {
        {"0", 0}, {"1", 1}, {"1048576", 1048576}, {"1KiB", 1024}, {"512KiB", 524288}, {"1MiB", 1048576}, {"8MiB", 8388608},
        {"2GiB", 2147483648ULL}, {"0MiB", 0}, {"18446744073709551615", UINT64_MAX},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint64_t b = 99;
        if (est_parse_size_string(cases[i].in, &b) != 0)
            fail_msg("\"%s\" rejected", cases[i].in);
        assert_int_equal(b, cases[i].bytes);
    }
}

static void test_size_malformed(void **state)
{
    static const char *const cases[] = {
        "",   "MiB", "1 MiB", "1mib", "1MB", "1M", "1KB", "1kib", "-1", "+1", "1.5MiB", "1MiBs", "1TiB", "1B", " 1", "1 ",
        "18446744073709551616", "17179869184GiB", "0x10",
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint64_t b = 99;
        if (est_parse_size_string(cases[i], &b) == 0)
            fail_msg("\"%s\" accepted as %llu", cases[i], (unsigned long long)b);
        assert_int_equal(b, 99);
    }
}

static void test_methods(void **state)
{
    static const struct {
        const char *name;
        unsigned bit;
    } cases[] = {
        {"GET", EST_METHOD_GET},       {"get", EST_METHOD_GET},     {"Get", EST_METHOD_GET},         {"HEAD", EST_METHOD_HEAD},
        {"post", EST_METHOD_POST},     {"PUT", EST_METHOD_PUT},     {"pAtCh", EST_METHOD_PATCH},     {"DELETE", EST_METHOD_DELETE},
        {"options", EST_METHOD_OPTIONS}, {"FETCH", 0},              {"GETS", 0},                     {"GE", 0},
        {"", 0},                       {"CONNECT", 0},              {"TRACE", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        assert_int_equal(est_method_from_name(cases[i].name, strlen(cases[i].name)), cases[i].bit);
    /* the length bounds the name: "GETX" with len 3 is GET */
    assert_int_equal(est_method_from_name("GETX", 3), EST_METHOD_GET);

    for (unsigned i = 0; i < EST_METHOD__COUNT; i++) {
        const char *n = est_method_name(1u << i);
        assert_non_null(n);
        assert_int_equal(est_method_from_name(n, strlen(n)), 1u << i);
    }
    assert_null(est_method_name(1u << EST_METHOD__COUNT));
}

static void test_errors(void **state)
{
    est_errors_t errs = {0};
    est_errors_add(&errs, "%s:%d:%d: %s", "a.json", 1, 2, "first");
    est_errors_add(&errs, "second %d", 2);
    assert_int_equal(errs.count, 2);
    assert_string_equal(errs.items[0], "a.json:1:2: first");
    assert_string_equal(errs.items[1], "second 2");
    est_errors_clear(&errs);
    assert_int_equal(errs.count, 0);
    assert_null(errs.items);
    est_errors_clear(&errs); /* idempotent */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_duration_valid), cmocka_unit_test(test_duration_malformed), cmocka_unit_test(test_format_duration),
        cmocka_unit_test(test_size_valid),     cmocka_unit_test(test_size_malformed),     cmocka_unit_test(test_methods),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

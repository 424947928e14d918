/*
 * Unit tests: W3C Trace Context traceparent parsing/formatting and tracestate checks
 * (https://www.w3.org/TR/trace-context/ §3.2, §3.3, §4.3).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "trace/traceparent.h"

#define TP_OK "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

static int parse(const char *s, est_traceparent_t *tp)
{
    return est_traceparent_parse(s, strlen(s), tp);
}

static void test_valid(void **state)
{
    est_traceparent_t tp;
    assert_int_equal(parse(TP_OK, &tp), 0);
    assert_int_equal(tp.trace_id[0], 0x4b);
    assert_int_equal(tp.trace_id[15], 0x36);
    assert_int_equal(tp.parent_id[0], 0x00);
    assert_int_equal(tp.parent_id[7], 0xb7);
    assert_int_equal(tp.flags, 1);
    assert_int_equal(parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", &tp), 0);
    assert_int_equal(tp.flags, 0);
    /* unknown flags are read (and ignored by the caller) */
    assert_int_equal(parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03", &tp), 0);
    assert_int_equal(tp.flags, 3);
    /* a later version: the first four fields, followed by nothing or "-..." */
    assert_int_equal(parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", &tp), 0);
    assert_int_equal(parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds", &tp), 0);
    assert_int_equal(tp.flags, 1);
}

static void test_invalid(void **state)
{
    static const char *const bad[] = {
        "",
        "00",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",   /* short */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-", /* version 00 is exactly 55 */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 ",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", /* upper-case hex */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01", /* zero trace id */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", /* zero parent id */
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", /* version ff */
        "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
        "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x", /* later version: '-' must follow */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-g1",
    };
    est_traceparent_t tp = {{0}};
    for (size_t i = 0; i != sizeof(bad) / sizeof(bad[0]); ++i) {
        if (parse(bad[i], &tp) != -1)
            fail_msg("accepted \"%s\"", bad[i]);
    }
    assert_int_equal(est_traceparent_parse(NULL, 0, &tp), -1);
    /* NUL inside: the length counts */
    char with_nul[56];
    memcpy(with_nul, TP_OK, 55);
    with_nul[20] = '\0';
    assert_int_equal(est_traceparent_parse(with_nul, 55, &tp), -1);
}

static void test_format(void **state)
{
    est_traceparent_t tp;
    assert_int_equal(parse(TP_OK, &tp), 0);
    char out[EST_TRACEPARENT_LEN + 1];
    est_traceparent_format(out, tp.trace_id, tp.parent_id, tp.flags);
    out[EST_TRACEPARENT_LEN] = '\0';
    assert_string_equal(out, TP_OK);
    uint8_t span[8] = {0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3};
    est_traceparent_format(out, tp.trace_id, span, 0);
    assert_string_equal(out, "00-4bf92f3577b34da6a3ce929d0e0e4736-deadbeef00010203-00");
    est_traceparent_t back;
    assert_int_equal(parse(out, &back), 0);
    assert_memory_equal(back.parent_id, span, 8);
}

static void test_tracestate(void **state)
{
    assert_true(est_tracestate_ok("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE", 39));
    assert_true(est_tracestate_ok("a=b,\tc=d", 8));
    assert_false(est_tracestate_ok("", 0));
    assert_false(est_tracestate_ok(NULL, 3));
    assert_false(est_tracestate_ok("a=b\r\nx: y", 10));
    assert_false(est_tracestate_ok("a=\x80", 3));
    char big[EST_TRACESTATE_MAX + 1];
    memset(big, 'a', sizeof(big));
    assert_true(est_tracestate_ok(big, EST_TRACESTATE_MAX));
    assert_false(est_tracestate_ok(big, EST_TRACESTATE_MAX + 1));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),
        cmocka_unit_test(test_invalid),
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_tracestate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

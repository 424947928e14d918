/*
 * Unit tests: comma-separated lists, decimals and Content-Length (common/fieldvalue.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "common/fieldvalue.h"

#define S(lit) lit, sizeof(lit) - 1

static void test_list_next_trims_and_keeps_empty(void **state)
{
    (void)state;
    const char v[] = " a ,\tb\t,, c";
    const char *cur = v, *el;
    size_t n;
    const char *want[] = {"a", "b", "", "c"};
    for (size_t i = 0; i != 4; ++i) {
        assert_true(est_list_next(&cur, v + sizeof(v) - 1, &el, &n));
        assert_int_equal(n, strlen(want[i]));
        assert_memory_equal(el, want[i], n);
    }
    assert_null(cur);
    assert_false(est_list_next(&cur, v + sizeof(v) - 1, &el, &n));

    /* an empty value is one empty element; a trailing comma adds one */
    const char t[] = "x,";
    cur = t;
    assert_true(est_list_next(&cur, t + 2, &el, &n));
    assert_int_equal(n, 1);
    assert_true(est_list_next(&cur, t + 2, &el, &n));
    assert_int_equal(n, 0);
    assert_false(est_list_next(&cur, t + 2, &el, &n));
    cur = t;
    assert_true(est_list_next(&cur, t, &el, &n));
    assert_int_equal(n, 0);
    assert_false(est_list_next(&cur, t, &el, &n));
}

static void test_list_has_token(void **state)
{
    (void)state;
    assert_true(est_list_has_token(S("keep-alive, Close"), S("close")));
    assert_true(est_list_has_token(S(",,close ,"), S("close")));
    assert_false(est_list_has_token(S("closed, xclose"), S("close")));
    assert_false(est_list_has_token(S("close x"), S("close"))); /* one element "close x" */
    assert_false(est_list_has_token(S(""), S("close")));
    assert_false(est_list_has_token(S(", ,"), "", 0));
}

static void test_parse_decimal(void **state)
{
    (void)state;
    uint64_t v = 7;
    assert_int_equal(est_parse_decimal(S("0"), &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(est_parse_decimal(S("18446744073709551615"), &v), 0);
    assert_true(v == UINT64_MAX);
    assert_int_equal(est_parse_decimal(S("18446744073709551616"), &v), -1);
    assert_int_equal(est_parse_decimal(S("99999999999999999999"), &v), -1);
    assert_int_equal(est_parse_decimal(S(""), &v), -1);
    assert_int_equal(est_parse_decimal(S("+1"), &v), -1);
    assert_int_equal(est_parse_decimal(S("1 "), &v), -1);
    assert_int_equal(est_parse_decimal(S("0x1"), &v), -1);
    assert_int_equal(est_parse_decimal("1\xb0", 2, &v), -1); /* a high byte is no digit */
}

static void test_content_length(void **state)
{
    (void)state;
    uint64_t v = 0;
    assert_int_equal(est_parse_content_length(S("42"), &v), 0);
    assert_int_equal(v, 42);
    assert_int_equal(est_parse_content_length(S("5, 5 ,5"), &v), 0);
    assert_int_equal(v, 5);
    assert_int_equal(est_parse_content_length(S("5, 6"), &v), -2);
    assert_int_equal(est_parse_content_length(S("5,,5"), &v), -1);
    assert_int_equal(est_parse_content_length(S(""), &v), -1);
    assert_int_equal(est_parse_content_length(S("-1"), &v), -1);
    assert_int_equal(est_parse_content_length(S("1 2"), &v), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_list_next_trims_and_keeps_empty),
        cmocka_unit_test(test_list_has_token),
        cmocka_unit_test(test_parse_decimal),
        cmocka_unit_test(test_content_length),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

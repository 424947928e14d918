/*
 * Unit tests: HTTP methods as a bit set (common/method.c).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "common/method.h"

static void test_from_request_is_case_sensitive(void **state)
{
    (void)state;
    assert_int_equal(est_method_from_request("GET", 3), EST_METHOD_GET);
    assert_int_equal(est_method_from_request("OPTIONS", 7), EST_METHOD_OPTIONS);
    assert_int_equal(est_method_from_request("GETX", 3), EST_METHOD_GET); /* the length bounds the name */
    assert_int_equal(est_method_from_request("get", 3), 0);
    assert_int_equal(est_method_from_request("Post", 4), 0);
    assert_int_equal(est_method_from_request("GETS", 4), 0);
    assert_int_equal(est_method_from_request("GE", 2), 0);
    assert_int_equal(est_method_from_request("", 0), 0);
    assert_int_equal(est_method_from_request("CONNECT", 7), 0);
}

static void test_names_round_trip(void **state)
{
    (void)state;
    for (unsigned i = 0; i < EST_METHOD__COUNT; i++) {
        const char *n = est_method_name(1u << i);
        assert_non_null(n);
        assert_int_equal(est_method_from_request(n, strlen(n)), 1u << i);
    }
    assert_string_equal(est_method_name(EST_METHOD_PATCH), "PATCH");
    assert_null(est_method_name(0));
    assert_null(est_method_name(EST_METHOD_GET | EST_METHOD_HEAD));
    assert_null(est_method_name(1u << EST_METHOD__COUNT));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_from_request_is_case_sensitive),
        cmocka_unit_test(test_names_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

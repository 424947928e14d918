/*
 * Unit tests: the optional top-level "access_log" key (stderr, off, file path resolved
 * against the config file's folder) and its errors.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"

#define F "no-such-dir.est/t.json"

static est_config_t *load(const char *text, est_errors_t *errs)
{
    return est_config_load_buffer(F, text, strlen(text), errs);
}

static void test_values(void **state)
{
    est_errors_t errs = {0};
    est_config_t *c = load("{}", &errs);
    assert_non_null(c);
    assert_null(c->access_log);
    assert_int_equal(c->access_log_off, 0);
    est_config_free(c);

    c = load("{\"access_log\": \"stderr\"}", &errs);
    assert_non_null(c);
    assert_null(c->access_log);
    assert_int_equal(c->access_log_off, 0);
    est_config_free(c);

    c = load("{\"access_log\": \"off\"}", &errs);
    assert_non_null(c);
    assert_int_equal(c->access_log_off, 1);
    est_config_free(c);

    c = load("{\"access_log\": \"logs/access.log\"}", &errs);
    assert_non_null(c);
    assert_string_equal(c->access_log, "no-such-dir.est/logs/access.log");
    est_config_free(c);

    c = load("{\"access_log\": \"/var/log/estuary.log\"}", &errs);
    assert_non_null(c);
    assert_string_equal(c->access_log, "/var/log/estuary.log");
    est_config_free(c);
    assert_int_equal(errs.count, 0);
}

static void test_errors(void **state)
{
    est_errors_t errs = {0};
    assert_null(load("{\"access_log\": 1}", &errs));
    assert_int_equal(errs.count, 1);
    assert_string_equal(errs.items[0], F ":1:16: access_log: expected a string, got an integer");
    est_errors_clear(&errs);
    assert_null(load("{\"access_log\": \"\"}", &errs));
    assert_int_equal(errs.count, 1);
    assert_string_equal(errs.items[0], F ":1:16: access_log: must not be empty");
    est_errors_clear(&errs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_values), cmocka_unit_test(test_errors)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * Shared by the config unit tests: valid configs that must load without an error, malformed
 * ones and the exact "FILE:LINE:COL: message" lines each must give, in order (include after
 * <cmocka.h>).
 */
#ifndef EST_TEST_CONFIG_HELPERS_H
#define EST_TEST_CONFIG_HELPERS_H

#include <stdio.h>
#include <string.h>
#include "config/config.h"

typedef struct bad_case {
    const char *name;
    const char *text;
    const char *errors[24]; /* in order, NULL-terminated */
} bad_case_t;

/* returns 1 when the case fails (after printing why); `file` names the text in messages */
static int run_bad_case(const char *file, const bad_case_t *bc)
{
    est_errors_t errs = {0};
    size_t want = 0, n;
    est_config_t *conf = est_config_load_buffer(file, bc->text, strlen(bc->text), &errs);
    while (want < sizeof(bc->errors) / sizeof(bc->errors[0]) && bc->errors[want] != NULL)
        want++;
    int bad = conf != NULL || errs.count != want;
    n = errs.count > want ? errs.count : want;
    for (size_t i = 0; i < n; i++) {
        const char *got = i < errs.count ? errs.items[i] : "(none)", *exp = i < want ? bc->errors[i] : "(none)";
        if (strcmp(got, exp) != 0) {
            print_error("[%s] error %zu\n  want: %s\n  got:  %s\n", bc->name, i, exp, got);
            bad = 1;
        }
    }
    est_config_free(conf);
    est_errors_clear(&errs);
    if (bad)
        print_error("case \"%s\" failed (%zu errors, want %zu)\n", bc->name, n, want);
    return bad;
}

/* loads `text` (named `file` in messages); fails the test when it gives any error */
static inline est_config_t *load_ok(const char *file, const char *text)
{
    est_errors_t errs = {0};
    est_config_t *conf = est_config_load_buffer(file, text, strlen(text), &errs);
    for (size_t i = 0; i < errs.count; i++)
        print_error("unexpected: %s\n", errs.items[i]);
    if (conf == NULL || errs.count != 0)
        fail_msg("config rejected: %s", text);
    est_errors_clear(&errs);
    return conf;
}

/* fails the test when any case does not give exactly its errors */
static void run_bad_cases(const char *file, const bad_case_t *cases, size_t num)
{
    size_t failed = 0;
    for (size_t i = 0; i < num; i++)
        failed += run_bad_case(file, &cases[i]);
    if (failed != 0)
        fail_msg("%zu of %zu malformed configs did not give the expected errors", failed, num);
}

#endif

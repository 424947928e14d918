#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "policy/apikeys.h"

/* sha256("hashed-key-1") in hex (sha256sum), upper case: either case is accepted */
#define HASHED_KEY_1 "FD2E16548FD953437AF2EA091AAB6106246868DE7E4D95A956A6FBEB96B3F30C"

static int has(const est_apikeys_t *k, const char *key)
{
    return est_apikeys_check(k, key, strlen(key));
}

static void test_parse(void **state)
{
    const char *text = "# partners\n"
                       "\n"
                       "plain-key-1\n"
                       "   spaced-key  \r\n"
                       "\t# indented comment\n" HASHED_KEY_1 "\n"
                       "last-key-no-newline";
    char err[128];
    est_apikeys_t *k = est_apikeys_parse(text, strlen(text), err, sizeof(err));
    assert_non_null(k);
    assert_int_equal(est_apikeys_count(k), 4);
    assert_true(has(k, "plain-key-1"));
    assert_true(has(k, "spaced-key"));
    assert_true(has(k, "hashed-key-1"));
    assert_true(has(k, "last-key-no-newline"));
    assert_false(has(k, HASHED_KEY_1)); /* the digest itself is not a key */
    assert_false(has(k, "plain-key-"));
    assert_false(has(k, "plain-key-12"));
    assert_false(has(k, " spaced-key"));
    assert_false(has(k, "# partners"));
    assert_false(has(k, ""));
    est_apikeys_free(k);

    /* empty file: a set of no keys, accepting nothing */
    k = est_apikeys_parse("", 0, err, sizeof(err));
    assert_non_null(k);
    assert_false(has(k, "x"));
    est_apikeys_free(k);
}

static void test_bounds(void **state)
{
    char err[128];
    char *line = malloc(EST_APIKEYS_MAX_LINE + 2);
    memset(line, 'k', EST_APIKEYS_MAX_LINE + 1);
    line[EST_APIKEYS_MAX_LINE + 1] = '\n';
    assert_null(est_apikeys_parse(line, EST_APIKEYS_MAX_LINE + 2, err, sizeof(err)));
    assert_string_equal(err, "1: line too long");
    est_apikeys_t *k = est_apikeys_parse(line + 1, EST_APIKEYS_MAX_LINE + 1, err, sizeof(err));
    assert_non_null(k);
    assert_true(est_apikeys_check(k, line + 1, EST_APIKEYS_MAX_LINE));
    assert_false(est_apikeys_check(k, line, EST_APIKEYS_MAX_LINE + 1)); /* over the bound */
    est_apikeys_free(k);
    free(line);

    const char nul[] = "a\0b\n";
    assert_null(est_apikeys_parse(nul, sizeof(nul) - 1, err, sizeof(err)));

    /* too many keys */
    size_t n = (size_t)EST_APIKEYS_MAX_KEYS + 1, cap = n * 8;
    char *many = malloc(cap), *p = many;
    for (size_t i = 0; i < n; i++)
        p += sprintf(p, "k%zu\n", i);
    assert_null(est_apikeys_parse(many, (size_t)(p - many), err, sizeof(err)));
    k = est_apikeys_parse(many, (size_t)(p - many) - strlen("k100000\n"), err, sizeof(err));
    assert_non_null(k);
    assert_int_equal(est_apikeys_count(k), EST_APIKEYS_MAX_KEYS);
    assert_true(has(k, "k99999"));
    assert_false(has(k, "k100000"));
    est_apikeys_free(k);
    free(many);
}

static void test_load(void **state)
{
    char path[] = "/tmp/est-apikeys-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *text = "file-key\n" HASHED_KEY_1 "\n";
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    char err[256];
    est_apikeys_t *k = est_apikeys_load(path, err, sizeof(err));
    assert_non_null(k);
    assert_true(has(k, "file-key"));
    assert_true(has(k, "hashed-key-1"));
    est_apikeys_free(k);
    unlink(path);
    assert_null(est_apikeys_load(path, err, sizeof(err)));
    assert_non_null(strstr(err, "No such file"));
    assert_null(est_apikeys_load("/tmp", err, sizeof(err)));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_load),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

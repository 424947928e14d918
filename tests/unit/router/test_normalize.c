/* estuary - unit tests for est_path_normalize (src/router/router.c) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "router/router.h"

struct norm_case {
    const char *in;
    const char *out; /* NULL: -1 expected */
};

static const struct norm_case norm_cases[] = {
    {"/", "/"},
    {"/a/b", "/a/b"},
    {"/a/b/", "/a/b/"},           /* trailing slash stays */
    {"/a//b", "/a//b"},           /* empty segments stay */
    {"//", "//"},
    {"/a/./b", "/a/b"},
    {"/a/.", "/a/"},
    {"/.", "/"},
    {"/./a", "/a"},
    {"/a/b/../c", "/a/c"},
    {"/a/b/..", "/a/"},
    {"/a/..", "/"},
    {"/a/../", "/"},
    {"/a//..", "/a/"},
    {"/a/b/./../c/", "/a/c/"},
    {"/a/b/c/../../d", "/a/d"},
    {"/..", NULL},                /* climbs above the root */
    {"/../a", NULL},
    {"/a/../..", NULL},
    {"/a/../../b", NULL},
    {"/./..", NULL},
    /* percent-encoded dots are dots */
    {"/a/%2e/b", "/a/b"},
    {"/a/%2E/b", "/a/b"},
    {"/a/b/%2E%2e/c", "/a/c"},
    {"/a/b/.%2E", "/a/"},
    {"/a/b/%2e.", "/a/"},
    {"/%2e%2e", NULL},
    {"/%2E%2E/etc/passwd", NULL},
    {"/a/%2e%2e/%2e%2e", NULL},
    /* not dot segments */
    {"/a/...", "/a/..."},
    {"/a/%2e%2e%2e", "/a/%2e%2e%2e"},
    {"/a/.b", "/a/.b"},
    {"/a/b.", "/a/b."},
    {"/a/%2", "/a/%2"},
    {"/a/%2f", "/a/%2f"},
    {"/a/%252e", "/a/%252e"},     /* double-encoded: left alone, it is not a dot */
    {"/a/%2F../b", "/a/%2F../b"}, /* %2F never splits a segment */
    {"/a%2Fb/c", "/a%2Fb/c"},
    {"/a/%2F/..", "/a/"},
    {"/caf%C3%A9", "/caf%C3%A9"}, /* no decoding */
    /* malformed */
    {"", NULL},
    {"a/b", NULL},
    {"*", NULL},
    {"/a b", NULL},
    {"/a\tb", NULL},
    {"/a\x01", NULL},
    {"/a\x7f", NULL},
};

static void test_normalize_table(void **state)
{
    size_t i;
    for (i = 0; i != sizeof(norm_cases) / sizeof(norm_cases[0]); ++i) {
        const struct norm_case *c = norm_cases + i;
        size_t len = strlen(c->in);
        char *out = malloc(len + 1);
        ssize_t n = est_path_normalize(c->in, len, out);
        if (c->out == NULL) {
            if (n != -1)
                fail_msg("case %zu '%s': got '%.*s', expected -1", i, c->in, (int)n, out);
        } else {
            if (n < 0)
                fail_msg("case %zu '%s': got -1, expected '%s'", i, c->in, c->out);
            if ((size_t)n != strlen(c->out) || memcmp(out, c->out, n) != 0 || out[n] != '\0')
                fail_msg("case %zu '%s': got '%.*s', expected '%s'", i, c->in, (int)n, out, c->out);
            assert_true((size_t)n <= len);
        }
        /* in place gives the same */
        char *inplace = malloc(len + 1);
        memcpy(inplace, c->in, len + 1);
        ssize_t n2 = est_path_normalize(inplace, len, inplace);
        assert_int_equal(n2, n);
        if (n >= 0)
            assert_memory_equal(inplace, out, (size_t)n + 1);
        free(inplace);
        free(out);
    }
}

/* only `len` bytes are read: the query part after it is not looked at */
static void test_normalize_uses_len(void **state)
{
    const char *req = "/a/b/../c?x=/../..";
    char out[32];
    ssize_t n = est_path_normalize(req, 9, out);
    assert_int_equal(n, 4);
    assert_string_equal(out, "/a/c");
}

/* random paths over a dot-heavy alphabet: the result is a fixed point with no dot segment left */
static void test_normalize_random(void **state)
{
    static const char alphabet[] = "/./%2eE.a/";
    unsigned seed = 12345;
    size_t iter, i;
    for (iter = 0; iter != 200000; ++iter) {
        char in[24], out[24], again[24];
        size_t len = 1 + (seed = seed * 1103515245 + 12345) % 20;
        in[0] = '/';
        for (i = 1; i != len; ++i)
            in[i] = alphabet[((seed = seed * 1103515245 + 12345) >> 8) % (sizeof(alphabet) - 1)];
        ssize_t n = est_path_normalize(in, len, out);
        if (n < 0)
            continue;
        assert_true(n >= 1 && (size_t)n <= len && out[0] == '/');
        ssize_t n2 = est_path_normalize(out, (size_t)n, again);
        if (n2 != n || memcmp(out, again, (size_t)n) != 0)
            fail_msg("'%.*s' -> '%.*s' -> '%.*s'", (int)len, in, (int)n, out, (int)(n2 < 0 ? 0 : n2), again);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_normalize_table),
        cmocka_unit_test(test_normalize_uses_len),
        cmocka_unit_test(test_normalize_random),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

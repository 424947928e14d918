/*
 * Unit tests: the config loader's bounds (config.h: EST_CONFIG_MAX_FILE_SIZE,
 * EST_CONFIG_MAX_VALUES, EST_CONFIG_MAX_ERRORS) and the absence of quadratic work. A hostile
 * file must be refused with a few bounded lines, quickly, whatever its shape: an array of
 * many values, a huge key, thousands of listeners or routes, a template with thousands of
 * parameters. The clash checks that were pairwise must still report the same thing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config/config.h"

#define F "no-such-dir.est/t.json"

/* a growing text */
typedef struct {
    char *s;
    size_t len, cap;
} text_t;

static void put(text_t *t, const char *fmt, ...)
{
    va_list ap;
    for (;;) {
        va_start(ap, fmt);
        int n = vsnprintf(t->s ? t->s + t->len : NULL, t->s ? t->cap - t->len : 0, fmt, ap);
        va_end(ap);
        assert_true(n >= 0);
        if (t->s != NULL && t->len + (size_t)n < t->cap) {
            t->len += (size_t)n;
            return;
        }
        t->cap = (t->cap ? t->cap * 2 : 4096) + (size_t)n;
        t->s = realloc(t->s, t->cap);
        assert_non_null(t->s);
    }
}

static double cpu_seconds(void)
{
    return (double)clock() / CLOCKS_PER_SEC;
}

/* loads `t`, expects a refusal; returns the messages (caller clears) and checks their bounds */
static est_errors_t load_refused(const text_t *t, double max_cpu)
{
    est_errors_t errs = {0};
    double start = cpu_seconds();
    est_config_t *conf = est_config_load_buffer(F, t->s, t->len, &errs);
    double took = cpu_seconds() - start;
    if (getenv("SHOW") != NULL)
        for (size_t i = 0; i < errs.count; i++)
            print_message("%.300s\n", errs.items[i]);
    assert_null(conf);
    assert_true(errs.count >= 1);
    assert_true(errs.count <= EST_CONFIG_MAX_ERRORS + 1);
    for (size_t i = 0; i < errs.count; i++) {
        assert_true(strncmp(errs.items[i], F ":", strlen(F) + 1) == 0);
        assert_true(strlen(errs.items[i]) < 2048); /* no message repeats a huge key or value whole */
    }
    if (took > max_cpu)
        fail_msg("took %.2fs of CPU (bound %.2fs)", took, max_cpu);
    return errs;
}

static void test_values_limit(void **state)
{
    text_t t = {0};
    put(&t, "{\"routes\": [1");
    for (size_t i = 0; i < 3 * EST_CONFIG_MAX_VALUES; i++)
        put(&t, ",1");
    put(&t, "]}");
    est_errors_t errs = load_refused(&t, 1.0);
    assert_int_equal(errs.count, 1);
    /* the value past the limit: root 1, '{' 2, '[' 3, then one per ',' -> the (MAX-2)th comma */
    char want[128];
    snprintf(want, sizeof(want), F ":1:%u: more than %u JSON values; refusing the file", 12 + 2 * (EST_CONFIG_MAX_VALUES - 2),
             (unsigned)EST_CONFIG_MAX_VALUES);
    assert_string_equal(errs.items[0], want);
    est_errors_clear(&errs);

    /* commas, brackets and braces inside strings are not values */
    t.len = 0;
    put(&t, "{\"x\": \"");
    for (size_t i = 0; i < 2 * EST_CONFIG_MAX_VALUES; i++)
        put(&t, ",[{");
    put(&t, "\\\",\"}");
    errs = load_refused(&t, 1.0);
    assert_int_equal(errs.count, 1);
    assert_non_null(strstr(errs.items[0], "unknown key \"x\""));
    est_errors_clear(&errs);
    free(t.s);
}

static void test_error_limit(void **state)
{
    text_t t = {0};
    put(&t, "{\"routes\": [\n1");
    for (size_t i = 0; i < 5000; i++)
        put(&t, ",\n1");
    put(&t, "]}");
    est_errors_t errs = load_refused(&t, 1.0);
    assert_int_equal(errs.count, EST_CONFIG_MAX_ERRORS + 1);
    assert_string_equal(errs.items[0], F ":2:1: routes[0]: expected a route object, got an integer");
    assert_string_equal(errs.items[EST_CONFIG_MAX_ERRORS - 1], F ":101:1: routes[99]: expected a route object, got an integer");
    assert_string_equal(errs.items[EST_CONFIG_MAX_ERRORS], F ":102:1: too many errors: only the first 100 are shown");
    est_errors_clear(&errs);
    free(t.s);
}

static void test_file_size_limit(void **state)
{
    char path[] = "/tmp/est-test-bounds-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    /* a sparse file just over the limit: valid JSON would not matter, it is not read */
    assert_int_equal(ftruncate(fd, (off_t)EST_CONFIG_MAX_FILE_SIZE + 1), 0);
    close(fd);
    est_errors_t errs = {0};
    assert_null(est_config_load(path, &errs));
    assert_int_equal(errs.count, 1);
    char want[256];
    snprintf(want, sizeof(want), "%s:1:1: the config file is larger than 16 MiB; refusing to read it", path);
    assert_string_equal(errs.items[0], want);
    est_errors_clear(&errs);
    unlink(path);

    /* a file that never ends */
    assert_null(est_config_load("/dev/zero", &errs));
    assert_int_equal(errs.count, 1);
    assert_string_equal(errs.items[0], "/dev/zero:1:1: the config file is larger than 16 MiB; refusing to read it");
    est_errors_clear(&errs);
}

static void test_huge_key(void **state)
{
    /* every error under an upstream with a 4 MB name: messages stay short, no copy per value */
    text_t t = {0};
    put(&t, "{\"upstreams\": {\"");
    for (size_t i = 0; i < 4 << 20; i += 8)
        put(&t, "kkkkkkkk");
    put(&t, "\": {\"targets\": [1");
    for (size_t i = 0; i < 50000; i++)
        put(&t, ",1");
    put(&t, "]}}}");
    est_errors_t errs = load_refused(&t, 2.0);
    assert_int_equal(errs.count, EST_CONFIG_MAX_ERRORS + 1);
    assert_non_null(strstr(errs.items[0], "...: bad upstream name") != NULL ? errs.items[0] : strstr(errs.items[1], "..."));
    est_errors_clear(&errs);
    free(t.s);
}

static void test_many_listeners(void **state)
{
    /* distinct addresses (no clash to stop at) used to cost a pairwise scan */
    text_t t = {0};
    size_t n = EST_CONFIG_MAX_VALUES / 2 - 10;
    put(&t, "{\"workers\": 0, \"listen\": [{\"port\": 1}");
    for (size_t i = 1; i < n; i++)
        put(&t, ",{\"port\": %zu}", 1 + i);
    put(&t, ",{\"port\": 7}, {\"port\": %zu}]}", n);
    est_errors_t errs = load_refused(&t, 1.0);
    /* exactly the two clashes, against the first listener of each address */
    size_t clashes = 0;
    for (size_t i = 0; i < errs.count; i++) {
        if (strstr(errs.items[i], "is already used by") == NULL)
            continue;
        clashes++;
        char want[128];
        snprintf(want, sizeof(want), "listen[%zu]: 0.0.0.0:7 is already used by listen[6] (line 1)", n);
        char want2[128];
        snprintf(want2, sizeof(want2), "listen[%zu]: 0.0.0.0:%zu is already used by listen[%zu] (line 1)", n + 1, n, n - 1);
        assert_true(strstr(errs.items[i], want) != NULL || strstr(errs.items[i], want2) != NULL);
    }
    assert_int_equal(clashes, 2);
    est_errors_clear(&errs);
    free(t.s);
}

static void test_many_routes(void **state)
{
    /* routes of distinct shapes and one clash at the end: found by sorting, not pairwise */
    text_t t = {0};
    size_t n = EST_CONFIG_MAX_VALUES / 6 - 10;
    put(&t, "{\"upstreams\": {\"u\": {\"targets\": [\"http://127.0.0.1:1\"]}}, \"routes\": [");
    for (size_t i = 0; i < n; i++)
        put(&t, "%s{\"path\": \"/r%zu/{x}\", \"proxy\": {\"upstream\": \"u\"}}", i ? "," : "", i);
    put(&t, ",{\"path\": \"/r7/{y}\", \"methods\": [\"POST\"], \"proxy\": {\"upstream\": \"u\"}}");
    put(&t, ",{\"path\": \"/r7/{z}\", \"methods\": [\"PUT\", \"HEAD\"], \"proxy\": {\"upstream\": \"uu\"}}]}");
    est_errors_t errs = load_refused(&t, 1.5);
    assert_int_equal(errs.count, 2);
    char want[160];
    snprintf(want, sizeof(want), "routes[%zu].path: route \"/r7/{z}\" clashes with route \"/r7/{x}\" (line 1) for method HEAD", n + 1);
    assert_non_null(strstr(errs.items[0], want));
    assert_non_null(strstr(errs.items[1], "upstream \"uu\" is not defined (did you mean \"u\"?)"));
    est_errors_clear(&errs);
    free(t.s);
}

static void test_many_backends(void **state)
{
    /* Server-Timing names of many backends: numbered by sorting, in backend order */
    text_t t = {0};
    size_t n = 3000;
    put(&t, "{\"upstreams\": {\"a\": {\"targets\": [\"http://127.0.0.1:1\"]}, \"b\": {\"targets\": [\"http://127.0.0.1:2\"]}},"
            " \"routes\": [{\"path\": \"/x\", \"backends\": [");
    for (size_t i = 0; i < n; i++)
        put(&t, "%s{\"upstream\": \"%s\", \"path\": \"/\"}", i ? "," : "", i % 3 == 2 ? "b" : "a");
    put(&t, "]}]}");
    est_errors_t errs = {0};
    est_config_t *c = est_config_load_buffer(F, t.s, t.len, &errs);
    assert_non_null(c);
    assert_string_equal(c->routes[0].backends[0].timing_name, "a");
    assert_string_equal(c->routes[0].backends[1].timing_name, "a#2");
    assert_string_equal(c->routes[0].backends[2].timing_name, "b");
    assert_string_equal(c->routes[0].backends[3].timing_name, "a#3");
    assert_string_equal(c->routes[0].backends[5].timing_name, "b#2");
    assert_string_equal(c->routes[0].backends[n - 1].timing_name, "b#1000");
    est_config_free(c);
    free(t.s);
}

static void test_template_bounds(void **state)
{
    /* thousands of parameters: refused at the first one past the limit, no pairwise check */
    text_t t = {0};
    put(&t, "{\"upstreams\": {\"u\": {\"targets\": [\"http://127.0.0.1:1\"]}}, \"routes\": [{\"path\": \"");
    for (size_t i = 0; i < 200000; i++)
        put(&t, "/{p%zu}", i);
    put(&t, "\", \"backends\": [{\"upstream\": \"u\", \"path\": \"/");
    for (size_t i = 0; i < 200000; i++)
        put(&t, "{q}");
    put(&t, "\"}]}]}");
    est_errors_t errs = load_refused(&t, 1.0);
    assert_int_equal(errs.count, 2);
    assert_non_null(strstr(errs.items[0], ": more than 32 parameters"));
    assert_non_null(strstr(errs.items[1], ": more than 64 parameter references"));
    est_errors_clear(&errs);
    free(t.s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_values_limit),   cmocka_unit_test(test_error_limit),    cmocka_unit_test(test_file_size_limit),
        cmocka_unit_test(test_huge_key),       cmocka_unit_test(test_many_listeners), cmocka_unit_test(test_many_routes),
        cmocka_unit_test(test_many_backends),  cmocka_unit_test(test_template_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

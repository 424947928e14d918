/*
 * estuary - helpers shared by tests/unit/aggregate/test_*.c (header only: CMake builds every
 * test_*.c as its own executable).
 *
 * Backends are described as small JSON texts with the keys of an aggregating backend
 * ({"group": ..., "target": ..., "allow": [...], "deny": [...], "mapping": {...}}) and turned
 * into est_backend_conf_t by hand, so these tests do not depend on the config loader.
 */
#ifndef EST_TEST_AGGREGATE_HELPERS_H
#define EST_TEST_AGGREGATE_HELPERS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "common/jsonutil.h"
#include "aggregate/merge.h"

static inline json_t *test_parse(const char *s)
{
    json_error_t e;
    json_t *j = json_loads(s, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
    if (j == NULL)
        fail_msg("bad JSON in the test table: %s (%s)", s, e.text);
    return j;
}

static inline char *test_strdup(const char *s)
{
    char *d = strdup(s);
    assert_non_null(d);
    return d;
}

static inline char **test_str_list(json_t *arr, size_t *n)
{
    *n = json_array_size(arr);
    if (*n == 0)
        return NULL;
    char **list = calloc(*n, sizeof(*list));
    assert_non_null(list);
    for (size_t i = 0; i < *n; ++i)
        list[i] = test_strdup(json_string_value(json_array_get(arr, i)));
    return list;
}

static inline est_backend_conf_t *test_backend(const char *conf_json)
{
    est_backend_conf_t *b = calloc(1, sizeof(*b));
    assert_non_null(b);
    json_t *c = test_parse(conf_json != NULL ? conf_json : "{}");
    json_t *v;
    b->upstream_name = test_strdup("test");
    b->path = test_strdup("/");
    if ((v = json_object_get(c, "group")) != NULL)
        b->group = test_strdup(json_string_value(v));
    if ((v = json_object_get(c, "target")) != NULL)
        b->target = test_strdup(json_string_value(v));
    b->allow = test_str_list(json_object_get(c, "allow"), &b->num_allow);
    b->deny = test_str_list(json_object_get(c, "deny"), &b->num_deny);
    if ((v = json_object_get(c, "mapping")) != NULL && json_object_size(v) != 0) {
        const char *k;
        json_t *to;
        size_t i = 0;
        b->mapping = calloc(json_object_size(v), sizeof(*b->mapping));
        assert_non_null(b->mapping);
        json_object_foreach(v, k, to) {
            b->mapping[i].from = test_strdup(k);
            b->mapping[i].to = test_strdup(json_string_value(to));
            ++i;
        }
        b->num_mapping = i;
    }
    json_decref(c);
    return b;
}

static inline void test_backend_free(est_backend_conf_t *b)
{
    size_t i;
    if (b == NULL)
        return;
    for (i = 0; i < b->num_allow; ++i)
        free(b->allow[i]);
    for (i = 0; i < b->num_deny; ++i)
        free(b->deny[i]);
    for (i = 0; i < b->num_mapping; ++i) {
        free(b->mapping[i].from);
        free(b->mapping[i].to);
    }
    free(b->allow);
    free(b->deny);
    free(b->mapping);
    free(b->upstream_name);
    free(b->path);
    free(b->group);
    free(b->target);
    free(b);
}

/* `got` (borrowed) must equal `expected` both as JSON (json_equal) and as serialized text,
 * which also checks key order. */
static inline void test_assert_json(const char *what, const json_t *got, const char *expected)
{
    assert_non_null(got);
    json_t *want = test_parse(expected);
    size_t len;
    char *text = est_json_dumps_compact(got, &len);
    assert_non_null(text);
    if (!json_equal((json_t *)got, want) || strcmp(text, expected) != 0) {
        print_error("%s:\n  got      %s\n  expected %s\n", what, text, expected);
        free(text);
        json_decref(want);
        fail();
    }
    assert_int_equal(len, strlen(text));
    free(text);
    json_decref(want);
}

#endif

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

/* the compact form of a JSON text (whitespace outside strings dropped), malloc'd, NUL-ended */
static inline char *test_compact(const char *json)
{
    jspan_buf_t b = {0};
    assert_int_equal(jspan_write_compact_bytes(json, strlen(json), &b), 0);
    assert_int_equal(jspan_buf_append(&b, "", 1), 0);
    return b.data;
}

/* an aggregating backend with only a group, for writing one value alone */
static inline void test_group_backend(est_backend_conf_t *b, const char *group)
{
    memset(b, 0, sizeof(*b));
    b->group = (char *)group;
}

/*
 * body[0..len) through est_reply_parse + est_reply_transform with backend `b`. Returns 0 with
 * *out = the transformed value's compact text (malloc'd; NULL when it contributes nothing),
 * EST_REPLY_INVALID when the body is not JSON, or 1 with *err when the transform failed.
 */
static inline int test_transform_bytes(const est_backend_conf_t *b, const char *body, size_t len, char **out, const char **err)
{
    est_jarena_t a;
    est_reply_t rep;
    int ret = 0;
    *out = NULL;
    est_jarena_init(&a);
    int r = est_reply_parse(&rep, body, len, 0);
    if (r != 0) {
        assert_int_equal(r, EST_REPLY_INVALID);
        ret = r;
    } else if (est_reply_transform(&rep, b, &a, err) != 0) {
        ret = 1;
    } else if (rep.value != NULL) {
        est_backend_conf_t g;
        est_merge_t m;
        jspan_buf_t buf = {0};
        test_group_backend(&g, "v");
        est_merge_init(&m, &a);
        assert_int_equal(est_merge_add(&m, &g, &rep, err), 0);
        assert_int_equal(est_merge_write(&m, &buf), 0);
        est_merge_dispose(&m);
        /* {"v":VALUE} */
        assert_true(buf.len >= 7 && memcmp(buf.data, "{\"v\":", 5) == 0 && buf.data[buf.len - 1] == '}');
        *out = malloc(buf.len - 5);
        assert_non_null(*out);
        memcpy(*out, buf.data + 5, buf.len - 6);
        (*out)[buf.len - 6] = '\0';
        jspan_buf_dispose(&buf);
    }
    est_reply_dispose(&rep);
    est_jarena_dispose(&a);
    return ret;
}

static inline int test_transform(const est_backend_conf_t *b, const char *body, char **out, const char **err)
{
    return test_transform_bytes(b, body, strlen(body), out, err);
}

/* `got` must be the compact form of `expected` */
static inline void test_assert_text(const char *what, const char *got, const char *expected)
{
    char *want = test_compact(expected);
    if (got == NULL || strcmp(got, want) != 0) {
        print_error("%s:\n  got      %s\n  expected %s\n", what, got != NULL ? got : "(nothing)", want);
        free(want);
        fail();
    }
    free(want);
}

#endif

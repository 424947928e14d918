/* estuary - unit tests for est_merge_* with est_body_parse and est_transform_apply, driven the
 * way the fan-out drives them (src/aggregate/merge.c) */
#include "helpers.h"

#define MAX_BACKENDS 5

struct reply {
    const char *conf; /* backend, see helpers.h; NULL ends the list */
    const char *body; /* raw reply body */
    int ok;           /* 1: contributes or contributes nothing; 0: the backend fails */
    const char *err;  /* with ok == 0: the reason, NULL for "not JSON" */
};

struct merge_case {
    const char *name;
    struct reply replies[MAX_BACKENDS]; /* in config order */
    const char *output;                 /* exact body expected */
};

static const struct merge_case cases[] = {
    {"SPEC example",
     {{"{\"group\": \"user\"}", "{\"id\": \"123\", \"name\": \"user123\"}", 1},
      {"{\"group\": \"order\", \"target\": \"data\", \"allow\": [\"id\", \"product\"], \"mapping\": {\"product\": \"item\"}}",
       "{\"data\": {\"id\": \"456\", \"product\": \"item456\", \"price\": 12.5}}", 1}},
     "{\"user\": {\"id\": \"123\", \"name\": \"user123\"}, \"order\": {\"id\": \"456\", \"item\": \"item456\"}}"},
    {"SPEC example without mapping",
     {{"{\"group\": \"user\"}", "{\"id\": \"123\", \"name\": \"user123\"}", 1},
      {"{\"group\": \"order\", \"target\": \"data\", \"allow\": [\"id\", \"product\"]}",
       "{\"data\": {\"id\": \"456\", \"product\": \"item456\", \"price\": 12.5}}", 1}},
     "{\"user\": {\"id\": \"123\", \"name\": \"user123\"}, \"order\": {\"id\": \"456\", \"product\": \"item456\"}}"},
    {"groups follow config order",
     {{"{\"group\": \"b\"}", "1", 1}, {"{\"group\": \"a\"}", "2", 1}, {"{\"group\": \"c\"}", "3", 1}},
     "{\"b\": 1, \"a\": 2, \"c\": 3}"},
    {"no group: objects merge, later wins, first position kept",
     {{"{}", "{\"a\": 1, \"b\": 2}", 1}, {"{}", "{\"c\": 3, \"b\": {\"x\": 1}}", 1}},
     "{\"a\": 1, \"b\": {\"x\": 1}, \"c\": 3}"},
    {"no group: arrays concatenate under collection",
     {{"{}", "[1, {\"a\": 2}]", 1}, {"{}", "[]", 1}, {"{}", "[3, [4]]", 1}},
     "{\"collection\": [1, {\"a\": 2}, 3, [4]]}"},
    {"mixed groups, objects and arrays",
     {{"{\"group\": \"g\"}", "{\"x\": 1}", 1}, {"{}", "[1]", 1}, {"{}", "{\"k\": true}", 1}, {"{}", "[2]", 1}},
     "{\"g\": {\"x\": 1}, \"collection\": [1, 2], \"k\": true}"},
    {"object, then group",
     {{"{}", "{\"a\": 1}", 1}, {"{\"group\": \"g\"}", "[1]", 1}},
     "{\"a\": 1, \"g\": [1]}"},
    {"group clashes with a merged key: later wins",
     {{"{\"group\": \"a\"}", "{\"x\": 1}", 1}, {"{}", "{\"a\": 2, \"b\": 3}", 1}},
     "{\"a\": 2, \"b\": 3}"},
    {"same group twice: later wins",
     {{"{\"group\": \"g\"}", "1", 1}, {"{\"group\": \"h\"}", "2", 1}, {"{\"group\": \"g\"}", "3", 1}},
     "{\"g\": 3, \"h\": 2}"},
    {"scalars with group",
     {{"{\"group\": \"n\"}", "42", 1}, {"{\"group\": \"s\"}", "\"x\"", 1}, {"{\"group\": \"z\"}", "null", 1},
      {"{\"group\": \"f\"}", "false", 1}},
     "{\"n\": 42, \"s\": \"x\", \"z\": null, \"f\": false}"},
    {"scalars without group fail",
     {{"{}", "42", 0, est_aggregate_err_scalar_without_group}, {"{}", "\"x\"", 0, est_aggregate_err_scalar_without_group},
      {"{}", "null", 0, est_aggregate_err_scalar_without_group}, {"{}", "{\"a\": 1}", 1},
      {"{\"target\": \"v\"}", "{\"v\": true}", 0, est_aggregate_err_scalar_without_group}},
     "{\"a\": 1}"},
    {"empty bodies contribute nothing",
     {{"{\"group\": \"a\"}", "", 1}, {"{\"group\": \"b\"}", " \r\n\t ", 1}, {"{}", "", 1}, {"{\"group\": \"c\"}", "{}", 1}},
     "{\"c\": {}}"},
    {"nothing at all", {{"{\"group\": \"a\"}", "", 1}, {"{}", "7", 0, est_aggregate_err_scalar_without_group}}, "{}"},
    {"non-JSON bodies fail",
     {{"{\"group\": \"a\"}", "<html>oops</html>", 0}, {"{\"group\": \"b\"}", "{\"x\": ", 0}, {"{\"group\": \"c\"}", "{} {}", 0},
      {"{\"group\": \"d\"}", "{\"ok\": 1}", 1}},
     "{\"d\": {\"ok\": 1}}"},
    {"missing target fails that backend only",
     {{"{\"group\": \"a\", \"target\": \"data\"}", "{\"error\": \"x\"}", 0, est_aggregate_err_target_missing},
      {"{\"group\": \"b\", \"target\": \"data.x\"}", "{\"data\": 1}", 0, est_aggregate_err_target_not_object},
      {"{\"group\": \"c\", \"target\": \"data\"}", "{\"data\": [1]}", 1}},
     "{\"c\": [1]}"},
    {"transformed arrays concatenate",
     {{"{\"allow\": [\"id\"]}", "[{\"id\": 1, \"x\": 0}]", 1},
      {"{\"target\": \"items\", \"mapping\": {\"key\": \"id\"}}", "{\"items\": [{\"key\": 2}, {\"key\": 3}]}", 1}},
     "{\"collection\": [{\"id\": 1}, {\"id\": 2}, {\"id\": 3}]}"},

    /* "collection" clashes (documented in merge.h) */
    {"array, object with collection, array",
     {{"{}", "[1]", 1}, {"{}", "{\"collection\": \"x\", \"k\": 1}", 1}, {"{}", "[2]", 1}},
     "{\"collection\": [2], \"k\": 1}"},
    {"object with a collection array, then an array",
     {{"{}", "{\"collection\": [1], \"total\": 1}", 1}, {"{}", "[2, 3]", 1}},
     "{\"collection\": [1, 2, 3], \"total\": 1}"},
    {"array, then object with a collection array",
     {{"{}", "[1]", 1}, {"{}", "{\"collection\": [9]}", 1}},
     "{\"collection\": [9]}"},
    {"group named collection, then an array",
     {{"{\"group\": \"collection\"}", "{\"a\": 1}", 1}, {"{}", "[2]", 1}},
     "{\"collection\": [2]}"},
    {"array, then group named collection",
     {{"{}", "[1]", 1}, {"{\"group\": \"collection\"}", "{\"a\": 1}", 1}},
     "{\"collection\": {\"a\": 1}}"},
};

static void run_case(const struct merge_case *c)
{
    est_merge_t m;
    est_merge_init(&m);
    for (size_t i = 0; i < MAX_BACKENDS && c->replies[i].conf != NULL; ++i) {
        const struct reply *r = &c->replies[i];
        est_backend_conf_t *b = test_backend(r->conf);
        const char *err = NULL;
        json_t *v = NULL;
        int ok = est_body_parse(r->body, strlen(r->body), &v) == 0;
        if (ok && v != NULL && (v = est_transform_apply(b, v, &err)) == NULL)
            ok = 0;
        if (ok && est_merge_add(&m, b, v, &err) != 0)
            ok = 0;
        if (ok != r->ok)
            fail_msg("%s: backend %zu %s (%s)", c->name, i, ok ? "succeeded" : "failed", err != NULL ? err : "not JSON");
        if (!ok && err != r->err)
            fail_msg("%s: backend %zu failed with \"%s\", \"%s\" expected", c->name, i, err, r->err);
        test_backend_free(b);
    }
    json_t *doc = est_merge_finish(&m);
    test_assert_json(c->name, doc, c->output);
    json_decref(doc);
    est_merge_dispose(&m);
}

static void test_cases(void **state)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); ++i)
        run_case(&cases[i]);
}

/* the exact bytes of the SPEC example, through the serializer */
static void test_spec_body(void **state)
{
    est_backend_conf_t *user = test_backend("{\"group\": \"user\"}");
    est_backend_conf_t *order = test_backend("{\"group\": \"order\", \"target\": \"data\", \"allow\": [\"id\", \"product\"]}");
    const char *ub = "{\"id\":\"123\",\"name\":\"user123\"}";
    const char *ob = "{\"data\":{\"product\":\"item456\",\"id\":\"456\",\"stock\":3}}";
    const char *err = NULL;
    est_merge_t m;
    json_t *u, *o;

    assert_int_equal(est_body_parse(ub, strlen(ub), &u), 0);
    assert_int_equal(est_body_parse(ob, strlen(ob), &o), 0);
    assert_non_null(o = est_transform_apply(order, o, &err));
    assert_non_null(u = est_transform_apply(user, u, &err));
    est_merge_init(&m);
    assert_int_equal(est_merge_add(&m, user, u, &err), 0);
    assert_int_equal(est_merge_add(&m, order, o, &err), 0);
    json_t *doc = est_merge_finish(&m);
    size_t len;
    char *body = est_json_dumps_compact(doc, &len);
    /* allow keeps the backend's own order: product before id */
    assert_string_equal(body, "{\"user\": {\"id\": \"123\", \"name\": \"user123\"}, \"order\": {\"product\": \"item456\", \"id\": \"456\"}}");
    assert_int_equal(len, strlen(body));
    free(body);
    json_decref(doc);
    est_merge_dispose(&m);
    test_backend_free(user);
    test_backend_free(order);
}

/* three backends of 100000 elements each: linear concatenation, config order, no copies */
static void test_large_collection(void **state)
{
    est_backend_conf_t *b = test_backend("{}");
    const char *err = NULL;
    est_merge_t m;
    json_t *first_el = NULL;
    est_merge_init(&m);
    for (int k = 0; k < 3; ++k) {
        json_t *arr = json_array();
        for (int i = 0; i < 100000; ++i)
            json_array_append_new(arr, json_integer(k * 100000 + i));
        if (k == 1)
            first_el = json_array_get(arr, 0);
        assert_int_equal(est_merge_add(&m, b, arr, &err), 0);
    }
    json_t *doc = est_merge_finish(&m);
    json_t *coll = json_object_get(doc, "collection");
    assert_int_equal(json_array_size(coll), 300000);
    for (int i = 0; i < 300000; i += 997)
        assert_int_equal(json_integer_value(json_array_get(coll, (size_t)i)), i);
    assert_ptr_equal(json_array_get(coll, 100000), first_el);
    assert_int_equal(first_el->refcount, 1);
    json_decref(doc);
    est_merge_dispose(&m);
    test_backend_free(b);
}

/* the first object without group becomes the document; later ones are moved in */
static void test_no_copy(void **state)
{
    est_backend_conf_t *b = test_backend("{}");
    const char *err = NULL;
    est_merge_t m;
    json_t *a = test_parse("{\"a\": [1]}"), *b2 = test_parse("{\"b\": [2]}");
    json_t *bv = json_object_get(b2, "b");
    est_merge_init(&m);
    assert_int_equal(est_merge_add(&m, b, a, &err), 0);
    assert_int_equal(est_merge_add(&m, b, b2, &err), 0);
    json_t *doc = est_merge_finish(&m);
    assert_ptr_equal(doc, a);
    assert_ptr_equal(json_object_get(doc, "b"), bv);
    assert_int_equal(bv->refcount, 1);
    json_decref(doc);
    est_merge_dispose(&m);
    test_backend_free(b);
}

/* dispose without finish frees what was added; finish leaves the merger reusable */
static void test_lifecycle(void **state)
{
    est_backend_conf_t *g = test_backend("{\"group\": \"g\"}");
    const char *err = NULL;
    est_merge_t m;
    est_merge_init(&m);
    assert_int_equal(est_merge_add(&m, g, test_parse("{\"x\": [1, 2, 3]}"), &err), 0);
    assert_int_equal(est_merge_add(&m, g, NULL, &err), 0);
    est_merge_dispose(&m);
    est_merge_dispose(&m);

    est_merge_init(&m);
    json_t *doc = est_merge_finish(&m);
    test_assert_json("empty", doc, "{}");
    json_decref(doc);
    assert_int_equal(est_merge_add(&m, g, json_integer(1), &err), 0);
    doc = est_merge_finish(&m);
    test_assert_json("reused", doc, "{\"g\": 1}");
    json_decref(doc);
    est_merge_dispose(&m);
    test_backend_free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cases),
        cmocka_unit_test(test_spec_body),
        cmocka_unit_test(test_large_collection),
        cmocka_unit_test(test_no_copy),
        cmocka_unit_test(test_lifecycle),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

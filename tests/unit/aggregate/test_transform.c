/* estuary - unit tests for est_reply_transform (src/aggregate/merge.c): target, allow, deny, mapping on spans */
#include "helpers.h"

struct transform_case {
    const char *name;
    const char *conf;   /* backend, see helpers.h */
    const char *input;  /* reply body */
    const char *output; /* exact serialization expected; NULL: failure expected */
    const char *err;    /* with output == NULL: the reason expected */
};

static const struct transform_case cases[] = {
    /* no transformation */
    {"identity object", "{}", "{\"b\": 1, \"a\": [1, {\"x\": null}]}", "{\"b\": 1, \"a\": [1, {\"x\": null}]}"},
    {"identity scalar", "{}", "\"s\"", "\"s\""},

    /* target */
    {"target one level", "{\"target\": \"data\"}", "{\"meta\": 1, \"data\": {\"id\": 7, \"n\": \"x\"}}",
     "{\"id\": 7, \"n\": \"x\"}"},
    {"target two levels", "{\"target\": \"data.user\"}", "{\"data\": {\"user\": {\"id\": \"1\"}, \"other\": 2}}",
     "{\"id\": \"1\"}"},
    {"target five levels", "{\"target\": \"a.b.c.d.e\"}", "{\"a\": {\"b\": {\"c\": {\"d\": {\"e\": [1, [2]]}}}}}", "[1, [2]]"},
    {"target to scalar", "{\"target\": \"data.n\"}", "{\"data\": {\"n\": 5}}", "5"},
    {"target to null", "{\"target\": \"data\"}", "{\"data\": null}", "null"},
    {"target missing (top)", "{\"target\": \"data\"}", "{\"date\": {}}", NULL, est_aggregate_err_target_missing},
    {"target missing (second)", "{\"target\": \"data.user\"}", "{\"data\": {\"users\": 1}}", NULL,
     est_aggregate_err_target_missing},
    {"target through a string", "{\"target\": \"data.user\"}", "{\"data\": \"user\"}", NULL, est_aggregate_err_target_not_object},
    {"target through an array", "{\"target\": \"data.0\"}", "{\"data\": [1, 2]}", NULL, est_aggregate_err_target_not_object},
    {"target through null", "{\"target\": \"data.user\"}", "{\"data\": null}", NULL, est_aggregate_err_target_not_object},
    {"target on an array body", "{\"target\": \"data\"}", "[{\"data\": 1}]", NULL, est_aggregate_err_target_not_object},
    {"target on a scalar body", "{\"target\": \"data\"}", "42", NULL, est_aggregate_err_target_not_object},

    /* allow */
    {"allow top level, source order", "{\"allow\": [\"id\", \"name\"]}", "{\"name\": \"x\", \"pw\": \"s\", \"id\": 1}",
     "{\"name\": \"x\", \"id\": 1}"},
    {"allow keeps whole values", "{\"allow\": [\"a\"]}", "{\"a\": {\"b\": [1, {\"c\": 2}]}, \"z\": 0}",
     "{\"a\": {\"b\": [1, {\"c\": 2}]}}"},
    {"allow nested dot path", "{\"allow\": [\"a.b\"]}", "{\"a\": {\"c\": 2, \"b\": 1}, \"d\": 3}", "{\"a\": {\"b\": 1}}"},
    {"allow several nested", "{\"allow\": [\"a.c.d\", \"x\", \"a.b\"]}",
     "{\"x\": 0, \"a\": {\"b\": 1, \"c\": {\"d\": 2, \"e\": 3}, \"f\": 4}, \"y\": 5}",
     "{\"x\": 0, \"a\": {\"b\": 1, \"c\": {\"d\": 2}}}"},
    {"allow parent and child: parent wins", "{\"allow\": [\"a.b\", \"a\"]}", "{\"a\": {\"b\": 1, \"c\": 2}}",
     "{\"a\": {\"b\": 1, \"c\": 2}}"},
    {"allow missing field", "{\"allow\": [\"nope\"]}", "{\"a\": 1}", "{}"},
    {"allow missing nested field drops the parent", "{\"allow\": [\"a.nope\", \"k\"]}", "{\"a\": {\"b\": 1}, \"k\": 2}",
     "{\"k\": 2}"},
    {"allow path through a scalar", "{\"allow\": [\"a.b\"]}", "{\"a\": 5}", "{}"},
    {"allow path through null", "{\"allow\": [\"a.b\"]}", "{\"a\": null}", "{}"},
    {"allow keeps an empty object when listed whole", "{\"allow\": [\"a\"]}", "{\"a\": {}}", "{\"a\": {}}"},
    {"allow path through an array of objects", "{\"allow\": [\"items.id\", \"t\"]}",
     "{\"items\": [{\"id\": 1, \"x\": 2}, {\"x\": 3}, 7, [{\"id\": 9, \"x\": 9}]], \"t\": 1, \"u\": 2}",
     "{\"items\": [{\"id\": 1}, {}, 7, [{\"id\": 9, \"x\": 9}]], \"t\": 1}"},
    {"allow on a scalar does nothing", "{\"allow\": [\"a\"]}", "\"str\"", "\"str\""},
    {"allow with empty key segment", "{\"allow\": [\"\"]}", "{\"\": 1, \"a\": 2}", "{\"\": 1}"},

    /* deny */
    {"deny top level", "{\"deny\": [\"pw\"]}", "{\"id\": 1, \"pw\": \"s\", \"n\": 2}", "{\"id\": 1, \"n\": 2}"},
    {"deny nested", "{\"deny\": [\"a.b\"]}", "{\"a\": {\"b\": 1, \"c\": 2}, \"d\": 3}", "{\"a\": {\"c\": 2}, \"d\": 3}"},
    {"deny deep nested", "{\"deny\": [\"a.b.c\", \"a.x\"]}", "{\"a\": {\"b\": {\"c\": 1, \"d\": 2}, \"x\": 0}}",
     "{\"a\": {\"b\": {\"d\": 2}}}"},
    {"deny missing", "{\"deny\": [\"x\", \"a.y\", \"a.b.z\"]}", "{\"a\": {\"b\": 1}}", "{\"a\": {\"b\": 1}}"},
    {"deny through a scalar", "{\"deny\": [\"a.b\"]}", "{\"a\": \"b\"}", "{\"a\": \"b\"}"},
    {"deny through an array", "{\"deny\": [\"items.secret\"]}", "{\"items\": [{\"id\": 1, \"secret\": 2}, 3, {\"secret\": 4}]}",
     "{\"items\": [{\"id\": 1}, 3, {}]}"},

    /* mapping */
    {"mapping renames", "{\"mapping\": {\"product\": \"item\"}}", "{\"id\": 1, \"product\": \"p\", \"x\": 0}",
     "{\"id\": 1, \"x\": 0, \"item\": \"p\"}"},
    {"mapping of a missing key", "{\"mapping\": {\"nope\": \"item\"}}", "{\"id\": 1}", "{\"id\": 1}"},
    {"mapping swaps at once", "{\"mapping\": {\"a\": \"b\", \"b\": \"a\"}}", "{\"a\": 1, \"b\": 2, \"c\": 3}",
     "{\"c\": 3, \"b\": 1, \"a\": 2}"},
    {"mapping replaces an existing key", "{\"mapping\": {\"a\": \"b\"}}", "{\"b\": 2, \"a\": 1}", "{\"b\": 1}"},
    {"mapping keys are literal, not paths", "{\"mapping\": {\"a.b\": \"c\"}}", "{\"a\": {\"b\": 2}, \"a.b\": 1}",
     "{\"a\": {\"b\": 2}, \"c\": 1}"},
    {"mapping on a scalar does nothing", "{\"mapping\": {\"a\": \"b\"}}", "[1, \"a\", null]", "[1, \"a\", null]"},

    /* arrays */
    {"array with allow and mapping", "{\"allow\": [\"id\", \"n\"], \"mapping\": {\"n\": \"name\"}}",
     "[{\"z\": 0, \"id\": 1, \"n\": \"a\"}, {\"id\": 2, \"n\": \"b\"}, \"s\", 4, null, [{\"id\": 3, \"z\": 1}]]",
     "[{\"id\": 1, \"name\": \"a\"}, {\"id\": 2, \"name\": \"b\"}, \"s\", 4, null, [{\"id\": 3, \"z\": 1}]]"},
    {"array with deny", "{\"deny\": [\"z\", \"o.p\"]}", "[{\"z\": 0, \"id\": 1, \"o\": {\"p\": 1, \"q\": 2}}, {\"z\": 1}]",
     "[{\"id\": 1, \"o\": {\"q\": 2}}, {}]"},
    {"deeply nested arrays are left alone", "{\"allow\": [\"a\"], \"mapping\": {\"a\": \"b\"}}",
     "[[[{\"a\": 1, \"b\": 2}]], {\"a\": 3, \"c\": 4}]", "[[[{\"a\": 1, \"b\": 2}]], {\"b\": 3}]"},
    {"empty array", "{\"allow\": [\"a\"], \"deny\": [\"b\"], \"mapping\": {\"a\": \"b\"}}", "[]", "[]"},

    /* the steps in order */
    {"target then allow then mapping (SPEC orders backend)",
     "{\"target\": \"data\", \"allow\": [\"id\", \"product\"], \"mapping\": {\"product\": \"item\"}}",
     "{\"data\": {\"product\": \"item456\", \"price\": 3, \"id\": \"456\"}, \"status\": \"ok\"}",
     "{\"id\": \"456\", \"item\": \"item456\"}"},
    {"allow then deny", "{\"allow\": [\"a\"], \"deny\": [\"a.b\"]}", "{\"a\": {\"b\": 1, \"c\": 2}, \"d\": 3}",
     "{\"a\": {\"c\": 2}}"},
    {"mapping sees the allowed fields only", "{\"allow\": [\"a\"], \"mapping\": {\"b\": \"c\"}}", "{\"a\": 1, \"b\": 2}",
     "{\"a\": 1}"},
    {"target then missing allow", "{\"target\": \"data\", \"allow\": [\"x\"]}", "{\"data\": [{\"y\": 1}]}", "[{}]"},

    /* combinations on spans: every step sees the previous one's result */
    {"allow, deny and mapping through an array",
     "{\"allow\": [\"items.id\", \"items.x\"], \"deny\": [\"items.x\"], \"mapping\": {\"items\": \"list\"}}",
     "{\"items\": [{\"id\": 1, \"x\": 2, \"y\": 3}, {\"x\": 4}, 5], \"z\": 0}", "{\"list\": [{\"id\": 1}, {}, 5]}"},
    {"deny of a duplicated key", "{\"deny\": [\"a\"]}", "{\"a\": 1, \"b\": 2, \"a\": 3}", "{\"b\": 2}"},
    {"mapping of a duplicated key in an array", "{\"mapping\": {\"a\": \"b\"}}", "[{\"a\": 1, \"a\": 2}, {\"c\": 0}]",
     "[{\"b\": 2}, {\"c\": 0}]"},
    {"deny leaves nested arrays alone", "{\"deny\": [\"a.b\"]}", "{\"a\": [[{\"b\": 1}], {\"b\": 2, \"c\": 3}]}",
     "{\"a\": [[{\"b\": 1}], {\"c\": 3}]}"},
    {"allow keeps a value whose object repeats a key: written once", "{\"allow\": [\"k\"]}",
     "{\"k\": {\"x\": 1, \"x\": [2, {\"y\": 1, \"y\": 2}]}, \"j\": 0}", "{\"k\": {\"x\": [2, {\"y\": 2}]}}"},
    {"target into a repeated key takes the last", "{\"target\": \"d.v\"}", "{\"d\": {\"v\": 1}, \"d\": {\"v\": 2}}", "2"},
    {"mapping onto a mapped name twice", "{\"mapping\": {\"a\": \"x\", \"b\": \"x\"}}", "{\"a\": 1, \"b\": 2, \"c\": 3}",
     "{\"c\": 3, \"x\": 2}"},
    {"escaped keys match config paths by value", "{\"allow\": [\"\u00e9t\u00e9\", \"a.b\"]}",
     "{\"\\u00e9t\\u00e9\": 1, \"a\": {\"\\u0062\": 2, \"c\": 3}, \"z\": 4}", "{\"\\u00e9t\\u00e9\": 1, \"a\": {\"\\u0062\": 2}}"},
};

static void test_cases(void **state)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); ++i) {
        const struct transform_case *c = &cases[i];
        est_backend_conf_t *b = test_backend(c->conf);
        const char *err = NULL;
        char *out = NULL;
        int r = test_transform(b, c->input, &out, &err);
        if (c->output != NULL) {
            if (r != 0)
                fail_msg("%s: failed with \"%s\"", c->name, err);
            test_assert_text(c->name, out, c->output);
        } else {
            if (r == 0)
                fail_msg("%s: succeeded, failure \"%s\" expected", c->name, c->err);
            if (err != c->err)
                fail_msg("%s: failed with \"%s\", \"%s\" expected", c->name, err, c->err);
        }
        free(out);
        test_backend_free(b);
    }
}

/* what target/allow keep is written as the backend's own bytes: numbers and escapes unchanged,
 * whitespace outside strings dropped */
static void test_kept_bytes(void **state)
{
    est_backend_conf_t *b = test_backend("{\"target\": \"data\", \"allow\": [\"big\"]}");
    const char *err = NULL;
    char *out = NULL;
    assert_int_equal(test_transform(b, "{\"data\": {\"big\": [1.10, -0, 1e400, \"\\u00e9 \\n\"], \"small\": 1}}", &out, &err), 0);
    assert_string_equal(out, "{\"big\":[1.10,-0,1e400,\"\\u00e9 \\n\"]}");
    free(out);
    test_backend_free(b);
}

/* more allow/mapping entries than the on-stack scratch holds */
static void test_many_entries(void **state)
{
    char conf[8192], in[8192], want[8192];
    size_t c = 0, n = 0, w = 0;
    c += (size_t)snprintf(conf + c, sizeof(conf) - c, "{\"allow\": [");
    for (int i = 0; i < 60; ++i)
        c += (size_t)snprintf(conf + c, sizeof(conf) - c, "%s\"o.k%d\"", i ? ", " : "", i);
    c += (size_t)snprintf(conf + c, sizeof(conf) - c, "], \"mapping\": {");
    for (int i = 0; i < 40; ++i)
        c += (size_t)snprintf(conf + c, sizeof(conf) - c, "%s\"o\": \"o%d\"", i ? ", " : "", i);
    snprintf(conf + c, sizeof(conf) - c, "}}");
    /* the mapping object has 40 times the same key: jansson keeps the last one */
    n += (size_t)snprintf(in + n, sizeof(in) - n, "{\"o\": {");
    for (int i = 0; i < 80; ++i)
        n += (size_t)snprintf(in + n, sizeof(in) - n, "%s\"k%d\": %d", i ? ", " : "", 79 - i, i);
    snprintf(in + n, sizeof(in) - n, "}}");
    w += (size_t)snprintf(want + w, sizeof(want) - w, "{\"o39\": {");
    int first = 1;
    for (int i = 0; i < 80; ++i) {
        if (79 - i >= 60)
            continue;
        w += (size_t)snprintf(want + w, sizeof(want) - w, "%s\"k%d\": %d", first ? "" : ", ", 79 - i, i);
        first = 0;
    }
    snprintf(want + w, sizeof(want) - w, "}}");

    est_backend_conf_t *b = test_backend(conf);
    const char *err = NULL;
    char *out = NULL;
    assert_int_equal(test_transform(b, in, &out, &err), 0);
    test_assert_text("many entries", out, want);
    free(out);
    test_backend_free(b);
}

static void test_many_mappings(void **state)
{
    char conf[4096], in[4096];
    size_t c = 0, n = 0;
    c += (size_t)snprintf(conf + c, sizeof(conf) - c, "{\"mapping\": {");
    n += (size_t)snprintf(in + n, sizeof(in) - n, "[{");
    for (int i = 0; i < 50; ++i) {
        c += (size_t)snprintf(conf + c, sizeof(conf) - c, "%s\"a%d\": \"b%d\"", i ? ", " : "", i, i);
        n += (size_t)snprintf(in + n, sizeof(in) - n, "%s\"a%d\": %d", i ? ", " : "", i, i);
    }
    snprintf(conf + c, sizeof(conf) - c, "}}");
    snprintf(in + n, sizeof(in) - n, "}, {\"a49\": true}]");

    est_backend_conf_t *b = test_backend(conf);
    const char *err = NULL;
    char *text = NULL;
    assert_int_equal(test_transform(b, in, &text, &err), 0);
    json_t *out = test_parse(text);
    free(text);
    json_t *o = json_array_get(out, 0);
    assert_int_equal(json_object_size(o), 50);
    for (int i = 0; i < 50; ++i) {
        char k[16];
        snprintf(k, sizeof(k), "b%d", i);
        assert_int_equal(json_integer_value(json_object_get(o, k)), i);
    }
    test_assert_json("second element", json_array_get(out, 1), "{\"b49\": true}");
    json_decref(out);
    test_backend_free(b);
}

/* allow over a large array of objects stays linear and keeps every element */
static void test_large_array(void **state)
{
    est_backend_conf_t *b = test_backend("{\"allow\": [\"id\"], \"deny\": [\"x\"], \"mapping\": {\"id\": \"key\"}}");
    size_t cap = 100000 * 32, n = 0;
    char *in = malloc(cap);
    assert_non_null(in);
    in[n++] = '[';
    for (int i = 0; i < 100000; ++i)
        n += (size_t)snprintf(in + n, cap - n, "%s{\"id\": %d, \"x\": \"drop\"}", i ? ", " : "", i);
    in[n++] = ']';
    const char *err = NULL;
    char *out = NULL;
    assert_int_equal(test_transform_bytes(b, in, n, &out, &err), 0);
    json_t *arr = test_parse(out);
    assert_int_equal(json_array_size(arr), 100000);
    test_assert_json("last", json_array_get(arr, 99999), "{\"key\": 99999}");
    json_decref(arr);
    free(out);
    free(in);
    test_backend_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cases),         cmocka_unit_test(test_kept_bytes),  cmocka_unit_test(test_many_entries),
        cmocka_unit_test(test_many_mappings), cmocka_unit_test(test_large_array),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

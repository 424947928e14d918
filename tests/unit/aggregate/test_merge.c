/* estuary - unit tests for est_merge_* with est_reply_parse and est_reply_transform, driven the
 * way the fan-out drives them (src/aggregate/merge.c), and the fidelity of the merged bytes */
#include "helpers.h"

#define MAX_BACKENDS 6

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
    {"object, then group", {{"{}", "{\"a\": 1}", 1}, {"{\"group\": \"g\"}", "[1]", 1}}, "{\"a\": 1, \"g\": [1]}"},
    {"group clashes with a merged key: later wins",
     {{"{\"group\": \"a\"}", "{\"x\": 1}", 1}, {"{}", "{\"a\": 2, \"b\": 3}", 1}},
     "{\"a\": 2, \"b\": 3}"},
    {"same group twice: later wins",
     {{"{\"group\": \"g\"}", "1", 1}, {"{\"group\": \"h\"}", "2", 1}, {"{\"group\": \"g\"}", "3", 1}},
     "{\"g\": 3, \"h\": 2}"},
    {"scalars with group",
     {{"{\"group\": \"n\"}", "42", 1},
      {"{\"group\": \"s\"}", "\"x\"", 1},
      {"{\"group\": \"z\"}", "null", 1},
      {"{\"group\": \"f\"}", "false", 1}},
     "{\"n\": 42, \"s\": \"x\", \"z\": null, \"f\": false}"},
    {"scalars without group fail",
     {{"{}", "42", 0, est_aggregate_err_scalar_without_group},
      {"{}", "\"x\"", 0, est_aggregate_err_scalar_without_group},
      {"{}", "null", 0, est_aggregate_err_scalar_without_group},
      {"{}", "{\"a\": 1}", 1},
      {"{\"target\": \"v\"}", "{\"v\": true}", 0, est_aggregate_err_scalar_without_group}},
     "{\"a\": 1}"},
    {"empty bodies contribute nothing",
     {{"{\"group\": \"a\"}", "", 1}, {"{\"group\": \"b\"}", " \r\n\t ", 1}, {"{}", "", 1}, {"{\"group\": \"c\"}", "{}", 1}},
     "{\"c\": {}}"},
    {"nothing at all", {{"{\"group\": \"a\"}", "", 1}, {"{}", "7", 0, est_aggregate_err_scalar_without_group}}, "{}"},
    {"non-JSON bodies fail",
     {{"{\"group\": \"a\"}", "<html>oops</html>", 0},
      {"{\"group\": \"b\"}", "{\"x\": ", 0},
      {"{\"group\": \"c\"}", "{} {}", 0},
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
    {"array, then object with a collection array", {{"{}", "[1]", 1}, {"{}", "{\"collection\": [9]}", 1}}, "{\"collection\": [9]}"},
    {"group named collection, then an array",
     {{"{\"group\": \"collection\"}", "{\"a\": 1}", 1}, {"{}", "[2]", 1}},
     "{\"collection\": [2]}"},
    {"array, then group named collection",
     {{"{}", "[1]", 1}, {"{\"group\": \"collection\"}", "{\"a\": 1}", 1}},
     "{\"collection\": {\"a\": 1}}"},
    /* duplicate keys inside one reply: the last value, at the first key's position */
    {"duplicate keys: last wins, written once",
     {{"{}", "{\"a\": 1, \"b\": 2, \"a\": 3}", 1},
      {"{\"group\": \"g\"}", "{\"x\": {\"k\": 1, \"k\": {\"k\": 2, \"k\": 3}}, \"y\": [{\"z\": 1, \"z\": 2}]}", 1}},
     "{\"a\": 3, \"b\": 2, \"g\": {\"x\": {\"k\": {\"k\": 3}}, \"y\": [{\"z\": 2}]}}"},
    {"duplicate keys under escapes", {{"{}", "{\"a\": 1, \"\\u0061\": 2}", 1}}, "{\"a\": 2}"},
    {"duplicate keys through allow and target",
     {{"{\"target\": \"d\", \"allow\": [\"k\"]}", "{\"d\": {\"k\": 1}, \"d\": {\"k\": 2, \"k\": 3, \"j\": 0}}", 1}},
     "{\"k\": 3}"},
    {"empty arrays in the collection",
     {{"{}", "[]", 1}, {"{}", "[1]", 1}, {"{}", "[]", 1}, {"{}", "[2, 3]", 1}, {"{}", "[]", 1}},
     "{\"collection\": [1, 2, 3]}"},
    {"invalid replies fail, never merge a part",
     {{"{\"group\": \"a\"}", "[1] x", 0},
      {"{\"group\": \"b\"}", "\"\\ud800\"", 0},
      {"{\"group\": \"c\"}", "[01]", 0},
      {"{\"group\": \"d\"}", "NaN", 0},
      {"{\"group\": \"e\"}", "\"\xc3\x28\"", 0},
      {"{\"group\": \"f\"}", "{\"ok\": [1]}", 1}},
     "{\"f\": {\"ok\": [1]}}"},
};

static void run_case(const struct merge_case *c)
{
    est_jarena_t a;
    est_reply_t reps[MAX_BACKENDS];
    est_backend_conf_t *bs[MAX_BACKENDS];
    est_merge_t m;
    size_t n = 0;
    est_jarena_init(&a);
    est_merge_init(&m, &a);
    for (; n < MAX_BACKENDS && c->replies[n].conf != NULL; ++n) {
        const struct reply *r = &c->replies[n];
        est_backend_conf_t *b = bs[n] = test_backend(r->conf);
        const char *err = NULL;
        int ok = est_reply_parse(&reps[n], r->body, strlen(r->body), 0) == 0;
        if (ok && est_reply_transform(&reps[n], b, &a, &err) != 0)
            ok = 0;
        if (ok && est_merge_add(&m, b, &reps[n], &err) != 0)
            ok = 0;
        if (ok != r->ok)
            fail_msg("%s: backend %zu %s (%s)", c->name, n, ok ? "succeeded" : "failed", err != NULL ? err : "not JSON");
        if (!ok && err != r->err)
            fail_msg("%s: backend %zu failed with \"%s\", \"%s\" expected", c->name, n, err, r->err);
    }
    jspan_buf_t out = {0};
    assert_int_equal(est_merge_write(&m, &out), 0);
    assert_int_equal(jspan_buf_append(&out, "", 1), 0);
    test_assert_text(c->name, out.data, c->output);
    jspan_buf_dispose(&out);
    est_merge_dispose(&m);
    for (size_t i = 0; i < n; ++i) {
        est_reply_dispose(&reps[i]);
        test_backend_free(bs[i]);
    }
    est_jarena_dispose(&a);
}

static void test_cases(void **state)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); ++i)
        run_case(&cases[i]);
}

/* the exact bytes of the SPEC example */
static void test_spec_body(void **state)
{
    est_backend_conf_t *user = test_backend("{\"group\": \"user\"}");
    est_backend_conf_t *order = test_backend("{\"group\": \"order\", \"target\": \"data\", \"allow\": [\"id\", \"product\"]}");
    const char *ub = "{\"id\":\"123\",\"name\":\"user123\"}";
    const char *ob = "{\"data\":{\"product\":\"item456\",\"id\":\"456\",\"stock\":3}}";
    const char *err = NULL;
    est_jarena_t a;
    est_reply_t u, o;
    est_merge_t m;
    jspan_buf_t out = {0};

    est_jarena_init(&a);
    assert_int_equal(est_reply_parse(&u, ub, strlen(ub), 0), 0);
    assert_int_equal(est_reply_parse(&o, ob, strlen(ob), 0), 0);
    assert_int_equal(est_reply_transform(&o, order, &a, &err), 0);
    assert_int_equal(est_reply_transform(&u, user, &a, &err), 0);
    est_merge_init(&m, &a);
    assert_int_equal(est_merge_add(&m, user, &u, &err), 0);
    assert_int_equal(est_merge_add(&m, order, &o, &err), 0);
    assert_int_equal(est_merge_write(&m, &out), 0);
    /* allow keeps the backend's own order: product before id */
    const char *want = "{\"user\":{\"id\":\"123\",\"name\":\"user123\"},\"order\":{\"product\":\"item456\",\"id\":\"456\"}}";
    assert_int_equal(out.len, strlen(want));
    assert_memory_equal(out.data, want, out.len);
    jspan_buf_dispose(&out);
    est_merge_dispose(&m);
    est_reply_dispose(&u);
    est_reply_dispose(&o);
    est_jarena_dispose(&a);
    test_backend_free(user);
    test_backend_free(order);
}

/* three backends of 100000 numbers each: concatenated in config order, without a tape entry per
 * number */
static void test_large_collection(void **state)
{
    est_backend_conf_t *b = test_backend("{}");
    const char *err = NULL;
    est_jarena_t a;
    est_reply_t reps[3];
    char *texts[3];
    est_merge_t m;
    est_jarena_init(&a);
    est_merge_init(&m, &a);
    for (int k = 0; k < 3; ++k) {
        size_t cap = 100000 * 12, n = 0;
        char *t = texts[k] = malloc(cap);
        assert_non_null(t);
        t[n++] = '[';
        for (int i = 0; i < 100000; ++i)
            n += (size_t)snprintf(t + n, cap - n, "%s%d", i ? ", " : "", k * 100000 + i);
        t[n++] = ']';
        assert_int_equal(est_reply_parse(&reps[k], t, n, 0), 0);
        assert_true(jspan_tape_bytes(&reps[k].doc) < 1024);
        assert_int_equal(est_reply_transform(&reps[k], b, &a, &err), 0);
        assert_int_equal(est_merge_add(&m, b, &reps[k], &err), 0);
    }
    jspan_buf_t out = {0};
    assert_int_equal(est_merge_write(&m, &out), 0);
    assert_int_equal(jspan_buf_append(&out, "", 1), 0);
    json_t *doc = test_parse(out.data);
    json_t *coll = json_object_get(doc, "collection");
    assert_int_equal(json_array_size(coll), 300000);
    for (int i = 0; i < 300000; i += 997)
        assert_int_equal(json_integer_value(json_array_get(coll, (size_t)i)), i);
    json_decref(doc);
    jspan_buf_dispose(&out);
    for (int k = 0; k < 3; ++k) {
        est_reply_dispose(&reps[k]);
        free(texts[k]);
    }
    est_jarena_dispose(&a);
    test_backend_free(b);
}

/* SPEC "Fidelity": every value comes out as the backend wrote it */
static void test_fidelity(void **state)
{
    static const char *values[] = {
        "12345678901234567890",
        "1e400",
        "-0",
        "1.10",
        "0.1",
        "19.99",
        "3.141592653589793238462643383279",
        "-1E-400",
        "0.0000000000000000000000000001",
        "\"\\u0000\"",
        "\"a\\u0000b\"",
        "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"",
        "\"\\ud83d\\ude00 \\u00e9 \\/ \\\"\"",
        "[18446744073709551616, -9223372036854775809]",
        "{\"\xc3\xa9\": 1.0}",
        "true",
        "null",
    };
    est_backend_conf_t *b = test_backend("{}");
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); ++i) {
        char *out = NULL;
        const char *err = NULL;
        assert_int_equal(test_transform(b, values[i], &out, &err), 0);
        test_assert_text(values[i], out, values[i]);
        free(out);
    }
    test_backend_free(b);
}

/* nesting: 600 levels pass (SPEC: at least 512), beyond EST_REPLY_MAX_DEPTH is invalid */
static void test_depth(void **state)
{
    enum { N = 600 };
    est_backend_conf_t *b = test_backend("{\"group\": \"g\"}");
    size_t big = EST_REPLY_MAX_DEPTH + 1;
    char *deep = malloc(2 * big + 16);
    assert_non_null(deep);
    size_t n = 0;
    for (int i = 0; i < N; ++i)
        n += (size_t)sprintf(deep + n, "{\"a\":[");
    for (int i = 0; i < N; ++i)
        n += (size_t)sprintf(deep + n, "]}");
    char *out = NULL;
    const char *err = NULL;
    assert_int_equal(test_transform_bytes(b, deep, n, &out, &err), 0);
    assert_int_equal(strlen(out), n);
    assert_memory_equal(out, deep, n);
    free(out);
    memset(deep, '[', big);
    memset(deep + big, ']', big);
    assert_int_equal(test_transform_bytes(b, deep, 2 * big, &out, &err), EST_REPLY_INVALID);
    assert_int_equal(test_transform_bytes(b, deep + 1, 2 * big - 2, &out, &err), 0);
    assert_int_equal(strlen(out), 2 * big - 2);
    free(out);
    free(deep);
    test_backend_free(b);
}

/* invalid JSON is refused whole; empty bodies contribute nothing */
static void test_parse_cases(void **state)
{
    static const struct {
        const char *body;
        size_t len; /* 0: strlen */
        int ret;
    } cases[] = {
        {"{\"a\": 1}", 0, 0},
        {"  [1, 2]\n", 0, 0},
        {"\"text\"", 0, 0},
        {"-12.5e1", 0, 0},
        {"null", 0, 0},
        {"[1]garbage", 3, 0},
        {"", 0, 0},
        {" \t\r\n ", 0, 0},
        {"{\"a\": 1}", 1, EST_REPLY_INVALID},
        {"{", 0, EST_REPLY_INVALID},
        {"nul", 0, EST_REPLY_INVALID},
        {"{} {}", 0, EST_REPLY_INVALID},
        {"[1,]", 0, EST_REPLY_INVALID},
        {"{'a': 1}", 0, EST_REPLY_INVALID},
        {"<html></html>", 0, EST_REPLY_INVALID},
        {"\xef\xbb\xbf{}", 0, EST_REPLY_INVALID},
        {"\"\xff\"", 0, EST_REPLY_INVALID},
        {"\v{}", 0, EST_REPLY_INVALID},
        {"[1] x", 0, EST_REPLY_INVALID},
        {"\"\\ud800\"", 0, EST_REPLY_INVALID},
        {"\"\\udc00\"", 0, EST_REPLY_INVALID},
        {"\"\xed\xa0\x80\"", 0, EST_REPLY_INVALID},
        {"[01]", 0, EST_REPLY_INVALID},
        {"NaN", 0, EST_REPLY_INVALID},
        {"[Infinity]", 0, EST_REPLY_INVALID},
        {"[1, 2", 0, EST_REPLY_INVALID},
        {"[18446744073709551616]", 0, 0}, /* any size of integer */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); ++i) {
        est_reply_t rep;
        int r = est_reply_parse(&rep, cases[i].body, cases[i].len != 0 ? cases[i].len : strlen(cases[i].body), 0);
        if (r != cases[i].ret)
            fail_msg("case %zu (%s): returned %d", i, cases[i].body, r);
        est_reply_dispose(&rep);
    }
    /* an embedded NUL is just an invalid byte, a cut before it is fine */
    const char body[] = "{\"a\": 1}\0{";
    est_reply_t rep;
    assert_int_equal(est_reply_parse(&rep, body, sizeof(body) - 1, 0), EST_REPLY_INVALID);
    est_reply_dispose(&rep);
    assert_int_equal(est_reply_parse(&rep, body, 8, 0), 0);
    est_reply_dispose(&rep);
    /* the index bound: its own error, not "invalid" */
    assert_int_equal(est_reply_parse(&rep, "{\"a\": 1, \"b\": 2}", 16, 3 * sizeof(jspan_entry_t)), EST_REPLY_TOO_LARGE);
    est_reply_dispose(&rep);
    assert_int_equal(est_reply_parse(&rep, "{\"a\": 1, \"b\": 2}", 16, 6 * sizeof(jspan_entry_t)), 0);
    est_reply_dispose(&rep);
}

/* the values dependent backends read ({GROUP.path}) come from the transformed reply */
static void test_lookup(void **state)
{
    est_backend_conf_t *b = test_backend(
        "{\"group\": \"u\", \"target\": \"data\", \"deny\": [\"secret\"], \"mapping\": {\"n\": \"name\"}}");
    const char *body =
        "{\"data\": {\"id\": 12345678901234567890, \"n\": \"a\\u00e9\\u0000\", \"secret\": \"s\", \"o\": {\"k\": 1.10}, "
        "\"arr\": [1], \"nil\": null}}";
    est_jarena_t a;
    est_reply_t rep;
    const char *err;
    est_jarena_init(&a);
    assert_int_equal(est_reply_parse(&rep, body, strlen(body), 0), 0);
    assert_int_equal(est_reply_transform(&rep, b, &a, &err), 0);
    size_t v = est_reply_lookup(&rep, "id", 2), len;
    assert_int_not_equal(v, JSPAN_NONE);
    const char *raw = jspan_raw(&rep.doc, v, &len);
    assert_int_equal(len, 20);
    assert_memory_equal(raw, "12345678901234567890", 20);
    v = est_reply_lookup(&rep, "name", 4);
    assert_int_not_equal(v, JSPAN_NONE);
    char dec[32];
    assert_int_equal(jspan_str_decode(&rep.doc, v, dec), 4);
    assert_memory_equal(dec, "a\xc3\xa9\0", 4);
    v = est_reply_lookup(&rep, "o.k", 3);
    assert_int_not_equal(v, JSPAN_NONE);
    assert_int_equal(est_reply_lookup(&rep, "n", 1), JSPAN_NONE);      /* renamed */
    assert_int_equal(est_reply_lookup(&rep, "secret", 6), JSPAN_NONE); /* denied */
    assert_int_equal(est_reply_lookup(&rep, "o", 1), JSPAN_NONE);      /* an object */
    assert_int_equal(est_reply_lookup(&rep, "arr", 3), JSPAN_NONE);
    assert_int_equal(est_reply_lookup(&rep, "nil", 3), JSPAN_NONE);
    assert_int_equal(est_reply_lookup(&rep, "o.k.x", 5), JSPAN_NONE);
    est_reply_dispose(&rep);
    est_jarena_dispose(&a);
    test_backend_free(b);
}

/* a large object merged into another: linear (hash index), later wins, first position kept */
static void test_large_objects(void **state)
{
    enum { N = 50000 };
    est_backend_conf_t *b = test_backend("{}");
    char *t[2];
    size_t len[2];
    est_jarena_t a;
    est_reply_t reps[2];
    est_merge_t m;
    const char *err;
    est_jarena_init(&a);
    est_merge_init(&m, &a);
    for (int k = 0; k < 2; ++k) {
        size_t cap = N * 24, n = 0;
        t[k] = malloc(cap);
        assert_non_null(t[k]);
        t[k][n++] = '{';
        for (int i = 0; i < N; ++i)
            n += (size_t)snprintf(t[k] + n, cap - n, "%s\"k%d\":%d", i ? "," : "", k == 0 ? i : N - 1 - i, k);
        t[k][n++] = '}';
        len[k] = n;
        assert_int_equal(est_reply_parse(&reps[k], t[k], len[k], 0), 0);
        assert_int_equal(est_reply_transform(&reps[k], b, &a, &err), 0);
        assert_int_equal(est_merge_add(&m, b, &reps[k], &err), 0);
    }
    jspan_buf_t out = {0};
    assert_int_equal(est_merge_write(&m, &out), 0);
    /* the keys in the first reply's order, every value from the second */
    size_t n = 0;
    char *want = malloc(N * 24);
    want[n++] = '{';
    for (int i = 0; i < N; ++i)
        n += (size_t)sprintf(want + n, "%s\"k%d\":1", i ? "," : "", i);
    want[n++] = '}';
    assert_int_equal(out.len, n);
    assert_memory_equal(out.data, want, n);
    free(want);
    jspan_buf_dispose(&out);
    for (int k = 0; k < 2; ++k) {
        est_reply_dispose(&reps[k]);
        free(t[k]);
    }
    est_jarena_dispose(&a);
    test_backend_free(b);
}

/* nothing added: {}; the output buffer's bound is honoured */
static void test_empty_and_bound(void **state)
{
    est_jarena_t a;
    est_merge_t m;
    jspan_buf_t out = {0};
    est_jarena_init(&a);
    est_merge_init(&m, &a);
    assert_int_equal(est_merge_write(&m, &out), 0);
    assert_int_equal(out.len, 2);
    assert_memory_equal(out.data, "{}", 2);
    jspan_buf_dispose(&out);

    est_backend_conf_t *g = test_backend("{\"group\": \"g\"}");
    est_reply_t rep;
    const char *err;
    assert_int_equal(est_reply_parse(&rep, "[1, 2, 3]", 9, 0), 0);
    assert_int_equal(est_reply_transform(&rep, g, &a, &err), 0);
    assert_int_equal(est_merge_add(&m, g, &rep, &err), 0);
    out.max = 8;
    assert_int_equal(est_merge_write(&m, &out), -1);
    jspan_buf_dispose(&out);
    est_merge_dispose(&m);
    est_reply_dispose(&rep);
    est_reply_dispose(&rep);
    est_jarena_dispose(&a);
    test_backend_free(g);
}

/* a body of exactly out.max bytes is written, whatever its shape: the "collection" made of
 * several arrays (plain, with replaced elements, with duplicate keys inside, empty) is written
 * without passing through a longer intermediate text */
static void test_collection_exact_bound(void **state)
{
    static const char *const bodies[] = {"[1, 2]", "[3, {\"a\": 4, \"b\": 5}]", "[]", "[{\"k\": 1, \"k\": 2}, 6]", "[ ]"};
    static const char *const confs[] = {"{}", "{\"deny\": [\"b\"]}", "{}", "{}", "{}"};
    enum { N = sizeof(bodies) / sizeof(bodies[0]) };
    const char *want = "{\"collection\":[1,2,3,{\"a\":4},{\"k\":2},6]}";
    est_backend_conf_t *b[N];
    est_reply_t rep[N];
    est_jarena_t a;
    est_merge_t m;
    const char *err;
    est_jarena_init(&a);
    est_merge_init(&m, &a);
    for (size_t i = 0; i < N; ++i) {
        b[i] = test_backend(confs[i]);
        assert_int_equal(est_reply_parse(&rep[i], bodies[i], strlen(bodies[i]), 0), 0);
        assert_int_equal(est_reply_transform(&rep[i], b[i], &a, &err), 0);
        assert_int_equal(est_merge_add(&m, b[i], &rep[i], &err), 0);
    }
    for (size_t max = strlen(want) - 1; max <= strlen(want); ++max) {
        jspan_buf_t out = {.max = max};
        int r = est_merge_write(&m, &out);
        if (max < strlen(want)) {
            assert_int_equal(r, -1);
        } else {
            assert_int_equal(r, 0);
            assert_int_equal(out.len, strlen(want));
            assert_memory_equal(out.data, want, out.len);
        }
        jspan_buf_dispose(&out);
    }
    est_merge_dispose(&m);
    for (size_t i = 0; i < N; ++i) {
        est_reply_dispose(&rep[i]);
        test_backend_free(b[i]);
    }
    est_jarena_dispose(&a);
}

/* the arena gives back what was allocated after a mark */
static void test_arena_rollback(void **state)
{
    est_jarena_t a;
    est_jarena_mark_t mk;
    est_jarena_init(&a);
    char *first = est_jarena_alloc(&a, 100);
    assert_non_null(first);
    size_t bytes = a.bytes;
    est_jarena_mark(&a, &mk);
    for (int i = 0; i < 1000; ++i)
        assert_non_null(est_jarena_alloc(&a, 1000));
    assert_true(a.bytes > bytes + 900000);
    est_jarena_rollback(&a, &mk);
    assert_int_equal(a.bytes, bytes);
    /* the next allocation reuses the space right after the mark */
    char *next = est_jarena_alloc(&a, 16);
    assert_ptr_equal(next, first + 112);
    est_jarena_dispose(&a);
    /* a mark on an empty arena */
    est_jarena_mark(&a, &mk);
    assert_non_null(est_jarena_alloc(&a, 10));
    est_jarena_rollback(&a, &mk);
    assert_int_equal(a.bytes, 0);
    est_jarena_dispose(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cases),
        cmocka_unit_test(test_spec_body),
        cmocka_unit_test(test_large_collection),
        cmocka_unit_test(test_fidelity),
        cmocka_unit_test(test_depth),
        cmocka_unit_test(test_parse_cases),
        cmocka_unit_test(test_lookup),
        cmocka_unit_test(test_large_objects),
        cmocka_unit_test(test_empty_and_bound),
        cmocka_unit_test(test_arena_rollback),
        cmocka_unit_test(test_collection_exact_bound),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

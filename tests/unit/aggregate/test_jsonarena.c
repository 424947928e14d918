/* estuary - unit tests for the per-request jansson arena (src/aggregate/jsonarena.c) */
#include <pthread.h>
#include "helpers.h"
#include "aggregate/jsonarena.h"

/* the two replies of benchmark scenario S2 and the bytes estuary answers with */
static const char s2_user[] =
    "{\"id\":123,\"name\":\"Ada Lovelace\",\"email\":\"ada@example.com\",\"active\":true,\"tags\":[\"admin\",\"beta\"]}";
static const char s2_order[] =
    "{\"id\":456,\"product\":\"Widget\",\"qty\":2,\"total\":19.99,\"items\":[{\"sku\":\"A-1\",\"n\":1},{\"sku\":\"B-2\",\"n\":1}]}";
static const char s2_merged[] =
    "{\"user\": {\"id\": 123, \"name\": \"Ada Lovelace\", \"email\": \"ada@example.com\", \"active\": true, \"tags\": [\"admin\", "
    "\"beta\"]}, \"order\": {\"id\": 456, \"product\": \"Widget\", \"qty\": 2, \"total\": 19.99, \"items\": [{\"sku\": \"A-1\", "
    "\"n\": 1}, {\"sku\": \"B-2\", \"n\": 1}]}}";

/* A backend and the reply it gets, for the differential test */
struct diff_case {
    const char *conf;
    const char *body;
};

static const struct diff_case diff_cases[] = {
    {"{\"group\": \"g\"}", "{\"b\": 1, \"a\": [1, {\"x\": null}], \"r\": 9.95, \"e\": \"quote \\\" nl \\n \\u0001 \\u00e9\"}"},
    {"{\"group\": \"g\"}", "\"a\\u0000b\""},
    {"{\"group\": \"g\"}", "[true, false, null, -9223372036854775808, 1e300, -0.0]"},
    {"{}", "{\"dup\": 1, \"x\": 2, \"dup\": 3}"},
    {"{}", "[1, 2, 3]"},
    {"{\"target\": \"data.user\", \"group\": \"u\"}", "{\"data\": {\"user\": {\"id\": \"1\", \"pw\": \"s\"}, \"other\": 2}}"},
    {"{\"allow\": [\"items.id\", \"t\"]}", "{\"items\": [{\"id\": 1, \"x\": 2}, {\"x\": 3}, 7], \"t\": 1, \"u\": 2}"},
    {"{\"deny\": [\"items.secret\", \"pw\"]}", "{\"pw\": 0, \"items\": [{\"id\": 1, \"secret\": 2}, 3, {\"secret\": 4}]}"},
    {"{\"mapping\": {\"a\": \"b\", \"b\": \"a\"}, \"group\": \"m\"}", "{\"a\": 1, \"b\": 2, \"c\": 3}"},
    {"{\"mapping\": {\"product\": \"item\"}}", "[{\"product\": \"p\"}, 5, {\"id\": 1, \"product\": \"q\"}]"},
    {"{\"target\": \"missing\", \"group\": \"t\"}", "{\"data\": 1}"}, /* fails: that backend contributes nothing */
    {"{}", "7"},                                                        /* scalar without group: fails */
    {"{\"group\": \"bad\"}", "{\"a\": "},                               /* not JSON: fails */
    {"{\"group\": \"empty\"}", "  \n"},                                 /* nothing */
};

/* parse + transform + merge every diff case in one document, the way fanout.c does; returns the
 * malloc'd serialization. With `a`, every step runs inside the arena, and the document is not
 * json_decref'd but dropped with the arena, as in fanout.c. */
static char *run_cases(est_json_arena_t *a, est_backend_conf_t **backends, size_t n)
{
    json_t *values[sizeof(diff_cases) / sizeof(diff_cases[0])];
    est_json_arena_t *prev;
    for (size_t i = 0; i < n; ++i) {
        const char *err;
        json_t *v = NULL;
        prev = a != NULL ? est_json_arena_enter(a) : NULL;
        if (est_body_parse(diff_cases[i].body, strlen(diff_cases[i].body), &v) != 0)
            v = NULL;
        else if (v != NULL)
            v = est_transform_apply(backends[i], v, &err);
        values[i] = v;
        if (a != NULL)
            est_json_arena_leave(prev);
    }
    prev = a != NULL ? est_json_arena_enter(a) : NULL;
    est_merge_t m;
    est_merge_init(&m);
    for (size_t i = 0; i < n; ++i) {
        const char *err;
        est_merge_add(&m, backends[i], values[i], &err);
    }
    json_t *doc = est_merge_finish(&m);
    char *text = est_json_dumps_compact(doc, NULL);
    if (a != NULL) {
        est_json_arena_leave(prev);
        est_json_arena_reset(a);
    } else {
        json_decref(doc);
        est_merge_dispose(&m);
    }
    return text;
}

/* the same values, bytes and failures with and without the arena, in each of its modes */
static void test_differential(void **state)
{
    size_t n = sizeof(diff_cases) / sizeof(diff_cases[0]);
    est_backend_conf_t *backends[sizeof(diff_cases) / sizeof(diff_cases[0])];
    for (size_t i = 0; i < n; ++i)
        backends[i] = test_backend(diff_cases[i].conf);
    char *want = run_cases(NULL, backends, n);
    assert_non_null(want);

    static const size_t limits[] = {EST_JSON_ARENA_MAX_BUMP, 4096, 0};
    for (size_t l = 0; l < sizeof(limits) / sizeof(limits[0]); ++l) {
        est_json_arena_t a;
        est_json_arena_init(&a);
        a._max_bump = limits[l]; /* 0: every allocation separate (as under ASan) */
        for (int round = 0; round < 3; ++round) { /* the arena is reusable after a reset */
            char *got = run_cases(&a, backends, n);
            assert_non_null(got);
            assert_string_equal(got, want);
            free(got);
            assert_null(a._chunks);
            assert_null(a._big);
        }
    }
    free(want);
    for (size_t i = 0; i < n; ++i)
        test_backend_free(backends[i]);
}

/* the S2 flow: two replies parsed in their own sections, interleaved with another request's
 * arena, merged and serialised in a third section; the same bytes as today */
static void test_s2_bytes(void **state)
{
    est_backend_conf_t *user = test_backend("{\"group\": \"user\"}"), *order = test_backend("{\"group\": \"order\"}");
    est_json_arena_t a, other;
    est_json_arena_init(&a);
    est_json_arena_init(&other);
    for (int i = 0; i < 100; ++i) {
        json_t *u, *o, *x;
        est_json_arena_t *prev = est_json_arena_enter(&a);
        assert_null(prev);
        assert_int_equal(est_body_parse(s2_user, strlen(s2_user), &u), 0);
        est_json_arena_leave(prev);

        prev = est_json_arena_enter(&other);
        assert_int_equal(est_body_parse(s2_order, strlen(s2_order), &x), 0);
        est_json_arena_leave(prev);

        prev = est_json_arena_enter(&a);
        assert_int_equal(est_body_parse(s2_order, strlen(s2_order), &o), 0);
        est_json_arena_leave(prev);

        prev = est_json_arena_enter(&a);
        est_merge_t m;
        const char *err;
        est_merge_init(&m);
        assert_int_equal(est_merge_add(&m, user, u, &err), 0);
        assert_int_equal(est_merge_add(&m, order, o, &err), 0);
        size_t len;
        char *text = est_json_dumps_compact(est_merge_finish(&m), &len);
        est_json_arena_leave(prev);
        est_json_arena_reset(&a);
        assert_string_equal(text, s2_merged);
        assert_int_equal(len, strlen(s2_merged));
        free(text);
        if (i % 2 == 0) /* the other request ends without a merge (cancelled) */
            est_json_arena_reset(&other);
    }
    est_json_arena_reset(&other);
    test_backend_free(user);
    test_backend_free(order);
}

/* jansson's hook is installed, and is plain malloc/free outside an arena */
static void test_hook_outside(void **state)
{
    json_malloc_t m;
    json_free_t f;
    json_get_alloc_funcs(&m, &f);
    assert_true(m != NULL && m != malloc);
    assert_true(f != NULL && f != free);

    est_json_arena_t a;
    est_json_arena_init(&a);
    json_t *outside = test_parse("{\"made\": \"outside\"}");
    est_json_arena_t *prev = est_json_arena_enter(&a);
    json_t *inside = test_parse("[1, 2]");
    est_json_arena_leave(prev);
    /* values made outside are released outside, with free() (LeakSanitizer / ASan check this) */
    json_decref(outside);
    void *p = m(100);
    memset(p, 1, 100);
    free(p); /* outside an arena the hook's memory is malloc's */
    est_json_arena_reset(&a);
    (void)inside;
}

static void test_nesting(void **state)
{
    est_json_arena_t a, b;
    est_json_arena_init(&a);
    est_json_arena_init(&b);
    assert_null(est_json_arena_enter(&a));
    json_t *va = json_string("in a");
    assert_ptr_equal(est_json_arena_enter(&b), &a);
    json_t *vb = json_string("in b");
    est_json_arena_leave(&a);
    json_t *va2 = json_integer(7);
    est_json_arena_leave(NULL);
    assert_true(a._chunks != NULL || a._big != NULL);
    assert_true(b._chunks != NULL || b._big != NULL);
    assert_string_equal(json_string_value(va), "in a");
    assert_string_equal(json_string_value(vb), "in b");
    assert_int_equal(json_integer_value(va2), 7);
    est_json_arena_reset(&b);
    est_json_arena_reset(&a);
    est_json_arena_reset(&a); /* twice is fine */
    assert_null(a._chunks);
    assert_null(a._big);
}

/* the allocator itself, through jansson's hook: alignment, sizes, bump and separate blocks */
static void test_allocator(void **state)
{
    json_malloc_t m;
    json_free_t f;
    json_get_alloc_funcs(&m, &f);
    static const size_t limits[] = {EST_JSON_ARENA_MAX_BUMP, 16384, 0};
    for (size_t l = 0; l < sizeof(limits) / sizeof(limits[0]); ++l) {
        est_json_arena_t a;
        est_json_arena_init(&a);
        a._max_bump = limits[l];
        est_json_arena_t *prev = est_json_arena_enter(&a);
        enum { N = 3000 };
        static unsigned char *ptrs[N];
        static size_t sizes[N];
        for (size_t i = 0; i < N; ++i) {
            sizes[i] = i % 7 == 0 ? 0 : i % 97 == 0 ? 1000 + i : i % 53 + 1;
            ptrs[i] = m(sizes[i]);
            assert_non_null(ptrs[i]);
            assert_int_equal((uintptr_t)ptrs[i] % 16, 0);
            memset(ptrs[i], (int)(i & 0xff), sizes[i]); /* the whole block is ours (ASan checks) */
        }
        for (size_t i = 0; i < N; ++i) {
            for (size_t j = 0; j < sizes[i]; ++j)
                if (ptrs[i][j] != (unsigned char)(i & 0xff))
                    fail_msg("block %zu overwritten at %zu", i, j);
            if (i % 3 == 0) /* free some (bump: nothing; separate: freed now) */
                f(ptrs[i]);
        }
        f(NULL);
        assert_true(a._bump_bytes <= limits[l]);
        est_json_arena_leave(prev);
        est_json_arena_reset(&a);
        assert_null(a._chunks);
        assert_null(a._big);
        assert_int_equal(a._bump_bytes, 0);
    }
}

/* a reply that outgrows the bump limit: separate blocks, freed as jansson frees them */
static void test_large_reply(void **state)
{
    enum { N = 100000 };
    size_t cap = (size_t)N * 32 + 64, len = 0;
    char *body = malloc(cap);
    assert_non_null(body);
    body[len++] = '[';
    for (int i = 0; i < N; ++i)
        len += (size_t)snprintf(body + len, cap - len, "%s{\"id\":%d,\"s\":\"v%d\"}", i ? "," : "", i, i);
    body[len++] = ']';

    json_t *plain;
    assert_int_equal(est_body_parse(body, len, &plain), 0);
    char *want = est_json_dumps_compact(plain, NULL);
    json_decref(plain);

    est_json_arena_t a;
    est_json_arena_init(&a);
    est_json_arena_t *prev = est_json_arena_enter(&a);
    json_t *v;
    assert_int_equal(est_body_parse(body, len, &v), 0);
    assert_true(a._bump_bytes <= EST_JSON_ARENA_MAX_BUMP);
    assert_non_null(a._big); /* beyond the limit: separate blocks */
    char *got = est_json_dumps_compact(v, NULL);
    json_decref(v); /* inside: every separate block is freed at once */
    assert_null(a._big);
    est_json_arena_leave(prev);
    est_json_arena_reset(&a);
    assert_string_equal(got, want);
    free(got);

    /* a long string is a separate block from the start */
    char *s = malloc(20003);
    assert_non_null(s);
    s[0] = '"';
    memset(s + 1, 'x', 20000);
    s[20001] = '"';
    prev = est_json_arena_enter(&a);
    assert_int_equal(est_body_parse(s, 20002, &v), 0);
    assert_non_null(a._big);
    assert_int_equal(json_string_length(v), 20000);
    est_json_arena_leave(prev);
    est_json_arena_reset(&a); /* dropped without json_decref */
    assert_null(a._big);
    free(s);
    free(want);
    free(body);
}

/* invalid, cut and empty replies inside an arena: nothing leaks, nothing is left behind */
static void test_errors(void **state)
{
    static const char *bad[] = {"{\"a\": [1, 2, {\"b\": \"cut", "[1, 2, 3,]", "{\"k\": \"\xff\"}", "<html>", "{} x", ""};
    est_json_arena_t a;
    est_json_arena_init(&a);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); ++i) {
        json_t *v = (json_t *)&v;
        est_json_arena_t *prev = est_json_arena_enter(&a);
        int r = est_body_parse(bad[i], strlen(bad[i]), &v);
        est_json_arena_leave(prev);
        assert_int_equal(r, bad[i][0] == '\0' ? 0 : -1);
        assert_null(v);
    }
    /* a big document cut at the end: the parser's partial tree is freed by jansson or the reset */
    size_t cap = 50000 * 16 + 16, len = 0;
    char *body = malloc(cap);
    assert_non_null(body);
    body[len++] = '[';
    for (int i = 0; i < 50000; ++i)
        len += (size_t)snprintf(body + len, cap - len, "%s\"value %d\"", i ? "," : "", i);
    json_t *v;
    est_json_arena_t *prev = est_json_arena_enter(&a);
    assert_int_equal(est_body_parse(body, len, &v), -1);
    est_json_arena_leave(prev);
    est_json_arena_reset(&a);
    assert_null(a._big);
    free(body);
}

/* Worker threads each with their own arenas, next to a thread using jansson without one (the
 * admin thread / config loading): nothing is shared, nothing crosses over. */
static void *worker(void *arg)
{
    est_backend_conf_t *user = arg;
    est_json_arena_t a;
    est_json_arena_init(&a);
    for (int i = 0; i < 2000; ++i) {
        json_t *u;
        est_json_arena_t *prev = est_json_arena_enter(&a);
        if (est_body_parse(s2_user, strlen(s2_user), &u) != 0)
            return "parse";
        est_merge_t m;
        const char *err;
        est_merge_init(&m);
        est_merge_add(&m, user, u, &err);
        char *text = est_json_dumps_compact(est_merge_finish(&m), NULL);
        est_json_arena_leave(prev);
        est_json_arena_reset(&a);
        if (text == NULL || strncmp(text, s2_merged, strlen("{\"user\": ")) != 0) {
            free(text);
            return "bytes";
        }
        free(text);
    }
    return NULL;
}

static void *plain_user(void *arg)
{
    for (int i = 0; i < 2000; ++i) {
        json_t *v;
        if (est_body_parse(s2_order, strlen(s2_order), &v) != 0)
            return "parse";
        char *text = json_dumps(v, 0); /* jansson's own, freed with free() as its docs say */
        json_decref(v);
        if (text == NULL)
            return "dump";
        free(text);
    }
    return NULL;
}

static void test_threads(void **state)
{
    est_backend_conf_t *user = test_backend("{\"group\": \"user\"}");
    pthread_t th[5];
    for (int i = 0; i < 4; ++i)
        assert_int_equal(pthread_create(&th[i], NULL, worker, user), 0);
    assert_int_equal(pthread_create(&th[4], NULL, plain_user, NULL), 0);
    for (int i = 0; i < 5; ++i) {
        void *ret;
        assert_int_equal(pthread_join(th[i], &ret), 0);
        if (ret != NULL)
            fail_msg("thread %d: %s", i, (const char *)ret);
    }
    test_backend_free(user);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_differential), cmocka_unit_test(test_s2_bytes), cmocka_unit_test(test_hook_outside),
        cmocka_unit_test(test_nesting),      cmocka_unit_test(test_allocator), cmocka_unit_test(test_large_reply),
        cmocka_unit_test(test_errors),       cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
